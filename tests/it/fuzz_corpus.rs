//! Replays the committed fuzz corpus (`fuzz/corpus/<target>/`) through the same harnesses the fuzz targets run, on
//! the stable toolchain: a crash found once stays fixed.

use std::path::PathBuf;

type Harness = fn(&[u8]);

/// The CLI's value parsers live in the binary: the replay compiles the same file as the `cli_values` target does.
#[path = "../../src/bin/scopegate/values.rs"]
#[allow(unreachable_pub, dead_code)]
mod cli_values;

fn cli_values(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        cli_values::check_all(text);
    }
}

const TARGETS: &[(&str, Harness)] = &[
    ("path", scopegate::fuzz::path),
    ("credential_headers", scopegate::fuzz::credential_headers),
    ("forwarding_headers", scopegate::fuzz::forwarding_headers),
    ("scopes", scopegate::fuzz::scopes),
    ("gate_file", scopegate::fuzz::gate_file),
    ("api_key", scopegate::fuzz::api_key),
    ("cli_values", cli_values),
];

#[test]
fn the_fuzz_corpus_replays_cleanly() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
    for (target, harness) in TARGETS {
        let dir = root.join(target);
        let mut inputs = 0;
        for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let path = entry.unwrap().path();
            let data = std::fs::read(&path).unwrap();
            let outcome = std::panic::catch_unwind(|| harness(&data));
            assert!(outcome.is_ok(), "{target}: {} panics", path.display());
            inputs += 1;
        }
        assert!(inputs > 0, "no corpus for {target}");
    }
}

#[test]
fn every_fuzz_target_has_a_harness_here() {
    let targets = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz/fuzz_targets");
    let mut names: Vec<String> = std::fs::read_dir(targets)
        .unwrap()
        .map(|e| {
            e.unwrap()
                .path()
                .file_stem()
                .unwrap()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    names.sort();
    let mut replayed: Vec<String> = TARGETS.iter().map(|(n, _)| (*n).to_owned()).collect();
    replayed.sort();
    assert_eq!(names, replayed);
}
