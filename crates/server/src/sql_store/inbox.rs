//! The offline inbox's acknowledgements on SQLite and PostgreSQL: the `inbox_acks` table.

use async_trait::async_trait;

use super::{Db, SqlStore, db_error, to_i64, to_u64};
use crate::store::{InboxStart, InboxStore, StoreError};

/// Keeps the highest offset per epoch: a late, smaller ack never moves a device back.
const UPSERT: &str = "INSERT INTO inbox_acks (user_id, device, epoch, acked, updated_at) \
     VALUES ($1, $2, $3, $4, $5) ON CONFLICT (user_id, device) DO UPDATE \
     SET epoch = excluded.epoch, acked = excluded.acked, updated_at = excluded.updated_at \
     WHERE inbox_acks.epoch <> excluded.epoch OR inbox_acks.acked < excluded.acked";
const SELECT_DEVICE: &str =
    "SELECT epoch, acked FROM inbox_acks WHERE user_id = $1 AND device = $2";
const SELECT_HIGHEST: &str = "SELECT epoch, acked FROM inbox_acks WHERE user_id = $1 ORDER BY updated_at DESC, acked DESC LIMIT 1";

#[async_trait]
impl InboxStore for SqlStore {
    async fn ack(
        &self,
        user_id: &str,
        device: &str,
        epoch: &str,
        offset: u64,
    ) -> Result<(), StoreError> {
        let now = to_i64(crate::time::now_ms())?;
        on_db!(&self.writer, pool => {
            sqlx::query(UPSERT)
                .bind(user_id)
                .bind(device)
                .bind(epoch)
                .bind(to_i64(offset)?)
                .bind(now)
                .execute(pool)
                .await
                .map_err(db_error)?;
        });
        Ok(())
    }

    async fn inbox_start(
        &self,
        user_id: &str,
        device: &str,
    ) -> Result<Option<InboxStart>, StoreError> {
        let own: Option<(String, i64)> = on_db!(&self.reader, pool => {
            sqlx::query_as(SELECT_DEVICE)
                .bind(user_id)
                .bind(device)
                .fetch_optional(pool)
                .await
                .map_err(db_error)?
        });
        let row = match own {
            Some((epoch, acked)) => Some((epoch, acked, true)),
            None => on_db!(&self.reader, pool => {
                sqlx::query_as(SELECT_HIGHEST)
                    .bind(user_id)
                    .fetch_optional(pool)
                    .await
                    .map_err(db_error)?
            })
            .map(|(epoch, acked): (String, i64)| (epoch, acked, false)),
        };
        row.map(|(epoch, acked, own)| {
            Ok(InboxStart {
                epoch,
                offset: to_u64(acked)?,
                own,
            })
        })
        .transpose()
    }
}
