//! Who is the client, and did the request arrive over TLS? Judged from the connection, and from forwarding headers
//! only when the connection's peer is a trusted proxy.
//!
//! - The client is the connection's peer, unless the peer is in the trusted-proxy set. Then, if any `Forwarded` line
//!   is present, `Forwarded` alone is read, else `X-Forwarded-For` alone — never a mix. All field lines form one list,
//!   in order. The list is walked from the right, skipping trusted proxies; the first untrusted address is the
//!   client (if every address is trusted, the leftmost one). `for=unknown` and obfuscated names give an unknown
//!   client IP. A malformed forwarding header from a trusted peer is 400 `malformed_request`.
//! - TLS is proven by the connection, or — from a trusted peer only — by `X-Forwarded-Proto` whose every value is
//!   `https`, or by the `proto=https` of the `Forwarded` element that describes the resolved client hop. Nothing else
//!   counts (not `X-Forwarded-Ssl`, `Front-End-Https`, the `Host` port, an HTTP/2 `:scheme` or an absolute-form
//!   target: all client-written).

use std::net::IpAddr;

use http::HeaderMap;
use http::header::{FORWARDED, HeaderName};

use super::cidr::{Cidr, CidrSet};
use super::forwarded::{Node, malformed, parse_forwarded};
use super::ip::{canonical, parse_ip};
use crate::policy::Denial;

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");

/// The most list members read from one forwarding header; more is refused as malformed.
pub const MAX_FORWARDED_HOPS: usize = 64;

/// Facts about the connection a request arrived on, put into the request's extensions by the server's acceptor
/// (scopegate's `serve` helpers do). Only a server may insert it: nothing the client writes can. Without it, the
/// gate falls back to axum's `ConnectInfo<SocketAddr>` and tonic's connect info, and treats the connection as
/// plaintext from an unknown peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionInfo {
    /// The peer's address, when known.
    pub peer: Option<IpAddr>,
    /// Whether the connection is TLS (the handshake completed on it).
    pub tls: bool,
}

/// The resolved facts of a request's origin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ClientFacts {
    /// The client IP (canonical: IPv4-mapped addresses are IPv4), or `None` when unknown.
    pub(crate) client_ip: Option<IpAddr>,
    /// The connection's peer, when it is a trusted proxy whose headers were read (the audit event's `peer_ip`).
    pub(crate) peer_ip: Option<IpAddr>,
    /// Whether TLS is proven.
    pub(crate) tls: bool,
}

impl ClientFacts {
    /// The address the throttle counts failures against and locks out: the client, or, when it is unknown, the
    /// trusted proxy that forwarded the request (`None` when neither is known: the throttle then counts the request
    /// in one shared bucket). Lock-out checks and failure counts must use the same one.
    #[inline]
    pub(crate) fn throttle_ip(&self) -> Option<IpAddr> {
        self.client_ip.or(self.peer_ip)
    }

    /// For a request whose forwarding headers could not be read: the client is unknown, the peer is kept.
    pub(crate) fn unresolved(peer: Option<IpAddr>) -> Self {
        ClientFacts {
            client_ip: None,
            peer_ip: peer.map(canonical),
            tls: false,
        }
    }
}

/// A trusted-proxy network must not cover every address (`0.0.0.0/0`, `::/0`): every client would then be a proxy
/// whose forwarding headers are believed. The message says so.
pub(crate) fn check_trusted_proxy(cidr: &Cidr) -> Result<(), String> {
    if cidr.network().prefix() == 0 {
        Err(format!("{cidr} would make every client a trusted proxy"))
    } else {
        Ok(())
    }
}

/// Resolves the client IP and TLS evidence (see the module docs).
///
/// Inlined into the gate: the common case, a peer that is no trusted proxy, is a few register moves; the returned
/// facts written to memory by a call and read back at once by its caller cost more than that.
#[inline]
pub(crate) fn resolve_client(
    headers: &HeaderMap,
    connection: &ConnectionInfo,
    trusted: &CidrSet,
) -> Result<ClientFacts, Denial> {
    let peer = connection.peer.map(canonical);
    match peer.filter(|p| trusted.contains(*p)) {
        None => Ok(ClientFacts {
            client_ip: peer,
            peer_ip: None,
            tls: connection.tls,
        }),
        Some(peer_ip) => forwarded_client(headers, connection.tls, peer_ip, trusted),
    }
}

/// [`resolve_client`] for a peer that is a trusted proxy: its forwarding headers name the client.
fn forwarded_client(
    headers: &HeaderMap,
    connection_tls: bool,
    peer_ip: IpAddr,
    trusted: &CidrSet,
) -> Result<ClientFacts, Denial> {
    let xfp_https = x_forwarded_proto_is_https(headers)?;
    let (client_ip, hop_https) = if headers.contains_key(FORWARDED) {
        let elements = parse_forwarded(headers)?;
        // An element without `for` is an unknown client where the walk reaches it, and proves no TLS: it is never
        // skipped, or an element further left (which the client may have written) would become the client.
        walk(
            elements.iter().map(|e| match e.for_node {
                Some(node) => (node, e.proto_https),
                None => (Node::Unknown, false),
            }),
            peer_ip,
            trusted,
        )
    } else {
        let hops = parse_x_forwarded_for(headers)?;
        walk(
            hops.into_iter().map(|ip| (Node::Ip(ip), false)),
            peer_ip,
            trusted,
        )
    };
    Ok(ClientFacts {
        client_ip,
        peer_ip: Some(peer_ip),
        tls: connection_tls || xfp_https || hop_https,
    })
}

/// Walks `(node, proto_https)` hops from the right, skipping trusted proxies. No hop at all: the peer itself.
fn walk<I>(hops: I, peer: IpAddr, trusted: &CidrSet) -> (Option<IpAddr>, bool)
where
    I: DoubleEndedIterator<Item = (Node, bool)>,
{
    let mut leftmost = None;
    for (node, https) in hops.rev() {
        match node {
            Node::Ip(ip) if trusted.contains(ip) => leftmost = Some((Some(ip), https)),
            Node::Ip(ip) => return (Some(ip), https),
            Node::Unknown => return (None, https),
        }
    }
    leftmost.unwrap_or((Some(peer), false))
}

/// All field lines of a header as one list of trimmed, non-empty members.
fn list_members<'h>(headers: &'h HeaderMap, name: &HeaderName) -> Result<Vec<&'h str>, Denial> {
    let mut members = Vec::new();
    for value in headers.get_all(name) {
        let text = value
            .to_str()
            .map_err(|_| malformed("forwarding header is not visible ASCII"))?;
        members.extend(
            text.split(',')
                .map(|m| m.trim_matches([' ', '\t']))
                .filter(|m| !m.is_empty()),
        );
        if members.len() > MAX_FORWARDED_HOPS {
            return Err(malformed("forwarding header lists too many hops"));
        }
    }
    Ok(members)
}

fn parse_x_forwarded_for(headers: &HeaderMap) -> Result<Vec<IpAddr>, Denial> {
    list_members(headers, &X_FORWARDED_FOR)?
        .into_iter()
        .map(|m| {
            parse_ip(m)
                .map(canonical)
                .map_err(|_| malformed("X-Forwarded-For member is not a bare IP literal"))
        })
        .collect()
}

fn x_forwarded_proto_is_https(headers: &HeaderMap) -> Result<bool, Denial> {
    let members = list_members(headers, &X_FORWARDED_PROTO)?;
    Ok(!members.is_empty() && members.iter().all(|m| m.eq_ignore_ascii_case("https")))
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;
    use crate::network::Cidr;
    use crate::network::forwarded::MAX_FORWARDED_PARAMS;
    use crate::policy::DenialKind;

    fn trusted() -> CidrSet {
        ["10.0.0.0/8", "::1/128"]
            .iter()
            .map(|s| s.parse::<Cidr>().unwrap())
            .collect()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn run(peer: &str, tls: bool, lines: &[(&str, &str)]) -> Result<ClientFacts, Denial> {
        let mut headers = HeaderMap::new();
        for (n, v) in lines {
            headers.append(
                HeaderName::from_bytes(n.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        resolve_client(
            &headers,
            &ConnectionInfo {
                peer: Some(ip(peer)),
                tls,
            },
            &trusted(),
        )
    }

    #[test]
    fn untrusted_peers_cannot_forward_anything() {
        let facts = run(
            "198.51.100.9",
            false,
            &[
                ("x-forwarded-for", "10.1.1.1"),
                ("x-forwarded-proto", "https"),
                ("forwarded", "for=10.1.1.1;proto=https"),
                ("x-forwarded-ssl", "on"),
                ("front-end-https", "on"),
            ],
        )
        .unwrap();
        assert_eq!(facts.client_ip, Some(ip("198.51.100.9")));
        assert!(!facts.tls);
        assert_eq!(facts.peer_ip, None);
        // Even malformed headers from an untrusted peer are ignored, not refused.
        assert!(run("198.51.100.9", false, &[("x-forwarded-for", "not an ip")]).is_ok());
    }

    #[test]
    fn connection_tls_counts_for_everyone() {
        assert!(run("198.51.100.9", true, &[]).unwrap().tls);
    }

    #[test]
    fn xff_walks_from_the_right_skipping_trusted_hops() {
        let f = run(
            "10.0.0.1",
            false,
            &[("x-forwarded-for", "1.1.1.1, 203.0.113.7, 10.0.0.2")],
        )
        .unwrap();
        assert_eq!(
            f.client_ip,
            Some(ip("203.0.113.7")),
            "the spoofable leftmost entry is not the client"
        );
        assert_eq!(f.peer_ip, Some(ip("10.0.0.1")));
        // Several field lines are one list, in order.
        let f = run(
            "10.0.0.1",
            false,
            &[
                ("x-forwarded-for", "203.0.113.7"),
                ("x-forwarded-for", "10.0.0.2, ,"),
            ],
        )
        .unwrap();
        assert_eq!(f.client_ip, Some(ip("203.0.113.7")));
        // All trusted: the leftmost.
        let f = run(
            "10.0.0.1",
            false,
            &[("x-forwarded-for", "10.0.0.5, 10.0.0.2")],
        )
        .unwrap();
        assert_eq!(f.client_ip, Some(ip("10.0.0.5")));
        // Mapped addresses are IPv4.
        let f = run(
            "::ffff:10.0.0.1",
            false,
            &[("x-forwarded-for", "::ffff:203.0.113.7")],
        )
        .unwrap();
        assert_eq!(f.client_ip, Some(ip("203.0.113.7")));
        // No header: the proxy itself.
        assert_eq!(
            run("10.0.0.1", false, &[]).unwrap().client_ip,
            Some(ip("10.0.0.1"))
        );
    }

    #[test]
    fn xff_from_a_trusted_peer_must_be_strict() {
        for bad in [
            "203.0.113.7:80",
            "010.0.0.1",
            "[::1]",
            "203.0.113.7/32",
            "fe80::1%eth0",
            "unknown",
            "a",
        ] {
            let err = run("10.0.0.1", false, &[("x-forwarded-for", bad)]).unwrap_err();
            assert_eq!(err.kind(), DenialKind::MalformedRequest, "{bad}");
        }
    }

    #[test]
    fn forwarded_wins_and_is_never_mixed() {
        let f = run(
            "10.0.0.1",
            false,
            &[
                ("forwarded", "for=203.0.113.7;proto=https"),
                ("x-forwarded-for", "198.51.100.1"),
            ],
        )
        .unwrap();
        assert_eq!(f.client_ip, Some(ip("203.0.113.7")));
        assert!(f.tls);
    }

    #[test]
    fn forwarded_forms() {
        let cases: &[(&str, Option<&str>)] = &[
            ("for=203.0.113.7", Some("203.0.113.7")),
            ("For=\"203.0.113.7:8080\"", Some("203.0.113.7")),
            ("for=\"[2001:db8::7]:443\"", Some("2001:db8::7")),
            ("for=\"[2001:db8::7]\"", Some("2001:db8::7")),
            ("for=unknown", None),
            ("for=_hidden", None),
            ("for=203.0.113.7, for=10.0.0.2", Some("203.0.113.7")),
            (
                "for=203.0.113.7;by=\"x;y,z\", for=10.0.0.2",
                Some("203.0.113.7"),
            ),
            ("for=198.51.100.1, for=unknown, for=10.0.0.2", None),
        ];
        for (value, expected) in cases {
            let f = run("10.0.0.1", false, &[("forwarded", value)]).unwrap();
            assert_eq!(f.client_ip, expected.map(ip), "{value}");
        }
    }

    #[test]
    fn an_element_without_for_is_an_unknown_client_without_tls() {
        for value in [
            // The proxy's own element lacks `for`: the client-written element to its left is never believed.
            "for=203.0.113.7;proto=https, proto=https",
            "for=203.0.113.7;proto=https, by=10.0.0.2;proto=https",
            // A list of such elements never resolves to the proxy's own address.
            "proto=https",
            "proto=https, host=example.com",
            "by=10.0.0.2",
            // Behind trusted hops: the walk reaches it all the same.
            "for=203.0.113.7;proto=https, proto=https, for=10.0.0.2",
        ] {
            let f = run("10.0.0.1", false, &[("forwarded", value)]).unwrap();
            assert_eq!(f.client_ip, None, "{value}");
            assert!(!f.tls, "{value}: no TLS evidence");
            assert_eq!(f.peer_ip, Some(ip("10.0.0.1")), "{value}");
        }
        // The allowed twin: the same hop with its `for` is the client, with its TLS evidence.
        for value in [
            "for=198.51.100.1;proto=https, for=203.0.113.7;proto=https",
            "for=203.0.113.7;proto=https, for=10.0.0.2",
        ] {
            let f = run("10.0.0.1", false, &[("forwarded", value)]).unwrap();
            assert_eq!(f.client_ip, Some(ip("203.0.113.7")), "{value}");
            assert!(f.tls, "{value}");
        }
    }

    #[test]
    fn parameters_per_element_are_bounded_and_never_repeat() {
        let params = |n: usize| {
            let mut value = String::from("for=203.0.113.7");
            for i in 1..n {
                value = format!("{value};ext{i}=x");
            }
            value
        };
        let f = run(
            "10.0.0.1",
            false,
            &[("forwarded", &params(MAX_FORWARDED_PARAMS))],
        )
        .unwrap();
        assert_eq!(f.client_ip, Some(ip("203.0.113.7")));
        let err = run(
            "10.0.0.1",
            false,
            &[("forwarded", &params(MAX_FORWARDED_PARAMS + 1))],
        );
        assert_eq!(err.map_err(|d| d.kind()), Err(DenialKind::MalformedRequest));
        // Repeats are found whatever the case, among defined parameters and among extensions.
        for bad in [
            "for=203.0.113.7;FOR=198.51.100.1",
            "proto=https;for=203.0.113.7;Proto=http",
            "for=203.0.113.7;ext=1;by=x;EXT=2",
            "host=a;Host=b;for=203.0.113.7",
        ] {
            let err = run("10.0.0.1", false, &[("forwarded", bad)]);
            assert_eq!(
                err.map_err(|d| d.kind()),
                Err(DenialKind::MalformedRequest),
                "{bad}"
            );
        }
        // The allowed twin: distinct names, defined and extension, in any case.
        let f = run(
            "10.0.0.1",
            false,
            &[(
                "forwarded",
                "For=203.0.113.7;BY=x;host=h;Proto=https;ext=1;Ext2=2",
            )],
        )
        .unwrap();
        assert_eq!(f.client_ip, Some(ip("203.0.113.7")));
        assert!(f.tls);
    }

    #[test]
    fn malformed_forwarded_from_a_trusted_peer_is_refused() {
        for bad in [
            "for=203.0.113.7;for=198.51.100.1",
            "for=\"203.0.113.7",
            "for=2001:db8::7",
            "for=[2001:db8::7]",
            "for=\"[2001:db8::7\"",
            "for=\"[203.0.113.7]\"",
            "for=010.0.0.1",
            "for=\"203.0.113.7:x80\"",
            "for=hostname",
            "for",
            "=x",
            "for=\"a\"b\"",
            "for=203.0.113.7 ;proto=https x",
        ] {
            let err = run("10.0.0.1", false, &[("forwarded", bad)]);
            assert_eq!(
                err.map_err(|d| d.kind()),
                Err(DenialKind::MalformedRequest),
                "{bad}"
            );
        }
    }

    #[test]
    fn forwarded_proto_of_the_client_hop_only() {
        // The client hop says http, an inner proxy hop says https: not TLS.
        let f = run(
            "10.0.0.1",
            false,
            &[(
                "forwarded",
                "for=203.0.113.7;proto=http, for=10.0.0.2;proto=https",
            )],
        )
        .unwrap();
        assert!(!f.tls);
        let f = run(
            "10.0.0.1",
            false,
            &[(
                "forwarded",
                "for=203.0.113.7;proto=HTTPS, for=10.0.0.2;proto=http",
            )],
        )
        .unwrap();
        assert!(f.tls);
    }

    #[test]
    fn x_forwarded_proto_needs_every_value_https() {
        assert!(
            run("10.0.0.1", false, &[("x-forwarded-proto", "HTTPS")])
                .unwrap()
                .tls
        );
        assert!(
            run("10.0.0.1", false, &[("x-forwarded-proto", "https, https")])
                .unwrap()
                .tls
        );
        assert!(
            !run("10.0.0.1", false, &[("x-forwarded-proto", "https, http")])
                .unwrap()
                .tls
        );
        assert!(
            !run(
                "10.0.0.1",
                false,
                &[
                    ("x-forwarded-proto", "https"),
                    ("x-forwarded-proto", "http")
                ]
            )
            .unwrap()
            .tls
        );
        assert!(
            !run("10.0.0.1", false, &[("x-forwarded-proto", "")])
                .unwrap()
                .tls
        );
        for other in [
            "x-forwarded-ssl",
            "front-end-https",
            "x-forwarded-scheme",
            "x-url-scheme",
            "x-forwarded-port",
        ] {
            let value = if other == "x-forwarded-port" {
                "443"
            } else {
                "https"
            };
            assert!(
                !run("10.0.0.1", false, &[(other, value)]).unwrap().tls,
                "{other}"
            );
        }
    }

    #[test]
    fn a_forwarding_header_may_list_up_to_the_hop_bound() {
        for (name, sep, member) in [
            ("forwarded", ", ", "for=192.0.2.1"),
            ("x-forwarded-for", ", ", "192.0.2.1"),
        ] {
            let at_bound = vec![member; MAX_FORWARDED_HOPS].join(sep);
            let facts = run("10.0.0.1", true, &[(name, &at_bound)]);
            assert_eq!(facts.unwrap().client_ip, Some(ip("192.0.2.1")), "{name}");
            let over = vec![member; MAX_FORWARDED_HOPS + 1].join(sep);
            let denial = run("10.0.0.1", true, &[(name, &over)]).unwrap_err();
            assert_eq!(denial.kind(), DenialKind::MalformedRequest, "{name}");
            assert_eq!(denial.detail(), "forwarding header lists too many hops");
        }
    }

    #[test]
    fn the_throttle_counts_the_client_else_the_proxy() {
        let both = ClientFacts {
            client_ip: Some(ip("192.0.2.1")),
            peer_ip: Some(ip("10.0.0.1")),
            tls: true,
        };
        assert_eq!(both.throttle_ip(), Some(ip("192.0.2.1")));
        let proxy_only = ClientFacts::unresolved(Some(ip("10.0.0.1")));
        assert_eq!(proxy_only.throttle_ip(), Some(ip("10.0.0.1")));
        assert_eq!(ClientFacts::unresolved(None).throttle_ip(), None);
    }

    #[test]
    fn a_trusted_proxy_network_must_not_cover_every_address() {
        for all in ["0.0.0.0/0", "::/0"] {
            let err = check_trusted_proxy(&all.parse().unwrap()).unwrap_err();
            assert_eq!(
                err,
                format!("{all} would make every client a trusted proxy")
            );
        }
        for half in ["0.0.0.0/1", "128.0.0.0/1", "::/1", "10.0.0.0/8"] {
            assert_eq!(
                check_trusted_proxy(&half.parse().unwrap()),
                Ok(()),
                "{half}"
            );
        }
    }
}
