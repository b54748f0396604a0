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
//! feature) uses Redis pub/sub and [`nats::NatsBroker`] (the `nats` feature) core NATS; both
//! deliver at most once.
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

#[cfg(feature = "nats")]
pub mod nats;
#[cfg(feature = "redis")]
pub mod redis;

/// After a reconnection the client re-subscribes in the background: a second catch-up after
/// this covers what was published between the first one and the new subscriptions.
#[cfg(any(feature = "redis", feature = "nats"))]
const RESUBSCRIBE_GRACE: std::time::Duration = std::time::Duration::from_millis(500);

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
    /// Something for every node (a broadcast, a disconnect) that another node sent.
    Cluster(ClusterMessage),
}

/// What one node asks of every other node, besides publications.
// Externally tagged (`{"broadcast": {...}}`): an internally tagged enum buffers its content,
// and a buffered `RawValue` (the event's payload) cannot be read back.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ClusterMessage {
    /// `Tidings::broadcast`: the event goes to every connection on every node.
    Broadcast {
        /// The event, its payload untouched.
        event: RawEvent,
        /// The user the back end sent it for, if any.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        sender: Option<String>,
    },
    /// `Tidings::disconnect_user`: the user's connections on every node close with 4006.
    Disconnect {
        /// The user.
        user_id: String,
    },
    /// A member of `channel` is typing: the channel's members on every node are told.
    Typing {
        /// The channel.
        channel: String,
        /// Who is typing.
        user_id: String,
    },
    /// A node's connected users and channel members: what changed, or all of it.
    Presence(PresenceReport),
    /// A node asks every other one for its whole presence (it started, or lost messages).
    PresenceWanted {
        /// The asking node.
        node: String,
        /// The node whose presence is wanted; `None`: every node's.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        of: Option<String>,
    },
}

/// One node's presence as it travels: connection counts per user and per channel member.
///
/// Counts are absolute (how many connections the user has on `node`; 0 = none), so a
/// report can be applied twice. Each report carries the next `seq` of its node: a receiver
/// that sees a gap asks for the whole presence again ([`ClusterMessage::PresenceWanted`]).
/// A whole presence (`full`) may span several reports with consecutive `seq`, from
/// `part` 0 to the one marked `done`; the receiver swaps it in at once.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[non_exhaustive]
pub struct PresenceReport {
    /// The reporting node.
    pub node: String,
    /// Its report number, one more than the last.
    pub seq: u64,
    /// Everything the node has (replacing what was known of it), not only changes.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub full: bool,
    /// The part of a whole presence, from 0.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub part: u32,
    /// The last part of a whole presence (always true for changes).
    #[serde(default = "yes")]
    pub done: bool,
    /// `[user, connections]`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub users: Vec<(String, u32)>,
    /// `[channel, user, connections]`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub members: Vec<(String, String, u32)>,
    /// The node's counters, in its periodic reports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load: Option<NodeLoad>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

fn yes() -> bool {
    true
}

/// A node's counters as its last periodic report gave them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[non_exhaustive]
pub struct NodeLoad {
    /// Open WebSocket connections.
    pub connections: u64,
    /// Distinct connected users.
    pub users: u64,
    /// Channels with at least one subscriber.
    pub channels: u64,
    /// Publications since the node started.
    pub publications: u64,
    /// Frames queued for subscribers since the node started.
    pub deliveries: u64,
}

/// A [`ClusterMessage`] as it travels, with its sender.
#[cfg(any(feature = "redis", feature = "nats"))]
#[derive(Debug, Serialize, Deserialize)]
struct ClusterEnvelope {
    node: String,
    message: ClusterMessage,
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

    /// Queues a message for every other node (in call order; never waits). Every node
    /// receives these from the start, as [`Incoming::Cluster`].
    fn tell_all(&self, message: ClusterMessage);

    /// Whether the broker is connected now (for `/healthz`).
    fn is_connected(&self) -> bool;

    /// This node's name in its messages (unique in the cluster).
    fn node(&self) -> &str;
}

/// The broker `url` names (`redis://`, `rediss://`, `nats://`, `tls://`), for a node named
/// at random, its channels under `prefix` (the broker's default when `None`). Nothing
/// connects before [`Broker::start`], which the builder calls.
///
/// [`TidingsBuilder::build`](crate::TidingsBuilder::build) calls this for
/// `Config::broker` when no broker was given to it.
pub fn open(url: &str, prefix: Option<&str>) -> Result<Arc<dyn Broker>, BrokerError> {
    let node = format!("node-{:016x}", rand::random::<u64>());
    let _ = (&node, prefix);
    #[cfg(feature = "redis")]
    if url.starts_with("redis://") || url.starts_with("rediss://") {
        let mut broker = redis::RedisBroker::new(url, node)?;
        if let Some(prefix) = prefix {
            broker = broker.prefix(prefix);
        }
        return Ok(Arc::new(broker));
    }
    #[cfg(feature = "nats")]
    if url.starts_with("nats://") || url.starts_with("tls://") {
        let mut broker = nats::NatsBroker::new(url, node)?;
        if let Some(prefix) = prefix {
            broker = broker.prefix(prefix);
        }
        return Ok(Arc::new(broker));
    }
    Err(BrokerError::Config(format!(
        "unknown broker {url} (expected redis://... or nats://..., with the `redis` or `nats` feature)"
    )))
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

/// Orders waiting for a broker's sending task at most; past it they are dropped (the other
/// nodes fill the gap from the store).
#[cfg(any(feature = "redis", feature = "nats"))]
const OUTGOING_CAPACITY: usize = 65_536;

/// The queue from the hub into a broker's sending task: the [`Broker`] methods that never
/// wait, written once for every broker.
#[cfg(any(feature = "redis", feature = "nats"))]
struct Outgoing {
    node: String,
    orders: mpsc::Sender<Order>,
    /// Taken by the broker's `start`.
    queue: std::sync::Mutex<Option<mpsc::Receiver<Order>>>,
}

#[cfg(any(feature = "redis", feature = "nats"))]
impl Outgoing {
    fn new(node: String) -> Outgoing {
        let (orders, queue) = mpsc::channel(OUTGOING_CAPACITY);
        Outgoing {
            node,
            orders,
            queue: std::sync::Mutex::new(Some(queue)),
        }
    }

    /// The sending task's end of the queue (once).
    fn take_queue(&self) -> Result<mpsc::Receiver<Order>, BrokerError> {
        self.queue
            .lock()
            .ok()
            .and_then(|mut queue| queue.take())
            .ok_or_else(|| BrokerError::Config("the broker was started already".into()))
    }

    fn publish(&self, publication: &Publication) {
        if let Some(order) = Order::publish(&self.node, publication) {
            order.queue(&self.orders);
        }
    }

    fn interest(&self, channel: &str, interested: bool) {
        Order::Interest {
            channel: channel.to_owned(),
            interested,
        }
        .queue(&self.orders);
    }

    fn tell_all(&self, message: ClusterMessage) {
        if let Some(order) = Order::tell_all(&self.node, message) {
            order.queue(&self.orders);
        }
    }
}

/// What a broker's sending task is asked to do, kept in call order.
#[cfg(any(feature = "redis", feature = "nats"))]
enum Order {
    /// Send an encoded [`Envelope`] of a publication in `channel`.
    Publish { channel: Arc<str>, body: Vec<u8> },
    /// Start or stop receiving `channel`.
    Interest { channel: String, interested: bool },
    /// Send an encoded cluster message to every node.
    TellAll { body: Vec<u8> },
}

#[cfg(any(feature = "redis", feature = "nats"))]
impl Order {
    /// The order to send `publication` from `node`, if it encodes.
    fn publish(node: &str, publication: &Publication) -> Option<Order> {
        let body = serde_json::to_vec(&Envelope::new(node, publication)).ok()?;
        Some(Order::Publish {
            channel: publication.channel.clone(),
            body,
        })
    }

    /// The order to send `message` from `node` to every node, if it encodes.
    fn tell_all(node: &str, message: ClusterMessage) -> Option<Order> {
        let envelope = ClusterEnvelope {
            node: node.to_owned(),
            message,
        };
        let body = serde_json::to_vec(&envelope).ok()?;
        Some(Order::TellAll { body })
    }

    /// Queues the order without waiting; a full queue loses it, which the store makes good.
    fn queue(self, orders: &mpsc::Sender<Order>) {
        if let Err(mpsc::error::TrySendError::Full(order)) = orders.try_send(self) {
            match order {
                Order::Publish { channel, .. } => tracing::warn!(
                    %channel,
                    "broker queue full; other nodes will fill the gap from the store"
                ),
                Order::Interest { channel, .. } => {
                    tracing::warn!(channel, "broker queue full; a subscription change was lost")
                }
                Order::TellAll { .. } => {
                    tracing::warn!("broker queue full; a broadcast or disconnect was lost")
                }
            }
        }
    }
}

/// A message from the broker as the node's inbox takes it: `None` for this node's own
/// messages and for unreadable ones (logged).
#[cfg(any(feature = "redis", feature = "nats"))]
fn decode(node: &str, body: &[u8]) -> Option<Incoming> {
    match serde_json::from_slice::<Envelope>(body) {
        Ok(envelope) if envelope.node == node => None,
        Ok(envelope) => Some(Incoming::Publication(envelope.into_publication())),
        Err(e) => {
            tracing::warn!(error = %e, "unreadable broker message");
            None
        }
    }
}

/// A cluster message from the broker as the node's inbox takes it (`None` as in [`decode`]).
#[cfg(any(feature = "redis", feature = "nats"))]
fn decode_cluster(node: &str, body: &[u8]) -> Option<Incoming> {
    match serde_json::from_slice::<ClusterEnvelope>(body) {
        Ok(envelope) if envelope.node == node => None,
        Ok(envelope) => Some(Incoming::Cluster(envelope.message)),
        Err(e) => {
            tracing::warn!(error = %e, "unreadable cluster message");
            None
        }
    }
}

/// Tells the node to catch up now, and once more after [`RESUBSCRIBE_GRACE`]; false when
/// the node is gone.
#[cfg(any(feature = "redis", feature = "nats"))]
async fn resync(inbox: &mpsc::Sender<Incoming>) -> bool {
    if inbox.send(Incoming::Resynced).await.is_err() {
        return false;
    }
    let inbox = inbox.clone();
    tokio::spawn(async move {
        tokio::time::sleep(RESUBSCRIBE_GRACE).await;
        let _ = inbox.send(Incoming::Resynced).await;
    });
    true
}
