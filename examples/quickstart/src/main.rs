//! The quickstart: a protected axum API on loopback over real TLS, in one command.
//!
//! ```sh
//! cargo run -p scopegate-quickstart              # demo, then serve until Ctrl-C
//! cargo run -p scopegate-quickstart -- --once    # demo, then exit (CI)
//! RUST_LOG=scopegate::audit=info cargo run -p scopegate-quickstart  # with the audit events
//! ```
//!
//! It generates a self-signed certificate (written to a temporary file for curl), issues a scoped, IP-restricted,
//! tenant-bound API key into an in-memory key store, serves the API over TLS (and, to show the refusal, over
//! plaintext on a second port behind the same gate), then calls it with a real HTTP client and prints each call as a
//! curl line you can repeat, with the status and body it got. The exit status is non-zero if any call was not
//! answered as expected.

#[path = "../../support/mod.rs"]
mod support;

use std::error::Error;
use std::net::Ipv4Addr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::Path as UrlPath;
use axum::http::StatusCode;
use axum::http::header::CONTENT_TYPE;
use axum::routing::get;
use axum::routing::post;
use scopegate::credential::api_key::{
    ApiKeyVerifier, CacheConfig, IssuedKey, KeyCache, KeyFormat, KeyIssuer, MemoryKeyStore, NewKey,
    Pepper, Peppers,
};
use scopegate::layer::{Allowed, ScopeGateLayer};
use scopegate::network::CidrSet;
use scopegate::policy::{Policy, Route, ScopeSet};
use scopegate::{Attributes, Clock, Grant, SystemClock};
use support::self_signed;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// The header the key travels in (the gate's default).
const KEY_HEADER: &str = "x-api-key";

/// The shell variable the printed curl lines read the key from, so that the secret is printed only once.
const KEY_VAR: &str = "SCOPEGATE_KEY";

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let once = match std::env::args().nth(1).as_deref() {
        None => false,
        Some("--once") => true,
        Some(other) => {
            return Err(format!("unknown argument {other:?} (the only flag is --once)").into());
        }
    };

    // The gate audits every decision as a `tracing` event: `RUST_LOG=scopegate::audit=info` shows them on stderr.
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .init();
    }

    // 1. A self-signed certificate for `localhost`, generated now, and its PEM in a temporary file for curl.
    let temp = tempfile::tempdir()?;
    let (tls, cert_pem) = self_signed()?;
    let cert_path = temp.path().join("quickstart-cert.pem");
    std::fs::write(&cert_path, &cert_pem)?;

    // 2. An API key store in memory, and a key that reads invoices, only acme's, only from 127.0.0.1.
    let (verifier, issued) = issue_key().await?;

    // 3. The policy (deny by default: only these routes exist) and the gate in front of the API.
    let app = app().layer(gate(policy()?, verifier)?);

    // 4. Two listeners on loopback behind the same gate: TLS, and plaintext (which the gate refuses).
    let (stop, stopped) = watch::channel(false);
    let tls_listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
    let plain_listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
    let ports = Ports {
        tls: tls_listener.local_addr()?.port(),
        plain: plain_listener.local_addr()?.port(),
    };
    let tls_server = tokio::spawn(scopegate::serve::serve_tls(
        tls_listener,
        tls,
        app.clone(),
        until(stopped.clone()),
    ));
    let plain_server = tokio::spawn(scopegate::serve::serve_plaintext(
        plain_listener,
        app,
        until(stopped),
    ));
    print_banner(ports, &cert_path, &issued);

    // 5. The calls, made here with a real HTTP client, printed as curl lines.
    let key = issued.key().expose_str().ok_or("an issued key is ASCII")?;
    let unexpected = demo_calls(&cert_pem, &cert_path, ports, key).await?;

    // 6. Keep serving so that the curl lines above can be pasted, unless `--once`.
    if !once && unexpected == 0 {
        println!(
            "Serving until Ctrl-C: paste the curl lines above in another terminal (after the export line)."
        );
        println!("The certificate file is removed when the quickstart stops.");
        tokio::signal::ctrl_c().await?;
        println!();
        println!("Ctrl-C: stopping.");
    }
    stop.send(true)?;
    tls_server.await??;
    plain_server.await??;
    drop(temp);
    if unexpected == 0 {
        Ok(())
    } else {
        Err(format!("{unexpected} call(s) not answered as expected").into())
    }
}

/// The two listening ports.
#[derive(Debug, Clone, Copy)]
struct Ports {
    tls: u16,
    plain: u16,
}

/// A key store in memory and, in it, a key granting `invoices:read`, usable only from 127.0.0.1, for tenant acme.
/// Returns the verifier the gate checks keys with, and the issued key (the only copy of its plaintext).
async fn issue_key() -> Result<(ApiKeyVerifier, IssuedKey), Box<dyn Error>> {
    // The pepper (the server-side hashing key) is random here; in production it comes from a secret manager.
    let peppers = Peppers::single(Pepper::new(1, rand::random::<[u8; 32]>().to_vec())?);
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let store = Arc::new(KeyCache::new(
        Arc::new(MemoryKeyStore::new()),
        CacheConfig::default(),
    ));
    let keys = KeyIssuer::new(
        store.clone(),
        KeyFormat::default(),
        peppers.clone(),
        clock.clone(),
    );
    let loopback: CidrSet = ["127.0.0.1/32".parse()?].into_iter().collect();
    let issued = keys
        .issue(
            NewKey::new("quickstart", ScopeSet::parse(["invoices:read"])?)
                .allow_ips(loopback)
                .attributes(Attributes::from([("tenant".to_owned(), "acme".to_owned())]))
                .expires_in(Duration::from_secs(24 * 3600)),
        )
        .await?;
    let verifier = ApiKeyVerifier::builder(peppers, store).clock(clock).build();
    Ok((verifier, issued))
}

fn print_banner(ports: Ports, cert_path: &Path, issued: &IssuedKey) {
    let rule = "-".repeat(96);
    let key = issued.key().expose_str().unwrap_or("(not ASCII)");
    println!("scopegate quickstart");
    println!();
    println!(
        "API over TLS:        https://localhost:{}  (certificate: {})",
        ports.tls,
        cert_path.display()
    );
    println!(
        "same API, plaintext: http://localhost:{}  (refused by the gate)",
        ports.plain
    );
    println!();
    println!("Issued API key {} (\"quickstart\"):", issued.id());
    println!("  scopes: invoices:read   allow_ips: 127.0.0.1/32   tenant: acme   expires in 24 h");
    println!();
    println!("{rule}");
    println!(
        "SECRET, shown once (only its keyed hash is stored). Set it in the shell you run curl from:"
    );
    println!();
    println!("  export {KEY_VAR}='{key}'");
    println!("{rule}");
    println!();
}

/// Makes the demonstration calls, printing each; returns how many got an unexpected status.
async fn demo_calls(
    cert_pem: &str,
    cert_path: &Path,
    ports: Ports,
    key: &str,
) -> Result<usize, Box<dyn Error>> {
    let client = support::client(cert_pem)?;
    let https = format!("https://localhost:{}", ports.tls);
    let calls = [
        Call {
            what: "allowed: the key reads an invoice of its own tenant",
            method: "GET",
            url: format!("{https}/v1/tenants/acme/invoices/7"),
            with_key: true,
            expect: 200,
        },
        Call {
            what: "refused: creating an invoice needs invoices:write, which the key lacks",
            method: "POST",
            url: format!("{https}/v1/tenants/acme/invoices"),
            with_key: true,
            expect: 403,
        },
        Call {
            what: "refused: no key",
            method: "GET",
            url: format!("{https}/v1/tenants/acme/invoices/7"),
            with_key: false,
            expect: 401,
        },
        Call {
            what: "refused: another tenant's invoice (the path's {tenant} is bound to the key's tenant)",
            method: "GET",
            url: format!("{https}/v1/tenants/globex/invoices/7"),
            with_key: true,
            expect: 403,
        },
        Call {
            what: "refused: plaintext, even with a valid key (on loopback only: a key sent in clear is burnt)",
            method: "GET",
            url: format!(
                "http://localhost:{}/v1/tenants/acme/invoices/7",
                ports.plain
            ),
            with_key: true,
            expect: 403,
        },
    ];
    let mut unexpected = 0;
    for (n, call) in calls.iter().enumerate() {
        if !call.run(n + 1, &client, key, cert_path).await? {
            unexpected += 1;
        }
    }
    if unexpected == 0 {
        println!("All {} calls were answered as expected.", calls.len());
    } else {
        println!(
            "{unexpected} of {} calls were NOT answered as expected.",
            calls.len()
        );
    }
    println!();
    Ok(unexpected)
}

fn policy() -> Result<Policy, scopegate::ConfigError> {
    Policy::builder()
        .route(Route::get("/health").public())
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
}

fn gate(policy: Policy, keys: ApiKeyVerifier) -> Result<ScopeGateLayer, scopegate::ConfigError> {
    ScopeGateLayer::builder(policy)
        .api_keys(keys)
        .hsts_max_age(Duration::from_secs(365 * 24 * 3600))
        .build()
}

/// The API. Handlers behind the gate take the [`Grant`]: the request was allowed, and by whom.
fn app() -> Router {
    Router::new()
        .route("/health", get(|| async { "ok\n" }))
        .route("/v1/tenants/{tenant}/invoices/{id}", get(read_invoice))
        .route("/v1/tenants/{tenant}/invoices", post(create_invoice))
}

async fn read_invoice(
    grant: Grant,
    allowed: Allowed,
    UrlPath((tenant, id)): UrlPath<(String, String)>,
) -> ([(axum::http::HeaderName, &'static str); 1], String) {
    let body = serde_json::json!({
        "tenant": tenant,
        "invoice": id,
        "read_by": grant.principal(),
        "from": allowed.client_ip().map(|ip| ip.to_string()),
    });
    ([(CONTENT_TYPE, "application/json")], format!("{body}\n"))
}

async fn create_invoice(grant: Grant, UrlPath(tenant): UrlPath<String>) -> (StatusCode, String) {
    (
        StatusCode::CREATED,
        format!("invoice created for {tenant} by {}\n", grant.principal()),
    )
}

/// Completes when `true` is sent on the channel (or its sender is gone).
async fn until(mut stopped: watch::Receiver<bool>) {
    let _ = stopped.wait_for(|stop| *stop).await;
}

/// One demonstration call.
struct Call {
    what: &'static str,
    method: &'static str,
    url: String,
    with_key: bool,
    expect: u16,
}

impl Call {
    /// Prints the call as a curl line, makes it, prints the answer; `Ok(true)` when the status is the expected one.
    async fn run(
        &self,
        n: usize,
        client: &reqwest::Client,
        key: &str,
        cert: &Path,
    ) -> Result<bool, Box<dyn Error>> {
        let mut curl = vec!["curl -i".to_owned()];
        if self.url.starts_with("https:") {
            curl.push(format!("--cacert '{}'", cert.display()));
        }
        if self.method != "GET" {
            curl.push(format!("-X {}", self.method));
        }
        if self.with_key {
            curl.push(format!("-H \"{KEY_HEADER}: ${KEY_VAR}\""));
        }
        curl.push(self.url.clone());
        let curl = curl.join(" ");
        println!("{n}. {}", self.what);
        println!("$ {curl}");

        let mut request = client.request(self.method.parse()?, &self.url);
        if self.with_key {
            request = request.header(KEY_HEADER, key);
        }
        let response = request.send().await?;
        let status = response.status();
        let challenge = response
            .headers()
            .get("www-authenticate")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = response.text().await?;
        let verdict = if status.as_u16() == self.expect {
            "as expected"
        } else {
            "UNEXPECTED"
        };
        println!("→ {status}  ({verdict})");
        if let Some(challenge) = challenge {
            println!("  www-authenticate: {challenge}");
        }
        println!("  {}", body.trim_end());
        println!();
        Ok(status.as_u16() == self.expect)
    }
}
