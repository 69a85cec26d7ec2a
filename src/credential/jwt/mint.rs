//! Minting short-lived, scoped tokens (`scopegate token mint`, users' tests, and down-scoping a grant).

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use aws_lc_rs::rand::{SecureRandom as _, SystemRandom};
use aws_lc_rs::signature::{self, EcdsaKeyPair, Ed25519KeyPair, KeyPair as _};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::EncodingKey;

use super::algorithm::Algorithm;
use serde_json::{Map, Value, json};

use crate::network::{Cidr, CidrSet};
use crate::policy::ScopeSet;
use crate::{Attributes, Clock, Grant, Secret, SystemClock};

/// Default longest lifetime of a minted token.
pub const DEFAULT_MAX_LIFETIME: Duration = Duration::from_secs(60 * 60);
/// The longest lifetime a [`TokenIssuer`] can be configured for.
pub const MAX_LIFETIME: Duration = Duration::from_secs(24 * 60 * 60);

/// Why a key could not be loaded or a token could not be minted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MintError {
    /// The signing key is not an unencrypted PKCS#8 Ed25519 or P-256 private key.
    #[error("signing key: {0}")]
    InvalidKey(&'static str),
    /// The lifetime is zero or longer than the issuer's maximum.
    #[error("token lifetime must be more than 0 s and at most {max:?}")]
    Lifetime {
        /// The issuer's maximum.
        max: Duration,
    },
    /// A bare `*` or a wildcard scope was requested: minted tokens carry concrete scopes only.
    #[error("minted tokens carry concrete scopes only (no '*', no 'prefix:*')")]
    WildcardScope,
    /// Down-scoping asked for a scope the grant does not cover.
    #[error("a down-scoped token may only carry scopes its grant covers")]
    ScopeWidening,
    /// Down-scoping dropped or widened the grant's IP allowlist.
    #[error("a down-scoped token must keep its grant's IP allowlist or narrow it")]
    AllowlistWidening,
    /// An attribute would overwrite a registered or scope claim.
    #[error("attribute {0:?} would overwrite a reserved claim")]
    ReservedAttribute(String),
    /// An empty subject.
    #[error("the subject is empty")]
    EmptySubject,
    /// Down-scoping a grant whose credential has already expired.
    #[error("the grant being exchanged has expired")]
    GrantExpired,
    /// The crypto backend failed to sign.
    #[error("signing failed")]
    Signing,
}

/// A private key for minting: Ed25519 (`EdDSA`) or P-256 (`ES256`). `Debug` never shows it.
pub struct SigningKey(KeyKind);

enum KeyKind {
    Ed25519(Ed25519KeyPair),
    Es256(EcdsaKeyPair),
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SigningKey({:?}, [REDACTED])", self.algorithm())
    }
}

impl SigningKey {
    /// An Ed25519 key from PKCS#8 DER.
    pub fn ed25519_from_pkcs8_der(der: &[u8]) -> Result<Self, MintError> {
        Ed25519KeyPair::from_pkcs8(der)
            .map(|k| SigningKey(KeyKind::Ed25519(k)))
            .map_err(|_| MintError::InvalidKey("not a PKCS#8 Ed25519 private key"))
    }

    /// A P-256 key from PKCS#8 DER.
    pub fn es256_from_pkcs8_der(der: &[u8]) -> Result<Self, MintError> {
        EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, der)
            .map(|k| SigningKey(KeyKind::Es256(k)))
            .map_err(|_| MintError::InvalidKey("not a PKCS#8 P-256 private key"))
    }

    /// A key from PEM (`-----BEGIN PRIVATE KEY-----`, PKCS#8): Ed25519 or P-256, whichever it is.
    pub fn from_pem(pem: &[u8]) -> Result<Self, MintError> {
        if let Ok(k) = EncodingKey::from_ed_pem(pem)
            && let Ok(key) = Self::ed25519_from_pkcs8_der(k.as_bytes())
        {
            return Ok(key);
        }
        if let Ok(k) = EncodingKey::from_ec_pem(pem)
            && let Ok(key) = Self::es256_from_pkcs8_der(k.as_bytes())
        {
            return Ok(key);
        }
        Err(MintError::InvalidKey(
            "not a PEM PKCS#8 Ed25519 or P-256 private key",
        ))
    }

    /// `EdDSA` or `ES256`.
    pub fn algorithm(&self) -> Algorithm {
        match self.0 {
            KeyKind::Ed25519(_) => Algorithm::EdDSA,
            KeyKind::Es256(_) => Algorithm::ES256,
        }
    }

    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, MintError> {
        match &self.0 {
            KeyKind::Ed25519(k) => Ok(k.sign(message).as_ref().to_vec()),
            KeyKind::Es256(k) => k
                .sign(&SystemRandom::new(), message)
                .map(|s| s.as_ref().to_vec())
                .map_err(|_| MintError::Signing),
        }
    }

    fn public_jwk(&self, kid: &str) -> Value {
        match &self.0 {
            KeyKind::Ed25519(k) => json!({
                "kty": "OKP", "crv": "Ed25519", "alg": "EdDSA", "use": "sig", "kid": kid,
                "x": URL_SAFE_NO_PAD.encode(k.public_key().as_ref()),
            }),
            KeyKind::Es256(k) => {
                // Uncompressed SEC1 point: 0x04 || x || y.
                let xy = k.public_key().as_ref().get(1..).unwrap_or_default();
                let (x, y) = xy.split_at(xy.len() / 2);
                json!({
                    "kty": "EC", "crv": "P-256", "alg": "ES256", "use": "sig", "kid": kid,
                    "x": URL_SAFE_NO_PAD.encode(x), "y": URL_SAFE_NO_PAD.encode(y),
                })
            }
        }
    }
}

/// What to put in a minted token.
#[derive(Debug, Clone)]
#[must_use]
pub struct MintRequest {
    subject: String,
    scopes: ScopeSet,
    allow_ips: Option<CidrSet>,
    attributes: Attributes,
    lifetime: Duration,
}

impl MintRequest {
    /// A token for `subject` with `scopes` (concrete scopes only), valid for `lifetime`.
    pub fn new(subject: impl Into<String>, scopes: ScopeSet, lifetime: Duration) -> Self {
        MintRequest {
            subject: subject.into(),
            scopes,
            allow_ips: None,
            attributes: Attributes::new(),
            lifetime,
        }
    }

    /// Restricts the token to these networks (an empty set: to no address).
    pub fn allow_ips(mut self, networks: CidrSet) -> Self {
        self.allow_ips = Some(networks);
        self
    }

    /// Adds an attribute claim (e.g. `tenant`).
    pub fn attribute(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.attributes.insert(name.into(), value.into());
        self
    }
}

/// Signs short-lived access tokens (RFC 9068 shape, header `typ: at+jwt`) that a [`super::JwtAuthenticator`]
/// configured with [`TokenIssuer::jwks_json`], the same issuer and audience (and the same scope and allowlist claim
/// names) accepts.
#[must_use]
pub struct TokenIssuer {
    key: SigningKey,
    kid: String,
    issuer: String,
    audience: String,
    max_lifetime: Duration,
    scope_claim: String,
    allow_ips_claim: String,
    clock: Arc<dyn Clock>,
}

impl fmt::Debug for TokenIssuer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenIssuer")
            .field("key", &self.key)
            .field("kid", &self.kid)
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("max_lifetime", &self.max_lifetime)
            .finish_non_exhaustive()
    }
}

const RESERVED_CLAIMS: [&str; 9] = [
    "iss", "sub", "aud", "exp", "nbf", "iat", "jti", "scope", "scp",
];

impl TokenIssuer {
    /// An issuer signing with `key` under `kid`, for `issuer` (`iss`) and `audience` (`aud`).
    pub fn new(
        key: SigningKey,
        kid: impl Into<String>,
        issuer: impl Into<String>,
        audience: impl Into<String>,
    ) -> Self {
        TokenIssuer {
            key,
            kid: kid.into(),
            issuer: issuer.into(),
            audience: audience.into(),
            max_lifetime: DEFAULT_MAX_LIFETIME,
            scope_claim: super::DEFAULT_SCOPE_CLAIM.to_owned(),
            allow_ips_claim: super::DEFAULT_ALLOW_IPS_CLAIM.to_owned(),
            clock: Arc::new(SystemClock),
        }
    }

    /// The longest lifetime a request may ask for. Defaults to [`DEFAULT_MAX_LIFETIME`] (1 hour); values above
    /// [`MAX_LIFETIME`] (24 hours) are lowered to it: these tokens cannot be revoked.
    pub fn max_lifetime(mut self, max: Duration) -> Self {
        self.max_lifetime = max.min(MAX_LIFETIME);
        self
    }

    /// The scope claim name. Defaults to `scope`.
    pub fn scope_claim(mut self, name: impl Into<String>) -> Self {
        self.scope_claim = name.into();
        self
    }

    /// The allowlist claim name. Defaults to `allowed_ips` (the gate file's example).
    pub fn allow_ips_claim(mut self, name: impl Into<String>) -> Self {
        self.allow_ips_claim = name.into();
        self
    }

    /// The clock for `iat` and `exp`. Defaults to the system clock.
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// The signing algorithm.
    pub fn algorithm(&self) -> Algorithm {
        self.key.algorithm()
    }

    /// The public key as a JWKS document, for the verifying side.
    pub fn jwks_json(&self) -> String {
        json!({ "keys": [self.key.public_jwk(&self.kid)] }).to_string()
    }

    /// Mints a token. The result is a bearer secret: hand it to its holder, never log it.
    pub fn issue(&self, request: &MintRequest) -> Result<Secret, MintError> {
        if request.subject.is_empty() {
            return Err(MintError::EmptySubject);
        }
        if request.lifetime.is_zero() || request.lifetime > self.max_lifetime {
            return Err(MintError::Lifetime {
                max: self.max_lifetime,
            });
        }
        if request.scopes.iter().any(crate::policy::Scope::is_wildcard) {
            return Err(MintError::WildcardScope);
        }
        for name in request.attributes.keys() {
            if RESERVED_CLAIMS.contains(&name.as_str())
                || *name == self.scope_claim
                || *name == self.allow_ips_claim
            {
                return Err(MintError::ReservedAttribute(name.clone()));
            }
        }
        let now = self
            .clock
            .now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let mut jti = [0u8; 16];
        SystemRandom::new()
            .fill(&mut jti)
            .map_err(|_| MintError::Signing)?;
        let mut claims = Map::new();
        claims.insert("iss".into(), self.issuer.clone().into());
        claims.insert("sub".into(), request.subject.clone().into());
        claims.insert("aud".into(), self.audience.clone().into());
        claims.insert("iat".into(), now.into());
        claims.insert(
            "exp".into(),
            now.saturating_add(request.lifetime.as_secs()).into(),
        );
        claims.insert("jti".into(), URL_SAFE_NO_PAD.encode(jti).into());
        claims.insert(self.scope_claim.clone(), request.scopes.to_string().into());
        if let Some(ips) = &request.allow_ips {
            let list: Vec<Value> = ips
                .networks()
                .iter()
                .map(|c| Value::String(c.to_string()))
                .collect();
            claims.insert(self.allow_ips_claim.clone(), Value::Array(list));
        }
        for (k, v) in &request.attributes {
            claims.insert(k.clone(), v.clone().into());
        }
        let header = json!({
            "alg": if self.algorithm() == Algorithm::EdDSA { "EdDSA" } else { "ES256" },
            "typ": "at+jwt",
            "kid": self.kid,
        });
        let mut token = URL_SAFE_NO_PAD.encode(header.to_string());
        token.push('.');
        token.push_str(&URL_SAFE_NO_PAD.encode(Value::Object(claims).to_string()));
        let signature = self.key.sign(token.as_bytes())?;
        token.push('.');
        token.push_str(&URL_SAFE_NO_PAD.encode(signature));
        Ok(Secret::from(token))
    }

    /// Exchanges a grant (an API key's, or a token's) for a short-lived token carrying at most the grant's
    /// scopes: `scopes` must be covered by the grant's ([`ScopeSet::covers_all`]), and the token keeps the
    /// grant's IP allowlist or a narrower one (every requested network inside one of the grant's). The subject
    /// and attributes are the grant's. The token never outlives the grant: when the grant has an
    /// [`expires_at`](Grant::expires_at), the lifetime is shortened to end there.
    pub fn downscope(
        &self,
        grant: &Grant,
        scopes: ScopeSet,
        allow_ips: Option<CidrSet>,
        lifetime: Duration,
    ) -> Result<Secret, MintError> {
        if !grant.scopes().covers_all(&scopes) {
            return Err(MintError::ScopeWidening);
        }
        if let Some(granted) = grant.allow_ips() {
            let requested = allow_ips.as_ref().ok_or(MintError::AllowlistWidening)?;
            if !requested
                .networks()
                .iter()
                .all(|r| granted.networks().iter().any(|g| network_within(*r, *g)))
            {
                return Err(MintError::AllowlistWidening);
            }
        }
        let lifetime = match grant.expires_at() {
            None => lifetime,
            Some(end) => {
                let left = end
                    .duration_since(self.clock.now())
                    .map_err(|_| MintError::GrantExpired)?;
                // Whole seconds, rounded down: the token's `exp` is never after the grant's end.
                let left = Duration::from_secs(left.as_secs());
                if left.is_zero() {
                    return Err(MintError::GrantExpired);
                }
                lifetime.min(left)
            }
        };
        let mut request = MintRequest::new(grant.principal(), scopes, lifetime);
        request.allow_ips = allow_ips;
        request.attributes = grant.attributes().clone();
        self.issue(&request)
    }
}

/// Whether every address of `inner` is in `outer`.
fn network_within(inner: Cidr, outer: Cidr) -> bool {
    let (i, o) = (inner.network(), outer.network());
    i.is_ipv4() == o.is_ipv4() && o.prefix() <= i.prefix() && o.contains(i.network())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn c(s: &str) -> Cidr {
        s.parse().unwrap()
    }

    #[test]
    fn network_containment() {
        assert!(network_within(c("10.1.0.0/16"), c("10.0.0.0/8")));
        assert!(network_within(c("10.0.0.0/8"), c("10.0.0.0/8")));
        assert!(!network_within(c("10.0.0.0/7"), c("10.0.0.0/8")));
        assert!(!network_within(c("11.0.0.0/16"), c("10.0.0.0/8")));
        assert!(!network_within(c("::/0"), c("0.0.0.0/0")));
        assert!(network_within(c("2001:db8::/48"), c("2001:db8::/32")));
    }

    #[test]
    fn keys_are_checked_and_redacted() {
        assert!(
            SigningKey::from_pem(b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
                .is_err()
        );
        assert!(SigningKey::ed25519_from_pkcs8_der(b"nope").is_err());
        let der = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).unwrap();
        let key = SigningKey::ed25519_from_pkcs8_der(der.as_ref()).unwrap();
        assert_eq!(format!("{key:?}"), "SigningKey(EdDSA, [REDACTED])");
    }
}
