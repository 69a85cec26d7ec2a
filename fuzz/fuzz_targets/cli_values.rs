#![no_main]

// The CLI's value parsers live in the binary; the target compiles the same file (its harness is `check_all`).
#[path = "../../src/bin/scopegate/values.rs"]
mod values;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        values::check_all(text);
    }
});
