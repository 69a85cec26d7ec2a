//! `scopegate token mint`.

use std::path::PathBuf;
use std::time::Duration;

use crate::{Failure, values};
use scopegate::credential::jwt::{MintRequest, SigningKey, TokenIssuer};

/// The longest lifetime `token mint` signs.
const MAX_MINT_LIFETIME: Duration = Duration::from_secs(24 * 3600);

/// Arguments of `token mint`.
#[derive(Debug, clap::Args)]
pub(crate) struct MintArgs {
    /// PEM file with the signing key (PKCS#8 Ed25519 or P-256).
    #[arg(long, value_name = "PEM")]
    signing_key: PathBuf,
    /// Key id (`kid`) the verifying key set knows the key under.
    #[arg(long)]
    kid: String,
    /// `iss` claim.
    #[arg(long)]
    issuer: String,
    /// `aud` claim.
    #[arg(long)]
    audience: String,
    /// `sub` claim.
    #[arg(long)]
    subject: String,
    /// Granted scope (repeat for several).
    #[arg(long = "scope", value_name = "S", required = true)]
    scopes: Vec<String>,
    /// Network the token may be used from (repeat for several).
    #[arg(long = "allow-ip", value_name = "CIDR")]
    allow_ips: Vec<String>,
    /// Lifetime. Defaults to 15m; at most 24h (minted tokens cannot be revoked).
    #[arg(
        long,
        value_name = "DURATION",
        default_value = "15m",
        allow_hyphen_values = true
    )]
    expires_in: String,
}

pub(crate) fn mint(args: &MintArgs) -> Result<(), Failure> {
    let lifetime =
        values::positive_duration("--expires-in", &args.expires_in).map_err(Failure::usage)?;
    if lifetime > MAX_MINT_LIFETIME {
        return Err(Failure::usage(format!(
            "--expires-in: {} is longer than 24h (minted tokens cannot be revoked)",
            args.expires_in
        )));
    }
    let kid = values::text("--kid", &args.kid).map_err(Failure::usage)?;
    let iss = values::text("--issuer", &args.issuer).map_err(Failure::usage)?;
    let aud = values::text("--audience", &args.audience).map_err(Failure::usage)?;
    let subject = values::text("--subject", &args.subject).map_err(Failure::usage)?;
    let scopes = values::scopes(&args.scopes).map_err(Failure::usage)?;
    let allow_ips = values::cidrs(&args.allow_ips).map_err(Failure::usage)?;
    let bad_key = |e: &dyn std::fmt::Display| {
        Failure::usage(format!("--signing-key {}: {e}", args.signing_key.display()))
    };
    let pem = std::fs::read(&args.signing_key).map_err(|e| bad_key(&e))?;
    let key = SigningKey::from_pem(&pem).map_err(|e| bad_key(&e))?;
    let issuer = TokenIssuer::new(key, kid, iss, aud).max_lifetime(MAX_MINT_LIFETIME);
    let mut request = MintRequest::new(subject, scopes, lifetime);
    if let Some(set) = allow_ips {
        request = request.allow_ips(set);
    }
    let token = issuer
        .issue(&request)
        .map_err(|e| Failure::usage(format!("token mint: {e}")))?;
    let text = token
        .expose_str()
        .ok_or_else(|| Failure::usage("token mint: the token is not text"))?;
    println!("{text}");
    Ok(())
}
