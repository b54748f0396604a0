//! Sections 1–4 of the page: idle memory, fan-out, request/reply, connect rate.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use super::plot::plot;
use super::{errors_of, header, kinds_in, med, num, or_error, ratio, row};
use crate::Results;
use crate::Run;
use crate::servers::Kind;

/// Section 1: idle memory.
pub(super) fn idle(md: &mut String, r: &Results, plots: &Path, fonts: bool) {
    if r.idle.is_empty() {
        return;
    }
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

/// Section 2: fan-out, one table per channel size.
pub(super) fn fanout(md: &mut String, r: &Results, plots: &Path, fonts: bool) {
    if r.fanout.is_empty() {
        return;
    }
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
                &format!("Fan-out to {members} members: p99 latency vs deliveries/s (first pass)"),
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

/// Section 3: request/reply.
pub(super) fn request_reply(md: &mut String, r: &Results, plots: &Path, fonts: bool) {
    if r.rr.is_empty() {
        return;
    }
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
        md.push_str(
            "\n![request/reply latency vs rate](benchmarks/request-reply-latency-vs-rate.png)\n",
        );
    }
    md.push('\n');
}

/// Section 4: connect rate, one table per concurrency.
pub(super) fn connect(md: &mut String, r: &Results) {
    if r.connect.is_empty() {
        return;
    }
    let _ = writeln!(
        md,
        "## 4. Connect rate with JWT\n\nClients connect (HS256 JWT verified by the server; \
         the bare ceiling verifies none) and join one room, with a fixed number in flight; \
         connections per second to the joined state. Afterwards one publication to the \
         room: members that do not get it are lost subscribes. Listen-queue overflows are \
         read from /proc/net/netstat (backlog 4096 everywhere).\n"
    );
    let mut by_level: BTreeMap<usize, Vec<&Run<crate::connect::ConnectResult>>> = BTreeMap::new();
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
