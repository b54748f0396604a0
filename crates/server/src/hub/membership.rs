//! Joining and leaving channels: subscribe with recovery, unsubscribe, presence (members,
//! `user_joined` / `user_left`) and typing.

use std::sync::Arc;

use axum::extract::ws::Utf8Bytes;
use tidings_protocol::messages::{
    ChannelPosition, Member, PresenceChange, Recover, Reply, TypingNotice,
};
use tidings_protocol::{ServerFrame, ServerMessage};

use super::Hub;
use super::channel::{Conn, Subscriber};
use crate::outbox::Outgoing;
use crate::store::{Position, StoreError};

/// How a subscribe was asked for.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Asked {
    /// By a `subscribe` request; a `reply` with this id goes first.
    Request(Option<u64>),
    /// By the server (personal or route-bound channel): no reply.
    Automatically,
}

impl Hub {
    /// The channel's epoch and latest offset.
    pub(crate) async fn position(&self, channel: &str) -> Result<Position, StoreError> {
        self.stores.publications.position(channel).await
    }

    /// Joins `conn` to `channel`, queueing (in this order) the reply, any recovered
    /// publications and then live ones. Presence is announced on the user's first connection.
    pub(crate) async fn subscribe(
        &self,
        conn: &Arc<Conn>,
        channel: &str,
        events: Option<Vec<String>>,
        recover: Option<Recover>,
        asked: Asked,
    ) -> Result<ChannelPosition, StoreError> {
        let events: Option<Box<[Box<str>]>> =
            events.map(|list| list.into_iter().map(String::into_boxed_str).collect());
        let mut state = self.lock(channel).await;
        let store = &self.stores.publications;
        // What this node fanned out so far: publications committed after it are still
        // pending here and reach the new subscriber through the fan-out, not the recovery.
        let through = self.delivered(&mut state, channel).await?;
        let (position, recovered, mut missed) = match &recover {
            Some(from) => {
                let recovery = store.recover(channel, &from.epoch, from.offset).await?;
                let recovered = recovery.recovered && *recovery.position.epoch == *through.epoch;
                (through, Some(recovered), recovery.publications)
            }
            None => (through, None, Vec::new()),
        };
        missed.retain(|p| p.offset.is_some_and(|o| o <= position.offset));
        if let Asked::Request(id) = asked {
            // Not recovered: tell the client where stored history starts.
            let history_start = match recovered {
                Some(false) => store
                    .history(channel, Some(0), None, 1)
                    .await?
                    .first()
                    .and_then(|p| p.offset),
                _ => None,
            };
            let reply = Reply::Subscribe {
                channel: channel.to_owned(),
                epoch: position.epoch.to_string(),
                offset: position.offset,
                recovered,
                missed: recovered.map(|_| missed.len() as u64),
                history_start,
            };
            conn.send(&ServerFrame {
                id,
                message: ServerMessage::Reply(reply),
            });
        }
        let subscriber = Subscriber {
            conn: conn.clone(),
            events,
        };
        for publication in &missed {
            if subscriber.wants(publication.event.kind()) {
                conn.outbox.push(Outgoing::reliable(publication.frame()));
            }
        }
        if state.subscribers.insert(conn.id, subscriber).is_none() {
            let count = state.members.entry(conn.user_id.clone()).or_insert(0);
            *count += 1;
            if *count == 1 {
                if state.members.len() <= self.presence_events_max_members {
                    state.tell_others(&conn.user_id, &presence_frame(true, channel, &conn.user_id));
                }
                self.announce(channel, &conn.user_id, true).await;
            }
        }
        Ok(ChannelPosition {
            channel: channel.to_owned(),
            epoch: position.epoch.to_string(),
            offset: position.offset,
        })
    }

    /// Removes `conn` from `channel`; false when it was not subscribed.
    pub(crate) async fn unsubscribe(&self, conn: &Conn, channel: &str) -> bool {
        let mut state = self.lock(channel).await;
        if state.subscribers.remove(&conn.id).is_none() {
            return false;
        }
        let last = match state.members.get_mut(&conn.user_id) {
            Some(count) if *count > 1 => {
                *count -= 1;
                false
            }
            _ => true,
        };
        if last {
            state.members.remove(&conn.user_id);
            // Counted as on join: the leaver is no longer among the members, so compare
            // with the size the channel had while it was (members + 1).
            if state.members.len() < self.presence_events_max_members {
                state.tell_others(
                    &conn.user_id,
                    &presence_frame(false, channel, &conn.user_id),
                );
            }
            self.announce(channel, &conn.user_id, false).await;
        }
        true
    }

    /// Tells webhooks and other nodes about a first join or last leave on this node.
    async fn announce(&self, channel: &str, user_id: &str, joined: bool) {
        let kind = if joined {
            "channel.joined"
        } else {
            "channel.left"
        };
        let data = serde_json::json!({ "channel": channel, "user_id": user_id });
        self.emit(kind, Some(channel), data);
        if let Some(broker) = &self.broker
            && let Err(e) = broker.presence(channel, user_id, joined).await
        {
            tracing::warn!(channel, user_id, error = %e, "broker presence failed");
        }
    }

    /// Sends `typing` to the channel's other members; false when `conn` is not subscribed.
    pub(crate) async fn typing(&self, conn: &Conn, channel: &str) -> bool {
        let state = self.lock(channel).await;
        if !state.subscribers.contains_key(&conn.id) {
            return false;
        }
        let frame = ServerFrame::push(ServerMessage::Typing(TypingNotice {
            channel: channel.to_owned(),
            user_id: conn.user_id.to_string(),
        }));
        let key = format!("typing\u{0}{channel}\u{0}{}", conn.user_id);
        let item = Outgoing::ephemeral(Utf8Bytes::from(frame.encode()), Arc::from(key));
        state.tell_others(&conn.user_id, &item);
        true
    }

    /// The channel's members (users with at least one connection in it on this node).
    pub(crate) async fn members(&self, channel: &str) -> Vec<Member> {
        let state = self.lock(channel).await;
        let mut members: Vec<Member> = state
            .members
            .iter()
            .map(|(user, connections)| Member {
                user_id: user.to_string(),
                connections: *connections,
            })
            .collect();
        drop(state);
        members.sort_by(|a, b| a.user_id.cmp(&b.user_id));
        members
    }
}

fn presence_frame(joined: bool, channel: &str, user_id: &str) -> Outgoing {
    let change = PresenceChange {
        channel: channel.to_owned(),
        user_id: user_id.to_owned(),
    };
    let message = if joined {
        ServerMessage::UserJoined(change)
    } else {
        ServerMessage::UserLeft(change)
    };
    Outgoing::reliable(Utf8Bytes::from(ServerFrame::push(message).encode()))
}
