//! Heap allocations on the gate's request path, counted by a global allocator: an allowed API-key request (a cache
//! hit), an allowed public route, and a denied request (401, no credential). Each count is pinned: a change that
//! adds an allocation fails here, and one that removes some lowers the bound in the same commit.
//!
//! Counted: everything between handing the request to the service and dropping the response (the request is built
//! before counting starts; the service and its response future run on this thread, polled without an executor).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::alloc::System;
use std::convert::Infallible;
use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Request, Response};
use http_body_util::Full;
use scopegate::credential::api_key::{
    ApiKeyVerifier, CacheConfig, KeyCache, KeyFormat, KeyIssuer, MemoryKeyStore, NewKey, Pepper,
    Peppers,
};
use scopegate::layer::{AuditEvent, AuditSink, ScopeGateLayer};
use scopegate::network::ConnectionInfo;
use scopegate::policy::{Policy, Route, ScopeSet};
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};
use tower::{Layer, Service};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// Allocations (and reallocations) made while `f` runs. This binary has one test, so no other thread allocates
/// meanwhile.
fn allocations<R>(f: impl FnOnce() -> R) -> (usize, R) {
    let region = Region::new(GLOBAL);
    let out = f();
    let change = region.change();
    (change.allocations + change.reallocations, out)
}

fn ready<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    let mut cx = Context::from_waker(Waker::noop());
    loop {
        if let Poll::Ready(out) = future.as_mut().poll(&mut cx) {
            return out;
        }
    }
}

struct NoAudit;

impl AuditSink for NoAudit {
    fn record(&self, _event: &AuditEvent<'_>) {}
}

async fn hello(_req: Request<()>) -> Result<Response<Full<Bytes>>, Infallible> {
    Ok(Response::new(Full::new(Bytes::from_static(b"hello"))))
}

fn request(path: &str, key: Option<&HeaderValue>) -> Request<()> {
    let mut req = Request::get(path).body(()).unwrap();
    if let Some(key) = key {
        req.headers_mut().insert("x-api-key", key.clone());
    }
    req.extensions_mut().insert(ConnectionInfo {
        peer: Some("198.51.100.7".parse().unwrap()),
        tls: true,
    });
    req
}

/// One request through the gate: the status and the allocations, the response dropped inside the count.
fn count<S>(service: &mut S, req: Request<()>) -> (usize, u16)
where
    S: Service<Request<()>, Response = Response<scopegate::layer::GateBody<Full<Bytes>>>>,
    S::Error: std::fmt::Debug,
{
    allocations(|| {
        ready(std::future::poll_fn(|cx| service.poll_ready(cx))).unwrap();
        let response = ready(service.call(req)).unwrap();
        response.status().as_u16()
    })
}

#[test]
fn the_request_path_allocates_no_more_than_it_did() {
    let store = Arc::new(MemoryKeyStore::new());
    let peppers = Peppers::single(Pepper::new(1, vec![7; 32]).unwrap());
    let issuer = KeyIssuer::new(
        store.clone(),
        KeyFormat::default(),
        peppers.clone(),
        Arc::new(scopegate::SystemClock),
    );
    let new_key =
        ready(issuer.issue(NewKey::new("k", ScopeSet::parse(["orders:read"]).unwrap()))).unwrap();
    let key = HeaderValue::from_str(new_key.key().expose_str().unwrap()).unwrap();
    let cache = Arc::new(KeyCache::new(
        store,
        CacheConfig::default().ttl(Duration::from_secs(3600)),
    ));
    let verifier = ApiKeyVerifier::builder(peppers, cache)
        .last_used(None)
        .build();
    let policy = Policy::builder()
        .route(Route::get("/health").public())
        .route(Route::get("/v1/orders/{id}").require_all(["orders:read"]))
        .build()
        .unwrap();
    let layer = ScopeGateLayer::builder(policy)
        .api_keys(verifier)
        .audit(NoAudit)
        .build()
        .unwrap();
    let mut service = layer.layer(tower::service_fn(hello));
    // Warm: the cache holds the key, every lazily made handle exists.
    for _ in 0..3 {
        assert_eq!(
            count(&mut service, request("/v1/orders/7", Some(&key))).1,
            200
        );
        assert_eq!(count(&mut service, request("/health", None)).1, 200);
        assert_eq!(count(&mut service, request("/v1/orders/7", None)).1, 401);
    }
    let (allowed, status) = count(&mut service, request("/v1/orders/7", Some(&key)));
    assert_eq!(status, 200);
    let (public, status) = count(&mut service, request("/health", None));
    assert_eq!(status, 200);
    let (denied, status) = count(&mut service, request("/v1/orders/7", None));
    assert_eq!(status, 401);
    eprintln!(
        "allocations: allowed API key {allowed}, public route {public}, denied (401) {denied}"
    );
    // The bounds as measured when this test was written; lower them when a change removes allocations.
    assert!(
        allowed <= ALLOWED,
        "an allowed request allocates {allowed} times (bound {ALLOWED})"
    );
    assert!(
        public <= PUBLIC,
        "a public route allocates {public} times (bound {PUBLIC})"
    );
    assert!(
        denied <= DENIED,
        "a denial allocates {denied} times (bound {DENIED})"
    );
}

/// Measured when this test was written (from 5, once the matched route became a shared `Arc<str>` rather than a
/// copy). Among them: the presented key's copy, and the grant's and the `Allowed` record's boxes in the extensions.
const ALLOWED: usize = 4;
/// Measured when this test was written (from 3).
const PUBLIC: usize = 2;
/// Measured when this test was written (from 19, once each kind's problem body and challenge were made once per
/// gate): what is left is the response's own header map and body.
const DENIED: usize = 3;
