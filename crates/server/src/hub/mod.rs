//! The hub: channels, their subscribers and members, and fan-out of publications.
//!
//! Each channel has one async lock that orders everything that happens to it: storing a
//! publication and queueing it for subscribers, and a subscriber's join with its recovery.
//! So a recovering subscriber gets the missed publications, then the live ones, with no gap
//! and no duplicate. Fan-out only pushes shared, pre-encoded frames into connection
//! outboxes; no lock is ever held while writing to a socket.
//!
//! Nothing here assumes one process holds every connection of a user: delivery counts are
//! "connections reached on this node"; with a broker, presence (members, users, their
//! connection counts) is cluster-wide through `cluster`.
//!
//! - `channel`: a channel's state under its lock, and [`Conn`].
//! - `membership`: subscribe (with recovery), unsubscribe, presence and typing.
//! - `remote`: what other nodes publish, in offset order.
//! - `cluster`: presence across nodes.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use dashmap::DashMap;
use tidings_protocol::{BROADCAST_CHANNEL, Code, Delivery, RawEvent};
use tokio::sync::oneshot;

use crate::broker::Broker;
use crate::metrics::Counters;
use crate::outbox::{Outbox, Outgoing, Pushed};
use crate::store::{Append, Position, Publication, StoreError, Stores, WebhookFn};
use crate::time::now_ms;
use crate::webhooks::Webhooks;

mod channel;
mod cluster;
mod membership;
mod remote;
#[cfg(test)]
mod tests;

pub(crate) use channel::Conn;
use channel::{Channel, ChannelState, Locked, Pending};
use cluster::ClusterView;
pub(crate) use cluster::NodeReport;
pub(crate) use membership::Asked;
pub(crate) use remote::{run_inbox, run_presence};

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

/// A publication the hub has taken: delivered already, or waiting for its commit.
#[derive(Debug)]
pub(crate) enum Submitted {
    /// Ephemeral: fanned out during the submit.
    Done(Published),
    /// Reliable: answered once committed and fanned out.
    Committing(oneshot::Receiver<Result<Published, StoreError>>),
}

impl Submitted {
    /// What the publish did, once it is durable and queued for subscribers.
    pub(crate) async fn outcome(self) -> Result<Published, StoreError> {
        match self {
            Submitted::Done(published) => Ok(published),
            Submitted::Committing(fanned_out) => fanned_out
                .await
                .map_err(|_| StoreError::Unavailable("the publication's task ended".into()))?,
        }
    }
}

/// Channels, users and the stores behind them.
pub(crate) struct Hub {
    channels: DashMap<Arc<str>, Arc<Channel>>,
    users: DashMap<Arc<str>, HashMap<u64, Arc<Conn>>>,
    stores: Stores,
    /// Other nodes, if any.
    broker: Option<Arc<dyn Broker>>,
    /// Their presence, with a broker.
    cluster: Option<ClusterView>,
    /// Webhook endpoints, if any (then `stores.outbox` is set: the builder checks).
    webhooks: Option<Arc<Webhooks>>,
    /// Channels with more members than this get no `user_joined`/`user_left` frames: each
    /// would go to every member, so a crowd joining costs members² frames.
    presence_events_max_members: usize,
    /// A recovery asked for that would replay more publications than this says
    /// `recovered: false` (`Config::recovery_limit`; 0 there is `u64::MAX` here).
    recovery_limit: u64,
    next_conn: AtomicU64,
    /// Names pending publications, so a commit finds its entry in the channel's queue.
    next_ticket: AtomicU64,
    pub(crate) counters: Counters,
}

impl Hub {
    pub(crate) fn new(
        stores: Stores,
        broker: Option<Arc<dyn Broker>>,
        webhooks: Option<Arc<Webhooks>>,
        presence_events_max_members: usize,
        recovery_limit: u64,
        presence_ttl: std::time::Duration,
    ) -> Hub {
        Hub {
            cluster: broker
                .as_ref()
                .map(|broker| ClusterView::new(broker.node(), presence_ttl)),
            presence_events_max_members,
            recovery_limit: if recovery_limit == 0 {
                u64::MAX
            } else {
                recovery_limit
            },
            channels: DashMap::new(),
            users: DashMap::new(),
            stores,
            broker,
            webhooks,
            next_conn: AtomicU64::new(1),
            next_ticket: AtomicU64::new(1),
            counters: Counters::default(),
        }
    }

    pub(crate) fn stores(&self) -> &Stores {
        &self.stores
    }

    /// This node's broker, if it has one.
    pub(crate) fn broker(&self) -> Option<&Arc<dyn Broker>> {
        self.broker.as_ref()
    }

    /// The most publications one recovery replays.
    pub(crate) fn recovery_limit(&self) -> u64 {
        self.recovery_limit
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
        let elsewhere = self
            .cluster
            .as_ref()
            .map_or(0, |cluster| cluster.user_elsewhere(&user_id));
        let mut conns = self.users.entry(user_id.clone()).or_default();
        if limit > 0 && conns.len() + elsewhere >= limit {
            return None;
        }
        conns.insert(conn.id, conn.clone());
        if let Some(cluster) = &self.cluster {
            cluster.set_own_user(&user_id, conns.len());
        }
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
        self.users.remove_if_mut(&conn.user_id, |user, conns| {
            conns.remove(&conn.id);
            if let Some(cluster) = &self.cluster {
                cluster.set_own_user(user, conns.len());
            }
            conns.is_empty()
        });
    }

    fn channel(&self, name: &str) -> Arc<Channel> {
        if let Some(channel) = self.channels.get(name) {
            return channel.clone();
        }
        self.channels.entry(Arc::from(name)).or_default().clone()
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
                    state,
                };
            }
        }
    }

    /// The last offset fanned out on this node: set by each fan-out, or read from the store
    /// when nothing is pending (then the store's position is exactly what was fanned out).
    /// `None` while publications are pending on a channel that has not fanned out yet since
    /// it was (re)created: the caller waits for them.
    async fn delivered(
        &self,
        state: &mut ChannelState,
        channel: &str,
    ) -> Result<Option<Position>, StoreError> {
        if let Some(position) = &state.delivered {
            return Ok(Some(position.clone()));
        }
        if !state.pending.is_empty() {
            return Ok(None);
        }
        let position = self.stores.publications.position(channel).await?;
        state.delivered = Some(position.clone());
        Ok(Some(position))
    }

    /// Locks a channel once its fanned-out position is known (waiting out publications
    /// submitted before the channel had fanned anything out).
    async fn lock_positioned<'a>(
        &'a self,
        channel: &'a str,
    ) -> Result<(Locked<'a>, Position), StoreError> {
        loop {
            let mut state = self.lock(channel).await;
            if let Some(position) = self.delivered(&mut state, channel).await? {
                return Ok((state, position));
            }
            drop(state);
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
    }

    /// Stores (unless ephemeral) and fans out one publication: takes its place in its
    /// channel and returns without waiting for its commit ([`Submitted::outcome`] does).
    ///
    /// An ephemeral publication is fanned out at once. A reliable one is submitted to the
    /// store under the channel's lock (so offsets follow the order of `submit` calls),
    /// committed without it (so concurrent publishes share commits), and fanned out in offset
    /// order by a task of its own: dropping the [`Submitted`] neither loses nor stalls it. A
    /// connection can so submit its next publish while earlier ones commit.
    pub(crate) async fn submit(
        self: &Arc<Self>,
        channel: &str,
        event: RawEvent,
        sender: Option<Arc<str>>,
        delivery: Delivery,
    ) -> Result<Submitted, StoreError> {
        let name: Arc<str> = Arc::from(channel);
        if delivery == Delivery::Ephemeral {
            let (state, position) = self.lock_positioned(channel).await?;
            let epoch = position.epoch;
            let publication =
                Arc::new(Publication::new(name, None, epoch, now_ms(), sender, event));
            let delivered = self.fan_out(&state, &publication, delivery);
            self.forward(&publication);
            return Ok(Submitted::Done(Published {
                offset: None,
                epoch: publication.epoch.to_string(),
                delivered,
            }));
        }
        let append = Append {
            channel: name.clone(),
            ts: now_ms(),
            sender,
            event,
        };
        let fanned_out = {
            let mut state = self.lock(channel).await;
            let committing = match (&self.webhooks, &self.stores.outbox) {
                (Some(hooks), Some(outbox)) => {
                    let hooks = hooks.clone();
                    let records: WebhookFn =
                        Arc::new(move |p: &Publication| hooks.for_publication(p));
                    outbox.submit_with_webhooks(append, records)
                }
                _ => self.stores.publications.submit(append),
            };
            let ticket = self.next_ticket.fetch_add(1, Ordering::Relaxed);
            let (told, fanned_out) = oneshot::channel();
            state.pending.push_back(Pending {
                ticket,
                committed: None,
                fanned_out: Some(told),
            });
            let hub = self.clone();
            tokio::spawn(async move {
                let committed = committing.await;
                let mut state = hub.lock(&name).await;
                if let Some(entry) = state.pending.iter_mut().find(|p| p.ticket == ticket) {
                    entry.committed = Some(committed);
                }
                hub.fan_out_committed(&mut state).await;
            });
            fanned_out
        };
        Ok(Submitted::Committing(fanned_out))
    }

    /// Fans out the committed publications at the front of the pending queue, in order.
    async fn fan_out_committed(&self, state: &mut ChannelState) {
        while state.pending.front().is_some_and(|p| p.committed.is_some()) {
            let Some(mut entry) = state.pending.pop_front() else {
                break;
            };
            let outcome = match entry.committed.take() {
                Some(Ok(publication)) => {
                    let delivered = if self.broker.is_some() {
                        // Other nodes publish to this channel too: in offset order, once.
                        self.fan_out_in_order(state, &publication).await
                    } else {
                        let delivered = self.fan_out(state, &publication, Delivery::Reliable);
                        state.delivered = Some(Position {
                            epoch: publication.epoch.clone(),
                            offset: publication.offset.unwrap_or_default(),
                        });
                        delivered
                    };
                    self.forward(&publication);
                    Ok(Published {
                        offset: publication.offset,
                        epoch: publication.epoch.to_string(),
                        delivered,
                    })
                }
                Some(Err(e)) => Err(e),
                None => continue,
            };
            if let Some(told) = entry.fanned_out.take() {
                let _ = told.send(outcome);
            }
        }
    }

    /// Hands a publication to the broker (other nodes), in this channel's order.
    fn forward(&self, publication: &Arc<Publication>) {
        if let Some(broker) = &self.broker {
            broker.publish(publication);
        }
    }

    /// Queues a webhook event (no-op without webhooks).
    pub(crate) fn emit(&self, kind: &str, channel: Option<&str>, data: serde_json::Value) {
        if let (Some(hooks), Some(outbox)) = (&self.webhooks, &self.stores.outbox) {
            hooks.emit(outbox, kind, channel, data);
        }
    }

    fn fan_out(
        &self,
        state: &ChannelState,
        publication: &Publication,
        delivery: Delivery,
    ) -> usize {
        self.counters.publication();
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
        self.counters.deliveries(delivered as u64);
        delivered
    }

    /// Pushes one frame, counting drops and slow consumers.
    fn deliver(&self, conn: &Conn, item: Outgoing) -> bool {
        match conn.outbox.push(item) {
            Pushed::Queued | Pushed::Coalesced => true,
            Pushed::Dropped => {
                self.counters.dropped();
                false
            }
            Pushed::Overflowed => {
                self.counters.slow_consumer();
                tracing::info!(session = %conn.session_id, user = %conn.user_id, "slow consumer closed with 4009");
                false
            }
            Pushed::Closed => false,
        }
    }

    /// Queues an event for every connection on this node; returns how many.
    pub(crate) fn broadcast(&self, event: RawEvent, sender: Option<Arc<str>>) -> usize {
        let publication = Publication::new(
            Arc::from(BROADCAST_CHANNEL),
            None,
            Arc::from(""),
            now_ms(),
            sender,
            event,
        );
        self.counters.publication();
        let item = Outgoing::reliable(publication.frame());
        let mut delivered = 0;
        for user in self.users.iter() {
            for conn in user.values() {
                delivered += usize::from(self.deliver(conn, item.clone()));
            }
        }
        self.counters.deliveries(delivered as u64);
        delivered
    }

    /// How many connections the user has (on every node, with a broker).
    pub(crate) fn user_connections(&self, user_id: &str) -> usize {
        let here = self.users.get(user_id).map_or(0, |conns| conns.len());
        here + self
            .cluster
            .as_ref()
            .map_or(0, |cluster| cluster.user_elsewhere(user_id))
    }

    /// Users with at least one connection (on any node, with a broker), sorted.
    pub(crate) fn connected_users(&self) -> Vec<String> {
        let mut users: std::collections::HashSet<String> = self
            .cluster
            .as_ref()
            .map(|cluster| cluster.users_elsewhere())
            .unwrap_or_default();
        users.extend(self.users.iter().map(|e| e.key().to_string()));
        let mut users: Vec<String> = users.into_iter().collect();
        users.sort();
        users
    }

    /// Connections and distinct users on every node, and the other nodes' last reports;
    /// `None` without a broker.
    pub(crate) fn cluster_sizes(&self) -> Option<(usize, usize, Vec<NodeReport>)> {
        let cluster = self.cluster.as_ref()?;
        let (here, _, _) = self.sizes();
        let connections = here + cluster.connections_elsewhere();
        let users = self.connected_users().len();
        Some((connections, users, cluster.nodes(std::time::Instant::now())))
    }

    /// This node's name in the cluster, with a broker.
    pub(crate) fn node_name(&self) -> Option<&str> {
        self.cluster.as_ref().map(ClusterView::node)
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
