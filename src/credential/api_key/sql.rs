//! What the SQL key stores share: one table (each database has its own migrations, with the same columns: text,
//! JSON as text and 64-bit integers), the row's columns, the statements, and the checks that turn a stored row back
//! into a record. PostgreSQL's migrations also announce changes (see `PgKeyStore`).

use std::collections::HashSet;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use sqlx::migrate::Migrator;
use sqlx::{ColumnIndex, Decode, Row, Type};

use super::format::KeyId;
use super::hash::KeyHash;
use super::record::{KeyInfo, KeyRecord};
use super::store::StoreError;
use crate::Attributes;
use crate::clock::unix_secs;
use crate::network::{Cidr, CidrSet};
use crate::policy::ScopeSet;

/// The first migration of `migrator` that `applied` lacks, described, if any.
pub(super) fn missing_migration(migrator: &Migrator, applied: &HashSet<i64>) -> Option<String> {
    migrator
        .iter()
        .find(|m| !applied.contains(&m.version))
        .map(|m| format!("migration {} ({}) is not applied", m.version, m.description))
}

/// Every column, in the order of [`RowValues`].
pub(super) const COLUMNS: &str = "id, name, scopes, allow_ips, attributes, pepper_version, key_hash, \
                                  created_at, expires_at, revoked_at, replaces, disabled_at, rate_limit, \
                                  last_used_at";

pub(super) fn backend(error: impl std::error::Error + Send + Sync + 'static) -> StoreError {
    StoreError::Backend(Box::new(error))
}

/// Fails lookups fast while the database is unreachable. A pool keeps trying to connect until its acquire timeout,
/// so without this every request of an outage would wait that long before its 503. After a lookup fails to reach
/// the database, lookups fail at once for [`Breaker::OPEN`]; then one lookup tries again (the others still fail at
/// once while it waits), and its success closes the breaker.
#[derive(Debug, Default)]
pub(super) struct Breaker {
    /// Milliseconds since [`epoch`] until which lookups fail at once; 0: closed.
    open_until: AtomicU64,
}

/// The breaker's time base: the first use in this process (a monotonic clock, so a wall clock step cannot hold it
/// open).
fn epoch_millis() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    let epoch = *EPOCH.get_or_init(Instant::now);
    u64::try_from(epoch.elapsed().as_millis())
        .unwrap_or(u64::MAX)
        .max(1)
}

impl Breaker {
    /// How long lookups fail at once after the database could not be reached.
    pub(super) const OPEN: Duration = Duration::from_secs(1);

    /// Whether a lookup may go to the database now; the error to answer at once if not.
    pub(super) fn admit(&self, probe_for: Duration) -> Result<(), StoreError> {
        let until = self.open_until.load(Ordering::Acquire);
        if until == 0 {
            return Ok(());
        }
        let now = epoch_millis();
        let probe_until =
            now.saturating_add(u64::try_from(probe_for.as_millis()).unwrap_or(u64::MAX));
        // Past the window, one lookup (the one that moves the window on) tries the database.
        if now >= until
            && self
                .open_until
                .compare_exchange(until, probe_until, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            return Ok(());
        }
        Err(StoreError::Backend(Box::new(std::io::Error::other(
            "the key store's database was unreachable moments ago; trying again shortly",
        ))))
    }

    /// Closes the breaker after a lookup reached the database, or opens it after one could not.
    pub(super) fn record<T>(&self, result: Result<T, sqlx::Error>) -> Result<T, StoreError> {
        match result {
            Ok(value) => {
                if self.open_until.load(Ordering::Relaxed) != 0 {
                    self.open_until.store(0, Ordering::Release);
                }
                Ok(value)
            }
            Err(error) => {
                if matches!(
                    error,
                    sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) | sqlx::Error::Tls(_)
                ) {
                    let open = u64::try_from(Self::OPEN.as_millis()).unwrap_or(u64::MAX);
                    self.open_until
                        .store(epoch_millis().saturating_add(open), Ordering::Release);
                }
                Err(backend(error))
            }
        }
    }
}

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

/// A row as stored: text, JSON text and whole Unix seconds.
pub(super) struct RawRow {
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
    disabled_at: Option<i64>,
    rate_limit: Option<String>,
    last_used_at: Option<i64>,
}

impl RawRow {
    /// Reads the columns of any sqlx row whose database decodes text and 64-bit integers.
    pub(super) fn read<'r, R>(row: &'r R) -> Result<Self, sqlx::Error>
    where
        R: Row,
        &'static str: ColumnIndex<R>,
        String: Decode<'r, R::Database> + Type<R::Database>,
        i64: Decode<'r, R::Database> + Type<R::Database>,
    {
        Ok(RawRow {
            id: row.try_get("id")?,
            name: row.try_get("name")?,
            scopes: row.try_get("scopes")?,
            allow_ips: row.try_get("allow_ips")?,
            attributes: row.try_get("attributes")?,
            pepper_version: row.try_get("pepper_version")?,
            key_hash: row.try_get("key_hash")?,
            created_at: row.try_get("created_at")?,
            expires_at: row.try_get("expires_at")?,
            revoked_at: row.try_get("revoked_at")?,
            replaces: row.try_get("replaces")?,
            disabled_at: row.try_get("disabled_at")?,
            rate_limit: row.try_get("rate_limit")?,
            last_used_at: row.try_get("last_used_at")?,
        })
    }

    /// The record, every field checked as when it was issued: a row changed behind the issuer's back is corrupt
    /// (the gate answers 503), never a wider grant.
    pub(super) fn into_record(self) -> Result<KeyRecord, StoreError> {
        let corrupt = |detail: &str| StoreError::Corrupt {
            id: self.id.chars().take(40).collect(),
            detail: detail.to_owned(),
        };
        let time = |secs: i64| {
            u64::try_from(secs)
                .map(|s| SystemTime::UNIX_EPOCH + Duration::from_secs(s))
                .map_err(|_| corrupt("a time before 1970"))
        };
        let id: KeyId = self.id.parse().map_err(|_| corrupt("bad id"))?;
        let scopes: Vec<String> = serde_json::from_str(&self.scopes)
            .map_err(|_| corrupt("scopes are not a JSON array of strings"))?;
        // A bare `*` stored behind the issuer's back is refused here: the record is unusable, the gate answers 503.
        let scopes = ScopeSet::parse(&scopes).map_err(|_| corrupt("invalid scope"))?;
        let allow_ips = match &self.allow_ips {
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
        let attributes: Attributes = serde_json::from_str(&self.attributes)
            .map_err(|_| corrupt("attributes are not a JSON object of strings"))?;
        let pepper_version = u32::try_from(self.pepper_version)
            .map_err(|_| corrupt("pepper version out of range"))?;
        let digest =
            unhex(&self.key_hash).ok_or_else(|| corrupt("key_hash is not 64 hex digits"))?;
        let replaces = match &self.replaces {
            None => None,
            Some(text) => Some(text.parse().map_err(|_| corrupt("bad replaces id"))?),
        };
        let rate_limit = match &self.rate_limit {
            None => None,
            Some(text) => Some(text.parse().map_err(|_| corrupt("invalid rate_limit"))?),
        };
        Ok(KeyRecord {
            info: KeyInfo {
                id,
                name: self.name.clone(),
                scopes,
                allow_ips,
                attributes,
                created_at: time(self.created_at)?,
                expires_at: self.expires_at.map(time).transpose()?,
                revoked_at: self.revoked_at.map(time).transpose()?,
                replaces,
                disabled_at: self.disabled_at.map(time).transpose()?,
                rate_limit,
                last_used_at: self.last_used_at.map(time).transpose()?,
            },
            hash: KeyHash::from_parts(pepper_version, digest),
        })
    }
}

/// A record's column values, in the order of [`COLUMNS`].
pub(super) struct RowValues<'a> {
    pub(super) id: &'a str,
    pub(super) name: &'a str,
    pub(super) scopes: String,
    pub(super) allow_ips: Option<String>,
    pub(super) attributes: String,
    pub(super) pepper_version: i64,
    pub(super) key_hash: String,
    pub(super) created_at: i64,
    pub(super) expires_at: Option<i64>,
    pub(super) revoked_at: Option<i64>,
    pub(super) replaces: Option<&'a str>,
    pub(super) disabled_at: Option<i64>,
    pub(super) rate_limit: Option<String>,
    pub(super) last_used_at: Option<i64>,
}

impl<'a> RowValues<'a> {
    pub(super) fn of(record: &'a KeyRecord) -> Result<Self, StoreError> {
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
        Ok(RowValues {
            id: info.id.as_str(),
            name: &info.name,
            scopes: serde_json::to_string(&scopes).map_err(backend)?,
            allow_ips,
            attributes: serde_json::to_string(&info.attributes).map_err(backend)?,
            pepper_version: i64::from(record.hash.pepper_version()),
            key_hash: hex(record.hash.digest()),
            created_at: unix_secs(info.created_at),
            expires_at: info.expires_at.map(unix_secs),
            revoked_at: info.revoked_at.map(unix_secs),
            replaces: info.replaces.as_ref().map(KeyId::as_str),
            disabled_at: info.disabled_at.map(unix_secs),
            rate_limit: info.rate_limit.map(|r| r.to_string()),
            last_used_at: info.last_used_at.map(unix_secs),
        })
    }
}

/// The `KeyStore` implementation of a SQL store with a `pool` field: the same statements (`$n` placeholders, which
/// `SQLite` reads as numbered parameters too), the same row checks; only the database types differ, and the batched
/// write of `last_used_at`, which each store defines as `Self::write_last_used`.
macro_rules! sql_key_store {
    ($store:ty, $db:ty, $row:ty) => {
        fn read_row(row: &$row) -> Result<KeyRecord, StoreError> {
            RawRow::read(row).map_err(backend)?.into_record()
        }

        async fn insert_with<'e, E>(executor: E, record: &KeyRecord) -> Result<(), StoreError>
        where
            E: sqlx::Executor<'e, Database = $db>,
        {
            let v = RowValues::of(record)?;
            let result = sqlx::query(&format!(
                "INSERT INTO api_keys ({COLUMNS}) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)"
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
            .bind(v.disabled_at)
            .bind(v.rate_limit)
            .bind(v.last_used_at)
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

        impl KeyStore for $store {
            fn insert(&self, record: KeyRecord) -> StoreFuture<'_, ()> {
                Box::pin(async move {
                    insert_with(&self.pool, &record).await?;
                    self.watchers.announce(StoreChange::Key(record.info.id));
                    Ok(())
                })
            }

            fn get(&self, id: KeyId) -> StoreFuture<'_, Option<KeyRecord>> {
                Box::pin(async move {
                    // The lookup of the request path: failing fast through an outage.
                    self.breaker.admit(self.pool.options().get_acquire_timeout())?;
                    let row = self.breaker.record(
                        sqlx::query(&format!("SELECT {COLUMNS} FROM api_keys WHERE id = $1"))
                            .bind(id.as_str())
                            .fetch_optional(&self.pool)
                            .await,
                    )?;
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
                    let row = sqlx::query(&format!(
                        "UPDATE api_keys SET revoked_at = CASE WHEN revoked_at IS NULL OR revoked_at > $1 THEN $1 \
                         ELSE revoked_at END WHERE id = $2 RETURNING {COLUMNS}"
                    ))
                    .bind(unix_secs(at))
                    .bind(id.as_str())
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(backend)?;
                    self.watchers.announce(StoreChange::Key(id));
                    row.as_ref().map(read_row).transpose()
                })
            }

            fn set_disabled(
                &self,
                id: KeyId,
                at: Option<SystemTime>,
            ) -> StoreFuture<'_, Option<KeyRecord>> {
                Box::pin(async move {
                    // Disabling keeps the first time; enabling clears it.
                    let (sql, at) = match at {
                        Some(at) => (
                            format!(
                                "UPDATE api_keys SET disabled_at = COALESCE(disabled_at, $1) WHERE id = $2 \
                                 RETURNING {COLUMNS}"
                            ),
                            Some(unix_secs(at)),
                        ),
                        None => (
                            format!("UPDATE api_keys SET disabled_at = NULL WHERE id = $1 RETURNING {COLUMNS}"),
                            None,
                        ),
                    };
                    let mut query = sqlx::query(&sql);
                    if let Some(at) = at {
                        query = query.bind(at);
                    }
                    let row = query
                        .bind(id.as_str())
                        .fetch_optional(&self.pool)
                        .await
                        .map_err(backend)?;
                    self.watchers.announce(StoreChange::Key(id));
                    row.as_ref().map(read_row).transpose()
                })
            }

            fn record_last_used(&self, uses: Vec<(KeyId, SystemTime)>) -> StoreFuture<'_, ()> {
                Box::pin(async move {
                    if uses.is_empty() {
                        return Ok(());
                    }
                    let (ids, times): (Vec<String>, Vec<i64>) = uses
                        .iter()
                        .map(|(id, at)| (id.as_str().to_owned(), unix_secs(*at)))
                        .unzip();
                    Self::write_last_used(&self.pool, ids, times).await
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
                    // The old row is locked by the update: two rotations of one key cannot both succeed.
                    let updated = sqlx::query(
                        "UPDATE api_keys SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL \
                         AND disabled_at IS NULL AND (expires_at IS NULL OR expires_at > $3)",
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
                    let new_id = new.info.id;
                    insert_with(&mut *tx, &new).await?;
                    tx.commit().await.map_err(backend)?;
                    self.watchers.announce(StoreChange::Key(old));
                    self.watchers.announce(StoreChange::Key(new_id));
                    Ok(true)
                })
            }

            fn watch(&self, watcher: std::sync::Arc<dyn ChangeWatcher>) -> bool {
                self.start_watching(watcher)
            }
        }
    };
}
pub(super) use sql_key_store;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_breaker_fails_fast_then_lets_one_lookup_try() {
        let breaker = Breaker::default();
        let probe = Duration::from_secs(2);
        assert!(breaker.admit(probe).is_ok());
        // A database error that is not about reaching it leaves the breaker closed.
        assert!(breaker.record::<()>(Err(sqlx::Error::RowNotFound)).is_err());
        assert!(breaker.admit(probe).is_ok());
        // Unreachable: lookups fail at once for the window.
        assert!(
            breaker
                .record::<()>(Err(sqlx::Error::PoolTimedOut))
                .is_err()
        );
        assert!(breaker.admit(probe).is_err());
        // Past the window: one lookup tries, the next still fails at once.
        let past = epoch_millis().saturating_sub(1);
        breaker.open_until.store(past.max(1), Ordering::Release);
        assert!(breaker.admit(probe).is_ok());
        assert!(breaker.admit(probe).is_err());
        // It reached the database: closed.
        assert!(breaker.record(Ok(())).is_ok());
        assert!(breaker.admit(probe).is_ok());
    }

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
