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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_records_are_dropped_only_past_twice_the_bound() {
        let mut order = InsertionOrder::new(4);
        let stale = |_: &u32, _: u64| false;
        for key in 0..8 {
            order.push(key, 0, stale);
        }
        // Twice the bound is kept as it is: no scan on every insertion.
        assert_eq!(order.len(), 8);
        // One more, and the stale records go.
        order.push(8, 0, stale);
        assert_eq!(order.len(), 0);
    }

    #[test]
    fn current_records_survive_a_compaction_in_order() {
        let mut order = InsertionOrder::new(2);
        // Even keys are current, odd ones were replaced since.
        let current = |key: &u32, _: u64| key.is_multiple_of(2);
        for key in 0..5 {
            order.push(key, 0, current);
        }
        assert_eq!(order.len(), 3);
        assert_eq!(order.pop_oldest(current), Some(0));
        assert_eq!(order.pop_oldest(current), Some(2));
        assert_eq!(order.pop_oldest(current), Some(4));
        assert_eq!(order.pop_oldest(current), None);
        // Popping skips stale records without a compaction.
        for key in [1, 3, 6] {
            order.push(key, 0, current);
        }
        assert_eq!(order.pop_oldest(current), Some(6));
        order.push(8, 0, current);
        order.clear();
        assert_eq!(order.len(), 0);
        assert_eq!(order.pop_oldest(current), None);
    }

    #[test]
    fn an_empty_order_holds_nothing() {
        let mut order = InsertionOrder::<u32>::default();
        assert_eq!(order.pop_oldest(|_, _| true), None);
        // A bound of zero keeps no stale record.
        order.push(1, 0, |_, _| false);
        assert_eq!(order.len(), 0);
    }
}
