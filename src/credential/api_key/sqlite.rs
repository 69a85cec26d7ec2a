//! The `SQLite` key store: one file, schema migrations embedded in the crate.

use std::collections::HashSet;
use std::fmt;
use std::path::Path;
use std::time::{Duration, SystemTime};

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
};

use super::format::KeyId;
use super::record::KeyRecord;
use super::sql::{COLUMNS, MIGRATOR, RawRow, RowValues, backend, missing_migration};
use super::store::{KeyStore, StoreError, StoreFuture};
use crate::clock::unix_secs;

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
pub struct SqliteKeyStore {
    pool: SqlitePool,
    path: String,
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
        })
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
    match missing_migration(&applied) {
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
