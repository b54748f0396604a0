//! A worker process holding idle connections for the orchestrator, so that no process of the
//! generator needs more than ~10,000 of the 20,000 files it may open.
//!
//! `loadgen worker --proto P --addr A --base N --room R` (`-` as R joins nothing), then on
//! standard input:
//! `open K` (opens K more connections, each joined to R; answers `opened OK FAILED`),
//! `alive` (answers `alive N`: connections not closed), `quit`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::Semaphore;

use crate::Res;
use crate::client::{Client, Incoming, Proto, STEP_TIMEOUT, Target};

/// How many connections one worker process holds at most.
pub(crate) const PER_WORKER: usize = 9_500;

pub(crate) async fn main(args: &[String]) -> Res<()> {
    let get = |name: &str| crate::arg(args, name).ok_or(format!("worker: {name} missing"));
    let proto: Proto = serde_json::from_str(&format!("\"{}\"", get("--proto")?))?;
    let target = Target {
        proto,
        addr: get("--addr")?.parse()?,
        secret: crate::servers::SECRET.into(),
        one_user: crate::arg(args, "--one-user").is_some_and(|v| v == "true"),
    };
    let base: u64 = get("--base")?.parse()?;
    let room = get("--room")?;
    let alive = Arc::new(AtomicU64::new(0));
    let mut opened: u64 = 0;
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    let mut stdout = tokio::io::stdout();
    while let Some(line) = lines.next_line().await? {
        let mut words = line.split_whitespace();
        let answer = match words.next() {
            Some("open") => {
                let count: u64 = words.next().and_then(|w| w.parse().ok()).unwrap_or(0);
                let (ok, failed) = open(&target, &room, base + opened, count, alive.clone()).await;
                opened += count;
                format!("opened {ok} {failed}\n")
            }
            Some("alive") => format!("alive {}\n", alive.load(Ordering::SeqCst)),
            Some("quit") | None => break,
            Some(other) => format!("error unknown command {other}\n"),
        };
        stdout.write_all(answer.as_bytes()).await?;
        stdout.flush().await?;
    }
    Ok(())
}

/// Opens `count` idle connections (users `idle{index}`), each joined to `room`, 256 at a
/// time; returns (ok, failed). Each stays open, answering heartbeats, until the process ends.
pub(crate) async fn open(
    target: &Target,
    room: &str,
    first: u64,
    count: u64,
    alive: Arc<AtomicU64>,
) -> (u64, u64) {
    let permits = Arc::new(Semaphore::new(256));
    let mut handles = Vec::new();
    for index in first..first + count {
        let Ok(permit) = permits.clone().acquire_owned().await else {
            break;
        };
        let target = target.clone();
        let room = room.to_owned();
        let alive = alive.clone();
        handles.push(tokio::spawn(async move {
            let connected = tokio::time::timeout(STEP_TIMEOUT, async {
                let mut client = Client::connect(&target, &format!("idle{index}"), index).await?;
                if room != "-" {
                    client.join(&room).await?;
                }
                Res::Ok(client)
            })
            .await;
            drop(permit);
            let mut client = match connected {
                Ok(Ok(client)) => client,
                _ => return false,
            };
            alive.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                loop {
                    if let Incoming::Closed(_) = client.next().await {
                        break;
                    }
                }
                alive.fetch_sub(1, Ordering::SeqCst);
            });
            true
        }));
    }
    let mut ok = 0;
    let mut failed = 0;
    for handle in handles {
        match handle.await {
            Ok(true) => ok += 1,
            _ => failed += 1,
        }
    }
    (ok, failed)
}
