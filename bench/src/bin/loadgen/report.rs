//! The results page (`docs/benchmarks.md`), its plots, and the smoke summary.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use plotters::prelude::*;

use crate::servers::Kind;
use crate::stats::median;
use crate::{Res, Results, Run};

/// (passed, failed) over every scenario × server run: a run passes when the harness did its
/// job (servers started, clients connected, data flowed). Timings are never judged.
pub(crate) fn summary(r: &Results) -> (usize, usize) {
    let mut passed = 0;
    let mut failed = 0;
    let mut count = |ok: bool, what: String| {
        if ok {
            passed += 1;
        } else {
            failed += 1;
            println!("FAILED: {what}");
        }
    };
    for run in &r.idle {
        let ok = run
            .result
            .as_ref()
            .is_some_and(|x| x.opened > 0 && x.failed * 100 <= x.opened);
        count(
            ok,
            format!(
                "idle {} {}",
                run.server.label(),
                run.error.clone().unwrap_or_default()
            ),
        );
    }
    for run in &r.fanout {
        let ok = run
            .result
            .as_ref()
            .is_some_and(|x| x.steps.first().is_some_and(|s| s.received > 0));
        count(
            ok,
            format!(
                "fan-out {} {}",
                run.server.label(),
                run.error.clone().unwrap_or_default()
            ),
        );
    }
    for run in &r.rr {
        let ok = run
            .result
            .as_ref()
            .is_some_and(|x| x.steps.first().is_some_and(|s| s.answered > 0));
        count(
            ok,
            format!(
                "request/reply {} {}",
                run.server.label(),
                run.error.clone().unwrap_or_default()
            ),
        );
    }
    for run in &r.connect {
        let ok = run.result.as_ref().is_some_and(|x| x.joined > 0);
        count(
            ok,
            format!(
                "connect {} {}",
                run.server.label(),
                run.error.clone().unwrap_or_default()
            ),
        );
    }
    for run in &r.storm {
        let ok = run.result.as_ref().is_some_and(|x| x.came_back > 0);
        count(
            ok,
            format!(
                "storm {} {}",
                run.server.label(),
                run.error.clone().unwrap_or_default()
            ),
        );
    }
    for run in &r.slow {
        let ok = run.result.as_ref().is_some_and(|x| x.healthy_received > 0);
        count(
            ok,
            format!(
                "slow consumer {} {}",
                run.server.label(),
                run.error.clone().unwrap_or_default()
            ),
        );
    }
    (passed, failed)
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

/// Writes `docs/benchmarks.md` and the plots under `docs/benchmarks/`.
pub(crate) fn write(r: &Results, docs: &Path) -> Res<()> {
    let plots = docs.join("benchmarks");
    std::fs::create_dir_all(&plots)?;
    let fonts = register_font();
    let mut md = String::new();
    let passes = r
        .idle
        .iter()
        .map(|x| x.pass)
        .chain(r.fanout.iter().map(|x| x.pass))
        .max()
        .map_or(0, |p| p + 1);
    let _ = writeln!(
        md,
        "# Benchmarks\n\n\
         Generated by `bench/run --{mode}` on {date} ({secs:.0} s); regenerate with the same \
         command, or `target/release/loadgen report bench/results/<file>.json` from the saved \
         results. Do not edit by hand.\n\n\
         > **Caveat.** Two cores, server and generator sharing one machine, and other builds \
         may have been running at the time: these numbers are noisy (expect ±20 % between \
         runs) and only comparisons made within one run mean much. Every figure is the median \
         of {passes} pass(es) run in interleaved order (A B C … C B A).\n",
        mode = r.mode,
        date = r.date,
        secs = r.seconds,
    );
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
         - Servers: Tidings (`tidings serve --ephemeral`, rate limits raised so the generator \
         is never throttled, heartbeat {hb} ms), socketioxide and Socket.IO 4 on Node \
         (`bench/peers/`: HS256 JWT verified on connect, a personal room per user, `join`, \
         `publish` to a room with an ack, `echo`; WebSocket transport only; same heartbeat), \
         and the ceilings (`bench/src/bin/ceiling.rs`): raw tokio TCP fan-out with one write \
         per delivery, the same with every queued frame coalesced into one write, and a bare \
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
         - Ratios are Tidings ÷ the row's server (for memory and CPU lower is better; for \
         rates higher is better).\n",
        hb = r.heartbeat_ms
    );

    // 1. Idle memory.
    if !r.idle.is_empty() {
        let runs: Vec<&Run<_>> = r.idle.iter().collect();
        let _ = writeln!(
            md,
            "## 1. Idle memory\n\nEach connection in its personal channel and one shared \
             channel; RSS after each step; slope by least squares; then two heartbeat periods \
             of idleness and a count of the connections still open.\n"
        );
        md.push_str(&header(&[
            "server",
            "RSS per connection",
            "RSS at the last step",
            "opened / failed",
            "alive after 2 heartbeats",
            "Tidings ÷ this",
        ]));
        let t = med(&runs, Kind::Tidings, |x| Some(x.bytes_per_connection));
        for kind in kinds_in(&runs) {
            let slope = med(&runs, kind, |x| Some(x.bytes_per_connection));
            let last = med(&runs, kind, |x| x.points.last().map(|p| p.1 as f64));
            let opened = med(&runs, kind, |x| Some(x.opened as f64));
            let failed = med(&runs, kind, |x| Some(x.failed as f64));
            let alive = med(&runs, kind, |x| Some(x.alive_after_heartbeats as f64));
            md.push_str(&row(&[
                kind.label().to_owned(),
                format!("{} KB", num(slope / 1000.0, 1)),
                format!("{} MiB", num(last / 1048576.0, 1)),
                format!("{} / {}", num(opened, 0), num(failed, 0)),
                or_error(alive, 0, errors_of(&runs, kind)),
                if kind == Kind::Tidings {
                    String::new()
                } else {
                    ratio(t, slope)
                },
            ]));
        }
        let series: Vec<(Kind, Vec<(f64, f64)>)> = kinds_in(&runs)
            .into_iter()
            .filter_map(|kind| {
                let run = runs.iter().find(|x| x.server == kind)?.result.as_ref()?;
                let mut pts = vec![(0.0, run.baseline_rss as f64 / 1048576.0)];
                pts.extend(
                    run.points
                        .iter()
                        .map(|(n, rss)| (*n as f64, *rss as f64 / 1048576.0)),
                );
                Some((kind, pts))
            })
            .collect();
        if fonts
            && plot(
                &plots.join("memory-vs-connections.png"),
                "Server RSS vs idle connections",
                "connections",
                "RSS (MiB)",
                &series,
                false,
            )
            .is_ok()
        {
            md.push_str("\n![RSS vs connections](benchmarks/memory-vs-connections.png)\n");
        }
        md.push('\n');
    }

    // 2. Fan-out.
    if !r.fanout.is_empty() {
        let _ = writeln!(
            md,
            "## 2. Fan-out\n\nOne channel, one publisher, 100-byte payloads; the publish rate \
             steps up until p99 passes 100 ms or a message is lost. The figure is the fastest \
             passing step: deliveries per second actually received, its latency, and server \
             CPU time per delivery. \"generator\" is the share of its core the load generator \
             used at that step: near 100 % the generator, not the server, is the limit. A \
             server that is busy all the time coalesces queued frames into fewer writes, so at \
             its fastest step its CPU per delivery is simply 1 ÷ its rate; CPU is therefore \
             also compared at one rate every server sustained without loss. Where no step \
             meets 100 ms the ladder climbs on while p99 stays under 1 s, for the lossless \
             throughput.\n"
        );
        let mut by_size: BTreeMap<usize, Vec<&Run<crate::fanout::FanoutResult>>> = BTreeMap::new();
        for run in &r.fanout {
            let members = run.result.as_ref().map_or(0, |x| x.members);
            by_size.entry(members).or_default().push(run);
        }
        // Runs of older result files that failed before producing a result have no size.
        let orphans: Vec<&Run<_>> = by_size.remove(&0).unwrap_or_default();
        for run in orphans {
            let _ = writeln!(
                md,
                "- {} failed: {}\n",
                run.server.label(),
                run.error.clone().unwrap_or_default()
            );
        }
        for (members, runs) in by_size {
            let _ = writeln!(md, "### {} members\n", num(members as f64, 0));
            // The fastest ladder step that every server of this size got through without loss.
            let common = runs
                .iter()
                .filter_map(|run| {
                    let res = run.result.as_ref()?;
                    res.steps
                        .iter()
                        .take_while(|s| s.received >= s.expected && s.closed == 0)
                        .map(|s| s.target_per_s)
                        .reduce(f64::max)
                })
                .reduce(f64::min)
                .unwrap_or(f64::NAN);
            md.push_str(&header(&[
                "server",
                "deliveries/s (p99 < 100 ms, no loss)",
                "p50 ms",
                "p99 ms",
                "p99.9 ms",
                "server CPU µs/delivery",
                "generator",
                "deliveries/s (no loss, p99 < 1 s)",
                &format!("server CPU µs/delivery at {}/s", num(common, 0)),
                "stopped because",
                "Tidings ÷ this (rate)",
                "Tidings ÷ this (CPU at the common rate)",
            ]));
            let best = |x: &crate::fanout::FanoutResult| x.best.clone();
            let lossless = |x: &crate::fanout::FanoutResult| x.best_lossless.clone();
            // CPU per delivery compared at one rate that every server sustained without loss.
            let at_common = |x: &crate::fanout::FanoutResult| {
                x.steps
                    .iter()
                    .find(|s| s.target_per_s == common && s.received >= s.expected)
                    .map(|s| s.server_cpu_us_per_delivery)
            };
            let t_rate = med(&runs, Kind::Tidings, |x| {
                best(x).map(|b| b.deliveries_per_s)
            });
            let t_cpu = med(&runs, Kind::Tidings, at_common);
            for kind in kinds_in(&runs) {
                let rate = med(&runs, kind, |x| best(x).map(|b| b.deliveries_per_s));
                let cpu = med(&runs, kind, |x| {
                    best(x).map(|b| b.server_cpu_us_per_delivery)
                });
                let cpu_at_common = med(&runs, kind, at_common);
                let stopped = runs
                    .iter()
                    .filter(|x| x.server == kind)
                    .map(|x| match (&x.result, &x.error) {
                        (Some(res), _) => res.stopped_because.clone(),
                        (None, Some(e)) => format!("error: {e}"),
                        _ => String::new(),
                    })
                    .collect::<Vec<_>>()
                    .join("; ");
                md.push_str(&row(&[
                    kind.label().to_owned(),
                    if rate.is_finite() {
                        num(rate, 0)
                    } else {
                        "fails".to_owned()
                    },
                    num(med(&runs, kind, |x| best(x).map(|b| b.latency.p50_ms)), 1),
                    num(med(&runs, kind, |x| best(x).map(|b| b.latency.p99_ms)), 1),
                    num(med(&runs, kind, |x| best(x).map(|b| b.latency.p999_ms)), 1),
                    num(cpu, 2),
                    format!(
                        "{} %",
                        num(
                            med(&runs, kind, |x| best(x).map(|b| b.generator_cpu * 100.0)),
                            0
                        )
                    ),
                    num(
                        med(&runs, kind, |x| lossless(x).map(|b| b.deliveries_per_s)),
                        0,
                    ),
                    num(med(&runs, kind, at_common), 2),
                    stopped,
                    if kind == Kind::Tidings {
                        String::new()
                    } else {
                        ratio(t_rate, rate)
                    },
                    if kind == Kind::Tidings {
                        String::new()
                    } else {
                        ratio(t_cpu, cpu_at_common)
                    },
                ]));
            }
            let series: Vec<(Kind, Vec<(f64, f64)>)> = kinds_in(&runs)
                .into_iter()
                .filter_map(|kind| {
                    let run = runs.iter().find(|x| x.server == kind)?.result.as_ref()?;
                    let pts = run
                        .steps
                        .iter()
                        .filter(|s| s.latency.samples > 0)
                        .map(|s| (s.deliveries_per_s, s.latency.p99_ms.max(0.01)))
                        .collect();
                    Some((kind, pts))
                })
                .collect();
            let file = format!("fanout-{members}-latency-vs-rate.png");
            if fonts
                && plot(
                    &plots.join(&file),
                    &format!(
                        "Fan-out to {members} members: p99 latency vs deliveries/s (first pass)"
                    ),
                    "deliveries per second",
                    "p99 latency (ms, log)",
                    &series,
                    true,
                )
                .is_ok()
            {
                let _ = writeln!(
                    md,
                    "\n![fan-out {members} latency vs rate](benchmarks/{file})"
                );
            }
            md.push('\n');
        }
    }

    // 3. Request/reply.
    if !r.rr.is_empty() {
        let runs: Vec<&Run<_>> = r.rr.iter().collect();
        let conns = runs
            .iter()
            .find_map(|x| x.result.as_ref().map(|y| y.connections))
            .unwrap_or(0);
        let _ = writeln!(
            md,
            "## 3. Request/reply\n\n{conns} connections send acknowledged publications to a \
             channel of their own (the raw ceiling: an echo) on an open-loop schedule; the \
             figure is the highest rate with p99 under 10 ms and every request answered.\n"
        );
        md.push_str(&header(&[
            "server",
            "requests/s (p99 < 10 ms)",
            "p50 ms",
            "p99 ms",
            "server CPU µs/request",
            "stopped because",
            "Tidings ÷ this",
        ]));
        let best = |x: &crate::rr::RrResult| x.best.clone();
        let t = med(&runs, Kind::Tidings, |x| best(x).map(|b| b.rate));
        for kind in kinds_in(&runs) {
            let rate = med(&runs, kind, |x| best(x).map(|b| b.rate));
            let stopped = runs
                .iter()
                .filter(|x| x.server == kind)
                .map(|x| match (&x.result, &x.error) {
                    (Some(res), _) => res.stopped_because.clone(),
                    (None, Some(e)) => format!("error: {e}"),
                    _ => String::new(),
                })
                .collect::<Vec<_>>()
                .join("; ");
            md.push_str(&row(&[
                kind.label().to_owned(),
                if rate.is_finite() {
                    num(rate, 0)
                } else {
                    "fails".to_owned()
                },
                num(med(&runs, kind, |x| best(x).map(|b| b.latency.p50_ms)), 2),
                num(med(&runs, kind, |x| best(x).map(|b| b.latency.p99_ms)), 2),
                num(
                    med(&runs, kind, |x| {
                        best(x).map(|b| b.server_cpu_us_per_request)
                    }),
                    1,
                ),
                stopped,
                if kind == Kind::Tidings {
                    String::new()
                } else {
                    ratio(t, rate)
                },
            ]));
        }
        let series: Vec<(Kind, Vec<(f64, f64)>)> = kinds_in(&runs)
            .into_iter()
            .filter_map(|kind| {
                let run = runs.iter().find(|x| x.server == kind)?.result.as_ref()?;
                let pts = run
                    .steps
                    .iter()
                    .filter(|s| s.latency.samples > 0)
                    .map(|s| (s.rate, s.latency.p99_ms.max(0.01)))
                    .collect();
                Some((kind, pts))
            })
            .collect();
        if fonts
            && plot(
                &plots.join("request-reply-latency-vs-rate.png"),
                "Request/reply: p99 latency vs rate (first pass)",
                "requests per second",
                "p99 latency (ms, log)",
                &series,
                true,
            )
            .is_ok()
        {
            md.push_str("\n![request/reply latency vs rate](benchmarks/request-reply-latency-vs-rate.png)\n");
        }
        md.push('\n');
    }

    // 4. Connect rate.
    if !r.connect.is_empty() {
        let _ = writeln!(
            md,
            "## 4. Connect rate with JWT\n\nClients connect (HS256 JWT verified by the server; \
             the bare ceiling verifies none) and join one room, with a fixed number in flight; \
             connections per second to the joined state. Afterwards one publication to the \
             room: members that do not get it are lost subscribes. Listen-queue overflows are \
             read from /proc/net/netstat (backlog 4096 everywhere).\n"
        );
        let mut by_level: BTreeMap<usize, Vec<&Run<crate::connect::ConnectResult>>> =
            BTreeMap::new();
        for run in &r.connect {
            by_level
                .entry(run.result.as_ref().map_or(0, |x| x.inflight))
                .or_default()
                .push(run);
        }
        for (inflight, runs) in by_level {
            let total = runs
                .iter()
                .find_map(|x| x.result.as_ref().map(|y| y.attempted))
                .unwrap_or(0);
            let _ = writeln!(
                md,
                "### {} clients, {inflight} in flight\n",
                num(total as f64, 0)
            );
            md.push_str(&header(&[
                "server",
                "connections/s",
                "p50 ms",
                "p99 ms",
                "failed",
                "lost subscribes",
                "listen overflows",
                "Tidings ÷ this",
            ]));
            let t = med(&runs, Kind::Tidings, |x| Some(x.per_second));
            for kind in kinds_in(&runs) {
                let rate = med(&runs, kind, |x| Some(x.per_second));
                md.push_str(&row(&[
                    kind.label().to_owned(),
                    or_error(rate, 0, errors_of(&runs, kind)),
                    num(med(&runs, kind, |x| Some(x.latency.p50_ms)), 1),
                    num(med(&runs, kind, |x| Some(x.latency.p99_ms)), 1),
                    num(med(&runs, kind, |x| Some(x.failed as f64)), 0),
                    num(med(&runs, kind, |x| x.lost_subscribes.map(|l| l as f64)), 0),
                    num(
                        med(&runs, kind, |x| x.listen_overflows.map(|l| l as f64)),
                        0,
                    ),
                    if kind == Kind::Tidings {
                        String::new()
                    } else {
                        ratio(t, rate)
                    },
                ]));
            }
            md.push('\n');
        }
    }

    // 5. Reconnect storm.
    if !r.storm.is_empty() {
        let runs: Vec<&Run<_>> = r.storm.iter().collect();
        let clients = runs
            .iter()
            .find_map(|x| x.result.as_ref().map(|y| y.clients))
            .unwrap_or(0);
        let _ = writeln!(
            md,
            "## 5. Reconnect storm\n\n{} clients in one channel with a steady publish stream \
             are dropped at once (TCP closed without a close handshake) and reconnect after a \
             uniform 0–1 s delay, the same policy for every server. Tidings clients resubscribe \
             with `recover`; the peers have no recovery. Lost = publications a client had not \
             received by the end (3 s after the stream stopped), summed over clients; the \
             publish rate is 50,000 / clients per second (2 to 50).\n",
            num(clients as f64, 0)
        );
        md.push_str(&header(&[
            "server",
            "95 % back (s)",
            "100 % back (s)",
            "publications",
            "lost (sum over clients)",
            "clients with loss",
            "not recovered",
            "connect retries",
        ]));
        for kind in kinds_in(&runs) {
            md.push_str(&row(&[
                kind.label().to_owned(),
                or_error(med(&runs, kind, |x| x.back_95_s), 2, errors_of(&runs, kind)),
                num(med(&runs, kind, |x| x.back_100_s), 2),
                num(med(&runs, kind, |x| Some(x.published as f64)), 0),
                num(med(&runs, kind, |x| Some(x.lost as f64)), 0),
                num(med(&runs, kind, |x| Some(x.clients_with_loss as f64)), 0),
                num(med(&runs, kind, |x| Some(x.not_recovered as f64)), 0),
                num(med(&runs, kind, |x| Some(x.connect_retries as f64)), 0),
            ]));
        }
        md.push('\n');
    }

    // 6. Slow consumer.
    if !r.slow.is_empty() {
        let runs: Vec<&Run<_>> = r.slow.iter().collect();
        let _ = writeln!(
            md,
            "## 6. Slow consumer\n\nOne subscriber (16 KiB receive buffer) stops reading while \
             publications go on to it and ten healthy subscribers, with heartbeats of 120 s \
             for this scenario (so that silence alone closes nobody: what shows is each \
             server's queueing policy). Server RSS over the run; the healthy subscribers must \
             get everything. Tidings keeps the channel's history (10,000 publications here) \
             in memory, which is part of its growth.\n"
        );
        md.push_str(&header(&[
            "server",
            "RSS start MiB",
            "RSS max MiB",
            "RSS end MiB",
            "growth KiB/s",
            "healthy received / expected",
            "the slow subscriber",
        ]));
        for kind in kinds_in(&runs) {
            let outcome = runs
                .iter()
                .filter(|x| x.server == kind)
                .map(|x| match (&x.result, &x.error) {
                    (Some(res), _) => res.slow_outcome.clone(),
                    (None, Some(e)) => format!("error: {e}"),
                    _ => String::new(),
                })
                .collect::<Vec<_>>()
                .join("; ");
            md.push_str(&row(&[
                kind.label().to_owned(),
                num(
                    med(&runs, kind, |x| Some(x.rss_start as f64 / 1048576.0)),
                    1,
                ),
                num(med(&runs, kind, |x| Some(x.rss_max as f64 / 1048576.0)), 1),
                num(med(&runs, kind, |x| Some(x.rss_end as f64 / 1048576.0)), 1),
                num(med(&runs, kind, |x| Some(x.growth_kib_per_s)), 0),
                format!(
                    "{} / {}",
                    num(med(&runs, kind, |x| Some(x.healthy_received as f64)), 0),
                    num(med(&runs, kind, |x| Some(x.healthy_expected as f64)), 0)
                ),
                outcome,
            ]));
        }
        let series: Vec<(Kind, Vec<(f64, f64)>)> = kinds_in(&runs)
            .into_iter()
            .filter_map(|kind| {
                let run = runs.iter().find(|x| x.server == kind)?.result.as_ref()?;
                Some((
                    kind,
                    run.samples
                        .iter()
                        .map(|(t, rss)| (*t, *rss as f64 / 1048576.0))
                        .collect(),
                ))
            })
            .collect();
        if fonts
            && plot(
                &plots.join("slow-consumer-rss.png"),
                "Slow consumer: server RSS over time (first pass)",
                "seconds",
                "RSS (MiB)",
                &series,
                false,
            )
            .is_ok()
        {
            md.push_str("\n![slow consumer RSS](benchmarks/slow-consumer-rss.png)\n");
        }
        md.push('\n');
    }
    // The tuning log is written by hand (what a run showed, what changed, before and after)
    // and carried into the generated page.
    if let Ok(log) = std::fs::read_to_string(docs.join("benchmarks-tuning.md")) {
        md.push_str(&log);
    }
    std::fs::write(docs.join("benchmarks.md"), md)?;
    Ok(())
}

fn register_font() -> bool {
    let candidates = [
        "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
        "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
        "/usr/share/fonts/TTF/DejaVuSans.ttf",
    ];
    for path in candidates {
        if let Ok(bytes) = std::fs::read(path) {
            let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
            if plotters::style::register_font("sans-serif", FontStyle::Normal, bytes).is_ok() {
                return true;
            }
        }
    }
    eprintln!("no TrueType font found: plots skipped");
    false
}

fn color(kind: Kind) -> RGBColor {
    match kind {
        Kind::Tidings => RGBColor(0xd6, 0x27, 0x28),
        Kind::Socketioxide => RGBColor(0x1f, 0x77, 0xb4),
        Kind::SocketIo => RGBColor(0x2c, 0xa0, 0x2c),
        Kind::RawNaive => RGBColor(0x7f, 0x7f, 0x7f),
        Kind::RawBatch => RGBColor(0x00, 0x00, 0x00),
        Kind::BareWs => RGBColor(0x94, 0x67, 0xbd),
        Kind::TidingsOneUser => RGBColor(0xff, 0x7f, 0x0e),
    }
}

fn plot(
    file: &Path,
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[(Kind, Vec<(f64, f64)>)],
    log_y: bool,
) -> Res<()> {
    let points = series.iter().flat_map(|(_, p)| p.iter());
    let x_max = points.clone().map(|p| p.0).fold(0.0f64, f64::max).max(1.0) * 1.05;
    let y_max = points.clone().map(|p| p.1).fold(0.0f64, f64::max).max(0.1) * 1.2;
    let y_min = points
        .map(|p| p.1)
        .fold(f64::INFINITY, f64::min)
        .clamp(0.01, 1.0);
    let root = BitMapBackend::new(file, (900, 560)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let draw = |chart_result: Result<(), String>| chart_result;
    if log_y {
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 20))
            .margin(15)
            .x_label_area_size(45)
            .y_label_area_size(65)
            .build_cartesian_2d(0.0..x_max, (y_min..y_max).log_scale())
            .map_err(|e| e.to_string())?;
        chart
            .configure_mesh()
            .x_desc(x_label)
            .y_desc(y_label)
            .x_label_formatter(&|x| num(*x, 0))
            .draw()
            .map_err(|e| e.to_string())?;
        for (kind, pts) in series {
            let c = color(*kind);
            draw(
                chart
                    .draw_series(LineSeries::new(pts.iter().copied(), c.stroke_width(2)))
                    .map(|s| {
                        s.label(kind.label())
                            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c));
                    })
                    .map_err(|e| e.to_string()),
            )?;
            chart
                .draw_series(pts.iter().map(|p| Circle::new(*p, 3, c.filled())))
                .map_err(|e| e.to_string())?;
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .position(SeriesLabelPosition::UpperLeft)
            .draw()
            .map_err(|e| e.to_string())?;
    } else {
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 20))
            .margin(15)
            .x_label_area_size(45)
            .y_label_area_size(65)
            .build_cartesian_2d(0.0..x_max, 0.0..y_max)
            .map_err(|e| e.to_string())?;
        chart
            .configure_mesh()
            .x_desc(x_label)
            .y_desc(y_label)
            .x_label_formatter(&|x| num(*x, 0))
            .draw()
            .map_err(|e| e.to_string())?;
        for (kind, pts) in series {
            let c = color(*kind);
            chart
                .draw_series(LineSeries::new(pts.iter().copied(), c.stroke_width(2)))
                .map_err(|e| e.to_string())?
                .label(kind.label())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c));
            chart
                .draw_series(pts.iter().map(|p| Circle::new(*p, 3, c.filled())))
                .map_err(|e| e.to_string())?;
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .position(SeriesLabelPosition::UpperLeft)
            .draw()
            .map_err(|e| e.to_string())?;
    }
    root.present().map_err(|e| e.to_string())?;
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
