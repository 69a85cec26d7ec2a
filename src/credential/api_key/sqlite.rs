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

fn read_row(row: &SqliteRow) -> Result<KeyRecord, StoreError> {
    RawRow::read(row).map_err(backend)?.into_record()
}

async fn insert_with<'e, E>(executor: E, record: &KeyRecord) -> Result<(), StoreError>
where
    E: sqlx::Executor<'e, Database = sqlx::Sqlite>,
{
    let v = RowValues::of(record)?;
    let result = sqlx::query(&format!(
        "INSERT INTO api_keys ({COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    ))
    .bind(v.id)
    .bind(v.name)
    .bind(v.scopes)
    .bind(v.allow_ips)
    .bind(v.attributes)
    .bind(v.pepper_version)
    .bind(v.key_hash)
    .bind(v.created_at)
    .bind(v.expires_at)
    .bind(v.revoked_at)
    .bind(v.replaces)
    .execute(executor)
    .await;
    match result {
        Ok(_) => Ok(()),
        Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
            Err(StoreError::Duplicate(record.info.id))
        }
        Err(e) => Err(backend(e)),
    }
}

impl KeyStore for SqliteKeyStore {
    fn insert(&self, record: KeyRecord) -> StoreFuture<'_, ()> {
        Box::pin(async move { insert_with(&self.pool, &record).await })
    }

    fn get(&self, id: KeyId) -> StoreFuture<'_, Option<KeyRecord>> {
        Box::pin(async move {
            let row = sqlx::query(&format!("SELECT {COLUMNS} FROM api_keys WHERE id = ?"))
                .bind(id.as_str())
                .fetch_optional(&self.pool)
                .await
                .map_err(backend)?;
            row.as_ref().map(read_row).transpose()
        })
    }

    fn list(&self) -> StoreFuture<'_, Vec<KeyRecord>> {
        Box::pin(async move {
            let rows = sqlx::query(&format!(
                "SELECT {COLUMNS} FROM api_keys ORDER BY created_at, id"
            ))
            .fetch_all(&self.pool)
            .await
            .map_err(backend)?;
            rows.iter().map(read_row).collect()
        })
    }

    fn revoke(&self, id: KeyId, at: SystemTime) -> StoreFuture<'_, Option<KeyRecord>> {
        Box::pin(async move {
            let at = unix_secs(at);
            let row = sqlx::query(&format!(
                "UPDATE api_keys SET revoked_at = CASE WHEN revoked_at IS NULL OR revoked_at > ? THEN ? \
                 ELSE revoked_at END WHERE id = ? RETURNING {COLUMNS}"
            ))
            .bind(at)
            .bind(at)
            .bind(id.as_str())
            .fetch_optional(&self.pool)
            .await
            .map_err(backend)?;
            row.as_ref().map(read_row).transpose()
        })
    }

    fn rotate(
        &self,
        old: KeyId,
        old_ends_at: SystemTime,
        now: SystemTime,
        new: KeyRecord,
    ) -> StoreFuture<'_, bool> {
        Box::pin(async move {
            let mut tx = self.pool.begin().await.map_err(backend)?;
            let updated = sqlx::query(
                "UPDATE api_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL \
                 AND (expires_at IS NULL OR expires_at > ?)",
            )
            .bind(unix_secs(old_ends_at))
            .bind(old.as_str())
            .bind(unix_secs(now))
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
            if updated.rows_affected() != 1 {
                tx.rollback().await.map_err(backend)?;
                return Ok(false);
            }
            insert_with(&mut *tx, &new).await?;
            tx.commit().await.map_err(backend)?;
            Ok(true)
        })
    }
}
