//! Durable publication stores on SQL: SQLite (embedded, one file: the default for one node)
//! and PostgreSQL (one database shared by several nodes). One [`SqlStore`] type, the same SQL
//! text and the same logic for both; only connecting differs.
//!
//! # Offsets
//! Every channel that was ever published to has a row `channels(name, epoch, last_offset)`.
//! `append` runs one transaction: `UPDATE channels SET last_offset = last_offset + 1 …
//! RETURNING` (creating the row first if needed) and the `INSERT` of the publication. The row
//! lock (PostgreSQL) or the database write lock (SQLite, taken up front with
//! `BEGIN IMMEDIATE`) serialises appends to a channel across tasks, store instances and
//! processes, and a failed transaction rolls the counter back: offsets are gap-free and
//! increase by one. `append` returns only after the commit.
//!
//! # Epochs
//! A database gets one random epoch when a store first opens it (`store_meta`); a channel
//! keeps the epoch written into its row when it is created, which is that one. So a channel
//! nobody has published to yet already has its final epoch: `position` answers
//! `(database epoch, 0)` without writing, and recovering from there after later publications
//! works. Offsets and epochs survive restarts. A new (or wiped) database has a new epoch, so
//! clients holding old positions are told `recovered: false`. Never delete channel rows by
//! hand, and give a database restored from a backup a new `store_meta` epoch.
//!
//! # Recovery
//! `recover(epoch, offset)` succeeds when the epoch matches, `offset <= last_offset`, and every
//! publication after `offset` is still stored (so `offset >= oldest kept - 1`). It returns at
//! most [`SqlStore::recovery_limit`] publications (default [`DEFAULT_RECOVERY_LIMIT`]): a
//! client that missed more is told `recovered: false` and must reload its state.
//!
//! # Retention
//! [`PublicationStore::prune`] deletes by count per channel and by age; channel rows stay, so
//! offsets continue. Nothing prunes by itself: call it periodically.

use std::sync::Arc;
use std::time::Duration;

use serde_json::value::RawValue;
#[cfg(feature = "postgres")]
use sqlx::postgres::PgPool;
#[cfg(feature = "sqlite")]
use sqlx::sqlite::SqlitePool;
use tidings_protocol::RawEvent;

use async_trait::async_trait;

use crate::store::{
    Append, Committing, InboxStore, Position, PruneScope, Publication, PublicationStore, Recovery,
    StoreError, WebhookFn, WebhookOutbox,
};

mod sql;
use commit::Committer;
use sql::*;

/// The most publications one `recover` returns unless set with [`SqlStore::recovery_limit`].
pub const DEFAULT_RECOVERY_LIMIT: u64 = 10_000;
/// The PostgreSQL schema [`SqlStore::postgres`] keeps its tables (and migration history) in,
/// apart from an application's own.
pub const DEFAULT_SCHEMA: &str = "tidings";
/// The file [`SqlStore::sqlite`] creates when given a directory.
pub const SQLITE_FILE_NAME: &str = "tidings.db";

/// A connection pool to one of the supported databases.
#[derive(Debug, Clone)]
enum Db {
    #[cfg(feature = "sqlite")]
    Sqlite(SqlitePool),
    #[cfg(feature = "postgres")]
    Postgres(PgPool),
}

/// Runs `$body` with `$pool` bound to the concrete pool: the same source serves both
/// databases, type-checked for each.
macro_rules! on_db {
    ($db:expr, $pool:ident => $body:expr) => {
        match $db {
            #[cfg(feature = "sqlite")]
            Db::Sqlite($pool) => $body,
            #[cfg(feature = "postgres")]
            Db::Postgres($pool) => $body,
        }
    };
}

mod commit;
mod inbox;
mod known;
#[cfg(feature = "postgres")]
mod postgres;
mod retention;
#[cfg(feature = "sqlite")]
mod sqlite;
mod webhook_queue;

impl Db {
    /// Starts a write transaction: SQLite takes the write lock at once, so the transaction
    /// never has to upgrade a read lock (which could fail instead of waiting).
    fn begin_sql(&self) -> &'static str {
        match self {
            #[cfg(feature = "sqlite")]
            Db::Sqlite(_) => "BEGIN IMMEDIATE",
            #[cfg(feature = "postgres")]
            Db::Postgres(_) => "BEGIN",
        }
    }
}

/// A durable [`PublicationStore`] on SQLite or PostgreSQL. Cheap to clone (pools are shared).
///
/// ```no_run
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// use std::sync::Arc;
/// use tidings_server::{Tidings, sql_store::SqlStore};
///
/// let store = SqlStore::sqlite("./data/").await?; // ./data/tidings.db, created if missing
/// let tidings = Tidings::builder()
///     .jwt_secret("change-me")
///     .store(Arc::new(store))
///     .build()?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct SqlStore {
    writer: Db,
    reader: Db,
    /// The database's epoch: every channel's until history is lost.
    epoch: Arc<str>,
    recovery_limit: u64,
    /// The writer task that commits appends in groups.
    committer: Committer,
    /// Inbox acks waiting to be written in a batch.
    acks: Arc<inbox::AckBuffer>,
    /// What exists, when this process alone writes the database (SQLite).
    known: Option<Arc<known::Known>>,
    /// SQLite file: the checkpoint task runs while this lives (it ends with the last clone).
    checkpoints: Option<Arc<tokio::sync::oneshot::Sender<()>>>,
}

impl SqlStore {
    /// Opens the store a URL names: `sqlite://path/to/file.db`, `sqlite::memory:`, or
    /// `postgres://…` / `postgresql://…` (in [`DEFAULT_SCHEMA`]), e.g. `DATABASE_URL`.
    /// A URL for a database this build has no feature for is refused with a message that
    /// names the feature.
    pub async fn connect(url: &str) -> Result<SqlStore, StoreError> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            #[cfg(feature = "postgres")]
            return SqlStore::postgres(url).await;
            #[cfg(not(feature = "postgres"))]
            return Err(StoreError::Invalid(
                "built without the `postgres` feature".into(),
            ));
        }
        if url.starts_with("sqlite:") {
            #[cfg(feature = "sqlite")]
            return SqlStore::sqlite_url(url).await;
            #[cfg(not(feature = "sqlite"))]
            return Err(StoreError::Invalid(
                "built without the `sqlite` feature".into(),
            ));
        }
        Err(StoreError::Invalid(
            "database URL must start with sqlite: or postgres://".into(),
        ))
    }

    /// At most `limit` publications per `recover`; a client that missed more is told
    /// `recovered: false`.
    pub fn recovery_limit(mut self, limit: u64) -> SqlStore {
        self.recovery_limit = limit;
        self
    }

    /// The database's epoch (the epoch of every channel created in it).
    pub fn epoch(&self) -> &str {
        &self.epoch
    }

    /// Closes the connections (shared by every clone); later calls fail with
    /// [`StoreError::Unavailable`].
    pub async fn close(&self) {
        if let Err(e) = InboxStore::flush(self).await {
            tracing::warn!(error = %e, "closing with unwritten inbox acks");
        }
        for db in [&self.writer, &self.reader] {
            on_db!(db, pool => pool.close().await);
        }
    }

    /// Reads (creating it on first open) the database's epoch.
    async fn finish(writer: Db, reader: Db, exclusive: bool) -> Result<SqlStore, StoreError> {
        let candidate = format!("{:016x}", rand::random::<u64>());
        let epoch: String = on_db!(&writer, pool => {
            sqlx::query(INSERT_EPOCH)
                .bind(&candidate)
                .execute(pool)
                .await
                .map_err(db_error)?;
            sqlx::query_scalar(SELECT_EPOCH)
                .fetch_one(pool)
                .await
                .map_err(db_error)?
        });
        let epoch: Arc<str> = Arc::from(epoch);
        let known = match exclusive {
            true => Some(known::Known::load(&writer).await?),
            false => None,
        };
        Ok(SqlStore {
            committer: Committer::start(writer.clone(), epoch.clone(), known.clone()),
            acks: inbox::AckBuffer::start(writer.clone(), known.clone()),
            known,
            writer,
            reader,
            epoch,
            recovery_limit: DEFAULT_RECOVERY_LIMIT,
            checkpoints: None,
        })
    }

    /// The channel's row: (id, epoch, last offset).
    async fn channel(&self, name: &str) -> Result<Option<(i64, Arc<str>, u64)>, StoreError> {
        let row: Option<(i64, String, i64)> = on_db!(&self.reader, pool => {
            sqlx::query_as(SELECT_CHANNEL)
                .bind(name)
                .fetch_optional(pool)
                .await
                .map_err(db_error)?
        });
        row.map(|(id, epoch, last)| Ok((id, self.shared_epoch(epoch), to_u64(last)?)))
            .transpose()
    }

    /// `epoch` as an `Arc`, shared with the store's when equal (nearly always).
    fn shared_epoch(&self, epoch: String) -> Arc<str> {
        if *epoch == *self.epoch {
            self.epoch.clone()
        } else {
            Arc::from(epoch)
        }
    }

    fn publication(&self, channel: &Arc<str>, row: Row) -> Result<Arc<Publication>, StoreError> {
        let (seq, epoch, ts, sender, kind, data) = row;
        let data = RawValue::from_string(data).map_err(invalid)?;
        let event = RawEvent::from_parts(kind, &data).map_err(invalid)?;
        Ok(Arc::new(Publication::new(
            channel.clone(),
            Some(to_u64(seq)?),
            self.shared_epoch(epoch),
            to_u64(ts)?,
            sender.map(Arc::from),
            event,
        )))
    }

    async fn do_position(&self, channel: &str) -> Result<Position, StoreError> {
        let exists = self
            .known
            .as_ref()
            .is_none_or(|known| known.has_channel(channel));
        let row = match exists {
            true => self.channel(channel).await?,
            false => None,
        };
        Ok(match row {
            Some((_, epoch, offset)) => Position { epoch, offset },
            None => Position {
                epoch: self.epoch.clone(),
                offset: 0,
            },
        })
    }

    async fn do_recover(
        &self,
        channel: &str,
        epoch: &str,
        offset: u64,
    ) -> Result<Recovery, StoreError> {
        let not_recovered = |position| Recovery {
            position,
            recovered: false,
            publications: Vec::new(),
        };
        let Some((id, current, last)) = self.channel(channel).await? else {
            // Nothing was ever published here: from 0 in the database's epoch is complete.
            let position = Position {
                epoch: self.epoch.clone(),
                offset: 0,
            };
            let recovered = epoch == &*self.epoch && offset == 0;
            return Ok(Recovery {
                position,
                recovered,
                publications: Vec::new(),
            });
        };
        let position = Position {
            epoch: current.clone(),
            offset: last,
        };
        if epoch != &*current || offset > last || last - offset > self.recovery_limit {
            return Ok(not_recovered(position));
        }
        if offset == last {
            return Ok(Recovery {
                position,
                recovered: true,
                publications: Vec::new(),
            });
        }
        // Offsets are unique per channel, so all `last - offset` rows of the range being there
        // means none was pruned. The range ends at `last`: later appends are not ours to send.
        let rows: Vec<Row> = on_db!(&self.reader, pool => {
            sqlx::query_as(SELECT_RANGE)
                .bind(id)
                .bind(to_i64(offset)?)
                .bind(to_i64(last)?)
                .fetch_all(pool)
                .await
                .map_err(db_error)?
        });
        if rows.len() as u64 != last - offset {
            return Ok(not_recovered(position));
        }
        let name: Arc<str> = Arc::from(channel);
        let publications = rows
            .into_iter()
            .map(|row| self.publication(&name, row))
            .collect::<Result<_, _>>()?;
        Ok(Recovery {
            position,
            recovered: true,
            publications,
        })
    }

    async fn do_history(
        &self,
        channel: &str,
        since: Option<u64>,
        before: Option<u64>,
        limit: usize,
    ) -> Result<Vec<Arc<Publication>>, StoreError> {
        let after = clamp_i64(since.unwrap_or(0));
        let before = clamp_i64(before.unwrap_or(u64::MAX));
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let sql = if since.is_some() {
            HISTORY_FORWARD
        } else {
            HISTORY_BACKWARD
        };
        let mut rows: Vec<Row> = on_db!(&self.reader, pool => {
            sqlx::query_as(sql)
                .bind(channel)
                .bind(after)
                .bind(before)
                .bind(limit)
                .fetch_all(pool)
                .await
                .map_err(db_error)?
        });
        if since.is_none() {
            rows.reverse();
        }
        let name: Arc<str> = Arc::from(channel);
        rows.into_iter()
            .map(|row| self.publication(&name, row))
            .collect()
    }
}

#[async_trait]
impl PublicationStore for SqlStore {
    fn submit(&self, append: Append) -> Committing {
        self.committer.submit(append, None)
    }

    async fn position(&self, channel: &str) -> Result<Position, StoreError> {
        self.do_position(channel).await
    }

    async fn recover(
        &self,
        channel: &str,
        epoch: &str,
        offset: u64,
    ) -> Result<Recovery, StoreError> {
        self.do_recover(channel, epoch, offset).await
    }

    async fn history(
        &self,
        channel: &str,
        since: Option<u64>,
        before: Option<u64>,
        limit: usize,
    ) -> Result<Vec<Arc<Publication>>, StoreError> {
        self.do_history(channel, since, before, limit).await
    }

    async fn prune(
        &self,
        scope: &PruneScope,
        max_count: Option<u64>,
        max_age: Option<Duration>,
    ) -> Result<u64, StoreError> {
        self.do_prune(scope, max_count, max_age).await
    }
}

impl WebhookOutbox for SqlStore {
    fn submit_with_webhooks(&self, append: Append, webhooks: WebhookFn) -> Committing {
        self.committer.submit(append, Some(webhooks))
    }
}
