//! Scenario 9, several nodes (`cluster`): what running two Tidings nodes costs. Two nodes
//! share a fresh PostgreSQL database and exchange publications through Redis pub/sub or
//! NATS (each start with a `broker_prefix` of its own, so runs never hear each other); the
//! baseline is one node on the same PostgreSQL, without a broker.
//!
//! Layouts: **one node** (the publisher and every subscriber on it), **cross** (the
//! publisher on node A, every subscriber on node B) and **split** (the publisher and 20 % of
//! the subscribers on A, 80 % on B). One channel, N subscribers, one publisher sending
//! acknowledged publishes (100-byte payloads carrying a sequence number and the intended send
//! time) at fixed rates, then as fast as the acknowledgements allow (one in flight). Latency
//! runs from the intended send time to receipt, in this one process (one clock). CPU: each
//! node (`/proc`), the broker process (`redis-server` / `nats-server`, found with `pgrep -x`)
//! and the PostgreSQL backends serving the database. Every subscriber checks that it got
//! every publication exactly once and in order (sequence numbers and offsets).
//!
//! Both nodes run on the server core (`taskset -c 0`); the broker and PostgreSQL are not
//! pinned. The scenario starts its own nodes: `--servers` does not apply to it.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

use crate::client::{Client, Incoming, STEP_TIMEOUT, find, parse_payload, payload};
use crate::servers::{self, Kind, Paths, Server, cpu_seconds};
use crate::stats::{self, Latency, now_ns};
use crate::{Mode, Plan, Res, Run};

/// The channel every subscriber joins.
const ROOM: &str = "cluster";
/// Publications of the warm-up (not reported; they prove that data crosses).
const WARMUP: u64 = 20;

/// Which broker carries publications between the nodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Broker {
    /// One node: no broker.
    #[default]
    None,
    Redis,
    Nats,
}

impl Broker {
    pub(crate) fn label(self) -> &'static str {
        match self {
            Broker::None => "one node",
            Broker::Redis => "Redis",
            Broker::Nats => "NATS",
        }
    }

    /// The broker URL (`REDIS_URL` / `NATS_URL`, as for the tests) and a prefix of its own
    /// for start `n`.
    fn url_and_prefix(self, n: u64) -> Option<(String, String)> {
        let pid = std::process::id();
        match self {
            Broker::None => None,
            Broker::Redis => Some((
                std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into()),
                format!("tidings-bench-{pid}-{n}:"),
            )),
            // NATS: dot-separated tokens ending with a dot.
            Broker::Nats => Some((
                std::env::var("NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into()),
                format!("tidings-bench.p{pid}-{n}."),
            )),
        }
    }

    /// The broker's process, for its CPU time (the first `pgrep -x` finds).
    pub(crate) fn pid(self) -> Option<u32> {
        let name = match self {
            Broker::None => return None,
            Broker::Redis => "redis-server",
            Broker::Nats => "nats-server",
        };
        let out = std::process::Command::new("pgrep")
            .arg("-x")
            .arg(name)
            .output()
            .ok()?;
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .next()
            .and_then(|l| l.trim().parse().ok())
    }
}

/// Where the publisher and the subscribers are.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Layout {
    /// One node: the publisher and every subscriber on it.
    #[default]
    OneNode,
    /// The publisher on node A, every subscriber on node B.
    Cross,
    /// The publisher and 20 % of the subscribers on node A, 80 % on node B.
    Split,
}

/// One measured configuration: a broker and a layout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Setup {
    pub(crate) broker: Broker,
    pub(crate) layout: Layout,
}

/// One node on the same PostgreSQL, no broker.
pub(crate) const BASELINE: Setup = Setup {
    broker: Broker::None,
    layout: Layout::OneNode,
};

/// The configurations, baseline first.
pub(crate) const SETUPS: [Setup; 5] = [
    BASELINE,
    Setup {
        broker: Broker::Redis,
        layout: Layout::Cross,
    },
    Setup {
        broker: Broker::Redis,
        layout: Layout::Split,
    },
    Setup {
        broker: Broker::Nats,
        layout: Layout::Cross,
    },
    Setup {
        broker: Broker::Nats,
        layout: Layout::Split,
    },
];

impl Setup {
    pub(crate) fn label(self) -> String {
        match self.layout {
            Layout::OneNode => "one node, no broker (baseline)".to_owned(),
            Layout::Cross => format!(
                "{}: publisher on A, all subscribers on B",
                self.broker.label()
            ),
            Layout::Split => format!(
                "{}: publisher on A, 80 % on B, 20 % on A",
                self.broker.label()
            ),
        }
    }
}

/// CPU seconds of each part (NaN, written as `null`, where there was nothing to read).
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize)]
pub(crate) struct Cpu {
    /// The node the publisher is connected to.
    #[serde(deserialize_with = "nan_if_null")]
    pub(crate) node_a: f64,
    /// The other node (0 with one node).
    #[serde(deserialize_with = "nan_if_null")]
    pub(crate) node_b: f64,
    /// The setup's broker process (NaN when it was not found or without a broker).
    #[serde(deserialize_with = "nan_if_null")]
    pub(crate) broker: f64,
    /// Both broker processes, whatever the setup: during the one-node baseline, what the
    /// brokers spend on their own (housekeeping, other users) in the same time.
    #[serde(default, deserialize_with = "nan_if_null")]
    pub(crate) redis: f64,
    #[serde(default, deserialize_with = "nan_if_null")]
    pub(crate) nats: f64,
    /// The PostgreSQL backends serving the nodes' database.
    #[serde(deserialize_with = "nan_if_null")]
    pub(crate) postgres: f64,
}

/// serde_json writes NaN as `null`: read it back as NaN.
fn nan_if_null<'de, D: serde::Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
}

impl Cpu {
    fn minus(self, earlier: Cpu) -> Cpu {
        Cpu {
            node_a: self.node_a - earlier.node_a,
            node_b: self.node_b - earlier.node_b,
            broker: self.broker - earlier.broker,
            redis: self.redis - earlier.redis,
            nats: self.nats - earlier.nats,
            postgres: self.postgres - earlier.postgres,
        }
    }

    /// Everything together (a broker that was not measured counts 0).
    pub(crate) fn total(&self) -> f64 {
        let broker = if self.broker.is_finite() {
            self.broker
        } else {
            0.0
        };
        self.node_a + self.node_b + broker + self.postgres
    }
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(crate) struct ClusterStep {
    /// `20/s`, … or `acks` (as fast as the acknowledgements allow, one publish in flight).
    pub(crate) name: String,
    /// Publishes per second asked for; `None` for `acks`.
    pub(crate) rate: Option<f64>,
    pub(crate) publishes: u64,
    pub(crate) acked: u64,
    /// Publishes per second achieved (sent over the time spent sending).
    pub(crate) publishes_per_s: f64,
    pub(crate) expected: u64,
    /// Deliveries that arrived before the drain deadline.
    pub(crate) received: u64,
    /// Received over the time from the first publish to the last delivery.
    pub(crate) deliveries_per_s: f64,
    /// Every subscriber.
    pub(crate) latency: Latency,
    /// Subscribers on node A (the publisher's) and on node B.
    pub(crate) latency_a: Latency,
    pub(crate) latency_b: Latency,
    /// From the (intended) send of a publish to its acknowledgement.
    pub(crate) ack: Latency,
    /// CPU from the step's start to the end of its drain.
    pub(crate) cpu: Cpu,
    /// Share of one core the generator used.
    pub(crate) generator_cpu: f64,
    /// Subscribers closed during the step.
    pub(crate) closed: u64,
}

/// Did every subscriber get every publication exactly once and in order?
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(crate) struct DeliveryCheck {
    pub(crate) publications: u64,
    pub(crate) subscribers: u64,
    pub(crate) expected: u64,
    /// Distinct (subscriber, publication) pairs received.
    pub(crate) unique: u64,
    pub(crate) missing: u64,
    pub(crate) duplicates: u64,
    /// Publications that arrived after a later one (by sequence number).
    pub(crate) out_of_order: u64,
    /// Consecutive deliveries whose offsets do not follow each other.
    pub(crate) offset_breaks: u64,
    pub(crate) subscribers_with_violation: u64,
    pub(crate) closed: u64,
    /// The first violation seen, for the report.
    pub(crate) first_violation: Option<String>,
    /// `tidings_broker_gap_filled_total` summed over the nodes: publications a node read from
    /// PostgreSQL because the broker did not bring them in time.
    pub(crate) gap_filled: u64,
}

impl DeliveryCheck {
    pub(crate) fn violations(&self) -> u64 {
        self.missing + self.duplicates + self.out_of_order + self.offset_breaks
    }
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(crate) struct ClusterResult {
    pub(crate) broker: Broker,
    pub(crate) layout: Layout,
    pub(crate) subscribers: usize,
    /// Subscribers on node A (the publisher's node).
    pub(crate) on_node_a: usize,
    pub(crate) join_failures: usize,
    pub(crate) setup_s: f64,
    pub(crate) warmup: Option<ClusterStep>,
    pub(crate) steps: Vec<ClusterStep>,
    pub(crate) check: DeliveryCheck,
    pub(crate) stopped_because: String,
}

impl ClusterResult {
    pub(crate) fn setup(&self) -> Setup {
        Setup {
            broker: self.broker,
            layout: self.layout,
        }
    }

    /// Data flowed: the warm-up reached subscribers, on node B too when it has some.
    pub(crate) fn works(&self) -> bool {
        self.warmup.as_ref().is_some_and(|w| {
            w.received > 0 && (self.on_node_a == self.subscribers || w.latency_b.samples > 0)
        }) && self.steps.first().is_some_and(|s| s.received > 0)
    }
}

pub(crate) async fn scenario(plan: &Plan, paths: &Paths) -> Vec<Run<ClusterResult>> {
    if std::env::var_os("TIDINGS_TEST_SKIP_POSTGRES").is_some() {
        println!("== several nodes: skipped (TIDINGS_TEST_SKIP_POSTGRES)");
        return Vec::new();
    }
    println!(
        "== several nodes: {} subscribers, one publisher; one node vs two (Redis, NATS)",
        plan.cluster_subscribers
    );
    // Latency medians of two passes are their mean, and one stall (a neighbour's build, a
    // checkpoint) moves it: three passes, so that the median is a pass.
    let passes = if plan.mode == Mode::Smoke {
        plan.passes
    } else {
        plan.passes.max(3)
    };
    let mut order = Vec::new();
    for pass in 0..passes {
        if pass % 2 == 0 {
            order.extend(SETUPS.iter().map(|s| (*s, pass)));
        } else {
            order.extend(SETUPS.iter().rev().map(|s| (*s, pass)));
        }
    }
    let mut runs = Vec::new();
    for (setup, pass) in order {
        let started = Instant::now();
        let outcome = measure(setup, plan, paths).await;
        let seconds = started.elapsed().as_secs_f64();
        let (result, error) = match outcome {
            Ok(result) => (result, None),
            Err(e) => {
                eprintln!("    {} failed: {e}", setup.label());
                (
                    ClusterResult {
                        broker: setup.broker,
                        layout: setup.layout,
                        subscribers: plan.cluster_subscribers,
                        stopped_because: format!("error: {e}"),
                        ..ClusterResult::default()
                    },
                    Some(e.to_string()),
                )
            }
        };
        let c = &result.check;
        println!(
            "  {:<48} {} steps  delivered {}/{}  missing {} duplicates {} out of order {} offset breaks {}  gap-filled {}  ({})",
            setup.label(),
            result.steps.len(),
            c.unique,
            c.expected,
            c.missing,
            c.duplicates,
            c.out_of_order,
            c.offset_breaks,
            c.gap_filled,
            result.stopped_because
        );
        if c.violations() > 0 {
            println!(
                "  VIOLATION ({}): {} subscriber(s) did not get every publication once and in order; first: {}",
                setup.label(),
                c.subscribers_with_violation,
                c.first_violation.clone().unwrap_or_default()
            );
        }
        runs.push(Run {
            server: Kind::TidingsPostgres,
            pass,
            seconds,
            result: Some(result),
            error,
        });
    }
    runs
}

/// A fresh database for the nodes of one setup, dropped afterwards.
async fn measure(setup: Setup, plan: &Plan, paths: &Paths) -> Res<ClusterResult> {
    let (db, url) = servers::create_database().await?;
    let outcome = with_nodes(setup, plan, paths, &db, &url).await;
    servers::drop_database(&db).await;
    outcome
}

/// Starts the setup's nodes (A, then B so that A has made the schema), measures, stops them.
async fn with_nodes(
    setup: Setup,
    plan: &Plan,
    paths: &Paths,
    db: &str,
    url: &str,
) -> Res<ClusterResult> {
    static STARTS: AtomicU64 = AtomicU64::new(0);
    let n = STARTS.fetch_add(1, Ordering::Relaxed);
    let broker = setup.broker.url_and_prefix(n);
    let broker = broker.as_ref().map(|(u, p)| (u.as_str(), p.as_str()));
    let mut nodes =
        vec![Server::start_node(&format!("cluster-{n}-a"), paths, plan.common, url, broker).await?];
    if setup.layout != Layout::OneNode {
        match Server::start_node(&format!("cluster-{n}-b"), paths, plan.common, url, broker).await {
            Ok(node) => nodes.push(node),
            Err(e) => {
                for node in nodes {
                    node.stop().await;
                }
                return Err(e);
            }
        }
    }
    let outcome = run_on(setup, plan, &nodes, db).await;
    for node in nodes {
        node.stop().await;
    }
    outcome
}

/// What one subscriber saw.
#[derive(Default)]
struct Tracker {
    /// Bit `seq` is set once publication `seq` arrived.
    seen: Vec<u64>,
    unique: u64,
    duplicates: u64,
    out_of_order: u64,
    offset_breaks: u64,
    max_seq: Option<u64>,
    last_offset: Option<u64>,
    closed: bool,
    first_violation: Option<String>,
}

/// Sequence numbers beyond this are not the bench's (a bitset that large is a bug).
const MAX_SEQ: u64 = 50_000_000;

impl Tracker {
    fn note(&mut self, seq: u64, offset: Option<u64>) {
        let mut violation = None;
        if seq > MAX_SEQ {
            self.duplicates += 1;
            self.first_violation
                .get_or_insert_with(|| format!("sequence number {seq} out of range"));
            return;
        }
        let word = (seq / 64) as usize;
        let bit = 1u64 << (seq % 64);
        if self.seen.len() <= word {
            self.seen.resize(word + 1, 0);
        }
        let duplicate = match self.seen.get_mut(word) {
            Some(w) if *w & bit != 0 => true,
            Some(w) => {
                *w |= bit;
                false
            }
            None => false,
        };
        if duplicate {
            self.duplicates += 1;
            violation = Some(format!("publication {seq} arrived twice"));
        } else {
            self.unique += 1;
            if let Some(max) = self.max_seq
                && seq < max
            {
                self.out_of_order += 1;
                violation = Some(format!("publication {seq} arrived after {max}"));
            }
        }
        self.max_seq = Some(self.max_seq.map_or(seq, |m| m.max(seq)));
        if let Some(offset) = offset {
            if let Some(last) = self.last_offset
                && offset != last + 1
            {
                self.offset_breaks += 1;
                violation.get_or_insert_with(|| {
                    format!("offset {offset} followed offset {last} (publication {seq})")
                });
            }
            self.last_offset = Some(offset);
        }
        if let Some(v) = violation {
            self.first_violation.get_or_insert(v);
        }
    }

    fn violated(&self, publications: u64) -> bool {
        self.unique < publications
            || self.duplicates + self.out_of_order + self.offset_breaks > 0
            || self.closed
    }
}

/// The `offset` of a Tidings `message` frame.
fn offset_of(frame: &[u8]) -> Option<u64> {
    let at = find(frame, b"\"offset\":")? + 9;
    let digits: Vec<u8> = frame
        .get(at..)?
        .iter()
        .copied()
        .take_while(u8::is_ascii_digit)
        .collect();
    std::str::from_utf8(&digits).ok()?.parse().ok()
}

/// Latencies and counts of the subscribers of one node.
struct NodeSink {
    hist: Mutex<Histogram<u64>>,
    received: AtomicU64,
}

impl NodeSink {
    fn new() -> NodeSink {
        NodeSink {
            hist: Mutex::new(stats::histogram()),
            received: AtomicU64::new(0),
        }
    }

    fn take(&self) -> Histogram<u64> {
        match self.hist.lock() {
            Ok(mut h) => std::mem::replace(&mut *h, stats::histogram()),
            Err(_) => stats::histogram(),
        }
    }
}

/// Shared by every subscriber.
struct Sink {
    a: NodeSink,
    b: NodeSink,
    last_ns: AtomicU64,
    closed: AtomicU64,
}

impl Sink {
    fn received(&self) -> u64 {
        self.a.received.load(Ordering::SeqCst) + self.b.received.load(Ordering::SeqCst)
    }
}

/// One subscriber: its tracker and the task reading it.
struct Subscriber {
    tracker: Arc<Mutex<Tracker>>,
    task: JoinHandle<()>,
}

/// Connects `count` subscribers (users `m{first + i}`) to `target` and joins them to
/// [`ROOM`], 256 at a time; up to 1 % may fail (counted, left out of what is expected).
async fn subscribe(
    server: &Server,
    first: u64,
    count: usize,
    sink: &Arc<Sink>,
    on_b: bool,
) -> Res<(Vec<Subscriber>, usize)> {
    let target = server.target();
    let permits = Arc::new(Semaphore::new(256));
    let mut joins = Vec::new();
    for i in first..first + count as u64 {
        let permit = permits.clone().acquire_owned().await?;
        let target = target.clone();
        joins.push(tokio::spawn(async move {
            let client = tokio::time::timeout(2 * STEP_TIMEOUT, async {
                let mut client = Client::connect(&target, &format!("m{i}"), i).await?;
                client.join(ROOM).await?;
                Res::Ok(client)
            })
            .await;
            drop(permit);
            match client {
                Ok(Ok(client)) => Ok(client),
                Ok(Err(e)) => Err(e.to_string()),
                Err(_) => Err("timed out".to_owned()),
            }
        }));
    }
    let mut subscribers = Vec::new();
    let mut errors = 0;
    let mut last_error = String::new();
    for join in joins {
        let mut client = match join.await {
            Ok(Ok(client)) => client,
            Ok(Err(e)) => {
                errors += 1;
                last_error = e;
                continue;
            }
            Err(e) => {
                errors += 1;
                last_error = e.to_string();
                continue;
            }
        };
        let tracker = Arc::new(Mutex::new(Tracker::default()));
        let sink = sink.clone();
        let mine = tracker.clone();
        let task = tokio::spawn(async move {
            loop {
                match client.next().await {
                    Incoming::Data(frame) => {
                        let Some((seq, t)) = parse_payload(&frame) else {
                            continue;
                        };
                        let now = now_ns();
                        if let Ok(mut tracker) = mine.lock() {
                            tracker.note(seq, offset_of(&frame));
                        }
                        let node = if on_b { &sink.b } else { &sink.a };
                        if let Ok(mut h) = node.hist.lock() {
                            stats::record(&mut h, now.saturating_sub(t));
                        }
                        node.received.fetch_add(1, Ordering::Relaxed);
                        sink.last_ns.fetch_max(now, Ordering::Relaxed);
                    }
                    Incoming::Closed(_) => {
                        if let Ok(mut tracker) = mine.lock() {
                            tracker.closed = true;
                        }
                        sink.closed.fetch_add(1, Ordering::Relaxed);
                        break;
                    }
                    _ => {}
                }
            }
        });
        subscribers.push(Subscriber { tracker, task });
    }
    if errors * 100 > count {
        for s in &subscribers {
            s.task.abort();
        }
        return Err(format!("{errors} of {count} subscribers failed to join: {last_error}").into());
    }
    if errors > 0 {
        eprintln!("    {errors} of {count} subscribers failed to join: {last_error}");
    }
    Ok((subscribers, errors))
}

/// How the publisher paces itself.
#[derive(Clone, Copy)]
enum Pace {
    /// Open loop: publishes per second, on schedule whatever the acknowledgements do.
    Rate(f64),
    /// The next publish as soon as the previous one is acknowledged.
    Acks,
}

/// What one step has to work with.
struct Bench<'a> {
    nodes: &'a [Server],
    db: &'a str,
    broker: Broker,
    redis_pid: Option<u32>,
    nats_pid: Option<u32>,
    sink: Arc<Sink>,
    /// Subscribers that joined.
    joined: u64,
    drain: Duration,
}

impl Bench<'_> {
    fn cpu(&self) -> Cpu {
        let redis = self.redis_pid.map_or(f64::NAN, cpu_seconds);
        let nats = self.nats_pid.map_or(f64::NAN, cpu_seconds);
        Cpu {
            node_a: self.nodes.first().map_or(f64::NAN, Server::own_cpu),
            node_b: self.nodes.get(1).map_or(0.0, Server::own_cpu),
            broker: match self.broker {
                Broker::None => f64::NAN,
                Broker::Redis => redis,
                Broker::Nats => nats,
            },
            redis,
            nats,
            postgres: servers::backends_cpu(self.db),
        }
    }
}

/// Publishes for `duration` at `pace` from sequence `seq0`, recording acknowledgement
/// latencies; waits for the outstanding acknowledgements (up to [`STEP_TIMEOUT`]). Returns
/// (sent, acknowledged, ns spent sending).
async fn publish_for(
    client: &mut Client,
    pace: Pace,
    seq0: u64,
    duration: Duration,
    acks: &mut Histogram<u64>,
) -> Res<(u64, u64, u64)> {
    let t0 = now_ns() + 2_000_000;
    let end = t0 + duration.as_nanos() as u64;
    let ack_deadline = end + STEP_TIMEOUT.as_nanos() as u64;
    let mut pending: VecDeque<(u64, u64)> = VecDeque::new();
    let mut sent = 0u64;
    let mut acked = 0u64;
    let mut last_send = t0;
    let mut handle = |incoming: Incoming, pending: &mut VecDeque<(u64, u64)>| -> Res<()> {
        match incoming {
            Incoming::Closed(code) => Err(format!("publisher closed ({code:?})").into()),
            Incoming::Ack {
                ok: false, text, ..
            } => Err(format!("publish refused: {}", String::from_utf8_lossy(&text)).into()),
            Incoming::Ack { id, .. } => {
                if let Some(at) = pending.iter().position(|(p, _)| *p == id)
                    && let Some((_, due)) = pending.remove(at)
                {
                    stats::record(acks, now_ns().saturating_sub(due));
                    acked += 1;
                }
                Ok(())
            }
            _ => Ok(()),
        }
    };
    loop {
        let now = now_ns();
        let (next_due, more) = match pace {
            Pace::Rate(rate) => {
                let due = t0 + (sent as f64 * 1e9 / rate) as u64;
                (due < end)
                    .then_some(due)
                    .map_or((None, false), |d| (Some(d), true))
            }
            Pace::Acks => {
                let more = now < end;
                ((more && pending.is_empty()).then_some(now.max(t0)), more)
            }
        };
        if !more && pending.is_empty() {
            break;
        }
        if let Some(due) = next_due
            && now >= due
        {
            let id = client
                .send_publish(ROOM, &payload(seq0 + sent, due))
                .await?;
            pending.push_back((id, due));
            sent += 1;
            last_send = now_ns();
            // Behind schedule: still read what has arrived, now and then.
            if sent.is_multiple_of(32) {
                while let Some(incoming) = client.next().now_or_never() {
                    handle(incoming, &mut pending)?;
                }
            }
            continue;
        }
        if now >= ack_deadline {
            break;
        }
        let wake = next_due.unwrap_or(ack_deadline);
        tokio::select! {
            _ = tokio::time::sleep_until(stats::instant_of(wake)) => {}
            incoming = client.next() => handle(incoming, &mut pending)?,
        }
    }
    Ok((sent, acked, last_send.saturating_sub(t0).max(1)))
}

/// Reads the publisher (heartbeats, late acknowledgements) for `wait`.
async fn idle_read(client: &mut Client, wait: Duration) {
    let _ = tokio::time::timeout(wait, async {
        loop {
            if let Incoming::Closed(_) = client.next().await {
                break;
            }
        }
    })
    .await;
}

/// One step: publish, wait for the deliveries (up to the drain), measure.
async fn step(
    bench: &Bench<'_>,
    publisher: &mut Client,
    name: String,
    pace: Pace,
    duration: Duration,
    seq: &mut u64,
) -> Res<ClusterStep> {
    let sink = &bench.sink;
    sink.a.take();
    sink.b.take();
    let received0 = sink.received();
    let closed0 = sink.closed.load(Ordering::SeqCst);
    let cpu0 = bench.cpu();
    let gen0 = cpu_seconds(std::process::id());
    let start = now_ns();
    let mut acks = stats::histogram();
    let (sent, acked, sending_ns) = publish_for(publisher, pace, *seq, duration, &mut acks).await?;
    *seq += sent;
    let expected = sent * bench.joined;
    let deadline = tokio::time::Instant::now() + bench.drain;
    while sink.received() - received0 < expected && tokio::time::Instant::now() < deadline {
        idle_read(publisher, Duration::from_millis(20)).await;
    }
    let received = sink.received() - received0;
    let cpu = bench.cpu().minus(cpu0);
    let wall = now_ns().saturating_sub(start).max(1) as f64 / 1e9;
    let generator_cpu = (cpu_seconds(std::process::id()) - gen0) / wall;
    let to_last = sink.last_ns.load(Ordering::SeqCst).saturating_sub(start) as f64 / 1e9;
    let hist_a = sink.a.take();
    let hist_b = sink.b.take();
    let mut all = hist_a.clone();
    let _ = all.add(&hist_b);
    Ok(ClusterStep {
        name,
        rate: match pace {
            Pace::Rate(r) => Some(r),
            Pace::Acks => None,
        },
        publishes: sent,
        acked,
        publishes_per_s: sent as f64 / (sending_ns as f64 / 1e9),
        expected,
        received,
        deliveries_per_s: if to_last > 0.0 {
            received as f64 / to_last
        } else {
            0.0
        },
        latency: Latency::of(&all),
        latency_a: Latency::of(&hist_a),
        latency_b: Latency::of(&hist_b),
        ack: Latency::of(&acks),
        cpu,
        generator_cpu,
        closed: sink.closed.load(Ordering::SeqCst) - closed0,
    })
}

/// `tidings_broker_gap_filled_total` of a node (0 when absent).
async fn gap_filled(node: &Server) -> u64 {
    let Ok(response) = reqwest::get(format!("http://{}/metrics", node.addr)).await else {
        return 0;
    };
    let Ok(text) = response.text().await else {
        return 0;
    };
    text.lines()
        .filter(|l| l.starts_with("tidings_broker_gap_filled_total"))
        .filter_map(|l| l.split_whitespace().last()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

async fn run_on(setup: Setup, plan: &Plan, nodes: &[Server], db: &str) -> Res<ClusterResult> {
    let a = nodes.first().ok_or("no node")?;
    let b = nodes.get(1).unwrap_or(a);
    let total = plan.cluster_subscribers;
    let on_a = match setup.layout {
        Layout::OneNode => total,
        Layout::Cross => 0,
        Layout::Split => total / 5,
    };
    let sink = Arc::new(Sink {
        a: NodeSink::new(),
        b: NodeSink::new(),
        last_ns: AtomicU64::new(0),
        closed: AtomicU64::new(0),
    });
    let started = Instant::now();
    let (mut subscribers, failed_a) = subscribe(a, 0, on_a, &sink, false).await?;
    let (on_b, failed_b) = subscribe(b, on_a as u64, total - on_a, &sink, true).await?;
    subscribers.extend(on_b);
    let mut publisher = Client::connect(&a.target(), "publisher", total as u64 + 7).await?;
    // Let the joins' side effects (presence frames and reports) settle.
    let settle_until = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut last = u64::MAX;
    loop {
        idle_read(&mut publisher, Duration::from_millis(300)).await;
        let cpu = (nodes.iter().map(Server::own_cpu).sum::<f64>() * 100.0) as u64;
        if cpu == last || tokio::time::Instant::now() > settle_until {
            break;
        }
        last = cpu;
    }
    let mut result = ClusterResult {
        broker: setup.broker,
        layout: setup.layout,
        subscribers: total,
        on_node_a: on_a,
        join_failures: failed_a + failed_b,
        setup_s: started.elapsed().as_secs_f64(),
        stopped_because: "all steps ran".to_owned(),
        ..ClusterResult::default()
    };
    let bench = Bench {
        nodes,
        db,
        broker: setup.broker,
        redis_pid: Broker::Redis.pid(),
        nats_pid: Broker::Nats.pid(),
        sink: sink.clone(),
        joined: subscribers.len() as u64,
        drain: plan.cluster_drain,
    };
    let outcome = steps(&bench, plan, &mut publisher, &mut result).await;
    // Every subscriber, every publication: wait for stragglers, then look.
    let publications = result.check.publications;
    let deadline = tokio::time::Instant::now() + bench.drain;
    while tokio::time::Instant::now() < deadline
        && subscribers.iter().any(|s| {
            s.tracker
                .lock()
                .is_ok_and(|t| t.unique < publications && !t.closed)
        })
    {
        idle_read(&mut publisher, Duration::from_millis(50)).await;
    }
    let check = &mut result.check;
    check.subscribers = subscribers.len() as u64;
    check.expected = publications * check.subscribers;
    for s in &subscribers {
        let Ok(t) = s.tracker.lock() else {
            continue;
        };
        check.unique += t.unique;
        check.duplicates += t.duplicates;
        check.out_of_order += t.out_of_order;
        check.offset_breaks += t.offset_breaks;
        check.closed += u64::from(t.closed);
        if t.violated(publications) {
            check.subscribers_with_violation += 1;
            if check.first_violation.is_none() {
                let which = if t.closed {
                    "was closed".to_owned()
                } else if t.unique < publications {
                    format!("got {} of {publications} publications", t.unique)
                } else {
                    String::new()
                };
                check.first_violation = Some(
                    [which, t.first_violation.clone().unwrap_or_default()]
                        .into_iter()
                        .filter(|s| !s.is_empty())
                        .collect::<Vec<_>>()
                        .join("; "),
                );
            }
        }
    }
    check.missing = check.expected.saturating_sub(check.unique);
    for node in nodes {
        check.gap_filled += gap_filled(node).await;
    }
    for s in subscribers {
        s.task.abort();
    }
    drop(publisher);
    outcome.map(|()| result)
}

/// The warm-up and the steps; publications sent are counted in `result.check`.
async fn steps(
    bench: &Bench<'_>,
    plan: &Plan,
    publisher: &mut Client,
    result: &mut ClusterResult,
) -> Res<()> {
    let mut seq = 0u64;
    // Warm-up: a few publications that must reach both nodes' subscribers.
    let warmup = step(
        bench,
        publisher,
        "warm-up".to_owned(),
        Pace::Rate(100.0),
        Duration::from_millis(WARMUP * 10),
        &mut seq,
    )
    .await;
    result.check.publications = seq;
    let warmup = warmup?;
    let on_b = result.subscribers - result.on_node_a;
    let reached_b = warmup.latency_b.samples;
    result.warmup = Some(warmup.clone());
    if warmup.received == 0 {
        return Err("no publication reached any subscriber".into());
    }
    if on_b > 0 && reached_b == 0 {
        return Err(format!(
            "no publication crossed from node A to node B through {} within {:.0} s",
            result.broker.label(),
            bench.drain.as_secs_f64()
        )
        .into());
    }
    let mut paces: Vec<(String, Pace, Duration)> = plan
        .cluster_rates
        .iter()
        .map(|r| (format!("{r:.0}/s"), Pace::Rate(*r), plan.cluster_step))
        .collect();
    paces.push(("acks".to_owned(), Pace::Acks, plan.cluster_acks_step));
    for (name, pace, duration) in paces {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let outcome = step(bench, publisher, name.clone(), pace, duration, &mut seq).await;
        result.check.publications = seq;
        let s = outcome?;
        println!(
            "    {:<48} {:>6}  {:>7.0} pub/s  {:>9.0} deliveries/s  p50 {:>7.2} p99 {:>8.2} ms (A {:.2} / B {:.2})  {}/{}  CPU A {:.2} B {:.2} broker {:.2} pg {:.2} s",
            result.setup().label(),
            name,
            s.publishes_per_s,
            s.deliveries_per_s,
            s.latency.p50_ms,
            s.latency.p99_ms,
            s.latency_a.p99_ms,
            s.latency_b.p99_ms,
            s.received,
            s.expected,
            s.cpu.node_a,
            s.cpu.node_b,
            s.cpu.broker,
            s.cpu.postgres,
        );
        let short = s.expected.saturating_sub(s.received);
        let closed = s.closed;
        result.steps.push(s);
        if short > 0 || closed > 0 {
            result.stopped_because = format!(
                "{short} deliveries missing {:.0} s after {name}, {closed} subscribers closed",
                bench.drain.as_secs_f64()
            );
            break;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tracker_sees_duplicates_gaps_and_reordering() {
        let mut t = Tracker::default();
        t.note(0, Some(1));
        t.note(1, Some(2));
        assert_eq!(
            (t.unique, t.duplicates, t.out_of_order, t.offset_breaks),
            (2, 0, 0, 0)
        );
        t.note(1, Some(2));
        assert_eq!(t.duplicates, 1);
        t.note(3, Some(4));
        t.note(2, Some(3));
        assert_eq!((t.unique, t.out_of_order), (4, 1));
        assert!(t.offset_breaks >= 2);
        assert!(t.violated(4));
        let mut ok = Tracker::default();
        for i in 0..200 {
            ok.note(i, Some(i + 1));
        }
        assert!(!ok.violated(200));
        assert!(ok.violated(201));
    }

    #[test]
    fn offsets_of_message_frames() {
        let m = br#"{"type":"message","data":{"channel":"c","offset":17,"epoch":"e","ts":1,"event":{"type":"bench","data":{"s":1,"t":2}}}}"#;
        assert_eq!(offset_of(m), Some(17));
        assert_eq!(offset_of(b"{}"), None);
    }
}
