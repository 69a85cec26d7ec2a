//! The `Forwarded` header (RFC 7239) as a trusted proxy writes it: a list of elements, each a few `name=value`
//! parameters, where a value is a token or a quoted string. Client resolution (`proxy.rs`) walks what this parses.
//!
//! Bounded work: at most `MAX_FORWARDED_HOPS` elements and `MAX_FORWARDED_PARAMS` parameters per element, the text
//! split lazily, and duplicate parameters found in constant work per parameter. Any malformation (bad quoting, a
//! non-IP `for`, a repeated parameter, too many of either) is 400 `malformed_request`.

use std::net::IpAddr;

use http::HeaderMap;
use http::header::FORWARDED;

use super::ip::{canonical, parse_ip};
use super::proxy::MAX_FORWARDED_HOPS;
use crate::policy::{Denial, DenialKind};

/// The most parameters one `Forwarded` element may hold; more is refused as malformed. RFC 7239 defines four
/// (`for`, `by`, `host`, `proto`); the rest is room for extensions. It bounds the work per element.
pub(super) const MAX_FORWARDED_PARAMS: usize = 8;

/// A malformed forwarding header from a trusted proxy.
pub(super) fn malformed(detail: &'static str) -> Denial {
    Denial::new(DenialKind::MalformedRequest, detail)
}

/// A `for` node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Node {
    Ip(IpAddr),
    /// `unknown` or an obfuscated `_name`.
    Unknown,
}

/// One parsed `Forwarded` element.
#[derive(Debug, Default)]
pub(super) struct Element {
    pub(super) for_node: Option<Node>,
    pub(super) proto_https: bool,
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Splits `text` at `sep` outside quoted strings, lazily (a caller that stops early reads no further); the last
/// part is an `Err` when a quoted string is not terminated.
struct SplitOutsideQuotes<'a> {
    rest: Option<&'a str>,
    sep: u8,
}

fn split_outside_quotes(text: &str, sep: u8) -> SplitOutsideQuotes<'_> {
    SplitOutsideQuotes {
        rest: Some(text),
        sep,
    }
}

impl<'a> Iterator for SplitOutsideQuotes<'a> {
    type Item = Result<&'a str, Denial>;

    fn next(&mut self) -> Option<Self::Item> {
        let text = self.rest?;
        // One pass over the bytes, no index arithmetic: the walk always ends.
        let (mut quoted, mut escaped) = (false, false);
        for (i, &byte) in text.as_bytes().iter().enumerate() {
            if escaped {
                escaped = false;
                continue;
            }
            match byte {
                b'\\' if quoted => escaped = true,
                b'"' => quoted = !quoted,
                b if b == self.sep && !quoted => {
                    self.rest = text.get(i + 1..);
                    return Some(Ok(&text[..i]));
                }
                _ => {}
            }
        }
        self.rest = None;
        if quoted || escaped {
            return Some(Err(malformed(
                "Forwarded has an unterminated quoted string",
            )));
        }
        Some(Ok(text))
    }
}

/// A parameter value: a token, or a quoted string (unescaped).
fn param_value(raw: &str) -> Result<String, Denial> {
    if let Some(inner) = raw.strip_prefix('"') {
        let inner = inner
            .strip_suffix('"')
            .ok_or_else(|| malformed("Forwarded has bad quoting"))?;
        let mut out = String::with_capacity(inner.len());
        let mut chars = inner.chars();
        while let Some(c) = chars.next() {
            match c {
                '\\' => out.push(
                    chars
                        .next()
                        .ok_or_else(|| malformed("Forwarded has bad quoting"))?,
                ),
                '"' => return Err(malformed("Forwarded has bad quoting")),
                c => out.push(c),
            }
        }
        Ok(out)
    } else if !raw.is_empty() && raw.bytes().all(is_tchar) {
        Ok(raw.to_owned())
    } else {
        Err(malformed(
            "Forwarded parameter value is neither a token nor a quoted string",
        ))
    }
}

fn parse_port(port: &str) -> bool {
    !port.is_empty() && port.len() <= 5 && port.bytes().all(|b| b.is_ascii_digit())
}

fn is_obfuscated(text: &str) -> bool {
    text.len() > 1
        && text.starts_with('_')
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
}

/// RFC 7239 `node`: `IPv4[:port]`, `"[IPv6][:port]"`, `unknown`, or an obfuscated `_name`.
fn parse_node(value: &str) -> Result<Node, Denial> {
    let bad = || malformed("Forwarded `for` is not an IP node");
    let (host, port) = if let Some(rest) = value.strip_prefix('[') {
        let (v6, after) = rest.split_once(']').ok_or_else(bad)?;
        let ip = parse_ip(v6).map_err(|_| bad())?;
        if !ip.is_ipv6() {
            return Err(bad());
        }
        return match after {
            "" => Ok(Node::Ip(canonical(ip))),
            _ => match after.strip_prefix(':') {
                Some(p) if parse_port(p) || is_obfuscated(p) => Ok(Node::Ip(canonical(ip))),
                _ => Err(bad()),
            },
        };
    } else {
        match value.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (value, None),
        }
    };
    if let Some(p) = port
        && !(parse_port(p) || is_obfuscated(p))
    {
        return Err(bad());
    }
    if host.eq_ignore_ascii_case("unknown") || is_obfuscated(host) {
        return Ok(Node::Unknown);
    }
    let ip = parse_ip(host).map_err(|_| bad())?;
    if !ip.is_ipv4() {
        // An IPv6 node must be bracketed (and so quoted).
        return Err(bad());
    }
    Ok(Node::Ip(ip))
}

pub(super) fn parse_forwarded(headers: &HeaderMap) -> Result<Vec<Element>, Denial> {
    let mut elements = Vec::new();
    for value in headers.get_all(FORWARDED) {
        let text = value
            .to_str()
            .map_err(|_| malformed("Forwarded is not visible ASCII"))?;
        // A split of `text` has at most one piece more than `text` has bytes, and only when every byte is a comma (all
        // pieces empty, and skipped): taking `text.len()` pieces changes nothing, and bounds the loop by the input
        // even if the split stopped advancing.
        for raw_element in split_outside_quotes(text, b',').take(text.len()) {
            let raw_element = raw_element?.trim_matches([' ', '\t']);
            if raw_element.is_empty() {
                continue;
            }
            elements.push(parse_element(raw_element)?);
            if elements.len() > MAX_FORWARDED_HOPS {
                return Err(malformed("forwarding header lists too many hops"));
            }
        }
    }
    Ok(elements)
}

/// One element's parameters, with a duplicate check that costs the same for every parameter: one bit for each
/// parameter RFC 7239 defines, and a comparison with each earlier extension (at most [`MAX_FORWARDED_PARAMS`]).
fn parse_element(raw: &str) -> Result<Element, Denial> {
    const FOR: u8 = 1;
    const BY: u8 = 2;
    const HOST: u8 = 4;
    const PROTO: u8 = 8;
    let mut element = Element::default();
    let mut seen = 0u8;
    let mut extensions = [""; MAX_FORWARDED_PARAMS];
    let mut extension_count = 0;
    for (index, pair) in split_outside_quotes(raw, b';').enumerate() {
        if index == MAX_FORWARDED_PARAMS {
            return Err(malformed("Forwarded element has too many parameters"));
        }
        let pair = pair?.trim_matches([' ', '\t']);
        let (name, value) = pair
            .split_once('=')
            .ok_or_else(|| malformed("Forwarded pair lacks '='"))?;
        if name.is_empty() || !name.bytes().all(is_tchar) {
            return Err(malformed("Forwarded parameter name is not a token"));
        }
        let known = [("for", FOR), ("by", BY), ("host", HOST), ("proto", PROTO)]
            .into_iter()
            .find(|(known, _)| name.eq_ignore_ascii_case(known))
            .map(|(_, bit)| bit);
        let repeated = if let Some(bit) = known {
            let repeated = seen & bit != 0;
            seen |= bit;
            repeated
        } else {
            let earlier = &extensions[..extension_count];
            let repeated = earlier.iter().any(|e| e.eq_ignore_ascii_case(name));
            extensions[extension_count] = name;
            extension_count += 1;
            repeated
        };
        if repeated {
            return Err(malformed("Forwarded repeats a parameter within an element"));
        }
        let value = param_value(value)?;
        match known {
            Some(FOR) => element.for_node = Some(parse_node(&value)?),
            Some(PROTO) => element.proto_https = value.eq_ignore_ascii_case("https"),
            _ => {}
        }
    }
    Ok(element)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(text: &str, sep: u8) -> Vec<Result<&str, &'static str>> {
        // Bounded: a split that stops advancing fails the test instead of spinning.
        split_outside_quotes(text, sep)
            .take(64)
            .map(|part| part.map_err(|d| d.detail()))
            .collect()
    }

    #[test]
    fn separators_inside_quotes_do_not_split() {
        assert_eq!(
            split(r#"for="[::1]:80";proto=https,for=192.0.2.1"#, b','),
            [Ok(r#"for="[::1]:80";proto=https"#), Ok("for=192.0.2.1")]
        );
        // An escaped quote does not close the string: the comma after it is still inside.
        assert_eq!(
            split(r#"for="a\",b",for=c"#, b','),
            [Ok(r#"for="a\",b""#), Ok("for=c")]
        );
        // An escaped backslash does not escape the closing quote.
        assert_eq!(
            split(r#"for="a\\",for=c"#, b','),
            [Ok(r#"for="a\\""#), Ok("for=c")]
        );
        // Outside quotes a backslash is an ordinary byte.
        assert_eq!(split(r"a\,b", b','), [Ok(r"a\"), Ok("b")]);
        assert_eq!(split("a;b;;c", b';'), [Ok("a"), Ok("b"), Ok(""), Ok("c")]);
    }

    #[test]
    fn an_unterminated_quote_is_refused() {
        for bad in [r#"for="a"#, r#"for="a\""#, r#"for="a\"#, r#"a,for="b"#] {
            let parts = split(bad, b',');
            assert_eq!(
                parts.last(),
                Some(&Err("Forwarded has an unterminated quoted string")),
                "{bad}"
            );
        }
        // The twin: the same strings closed.
        for ok in [r#"for="a""#, r#"for="a\"""#, r#"a,for="b""#] {
            assert!(split(ok, b',').iter().all(Result::is_ok), "{ok}");
        }
    }

    #[test]
    fn nodes_ports_and_obfuscated_names() {
        let v6 = "2001:db8::1".parse::<IpAddr>().unwrap();
        let v4 = "192.0.2.1".parse::<IpAddr>().unwrap();
        let accepted = [
            ("_a", Node::Unknown),
            ("_hidden.Proxy-7_x", Node::Unknown),
            ("unknown", Node::Unknown),
            ("UNKNOWN:_p", Node::Unknown),
            ("192.0.2.1", Node::Ip(v4)),
            ("192.0.2.1:8080", Node::Ip(v4)),
            ("192.0.2.1:99999", Node::Ip(v4)),
            ("192.0.2.1:_port", Node::Ip(v4)),
            ("[2001:db8::1]", Node::Ip(v6)),
            ("[2001:db8::1]:443", Node::Ip(v6)),
            ("[2001:db8::1]:_p", Node::Ip(v6)),
        ];
        for (text, node) in accepted {
            assert_eq!(parse_node(text).ok(), Some(node), "{text}");
        }
        for text in [
            "_",
            "a_",
            "_a/b",
            "_a b",
            "_a:b",
            "192.0.2.1:",
            "192.0.2.1:123456",
            "192.0.2.1:x",
            "192.0.2.1:_",
            "2001:db8::1",
            "[2001:db8::1]:",
            "[2001:db8::1]:x",
            "[2001:db8::1]:_",
            "[2001:db8::1]x",
            "[192.0.2.1]",
        ] {
            assert!(parse_node(text).is_err(), "{text}");
        }
    }
}
