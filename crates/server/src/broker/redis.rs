//! [`RedisBroker`]: publications between nodes over Redis pub/sub (the `redis` feature, on
//! `fred`, which reconnects and re-subscribes by itself).
//!
//! Each Tidings channel is one Redis channel, `tidings:ch:{name}`, subscribed only while the
//! node has subscribers in it; broadcasts and disconnects travel on `tidings:nodes`, which
//! every node subscribes to. Another prefix than `tidings:` with [`RedisBroker::prefix`],
//! for several clusters on one Redis. Redis pub/sub delivers at most once and forgets what it sends
//! while a node is away: the node fills gaps from the store (see [`crate::broker`]).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use fred::clients::{Client, SubscriberClient};
use fred::interfaces::{ClientLike, EventInterface, PubsubInterface};
use fred::types::config::{Config, ReconnectPolicy};
use fred::types::{Builder, Value};
use tokio::sync::{broadcast, mpsc};

use super::{
    Broker, BrokerError, ClusterMessage, Incoming, Order, Outgoing, decode, decode_cluster, resync,
};
use crate::store::Publication;

/// Redis channel names: this prefix, then `ch:` and the Tidings channel's name, or `nodes`.
const DEFAULT_PREFIX: &str = "tidings:";
/// How long `start` waits for the first connection before going on without it.
const CONNECT_WAIT: Duration = Duration::from_secs(5);
/// Publications sent in one pipeline at most.
const PIPELINE: usize = 256;

/// Publications between nodes over Redis pub/sub.
pub struct RedisBroker {
    outgoing: Outgoing,
    prefix: Arc<str>,
    publisher: Client,
    subscriber: SubscriberClient,
}

impl std::fmt::Debug for RedisBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBroker")
            .field("node", &self.outgoing.node)
            .finish_non_exhaustive()
    }
}

impl RedisBroker {
    /// A broker for `redis://host:port[/db]` (or `rediss://`); `node` names this node in its
    /// messages. Nothing connects before [`Broker::start`].
    pub fn new(url: &str, node: impl Into<String>) -> Result<RedisBroker, BrokerError> {
        let config = Config::from_url(url).map_err(|e| BrokerError::Config(e.to_string()))?;
        let mut builder = Builder::from_config(config);
        // Forever, from 100 ms up to 2 s apart: a node outlives a Redis restart.
        builder.set_policy(ReconnectPolicy::new_exponential(0, 100, 2_000, 2));
        builder.with_connection_config(|c| c.connection_timeout = Duration::from_secs(5));
        let publisher = builder
            .build()
            .map_err(|e| BrokerError::Config(e.to_string()))?;
        let subscriber = builder
            .build_subscriber_client()
            .map_err(|e| BrokerError::Config(e.to_string()))?;
        Ok(RedisBroker {
            outgoing: Outgoing::new(node.into()),
            prefix: Arc::from(DEFAULT_PREFIX),
            publisher,
            subscriber,
        })
    }
}

impl RedisBroker {
    /// Names this cluster's Redis channels `{prefix}ch:{channel}` and `{prefix}nodes`
    /// instead of `tidings:…`:
    /// clusters sharing one Redis must each have their own.
    pub fn prefix(mut self, prefix: &str) -> RedisBroker {
        self.prefix = Arc::from(prefix);
        self
    }
}

#[async_trait]
impl Broker for RedisBroker {
    async fn start(&self, inbox: mpsc::Sender<Incoming>) -> Result<(), BrokerError> {
        let queue = self.outgoing.take_queue()?;
        // Receivers first, so nothing sent after the first SUBSCRIBE is missed.
        let messages = self.subscriber.message_rx();
        let reconnections = self.subscriber.reconnect_rx();
        // Both clients keep trying in the background (the reconnect policy): a node whose
        // Redis is down serves its own clients meanwhile, and its commands wait in fred's
        // queue.
        let _publisher = self.publisher.connect();
        let _subscriber = self.subscriber.connect();
        let connected = tokio::time::timeout(CONNECT_WAIT, async {
            self.publisher.wait_for_connect().await?;
            self.subscriber.wait_for_connect().await
        })
        .await;
        match connected {
            Ok(Ok(())) => tracing::info!(node = %self.outgoing.node, "Redis broker connected"),
            Ok(Err(e)) => tracing::warn!(error = %e, "Redis broker not connected yet; retrying"),
            Err(_) => tracing::warn!("Redis broker not connected yet; retrying"),
        }
        // Re-subscribes to every tracked channel after a reconnection.
        let _resubscribing = self.subscriber.manage_subscriptions();
        let nodes: Arc<str> = Arc::from(format!("{}nodes", self.prefix));
        tokio::spawn(receive(
            self.outgoing.node.clone(),
            nodes.clone(),
            messages,
            inbox.clone(),
        ));
        tokio::spawn(join_the_cluster(self.subscriber.clone(), nodes));
        tokio::spawn(resync_on_reconnect(reconnections, inbox.clone()));
        tokio::spawn(send(
            self.prefix.clone(),
            self.publisher.clone(),
            self.subscriber.clone(),
            queue,
            inbox,
        ));
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
        self.publisher.is_connected() && self.subscriber.is_connected()
    }

    fn node(&self) -> &str {
        &self.outgoing.node
    }
}

/// Sends queued orders in order: runs of publications as one pipeline, subscription changes
/// one by one (each confirmed `Subscribed` to the node).
async fn send(
    prefix: Arc<str>,
    publisher: Client,
    subscriber: SubscriberClient,
    mut queue: mpsc::Receiver<Order>,
    inbox: mpsc::Sender<Incoming>,
) {
    let mut batch = Vec::with_capacity(PIPELINE);
    while queue.recv_many(&mut batch, PIPELINE).await > 0 {
        let pipeline = publisher.pipeline();
        let mut queued = 0;
        for order in batch.drain(..) {
            match order {
                Order::Publish { channel, body } => {
                    let queued_now: Result<Value, _> = pipeline
                        .publish(format!("{prefix}ch:{channel}"), body)
                        .await;
                    queued += usize::from(queued_now.is_ok());
                }
                Order::Interest {
                    channel,
                    interested,
                } => {
                    // Publications queued before it go first.
                    flush(&pipeline, &mut queued).await;
                    change_interest(&prefix, &subscriber, &inbox, channel, interested).await;
                }
                Order::TellAll { body } => {
                    let queued_now: Result<Value, _> =
                        pipeline.publish(format!("{prefix}nodes"), body).await;
                    queued += usize::from(queued_now.is_ok());
                }
            }
        }
        flush(&pipeline, &mut queued).await;
    }
}

async fn flush(pipeline: &fred::clients::Pipeline<Client>, queued: &mut usize) {
    if *queued == 0 {
        return;
    }
    *queued = 0;
    if let Err(e) = pipeline.all::<Value>().await {
        tracing::warn!(error = %e, "broker publish failed; other nodes will fill the gap from the store");
    }
}

async fn change_interest(
    prefix: &str,
    subscriber: &SubscriberClient,
    inbox: &mpsc::Sender<Incoming>,
    channel: String,
    interested: bool,
) {
    let redis_channel = format!("{prefix}ch:{channel}");
    if interested {
        match subscriber.subscribe(redis_channel.as_str()).await {
            Ok(()) => {
                let _ = inbox.send(Incoming::Subscribed(channel)).await;
            }
            // Tracked anyway: `manage_subscriptions` subscribes again once connected, and the
            // reconnection's resync catches the channel up.
            Err(e) => tracing::warn!(channel, error = %e, "broker subscribe failed"),
        }
    } else if let Err(e) = subscriber.unsubscribe(redis_channel.as_str()).await {
        tracing::warn!(channel, error = %e, "broker unsubscribe failed");
    }
}

/// Subscribes to the channel every node hears (retried until Redis answers; fred keeps it
/// subscribed across reconnections from then on).
async fn join_the_cluster(subscriber: SubscriberClient, nodes: Arc<str>) {
    while let Err(e) = subscriber.subscribe(&*nodes).await {
        tracing::warn!(error = %e, "could not subscribe to the cluster channel; retrying");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Hands other nodes' messages to the node, in the order Redis delivers them.
async fn receive(
    node: String,
    nodes: Arc<str>,
    mut messages: broadcast::Receiver<fred::types::Message>,
    inbox: mpsc::Sender<Incoming>,
) {
    loop {
        let incoming = match messages.recv().await {
            Ok(message) => {
                let body = message.value.as_bytes().unwrap_or_default();
                let incoming = if *message.channel == *nodes {
                    decode_cluster(&node, body)
                } else {
                    decode(&node, body)
                };
                match incoming {
                    Some(incoming) => incoming,
                    None => continue,
                }
            }
            // This task fell behind Redis: what it skipped is read from the store.
            Err(broadcast::error::RecvError::Lagged(skipped)) => {
                tracing::warn!(
                    skipped,
                    "broker receiver lagged; catching up from the store"
                );
                Incoming::Resynced
            }
            Err(broadcast::error::RecvError::Closed) => return,
        };
        if inbox.send(incoming).await.is_err() {
            return;
        }
    }
}

async fn resync_on_reconnect(
    mut reconnections: broadcast::Receiver<fred::types::config::Server>,
    inbox: mpsc::Sender<Incoming>,
) {
    // The first event is the first connection: nothing was missed before it (each
    // subscription catches its channel up when it starts).
    let mut first = true;
    loop {
        match reconnections.recv().await {
            Ok(_) if std::mem::take(&mut first) => continue,
            Ok(server) => tracing::info!(%server, "broker reconnected; catching up from the store"),
            Err(broadcast::error::RecvError::Lagged(_)) => {}
            Err(broadcast::error::RecvError::Closed) => return,
        }
        if !resync(&inbox).await {
            return;
        }
    }
}
