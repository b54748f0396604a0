//! Scenario 5, reconnect storm: N clients joined to one channel, a steady publish stream;
//! every client is dropped at once (the TCP connections close without a close handshake) and
//! reconnects after a uniform 0–1 s delay (the same policy for every server). Time until 95 %
//! and 100 % are back and re-subscribed; publications lost. Tidings clients resubscribe with
//! `recover` from the last offset they saw; Socket.IO has no such thing.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::{Semaphore, watch};

use crate::client::{
    Client, Incoming, Proto, STEP_TIMEOUT, Target, parse_payload, tidings_position,
    tidings_reply_position,
};
use crate::servers::{Kind, Paths, Server};
use crate::stats::now_ns;
use crate::{Mode, Plan, Res, Run, with_server};

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(crate) struct StormResult {
    pub(crate) clients: usize,
    pub(crate) publish_rate: f64,
    pub(crate) back_95_s: Option<f64>,
    pub(crate) back_100_s: Option<f64>,
    pub(crate) came_back: u64,
    pub(crate) published: u64,
    /// Publications missing at the clients, summed over clients.
    pub(crate) lost: u64,
    pub(crate) clients_with_loss: u64,
    pub(crate) duplicates: u64,
    /// Tidings subscribe replies that said `recovered: false`.
    pub(crate) not_recovered: u64,
    pub(crate) connect_retries: u64,
    pub(crate) server_cpu_s: f64,
}

pub(crate) const SERVERS: [Kind; 6] = [
    Kind::Tidings,
    Kind::TidingsEphemeral,
    Kind::TidingsOneUser,
    Kind::Socketioxide,
    Kind::SocketIo,
    Kind::BareWs,
];

pub(crate) async fn scenario(plan: &Plan, paths: &Paths) -> Vec<Run<StormResult>> {
    println!("== reconnect storm: {} clients", plan.storm_clients);
    let mut runs = Vec::new();
    for (kind, pass) in plan.order(&SERVERS) {
        let run = with_server(kind, pass, paths, plan, |server| measure(server, plan)).await;
        if let Some(r) = &run.result {
            println!(
                "  {:<32} back 95 % {} s, 100 % {} s  lost {} of {}×{} ({} clients)  not recovered {}  retries {}",
                kind.label(),
                r.back_95_s.map_or("-".into(), |s| format!("{s:.2}")),
                r.back_100_s.map_or("-".into(), |s| format!("{s:.2}")),
                r.lost,
                r.published,
                r.clients,
                r.clients_with_loss,
                r.not_recovered,
                r.connect_retries
            );
        }
        runs.push(run);
    }
    runs
}

#[derive(Default)]
struct Shared {
    initial: AtomicU64,
    drop_at: AtomicU64,
    back: Mutex<Vec<u64>>,
    not_recovered: AtomicU64,
    retries: AtomicU64,
}

/// Sequence numbers seen by one client.
#[derive(Default)]
struct Seen {
    bits: Vec<u64>,
    duplicates: u64,
}

impl Seen {
    fn mark(&mut self, seq: u64) {
        let word = (seq / 64) as usize;
        if self.bits.len() <= word {
            self.bits.resize(word + 1, 0);
        }
        if let Some(w) = self.bits.get_mut(word) {
            let bit = 1u64 << (seq % 64);
            if *w & bit != 0 {
                self.duplicates += 1;
            }
            *w |= bit;
        }
    }

    fn count_below(&self, n: u64) -> u64 {
        (0..n)
            .filter(|s| {
                self.bits
                    .get((s / 64) as usize)
                    .is_some_and(|w| w & (1 << (s % 64)) != 0)
            })
            .count() as u64
    }
}

struct ClientState {
    seen: Seen,
    position: Option<(String, u64)>,
}

impl ClientState {
    fn record(&mut self, frame: &[u8], proto: Proto) {
        if let Some((seq, _)) = parse_payload(frame) {
            self.seen.mark(seq);
        }
        if proto == Proto::Tidings
            && let Some((epoch, offset)) = tidings_position(frame)
        {
            let newer = match &self.position {
                Some((e, o)) => *e != epoch || offset > *o,
                None => true,
            };
            if newer {
                self.position = Some((epoch, offset));
            }
        }
    }
}

async fn join(
    client: &mut Client,
    state: &mut ClientState,
    proto: Proto,
    shared: &Shared,
) -> Res<()> {
    let recover = state.position.as_ref().map(|(e, o)| (e.as_str(), *o));
    let id = client.send_join("storm", recover).await?;
    if proto == Proto::Ws {
        return Ok(());
    }
    loop {
        match client.next().await {
            Incoming::Data(frame) => state.record(&frame, proto),
            Incoming::Ack { id: got, ok, text } if got == id => {
                if !ok {
                    return Err(String::from_utf8_lossy(&text).into_owned().into());
                }
                if proto == Proto::Tidings {
                    if crate::client::find(&text, b"\"recovered\":false").is_some() {
                        shared.not_recovered.fetch_add(1, Ordering::Relaxed);
                    }
                    if state.position.is_none() {
                        state.position = tidings_reply_position(&text);
                    }
                }
                return Ok(());
            }
            Incoming::Closed(code) => return Err(format!("closed ({code:?})").into()),
            _ => {}
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn storm_client(
    target: Target,
    index: u64,
    shared: Arc<Shared>,
    first_permits: Arc<Semaphore>,
    mut drops: watch::Receiver<u32>,
    mut stop: watch::Receiver<bool>,
) -> Seen {
    let proto = target.proto;
    let mut state = ClientState {
        seen: Seen::default(),
        position: None,
    };
    let mut first = true;
    loop {
        // (Re)connect and (re)join, retrying with a little backoff.
        let mut client = loop {
            if *stop.borrow() {
                return state.seen;
            }
            let permit = if first {
                first_permits.clone().acquire_owned().await.ok()
            } else {
                None
            };
            let attempt = tokio::time::timeout(STEP_TIMEOUT, async {
                let mut client = Client::connect(&target, &format!("s{index}"), index).await?;
                join(&mut client, &mut state, proto, &shared).await?;
                Res::Ok(client)
            })
            .await;
            drop(permit);
            match attempt {
                Ok(Ok(client)) => break client,
                _ => {
                    shared.retries.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(rand::random_range(100..600))).await;
                }
            }
        };
        if first {
            first = false;
            shared.initial.fetch_add(1, Ordering::SeqCst);
        } else if let Ok(mut back) = shared.back.lock() {
            back.push(now_ns().saturating_sub(shared.drop_at.load(Ordering::SeqCst)));
        }
        drops.borrow_and_update();
        loop {
            tokio::select! {
                incoming = client.next() => match incoming {
                    Incoming::Data(frame) => state.record(&frame, proto),
                    Incoming::Closed(_) => break,
                    _ => {}
                },
                _ = drops.changed() => {
                    client.drop_now();
                    tokio::time::sleep(Duration::from_millis(rand::random_range(0..1000))).await;
                    break;
                }
                _ = stop.changed() => return state.seen,
            }
        }
    }
}

async fn measure(server: Server, plan: &Plan) -> Res<StormResult> {
    let target = server.target();
    let proto = target.proto;
    let n = plan.storm_clients;
    let shared = Arc::new(Shared::default());
    let (drop_tx, drop_rx) = watch::channel(0u32);
    let (stop_tx, stop_rx) = watch::channel(false);
    let permits = Arc::new(Semaphore::new(256));
    let mut tasks = Vec::new();
    for i in 0..n as u64 {
        tasks.push(tokio::spawn(storm_client(
            target.clone(),
            i,
            shared.clone(),
            permits.clone(),
            drop_rx.clone(),
            stop_rx.clone(),
        )));
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while shared.initial.load(Ordering::SeqCst) < n as u64 {
        if tokio::time::Instant::now() > deadline {
            let _ = stop_tx.send(true);
            return Err(format!(
                "only {} of {n} clients joined",
                shared.initial.load(Ordering::SeqCst)
            )
            .into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Let join side effects settle.
    let short = plan.mode == Mode::Smoke;
    let pause = Duration::from_millis(if short { 300 } else { 1000 });
    tokio::time::sleep(pause).await;
    let rate = (50_000.0 / n as f64).clamp(2.0, 50.0);
    let publishing = proto != Proto::Ws;
    let (pub_stop_tx, pub_stop_rx) = watch::channel(false);
    let publisher = if publishing {
        let client = Client::connect(&target, "storm-publisher", 7_997).await?;
        Some(tokio::spawn(publish_until(
            client,
            proto,
            rate,
            pub_stop_rx,
        )))
    } else {
        None
    };
    tokio::time::sleep(Duration::from_secs(1)).await;
    let cpu0 = server.cpu();
    shared.drop_at.store(now_ns(), Ordering::SeqCst);
    let _ = drop_tx.send(1);
    let limit = if plan.mode == Mode::Smoke { 20 } else { 60 };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(limit);
    loop {
        let back = shared.back.lock().map(|b| b.len()).unwrap_or(0);
        if back >= n || tokio::time::Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(pause).await;
    let _ = pub_stop_tx.send(true);
    let published = match publisher {
        Some(task) => task.await??,
        None => 0,
    };
    // Let the last publications (and recoveries) arrive.
    let drain_deadline =
        tokio::time::Instant::now() + Duration::from_secs(if short { 1 } else { 3 });
    tokio::time::sleep_until(drain_deadline).await;
    let server_cpu_s = server.cpu() - cpu0;
    let _ = stop_tx.send(true);
    let mut lost = 0;
    let mut clients_with_loss = 0;
    let mut duplicates = 0;
    for task in tasks {
        let seen = task.await?;
        let missing = published - seen.count_below(published).min(published);
        lost += missing;
        clients_with_loss += u64::from(missing > 0);
        duplicates += seen.duplicates;
    }
    let mut back = shared.back.lock().map(|b| b.clone()).unwrap_or_default();
    back.sort_unstable();
    let quantile = |q: f64| -> Option<f64> {
        let need = ((n as f64) * q).ceil() as usize;
        (back.len() >= need && need > 0)
            .then(|| back.get(need - 1).map(|ns| *ns as f64 / 1e9))
            .flatten()
    };
    server.stop().await;
    Ok(StormResult {
        clients: n,
        publish_rate: if publishing { rate } else { 0.0 },
        back_95_s: quantile(0.95),
        back_100_s: quantile(1.0),
        came_back: back.len() as u64,
        published,
        lost,
        clients_with_loss,
        duplicates,
        not_recovered: shared.not_recovered.load(Ordering::SeqCst),
        connect_retries: shared.retries.load(Ordering::SeqCst),
        server_cpu_s,
    })
}

/// Publishes to `storm` at `rate` until told to stop; returns how many were published.
async fn publish_until(
    mut client: Client,
    proto: Proto,
    rate: f64,
    stop: watch::Receiver<bool>,
) -> Res<u64> {
    let mut seq = 0;
    let chunk = (rate / 4.0).ceil().max(1.0) as u64;
    // One schedule across the chunks: message k is due at origin + k / rate.
    let origin = now_ns() + 2_000_000;
    while !*stop.borrow() {
        let t0 = origin + (seq as f64 * 1e9 / rate) as u64;
        let (c, sent) = crate::fanout::publish(
            client,
            proto,
            "storm".to_owned(),
            rate,
            chunk,
            seq,
            Some(t0),
        )
        .await?;
        client = c;
        seq += sent;
    }
    Ok(seq)
}
