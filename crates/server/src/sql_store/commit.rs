//! Group commit: every append goes to one writer task per store, which commits whatever has
//! queued meanwhile in one transaction: one fsync for many publications, on one channel or
//! many. Offsets follow the queue's order per channel and stay gap-free: each channel's row
//! is bumped once per batch by the batch's count, under its row lock (PostgreSQL) or the
//! database's write lock (SQLite).

use std::collections::BTreeMap;
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use super::sql::{BUMP_BY, CREATE_CHANNEL, db_error, to_i64, to_u64};
use super::{Db, webhook_queue};
use crate::store::{Append, Committing, Publication, StoreError, WebhookFn};

/// The most appends one transaction takes: bounds a batch's memory and its lock time.
const MAX_BATCH: usize = 1024;
/// Rows per multi-row INSERT (7 parameters each; SQLite allows 32,766 per statement).
const ROWS_PER_INSERT: usize = 512;

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
    pub(super) fn start(db: Db, epoch: Arc<str>) -> Committer {
        let (jobs, queue) = mpsc::unbounded_channel();
        tokio::spawn(run(db, epoch, queue));
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
async fn run(db: Db, epoch: Arc<str>, mut queue: mpsc::UnboundedReceiver<Job>) {
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
            })
            .indexes
            .push(index);
    }
    on_db!(db, pool => {
        let mut tx = pool.begin_with(db.begin_sql()).await.map_err(db_error)?;
        for (name, run) in runs.iter_mut() {
            let count = i64::try_from(run.indexes.len()).unwrap_or(i64::MAX);
            let bumped: Option<(i64, String, i64)> = sqlx::query_as(BUMP_BY)
                .bind(count)
                .bind(&**name)
                .fetch_optional(&mut *tx)
                .await
                .map_err(db_error)?;
            let (id, channel_epoch, last) = match bumped {
                Some(row) => row,
                None => {
                    // First publication: create the row (another node may race us: then
                    // ours does nothing), then bump it under its lock like any other.
                    sqlx::query(CREATE_CHANNEL)
                        .bind(&**name)
                        .bind(&**epoch)
                        .execute(&mut *tx)
                        .await
                        .map_err(db_error)?;
                    sqlx::query_as(BUMP_BY)
                        .bind(count)
                        .bind(&**name)
                        .fetch_one(&mut *tx)
                        .await
                        .map_err(db_error)?
                }
            };
            run.id = id;
            run.first = to_u64(last - count + 1)?;
            if *channel_epoch != **epoch {
                run.epoch = Arc::from(channel_epoch);
            }
        }
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
    })
}

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
