//! axum behind an identity provider found by OpenID Connect discovery, its key rotations picked up live.
//!
//! ```sh
//! cargo run --example axum_discovery --all-features
//! # against your own provider (Keycloak, Auth0, Entra ID, …): serves on loopback until Ctrl-C
//! cargo run --example axum_discovery --all-features -- --issuer https://login.example/realms/acme \
//!     [--ca-file ca.pem] [--audience https://api.example]
//! ```
//!
//! The API is told only its provider's issuer identifier. The authenticator reads
//! `{issuer}/.well-known/openid-configuration`, checks that the document names that issuer exactly, and fetches the
//! key set from its `jwks_uri` over HTTPS: at start, in the background, and when a token names a key (`kid`) it
//! does not know, which is how the provider's key rotation reaches the API without a restart. The gate also
//! publishes RFC 9728 protected resource metadata and points its 401 challenges at it, so that an OAuth client
//! can find which provider to ask for a token.
//!
//! Without arguments, this program also stands in for the provider: an HTTPS server on loopback (its certificate
//! signed by a CA made now, which the API's fetcher is told to trust) serving the discovery document and the key
//! set, and minting ES256 tokens. It calls the API over TLS, rotates the provider's key halfway, and exits non-zero
//! if any answer is not the expected one.

mod support;

use std::error::Error;
use std::net::Ipv4Addr;
use std::process::ExitCode;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair};
use axum::Router;
use axum::http::header::CONTENT_TYPE;
use axum::routing::get;
use reqwest::Method;
use scopegate::Grant;
use scopegate::credential::jwt::{
    Algorithm, HttpsFetcher, HttpsFetcherBuilder, JwtAuthenticator, KeyRefresh, MintRequest,
    SigningKey, TokenIssuer,
};
use scopegate::layer::{ProtectedResource, ScopeGateLayer};
use scopegate::policy::{Policy, Route, ScopeSet};
use scopegate::serve::serve_tls;
use support::serve_on_loopback;
use tokio::net::TcpListener;

/// The API's resource identifier (RFC 9728), and the audience its tokens carry unless `--audience` says otherwise.
const RESOURCE: &str = "https://api.example";
const USAGE: &str = "usage: axum_discovery [--issuer https://… [--ca-file PEM] [--audience AUD]]";

#[tokio::main]
async fn main() -> ExitCode {
    let args = match Args::parse(std::env::args().skip(1)) {
        Ok(args) => args,
        Err(problem) => {
            eprintln!("axum_discovery: {problem} ({USAGE})");
            return ExitCode::from(2);
        }
    };
    let outcome = match args.issuer {
        Some(issuer) => {
            let audience = args.audience.as_deref().unwrap_or(RESOURCE);
            real_provider(&issuer, args.ca_file.as_deref(), audience).await
        }
        None => with_stand_in().await,
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("axum_discovery: {error}");
            ExitCode::FAILURE
        }
    }
}

/// The API's side: all it knows of its identity provider is the issuer identifier (and, for a provider whose
/// certificate comes from a private CA, that CA, in `fetcher`).
async fn orders_api(
    issuer: &str,
    audience: &str,
    fetcher: HttpsFetcherBuilder,
    refresh: KeyRefresh,
) -> Result<Router, Box<dyn Error>> {
    let fetcher = fetcher.timeout(Duration::from_secs(5)).build()?;
    let authenticator = JwtAuthenticator::builder()
        .algorithms([Algorithm::ES256])
        .issuer(issuer)
        .audience(audience)
        .discovery(&fetcher)
        .key_refresh(refresh)
        .build()?;
    // Fetch now, so that a wrong issuer, CA or network fails at start rather than on the first request (this also
    // starts the background refresh).
    authenticator.refresh_keys().await?;

    let policy = Policy::builder()
        .route(Route::get("/v1/orders").require_all(["orders:read"]))
        .route(Route::post("/v1/orders").require_all(["orders:write"]))
        .build()?;
    let gate = ScopeGateLayer::builder(policy)
        .jwt(authenticator)
        .protected_resource(ProtectedResource::new(RESOURCE).authorization_servers([issuer]))
        .build()?;
    Ok(Router::new()
        .route(
            "/v1/orders",
            get(|grant: Grant| async move { format!("orders, read by {}", grant.principal()) })
                .post(
                    |grant: Grant| async move { format!("order created by {}", grant.principal()) },
                ),
        )
        .layer(gate))
}

/// The whole story on loopback: a stand-in provider, the API, and calls to it.
async fn with_stand_in() -> Result<(), Box<dyn Error>> {
    let idp = StandInIdp::start().await?;
    let key_1 = idp.new_key("key-1")?;
    println!(
        "stand-in identity provider {issuer}\n  discovery: {issuer}/.well-known/openid-configuration\n  key set: \
         {issuer}/jwks\n    {}\n",
        idp.jwks(),
        issuer = idp.issuer,
    );

    // The provider's certificate comes from a private CA (made just now): the fetcher trusts it besides the system
    // roots. A token with an unknown `kid` makes the API fetch the key set at most once per cooldown (10 s by
    // default), counted from the last fetch; 1 s here, so that the rotation below is seen without a long wait.
    let fetcher = HttpsFetcher::builder().ca_pem(idp.ca_pem.clone());
    let refresh = KeyRefresh::new().unknown_kid_cooldown(Duration::from_secs(1));
    let app = orders_api(&idp.issuer, RESOURCE, fetcher, refresh).await?;
    let (port, client) = serve_on_loopback(app).await?;
    println!("API on https://localhost:{port}, key set found by discovery and fetched\n");

    let token_1 = mint(&key_1)?;
    println!(
        "minted by key-1 for svc-reports (scope orders:read, audience {RESOURCE}, 5 minutes)\n"
    );
    let mut api = Caller {
        client,
        base: format!("https://localhost:{port}"),
        unexpected: 0,
    };
    let orders = "/v1/orders";
    api.call(
        "allowed: read orders",
        Method::GET,
        orders,
        Some(&token_1),
        200,
    )
    .await?;
    api.call(
        "refused: create an order (needs orders:write)",
        Method::POST,
        orders,
        Some(&token_1),
        403,
    )
    .await?;
    api.call(
        "refused: no token (the challenge points at the resource metadata)",
        Method::GET,
        orders,
        None,
        401,
    )
    .await?;
    api.call(
        "public: the protected resource metadata (RFC 9728)",
        Method::GET,
        "/.well-known/oauth-protected-resource",
        None,
        200,
    )
    .await?;

    let key_2 = idp.new_key("key-2")?;
    let token_2 = mint(&key_2)?;
    println!(
        "the provider rotates its key: key-2 signs now, and its key set holds key-2 only\n  {}\n",
        idp.jwks()
    );
    // The API fetched the key set at start, under a second ago: wait the 1 s unknown-kid cooldown out, so that the
    // first key-2 token makes it fetch again (within the cooldown it would be refused as an unknown key).
    tokio::time::sleep(Duration::from_millis(1100)).await;
    api.call(
        "allowed: a token signed by key-2 (its unknown kid makes the API fetch the key set)",
        Method::GET,
        orders,
        Some(&token_2),
        200,
    )
    .await?;
    api.call(
        "refused: the token signed by key-1 (no longer in the key set)",
        Method::GET,
        orders,
        Some(&token_1),
        401,
    )
    .await?;

    match api.unexpected {
        0 => Ok(()),
        n => Err(format!("{n} unexpected answer(s)").into()),
    }
}

/// The gate in front of a real provider, served on loopback until Ctrl-C.
async fn real_provider(
    issuer: &str,
    ca_file: Option<&str>,
    audience: &str,
) -> Result<(), Box<dyn Error>> {
    let fetcher = match ca_file {
        Some(path) => HttpsFetcher::builder().ca_file(path),
        None => HttpsFetcher::builder(),
    };
    let app = orders_api(issuer, audience, fetcher, KeyRefresh::new()).await?;
    println!("{issuer}: key set found by discovery and fetched");

    let (tls, ca_pem) = support::ca_signed()?;
    let temp = tempfile::tempdir()?;
    let ca_path = temp.path().join("api-ca.pem");
    std::fs::write(&ca_path, ca_pem)?;
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
    let port = listener.local_addr()?.port();
    println!("listening on https://localhost:{port}");
    println!(
        "try it with an access token from {issuer} for audience {audience} with scope orders:read:"
    );
    println!(
        "  curl --cacert {} -H \"Authorization: Bearer $TOKEN\" https://localhost:{port}/v1/orders",
        ca_path.display()
    );
    println!("Ctrl-C to stop");
    serve_tls(listener, tls, app, async {
        // An error here (no signal handler) stops the server too.
        let _ = tokio::signal::ctrl_c().await;
    })
    .await?;
    drop(temp);
    Ok(())
}

/// A stand-in for the identity provider: `https://localhost:{port}` on loopback serving
/// `/.well-known/openid-configuration` and `/jwks` (the public key of its current signing key only).
struct StandInIdp {
    /// `https://localhost:{port}`: the issuer identifier, in the discovery document and in every token.
    issuer: String,
    /// The CA that signed the server's certificate.
    ca_pem: String,
    /// The key set served at `/jwks`.
    jwks: Arc<Mutex<String>>,
}

impl StandInIdp {
    async fn start() -> Result<StandInIdp, Box<dyn Error>> {
        let (tls, ca_pem) = support::ca_signed()?;
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        let issuer = format!("https://localhost:{}", listener.local_addr()?.port());
        let jwks = Arc::new(Mutex::new(r#"{"keys":[]}"#.to_owned()));
        let metadata =
            serde_json::json!({ "issuer": issuer, "jwks_uri": format!("{issuer}/jwks") })
                .to_string();
        let served = Arc::clone(&jwks);
        let router = Router::new()
            .route(
                "/.well-known/openid-configuration",
                get(move || {
                    std::future::ready(([(CONTENT_TYPE, "application/json")], metadata.clone()))
                }),
            )
            .route(
                "/jwks",
                get(move || {
                    let body = served
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .clone();
                    std::future::ready(([(CONTENT_TYPE, "application/json")], body))
                }),
            );
        tokio::spawn(serve_tls(listener, tls, router, std::future::pending()));
        Ok(StandInIdp {
            issuer,
            ca_pem,
            jwks,
        })
    }

    /// A fresh ES256 signing key named `kid`, for the audience [`RESOURCE`]; from now on the key set served holds
    /// its public key only.
    fn new_key(&self, kid: &str) -> Result<TokenIssuer, Box<dyn Error>> {
        let pkcs8 =
            EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new())
                .map_err(|_| "could not generate an ES256 key")?;
        let key = SigningKey::es256_from_pkcs8_der(pkcs8.as_ref())?;
        let signer = TokenIssuer::new(key, kid, &self.issuer, RESOURCE);
        *self.jwks.lock().unwrap_or_else(PoisonError::into_inner) = signer.jwks_json();
        Ok(signer)
    }

    /// The key set served now.
    fn jwks(&self) -> String {
        self.jwks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// A token for `svc-reports` with the scope `orders:read`, valid for 5 minutes.
fn mint(signer: &TokenIssuer) -> Result<String, Box<dyn Error>> {
    let request = MintRequest::new(
        "svc-reports",
        ScopeSet::parse(["orders:read"])?,
        Duration::from_secs(300),
    );
    let token = signer.issue(&request)?;
    Ok(token.expose_str().ok_or("tokens are ASCII")?.to_owned())
}

/// Calls the API and prints each call with its answer; counts the answers whose status was not the expected one.
struct Caller {
    client: reqwest::Client,
    base: String,
    unexpected: usize,
}

impl Caller {
    async fn call(
        &mut self,
        what: &str,
        method: Method,
        path: &str,
        token: Option<&str>,
        expect: u16,
    ) -> Result<(), Box<dyn Error>> {
        let url = format!("{}{path}", self.base);
        let line = format!("{method} {url}");
        let mut request = self.client.request(method, &url);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await?;
        let status = response.status();
        let challenge = response
            .headers()
            .get("www-authenticate")
            .and_then(|v| v.to_str().ok())
            .map(|v| format!("\n    www-authenticate: {v}"))
            .unwrap_or_default();
        let body = response.text().await?;
        let bearer = if token.is_some() {
            " (bearer token)"
        } else {
            ""
        };
        println!(
            "{what}\n  {line}{bearer}\n  → {status}  {}{challenge}\n",
            body.trim_end()
        );
        if status.as_u16() != expect {
            self.unexpected += 1;
            println!("  UNEXPECTED: wanted {expect}\n");
        }
        Ok(())
    }
}

/// `--issuer URL [--ca-file PEM] [--audience AUD]`, or nothing.
#[derive(Debug, Default)]
struct Args {
    issuer: Option<String>,
    ca_file: Option<String>,
    audience: Option<String>,
}

impl Args {
    fn parse(mut args: impl Iterator<Item = String>) -> Result<Args, String> {
        let mut parsed = Args::default();
        while let Some(flag) = args.next() {
            let slot = match flag.as_str() {
                "--issuer" => &mut parsed.issuer,
                "--ca-file" => &mut parsed.ca_file,
                "--audience" => &mut parsed.audience,
                _ => return Err(format!("unknown argument {flag:?}")),
            };
            let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
            if slot.replace(value).is_some() {
                return Err(format!("{flag} given twice"));
            }
        }
        match &parsed.issuer {
            Some(issuer) if !issuer.starts_with("https://") => {
                Err(format!("--issuer {issuer:?} is not an https:// URL"))
            }
            None if parsed.ca_file.is_some() || parsed.audience.is_some() => {
                Err("--ca-file and --audience go with --issuer".to_owned())
            }
            _ => Ok(parsed),
        }
    }
}
