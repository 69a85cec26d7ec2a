//! Integration tests, one binary: each area adds its `mod` line.
mod api_keys;
