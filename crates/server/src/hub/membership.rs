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
use crate::broker::ClusterMessage;
use crate::outbox::Outgoing;
use crate::store::{Position, StoreError};

/// Publications read per page of a replay.
const REPLAY_PAGE: usize = 256;
/// The most publications queued under the channel's lock at the end of a replay.
const LAST_PAGE: usize = 32;

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
    ///
    /// Recovery is a replay read from the store in pages and fed to the connection only as
    /// fast as it drains its queue, so a backlog of any size arrives without growing memory
    /// or closing the client with 4009. The lock is taken only for the last few
    /// publications and the registration, so that no live publication slips between.
    pub(crate) async fn subscribe(
        &self,
        conn: &Arc<Conn>,
        channel: &str,
        events: Option<Vec<String>>,
        recover: Option<Recover>,
        asked: Asked,
    ) -> Result<ChannelPosition, StoreError> {
        let subscriber = Subscriber {
            conn: conn.clone(),
            events: events.map(|list| list.into_iter().map(String::into_boxed_str).collect()),
        };
        // What this node fanned out so far: publications committed after it are still
        // pending here and reach the new subscriber through the fan-out, not the replay.
        let (mut state, position) = self.lock_positioned(channel).await?;
        // The recovery limit is for what clients ask; an automatic subscription starts where
        // the session chose (a device's inbox, already cut to the limit).
        let limit = match asked {
            Asked::Request(_) => self.recovery_limit,
            Asked::Automatically => u64::MAX,
        };
        let recovered = match &recover {
            Some(from) => Some(self.recoverable(channel, from, &position, limit).await?),
            None => None,
        };
        if let Asked::Request(id) = asked {
            self.reply_subscribe(conn, id, channel, &position, recover.as_ref(), recovered)
                .await?;
        }
        let mut cursor = match (&recover, recovered) {
            (Some(from), Some(true)) => from.offset,
            _ => position.offset,
        };
        loop {
            // The lock was held or taken again with nothing pending unpositioned: known.
            let through = state
                .delivered
                .as_ref()
                .map_or(position.offset, |p| p.offset);
            if cursor >= through {
                break;
            }
            // Small remainders are queued under the lock, if the queue has room for them;
            // anything more is replayed without it, then the lock is taken again.
            let rest = self
                .stores
                .publications
                .history(
                    channel,
                    Some(cursor),
                    Some(through.saturating_add(1)),
                    LAST_PAGE,
                )
                .await?;
            let bytes: usize = rest.iter().map(|p| p.frame().len()).sum();
            let whole = rest.last().and_then(|p| p.offset) == Some(through);
            if whole && conn.outbox.fits_now(bytes) {
                for publication in &rest {
                    if subscriber.wants(publication.event.kind()) {
                        conn.outbox.push(Outgoing::reliable(publication.frame()));
                    }
                }
                break;
            }
            drop(state);
            cursor = self.replay(&subscriber, channel, cursor, through).await?;
            state = self.lock_positioned(channel).await?.0;
        }
        self.interested(&mut state, channel);
        if state.subscribers.insert(conn.id, subscriber).is_none() {
            let count = state.members.entry(conn.user_id.clone()).or_insert(0);
            *count += 1;
            let count = *count;
            let elsewhere = self.count_member(channel, &conn.user_id, count);
            if count == 1 && !elsewhere {
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
            recovered: None,
            history_start: None,
        })
    }

    /// Whether everything after `from` up to `through` is still stored (same epoch, within
    /// retention and `limit` publications).
    async fn recoverable(
        &self,
        channel: &str,
        from: &Recover,
        through: &Position,
        limit: u64,
    ) -> Result<bool, StoreError> {
        if *through.epoch != *from.epoch || from.offset > through.offset {
            return Ok(false);
        }
        let missed = through.offset - from.offset;
        if missed > limit {
            return Ok(false);
        }
        if missed == 0 {
            return Ok(true);
        }
        let next = from.offset + 1;
        let first = self
            .stores
            .publications
            .history(channel, Some(from.offset), Some(next + 1), 1)
            .await?;
        Ok(first.first().and_then(|p| p.offset) == Some(next))
    }

    /// Queues the `subscribe` reply; when not recovered, it says where stored history starts.
    async fn reply_subscribe(
        &self,
        conn: &Conn,
        id: Option<u64>,
        channel: &str,
        position: &Position,
        recover: Option<&Recover>,
        recovered: Option<bool>,
    ) -> Result<(), StoreError> {
        let history_start = match recovered {
            Some(false) => self
                .stores
                .publications
                .history(channel, Some(0), None, 1)
                .await?
                .first()
                .and_then(|p| p.offset),
            _ => None,
        };
        let missed = match (recover, recovered) {
            (Some(from), Some(true)) => Some(position.offset - from.offset),
            (_, Some(false)) => Some(0),
            _ => None,
        };
        let reply = Reply::Subscribe {
            channel: channel.to_owned(),
            epoch: position.epoch.to_string(),
            offset: position.offset,
            recovered,
            missed,
            history_start,
        };
        conn.send(&ServerFrame {
            id,
            message: ServerMessage::Reply(reply),
        });
        Ok(())
    }

    /// Feeds the stored publications after `cursor`, up to `until`, to the subscriber's
    /// connection a page at a time, waiting for room before each; returns where it stopped.
    async fn replay(
        &self,
        subscriber: &Subscriber,
        channel: &str,
        mut cursor: u64,
        until: u64,
    ) -> Result<u64, StoreError> {
        let outbox = &subscriber.conn.outbox;
        while cursor < until {
            let page = self
                .stores
                .publications
                .history(
                    channel,
                    Some(cursor),
                    Some(until.saturating_add(1)),
                    REPLAY_PAGE,
                )
                .await?;
            let Some(last) = page.last().and_then(|p| p.offset) else {
                // Pruned meanwhile: the client sees the gap in offsets and recovers anew.
                return Ok(until);
            };
            for publication in &page {
                let frame = publication.frame();
                if !outbox.room_for(frame.len()).await {
                    return Err(StoreError::Unavailable(
                        "the connection closed during a replay".into(),
                    ));
                }
                if subscriber.wants(publication.event.kind()) {
                    outbox.push(Outgoing::reliable(frame));
                }
            }
            cursor = last;
        }
        Ok(cursor)
    }

    /// Removes `conn` from `channel`; false when it was not subscribed.
    pub(crate) async fn unsubscribe(&self, conn: &Conn, channel: &str) -> bool {
        let mut state = self.lock(channel).await;
        if state.subscribers.remove(&conn.id).is_none() {
            return false;
        }
        let left = match state.members.get_mut(&conn.user_id) {
            Some(count) if *count > 1 => {
                *count -= 1;
                *count
            }
            _ => 0,
        };
        let elsewhere = self.count_member(channel, &conn.user_id, left);
        if left == 0 {
            state.members.remove(&conn.user_id);
        }
        if left == 0 && !elsewhere {
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

    /// Records the user's connections in `channel` on this node for the other nodes;
    /// returns whether they have the user in the channel too.
    fn count_member(&self, channel: &str, user: &Arc<str>, connections: u32) -> bool {
        self.cluster
            .as_ref()
            .is_some_and(|cluster| cluster.set_own_member(channel, user, connections))
    }

    /// Tells this node's members of a channel that a user joined it first or left it last
    /// on another node (or with a node gone silent); `announce` also tells webhooks.
    pub(crate) async fn tell_presence(
        &self,
        channel: &str,
        user: &str,
        joined: bool,
        announce: bool,
    ) {
        if self.channels.contains_key(channel) {
            let state = self.lock(channel).await;
            if !state.subscribers.is_empty()
                && state.members.len() < self.presence_events_max_members
            {
                state.tell_others(user, &presence_frame(joined, channel, user));
            }
        }
        if announce {
            self.announce(channel, user, joined).await;
        }
    }

    /// Tells webhooks about a first join or last leave.
    async fn announce(&self, channel: &str, user_id: &str, joined: bool) {
        let kind = if joined {
            "channel.joined"
        } else {
            "channel.left"
        };
        let data = serde_json::json!({ "channel": channel, "user_id": user_id });
        self.emit(kind, Some(channel), data);
    }

    /// Sends `typing` to the channel's other members; false when `conn` is not subscribed.
    pub(crate) async fn typing(&self, conn: &Conn, channel: &str) -> bool {
        let state = self.lock(channel).await;
        if !state.subscribers.contains_key(&conn.id) {
            return false;
        }
        tell_typing(&state, channel, &conn.user_id);
        drop(state);
        if let Some(broker) = &self.broker {
            broker.tell_all(ClusterMessage::Typing {
                channel: channel.to_owned(),
                user_id: conn.user_id.to_string(),
            });
        }
        true
    }

    /// `typing` from a member on another node, to this node's members of the channel.
    pub(crate) async fn typing_remote(&self, channel: &str, user_id: &str) {
        let state = self.lock(channel).await;
        if !state.subscribers.is_empty() {
            tell_typing(&state, channel, user_id);
        }
    }

    /// The channel's members (users with at least one connection in it, on any node with
    /// a broker).
    pub(crate) async fn members(&self, channel: &str) -> Vec<Member> {
        let mut counts = self
            .cluster
            .as_ref()
            .map(|cluster| cluster.members_elsewhere(channel))
            .unwrap_or_default();
        let state = self.lock(channel).await;
        for (user, connections) in &state.members {
            let count = counts.entry(user.to_string()).or_default();
            *count = count.saturating_add(*connections);
        }
        drop(state);
        let mut members: Vec<Member> = counts
            .into_iter()
            .map(|(user_id, connections)| Member {
                user_id,
                connections,
            })
            .collect();
        members.sort_by(|a, b| a.user_id.cmp(&b.user_id));
        members
    }
}

/// Queues `typing` for the channel's members other than `user_id` (coalesced per user).
fn tell_typing(state: &super::channel::ChannelState, channel: &str, user_id: &str) {
    let frame = ServerFrame::push(ServerMessage::Typing(TypingNotice {
        channel: channel.to_owned(),
        user_id: user_id.to_owned(),
    }));
    let key = format!("typing\u{0}{channel}\u{0}{user_id}");
    let item = Outgoing::ephemeral(Utf8Bytes::from(frame.encode()), Arc::from(key));
    state.tell_others(user_id, &item);
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
