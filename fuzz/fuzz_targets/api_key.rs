#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| scopegate::fuzz::api_key(data));
