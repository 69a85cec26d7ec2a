//! axum with JWT bearer tokens verified against a JWKS file.
//!
//! ```sh
//! cargo run --example axum_jwt --all-features
//! ```
//!
//! An issuer (here, this program standing in for your identity provider) holds an ES256 signing key and publishes
//! its public half as a JWKS document, written to a temporary file. The API's authenticator loads that file
//! (`jwks_file`), pins the algorithm, the issuer and the audience, and copies the `tenant` claim into the grant's
//! attributes, which the policy binds to the path's `{tenant}`. A token is minted and the API called over TLS.

mod support;

use std::error::Error;
use std::time::Duration;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair};
use axum::Router;
use axum::extract::Path;
use axum::routing::get;
use scopegate::Grant;
use scopegate::credential::jwt::{
    Algorithm, JwtAuthenticator, MintRequest, SigningKey, TokenIssuer,
};
use scopegate::layer::ScopeGateLayer;
use scopegate::policy::{Policy, Route, ScopeSet};
use support::serve_on_loopback;

const ISSUER: &str = "https://login.example.com";
const AUDIENCE: &str = "orders-api";

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    // The identity provider's side: a signing key, and its public key set in a JWKS file.
    let idp = issuer("key-2026-01")?;
    let temp = tempfile::tempdir()?;
    let jwks_path = temp.path().join("jwks.json");
    std::fs::write(&jwks_path, idp.jwks_json())?;
    println!(
        "JWKS written to {}:\n  {}\n",
        jwks_path.display(),
        idp.jwks_json()
    );

    // The API's side: verify tokens against the JWKS file, pinning the algorithm, issuer and audience.
    let authenticator = JwtAuthenticator::builder()
        .algorithms([Algorithm::ES256])
        .jwks_file(&jwks_path)
        .issuer(ISSUER)
        .audience(AUDIENCE)
        .attr_claims(["tenant"])
        .build()?;
    let app = api(authenticator)?;

    // Serve over TLS on loopback (a certificate generated now).
    let (port, client) = serve_on_loopback(app).await?;

    // A short-lived token for user-7 of tenant acme, reading orders; and one signed by a key the JWKS lacks.
    let request = MintRequest::new(
        "user-7",
        ScopeSet::parse(["orders:read"])?,
        Duration::from_secs(300),
    )
    .attribute("tenant", "acme");
    let token = idp.issue(&request)?;
    let token = token.expose_str().ok_or("tokens are ASCII")?;
    let rogue = issuer("key-rogue")?.issue(&request)?;
    let rogue = rogue.expose_str().ok_or("tokens are ASCII")?;
    println!("minted for user-7 (scope orders:read, tenant acme, 5 minutes):\n  {token}\n");

    let base = format!("https://localhost:{port}/v1/tenants");
    let calls = [
        (
            "allowed: read acme's orders",
            "GET",
            format!("{base}/acme/orders"),
            token,
            200,
        ),
        (
            "refused: create an order (needs orders:write)",
            "POST",
            format!("{base}/acme/orders"),
            token,
            403,
        ),
        (
            "refused: read globex's orders (tenant binding)",
            "GET",
            format!("{base}/globex/orders"),
            token,
            403,
        ),
        (
            "refused: a token signed by a key outside the JWKS",
            "GET",
            format!("{base}/acme/orders"),
            rogue,
            401,
        ),
    ];
    let mut unexpected = 0;
    for (what, method, url, token, expect) in calls {
        let response = client
            .request(method.parse()?, &url)
            .bearer_auth(token)
            .send()
            .await?;
        let status = response.status();
        let challenge = response
            .headers()
            .get("www-authenticate")
            .and_then(|v| v.to_str().ok())
            .map(|v| format!("\n    www-authenticate: {v}"))
            .unwrap_or_default();
        let body = response.text().await?;
        println!(
            "{what}\n  {method} {url}\n  → {status}  {}{challenge}\n",
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

/// The API: reading a tenant's orders needs `orders:read`, creating one `orders:write`; `{tenant}` is bound to the
/// token's `tenant` claim.
fn api(authenticator: JwtAuthenticator) -> Result<Router, Box<dyn Error>> {
    let policy = Policy::builder()
        .route(
            Route::get("/v1/tenants/{tenant}/orders")
                .require_all(["orders:read"])
                .bind("tenant", "tenant"),
        )
        .route(
            Route::post("/v1/tenants/{tenant}/orders")
                .require_all(["orders:write"])
                .bind("tenant", "tenant"),
        )
        .build()?;
    let gate = ScopeGateLayer::builder(policy).jwt(authenticator).build()?;
    Ok(Router::new()
        .route(
            "/v1/tenants/{tenant}/orders",
            get(|grant: Grant, Path(tenant): Path<String>| async move {
                format!("orders of {tenant}, read by {}", grant.principal())
            })
            .post(|grant: Grant| async move { format!("order created by {}", grant.principal()) }),
        )
        .layer(gate))
}

/// A token issuer with a fresh ES256 key named `kid`, for [`ISSUER`] and [`AUDIENCE`].
fn issuer(kid: &str) -> Result<TokenIssuer, Box<dyn Error>> {
    let pkcs8 =
        EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new())
            .map_err(|_| "could not generate an ES256 key")?;
    let key = SigningKey::es256_from_pkcs8_der(pkcs8.as_ref())?;
    Ok(TokenIssuer::new(key, kid, ISSUER, AUDIENCE))
}
