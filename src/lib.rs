//! scopegate: scoped, need-to-know API authorization for Tower, axum and tonic services.

mod clock;
pub mod config;
pub mod credential;
mod error;
mod grant;
pub mod network;
pub mod policy;
mod secret;
pub mod testing;

pub use clock::{Clock, ManualClock, SystemClock};
pub use error::{ConfigError, Location};
pub use grant::{Attributes, CredentialKind, Grant};
pub use secret::Secret;
