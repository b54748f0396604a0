//! Requests: ids, replies, errors, timeouts, the offline queue, resends after a drop, and
//! rpc calls (answered, refused, failed by a drop and never resent).

use tidings_protocol::Code;

use super::*;
use crate::core::PublishReply;

fn publish_reply(h: &mut Harness, id: u64, offset: u64) {
    h.server(&format!(
        r#"{{"type":"reply","id":{id},"data":{{"kind":"publish","channel":"c","offset":{offset},
        "epoch":"e","delivered":2}}}}"#
    ));
}

fn published(offset: u64) -> Result<Completion, ClientError> {
    Ok(Completion::Published(PublishReply {
        channel: "c".into(),
        offset: Some(offset),
        epoch: "e".into(),
        delivered: 2,
    }))
}

/// The ids of the publish frames sent.
fn publish_ids(outputs: &[Output]) -> Vec<u64> {
    sent(outputs)
        .into_iter()
        .filter(|f| matches!(f.message, ClientMessage::Publish(_)))
        .filter_map(|f| f.id)
        .collect()
}

#[test]
fn a_publish_completes_with_the_reply_matching_its_id() {
    let mut h = Harness::default_config();
    h.establish(&[]);
    h.take();
    let first = h.core.publish(h.now, "c", note(), None).unwrap();
    let second = h.core.publish(h.now, "c", note(), None).unwrap();
    let ids = publish_ids(&h.take());
    assert_eq!(ids.len(), 2);
    assert!(ids[0] < ids[1], "fresh ids");
    // Answered out of order: each goes to its own operation.
    publish_reply(&mut h, ids[1], 6);
    publish_reply(&mut h, ids[0], 5);
    assert_eq!(
        completions(&h.take()),
        [(second, published(6)), (first, published(5))]
    );
}

#[test]
fn an_error_frame_fails_the_request_with_its_code() {
    let mut h = Harness::default_config();
    h.establish(&[]);
    h.take();
    let op = h.core.publish(h.now, "c", note(), None).unwrap();
    let id = publish_ids(&h.take())[0];
    h.error_reply(id, 4003);
    let expected = ClientError::Server {
        code: Code::Forbidden,
        message: "no".into(),
    };
    assert_eq!(completions(&h.take()), [(op, Err(expected))]);
    assert_eq!(h.core.state(), State::Connected);
}

#[test]
fn requests_time_out_and_late_replies_are_ignored() {
    let mut h = Harness::default_config();
    h.establish(&[]);
    h.take();
    let presence = h.core.presence(h.now, "c").unwrap();
    h.advance(4_000);
    let publish = h.core.publish(h.now, "c", note(), None).unwrap();
    let ids: Vec<u64> = sent(&h.take()).iter().filter_map(|f| f.id).collect();
    h.advance(5_999);
    assert!(completions(&h.take()).is_empty());
    h.advance(1);
    let timeout = ClientError::Timeout {
        after: std::time::Duration::from_secs(10),
    };
    assert_eq!(completions(&h.take()), [(presence, Err(timeout.clone()))]);
    // The timer was re-armed for the publish.
    h.advance(4_000);
    assert_eq!(completions(&h.take()), [(publish, Err(timeout))]);
    assert!(!h.timers.contains_key(&Timer::Requests));
    publish_reply(&mut h, ids[1], 1);
    assert!(completions(&h.take()).is_empty());
}

#[test]
fn publishes_while_offline_are_queued_up_to_the_bound_and_sent_in_order() {
    let mut config = Config::new("ws://test/ws");
    config.publish_queue = 2;
    let mut h = Harness::new(config);
    let first = h.core.publish(h.now, "c", note(), None).unwrap();
    let second = h.core.publish(h.now, "c", note(), None).unwrap();
    assert_eq!(
        h.core.publish(h.now, "c", note(), None),
        Err(ClientError::QueueFull { capacity: 2 })
    );
    assert_eq!(h.core.queued_publishes(), 2);
    h.establish(&[]);
    let ids = publish_ids(&h.take());
    assert_eq!(ids.len(), 2);
    publish_reply(&mut h, ids[0], 1);
    publish_reply(&mut h, ids[1], 2);
    assert_eq!(
        completions(&h.take()),
        [(first, published(1)), (second, published(2))]
    );
    // The queue is empty again.
    h.drop_transport(1006);
    assert!(h.core.publish(h.now, "c", note(), None).is_ok());
}

#[test]
fn publishes_in_flight_at_a_drop_are_resent_after_the_reconnect() {
    let mut h = Harness::default_config();
    h.establish(&[]);
    let op = h.core.subscribe(h.now, "c", None).unwrap();
    let sub_id = subscribes(&h.take())[0].0;
    h.subscribe_reply(sub_id, "c", "e", 0, None);
    let in_flight = h.core.publish(h.now, "c", note(), None).unwrap();
    let old_id = publish_ids(&h.take())[0];
    h.drop_transport(1006);
    let queued = h.core.publish(h.now, "c", note(), None).unwrap();
    let outputs = h.take();
    assert!(
        completions(&outputs).is_empty(),
        "nothing fails: {outputs:?}"
    );
    h.establish(&[]);
    let outputs = h.take();
    // Subscriptions are restored first, then the publishes go out, the resent one first.
    let kinds: Vec<&str> = sent(&outputs).iter().map(|f| f.kind()).collect();
    assert_eq!(kinds, ["subscribe", "publish", "publish"]);
    let ids = publish_ids(&outputs);
    assert!(ids[0] > old_id, "a fresh id for the resend");
    publish_reply(&mut h, ids[0], 1);
    publish_reply(&mut h, ids[1], 2);
    let done = completions(&h.take());
    assert_eq!(done, [(in_flight, published(1)), (queued, published(2))]);
    assert_ne!(op, in_flight);
}

#[test]
fn presence_needs_a_connection_and_fails_when_it_drops() {
    let mut h = Harness::default_config();
    assert_eq!(h.core.presence(h.now, "c"), Err(ClientError::NotConnected));
    h.establish(&[]);
    let op = h.core.presence(h.now, "c").unwrap();
    h.take();
    h.drop_transport(1012);
    let done = completions(&h.take());
    assert!(matches!(
        &done[..],
        [(o, Err(ClientError::Disconnected { code: Code::ServerRestart, .. }))] if *o == op
    ));
}

#[test]
fn presence_reply_lists_members() {
    let mut h = Harness::default_config();
    h.establish(&[]);
    let op = h.core.presence(h.now, "room").unwrap();
    let id = sent(&h.take())[0].id.unwrap();
    h.server(&format!(
        r#"{{"type":"reply","id":{id},"data":{{"kind":"presence","channel":"room",
        "members":[{{"user_id":"7","connections":2}}]}}}}"#
    ));
    let done = completions(&h.take());
    assert!(matches!(
        &done[..],
        [(o, Ok(Completion::Presence { channel, members }))]
            if *o == op && channel == "room" && members.len() == 1
    ));
}

#[test]
fn a_frame_larger_than_the_server_accepts_is_refused_locally() {
    let mut h = Harness::default_config();
    h.establish(&[]);
    h.take();
    let big = RawEvent::from_parts("note", &"x".repeat(5000)).unwrap();
    let error = h.core.publish(h.now, "c", big, None).unwrap_err();
    assert!(matches!(
        error,
        ClientError::FrameTooLarge { max: 4096, .. }
    ));
    assert!(sent(&h.take()).is_empty());
    assert_eq!(h.core.state(), State::Connected);
}

#[test]
fn close_fails_everything_still_waiting() {
    let mut h = Harness::default_config();
    let sub = h.core.subscribe(h.now, "c", None).unwrap();
    let queued = h.core.publish(h.now, "c", note(), None).unwrap();
    h.core.close(h.now);
    let closed = ClientError::Closed {
        code: Code::Normal,
        reason: "client closed".into(),
    };
    let mut done = completions(&h.take());
    done.sort_by_key(|(op, _)| *op);
    assert_eq!(
        done,
        [(sub, Err(closed.clone())), (queued, Err(closed.clone()))]
    );
    assert_eq!(h.core.subscribe(h.now, "d", None), Err(closed));
}

#[test]
fn typing_is_sent_without_an_id_and_dropped_offline() {
    let mut h = Harness::default_config();
    h.core.typing(h.now, "c");
    assert!(h.take().is_empty());
    h.establish(&[]);
    h.take();
    h.core.typing(h.now, "c");
    let frames = sent(&h.take());
    assert_eq!(frames.len(), 1);
    assert_eq!((frames[0].kind(), frames[0].id), ("typing", None));
}

#[test]
fn unsubscribe_while_a_subscribe_is_pending_fails_the_subscribe() {
    let mut h = Harness::default_config();
    let sub = h.core.subscribe(h.now, "c", None).unwrap();
    let unsub = h.core.unsubscribe(h.now, "c").unwrap();
    let done = completions(&h.take());
    assert_eq!(
        done,
        [
            (
                sub,
                Err(ClientError::Unsubscribed {
                    channel: "c".into()
                })
            ),
            (
                unsub,
                Ok(Completion::Unsubscribed {
                    channel: "c".into()
                })
            ),
        ]
    );
    h.establish(&[]);
    assert!(subscribes(&h.take()).is_empty());
}

/// The rpc frames sent: (id, method, data).
fn rpcs(outputs: &[Output]) -> Vec<(u64, String, serde_json::Value)> {
    sent(outputs)
        .into_iter()
        .filter_map(|f| match f.message {
            ClientMessage::Rpc(rpc) => Some((f.id.unwrap_or(0), rpc.method, rpc.data)),
            _ => None,
        })
        .collect()
}

fn rpc_reply(h: &mut Harness, id: u64, data: &str) {
    h.server(&format!(
        r#"{{"type":"reply","id":{id},"data":{{"kind":"rpc","data":{data}}}}}"#
    ));
}

#[test]
fn an_rpc_completes_with_the_answer_matching_its_id() {
    let mut h = Harness::default_config();
    h.establish(&[]);
    h.take();
    let first = h
        .core
        .rpc(
            h.now,
            "motivation_requested",
            serde_json::json!({"mood": "tired"}),
        )
        .unwrap();
    let second = h
        .core
        .rpc(h.now, "echo", serde_json::json!([1, 2]))
        .unwrap();
    let sent = rpcs(&h.take());
    assert_eq!(sent.len(), 2);
    assert_eq!(
        (sent[0].1.as_str(), &sent[0].2),
        (
            "motivation_requested",
            &serde_json::json!({"mood": "tired"})
        )
    );
    assert_eq!(
        (sent[1].1.as_str(), &sent[1].2),
        ("echo", &serde_json::json!([1, 2]))
    );
    assert!(sent[0].0 < sent[1].0, "fresh ids");
    // Answered out of order: each goes to its own operation, whatever JSON it is.
    rpc_reply(&mut h, sent[1].0, "null");
    rpc_reply(&mut h, sent[0].0, r#"{"message":"Keep going!"}"#);
    assert_eq!(
        completions(&h.take()),
        [
            (second, Ok(Completion::Rpc(serde_json::Value::Null))),
            (
                first,
                Ok(Completion::Rpc(
                    serde_json::json!({"message": "Keep going!"})
                ))
            ),
        ]
    );
}

#[test]
fn an_rpc_refused_by_the_server_fails_with_its_code_and_message() {
    let mut h = Harness::default_config();
    h.establish(&[]);
    h.take();
    for (number, code, retryable) in [
        (4004, Code::NotFound, false),
        (4003, Code::Forbidden, false),
        (4503, Code::Unavailable, true),
        (4500, Code::InternalError, true),
        (4400, Code::BadFrame, false),
    ] {
        let op = h.core.rpc(h.now, "m", serde_json::Value::Null).unwrap();
        let id = rpcs(&h.take())[0].0;
        h.server(&format!(
            r#"{{"type":"error","id":{id},"data":{{"code":{number},"message":"why {number}"}}}}"#
        ));
        let expected = ClientError::Server {
            code,
            message: format!("why {number}"),
        };
        assert_eq!(completions(&h.take()), [(op, Err(expected.clone()))]);
        assert_eq!(expected.code().map(Code::is_retryable), Some(retryable));
        // A refused call is not a connection problem.
        assert_eq!(h.core.state(), State::Connected);
    }
}

#[test]
fn an_rpc_in_flight_at_a_drop_fails_and_is_never_resent() {
    let mut h = Harness::default_config();
    h.establish(&[]);
    h.take();
    let op = h
        .core
        .rpc(h.now, "charge_card", serde_json::json!({"cents": 100}))
        .unwrap();
    let publish = h.core.publish(h.now, "c", note(), None).unwrap();
    let outputs = h.take();
    let old_id = rpcs(&outputs)[0].0;
    assert_eq!(publish_ids(&outputs).len(), 1);
    h.drop_transport(1006);
    let done = completions(&h.take());
    assert!(
        matches!(
            &done[..],
            [(o, Err(ClientError::Disconnected { code: Code::Abnormal, .. }))] if *o == op
        ),
        "{done:?}"
    );
    // Retryable, by the close code it carries.
    assert_eq!(
        done[0]
            .1
            .as_ref()
            .unwrap_err()
            .code()
            .map(Code::is_retryable),
        Some(true)
    );
    assert_eq!(
        h.core.rpc(h.now, "m", serde_json::Value::Null),
        Err(ClientError::NotConnected)
    );
    h.establish(&[]);
    let outputs = h.take();
    // The publish in flight is resent (at-least-once); the rpc is not (at-most-once).
    let kinds: Vec<&str> = sent(&outputs).iter().map(|f| f.kind()).collect();
    assert_eq!(kinds, ["publish"], "{outputs:?}");
    let resent = publish_ids(&outputs)[0];
    publish_reply(&mut h, resent, 1);
    assert_eq!(completions(&h.take()), [(publish, published(1))]);
    // An answer to the old id (from the old connection) is ignored.
    rpc_reply(&mut h, old_id, "1");
    assert!(completions(&h.take()).is_empty());
}

#[test]
fn an_rpc_needs_a_live_connection_and_fails_once_closed() {
    let mut h = Harness::default_config();
    let null = serde_json::Value::Null;
    assert_eq!(
        h.core.rpc(h.now, "m", null.clone()),
        Err(ClientError::NotConnected)
    );
    h.connect();
    assert_eq!(
        h.core.rpc(h.now, "m", null.clone()),
        Err(ClientError::NotConnected)
    );
    h.open();
    h.connected(&[]);
    let op = h.core.rpc(h.now, "m", null.clone()).unwrap();
    h.take();
    h.core.close(h.now);
    let closed = ClientError::Closed {
        code: Code::Normal,
        reason: "client closed".into(),
    };
    assert_eq!(completions(&h.take()), [(op, Err(closed.clone()))]);
    assert_eq!(h.core.rpc(h.now, "m", null), Err(closed));
}

#[test]
fn an_rpc_times_out_and_its_late_answer_is_ignored() {
    let mut h = Harness::default_config();
    h.establish(&[]);
    h.take();
    let op = h.core.rpc(h.now, "slow", serde_json::Value::Null).unwrap();
    let id = rpcs(&h.take())[0].0;
    h.advance(9_999);
    assert!(completions(&h.take()).is_empty());
    h.advance(1);
    let timeout = ClientError::Timeout {
        after: std::time::Duration::from_secs(10),
    };
    assert_eq!(completions(&h.take()), [(op, Err(timeout))]);
    rpc_reply(&mut h, id, "1");
    assert!(completions(&h.take()).is_empty());
    assert_eq!(h.core.state(), State::Connected);
}

#[test]
fn an_rpc_answered_with_another_kind_of_reply_fails_to_decode() {
    let mut h = Harness::default_config();
    h.establish(&[]);
    h.take();
    let op = h.core.rpc(h.now, "m", serde_json::Value::Null).unwrap();
    let id = rpcs(&h.take())[0].0;
    publish_reply(&mut h, id, 1);
    let done = completions(&h.take());
    assert!(
        matches!(&done[..], [(o, Err(ClientError::Decode(m)))] if *o == op && m.contains("publish")),
        "{done:?}"
    );
}

#[test]
fn an_rpc_larger_than_the_server_accepts_is_refused_locally() {
    let mut h = Harness::default_config();
    h.establish(&[]);
    h.take();
    let big = serde_json::Value::String("x".repeat(5000));
    let error = h.core.rpc(h.now, "m", big).unwrap_err();
    assert!(matches!(
        error,
        ClientError::FrameTooLarge { max: 4096, .. }
    ));
    assert!(sent(&h.take()).is_empty());
}
