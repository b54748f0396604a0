//! [`WebhookQueue`] on SQLite and PostgreSQL: the `webhook_outbox` table.

use async_trait::async_trait;

use super::{Db, SqlStore, db_error, to_i64, to_u64};
use crate::store::StoreError;
use crate::webhook_queue::{WebhookQueue, WebhookRecord};

pub(super) const INSERT: &str = "INSERT INTO webhook_outbox (id, endpoint, body, attempts, next_at) \
     VALUES ($1, $2, $3, $4, $5) ON CONFLICT (id, endpoint) DO NOTHING";
const SELECT_DUE: &str = "SELECT id, endpoint, body, attempts, next_at FROM webhook_outbox \
     WHERE next_at <= $1 ORDER BY next_at LIMIT $2";
/// Takes a record only if nobody leased it since we read it (works across nodes).
const LEASE: &str =
    "UPDATE webhook_outbox SET next_at = $1 WHERE id = $2 AND endpoint = $3 AND next_at = $4";
const DELETE: &str = "DELETE FROM webhook_outbox WHERE id = $1 AND endpoint = $2";
const RESCHEDULE: &str =
    "UPDATE webhook_outbox SET attempts = $1, next_at = $2 WHERE id = $3 AND endpoint = $4";
const COUNT: &str = "SELECT COUNT(*) FROM webhook_outbox";

type Row = (String, String, String, i64, i64);

/// Inserts records inside an open transaction (used by the atomic append too).
macro_rules! insert_records {
    ($executor:expr, $records:expr) => {
        for record in $records {
            sqlx::query($crate::sql_store::webhook_queue::INSERT)
                .bind(&record.id)
                .bind(&record.endpoint)
                .bind(&record.body)
                .bind(i64::from(record.attempts))
                .bind(to_i64(record.next_at)?)
                .execute(&mut *$executor)
                .await
                .map_err(db_error)?;
        }
    };
}
pub(super) use insert_records;

impl SqlStore {
    async fn do_enqueue(&self, records: Vec<WebhookRecord>) -> Result<(), StoreError> {
        on_db!(&self.writer, pool => {
            let mut tx = pool.begin_with(self.writer.begin_sql()).await.map_err(db_error)?;
            insert_records!(tx, &records);
            tx.commit().await.map_err(db_error)?;
        });
        Ok(())
    }

    async fn do_claim(
        &self,
        now: u64,
        limit: usize,
        lease_until: u64,
    ) -> Result<Vec<WebhookRecord>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows: Vec<Row> = on_db!(&self.reader, pool => {
            sqlx::query_as(SELECT_DUE)
                .bind(to_i64(now)?)
                .bind(limit)
                .fetch_all(pool)
                .await
                .map_err(db_error)?
        });
        let mut claimed = Vec::with_capacity(rows.len());
        for (id, endpoint, body, attempts, next_at) in rows {
            let taken = on_db!(&self.writer, pool => {
                sqlx::query(LEASE)
                    .bind(to_i64(lease_until)?)
                    .bind(&id)
                    .bind(&endpoint)
                    .bind(next_at)
                    .execute(pool)
                    .await
                    .map_err(db_error)?
                    .rows_affected()
            });
            if taken == 1 {
                claimed.push(WebhookRecord {
                    id,
                    endpoint,
                    body,
                    attempts: u32::try_from(attempts).unwrap_or(u32::MAX),
                    next_at: to_u64(next_at)?,
                });
            }
        }
        Ok(claimed)
    }
}

#[async_trait]
impl WebhookQueue for SqlStore {
    async fn enqueue(&self, records: Vec<WebhookRecord>) -> Result<(), StoreError> {
        self.do_enqueue(records).await
    }

    async fn claim_due(
        &self,
        now: u64,
        limit: usize,
        lease_until: u64,
    ) -> Result<Vec<WebhookRecord>, StoreError> {
        self.do_claim(now, limit, lease_until).await
    }

    async fn complete(&self, id: &str, endpoint: &str) -> Result<(), StoreError> {
        on_db!(&self.writer, pool => {
            sqlx::query(DELETE).bind(id).bind(endpoint).execute(pool).await.map_err(db_error)?;
        });
        Ok(())
    }

    async fn reschedule(
        &self,
        id: &str,
        endpoint: &str,
        attempts: u32,
        next_at: u64,
    ) -> Result<(), StoreError> {
        on_db!(&self.writer, pool => {
            sqlx::query(RESCHEDULE)
                .bind(i64::from(attempts))
                .bind(to_i64(next_at)?)
                .bind(id)
                .bind(endpoint)
                .execute(pool)
                .await
                .map_err(db_error)?;
        });
        Ok(())
    }

    async fn backlog(&self) -> Result<u64, StoreError> {
        let (count,): (i64,) = on_db!(&self.reader, pool => {
            sqlx::query_as(COUNT).fetch_one(pool).await.map_err(db_error)?
        });
        to_u64(count)
    }
}
