//! Scenario 3, request/reply: N connections each send acknowledged requests (a publication
//! with ack to a channel of their own; an echo on the raw ceiling) on an open-loop schedule;
//! latency from the intended send time to the answer. The rate steps up; the figure is the
//! highest rate with p99 under 10 ms. [`measure`] also runs the publish scenario's shapes.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;

use crate::client::{Client, Incoming, Proto, STEP_TIMEOUT, parse_payload};
use crate::servers::{Kind, Paths, Server, cpu_seconds};
use crate::stats::{self, Latency, now_ns};
use crate::{Plan, Res, Run, with_server};

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(crate) struct RrStep {
    pub(crate) rate: f64,
    pub(crate) sent: u64,
    pub(crate) answered: u64,
    pub(crate) latency: Latency,
    pub(crate) server_cpu_us_per_request: f64,
    pub(crate) generator_cpu: f64,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(crate) struct RrResult {
    pub(crate) connections: usize,
    /// Channels the connections publish to (0 in older results: one each).
    #[serde(default)]
    pub(crate) channels: usize,
    pub(crate) steps: Vec<RrStep>,
    /// The highest rate with p99 < 10 ms and every request answered.
    pub(crate) best: Option<RrStep>,
    /// The highest rate with p99 < 20 ms and every request answered.
    #[serde(default)]
    pub(crate) best_20ms: Option<RrStep>,
    pub(crate) stopped_because: String,
}

/// What one request/reply measurement runs.
#[derive(Clone, Debug)]
pub(crate) struct Shape {
    pub(crate) connections: usize,
    /// Connection i publishes to channel `{prefix}:{i mod channels}`.
    pub(crate) channels: usize,
    pub(crate) prefix: &'static str,
    /// Requests per second, in the order tried.
    pub(crate) ladder: Vec<f64>,
    /// The ladder stops at the first step whose p99 reaches this.
    pub(crate) stop_ms: f64,
}

pub(crate) const SERVERS: [Kind; 5] = [
    Kind::Tidings,
    Kind::TidingsEphemeral,
    Kind::Socketioxide,
    Kind::SocketIo,
    Kind::RawNaive,
];

pub(crate) async fn scenario(plan: &Plan, paths: &Paths) -> Vec<Run<RrResult>> {
    println!("== request/reply: {} connections", plan.rr_conns);
    let shape = Shape {
        connections: plan.rr_conns,
        channels: plan.rr_conns,
        prefix: "rr",
        ladder: plan.rr_ladder.clone(),
        stop_ms: 10.0,
    };
    let mut runs = Vec::new();
    for (kind, pass) in plan.order(&SERVERS) {
        let run = with_server(kind, pass, paths, plan, |server| {
            measure(server, plan, &shape)
        })
        .await;
        if let Some(r) = &run.result {
            match &r.best {
                Some(b) => println!(
                    "  {:<32} {:>8.0} req/s with p99 {:.2} ms  ({})",
                    kind.label(),
                    b.rate,
                    b.latency.p99_ms,
                    r.stopped_because
                ),
                None => println!(
                    "  {:<32} no passing step ({})",
                    kind.label(),
                    r.stopped_because
                ),
            }
        }
        runs.push(run);
    }
    runs
}

struct Counters {
    sent: AtomicU64,
    answered: AtomicU64,
    /// One histogram for every connection (one per task would zero ~256 KiB each at the
    /// start of a step, on the generator's one core).
    hist: Mutex<hdrhistogram::Histogram<u64>>,
}

/// One connection's share of a step: requests at t0 + (index + k·n)/rate.
#[allow(clippy::too_many_arguments)]
async fn conn_step(
    mut client: Client,
    proto: Proto,
    index: usize,
    n: usize,
    room: String,
    rate: f64,
    t0: u64,
    end: u64,
    drain_until: u64,
    counters: Arc<Counters>,
) -> Client {
    let period = n as f64 * 1e9 / rate;
    let offset = index as f64 * 1e9 / rate;
    let mut pending: VecDeque<(u64, u64)> = VecDeque::new();
    let mut k = 0u64;
    loop {
        let due = t0 + (offset + k as f64 * period) as u64;
        let sending = due < end;
        if !sending && pending.is_empty() {
            break;
        }
        if sending && now_ns() >= due {
            let seq = (index as u64) << 32 | k;
            match client.send_request(&room, seq, due).await {
                Ok(id) => {
                    pending.push_back((id, due));
                    counters.sent.fetch_add(1, Ordering::Relaxed);
                }
                Err(_) => break,
            }
            k += 1;
            continue;
        }
        let wake = if sending { due } else { drain_until };
        if !sending && now_ns() >= drain_until {
            break;
        }
        tokio::select! {
            _ = tokio::time::sleep_until(stats::instant_of(wake)) => {}
            incoming = client.next() => {
                let id = match (&incoming, proto) {
                    (Incoming::Ack { id, .. }, Proto::Tidings | Proto::SocketIo) => Some(*id),
                    (Incoming::Data(frame), Proto::Raw) => parse_payload(frame).map(|(s, _)| s),
                    (Incoming::Closed(_), _) => break,
                    _ => None,
                };
                if let Some(id) = id
                    && let Some(at) = pending.iter().position(|(p, _)| *p == id)
                    && let Some((_, due)) = pending.remove(at)
                {
                    let latency = now_ns().saturating_sub(due);
                    if let Ok(mut hist) = counters.hist.lock() {
                        stats::record(&mut hist, latency);
                    }
                    counters.answered.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }
    client
}

/// Connects `shape.connections` clients and climbs the shape's rate ladder.
pub(crate) async fn measure(server: Server, plan: &Plan, shape: &Shape) -> Res<RrResult> {
    let target = server.target();
    let proto = target.proto;
    let n = shape.connections;
    let channels = shape.channels.max(1);
    let prefix = shape.prefix;
    let permits = Arc::new(Semaphore::new(256));
    let mut joins = Vec::new();
    for i in 0..n as u64 {
        let permit = permits.clone().acquire_owned().await?;
        let target = target.clone();
        joins.push(tokio::spawn(async move {
            let c = tokio::time::timeout(
                STEP_TIMEOUT,
                Client::connect(&target, &format!("{prefix}{i}"), i),
            )
            .await;
            drop(permit);
            c
        }));
    }
    let mut clients = Vec::new();
    for join in joins {
        clients.push(join.await?.map_err(|_| "connect timed out")??);
    }
    let mut result = RrResult {
        connections: n,
        channels,
        stopped_because: "top of the rate ladder".to_owned(),
        ..RrResult::default()
    };
    for &rate in &shape.ladder {
        let counters = Arc::new(Counters {
            sent: AtomicU64::new(0),
            answered: AtomicU64::new(0),
            hist: Mutex::new(stats::histogram()),
        });
        let t0 = now_ns() + 20_000_000;
        let end = t0 + plan.step.as_nanos() as u64;
        let drain_until = end + plan.drain.as_nanos() as u64;
        let cpu0 = server.cpu();
        let gen0 = cpu_seconds(std::process::id());
        let mut handles = Vec::new();
        for (index, client) in clients.drain(..).enumerate() {
            handles.push(tokio::spawn(conn_step(
                client,
                proto,
                index,
                n,
                format!("{prefix}:{}", index % channels),
                rate,
                t0,
                end,
                drain_until,
                counters.clone(),
            )));
        }
        for handle in handles {
            clients.push(handle.await?);
        }
        let hist = counters
            .hist
            .lock()
            .map(|h| h.clone())
            .unwrap_or_else(|_| stats::histogram());
        let wall = (now_ns() - t0) as f64 / 1e9;
        let sent = counters.sent.load(Ordering::SeqCst);
        let answered = counters.answered.load(Ordering::SeqCst);
        let step = RrStep {
            rate,
            sent,
            answered,
            latency: Latency::of(&hist),
            server_cpu_us_per_request: (server.cpu() - cpu0) * 1e6 / answered.max(1) as f64,
            generator_cpu: (cpu_seconds(std::process::id()) - gen0) / wall,
        };
        println!(
            "    {:<24} {:>8.0} req/s  answered {}/{}  p50 {:.2} p99 {:.2} p999 {:.2} ms  server {:.1} µs/req",
            server.kind.label(),
            rate,
            answered,
            sent,
            step.latency.p50_ms,
            step.latency.p99_ms,
            step.latency.p999_ms,
            step.server_cpu_us_per_request
        );
        result.steps.push(step.clone());
        if answered < sent {
            result.stopped_because = format!("{} unanswered at {rate:.0}/s", sent - answered);
            break;
        }
        let p99 = step.latency.p99_ms;
        if p99 < 20.0 {
            result.best_20ms = Some(step.clone());
        }
        if p99 < 10.0 {
            result.best = Some(step);
        }
        if p99 >= shape.stop_ms {
            result.stopped_because = format!("p99 {p99:.1} ms at {rate:.0}/s");
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    drop(clients);
    server.stop().await;
    Ok(result)
}
