//! A bot on the native Rust client: it joins a channel and answers every chat message that
//! says "ping" with a "pong".

use tidings_client::{Client, ClientError, Subscription};
use tidings_protocol::ChatMessage;

/// The bot's answer to a message, if it has one: "pong" to anything mentioning "ping".
/// Its own "pong" mentions no ping, so it never answers itself.
pub fn answer(message: &ChatMessage) -> Option<ChatMessage> {
    let pinged = message.content.to_lowercase().contains("ping");
    pinged.then(|| ChatMessage {
        id: format!("pong-{}", message.id),
        content: "pong".to_owned(),
        metadata: None,
    })
}

/// Joins `channel` and answers its pings until the client is closed. The subscription is
/// restored by the client after every reconnect, and with it the answers.
pub async fn run(client: &Client, channel: &str) -> Result<Subscription, ClientError> {
    let room = client.subscription(channel);
    let replies = room.clone();
    // Registered before subscribing, so no message slips in between.
    room.on::<ChatMessage>(move |message| {
        let Some(reply) = answer(&message) else {
            return;
        };
        println!("{:?} -> {:?}", message.content, reply.content);
        // Handlers run on the client's task, which must keep reading: publish from another.
        let room = replies.clone();
        tokio::spawn(async move {
            if let Err(e) = room.publish(&reply).await {
                eprintln!("could not answer {}: {e}", message.id);
            }
        });
    });
    room.subscribe().await?;
    Ok(room)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chat(content: &str) -> ChatMessage {
        ChatMessage {
            id: "m1".to_owned(),
            content: content.to_owned(),
            metadata: None,
        }
    }

    #[test]
    fn answers_pings_only() {
        let reply = answer(&chat("Ping, anyone?")).map(|m| (m.id, m.content));
        assert_eq!(reply, Some(("pong-m1".to_owned(), "pong".to_owned())));
        assert_eq!(answer(&chat("hello")), None);
        assert_eq!(answer(&chat("pong")), None);
    }
}
