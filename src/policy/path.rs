//! Path canonicalisation (decision step 2): ambiguous paths are refused before any route matching.
//!
//! Path-scoped authorization has a classic hole: the gate and the application read one path two ways. A gate that
//! matches `/public/../admin` against `/public/{*rest}` while the application normalises it to `/admin`; a gate that
//! matches `/admin%2Fusers` as one segment while a proxy decodes it into two; an `%2e%2e` that one layer decodes and
//! another does not (Istio CVE-2021-31920, Spring CVE-2022-22978, IIS overlong UTF-8). scopegate does not try to
//! guess which reading the application will take: it refuses every path that has more than one reading, and matches
//! the rest exactly as received, as axum's router does.
//!
//! Refused (400 `malformed_request`): a path not starting with `/`; an empty segment (`//`, but a trailing `/` is
//! significant and allowed); a `.` or `..` segment; a raw `\`; a raw or percent-encoded control byte (0x00–0x1F,
//! 0x7F); `%2E`, `%2F`, `%5C`, `%25` in any case; a `%` not followed by two hex digits; a segment that does not
//! decode to valid UTF-8 (overlong `%c0%ae`).
//!
//! ```
//! use scopegate::policy::check_path;
//!
//! assert!(check_path("/v1/tenants/acme/invoices/7").is_ok());
//! assert!(check_path("/v1/tenants/acme/../globex/invoices/7").is_err());
//! assert!(check_path("/v1/tenants/acme%2F..%2Fglobex").is_err());
//! ```

use std::borrow::Cow;
use std::fmt;

/// Why a path is ambiguous. The message is fixed and never repeats the path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PathError {
    /// The path does not start with `/`.
    #[error("the path does not start with '/'")]
    NotAbsolute,
    /// `//` inside the path.
    #[error("the path has an empty segment")]
    EmptySegment,
    /// A `.` or `..` segment.
    #[error("the path has a dot segment")]
    DotSegment,
    /// A raw backslash.
    #[error("the path has a backslash")]
    Backslash,
    /// A raw control byte or a byte outside the URI path characters.
    #[error("the path has a control or non-ASCII byte")]
    RawByte,
    /// `%` not followed by two hex digits.
    #[error("the path has an invalid percent-encoding")]
    BadPercent,
    /// `%2E`, `%2F`, `%5C`, `%25`, or an encoded control byte.
    #[error("the path percent-encodes a character that changes its meaning")]
    EncodedDelimiter,
    /// A segment that decodes to invalid UTF-8 (overlong forms included).
    #[error("the path decodes to invalid UTF-8")]
    InvalidUtf8,
}

impl PathError {
    /// The static sentence for audit events.
    pub(crate) fn detail(self) -> &'static str {
        match self {
            PathError::NotAbsolute => "path does not start with '/'",
            PathError::EmptySegment => "path has an empty segment",
            PathError::DotSegment => "path has a dot segment",
            PathError::Backslash => "path has a backslash",
            PathError::RawByte => "path has a control or non-ASCII byte",
            PathError::BadPercent => "path has an invalid percent-encoding",
            PathError::EncodedDelimiter => {
                "path percent-encodes '.', '/', '\\', '%' or a control byte"
            }
            PathError::InvalidUtf8 => "path decodes to invalid UTF-8",
        }
    }
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Checks that `path` (the path exactly as received, without the query) has one reading. See the module docs.
pub fn check_path(path: &str) -> Result<(), PathError> {
    let Some((&b'/', mut rest)) = path.as_bytes().split_first() else {
        return Err(PathError::NotAbsolute);
    };
    // One walk over the bytes, on a slice that shrinks at every step (no index arithmetic drives it: the walk always
    // ends). A byte-level finding is answered at once; a segment-level one (empty, dot, invalid UTF-8) is kept and
    // answered only when no byte of the whole path is refused, so that a path with several faults always gets the
    // same answer: the first byte-level one, else the first segment-level one.
    let mut segment_error = None;
    // The current segment: its first byte onwards, and whether it has a percent-escape.
    let mut segment = rest;
    let mut escaped = false;
    loop {
        let Some((&byte, tail)) = rest.split_first() else {
            // The last segment: empty after a trailing `/` (significant, as in axum), or the `/` path itself.
            return match segment_error {
                Some(error) => Err(error),
                None => check_segment(segment, escaped, true),
            };
        };
        match byte {
            b'/' => {
                if segment_error.is_none() {
                    let len = segment.len() - rest.len();
                    segment_error = check_segment(&segment[..len], escaped, false).err();
                }
                segment = tail;
                escaped = false;
            }
            b'\\' => return Err(PathError::Backslash),
            b if !(0x20..0x7f).contains(&b) => return Err(PathError::RawByte),
            b'%' => {
                let [hi, lo, after @ ..] = tail else {
                    return Err(PathError::BadPercent);
                };
                let (Some(hi), Some(lo)) = (hex(*hi), hex(*lo)) else {
                    return Err(PathError::BadPercent);
                };
                let decoded = hi << 4 | lo;
                if matches!(decoded, b'.' | b'/' | b'\\' | b'%')
                    || decoded < 0x20
                    || decoded == 0x7f
                {
                    return Err(PathError::EncodedDelimiter);
                }
                escaped = true;
                rest = after;
                continue;
            }
            _ => {}
        }
        rest = tail;
    }
}

/// One segment's checks, on bytes that passed the byte-level ones: not empty (unless it is the `last`), not a dot
/// segment, and (when it has an escape) valid UTF-8 once decoded.
fn check_segment(segment: &[u8], escaped: bool, last: bool) -> Result<(), PathError> {
    match segment {
        [] if last => Ok(()),
        [] => Err(PathError::EmptySegment),
        b"." | b".." => Err(PathError::DotSegment),
        _ if escaped
            && percent_encoding::percent_decode(segment)
                .decode_utf8()
                .is_err() =>
        {
            Err(PathError::InvalidUtf8)
        }
        _ => Ok(()),
    }
}

/// Percent-decodes one already-checked segment (a path parameter after matching). `None` when the result is not
/// valid UTF-8.
pub(crate) fn decode_segment(segment: &str) -> Option<Cow<'_, str>> {
    percent_encoding::percent_decode_str(segment)
        .decode_utf8()
        .ok()
}

/// A path that passed [`check_path`].
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) struct CheckedPath<'a>(&'a str);

impl<'a> CheckedPath<'a> {
    pub(crate) fn new(path: &'a str) -> Result<Self, PathError> {
        check_path(path).map(|()| CheckedPath(path))
    }

    pub(crate) fn as_str(self) -> &'a str {
        self.0
    }
}

impl fmt::Debug for CheckedPath<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_paths_pass() {
        for ok in [
            "/",
            "/a",
            "/a/",
            "/v1/tenants/acme/invoices/7",
            "/a/b;c=d",
            "/a/%20b",
            "/caf%C3%A9",
            "/a/.hidden",
            "/a/..b",
            "/a/b.",
            "/a/%41",
            "/a/:colon@at",
        ] {
            assert_eq!(check_path(ok), Ok(()), "{ok}");
        }
    }

    #[test]
    fn ambiguous_paths_are_refused() {
        let cases: &[(&str, PathError)] = &[
            ("", PathError::NotAbsolute),
            ("a/b", PathError::NotAbsolute),
            ("*", PathError::NotAbsolute),
            ("//a", PathError::EmptySegment),
            ("/a//b", PathError::EmptySegment),
            ("/a/./b", PathError::DotSegment),
            ("/a/../b", PathError::DotSegment),
            ("/..", PathError::DotSegment),
            ("/.", PathError::DotSegment),
            ("/a/..", PathError::DotSegment),
            ("/a\\b", PathError::Backslash),
            ("/a\0b", PathError::RawByte),
            ("/a\tb", PathError::RawByte),
            ("/a\u{7f}", PathError::RawByte),
            ("/caf\u{e9}", PathError::RawByte),
            ("/a/%2e%2e/b", PathError::EncodedDelimiter),
            ("/a/%2E%2E/b", PathError::EncodedDelimiter),
            ("/a/%2e/b", PathError::EncodedDelimiter),
            ("/a%2Fb", PathError::EncodedDelimiter),
            ("/a%2fb", PathError::EncodedDelimiter),
            ("/a%5Cb", PathError::EncodedDelimiter),
            ("/a%5cb", PathError::EncodedDelimiter),
            ("/a%00", PathError::EncodedDelimiter),
            ("/a%0a", PathError::EncodedDelimiter),
            ("/a%7F", PathError::EncodedDelimiter),
            ("/a%252e", PathError::EncodedDelimiter),
            ("/a%zz", PathError::BadPercent),
            ("/a%u002e", PathError::BadPercent),
            ("/a%", PathError::BadPercent),
            ("/a%2", PathError::BadPercent),
            // A harmless escape right before a forbidden one: the walk resumes just after each escape.
            ("/a%20%2F", PathError::EncodedDelimiter),
            ("/%41%2e%2e", PathError::EncodedDelimiter),
            ("/a%20%zz", PathError::BadPercent),
            ("/a/%c0%ae%c0%ae/b", PathError::InvalidUtf8),
            ("/a/%ff", PathError::InvalidUtf8),
        ];
        for (path, expected) in cases {
            assert_eq!(check_path(path), Err(*expected), "{path:?}");
        }
    }

    #[test]
    fn a_path_with_several_faults_gets_one_answer() {
        // A refused byte anywhere outranks a segment fault before it; among segment faults the first one answers.
        let cases: &[(&str, PathError)] = &[
            ("/../a\\b", PathError::Backslash),
            ("//a/%zz", PathError::BadPercent),
            ("/./a%2F", PathError::EncodedDelimiter),
            ("/a//b\t", PathError::RawByte),
            ("/./a//b", PathError::DotSegment),
            ("/a//./b", PathError::EmptySegment),
            ("/%ff/./b", PathError::InvalidUtf8),
            ("/../%ff", PathError::DotSegment),
            ("/a/%ff/", PathError::InvalidUtf8),
            ("/%ff//", PathError::InvalidUtf8),
        ];
        for (path, expected) in cases {
            assert_eq!(check_path(path), Err(*expected), "{path:?}");
        }
        // Their twins with the faults fixed.
        for ok in ["/a/b", "/x/a/%41", "/a/b/c/", "/%C3%A9/b/", "/%41/b"] {
            assert_eq!(check_path(ok), Ok(()), "{ok}");
        }
    }

    #[test]
    fn an_escape_is_decoded_in_its_own_segment_only() {
        // The escape in the first segment is valid UTF-8; the second segment has a bare byte 0xff only when decoded.
        assert_eq!(check_path("/%41/%ff"), Err(PathError::InvalidUtf8));
        assert_eq!(check_path("/%ff/a"), Err(PathError::InvalidUtf8));
        assert_eq!(check_path("/%C3%A9/a"), Ok(()));
    }

    #[test]
    fn escapes_side_by_side_are_each_checked() {
        // The allow twins of the cases above: harmless escapes back to back, at the end, and between bytes.
        for ok in ["/a%20%20", "/%41%42%43", "/a%20b%20c", "/x/%7E"] {
            assert_eq!(check_path(ok), Ok(()), "{ok}");
        }
    }

    #[test]
    fn each_refusal_says_what_it_refused() {
        let details = [
            (PathError::NotAbsolute, "path does not start with '/'"),
            (PathError::EmptySegment, "path has an empty segment"),
            (PathError::DotSegment, "path has a dot segment"),
            (PathError::Backslash, "path has a backslash"),
            (PathError::RawByte, "path has a control or non-ASCII byte"),
            (
                PathError::BadPercent,
                "path has an invalid percent-encoding",
            ),
            (
                PathError::EncodedDelimiter,
                "path percent-encodes '.', '/', '\\', '%' or a control byte",
            ),
            (PathError::InvalidUtf8, "path decodes to invalid UTF-8"),
        ];
        for (error, detail) in details {
            assert_eq!(error.detail(), detail);
        }
    }

    #[test]
    fn a_checked_path_is_the_path_itself() {
        let checked = CheckedPath::new("/v1/tenants/acme").unwrap();
        assert_eq!(checked.as_str(), "/v1/tenants/acme");
        assert_eq!(format!("{checked:?}"), "\"/v1/tenants/acme\"");
        // The deny twin: a path that fails the check never becomes one.
        assert_eq!(
            CheckedPath::new("/v1/../acme").unwrap_err(),
            PathError::DotSegment
        );
    }

    #[test]
    fn decoding_after_matching() {
        assert_eq!(decode_segment("acme%20corp").as_deref(), Some("acme corp"));
        assert_eq!(decode_segment("caf%C3%A9").as_deref(), Some("café"));
        assert_eq!(decode_segment("%ff"), None);
    }
}
