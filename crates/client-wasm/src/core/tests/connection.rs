//! The connection's life: close codes, tokens, shutdown, heartbeat, offline, timeouts.

use tidings_protocol::Code;

use super::*;
use crate::core::Auth;

fn closed_code(outputs: &[Output]) -> Option<Code> {
    connection_events(outputs)
        .into_iter()
        .find_map(|e| match e {
            ConnectionEvent::Closed { code, .. } => Some(code),
            _ => None,
        })
}

fn reconnect_delay(outputs: &[Output]) -> Option<Option<u64>> {
    connection_events(outputs)
        .into_iter()
        .find_map(|e| match e {
            ConnectionEvent::Reconnecting { delay, .. } => {
                Some(delay.map(|d| d.as_millis() as u64))
            }
            _ => None,
        })
}

fn opened_urls(outputs: &[Output]) -> Vec<String> {
    outputs
        .iter()
        .filter_map(|o| match o {
            Output::OpenTransport { url, .. } => Some(url.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn connect_opens_the_transport_and_connected_reports_the_session() {
    let mut config = Config::new("ws://test/ws?room=1");
    config.auth = Auth::Token("abc.def".into());
    let mut h = Harness::new(config);
    assert_eq!(h.core.state(), State::Idle);
    h.connect();
    assert_eq!(h.core.state(), State::Connecting);
    let outputs = h.take();
    assert_eq!(opened_urls(&outputs), ["ws://test/ws?room=1&token=abc.def"]);
    assert_eq!(
        connection_events(&outputs),
        [ConnectionEvent::Connecting { attempt: 0 }]
    );
    h.open();
    h.connected(&[]);
    assert_eq!(h.core.state(), State::Connected);
    let events = connection_events(&h.take());
    assert!(matches!(&events[..], [ConnectionEvent::Connected(c)] if c.session_id == "s"));
    // Waiting for `connected` is over; the heartbeat watches the connection now.
    assert!(!h.timers.contains_key(&Timer::Connect));
    assert_eq!(h.timers[&Timer::Heartbeat], h.now + 25_000);
}

#[test]
fn terminal_close_codes_stop_reconnecting() {
    for code in [4001, 4003, 4004, 4006, 4011, 4400, 4426, 1000, 3600] {
        let mut config = Config::new("ws://test/ws");
        config.auth = Auth::Token("t".into());
        let mut h = Harness::new(config);
        h.establish(&[]);
        h.take();
        h.drop_transport(code);
        let outputs = h.take();
        assert_eq!(h.core.state(), State::Closed, "code {code}");
        assert_eq!(
            closed_code(&outputs),
            Some(Code::from_u16(code)),
            "code {code}"
        );
        assert!(h.timers.is_empty(), "code {code}: {:?}", h.timers);
        // Operations after the close fail at once with the reason.
        let error = h.core.publish(h.now, "c", note(), None).unwrap_err();
        assert_eq!(error.code(), Some(Code::from_u16(code)));
    }
}

#[test]
fn retryable_close_codes_reconnect() {
    for code in [
        1001, 1005, 1006, 1011, 1012, 4002, 4008, 4009, 4010, 4413, 4500, 4503, 3001,
    ] {
        let mut h = Harness::default_config();
        h.establish(&[]);
        h.take();
        h.drop_transport(code);
        let outputs = h.take();
        assert_eq!(h.core.state(), State::Reconnecting, "code {code}");
        let disconnected = connection_events(&outputs)
            .into_iter()
            .find_map(|e| match e {
                ConnectionEvent::Disconnected { code, .. } => Some(code),
                _ => None,
            });
        assert_eq!(disconnected, Some(Code::from_u16(code)));
        assert!(reconnect_delay(&outputs).flatten().is_some(), "code {code}");
        assert!(h.timers.contains_key(&Timer::Reconnect), "code {code}");
    }
}

#[test]
fn a_missing_close_code_counts_as_abnormal() {
    let mut h = Harness::default_config();
    h.establish(&[]);
    let conn = h.conn();
    h.input(Input::TransportClosed {
        conn,
        code: None,
        reason: String::new(),
    });
    assert_eq!(h.core.state(), State::Reconnecting);
}

#[test]
fn close_by_the_client_is_terminal_and_later_reports_are_ignored() {
    let mut h = Harness::default_config();
    h.establish(&[]);
    let conn = h.conn();
    h.take();
    h.core.close(h.now);
    let outputs = h.take();
    assert!(outputs.contains(&Output::CloseTransport {
        conn,
        code: 1000,
        reason: "client closed".into()
    }));
    assert_eq!(closed_code(&outputs), Some(Code::Normal));
    assert_eq!(h.core.state(), State::Closed);
    // The transport's own close arrives afterwards: nothing more happens.
    h.input(Input::TransportClosed {
        conn,
        code: Some(1000),
        reason: String::new(),
    });
    assert!(h.take().is_empty());
    assert!(h.timers.is_empty());
    // `connect` starts over.
    h.connect();
    assert_eq!(h.core.state(), State::Connecting);
}

#[test]
fn token_provider_is_asked_on_every_attempt() {
    let mut config = Config::new("ws://test/ws");
    config.auth = Auth::Provider;
    let mut h = Harness::new(config);
    for (round, token) in ["t1", "t2", "t3"].into_iter().enumerate() {
        if round == 0 {
            h.connect();
        } else {
            let deadline = h.timers[&Timer::Reconnect];
            h.advance(deadline - h.now);
        }
        let outputs = h.take();
        assert!(
            outputs
                .iter()
                .any(|o| matches!(o, Output::NeedToken { .. })),
            "round {round}: {outputs:?}"
        );
        assert!(
            opened_urls(&outputs).is_empty(),
            "no transport before the token"
        );
        let conn = h.token_for.unwrap();
        h.input(Input::Token {
            conn,
            result: Ok(token.into()),
        });
        assert_eq!(
            opened_urls(&h.take()),
            [format!("ws://test/ws?token={token}")]
        );
        h.open();
        h.connected(&[]);
        h.drop_transport(1006);
    }
}

#[test]
fn a_failing_token_provider_counts_as_a_failed_attempt() {
    let mut config = Config::new("ws://test/ws");
    config.auth = Auth::Provider;
    let mut h = Harness::new(config);
    h.connect();
    let conn = h.token_for.unwrap();
    h.input(Input::Token {
        conn,
        result: Err("login expired".into()),
    });
    let outputs = h.take();
    let events = connection_events(&outputs);
    assert!(events.contains(&ConnectionEvent::Error(ClientError::Token(
        "login expired".into()
    ))));
    assert_eq!(h.core.state(), State::Reconnecting);
    // A late answer for the abandoned attempt is ignored.
    h.input(Input::Token {
        conn,
        result: Ok("late".into()),
    });
    assert!(opened_urls(&h.take()).is_empty());
}

#[test]
fn unauthenticated_with_a_provider_retries_once_with_a_fresh_token() {
    let mut config = Config::new("ws://test/ws");
    config.auth = Auth::Provider;
    let mut h = Harness::new(config);
    h.connect();
    let conn = h.token_for.unwrap();
    h.input(Input::Token {
        conn,
        result: Ok("old".into()),
    });
    h.open();
    h.connected(&[]);
    // Later the token expires: retried at once.
    h.advance(6_000);
    h.take();
    h.drop_transport(4001);
    let outputs = h.take();
    assert_eq!(reconnect_delay(&outputs), Some(Some(0)));
    h.advance(0);
    let conn = h.token_for.unwrap();
    h.input(Input::Token {
        conn,
        result: Ok("still bad".into()),
    });
    h.open();
    // A second 4001 in a row is terminal.
    h.drop_transport(4001);
    assert_eq!(closed_code(&h.take()), Some(Code::Unauthenticated));
    assert_eq!(h.core.state(), State::Closed);
}

#[test]
fn shutdown_frame_sets_the_next_delay() {
    let mut h = Harness::default_config();
    h.establish(&[]);
    h.server(r#"{"type":"shutdown","data":{"reason":"restart","reconnect_after_ms":3210}}"#);
    h.take();
    h.drop_transport(1012);
    assert_eq!(reconnect_delay(&h.take()), Some(Some(3210)));
    assert_eq!(h.timers[&Timer::Reconnect], h.now + 3210);
    // Only for that one reconnect.
    h.advance(3210);
    h.open();
    h.drop_transport(1012);
    let delay = reconnect_delay(&h.take()).flatten().unwrap();
    assert_ne!(delay, 3210);
    assert!(delay <= 1000);
}

#[test]
fn silence_sends_a_ping_then_times_out_with_4002() {
    let mut h = Harness::default_config();
    h.establish(&[]);
    let conn = h.conn();
    h.take();
    h.advance(25_000);
    let outputs = h.take();
    let pings: Vec<_> = sent(&outputs)
        .into_iter()
        .filter(|f| f.message == ClientMessage::Ping)
        .collect();
    assert_eq!(pings.len(), 1);
    assert!(pings[0].id.is_some());
    h.advance(9_999);
    assert!(h.take().is_empty());
    h.advance(1);
    let outputs = h.take();
    assert!(outputs.iter().any(|o| matches!(
        o,
        Output::CloseTransport { conn: c, code: 4002, .. } if *c == conn
    )));
    assert!(connection_events(&outputs).iter().any(|e| matches!(
        e,
        ConnectionEvent::Disconnected {
            code: Code::HeartbeatTimeout,
            ..
        }
    )));
    assert_eq!(h.core.state(), State::Reconnecting);
    // The dead transport's close, arriving later, changes nothing.
    h.input(Input::TransportClosed {
        conn,
        code: Some(1006),
        reason: String::new(),
    });
    assert!(h.take().is_empty());
}

#[test]
fn any_frame_or_websocket_ping_keeps_the_connection_alive() {
    let mut h = Harness::default_config();
    h.establish(&[]);
    let conn = h.conn();
    h.advance(20_000);
    h.input(Input::Activity { conn });
    h.take();
    h.advance(5_000);
    assert!(
        sent(&h.take()).is_empty(),
        "activity at 20 s: no ping at 25 s"
    );
    h.advance(20_000);
    let ping = sent(&h.take())
        .into_iter()
        .find(|f| f.message == ClientMessage::Ping);
    let id = ping.unwrap().id.unwrap();
    h.advance(1_000);
    h.server(&format!(r#"{{"type":"pong","id":{id}}}"#));
    h.advance(20_000);
    assert_eq!(h.core.state(), State::Connected);
    assert!(
        h.take()
            .iter()
            .all(|o| !matches!(o, Output::CloseTransport { .. }))
    );
}

#[test]
fn offline_drops_the_connection_and_online_reconnects_at_once() {
    let mut h = Harness::default_config();
    h.establish(&[]);
    let conn = h.conn();
    h.take();
    h.input(Input::Offline);
    let outputs = h.take();
    assert!(
        outputs
            .iter()
            .any(|o| matches!(o, Output::CloseTransport { conn: c, .. } if *c == conn))
    );
    assert_eq!(reconnect_delay(&outputs), Some(None));
    assert_eq!(h.core.state(), State::Reconnecting);
    assert!(!h.timers.contains_key(&Timer::Reconnect));
    h.advance(60_000);
    assert_eq!(
        h.core.state(),
        State::Reconnecting,
        "no attempt while offline"
    );
    h.input(Input::Online);
    assert_eq!(h.core.state(), State::Connecting);
    assert_eq!(opened_urls(&h.take()).len(), 1);
}

#[test]
fn a_connect_attempt_that_hangs_is_abandoned() {
    let mut h = Harness::default_config();
    h.connect();
    let conn = h.conn();
    h.open();
    h.take();
    h.advance(10_000);
    let outputs = h.take();
    assert!(
        outputs
            .iter()
            .any(|o| matches!(o, Output::CloseTransport { conn: c, .. } if *c == conn))
    );
    assert_eq!(h.core.state(), State::Reconnecting);
}

#[test]
fn a_server_of_another_protocol_version_is_terminal() {
    let mut h = Harness::default_config();
    h.connect();
    h.open();
    h.server(
        r#"{"type":"connected","data":{"session_id":"s","user_id":"7","protocol":2,
        "heartbeat_ms":0,"heartbeat_timeout_ms":0,"max_frame_bytes":0,"subscriptions":[]}}"#,
    );
    assert_eq!(closed_code(&h.take()), Some(Code::UnsupportedProtocol));
}

#[test]
fn undecodable_frames_and_unanswered_errors_are_reported_not_fatal() {
    let mut h = Harness::default_config();
    h.establish(&[]);
    h.take();
    h.server("not json");
    h.server(r#"{"type":"error","data":{"code":4008,"message":"slow down"}}"#);
    let events = connection_events(&h.take());
    assert!(matches!(
        events[0],
        ConnectionEvent::Error(ClientError::Decode(_))
    ));
    assert_eq!(
        events[1],
        ConnectionEvent::Error(ClientError::Server {
            code: Code::RateLimited,
            message: "slow down".into()
        })
    );
    assert_eq!(h.core.state(), State::Connected);
}

#[test]
fn reconnects_go_round_the_fallback_urls() {
    let mut config = Config::new("ws://a/ws");
    config.fallback_urls = vec!["ws://b/ws".into(), "ws://c/ws".into()];
    config.auth = Auth::Token("t".into());
    let mut h = Harness::new(config);
    h.establish(&[]);
    let mut opened = vec![];
    opened.extend(opened_urls(&h.take()));
    // The node goes away: every reconnect tries the next URL, round the list.
    for _ in 0..3 {
        h.drop_transport(1006);
        // Up to the attempt the backoff schedules, not beyond (its timeout would move on).
        let next = loop {
            h.advance(50);
            let urls = opened_urls(&h.take());
            if !urls.is_empty() {
                break urls;
            }
        };
        opened.extend(next);
        h.open();
    }
    assert_eq!(
        opened,
        [
            "ws://a/ws?token=t",
            "ws://b/ws?token=t",
            "ws://c/ws?token=t",
            "ws://a/ws?token=t"
        ]
    );
    // A connection that works stays where it is: nothing moves without a loss.
    h.connected(&[]);
    h.advance(5_000);
    assert!(opened_urls(&h.take()).is_empty());
    assert_eq!(h.core.state(), State::Connected);
}
