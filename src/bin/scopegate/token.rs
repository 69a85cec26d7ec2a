//! `scopegate token mint`.

use std::path::PathBuf;
use std::time::Duration;

use scopegate::credential::jwt::{MintRequest, SigningKey, TokenIssuer};
use scopegate::network::{Cidr, CidrSet};
use scopegate::policy::ScopeSet;

use crate::{Failure, duration};

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
    #[arg(long, value_name = "DURATION", default_value = "15m")]
    expires_in: String,
}

pub(crate) fn mint(args: &MintArgs) -> Result<(), Failure> {
    let lifetime = duration::parse_positive(&args.expires_in)
        .map_err(|e| Failure::usage(format!("--expires-in: {e}")))?;
    if lifetime > MAX_MINT_LIFETIME {
        return Err(Failure::usage(format!(
            "--expires-in: {} is longer than 24h (minted tokens cannot be revoked)",
            args.expires_in
        )));
    }
    let scopes = parse_scopes(&args.scopes)?;
    let allow_ips = parse_cidrs(&args.allow_ips)?;
    let bad_key = |e: &dyn std::fmt::Display| {
        Failure::usage(format!("--signing-key {}: {e}", args.signing_key.display()))
    };
    let pem = std::fs::read(&args.signing_key).map_err(|e| bad_key(&e))?;
    let key = SigningKey::from_pem(&pem).map_err(|e| bad_key(&e))?;
    let issuer = TokenIssuer::new(key, &args.kid, &args.issuer, &args.audience)
        .max_lifetime(MAX_MINT_LIFETIME);
    let mut request = MintRequest::new(&args.subject, scopes, lifetime);
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

/// `--allow-ip` values: `None` when none were given (no restriction).
/// `--scope` values as a scope set, or a usage error naming the flag.
pub(crate) fn parse_scopes(values: &[String]) -> Result<ScopeSet, Failure> {
    ScopeSet::parse(values).map_err(|e| Failure::usage(format!("--scope: {e}")))
}

/// `--allow-ip` values as a network set (`None` when none are given), or a usage error naming the flag.
pub(crate) fn parse_cidrs(values: &[String]) -> Result<Option<CidrSet>, Failure> {
    if values.is_empty() {
        return Ok(None);
    }
    values
        .iter()
        .map(|v| {
            v.parse::<Cidr>()
                .map_err(|e| Failure::usage(format!("--allow-ip: {e}")))
        })
        .collect::<Result<CidrSet, _>>()
        .map(Some)
}
