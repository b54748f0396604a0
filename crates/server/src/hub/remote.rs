//! Several nodes: publications from other nodes, fanned out in offset order, with gaps
//! filled from the shared store (see [`crate::broker`]).

use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use tidings_protocol::{Code, Delivery};
use tokio::sync::mpsc;

use super::Hub;
use super::channel::ChannelState;
use crate::broker::{ClusterMessage, Incoming, NodeLoad, PresenceReport};
use crate::store::{Position, Publication};

/// Publications read per page when filling a gap.
const FILL_PAGE: usize = 256;

impl Hub {
    /// Delivers a publication that another node stored (or sent ephemerally) to this node's
    /// subscribers, after any it is missing; returns how many connections it reached.
    pub(crate) async fn deliver_remote(&self, publication: &Publication) -> usize {
        let mut state = self.lock(&publication.channel).await;
        if state.subscribers.is_empty() {
            return 0;
        }
        if publication.offset.is_none() {
            return self.fan_out(&state, publication, Delivery::Ephemeral);
        }
        self.fan_out_in_order(&mut state, publication).await
    }

    /// Fans out a stored publication unless this node delivered it already, after filling
    /// from the store any offsets between the last one delivered here and it.
    pub(super) async fn fan_out_in_order(
        &self,
        state: &mut ChannelState,
        publication: &Publication,
    ) -> usize {
        let offset = publication.offset.unwrap_or_default();
        if let Some(delivered) = state.delivered.clone()
            && *delivered.epoch == *publication.epoch
        {
            if offset <= delivered.offset {
                return 0;
            }
            if offset > delivered.offset.saturating_add(1) {
                self.fill(state, &publication.channel, delivered.offset, offset)
                    .await;
                let filled = state.delivered.as_ref().map_or(0, |p| p.offset);
                // The store commits before the broker hears of a publication: an offset the
                // store has not reached is not a publication (a stray or forged message), and
                // taking it would make this node skip the real ones up to it.
                if filled.saturating_add(1) < offset
                    && !self
                        .is_stored(&publication.channel, &publication.epoch, offset)
                        .await
                {
                    tracing::warn!(channel = %publication.channel, offset, "a broker message names an offset the store does not have: ignored");
                    return 0;
                }
            }
        }
        let reached = self.fan_out(state, publication, Delivery::Reliable);
        state.delivered = Some(Position {
            epoch: publication.epoch.clone(),
            offset,
        });
        reached
    }

    /// Fans out the stored publications with `after < offset < before`, in pages.
    async fn fill(&self, state: &mut ChannelState, channel: &str, after: u64, before: u64) {
        let mut cursor = after;
        loop {
            let page = match self
                .stores
                .publications
                .history(channel, Some(cursor), Some(before), FILL_PAGE)
                .await
            {
                Ok(page) => page,
                Err(e) => {
                    tracing::warn!(channel, error = %e, "could not fill a gap from the store");
                    return;
                }
            };
            for publication in &page {
                self.fan_out(state, publication, Delivery::Reliable);
            }
            let Some(last) = page.last() else {
                return;
            };
            cursor = last.offset.unwrap_or(before);
            state.delivered = Some(Position {
                epoch: last.epoch.clone(),
                offset: cursor,
            });
            self.counters.gap_filled(page.len() as u64);
            if page.len() < FILL_PAGE || cursor.saturating_add(1) >= before {
                return;
            }
        }
    }

    /// Whether the store's `channel` has reached `offset` in `epoch`.
    async fn is_stored(&self, channel: &str, epoch: &str, offset: u64) -> bool {
        match self.stores.publications.position(channel).await {
            Ok(position) => *position.epoch == *epoch && position.offset >= offset,
            Err(e) => {
                tracing::warn!(channel, error = %e, "could not check a broker message against the store");
                false
            }
        }
    }

    /// Delivers whatever the store holds past what this node delivered on `channel` (after
    /// its broker subscription started, or messages were lost).
    pub(crate) async fn catch_up(&self, channel: &str) {
        let mut state = self.lock(channel).await;
        if state.subscribers.is_empty() {
            return;
        }
        let Some(delivered) = state.delivered.clone() else {
            return;
        };
        let position = match self.stores.publications.position(channel).await {
            Ok(position) => position,
            Err(e) => {
                tracing::warn!(channel, error = %e, "could not catch up from the store");
                return;
            }
        };
        if *position.epoch == *delivered.epoch && position.offset > delivered.offset {
            self.fill(
                &mut state,
                channel,
                delivered.offset,
                position.offset.saturating_add(1),
            )
            .await;
        }
    }

    /// [`catch_up`](Self::catch_up) on every channel with subscribers here.
    pub(crate) async fn catch_up_all(&self) {
        let names: Vec<Arc<str>> = self.channels.iter().map(|e| e.key().clone()).collect();
        for name in names {
            self.catch_up(&name).await;
        }
    }

    /// Tells the broker that this node now has subscribers in `channel` (once per channel
    /// state; the retiring channel says the opposite).
    pub(super) fn interested(&self, state: &mut ChannelState, channel: &str) {
        if let Some(broker) = &self.broker
            && !state.interested
        {
            state.interested = true;
            broker.interest(channel, true);
        }
    }
}

/// How often a node sends what changed in its presence.
const PRESENCE_EVERY: Duration = Duration::from_millis(50);

impl Hub {
    /// Applies another node's presence report and tells this node's subscribers.
    async fn presence_report(&self, report: PresenceReport) {
        let Some(cluster) = &self.cluster else {
            return;
        };
        let from = report.node.clone();
        let applied = cluster.apply(report, Instant::now());
        if applied.ask_whole {
            self.ask_presence(Some(from));
        }
        for change in applied.changes {
            self.tell_presence(&change.channel, &change.user, change.joined, false)
                .await;
        }
    }

    /// Asks `of` (or every node) for its whole presence.
    fn ask_presence(&self, of: Option<String>) {
        if let (Some(broker), Some(cluster)) = (&self.broker, &self.cluster) {
            broker.tell_all(ClusterMessage::PresenceWanted {
                node: cluster.node().to_owned(),
                of,
            });
        }
    }

    /// This node's counters for its heartbeat.
    fn load(&self) -> NodeLoad {
        let (connections, users, channels) = self.sizes();
        let counted = self.counters.snapshot();
        NodeLoad {
            connections: connections as u64,
            users: users as u64,
            channels: channels as u64,
            publications: counted.publications,
            deliveries: counted.deliveries,
        }
    }
}

/// Sends this node's presence to the others (what changed, and everything with its
/// counters every third of the TTL) and forgets nodes gone silent, until the hub is gone.
pub(crate) async fn run_presence(hub: Weak<Hub>) {
    let heartbeat = match hub.upgrade() {
        Some(hub) => {
            hub.ask_presence(None);
            hub.cluster.as_ref().map(|cluster| cluster.heartbeat())
        }
        None => None,
    };
    let Some(heartbeat) = heartbeat else {
        return;
    };
    let mut ticker = tokio::time::interval(PRESENCE_EVERY);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut beaten = Instant::now();
    loop {
        ticker.tick().await;
        let Some(hub) = hub.upgrade() else {
            return;
        };
        let (Some(broker), Some(cluster)) = (&hub.broker, &hub.cluster) else {
            return;
        };
        let now = Instant::now();
        let load = if now.saturating_duration_since(beaten) >= heartbeat {
            beaten = now;
            Some(hub.load())
        } else {
            None
        };
        for report in cluster.reports(load) {
            broker.tell_all(ClusterMessage::Presence(report));
        }
        let gone = cluster.expire(now);
        if !gone.is_empty() {
            let announce = cluster.speaks_for_cluster();
            for change in gone {
                hub.tell_presence(&change.channel, &change.user, change.joined, announce)
                    .await;
            }
        }
    }
}

/// Carries what the broker receives into the hub until either is gone.
pub(crate) async fn run_inbox(hub: Weak<Hub>, mut inbox: mpsc::Receiver<Incoming>) {
    while let Some(incoming) = inbox.recv().await {
        let Some(hub) = hub.upgrade() else {
            return;
        };
        match incoming {
            Incoming::Publication(publication) => {
                hub.deliver_remote(&publication).await;
            }
            Incoming::Subscribed(channel) => hub.catch_up(&channel).await,
            Incoming::Resynced => {
                // Presence reports may have been lost both ways.
                hub.ask_presence(None);
                if let Some(cluster) = &hub.cluster {
                    cluster.want_whole();
                }
                hub.catch_up_all().await;
            }
            Incoming::Cluster(ClusterMessage::Broadcast { event, sender }) => {
                hub.broadcast(event, sender.map(Arc::from));
            }
            Incoming::Cluster(ClusterMessage::Typing { channel, user_id }) => {
                hub.typing_remote(&channel, &user_id).await;
            }
            Incoming::Cluster(ClusterMessage::Disconnect { user_id }) => {
                hub.disconnect_user(&user_id, Code::Disconnected, "disconnected by the server");
            }
            Incoming::Cluster(ClusterMessage::Presence(report)) => {
                hub.presence_report(report).await;
            }
            Incoming::Cluster(ClusterMessage::PresenceWanted { of, .. }) => {
                if let Some(cluster) = &hub.cluster
                    && of.as_deref().is_none_or(|of| of == cluster.node())
                {
                    cluster.want_whole();
                }
            }
        }
    }
}
