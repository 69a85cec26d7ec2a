//! Network facts: strict IP literals, CIDR networks and sets.

mod cidr;
mod ip;

pub use cidr::{Cidr, CidrError, CidrSet};
pub use ip::{IpLiteralError, canonical, parse_ip};
