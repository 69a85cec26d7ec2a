//! Optional authentication, per-key rate limits, shadow policies and gRPC-web denials, through the layer.

use std::sync::Arc;
use std::time::Duration;

use scopegate::credential::api_key::{
    ApiKeyVerifier, CacheConfig, KeyCache, KeyFormat, KeyIssuer, MemoryKeyStore, NewKey, Pepper,
    Peppers, RateLimit,
};
use scopegate::layer::ThrottleConfig;
use scopegate::policy::{AllowKind, Decision, Policy, Route, ScopeSet};
use scopegate::testing::Probe;
use scopegate::{Clock, SystemClock};

use crate::api_keys::TestStore;
use crate::layer::{Answer, get, harness_with, policy};

const GOOD: &str = "sg_goodkey";
const READER: &str = "sg_readonly";
const REVOKED: &str = "sg_revoked";

fn optional_policy() -> Policy {
    Policy::builder()
        .route(Route::get("/health").public())
        .route(
            Route::get("/v1/catalog")
                .require_all(["catalog:read"])
                .optional_auth(),
        )
        .route(
            Route::get("/v1/nearby")
                .require_all(["catalog:read"])
                .allow_ips(["10.0.0.0/8"])
                .optional_auth(),
        )
        .route(Route::get("/v1/invoices/{id}").require_all(["invoices:read"]))
        .build()
        .unwrap()
}

#[tokio::test]
async fn an_optional_route_allows_anonymous_callers_and_checks_credentials() {
    let mut h = harness_with(optional_policy(), |b| b);
    // No credential: allowed as anonymous, no grant for the handler.
    let a = h.send(get("/v1/catalog")).await;
    assert_eq!(
        (a.status.as_u16(), a.body.as_str()),
        (200, "hello anonymous")
    );
    // A credential is checked as anywhere: valid with the scope, allowed; without it, 403; bad, 401.
    let a = h.send(get("/v1/catalog").key(GOOD)).await;
    assert_eq!(a.status, 403);
    assert_eq!(a.code(), "insufficient_scope");
    let a = h.send(get("/v1/catalog").key(REVOKED)).await;
    assert_eq!(a.status, 401);
    // The twin on a required route: no credential is 401.
    let a = h.send(get("/v1/invoices/7")).await;
    assert_eq!(a.status, 401);
    assert_eq!(h.calls(), 1);
    // The route's allowlist applies to anonymous callers too.
    let a = h.send(get("/v1/nearby")).await;
    assert_eq!((a.status.as_u16(), a.code()), (403, "forbidden".to_owned()));
    let a = h.send(get("/v1/nearby").from("10.1.2.3:5000")).await;
    assert_eq!(a.status, 200);
    let reasons = h.audit.field("reason");
    assert_eq!(
        reasons,
        [
            "anonymous",
            "insufficient_scope",
            "revoked_credential",
            "missing_credential",
            "ip_not_allowed",
            "anonymous"
        ]
    );
    assert!(h.audit.events()[0]["credential_id"].is_null());
}

#[tokio::test]
async fn failed_credentials_on_an_optional_route_count_towards_the_throttle() {
    let mut h = harness_with(optional_policy(), |b| {
        b.throttle(
            ThrottleConfig::per_period(Duration::from_secs(60), 2.try_into().unwrap()).unwrap(),
        )
    });
    for _ in 0..3 {
        assert_eq!(h.send(get("/v1/catalog").key(REVOKED)).await.status, 401);
    }
    // Locked out: even the anonymous request waits (step 4 comes before step 5) ...
    let a = h.send(get("/v1/catalog")).await;
    assert_eq!((a.status.as_u16(), a.code()), (429, "throttled".to_owned()));
    // ... while another client is served anonymously.
    let a = h.send(get("/v1/catalog").from("192.0.2.9:1000")).await;
    assert_eq!(a.status, 200);
}

#[test]
fn optional_authentication_is_refused_where_it_would_widen_access() {
    let bound = Policy::builder()
        .route(
            Route::get("/v1/tenants/{tenant}/data")
                .require_all(["data:read"])
                .bind("tenant", "tenant")
                .optional_auth(),
        )
        .build()
        .unwrap_err()
        .to_string();
    assert!(
        bound.contains("bind") && bound.contains("optional"),
        "{bound}"
    );
    let public = Policy::builder()
        .route(Route::get("/health").public().optional_auth())
        .build()
        .unwrap_err()
        .to_string();
    assert!(public.contains("auth"), "{public}");
    // Through the gate file: the field, its values, and its errors.
    let file = |route: &str| {
        scopegate::config::GateFile::from_toml_str(&format!(
            "[[route]]\npath = \"/v1/catalog\"\nmethods = [\"GET\"]\nrequire = {{ all = [\"catalog:read\"] }}\n{route}"
        ))
    };
    let policy = file("auth = \"optional\"\n").unwrap().policy().unwrap();
    let anonymous = policy.check(&Probe::get("/v1/catalog"));
    assert!(
        matches!(
            anonymous,
            Decision::Allow {
                kind: AllowKind::Anonymous,
                ..
            }
        ),
        "{anonymous:?}"
    );
    let required = file("auth = \"required\"\n").unwrap().policy().unwrap();
    assert_eq!(
        required.check(&Probe::get("/v1/catalog")).reason(),
        "missing_credential"
    );
    let err = file("auth = \"maybe\"\n").unwrap_err().to_string();
    assert!(err.contains("line 5") && err.contains("maybe"), "{err}");
}

/// Real API keys in a counting memory store, behind a cache with `ttl`.
struct Keys {
    store: Arc<TestStore>,
    issuer: KeyIssuer,
    verifier: ApiKeyVerifier,
}

fn keys(ttl: Duration) -> Keys {
    let store = TestStore::new(Arc::new(MemoryKeyStore::new()));
    let peppers = Peppers::single(Pepper::new(1, vec![3; 32]).unwrap());
    let cache = Arc::new(KeyCache::new(
        store.clone(),
        CacheConfig::default().ttl(ttl),
    ));
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    Keys {
        issuer: KeyIssuer::new(store.clone(), KeyFormat::default(), peppers.clone(), clock),
        verifier: ApiKeyVerifier::builder(peppers, cache)
            .last_used(None)
            .build(),
        store,
    }
}

impl Keys {
    async fn issue(&self, scopes: &[&str], limit: Option<&str>) -> String {
        let mut request = NewKey::new("k", ScopeSet::parse(scopes).unwrap());
        if let Some(limit) = limit {
            request = request.rate_limit(limit.parse::<RateLimit>().unwrap());
        }
        let issued = self.issuer.issue(request).await.unwrap();
        issued.key().expose_str().unwrap().to_owned()
    }
}

fn header<'a>(a: &'a Answer, name: &str) -> Option<&'a str> {
    a.headers.get(name).map(|v| v.to_str().unwrap())
}

#[tokio::test]
async fn a_key_past_its_rate_limit_gets_429_and_other_keys_are_not_slowed() {
    let keys = keys(Duration::from_secs(30));
    let limited = keys.issue(&["invoices:read"], Some("3/m")).await;
    let neighbour = keys.issue(&["invoices:read"], Some("3/m")).await;
    let unlimited = keys.issue(&["invoices:read"], None).await;
    let verifier = keys.verifier.clone();
    let mut h = harness_with(policy(), move |b| b.api_keys(verifier));
    for remaining in [2, 1, 0] {
        let a = h.send(get("/v1/invoices/7").key(&limited)).await;
        assert_eq!(a.status, 200);
        assert_eq!(header(&a, "ratelimit-policy"), Some("\"key\";q=3;w=60"));
        let state = header(&a, "ratelimit").unwrap();
        assert!(
            state.starts_with(&format!("\"key\";r={remaining};t=")),
            "{state}"
        );
    }
    let a = h.send(get("/v1/invoices/7").key(&limited)).await;
    assert_eq!(
        (a.status.as_u16(), a.code()),
        (429, "rate_limited".to_owned())
    );
    let retry: u64 = header(&a, "retry-after").unwrap().parse().unwrap();
    assert!((1..=20).contains(&retry), "{retry}");
    assert_eq!(header(&a, "ratelimit-policy"), Some("\"key\";q=3;w=60"));
    assert!(
        header(&a, "ratelimit")
            .unwrap()
            .starts_with("\"key\";r=0;t=")
    );
    assert!(a.headers.get("www-authenticate").is_none());
    // Counted per key, never per client: the same key from another address is past its limit too.
    let a = h
        .send(get("/v1/invoices/7").key(&limited).from("203.0.113.9:4000"))
        .await;
    assert_eq!(
        (a.status.as_u16(), a.code()),
        (429, "rate_limited".to_owned())
    );
    // gRPC gets code 8.
    let a = h
        .send(
            get("/v1/invoices/7")
                .key(&limited)
                .header("content-type", "application/grpc"),
        )
        .await;
    assert_eq!(header(&a, "grpc-status"), Some("8"));
    // Another key with the same limit, and a key without one, are not slowed; the latter has no headers.
    let a = h.send(get("/v1/invoices/7").key(&neighbour)).await;
    assert_eq!(a.status, 200);
    let a = h.send(get("/v1/invoices/7").key(&unlimited)).await;
    assert_eq!(a.status, 200);
    assert!(a.headers.get("ratelimit").is_none() && a.headers.get("ratelimit-policy").is_none());
    assert_eq!(h.calls(), 5);
    let last = h.audit.events();
    assert_eq!(last[3]["reason"], "rate_limited");
    assert_eq!(last[3]["status"], 429);
}

#[tokio::test]
async fn denied_requests_never_count_against_a_rate_limit() {
    let keys = keys(Duration::from_secs(30));
    let limited = keys.issue(&["invoices:read"], Some("2/h")).await;
    let verifier = keys.verifier.clone();
    let mut h = harness_with(policy(), move |b| b.api_keys(verifier));
    // Refused for scope (403) five times: none of them counts.
    for _ in 0..5 {
        let a = h.send(get("/v1/tenants/acme/data").key(&limited)).await;
        assert_eq!(a.status, 403);
        assert!(a.headers.get("ratelimit").is_none());
    }
    for _ in 0..2 {
        assert_eq!(
            h.send(get("/v1/invoices/7").key(&limited)).await.status,
            200
        );
    }
    assert_eq!(
        h.send(get("/v1/invoices/7").key(&limited)).await.status,
        429
    );
}

/// A stricter candidate: invoices need `invoices:admin`, `/health` is gone, and `/v1/catalog` is protected.
fn candidate() -> Policy {
    Policy::builder()
        .route(Route::get("/v1/invoices/{id}").require_all(["invoices:admin"]))
        .route(Route::get("/v1/catalog").require_all(["catalog:read"]))
        .build()
        .unwrap()
}

#[tokio::test]
async fn a_shadow_policy_is_audited_and_never_changes_a_response_byte() {
    let requests = || {
        vec![
            get("/health"),
            get("/v1/invoices/7").key(READER),
            get("/v1/invoices/7").key(GOOD),
            get("/v1/invoices/7").key(REVOKED),
            get("/v1/invoices/7"),
            get("/v1/tenants/globex/data").key(GOOD),
            get("/v1/invoices/7")
                .key(READER)
                .header("content-type", "application/grpc"),
        ]
    };
    let mut plain = harness_with(policy(), |b| b);
    let mut shadowed = harness_with(policy(), |b| b.shadow(candidate()));
    for (a, b) in requests().into_iter().zip(requests()) {
        let (x, y) = (plain.send(a).await, shadowed.send(b).await);
        assert_eq!(x.status, y.status);
        assert_eq!(x.headers, y.headers);
        assert_eq!(x.bytes, y.bytes);
    }
    assert_eq!(plain.calls(), shadowed.calls());
    let shadow: Vec<(String, String, String)> = shadowed
        .audit
        .events()
        .iter()
        .map(|e| {
            (
                e["reason"].as_str().unwrap().to_owned(),
                e["shadow_decision"].as_str().unwrap().to_owned(),
                e["shadow_reason"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let s = |a: &str, b: &str, c: &str| (a.to_owned(), b.to_owned(), c.to_owned());
    assert_eq!(
        shadow,
        [
            s("public", "deny", "missing_credential"),
            s("granted", "deny", "insufficient_scope"),
            // `invoices:*` covers the candidate's `invoices:admin`.
            s("granted", "allow", "granted"),
            s("revoked_credential", "deny", "revoked_credential"),
            s("missing_credential", "deny", "missing_credential"),
            s("resource_not_permitted", "deny", "no_policy"),
            s("granted", "deny", "insufficient_scope"),
        ]
    );
    // Without a shadow policy, events carry no shadow fields.
    assert!(
        plain
            .audit
            .events()
            .iter()
            .all(|e| e.get("shadow_decision").is_none())
    );
}

#[tokio::test]
async fn the_shadow_never_reads_the_store_a_second_time() {
    // Every verification is a store read (TTL 0): one per request, with or without the shadow.
    let keys = keys(Duration::ZERO);
    let key = keys.issue(&["invoices:read", "catalog:read"], None).await;
    let verifier = keys.verifier.clone();
    let enforced = Policy::builder()
        .route(Route::get("/v1/invoices/{id}").require_all(["invoices:read"]))
        .route(Route::get("/v1/catalog").public())
        .build()
        .unwrap();
    let mut h = harness_with(enforced, move |b| b.api_keys(verifier).shadow(candidate()));
    let a = h.send(get("/v1/invoices/7").key(&key)).await;
    assert_eq!(a.status, 200);
    assert_eq!(keys.store.gets(), 1);
    // The enforced route is public, the candidate's protected: the key is not in the cache (TTL 0), so the
    // candidate is decided without it, as unavailable, and the store is not read.
    let a = h.send(get("/v1/catalog").key(&key)).await;
    assert_eq!(a.status, 200);
    assert_eq!(keys.store.gets(), 1);
    let events = h.audit.events();
    assert_eq!(events[0]["shadow_reason"], "insufficient_scope");
    assert_eq!(
        (
            events[1]["reason"].as_str(),
            events[1]["shadow_reason"].as_str()
        ),
        (Some("public"), Some("unavailable"))
    );
}

#[tokio::test]
async fn grpc_web_denials_carry_the_status_in_the_body() {
    use base64::Engine as _;
    let mut h = harness_with(policy(), |b| b);
    let a = h
        .send(get("/v1/invoices/7").header("content-type", "application/grpc-web+proto"))
        .await;
    assert_eq!(a.status, 200);
    assert_eq!(
        header(&a, "content-type"),
        Some("application/grpc-web+proto")
    );
    assert!(a.headers.get("grpc-status").is_none());
    assert_eq!(a.bytes[0], 0x80);
    assert_eq!(
        &a.bytes[5..],
        b"grpc-status:16\r\ngrpc-message:unauthenticated\r\n"
    );
    // The text form: the same frame, base64.
    let a = h
        .send(get("/v1/invoices/7").header("content-type", "application/grpc-web-text"))
        .await;
    assert_eq!(
        header(&a, "content-type"),
        Some("application/grpc-web-text+proto")
    );
    let frame = base64::engine::general_purpose::STANDARD
        .decode(&a.bytes)
        .unwrap();
    assert_eq!(
        &frame[5..],
        b"grpc-status:16\r\ngrpc-message:unauthenticated\r\n"
    );
    // The twins: an allowed gRPC-web request reaches the service untouched; a plain HTTP denial is a problem body.
    let a = h
        .send(
            get("/v1/invoices/7")
                .key(READER)
                .header("content-type", "application/grpc-web+proto"),
        )
        .await;
    assert_eq!(
        (a.status.as_u16(), a.body.as_str()),
        (200, "hello key-reader")
    );
    assert_eq!(h.calls(), 1);
    let a = h.send(get("/v1/invoices/7")).await;
    assert_eq!(header(&a, "content-type"), Some("application/problem+json"));
    assert_eq!(a.status, 401);
}
