//! The in-memory store: recent publications per channel, inbox positions and the webhook
//! queue, all lost on restart (a new epoch tells clients so).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use dashmap::DashMap;

use super::{
    Append, Committing, InboxStart, InboxStore, Position, PruneScope, Publication,
    PublicationStore, Recovery, StoreError, WebhookFn, WebhookOutbox,
};
use crate::webhook_queue::{MemoryWebhookQueue, WebhookQueue, WebhookRecord};

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

#[async_trait]
impl InboxStore for MemoryStore {
    async fn ack(
        &self,
        user_id: &str,
        device: &str,
        epoch: &str,
        offset: u64,
    ) -> Result<(), StoreError> {
        let now = crate::time::now_ms();
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
        Ok(())
    }

    async fn inbox_start(
        &self,
        user_id: &str,
        device: &str,
    ) -> Result<Option<InboxStart>, StoreError> {
        Ok(self.acks.get(user_id).and_then(|devices| {
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
        }))
    }

    /// Memory keeps nothing to write.
    async fn flush(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

/// The queue is the store's own [`MemoryWebhookQueue`].
#[async_trait]
impl WebhookQueue for MemoryStore {
    async fn enqueue(&self, records: Vec<WebhookRecord>) -> Result<(), StoreError> {
        self.webhooks.enqueue(records).await
    }

    async fn claim_due(
        &self,
        now: u64,
        limit: usize,
        lease_until: u64,
    ) -> Result<Vec<WebhookRecord>, StoreError> {
        self.webhooks.claim_due(now, limit, lease_until).await
    }

    async fn complete(&self, id: &str, endpoint: &str) -> Result<(), StoreError> {
        self.webhooks.complete(id, endpoint).await
    }

    async fn reschedule(
        &self,
        id: &str,
        endpoint: &str,
        attempts: u32,
        next_at: u64,
    ) -> Result<(), StoreError> {
        self.webhooks
            .reschedule(id, endpoint, attempts, next_at)
            .await
    }

    async fn backlog(&self) -> Result<u64, StoreError> {
        self.webhooks.backlog().await
    }
}

impl WebhookOutbox for MemoryStore {
    /// In memory both writes always succeed, so writing one after the other is atomic enough.
    fn submit_with_webhooks(&self, append: Append, webhooks: WebhookFn) -> Committing {
        let stored = self.store(append);
        if let Ok(publication) = &stored {
            let records = webhooks(publication);
            if !records.is_empty() {
                self.webhooks.insert(records);
            }
        }
        Box::pin(std::future::ready(stored))
    }
}

impl MemoryStore {
    /// Appends at once: memory needs no commit.
    fn store(&self, append: Append) -> Result<Arc<Publication>, StoreError> {
        let Append {
            channel,
            ts,
            sender,
            event,
        } = append;
        let log = self.log(&channel);
        let mut log = lock(&log);
        let offset = log
            .last_offset
            .checked_add(1)
            .ok_or_else(|| StoreError::Invalid(format!("{channel}: offsets exhausted")))?;
        log.last_offset = offset;
        let publication = Arc::new(Publication::new(
            channel,
            Some(offset),
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
    }
}

#[async_trait]
impl PublicationStore for MemoryStore {
    fn submit(&self, append: Append) -> Committing {
        Box::pin(std::future::ready(self.store(append)))
    }

    async fn position(&self, channel: &str) -> Result<Position, StoreError> {
        Ok(match self.channels.get(channel) {
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
        })
    }

    async fn recover(
        &self,
        channel: &str,
        epoch: &str,
        offset: u64,
    ) -> Result<Recovery, StoreError> {
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
            .unwrap_or(log.last_offset.saturating_add(1));
        let reachable = offset.saturating_add(1) >= oldest_kept;
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
    }

    async fn history(
        &self,
        channel: &str,
        since: Option<u64>,
        before: Option<u64>,
        limit: usize,
    ) -> Result<Vec<Arc<Publication>>, StoreError> {
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
    }

    async fn prune(
        &self,
        scope: &PruneScope,
        max_count: Option<u64>,
        max_age: Option<Duration>,
    ) -> Result<u64, StoreError> {
        let cutoff = max_age.map(crate::time::ms_ago);
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
            deleted += before.saturating_sub(log.recent.len()) as u64;
        }
        Ok(deleted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tidings_protocol::RawEvent;

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
