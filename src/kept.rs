//! Text kept for the life of the process: what the gate hands to every request (route patterns, the HSTS value),
//! so that handing it out copies a pointer instead of taking a reference count every thread shares.
//!
//! Each distinct text is kept once. A process that builds ever new gates from text it did not write (gate files
//! from elsewhere, the gate-file fuzz target) must not grow without bound, so the kept text has a budget,
//! [`BUDGET`]; past it, [`keep`] answers `None` and the caller falls back to a reference-counted copy.

use std::collections::HashSet;
use std::sync::{Mutex, PoisonError};

/// Text kept for the life of the process at most, in bytes (each text counted with [`ENTRY_OVERHEAD`]).
const BUDGET: usize = 1 << 20;

/// Bookkeeping counted per kept text beyond its bytes (the set's entry).
const ENTRY_OVERHEAD: usize = 32;

/// The kept texts and the bytes they count.
struct Store {
    texts: HashSet<&'static str>,
    bytes: usize,
}

static KEPT: Mutex<Option<Store>> = Mutex::new(None);

/// The process's kept copy of `text`: found, or made while the budget allows. For build time (it takes a lock), not
/// for requests.
pub(crate) fn keep(text: &str) -> Option<&'static str> {
    keep_in(&KEPT, BUDGET, text)
}

/// [`keep`] in `store`, under `budget`.
fn keep_in(store: &Mutex<Option<Store>>, budget: usize, text: &str) -> Option<&'static str> {
    // A panic while the lock was held cannot leave the set inconsistent: it is only read and inserted into.
    let mut guard = store.lock().unwrap_or_else(PoisonError::into_inner);
    let store = guard.get_or_insert_with(|| Store {
        texts: HashSet::new(),
        bytes: 0,
    });
    if let Some(found) = store.texts.get(text) {
        return Some(found);
    }
    let cost = text.len().saturating_add(ENTRY_OVERHEAD);
    if store.bytes.saturating_add(cost) > budget {
        return None;
    }
    store.bytes += cost;
    let made: &'static str = Box::leak(Box::from(text));
    store.texts.insert(made);
    Some(made)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_text_is_kept_once() {
        let first = keep("kept-tests: once");
        let again = keep(&String::from("kept-tests: once"));
        assert!(first.is_some_and(|f| again.is_some_and(|a| std::ptr::eq(f, a))));
        assert_eq!(first, Some("kept-tests: once"));
        assert_ne!(keep("kept-tests: other"), first);
    }

    #[test]
    fn past_the_budget_nothing_more_is_kept() {
        // A store of its own, with room for two texts of this length (the process's budget is left alone).
        let store = Mutex::new(None);
        let budget = 2 * (10 + ENTRY_OVERHEAD);
        let keep = |text: &str| keep_in(&store, budget, text);
        let (a, b) = (keep("/budget/aa"), keep("/budget/bb"));
        assert_eq!((a, b), (Some("/budget/aa"), Some("/budget/bb")));
        assert_eq!(keep("/budget/cc"), None, "past the budget");
        // A text already kept is found, not made: still kept with the budget spent, and it costs nothing more.
        let again = keep("/budget/aa");
        assert!(again.is_some_and(|t| a.is_some_and(|a| std::ptr::eq(t, a))));
        let spent = store
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .map(|s| s.bytes);
        assert_eq!(spent, Some(budget));
    }
}
