//! A channel's state under its lock, and a connection as the hub sees it.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use axum::extract::ws::Utf8Bytes;
use tidings_protocol::ServerFrame;
use tokio::sync::{Mutex, OwnedMutexGuard, oneshot};

use super::{Hub, Published};
use crate::outbox::{Outbox, Outgoing};
use crate::store::{Position, Publication, StoreError};

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
pub(super) struct Subscriber {
    pub(super) conn: Arc<Conn>,
    /// Event types this subscription wants; `None` = all.
    pub(super) events: Option<Box<[Box<str>]>>,
}

impl Subscriber {
    pub(super) fn wants(&self, kind: &str) -> bool {
        self.events
            .as_ref()
            .is_none_or(|events| events.iter().any(|e| &**e == kind))
    }
}

#[derive(Default)]
pub(super) struct ChannelState {
    pub(super) subscribers: HashMap<u64, Subscriber>,
    /// Connections per user in this channel, for join/leave on first/last.
    pub(super) members: HashMap<Arc<str>, u32>,
    /// Publications submitted to the store, in offset order, waiting for their commit; each
    /// is fanned out once it and every one before it are committed.
    pub(super) pending: VecDeque<Pending>,
    /// The last offset fanned out on this node (read from the store when the channel is
    /// first locked, with nothing pending): subscribers registered now get what follows.
    pub(super) delivered: Option<Position>,
    /// Set when the channel was removed from the hub; holders of a stale handle retry.
    pub(super) retired: bool,
    /// Whether the broker was told this node has subscribers here.
    pub(super) interested: bool,
}

/// A submitted publication, before and after its commit.
pub(super) struct Pending {
    pub(super) ticket: u64,
    /// Set when the commit finished.
    pub(super) committed: Option<Result<Arc<Publication>, StoreError>>,
    /// Told how many connections the fan-out reached (or that the commit failed).
    pub(super) fanned_out: Option<oneshot::Sender<Result<Published, StoreError>>>,
}

impl ChannelState {
    /// Queues `frame` for every subscriber except `except_user`'s connections.
    pub(super) fn tell_others(&self, except_user: &str, frame: &Outgoing) {
        for sub in self.subscribers.values() {
            if &*sub.conn.user_id != except_user {
                sub.conn.outbox.push(frame.clone());
            }
        }
    }
}

pub(super) type Channel = Mutex<ChannelState>;

/// A channel's state under its lock. Dropping it releases the lock and, when nobody is
/// subscribed any more and nothing is pending, removes the channel from the hub first (marked retired, so a task
/// already waiting for this lock looks the channel up again).
pub(super) struct Locked<'a> {
    pub(super) hub: &'a Hub,
    pub(super) name: &'a str,
    pub(super) channel: Arc<Channel>,
    pub(super) state: OwnedMutexGuard<ChannelState>,
}

impl std::ops::Deref for Locked<'_> {
    type Target = ChannelState;
    fn deref(&self) -> &ChannelState {
        &self.state
    }
}

impl std::ops::DerefMut for Locked<'_> {
    fn deref_mut(&mut self) -> &mut ChannelState {
        &mut self.state
    }
}

impl Drop for Locked<'_> {
    fn drop(&mut self) {
        if self.state.subscribers.is_empty() && self.state.pending.is_empty() {
            self.state.retired = true;
            if let (true, Some(broker)) = (self.state.interested, &self.hub.broker) {
                broker.interest(self.name, false);
            }
            self.hub
                .channels
                .remove_if(self.name, |_, current| Arc::ptr_eq(current, &self.channel));
        }
    }
}
