//! Every TOML snippet in the docs is a configuration that loads and validates: the
//! ```toml blocks of README.md, ARCHITECTURE.md, docs/*.md and the doc comments of the
//! config module. A fragment (`[[channels]]` alone) is a whole file too, since every
//! setting has a default.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::path::{Path, PathBuf};

use tidings_server::Config;

/// The repository root (two levels above this crate).
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The ```toml blocks of a Markdown text, with the line each starts on. In Rust sources
/// the lines are doc comments: `///` or `//!` and one space are taken off first.
fn toml_blocks(text: &str, rust: bool) -> Vec<(usize, String)> {
    let mut blocks = Vec::new();
    let mut current: Option<(usize, String)> = None;
    for (n, line) in text.lines().enumerate() {
        let line = if rust {
            let trimmed = line.trim_start();
            let Some(doc) = trimmed
                .strip_prefix("///")
                .or_else(|| trimmed.strip_prefix("//!"))
            else {
                continue;
            };
            doc.strip_prefix(' ').unwrap_or(doc)
        } else {
            line
        };
        let fence = line.trim_start();
        match current.as_mut() {
            None if fence.starts_with("```toml") => current = Some((n + 1, String::new())),
            Some(_) if fence.starts_with("```") => blocks.extend(current.take()),
            Some((_, block)) => {
                block.push_str(line);
                block.push('\n');
            }
            None => {}
        }
    }
    assert!(current.is_none(), "unclosed ```toml block");
    blocks
}

fn check_file(path: &Path, rust: bool) -> usize {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let blocks = toml_blocks(&text, rust);
    for (line, block) in &blocks {
        let place = format!("{}:{line}", path.display());
        let config = Config::from_toml_str(block)
            .unwrap_or_else(|e| panic!("{place}: the snippet does not load: {e}\n{block}"));
        config
            .validate()
            .unwrap_or_else(|e| panic!("{place}: the snippet is refused: {e}\n{block}"));
    }
    blocks.len()
}

fn files_in(dir: &Path, extension: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|e| e == extension))
        .collect();
    files.sort();
    files
}

#[test]
fn markdown_toml_snippets_load_and_validate() {
    let root = root();
    let mut files = vec![root.join("README.md"), root.join("ARCHITECTURE.md")];
    files.extend(files_in(&root.join("docs"), "md"));
    let checked: usize = files.iter().map(|file| check_file(file, false)).sum();
    // The README's configuration example at least; a parser that finds nothing would pass
    // everything.
    assert!(checked >= 1, "no ```toml block found in {files:?}");
}

#[test]
fn config_doc_comment_snippets_load_and_validate() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/config");
    let checked: usize = files_in(&dir, "rs")
        .iter()
        .map(|file| check_file(file, true))
        .sum();
    assert!(
        checked >= 3,
        "expected the module, channel and webhook examples"
    );
}

/// The flag table restates two defaults and names the variables: both must stay true.
#[test]
fn the_readme_flag_table_matches_the_code() {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let defaults = Config::default();
    for row in [
        format!("| `--bind` | `TIDINGS_BIND` | `{}` |", defaults.bind),
        format!(
            "| `TIDINGS_DATA_DIR` | `{}` |",
            defaults.storage.data_dir.display()
        ),
    ] {
        assert!(readme.contains(&row), "README.md lacks the row {row}");
    }
    for alias in tidings_server::config::ENV_ALIASES {
        let cell = format!("| `{}` |", alias.variable);
        assert!(
            readme.contains(&cell),
            "README.md does not name {}",
            alias.variable
        );
    }
}

#[test]
fn the_extractor_finds_blocks_and_a_wrong_snippet_fails() {
    let markdown = "text\n```toml\nheartbeat = \"5s\"\n```\n```rust\nlet x = 1;\n```\n";
    let blocks = toml_blocks(markdown, false);
    assert_eq!(blocks, [(2, "heartbeat = \"5s\"\n".to_owned())]);
    let rust = "/// ```toml\n/// [policy]\n/// history_size = 1\n/// ```\nfn f() {}\n";
    let blocks = toml_blocks(rust, true);
    assert_eq!(blocks.len(), 1);
    // The README's old mistake: retention under [policy] is an unknown key there.
    assert!(Config::from_toml_str(&blocks[0].1).is_err());
}
