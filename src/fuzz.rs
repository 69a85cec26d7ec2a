//! Fuzz harnesses: each takes arbitrary bytes, drives one parser, and asserts its invariants (a violated invariant
//! panics, which the fuzzer reports). The cargo-fuzz targets under `fuzz/` and the stable-toolchain corpus replay
//! test call these same functions, so a crash found once stays fixed. Compiled only with the hidden `__fuzz` feature,
//! never in a user's build.

use std::net::{IpAddr, Ipv4Addr};

use http::header::{HeaderMap, HeaderName, HeaderValue};

use crate::config::GateFile;
use crate::credential::extract_credential;
use crate::network::{CidrSet, ConnectionInfo, resolve_client};
use crate::policy::{Scope, ScopeSet, check_path};

/// Path canonicalisation: never panics; an accepted path has no dot segment, no inner empty segment, no encoded
/// delimiter.
pub fn path(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if check_path(text).is_ok() {
        assert!(text.starts_with('/'));
        let inner = &text[1..];
        let segments: Vec<&str> = inner.split('/').collect();
        for (i, seg) in segments.iter().enumerate() {
            assert!(
                *seg != "." && *seg != "..",
                "dot segment accepted: {text:?}"
            );
            assert!(
                !seg.is_empty() || i + 1 == segments.len(),
                "empty segment accepted: {text:?}"
            );
        }
        let lower = text.to_ascii_lowercase();
        for bad in ["%2e", "%2f", "%5c", "%25", "%00", "\\"] {
            assert!(!lower.contains(bad), "{bad} accepted: {text:?}");
        }
    }
}

fn header_lines(data: &[u8], names: &[HeaderName]) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for (i, line) in data.split(|b| *b == b'\n').enumerate() {
        if let Ok(value) = HeaderValue::from_bytes(line) {
            headers.append(names[i % names.len()].clone(), value);
        }
    }
    headers
}

/// Credential headers: never panics; an accepted credential is RFC 6750 `b64token` within the limit, and a request
/// with two credential lines is never accepted.
pub fn credential_headers(data: &[u8]) {
    let (selector, rest) = data.split_first().unwrap_or((&0, &[]));
    let key = HeaderName::from_static("x-api-key");
    let names = if selector & 1 == 0 {
        vec![http::header::AUTHORIZATION, key.clone()]
    } else {
        vec![http::header::AUTHORIZATION]
    };
    let headers = header_lines(rest, &names);
    let lines = headers.get_all(http::header::AUTHORIZATION).iter().count()
        + headers.get_all(&key).iter().count();
    if let Ok(Some(presented)) = extract_credential(&headers, &key, 256) {
        assert_eq!(lines, 1, "accepted with {lines} credential lines");
        let token = presented.secret().expose();
        assert!(!token.is_empty() && token.len() <= 256);
        assert!(token.iter().all(|b| b.is_ascii_graphic() && *b != b','));
    }
}

/// Forwarding headers from a trusted proxy: never panics; the resolved client is either unknown, the proxy, or an
/// address literally present in the headers.
pub fn forwarding_headers(data: &[u8]) {
    let names = [
        http::header::FORWARDED,
        HeaderName::from_static("x-forwarded-for"),
        HeaderName::from_static("x-forwarded-proto"),
    ];
    let headers = header_lines(data, &names);
    let proxy = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));
    let trusted: CidrSet = ["10.0.0.0/8".parse().unwrap_or_else(|_| unreachable!())]
        .into_iter()
        .collect();
    let resolved = resolve_client(
        &headers,
        &ConnectionInfo {
            peer: Some(proxy),
            tls: false,
        },
        &trusted,
    );
    if let Ok(facts) = resolved
        && let Some(ip) = facts.client_ip
        && ip != proxy
    {
        // The client must be an address literally present in the headers.
        let mut present = Vec::new();
        for value in headers.values().filter_map(|v| v.to_str().ok()) {
            // Quoted strings may escape any character (`\]`): compare the unescaped text.
            let value = value.replace('\\', "");
            for token in value.split(|c: char| ", ;=\"[]\t".contains(c)) {
                let host = match token.split_once(':') {
                    Some((h, _)) if token.matches(':').count() == 1 => h,
                    _ => token,
                };
                if let Ok(parsed) = host.parse::<IpAddr>() {
                    present.push(crate::network::canonical(parsed));
                }
            }
        }
        assert!(
            present.contains(&ip),
            "{ip} is not in the headers: {headers:?}"
        );
    }
    // An element without `for` is an unknown client and no TLS evidence, never skipped: a list
    // of elements none of which has `for` never resolves to an address, the proxy's included.
    if let Ok(facts) = resolved
        && headers.contains_key(http::header::FORWARDED)
    {
        let forwarded: String = headers
            .get_all(http::header::FORWARDED)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect::<Vec<_>>()
            .join(",")
            .to_ascii_lowercase();
        if forwarded.contains('=') && !forwarded.contains("for") {
            assert_eq!(facts.client_ip, None, "{headers:?}");
            if !headers.contains_key("x-forwarded-proto") {
                assert!(!facts.tls, "{headers:?}");
            }
        }
    }
    // From an untrusted peer nothing is read, and nothing is refused.
    let untrusted = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
    let facts = resolve_client(
        &headers,
        &ConnectionInfo {
            peer: Some(untrusted),
            tls: false,
        },
        &trusted,
    );
    assert!(matches!(facts, Ok(f) if f.client_ip == Some(untrusted) && !f.tls));
}

/// Scopes: never panics; a parsed concrete scope covers itself, and a parsed set covers each of its concrete scopes.
pub fn scopes(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(scope) = Scope::parse(text) {
        if !scope.is_wildcard() {
            assert!(scope.covers(&scope));
        }
        assert_eq!(scope.as_str(), text);
    }
    if let Ok(set) = ScopeSet::parse_space_separated(text) {
        for s in set.iter().filter(|s| !s.is_wildcard()) {
            assert!(set.covers(s));
        }
        assert!(
            set.iter().all(|s| !s.is_superuser()),
            "a bare * parsed without the superuser option"
        );
    }
}

/// The gate file: never panics; every error is one line.
pub fn gate_file(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Err(e) = GateFile::from_toml_str(text) {
        assert!(!e.to_string().contains('\n'), "multi-line error: {e}");
    }
}

/// API keys: never panics; an accepted key has the exact documented shape; and a valid key with any one byte changed
/// is always refused (CRC32 catches every single-byte error).
pub fn api_key(data: &[u8]) {
    use std::sync::OnceLock;

    use crate::credential::api_key::{KeyFormat, Pepper, Peppers};
    static VALID: OnceLock<String> = OnceLock::new();
    let format = KeyFormat::default();
    if let Ok(text) = std::str::from_utf8(data)
        && let Some(parsed) = format.parse(text)
    {
        assert_eq!(text.len(), format.key_len());
        assert!(text.starts_with("sg_"));
        assert!(
            text[3..].bytes().all(|b| b.is_ascii_alphanumeric()),
            "{text:?}"
        );
        assert_eq!(parsed.id.as_str(), &text[3..19]);
    }
    let valid = VALID.get_or_init(|| {
        let pepper = Pepper::new(1, vec![7; 32]).unwrap_or_else(|_| unreachable!("32 bytes"));
        let (_, key, _) = format
            .generate(&Peppers::single(pepper))
            .unwrap_or_else(|_| unreachable!("OS RNG"));
        key.expose_str()
            .unwrap_or_else(|| unreachable!("keys are text"))
            .to_owned()
    });
    assert!(format.parse(valid).is_some());
    if let [position, flip, ..] = data
        && *flip != 0
    {
        let mut mutated = valid.clone().into_bytes();
        let at = usize::from(*position) % mutated.len();
        mutated[at] ^= flip;
        if let Ok(text) = std::str::from_utf8(&mutated) {
            assert!(
                format.parse(text).is_none(),
                "a one-byte change at {at} was accepted"
            );
        }
    }
}
