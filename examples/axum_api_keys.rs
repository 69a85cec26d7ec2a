//! axum with API keys from a `SQLite` key store, tenant binding, the `Grant` extractor, and an in-handler scope check.
//!
//! ```sh
//! cargo run --example axum_api_keys --all-features
//! ```
//!
//! Two keys for tenant acme are issued into a `SQLite` file (in a temporary directory): a clerk's key that reads
//! invoices, and an accountant's key that also reads payroll. The route `/v1/tenants/{tenant}/invoices/{id}` needs
//! `invoices:read` and binds `{tenant}` to the key's `tenant` attribute, so the gate refuses another tenant's path.
//! Which invoices are payroll is only known once the handler has loaded one: the handler then asks the [`Grant`]
//! for `payroll:read` (`grant.require`), a resource-level decision the route table cannot make.

mod support;

use std::collections::HashMap;
use std::error::Error;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use scopegate::credential::api_key::{
    ApiKeyVerifier, CacheConfig, KeyCache, KeyFormat, KeyIssuer, KeyStore, NewKey, OpenMode,
    Pepper, Peppers, SqliteKeyStore,
};
use scopegate::layer::ScopeGateLayer;
use scopegate::policy::{Denial, Policy, Route, Scope, ScopeSet};
use scopegate::{Attributes, Clock, Grant, SystemClock};
use support::serve_on_loopback;

/// What the handlers share: the invoices, and the scope that payroll invoices need (parsed once, at start).
#[derive(Clone)]
struct AppState {
    invoices: Arc<HashMap<(String, String), Invoice>>,
    payroll: Scope,
}

struct Invoice {
    customer: &'static str,
    amount_cents: u64,
    payroll: bool,
}

impl AppState {
    /// Two invoices of acme: an ordinary one (7) and a payroll one (9).
    fn demo() -> Result<Self, Box<dyn Error>> {
        Ok(AppState {
            invoices: Arc::new(HashMap::from([
                (
                    ("acme".to_owned(), "7".to_owned()),
                    Invoice {
                        customer: "Wile E. Coyote",
                        amount_cents: 12_900,
                        payroll: false,
                    },
                ),
                (
                    ("acme".to_owned(), "9".to_owned()),
                    Invoice {
                        customer: "staff salaries",
                        amount_cents: 4_200_000,
                        payroll: true,
                    },
                ),
            ])),
            payroll: Scope::parse("payroll:read")?,
        })
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    // The key store: a SQLite file. It holds keyed hashes of the keys, never the keys themselves.
    let temp = tempfile::tempdir()?;
    let url = format!("sqlite://{}", temp.path().join("keys.db").display());
    let (keys, verifier) = open_store(&url).await?;

    let acme = Attributes::from([("tenant".to_owned(), "acme".to_owned())]);
    let clerk = keys
        .issue(
            NewKey::new("acme clerk", ScopeSet::parse(["invoices:read"])?).attributes(acme.clone()),
        )
        .await?;
    let accountant = keys
        .issue(
            NewKey::new(
                "acme accountant",
                ScopeSet::parse(["invoices:read", "payroll:read"])?,
            )
            .attributes(acme),
        )
        .await?;
    println!("key store {url}:");
    for info in keys.list().await? {
        println!(
            "  {} {:<16} scopes: {:?}",
            info.id,
            info.name,
            info.scopes.iter().map(Scope::as_str).collect::<Vec<_>>()
        );
    }
    println!();
    let clerk = clerk.key().expose_str().ok_or("keys are ASCII")?.to_owned();
    let accountant = accountant
        .key()
        .expose_str()
        .ok_or("keys are ASCII")?
        .to_owned();

    let app = api(verifier)?;

    // Serve over TLS on loopback (a certificate generated now), and call it.
    let (port, client) = serve_on_loopback(app).await?;
    let base = format!("https://localhost:{port}/v1/tenants");
    let calls = [
        (
            "clerk reads acme's invoice 7",
            "clerk",
            &clerk,
            format!("{base}/acme/invoices/7"),
            200,
        ),
        (
            "clerk reads acme's payroll invoice 9 (handler: needs payroll:read)",
            "clerk",
            &clerk,
            format!("{base}/acme/invoices/9"),
            403,
        ),
        (
            "accountant reads acme's payroll invoice 9",
            "accountant",
            &accountant,
            format!("{base}/acme/invoices/9"),
            200,
        ),
        (
            "accountant reads globex's invoice 7 (gate: tenant binding)",
            "accountant",
            &accountant,
            format!("{base}/globex/invoices/7"),
            403,
        ),
    ];
    let mut unexpected = 0;
    for (what, who, key, url, expect) in calls {
        let response = client
            .get(&url)
            .header("x-api-key", key.as_str())
            .send()
            .await?;
        let status = response.status();
        let body = response.text().await?;
        println!(
            "{what}\n  GET {url} as the {who}\n  → {status}  {}\n",
            body.trim_end()
        );
        if status.as_u16() != expect {
            unexpected += 1;
            println!("  UNEXPECTED: wanted {expect}\n");
        }
    }
    drop(temp);
    if unexpected == 0 {
        Ok(())
    } else {
        Err(format!("{unexpected} unexpected answer(s)").into())
    }
}

/// Opens (creating it) the `SQLite` key store at `url`, behind a cache; returns the issuer that writes keys to it and
/// the verifier the gate checks keys with.
async fn open_store(url: &str) -> Result<(KeyIssuer, ApiKeyVerifier), Box<dyn Error>> {
    let sqlite: Arc<dyn KeyStore> =
        Arc::new(SqliteKeyStore::open(url, OpenMode::CreateIfMissing).await?);
    let store = Arc::new(KeyCache::new(sqlite, CacheConfig::default()));
    // The pepper hashes the keys; in production it comes from a secret manager, e.g. `Pepper::from_env`.
    let peppers = Peppers::single(Pepper::new(1, rand::random::<[u8; 32]>().to_vec())?);
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let keys = KeyIssuer::new(
        store.clone(),
        KeyFormat::default(),
        peppers.clone(),
        clock.clone(),
    );
    let verifier = ApiKeyVerifier::builder(peppers, store).clock(clock).build();
    Ok((keys, verifier))
}

/// The API behind the gate: reading an invoice needs `invoices:read`, and `{tenant}` is bound to the key's `tenant`.
fn api(verifier: ApiKeyVerifier) -> Result<Router, Box<dyn Error>> {
    let policy = Policy::builder()
        .route(
            Route::get("/v1/tenants/{tenant}/invoices/{id}")
                .require_all(["invoices:read"])
                .bind("tenant", "tenant"),
        )
        .build()?;
    let gate = ScopeGateLayer::builder(policy).api_keys(verifier).build()?;
    let state = AppState::demo()?;
    Ok(Router::new()
        .route("/v1/tenants/{tenant}/invoices/{id}", get(read_invoice))
        .with_state(state)
        .layer(gate))
}

/// The gate has checked `invoices:read` and the tenant; the handler checks what only the invoice itself tells.
async fn read_invoice(
    grant: Grant,
    State(state): State<AppState>,
    Path((tenant, id)): Path<(String, String)>,
) -> Result<Response, Denial> {
    let Some(invoice) = state.invoices.get(&(tenant.clone(), id.clone())) else {
        return Ok(StatusCode::NOT_FOUND.into_response());
    };
    if invoice.payroll {
        // Refused exactly as the gate refuses (403 insufficient_scope), and audited on `scopegate::audit`.
        grant.require(&state.payroll)?;
    }
    let body = serde_json::json!({
        "tenant": tenant,
        "invoice": id,
        "customer": invoice.customer,
        "amount_cents": invoice.amount_cents,
        "read_by": grant.principal(),
    });
    Ok(([(CONTENT_TYPE, "application/json")], body.to_string()).into_response())
}
