//! Verification: parse → checksum → lookup (through the cache) → constant-time compare → revoked? → disabled? →
//! expired? → grant (and a note for `last_used_at`, written behind the request).

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use super::cache::{Cached, KeyCache, KeyView, unix_nanos};
use super::format::{KeyFormat, ParsedKey};
use super::hash::Peppers;
use super::last_used::LastUsed;
use crate::policy::{Denial, DenialKind};
use crate::{Clock, Grant, Secret};

/// Verifies presented API keys and turns them into [`Grant`]s.
///
/// | failure | denial kind |
/// |---|---|
/// | wrong prefix, length, character, checksum (no store call) | `invalid_credential` |
/// | unknown id, wrong secret, digest under a pepper version not configured | `invalid_credential` |
/// | revoked, or a rotated key past its grace | `revoked_credential` |
/// | disabled | `disabled_credential` |
/// | past its expiry | `expired_credential` |
/// | the store failed | `unavailable` (fail closed) |
///
/// An allowed key is noted, and its `last_used_at` written behind the request, in one batch per interval (see
/// [`ApiKeyVerifierBuilder::last_used`]); nothing about it can change a decision.
///
/// Cheap to clone (an `Arc` inside), so that a future that must not borrow it can own a clone.
#[derive(Clone)]
pub struct ApiKeyVerifier(Arc<Inner>);

struct Inner {
    format: KeyFormat,
    peppers: Peppers,
    cache: Arc<KeyCache>,
    clock: Arc<dyn Clock>,
    last_used: Option<LastUsed>,
}

/// How often `last_used_at` is written per key by default.
pub const DEFAULT_LAST_USED_INTERVAL: Duration = Duration::from_secs(60);

impl ApiKeyVerifier {
    /// Starts a verifier for keys hashed under any of `peppers`, looked up through `cache`. Defaults: keys of the
    /// default format (`sg_…`), the system clock.
    pub fn builder(peppers: Peppers, cache: Arc<KeyCache>) -> ApiKeyVerifierBuilder {
        ApiKeyVerifierBuilder {
            format: KeyFormat::default(),
            peppers,
            cache,
            clock: Arc::new(crate::SystemClock),
            last_used: Some(DEFAULT_LAST_USED_INTERVAL),
        }
    }

    /// Writes the `last_used_at` notes taken so far now, rather than at the end of the interval (e.g. before the
    /// gate stops). A failing write is logged, as behind requests.
    pub async fn flush_last_used(&self) {
        if let Some(last_used) = &self.0.last_used {
            last_used.flush().await;
        }
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
            None => Err(malformed()),
        }
    }

    /// Verifies `presented` (the whole key, `<prefix>_<body>`). A malformed key is refused before any store or
    /// crypto work. A cache hit allocates nothing and does not wait.
    pub async fn verify(&self, presented: &str) -> Result<Grant, Denial> {
        let this = &*self.0;
        let (parsed, now) = this.start(presented)?;
        match this.cached(&parsed, now) {
            Some(outcome) => outcome,
            None => this.read_store(&parsed, now).await,
        }
    }

    /// [`verify`](Self::verify) without waiting: the outcome when it needs no store read (a malformed key, or any
    /// outcome the cache holds), `None` when the store has to be asked.
    pub fn verify_cached(&self, presented: &str) -> Option<Result<Grant, Denial>> {
        let this = &*self.0;
        match this.start(presented) {
            Ok((parsed, now)) => this.cached(&parsed, now),
            Err(denial) => Some(Err(denial)),
        }
    }
}

impl Inner {
    /// Parses the key (refusing a malformed one before any other work) and reads the clock once for the request.
    fn start<'a>(&self, presented: &'a str) -> Result<(ParsedKey<'a>, u64), Denial> {
        let parsed = self.format.parse(presented).ok_or_else(malformed)?;
        Ok((parsed, unix_nanos(self.clock.now())))
    }

    /// The outcome the cache holds for `parsed`, if any.
    fn cached(&self, parsed: &ParsedKey<'_>, now: u64) -> Option<Result<Grant, Denial>> {
        match self
            .cache
            .peek(&parsed.id, now, |key| self.check(parsed, key, now))
        {
            Cached::Found(outcome) => Some(outcome),
            Cached::NotFound => Some(Err(unknown_id())),
            Cached::Miss => None,
        }
    }

    /// The store read after a cache miss, and the checks on what it returned. `requested_at` (the request's clock
    /// reading) only stamps the cache entry; revocation and expiry are judged on the clock read again after the
    /// store answered, since a busy store or a pool wait may have outlasted a grace period or a lifetime.
    async fn read_store(&self, parsed: &ParsedKey<'_>, requested_at: u64) -> Result<Grant, Denial> {
        let fetched = self.cache.fetch(parsed.id, requested_at).await;
        let now = unix_nanos(self.clock.now());
        match fetched {
            Ok(Some(key)) => self.check(parsed, KeyView::Full(&key), now),
            Ok(None) => Err(unknown_id()),
            Err(error) => {
                tracing::warn!(key_id = %parsed.id, %error, "API key lookup failed");
                Err(Denial::new(
                    DenialKind::Unavailable,
                    "the API key store did not answer",
                ))
            }
        }
    }

    /// Compare, revoked?, expired? — on the cache entry in place.
    fn check(&self, parsed: &ParsedKey<'_>, key: KeyView<'_>, now: u64) -> Result<Grant, Denial> {
        // Start reading the rights' reference count, which a grant increments: when the key's rights are its own
        // (not shared with other keys), that is a second cache line, and its load then overlaps the hash below.
        if let KeyView::Compact { key, .. } = key {
            key.touch_rights();
        }
        // From the presented key alone: the CPU hashes while the entry's memory is still being read.
        let current = self.peppers.current_digest(&parsed.id, parsed.secret);
        match key {
            // Fresh, not revoked and not expired, or it would not be served in this form.
            KeyView::Compact {
                key,
                pepper_version,
            } => {
                self.compare(parsed, &current, pepper_version, &key.digest)?;
                Ok(key.grant())
            }
            KeyView::Full(key) => {
                self.compare(parsed, &current, key.pepper_version, &key.digest)?;
                if key.revoked_at <= now {
                    return Err(Denial::new(
                        DenialKind::RevokedCredential,
                        "API key is revoked",
                    ));
                }
                if key.disabled {
                    return Err(Denial::new(
                        DenialKind::DisabledCredential,
                        "API key is disabled",
                    ));
                }
                if key.expires_at() <= now {
                    return Err(Denial::new(
                        DenialKind::ExpiredCredential,
                        "API key has expired",
                    ));
                }
                Ok(key.grant(parsed.id))
            }
        }
        .inspect(|_| {
            if let Some(last_used) = &self.last_used {
                last_used.note(parsed.id, now);
            }
        })
    }

    /// The constant-time compare of the presented secret's digest with the stored one.
    fn compare(
        &self,
        parsed: &ParsedKey<'_>,
        current: &[u64; 4],
        pepper_version: u32,
        stored: &[u64; 4],
    ) -> Result<(), Denial> {
        match self
            .peppers
            .verify(&parsed.id, parsed.secret, current, pepper_version, stored)
        {
            Some(true) => Ok(()),
            Some(false) => Err(Denial::invalid_credential("API key secret does not match")),
            None => {
                tracing::warn!(
                    key_id = %parsed.id,
                    pepper_version,
                    "API key is hashed under a pepper version that is not configured"
                );
                Err(Denial::invalid_credential(
                    "API key is hashed under a pepper version that is not configured",
                ))
            }
        }
    }
}

/// Builds an [`ApiKeyVerifier`]. Start with [`ApiKeyVerifier::builder`].
#[must_use]
pub struct ApiKeyVerifierBuilder {
    format: KeyFormat,
    peppers: Peppers,
    cache: Arc<KeyCache>,
    clock: Arc<dyn Clock>,
    last_used: Option<Duration>,
}

impl ApiKeyVerifierBuilder {
    /// The key format accepted (prefix). Defaults to [`KeyFormat::default`] (`sg_…`).
    pub fn format(mut self, format: KeyFormat) -> Self {
        self.format = format;
        self
    }

    /// The clock for expiry, revocation and the cache. Defaults to the system clock.
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// How often each key's `last_used_at` is written at most (rounded up to whole seconds, at least one), behind
    /// the requests, in one batch per interval; `None` records nothing. Defaults to
    /// [`DEFAULT_LAST_USED_INTERVAL`] (60 s). Recording needs a tokio runtime (the writer is a task started by the
    /// first allowed key); without one nothing is recorded. A failing write is logged and never changes a
    /// decision.
    pub fn last_used(mut self, interval: Option<Duration>) -> Self {
        self.last_used = interval;
        self
    }

    /// The verifier. The cache keeps its compact entries for the current pepper.
    pub fn build(self) -> ApiKeyVerifier {
        self.cache
            .claim_compact_pepper(self.peppers.current_version());
        let last_used = self.last_used.map(|interval| {
            let whole =
                Duration::from_secs(interval.as_secs() + u64::from(interval.subsec_nanos() > 0));
            LastUsed::new(Arc::clone(self.cache.store()), whole)
        });
        ApiKeyVerifier(Arc::new(Inner {
            format: self.format,
            peppers: self.peppers,
            cache: self.cache,
            clock: self.clock,
            last_used,
        }))
    }
}

impl fmt::Debug for ApiKeyVerifierBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiKeyVerifierBuilder")
            .field("format", &self.format)
            .field("peppers", &self.peppers)
            .finish_non_exhaustive()
    }
}

fn malformed() -> Denial {
    Denial::invalid_credential("API key is malformed or its checksum does not match")
}

fn unknown_id() -> Denial {
    Denial::invalid_credential("API key id is unknown")
}

impl fmt::Debug for ApiKeyVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiKeyVerifier")
            .field("format", &self.0.format)
            .field("peppers", &self.0.peppers)
            .field("cache", &self.0.cache)
            .field(
                "last_used_interval",
                &self.0.last_used.as_ref().map(LastUsed::interval),
            )
            .finish_non_exhaustive()
    }
}

/// A cached (or malformed) key is decided at once; only a cache miss waits for the store.
impl crate::credential::Authenticator for ApiKeyVerifier {
    fn authenticate(&self, credential: crate::SecretRef<'_>) -> crate::credential::Authentication {
        use crate::credential::Authentication;
        let this = &*self.0;
        let started = credential
            .expose_str()
            .ok_or_else(malformed)
            .and_then(|text| this.start(text));
        let now = match started {
            Err(denial) => return Authentication::Ready(Err(denial)),
            Ok((parsed, now)) => match this.cached(&parsed, now) {
                Some(outcome) => return Authentication::Ready(outcome),
                None => now,
            },
        };
        let verifier = self.clone();
        // The store read outlives the request's borrow: the credential is copied (and zeroized when dropped).
        let credential = credential.to_secret();
        Authentication::Pending(Box::pin(async move {
            let this = &*verifier.0;
            // Parsed again (it borrows from the credential, which the future owns); the clock is read again only
            // once the store has answered.
            match credential
                .expose_str()
                .and_then(|text| this.format.parse(text))
            {
                Some(parsed) => this.read_store(&parsed, now).await,
                None => Err(malformed()),
            }
        }))
    }
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use super::*;
    use crate::ManualClock;
    use crate::credential::api_key::{
        CacheConfig, KeyIssuer, MemoryKeyStore, NewKey, Pepper, Peppers,
    };
    use crate::policy::ScopeSet;

    struct Fixture {
        store: Arc<MemoryKeyStore>,
        peppers: Peppers,
        clock: ManualClock,
        issuer: KeyIssuer,
    }

    fn fixture() -> Fixture {
        let store = Arc::new(MemoryKeyStore::new());
        let peppers = Peppers::single(Pepper::new(1, vec![7; 32]).unwrap());
        let clock = ManualClock::new(SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000));
        let issuer = KeyIssuer::new(
            store.clone(),
            KeyFormat::new("acme").unwrap(),
            peppers.clone(),
            Arc::new(clock.clone()),
        );
        Fixture {
            store,
            peppers,
            clock,
            issuer,
        }
    }

    impl Fixture {
        /// A verifier with a cache of its own (every first look at a key reads the store).
        fn verifier(&self, last_used: Option<Duration>) -> ApiKeyVerifier {
            let cache = Arc::new(KeyCache::new(self.store.clone(), CacheConfig::default()));
            ApiKeyVerifier::builder(self.peppers.clone(), cache)
                .format(KeyFormat::new("acme").unwrap())
                .clock(self.clock.clone())
                .last_used(last_used)
                .build()
        }
    }

    fn new_key(lifetime: Option<Duration>) -> NewKey {
        let key = NewKey::new("k", ScopeSet::parse(["a:read"]).unwrap());
        match lifetime {
            Some(lifetime) => key.expires_in(lifetime),
            None => key,
        }
    }

    fn kind(outcome: &Result<Grant, Denial>) -> &'static str {
        match outcome {
            Ok(_) => "allowed",
            Err(denial) => denial.kind().as_str(),
        }
    }

    #[tokio::test]
    async fn a_key_expires_at_its_expiry_to_the_nanosecond() {
        let f = fixture();
        let issued = f
            .issuer
            .issue(new_key(Some(Duration::from_secs(60))))
            .await
            .unwrap();
        let key = issued.key().expose_str().unwrap();
        f.clock
            .advance(Duration::from_secs(60) - Duration::from_nanos(1));
        assert_eq!(kind(&f.verifier(None).verify(key).await), "allowed");
        f.clock.advance(Duration::from_nanos(1));
        assert_eq!(
            kind(&f.verifier(None).verify(key).await),
            "expired_credential"
        );
    }

    #[tokio::test]
    async fn a_key_is_revoked_from_the_instant_of_its_revocation() {
        let f = fixture();
        let issued = f.issuer.issue(new_key(None)).await.unwrap();
        let key = issued.key().expose_str().unwrap();
        assert_eq!(kind(&f.verifier(None).verify(key).await), "allowed");
        f.issuer.revoke(issued.id()).await.unwrap();
        // The clock has not moved: revoked at this very instant.
        assert_eq!(
            kind(&f.verifier(None).verify(key).await),
            "revoked_credential"
        );
    }

    #[tokio::test]
    async fn a_wrong_secret_is_refused_and_a_cached_answer_needs_no_store() {
        let f = fixture();
        let issued = f.issuer.issue(new_key(None)).await.unwrap();
        let key = issued.key().expose_str().unwrap().to_owned();
        let verifier = f.verifier(None);
        // Nothing cached yet: the store has to be asked.
        assert!(verifier.verify_cached(&key).is_none());
        assert_eq!(kind(&verifier.verify(&key).await), "allowed");
        assert_eq!(kind(&verifier.verify_cached(&key).unwrap()), "allowed");
        // The same id with another secret (its checksum made right): refused, from the cache and from the store.
        let forged = forge_secret(&key);
        assert_eq!(
            kind(&verifier.verify_cached(&forged).unwrap()),
            "invalid_credential"
        );
        assert_eq!(
            kind(&f.verifier(None).verify(&forged).await),
            "invalid_credential"
        );
    }

    /// `key` with the last character of its secret changed and its checksum made right for it.
    fn forge_secret(key: &str) -> String {
        let body_end = key.len() - super::super::format::CHECKSUM_LEN;
        let other = if &key[body_end - 1..body_end] == "A" {
            "B"
        } else {
            "A"
        };
        super::super::format::rechecksummed(&format!(
            "{}{other}{}",
            &key[..body_end - 1],
            &key[body_end..]
        ))
    }

    #[tokio::test]
    async fn flushing_writes_the_last_use_at_once() {
        use crate::credential::api_key::KeyStore;
        let f = fixture();
        let issued = f.issuer.issue(new_key(None)).await.unwrap();
        let last_used = || async {
            let record = f.store.get(issued.id()).await.unwrap().unwrap();
            record.info.last_used_at
        };
        // An hour between writes: nothing reaches the store until the flush.
        let verifier = f.verifier(Some(Duration::from_secs(3600)));
        f.clock.advance(Duration::from_secs(5));
        let used_at = f.clock.now();
        let key = issued.key().expose_str().unwrap();
        assert_eq!(kind(&verifier.verify(key).await), "allowed");
        assert_eq!(last_used().await, None);
        verifier.flush_last_used().await;
        assert_eq!(last_used().await, Some(used_at));
    }

    #[test]
    fn last_used_intervals_round_up_to_whole_seconds() {
        let f = fixture();
        for (given, whole) in [(1_500, "Some(2s)"), (2_000, "Some(2s)"), (200, "Some(1s)")] {
            let shown = format!("{:?}", f.verifier(Some(Duration::from_millis(given))));
            assert!(
                shown.contains(&format!("last_used_interval: {whole}")),
                "{given} ms: {shown}"
            );
        }
        let shown = format!("{:?}", f.verifier(None));
        assert!(shown.contains("last_used_interval: None"), "{shown}");
    }

    #[test]
    fn debug_shows_the_format_and_versions_never_a_pepper() {
        let f = fixture();
        let verifier = f.verifier(None);
        assert_eq!(verifier.format().prefix(), "acme");
        let builder = ApiKeyVerifier::builder(
            f.peppers.clone(),
            Arc::new(KeyCache::new(f.store.clone(), CacheConfig::default())),
        );
        for shown in [format!("{verifier:?}"), format!("{builder:?}")] {
            assert!(shown.contains("versions: [1]"), "{shown}");
            assert!(!shown.contains("7, 7"), "{shown}");
        }
        assert!(format!("{verifier:?}").contains(r#"prefix: "acme""#));
    }
}
