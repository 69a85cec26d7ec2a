//! Credential extraction (decision step 5): exactly one credential, from `Authorization: Bearer …` or the
//! configured API-key header — never from the query string, cookies or `Proxy-Authorization`.
//!
//! Crate-private: the gate runs it at step 5; the layer's tests and the `credential_headers` fuzz target drive it.

use std::fmt;

use http::header::{AUTHORIZATION, HeaderMap, HeaderName, HeaderValue};

use crate::policy::Denial;
use crate::secret::SecretRef;

/// Default maximum credential length: 8 KiB.
pub const DEFAULT_MAX_CREDENTIAL_LEN: usize = 8 * 1024;

/// Where a credential was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub(crate) enum CredentialSource {
    /// `Authorization: Bearer <token>` (a JWT, or an API key).
    Authorization,
    /// The configured API-key header.
    KeyHeader,
}

impl CredentialSource {
    /// The credential header a header line's `name` is, if it is one (the builder refuses `authorization` as the
    /// API-key header, so at most one matches).
    #[inline]
    pub(crate) fn of(name: &HeaderName, key_header: &HeaderName) -> Option<Self> {
        if name == AUTHORIZATION {
            Some(CredentialSource::Authorization)
        } else if name == key_header {
            Some(CredentialSource::KeyHeader)
        } else {
            None
        }
    }

    /// The header this source is, for a gate whose API-key header is `key_header`.
    #[inline]
    pub(crate) fn name(self, key_header: &HeaderName) -> &HeaderName {
        match self {
            CredentialSource::Authorization => &AUTHORIZATION,
            CredentialSource::KeyHeader => key_header,
        }
    }
}

/// A credential as presented: where it came from, and the secret text (already checked to be RFC 6750
/// `b64token` characters within the length limit), borrowed from the header it arrived in.
#[derive(Clone, Copy)]
pub(crate) struct PresentedCredential<'a> {
    source: CredentialSource,
    secret: SecretRef<'a>,
    /// The secret has a `.` (noted by the grammar check, which reads every byte anyway).
    dotted: bool,
}

impl<'a> PresentedCredential<'a> {
    /// Where it was found.
    #[inline]
    pub(crate) fn source(&self) -> CredentialSource {
        self.source
    }

    /// The credential itself.
    #[inline]
    pub(crate) fn secret(&self) -> SecretRef<'a> {
        self.secret
    }

    /// A bearer token with a `.`: shaped like a JWT (an API key has none), so the JWT authenticator's to judge.
    #[inline]
    pub(crate) fn is_jwt_shaped(&self) -> bool {
        self.source == CredentialSource::Authorization && self.dotted
    }
}

impl fmt::Debug for PresentedCredential<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PresentedCredential")
            .field("source", &self.source)
            .field("secret", &self.secret)
            .finish_non_exhaustive()
    }
}

/// RFC 6750 `b64token`: `1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="`. `Some(has a '.')` when
/// `token` is one, `None` when not.
#[allow(clippy::needless_bitwise_bool)] // branch-free on purpose: the fold vectorises
fn b64token(token: &[u8]) -> Option<bool> {
    let body_end = token.iter().rposition(|b| *b != b'=').map_or(0, |p| p + 1);
    // Every byte is checked with the same branch-free test and the results combined without stopping early, which
    // the compiler turns into vector instructions: a 500-byte token costs tens of nanoseconds, not hundreds. The
    // same pass notes a `.`, so that telling a JWT from an API key reads the token no second time.
    let (valid, dotted) = token[..body_end]
        .iter()
        .fold((true, false), |(all, dot), &b| {
            (all & is_b64token_byte(b), dot | (b == b'.'))
        });
    (body_end > 0 && valid).then_some(dotted)
}

/// One `b64token` body byte, without branches: `| 0x20` folds upper-case letters onto lower-case ones (and maps no
/// other byte into `a..=z`); `+ , - . /` and the digits are the one run `0x2b..=0x39`, less the comma.
#[inline]
#[allow(clippy::needless_bitwise_bool)] // branch-free on purpose: the loop above vectorises
fn is_b64token_byte(b: u8) -> bool {
    ((b | 0x20).wrapping_sub(b'a') < 26)
        | ((b.wrapping_sub(b'+') < 15) & (b != b','))
        | (b == b'_')
        | (b == b'~')
}

/// [`read_credential`] without a memory to offer tokens to: the fuzz harness's and the tests' view of step 5.
#[cfg(any(test, feature = "__fuzz"))]
pub(crate) fn extract_credential<'a>(
    headers: &'a HeaderMap,
    key_header: &HeaderName,
    max_len: usize,
) -> Result<Option<PresentedCredential<'a>>, Denial> {
    let never = |_: SecretRef<'a>| None::<std::convert::Infallible>;
    read_credential(headers, key_header, max_len, never)
        .map(|read| read.map(|(presented, _)| presented))
}

/// Finds the request's one credential.
///
/// - `Ok(None)`: no credential header at all (401 `missing_credential` on a protected route).
/// - `Err` 400 `malformed_request`: two field lines of either header, a comma-joined value, or both headers
///   (RFC 6750 §3.1 `invalid_request`).
/// - `Err` 401 `invalid_credential`: another scheme, an empty or overlong token, non-`b64token` bytes, trailing
///   garbage — decided here, before any store or crypto work.
///
/// One shortcut: a bearer token with a `.` (shaped like a JWT) is first offered to `recall`, after the length checks.
/// When `recall` answers, the credential comes back with its answer, and its characters are not checked: `recall`
/// must answer only for bytes that passed that check, or a stricter one, before (the JWT authenticator's memory of
/// tokens it verified: base64url segments and `.`s only). The check is the one pass over the whole token that the
/// gate makes; a remembered token needs none.
pub(crate) fn read_credential<'a, R>(
    headers: &'a HeaderMap,
    key_header: &HeaderName,
    max_len: usize,
    recall: impl FnOnce(SecretRef<'a>) -> Option<R>,
) -> Result<Option<(PresentedCredential<'a>, Option<R>)>, Denial> {
    let (authorization, api_key) = credential_lines(headers, key_header);
    if authorization.repeated || api_key.repeated {
        return Err(Denial::malformed_credentials(
            "a credential header appears more than once",
        ));
    }
    let (source, raw) = match (authorization.first, api_key.first) {
        (None, None) => return Ok(None),
        (Some(_), Some(_)) => {
            return Err(Denial::malformed_credentials(
                "both an Authorization and an API-key header",
            ));
        }
        (Some(v), None) => (CredentialSource::Authorization, v.as_bytes()),
        (None, Some(v)) => (CredentialSource::KeyHeader, v.as_bytes()),
    };
    // A comma-joined value is refused before any other finding about the value. It is looked for only when the value
    // is refused anyway: an accepted value has none (`Bearer`, spaces, then `b64token` bytes or a remembered token,
    // none of them a comma).
    presented(source, raw, max_len, recall)
        .map(Some)
        .map_err(|denial| {
            if raw.contains(&b',') {
                Denial::malformed_credentials("a comma-joined credential header")
            } else {
                denial
            }
        })
}

/// Up to this many header values, a walk over the request's header lines finds the two credential headers sooner
/// than two lookups by name: each lookup hashes its name's bytes (the API-key header's custom name costs the most),
/// while the walk compares names, standard ones by their index. Beyond it, the lookups (their cost does not grow
/// with the map).
pub(crate) const WALK_AT_MOST: usize = 16;

/// The field lines of one credential header: the first value, and whether there is another.
#[derive(Default)]
struct Lines<'a> {
    first: Option<&'a HeaderValue>,
    repeated: bool,
}

impl<'a> Lines<'a> {
    fn note(&mut self, value: &'a HeaderValue) {
        if self.first.is_some() {
            self.repeated = true;
        } else {
            self.first = Some(value);
        }
    }

    fn of(values: &http::header::GetAll<'a, HeaderValue>) -> Self {
        let mut values = values.iter();
        Lines {
            first: values.next(),
            repeated: values.next().is_some(),
        }
    }
}

/// The `Authorization` lines and the API-key header's lines: every value of each is counted, whichever way they are
/// found (see [`WALK_AT_MOST`]).
fn credential_lines<'a>(headers: &'a HeaderMap, key_header: &HeaderName) -> (Lines<'a>, Lines<'a>) {
    if headers.len() > WALK_AT_MOST {
        return (
            Lines::of(&headers.get_all(AUTHORIZATION)),
            Lines::of(&headers.get_all(key_header)),
        );
    }
    let (mut authorization, mut api_key) = (Lines::default(), Lines::default());
    for (name, value) in headers {
        match CredentialSource::of(name, key_header) {
            Some(CredentialSource::Authorization) => authorization.note(value),
            Some(CredentialSource::KeyHeader) => api_key.note(value),
            None => {}
        }
    }
    (authorization, api_key)
}

/// The credential in one header's value: the token after `Bearer` (for `Authorization`) or the whole value, checked.
fn presented<'a, R>(
    source: CredentialSource,
    raw: &'a [u8],
    max_len: usize,
    recall: impl FnOnce(SecretRef<'a>) -> Option<R>,
) -> Result<(PresentedCredential<'a>, Option<R>), Denial> {
    let token = match source {
        CredentialSource::KeyHeader => raw,
        CredentialSource::Authorization => {
            let scheme_len = raw.iter().position(|b| *b == b' ').ok_or_else(|| {
                Denial::invalid_credential("Authorization is not a Bearer credential")
            })?;
            if !raw[..scheme_len].eq_ignore_ascii_case(b"bearer") {
                return Err(Denial::invalid_credential(
                    "Authorization is not a Bearer credential",
                ));
            }
            let rest = &raw[scheme_len..];
            &rest[rest.iter().position(|b| *b != b' ').unwrap_or(rest.len())..]
        }
    };
    if token.is_empty() {
        return Err(Denial::invalid_credential("empty credential"));
    }
    if token.len() > max_len {
        return Err(Denial::invalid_credential(
            "credential longer than the maximum",
        ));
    }
    let secret = SecretRef::new(token);
    if source == CredentialSource::Authorization
        && token.contains(&b'.')
        && let Some(recalled) = recall(secret)
    {
        let presented = PresentedCredential {
            source,
            secret,
            dotted: true,
        };
        return Ok((presented, Some(recalled)));
    }
    let dotted = b64token(token).ok_or_else(|| {
        Denial::invalid_credential("credential has characters outside RFC 6750 b64token")
    })?;
    let presented = PresentedCredential {
        source,
        secret,
        dotted,
    };
    Ok((presented, None))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::DenialKind;

    fn key_header() -> HeaderName {
        HeaderName::from_static("x-api-key")
    }

    /// Step 5 on a request of these header lines, read twice: as they are (a map small enough to be walked), and
    /// among enough other lines to be looked up by name. Both ways must find the same.
    fn run(lines: &[(&str, &[u8])]) -> Result<Option<PresentedCredential<'static>>, Denial> {
        let read = |filler: usize| {
            let mut headers = HeaderMap::new();
            for i in 0..filler {
                headers.append(
                    HeaderName::from_bytes(format!("x-filler-{i}").as_bytes()).unwrap(),
                    HeaderValue::from_static("v"),
                );
            }
            for (name, value) in lines {
                headers.append(
                    HeaderName::from_bytes(name.as_bytes()).unwrap(),
                    HeaderValue::from_bytes(value).unwrap(),
                );
            }
            // Leaked: each test's few headers outlive the borrowed credential.
            let headers: &'static HeaderMap = Box::leak(Box::new(headers));
            extract_credential(headers, &key_header(), 64)
        };
        let walked = read(0);
        let looked_up = read(WALK_AT_MOST + 1);
        assert_eq!(kind(&walked), kind(&looked_up), "{lines:?}");
        if let (Ok(Some(a)), Ok(Some(b))) = (&walked, &looked_up) {
            assert_eq!(a.secret().expose(), b.secret().expose());
            assert_eq!(a.source(), b.source());
        }
        if let (Err(a), Err(b)) = (&walked, &looked_up) {
            assert_eq!(a.detail(), b.detail());
        }
        walked
    }

    fn kind(r: &Result<Option<PresentedCredential<'_>>, Denial>) -> &'static str {
        match r {
            Ok(Some(_)) => "credential",
            Ok(None) => "none",
            Err(d) => d.kind().as_str(),
        }
    }

    #[test]
    fn the_branch_free_byte_test_is_the_grammar() {
        // Every byte value, against the grammar written out: the allow set and everything else.
        for b in 0..=u8::MAX {
            let grammar =
                b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'+' | b'/');
            assert_eq!(is_b64token_byte(b), grammar, "byte {b:#04x}");
        }
        // Padding only at the end, and a body before it.
        assert!(b64token(b"abc==").is_some());
        assert!(b64token(b"==").is_none());
        assert!(b64token(b"a=b").is_none());
        assert!(b64token(b"").is_none());
        // A long token with one bad byte anywhere is refused (the test does not stop early, nor miss the end).
        let mut long = vec![b'A'; 600];
        assert_eq!(b64token(&long), Some(false));
        for at in [0, 299, 599] {
            long[at] = b'@';
            assert_eq!(b64token(&long), None, "bad byte at {at}");
            long[at] = b'.';
            assert_eq!(b64token(&long), Some(true), "a dot at {at}");
            long[at] = b'A';
        }
        // Padding is not a body byte, and no dot.
        assert_eq!(b64token(b"abc=="), Some(false));
    }

    #[test]
    fn a_dotted_bearer_token_is_jwt_shaped_and_nothing_else_is() {
        let jwt = run(&[("authorization", b"Bearer aa.bb.cc")])
            .unwrap()
            .unwrap();
        assert!(jwt.is_jwt_shaped());
        let undotted = run(&[("authorization", b"Bearer sg_abc")])
            .unwrap()
            .unwrap();
        assert!(!undotted.is_jwt_shaped());
        // The key header never carries a JWT, dotted or not.
        let key = run(&[("x-api-key", b"aa.bb.cc")]).unwrap().unwrap();
        assert!(!key.is_jwt_shaped());
    }

    #[test]
    fn a_comma_is_found_before_anything_else_about_the_value() {
        // Each value is refused for a second reason too (scheme, length, grammar): the comma decides the kind.
        let long = format!("Bearer a,{}", "a".repeat(70));
        for joined in [&b"Basic a,b"[..], b"Bearer a, b", b",", long.as_bytes()] {
            assert_eq!(
                kind(&run(&[("authorization", joined)])),
                "malformed_request",
                "{:?}",
                String::from_utf8_lossy(joined)
            );
        }
        assert_eq!(kind(&run(&[("x-api-key", b"sg_a,")])), "malformed_request");
        // Their twins without the comma are invalid credentials, or read.
        for single in [
            &b"Basic ab"[..],
            b"Bearer a b",
            long.replace(',', "").as_bytes(),
        ] {
            assert_eq!(
                kind(&run(&[("authorization", single)])),
                "invalid_credential"
            );
        }
        assert_eq!(kind(&run(&[("x-api-key", b"sg_a")])), "credential");
    }

    #[test]
    fn one_bearer_token_is_read() {
        for ok in [
            &b"Bearer abc.DEF-_~+/=="[..],
            b"bearer abc",
            b"BEARER   abc",
        ] {
            let got = run(&[("authorization", ok)]).unwrap().unwrap();
            assert_eq!(got.source(), CredentialSource::Authorization);
            assert!(!got.secret().is_empty());
        }
        let got = run(&[("authorization", b"Bearer  tok")]).unwrap().unwrap();
        assert_eq!(got.secret().expose(), b"tok");
    }

    #[test]
    fn one_api_key_header_is_read() {
        let got = run(&[("x-api-key", b"sg_abc123")]).unwrap().unwrap();
        assert_eq!(got.source(), CredentialSource::KeyHeader);
        assert_eq!(got.secret().expose(), b"sg_abc123");
    }

    #[test]
    fn nothing_presented_is_none() {
        assert_eq!(kind(&run(&[])), "none");
        // Other places are never read.
        assert_eq!(
            kind(&run(&[
                ("proxy-authorization", b"Bearer abc"),
                ("cookie", b"api_key=sg_abc")
            ])),
            "none"
        );
    }

    #[test]
    fn several_credentials_are_malformed_and_counted() {
        for lines in [
            &[
                ("authorization", &b"Bearer a"[..]),
                ("authorization", b"Bearer b"),
            ][..],
            &[("x-api-key", b"sg_a"), ("x-api-key", b"sg_b")],
            &[("authorization", b"Bearer a"), ("x-api-key", b"sg_b")],
            &[("authorization", b"Bearer a, Bearer b")],
            &[("x-api-key", b"sg_a,sg_b")],
        ] {
            let err = run(lines).unwrap_err();
            assert_eq!(err.kind(), DenialKind::MalformedRequest, "{lines:?}");
            assert!(err.is_about_credentials());
            assert!(err.counts_as_failed_auth());
        }
    }

    #[test]
    fn other_shapes_are_invalid() {
        for bad in [
            &b"Basic dXNlcjpwYXNz"[..],
            b"Bearer",
            b"Bearer ",
            b"Bearerabc",
            b"Token abc",
            b"Bearer abc def",
            b"Bearer abc ",
            b"Bearer ab\"c",
            b"Bearer =abc",
            b"Bearer abc=d",
            b"Bearer \xc3\xa9t\xc3\xa9",
            b"",
        ] {
            assert_eq!(
                kind(&run(&[("authorization", bad)])),
                "invalid_credential",
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        let long = format!("Bearer {}", "a".repeat(65));
        assert_eq!(
            kind(&run(&[("authorization", long.as_bytes())])),
            "invalid_credential"
        );
        let fits = format!("Bearer {}", "a".repeat(64));
        assert_eq!(
            kind(&run(&[("authorization", fits.as_bytes())])),
            "credential"
        );
        assert_eq!(
            kind(&run(&[("x-api-key", b"sg abc")])),
            "invalid_credential"
        );
    }

    #[test]
    fn debug_hides_the_secret() {
        let got = run(&[("authorization", b"Bearer topsecretvalue")])
            .unwrap()
            .unwrap();
        let shown = format!("{got:?}");
        assert!(!shown.contains("topsecretvalue"));
        // What it does show: where the credential came from.
        assert!(shown.contains("Authorization"), "{shown}");
        let key = run(&[("x-api-key", b"topsecretvalue")]).unwrap().unwrap();
        assert!(format!("{key:?}").contains("KeyHeader"));
    }

    #[test]
    fn the_default_bound_is_eight_kibibytes() {
        let mut headers = HeaderMap::new();
        let at_bound = "a".repeat(8 * 1024);
        headers.insert(key_header(), HeaderValue::from_str(&at_bound).unwrap());
        let got = extract_credential(&headers, &key_header(), DEFAULT_MAX_CREDENTIAL_LEN);
        assert_eq!(kind(&got), "credential");
        let past = format!("{at_bound}a");
        headers.insert(key_header(), HeaderValue::from_str(&past).unwrap());
        let got = extract_credential(&headers, &key_header(), DEFAULT_MAX_CREDENTIAL_LEN);
        assert_eq!(kind(&got), "invalid_credential");
    }

    #[test]
    fn only_a_dotted_bearer_token_within_the_bound_is_offered_to_recall() {
        use std::cell::RefCell;
        let read = |name: &str, value: &[u8]| {
            let mut headers = HeaderMap::new();
            headers.insert(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_bytes(value).unwrap(),
            );
            let offered = RefCell::new(Vec::new());
            // Remembers every token offered; answers for the ones starting with `known`.
            let recall = |token: SecretRef<'_>| {
                let bytes = token.expose().to_vec();
                let known = bytes.starts_with(b"known");
                offered.borrow_mut().push(String::from_utf8(bytes).unwrap());
                known.then_some("remembered")
            };
            let outcome = read_credential(&headers, &key_header(), 64, recall).map(|read| {
                read.map(|(presented, recalled)| (presented.is_jwt_shaped(), recalled))
            });
            (outcome.map_err(|d| d.detail()), offered.into_inner())
        };
        // Remembered: answered from memory, JWT-shaped, and the characters left unchecked (the recaller vouches
        // for them: `!` is outside `b64token`).
        let (got, offered) = read("authorization", b"Bearer known.a!b");
        assert_eq!(got, Ok(Some((true, Some("remembered")))));
        assert_eq!(offered, ["known.a!b"]);
        // Not remembered: checked as ever, accepted or refused by the grammar.
        let (got, offered) = read("authorization", b"Bearer other.a!b");
        assert_eq!(
            got,
            Err("credential has characters outside RFC 6750 b64token")
        );
        assert_eq!(offered, ["other.a!b"]);
        let (got, _) = read("authorization", b"Bearer other.ab");
        assert_eq!(got, Ok(Some((true, None))));
        // Never offered: a token without a dot, an API-key header (dots or not), an overlong or empty token.
        for (name, value) in [
            ("authorization", &b"Bearer knownab"[..]),
            ("x-api-key", b"known.ab"),
            (
                "authorization",
                &[b"Bearer known.".as_slice(), &[b'a'; 64]].concat(),
            ),
            ("authorization", b"Bearer "),
        ] {
            let (got, offered) = read(name, value);
            assert!(offered.is_empty(), "{name}: {value:?} was offered");
            assert_ne!(got, Ok(Some((true, Some("remembered")))));
        }
    }
}
