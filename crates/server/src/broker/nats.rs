//! [`NatsBroker`]: publications between nodes over core NATS (the `nats` feature, on
//! `async-nats`, which reconnects and re-subscribes by itself).
//!
//! Each Tidings channel is one subject, `tidings.ch.{hex of the name}` (subjects may not
//! hold every character a channel name may), subscribed only while the node has
//! subscribers in it; broadcasts and disconnects travel on `tidings.nodes`, which every node
//! subscribes to. Another prefix than `tidings.` with [`NatsBroker::prefix`]. Core NATS delivers at most once:
//! the node fills gaps from the store (see [`crate::broker`]).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use async_nats::{Client, ConnectOptions, Event};
use async_trait::async_trait;
use futures_util::StreamExt;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::{
    Broker, BrokerError, ClusterMessage, Incoming, Order, Outgoing, decode, decode_cluster, resync,
};
use crate::store::Publication;

/// Subjects: this prefix, then `ch.` and the channel name in hex, or `nodes`.
const DEFAULT_PREFIX: &str = "tidings.";
/// How long `start` waits for the first connection before going on without it.
const CONNECT_WAIT: Duration = Duration::from_secs(5);

/// Publications between nodes over core NATS.
pub struct NatsBroker {
    url: String,
    outgoing: Outgoing,
    prefix: String,
    client: std::sync::OnceLock<Client>,
}

impl std::fmt::Debug for NatsBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsBroker")
            .field("node", &self.outgoing.node)
            .finish_non_exhaustive()
    }
}

impl NatsBroker {
    /// A broker for `nats://host:4222`; `node` names this node in its messages. Nothing
    /// connects before [`Broker::start`].
    pub fn new(url: &str, node: impl Into<String>) -> Result<NatsBroker, BrokerError> {
        if !url.starts_with("nats://") && !url.starts_with("tls://") {
            return Err(BrokerError::Config(format!(
                "{url}: a NATS URL starts with nats:// or tls://"
            )));
        }
        Ok(NatsBroker {
            url: url.to_owned(),
            outgoing: Outgoing::new(node.into()),
            prefix: DEFAULT_PREFIX.to_owned(),
            client: std::sync::OnceLock::new(),
        })
    }

    /// Names this cluster's subjects `{prefix}ch.{hex}` and `{prefix}nodes` instead of
    /// `tidings.…`: clusters sharing one NATS must each have their own (end it with a dot).
    pub fn prefix(mut self, prefix: &str) -> NatsBroker {
        self.prefix = prefix.to_owned();
        self
    }
}

#[async_trait]
impl Broker for NatsBroker {
    async fn start(&self, inbox: mpsc::Sender<Incoming>) -> Result<(), BrokerError> {
        let queue = self.outgoing.take_queue()?;
        let events = inbox.clone();
        // The first `Connected` is the first connection: nothing was missed before it.
        let connections = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let options = ConnectOptions::new()
            .retry_on_initial_connect()
            .max_reconnects(None)
            .reconnect_delay_callback(|attempts| {
                Duration::from_millis((100 * attempts as u64).clamp(100, 2_000))
            })
            .event_callback(move |event| {
                let (events, connections) = (events.clone(), connections.clone());
                async move {
                    match event {
                        Event::Connected => {
                            let ordinal =
                                connections.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            if ordinal > 0 {
                                tracing::info!(
                                    "NATS broker reconnected; catching up from the store"
                                );
                                resync(&events).await;
                            }
                        }
                        // The server dropped messages for this node: read them from the store.
                        Event::SlowConsumer(_) => {
                            resync(&events).await;
                        }
                        Event::Disconnected => tracing::warn!("NATS broker disconnected"),
                        other => tracing::info!(event = %other, "NATS broker"),
                    }
                }
            });
        let client = options
            .connect(self.url.as_str())
            .await
            .map_err(|e| BrokerError::Unavailable(e.to_string()))?;
        let connected = tokio::time::timeout(CONNECT_WAIT, async {
            while client.connection_state() != async_nats::connection::State::Connected {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
        match connected {
            Ok(()) => tracing::info!(node = %self.outgoing.node, "NATS broker connected"),
            Err(_) => tracing::warn!("NATS broker not connected yet; retrying"),
        }
        let _ = self.client.set(client.clone());
        let sender = Sender {
            client,
            node: self.outgoing.node.clone(),
            prefix: self.prefix.clone(),
            inbox,
            receivers: HashMap::new(),
        };
        tokio::spawn(sender.run(queue));
        Ok(())
    }

    fn publish(&self, publication: &Arc<Publication>) {
        self.outgoing.publish(publication);
    }

    fn interest(&self, channel: &str, interested: bool) {
        self.outgoing.interest(channel, interested);
    }

    fn tell_all(&self, message: ClusterMessage) {
        self.outgoing.tell_all(message);
    }

    fn is_connected(&self) -> bool {
        self.client.get().is_some_and(|client| {
            client.connection_state() == async_nats::connection::State::Connected
        })
    }

    fn node(&self) -> &str {
        &self.outgoing.node
    }
}

/// The sending task: publishes in order, and keeps one receiving task per subscribed channel.
struct Sender {
    client: Client,
    node: String,
    prefix: String,
    inbox: mpsc::Sender<Incoming>,
    receivers: HashMap<String, JoinHandle<()>>,
}

impl Sender {
    fn subject(&self, channel: &str) -> String {
        let mut subject = String::with_capacity(self.prefix.len() + 2 * channel.len());
        subject.push_str(&self.prefix);
        subject.push_str("ch.");
        for byte in channel.bytes() {
            let _ = write!(subject, "{byte:02x}");
        }
        subject
    }

    async fn run(mut self, mut queue: mpsc::Receiver<Order>) {
        let nodes = format!("{}nodes", self.prefix);
        self.join_the_cluster(&nodes).await;
        while let Some(order) = queue.recv().await {
            match order {
                Order::TellAll { body } => {
                    if let Err(e) = self.client.publish(nodes.clone(), body.into()).await {
                        tracing::warn!(error = %e, "broker: a broadcast or disconnect was not sent");
                    }
                }
                Order::Publish { channel, body } => {
                    let subject = self.subject(&channel);
                    if let Err(e) = self.client.publish(subject, body.into()).await {
                        tracing::warn!(%channel, error = %e, "broker publish failed; other nodes will fill the gap from the store");
                    }
                }
                Order::Interest {
                    channel,
                    interested: true,
                } => self.subscribe(channel).await,
                Order::Interest {
                    channel,
                    interested: false,
                } => {
                    // Dropping the subscriber (with its task) unsubscribes.
                    if let Some(receiving) = self.receivers.remove(&channel) {
                        receiving.abort();
                    }
                }
            }
        }
        for receiving in self.receivers.values() {
            receiving.abort();
        }
    }

    /// Receives what other nodes send to every node, from now on.
    async fn join_the_cluster(&mut self, nodes: &str) {
        let mut subscriber = match self.client.subscribe(nodes.to_owned()).await {
            Ok(subscriber) => subscriber,
            Err(e) => {
                tracing::error!(error = %e, "could not subscribe to the cluster subject");
                return;
            }
        };
        let (node, inbox) = (self.node.clone(), self.inbox.clone());
        let receiving = tokio::spawn(async move {
            while let Some(message) = subscriber.next().await {
                if let Some(incoming) = decode_cluster(&node, &message.payload)
                    && inbox.send(incoming).await.is_err()
                {
                    return;
                }
            }
        });
        // Keyed by a name no channel can have (channel names hold no control characters).
        self.receivers.insert("\u{0}nodes".to_owned(), receiving);
    }

    async fn subscribe(&mut self, channel: String) {
        if self.receivers.contains_key(&channel) {
            return;
        }
        let mut subscriber = match self.client.subscribe(self.subject(&channel)).await {
            Ok(subscriber) => subscriber,
            Err(e) => {
                tracing::warn!(channel, error = %e, "broker subscribe failed");
                return;
            }
        };
        // The SUB is on its way; a flush makes sure the server has it before the catch-up.
        if let Err(e) = self.client.flush().await {
            tracing::warn!(channel, error = %e, "broker flush failed");
        }
        let (node, inbox) = (self.node.clone(), self.inbox.clone());
        let receiving = tokio::spawn(async move {
            while let Some(message) = subscriber.next().await {
                if let Some(incoming) = decode(&node, &message.payload)
                    && inbox.send(incoming).await.is_err()
                {
                    return;
                }
            }
        });
        self.receivers.insert(channel.clone(), receiving);
        let _ = self.inbox.send(Incoming::Subscribed(channel)).await;
    }
}
