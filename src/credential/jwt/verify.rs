//! The JWT authenticator: structure, header, key, signature, claims — in that order, each step refusing.

use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, UNIX_EPOCH};

use arc_swap::ArcSwap;

use super::algorithm::Algorithm;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::Value;

use super::cache::TokenCache;
use super::claims;
use super::config::JwtAuthenticatorBuilder;
use super::keyset::{JwksFetchError, KeySet, KeySetError, Selection};
use super::live::{Live, Why};
use crate::clock::HeldClock;
use crate::error::{ConfigError, Location};
use crate::policy::{Denial, DenialKind};
use crate::{Attributes, CredentialKind, Grant};

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

/// One issuer's settings, key set, refresh state and verified-token cache.
pub(super) struct Issuer {
    config: Config,
    clock: HeldClock,
    keys: ArcSwap<KeyState>,
    /// Serialises key-set swaps (never taken on the request path).
    swapping: Mutex<()>,
    live: Option<Live>,
    cache: TokenCache,
}

/// Verifies JWT bearer tokens and turns them into [`Grant`]s. Cheap to clone (an `Arc` inside).
///
/// Built with [`JwtAuthenticator::builder`] for one issuer; [`JwtAuthenticator::by_issuer`] combines several, each
/// with its own key set. See the [module documentation](super) for the checks and their order.
#[derive(Clone)]
pub struct JwtAuthenticator(Arc<[Arc<Issuer>]>);

impl fmt::Debug for JwtAuthenticator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut list = f.debug_list();
        for issuer in self.0.iter() {
            let c = &issuer.config;
            list.entry(&format_args!(
                "{{ issuers: {:?}, audiences: {:?}, algorithms: {:?}, live: {} }}",
                c.issuers,
                c.audiences,
                c.algorithms,
                issuer.live.is_some()
            ));
        }
        list.finish()
    }
}

/// A refusal, and whether a key-set refresh might turn it into an acceptance (never without a refreshable set).
pub(super) struct Failure {
    pub(super) denial: Denial,
    pub(super) refresh_may_help: bool,
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

/// Why [`JwtAuthenticator::by_issuer`] refused a combination.
fn refused_combination(detail: String) -> ConfigError {
    ConfigError::invalid(
        Location {
            section: Some("[[jwt.issuers]]".to_owned()),
            field: Some("issuer".to_owned()),
            ..Location::default()
        },
        detail,
    )
}

impl JwtAuthenticator {
    /// Starts the configuration of one issuer (or of several that share one key set).
    pub fn builder() -> JwtAuthenticatorBuilder {
        JwtAuthenticatorBuilder::new()
    }

    /// Combines authenticators of different issuers into one. A token's `iss` (read before anything is verified)
    /// picks the one authenticator that names it, which then verifies the token with its own key set, audience,
    /// algorithms and claim settings: a key of one issuer never verifies another's token, even when their `kid`s
    /// collide. A token whose `iss` no entry names is refused.
    ///
    /// Refused: an entry built with `danger_accept_any_issuer`, and an issuer named by two entries.
    pub fn by_issuer(
        authenticators: impl IntoIterator<Item = JwtAuthenticator>,
    ) -> Result<Self, ConfigError> {
        let mut entries: Vec<Arc<Issuer>> = Vec::new();
        for authenticator in authenticators {
            for entry in authenticator.0.iter() {
                if entry.config.any_issuer {
                    return Err(refused_combination(
                        "an entry accepts any issuer: with several issuers, each entry must name its own".to_owned(),
                    ));
                }
                for name in &entry.config.issuers {
                    if entries.iter().any(|e| e.config.issuers.contains(name)) {
                        return Err(refused_combination(format!(
                            "the issuer {name:?} is named by two entries"
                        )));
                    }
                }
                entries.push(Arc::clone(entry));
            }
        }
        if entries.is_empty() {
            return Err(refused_combination("no issuer entry".to_owned()));
        }
        Ok(JwtAuthenticator(entries.into()))
    }

    pub(super) fn new(
        config: Config,
        keys: KeySet,
        live: Option<Live>,
        cache_capacity: usize,
        clock: HeldClock,
    ) -> Self {
        let issuer = Issuer {
            config,
            clock,
            keys: ArcSwap::from_pointee(KeyState {
                set: keys,
                generation: 0,
            }),
            swapping: Mutex::new(()),
            live,
            cache: TokenCache::new(cache_capacity),
        };
        JwtAuthenticator(Arc::new([Arc::new(issuer)]))
    }

    /// The longest token accepted, in bytes (the largest of the issuers').
    pub fn max_token_len(&self) -> usize {
        self.0
            .iter()
            .map(|i| i.config.max_token_len)
            .max()
            .unwrap_or(0)
    }

    /// Verifies `token` with the keys at hand (never fetches). With a live key set, prefer
    /// [`authenticate`](Self::authenticate), which fetches on an unknown `kid`.
    pub fn verify(&self, token: &str) -> Result<Grant, Denial> {
        let token = token.as_bytes();
        self.issuer_of(token)?
            .verify_inner(token)
            .map_err(|f| f.denial)
    }

    /// Verifies `token`; with a live key set, an unknown `kid` (or a set not loaded, or too stale) triggers one
    /// fetch (at most one per cooldown, shared by concurrent callers) and one more attempt. A fetch failure
    /// answers `unavailable`, never allow.
    pub async fn authenticate(&self, token: &str) -> Result<Grant, Denial> {
        let token = token.as_bytes();
        let issuer = self.issuer_of(token)?;
        match issuer.verify_inner(token) {
            Err(Failure {
                refresh_may_help: true,
                ..
            }) => issuer.after_refresh(token).await,
            outcome => outcome.map_err(|f| f.denial),
        }
    }

    /// Fetches every live key set now (regardless of the refresh interval). Returns whether one changed; a change
    /// flushes that issuer's verified-token cache. On error the previous set stays in place (every issuer is
    /// tried; the first error is returned). Also starts the background refresh when called on a tokio runtime.
    pub async fn refresh_keys(&self) -> Result<bool, RefreshError> {
        let mut changed = false;
        let mut first_error = None;
        let mut any_live = false;
        for issuer in self.0.iter() {
            if issuer.live.is_none() {
                continue;
            }
            any_live = true;
            match issuer.refresh(Why::Forced).await {
                Ok(c) => changed |= c,
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        if !any_live {
            return Err(RefreshError::NotRefreshable);
        }
        first_error.map_or(Ok(changed), Err)
    }

    /// Replaces the key set (key rotation from a file you watch, for example) and flushes the cache; with a live
    /// key set, the next fetch replaces it again. Returns false, replacing nothing, on an authenticator that holds
    /// several issuers (call it on the one-issuer authenticator you combined: keep a clone, the two share the
    /// issuer), and while a fetch is running.
    #[must_use = "false means nothing was replaced"]
    pub fn replace_key_set(&self, keys: KeySet) -> bool {
        match &self.0[..] {
            [issuer] => issuer.replace_by_hand(keys),
            _ => false,
        }
    }

    /// The issuer entry a token belongs to: the only one, or the one its `iss` names.
    fn issuer_of(&self, token: &[u8]) -> Result<&Arc<Issuer>, Denial> {
        if let [only] = &self.0[..] {
            return Ok(only);
        }
        if token.len() > self.max_token_len() {
            return Err(Denial::invalid_credential(
                "the token is longer than the configured maximum",
            ));
        }
        let iss = peek_issuer(token)?;
        self.0
            .iter()
            .find(|i| i.config.issuers.iter().any(|name| name == &iss))
            .ok_or_else(|| Denial::invalid_credential("the token's iss is not an accepted issuer"))
    }
}

/// The `iss` claim of a token, read without verifying anything: it only chooses which issuer's settings and keys
/// verify the token, which then checks `iss` again.
fn peek_issuer(token: &[u8]) -> Result<String, Denial> {
    let mut segments = token.split(|b| *b == b'.');
    let payload = segments
        .nth(1)
        .ok_or_else(|| Denial::invalid_credential("the token does not have three segments"))?;
    let claims = claims::parse_object(
        &b64_decode(payload, "the token payload is not base64url")?,
        &|name| name == "iss",
    )
    .ok_or_else(|| {
        Denial::invalid_credential(
            "the token payload is not a JSON object without duplicate members",
        )
    })?;
    claims::string(&claims, "iss", "the token's iss is not a string")?
        .map(str::to_owned)
        .ok_or_else(|| Denial::invalid_credential("the token has no iss"))
}

impl Issuer {
    pub(super) fn live(&self) -> Option<&Live> {
        self.live.as_ref()
    }

    /// The issuer this entry is for, as events name it.
    pub(super) fn label(&self) -> &str {
        self.config
            .issuers
            .first()
            .map_or("(any issuer)", String::as_str)
    }

    /// The second attempt: after a (cooldown-limited) fetch of the key set.
    async fn after_refresh(self: &Arc<Self>, token: &[u8]) -> Result<Grant, Denial> {
        if self.live.is_some() {
            // A failure is reported inside, and answered below from the set at hand.
            let _ = self.refresh(Why::UnknownKid).await;
        }
        self.verify_inner(token).map_err(|f| f.denial)
    }

    pub(super) fn swap_keys(&self, set: KeySet) {
        let _one_at_a_time = self.swapping.lock().unwrap_or_else(PoisonError::into_inner);
        let generation = self.keys.load().generation.wrapping_add(1);
        // The cache first: a verification still holding the old set inserts under the old generation, which the
        // cache now drops.
        self.cache.flush(generation);
        self.keys.store(Arc::new(KeyState { set, generation }));
    }

    pub(super) fn now_secs(&self) -> i64 {
        crate::clock::unix_secs(self.clock.now())
    }

    /// Steps 1–2 of verification: the size, the key set's freshness, then a token that verified before; the
    /// remembered grant if there is one (else verification goes on). Both judge only that something has not yet
    /// expired (the key set its staleness bound, the token its `exp`), so the clock is read the cheap way, never
    /// behind (see [`HeldClock::secs_not_behind`]).
    #[inline]
    fn recalled(&self, token: &[u8]) -> Result<Option<Grant>, Failure> {
        // 1. Size, before anything else (no base64, no JSON, no crypto, no cache hashing).
        if token.len() > self.config.max_token_len {
            return Err(Denial::invalid_credential(
                "the token is longer than the configured maximum",
            )
            .into());
        }
        let now = self.clock.secs_not_behind();
        // A live key set: refreshed in the background, and never used past its staleness bound.
        if let Some(live) = &self.live {
            live.check_fresh(now)?;
        }
        // 2. A token that verified before.
        Ok(self.cache.get(token, now))
    }

    fn verify_inner(self: &Arc<Self>, token: &[u8]) -> Result<Grant, Failure> {
        let config = &self.config;
        if let Some(grant) = self.recalled(token)? {
            return Ok(grant);
        }
        // Verification judges starts (`nbf`, `iat`) as well as ends: the exact clock.
        let now = self.now_secs();
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
        let keys = self.keys.load();
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
            self.cache
                .insert(token, grant.clone(), exp, keys.generation);
        }
        Ok(grant)
    }

    fn selection_failure(&self, selection: Selection) -> Failure {
        let missing_key = matches!(selection, Selection::UnknownKid | Selection::NoKeyForAlg);
        match &self.live {
            // The last fetch failed: a key we do not know may exist. Fail closed, as unavailable.
            Some(live) if missing_key && !live.is_healthy() => Failure {
                denial: Denial::new(
                    DenialKind::Unavailable,
                    "the key set may lack this key (its last refresh failed)",
                ),
                refresh_may_help: true,
            },
            // Only a live key set can learn a new `kid`.
            live => Failure {
                denial: selection.denial(),
                refresh_may_help: live.is_some() && selection == Selection::UnknownKid,
            },
        }
    }

    fn check_header<'h>(
        &self,
        header: &'h claims::Object,
    ) -> Result<(Algorithm, Option<&'h str>), Denial> {
        let config = &self.config;
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
        let config = &self.config;
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
/// (or a live key set not fetched yet, or too stale) waits for a cooldown-limited fetch.
impl crate::credential::Authenticator for JwtAuthenticator {
    fn authenticate(&self, credential: crate::SecretRef<'_>) -> crate::credential::Authentication {
        use crate::credential::Authentication;
        let issuer = match self.issuer_of(credential.expose()) {
            Ok(issuer) => issuer,
            Err(denial) => return Authentication::Ready(Err(denial)),
        };
        match issuer.verify_inner(credential.expose()) {
            Err(Failure {
                refresh_may_help: true,
                ..
            }) => {
                let issuer = Arc::clone(issuer);
                // The fetch outlives the request's borrow: the token is copied (and zeroized when dropped).
                let credential = credential.to_secret();
                Authentication::Pending(Box::pin(async move {
                    issuer.after_refresh(credential.expose()).await
                }))
            }
            outcome => Authentication::Ready(outcome.map_err(|f| f.denial)),
        }
    }

    /// A token one of the issuers verified before and still remembers (steps 1–2 of its verification, which only
    /// ever remember tokens made of base64url segments and `.`s). Each issuer's cache is asked in order: a token is
    /// only ever verified, and so remembered, by the first issuer accepting its `iss`, so this finds what
    /// [`authenticate`](crate::credential::Authenticator::authenticate) would, without reading the token's payload
    /// to choose the issuer.
    fn recall(
        &self,
        credential: crate::SecretRef<'_>,
        _: crate::credential::sealed::Inside,
    ) -> Option<Grant> {
        let token = credential.expose();
        self.0
            .iter()
            .find_map(|issuer| issuer.recalled(token).ok()?)
    }

    /// Key-set refresh failures (and recoveries) go to the gate's audit sink instead of `tracing`; the first sink
    /// attached stays.
    fn attach_audit(&self, sink: &Arc<dyn crate::layer::AuditSink>) {
        for issuer in self.0.iter() {
            if let Some(live) = &issuer.live {
                let _ = live.events().set(Arc::clone(sink));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::time::{Duration, SystemTime};

    use aws_lc_rs::rand::SystemRandom;
    use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair};
    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;

    use crate::ManualClock;
    use crate::credential::jwt::{
        Algorithm, JwtAuthenticator, JwtAuthenticatorBuilder, KeySet, MintError, MintRequest,
        SigningKey, TokenIssuer,
    };
    use crate::policy::ScopeSet;

    const START: u64 = 1_800_000_000;

    fn signing_key(alg: Algorithm) -> SigningKey {
        let rng = SystemRandom::new();
        if alg == Algorithm::EdDSA {
            let der = Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
            SigningKey::ed25519_from_pkcs8_der(der.as_ref()).unwrap()
        } else {
            let der = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
            SigningKey::es256_from_pkcs8_der(der.as_ref()).unwrap()
        }
    }

    struct Fixture {
        clock: ManualClock,
        issuer: TokenIssuer,
        auth: JwtAuthenticator,
    }

    fn fixture(alg: Algorithm) -> Fixture {
        let clock = ManualClock::new(SystemTime::UNIX_EPOCH + Duration::from_secs(START));
        let issuer = TokenIssuer::new(
            signing_key(alg),
            "key-1",
            "https://issuer.example",
            "orders-api",
        )
        .clock(clock.clone());
        let auth = trusting(&issuer, alg, "https://issuer.example", &clock);
        Fixture {
            clock,
            issuer,
            auth,
        }
    }

    /// An authenticator for tokens of `iss` and audience `orders-api`, trusting `issuer`'s keys (no leeway).
    fn trusting(
        issuer: &TokenIssuer,
        alg: Algorithm,
        iss: &str,
        clock: &ManualClock,
    ) -> JwtAuthenticator {
        JwtAuthenticator::builder()
            .algorithms([alg])
            .key_set(KeySet::from_jwks_json(issuer.jwks_json().as_bytes()).unwrap())
            .issuer(iss)
            .audience("orders-api")
            .leeway(Duration::ZERO)
            .clock(clock.clone())
            .build()
            .unwrap()
    }

    fn mint(f: &Fixture, lifetime: Duration) -> String {
        let scopes = ScopeSet::parse(["orders:read"]).unwrap();
        let request = MintRequest::new("svc-billing", scopes, lifetime);
        f.issuer
            .issue(&request)
            .unwrap()
            .expose_str()
            .unwrap()
            .to_owned()
    }

    fn reason(f: &Fixture, token: &str) -> &'static str {
        match f.auth.verify(token) {
            Ok(_) => "allowed",
            Err(denial) => denial.kind().as_str(),
        }
    }

    /// `token` with one byte of segment `segment` (0 header, 1 payload, 2 signature) changed to another base64url
    /// character.
    fn forged(token: &str, segment: usize) -> String {
        let start: usize = token.split('.').take(segment).map(|s| s.len() + 1).sum();
        let mut bytes = token.as_bytes().to_vec();
        let i = start + 3;
        bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
        String::from_utf8(bytes).unwrap()
    }

    #[test]
    fn a_minted_token_verifies_and_any_changed_byte_is_refused() {
        for alg in [Algorithm::EdDSA, Algorithm::ES256] {
            let f = fixture(alg);
            let token = mint(&f, Duration::from_secs(300));
            let grant = f.auth.verify(&token).unwrap();
            assert_eq!(grant.principal(), "svc-billing");
            assert_eq!(grant.scopes().to_string(), "orders:read");
            for segment in [1, 2] {
                assert_eq!(
                    reason(&f, &forged(&token, segment)),
                    "invalid_credential",
                    "{alg:?} {segment}"
                );
            }
            // A signature cut short, or taken from another token.
            let cut = &token[..token.len() - 4];
            assert_eq!(reason(&f, cut), "invalid_credential");
            let other = mint(&f, Duration::from_secs(300));
            let (head, _) = token.rsplit_once('.').unwrap();
            let (_, signature) = other.rsplit_once('.').unwrap();
            assert_eq!(
                reason(&f, &format!("{head}.{signature}")),
                "invalid_credential"
            );
        }
    }

    #[test]
    fn another_key_issuer_or_audience_is_refused() {
        let f = fixture(Algorithm::EdDSA);
        let request = MintRequest::new(
            "svc",
            ScopeSet::parse(["orders:read"]).unwrap(),
            Duration::from_secs(300),
        );
        let mint_with = |issuer: &str, audience: &str, key: SigningKey| {
            TokenIssuer::new(key, "key-1", issuer, audience)
                .clock(f.clock.clone())
                .issue(&request)
                .unwrap()
                .expose_str()
                .unwrap()
                .to_owned()
        };
        let same_names_other_key = mint_with(
            "https://issuer.example",
            "orders-api",
            signing_key(Algorithm::EdDSA),
        );
        assert_eq!(reason(&f, &same_names_other_key), "invalid_credential");
        // The key matches, but the token names another issuer, then another audience.
        for (iss, aud) in [
            ("https://other.example", "orders-api"),
            ("https://issuer.example", "billing-api"),
        ] {
            let issuer = TokenIssuer::new(signing_key(Algorithm::EdDSA), "key-1", iss, aud)
                .clock(f.clock.clone());
            let auth = trusting(
                &issuer,
                Algorithm::EdDSA,
                "https://issuer.example",
                &f.clock,
            );
            let token = issuer.issue(&request).unwrap();
            let denial = auth.verify(token.expose_str().unwrap()).unwrap_err();
            assert_eq!(denial.kind().as_str(), "invalid_credential", "{iss} {aud}");
        }
    }

    #[test]
    fn a_token_expires_at_its_exp() {
        let f = fixture(Algorithm::EdDSA);
        let token = mint(&f, Duration::from_secs(60));
        f.clock.advance(Duration::from_secs(59));
        assert_eq!(reason(&f, &token), "allowed");
        f.clock.advance(Duration::from_secs(1));
        assert_eq!(reason(&f, &token), "expired_credential");
    }

    #[test]
    fn minting_refuses_what_it_cannot_stand_behind() {
        let f = fixture(Algorithm::EdDSA);
        let scopes = || ScopeSet::parse(["orders:read"]).unwrap();
        let refusal = |request: MintRequest| f.issuer.issue(&request).map(|_| ()).unwrap_err();
        let hour = Duration::from_secs(3600);
        assert!(matches!(
            refusal(MintRequest::new("", scopes(), hour)),
            MintError::EmptySubject
        ));
        for lifetime in [Duration::ZERO, hour + Duration::from_secs(1)] {
            assert!(matches!(
                refusal(MintRequest::new("s", scopes(), lifetime)),
                MintError::Lifetime { .. }
            ));
        }
        assert!(
            f.issuer
                .issue(&MintRequest::new("s", scopes(), hour))
                .is_ok()
        );
        let wildcard = ScopeSet::parse(["orders:*"]).unwrap();
        assert!(matches!(
            refusal(MintRequest::new("s", wildcard, hour)),
            MintError::WildcardScope
        ));
        for reserved in ["sub", "scope", "allowed_ips"] {
            let request = MintRequest::new("s", scopes(), hour).attribute(reserved, "x");
            assert!(
                matches!(refusal(request), MintError::ReservedAttribute(_)),
                "{reserved}"
            );
        }
        let tenant = MintRequest::new("s", scopes(), hour).attribute("tenant", "acme");
        let token = f.issuer.issue(&tenant).unwrap();
        let grant = f.auth.verify(token.expose_str().unwrap());
        assert!(grant.is_ok());
    }

    #[test]
    fn a_key_set_is_replaced_by_hand_on_one_issuer_only() {
        let f = fixture(Algorithm::EdDSA);
        let old = mint(&f, Duration::from_secs(300));
        assert_eq!(reason(&f, &old), "allowed");
        let next = TokenIssuer::new(
            signing_key(Algorithm::EdDSA),
            "key-2",
            "https://issuer.example",
            "orders-api",
        )
        .clock(f.clock.clone());
        let scopes = ScopeSet::parse(["orders:read"]).unwrap();
        let request = MintRequest::new("svc-billing", scopes, Duration::from_secs(300));
        let new = next.issue(&request).unwrap();
        let new = new.expose_str().unwrap();
        assert_eq!(reason(&f, new), "invalid_credential");
        assert!(
            f.auth
                .replace_key_set(KeySet::from_jwks_json(next.jwks_json().as_bytes()).unwrap())
        );
        assert_eq!(reason(&f, new), "allowed");
        // The old key is gone, and its cached answer with it.
        assert_eq!(reason(&f, &old), "invalid_credential");

        // Combined with another issuer: nothing is replaced, and the combination keeps its keys.
        let other = fixture(Algorithm::EdDSA);
        let other_issuer = trusting(
            &other.issuer,
            Algorithm::EdDSA,
            "https://other.example",
            &f.clock,
        );
        let both = JwtAuthenticator::by_issuer([f.auth.clone(), other_issuer]).unwrap();
        assert!(!both.replace_key_set(KeySet::empty()));
        assert!(both.verify(new).is_ok());
    }

    #[test]
    fn a_combination_names_the_issuer_it_refuses() {
        let f = fixture(Algorithm::EdDSA);
        let twice = JwtAuthenticator::by_issuer([f.auth.clone(), f.auth.clone()]).unwrap_err();
        let none = JwtAuthenticator::by_issuer([]).unwrap_err();
        for (err, detail) in [(twice, "named by two entries"), (none, "no issuer entry")] {
            let location = err.location().unwrap();
            assert_eq!(
                location.section.as_deref(),
                Some("[[jwt.issuers]]"),
                "{err}"
            );
            assert_eq!(location.field.as_deref(), Some("issuer"), "{err}");
            assert!(err.to_string().contains(detail), "{err}");
        }
    }

    /// The HS256 key of [`hs256`] and [`hs256_builder`].
    const HS_KEY: [u8; 32] = [5; 32];

    /// An HS256 token of `claims` (JSON text), under [`HS_KEY`].
    fn hs256(claims: &str) -> String {
        use aws_lc_rs::hmac;
        let message = format!(
            "{}.{}",
            B64.encode(r#"{"alg":"HS256","kid":"h"}"#),
            B64.encode(claims)
        );
        let tag = hmac::sign(
            &hmac::Key::new(hmac::HMAC_SHA256, &HS_KEY),
            message.as_bytes(),
        );
        format!("{message}.{}", B64.encode(tag))
    }

    fn hs256_builder(clock: &ManualClock, issuer: &str) -> JwtAuthenticatorBuilder {
        let jwks = format!(
            r#"{{"keys":[{{"kty":"oct","kid":"h","k":"{}"}}]}}"#,
            B64.encode(HS_KEY)
        );
        JwtAuthenticator::builder()
            .algorithms([Algorithm::HS256])
            .key_set(KeySet::from_jwks_json(jwks.as_bytes()).unwrap())
            .issuer(issuer)
            .audience("orders-api")
            .leeway(Duration::ZERO)
            .clock(clock.clone())
    }

    fn hs256_auth(clock: &ManualClock) -> JwtAuthenticator {
        hs256_builder(clock, "https://issuer.example")
            .build()
            .unwrap()
    }

    /// Claims that `hs256_auth` accepts until `exp`.
    fn claims_until(exp: u64) -> String {
        format!(r#"{{"iss":"https://issuer.example","aud":"orders-api","sub":"s","exp":{exp}}}"#)
    }

    #[test]
    fn the_size_bound_admits_a_token_of_exactly_its_length() {
        let clock = ManualClock::new(SystemTime::UNIX_EPOCH + Duration::from_secs(START));
        let token = hs256(&claims_until(START + 300));
        let one = |max: usize| {
            hs256_builder(&clock, "https://issuer.example")
                .max_token_len(max)
                .build()
                .unwrap()
        };
        // Several issuers: the bound is checked before the token's iss is read to choose one.
        let several = |max: usize| {
            let other = hs256_builder(&clock, "https://other.example")
                .max_token_len(max)
                .build()
                .unwrap();
            JwtAuthenticator::by_issuer([one(max), other]).unwrap()
        };
        for auth in [one(token.len()), several(token.len())] {
            assert!(auth.verify(&token).is_ok());
        }
        for auth in [one(token.len() - 1), several(token.len() - 1)] {
            let detail = auth.verify(&token).unwrap_err().detail();
            assert_eq!(detail, "the token is longer than the configured maximum");
        }
    }

    #[test]
    fn recall_finds_only_tokens_verified_before_and_still_valid() {
        use crate::credential::Authenticator;
        use crate::credential::sealed::Inside;
        let clock = ManualClock::new(SystemTime::UNIX_EPOCH + Duration::from_secs(START));
        let recall = |auth: &JwtAuthenticator, token: &str| {
            auth.recall(crate::SecretRef::new(token.as_bytes()), Inside(()))
                .map(|grant| grant.principal().to_owned())
        };
        let other_claims = claims_until(START + 300)
            .replace("issuer.example", "other.example")
            .replace(r#""sub":"s""#, r#""sub":"o""#);
        let (mine, theirs) = (hs256(&claims_until(START + 300)), hs256(&other_claims));
        let other = hs256_builder(&clock, "https://other.example")
            .build()
            .unwrap();
        for auth in [
            hs256_auth(&clock),
            JwtAuthenticator::by_issuer([hs256_auth(&clock), other]).unwrap(),
        ] {
            // Never verified: nothing to recall, though the token is valid.
            assert_eq!(recall(&auth, &mine), None);
            assert!(auth.verify(&mine).is_ok());
            assert_eq!(recall(&auth, &mine).as_deref(), Some("s"));
            // Another byte string is another token.
            assert_eq!(recall(&auth, &format!("{mine}x")), None);
        }
        // Several issuers: each remembers its own tokens, found without choosing the issuer from the payload.
        let other = hs256_builder(&clock, "https://other.example")
            .build()
            .unwrap();
        let both = JwtAuthenticator::by_issuer([hs256_auth(&clock), other]).unwrap();
        assert!(both.verify(&theirs).is_ok());
        assert_eq!(recall(&both, &theirs).as_deref(), Some("o"));
        assert_eq!(recall(&both, &mine), None);
        // Expired since: not recalled (and verification refuses it).
        let single = hs256_auth(&clock);
        assert!(single.verify(&mine).is_ok());
        clock.advance(Duration::from_secs(300));
        assert_eq!(recall(&single, &mine), None);
        assert_eq!(
            single.verify(&mine).unwrap_err().kind().as_str(),
            "expired_credential"
        );
    }

    #[test]
    fn a_token_needs_exactly_three_segments() {
        let clock = ManualClock::new(SystemTime::UNIX_EPOCH + Duration::from_secs(START));
        let auth = hs256_auth(&clock);
        let good = hs256(&claims_until(START + 300));
        assert!(auth.verify(&good).is_ok());
        for (token, detail) in [
            ("aaa.bbb", "the token does not have three segments"),
            ("aaa.bbb.ccc.ddd", "the token does not have three segments"),
            (
                "aaa.bbb.ccc.ddd.eee",
                "the token has five segments (JWE is not accepted)",
            ),
            (
                "aaa.bbb.ccc.ddd.eee.fff",
                "the token does not have three segments",
            ),
        ] {
            assert_eq!(auth.verify(token).unwrap_err().detail(), detail, "{token}");
        }
    }

    #[test]
    fn a_token_alive_only_within_the_leeway_is_allowed_and_not_cached() {
        let clock = ManualClock::new(SystemTime::UNIX_EPOCH + Duration::from_secs(START));
        let auth = hs256_builder(&clock, "https://issuer.example")
            .leeway(Duration::from_secs(30))
            .cache_capacity(1)
            .build()
            .unwrap();
        let cache = &auth.0[0].cache;
        let fresh = hs256(&claims_until(START + 300));
        assert!(auth.verify(&fresh).is_ok());
        assert!(cache.get(fresh.as_bytes(), START.cast_signed()).is_some());
        // Past its exp but within the leeway: allowed, and not remembered (it would take the one place).
        let late = hs256(&claims_until(START));
        assert!(auth.verify(&late).is_ok());
        assert!(cache.get(fresh.as_bytes(), START.cast_signed()).is_some());
    }

    #[test]
    fn nbf_and_iat_may_be_now_but_not_later() {
        let clock = ManualClock::new(SystemTime::UNIX_EPOCH + Duration::from_secs(START));
        let auth = hs256_auth(&clock);
        let verdict = |name: &str, at: u64| {
            let claims = format!(
                r#"{{"iss":"https://issuer.example","aud":"orders-api","sub":"s","scope":"orders:read","exp":{},"{name}":{at}}}"#,
                START + 300
            );
            auth.verify(&hs256(&claims))
                .map(|_| ())
                .map_err(|d| d.detail())
        };
        for name in ["nbf", "iat"] {
            assert_eq!(verdict(name, START - 1), Ok(()), "{name}");
            assert_eq!(verdict(name, START), Ok(()), "{name}");
            assert!(
                verdict(name, START + 1).unwrap_err().contains(name),
                "{name}"
            );
        }
    }

    #[test]
    fn an_empty_segment_is_named() {
        let clock = ManualClock::new(SystemTime::UNIX_EPOCH + Duration::from_secs(START));
        let auth = hs256_auth(&clock);
        let good = hs256(&format!(
            r#"{{"iss":"https://issuer.example","aud":"orders-api","sub":"s","exp":{}}}"#,
            START + 300
        ));
        assert!(auth.verify(&good).is_ok());
        let [header, payload, signature]: [&str; 3] =
            good.split('.').collect::<Vec<_>>().try_into().unwrap();
        for (token, detail) in [
            (
                format!(".{payload}.{signature}"),
                "the token has an empty segment",
            ),
            (
                format!("{header}..{signature}"),
                "the token has an empty segment",
            ),
            (format!("{header}.{payload}."), "the token is unsigned"),
        ] {
            assert_eq!(auth.verify(&token).unwrap_err().detail(), detail, "{token}");
        }
    }

    #[test]
    fn events_name_the_first_issuer_of_an_entry() {
        let f = fixture(Algorithm::EdDSA);
        assert_eq!(f.auth.0[0].label(), "https://issuer.example");
    }

    #[test]
    fn debug_shows_the_settings_and_no_key() {
        let f = fixture(Algorithm::EdDSA);
        let debug = format!("{:?}", f.auth);
        for part in [
            "https://issuer.example",
            "orders-api",
            "EdDSA",
            "live: false",
        ] {
            assert!(debug.contains(part), "{part}: {debug}");
        }
        assert!(!debug.contains("\"x\""), "{debug}");
    }

    #[test]
    fn only_a_live_key_set_can_learn_a_kid() {
        use crate::credential::jwt::keyset::Selection;
        let f = fixture(Algorithm::EdDSA);
        let issuer = &f.auth.0[0];
        for selection in [
            Selection::UnknownKid,
            Selection::NoKeyForAlg,
            Selection::KeyAlgMismatch,
            Selection::AmbiguousKey,
        ] {
            let failure = issuer.selection_failure(selection);
            assert!(!failure.refresh_may_help, "{selection:?}");
            assert_eq!(
                failure.denial.kind().as_str(),
                "invalid_credential",
                "{selection:?}"
            );
        }
    }
}
