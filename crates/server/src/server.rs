//! The [`Tidings`] handle: build it once, mount its routes, call it from anywhere.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::Router;
use axum::extract::Path;
use axum::routing::{MethodRouter, get};
use serde::Serialize;
use tidings_protocol::messages::{HistoryPage, Member};
use tidings_protocol::{Code, Delivery, Event, Notification, RawEvent, ServerFrame, ServerMessage};

use crate::broker::{ClusterMessage, NodeLoad};
use crate::builder::TidingsBuilder;
use crate::config::{Config, RouteConfig};
use crate::errors::{ChannelError, PublishError};
use crate::handshake::{Accept, ConnectRequest};
use crate::hub::Published;
use crate::node::{Caller, Shared};
use crate::store::{Publication, PublicationStore, StoreError};

/// A running Tidings node: cheap to clone, usable from any task.
///
/// It serves WebSocket connections through the routes it gives you ([`Tidings::router`],
/// [`Tidings::ws_handler`], [`Tidings::accept`]) and lets your back end reach users:
/// [`notify_user`](Tidings::notify_user), [`publish`](Tidings::publish),
/// [`broadcast`](Tidings::broadcast), presence queries and [`shutdown`](Tidings::shutdown).
/// Everything it does for the back end passes the same channel, size and event checks as
/// a client's request, without the per-user authorization.
#[derive(Clone)]
pub struct Tidings {
    pub(crate) shared: Arc<Shared>,
}

/// A snapshot of this node's activity.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Stats {
    /// Open WebSocket connections.
    pub connections: usize,
    /// Distinct connected users.
    pub users: usize,
    /// Channels with at least one subscriber.
    pub channels: usize,
    /// Publications since start (broadcasts included).
    pub publications: u64,
    /// Frames queued for subscribers since start.
    pub deliveries: u64,
    /// Ephemeral frames dropped for slow clients.
    pub dropped: u64,
    /// Connections closed with 4009.
    pub slow_consumers: u64,
    /// Frames waiting in outbound queues now.
    pub queued_frames: usize,
    /// Bytes waiting in outbound queues now.
    pub queued_bytes: usize,
    /// The most bytes any open connection ever had queued (bounded by
    /// `limits.outbound_queue_bytes`).
    pub peak_queue_bytes: usize,
    /// With a broker: the whole cluster. The fields above are this node's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster: Option<ClusterStats>,
}

/// The cluster as one node sees it.
///
/// `connections` and `users` are cluster-wide, from the nodes' presence reports (at most
/// about 50 ms behind). `publications` and `deliveries` are an estimate: the other nodes'
/// counters as of their last heartbeat (every third of `presence_ttl`).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[non_exhaustive]
pub struct ClusterStats {
    /// This node's name.
    pub node: String,
    /// Nodes heard from within `presence_ttl`, this one included.
    pub nodes: usize,
    /// Open connections on every node.
    pub connections: usize,
    /// Distinct users connected to any node.
    pub users: usize,
    /// Publications since start, summed over the nodes (an estimate).
    pub publications: u64,
    /// Deliveries since start, summed over the nodes (an estimate).
    pub deliveries: u64,
    /// Each other node's counters as of its last heartbeat.
    pub others: Vec<NodeStats>,
}

/// Another node's counters.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[non_exhaustive]
pub struct NodeStats {
    /// The node's name.
    pub node: String,
    /// Milliseconds since it was last heard from.
    pub heard_ms_ago: u64,
    /// Its counters at its last heartbeat (none yet: not reported).
    pub load: Option<NodeLoad>,
}

impl Tidings {
    /// Starts configuring a node.
    pub fn builder() -> TidingsBuilder {
        TidingsBuilder::new()
    }

    /// Applies every channel class's retention now; returns how many publications were
    /// deleted.
    pub async fn prune(&self) -> Result<u64, StoreError> {
        let deleted =
            crate::store::prune_all(&*self.shared.hub.stores().publications, &self.shared.config)
                .await?;
        if deleted > 0 {
            tracing::debug!(deleted, "retention pruned publications");
        }
        Ok(deleted)
    }

    /// The node's publication store (for reading history in your own handlers).
    pub fn store(&self) -> &Arc<dyn PublicationStore> {
        &self.shared.hub.stores().publications
    }

    /// A page of a channel's stored history, as the `history` request and
    /// `GET /api/channels/{name}/history` return it (limit capped at 1000).
    pub async fn history(
        &self,
        channel: &str,
        since: Option<u64>,
        before: Option<u64>,
        limit: u32,
    ) -> Result<HistoryPage, ChannelError> {
        self.shared
            .history(Caller::Backend, channel, since, before, Some(limit))
            .await
    }

    /// The node's configuration.
    pub fn config(&self) -> &Config {
        &self.shared.config
    }

    /// Everything the `tidings` binary serves: `/ws`, the HTTP API under `/api`, `/healthz`
    /// and `/metrics`.
    pub fn router(&self) -> Router {
        let mut router = Router::new().route("/ws", self.ws_handler());
        for route in &self.shared.config.routes {
            router = router.route(&route.path, self.route_handler(route.clone()));
        }
        router.merge(crate::api::routes(self.clone()))
    }

    /// The handler of a `[[routes]]` path: its channel joined, its user required.
    fn route_handler(&self, route: crate::config::RouteConfig) -> MethodRouter {
        let tidings = self.clone();
        let route = Arc::new(route);
        get(
            move |Path(values): Path<HashMap<String, String>>, request: ConnectRequest| async move {
                let mut accept = tidings.accept(request);
                if let Some(channel) = &route.channel {
                    accept = accept.bind_channel(RouteConfig::fill(channel, &values));
                }
                if let Some(user) = &route.user {
                    accept = accept.expect_user(RouteConfig::fill(user, &values));
                }
                accept
            },
        )
    }

    /// A `GET` handler that accepts WebSocket connections, for mounting at any path.
    pub fn ws_handler<S: Clone + Send + Sync + 'static>(&self) -> MethodRouter<S> {
        let tidings = self.clone();
        get(move |request: ConnectRequest| async move { tidings.accept(request) })
    }

    /// Accepts one connection; chain [`Accept::bind_channel`] or [`Accept::expect_user`] for
    /// routes whose path names a channel or a user.
    pub fn accept(&self, request: ConnectRequest) -> Accept {
        Accept {
            tidings: self.clone(),
            request,
            bound_channel: None,
            expected_user: None,
        }
    }

    /// Publishes a typed event to a channel; it is stored for recovery (unless the event
    /// type is ephemeral) and queued for every subscriber on this node.
    pub async fn publish<E: Event>(
        &self,
        channel: &str,
        event: &E,
    ) -> Result<Published, PublishError> {
        self.publish_raw(channel, RawEvent::new(event)?, E::DELIVERY)
            .await
    }

    /// Publishes an event without a Rust type.
    pub async fn publish_raw(
        &self,
        channel: &str,
        event: RawEvent,
        delivery: Delivery,
    ) -> Result<Published, PublishError> {
        self.shared
            .publish(Caller::Backend, channel, event, Some(delivery))
            .await
    }

    /// Publishes an event for a user the back end vouches for (a chat message it checked
    /// and perhaps enriched): the same rules as [`Tidings::publish_raw`], and subscribers
    /// see `sender` on the message. `delivery: None` takes the event type's default.
    pub async fn publish_raw_from(
        &self,
        sender: &str,
        channel: &str,
        event: RawEvent,
        delivery: Option<Delivery>,
    ) -> Result<Published, PublishError> {
        self.shared
            .publish(Caller::BackendFor { sender }, channel, event, delivery)
            .await
    }

    /// Sends a notification to every connection of a user (through `user:{id}`); returns
    /// how many connections it reached on this node.
    pub async fn notify_user(
        &self,
        user_id: &str,
        notification: &Notification,
    ) -> Result<usize, PublishError> {
        let channel = tidings_protocol::user_channel(user_id);
        Ok(self.publish(&channel, notification).await?.delivered)
    }

    /// Sends a notification to every subscriber of a channel (a room, a ticket).
    pub async fn notify_channel(
        &self,
        channel: &str,
        notification: &Notification,
    ) -> Result<usize, PublishError> {
        Ok(self.publish(channel, notification).await?.delivered)
    }

    /// Sends a typed event to every connection (channel `broadcast`, not stored), on every
    /// node when there is a broker; returns how many connections it reached on this node.
    pub fn broadcast<E: Event>(&self, event: &E) -> Result<usize, PublishError> {
        self.broadcast_raw(RawEvent::new(event)?)
    }

    /// Broadcasts an event without a Rust type.
    pub fn broadcast_raw(&self, event: RawEvent) -> Result<usize, PublishError> {
        self.broadcast_raw_from(None, event)
    }

    /// [`Tidings::broadcast_raw`] naming the user it is sent for (`sender` on the message).
    pub fn broadcast_raw_from(
        &self,
        sender: Option<&str>,
        event: RawEvent,
    ) -> Result<usize, PublishError> {
        if let Some(sender) = sender {
            crate::node::check_user_id(sender)?;
        }
        self.shared.check_size(&event)?;
        if let Some(broker) = self.shared.hub.broker() {
            broker.tell_all(ClusterMessage::Broadcast {
                event: event.clone(),
                sender: sender.map(str::to_owned),
            });
        }
        Ok(self.shared.hub.broadcast(event, sender.map(Arc::from)))
    }

    /// Delivers a publication received from another node's
    /// [`Broker`](crate::broker::Broker) to this node's subscribers; returns how many
    /// connections it reached.
    pub async fn deliver_remote(&self, publication: &Publication) -> usize {
        self.shared.hub.deliver_remote(publication).await
    }

    /// Whether this node's broker is connected now; `None` without a broker (one node).
    pub fn broker_connected(&self) -> Option<bool> {
        self.shared.hub.broker().map(|broker| broker.is_connected())
    }

    /// Whether the user has a connection (on any node, with a broker: as of the nodes'
    /// last presence reports, about 50 ms behind).
    pub fn is_user_connected(&self, user_id: &str) -> bool {
        self.shared.hub.user_connections(user_id) > 0
    }

    /// How many connections the user has (on every node, with a broker).
    pub fn user_connections(&self, user_id: &str) -> usize {
        self.shared.hub.user_connections(user_id)
    }

    /// Users connected (to any node, with a broker).
    pub fn connected_users(&self) -> Vec<String> {
        self.shared.hub.connected_users()
    }

    /// Members of a channel, one entry per user (on every node, with a broker).
    pub async fn channel_members(&self, channel: &str) -> Result<Vec<Member>, ChannelError> {
        self.shared.presence(Caller::Backend, channel).await
    }

    /// Closes every connection of a user with 4006 (clients do not reconnect), on every node
    /// when there is a broker; returns how many were closed on this node.
    pub fn disconnect_user(&self, user_id: &str) -> usize {
        if let Some(broker) = self.shared.hub.broker() {
            broker.tell_all(ClusterMessage::Disconnect {
                user_id: user_id.to_owned(),
            });
        }
        self.shared
            .hub
            .disconnect_user(user_id, Code::Disconnected, "disconnected by the server")
    }

    /// Counts of connections, users, channels and deliveries.
    pub fn stats(&self) -> Stats {
        let hub = &self.shared.hub;
        let (connections, users, channels) = hub.sizes();
        let counted = hub.counters.snapshot();
        let (queued_frames, queued_bytes, peak_queue_bytes) = hub.queues();
        let cluster = hub
            .cluster_sizes()
            .map(|(all_connections, all_users, others)| {
                let load = others.iter().filter_map(|node| node.load);
                ClusterStats {
                    node: hub.node_name().unwrap_or_default().to_owned(),
                    nodes: others.len() + 1,
                    connections: all_connections,
                    users: all_users,
                    publications: load
                        .clone()
                        .fold(counted.publications, |sum, l| sum + l.publications),
                    deliveries: load.fold(counted.deliveries, |sum, l| sum + l.deliveries),
                    others: others
                        .into_iter()
                        .map(|node| NodeStats {
                            node: node.node,
                            heard_ms_ago: u64::try_from(node.age.as_millis()).unwrap_or(u64::MAX),
                            load: node.load,
                        })
                        .collect(),
                }
            });
        Stats {
            cluster,
            queued_frames,
            queued_bytes,
            peak_queue_bytes,
            connections,
            users,
            channels,
            publications: counted.publications,
            deliveries: counted.deliveries,
            dropped: counted.dropped,
            slow_consumers: counted.slow_consumers,
        }
    }

    /// Stops accepting connections, tells every client `shutdown` with a jittered
    /// `reconnect_after_ms`, closes them with 1012 and waits (up to the configured deadline)
    /// until they are gone.
    pub async fn shutdown(&self) {
        self.shared.shutting_down.store(true, Ordering::SeqCst);
        let spread = crate::time::millis(self.shared.config.shutdown_reconnect_spread);
        let conns = self.shared.hub.all_connections();
        tracing::info!(connections = conns.len(), "shutting down");
        for conn in &conns {
            conn.send(&ServerFrame::push(ServerMessage::Shutdown(
                tidings_protocol::messages::Shutdown {
                    reason: "restart".to_owned(),
                    reconnect_after_ms: rand::random_range(0..=spread),
                },
            )));
            conn.outbox.close(Code::ServerRestart, "server restart");
        }
        let deadline = tokio::time::Instant::now() + self.shared.config.shutdown_deadline;
        while self.shared.hub.sizes().0 > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if let Some(inbox) = &self.shared.hub.stores().inbox
            && let Err(e) = inbox.flush().await
        {
            tracing::warn!(error = %e, "inbox positions not written at shutdown");
        }
    }
}
