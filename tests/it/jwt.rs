//! JWT bearer tokens: every refusal rule of `docs/jwt.md` has a test here, next to its allowed twin.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::similar_names,
    clippy::many_single_char_names,
    clippy::cast_precision_loss
)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, UNIX_EPOCH};

use aws_lc_rs::encoding::AsDer as _;
use aws_lc_rs::hmac;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::{KeyPair as RsaKeyPair, KeySize};
use aws_lc_rs::signature::{
    self, EcdsaKeyPair, Ed25519KeyPair, KeyPair as _, RsaPublicKeyComponents,
};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde_json::{Value, json};

use scopegate::ManualClock;
use scopegate::credential::jwt::{
    Algorithm, JwksDocument, JwksFetch, JwksSource, JwtAuthenticator, JwtAuthenticatorBuilder,
    KeyRefresh, KeySet, MintError, MintRequest, SigningKey, TokenIssuer,
};
use scopegate::network::{Cidr, CidrSet, parse_ip};
use scopegate::policy::{Denial, DenialKind, Scope, ScopeSet};

const ISS: &str = "https://issuer.example";
const AUD: &str = "orders-api";
const T0: u64 = 1_700_000_000;

struct Keys {
    ec_pkcs8: Vec<u8>,
    ec: EcdsaKeyPair,
    ed_pkcs8: Vec<u8>,
    ed: Ed25519KeyPair,
    rsa: RsaKeyPair,
    secret: Vec<u8>,
}

fn keys() -> &'static Keys {
    static KEYS: OnceLock<Keys> = OnceLock::new();
    KEYS.get_or_init(|| {
        let rng = SystemRandom::new();
        let ec_pkcs8 =
            EcdsaKeyPair::generate_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
                .unwrap()
                .as_ref()
                .to_vec();
        let ed_pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng)
            .unwrap()
            .as_ref()
            .to_vec();
        Keys {
            ec: EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, &ec_pkcs8)
                .unwrap(),
            ec_pkcs8,
            ed: Ed25519KeyPair::from_pkcs8(&ed_pkcs8).unwrap(),
            ed_pkcs8,
            rsa: RsaKeyPair::generate(KeySize::Rsa2048).unwrap(),
            secret: b"an HS256 test secret of 32+ bytes, not for production".to_vec(),
        }
    })
}

fn b64(bytes: impl AsRef<[u8]>) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

#[derive(Clone, Copy)]
enum Signer<'a> {
    Es256,
    EdDsa,
    Rs256,
    Hs256,
    /// HS256 under an arbitrary key (algorithm-confusion attempts).
    HmacWith(&'a [u8]),
    Unsigned,
}

fn sign(signer: Signer<'_>, message: &[u8]) -> Vec<u8> {
    let k = keys();
    let rng = SystemRandom::new();
    match signer {
        Signer::Es256 => k.ec.sign(&rng, message).unwrap().as_ref().to_vec(),
        Signer::EdDsa => k.ed.sign(message).as_ref().to_vec(),
        Signer::Rs256 => {
            let mut sig = vec![0; k.rsa.public_modulus_len()];
            k.rsa
                .sign(&signature::RSA_PKCS1_SHA256, &rng, message, &mut sig)
                .unwrap();
            sig
        }
        Signer::Hs256 => hmac_sign(&k.secret, message),
        Signer::HmacWith(key) => hmac_sign(key, message),
        Signer::Unsigned => Vec::new(),
    }
}

fn hmac_sign(key: &[u8], message: &[u8]) -> Vec<u8> {
    hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), message)
        .as_ref()
        .to_vec()
}

/// A token from raw header and payload JSON text (so tests can write duplicates and odd types).
fn raw_token(header: &str, payload: &str, signer: Signer<'_>) -> String {
    let message = format!("{}.{}", b64(header), b64(payload));
    let sig = sign(signer, message.as_bytes());
    format!("{message}.{}", b64(sig))
}

fn token(header: &Value, claims: &Value, signer: Signer<'_>) -> String {
    raw_token(&header.to_string(), &claims.to_string(), signer)
}

fn header(alg: &str, kid: &str) -> Value {
    json!({"alg": alg, "kid": kid, "typ": "JWT"})
}

fn claims() -> Value {
    json!({
        "iss": ISS, "aud": AUD, "sub": "svc-billing",
        "iat": T0, "exp": T0 + 300,
        "scope": "orders:read invoices:read",
        "tenant": "acme",
        "allowed_ips": ["10.0.0.0/8"],
        "jti": "ignored", "azp": "ignored-too",
    })
}

fn with(mut c: Value, name: &str, v: Value) -> Value {
    c[name] = v;
    c
}

fn without(mut c: Value, name: &str) -> Value {
    c.as_object_mut().unwrap().remove(name);
    c
}

fn jwks_value() -> Value {
    let k = keys();
    let point = k.ec.public_key().as_ref();
    let rsa = RsaPublicKeyComponents::<Vec<u8>>::from(k.rsa.public_key());
    json!({"keys": [
        {"kty": "EC", "crv": "P-256", "kid": "ec-1", "use": "sig", "x": b64(&point[1..33]), "y": b64(&point[33..])},
        {"kty": "OKP", "crv": "Ed25519", "kid": "ed-1", "alg": "EdDSA", "x": b64(k.ed.public_key().as_ref())},
        {"kty": "RSA", "kid": "rsa-1", "n": b64(&rsa.n), "e": b64(&rsa.e)},
        {"kty": "oct", "kid": "hs-1", "alg": "HS256", "k": b64(&k.secret)},
    ]})
}

fn key_set() -> KeySet {
    KeySet::from_jwks_json(jwks_value().to_string().as_bytes()).unwrap()
}

fn clock() -> ManualClock {
    ManualClock::new(UNIX_EPOCH + Duration::from_secs(T0))
}

fn builder() -> JwtAuthenticatorBuilder {
    JwtAuthenticator::builder()
        .algorithms([
            Algorithm::ES256,
            Algorithm::EdDSA,
            Algorithm::RS256,
            Algorithm::HS256,
        ])
        .key_set(key_set())
        .issuer(ISS)
        .audience(AUD)
        .scope_claim("scope")
        .allow_ips_claim("allowed_ips")
        .attr_claims(["tenant"])
        .clock(clock())
        .cache_capacity(0)
}

fn auth() -> JwtAuthenticator {
    builder().build().unwrap()
}

fn es256(c: &Value) -> String {
    token(&header("ES256", "ec-1"), c, Signer::Es256)
}

#[track_caller]
fn refused(auth: &JwtAuthenticator, token: &str, kind: DenialKind, detail: &str) -> Denial {
    let denial = auth.verify(token).expect_err("must be refused");
    assert_eq!(denial.kind(), kind, "{denial:?}");
    assert!(
        denial.detail().contains(detail),
        "expected {detail:?} in {:?}",
        denial.detail()
    );
    let printed = format!("{denial:?} {denial}");
    assert!(
        token.len() < 8 || !printed.contains(token),
        "a denial must never carry the token"
    );
    denial
}

#[track_caller]
fn invalid(auth: &JwtAuthenticator, token: &str, detail: &str) {
    refused(auth, token, DenialKind::InvalidCredential, detail);
}

fn scope(s: &str) -> Scope {
    Scope::parse(s).unwrap()
}

// ---------------------------------------------------------------------------------------------------------------
// The allowed case, for every algorithm.

#[test]
fn accepts_each_algorithm_and_builds_the_grant() {
    let a = auth();
    for (alg, kid, signer) in [
        ("ES256", "ec-1", Signer::Es256),
        ("EdDSA", "ed-1", Signer::EdDsa),
        ("RS256", "rsa-1", Signer::Rs256),
        ("HS256", "hs-1", Signer::Hs256),
    ] {
        let t = token(&header(alg, kid), &claims(), signer);
        let grant = a.verify(&t).unwrap_or_else(|d| panic!("{alg}: {d:?}"));
        assert_eq!(grant.principal(), "svc-billing");
        assert_eq!(grant.kind(), scopegate::CredentialKind::Jwt);
        assert!(grant.scopes().covers(&scope("orders:read")));
        assert!(grant.scopes().covers(&scope("invoices:read")));
        assert!(!grant.scopes().covers(&scope("orders:write")));
        assert_eq!(grant.attr("tenant"), Some("acme"));
        let ips = grant.allow_ips().unwrap();
        assert!(ips.contains(parse_ip("10.1.2.3").unwrap()));
        assert!(!ips.contains(parse_ip("192.0.2.1").unwrap()));
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Algorithms and keys.

#[test]
fn alg_none_is_refused() {
    let a = auth();
    for alg in ["none", "None", "NONE"] {
        let unsigned = raw_token(
            &json!({"alg": alg}).to_string(),
            &claims().to_string(),
            Signer::Unsigned,
        );
        invalid(&a, &unsigned, "unsigned");
        // Even with something in the signature slot.
        let signed = token(
            &json!({"alg": alg, "kid": "ec-1"}),
            &claims(),
            Signer::Es256,
        );
        invalid(&a, &signed, "not one of the configured algorithms");
    }
    assert!(a.verify(&es256(&claims())).is_ok());
}

#[test]
fn an_algorithm_that_is_not_configured_is_refused() {
    let es_only = JwtAuthenticator::builder()
        .algorithms([Algorithm::ES256])
        .key_set(key_set())
        .issuer(ISS)
        .audience(AUD)
        .clock(clock())
        .build()
        .unwrap();
    let hs = token(&header("HS256", "hs-1"), &claims(), Signer::Hs256);
    invalid(&es_only, &hs, "not one of the configured algorithms");
    assert!(auth().verify(&hs).is_ok());
    assert!(es_only.verify(&es256(&claims())).is_ok());
}

#[test]
fn hs256_signed_with_a_public_key_is_refused() {
    // The attacker knows the RSA and EC public keys and signs HS256 tokens with their bytes as the HMAC secret,
    // naming the public key's kid. HS256 is even configured (worst case).
    let k = keys();
    let a = auth();
    let rsa_pkcs1 = k.rsa.public_key().as_ref().to_vec();
    let rsa_spki = k.rsa.public_key().as_der().unwrap().as_ref().to_vec();
    let jwks_text = jwks_value().to_string();
    for (kid, public) in [
        ("rsa-1", rsa_pkcs1.as_slice()),
        ("rsa-1", rsa_spki.as_slice()),
        ("rsa-1", jwks_text.as_bytes()),
        ("ec-1", k.ec.public_key().as_ref()),
        ("ed-1", k.ed.public_key().as_ref()),
    ] {
        let forged = token(&header("HS256", kid), &claims(), Signer::HmacWith(public));
        invalid(&a, &forged, "may not verify the token's alg");
        // Without a kid, the only HS256 key is the oct one: the forgery fails its signature check.
        let forged = token(
            &json!({"alg": "HS256"}),
            &claims(),
            Signer::HmacWith(public),
        );
        invalid(&a, &forged, "signature does not verify");
    }
    // Twin: an honest HS256 token under the oct key.
    assert!(
        a.verify(&token(&header("HS256", "hs-1"), &claims(), Signer::Hs256))
            .is_ok()
    );
}

#[test]
fn a_jwk_alg_pins_its_key() {
    // ed-1 is pinned to EdDSA by its own alg; an ES256 token naming it is refused even though ES256 is configured.
    let a = auth();
    let t = token(&header("ES256", "ed-1"), &claims(), Signer::Es256);
    invalid(&a, &t, "may not verify the token's alg");
    // A JWK whose use is "enc" never verifies.
    let mut doc = jwks_value();
    doc["keys"][0]["use"] = json!("enc");
    let enc_only = builder()
        .key_set(KeySet::from_jwks_json(doc.to_string().as_bytes()).unwrap())
        .build()
        .unwrap();
    invalid(&enc_only, &es256(&claims()), "not in the key set");
    assert!(a.verify(&es256(&claims())).is_ok());
}

#[test]
fn unknown_kid_is_refused_and_kid_is_case_sensitive() {
    let a = auth();
    for kid in ["ec-2", "EC-1", "ec-1 ", ""] {
        let t = token(&header("ES256", kid), &claims(), Signer::Es256);
        invalid(&a, &t, "not in the key set");
    }
    let t = token(&json!({"alg": "ES256", "kid": 7}), &claims(), Signer::Es256);
    invalid(&a, &t, "kid is not a string");
    assert!(a.verify(&es256(&claims())).is_ok());
}

#[test]
fn a_missing_kid_needs_exactly_one_fitting_key() {
    let k = keys();
    let point = k.ec.public_key().as_ref();
    let ec_jwk =
        json!({"kty": "EC", "crv": "P-256", "x": b64(&point[1..33]), "y": b64(&point[33..])});
    let one = builder()
        .key_set(
            KeySet::from_jwks_json(json!({"keys": [ec_jwk.clone()]}).to_string().as_bytes())
                .unwrap(),
        )
        .build()
        .unwrap();
    let mut second = ec_jwk.clone();
    second["kid"] = json!("other");
    let two = builder()
        .key_set(
            KeySet::from_jwks_json(json!({"keys": [ec_jwk, second]}).to_string().as_bytes())
                .unwrap(),
        )
        .build()
        .unwrap();
    let no_kid = token(&json!({"alg": "ES256"}), &claims(), Signer::Es256);
    assert!(one.verify(&no_kid).is_ok());
    invalid(&two, &no_kid, "several keys fit");
    // In the full set, one key fits ES256 (ec-1): accepted without a kid; HS256 also has one (hs-1).
    assert!(auth().verify(&no_kid).is_ok());
}

// ---------------------------------------------------------------------------------------------------------------
// Header members that are never honoured.

#[test]
fn key_carrying_headers_are_refused() {
    let a = auth();
    let k = keys();
    let point = k.ec.public_key().as_ref();
    let embedded =
        json!({"kty": "EC", "crv": "P-256", "x": b64(&point[1..33]), "y": b64(&point[33..])});
    for (name, value) in [
        ("jku", json!("https://attacker.example/jwks.json")),
        ("x5u", json!("https://attacker.example/cert.pem")),
        ("jwk", embedded),
        ("x5c", json!(["MIIB"])),
    ] {
        let mut h = header("ES256", "ec-1");
        h[name] = value;
        invalid(&a, &token(&h, &claims(), Signer::Es256), name);
    }
    assert!(a.verify(&es256(&claims())).is_ok());
}

#[test]
fn crit_and_b64_headers_are_refused() {
    let a = auth();
    let mut h = header("ES256", "ec-1");
    h["crit"] = json!(["exp"]);
    invalid(&a, &token(&h, &claims(), Signer::Es256), "crit");
    let mut h = header("ES256", "ec-1");
    h["crit"] = json!(["b64"]);
    h["b64"] = json!(false);
    invalid(&a, &token(&h, &claims(), Signer::Es256), "crit");
    let mut h = header("ES256", "ec-1");
    h["b64"] = json!(false);
    invalid(&a, &token(&h, &claims(), Signer::Es256), "b64");
    assert!(a.verify(&es256(&claims())).is_ok());
}

#[test]
fn nested_tokens_and_jwe_are_refused() {
    let a = auth();
    for cty in ["JWT", "jwt", "application/JWT"] {
        let mut h = header("ES256", "ec-1");
        h["cty"] = json!(cty);
        invalid(&a, &token(&h, &claims(), Signer::Es256), "nested");
    }
    let mut h = header("ES256", "ec-1");
    h["cty"] = json!("json");
    assert!(a.verify(&token(&h, &claims(), Signer::Es256)).is_ok());

    let jwe = format!(
        "{}.{}.{}.{}.{}",
        b64(r#"{"alg":"RSA-OAEP","enc":"A256GCM","kid":"rsa-1"}"#),
        b64("key"),
        b64("iv"),
        b64("ciphertext"),
        b64("tag")
    );
    invalid(&a, &jwe, "five segments");
    let mut h = header("ES256", "ec-1");
    h["enc"] = json!("A256GCM");
    invalid(&a, &token(&h, &claims(), Signer::Es256), "JWE");
}

#[test]
fn duplicate_members_are_refused() {
    let a = auth();
    let c = claims().to_string();
    let twin = raw_token(r#"{"alg":"ES256","kid":"ec-1"}"#, &c, Signer::Es256);
    assert!(a.verify(&twin).is_ok());
    let dup_header = raw_token(
        r#"{"alg":"ES256","kid":"nope","kid":"ec-1"}"#,
        &c,
        Signer::Es256,
    );
    invalid(&a, &dup_header, "duplicate");
    let dup_alg = raw_token(
        r#"{"alg":"none","alg":"ES256","kid":"ec-1"}"#,
        &c,
        Signer::Es256,
    );
    invalid(&a, &dup_alg, "duplicate");
    // The payload: a second `sub` (last-wins parsers and first-wins parsers disagree), a second `aud`.
    let body = c.trim_end_matches('}');
    for extra in [r#","sub":"admin"}"#, r#","aud":"other-api"}"#] {
        let payload = format!("{body}{extra}");
        let t = raw_token(r#"{"alg":"ES256","kid":"ec-1"}"#, &payload, Signer::Es256);
        invalid(&a, &t, "duplicate");
    }
}

#[test]
fn malformed_shapes_are_refused() {
    let a = auth();
    let good = es256(&claims());
    let parts: Vec<&str> = good.split('.').collect();
    invalid(&a, "", "three segments");
    invalid(&a, &format!("{}.{}", parts[0], parts[1]), "three segments");
    invalid(&a, &format!("{good}.x"), "three segments");
    invalid(&a, &format!("{}..{}", parts[0], parts[2]), "empty segment");
    invalid(&a, &format!("{good}="), "outside base64url");
    invalid(&a, &format!(" {good}"), "outside base64url");
    invalid(
        &a,
        &format!("{}.{}.{}", b64("not json"), parts[1], parts[2]),
        "header is not a JSON object",
    );
    invalid(
        &a,
        &format!("{}.{}.{}", b64("[1]"), parts[1], parts[2]),
        "header is not a JSON object",
    );
    assert!(a.verify(&good).is_ok());
}

#[test]
fn required_typ_is_checked_when_configured() {
    let strict = builder().required_typ(["at+jwt"]).build().unwrap();
    for ok in ["at+jwt", "AT+JWT", "application/at+jwt"] {
        let mut h = header("ES256", "ec-1");
        h["typ"] = json!(ok);
        assert!(
            strict.verify(&token(&h, &claims(), Signer::Es256)).is_ok(),
            "{ok}"
        );
    }
    invalid(&strict, &es256(&claims()), "typ is not one of the required");
    let no_typ = token(
        &json!({"alg": "ES256", "kid": "ec-1"}),
        &claims(),
        Signer::Es256,
    );
    invalid(&strict, &no_typ, "no typ");
    // Off by default: `JWT` is fine.
    assert!(auth().verify(&es256(&claims())).is_ok());
}

// ---------------------------------------------------------------------------------------------------------------
// Signature and size.

#[test]
fn tampered_payload_and_signature_are_refused() {
    let a = auth();
    let good = es256(&claims());
    assert!(a.verify(&good).is_ok());
    let parts: Vec<&str> = good.split('.').collect();
    let wider = with(claims(), "scope", json!("orders:read orders:write admin"));
    let tampered = format!("{}.{}.{}", parts[0], b64(wider.to_string()), parts[2]);
    invalid(&a, &tampered, "signature does not verify");
    let mut sig = URL_SAFE_NO_PAD.decode(parts[2]).unwrap();
    sig[10] ^= 1;
    let tampered = format!("{}.{}.{}", parts[0], parts[1], b64(&sig));
    invalid(&a, &tampered, "signature does not verify");
    // A header swapped from another token (same payload, signature over the old header).
    let other = format!(
        "{}.{}.{}",
        b64(r#"{"alg":"ES256","kid":"ec-1"}"#),
        parts[1],
        parts[2]
    );
    invalid(&a, &other, "signature does not verify");
    for signer in [Signer::Rs256, Signer::EdDsa, Signer::Hs256] {
        for (alg, kid) in [("RS256", "rsa-1"), ("EdDSA", "ed-1"), ("HS256", "hs-1")] {
            let t = token(&header(alg, kid), &claims(), signer);
            let p: Vec<&str> = t.split('.').collect();
            let forged = format!("{}.{}.{}", p[0], b64(wider.to_string()), p[2]);
            assert!(a.verify(&forged).is_err(), "{alg}");
        }
    }
}

fn padded_token(total_len: usize) -> String {
    // A correctly signed token, made long by an ignored claim.
    let mut pad = 0;
    loop {
        let t = es256(&with(claims(), "padding", json!("p".repeat(pad))));
        if t.len() >= total_len {
            return t;
        }
        pad += (total_len - t.len()) * 3 / 4 + 1;
    }
}

#[test]
fn oversized_tokens_are_refused_before_any_decoding() {
    let a = auth();
    let big = padded_token(8 * 1024 + 1);
    assert!(big.len() > 8 * 1024);
    invalid(&a, &big, "longer than the configured maximum");
    // The same token is fine under a larger limit: only the size check refused it.
    let roomy = builder().max_token_len(16 * 1024).build().unwrap();
    assert!(roomy.verify(&big).is_ok());
    // Structural evidence that nothing else ran first: garbage that every later step would refuse for another
    // reason gets the size reason.
    invalid(&a, &"!".repeat(9000), "longer than the configured maximum");
    invalid(&a, &"!".repeat(100), "outside base64url");
    // And a refreshable key set is not consulted for an oversized token with an unknown kid.
    let rt = runtime();
    let source = CountingSource::new(jwks_value().to_string());
    let fetches = Arc::clone(&source.fetches);
    let r = refreshable(source);
    let oversized = {
        let mut pad = 8 * 1024;
        loop {
            let t = token(
                &header("ES256", "unknown"),
                &with(claims(), "padding", json!("p".repeat(pad))),
                Signer::Es256,
            );
            if t.len() > 8 * 1024 {
                break t;
            }
            pad += 1024;
        }
    };
    let d = rt.block_on(r.authenticate(&oversized)).unwrap_err();
    assert!(d.detail().contains("longer than"), "{d:?}");
    assert_eq!(fetches.load(Ordering::SeqCst), 0);
    let small = token(&header("ES256", "unknown"), &claims(), Signer::Es256);
    let _ = rt.block_on(r.authenticate(&small));
    assert_eq!(fetches.load(Ordering::SeqCst), 1);
}

// ---------------------------------------------------------------------------------------------------------------
// Time claims (the injected clock; jsonwebtoken's system-clock checks are not used).

#[test]
fn exp_is_required_and_checked_with_leeway() {
    let a = auth();
    refused(
        &a,
        &es256(&with(claims(), "exp", json!(T0 - 31))),
        DenialKind::ExpiredCredential,
        "expired",
    );
    refused(
        &a,
        &es256(&with(claims(), "exp", json!(T0 - 30))),
        DenialKind::ExpiredCredential,
        "expired",
    );
    assert!(
        a.verify(&es256(&with(claims(), "exp", json!(T0 - 29))))
            .is_ok(),
        "within leeway"
    );
    let strict = builder().leeway(Duration::ZERO).build().unwrap();
    refused(
        &strict,
        &es256(&with(claims(), "exp", json!(T0))),
        DenialKind::ExpiredCredential,
        "expired",
    );
    assert!(
        strict
            .verify(&es256(&with(claims(), "exp", json!(T0 + 1))))
            .is_ok()
    );
    invalid(&a, &es256(&without(claims(), "exp")), "no exp");
    // Extreme values never overflow.
    assert!(
        a.verify(&es256(&with(claims(), "exp", json!(1e300))))
            .is_ok()
    );
    assert!(
        a.verify(&es256(&with(claims(), "exp", json!(u64::MAX))))
            .is_ok()
    );
    refused(
        &a,
        &es256(&with(claims(), "exp", json!(i64::MIN))),
        DenialKind::ExpiredCredential,
        "expired",
    );
}

#[test]
fn the_injected_clock_decides() {
    let c = clock();
    let a = builder().clock(c.clone()).build().unwrap();
    let t = es256(&claims());
    assert!(a.verify(&t).is_ok());
    c.advance(Duration::from_secs(300 + 30));
    refused(&a, &t, DenialKind::ExpiredCredential, "expired");
}

#[test]
fn time_claims_of_the_wrong_type_are_refused() {
    let a = auth();
    for name in ["exp", "nbf", "iat"] {
        for v in [json!("1700000300"), json!(null), json!([T0]), json!(true)] {
            invalid(&a, &es256(&with(claims(), name, v)), "is not a number");
        }
    }
    // Fractional dates are numbers.
    assert!(
        a.verify(&es256(&with(claims(), "exp", json!(T0 as f64 + 300.5))))
            .is_ok()
    );
}

#[test]
fn nbf_in_the_future_is_refused() {
    let a = auth();
    invalid(&a, &es256(&with(claims(), "nbf", json!(T0 + 31))), "nbf");
    assert!(
        a.verify(&es256(&with(claims(), "nbf", json!(T0 + 30))))
            .is_ok()
    );
    assert!(
        a.verify(&es256(&with(claims(), "nbf", json!(T0 - 10))))
            .is_ok()
    );
}

#[test]
fn iat_in_the_future_beyond_leeway_is_refused() {
    let a = auth();
    invalid(&a, &es256(&with(claims(), "iat", json!(T0 + 31))), "iat");
    assert!(
        a.verify(&es256(&with(claims(), "iat", json!(T0 + 30))))
            .is_ok()
    );
    assert!(a.verify(&es256(&without(claims(), "iat"))).is_ok());
}

// ---------------------------------------------------------------------------------------------------------------
// Issuer, audience, subject.

#[test]
fn iss_must_be_an_accepted_string() {
    let a = auth();
    invalid(
        &a,
        &es256(&with(claims(), "iss", json!("https://evil.example"))),
        "not an accepted issuer",
    );
    invalid(
        &a,
        &es256(&with(claims(), "iss", json!("https://issuer.example/"))),
        "not an accepted issuer",
    );
    invalid(&a, &es256(&without(claims(), "iss")), "no iss");
    invalid(
        &a,
        &es256(&with(claims(), "iss", json!([ISS]))),
        "iss is not a string",
    );
    invalid(
        &a,
        &es256(&with(claims(), "iss", json!(1))),
        "iss is not a string",
    );
    let two = builder().issuer("https://other.example").build().unwrap();
    assert!(
        two.verify(&es256(&with(
            claims(),
            "iss",
            json!("https://other.example")
        )))
        .is_ok()
    );
    assert!(two.verify(&es256(&claims())).is_ok());
}

#[test]
fn aud_must_name_an_accepted_audience() {
    let a = auth();
    assert!(
        a.verify(&es256(&with(claims(), "aud", json!([AUD]))))
            .is_ok()
    );
    assert!(
        a.verify(&es256(&with(claims(), "aud", json!(["other", AUD]))))
            .is_ok()
    );
    invalid(
        &a,
        &es256(&with(claims(), "aud", json!("other-api"))),
        "no accepted audience",
    );
    invalid(
        &a,
        &es256(&with(claims(), "aud", json!(["other-api", "x"]))),
        "no accepted audience",
    );
    invalid(&a, &es256(&with(claims(), "aud", json!([]))), "empty array");
    invalid(&a, &es256(&without(claims(), "aud")), "no aud");
    invalid(
        &a,
        &es256(&with(claims(), "aud", json!(5))),
        "neither a string",
    );
    invalid(
        &a,
        &es256(&with(claims(), "aud", json!([AUD, 5]))),
        "not a string",
    );
    invalid(
        &a,
        &es256(&with(claims(), "aud", json!({"x": AUD}))),
        "neither a string",
    );
}

#[test]
fn the_danger_opt_outs_accept_any_issuer_or_audience_but_still_check_types() {
    let lax = JwtAuthenticator::builder()
        .algorithms([Algorithm::ES256])
        .key_set(key_set())
        .danger_accept_any_issuer()
        .danger_accept_any_audience()
        .clock(clock())
        .build()
        .unwrap();
    let t = es256(&with(
        with(claims(), "iss", json!("https://x")),
        "aud",
        json!("y"),
    ));
    assert!(lax.verify(&t).is_ok());
    assert!(
        lax.verify(&es256(&without(without(claims(), "iss"), "aud")))
            .is_ok()
    );
    invalid(
        &lax,
        &es256(&with(claims(), "iss", json!(3))),
        "iss is not a string",
    );
    invalid(
        &lax,
        &es256(&with(claims(), "aud", json!([]))),
        "empty array",
    );
}

#[test]
fn sub_is_required() {
    let a = auth();
    invalid(&a, &es256(&without(claims(), "sub")), "no sub");
    invalid(&a, &es256(&with(claims(), "sub", json!(""))), "no sub");
    invalid(
        &a,
        &es256(&with(claims(), "sub", json!(42))),
        "sub is not a string",
    );
}

// ---------------------------------------------------------------------------------------------------------------
// Scopes, allowlist, attributes.

#[test]
fn malformed_scope_claims_are_refused() {
    let a = auth();
    for bad in [
        json!(["orders:read"]),
        json!("orders:read  invoices:read"),
        json!(" orders:read"),
        json!("orders:read\tinvoices:read"),
        json!("*"),
        json!("orders:read *"),
        json!("inv*:read"),
        json!(1),
    ] {
        invalid(&a, &es256(&with(claims(), "scope", bad.clone())), "scope");
    }
    assert!(
        a.verify(&es256(&with(claims(), "scope", json!("orders:*"))))
            .is_ok()
    );
    let su = builder().danger_allow_superuser_scope().build().unwrap();
    let g = su
        .verify(&es256(&with(claims(), "scope", json!("*"))))
        .unwrap();
    assert!(g.scopes().covers(&scope("anything:at:all")));
}

#[test]
fn scp_is_read_only_when_the_scope_claim_is_absent() {
    let a = auth();
    let both = with(claims(), "scp", json!(["admin:all"]));
    let g = a.verify(&es256(&both)).unwrap();
    assert!(g.scopes().covers(&scope("orders:read")));
    assert!(!g.scopes().covers(&scope("admin:all")), "never the union");
    let scp_only = with(
        without(claims(), "scope"),
        "scp",
        json!(["admin:all", "x:y"]),
    );
    let g = a.verify(&es256(&scp_only)).unwrap();
    assert!(g.scopes().covers(&scope("admin:all")));
    let scp_text = with(without(claims(), "scope"), "scp", json!("a:b c:d"));
    assert_eq!(a.verify(&es256(&scp_text)).unwrap().scopes().len(), 2);
    for bad in [json!([1]), json!(["a b"]), json!({"a": 1}), json!(["*"])] {
        invalid(
            &a,
            &es256(&with(without(claims(), "scope"), "scp", bad)),
            // "scp holds…", "scp is neither…" or "the scope claim holds an invalid scope".
            "sc",
        );
    }
    let none = without(claims(), "scope");
    assert!(a.verify(&es256(&none)).unwrap().scopes().is_empty());
    // A configured claim name.
    let custom = builder().scope_claim("permissions").build().unwrap();
    let t = es256(&with(
        without(claims(), "scope"),
        "permissions",
        json!("p:q"),
    ));
    assert!(custom.verify(&t).unwrap().scopes().covers(&scope("p:q")));
}

#[test]
fn allowlist_claims_are_strict_cidr_arrays() {
    let a = auth();
    let g = a
        .verify(&es256(&with(claims(), "allowed_ips", json!([]))))
        .unwrap();
    assert!(
        g.allow_ips().unwrap().is_empty(),
        "an empty array restricts to no address"
    );
    let g = a.verify(&es256(&without(claims(), "allowed_ips"))).unwrap();
    assert!(g.allow_ips().is_none());
    let g = a
        .verify(&es256(&with(
            claims(),
            "allowed_ips",
            json!(["::ffff:10.0.0.0/104"]),
        )))
        .unwrap();
    assert!(
        g.allow_ips()
            .unwrap()
            .contains(parse_ip("10.9.9.9").unwrap())
    );
    for bad in [
        json!("10.0.0.0/8"),
        json!(["10.0.0.1/8"]),
        json!(["010.0.0.0/8"]),
        json!(["10.0.0.0/255.0.0.0"]),
        json!([10]),
        json!(["10.0.0.0/8", null]),
        json!({"a": "10.0.0.0/8"}),
    ] {
        invalid(&a, &es256(&with(claims(), "allowed_ips", bad)), "allowlist");
    }
}

#[test]
fn attribute_claims_must_be_strings() {
    let a = auth();
    for bad in [
        json!(1),
        json!(["acme"]),
        json!(null),
        json!({"id": "acme"}),
    ] {
        invalid(
            &a,
            &es256(&with(claims(), "tenant", bad)),
            "attribute claim",
        );
    }
    let g = a
        .verify(&es256(&with(claims(), "tenant", json!("*"))))
        .unwrap();
    assert_eq!(
        g.attr("tenant"),
        Some("*"),
        "a literal value, never a wildcard"
    );
    let g = a.verify(&es256(&without(claims(), "tenant"))).unwrap();
    assert_eq!(g.attr("tenant"), None);
}

// ---------------------------------------------------------------------------------------------------------------
// The verified-token cache.

#[test]
fn the_cache_serves_repeats_and_never_outlives_exp() {
    let c = clock();
    let a = builder()
        .clock(c.clone())
        .cache_capacity(100)
        .build()
        .unwrap();
    let t = es256(&claims());
    let first = a.verify(&t).unwrap();
    let again = a.verify(&t).unwrap();
    assert_eq!(first, again);
    // A forged payload reusing the cached token's signature is not a hit.
    let parts: Vec<&str> = t.split('.').collect();
    let wider = with(claims(), "scope", json!("admin:all"));
    let forged = format!("{}.{}.{}", parts[0], b64(wider.to_string()), parts[2]);
    invalid(&a, &forged, "signature does not verify");
    // Past exp + leeway: refused, even though the token is cached.
    c.advance(Duration::from_secs(300 + 30));
    refused(&a, &t, DenialKind::ExpiredCredential, "expired");
}

#[test]
fn a_key_set_change_flushes_the_cache() {
    let a = builder().cache_capacity(100).build().unwrap();
    let t = es256(&claims());
    assert!(a.verify(&t).is_ok());
    assert!(a.verify(&t).is_ok());
    // Rotate ec-1 out: the cached grant must not survive.
    let mut doc = jwks_value();
    doc["keys"].as_array_mut().unwrap().remove(0);
    assert!(a.replace_key_set(KeySet::from_jwks_json(doc.to_string().as_bytes()).unwrap()));
    invalid(&a, &t, "not in the key set");
    assert!(a.replace_key_set(key_set()));
    assert!(a.verify(&t).is_ok());
}

// ---------------------------------------------------------------------------------------------------------------
// Refreshable key sets.

#[derive(Debug)]
struct CountingSource {
    document: Arc<Mutex<Option<String>>>,
    fetches: Arc<AtomicUsize>,
}

impl CountingSource {
    fn new(document: String) -> Self {
        CountingSource {
            document: Arc::new(Mutex::new(Some(document))),
            fetches: Arc::new(AtomicUsize::new(0)),
        }
    }
}

impl JwksSource for CountingSource {
    fn fetch(&self) -> JwksFetch<'_> {
        self.fetches.fetch_add(1, Ordering::SeqCst);
        let doc = self.document.lock().unwrap().clone();
        Box::pin(async move {
            doc.map(JwksDocument::new)
                .ok_or_else(|| "source down".into())
        })
    }
}

/// Unknown `kid`s fetch at most once a minute (the background refresh, every 5 minutes, does not run in these
/// short tests).
fn cooldown_60s() -> KeyRefresh {
    KeyRefresh::new().unknown_kid_cooldown(Duration::from_secs(60))
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap()
}

fn refreshable_with(source: CountingSource, c: ManualClock) -> JwtAuthenticator {
    JwtAuthenticator::builder()
        .algorithms([Algorithm::ES256, Algorithm::EdDSA])
        .refreshable_key_set(source)
        .key_refresh(cooldown_60s())
        .issuer(ISS)
        .audience(AUD)
        .clock(c)
        .build()
        .unwrap()
}

fn refreshable(source: CountingSource) -> JwtAuthenticator {
    refreshable_with(source, clock())
}

#[test]
fn unknown_kid_floods_trigger_at_most_one_refresh_per_interval() {
    let rt = runtime();
    let c = clock();
    let source = CountingSource::new(jwks_value().to_string());
    let fetches = Arc::clone(&source.fetches);
    let a = refreshable_with(source, c.clone());
    // First use loads the set.
    assert!(rt.block_on(a.authenticate(&es256(&claims()))).is_ok());
    assert_eq!(fetches.load(Ordering::SeqCst), 1);
    // A flood of unknown kids within the interval: no more fetches (the first one just happened).
    for i in 0..50 {
        let t = token(
            &header("ES256", &format!("flood-{i}")),
            &claims(),
            Signer::Es256,
        );
        let d = rt.block_on(a.authenticate(&t)).unwrap_err();
        assert_eq!(d.kind(), DenialKind::InvalidCredential);
    }
    assert_eq!(fetches.load(Ordering::SeqCst), 1);
    c.advance(Duration::from_secs(61));
    for i in 0..50 {
        let t = token(
            &header("ES256", &format!("flood-{i}")),
            &claims(),
            Signer::Es256,
        );
        assert!(rt.block_on(a.authenticate(&t)).is_err());
    }
    assert_eq!(
        fetches.load(Ordering::SeqCst),
        2,
        "one refresh for the whole second flood"
    );
}

#[test]
fn a_new_kid_is_picked_up_by_refresh_and_the_cache_is_flushed() {
    let rt = runtime();
    let c = clock();
    let k = keys();
    // Start with only the Ed25519 key.
    let ed_only = json!({"keys": [jwks_value()["keys"][1].clone()]}).to_string();
    let source = CountingSource::new(ed_only);
    let doc = Arc::clone(&source.document);
    let a = JwtAuthenticator::builder()
        .algorithms([Algorithm::ES256, Algorithm::EdDSA])
        .refreshable_key_set(source)
        .key_refresh(cooldown_60s())
        .issuer(ISS)
        .audience(AUD)
        .clock(c.clone())
        .cache_capacity(10)
        .build()
        .unwrap();
    let ed_token = token(&header("EdDSA", "ed-1"), &claims(), Signer::EdDsa);
    assert!(rt.block_on(a.authenticate(&ed_token)).is_ok());
    assert!(rt.block_on(a.authenticate(&ed_token)).is_ok(), "cached");
    // The provider rotates: ec-1 added, ed-1 removed.
    let point = k.ec.public_key().as_ref();
    *doc.lock().unwrap() = Some(
        json!({"keys": [{"kty": "EC", "crv": "P-256", "kid": "ec-1", "x": b64(&point[1..33]), "y": b64(&point[33..])}]})
            .to_string(),
    );
    let ec_token = es256(&claims());
    // Within the interval the new kid is unknown.
    assert!(rt.block_on(a.authenticate(&ec_token)).is_err());
    c.advance(Duration::from_secs(60));
    assert!(rt.block_on(a.authenticate(&ec_token)).is_ok());
    // The old key is gone, and its cached token with it.
    let d = rt.block_on(a.authenticate(&ed_token)).unwrap_err();
    assert_eq!(d.kind(), DenialKind::InvalidCredential, "{d:?}");
}

#[test]
fn a_failing_source_answers_unavailable_never_allow() {
    let rt = runtime();
    let c = clock();
    let source = CountingSource::new(String::new());
    *source.document.lock().unwrap() = None;
    let doc = Arc::clone(&source.document);
    let a = refreshable_with(source, c.clone());
    let t = es256(&claims());
    let d = rt.block_on(a.authenticate(&t)).unwrap_err();
    assert_eq!(d.kind(), DenialKind::Unavailable);
    assert_eq!(a.verify(&t).unwrap_err().kind(), DenialKind::Unavailable);
    assert!(rt.block_on(a.refresh_keys()).is_err());
    // Garbage from the source is a failure too.
    *doc.lock().unwrap() = Some("{\"keys\": 1}".to_owned());
    assert!(rt.block_on(a.refresh_keys()).is_err());
    assert_eq!(a.verify(&t).unwrap_err().kind(), DenialKind::Unavailable);
    // Recovery.
    *doc.lock().unwrap() = Some(jwks_value().to_string());
    assert!(rt.block_on(a.refresh_keys()).unwrap());
    assert!(a.verify(&t).is_ok());
    assert!(
        !rt.block_on(a.refresh_keys()).unwrap(),
        "same document: no change"
    );
    // A later failure keeps the known keys working, and unknown kids unavailable.
    *doc.lock().unwrap() = None;
    c.advance(Duration::from_secs(120));
    let unknown = token(&header("ES256", "new"), &claims(), Signer::Es256);
    assert_eq!(
        rt.block_on(a.authenticate(&unknown)).unwrap_err().kind(),
        DenialKind::Unavailable
    );
    assert!(rt.block_on(a.authenticate(&t)).is_ok());
    // A known key used with the wrong alg is invalid, not unavailable: no refresh could change that.
    let wrong_alg = token(&header("ES256", "ed-1"), &claims(), Signer::Es256);
    assert_eq!(
        rt.block_on(a.authenticate(&wrong_alg)).unwrap_err().kind(),
        DenialKind::InvalidCredential
    );
}

// ---------------------------------------------------------------------------------------------------------------
// Configuration.

/// The field a refused configuration names (under `[jwt]`).
fn refused_field(built: Result<JwtAuthenticator, scopegate::ConfigError>) -> String {
    let err = built.map(drop).unwrap_err();
    let location = err.location().unwrap();
    assert_eq!(location.section.as_deref(), Some("[jwt]"), "{err}");
    assert!(!err.to_string().contains('\n'), "{err}");
    location.field.clone().unwrap()
}

#[test]
fn configuration_fails_closed() {
    let base = || {
        JwtAuthenticator::builder()
            .algorithms([Algorithm::ES256])
            .key_set(key_set())
    };
    assert_eq!(refused_field(base().audience(AUD).build()), "issuer");
    assert_eq!(refused_field(base().issuer(ISS).build()), "audience");
    assert_eq!(
        refused_field(
            JwtAuthenticator::builder()
                .key_set(key_set())
                .issuer(ISS)
                .audience(AUD)
                .build()
        ),
        "algorithms"
    );
    // An empty list where a list restricts something is an error, never "no restriction".
    assert_eq!(
        refused_field(
            JwtAuthenticator::builder()
                .algorithms([])
                .key_set(key_set())
                .issuer(ISS)
                .audience(AUD)
                .build()
        ),
        "algorithms"
    );
    assert_eq!(
        refused_field(
            base()
                .issuer(ISS)
                .audience(AUD)
                .required_typ(Vec::<String>::new())
                .build()
        ),
        "typ"
    );
    assert!(
        base()
            .issuer(ISS)
            .audience(AUD)
            .required_typ(["at+jwt"])
            .build()
            .is_ok()
    );
    assert_eq!(
        refused_field(
            JwtAuthenticator::builder()
                .algorithms([Algorithm::ES256])
                .issuer(ISS)
                .audience(AUD)
                .build()
        ),
        "jwks_file"
    );
    assert_eq!(
        refused_field(
            base()
                .issuer(ISS)
                .audience(AUD)
                .leeway(Duration::from_secs(301))
                .build()
        ),
        "leeway_seconds"
    );
    assert_eq!(
        refused_field(
            JwtAuthenticator::builder()
                .algorithms([Algorithm::ES384])
                .key_set(key_set())
                .issuer(ISS)
                .audience(AUD)
                .build()
        ),
        "algorithms"
    );
    let err = base()
        .jwks_file("/nonexistent/dir/jwks.json")
        .issuer(ISS)
        .audience(AUD)
        .build()
        .unwrap_err();
    assert!(
        err.to_string().contains("/nonexistent/dir/jwks.json"),
        "{err}"
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jwks.json");
    std::fs::write(
        &path,
        "{\"keys\": [{\"kty\": \"EC\", \"crv\": \"P-256\", \"x\": \"AA\", \"y\": \"AA\"}]}",
    )
    .unwrap();
    let err = base()
        .jwks_file(&path)
        .issuer(ISS)
        .audience(AUD)
        .build()
        .unwrap_err();
    assert!(err.to_string().contains("jwks.json"), "{err}");
    std::fs::write(&path, jwks_value().to_string()).unwrap();
    let ok = base()
        .jwks_file(&path)
        .issuer(ISS)
        .audience(AUD)
        .clock(clock())
        .build()
        .unwrap();
    assert!(ok.verify(&es256(&claims())).is_ok());
}

// ---------------------------------------------------------------------------------------------------------------
// Minting and down-scoping.

fn pem(der: &[u8]) -> String {
    let body = STANDARD.encode(der);
    let lines: Vec<&str> = body
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    format!(
        "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
        lines.join("\n")
    )
}

fn verifier_for(issuer: &TokenIssuer) -> JwtAuthenticator {
    JwtAuthenticator::builder()
        .algorithms([Algorithm::ES256, Algorithm::EdDSA])
        .key_set(KeySet::from_jwks_json(issuer.jwks_json().as_bytes()).unwrap())
        .issuer(ISS)
        .audience(AUD)
        .allow_ips_claim("allowed_ips")
        .attr_claims(["tenant"])
        .required_typ(["at+jwt"])
        .clock(clock())
        .build()
        .unwrap()
}

/// The Ed25519 issuer (`kid` "m") of the minting tests, on `c`.
fn ed_issuer(c: ManualClock) -> TokenIssuer {
    let k = keys();
    TokenIssuer::new(
        SigningKey::ed25519_from_pkcs8_der(&k.ed_pkcs8).unwrap(),
        "m",
        ISS,
        AUD,
    )
    .clock(c)
}

/// An `EdDSA` verifier of `issuer`'s key set with no leeway, on `c`, for the expiry tests.
fn zero_leeway_verifier(issuer: &TokenIssuer, c: ManualClock) -> JwtAuthenticator {
    JwtAuthenticator::builder()
        .algorithms([Algorithm::EdDSA])
        .key_set(KeySet::from_jwks_json(issuer.jwks_json().as_bytes()).unwrap())
        .issuer(ISS)
        .audience(AUD)
        .leeway(Duration::ZERO)
        .clock(c)
        .build()
        .unwrap()
}

fn cidrs(list: &[&str]) -> CidrSet {
    list.iter().map(|s| s.parse::<Cidr>().unwrap()).collect()
}

#[test]
fn minted_tokens_verify_for_both_algorithms_and_key_encodings() {
    let k = keys();
    let signing_keys = [
        SigningKey::ed25519_from_pkcs8_der(&k.ed_pkcs8).unwrap(),
        SigningKey::es256_from_pkcs8_der(&k.ec_pkcs8).unwrap(),
        SigningKey::from_pem(pem(&k.ed_pkcs8).as_bytes()).unwrap(),
        SigningKey::from_pem(pem(&k.ec_pkcs8).as_bytes()).unwrap(),
    ];
    let algs: Vec<Algorithm> = signing_keys.iter().map(SigningKey::algorithm).collect();
    assert_eq!(
        algs,
        [
            Algorithm::EdDSA,
            Algorithm::ES256,
            Algorithm::EdDSA,
            Algorithm::ES256
        ]
    );
    for key in signing_keys {
        let issuer = TokenIssuer::new(key, "mint-1", ISS, AUD).clock(clock());
        let v = verifier_for(&issuer);
        let req = MintRequest::new(
            "svc-reports",
            ScopeSet::parse(["reports:read"]).unwrap(),
            Duration::from_secs(600),
        )
        .allow_ips(cidrs(&["10.0.0.0/8"]))
        .attribute("tenant", "acme");
        let t = issuer.issue(&req).unwrap();
        let g = v.verify(t.expose_str().unwrap()).unwrap();
        assert_eq!(g.principal(), "svc-reports");
        assert!(g.scopes().covers(&scope("reports:read")));
        assert_eq!(g.attr("tenant"), Some("acme"));
        assert!(
            g.allow_ips()
                .unwrap()
                .contains(parse_ip("10.0.0.1").unwrap())
        );
        assert!(format!("{t:?}").contains("REDACTED"));
    }
    assert!(SigningKey::from_pem(b"not a pem").is_err());
    let rsa_der = k.rsa.as_der().unwrap();
    assert!(
        SigningKey::from_pem(pem(rsa_der.as_ref()).as_bytes()).is_err(),
        "RSA keys do not mint"
    );
}

#[test]
fn minted_tokens_expire_when_asked() {
    let c = clock();
    let issuer = ed_issuer(c.clone());
    let v = zero_leeway_verifier(&issuer, c.clone());
    let t = issuer
        .issue(&MintRequest::new(
            "s",
            ScopeSet::new(),
            Duration::from_secs(60),
        ))
        .unwrap();
    assert!(v.verify(t.expose_str().unwrap()).is_ok());
    c.advance(Duration::from_secs(60));
    assert_eq!(
        v.verify(t.expose_str().unwrap()).unwrap_err().kind(),
        DenialKind::ExpiredCredential
    );
}

#[test]
fn mint_requests_are_bounded() {
    let k = keys();
    let issuer = TokenIssuer::new(
        SigningKey::es256_from_pkcs8_der(&k.ec_pkcs8).unwrap(),
        "m",
        ISS,
        AUD,
    )
    .max_lifetime(Duration::from_secs(900));
    let s = ScopeSet::parse(["a:b"]).unwrap();
    assert!(matches!(
        issuer.issue(&MintRequest::new("s", s.clone(), Duration::from_secs(901))),
        Err(MintError::Lifetime { .. })
    ));
    assert!(matches!(
        issuer.issue(&MintRequest::new("s", s.clone(), Duration::ZERO)),
        Err(MintError::Lifetime { .. })
    ));
    assert!(
        issuer
            .issue(&MintRequest::new("s", s.clone(), Duration::from_secs(900)))
            .is_ok()
    );
    assert!(matches!(
        issuer.issue(&MintRequest::new(
            "s",
            ScopeSet::parse(["a:*"]).unwrap(),
            Duration::from_secs(60)
        )),
        Err(MintError::WildcardScope)
    ));
    assert!(matches!(
        issuer.issue(&MintRequest::new(
            "s",
            ScopeSet::danger_allow_superuser(["*"]).unwrap(),
            Duration::from_secs(60)
        )),
        Err(MintError::WildcardScope)
    ));
    for reserved in ["exp", "iss", "scope", "allowed_ips"] {
        assert!(matches!(
            issuer.issue(
                &MintRequest::new("s", s.clone(), Duration::from_secs(60)).attribute(reserved, "x")
            ),
            Err(MintError::ReservedAttribute(_))
        ));
    }
    assert!(matches!(
        issuer.issue(&MintRequest::new("", s, Duration::from_secs(60))),
        Err(MintError::EmptySubject)
    ));
}

#[test]
fn downscoping_can_narrow_but_never_widen() {
    let issuer = ed_issuer(clock());
    let v = verifier_for(&issuer);
    // The grant being exchanged (here from a token; an API key's grant works the same way).
    let wide = issuer
        .issue(
            &MintRequest::new(
                "key-123",
                ScopeSet::parse(["orders:read", "orders:write", "invoices:read"]).unwrap(),
                Duration::from_secs(600),
            )
            .allow_ips(cidrs(&["10.0.0.0/8", "2001:db8::/32"]))
            .attribute("tenant", "acme"),
        )
        .unwrap();
    let grant = v.verify(wide.expose_str().unwrap()).unwrap();
    let ten_min = Duration::from_secs(600);

    // Narrower scopes and a narrower allowlist: fine, and the token says so.
    let narrow = issuer
        .downscope(
            &grant,
            ScopeSet::parse(["orders:read"]).unwrap(),
            Some(cidrs(&["10.1.0.0/16"])),
            ten_min,
        )
        .unwrap();
    let g = v.verify(narrow.expose_str().unwrap()).unwrap();
    assert_eq!(g.principal(), "key-123");
    assert_eq!(g.attr("tenant"), Some("acme"));
    assert!(g.scopes().covers(&scope("orders:read")));
    assert!(!g.scopes().covers(&scope("orders:write")));
    assert!(
        !g.allow_ips()
            .unwrap()
            .contains(parse_ip("10.2.0.1").unwrap())
    );
    // The same allowlist is fine too.
    assert!(
        issuer
            .downscope(
                &grant,
                ScopeSet::new(),
                Some(cidrs(&["10.0.0.0/8"])),
                ten_min
            )
            .is_ok()
    );

    // Widening scopes.
    for wider in [
        ScopeSet::parse(["admin:all"]).unwrap(),
        ScopeSet::parse(["orders:read", "orders:delete"]).unwrap(),
        ScopeSet::parse(["orders:*"]).unwrap(),
        ScopeSet::danger_allow_superuser(["*"]).unwrap(),
    ] {
        assert_eq!(
            issuer
                .downscope(&grant, wider, Some(cidrs(&["10.0.0.0/8"])), ten_min)
                .unwrap_err(),
            MintError::ScopeWidening
        );
    }
    // Dropping or widening the allowlist.
    let read = || ScopeSet::parse(["orders:read"]).unwrap();
    for widened in [
        None,
        Some(cidrs(&["0.0.0.0/0"])),
        Some(cidrs(&["10.0.0.0/7"])),
        Some(cidrs(&["10.1.0.0/16", "192.0.2.0/24"])),
        Some(cidrs(&["::/0"])),
    ] {
        assert_eq!(
            issuer
                .downscope(&grant, read(), widened, ten_min)
                .unwrap_err(),
            MintError::AllowlistWidening
        );
    }
    // Lifetime stays bounded: a day is cut to what is left of the grant.
    let long = issuer
        .downscope(
            &grant,
            read(),
            Some(cidrs(&["10.0.0.0/8"])),
            Duration::from_secs(86_400),
        )
        .unwrap();
    let g = v.verify(long.expose_str().unwrap()).unwrap();
    assert_eq!(g.expires_at(), grant.expires_at());
}

#[test]
fn an_unrestricted_grant_may_add_an_allowlist() {
    let issuer = ed_issuer(clock());
    let v = verifier_for(&issuer);
    let t = issuer
        .issue(&MintRequest::new(
            "k",
            ScopeSet::parse(["a:b"]).unwrap(),
            Duration::from_secs(60),
        ))
        .unwrap();
    let grant = v.verify(t.expose_str().unwrap()).unwrap();
    assert!(grant.allow_ips().is_none());
    let d = issuer
        .downscope(
            &grant,
            ScopeSet::parse(["a:b"]).unwrap(),
            Some(cidrs(&["10.0.0.0/8"])),
            Duration::from_secs(60),
        )
        .unwrap();
    let g = v.verify(d.expose_str().unwrap()).unwrap();
    assert_eq!(g.allow_ips().unwrap().len(), 1);
}

#[test]
fn a_downscoped_token_never_outlives_its_grant() {
    let c = clock();
    let issuer = ed_issuer(c.clone());
    let v = zero_leeway_verifier(&issuer, c.clone());
    let read = || ScopeSet::parse(["a:b"]).unwrap();
    let parent = issuer
        .issue(&MintRequest::new("k", read(), Duration::from_secs(120)))
        .unwrap();
    let grant = v.verify(parent.expose_str().unwrap()).unwrap();
    assert_eq!(
        grant.expires_at(),
        Some(UNIX_EPOCH + Duration::from_secs(T0 + 120))
    );
    // Asking for an hour gets what is left of the parent's two minutes.
    let child = issuer
        .downscope(&grant, read(), None, Duration::from_secs(3600))
        .unwrap();
    assert!(v.verify(child.expose_str().unwrap()).is_ok());
    c.advance(Duration::from_secs(120));
    assert_eq!(
        v.verify(child.expose_str().unwrap()).unwrap_err().kind(),
        DenialKind::ExpiredCredential
    );
    assert_eq!(
        issuer
            .downscope(&grant, read(), None, Duration::from_secs(60))
            .unwrap_err(),
        MintError::GrantExpired
    );
}

#[test]
fn the_authenticator_fits_in_a_tower_service() {
    fn send_sync<T: Send + Sync + Clone + 'static>(_: &T) {}
    fn send<T: Send>(_: T) {}
    let a = auth();
    send_sync(&a);
    send(a.authenticate("x"));
    send(a.refresh_keys());
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(128))]

    /// Any one-character change to a valid token — header, payload or signature, including a change that only
    /// touches base64 padding bits — is refused, and nothing panics.
    #[test]
    fn every_single_character_change_is_refused(
        position in 0usize..4096,
        replacement in "[A-Za-z0-9_.=+/ -]",
    ) {
        static TOKEN: OnceLock<String> = OnceLock::new();
        let good = TOKEN.get_or_init(|| es256(&claims()));
        let a = auth();
        let i = position % good.len();
        let mut bytes = good.clone().into_bytes();
        let r = replacement.as_bytes()[0];
        proptest::prop_assume!(bytes[i] != r);
        bytes[i] = r;
        let mutated = String::from_utf8(bytes).unwrap();
        proptest::prop_assert!(a.verify(&mutated).is_err());
    }
}

/// RFC 9864's fully specified `Ed25519` verifies Ed25519 keys only, and is pinned like any other name.
#[test]
fn the_fully_specified_ed25519_name_verifies_ed25519_keys_only() {
    let k = keys();
    let x = b64(k.ed.public_key().as_ref());
    let point = k.ec.public_key().as_ref();
    let jwks = json!({"keys": [
        {"kty": "OKP", "crv": "Ed25519", "kid": "ed-any", "x": x},
        {"kty": "OKP", "crv": "Ed25519", "kid": "ed-pinned", "alg": "Ed25519", "x": x},
        {"kty": "OKP", "crv": "Ed25519", "kid": "ed-old", "alg": "EdDSA", "x": x},
        {"kty": "EC", "crv": "P-256", "kid": "ec-1", "x": b64(&point[1..33]), "y": b64(&point[33..])},
    ]});
    let set = || KeySet::from_jwks_json(jwks.to_string().as_bytes()).unwrap();
    let only_ed25519 = JwtAuthenticator::builder()
        .algorithms([Algorithm::Ed25519])
        .key_set(set())
        .issuer(ISS)
        .audience(AUD)
        .clock(clock())
        .build()
        .unwrap();
    for kid in ["ed-any", "ed-pinned"] {
        let t = token(&header("Ed25519", kid), &claims(), Signer::EdDsa);
        assert!(only_ed25519.verify(&t).is_ok(), "{kid}");
    }
    // A key pinned to the polymorphic name does not verify the new one, nor does a P-256 key.
    let t = token(&header("Ed25519", "ed-old"), &claims(), Signer::EdDsa);
    refused(
        &only_ed25519,
        &t,
        DenialKind::InvalidCredential,
        "may not verify",
    );
    let t = token(&header("Ed25519", "ec-1"), &claims(), Signer::Es256);
    refused(
        &only_ed25519,
        &t,
        DenialKind::InvalidCredential,
        "may not verify",
    );
    // Not configured, not accepted: `EdDSA` tokens against a gate pinned to `Ed25519`.
    let t = token(&header("EdDSA", "ed-any"), &claims(), Signer::EdDsa);
    refused(
        &only_ed25519,
        &t,
        DenialKind::InvalidCredential,
        "configured algorithms",
    );
    // And a key pinned to `Ed25519` does not verify `EdDSA` tokens where both are configured.
    let both = JwtAuthenticator::builder()
        .algorithms([Algorithm::EdDSA, Algorithm::Ed25519])
        .key_set(set())
        .issuer(ISS)
        .audience(AUD)
        .clock(clock())
        .build()
        .unwrap();
    let t = token(&header("EdDSA", "ed-pinned"), &claims(), Signer::EdDsa);
    refused(&both, &t, DenialKind::InvalidCredential, "may not verify");
    let t = token(&header("EdDSA", "ed-any"), &claims(), Signer::EdDsa);
    assert!(both.verify(&t).is_ok());
}
