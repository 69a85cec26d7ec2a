//! Where keys live: the [`KeyStore`] trait and the in-memory store.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{PoisonError, RwLock};
use std::time::SystemTime;

use super::format::KeyId;
use super::record::{KeyRecord, KeyStatus};

/// The future returned by [`KeyStore`] methods (boxed, so that stores can be chosen at run time behind
/// `Arc<dyn KeyStore>`).
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

/// A store failure. Never carries a secret or a digest. Verification turns every store error into an
/// `unavailable` denial: the gate fails closed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// A key with this id already exists.
    #[error("an API key with id {0} already exists")]
    Duplicate(KeyId),
    /// The store file does not exist and was not to be created.
    #[error("the key store {path:?} does not exist (it is only created by `keys issue`)")]
    Missing {
        /// The path given.
        path: String,
    },
    /// The store location is not a supported URL.
    #[error(
        "invalid key store URL {url:?}: expected sqlite://PATH or postgres://USER@HOST[:PORT]/DB (as this build supports)"
    )]
    Url {
        /// The URL given.
        url: String,
    },
    /// The store exists but its schema is missing or older than this version of scopegate.
    #[error(
        "the key store {path:?} is not an initialised scopegate key store (or needs migrating): {detail}"
    )]
    Schema {
        /// The path given.
        path: String,
        /// What is missing.
        detail: String,
    },
    /// A stored row could not be read back.
    #[error("the stored API key {id} is corrupt: {detail}")]
    Corrupt {
        /// The key's id (or what could be read of it).
        id: String,
        /// What is wrong.
        detail: String,
    },
    /// The backend failed (I/O, database, lock).
    #[error("the key store failed: {0}")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync + 'static>),
}

/// What a store is opened for, by [`open_store`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum StoreAccess {
    /// The `keys` commands: a missing `SQLite` file is created and migrated; a PostgreSQL database must already be
    /// migrated (`keys migrate`), since it is shared.
    Manage,
    /// A gate (`check`, `serve`): the store must exist with a current schema; nothing is created or migrated.
    Gate,
    /// `keys migrate`: create or upgrade the schema; running it again changes nothing.
    Migrate,
}

/// Opens the key store at `url`: `sqlite://PATH` (feature `sqlite`) or `postgres://…`/`postgresql://…` (feature
/// `postgres`). A URL of another kind, or of a kind this build lacks, is [`StoreError::Url`].
pub async fn open_store(
    url: &str,
    access: StoreAccess,
) -> Result<std::sync::Arc<dyn KeyStore>, StoreError> {
    let _ = access;
    #[cfg(feature = "sqlite")]
    if url.starts_with("sqlite://") {
        let mode = match access {
            StoreAccess::Gate => super::OpenMode::MustExist,
            StoreAccess::Manage | StoreAccess::Migrate => super::OpenMode::CreateIfMissing,
        };
        return Ok(std::sync::Arc::new(
            super::SqliteKeyStore::open(url, mode).await?,
        ));
    }
    #[cfg(feature = "postgres")]
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let store = match access {
            StoreAccess::Migrate => super::PgKeyStore::migrate(url).await?,
            StoreAccess::Manage | StoreAccess::Gate => super::PgKeyStore::connect(url).await?,
        };
        return Ok(std::sync::Arc::new(store));
    }
    Err(StoreError::Url {
        url: url
            .split('@')
            .next_back()
            .unwrap_or("")
            .chars()
            .take(200)
            .collect(),
    })
}

/// Storage for API key records. Implementations must be safe to share between tasks; every method is atomic.
///
/// Object safe: a gate holds an `Arc<dyn KeyStore>` chosen at run time.
pub trait KeyStore: Send + Sync + fmt::Debug {
    /// Adds a new record. A record with the same id is [`StoreError::Duplicate`].
    fn insert(&self, record: KeyRecord) -> StoreFuture<'_, ()>;

    /// The record with this id, if any.
    fn get(&self, id: KeyId) -> StoreFuture<'_, Option<KeyRecord>>;

    /// Every record, in no particular order.
    fn list(&self) -> StoreFuture<'_, Vec<KeyRecord>>;

    /// Sets `revoked_at` to `at`, unless it is already earlier (revocation is final and only moves earlier).
    /// Returns the updated record, or `None` when no record has this id.
    fn revoke(&self, id: KeyId, at: SystemTime) -> StoreFuture<'_, Option<KeyRecord>>;

    /// Atomically: if `old` exists and is active at `now` (no `revoked_at`, and no `expires_at` at or before
    /// `now`), sets its `revoked_at` to `old_ends_at` and inserts `new`, returning `true`. Otherwise changes
    /// nothing and returns `false`.
    fn rotate(
        &self,
        old: KeyId,
        old_ends_at: SystemTime,
        now: SystemTime,
        new: KeyRecord,
    ) -> StoreFuture<'_, bool>;
}

/// A store in memory: for tests, examples, and gates whose keys are loaded at start.
#[derive(Default)]
pub struct MemoryKeyStore {
    records: RwLock<HashMap<KeyId, KeyRecord>>,
}

impl MemoryKeyStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of records.
    pub fn len(&self) -> usize {
        self.records
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Whether the store is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn insert_now(&self, record: KeyRecord) -> Result<(), StoreError> {
        let mut records = self.records.write().unwrap_or_else(PoisonError::into_inner);
        let id = record.info.id;
        if records.contains_key(&id) {
            return Err(StoreError::Duplicate(id));
        }
        records.insert(id, record);
        Ok(())
    }
}

impl fmt::Debug for MemoryKeyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryKeyStore")
            .field("records", &self.len())
            .finish()
    }
}

impl KeyStore for MemoryKeyStore {
    fn insert(&self, record: KeyRecord) -> StoreFuture<'_, ()> {
        let result = self.insert_now(record);
        Box::pin(std::future::ready(result))
    }

    fn get(&self, id: KeyId) -> StoreFuture<'_, Option<KeyRecord>> {
        let found = self
            .records
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&id)
            .cloned();
        Box::pin(std::future::ready(Ok(found)))
    }

    fn list(&self) -> StoreFuture<'_, Vec<KeyRecord>> {
        let all = self
            .records
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .cloned()
            .collect();
        Box::pin(std::future::ready(Ok(all)))
    }

    fn revoke(&self, id: KeyId, at: SystemTime) -> StoreFuture<'_, Option<KeyRecord>> {
        let mut records = self.records.write().unwrap_or_else(PoisonError::into_inner);
        let updated = records.get_mut(&id).map(|record| {
            let revoked = &mut record.info.revoked_at;
            *revoked = Some(revoked.map_or(at, |r| r.min(at)));
            record.clone()
        });
        Box::pin(std::future::ready(Ok(updated)))
    }

    fn rotate(
        &self,
        old: KeyId,
        old_ends_at: SystemTime,
        now: SystemTime,
        new: KeyRecord,
    ) -> StoreFuture<'_, bool> {
        let mut records = self.records.write().unwrap_or_else(PoisonError::into_inner);
        let result = if records.contains_key(&new.info.id) {
            Err(StoreError::Duplicate(new.info.id))
        } else {
            match records.get_mut(&old) {
                Some(record) if record.info.status(now) == KeyStatus::Active => {
                    record.info.revoked_at = Some(old_ends_at);
                    records.insert(new.info.id, new);
                    Ok(true)
                }
                _ => Ok(false),
            }
        };
        Box::pin(std::future::ready(result))
    }
}
