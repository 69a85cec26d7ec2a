//! Unit-testing an access policy: no server, no async.
//!
//! `cargo run --example policy_unit_tests` prints each decision; `cargo test --example policy_unit_tests` runs the
//! same checks as tests — copy this file's `tests` module into your own crate and point it at your gate file.

use scopegate::config::GateFile;
use scopegate::policy::Policy;
use scopegate::testing::Probe;

const GATE: &str = r#"
[[route]]
path = "/health"
methods = ["GET"]
public = true

[[route]]
path = "/v1/tenants/{tenant}/invoices/{id}"
methods = ["GET"]
require = { all = ["invoices:read"] }
bind = { tenant = "tenant" }

[[route]]
path = "/v1/tenants/{tenant}/invoices"
methods = ["POST"]
require = { all = ["invoices:write"] }
bind = { tenant = "tenant" }
allow_ips = ["10.0.0.0/8"]
"#;

fn policy() -> Result<Policy, scopegate::ConfigError> {
    GateFile::from_toml_str(GATE)?.policy()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let policy = policy()?;
    let probes = [
        ("health check, anonymous", Probe::get("/health")),
        (
            "acme reads its invoice",
            Probe::get("/v1/tenants/acme/invoices/7")
                .scopes(["invoices:read"])
                .attr("tenant", "acme"),
        ),
        (
            "acme reads globex's invoice",
            Probe::get("/v1/tenants/globex/invoices/7")
                .scopes(["invoices:read"])
                .attr("tenant", "acme"),
        ),
        (
            "acme writes from the office network",
            Probe::post("/v1/tenants/acme/invoices")
                .scopes(["invoices:write"])
                .attr("tenant", "acme")
                .client_ip("10.20.30.40".parse()?),
        ),
        (
            "acme writes from elsewhere",
            Probe::post("/v1/tenants/acme/invoices")
                .scopes(["invoices:write"])
                .attr("tenant", "acme")
                .client_ip("198.51.100.7".parse()?),
        ),
        ("no credential", Probe::get("/v1/tenants/acme/invoices/7")),
        (
            "path trickery",
            Probe::get("/v1/tenants/acme/invoices/..%2F..%2Fglobex"),
        ),
    ];
    for (what, probe) in &probes {
        let decision = policy.check(probe);
        println!(
            "{:<40} {:>3} {}",
            what,
            decision.status(),
            decision.reason()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acme(probe: Probe) -> Probe {
        probe.attr("tenant", "acme")
    }

    #[test]
    fn a_tenant_reads_its_own_invoices_only() {
        let policy = policy().unwrap();
        let own = acme(Probe::get("/v1/tenants/acme/invoices/7").scopes(["invoices:read"]));
        assert!(policy.check(&own).is_allowed());
        let other = acme(Probe::get("/v1/tenants/globex/invoices/7").scopes(["invoices:read"]));
        assert_eq!(policy.check(&other).reason(), "resource_not_permitted");
    }

    #[test]
    fn writing_needs_the_scope_and_the_office_network() {
        let policy = policy().unwrap();
        let office = "10.1.1.1".parse().unwrap();
        let writer = acme(
            Probe::post("/v1/tenants/acme/invoices")
                .scopes(["invoices:write"])
                .client_ip(office),
        );
        assert!(policy.check(&writer).is_allowed());
        let reader = acme(
            Probe::post("/v1/tenants/acme/invoices")
                .scopes(["invoices:read"])
                .client_ip(office),
        );
        assert_eq!(policy.check(&reader).reason(), "insufficient_scope");
        let away = writer.clone().client_ip("198.51.100.7".parse().unwrap());
        assert_eq!(policy.check(&away).reason(), "ip_not_allowed");
    }

    #[test]
    fn anything_unlisted_is_refused() {
        let policy = policy().unwrap();
        assert_eq!(
            policy
                .check(&Probe::delete("/v1/tenants/acme/invoices/7").scopes(["invoices:write"]))
                .status(),
            403
        );
        assert_eq!(policy.check(&Probe::get("/v1/admin")).status(), 401);
        assert_eq!(policy.check(&Probe::get("/health")).reason(), "public");
    }
}
