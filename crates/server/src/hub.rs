//! The hub: channels, their subscribers and members, and fan-out of publications.
//!
//! Each channel has one async lock that orders everything that happens to it: storing a
//! publication and queueing it for subscribers, and a subscriber's join with its recovery.
//! So a recovering subscriber gets the missed publications, then the live ones, with no gap
//! and no duplicate. Fan-out only pushes shared, pre-encoded frames into connection
//! outboxes; no lock is ever held while writing to a socket.
//!
//! Nothing here assumes one process holds every connection of a user: counts returned are
//! "connections reached on this node", and presence is per node until a cross-node broker
//! carries it.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::ws::Utf8Bytes;
use dashmap::DashMap;
use tidings_protocol::messages::{
    ChannelPosition, Member, PresenceChange, Recover, Reply, TypingNotice,
};
use tidings_protocol::{BROADCAST_CHANNEL, Code, Delivery, RawEvent, ServerFrame, ServerMessage};
use tokio::sync::{Mutex, OwnedMutexGuard};

use crate::broker::Broker;
use crate::outbox::{Outbox, Outgoing, Pushed};
use crate::store::{Position, Publication, PublicationStore, StoreError};
use crate::webhooks::Webhooks;

/// A connection as the hub sees it: who it is and where its frames go.
#[derive(Debug)]
pub(crate) struct Conn {
    pub(crate) id: u64,
    pub(crate) session_id: String,
    pub(crate) user_id: Arc<str>,
    pub(crate) outbox: Outbox,
}

impl Conn {
    /// Queues a must-deliver frame; true when it will be sent.
    pub(crate) fn send(&self, frame: &ServerFrame) -> bool {
        self.outbox
            .push(Outgoing::reliable(Utf8Bytes::from(frame.encode())))
            .delivered()
    }
}

#[derive(Debug)]
struct Subscriber {
    conn: Arc<Conn>,
    /// Event types this subscription wants; `None` = all.
    events: Option<Box<[Box<str>]>>,
}

impl Subscriber {
    fn wants(&self, kind: &str) -> bool {
        self.events
            .as_ref()
            .is_none_or(|events| events.iter().any(|e| &**e == kind))
    }
}

#[derive(Debug, Default)]
struct ChannelState {
    subscribers: HashMap<u64, Subscriber>,
    /// Connections per user in this channel, for join/leave on first/last.
    members: HashMap<Arc<str>, u32>,
    /// Set when the channel was removed from the hub; holders of a stale handle retry.
    retired: bool,
}

impl ChannelState {
    /// Queues `frame` for every subscriber except `except_user`'s connections.
    fn tell_others(&self, except_user: &str, frame: &Outgoing) {
        for sub in self.subscribers.values() {
            if &*sub.conn.user_id != except_user {
                sub.conn.outbox.push(frame.clone());
            }
        }
    }
}

type Channel = Mutex<ChannelState>;

/// A channel's state under its lock. Dropping it releases the lock and removes the channel
/// from the hub when nobody is subscribed any more.
struct Locked<'a> {
    hub: &'a Hub,
    name: &'a str,
    channel: Arc<Channel>,
    state: Option<OwnedMutexGuard<ChannelState>>,
}

impl std::ops::Deref for Locked<'_> {
    type Target = ChannelState;
    fn deref(&self) -> &ChannelState {
        // `state` is only taken in `drop`.
        self.state.as_deref().unwrap_or_else(|| unreachable!())
    }
}

impl std::ops::DerefMut for Locked<'_> {
    fn deref_mut(&mut self) -> &mut ChannelState {
        self.state.as_deref_mut().unwrap_or_else(|| unreachable!())
    }
}

impl Drop for Locked<'_> {
    fn drop(&mut self) {
        let empty = self.state.take().is_some_and(|s| s.subscribers.is_empty());
        if empty {
            self.hub.retire_if_empty(self.name, &self.channel);
        }
    }
}

/// How a subscribe was asked for.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Asked {
    /// By a `subscribe` request; a `reply` with this id goes first.
    Request(Option<u64>),
    /// By the server (personal or route-bound channel): no reply.
    Automatically,
}

/// What a publish did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    /// The publication's offset (`None` when ephemeral).
    pub offset: Option<u64>,
    /// The channel's epoch.
    pub epoch: String,
    /// Connections on this node it was queued for.
    pub delivered: usize,
}

/// Counters for `stats`.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) publications: AtomicU64,
    pub(crate) deliveries: AtomicU64,
    pub(crate) dropped: AtomicU64,
    pub(crate) slow_consumers: AtomicU64,
}

/// Channels, users and the store behind them.
pub(crate) struct Hub {
    channels: DashMap<Arc<str>, Arc<Channel>>,
    users: DashMap<Arc<str>, HashMap<u64, Arc<Conn>>>,
    store: Arc<dyn PublicationStore>,
    /// Other nodes, if any.
    broker: Option<Arc<dyn Broker>>,
    /// Webhook endpoints, if any.
    webhooks: Option<Arc<Webhooks>>,
    /// Channels with more members than this get no `user_joined`/`user_left` frames: each
    /// would go to every member, so a crowd joining costs members² frames.
    presence_events_max_members: usize,
    next_conn: AtomicU64,
    pub(crate) counters: Counters,
}

/// Milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl Hub {
    pub(crate) fn new(
        store: Arc<dyn PublicationStore>,
        broker: Option<Arc<dyn Broker>>,
        webhooks: Option<Arc<Webhooks>>,
        presence_events_max_members: usize,
    ) -> Hub {
        Hub {
            presence_events_max_members,
            channels: DashMap::new(),
            users: DashMap::new(),
            store,
            broker,
            webhooks,
            next_conn: AtomicU64::new(1),
            counters: Counters::default(),
        }
    }

    pub(crate) fn store(&self) -> &Arc<dyn PublicationStore> {
        &self.store
    }

    /// Adds a connection for its user, unless the user already has `limit` (0 = no limit).
    pub(crate) fn register(
        &self,
        session_id: String,
        user_id: Arc<str>,
        outbox: Outbox,
        limit: usize,
    ) -> Option<Arc<Conn>> {
        let conn = Arc::new(Conn {
            id: self.next_conn.fetch_add(1, Ordering::Relaxed),
            session_id,
            user_id: user_id.clone(),
            outbox,
        });
        let mut conns = self.users.entry(user_id).or_default();
        if limit > 0 && conns.len() >= limit {
            return None;
        }
        conns.insert(conn.id, conn.clone());
        Some(conn)
    }

    /// Removes a connection from its channels (announcing departures) and from its user.
    pub(crate) async fn unregister(
        &self,
        conn: &Arc<Conn>,
        channels: impl IntoIterator<Item = Arc<str>>,
    ) {
        for channel in channels {
            self.unsubscribe(conn, &channel).await;
        }
        self.users.remove_if_mut(&conn.user_id, |_, conns| {
            conns.remove(&conn.id);
            conns.is_empty()
        });
    }

    fn channel(&self, name: &str) -> Arc<Channel> {
        if let Some(channel) = self.channels.get(name) {
            return channel.clone();
        }
        self.channels.entry(Arc::from(name)).or_default().clone()
    }

    /// Drops the channel from the map if nobody is subscribed (called without its lock held).
    fn retire_if_empty(&self, name: &str, channel: &Arc<Channel>) {
        self.channels.remove_if(name, |_, current| {
            Arc::ptr_eq(current, channel)
                && current.try_lock().is_ok_and(|mut state| {
                    state.retired = state.subscribers.is_empty();
                    state.retired
                })
        });
    }

    /// Locks a channel, retrying if it was retired meanwhile.
    async fn lock<'a>(&'a self, name: &'a str) -> Locked<'a> {
        loop {
            let channel = self.channel(name);
            let state = channel.clone().lock_owned().await;
            if !state.retired {
                return Locked {
                    hub: self,
                    name,
                    channel,
                    state: Some(state),
                };
            }
        }
    }

    /// The channel's epoch and latest offset.
    pub(crate) async fn position(&self, channel: &str) -> Result<Position, StoreError> {
        self.store.position(channel).await
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
        let (position, recovered, missed) = match &recover {
            Some(from) => {
                let recovery = self
                    .store
                    .recover(channel, &from.epoch, from.offset)
                    .await?;
                (
                    recovery.position,
                    Some(recovery.recovered),
                    recovery.publications,
                )
            }
            None => (self.store.position(channel).await?, None, Vec::new()),
        };
        if let Asked::Request(id) = asked {
            // Not recovered: tell the client where stored history starts.
            let history_start = match recovered {
                Some(false) => self
                    .store
                    .history(channel, Some(0), None, 1)
                    .await?
                    .first()
                    .and_then(|p| p.offset),
                _ => None,
            };
            conn.send(&ServerFrame {
                id,
                message: ServerMessage::Reply(Reply::Subscribe {
                    channel: channel.to_owned(),
                    epoch: position.epoch.to_string(),
                    offset: position.offset,
                    recovered,
                    missed: recovered.map(|_| missed.len() as u64),
                    history_start,
                }),
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

    /// Stores (unless ephemeral) and fans out one publication.
    pub(crate) async fn publish(
        &self,
        channel: &str,
        event: RawEvent,
        sender: Option<Arc<str>>,
        delivery: Delivery,
    ) -> Result<Published, StoreError> {
        let name: Arc<str> = Arc::from(channel);
        let state = self.lock(channel).await;
        let publication = match delivery {
            Delivery::Reliable => match &self.webhooks {
                Some(hooks) => {
                    let records = |p: &Publication| hooks.for_publication(p);
                    self.store
                        .append_with_webhooks(&name, now_ms(), sender, event, &records)
                        .await?
                }
                None => self.store.append(&name, now_ms(), sender, event).await?,
            },
            Delivery::Ephemeral => {
                let position = self.store.position(channel).await?;
                Arc::new(Publication::new(
                    name,
                    None,
                    position.epoch,
                    now_ms(),
                    sender,
                    event,
                ))
            }
        };
        let delivered = self.fan_out(&state, &publication, delivery);
        if let Some(broker) = &self.broker
            && let Err(e) = broker.publish(&publication).await
        {
            tracing::warn!(channel, error = %e, "broker publish failed; remote nodes will recover");
        }
        drop(state);
        Ok(Published {
            offset: publication.offset,
            epoch: publication.epoch.to_string(),
            delivered,
        })
    }

    /// Tells other nodes about a first join or last leave on this node.
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

    /// Queues a webhook event (no-op without webhooks).
    pub(crate) fn emit(&self, kind: &str, channel: Option<&str>, data: serde_json::Value) {
        if let Some(hooks) = &self.webhooks {
            hooks.emit(&self.store, kind, channel, data);
        }
    }

    /// Delivers a publication that another node stored, to this node's subscribers.
    pub(crate) async fn deliver_remote(&self, publication: &Publication) -> usize {
        let state = self.lock(&publication.channel).await;
        let delivery = if publication.offset.is_some() {
            Delivery::Reliable
        } else {
            Delivery::Ephemeral
        };
        self.fan_out(&state, publication, delivery)
    }

    fn fan_out(
        &self,
        state: &ChannelState,
        publication: &Publication,
        delivery: Delivery,
    ) -> usize {
        self.counters.publications.fetch_add(1, Ordering::Relaxed);
        if state.subscribers.is_empty() {
            return 0;
        }
        let kind = publication.event.kind();
        let item = match delivery {
            Delivery::Reliable => Outgoing::reliable(publication.frame()),
            Delivery::Ephemeral => {
                let key = format!(
                    "{}\u{0}{}",
                    publication.channel,
                    publication.event.coalesce_key()
                );
                Outgoing::ephemeral(publication.frame(), Arc::from(key))
            }
        };
        let mut delivered = 0;
        for subscriber in state.subscribers.values() {
            if subscriber.wants(kind) {
                delivered += usize::from(self.deliver(&subscriber.conn, item.clone()));
            }
        }
        self.counters
            .deliveries
            .fetch_add(delivered as u64, Ordering::Relaxed);
        metrics::counter!("tidings_deliveries_total").increment(delivered as u64);
        delivered
    }

    /// Pushes one frame, counting drops and slow consumers.
    fn deliver(&self, conn: &Conn, item: Outgoing) -> bool {
        match conn.outbox.push(item) {
            Pushed::Queued | Pushed::Coalesced => true,
            Pushed::Dropped => {
                self.counters.dropped.fetch_add(1, Ordering::Relaxed);
                metrics::counter!("tidings_dropped_total", "reason" => "ephemeral_overflow")
                    .increment(1);
                false
            }
            Pushed::Overflowed => {
                self.counters.slow_consumers.fetch_add(1, Ordering::Relaxed);
                metrics::counter!("tidings_dropped_total", "reason" => "slow_consumer")
                    .increment(1);
                tracing::info!(session = %conn.session_id, user = %conn.user_id, "slow consumer closed with 4009");
                false
            }
            Pushed::Closed => false,
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

    /// Queues an event for every connection on this node; returns how many.
    pub(crate) fn broadcast(&self, event: RawEvent) -> usize {
        let publication = Publication::new(
            Arc::from(BROADCAST_CHANNEL),
            None,
            Arc::from(""),
            now_ms(),
            None,
            event,
        );
        let item = Outgoing::reliable(publication.frame());
        let mut delivered = 0;
        for user in self.users.iter() {
            for conn in user.values() {
                delivered += usize::from(self.deliver(conn, item.clone()));
            }
        }
        self.counters
            .deliveries
            .fetch_add(delivered as u64, Ordering::Relaxed);
        delivered
    }

    /// How many connections the user has on this node.
    pub(crate) fn user_connections(&self, user_id: &str) -> usize {
        self.users.get(user_id).map_or(0, |conns| conns.len())
    }

    /// Users with at least one connection on this node, sorted.
    pub(crate) fn connected_users(&self) -> Vec<String> {
        let mut users: Vec<String> = self.users.iter().map(|e| e.key().to_string()).collect();
        users.sort();
        users
    }

    /// Every connection on this node.
    pub(crate) fn all_connections(&self) -> Vec<Arc<Conn>> {
        self.users
            .iter()
            .flat_map(|e| e.value().values().cloned().collect::<Vec<_>>())
            .collect()
    }

    /// Closes every connection of a user with `code`; returns how many.
    pub(crate) fn disconnect_user(&self, user_id: &str, code: Code, reason: &str) -> usize {
        let conns: Vec<Arc<Conn>> = self
            .users
            .get(user_id)
            .map(|c| c.values().cloned().collect())
            .unwrap_or_default();
        for conn in &conns {
            conn.outbox.close(code, reason);
        }
        conns.len()
    }

    /// (frames queued now, bytes queued now, the largest peak of any open connection's queue).
    pub(crate) fn queues(&self) -> (usize, usize, usize) {
        let mut totals = (0, 0, 0);
        for user in self.users.iter() {
            for conn in user.values() {
                let (frames, bytes) = conn.outbox.depth();
                totals.0 += frames;
                totals.1 += bytes;
                totals.2 = totals.2.max(conn.outbox.peak_bytes());
            }
        }
        totals
    }

    /// (connections, users, channels) on this node.
    pub(crate) fn sizes(&self) -> (usize, usize, usize) {
        let connections = self.users.iter().map(|e| e.value().len()).sum();
        (connections, self.users.len(), self.channels.len())
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
