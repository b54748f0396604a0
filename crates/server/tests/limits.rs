//! Protection: bad frames, frame size, rate limits, subscription limits, slow consumers,
//! heartbeats.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    missing_docs
)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use common::*;
use serde_json::json;

#[tokio::test]
async fn bad_frames_get_4400_with_the_request_id_and_the_connection_stays() {
    let server = start().await;
    let mut client = server.connect("7").await;

    client.send_text("{not json").await;
    let e = client.recv().await;
    assert_eq!((e.id, error(&e).code.as_u16()), (None, 4400));

    client.send_text(r#"{"type":"teleport","id":11}"#).await;
    let e = client.recv().await;
    assert_eq!((e.id, error(&e).code.as_u16()), (Some(11), 4400));
    assert!(error(&e).message.contains("teleport"));

    client
        .send_text(r#"{"type":"subscribe","id":12,"data":{}}"#)
        .await;
    let e = client.recv().await;
    assert_eq!((e.id, error(&e).code.as_u16()), (Some(12), 4400));
    assert!(error(&e).message.contains("channel"), "{e:?}");

    client.send_text(r#"{"type":"publish","id":13,"data":{"channel":"c","event":{"type":"notification","data":{"level":"loud"}}}}"#).await;
    let e = client.recv().await;
    assert_eq!((e.id, error(&e).code.as_u16()), (Some(13), 4400));

    client
        .ws
        .send(tokio_tungstenite::tungstenite::Message::binary(vec![
            1, 2, 3,
        ]))
        .await
        .unwrap();
    assert_eq!(error(&client.recv().await).code.as_u16(), 4400);

    client.ping_ok().await;
}

use futures_util::SinkExt;

#[tokio::test]
async fn frames_over_the_limit_close_4413() {
    let mut config = config();
    config.limits.max_frame_bytes = 1024;
    let server = start_config(config).await;
    let mut client = server.connect("7").await;
    let big = "x".repeat(2000);
    client
        .send_json(json!({"type": "publish", "id": 1, "data": {"channel": "c", "event": {"type": "t", "data": big}}}))
        .await;
    assert_eq!(client.expect_close().await.code, 4413);

    // Far above the limit (beyond the transport's own cap) is the same 4413.
    let mut client = server.connect("7").await;
    client.send_text(&"y".repeat(64 * 1024)).await;
    assert_eq!(client.expect_close().await.code, 4413);
}

#[tokio::test]
async fn binary_frames_count_against_the_rate_limit() {
    let mut config = config();
    config.limits.rate_per_second = 1;
    config.limits.rate_burst = 3;
    config.limits.rate_violations_before_close = 3;
    let server = start_config(config).await;
    let mut client = server.connect("7").await;
    for _ in 0..20 {
        let sent = client
            .ws
            .send(tokio_tungstenite::tungstenite::Message::binary(vec![
                0u8;
                16
            ]))
            .await;
        if sent.is_err() {
            break;
        }
    }
    let mut codes = Vec::new();
    let closed = loop {
        match client.next_frame(std::time::Duration::from_secs(5)).await {
            Ok(Some(frame)) => codes.push(error(&frame).code.as_u16()),
            Ok(None) => panic!("no close after a flood of binary frames: {codes:?}"),
            Err(closed) => break closed,
        }
    };
    assert_eq!(&codes[..3], &[4400, 4400, 4400], "{codes:?}");
    assert!(codes[3..].iter().all(|code| *code == 4008), "{codes:?}");
    assert_eq!(closed.code, 4008);
}

#[tokio::test]
async fn rate_limit_warns_with_4008_then_closes_4008() {
    let mut config = config();
    config.limits.rate_per_second = 1;
    config.limits.rate_burst = 5;
    config.limits.rate_violations_before_close = 3;
    let server = start_config(config).await;
    let mut client = server.connect("7").await;
    for _ in 0..5 {
        client.request("ping", serde_json::Value::Null).await;
    }
    for _ in 0..5 {
        assert_eq!(client.recv().await.kind(), "pong");
    }
    let id = client.request("ping", serde_json::Value::Null).await;
    let warning = client.recv().await;
    assert_eq!(
        (warning.id, error(&warning).code.as_u16()),
        (Some(id), 4008)
    );
    for _ in 0..5 {
        client.request("ping", serde_json::Value::Null).await;
    }
    assert_eq!(client.expect_close().await.code, 4008);
}

#[tokio::test]
async fn subscription_limit_gives_4011() {
    let mut config = config();
    config.limits.max_subscriptions = 2;
    let server = start_config(config).await;
    let mut client = server.connect("7").await;
    client.subscribe("a").await;
    client.subscribe("b").await;
    client.subscribe("a").await; // re-subscribing is not a new channel
    let answer = client.call("subscribe", json!({"channel": "c"})).await;
    assert_eq!(error(&answer).code.as_u16(), 4011);
    client.ping_ok().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_is_bounded_and_closed_4009() {
    let mut config = config();
    config.limits.outbound_queue_bytes = 64 * 1024;
    let limit = config.limits.outbound_queue_bytes;
    let server = start_config(config).await;
    let mut slow = server.connect("slow").await;
    slow.subscribe("firehose").await;
    let mut fast = server.connect("fast").await;
    fast.subscribe("firehose").await;
    // The fast client reads everything, as a healthy client would.
    let fast_count = Arc::new(AtomicU64::new(0));
    let counter = fast_count.clone();
    let fast_reader = tokio::spawn(async move {
        while let Ok(Some(frame)) = fast.next_frame(Duration::from_secs(5)).await {
            if frame.kind() == "message" {
                counter.fetch_add(1, Ordering::SeqCst);
            }
        }
        fast
    });

    let payload = "p".repeat(1000);
    let event = tidings_protocol::RawEvent::from_parts("tick", &payload).unwrap();
    let mut published = 0u64;
    // Loopback socket buffers absorb a few MB before the slow one's queue starts to fill.
    while server.tidings.stats().slow_consumers == 0 {
        // Keep the fast reader within 16 frames (16 KB, a quarter of its queue), however
        // busy the machine is: only the client that never reads may overflow.
        while published - fast_count.load(Ordering::SeqCst) > 16 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        server
            .tidings
            .publish_raw(
                "firehose",
                event.clone(),
                tidings_protocol::Delivery::Reliable,
            )
            .await
            .unwrap();
        published += 1;
        assert!(published < 200_000, "the slow consumer was never detected");
    }
    let stats = server.tidings.stats();
    assert!(
        stats.peak_queue_bytes <= limit,
        "queue grew to {} > {limit}",
        stats.peak_queue_bytes
    );
    assert_eq!(
        stats.slow_consumers, 1,
        "only the slow client may be cut off"
    );
    // It reads at last: what was already in flight, then the close.
    assert_eq!(slow.expect_close().await.code, 4009);
    // The fast one got every publication and is still connected.
    let mut fast = fast_reader.await.unwrap();
    assert_eq!(fast_count.load(Ordering::SeqCst), published);
    fast.ping_ok().await;
}

#[tokio::test]
async fn ephemeral_events_are_dropped_not_fatal_for_slow_clients() {
    let mut config = config();
    config.limits.outbound_queue_bytes = 16 * 1024;
    config.limits.max_frame_bytes = 16 * 1024;
    let server = start_config(config).await;
    let mut slow = server.connect("slow").await;
    slow.subscribe("progress").await;
    for n in 0..20_000u32 {
        let progress = tidings_protocol::UploadProgress {
            id: format!("u{}", n % 3),
            progress: f64::from(n % 100),
            status: "uploading".repeat(10),
        };
        server.tidings.publish("progress", &progress).await.unwrap();
    }
    let stats = server.tidings.stats();
    assert_eq!(stats.slow_consumers, 0);
    assert!(stats.peak_queue_bytes <= 16 * 1024);
    slow.ping_ok().await;
}

#[tokio::test]
async fn silent_connections_are_closed_4002() {
    let mut config = config();
    config.heartbeat = Duration::from_millis(200);
    config.heartbeat_timeout = Duration::from_millis(200);
    let server = start_config(config).await;
    let _client = server.connect("7").await; // never reads again, so never answers pings
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while server.tidings.stats().connections > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "silent connection still open"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_reading_client_answers_pings_and_stays() {
    let mut config = config();
    config.heartbeat = Duration::from_millis(100);
    // Generous grace: a loaded test machine may leave the client unscheduled for a while.
    config.heartbeat_timeout = Duration::from_millis(1500);
    let server = start_config(config).await;
    let mut client = server.connect("7").await;
    // tungstenite answers pings while reading; 2 s is twenty heartbeat periods and more
    // than the silence limit (1.6 s), so only the pongs keep the connection open.
    client.expect_silence(2000).await;
    client.ping_ok().await;
}
