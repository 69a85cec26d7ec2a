//! The `SQLite` key store: one file, schema migrations embedded in the crate.

use std::collections::HashSet;
use std::fmt;
use std::path::Path;
use std::time::{Duration, SystemTime};

use sqlx::Row;
use sqlx::migrate::Migrator;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
};

use super::format::KeyId;
use super::hash::KeyHash;
use super::record::{KeyInfo, KeyRecord};
use super::store::{KeyStore, StoreError, StoreFuture};
use crate::Attributes;
use crate::clock::unix_secs;
use crate::network::{Cidr, CidrSet};
use crate::policy::ScopeSet;

/// The schema migrations, embedded at compile time.
static MIGRATOR: Migrator = sqlx::migrate!("src/credential/api_key/migrations");

const COLUMNS: &str = "id, name, scopes, allow_ips, attributes, pepper_version, key_hash, created_at, \
                       expires_at, revoked_at, replaces";

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

fn backend(error: impl std::error::Error + Send + Sync + 'static) -> StoreError {
    StoreError::Backend(Box::new(error))
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
        sqlx::query_scalar::<_, i64>("SELECT version FROM _sqlx_migrations WHERE success = 1")
            .fetch_all(pool)
            .await
            .map_err(|e| schema_error(format!("no migration table ({e})")))?
            .into_iter()
            .collect();
    for migration in MIGRATOR.iter() {
        if !applied.contains(&migration.version) {
            return Err(schema_error(format!(
                "migration {} ({}) is not applied",
                migration.version, migration.description
            )));
        }
    }
    Ok(())
}

impl fmt::Debug for SqliteKeyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteKeyStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// Whole Unix seconds, saturating (the issuer only writes whole seconds).
fn hex(bytes: &[u8; 32]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::with_capacity(64), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

fn unhex(text: &str) -> Option<[u8; 32]> {
    let bytes = text.as_bytes();
    if bytes.len() != 64 {
        return None;
    }
    let nibble = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    let mut out = [0u8; 32];
    for (o, pair) in out.iter_mut().zip(bytes.chunks_exact(2)) {
        *o = nibble(pair[0])? << 4 | nibble(pair[1])?;
    }
    Some(out)
}

struct RawRow {
    id: String,
    name: String,
    scopes: String,
    allow_ips: Option<String>,
    attributes: String,
    pepper_version: i64,
    key_hash: String,
    created_at: i64,
    expires_at: Option<i64>,
    revoked_at: Option<i64>,
    replaces: Option<String>,
}

fn read_row(row: &SqliteRow) -> Result<KeyRecord, StoreError> {
    let raw = RawRow {
        id: row.try_get("id").map_err(backend)?,
        name: row.try_get("name").map_err(backend)?,
        scopes: row.try_get("scopes").map_err(backend)?,
        allow_ips: row.try_get("allow_ips").map_err(backend)?,
        attributes: row.try_get("attributes").map_err(backend)?,
        pepper_version: row.try_get("pepper_version").map_err(backend)?,
        key_hash: row.try_get("key_hash").map_err(backend)?,
        created_at: row.try_get("created_at").map_err(backend)?,
        expires_at: row.try_get("expires_at").map_err(backend)?,
        revoked_at: row.try_get("revoked_at").map_err(backend)?,
        replaces: row.try_get("replaces").map_err(backend)?,
    };
    let corrupt = |detail: &str| StoreError::Corrupt {
        id: raw.id.chars().take(40).collect(),
        detail: detail.to_owned(),
    };
    let time = |secs: i64| {
        u64::try_from(secs)
            .map(|s| SystemTime::UNIX_EPOCH + Duration::from_secs(s))
            .map_err(|_| corrupt("a time before 1970"))
    };
    let id: KeyId = raw.id.parse().map_err(|_| corrupt("bad id"))?;
    let scopes: Vec<String> = serde_json::from_str(&raw.scopes)
        .map_err(|_| corrupt("scopes are not a JSON array of strings"))?;
    // A bare `*` stored behind the issuer's back is refused here: the record is unusable, the gate answers 503.
    let scopes = ScopeSet::parse(&scopes).map_err(|_| corrupt("invalid scope"))?;
    let allow_ips = match &raw.allow_ips {
        None => None,
        Some(text) => {
            let list: Vec<String> = serde_json::from_str(text)
                .map_err(|_| corrupt("allow_ips is not a JSON array of strings"))?;
            Some(
                list.iter()
                    .map(|s| s.parse::<Cidr>())
                    .collect::<Result<CidrSet, _>>()
                    .map_err(|_| corrupt("invalid network in allow_ips"))?,
            )
        }
    };
    let attributes: Attributes = serde_json::from_str(&raw.attributes)
        .map_err(|_| corrupt("attributes are not a JSON object of strings"))?;
    let pepper_version =
        u32::try_from(raw.pepper_version).map_err(|_| corrupt("pepper version out of range"))?;
    let digest = unhex(&raw.key_hash).ok_or_else(|| corrupt("key_hash is not 64 hex digits"))?;
    let replaces = match &raw.replaces {
        None => None,
        Some(text) => Some(text.parse().map_err(|_| corrupt("bad replaces id"))?),
    };
    Ok(KeyRecord {
        info: KeyInfo {
            id,
            name: raw.name.clone(),
            scopes,
            allow_ips,
            attributes,
            created_at: time(raw.created_at)?,
            expires_at: raw.expires_at.map(time).transpose()?,
            revoked_at: raw.revoked_at.map(time).transpose()?,
            replaces,
        },
        hash: KeyHash::from_parts(pepper_version, digest),
    })
}

async fn insert_with<'e, E>(executor: E, record: &KeyRecord) -> Result<(), StoreError>
where
    E: sqlx::Executor<'e, Database = sqlx::Sqlite>,
{
    let info = &record.info;
    let scopes: Vec<&str> = info
        .scopes
        .iter()
        .map(crate::policy::Scope::as_str)
        .collect();
    let allow_ips = match &info.allow_ips {
        None => None,
        Some(set) => {
            let list: Vec<String> = set.networks().iter().map(ToString::to_string).collect();
            Some(serde_json::to_string(&list).map_err(backend)?)
        }
    };
    let scopes = serde_json::to_string(&scopes).map_err(backend)?;
    let attributes = serde_json::to_string(&info.attributes).map_err(backend)?;
    let result = sqlx::query(&format!(
        "INSERT INTO api_keys ({COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    ))
    .bind(info.id.as_str())
    .bind(&info.name)
    .bind(scopes)
    .bind(allow_ips)
    .bind(attributes)
    .bind(i64::from(record.hash.pepper_version()))
    .bind(hex(record.hash.digest()))
    .bind(unix_secs(info.created_at))
    .bind(info.expires_at.map(unix_secs))
    .bind(info.revoked_at.map(unix_secs))
    .bind(info.replaces.as_ref().map(KeyId::as_str))
    .execute(executor)
    .await;
    match result {
        Ok(_) => Ok(()),
        Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
            Err(StoreError::Duplicate(info.id))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trips_and_is_strict() {
        let bytes = [0x00, 0x7f, 0xff, 0x10].repeat(8);
        let digest: [u8; 32] = bytes.try_into().unwrap_or([0; 32]);
        assert_eq!(unhex(&hex(&digest)), Some(digest));
        assert_eq!(unhex(&"A".repeat(64)), None);
        assert_eq!(unhex(&"0".repeat(63)), None);
        assert_eq!(unhex(&"g".repeat(64)), None);
    }
}
