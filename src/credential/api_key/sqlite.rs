//! The `SQLite` key store: one file, schema migrations embedded in the crate.

use std::collections::HashSet;
use std::fmt;
use std::path::Path;
use std::time::{Duration, SystemTime};

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
};

use sqlx::migrate::Migrator;

use super::format::KeyId;
use super::record::KeyRecord;
use super::sql::{Breaker, COLUMNS, RawRow, RowValues, backend, missing_migration};
use super::store::{ChangeWatcher, KeyStore, StoreChange, StoreError, StoreFuture, Watchers};
use crate::clock::unix_secs;

/// The `SQLite` schema's migrations, embedded at compile time.
static MIGRATOR: Migrator = sqlx::migrate!("src/credential/api_key/migrations/sqlite");

/// How [`SqliteKeyStore::open`] treats the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum OpenMode {
    /// Create the file if it is missing, and apply pending migrations (for `keys` commands).
    CreateIfMissing,
    /// Refuse a missing file, and refuse a schema that is not fully migrated; change nothing (for `check` and
    /// `serve`, which must never create a store).
    MustExist,
}

/// API keys in a `SQLite` file (`sqlite://PATH`), through `sqlx`.
///
/// A file has no change notifications: the writes made through this store are announced to its watchers (see
/// [`KeyStore::watch`]), but those of another process (the `scopegate keys` command, another gate) reach a gate's
/// cache at the end of its TTL. Several gates that must agree sooner share a PostgreSQL store.
pub struct SqliteKeyStore {
    pool: SqlitePool,
    path: String,
    watchers: Watchers,
    breaker: Breaker,
}

impl SqliteKeyStore {
    /// Opens the store at `url` (`sqlite://PATH`; `sqlite:///abs/path` for an absolute path).
    pub async fn open(url: &str, mode: OpenMode) -> Result<Self, StoreError> {
        let path = url
            .strip_prefix("sqlite://")
            .filter(|p| !p.is_empty() && !p.starts_with(':'))
            .ok_or_else(|| StoreError::Url {
                url: url.chars().take(200).collect(),
            })?;
        if mode == OpenMode::MustExist && !Path::new(path).is_file() {
            return Err(StoreError::Missing {
                path: path.to_owned(),
            });
        }
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(mode == OpenMode::CreateIfMissing)
            .journal_mode(SqliteJournalMode::Wal)
            .busy_timeout(Duration::from_secs(5))
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await
            .map_err(backend)?;
        match mode {
            OpenMode::CreateIfMissing => MIGRATOR.run(&pool).await.map_err(backend)?,
            OpenMode::MustExist => check_schema(&pool, path).await?,
        }
        Ok(SqliteKeyStore {
            pool,
            path: path.to_owned(),
            watchers: Watchers::default(),
            breaker: Breaker::default(),
        })
    }

    /// One transaction of single-row updates: local, and cheap on `SQLite`.
    async fn write_last_used(
        pool: &SqlitePool,
        ids: Vec<String>,
        times: Vec<i64>,
    ) -> Result<(), StoreError> {
        let mut tx = pool.begin().await.map_err(backend)?;
        for (id, at) in ids.iter().zip(times) {
            sqlx::query(
                "UPDATE api_keys SET last_used_at = $2 WHERE id = $1 \
                 AND (last_used_at IS NULL OR last_used_at < $2)",
            )
            .bind(id)
            .bind(at)
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
        }
        tx.commit().await.map_err(backend)
    }

    fn start_watching(&self, watcher: std::sync::Arc<dyn ChangeWatcher>) -> bool {
        self.watchers.add(watcher);
        true
    }

    /// Closes every connection (waits for them). The store answers nothing afterwards.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// The file's path.
    pub fn path(&self) -> &str {
        &self.path
    }
}

async fn check_schema(pool: &SqlitePool, path: &str) -> Result<(), StoreError> {
    let schema_error = |detail: String| StoreError::Schema {
        path: path.to_owned(),
        detail,
    };
    let applied: HashSet<i64> =
        sqlx::query_scalar::<_, i64>("SELECT version FROM _sqlx_migrations WHERE success")
            .fetch_all(pool)
            .await
            .map_err(|e| schema_error(format!("no migration table ({e})")))?
            .into_iter()
            .collect();
    match missing_migration(&MIGRATOR, &applied) {
        Some(detail) => Err(schema_error(detail)),
        None => Ok(()),
    }
}

impl fmt::Debug for SqliteKeyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteKeyStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

super::sql::sql_key_store!(SqliteKeyStore, sqlx::Sqlite, SqliteRow);
