//! Verification: parse → checksum → lookup (through the cache) → constant-time compare → revoked? → expired? →
//! grant.

use std::fmt;
use std::sync::Arc;

use super::cache::{Cached, CachedKey, KeyCache, unix_nanos};
use super::format::{KeyFormat, ParsedKey};
use super::hash::Peppers;
use crate::policy::{Denial, DenialKind};
use crate::{Clock, Grant, Secret};

/// Verifies presented API keys and turns them into [`Grant`]s.
///
/// | failure | denial kind |
/// |---|---|
/// | wrong prefix, length, character, checksum (no store call) | `invalid_credential` |
/// | unknown id, wrong secret, digest under a pepper version not configured | `invalid_credential` |
/// | revoked, or a rotated key past its grace | `revoked_credential` |
/// | past its expiry | `expired_credential` |
/// | the store failed | `unavailable` (fail closed) |
///
/// Cheap to clone (an `Arc` inside), so that a future that must not borrow it can own a clone.
#[derive(Clone)]
pub struct ApiKeyVerifier(Arc<Inner>);

struct Inner {
    format: KeyFormat,
    peppers: Peppers,
    cache: Arc<KeyCache>,
    clock: Arc<dyn Clock>,
}

impl ApiKeyVerifier {
    /// A verifier for keys of `format`, hashed under any of `peppers`, looked up through `cache`.
    pub fn new(
        format: KeyFormat,
        peppers: Peppers,
        cache: Arc<KeyCache>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        ApiKeyVerifier(Arc::new(Inner {
            format,
            peppers,
            cache,
            clock,
        }))
    }

    /// The key format this verifier accepts.
    pub fn format(&self) -> &KeyFormat {
        &self.0.format
    }

    /// The cache (and through it, the store).
    pub fn cache(&self) -> &Arc<KeyCache> {
        &self.0.cache
    }

    /// [`verify`](Self::verify) for a key held as a [`Secret`] (as credential extraction hands it over); bytes that
    /// are not UTF-8 are `invalid_credential`.
    pub async fn verify_secret(&self, presented: &Secret) -> Result<Grant, Denial> {
        match presented.expose_str() {
            Some(text) => self.verify(text).await,
            None => Err(Denial::new(
                DenialKind::InvalidCredential,
                "API key is malformed or its checksum does not match",
            )),
        }
    }

    /// Verifies `presented` (the whole key, `<prefix>_<body>`). A malformed key is refused before any store or
    /// crypto work. A cache hit allocates nothing.
    pub async fn verify(&self, presented: &str) -> Result<Grant, Denial> {
        let this = &*self.0;
        let Some(parsed) = this.format.parse(presented) else {
            return Err(Denial::new(
                DenialKind::InvalidCredential,
                "API key is malformed or its checksum does not match",
            ));
        };
        let now = unix_nanos(this.clock.now());
        let check = |key: &CachedKey| this.check(&parsed, key, now);
        match this.cache.peek(&parsed.id, now, check) {
            Cached::Found(outcome) => outcome,
            Cached::NotFound => Err(unknown_id()),
            Cached::Miss => match this.cache.fetch(parsed.id, now).await {
                Ok(Some(key)) => check(&key),
                Ok(None) => Err(unknown_id()),
                Err(error) => {
                    tracing::warn!(key_id = %parsed.id, %error, "API key lookup failed");
                    Err(Denial::new(
                        DenialKind::Unavailable,
                        "the API key store did not answer",
                    ))
                }
            },
        }
    }
}

impl Inner {
    /// Compare, revoked?, expired? — on the cache entry in place.
    fn check(&self, parsed: &ParsedKey<'_>, key: &CachedKey, now: u64) -> Result<Grant, Denial> {
        // Start loading the grant's reference count (its own allocation, likely a cache miss at scale) now, with a
        // plain load, so that the miss overlaps the HMAC instead of stalling the clone at the end.
        key.grant.prefetch();
        match self
            .peppers
            .verify(&parsed.id, parsed.secret, key.pepper_version, &key.digest)
        {
            Some(true) => {}
            Some(false) => {
                return Err(Denial::new(
                    DenialKind::InvalidCredential,
                    "API key secret does not match",
                ));
            }
            None => {
                tracing::warn!(
                    key_id = %parsed.id,
                    pepper_version = key.pepper_version,
                    "API key is hashed under a pepper version that is not configured"
                );
                return Err(Denial::new(
                    DenialKind::InvalidCredential,
                    "API key is hashed under a pepper version that is not configured",
                ));
            }
        }
        if key.revoked_at <= now {
            return Err(Denial::new(
                DenialKind::RevokedCredential,
                "API key is revoked",
            ));
        }
        if key.expires_at <= now {
            return Err(Denial::new(
                DenialKind::ExpiredCredential,
                "API key has expired",
            ));
        }
        Ok(key.grant.clone())
    }
}

fn unknown_id() -> Denial {
    Denial::new(DenialKind::InvalidCredential, "API key id is unknown")
}

impl fmt::Debug for ApiKeyVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiKeyVerifier")
            .field("format", &self.0.format)
            .field("peppers", &self.0.peppers)
            .field("cache", &self.0.cache)
            .finish_non_exhaustive()
    }
}

impl crate::credential::Authenticator for ApiKeyVerifier {
    fn authenticate(&self, credential: Secret) -> crate::credential::AuthFuture {
        let verifier = self.clone();
        Box::pin(async move { verifier.verify_secret(&credential).await })
    }
}
