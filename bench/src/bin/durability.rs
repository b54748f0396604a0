//! The throughput cost of durability: acknowledged publishes per second through
//! `Tidings::publish` to a durable channel (memory, SQLite, PostgreSQL) and to an ephemeral
//! one: 1 publisher; 16 publishers each on its own channel; 256 publishers on one channel
//! (group commit on one channel); 256 publishers on 256 channels.
//!
//! `cargo run --release -p tidings-bench --bin durability [-- SECONDS]`
//! PostgreSQL from `DATABASE_URL` (default `postgres://postgres@127.0.0.1:5432/test`).
//! `DURABILITY_STORES=sqlite` (or `memory`, `postgres`, comma-separated) runs only those stores.

use std::sync::Arc;
use std::time::{Duration, Instant};

use sqlx::Connection;
use tidings_protocol::Notification;
use tidings_server::sql_store::SqlStore;
use tidings_server::store::{MemoryStore, Store};
use tidings_server::{Config, Tidings};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let seconds: u64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let duration = Duration::from_secs(seconds);
    let dir = std::env::temp_dir().join(format!("tidings-bench-{:016x}", rand::random::<u64>()));
    let pg_url = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let schema = format!("tidings_bench_{:016x}", rand::random::<u64>());

    println!("| store | class | publishers | channels | publishes/s | p50 ms | p99 ms |");
    println!("|---|---|---|---|---|---|---|");
    // `durability SECONDS 256x1,256x256` runs only those shapes (publishers x channels).
    let shapes: Vec<(usize, usize)> = match std::env::args().nth(2) {
        Some(list) => list
            .split(',')
            .filter_map(|shape| {
                let (p, c) = shape.split_once('x')?;
                Some((p.parse().ok()?, c.parse().ok()?))
            })
            .collect(),
        None => vec![(1, 1), (16, 16), (256, 1), (256, 256)],
    };
    let only = std::env::var("DURABILITY_STORES").ok();
    let wanted = |store: &str| {
        only.as_deref()
            .is_none_or(|list| list.split(',').any(|s| s == store))
    };
    for &(publishers, channels) in &shapes {
        let shape = Shape {
            publishers,
            channels,
            duration,
        };
        if wanted("memory") {
            let memory: Arc<dyn Store> = Arc::new(MemoryStore::new(1000));
            run("memory", "ephemeral", memory.clone(), shape, true).await?;
            run("memory", "durable", memory, shape, false).await?;
        }
        if wanted("sqlite") {
            let sqlite: Arc<dyn Store> =
                Arc::new(SqlStore::sqlite(dir.join(format!("p{publishers}c{channels}/"))).await?);
            run("SQLite", "durable", sqlite, shape, false).await?;
        }
        if !wanted("postgres") {
            continue;
        }
        let pg: Arc<dyn Store> = Arc::new(
            SqlStore::postgres_in_schema(&pg_url, &format!("{schema}_{publishers}_{channels}"))
                .await?,
        );
        run("PostgreSQL", "durable", pg, shape, false).await?;
    }
    let _ = std::fs::remove_dir_all(&dir);
    let mut admin = sqlx::PgConnection::connect(&pg_url).await?;
    for (publishers, channels) in shapes.into_iter().filter(|_| wanted("postgres")) {
        sqlx::query(&format!(
            "DROP SCHEMA {schema}_{publishers}_{channels} CASCADE"
        ))
        .execute(&mut admin)
        .await?;
    }
    Ok(())
}

/// How many publishers, spread over how many channels, for how long.
#[derive(Debug, Clone, Copy)]
struct Shape {
    publishers: usize,
    channels: usize,
    duration: Duration,
}

async fn run(
    store_name: &str,
    class: &str,
    store: Arc<dyn Store>,
    shape: Shape,
    ephemeral: bool,
) -> Result<(), Box<dyn std::error::Error>> {
    let Shape {
        publishers,
        channels,
        duration,
    } = shape;
    let mut config = Config::default();
    config.jwt.secret = Some("bench".into());
    if ephemeral {
        config.channels = vec![tidings_server::config::ChannelClass {
            pattern: "bench:*".into(),
            ephemeral: true,
            history_size: None,
            history_ttl: None,
        }];
    }
    let tidings = Tidings::builder().config(config).store(store).build()?;
    let start = Instant::now();
    let mut tasks = Vec::new();
    for p in 0..publishers {
        let tidings = tidings.clone();
        tasks.push(tokio::spawn(async move {
            let channel = format!("bench:{}", p % channels);
            let note = Notification {
                message: "x".repeat(100),
                ..Default::default()
            };
            let mut latencies = Vec::new();
            while start.elapsed() < duration {
                let sent = Instant::now();
                if tidings.publish(&channel, &note).await.is_err() {
                    break;
                }
                latencies.push(sent.elapsed().as_secs_f64() * 1000.0);
            }
            latencies
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await?);
    }
    let elapsed = start.elapsed().as_secs_f64();
    all.sort_by(|a, b| a.total_cmp(b));
    println!(
        "| {store_name} | {class} | {publishers} | {channels} | {:.0} | {:.3} | {:.3} |",
        all.len() as f64 / elapsed,
        tidings_bench::percentile(&all, 0.5),
        tidings_bench::percentile(&all, 0.99)
    );
    Ok(())
}
