//! A real axum server on loopback over real TLS (rustls, a certificate generated here), driven by a real HTTP client.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use scopegate::Grant;
use scopegate::layer::{Allowed, ScopeGateLayer};
use scopegate::policy::{Policy, Route};
use scopegate::testing::{StaticCredentials, TestGrant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_rustls::rustls;

const KEY: &str = "sg_readerkey";

pub(crate) struct TlsServer {
    pub(crate) addr: SocketAddr,
    pub(crate) ca_pem: String,
}

/// A self-signed certificate for `localhost` and 127.0.0.1, and a rustls server config serving it.
pub(crate) fn self_signed() -> (Arc<rustls::ServerConfig>, String) {
    let cert =
        rcgen::generate_simple_self_signed(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .unwrap();
    let cert_pem = cert.cert.pem();
    let key = rustls::pki_types::PrivateKeyDer::try_from(cert.signing_key.serialize_der()).unwrap();
    let config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(vec![cert.cert.der().clone()], key)
        .unwrap();
    (Arc::new(config), cert_pem)
}

pub(crate) fn client(ca_pem: &str, addr: SocketAddr) -> reqwest::Client {
    reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(ca_pem.as_bytes()).unwrap()])
        .resolve("localhost", addr)
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

fn app() -> Router {
    app_with(StaticCredentials::new())
}

/// The test app, its key table starting from `credentials` (e.g. `StaticCredentials::new().pending()`).
fn app_with(credentials: StaticCredentials) -> Router {
    let policy = Policy::builder()
        .route(Route::get("/health").public())
        .route(Route::get("/v1/invoices/{id}").require_all(["invoices:read"]))
        .build()
        .unwrap();
    let gate = ScopeGateLayer::builder(policy)
        .api_keys(credentials.with(KEY, &TestGrant::api_key("key-1").scopes(["invoices:read"])))
        .hsts_max_age(Duration::from_secs(31_536_000))
        .build()
        .unwrap();
    Router::new()
        .route(
            "/health",
            get(|grant: Option<Grant>, allowed: Allowed| async move {
                format!("up {} {}", grant.is_some(), allowed.route())
            }),
        )
        .route(
            "/v1/invoices/{id}",
            // The decision rides in the grant: `Allowed` is there too, on the same single extension.
            get(|grant: Grant, allowed: Allowed| async move {
                format!("invoice for {} on {}", grant.principal(), allowed.route())
            }),
        )
        .route(
            "/v1/ungated",
            get(|grant: Grant| async move { grant.principal().to_owned() }),
        )
        .layer(gate)
}

async fn start_tls(router: Router) -> TlsServer {
    let (config, ca_pem) = self_signed();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(scopegate::serve::serve_tls(
        listener,
        config,
        router,
        std::future::pending(),
    ));
    TlsServer { addr, ca_pem }
}

async fn start_plaintext(router: Router) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(scopegate::serve::serve_plaintext(
        listener,
        router,
        std::future::pending(),
    ));
    addr
}

#[tokio::test]
async fn allowed_over_tls_with_hsts_and_the_grant() {
    allowed_with_hsts_and_the_grant(app()).await;
}

/// The same when authentication has to wait (the gate's pending path, as on a key-cache miss).
#[tokio::test]
async fn allowed_after_waiting_with_hsts_and_the_grant() {
    allowed_with_hsts_and_the_grant(app_with(StaticCredentials::new().pending())).await;
}

async fn allowed_with_hsts_and_the_grant(app: Router) {
    let server = start_tls(app).await;
    let client = client(&server.ca_pem, server.addr);
    let url = format!("https://localhost:{}/v1/invoices/7", server.addr.port());
    let r = client
        .get(&url)
        .header("x-api-key", KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["strict-transport-security"], "max-age=31536000");
    assert_eq!(
        r.text().await.unwrap(),
        "invoice for key-1 on /v1/invoices/{id}"
    );
    // The deny twin: no key.
    let r = client.get(&url).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(
        r.headers()["www-authenticate"],
        "Bearer realm=\"scopegate\""
    );
    // Public route, anonymous: the handler sees no grant.
    let r = client
        .get(format!("https://localhost:{}/health", server.addr.port()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.text().await.unwrap(), "up false /health");
}

#[tokio::test]
async fn http2_over_tls_works_too() {
    let server = start_tls(app()).await;
    let client = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(server.ca_pem.as_bytes()).unwrap()])
        .resolve("localhost", server.addr)
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let r = client
        .get(format!(
            "https://localhost:{}/v1/invoices/7",
            server.addr.port()
        ))
        .header("x-api-key", KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn plaintext_is_refused_whatever_the_client_claims() {
    let addr = start_plaintext(app()).await;
    let client = reqwest::Client::new();
    let r = client
        .get(format!("http://{addr}/v1/invoices/7"))
        .header("x-api-key", KEY)
        .header("x-forwarded-proto", "https")
        .header("forwarded", "proto=https")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let body: serde_json::Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
    assert_eq!(body["code"], "tls_required");
    // An absolute-form https target over plaintext proves nothing either.
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "GET https://localhost/v1/invoices/7 HTTP/1.1\r\nhost: localhost\r\nx-api-key: {KEY}\r\nconnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    assert!(response.starts_with("HTTP/1.1 403"), "{response}");
    assert!(!response.contains(KEY));
}

#[tokio::test]
async fn a_handler_without_the_gate_answers_500_not_401() {
    let server = start_tls(app()).await;
    let client = client(&server.ca_pem, server.addr);
    // `/v1/ungated` is not in the policy, so the gate refuses it; serve a router with no gate at all to reach it.
    let r = client
        .get(format!(
            "https://localhost:{}/v1/ungated",
            server.addr.port()
        ))
        .header("x-api-key", KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403, "unlisted in the policy");
    let bare = Router::new()
        .route(
            "/v1/ungated",
            get(|grant: Grant| async move { grant.principal().to_owned() }),
        )
        .route(
            "/v1/decision",
            get(|allowed: Allowed| async move { allowed.route().to_owned() }),
        );
    let bare_server = start_tls(bare).await;
    let client = client_for(&bare_server);
    let r = client
        .get(format!(
            "https://localhost:{}/v1/ungated",
            bare_server.addr.port()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 500);
    // Nor is there a decision to extract without the gate.
    let r = client
        .get(format!(
            "https://localhost:{}/v1/decision",
            bare_server.addr.port()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 500);
}

fn client_for(server: &TlsServer) -> reqwest::Client {
    client(&server.ca_pem, server.addr)
}

mod jwt_over_tls {
    use std::time::Duration;

    use aws_lc_rs::rand::SystemRandom;
    use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair};
    use axum::Router;
    use axum::routing::get;
    use scopegate::Grant;
    use scopegate::credential::jwt::{
        JwtAuthenticator, KeySet, MintRequest, SigningKey, TokenIssuer,
    };
    use scopegate::layer::ScopeGateLayer;
    use scopegate::network::CidrSet;
    use scopegate::policy::{Policy, Route, ScopeSet};

    use super::{client, start_tls};

    fn issuer() -> TokenIssuer {
        let der =
            EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new())
                .unwrap();
        let key = SigningKey::es256_from_pkcs8_der(der.as_ref()).unwrap();
        TokenIssuer::new(key, "key-2026", "https://issuer.test", "orders-api")
    }

    #[tokio::test]
    async fn minted_tokens_through_the_gate_over_tls() {
        let issuer = issuer();
        let auth = JwtAuthenticator::builder()
            .algorithms([scopegate::credential::jwt::Algorithm::ES256])
            .key_set(KeySet::from_jwks_json(issuer.jwks_json().as_bytes()).unwrap())
            .issuer("https://issuer.test")
            .audience("orders-api")
            .attr_claims(["tenant"])
            .build()
            .unwrap();
        let policy = Policy::builder()
            .route(
                Route::get("/v1/tenants/{tenant}/orders")
                    .require_all(["orders:read"])
                    .bind("tenant", "tenant"),
            )
            .build()
            .unwrap();
        let gate = ScopeGateLayer::builder(policy).jwt(auth).build().unwrap();
        let app = Router::new()
            .route(
                "/v1/tenants/{tenant}/orders",
                get(|g: Grant| async move { format!("{} {:?}", g.principal(), g.kind()) }),
            )
            .layer(gate);
        let server = start_tls(app).await;
        let client = client(&server.ca_pem, server.addr);
        let base = format!("https://localhost:{}/v1/tenants", server.addr.port());

        let mint = |scopes: &[&str], allow: Option<&str>| {
            let mut req = MintRequest::new(
                "user-7",
                ScopeSet::parse(scopes).unwrap(),
                Duration::from_secs(300),
            )
            .attribute("tenant", "acme");
            if let Some(cidr) = allow {
                req = req.allow_ips([cidr.parse().unwrap()].into_iter().collect::<CidrSet>());
            }
            issuer.issue(&req).unwrap().expose_str().unwrap().to_owned()
        };

        let token = mint(&["orders:read"], None);
        let r = client
            .get(format!("{base}/acme/orders"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.text().await.unwrap(), "user-7 Jwt");
        // Deny twins: another tenant, a missing scope, an address outside the token's allowlist, a forged token.
        let r = client
            .get(format!("{base}/globex/orders"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 403);
        let r = client
            .get(format!("{base}/acme/orders"))
            .bearer_auth(mint(&["orders:write"], None))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 403);
        assert!(
            r.headers()["www-authenticate"]
                .to_str()
                .unwrap()
                .contains("scope=\"orders:read\"")
        );
        let r = client
            .get(format!("{base}/acme/orders"))
            .bearer_auth(mint(&["orders:read"], Some("10.0.0.0/8")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 403, "loopback is outside 10.0.0.0/8");
        let r = client
            .get(format!("{base}/acme/orders"))
            .bearer_auth(mint(&["orders:read"], Some("127.0.0.0/8")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "inside the token's allowlist");
        let forged = crate::tamper_signature(&token);
        let r = client
            .get(format!("{base}/acme/orders"))
            .bearer_auth(forged)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401);
        assert_eq!(
            r.headers()["www-authenticate"],
            "Bearer realm=\"scopegate\", error=\"invalid_token\""
        );
    }
}

#[tokio::test]
async fn in_handler_denials_are_answered_like_the_gates() {
    use scopegate::network::ConnectionInfo;
    use scopegate::policy::{Denial, Scope};
    use tower::ServiceExt;

    let policy = Policy::builder()
        .route(Route::get("/v1/reports/{id}").require_all(["reports:read"]))
        .build()
        .unwrap();
    let credentials = StaticCredentials::new()
        .with(
            "sg_reader",
            &TestGrant::api_key("reader").scopes(["reports:read"]),
        )
        .with(
            "sg_auditor",
            &TestGrant::api_key("auditor").scopes(["reports:read", "reports:confidential"]),
        );
    let gate = ScopeGateLayer::builder(policy)
        .api_keys(credentials)
        .danger_disable_throttle()
        .build()
        .unwrap();
    let app = Router::new()
        .route(
            "/v1/reports/{id}",
            get(|grant: Grant| async move {
                grant.require(&Scope::parse("reports:confidential").unwrap())?;
                Ok::<_, Denial>(format!("report for {}", grant.principal()))
            }),
        )
        .layer(gate);
    let call = |key: &'static str| {
        let app = app.clone();
        async move {
            let mut req = http::Request::get("/v1/reports/1")
                .header("x-api-key", key)
                .body(axum::body::Body::empty())
                .unwrap();
            req.extensions_mut().insert(ConnectionInfo {
                peer: Some("192.0.2.1".parse().unwrap()),
                tls: true,
            });
            app.oneshot(req).await.unwrap()
        }
    };
    let denied = call("sg_reader").await;
    assert_eq!(denied.status(), 403);
    assert_eq!(
        denied.headers()["www-authenticate"],
        "Bearer realm=\"scopegate\", error=\"insufficient_scope\", scope=\"reports:confidential\""
    );
    assert_eq!(denied.headers()["content-type"], "application/problem+json");
    let allowed = call("sg_auditor").await;
    assert_eq!(allowed.status(), 200);
}

mod every_reason_over_tls {
    //! Every reason kind, on the wire, from a real axum server over real TLS, with API keys in a real `SQLite` file.

    use std::collections::BTreeMap;
    use std::num::NonZeroU32;
    use std::sync::Arc;
    use std::time::{Duration, SystemTime};

    use axum::Router;
    use axum::routing::{get, post};
    use scopegate::credential::api_key::{
        ApiKeyVerifier, CacheConfig, KeyCache, KeyFormat, KeyIssuer, KeyStore, NewKey, OpenMode,
        Pepper, Peppers, SqliteKeyStore,
    };
    use scopegate::layer::{AuditEvent, AuditSink, ScopeGateLayer, ThrottleConfig};
    use scopegate::network::{Cidr, CidrSet};
    use scopegate::policy::{Policy, Route, ScopeSet};
    use scopegate::{Grant, ManualClock};

    #[derive(Clone, Default)]
    struct Reasons(Arc<std::sync::Mutex<Vec<String>>>);

    impl AuditSink for Reasons {
        fn record(&self, event: &AuditEvent<'_>) {
            self.0.lock().unwrap().push(event.reason.to_owned());
        }
    }

    fn new_key(scopes: &[&str]) -> NewKey {
        NewKey::new("test", ScopeSet::parse(scopes).unwrap())
    }

    #[tokio::test]
    async fn every_reason_kind_on_the_wire() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("keys.db").display());
        let sqlite = Arc::new(
            SqliteKeyStore::open(&url, OpenMode::CreateIfMissing)
                .await
                .unwrap(),
        );
        let store: Arc<dyn KeyStore> = sqlite.clone();
        let clock = ManualClock::new(SystemTime::now());
        let pepper = || Peppers::single(Pepper::new(1, vec![42; 32]).unwrap());
        let issuer = KeyIssuer::new(
            store.clone(),
            KeyFormat::default(),
            pepper(),
            Arc::new(clock.clone()),
        );
        let tenant: BTreeMap<String, String> = [("tenant".to_owned(), "acme".to_owned())].into();
        let reader = issuer
            .issue(new_key(&["invoices:read"]).attributes(tenant))
            .await
            .unwrap();
        let expiring = issuer
            .issue(new_key(&["invoices:read"]).expires_in(Duration::from_secs(60)))
            .await
            .unwrap();
        let revoked = issuer.issue(new_key(&["invoices:read"])).await.unwrap();
        issuer.revoke(revoked.id()).await.unwrap();
        let elsewhere: CidrSet = ["10.0.0.0/8".parse::<Cidr>().unwrap()]
            .into_iter()
            .collect();
        let pinned = issuer
            .issue(new_key(&["invoices:read"]).allow_ips(elsewhere))
            .await
            .unwrap();
        clock.advance(Duration::from_secs(120));
        // A cache with no TTL, so that the store failure below is seen at once.
        let cache = Arc::new(KeyCache::new(
            store,
            CacheConfig::default().ttl(Duration::ZERO),
        ));
        let verifier = ApiKeyVerifier::builder(pepper(), cache)
            .clock(clock.clone())
            .build();

        let policy = Policy::builder()
            .route(
                Route::get("/v1/tenants/{tenant}/invoices/{id}")
                    .require_all(["invoices:read"])
                    .bind("tenant", "tenant"),
            )
            .route(
                Route::post("/v1/tenants/{tenant}/invoices")
                    .require_all(["invoices:write"])
                    .bind("tenant", "tenant"),
            )
            .build()
            .unwrap();
        let reasons = Reasons::default();
        let throttle =
            ThrottleConfig::per_minute(NonZeroU32::new(1).unwrap(), NonZeroU32::new(8).unwrap());
        let gate = ScopeGateLayer::builder(policy)
            .api_keys(verifier)
            .throttle(throttle)
            .audit(reasons.clone())
            .build()
            .unwrap();
        let app = Router::new()
            .route(
                "/v1/tenants/{tenant}/invoices/{id}",
                get(|g: Grant| async move { g.principal().to_owned() }),
            )
            .route(
                "/v1/tenants/{tenant}/invoices",
                post(|g: Grant| async move { g.principal().to_owned() }),
            )
            .layer(gate);
        let server = super::start_tls(app.clone()).await;
        let plain_addr = super::start_plaintext(app).await;
        let https = super::client_for(&server);
        let tls_addr = server.addr;
        let base = format!("https://localhost:{}/v1/tenants", tls_addr.port());
        let key = |k: &scopegate::credential::api_key::IssuedKey| {
            k.key().expose_str().unwrap().to_owned()
        };

        let expect = |status: u16, code: &'static str| {
            move |r: (u16, String)| {
                assert_eq!(r.0, status, "{code}: {}", r.1);
                assert!(
                    r.1.contains(&format!("\"code\":\"{code}\""))
                        || (status == 200 && code.is_empty()),
                    "{code}: {}",
                    r.1
                );
            }
        };
        let send = |req: reqwest::RequestBuilder| async move {
            let r = req.send().await.unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        };

        expect(200, "")(
            send(
                https
                    .get(format!("{base}/acme/invoices/7"))
                    .header("x-api-key", key(&reader)),
            )
            .await,
        );
        expect(403, "tls_required")(
            send(
                reqwest::Client::new()
                    .get(format!("http://{plain_addr}/v1/tenants/acme/invoices/7"))
                    .header("x-api-key", key(&reader)),
            )
            .await,
        );
        expect(400, "malformed_request")(
            send(
                https
                    .get(format!("{base}/acme%2Finvoices/7"))
                    .header("x-api-key", key(&reader)),
            )
            .await,
        );
        expect(401, "unauthenticated")(send(https.get(format!("{base}/acme/invoices/7"))).await);
        expect(401, "unauthenticated")(
            send(
                https
                    .get(format!("{base}/acme/invoices/7"))
                    .header("x-api-key", "sg_nope"),
            )
            .await,
        );
        expect(401, "unauthenticated")(
            send(
                https
                    .get(format!("{base}/acme/invoices/7"))
                    .header("x-api-key", key(&expiring)),
            )
            .await,
        );
        expect(401, "unauthenticated")(
            send(
                https
                    .get(format!("{base}/acme/invoices/7"))
                    .header("x-api-key", key(&revoked)),
            )
            .await,
        );
        expect(403, "forbidden")(
            send(
                https
                    .get(format!("{base}/acme/invoices/7"))
                    .header("x-api-key", key(&pinned)),
            )
            .await,
        );
        expect(403, "forbidden")(
            send(
                https
                    .get(format!("{base}/acme/unlisted"))
                    .header("x-api-key", key(&reader)),
            )
            .await,
        );
        expect(403, "insufficient_scope")(
            send(
                https
                    .post(format!("{base}/acme/invoices"))
                    .header("x-api-key", key(&reader)),
            )
            .await,
        );
        expect(403, "forbidden")(
            send(
                https
                    .get(format!("{base}/globex/invoices/7"))
                    .header("x-api-key", key(&reader)),
            )
            .await,
        );
        // The store fails while answering: 503, never 200.
        sqlite.close().await;
        expect(503, "unavailable")(
            send(
                https
                    .get(format!("{base}/acme/invoices/7"))
                    .header("x-api-key", key(&reader)),
            )
            .await,
        );
        // Failures so far: sg_nope, expired, revoked (3 of a burst of 8; `unavailable` is not counted). Five more
        // (refused by their checksum, before the store) reach the burst; the next failure locks the client out.
        for _ in 0..6 {
            send(
                https
                    .get(format!("{base}/acme/invoices/7"))
                    .header("x-api-key", "sg_guess"),
            )
            .await;
        }
        let r = https
            .get(format!("{base}/acme/invoices/7"))
            .header("x-api-key", key(&reader))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 429);
        assert!(
            r.headers()["retry-after"]
                .to_str()
                .unwrap()
                .parse::<u64>()
                .unwrap()
                >= 1
        );
        let seen = reasons.0.lock().unwrap().clone();
        for reason in [
            "granted",
            "tls_required",
            "malformed_request",
            "missing_credential",
            "invalid_credential",
            "expired_credential",
            "revoked_credential",
            "ip_not_allowed",
            "no_policy",
            "insufficient_scope",
            "resource_not_permitted",
            "throttled",
            "unavailable",
        ] {
            assert!(
                seen.iter().any(|r| r == reason),
                "{reason} not seen in {seen:?}"
            );
        }
    }
}
