#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| scopegate::fuzz::gate_file(data));
