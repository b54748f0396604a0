//! The SQL shared by SQLite and PostgreSQL (`$n` parameters work in both), and conversions
//! between database values and the store's.

use std::fmt::Display;

use crate::store::StoreError;

/// The database's epoch.
pub(super) const SELECT_EPOCH: &str = "SELECT value FROM store_meta WHERE key = 'epoch'";
/// Sets the database's epoch unless it has one.
pub(super) const INSERT_EPOCH: &str = "INSERT INTO store_meta (key, value) \
     VALUES ('epoch', $1) ON CONFLICT (key) DO NOTHING";
pub(super) const SELECT_CHANNEL: &str =
    "SELECT id, epoch, last_offset FROM channels WHERE name = $1";
/// A channel's publications with `$2 < offset <= $3`.
pub(super) const SELECT_RANGE: &str = "SELECT seq, epoch, ts, sender, event_type, event_data \
     FROM publications WHERE channel_id = $1 AND seq > $2 AND seq <= $3 ORDER BY seq";
/// The first `$4` publications of channel `$1` with `$2 < offset < $3`.
pub(super) const HISTORY_FORWARD: &str = "SELECT p.seq, p.epoch, p.ts, p.sender, \
     p.event_type, p.event_data FROM publications p JOIN channels c ON c.id = p.channel_id \
     WHERE c.name = $1 AND p.seq > $2 AND p.seq < $3 ORDER BY p.seq LIMIT $4";
/// The last `$4` of them, newest first.
pub(super) const HISTORY_BACKWARD: &str = "SELECT p.seq, p.epoch, p.ts, p.sender, \
     p.event_type, p.event_data FROM publications p JOIN channels c ON c.id = p.channel_id \
     WHERE c.name = $1 AND p.seq > $2 AND p.seq < $3 ORDER BY p.seq DESC LIMIT $4";
/// Channels holding publications beyond the latest `$1` (a probe of the primary key each).
pub(super) const OVER_COUNT: &str = "SELECT c.id, c.last_offset FROM channels c WHERE EXISTS \
     (SELECT 1 FROM publications p WHERE p.channel_id = c.id AND p.seq <= c.last_offset - $1)";
pub(super) const DELETE_UP_TO: &str =
    "DELETE FROM publications WHERE channel_id = $1 AND seq <= $2";
pub(super) const DELETE_BEFORE: &str = "DELETE FROM publications WHERE ts < $1";

/// A stored publication as selected: offset, epoch, ts, sender, event type, event data.
pub(super) type Row = (i64, String, i64, Option<String>, String, String);

pub(super) fn db_error(e: sqlx::Error) -> StoreError {
    match e {
        sqlx::Error::ColumnDecode { .. }
        | sqlx::Error::Decode(_)
        | sqlx::Error::ColumnNotFound(_)
        | sqlx::Error::ColumnIndexOutOfBounds { .. }
        | sqlx::Error::Configuration(_) => StoreError::Invalid(e.to_string()),
        other => StoreError::Unavailable(other.to_string()),
    }
}

pub(super) fn unavailable(e: impl Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

pub(super) fn invalid(e: impl Display) -> StoreError {
    StoreError::Invalid(e.to_string())
}

pub(super) fn to_i64(value: u64) -> Result<i64, StoreError> {
    i64::try_from(value).map_err(|_| StoreError::Invalid(format!("{value} is out of range")))
}

pub(super) fn to_u64(value: i64) -> Result<u64, StoreError> {
    u64::try_from(value).map_err(|_| StoreError::Invalid(format!("negative value {value}")))
}

pub(super) fn clamp_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}
