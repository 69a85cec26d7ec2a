//! scopegate: scoped, need-to-know API authorization for Tower, axum and tonic services.

mod clock;
pub mod credential;
mod grant;
pub mod network;
pub mod policy;
mod secret;

pub use clock::{Clock, ManualClock, SystemClock};
pub use grant::{Attributes, CredentialKind, Grant};
pub use secret::Secret;
