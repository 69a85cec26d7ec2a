//! Credentials: API keys and JWT bearer tokens.
pub mod api_key;
