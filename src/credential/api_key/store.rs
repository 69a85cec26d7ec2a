//! Where keys live: the [`KeyStore`] trait and the in-memory store.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, PoisonError, RwLock};
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

/// A change that a store announces to its watchers (see [`KeyStore::watch`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum StoreChange {
    /// The record with this id was added, changed or removed.
    Key(KeyId),
    /// Anything may have changed: announcements may have been missed (a lost notification connection, now back),
    /// or every record changed. Forget everything.
    All,
}

/// Where a store delivers its changes: a [`KeyCache`](super::KeyCache) drops what it holds for them.
pub trait ChangeWatcher: Send + Sync {
    /// Called for each change, from the task or thread that learned of it. Must not block.
    fn changed(&self, change: StoreChange);

    /// Whether the watcher is gone (its cache dropped): the store then stops delivering, and ends any task it
    /// started for it.
    fn is_closed(&self) -> bool;
}

/// The watchers of one store, told of the writes made through it (in this process). Closed watchers are dropped.
#[derive(Default)]
pub(super) struct Watchers(RwLock<Vec<Arc<dyn ChangeWatcher>>>);

impl Watchers {
    pub(super) fn add(&self, watcher: Arc<dyn ChangeWatcher>) {
        let mut list = self.0.write().unwrap_or_else(PoisonError::into_inner);
        list.retain(|w| !w.is_closed());
        list.push(watcher);
    }

    pub(super) fn announce(&self, change: StoreChange) {
        for watcher in self.0.read().unwrap_or_else(PoisonError::into_inner).iter() {
            watcher.changed(change);
        }
    }
}

impl fmt::Debug for Watchers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let count = self.0.read().unwrap_or_else(PoisonError::into_inner).len();
        f.debug_tuple("Watchers").field(&count).finish()
    }
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

    /// Atomically: if `old` exists and is active at `now` (no `revoked_at`, not disabled, and no `expires_at` at or
    /// before `now`), sets its `revoked_at` to `old_ends_at` and inserts `new`, returning `true`. Otherwise changes
    /// nothing and returns `false`.
    fn rotate(
        &self,
        old: KeyId,
        old_ends_at: SystemTime,
        now: SystemTime,
        new: KeyRecord,
    ) -> StoreFuture<'_, bool>;

    /// `Some(at)`: disables the key from now on, keeping the first `disabled_at` if it already is. `None`: enables
    /// it (clears `disabled_at`). Returns the updated record, or `None` when no record has this id. Revocation is
    /// untouched: a revoked key stays revoked whatever this says.
    fn set_disabled(&self, id: KeyId, at: Option<SystemTime>)
    -> StoreFuture<'_, Option<KeyRecord>>;

    /// Records when keys were last allowed, in one batch: each `last_used_at` only moves later. Ids without a
    /// record are skipped. Called behind requests, never on their path.
    fn record_last_used(&self, uses: Vec<(KeyId, SystemTime)>) -> StoreFuture<'_, ()>;

    /// Starts telling `watcher` of changes to the records, made by anyone, so that a cache can drop them at once
    /// rather than at the end of its TTL. Returns `false` when this store cannot (the default): the cache's TTL is
    /// then the only bound on how late a change made elsewhere is seen.
    ///
    /// The memory and `SQLite` stores tell of the writes made through them in this process; the PostgreSQL store
    /// listens to the database (`LISTEN`/`NOTIFY`), so it tells of every writer's changes, and announces
    /// [`StoreChange::All`] each time it starts listening (again).
    fn watch(&self, watcher: Arc<dyn ChangeWatcher>) -> bool {
        let _ = watcher;
        false
    }
}

/// A store in memory: for tests, examples, and gates whose keys are loaded at start.
#[derive(Default)]
pub struct MemoryKeyStore {
    records: RwLock<HashMap<KeyId, KeyRecord>>,
    watchers: Watchers,
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
        drop(records);
        self.watchers.announce(StoreChange::Key(id));
        Ok(())
    }

    /// Applies `change` to the record with this id, announcing it; the updated record.
    fn update(&self, id: KeyId, change: impl FnOnce(&mut KeyRecord)) -> Option<KeyRecord> {
        let mut records = self.records.write().unwrap_or_else(PoisonError::into_inner);
        let updated = records.get_mut(&id).map(|record| {
            change(record);
            record.clone()
        });
        drop(records);
        if updated.is_some() {
            self.watchers.announce(StoreChange::Key(id));
        }
        updated
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
        let updated = self.update(id, |record| {
            let revoked = &mut record.info.revoked_at;
            *revoked = Some(revoked.map_or(at, |r| r.min(at)));
        });
        Box::pin(std::future::ready(Ok(updated)))
    }

    fn set_disabled(
        &self,
        id: KeyId,
        at: Option<SystemTime>,
    ) -> StoreFuture<'_, Option<KeyRecord>> {
        let updated = self.update(id, |record| {
            let disabled = &mut record.info.disabled_at;
            *disabled = at.map(|at| disabled.unwrap_or(at));
        });
        Box::pin(std::future::ready(Ok(updated)))
    }

    fn record_last_used(&self, uses: Vec<(KeyId, SystemTime)>) -> StoreFuture<'_, ()> {
        // Not a change that can alter a decision: nothing is announced.
        let mut records = self.records.write().unwrap_or_else(PoisonError::into_inner);
        for (id, at) in uses {
            if let Some(record) = records.get_mut(&id) {
                let last = &mut record.info.last_used_at;
                *last = Some(last.map_or(at, |l| l.max(at)));
            }
        }
        Box::pin(std::future::ready(Ok(())))
    }

    fn watch(&self, watcher: Arc<dyn ChangeWatcher>) -> bool {
        self.watchers.add(watcher);
        true
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
                    let new_id = new.info.id;
                    records.insert(new_id, new);
                    drop(records);
                    self.watchers.announce(StoreChange::Key(old));
                    self.watchers.announce(StoreChange::Key(new_id));
                    Ok(true)
                }
                _ => Ok(false),
            }
        };
        Box::pin(std::future::ready(result))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use super::*;
    use crate::ManualClock;
    use crate::credential::api_key::{
        CacheConfig, KeyCache, KeyFormat, KeyIssuer, NewKey, Pepper, Peppers,
    };
    use crate::policy::ScopeSet;

    /// A store of a user's own that announces nothing (it keeps the trait's `watch`).
    #[derive(Debug, Default)]
    struct Silent(MemoryKeyStore);

    impl KeyStore for Silent {
        fn insert(&self, record: KeyRecord) -> StoreFuture<'_, ()> {
            self.0.insert(record)
        }
        fn get(&self, id: KeyId) -> StoreFuture<'_, Option<KeyRecord>> {
            self.0.get(id)
        }
        fn list(&self) -> StoreFuture<'_, Vec<KeyRecord>> {
            self.0.list()
        }
        fn revoke(&self, id: KeyId, at: SystemTime) -> StoreFuture<'_, Option<KeyRecord>> {
            self.0.revoke(id, at)
        }
        fn rotate(
            &self,
            old: KeyId,
            old_ends_at: SystemTime,
            now: SystemTime,
            new: KeyRecord,
        ) -> StoreFuture<'_, bool> {
            self.0.rotate(old, old_ends_at, now, new)
        }
        fn set_disabled(
            &self,
            id: KeyId,
            at: Option<SystemTime>,
        ) -> StoreFuture<'_, Option<KeyRecord>> {
            self.0.set_disabled(id, at)
        }
        fn record_last_used(&self, uses: Vec<(KeyId, SystemTime)>) -> StoreFuture<'_, ()> {
            self.0.record_last_used(uses)
        }
    }

    /// Counts announcements; closed when told so.
    #[derive(Default)]
    struct Counter {
        seen: AtomicUsize,
        closed: std::sync::atomic::AtomicBool,
    }

    impl ChangeWatcher for Counter {
        fn changed(&self, _: StoreChange) {
            self.seen.fetch_add(1, Ordering::Relaxed);
        }
        fn is_closed(&self) -> bool {
            self.closed.load(Ordering::Relaxed)
        }
    }

    async fn issue(store: Arc<dyn KeyStore>) -> KeyId {
        let issuer = KeyIssuer::new(
            store,
            KeyFormat::new("acme").unwrap(),
            Peppers::single(Pepper::new(1, vec![7; 32]).unwrap()),
            Arc::new(ManualClock::new(
                SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000),
            )),
        );
        let new = NewKey::new("k", ScopeSet::parse(["a:read"]).unwrap());
        issuer.issue(new).await.unwrap().id()
    }

    #[tokio::test]
    async fn only_an_active_key_is_rotated() {
        let store = Arc::new(MemoryKeyStore::new());
        let (active, revoked) = (issue(store.clone()).await, issue(store.clone()).await);
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        store.revoke(revoked, now).await.unwrap();
        // Replacements minted elsewhere, so that their ids are new here.
        let elsewhere = Arc::new(MemoryKeyStore::new());
        let replacement = || {
            let elsewhere = elsewhere.clone();
            async move {
                let id = issue(elsewhere.clone()).await;
                elsewhere.get(id).await.unwrap().unwrap()
            }
        };
        let ends = now + Duration::from_secs(60);
        assert!(
            !store
                .rotate(revoked, ends, now, replacement().await)
                .await
                .unwrap()
        );
        let unknown: KeyId = "0123456789abcdef".parse().unwrap();
        assert!(
            !store
                .rotate(unknown, ends, now, replacement().await)
                .await
                .unwrap()
        );
        let new = replacement().await;
        let new_id = new.info.id;
        assert!(store.rotate(active, ends, now, new).await.unwrap());
        assert_eq!(
            store.get(active).await.unwrap().unwrap().info.revoked_at,
            Some(ends)
        );
        assert!(store.get(new_id).await.unwrap().is_some());
        assert_eq!(store.len(), 3);
    }

    #[tokio::test]
    async fn a_store_that_keeps_the_default_announces_nothing() {
        let silent = Arc::new(Silent::default());
        let id = issue(silent.clone()).await;
        assert!(!silent.watch(Arc::new(Counter::default())));
        let cache = KeyCache::new(silent, CacheConfig::default());
        cache.fetch(id, 1_800_000_000_000_000_000).await.unwrap();
        assert!(!cache.is_watching_store());
    }

    #[tokio::test]
    async fn the_memory_store_announces_each_change_to_each_open_watcher() {
        let store = Arc::new(MemoryKeyStore::new());
        assert!(store.is_empty());
        assert_eq!(store.len(), 0);
        let (first, second) = (Arc::new(Counter::default()), Arc::new(Counter::default()));
        assert!(store.watch(first.clone()));
        assert!(store.watch(second.clone()));
        let id = issue(store.clone()).await;
        assert_eq!((store.len(), store.is_empty()), (1, false));
        assert_eq!(first.seen.load(Ordering::Relaxed), 1);
        assert_eq!(second.seen.load(Ordering::Relaxed), 1);
        // A closed watcher is let go when the next one is added, and hears nothing more.
        first.closed.store(true, Ordering::Relaxed);
        assert!(store.watch(Arc::new(Counter::default())));
        assert_eq!(format!("{:?}", store.watchers), "Watchers(2)");
        store.revoke(id, SystemTime::UNIX_EPOCH).await.unwrap();
        assert_eq!(first.seen.load(Ordering::Relaxed), 1);
        assert_eq!(second.seen.load(Ordering::Relaxed), 2);
    }
}
