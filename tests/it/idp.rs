//! A real HTTPS identity provider, for integration tests of live JWKS fetching and OIDC / RFC 8414 discovery.
//!
//! [`Idp::start`] binds two loopback listeners and serves them over TLS (rustls, through
//! [`scopegate::serve::serve_tls`]) with a server certificate for `localhost` and `127.0.0.1` signed by a CA made
//! here: a client that trusts only [`Idp::ca_pem`] and resolves `localhost` to [`Idp::addr`] (see [`Idp::client`])
//! talks to it as to a real provider.
//!
//! The main listener (the issuer, `https://localhost:{port}`) serves:
//! - `GET /.well-known/openid-configuration` and `GET /.well-known/oauth-authorization-server` (RFC 8414): the
//!   metadata document, `{"issuer": …, "jwks_uri": "…/jwks", …}`, or 404 when switched off ([`Idp::set_discovery`]);
//!   every request to either is counted in [`Idp::discovery_fetches`];
//! - `GET /jwks`: the key set, answered as the current [`Mode`] says; every request is counted in
//!   [`Idp::jwks_fetches`];
//! - `GET /jwks-moved`: the same key set, always plainly (the same-origin redirect's target).
//!
//! The second listener, on another port, serves the same key set plainly at `GET /jwks` (the cross-origin
//! redirect's target). Requests to either redirect target are counted in [`Idp::redirect_fetches`], not in
//! [`Idp::jwks_fetches`].
//!
//! Tokens are minted by the crate's own [`TokenIssuer`] with an Ed25519 key ([`ALGORITHM`]); the key set holds
//! exactly the current public key. Both servers stop accepting connections when the [`Idp`] is dropped.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::Ed25519KeyPair;
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use scopegate::credential::jwt::{Algorithm, MintRequest, SigningKey, TokenIssuer};
use scopegate::policy::ScopeSet;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::{Notify, watch};
use tokio_rustls::rustls;

/// The algorithm of every key the provider signs with.
pub(crate) const ALGORITHM: Algorithm = Algorithm::EdDSA;
/// How long a [`Mode::Stall`]ed JWKS request waits for the mode to change before it gives up with a 503.
pub(crate) const STALL_LIMIT: Duration = Duration::from_secs(60);
/// The lifetime of the tokens [`Idp::token`] mints.
pub(crate) const TOKEN_LIFETIME: Duration = Duration::from_secs(300);

const JWKS_PATH: &str = "/jwks";
const MOVED_JWKS_PATH: &str = "/jwks-moved";
const OIDC_PATH: &str = "/.well-known/openid-configuration";
const RFC8414_PATH: &str = "/.well-known/oauth-authorization-server";
const GARBAGE: &str = "<html><body>502 Bad Gateway</body></html>";

/// How `GET /jwks` answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// 200, the key set (`application/json`).
    Normal,
    /// 500, a plain-text body.
    Fail,
    /// Holds the request until the mode changes (then answers as the new mode says), or [`STALL_LIMIT`] has passed
    /// (then 503): a client's timeout fires first.
    Stall,
    /// 200, `application/json`, a body that is not JSON.
    Garbage,
    /// 200, `application/json`, exactly this many bytes (with a `Content-Length`): the real key set followed by
    /// JSON whitespace, so the body parses as the key set if a client accepts its size. A size below the key set's
    /// own serves just the key set.
    Oversized(usize),
    /// 302 to `https://localhost:{port}/jwks-moved` (same origin), which serves the key set.
    RedirectSameOrigin,
    /// 302 to `https://localhost:{other port}/jwks` (the second listener), which serves the key set.
    RedirectCrossOrigin,
}

/// A running identity provider. See the module documentation.
#[derive(Debug)]
pub(crate) struct Idp {
    shared: Arc<Shared>,
    addr: SocketAddr,
    other_addr: SocketAddr,
    ca_pem: String,
    ca_der: Vec<u8>,
    /// Dropped with the `Idp`: both servers' shutdown futures complete then.
    _shutdown: watch::Sender<()>,
}

/// What the handlers share with the [`Idp`].
#[derive(Debug)]
struct Shared {
    issuer: String,
    audience: String,
    jwks_url: String,
    moved_jwks_url: String,
    other_jwks_url: String,
    settings: Mutex<Settings>,
    /// Woken on every [`Idp::set_mode`], for stalled requests.
    mode_changed: Notify,
    jwks_fetches: AtomicUsize,
    redirect_fetches: AtomicUsize,
    discovery_fetches: AtomicUsize,
}

/// The mutable part of the provider.
#[derive(Debug)]
struct Settings {
    mode: Mode,
    cache_control: Option<HeaderValue>,
    metadata_issuer: String,
    oidc: bool,
    rfc8414: bool,
    kid: String,
    signer: TokenIssuer,
    /// The signing key (PKCS#8), for tokens that claim another issuer.
    key_der: Vec<u8>,
}

impl Idp {
    /// Starts a provider signing under `kid` for `audience`, its issuer `https://localhost:{port}`. Starts in
    /// [`Mode::Normal`], with no `Cache-Control`, both metadata documents served and claiming the real issuer.
    pub(crate) async fn start(kid: &str, audience: &str) -> Idp {
        let (tls, ca_pem, ca_der) = tls_config();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let other_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let other_addr = other_listener.local_addr().unwrap();
        let issuer = format!("https://localhost:{}", addr.port());
        let (signer, key_der) = new_signer(kid, &issuer, audience);
        let shared = Arc::new(Shared {
            jwks_url: format!("{issuer}{JWKS_PATH}"),
            moved_jwks_url: format!("{issuer}{MOVED_JWKS_PATH}"),
            other_jwks_url: format!("https://localhost:{}{JWKS_PATH}", other_addr.port()),
            settings: Mutex::new(Settings {
                mode: Mode::Normal,
                cache_control: None,
                metadata_issuer: issuer.clone(),
                oidc: true,
                rfc8414: true,
                kid: kid.to_owned(),
                signer,
                key_der,
            }),
            issuer,
            audience: audience.to_owned(),
            mode_changed: Notify::new(),
            jwks_fetches: AtomicUsize::new(0),
            redirect_fetches: AtomicUsize::new(0),
            discovery_fetches: AtomicUsize::new(0),
        });
        let main = Router::new()
            .route(OIDC_PATH, get(oidc_metadata))
            .route(RFC8414_PATH, get(rfc8414_metadata))
            .route(JWKS_PATH, get(jwks))
            .route(MOVED_JWKS_PATH, get(redirect_target))
            .with_state(Arc::clone(&shared));
        let other = Router::new()
            .route(JWKS_PATH, get(redirect_target))
            .with_state(Arc::clone(&shared));
        let (shutdown, stopped) = watch::channel(());
        for (listener, router) in [(listener, main), (other_listener, other)] {
            let mut stopped = stopped.clone();
            tokio::spawn(scopegate::serve::serve_tls(
                listener,
                Arc::clone(&tls),
                router,
                async move {
                    // Completes (with an error) when the sender, held by the `Idp`, is dropped.
                    while stopped.changed().await.is_ok() {}
                },
            ));
        }
        Idp {
            shared,
            addr,
            other_addr,
            ca_pem,
            ca_der,
            _shutdown: shutdown,
        }
    }

    /// `https://localhost:{port}`: the tokens' `iss`, and the real issuer of the metadata documents.
    pub(crate) fn issuer(&self) -> &str {
        &self.shared.issuer
    }

    /// `https://localhost:{port}/jwks`.
    pub(crate) fn jwks_url(&self) -> String {
        self.shared.jwks_url.clone()
    }

    /// `https://localhost:{port}/.well-known/openid-configuration`.
    pub(crate) fn oidc_discovery_url(&self) -> String {
        format!("{}{OIDC_PATH}", self.shared.issuer)
    }

    /// `https://localhost:{port}/.well-known/oauth-authorization-server` (RFC 8414).
    pub(crate) fn rfc8414_discovery_url(&self) -> String {
        format!("{}{RFC8414_PATH}", self.shared.issuer)
    }

    /// The PEM of the CA that signed the server certificate: the only root a client should trust.
    pub(crate) fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// The main listener (issuer, discovery, JWKS) on 127.0.0.1: resolve `localhost` to it.
    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The second listener (the cross-origin redirect's target) on 127.0.0.1, another port.
    pub(crate) fn other_addr(&self) -> SocketAddr {
        self.other_addr
    }

    /// A client that trusts only [`Self::ca_pem`], resolves `localhost` to 127.0.0.1, follows no redirects and
    /// gives up after 10 s.
    pub(crate) fn client(&self) -> reqwest::Client {
        self.client_builder()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap()
    }

    /// [`Self::client`]'s builder without the timeout, to add one's own settings.
    pub(crate) fn client_builder(&self) -> reqwest::ClientBuilder {
        reqwest::Client::builder()
            .tls_certs_only([reqwest::Certificate::from_pem(self.ca_pem.as_bytes()).unwrap()])
            .resolve("localhost", self.addr)
            .redirect(reqwest::redirect::Policy::none())
    }

    /// Requests to `GET /jwks` so far, whatever the mode answered (a stalled request counts when it arrives).
    pub(crate) fn jwks_fetches(&self) -> usize {
        self.shared.jwks_fetches.load(Ordering::SeqCst)
    }

    /// Requests to the redirect targets so far (`/jwks-moved`, and `/jwks` on the second listener).
    pub(crate) fn redirect_fetches(&self) -> usize {
        self.shared.redirect_fetches.load(Ordering::SeqCst)
    }

    /// Requests to either metadata document so far, including those answered 404.
    pub(crate) fn discovery_fetches(&self) -> usize {
        self.shared.discovery_fetches.load(Ordering::SeqCst)
    }

    /// How `GET /jwks` answers from now on; requests stalled by [`Mode::Stall`] are answered as `mode` says.
    pub(crate) fn set_mode(&self, mode: Mode) {
        self.shared.settings().mode = mode;
        self.shared.mode_changed.notify_waiters();
    }

    /// The `Cache-Control` header of every JWKS response (whatever the mode, and on the redirect targets), or none.
    pub(crate) fn set_cache_control(&self, value: Option<&str>) {
        self.shared.settings().cache_control = value.map(|v| HeaderValue::from_str(v).unwrap());
    }

    /// The `issuer` the metadata documents claim (for mix-up tests); tokens keep the real issuer.
    pub(crate) fn set_metadata_issuer(&self, issuer: &str) {
        issuer.clone_into(&mut self.shared.settings().metadata_issuer);
    }

    /// Which metadata documents exist: OIDC discovery, RFC 8414 metadata. A missing one answers 404.
    pub(crate) fn set_discovery(&self, oidc: bool, rfc8414: bool) {
        let mut settings = self.shared.settings();
        settings.oidc = oidc;
        settings.rfc8414 = rfc8414;
    }

    /// Signs with a new key under `new_kid` from now on; the key set then holds only the new key.
    pub(crate) fn rotate(&self, new_kid: &str) {
        let mut settings = self.shared.settings();
        (settings.signer, settings.key_der) =
            new_signer(new_kid, &self.shared.issuer, &self.shared.audience);
        new_kid.clone_into(&mut settings.kid);
    }

    /// The current signing key's `kid`.
    pub(crate) fn kid(&self) -> String {
        self.shared.settings().kid.clone()
    }

    /// The key set as [`Mode::Normal`] serves it.
    pub(crate) fn jwks_json(&self) -> String {
        self.shared.settings().signer.jwks_json()
    }

    /// A token for `sub` with `scopes`, valid for [`TOKEN_LIFETIME`], signed by the current key.
    pub(crate) fn token(&self, sub: &str, scopes: &[&str]) -> String {
        let request = MintRequest::new(sub, ScopeSet::parse(scopes).unwrap(), TOKEN_LIFETIME);
        let token = self.shared.settings().signer.issue(&request).unwrap();
        token.expose_str().unwrap().to_owned()
    }
}

impl Idp {
    /// A token signed by this provider's current key (under its `kid`) that claims to come from `issuer`: what a
    /// provider whose `kid`s collide with another's could forge.
    pub(crate) fn token_claiming(&self, issuer: &str, sub: &str, scopes: &[&str]) -> String {
        let settings = self.shared.settings();
        let key = SigningKey::ed25519_from_pkcs8_der(&settings.key_der).unwrap();
        let forger = TokenIssuer::new(key, &settings.kid, issuer, &self.shared.audience);
        let request = MintRequest::new(sub, ScopeSet::parse(scopes).unwrap(), TOKEN_LIFETIME);
        forger
            .issue(&request)
            .unwrap()
            .expose_str()
            .unwrap()
            .to_owned()
    }
}

impl Shared {
    fn settings(&self) -> MutexGuard<'_, Settings> {
        self.settings.lock().unwrap()
    }

    /// The answer of `GET /jwks` in `mode` ([`Mode::Stall`]: its answer once [`STALL_LIMIT`] has passed).
    fn answer(&self, mode: Mode) -> Response {
        let settings = self.settings();
        let mut response = match mode {
            Mode::Normal => json_response(settings.signer.jwks_json()),
            Mode::Fail => (StatusCode::INTERNAL_SERVER_ERROR, "internal error").into_response(),
            Mode::Stall => (StatusCode::SERVICE_UNAVAILABLE, "stalled too long").into_response(),
            Mode::Garbage => json_response(GARBAGE.to_owned()),
            Mode::Oversized(len) => {
                let mut body = settings.signer.jwks_json();
                let padding = len.saturating_sub(body.len());
                body.extend(std::iter::repeat_n(' ', padding));
                json_response(body)
            }
            Mode::RedirectSameOrigin => redirect(&self.moved_jwks_url),
            Mode::RedirectCrossOrigin => redirect(&self.other_jwks_url),
        };
        if let Some(value) = &settings.cache_control {
            response
                .headers_mut()
                .insert(header::CACHE_CONTROL, value.clone());
        }
        response
    }

    /// A metadata document, or 404 when `exists` is false.
    fn metadata(&self, exists: impl Fn(&Settings) -> bool) -> Response {
        self.discovery_fetches.fetch_add(1, Ordering::SeqCst);
        let settings = self.settings();
        if !exists(&settings) {
            return StatusCode::NOT_FOUND.into_response();
        }
        let issuer = &self.issuer;
        json_response(
            json!({
                "issuer": settings.metadata_issuer,
                "jwks_uri": self.jwks_url,
                "authorization_endpoint": format!("{issuer}/authorize"),
                "token_endpoint": format!("{issuer}/token"),
                "response_types_supported": ["code"],
                "subject_types_supported": ["public"],
                "id_token_signing_alg_values_supported": [ALGORITHM.as_str()],
                "token_endpoint_auth_signing_alg_values_supported": [ALGORITHM.as_str()],
            })
            .to_string(),
        )
    }
}

async fn oidc_metadata(State(shared): State<Arc<Shared>>) -> Response {
    shared.metadata(|s| s.oidc)
}

async fn rfc8414_metadata(State(shared): State<Arc<Shared>>) -> Response {
    shared.metadata(|s| s.rfc8414)
}

async fn jwks(State(shared): State<Arc<Shared>>) -> Response {
    shared.jwks_fetches.fetch_add(1, Ordering::SeqCst);
    let deadline = tokio::time::Instant::now() + STALL_LIMIT;
    loop {
        // Registered before the mode is read, so that a change in between is not missed.
        let mut changed = std::pin::pin!(shared.mode_changed.notified());
        changed.as_mut().enable();
        let mode = shared.settings().mode;
        if mode != Mode::Stall {
            return shared.answer(mode);
        }
        if tokio::time::timeout_at(deadline, changed).await.is_err() {
            return shared.answer(Mode::Stall);
        }
    }
}

async fn redirect_target(State(shared): State<Arc<Shared>>) -> Response {
    shared.redirect_fetches.fetch_add(1, Ordering::SeqCst);
    shared.answer(Mode::Normal)
}

fn json_response(body: String) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

fn redirect(location: &str) -> Response {
    (StatusCode::FOUND, [(header::LOCATION, location)]).into_response()
}

/// A token issuer with a fresh Ed25519 key.
fn new_signer(kid: &str, issuer: &str, audience: &str) -> (TokenIssuer, Vec<u8>) {
    let der = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).unwrap();
    let key = SigningKey::ed25519_from_pkcs8_der(der.as_ref()).unwrap();
    (
        TokenIssuer::new(key, kid, issuer, audience),
        der.as_ref().to_vec(),
    )
}

/// A CA (`is_ca`), and a server certificate for `localhost` and 127.0.0.1 signed by it: the PEMs of the CA, the
/// certificate and its key.
pub(crate) struct Pki {
    pub(crate) ca: String,
    pub(crate) cert: String,
    pub(crate) key: String,
}

pub(crate) fn pki() -> Pki {
    use rcgen::{
        BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose,
        IsCa, KeyPair, KeyUsagePurpose,
    };

    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "scopegate test CA");
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();

    let server_key = KeyPair::generate().unwrap();
    let mut server_params =
        CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
    server_params.is_ca = IsCa::ExplicitNoCa;
    server_params
        .distinguished_name
        .push(DnType::CommonName, "localhost");
    server_params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    server_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let server_cert = server_params.signed_by(&server_key, &ca).unwrap();
    Pki {
        ca: ca.pem(),
        cert: server_cert.pem(),
        key: server_key.serialize_pem(),
    }
}

/// A rustls config serving [`pki`]'s server certificate. Returns the config, the CA's PEM and the CA's DER.
fn tls_config() -> (Arc<rustls::ServerConfig>, String, Vec<u8>) {
    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};

    let pki = pki();
    let cert = CertificateDer::from_pem_slice(pki.cert.as_bytes()).unwrap();
    let key = PrivateKeyDer::from_pem_slice(pki.key.as_bytes()).unwrap();
    let ca_der = CertificateDer::from_pem_slice(pki.ca.as_bytes()).unwrap();
    let config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)
        .unwrap();
    (Arc::new(config), pki.ca, ca_der.to_vec())
}

mod tests {
    use std::time::Duration;

    use scopegate::credential::jwt::{JwtAuthenticator, KeySet};
    use scopegate::policy::Scope;

    use super::{ALGORITHM, Idp, Mode};

    const AUDIENCE: &str = "orders-api";

    async fn get_text(client: &reqwest::Client, url: &str) -> (u16, String) {
        let r = client.get(url).send().await.unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    }

    async fn get_json(client: &reqwest::Client, url: &str) -> serde_json::Value {
        let (status, body) = get_text(client, url).await;
        assert_eq!(status, 200, "{url}: {body}");
        serde_json::from_str(&body).unwrap()
    }

    fn authenticator(idp: &Idp, jwks: &str) -> JwtAuthenticator {
        JwtAuthenticator::builder()
            .algorithms([ALGORITHM])
            .key_set(KeySet::from_jwks_json(jwks.as_bytes()).unwrap())
            .issuer(idp.issuer())
            .audience(AUDIENCE)
            .build()
            .unwrap()
    }

    #[tokio::test]
    async fn discovery_and_jwks_over_https_trusting_only_the_ca() {
        let idp = Idp::start("kid-1", AUDIENCE).await;
        assert_eq!(
            idp.issuer(),
            format!("https://localhost:{}", idp.addr().port())
        );
        assert_eq!(idp.jwks_url(), format!("{}/jwks", idp.issuer()));
        let client = idp.client_builder().tls_info(true).build().unwrap();

        // The served certificate is a leaf signed by the CA, not the CA itself.
        let r = client.get(idp.jwks_url()).send().await.unwrap();
        let leaf = r
            .extensions()
            .get::<reqwest::tls::TlsInfo>()
            .unwrap()
            .peer_certificate()
            .unwrap()
            .to_vec();
        assert!(
            leaf != idp.ca_der,
            "the server presents the CA certificate itself"
        );
        assert!(idp.ca_pem().starts_with("-----BEGIN CERTIFICATE-----"));
        // A client trusting another root refuses the server.
        let stranger = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        let untrusting = reqwest::Client::builder()
            .tls_certs_only([
                reqwest::Certificate::from_pem(stranger.cert.pem().as_bytes()).unwrap(),
            ])
            .resolve("localhost", idp.addr())
            .build()
            .unwrap();
        assert!(untrusting.get(idp.jwks_url()).send().await.is_err());

        // Both metadata documents, naming the issuer and the key set.
        for url in [idp.oidc_discovery_url(), idp.rfc8414_discovery_url()] {
            let doc = get_json(&client, &url).await;
            assert_eq!(doc["issuer"], idp.issuer());
            assert_eq!(doc["jwks_uri"], idp.jwks_url());
        }
        assert_eq!(idp.discovery_fetches(), 2);
        // Only RFC 8414, claiming another issuer.
        idp.set_discovery(false, true);
        idp.set_metadata_issuer("https://evil.example");
        let (status, _) = get_text(&client, &idp.oidc_discovery_url()).await;
        assert_eq!(status, 404);
        let doc = get_json(&client, &idp.rfc8414_discovery_url()).await;
        assert_eq!(doc["issuer"], "https://evil.example");
        idp.set_discovery(true, false);
        let (status, _) = get_text(&client, &idp.rfc8414_discovery_url()).await;
        assert_eq!(status, 404);
        assert_eq!(idp.discovery_fetches(), 5);

        // The key set, with and without Cache-Control.
        let r = client.get(idp.jwks_url()).send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert!(r.headers().get("cache-control").is_none());
        let keys = KeySet::from_jwks_json(&r.bytes().await.unwrap()).unwrap();
        assert!(keys.contains_kid("kid-1") && keys.supports(ALGORITHM));
        idp.set_cache_control(Some("max-age=60"));
        let r = client.get(idp.jwks_url()).send().await.unwrap();
        assert_eq!(r.headers()["cache-control"], "max-age=60");
        idp.set_cache_control(None);
        let r = client.get(idp.jwks_url()).send().await.unwrap();
        assert!(r.headers().get("cache-control").is_none());
        assert_eq!(idp.jwks_fetches(), 4, "the TLS probe and three fetches");
        assert_eq!(idp.redirect_fetches(), 0);
    }

    #[tokio::test]
    async fn rotation_changes_the_kid_and_tokens_verify_against_the_served_jwks() {
        let idp = Idp::start("kid-1", AUDIENCE).await;
        let client = idp.client();
        let read = Scope::parse("orders:read").unwrap();

        let old_jwks = get_text(&client, &idp.jwks_url()).await.1;
        let old_token = idp.token("user-1", &["orders:read"]);
        let grant = authenticator(&idp, &old_jwks).verify(&old_token).unwrap();
        assert_eq!(grant.principal(), "user-1");
        assert!(grant.scopes().covers(&read));

        idp.rotate("kid-2");
        assert_eq!(idp.kid(), "kid-2");
        let new_jwks = get_text(&client, &idp.jwks_url()).await.1;
        assert_eq!(new_jwks, idp.jwks_json());
        let keys = KeySet::from_jwks_json(new_jwks.as_bytes()).unwrap();
        assert!(keys.contains_kid("kid-2"));
        assert!(!keys.contains_kid("kid-1"), "only the new key is served");
        assert_eq!(keys.len(), 1);

        let new_token = idp.token("user-2", &["orders:read"]);
        // The authenticator checks `iss` and `aud`: rotation keeps both.
        let new_auth = authenticator(&idp, &new_jwks);
        assert_eq!(new_auth.verify(&new_token).unwrap().principal(), "user-2");
        assert!(new_auth.verify(&old_token).is_err(), "the old key is gone");
        assert!(
            authenticator(&idp, &old_jwks).verify(&new_token).is_err(),
            "the new key is new"
        );
        // The same kid but another key: a rotation that reuses a kid still changes the key.
        idp.rotate("kid-2");
        let reused = get_text(&client, &idp.jwks_url()).await.1;
        assert_ne!(reused, new_jwks);
        assert!(authenticator(&idp, &reused).verify(&new_token).is_err());
    }

    #[tokio::test]
    async fn every_mode_answers_as_described() {
        let idp = Idp::start("kid-1", AUDIENCE).await;
        let client = idp.client();
        let url = idp.jwks_url();

        idp.set_mode(Mode::Fail);
        assert_eq!(get_text(&client, &url).await.0, 500);

        idp.set_mode(Mode::Garbage);
        let r = client.get(&url).send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["content-type"], "application/json");
        let body = r.bytes().await.unwrap();
        assert!(serde_json::from_slice::<serde_json::Value>(&body).is_err());

        idp.set_mode(Mode::Oversized(100_000));
        let r = client.get(&url).send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.content_length(), Some(100_000));
        let body = r.bytes().await.unwrap();
        assert_eq!(body.len(), 100_000);
        assert!(KeySet::from_jwks_json(&body).unwrap().contains_kid("kid-1"));
        idp.set_mode(Mode::Oversized(10));
        assert_eq!(get_text(&client, &url).await.1, idp.jwks_json());

        idp.set_mode(Mode::RedirectSameOrigin);
        let r = client.get(&url).send().await.unwrap();
        assert_eq!(r.status(), 302);
        let location = reqwest::Url::parse(r.headers()["location"].to_str().unwrap()).unwrap();
        assert_eq!(
            location.origin(),
            reqwest::Url::parse(&url).unwrap().origin()
        );
        assert_ne!(location.path(), "/jwks");
        assert_eq!(idp.redirect_fetches(), 0, "not followed");
        assert_eq!(
            get_text(&client, location.as_str()).await.1,
            idp.jwks_json()
        );
        assert_eq!(idp.redirect_fetches(), 1);

        // Stall: a client's timeout fires.
        idp.set_mode(Mode::Stall);
        let impatient = idp
            .client_builder()
            .timeout(Duration::from_millis(300))
            .build()
            .unwrap();
        let error = impatient.get(&url).send().await.unwrap_err();
        assert!(error.is_timeout(), "{error}");
        // A stalled request is answered as soon as the mode changes.
        let before = idp.jwks_fetches();
        let stalled = tokio::spawn({
            let client = client.clone();
            let url = url.clone();
            async move { get_text(&client, &url).await }
        });
        while idp.jwks_fetches() == before {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!stalled.is_finished(), "still stalled");
        idp.set_mode(Mode::Normal);
        let (status, body) = tokio::time::timeout(Duration::from_secs(5), stalled)
            .await
            .unwrap()
            .unwrap();
        assert_eq!((status, body), (200, idp.jwks_json()));

        // Every request to /jwks counted, whatever it was answered.
        assert_eq!(idp.jwks_fetches(), 7);
        assert_eq!(idp.discovery_fetches(), 0);
    }

    #[tokio::test]
    async fn the_cross_origin_redirect_points_to_another_port() {
        let idp = Idp::start("kid-1", AUDIENCE).await;
        let client = idp.client();
        idp.set_cache_control(Some("max-age=300"));
        idp.set_mode(Mode::RedirectCrossOrigin);
        let r = client.get(idp.jwks_url()).send().await.unwrap();
        assert_eq!(r.status(), 302);
        assert_eq!(r.headers()["cache-control"], "max-age=300");
        let location = reqwest::Url::parse(r.headers()["location"].to_str().unwrap()).unwrap();
        assert_eq!(location.scheme(), "https");
        assert_eq!(location.host_str(), Some("localhost"));
        assert_eq!(location.port(), Some(idp.other_addr().port()));
        assert_ne!(location.port(), Some(idp.addr().port()));
        assert_eq!(idp.redirect_fetches(), 0, "not followed");

        // The other origin serves the same key set (the client's port in the URL wins over the resolved one).
        let r = client.get(location.as_str()).send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["cache-control"], "max-age=300");
        assert_eq!(r.text().await.unwrap(), idp.jwks_json());
        assert_eq!(idp.redirect_fetches(), 1);
        assert_eq!(idp.jwks_fetches(), 1);

        // A client that follows redirects ends up there too.
        let following = idp
            .client_builder()
            .redirect(reqwest::redirect::Policy::limited(2))
            .build()
            .unwrap();
        let r = following.get(idp.jwks_url()).send().await.unwrap();
        assert_eq!(r.url().port(), Some(idp.other_addr().port()));
        assert_eq!(r.text().await.unwrap(), idp.jwks_json());
        assert_eq!(idp.redirect_fetches(), 2);
    }
}
