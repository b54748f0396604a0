//! Property tests: every frame the crate can build survives `decode(encode(frame))`.
//!
//! Event payloads are arbitrary JSON of small depth built with `RawEvent::from_parts`, so
//! their text is canonical (compact) and `RawEvent`'s text equality is meaningful.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
#![allow(missing_docs)]

use proptest::prelude::*;
use proptest::strategy::ValueTree;
use serde_json::{Map, Number, Value};
use tidings_protocol::messages::{
    Ack, ChannelPosition, ChannelRef, Connected, ErrorBody, History, HistoryPage, Member,
    MessageBody, PresenceChange, Publish, Recover, Reply, Shutdown, Subscribe, TypingNotice,
    Unsubscribe,
};
use tidings_protocol::{
    AnalysisStatus, ChatMessage, ClientFrame, ClientMessage, Code, Delivery, Level, Notification,
    RawEvent, ServerFrame, ServerMessage, UploadProgress,
};

// ---------------------------------------------------------------- building blocks

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        // Mostly readable names, sometimes anything (escapes, quotes, non-BMP characters).
        3 => "[a-z_:0-9]{0,12}",
        1 => any::<String>(),
    ]
}

fn id() -> impl Strategy<Value = Option<u64>> {
    prop_oneof![
        Just(None),
        any::<u64>().prop_map(Some),
        (0u64..100).prop_map(Some)
    ]
}

/// Any finite JSON number. Note serde_json (without `float_roundtrip`) may read an
/// arbitrary float back one ulp off, so values holding these are compared as text.
fn json_number() -> impl Strategy<Value = Number> {
    prop_oneof![
        integer(),
        any::<f64>().prop_filter_map("finite", Number::from_f64),
    ]
}

/// Integers and two-decimal floats: numbers that read back exactly as a `Value`.
fn exact_number() -> impl Strategy<Value = Number> {
    prop_oneof![
        integer(),
        (-100_000i32..100_000)
            .prop_filter_map("finite", |n| Number::from_f64(f64::from(n) / 100.0)),
    ]
}

fn integer() -> impl Strategy<Value = Number> {
    prop_oneof![
        any::<u64>().prop_map(Number::from),
        any::<i64>().prop_map(Number::from),
    ]
}

/// Arbitrary JSON, at most three levels deep and a few entries wide.
fn json_value() -> impl Strategy<Value = Value> {
    json_tree(json_number().boxed())
}

/// Arbitrary JSON whose numbers survive a parse exactly, for typed payloads compared as
/// values.
fn exact_json_value() -> impl Strategy<Value = Value> {
    json_tree(exact_number().boxed())
}

fn json_tree(number: BoxedStrategy<Number>) -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        number.prop_map(Value::Number),
        text().prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(text(), inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// A percentage that survives a JSON round trip exactly (two decimals).
fn percent() -> impl Strategy<Value = f64> {
    (0u32..=10_000).prop_map(|n| f64::from(n) / 100.0)
}

fn level() -> impl Strategy<Value = Level> {
    prop_oneof![
        Just(Level::Info),
        Just(Level::Success),
        Just(Level::Warning),
        Just(Level::Error)
    ]
}

fn notification() -> impl Strategy<Value = Notification> {
    (
        proptest::option::of(text()),
        text(),
        level(),
        proptest::option::of(exact_json_value()),
    )
        .prop_map(|(title, message, level, data)| Notification {
            title,
            message,
            level,
            // `Some(Value::Null)` is written as `null` and read back as `None`.
            data: data.filter(|v| !v.is_null()),
        })
}

fn upload_progress() -> impl Strategy<Value = UploadProgress> {
    (text(), percent(), text()).prop_map(|(id, progress, status)| UploadProgress {
        id,
        progress,
        status,
    })
}

fn analysis_status() -> impl Strategy<Value = AnalysisStatus> {
    (
        text(),
        text(),
        percent(),
        proptest::option::of(exact_json_value()),
        proptest::option::of(text()),
        proptest::option::of(any::<bool>()),
    )
        .prop_map(
            |(id, status, progress, result, error, retryable)| AnalysisStatus {
                id,
                status,
                progress,
                result: result.filter(|v| !v.is_null()),
                error,
                retryable,
            },
        )
}

fn chat_message() -> impl Strategy<Value = ChatMessage> {
    (text(), text(), proptest::option::of(exact_json_value())).prop_map(
        |(id, content, metadata)| ChatMessage {
            id,
            content,
            metadata: metadata.filter(|v| !v.is_null()),
        },
    )
}

/// Any event: an application-defined type with arbitrary data, or a standard one.
fn event() -> impl Strategy<Value = RawEvent> {
    prop_oneof![
        3 => (text(), json_value())
            .prop_map(|(kind, data)| RawEvent::from_parts(kind, &data).unwrap()),
        1 => notification().prop_map(|e| RawEvent::new(&e).unwrap()),
        1 => upload_progress().prop_map(|e| RawEvent::new(&e).unwrap()),
        1 => analysis_status().prop_map(|e| RawEvent::new(&e).unwrap()),
        1 => chat_message().prop_map(|e| RawEvent::new(&e).unwrap()),
    ]
}

fn delivery() -> impl Strategy<Value = Delivery> {
    prop_oneof![Just(Delivery::Reliable), Just(Delivery::Ephemeral)]
}

/// Known codes and `Other(n)`: `from_u16` keeps the value canonical (`Other` only for
/// numbers the table does not name), which is what a decoder can give back.
fn code() -> impl Strategy<Value = Code> {
    let known: Vec<Code> = Code::all().collect();
    prop_oneof![
        prop::sample::select(known),
        any::<u16>().prop_map(Code::from_u16),
        (4000u16..5000).prop_map(Code::from_u16),
    ]
}

// ---------------------------------------------------------------- client frames

fn subscribe() -> impl Strategy<Value = Subscribe> {
    (
        text(),
        proptest::option::of(
            (text(), any::<u64>()).prop_map(|(epoch, offset)| Recover { epoch, offset }),
        ),
        proptest::option::of(prop::collection::vec(text(), 0..4)),
    )
        .prop_map(|(channel, recover, events)| Subscribe {
            channel,
            recover,
            events,
        })
}

fn client_message() -> impl Strategy<Value = ClientMessage> {
    prop_oneof![
        Just(ClientMessage::Ping),
        subscribe().prop_map(ClientMessage::Subscribe),
        text().prop_map(|channel| ClientMessage::Unsubscribe(Unsubscribe { channel })),
        (text(), event(), proptest::option::of(delivery())).prop_map(
            |(channel, event, delivery)| ClientMessage::Publish(Publish {
                channel,
                event,
                delivery,
            })
        ),
        text().prop_map(|channel| ClientMessage::Typing(ChannelRef { channel })),
        text().prop_map(|channel| ClientMessage::Presence(ChannelRef { channel })),
        (
            text(),
            proptest::option::of(any::<u64>()),
            proptest::option::of(any::<u64>()),
            proptest::option::of(any::<u32>()),
        )
            .prop_map(
                |(channel, since, before, limit)| ClientMessage::History(History {
                    channel,
                    since,
                    before,
                    limit,
                })
            ),
        (text(), text(), any::<u64>()).prop_map(|(channel, epoch, offset)| ClientMessage::Ack(
            Ack {
                channel,
                epoch,
                offset
            }
        )),
    ]
}

fn client_frame() -> impl Strategy<Value = ClientFrame> {
    (id(), client_message()).prop_map(|(id, message)| ClientFrame { id, message })
}

// ---------------------------------------------------------------- server frames

fn connected() -> impl Strategy<Value = Connected> {
    (
        (text(), text(), any::<u32>()),
        (any::<u64>(), any::<u64>(), any::<usize>()),
        prop::collection::vec(
            (
                (text(), text(), any::<u64>()),
                (any::<Option<bool>>(), any::<Option<u64>>()),
            )
                .prop_map(|((channel, epoch, offset), (recovered, history_start))| {
                    ChannelPosition {
                        channel,
                        epoch,
                        offset,
                        recovered,
                        history_start,
                    }
                }),
            0..4,
        ),
    )
        .prop_map(
            |(
                (session_id, user_id, protocol),
                (heartbeat_ms, heartbeat_timeout_ms, max_frame_bytes),
                subscriptions,
            )| Connected {
                session_id,
                user_id,
                protocol,
                heartbeat_ms,
                heartbeat_timeout_ms,
                max_frame_bytes,
                subscriptions,
            },
        )
}

fn reply() -> impl Strategy<Value = Reply> {
    prop_oneof![
        (
            text(),
            text(),
            any::<u64>(),
            proptest::option::of(any::<bool>()),
            proptest::option::of(any::<u64>()),
            proptest::option::of(any::<u64>()),
        )
            .prop_map(
                |(channel, epoch, offset, recovered, missed, history_start)| Reply::Subscribe {
                    channel,
                    epoch,
                    offset,
                    recovered,
                    missed,
                    history_start,
                }
            ),
        text().prop_map(|channel| Reply::Unsubscribe { channel }),
        (
            text(),
            proptest::option::of(any::<u64>()),
            text(),
            any::<u64>()
        )
            .prop_map(|(channel, offset, epoch, delivered)| Reply::Publish {
                channel,
                offset,
                epoch,
                delivered,
            }),
        (
            text(),
            prop::collection::vec(
                (text(), any::<u32>()).prop_map(|(user_id, connections)| Member {
                    user_id,
                    connections,
                }),
                0..4,
            ),
        )
            .prop_map(|(channel, members)| Reply::Presence { channel, members }),
        text().prop_map(|channel| Reply::Typing { channel }),
        (
            text(),
            text(),
            any::<u64>(),
            prop::collection::vec(message_body(), 0..3)
        )
            .prop_map(|(channel, epoch, offset, publications)| Reply::History(
                HistoryPage {
                    channel,
                    epoch,
                    offset,
                    publications,
                }
            )),
        (text(), any::<u64>()).prop_map(|(channel, offset)| Reply::Ack { channel, offset }),
    ]
}

fn message_body() -> impl Strategy<Value = MessageBody> {
    (
        text(),
        proptest::option::of(any::<u64>()),
        text(),
        any::<u64>(),
        proptest::option::of(text()),
        event(),
    )
        .prop_map(|(channel, offset, epoch, ts, sender, event)| MessageBody {
            channel,
            offset,
            epoch,
            ts,
            sender,
            event,
        })
}

fn presence_change() -> impl Strategy<Value = PresenceChange> {
    (text(), text()).prop_map(|(channel, user_id)| PresenceChange { channel, user_id })
}

fn server_message() -> impl Strategy<Value = ServerMessage> {
    prop_oneof![
        connected().prop_map(ServerMessage::Connected),
        Just(ServerMessage::Pong),
        reply().prop_map(ServerMessage::Reply),
        (code(), text())
            .prop_map(|(code, message)| ServerMessage::Error(ErrorBody { code, message })),
        message_body().prop_map(ServerMessage::Message),
        presence_change().prop_map(ServerMessage::UserJoined),
        presence_change().prop_map(ServerMessage::UserLeft),
        (text(), text()).prop_map(|(channel, user_id)| ServerMessage::Typing(TypingNotice {
            channel,
            user_id,
        })),
        (text(), any::<u64>()).prop_map(|(reason, reconnect_after_ms)| {
            ServerMessage::Shutdown(Shutdown {
                reason,
                reconnect_after_ms,
            })
        }),
    ]
}

fn server_frame() -> impl Strategy<Value = ServerFrame> {
    (id(), server_message()).prop_map(|(id, message)| ServerFrame { id, message })
}

// ---------------------------------------------------------------- properties

proptest! {
    // No regression files: this suite must not write into the source tree.
    #![proptest_config(ProptestConfig { failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn client_frames_round_trip(frame in client_frame()) {
        let text = frame.encode();
        let decoded = ClientFrame::decode(&text);
        prop_assert_eq!(decoded.as_ref(), Ok(&frame), "encoded as {}", text);
        // Encoding is a function of the value: the decoded frame encodes identically.
        prop_assert_eq!(decoded.unwrap().encode(), text);
    }

    #[test]
    fn server_frames_round_trip(frame in server_frame()) {
        let text = frame.encode();
        let decoded = ServerFrame::decode(&text);
        prop_assert_eq!(decoded.as_ref(), Ok(&frame), "encoded as {}", text);
        prop_assert_eq!(decoded.unwrap().encode(), text);
    }

    #[test]
    fn raw_event_data_survives_a_publication(data in json_value(), kind in text()) {
        let event = RawEvent::from_parts(kind.clone(), &data).unwrap();
        let frame = ServerFrame::push(ServerMessage::Message(MessageBody {
            channel: "c".into(),
            offset: Some(1),
            epoch: "e".into(),
            ts: 0,
            sender: None,
            event,
        }));
        let ServerMessage::Message(body) = ServerFrame::decode(&frame.encode()).unwrap().message
        else {
            panic!("not a message");
        };
        prop_assert_eq!(body.event.kind(), kind.as_str());
        // Forwarded untouched: the text is exactly what the publisher encoded.
        prop_assert_eq!(body.event.data_json(), serde_json::to_string(&data).unwrap());
    }

    #[test]
    fn codes_round_trip_through_numbers(code in code()) {
        prop_assert_eq!(Code::from_u16(code.as_u16()), code);
        let json = serde_json::to_string(&code).unwrap();
        prop_assert_eq!(json.clone(), code.as_u16().to_string());
        prop_assert_eq!(serde_json::from_str::<Code>(&json).unwrap(), code);
        prop_assert_eq!(code.is_terminal(), !code.is_retryable());
    }

    #[test]
    fn unknown_codes_follow_the_documented_ranges(n in any::<u16>()) {
        if let Code::Other(m) = Code::from_u16(n) {
            prop_assert_eq!(m, n);
            let retryable = matches!(n, 1001..=1014 | 3000..=3499 | 4000..=4499);
            prop_assert_eq!(Code::Other(n).is_retryable(), retryable, "code {}", n);
        }
    }

    #[test]
    fn typed_standard_events_round_trip(
        n in notification(),
        u in upload_progress(),
        a in analysis_status(),
        c in chat_message(),
    ) {
        let raw = RawEvent::new(&n).unwrap();
        prop_assert!(raw.validate_standard().is_ok());
        prop_assert_eq!(raw.decode::<Notification>().unwrap().unwrap(), n);

        let raw = RawEvent::new(&u).unwrap();
        prop_assert!(raw.validate_standard().is_ok());
        prop_assert_eq!(raw.default_delivery(), Delivery::Ephemeral);
        prop_assert_eq!(raw.decode::<UploadProgress>().unwrap().unwrap(), u);

        let raw = RawEvent::new(&a).unwrap();
        prop_assert!(raw.validate_standard().is_ok());
        prop_assert_eq!(raw.default_delivery(), Delivery::Reliable);
        prop_assert_eq!(raw.decode::<AnalysisStatus>().unwrap().unwrap(), a);

        let raw = RawEvent::new(&c).unwrap();
        prop_assert!(raw.validate_standard().is_ok());
        prop_assert_eq!(raw.decode::<ChatMessage>().unwrap().unwrap(), c);
    }
}

#[test]
fn strategies_reach_every_frame_type_and_reply_kind() {
    // The strategies list variants by hand; check they actually produce all of them
    // (6 client types, 9 server types, 5 reply kinds, as in docs/protocol.md).
    let runner = &mut proptest::test_runner::TestRunner::deterministic();
    let mut client_kinds = std::collections::BTreeSet::new();
    let mut server_kinds = std::collections::BTreeSet::new();
    let mut reply_kinds = std::collections::BTreeSet::new();
    for _ in 0..2_000 {
        let c = client_frame().new_tree(runner).unwrap().current();
        client_kinds.insert(c.kind());
        let s = server_frame().new_tree(runner).unwrap().current();
        server_kinds.insert(s.kind());
        if let ServerMessage::Reply(r) = &s.message {
            let kind = serde_json::to_value(r).unwrap()["kind"]
                .as_str()
                .unwrap()
                .to_owned();
            reply_kinds.insert(kind);
        }
    }
    assert_eq!(client_kinds.len(), 8, "{client_kinds:?}");
    assert_eq!(server_kinds.len(), 9, "{server_kinds:?}");
    assert_eq!(reply_kinds.len(), 7, "{reply_kinds:?}");
}
