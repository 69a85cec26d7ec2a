//! JWT verification: raw `jsonwebtoken::decode` against our authenticator (cache off) for HS256, RS256, ES256 and
//! `EdDSA`; and a cache hit against its floor (hashing the token + one map lookup) and against an ES256 verification.
//!
//! `cargo bench --bench jwt -- --warm-up-time 1 --measurement-time 3`
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, BuildHasherDefault, Hasher, RandomState};
use std::hint::black_box;
use std::time::{SystemTime, UNIX_EPOCH};

use aws_lc_rs::hmac;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::{KeyPair as RsaKeyPair, KeySize};
use aws_lc_rs::signature::{
    self, EcdsaKeyPair, Ed25519KeyPair, KeyPair as _, RsaPublicKeyComponents,
};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use criterion::{Criterion, criterion_group, criterion_main};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use serde_json::{Value, json};

use scopegate::credential::jwt::{JwtAuthenticator, KeySet};

const ISS: &str = "https://issuer.example";
const AUD: &str = "orders-api";

/// What the raw decode deserialises: the claims our authenticator reads.
#[derive(Deserialize)]
#[allow(dead_code)]
struct Claims {
    iss: String,
    aud: String,
    sub: String,
    exp: u64,
    iat: u64,
    scope: String,
    tenant: String,
}

fn b64(bytes: impl AsRef<[u8]>) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

struct Case {
    alg: Algorithm,
    name: &'static str,
    token: String,
    decoding_key: DecodingKey,
    jwk: Value,
}

fn token(alg: &str, kid: &str, sign: impl Fn(&[u8]) -> Vec<u8>) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let header = json!({"alg": alg, "typ": "at+jwt", "kid": kid});
    // A realistic access token (RFC 9068 shape, ~500 bytes with an ES256 signature).
    let claims = json!({
        "iss": ISS, "aud": AUD, "sub": "svc-billing-7f3a9c21",
        "iat": now, "exp": now + 3600, "nbf": now - 1,
        "scope": "orders:read orders:write invoices:read invoices:lines:read",
        "tenant": "acme-corporation",
        "client_id": "billing-service", "jti": "b7d4c1e0-5f2a-4e8b-9c3d-2a1f0e9d8c7b",
    });
    let message = format!("{}.{}", b64(header.to_string()), b64(claims.to_string()));
    let sig = sign(message.as_bytes());
    format!("{message}.{}", b64(sig))
}

fn cases() -> Vec<Case> {
    let rng = SystemRandom::new();
    let secret = b"a 32-byte-or-longer HS256 secret for the benchmark".to_vec();
    let ec_pkcs8 =
        EcdsaKeyPair::generate_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
    let ec = EcdsaKeyPair::from_pkcs8(
        &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
        ec_pkcs8.as_ref(),
    )
    .unwrap();
    let ed =
        Ed25519KeyPair::from_pkcs8(Ed25519KeyPair::generate_pkcs8(&rng).unwrap().as_ref()).unwrap();
    let rsa = RsaKeyPair::generate(KeySize::Rsa2048).unwrap();
    let rsa_pub = RsaPublicKeyComponents::<Vec<u8>>::from(rsa.public_key());
    let point = ec.public_key().as_ref().to_vec();
    let (x, y) = (b64(&point[1..33]), b64(&point[33..]));
    let ed_x = b64(ed.public_key().as_ref());
    let (n, e) = (b64(&rsa_pub.n), b64(&rsa_pub.e));

    vec![
        Case {
            alg: Algorithm::HS256,
            name: "HS256",
            token: token("HS256", "hs", |m| {
                hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, &secret), m)
                    .as_ref()
                    .to_vec()
            }),
            decoding_key: DecodingKey::from_secret(&secret),
            jwk: json!({"kty": "oct", "kid": "hs", "alg": "HS256", "k": b64(&secret)}),
        },
        Case {
            alg: Algorithm::RS256,
            name: "RS256",
            token: token("RS256", "rs", |m| {
                let mut sig = vec![0; rsa.public_modulus_len()];
                rsa.sign(&signature::RSA_PKCS1_SHA256, &rng, m, &mut sig)
                    .unwrap();
                sig
            }),
            decoding_key: DecodingKey::from_rsa_components(&n, &e).unwrap(),
            jwk: json!({"kty": "RSA", "kid": "rs", "alg": "RS256", "n": n, "e": e}),
        },
        Case {
            alg: Algorithm::ES256,
            name: "ES256",
            token: token("ES256", "ec", |m| {
                ec.sign(&rng, m).unwrap().as_ref().to_vec()
            }),
            decoding_key: DecodingKey::from_ec_components(&x, &y).unwrap(),
            jwk: json!({"kty": "EC", "crv": "P-256", "kid": "ec", "x": x, "y": y}),
        },
        Case {
            alg: Algorithm::EdDSA,
            name: "EdDSA",
            token: token("EdDSA", "ed", |m| ed.sign(m).as_ref().to_vec()),
            decoding_key: DecodingKey::from_ed_components(&ed_x).unwrap(),
            jwk: json!({"kty": "OKP", "crv": "Ed25519", "kid": "ed", "x": ed_x}),
        },
    ]
}

fn authenticator(case: &Case, cache: usize) -> JwtAuthenticator {
    let jwks = json!({ "keys": [case.jwk.clone()] }).to_string();
    JwtAuthenticator::builder()
        .algorithms([format!("{:?}", case.alg)
            .parse::<scopegate::credential::jwt::Algorithm>()
            .unwrap()])
        .key_set(KeySet::from_jwks_json(jwks.as_bytes()).unwrap())
        .issuer(ISS)
        .audience(AUD)
        .attr_claims(["tenant"])
        .cache_capacity(cache)
        .build()
        .unwrap()
}

fn validation(alg: Algorithm) -> Validation {
    let mut v = Validation::new(alg);
    v.set_issuer(&[ISS]);
    v.set_audience(&[AUD]);
    v.validate_nbf = true;
    v.required_spec_claims = HashSet::from(["exp", "iss", "aud", "sub"].map(str::to_owned));
    v
}

#[derive(Default)]
struct Prehashed(u64);

impl Hasher for Prehashed {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, _: &[u8]) {
        unreachable!("u64 keys only")
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

fn bench(c: &mut Criterion) {
    let cases = cases();
    let mut group = c.benchmark_group("jwt");
    for case in &cases {
        let v = validation(case.alg);
        assert!(jsonwebtoken::decode::<Claims>(&case.token, &case.decoding_key, &v).is_ok());
        group.bench_function(format!("raw_decode/{}", case.name), |b| {
            b.iter(|| {
                jsonwebtoken::decode::<Claims>(black_box(&case.token), &case.decoding_key, &v)
                    .unwrap()
            });
        });
        let cold = authenticator(case, 0);
        assert!(cold.verify(&case.token).is_ok());
        group.bench_function(format!("ours_cold/{}", case.name), |b| {
            b.iter(|| cold.verify(black_box(&case.token)).unwrap());
        });
    }

    let es = cases.iter().find(|c| c.alg == Algorithm::ES256).unwrap();
    let hot = authenticator(es, 10_000);
    hot.verify(&es.token).unwrap();
    group.bench_function("cache_hit/ES256", |b| {
        b.iter(|| hot.verify(black_box(&es.token)).unwrap());
    });

    // The floor: the same keyed hash of the whole token, and one lookup in a map of the same shape.
    let hasher = RandomState::new();
    let mut map: HashMap<u64, u64, BuildHasherDefault<Prehashed>> = HashMap::default();
    for i in 0..1000u64 {
        map.insert(hasher.hash_one(i), i);
    }
    map.insert(hasher.hash_one(es.token.as_bytes()), 7);
    group.bench_function("cache_floor/hash+lookup", |b| {
        b.iter(|| {
            let h = hasher.hash_one(black_box(es.token.as_bytes()));
            *map.get(&h).unwrap()
        });
    });
    group.finish();
    eprintln!("token length (ES256): {} bytes", es.token.len());
}

criterion_group!(benches, bench);
criterion_main!(benches);
