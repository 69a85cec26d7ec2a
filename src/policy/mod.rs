//! The policy engine: scopes, requirements, routes, the compiled [`Policy`] and the [`Decision`].
//!
//! Nothing is allowed unless a rule allows it: a method and path that no rule lists are refused (401 without a
//! credential, 403 `no_policy` with one), and so is every ambiguous path.

mod compiled;
mod decision;
mod order;
mod path;
mod pattern;
mod requirement;
mod route;
mod scope;

pub(crate) use compiled::Lookup;
pub use compiled::{Policy, PolicyBuilder};
pub use decision::{AllowKind, Answer, Challenge, Decision, Denial, DenialKind};
pub(crate) use order::{RequestFacts, Started};
pub use path::{PathError, check_path};
pub use pattern::RoutePattern;
pub use requirement::{MAX_REQUIREMENT_DEPTH, Requirement, RequirementError};
pub use route::Route;
pub use scope::{MAX_SCOPE_LEN, Scope, ScopeError, ScopeSet};
