//! Credentials: extraction from headers, API keys and JWT bearer tokens.

mod header;

pub use header::{
    CredentialSource, DEFAULT_MAX_CREDENTIAL_LEN, PresentedCredential, extract_credential,
};
