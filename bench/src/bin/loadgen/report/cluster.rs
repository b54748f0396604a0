//! Section 9 of the page: several nodes (the cluster scenario).

use std::fmt::Write as _;

use super::{header, num, ratio, row};
use crate::Results;
use crate::Run;
use crate::cluster::{BASELINE, Broker, ClusterResult, ClusterStep, Layout, SETUPS, Setup};
use crate::stats::median;

/// The runs of one setup.
fn of(runs: &[Run<ClusterResult>], setup: Setup) -> Vec<&ClusterResult> {
    runs.iter()
        .filter_map(|r| r.result.as_ref())
        .filter(|r| r.setup() == setup)
        .collect()
}

/// Median over the passes of `metric` at step `name` of `setup`.
fn at(
    runs: &[Run<ClusterResult>],
    setup: Setup,
    name: &str,
    metric: impl Fn(&ClusterStep) -> f64,
) -> f64 {
    median(
        of(runs, setup)
            .into_iter()
            .filter_map(|r| r.steps.iter().find(|s| s.name == name))
            .map(metric),
    )
}

/// One pass's CPU over its open-loop steps (the same publications on every setup):
/// (node A, node B, PostgreSQL, broker, all, Redis, NATS) in seconds, and the publications.
fn open_loop_cpu(x: &ClusterResult) -> Option<([f64; 7], u64)> {
    let steps: Vec<&ClusterStep> = x.steps.iter().filter(|s| s.rate.is_some()).collect();
    if steps.is_empty() {
        return None;
    }
    let sum = |f: fn(&ClusterStep) -> f64| steps.iter().map(|s| f(s)).sum::<f64>();
    Some((
        [
            sum(|s| s.cpu.node_a),
            sum(|s| s.cpu.node_b),
            sum(|s| s.cpu.postgres),
            sum(|s| s.cpu.broker),
            sum(|s| s.cpu.total()),
            sum(|s| s.cpu.redis),
            sum(|s| s.cpu.nats),
        ],
        steps.iter().map(|s| s.publishes).sum(),
    ))
}

/// The cost table: CPU per publication of each part, over the open-loop steps.
fn cost(md: &mut String, runs: &[Run<ClusterResult>]) {
    let _ = writeln!(
        md,
        "### Cost: CPU per publication\n\n\
         Over the open-loop steps together (the same publications on every setup; the \
         as-fast-as-acks step is left out, its publication count differs). CPU seconds per \
         1,000 publications equal milliseconds per publication; each publication is \
         delivered to every subscriber. The broker column is the whole broker process; in \
         parentheses, what the same broker process spent during the one-node baseline's \
         steps (nothing of it was for Tidings: housekeeping, other users), per as many \
         publications.\n"
    );
    md.push_str(&header(&[
        "setup",
        "all CPU ÷ one node",
        "all CPU s/1k pub",
        "node A s/1k pub",
        "node B s/1k pub",
        "PostgreSQL s/1k pub",
        "broker µs/pub (idle)",
        "publications",
    ]));
    // Part `i` per 1,000 publications, median over the passes.
    let part = |setup: Setup, i: usize| {
        median(of(runs, setup).into_iter().filter_map(|x| {
            let (cpu, publications) = open_loop_cpu(x)?;
            let value = cpu.get(i).copied()?;
            (publications > 0).then(|| value * 1000.0 / publications as f64)
        }))
    };
    let base_all = part(BASELINE, 4);
    for setup in SETUPS {
        if of(runs, setup).is_empty() {
            continue;
        }
        let all = part(setup, 4);
        let two = setup.layout != Layout::OneNode;
        md.push_str(&row(&[
            setup.label(),
            if setup == BASELINE {
                "1".to_owned()
            } else {
                ratio(all, base_all)
            },
            num(all, 2),
            num(part(setup, 0), 2),
            if two {
                num(part(setup, 1), 2)
            } else {
                "–".to_owned()
            },
            num(part(setup, 2), 2),
            if two {
                let idle = match setup.broker {
                    Broker::Redis => part(BASELINE, 5),
                    Broker::Nats => part(BASELINE, 6),
                    Broker::None => f64::NAN,
                };
                format!(
                    "{} ({})",
                    num(part(setup, 3) * 1000.0, 0),
                    num(idle * 1000.0, 0)
                )
            } else {
                "–".to_owned()
            },
            num(
                median(
                    of(runs, setup)
                        .into_iter()
                        .filter_map(|x| open_loop_cpu(x).map(|(_, p)| p as f64)),
                ),
                0,
            ),
        ]));
    }
    md.push('\n');
}

pub(super) fn cluster(md: &mut String, r: &Results) {
    let runs = &r.cluster;
    if runs.is_empty() {
        return;
    }
    let first = runs.iter().find_map(|x| x.result.as_ref());
    let subscribers = first.map_or(0, |x| x.subscribers);
    let passes = runs.iter().map(|x| x.pass + 1).max().unwrap_or(0);
    let _ = writeln!(
        md,
        "## 9. Several nodes\n\n\
         What running two Tidings nodes costs, against one node on the same PostgreSQL. \
         {subs} subscribers in one channel, one publisher sending acknowledged publishes \
         (100-byte payloads) to node A; the nodes share a fresh PostgreSQL database and carry \
         publications to each other through Redis pub/sub or core NATS (each start with a \
         `broker_prefix` of its own). Layouts: **one node** (no broker; the publisher and \
         every subscriber on it: the baseline), **all subscribers on B** (every delivery \
         crosses the broker) and **80 % on B, 20 % on A**. Each open-loop rate runs for the \
         same time on every setup, then the publisher sends **as fast as the \
         acknowledgements allow** (one publish in flight). Latency runs from the intended \
         send time to receipt (one clock, no coordinated omission); \"÷ one node\" is this \
         setup's figure over the baseline's at the same step (latency and CPU: higher is \
         worse; deliveries/s: higher is better).\n\n\
         - Pinning: **both nodes run on core 0** (`taskset -c 0`), like every server here, \
         so two nodes share the core one node has: this measures what the second node and \
         the broker cost, not what a second machine would gain. The broker (`redis-server`, \
         `nats-server`) and PostgreSQL are not pinned (in practice they share core 1 with \
         the generator).\n\
         - CPU (the cost table after the steps) of each node from `/proc/<pid>/stat`, of \
         the PostgreSQL backends serving the database (as in the PostgreSQL rows above), and \
         of the whole broker process (found with `pgrep -x`; anything else using that Redis \
         or NATS at the time is counted too), from the start of a step until its last \
         delivery arrived.\n\
         - Every subscriber checks that it got every publication exactly once and in order \
         (sequence numbers and offsets); the table after the steps sums every pass.\n\
         - Figures are medians of {passes} pass(es), setups in interleaved order. The \
         scenario starts its own nodes (`--only cluster`; `--servers` does not apply).\n",
        subs = num(subscribers as f64, 0),
    );
    // The steps, in the order the first complete result ran them.
    let names: Vec<(String, Option<f64>)> = runs
        .iter()
        .filter_map(|x| x.result.as_ref())
        .max_by_key(|x| x.steps.len())
        .map(|x| x.steps.iter().map(|s| (s.name.clone(), s.rate)).collect())
        .unwrap_or_default();
    let base = BASELINE;
    for (name, rate) in &names {
        let title = match rate {
            Some(rate) => format!(
                "{} publishes/s ({} deliveries/s)",
                num(*rate, 0),
                num(rate * subscribers as f64, 0)
            ),
            None => "As fast as the acknowledgements allow (one publish in flight)".to_owned(),
        };
        let _ = writeln!(md, "### {title}\n");
        md.push_str(&header(&[
            "setup",
            "p50 ÷ one node",
            "p99 ÷ one node",
            "deliveries/s ÷ one node",
            "p50 ms",
            "p99 ms",
            "p99.9 ms",
            "p99 on A / on B ms",
            "deliveries/s",
            "publishes/s",
            "ack p99 ms",
            "received / expected",
        ]));
        let base_p50 = at(runs, base, name, |s| s.latency.p50_ms);
        let base_p99 = at(runs, base, name, |s| s.latency.p99_ms);
        let base_rate = at(runs, base, name, |s| s.deliveries_per_s);
        for setup in SETUPS {
            if of(runs, setup).is_empty() {
                continue;
            }
            let m = |f: &dyn Fn(&ClusterStep) -> f64| at(runs, setup, name, f);
            let p50 = m(&|s| s.latency.p50_ms);
            let p99 = m(&|s| s.latency.p99_ms);
            let rate = m(&|s| s.deliveries_per_s);
            let rel = |x: f64, b: f64| {
                if setup == base {
                    "1".to_owned()
                } else {
                    ratio(x, b)
                }
            };
            let split = match setup.layout {
                Layout::OneNode => format!("{} / –", num(m(&|s| s.latency_a.p99_ms), 2)),
                Layout::Cross => format!("– / {}", num(m(&|s| s.latency_b.p99_ms), 2)),
                Layout::Split => format!(
                    "{} / {}",
                    num(m(&|s| s.latency_a.p99_ms), 2),
                    num(m(&|s| s.latency_b.p99_ms), 2)
                ),
            };
            let ran = of(runs, setup)
                .into_iter()
                .any(|x| x.steps.iter().any(|s| s.name == *name));
            let received = if ran {
                format!(
                    "{} / {}",
                    num(m(&|s| s.received as f64), 0),
                    num(m(&|s| s.expected as f64), 0)
                )
            } else {
                of(runs, setup)
                    .into_iter()
                    .map(|x| x.stopped_because.clone())
                    .collect::<Vec<_>>()
                    .join("; ")
            };
            md.push_str(&row(&[
                setup.label(),
                rel(p50, base_p50),
                rel(p99, base_p99),
                rel(rate, base_rate),
                num(p50, 2),
                num(p99, 2),
                num(m(&|s| s.latency.p999_ms), 2),
                split,
                num(rate, 0),
                num(m(&|s| s.publishes_per_s), 0),
                num(m(&|s| s.ack.p99_ms), 2),
                received,
            ]));
        }
        md.push('\n');
    }
    cost(md, runs);
    let _ = writeln!(
        md,
        "### Every subscriber, every publication, once and in order\n\n\
         Summed over every pass, warm-up (20 publications) and steps included. \"offset \
         breaks\": consecutive deliveries to one subscriber whose offsets do not follow each \
         other; \"gap-filled\": publications a node read from PostgreSQL because the broker \
         had not brought them (`tidings_broker_gap_filled_total`).\n"
    );
    md.push_str(&header(&[
        "setup",
        "publications",
        "deliveries expected",
        "received (distinct)",
        "missing",
        "duplicates",
        "out of order",
        "offset breaks",
        "subscribers closed",
        "gap-filled",
        "stopped because",
    ]));
    let mut violations = Vec::new();
    for setup in SETUPS {
        let results = of(runs, setup);
        if results.is_empty() {
            continue;
        }
        let sum =
            |f: fn(&ClusterResult) -> u64| num(results.iter().map(|x| f(x)).sum::<u64>() as f64, 0);
        for x in &results {
            if x.check.violations() > 0 || x.check.closed > 0 {
                violations.push(format!(
                    "- **{}**: {} subscriber(s) affected; first: {}",
                    setup.label(),
                    x.check.subscribers_with_violation,
                    x.check.first_violation.clone().unwrap_or_default()
                ));
            }
        }
        md.push_str(&row(&[
            setup.label(),
            sum(|x| x.check.publications),
            sum(|x| x.check.expected),
            sum(|x| x.check.unique),
            sum(|x| x.check.missing),
            sum(|x| x.check.duplicates),
            sum(|x| x.check.out_of_order),
            sum(|x| x.check.offset_breaks),
            sum(|x| x.check.closed),
            sum(|x| x.check.gap_filled),
            {
                let mut why: Vec<String> =
                    results.iter().map(|x| x.stopped_because.clone()).collect();
                why.dedup();
                why.join("; ")
            },
        ]));
    }
    if violations.is_empty() {
        md.push_str("\nNo violation: every subscriber got every publication once, in order.\n");
    } else {
        md.push_str("\n**Violations** (reproduce with `bench/run --quick --only cluster`):\n\n");
        for v in violations {
            md.push_str(&v);
            md.push('\n');
        }
    }
    md.push('\n');
}
