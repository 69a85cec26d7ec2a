//! The gate file: the contract's example parses, and every refusal names the file, line, route and field.

use scopegate::ConfigError;
use scopegate::config::GateFile;
use scopegate::testing::Probe;

const CONTRACT_EXAMPLE: &str = r#"
[server]
tls_cert = "cert.pem"
tls_key = "key.pem"

[transport]
require_tls = true
trusted_proxies = ["127.0.0.1/32", "::1/128"]
hsts_max_age = 31536000

[api_keys]
store = "sqlite://keys.db"
pepper_env = "SCOPEGATE_PEPPER"
header = "x-api-key"
prefix = "sg"

[jwt]
issuer = "https://issuer.example"
audience = ["orders-api"]
algorithms = ["ES256", "EdDSA"]
jwks_file = "jwks.json"
leeway_seconds = 30
scope_claim = "scope"
allow_ips_claim = "allowed_ips"
attr_claims = ["tenant"]

[throttle]
failed_auth_per_minute = 10
burst = 5

[[route]]
path = "/health"
methods = ["GET"]
public = true

[[route]]
path = "/v1/tenants/{tenant}/invoices/{id}"
methods = ["GET"]
require = { all = ["invoices:read"] }
bind = { tenant = "tenant" }
allow_ips = ["10.0.0.0/8"]
"#;

fn error_for(text: &str) -> String {
    match GateFile::from_toml_str(text) {
        Ok(_) => panic!("accepted:\n{text}"),
        Err(e) => {
            let msg = e.to_string();
            assert!(!msg.contains('\n'), "error is not one line: {msg}");
            msg
        }
    }
}

fn route(body: &str) -> String {
    format!("[[route]]\npath = \"/ok\"\nmethods = [\"GET\"]\npublic = true\n\n[[route]]\n{body}\n")
}

#[test]
fn the_contract_example_is_accepted() {
    let gate = GateFile::from_toml_str(CONTRACT_EXAMPLE).unwrap();
    assert!(gate.transport.require_tls);
    assert_eq!(gate.transport.trusted_proxies.len(), 2);
    assert_eq!(gate.api_keys.as_ref().unwrap().prefix, "sg");
    assert_eq!(
        gate.jwt.as_ref().unwrap().attr_claims,
        Some(vec!["tenant".to_owned()])
    );
    let policy = gate.policy().unwrap();
    let inside = Probe::get("/v1/tenants/acme/invoices/1")
        .scopes(["invoices:read"])
        .attr("tenant", "acme")
        .client_ip("10.0.0.1".parse().unwrap());
    assert!(policy.check(&inside).is_allowed());
    assert_eq!(
        policy
            .check(&inside.clone().client_ip("11.0.0.1".parse().unwrap()))
            .reason(),
        "ip_not_allowed"
    );
}

#[test]
fn defaults_are_the_safe_ones() {
    let gate = GateFile::from_toml_str(&route(
        "path = \"/x\"\nmethods = [\"GET\"]\nrequire = { all = [\"a\"] }",
    ))
    .unwrap();
    assert!(
        gate.transport.require_tls,
        "TLS is required unless the file says otherwise"
    );
    assert!(
        gate.transport.trusted_proxies.is_empty(),
        "no proxy is trusted by default"
    );
    assert_eq!(gate.transport.hsts_max_age, 0);
}

#[test]
fn route_errors_name_the_route_line_and_field() {
    let cases: &[(&str, &[&str])] = &[
        (
            "path = \"/x\"\nmethods = [\"get\"]\npublic = true",
            &["route #2", "line 6", "`methods`", "upper-case"],
        ),
        (
            "path = \"/x\"\nmethods = []\npublic = true",
            &["route #2", "`methods`", "at least one"],
        ),
        (
            "path = \"/x\"\nmethods = [\"HEAD\"]\npublic = true",
            &["`methods`", "HEAD follows the GET rule"],
        ),
        (
            "path = \"/x\"\nmethods = [\"GET\", \"GET\"]\npublic = true",
            &["`methods`", "twice"],
        ),
        (
            "path = \"/x\"\nmethods = [\"GET\"]",
            &["`require`", "either public or has a requirement"],
        ),
        (
            "path = \"/x\"\nmethods = [\"GET\"]\npublic = true\nrequire = { all = [\"a\"] }",
            &["`require`", "public route takes no requirement"],
        ),
        (
            "path = \"/x\"\nmethods = [\"GET\"]\nrequire = { all = [] }",
            &["`require`", "at least one member"],
        ),
        (
            "path = \"/x\"\nmethods = [\"GET\"]\nrequire = { all = [\"a:*\"] }",
            &["`require`", "wildcard"],
        ),
        (
            "path = \"/x\"\nmethods = [\"GET\"]\nrequire = { all = [\"a\", { any = [] }] }",
            &["`require`", "`any` requirement needs at least one member"],
        ),
        (
            "path = \"/x\"\nmethods = [\"GET\"]\nrequire = { any = [{ all = [{ any = [{ all = [] }] }] }] }",
            &["`require`", "`all` requirement needs at least one member"],
        ),
        (
            "path = \"/x\"\nmethods = [\"GET\"]\nrequire = { any = [{ any = [{ any = [{ any = [{ any = [{ any = [{ any = [{ any = [{ any = [\"a\"] }] }] }] }] }] }] }] }] }",
            &["`require`", "deeper than 8"],
        ),
        (
            "path = \"/x\"\nmethods = [\"GET\"]\nrequire = { any = [\"*\"] }",
            &["`require`", "\"*\"", "wildcard"],
        ),
        (
            "path = \"/x\"\nmethods = [\"GET\"]\nrequire = { all = [\"a b\"] }",
            &["`require`", "\"a b\""],
        ),
        (
            "path = \"/x\"\nmethods = [\"GET\"]\nrequire = { all = [\"a\"], any = [\"b\"] }",
            &["`require`", "exactly one of `all` or `any`"],
        ),
        (
            "path = \"/x\"\nmethods = [\"GET\"]\nrequire = { all = [\"a\"] }\nallow_ips = []",
            &["`allow_ips`", "empty allowlist"],
        ),
        (
            "path = \"/x\"\nmethods = [\"GET\"]\nrequire = { all = [\"a\"] }\nallow_ips = [\"10.9.7.7/16\"]",
            &["`allow_ips`", "10.9.0.0/16"],
        ),
        (
            "path = \"/x\"\nmethods = [\"GET\"]\nrequire = { all = [\"a\"] }\nallow_ips = [\"10.0.0.0/255.0.0.0\"]",
            &["`allow_ips`", "10.0.0.0/255.0.0.0"],
        ),
        (
            "path = \"/x/{id}\"\nmethods = [\"GET\"]\nrequire = { all = [\"a\"] }\nbind = { tenant = \"tenant\" }",
            &["`bind`", "{tenant}"],
        ),
        (
            "path = \"/x/../y\"\nmethods = [\"GET\"]\npublic = true",
            &["`path`", "canonical"],
        ),
        (
            "path = \"x\"\nmethods = [\"GET\"]\npublic = true",
            &["`path`", "canonical"],
        ),
        (
            "path = \"/x/{id\"\nmethods = [\"GET\"]\npublic = true",
            &["`path`", "braces"],
        ),
        (
            "path = \"/ok\"\nmethods = [\"GET\"]\npublic = true",
            &["route #2", "`methods`", "already covered"],
        ),
        (
            "path = \"/x\"\nmethods = [\"GET\"]\npublic = true\ncolor = \"red\"",
            &["line", "unknown field `color`"],
        ),
    ];
    for (body, needles) in cases {
        let msg = error_for(&route(body));
        for needle in *needles {
            assert!(msg.contains(needle), "{body:?}: {msg:?} lacks {needle:?}");
        }
    }
}

#[test]
fn patterns_the_router_cannot_tell_apart_are_refused() {
    let text = "[[route]]\npath = \"/x/{a}\"\nmethods = [\"GET\"]\npublic = true\n\n[[route]]\npath = \"/x/{b}\"\nmethods = [\"POST\"]\npublic = true\n";
    let msg = error_for(text);
    assert!(
        msg.contains("route #2") && msg.contains("cannot tell"),
        "{msg}"
    );
    // The twin: the same pattern with different methods is fine.
    let ok = "[[route]]\npath = \"/x/{a}\"\nmethods = [\"GET\"]\npublic = true\n\n[[route]]\npath = \"/x/{a}\"\nmethods = [\"POST\"]\npublic = true\n";
    assert!(GateFile::from_toml_str(ok).is_ok());
}

#[test]
fn section_errors_name_the_section_and_field() {
    let cases: &[(&str, &[&str])] = &[
        (
            "[transport]\nrequire_tls = false\n",
            &["[transport]", "`require_tls`", "danger_allow_plaintext"],
        ),
        (
            "[transport]\ntrusted_proxies = [\"0.0.0.0/0\"]\n",
            &["`trusted_proxies`", "every client"],
        ),
        (
            "[transport]\ntrusted_proxies = [\"::/0\"]\n",
            &["`trusted_proxies`", "every client"],
        ),
        (
            "[transport]\ntrusted_proxies = [\"10.0.0.1/8\"]\n",
            &["line 2", "10.0.0.0/8"],
        ),
        (
            "[transport]\nrequire_tsl = true\n",
            &["line 2", "unknown field `require_tsl`"],
        ),
        (
            "[throttle]\nfailed_auth_per_minute = 0\nburst = 5\n",
            &["[throttle]", "`failed_auth_per_minute`"],
        ),
        ("[unknown]\nx = 1\n", &["unknown field `unknown`"]),
        // An empty list where a list restricts something is an error, never "no restriction".
        (&jwt_section("typ = []"), &["[jwt]", "`typ`", "empty list"]),
        (
            &jwt_section("algorithms = []"),
            &["[jwt]", "`algorithms`", "empty list"],
        ),
        (
            &jwt_section("audience = []"),
            &["[jwt]", "`audience`", "empty list"],
        ),
        (
            &jwt_section("issuer = []"),
            &["[jwt]", "`issuer`", "empty list"],
        ),
        ("[api_keys]\nstore = 5\n", &["line 2"]),
        (
            "[api_keys]\nstore = \"sqlite://k.db\"\ncache_ttl_seconds = 86401\n",
            &["[api_keys]", "`cache_ttl_seconds`", "at most 86400"],
        ),
        (
            "[api_keys]\nstore = \"sqlite://k.db\"\ncache_ttl_seconds = -1\n",
            &["line 3"],
        ),
        (
            "[api_keys]\nstore = \"sqlite://k.db\"\nlast_used_seconds = 0\n",
            &["[api_keys]", "`last_used_seconds`", "from 1"],
        ),
        (
            "[api_keys]\nstore = \"sqlite://k.db\"\nlast_used_seconds = \"60s\"\n",
            &["line 3"],
        ),
    ];
    for (text, needles) in cases {
        let msg = error_for(text);
        for needle in *needles {
            assert!(msg.contains(needle), "{text:?}: {msg:?} lacks {needle:?}");
        }
    }
    // The twins: the bounds themselves are accepted, and the defaults are 30 s and 60 s.
    let keys = |extra: &str| {
        GateFile::from_toml_str(&format!("[api_keys]\nstore = \"sqlite://k.db\"\n{extra}"))
            .unwrap()
            .api_keys
            .unwrap()
    };
    let defaults = keys("");
    assert_eq!(
        (defaults.cache_ttl_seconds, defaults.last_used_seconds),
        (30, 60)
    );
    let bounds = keys("cache_ttl_seconds = 86400\nlast_used_seconds = 1\n");
    assert_eq!(
        (bounds.cache_ttl_seconds, bounds.last_used_seconds),
        (86_400, 1)
    );
    assert_eq!(keys("cache_ttl_seconds = 0\n").cache_ttl_seconds, 0);
    // The twin: plaintext with the loudly named option is accepted.
    let gate = GateFile::from_toml_str(
        "[transport]\nrequire_tls = false\ndanger_allow_plaintext = true\n",
    )
    .unwrap();
    assert!(!gate.transport.require_tls);
}

/// A `[jwt]` section with one field replaced by `line` (`typ = [...]` is added).
fn jwt_section(line: &str) -> String {
    let field = line.split(' ').next().unwrap_or_default();
    let mut text = String::from("[jwt]\n");
    for default in [
        "issuer = \"https://iss\"",
        "audience = \"api\"",
        "algorithms = [\"ES256\"]",
        "jwks_file = \"jwks.json\"",
        "typ = [\"at+jwt\"]",
    ] {
        let chosen = if default.starts_with(&format!("{field} ")) {
            line
        } else {
            default
        };
        text.push_str(chosen);
        text.push('\n');
    }
    text
}

#[test]
fn jwt_lists_that_restrict_something_are_never_empty() {
    // The allowed twin of the empty-list cases: each list with one value loads.
    let gate = GateFile::from_toml_str(&jwt_section("typ = [\"at+jwt\"]")).unwrap();
    assert_eq!(
        gate.jwt.as_ref().and_then(|j| j.typ.clone()),
        Some(vec!["at+jwt".to_owned()])
    );
    for line in [
        "typ = []",
        "algorithms = []",
        "audience = []",
        "issuer = []",
    ] {
        assert!(
            GateFile::from_toml_str(&jwt_section(line)).is_err(),
            "{line}"
        );
    }
}

#[test]
fn errors_from_a_file_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gate.toml");
    std::fs::write(
        &path,
        route("path = \"/x\"\nmethods = [\"get\"]\npublic = true"),
    )
    .unwrap();
    let msg = GateFile::from_path(&path).unwrap_err().to_string();
    assert!(msg.starts_with(&format!("{}:6", path.display())), "{msg}");

    let missing = dir.path().join("absent.toml");
    let err = GateFile::from_path(&missing).unwrap_err();
    assert!(matches!(err, ConfigError::Read { .. }));
    assert!(err.to_string().contains("absent.toml"));

    std::fs::write(
        &path,
        route("path = \"/x\"\nmethods = [\"GET\"]\npublic = true"),
    )
    .unwrap();
    let gate = GateFile::from_path(&path).unwrap();
    assert_eq!(gate.source(), Some(path.as_path()));
}
