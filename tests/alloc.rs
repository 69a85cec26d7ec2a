//! Heap allocations on the gate's request path, counted by a global allocator: an allowed API-key request (a cache
//! hit), an allowed JWT (a remembered token, of one issuer and of one of two), an allowed public route, and a denied
//! request (401, no credential). Each count is pinned: a change that adds an allocation fails here, and one that
//! removes some lowers the bound in the same commit.
//!
//! Counted: everything between handing the request to the service and dropping the response (the request is built
//! before counting starts; the service and its response future run on this thread, polled without an executor),
//! less the inner service's own allocations, counted the same way. The bound of an allowed request is the target
//! itself: no more than putting a grant into the same request's extensions takes.
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

#[cfg(feature = "jwt")]
#[path = "support/minted.rs"]
mod minted;

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

/// The inner service answers as axum's hello world does: a body and its `Content-Type`, so the response's header
/// map exists before the gate adds `Strict-Transport-Security` to it (as on every real response).
async fn hello(_req: Request<()>) -> Result<Response<Full<Bytes>>, Infallible> {
    let mut response = Response::new(Full::new(Bytes::from_static(b"hello")));
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    Ok(response)
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

fn policy() -> Policy {
    Policy::builder()
        .route(Route::get("/health").public())
        .route(Route::get("/v1/orders/{id}").require_all(["orders:read"]))
        .build()
        .unwrap()
}

/// One request through the gate: the status and the allocations, the response dropped inside the count.
fn count<S, B>(service: &mut S, req: Request<()>) -> (usize, u16)
where
    S: Service<Request<()>, Response = Response<B>>,
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
    let layer = ScopeGateLayer::builder(policy())
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
    // The inner service's own allocations (its response), counted the same way, are not the gate's.
    let mut bare = tower::service_fn(hello);
    let (inner, status) = count(&mut bare, request("/v1/orders/7", Some(&key)));
    assert_eq!(status, 200);
    let (allowed, status) = count(&mut service, request("/v1/orders/7", Some(&key)));
    assert_eq!(status, 200);
    let allowed = allowed - inner;
    let (public, status) = count(&mut service, request("/health", None));
    assert_eq!(status, 200);
    let public = public - inner;
    let (denied, status) = count(&mut service, request("/v1/orders/7", None));
    assert_eq!(status, 401);
    // The floor of an authenticated allow: putting a grant into the same request's extensions.
    let grant = scopegate::testing::TestGrant::api_key("k").build().unwrap();
    let mut req = request("/v1/orders/7", Some(&key));
    let (grant_insert, previous) = allocations(|| req.extensions_mut().insert(grant));
    assert!(previous.is_none());
    eprintln!(
        "allocations: allowed API key {allowed} (inserting a grant: {grant_insert}), public route {public}, \
         denied (401) {denied}"
    );
    assert!(
        allowed <= grant_insert,
        "an allowed request allocates {allowed} times, more than inserting its grant does ({grant_insert})"
    );
    // A bearer token the JWT authenticator remembers: of its one issuer, and of one of two issuers (found without
    // reading the token's payload to choose the issuer).
    #[cfg(feature = "jwt")]
    for (label, authenticator, token) in remembered_tokens() {
        let layer = ScopeGateLayer::builder(policy())
            .jwt(authenticator)
            .audit(NoAudit)
            .build()
            .unwrap();
        let mut service = layer.layer(tower::service_fn(hello));
        let bearer = HeaderValue::from_str(&format!("Bearer {token}")).unwrap();
        let with_bearer = || {
            let mut req = request("/v1/orders/7", None);
            req.headers_mut()
                .insert(http::header::AUTHORIZATION, bearer.clone());
            req
        };
        for _ in 0..3 {
            assert_eq!(count(&mut service, with_bearer()).1, 200, "{label}");
        }
        let (jwt_allowed, status) = count(&mut service, with_bearer());
        assert_eq!(status, 200, "{label}");
        let jwt_allowed = jwt_allowed - inner;
        eprintln!("allocations: allowed JWT, {label}: {jwt_allowed}");
        assert!(
            jwt_allowed <= ALLOWED,
            "an allowed JWT ({label}) allocates {jwt_allowed} times (bound {ALLOWED})"
        );
    }
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

/// Measured when this test was written: the grant's box in the extensions, which carries the decision (from 5: 4
/// once the matched route became a shared `Arc<str>`, then 1 once the credential was borrowed from its header rather
/// than copied, and the decision travelled inside the grant rather than in a second extension).
const ALLOWED: usize = 1;
/// Measured when this test was written: the `Allowed` record's box in the extensions (from 3).
const PUBLIC: usize = 1;
/// Measured when this test was written: the denial response's header map (its index table and its entries); the
/// body and the header values are prepared once per gate and shared (from 19: 3 once each kind's problem body and
/// challenge were made once per gate, then 2 once the path check stopped collecting the segments).
const DENIED: usize = 2;

/// Two issuers' authenticators, each trusting its own ES256 key, and a token of each. Returns the first issuer's
/// authenticator alone with its token, and both combined with the second's token.
#[cfg(feature = "jwt")]
fn remembered_tokens() -> Vec<(
    &'static str,
    scopegate::credential::jwt::JwtAuthenticator,
    String,
)> {
    use minted::minted;
    let issue = |iss: &str| minted(iss, "orders-api", "svc", &["orders:read"]);
    let (first, first_token) = issue("https://one.example");
    let (second, second_token) = issue("https://two.example");
    let both =
        scopegate::credential::jwt::JwtAuthenticator::by_issuer([first.clone(), second]).unwrap();
    vec![
        ("one issuer", first, first_token),
        ("one of two issuers", both, second_token),
    ]
}
