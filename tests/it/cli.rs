//! The `scopegate` binary end to end: keys on a real `SQLite` file, `check`, `token mint`, and `serve` over real TLS,
//! with the exit codes and one-line errors of the contract.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use serde_json::Value;

const PEPPER: &str = "an-example-pepper-of-more-than-32-bytes-0123456789";
/// The pepper a rotation moves to, in `SCOPEGATE_PEPPER_NEXT`.
const PEPPER_NEXT: &str = "the-next-pepper-also-longer-than-32-bytes-9876543210";

struct Cli {
    dir: tempfile::TempDir,
}

impl Cli {
    fn new() -> Self {
        Cli {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn store(&self) -> String {
        format!("sqlite://{}", self.path("keys.db").display())
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_scopegate"));
        cmd.args(args)
            .current_dir(self.dir.path())
            .env("SCOPEGATE_PEPPER", PEPPER)
            .env("SCOPEGATE_PEPPER_NEXT", PEPPER_NEXT)
            .env_remove("SCOPEGATE_CREDENTIAL");
        cmd
    }

    fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }

    fn json(&self, args: &[&str]) -> Value {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    fn issue(&self, extra: &[&str]) -> Value {
        let store = self.store();
        let mut args = vec![
            "keys",
            "issue",
            "--store",
            &store,
            "--name",
            "acme-reader",
            "--json",
        ];
        args.extend_from_slice(extra);
        self.json(&args)
    }

    fn gate(&self, extra: &str) -> PathBuf {
        self.gate_with(extra, "")
    }

    /// A gate file with `extra` before `[api_keys]` and `keys_extra` inside it.
    fn gate_with(&self, extra: &str, keys_extra: &str) -> PathBuf {
        let path = self.path("gate.toml");
        let text = format!(
            "{extra}\n[api_keys]\nstore = \"sqlite://keys.db\"\n{keys_extra}\n\n[[route]]\npath = \"/health\"\nmethods = [\"GET\"]\npublic = true\n\n\
             [[route]]\npath = \"/v1/tenants/{{tenant}}/invoices/{{id}}\"\nmethods = [\"GET\"]\nrequire = {{ all = [\"invoices:read\"] }}\n\
             bind = {{ tenant = \"tenant\" }}\n"
        );
        std::fs::write(&path, text).unwrap();
        path
    }

    /// `scopegate check --config GATE --method METHOD --path PATH EXTRA…`, to run as the caller needs.
    fn check_command(&self, gate: &Path, method: &str, path: &str, extra: &[&str]) -> Command {
        let gate = gate.to_str().unwrap();
        let mut args = vec![
            "check", "--config", gate, "--method", method, "--path", path,
        ];
        args.extend_from_slice(extra);
        self.command(&args)
    }

    /// A `GET` checked with `--json`: the exit code (0 or 1) and the decision.
    fn check(
        &self,
        gate: &Path,
        path: &str,
        credential: Option<&str>,
        extra: &[&str],
    ) -> (i32, Value) {
        let mut args = vec!["--json"];
        if let Some(c) = credential {
            args.extend(["--credential", c]);
        }
        args.extend_from_slice(extra);
        let out = self
            .check_command(gate, "GET", path, &args)
            .output()
            .unwrap();
        let code = out.status.code().unwrap();
        assert!(
            code == 0 || code == 1,
            "{path} {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        (code, serde_json::from_slice(&out.stdout).unwrap())
    }

    /// A `GET` check that must fail with a usage error: its one line.
    fn check_fails(&self, gate: &Path, path: &str, extra: &[&str]) -> String {
        usage_error(
            &self
                .check_command(gate, "GET", path, extra)
                .output()
                .unwrap(),
        )
    }
}

/// A pepper rotation driven by the gate file: keys under the older pepper keep working while it is listed in
/// `older_peppers`, keys issued under the new version work, and neither works without its pepper.
#[test]
fn pepper_rotation_through_the_gate_file() {
    let cli = Cli::new();
    let scope = ["--scope", "invoices:read", "--attr", "tenant=acme"];
    let old = cli.issue(&scope);
    let old_key = old["key"].as_str().unwrap().to_owned();
    let mut next_args = scope.to_vec();
    next_args.extend([
        "--pepper-env",
        "SCOPEGATE_PEPPER_NEXT",
        "--pepper-version",
        "2",
    ]);
    let new = cli.issue(&next_args);
    let new_key = new["key"].as_str().unwrap().to_owned();
    let store = cli.store();
    let listed = cli.json(&["keys", "list", "--store", &store, "--json"]);
    // Both were issued within the same second, in either order: compare as a map.
    let versions: std::collections::BTreeMap<&str, u64> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|k| {
            (
                k["id"].as_str().unwrap(),
                k["pepper_version"].as_u64().unwrap(),
            )
        })
        .collect();
    let expected = [
        (old["id"].as_str().unwrap(), 1),
        (new["id"].as_str().unwrap(), 2),
    ];
    assert_eq!(versions, expected.into_iter().collect());
    let own = "/v1/tenants/acme/invoices/7";
    let reason = |gate: &Path, key: &str| cli.check(gate, own, Some(key), &[]).1["reason"].clone();

    // During the rotation: both keys.
    let rotating = cli.gate_with(
        "",
        "pepper_env = \"SCOPEGATE_PEPPER_NEXT\"\npepper_version = 2\n\
         older_peppers = [{ env = \"SCOPEGATE_PEPPER\", version = 1 }]",
    );
    assert_eq!(reason(&rotating, &old_key), "granted");
    assert_eq!(reason(&rotating, &new_key), "granted");
    // After it: the old pepper removed, its keys refused; the new ones still work.
    let rotated = cli.gate_with(
        "",
        "pepper_env = \"SCOPEGATE_PEPPER_NEXT\"\npepper_version = 2",
    );
    assert_eq!(reason(&rotated, &old_key), "invalid_credential");
    assert_eq!(reason(&rotated, &new_key), "granted");
    // The right bytes under the wrong version never verify.
    let mislabelled = cli.gate_with("", "pepper_env = \"SCOPEGATE_PEPPER_NEXT\"");
    assert_eq!(reason(&mislabelled, &new_key), "invalid_credential");

    // Bad rotations are refused with one line naming the field.
    let gate_of = |keys_extra: &str| cli.gate_with("", keys_extra);
    let fails = |gate: &Path| cli.check_fails(gate, own, &["--credential", &old_key]);
    let duplicate = fails(&gate_of(
        "older_peppers = [{ env = \"SCOPEGATE_PEPPER_NEXT\", version = 1 }]",
    ));
    assert!(
        duplicate.contains("older_peppers") && duplicate.contains("version 1"),
        "{duplicate}"
    );
    let unset = fails(&gate_of(
        "older_peppers = [{ env = \"NO_SUCH_PEPPER\", version = 0 }]",
    ));
    assert!(
        unset.contains("older_peppers") && unset.contains("NO_SUCH_PEPPER"),
        "{unset}"
    );
    let misspelt = fails(&gate_of(
        "older_peppers = [{ var = \"SCOPEGATE_PEPPER\", version = 0 }]",
    ));
    assert!(misspelt.contains("unknown field `var`"), "{misspelt}");
}

/// `keys --config` takes the store, pepper and prefix from the gate file, so issued keys are what the gate verifies.
#[test]
fn keys_commands_read_the_gate_file() {
    let cli = Cli::new();
    let gate = cli.gate_with(
        "",
        "prefix = \"acme_live\"\npepper_env = \"SCOPEGATE_PEPPER_NEXT\"\npepper_version = 2",
    );
    let config = gate.to_str().unwrap();
    let issued = cli.json(&[
        "keys",
        "issue",
        "--config",
        config,
        "--name",
        "svc",
        "--scope",
        "invoices:read",
        "--attr",
        "tenant=acme",
        "--json",
    ]);
    let key = issued["key"].as_str().unwrap();
    assert!(key.starts_with("acme_live_"), "{key}");
    let own = "/v1/tenants/acme/invoices/7";
    assert_eq!(cli.check(&gate, own, Some(key), &[]).1["reason"], "granted");
    let listed = cli.json(&["keys", "list", "--config", config, "--json"]);
    assert_eq!(listed[0]["pepper_version"], 2);
    // Twin: a key issued with the default flags does not fit this gate.
    let plain = cli.issue(&["--scope", "invoices:read", "--attr", "tenant=acme"]);
    let plain = plain["key"].as_str().unwrap();
    assert_eq!(
        cli.check(&gate, own, Some(plain), &[]).1["reason"],
        "invalid_credential"
    );
    // A gate file without [api_keys], and no store at all: refused.
    let bare = cli.path("bare.toml");
    std::fs::write(
        &bare,
        "[[route]]\npath = \"/x\"\nmethods = [\"GET\"]\npublic = true\n",
    )
    .unwrap();
    let err = usage_error(&cli.run(&["keys", "list", "--config", bare.to_str().unwrap()]));
    assert!(
        err.contains("bare.toml") && err.contains("[api_keys]"),
        "{err}"
    );
    let out = cli.run(&["keys", "list"]);
    assert_eq!(out.status.code(), Some(2));
}

fn usage_error(out: &Output) -> String {
    assert_eq!(
        out.status.code(),
        Some(2),
        "stdout {}",
        String::from_utf8_lossy(&out.stdout)
    );
    let err = String::from_utf8(out.stderr.clone()).unwrap();
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err:?}");
    err
}

#[test]
fn issue_check_rotate_revoke() {
    let cli = Cli::new();
    let issued = cli.issue(&[
        "--scope",
        "invoices:read",
        "--allow-ip",
        "127.0.0.0/8",
        "--attr",
        "tenant=acme",
        "--expires-in",
        "30d",
    ]);
    let key = issued["key"].as_str().unwrap().to_owned();
    let id = issued["id"].as_str().unwrap().to_owned();
    assert!(key.starts_with("sg_"));
    assert_eq!(issued["scopes"], serde_json::json!(["invoices:read"]));
    assert_eq!(issued["allow_ips"], serde_json::json!(["127.0.0.0/8"]));
    assert_eq!(issued["attrs"]["tenant"], "acme");
    assert!(issued["expires_at"].as_str().unwrap().ends_with('Z'));

    let gate = cli.gate("");
    let own = "/v1/tenants/acme/invoices/7";
    let (code, out) = cli.check(&gate, own, Some(&key), &["--client-ip", "127.0.0.1"]);
    assert_eq!(
        (code, out["decision"].as_str(), out["status"].as_u64()),
        (0, Some("allow"), Some(200))
    );
    assert_eq!(out["reason"], "granted");
    assert_eq!(out["route"], "/v1/tenants/{tenant}/invoices/{id}");
    // Deny twins.
    let (code, out) = cli.check(
        &gate,
        "/v1/tenants/globex/invoices/7",
        Some(&key),
        &["--client-ip", "127.0.0.1"],
    );
    assert_eq!(
        (code, out["reason"].as_str()),
        (1, Some("resource_not_permitted"))
    );
    let (_, out) = cli.check(&gate, own, Some(&key), &["--client-ip", "192.0.2.1"]);
    assert_eq!(out["reason"], "ip_not_allowed");
    let (_, out) = cli.check(&gate, own, Some(&key), &[]);
    assert_eq!(
        out["reason"], "ip_not_allowed",
        "unknown client IP with a restricted key"
    );
    let (_, out) = cli.check(
        &gate,
        own,
        Some(&key),
        &["--client-ip", "127.0.0.1", "--no-tls"],
    );
    assert_eq!(out["reason"], "tls_required");
    let (_, out) = cli.check(&gate, own, None, &[]);
    assert_eq!(
        (out["reason"].as_str(), out["status"].as_u64()),
        (Some("missing_credential"), Some(401))
    );
    let (_, out) = cli.check(
        &gate,
        "/v1/tenants/acme/../globex/invoices/7",
        Some(&key),
        &[],
    );
    assert_eq!(out["reason"], "malformed_request");
    let (_, out) = cli.check(&gate, "/health", None, &[]);
    assert_eq!(out["reason"], "public");

    // The credential from stdin and from SCOPEGATE_CREDENTIAL, never only from the command line.
    let mut child = cli
        .check_command(
            &gate,
            "GET",
            own,
            &["--credential", "-", "--client-ip", "127.0.0.1"],
        )
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{key}\n").as_bytes())
        .unwrap();
    assert!(child.wait_with_output().unwrap().status.success());
    let out = cli
        .check_command(&gate, "GET", own, &["--client-ip", "127.0.0.1"])
        .env("SCOPEGATE_CREDENTIAL", &key)
        .output()
        .unwrap();
    assert!(out.status.success());

    // The list never shows secrets or hashes.
    let store = cli.store();
    let list = cli.run(&["keys", "list", "--store", &store, "--json"]);
    let text = String::from_utf8(list.stdout).unwrap();
    assert!(
        text.contains(&id) && !text.contains(&key[3..]) && !text.contains("hash"),
        "{text}"
    );

    // Rotation with grace: both keys work, the new one replaces the old.
    let rotated = cli.json(&[
        "keys", "rotate", "--store", &store, &id, "--grace", "1h", "--json",
    ]);
    assert_eq!(rotated["replaces"], id.as_str());
    let new_key = rotated["key"].as_str().unwrap().to_owned();
    assert_eq!(rotated["attrs"]["tenant"], "acme");
    for k in [&key, &new_key] {
        let (code, _) = cli.check(&gate, own, Some(k), &["--client-ip", "127.0.0.1"]);
        assert_eq!(code, 0);
    }
    // Revocation is final and immediate for the CLI's fresh process.
    assert!(
        cli.run(&["keys", "revoke", "--store", &store, &id])
            .status
            .success()
    );
    let (code, out) = cli.check(&gate, own, Some(&key), &["--client-ip", "127.0.0.1"]);
    assert_eq!(
        (code, out["reason"].as_str()),
        (1, Some("revoked_credential"))
    );
    let (code, _) = cli.check(&gate, own, Some(&new_key), &["--client-ip", "127.0.0.1"]);
    assert_eq!(code, 0);
    // A revoked key cannot be rotated.
    let err = usage_error(&cli.run(&["keys", "rotate", "--store", &store, &id]));
    assert!(err.contains("revoked"), "{err}");
}

#[test]
fn bad_input_exits_2_with_one_line() {
    let cli = Cli::new();
    let store = cli.store();
    // `check` never creates a store: a missing one is an error at start.
    let gate = cli.gate("");
    let err = cli.check_fails(&gate, "/health", &[]);
    assert!(err.contains("does not exist"), "{err}");
    let long_name = "n".repeat(2000);
    assert!(
        !cli.path("keys.db").exists(),
        "check must never create a store"
    );
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec![
                "keys", "issue", "--store", &store, "--name", "x", "--scope", "*",
            ],
            "--scope",
        ),
        (
            vec![
                "keys", "issue", "--store", &store, "--name", "x", "--scope", "a b",
            ],
            "--scope",
        ),
        (
            vec![
                "keys", "issue", "--store", &store, "--name", "x", "--scope", "a", "--attr", "t=1",
                "--attr", "t=2",
            ],
            "--attr",
        ),
        (
            vec![
                "keys",
                "issue",
                "--store",
                &store,
                "--name",
                "x",
                "--scope",
                "a",
                "--allow-ip",
                "10.9.7.7/16",
            ],
            "10.9.0.0/16",
        ),
        (
            vec![
                "keys",
                "issue",
                "--store",
                &store,
                "--name",
                "x",
                "--scope",
                "a",
                "--expires-in",
                "2w",
            ],
            "--expires-in",
        ),
        (
            vec![
                "keys",
                "issue",
                "--store",
                "postgres://x",
                "--name",
                "x",
                "--scope",
                "a",
            ],
            "--store",
        ),
        (
            vec!["keys", "issue", "--store", &store, "--name", "x"],
            "--scope",
        ),
        (
            vec!["keys", "revoke", "--store", &store, "0123456789abcdef"],
            "0123456789abcdef",
        ),
        (vec!["keys", "frobnicate"], "frobnicate"),
        // Non-ASCII, empty and huge values: exit 2 naming the flag, never a panic (exit 101).
        (
            vec![
                "keys",
                "issue",
                "--store",
                &store,
                "--name",
                "x",
                "--scope",
                "a",
                "--expires-in",
                "5é",
            ],
            "--expires-in",
        ),
        (
            vec![
                "keys",
                "rotate",
                "--store",
                &store,
                "0123456789abcdef",
                "--grace",
                "1é",
            ],
            "--grace",
        ),
        (
            vec![
                "keys",
                "rotate",
                "--store",
                &store,
                "0123456789abcdef",
                "--grace",
                "-1h",
            ],
            "--grace",
        ),
        (
            vec![
                "keys",
                "issue",
                "--store",
                &store,
                "--name",
                "x",
                "--scope",
                "a",
                "--expires-in",
                "",
            ],
            "--expires-in",
        ),
        (
            vec![
                "keys", "issue", "--store", &store, "--name", "x", "--scope", "a", "--attr",
                "tenant=",
            ],
            "--attr",
        ),
        (
            vec![
                "keys", "issue", "--store", &store, "--name", "", "--scope", "a",
            ],
            "--name",
        ),
        (
            vec![
                "keys", "issue", "--store", &store, "--name", &long_name, "--scope", "a",
            ],
            "--name",
        ),
        (
            vec![
                "keys",
                "issue",
                "--store",
                &store,
                "--name",
                "x",
                "--scope",
                "a",
                "--pepper-version",
                "-1",
            ],
            "--pepper-version",
        ),
        (
            vec![
                "token",
                "mint",
                "--signing-key",
                "absent.pem",
                "--kid",
                "",
                "--issuer",
                "i",
                "--audience",
                "a",
                "--subject",
                "s",
                "--scope",
                "a",
            ],
            "--kid",
        ),
        (
            vec![
                "token",
                "mint",
                "--signing-key",
                "absent.pem",
                "--kid",
                "k",
                "--issuer",
                "i",
                "--audience",
                "a",
                "--subject",
                "s",
                "--scope",
                "a",
                "--expires-in",
                "1ｍ",
            ],
            "--expires-in",
        ),
        (
            vec![
                "check",
                "--config",
                "absent.toml",
                "--method",
                "GET",
                "--path",
                "/",
            ],
            "absent.toml",
        ),
    ];
    for (args, needle) in cases {
        let err = usage_error(&cli.run(&args));
        assert!(err.contains(needle), "{args:?}: {err}");
    }
    // The pepper: missing, or too short.
    let out = cli
        .command(&["keys", "list", "--store", &store])
        .env_remove("SCOPEGATE_PEPPER")
        .output()
        .unwrap();
    assert!(usage_error(&out).contains("SCOPEGATE_PEPPER"));
    let out = cli
        .command(&["keys", "list", "--store", &store])
        .env("SCOPEGATE_PEPPER", "short")
        .output()
        .unwrap();
    assert!(usage_error(&out).contains("SCOPEGATE_PEPPER"));
    // A gate file with an error names file, line and field; check never creates a store.
    std::fs::write(
        cli.path("bad.toml"),
        "[[route]]\npath = \"/x\"\nmethods = [\"get\"]\npublic = true\n",
    )
    .unwrap();
    let err = cli.check_fails(Path::new("bad.toml"), "/x", &[]);
    assert!(
        err.contains("bad.toml:1") && err.contains("methods"),
        "{err}"
    );
    // The store exists from here on, so that the errors below are the ones that stop `check`.
    cli.issue(&["--scope", "a"]);
    // A key set file that is missing or invalid stops `check` at start, naming the file.
    let jwt_gate = cli.gate("[jwt]\nissuer = \"https://iss\"\naudience = \"api\"\nalgorithms = [\"ES256\"]\njwks_file = \"absent-jwks.json\"\n");
    let err = cli.check_fails(&jwt_gate, "/health", &[]);
    assert!(err.contains("absent-jwks.json"), "{err}");
    std::fs::write(cli.path("absent-jwks.json"), "{\"keys\": 5}").unwrap();
    let err = cli.check_fails(&jwt_gate, "/health", &[]);
    assert!(err.contains("absent-jwks.json"), "{err}");
    // Bad check flags, each given once (so that `check` itself refuses them, not the argument parser).
    let gate = cli.gate("");
    for (flag, method, path, extra) in [
        (
            "--client-ip",
            "GET",
            "/health",
            &["--client-ip", "010.0.0.1"][..],
        ),
        ("--method", "get", "/health", &[]),
        ("--path", "GET", "no-slash", &[]),
    ] {
        let err = usage_error(
            &cli.check_command(&gate, method, path, extra)
                .output()
                .unwrap(),
        );
        assert!(err.contains(flag), "{err}");
    }
}

#[test]
fn minted_tokens_are_checked_against_the_jwks() {
    use scopegate::credential::jwt::{SigningKey, TokenIssuer};
    let cli = Cli::new();
    let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    std::fs::write(cli.path("signing.pem"), pair.serialize_pem()).unwrap();
    let issuer = TokenIssuer::new(
        SigningKey::from_pem(pair.serialize_pem().as_bytes()).unwrap(),
        "k1",
        "https://iss",
        "api",
    );
    std::fs::write(cli.path("jwks.json"), issuer.jwks_json()).unwrap();
    cli.issue(&["--scope", "unused"]);
    let gate = cli.gate("[jwt]\nissuer = \"https://iss\"\naudience = \"api\"\nalgorithms = [\"ES256\"]\njwks_file = \"jwks.json\"\nattr_claims = [\"tenant\"]\n");
    let mint = |scope: &str| {
        let out = cli.run(&[
            "token",
            "mint",
            "--signing-key",
            "signing.pem",
            "--kid",
            "k1",
            "--issuer",
            "https://iss",
            "--audience",
            "api",
            "--subject",
            "user-1",
            "--scope",
            scope,
            "--expires-in",
            "5m",
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    };
    // The token has no tenant attribute, so use the public route and an unlisted one to see allow and deny.
    let token = mint("invoices:read");
    let (code, out) = cli.check(&gate, "/v1/tenants/acme/invoices/7", Some(&token), &[]);
    assert_eq!(
        (code, out["reason"].as_str()),
        (1, Some("resource_not_permitted")),
        "authenticated, no tenant"
    );
    let (code, out) = cli.check(
        &gate,
        "/v1/tenants/acme/invoices/7",
        Some(&mint("orders:read")),
        &[],
    );
    assert_eq!(
        (code, out["reason"].as_str()),
        (1, Some("insufficient_scope"))
    );
    let forged = crate::tamper_signature(&token);
    let (_, out) = cli.check(&gate, "/v1/tenants/acme/invoices/7", Some(&forged), &[]);
    assert!(out["reason"] == "invalid_credential", "{out}");
}

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn serve_over_tls_audits_without_secrets() {
    let cli = Cli::new();
    let issued = cli.issue(&["--scope", "invoices:read", "--attr", "tenant=acme"]);
    let key = issued["key"].as_str().unwrap().to_owned();
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    std::fs::write(cli.path("cert.pem"), cert.cert.pem()).unwrap();
    std::fs::write(cli.path("key.pem"), cert.signing_key.serialize_pem()).unwrap();
    let gate = cli.gate("[server]\ntls_cert = \"cert.pem\"\ntls_key = \"key.pem\"\n");
    let (server, addr, stderr) = start_serve(&cli, &gate);
    let client = super::axum_tls::client(&cert.cert.pem(), addr);
    let base = format!("https://localhost:{}", addr.port());
    let r = client
        .get(format!("{base}/v1/tenants/acme/invoices/7?sig=querysecret"))
        .header("x-api-key", &key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/json");
    let body: Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
    assert_eq!(body["principal"], issued["id"]);
    assert_eq!(body["kind"], "api_key");
    assert_eq!(body["route"], "/v1/tenants/{tenant}/invoices/{id}");
    assert_eq!(body["client_ip"], "127.0.0.1");
    assert_eq!(body["attrs"]["tenant"], "acme");
    let r = client
        .get(format!("{base}/v1/tenants/globex/invoices/7"))
        .header("x-api-key", &key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert!(!r.text().await.unwrap().contains(&key));
    let r = client.get(format!("{base}/health")).send().await.unwrap();
    let body: Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
    assert_eq!(body["kind"], "anonymous");
    drop(server);
    let mut audit = String::new();
    std::io::Read::read_to_string(&mut BufReader::new(stderr), &mut audit).unwrap();
    let events: Vec<Value> = audit
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(events.len(), 3, "{audit}");
    assert_eq!(events[0]["decision"], "allow");
    assert_eq!(events[0]["path"], "/v1/tenants/acme/invoices/7");
    assert_eq!(events[1]["reason"], "resource_not_permitted");
    for field in [
        "decision",
        "reason",
        "status",
        "credential_id",
        "client_ip",
        "method",
        "path",
        "route",
    ] {
        assert!(events[0].get(field).is_some(), "{field}");
    }
    assert!(
        !audit.contains(&key[3..]) && !audit.contains("querysecret"),
        "{audit}"
    );
}

/// `serve` with the gate file `gate`: the process, its address and its stderr (the audit stream).
fn start_serve(
    cli: &Cli,
    gate: &Path,
) -> (Server, std::net::SocketAddr, std::process::ChildStderr) {
    let mut child = cli
        .command(&[
            "serve",
            "--config",
            gate.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("{line:?}"))
        .parse()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    (Server(child), addr, stderr)
}

/// A gate with a discovered issuer (the test provider), a protected resource whose identifier is the tokens'
/// audience, and one route.
fn live_gate(cli: &Cli, idp: &crate::idp::Idp, resource: bool) -> PathBuf {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    std::fs::write(cli.path("cert.pem"), cert.cert.pem()).unwrap();
    std::fs::write(cli.path("key.pem"), cert.signing_key.serialize_pem()).unwrap();
    std::fs::write(cli.path("server-ca.pem"), cert.cert.pem()).unwrap();
    std::fs::write(cli.path("idp-ca.pem"), idp.ca_pem()).unwrap();
    let issuer = idp.issuer();
    let resource = if resource {
        format!(
            "[resource]\nuri = \"https://api.example\"\nauthorization_servers = [\"{issuer}\"]\n"
        )
    } else {
        String::new()
    };
    let text = format!(
        "[server]\ntls_cert = \"cert.pem\"\ntls_key = \"key.pem\"\n\n\
         [jwt]\nissuer = \"{issuer}\"\naudience = [\"orders-api\"]\nalgorithms = [\"EdDSA\"]\ndiscovery = true\n\n\
         [jwt.fetch]\nca_file = \"idp-ca.pem\"\nrefresh_seconds = 1\nunknown_kid_cooldown_seconds = 1\nmax_stale_seconds = 60\ntimeout_seconds = 2\n\n\
         {resource}\n\
         [[route]]\npath = \"/v1/orders\"\nmethods = [\"GET\"]\nrequire = {{ all = [\"orders:read\"] }}\n"
    );
    let path = cli.path("live.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// `serve` starts while the identity provider's key set is down (its tokens get 503, not 401), audits the
/// failure, and serves them once the provider is back, without a restart. The resource identifier is an accepted
/// audience, and 401 challenges point at the protected resource metadata.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_with_discovery_survives_an_outage_and_serves_resource_metadata() {
    use crate::idp::{Idp, Mode};
    let idp = Idp::start("k1", "https://api.example").await;
    idp.set_mode(Mode::Fail);
    let cli = Cli::new();
    let gate = live_gate(&cli, &idp, true);
    let (server, addr, stderr) = start_serve(&cli, &gate);
    let ca = std::fs::read_to_string(cli.path("server-ca.pem")).unwrap();
    let client = super::axum_tls::client(&ca, addr);
    let base = format!("https://localhost:{}", addr.port());
    let token = idp.token("svc-billing", &["orders:read"]);
    let get = |token: &str| {
        client
            .get(format!("{base}/v1/orders"))
            .bearer_auth(token)
            .send()
    };
    let r = get(&token).await.unwrap();
    assert_eq!(r.status(), 503, "the outage is not a silent 401");
    assert!(!r.text().await.unwrap().contains(&token));

    idp.set_mode(Mode::Normal);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    let r = loop {
        let r = get(&token).await.unwrap();
        if r.status() != 503 || std::time::Instant::now() > deadline {
            break r;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    assert_eq!(r.status(), 200, "recovered without a restart");
    let body: Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
    assert_eq!(body["principal"], "svc-billing");
    assert_eq!(body["kind"], "jwt");
    // Refused twin: a token without the scope.
    let r = get(&idp.token("svc-billing", &["orders:write"]))
        .await
        .unwrap();
    assert_eq!(r.status(), 403);

    // RFC 9728: the document without a credential, and the challenge pointing at it.
    let r = client
        .get(format!("{base}/.well-known/oauth-protected-resource"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let doc: Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
    assert_eq!(doc["resource"], "https://api.example");
    assert_eq!(doc["authorization_servers"][0], idp.issuer());
    assert_eq!(doc["scopes_supported"], serde_json::json!(["orders:read"]));
    let r = client
        .get(format!("{base}/v1/orders"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let challenge = r.headers()["www-authenticate"].to_str().unwrap().to_owned();
    assert!(
        challenge.contains(
            "resource_metadata=\"https://api.example/.well-known/oauth-protected-resource\""
        ),
        "{challenge}"
    );

    drop(server);
    let mut audit = String::new();
    std::io::Read::read_to_string(&mut BufReader::new(stderr), &mut audit).unwrap();
    let events: Vec<Value> = audit
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let refresh = |outcome: &str| {
        events
            .iter()
            .find(|e| e["event"] == "key_set_refresh" && e["outcome"] == outcome)
            .cloned()
    };
    let failed = refresh("failed").unwrap_or_else(|| panic!("{audit}"));
    assert_eq!(failed["issuer"], idp.issuer());
    assert!(
        failed["cause"].as_str().unwrap().contains("500"),
        "{failed}"
    );
    assert!(refresh("recovered").is_some(), "{audit}");
    assert!(
        events
            .iter()
            .any(|e| e["reason"] == "unavailable" && e["status"] == 503),
        "{audit}"
    );
    assert!(!audit.contains(&token), "{audit}");
}

/// Without `[resource]`, a token whose audience is only the resource identifier is refused: the identifier is an
/// audience because of `[resource]`, not by accident.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_resource_identifier_is_an_audience_only_when_configured() {
    let idp = crate::idp::Idp::start("k1", "https://api.example").await;
    let token = idp.token("svc", &["orders:read"]);
    for (resource, expected) in [(true, 0), (false, 1)] {
        let cli = Cli::new();
        let gate = live_gate(&cli, &idp, resource);
        let out = cli
            .check_command(
                &gate,
                "GET",
                "/v1/orders",
                &["--json", "--credential", &token, "--tls"],
            )
            .output()
            .unwrap();
        assert_eq!(
            out.status.code(),
            Some(expected),
            "{resource}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Live key sets in the gate file fail at load, exit 2 with one line naming the field: plain HTTP, bounds out of
/// range, two key sources at once, a shared key set for several issuers.
#[test]
fn live_key_set_settings_are_checked_at_load() {
    let cli = Cli::new();
    let jwt = |body: &str| {
        let path = cli.path("bad.toml");
        std::fs::write(
            &path,
            format!("{body}\n[[route]]\npath = \"/x\"\nmethods = [\"GET\"]\nrequire = {{ all = [\"a\"] }}\n"),
        )
        .unwrap();
        cli.check_fails(&path, "/x", &[])
    };
    let base = "[jwt]\nissuer = \"https://login.example\"\naudience = [\"api\"]\nalgorithms = [\"RS256\"]\n";
    for (extra, needle) in [
        ("jwks_url = \"http://login.example/keys\"\n", "jwks_url"),
        (
            "discovery = true\njwks_url = \"https://login.example/keys\"\n",
            "exclude each other",
        ),
        (
            "discovery = true\n[jwt.fetch]\nrefresh_seconds = 0\n",
            "refresh_seconds",
        ),
        (
            "discovery = true\n[jwt.fetch]\nrefresh_seconds = 600\nmax_stale_seconds = 300\n",
            "max_stale_seconds",
        ),
        (
            "discovery = true\n[jwt.fetch]\ntimeout_seconds = 0\n",
            "timeout_seconds",
        ),
        (
            "discovery = true\n[jwt.fetch]\nca_file = \"missing.pem\"\n",
            "missing.pem",
        ),
        ("", "jwks_file"),
    ] {
        let line = jwt(&format!("{base}{extra}"));
        assert!(line.contains(needle), "{extra}: {line}");
    }
    let line = jwt(
        "[jwt]\naudience = [\"api\"]\nalgorithms = [\"RS256\"]\njwks_url = \"https://a.example/keys\"\n\
         [[jwt.issuers]]\nissuer = \"https://a.example\"\ndiscovery = true\n",
    );
    assert!(
        line.contains("[jwt]") && line.contains("never shared"),
        "{line}"
    );
    let line = jwt("[jwt]\naudience = [\"api\"]\nalgorithms = [\"RS256\"]\n\
         [[jwt.issuers]]\nissuer = \"https://a.example\"\ndiscovery = true\n\
         [[jwt.issuers]]\nissuer = \"http://b.example\"\ndiscovery = true\n");
    assert!(
        line.contains("[[jwt.issuers]] #2") && line.contains("https://"),
        "{line}"
    );
    let line = jwt(&format!(
        "{base}discovery = true\n[resource]\nuri = \"http://api.example\"\n"
    ));
    assert!(
        line.contains("[resource]") && line.contains("uri"),
        "{line}"
    );
}

/// `[[jwt.issuers]]` from the gate file: each entry verifies its own issuer's tokens with its own key set, takes
/// `[jwt]`'s values as defaults, and a key of one issuer never verifies a token naming the other, though both
/// publish the `kid` "k1".
#[test]
fn several_issuers_from_the_gate_file_never_share_keys() {
    use scopegate::credential::jwt::{MintRequest, SigningKey, TokenIssuer};
    use scopegate::policy::ScopeSet;
    let cli = Cli::new();
    cli.issue(&["--scope", "unused"]);
    let signer = |issuer: &str, audience: &str| {
        let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        TokenIssuer::new(
            SigningKey::from_pem(pair.serialize_pem().as_bytes()).unwrap(),
            "k1",
            issuer,
            audience,
        )
    };
    let acme = signer("https://acme.example", "api");
    let globex = signer("https://globex.example", "globex-api");
    let intruder = signer("https://acme.example", "api");
    std::fs::write(cli.path("acme.json"), acme.jwks_json()).unwrap();
    std::fs::write(cli.path("globex.json"), globex.jwks_json()).unwrap();
    let gate = cli.gate(
        "[jwt]\naudience = \"api\"\nalgorithms = [\"ES256\"]\n\
         [[jwt.issuers]]\nissuer = \"https://acme.example\"\njwks_file = \"acme.json\"\n\
         [[jwt.issuers]]\nissuer = \"https://globex.example\"\naudience = \"globex-api\"\njwks_file = \"globex.json\"\n",
    );
    let mint = |issuer: &TokenIssuer| {
        let request = MintRequest::new(
            "svc",
            ScopeSet::parse(["invoices:read"]).unwrap(),
            std::time::Duration::from_secs(300),
        );
        issuer
            .issue(&request)
            .unwrap()
            .expose_str()
            .unwrap()
            .to_owned()
    };
    let path = "/v1/tenants/acme/invoices/7";
    // Authenticated (then refused for the missing tenant attribute): each issuer's own token.
    for token in [mint(&acme), mint(&globex)] {
        let (_, out) = cli.check(&gate, path, Some(&token), &["--tls"]);
        assert_eq!(out["reason"], "resource_not_permitted", "{out}");
    }
    // Another key under acme's name and kid: refused.
    let (code, out) = cli.check(&gate, path, Some(&mint(&intruder)), &["--tls"]);
    assert_eq!(
        (code, out["reason"].as_str()),
        (1, Some("invalid_credential"))
    );
}

/// The `keys` commands and `check` on PostgreSQL: a database without the schema is refused (naming `keys migrate`),
/// `keys migrate` creates it and changes nothing the second time, then issue, check, revoke and check again.
#[tokio::test]
async fn keys_and_check_on_postgres() {
    let Some(server) = crate::stores::postgres_server() else {
        return;
    };
    let url = crate::stores::fresh_database(&server).await;
    let cli = Cli::new();
    let issue = || {
        cli.run(&[
            "keys",
            "issue",
            "--store",
            &url,
            "--name",
            "pg",
            "--scope",
            "invoices:read",
            "--attr",
            "tenant=acme",
            "--json",
        ])
    };
    let line = usage_error(&issue());
    assert!(line.contains("keys migrate"), "{line}");
    for _ in 0..2 {
        let out = cli.run(&["keys", "migrate", "--store", &url]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let out = issue();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let issued: Value = serde_json::from_slice(&out.stdout).unwrap();
    let key = issued["key"].as_str().unwrap();
    let id = issued["id"].as_str().unwrap();
    let gate = cli.gate_with("", "").to_str().unwrap().to_owned();
    let text = std::fs::read_to_string(&gate).unwrap().replace(
        "store = \"sqlite://keys.db\"",
        &format!("store = \"{url}\""),
    );
    std::fs::write(&gate, text).unwrap();
    let gate = PathBuf::from(gate);
    let path = "/v1/tenants/acme/invoices/7";
    let (code, out) = cli.check(&gate, path, Some(key), &["--tls"]);
    assert_eq!(
        (code, out["decision"].as_str()),
        (0, Some("allow")),
        "{out}"
    );
    let out = cli.run(&["keys", "revoke", "--store", &url, id]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (code, out) = cli.check(&gate, path, Some(key), &["--tls"]);
    assert_eq!(
        (code, out["reason"].as_str()),
        (1, Some("revoked_credential"))
    );
    let listed = cli.json(&["keys", "list", "--store", &url, "--json"]);
    assert_eq!(listed[0]["id"], id);
    assert!(!listed.to_string().contains(&key[3..]));
}

/// `keys disable|enable`, `--rate-limit`, and the status, rate limit and last use that `keys list --json` shows.
#[test]
fn disable_enable_and_rate_limits() {
    let cli = Cli::new();
    let store = cli.store();
    let issued = cli.issue(&[
        "--scope",
        "invoices:read",
        "--attr",
        "tenant=acme",
        "--rate-limit",
        "100/m",
    ]);
    assert_eq!(issued["rate_limit"], "100/m");
    let id = issued["id"].as_str().unwrap().to_owned();
    let key = issued["key"].as_str().unwrap().to_owned();
    let gate = cli.gate("");
    let own = "/v1/tenants/acme/invoices/7";
    let listed = |id: &str| {
        let list = cli.json(&["keys", "list", "--store", &store, "--json"]);
        list.as_array()
            .unwrap()
            .iter()
            .find(|k| k["id"] == id)
            .cloned()
            .unwrap()
    };
    let entry = listed(&id);
    assert_eq!(
        (
            &entry["status"],
            &entry["rate_limit"],
            &entry["last_used_at"]
        ),
        (&Value::from("active"), &Value::from("100/m"), &Value::Null)
    );

    // Disabled: refused as disabled_credential (401); enabled: allowed again.
    assert!(
        cli.run(&["keys", "disable", "--store", &store, &id])
            .status
            .success()
    );
    assert_eq!(listed(&id)["status"], "disabled");
    let (code, out) = cli.check(&gate, own, Some(&key), &["--tls"]);
    assert_eq!(
        (code, out["reason"].as_str(), out["status"].as_u64()),
        (1, Some("disabled_credential"), Some(401))
    );
    // A disabled key cannot be rotated.
    let refused = usage_error(&cli.run(&["keys", "rotate", "--store", &store, &id]));
    assert!(refused.contains("disabled"), "{refused}");
    assert!(
        cli.run(&["keys", "enable", "--store", &store, &id])
            .status
            .success()
    );
    assert_eq!(listed(&id)["status"], "active");
    let (code, _) = cli.check(&gate, own, Some(&key), &["--tls"]);
    assert_eq!(code, 0);

    // Rotation copies the limit, or sets the one given.
    let copied = cli.json(&["keys", "rotate", "--store", &store, &id, "--json"]);
    assert_eq!(copied["rate_limit"], "100/m");
    let copied_id = copied["id"].as_str().unwrap().to_owned();
    let replaced = cli.json(&[
        "keys",
        "rotate",
        "--store",
        &store,
        &copied_id,
        "--rate-limit",
        "5/s",
        "--json",
    ]);
    assert_eq!(replaced["rate_limit"], "5/s");
    // Rotated with no grace: the old key is revoked, and revocation is final.
    assert_eq!(listed(&id)["status"], "revoked");
    let refused = usage_error(&cli.run(&["keys", "enable", "--store", &store, &id]));
    assert!(refused.contains("revocation is final"), "{refused}");
    let (_, out) = cli.check(&gate, own, Some(&key), &["--tls"]);
    assert_eq!(out["reason"], "revoked_credential");
    // A key without a limit lists null.
    let plain = cli.issue(&["--scope", "invoices:read"]);
    assert_eq!(
        listed(plain["id"].as_str().unwrap())["rate_limit"],
        Value::Null
    );

    // Bad values: exit 2, one line naming the flag or the id.
    for bad in ["0/m", "10/d", "ten/m", "", "5/m/s", "-1/s"] {
        let err = usage_error(&cli.run(&[
            "keys",
            "issue",
            "--store",
            &store,
            "--name",
            "x",
            "--scope",
            "a:read",
            "--rate-limit",
            bad,
        ]));
        assert!(err.contains("--rate-limit"), "{bad:?}: {err}");
    }
    let err = usage_error(&cli.run(&["keys", "disable", "--store", &store, "nope"]));
    assert!(err.contains("nope"), "{err}");
    let err = usage_error(&cli.run(&["keys", "enable", "--store", &store, "0000000000000000"]));
    assert!(err.contains("0000000000000000"), "{err}");
}

/// A free loopback port (bound and released: another process could take it in between, which the test would show
/// as a failure to start, never as a pass).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `serve` with an optional route, a rate-limited key, a shadow policy and the metrics endpoint, all read back
/// over HTTP: the limit's headers and its 429, the anonymous allow, the shadow fields in every audit line (and no
/// change to any response), and the Prometheus counters and histogram, whose labels hold no path and no key id.
#[tokio::test]
async fn serve_with_rate_limits_shadow_policy_and_metrics() {
    let cli = Cli::new();
    let limited = cli.issue(&[
        "--scope",
        "invoices:read",
        "--attr",
        "tenant=acme",
        "--rate-limit",
        "2/m",
    ]);
    let key = limited["key"].as_str().unwrap().to_owned();
    let id = limited["id"].as_str().unwrap().to_owned();
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    std::fs::write(cli.path("cert.pem"), cert.cert.pem()).unwrap();
    std::fs::write(cli.path("key.pem"), cert.signing_key.serialize_pem()).unwrap();
    // The candidate policy: invoices need a scope the key lacks; the catalog is not listed.
    std::fs::write(
        cli.path("next-routes.toml"),
        "[[route]]\npath = \"/v1/tenants/{tenant}/invoices/{id}\"\nmethods = [\"GET\"]\n\
         require = { all = [\"invoices:admin\"] }\n",
    )
    .unwrap();
    let metrics = format!("127.0.0.1:{}", free_port());
    let gate = cli.gate(&format!(
        "[server]\ntls_cert = \"cert.pem\"\ntls_key = \"key.pem\"\n\n[metrics]\nlisten = \"{metrics}\"\n\n\
         [shadow]\nroutes_file = \"next-routes.toml\"\n\n\
         [[route]]\npath = \"/v1/catalog\"\nmethods = [\"GET\"]\nauth = \"optional\"\nrequire = {{ all = [\"catalog:read\"] }}\n"
    ));
    let (server, addr, stderr) = start_serve(&cli, &gate);
    let client = super::axum_tls::client(&cert.cert.pem(), addr);
    let base = format!("https://localhost:{}", addr.port());
    let invoice = format!("{base}/v1/tenants/acme/invoices/7");
    for remaining in [1, 0] {
        let r = client
            .get(&invoice)
            .header("x-api-key", &key)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["ratelimit-policy"], "\"key\";q=2;w=60");
        let state = r.headers()["ratelimit"].to_str().unwrap().to_owned();
        assert!(
            state.starts_with(&format!("\"key\";r={remaining};t=")),
            "{state}"
        );
    }
    let r = client
        .get(&invoice)
        .header("x-api-key", &key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    assert!(r.headers().contains_key("retry-after") && r.headers().contains_key("ratelimit"));
    let body: Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
    assert_eq!(body["code"], "rate_limited");
    // Optional authentication: anonymous is allowed; the key lacks catalog:read, so with it: 403.
    let r = client
        .get(format!("{base}/v1/catalog"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
    assert_eq!(body["kind"], "anonymous");
    let r = client
        .get(format!("{base}/v1/catalog"))
        .header("x-api-key", &key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);

    // The metrics endpoint, over plain HTTP on its own address.
    let text = reqwest::get(format!("http://{metrics}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for line in [
        "scopegate_decisions_total{decision=\"allow\",reason=\"granted\"} 2",
        "scopegate_decisions_total{decision=\"deny\",reason=\"rate_limited\"} 1",
        "scopegate_decisions_total{decision=\"allow\",reason=\"anonymous\"} 1",
        "scopegate_decisions_total{decision=\"deny\",reason=\"insufficient_scope\"} 1",
        "scopegate_decision_duration_seconds_count 5",
    ] {
        assert!(text.contains(line), "{line} missing from:\n{text}");
    }
    assert!(
        text.contains("scopegate_decision_duration_seconds_bucket{le=\""),
        "{text}"
    );
    assert!(
        !text.contains(&id) && !text.contains("/v1/") && !text.contains(&key[3..]),
        "{text}"
    );

    drop(server);
    let mut audit = String::new();
    std::io::Read::read_to_string(&mut BufReader::new(stderr), &mut audit).unwrap();
    let events: Vec<Value> = audit
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let shadow: Vec<(&str, &str, &str)> = events
        .iter()
        .map(|e| {
            (
                e["reason"].as_str().unwrap(),
                e["shadow_decision"].as_str().unwrap(),
                e["shadow_reason"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        shadow,
        [
            ("granted", "deny", "insufficient_scope"),
            ("granted", "deny", "insufficient_scope"),
            ("rate_limited", "deny", "insufficient_scope"),
            ("anonymous", "deny", "missing_credential"),
            ("insufficient_scope", "deny", "no_policy"),
        ]
    );
}

/// `[metrics]` and `[shadow]` refuse what they cannot use, naming the file, section and field.
#[test]
fn metrics_and_shadow_settings_are_checked_at_load() {
    let cli = Cli::new();
    cli.issue(&["--scope", "ops:read"]); // the store exists: only the sections under test can fail
    let gate = cli.gate("[metrics]\nlisten = \"localhost\"\n");
    let err = cli.check_fails(&gate, "/health", &[]);
    assert!(err.contains("gate.toml") && err.contains("listen"), "{err}");
    let gate = cli.gate("[shadow]\nroutes_file = \"missing.toml\"\n");
    let err = cli.check_fails(&gate, "/health", &[]);
    assert!(err.contains("missing.toml"), "{err}");
    std::fs::write(
        cli.path("bad.toml"),
        "[[route]]\npath = \"/x\"\nmethods = [\"get\"]\npublic = true\n",
    )
    .unwrap();
    let gate = cli.gate("[shadow]\nroutes_file = \"bad.toml\"\n");
    let err = cli.check_fails(&gate, "/health", &[]);
    assert!(err.contains("bad.toml") && err.contains("methods"), "{err}");
    std::fs::write(
        cli.path("other.toml"),
        "[api_keys]\nstore = \"sqlite://k.db\"\n",
    )
    .unwrap();
    let gate = cli.gate("[shadow]\nroutes_file = \"other.toml\"\n");
    let err = cli.check_fails(&gate, "/health", &[]);
    assert!(
        err.contains("other.toml") && err.contains("api_keys"),
        "{err}"
    );
    std::fs::write(cli.path("empty.toml"), "").unwrap();
    let gate = cli.gate("[shadow]\nroutes_file = \"empty.toml\"\n");
    let err = cli.check_fails(&gate, "/health", &[]);
    assert!(
        err.contains("empty.toml") && err.contains("[[route]]"),
        "{err}"
    );
    // The twin: a good routes file loads, and `check` still decides with the enforced policy.
    std::fs::write(
        cli.path("good.toml"),
        "[[route]]\npath = \"/health\"\nmethods = [\"GET\"]\nrequire = { all = [\"ops:read\"] }\n",
    )
    .unwrap();
    let gate = cli.gate("[shadow]\nroutes_file = \"good.toml\"\n");
    let (code, out) = cli.check(&gate, "/health", None, &["--tls"]);
    assert_eq!((code, out["reason"].as_str()), (0, Some("public")));
}
