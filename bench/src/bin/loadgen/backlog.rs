//! Scenario 8, backlog: a client (user `reader`, device `bench`) subscribes to a channel and
//! disconnects. The HTTP API then publishes a backlog, half to that channel and half to the
//! user's personal channel (`POST /api/notify/user/reader`: the offline inbox). The client
//! reconnects as the same device, which brings the inbox after `connected`, resubscribes with
//! `recover` from where it was, and keeps reading. Figures: the time from the reconnect until
//! every publication arrived (in order, once), and the server's RSS sampled during the replay.
//! Only Tidings has this: Socket.IO keeps a short connection-state buffer (2 minutes by
//! default, for its own reconnects), socketioxide none, and neither has an offline inbox.

use std::borrow::Cow;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde::{Deserialize, Serialize};

use crate::client::{Client, Incoming, STEP_TIMEOUT, tidings_reply_position};
use crate::servers::{API_KEY, BACKLOG_PREFIX, Kind, Paths, Server, rss_bytes};
use crate::{Plan, Res, Run, with_server};

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(crate) struct BacklogResult {
    /// Bytes of event JSON published (channel and inbox together).
    pub(crate) bytes: u64,
    pub(crate) channel_publications: u64,
    pub(crate) inbox_publications: u64,
    /// Time to publish the backlog over the HTTP API (64 requests in flight).
    pub(crate) publish_s: f64,
    /// What the `subscribe` reply said.
    pub(crate) recovered: Option<bool>,
    pub(crate) missed: Option<u64>,
    pub(crate) channel_received: u64,
    pub(crate) inbox_received: u64,
    /// Frames not in offset order (duplicates or gaps); 0 when all is well.
    pub(crate) out_of_order: u64,
    /// Bytes of `message` frames the client read.
    pub(crate) frame_bytes: u64,
    /// From the reconnect to the last publication received.
    pub(crate) replay_s: f64,
    pub(crate) server_cpu_s: f64,
    /// Server RSS just before the reconnect, the highest sample during the replay, and after.
    pub(crate) rss_start: u64,
    pub(crate) rss_peak: u64,
    pub(crate) rss_end: u64,
    /// (seconds since the reconnect, RSS bytes) every 20 ms.
    pub(crate) samples: Vec<(f64, u64)>,
}

/// The stores that can replay a backlog; the peers have nothing to replay.
pub(crate) const SERVERS: [Kind; 3] =
    [Kind::Tidings, Kind::TidingsPostgres, Kind::TidingsEphemeral];

/// Event payload size: 4 KiB of text per publication.
const EVENT_BYTES: usize = 4096;
const USER: &str = "reader";
const DEVICE: &str = "bench";

pub(crate) async fn scenario(plan: &Plan, paths: &Paths) -> Vec<Run<BacklogResult>> {
    println!(
        "== backlog: {} MB to one channel and the offline inbox, then a reconnect",
        plan.backlog_mb
    );
    let mut plan = plan.clone();
    plan.common.keep_backlog = true;
    let plan = &plan;
    let mut runs = Vec::new();
    for (kind, pass) in plan.order(&SERVERS) {
        let run = with_server(kind, pass, paths, plan, |server| measure(server, plan)).await;
        if let Some(r) = &run.result {
            println!(
                "  {:<32} {:.0} MB in {:.2} s ({:.0} MB/s)  RSS {:.1} → peak {:.1} → {:.1} MiB  recovered {:?}  published in {:.1} s",
                kind.label(),
                r.bytes as f64 / 1e6,
                r.replay_s,
                r.frame_bytes as f64 / 1e6 / r.replay_s.max(1e-9),
                r.rss_start as f64 / 1048576.0,
                r.rss_peak as f64 / 1048576.0,
                r.rss_end as f64 / 1048576.0,
                r.recovered,
                r.publish_s
            );
        }
        runs.push(run);
    }
    runs
}

/// Publishes `count` events to `channel` and `count` notifications to [`USER`], 64 requests
/// in flight; returns the bytes of event JSON sent.
async fn publish_backlog(server: &Server, channel: &str, count: u64) -> Res<u64> {
    let http = reqwest::Client::new();
    let base = format!("http://{}", server.addr);
    let pad = "x".repeat(EVENT_BYTES);
    let bodies = (0..2 * count).map(|i| {
        let seq = i / 2;
        if i % 2 == 0 {
            (
                format!("{base}/api/publish"),
                format!(
                    "{{\"channel\":\"{channel}\",\"event\":{{\"type\":\"bench\",\"data\":{{\"s\":{seq},\"p\":\"{pad}\"}}}}}}"
                ),
            )
        } else {
            (
                format!("{base}/api/notify/user/{USER}"),
                format!("{{\"message\":\"{pad}\",\"data\":{{\"s\":{seq}}}}}"),
            )
        }
    });
    let mut sent = futures_util::stream::iter(bodies)
        .map(|(url, body)| {
            let http = http.clone();
            async move {
                let len = body.len() as u64;
                let answer = http
                    .post(url)
                    .bearer_auth(API_KEY)
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await?;
                let status = answer.status();
                if !status.is_success() {
                    let text = answer.text().await.unwrap_or_default();
                    return Err(format!("HTTP {status}: {text}").into());
                }
                Res::Ok(len)
            }
        })
        .buffer_unordered(64);
    let mut bytes = 0;
    while let Some(len) = sent.next().await {
        bytes += len?;
    }
    Ok(bytes)
}

#[derive(Deserialize)]
struct Frame<'a> {
    #[serde(borrow)]
    data: Data<'a>,
}

#[derive(Deserialize)]
struct Data<'a> {
    #[serde(borrow)]
    channel: Cow<'a, str>,
    offset: Option<u64>,
}

/// The channel and offset of a `message` frame.
fn position(frame: &[u8]) -> Option<(Cow<'_, str>, u64)> {
    let frame: Frame<'_> = serde_json::from_slice(frame).ok()?;
    Some((frame.data.channel, frame.data.offset?))
}

/// The next offset expected on one channel, and what did not follow it.
struct Expect {
    next: u64,
    received: u64,
    out_of_order: u64,
}

impl Expect {
    fn see(&mut self, offset: u64) {
        if offset == self.next {
            self.received += 1;
            self.next += 1;
        } else {
            self.out_of_order += 1;
            if offset > self.next {
                self.received += 1;
                self.next = offset + 1;
            }
        }
    }
}

async fn measure(server: Server, plan: &Plan) -> Res<BacklogResult> {
    let target = server.target();
    let channel = format!("{BACKLOG_PREFIX}0");
    let count = (plan.backlog_mb * 1_000_000 / 2 / EVENT_BYTES as u64).max(1);

    // Subscribe, note the position, go away.
    let mut reader = Client::connect_device(&target, USER, 0, DEVICE).await?;
    let id = reader.send_join(&channel, None).await?;
    let (epoch, offset) = tokio::time::timeout(STEP_TIMEOUT, async {
        loop {
            match reader.next().await {
                Incoming::Ack { id: got, text, .. } if got == id => {
                    return tidings_reply_position(&text).ok_or("no position in the reply");
                }
                Incoming::Closed(_) => return Err("closed before the subscribe reply"),
                _ => {}
            }
        }
    })
    .await
    .map_err(|_| "no subscribe reply")??;
    reader.drop_now();
    tokio::time::sleep(Duration::from_millis(300)).await;

    let started = Instant::now();
    let bytes = publish_backlog(&server, &channel, count).await?;
    let publish_s = started.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_millis(500)).await;

    let rss_start = server.rss();
    let cpu0 = server.cpu();
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = {
        let sampling = sampling.clone();
        let pid = server.pid();
        tokio::spawn(async move {
            let t0 = Instant::now();
            let mut samples = Vec::new();
            while sampling.load(Ordering::Relaxed) {
                samples.push((t0.elapsed().as_secs_f64(), rss_bytes(pid)));
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            samples
        })
    };
    let t0 = Instant::now();
    let replay = replay(&target, &channel, (&epoch, offset), count).await;
    let replay_s = t0.elapsed().as_secs_f64();
    sampling.store(false, Ordering::Relaxed);
    let samples = sampler.await?;
    let (recovered, missed, channel_seen, inbox_seen, frame_bytes) = replay?;
    let server_cpu_s = server.cpu() - cpu0;
    let rss_end = server.rss();
    server.stop().await;
    Ok(BacklogResult {
        bytes,
        channel_publications: count,
        inbox_publications: count,
        publish_s,
        recovered,
        missed,
        channel_received: channel_seen.received,
        inbox_received: inbox_seen.received,
        out_of_order: channel_seen.out_of_order + inbox_seen.out_of_order,
        frame_bytes,
        replay_s,
        server_cpu_s,
        rss_start,
        rss_peak: samples.iter().map(|s| s.1).max().unwrap_or(0).max(rss_end),
        rss_end,
        samples,
    })
}

type Replayed = (Option<bool>, Option<u64>, Expect, Expect, u64);

/// Reconnects as the same device, recovers the channel and reads until `count` publications
/// of each kind arrived.
async fn replay(
    target: &crate::client::Target,
    channel: &str,
    from: (&str, u64),
    count: u64,
) -> Res<Replayed> {
    let personal = format!("user:{USER}");
    let mut on_channel = Expect {
        next: from.1 + 1,
        received: 0,
        out_of_order: 0,
    };
    let mut inbox = Expect {
        next: 1,
        received: 0,
        out_of_order: 0,
    };
    let mut client = Client::connect_device(target, USER, 1, DEVICE).await?;
    let id = client.send_join(channel, Some(from)).await?;
    let (mut recovered, mut missed) = (None, None);
    let mut frame_bytes = 0u64;
    // However slow, a replay that stops making progress for this long has failed.
    let stall = Duration::from_secs(30);
    while on_channel.received < count || inbox.received < count {
        let incoming = tokio::time::timeout(stall, client.next())
            .await
            .map_err(|_| {
                format!(
                    "nothing for {} s after {} of {count} channel and {} of {count} inbox publications",
                    stall.as_secs(),
                    on_channel.received,
                    inbox.received
                )
            })?;
        match incoming {
            Incoming::Data(frame) => {
                frame_bytes += frame.len() as u64;
                match position(&frame) {
                    Some((name, offset)) if name == channel => on_channel.see(offset),
                    Some((name, offset)) if name == personal => inbox.see(offset),
                    _ => {}
                }
            }
            Incoming::Ack { id: got, text, ok } if got == id => {
                if !ok {
                    return Err(
                        format!("subscribe refused: {}", String::from_utf8_lossy(&text)).into(),
                    );
                }
                let reply: serde_json::Value = serde_json::from_slice(&text)?;
                let data = reply.get("data");
                recovered = data
                    .and_then(|d| d.get("recovered"))
                    .and_then(|v| v.as_bool());
                missed = data.and_then(|d| d.get("missed")).and_then(|v| v.as_u64());
                if recovered == Some(false) {
                    return Err("the subscribe reply said recovered: false".into());
                }
            }
            Incoming::Closed(code) => {
                return Err(format!(
                    "closed ({code:?}) after {} of {count} channel and {} of {count} inbox publications",
                    on_channel.received, inbox.received
                )
                .into());
            }
            _ => {}
        }
    }
    Ok((recovered, missed, on_channel, inbox, frame_bytes))
}
