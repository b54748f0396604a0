//! Scenario 6, slow consumer: one subscriber (16 KiB socket receive buffer) stops reading
//! while publishing goes on to it and ten healthy subscribers; server RSS is sampled over
//! time, with heartbeats of 120 s so that silence alone closes nobody. The healthy
//! subscribers must keep receiving everything.

use std::sync::atomic::Ordering;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::client::{Client, Incoming};
use crate::fanout::{Sink, members, publish};
use crate::servers::{Kind, Paths, Server};
use crate::stats::{self, now_ns};
use crate::{Plan, Res, Run, with_server};

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(crate) struct SlowResult {
    pub(crate) seconds: f64,
    pub(crate) publish_rate: f64,
    /// (seconds since publishing began, server RSS bytes).
    pub(crate) samples: Vec<(f64, u64)>,
    pub(crate) rss_start: u64,
    pub(crate) rss_max: u64,
    pub(crate) rss_end: u64,
    /// Least-squares RSS growth while publishing, KiB per second.
    pub(crate) growth_kib_per_s: f64,
    pub(crate) healthy_expected: u64,
    pub(crate) healthy_received: u64,
    /// What the slow subscriber saw once it read again.
    pub(crate) slow_outcome: String,
}

pub(crate) const SERVERS: [Kind; 4] = [
    Kind::Tidings,
    Kind::TidingsEphemeral,
    Kind::Socketioxide,
    Kind::SocketIo,
];

const HEALTHY: usize = 10;

pub(crate) async fn scenario(plan: &Plan, paths: &Paths) -> Vec<Run<SlowResult>> {
    println!(
        "== slow consumer: {} s at {} publications/s",
        plan.slow_seconds, plan.slow_rate
    );
    // Heartbeats long enough that the reader which stopped is not closed for its silence:
    // what is measured is each server's queueing policy.
    let mut plan = plan.clone();
    plan.common.heartbeat_ms = 120_000;
    plan.common.heartbeat_timeout_ms = 60_000;
    let plan = &plan;
    let mut runs = Vec::new();
    for (kind, pass) in plan.order(&SERVERS) {
        let run = with_server(kind, pass, paths, plan, |server| measure(server, plan)).await;
        if let Some(r) = &run.result {
            println!(
                "  {:<32} RSS {:.1} → max {:.1} → end {:.1} MiB ({:+.0} KiB/s)  healthy {}/{}  slow: {}",
                kind.label(),
                r.rss_start as f64 / 1048576.0,
                r.rss_max as f64 / 1048576.0,
                r.rss_end as f64 / 1048576.0,
                r.growth_kib_per_s,
                r.healthy_received,
                r.healthy_expected,
                r.slow_outcome
            );
        }
        runs.push(run);
    }
    runs
}

async fn measure(server: Server, plan: &Plan) -> Res<SlowResult> {
    let target = server.target();
    let proto = target.proto;
    let sink = Sink::new();
    let (healthy, _) = members(&target, "slow", "h", 0, HEALTHY, sink.clone()).await?;
    let mut slow = Client::connect_with(&target, "laggard", 100, Some(16 * 1024)).await?;
    slow.join("slow").await?;
    let publisher = Client::connect(&target, "slow-publisher", 101).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_start = server.rss();
    let count = (plan.slow_rate * plan.slow_seconds as f64) as u64;
    let t0 = now_ns();
    let publishing = tokio::spawn(publish(
        publisher,
        proto,
        "slow".to_owned(),
        plan.slow_rate,
        count,
        0,
        None,
    ));
    let mut samples = vec![(0.0, rss_start)];
    while !publishing.is_finished() {
        tokio::time::sleep(Duration::from_millis(250)).await;
        samples.push(((now_ns() - t0) as f64 / 1e9, server.rss()));
    }
    let (publisher, sent) = publishing.await??;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    while sink.received.load(Ordering::SeqCst) < sent * HEALTHY as u64
        && tokio::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let seconds = (now_ns() - t0) as f64 / 1e9;
    let rss_end = server.rss();
    samples.push((seconds, rss_end));
    // Now read what the slow subscriber was left with.
    let mut delivered = 0u64;
    let read_for = Duration::from_secs(if plan.mode == crate::Mode::Smoke {
        1
    } else {
        5
    });
    let outcome = tokio::time::timeout(read_for, async {
        loop {
            match slow.next().await {
                Incoming::Data(_) => delivered += 1,
                Incoming::Closed(code) => return format!("closed by the server (code {code:?})"),
                _ => {}
            }
        }
    })
    .await;
    let slow_outcome = match outcome {
        Ok(closed) => format!("{closed} after {delivered} of {sent} publications"),
        Err(_) => format!("still open; read {delivered} of {sent} publications"),
    };
    let points: Vec<(f64, f64)> = samples.iter().map(|(t, r)| (*t, *r as f64)).collect();
    for task in healthy {
        task.abort();
    }
    drop(publisher);
    server.stop().await;
    Ok(SlowResult {
        seconds,
        publish_rate: plan.slow_rate,
        rss_max: samples.iter().map(|s| s.1).max().unwrap_or(0),
        growth_kib_per_s: stats::slope(&points) / 1024.0,
        samples,
        rss_start,
        rss_end,
        healthy_expected: sent * HEALTHY as u64,
        healthy_received: sink.received.load(Ordering::SeqCst),
        slow_outcome,
    })
}
