//! Credentials: API keys and JWT bearer tokens.
