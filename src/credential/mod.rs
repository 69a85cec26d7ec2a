//! Credentials: extraction from headers, API keys and JWT bearer tokens.

pub mod api_key;
mod header;
pub mod jwt;

pub use header::{
    CredentialSource, DEFAULT_MAX_CREDENTIAL_LEN, PresentedCredential, extract_credential,
};

use std::future::Future;
use std::pin::Pin;

use crate::grant::Grant;
use crate::policy::Denial;
use crate::secret::Secret;

/// The future an [`Authenticator`] returns.
pub type AuthFuture = Pin<Box<dyn Future<Output = Result<Grant, Denial>> + Send + 'static>>;

/// Decision step 6: turns a presented credential into a [`Grant`], or a denial (`invalid_credential`,
/// `expired_credential`, `revoked_credential`, or `unavailable` when a store or key set does not answer).
///
/// Implemented by the API-key verifier and the JWT authenticator; the gate routes a credential from the API-key
/// header, or a bearer token without a `.`, to the API-key authenticator, and a bearer token with `.`s to the JWT one.
pub trait Authenticator: Send + Sync + 'static {
    /// Authenticates one credential. The future must not borrow `self`: clone what it needs.
    fn authenticate(&self, credential: Secret) -> AuthFuture;
}
