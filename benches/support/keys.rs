//! The 1M-key fixture shared by `benches/api_key.rs` and `benches/layer.rs`: keys issued into a `MemoryKeyStore`,
//! presented in a random order, and a verifier over a warm cache.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::SeedableRng;
use rand::seq::SliceRandom;
use scopegate::credential::api_key::{
    ApiKeyVerifier, CacheConfig, KeyCache, KeyFormat, KeyIssuer, KeyStore, MemoryKeyStore, NewKey,
    Pepper, Peppers,
};
use scopegate::policy::ScopeSet;
use scopegate::{Attributes, Clock, SystemClock};

use crate::poll::ready;

pub(crate) const KEYS: usize = 1_000_000;
pub(crate) const PEPPER: [u8; 32] = [0x5c; 32];
/// `sg_` + 54.
pub(crate) const KEY_LEN: usize = 57;

pub(crate) struct Fixture {
    /// Every key, in issuance order.
    pub(crate) keys: Vec<String>,
    /// The same keys in a random order, laid out back to back in one buffer and read sequentially: the harness
    /// costs no cache miss of its own, so the figures show only the misses of the path being measured.
    pub(crate) presented: String,
    pub(crate) store: Arc<MemoryKeyStore>,
    pub(crate) peppers: Peppers,
}

impl Fixture {
    /// The `i`-th presented key (cycling).
    pub(crate) fn nth(&self, i: usize) -> &str {
        let start = (i % KEYS) * KEY_LEN;
        &self.presented[start..start + KEY_LEN]
    }
}

/// `KEYS` keys granting `scopes`; with `distinct`, each also has its own tenant attribute (so no two share their
/// rights) and a 90-day expiry.
pub(crate) fn fixture(scopes: &[&str], distinct: bool) -> Fixture {
    let started = Instant::now();
    let store = Arc::new(MemoryKeyStore::new());
    let peppers = Peppers::single(Pepper::new(1, PEPPER.to_vec()).unwrap());
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let issuer = KeyIssuer::new(
        store.clone() as Arc<dyn KeyStore>,
        KeyFormat::default(),
        peppers.clone(),
        clock,
    );
    let scopes = ScopeSet::parse(scopes).unwrap();
    let keys: Vec<String> = (0..KEYS)
        .map(|i| {
            let mut request = NewKey::new(format!("key {i}"), scopes.clone());
            if distinct {
                let mut attributes = Attributes::new();
                attributes.insert("tenant".into(), format!("tenant-{i}"));
                request = request
                    .attributes(attributes)
                    .expires_in(Duration::from_secs(90 * 86_400));
            }
            let issued = ready(issuer.issue(request)).expect("issue");
            issued.key().expose_str().unwrap().to_owned()
        })
        .collect();
    let mut order: Vec<usize> = (0..KEYS).collect();
    order.shuffle(&mut rand::rngs::StdRng::seed_from_u64(0x5eed));
    let mut presented = String::with_capacity(KEYS * KEY_LEN);
    for &i in &order {
        presented.push_str(&keys[i]);
    }
    assert_eq!(presented.len(), KEYS * KEY_LEN);
    eprintln!(
        "fixture: {} keys issued into the memory store in {:.1?}",
        store.len(),
        started.elapsed()
    );
    Fixture {
        keys,
        presented,
        store,
        peppers,
    }
}

/// A verifier over a cache that holds every key of `fx`. The TTL is an hour so that the figures are of the hit
/// path; with the default 30 s each key costs one extra store read per 30 s.
pub(crate) fn warm_verifier(fx: &Fixture) -> ApiKeyVerifier {
    let cache = Arc::new(KeyCache::new(
        fx.store.clone() as Arc<dyn KeyStore>,
        CacheConfig::default()
            .ttl(Duration::from_secs(3600))
            .max_entries(KEYS + KEYS / 10),
    ));
    let verifier = ApiKeyVerifier::builder(fx.peppers.clone(), cache.clone()).build();
    let warm = Instant::now();
    for key in &fx.keys {
        ready(verifier.verify(key)).expect("warm");
    }
    eprintln!(
        "cache warmed with {:?} entries in {:.1?}",
        cache.entry_counts(),
        warm.elapsed()
    );
    verifier
}
