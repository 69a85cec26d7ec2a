//! The TOML gate file (`docs/gate-file.md`): one file that configures the whole gate.
//!
//! Parsing is strict: unknown fields anywhere, wrong types, lower-case methods, a route with neither `public` nor
//! `require` (or both), `require_tls = false` without `danger_allow_plaintext = true`, an empty `allow_ips`, a
//! `trusted_proxies` entry covering everything — each is an error naming the file, line, route and field.
//!
//! ```
//! use scopegate::config::GateFile;
//! use scopegate::testing::Probe;
//!
//! let gate = GateFile::from_toml_str(r#"
//!     [[route]]
//!     path = "/v1/invoices/{id}"
//!     methods = ["GET"]
//!     require = { any = ["invoices:read", "invoices:admin"] }
//! "#)?;
//! let policy = gate.policy()?;
//! assert!(policy.check(&Probe::get("/v1/invoices/7").scopes(["invoices:admin"])).is_allowed());
//! assert_eq!(policy.check(&Probe::get("/v1/invoices/7").scopes(["orders:read"])).reason(), "insufficient_scope");
//!
//! let err = GateFile::from_toml_str("[[route]]\npath = \"/x\"\nmethods = [\"get\"]\npublic = true\n").unwrap_err();
//! assert!(err.to_string().contains("methods"));
//! # Ok::<(), scopegate::ConfigError>(())
//! ```

mod assemble;
mod file;

pub use file::{
    ApiKeysSection, FetchSection, GateFile, JwtSection, OlderPepper, OneOrMany, ResourceSection,
    ServerSection, ThrottleSection, TransportSection,
};
