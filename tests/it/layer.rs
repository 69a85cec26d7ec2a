//! The Tower layer, driven through `tower::ServiceExt::oneshot`: every reason kind on the wire, TLS and client-IP
//! evidence, the throttle, audit events, and that the inner service never runs on a denial.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use scopegate::Grant;
use scopegate::layer::{AuditEvent, AuditSink, ScopeGateBuilder, ScopeGateLayer, ThrottleConfig};
use scopegate::network::ConnectionInfo;
use scopegate::policy::{DenialKind, Policy, Route};
use scopegate::testing::{StaticCredentials, TestGrant};
use tower::{Service, ServiceExt};

const GOOD: &str = "sg_goodkey";
const READER: &str = "sg_readonly";
const ACME: &str = "sg_acmekey";
const PINNED: &str = "sg_pinnedkey";
const REVOKED: &str = "sg_revoked";
const EXPIRED: &str = "sg_expired";
const BROKEN_STORE: &str = "sg_storedown";
const JWT: &str = "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ1In0.c2ln";

#[derive(Default, Clone)]
pub(crate) struct Captured(Arc<Mutex<Vec<String>>>);

impl AuditSink for Captured {
    fn record(&self, event: &AuditEvent<'_>) {
        self.0
            .lock()
            .unwrap()
            .push(serde_json::to_string(event).unwrap());
    }
}

impl Captured {
    pub(crate) fn events(&self) -> Vec<serde_json::Value> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
    /// One text field of every event, in order.
    pub(crate) fn field(&self, name: &str) -> Vec<String> {
        self.events()
            .iter()
            .map(|e| e[name].as_str().unwrap().to_owned())
            .collect()
    }
    fn raw(&self) -> String {
        self.0.lock().unwrap().join("\n")
    }
}

pub(crate) fn policy() -> Policy {
    Policy::builder()
        .route(Route::get("/health").public())
        .route(Route::get("/v1/invoices/{id}").require_all(["invoices:read"]))
        .route(Route::post("/v1/invoices").require_all(["invoices:write"]))
        .route(
            Route::get("/v1/tenants/{tenant}/data")
                .require_all(["data:read"])
                .bind("tenant", "tenant"),
        )
        .route(
            Route::get("/v1/internal")
                .require_all(["invoices:read"])
                .allow_ips(["10.0.0.0/8"]),
        )
        .build()
        .unwrap()
}

pub(crate) fn credentials() -> StaticCredentials {
    StaticCredentials::new()
        .with(
            GOOD,
            &TestGrant::api_key("key-good")
                .scopes(["invoices:*", "data:read"])
                .attr("tenant", "acme"),
        )
        .with(
            READER,
            &TestGrant::api_key("key-reader").scopes(["invoices:read"]),
        )
        .with(
            ACME,
            &TestGrant::api_key("key-acme")
                .scopes(["data:read"])
                .attr("tenant", "acme"),
        )
        .with(
            PINNED,
            &TestGrant::api_key("key-pinned")
                .scopes(["invoices:read"])
                .allow_ips(["203.0.113.0/24", "2001:db8::/32"]),
        )
        .with_denial(REVOKED, DenialKind::RevokedCredential)
        .with_denial(EXPIRED, DenialKind::ExpiredCredential)
        .with_denial(BROKEN_STORE, DenialKind::Unavailable)
}

pub(crate) struct Harness {
    calls: Arc<AtomicUsize>,
    pub(crate) audit: Captured,
    service: tower::util::BoxCloneService<
        Request<String>,
        Response<scopegate::layer::GateBody<String>>,
        Infallible,
    >,
}

fn cidrs(list: &[&str]) -> Vec<scopegate::network::Cidr> {
    list.iter().map(|c| c.parse().unwrap()).collect()
}

fn harness(configure: impl FnOnce(ScopeGateBuilder) -> ScopeGateBuilder) -> Harness {
    harness_with(policy(), configure)
}

/// A harness for `policy`: the test credentials, the audit captured, the inner service counting its calls.
pub(crate) fn harness_with(
    policy: Policy,
    configure: impl FnOnce(ScopeGateBuilder) -> ScopeGateBuilder,
) -> Harness {
    let calls = Arc::new(AtomicUsize::new(0));
    let audit = Captured::default();
    let gate = configure(
        ScopeGateLayer::builder(policy)
            .api_keys(credentials())
            .jwt(
                StaticCredentials::new()
                    .with(JWT, &TestGrant::jwt("user-1").scopes(["invoices:read"])),
            )
            .audit(audit.clone())
            .hsts_max_age(Duration::from_secs(600)),
    )
    .build()
    .unwrap();
    let counter = calls.clone();
    let inner = tower::service_fn(move |req: Request<String>| {
        counter.fetch_add(1, Ordering::SeqCst);
        let grant = req.extensions().get::<Grant>().cloned();
        async move {
            let body = match grant {
                Some(g) => format!("hello {}", g.principal()),
                None => "hello anonymous".to_owned(),
            };
            Ok::<_, Infallible>(Response::new(body))
        }
    });
    let service = tower::ServiceBuilder::new().layer(gate).service(inner);
    Harness {
        calls,
        audit,
        service: tower::util::BoxCloneService::new(service),
    }
}

pub(crate) struct Req {
    builder: http::request::Builder,
    /// `None`: an acceptor that gives no peer.
    peer: Option<SocketAddr>,
    tls: bool,
}

pub(crate) fn get(path: &str) -> Req {
    Req {
        builder: Request::get(path),
        peer: Some("198.51.100.20:40000".parse().unwrap()),
        tls: true,
    }
}

impl Req {
    pub(crate) fn header(mut self, name: &str, value: &str) -> Self {
        self.builder = self.builder.header(name, value);
        self
    }
    pub(crate) fn key(self, key: &str) -> Self {
        self.header("x-api-key", key)
    }
    fn bearer(self, token: &str) -> Self {
        self.header("authorization", &format!("Bearer {token}"))
    }
    pub(crate) fn from(mut self, peer: &str) -> Self {
        self.peer = Some(peer.parse().unwrap());
        self
    }
    fn without_peer(mut self) -> Self {
        self.peer = None;
        self
    }
    fn plaintext(mut self) -> Self {
        self.tls = false;
        self
    }
    fn method(mut self, m: &str) -> Self {
        self.builder = self.builder.method(m);
        self
    }
    /// The request as the acceptor hands it over: an empty body, and the connection's facts.
    pub(crate) fn into_request(self) -> Request<String> {
        let mut request = self.builder.body(String::new()).unwrap();
        request.extensions_mut().insert(ConnectionInfo {
            peer: self.peer.map(|p| p.ip()),
            tls: self.tls,
        });
        request
    }
}

pub(crate) struct Answer {
    pub(crate) status: StatusCode,
    pub(crate) headers: http::HeaderMap,
    pub(crate) body: String,
    /// The body as sent (`body` is its text, lossily).
    pub(crate) bytes: Bytes,
}

impl Harness {
    pub(crate) async fn send(&mut self, req: Req) -> Answer {
        let request = req.into_request();
        let response = self
            .service
            .ready()
            .await
            .unwrap()
            .call(request)
            .await
            .unwrap();
        let (parts, body) = response.into_parts();
        let bytes: Bytes = body.collect().await.unwrap().to_bytes();
        Answer {
            status: parts.status,
            headers: parts.headers,
            body: String::from_utf8_lossy(&bytes).into_owned(),
            bytes,
        }
    }

    pub(crate) fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

impl Answer {
    pub(crate) fn code(&self) -> String {
        let json: serde_json::Value = serde_json::from_str(&self.body).unwrap();
        json["code"].as_str().unwrap().to_owned()
    }
    fn challenge(&self) -> &str {
        self.headers
            .get("www-authenticate")
            .map_or("", |v| v.to_str().unwrap())
    }
}

#[tokio::test]
async fn allowed_requests_reach_the_service_with_the_grant() {
    let mut h = harness(ScopeGateBuilder::danger_disable_throttle);
    let a = h.send(get("/v1/invoices/7").key(GOOD)).await;
    assert_eq!(a.status, 200);
    assert_eq!(a.body, "hello key-good");
    assert_eq!(a.headers["strict-transport-security"], "max-age=600");
    // Authorization: Bearer <api key> is accepted too.
    let a = h.send(get("/v1/invoices/7").bearer(GOOD)).await;
    assert_eq!(a.body, "hello key-good");
    // A JWT-shaped bearer goes to the JWT authenticator.
    let a = h.send(get("/v1/invoices/7").bearer(JWT)).await;
    assert_eq!(a.body, "hello user-1");
    // Public routes: anonymous, no grant.
    let a = h.send(get("/health")).await;
    assert_eq!(
        (a.status.as_u16(), a.body.as_str()),
        (200, "hello anonymous")
    );
    assert_eq!(h.calls(), 4);
}

#[tokio::test]
async fn every_denial_kind_on_the_wire_and_the_service_never_runs() {
    let mut h = harness(ScopeGateBuilder::danger_disable_throttle);
    let cases: Vec<(Req, u16, &str, &str)> = vec![
        (
            get("/v1/invoices/7").key(GOOD).plaintext(),
            403,
            "tls_required",
            "",
        ),
        (
            get("/v1/invoices/../7").key(GOOD),
            400,
            "malformed_request",
            "",
        ),
        (
            get("/v1/invoices/7").key(GOOD).bearer(GOOD),
            400,
            "malformed_request",
            "error=\"invalid_request\"",
        ),
        (
            get("/v1/invoices/7"),
            401,
            "unauthenticated",
            "Bearer realm=\"scopegate\"",
        ),
        (
            get("/v1/unlisted"),
            401,
            "unauthenticated",
            "Bearer realm=\"scopegate\"",
        ),
        (
            get("/v1/invoices/7").key("sg_unknown"),
            401,
            "unauthenticated",
            "error=\"invalid_token\"",
        ),
        (
            get("/v1/invoices/7").header("authorization", "Basic dTpw"),
            401,
            "unauthenticated",
            "error=\"invalid_token\"",
        ),
        (
            get("/v1/invoices/7").key(REVOKED),
            401,
            "unauthenticated",
            "error=\"invalid_token\"",
        ),
        (
            get("/v1/invoices/7").key(EXPIRED),
            401,
            "unauthenticated",
            "error=\"invalid_token\"",
        ),
        (
            get("/v1/invoices/7").key(PINNED).from("192.0.2.1:1"),
            403,
            "forbidden",
            "",
        ),
        (get("/v1/unlisted").key(GOOD), 403, "forbidden", ""),
        (
            get("/v1/invoices").method("POST").key(READER),
            403,
            "insufficient_scope",
            "scope=\"invoices:write\"",
        ),
        (
            get("/v1/tenants/globex/data").key(ACME),
            403,
            "forbidden",
            "",
        ),
        (
            get("/v1/invoices/7").key(BROKEN_STORE),
            503,
            "unavailable",
            "",
        ),
    ];
    for (req, status, code, challenge) in cases {
        let a = h.send(req).await;
        assert_eq!(a.status.as_u16(), status, "{code}: {}", a.body);
        assert_eq!(a.code(), code);
        assert_eq!(a.headers["content-type"], "application/problem+json");
        assert!(
            a.challenge().contains(challenge),
            "{code}: {:?}",
            a.challenge()
        );
        assert!(
            a.headers.get("strict-transport-security").is_none(),
            "no HSTS on denials"
        );
    }
    assert_eq!(h.calls(), 0, "the inner service never runs on a denial");
    let reasons = h.audit.field("reason");
    assert_eq!(
        reasons,
        [
            "tls_required",
            "malformed_request",
            "malformed_request",
            "missing_credential",
            "missing_credential",
            "invalid_credential",
            "invalid_credential",
            "revoked_credential",
            "expired_credential",
            "ip_not_allowed",
            "no_policy",
            "insufficient_scope",
            "resource_not_permitted",
            "unavailable",
        ]
    );
}

#[tokio::test]
async fn a_store_failure_is_503_never_200() {
    let mut h = harness(|g| g);
    for path in ["/v1/invoices/7", "/v1/unlisted", "/v1/tenants/acme/data"] {
        let a = h.send(get(path).key(BROKEN_STORE)).await;
        assert_eq!(a.status, 503, "{path}");
    }
    assert_eq!(h.calls(), 0);
}

#[tokio::test]
async fn grpc_requests_get_grpc_statuses() {
    let mut h = harness(ScopeGateBuilder::danger_disable_throttle);
    let cases = [
        (get("/v1/invoices/7"), "16"),
        (get("/v1/invoices/7").key(READER).plaintext(), "7"),
        (get("/v1/invoices").method("POST").key(READER), "7"),
        (get("/v1/invoices/7").key(BROKEN_STORE), "14"),
        (get("/v1/a//b"), "3"),
    ];
    for (req, code) in cases {
        let a = h.send(req.header("content-type", "application/grpc")).await;
        assert_eq!(a.status, 200);
        assert_eq!(a.headers["grpc-status"], code);
        assert_eq!(a.headers["content-type"], "application/grpc");
        // The audit event records the status as sent.
        let events = h.audit.events();
        let last = events.last().unwrap();
        assert_eq!(
            (&last["decision"], &last["status"]),
            (&"deny".into(), &200.into())
        );
    }
    // The twin: an allowed gRPC call reaches the service.
    let a = h
        .send(
            get("/v1/invoices/7")
                .key(READER)
                .header("content-type", "application/grpc"),
        )
        .await;
    assert_eq!(a.body, "hello key-reader");
    assert_eq!(h.calls(), 1);
}

#[tokio::test]
async fn spoofed_forwarding_headers_from_untrusted_peers_change_nothing() {
    let mut h = harness(|g| g.trusted_proxies(cidrs(&["10.0.0.0/8"])));
    // A plaintext client claiming https and an allowed address.
    let spoof = |r: Req| {
        r.plaintext()
            .header("x-forwarded-proto", "https")
            .header("forwarded", "for=203.0.113.9;proto=https")
            .header("x-forwarded-for", "203.0.113.9")
            .header("x-forwarded-ssl", "on")
    };
    let a = h
        .send(spoof(get("/v1/invoices/7").key(PINNED)).from("192.0.2.50:1"))
        .await;
    assert_eq!(a.status, 403);
    assert_eq!(a.code(), "tls_required");
    // Over TLS, the spoofed X-Forwarded-For does not move the client into the pinned network.
    let a = h
        .send(
            get("/v1/invoices/7")
                .key(PINNED)
                .from("192.0.2.50:1")
                .header("x-forwarded-for", "203.0.113.9"),
        )
        .await;
    assert_eq!(a.code(), "forbidden");
    // The twin: the same headers from a trusted proxy count.
    let a = h
        .send(spoof(get("/v1/invoices/7").key(PINNED)).from("10.1.1.1:1"))
        .await;
    assert_eq!(a.status, 200, "{}", a.body);
    let events = h.audit.events();
    let last = events.last().unwrap();
    assert_eq!(last["client_ip"], "203.0.113.9");
    assert_eq!(last["peer_ip"], "10.1.1.1");
    // A malformed forwarding header from a trusted proxy is refused.
    let a = h
        .send(
            get("/v1/invoices/7")
                .key(PINNED)
                .from("10.1.1.1:1")
                .header("x-forwarded-for", "010.0.0.1"),
        )
        .await;
    assert_eq!(a.status, 400);
}

#[tokio::test]
async fn a_forwarded_element_without_for_is_never_skipped() {
    let mut h = harness(|g| g.trusted_proxies(cidrs(&["10.0.0.0/8"])));
    // The trusted proxy's element has no `for`: the element to its left, which the client wrote, is not the
    // client, and its `proto=https` is no TLS evidence.
    let a = h
        .send(
            get("/v1/invoices/7")
                .key(PINNED)
                .plaintext()
                .from("10.1.1.1:1")
                .header("forwarded", "for=203.0.113.9;proto=https, proto=https"),
        )
        .await;
    assert_eq!(a.code(), "tls_required");
    // Over a TLS connection the client is unknown, so the IP-restricted key is refused.
    let a = h
        .send(
            get("/v1/invoices/7")
                .key(PINNED)
                .from("10.1.1.1:1")
                .header("forwarded", "for=203.0.113.9, proto=https"),
        )
        .await;
    assert_eq!(a.code(), "forbidden");
    let events = h.audit.events();
    let last = events.last().unwrap();
    assert_eq!(last["reason"], "ip_not_allowed");
    assert_eq!(last["client_ip"], serde_json::Value::Null);
    // The allowed twin: the proxy's element names the client.
    let a = h
        .send(
            get("/v1/invoices/7")
                .key(PINNED)
                .plaintext()
                .from("10.1.1.1:1")
                .header("forwarded", "for=203.0.113.9;proto=https"),
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.body);
}

#[tokio::test]
async fn ip_restricted_keys_inside_and_outside() {
    let mut h = harness(ScopeGateBuilder::danger_disable_throttle);
    for (peer, status) in [
        ("203.0.113.5:1", 200),
        ("198.51.100.5:1", 403),
        ("[2001:db8::5]:1", 200),
        ("[2001:db9::5]:1", 403),
        ("[::ffff:203.0.113.5]:1", 200),
        ("[::ffff:198.51.100.5]:1", 403),
    ] {
        let a = h.send(get("/v1/invoices/7").key(PINNED).from(peer)).await;
        assert_eq!(a.status.as_u16(), status, "{peer}");
    }
    // Route allowlist.
    let a = h
        .send(get("/v1/internal").key(READER).from("10.2.3.4:1"))
        .await;
    assert_eq!(a.status, 200);
    let a = h
        .send(get("/v1/internal").key(READER).from("11.2.3.4:1"))
        .await;
    assert_eq!(a.status, 403);
}

#[tokio::test]
async fn plaintext_only_through_the_danger_option() {
    let mut h = harness(ScopeGateBuilder::danger_allow_plaintext);
    let a = h.send(get("/v1/invoices/7").key(READER).plaintext()).await;
    assert_eq!(a.status, 200);
    assert!(
        a.headers.get("strict-transport-security").is_none(),
        "no HSTS over plaintext"
    );
}

#[tokio::test]
async fn the_throttle_locks_out_failures_only() {
    let config = ThrottleConfig::per_minute(1.try_into().unwrap(), 3.try_into().unwrap());
    let mut h = harness(|g| g.throttle(config));
    let attacker = "192.0.2.66:1";
    // Successes and missing credentials consume nothing.
    for _ in 0..5 {
        assert_eq!(
            h.send(get("/v1/invoices/7").key(READER).from(attacker))
                .await
                .status,
            200
        );
        assert_eq!(
            h.send(get("/v1/invoices/7").from(attacker)).await.status,
            401
        );
    }
    // Three failures are the burst; the fourth locks the client out.
    for _ in 0..4 {
        assert_eq!(
            h.send(get("/v1/invoices/7").key("sg_guess").from(attacker))
                .await
                .status,
            401
        );
    }
    let calls = h.calls();
    let a = h
        .send(get("/v1/invoices/7").key(READER).from(attacker))
        .await;
    assert_eq!(
        a.status, 429,
        "even a valid key waits: the check comes before any credential work"
    );
    let retry: u64 = a.headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    assert_eq!(a.code(), "throttled");
    // Public routes and malformed paths still get their answers.
    assert_eq!(h.send(get("/health").from(attacker)).await.status, 200);
    assert_eq!(h.send(get("/v1//x").from(attacker)).await.status, 400);
    // Another client is unaffected.
    assert_eq!(
        h.send(get("/v1/invoices/7").key(READER).from("192.0.2.67:1"))
            .await
            .status,
        200
    );
    assert_eq!(h.calls(), calls + 2);
    // Two credentials at once count as a failure too.
    let other = "192.0.2.77:1";
    for _ in 0..4 {
        assert_eq!(
            h.send(get("/v1/invoices/7").key(READER).bearer(READER).from(other))
                .await
                .status,
            400
        );
    }
    assert_eq!(
        h.send(get("/v1/invoices/7").key(READER).from(other))
            .await
            .status,
        429
    );
    let throttled = h
        .audit
        .events()
        .iter()
        .filter(|e| e["reason"] == "throttled")
        .count();
    assert_eq!(throttled, 2, "429s are audited");
}

/// An acceptor that gives no peer does not turn the throttle off: such requests share one bucket.
#[tokio::test]
async fn failures_without_a_known_client_are_throttled_together() {
    let config = ThrottleConfig::per_minute(1.try_into().unwrap(), 3.try_into().unwrap());
    let mut h = harness(|g| g.throttle(config));
    // The allowed twin: valid keys without a peer pass, and consume nothing.
    for _ in 0..5 {
        assert_eq!(
            h.send(get("/v1/invoices/7").key(READER).without_peer())
                .await
                .status,
            200
        );
    }
    for _ in 0..4 {
        assert_eq!(
            h.send(get("/v1/invoices/7").key("sg_guess").without_peer())
                .await
                .status,
            401
        );
    }
    let a = h
        .send(get("/v1/invoices/7").key(READER).without_peer())
        .await;
    assert_eq!(
        a.status, 429,
        "guesses through a peerless acceptor are throttled"
    );
    // A client whose address is known is counted apart.
    assert_eq!(
        h.send(get("/v1/invoices/7").key(READER).from("192.0.2.67:1"))
            .await
            .status,
        200
    );
}

#[tokio::test]
async fn secrets_never_reach_audit_events_or_responses() {
    let mut h = harness(ScopeGateBuilder::danger_disable_throttle);
    let secrets = [GOOD, READER, REVOKED, "sg_unknown", BROKEN_STORE, JWT];
    let mut bodies = String::new();
    for secret in secrets {
        for req in [
            get("/v1/invoices/7?api_key=zzz").key(secret),
            get("/v1/invoices/7").bearer(secret),
            get("/v1/unlisted").key(secret),
            get("/v1/invoices").method("POST").key(secret),
        ] {
            let a = h.send(req).await;
            bodies.push_str(&a.body);
            for v in a.headers.values() {
                bodies.push_str(v.to_str().unwrap_or(""));
            }
        }
    }
    let audit = h.audit.raw();
    for secret in secrets {
        assert!(!audit.contains(secret), "audit leaks {secret}");
        assert!(!bodies.contains(secret), "responses leak {secret}");
    }
    assert!(!audit.contains("zzz"), "the query string is not audited");
    assert!(
        audit.contains("\"credential_id\":\"key-good\""),
        "the public id is"
    );
}

#[tokio::test]
async fn every_decision_is_audited_once() {
    let mut h = harness(ScopeGateBuilder::danger_disable_throttle);
    h.send(get("/health")).await;
    h.send(get("/v1/invoices/7").key(READER)).await;
    h.send(get("/v1/invoices/7")).await;
    let events = h.audit.events();
    assert_eq!(events.len(), 3);
    assert_eq!(events[0]["reason"], "public");
    assert_eq!(events[0]["route"], "/health");
    assert_eq!(events[1]["decision"], "allow");
    assert_eq!(events[1]["reason"], "granted");
    assert_eq!(events[1]["credential_kind"], "api_key");
    assert_eq!(events[1]["route"], "/v1/invoices/{id}");
    assert_eq!(events[1]["path"], "/v1/invoices/7");
    assert_eq!(events[1]["client_ip"], "198.51.100.20");
    assert_eq!(events[2]["decision"], "deny");
    assert_eq!(events[2]["status"], 401);
}

#[tokio::test]
async fn credential_headers_are_marked_sensitive() {
    let gate = ScopeGateLayer::builder(policy())
        .api_keys(credentials())
        .danger_disable_throttle()
        .build()
        .unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let seen2 = seen.clone();
    // Every value of either credential header (and of one other) that reaches the handler, with its sensitivity.
    let inner = tower::service_fn(move |req: Request<String>| {
        let flags: Vec<(&str, bool)> = ["authorization", "x-api-key", "x-request-id"]
            .into_iter()
            .flat_map(|h| {
                req.headers()
                    .get_all(h)
                    .iter()
                    .map(move |v| (h, v.is_sensitive()))
            })
            .collect();
        *seen2.lock().unwrap() = flags;
        async { Ok::<_, Infallible>(Response::new(String::new())) }
    });
    let mut svc = tower::ServiceBuilder::new().layer(gate).service(inner);
    let mut passed = async |req: Req| {
        let req = req.into_request();
        let status = svc.ready().await.unwrap().call(req).await.unwrap().status();
        assert_eq!(status, 200);
        std::mem::take(&mut *seen.lock().unwrap())
    };
    // The header the credential was read from, whichever it is.
    assert_eq!(
        passed(get("/v1/invoices/7").key(READER)).await,
        [("x-api-key", true)]
    );
    assert_eq!(
        passed(get("/v1/invoices/7").bearer(READER)).await,
        [("authorization", true)]
    );
    // A public route reads no credential: every value of both headers is marked all the same.
    assert_eq!(
        passed(
            get("/health")
                .bearer("a")
                .bearer("b")
                .key("sg_c")
                .key("sg_d")
        )
        .await,
        [
            ("authorization", true),
            ("authorization", true),
            ("x-api-key", true),
            ("x-api-key", true)
        ]
    );
    // Only credentials are marked.
    assert_eq!(
        passed(
            get("/v1/invoices/7")
                .key(READER)
                .header("x-request-id", "r1")
        )
        .await,
        [("x-api-key", true), ("x-request-id", false)]
    );
}

#[test]
fn gate_configuration_errors() {
    let err = |g: ScopeGateBuilder| g.build().unwrap_err().to_string();
    assert!(
        err(ScopeGateLayer::builder(policy()).trusted_proxies(cidrs(&["0.0.0.0/0"])))
            .contains("every client")
    );
    assert!(
        err(ScopeGateLayer::builder(policy()).trusted_proxies(cidrs(&["::/0"])))
            .contains("every client")
    );
    for header in [
        http::header::AUTHORIZATION,
        http::header::PROXY_AUTHORIZATION,
        http::header::COOKIE,
    ] {
        assert!(
            err(ScopeGateLayer::builder(policy()).api_key_header(header))
                .contains("api_key_header")
        );
    }
    assert!(err(ScopeGateLayer::builder(policy()).realm("a\"b")).contains("realm"));
    assert!(
        ScopeGateLayer::builder(policy())
            .trusted_proxies(cidrs(&["10.0.0.0/8", "::1"]))
            .api_key_header(http::HeaderName::from_static("x-service-key"))
            .build()
            .is_ok()
    );
}

/// Two gates in one stack: the inner gate's decision is the one a handler reads, whichever kinds the two made.
#[tokio::test]
async fn the_innermost_gate_decision_is_the_one_read() {
    let outer_policy = Policy::builder()
        .route(Route::get("/v1/invoices/{id}").public())
        .build()
        .unwrap();
    let outer = ScopeGateLayer::builder(outer_policy)
        .danger_disable_throttle()
        .build()
        .unwrap();
    let inner = ScopeGateLayer::builder(policy())
        .api_keys(credentials())
        .danger_disable_throttle()
        .build()
        .unwrap();
    let handler = tower::service_fn(|req: Request<String>| async move {
        let kind = scopegate::layer::Allowed::of(req.extensions()).map(|a| a.kind().as_str());
        Ok::<_, Infallible>(Response::new(format!("{kind:?}")))
    });
    let svc = tower::ServiceBuilder::new()
        .layer(outer)
        .layer(inner)
        .service(handler);
    let req = get("/v1/invoices/7").key(READER).into_request();
    let response = svc.clone().oneshot(req).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    // The outer gate allowed it as public; the inner one granted it to the key: the handler sees the grant's.
    assert_eq!(body, "Some(\"granted\")".as_bytes());
    // The deny twin: without the key the inner gate refuses, whatever the outer one allowed.
    let response = svc
        .oneshot(get("/v1/invoices/7").into_request())
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn allowed_requests_carry_the_route_and_client() {
    let gate = ScopeGateLayer::builder(policy())
        .api_keys(credentials())
        .danger_disable_throttle()
        .build()
        .unwrap();
    let inner = tower::service_fn(|req: Request<String>| async move {
        // One extension from the gate: the grant carrying the decision, or the decision alone.
        let own = req
            .extensions()
            .get::<scopegate::layer::Allowed>()
            .is_some();
        let in_grant = req
            .extensions()
            .get::<Grant>()
            .and_then(Grant::allowed)
            .is_some();
        assert!(own != in_grant, "exactly one place holds the decision");
        let allowed = scopegate::layer::Allowed::of(req.extensions()).cloned();
        let text = allowed.map_or("none".to_owned(), |a| {
            format!("{} {} {:?}", a.route(), a.kind().as_str(), a.client_ip())
        });
        Ok::<_, Infallible>(Response::new(text))
    });
    let svc = tower::ServiceBuilder::new().layer(gate).service(inner);
    for (path, key, expected) in [
        (
            "/v1/invoices/7",
            Some(READER),
            "/v1/invoices/{id} granted Some(192.0.2.1)",
        ),
        ("/health", None, "/health public Some(192.0.2.1)"),
    ] {
        let mut req = get(path).from("192.0.2.1:40000");
        if let Some(key) = key {
            req = req.key(key);
        }
        let req = req.into_request();
        let body = svc
            .clone()
            .oneshot(req)
            .await
            .unwrap()
            .into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes();
        assert_eq!(body, expected.as_bytes());
    }
    // The twin: the same service without the gate finds no decision.
    let bare = tower::service_fn(|req: Request<String>| async move {
        Ok::<_, Infallible>(Response::new(
            scopegate::layer::Allowed::of(req.extensions()).is_some(),
        ))
    });
    let answer = bare
        .oneshot(Request::get("/health").body(String::new()).unwrap())
        .await
        .unwrap();
    assert!(!answer.into_body());
}

#[tokio::test]
async fn only_headers_carry_credentials_and_absolute_targets_match_on_their_path() {
    let mut h = harness(ScopeGateBuilder::danger_disable_throttle);
    // A key in the query string, a cookie or Proxy-Authorization is no credential.
    for req in [
        get(&format!("/v1/invoices/7?api_key={READER}")),
        get("/v1/invoices/7").header("cookie", &format!("api_key={READER}")),
        get("/v1/invoices/7").header("proxy-authorization", &format!("Bearer {READER}")),
    ] {
        let a = h.send(req).await;
        assert_eq!(
            (a.status.as_u16(), a.code().as_str()),
            (401, "unauthenticated")
        );
    }
    // An absolute-form target is matched on its path (its scheme and host prove and change nothing).
    let a = h
        .send(get("https://admin.internal/v1/invoices/7").key(READER))
        .await;
    assert_eq!(a.status, 200);
    let a = h
        .send(get("https://admin.internal/v1/unlisted").key(READER))
        .await;
    assert_eq!(a.status, 403);
    let a = h
        .send(
            get("https://admin.internal/v1/invoices/7")
                .key(READER)
                .plaintext(),
        )
        .await;
    assert_eq!(a.code(), "tls_required");
}

/// A `tracing` writer that keeps everything written, for scanning.
#[derive(Clone, Default)]
struct LogBuffer(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for LogBuffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn the_default_tracing_audit_logs_no_secret() {
    // With exactly one dispatcher alive, tracing-core decides a callsite's interest from the default of whichever
    // thread reaches it first: another test's thread, without a subscriber, would switch the audit events off for
    // this one. A second dispatcher, kept for the test's length, makes it ask every dispatcher.
    let _second_dispatcher = tracing::Dispatch::new(tracing_subscriber::registry());
    let logs = LogBuffer::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    // The default audit sink (TracingAudit), every log level on.
    let gate = ScopeGateLayer::builder(policy())
        .api_keys(credentials())
        .jwt(
            StaticCredentials::new().with(JWT, &TestGrant::jwt("user-1").scopes(["invoices:read"])),
        )
        .build()
        .unwrap();
    let inner = tower::service_fn(|_req: Request<String>| async {
        Ok::<_, Infallible>(Response::new(String::new()))
    });
    let svc = tower::ServiceBuilder::new().layer(gate).service(inner);
    let secrets = [GOOD, READER, REVOKED, BROKEN_STORE, JWT, "sg_unknownsecret"];
    for secret in secrets {
        for (path, header) in [
            ("/v1/invoices/7?token=querysecret", "x-api-key"),
            ("/v1/unlisted", "x-api-key"),
            ("/v1/invoices/7", "authorization"),
        ] {
            let value = if header == "authorization" {
                format!("Bearer {secret}")
            } else {
                secret.to_owned()
            };
            let mut req = Request::get(path)
                .header(header, value)
                .body(String::new())
                .unwrap();
            req.extensions_mut().insert(ConnectionInfo {
                peer: Some("192.0.2.9".parse().unwrap()),
                tls: true,
            });
            svc.clone().oneshot(req).await.unwrap();
        }
    }
    let text = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    assert!(
        text.matches("authorization decision").count() >= secrets.len() * 3,
        "{text}"
    );
    assert!(text.contains("key-good"), "the public id is logged");
    for secret in secrets {
        assert!(!text.contains(secret), "the logs leak {secret}");
    }
    assert!(
        !text.contains("querysecret"),
        "the query string is not logged"
    );
}

/// RFC 9728: the metadata document is served to GET and HEAD without a credential, only over TLS, audited as a
/// public allow; 401 challenges point at it, other denials do not; the service never sees these requests.
#[tokio::test]
async fn the_protected_resource_metadata_is_public_and_401s_point_at_it() {
    let mut h = harness(|b| {
        b.protected_resource(
            scopegate::layer::ProtectedResource::new("https://api.example")
                .authorization_servers(["https://login.example"]),
        )
    });
    let doc = h.send(get("/.well-known/oauth-protected-resource")).await;
    assert_eq!(doc.status, StatusCode::OK);
    let json: serde_json::Value = serde_json::from_str(&doc.body).unwrap();
    assert_eq!(json["resource"], "https://api.example");
    assert_eq!(json["authorization_servers"][0], "https://login.example");
    assert_eq!(
        json["scopes_supported"],
        serde_json::json!(["data:read", "invoices:read", "invoices:write"])
    );
    let head = h
        .send(get("/.well-known/oauth-protected-resource").method("HEAD"))
        .await;
    assert_eq!(head.status, StatusCode::OK);
    assert_eq!(h.calls(), 0);
    let events = h.audit.events();
    assert_eq!(events[0]["decision"], "allow");
    assert_eq!(events[0]["reason"], "public");

    // Refused twins: over plaintext, with another method, at a neighbouring path.
    let plain = h
        .send(get("/.well-known/oauth-protected-resource").plaintext())
        .await;
    assert_eq!(plain.code(), "tls_required");
    let post = h
        .send(get("/.well-known/oauth-protected-resource").method("POST"))
        .await;
    // Unlisted for the policy: denied as any unlisted route is (no credential: 401 first).
    assert_eq!(post.code(), "unauthenticated");
    let other = h.send(get("/.well-known/oauth-protected-resource/x")).await;
    assert_eq!(other.code(), "unauthenticated");
    assert!(!other.body.contains("authorization_servers"));

    let expected = "resource_metadata=\"https://api.example/.well-known/oauth-protected-resource\"";
    let missing = h.send(get("/v1/invoices/7")).await;
    assert_eq!(missing.status, StatusCode::UNAUTHORIZED);
    assert!(
        missing.challenge().contains(expected),
        "{}",
        missing.challenge()
    );
    let invalid = h.send(get("/v1/invoices/7").key("sg_nosuchkey")).await;
    assert_eq!(invalid.status, StatusCode::UNAUTHORIZED);
    assert!(
        invalid.challenge().contains(expected),
        "{}",
        invalid.challenge()
    );
    let scope = h.send(get("/v1/invoices").method("POST").key(READER)).await;
    assert_eq!(scope.status, StatusCode::FORBIDDEN);
    assert!(
        !scope.challenge().contains("resource_metadata"),
        "{}",
        scope.challenge()
    );

    // Without the option nothing is served and challenges stay as they were.
    let mut plain_gate = harness(|b| b);
    let none = plain_gate
        .send(get("/.well-known/oauth-protected-resource"))
        .await;
    assert_eq!(none.code(), "unauthenticated");
    let missing = plain_gate.send(get("/v1/invoices/7")).await;
    assert!(!missing.challenge().contains("resource_metadata"));
}

#[test]
fn a_protected_resource_with_a_plain_http_identifier_is_refused() {
    let err = ScopeGateLayer::builder(policy())
        .protected_resource(scopegate::layer::ProtectedResource::new(
            "http://api.example",
        ))
        .build()
        .unwrap_err()
        .to_string();
    assert!(err.contains("uri") && err.contains("https://"), "{err}");
}

#[tokio::test]
async fn a_remembered_token_is_allowed_and_its_altered_copies_are_still_checked() {
    let (authenticator, token) = crate::minted::minted(
        "https://issuer.test",
        "invoices-api",
        "svc-7",
        &["invoices:read"],
    );
    let mut h = harness(|b| b.jwt(authenticator).danger_disable_throttle());
    // Verified, then remembered: the same grant, the same decision, the route's scopes still checked.
    for _ in 0..2 {
        let answer = h.send(get("/v1/invoices/7").bearer(&token)).await;
        assert_eq!(answer.status, 200);
        assert_eq!(answer.body, "hello svc-7");
    }
    let answer = h
        .send(get("/v1/invoices").method("POST").bearer(&token))
        .await;
    assert_eq!(answer.status, 403);
    // Copies that differ from the remembered bytes: a character outside b64token is refused by the character
    // check, a `b64token` tail by the token's own verification.
    let outside = format!("{token}!");
    let padded = format!("{token}=");
    for altered in [&outside, &padded] {
        let answer = h.send(get("/v1/invoices/7").bearer(altered)).await;
        assert_eq!(answer.status, 401, "{altered}");
    }
    let details = h.audit.field("detail");
    assert_eq!(
        details[..3],
        [
            "allowed",
            "allowed",
            "scopes fall short of the route's requirement"
        ]
    );
    assert_eq!(
        details[3],
        "credential has characters outside RFC 6750 b64token"
    );
    assert!(details[4].contains("base64url"), "{}", details[4]);
    assert_eq!(h.calls(), 2);
}

/// A sink that can say it keeps nothing, counting the events it is handed.
#[derive(Clone)]
struct Switchable {
    keeps: Arc<std::sync::atomic::AtomicBool>,
    recorded: Arc<AtomicUsize>,
}

impl AuditSink for Switchable {
    fn record(&self, _event: &AuditEvent<'_>) {
        self.recorded.fetch_add(1, Ordering::SeqCst);
    }

    fn enabled(&self) -> bool {
        self.keeps.load(Ordering::SeqCst)
    }
}

/// The statuses of a public, an allowed and a denied request.
async fn statuses(h: &mut Harness) -> Vec<StatusCode> {
    let mut out = Vec::new();
    for req in [
        get("/health"),
        get("/v1/invoices/7").key(READER),
        get("/v1/invoices/7"),
    ] {
        out.push(h.send(req).await.status);
    }
    out
}

#[tokio::test]
async fn a_sink_that_keeps_nothing_is_handed_no_event_and_changes_no_decision() {
    let sink = Switchable {
        keeps: Arc::new(std::sync::atomic::AtomicBool::new(false)),
        recorded: Arc::new(AtomicUsize::new(0)),
    };
    let mut h = harness({
        let sink = sink.clone();
        move |b| b.danger_disable_throttle().audit(sink)
    });
    let expected = [StatusCode::OK, StatusCode::OK, StatusCode::UNAUTHORIZED];
    assert_eq!(statuses(&mut h).await, expected);
    assert_eq!(sink.recorded.load(Ordering::SeqCst), 0);
    // The same sink keeping events: one per decision.
    sink.keeps.store(true, Ordering::SeqCst);
    assert_eq!(statuses(&mut h).await, expected);
    assert_eq!(sink.recorded.load(Ordering::SeqCst), 3);
}
