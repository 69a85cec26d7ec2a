//! Runs the decision vectors under `tests/vectors/`: a gate file, probes, and the decision each must get.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::PathBuf;

use http::Method;
use scopegate::config::GateFile;
use scopegate::testing::Probe;
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct VectorFile {
    suite: Vec<Suite>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Suite {
    name: String,
    gate: String,
    case: Vec<Case>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct Case {
    name: String,
    #[serde(default = "get")]
    method: String,
    path: String,
    #[serde(default = "yes")]
    tls: bool,
    client_ip: Option<String>,
    scopes: Option<Vec<String>>,
    #[serde(default)]
    superuser: bool,
    attrs: Option<BTreeMap<String, String>>,
    credential_allow_ips: Option<Vec<String>>,
    /// `public`, `granted`, or a denial kind.
    expect: String,
    route: Option<String>,
}

fn get() -> String {
    "GET".into()
}
fn yes() -> bool {
    true
}

impl Case {
    fn probe(&self) -> Probe {
        let method = Method::from_bytes(self.method.as_bytes()).expect("vector method");
        let mut probe = Probe::new(method, self.path.clone()).tls(self.tls);
        if let Some(ip) = &self.client_ip {
            probe = probe.client_ip(ip.parse::<IpAddr>().expect("vector client_ip"));
        }
        if let Some(scopes) = &self.scopes {
            probe = probe.scopes(scopes.clone()).authenticated();
        }
        if self.superuser {
            probe = probe.danger_superuser();
        }
        for (k, v) in self.attrs.iter().flatten() {
            probe = probe.attr(k.clone(), v.clone());
        }
        if let Some(list) = &self.credential_allow_ips {
            probe = probe.credential_allow_ips(list.clone());
        }
        probe
    }
}

fn vector_files() -> Vec<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/vectors");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("tests/vectors exists")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no vector files in {}", dir.display());
    files
}

#[test]
fn decision_vectors() {
    let mut failures = Vec::new();
    let mut seen_reasons = BTreeSet::new();
    let mut cases = 0;
    for file in vector_files() {
        let text = std::fs::read_to_string(&file).expect("read vectors");
        let vectors: VectorFile =
            toml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        for suite in vectors.suite {
            let policy = GateFile::from_toml_str(&suite.gate)
                .and_then(|g| g.policy())
                .unwrap_or_else(|e| panic!("{}: suite {:?}: {e}", file.display(), suite.name));
            let mut allows = 0;
            let mut denies = 0;
            for case in &suite.case {
                cases += 1;
                let decision = policy.check(&case.probe());
                seen_reasons.insert(decision.reason());
                if decision.is_allowed() {
                    allows += 1;
                } else {
                    denies += 1;
                }
                let route_ok = match (&case.route, &decision) {
                    (None, _) => true,
                    (Some(want), scopegate::policy::Decision::Allow { route, .. }) => want == route,
                    (Some(_), scopegate::policy::Decision::Deny(_)) => false,
                };
                if decision.reason() != case.expect || !route_ok {
                    failures.push(format!(
                        "{} / {} / {}: expected {} (route {:?}), got {:?}",
                        file.display(),
                        suite.name,
                        case.name,
                        case.expect,
                        case.route,
                        decision
                    ));
                }
            }
            assert!(
                allows > 0 && denies > 0,
                "suite {:?} needs allow and deny cases",
                suite.name
            );
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {cases} vectors failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    // Every outcome a probe can reach is exercised somewhere.
    for reason in [
        "public",
        "granted",
        "tls_required",
        "malformed_request",
        "missing_credential",
        "invalid_credential",
        "ip_not_allowed",
        "no_policy",
        "insufficient_scope",
        "resource_not_permitted",
    ] {
        assert!(seen_reasons.contains(reason), "no vector reaches {reason}");
    }
}
