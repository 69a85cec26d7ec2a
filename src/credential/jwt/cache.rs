//! The verified-token cache: a repeat of a token that already verified costs a keyed hash, one map lookup and a
//! constant-time comparison instead of a signature check.
//!
//! - Keyed by a randomly seeded foldhash of the **whole** token (seeded per cache; ~10x faster than `SipHash` on a
//!   500-byte token), and the whole token is compared (in constant time) on a hit: a forged payload with a reused
//!   signature, or a hash collision, is a miss, never a hit. Only tokens that fully verified are ever inserted, so
//!   an attacker cannot fill the cache, nor aim collisions at it without valid tokens; the hash needs no
//!   cryptographic strength.
//! - Bounded: at capacity the oldest entry goes (FIFO).
//! - An entry lives until the token's `exp` (without the leeway) and the time is re-checked on every hit.
//! - A key-set change flushes it; an insertion made with a key set older than the last flush is dropped.

use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, Hasher};
use std::sync::{Mutex, PoisonError};

use foldhash::fast::RandomState;

use crate::credential::order::InsertionOrder;
use crate::{Grant, Secret};

/// The map key is already a keyed hash: use it as is.
#[derive(Default)]
struct Prehashed(u64);

impl Hasher for Prehashed {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // Only `write_u64` is used; fold anything else in rather than panic.
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// Whether the order's record `(key, seq)` is still current: `map`'s entry for `key` is the one inserted with `seq`.
fn is_current(
    map: &HashMap<u64, Entry, BuildHasherDefault<Prehashed>>,
    key: u64,
    seq: u64,
) -> bool {
    map.get(&key).is_some_and(|e| e.seq == seq)
}

struct Entry {
    token: Secret,
    grant: Grant,
    /// Unix seconds: the entry is dead from this second on.
    expires_at: i64,
    /// Its insertion's stamp in `order`.
    seq: u64,
}

struct Inner {
    map: HashMap<u64, Entry, BuildHasherDefault<Prehashed>>,
    /// Insertion order, for eviction.
    order: InsertionOrder<u64>,
    next_seq: u64,
    /// The key-set generation the entries belong to.
    generation: u64,
}

pub(super) struct TokenCache {
    hasher: RandomState,
    capacity: usize,
    inner: Mutex<Inner>,
}

impl TokenCache {
    pub(super) fn new(capacity: usize) -> Self {
        TokenCache {
            hasher: RandomState::default(),
            capacity,
            inner: Mutex::new(Inner {
                map: HashMap::default(),
                order: InsertionOrder::new(capacity),
                next_seq: 0,
                generation: 0,
            }),
        }
    }

    pub(super) fn is_enabled(&self) -> bool {
        self.capacity > 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // The map holds no invariant that a panic elsewhere could break halfway.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The grant for `token` if it verified before and has not expired at `now` (Unix seconds).
    pub(super) fn get(&self, token: &[u8], now: i64) -> Option<Grant> {
        if !self.is_enabled() {
            return None;
        }
        let key = self.hasher.hash_one(token);
        let mut inner = self.lock();
        let entry = inner.map.get(&key)?;
        if !entry.token.ct_eq_bytes(token) {
            return None;
        }
        if now >= entry.expires_at {
            inner.map.remove(&key);
            return None;
        }
        Some(entry.grant.clone())
    }

    /// Remembers a verified token until `expires_at`, unless the key set changed since `generation` was read.
    pub(super) fn insert(&self, token: &[u8], grant: Grant, expires_at: i64, generation: u64) {
        if !self.is_enabled() {
            return;
        }
        let key = self.hasher.hash_one(token);
        let mut inner = self.lock();
        if inner.generation != generation {
            return;
        }
        let Inner {
            map,
            order,
            next_seq,
            ..
        } = &mut *inner;
        while map.len() >= self.capacity && !map.contains_key(&key) {
            let Some(oldest) = order.pop_oldest(|key, seq| is_current(map, *key, seq)) else {
                break;
            };
            map.remove(&oldest);
        }
        let seq = *next_seq;
        *next_seq += 1;
        let entry = Entry {
            token: Secret::new(token.to_vec()),
            grant,
            expires_at,
            seq,
        };
        map.insert(key, entry);
        order.push(key, seq, |key, seq| is_current(map, *key, seq));
    }

    /// Drops every entry; from now on only insertions made under `generation` are kept.
    pub(super) fn flush(&self, generation: u64) {
        let mut inner = self.lock();
        inner.map.clear();
        inner.order.clear();
        inner.generation = generation;
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().map.len()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::policy::ScopeSet;
    use crate::{Attributes, CredentialKind};

    fn grant(p: &str) -> Grant {
        Grant::new(
            CredentialKind::Jwt,
            p.to_owned(),
            ScopeSet::new(),
            None,
            Attributes::new(),
        )
    }

    #[test]
    fn hits_expire_and_flush() {
        let c = TokenCache::new(4);
        c.insert(b"tok", grant("a"), 100, 0);
        assert!(c.get(b"tok", 99).is_some());
        assert!(c.get(b"tok2", 99).is_none());
        assert!(c.get(b"tok", 100).is_none(), "dead at exp");
        assert_eq!(c.len(), 0);
        c.insert(b"tok", grant("a"), 100, 0);
        c.flush(1);
        assert!(c.get(b"tok", 1).is_none());
        c.insert(b"tok", grant("a"), 100, 0);
        assert!(c.get(b"tok", 1).is_none(), "stale generation dropped");
        c.insert(b"tok", grant("a"), 100, 1);
        assert!(c.get(b"tok", 1).is_some());
    }

    #[test]
    fn a_hash_collision_is_a_miss() {
        let c = TokenCache::new(4);
        c.insert(b"genuine", grant("a"), 100, 0);
        // Simulate a collision: move the entry under the key that "forged" hashes to.
        {
            let mut inner = c.lock();
            let entry = inner.map.remove(&c.hasher.hash_one(b"genuine")).unwrap();
            inner.map.insert(c.hasher.hash_one(b"forged!"), entry);
        }
        assert!(
            c.get(b"forged!", 1).is_none(),
            "the whole token is compared"
        );
    }

    #[test]
    fn bounded() {
        let c = TokenCache::new(3);
        for i in 0..100u32 {
            c.insert(&i.to_be_bytes(), grant("a"), 1000, 0);
            assert!(c.len() <= 3);
            assert!(c.lock().order.len() <= 6);
        }
        // Oldest first, through every compaction of the order: the last three remain.
        for kept in 97..100u32 {
            assert!(c.get(&kept.to_be_bytes(), 0).is_some(), "{kept}");
        }
        assert!(c.get(&96u32.to_be_bytes(), 0).is_none());
        assert!(c.get(&0u32.to_be_bytes(), 0).is_none());
        let off = TokenCache::new(0);
        off.insert(b"t", grant("a"), 1000, 0);
        assert!(off.get(b"t", 0).is_none());
    }

    #[test]
    fn a_token_inserted_again_is_the_youngest() {
        let c = TokenCache::new(2);
        c.insert(b"a", grant("a"), 1000, 0);
        c.insert(b"b", grant("b"), 1000, 0);
        // Verified again (two requests missed at once): `a` is now younger than `b`.
        c.insert(b"a", grant("a"), 1000, 0);
        c.insert(b"c", grant("c"), 1000, 0);
        assert!(c.get(b"b", 0).is_none(), "the oldest went first");
        assert!(c.get(b"a", 0).is_some() && c.get(b"c", 0).is_some());
    }

    #[test]
    fn tokens_verified_again_and_again_keep_the_bound() {
        let c = TokenCache::new(3);
        for _ in 0..20 {
            for t in [b"a", b"b", b"c"] {
                c.insert(t, grant("x"), 1000, 0);
            }
        }
        // Each insertion past twice the bound dropped the stale records, and kept the live ones.
        assert!(c.lock().order.len() <= 6);
        c.insert(b"d", grant("d"), 1000, 0);
        assert_eq!(c.len(), 3);
        assert!(c.get(b"a", 0).is_none(), "the oldest went first");
        assert!([b"b", b"c", b"d"].iter().all(|t| c.get(*t, 0).is_some()));
    }
}
