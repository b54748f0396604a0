//! Group commit: every append goes to one writer task per store, which commits whatever has
//! queued meanwhile in one transaction: one fsync for many publications, on one channel or
//! many. Offsets follow the queue's order per channel and stay gap-free: each channel's row
//! is bumped once per batch by the batch's count, under its row lock (PostgreSQL) or the
//! database's write lock (SQLite).

use std::collections::BTreeMap;
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use super::known::Known;
use super::sql::{db_error, to_i64, to_u64};
use super::{Db, webhook_queue};
use crate::store::{Append, Committing, Publication, StoreError, WebhookFn};

/// The most appends one transaction takes: bounds a batch's memory and its lock time.
const MAX_BATCH: usize = 1024;
/// Rows per multi-row INSERT (7 parameters each; SQLite allows 32,766 per statement).
const ROWS_PER_INSERT: usize = 512;

/// Channels per statement when bumping (2 parameters each).
const CHANNELS_PER_BUMP: usize = 512;

/// SQLite: takes each channel's next offsets for the batch: creates missing channel rows,
/// then bumps every channel by its count, a few statements per batch however many channels
/// it holds.
#[cfg(feature = "sqlite")]
macro_rules! bump_channels {
    ($tx:expr, $epoch:expr, $runs:expr) => {{
        let names: Vec<Arc<str>> = $runs.keys().cloned().collect();
        for chunk in names.chunks(CHANNELS_PER_BUMP) {
            let mut create =
                sqlx::QueryBuilder::new("INSERT INTO channels (name, epoch, last_offset) ");
            create.push_values(chunk, |mut row, name| {
                row.push_bind(&**name).push_bind(&**$epoch).push_bind(0i64);
            });
            create.push(" ON CONFLICT (name) DO NOTHING");
            create.build().execute(&mut *$tx).await.map_err(db_error)?;
            let mut update = sqlx::QueryBuilder::new(
                "UPDATE channels SET last_offset = channels.last_offset + b.n FROM (",
            );
            for (k, name) in chunk.iter().enumerate() {
                let count = $runs.get(name).map_or(0, |run| run.indexes.len());
                update.push(if k == 0 {
                    "SELECT "
                } else {
                    " UNION ALL SELECT "
                });
                update.push_bind(&**name);
                update.push(" AS name, ");
                update.push_bind(i64::try_from(count).unwrap_or(i64::MAX));
                update.push(" AS n");
            }
            update.push(
                ") AS b WHERE channels.name = b.name \
                 RETURNING channels.name, channels.id, channels.epoch, channels.last_offset",
            );
            let rows: Vec<(String, i64, String, i64)> = update
                .build_query_as()
                .fetch_all(&mut *$tx)
                .await
                .map_err(db_error)?;
            for (name, id, channel_epoch, last) in rows {
                let Some(run) = $runs.get_mut(name.as_str()) else {
                    continue;
                };
                let count = i64::try_from(run.indexes.len()).unwrap_or(i64::MAX);
                run.id = id;
                run.first = to_u64(last - count + 1)?;
                if *channel_epoch != **$epoch {
                    run.epoch = Arc::from(channel_epoch);
                }
                run.bumped = true;
            }
        }
        if $runs.values().any(|run| !run.bumped) {
            return Err(StoreError::Invalid("a channel row was not bumped".into()));
        }
    }};
}

/// One append waiting for the writer.
pub(super) struct Job {
    append: Append,
    webhooks: Option<WebhookFn>,
    done: oneshot::Sender<Result<Arc<Publication>, StoreError>>,
}

/// The queue into a store's writer task.
#[derive(Debug, Clone)]
pub(super) struct Committer {
    jobs: mpsc::UnboundedSender<Job>,
}

impl Committer {
    /// Starts the writer task for `db`; it ends when every `Committer` clone is dropped.
    pub(super) fn start(db: Db, epoch: Arc<str>, known: Option<Arc<Known>>) -> Committer {
        let (jobs, queue) = mpsc::unbounded_channel();
        tokio::spawn(run(db, epoch, known, queue));
        Committer { jobs }
    }

    /// Queues an append (in call order) and returns the future of its commit.
    pub(super) fn submit(&self, append: Append, webhooks: Option<WebhookFn>) -> Committing {
        let (done, committed) = oneshot::channel();
        let queued = self.jobs.send(Job {
            append,
            webhooks,
            done,
        });
        Box::pin(async move {
            queued.map_err(|_| StoreError::Unavailable("the store's writer has stopped".into()))?;
            committed
                .await
                .map_err(|_| StoreError::Unavailable("the store's writer has stopped".into()))?
        })
    }
}

/// Takes what has queued (up to [`MAX_BATCH`]), commits it, answers each append, repeats.
async fn run(
    db: Db,
    epoch: Arc<str>,
    known: Option<Arc<Known>>,
    mut queue: mpsc::UnboundedReceiver<Job>,
) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while queue.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let count = batch.len();
        let (mut appends, mut webhooks, mut waiting) = (
            Vec::with_capacity(count),
            Vec::with_capacity(count),
            Vec::with_capacity(count),
        );
        for job in batch.drain(..) {
            appends.push(job.append);
            webhooks.push(job.webhooks);
            waiting.push(job.done);
        }
        match write(&db, &epoch, appends, &webhooks).await {
            Ok(publications) => {
                if let Some(known) = &known {
                    for publication in &publications {
                        known.add_channel(&publication.channel);
                    }
                }
                for (done, publication) in waiting.into_iter().zip(publications) {
                    let _ = done.send(Ok(publication));
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, appends = count, "group commit failed");
                for done in waiting {
                    let _ = done.send(Err(e.clone()));
                }
            }
        }
    }
}

/// A channel's place in a batch: its row and the batch's appends to it, in order.
struct ChannelRun {
    indexes: Vec<usize>,
    id: i64,
    epoch: Arc<str>,
    first: u64,
    /// Whether the bump returned this channel's row.
    bumped: bool,
}

/// Writes one batch in one transaction; the publications come back in the appends' order.
async fn write(
    db: &Db,
    epoch: &Arc<str>,
    appends: Vec<Append>,
    webhooks: &[Option<WebhookFn>],
) -> Result<Vec<Arc<Publication>>, StoreError> {
    // Channels in name order, so two nodes sharing PostgreSQL lock rows in the same order.
    let mut runs: BTreeMap<Arc<str>, ChannelRun> = BTreeMap::new();
    for (index, append) in appends.iter().enumerate() {
        runs.entry(append.channel.clone())
            .or_insert_with(|| ChannelRun {
                indexes: Vec::new(),
                id: 0,
                epoch: epoch.clone(),
                first: 0,
                bumped: false,
            })
            .indexes
            .push(index);
    }
    match db {
        #[cfg(feature = "postgres")]
        Db::Postgres(pool) => write_postgres(pool, epoch, runs, appends, webhooks).await,
        #[cfg(feature = "sqlite")]
        Db::Sqlite(pool) => write_sqlite(pool, db, epoch, runs, appends, webhooks).await,
    }
}

/// The batch on SQLite: a few statements built for its size (SQLite prepares them cheaply).
#[cfg(feature = "sqlite")]
async fn write_sqlite(
    pool: &sqlx::SqlitePool,
    db: &Db,
    epoch: &Arc<str>,
    mut runs: BTreeMap<Arc<str>, ChannelRun>,
    appends: Vec<Append>,
    webhooks: &[Option<WebhookFn>],
) -> Result<Vec<Arc<Publication>>, StoreError> {
    {
        let mut tx = pool.begin_with(db.begin_sql()).await.map_err(db_error)?;
        bump_channels!(tx, epoch, runs);
        let publications = publications(appends, &runs)?;
        let rows: Vec<(i64, &Publication)> = runs
            .values()
            .flat_map(|run| run.indexes.iter().map(move |&i| (run.id, i)))
            .filter_map(|(id, i)| publications.get(i).map(|p| (id, &**p)))
            .collect();
        for chunk in rows.chunks(ROWS_PER_INSERT) {
            let mut insert = sqlx::QueryBuilder::new(
                "INSERT INTO publications (channel_id, seq, epoch, ts, sender, event_type, event_data) ",
            );
            let mut invalid = None;
            insert.push_values(chunk, |mut row, (id, publication)| {
                let seq = publication.offset.map(to_i64).transpose();
                let ts = to_i64(publication.ts);
                let (seq, ts) = match (seq, ts) {
                    (Ok(seq), Ok(ts)) => (seq, ts),
                    (Err(e), _) | (_, Err(e)) => {
                        invalid = Some(e);
                        (None, 0)
                    }
                };
                row.push_bind(*id)
                    .push_bind(seq)
                    .push_bind(&*publication.epoch)
                    .push_bind(ts)
                    .push_bind(publication.sender.as_deref())
                    .push_bind(publication.event.kind())
                    .push_bind(publication.event.data_json());
            });
            if let Some(e) = invalid {
                return Err(e);
            }
            insert.build().execute(&mut *tx).await.map_err(db_error)?;
        }
        for (webhooks, publication) in webhooks.iter().zip(&publications) {
            if let Some(webhooks) = webhooks {
                // Same transaction: a publication and its webhooks exist together or not at all.
                webhook_queue::insert_records!(tx, &webhooks(publication));
            }
        }
        tx.commit().await.map_err(db_error)?;
        Ok(publications)
    }
}

/// The batch on PostgreSQL: fixed statements over arrays (`unnest`), so each is prepared
/// once per connection whatever the batch's size.
#[cfg(feature = "postgres")]
async fn write_postgres(
    pool: &sqlx::PgPool,
    epoch: &Arc<str>,
    mut runs: BTreeMap<Arc<str>, ChannelRun>,
    appends: Vec<Append>,
    webhooks: &[Option<WebhookFn>],
) -> Result<Vec<Arc<Publication>>, StoreError> {
    let mut tx = pool.begin().await.map_err(db_error)?;
    // Names in order (the map is sorted): rows are created and locked in the same order by
    // every node, so batches sharing channels wait for each other instead of deadlocking.
    let names: Vec<&str> = runs.keys().map(|name| &**name).collect();
    let counts: Vec<i64> = runs
        .values()
        .map(|run| i64::try_from(run.indexes.len()).unwrap_or(i64::MAX))
        .collect();
    sqlx::query(PG_CREATE_CHANNELS)
        .bind(&names)
        .bind(&**epoch)
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
    sqlx::query(PG_LOCK_CHANNELS)
        .bind(&names)
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
    let rows: Vec<(String, i64, String, i64)> = sqlx::query_as(PG_BUMP_CHANNELS)
        .bind(&names)
        .bind(&counts)
        .fetch_all(&mut *tx)
        .await
        .map_err(db_error)?;
    for (name, id, channel_epoch, last) in rows {
        if let Some(run) = runs.get_mut(name.as_str()) {
            let count = i64::try_from(run.indexes.len()).unwrap_or(i64::MAX);
            run.id = id;
            run.first = to_u64(last - count + 1)?;
            if *channel_epoch != **epoch {
                run.epoch = Arc::from(channel_epoch);
            }
            run.bumped = true;
        }
    }
    if runs.values().any(|run| !run.bumped) {
        return Err(StoreError::Invalid("a channel row was not bumped".into()));
    }
    let publications = publications(appends, &runs)?;
    insert_postgres(&mut tx, &runs, &publications).await?;
    for (webhooks, publication) in webhooks.iter().zip(&publications) {
        if let Some(webhooks) = webhooks {
            // Same transaction: a publication and its webhooks exist together or not at all.
            webhook_queue::insert_records!(tx, &webhooks(publication));
        }
    }
    tx.commit().await.map_err(db_error)?;
    Ok(publications)
}

/// Inserts a batch's publications with one statement over arrays.
#[cfg(feature = "postgres")]
async fn insert_postgres(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    runs: &BTreeMap<Arc<str>, ChannelRun>,
    publications: &[Arc<Publication>],
) -> Result<(), StoreError> {
    let rows = publications.len();
    let (mut ids, mut seqs, mut epochs, mut stamps) = (
        Vec::with_capacity(rows),
        Vec::with_capacity(rows),
        Vec::with_capacity(rows),
        Vec::with_capacity(rows),
    );
    let (mut senders, mut kinds, mut data) = (
        Vec::with_capacity(rows),
        Vec::with_capacity(rows),
        Vec::with_capacity(rows),
    );
    for run in runs.values() {
        for publication in run.indexes.iter().filter_map(|&i| publications.get(i)) {
            ids.push(run.id);
            seqs.push(to_i64(publication.offset.unwrap_or_default())?);
            epochs.push(&*publication.epoch);
            stamps.push(to_i64(publication.ts)?);
            senders.push(publication.sender.as_deref());
            kinds.push(publication.event.kind());
            data.push(publication.event.data_json());
        }
    }
    sqlx::query(PG_INSERT_PUBLICATIONS)
        .bind(&ids)
        .bind(&seqs)
        .bind(&epochs)
        .bind(&stamps)
        .bind(&senders)
        .bind(&kinds)
        .bind(&data)
        .execute(&mut **tx)
        .await
        .map_err(db_error)?;
    Ok(())
}

#[cfg(feature = "postgres")]
const PG_CREATE_CHANNELS: &str = "INSERT INTO channels (name, epoch, last_offset) \
     SELECT name, $2, 0 FROM unnest($1::text[]) AS name ON CONFLICT (name) DO NOTHING";
#[cfg(feature = "postgres")]
const PG_LOCK_CHANNELS: &str =
    "SELECT id FROM channels WHERE name = ANY($1) ORDER BY name FOR UPDATE";
#[cfg(feature = "postgres")]
const PG_BUMP_CHANNELS: &str = "UPDATE channels SET last_offset = channels.last_offset + b.n \
     FROM unnest($1::text[], $2::int8[]) AS b(name, n) WHERE channels.name = b.name \
     RETURNING channels.name, channels.id, channels.epoch, channels.last_offset";
#[cfg(feature = "postgres")]
const PG_INSERT_PUBLICATIONS: &str = "INSERT INTO publications \
     (channel_id, seq, epoch, ts, sender, event_type, event_data) \
     SELECT * FROM unnest($1::int8[], $2::int8[], $3::text[], $4::int8[], $5::text[], \
     $6::text[], $7::text[])";

/// The batch's publications, in the appends' order, with the offsets their runs assigned.
fn publications(
    appends: Vec<Append>,
    runs: &BTreeMap<Arc<str>, ChannelRun>,
) -> Result<Vec<Arc<Publication>>, StoreError> {
    let mut offsets = vec![(0u64, None::<Arc<str>>); appends.len()];
    for run in runs.values() {
        for (k, &index) in run.indexes.iter().enumerate() {
            if let Some(slot) = offsets.get_mut(index) {
                *slot = (run.first + k as u64, Some(run.epoch.clone()));
            }
        }
    }
    appends
        .into_iter()
        .zip(offsets)
        .map(|(append, (offset, epoch))| {
            let epoch =
                epoch.ok_or_else(|| StoreError::Invalid("append without a channel run".into()))?;
            Ok(Arc::new(Publication::new(
                append.channel,
                Some(offset),
                epoch,
                append.ts,
                append.sender,
                append.event,
            )))
        })
        .collect()
}
