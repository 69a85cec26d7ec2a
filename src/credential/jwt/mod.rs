//! JWT bearer tokens: verification against pinned algorithms and a `kid`-selected key set, a verified-token
//! cache, and minting of short-lived scoped tokens.
//!
//! ```
//! use std::time::Duration;
//! use aws_lc_rs::{rand::SystemRandom, signature::Ed25519KeyPair};
//! use scopegate::credential::jwt::Algorithm;
//! use scopegate::credential::jwt::{JwtAuthenticator, KeySet, MintRequest, SigningKey, TokenIssuer};
//! use scopegate::policy::{DenialKind, Scope, ScopeSet};
//!
//! // A signing key (in real life: a PEM file, or your identity provider).
//! let der = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).unwrap();
//! let key = SigningKey::ed25519_from_pkcs8_der(der.as_ref()).unwrap();
//! let issuer = TokenIssuer::new(key, "key-1", "https://issuer.example", "orders-api");
//!
//! let auth = JwtAuthenticator::builder()
//!     .algorithms([Algorithm::EdDSA])
//!     .key_set(KeySet::from_jwks_json(issuer.jwks_json().as_bytes()).unwrap())
//!     .issuer("https://issuer.example")
//!     .audience("orders-api")
//!     .build()
//!     .unwrap();
//!
//! let scopes = ScopeSet::parse(["orders:read"]).unwrap();
//! let token = issuer.issue(&MintRequest::new("svc-billing", scopes, Duration::from_secs(300))).unwrap();
//! let token = token.expose_str().unwrap();
//!
//! // Allowed: the grant carries the subject and the scopes.
//! let grant = auth.verify(token).unwrap();
//! assert_eq!(grant.principal(), "svc-billing");
//! assert!(grant.scopes().covers(&Scope::parse("orders:read").unwrap()));
//!
//! // Refused: one byte of the payload changed.
//! let mut forged = token.to_owned().into_bytes();
//! let i = forged.iter().position(|b| *b == b'.').unwrap() + 5;
//! forged[i] = if forged[i] == b'A' { b'B' } else { b'A' };
//! let denial = auth.verify(std::str::from_utf8(&forged).unwrap()).unwrap_err();
//! assert_eq!(denial.kind(), DenialKind::InvalidCredential);
//! ```
//!
//! # What is checked, in order
//! 1. Length: at most [`JwtAuthenticatorBuilder::max_token_len`] bytes (8 KiB by default), before any decoding.
//! 2. The verified-token cache (a hit returns the remembered grant if the token has not expired since).
//! 3. Shape: three non-empty base64url segments (five, a JWE, is refused; so is an empty signature).
//! 4. Header, parsed with duplicate member names refused: `alg` one of the configured algorithms exactly
//!    (`none` never is); no `crit` (nor `b64`), `jku`, `x5u`, `jwk`, `x5c`, `enc` or `zip`; `cty` not `JWT`;
//!    `typ` among the required values when configured.
//! 5. Key: by exact `kid`; without a `kid`, the only key that fits `alg`. The key's own `kty`/`crv`/`alg`/`use`
//!    decide which algorithms it verifies, so an HS256 token can never be checked against an RSA or EC key.
//! 6. Signature, with a verifier parsed once per key.
//! 7. Claims, parsed with duplicate member names refused: `exp` (required number; past → `expired_credential`),
//!    `nbf`, `iat` (numbers; future → refused), `iss`, `aud`, `sub` (required string), scopes, allowlist and
//!    attribute claims. Time comes from the injected [`Clock`](crate::Clock), not from the system, and all time
//!    arithmetic saturates.
//!
//! Every refusal is a [`Denial`](crate::policy::Denial) of kind `invalid_credential`, `expired_credential` or
//! `unavailable` (a live key set not fetched yet, too stale, or possibly lacking the token's key after a failed
//! fetch); the precise reason is in its [`detail`](crate::policy::Denial::detail),
//! and the token itself is never in an error or a log line. See `docs/jwt.md` for the threat model.

mod algorithm;
mod cache;
mod claims;
mod config;
#[cfg(feature = "jwks-https")]
mod https;
mod keyset;
mod live;
mod mint;
mod verify;

pub use algorithm::{Algorithm, UnknownAlgorithm};
pub use config::{
    DEFAULT_ALLOW_IPS_CLAIM, DEFAULT_CACHE_CAPACITY, DEFAULT_LEEWAY, DEFAULT_MAX_TOKEN_LEN,
    DEFAULT_SCOPE_CLAIM, JwtAuthenticatorBuilder, MAX_LEEWAY,
};
#[cfg(feature = "jwks-https")]
pub use https::{FetchError, HttpsFetcher, HttpsFetcherBuilder};
pub use keyset::{
    JwksDocument, JwksFetch, JwksFetchError, JwksSource, KeySet, KeySetError, MIN_RSA_BITS,
};
pub use live::{DEFAULT_REFRESH_INTERVAL, KeyRefresh};
pub use mint::{
    DEFAULT_MAX_LIFETIME, MAX_LIFETIME, MintError, MintRequest, SigningKey, TokenIssuer,
};
pub use verify::{JwtAuthenticator, RefreshError};
