//! The cache's compact tier: one 64-byte, cache-line-aligned entry per key, in an open-addressing table.
//!
//! A general hash map keeps its control bytes and its entries in two arrays, so a lookup among a million keys
//! misses the CPU cache twice. Here the slot *is* the entry: the key id is compared in place, and the digest, the
//! rights and the validity window sit in the same 64 bytes, so a hit reads one cache line. Linear probing at a load
//! of at most one half, and deletion by backward shift (no tombstones), keep probe runs short. Only ids of real keys
//! (read from the store, drawn at random at issuance) are ever inserted, so the probe runs cannot be steered by a
//! client; ids a client makes up go to the negative tier, a general map.
//!
//! Only keys whose whole state fits are kept here (see [`HotKey`]); every other key is kept in full in the other
//! tier. A key is in at most one tier at a time.

use std::hash::BuildHasher;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use foldhash::fast::RandomState;

use super::format::KeyId;
use crate::Grant;
use crate::credential::order::InsertionOrder;
use crate::grant::Rights;

/// A key in its compact form: everything a cache hit reads, in one cache line.
///
/// Valid only while `now < until` (whole seconds since the Unix epoch): `until` is the earliest of the end of the
/// entry's TTL, the key's revocation and its expiry, rounded down, so a hit needs one comparison and never serves
/// a key past any of them. The digest is under the cache's compact pepper version (see `KeyCache`).
#[repr(C, align(64))]
pub(crate) struct HotKey {
    pub(crate) id: KeyId,
    pub(crate) digest: [u64; 4],
    pub(crate) rights: Arc<Rights>,
    /// Whole seconds since the Unix epoch.
    pub(crate) until: u32,
    /// The key's expiry, whole seconds since the Unix epoch; `u32::MAX` for none.
    pub(crate) expires: u32,
}

impl HotKey {
    /// Loads the rights' reference count (a plain load, no other effect), so that the grant built after the hash
    /// finds it in the CPU cache.
    pub(crate) fn touch_rights(&self) {
        std::hint::black_box(Arc::strong_count(&self.rights));
    }

    /// The grant of this key (the id copied, the shared rights referenced).
    pub(crate) fn grant(&self) -> Grant {
        let expires_at = (self.expires != u32::MAX)
            .then(|| SystemTime::UNIX_EPOCH + Duration::from_secs(u64::from(self.expires)));
        Grant::api_key(self.id, Arc::clone(&self.rights), expires_at)
    }
}

/// Open-addressing table of [`HotKey`]s with a bound and oldest-first eviction.
pub(crate) struct HotTable {
    /// A power of two in length, never more than half full, so every probe run ends at an empty slot.
    slots: Vec<Option<HotKey>>,
    len: usize,
    max_len: usize,
    hasher: RandomState,
    /// Stamped with `until` (no room in the entry for a sequence number): an entry refreshed within the same second
    /// may leave early, and is then read again from the store, nothing worse.
    order: InsertionOrder<KeyId>,
}

const MIN_SLOTS: usize = 16;

impl HotTable {
    pub(crate) fn new(max_len: usize, hasher: RandomState) -> Self {
        HotTable {
            slots: empty_slots(MIN_SLOTS),
            len: 0,
            max_len,
            hasher,
            order: InsertionOrder::new(max_len),
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    fn mask(&self) -> usize {
        self.slots.len() - 1
    }

    fn home(&self, id: &KeyId) -> usize {
        // Truncation keeps the low bits, which the mask selects anyway.
        #[allow(clippy::cast_possible_truncation)]
        let hash = self.hasher.hash_one(id) as usize;
        hash & self.mask()
    }

    /// The slot holding `id`, if any. Every probe walk here is bounded by the table's length (a run always ends at
    /// an empty slot well before that: the table is never more than half full), so no wrong step can make it spin.
    fn position(&self, id: &KeyId) -> Option<usize> {
        let mask = self.mask();
        let mut pos = self.home(id);
        for _ in 0..self.slots.len() {
            match &self.slots[pos] {
                None => return None,
                Some(entry) if entry.id == *id => return Some(pos),
                Some(_) => pos = (pos + 1) & mask,
            }
        }
        None
    }

    pub(crate) fn get(&self, id: &KeyId) -> Option<&HotKey> {
        self.position(id).and_then(|pos| self.slots[pos].as_ref())
    }

    /// Inserts or replaces the entry for `entry.id`, evicting the oldest entries first when full.
    pub(crate) fn insert(&mut self, entry: HotKey) {
        if self.max_len == 0 {
            return;
        }
        let id = entry.id;
        let stamp = u64::from(entry.until);
        if let Some(pos) = self.position(&id) {
            self.slots[pos] = Some(entry);
        } else {
            // Oldest first. Each pass takes one record from the order, which is finite: the loop always ends.
            while self.len >= self.max_len {
                let oldest = self
                    .with_order(|order, table| order.pop_oldest(|id, s| table.is_stamped(id, s)));
                let Some(oldest) = oldest else {
                    break;
                };
                self.remove(&oldest);
            }
            if 2 * (self.len + 1) > self.slots.len() {
                self.grow();
            }
            // There is always one (the table is never more than half full); without one, the key is not cached.
            let Some(pos) = self.vacant(&id) else {
                return;
            };
            self.slots[pos] = Some(entry);
            self.len += 1;
        }
        self.with_order(|order, table| order.push(id, stamp, |id, s| table.is_stamped(id, s)));
    }

    /// Whether the entry for `id` is the one inserted with `stamp`.
    fn is_stamped(&self, id: &KeyId, stamp: u64) -> bool {
        self.get(id).is_some_and(|e| u64::from(e.until) == stamp)
    }

    /// Runs `f` on the insertion order and the table (which `f` reads to tell current records from stale ones).
    fn with_order<R>(&mut self, f: impl FnOnce(&mut InsertionOrder<KeyId>, &Self) -> R) -> R {
        let mut order = std::mem::take(&mut self.order);
        let out = f(&mut order, self);
        self.order = order;
        out
    }

    /// The first empty slot on `id`'s probe path (one exists: the table is never more than half full).
    fn vacant(&self, id: &KeyId) -> Option<usize> {
        let mask = self.mask();
        let mut pos = self.home(id);
        for _ in 0..self.slots.len() {
            if self.slots[pos].is_none() {
                return Some(pos);
            }
            pos = (pos + 1) & mask;
        }
        None
    }

    /// Removes the entry for `id`; the entries after it in its probe run move back, so no tombstone is left.
    pub(crate) fn remove(&mut self, id: &KeyId) {
        let Some(mut hole) = self.position(id) else {
            return;
        };
        self.slots[hole] = None;
        self.len -= 1;
        let mask = self.mask();
        let mut next = (hole + 1) & mask;
        for _ in 0..self.slots.len() {
            let Some(entry) = &self.slots[next] else {
                return;
            };
            let start = self.home(&entry.id);
            // The entry may fill the hole when the hole lies on its probe path: from its home up to where it is.
            if hole.wrapping_sub(start) & mask < next.wrapping_sub(start) & mask {
                self.slots[hole] = self.slots[next].take();
                hole = next;
            }
            next = (next + 1) & mask;
        }
    }

    /// Forgets every entry (the table keeps its size).
    pub(crate) fn clear(&mut self) {
        self.slots.iter_mut().for_each(|slot| *slot = None);
        self.len = 0;
        self.order.clear();
    }

    fn grow(&mut self) {
        let doubled = empty_slots(2 * self.slots.len());
        let old = std::mem::replace(&mut self.slots, doubled);
        for entry in old.into_iter().flatten() {
            // Twice as many slots as before: each entry finds one.
            if let Some(pos) = self.vacant(&entry.id) {
                self.slots[pos] = Some(entry);
            }
        }
    }
}

fn empty_slots(n: usize) -> Vec<Option<HotKey>> {
    std::iter::repeat_with(|| None).take(n).collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::collections::HashMap;

    use proptest::prelude::*;

    use super::*;
    use crate::policy::ScopeSet;

    fn id(n: u32) -> KeyId {
        format!("{n:0>16}")
            .parse()
            .unwrap_or_else(|_| unreachable!())
    }

    fn entry(n: u32, until: u32) -> HotKey {
        HotKey {
            id: id(n),
            digest: [u64::from(n); 4],
            rights: Arc::new(Rights::new(ScopeSet::new(), None, crate::Attributes::new())),
            until,
            expires: u32::MAX,
        }
    }

    #[test]
    fn a_grant_carries_the_id_the_shared_rights_and_the_expiry() {
        let mut key = entry(7, 100);
        let grant = key.grant();
        assert_eq!(grant.key_id(), Some(id(7)));
        assert_eq!(grant.expires_at(), None);
        key.expires = 1_800_000_000;
        assert_eq!(
            key.grant().expires_at(),
            Some(SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000))
        );
    }

    #[test]
    fn an_entry_fills_one_cache_line() {
        assert_eq!(std::mem::size_of::<Option<HotKey>>(), 64);
        assert_eq!(std::mem::align_of::<Option<HotKey>>(), 64);
    }

    #[test]
    fn it_is_bounded_and_evicts_oldest_first() {
        let mut t = HotTable::new(3, RandomState::default());
        for n in 0..10 {
            t.insert(entry(n, 100));
        }
        assert_eq!(t.len(), 3);
        for n in 0..7 {
            assert!(t.get(&id(n)).is_none(), "{n}");
        }
        for n in 7..10 {
            assert_eq!(t.get(&id(n)).unwrap().digest[0], u64::from(n));
        }
        // Replacing an entry neither grows nor evicts.
        t.insert(entry(8, 200));
        assert_eq!(t.len(), 3);
        assert_eq!(t.get(&id(8)).unwrap().until, 200);
        // The order queue stays bounded under churn.
        for round in 0..1000 {
            t.insert(entry(9, round));
        }
        assert!(t.order.len() <= 2 * 3 + 64 + 1);
        assert_eq!(t.len(), 3);
    }

    #[test]
    fn clearing_forgets_everything_and_the_table_still_works() {
        let mut t = HotTable::new(8, RandomState::default());
        for n in 0..6 {
            t.insert(entry(n, 100));
        }
        t.clear();
        assert_eq!(t.len(), 0);
        assert!((0..6).all(|n| t.get(&id(n)).is_none()));
        t.insert(entry(3, 7));
        assert_eq!(t.get(&id(3)).map(|e| e.until), Some(7));
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn the_table_doubles_only_when_more_than_half_would_be_full() {
        let mut t = HotTable::new(1000, RandomState::default());
        for n in 0..8 {
            t.insert(entry(n, 1));
        }
        // 8 of 16 slots: half full, not more.
        assert_eq!((t.len(), t.slots.len()), (8, MIN_SLOTS));
        t.insert(entry(8, 1));
        assert_eq!((t.len(), t.slots.len()), (9, 2 * MIN_SLOTS));
        assert!((0..9).all(|n| t.get(&id(n)).is_some()));
    }

    #[test]
    fn zero_capacity_keeps_nothing() {
        let mut t = HotTable::new(0, RandomState::default());
        t.insert(entry(1, 1));
        assert_eq!(t.len(), 0);
        assert!(t.get(&id(1)).is_none());
    }

    #[derive(Debug, Clone, Copy)]
    enum Op {
        Insert(u32, u32),
        Remove(u32),
    }

    fn op() -> impl Strategy<Value = Op> {
        // A small id space, so that inserts collide with, replace and follow removals of the same ids.
        prop_oneof![
            (0u32..48, 0u32..4).prop_map(|(n, u)| Op::Insert(n, u)),
            (0u32..48).prop_map(Op::Remove),
        ]
    }

    /// Applies `op` to the table and to the map of what it should hold (id → `until` of the last insert).
    fn apply(t: &mut HotTable, model: &mut HashMap<u32, u32>, op: Op) {
        match op {
            Op::Insert(n, u) => {
                t.insert(entry(n, u));
                model.insert(n, u);
            }
            Op::Remove(n) => {
                t.remove(&id(n));
                model.remove(&n);
            }
        }
    }

    proptest! {
        /// Against a map, with a capacity above the id space (no eviction): every lookup agrees after every step,
        /// through growth, wrap-around and backward-shift deletion.
        #[test]
        fn agrees_with_a_map(ops in proptest::collection::vec(op(), 1..300)) {
            let mut t = HotTable::new(64, RandomState::default());
            let mut model: HashMap<u32, u32> = HashMap::new();
            for op in ops {
                apply(&mut t, &mut model, op);
                prop_assert_eq!(t.len(), model.len());
                prop_assert!(2 * t.len() <= t.slots.len());
                for n in 0..48 {
                    let found = t.get(&id(n)).map(|e| (e.until, e.digest[0]));
                    prop_assert_eq!(found, model.get(&n).map(|u| (*u, u64::from(n))));
                }
            }
        }

        /// With eviction: never more than the bound, and what is found is what was last inserted for that id.
        #[test]
        fn stays_bounded(ops in proptest::collection::vec(op(), 1..300), max in 1usize..10) {
            let mut t = HotTable::new(max, RandomState::default());
            let mut last: HashMap<u32, u32> = HashMap::new();
            for op in ops {
                apply(&mut t, &mut last, op);
                prop_assert!(t.len() <= max);
                let present = (0..48).filter(|n| t.get(&id(*n)).is_some()).count();
                prop_assert_eq!(present, t.len());
                for n in 0..48 {
                    if let Some(e) = t.get(&id(n)) {
                        prop_assert_eq!(Some(&e.until), last.get(&n));
                    }
                }
            }
        }
    }
}
