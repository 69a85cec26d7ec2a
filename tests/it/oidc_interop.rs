//! Interop with a real OpenID provider: node's `oidc-provider` (`tests/oidc/provider.mjs`) issues client-credentials
//! access tokens, and `scopegate serve` finds its key set by OpenID Connect discovery over HTTPS and checks them.
//!
//! Everything is real: a CA and a `localhost` certificate made here (rcgen), the provider as a child process
//! serving HTTPS with that certificate, tokens from its token endpoint, the `scopegate` binary trusting the CA only
//! through `[jwt.fetch] ca_file`, and requests to it over TLS.
//!
//! The provider needs Node.js (20.18 or later) and `npm ci` in `tests/oidc`. Without them the test fails when `CI`
//! is set (CI never skips silently), and otherwise says loudly on stderr that it skipped.
#![cfg(feature = "cli")]

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use serde_json::Value;

const CLIENT_ID: &str = "orders-batch";
const CLIENT_SECRET: &str = "an-interop-client-secret-0123456789";
/// The resource indicator: the tokens' `aud`, and the gate's audience.
const RESOURCE: &str = "https://api.example";
/// The oldest Node.js the provider supports (`engines` in tests/oidc/package.json).
const NODE_MIN: (u32, u32) = (20, 18);
/// How long a child process may take to print its `listening on` line.
const STARTUP_LIMIT: Duration = Duration::from_secs(120);

fn oidc_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/oidc")
}

/// Why the provider cannot run here, if it cannot: no `node`, one too old, or no `npm ci` done.
fn missing_prerequisite() -> Option<String> {
    let version = match Command::new("node").arg("--version").output() {
        Ok(out) if out.status.success() => String::from_utf8_lossy(&out.stdout).trim().to_owned(),
        Ok(out) => return Some(format!("`node --version` failed ({})", out.status)),
        Err(e) => return Some(format!("`node` could not be run ({e})")),
    };
    let (major, minor) = {
        let mut parts = version.trim_start_matches('v').split('.');
        let mut next = || parts.next().and_then(|p| p.parse::<u32>().ok());
        (next(), next())
    };
    match (major, minor) {
        (Some(major), Some(minor)) if (major, minor) >= NODE_MIN => {}
        _ => {
            return Some(format!(
                "node {version} is too old or unrecognised (the provider needs {}.{} or later)",
                NODE_MIN.0, NODE_MIN.1
            ));
        }
    }
    let package = oidc_dir().join("node_modules/oidc-provider/package.json");
    if !package.is_file() {
        return Some(format!("{} does not exist", package.display()));
    }
    None
}

/// Whether to run: `false` (after a loud message) when a prerequisite is missing outside CI. Under CI (the `CI`
/// variable set), a missing prerequisite fails the test.
fn prerequisites_present() -> bool {
    let Some(reason) = missing_prerequisite() else {
        return true;
    };
    let fix = "install Node.js 20.18 or later and run `npm ci` in tests/oidc";
    assert!(
        std::env::var_os("CI").is_none(),
        "the OpenID provider interop test cannot run: {reason}; CI must not skip it: {fix}"
    );
    eprintln!();
    eprintln!("******** SKIPPED: oidc_interop (the real OpenID provider) did NOT run ********");
    eprintln!("******** reason: {reason}");
    eprintln!("******** to run it: {fix}");
    eprintln!();
    false
}

/// A child process that prints `listening on …` when ready. Killed when dropped; its stderr is collected.
struct Process {
    name: &'static str,
    child: Child,
    stderr: Option<JoinHandle<String>>,
}

impl Process {
    /// Starts `cmd` and waits (at most [`STARTUP_LIMIT`]) for its `listening on ADDR` line: the process and `ADDR`.
    fn start(name: &'static str, mut cmd: Command) -> (Process, String) {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("{name}: cannot start: {e}"));
        let stdout = child.stdout.take().unwrap();
        let stderr = child.stderr.take().unwrap();
        let stderr = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = BufReader::new(stderr).read_to_string(&mut text);
            text
        });
        let mut process = Process {
            name,
            child,
            stderr: Some(stderr),
        };
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            let _ = tx.send(lines.next());
            // Keep draining, so that the child never blocks on a full pipe.
            for _ in lines {}
        });
        let line = match rx.recv_timeout(STARTUP_LIMIT) {
            Ok(Some(Ok(line))) => line,
            Ok(other) => process.fail(&format!("no `listening on` line on stdout ({other:?})")),
            Err(_) => process.fail(&format!("no `listening on` line within {STARTUP_LIMIT:?}")),
        };
        let Some(addr) = line.strip_prefix("listening on ") else {
            process.fail(&format!("unexpected first line on stdout: {line:?}"))
        };
        let addr = addr.trim().to_owned();
        (process, addr)
    }

    /// Stops the process and panics with `why` and everything it wrote on stderr.
    fn fail(&mut self, why: &str) -> ! {
        let stderr = self.stop();
        panic!("{}: {why}\n--- its stderr ---\n{stderr}", self.name);
    }

    /// Kills the process (if still running) and returns all it wrote on stderr.
    fn stop(&mut self) -> String {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.stderr
            .take()
            .map(|h| h.join().unwrap_or_default())
            .unwrap_or_default()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A client-credentials access token for `scope`, from the provider's token endpoint.
async fn access_token(client: &reqwest::Client, issuer: &str, scope: &str) -> String {
    let form = |s: &str| utf8_percent_encode(s, NON_ALPHANUMERIC).to_string();
    let r = client
        .post(format!("{issuer}/token"))
        .basic_auth(CLIENT_ID, Some(CLIENT_SECRET))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!(
            "grant_type=client_credentials&scope={}&resource={}",
            form(scope),
            form(RESOURCE)
        ))
        .send()
        .await
        .unwrap();
    let status = r.status();
    let body = r.text().await.unwrap();
    assert_eq!(status, 200, "token request for {scope:?}: {body}");
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["scope"], scope, "{body}");
    body["access_token"].as_str().unwrap().to_owned()
}

/// A request to the gate: the status, the `WWW-Authenticate` header and the JSON body.
async fn call(
    client: &reqwest::Client,
    method: reqwest::Method,
    url: &str,
    token: &str,
) -> (u16, Option<String>, Value) {
    let r = client
        .request(method, url)
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let challenge = r
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_owned());
    let text = r.text().await.unwrap();
    let body = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{status} {text:?}: {e}"));
    (status, challenge, body)
}

#[tokio::test]
async fn tokens_of_a_real_openid_provider_are_checked_through_discovery() {
    if !prerequisites_present() {
        return;
    }
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let pki = crate::idp::pki();
    for (name, pem) in [
        ("ca.pem", &pki.ca),
        ("server.pem", &pki.cert),
        ("server.key", &pki.key),
    ] {
        std::fs::write(dir.path().join(name), pem).unwrap();
    }

    // The provider, on 127.0.0.1 only, with issuer https://localhost:PORT.
    let mut node = Command::new("node");
    node.arg(oidc_dir().join("provider.mjs"))
        .current_dir(oidc_dir())
        .env("OIDC_CERT_FILE", dir.path().join("server.pem"))
        .env("OIDC_KEY_FILE", dir.path().join("server.key"))
        .env("OIDC_PORT", "0")
        .env("OIDC_RESOURCE", RESOURCE)
        .env("OIDC_SCOPES", "orders:read orders:write")
        .env("OIDC_CLIENT_ID", CLIENT_ID)
        .env("OIDC_CLIENT_SECRET", CLIENT_SECRET)
        .env_remove("OIDC_TOKEN_TTL");
    let (mut provider, issuer) = Process::start("oidc provider", node);
    let port: u16 = issuer
        .strip_prefix("https://localhost:")
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| provider.fail(&format!("unexpected issuer {issuer:?}")));
    // It listens on 127.0.0.1 only: never let `localhost` go to ::1.
    let to_provider = super::axum_tls::client(&pki.ca, SocketAddr::from(([127, 0, 0, 1], port)));
    let reader = access_token(&to_provider, &issuer, "orders:read").await;
    let writer = access_token(&to_provider, &issuer, "orders:write").await;
    let provider_ready = started.elapsed();

    // The gate: the provider's keys by discovery, trusting the test CA; served over TLS with the same certificate.
    let gate = dir.path().join("gate.toml");
    std::fs::write(
        &gate,
        format!(
            r#"[server]
tls_cert = "server.pem"
tls_key = "server.key"

[jwt]
issuer = "{issuer}"
audience = ["{RESOURCE}"]
algorithms = ["RS256"]
typ = ["at+jwt"]
discovery = true

[jwt.fetch]
ca_file = "ca.pem"

[[route]]
path = "/v1/orders"
methods = ["GET"]
require = {{ all = ["orders:read"] }}

[[route]]
path = "/v1/orders"
methods = ["POST"]
require = {{ all = ["orders:write"] }}
"#
        ),
    )
    .unwrap();
    let mut serve = Command::new(env!("CARGO_BIN_EXE_scopegate"));
    serve
        .args(["serve", "--config", gate.to_str().unwrap()])
        .args(["--listen", "127.0.0.1:0"])
        .current_dir(dir.path())
        .env_remove("SCOPEGATE_CREDENTIAL");
    let (mut server, addr) = Process::start("scopegate serve", serve);
    let addr: SocketAddr = addr.parse().unwrap();
    let to_gate = super::axum_tls::client(&pki.ca, addr);
    let orders = format!("https://localhost:{}/v1/orders", addr.port());

    // Allowed: the read token on the read route. The principal is the provider's `sub` (the client id).
    let (status, _, body) = call(&to_gate, reqwest::Method::GET, &orders, &reader).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["kind"], "jwt", "{body}");
    assert_eq!(body["principal"], CLIENT_ID, "{body}");
    assert_eq!(body["route"], "/v1/orders", "{body}");
    let scopes: Vec<&str> = body["scopes"]
        .as_array()
        .unwrap_or_else(|| panic!("{body}"))
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    assert_eq!(scopes, ["orders:read"], "{body}");

    // Its twin: the same token on the write route, refused for the scope it lacks (and the challenge names it).
    let (status, challenge, body) = call(&to_gate, reqwest::Method::POST, &orders, &reader).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["code"], "insufficient_scope", "{body}");
    let challenge = challenge.unwrap();
    assert!(
        challenge.contains("error=\"insufficient_scope\"") && challenge.contains("orders:write"),
        "{challenge}"
    );

    // …and the write route is open to a token granted that scope.
    let (status, _, body) = call(&to_gate, reqwest::Method::POST, &orders, &writer).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["principal"], CLIENT_ID, "{body}");

    // The read token with one signature character changed: not authenticated.
    let forged = crate::tamper_signature(&reader);
    let (status, _, body) = call(&to_gate, reqwest::Method::GET, &orders, &forged).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["code"], "unauthenticated", "{body}");

    // One audit line per decision, in order, none carrying a token.
    let audit = server.stop();
    let events: Vec<Value> = audit
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}\n{audit}")))
        .collect();
    let decisions: Vec<(&str, &str)> = events
        .iter()
        .map(|e| {
            (
                e["method"].as_str().unwrap_or_default(),
                e["decision"].as_str().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        decisions,
        [
            ("GET", "allow"),
            ("POST", "deny"),
            ("POST", "allow"),
            ("GET", "deny")
        ],
        "{audit}"
    );
    assert_eq!(events[1]["reason"], "insufficient_scope", "{audit}");
    assert_eq!(events[3]["reason"], "invalid_credential", "{audit}");
    for token in [&reader, &writer, &forged] {
        let signature = &token[token.rfind('.').unwrap() + 1..];
        assert!(!audit.contains(signature), "{audit}");
    }
    let provider_log = provider.stop();
    assert!(!provider_log.contains("server_error"), "{provider_log}");
    eprintln!(
        "oidc_interop: provider up with two tokens in {provider_ready:?}, all done in {:?}",
        started.elapsed()
    );
}
