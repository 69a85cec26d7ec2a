//! Scopes and scope sets.
//!
//! A scope is an RFC 6749 scope-token (printable ASCII except space, `"` and `\`), by convention made of
//! `:`-separated segments such as `invoices:read`. A *granted* scope may end in the segment `*`: `invoices:*` covers
//! `invoices:read` and `invoices:lines:read`, and never `invoicesX:read` or `invoices` itself. A `*` anywhere else is
//! refused. A bare `*` (every scope) is only accepted through [`ScopeSet::danger_allow_superuser`].
//!
//! ```
//! use scopegate::policy::{Scope, ScopeSet};
//!
//! let granted = ScopeSet::parse(["invoices:*", "orders:read"]).unwrap();
//! assert!(granted.covers(&Scope::parse("invoices:lines:read").unwrap()));
//! assert!(!granted.covers(&Scope::parse("invoicesX:read").unwrap()));
//! assert!(!granted.covers(&Scope::parse("orders:write").unwrap()));
//! assert!(ScopeSet::parse(["*"]).is_err());
//! ```

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

/// The longest scope token accepted.
pub const MAX_SCOPE_LEN: usize = 256;

/// A parsed scope token.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Scope(Box<str>);

/// Why a scope was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ScopeError {
    /// Empty scope.
    #[error("invalid scope: empty")]
    Empty,
    /// Longer than [`MAX_SCOPE_LEN`].
    #[error("invalid scope {0:?}: longer than {MAX_SCOPE_LEN} characters")]
    TooLong(String),
    /// A character outside the RFC 6749 scope-token set.
    #[error(
        "invalid scope {0:?}: only printable ASCII without space, '\"' and '\\' is allowed (RFC 6749)"
    )]
    Character(String),
    /// A `*` that is not the whole last segment.
    #[error("invalid scope {0:?}: '*' may only be the whole last segment, as in \"invoices:*\"")]
    Wildcard(String),
    /// A wildcard where a concrete scope is required (route requirements, minted token requests).
    #[error("invalid scope {0:?}: a required scope may not contain a wildcard")]
    WildcardRequired(String),
    /// A bare `*` without the superuser option.
    #[error(
        "invalid scope \"*\": a bare '*' grants everything and is only accepted through the named superuser option"
    )]
    Superuser,
}

impl Scope {
    /// Parses one scope token (wildcards allowed in their one legal position).
    pub fn parse(text: &str) -> Result<Self, ScopeError> {
        if text.is_empty() {
            return Err(ScopeError::Empty);
        }
        if text.len() > MAX_SCOPE_LEN {
            return Err(ScopeError::TooLong(
                text.chars().take(40).collect::<String>() + "…",
            ));
        }
        if !text
            .bytes()
            .all(|b| b == 0x21 || (0x23..=0x5b).contains(&b) || (0x5d..=0x7e).contains(&b))
        {
            return Err(ScopeError::Character(
                text.chars().take(MAX_SCOPE_LEN).collect(),
            ));
        }
        if let Some(star) = text.find('*') {
            let last_segment =
                star + 1 == text.len() && (star == 0 || text.as_bytes()[star - 1] == b':');
            if !last_segment {
                return Err(ScopeError::Wildcard(text.to_owned()));
            }
        }
        Ok(Scope(text.into()))
    }

    /// Parses a scope that must be concrete (no wildcard), as route requirements are.
    pub fn parse_required(text: &str) -> Result<Self, ScopeError> {
        let scope = Self::parse(text)?;
        if scope.is_wildcard() {
            return Err(ScopeError::WildcardRequired(text.to_owned()));
        }
        Ok(scope)
    }

    /// The scope as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether this is a wildcard (`prefix:*` or the bare `*`).
    pub fn is_wildcard(&self) -> bool {
        self.0.ends_with('*')
    }

    /// Whether this is the bare `*`.
    pub fn is_superuser(&self) -> bool {
        &*self.0 == "*"
    }

    /// Whether this granted scope covers the concrete scope `required`.
    #[inline]
    pub fn covers(&self, required: &Scope) -> bool {
        if self.is_superuser() {
            return true;
        }
        match self.0.strip_suffix('*') {
            // `prefix` keeps its trailing ':' so the match stops at a segment boundary, and at least one more
            // character must follow it.
            Some(prefix) => required.0.len() > prefix.len() && required.0.starts_with(prefix),
            None => self.0 == required.0,
        }
    }
}

impl FromStr for Scope {
    type Err = ScopeError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Scope::parse(s)
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Scope({:?})", &*self.0)
    }
}

impl serde::Serialize for Scope {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

/// The scopes a credential was granted.
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct ScopeSet {
    exact: BTreeSet<Scope>,
    /// Wildcard grants, kept apart so that exact lookups stay a tree search.
    wildcards: Vec<Scope>,
}

impl ScopeSet {
    /// An empty set: covers nothing.
    pub fn new() -> Self {
        Self::default()
    }

    /// Parses granted scopes. A bare `*` is refused ([`ScopeError::Superuser`]).
    pub fn parse<I, S>(scopes: I) -> Result<Self, ScopeError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        Self::parse_inner(scopes, false)
    }

    /// Parses granted scopes, accepting a bare `*` that covers every scope. Only for break-glass operator
    /// credentials: a leaked superuser key opens every route.
    pub fn danger_allow_superuser<I, S>(scopes: I) -> Result<Self, ScopeError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        Self::parse_inner(scopes, true)
    }

    /// Parses an RFC 6749 `scope` value: scope tokens separated by single spaces.
    pub fn parse_space_separated(text: &str) -> Result<Self, ScopeError> {
        if text.is_empty() {
            return Ok(Self::new());
        }
        Self::parse(text.split(' '))
    }

    fn parse_inner<I, S>(scopes: I, superuser: bool) -> Result<Self, ScopeError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut set = ScopeSet::new();
        for text in scopes {
            let scope = Scope::parse(text.as_ref())?;
            if scope.is_superuser() && !superuser {
                return Err(ScopeError::Superuser);
            }
            set.insert(scope);
        }
        Ok(set)
    }

    fn insert(&mut self, scope: Scope) {
        if scope.is_wildcard() {
            if !self.wildcards.contains(&scope) {
                self.wildcards.push(scope);
                self.wildcards.sort();
            }
        } else {
            self.exact.insert(scope);
        }
    }

    /// Whether a granted scope covers the concrete scope `required`.
    #[inline]
    pub fn covers(&self, required: &Scope) -> bool {
        self.exact.contains(required) || self.wildcards.iter().any(|w| w.covers(required))
    }

    /// Whether every scope of `other` is covered by this set (used to refuse widening when down-scoping).
    pub fn covers_all(&self, other: &ScopeSet) -> bool {
        other.exact.iter().all(|s| self.covers(s))
            && other.wildcards.iter().all(|w| {
                self.wildcards.contains(w)
                    || self.wildcards.iter().any(Scope::is_superuser)
                    || (!w.is_superuser() && self.wildcard_covers_wildcard(w))
            })
    }

    fn wildcard_covers_wildcard(&self, narrower: &Scope) -> bool {
        // `a:*` covers `a:b:*` because every scope under `a:b:` is under `a:`.
        let narrow_prefix = narrower.as_str().trim_end_matches('*');
        self.wildcards.iter().any(|w| {
            let prefix = w.as_str().trim_end_matches('*');
            narrow_prefix.len() > prefix.len() && narrow_prefix.starts_with(prefix)
        })
    }

    /// Iterates over the scopes, exact ones first, each group sorted.
    pub fn iter(&self) -> impl Iterator<Item = &Scope> {
        self.exact.iter().chain(self.wildcards.iter())
    }

    /// Number of scopes.
    pub fn len(&self) -> usize {
        self.exact.len() + self.wildcards.len()
    }

    /// Whether no scope is granted.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A copy without `scope` (used by tests and by down-scoping).
    #[must_use]
    pub fn without(&self, scope: &Scope) -> ScopeSet {
        let mut copy = self.clone();
        copy.exact.remove(scope);
        copy.wildcards.retain(|w| w != scope);
        copy
    }
}

impl fmt::Debug for ScopeSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set()
            .entries(self.iter().map(Scope::as_str))
            .finish()
    }
}

impl fmt::Display for ScopeSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, s) in self.iter().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            f.write_str(s.as_str())?;
        }
        Ok(())
    }
}

impl serde::Serialize for ScopeSet {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.iter())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(t: &str) -> Scope {
        Scope::parse(t).unwrap()
    }

    #[test]
    fn rfc6749_characters() {
        for ok in [
            "invoices:read",
            "a",
            "https://api.example/read",
            "x!#$%&'()+,-./;<=>?@[]^_`{|}~",
        ] {
            assert!(Scope::parse(ok).is_ok(), "{ok}");
        }
        for bad in ["a b", "a\"b", "a\\b", "é", "a\tb", "a\u{7f}"] {
            assert!(
                matches!(Scope::parse(bad), Err(ScopeError::Character(_))),
                "{bad}"
            );
        }
        assert_eq!(Scope::parse(""), Err(ScopeError::Empty));
        assert!(matches!(
            Scope::parse(&"a".repeat(257)),
            Err(ScopeError::TooLong(_))
        ));
        assert!(Scope::parse(&"a".repeat(256)).is_ok());
    }

    #[test]
    fn wildcard_only_as_last_segment() {
        assert!(s("invoices:*").is_wildcard());
        assert!(s("*").is_superuser());
        for bad in ["invoices*", "inv*:read", "*:read", "invoices:**", "a:*b"] {
            assert!(
                matches!(Scope::parse(bad), Err(ScopeError::Wildcard(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn wildcard_stops_at_segment_boundaries() {
        let w = s("invoices:*");
        assert!(w.covers(&s("invoices:read")));
        assert!(w.covers(&s("invoices:lines:read")));
        assert!(!w.covers(&s("invoicesX:read")));
        assert!(!w.covers(&s("invoices")));
        assert!(
            !w.covers(&s("invoices:")),
            "an empty last segment is not under the wildcard"
        );
        assert!(!w.covers(&s("orders:read")));
    }

    #[test]
    fn exact_scopes_are_case_sensitive() {
        let set = ScopeSet::parse(["invoices:read"]).unwrap();
        assert!(set.covers(&s("invoices:read")));
        assert!(!set.covers(&s("Invoices:read")));
        assert!(!set.covers(&s("invoices:write")));
    }

    #[test]
    fn superuser_needs_the_named_option() {
        assert_eq!(ScopeSet::parse(["a", "*"]), Err(ScopeError::Superuser));
        let su = ScopeSet::danger_allow_superuser(["*"]).unwrap();
        assert!(su.covers(&s("anything:at:all")));
    }

    #[test]
    fn required_scopes_refuse_wildcards() {
        assert!(matches!(
            Scope::parse_required("invoices:*"),
            Err(ScopeError::WildcardRequired(_))
        ));
        assert!(matches!(
            Scope::parse_required("*"),
            Err(ScopeError::WildcardRequired(_))
        ));
        assert!(Scope::parse_required("invoices:read").is_ok());
    }

    #[test]
    fn space_separated_claims() {
        let set = ScopeSet::parse_space_separated("a:read b:write").unwrap();
        assert_eq!(set.len(), 2);
        assert!(
            ScopeSet::parse_space_separated("a  b").is_err(),
            "double space is an empty token"
        );
        assert!(ScopeSet::parse_space_separated(" a").is_err());
        assert!(ScopeSet::parse_space_separated("").unwrap().is_empty());
    }

    #[test]
    fn covers_all_refuses_widening() {
        let mine = ScopeSet::parse(["invoices:*", "orders:read"]).unwrap();
        assert!(mine.covers_all(&ScopeSet::parse(["invoices:read", "orders:read"]).unwrap()));
        assert!(mine.covers_all(&ScopeSet::parse(["invoices:lines:*"]).unwrap()));
        assert!(mine.covers_all(&ScopeSet::parse(["invoices:*"]).unwrap()));
        assert!(!mine.covers_all(&ScopeSet::parse(["orders:write"]).unwrap()));
        assert!(!mine.covers_all(&ScopeSet::parse(["orders:*"]).unwrap()));
        assert!(!mine.covers_all(&ScopeSet::danger_allow_superuser(["*"]).unwrap()));
        // A longer wildcard under another prefix is not covered.
        assert!(!mine.covers_all(&ScopeSet::parse(["accounts:lines:*"]).unwrap()));
    }

    #[test]
    fn a_concrete_scope_covers_itself_only_and_reads_as_itself() {
        let read = Scope::parse("a:read").unwrap();
        assert!(read.covers(&Scope::parse("a:read").unwrap()));
        assert!(!read.covers(&Scope::parse("a:write").unwrap()));
        assert!(!read.covers(&Scope::parse("a:read:x").unwrap()));
        assert_eq!(read.to_string(), "a:read");
        assert_eq!(format!("{read:?}"), r#"Scope("a:read")"#);
    }

    #[test]
    fn a_set_counts_exact_and_wildcard_scopes() {
        let set = ScopeSet::parse(["a:read", "b:write", "c:*"]).unwrap();
        assert_eq!(set.len(), 3);
        assert!(!set.is_empty());
        assert_eq!(ScopeSet::new().len(), 0);
        assert_eq!(set.to_string(), "a:read b:write c:*");
        assert_eq!(format!("{set:?}"), r#"{"a:read", "b:write", "c:*"}"#);
        assert_eq!(ScopeSet::new().to_string(), "");
    }

    #[test]
    fn without_drops_one_scope_exact_or_wildcard() {
        let set = ScopeSet::parse(["a:read", "b:write", "c:*", "d:*"]).unwrap();
        let fewer = set.without(&Scope::parse("a:read").unwrap());
        assert_eq!(fewer.to_string(), "b:write c:* d:*");
        let fewer = set.without(&Scope::parse("c:*").unwrap());
        assert_eq!(fewer.to_string(), "a:read b:write d:*");
        assert_eq!(set.without(&Scope::parse("e:read").unwrap()), set);
    }
}
