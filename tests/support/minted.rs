//! A real JWT for tests that need one: a fresh ES256 key, a token it signed, and an authenticator trusting it.

use std::time::Duration;

use scopegate::credential::jwt::{
    Algorithm, JwtAuthenticator, KeySet, MintRequest, SigningKey, TokenIssuer,
};
use scopegate::policy::ScopeSet;

/// An authenticator of `iss`'s tokens for the audience `aud`, trusting a fresh ES256 key (`kid` "k1"), and a token
/// that key signed for `subject` with `scopes`, valid for an hour.
pub(crate) fn minted(
    iss: &str,
    aud: &str,
    subject: &str,
    scopes: &[&str],
) -> (JwtAuthenticator, String) {
    let pem = rcgen::KeyPair::generate().unwrap().serialize_pem();
    let key = SigningKey::from_pem(pem.as_bytes()).unwrap();
    let issuer = TokenIssuer::new(key, "k1", iss, aud);
    let scopes = ScopeSet::parse(scopes.iter().copied()).unwrap();
    let token = issuer
        .issue(&MintRequest::new(
            subject,
            scopes,
            Duration::from_secs(3600),
        ))
        .unwrap();
    let authenticator = JwtAuthenticator::builder()
        .algorithms([Algorithm::ES256])
        .key_set(KeySet::from_jwks_json(issuer.jwks_json().as_bytes()).unwrap())
        .issuer(iss)
        .audience(aud)
        .build()
        .unwrap();
    (authenticator, token.expose_str().unwrap().to_owned())
}
