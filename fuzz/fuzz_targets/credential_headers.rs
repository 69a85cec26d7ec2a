#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| scopegate::fuzz::credential_headers(data));
