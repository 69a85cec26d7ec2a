//! A bounded, TTL cache in front of any [`KeyStore`], on the verification path.
//!
//! - An entry is served for at most [`CacheConfig::ttl`] (defaults to 30 s) after it was read from the store. This
//!   is the bound on how late a change made elsewhere is seen here when the store cannot tell (see below). A change
//!   made through this cache (e.g. by a [`KeyIssuer`](super::KeyIssuer) given the cache as its store) drops the
//!   local entry at once.
//! - The cache watches its store ([`KeyStore::watch`]) from its first store read on: a store that announces
//!   changes (PostgreSQL's `LISTEN`/`NOTIFY`, or writes made through the same store object) has the entries of a
//!   changed key dropped when the change is announced, and every entry dropped when the store says it may have
//!   missed some ([`StoreChange::All`]).
//! - "Not found" is cached too, in its own bounded tier, so that a flood of unknown ids neither reaches the store
//!   twice for the same id nor evicts the entries of real keys.
//! - Store errors are never cached: the next request asks the store again.
//! - Each tier holds at most its configured number of entries (rounded up to a multiple of the shard count) and
//!   evicts the oldest entry first, which is also the next to go stale.
//!
//! A key is kept in one of two tiers. Most keys take the compact form (see the `table` module): a 64-byte entry
//! in an open-addressing table, holding the digest, a shared reference to the key's rights (interned, so that keys
//! with equal scopes, allowlist and attributes hold the same one) and one validity bound in whole seconds, the
//! earliest of the TTL's end, the revocation and the expiry. A hit reads that one cache line and allocates nothing.
//! A key that does not fit the compact form exactly (an expiry that is not a whole second, a digest under another
//! pepper version, a key already revoked or expired, a validity window that ends within the current second) is
//! kept in full, with its times to the nanosecond, in the second tier, and checked exactly. Each tier holds at most
//! [`CacheConfig::max_entries`] keys.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::hash::BuildHasher;
use std::sync::{Arc, Mutex, OnceLock, PoisonError, RwLock, Weak};
use std::time::{Duration, SystemTime};

use foldhash::fast::RandomState;

use super::format::KeyId;
use super::hash::lanes;
use super::record::KeyRecord;
use super::store::{ChangeWatcher, KeyStore, StoreChange, StoreError, StoreFuture};
use super::table::{HotKey, HotTable};
use crate::Grant;
use crate::credential::order::InsertionOrder;
use crate::grant::Rights;

const SHARDS: usize = 16;
const NANOS_PER_SEC: u64 = 1_000_000_000;

/// The cache's bounds. Defaults: TTL 30 s, 100,000 keys, 100,000 unknown ids, store notifications on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheConfig {
    ttl: Duration,
    max_entries: usize,
    max_negative_entries: usize,
    store_notifications: bool,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            ttl: Duration::from_secs(30),
            max_entries: 100_000,
            max_negative_entries: 100_000,
            store_notifications: true,
        }
    }
}

impl CacheConfig {
    /// How long an entry is served after it was read from the store; the bound on how late another replica's
    /// revocation takes effect here. Defaults to 30 s. Zero disables caching.
    #[must_use]
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// The most keys kept in each of the two tiers (compact and full; see the module docs). Size it to the keys in
    /// active use. Defaults to 100,000.
    #[must_use]
    pub fn max_entries(mut self, max: usize) -> Self {
        self.max_entries = max;
        self
    }

    /// The most unknown ids kept. Defaults to 100,000 (about 5 MB).
    #[must_use]
    pub fn max_negative_entries(mut self, max: usize) -> Self {
        self.max_negative_entries = max;
        self
    }

    /// Whether the cache watches its store's change announcements ([`KeyStore::watch`]). Defaults to on; off, the
    /// TTL alone bounds how late a change made elsewhere is seen (for measuring that bound, or a store whose
    /// notifications must not be used).
    #[must_use]
    pub fn store_notifications(mut self, on: bool) -> Self {
        self.store_notifications = on;
        self
    }

    /// The configured TTL.
    pub fn ttl_value(&self) -> Duration {
        self.ttl
    }
}

/// A key in full, as the full tier keeps it: times to the nanosecond, any pepper version.
#[derive(Clone)]
pub(crate) struct CachedKey {
    pub(crate) digest: [u64; 4],
    pub(crate) pepper_version: u32,
    /// Nanoseconds since the Unix epoch; `u64::MAX` for never.
    pub(crate) revoked_at: u64,
    /// Scopes, allowlist and attributes, shared with every cached key that has equal ones.
    pub(crate) rights: Arc<Rights>,
    /// The expiry as recorded, for the grant.
    expiry: Option<SystemTime>,
    /// Refused as `disabled_credential` (after the revocation check).
    pub(crate) disabled: bool,
}

impl CachedKey {
    fn from_record(record: &KeyRecord, interner: &Mutex<Interner>) -> Self {
        let info = &record.info;
        let rights = Rights::new(
            info.scopes.clone(),
            info.allow_ips.clone(),
            info.attributes.clone(),
        )
        .rate_limited(info.rate_limit);
        CachedKey {
            digest: lanes(record.hash.digest()),
            pepper_version: record.hash.pepper_version(),
            revoked_at: info.revoked_at.map_or(u64::MAX, unix_nanos),
            expiry: info.expires_at,
            disabled: info.disabled_at.is_some(),
            rights: interner
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .intern(rights),
        }
    }

    /// The expiry in nanoseconds since the Unix epoch; `u64::MAX` for never.
    pub(crate) fn expires_at(&self) -> u64 {
        self.expiry.map_or(u64::MAX, unix_nanos)
    }

    /// The grant of this key, presented as `id`.
    pub(crate) fn grant(&self, id: KeyId) -> Grant {
        Grant::api_key(id, Arc::clone(&self.rights), self.expiry)
    }
}

/// One shared [`Rights`] per distinct value among the cached keys. Keys are usually issued from a handful of scope
/// sets, so sharing keeps the cache small and the rights of a hit already in the CPU cache. Unused values are
/// dropped when the set has doubled since the last sweep, so it stays within twice the live count.
pub(crate) struct Interner {
    set: HashSet<Arc<Rights>, RandomState>,
    sweep_at: usize,
}

impl Interner {
    const MIN_SWEEP: usize = 64;

    fn new() -> Self {
        Interner {
            set: HashSet::default(),
            sweep_at: Self::MIN_SWEEP,
        }
    }

    fn intern(&mut self, rights: Rights) -> Arc<Rights> {
        if let Some(shared) = self.set.get(&rights) {
            return Arc::clone(shared);
        }
        if self.set.len() >= self.sweep_at {
            // Held by the set alone: no cache entry or grant uses it any more.
            self.set.retain(|r| Arc::strong_count(r) > 1);
            self.sweep_at = (2 * self.set.len()).max(Self::MIN_SWEEP);
        }
        let shared = Arc::new(rights);
        self.set.insert(Arc::clone(&shared));
        shared
    }
}

/// Nanoseconds since the Unix epoch, saturating: times before it are 0 (so an expiry or revocation set before
/// 1970 is in the past), times after 2554 are `u64::MAX`.
pub(crate) fn unix_nanos(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

struct Slot<V> {
    seq: u64,
    fetched_at: u64,
    value: V,
}

/// Whether the order's record `(id, seq)` is still current: `map`'s slot for `id` is the one inserted with `seq`.
fn is_current<V>(map: &HashMap<KeyId, Slot<V>, RandomState>, id: &KeyId, seq: u64) -> bool {
    map.get(id).is_some_and(|s| s.seq == seq)
}

/// One bounded map with oldest-first eviction.
struct Tier<V> {
    map: HashMap<KeyId, Slot<V>, RandomState>,
    /// Stamped with each slot's `seq`.
    order: InsertionOrder<KeyId>,
    next_seq: u64,
    cap: usize,
}

impl<V> Tier<V> {
    fn new(cap: usize, hasher: RandomState) -> Self {
        Tier {
            map: HashMap::with_hasher(hasher),
            order: InsertionOrder::new(cap),
            next_seq: 0,
            cap,
        }
    }

    fn insert(&mut self, id: KeyId, fetched_at: u64, value: V) {
        if self.cap == 0 {
            return;
        }
        if !self.map.contains_key(&id) {
            // Oldest first. Each pass takes one record from the order, which is finite: the loop always ends.
            while self.map.len() >= self.cap {
                let map = &self.map;
                let Some(oldest) = self.order.pop_oldest(|id, seq| is_current(map, id, seq)) else {
                    break;
                };
                self.map.remove(&oldest);
            }
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.map.insert(
            id,
            Slot {
                seq,
                fetched_at,
                value,
            },
        );
        let map = &self.map;
        self.order.push(id, seq, |id, seq| is_current(map, id, seq));
    }

    fn remove(&mut self, id: &KeyId) {
        self.map.remove(id);
    }

    fn clear(&mut self) {
        self.map.clear();
        self.order.clear();
    }
}

struct Shard {
    /// Keys in the compact form.
    hot: HotTable,
    /// Keys in full.
    found: Tier<CachedKey>,
    missing: Tier<()>,
    /// Bumped by every invalidation: a store read that started before it is not cached.
    epoch: u64,
}

impl Shard {
    /// Drops what any tier holds for `id` (a key is in at most one tier).
    fn forget(&mut self, id: &KeyId) {
        self.hot.remove(id);
        self.found.remove(id);
        self.missing.remove(id);
    }

    /// Drops everything, and makes reads in flight uncacheable.
    fn forget_all(&mut self) {
        self.hot.clear();
        self.found.clear();
        self.missing.clear();
        self.epoch = self.epoch.wrapping_add(1);
    }

    /// Drops what any tier holds for `id`, and makes reads of it in flight uncacheable.
    fn invalidate(&mut self, id: &KeyId) {
        self.forget(id);
        self.epoch = self.epoch.wrapping_add(1);
    }
}

/// The shard that holds `id`.
fn shard_of<'a>(shards: &'a [RwLock<Shard>], hasher: RandomState, id: &KeyId) -> &'a RwLock<Shard> {
    // The modulo keeps the index in range whatever the hash.
    #[allow(clippy::cast_possible_truncation)]
    let index = (hasher.hash_one(id) % shards.len() as u64) as usize;
    &shards[index]
}

/// What a cache gives its store to be told of changes: a weak reference, so that the store's listener ends when
/// the cache is dropped.
struct ShardWatcher {
    shards: Weak<[RwLock<Shard>]>,
    hasher: RandomState,
}

impl ChangeWatcher for ShardWatcher {
    fn changed(&self, change: StoreChange) {
        let Some(shards) = self.shards.upgrade() else {
            return;
        };
        match change {
            StoreChange::Key(id) => shard_of(&shards, self.hasher, &id)
                .write()
                .unwrap_or_else(PoisonError::into_inner)
                .invalidate(&id),
            StoreChange::All => {
                for shard in shards.iter() {
                    shard
                        .write()
                        .unwrap_or_else(PoisonError::into_inner)
                        .forget_all();
                }
            }
        }
    }

    fn is_closed(&self) -> bool {
        self.shards.strong_count() == 0
    }
}

/// A cached key as the verifier sees it.
#[derive(Clone, Copy)]
pub(crate) enum KeyView<'a> {
    /// In the compact form: fresh, not revoked, not expired, hashed under `pepper_version`.
    Compact {
        key: &'a HotKey,
        pepper_version: u32,
    },
    /// In full, to be checked exactly.
    Full(&'a CachedKey),
}

/// What the cache holds for an id.
pub(crate) enum Cached<R> {
    /// A fresh entry, and what the caller computed from it.
    Found(R),
    /// A fresh "not found".
    NotFound,
    /// Nothing fresh: ask [`KeyCache::fetch`].
    Miss,
}

/// A bounded TTL cache in front of a [`KeyStore`]; itself a `KeyStore` whose writes drop the entries they touch.
///
/// ```
/// use std::sync::Arc;
/// use scopegate::credential::api_key::{CacheConfig, KeyCache, MemoryKeyStore};
///
/// let cache = KeyCache::new(Arc::new(MemoryKeyStore::new()), CacheConfig::default());
/// assert_eq!(cache.config().ttl_value().as_secs(), 30);
/// ```
pub struct KeyCache {
    store: Arc<dyn KeyStore>,
    config: CacheConfig,
    ttl_nanos: u64,
    /// The TTL in whole seconds, rounded up.
    ttl_secs: u64,
    shard_hasher: RandomState,
    shards: Arc<[RwLock<Shard>]>,
    interner: Mutex<Interner>,
    /// Set by the first store read: whether the store announces its changes to this cache.
    watching: OnceLock<bool>,
    /// The pepper version of every compact entry: the current version of the first verifier built over this cache.
    /// Keys under any other version are kept in full.
    compact_pepper: OnceLock<u32>,
}

impl KeyCache {
    /// A cache in front of `store`.
    pub fn new(store: Arc<dyn KeyStore>, config: CacheConfig) -> Self {
        let map_hasher = RandomState::default();
        let shards = (0..SHARDS)
            .map(|_| {
                RwLock::new(Shard {
                    hot: HotTable::new(config.max_entries.div_ceil(SHARDS), map_hasher),
                    found: Tier::new(config.max_entries.div_ceil(SHARDS), map_hasher),
                    missing: Tier::new(config.max_negative_entries.div_ceil(SHARDS), map_hasher),
                    epoch: 0,
                })
            })
            .collect();
        KeyCache {
            store,
            config,
            ttl_nanos: u64::try_from(config.ttl.as_nanos()).unwrap_or(u64::MAX),
            ttl_secs: config
                .ttl
                .as_secs()
                .saturating_add(u64::from(config.ttl.subsec_nanos() > 0)),
            // A seed of its own: shard choice must not correlate with bucket choice inside a shard.
            shard_hasher: RandomState::default(),
            shards,
            interner: Mutex::new(Interner::new()),
            compact_pepper: OnceLock::new(),
            watching: OnceLock::new(),
        }
    }

    /// Asks the store, once, to announce its changes to this cache (see [`KeyStore::watch`]); whether it does.
    fn watch_store(&self) -> bool {
        *self.watching.get_or_init(|| {
            self.config.store_notifications
                && self.store.watch(Arc::new(ShardWatcher {
                    shards: Arc::downgrade(&self.shards),
                    hasher: self.shard_hasher,
                }))
        })
    }

    /// Whether the store announces its changes to this cache (known from the first store read on; `false` before).
    pub fn is_watching_store(&self) -> bool {
        self.watching.get().copied().unwrap_or(false)
    }

    /// Fixes the pepper version of compact entries to `version` (a verifier's current one) if no verifier has yet;
    /// warns when it was fixed to another (keys under `version` are then all kept in full: slower, still exact).
    pub(crate) fn claim_compact_pepper(&self, version: u32) {
        let fixed = *self.compact_pepper.get_or_init(|| version);
        if fixed != version {
            tracing::warn!(
                compact_pepper_version = fixed,
                verifier_pepper_version = version,
                "an API key cache is shared by verifiers with different current peppers; keys under the second \
                 are cached in full form only"
            );
        }
    }

    /// The bounds this cache was built with.
    pub fn config(&self) -> &CacheConfig {
        &self.config
    }

    /// The store behind the cache.
    pub fn store(&self) -> &Arc<dyn KeyStore> {
        &self.store
    }

    /// Drops what is cached about `id` (this replica only).
    pub fn invalidate(&self, id: KeyId) {
        self.shard(&id)
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .invalidate(&id);
    }

    /// Drops everything cached (this replica only): each key is read from the store again on its next use.
    pub fn invalidate_all(&self) {
        for shard in self.shards.iter() {
            shard
                .write()
                .unwrap_or_else(PoisonError::into_inner)
                .forget_all();
        }
    }

    /// Number of cached keys and cached unknown ids, including stale ones not yet replaced.
    pub fn entry_counts(&self) -> (usize, usize) {
        self.shards.iter().fold((0, 0), |(f, m), s| {
            let s = s.read().unwrap_or_else(PoisonError::into_inner);
            (f + s.hot.len() + s.found.map.len(), m + s.missing.map.len())
        })
    }

    fn shard(&self, id: &KeyId) -> &RwLock<Shard> {
        shard_of(&self.shards, self.shard_hasher, id)
    }

    fn fresh(&self, fetched_at: u64, now: u64) -> bool {
        now >= fetched_at && now - fetched_at < self.ttl_nanos
    }

    /// Whether a compact entry bounded by `until` may serve at `now`: before its bound, and not more than a TTL
    /// before it. An entry is never written with a bound further ahead than that, so a clock stepped back (which
    /// the full tier notices as "read in the future") also sends the key back to the store.
    fn compact_fresh(&self, until: u32, now: u64) -> bool {
        let now_secs = now / NANOS_PER_SEC;
        let until = u64::from(until);
        now_secs < until && now_secs.saturating_add(self.ttl_secs) >= until
    }

    /// Runs `f` on the fresh entry for `id`, under the shard's read lock (so that `f` can read the entry in place,
    /// without copying it). `now` is in Unix nanoseconds.
    pub(crate) fn peek<R>(
        &self,
        id: &KeyId,
        now: u64,
        f: impl FnOnce(KeyView<'_>) -> R,
    ) -> Cached<R> {
        let shard = self
            .shard(id)
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(key) = shard.hot.get(id) {
            // A key is in one tier only: a compact entry past its bound is read again from the store.
            if self.compact_fresh(key.until, now)
                && let Some(&pepper_version) = self.compact_pepper.get()
            {
                return Cached::Found(f(KeyView::Compact {
                    key,
                    pepper_version,
                }));
            }
            return Cached::Miss;
        }
        if let Some(slot) = shard.found.map.get(id)
            && self.fresh(slot.fetched_at, now)
        {
            return Cached::Found(f(KeyView::Full(&slot.value)));
        }
        if let Some(slot) = shard.missing.map.get(id)
            && self.fresh(slot.fetched_at, now)
        {
            return Cached::NotFound;
        }
        Cached::Miss
    }

    /// The compact form of `key`, when it holds the key's state exactly: the digest under the compact pepper
    /// version, an expiry of whole seconds, and a validity bound (TTL end, revocation, expiry) at least one whole
    /// second after `now`.
    fn compact(&self, id: KeyId, key: &CachedKey, now: u64) -> Option<HotKey> {
        let pepper = *self.compact_pepper.get()?;
        if key.pepper_version != pepper || key.disabled {
            return None;
        }
        let expires_at = key.expires_at();
        let expires = if expires_at == u64::MAX {
            u32::MAX
        } else if expires_at.is_multiple_of(NANOS_PER_SEC) {
            u32::try_from(expires_at / NANOS_PER_SEC)
                .ok()
                .filter(|s| *s != u32::MAX)?
        } else {
            return None;
        };
        let bound = now
            .saturating_add(self.ttl_nanos)
            .min(key.revoked_at)
            .min(expires_at);
        // Rounded down: the entry stops serving early rather than late.
        let until = u32::try_from(bound / NANOS_PER_SEC).ok()?;
        (u64::from(until) > now / NANOS_PER_SEC).then(|| HotKey {
            id,
            digest: key.digest,
            rights: Arc::clone(&key.rights),
            until,
            expires,
        })
    }

    /// Reads `id` from the store and caches the answer (found or not found; never an error). A read that raced
    /// with an invalidation of its shard is returned but not cached.
    pub(crate) async fn fetch(&self, id: KeyId, now: u64) -> Result<Option<CachedKey>, StoreError> {
        self.watch_store();
        let shard = self.shard(&id);
        let epoch = shard.read().unwrap_or_else(PoisonError::into_inner).epoch;
        let record = self.store.get(id).await?;
        if let Some(r) = &record
            && r.info.id != id
        {
            return Err(StoreError::Corrupt {
                id: id.to_string(),
                detail: format!("the store answered with the record of {}", r.info.id),
            });
        }
        let found = record
            .as_ref()
            .map(|r| CachedKey::from_record(r, &self.interner));
        if self.ttl_nanos > 0 {
            let mut s = shard.write().unwrap_or_else(PoisonError::into_inner);
            if s.epoch == epoch {
                s.forget(&id);
                match &found {
                    Some(key) => match self.compact(id, key, now) {
                        Some(hot) => s.hot.insert(hot),
                        None => s.found.insert(id, now, key.clone()),
                    },
                    None => s.missing.insert(id, now, ()),
                }
            }
        }
        Ok(found)
    }
}

impl fmt::Debug for KeyCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (keys, unknown) = self.entry_counts();
        f.debug_struct("KeyCache")
            .field("config", &self.config)
            .field("cached_keys", &keys)
            .field("cached_unknown_ids", &unknown)
            .field("store", &self.store)
            .finish_non_exhaustive()
    }
}

impl KeyStore for KeyCache {
    fn insert(&self, record: KeyRecord) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            let id = record.info.id;
            let result = self.store.insert(record).await;
            self.invalidate(id);
            result
        })
    }

    fn get(&self, id: KeyId) -> StoreFuture<'_, Option<KeyRecord>> {
        self.store.get(id)
    }

    fn list(&self) -> StoreFuture<'_, Vec<KeyRecord>> {
        self.store.list()
    }

    fn revoke(&self, id: KeyId, at: SystemTime) -> StoreFuture<'_, Option<KeyRecord>> {
        Box::pin(async move {
            let result = self.store.revoke(id, at).await;
            // Also on error: the write may have landed.
            self.invalidate(id);
            result
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
            let new_id = new.info.id;
            let result = self.store.rotate(old, old_ends_at, now, new).await;
            self.invalidate(old);
            self.invalidate(new_id);
            result
        })
    }

    fn set_disabled(
        &self,
        id: KeyId,
        at: Option<SystemTime>,
    ) -> StoreFuture<'_, Option<KeyRecord>> {
        Box::pin(async move {
            let result = self.store.set_disabled(id, at).await;
            self.invalidate(id);
            result
        })
    }

    fn record_last_used(&self, uses: Vec<(KeyId, SystemTime)>) -> StoreFuture<'_, ()> {
        // Changes no decision: nothing cached is dropped.
        self.store.record_last_used(uses)
    }

    fn watch(&self, watcher: Arc<dyn ChangeWatcher>) -> bool {
        self.store.watch(watcher)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: usize) -> KeyId {
        format!("{n:0>16}")
            .parse()
            .unwrap_or_else(|_| unreachable!())
    }

    #[test]
    fn a_tier_is_bounded_and_evicts_oldest_first() {
        let mut tier = Tier::new(3, RandomState::default());
        for n in 0..10 {
            tier.insert(id(n), 0, n);
        }
        assert_eq!(tier.map.len(), 3);
        let mut kept: Vec<usize> = tier.map.values().map(|s| s.value).collect();
        kept.sort_unstable();
        assert_eq!(kept, vec![7, 8, 9]);
        // Re-inserting an existing id does not evict.
        tier.insert(id(8), 1, 80);
        assert_eq!(tier.map.len(), 3);
        // The queue stays bounded under churn.
        for _ in 0..1000 {
            tier.insert(id(9), 0, 9);
        }
        assert!(tier.order.len() <= 2 * 3 + 64 + 1);
        assert_eq!(tier.map.len(), 3);
        // After the churn (and the compactions it caused), new ids still evict the oldest live ones.
        for n in 100..105 {
            tier.insert(id(n), 0, n);
        }
        let mut kept: Vec<usize> = tier.map.values().map(|s| s.value).collect();
        kept.sort_unstable();
        assert_eq!(kept, vec![102, 103, 104]);
    }

    #[test]
    fn a_zero_capacity_tier_keeps_nothing() {
        let mut tier = Tier::new(0, RandomState::default());
        tier.insert(id(1), 0, ());
        assert!(tier.map.is_empty());
    }

    fn rights(scope: &str) -> Rights {
        Rights::new(
            crate::policy::ScopeSet::parse([scope]).unwrap_or_else(|_| unreachable!()),
            None,
            crate::Attributes::new(),
        )
    }

    #[test]
    fn equal_rights_are_shared_and_unused_ones_are_swept() {
        let mut interner = Interner::new();
        let a = interner.intern(rights("a:read"));
        let a_again = interner.intern(rights("a:read"));
        let b = interner.intern(rights("b:read"));
        assert!(Arc::ptr_eq(&a, &a_again));
        assert!(!Arc::ptr_eq(&a, &b));
        assert_eq!(*b, rights("b:read"));
        drop((a, a_again));
        // Fill up to the sweep: the unused "a:read" goes, the held "b:read" stays and is still shared.
        let held: Vec<_> = (0..Interner::MIN_SWEEP)
            .map(|n| interner.intern(rights(&format!("s{n}:read"))))
            .collect();
        assert!(!interner.set.contains(&rights("a:read")));
        assert!(Arc::ptr_eq(&b, &interner.intern(rights("b:read"))));
        assert_eq!(interner.set.len(), held.len() + 1);
    }

    #[test]
    fn the_interner_sweeps_only_when_full_and_then_allows_twice_the_live_count() {
        let mut interner = Interner::new();
        // Unused values stay until the set reaches the sweep mark.
        for n in 0..Interner::MIN_SWEEP {
            drop(interner.intern(rights(&format!("u{n}:read"))));
        }
        assert_eq!(interner.set.len(), Interner::MIN_SWEEP);
        assert_eq!(interner.sweep_at, Interner::MIN_SWEEP);
        // The next new value sweeps them all; the mark stays at its floor.
        let first = interner.intern(rights("h0:read"));
        assert_eq!(interner.set.len(), 1);
        assert_eq!(interner.sweep_at, Interner::MIN_SWEEP);
        // With 63 + 1 held values at the next sweep, the mark moves to twice the live count.
        let mut held = vec![first];
        for n in 1..Interner::MIN_SWEEP {
            held.push(interner.intern(rights(&format!("h{n}:read"))));
        }
        held.push(interner.intern(rights("h64:read")));
        assert_eq!(interner.set.len(), Interner::MIN_SWEEP + 1);
        assert_eq!(interner.sweep_at, 2 * Interner::MIN_SWEEP);
    }

    #[test]
    fn the_config_setters_set_what_they_name() {
        let config = CacheConfig::default()
            .ttl(Duration::from_secs(5))
            .max_entries(7)
            .max_negative_entries(9)
            .store_notifications(false);
        assert_eq!(config.ttl_value(), Duration::from_secs(5));
        assert_eq!(
            (
                config.max_entries,
                config.max_negative_entries,
                config.store_notifications
            ),
            (7, 9, false)
        );
        let default = CacheConfig::default();
        assert_eq!(default.ttl_value(), Duration::from_secs(30));
        assert_eq!(
            (
                default.max_entries,
                default.max_negative_entries,
                default.store_notifications
            ),
            (100_000, 100_000, true)
        );
    }

    mod with_a_store {
        #![allow(clippy::unwrap_used)]
        use std::time::{Duration, SystemTime};

        use super::super::*;
        use crate::ManualClock;
        use crate::credential::api_key::{
            KeyFormat, KeyIssuer, MemoryKeyStore, NewKey, Pepper, Peppers,
        };
        use crate::policy::ScopeSet;

        const SEC: u64 = 1_000_000_000;
        /// The fixed "now" of these tests, in Unix nanoseconds (the issuer's clock).
        const NOW: u64 = 1_800_000_000 * SEC;

        struct Fixture {
            store: Arc<MemoryKeyStore>,
            issuer: KeyIssuer,
        }

        fn fixture() -> Fixture {
            let store = Arc::new(MemoryKeyStore::new());
            let clock = ManualClock::new(SystemTime::UNIX_EPOCH + Duration::from_nanos(NOW));
            let issuer = KeyIssuer::new(
                store.clone(),
                KeyFormat::new("acme").unwrap(),
                Peppers::single(Pepper::new(1, vec![7; 32]).unwrap()),
                Arc::new(clock),
            );
            Fixture { store, issuer }
        }

        impl Fixture {
            async fn key(&self) -> KeyId {
                let new = NewKey::new("k", ScopeSet::parse(["a:read"]).unwrap());
                self.issuer.issue(new).await.unwrap().id()
            }

            fn cache(&self, config: CacheConfig) -> KeyCache {
                KeyCache::new(self.store.clone(), config)
            }
        }

        fn ttl(secs: u64) -> CacheConfig {
            CacheConfig::default().ttl(Duration::from_secs(secs))
        }

        /// What `peek` answers: "found" (and which tier), "not found" or "miss".
        fn peek(cache: &KeyCache, id: KeyId, now: u64) -> &'static str {
            match cache.peek(&id, now, |view| match view {
                KeyView::Compact { .. } => "compact",
                KeyView::Full(_) => "full",
            }) {
                Cached::Found(tier) => tier,
                Cached::NotFound => "not found",
                Cached::Miss => "miss",
            }
        }

        #[tokio::test]
        async fn an_entry_serves_for_the_ttl_and_never_when_read_in_the_future() {
            let f = fixture();
            let id = f.key().await;
            let cache = f.cache(ttl(10));
            assert_eq!(peek(&cache, id, NOW), "miss");
            assert!(cache.fetch(id, NOW).await.unwrap().is_some());
            assert_eq!(peek(&cache, id, NOW), "full");
            assert_eq!(peek(&cache, id, NOW + 10 * SEC - 1), "full");
            assert_eq!(peek(&cache, id, NOW + 10 * SEC), "miss");
            // The clock stepped back: an entry "read in the future" is not trusted.
            assert_eq!(peek(&cache, id, NOW - 1), "miss");
            assert_eq!(cache.entry_counts(), (1, 0));
        }

        #[tokio::test]
        async fn unknown_ids_are_remembered_for_the_ttl_and_counted_apart() {
            let f = fixture();
            let known = f.key().await;
            let cache = f.cache(ttl(10));
            let unknown: KeyId = "0123456789abcdef".parse().unwrap();
            assert!(cache.fetch(unknown, NOW).await.unwrap().is_none());
            assert_eq!(peek(&cache, unknown, NOW + 10 * SEC - 1), "not found");
            assert_eq!(peek(&cache, unknown, NOW + 10 * SEC), "miss");
            assert_eq!(cache.entry_counts(), (0, 1));
            cache.fetch(known, NOW).await.unwrap();
            let other: KeyId = "1123456789abcdef".parse().unwrap();
            cache.fetch(other, NOW).await.unwrap();
            assert_eq!(cache.entry_counts(), (1, 2));
        }

        #[tokio::test]
        async fn a_zero_ttl_caches_nothing() {
            let f = fixture();
            let id = f.key().await;
            let cache = f.cache(ttl(0));
            assert!(cache.fetch(id, NOW).await.unwrap().is_some());
            assert_eq!(peek(&cache, id, NOW), "miss");
            assert_eq!(cache.entry_counts(), (0, 0));
        }

        #[tokio::test]
        async fn invalidation_drops_one_id_or_every_one() {
            let f = fixture();
            let (a, b) = (f.key().await, f.key().await);
            let cache = f.cache(ttl(10));
            let unknown: KeyId = "0123456789abcdef".parse().unwrap();
            for id in [a, b, unknown] {
                cache.fetch(id, NOW).await.unwrap();
            }
            assert_eq!(cache.entry_counts(), (2, 1));
            cache.invalidate(a);
            assert_eq!(peek(&cache, a, NOW), "miss");
            assert_eq!(peek(&cache, b, NOW), "full");
            cache.invalidate(unknown);
            assert_eq!(peek(&cache, unknown, NOW), "miss");
            assert_eq!(cache.entry_counts(), (1, 0));
            cache.fetch(unknown, NOW).await.unwrap();
            cache.invalidate_all();
            assert_eq!(peek(&cache, b, NOW), "miss");
            assert_eq!(peek(&cache, unknown, NOW), "miss");
            assert_eq!(cache.entry_counts(), (0, 0));
        }

        #[tokio::test]
        async fn writes_through_the_cache_drop_what_they_touch() {
            let f = fixture();
            let id = f.key().await;
            let cache = f.cache(ttl(10).store_notifications(false));
            cache.fetch(id, NOW).await.unwrap();
            let at = SystemTime::UNIX_EPOCH + Duration::from_nanos(NOW);
            cache.set_disabled(id, Some(at)).await.unwrap();
            assert_eq!(peek(&cache, id, NOW), "miss");
            cache.fetch(id, NOW).await.unwrap();
            cache.revoke(id, at).await.unwrap();
            assert_eq!(peek(&cache, id, NOW), "miss");
        }

        #[tokio::test]
        async fn store_announcements_reach_every_watching_cache_and_only_those() {
            let f = fixture();
            let id = f.key().await;
            let first = f.cache(ttl(60));
            let second = f.cache(ttl(60));
            let deaf = f.cache(ttl(60).store_notifications(false));
            assert!(!first.is_watching_store(), "known from the first read on");
            for cache in [&first, &second, &deaf] {
                cache.fetch(id, NOW).await.unwrap();
            }
            assert!(first.is_watching_store() && second.is_watching_store());
            assert!(!deaf.is_watching_store());
            // A change made elsewhere (straight in the store): the watching caches drop the key at once; the other
            // serves it until its TTL ends.
            let at = SystemTime::UNIX_EPOCH + Duration::from_nanos(NOW);
            f.store.revoke(id, at).await.unwrap();
            assert_eq!(peek(&first, id, NOW), "miss");
            assert_eq!(peek(&second, id, NOW), "miss");
            assert_eq!(peek(&deaf, id, NOW), "full");
            assert_eq!(first.config(), &ttl(60));
            assert_eq!(deaf.config(), &ttl(60).store_notifications(false));
        }

        #[tokio::test]
        async fn a_watcher_closes_with_its_cache() {
            let f = fixture();
            let cache = f.cache(ttl(60));
            let watcher = ShardWatcher {
                shards: Arc::downgrade(&cache.shards),
                hasher: cache.shard_hasher,
            };
            assert!(!watcher.is_closed());
            drop(cache);
            assert!(watcher.is_closed());
            // A late announcement finds nothing to drop, and does not fail.
            watcher.changed(StoreChange::All);
        }

        #[tokio::test]
        async fn compact_entries_need_a_claimed_pepper_and_the_first_claim_holds() {
            let f = fixture();
            let id = f.key().await;
            let unclaimed = f.cache(ttl(10));
            unclaimed.fetch(id, NOW).await.unwrap();
            assert_eq!(peek(&unclaimed, id, NOW), "full");
            let cache = f.cache(ttl(10));
            cache.claim_compact_pepper(1);
            cache.claim_compact_pepper(2);
            assert_eq!(cache.compact_pepper.get(), Some(&1));
            cache.fetch(id, NOW).await.unwrap();
            assert_eq!(peek(&cache, id, NOW), "compact");
            // Counted with the keys, and beside a full entry (the unclaimed cache's).
            assert_eq!(cache.entry_counts(), (1, 0));
            let unknown: KeyId = "0123456789abcdef".parse().unwrap();
            cache.fetch(unknown, NOW).await.unwrap();
            assert_eq!(cache.entry_counts(), (1, 1));
            assert_eq!(unclaimed.entry_counts(), (1, 0));
            // A compact entry serves to the last whole second of its TTL.
            assert_eq!(peek(&cache, id, NOW + 10 * SEC - 1), "compact");
            assert_eq!(peek(&cache, id, NOW + 10 * SEC), "miss");
            // Nor earlier than it was read (a clock stepped back).
            assert_eq!(peek(&cache, id, NOW - SEC), "miss");
            // Under a verifier whose pepper is another, keys stay in full form.
            let other = f.cache(ttl(10));
            other.claim_compact_pepper(2);
            other.fetch(id, NOW).await.unwrap();
            assert_eq!(peek(&other, id, NOW), "full");
        }

        /// The compact entry's `(until, expires)` relative to NOW in whole seconds (`None` for no expiry), or the
        /// tier it is in when not compact.
        fn compact_bounds(cache: &KeyCache, id: KeyId) -> Result<(u32, Option<u32>), &'static str> {
            let now = u32::try_from(NOW / SEC).unwrap();
            match cache.peek(&id, NOW, |view| match view {
                KeyView::Compact { key, .. } => Ok((
                    key.until - now,
                    (key.expires != u32::MAX).then(|| key.expires - now),
                )),
                KeyView::Full(_) => Err("full"),
            }) {
                Cached::Found(found) => found,
                Cached::NotFound | Cached::Miss => Err("not cached"),
            }
        }

        #[tokio::test]
        async fn the_compact_form_holds_only_states_it_can_hold_exactly() {
            let f = fixture();
            let cache = f.cache(ttl(10));
            cache.claim_compact_pepper(1);
            let issue = |lifetime: Option<Duration>| {
                let issuer = &f.issuer;
                async move {
                    let mut new = NewKey::new("k", ScopeSet::parse(["a:read"]).unwrap());
                    if let Some(lifetime) = lifetime {
                        new = new.expires_in(lifetime);
                    }
                    issuer.issue(new).await.unwrap().id()
                }
            };
            let cases = [
                // No expiry: served for the TTL.
                (None, Ok((10, None))),
                // An expiry after the TTL, or before it (which then bounds the entry).
                (Some(Duration::from_secs(20)), Ok((10, Some(20)))),
                (Some(Duration::from_secs(5)), Ok((5, Some(5)))),
                (Some(Duration::from_secs(1)), Ok((1, Some(1)))),
                // An expiry that is not a whole second: kept in full, to the nanosecond.
                (Some(Duration::from_millis(1_500)), Err("full")),
            ];
            for (lifetime, expected) in cases {
                let id = issue(lifetime).await;
                cache.fetch(id, NOW).await.unwrap();
                assert_eq!(compact_bounds(&cache, id), expected, "{lifetime:?}");
            }
            // A revocation ahead (a rotation's grace) bounds the entry, rounded down; within this second, no entry
            // would serve at all, so the key is kept in full.
            let at = |after: Duration| SystemTime::UNIX_EPOCH + Duration::from_nanos(NOW) + after;
            let graced = issue(None).await;
            f.store
                .revoke(graced, at(Duration::from_millis(3_700)))
                .await
                .unwrap();
            cache.fetch(graced, NOW).await.unwrap();
            assert_eq!(compact_bounds(&cache, graced), Ok((3, None)));
            let ending = issue(None).await;
            f.store
                .revoke(ending, at(Duration::from_millis(500)))
                .await
                .unwrap();
            cache.fetch(ending, NOW).await.unwrap();
            assert_eq!(compact_bounds(&cache, ending), Err("full"));
            // A disabled key has no compact form: its refusal needs the full record.
            let disabled = issue(None).await;
            f.issuer.disable(disabled).await.unwrap();
            cache.fetch(disabled, NOW).await.unwrap();
            assert_eq!(compact_bounds(&cache, disabled), Err("full"));
        }

        #[tokio::test]
        async fn a_cache_passes_watchers_to_its_store_and_shows_its_counts() {
            let f = fixture();
            let id = f.key().await;
            let inner = Arc::new(f.cache(ttl(60)));
            let outer = KeyCache::new(inner.clone(), ttl(60));
            outer.fetch(id, NOW).await.unwrap();
            assert!(
                outer.is_watching_store(),
                "the announcements of the store under the inner cache"
            );
            let at = SystemTime::UNIX_EPOCH + Duration::from_nanos(NOW);
            f.store.revoke(id, at).await.unwrap();
            assert_eq!(peek(&outer, id, NOW), "miss");
            let text = format!("{outer:?}");
            assert!(
                text.starts_with("KeyCache { config: CacheConfig {"),
                "{text}"
            );
            assert!(
                text.contains("cached_keys: 0, cached_unknown_ids: 0"),
                "{text}"
            );
        }

        #[test]
        fn a_second_pepper_claim_warns_only_when_it_differs() {
            let f = fixture();
            let cache = f.cache(ttl(10));
            let same = crate::test_logs::logged(false, || {
                cache.claim_compact_pepper(3);
                cache.claim_compact_pepper(3);
            });
            assert_eq!(same, "");
            let text = crate::test_logs::logged(false, || cache.claim_compact_pepper(4));
            assert!(text.contains("WARN"), "{text}");
            assert!(
                text.contains("compact_pepper_version=3 verifier_pepper_version=4"),
                "{text}"
            );
        }
    }

    #[test]
    fn times_saturate() {
        assert_eq!(
            unix_nanos(SystemTime::UNIX_EPOCH - Duration::from_secs(1)),
            0
        );
        assert_eq!(
            unix_nanos(SystemTime::UNIX_EPOCH + Duration::from_secs(2)),
            2_000_000_000
        );
    }
}
