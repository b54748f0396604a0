//! Scenario 4, connect rate: N clients connect with a JWT and join one room, at most C in
//! flight; connections per second to the joined state, p50/p99 per connection, failures.
//! Afterwards one publication to the room counts the subscribes that were lost.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;

use crate::client::{Client, Incoming, parse_payload, payload};
use crate::servers::{Kind, Paths, Server};
use crate::stats::{self, Latency, now_ns};
use crate::{Plan, Res, Run, with_server};

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(crate) struct ConnectResult {
    pub(crate) inflight: usize,
    pub(crate) attempted: usize,
    pub(crate) joined: u64,
    pub(crate) failed: u64,
    pub(crate) seconds: f64,
    pub(crate) per_second: f64,
    pub(crate) latency: Latency,
    /// Joined clients that did not get the publication sent after the burst.
    pub(crate) lost_subscribes: Option<u64>,
    pub(crate) first_error: Option<String>,
    pub(crate) listen_overflows: Option<u64>,
}

pub(crate) const SERVERS: [Kind; 7] = [
    Kind::Tidings,
    Kind::TidingsPostgres,
    Kind::TidingsEphemeral,
    Kind::TidingsOneUser,
    Kind::Socketioxide,
    Kind::SocketIo,
    Kind::BareWs,
];

pub(crate) async fn scenario(plan: &Plan, paths: &Paths) -> Vec<Run<ConnectResult>> {
    let mut runs = Vec::new();
    for &inflight in &plan.connect_inflight {
        println!(
            "== connect rate: {} clients, {inflight} in flight",
            plan.connect_total
        );
        for (kind, pass) in plan.order(&SERVERS) {
            let mut run = with_server(kind, pass, paths, plan, |server| {
                measure(server, plan.connect_total, inflight)
            })
            .await;
            if let (None, Some(e)) = (&run.result, &run.error) {
                run.result = Some(ConnectResult {
                    inflight,
                    attempted: plan.connect_total,
                    per_second: f64::NAN,
                    first_error: Some(e.clone()),
                    ..ConnectResult::default()
                });
            }
            if let Some(r) = &run.result {
                println!(
                    "  {:<32} {:>8.0} conn/s  p50 {:.1} p99 {:.1} ms  failed {}  lost subscribes {}",
                    kind.label(),
                    r.per_second,
                    r.latency.p50_ms,
                    r.latency.p99_ms,
                    r.failed,
                    r.lost_subscribes
                        .map_or("n/a".to_owned(), |l| l.to_string())
                );
            }
            runs.push(run);
        }
    }
    runs
}

/// ListenOverflows from /proc/net/netstat (system-wide).
fn listen_overflows() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/net/netstat").ok()?;
    let mut lines = text.lines();
    while let (Some(names), Some(values)) = (lines.next(), lines.next()) {
        if !names.starts_with("TcpExt:") {
            continue;
        }
        let at = names
            .split_whitespace()
            .position(|n| n == "ListenOverflows")?;
        return values.split_whitespace().nth(at)?.parse().ok();
    }
    None
}

async fn measure(server: Server, total: usize, inflight: usize) -> Res<ConnectResult> {
    let target = server.target();
    let has_rooms = server.kind != Kind::BareWs;
    let permits = Arc::new(Semaphore::new(inflight));
    let received = Arc::new(AtomicU64::new(0));
    let overflows0 = listen_overflows();
    let mut hist = stats::histogram();
    let start_ns = now_ns();
    let mut tasks = Vec::new();
    for i in 0..total as u64 {
        let permit = permits.clone().acquire_owned().await?;
        let target = target.clone();
        let received = received.clone();
        let (tx, rx) = tokio::sync::oneshot::channel::<Result<(u64, u64), String>>();
        tasks.push((
            rx,
            tokio::spawn(async move {
                let begin = now_ns();
                let joined = tokio::time::timeout(Duration::from_secs(30), async {
                    let mut client = Client::connect(&target, &format!("c{i}"), i).await?;
                    client.join("burst").await?;
                    Res::Ok(client)
                })
                .await;
                let latency = now_ns() - begin;
                drop(permit);
                let mut client = match joined {
                    Ok(Ok(client)) => client,
                    Ok(Err(e)) => {
                        let _ = tx.send(Err(e.to_string()));
                        return;
                    }
                    Err(_) => {
                        let _ = tx.send(Err("timed out".to_owned()));
                        return;
                    }
                };
                let _ = tx.send(Ok((latency, now_ns())));
                loop {
                    match client.next().await {
                        Incoming::Data(frame) if parse_payload(&frame).is_some() => {
                            received.fetch_add(1, Ordering::Relaxed);
                        }
                        Incoming::Closed(_) => break,
                        _ => {}
                    }
                }
            }),
        ));
    }
    let mut joined = 0u64;
    let mut failed = 0u64;
    let mut first_error = None;
    // The rate runs to the last successful join: one straggler that times out is counted as
    // a failure, not as 30 s of the burst.
    let mut last_join = start_ns;
    for (rx, _) in &mut tasks {
        match rx.await {
            Ok(Ok((latency, at))) => {
                joined += 1;
                stats::record(&mut hist, latency);
                last_join = last_join.max(at);
            }
            Ok(Err(e)) => {
                failed += 1;
                first_error.get_or_insert(e);
            }
            Err(_) => failed += 1,
        }
    }
    let seconds = (last_join - start_ns) as f64 / 1e9;
    let overflows = match (overflows0, listen_overflows()) {
        (Some(a), Some(b)) => Some(b.saturating_sub(a)),
        _ => None,
    };
    let lost_subscribes = if has_rooms {
        let mut publisher = Client::connect(&target, "burst-publisher", 7_998).await?;
        publisher
            .send_publish("burst", &payload(0, now_ns()))
            .await?;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while received.load(Ordering::SeqCst) < joined && tokio::time::Instant::now() < deadline {
            let _ = tokio::time::timeout(Duration::from_millis(20), publisher.next()).await;
        }
        Some(joined - received.load(Ordering::SeqCst).min(joined))
    } else {
        None
    };
    for (_, task) in tasks {
        task.abort();
    }
    server.stop().await;
    Ok(ConnectResult {
        inflight,
        attempted: total,
        joined,
        failed,
        seconds,
        per_second: joined as f64 / seconds,
        latency: Latency::of(&hist),
        lost_subscribes,
        first_error,
        listen_overflows: overflows,
    })
}
