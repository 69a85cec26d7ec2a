//! Live key sets: the same ES256 token verified through a file key set and through a live one (background
//! refresh, staleness bound), with the verified-token cache off and on; and a burst of 1,000 concurrent requests
//! with unknown `kid`s against a cold live key set, which must cost the provider exactly one fetch.
//!
//! `cargo bench --bench live_keys -- --warm-up-time 1 --measurement-time 5`
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{self, EcdsaKeyPair, KeyPair as _};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use criterion::{Criterion, criterion_group, criterion_main};
use serde_json::json;

use scopegate::credential::jwt::{
    Algorithm, JwksDocument, JwksFetch, JwksSource, JwtAuthenticator, KeyRefresh,
};

const ISS: &str = "https://issuer.example";
const AUD: &str = "orders-api";

fn b64(bytes: impl AsRef<[u8]>) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn token(kid: &str, key: &EcdsaKeyPair) -> String {
    let exp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 3600;
    let header = b64(json!({"alg": "ES256", "kid": kid, "typ": "JWT"}).to_string());
    let claims = b64(
        json!({"iss": ISS, "aud": AUD, "sub": "svc", "exp": exp, "scope": "orders:read"})
            .to_string(),
    );
    let message = format!("{header}.{claims}");
    let sig = key.sign(&SystemRandom::new(), message.as_bytes()).unwrap();
    format!("{message}.{}", b64(sig.as_ref()))
}

/// The provider: the key set document, a fetch counter, and a network delay.
#[derive(Debug)]
struct Provider {
    jwks: String,
    fetches: Arc<AtomicUsize>,
    delay: Duration,
}

impl JwksSource for Provider {
    fn fetch(&self) -> JwksFetch<'_> {
        self.fetches.fetch_add(1, Ordering::SeqCst);
        Box::pin(async move {
            tokio::time::sleep(self.delay).await;
            Ok(JwksDocument::new(self.jwks.clone()))
        })
    }
}

fn live(jwks: &str, cache: usize, delay: Duration) -> (JwtAuthenticator, Arc<AtomicUsize>) {
    let fetches = Arc::new(AtomicUsize::new(0));
    let a = JwtAuthenticator::builder()
        .algorithms([Algorithm::ES256])
        .refreshable_key_set(Provider {
            jwks: jwks.to_owned(),
            fetches: Arc::clone(&fetches),
            delay,
        })
        .key_refresh(KeyRefresh::new().unknown_kid_cooldown(Duration::from_secs(60)))
        .issuer(ISS)
        .audience(AUD)
        .cache_capacity(cache)
        .build()
        .unwrap();
    (a, fetches)
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_time()
        .build()
        .unwrap();
    // Verifications run in the runtime's context, as in a server: the background refresh is running.
    let _context = rt.enter();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(
        &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
        &SystemRandom::new(),
    )
    .unwrap();
    let key = EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref())
        .unwrap();
    let point = key.public_key().as_ref();
    let jwks = json!({"keys": [
        {"kty": "EC", "crv": "P-256", "kid": "ec", "x": b64(&point[1..33]), "y": b64(&point[33..])}
    ]})
    .to_string();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("jwks.json");
    std::fs::write(&file, &jwks).unwrap();
    let valid = token("ec", &key);

    let mut group = c.benchmark_group("live_keys");
    for (name, cache) in [("cold", 0), ("cache_hit", 10_000)] {
        let from_file = JwtAuthenticator::builder()
            .algorithms([Algorithm::ES256])
            .jwks_file(&file)
            .issuer(ISS)
            .audience(AUD)
            .cache_capacity(cache)
            .build()
            .unwrap();
        let (from_provider, _) = live(&jwks, cache, Duration::ZERO);
        rt.block_on(from_provider.refresh_keys()).unwrap();
        assert!(from_file.verify(&valid).is_ok());
        assert!(from_provider.verify(&valid).is_ok());
        group.bench_function(format!("{name}/live"), |b| {
            b.iter(|| from_provider.verify(black_box(&valid)).unwrap());
        });
        group.bench_function(format!("{name}/file"), |b| {
            b.iter(|| from_file.verify(black_box(&valid)).unwrap());
        });
    }

    // 1,000 concurrent requests with unknown kids against a cold key set (a provider 5 ms away): one fetch.
    let flood: Vec<String> = (0..1000)
        .map(|i| token(&format!("flood-{i}"), &key))
        .collect();
    let mut fetches_per_burst = Vec::new();
    group.sample_size(20);
    group.bench_function("unknown_kid_burst_1000/cold", |b| {
        b.iter_custom(|iterations| {
            let mut total = Duration::ZERO;
            for _ in 0..iterations {
                let (a, fetches) = live(&jwks, 0, Duration::from_millis(5));
                let started = Instant::now();
                rt.block_on(async {
                    let tasks: Vec<_> = flood
                        .iter()
                        .map(|t| {
                            let (a, t) = (a.clone(), t.clone());
                            tokio::spawn(async move { a.authenticate(&t).await })
                        })
                        .collect();
                    for task in tasks {
                        assert!(task.await.unwrap().is_err());
                    }
                });
                total += started.elapsed();
                fetches_per_burst.push(fetches.load(Ordering::SeqCst));
            }
            total
        });
    });
    group.finish();
    let bursts = fetches_per_burst.len();
    let max = fetches_per_burst.iter().max().copied().unwrap_or(0);
    assert!(
        fetches_per_burst.iter().all(|f| *f == 1),
        "{fetches_per_burst:?}"
    );
    eprintln!("unknown-kid bursts of 1,000: {bursts} bursts, at most {max} fetch per burst");
}

criterion_group!(benches, bench);
criterion_main!(benches);
