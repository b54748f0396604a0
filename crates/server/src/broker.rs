//! The seam for several nodes: a [`Broker`] carries publications and presence changes between
//! Tidings nodes (Redis or NATS implementations plug in here). A single node needs none.
//!
//! Contract: the publishing node stores the publication and delivers it to its own
//! subscribers, then hands it to [`Broker::publish`] while still holding the channel's lock,
//! so the broker sees each channel's publications in offset order. Every other node passes
//! what it receives to [`Tidings::deliver_remote`](crate::Tidings::deliver_remote), which
//! fans it out to that node's subscribers without storing it again.

use std::sync::Arc;

use async_trait::async_trait;

use crate::store::Publication;

/// Why a broker operation failed. The publication is stored and delivered locally either
/// way; remote subscribers recover it from the store when they notice the gap.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BrokerError {
    /// The broker is unreachable or refused the message.
    #[error("broker unavailable: {0}")]
    Unavailable(String),
}

/// Carries publications and presence between nodes.
#[async_trait]
pub trait Broker: Send + Sync + 'static {
    /// Sends a stored publication to the other nodes.
    async fn publish(&self, publication: &Arc<Publication>) -> Result<(), BrokerError>;

    /// Announces that `user_id` made its first join (`joined`) or last leave of `channel` on
    /// this node, so other nodes can keep cluster-wide presence.
    async fn presence(&self, channel: &str, user_id: &str, joined: bool)
    -> Result<(), BrokerError>;
}
