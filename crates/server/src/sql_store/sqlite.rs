//! Opening SQLite (the `sqlite` feature): one file in WAL mode, one writer connection.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::migrate::Migrator;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use tokio::sync::oneshot;

use super::sql::{db_error, unavailable};
use super::{Db, SQLITE_FILE_NAME, SqlStore};
use crate::store::StoreError;

static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("./migrations/sqlite");

/// How long a SQLite writer waits for another process's write lock.
const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(10);
/// Read connections to a SQLite file (writes use one connection of their own).
const SQLITE_READERS: u32 = 4;
/// The WAL file's size kept after a checkpoint (bytes; 64 MiB).
const WAL_SIZE_LIMIT: &str = "67108864";
/// How often the WAL is copied back into the database file, off the commit path.
const CHECKPOINT_INTERVAL: Duration = Duration::from_millis(500);

impl SqlStore {
    /// Opens (creating it, its parent directories and its tables if missing) a SQLite database
    /// in WAL mode with `synchronous = FULL`, so an acknowledged publication survives a crash
    /// or power loss. `path` is the database file, or a directory (an existing one, or a path
    /// ending in `/`) to keep [`SQLITE_FILE_NAME`] in. Another process may open the same file.
    pub async fn sqlite(path: impl AsRef<Path>) -> Result<SqlStore, StoreError> {
        let file = sqlite_file(path.as_ref());
        SqlStore::open_sqlite_file(SqliteConnectOptions::new().filename(file)).await
    }

    /// A SQLite database in memory, gone when the store is dropped: for tests.
    pub async fn sqlite_in_memory() -> Result<SqlStore, StoreError> {
        let options = SqliteConnectOptions::new().in_memory(true);
        // Only one connection ever sees this database: keep it open for the store's life.
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(options)
            .await
            .map_err(db_error)?;
        SQLITE_MIGRATIONS.run(&pool).await.map_err(unavailable)?;
        SqlStore::finish(Db::Sqlite(pool.clone()), Db::Sqlite(pool), true).await
    }

    /// Opens `sqlite://path/to/file.db` or `sqlite::memory:`.
    pub(super) async fn sqlite_url(url: &str) -> Result<SqlStore, StoreError> {
        if url.contains(":memory:") {
            return SqlStore::sqlite_in_memory().await;
        }
        let options = SqliteConnectOptions::from_str(url).map_err(db_error)?;
        SqlStore::open_sqlite_file(options).await
    }

    pub(super) async fn open_sqlite_file(
        options: SqliteConnectOptions,
    ) -> Result<SqlStore, StoreError> {
        let file = options.get_filename().to_path_buf();
        if let Some(dir) = file.parent().filter(|d| !d.as_os_str().is_empty()) {
            tokio::fs::create_dir_all(dir)
                .await
                .map_err(|e| StoreError::Unavailable(format!("{}: {e}", dir.display())))?;
        }
        let options = options
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(SQLITE_BUSY_TIMEOUT)
            .foreign_keys(true)
            // No checkpoint inside a commit: SQLite's automatic one runs in the commit that
            // crosses 1,000 WAL pages, and that publish (and every one queued behind it)
            // waits for the copy and an fsync of the database file. `checkpoints` runs them
            // beside the writer instead.
            .pragma("wal_autocheckpoint", "0")
            // After a burst, the WAL file shrinks back to this once a checkpoint caught up.
            .pragma("journal_size_limit", WAL_SIZE_LIMIT)
            // A batch's `UPDATE .. FROM (SELECT .. UNION ALL ..)` builds a temporary table:
            // in memory it costs a few allocations, on disk a file created and deleted per commit.
            .pragma("temp_store", "MEMORY");
        // One writer connection: appends of this process queue here instead of spinning on
        // SQLite's lock; readers run beside it (WAL).
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options.clone())
            .await
            .map_err(db_error)?;
        SQLITE_MIGRATIONS.run(&writer).await.map_err(unavailable)?;
        let reader = SqlitePoolOptions::new()
            .max_connections(SQLITE_READERS)
            .connect_with(options)
            .await
            .map_err(db_error)?;
        tracing::info!(file = %file.display(), "SQLite publication store ready");
        let (stop, stopped) = oneshot::channel();
        tokio::spawn(checkpoints(reader.clone(), stopped));
        let mut store = SqlStore::finish(Db::Sqlite(writer), Db::Sqlite(reader), true).await?;
        store.checkpoints = Some(Arc::new(stop));
        Ok(store)
    }
}

/// Checkpoints the WAL every [`CHECKPOINT_INTERVAL`] in PASSIVE mode (it never waits for the
/// writer or readers, and the writer never waits for it) until `stop` is dropped with the
/// last clone of the store. A WAL that a long read keeps from being copied grows until the
/// next checkpoint that can.
async fn checkpoints(pool: sqlx::SqlitePool, mut stop: oneshot::Receiver<()>) {
    let mut tick = tokio::time::interval(CHECKPOINT_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = &mut stop => return,
            _ = tick.tick() => {}
        }
        if let Err(e) = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
            .execute(&pool)
            .await
        {
            tracing::warn!(error = %e, "SQLite checkpoint failed; retrying");
        }
    }
}

/// The database file `path` names: itself, or [`SQLITE_FILE_NAME`] in it when it is a
/// directory.
fn sqlite_file(path: &Path) -> PathBuf {
    let names_dir = path.is_dir() || path.as_os_str().to_string_lossy().ends_with(['/', '\\']);
    if names_dir {
        path.join(SQLITE_FILE_NAME)
    } else {
        path.to_path_buf()
    }
}
