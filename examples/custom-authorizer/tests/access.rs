//! The support desk on 127.0.0.1: participants join their ticket, others are refused.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    missing_docs
)]

use std::future::IntoFuture;
use std::net::SocketAddr;
use std::time::Duration;

use example_custom_authorizer::{Tickets, app};
use futures_util::{SinkExt, StreamExt};
use tidings_protocol::{ChatMessage, Code, ServerFrame, ServerMessage};
use tidings_server::{Tidings, mint_token};
use tokio_tungstenite::tungstenite::Message;

const SECRET: &str = "example-secret";

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn start() -> (Tidings, SocketAddr) {
    let (tidings, router) = app(SECRET, Tickets::demo()).unwrap();
    let listener = tidings_server::listen("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = listener.local_addr().unwrap();
    let serve = tidings_server::serve(listener, tidings.clone())
        .with_router(router)
        .with_shutdown(std::future::pending());
    tokio::spawn(serve.into_future());
    (tidings, addr)
}

async fn open(addr: SocketAddr, path: &str, user: &str) -> Socket {
    let token = mint_token(SECRET, user, 60).unwrap();
    let url = format!("ws://{addr}{path}?token={token}");
    tokio_tungstenite::connect_async(url).await.unwrap().0
}

/// The next frame, or the close code as `Err`.
async fn next(ws: &mut Socket) -> Result<ServerFrame, u16> {
    loop {
        let wait = tokio::time::timeout(Duration::from_secs(5), ws.next());
        match wait.await.expect("a frame within 5 s") {
            Some(Ok(Message::Text(text))) => return Ok(ServerFrame::decode(&text).unwrap()),
            Some(Ok(Message::Close(frame))) => return Err(frame.map_or(1005, |f| f.code.into())),
            Some(Ok(_)) => continue,
            other => panic!("connection dropped: {other:?}"),
        }
    }
}

#[tokio::test]
async fn a_participant_joins_the_ticket_of_the_path() {
    let (tidings, addr) = start().await;
    let mut alice = open(addr, "/ws/chat/107", "alice").await;
    let ServerMessage::Connected(connected) = next(&mut alice).await.unwrap().message else {
        panic!("expected connected");
    };
    let joined: Vec<_> = connected
        .subscriptions
        .iter()
        .map(|s| s.channel.as_str())
        .collect();
    assert_eq!(joined, ["user:alice", "ticket:107"]);

    let hello = ChatMessage {
        id: "m1".into(),
        content: "hello".into(),
        metadata: None,
    };
    tidings.publish("ticket:107", &hello).await.unwrap();
    let ServerMessage::Message(message) = next(&mut alice).await.unwrap().message else {
        panic!("expected the ticket's message");
    };
    assert_eq!(message.channel, "ticket:107");
    assert_eq!(
        message.event.decode::<ChatMessage>().unwrap().unwrap(),
        hello
    );
}

#[tokio::test]
async fn others_are_closed_with_4003_or_refused_the_subscription() {
    let (_tidings, addr) = start().await;
    let mut carol = open(addr, "/ws/chat/107", "carol").await;
    assert_eq!(next(&mut carol).await.err(), Some(4003));

    // On the plain endpoint the same check refuses a subscribe request.
    let mut carol = open(addr, "/ws", "carol").await;
    assert!(matches!(
        next(&mut carol).await.unwrap().message,
        ServerMessage::Connected(_)
    ));
    let subscribe = r#"{"type":"subscribe","id":1,"data":{"channel":"ticket:107"}}"#;
    carol.send(Message::text(subscribe)).await.unwrap();
    let ServerMessage::Error(error) = next(&mut carol).await.unwrap().message else {
        panic!("expected an error reply");
    };
    assert_eq!(error.code, Code::Forbidden);
    let own = r#"{"type":"subscribe","id":2,"data":{"channel":"ticket:108"}}"#;
    carol.send(Message::text(own)).await.unwrap();
    assert_eq!(next(&mut carol).await.unwrap().kind(), "reply");
}
