//! The session every driver shares: operations answered to whoever started them (also when
//! they fail at once), readiness for `connect`, and which handlers hear an event.

use tidings_protocol::messages::{MessageBody, PresenceChange};
use tidings_protocol::{Code, RawEvent};

use super::super::{
    ClientEvent, Completion, Config, ConnId, ConnectionEvent, Core, HandlerId, Handlers, Input, Io,
    Listen, Operation, Session, Step,
};
use crate::ClientError;

/// A session whose replies are labels and whose handlers are names.
type TestSession = Session<&'static str, &'static str>;

fn session() -> TestSession {
    Session::new(Core::with_random(
        Config::new("ws://test/ws"),
        Box::new(|| u64::MAX),
    ))
}

/// Drains the session: the steps that are not I/O, and the transport it opened last.
fn drain(session: &mut TestSession) -> (Vec<Step<&'static str>>, Option<ConnId>) {
    let mut steps = Vec::new();
    let mut opened = None;
    while let Some(step) = session.poll() {
        match step {
            Step::Io(Io::Open { conn, .. }) => opened = Some(conn),
            Step::Io(_) => {}
            other => steps.push(other),
        }
    }
    (steps, opened)
}

fn connected_frame() -> String {
    r#"{"type":"connected","data":{"session_id":"s","user_id":"7","protocol":1,
        "heartbeat_ms":25000,"heartbeat_timeout_ms":10000,"max_frame_bytes":4096,
        "subscriptions":[]}}"#
        .to_owned()
}

/// connect, open, `connected`; returns the transport.
fn establish(session: &mut TestSession) -> (Vec<Step<&'static str>>, ConnId) {
    session.connect(0);
    let (_, conn) = drain(session);
    let conn = conn.unwrap();
    let core = session.core_mut();
    core.handle(1, Input::TransportOpened { conn });
    let text = connected_frame();
    core.handle(2, Input::Frame { conn, text });
    (drain(session).0, conn)
}

#[test]
fn connect_is_ready_on_the_first_connected_and_before_handlers_hear_it() {
    let mut session = session();
    let (steps, conn) = establish(&mut session);
    assert!(matches!(steps[0], Step::Ready(Ok(()))), "{steps:?}");
    assert!(
        matches!(
            &steps[1],
            Step::Event(ClientEvent::Connection(ConnectionEvent::Connected(_)))
        ),
        "{steps:?}"
    );
    // Later connections are not readiness any more.
    let reason = String::new();
    let core = session.core_mut();
    core.handle(
        3,
        Input::TransportClosed {
            conn,
            code: Some(1012),
            reason,
        },
    );
    let (steps, _) = drain(&mut session);
    assert!(
        steps.iter().all(|s| !matches!(s, Step::Ready(_))),
        "{steps:?}"
    );
}

#[test]
fn a_terminal_close_before_connected_fails_connect() {
    let mut session = session();
    session.connect(0);
    let (_, conn) = drain(&mut session);
    let reason = "bad token".to_owned();
    let conn = conn.unwrap();
    let core = session.core_mut();
    core.handle(
        1,
        Input::TransportClosed {
            conn,
            code: Some(4001),
            reason,
        },
    );
    let (steps, _) = drain(&mut session);
    let ready = steps.iter().find_map(|s| match s {
        Step::Ready(result) => Some(result.clone()),
        _ => None,
    });
    assert_eq!(
        ready,
        Some(Err(ClientError::Closed {
            code: Code::Unauthenticated,
            reason: "bad token".into()
        }))
    );
}

#[test]
fn every_operation_is_answered_to_whoever_started_it() {
    let mut session = session();
    // Refused at once (presence needs a connection): answered through `poll` all the same.
    let channel = "room".to_owned();
    session.perform(0, Operation::Presence { channel }, "presence");
    let (steps, _) = drain(&mut session);
    assert!(
        matches!(
            steps.as_slice(),
            [Step::Reply("presence", Err(ClientError::NotConnected))]
        ),
        "{steps:?}"
    );

    let (_, conn) = establish(&mut session);
    let operation = Operation::Subscribe {
        channel: "room".into(),
        events: None,
    };
    session.perform(3, operation, "subscribe");
    let text = r#"{"type":"reply","id":1,"data":{"kind":"subscribe","channel":"room",
        "epoch":"e","offset":0}}"#
        .to_owned();
    session.core_mut().handle(4, Input::Frame { conn, text });
    let (steps, _) = drain(&mut session);
    assert!(
        matches!(
            steps.as_slice(),
            [
                Step::Reply("subscribe", Ok(Completion::Subscribed(_))),
                Step::Event(ClientEvent::Subscribed(_))
            ]
        ),
        "{steps:?}"
    );
}

#[test]
fn leaving_a_channel_forgets_its_handlers() {
    let mut session = session();
    let handlers = session.handlers_mut();
    for (listen, channel, name) in [
        (Listen::Publication, Some("room"), "room publications"),
        (Listen::Publication, None, "all publications"),
    ] {
        let id = handlers.next_id();
        handlers.add(id, listen, channel.map(str::to_owned), name);
    }
    let channel = "room".to_owned();
    session.perform(0, Operation::Unsubscribe { channel }, "unsubscribe");
    let event = publication("room", "note");
    let heard: Vec<_> = session
        .handlers()
        .matching(&event)
        .map(|(_, h)| *h)
        .collect();
    assert_eq!(heard, ["all publications"]);
}

fn publication(channel: &str, kind: &str) -> ClientEvent {
    ClientEvent::Publication(MessageBody {
        channel: channel.into(),
        offset: Some(1),
        epoch: "e".into(),
        ts: 1,
        sender: None,
        event: RawEvent::from_parts(kind, &()).unwrap(),
    })
}

#[test]
fn handlers_hear_what_they_listen_to_in_registration_order() {
    let mut handlers = Handlers::<&str>::default();
    let registrations = [
        (Listen::Event("note".into()), None, "notes"),
        (Listen::State, Some("room"), "room state"),
        (Listen::Publication, Some("other"), "other channel"),
        (Listen::All, None, "everything"),
        (Listen::Publication, Some("room"), "room publications"),
        (Listen::Event("chat".into()), None, "chats"),
        (Listen::Presence, Some("room"), "room presence"),
    ];
    for (listen, channel, name) in registrations {
        let id = handlers.next_id();
        handlers.add(id, listen, channel.map(str::to_owned), name);
    }
    fn heard<'a>(handlers: &Handlers<&'a str>, event: &ClientEvent) -> Vec<&'a str> {
        handlers.matching(event).map(|(_, name)| *name).collect()
    }
    let note = publication("room", "note");
    assert_eq!(
        heard(&handlers, &note),
        ["notes", "everything", "room publications"]
    );
    let change = ClientEvent::Connection(ConnectionEvent::Connecting { attempt: 0 });
    // Connection changes concern every channel.
    assert_eq!(heard(&handlers, &change), ["room state", "everything"]);
    let joined = ClientEvent::UserJoined(PresenceChange {
        channel: "room".into(),
        user_id: "u".into(),
    });
    assert_eq!(heard(&handlers, &joined), ["everything", "room presence"]);
    assert!(!handlers.is_deaf_to(&joined));

    handlers.remove(HandlerId::from_raw(4));
    handlers.remove_first(&Listen::Event("note".into()), None, |name| *name == "notes");
    assert_eq!(heard(&handlers, &note), ["room publications"]);
    handlers.remove_channel("room");
    assert!(handlers.is_deaf_to(&note));
}
