//! Several nodes: a [`Broker`] carries publications between Tidings nodes that share one
//! PostgreSQL store. A single node needs none.
//!
//! The store, not the broker, is the source of truth. The shared store assigns each
//! publication its offset; the publishing node fans it out to its own subscribers and hands
//! it to [`Broker::publish`]. Every other node that has subscribers in the channel receives
//! it and fans it out in offset order. A node that sees a gap (a message the broker lost, a
//! reconnection of the broker) reads the missing publications from the store first, so
//! subscribers on every node get every publication once and in order without reconnecting.
//!
//! A broker only needs to be fast and mostly right: [`redis::RedisBroker`] (the `redis`
//! feature) uses Redis pub/sub, which delivers at most once.
//!
//! Contract for an implementation:
//! - [`publish`](Broker::publish) and [`interest`](Broker::interest) never wait: they queue,
//!   and the queue keeps their order.
//! - Every publication received from another node goes to the inbox given to
//!   [`start`](Broker::start) as [`Incoming::Publication`], each channel's in the order
//!   they were sent.
//! - Once a channel's subscription is in place, [`Incoming::Subscribed`] says so; after a
//!   reconnection (or anything else that may have lost messages), [`Incoming::Resynced`].
//!   The node then reads from the store what it may have missed.

use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tidings_protocol::RawEvent;
use tokio::sync::mpsc;

use crate::store::Publication;

#[cfg(feature = "redis")]
pub mod redis;

/// Why a broker could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BrokerError {
    /// The broker is unreachable or refused the connection.
    #[error("broker unavailable: {0}")]
    Unavailable(String),
    /// The broker's URL or settings are wrong.
    #[error("broker configuration: {0}")]
    Config(String),
}

/// What a broker tells its node.
#[derive(Debug)]
#[non_exhaustive]
pub enum Incoming {
    /// A publication another node stored (or, without an offset, sent ephemerally).
    Publication(Publication),
    /// The broker now receives this channel's publications.
    Subscribed(String),
    /// Messages may have been lost (a reconnection, a receiver that fell behind): every
    /// channel with subscribers here catches up from the store.
    Resynced,
}

/// Carries publications between nodes.
#[async_trait]
pub trait Broker: Send + Sync + 'static {
    /// Connects, and from now on sends what other nodes publish to `inbox`.
    async fn start(&self, inbox: mpsc::Sender<Incoming>) -> Result<(), BrokerError>;

    /// Queues a publication for the other nodes (in call order; never waits).
    fn publish(&self, publication: &Arc<Publication>);

    /// Starts (`true`) or stops receiving `channel`'s publications (in call order; never
    /// waits). This node has subscribers in the channel exactly while it is interested.
    fn interest(&self, channel: &str, interested: bool);

    /// Whether the broker is connected now (for `/healthz`).
    fn is_connected(&self) -> bool;
}

/// A publication as it travels between nodes (JSON).
#[derive(Debug, Serialize, Deserialize)]
pub struct Envelope {
    /// The sending node, so a node can skip its own messages.
    pub node: String,
    /// The channel.
    pub channel: String,
    /// The offset the store assigned (`None`: ephemeral).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset: Option<u64>,
    /// The channel's epoch.
    pub epoch: String,
    /// Milliseconds since the Unix epoch.
    pub ts: u64,
    /// The publishing user, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sender: Option<String>,
    /// The event, its payload untouched.
    pub event: RawEvent,
}

impl Envelope {
    /// The envelope of `publication`, sent by `node`.
    pub fn new(node: &str, publication: &Publication) -> Envelope {
        Envelope {
            node: node.to_owned(),
            channel: publication.channel.to_string(),
            offset: publication.offset,
            epoch: publication.epoch.to_string(),
            ts: publication.ts,
            sender: publication.sender.as_deref().map(str::to_owned),
            event: publication.event.clone(),
        }
    }

    /// The publication it carries.
    pub fn into_publication(self) -> Publication {
        Publication::new(
            Arc::from(self.channel),
            self.offset,
            Arc::from(self.epoch),
            self.ts,
            self.sender.map(Arc::from),
            self.event,
        )
    }
}
