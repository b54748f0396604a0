//! Durable stores: every test runs against SQLite (a file in a temporary directory) and
//! PostgreSQL (`DATABASE_URL`, default `postgres://postgres@127.0.0.1:5432/test`, a fresh
//! schema per test, dropped at the end). `TIDINGS_TEST_SKIP_POSTGRES=1` skips PostgreSQL.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    missing_docs
)]

#[macro_use]
mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::db::TestDb;
use common::*;
use serde_json::json;
use tidings_protocol::{Notification, RawEvent};
use tidings_server::Tidings;
use tidings_server::sql_store::{SQLITE_FILE_NAME, SqlStore};
use tidings_server::store::{PruneScope, Publication, PublicationStore, StoreError};

on_both!(
    concurrent_appends_from_two_instances_are_gap_free,
    offsets_and_epoch_survive_a_restart,
    recover_is_exact,
    another_epoch_is_not_recovered,
    recover_beyond_retention_is_not_recovered,
    prune_by_age,
    prune_by_class_scope,
    recovery_is_capped,
    history_pages,
    full_stack_recovery_across_a_restart,
    append_throughput,
);

fn event(n: u64) -> RawEvent {
    RawEvent::from_parts("n", &json!({ "n": n })).unwrap()
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

fn offsets(list: &[Arc<Publication>]) -> Vec<u64> {
    list.iter().map(|p| p.offset.unwrap()).collect()
}

async fn append_n(store: &SqlStore, channel: &str, n: u64) {
    let channel: Arc<str> = Arc::from(channel);
    for i in 0..n {
        store
            .append(&channel, now_ms(), None, event(i))
            .await
            .unwrap();
    }
}

async fn concurrent_appends_from_two_instances_are_gap_free(db: TestDb) {
    let a = db.open().await;
    let b = db.open().await;
    assert_eq!(a.epoch(), b.epoch());
    let mut tasks = Vec::new();
    for worker in 0..4u64 {
        // Two "processes", two tasks each; nothing above the store orders their appends.
        let store = if worker % 2 == 0 {
            a.clone()
        } else {
            b.clone()
        };
        tasks.push(tokio::spawn(async move {
            let channel: Arc<str> = Arc::from("busy");
            let mut got = Vec::new();
            for i in 0..50 {
                let n = worker * 1000 + i;
                let p = store.append(&channel, now_ms(), None, event(n)).await?;
                got.push((p.offset.unwrap(), n));
            }
            Ok::<_, StoreError>(got)
        }));
    }
    let mut sent = BTreeMap::new();
    for task in tasks {
        let got = task.await.unwrap().unwrap();
        assert!(got.windows(2).all(|w| w[0].0 < w[1].0), "{got:?}");
        sent.extend(got);
    }
    assert_eq!(
        sent.keys().copied().collect::<Vec<_>>(),
        (1..=200).collect::<Vec<_>>()
    );
    assert_eq!(b.position("busy").await.unwrap().offset, 200);
    let all = a.recover("busy", a.epoch(), 0).await.unwrap();
    assert!(all.recovered);
    assert_eq!(offsets(&all.publications), (1..=200).collect::<Vec<_>>());
    for p in &all.publications {
        assert_eq!(p.event, event(sent[&p.offset.unwrap()]));
    }
}

async fn offsets_and_epoch_survive_a_restart(db: TestDb) {
    let store = db.open().await;
    let epoch = store.epoch().to_owned();
    let channel: Arc<str> = Arc::from("a");
    let mut first = Vec::new();
    for n in 1..=3 {
        let sender = (n % 2 == 1).then(|| Arc::from("u1"));
        first.push(
            store
                .append(&channel, 1000 + n, sender, event(n))
                .await
                .unwrap(),
        );
    }
    store.close().await;
    drop(store);

    let store = db.open().await;
    assert_eq!(store.epoch(), epoch);
    let position = store.position("a").await.unwrap();
    assert_eq!((&*position.epoch, position.offset), (&*epoch, 3));
    let unknown = store.position("never").await.unwrap();
    assert_eq!((&*unknown.epoch, unknown.offset), (&*epoch, 0));
    let fourth = store.append(&channel, 2000, None, event(4)).await.unwrap();
    assert_eq!(fourth.offset, Some(4));
    let r = store.recover("a", &epoch, 1).await.unwrap();
    assert!(r.recovered);
    assert_eq!(offsets(&r.publications), vec![2, 3, 4]);
    // Everything comes back as it was published: the encoded frames are identical.
    assert_eq!(r.publications[0].frame(), first[1].frame());
    assert_eq!(r.publications[1].frame(), first[2].frame());
    assert_eq!(r.publications[1].sender.as_deref(), Some("u1"));
    assert_eq!(r.publications[1].ts, 1003);
    assert_eq!(r.publications[2].frame(), fourth.frame());
}

async fn recover_is_exact(db: TestDb) {
    let store = db.open().await;
    let epoch = store.epoch().to_owned();
    // Nothing published yet: (epoch, 0) is the position, and recovering from it is complete.
    let empty = store.recover("c", &epoch, 0).await.unwrap();
    assert!(empty.recovered && empty.publications.is_empty());
    assert_eq!(empty.position.offset, 0);
    assert!(!store.recover("c", &epoch, 1).await.unwrap().recovered);

    let (c, d): (Arc<str>, Arc<str>) = (Arc::from("c"), Arc::from("d"));
    let text = r#"{"type":"chat","data":{"text": "héllo ✓",  "n":[1, 2.50]}}"#;
    let odd: RawEvent = serde_json::from_str(text).unwrap();
    for n in 1..=5 {
        let e = if n == 4 { odd.clone() } else { event(n) };
        store.append(&c, n, Some(Arc::from("u")), e).await.unwrap();
        store.append(&d, n, None, event(n)).await.unwrap();
    }
    let r = store.recover("c", &epoch, 2).await.unwrap();
    assert!(r.recovered);
    assert_eq!(r.position.offset, 5);
    assert_eq!(offsets(&r.publications), vec![3, 4, 5]);
    let p = &r.publications[1];
    assert_eq!((&*p.channel, &*p.epoch, p.ts), ("c", &*epoch, 4));
    assert_eq!(p.event.kind(), "chat");
    assert_eq!(
        p.event.data_json(),
        r#"{"text": "héllo ✓",  "n":[1, 2.50]}"#
    );
    let all = store.recover("c", &epoch, 0).await.unwrap();
    assert_eq!(offsets(&all.publications), vec![1, 2, 3, 4, 5]);
    let none = store.recover("c", &epoch, 5).await.unwrap();
    assert!(none.recovered && none.publications.is_empty());
    // An offset from the future is not this channel's history.
    let future = store.recover("c", &epoch, 6).await.unwrap();
    assert!(!future.recovered && future.publications.is_empty());
}

async fn another_epoch_is_not_recovered(db: TestDb) {
    let store = db.open().await;
    assert!(!store.recover("c", "other", 0).await.unwrap().recovered);
    append_n(&store, "c", 3).await;
    let r = store.recover("c", "other", 1).await.unwrap();
    assert!(!r.recovered && r.publications.is_empty());
    assert_eq!((&*r.position.epoch, r.position.offset), (store.epoch(), 3));
    assert!(!store.recover("c", "", 3).await.unwrap().recovered);
}

async fn recover_beyond_retention_is_not_recovered(db: TestDb) {
    let store = db.open().await;
    let epoch = store.epoch().to_owned();
    append_n(&store, "c", 10).await;
    append_n(&store, "small", 2).await;
    assert_eq!(
        store
            .prune(&PruneScope::all(), Some(3), None)
            .await
            .unwrap(),
        7
    );
    assert_eq!(
        store
            .prune(&PruneScope::all(), Some(3), None)
            .await
            .unwrap(),
        0
    );
    let kept = store.recover("c", &epoch, 7).await.unwrap();
    assert!(kept.recovered);
    assert_eq!(offsets(&kept.publications), vec![8, 9, 10]);
    let lost = store.recover("c", &epoch, 6).await.unwrap();
    assert!(!lost.recovered && lost.publications.is_empty());
    assert_eq!(lost.position.offset, 10);
    assert!(store.recover("small", &epoch, 0).await.unwrap().recovered);

    // Pruning everything keeps the channel's position: offsets continue.
    assert_eq!(
        store
            .prune(&PruneScope::all(), Some(0), None)
            .await
            .unwrap(),
        5
    );
    assert_eq!(store.position("c").await.unwrap().offset, 10);
    assert!(store.recover("c", &epoch, 10).await.unwrap().recovered);
    assert!(!store.recover("c", &epoch, 9).await.unwrap().recovered);
    append_n(&store, "c", 1).await;
    let next = store.recover("c", &epoch, 10).await.unwrap();
    assert_eq!(offsets(&next.publications), vec![11]);
}

async fn prune_by_class_scope(db: TestDb) {
    let store = db.open().await;
    for channel in ["ticket:1", "ticket:2", "tick_t", "lobby", "100%_sure"] {
        append_n(&store, channel, 5).await;
    }
    let tickets = PruneScope {
        pattern: "ticket:*".into(),
        except: vec![],
    };
    assert_eq!(store.prune(&tickets, Some(2), None).await.unwrap(), 6);
    // `_` and `%` in patterns are literal, not SQL wildcards.
    let literal = PruneScope {
        pattern: "100%_*".into(),
        except: vec![],
    };
    assert_eq!(store.prune(&literal, Some(4), None).await.unwrap(), 1);
    let rest = PruneScope {
        pattern: "*".into(),
        except: vec!["ticket:*".into(), "lobby".into(), "100%_*".into()],
    };
    assert_eq!(store.prune(&rest, Some(1), None).await.unwrap(), 4); // only tick_t
    let kept = |list: Vec<Arc<Publication>>| list.len();
    assert_eq!(
        kept(store.history("ticket:1", None, None, 10).await.unwrap()),
        2
    );
    assert_eq!(
        kept(store.history("lobby", None, None, 10).await.unwrap()),
        5
    );
    assert_eq!(
        kept(store.history("tick_t", None, None, 10).await.unwrap()),
        1
    );
    assert_eq!(
        kept(store.history("100%_sure", None, None, 10).await.unwrap()),
        4
    );
    let exact = PruneScope {
        pattern: "lobby".into(),
        except: vec![],
    };
    assert_eq!(
        store
            .prune(&exact, None, Some(Duration::ZERO))
            .await
            .unwrap(),
        5
    );
}

async fn prune_by_age(db: TestDb) {
    let store = db.open().await;
    let epoch = store.epoch().to_owned();
    let (old, other): (Arc<str>, Arc<str>) = (Arc::from("old"), Arc::from("other"));
    let two_hours_ago = now_ms() - 2 * 3600 * 1000;
    for n in 1..=3 {
        store
            .append(&old, two_hours_ago, None, event(n))
            .await
            .unwrap();
    }
    store
        .append(&other, two_hours_ago, None, event(0))
        .await
        .unwrap();
    for n in 4..=5 {
        store.append(&old, now_ms(), None, event(n)).await.unwrap();
    }
    let hour = Duration::from_secs(3600);
    assert_eq!(
        store
            .prune(&PruneScope::all(), None, Some(hour))
            .await
            .unwrap(),
        4
    );
    let r = store.recover("old", &epoch, 3).await.unwrap();
    assert!(r.recovered);
    assert_eq!(offsets(&r.publications), vec![4, 5]);
    assert!(!store.recover("old", &epoch, 2).await.unwrap().recovered);
    assert_eq!(store.position("other").await.unwrap().offset, 1);
    // Both limits at once.
    assert_eq!(
        store
            .prune(&PruneScope::all(), Some(1), Some(hour))
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        offsets(&store.history("old", None, None, 10).await.unwrap()),
        vec![5]
    );
}

async fn recovery_is_capped(db: TestDb) {
    let store = db.open().await.recovery_limit(5);
    append_n(&store, "c", 8).await;
    let too_many = store.recover("c", store.epoch(), 2).await.unwrap();
    assert!(!too_many.recovered && too_many.publications.is_empty());
    let r = store.recover("c", store.epoch(), 3).await.unwrap();
    assert!(r.recovered);
    assert_eq!(offsets(&r.publications), vec![4, 5, 6, 7, 8]);
}

async fn history_pages(db: TestDb) {
    let store = db.open().await;
    append_n(&store, "c", 10).await;
    append_n(&store, "d", 3).await;
    let page = |since, before, limit| {
        let store = store.clone();
        async move { offsets(&store.history("c", since, before, limit).await.unwrap()) }
    };
    // Back from the latest, then from the oldest seen.
    assert_eq!(page(None, None, 3).await, vec![8, 9, 10]);
    assert_eq!(page(None, Some(8), 3).await, vec![5, 6, 7]);
    assert_eq!(page(None, Some(3), 3).await, vec![1, 2]);
    // Forward from an offset, optionally up to another.
    assert_eq!(page(Some(0), None, 2).await, vec![1, 2]);
    assert_eq!(page(Some(7), None, 10).await, vec![8, 9, 10]);
    assert_eq!(page(Some(2), Some(6), 10).await, vec![3, 4, 5]);
    assert_eq!(page(Some(10), None, 10).await, Vec::<u64>::new());
    assert_eq!(
        page(Some(u64::MAX), Some(u64::MAX), 10).await,
        Vec::<u64>::new()
    );
    assert!(
        store
            .history("none", None, None, 10)
            .await
            .unwrap()
            .is_empty()
    );
    store
        .prune(&PruneScope::all(), Some(4), None)
        .await
        .unwrap();
    assert_eq!(page(None, None, 100).await, vec![7, 8, 9, 10]);
}

fn note(n: u64) -> Notification {
    Notification {
        message: format!("n{n}"),
        ..Default::default()
    }
}

async fn full_stack_recovery_across_a_restart(db: TestDb) {
    let store = db.open().await;
    let builder = Tidings::builder()
        .config(config())
        .store(Arc::new(store.clone()));
    let server = start_with(builder).await;
    let mut client = server.connect("7").await;
    let reply = as_json(&client.subscribe("feed").await);
    let epoch = reply["data"]["epoch"].as_str().unwrap().to_owned();
    assert_eq!(
        (epoch.as_str(), &reply["data"]["offset"]),
        (store.epoch(), &json!(0))
    );
    for n in 1..=2 {
        server.tidings.publish("feed", &note(n)).await.unwrap();
    }
    assert_eq!(message(&client.recv().await).offset, Some(1));
    assert_eq!(message(&client.recv().await).offset, Some(2));
    drop(client);
    for n in 3..=5 {
        server.tidings.publish("feed", &note(n)).await.unwrap();
    }
    server.tidings.shutdown().await;
    store.close().await;
    drop(server);
    drop(store);

    // A new process on the same database.
    let store = db.open().await;
    let builder = Tidings::builder()
        .config(config())
        .store(Arc::new(store.clone()));
    let server = start_with(builder).await;
    let mut back = server.connect("7").await;
    let recover = json!({"channel": "feed", "recover": {"epoch": epoch, "offset": 2}});
    let reply = as_json(&back.call("subscribe", recover).await);
    assert_eq!(reply["data"]["recovered"], true, "{reply}");
    assert_eq!(reply["data"]["missed"], 3);
    assert_eq!(reply["data"]["offset"], 5);
    assert_eq!(reply["data"]["epoch"], epoch.as_str());
    for n in 3..=5 {
        let frame = back.recv().await;
        let body = message(&frame);
        assert_eq!(
            (body.offset, body.epoch.as_str()),
            (Some(n), epoch.as_str())
        );
        assert!(body.event.data_json().contains(&format!("\"n{n}\"")));
    }
    server.tidings.publish("feed", &note(6)).await.unwrap();
    assert_eq!(message(&back.recv().await).offset, Some(6));
    back.expect_silence(200).await;
}

/// Prints appends per second (no assertion on speed).
async fn append_throughput(db: TestDb) {
    let kind = match &db {
        TestDb::Sqlite(_) => "sqlite",
        TestDb::Postgres { .. } => "postgres",
    };
    let store = db.open().await;
    let count = 500;
    let started = Instant::now();
    append_n(&store, "one", count).await;
    let sequential = count as f64 / started.elapsed().as_secs_f64();

    let started = Instant::now();
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move { append_n(&store, &format!("many{i}"), count / 8).await })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let parallel = (count / 8 * 8) as f64 / started.elapsed().as_secs_f64();
    println!(
        "{kind} append throughput: {sequential:.0}/s one channel sequentially, \
         {parallel:.0}/s over 8 channels from 8 tasks"
    );
    assert_eq!(store.position("one").await.unwrap().offset, count);
}

#[tokio::test]
async fn sqlite_files_urls_and_memory() {
    let db = TestDb::sqlite();
    let TestDb::Sqlite(dir) = &db else {
        unreachable!()
    };
    let nested = dir.join("a/b/");
    let store = SqlStore::sqlite(format!("{}/", nested.display()))
        .await
        .unwrap();
    assert!(nested.join(SQLITE_FILE_NAME).is_file());
    append_n(&store, "c", 2).await;
    // The same file by URL, and by the directory that now exists.
    let by_url = SqlStore::connect(&format!(
        "sqlite://{}",
        nested.join(SQLITE_FILE_NAME).display()
    ))
    .await
    .unwrap();
    assert_eq!(by_url.position("c").await.unwrap().offset, 2);
    let by_dir = SqlStore::sqlite(&nested).await.unwrap();
    assert_eq!(by_dir.epoch(), store.epoch());
    let file = SqlStore::sqlite(dir.join("x/named.db")).await.unwrap();
    assert!(dir.join("x/named.db").is_file());
    assert_ne!(file.epoch(), store.epoch());

    for memory in [
        SqlStore::sqlite_in_memory().await.unwrap(),
        SqlStore::connect("sqlite::memory:").await.unwrap(),
    ] {
        append_n(&memory, "c", 3).await;
        let r = memory.recover("c", memory.epoch(), 1).await.unwrap();
        assert_eq!(offsets(&r.publications), vec![2, 3]);
    }
    assert!(matches!(
        SqlStore::connect("mysql://x").await,
        Err(StoreError::Invalid(_))
    ));
    assert!(matches!(
        SqlStore::postgres_in_schema("postgres://127.0.0.1/x", "bad-name").await,
        Err(StoreError::Invalid(_))
    ));
}

/// SQLite checkpoints outside commits (none inside, so no publish waits for one): the WAL
/// of a file store still comes back to its size limit after bursts well beyond it.
#[tokio::test]
async fn the_sqlite_wal_is_checkpointed_in_the_background() {
    use tidings_server::store::Append;
    let db = TestDb::sqlite();
    let TestDb::Sqlite(dir) = &db else {
        unreachable!()
    };
    let store = SqlStore::sqlite(format!("{}/", dir.display()))
        .await
        .unwrap();
    let wal = dir.join(format!("{SQLITE_FILE_NAME}-wal"));
    let channel: Arc<str> = Arc::from("bulk");
    let blob = "x".repeat(4000);
    let mut largest = 0;
    // Six bursts of 16 MB: 96 MB in all, past the 64 MiB the WAL is cut back to.
    for round in 0..6u64 {
        let commits: Vec<_> = (0..4000u64)
            .map(|n| {
                let event =
                    RawEvent::from_parts("blob", &json!({"n": round * 4000 + n, "b": blob}));
                store.submit(Append {
                    channel: channel.clone(),
                    ts: now_ms(),
                    sender: None,
                    event: event.unwrap(),
                })
            })
            .collect();
        for committed in futures_util::future::join_all(commits).await {
            committed.unwrap();
        }
        tokio::time::sleep(Duration::from_millis(700)).await;
        largest = largest.max(std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0));
    }
    assert_eq!(store.position("bulk").await.unwrap().offset, 24_000);
    assert!(
        largest < 90 * 1024 * 1024,
        "the WAL grew to {largest} bytes: no checkpoint ran"
    );
}
