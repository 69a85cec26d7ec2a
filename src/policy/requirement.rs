//! Scope requirements: a scope, or all-of / any-of of requirements, nestable.
//!
//! ```
//! use scopegate::policy::{Requirement, ScopeSet};
//!
//! let req = Requirement::all([Requirement::scope("invoices:read")?, Requirement::any([
//!     Requirement::scope("admin")?,
//!     Requirement::scope("invoices:export")?,
//! ])?])?;
//! assert!(req.is_satisfied_by(&ScopeSet::parse(["invoices:read", "admin"])?));
//! assert!(!req.is_satisfied_by(&ScopeSet::parse(["invoices:read"])?));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::fmt;

use super::scope::{Scope, ScopeError, ScopeSet};

/// The deepest nesting of all/any accepted (a bound on work per request and on configuration mistakes).
pub const MAX_REQUIREMENT_DEPTH: usize = 8;

/// A requirement on a credential's scopes. Monotone: adding scopes never turns a satisfied requirement into an
/// unsatisfied one, and removing scopes never the reverse.
///
/// Only [`scope`](Self::scope), [`all`](Self::all) and [`any`](Self::any) make one, and each refuses what would not
/// restrict anything: an empty group at any depth (an empty `all` would pass every credential), nesting deeper
/// than [`MAX_REQUIREMENT_DEPTH`], and a wildcard or bare `*` scope. No other value can be written:
///
/// ```compile_fail
/// use scopegate::policy::Requirement;
/// // The tree is private: an empty group cannot be spelled out.
/// let everyone = Requirement::All(vec![]);
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct Requirement(Node);

/// The tree behind a [`Requirement`]; private, so that every value went through the checks of its constructors.
#[derive(Clone, PartialEq, Eq)]
enum Node {
    /// One concrete scope (no wildcard).
    Scope(Scope),
    /// Every part must be satisfied; never empty.
    All(Vec<Requirement>),
    /// At least one part must be satisfied; never empty.
    Any(Vec<Requirement>),
}

/// Why a requirement is invalid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RequirementError {
    /// A bad scope.
    #[error(transparent)]
    Scope(#[from] ScopeError),
    /// `all` or `any` with no member (an empty `all` would allow everyone).
    #[error("an `{0}` requirement needs at least one member")]
    Empty(&'static str),
    /// Nested too deeply.
    #[error("requirement nested deeper than {MAX_REQUIREMENT_DEPTH} levels")]
    TooDeep,
}

impl Requirement {
    /// A single concrete scope.
    pub fn scope(text: &str) -> Result<Self, RequirementError> {
        Ok(Requirement(Node::Scope(Scope::parse_required(text)?)))
    }

    /// All of the parts; at least one.
    pub fn all(parts: impl IntoIterator<Item = Requirement>) -> Result<Self, RequirementError> {
        Self::group(parts, "all", Node::All)
    }

    /// Any of the parts; at least one.
    pub fn any(parts: impl IntoIterator<Item = Requirement>) -> Result<Self, RequirementError> {
        Self::group(parts, "any", Node::Any)
    }

    fn group(
        parts: impl IntoIterator<Item = Requirement>,
        name: &'static str,
        make: fn(Vec<Requirement>) -> Node,
    ) -> Result<Self, RequirementError> {
        let parts: Vec<_> = parts.into_iter().collect();
        if parts.is_empty() {
            return Err(RequirementError::Empty(name));
        }
        let req = Requirement(make(parts));
        if req.depth() > MAX_REQUIREMENT_DEPTH {
            return Err(RequirementError::TooDeep);
        }
        Ok(req)
    }

    fn depth(&self) -> usize {
        match &self.0 {
            Node::Scope(_) => 0,
            Node::All(p) | Node::Any(p) => 1 + p.iter().map(Requirement::depth).max().unwrap_or(0),
        }
    }

    /// Whether the granted scopes satisfy the requirement.
    pub fn is_satisfied_by(&self, granted: &ScopeSet) -> bool {
        match &self.0 {
            Node::Scope(s) => granted.covers(s),
            Node::All(parts) => parts.iter().all(|p| p.is_satisfied_by(granted)),
            Node::Any(parts) => parts.iter().any(|p| p.is_satisfied_by(granted)),
        }
    }

    /// The scopes to name in an RFC 6750 `insufficient_scope` challenge: those still missing along the cheapest
    /// way to satisfy the requirement (for `any`, the member with the fewest missing scopes; ties: the first).
    pub fn missing(&self, granted: &ScopeSet) -> Vec<Scope> {
        let mut out = match &self.0 {
            Node::Scope(s) if granted.covers(s) => Vec::new(),
            Node::Scope(s) => vec![s.clone()],
            Node::All(parts) => parts.iter().flat_map(|p| p.missing(granted)).collect(),
            Node::Any(parts) => parts
                .iter()
                .map(|p| p.missing(granted))
                .min_by_key(Vec::len)
                .unwrap_or_default(),
        };
        out.sort();
        out.dedup();
        out
    }

    /// Every scope the requirement mentions.
    pub fn scopes(&self) -> Vec<&Scope> {
        match &self.0 {
            Node::Scope(s) => vec![s],
            Node::All(p) | Node::Any(p) => p.iter().flat_map(Requirement::scopes).collect(),
        }
    }
}

impl fmt::Debug for Requirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// `invoices:read`, `all(a, any(b, c))`.
impl fmt::Display for Requirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (name, parts) = match &self.0 {
            Node::Scope(s) => return f.write_str(s.as_str()),
            Node::All(p) => ("all", p),
            Node::Any(p) => ("any", p),
        };
        write!(f, "{name}(")?;
        for (i, p) in parts.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{p}")?;
        }
        f.write_str(")")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(s: &[&str]) -> ScopeSet {
        ScopeSet::parse(s).unwrap()
    }

    fn sc(s: &str) -> Requirement {
        Requirement::scope(s).unwrap()
    }

    #[test]
    fn all_needs_every_member() {
        let r = Requirement::all([sc("a"), sc("b")]).unwrap();
        assert!(r.is_satisfied_by(&set(&["a", "b"])));
        assert!(!r.is_satisfied_by(&set(&["a"])));
        assert_eq!(r.missing(&set(&["a"])), vec![Scope::parse("b").unwrap()]);
    }

    #[test]
    fn any_needs_one_member() {
        let r = Requirement::any([sc("a"), Requirement::all([sc("b"), sc("c")]).unwrap()]).unwrap();
        assert!(r.is_satisfied_by(&set(&["a"])));
        assert!(r.is_satisfied_by(&set(&["b", "c"])));
        assert!(!r.is_satisfied_by(&set(&["b"])));
        assert!(!r.is_satisfied_by(&set(&[])));
        assert_eq!(r.missing(&set(&["b"])), vec![Scope::parse("a").unwrap()]);
    }

    #[test]
    fn wildcard_grants_satisfy_concrete_requirements() {
        assert!(sc("invoices:read").is_satisfied_by(&set(&["invoices:*"])));
        assert!(!sc("invoicesx:read").is_satisfied_by(&set(&["invoices:*"])));
    }

    #[test]
    fn build_errors() {
        assert_eq!(Requirement::all([]), Err(RequirementError::Empty("all")));
        assert_eq!(Requirement::any([]), Err(RequirementError::Empty("any")));
        assert!(matches!(
            Requirement::scope("a:*"),
            Err(RequirementError::Scope(ScopeError::WildcardRequired(_)))
        ));
        let mut deep = sc("a");
        for _ in 0..MAX_REQUIREMENT_DEPTH {
            deep = Requirement::all([deep]).unwrap();
        }
        assert_eq!(Requirement::all([deep]), Err(RequirementError::TooDeep));
    }

    #[test]
    fn nothing_that_restricts_nothing_can_be_built() {
        // An empty group is refused where it is made (`build_errors`), so no group can hold one at any depth.
        // A bare `*` and wildcards are grants, never requirements.
        for star in ["*", "invoices:*"] {
            assert!(matches!(
                Requirement::scope(star),
                Err(RequirementError::Scope(_))
            ));
        }
        // The allowed twin: a one-member group of a concrete scope, at the deepest accepted nesting.
        let mut deep = sc("a");
        for _ in 0..MAX_REQUIREMENT_DEPTH {
            deep = Requirement::any([deep]).unwrap();
        }
        assert!(deep.is_satisfied_by(&set(&["a"])));
        assert!(!deep.is_satisfied_by(&set(&["b"])));
    }

    #[test]
    fn display_is_readable() {
        let r = Requirement::all([sc("a"), Requirement::any([sc("b"), sc("c")]).unwrap()]).unwrap();
        assert_eq!(r.to_string(), "all(a, any(b, c))");
        assert_eq!(format!("{r:?}"), "all(a, any(b, c))");
    }
}
