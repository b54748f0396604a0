//! Golden fixtures: one file per frame type (plus variants for optional fields), each the
//! exact compact output of `encode()`. Building the frame from Rust values must produce the
//! fixture byte for byte, and decoding the fixture must give back the Rust value, so any
//! wire change (a renamed field, a reordered key, a new default) fails here first.
//!
//! A deliberate wire change means editing the fixture by hand, which shows in review.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
#![allow(missing_docs)]

use std::collections::BTreeSet;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use tidings_protocol::messages::{
    ChannelPosition, ChannelRef, Connected, ErrorBody, Member, MessageBody, PresenceChange,
    Publish, Recover, Reply, Shutdown, Subscribe, TypingNotice, Unsubscribe,
};
use tidings_protocol::{
    ChatMessage, ClientFrame, ClientMessage, Code, Delivery, Level, Notification, RawEvent,
    ServerFrame, ServerMessage, UploadProgress,
};

/// An application-defined event, to pin down how unknown event types travel.
#[derive(Serialize, Deserialize)]
struct InvoicePaid {
    invoice: u64,
    cents: u64,
}
tidings_protocol::event!(InvoicePaid, "invoice_paid");

enum Frame {
    Client(ClientFrame),
    Server(ServerFrame),
}

fn client(id: Option<u64>, message: ClientMessage) -> Frame {
    Frame::Client(ClientFrame { id, message })
}

fn server(id: Option<u64>, message: ServerMessage) -> Frame {
    Frame::Server(ServerFrame { id, message })
}

fn chat(id: &str, content: &str) -> RawEvent {
    RawEvent::new(&ChatMessage {
        id: id.into(),
        content: content.into(),
        metadata: None,
    })
    .unwrap()
}

fn progress(percent: f64) -> RawEvent {
    RawEvent::new(&UploadProgress {
        id: "up_1".into(),
        progress: percent,
        status: "uploading".into(),
    })
    .unwrap()
}

/// Every fixture: file stem and the frame it must hold.
fn cases() -> Vec<(&'static str, Frame)> {
    vec![
        // ---- client → server ----
        ("client_ping", client(Some(1), ClientMessage::Ping)),
        (
            "client_subscribe",
            client(
                Some(2),
                ClientMessage::Subscribe(Subscribe {
                    channel: "ticket:1001".into(),
                    recover: Some(Recover {
                        epoch: "e7Kq2".into(),
                        offset: 17,
                    }),
                    events: Some(vec!["chat_message".into(), "notification".into()]),
                }),
            ),
        ),
        (
            "client_subscribe_minimal",
            client(
                Some(3),
                ClientMessage::Subscribe(Subscribe {
                    channel: "ticket:1001".into(),
                    recover: None,
                    events: None,
                }),
            ),
        ),
        (
            "client_unsubscribe",
            client(
                Some(4),
                ClientMessage::Unsubscribe(Unsubscribe {
                    channel: "ticket:1001".into(),
                }),
            ),
        ),
        (
            "client_publish",
            client(
                Some(5),
                ClientMessage::Publish(Publish {
                    channel: "ticket:1001".into(),
                    event: chat("m_1", "Hello"),
                    delivery: None,
                }),
            ),
        ),
        (
            "client_publish_delivery",
            client(
                Some(6),
                ClientMessage::Publish(Publish {
                    channel: "upload:up_1".into(),
                    event: progress(42.5),
                    delivery: Some(Delivery::Ephemeral),
                }),
            ),
        ),
        (
            "client_typing",
            client(
                None,
                ClientMessage::Typing(ChannelRef {
                    channel: "ticket:1001".into(),
                }),
            ),
        ),
        (
            "client_presence",
            client(
                Some(7),
                ClientMessage::Presence(ChannelRef {
                    channel: "ticket:1001".into(),
                }),
            ),
        ),
        // ---- server → client ----
        (
            "server_connected",
            server(
                None,
                ServerMessage::Connected(Connected {
                    session_id: "s_8f2c1a".into(),
                    user_id: "42".into(),
                    protocol: 1,
                    heartbeat_ms: 25_000,
                    heartbeat_timeout_ms: 10_000,
                    max_frame_bytes: 65_536,
                    subscriptions: vec![ChannelPosition {
                        channel: "user:42".into(),
                        epoch: "u9Tr4".into(),
                        offset: 12,
                        recovered: Some(true),
                        history_start: None,
                    }],
                }),
            ),
        ),
        ("server_pong", server(Some(1), ServerMessage::Pong)),
        (
            "server_reply_subscribe",
            server(
                Some(2),
                ServerMessage::Reply(Reply::Subscribe {
                    channel: "ticket:1001".into(),
                    epoch: "e7Kq2".into(),
                    offset: 19,
                    recovered: Some(true),
                    missed: Some(2),
                    history_start: None,
                }),
            ),
        ),
        (
            "server_reply_subscribe_minimal",
            server(
                Some(3),
                ServerMessage::Reply(Reply::Subscribe {
                    channel: "ticket:1001".into(),
                    epoch: "e7Kq2".into(),
                    offset: 19,
                    recovered: None,
                    missed: None,
                    history_start: None,
                }),
            ),
        ),
        (
            "server_reply_unsubscribe",
            server(
                Some(4),
                ServerMessage::Reply(Reply::Unsubscribe {
                    channel: "ticket:1001".into(),
                }),
            ),
        ),
        (
            "server_reply_publish",
            server(
                Some(5),
                ServerMessage::Reply(Reply::Publish {
                    channel: "ticket:1001".into(),
                    offset: Some(20),
                    epoch: "e7Kq2".into(),
                    delivered: 3,
                }),
            ),
        ),
        (
            "server_reply_publish_ephemeral",
            server(
                Some(6),
                ServerMessage::Reply(Reply::Publish {
                    channel: "upload:up_1".into(),
                    offset: None,
                    epoch: "p2Lm8".into(),
                    delivered: 1,
                }),
            ),
        ),
        (
            "server_reply_presence",
            server(
                Some(7),
                ServerMessage::Reply(Reply::Presence {
                    channel: "ticket:1001".into(),
                    members: vec![
                        Member {
                            user_id: "42".into(),
                            connections: 2,
                        },
                        Member {
                            user_id: "7".into(),
                            connections: 1,
                        },
                    ],
                }),
            ),
        ),
        (
            "server_reply_typing",
            server(
                Some(8),
                ServerMessage::Reply(Reply::Typing {
                    channel: "ticket:1001".into(),
                }),
            ),
        ),
        (
            "server_error",
            server(
                Some(9),
                ServerMessage::Error(ErrorBody {
                    code: Code::Forbidden,
                    message: "you may not subscribe to ticket:2002".into(),
                }),
            ),
        ),
        (
            "server_error_unknown_code",
            server(
                None,
                ServerMessage::Error(ErrorBody {
                    code: Code::Other(4999),
                    message: "a code from a newer server".into(),
                }),
            ),
        ),
        (
            "server_message",
            server(
                None,
                ServerMessage::Message(MessageBody {
                    channel: "ticket:1001".into(),
                    offset: Some(20),
                    epoch: "e7Kq2".into(),
                    ts: 1_767_225_600_000,
                    sender: Some("7".into()),
                    event: chat("m_1", "Hello"),
                }),
            ),
        ),
        (
            "server_message_notification",
            server(
                None,
                ServerMessage::Message(MessageBody {
                    channel: "user:42".into(),
                    offset: Some(13),
                    epoch: "u9Tr4".into(),
                    ts: 1_767_225_600_500,
                    sender: None,
                    event: RawEvent::new(&Notification {
                        title: Some("Analysis done".into()),
                        message: "Your report is ready".into(),
                        level: Level::Success,
                        data: None,
                    })
                    .unwrap(),
                }),
            ),
        ),
        (
            "server_message_ephemeral",
            server(
                None,
                ServerMessage::Message(MessageBody {
                    channel: "upload:up_1".into(),
                    offset: None,
                    epoch: "p2Lm8".into(),
                    ts: 1_767_225_601_000,
                    sender: None,
                    event: progress(42.5),
                }),
            ),
        ),
        (
            "server_message_broadcast",
            server(
                None,
                ServerMessage::Message(MessageBody {
                    channel: tidings_protocol::BROADCAST_CHANNEL.into(),
                    offset: None,
                    epoch: String::new(),
                    ts: 1_767_225_602_000,
                    sender: None,
                    event: RawEvent::new(&InvoicePaid {
                        invoice: 7,
                        cents: 1200,
                    })
                    .unwrap(),
                }),
            ),
        ),
        (
            "server_user_joined",
            server(
                None,
                ServerMessage::UserJoined(PresenceChange {
                    channel: "ticket:1001".into(),
                    user_id: "7".into(),
                }),
            ),
        ),
        (
            "server_user_left",
            server(
                None,
                ServerMessage::UserLeft(PresenceChange {
                    channel: "ticket:1001".into(),
                    user_id: "7".into(),
                }),
            ),
        ),
        (
            "server_typing",
            server(
                None,
                ServerMessage::Typing(TypingNotice {
                    channel: "ticket:1001".into(),
                    user_id: "7".into(),
                }),
            ),
        ),
        (
            "server_shutdown",
            server(
                None,
                ServerMessage::Shutdown(Shutdown {
                    reason: "restart".into(),
                    reconnect_after_ms: 2_350,
                }),
            ),
        ),
    ]
}

fn fixtures_dir() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures"))
}

fn read_fixture(stem: &str) -> String {
    let path = fixtures_dir().join(format!("{stem}.json"));
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    text.strip_suffix('\n').unwrap_or(&text).to_owned()
}

#[test]
fn encoding_matches_fixtures_byte_for_byte() {
    let mut failures = Vec::new();
    for (stem, frame) in cases() {
        let fixture = read_fixture(stem);
        let encoded = match &frame {
            Frame::Client(f) => f.encode(),
            Frame::Server(f) => f.encode(),
        };
        if encoded != fixture {
            failures.push(format!(
                "{stem}:\n  encoded: {encoded}\n  fixture: {fixture}"
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "wire output changed:\n{}",
        failures.join("\n")
    );
}

#[test]
fn fixtures_decode_to_the_rust_values() {
    for (stem, frame) in cases() {
        let fixture = read_fixture(stem);
        match frame {
            Frame::Client(expected) => {
                assert!(
                    stem.starts_with("client_"),
                    "{stem}: client fixtures start with client_"
                );
                let decoded = ClientFrame::decode(&fixture)
                    .unwrap_or_else(|e| panic!("{stem}: does not decode: {e}"));
                assert_eq!(decoded, expected, "{stem}");
            }
            Frame::Server(expected) => {
                assert!(
                    stem.starts_with("server_"),
                    "{stem}: server fixtures start with server_"
                );
                let decoded = ServerFrame::decode(&fixture)
                    .unwrap_or_else(|e| panic!("{stem}: does not decode: {e}"));
                assert_eq!(decoded, expected, "{stem}");
            }
        }
    }
}

#[test]
fn fixtures_are_single_compact_lines() {
    for (stem, _) in cases() {
        let path = fixtures_dir().join(format!("{stem}.json"));
        let raw = std::fs::read_to_string(&path).unwrap();
        let body = raw.strip_suffix('\n').unwrap_or(&raw);
        assert!(!body.contains('\n'), "{stem}: one frame on one line");
        let value: serde_json::Value = serde_json::from_str(body).unwrap();
        assert!(value.is_object(), "{stem}: a frame is a JSON object");
    }
}

#[test]
fn every_fixture_file_is_checked_and_every_case_has_a_file() {
    let on_disk: BTreeSet<String> = std::fs::read_dir(fixtures_dir())
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".json"))
        .collect();
    let cased: BTreeSet<String> = cases()
        .iter()
        .map(|(stem, _)| format!("{stem}.json"))
        .collect();
    assert_eq!(
        on_disk, cased,
        "fixtures on disk and cases in golden.rs differ"
    );
}

#[test]
fn every_frame_type_and_reply_kind_has_a_fixture() {
    let mut client_kinds = BTreeSet::new();
    let mut server_kinds = BTreeSet::new();
    let mut reply_kinds = BTreeSet::new();
    for (_, frame) in cases() {
        match frame {
            Frame::Client(f) => {
                client_kinds.insert(f.kind());
            }
            Frame::Server(f) => {
                server_kinds.insert(f.kind());
                if let ServerMessage::Reply(reply) = &f.message {
                    reply_kinds.insert(reply_kind(reply));
                }
            }
        }
    }
    let set = |names: &[&'static str]| names.iter().copied().collect::<BTreeSet<_>>();
    assert_eq!(
        client_kinds,
        set(&[
            "ping",
            "subscribe",
            "unsubscribe",
            "publish",
            "typing",
            "presence"
        ])
    );
    assert_eq!(
        server_kinds,
        set(&[
            "connected",
            "pong",
            "reply",
            "error",
            "message",
            "user_joined",
            "user_left",
            "typing",
            "shutdown"
        ])
    );
    assert_eq!(
        reply_kinds,
        set(&["subscribe", "unsubscribe", "publish", "presence", "typing"])
    );
}

fn reply_kind(reply: &Reply) -> &'static str {
    match reply {
        Reply::Subscribe { .. } => "subscribe",
        Reply::Unsubscribe { .. } => "unsubscribe",
        Reply::Publish { .. } => "publish",
        Reply::Presence { .. } => "presence",
        Reply::Typing { .. } => "typing",
        _ => "unknown",
    }
}
