//! Credentials: API keys and JWT bearer tokens.
pub mod jwt;
