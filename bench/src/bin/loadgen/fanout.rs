//! Scenario 2, fan-out: one channel of N members, one publisher, 100-byte payloads; the
//! publish rate steps up until p99 passes 100 ms or a message is lost. Publisher and
//! receivers live in this one process (one clock); latency runs from the intended send time,
//! so a late publisher shows up as latency (no coordinated omission).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::FutureExt;
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

use crate::client::{Client, Incoming, Proto, STEP_TIMEOUT, Target, parse_payload, payload};
use crate::servers::{Kind, Paths, Server, cpu_seconds};
use crate::stats::{self, Latency, now_ns};
use crate::{Plan, Res, Run, with_server};

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(crate) struct FanoutStep {
    /// Deliveries per second asked for (publishes/s × members).
    pub(crate) target_per_s: f64,
    pub(crate) publishes: u64,
    pub(crate) expected: u64,
    pub(crate) received: u64,
    /// Deliveries per second achieved: received over the time to the last delivery.
    pub(crate) deliveries_per_s: f64,
    pub(crate) latency: Latency,
    /// Server CPU time per delivery, µs.
    pub(crate) server_cpu_us_per_delivery: f64,
    /// Share of one core the generator used during the step.
    pub(crate) generator_cpu: f64,
    pub(crate) closed: u64,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(crate) struct FanoutResult {
    pub(crate) members: usize,
    /// Members that could not join (at most 1 %; left out of the expected deliveries).
    #[serde(default)]
    pub(crate) join_failures: usize,
    pub(crate) setup_s: f64,
    pub(crate) steps: Vec<FanoutStep>,
    /// The fastest step with p99 < 100 ms and nothing lost.
    pub(crate) best: Option<FanoutStep>,
    /// The fastest step with nothing lost, whatever its latency (the ladder goes on past
    /// p99 100 ms, up to p99 1 s): throughput where no server meets the latency bound.
    #[serde(default)]
    pub(crate) best_lossless: Option<FanoutStep>,
    pub(crate) stopped_because: String,
}

pub(crate) const SERVERS: [Kind; 8] = [
    Kind::Tidings,
    Kind::TidingsPostgres,
    Kind::TidingsEphemeral,
    Kind::TidingsOneUser,
    Kind::Socketioxide,
    Kind::SocketIo,
    Kind::RawBatch,
    Kind::RawNaive,
];

pub(crate) async fn scenario(plan: &Plan, paths: &Paths) -> Vec<Run<FanoutResult>> {
    let mut runs = Vec::new();
    for &members in &plan.fanout_sizes {
        println!("== fan-out: {members} members");
        for (kind, pass) in plan.order(&SERVERS) {
            let mut run = with_server(kind, pass, paths, plan, |server| {
                measure(server, plan, members)
            })
            .await;
            if let (None, Some(e)) = (&run.result, &run.error) {
                // Keep the size with the failure, so the page files it under its table.
                run.result = Some(FanoutResult {
                    members,
                    stopped_because: format!("error: {e}"),
                    ..FanoutResult::default()
                });
            }
            if let Some(r) = &run.result {
                match &r.best {
                    Some(b) => println!(
                        "  {:<32} {:>10.0} deliveries/s  p50 {:.1} p99 {:.1} p999 {:.1} ms  cpu {:.2} µs/delivery  ({})",
                        kind.label(),
                        b.deliveries_per_s,
                        b.latency.p50_ms,
                        b.latency.p99_ms,
                        b.latency.p999_ms,
                        b.server_cpu_us_per_delivery,
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
    }
    runs
}

/// Shared by every receiver of one process.
#[derive(Default)]
pub(crate) struct Sink {
    pub(crate) hist: Mutex<Option<Histogram<u64>>>,
    pub(crate) received: AtomicU64,
    pub(crate) closed: AtomicU64,
    pub(crate) last_ns: AtomicU64,
}

impl Sink {
    pub(crate) fn new() -> Arc<Sink> {
        Arc::new(Sink {
            hist: Mutex::new(Some(stats::histogram())),
            ..Sink::default()
        })
    }

    pub(crate) fn take(&self) -> Histogram<u64> {
        let fresh = stats::histogram();
        match self.hist.lock() {
            Ok(mut h) => h.replace(fresh).unwrap_or_else(stats::histogram),
            Err(_) => stats::histogram(),
        }
    }

    fn deliver(&self, frame: &[u8]) {
        if let Some((_, t)) = parse_payload(frame) {
            let now = now_ns();
            if let Ok(mut h) = self.hist.lock()
                && let Some(h) = h.as_mut()
            {
                stats::record(h, now.saturating_sub(t));
            }
            self.received.fetch_add(1, Ordering::Relaxed);
            self.last_ns.fetch_max(now, Ordering::Relaxed);
        }
    }
}

/// Connects `count` members (users `{prefix}{i}`) joined to `room`, 256 at a time, each
/// with a task feeding `sink`. Up to 1 % may fail to join (counted, and left out of what is
/// expected); more is an error.
pub(crate) async fn members(
    target: &Target,
    room: &str,
    prefix: &str,
    first_index: u64,
    count: usize,
    sink: Arc<Sink>,
) -> Res<(Vec<JoinHandle<()>>, usize)> {
    let permits = Arc::new(Semaphore::new(256));
    let mut joins = Vec::new();
    for i in 0..count as u64 {
        let permit = permits.clone().acquire_owned().await?;
        let target = target.clone();
        let room = room.to_owned();
        let user = format!("{prefix}{i}");
        joins.push(tokio::spawn(async move {
            let client = tokio::time::timeout(2 * STEP_TIMEOUT, async {
                let mut client = Client::connect(&target, &user, first_index + i).await?;
                client.join(&room).await?;
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
    let mut tasks = Vec::new();
    let mut errors = 0;
    let mut last_error = String::new();
    for join in joins {
        match join.await {
            Ok(Ok(mut client)) => {
                let sink = sink.clone();
                tasks.push(tokio::spawn(async move {
                    loop {
                        match client.next().await {
                            Incoming::Data(frame) => sink.deliver(&frame),
                            Incoming::Closed(_) => {
                                sink.closed.fetch_add(1, Ordering::Relaxed);
                                break;
                            }
                            _ => {}
                        }
                    }
                }));
            }
            Ok(Err(e)) => {
                errors += 1;
                last_error = e;
            }
            Err(e) => {
                errors += 1;
                last_error = e.to_string();
            }
        }
    }
    if errors * 100 > count {
        for task in &tasks {
            task.abort();
        }
        return Err(format!("{errors} of {count} members failed to join: {last_error}").into());
    }
    if errors > 0 {
        eprintln!("    {errors} of {count} members failed to join: {last_error}");
    }
    Ok((tasks, errors))
}

/// Publishes `count` payloads to `room` at `rate` per second from sequence `seq0`, the first
/// one due at `t0` (ns on the run's clock; `None`: in 2 ms), reading the acknowledgements
/// meanwhile (also when behind schedule, so that heartbeats are answered). Returns the client
/// and the number sent.
pub(crate) async fn publish(
    mut client: Client,
    proto: Proto,
    room: String,
    rate: f64,
    count: u64,
    seq0: u64,
    t0: Option<u64>,
) -> Res<(Client, u64)> {
    let interval = 1e9 / rate;
    let t0 = t0.unwrap_or_else(|| now_ns() + 2_000_000);
    let mut sent = 0u64;
    let check = |incoming: Incoming| -> Res<()> {
        match incoming {
            Incoming::Closed(code) => Err(format!("publisher closed ({code:?})").into()),
            Incoming::Ack {
                ok: false, text, ..
            } => Err(format!("publish refused: {}", String::from_utf8_lossy(&text)).into()),
            _ => Ok(()),
        }
    };
    while sent < count {
        let due = t0 + (sent as f64 * interval) as u64;
        if now_ns() >= due {
            client
                .send_publish(&room, &payload(seq0 + sent, due))
                .await?;
            sent += 1;
            // Behind schedule: still read what has arrived, now and then.
            if sent.is_multiple_of(32) && proto != Proto::Raw {
                while let Some(incoming) = client.next().now_or_never() {
                    check(incoming)?;
                }
            }
            continue;
        }
        if proto == Proto::Raw {
            tokio::time::sleep_until(stats::instant_of(due)).await;
            continue;
        }
        tokio::select! {
            _ = tokio::time::sleep_until(stats::instant_of(due)) => {}
            incoming = client.next() => check(incoming)?,
        }
    }
    Ok((client, sent))
}

/// Keeps reading a publisher's acknowledgements until `stop` completes.
async fn drain_acks(client: &mut Client, proto: Proto, wait: Duration) {
    if proto == Proto::Raw {
        tokio::time::sleep(wait).await;
        return;
    }
    let _ = tokio::time::timeout(wait, async {
        loop {
            if let Incoming::Closed(_) = client.next().await {
                break;
            }
        }
    })
    .await;
}

async fn measure(server: Server, plan: &Plan, members_count: usize) -> Res<FanoutResult> {
    let target = server.target();
    let proto = target.proto;
    let sink = Sink::new();
    let setup = std::time::Instant::now();
    let (tasks, join_failures) =
        members(&target, "fan", "m", 0, members_count, sink.clone()).await?;
    let joined = (members_count - join_failures) as u64;
    let mut publisher = Some(Client::connect(&target, "publisher", 7_999).await?);
    // Let join side effects (presence frames, ...) settle before measuring.
    let settle_until = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut last = u64::MAX;
    loop {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let cpu = server.cpu();
        let quiet = (cpu * 100.0) as u64 == last;
        last = (cpu * 100.0) as u64;
        if quiet || tokio::time::Instant::now() > settle_until {
            break;
        }
    }
    let mut result = FanoutResult {
        members: members_count,
        join_failures,
        setup_s: setup.elapsed().as_secs_f64(),
        ..FanoutResult::default()
    };
    let mut seq = 0u64;
    result.stopped_because = "top of the rate ladder".to_owned();
    for &target_rate in &plan.fanout_ladder {
        let rate = target_rate / members_count as f64;
        let count = ((rate * plan.step.as_secs_f64()).round() as u64).max(1);
        sink.take();
        let received0 = sink.received.swap(0, Ordering::SeqCst);
        let _ = received0;
        let closed0 = sink.closed.load(Ordering::SeqCst);
        let cpu0 = server.cpu();
        let gen0 = cpu_seconds(std::process::id());
        let start = now_ns();
        let client = publisher.take().ok_or("no publisher")?;
        let (mut client, sent) =
            publish(client, proto, "fan".to_owned(), rate, count, seq, None).await?;
        seq += sent;
        let expected = sent * joined;
        let deadline = tokio::time::Instant::now() + plan.drain;
        while sink.received.load(Ordering::SeqCst) < expected
            && tokio::time::Instant::now() < deadline
        {
            drain_acks(&mut client, proto, Duration::from_millis(20)).await;
        }
        let received = sink.received.load(Ordering::SeqCst);
        let elapsed_s = (sink.last_ns.load(Ordering::SeqCst).saturating_sub(start)) as f64 / 1e9;
        let cpu = server.cpu() - cpu0;
        let gen_cpu = cpu_seconds(std::process::id()) - gen0;
        let wall = (now_ns() - start) as f64 / 1e9;
        let latency = Latency::of(&sink.take());
        let step = FanoutStep {
            target_per_s: target_rate,
            publishes: sent,
            expected,
            received,
            deliveries_per_s: if elapsed_s > 0.0 {
                received as f64 / elapsed_s
            } else {
                0.0
            },
            latency,
            server_cpu_us_per_delivery: if received > 0 {
                cpu * 1e6 / received as f64
            } else {
                f64::NAN
            },
            generator_cpu: gen_cpu / wall,
            closed: sink.closed.load(Ordering::SeqCst) - closed0,
        };
        publisher = Some(client);
        let lost = expected.saturating_sub(received);
        let p99 = step.latency.p99_ms;
        println!(
            "    {:<24} {:>9.0}/s asked {:>9.0}/s got  p99 {:>8.1} ms  lost {:>6}  server {:.2} µs/delivery  generator {:.0} %",
            server.kind.label(),
            target_rate,
            step.deliveries_per_s,
            p99,
            lost,
            step.server_cpu_us_per_delivery,
            step.generator_cpu * 100.0
        );
        result.steps.push(step.clone());
        if lost > 0 || step.closed > 0 {
            result.stopped_because =
                format!("{lost} lost, {} closed at {target_rate:.0}/s", step.closed);
            break;
        }
        result.best_lossless = Some(step.clone());
        if p99 > 100.0 && result.best.is_some() {
            result.stopped_because = format!("p99 {p99:.0} ms at {target_rate:.0}/s");
            break;
        }
        // Where even the slowest step misses 100 ms, climb on (up to p99 1 s) for the
        // lossless throughput.
        if p99 > 1000.0 {
            result.stopped_because = format!("p99 {p99:.0} ms at {target_rate:.0}/s");
            break;
        }
        if p99 <= 100.0 {
            result.best = Some(step);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for task in tasks {
        task.abort();
    }
    drop(publisher);
    server.stop().await;
    Ok(result)
}
