//! The proof that a request was allowed: who is calling, with which scopes.
//!
//! Only the gate creates a [`Grant`] (its fields are private and it has no public constructor); a handler that
//! finds one in the request's extensions knows the decision order ran and allowed the request.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::SystemTime;

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
/// Cheap to clone (an `Arc` inside). Holds no secret.
#[derive(Clone, PartialEq, Eq)]
pub struct Grant(Arc<GrantInner>);

#[derive(Clone, PartialEq, Eq)]
struct GrantInner {
    kind: CredentialKind,
    principal: String,
    scopes: ScopeSet,
    allow_ips: Option<CidrSet>,
    attributes: Attributes,
    expires_at: Option<SystemTime>,
}

impl Grant {
    /// Made by authenticators inside the crate only.
    pub(crate) fn new(
        kind: CredentialKind,
        principal: String,
        scopes: ScopeSet,
        allow_ips: Option<CidrSet>,
        attributes: Attributes,
    ) -> Self {
        Grant(Arc::new(GrantInner {
            kind,
            principal,
            scopes,
            allow_ips,
            attributes,
            expires_at: None,
        }))
    }

    /// The same grant, ending at `at` (the credential's own expiry: a JWT's `exp`, an API key's `expires_at`).
    #[must_use]
    pub(crate) fn with_expiry(mut self, at: SystemTime) -> Self {
        Arc::make_mut(&mut self.0).expires_at = Some(at);
        self
    }

    /// Reads the shared header of the grant (its reference count) so that a clone that follows finds it in the CPU
    /// cache: the API key cache calls this before hashing, and the memory load overlaps the HMAC. No other effect.
    pub(crate) fn prefetch(&self) {
        std::hint::black_box(Arc::strong_count(&self.0));
    }

    /// API key or JWT.
    pub fn kind(&self) -> CredentialKind {
        self.0.kind
    }

    /// The credential's public identifier: an API key's id, or a JWT's `sub`. Never a secret.
    pub fn principal(&self) -> &str {
        &self.0.principal
    }

    /// The granted scopes.
    pub fn scopes(&self) -> &ScopeSet {
        &self.0.scopes
    }

    /// The credential's network restriction, if it has one.
    pub fn allow_ips(&self) -> Option<&CidrSet> {
        self.0.allow_ips.as_ref()
    }

    /// When the credential behind this grant expires, if it does (and if its authenticator said so). Tokens
    /// minted from this grant never outlive it.
    pub fn expires_at(&self) -> Option<SystemTime> {
        self.0.expires_at
    }

    /// All attributes.
    pub fn attributes(&self) -> &Attributes {
        &self.0.attributes
    }

    /// One attribute (e.g. `tenant`).
    pub fn attr(&self, name: &str) -> Option<&str> {
        self.0.attributes.get(name).map(String::as_str)
    }

    /// In-handler check for resource-level decisions: `Ok` when a granted scope covers `scope`, else an
    /// `insufficient_scope` denial naming it.
    pub fn require(&self, scope: &Scope) -> Result<(), Denial> {
        if self.0.scopes.covers(scope) {
            Ok(())
        } else {
            Err(Denial::insufficient_scope(vec![scope.clone()]))
        }
    }
}

impl fmt::Debug for Grant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Grant")
            .field("kind", &self.0.kind)
            .field("principal", &self.0.principal)
            .field("scopes", &self.0.scopes)
            .field("allow_ips", &self.0.allow_ips)
            .field("attributes", &self.0.attributes)
            .field("expires_at", &self.0.expires_at)
            .finish()
    }
}
