//! The brute-force throttle through the whole layer, with its lock table empty and full (65,536 clients locked out,
//! `MAX_LOCKED_CLIENTS`): the lock-out check that every protected request takes must cost the same either way, and
//! a new lock in a full table must cost O(1), not a scan of the table.
//!
//! Variants (one gate, quota 1 failure per minute with a burst of 1, a no-op audit sink):
//! - `allowed_empty` / `allowed_full`: an allowed API-key request (a cache hit) from a client that is not locked out;
//! - `locked_out_full`: a request from a locked-out client (429 before any credential work);
//! - `new_lock_full`: two failed requests from a client never seen before, the second of which locks it out (so
//!   that a full table has to drop a lock to take it), beside `two_failures_no_lock`, the same two requests to a
//!   gate whose quota never locks anyone (the same work, without the table).
//!
//! `cargo bench --bench throttle -- --warm-up-time 1 --measurement-time 3`
#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::similar_names
)]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::num::NonZeroU32;
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use http::header::{HeaderName, HeaderValue};
use http::{Request, Uri};
use scopegate::SystemClock;
use scopegate::credential::api_key::{
    ApiKeyVerifier, CacheConfig, KeyCache, KeyFormat, KeyIssuer, KeyStore, MemoryKeyStore, NewKey,
    Pepper, Peppers,
};
use scopegate::layer::{MAX_LOCKED_CLIENTS, ScopeGateLayer, ThrottleConfig};
use scopegate::network::ConnectionInfo;
use scopegate::policy::{Policy, Route, ScopeSet};
use tower::{Layer, service_fn};

#[path = "support/poll.rs"]
mod poll;
#[path = "support/service.rs"]
mod service;

use poll::ready;
use service::{NoAudit, call, hello};

struct Fixture {
    uri: Uri,
    header: HeaderName,
    good: HeaderValue,
    bad: HeaderValue,
}

impl Fixture {
    fn request(&self, peer: IpAddr, key: &HeaderValue) -> Request<()> {
        let mut req = Request::new(());
        *req.uri_mut() = self.uri.clone();
        req.headers_mut().insert(self.header.clone(), key.clone());
        req.extensions_mut().insert(ConnectionInfo {
            peer: Some(peer),
            tls: true,
        });
        req
    }
}

/// One issued key in a memory store, a verifier over a warm cache, and a wrong key of the right shape.
fn fixture() -> (Fixture, ApiKeyVerifier) {
    let store = Arc::new(MemoryKeyStore::new());
    let peppers = Peppers::single(Pepper::new(1, vec![0x5c; 32]).unwrap());
    let issuer = KeyIssuer::new(
        store.clone() as Arc<dyn KeyStore>,
        KeyFormat::default(),
        peppers.clone(),
        Arc::new(SystemClock),
    );
    let scopes = ScopeSet::parse(["orders:read"]).unwrap();
    let good = ready(issuer.issue(NewKey::new("bench", scopes.clone()))).unwrap();
    let other = ready(issuer.issue(NewKey::new("other", scopes))).unwrap();
    let good = good.key().expose_str().unwrap().to_owned();
    // A revoked key: refused after the whole verification, and counted as a failed authentication.
    let revoked = other.key().expose_str().unwrap().to_owned();
    ready(store.revoke(other.id(), std::time::SystemTime::UNIX_EPOCH)).unwrap();
    let verifier = ApiKeyVerifier::builder(
        peppers,
        Arc::new(KeyCache::new(
            store as Arc<dyn KeyStore>,
            CacheConfig::default().ttl(std::time::Duration::from_secs(3600)),
        )),
    )
    .build();
    let fixture = Fixture {
        uri: "/v1/orders/42".parse().unwrap(),
        header: HeaderName::from_static("x-api-key"),
        good: HeaderValue::from_str(&good).unwrap(),
        bad: HeaderValue::from_str(&revoked).unwrap(),
    };
    (fixture, verifier)
}

fn gate(verifier: &ApiKeyVerifier, per_minute: u32, burst: u32) -> ScopeGateLayer {
    let policy = Policy::builder()
        .route(Route::get("/v1/orders/{id}").require_all(["orders:read"]))
        .build()
        .unwrap();
    ScopeGateLayer::builder(policy)
        .api_keys(verifier.clone())
        .throttle(ThrottleConfig::per_minute(
            NonZeroU32::new(per_minute).unwrap(),
            NonZeroU32::new(burst).unwrap(),
        ))
        .audit(NoAudit)
        .build()
        .unwrap()
}

/// The `i`-th client of a space that never repeats within a run: IPv6 /64s (the throttle keys IPv6 by /64).
fn client(i: u64) -> IpAddr {
    IpAddr::V6(Ipv6Addr::from(
        (0x2001_0db8_u128 << 96) | (u128::from(i) << 64),
    ))
}

fn bench(c: &mut Criterion) {
    let (fx, verifier) = fixture();
    let mut empty = gate(&verifier, 1, 1).layer(service_fn(hello));
    let mut full = gate(&verifier, 1, 1).layer(service_fn(hello));
    let mut never_locks = gate(&verifier, u32::MAX, u32::MAX).layer(service_fn(hello));
    let friend = IpAddr::V4(Ipv4Addr::new(198, 51, 100, 7));

    // Fill the full gate's table: every client fails twice, and the second failure locks it out.
    let mut next = 0u64;
    for _ in 0..MAX_LOCKED_CLIENTS {
        for _ in 0..2 {
            let status = call(&mut full, fx.request(client(next), &fx.bad))
                .unwrap()
                .status();
            assert_eq!(status, 401);
        }
        next += 1;
    }
    let locked = client(next - 1);
    // Check every variant's outcome once before timing it.
    assert_eq!(
        call(&mut empty, fx.request(friend, &fx.good))
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        call(&mut full, fx.request(friend, &fx.good))
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        call(&mut full, fx.request(locked, &fx.good))
            .unwrap()
            .status(),
        429
    );

    let mut group = c.benchmark_group("throttle");
    group.bench_function("allowed_empty", |b| {
        b.iter(|| call(&mut empty, fx.request(friend, &fx.good)));
    });
    group.bench_function("allowed_full", |b| {
        b.iter(|| call(&mut full, fx.request(friend, &fx.good)));
    });
    group.bench_function("locked_out_full", |b| {
        b.iter(|| call(&mut full, fx.request(locked, &fx.good)));
    });
    group.bench_function("new_lock_full", |b| {
        b.iter(|| {
            let fresh = client(next);
            next += 1;
            let _ = call(&mut full, fx.request(fresh, &fx.bad));
            call(&mut full, fx.request(fresh, &fx.bad))
        });
    });
    let mut other = 1u64 << 40;
    group.bench_function("two_failures_no_lock", |b| {
        b.iter(|| {
            let fresh = client(other);
            other += 1;
            let _ = call(&mut never_locks, fx.request(fresh, &fx.bad));
            call(&mut never_locks, fx.request(fresh, &fx.bad))
        });
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
