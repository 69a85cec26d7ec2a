//! scopegate: scoped, need-to-know API authorization for Tower, axum and tonic services.
//!
//! Every request goes through one fixed decision order (TLS, canonical path, route, throttle, credential,
//! authentication, network, requirement) and is either handed on with a [`Grant`] or refused with a
//! [`Denial`](policy::Denial). Nothing is allowed unless a rule allows it: unlisted routes, unknown credentials
//! and store errors all deny.
//!
//! A policy is a list of routes (axum's pattern syntax) with scope requirements, optional network allowlists and
//! bindings of path parameters to credential attributes. It can be unit-tested without a server, with the test kits
//! of the `testing` feature (enable it in `[dev-dependencies]` only: the kits can make grants without the gate):
//!
//! ```
//! use scopegate::policy::{Policy, Route};
//! use scopegate::testing::Probe;
//!
//! let policy = Policy::builder()
//!     .route(Route::get("/health").public())
//!     .route(
//!         Route::get("/v1/tenants/{tenant}/invoices/{id}")
//!             .require_all(["invoices:read"])
//!             .bind("tenant", "tenant"),
//!     )
//!     .build()?;
//!
//! let acme_reader = Probe::get("/v1/tenants/acme/invoices/7").scopes(["invoices:read"]).attr("tenant", "acme");
//! assert!(policy.check(&acme_reader).is_allowed());
//!
//! let other_tenant = Probe::get("/v1/tenants/globex/invoices/7").scopes(["invoices:read"]).attr("tenant", "acme");
//! assert_eq!(policy.check(&other_tenant).reason(), "resource_not_permitted");
//! assert_eq!(policy.check(&Probe::get("/v1/tenants/acme/../globex/invoices/7")).reason(), "malformed_request");
//! assert_eq!(policy.check(&Probe::get("/v1/admin").scopes(["invoices:read"])).reason(), "no_policy");
//! # Ok::<(), scopegate::ConfigError>(())
//! ```
//!
//! The same policy can come from a TOML gate file ([`config::GateFile`]). The decision order and the threat model
//! are in [`guide`]; the rest of the manual (policies, API keys, JWTs, the gate file, the CLI, deployment,
//! performance) is under `docs/` in the repository.

mod clock;
pub mod config;
pub mod credential;
mod error;
#[cfg(feature = "__fuzz")]
#[doc(hidden)]
pub mod fuzz;
mod grant;
pub mod integrations;
mod kept;
pub mod layer;
pub mod network;
pub mod policy;
mod secret;
#[cfg(feature = "server")]
pub mod serve;
#[cfg(test)]
mod test_logs;
#[cfg(feature = "testing")]
pub mod testing;

/// Chapters of the manual that every user of the crate should read, rendered from the repository's `docs/`.
pub mod guide {
    #[doc = include_str!("../docs/decision-order.md")]
    pub mod decision_order {}

    #[doc = include_str!("../docs/threat-model.md")]
    pub mod threat_model {}
}

pub use clock::{Clock, ManualClock, SystemClock};
pub use error::{ConfigError, Location};
pub use grant::{Attributes, CredentialKind, Grant};
pub use secret::{Secret, SecretRef};

/// The README's example, compiled and run as a doctest so that it cannot rot.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeExample;
