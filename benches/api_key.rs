//! API key verification through the cache, with 1,000,000 keys in a `MemoryKeyStore`, keys drawn in a random
//! order, next to its floor measured in the same run: one random lookup in a 1M-entry hash map + one HMAC-SHA256
//! with a pre-keyed pepper + a 32-byte constant-time compare.
//!
//! `cargo bench --bench api_key -- --warm-up-time 1 --measurement-time 5`
#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::similar_names,
    clippy::too_many_lines // one linear script: the fixture, then each measurement in order
)]

use std::collections::HashMap;
use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{Bencher, Criterion, criterion_group, criterion_main};
use hmac::{Hmac, Mac};
use scopegate::credential::api_key::{ApiKeyVerifier, CacheConfig, KeyCache, KeyStore};
use sha2::Sha256;
use subtle::ConstantTimeEq;

#[path = "support/keys.rs"]
mod keys;
#[path = "support/poll.rs"]
mod poll;

use keys::{Fixture, PEPPER, fixture, warm_verifier};
use poll::ready;

/// The scopes every fixture key grants.
const SCOPES: &[&str] = &["invoices:read", "orders:*"];

/// A map keyed by key id, hashed as the cache hashes.
type IdMap<V> = HashMap<[u8; 16], V, foldhash::fast::RandomState>;

fn bench(c: &mut Criterion) {
    let fx = fixture(SCOPES, false);
    let mut group = c.benchmark_group("api_key");

    // One HMAC-SHA256 of id ‖ secret with the pepper keyed once (the reference).
    let prepared = Hmac::<Sha256>::new_from_slice(&PEPPER).unwrap();
    let message = [b'k'; 48];
    group.bench_function("hmac_sha256_prekeyed", |b| {
        b.iter(|| {
            let mut mac = prepared.clone();
            mac.update(black_box(&message));
            let out: [u8; 32] = mac.finalize().into_bytes().into();
            black_box(out)
        });
    });

    // The floor: a random lookup in a 1M-entry map (id → digest lanes) + one pre-keyed HMAC + a 32-byte compare.
    let floor: IdMap<[u64; 4]> = fx
        .keys
        .iter()
        .map(|k| {
            let (id, digest) = floor_digest(&prepared, k);
            (id, digest)
        })
        .collect();
    let mut i = 0usize;
    group.bench_function("floor_lookup_hmac_compare_1M", |b| {
        b.iter(|| {
            let key = fx.nth(i).as_bytes();
            i = i.wrapping_add(1);
            let id: [u8; 16] = key[3..19].try_into().unwrap();
            let stored = floor.get(black_box(&id)).unwrap();
            let mut mac = prepared.clone();
            mac.update(&key[3..51]);
            let out: [u8; 32] = mac.finalize().into_bytes().into();
            let computed = lanes(&out);
            black_box(bool::from(computed[..].ct_eq(&stored[..])))
        });
    });
    drop(floor);

    // The floor plus what returning a grant inherently costs: each key also owns a separately allocated,
    // reference-counted grant of a realistic size, prefetched before the HMAC and cloned after the compare.
    let floor_with_grant: IdMap<([u64; 4], Arc<[u8; 256]>)> = fx
        .keys
        .iter()
        .map(|k| {
            let (id, digest) = floor_digest(&prepared, k);
            (id, (digest, Arc::new([0u8; 256])))
        })
        .collect();
    let mut i = 0usize;
    group.bench_function("floor_plus_grant_clone_1M", |b| {
        b.iter(|| {
            let key = fx.nth(i).as_bytes();
            i = i.wrapping_add(1);
            let id: [u8; 16] = key[3..19].try_into().unwrap();
            let (stored, grant) = floor_with_grant.get(black_box(&id)).unwrap();
            black_box(Arc::strong_count(grant));
            let mut mac = prepared.clone();
            mac.update(&key[3..51]);
            let out: [u8; 32] = mac.finalize().into_bytes().into();
            let computed = lanes(&out);
            let ok = bool::from(computed[..].ct_eq(&stored[..]));
            black_box(ok.then(|| Arc::clone(grant)))
        });
    });
    drop(floor_with_grant);

    // The real path through a warm cache holding every key.
    let verifier = warm_verifier(&fx);
    // What the gate runs on a cache hit: the synchronous path, no future.
    group.bench_function("verify_cached_random_1M", cached_hits(&verifier, &fx));
    // The same cache, through a verifier that takes no `last_used_at` notes: what the note costs on a hit.
    let unnoted = ApiKeyVerifier::builder(fx.peppers.clone(), verifier.cache().clone())
        .last_used(None)
        .build();
    group.bench_function(
        "verify_cached_random_1M_no_last_use",
        cached_hits(&unnoted, &fx),
    );
    // The same through the async `verify` (the future built and polled once).
    let mut i = 0usize;
    group.bench_function("verify_async_cached_random_1M", |b| {
        b.iter(|| {
            let key = fx.nth(i);
            i = i.wrapping_add(1);
            black_box(ready(verifier.verify(black_box(key))).is_ok())
        });
    });
    // One key over and over: the entry stays in the CPU's cache, so this is the verifier's own work (parse,
    // keyed hash, compare) without the memory cost of 1M keys; set it beside `hmac_sha256_prekeyed`.
    let hot = fx.nth(0);
    group.bench_function("verify_cached_one_hot_key", |b| {
        b.iter(|| {
            black_box(matches!(
                verifier.verify_cached(black_box(hot)),
                Some(Ok(_))
            ))
        });
    });
    drop(verifier);

    // For reference: every verification a cache miss (TTL zero): store read, record copy, grant built.
    let uncached = ApiKeyVerifier::builder(
        fx.peppers.clone(),
        Arc::new(KeyCache::new(
            fx.store.clone() as Arc<dyn KeyStore>,
            CacheConfig::default().ttl(Duration::ZERO),
        )),
    )
    .build();
    let mut i = 0usize;
    group.bench_function("verify_uncached_random_1M", |b| {
        b.iter(|| {
            let key = fx.nth(i);
            i = i.wrapping_add(1);
            black_box(ready(uncached.verify(black_box(key))).is_ok())
        });
    });

    // A malformed key: refused before any lookup.
    let bad = format!("{}0", &fx.keys[0][..fx.keys[0].len() - 1]);
    group.bench_function("refuse_bad_checksum", |b| {
        b.iter(|| {
            black_box(matches!(
                uncached.verify_cached(black_box(&bad)),
                Some(Err(_))
            ))
        });
    });
    drop(uncached);
    drop(fx);

    // The least favourable mix: every key has rights of its own (a tenant attribute) and an expiry, so a grant
    // references memory that no other key shares.
    let fx = fixture(SCOPES, true);
    let verifier = warm_verifier(&fx);
    group.bench_function(
        "verify_cached_random_1M_distinct_rights",
        cached_hits(&verifier, &fx),
    );
    group.finish();
}

/// What the gate runs on a cache hit (the synchronous path, no future), over the keys of `fx` in random order.
fn cached_hits<'a>(
    verifier: &'a ApiKeyVerifier,
    fx: &'a Fixture,
) -> impl FnMut(&mut Bencher<'_>) + 'a {
    let mut i = 0usize;
    move |b| {
        b.iter(|| {
            let key = fx.nth(i);
            i = i.wrapping_add(1);
            black_box(matches!(
                verifier.verify_cached(black_box(key)),
                Some(Ok(_))
            ))
        });
    }
}

fn floor_digest(prepared: &Hmac<Sha256>, key: &str) -> ([u8; 16], [u64; 4]) {
    let bytes = key.as_bytes();
    let id: [u8; 16] = bytes[3..19].try_into().unwrap();
    let mut mac = prepared.clone();
    mac.update(&bytes[3..51]);
    let out: [u8; 32] = mac.finalize().into_bytes().into();
    (id, lanes(&out))
}

fn lanes(digest: &[u8; 32]) -> [u64; 4] {
    let mut out = [0u64; 4];
    for (lane, chunk) in out.iter_mut().zip(digest.chunks_exact(8)) {
        *lane = u64::from_le_bytes(chunk.try_into().unwrap());
    }
    out
}

criterion_group!(benches, bench);
criterion_main!(benches);
