//! The bot against a real node on 127.0.0.1: a user's ping gets the bot's pong.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    missing_docs
)]

use std::future::IntoFuture;
use std::time::Duration;

use tidings_client::Client;
use tidings_protocol::ChatMessage;
use tidings_server::{Tidings, mint_token};
use tokio::sync::mpsc;

const SECRET: &str = "example-secret";

#[tokio::test]
async fn the_bot_answers_ping_with_pong() {
    let tidings = Tidings::builder().jwt_secret(SECRET).build().unwrap();
    let listener = tidings_server::listen("127.0.0.1:0".parse().unwrap()).unwrap();
    let url = format!("ws://{}/ws", listener.local_addr().unwrap());
    let serve = tidings_server::serve(listener, tidings).with_shutdown(std::future::pending());
    tokio::spawn(serve.into_future());
    let connect = |user: &str| {
        let token = mint_token(SECRET, user, 60).unwrap();
        Client::builder(url.clone()).token(token).connect()
    };

    let bot = connect("bot").await.unwrap();
    example_native_client::run(&bot, "lobby").await.unwrap();

    let alice = connect("alice").await.unwrap();
    let lobby = alice.subscription("lobby");
    let (heard, mut chat) = mpsc::unbounded_channel();
    lobby.on_publication(move |publication| {
        let message = publication.event.decode::<ChatMessage>().unwrap().unwrap();
        let sender = publication.sender.clone().unwrap_or_default();
        let _ = heard.send(format!("{sender} {} {}", message.id, message.content));
    });
    lobby.subscribe().await.unwrap();
    let say = async |id: &str, content: &str| {
        let message = ChatMessage {
            id: id.into(),
            content: content.into(),
            metadata: None,
        };
        lobby.publish(&message).await.unwrap();
    };
    let mut next = async || {
        let wait = tokio::time::timeout(Duration::from_secs(10), chat.recv());
        wait.await.expect("a chat message within 10 s").unwrap()
    };

    say("a1", "ping").await;
    assert_eq!(next().await, "alice a1 ping");
    assert_eq!(next().await, "bot pong-a1 pong");
    // The bot answers neither "hello" nor its own "pong": its next message answers a3.
    say("a2", "hello").await;
    say("a3", "PING again").await;
    assert_eq!(next().await, "alice a2 hello");
    assert_eq!(next().await, "alice a3 PING again");
    assert_eq!(next().await, "bot pong-a3 pong");
    bot.close().await;
    alice.close().await;
}
