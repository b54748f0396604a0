//! Where publications, inbox positions and webhook events are kept, as three traits that say
//! what each feature needs:
//!
//! | trait | feature | without it |
//! |---|---|---|
//! | [`PublicationStore`] | offsets, recovery, history, retention | (required) |
//! | [`InboxStore`] | the offline inbox: a device's position in its `user:{id}` channel | a connection's personal channel starts at the live position, `ack` is refused |
//! | [`WebhookOutbox`] | webhooks from a durable queue, written with the publication | configuring webhooks is a [`BuildError`](crate::BuildError) |
//!
//! [`MemoryStore`] and [`SqlStore`](crate::sql_store::SqlStore) implement all three; give
//! them to [`TidingsBuilder::store`](crate::TidingsBuilder::store). A custom store may
//! implement only [`PublicationStore`] and be given with
//! [`TidingsBuilder::publication_store`](crate::TidingsBuilder::publication_store).

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use axum::extract::ws::Utf8Bytes;
use futures_util::future::BoxFuture;
use tidings_protocol::messages::MessageBody;
use tidings_protocol::{RawEvent, ServerFrame, ServerMessage};

use crate::webhook_queue::{WebhookQueue, WebhookRecord};

mod memory;
mod retention;

pub use memory::MemoryStore;
pub use retention::prune_all;

/// Makes the webhook records for a stored publication (see
/// [`WebhookOutbox::submit_with_webhooks`]).
pub type WebhookFn = Arc<dyn Fn(&Publication) -> Vec<WebhookRecord> + Send + Sync>;

/// A publication waiting for its commit: resolves once it is durable, with its offset.
pub type Committing = BoxFuture<'static, Result<Arc<Publication>, StoreError>>;

/// A publication to store.
#[derive(Debug, Clone)]
pub struct Append {
    /// The channel.
    pub channel: Arc<str>,
    /// Milliseconds since the Unix epoch.
    pub ts: u64,
    /// The publishing user, if a user published it.
    pub sender: Option<Arc<str>>,
    /// The event.
    pub event: RawEvent,
}

/// One stored publication.
#[derive(Debug)]
pub struct Publication {
    /// The channel.
    pub channel: Arc<str>,
    /// Its offset in the channel (`None` for ephemeral publications, never stored).
    pub offset: Option<u64>,
    /// The channel's epoch when it was published.
    pub epoch: Arc<str>,
    /// Milliseconds since the Unix epoch.
    pub ts: u64,
    /// The publishing user, if a user published it.
    pub sender: Option<Arc<str>>,
    /// The event.
    pub event: RawEvent,
    /// The `message` frame, encoded once on first use and shared by every recipient.
    frame: OnceLock<Utf8Bytes>,
}

impl Publication {
    /// A publication with its position.
    pub fn new(
        channel: Arc<str>,
        offset: Option<u64>,
        epoch: Arc<str>,
        ts: u64,
        sender: Option<Arc<str>>,
        event: RawEvent,
    ) -> Publication {
        Publication {
            channel,
            offset,
            epoch,
            ts,
            sender,
            event,
            frame: OnceLock::new(),
        }
    }

    /// The publication as a `message` frame's data.
    pub fn to_message(&self) -> MessageBody {
        MessageBody {
            channel: self.channel.to_string(),
            offset: self.offset,
            epoch: self.epoch.to_string(),
            ts: self.ts,
            sender: self.sender.as_deref().map(str::to_owned),
            event: self.event.clone(),
        }
    }

    /// The encoded `message` frame (computed once).
    pub fn frame(&self) -> Utf8Bytes {
        self.frame
            .get_or_init(|| {
                let frame = ServerFrame::push(ServerMessage::Message(self.to_message()));
                Utf8Bytes::from(frame.encode())
            })
            .clone()
    }
}

/// A channel's position: its epoch and latest offset (0 before the first publication).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Position {
    /// Changes only when the channel's history was lost.
    pub epoch: Arc<str>,
    /// The latest offset.
    pub offset: u64,
}

/// The answer to "what did I miss since (epoch, offset)?".
#[derive(Debug)]
pub struct Recovery {
    /// The channel's position now.
    pub position: Position,
    /// Whether `publications` is exactly everything after the requested offset.
    pub recovered: bool,
    /// The missed publications, in offset order (empty when not recovered).
    pub publications: Vec<Arc<Publication>>,
}

/// Why a store operation failed.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The backing store is unreachable or failed.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The store holds data it cannot read back (or was given a value it cannot keep).
    #[error("store data invalid: {0}")]
    Invalid(String),
}

/// Keeps publications so that reconnecting clients can get what they missed.
///
/// Appends are submitted, not awaited, under the channel's lock: a store assigns offsets in
/// submission order per channel (gap-free), and may commit many submissions together (one
/// transaction and one fsync for all of them). The hub waits for each commit without the
/// lock and fans publications out in offset order.
#[async_trait]
pub trait PublicationStore: Send + Sync + 'static {
    /// Queues a publication behind every earlier submission; the returned future resolves
    /// once it is durable, with its offset. Nothing is acknowledged before that.
    fn submit(&self, append: Append) -> Committing;

    /// Stores a publication and waits until it is durable.
    async fn append(
        &self,
        channel: &Arc<str>,
        ts: u64,
        sender: Option<Arc<str>>,
        event: RawEvent,
    ) -> Result<Arc<Publication>, StoreError> {
        let append = Append {
            channel: channel.clone(),
            ts,
            sender,
            event,
        };
        self.submit(append).await
    }

    /// The channel's current position.
    async fn position(&self, channel: &str) -> Result<Position, StoreError>;

    /// Publications after `offset` if `epoch` is still the channel's epoch and history
    /// reaches back far enough.
    async fn recover(
        &self,
        channel: &str,
        epoch: &str,
        offset: u64,
    ) -> Result<Recovery, StoreError>;

    /// At most `limit` stored publications of `channel` with `since < offset < before`, in
    /// offset order. With `since`, the oldest of them (paging forward); without, the newest
    /// (paging back from `before`, or from the latest).
    async fn history(
        &self,
        channel: &str,
        since: Option<u64>,
        before: Option<u64>,
        limit: usize,
    ) -> Result<Vec<Arc<Publication>>, StoreError>;

    /// Deletes what is beyond retention: all but the latest `max_count` publications of every
    /// channel in `scope`, and those older than `max_age`. Channels keep their position
    /// (offsets continue); recovering from before the oldest kept publication then says
    /// `recovered: false`. Returns how many publications were deleted.
    async fn prune(
        &self,
        scope: &PruneScope,
        max_count: Option<u64>,
        max_age: Option<Duration>,
    ) -> Result<u64, StoreError>;
}

/// Keeps each device's position in its user's personal channel: the offline inbox.
#[async_trait]
pub trait InboxStore: Send + Sync + 'static {
    /// Records that `device` of `user_id` processed its personal channel up to `offset` of
    /// `epoch`. Stores keep the highest offset per epoch.
    async fn ack(
        &self,
        user_id: &str,
        device: &str,
        epoch: &str,
        offset: u64,
    ) -> Result<(), StoreError>;

    /// Where a connection of `device` starts its personal channel: that device's last ack,
    /// else the user's most recent ack on any device, else `None` (the start of history).
    async fn inbox_start(
        &self,
        user_id: &str,
        device: &str,
    ) -> Result<Option<InboxStart>, StoreError>;

    /// Writes acks a store keeps in memory for a while (called at shutdown); returns once
    /// they are durable.
    async fn flush(&self) -> Result<(), StoreError>;
}

/// A store that keeps the webhook queue beside the publications, so that a publication and
/// its webhook records are written together: no acknowledged publication misses its
/// webhooks.
pub trait WebhookOutbox: PublicationStore + WebhookQueue {
    /// Like [`PublicationStore::submit`], and stores the webhook records `webhooks` makes
    /// from the publication in the same commit.
    fn submit_with_webhooks(&self, append: Append, webhooks: WebhookFn) -> Committing;
}

/// A store with every feature: publications, the offline inbox and the webhook outbox.
pub trait Store: PublicationStore + InboxStore + WebhookOutbox {}

impl<S: PublicationStore + InboxStore + WebhookOutbox> Store for S {}

/// The stores a node uses, one per feature; `None` turns the feature off.
#[derive(Clone)]
pub(crate) struct Stores {
    pub(crate) publications: Arc<dyn PublicationStore>,
    pub(crate) inbox: Option<Arc<dyn InboxStore>>,
    pub(crate) outbox: Option<Arc<dyn WebhookOutbox>>,
}

impl Stores {
    /// Every feature from one store.
    pub(crate) fn complete(store: Arc<dyn Store>) -> Stores {
        Stores {
            publications: store.clone(),
            inbox: Some(store.clone()),
            outbox: Some(store),
        }
    }
}

/// Opens the store the configuration names: in memory (`storage.ephemeral`), PostgreSQL or
/// SQLite by URL (`storage.database_url`), else SQLite in `storage.data_dir` (needs the
/// `sqlite` feature).
pub async fn open(config: &crate::Config) -> Result<Arc<dyn Store>, StoreError> {
    let storage = &config.storage;
    if storage.ephemeral {
        return Ok(Arc::new(MemoryStore::for_config(config)));
    }
    #[cfg(any(feature = "sqlite", feature = "postgres"))]
    if let Some(url) = &storage.database_url {
        return Ok(Arc::new(crate::sql_store::SqlStore::connect(url).await?));
    }
    #[cfg(feature = "sqlite")]
    return Ok(Arc::new(
        crate::sql_store::SqlStore::sqlite(&storage.data_dir).await?,
    ));
    #[cfg(not(feature = "sqlite"))]
    Err(StoreError::Invalid(
        "durable storage needs the `sqlite` or `postgres` feature (or storage.ephemeral)".into(),
    ))
}

/// Where a device's offline inbox starts (see [`InboxStore::inbox_start`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboxStart {
    /// The epoch of the acknowledged offset.
    pub epoch: String,
    /// The last acknowledged offset.
    pub offset: u64,
    /// Whether the device itself acknowledged it (`false`: another device of the user did).
    pub own: bool,
}

/// The channels a [`PublicationStore::prune`] applies to: those matching `pattern`
/// (`prefix*`, an exact name, or `*` for all) and none of `except` (the patterns of the
/// classes listed before it, which have their own retention).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PruneScope {
    /// Channels to prune.
    pub pattern: String,
    /// Channels to leave alone.
    pub except: Vec<String>,
}

impl PruneScope {
    /// Every channel.
    pub fn all() -> PruneScope {
        PruneScope {
            pattern: "*".to_owned(),
            except: Vec::new(),
        }
    }

    /// Whether `channel` is in scope.
    pub fn contains(&self, channel: &str) -> bool {
        crate::auth::channel_matches(&self.pattern, channel)
            && !self
                .except
                .iter()
                .any(|pattern| crate::auth::channel_matches(pattern, channel))
    }
}
