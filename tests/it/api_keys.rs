//! API keys end to end: issue → verify through the cache → revoke / rotate / expire, over the memory and `SQLite`
//! stores. Every allowed case has its refused twin.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::format_collect)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use proptest::prelude::*;
use scopegate::credential::api_key::{
    ApiKeyVerifier, CacheConfig, IssuedKey, IssuerError, KeyCache, KeyFormat, KeyId, KeyIssuer,
    KeyRecord, KeyStatus, KeyStore, MemoryKeyStore, NewKey, Pepper, Peppers, StoreError,
    StoreFuture,
};
use scopegate::network::{Cidr, CidrSet, parse_ip};
use scopegate::policy::{DenialKind, Scope, ScopeSet};
use scopegate::{Attributes, Clock, CredentialKind, ManualClock};

const START: u64 = 1_700_000_000;

fn pepper(version: u32, fill: u8) -> Pepper {
    Pepper::new(version, vec![fill; 32]).unwrap()
}

/// A store wrapper that counts lookups, can be told to fail, and can be held: while a `hold()` guard lives, every
/// lookup waits (a busy store, a pool wait).
#[derive(Debug)]
pub(crate) struct TestStore {
    inner: Arc<dyn KeyStore>,
    gets: AtomicUsize,
    failing: AtomicBool,
    gate: Arc<tokio::sync::RwLock<()>>,
    /// Each batch of `last_used_at` writes asked for.
    last_used: std::sync::Mutex<Vec<Vec<(KeyId, SystemTime)>>>,
    /// While set, `last_used_at` writes never finish.
    stuck_last_used: AtomicBool,
    /// While set, `last_used_at` writes fail.
    failing_last_used: AtomicBool,
}

impl TestStore {
    pub(crate) fn new(inner: Arc<dyn KeyStore>) -> Arc<Self> {
        Arc::new(TestStore {
            inner,
            gets: AtomicUsize::new(0),
            failing: AtomicBool::new(false),
            gate: Arc::new(tokio::sync::RwLock::new(())),
            last_used: std::sync::Mutex::new(Vec::new()),
            stuck_last_used: AtomicBool::new(false),
            failing_last_used: AtomicBool::new(false),
        })
    }

    /// Lookups wait until the guard is dropped.
    async fn hold(&self) -> tokio::sync::OwnedRwLockWriteGuard<()> {
        self.gate.clone().write_owned().await
    }

    pub(crate) fn gets(&self) -> usize {
        self.gets.load(Ordering::SeqCst)
    }

    fn fail(&self, on: bool) {
        self.failing.store(on, Ordering::SeqCst);
    }

    fn check<T: Send + 'static>(&self) -> Option<StoreFuture<'static, T>> {
        self.failing.load(Ordering::SeqCst).then(|| {
            let error = StoreError::Backend("database is locked".into());
            Box::pin(std::future::ready(Err(error))) as StoreFuture<'static, T>
        })
    }
}

impl KeyStore for TestStore {
    fn insert(&self, record: KeyRecord) -> StoreFuture<'_, ()> {
        self.check().unwrap_or_else(|| self.inner.insert(record))
    }
    fn get(&self, id: KeyId) -> StoreFuture<'_, Option<KeyRecord>> {
        self.gets.fetch_add(1, Ordering::SeqCst);
        let answer = self.check().unwrap_or_else(|| self.inner.get(id));
        Box::pin(async move {
            let _open = self.gate.read().await;
            answer.await
        })
    }
    fn list(&self) -> StoreFuture<'_, Vec<KeyRecord>> {
        self.check().unwrap_or_else(|| self.inner.list())
    }
    fn revoke(&self, id: KeyId, at: SystemTime) -> StoreFuture<'_, Option<KeyRecord>> {
        self.check().unwrap_or_else(|| self.inner.revoke(id, at))
    }
    fn rotate(
        &self,
        old: KeyId,
        old_ends_at: SystemTime,
        now: SystemTime,
        new: KeyRecord,
    ) -> StoreFuture<'_, bool> {
        self.check()
            .unwrap_or_else(|| self.inner.rotate(old, old_ends_at, now, new))
    }
    fn set_disabled(
        &self,
        id: KeyId,
        at: Option<SystemTime>,
    ) -> StoreFuture<'_, Option<KeyRecord>> {
        self.check()
            .unwrap_or_else(|| self.inner.set_disabled(id, at))
    }
    fn record_last_used(&self, uses: Vec<(KeyId, SystemTime)>) -> StoreFuture<'_, ()> {
        self.last_used.lock().unwrap().push(uses.clone());
        if self.stuck_last_used.load(Ordering::SeqCst) {
            return Box::pin(std::future::pending());
        }
        if self.failing_last_used.load(Ordering::SeqCst) {
            let error = StoreError::Backend("disk full".into());
            return Box::pin(std::future::ready(Err(error)));
        }
        self.check()
            .unwrap_or_else(|| self.inner.record_last_used(uses))
    }
}

/// One replica: a cache over a (shared) store, an issuer writing through that cache, a verifier reading through it.
struct Replica {
    clock: ManualClock,
    store: Arc<TestStore>,
    cache: Arc<KeyCache>,
    issuer: KeyIssuer,
    verifier: ApiKeyVerifier,
}

fn replica_with(
    clock: &ManualClock,
    backing: Arc<dyn KeyStore>,
    peppers: Peppers,
    config: CacheConfig,
) -> Replica {
    let store = TestStore::new(backing);
    let cache = Arc::new(KeyCache::new(store.clone(), config));
    let clock_arc: Arc<dyn Clock> = Arc::new(clock.clone());
    Replica {
        clock: clock.clone(),
        issuer: KeyIssuer::new(
            cache.clone(),
            KeyFormat::default(),
            peppers.clone(),
            clock_arc.clone(),
        ),
        verifier: ApiKeyVerifier::builder(peppers, cache.clone())
            .clock(clock_arc)
            .build(),
        store,
        cache,
    }
}

fn replica() -> Replica {
    let clock = ManualClock::new(SystemTime::UNIX_EPOCH + Duration::from_secs(START));
    replica_with(
        &clock,
        Arc::new(MemoryKeyStore::new()),
        Peppers::single(pepper(1, 7)),
        CacheConfig::default(),
    )
}

fn scopes(list: &[&str]) -> ScopeSet {
    ScopeSet::parse(list).unwrap()
}

fn request() -> NewKey {
    let mut attrs = Attributes::new();
    attrs.insert("tenant".into(), "acme".into());
    let nets: CidrSet = ["10.0.0.0/8", "2001:db8::/32"]
        .iter()
        .map(|s| s.parse::<Cidr>().unwrap())
        .collect();
    NewKey::new("billing", scopes(&["invoices:read", "orders:*"]))
        .allow_ips(nets)
        .attributes(attrs)
}

async fn issue(r: &Replica) -> (IssuedKey, String) {
    let issued = r.issuer.issue(request()).await.unwrap();
    let key = issued.key().expose_str().unwrap().to_owned();
    (issued, key)
}

async fn issue_expiring(r: &Replica, lifetime: Duration) -> IssuedKey {
    r.issuer
        .issue(request().expires_in(lifetime))
        .await
        .unwrap()
}

async fn denial(r: &Replica, key: &str) -> DenialKind {
    r.verifier.verify(key).await.unwrap_err().kind()
}

const ALPHABET: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// Writes a well-formed key (valid checksum) for any id and secret: what a forger can always do.
fn forge(prefix: &str, id: &str, secret: &str) -> String {
    let head = format!("{prefix}_{id}{secret}");
    let mut crc = crc32fast::hash(head.as_bytes());
    let mut sum = [b'0'; 6];
    for slot in sum.iter_mut().rev() {
        *slot = ALPHABET[(crc % 62) as usize];
        crc /= 62;
    }
    format!("{head}{}", std::str::from_utf8(&sum).unwrap())
}

fn id_of(key: &str) -> &str {
    &key[3..19]
}

fn secret_of(key: &str) -> &str {
    &key[19..51]
}

#[tokio::test]
async fn round_trip_grants_what_was_issued() {
    let r = replica();
    let (issued, key) = issue(&r).await;
    assert!(key.starts_with("sg_"));
    assert_eq!(key.len(), 3 + 54);
    assert_eq!(id_of(&key), issued.id().as_str());

    let grant = r.verifier.verify(&key).await.unwrap();
    assert_eq!(grant.kind(), CredentialKind::ApiKey);
    assert_eq!(grant.principal(), issued.id().as_str());
    assert!(
        grant
            .scopes()
            .covers(&Scope::parse("invoices:read").unwrap())
    );
    assert!(
        grant
            .scopes()
            .covers(&Scope::parse("orders:lines:write").unwrap())
    );
    assert!(
        !grant
            .scopes()
            .covers(&Scope::parse("invoices:write").unwrap())
    );
    assert_eq!(grant.attr("tenant"), Some("acme"));
    let nets = grant.allow_ips().unwrap();
    assert!(nets.contains(parse_ip("10.1.2.3").unwrap()));
    assert!(!nets.contains(parse_ip("192.0.2.1").unwrap()));

    // Twin: the same id with another secret is refused.
    let other_secret = "A".repeat(32);
    let forged = forge("sg", id_of(&key), &other_secret);
    assert_eq!(denial(&r, &forged).await, DenialKind::InvalidCredential);
}

#[tokio::test]
async fn a_bad_checksum_is_refused_without_a_store_call() {
    let r = replica();
    let (_, key) = issue(&r).await;
    let last = key.as_bytes()[key.len() - 1];
    let flipped = if last == b'0' { '1' } else { '0' };
    let bad = format!("{}{flipped}", &key[..key.len() - 1]);
    assert_eq!(denial(&r, &bad).await, DenialKind::InvalidCredential);
    // A changed secret character with the old checksum: also the checksum's catch.
    let c = key.as_bytes()[30];
    let swapped = if c == b'a' { 'b' } else { 'a' };
    let bad_secret = format!("{}{swapped}{}", &key[..30], &key[31..]);
    assert_eq!(denial(&r, &bad_secret).await, DenialKind::InvalidCredential);
    assert_eq!(r.store.gets(), 0);

    // Twin: the intact key reaches the store once.
    r.verifier.verify(&key).await.unwrap();
    assert_eq!(r.store.gets(), 1);
}

#[tokio::test]
async fn wrong_shapes_are_refused_without_a_store_call() {
    let r = replica();
    let (_, key) = issue(&r).await;
    let body = &key[3..];
    let cases = [
        String::new(),
        "sg_".to_owned(),
        body.to_owned(),
        format!("SG_{body}"),
        format!("Sg_{body}"),
        format!("acme_{body}"),
        format!("sg-{body}"),
        format!("sg__{body}"),
        format!("{key}A"),
        key[..key.len() - 1].to_owned(),
        format!(" {key}"),
        format!("{key} "),
        format!("{key}\0"),
        format!("Bearer {key}"),
        key.replacen(&key[10..11], "+", 1),
        key.replacen(&key[10..11], "/", 1),
        key.replacen(&key[10..11], "=", 1),
        format!("sg_\u{0391}{}", &body[2..]), // Greek capital alpha, same byte length
        key.to_uppercase(),
        "x".repeat(10_000),
    ];
    for bad in &cases {
        assert_eq!(
            denial(&r, bad).await,
            DenialKind::InvalidCredential,
            "{bad:?}"
        );
    }
    assert_eq!(r.store.gets(), 0);

    // A prefix is exact: a verifier for `acme_live` refuses `sg` keys, and accepts its own.
    let clock: Arc<dyn Clock> = Arc::new(r.clock.clone());
    let acme = KeyFormat::new("acme_live").unwrap();
    let acme_issuer = KeyIssuer::new(
        r.cache.clone(),
        acme.clone(),
        Peppers::single(pepper(1, 7)),
        clock.clone(),
    );
    let acme_verifier = ApiKeyVerifier::builder(Peppers::single(pepper(1, 7)), r.cache.clone())
        .format(acme)
        .clock(clock)
        .build();
    let acme_key = acme_issuer.issue(request()).await.unwrap();
    let acme_key = acme_key.key().expose_str().unwrap();
    assert!(acme_key.starts_with("acme_live_"));
    assert_eq!(
        acme_verifier.verify(&key).await.unwrap_err().kind(),
        DenialKind::InvalidCredential
    );
    assert_eq!(r.store.gets(), 0);
    acme_verifier.verify(acme_key).await.unwrap();
    assert_eq!(
        denial(&r, acme_key).await,
        DenialKind::InvalidCredential,
        "an sg verifier refuses acme_live keys"
    );
}

#[tokio::test]
async fn an_unknown_id_is_invalid_and_not_found_is_cached() {
    let r = replica();
    let unknown = forge("sg", "UnknownKeyId0000", &"s".repeat(32));
    assert_eq!(denial(&r, &unknown).await, DenialKind::InvalidCredential);
    assert_eq!(denial(&r, &unknown).await, DenialKind::InvalidCredential);
    assert_eq!(
        r.store.gets(),
        1,
        "the second lookup is served by the cache"
    );
    // Stale after the TTL: asked again.
    r.clock.advance(Duration::from_secs(30));
    assert_eq!(denial(&r, &unknown).await, DenialKind::InvalidCredential);
    assert_eq!(r.store.gets(), 2);

    // Twin: an issued key is found (and a cached not-found for its id would have been dropped by the insert).
    let (_, key) = issue(&r).await;
    r.verifier.verify(&key).await.unwrap();
}

#[tokio::test]
async fn a_wrong_secret_with_a_valid_id_is_invalid() {
    let r = replica();
    let (_, key) = issue(&r).await;
    let mut secret = secret_of(&key).as_bytes().to_vec();
    secret[0] = if secret[0] == b'x' { b'y' } else { b'x' };
    let forged = forge("sg", id_of(&key), std::str::from_utf8(&secret).unwrap());
    assert_eq!(denial(&r, &forged).await, DenialKind::InvalidCredential);
    // Twin: the real secret, through the now-warm cache.
    r.verifier.verify(&key).await.unwrap();
    assert_eq!(r.store.gets(), 1);
}

#[tokio::test]
async fn a_revoked_key_is_refused_at_once_on_this_replica() {
    let r = replica();
    let (issued, key) = issue(&r).await;
    r.verifier.verify(&key).await.unwrap();
    let info = r.issuer.revoke(issued.id()).await.unwrap();
    assert_eq!(info.revoked_at, Some(r.clock.now()));
    assert_eq!(denial(&r, &key).await, DenialKind::RevokedCredential);
    // Final: revoking again keeps the first time.
    r.clock.advance(Duration::from_secs(5));
    let again = r.issuer.revoke(issued.id()).await.unwrap();
    assert_eq!(again.revoked_at, info.revoked_at);
    assert_eq!(denial(&r, &key).await, DenialKind::RevokedCredential);
    // Unknown id.
    let unknown: KeyId = "0000000000000000".parse().unwrap();
    assert!(matches!(
        r.issuer.revoke(unknown).await,
        Err(IssuerError::UnknownKey(id)) if id == unknown
    ));
}

#[tokio::test]
async fn revocation_on_another_replica_reaches_this_one_within_the_ttl() {
    let clock = ManualClock::new(SystemTime::UNIX_EPOCH + Duration::from_secs(START));
    let shared: Arc<dyn KeyStore> = Arc::new(MemoryKeyStore::new());
    let config = CacheConfig::default().ttl(Duration::from_secs(30));
    let a = replica_with(
        &clock,
        shared.clone(),
        Peppers::single(pepper(1, 7)),
        config,
    );
    let b = replica_with(&clock, shared, Peppers::single(pepper(1, 7)), config);
    let (issued, key) = issue(&a).await;
    b.verifier.verify(&key).await.unwrap(); // cached on B at t0
    a.issuer.revoke(issued.id()).await.unwrap();
    assert_eq!(denial(&a, &key).await, DenialKind::RevokedCredential);

    clock.advance(Duration::from_secs(29));
    assert!(
        b.verifier.verify(&key).await.is_ok(),
        "B serves its cached entry until the TTL (the documented bound)"
    );
    clock.advance(Duration::from_secs(1));
    assert_eq!(denial(&b, &key).await, DenialKind::RevokedCredential);
}

#[tokio::test]
async fn an_expired_key_is_refused() {
    let r = replica();
    let issued = issue_expiring(&r, Duration::from_secs(60)).await;
    let key = issued.key().expose_str().unwrap();
    r.clock.advance(Duration::from_secs(59));
    r.verifier.verify(key).await.unwrap();
    r.clock.advance(Duration::from_secs(1));
    assert_eq!(denial(&r, key).await, DenialKind::ExpiredCredential);
    assert_eq!(
        r.issuer
            .get(issued.id())
            .await
            .unwrap()
            .status(r.clock.now()),
        KeyStatus::Expired
    );
    // A zero lifetime is refused at issuance.
    assert!(matches!(
        r.issuer.issue(request().expires_in(Duration::ZERO)).await,
        Err(IssuerError::Duration { .. })
    ));
}

/// A verification that waits on the store is judged on the clock after the store answered: a key whose lifetime
/// or grace ends during the wait is refused, never allowed on the clock read before it.
#[tokio::test]
async fn a_store_that_answers_late_is_judged_on_the_clock_after_the_answer() {
    let clock = ManualClock::new(SystemTime::UNIX_EPOCH + Duration::from_secs(START));
    let shared: Arc<dyn KeyStore> = Arc::new(MemoryKeyStore::new());
    let issuing = replica_with(
        &clock,
        shared.clone(),
        Peppers::single(pepper(1, 7)),
        CacheConfig::default(),
    );
    let expiring = issue_expiring(&issuing, Duration::from_secs(60)).await;
    let expiring = expiring.key().expose_str().unwrap().to_owned();
    let (old, old_key) = issue(&issuing).await;
    issuing
        .issuer
        .rotate(old.id(), Duration::from_secs(60), None)
        .await
        .unwrap();
    for (key, ended) in [
        (&expiring, DenialKind::ExpiredCredential),
        (&old_key, DenialKind::RevokedCredential),
    ] {
        // Both end at START + 60 s: the store answers at START + 59 s, or at START + 61 s.
        for waited in [Duration::from_secs(58), Duration::from_secs(60)] {
            // A fresh replica (an empty cache) at 1 s into the minute, whose store is busy.
            clock.set(SystemTime::UNIX_EPOCH + Duration::from_secs(START + 1));
            let r = replica_with(
                &clock,
                shared.clone(),
                Peppers::single(pepper(1, 7)),
                CacheConfig::default(),
            );
            let busy = r.store.hold().await;
            let verifier = r.verifier.clone();
            let key = key.clone();
            let pending = tokio::spawn(async move { verifier.verify(&key).await });
            while r.store.gets() == 0 {
                tokio::task::yield_now().await;
            }
            clock.advance(waited);
            drop(busy);
            let outcome = pending.await.unwrap().map_err(|d| d.kind());
            if waited < Duration::from_secs(59) {
                // The allowed twin: the store answered inside the lifetime or grace.
                assert!(outcome.is_ok(), "{ended:?} after {waited:?}: {outcome:?}");
            } else {
                assert_eq!(outcome.err(), Some(ended), "after {waited:?}");
            }
        }
    }
}

/// Cache hits in the compact form (whole-second expiry): no store read, the same grant as the full form, and the
/// expiry honoured to the nanosecond although the compact entry keeps whole seconds.
#[tokio::test]
async fn cached_hits_match_the_store_and_stop_exactly_at_expiry() {
    let r = replica();
    let issued = issue_expiring(&r, Duration::from_secs(60)).await;
    let key = issued.key().expose_str().unwrap();
    let expiry = SystemTime::UNIX_EPOCH + Duration::from_secs(START + 60);
    assert_eq!(issued.info().expires_at, Some(expiry));
    let from_store = r.verifier.verify(key).await.unwrap();
    let gets = r.store.gets();
    for _ in 0..5 {
        let from_cache = r.verifier.verify(key).await.unwrap();
        assert_eq!(from_cache, from_store);
        assert_eq!(from_cache.expires_at(), Some(expiry));
        assert_eq!(from_cache.principal(), issued.id().as_str());
    }
    assert_eq!(r.store.gets(), gets, "hits are served by the cache");
    // The last nanosecond before the expiry: allowed (read again after the TTL, then from the compact entry).
    // The expiry itself: refused.
    r.clock.set(expiry - Duration::from_nanos(1));
    assert_eq!(r.verifier.verify(key).await.unwrap(), from_store);
    let gets = r.store.gets();
    assert_eq!(r.verifier.verify(key).await.unwrap(), from_store);
    assert_eq!(r.store.gets(), gets, "the second one from the cache");
    r.clock.set(expiry);
    assert_eq!(denial(&r, key).await, DenialKind::ExpiredCredential);
    assert_eq!(denial(&r, key).await, DenialKind::ExpiredCredential);
}

/// An expiry with a fraction of a second (possible through the library) cannot take the compact form: it is kept
/// in full and honoured to the nanosecond, and the grant reports it exactly.
#[tokio::test]
async fn a_sub_second_expiry_is_exact() {
    let r = replica();
    let issued = issue_expiring(&r, Duration::from_millis(1500)).await;
    let key = issued.key().expose_str().unwrap();
    let expiry = SystemTime::UNIX_EPOCH + Duration::from_secs(START) + Duration::from_millis(1500);
    assert_eq!(issued.info().expires_at, Some(expiry));
    let first = r.verifier.verify(key).await.unwrap();
    assert_eq!(first.expires_at(), Some(expiry));
    let gets = r.store.gets();
    r.clock.set(expiry - Duration::from_nanos(1));
    let cached = r.verifier.verify(key).await.unwrap();
    assert_eq!(cached.expires_at(), Some(expiry));
    assert_eq!(
        r.store.gets(),
        gets,
        "kept in full, still served by the cache"
    );
    r.clock.set(expiry);
    assert_eq!(denial(&r, key).await, DenialKind::ExpiredCredential);
    assert_eq!(r.store.gets(), gets, "refused from the cached record");
}

/// A clock stepped back does not stretch an entry's life: the key is read from the store again.
#[tokio::test]
async fn a_clock_stepped_back_sends_the_key_back_to_the_store() {
    let r = replica();
    let (_, key) = issue(&r).await;
    r.verifier.verify(&key).await.unwrap();
    let gets = r.store.gets();
    // Twin: a small step forward is served from the cache.
    r.clock.advance(Duration::from_secs(5));
    r.verifier.verify(&key).await.unwrap();
    assert_eq!(r.store.gets(), gets);
    r.clock
        .set(SystemTime::UNIX_EPOCH + Duration::from_secs(START - 3600));
    r.verifier.verify(&key).await.unwrap();
    assert_eq!(r.store.gets(), gets + 1, "read again after the step back");
}

/// A TTL under a second still caches, never for longer than its length: kept in full when its window ends within
/// the current second, in the compact form (to the end of that second) when it crosses into the next.
#[tokio::test]
async fn a_sub_second_ttl_is_exact() {
    sub_second_ttl_from(Duration::ZERO, 499, 1).await;
    sub_second_ttl_from(Duration::from_millis(700), 299, 1).await;
}

/// Fills the cache at `START + offset` with a 500 ms TTL: `hit_ms` later still a hit, `then_ms` more a store read.
async fn sub_second_ttl_from(offset: Duration, hit_ms: u64, then_ms: u64) {
    let clock = ManualClock::new(SystemTime::UNIX_EPOCH + Duration::from_secs(START) + offset);
    let r = replica_with(
        &clock,
        Arc::new(MemoryKeyStore::new()),
        Peppers::single(pepper(1, 7)),
        CacheConfig::default().ttl(Duration::from_millis(500)),
    );
    let (_, key) = issue(&r).await;
    r.verifier.verify(&key).await.unwrap();
    let gets = r.store.gets();
    clock.advance(Duration::from_millis(hit_ms));
    r.verifier.verify(&key).await.unwrap();
    assert_eq!(r.store.gets(), gets, "inside the TTL: from the cache");
    clock.advance(Duration::from_millis(then_ms));
    r.verifier.verify(&key).await.unwrap();
    assert_eq!(r.store.gets(), gets + 1, "at the TTL: read again");
}

#[tokio::test]
async fn rotation_keeps_both_keys_during_the_grace_then_only_the_new_one() {
    let r = replica();
    let old = r
        .issuer
        .issue(request().expires_in(Duration::from_secs(3600)))
        .await
        .unwrap();
    let old_key = old.key().expose_str().unwrap().to_owned();
    r.clock.advance(Duration::from_secs(600));
    let new = r
        .issuer
        .rotate(old.id(), Duration::from_secs(300), None)
        .await
        .unwrap();
    let new_key = new.key().expose_str().unwrap().to_owned();
    assert_ne!(new.id(), old.id());
    assert_eq!(new.info().replaces, Some(old.id()));
    assert_eq!(new.info().name, old.info().name);
    assert_eq!(new.info().scopes, old.info().scopes);
    assert_eq!(new.info().allow_ips, old.info().allow_ips);
    assert_eq!(new.info().attributes, old.info().attributes);
    // The old key's lifetime (1 h), counted from now.
    assert_eq!(
        new.info().expires_at,
        Some(r.clock.now() + Duration::from_secs(3600))
    );

    // Inside the grace: both work.
    r.clock.advance(Duration::from_secs(299));
    r.verifier.verify(&old_key).await.unwrap();
    r.verifier.verify(&new_key).await.unwrap();
    assert!(matches!(
        r.issuer.get(old.id()).await.unwrap().status(r.clock.now()),
        KeyStatus::Retiring { .. }
    ));
    // After the grace: the old one is refused as revoked, the new one works.
    r.clock.advance(Duration::from_secs(1));
    assert_eq!(denial(&r, &old_key).await, DenialKind::RevokedCredential);
    r.verifier.verify(&new_key).await.unwrap();
}

#[tokio::test]
async fn rotation_without_grace_ends_the_old_key_now_and_never_extends_it() {
    let r = replica();
    let (old, old_key) = issue(&r).await;
    r.verifier.verify(&old_key).await.unwrap();
    let new = r
        .issuer
        .rotate(old.id(), Duration::ZERO, Some(Duration::from_secs(60)))
        .await
        .unwrap();
    assert_eq!(denial(&r, &old_key).await, DenialKind::RevokedCredential);
    assert_eq!(
        new.info().expires_at,
        Some(r.clock.now() + Duration::from_secs(60))
    );
    // An old key without expiry gives a new key without expiry.
    let (forever, _) = issue(&r).await;
    let next = r
        .issuer
        .rotate(forever.id(), Duration::ZERO, None)
        .await
        .unwrap();
    assert_eq!(next.info().expires_at, None);

    // The old key ends at its own expiry when that comes before the end of the grace.
    let short = r
        .issuer
        .issue(request().expires_in(Duration::from_secs(100)))
        .await
        .unwrap();
    let short_key = short.key().expose_str().unwrap().to_owned();
    r.issuer
        .rotate(short.id(), Duration::from_secs(3600), None)
        .await
        .unwrap();
    r.clock.advance(Duration::from_secs(99));
    r.verifier.verify(&short_key).await.unwrap();
    r.clock.advance(Duration::from_secs(1));
    assert_eq!(denial(&r, &short_key).await, DenialKind::ExpiredCredential);
}

#[tokio::test]
async fn only_an_active_key_can_be_rotated() {
    let r = replica();
    // Revoked.
    let (revoked, _) = issue(&r).await;
    r.issuer.revoke(revoked.id()).await.unwrap();
    assert!(matches!(
        r.issuer.rotate(revoked.id(), Duration::ZERO, None).await,
        Err(IssuerError::NotActive {
            status: "revoked",
            ..
        })
    ));
    // Expired.
    let expired = r
        .issuer
        .issue(request().expires_in(Duration::from_secs(10)))
        .await
        .unwrap();
    r.clock.advance(Duration::from_secs(10));
    let err = r
        .issuer
        .rotate(expired.id(), Duration::ZERO, None)
        .await
        .unwrap_err();
    assert!(matches!(
        err,
        IssuerError::NotActive {
            status: "expired",
            ..
        }
    ));
    assert!(err.to_string().contains(expired.id().as_str()));
    // Already rotated (in its grace).
    let (once, _) = issue(&r).await;
    r.issuer
        .rotate(once.id(), Duration::from_secs(60), None)
        .await
        .unwrap();
    assert!(matches!(
        r.issuer
            .rotate(once.id(), Duration::from_secs(60), None)
            .await,
        Err(IssuerError::NotActive {
            status: "retiring",
            ..
        })
    ));
    // Unknown.
    let unknown: KeyId = "zzzzzzzzzzzzzzzz".parse().unwrap();
    assert!(matches!(
        r.issuer.rotate(unknown, Duration::ZERO, None).await,
        Err(IssuerError::UnknownKey(_))
    ));
    // Twin: an active key rotates.
    let (active, _) = issue(&r).await;
    r.issuer
        .rotate(active.id(), Duration::ZERO, None)
        .await
        .unwrap();
    // Nothing refused was written: revoked + expired + once + its successor + active + its successor.
    assert_eq!(r.issuer.list().await.unwrap().len(), 6);
}

#[tokio::test]
async fn a_store_error_is_unavailable_and_is_not_cached() {
    let r = replica();
    let (_, key) = issue(&r).await;
    r.store.fail(true);
    assert_eq!(denial(&r, &key).await, DenialKind::Unavailable);
    assert_eq!(denial(&r, &key).await, DenialKind::Unavailable);
    assert_eq!(r.store.gets(), 2, "errors are not cached");
    let unknown = forge("sg", "UnknownKeyId0000", &"s".repeat(32));
    assert_eq!(denial(&r, &unknown).await, DenialKind::Unavailable);
    // The issuer reports store errors too.
    assert!(matches!(
        r.issuer.issue(request()).await,
        Err(IssuerError::Store(_))
    ));
    // Twin: the store is back.
    r.store.fail(false);
    r.verifier.verify(&key).await.unwrap();
}

#[tokio::test]
async fn a_key_verifies_only_under_its_pepper() {
    let clock = ManualClock::new(SystemTime::UNIX_EPOCH + Duration::from_secs(START));
    let shared: Arc<dyn KeyStore> = Arc::new(MemoryKeyStore::new());
    let config = CacheConfig::default();
    let under_a = replica_with(
        &clock,
        shared.clone(),
        Peppers::single(pepper(1, 0xA)),
        config,
    );
    let (_, key) = issue(&under_a).await;

    // Pepper B under the same version number: a different key, so never a match.
    let b_same_version = replica_with(
        &clock,
        shared.clone(),
        Peppers::single(pepper(1, 0xB)),
        config,
    );
    assert_eq!(
        denial(&b_same_version, &key).await,
        DenialKind::InvalidCredential
    );
    // Pepper B as version 2 only: version 1 is not configured.
    let b_only = replica_with(
        &clock,
        shared.clone(),
        Peppers::single(pepper(2, 0xB)),
        config,
    );
    assert_eq!(denial(&b_only, &key).await, DenialKind::InvalidCredential);

    // Twin: B current, A kept as version 1: old keys verify, new keys are hashed under B.
    let rotated = replica_with(
        &clock,
        shared.clone(),
        Peppers::new(pepper(2, 0xB), [pepper(1, 0xA)]).unwrap(),
        config,
    );
    rotated.verifier.verify(&key).await.unwrap();
    // Again, from the cache: a key under an older pepper is cached under its own version, not the current one.
    let gets = rotated.store.gets();
    rotated.verifier.verify(&key).await.unwrap();
    assert_eq!(rotated.store.gets(), gets);
    let (new, new_key) = issue(&rotated).await;
    let stored = shared.get(new.id()).await.unwrap().unwrap();
    assert_eq!(stored.hash.pepper_version(), 2);
    rotated.verifier.verify(&new_key).await.unwrap();
    rotated.verifier.verify(&new_key).await.unwrap();
    assert_eq!(
        denial(&under_a, &new_key).await,
        DenialKind::InvalidCredential
    );
}

#[tokio::test]
async fn debug_output_never_shows_a_secret_or_a_digest() {
    let r = replica();
    let (issued, key) = issue(&r).await;
    let grant = r.verifier.verify(&key).await.unwrap();
    let record = r.store.get(issued.id()).await.unwrap().unwrap();
    let digest_hex: String = record
        .hash
        .digest()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let digest_list = format!("{:?}", record.hash.digest());
    let peppers = Peppers::new(pepper(2, 0x61), [pepper(1, 7)]).unwrap();
    let printed = [
        format!("{issued:?}"),
        format!("{issued:#?}"),
        format!("{:?}", issued.key()),
        format!("{:?}", issued.info()),
        format!("{record:?}"),
        format!("{:?}", record.hash),
        format!("{:?}", pepper(1, 0x61)),
        format!("{peppers:?}"),
        format!("{:?}", r.issuer),
        format!("{:?}", r.verifier),
        format!("{:?}", r.cache),
        format!("{grant:?}"),
        format!("{:?}", r.verifier.verify("sg_not-a-key").await.unwrap_err()),
    ]
    .join("\n");
    assert!(!printed.contains(&key), "{printed}");
    assert!(!printed.contains(secret_of(&key)), "{printed}");
    assert!(!printed.contains(&digest_hex), "{printed}");
    assert!(!printed.contains(&digest_list), "{printed}");
    assert!(
        !printed.contains(&"a".repeat(32)),
        "pepper bytes: {printed}"
    );
    assert!(!printed.contains("97, 97"), "pepper bytes: {printed}");
    // The id is public and is shown.
    assert!(printed.contains(issued.id().as_str()));
}

#[test]
fn the_key_store_trait_is_object_safe_and_shareable() {
    fn assert_send_sync<T: Send + Sync + ?Sized>() {}
    assert_send_sync::<dyn KeyStore>();
    assert_send_sync::<KeyCache>();
    assert_send_sync::<ApiKeyVerifier>();
    assert_send_sync::<KeyIssuer>();
    let _: Arc<dyn KeyStore> = Arc::new(MemoryKeyStore::new());
}

#[test]
fn verification_futures_are_send() {
    fn assert_send<T: Send>(_: &T) {}
    fn assert_static_send<T: Send + 'static>(_: T) {}
    let r = replica();
    let future = r.verifier.verify("sg_x");
    assert_send(&future);
    let issue = r.issuer.issue(request());
    assert_send(&issue);
    // A clone of the verifier and an owned secret make a `'static` future (what a boxed authenticator needs).
    let verifier = r.verifier.clone();
    let secret = scopegate::Secret::from("sg_x");
    assert_static_send(async move { verifier.verify_secret(&secret).await });
}

#[tokio::test]
async fn a_key_held_as_a_secret_verifies_the_same() {
    let r = replica();
    let (issued, _) = issue(&r).await;
    let grant = r.verifier.verify_secret(issued.key()).await.unwrap();
    assert_eq!(grant.principal(), issued.id().as_str());
    // Twin: bytes that are not UTF-8.
    let garbage = scopegate::Secret::new(vec![0xff; 57]);
    assert_eq!(
        r.verifier.verify_secret(&garbage).await.unwrap_err().kind(),
        DenialKind::InvalidCredential
    );
}

#[tokio::test]
async fn issuance_validates_its_request() {
    let r = replica();
    let bad = [
        NewKey::new("", scopes(&["a:read"])),
        NewKey::new("x".repeat(201), scopes(&["a:read"])),
        NewKey::new("line\nbreak", scopes(&["a:read"])),
        NewKey::new("no scopes", ScopeSet::new()),
        NewKey::new(
            "superuser",
            ScopeSet::danger_allow_superuser(["*"]).unwrap(),
        ),
        NewKey::new("nowhere", scopes(&["a:read"])).allow_ips(CidrSet::new()),
        NewKey::new("attr", scopes(&["a:read"]))
            .attributes([(String::new(), "v".to_owned())].into_iter().collect()),
    ];
    for request in bad {
        let shown = format!("{request:?}");
        assert!(r.issuer.issue(request).await.is_err(), "{shown}");
    }
    assert!(r.issuer.list().await.unwrap().is_empty());
    // Twin.
    r.issuer
        .issue(NewKey::new("ok", scopes(&["a:read"])))
        .await
        .unwrap();
    assert_eq!(r.issuer.list().await.unwrap().len(), 1);
}

/// A store's own rotation re-checks, atomically, that the old key is still active (the issuer's check can race).
async fn rotation_is_conditional_in_the_store(store: Arc<dyn KeyStore>) {
    let clock = ManualClock::new(SystemTime::UNIX_EPOCH + Duration::from_secs(START));
    let r = replica_with(
        &clock,
        store.clone(),
        Peppers::single(pepper(1, 7)),
        CacheConfig::default(),
    );
    let (issued, _) = issue(&r).await;
    let record = store.get(issued.id()).await.unwrap().unwrap();
    assert!(matches!(
        store.insert(record.clone()).await,
        Err(StoreError::Duplicate(id)) if id == issued.id()
    ));
    let mut successor = record.clone();
    successor.info.id = "NewKeyId00000000".parse().unwrap();
    successor.info.replaces = Some(issued.id());
    // Revoked: nothing is written.
    store.revoke(issued.id(), clock.now()).await.unwrap();
    assert!(
        !store
            .rotate(issued.id(), clock.now(), clock.now(), successor.clone())
            .await
            .unwrap()
    );
    assert!(store.get(successor.info.id).await.unwrap().is_none());
    // Expired: nothing is written either.
    let expiring = r
        .issuer
        .issue(request().expires_in(Duration::from_secs(10)))
        .await
        .unwrap()
        .id();
    let at_expiry = clock.now() + Duration::from_secs(10);
    successor.info.replaces = Some(expiring);
    assert!(
        !store
            .rotate(expiring, at_expiry, at_expiry, successor.clone())
            .await
            .unwrap()
    );
    assert!(store.get(successor.info.id).await.unwrap().is_none());
    // Twin: active one second earlier, it rotates.
    let before = at_expiry - Duration::from_secs(1);
    assert!(
        store
            .rotate(expiring, before, before, successor.clone())
            .await
            .unwrap()
    );
    assert!(store.get(successor.info.id).await.unwrap().is_some());
}

#[tokio::test]
async fn the_memory_store_rotates_conditionally() {
    rotation_is_conditional_in_the_store(Arc::new(MemoryKeyStore::new())).await;
}

#[cfg(feature = "sqlite")]
mod sqlite {
    use scopegate::credential::api_key::{OpenMode, SqliteKeyStore};

    use super::*;

    fn url(dir: &tempfile::TempDir) -> String {
        format!("sqlite://{}", dir.path().join("keys.db").display())
    }

    #[tokio::test]
    async fn the_store_survives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::new(SystemTime::UNIX_EPOCH + Duration::from_secs(START));
        let peppers = Peppers::single(pepper(1, 7));

        let (kept, kept_key, revoked_key, old_key, new_key, issued_info) = {
            let store = Arc::new(
                SqliteKeyStore::open(&url(&dir), OpenMode::CreateIfMissing)
                    .await
                    .unwrap(),
            );
            let r = replica_with(
                &clock,
                store.clone(),
                peppers.clone(),
                CacheConfig::default(),
            );
            let kept = r
                .issuer
                .issue(request().expires_in(Duration::from_secs(86_400)))
                .await
                .unwrap();
            let (revoked, revoked_key) = issue(&r).await;
            r.issuer.revoke(revoked.id()).await.unwrap();
            let (old, old_key) = issue(&r).await;
            let new = r
                .issuer
                .rotate(old.id(), Duration::from_secs(300), None)
                .await
                .unwrap();
            let kept_key = kept.key().expose_str().unwrap().to_owned();
            let new_key = new.key().expose_str().unwrap().to_owned();
            store.close().await;
            drop(r);
            (
                kept.id(),
                kept_key,
                revoked_key,
                old_key,
                new_key,
                kept.info().clone(),
            )
        };

        // A new process: reopen the file, refusing to create anything.
        let store = Arc::new(
            SqliteKeyStore::open(&url(&dir), OpenMode::MustExist)
                .await
                .unwrap(),
        );
        let r = replica_with(&clock, store, peppers, CacheConfig::default());
        assert_eq!(r.issuer.get(kept).await.unwrap(), issued_info);
        let grant = r.verifier.verify(&kept_key).await.unwrap();
        assert_eq!(grant.attr("tenant"), Some("acme"));
        assert!(
            grant
                .allow_ips()
                .unwrap()
                .contains(parse_ip("2001:db8::1").unwrap())
        );
        assert_eq!(
            denial(&r, &revoked_key).await,
            DenialKind::RevokedCredential
        );
        r.verifier.verify(&old_key).await.unwrap();
        r.verifier.verify(&new_key).await.unwrap();
        clock.advance(Duration::from_secs(300));
        assert_eq!(denial(&r, &old_key).await, DenialKind::RevokedCredential);
        r.verifier.verify(&new_key).await.unwrap();
        let listed = r.issuer.list().await.unwrap();
        assert_eq!(listed.len(), 4);
        assert_eq!(listed.iter().filter(|k| k.replaces.is_some()).count(), 1);

        // A row tampered with behind the issuer's back (a bare `*` scope) is refused as unavailable (fail
        // closed), never allowed.
        let pool = sqlx::SqlitePool::connect(&url(&dir)).await.unwrap();
        sqlx::query("UPDATE api_keys SET scopes = '[\"*\"]' WHERE id = ?")
            .bind(kept.as_str())
            .execute(&pool)
            .await
            .unwrap();
        pool.close().await;
        clock.advance(Duration::from_secs(30)); // past the cache TTL
        assert_eq!(denial(&r, &kept_key).await, DenialKind::Unavailable);
    }

    #[tokio::test]
    async fn must_exist_never_creates_a_store() {
        let dir = tempfile::tempdir().unwrap();
        let err = SqliteKeyStore::open(&url(&dir), OpenMode::MustExist)
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::Missing { .. }), "{err}");
        assert!(!dir.path().join("keys.db").exists());
        // An existing file that is not a key store is refused, not migrated.
        std::fs::write(dir.path().join("keys.db"), b"").unwrap();
        let err = SqliteKeyStore::open(&url(&dir), OpenMode::MustExist)
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::Schema { .. }), "{err}");
        // Twin: created when asked, then opened as existing.
        SqliteKeyStore::open(&url(&dir), OpenMode::CreateIfMissing)
            .await
            .unwrap()
            .close()
            .await;
        SqliteKeyStore::open(&url(&dir), OpenMode::MustExist)
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn urls_are_strict() {
        for bad in [
            "",
            "keys.db",
            "sqlite:keys.db",
            "sqlite://",
            "sqlite://:memory:",
            "postgres://x",
        ] {
            assert!(
                matches!(
                    SqliteKeyStore::open(bad, OpenMode::CreateIfMissing).await,
                    Err(StoreError::Url { .. })
                ),
                "{bad}"
            );
        }
    }

    #[tokio::test]
    async fn the_sqlite_store_rotates_conditionally() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteKeyStore::open(&url(&dir), OpenMode::CreateIfMissing)
            .await
            .unwrap();
        rotation_is_conditional_in_the_store(Arc::new(store)).await;
    }
}

/// One issued key shared by the property tests (issuing is async; proptest bodies are not).
fn sample() -> &'static (Replica, String) {
    use std::sync::OnceLock;
    static SAMPLE: OnceLock<(Replica, String)> = OnceLock::new();
    SAMPLE.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        runtime.block_on(async {
            let r = replica();
            let (_, key) = issue(&r).await;
            r.verifier.verify(&key).await.unwrap();
            (r, key)
        })
    })
}

fn verify_blocking(r: &Replica, key: &str) -> Result<scopegate::Grant, scopegate::policy::Denial> {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(r.verifier.verify(key))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn the_parser_never_panics_and_never_accepts_noise(text in "\\PC{0,120}") {
        let (r, _) = sample();
        prop_assert!(verify_blocking(r, &text).is_err());
        let prefixed = format!("sg_{text}");
        prop_assert!(verify_blocking(r, &prefixed).is_err());
    }

    #[test]
    fn any_mutation_of_a_valid_key_is_refused(
        position in 0usize..57,
        replacement in proptest::char::any(),
        kind in 0u8..3,
    ) {
        let (r, key) = sample();
        let mut chars: Vec<char> = key.chars().collect();
        match kind {
            0 => {
                prop_assume!(chars[position] != replacement);
                chars[position] = replacement;
            }
            1 => chars.insert(position, replacement),
            _ => { chars.remove(position); }
        }
        let mutated: String = chars.into_iter().collect();
        let denial = verify_blocking(r, &mutated).unwrap_err();
        prop_assert_eq!(denial.kind(), DenialKind::InvalidCredential);
        // Twin: the key itself still verifies.
        prop_assert!(verify_blocking(r, key).is_ok());
    }
}

/// `last_used_at`: nothing is written on the request path; one batch per interval, each key at most once per
/// interval; a failing or hanging write changes no decision and holds up no request.
#[tokio::test(start_paused = true)]
async fn last_use_is_written_behind_the_request_and_never_decides() {
    let r = replica();
    let (a, a_key) = issue(&r).await;
    let (b, b_key) = issue(&r).await;
    let batches = || r.store.last_used.lock().unwrap().clone();
    for _ in 0..10 {
        assert!(r.verifier.verify(&a_key).await.is_ok());
    }
    assert!(r.verifier.verify(&b_key).await.is_ok());
    assert!(batches().is_empty(), "written on the request path");

    // The interval (60 s by default) passes: one batch, each key once, at the time of use.
    let used_at = r.clock.now();
    tokio::time::sleep(Duration::from_secs(61)).await;
    let mut first = batches().concat();
    first.sort_by_key(|(id, _)| *id);
    let mut want = vec![(a.id(), used_at), (b.id(), used_at)];
    want.sort_by_key(|(id, _)| *id);
    assert_eq!(batches().len(), 1);
    assert_eq!(first, want);
    assert_eq!(
        r.issuer.get(a.id()).await.unwrap().last_used_at,
        Some(used_at)
    );

    // Used again within its interval: not written again. After it: written again, alone.
    r.clock.advance(Duration::from_secs(10));
    assert!(r.verifier.verify(&a_key).await.is_ok());
    tokio::time::sleep(Duration::from_secs(61)).await;
    assert_eq!(batches().len(), 1);
    r.clock.advance(Duration::from_secs(60));
    let again = r.clock.now();
    assert!(r.verifier.verify(&a_key).await.is_ok());
    tokio::time::sleep(Duration::from_secs(61)).await;
    assert_eq!(batches().last().unwrap(), &vec![(a.id(), again)]);

    // The write fails: the decision is the same.
    r.store.failing_last_used.store(true, Ordering::SeqCst);
    r.clock.advance(Duration::from_secs(61));
    assert!(r.verifier.verify(&a_key).await.is_ok());
    tokio::time::sleep(Duration::from_secs(61)).await;
    assert_eq!(batches().len(), 3);
    assert!(r.verifier.verify(&a_key).await.is_ok());
    r.store.failing_last_used.store(false, Ordering::SeqCst);

    // The write hangs: requests go on, allowed and refused as before.
    r.store.stuck_last_used.store(true, Ordering::SeqCst);
    for _ in 0..3 {
        r.clock.advance(Duration::from_secs(61));
        let verified =
            tokio::time::timeout(Duration::from_secs(1), r.verifier.verify(&b_key)).await;
        assert!(verified.unwrap().is_ok());
        tokio::time::sleep(Duration::from_secs(61)).await;
    }
    r.issuer.revoke(b.id()).await.unwrap();
    assert_eq!(denial(&r, &b_key).await, DenialKind::RevokedCredential);
    // A verifier told to record nothing writes nothing.
    let quiet = ApiKeyVerifier::builder(Peppers::single(pepper(1, 7)), r.cache.clone())
        .clock(r.clock.clone())
        .last_used(None)
        .build();
    let written = batches().len();
    assert!(quiet.verify(&a_key).await.is_ok());
    r.clock.advance(Duration::from_secs(61));
    assert!(quiet.verify(&a_key).await.is_ok());
    tokio::time::sleep(Duration::from_secs(61)).await;
    assert_eq!(batches().len(), written);
}
