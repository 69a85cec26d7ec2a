//! The whole layer: `Service::call` through the gate, polled to its response, next to the bare inner service
//! measured in the same run.
//!
//! Every request carries `ConnectionInfo { peer, tls: true }`, as the TLS acceptor sets it, in a header map sized as
//! hyper sizes it. Each iteration builds its request from prepared parts (a few small allocations), calls
//! `poll_ready` + `call`, polls the response future to completion with a no-op waker (a cache hit and the inner
//! `service_fn` are ready at once, so no executor is in the figures) and drops the response. The baselines build
//! and drop the same requests, so the gate's overhead is the difference.
//!
//! Variants, all through one gate whose audit sink is a no-op unless said otherwise:
//! - `bare_inner`: the inner service alone (the baseline); `bare_inner_with_key_header`: the same with the API-key
//!   variant's requests (random keys, unread);
//! - `public_route`: a public route through the gate (no credential work);
//! - `api_key_cached_random_1M`: an API key in `x-api-key`, keys drawn in a random order among 1,000,000 in a
//!   `MemoryKeyStore`, every one a cache hit (the cache is warmed first), beside `api_key_verify_only_random_1M`,
//!   the verifier alone on the same keys;
//! - `jwt_es256_cached`: an ES256 token minted by `TokenIssuer`, a verified-token cache hit, beside
//!   `jwt_authenticate_only`; `overhead/jwt_es256_cached_one_of_two_issuers`: the same token through an authenticator
//!   of two issuers, its own the second;
//! - `deny_missing_credential`: a protected route without a credential (401, rendered);
//! - `api_key_cached_random_1M_tracing_audit`: the API-key variant with the default `TracingAudit` and no
//!   `tracing` subscriber installed;
//! - `api_key_one_key` and `api_key_one_key_rate_limited_metrics`: one key, a cache hit, through a gate without a
//!   metrics recorder and a key without a rate limit, then through a gate recording metrics into the Prometheus
//!   recorder (`serve`'s) with a key under a rate limit it never reaches: what rate limiting and metrics add.
//!
//! `cargo bench --bench layer -- --warm-up-time 1 --measurement-time 3`
#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::similar_names
)]

use std::hint::black_box;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use criterion::{Bencher, Criterion, SamplingMode, criterion_group, criterion_main};
use http::header::{ACCEPT, AUTHORIZATION, HOST, HeaderMap, HeaderName, HeaderValue, USER_AGENT};
use http::{Request, Uri};
use scopegate::SecretRef;
use scopegate::credential::Authenticator;
use scopegate::credential::api_key::ApiKeyVerifier;
use scopegate::credential::jwt::JwtAuthenticator;
use scopegate::layer::{AuditSink, ScopeGateLayer};
use scopegate::network::ConnectionInfo;
use scopegate::policy::{Policy, Route, ScopeSet};
use tower::{Layer, service_fn};

#[path = "support/keys.rs"]
mod keys;
#[path = "../tests/support/minted.rs"]
mod minted;
#[path = "support/poll.rs"]
mod poll;
#[path = "support/service.rs"]
mod service;

use keys::{Fixture, fixture, warm_verifier};
use poll::ready;
use service::{NoAudit, call, hello};

const ISS: &str = "https://issuer.example";
const AUD: &str = "orders-api";

/// A request as hyper and a TLS acceptor hand it over: the header map sized for the headers received (hyper reserves
/// exactly the parsed count), the headers a typical client sends, the credential if any, and the connection's facts.
fn request(uri: &Uri, peer: IpAddr, credential: Option<(HeaderName, HeaderValue)>) -> Request<()> {
    let mut headers = HeaderMap::with_capacity(3 + usize::from(credential.is_some()));
    headers.insert(HOST, HeaderValue::from_static("api.example.com"));
    headers.insert(USER_AGENT, HeaderValue::from_static("curl/8.5.0"));
    headers.insert(ACCEPT, HeaderValue::from_static("*/*"));
    if let Some((name, value)) = credential {
        headers.insert(name, value);
    }
    let mut req = Request::new(());
    *req.uri_mut() = uri.clone();
    *req.headers_mut() = headers;
    req.extensions_mut().insert(ConnectionInfo {
        peer: Some(peer),
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

struct ApiKeys {
    /// Every key in a random order, back to back in one buffer read sequentially: each request's header value is
    /// copied from it in the untimed setup, fresh in the cache as a just-parsed request is, so that the figures
    /// show only the misses of the path being measured (not the harness's own, on 1M scattered allocations).
    fixture: Fixture,
    verifier: ApiKeyVerifier,
}

impl ApiKeys {
    /// The `i`-th presented key (cycling), as a freshly parsed header value.
    fn nth(&self, i: usize) -> HeaderValue {
        HeaderValue::from_str(self.fixture.nth(i)).unwrap()
    }
}

fn api_keys() -> ApiKeys {
    let fixture = fixture(&["orders:read", "invoices:read"], false);
    let verifier = warm_verifier(&fixture);
    ApiKeys { fixture, verifier }
}

/// An ES256 issuer `iss` of its own key: a token it minted (verified once, so remembered) as a bearer header, the
/// token, and an authenticator trusting it.
fn jwt(iss: &str) -> (HeaderValue, String, JwtAuthenticator) {
    let scopes = ["orders:read", "invoices:read"];
    let (authenticator, token) = minted::minted(iss, AUD, "svc-billing-7f3a9c21", &scopes);
    authenticator.verify(&token).expect("warm the token cache");
    let header = HeaderValue::from_str(&format!("Bearer {token}")).unwrap();
    (header, token, authenticator)
}

/// Two keys in a memory store of their own, one without a limit and one limited to a billion requests a second (a
/// limit it never reaches, so that every request pays the check and none is refused), and a verifier over a warm
/// cache.
fn limited_keys() -> (HeaderValue, HeaderValue, ApiKeyVerifier) {
    use scopegate::credential::api_key::{
        CacheConfig, KeyCache, KeyFormat, KeyIssuer, MemoryKeyStore, NewKey, Pepper, Peppers,
        RateLimit,
    };
    use std::sync::Arc;
    let store = Arc::new(MemoryKeyStore::new());
    let peppers = Peppers::single(Pepper::new(1, vec![7; 32]).unwrap());
    let issuer = KeyIssuer::new(
        store.clone(),
        KeyFormat::default(),
        peppers.clone(),
        Arc::new(scopegate::SystemClock),
    );
    let scopes = ScopeSet::parse(["orders:read"]).unwrap();
    let issue = |request: NewKey| {
        let issued = ready(issuer.issue(request)).unwrap();
        HeaderValue::from_str(issued.key().expose_str().unwrap()).unwrap()
    };
    let plain = issue(NewKey::new("plain", scopes.clone()));
    let limit: RateLimit = "1000000000/s".parse().unwrap();
    let limited = issue(NewKey::new("limited", scopes).rate_limit(limit));
    let cache = Arc::new(KeyCache::new(
        store,
        CacheConfig::default().ttl(Duration::from_secs(3600)),
    ));
    let verifier = ApiKeyVerifier::builder(peppers, cache).build();
    for key in [&plain, &limited] {
        ready(verifier.verify(key.to_str().unwrap())).unwrap();
    }
    (plain, limited, verifier)
}

/// Iterations per block of [`interleaved`].
const BLOCK: u64 = 16;

/// The time `subject` takes beyond `baseline`, measured in alternating blocks of [`BLOCK`] calls each (the order
/// swapped every block), so that both see the same machine at the same moment: on a shared machine, two variants
/// measured seconds apart differ by more than the overhead measured here. Criterion reports the difference per
/// iteration.
fn interleaved(b: &mut Bencher<'_>, mut baseline: impl FnMut(), mut subject: impl FnMut()) {
    b.iter_custom(|iters| {
        let mut extra: i128 = 0;
        let mut done = 0;
        let mut block = 0u64;
        while done < iters {
            let n = BLOCK.min(iters - done);
            let timed = |f: &mut dyn FnMut()| {
                let start = Instant::now();
                for _ in 0..n {
                    f();
                }
                start.elapsed().as_nanos().cast_signed()
            };
            if block.is_multiple_of(2) {
                let base = timed(&mut baseline);
                extra += timed(&mut subject) - base;
            } else {
                let measured = timed(&mut subject);
                extra += measured - timed(&mut baseline);
            }
            done += n;
            block += 1;
        }
        // A sample whose difference came out at or below zero (the machine's noise exceeding a small overhead)
        // reports one nanosecond for all its iterations: criterion refuses a zero sample, and with it the whole row.
        Duration::from_nanos(u64::try_from(extra.max(1)).unwrap_or(u64::MAX))
    });
}

fn gate(keys: &ApiKeys, jwt: &JwtAuthenticator, audit: impl AuditSink) -> ScopeGateLayer {
    ScopeGateLayer::builder(policy())
        .api_keys(keys.verifier.clone())
        .jwt(jwt.clone())
        .audit(audit)
        .build()
        .unwrap()
}

#[allow(clippy::too_many_lines)] // one linear script: the fixture, then each measurement in order
fn bench(c: &mut Criterion) {
    let keys = api_keys();
    // Several issuers: the token's issuer is the second of two entries, so a cache hit asks the other one first.
    let (_, _, other) = jwt("https://other-issuer.example");
    let (bearer, token, jwt) = jwt(ISS);
    let two_issuers = JwtAuthenticator::by_issuer([other, jwt.clone()]).unwrap();
    let peer: IpAddr = "198.51.100.7".parse().unwrap();
    let health: Uri = "/health".parse().unwrap();
    let order: Uri = "/v1/orders/42".parse().unwrap();
    let key_header = HeaderName::from_static("x-api-key");

    let mut bare = service_fn(hello);
    let mut gated = gate(&keys, &jwt, NoAudit).layer(service_fn(hello));
    let mut traced = gate(&keys, &jwt, scopegate::layer::TracingAudit).layer(service_fn(hello));
    let mut two = gate(&keys, &two_issuers, NoAudit).layer(service_fn(hello));

    // Check every variant's outcome once before timing it.
    assert_eq!(
        call(&mut bare, request(&health, peer, None))
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        call(&mut gated, request(&health, peer, None))
            .unwrap()
            .status(),
        200
    );
    let req = request(&order, peer, Some((key_header.clone(), keys.nth(0))));
    assert_eq!(call(&mut gated, req).unwrap().status(), 200);
    let req = request(&order, peer, Some((AUTHORIZATION, bearer.clone())));
    assert_eq!(call(&mut gated, req).unwrap().status(), 200);
    let req = request(&order, peer, Some((AUTHORIZATION, bearer.clone())));
    assert_eq!(call(&mut two, req).unwrap().status(), 200);
    assert_eq!(
        call(&mut gated, request(&order, peer, None))
            .unwrap()
            .status(),
        401
    );

    let mut group = c.benchmark_group("layer");

    // Each iteration builds its request (a few small allocations, freed in the same iteration as a server frees
    // them), so the baselines include the same building and dropping: the overhead of the gate is the difference.
    group.bench_function("bare_inner", |b| {
        b.iter(|| call(&mut bare, request(&health, peer, None)));
    });

    group.bench_function("public_route", |b| {
        b.iter(|| call(&mut gated, request(&health, peer, None)));
    });

    // The next key of the random sequence; a shared counter, so that every bench below draws from it.
    let drawn = std::cell::Cell::new(0usize);
    let keyed = |uri: &Uri| {
        drawn.set(drawn.get().wrapping_add(1));
        request(uri, peer, Some((key_header.clone(), keys.nth(drawn.get()))))
    };
    let bearer_request = || request(&order, peer, Some((AUTHORIZATION, bearer.clone())));

    // The baseline of the API-key variant: the same requests (random keys, unread) to the bare service.
    group.bench_function("bare_inner_with_key_header", |b| {
        b.iter(|| call(&mut bare, keyed(&order)));
    });

    group.bench_function("api_key_verify_only_random_1M", |b| {
        b.iter(|| {
            let req = keyed(&order);
            let secret = SecretRef::new(req.headers()["x-api-key"].as_bytes());
            ready(keys.verifier.authenticate(black_box(secret)).outcome()).is_ok()
        });
    });

    group.bench_function("api_key_cached_random_1M", |b| {
        b.iter(|| call(&mut gated, keyed(&order)));
    });

    group.bench_function("jwt_authenticate_only", |b| {
        b.iter(|| {
            let secret = SecretRef::new(token.as_bytes());
            ready(Authenticator::authenticate(&jwt, black_box(secret)).outcome()).is_ok()
        });
    });

    group.bench_function("jwt_es256_cached", |b| {
        b.iter(|| call(&mut gated, bearer_request()));
    });

    group.bench_function("deny_missing_credential", |b| {
        b.iter(|| call(&mut gated, request(&order, peer, None)));
    });

    group.bench_function("api_key_cached_random_1M_tracing_audit", |b| {
        b.iter(|| call(&mut traced, keyed(&order)));
    });

    // The targets' figures: each path's cost beyond its baseline, the two interleaved (see `interleaved`). Every
    // sample gets the same, large number of iterations: criterion's default first samples run a handful, whose
    // difference can come out zero or below on a noisy machine, which it cannot report.
    group.sampling_mode(SamplingMode::Flat);
    group.bench_function("overhead/public_route", |b| {
        interleaved(
            b,
            || drop(black_box(call(&mut bare, request(&health, peer, None)))),
            || drop(black_box(call(&mut gated, request(&health, peer, None)))),
        );
    });
    group.bench_function("overhead/api_key_verifier_alone_random_1M", |b| {
        interleaved(
            b,
            || drop(black_box(keyed(&order))),
            || {
                let req = keyed(&order);
                let secret = SecretRef::new(req.headers()["x-api-key"].as_bytes());
                black_box(ready(keys.verifier.authenticate(black_box(secret)).outcome()).is_ok());
            },
        );
    });
    group.bench_function("overhead/api_key_cached_random_1M", |b| {
        interleaved(
            b,
            || drop(black_box(call(&mut bare, keyed(&order)))),
            || drop(black_box(call(&mut gated, keyed(&order)))),
        );
    });
    group.bench_function("overhead/jwt_authenticator_alone", |b| {
        interleaved(
            b,
            || drop(black_box(bearer_request())),
            || {
                let req = bearer_request();
                let token = &req.headers()[AUTHORIZATION].as_bytes()[7..];
                let outcome = Authenticator::authenticate(&jwt, black_box(SecretRef::new(token)));
                black_box(ready(outcome.outcome()).is_ok());
            },
        );
    });
    group.bench_function("overhead/jwt_es256_cached", |b| {
        interleaved(
            b,
            || drop(black_box(call(&mut bare, bearer_request()))),
            || drop(black_box(call(&mut gated, bearer_request()))),
        );
    });
    group.bench_function("overhead/jwt_es256_cached_one_of_two_issuers", |b| {
        interleaved(
            b,
            || drop(black_box(call(&mut bare, bearer_request()))),
            || drop(black_box(call(&mut two, bearer_request()))),
        );
    });
    group.bench_function("overhead/deny_missing_credential", |b| {
        interleaved(
            b,
            || drop(black_box(call(&mut bare, request(&order, peer, None)))),
            || drop(black_box(call(&mut gated, request(&order, peer, None)))),
        );
    });
    // The default sink without a subscriber, beside `overhead/public_route` (an empty sink): the same figure if
    // audit costs nothing when nobody listens. (Measured against the bare service, not against the empty-sink
    // gate: a difference that is zero or negative is not a time criterion can report.)
    group.bench_function("overhead/public_route_tracing_audit", |b| {
        interleaved(
            b,
            || drop(black_box(call(&mut bare, request(&health, peer, None)))),
            || drop(black_box(call(&mut traced, request(&health, peer, None)))),
        );
    });

    group.sampling_mode(SamplingMode::Auto);

    // Rate limits and metrics: one key each, in a store of their own, so that both are cache hits on a hot line.
    let (plain_key, limited_key, small) = limited_keys();
    let mut plain = ScopeGateLayer::builder(policy())
        .api_keys(small.clone())
        .audit(NoAudit)
        .build()
        .unwrap()
        .layer(service_fn(hello));
    let one = |key: &HeaderValue| request(&order, peer, Some((key_header.clone(), key.clone())));
    let answer = call(&mut plain, one(&plain_key)).unwrap();
    assert!(answer.headers().get("ratelimit").is_none());
    // Each of the two alone, for attribution: the limit without a recorder (this gate decides before one is set).
    let mut limited_only = ScopeGateLayer::builder(policy())
        .api_keys(small.clone())
        .audit(NoAudit)
        .build()
        .unwrap()
        .layer(service_fn(hello));
    let answer = call(&mut limited_only, one(&limited_key)).unwrap();
    assert!(answer.headers().get("ratelimit").is_some());
    // The recorder `serve` installs, set before the metered gate's first decision (every gate above has decided
    // already, and keeps the no-op handles it took then).
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    metrics::set_global_recorder(recorder).unwrap();
    let mut metered = ScopeGateLayer::builder(policy())
        .api_keys(small.clone())
        .audit(NoAudit)
        .build()
        .unwrap()
        .layer(service_fn(hello));
    let answer = call(&mut metered, one(&limited_key)).unwrap();
    assert!(answer.headers().get("ratelimit").is_some());
    assert!(handle.render().contains("scopegate_decisions_total"));
    group.bench_function("api_key_one_key", |b| {
        b.iter(|| call(&mut plain, one(&plain_key)));
    });
    group.bench_function("api_key_one_key_rate_limited", |b| {
        b.iter(|| call(&mut limited_only, one(&limited_key)));
    });
    group.bench_function("api_key_one_key_metrics", |b| {
        b.iter(|| call(&mut metered, one(&plain_key)));
    });
    group.bench_function("api_key_one_key_rate_limited_metrics", |b| {
        b.iter(|| call(&mut metered, one(&limited_key)));
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
