//! The policy engine: scopes, requirements, routes, and the decision.

mod decision;
mod requirement;
mod scope;

pub use decision::{AllowKind, Answer, Challenge, Decision, Denial, DenialKind};
pub use requirement::{MAX_REQUIREMENT_DEPTH, Requirement, RequirementError};
pub use scope::{MAX_SCOPE_LEN, Scope, ScopeError, ScopeSet};
