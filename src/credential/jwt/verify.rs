//! The JWT authenticator: structure, header, key, signature, claims — in that order, each step refusing.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::algorithm::Algorithm;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::Value;
use sha2::{Digest as _, Sha256};

use super::cache::TokenCache;
use super::claims;
use super::config::JwtAuthenticatorBuilder;
use super::keyset::{JwksFetchError, JwksSource, KeySet, KeySetError, Selection};
use crate::policy::{Denial, DenialKind};
use crate::{Attributes, Clock, CredentialKind, Grant};

/// The longest decoded signature accepted (RSA 8192 bits).
const MAX_SIGNATURE_LEN: usize = 1024;

/// Header members that would make us fetch, trust or interpret something we do not implement.
const REFUSED_HEADER_MEMBERS: [(&str, &str); 8] = [
    (
        "crit",
        "the token has a crit header (no extension is implemented)",
    ),
    (
        "b64",
        "the token has a b64 header (RFC 7797 is not implemented)",
    ),
    ("jku", "the token has a jku header (keys are never fetched)"),
    (
        "x5u",
        "the token has an x5u header (keys are never fetched)",
    ),
    (
        "jwk",
        "the token has a jwk header (embedded keys are never trusted)",
    ),
    (
        "x5c",
        "the token has an x5c header (embedded certificates are never trusted)",
    ),
    ("enc", "the token has an enc header (JWE is not accepted)"),
    ("zip", "the token has a zip header (JWE is not accepted)"),
];

pub(super) struct Config {
    pub(super) algorithms: Vec<Algorithm>,
    pub(super) issuers: Vec<String>,
    pub(super) any_issuer: bool,
    pub(super) audiences: Vec<String>,
    pub(super) any_audience: bool,
    pub(super) leeway: i64,
    pub(super) scope_claim: String,
    pub(super) allow_ips_claim: String,
    pub(super) attr_claims: Vec<String>,
    /// Normalised (lower case, no `application/`).
    pub(super) typ: Vec<String>,
    pub(super) max_token_len: usize,
    pub(super) superuser: bool,
    /// Every claim name the checks read; other claims are only checked for duplicates, never kept.
    pub(super) read_claims: Vec<String>,
}

/// Lower case, without an `application/` prefix (RFC 7515 §4.1.9).
pub(super) fn normalize_media_type(value: &str) -> String {
    let lower = value.to_ascii_lowercase();
    match lower.strip_prefix("application/") {
        Some(rest) => rest.to_owned(),
        None => lower,
    }
}

struct KeyState {
    set: KeySet,
    generation: u64,
}

struct Refresher {
    source: Arc<dyn JwksSource>,
    min_interval: Duration,
    /// Whether the last fetch succeeded (false until the first success).
    healthy: AtomicBool,
    /// Serialises refreshes; holds the last attempt's time and the current document's digest.
    gate: tokio::sync::Mutex<RefreshState>,
}

struct RefreshState {
    last_attempt: Option<SystemTime>,
    digest: Option<[u8; 32]>,
}

/// Why [`JwtAuthenticator::refresh_keys`] failed. The previous key set stays in place.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RefreshError {
    /// The authenticator was not built with a refreshable key set.
    #[error("jwt: the key set is not refreshable")]
    NotRefreshable,
    /// The source failed.
    #[error("jwt: fetching the JWKS failed: {0}")]
    Fetch(JwksFetchError),
    /// The fetched document is invalid.
    #[error("jwt: {0}")]
    KeySet(#[from] KeySetError),
}

struct Inner {
    config: Config,
    clock: Arc<dyn Clock>,
    keys: RwLock<Arc<KeyState>>,
    refresher: Option<Refresher>,
    cache: TokenCache,
}

/// Verifies JWT bearer tokens and turns them into [`Grant`]s. Cheap to clone (an `Arc` inside).
///
/// Built with [`JwtAuthenticator::builder`]; see the [module documentation](super) for the checks and their order.
#[derive(Clone)]
pub struct JwtAuthenticator(Arc<Inner>);

impl fmt::Debug for JwtAuthenticator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &self.0.config;
        f.debug_struct("JwtAuthenticator")
            .field("algorithms", &c.algorithms)
            .field("issuers", &c.issuers)
            .field("audiences", &c.audiences)
            .field("max_token_len", &c.max_token_len)
            .field("refreshable", &self.0.refresher.is_some())
            .finish_non_exhaustive()
    }
}

/// A refusal, and whether a key-set refresh might turn it into an acceptance (never without a refreshable set).
struct Failure {
    denial: Denial,
    refresh_may_help: bool,
}

impl From<Denial> for Failure {
    fn from(denial: Denial) -> Self {
        Failure {
            denial,
            refresh_may_help: false,
        }
    }
}

fn b64_decode(segment: &[u8], detail: &'static str) -> Result<Vec<u8>, Denial> {
    URL_SAFE_NO_PAD
        .decode(segment)
        .map_err(|_| Denial::invalid_credential(detail))
}

impl JwtAuthenticator {
    /// Starts a configuration.
    pub fn builder() -> JwtAuthenticatorBuilder {
        JwtAuthenticatorBuilder::new()
    }

    pub(super) fn new(
        config: Config,
        keys: KeySet,
        refresh: Option<(Arc<dyn JwksSource>, Duration)>,
        cache_capacity: usize,
        clock: Arc<dyn Clock>,
    ) -> Self {
        let refresher = refresh.map(|(source, min_interval)| Refresher {
            source,
            min_interval,
            healthy: AtomicBool::new(false),
            gate: tokio::sync::Mutex::new(RefreshState {
                last_attempt: None,
                digest: None,
            }),
        });
        JwtAuthenticator(Arc::new(Inner {
            config,
            clock,
            keys: RwLock::new(Arc::new(KeyState {
                set: keys,
                generation: 0,
            })),
            refresher,
            cache: TokenCache::new(cache_capacity),
        }))
    }

    /// The longest token accepted, in bytes.
    pub fn max_token_len(&self) -> usize {
        self.0.config.max_token_len
    }

    /// Verifies `token` with the keys at hand (never fetches). With a refreshable key set, prefer
    /// [`authenticate`](Self::authenticate), which refreshes on an unknown `kid`.
    pub fn verify(&self, token: &str) -> Result<Grant, Denial> {
        self.verify_inner(token.as_bytes()).map_err(|f| f.denial)
    }

    /// Verifies `token`; with a refreshable key set, an unknown `kid` (or a set never loaded) triggers one refresh
    /// (rate-limited) and one more attempt. A refresh failure answers `unavailable`, never allow.
    pub async fn authenticate(&self, token: &str) -> Result<Grant, Denial> {
        match self.verify_inner(token.as_bytes()) {
            Err(Failure {
                refresh_may_help: true,
                ..
            }) => self.after_refresh(token.as_bytes()).await,
            outcome => outcome.map_err(|f| f.denial),
        }
    }

    /// The second attempt: after a (rate-limited) refresh of the key set.
    async fn after_refresh(&self, token: &[u8]) -> Result<Grant, Denial> {
        self.refresh_if_due().await;
        self.verify_inner(token).map_err(|f| f.denial)
    }

    /// Fetches the key set now (regardless of the refresh interval). Returns whether it changed; a change
    /// flushes the verified-token cache. On error the previous set stays in place, and tokens no known key
    /// verifies are refused as `unavailable` until a fetch succeeds.
    pub async fn refresh_keys(&self) -> Result<bool, RefreshError> {
        let refresher = self
            .0
            .refresher
            .as_ref()
            .ok_or(RefreshError::NotRefreshable)?;
        let mut state = refresher.gate.lock().await;
        state.last_attempt = Some(self.0.clock.now());
        self.fetch_and_swap(refresher, &mut state).await
    }

    /// Replaces the key set (key rotation from a file you watch, for example) and flushes the cache.
    pub fn replace_key_set(&self, keys: KeySet) {
        self.swap_keys(keys);
    }

    fn swap_keys(&self, set: KeySet) {
        let mut current = self.0.keys.write().unwrap_or_else(PoisonError::into_inner);
        let generation = current.generation.wrapping_add(1);
        *current = Arc::new(KeyState { set, generation });
        // Under the write lock: no verification can read the new set before the cache accepts its generation.
        self.0.cache.flush(generation);
    }

    async fn refresh_if_due(&self) {
        let Some(refresher) = &self.0.refresher else {
            return;
        };
        let mut state = refresher.gate.lock().await;
        let now = self.0.clock.now();
        // Within the interval (or a clock that went backwards): no fetch. An interval that overflows never ends.
        if let Some(last) = state.last_attempt
            && last
                .checked_add(refresher.min_interval)
                .is_none_or(|end| now < end)
        {
            return;
        }
        state.last_attempt = Some(now);
        if let Err(e) = self.fetch_and_swap(refresher, &mut state).await {
            tracing::warn!(error = %e, "jwt: key-set refresh failed; keeping the previous key set");
        }
    }

    async fn fetch_and_swap(
        &self,
        refresher: &Refresher,
        state: &mut RefreshState,
    ) -> Result<bool, RefreshError> {
        let result = async {
            let document = refresher
                .source
                .fetch()
                .await
                .map_err(RefreshError::Fetch)?;
            let digest: [u8; 32] = Sha256::digest(&document).into();
            if state.digest == Some(digest) {
                return Ok(false);
            }
            let set = KeySet::parse(&document, "from the refreshable source")?;
            self.swap_keys(set);
            state.digest = Some(digest);
            Ok(true)
        }
        .await;
        refresher.healthy.store(result.is_ok(), Ordering::Release);
        result
    }

    fn now_secs(&self) -> i64 {
        crate::clock::unix_secs(self.0.clock.now())
    }

    fn verify_inner(&self, token: &[u8]) -> Result<Grant, Failure> {
        let config = &self.0.config;
        // 1. Size, before anything else (no base64, no JSON, no crypto, no cache hashing).
        if token.len() > config.max_token_len {
            return Err(Denial::invalid_credential(
                "the token is longer than the configured maximum",
            )
            .into());
        }
        let now = self.now_secs();
        // 2. A token that verified before.
        if let Some(grant) = self.0.cache.get(token, now) {
            return Ok(grant);
        }
        // 3. Structure: three non-empty base64url segments.
        let mut dots = [0usize; 2];
        let mut count = 0usize;
        for (i, b) in token.iter().enumerate() {
            match b {
                b'.' => {
                    if count < 2 {
                        dots[count] = i;
                    }
                    count += 1;
                }
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' => {}
                _ => {
                    return Err(Denial::invalid_credential(
                        "the token holds a character outside base64url",
                    )
                    .into());
                }
            }
        }
        match count {
            2 => {}
            4 => {
                return Err(Denial::invalid_credential(
                    "the token has five segments (JWE is not accepted)",
                )
                .into());
            }
            _ => {
                return Err(
                    Denial::invalid_credential("the token does not have three segments").into(),
                );
            }
        }
        let (header_b64, rest) = token.split_at(dots[0]);
        let payload_b64 = &rest[1..dots[1] - dots[0]];
        let signature_b64 = &token[dots[1] + 1..];
        let message = &token[..dots[1]];
        if header_b64.is_empty() || payload_b64.is_empty() {
            return Err(Denial::invalid_credential("the token has an empty segment").into());
        }
        if signature_b64.is_empty() {
            return Err(Denial::invalid_credential("the token is unsigned").into());
        }

        // 4. Header.
        let header = claims::parse_object(
            &b64_decode(header_b64, "the token header is not base64url")?,
            &|_| true,
        )
        .ok_or_else(|| {
            Denial::invalid_credential(
                "the token header is not a JSON object without duplicate members",
            )
        })?;
        let (alg, kid) = self.check_header(&header)?;

        // 5. Key and signature.
        let keys = Arc::clone(&self.0.keys.read().unwrap_or_else(PoisonError::into_inner));
        let mut signature = [0u8; MAX_SIGNATURE_LEN];
        let signature_len = URL_SAFE_NO_PAD
            .decode_slice(signature_b64, &mut signature)
            .map_err(|_| Denial::invalid_credential("the token signature is not base64url"))?;
        match keys
            .set
            .verify(kid, alg, message, &signature[..signature_len])
        {
            Ok(true) => {}
            Ok(false) => {
                return Err(
                    Denial::invalid_credential("the token signature does not verify").into(),
                );
            }
            Err(selection) => return Err(self.selection_failure(selection)),
        }

        // 6. Claims (authenticated from here on).
        let claims = claims::parse_object(
            &b64_decode(payload_b64, "the token payload is not base64url")?,
            &|name| config.read_claims.iter().any(|c| c == name),
        )
        .ok_or_else(|| {
            Denial::invalid_credential(
                "the token payload is not a JSON object without duplicate members",
            )
        })?;
        let (grant, exp) = self.check_claims(&claims, now)?;
        if exp > now {
            self.0
                .cache
                .insert(token, grant.clone(), exp, keys.generation);
        }
        Ok(grant)
    }

    fn selection_failure(&self, selection: Selection) -> Failure {
        let missing_key = matches!(selection, Selection::UnknownKid | Selection::NoKeyForAlg);
        match &self.0.refresher {
            // The key set is stale or was never loaded: a key we do not know may exist. Fail closed, as unavailable.
            Some(r) if missing_key && !r.healthy.load(Ordering::Acquire) => Failure {
                denial: Denial::new(
                    DenialKind::Unavailable,
                    "the key set is not loaded (its last refresh failed)",
                ),
                refresh_may_help: true,
            },
            // Only a refreshable key set can learn a new `kid`.
            refresher => Failure {
                denial: selection.denial(),
                refresh_may_help: refresher.is_some() && selection == Selection::UnknownKid,
            },
        }
    }

    fn check_header<'h>(
        &self,
        header: &'h claims::Object,
    ) -> Result<(Algorithm, Option<&'h str>), Denial> {
        let config = &self.0.config;
        for (name, detail) in REFUSED_HEADER_MEMBERS {
            if header.contains_key(name) {
                return Err(Denial::invalid_credential(detail));
            }
        }
        let alg = match header.get("alg") {
            Some(Value::String(a)) => a
                .parse::<Algorithm>()
                .ok()
                .filter(|a| config.algorithms.contains(a))
                .ok_or_else(|| {
                    Denial::invalid_credential(
                        "the token's alg is not one of the configured algorithms",
                    )
                })?,
            _ => {
                return Err(Denial::invalid_credential(
                    "the token header has no alg string",
                ));
            }
        };
        let kid = claims::string(header, "kid", "the token's kid is not a string")?;
        let typ = claims::string(header, "typ", "the token's typ is not a string")?;
        if !config.typ.is_empty() {
            let typ = typ.ok_or_else(|| {
                Denial::invalid_credential("the token has no typ and one is required")
            })?;
            let typ = normalize_media_type(typ);
            if !config.typ.contains(&typ) {
                return Err(Denial::invalid_credential(
                    "the token's typ is not one of the required values",
                ));
            }
        }
        let cty = claims::string(header, "cty", "the token's cty is not a string")?;
        if cty.is_some_and(|c| normalize_media_type(c) == "jwt") {
            return Err(Denial::invalid_credential(
                "the token is a nested JWT (cty: JWT)",
            ));
        }
        Ok((alg, kid))
    }

    /// The grant, and the token's `exp`.
    fn check_claims(&self, c: &claims::Object, now: i64) -> Result<(Grant, i64), Denial> {
        let config = &self.0.config;
        // Types first: a wrong-typed claim is invalid whatever the time.
        let exp = claims::numeric_date(c, "exp", "the token's exp is not a number")?
            .ok_or_else(|| Denial::invalid_credential("the token has no exp"))?;
        let nbf = claims::numeric_date(c, "nbf", "the token's nbf is not a number")?;
        let iat = claims::numeric_date(c, "iat", "the token's iat is not a number")?;
        let leeway = config.leeway;
        if now >= exp.saturating_add(leeway) {
            return Err(Denial::new(
                DenialKind::ExpiredCredential,
                "the token has expired",
            ));
        }
        if nbf.is_some_and(|nbf| nbf > now.saturating_add(leeway)) {
            return Err(Denial::invalid_credential(
                "the token is not valid yet (nbf)",
            ));
        }
        if iat.is_some_and(|iat| iat > now.saturating_add(leeway)) {
            return Err(Denial::invalid_credential(
                "the token was issued in the future (iat)",
            ));
        }

        let iss = claims::string(c, "iss", "the token's iss is not a string")?;
        if !config.any_issuer {
            let iss = iss.ok_or_else(|| Denial::invalid_credential("the token has no iss"))?;
            if !config.issuers.iter().any(|i| i == iss) {
                return Err(Denial::invalid_credential(
                    "the token's iss is not an accepted issuer",
                ));
            }
        }
        match c.get("aud") {
            None if config.any_audience => {}
            None => return Err(Denial::invalid_credential("the token has no aud")),
            Some(aud) => {
                let ok = claims::audience_matches(aud, |a| {
                    config.any_audience || config.audiences.iter().any(|x| x == a)
                })?;
                if !ok {
                    return Err(Denial::invalid_credential(
                        "the token's aud names no accepted audience",
                    ));
                }
            }
        }
        let sub = claims::string(c, "sub", "the token's sub is not a string")?
            .filter(|s| !s.is_empty())
            .ok_or_else(|| Denial::invalid_credential("the token has no sub"))?;

        let scopes = claims::scopes(c, &config.scope_claim, config.superuser)?;
        let allow_ips = claims::allowlist(c, &config.allow_ips_claim)?;
        let mut attributes = Attributes::new();
        for name in &config.attr_claims {
            if let Some(v) =
                claims::string(c, name, "an attribute claim of the token is not a string")?
            {
                attributes.insert(name.clone(), v.to_owned());
            }
        }
        let mut grant = Grant::new(
            CredentialKind::Jwt,
            sub.to_owned(),
            scopes,
            allow_ips,
            attributes,
        );
        if let Some(at) = u64::try_from(exp)
            .ok()
            .and_then(|secs| UNIX_EPOCH.checked_add(Duration::from_secs(secs)))
        {
            grant = grant.with_expiry(at);
        }
        Ok((grant, exp))
    }
}

/// The gate's step 6 for bearer tokens: verified synchronously when the keys are at hand; only an unknown `kid`
/// with a refreshable key set waits for a (rate-limited) refresh.
impl crate::credential::Authenticator for JwtAuthenticator {
    fn authenticate(&self, credential: crate::Secret) -> crate::credential::Authentication {
        use crate::credential::Authentication;
        match self.verify_inner(credential.expose()) {
            Err(Failure {
                refresh_may_help: true,
                ..
            }) => {
                let this = self.clone();
                Authentication::Pending(Box::pin(async move {
                    this.after_refresh(credential.expose()).await
                }))
            }
            outcome => Authentication::Ready(outcome.map_err(|f| f.denial)),
        }
    }
}
