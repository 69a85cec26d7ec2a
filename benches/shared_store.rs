//! The shared PostgreSQL key store, on loopback, each figure next to its baseline measured in the same run:
//!
//! 1. a cache miss (every verification reads the store): PostgreSQL against `SQLite` (a local file);
//! 2. a cache hit with the PostgreSQL store against the memory store (the store is not on the path: the same);
//! 3. revocation delay across two gates (separate pools and caches), p50 and p99 over 200 revocations, with
//!    notifications (`LISTEN`/`NOTIFY`) and without (the cache TTL alone);
//! 4. issuing `SCOPEGATE_BENCH_KEYS` keys (default 1,000,000) into PostgreSQL, then verification throughput with
//!    two gates over them (first pass: cache misses; second pass: hits), against one memory-store gate.
//!
//! Needs `SCOPEGATE_TEST_POSTGRES_URL` (a server where databases may be created):
//! `eval "$(scripts/throwaway-postgres.sh)"; cargo bench --bench shared_store -- --warm-up-time 1 --measurement-time 5`
#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::cast_precision_loss,
    clippy::too_many_lines // one linear script: each measurement in order
)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use rand::Rng;
use scopegate::credential::api_key::{
    ApiKeyVerifier, CacheConfig, KeyCache, KeyFormat, KeyIssuer, KeyStore, MemoryKeyStore, NewKey,
    Pepper, Peppers, StoreAccess, open_store,
};
use scopegate::policy::{DenialKind, ScopeSet};
use scopegate::{Clock, SystemClock};

const PEPPER: [u8; 32] = [0x5c; 32];
const HOUR: Duration = Duration::from_secs(3600);

fn peppers() -> Peppers {
    Peppers::single(Pepper::new(1, PEPPER.to_vec()).unwrap())
}

fn issuer(store: Arc<dyn KeyStore>) -> KeyIssuer {
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    KeyIssuer::new(store, KeyFormat::default(), peppers(), clock)
}

fn verifier(store: Arc<dyn KeyStore>, cache: CacheConfig) -> ApiKeyVerifier {
    ApiKeyVerifier::builder(peppers(), Arc::new(KeyCache::new(store, cache)))
        .last_used(None)
        .build()
}

async fn issue_keys(issuer: &KeyIssuer, n: usize) -> Vec<(String, String)> {
    let scopes = ScopeSet::parse(["orders:read"]).unwrap();
    let mut keys = Vec::with_capacity(n);
    for i in 0..n {
        let key = issuer
            .issue(NewKey::new(format!("k{i}"), scopes.clone()))
            .await
            .unwrap();
        keys.push((
            key.id().as_str().to_owned(),
            key.key().expose_str().unwrap().to_owned(),
        ));
    }
    keys
}

/// A fresh, migrated database on the server; its URL.
async fn database(server: &str) -> String {
    use sqlx::Connection as _;
    let name = format!("sg_bench_{:016x}", rand::random::<u64>());
    let mut admin = sqlx::PgConnection::connect(server).await.unwrap();
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut admin)
        .await
        .unwrap();
    let (base, _) = server.rsplit_once('/').unwrap();
    let url = format!("{base}/{name}");
    open_store(&url, StoreAccess::Migrate).await.unwrap();
    url
}

/// The nearest-rank percentile `per_mille`/1000 of `sorted`.
fn percentile(sorted: &[Duration], per_mille: usize) -> Duration {
    let rank = (sorted.len() * per_mille).div_ceil(1000);
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Revokes `count` keys at gate A, each after B cached it, and measures how long until B refuses it (polling every
/// `poll`). Several revocations run at once, staggered, so that the TTL case does not take `count` TTLs.
async fn revocation_delays(
    a: &KeyIssuer,
    b: &ApiKeyVerifier,
    count: usize,
    spread: Duration,
    poll: Duration,
) -> Vec<Duration> {
    let keys = issue_keys(a, count).await;
    for (_, key) in &keys {
        assert!(b.verify(key).await.is_ok());
    }
    // Each revocation at a random moment of the spread, counted from one start.
    let mut offsets: Vec<Duration> = (0..count)
        .map(|_| spread.mul_f64(rand::rng().random::<f64>()))
        .collect();
    offsets.sort();
    let start = tokio::time::Instant::now();
    let mut handles = Vec::new();
    for ((id, key), offset) in keys.into_iter().zip(offsets) {
        tokio::time::sleep_until(start + offset).await;
        a.revoke(id.parse().unwrap()).await.unwrap();
        let b = b.clone();
        let revoked = Instant::now();
        handles.push(tokio::spawn(async move {
            loop {
                if b.verify(&key).await.err().map(|d| d.kind())
                    == Some(DenialKind::RevokedCredential)
                {
                    return revoked.elapsed();
                }
                tokio::time::sleep(poll).await;
            }
        }));
    }
    let mut delays = Vec::with_capacity(count);
    for handle in handles {
        delays.push(handle.await.unwrap());
    }
    delays.sort();
    delays
}

fn report(name: &str, delays: &[Duration]) {
    println!(
        "{name}: n={} p50={:.1?} p99={:.1?} max={:.1?}",
        delays.len(),
        percentile(delays, 500),
        percentile(delays, 990),
        delays[delays.len() - 1]
    );
}

/// Verifications per second over `duration`, `tasks` at once per gate, each presenting random keys of `keys`.
async fn throughput(
    gates: &[ApiKeyVerifier],
    keys: &Arc<Vec<String>>,
    tasks: usize,
    rounds: u64,
) -> f64 {
    let done = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut handles = Vec::new();
    for gate in gates {
        for t in 0..tasks {
            let (gate, keys, done) = (gate.clone(), Arc::clone(keys), Arc::clone(&done));
            handles.push(tokio::spawn(async move {
                // Each task walks its own stride of the keys: every key presented once per round.
                let step = tasks;
                for _ in 0..rounds {
                    for key in keys.iter().skip(t).step_by(step) {
                        assert!(gate.verify(key).await.is_ok());
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }));
        }
    }
    for handle in handles {
        handle.await.unwrap();
    }
    done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64()
}

fn bench(c: &mut Criterion) {
    let Ok(server) = std::env::var("SCOPEGATE_TEST_POSTGRES_URL") else {
        eprintln!(
            "\n*** SKIPPED: the shared store bench needs SCOPEGATE_TEST_POSTGRES_URL: \
             eval \"$(scripts/throwaway-postgres.sh)\" starts a throwaway cluster ***\n"
        );
        return;
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (pg, sqlite, memory) = runtime.block_on(async {
        let url = database(&server).await;
        let pg = open_store(&url, StoreAccess::Gate).await.unwrap();
        let sqlite_url = format!("sqlite://{}", dir.path().join("keys.db").display());
        let sqlite = open_store(&sqlite_url, StoreAccess::Manage).await.unwrap();
        let memory: Arc<dyn KeyStore> = Arc::new(MemoryKeyStore::new());
        (pg, sqlite, memory)
    });

    // 1 and 2: the same 1,000 keys in each store.
    let keys: Vec<String> = runtime.block_on(async {
        let issued = issue_keys(&issuer(Arc::clone(&pg)), 1_000).await;
        for store in [&sqlite, &memory] {
            for record in pg.list().await.unwrap() {
                store.insert(record).await.unwrap();
            }
        }
        issued.into_iter().map(|(_, key)| key).collect()
    });
    let mut group = c.benchmark_group("shared_store");
    for (name, store) in [("miss_sqlite", &sqlite), ("miss_postgres", &pg)] {
        // A zero TTL: every verification reads the store.
        let gate = verifier(
            Arc::clone(store),
            CacheConfig::default().ttl(Duration::ZERO),
        );
        let mut i = 0;
        group.bench_function(name, |b| {
            b.iter(|| {
                i = (i + 1) % keys.len();
                runtime.block_on(async { assert!(gate.verify(&keys[i]).await.is_ok()) });
            });
        });
    }
    for (name, store) in [("hit_memory", &memory), ("hit_postgres", &pg)] {
        let gate = verifier(Arc::clone(store), CacheConfig::default().ttl(HOUR));
        runtime.block_on(async {
            for key in &keys {
                assert!(gate.verify(key).await.is_ok());
            }
            // The PostgreSQL store's listener flushes the cache once it listens (what was cached before may have
            // missed a change): warm again after it.
            tokio::time::sleep(Duration::from_millis(500)).await;
            for key in &keys {
                assert!(gate.verify(key).await.is_ok());
            }
        });
        let mut i = 0;
        group.bench_function(name, |b| {
            b.iter(|| {
                i = (i + 1) % keys.len();
                assert!(gate.verify_cached(&keys[i]).unwrap().is_ok());
            });
        });
    }
    group.finish();

    // 3: revocation delay, two gates on one database.
    runtime.block_on(async {
        let url = database(&server).await;
        let a_store = open_store(&url, StoreAccess::Gate).await.unwrap();
        let a_cache: Arc<dyn KeyStore> = Arc::new(KeyCache::new(a_store, CacheConfig::default()));
        let a = issuer(a_cache);
        let b = verifier(
            open_store(&url, StoreAccess::Gate).await.unwrap(),
            CacheConfig::default().ttl(HOUR),
        );
        let poll = Duration::from_millis(1);
        let notified = revocation_delays(&a, &b, 200, Duration::from_secs(2), poll).await;
        report("revocation delay, notifications, TTL 1 h", &notified);
        let ttl = Duration::from_secs(2);
        let deaf = verifier(
            open_store(&url, StoreAccess::Gate).await.unwrap(),
            CacheConfig::default().ttl(ttl).store_notifications(false),
        );
        let unnotified = revocation_delays(&a, &deaf, 200, ttl, poll).await;
        report("revocation delay, no notifications, TTL 2 s", &unnotified);
    });

    // 4: many keys into PostgreSQL, then two gates over them.
    let count: usize = std::env::var("SCOPEGATE_BENCH_KEYS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(1_000_000);
    runtime.block_on(async {
        let url = database(&server).await;
        let writer = issuer(open_store(&url, StoreAccess::Gate).await.unwrap());
        let writer = Arc::new(writer);
        let started = Instant::now();
        let workers = 16;
        let mut handles = Vec::new();
        for w in 0..workers {
            let writer = Arc::clone(&writer);
            let n = count / workers + usize::from(w < count % workers);
            handles.push(tokio::spawn(async move { issue_keys(&writer, n).await }));
        }
        let mut keys = Vec::with_capacity(count);
        for handle in handles {
            keys.extend(handle.await.unwrap().into_iter().map(|(_, key)| key));
        }
        let took = started.elapsed();
        println!(
            "issued {count} keys into PostgreSQL in {took:.1?} ({:.0} keys/s, {workers} at once)",
            count as f64 / took.as_secs_f64()
        );
        // A sample of them (every key is equally likely; the cache holds all of the sample).
        let sample: Vec<String> = keys.iter().step_by((count / 100_000).max(1)).cloned().collect();
        let sample = Arc::new(sample);
        let cache = CacheConfig::default().ttl(HOUR).max_entries(sample.len() * 2);
        let gates = [
            verifier(open_store(&url, StoreAccess::Gate).await.unwrap(), cache),
            verifier(open_store(&url, StoreAccess::Gate).await.unwrap(), cache),
        ];
        let cold = throughput(&gates, &sample, 4, 1).await;
        let warm = throughput(&gates, &sample, 4, 3).await;
        // The key id is the 16 characters after the prefix `sg_`.
        let ids: std::collections::HashSet<&str> = sample.iter().map(|k| &k[3..19]).collect();
        let memory: Arc<dyn KeyStore> = Arc::new(MemoryKeyStore::new());
        let store = open_store(&url, StoreAccess::Gate).await.unwrap();
        for record in store.list().await.unwrap() {
            if ids.contains(record.info.id.as_str()) {
                memory.insert(record).await.unwrap();
            }
        }
        let baseline = [verifier(memory, cache)];
        let _ = throughput(&baseline, &sample, 8, 1).await;
        let base = throughput(&baseline, &sample, 8, 3).await;
        println!(
            "two gates over {count} keys, {} presented: first pass (store reads) {cold:.0}/s, then cache hits \
             {warm:.0}/s; one memory-store gate, hits: {base:.0}/s (two PostgreSQL gates, hits: {:.2}x it)",
            sample.len(),
            warm / base
        );
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
