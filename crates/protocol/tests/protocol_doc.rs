//! Keeps `docs/protocol.md` honest.
//!
//! - Every ```` ```json client ```` / ```` ```json server ```` block is one frame: it must
//!   decode with `ClientFrame::decode` / `ServerFrame::decode`, and re-encoding it must give
//!   the same JSON value (so no documented field is silently dropped or renamed).
//! - Every frame type and every `reply` kind the crate defines has at least one example. The
//!   list of types is read from the crate's own source (`kind()` in `src/frame.rs`, the
//!   `Reply` enum in `src/messages.rs`), so adding a frame type without documenting it fails.
//! - The code table matches `Code` (numbers, names, retry semantics).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
#![allow(missing_docs)]

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;
use tidings_protocol::messages::Reply;
use tidings_protocol::{ClientFrame, ClientMessage, Code, ServerFrame, ServerMessage};

const DOC: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../docs/protocol.md"
));
const FRAME_RS: &str = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/src/frame.rs"));
const MESSAGES_RS: &str = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/src/messages.rs"));

/// A fenced code block: its info string, its text and the line it starts on (1-based).
struct Block {
    info: String,
    text: String,
    line: usize,
}

fn blocks() -> Vec<Block> {
    let mut out = Vec::new();
    let mut open: Option<Block> = None;
    for (n, line) in DOC.lines().enumerate() {
        let trimmed = line.trim_start();
        match open.take() {
            None => {
                if let Some(info) = trimmed.strip_prefix("```") {
                    open = Some(Block {
                        info: info.trim().to_owned(),
                        text: String::new(),
                        line: n + 1,
                    });
                }
            }
            Some(mut block) => {
                if trimmed.trim_end() == "```" {
                    out.push(block);
                } else {
                    block.text.push_str(line);
                    block.text.push('\n');
                    open = Some(block);
                }
            }
        }
    }
    assert!(
        open.is_none(),
        "docs/protocol.md has an unclosed code block"
    );
    out
}

fn parse_value(block: &Block) -> Value {
    serde_json::from_str(&block.text).unwrap_or_else(|e| {
        panic!(
            "docs/protocol.md line {}: not valid JSON: {e}\n{}",
            block.line, block.text
        )
    })
}

fn client_examples() -> Vec<(usize, ClientFrame)> {
    blocks()
        .into_iter()
        .filter(|b| b.info == "json client")
        .map(|b| {
            let frame = ClientFrame::decode(&b.text).unwrap_or_else(|e| {
                panic!(
                    "docs/protocol.md line {}: client frame does not decode: {e}\n{}",
                    b.line, b.text
                )
            });
            (b.line, frame)
        })
        .collect()
}

fn server_examples() -> Vec<(usize, ServerFrame)> {
    blocks()
        .into_iter()
        .filter(|b| b.info == "json server")
        .map(|b| {
            let frame = ServerFrame::decode(&b.text).unwrap_or_else(|e| {
                panic!(
                    "docs/protocol.md line {}: server frame does not decode: {e}\n{}",
                    b.line, b.text
                )
            });
            (b.line, frame)
        })
        .collect()
}

#[test]
fn json_blocks_are_tagged_correctly_and_valid() {
    let mut frames = 0;
    for block in blocks() {
        if !block.info.starts_with("json") {
            continue;
        }
        assert!(
            matches!(block.info.as_str(), "json" | "json client" | "json server"),
            "docs/protocol.md line {}: info string {:?}; use exactly `json client`, \
             `json server` or `json`",
            block.line,
            block.info
        );
        let value = parse_value(&block);
        if block.info != "json" {
            frames += 1;
            assert!(
                value.is_object(),
                "docs/protocol.md line {}: a frame is one JSON object",
                block.line
            );
        }
    }
    assert!(frames > 0, "no frame examples found in docs/protocol.md");
}

#[test]
fn every_client_example_round_trips() {
    for block in blocks().into_iter().filter(|b| b.info == "json client") {
        let original = parse_value(&block);
        let frame = ClientFrame::decode(&block.text).unwrap_or_else(|e| {
            panic!("docs/protocol.md line {}: does not decode: {e}", block.line)
        });
        let reencoded: Value = serde_json::from_str(&frame.encode()).unwrap();
        assert_eq!(
            reencoded, original,
            "docs/protocol.md line {}: re-encoding changes the frame",
            block.line
        );
    }
}

#[test]
fn every_server_example_round_trips() {
    for block in blocks().into_iter().filter(|b| b.info == "json server") {
        let original = parse_value(&block);
        let frame = ServerFrame::decode(&block.text).unwrap_or_else(|e| {
            panic!("docs/protocol.md line {}: does not decode: {e}", block.line)
        });
        let reencoded: Value = serde_json::from_str(&frame.encode()).unwrap();
        assert_eq!(
            reencoded, original,
            "docs/protocol.md line {}: re-encoding changes the frame",
            block.line
        );
    }
}

/// The `reply` kind, by matching on the variants: a new variant lands in `_` and fails.
fn reply_kind(reply: &Reply) -> &'static str {
    match reply {
        Reply::Subscribe { .. } => "subscribe",
        Reply::Unsubscribe { .. } => "unsubscribe",
        Reply::Publish { .. } => "publish",
        Reply::Presence { .. } => "presence",
        Reply::Typing { .. } => "typing",
        Reply::History(_) => "history",
        Reply::Ack { .. } => "ack",
        Reply::Rpc { .. } => "rpc",
        other => panic!("reply kind not known to this test, document it: {other:?}"),
    }
}

/// The `type` names in a `kind()` method of `src/frame.rs`: lines `Enum::Variant.. => "name",`.
fn kinds_in_source(enum_name: &str) -> BTreeSet<String> {
    let prefix = format!("{enum_name}::");
    FRAME_RS
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with(&prefix))
        .filter_map(|l| l.split_once("=> \"").map(|(_, rest)| rest))
        .filter_map(|rest| rest.split_once('"').map(|(name, _)| name.to_owned()))
        .collect()
}

/// The serde tags of `enum Reply` in `src/messages.rs` (`rename_all = "snake_case"`).
fn reply_kinds_in_source() -> BTreeSet<String> {
    let start = MESSAGES_RS
        .find("pub enum Reply {")
        .expect("src/messages.rs has `pub enum Reply {`");
    let body = &MESSAGES_RS[start..];
    let mut kinds = BTreeSet::new();
    for line in body.lines().skip(1) {
        if line == "}" {
            break;
        }
        // Variants sit at one level of indentation; their fields and docs deeper or behind `///`.
        let Some(rest) = line.strip_prefix("    ") else {
            continue;
        };
        if !rest.starts_with(|c: char| c.is_ascii_uppercase()) {
            continue;
        }
        let name: String = rest
            .chars()
            .take_while(char::is_ascii_alphanumeric)
            .collect();
        let mut snake = String::new();
        for (i, c) in name.chars().enumerate() {
            if c.is_ascii_uppercase() {
                if i > 0 {
                    snake.push('_');
                }
                snake.push(c.to_ascii_lowercase());
            } else {
                snake.push(c);
            }
        }
        kinds.insert(snake);
    }
    kinds
}

fn names(list: &[&str]) -> BTreeSet<String> {
    list.iter().map(|s| (*s).to_owned()).collect()
}

#[test]
fn the_source_scan_finds_the_known_types() {
    // Guards the scanner itself: if the source layout changes, this fails loudly instead of
    // the coverage test passing on an empty list.
    assert_eq!(
        kinds_in_source("ClientMessage"),
        names(&[
            "ping",
            "subscribe",
            "unsubscribe",
            "publish",
            "typing",
            "presence",
            "history",
            "ack",
            "rpc"
        ]),
        "client frame types changed in src/frame.rs: document them, then update this list"
    );
    assert_eq!(
        kinds_in_source("ServerMessage"),
        names(&[
            "connected",
            "pong",
            "reply",
            "error",
            "message",
            "user_joined",
            "user_left",
            "typing",
            "shutdown",
        ]),
        "server frame types changed in src/frame.rs: document them, then update this list"
    );
    assert_eq!(
        reply_kinds_in_source(),
        names(&[
            "subscribe",
            "unsubscribe",
            "publish",
            "presence",
            "typing",
            "history",
            "ack",
            "rpc"
        ]),
        "reply kinds changed in src/messages.rs: document them, then update this list"
    );
}

#[test]
fn every_frame_type_and_reply_kind_is_documented() {
    let client: BTreeSet<String> = client_examples()
        .iter()
        .map(|(_, f)| f.kind().to_owned())
        .collect();
    let mut server = BTreeSet::new();
    let mut replies = BTreeSet::new();
    for (_, frame) in server_examples() {
        server.insert(frame.kind().to_owned());
        if let ServerMessage::Reply(reply) = &frame.message {
            replies.insert(reply_kind(reply).to_owned());
        }
    }
    let missing = |defined: BTreeSet<String>, documented: &BTreeSet<String>| {
        defined.difference(documented).cloned().collect::<Vec<_>>()
    };
    let client_missing = missing(kinds_in_source("ClientMessage"), &client);
    let server_missing = missing(kinds_in_source("ServerMessage"), &server);
    let reply_missing = missing(reply_kinds_in_source(), &replies);
    assert!(
        client_missing.is_empty() && server_missing.is_empty() && reply_missing.is_empty(),
        "docs/protocol.md lacks an example of client frames {client_missing:?}, \
         server frames {server_missing:?}, reply kinds {reply_missing:?}"
    );
}

#[test]
fn optional_fields_are_shown_somewhere() {
    // Each optional field should appear in at least one example, so readers see its shape.
    let client = client_examples();
    let server = server_examples();
    let any_client = |f: &dyn Fn(&ClientMessage) -> bool| client.iter().any(|(_, c)| f(&c.message));
    let any_server = |f: &dyn Fn(&ServerMessage) -> bool| server.iter().any(|(_, s)| f(&s.message));
    assert!(any_client(
        &|m| matches!(m, ClientMessage::Subscribe(s) if s.recover.is_some())
    ));
    assert!(any_client(
        &|m| matches!(m, ClientMessage::Subscribe(s) if s.events.is_some())
    ));
    assert!(any_client(
        &|m| matches!(m, ClientMessage::Publish(p) if p.delivery.is_some())
    ));
    assert!(any_server(&|m| matches!(
        m,
        ServerMessage::Reply(Reply::Subscribe {
            recovered: Some(_),
            missed: Some(_),
            ..
        })
    )));
    assert!(any_server(&|m| matches!(
        m,
        ServerMessage::Reply(Reply::Publish { offset: None, .. })
    )));
    assert!(any_server(
        &|m| matches!(m, ServerMessage::Message(b) if b.offset.is_none())
    ));
    assert!(any_server(
        &|m| matches!(m, ServerMessage::Message(b) if b.sender.is_some())
    ));
    assert!(any_server(&|m| matches!(
        m,
        ServerMessage::Message(b) if b.channel == tidings_protocol::BROADCAST_CHANNEL
    )));
    assert!(
        server
            .iter()
            .any(|(_, s)| s.id.is_none() && matches!(s.message, ServerMessage::Error(_)))
    );
}

#[test]
fn the_envelope_example_with_unknown_fields_is_a_ping() {
    let block = blocks()
        .into_iter()
        .find(|b| b.info == "json" && b.text.contains("\"trace\""))
        .expect("the envelope section shows a frame with unknown fields");
    let frame = ClientFrame::decode(&block.text).unwrap();
    assert_eq!(frame, ClientFrame::request(1, ClientMessage::Ping));
}

/// Rows of the markdown table whose header line is `header`, as trimmed cells.
fn table(header: &str) -> Vec<Vec<String>> {
    let mut lines = DOC.lines().skip_while(|l| l.trim() != header).skip(2);
    let mut rows = Vec::new();
    while let Some(line) = lines.next().filter(|l| l.starts_with('|')) {
        let cells = line
            .trim()
            .trim_matches('|')
            .split(" | ")
            .map(|c| c.trim().to_owned())
            .collect();
        rows.push(cells);
    }
    assert!(!rows.is_empty(), "docs/protocol.md has no table `{header}`");
    rows
}

#[test]
fn the_code_table_matches_code() {
    let documented: BTreeMap<u16, (String, bool)> = table("| code | name | retry? | meaning |")
        .into_iter()
        .map(|row| {
            let number: u16 = row[0].parse().unwrap();
            let name = row[1].trim_matches('`').to_owned();
            let retryable = match row[2].as_str() {
                r if r.starts_with("retryable") => true,
                r if r.starts_with("terminal") => false,
                other => panic!("code {number}: retry column {other:?}"),
            };
            (number, (name, retryable))
        })
        .collect();
    let defined: BTreeMap<u16, (String, bool)> = Code::all()
        .map(|c| (c.as_u16(), (c.name().to_owned(), c.is_retryable())))
        .collect();
    assert_eq!(
        documented, defined,
        "section 13's table differs from `Code`"
    );
}

#[test]
fn every_code_says_how_it_appears() {
    let mut seen = BTreeMap::<u16, usize>::new();
    for row in table("| Appears as | Codes |") {
        for word in row[1].split(|c: char| !c.is_ascii_digit()) {
            if word.len() == 4 {
                *seen.entry(word.parse().unwrap()).or_default() += 1;
            }
        }
    }
    for code in Code::all() {
        assert_eq!(
            seen.get(&code.as_u16()).copied(),
            Some(1),
            "code {code} must appear exactly once in the `Appears as` table"
        );
    }
    assert_eq!(
        seen.len(),
        Code::all().count(),
        "unknown codes in the `Appears as` table"
    );
}

#[test]
fn constants_are_spelled_as_in_the_crate() {
    assert!(DOC.contains(&format!("`{}`", tidings_protocol::SUBPROTOCOL)));
    assert!(DOC.contains(&format!(
        "`{}<jwt>`",
        tidings_protocol::TOKEN_SUBPROTOCOL_PREFIX
    )));
    assert!(DOC.contains(&format!("\"{}\"", tidings_protocol::BROADCAST_CHANNEL)));
    assert!(DOC.contains(&format!("`{}`", tidings_protocol::user_channel("{id}"))));
    assert!(DOC.contains(&format!("?protocol={}", tidings_protocol::PROTOCOL_VERSION)));
}
