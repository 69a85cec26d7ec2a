//! A bounded, TTL cache in front of any [`KeyStore`], on the verification path.
//!
//! - An entry is served for at most [`CacheConfig::ttl`] (defaults to 30 s) after it was read from the store. This
//!   is the revocation latency bound for other replicas: a key revoked elsewhere is refused here at most one TTL
//!   later. A revocation made through this cache (e.g. by a [`KeyIssuer`](super::KeyIssuer) given the cache as its
//!   store) drops the local entry at once.
//! - "Not found" is cached too, in its own bounded tier, so that a flood of unknown ids neither reaches the store
//!   twice for the same id nor evicts the entries of real keys.
//! - Store errors are never cached: the next request asks the store again.
//! - Each tier holds at most its configured number of entries (rounded up to a multiple of the shard count) and
//!   evicts the oldest entry first, which is also the next to go stale.
//!
//! An entry is compact and self-contained (the digest as four `u64` lanes, the pepper version, the expiry and
//! revocation times, and the prepared `Grant`): a cache hit is one hash-map lookup and no allocation.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::hash::BuildHasher;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, SystemTime};

use foldhash::fast::RandomState;

use super::format::KeyId;
use super::hash::lanes;
use super::record::KeyRecord;
use super::store::{KeyStore, StoreError, StoreFuture};
use crate::{CredentialKind, Grant};

const SHARDS: usize = 16;

/// The cache's bounds. Defaults: TTL 30 s, 100,000 keys, 100,000 unknown ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheConfig {
    ttl: Duration,
    max_entries: usize,
    max_negative_entries: usize,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            ttl: Duration::from_secs(30),
            max_entries: 100_000,
            max_negative_entries: 100_000,
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

    /// The most keys kept (each holds a prepared grant: size it to the keys in active use). Defaults to 100,000.
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

    /// The configured TTL.
    pub fn ttl_value(&self) -> Duration {
        self.ttl
    }
}

/// What verification needs of a key, copied out of the cache.
#[derive(Clone)]
pub(crate) struct CachedKey {
    pub(crate) digest: [u64; 4],
    pub(crate) pepper_version: u32,
    /// Nanoseconds since the Unix epoch; `u64::MAX` for never.
    pub(crate) expires_at: u64,
    /// Nanoseconds since the Unix epoch; `u64::MAX` for never.
    pub(crate) revoked_at: u64,
    pub(crate) grant: Grant,
}

impl CachedKey {
    fn from_record(record: &KeyRecord) -> Self {
        let info = &record.info;
        CachedKey {
            digest: lanes(record.hash.digest()),
            pepper_version: record.hash.pepper_version(),
            expires_at: info.expires_at.map_or(u64::MAX, unix_nanos),
            revoked_at: info.revoked_at.map_or(u64::MAX, unix_nanos),
            grant: {
                let grant = Grant::new(
                    CredentialKind::ApiKey,
                    info.id.to_string(),
                    info.scopes.clone(),
                    info.allow_ips.clone(),
                    info.attributes.clone(),
                );
                match info.expires_at {
                    Some(at) => grant.with_expiry(at),
                    None => grant,
                }
            },
        }
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

/// One bounded map with oldest-first eviction.
struct Tier<V> {
    map: HashMap<KeyId, Slot<V>, RandomState>,
    /// Insertion order as (id, seq); entries whose seq no longer matches the map are skipped.
    order: VecDeque<(KeyId, u64)>,
    next_seq: u64,
    cap: usize,
}

impl<V> Tier<V> {
    fn new(cap: usize, hasher: RandomState) -> Self {
        Tier {
            map: HashMap::with_hasher(hasher),
            order: VecDeque::new(),
            next_seq: 0,
            cap,
        }
    }

    fn insert(&mut self, id: KeyId, fetched_at: u64, value: V) {
        if self.cap == 0 {
            return;
        }
        if !self.map.contains_key(&id) {
            while self.map.len() >= self.cap && self.evict_oldest() {}
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
        self.order.push_back((id, seq));
        if self.order.len() > 2 * self.cap + 64 {
            let map = &self.map;
            self.order
                .retain(|(id, seq)| map.get(id).is_some_and(|s| s.seq == *seq));
        }
    }

    fn evict_oldest(&mut self) -> bool {
        while let Some((id, seq)) = self.order.pop_front() {
            if self.map.get(&id).is_some_and(|s| s.seq == seq) {
                self.map.remove(&id);
                return true;
            }
        }
        false
    }

    fn remove(&mut self, id: &KeyId) {
        self.map.remove(id);
    }
}

struct Shard {
    found: Tier<CachedKey>,
    missing: Tier<()>,
    /// Bumped by every invalidation: a store read that started before it is not cached.
    epoch: u64,
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
    shard_hasher: RandomState,
    shards: Box<[RwLock<Shard>]>,
}

impl KeyCache {
    /// A cache in front of `store`.
    pub fn new(store: Arc<dyn KeyStore>, config: CacheConfig) -> Self {
        let map_hasher = RandomState::default();
        let shards = (0..SHARDS)
            .map(|_| {
                RwLock::new(Shard {
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
            // A seed of its own: shard choice must not correlate with bucket choice inside a shard.
            shard_hasher: RandomState::default(),
            shards,
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
        let mut shard = self
            .shard(&id)
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        shard.found.remove(&id);
        shard.missing.remove(&id);
        shard.epoch = shard.epoch.wrapping_add(1);
    }

    /// Number of cached keys and cached unknown ids, including stale ones not yet replaced.
    pub fn entry_counts(&self) -> (usize, usize) {
        self.shards.iter().fold((0, 0), |(f, m), s| {
            let s = s.read().unwrap_or_else(PoisonError::into_inner);
            (f + s.found.map.len(), m + s.missing.map.len())
        })
    }

    fn shard(&self, id: &KeyId) -> &RwLock<Shard> {
        // The modulo keeps the index in range whatever the hash.
        #[allow(clippy::cast_possible_truncation)]
        let index = (self.shard_hasher.hash_one(id) % SHARDS as u64) as usize;
        &self.shards[index]
    }

    fn fresh(&self, fetched_at: u64, now: u64) -> bool {
        now >= fetched_at && now - fetched_at < self.ttl_nanos
    }

    /// Runs `f` on the fresh entry for `id`, under the shard's read lock (so that `f` can read the entry in place,
    /// without copying it or touching its grant's reference count before it has to). `now` is in Unix nanoseconds.
    pub(crate) fn peek<R>(
        &self,
        id: &KeyId,
        now: u64,
        f: impl FnOnce(&CachedKey) -> R,
    ) -> Cached<R> {
        let shard = self
            .shard(id)
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(slot) = shard.found.map.get(id)
            && self.fresh(slot.fetched_at, now)
        {
            return Cached::Found(f(&slot.value));
        }
        if let Some(slot) = shard.missing.map.get(id)
            && self.fresh(slot.fetched_at, now)
        {
            return Cached::NotFound;
        }
        Cached::Miss
    }

    /// Reads `id` from the store and caches the answer (found or not found; never an error). A read that raced
    /// with an invalidation of its shard is returned but not cached.
    pub(crate) async fn fetch(&self, id: KeyId, now: u64) -> Result<Option<CachedKey>, StoreError> {
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
        let found = record.as_ref().map(CachedKey::from_record);
        if self.ttl_nanos > 0 {
            let mut s = shard.write().unwrap_or_else(PoisonError::into_inner);
            if s.epoch == epoch {
                if let Some(key) = &found {
                    s.missing.remove(&id);
                    s.found.insert(id, now, key.clone());
                } else {
                    s.found.remove(&id);
                    s.missing.insert(id, now, ());
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
    }

    #[test]
    fn a_zero_capacity_tier_keeps_nothing() {
        let mut tier = Tier::new(0, RandomState::default());
        tier.insert(id(1), 0, ());
        assert!(tier.map.is_empty());
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
