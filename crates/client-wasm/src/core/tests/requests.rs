//! Requests: ids, replies, errors, timeouts, the offline queue, resends after a drop.

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
