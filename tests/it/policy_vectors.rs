//! Runs the decision vectors under `tests/vectors/`: a gate file, probes, and the decision each must get. Every
//! vector runs twice, through `Policy::check` and through the real layer (a request with the probe's facts and a
//! credential that authenticates as the probe's grant), and both must agree on the decision, the reason, the status
//! and the detail: a unit-tested policy decides as it does in production.

use std::collections::{BTreeMap, BTreeSet};
use std::convert::Infallible;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use http::{Method, Request, Response};
use scopegate::config::GateFile;
use scopegate::layer::{AuditEvent, AuditSink, ScopeGateLayer};
use scopegate::network::ConnectionInfo;
use scopegate::policy::{Decision, Policy};
use scopegate::testing::{Probe, StaticCredentials, TestGrant};
use serde::Deserialize;
use tower::ServiceExt;

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

/// The key the layer's request presents; it authenticates as the case's grant.
const VECTOR_KEY: &str = "vector-key";

/// A decision as both paths report it: (decision, reason, detail, status).
type Outcome = (String, String, String, u16);

/// What the layer's audit event said of the last decision.
#[derive(Clone, Default)]
struct LastEvent(Arc<Mutex<Option<Outcome>>>);

impl AuditSink for LastEvent {
    fn record(&self, event: &AuditEvent<'_>) {
        *self.0.lock().unwrap() = Some((
            event.decision.to_owned(),
            event.reason.to_owned(),
            event.detail.to_owned(),
            event.status,
        ));
    }
}

impl Case {
    /// The grant the case's credential carries, as `Probe` builds it (an API key with id `probe`).
    fn grant(&self) -> Option<TestGrant> {
        let presents = self.scopes.is_some()
            || self.superuser
            || self.attrs.is_some()
            || self.credential_allow_ips.is_some();
        if !presents {
            return None;
        }
        let mut grant = TestGrant::api_key("probe").scopes(self.scopes.clone().unwrap_or_default());
        if self.superuser {
            grant = grant.danger_superuser();
        }
        for (k, v) in self.attrs.iter().flatten() {
            grant = grant.attr(k.clone(), v.clone());
        }
        if let Some(list) = &self.credential_allow_ips {
            grant = grant.allow_ips(list.clone());
        }
        Some(grant)
    }

    /// The same case through the real layer: `(decision, reason, detail, status)` from its audit event and its
    /// response, or `None` when the path is not a request target `http` can carry (a server refuses it before
    /// any middleware runs).
    async fn through_the_layer(&self, policy: &Policy) -> Option<Outcome> {
        let audit = LastEvent::default();
        let mut credentials = StaticCredentials::new();
        if let Some(grant) = self.grant() {
            credentials = credentials.with(VECTOR_KEY, &grant);
        }
        let gate = ScopeGateLayer::builder(policy.clone())
            .api_keys(credentials)
            .danger_disable_throttle()
            .audit(audit.clone())
            .build()
            .unwrap();
        let service = tower::ServiceBuilder::new()
            .layer(gate)
            .service(tower::service_fn(|_req: Request<String>| async {
                Ok::<_, Infallible>(Response::new(String::new()))
            }));
        let mut request = Request::builder()
            .method(self.method.as_str())
            .uri(self.path.as_str())
            .body(String::new())
            .ok()?;
        if self.grant().is_some() {
            request
                .headers_mut()
                .insert("x-api-key", http::HeaderValue::from_static(VECTOR_KEY));
        }
        request.extensions_mut().insert(ConnectionInfo {
            peer: self.client_ip.as_ref().map(|ip| ip.parse().unwrap()),
            tls: self.tls,
        });
        let response = service.oneshot(request).await.unwrap();
        let (decision, reason, detail, status) = audit.0.lock().unwrap().clone().unwrap();
        assert_eq!(
            status,
            response.status().as_u16(),
            "the audit event's status is the status sent"
        );
        Some((decision, reason, detail, status))
    }

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

#[tokio::test]
async fn decision_vectors() {
    let mut failures = Vec::new();
    let mut seen_reasons = BTreeSet::new();
    let mut cases = 0;
    let mut through_layer = 0;
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
                let checked = (
                    if decision.is_allowed() {
                        "allow"
                    } else {
                        "deny"
                    }
                    .to_owned(),
                    decision.reason().to_owned(),
                    match &decision {
                        Decision::Allow { .. } => "allowed",
                        Decision::Deny(denial) => denial.detail(),
                    }
                    .to_owned(),
                    decision.status(),
                );
                match case.through_the_layer(&policy).await {
                    Some(layered) if layered != checked => failures.push(format!(
                        "{} / {} / {}: Policy::check gave {checked:?}, the layer {layered:?}",
                        file.display(),
                        suite.name,
                        case.name,
                    )),
                    Some(_) => through_layer += 1,
                    // Not a request target: a server answers 400 before any middleware, as the gate would.
                    None => assert_eq!(decision.reason(), "malformed_request", "{}", case.name),
                }
                if decision.is_allowed() {
                    allows += 1;
                } else {
                    denies += 1;
                }
                let route_ok = match (&case.route, &decision) {
                    (None, _) => true,
                    (Some(want), scopegate::policy::Decision::Allow { route, .. }) => {
                        **want == **route
                    }
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
    assert!(
        through_layer * 10 >= cases * 9,
        "only {through_layer} of {cases} vectors ran through the layer"
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
