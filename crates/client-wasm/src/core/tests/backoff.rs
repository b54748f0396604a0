//! Reconnect delays: full jitter within bounds, growth, reset after a stable connection,
//! the attempt limit.

use std::time::Duration;

use super::*;
use crate::core::{Backoff, RandomSource, SplitMix64};
use tidings_protocol::Code;

/// The `Reconnecting` events in `outputs`: (attempt, delay in ms).
fn reconnects(outputs: &[Output]) -> Vec<(u32, Option<u64>)> {
    connection_events(outputs)
        .into_iter()
        .filter_map(|e| match e {
            ConnectionEvent::Reconnecting { attempt, delay } => {
                Some((attempt, delay.map(|d| d.as_millis() as u64)))
            }
            _ => None,
        })
        .collect()
}

#[test]
fn delay_stays_within_full_jitter_bounds() {
    let backoff = Backoff::default();
    let mut random = SplitMix64::new(42);
    for retry in 0..40u32 {
        let bound = 500u64.saturating_mul(1u64 << retry.min(40)).min(20_000);
        assert_eq!(backoff.cap(retry), Duration::from_millis(bound));
        for _ in 0..200 {
            let delay = backoff.delay(retry, random.next_u64());
            assert!(
                delay <= Duration::from_millis(bound),
                "retry {retry}: {delay:?} > {bound}"
            );
        }
        // Both ends of the range are reachable.
        assert_eq!(backoff.delay(retry, 0), Duration::ZERO);
        assert_eq!(backoff.delay(retry, bound), Duration::from_millis(bound));
    }
}

#[test]
fn delay_honours_a_custom_factor_and_max() {
    let backoff = Backoff {
        min: Duration::from_millis(100),
        max: Duration::from_millis(1000),
        factor: 3.0,
        ..Backoff::default()
    };
    let caps: Vec<u64> = (0..5).map(|r| backoff.cap(r).as_millis() as u64).collect();
    assert_eq!(caps, [100, 300, 900, 1000, 1000]);
}

#[test]
fn failed_attempts_back_off_exponentially_up_to_the_max() {
    let mut h = Harness::default_config();
    h.connect();
    let mut seen = Vec::new();
    for _ in 0..8 {
        let conn = h.conn();
        h.conn = None;
        h.input(Input::TransportError {
            conn,
            message: "connection refused".into(),
        });
        let outputs = h.take();
        let [(attempt, Some(delay))] = reconnects(&outputs)[..] else {
            panic!("expected one Reconnecting: {outputs:?}")
        };
        assert_eq!(h.timers[&Timer::Reconnect], h.now + delay);
        seen.push((attempt, delay));
        h.advance(delay);
        assert_eq!(h.core.state(), State::Connecting);
    }
    let backoff = Backoff::default();
    let expected: Vec<(u32, u64)> = (0..8)
        .map(|retry| (retry + 1, backoff.delay(retry, RANDOM).as_millis() as u64))
        .collect();
    assert_eq!(seen, expected);
    for (retry, (_, delay)) in seen.iter().enumerate() {
        assert!(*delay <= backoff.cap(retry as u32).as_millis() as u64);
    }
}

#[test]
fn backoff_resets_only_after_a_stable_connection() {
    let mut h = Harness::default_config();
    h.connect();
    for _ in 0..4 {
        let conn = h.conn();
        h.input(Input::TransportError {
            conn,
            message: "refused".into(),
        });
        let deadline = h.timers[&Timer::Reconnect];
        h.advance(deadline - h.now);
    }
    h.take();
    // Connected, but dropped after 1 s: not stable, the counter keeps growing.
    h.open();
    h.connected(&[]);
    h.advance(1_000);
    h.drop_transport(1006);
    assert_eq!(
        reconnects(&h.take()),
        [(
            5,
            Some(Backoff::default().delay(4, RANDOM).as_millis() as u64)
        )]
    );

    // Connected for 5 s (the default `reset_after`): the next drop starts over.
    h.establish(&[]);
    h.advance(5_000);
    h.drop_transport(1006);
    let outputs = h.take();
    let [(1, Some(delay))] = reconnects(&outputs)[..] else {
        panic!("expected attempt 1: {outputs:?}")
    };
    assert!(delay <= 500);
}

#[test]
fn max_attempts_closes_the_client_with_the_last_code() {
    let mut config = Config::new("ws://test/ws");
    config.backoff.max_attempts = Some(2);
    let mut h = Harness::new(config);
    h.connect();
    for _ in 0..2 {
        h.open();
        h.drop_transport(1011);
        assert_eq!(h.core.state(), State::Reconnecting);
        let deadline = h.timers[&Timer::Reconnect];
        h.advance(deadline - h.now);
    }
    h.take();
    h.open();
    h.drop_transport(1011);
    let outputs = h.take();
    assert_eq!(h.core.state(), State::Closed);
    let closed = connection_events(&outputs)
        .into_iter()
        .find_map(|e| match e {
            ConnectionEvent::Closed { code, reason } => Some((code, reason)),
            _ => None,
        });
    let (code, reason) = closed.unwrap();
    assert_eq!(code, Code::Internal);
    assert!(reason.contains("gave up after 2"), "{reason}");
    assert!(h.timers.is_empty());
}

#[test]
fn jitter_comes_from_the_injected_source() {
    let mut h = Harness::with_random(Config::new("ws://test/ws"), || 123);
    h.connect();
    h.open();
    h.drop_transport(1006);
    assert_eq!(reconnects(&h.take()), [(1, Some(123))]);
}
