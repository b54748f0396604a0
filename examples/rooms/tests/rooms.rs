//! Seed 003's checklist from outside: the app on 127.0.0.1, real WebSocket clients speaking
//! JSON frames, and plain HTTP for the app's routes. The jobs are also called directly, as
//! a worker would, to check the delivery counts they return.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    missing_docs
)]

use std::collections::VecDeque;
use std::future::IntoFuture;
use std::net::SocketAddr;
use std::time::Duration;

use example_rooms::jobs::{self, Reached, Upload};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tidings_protocol::{Level, Notification};
use tidings_server::{Tidings, mint_token};
use tokio_tungstenite::tungstenite::Message;

const SECRET: &str = "example-secret";

async fn start() -> (Tidings, SocketAddr) {
    let (tidings, router) = example_rooms::app(SECRET).unwrap();
    let listener = tidings_server::listen("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = listener.local_addr().unwrap();
    let serve = tidings_server::serve(listener, tidings.clone())
        .with_router(router)
        .with_shutdown(std::future::pending());
    tokio::spawn(serve.into_future());
    (tidings, addr)
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A connected user: `/api/v1/ws?token=…`, past its `connected` frame.
struct Client {
    ws: Socket,
    last_id: u64,
    /// Frames that arrived while a call waited for its answer.
    early: VecDeque<Value>,
}

impl Client {
    async fn connect(addr: SocketAddr, user: &str) -> Client {
        let token = mint_token(SECRET, user, 60).unwrap();
        let url = format!("ws://{addr}/api/v1/ws?token={token}");
        let mut client = Client {
            ws: tokio_tungstenite::connect_async(url).await.unwrap().0,
            last_id: 0,
            early: VecDeque::new(),
        };
        let connected = client.next_any().await;
        assert_eq!(connected["type"], "connected", "{connected}");
        assert_eq!(connected["data"]["user_id"], user);
        // The personal room, joined without asking.
        let personal = &connected["data"]["subscriptions"][0]["channel"];
        assert_eq!(*personal, format!("user:{user}"));
        client
    }

    /// The next frame, presence changes included (5 s at most).
    async fn next_any(&mut self) -> Value {
        if let Some(frame) = self.early.pop_front() {
            return frame;
        }
        loop {
            let wait = tokio::time::timeout(Duration::from_secs(5), self.ws.next());
            match wait.await.expect("a frame within 5 s") {
                Some(Ok(Message::Text(text))) => return serde_json::from_str(&text).unwrap(),
                Some(Ok(Message::Close(frame))) => {
                    return json!({ "closed": frame.map_or(1005, |f| u16::from(f.code)) });
                }
                Some(Ok(_)) => continue,
                other => panic!("connection dropped: {other:?}"),
            }
        }
    }

    /// The next frame that is not a presence change (`user_joined`, `user_left`).
    async fn next(&mut self) -> Value {
        loop {
            let frame = self.next_any().await;
            if frame["type"] != "user_joined" && frame["type"] != "user_left" {
                return frame;
            }
        }
    }

    /// Sends a request and returns its reply or error; what comes before it (a room's
    /// message may overtake the reply to its publish) stays queued for `next`.
    async fn call(&mut self, kind: &str, data: Value) -> Value {
        self.last_id += 1;
        let frame = json!({ "type": kind, "id": self.last_id, "data": data });
        self.ws
            .send(Message::text(frame.to_string()))
            .await
            .unwrap();
        let queued = self.early.len();
        loop {
            let wait = tokio::time::timeout(Duration::from_secs(5), self.ws.next());
            let frame: Value = match wait.await.expect("an answer within 5 s") {
                Some(Ok(Message::Text(text))) => serde_json::from_str(&text).unwrap(),
                Some(Ok(_)) => continue,
                other => panic!("no answer to {kind}: {other:?}"),
            };
            if frame["id"] == self.last_id {
                return frame;
            }
            self.early.push_back(frame);
            assert!(self.early.len() < queued + 100, "no answer to {kind}");
        }
    }

    async fn join(&mut self, room: &str) {
        let reply = self.call("subscribe", json!({ "channel": room })).await;
        assert_eq!(reply["data"]["kind"], "subscribe", "{reply}");
    }

    /// Nothing else is waiting: a ping's pong is the next frame.
    async fn nothing_pending(&mut self) {
        self.ws
            .send(Message::text(r#"{"type":"ping"}"#))
            .await
            .unwrap();
        let frame = self.next().await;
        assert_eq!(frame["type"], "pong", "{frame}");
    }

    /// The next frame, which must be a message on `channel`; returns it (`data`).
    async fn message_on(&mut self, channel: &str) -> Value {
        let frame = self.next().await;
        assert_eq!(frame["type"], "message", "{frame}");
        assert_eq!(frame["data"]["channel"], channel, "{frame}");
        frame["data"].clone()
    }
}

async fn get(addr: SocketAddr, path: &str) -> Value {
    let response = reqwest::get(format!("http://{addr}{path}")).await.unwrap();
    assert_eq!(response.status(), 200, "GET {path}");
    serde_json::from_str(&response.text().await.unwrap()).unwrap()
}

async fn post(addr: SocketAddr, path: &str, body: Value) -> u16 {
    let response = reqwest::Client::new()
        .post(format!("http://{addr}{path}"))
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    response.status().as_u16()
}

fn member_ids(members: &Value) -> Vec<String> {
    let list = members["members"].as_array().unwrap();
    list.iter()
        .map(|m| m["user_id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn rooms_join_talk_and_leave() {
    let (_tidings, addr) = start().await;
    let mut alice = Client::connect(addr, "alice").await;
    let mut bob = Client::connect(addr, "bob").await;

    // join_room
    alice.join("room:project_123").await;
    bob.join("room:project_123").await;
    let joined = alice.next_any().await;
    assert_eq!(joined["type"], "user_joined", "{joined}");
    assert_eq!(joined["data"]["user_id"], "bob");
    let members = get(addr, "/api/v1/ws/rooms/project_123/members").await;
    assert_eq!(member_ids(&members), ["alice", "bob"]);

    // room_message: every member hears it, with its sender.
    let hello =
        json!({ "type": "room_message", "data": { "message": "Hello everyone in the project!" } });
    let channel = json!({ "channel": "room:project_123", "event": hello });
    let reply = alice.call("publish", channel.clone()).await;
    assert_eq!(reply["data"]["delivered"], 2, "{reply}");
    for client in [&mut alice, &mut bob] {
        let message = client.message_on("room:project_123").await;
        assert_eq!(message["sender"], "alice");
        assert_eq!(message["event"], hello);
    }

    // leave_room: bob hears nothing more from the room.
    let left = bob
        .call("unsubscribe", json!({ "channel": "room:project_123" }))
        .await;
    assert_eq!(left["data"]["kind"], "unsubscribe", "{left}");
    let members = get(addr, "/api/v1/ws/rooms/project_123/members").await;
    assert_eq!(member_ids(&members), ["alice"]);
    let reply = alice.call("publish", channel).await;
    assert_eq!(reply["data"]["delivered"], 1, "{reply}");
    alice.message_on("room:project_123").await;
    bob.nothing_pending().await;

    // An empty room has no members.
    let members = get(addr, "/api/v1/ws/rooms/nobody_here/members").await;
    assert_eq!(members["members"], json!([]));
}

#[tokio::test]
async fn background_jobs_notify_users_rooms_and_everyone_and_count() {
    let (tidings, addr) = start().await;
    let mut alice_tab1 = Client::connect(addr, "alice").await;
    let mut alice_tab2 = Client::connect(addr, "alice").await;
    let mut bob = Client::connect(addr, "bob").await;
    for client in [&mut alice_tab1, &mut bob] {
        client.join("room:project_7").await;
    }

    // notify_user (both of alice's tabs) and notify_room (alice's first tab and bob).
    let upload = Upload {
        user_id: "alice".into(),
        filename: "data.csv".into(),
    };
    let reached = jobs::process_upload(&tidings, 7, &upload).await.unwrap();
    assert_eq!(reached, Reached { user: 2, room: 2 });
    for tab in [&mut alice_tab1, &mut alice_tab2] {
        let personal = tab.message_on("user:alice").await;
        let note = &personal["event"];
        assert_eq!(note["type"], "notification");
        assert_eq!(note["data"]["level"], "success");
        assert_eq!(
            note["data"]["message"],
            "File 'data.csv' uploaded successfully!"
        );
        assert_eq!(note["data"]["data"]["project_id"], 7);
    }
    for client in [&mut alice_tab1, &mut bob] {
        let update = client.message_on("room:project_7").await;
        assert_eq!(update["event"]["data"]["message"], "alice added data.csv");
        assert_eq!(update["event"]["data"]["data"]["action"], "project_update");
    }
    alice_tab2.nothing_pending().await;

    // The same job through the app's route, in a tokio task; a failure is an error notification.
    let path = "/api/v1/projects/7/upload";
    let bad = json!({ "user_id": "alice", "filename": "setup.exe" });
    assert_eq!(post(addr, path, bad).await, 202);
    let failed = alice_tab2.message_on("user:alice").await;
    assert_eq!(failed["event"]["data"]["level"], "error");
    let text = failed["event"]["data"]["message"].as_str().unwrap();
    assert!(text.starts_with("Processing failed: setup.exe"), "{text}");
    alice_tab1.message_on("user:alice").await;
    bob.nothing_pending().await; // no room update for a failed upload

    // broadcast: every connection, whatever it joined.
    let maintenance = Notification {
        message: "System maintenance in 5 minutes".into(),
        level: Level::Warning,
        ..Default::default()
    };
    assert_eq!(jobs::announce(&tidings, &maintenance).unwrap(), 3);
    let announcement = json!({ "message": "Back in 5", "level": "info" });
    assert_eq!(post(addr, "/api/v1/announcements", announcement).await, 202);
    for client in [&mut alice_tab1, &mut alice_tab2, &mut bob] {
        let first = client.message_on("broadcast").await;
        assert_eq!(first["event"]["data"]["level"], "warning");
        let second = client.message_on("broadcast").await;
        assert_eq!(second["event"]["data"]["message"], "Back in 5");
    }
}

#[tokio::test]
async fn an_offline_user_gets_the_notification_on_connecting() {
    // The seed's Example 4 saves a notification for later when the user is offline;
    // notify_user stores it in the user's inbox by itself.
    let (tidings, addr) = start().await;
    assert!(!tidings.is_user_connected("carol"));
    let note = Notification {
        message: "You have a new message".into(),
        ..Default::default()
    };
    assert_eq!(tidings.notify_user("carol", &note).await.unwrap(), 0);
    let mut carol = Client::connect(addr, "carol").await;
    let later = carol.message_on("user:carol").await;
    assert_eq!(later["event"]["data"]["message"], "You have a new message");
}

#[tokio::test]
async fn the_apps_routes_answer_who_is_connected() {
    let (_tidings, addr) = start().await;
    let offline = get(addr, "/api/v1/ws/users/alice").await;
    assert_eq!(
        offline,
        json!({ "user_id": "alice", "connected": false, "connections": 0 })
    );

    let mut alice = Client::connect(addr, "alice").await;
    alice.join("room:standup").await;
    let _alice_again = Client::connect(addr, "alice").await;
    let _bob = Client::connect(addr, "bob").await;
    let online = get(addr, "/api/v1/ws/users/alice").await;
    assert_eq!(
        online,
        json!({ "user_id": "alice", "connected": true, "connections": 2 })
    );
    let users = get(addr, "/api/v1/ws/users").await;
    assert_eq!(users, json!({ "users": ["alice", "bob"] }));

    drop(alice);
    let mut status = Value::Null;
    for _ in 0..100 {
        status = get(addr, "/api/v1/ws/users/alice").await;
        if status["connections"] == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(status["connections"], 1, "{status}");
    // A closed connection leaves its rooms.
    let members = get(addr, "/api/v1/ws/rooms/standup/members").await;
    assert_eq!(members["members"], json!([]));
}

#[tokio::test]
async fn clients_broadcast_and_send_text() {
    let (_tidings, addr) = start().await;
    let mut alice = Client::connect(addr, "alice").await;
    let mut bob = Client::connect(addr, "bob").await;

    let hi = json!({ "method": "broadcast", "data": { "message": "Hi all" } });
    let reply = alice.call("rpc", hi).await;
    assert_eq!(reply["data"]["data"], json!({ "delivered": 2 }), "{reply}");
    for client in [&mut alice, &mut bob] {
        let message = client.message_on("broadcast").await;
        assert_eq!(message["sender"], "alice");
        assert_eq!(
            message["event"],
            json!({ "type": "broadcast", "data": { "message": "Hi all" } })
        );
    }

    let text = json!({ "method": "text", "data": { "message": "hello" } });
    let reply = bob.call("rpc", text).await;
    assert_eq!(
        reply["data"]["data"],
        json!({ "type": "text", "message": "hello" })
    );
    let bad = bob
        .call("rpc", json!({ "method": "text", "data": "bare" }))
        .await;
    assert_eq!(bad["data"]["code"], 4400, "{bad}");
    let unknown = bob.call("rpc", json!({ "method": "dance" })).await;
    assert_eq!(unknown["data"]["code"], 4004, "{unknown}");
    alice.nothing_pending().await;
}

#[tokio::test]
async fn bad_tokens_other_peoples_rooms_and_other_channels_are_refused() {
    let (_tidings, addr) = start().await;
    let url = format!("ws://{addr}/api/v1/ws?token=not-a-jwt");
    let (ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    let mut stranger = Client {
        ws,
        last_id: 0,
        early: VecDeque::new(),
    };
    assert_eq!(stranger.next().await, json!({ "closed": 4001 }));

    let mut alice = Client::connect(addr, "alice").await;
    let foreign = alice
        .call("subscribe", json!({ "channel": "user:bob" }))
        .await;
    assert_eq!(foreign["data"]["code"], 4003, "{foreign}");
    let lobby = alice.call("subscribe", json!({ "channel": "lobby" })).await;
    assert_eq!(lobby["data"]["code"], 4003, "{lobby}");
    let everyone = json!({ "channel": "broadcast", "event": { "type": "x", "data": {} } });
    let reserved = alice.call("publish", everyone).await;
    assert_eq!(reserved["data"]["code"], 4003, "{reserved}");
}
