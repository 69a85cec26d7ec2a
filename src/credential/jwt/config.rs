//! Building a [`JwtAuthenticator`]: every setting is checked once, here, never on the request path.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::algorithm::Algorithm;

use super::keyset::{JwksSource, KeySet, KeySetError};
use super::live::{KeyRefresh, Live};
use super::verify::{Config, JwtAuthenticator};
use crate::clock::HeldClock;
use crate::error::{ConfigError, Location};
use crate::{Clock, SystemClock};

/// Default maximum token length in bytes: larger tokens are refused before any decoding.
pub const DEFAULT_MAX_TOKEN_LEN: usize = 8 * 1024;
/// Default clock-skew allowance for `exp`, `nbf` and `iat`.
pub const DEFAULT_LEEWAY: Duration = Duration::from_secs(30);
/// The largest leeway accepted: more would let expired tokens live on.
pub const MAX_LEEWAY: Duration = Duration::from_secs(300);
/// Default number of verified tokens kept in the cache.
pub const DEFAULT_CACHE_CAPACITY: usize = 10_000;
/// The default claim holding a token's CIDR allowlist: the one [`TokenIssuer`](super::TokenIssuer) writes.
pub const DEFAULT_ALLOW_IPS_CLAIM: &str = "allowed_ips";
/// The default claim holding a token's scopes (RFC 8693 / RFC 9068): the one [`TokenIssuer`](super::TokenIssuer)
/// writes.
pub const DEFAULT_SCOPE_CLAIM: &str = "scope";

/// Why a JWT configuration was refused, before it becomes a [`ConfigError`] naming `[jwt]` and the setting.
#[derive(Debug, thiserror::Error)]
enum Refused {
    #[error("`algorithms` is empty; list the algorithms your identity provider signs with")]
    NoAlgorithms,
    #[error("no key set; set a JWKS file, an in-memory key set or a refreshable source")]
    NoKeySet,
    #[error("{0}")]
    KeySet(#[from] KeySetError),
    #[error("the key set has no key for any of the configured algorithms {0:?}")]
    NoKeyForAlgorithms(Vec<Algorithm>),
    #[error(
        "`issuer` is required (or call `danger_accept_any_issuer`: tokens from any issuer trusted by the key set would pass)"
    )]
    NoIssuer,
    #[error(
        "`audience` is required (or call `danger_accept_any_audience`: tokens meant for other services would pass)"
    )]
    NoAudience,
    #[error("`leeway` of {0:?} is larger than the maximum of 300 s")]
    LeewayTooLong(Duration),
    #[error("`{0}` names an empty claim")]
    EmptyClaimName(&'static str),
    #[error("`typ` holds an empty value")]
    EmptyTyp,
    #[error(
        "`typ` is an empty list; list the required values, or leave it out to accept any `typ`"
    )]
    EmptyTypList,
    #[error("`max_token_len` must be at least 1")]
    ZeroMaxTokenLen,
    #[error("`{0}` {1}")]
    Refresh(&'static str, &'static str),
    #[error(
        "{0} needs a local key set (key_set or jwks_file): symmetric keys are never taken from a fetched key set"
    )]
    HmacWithLiveKeys(Algorithm),
    #[cfg(feature = "jwks-https")]
    #[error("{1}")]
    Fetch(&'static str, String),
}

impl Refused {
    /// The setting at fault, as the gate file names it.
    fn field(&self) -> &'static str {
        match self {
            Refused::NoAlgorithms
            | Refused::NoKeyForAlgorithms(_)
            | Refused::HmacWithLiveKeys(_) => "algorithms",
            Refused::NoKeySet | Refused::KeySet(_) => "jwks_file",
            Refused::NoIssuer => "issuer",
            Refused::NoAudience => "audience",
            Refused::LeewayTooLong(_) => "leeway_seconds",
            Refused::EmptyClaimName(name) => name,
            Refused::EmptyTyp | Refused::EmptyTypList => "typ",
            Refused::ZeroMaxTokenLen => "max_token_len",
            Refused::Refresh(field, _) => field,
            #[cfg(feature = "jwks-https")]
            Refused::Fetch(field, _) => field,
        }
    }
}

impl From<Refused> for ConfigError {
    fn from(refused: Refused) -> Self {
        let location = Location {
            section: Some("[jwt]".to_owned()),
            field: Some(refused.field().to_owned()),
            ..Location::default()
        };
        ConfigError::invalid(location, refused.to_string())
    }
}

pub(super) enum KeySource {
    Static(KeySet),
    File(PathBuf),
    Refreshable(Arc<dyn JwksSource>),
    /// OpenID Connect discovery from the (single) configured issuer.
    #[cfg(feature = "jwks-https")]
    Discovery(super::https::HttpsFetcher),
    /// Set up wrong (e.g. an `http://` URL); reported by `build`.
    #[cfg(feature = "jwks-https")]
    Refused(String),
}

/// Builds a [`JwtAuthenticator`]. Start with [`JwtAuthenticator::builder`].
///
/// Required: [`algorithms`](Self::algorithms), a key set, [`issuer`](Self::issuer) and
/// [`audience`](Self::audience) (each of the last two can only be waived by its `danger_` method).
#[must_use]
pub struct JwtAuthenticatorBuilder {
    algorithms: Vec<Algorithm>,
    keys: Option<KeySource>,
    refresh: KeyRefresh,
    issuers: Vec<String>,
    any_issuer: bool,
    audiences: Vec<String>,
    any_audience: bool,
    leeway: Duration,
    scope_claim: String,
    allow_ips_claim: String,
    attr_claims: Vec<String>,
    typ: Option<Vec<String>>,
    max_token_len: usize,
    cache_capacity: usize,
    clock: HeldClock,
    superuser: bool,
}

impl std::fmt::Debug for JwtAuthenticatorBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtAuthenticatorBuilder")
            .field("algorithms", &self.algorithms)
            .field("issuers", &self.issuers)
            .field("audiences", &self.audiences)
            .finish_non_exhaustive()
    }
}

impl JwtAuthenticatorBuilder {
    pub(super) fn new() -> Self {
        JwtAuthenticatorBuilder {
            algorithms: Vec::new(),
            keys: None,
            refresh: KeyRefresh::default(),
            issuers: Vec::new(),
            any_issuer: false,
            audiences: Vec::new(),
            any_audience: false,
            leeway: DEFAULT_LEEWAY,
            scope_claim: DEFAULT_SCOPE_CLAIM.to_owned(),
            allow_ips_claim: DEFAULT_ALLOW_IPS_CLAIM.to_owned(),
            attr_claims: Vec::new(),
            typ: None,
            max_token_len: DEFAULT_MAX_TOKEN_LEN,
            cache_capacity: DEFAULT_CACHE_CAPACITY,
            clock: HeldClock::new(SystemClock),
            superuser: false,
        }
    }

    /// The accepted signature algorithms, exactly (a token whose `alg` is not listed is refused; `none` cannot be
    /// listed). No default: pin what your identity provider uses.
    pub fn algorithms(mut self, algorithms: impl IntoIterator<Item = Algorithm>) -> Self {
        for a in algorithms {
            if !self.algorithms.contains(&a) {
                self.algorithms.push(a);
            }
        }
        self
    }

    /// A key set held in memory (e.g. [`KeySet::from_jwks_json`]). Replace it later with
    /// [`JwtAuthenticator::replace_key_set`].
    pub fn key_set(mut self, keys: KeySet) -> Self {
        self.keys = Some(KeySource::Static(keys));
        self
    }

    /// A JWKS file, read when [`build`](Self::build) runs (an unreadable or invalid file is an error naming it).
    pub fn jwks_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.keys = Some(KeySource::File(path.into()));
        self
    }

    /// A live key set fetched from `source`: on first use, in the background every refresh interval, and when a
    /// token names an unknown `kid` (at most once per cooldown, however many arrive; see
    /// [`key_refresh`](Self::key_refresh)). Until a fetch succeeds, and once the last good set is older than
    /// `max_stale`, this issuer's tokens are refused as `unavailable` (503), never allowed; a token with an
    /// unknown `kid` after a failed fetch too.
    pub fn refreshable_key_set(mut self, source: impl JwksSource) -> Self {
        self.keys = Some(KeySource::Refreshable(Arc::new(source)));
        self
    }

    /// A live key set fetched over HTTPS from `url` with `fetcher` (its trust anchors, timeout and size bound).
    /// An `http://` URL, or anything but an absolute `https://` URL, is refused by [`build`](Self::build).
    #[cfg(feature = "jwks-https")]
    pub fn jwks_url(mut self, fetcher: &super::HttpsFetcher, url: &str) -> Self {
        self.keys = Some(match fetcher.jwks_url(url) {
            Ok(source) => KeySource::Refreshable(Arc::new(source)),
            Err(e) => KeySource::Refused(e.to_string()),
        });
        self
    }

    /// A live key set found by OpenID Connect Discovery from the configured [`issuer`](Self::issuer) (exactly one):
    /// its `jwks_uri` from `{issuer}/.well-known/openid-configuration`, or from RFC 8414's
    /// `/.well-known/oauth-authorization-server` document when that is missing. The document's `issuer` must equal
    /// the configured one exactly (mix-up defence), and `jwks_uri` must be `https://`.
    #[cfg(feature = "jwks-https")]
    pub fn discovery(mut self, fetcher: &super::HttpsFetcher) -> Self {
        self.keys = Some(KeySource::Discovery(fetcher.clone()));
        self
    }

    /// How a live key set is refreshed. Defaults to [`KeyRefresh::default`]; ignored for a key set from a file or
    /// memory.
    pub fn key_refresh(mut self, refresh: KeyRefresh) -> Self {
        self.refresh = refresh;
        self
    }

    /// An accepted issuer (`iss`, compared exactly). Call again to accept several.
    pub fn issuer(mut self, issuer: impl Into<String>) -> Self {
        self.issuers.push(issuer.into());
        self
    }

    /// Accepts any `iss` (it must still be a string when present). Dangerous: every issuer whose keys are in the
    /// key set becomes trusted for this service.
    pub fn danger_accept_any_issuer(mut self) -> Self {
        self.any_issuer = true;
        self
    }

    /// An accepted audience (one `aud` value must equal one configured audience). Call again for several.
    pub fn audience(mut self, audience: impl Into<String>) -> Self {
        self.audiences.push(audience.into());
        self
    }

    /// Accepts any `aud` (it must still be well-typed when present). Dangerous: a token minted for another
    /// service of the same issuer would be accepted here.
    pub fn danger_accept_any_audience(mut self) -> Self {
        self.any_audience = true;
        self
    }

    /// Clock-skew allowance for `exp`, `nbf` and `iat`. Defaults to [`DEFAULT_LEEWAY`] (30 s); at most
    /// [`MAX_LEEWAY`].
    pub fn leeway(mut self, leeway: Duration) -> Self {
        self.leeway = leeway;
        self
    }

    /// The claim holding space-separated scopes. Defaults to `scope` (RFC 9068). Only when it is absent is `scp`
    /// read (an array of strings or a space-separated string); the two are never merged.
    pub fn scope_claim(mut self, name: impl Into<String>) -> Self {
        self.scope_claim = name.into();
        self
    }

    /// The claim holding the token's CIDR allowlist (an array of strict CIDR strings). Defaults to
    /// [`DEFAULT_ALLOW_IPS_CLAIM`] (`allowed_ips`, the claim [`TokenIssuer`](super::TokenIssuer) writes), so that a
    /// token that restricts itself is never silently unrestricted. A token without the claim is unrestricted.
    pub fn allow_ips_claim(mut self, name: impl Into<String>) -> Self {
        self.allow_ips_claim = name.into();
        self
    }

    /// Claims copied into the grant's attributes (e.g. `tenant`). Each must be a string when present. Defaults to
    /// none.
    pub fn attr_claims<S: Into<String>>(mut self, names: impl IntoIterator<Item = S>) -> Self {
        self.attr_claims.extend(names.into_iter().map(Into::into));
        self
    }

    /// Required header `typ` values (case-insensitive, an `application/` prefix allowed), e.g. `at+jwt`
    /// (RFC 9068). Defaults to none (any `typ`): many identity providers send `JWT`. An empty list is refused by
    /// [`build`](Self::build): it would restrict nothing.
    pub fn required_typ<S: Into<String>>(mut self, values: impl IntoIterator<Item = S>) -> Self {
        self.typ
            .get_or_insert_with(Vec::new)
            .extend(values.into_iter().map(Into::into));
        self
    }

    /// The longest token accepted, in bytes, checked before any decoding. Defaults to
    /// [`DEFAULT_MAX_TOKEN_LEN`] (8 KiB).
    pub fn max_token_len(mut self, bytes: usize) -> Self {
        self.max_token_len = bytes;
        self
    }

    /// How many verified tokens to remember. Defaults to [`DEFAULT_CACHE_CAPACITY`]; `0` turns the cache off.
    pub fn cache_capacity(mut self, entries: usize) -> Self {
        self.cache_capacity = entries;
        self
    }

    /// The clock for `exp`/`nbf`/`iat`, cache expiry and the refresh rate. Defaults to the system clock.
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = HeldClock::new(clock);
        self
    }

    /// Accepts a bare `*` scope in tokens as "every scope". Dangerous: a leaked token opens every route. Off by
    /// default; without it a token carrying `*` is refused.
    pub fn danger_allow_superuser_scope(mut self) -> Self {
        self.superuser = true;
        self
    }

    /// Checks the configuration and loads the key set (unless refreshable). An error names `[jwt]` and the setting
    /// at fault, as the gate file spells it.
    pub fn build(self) -> Result<JwtAuthenticator, ConfigError> {
        self.checked().map_err(ConfigError::from)
    }

    fn checked(mut self) -> Result<JwtAuthenticator, Refused> {
        if self.algorithms.is_empty() {
            return Err(Refused::NoAlgorithms);
        }
        if self.issuers.is_empty() && !self.any_issuer {
            return Err(Refused::NoIssuer);
        }
        if self.audiences.is_empty() && !self.any_audience {
            return Err(Refused::NoAudience);
        }
        if self.leeway > MAX_LEEWAY {
            return Err(Refused::LeewayTooLong(self.leeway));
        }
        if self.scope_claim.is_empty() {
            return Err(Refused::EmptyClaimName("scope_claim"));
        }
        if self.allow_ips_claim.is_empty() {
            return Err(Refused::EmptyClaimName("allow_ips_claim"));
        }
        if self.attr_claims.iter().any(String::is_empty) {
            return Err(Refused::EmptyClaimName("attr_claims"));
        }
        if self.max_token_len == 0 {
            return Err(Refused::ZeroMaxTokenLen);
        }
        if self.typ.as_ref().is_some_and(Vec::is_empty) {
            return Err(Refused::EmptyTypList);
        }
        let required_typ = self.typ.take().unwrap_or_default();
        let mut typ = Vec::with_capacity(required_typ.len());
        for t in &required_typ {
            let n = super::verify::normalize_media_type(t);
            if n.is_empty() {
                return Err(Refused::EmptyTyp);
            }
            typ.push(n);
        }
        let source: Option<Arc<dyn JwksSource>> = match self.keys.take().ok_or(Refused::NoKeySet)? {
            KeySource::Static(set) => return self.finish(set, None, typ),
            KeySource::File(path) => {
                let set = KeySet::from_jwks_file(path)?;
                return self.finish(set, None, typ);
            }
            KeySource::Refreshable(source) => Some(source),
            #[cfg(feature = "jwks-https")]
            KeySource::Discovery(fetcher) => {
                let [issuer] = &self.issuers[..] else {
                    return Err(Refused::Fetch(
                        "discovery",
                        "discovery needs exactly one configured issuer (the document's `issuer` must equal it)"
                            .to_owned(),
                    ));
                };
                Some(Arc::new(
                    fetcher
                        .discovery(issuer)
                        .map_err(|e| Refused::Fetch("issuer", e.to_string()))?,
                ))
            }
            #[cfg(feature = "jwks-https")]
            KeySource::Refused(problem) => return Err(Refused::Fetch("jwks_url", problem)),
        };
        self.refresh
            .check()
            .map_err(|(field, why)| Refused::Refresh(field, why))?;
        if let Some(hmac) = self
            .algorithms
            .iter()
            .find(|a| matches!(a, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512))
        {
            return Err(Refused::HmacWithLiveKeys(*hmac));
        }
        let live = source.map(|source| Live::new(source, self.refresh));
        self.finish(KeySet::empty(), live, typ)
    }

    fn finish(
        self,
        keys: KeySet,
        live: Option<Live>,
        typ: Vec<String>,
    ) -> Result<JwtAuthenticator, Refused> {
        if live.is_none() && !self.algorithms.iter().any(|a| keys.supports(*a)) {
            return Err(Refused::NoKeyForAlgorithms(self.algorithms));
        }
        let mut read_claims: Vec<String> = ["exp", "nbf", "iat", "iss", "aud", "sub", "scp"]
            .map(str::to_owned)
            .to_vec();
        read_claims.push(self.scope_claim.clone());
        read_claims.push(self.allow_ips_claim.clone());
        read_claims.extend(self.attr_claims.iter().cloned());
        read_claims.sort();
        read_claims.dedup();
        let config = Config {
            algorithms: self.algorithms,
            issuers: self.issuers,
            any_issuer: self.any_issuer,
            audiences: self.audiences,
            any_audience: self.any_audience,
            leeway: i64::try_from(self.leeway.as_secs()).unwrap_or(i64::MAX),
            scope_claim: self.scope_claim,
            allow_ips_claim: self.allow_ips_claim,
            attr_claims: self.attr_claims,
            typ,
            max_token_len: self.max_token_len,
            superuser: self.superuser,
            read_claims,
        };
        Ok(JwtAuthenticator::new(
            config,
            keys,
            live,
            self.cache_capacity,
            self.clock,
        ))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use aws_lc_rs::rand::SystemRandom;
    use aws_lc_rs::signature::Ed25519KeyPair;

    use super::*;
    use crate::credential::jwt::{SigningKey, TokenIssuer};

    fn keys() -> KeySet {
        let der = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).unwrap();
        let key = SigningKey::ed25519_from_pkcs8_der(der.as_ref()).unwrap();
        let issuer = TokenIssuer::new(key, "key-1", "https://issuer.example", "orders-api");
        KeySet::from_jwks_json(issuer.jwks_json().as_bytes()).unwrap()
    }

    fn builder() -> JwtAuthenticatorBuilder {
        JwtAuthenticator::builder()
            .algorithms([Algorithm::EdDSA])
            .key_set(keys())
            .issuer("https://issuer.example")
            .audience("orders-api")
    }

    #[test]
    fn each_refusal_names_its_setting_and_each_has_a_twin_that_builds() {
        let cases: Vec<(JwtAuthenticatorBuilder, &str, JwtAuthenticatorBuilder)> = vec![
            (
                JwtAuthenticator::builder()
                    .key_set(keys())
                    .issuer("i")
                    .audience("a"),
                "algorithms",
                builder(),
            ),
            (
                JwtAuthenticator::builder()
                    .algorithms([Algorithm::RS256])
                    .key_set(keys())
                    .issuer("i")
                    .audience("a"),
                "algorithms",
                builder().algorithms([Algorithm::RS256]),
            ),
            (
                JwtAuthenticator::builder()
                    .algorithms([Algorithm::EdDSA])
                    .key_set(keys())
                    .audience("a"),
                "issuer",
                builder().danger_accept_any_issuer(),
            ),
            (
                JwtAuthenticator::builder()
                    .algorithms([Algorithm::EdDSA])
                    .key_set(keys())
                    .issuer("i"),
                "audience",
                builder().danger_accept_any_audience(),
            ),
            (
                builder().leeway(MAX_LEEWAY + Duration::from_nanos(1)),
                "leeway_seconds",
                builder().leeway(MAX_LEEWAY),
            ),
            (
                builder().scope_claim(""),
                "scope_claim",
                builder().scope_claim("scp"),
            ),
            (
                builder().allow_ips_claim(""),
                "allow_ips_claim",
                builder().allow_ips_claim("ips"),
            ),
            (
                builder().attr_claims(["tenant", ""]),
                "attr_claims",
                builder().attr_claims(["tenant"]),
            ),
            (
                builder().max_token_len(0),
                "max_token_len",
                builder().max_token_len(1),
            ),
            (
                builder().required_typ(Vec::<String>::new()),
                "typ",
                builder().required_typ(["at+jwt"]),
            ),
            (
                builder().required_typ(["application/"]),
                "typ",
                builder().required_typ(["application/JWT"]),
            ),
            (
                JwtAuthenticator::builder()
                    .algorithms([Algorithm::EdDSA])
                    .issuer("i")
                    .audience("a"),
                "jwks_file",
                builder(),
            ),
        ];
        for (refused, field, twin) in cases {
            let err = refused.build().map(|_| ()).map_err(|e| e.to_string());
            let err = err.expect_err(field);
            assert!(
                err.starts_with(&format!("[jwt]: field `{field}`: ")),
                "{err}"
            );
            assert!(twin.build().is_ok(), "the twin of {field}");
        }
    }

    #[test]
    fn listing_an_algorithm_twice_keeps_it_once() {
        let b = builder().algorithms([Algorithm::EdDSA, Algorithm::EdDSA, Algorithm::ES256]);
        assert_eq!(b.algorithms, [Algorithm::EdDSA, Algorithm::ES256]);
        assert_eq!(
            DEFAULT_MAX_TOKEN_LEN,
            8 * 1024,
            "the documented default: 8 KiB"
        );
    }
}
