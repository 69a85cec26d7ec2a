//! Insertion order for the bounded caches (API-key tiers, verified tokens), for oldest-first eviction.

use std::collections::VecDeque;

/// The insertion order of a bounded map, for oldest-first eviction (the oldest entry is also the next to go stale).
/// Each insertion records (key, stamp); a record whose stamp no longer matches the map's entry for that key (replaced
/// or removed since) is skipped, and such records are dropped whenever they would make the queue longer than twice
/// the bound.
#[derive(Debug)]
pub(crate) struct InsertionOrder<K> {
    records: VecDeque<(K, u64)>,
    cap: usize,
}

/// An empty order of a map that holds nothing.
impl<K> Default for InsertionOrder<K> {
    fn default() -> Self {
        InsertionOrder {
            records: VecDeque::new(),
            cap: 0,
        }
    }
}

impl<K: Copy> InsertionOrder<K> {
    /// The order of a map of at most `cap` entries.
    pub(crate) fn new(cap: usize) -> Self {
        InsertionOrder {
            records: VecDeque::new(),
            cap,
        }
    }

    /// Records that `key` was inserted with `stamp`; `current` tells whether a record still matches its entry.
    pub(crate) fn push(&mut self, key: K, stamp: u64, current: impl Fn(&K, u64) -> bool) {
        self.records.push_back((key, stamp));
        if self.records.len() > 2 * self.cap {
            self.records.retain(|(key, stamp)| current(key, *stamp));
        }
    }

    /// Takes the oldest record that still matches its entry, and returns its key.
    pub(crate) fn pop_oldest(&mut self, current: impl Fn(&K, u64) -> bool) -> Option<K> {
        while let Some((key, stamp)) = self.records.pop_front() {
            if current(&key, stamp) {
                return Some(key);
            }
        }
        None
    }

    /// Forgets every record (the map was cleared).
    pub(crate) fn clear(&mut self) {
        self.records.clear();
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.records.len()
    }
}
