//! The proof that a request was allowed: who is calling, with which scopes.
//!
//! Only the gate creates a [`Grant`] (its fields are private and it has no public constructor); a handler that
//! finds one in the request's extensions knows the decision order ran and allowed the request.

use std::collections::BTreeMap;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::SystemTime;

use crate::credential::api_key::{KeyId, RateLimit};
use crate::layer::Allowed;
use crate::network::CidrSet;
use crate::policy::{Denial, Scope, ScopeSet};

/// Which kind of credential authenticated the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CredentialKind {
    /// An API key from the key store.
    ApiKey,
    /// A JWT bearer token.
    Jwt,
}

impl CredentialKind {
    /// `api_key` or `jwt`, as in audit events and `serve` responses.
    #[inline]
    pub fn as_str(self) -> &'static str {
        match self {
            CredentialKind::ApiKey => "api_key",
            CredentialKind::Jwt => "jwt",
        }
    }
}

/// Attributes of a credential (e.g. `tenant`), compared with bound path parameters.
pub type Attributes = BTreeMap<String, String>;

/// An authenticated credential's grant: principal, scopes, network restriction and attributes.
///
/// Cheap to clone: a few words and one reference-counted set of rights, which API keys with equal scopes,
/// allowlist and attributes share (so that a verified key yields a grant without reading any memory of its own
/// beyond its cache entry). Holds no secret.
///
/// The grant the gate puts into an allowed request's extensions also carries the gate's decision about that
/// request ([`allowed`](Self::allowed): the route, the client), so that an authenticated request gets one extension,
/// not two. Two grants are equal when they grant the same thing to the same principal; the decision is not compared.
#[derive(Clone)]
pub struct Grant {
    kind: CredentialKind,
    principal: Principal,
    expires_at: Option<SystemTime>,
    rights: Arc<Rights>,
    allowed: Option<Allowed>,
}

impl PartialEq for Grant {
    fn eq(&self, other: &Self) -> bool {
        self.kind == other.kind
            && self.principal() == other.principal()
            && self.expires_at == other.expires_at
            && self.rights == other.rights
    }
}

impl Eq for Grant {}

/// Who the grant is for: an API key's id (kept inline), or a name held with the rights.
#[derive(Clone, Copy)]
enum Principal {
    Key(KeyId),
    /// A JWT's subject, or a test grant's name: the rights' `name` (so that a remembered token's grant is one
    /// reference count to take per request, not two).
    #[cfg_attr(not(any(feature = "jwt", feature = "testing")), allow(dead_code))]
    Named,
}

/// What a credential may do: its scopes, network restriction and attributes. Immutable once built; holds no secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Rights {
    /// The principal of a named grant (a JWT's subject); empty for an API key's rights, which keys with equal
    /// rights share.
    name: Box<str>,
    scopes: ScopeSet,
    allow_ips: Option<CidrSet>,
    attributes: Attributes,
    /// An API key's rate limit, enforced by the gate after authorization.
    rate_limit: Option<RateLimit>,
}

impl Rights {
    pub(crate) fn new(
        scopes: ScopeSet,
        allow_ips: Option<CidrSet>,
        attributes: Attributes,
    ) -> Self {
        Rights {
            name: Box::default(),
            scopes,
            allow_ips,
            attributes,
            rate_limit: None,
        }
    }

    /// The same rights, limited to `limit` allowed requests per unit.
    pub(crate) fn rate_limited(mut self, limit: Option<RateLimit>) -> Self {
        self.rate_limit = limit;
        self
    }
}

/// Consistent with `Eq`: equal sets of networks have equal sizes.
impl Hash for Rights {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.name.hash(state);
        self.scopes.hash(state);
        self.attributes.hash(state);
        self.allow_ips.as_ref().map(CidrSet::len).hash(state);
        self.rate_limit.hash(state);
    }
}

impl Grant {
    /// Made by authenticators inside the crate only.
    #[cfg(any(feature = "jwt", feature = "testing"))]
    pub(crate) fn new(
        kind: CredentialKind,
        principal: String,
        scopes: ScopeSet,
        allow_ips: Option<CidrSet>,
        attributes: Attributes,
    ) -> Self {
        Grant {
            kind,
            principal: Principal::Named,
            expires_at: None,
            rights: Arc::new(Rights {
                name: principal.into_boxed_str(),
                ..Rights::new(scopes, allow_ips, attributes)
            }),
            allowed: None,
        }
    }

    /// An API key's grant, from its cache entry: the id is copied, the (shared) rights are referenced.
    pub(crate) fn api_key(id: KeyId, rights: Arc<Rights>, expires_at: Option<SystemTime>) -> Self {
        Grant {
            kind: CredentialKind::ApiKey,
            principal: Principal::Key(id),
            expires_at,
            rights,
            allowed: None,
        }
    }

    /// The same grant, carrying the gate's decision about the request it is attached to.
    #[inline]
    pub(crate) fn with_allowed(mut self, allowed: Allowed) -> Self {
        self.allowed = Some(allowed);
        self
    }

    /// What the gate decided about the request this grant came with: the matched route and the client. `None` on
    /// a grant that no gate attached to a request (a test's, or an authenticator's own answer).
    /// [`Allowed::of`] finds it in a request's extensions whichever way the request was allowed.
    pub fn allowed(&self) -> Option<&Allowed> {
        self.allowed.as_ref()
    }

    /// The same grant, ending at `at` (the credential's own expiry: a JWT's `exp`, an API key's `expires_at`).
    #[must_use]
    #[cfg(feature = "jwt")]
    pub(crate) fn with_expiry(mut self, at: SystemTime) -> Self {
        self.expires_at = Some(at);
        self
    }

    /// API key or JWT.
    #[inline]
    pub fn kind(&self) -> CredentialKind {
        self.kind
    }

    /// The credential's public identifier: an API key's id, or a JWT's `sub`. Never a secret.
    #[inline]
    pub fn principal(&self) -> &str {
        match &self.principal {
            Principal::Key(id) => id.as_str(),
            Principal::Named => &self.rights.name,
        }
    }

    /// The granted scopes.
    #[inline]
    pub fn scopes(&self) -> &ScopeSet {
        &self.rights.scopes
    }

    /// The credential's network restriction, if it has one.
    #[inline]
    pub fn allow_ips(&self) -> Option<&CidrSet> {
        self.rights.allow_ips.as_ref()
    }

    /// When the credential behind this grant expires, if it does (and if its authenticator said so). Tokens
    /// minted from this grant never outlive it.
    pub fn expires_at(&self) -> Option<SystemTime> {
        self.expires_at
    }

    /// The API key's id, for a grant of an API key.
    #[inline]
    pub(crate) fn key_id(&self) -> Option<KeyId> {
        match self.principal {
            Principal::Key(id) => Some(id),
            Principal::Named => None,
        }
    }

    /// The API key's rate limit, if it has one (the gate enforces it after authorization).
    #[inline]
    pub fn rate_limit(&self) -> Option<RateLimit> {
        self.rights.rate_limit
    }

    /// All attributes.
    pub fn attributes(&self) -> &Attributes {
        &self.rights.attributes
    }

    /// One attribute (e.g. `tenant`).
    pub fn attr(&self, name: &str) -> Option<&str> {
        self.rights.attributes.get(name).map(String::as_str)
    }

    /// In-handler check for resource-level decisions: `Ok` when a granted scope covers `scope`, else an
    /// `insufficient_scope` denial naming it.
    pub fn require(&self, scope: &Scope) -> Result<(), Denial> {
        if self.rights.scopes.covers(scope) {
            Ok(())
        } else {
            Err(Denial::insufficient_scope(vec![scope.clone()]))
        }
    }
}

impl fmt::Debug for Grant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Grant")
            .field("kind", &self.kind)
            .field("principal", &self.principal())
            .field("scopes", &self.rights.scopes)
            .field("allow_ips", &self.rights.allow_ips)
            .field("attributes", &self.rights.attributes)
            .field("expires_at", &self.expires_at)
            .field("allowed", &self.allowed)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::hash::BuildHasher;

    use super::*;

    fn rights(scopes: &[&str]) -> Rights {
        Rights::new(ScopeSet::parse(scopes).unwrap(), None, Attributes::new())
    }

    fn key(id: &str, rights: Rights) -> Grant {
        Grant::api_key(id.parse().unwrap(), Arc::new(rights), None)
    }

    #[test]
    fn grants_are_equal_when_they_grant_the_same_to_the_same_principal() {
        let a = key("0123456789abcdef", rights(&["orders:read"]));
        // Equal: the same principal and rights, even when the rights are separate copies.
        assert_eq!(a, key("0123456789abcdef", rights(&["orders:read"])));
        // Unequal in any one part: the principal, the rights, the expiry, the kind.
        assert_ne!(a, key("fedcba9876543210", rights(&["orders:read"])));
        assert_ne!(a, key("0123456789abcdef", rights(&["orders:write"])));
        let mut expiring = a.clone();
        expiring.expires_at = Some(SystemTime::UNIX_EPOCH);
        assert_ne!(a, expiring);
        let mut other_kind = a.clone();
        other_kind.kind = CredentialKind::Jwt;
        assert_ne!(a, other_kind, "the same id as another kind of credential");
    }

    #[test]
    fn rights_hash_by_what_they_grant_and_name() {
        let hasher = std::collections::hash_map::RandomState::new();
        let hash = |r: &Rights| hasher.hash_one(r);
        let read = rights(&["orders:read"]);
        assert_eq!(
            hash(&read),
            hash(&rights(&["orders:read"])),
            "equal rights, equal hashes"
        );
        // Rights that differ hash apart (keys with equal rights share one copy, found by this hash).
        assert_ne!(hash(&read), hash(&rights(&["orders:write"])));
        let named = Rights {
            name: "alice".into(),
            ..rights(&["orders:read"])
        };
        assert_ne!(hash(&read), hash(&named));
        assert_ne!(read, named);
    }
}
