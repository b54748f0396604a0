//! The tokio driver against a scripted WebSocket peer on 127.0.0.1 (not the real server):
//! handshake details, frames both ways, handlers, pings, reconnect with recovery.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::result_large_err
)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Bytes, Message};
use tokio_tungstenite::{WebSocketStream, accept_hdr_async};

use tidings_protocol::{ChatMessage, ClientFrame, ClientMessage, Level, Notification, SUBPROTOCOL};

use super::Client;
use crate::core::{Backoff, ConnectionEvent};
use crate::{ClientError, State};

type Peer = WebSocketStream<TcpStream>;

const WAIT: Duration = Duration::from_secs(5);

/// Accepts one connection, answering the subprotocol; returns it with the request URI and
/// the subprotocols the client offered.
async fn accept(listener: &TcpListener) -> (Peer, String, String) {
    let (stream, _) = timeout(WAIT, listener.accept()).await.unwrap().unwrap();
    let seen = Arc::new(Mutex::new((String::new(), String::new())));
    let record = seen.clone();
    let callback = move |request: &Request, mut response: Response| {
        let offered = request
            .headers()
            .get("Sec-WebSocket-Protocol")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        *record.lock().unwrap() = (request.uri().to_string(), offered);
        response.headers_mut().insert(
            "Sec-WebSocket-Protocol",
            HeaderValue::from_static(SUBPROTOCOL),
        );
        Ok(response)
    };
    let ws = accept_hdr_async(stream, callback).await.unwrap();
    let (uri, offered) = seen.lock().unwrap().clone();
    (ws, uri, offered)
}

/// The next text frame from the client, decoded (pongs are skipped).
async fn next_frame(ws: &mut Peer) -> ClientFrame {
    loop {
        match timeout(WAIT, ws.next()).await.unwrap().unwrap().unwrap() {
            Message::Text(text) => return ClientFrame::decode(text.as_str()).unwrap(),
            Message::Pong(_) => continue,
            other => panic!("unexpected {other:?}"),
        }
    }
}

async fn send(ws: &mut Peer, text: String) {
    ws.send(Message::text(text)).await.unwrap();
}

fn connected(offset: u64) -> String {
    format!(
        r#"{{"type":"connected","data":{{"session_id":"s","user_id":"7","protocol":1,
        "heartbeat_ms":25000,"heartbeat_timeout_ms":10000,"max_frame_bytes":65536,
        "subscriptions":[{{"channel":"user:7","epoch":"u","offset":{offset}}}]}}}}"#
    )
}

fn notification(offset: u64, message: &str) -> String {
    format!(
        r#"{{"type":"message","data":{{"channel":"user:7","offset":{offset},"epoch":"u","ts":1,
        "event":{{"type":"notification","data":{{"message":"{message}","level":"success"}}}}}}}}"#
    )
}

fn fast_backoff() -> Backoff {
    Backoff::new(Duration::from_millis(10), Duration::from_millis(20))
}

#[tokio::test]
async fn the_driver_speaks_the_protocol_and_recovers_after_a_restart() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/ws?room=1", listener.local_addr().unwrap());
    let builder = Client::builder(url).token("jwt.x").backoff(fast_backoff());
    let connecting = tokio::spawn(builder.connect());

    let (mut ws, uri, offered) = accept(&listener).await;
    assert_eq!(uri, "/ws?room=1&token=jwt.x");
    assert_eq!(offered, SUBPROTOCOL);
    send(&mut ws, connected(0)).await;
    let client = timeout(WAIT, connecting).await.unwrap().unwrap().unwrap();
    assert_eq!(client.state(), State::Connected);

    // Client-wide typed handler on the automatic channel: in order, once each.
    let (notes_tx, mut notes) = mpsc::unbounded_channel();
    client.on::<Notification>(move |n| {
        let _ = notes_tx.send((n.message, n.level));
    });
    let (states_tx, mut states) = mpsc::unbounded_channel();
    client.on_state(move |change| {
        let _ = states_tx.send(change.clone());
    });
    // A subscription's handlers registered before subscribing.
    let room = client.subscription("room");
    let (chats_tx, mut chats) = mpsc::unbounded_channel();
    room.on::<ChatMessage>(move |m| {
        let _ = chats_tx.send(m.content);
    });
    let subscribing = tokio::spawn({
        let room = room.clone();
        async move { room.subscribe().await }
    });
    let frame = next_frame(&mut ws).await;
    let ClientMessage::Subscribe(subscribe) = &frame.message else {
        panic!("{frame:?}")
    };
    assert_eq!(
        (subscribe.channel.as_str(), subscribe.recover.is_none()),
        ("room", true)
    );
    let id = frame.id.unwrap();
    send(&mut ws, format!(
        r#"{{"type":"reply","id":{id},"data":{{"kind":"subscribe","channel":"room","epoch":"r","offset":0}}}}"#
    ))
    .await;
    let info = timeout(WAIT, subscribing).await.unwrap().unwrap().unwrap();
    assert_eq!((info.epoch.as_str(), info.offset), ("r", 0));

    for (offset, text) in [(1, "one"), (1, "one again"), (2, "two")] {
        send(&mut ws, notification(offset, text)).await;
    }
    send(
        &mut ws,
        r#"{"type":"message","data":{"channel":"room","offset":1,"epoch":"r","ts":1,
        "event":{"type":"chat_message","data":{"id":"m","content":"hello"}}}}"#
            .to_owned(),
    )
    .await;
    assert_eq!(timeout(WAIT, notes.recv()).await.unwrap().unwrap().0, "one");
    assert_eq!(
        timeout(WAIT, notes.recv()).await.unwrap().unwrap(),
        ("two".into(), Level::Success)
    );
    assert_eq!(timeout(WAIT, chats.recv()).await.unwrap().unwrap(), "hello");

    // Publish: the frame carries the typed event; the reply comes back typed.
    let publishing = tokio::spawn({
        let room = room.clone();
        async move {
            let chat = ChatMessage {
                id: "c1".into(),
                content: "hi".into(),
                metadata: None,
            };
            room.publish(&chat).await
        }
    });
    let frame = next_frame(&mut ws).await;
    let ClientMessage::Publish(publish) = &frame.message else {
        panic!("{frame:?}")
    };
    assert_eq!(
        (publish.channel.as_str(), publish.event.kind()),
        ("room", "chat_message")
    );
    let id = frame.id.unwrap();
    send(&mut ws, format!(
        r#"{{"type":"reply","id":{id},"data":{{"kind":"publish","channel":"room","offset":2,"epoch":"r","delivered":1}}}}"#
    ))
    .await;
    let reply = timeout(WAIT, publishing).await.unwrap().unwrap().unwrap();
    assert_eq!((reply.offset, reply.delivered), (Some(2), 1));

    // WebSocket pings are answered.
    ws.send(Message::Ping(Bytes::from_static(b"hb")))
        .await
        .unwrap();
    let pong = timeout(WAIT, ws.next()).await.unwrap().unwrap().unwrap();
    assert_eq!(pong, Message::Pong(Bytes::from_static(b"hb")));

    // The server restarts: the client reconnects and recovers both channels.
    let frame = CloseFrame {
        code: 1012.into(),
        reason: "restart".into(),
    };
    ws.close(Some(frame)).await.unwrap();
    let (mut ws, _, _) = accept(&listener).await;
    send(&mut ws, connected(3)).await;
    let frames = [next_frame(&mut ws).await, next_frame(&mut ws).await];
    let mut recovering: Vec<(String, String, u64)> = frames
        .iter()
        .filter_map(|f| match &f.message {
            ClientMessage::Subscribe(s) => {
                let r = s.recover.clone().unwrap();
                Some((s.channel.clone(), r.epoch, r.offset))
            }
            _ => None,
        })
        .collect();
    recovering.sort();
    assert_eq!(
        recovering,
        [
            ("room".into(), "r".into(), 1),
            ("user:7".into(), "u".into(), 2)
        ]
    );
    let user_id = frames
        .iter()
        .find(|f| matches!(&f.message, ClientMessage::Subscribe(s) if s.channel == "user:7"))
        .and_then(|f| f.id)
        .unwrap();
    send(&mut ws, format!(
        r#"{{"type":"reply","id":{user_id},"data":{{"kind":"subscribe","channel":"user:7","epoch":"u","offset":3,"recovered":true,"missed":1}}}}"#
    ))
    .await;
    send(&mut ws, notification(2, "two again")).await;
    send(&mut ws, notification(3, "three")).await;
    assert_eq!(
        timeout(WAIT, notes.recv()).await.unwrap().unwrap().0,
        "three"
    );

    let mut seen = Vec::new();
    while let Ok(change) = states.try_recv() {
        seen.push(change);
    }
    assert!(
        seen.iter().any(
            |c| matches!(c, ConnectionEvent::Disconnected { code, .. } if code.as_u16() == 1012)
        )
    );
    assert!(
        seen.iter()
            .any(|c| matches!(c, ConnectionEvent::Reconnecting { attempt: 1, .. }))
    );
    assert!(
        seen.iter()
            .any(|c| matches!(c, ConnectionEvent::Connected(_)))
    );

    client.close().await;
    // What the application processed of its personal channel is acknowledged (for the
    // offline inbox), at the latest when it closes.
    let mut acks = Vec::new();
    let close = loop {
        match timeout(WAIT, ws.next()).await.unwrap().unwrap().unwrap() {
            Message::Text(text) if text.as_str().contains(r#""type":"ack""#) => {
                acks.push(text.to_string());
            }
            Message::Text(_) | Message::Ping(_) | Message::Pong(_) => {}
            other => break other,
        }
    };
    assert!(
        acks.last()
            .is_some_and(|a| a.contains(r#""channel":"user:7""#) && a.contains(r#""offset":3"#)),
        "{acks:?}"
    );
    assert!(matches!(close, Message::Close(Some(f)) if u16::from(f.code) == 1000));
    assert_eq!(client.state(), State::Closed);
    let error = client.presence("room").await.unwrap_err();
    assert!(matches!(error, ClientError::Closed { .. }));
}

#[tokio::test]
async fn connect_fails_on_a_terminal_refusal() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/ws", listener.local_addr().unwrap());
    let connecting = tokio::spawn(Client::builder(url).token("bad").connect());
    let (mut ws, _, _) = accept(&listener).await;
    let frame = CloseFrame {
        code: 4003.into(),
        reason: "forbidden".into(),
    };
    ws.close(Some(frame)).await.unwrap();
    let error = timeout(WAIT, connecting)
        .await
        .unwrap()
        .unwrap()
        .unwrap_err();
    assert_eq!(error.code().map(|c| c.as_u16()), Some(4003));
}

#[tokio::test]
async fn a_token_provider_is_called_for_every_attempt() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/ws", listener.local_addr().unwrap());
    let calls = Arc::new(Mutex::new(0u32));
    let counter = calls.clone();
    let builder = Client::builder(url)
        .backoff(fast_backoff())
        .token_provider(move || {
            let counter = counter.clone();
            async move {
                let mut calls = counter.lock().unwrap();
                *calls += 1;
                Ok::<_, std::convert::Infallible>(format!("t{calls}"))
            }
        });
    let client = builder.start();
    let (mut ws, uri, _) = accept(&listener).await;
    assert_eq!(uri, "/ws?token=t1");
    ws.close(Some(CloseFrame {
        code: 1011.into(),
        reason: "oops".into(),
    }))
    .await
    .unwrap();
    let (mut ws, uri, _) = accept(&listener).await;
    assert_eq!(uri, "/ws?token=t2");
    send(&mut ws, connected(0)).await;
    let mut states = client.state_changes();
    timeout(WAIT, states.wait_for(|s| *s == State::Connected))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(*calls.lock().unwrap(), 2);
    client.close().await;
}

#[tokio::test]
async fn a_built_client_waits_for_start_and_its_handlers_hear_the_first_frames() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/ws", listener.local_addr().unwrap());
    let client = Client::builder(url).token("jwt.x").build();
    // Not started: nobody knocks.
    assert!(
        timeout(Duration::from_millis(200), listener.accept())
            .await
            .is_err(),
        "a built client connected before start"
    );
    assert_eq!(client.state(), State::Idle);

    let (notes_tx, mut notes) = mpsc::unbounded_channel();
    client.on::<Notification>(move |n| {
        let _ = notes_tx.send(n.message);
    });
    client.start();
    client.start(); // a second start changes nothing
    let (mut ws, _, _) = accept(&listener).await;
    // The inbox right behind `connected`, in one burst.
    send(&mut ws, connected(0)).await;
    send(&mut ws, notification(1, "first")).await;
    send(&mut ws, notification(2, "second")).await;
    for expected in ["first", "second"] {
        let got = timeout(WAIT, notes.recv()).await.unwrap().unwrap();
        assert_eq!(got, expected);
    }
    client.close().await;
}

/// The next rpc frame from the client, skipping others (restored subscribes): id, method.
async fn next_rpc(ws: &mut Peer) -> (u64, String, serde_json::Value) {
    loop {
        let frame = next_frame(ws).await;
        if let ClientMessage::Rpc(rpc) = frame.message {
            return (frame.id.unwrap(), rpc.method, rpc.data);
        }
    }
}

#[tokio::test]
async fn an_rpc_is_answered_and_one_in_flight_at_a_drop_fails_without_a_resend() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/ws", listener.local_addr().unwrap());
    let connecting = tokio::spawn(
        Client::builder(url)
            .token("t")
            .backoff(fast_backoff())
            .connect(),
    );
    let (mut ws, _, _) = accept(&listener).await;
    send(&mut ws, connected(0)).await;
    let client = timeout(WAIT, connecting).await.unwrap().unwrap().unwrap();

    let calling = tokio::spawn({
        let client = client.clone();
        async move { client.rpc("echo", serde_json::json!({"n": 1})).await }
    });
    let (id, method, data) = next_rpc(&mut ws).await;
    assert_eq!(
        (method.as_str(), data),
        ("echo", serde_json::json!({"n": 1}))
    );
    send(
        &mut ws,
        format!(
            r#"{{"type":"reply","id":{id},"data":{{"kind":"rpc","data":{{"n":1,"echoed":true}}}}}}"#
        ),
    )
    .await;
    let answer = timeout(WAIT, calling).await.unwrap().unwrap().unwrap();
    assert_eq!(answer, serde_json::json!({"n": 1, "echoed": true}));

    // A call in flight when the server goes away fails at once, typed and retryable.
    let calling = tokio::spawn({
        let client = client.clone();
        async move {
            client
                .rpc("charge_card", serde_json::json!({"cents": 100}))
                .await
        }
    });
    let (_, method, _) = next_rpc(&mut ws).await;
    assert_eq!(method, "charge_card");
    let frame = CloseFrame {
        code: 1012.into(),
        reason: "restart".into(),
    };
    ws.close(Some(frame)).await.unwrap();
    let error = timeout(WAIT, calling).await.unwrap().unwrap().unwrap_err();
    assert!(
        matches!(&error, ClientError::Disconnected { code, .. } if code.as_u16() == 1012),
        "{error:?}"
    );
    assert_eq!(error.code().map(|c| c.is_retryable()), Some(true));

    // After the reconnect the first rpc on the wire is a new call: the old one is not resent.
    let (mut ws, _, _) = accept(&listener).await;
    send(&mut ws, connected(0)).await;
    let mut states = client.state_changes();
    timeout(WAIT, states.wait_for(|s| *s == State::Connected))
        .await
        .unwrap()
        .unwrap();
    let calling = tokio::spawn({
        let client = client.clone();
        async move { client.rpc("after", serde_json::Value::Null).await }
    });
    let (id, method, _) = next_rpc(&mut ws).await;
    assert_eq!(method, "after", "the dropped call was sent again");
    send(
        &mut ws,
        format!(
            r#"{{"type":"error","id":{id},"data":{{"code":4004,"message":"no such method"}}}}"#
        ),
    )
    .await;
    let error = timeout(WAIT, calling).await.unwrap().unwrap().unwrap_err();
    assert_eq!(
        error,
        ClientError::Server {
            code: 4004.into(),
            message: "no such method".into()
        }
    );
    client.close().await;
}
