//! A hello-world axum server on loopback for the throughput comparison of `benches/wrk.sh`, in one of five
//! variants:
//!
//! - `none`: no authorization at all (the baseline);
//! - `scopegate`: behind the scopegate layer, the route requiring a scope that an API key grants, the key verified
//!   through the cache of a `MemoryKeyStore` holding 100,000 keys. Plaintext is allowed (`danger_allow_plaintext`)
//!   so that TLS cost does not swamp the comparison: never do this outside a benchmark;
//! - `tower-http`: tower-http's `ValidateRequestHeaderLayer::bearer`, a plain string compare of the header (the
//!   reference bearer check of the throughput target);
//! - `verifier`: the floor that storing keys only as keyed hashes sets: tower-http's `ValidateRequestHeaderLayer`
//!   with a check that strips `Bearer `, verifies the key with the same verifier as `scopegate` (parse, keyed hash,
//!   cache lookup, constant-time compare) and inserts the grant into the request's extensions, else answers 401.
//!   No route, scope, transport, throttle or audit step: what the gate adds beyond this is the gate's own cost;
//! - `identity`: a layer that does nothing (tower's `MapResponseLayer` with `|r| r`), the control: how far a binary
//!   whose only difference from `none` is one more layer's code layout moves the figures on this machine.
//!
//! All five serve through the same accept loop (`scopegate::serve::serve_plaintext`, hyper-util's auto HTTP/1.1 +
//! HTTP/2 connection, which marks each request with its peer) on a current-thread runtime, and all five expect
//! the same request: `GET /v1/orders/42` with `Authorization: Bearer <key>`. The key is printed on the first line of
//! stdout; the address on the second.
//!
//! `cargo run --release --features server --example bench_server -- scopegate 127.0.0.1:8080`
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use axum::Router;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use http::Request;
use hyper::body::Incoming;
use scopegate::credential::api_key::{
    ApiKeyVerifier, CacheConfig, KeyCache, KeyFormat, KeyIssuer, KeyStore, MemoryKeyStore, NewKey,
    Pepper, Peppers,
};
use scopegate::layer::{AuditEvent, AuditSink, ScopeGateLayer};
use scopegate::policy::{Policy, Route, ScopeSet};
use scopegate::{Clock, SystemClock};
use tower::Layer;
use tower_http::validate_request::ValidateRequestHeaderLayer;

const KEYS: usize = 100_000;

/// Audit events are discarded: the comparison is about the gate, not a log pipeline.
struct NoAudit;

impl AuditSink for NoAudit {
    fn record(&self, _event: &AuditEvent<'_>) {}
}

/// Polls a future that is ready at once (issuing into the memory store).
fn ready<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    let mut cx = Context::from_waker(Waker::noop());
    loop {
        if let Poll::Ready(out) = future.as_mut().poll(&mut cx) {
            return out;
        }
    }
}

/// `KEYS` keys in a memory store behind a cache; returns the verifier and one of the keys.
fn api_keys() -> (ApiKeyVerifier, String) {
    let store = Arc::new(MemoryKeyStore::new());
    let peppers = Peppers::single(Pepper::new(1, vec![0x5c; 32]).unwrap());
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let issuer = KeyIssuer::new(
        store.clone() as Arc<dyn KeyStore>,
        KeyFormat::default(),
        peppers.clone(),
        clock.clone(),
    );
    let scopes = ScopeSet::parse(["orders:read"]).unwrap();
    let mut presented = String::new();
    for i in 0..KEYS {
        let new_key = ready(issuer.issue(NewKey::new(format!("key {i}"), scopes.clone()))).unwrap();
        if i == KEYS / 2 {
            new_key
                .key()
                .expose_str()
                .unwrap()
                .clone_into(&mut presented);
        }
    }
    let cache = Arc::new(KeyCache::new(
        store as Arc<dyn KeyStore>,
        CacheConfig::default().ttl(Duration::from_secs(3600)),
    ));
    (
        ApiKeyVerifier::builder(peppers, cache).clock(clock).build(),
        presented,
    )
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let variant = args.next().unwrap_or_else(|| "none".to_owned());
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:8080".to_owned());
    let router = Router::new().route("/v1/orders/{id}", get(|| async { "Hello, World!" }));
    let (verifier, key) = api_keys();
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!("{key}");
    println!("{}", listener.local_addr()?);
    let shutdown = std::future::pending();
    match variant.as_str() {
        "none" => scopegate::serve::serve_plaintext(listener, router, shutdown).await,
        "scopegate" => {
            let policy = Policy::builder()
                .route(Route::get("/v1/orders/{id}").require_all(["orders:read"]))
                .build()
                .unwrap();
            let gate = ScopeGateLayer::builder(policy)
                .api_keys(verifier)
                .danger_allow_plaintext()
                .audit(NoAudit)
                .build()
                .unwrap();
            scopegate::serve::serve_plaintext(listener, gate.layer(router), shutdown).await
        }
        "tower-http" => {
            // Deprecated upstream as "too basic to be useful in real applications": it is exactly the reference
            // bearer check of the throughput target (a string compare of the header), which this comparison needs.
            #[allow(deprecated)]
            let check = ValidateRequestHeaderLayer::bearer(&key);
            scopegate::serve::serve_plaintext(listener, check.layer(router), shutdown).await
        }
        "verifier" => {
            // This check cannot wait for a store read: the key is verified once here, so that the cache holds it
            // (a miss would answer 401; wrk.sh checks for 200 before loading).
            ready(verifier.verify(&key)).unwrap();
            #[allow(clippy::result_large_err)] // the signature tower-http's check asks for
            let check = ValidateRequestHeaderLayer::custom(
                move |req: &mut Request<Incoming>| -> Result<(), Response> {
                    let key = req
                        .headers()
                        .get(http::header::AUTHORIZATION)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.strip_prefix("Bearer "));
                    match key.and_then(|key| verifier.verify_cached(key)) {
                        Some(Ok(grant)) => {
                            req.extensions_mut().insert(grant);
                            Ok(())
                        }
                        _ => Err(http::StatusCode::UNAUTHORIZED.into_response()),
                    }
                },
            );
            scopegate::serve::serve_plaintext(listener, check.layer(router), shutdown).await
        }
        "identity" => {
            let nothing = tower::util::MapResponseLayer::new(|r: axum::response::Response| r);
            scopegate::serve::serve_plaintext(listener, nothing.layer(router), shutdown).await
        }
        other => {
            eprintln!(
                "unknown variant {other:?}: none, scopegate, tower-http, verifier or identity"
            );
            std::process::exit(2);
        }
    }
}
