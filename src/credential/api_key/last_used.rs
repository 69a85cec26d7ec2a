//! `last_used_at`, written behind the request: an allowed key is noted in memory, and a background task writes the
//! notes in one batch per interval, at most once per key per interval. Nothing here can change a decision: a note
//! is taken after the grant is made, and a failing write is logged and dropped.
//!
//! The request path pays one atomic load in the common case: a small table of marks (a fingerprint of the key id
//! and the second it was last noted) says whether the key was noted within the interval. Only when it was not is a
//! note queued, under a lock. Two keys that share a mark may each be queued more often than once per interval; the
//! writer keeps the exact bound with its own record of what it wrote.

use std::collections::HashMap;
use std::fmt;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError, Weak};
use std::time::{Duration, SystemTime};

use foldhash::fast::RandomState;

use super::format::KeyId;
use super::store::KeyStore;

/// Marks in the table (a power of two): 128 KiB.
const MARKS: usize = 16_384;
/// Notes queued between two writes at most; beyond, notes are dropped (and counted) until the next write.
const MAX_PENDING: usize = 100_000;

/// Notes taken, waiting for the writer.
#[derive(Default)]
struct Pending {
    notes: Vec<(KeyId, u32)>,
    dropped: u64,
}

pub(crate) struct LastUsed {
    interval: Duration,
    interval_secs: u32,
    marks: Box<[AtomicU64]>,
    hasher: RandomState,
    pending: Arc<Mutex<Pending>>,
    store: Arc<dyn KeyStore>,
    /// Whether the writer task runs (started by the first note, on the runtime then current).
    writer: OnceLock<bool>,
}

impl LastUsed {
    /// Notes for `store`, written every `interval` (at least one second).
    pub(crate) fn new(store: Arc<dyn KeyStore>, interval: Duration) -> Self {
        let interval = interval.max(Duration::from_secs(1));
        LastUsed {
            interval,
            interval_secs: u32::try_from(interval.as_secs()).unwrap_or(u32::MAX),
            marks: (0..MARKS).map(|_| AtomicU64::new(0)).collect(),
            hasher: RandomState::default(),
            pending: Arc::new(Mutex::new(Pending::default())),
            store,
            writer: OnceLock::new(),
        }
    }

    pub(crate) fn interval(&self) -> Duration {
        self.interval
    }

    /// Notes that `id` was allowed at `now` (Unix nanoseconds).
    pub(crate) fn note(&self, id: KeyId, now: u64) {
        let secs = u32::try_from(now / 1_000_000_000).unwrap_or(u32::MAX);
        let hash = self.hasher.hash_one(id);
        // The low bits choose the mark, the high bits are the fingerprint kept in it.
        #[allow(clippy::cast_possible_truncation)]
        let (index, fingerprint) = (hash as usize & (MARKS - 1), (hash >> 32) as u32);
        let mark = &self.marks[index];
        let seen = mark.load(Ordering::Relaxed);
        #[allow(clippy::cast_possible_truncation)]
        let (seen_fingerprint, seen_secs) = ((seen >> 32) as u32, seen as u32);
        if seen_fingerprint == fingerprint
            && seen_secs <= secs
            && secs - seen_secs < self.interval_secs
        {
            return;
        }
        mark.store(
            u64::from(fingerprint) << 32 | u64::from(secs),
            Ordering::Relaxed,
        );
        if !*self.writer.get_or_init(|| self.start_writer()) {
            return;
        }
        let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        if pending.notes.len() < MAX_PENDING {
            pending.notes.push((id, secs));
        } else {
            pending.dropped += 1;
        }
    }

    fn start_writer(&self) -> bool {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::warn!(
                "no tokio runtime: API keys' last_used_at is not recorded by this verifier (it needs a runtime to \
                 write behind the requests)"
            );
            return false;
        };
        runtime.spawn(write_behind(
            Arc::downgrade(&self.pending),
            Arc::clone(&self.store),
            self.interval,
            self.interval_secs,
        ));
        true
    }

    /// Writes what is noted now (e.g. before a gate stops), under the same once-per-interval bound.
    pub(crate) async fn flush(&self) {
        let notes =
            std::mem::take(&mut *self.pending.lock().unwrap_or_else(PoisonError::into_inner));
        // A flush outside the writer task keeps no record of its own: at worst a key is written twice in one
        // interval, once by each.
        let mut written = HashMap::new();
        write_batch(self.store.as_ref(), notes, &mut written, self.interval_secs).await;
    }
}

impl fmt::Debug for LastUsed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LastUsed")
            .field("interval", &self.interval)
            .finish_non_exhaustive()
    }
}

/// The writer: every `interval`, the notes taken since, at most one write per key per interval, in one batch.
/// Ends when the notes' owner (the verifier) is gone.
async fn write_behind(
    pending: Weak<Mutex<Pending>>,
    store: Arc<dyn KeyStore>,
    interval: Duration,
    interval_secs: u32,
) {
    // Second each key was last written, for the once-per-interval bound; pruned as entries age out.
    let mut written: HashMap<KeyId, u32> = HashMap::new();
    loop {
        tokio::time::sleep(interval).await;
        let Some(pending) = pending.upgrade() else {
            return;
        };
        let notes = std::mem::take(&mut *pending.lock().unwrap_or_else(PoisonError::into_inner));
        drop(pending);
        write_batch(store.as_ref(), notes, &mut written, interval_secs).await;
    }
}

async fn write_batch(
    store: &dyn KeyStore,
    notes: Pending,
    written: &mut HashMap<KeyId, u32>,
    interval_secs: u32,
) {
    if notes.dropped > 0 {
        tracing::warn!(
            dropped = notes.dropped,
            "more keys were used in one interval than last_used_at keeps notes for; some were not recorded"
        );
    }
    // The latest note of each key.
    let mut latest: HashMap<KeyId, u32> = HashMap::with_capacity(notes.notes.len());
    for (id, secs) in notes.notes {
        let entry = latest.entry(id).or_insert(secs);
        *entry = (*entry).max(secs);
    }
    let newest = latest.values().copied().max().unwrap_or(0);
    let mut batch: Vec<(KeyId, SystemTime)> = Vec::with_capacity(latest.len());
    for (id, secs) in latest {
        let due = written
            .get(&id)
            .is_none_or(|last| secs.saturating_sub(*last) >= interval_secs);
        if due {
            written.insert(id, secs);
            batch.push((
                id,
                SystemTime::UNIX_EPOCH + Duration::from_secs(u64::from(secs)),
            ));
        }
    }
    written.retain(|_, last| newest.saturating_sub(*last) < interval_secs);
    if batch.is_empty() {
        return;
    }
    let count = batch.len();
    if let Err(error) = store.record_last_used(batch).await {
        // Only a record of use is lost; no decision depends on it.
        tracing::warn!(keys = count, %error, "writing API keys' last_used_at failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::credential::api_key::MemoryKeyStore;

    fn id(n: u32) -> KeyId {
        format!("{n:0>16}").parse().unwrap()
    }

    const SEC: u64 = 1_000_000_000;

    #[tokio::test]
    async fn a_key_is_noted_once_per_interval() {
        let notes = LastUsed::new(Arc::new(MemoryKeyStore::new()), Duration::from_secs(60));
        for second in [1000, 1000, 1010, 1059] {
            notes.note(id(1), second * SEC);
        }
        notes.note(id(2), 1000 * SEC);
        notes.note(id(1), 1060 * SEC);
        let pending = notes.pending.lock().unwrap();
        assert_eq!(
            pending.notes,
            vec![(id(1), 1000), (id(2), 1000), (id(1), 1060)]
        );
    }

    #[tokio::test]
    async fn distinct_keys_sharing_a_mark_are_each_noted() {
        // More keys than marks: many share one, and only the fingerprint tells them apart.
        let notes = LastUsed::new(Arc::new(MemoryKeyStore::new()), Duration::from_secs(60));
        let count = u32::try_from(MARKS + MARKS / 4).unwrap();
        for n in 0..count {
            notes.note(id(n), 1000 * SEC);
        }
        assert_eq!(notes.pending.lock().unwrap().notes.len(), MARKS + MARKS / 4);
    }

    #[tokio::test]
    async fn notes_past_the_bound_are_counted_not_kept() {
        let notes = LastUsed::new(Arc::new(MemoryKeyStore::new()), Duration::from_secs(60));
        let count = u32::try_from(MAX_PENDING + 2).unwrap();
        for n in 0..count {
            notes.note(id(n), 1000 * SEC);
        }
        let pending = notes.pending.lock().unwrap();
        assert_eq!(pending.notes.len(), MAX_PENDING);
        assert_eq!(pending.dropped, 2);
    }

    #[tokio::test]
    async fn a_batch_with_dropped_notes_warns() {
        let store = MemoryKeyStore::new();
        let mut written = HashMap::new();
        let batch = |dropped| Pending {
            notes: vec![(id(1), 100)],
            dropped,
        };
        let mut logs = Vec::new();
        for dropped in [0, 3] {
            logs.push(crate::test_logs::logged(false, || {
                futures_now(write_batch(&store, batch(dropped), &mut written, 60));
            }));
        }
        assert!(!logs[0].contains("not recorded"), "{}", logs[0]);
        assert!(
            logs[1].contains("WARN") && logs[1].contains("dropped=3"),
            "{}",
            logs[1]
        );
    }

    /// Polls a future that never waits (a memory store's) to its end.
    fn futures_now<F: std::future::Future>(future: F) -> F::Output {
        let mut future = std::pin::pin!(future);
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        match future.as_mut().poll(&mut cx) {
            std::task::Poll::Ready(output) => output,
            std::task::Poll::Pending => panic!("a memory store does not wait"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_writer_records_uses_once_an_interval_has_passed() {
        use crate::credential::api_key::{KeyFormat, KeyIssuer, NewKey, Pepper, Peppers};
        let store = Arc::new(MemoryKeyStore::new());
        let issuer = KeyIssuer::new(
            store.clone(),
            KeyFormat::new("acme").unwrap(),
            Peppers::single(Pepper::new(1, vec![7; 32]).unwrap()),
            Arc::new(crate::SystemClock),
        );
        let scopes = crate::policy::ScopeSet::parse(["a:read"]).unwrap();
        let key = issuer.issue(NewKey::new("k", scopes)).await.unwrap().id();
        let notes = LastUsed::new(store.clone(), Duration::from_secs(5));
        assert_eq!(format!("{notes:?}"), "LastUsed { interval: 5s, .. }");
        notes.note(key, 1_700_000_000 * SEC);
        assert_eq!(issuer.get(key).await.unwrap().last_used_at, None);
        tokio::time::sleep(Duration::from_secs(6)).await;
        assert_eq!(
            issuer.get(key).await.unwrap().last_used_at,
            Some(SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000))
        );
    }

    #[tokio::test]
    async fn the_writer_keeps_the_bound_across_batches() {
        let mut written = HashMap::new();
        let store = MemoryKeyStore::new();
        let batch = |notes: Vec<(KeyId, u32)>| Pending { notes, dropped: 0 };
        write_batch(
            &store,
            batch(vec![(id(1), 100), (id(1), 130)]),
            &mut written,
            60,
        )
        .await;
        assert_eq!(written.get(&id(1)), Some(&130));
        // Within 60 s of the last write: skipped.
        write_batch(&store, batch(vec![(id(1), 150)]), &mut written, 60).await;
        assert_eq!(written.get(&id(1)), Some(&130));
        write_batch(&store, batch(vec![(id(1), 190)]), &mut written, 60).await;
        assert_eq!(written.get(&id(1)), Some(&190));
    }

    #[test]
    fn without_a_runtime_nothing_is_queued() {
        let notes = LastUsed::new(Arc::new(MemoryKeyStore::new()), Duration::from_secs(60));
        notes.note(id(1), 1000 * SEC);
        assert!(notes.pending.lock().unwrap().notes.is_empty());
    }
}
