//! scopegate's integration tests: one binary, one module per area.

// Test code: a failed unwrap is a failed test.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::too_many_lines
)]

mod api_keys;
mod axum_tls;
#[cfg(feature = "cli")]
mod cli;
mod fuzz_corpus;
mod gate_file;
mod grpc;
mod idp;
mod jwt;
mod layer;
mod live_keys;
#[path = "../support/minted.rs"]
mod minted;
mod oidc_interop;
mod policy_props;
mod policy_vectors;
mod route_modes;
#[cfg(feature = "cli")]
mod shared_store;
mod stores;

/// The token with one character of its signature changed (in the middle, so every bit of it is significant).
fn tamper_signature(token: &str) -> String {
    let at = token.rfind('.').unwrap() + 10;
    let mut bytes = token.as_bytes().to_vec();
    bytes[at] = if bytes[at] == b'A' { b'B' } else { b'A' };
    String::from_utf8(bytes).unwrap()
}
