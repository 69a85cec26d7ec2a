//! Network facts: strict IP literals, CIDR networks and sets, client IP and TLS evidence behind trusted proxies.

mod cidr;
mod ip;
mod proxy;

pub use cidr::{Cidr, CidrError, CidrSet};
pub use ip::{IpLiteralError, canonical, parse_ip};
pub(crate) use proxy::check_trusted_proxy;
pub use proxy::{ClientFacts, ConnectionInfo, MAX_FORWARDED_HOPS, resolve_client};
