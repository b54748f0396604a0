//! Opening PostgreSQL (the `postgres` feature): a pool, in a schema of its own.

use std::str::FromStr;

use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};

use super::sql::{db_error, unavailable};
use super::{DEFAULT_SCHEMA, Db, SqlStore};
use crate::store::StoreError;

static POSTGRES_MIGRATIONS: Migrator = sqlx::migrate!("./migrations/postgres");

/// Connections to PostgreSQL per store.
const POSTGRES_CONNECTIONS: u32 = 8;

impl SqlStore {
    /// Connects to PostgreSQL (`postgres://user:password@host/database`) and keeps its tables
    /// in the schema [`DEFAULT_SCHEMA`], created if missing. Several nodes may share it.
    pub async fn postgres(url: &str) -> Result<SqlStore, StoreError> {
        SqlStore::postgres_in_schema(url, DEFAULT_SCHEMA).await
    }

    /// Like [`SqlStore::postgres`] with another schema (ASCII letters, digits and `_`).
    pub async fn postgres_in_schema(url: &str, schema: &str) -> Result<SqlStore, StoreError> {
        let valid = !schema.is_empty()
            && schema.len() <= 63
            && !schema.starts_with(|c: char| c.is_ascii_digit())
            && schema
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            return Err(StoreError::Invalid(format!("bad schema name {schema:?}")));
        }
        let options = PgConnectOptions::from_str(url)
            .map_err(db_error)?
            .options([("search_path", schema)]);
        let pool = PgPoolOptions::new()
            .max_connections(POSTGRES_CONNECTIONS)
            .connect_with(options)
            .await
            .map_err(db_error)?;
        ensure_schema(&pool, schema).await?;
        POSTGRES_MIGRATIONS.run(&pool).await.map_err(unavailable)?;
        tracing::info!(schema, "PostgreSQL publication store ready");
        SqlStore::finish(Db::Postgres(pool.clone()), Db::Postgres(pool), false).await
    }
}

/// Creates `schema` unless it exists (checked first: creating needs a privilege that using
/// an existing schema does not).
async fn ensure_schema(pool: &PgPool, schema: &str) -> Result<(), StoreError> {
    let exists = || async {
        sqlx::query_scalar::<_, i32>("SELECT 1 FROM pg_namespace WHERE nspname = $1")
            .bind(schema)
            .fetch_optional(pool)
            .await
            .map(|row| row.is_some())
            .map_err(db_error)
    };
    if exists().await? {
        return Ok(());
    }
    let create = format!("CREATE SCHEMA IF NOT EXISTS \"{schema}\"");
    match sqlx::query(&create).execute(pool).await {
        Ok(_) => Ok(()),
        // Two nodes creating it at once: one of them gets a unique violation.
        Err(_) if exists().await? => Ok(()),
        Err(e) => Err(db_error(e)),
    }
}
