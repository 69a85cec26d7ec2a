//! The matched route pattern as decisions carry it: copied, not reference-counted.
//!
//! An allowed request carries its route pattern out of the gate (in the decision, then in its extensions), and the
//! same few patterns are handed to every request. A reference-counted string costs two atomic operations per
//! request on a count every thread shares; a pattern kept for the life of the process costs none. So compiling a
//! policy keeps each distinct pattern once, in the process's bounded store of kept text ([`kept`](crate::kept));
//! past its budget a pattern is reference-counted as before. Either way a [`RoutePattern`] reads, compares and
//! prints as its text.

use std::fmt;
use std::ops::Deref;
use std::sync::Arc;

use crate::kept;

/// A route pattern (`/v1/tenants/{tenant}/invoices/{id}`) as a [`Decision`](super::Decision) carries it. Reads as
/// its text (`Deref<Target = str>`), and two are equal when their text is.
///
/// ```
/// use scopegate::policy::RoutePattern;
///
/// let pattern = RoutePattern::from("/v1/orders/{id}");
/// assert_eq!(pattern, "/v1/orders/{id}");
/// assert!(pattern.starts_with("/v1/"));
/// ```
#[derive(Clone)]
pub struct RoutePattern(Repr);

#[derive(Clone)]
enum Repr {
    /// Kept for the life of the process by a compiled policy: copying it is copying a pointer.
    Kept(&'static str),
    /// Made by hand, or compiled after the budget was spent.
    Counted(Arc<str>),
}

impl RoutePattern {
    /// The pattern's text.
    #[inline]
    pub fn as_str(&self) -> &str {
        match &self.0 {
            Repr::Kept(text) => text,
            Repr::Counted(text) => text,
        }
    }

    /// The pattern a compiled policy hands out: the process's kept copy of `text` (made now if there is none and the
    /// budget allows), else a counted one.
    pub(crate) fn compiled(text: &str) -> Self {
        RoutePattern(match kept::keep(text) {
            Some(kept) => Repr::Kept(kept),
            None => Repr::Counted(Arc::from(text)),
        })
    }

    /// Whether this pattern is a kept copy (for the tests).
    #[cfg(test)]
    fn is_kept(&self) -> bool {
        matches!(self.0, Repr::Kept(_))
    }
}

/// A counted pattern, not kept: for decisions made by hand (tests, expected values).
impl From<&str> for RoutePattern {
    fn from(text: &str) -> Self {
        RoutePattern(Repr::Counted(Arc::from(text)))
    }
}

impl Deref for RoutePattern {
    type Target = str;

    #[inline]
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl AsRef<str> for RoutePattern {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl PartialEq for RoutePattern {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for RoutePattern {}

impl PartialEq<str> for RoutePattern {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for RoutePattern {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl std::hash::Hash for RoutePattern {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.as_str().hash(state);
    }
}

impl fmt::Debug for RoutePattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for RoutePattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_compiled_pattern_is_kept_once_and_reads_as_its_text() {
        let text = "/v1/pattern-tests/kept/{id}";
        let first = RoutePattern::compiled(text);
        let again = RoutePattern::compiled(&String::from(text));
        assert!(first.is_kept() && again.is_kept());
        // One copy for the process: both point at the same text.
        assert!(std::ptr::eq(first.as_str(), again.as_str()));
        assert_eq!(first, again);
        assert_eq!(first, text);
        assert_eq!(format!("{first} {first:?}"), format!("{text} {text:?}"));
        assert_eq!(first.as_ref(), text);
        assert!(<RoutePattern as PartialEq<str>>::eq(&first, text));
        assert!(!<RoutePattern as PartialEq<str>>::eq(&first, "/v1/other"));
        assert_ne!(first, "/v1/other");
        assert_eq!(&*first, text);
        // Hashes as its text: found in a set by its text.
        let hasher = std::collections::hash_map::RandomState::new();
        assert_eq!(
            std::hash::BuildHasher::hash_one(&hasher, &first),
            std::hash::BuildHasher::hash_one(&hasher, text)
        );
        // A pattern made by hand is counted, not kept, and equal to the kept one with the same text.
        let by_hand = RoutePattern::from(text);
        assert!(!by_hand.is_kept());
        assert_eq!(by_hand, first);
        assert_ne!(by_hand, RoutePattern::from("/v1/pattern-tests/other"));
    }

    #[test]
    fn a_compiled_policy_hands_out_its_kept_pattern() {
        use crate::policy::{Decision, Policy, Route};
        let policy = Policy::builder()
            .route(Route::get("/pattern-tests/health").public())
            .build()
            .unwrap_or_else(|e| panic!("{e}"));
        let decide = || {
            let lookup = policy
                .lookup(&http::Method::GET, "/pattern-tests/health")
                .unwrap_or_else(|e| panic!("{e:?}"));
            policy.public_decision(&lookup)
        };
        let (
            Some(Decision::Allow { route: first, .. }),
            Some(Decision::Allow { route: again, .. }),
        ) = (decide(), decide())
        else {
            panic!("a public route is allowed");
        };
        assert!(first.is_kept());
        assert!(std::ptr::eq(first.as_str(), again.as_str()));
        assert_eq!(first, "/pattern-tests/health");
    }
}
