//! The results page (`docs/benchmarks.md`), its plots, and the smoke summary.

mod cluster;
mod durable;
mod plot;
mod resilience;
mod throughput;

use std::fmt::Write as _;
use std::path::Path;

use crate::servers::Kind;
use crate::stats::median;
use crate::{Res, Results, Run};

/// (passed, failed) over every scenario × server run: a run passes when the harness did its
/// job (servers started, clients connected, data flowed). Timings are never judged.
pub(crate) fn summary(r: &Results) -> (usize, usize) {
    let mut tally = (0, 0);
    check(&mut tally, "idle", &r.idle, |x| {
        x.opened > 0 && x.failed * 100 <= x.opened
    });
    check(&mut tally, "fan-out", &r.fanout, |x| {
        x.steps.first().is_some_and(|s| s.received > 0)
    });
    check(&mut tally, "request/reply", &r.rr, |x| {
        x.steps.first().is_some_and(|s| s.answered > 0)
    });
    check(&mut tally, "connect", &r.connect, |x| x.joined > 0);
    check(&mut tally, "storm", &r.storm, |x| x.came_back > 0);
    check(&mut tally, "slow consumer", &r.slow, |x| {
        x.healthy_received > 0
    });
    check(&mut tally, "publish", &r.publish, |x| {
        x.result.steps.first().is_some_and(|s| s.answered > 0)
    });
    check(&mut tally, "backlog", &r.backlog, |x| {
        x.channel_received == x.channel_publications && x.inbox_received == x.inbox_publications
    });
    // Several nodes: data flowed to every node's subscribers. Lost, duplicated or reordered
    // deliveries are printed as VIOLATION lines and shown on the page, not judged here.
    for run in &r.cluster {
        match &run.result {
            Some(x) if x.works() && run.error.is_none() => tally.0 += 1,
            _ => {
                tally.1 += 1;
                println!(
                    "FAILED: cluster {} {}",
                    run.result
                        .as_ref()
                        .map_or_else(String::new, |x| x.setup().label()),
                    run.error.clone().unwrap_or_default()
                );
            }
        }
    }
    tally
}

/// Counts a scenario's runs into (passed, failed): a run passes when it produced a result
/// that `works` accepts; each failure is printed.
fn check<T>(
    tally: &mut (usize, usize),
    scenario: &str,
    runs: &[Run<T>],
    works: impl Fn(&T) -> bool,
) {
    for run in runs {
        if run.result.as_ref().is_some_and(&works) {
            tally.0 += 1;
        } else {
            tally.1 += 1;
            println!(
                "FAILED: {scenario} {} {}",
                run.server.label(),
                run.error.clone().unwrap_or_default()
            );
        }
    }
}

/// Median over the passes of `metric` for `kind` among `runs` (NaN when none produced one).
fn med<T>(runs: &[&Run<T>], kind: Kind, metric: impl Fn(&T) -> Option<f64>) -> f64 {
    median(
        runs.iter()
            .filter(|r| r.server == kind)
            .filter_map(|r| r.result.as_ref().and_then(&metric)),
    )
}

fn kinds_in<T>(runs: &[&Run<T>]) -> Vec<Kind> {
    let mut kinds: Vec<Kind> = runs.iter().map(|r| r.server).collect();
    kinds.sort();
    kinds.dedup();
    kinds
}

fn errors_of<T>(runs: &[&Run<T>], kind: Kind) -> Option<String> {
    runs.iter()
        .filter(|r| r.server == kind)
        .find_map(|r| r.error.clone())
}

fn num(x: f64, decimals: usize) -> String {
    if !x.is_finite() {
        return "–".to_owned();
    }
    let s = format!("{x:.decimals$}");
    // Thousands separators for the integer part.
    let (int, frac) = s
        .split_once('.')
        .map_or((s.as_str(), None), |(i, f)| (i, Some(f)));
    let (sign, digits) = int.strip_prefix('-').map_or(("", int), |d| ("-", d));
    let mut grouped = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            grouped.push(',');
        }
        grouped.push(c);
    }
    match frac {
        Some(f) => format!("{sign}{grouped}.{f}"),
        None => format!("{sign}{grouped}"),
    }
}

/// The value, or the error of a failed pass when no pass produced one (the JSON has every
/// pass's error).
fn or_error(value: f64, decimals: usize, error: Option<String>) -> String {
    match (value.is_finite(), error) {
        (true, None) => num(value, decimals),
        (true, Some(_)) => format!("{} (one pass failed)", num(value, decimals)),
        (false, Some(e)) => format!("error: {e}"),
        (false, None) => num(value, decimals),
    }
}

fn ratio(tidings: f64, other: f64) -> String {
    if tidings.is_finite() && other.is_finite() && other != 0.0 {
        format!("{:.2}", tidings / other)
    } else {
        "–".to_owned()
    }
}

fn row(cells: &[String]) -> String {
    format!("| {} |\n", cells.join(" | "))
}

fn header(cells: &[&str]) -> String {
    let mut s = row(&cells.iter().map(|c| (*c).to_owned()).collect::<Vec<_>>());
    s.push_str(&row(&cells
        .iter()
        .map(|_| "---".to_owned())
        .collect::<Vec<_>>()));
    s
}

/// The title, the caveat, the machine and how everything is measured.
fn intro(md: &mut String, r: &Results) {
    let passes = r
        .idle
        .iter()
        .map(|x| x.pass)
        .chain(r.fanout.iter().map(|x| x.pass))
        .chain(r.connect.iter().map(|x| x.pass))
        .chain(r.backlog.iter().map(|x| x.pass))
        .max()
        .map_or(0, |p| p + 1);
    let command = r
        .commands
        .first()
        .cloned()
        .unwrap_or_else(|| format!("bench/run --{}", r.mode));
    let _ = writeln!(
        md,
        "# Benchmarks\n\n\
         Generated by `{command}` on {date} ({secs:.0} s); regenerate with the same \
         command, or `target/release/loadgen report bench/results/<file>.json` from the saved \
         results. Do not edit by hand. The full run, every scenario at its largest, is \
         `bench/run --full` (about an hour).\n\n\
         > **Caveat.** Two cores, server and generator sharing one machine, which other \
         engineers were also using (compiling) at the time: these numbers are noisy (expect \
         ±20 % between runs, more under load). Compare rows of one run with each other (the \
         ratios), not one run with another. Every figure is the median of {passes} pass(es) \
         (acknowledged publishes: of {publish_passes}) run in interleaved order (A B C … C B \
         A).\n",
        date = r.date,
        secs = r.seconds,
        publish_passes = r.publish.iter().map(|x| x.pass + 1).max().unwrap_or(0),
    );
    let missing: Vec<&str> = [
        ("idle", r.idle.is_empty()),
        ("fanout", r.fanout.is_empty()),
        ("rr", r.rr.is_empty()),
        ("connect", r.connect.is_empty()),
        ("storm", r.storm.is_empty()),
        ("slow", r.slow.is_empty()),
        ("publish", r.publish.is_empty()),
        ("backlog", r.backlog.is_empty()),
        ("cluster", r.cluster.is_empty()),
    ]
    .into_iter()
    .filter_map(|(name, empty)| empty.then_some(name))
    .collect();
    if !missing.is_empty() {
        let _ = writeln!(
            md,
            "Not in this run: {}. `bench/run --quick` or `bench/run --full` runs every \
             scenario.\n",
            missing.join(", ")
        );
    }
    let _ = writeln!(
        md,
        "## Machine, versions, commands\n\n- Machine: {}",
        r.machine
    );
    for (name, version) in &r.versions {
        let _ = writeln!(md, "- {name}: `{version}`");
    }
    let _ = writeln!(md, "- Commands:");
    for command in &r.commands {
        let _ = writeln!(md, "  - `{command}`");
    }
    let _ = writeln!(
        md,
        "\n## How it is measured\n\n\
         - Each server runs alone, pinned to core 0 (`taskset -c 0`); the load generator \
         (`bench/src/bin/loadgen`, tokio + hdrhistogram) runs pinned to core 1, sharded into \
         worker processes where one process would need more than ~10,000 of its 20,000 open \
         files, with source addresses spread over 127.0.1.1–127.0.32.250.\n\
         - Servers: **Tidings as the `tidings` binary runs by default**: `tidings serve` with \
         its durable SQLite store in a fresh data directory per server start (`--data-dir`, on \
         the machine's ext4 disk, every publish committed before its acknowledgement). The \
         TOML the bench writes changes only what a load generator needs: client rate limits \
         raised (`[limits] rate_per_second`, `rate_burst`, `rate_violations_before_close`) \
         so that no client is throttled, no cap on connections per user, and heartbeat \
         {hb} ms like every server here; the backlog scenario also keeps its channels' whole \
         history (`[[channels]] history_size`). Extra rows: **Tidings --ephemeral** \
         (publications in memory only) and **Tidings, PostgreSQL** (`--database-url`, a \
         fresh database per start on the local PostgreSQL {pg}; PostgreSQL itself is not \
         pinned and shares the generator's core, and its backends' CPU is added to the \
         server's). Peers: socketioxide and Socket.IO 4 on Node (`bench/peers/`: HS256 JWT \
         verified on connect, a personal room per user, `join`, `publish` to a room with an \
         ack, `echo`; WebSocket transport only; same heartbeat; nothing stored), and the \
         ceilings (`bench/src/bin/ceiling.rs`): raw tokio TCP fan-out with one write per \
         delivery, the same with every queued frame coalesced into one write, and a bare \
         tokio-tungstenite handshake server.\n\
         - Payloads are 100 bytes of JSON carrying a sequence number and the *intended* send \
         time; latency runs from that time to receipt, measured in the one process that holds \
         the publisher and the receivers (no coordinated omission).\n\
         - Server CPU time comes from `/proc/<pid>/stat` (utime + stime), RSS from \
         `/proc/<pid>/status`.\n\
         - \"Tidings, one user id (no presence)\" is a diagnostic row: the same server, but \
         every client connects as one user, so joining a channel sends no `user_joined` to \
         the other members. With N distinct users joining one channel Tidings sends N²/2 \
         presence frames while the channel has at most `presence_events_max_members` (default \
         100) members, and keeps the member list for the `presence` request beyond; the \
         difference between the two rows is what presence costs.\n\
         - Ratios are Tidings (SQLite, the default) ÷ the row's server (for memory and CPU lower is better; for \
         rates higher is better).\n",
        hb = r.heartbeat_ms,
        pg = r
            .versions
            .iter()
            .find(|(name, _)| name == "postgresql")
            .map_or(String::new(), |(_, v)| format!("(`{v}`)")),
    );
}

/// Writes `docs/benchmarks.md` and the plots under `docs/benchmarks/`.
pub(crate) fn write(r: &Results, docs: &Path) -> Res<()> {
    let plots = docs.join("benchmarks");
    std::fs::create_dir_all(&plots)?;
    let fonts = plot::register_font();
    let mut md = String::new();
    intro(&mut md, r);
    throughput::idle(&mut md, r, &plots, fonts);
    throughput::fanout(&mut md, r, &plots, fonts);
    throughput::request_reply(&mut md, r, &plots, fonts);
    throughput::connect(&mut md, r);
    resilience::storm(&mut md, r);
    resilience::slow(&mut md, r, &plots, fonts);
    durable::publish(&mut md, r);
    durable::backlog(&mut md, r, &plots, fonts);
    cluster::cluster(&mut md, r);
    // The tuning log is written by hand (what a run showed, what changed, before and after)
    // and carried into the generated page.
    let log = std::fs::read_to_string(docs.join("benchmarks-tuning.md")).unwrap_or_default();
    durable::sizes(&mut md, &log);
    md.push_str(&log);
    std::fs::write(docs.join("benchmarks.md"), md)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_get_thousands_separators() {
        assert_eq!(num(1234567.0, 0), "1,234,567");
        assert_eq!(num(999.5, 1), "999.5");
        assert_eq!(num(-1234.25, 2), "-1,234.25");
        assert_eq!(num(f64::NAN, 0), "–");
    }
}
