//! Credentials: extraction from headers, API keys and JWT bearer tokens.

pub mod api_key;
mod header;
#[cfg(feature = "jwt")]
pub mod jwt;
mod order;
pub(crate) use order::InsertionOrder;

pub use header::DEFAULT_MAX_CREDENTIAL_LEN;
#[cfg(feature = "__fuzz")]
pub(crate) use header::extract_credential;
pub(crate) use header::{CredentialSource, PresentedCredential, WALK_AT_MOST, read_credential};

use std::future::Future;
use std::pin::Pin;

use crate::grant::Grant;
use crate::policy::Denial;
use crate::secret::SecretRef;

/// The future of an [`Authentication`] that has to wait (for a key store, a key set refresh).
pub type AuthFuture = Pin<Box<dyn Future<Output = Result<Grant, Denial>> + Send + 'static>>;

/// What an [`Authenticator`] answers: the outcome at once, or a future for it.
///
/// Most credentials are decided without waiting (a cached API key, a malformed one, a JWT whose key is at hand), so
/// the gate decides those in `Service::call`, without allocating a future.
#[non_exhaustive]
pub enum Authentication {
    /// Decided synchronously.
    Ready(Result<Grant, Denial>),
    /// Needs I/O first.
    Pending(AuthFuture),
}

impl Authentication {
    /// Waits for the outcome (at once for [`Ready`](Self::Ready)).
    pub async fn outcome(self) -> Result<Grant, Denial> {
        match self {
            Authentication::Ready(outcome) => outcome,
            Authentication::Pending(future) => future.await,
        }
    }
}

impl std::fmt::Debug for Authentication {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Authentication::Ready(outcome) => f.debug_tuple("Ready").field(outcome).finish(),
            Authentication::Pending(_) => f.write_str("Pending"),
        }
    }
}

/// Decision step 6: turns a presented credential into a [`Grant`], or a denial (`invalid_credential`,
/// `expired_credential`, `revoked_credential`, or `unavailable` when a store or key set does not answer).
///
/// Implemented by the API-key verifier and the JWT authenticator; the gate routes a credential from the API-key
/// header, or a bearer token without a `.`, to the API-key authenticator, and a bearer token with `.`s to the JWT one.
pub trait Authenticator: Send + Sync + 'static {
    /// Authenticates one credential, borrowed from the request's header: [`Authentication::Ready`] when no I/O is
    /// needed. A pending future must not borrow `self` or the credential: clone what it needs, and copy the
    /// credential with [`SecretRef::to_secret`] if it needs that (the copy is zeroized on drop).
    fn authenticate(&self, credential: SecretRef<'_>) -> Authentication;

    /// Called once by [`ScopeGateBuilder::build`](crate::layer::ScopeGateBuilder::build) with the gate's audit sink,
    /// for events that happen off the request path (a key set's refresh failing, say). The default ignores it.
    fn attach_audit(&self, sink: &std::sync::Arc<dyn crate::layer::AuditSink>) {
        let _ = sink;
    }

    /// A grant this authenticator established before for exactly these bytes and that still holds now, found
    /// without verifying anything or waiting (a cache hit); `None` otherwise. Only the crate's own authenticators
    /// answer it (the argument can't be named outside the crate), because the gate relies on the answer: it asks
    /// before checking a bearer token's characters, and skips that check on `Some`. That is sound only for bytes
    /// that passed it (or a stricter one) when they were first verified, which the JWT authenticator guarantees:
    /// it accepts only base64url segments joined by `.`, a subset of RFC 6750 `b64token`.
    #[doc(hidden)]
    fn recall(&self, credential: SecretRef<'_>, inside: sealed::Inside) -> Option<Grant> {
        let _ = (credential, inside);
        None
    }
}

/// The argument of [`Authenticator::recall`]: public, in a private module, so that no other crate can name it (and so
/// implement or call the method).
pub(crate) mod sealed {
    /// Made only inside the crate.
    #[derive(Debug, Clone, Copy)]
    pub struct Inside(pub(crate) ());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::DenialKind;

    #[test]
    fn debug_names_the_state_and_the_outcome() {
        let ready = Authentication::Ready(Err(Denial::invalid_credential("unknown API key id")));
        let shown = format!("{ready:?}");
        assert!(shown.starts_with("Ready("), "{shown}");
        assert!(shown.contains("InvalidCredential"), "{shown}");
        let pending = Authentication::Pending(Box::pin(async {
            Err(Denial::new(DenialKind::Unavailable, "store down"))
        }));
        assert_eq!(format!("{pending:?}"), "Pending");
    }
}
