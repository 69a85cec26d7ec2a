//! Strict IP literals.
//!
//! Only the canonical text forms are accepted: dotted decimal IPv4 with exactly four decimal octets and no leading
//! zeros, and RFC 4291 IPv6 text without a zone id or a prefix length. Everything else — `010.9.0.1`, `0x0a.9.0.1`,
//! `10.9.1`, `168361985`, `fe80::1%eth0` — is an error, because lenient parsers disagree on what such strings mean
//! (CVE-2021-29921: octal octets read as decimal by one parser and octal by another).
//!
//! IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`, and nothing else) are the IPv4 address they carry: every IP that
//! takes part in a decision passes through [`canonical`].
//!
//! ```
//! use std::net::IpAddr;
//! use scopegate::network::{canonical, parse_ip};
//!
//! assert_eq!(parse_ip("10.9.0.1").unwrap(), "10.9.0.1".parse::<IpAddr>().unwrap());
//! assert!(parse_ip("010.9.0.1").is_err());
//! assert_eq!(canonical(parse_ip("::ffff:10.9.0.1").unwrap()), parse_ip("10.9.0.1").unwrap());
//! // IPv4-compatible addresses are IPv6 and stay IPv6.
//! assert!(canonical(parse_ip("::10.9.0.1").unwrap()).is_ipv6());
//! ```

use std::net::IpAddr;

/// An IP literal that is not in the strict canonical form.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid IP address {value:?}: expected dotted-decimal IPv4 (no leading zeros) or RFC 4291 IPv6 text"
)]
pub struct IpLiteralError {
    value: String,
}

impl IpLiteralError {
    pub(crate) fn new(value: &str) -> Self {
        // Bound what an error can carry: the value may be attacker-written.
        Self {
            value: value.chars().take(64).collect(),
        }
    }
}

/// Parses an IP literal strictly (see the module docs). The result is not yet [`canonical`].
pub fn parse_ip(text: &str) -> Result<IpAddr, IpLiteralError> {
    // The standard library's parsers are already strict: four decimal octets without leading zeros, no zone ids, no
    // shorthand forms. We only bound the length and refuse surrounding whitespace explicitly.
    if text.is_empty() || text.len() > 45 || text.bytes().any(|b| b.is_ascii_whitespace()) {
        return Err(IpLiteralError::new(text));
    }
    text.parse::<IpAddr>()
        .map_err(|_| IpLiteralError::new(text))
}

/// The address as it takes part in decisions: an IPv4-mapped IPv6 address (`::ffff:0:0/96`) becomes its IPv4
/// address; every other address is returned unchanged (IPv4-compatible, 6to4, NAT64 and Teredo stay IPv6).
#[inline]
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        },
        v4 @ IpAddr::V4(_) => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_canonical_literals() {
        for ok in [
            "10.9.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "::1",
            "2001:db8::7",
            "::ffff:10.0.0.1",
            "fe80::1",
        ] {
            assert!(parse_ip(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn refuses_ambiguous_literals() {
        for bad in [
            "010.9.0.1",
            "0x0a.9.0.1",
            "10.9.1",
            "168361985",
            "10.9.0.1 ",
            " 10.9.0.1",
            "10.9.0.256",
            "fe80::1%eth0",
            "10.0.0.0/8",
            "::ffff:010.0.0.1",
            "",
            "[::1]",
            "1.2.3.4:80",
        ] {
            assert!(parse_ip(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_longest_literal_fits_the_bound() {
        // 45 characters: the longest IPv6 text there is. The bound refuses long input before parsing, never a
        // real address.
        let longest = "ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255";
        assert_eq!(longest.len(), 45);
        assert!(parse_ip(longest).is_ok());
        // The deny twin: one character more is refused (a leading zero the parser would take as a fifth digit).
        let longer = "0ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255";
        assert_eq!(longer.len(), 46);
        assert!(parse_ip(longer).is_err());
    }

    #[test]
    fn only_mapped_addresses_become_ipv4() {
        let mapped = canonical(parse_ip("::ffff:10.0.0.1").unwrap());
        assert_eq!(mapped, parse_ip("10.0.0.1").unwrap());
        for stays_v6 in [
            "::10.0.0.1",
            "2002:a00:1::",
            "64:ff9b::a00:1",
            "2001:0:a00:1::",
            "::1",
        ] {
            assert!(
                canonical(parse_ip(stays_v6).unwrap()).is_ipv6(),
                "{stays_v6}"
            );
        }
    }
}
