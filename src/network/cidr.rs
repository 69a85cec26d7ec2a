//! Networks (`addr/prefix`) and sets of them.
//!
//! ```
//! use scopegate::network::{Cidr, CidrSet, parse_ip};
//!
//! let office: CidrSet = ["10.0.0.0/8", "2001:db8::/32"].iter().map(|s| s.parse::<Cidr>()).collect::<Result<_, _>>().unwrap();
//! assert!(office.contains(parse_ip("10.1.2.3").unwrap()));
//! assert!(office.contains(parse_ip("::ffff:10.1.2.3").unwrap())); // IPv4-mapped is IPv4
//! assert!(!office.contains(parse_ip("192.0.2.1").unwrap()));
//!
//! // Host bits set is an error that says what was probably meant.
//! let err = "10.9.7.7/16".parse::<Cidr>().unwrap_err();
//! assert!(err.to_string().contains("10.9.0.0/16"));
//! ```

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use ipnetwork::{IpNetwork, Ipv4Network, Ipv6Network};
use prefix_trie::PrefixSet;

use super::ip::{IpLiteralError, parse_ip};

/// A network in strict `addr/prefix` form, with no host bits set. A bare address is a /32 or /128.
///
/// IPv4-mapped IPv6 networks (`::ffff:10.0.0.0/104`) are stored as the IPv4 network they cover (`10.0.0.0/8`).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cidr(IpNetwork);

/// Why a CIDR string was refused. The message names the value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CidrError {
    /// The address part is not a strict IP literal.
    #[error(
        "invalid network {value:?}: the address is not a strict IP literal (dotted decimal without leading zeros, or RFC 4291 IPv6)"
    )]
    Address {
        /// The refused value.
        value: String,
    },
    /// The prefix length is not a decimal number in range (netmask forms such as `/255.0.0.0` are refused too).
    #[error(
        "invalid network {value:?}: the prefix length must be a decimal number from 0 to {max} without leading zeros"
    )]
    Prefix {
        /// The refused value.
        value: String,
        /// The largest prefix length for this address family.
        max: u8,
    },
    /// Bits are set beyond the prefix length.
    #[error("invalid network {value:?}: host bits are set; did you mean {suggestion}?")]
    HostBits {
        /// The refused value.
        value: String,
        /// The network with the host bits cleared.
        suggestion: String,
    },
}

fn bounded(value: &str) -> String {
    value.chars().take(80).collect()
}

impl FromStr for Cidr {
    type Err = CidrError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (addr_text, prefix_text) = match text.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (text, None),
        };
        let addr = parse_ip(addr_text).map_err(|_: IpLiteralError| CidrError::Address {
            value: bounded(text),
        })?;
        let max: u8 = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix_text {
            None => max,
            Some(p) => parse_prefix(p, max).ok_or_else(|| CidrError::Prefix {
                value: bounded(text),
                max,
            })?,
        };
        let network = IpNetwork::new(addr, prefix).map_err(|_| CidrError::Prefix {
            value: bounded(text),
            max,
        })?;
        if network.network() != addr {
            return Err(CidrError::HostBits {
                value: bounded(text),
                suggestion: format!("{}/{}", network.network(), prefix),
            });
        }
        Ok(Cidr(canonical_network(network)))
    }
}

fn parse_prefix(text: &str, max: u8) -> Option<u8> {
    // Digits only (`u8::from_str` would take a leading '+'), no leading zero; a long run of digits fails the
    // `u8` parse after its fourth digit.
    let leading_zero = text.len() > 1 && text.starts_with('0');
    if text.is_empty() || leading_zero || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse::<u8>().ok().filter(|p| *p <= max)
}

/// `::ffff:a.b.c.d/(96+n)` is `a.b.c.d/n`; a shorter IPv6 prefix covers more than mapped space and stays IPv6.
fn canonical_network(network: IpNetwork) -> IpNetwork {
    if let IpNetwork::V6(v6) = network
        && v6.prefix() >= 96
        && let Some(v4) = v6.network().to_ipv4_mapped()
        && let Ok(n) = Ipv4Network::new(v4, v6.prefix() - 96)
    {
        return IpNetwork::V4(n);
    }
    network
}

impl Cidr {
    /// The network as an `ipnetwork` value (canonical: IPv4-mapped networks are IPv4).
    pub fn network(&self) -> IpNetwork {
        self.0
    }

    /// Whether the (canonicalised) address is inside this network.
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.0.contains(super::ip::canonical(ip))
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.0.network(), self.0.prefix())
    }
}

impl fmt::Debug for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Cidr({self})")
    }
}

impl serde::Serialize for Cidr {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Cidr {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// A set of networks answering "is this address inside any of them?" in time independent of the set's size
/// (a prefix trie per address family).
///
/// An empty set contains no address. IPv4-mapped addresses are looked up as IPv4; `0.0.0.0/0` covers every IPv4
/// address and no IPv6 one, `::/0` the reverse.
#[derive(Clone, Default)]
pub struct CidrSet {
    v4: PrefixSet<Ipv4Network>,
    v6: PrefixSet<Ipv6Network>,
    listed: Vec<Cidr>,
}

impl CidrSet {
    /// An empty set (contains nothing).
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a network.
    pub fn insert(&mut self, cidr: Cidr) {
        let added = match cidr.0 {
            IpNetwork::V4(n) => self.v4.insert(n),
            IpNetwork::V6(n) => self.v6.insert(n),
        };
        if added {
            self.listed.push(cidr);
        }
    }

    /// Whether the address (canonicalised) is inside one of the networks.
    #[inline]
    pub fn contains(&self, ip: IpAddr) -> bool {
        // No trusted proxies, the common case: no trie walk.
        if self.is_empty() {
            return false;
        }
        match super::ip::canonical(ip) {
            IpAddr::V4(a) => self.v4.get_spm(&host_v4(a)).is_some(),
            IpAddr::V6(a) => self.v6.get_spm(&host_v6(a)).is_some(),
        }
    }

    /// The networks, in insertion order, without duplicates.
    pub fn networks(&self) -> &[Cidr] {
        &self.listed
    }

    /// Number of networks.
    pub fn len(&self) -> usize {
        self.listed.len()
    }

    /// Whether the set has no network (and so contains no address).
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.listed.is_empty()
    }
}

fn host_v4(a: Ipv4Addr) -> Ipv4Network {
    // A /32 is always a valid prefix length.
    Ipv4Network::new(a, 32).unwrap_or_else(|_| unreachable!("/32 is valid"))
}

fn host_v6(a: Ipv6Addr) -> Ipv6Network {
    Ipv6Network::new(a, 128).unwrap_or_else(|_| unreachable!("/128 is valid"))
}

impl FromIterator<Cidr> for CidrSet {
    fn from_iter<I: IntoIterator<Item = Cidr>>(iter: I) -> Self {
        let mut set = CidrSet::new();
        for c in iter {
            set.insert(c);
        }
        set
    }
}

impl fmt::Debug for CidrSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.listed.iter().map(ToString::to_string))
            .finish()
    }
}

impl PartialEq for CidrSet {
    fn eq(&self, other: &Self) -> bool {
        let mut a = self.listed.clone();
        let mut b = other.listed.clone();
        a.sort_by_key(ToString::to_string);
        b.sort_by_key(ToString::to_string);
        a == b
    }
}

impl Eq for CidrSet {}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        parse_ip(s).unwrap()
    }

    fn set(items: &[&str]) -> CidrSet {
        items.iter().map(|s| s.parse::<Cidr>().unwrap()).collect()
    }

    #[test]
    fn parses_strict_forms() {
        assert_eq!(
            "10.0.0.0/8".parse::<Cidr>().unwrap().to_string(),
            "10.0.0.0/8"
        );
        assert_eq!(
            "10.1.2.3".parse::<Cidr>().unwrap().to_string(),
            "10.1.2.3/32"
        );
        assert_eq!(
            "2001:db8::/32".parse::<Cidr>().unwrap().to_string(),
            "2001:db8::/32"
        );
        assert_eq!("::1".parse::<Cidr>().unwrap().to_string(), "::1/128");
        assert_eq!(
            "0.0.0.0/0".parse::<Cidr>().unwrap().to_string(),
            "0.0.0.0/0"
        );
    }

    #[test]
    fn refuses_loose_forms_naming_the_value() {
        for bad in [
            "10.0.0.0/255.0.0.0",
            "10.0.0.0/08",
            "10.0.0.0/33",
            "::/129",
            "010.0.0.0/8",
            "10.0.0/8",
            "10.0.0.0/",
            "10.0.0.0/-1",
            "10.0.0.0/+8",
            "fe80::%eth0/64",
            "",
            "/8",
        ] {
            let err = bad.parse::<Cidr>().unwrap_err();
            assert!(
                err.to_string().contains(&format!("{bad:?}")),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn a_set_reports_what_it_holds() {
        let empty = CidrSet::new();
        assert!(empty.is_empty());
        assert_eq!(empty.len(), 0);
        assert!(empty.networks().is_empty());
        assert!(!empty.contains(ip("10.0.0.1")));
        let two = set(&["10.0.0.0/8", "2001:db8::/32"]);
        assert!(!two.is_empty());
        assert_eq!(two.len(), 2);
        let listed: Vec<String> = two.networks().iter().map(ToString::to_string).collect();
        assert_eq!(listed, ["10.0.0.0/8", "2001:db8::/32"]);
        assert_eq!(format!("{two:?}"), r#"["10.0.0.0/8", "2001:db8::/32"]"#);
        assert_eq!(
            format!("{:?}", "10.0.0.0/8".parse::<Cidr>().unwrap()),
            "Cidr(10.0.0.0/8)"
        );
        // Equal whatever the order; unequal with a network more or less.
        assert_eq!(two, set(&["2001:db8::/32", "10.0.0.0/8"]));
        assert_ne!(two, set(&["10.0.0.0/8"]));
        assert_ne!(two, empty);
        assert_eq!(empty, CidrSet::new());
    }

    #[test]
    fn host_bits_are_an_error_with_a_suggestion() {
        let err = "10.9.7.7/16".parse::<Cidr>().unwrap_err();
        assert_eq!(
            err,
            CidrError::HostBits {
                value: "10.9.7.7/16".into(),
                suggestion: "10.9.0.0/16".into()
            }
        );
    }

    #[test]
    fn mapped_networks_are_ipv4() {
        assert_eq!(
            "::ffff:10.0.0.0/104".parse::<Cidr>().unwrap().to_string(),
            "10.0.0.0/8"
        );
        assert_eq!(
            "::ffff:0:0/96".parse::<Cidr>().unwrap().to_string(),
            "0.0.0.0/0"
        );
        // IPv4-compatible stays IPv6.
        assert!(
            "::10.0.0.0/104"
                .parse::<Cidr>()
                .unwrap()
                .network()
                .is_ipv6()
        );
    }

    #[test]
    fn membership_inside_and_outside() {
        let s = set(&["10.0.0.0/8", "2001:db8::/32"]);
        assert!(s.contains(ip("10.255.0.1")));
        assert!(!s.contains(ip("11.0.0.1")));
        assert!(s.contains(ip("::ffff:10.0.0.1")));
        assert!(!s.contains(ip("::ffff:11.0.0.1")));
        assert!(s.contains(ip("2001:db8::1")));
        assert!(!s.contains(ip("2001:db9::1")));
        assert!(!s.contains(ip("::10.0.0.1")), "IPv4-compatible is not IPv4");
    }

    #[test]
    fn default_routes_do_not_cross_families() {
        let v4_all = set(&["0.0.0.0/0"]);
        assert!(v4_all.contains(ip("203.0.113.9")));
        assert!(v4_all.contains(ip("::ffff:203.0.113.9")));
        assert!(!v4_all.contains(ip("2001:db8::1")));
        let v6_all = set(&["::/0"]);
        assert!(v6_all.contains(ip("2001:db8::1")));
        assert!(!v6_all.contains(ip("203.0.113.9")));
        assert!(!v6_all.contains(ip("::ffff:203.0.113.9")));
    }

    #[test]
    fn empty_set_contains_nothing() {
        let s = CidrSet::new();
        assert!(!s.contains(ip("10.0.0.1")));
        assert!(!s.contains(ip("::1")));
    }

    #[test]
    fn large_sets_answer_like_a_linear_scan() {
        let nets: Vec<Cidr> = (0..2000u32)
            .map(|i| {
                Cidr(IpNetwork::V4(
                    Ipv4Network::new(Ipv4Addr::from(0x0a00_0000 + (i << 8)), 24).unwrap(),
                ))
            })
            .collect();
        let s: CidrSet = nets.iter().copied().collect();
        for probe in [
            0x0a00_0001u32,
            0x0a07_cf05,
            0x0a07_d001,
            0x0b00_0000,
            0x09ff_ffff,
        ] {
            let a = IpAddr::V4(Ipv4Addr::from(probe));
            assert_eq!(s.contains(a), nets.iter().any(|n| n.contains(a)), "{a}");
        }
    }
}
