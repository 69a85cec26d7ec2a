//! Verification keys: an RFC 7517 JWK Set parsed once into ready-to-use verifiers, chosen by `kid`.
//!
//! Every key is parsed when the set is loaded (never per token), and each key lists the algorithms it may verify:
//! the key's own `kty`/`crv` fix the family, and its `alg`, `use` and `key_ops`, when present, narrow it further.
//! The token header never chooses the key type.

use std::fmt;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::time::Duration;

use super::algorithm::Algorithm;
use aws_lc_rs::hmac;
use aws_lc_rs::signature::{self, ParsedPublicKey, RsaPublicKeyComponents};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::Value;

use crate::policy::Denial;

/// The smallest RSA modulus accepted, in bits.
pub const MIN_RSA_BITS: usize = 2048;

/// Why a key set could not be loaded. The message names the file (or says "in-memory JWKS") and the key at fault.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeySetError {
    /// The JWKS file could not be read.
    #[error("cannot read JWKS file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The document is not a JSON object with a `keys` array.
    #[error("invalid JWKS {origin}: {reason}")]
    Document {
        /// The file, or `in-memory JWKS`.
        origin: String,
        /// What is wrong.
        reason: String,
    },
    /// One key is malformed (a usable `kty` whose material does not parse, a short secret, a weak RSA modulus…).
    #[error("invalid JWKS {origin}: key #{index}{kid}: {reason}", kid = .kid.as_deref().map(|k| format!(" (kid {k:?})")).unwrap_or_default())]
    Key {
        /// The file, or `in-memory JWKS`.
        origin: String,
        /// Position of the key in the `keys` array.
        index: usize,
        /// The key's `kid`, if it has one.
        kid: Option<String>,
        /// What is wrong.
        reason: &'static str,
    },
    /// Two keys share a `kid`: selection would be ambiguous.
    #[error("invalid JWKS {origin}: two keys have the kid {kid:?}")]
    DuplicateKid {
        /// The file, or `in-memory JWKS`.
        origin: String,
        /// The repeated key id.
        kid: String,
    },
}

/// The error a [`JwksSource`] returns when it cannot fetch the document.
pub type JwksFetchError = Box<dyn std::error::Error + Send + Sync>;

/// The future returned by [`JwksSource::fetch`].
pub type JwksFetch<'a> =
    Pin<Box<dyn Future<Output = Result<JwksDocument, JwksFetchError>> + Send + 'a>>;

/// A fetched JWKS document, and how long its source says it stays fresh (HTTP `Cache-Control: max-age`).
#[derive(Clone)]
pub struct JwksDocument {
    bytes: Vec<u8>,
    max_age: Option<Duration>,
}

impl JwksDocument {
    /// The document's bytes (JSON), with no freshness hint: the refresh interval applies.
    pub fn new(bytes: impl Into<Vec<u8>>) -> Self {
        JwksDocument {
            bytes: bytes.into(),
            max_age: None,
        }
    }

    /// How long the source says the document stays fresh. It replaces the refresh interval for the next refresh
    /// when it lies within 60 s..=86,400 s; outside those bounds it is
    /// ignored.
    #[must_use]
    pub fn with_max_age(mut self, max_age: Duration) -> Self {
        self.max_age = Some(max_age);
        self
    }

    /// The bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The freshness hint, if the source gave one.
    pub fn max_age(&self) -> Option<Duration> {
        self.max_age
    }
}

impl fmt::Debug for JwksDocument {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwksDocument")
            .field("len", &self.bytes.len())
            .field("max_age", &self.max_age)
            .finish()
    }
}

/// A source of JWKS documents that the authenticator refreshes from: an identity provider's `jwks_uri` (see
/// [`JwtAuthenticatorBuilder::jwks_url`](super::JwtAuthenticatorBuilder::jwks_url) and
/// [`discovery`](super::JwtAuthenticatorBuilder::discovery), which need the `jwks-https` feature), or your own (a
/// secrets manager, a file watcher…). scopegate never follows a token's `jku`/`x5u`.
///
/// The authenticator calls it in the background every refresh interval, and for a token with an unknown `kid` at
/// most once per cooldown (see [`KeyRefresh`](super::KeyRefresh)); concurrent callers share one fetch.
///
/// The fetch should time out on its own (an HTTP client timeout, say): while it runs, requests that wait on it (those
/// naming an unknown `kid`) wait too.
pub trait JwksSource: Send + Sync + fmt::Debug + 'static {
    /// Fetches the current JWKS document.
    fn fetch(&self) -> JwksFetch<'_>;

    /// Where the keys come from, for error messages and audit events (a URL, say). Never a secret.
    fn describe(&self) -> String {
        "a refreshable JWKS source".to_owned()
    }
}

/// One way to check a signature, ready to use.
enum Verifier {
    Hmac(Box<hmac::Key>),
    Public(ParsedPublicKey),
}

impl Verifier {
    fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        match self {
            // `hmac::verify` compares tags in constant time.
            Verifier::Hmac(key) => hmac::verify(key, message, signature).is_ok(),
            Verifier::Public(key) => key.verify_sig(message, signature).is_ok(),
        }
    }
}

/// One key of the set, with the verifier for each algorithm it may check.
struct VerifyingKey {
    kid: Option<Box<str>>,
    verifiers: Vec<(Algorithm, Verifier)>,
}

impl VerifyingKey {
    fn is_symmetric(&self) -> bool {
        self.verifiers
            .iter()
            .any(|(_, v)| matches!(v, Verifier::Hmac(_)))
    }

    fn verifier(&self, alg: Algorithm) -> Option<&Verifier> {
        self.verifiers
            .iter()
            .find_map(|(a, v)| (*a == alg).then_some(v))
    }
}

/// A parsed JWK Set: the verification keys, chosen by `kid`.
///
/// Keys that can never verify a JWS signature are skipped when the set is loaded: `use` other than `sig`,
/// `key_ops` without `verify`, a `kty`/`crv`/`alg` that scopegate does not verify (e.g. encryption keys). A key
/// of a supported type whose material is malformed is an error, never skipped.
///
/// ```
/// use scopegate::credential::jwt::KeySet;
///
/// let jwks = r#"{"keys":[{"kty":"oct","kid":"k1","alg":"HS256","k":"c2NvcGVnYXRlLWRvYy1leGFtcGxlLXNlY3JldC0zMi1ieXRlcyE"}]}"#;
/// let set = KeySet::from_jwks_json(jwks.as_bytes()).unwrap();
/// assert_eq!(set.len(), 1);
/// assert!(KeySet::from_jwks_json(b"{\"keys\": 3}").is_err());
/// ```
pub struct KeySet {
    keys: Vec<VerifyingKey>,
}

impl fmt::Debug for KeySet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Key ids and algorithms only: never key material.
        f.debug_list()
            .entries(self.keys.iter().map(|k| {
                (
                    k.kid.as_deref(),
                    k.verifiers.iter().map(|(a, _)| *a).collect::<Vec<_>>(),
                )
            }))
            .finish()
    }
}

/// Why no key could be chosen for a token (mapped to a denial by the authenticator).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Selection {
    /// The `kid` is not in the set.
    UnknownKid,
    /// The `kid` names a key that may not verify this `alg`.
    KeyAlgMismatch,
    /// No `kid`, and no key fits the `alg`.
    NoKeyForAlg,
    /// No `kid`, and several keys fit the `alg`.
    AmbiguousKey,
}

impl Selection {
    pub(super) fn denial(self) -> Denial {
        let detail = match self {
            Selection::UnknownKid => "the token's kid is not in the key set",
            Selection::KeyAlgMismatch => "the key named by kid may not verify the token's alg",
            Selection::NoKeyForAlg => "the token has no kid and no key fits its alg",
            Selection::AmbiguousKey => "the token has no kid and several keys fit its alg",
        };
        Denial::invalid_credential(detail)
    }
}

const IN_MEMORY: &str = "in-memory JWKS";

/// Where a document comes from: the operator's own file or value, or a fetch from a provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Origin {
    /// A file or an in-memory document: every key must be usable or skipped for a documented reason.
    Local,
    /// A provider's document: weak RSA keys are skipped, and at least one key must be usable.
    Fetched,
}

const WEAK_RSA: &str = "the RSA modulus is shorter than 2048 bits";

impl KeySet {
    /// An empty set (verifies nothing).
    pub fn empty() -> Self {
        KeySet { keys: Vec::new() }
    }

    /// Parses a JWKS document (RFC 7517 §5) held in memory.
    pub fn from_jwks_json(document: &[u8]) -> Result<Self, KeySetError> {
        Self::parse(document, IN_MEMORY, Origin::Local)
    }

    /// Reads and parses a JWKS file. Errors name the file.
    pub fn from_jwks_file(path: impl AsRef<Path>) -> Result<Self, KeySetError> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|source| KeySetError::Io {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&bytes, &path.display().to_string(), Origin::Local)
    }

    pub(super) fn parse(document: &[u8], origin: &str, from: Origin) -> Result<Self, KeySetError> {
        let doc_err = |reason: String| KeySetError::Document {
            origin: origin.to_owned(),
            reason,
        };
        let doc: Value = serde_json::from_slice(document).map_err(|e| doc_err(e.to_string()))?;
        let keys = doc
            .get("keys")
            .and_then(Value::as_array)
            .ok_or_else(|| doc_err("expected an object with a \"keys\" array".to_owned()))?;
        let mut set = KeySet { keys: Vec::new() };
        for (index, jwk) in keys.iter().enumerate() {
            let kid = jwk.get("kid").and_then(Value::as_str).map(str::to_owned);
            let key_err = |reason: &'static str| KeySetError::Key {
                origin: origin.to_owned(),
                index,
                kid: kid.clone(),
                reason,
            };
            let key = match parse_jwk(jwk) {
                // A symmetric key is a shared secret: never taken from a source that fetches it.
                Ok(Some(key)) if from == Origin::Fetched && key.is_symmetric() => continue,
                Ok(Some(key)) => key,
                Ok(None) => continue,
                // A provider publishes what it publishes: a legacy short RSA key beside its signing keys is
                // skipped, never trusted. A file the operator wrote is told so instead.
                Err(WEAK_RSA) if from == Origin::Fetched => continue,
                Err(reason) => return Err(key_err(reason)),
            };
            if let Some(k) = &key.kid
                && set.keys.iter().any(|other| other.kid.as_ref() == Some(k))
            {
                return Err(KeySetError::DuplicateKid {
                    origin: origin.to_owned(),
                    kid: k.to_string(),
                });
            }
            set.keys.push(key);
        }
        if from == Origin::Fetched && set.keys.is_empty() {
            return Err(doc_err(
                "no key in it can verify a signature (a fetched set with no usable key is a failed fetch)"
                    .to_owned(),
            ));
        }
        Ok(set)
    }

    /// Number of usable keys.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether the set has no usable key.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Whether some key may verify `alg`.
    pub fn supports(&self, alg: Algorithm) -> bool {
        self.keys.iter().any(|k| k.verifier(alg).is_some())
    }

    /// Whether the set holds a key with this exact `kid`.
    pub fn contains_kid(&self, kid: &str) -> bool {
        self.keys.iter().any(|k| k.kid.as_deref() == Some(kid))
    }

    /// Chooses the verifier: by exact `kid`, or, without one, the only key that fits `alg`.
    fn select(&self, kid: Option<&str>, alg: Algorithm) -> Result<&Verifier, Selection> {
        if let Some(kid) = kid {
            let key = self
                .keys
                .iter()
                .find(|k| k.kid.as_deref() == Some(kid))
                .ok_or(Selection::UnknownKid)?;
            return key.verifier(alg).ok_or(Selection::KeyAlgMismatch);
        }
        let mut fitting = self.keys.iter().filter_map(|k| k.verifier(alg));
        match (fitting.next(), fitting.next()) {
            (Some(v), None) => Ok(v),
            (None, _) => Err(Selection::NoKeyForAlg),
            (Some(_), Some(_)) => Err(Selection::AmbiguousKey),
        }
    }

    /// Selects the key and checks `signature` over `message`.
    pub(super) fn verify(
        &self,
        kid: Option<&str>,
        alg: Algorithm,
        message: &[u8],
        signature: &[u8],
    ) -> Result<bool, Selection> {
        Ok(self.select(kid, alg)?.verify(message, signature))
    }
}

fn b64(value: Option<&Value>, missing: &'static str) -> Result<Vec<u8>, &'static str> {
    let text = value.and_then(Value::as_str).ok_or(missing)?;
    URL_SAFE_NO_PAD
        .decode(text)
        .map_err(|_| "a key parameter is not base64url without padding")
}

const RSA_ALGS: [Algorithm; 6] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
];

fn rsa_params(alg: Algorithm) -> &'static signature::RsaParameters {
    match alg {
        Algorithm::RS384 => &signature::RSA_PKCS1_2048_8192_SHA384,
        Algorithm::RS512 => &signature::RSA_PKCS1_2048_8192_SHA512,
        Algorithm::PS256 => &signature::RSA_PSS_2048_8192_SHA256,
        Algorithm::PS384 => &signature::RSA_PSS_2048_8192_SHA384,
        Algorithm::PS512 => &signature::RSA_PSS_2048_8192_SHA512,
        _ => &signature::RSA_PKCS1_2048_8192_SHA256,
    }
}

/// Parses one JWK. `Ok(None)`: a key that can never verify a JWS signature here (skipped).
fn parse_jwk(jwk: &Value) -> Result<Option<VerifyingKey>, &'static str> {
    let obj = jwk.as_object().ok_or("a key is not a JSON object")?;
    let text = |name: &str| -> Result<Option<&str>, &'static str> {
        match obj.get(name) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.as_str())),
            Some(_) => Err("kty, crv, alg, use and kid must be strings"),
        }
    };
    let kid = text("kid")?;
    let kty = text("kty")?.ok_or("a key has no kty")?;
    if text("use")?.is_some_and(|u| u != "sig") {
        return Ok(None);
    }
    if let Some(ops) = obj.get("key_ops") {
        let ops = ops.as_array().ok_or("key_ops must be an array")?;
        if !ops.iter().any(|op| op.as_str() == Some("verify")) {
            return Ok(None);
        }
    }
    // The key's own alg, when present, pins it to that one algorithm. An alg we do not verify: skip the key.
    let pinned = match text("alg")? {
        None => None,
        Some(a) => match a.parse::<Algorithm>() {
            Ok(a) => Some(a),
            Err(_) => return Ok(None),
        },
    };
    let candidates: Vec<Algorithm> = match (kty, text("crv")?) {
        ("RSA", _) => RSA_ALGS.to_vec(),
        ("EC", Some("P-256")) => vec![Algorithm::ES256],
        ("EC", Some("P-384")) => vec![Algorithm::ES384],
        // RFC 9864: `Ed25519` names this curve exactly; `EdDSA` is the older, polymorphic name.
        ("OKP", Some("Ed25519")) => vec![Algorithm::EdDSA, Algorithm::Ed25519],
        ("oct", _) => vec![Algorithm::HS256, Algorithm::HS384, Algorithm::HS512],
        ("EC" | "OKP", None) => return Err("an EC or OKP key has no crv"),
        _ => return Ok(None),
    };
    let algs: Vec<Algorithm> = match pinned {
        Some(a) if candidates.contains(&a) => vec![a],
        Some(_) => return Err("the key's alg does not match its kty/crv"),
        None => candidates,
    };
    Ok(Some(VerifyingKey {
        kid: kid.map(Into::into),
        verifiers: verifiers(kty, obj, algs)?,
    }))
}

/// Parses the key material once per algorithm the key may verify.
fn verifiers(
    kty: &str,
    obj: &serde_json::Map<String, Value>,
    algs: Vec<Algorithm>,
) -> Result<Vec<(Algorithm, Verifier)>, &'static str> {
    let mut verifiers = Vec::with_capacity(algs.len());
    match kty {
        "RSA" => {
            let n = b64(obj.get("n"), "an RSA key has no n")?;
            let e = b64(obj.get("e"), "an RSA key has no e")?;
            let bits = n.iter().position(|b| *b != 0).map_or(0, |first| {
                (n.len() - first) * 8 - n[first].leading_zeros() as usize
            });
            if bits < MIN_RSA_BITS {
                return Err(WEAK_RSA);
            }
            let components = RsaPublicKeyComponents {
                n: n.as_slice(),
                e: e.as_slice(),
            };
            for alg in algs {
                let key = components
                    .to_parsed_public_key(rsa_params(alg))
                    .map_err(|_| "the RSA key does not parse")?;
                verifiers.push((alg, Verifier::Public(key)));
            }
        }
        "EC" => {
            let (alg, len, verification): (_, _, &'static signature::EcdsaVerificationAlgorithm) =
                if algs.contains(&Algorithm::ES256) {
                    (Algorithm::ES256, 32, &signature::ECDSA_P256_SHA256_FIXED)
                } else {
                    (Algorithm::ES384, 48, &signature::ECDSA_P384_SHA384_FIXED)
                };
            let x = b64(obj.get("x"), "an EC key has no x")?;
            let y = b64(obj.get("y"), "an EC key has no y")?;
            if x.len() != len || y.len() != len {
                return Err("the EC coordinates have the wrong length for the curve");
            }
            let mut point = Vec::with_capacity(1 + 2 * len);
            point.push(0x04);
            point.extend_from_slice(&x);
            point.extend_from_slice(&y);
            let key = ParsedPublicKey::new(verification, &point)
                .map_err(|_| "the EC point is not on the curve")?;
            verifiers.push((alg, Verifier::Public(key)));
        }
        "OKP" => {
            let x = b64(obj.get("x"), "an OKP key has no x")?;
            if x.len() != 32 {
                return Err("an Ed25519 key must be 32 bytes");
            }
            for alg in algs {
                let key = ParsedPublicKey::new(&signature::ED25519, &x)
                    .map_err(|_| "the Ed25519 key does not parse")?;
                verifiers.push((alg, Verifier::Public(key)));
            }
        }
        _ => {
            // oct: RFC 7518 §3.2 requires a key at least as long as the hash output.
            let k = zeroize::Zeroizing::new(b64(obj.get("k"), "an oct key has no k")?);
            for alg in algs {
                let (min, h) = match alg {
                    Algorithm::HS384 => (48, hmac::HMAC_SHA384),
                    Algorithm::HS512 => (64, hmac::HMAC_SHA512),
                    _ => (32, hmac::HMAC_SHA256),
                };
                if k.len() >= min {
                    verifiers.push((alg, Verifier::Hmac(Box::new(hmac::Key::new(h, &k)))));
                }
            }
            if verifiers.is_empty() {
                return Err("an oct key is shorter than its hash output (RFC 7518 §3.2)");
            }
        }
    }
    Ok(verifiers)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const SECRET_32: &str = "c2NvcGVnYXRlLWRvYy1leGFtcGxlLXNlY3JldC0zMi1ieXRlcyE";

    fn oct(kid: &str, extra: &str) -> String {
        format!(r#"{{"kty":"oct","kid":"{kid}","k":"{SECRET_32}"{extra}}}"#)
    }

    #[test]
    fn skips_keys_that_cannot_verify_and_refuses_broken_ones() {
        let doc = format!(
            r#"{{"keys":[{},{},{},{{"kty":"RSA-weird"}}]}}"#,
            oct("a", ""),
            oct("enc", r#","use":"enc""#),
            oct("ops", r#","key_ops":["sign"]"#),
        );
        let set = KeySet::from_jwks_json(doc.as_bytes()).unwrap();
        assert_eq!(set.len(), 1);
        assert!(set.contains_kid("a"));
        assert!(!set.contains_kid("A"), "kid is case-sensitive");

        let short = r#"{"keys":[{"kty":"oct","kid":"s","k":"c2hvcnQ"}]}"#;
        let err = KeySet::from_jwks_json(short.as_bytes()).unwrap_err();
        assert!(err.to_string().contains("kid \"s\""), "{err}");

        let dup = format!(r#"{{"keys":[{},{}]}}"#, oct("a", ""), oct("a", ""));
        assert!(matches!(
            KeySet::from_jwks_json(dup.as_bytes()),
            Err(KeySetError::DuplicateKid { .. })
        ));

        let mismatch = format!(r#"{{"keys":[{}]}}"#, oct("a", r#","alg":"ES256""#));
        assert!(KeySet::from_jwks_json(mismatch.as_bytes()).is_err());
    }

    #[test]
    fn the_key_alg_pins_the_verifier() {
        let doc = format!(r#"{{"keys":[{}]}}"#, oct("a", r#","alg":"HS384""#));
        // 32 bytes is too short for HS384.
        assert!(KeySet::from_jwks_json(doc.as_bytes()).is_err());
        // A 64-byte secret could serve HS512, but its alg pins it to HS256.
        let k64 = URL_SAFE_NO_PAD.encode([7u8; 64]);
        let doc = format!(r#"{{"keys":[{{"kty":"oct","kid":"a","alg":"HS256","k":"{k64}"}}]}}"#);
        let set = KeySet::from_jwks_json(doc.as_bytes()).unwrap();
        assert!(set.supports(Algorithm::HS256));
        assert!(!set.supports(Algorithm::HS512));
        let unpinned = format!(r#"{{"keys":[{{"kty":"oct","kid":"a","k":"{k64}"}}]}}"#);
        assert!(
            KeySet::from_jwks_json(unpinned.as_bytes())
                .unwrap()
                .supports(Algorithm::HS512)
        );
        assert_eq!(
            set.select(Some("a"), Algorithm::HS512).err(),
            Some(Selection::KeyAlgMismatch)
        );
    }

    fn ed25519(kid: &str) -> String {
        use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair as _};
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&aws_lc_rs::rand::SystemRandom::new()).unwrap();
        let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
        let x = URL_SAFE_NO_PAD.encode(pair.public_key().as_ref());
        format!(r#"{{"kty":"OKP","crv":"Ed25519","kid":"{kid}","x":"{x}"}}"#)
    }

    #[test]
    fn a_fetched_set_skips_weak_rsa_and_symmetric_keys_and_needs_one_usable_key() {
        // A 1024-bit modulus (top bit set) and a shared secret beside a usable key.
        let weak_n = URL_SAFE_NO_PAD.encode([0xC3u8; 128]);
        let weak = format!(r#"{{"kty":"RSA","kid":"old","n":"{weak_n}","e":"AQAB"}}"#);
        let doc = format!(
            r#"{{"keys":[{weak},{},{}]}}"#,
            oct("shared", ""),
            ed25519("ed")
        );
        let fetched = KeySet::parse(doc.as_bytes(), "https://idp/keys", Origin::Fetched).unwrap();
        assert_eq!(fetched.len(), 1);
        assert!(fetched.contains_kid("ed"));
        assert!(!fetched.contains_kid("old") && !fetched.contains_kid("shared"));
        // The operator's own file is told instead, and may hold shared secrets.
        let err = KeySet::parse(doc.as_bytes(), "jwks.json", Origin::Local).unwrap_err();
        let local = format!(r#"{{"keys":[{}]}}"#, oct("shared", ""));
        assert_eq!(
            KeySet::parse(local.as_bytes(), "jwks.json", Origin::Local)
                .unwrap()
                .len(),
            1
        );
        assert!(err.to_string().contains("2048"), "{err}");
        // Nothing usable, bad JSON, a duplicate kid: failed fetches, naming the source.
        let only_unusable = format!(
            r#"{{"keys":[{weak},{},{},{{"kty":"RSA-weird"}}]}}"#,
            oct("enc", r#","use":"enc""#),
            oct("shared", "")
        );
        let dup = format!(r#"{{"keys":[{},{}]}}"#, ed25519("a"), ed25519("a"));
        for bad in [
            only_unusable.as_str(),
            "{\"keys\":[]}",
            "<html>",
            dup.as_str(),
        ] {
            let err =
                KeySet::parse(bad.as_bytes(), "https://idp/keys", Origin::Fetched).unwrap_err();
            assert!(err.to_string().contains("https://idp/keys"), "{err}");
        }
        // A local empty set stays allowed (a set replaced later by `replace_key_set`).
        assert!(KeySet::parse(b"{\"keys\":[]}", "jwks.json", Origin::Local).is_ok());
    }

    #[test]
    fn file_errors_name_the_file() {
        let err = KeySet::from_jwks_file("/nonexistent/jwks.json").unwrap_err();
        assert!(err.to_string().contains("/nonexistent/jwks.json"), "{err}");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.json");
        std::fs::write(&path, "{").unwrap();
        let err = KeySet::from_jwks_file(&path).unwrap_err();
        assert!(err.to_string().contains("bad.json"), "{err}");
    }

    #[test]
    fn selection_without_kid_needs_exactly_one_fitting_key() {
        let one = format!(r#"{{"keys":[{}]}}"#, oct("a", ""));
        let set = KeySet::from_jwks_json(one.as_bytes()).unwrap();
        assert!(set.select(None, Algorithm::HS256).is_ok());
        assert_eq!(
            set.select(None, Algorithm::ES256).err(),
            Some(Selection::NoKeyForAlg)
        );
        let two = format!(r#"{{"keys":[{},{}]}}"#, oct("a", ""), oct("b", ""));
        let set = KeySet::from_jwks_json(two.as_bytes()).unwrap();
        assert_eq!(
            set.select(None, Algorithm::HS256).err(),
            Some(Selection::AmbiguousKey)
        );
        assert_eq!(
            set.select(Some("c"), Algorithm::HS256).err(),
            Some(Selection::UnknownKid)
        );
    }

    #[test]
    fn a_document_keeps_its_bytes_and_its_freshness_hint() {
        let plain = JwksDocument::new(b"{\"keys\":[]}".to_vec());
        assert_eq!(plain.bytes(), b"{\"keys\":[]}");
        assert_eq!(plain.max_age(), None);
        let hinted = plain.with_max_age(Duration::from_secs(600));
        assert_eq!(hinted.bytes(), b"{\"keys\":[]}");
        assert_eq!(hinted.max_age(), Some(Duration::from_secs(600)));
    }

    /// An RSA JWK of `n` (big-endian, as given) and e = 65537.
    fn rsa_jwk(kid: &str, n: &[u8]) -> String {
        let n = URL_SAFE_NO_PAD.encode(n);
        format!(r#"{{"kty":"RSA","kid":"{kid}","n":"{n}","e":"AQAB"}}"#)
    }

    #[test]
    fn each_rsa_algorithm_checks_its_own_signatures_only() {
        use aws_lc_rs::rsa::{KeyPair, KeySize};
        use aws_lc_rs::signature::{
            self as sig, KeyPair as _, RsaEncoding, RsaPublicKeyComponents,
        };
        let pair = KeyPair::generate(KeySize::Rsa2048).unwrap();
        let public = RsaPublicKeyComponents::<Vec<u8>>::from(pair.public_key());
        let set = KeySet::from_jwks_json(
            format!(r#"{{"keys":[{}]}}"#, rsa_jwk("r", &public.n)).as_bytes(),
        )
        .unwrap();
        let debug = format!("{set:?}");
        assert!(
            debug.contains("\"r\"") && debug.contains("PS512"),
            "{debug}"
        );
        assert!(
            !debug.contains(&URL_SAFE_NO_PAD.encode(&public.n)[..16]),
            "{debug}"
        );
        let encodings: [(Algorithm, &'static dyn RsaEncoding); 6] = [
            (Algorithm::RS256, &sig::RSA_PKCS1_SHA256),
            (Algorithm::RS384, &sig::RSA_PKCS1_SHA384),
            (Algorithm::RS512, &sig::RSA_PKCS1_SHA512),
            (Algorithm::PS256, &sig::RSA_PSS_SHA256),
            (Algorithm::PS384, &sig::RSA_PSS_SHA384),
            (Algorithm::PS512, &sig::RSA_PSS_SHA512),
        ];
        let rng = aws_lc_rs::rand::SystemRandom::new();
        let message = b"header.payload";
        for (signed_as, encoding) in encodings {
            let mut signature = vec![0; pair.public_modulus_len()];
            pair.sign(encoding, &rng, message, &mut signature).unwrap();
            for (checked_as, _) in encodings {
                let verified = set.verify(Some("r"), checked_as, message, &signature);
                assert_eq!(
                    verified,
                    Ok(signed_as == checked_as),
                    "{signed_as} checked as {checked_as}"
                );
            }
            assert_eq!(
                set.verify(Some("r"), signed_as, b"header.payloaD", &signature),
                Ok(false)
            );
        }
    }

    #[test]
    fn an_rsa_modulus_counts_its_bits_from_the_first_set_one() {
        let at = |n: &[u8]| {
            KeySet::parse(
                format!(r#"{{"keys":[{}]}}"#, rsa_jwk("r", n)).as_bytes(),
                "jwks.json",
                Origin::Local,
            )
        };
        // 2048 bits: usable. The same number with a leading zero byte still counts 2048 bits, so it is not refused
        // as weak (the parser then refuses the non-minimal encoding).
        let mut n = vec![0xC5u8; 256];
        n[255] = 0xC7;
        assert_eq!(at(&n).unwrap().len(), 1);
        let mut padded = vec![0u8];
        padded.extend_from_slice(&n);
        let err = at(&padded).unwrap_err().to_string();
        assert!(
            err.contains("does not parse") && !err.contains("2048"),
            "{err}"
        );
        // One bit fewer: 2047 bits, refused as weak, with and without the leading zero byte.
        n[0] = 0x7F;
        padded[1] = 0x7F;
        for weak in [&n, &padded] {
            let err = at(weak).unwrap_err();
            assert!(err.to_string().contains("2048"), "{err}");
        }
    }

    #[test]
    fn each_hmac_algorithm_checks_its_own_tags_only() {
        let k64 = [9u8; 64];
        let doc = format!(
            r#"{{"keys":[{{"kty":"oct","kid":"h","k":"{}"}}]}}"#,
            URL_SAFE_NO_PAD.encode(k64)
        );
        let set = KeySet::from_jwks_json(doc.as_bytes()).unwrap();
        let hashes = [
            (Algorithm::HS256, hmac::HMAC_SHA256),
            (Algorithm::HS384, hmac::HMAC_SHA384),
            (Algorithm::HS512, hmac::HMAC_SHA512),
        ];
        for (signed_as, hash) in hashes {
            let tag = hmac::sign(&hmac::Key::new(hash, &k64), b"header.payload");
            for (checked_as, _) in hashes {
                let verified = set.verify(Some("h"), checked_as, b"header.payload", tag.as_ref());
                assert_eq!(
                    verified,
                    Ok(signed_as == checked_as),
                    "{signed_as} checked as {checked_as}"
                );
            }
        }
    }

    /// An EC JWK for `pair`'s public point (uncompressed: 0x04, x, y).
    fn ec_jwk(kid: &str, crv: &str, pair: &aws_lc_rs::signature::EcdsaKeyPair) -> String {
        use aws_lc_rs::signature::KeyPair as _;
        let point = pair.public_key().as_ref();
        let (x, y) = point[1..].split_at((point.len() - 1) / 2);
        let (x, y) = (URL_SAFE_NO_PAD.encode(x), URL_SAFE_NO_PAD.encode(y));
        format!(r#"{{"kty":"EC","crv":"{crv}","kid":"{kid}","x":"{x}","y":"{y}"}}"#)
    }

    #[test]
    fn each_ec_curve_checks_its_own_signatures_and_its_coordinates_lengths() {
        use aws_lc_rs::signature::{
            ECDSA_P256_SHA256_FIXED_SIGNING, ECDSA_P384_SHA384_FIXED_SIGNING, EcdsaKeyPair,
        };
        let rng = aws_lc_rs::rand::SystemRandom::new();
        let pair = |alg| {
            let pkcs8 = EcdsaKeyPair::generate_pkcs8(alg, &rng).unwrap();
            EcdsaKeyPair::from_pkcs8(alg, pkcs8.as_ref()).unwrap()
        };
        let (p256, p384) = (
            pair(&ECDSA_P256_SHA256_FIXED_SIGNING),
            pair(&ECDSA_P384_SHA384_FIXED_SIGNING),
        );
        let doc = format!(
            r#"{{"keys":[{},{}]}}"#,
            ec_jwk("p256", "P-256", &p256),
            ec_jwk("p384", "P-384", &p384)
        );
        let set = KeySet::from_jwks_json(doc.as_bytes()).unwrap();
        assert_eq!((set.len(), set.is_empty()), (2, false));
        for (kid, alg, pair) in [
            ("p256", Algorithm::ES256, &p256),
            ("p384", Algorithm::ES384, &p384),
        ] {
            let signature = pair.sign(&rng, b"header.payload").unwrap();
            assert_eq!(
                set.verify(Some(kid), alg, b"header.payload", signature.as_ref()),
                Ok(true),
                "{kid}"
            );
            assert_eq!(
                set.verify(Some(kid), alg, b"header.payloaD", signature.as_ref()),
                Ok(false),
                "{kid}"
            );
        }
        assert_eq!(
            set.verify(Some("p384"), Algorithm::ES256, b"m", &[0; 64])
                .err(),
            Some(Selection::KeyAlgMismatch)
        );
        // One coordinate of the wrong length is enough to refuse the key; so is a curve left unnamed.
        let p256_jwk = ec_jwk("k", "P-256", &p256);
        for (bad, reason) in [
            (p256_jwk.replace(r#""y":""#, r#""y":"AAAA"#), "wrong length"),
            (p256_jwk.replace(r#""crv":"P-256","#, ""), "no crv"),
            (r#"{"kty":"OKP","kid":"k","x":"AAAA"}"#.to_owned(), "no crv"),
        ] {
            let doc = format!(r#"{{"keys":[{bad}]}}"#);
            let err = KeySet::from_jwks_json(doc.as_bytes())
                .unwrap_err()
                .to_string();
            assert!(err.contains(reason), "{bad}: {err}");
        }
    }

    #[test]
    fn an_empty_set_says_so_and_a_document_shows_no_key_material() {
        let empty = KeySet::empty();
        assert_eq!((empty.len(), empty.is_empty()), (0, true));
        let one =
            KeySet::from_jwks_json(format!(r#"{{"keys":[{}]}}"#, oct("a", "")).as_bytes()).unwrap();
        assert_eq!((one.len(), one.is_empty()), (1, false));
        let doc = JwksDocument::new(format!(r#"{{"keys":[{}]}}"#, oct("a", "")))
            .with_max_age(Duration::from_secs(90));
        let debug = format!("{doc:?}");
        assert!(
            debug.contains("JwksDocument") && debug.contains("90"),
            "{debug}"
        );
        assert!(!debug.contains(SECRET_32), "{debug}");
    }

    #[test]
    fn a_source_describes_itself_by_default_without_a_secret() {
        #[derive(Debug)]
        struct Vault;
        impl JwksSource for Vault {
            fn fetch(&self) -> JwksFetch<'_> {
                Box::pin(async { Ok(JwksDocument::new(b"{\"keys\":[]}".to_vec())) })
            }
        }
        assert_eq!(Vault.describe(), "a refreshable JWKS source");
    }
}
