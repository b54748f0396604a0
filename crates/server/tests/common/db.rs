//! A throwaway SQLite or PostgreSQL database per test.
#![allow(dead_code, unused_macros)]

use std::path::PathBuf;

use sqlx::Connection;
use tidings_server::sql_store::SqlStore;

/// One test database, removed when dropped.
pub enum TestDb {
    Sqlite(PathBuf),
    Postgres { url: String, schema: String },
}

impl TestDb {
    pub fn sqlite() -> TestDb {
        let dir = std::env::temp_dir().join(format!(
            "tidings-sql-{}-{:016x}",
            std::process::id(),
            rand::random::<u64>()
        ));
        TestDb::Sqlite(dir)
    }

    pub fn postgres() -> Option<TestDb> {
        if std::env::var_os("TIDINGS_TEST_SKIP_POSTGRES").is_some() {
            eprintln!("skipped: TIDINGS_TEST_SKIP_POSTGRES is set");
            return None;
        }
        let url = std::env::var("DATABASE_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
        let schema = format!("tidings_test_{:016x}", rand::random::<u64>());
        Some(TestDb::Postgres { url, schema })
    }

    /// A new store instance on this database (as another process or a restart would open it).
    pub async fn open(&self) -> SqlStore {
        match self {
            // A directory that does not exist yet: the store creates it and its file.
            TestDb::Sqlite(dir) => SqlStore::sqlite(format!("{}/data/", dir.display())).await,
            TestDb::Postgres { url, schema } => SqlStore::postgres_in_schema(url, schema).await,
        }
        .unwrap()
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        match self {
            TestDb::Sqlite(dir) => {
                let _ = std::fs::remove_dir_all(dir);
            }
            TestDb::Postgres { url, schema } => {
                let (url, drop_schema) = (url.clone(), format!("DROP SCHEMA {schema} CASCADE"));
                // Own thread and runtime: this may run inside (or after) the test's runtime.
                let done = std::thread::spawn(move || {
                    let runtime = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .unwrap();
                    runtime.block_on(async {
                        let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();
                        sqlx::query(&drop_schema).execute(&mut conn).await.unwrap();
                    });
                });
                let _ = done.join();
            }
        }
    }
}

/// Generates `sqlite::NAME` and `postgres::NAME` for each `async fn NAME(TestDb)` listed.
macro_rules! on_both {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::TestDb::sqlite()).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    if let Some(db) = super::TestDb::postgres() {
                        super::$name(db).await;
                    }
                }
            )*
        }
    };
}
