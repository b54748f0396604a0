//! Subscriptions: restore with recovery, order, duplicates, gaps, epochs, automatic channels.

use tidings_protocol::Code;

use super::*;
use crate::core::Subscribed;

/// The `Subscribed` events.
fn subscribed(outputs: &[Output]) -> Vec<Subscribed> {
    events(outputs)
        .into_iter()
        .filter_map(|e| match e {
            ClientEvent::Subscribed(s) => Some(s),
            _ => None,
        })
        .collect()
}

/// A connected harness subscribed to `chat` at epoch `e1`, offset `offset`; returns the op.
fn subscribed_to_chat(offset: u64) -> (Harness, OpId) {
    let mut h = Harness::default_config();
    h.establish(&[]);
    let op = h.core.subscribe(h.now, "chat", None).unwrap();
    let outputs = h.take();
    let [(id, channel, None)] = &subscribes(&outputs)[..] else {
        panic!("one subscribe without recover expected: {outputs:?}")
    };
    assert_eq!(channel, "chat");
    h.subscribe_reply(*id, "chat", "e1", offset, None);
    (h, op)
}

fn chat(offsets: &[u64]) -> Vec<(String, Option<u64>)> {
    offsets
        .iter()
        .map(|o| ("chat".to_owned(), Some(*o)))
        .collect()
}

#[test]
fn subscribe_completes_on_the_reply_and_starts_at_its_offset() {
    let (mut h, op) = subscribed_to_chat(10);
    let outputs = h.take();
    let info = Subscribed {
        channel: "chat".into(),
        epoch: "e1".into(),
        offset: 10,
        recovered: None,
        missed: None,
    };
    assert_eq!(
        completions(&outputs),
        [(op, Ok(Completion::Subscribed(info.clone())))]
    );
    assert_eq!(subscribed(&outputs), [info]);
    // Older publications are not delivered; the next one is.
    h.publication("chat", "e1", Some(10));
    h.publication("chat", "e1", Some(11));
    assert_eq!(delivered(&h.take()), chat(&[11]));
    assert_eq!(
        h.core.subscriptions().collect::<Vec<_>>(),
        [("chat", Some(("e1", 11)))]
    );
}

#[test]
fn subscribing_twice_completes_at_once() {
    let (mut h, _) = subscribed_to_chat(3);
    h.take();
    let again = h.core.subscribe(h.now, "chat", None).unwrap();
    let outputs = h.take();
    assert!(subscribes(&outputs).is_empty());
    assert!(
        matches!(&completions(&outputs)[..], [(op, Ok(Completion::Subscribed(s)))] if *op == again && s.offset == 3)
    );
}

#[test]
fn subscribe_while_disconnected_is_sent_after_connected() {
    let mut h = Harness::default_config();
    let op = h
        .core
        .subscribe(h.now, "chat", Some(vec!["note".into()]))
        .unwrap();
    assert!(h.take().is_empty());
    h.establish(&[]);
    let outputs = h.take();
    let frames = sent(&outputs);
    let ClientMessage::Subscribe(s) = &frames[0].message else {
        panic!("{frames:?}")
    };
    assert_eq!(s.events.as_deref(), Some(&["note".to_owned()][..]));
    h.subscribe_reply(frames[0].id.unwrap(), "chat", "e1", 0, None);
    assert!(matches!(&completions(&h.take())[..], [(o, Ok(_))] if *o == op));
}

#[test]
fn duplicates_and_stale_offsets_never_reach_the_app() {
    let (mut h, _) = subscribed_to_chat(0);
    for offset in [1, 2, 2, 1, 3, 3, 0, 4] {
        h.publication("chat", "e1", Some(offset));
    }
    let outputs = h.take();
    assert_eq!(delivered(&outputs), chat(&[1, 2, 3, 4]));
    assert!(subscribes(&outputs).is_empty(), "duplicates are not gaps");
}

#[test]
fn ephemeral_publications_are_delivered_as_they_come() {
    let (mut h, _) = subscribed_to_chat(5);
    h.publication("chat", "e1", None);
    h.publication("chat", "e1", Some(6));
    h.publication("chat", "e1", None);
    assert_eq!(
        delivered(&h.take()),
        [
            ("chat".into(), None),
            ("chat".into(), Some(6)),
            ("chat".into(), None)
        ]
    );
}

#[test]
fn a_gap_resubscribes_with_recover_and_delivers_in_order() {
    let (mut h, _) = subscribed_to_chat(0);
    h.publication("chat", "e1", Some(1));
    h.take();
    // 2 and 3 are missing.
    h.publication("chat", "e1", Some(4));
    let outputs = h.take();
    assert!(delivered(&outputs).is_empty());
    let [(id, _, Some((epoch, 1)))] = &subscribes(&outputs)[..] else {
        panic!("a recovering subscribe from offset 1 expected: {outputs:?}")
    };
    assert_eq!(epoch, "e1");
    // More live publications before the reply: dropped, the replay covers them; no second
    // resubscribe while one is in flight.
    h.publication("chat", "e1", Some(5));
    let outputs = h.take();
    assert!(delivered(&outputs).is_empty() && subscribes(&outputs).is_empty());
    // The next one in order may pass meanwhile.
    h.publication("chat", "e1", Some(2));
    assert_eq!(delivered(&h.take()), chat(&[2]));
    h.subscribe_reply(*id, "chat", "e1", 5, Some(true));
    for offset in [2, 3, 4, 5, 6] {
        h.publication("chat", "e1", Some(offset));
    }
    let outputs = h.take();
    assert_eq!(subscribed(&outputs)[0].recovered, Some(true));
    assert_eq!(delivered(&outputs), chat(&[3, 4, 5, 6]));
}

#[test]
fn an_epoch_change_is_reported_as_not_recovered() {
    let (mut h, _) = subscribed_to_chat(5);
    h.take();
    h.publication("chat", "e2", Some(1));
    let outputs = h.take();
    assert!(delivered(&outputs).is_empty());
    let [(id, _, Some((epoch, 5)))] = &subscribes(&outputs)[..] else {
        panic!("{outputs:?}")
    };
    assert_eq!(epoch, "e1");
    h.subscribe_reply(*id, "chat", "e2", 3, Some(false));
    h.publication("chat", "e2", Some(3));
    h.publication("chat", "e2", Some(4));
    let outputs = h.take();
    let info = &subscribed(&outputs)[0];
    assert_eq!(
        (info.recovered, info.epoch.as_str(), info.offset),
        (Some(false), "e2", 3)
    );
    assert_eq!(delivered(&outputs), chat(&[4]));
}

#[test]
fn reconnect_restores_every_subscription_from_its_last_offset() {
    let mut h = Harness::default_config();
    h.establish(&[]);
    h.core.subscribe(h.now, "a", None).unwrap();
    h.core.subscribe(h.now, "b", None).unwrap();
    h.core.subscribe(h.now, "fresh", None).unwrap();
    let ids: Vec<u64> = subscribes(&h.take()).iter().map(|s| s.0).collect();
    h.subscribe_reply(ids[0], "a", "ea", 7, None);
    h.subscribe_reply(ids[1], "b", "eb", 0, None);
    h.publication("a", "ea", Some(8));
    h.publication("b", "eb", Some(1));
    h.publication("b", "eb", Some(2));
    h.drop_transport(1006);
    h.take();
    h.establish(&[]);
    let outputs = h.take();
    let restored: Vec<_> = subscribes(&outputs)
        .into_iter()
        .map(|s| (s.1, s.2))
        .collect();
    assert_eq!(
        restored,
        [
            ("a".into(), Some(("ea".into(), 8))),
            ("b".into(), Some(("eb".into(), 2))),
            // Never subscribed successfully: nothing to recover.
            ("fresh".into(), None),
        ]
    );
    let ids: Vec<u64> = subscribes(&outputs).iter().map(|s| s.0).collect();
    // `a` recovered: the missed publications follow the reply, in order.
    h.subscribe_reply(ids[0], "a", "ea", 10, Some(true));
    h.publication("a", "ea", Some(9));
    h.publication("a", "ea", Some(10));
    // `b` could not be recovered: it starts over at the reply's offset.
    h.subscribe_reply(ids[1], "b", "eb", 40, Some(false));
    h.publication("b", "eb", Some(41));
    let outputs = h.take();
    let flags: Vec<_> = subscribed(&outputs)
        .into_iter()
        .map(|s| (s.channel, s.recovered))
        .collect();
    assert_eq!(flags, [("a".into(), Some(true)), ("b".into(), Some(false))]);
    assert_eq!(
        delivered(&outputs),
        [
            ("a".into(), Some(9)),
            ("a".into(), Some(10)),
            ("b".into(), Some(41))
        ]
    );
}

#[test]
fn automatic_channels_are_tracked_and_recovered() {
    let mut h = Harness::default_config();
    h.establish(&[("user:7", "u", 2)]);
    let outputs = h.take();
    assert!(subscribes(&outputs).is_empty());
    let info = &subscribed(&outputs)[0];
    assert_eq!(
        (info.channel.as_str(), info.offset, info.recovered),
        ("user:7", 2, None)
    );
    h.publication("user:7", "u", Some(3));
    h.publication("user:7", "u", Some(3));
    assert_eq!(delivered(&h.take()), [("user:7".into(), Some(3))]);
    // Away while 4 and 5 were published: recover them.
    h.drop_transport(1006);
    h.establish(&[("user:7", "u", 5)]);
    let outputs = h.take();
    let [(id, channel, Some((epoch, 3)))] = &subscribes(&outputs)[..] else {
        panic!("{outputs:?}")
    };
    assert_eq!((channel.as_str(), epoch.as_str()), ("user:7", "u"));
    h.subscribe_reply(*id, "user:7", "u", 5, Some(true));
    h.publication("user:7", "u", Some(4));
    h.publication("user:7", "u", Some(5));
    assert_eq!(
        delivered(&h.take()),
        [("user:7".into(), Some(4)), ("user:7".into(), Some(5))]
    );
    // Nothing missed this time: no request at all.
    h.drop_transport(1006);
    h.establish(&[("user:7", "u", 5)]);
    let outputs = h.take();
    assert!(subscribes(&outputs).is_empty());
    assert_eq!(subscribed(&outputs)[0].recovered, Some(true));
}

#[test]
fn unsubscribe_forgets_the_channel() {
    let (mut h, _) = subscribed_to_chat(0);
    let op = h.core.unsubscribe(h.now, "chat").unwrap();
    let outputs = h.take();
    let frames = sent(&outputs);
    assert!(matches!(&frames[0].message, ClientMessage::Unsubscribe(u) if u.channel == "chat"));
    // In flight before the server processed the unsubscribe: dropped.
    h.publication("chat", "e1", Some(1));
    let id = frames[0].id.unwrap();
    h.server(&format!(
        r#"{{"type":"reply","id":{id},"data":{{"kind":"unsubscribe","channel":"chat"}}}}"#
    ));
    let outputs = h.take();
    assert!(delivered(&outputs).is_empty());
    assert!(
        matches!(&completions(&outputs)[..], [(o, Ok(Completion::Unsubscribed { .. }))] if *o == op)
    );
    h.drop_transport(1006);
    h.establish(&[]);
    assert!(subscribes(&h.take()).is_empty(), "not restored");
}

#[test]
fn an_automatic_channel_is_left_locally_across_reconnects() {
    let mut h = Harness::default_config();
    h.establish(&[("user:7", "u", 0)]);
    h.take();
    let op = h.core.unsubscribe(h.now, "user:7").unwrap();
    let outputs = h.take();
    // The server refuses to let go of it (4003): nothing is sent.
    assert!(sent(&outputs).is_empty());
    assert!(matches!(&completions(&outputs)[..], [(o, Ok(_))] if *o == op));
    h.publication("user:7", "u", Some(1));
    h.drop_transport(1006);
    h.take();
    h.establish(&[("user:7", "u", 0)]);
    let outputs = h.take();
    assert!(sent(&outputs).is_empty());
    assert!(subscribed(&outputs).is_empty());
    h.publication("user:7", "u", Some(1));
    assert!(delivered(&h.take()).is_empty());
    // Subscribing again brings it back.
    h.core.subscribe(h.now, "user:7", None).unwrap();
    let id = subscribes(&h.take())[0].0;
    h.subscribe_reply(id, "user:7", "u", 1, None);
    h.publication("user:7", "u", Some(2));
    assert_eq!(delivered(&h.take()), [("user:7".into(), Some(2))]);
}

#[test]
fn a_filtered_subscription_skips_offsets_without_resubscribing() {
    let mut h = Harness::default_config();
    h.establish(&[]);
    h.core
        .subscribe(h.now, "chat", Some(vec!["note".into()]))
        .unwrap();
    let id = subscribes(&h.take())[0].0;
    h.subscribe_reply(id, "chat", "e1", 0, None);
    for offset in [2, 5, 5, 4, 9] {
        h.publication("chat", "e1", Some(offset));
    }
    let outputs = h.take();
    assert_eq!(delivered(&outputs), chat(&[2, 5, 9]));
    assert!(subscribes(&outputs).is_empty());
}

#[test]
fn a_refused_subscribe_fails_its_operation() {
    let mut h = Harness::default_config();
    h.establish(&[]);
    let op = h.core.subscribe(h.now, "secret", None).unwrap();
    let id = subscribes(&h.take())[0].0;
    h.error_reply(id, 4003);
    let outputs = h.take();
    assert_eq!(
        completions(&outputs),
        [(
            op,
            Err(ClientError::Server {
                code: Code::Forbidden,
                message: "no".into()
            })
        )]
    );
    assert_eq!(h.core.subscriptions().count(), 0);
}

#[test]
fn a_restore_refused_with_a_retryable_code_is_retried_with_backoff() {
    let (mut h, _) = subscribed_to_chat(0);
    h.drop_transport(1006);
    h.establish(&[]);
    let id = subscribes(&h.take())[0].0;
    h.error_reply(id, 4503);
    assert!(h.timers.contains_key(&Timer::Resubscribe));
    let deadline = h.timers[&Timer::Resubscribe];
    h.advance(deadline - h.now);
    let outputs = h.take();
    let [(id, _, Some(_))] = &subscribes(&outputs)[..] else {
        panic!("{outputs:?}")
    };
    // A terminal refusal drops the subscription and tells the app.
    h.error_reply(*id, 4003);
    let events = events(&h.take());
    assert!(events.iter().any(|e| matches!(
        e,
        ClientEvent::Unsubscribed { channel, error: ClientError::Server { code: Code::Forbidden, .. } }
            if channel == "chat"
    )));
    assert_eq!(h.core.subscriptions().count(), 0);
}

#[test]
fn publications_on_other_channels_pass_through() {
    let mut h = Harness::default_config();
    h.establish(&[]);
    h.publication("broadcast", "b", Some(1));
    h.publication("broadcast", "b", Some(1));
    assert_eq!(
        delivered(&h.take()).len(),
        2,
        "no position to dedup against"
    );
}

#[test]
fn presence_changes_and_typing_are_forwarded() {
    let mut h = Harness::default_config();
    h.establish(&[]);
    h.take();
    h.server(r#"{"type":"user_joined","data":{"channel":"c","user_id":"8"}}"#);
    h.server(r#"{"type":"typing","data":{"channel":"c","user_id":"8"}}"#);
    h.server(r#"{"type":"user_left","data":{"channel":"c","user_id":"8"}}"#);
    let events = events(&h.take());
    assert!(matches!(
        &events[..],
        [
            ClientEvent::UserJoined(_),
            ClientEvent::Typing(_),
            ClientEvent::UserLeft(_)
        ]
    ));
}

#[test]
fn a_subscribe_in_flight_at_a_drop_completes_after_the_reconnect() {
    let mut h = Harness::default_config();
    h.establish(&[]);
    let op = h.core.subscribe(h.now, "chat", None).unwrap();
    h.take();
    h.drop_transport(1006);
    assert!(completions(&h.take()).is_empty(), "still waiting");
    h.establish(&[]);
    let outputs = h.take();
    let [(id, _, None)] = &subscribes(&outputs)[..] else {
        panic!("{outputs:?}")
    };
    h.subscribe_reply(*id, "chat", "e1", 4, None);
    let done = completions(&h.take());
    assert!(matches!(&done[..], [(o, Ok(Completion::Subscribed(s)))] if *o == op && s.offset == 4));
}

#[test]
fn a_subscribe_that_times_out_fails_and_is_undone() {
    let mut h = Harness::default_config();
    h.establish(&[]);
    let op = h.core.subscribe(h.now, "slow", None).unwrap();
    h.take();
    h.advance(10_000);
    let outputs = h.take();
    let timeout = ClientError::Timeout {
        after: std::time::Duration::from_secs(10),
    };
    assert_eq!(completions(&outputs), [(op, Err(timeout))]);
    let undone = sent(&outputs)
        .into_iter()
        .any(|f| matches!(f.message, ClientMessage::Unsubscribe(u) if u.channel == "slow"));
    assert!(undone, "{outputs:?}");
    // Publications the server sends meanwhile do not reach the app.
    h.publication("slow", "e", Some(1));
    assert!(delivered(&h.take()).is_empty());
    assert_eq!(h.core.subscriptions().count(), 0);
}

/// The `ack` frames among the outputs: (channel, epoch, offset).
fn acks(outputs: &[Output]) -> Vec<(String, String, u64)> {
    sent(outputs)
        .into_iter()
        .filter_map(|frame| match frame.message {
            tidings_protocol::ClientMessage::Ack(ack) => Some((ack.channel, ack.epoch, ack.offset)),
            _ => None,
        })
        .collect()
}

#[test]
fn personal_channel_publications_are_acknowledged_once_per_delay_and_on_close() {
    let mut h = Harness::default_config();
    h.establish(&[("user:7", "u", 0)]);
    h.take();
    h.publication("user:7", "u", Some(1));
    h.publication("user:7", "u", Some(2));
    let outputs = h.take();
    assert_eq!(delivered(&outputs).len(), 2);
    assert!(acks(&outputs).is_empty(), "batched, not per publication");
    h.advance(199);
    assert!(acks(&h.take()).is_empty());
    h.advance(1);
    assert_eq!(acks(&h.take()), [("user:7".to_owned(), "u".to_owned(), 2)]);
    // Nothing new: no ack. Another channel: never acked.
    h.advance(1000);
    h.publication("other", "u", Some(1));
    h.advance(1000);
    assert!(acks(&h.take()).is_empty());
    // Closing flushes what is pending.
    h.publication("user:7", "u", Some(3));
    h.core.close(h.now);
    assert_eq!(acks(&h.take()), [("user:7".to_owned(), "u".to_owned(), 3)]);
}
