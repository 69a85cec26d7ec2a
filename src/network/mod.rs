//! Network facts: strict IP literals, CIDR networks and sets, client IP and TLS evidence behind trusted proxies.

mod cidr;
mod forwarded;
mod ip;
mod proxy;

pub use cidr::{Cidr, CidrError, CidrSet};
pub use ip::{IpLiteralError, canonical, parse_ip};
pub(crate) use proxy::check_trusted_proxy;
pub(crate) use proxy::{ClientFacts, resolve_client};
pub use proxy::{ConnectionInfo, MAX_FORWARDED_HOPS};
