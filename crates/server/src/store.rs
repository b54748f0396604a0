//! Where publications are kept for recovery: the [`PublicationStore`] trait and its in-memory
//! implementation. Durable stores (SQLite, PostgreSQL) implement the same trait.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::ws::Utf8Bytes;
use dashmap::DashMap;
use tidings_protocol::messages::MessageBody;
use tidings_protocol::{RawEvent, ServerFrame, ServerMessage};

use crate::webhook_queue::{MemoryWebhookQueue, WebhookQueue, WebhookRecord};

/// Makes the webhook records for a stored publication (see
/// [`PublicationStore::append_with_webhooks`]).
pub type WebhookFn<'a> = &'a (dyn Fn(&Publication) -> Vec<WebhookRecord> + Send + Sync);

/// A boxed, sendable future, so stores can be used as `dyn PublicationStore`.
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

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
#[derive(Debug, thiserror::Error)]
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
/// The hub calls `append` and `recover` while holding the channel's lock, so per channel the
/// calls never overlap: an implementation may rely on that for gap-free offsets.
pub trait PublicationStore: Send + Sync + 'static {
    /// Stores a publication and assigns its offset.
    fn append<'a>(
        &'a self,
        channel: &'a Arc<str>,
        ts: u64,
        sender: Option<Arc<str>>,
        event: RawEvent,
    ) -> StoreFuture<'a, Result<Arc<Publication>, StoreError>>;

    /// The channel's current position.
    fn position<'a>(&'a self, channel: &'a str) -> StoreFuture<'a, Result<Position, StoreError>>;

    /// Publications after `offset` if `epoch` is still the channel's epoch and history
    /// reaches back far enough.
    fn recover<'a>(
        &'a self,
        channel: &'a str,
        epoch: &'a str,
        offset: u64,
    ) -> StoreFuture<'a, Result<Recovery, StoreError>>;

    /// Records that `device` of `user_id` processed its personal channel up to `offset` of
    /// `epoch` (the offline inbox). Stores keep the highest offset per epoch.
    fn ack<'a>(
        &'a self,
        user_id: &'a str,
        device: &'a str,
        epoch: &'a str,
        offset: u64,
    ) -> StoreFuture<'a, Result<(), StoreError>> {
        let _ = (user_id, device, epoch, offset);
        Box::pin(async { Ok(()) })
    }

    /// Where a connection of `device` starts its personal channel: that device's last ack,
    /// else the user's most recent ack on any device, else `None` (the start of history).
    fn inbox_start<'a>(
        &'a self,
        user_id: &'a str,
        device: &'a str,
    ) -> StoreFuture<'a, Result<Option<InboxStart>, StoreError>> {
        let _ = (user_id, device);
        Box::pin(async { Ok(None) })
    }

    /// The store's webhook queue, if it keeps one.
    fn webhook_queue(&self) -> Option<&dyn WebhookQueue> {
        None
    }

    /// Stores a publication and the webhook records `webhooks` makes from it. Durable
    /// stores write both in one transaction, so no acknowledged publication misses its
    /// webhooks; this default writes them one after the other.
    fn append_with_webhooks<'a>(
        &'a self,
        channel: &'a Arc<str>,
        ts: u64,
        sender: Option<Arc<str>>,
        event: RawEvent,
        webhooks: WebhookFn<'a>,
    ) -> StoreFuture<'a, Result<Arc<Publication>, StoreError>> {
        Box::pin(async move {
            let publication = self.append(channel, ts, sender, event).await?;
            let records = webhooks(&publication);
            if let Some(queue) = self.webhook_queue()
                && !records.is_empty()
            {
                queue.enqueue(records).await?;
            }
            Ok(publication)
        })
    }

    /// At most `limit` stored publications of `channel` with `since < offset < before`, in
    /// offset order. With `since`, the oldest of them (paging forward); without, the newest
    /// (paging back from `before`, or from the latest). Stores keeping no history return none.
    fn history<'a>(
        &'a self,
        channel: &'a str,
        since: Option<u64>,
        before: Option<u64>,
        limit: usize,
    ) -> StoreFuture<'a, Result<Vec<Arc<Publication>>, StoreError>> {
        let _ = (channel, since, before, limit);
        Box::pin(async { Ok(Vec::new()) })
    }

    /// Deletes what is beyond retention: all but the latest `max_count` publications of every
    /// channel, and those older than `max_age`. Channels keep their position (offsets
    /// continue); recovering from before the oldest kept publication then says
    /// `recovered: false`. Returns how many publications were deleted.
    fn prune<'a>(
        &'a self,
        scope: &'a PruneScope,
        max_count: Option<u64>,
        max_age: Option<Duration>,
    ) -> StoreFuture<'a, Result<u64, StoreError>> {
        let _ = (scope, max_count, max_age);
        Box::pin(async { Ok(0) })
    }
}

/// Opens the store the configuration names: in memory (`storage.ephemeral`), PostgreSQL or
/// SQLite by URL (`storage.database_url`), else SQLite in `storage.data_dir`.
pub async fn open(config: &crate::Config) -> Result<Arc<dyn PublicationStore>, StoreError> {
    let storage = &config.storage;
    if storage.ephemeral {
        return Ok(Arc::new(MemoryStore::for_config(config)));
    }
    let store = match &storage.database_url {
        Some(url) => crate::sql_store::SqlStore::connect(url).await?,
        None => crate::sql_store::SqlStore::sqlite(&storage.data_dir).await?,
    };
    Ok(Arc::new(store))
}

/// Applies every channel class's retention once; returns how many publications were deleted.
/// Classes are matched in order, so each prune excludes the patterns listed before it.
pub async fn prune_all(
    store: &dyn PublicationStore,
    config: &crate::Config,
) -> Result<u64, StoreError> {
    let mut deleted = 0;
    let mut earlier = Vec::new();
    for class in &config.channels {
        if !class.ephemeral {
            let scope = PruneScope {
                pattern: class.pattern.clone(),
                except: earlier.clone(),
            };
            let size = class.history_size.unwrap_or(config.history_size);
            let ttl = class.history_ttl.unwrap_or(config.history_ttl);
            deleted += store.prune(&scope, Some(size as u64), Some(ttl)).await?;
        }
        earlier.push(class.pattern.clone());
    }
    let rest = PruneScope {
        pattern: "*".to_owned(),
        except: earlier,
    };
    deleted += store
        .prune(
            &rest,
            Some(config.history_size as u64),
            Some(config.history_ttl),
        )
        .await?;
    Ok(deleted)
}

/// Where a device's offline inbox starts (see [`PublicationStore::inbox_start`]).
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

/// Keeps the last `capacity` publications of every channel in memory. History is lost on
/// restart; a new epoch tells clients so (`recovered: false`).
#[derive(Debug)]
pub struct MemoryStore {
    capacity: usize,
    /// Random per process, so epochs from before a restart never match.
    instance: String,
    channels: DashMap<Arc<str>, Arc<Mutex<Log>>>,
    webhooks: MemoryWebhookQueue,
    /// user → device → acknowledgement: the offline inbox's positions. Keyed by user first
    /// so that a device's first connection finds the user's other devices without a scan.
    acks: DashMap<String, HashMap<String, DeviceAck>>,
}

/// One device's acknowledged position in the user's personal channel.
#[derive(Debug)]
struct DeviceAck {
    epoch: Arc<str>,
    offset: u64,
    /// When (ms), to find the user's most recent ack.
    at: u64,
}

#[derive(Debug)]
struct Log {
    epoch: Arc<str>,
    last_offset: u64,
    recent: VecDeque<Arc<Publication>>,
}

impl MemoryStore {
    /// A store keeping as many publications per channel as the largest channel class
    /// (retention then trims each class to its own size).
    pub fn for_config(config: &crate::Config) -> MemoryStore {
        let largest = config
            .channels
            .iter()
            .filter_map(|class| class.history_size)
            .fold(config.history_size, usize::max);
        MemoryStore::new(largest)
    }

    /// A store keeping `capacity` publications per channel.
    pub fn new(capacity: usize) -> MemoryStore {
        MemoryStore {
            capacity,
            instance: format!("{:08x}", rand::random::<u32>()),
            channels: DashMap::new(),
            webhooks: MemoryWebhookQueue::default(),
            acks: DashMap::new(),
        }
    }

    fn log(&self, channel: &str) -> Arc<Mutex<Log>> {
        if let Some(log) = self.channels.get(channel) {
            return log.clone();
        }
        self.channels
            .entry(Arc::from(channel))
            .or_insert_with(|| {
                Arc::new(Mutex::new(Log {
                    epoch: Arc::from(self.instance.as_str()),
                    last_offset: 0,
                    recent: VecDeque::new(),
                }))
            })
            .clone()
    }
}

fn lock(log: &Mutex<Log>) -> std::sync::MutexGuard<'_, Log> {
    log.lock().unwrap_or_else(|p| p.into_inner())
}

impl PublicationStore for MemoryStore {
    fn webhook_queue(&self) -> Option<&dyn WebhookQueue> {
        Some(&self.webhooks)
    }

    fn ack<'a>(
        &'a self,
        user_id: &'a str,
        device: &'a str,
        epoch: &'a str,
        offset: u64,
    ) -> StoreFuture<'a, Result<(), StoreError>> {
        let now = crate::hub::now_ms();
        let mut devices = self.acks.entry(user_id.to_owned()).or_default();
        match devices.get_mut(device) {
            Some(ack) => {
                if *ack.epoch != *epoch || ack.offset < offset {
                    if *ack.epoch != *epoch {
                        ack.epoch = Arc::from(epoch);
                    }
                    (ack.offset, ack.at) = (offset, now);
                }
            }
            None => {
                let ack = DeviceAck {
                    epoch: Arc::from(epoch),
                    offset,
                    at: now,
                };
                devices.insert(device.to_owned(), ack);
            }
        }
        Box::pin(async { Ok(()) })
    }

    fn inbox_start<'a>(
        &'a self,
        user_id: &'a str,
        device: &'a str,
    ) -> StoreFuture<'a, Result<Option<InboxStart>, StoreError>> {
        let start = self.acks.get(user_id).and_then(|devices| {
            let start = |ack: &DeviceAck, own: bool| InboxStart {
                epoch: ack.epoch.to_string(),
                offset: ack.offset,
                own,
            };
            match devices.get(device) {
                Some(ack) => Some(start(ack, true)),
                None => devices
                    .values()
                    .max_by_key(|ack| (ack.at, ack.offset))
                    .map(|ack| start(ack, false)),
            }
        });
        Box::pin(async { Ok(start) })
    }

    fn append<'a>(
        &'a self,
        channel: &'a Arc<str>,
        ts: u64,
        sender: Option<Arc<str>>,
        event: RawEvent,
    ) -> StoreFuture<'a, Result<Arc<Publication>, StoreError>> {
        Box::pin(async move {
            let log = self.log(channel);
            let mut log = lock(&log);
            log.last_offset += 1;
            let publication = Arc::new(Publication::new(
                channel.clone(),
                Some(log.last_offset),
                log.epoch.clone(),
                ts,
                sender,
                event,
            ));
            if self.capacity > 0 {
                if log.recent.len() >= self.capacity {
                    log.recent.pop_front();
                }
                log.recent.push_back(publication.clone());
            }
            Ok(publication)
        })
    }

    fn position<'a>(&'a self, channel: &'a str) -> StoreFuture<'a, Result<Position, StoreError>> {
        Box::pin(async move {
            let position = match self.channels.get(channel) {
                Some(log) => {
                    let log = lock(&log);
                    Position {
                        epoch: log.epoch.clone(),
                        offset: log.last_offset,
                    }
                }
                None => Position {
                    epoch: Arc::from(self.instance.as_str()),
                    offset: 0,
                },
            };
            Ok(position)
        })
    }

    fn recover<'a>(
        &'a self,
        channel: &'a str,
        epoch: &'a str,
        offset: u64,
    ) -> StoreFuture<'a, Result<Recovery, StoreError>> {
        Box::pin(async move {
            let Some(log) = self.channels.get(channel).map(|l| l.clone()) else {
                let position = self.position(channel).await?;
                // Nothing was ever published here: recovery from 0 in this epoch is complete.
                let recovered = &*position.epoch == epoch && offset == 0;
                return Ok(Recovery {
                    position,
                    recovered,
                    publications: Vec::new(),
                });
            };
            let log = lock(&log);
            let position = Position {
                epoch: log.epoch.clone(),
                offset: log.last_offset,
            };
            let oldest_kept = log
                .recent
                .front()
                .and_then(|p| p.offset)
                .unwrap_or(log.last_offset + 1);
            let reachable = offset + 1 >= oldest_kept;
            if &*log.epoch != epoch || offset > log.last_offset || !reachable {
                return Ok(Recovery {
                    position,
                    recovered: false,
                    publications: Vec::new(),
                });
            }
            let publications = log
                .recent
                .iter()
                .filter(|p| p.offset.is_some_and(|o| o > offset))
                .cloned()
                .collect();
            Ok(Recovery {
                position,
                recovered: true,
                publications,
            })
        })
    }

    fn history<'a>(
        &'a self,
        channel: &'a str,
        since: Option<u64>,
        before: Option<u64>,
        limit: usize,
    ) -> StoreFuture<'a, Result<Vec<Arc<Publication>>, StoreError>> {
        Box::pin(async move {
            let Some(log) = self.channels.get(channel).map(|l| l.clone()) else {
                return Ok(Vec::new());
            };
            let log = lock(&log);
            let after = since.unwrap_or(0);
            let before = before.unwrap_or(u64::MAX);
            let matching = log
                .recent
                .iter()
                .filter(|p| p.offset.is_some_and(|o| o > after && o < before));
            Ok(if since.is_some() {
                matching.take(limit).cloned().collect()
            } else {
                let all: Vec<_> = matching.collect();
                let skip = all.len().saturating_sub(limit);
                all.into_iter().skip(skip).cloned().collect()
            })
        })
    }

    fn prune<'a>(
        &'a self,
        scope: &'a PruneScope,
        max_count: Option<u64>,
        max_age: Option<Duration>,
    ) -> StoreFuture<'a, Result<u64, StoreError>> {
        Box::pin(async move {
            // Milliseconds since the Unix epoch, `max_age` ago.
            let cutoff = max_age.map(|age| {
                let then = SystemTime::now().checked_sub(age).unwrap_or(UNIX_EPOCH);
                let since = then.duration_since(UNIX_EPOCH).unwrap_or_default();
                u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
            });
            let keep = max_count.map(|n| usize::try_from(n).unwrap_or(usize::MAX));
            let mut deleted = 0;
            for entry in self.channels.iter() {
                if !scope.contains(entry.key()) {
                    continue;
                }
                let mut log = lock(entry.value());
                let before = log.recent.len();
                if let Some(keep) = keep {
                    let excess = log.recent.len().saturating_sub(keep);
                    log.recent.drain(..excess);
                }
                if let Some(cutoff) = cutoff {
                    while log.recent.front().is_some_and(|p| p.ts < cutoff) {
                        log.recent.pop_front();
                    }
                }
                deleted += (before - log.recent.len()) as u64;
            }
            Ok(deleted)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(n: u64) -> RawEvent {
        RawEvent::from_parts("n", &n).unwrap_or_else(|_| unreachable!())
    }

    #[tokio::test]
    async fn inbox_starts_at_the_devices_ack_else_the_users_latest() -> Result<(), StoreError> {
        let store = MemoryStore::new(3);
        assert_eq!(store.inbox_start("ann", "phone").await?, None);
        store.ack("ann", "phone", "e1", 4).await?;
        store.ack("bob", "laptop", "e1", 9).await?;
        let own = store.inbox_start("ann", "phone").await?;
        assert_eq!(
            own.map(|s| (s.epoch, s.offset, s.own)),
            Some(("e1".into(), 4, true))
        );
        // A new device starts where the user's most recent ack is, not another user's.
        let new = store.inbox_start("ann", "tablet").await?;
        assert_eq!(new.map(|s| (s.offset, s.own)), Some((4, false)));
        // Acks only move forward within an epoch; a new epoch replaces the position.
        store.ack("ann", "phone", "e1", 2).await?;
        let kept = store.inbox_start("ann", "phone").await?;
        assert_eq!(kept.map(|s| s.offset), Some(4));
        store.ack("ann", "phone", "e2", 1).await?;
        let moved = store.inbox_start("ann", "phone").await?;
        assert_eq!(moved.map(|s| (s.epoch, s.offset)), Some(("e2".into(), 1)));
        Ok(())
    }

    #[tokio::test]
    async fn offsets_are_gap_free_and_recovery_is_exact() -> Result<(), StoreError> {
        let store = MemoryStore::new(3);
        let channel: Arc<str> = "c".into();
        for n in 1..=5 {
            let p = store.append(&channel, 0, None, event(n)).await?;
            assert_eq!(p.offset, Some(n));
        }
        let epoch = store.position("c").await?.epoch;
        let r = store.recover("c", &epoch, 3).await?;
        assert!(r.recovered);
        let offsets: Vec<_> = r.publications.iter().filter_map(|p| p.offset).collect();
        assert_eq!(offsets, vec![4, 5]);
        // Offset 1 is gone (capacity 3 keeps 3..=5), so recovering after 1 fails.
        assert!(store.recover("c", &epoch, 2).await?.recovered);
        assert!(!store.recover("c", &epoch, 1).await?.recovered);
        assert!(!store.recover("c", "other-epoch", 4).await?.recovered);
        assert!(store.recover("c", &epoch, 5).await?.publications.is_empty());
        Ok(())
    }

    #[tokio::test]
    async fn history_pages_and_prune_keeps_the_position() -> Result<(), StoreError> {
        let store = MemoryStore::new(10);
        let channel: Arc<str> = "c".into();
        for n in 1..=6 {
            store.append(&channel, n, None, event(n)).await?;
        }
        let offsets = |list: Vec<Arc<Publication>>| -> Vec<u64> {
            list.iter().filter_map(|p| p.offset).collect()
        };
        assert_eq!(
            offsets(store.history("c", None, None, 2).await?),
            vec![5, 6]
        );
        assert_eq!(
            offsets(store.history("c", None, Some(5), 2).await?),
            vec![3, 4]
        );
        assert_eq!(
            offsets(store.history("c", Some(1), Some(5), 9).await?),
            vec![2, 3, 4]
        );
        assert!(store.history("other", None, None, 9).await?.is_empty());
        // ts 1..=6 are all long ago: pruning by count keeps 4, by age deletes the rest.
        assert_eq!(store.prune(&PruneScope::all(), Some(4), None).await?, 2);
        assert_eq!(
            store
                .prune(&PruneScope::all(), None, Some(Duration::from_secs(60)))
                .await?,
            4
        );
        assert_eq!(store.position("c").await?.offset, 6);
        Ok(())
    }

    #[tokio::test]
    async fn frames_are_encoded_once_and_carry_the_offset() -> Result<(), StoreError> {
        let store = MemoryStore::new(10);
        let p = store
            .append(&Arc::from("c"), 5, Some("u".into()), event(1))
            .await?;
        let frame = p.frame();
        assert!(frame.as_str().contains(r#""offset":1"#));
        assert!(frame.as_str().contains(r#""sender":"u""#));
        assert_eq!(p.frame().as_str().as_ptr(), frame.as_str().as_ptr());
        Ok(())
    }
}
