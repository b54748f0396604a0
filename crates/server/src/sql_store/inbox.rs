//! The offline inbox's acknowledgements on SQLite and PostgreSQL: the `inbox_acks` table.
//!
//! Acks are not written one by one: a connect (which pins a new device's position) or an
//! `ack` frame only updates a buffer in memory, and a flusher task writes the buffer in one
//! transaction every [`FLUSH_INTERVAL`] (or sooner when it grows). Reads look in the buffer
//! first, so nothing acknowledged is read back stale. A crash loses at most the last
//! interval's acks: those items are delivered again (at least once), never skipped.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::Notify;

use super::known::Known;
use super::sql::{db_error, to_i64, to_u64};
use super::{Db, SqlStore};
use crate::store::{InboxStart, InboxStore, StoreError};

/// Keeps the highest offset per epoch: a late, smaller ack never moves a device back.
const UPSERT: &str = "INSERT INTO inbox_acks (user_id, device, epoch, acked, updated_at) \
     VALUES ($1, $2, $3, $4, $5) ON CONFLICT (user_id, device) DO UPDATE \
     SET epoch = excluded.epoch, acked = excluded.acked, updated_at = excluded.updated_at \
     WHERE inbox_acks.epoch <> excluded.epoch OR inbox_acks.acked < excluded.acked";
/// The device's own row if it has one, else the user's most recent: one read per connect.
const SELECT_START: &str = "SELECT epoch, acked, updated_at, device = $2 AS own \
     FROM inbox_acks WHERE user_id = $1 \
     ORDER BY device = $2 DESC, updated_at DESC, acked DESC LIMIT 1";

/// How long an ack may wait in memory before it is written.
pub(super) const FLUSH_INTERVAL: Duration = Duration::from_millis(100);
/// Buffered acks that trigger a flush before the interval ends.
const FLUSH_AT: usize = 4096;

/// One device's buffered position.
#[derive(Debug, Clone)]
struct Ack {
    epoch: String,
    offset: u64,
    /// When (ms), to find the user's most recent ack.
    at: u64,
}

/// Acks waiting to be written, keyed by (user, device).
#[derive(Debug, Default)]
pub(super) struct AckBuffer {
    acks: Mutex<HashMap<(String, String), Ack>>,
    /// Wakes the flusher early (a full buffer, or a flush request).
    wake: Notify,
    /// Tells flush requests that a round finished.
    flushed: Notify,
}

impl AckBuffer {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), Ack>> {
        self.acks.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts the flusher for `db`; it ends when the buffer is dropped.
    pub(super) fn start(db: Db, known: Option<Arc<Known>>) -> Arc<AckBuffer> {
        let buffer = Arc::new(AckBuffer::default());
        tokio::spawn(flush_loop(db, known, Arc::downgrade(&buffer)));
        buffer
    }
}

async fn flush_loop(db: Db, known: Option<Arc<Known>>, buffer: Weak<AckBuffer>) {
    loop {
        let Some(strong) = buffer.upgrade() else {
            return;
        };
        let woken = strong.wake.notified();
        tokio::pin!(woken);
        // Wait for the interval or an early wake. A dropped store ends the loop: the next
        // round finds no buffer.
        let _ = tokio::time::timeout(FLUSH_INTERVAL, woken).await;
        // Written from a copy: an ack stays readable in the buffer until its row is
        // committed, so a reconnect in between never reads an older position.
        let snapshot = strong.lock().clone();
        if snapshot.is_empty() {
            strong.flushed.notify_waiters();
            continue;
        }
        // Known before written: a read in between must look in the table, not skip it.
        if let Some(known) = &known {
            for (user, _) in snapshot.keys() {
                known.add_inbox(user);
            }
        }
        match write(&db, &snapshot).await {
            Ok(()) => {
                let mut acks = strong.lock();
                for (key, written) in &snapshot {
                    let unchanged = acks.get(key).is_some_and(|ack| {
                        ack.epoch == written.epoch
                            && ack.offset == written.offset
                            && ack.at == written.at
                    });
                    if unchanged {
                        acks.remove(key);
                    }
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, acks = snapshot.len(), "cannot write inbox acks; retrying");
            }
        }
        strong.flushed.notify_waiters();
    }
}

async fn write(db: &Db, acks: &HashMap<(String, String), Ack>) -> Result<(), StoreError> {
    on_db!(db, pool => {
        let mut tx = pool.begin_with(db.begin_sql()).await.map_err(db_error)?;
        for ((user_id, device), ack) in acks {
            sqlx::query(UPSERT)
                .bind(user_id)
                .bind(device)
                .bind(&ack.epoch)
                .bind(to_i64(ack.offset)?)
                .bind(to_i64(ack.at)?)
                .execute(&mut *tx)
                .await
                .map_err(db_error)?;
        }
        tx.commit().await.map_err(db_error)?;
    });
    Ok(())
}

#[async_trait]
impl InboxStore for SqlStore {
    async fn ack(
        &self,
        user_id: &str,
        device: &str,
        epoch: &str,
        offset: u64,
    ) -> Result<(), StoreError> {
        let now = crate::time::now_ms();
        let full = {
            let mut acks = self.acks.lock();
            let key = (user_id.to_owned(), device.to_owned());
            match acks.get_mut(&key) {
                Some(ack) if ack.epoch == epoch && ack.offset >= offset => {}
                Some(ack) => {
                    *ack = Ack {
                        epoch: epoch.to_owned(),
                        offset,
                        at: now,
                    }
                }
                None => {
                    let ack = Ack {
                        epoch: epoch.to_owned(),
                        offset,
                        at: now,
                    };
                    acks.insert(key, ack);
                }
            }
            acks.len() >= FLUSH_AT
        };
        if full {
            self.acks.wake.notify_one();
        }
        Ok(())
    }

    async fn inbox_start(
        &self,
        user_id: &str,
        device: &str,
    ) -> Result<Option<InboxStart>, StoreError> {
        let key = (user_id.to_owned(), device.to_owned());
        let buffered = self.acks.lock().get(&key).cloned();
        // A user this process never wrote an ack for has no row (when it alone writes).
        let stored = self
            .known
            .as_ref()
            .is_none_or(|known| known.has_inbox(user_id));
        let row: Option<(String, i64, i64, bool)> = match stored {
            true => on_db!(&self.reader, pool => {
                sqlx::query_as(SELECT_START)
                    .bind(user_id)
                    .bind(device)
                    .fetch_optional(pool)
                    .await
                    .map_err(db_error)?
            }),
            false => None,
        };
        let (own, other) = match row {
            Some((epoch, acked, _, true)) => (Some((epoch, to_u64(acked)?)), None),
            Some((epoch, acked, at, false)) => (None, Some((to_u64(at)?, to_u64(acked)?, epoch))),
            None => (None, None),
        };
        // The buffered ack replaces the written one as the UPSERT will: in another epoch, or
        // when it is further along.
        let own = match (own, buffered) {
            (Some((epoch, acked)), Some(ack)) if ack.epoch == epoch => {
                Some((epoch, acked.max(ack.offset)))
            }
            (_, Some(ack)) => Some((ack.epoch, ack.offset)),
            (own, None) => own,
        };
        if let Some((epoch, offset)) = own {
            return Ok(Some(InboxStart {
                epoch,
                offset,
                own: true,
            }));
        }
        // Another device's most recent ack: buffered or written, whichever is newer.
        let mut latest = other;
        for ((user, _), ack) in self.acks.lock().iter() {
            let newer = latest
                .as_ref()
                .is_none_or(|(at, offset, _)| (ack.at, ack.offset) > (*at, *offset));
            if user == user_id && newer {
                latest = Some((ack.at, ack.offset, ack.epoch.clone()));
            }
        }
        Ok(latest.map(|(_, offset, epoch)| InboxStart {
            epoch,
            offset,
            own: false,
        }))
    }

    async fn flush(&self) -> Result<(), StoreError> {
        // A round may be under way with an older snapshot: wait for rounds until empty.
        for _ in 0..20 {
            if self.acks.lock().is_empty() {
                return Ok(());
            }
            let flushed = self.acks.flushed.notified();
            self.acks.wake.notify_one();
            let _ = tokio::time::timeout(FLUSH_INTERVAL * 10, flushed).await;
        }
        Err(StoreError::Unavailable("inbox acks not written".into()))
    }
}
