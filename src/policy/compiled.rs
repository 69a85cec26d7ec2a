//! The compiled policy: route lookup (steps 2–3) and the grant's authorization on the route (steps 7–8).

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

use http::Method;

use super::decision::{AllowKind, Decision, Denial, DenialKind};
use super::path::{CheckedPath, decode_segment};
use super::pattern::RoutePattern;
use super::requirement::Requirement;
use super::route::{RequireSpec, Route, pattern_params};
use super::scope::Scope;
use crate::error::{ConfigError, Location};
use crate::grant::Grant;
use crate::network::{Cidr, CidrSet};

/// A compiled, immutable policy. Cheap to clone (an `Arc` inside).
///
/// ```
/// use scopegate::policy::{Policy, Route};
/// use scopegate::testing::Probe;
///
/// let policy = Policy::builder()
///     .route(Route::get("/health").public())
///     .route(Route::get("/v1/tenants/{tenant}/invoices/{id}").require_all(["invoices:read"]).bind("tenant", "tenant"))
///     .build()?;
///
/// let reader = Probe::get("/v1/tenants/acme/invoices/7").scopes(["invoices:read"]).attr("tenant", "acme");
/// assert!(policy.check(&reader).is_allowed());
///
/// let other_tenant = Probe::get("/v1/tenants/globex/invoices/7").scopes(["invoices:read"]).attr("tenant", "acme");
/// assert_eq!(policy.check(&other_tenant).reason(), "resource_not_permitted");
/// # Ok::<(), scopegate::ConfigError>(())
/// ```
#[derive(Clone)]
pub struct Policy(Arc<Inner>);

struct Inner {
    router: matchit::Router<usize>,
    patterns: Vec<PatternRules>,
    rules: Vec<Rule>,
}

struct PatternRules {
    pattern: String,
    /// Each method's rule. A pattern has a handful of methods at most: a scan of this list costs less than hashing
    /// the method for a map.
    by_method: Vec<(Method, usize)>,
}

impl PatternRules {
    fn rule_for(&self, method: &Method) -> Option<usize> {
        self.by_method
            .iter()
            .find(|(listed, _)| listed == method)
            .map(|&(_, rule)| rule)
    }
}

struct Rule {
    /// Handed to every allow on this rule (kept for the process: a copy, no reference count).
    pattern: RoutePattern,
    access: Access,
}

enum Access {
    Public,
    Protected(Box<Protection>),
}

struct Protection {
    requirement: Requirement,
    allow_ips: Option<CidrSet>,
    bind: Vec<(String, String)>,
    /// `auth = "optional"`: no credential is an anonymous allow.
    optional: bool,
}

/// Builds a [`Policy`]; every problem is reported by [`build`](PolicyBuilder::build).
#[derive(Debug, Default)]
#[must_use]
pub struct PolicyBuilder {
    routes: Vec<Route>,
}

impl PolicyBuilder {
    /// Adds a route rule.
    pub fn route(mut self, route: Route) -> Self {
        self.routes.push(route);
        self
    }

    /// Adds several route rules.
    pub fn routes(mut self, routes: impl IntoIterator<Item = Route>) -> Self {
        self.routes.extend(routes);
        self
    }

    /// Compiles the policy. Fails, naming the route and field, on: bad or lower-case methods, an explicit `HEAD`,
    /// an empty method list, a pattern that is not canonical or not valid router syntax, two rules for the same
    /// method and pattern, patterns the router cannot tell apart, a route both public and protected or neither,
    /// a bad or wildcard scope, an empty `all`/`any`, a bad or empty CIDR list, a binding to a parameter the
    /// pattern lacks.
    pub fn build(self) -> Result<Policy, ConfigError> {
        let mut router = matchit::Router::new();
        let mut patterns: Vec<PatternRules> = Vec::new();
        let mut pattern_index: HashMap<String, usize> = HashMap::new();
        let mut rules = Vec::with_capacity(self.routes.len());
        for (i, route) in self.routes.iter().enumerate() {
            let at = |field: &str| Location {
                file: None,
                line: route.line,
                section: Some(format!("route #{} ({})", i + 1, route.label())),
                field: Some(field.to_owned()),
            };
            let methods = compile_methods(&route.methods)
                .map_err(|p| ConfigError::invalid(at("methods"), p))?;
            let params =
                compile_pattern(&route.path).map_err(|p| ConfigError::invalid(at("path"), p))?;
            let access = compile_access(route, &params, &at)?;
            let rule_id = rules.len();
            rules.push(Rule {
                pattern: RoutePattern::compiled(&route.path),
                access,
            });

            let pattern_id = if let Some(id) = pattern_index.get(&route.path) {
                *id
            } else {
                let id = patterns.len();
                router.insert(route.path.clone(), id).map_err(|e| {
                    ConfigError::invalid(
                        at("path"),
                        format!("the router cannot tell this pattern apart from another: {e}"),
                    )
                })?;
                patterns.push(PatternRules {
                    pattern: route.path.clone(),
                    by_method: Vec::new(),
                });
                pattern_index.insert(route.path.clone(), id);
                id
            };
            for method in methods {
                let rules = &mut patterns[pattern_id];
                if rules.rule_for(&method).is_some() {
                    return Err(ConfigError::invalid(
                        at("methods"),
                        format!(
                            "{method} {} is already covered by an earlier route",
                            route.path
                        ),
                    ));
                }
                rules.by_method.push((method, rule_id));
            }
        }
        Ok(Policy(Arc::new(Inner {
            router,
            patterns,
            rules,
        })))
    }
}

fn compile_methods(methods: &[String]) -> Result<Vec<Method>, String> {
    if methods.is_empty() {
        return Err("at least one method is needed".into());
    }
    let mut out = Vec::with_capacity(methods.len());
    for m in methods {
        if m.is_empty() || !m.bytes().all(|b| b.is_ascii_uppercase()) {
            return Err(format!(
                "{m:?} is not an upper-case method name such as \"GET\""
            ));
        }
        if m == "HEAD" {
            return Err("HEAD follows the GET rule and is not listed itself".into());
        }
        let method =
            Method::from_bytes(m.as_bytes()).map_err(|_| format!("{m:?} is not a method name"))?;
        if out.contains(&method) {
            return Err(format!("{m} is listed twice"));
        }
        out.push(method);
    }
    Ok(out)
}

fn compile_pattern(path: &str) -> Result<Vec<String>, String> {
    CheckedPath::new(path).map_err(|e| format!("{path:?} is not a canonical path pattern: {e}"))?;
    pattern_params(path)
        .ok_or_else(|| format!("{path:?} has unpaired braces or an empty parameter name"))
}

fn compile_access(
    route: &Route,
    params: &[String],
    at: &dyn Fn(&str) -> Location,
) -> Result<Access, ConfigError> {
    if route.public {
        if route.optional {
            return Err(ConfigError::invalid(
                at("auth"),
                "a public route looks at no credential: optional authentication is for protected routes",
            ));
        }
        let extra = if route.require.is_some() {
            Some("require")
        } else if !route.bind.is_empty() {
            Some("bind")
        } else if route.allow_ips.is_some() {
            Some("allow_ips")
        } else {
            None
        };
        return match extra {
            Some(field) => Err(ConfigError::invalid(
                at(field),
                "a public route takes no requirement, binding or allowlist",
            )),
            None => Ok(Access::Public),
        };
    }
    let requirement = match &route.require {
        None => {
            return Err(ConfigError::invalid(
                at("require"),
                "a route is either public or has a requirement",
            ));
        }
        Some(RequireSpec::Parsed(r)) => r.clone(),
        Some(RequireSpec::All(scopes)) => compile_scopes(scopes, Requirement::all)
            .map_err(|p| ConfigError::invalid(at("require"), p))?,
        Some(RequireSpec::Any(scopes)) => compile_scopes(scopes, Requirement::any)
            .map_err(|p| ConfigError::invalid(at("require"), p))?,
    };
    let allow_ips = match &route.allow_ips {
        None => None,
        Some(list) if list.is_empty() => {
            return Err(ConfigError::invalid(
                at("allow_ips"),
                "an empty allowlist admits no client; leave the field out for no restriction",
            ));
        }
        Some(list) => Some(
            list.iter()
                .map(|s| s.parse::<Cidr>())
                .collect::<Result<CidrSet, _>>()
                .map_err(|e| ConfigError::invalid(at("allow_ips"), e.to_string()))?,
        ),
    };
    let mut bind = Vec::with_capacity(route.bind.len());
    for (param, attribute) in &route.bind {
        if !params.contains(param) {
            return Err(ConfigError::invalid(
                at("bind"),
                format!(
                    "the pattern has no parameter {{{param}}} to bind (it has: {})",
                    params.join(", ")
                ),
            ));
        }
        if attribute.is_empty() {
            return Err(ConfigError::invalid(
                at("bind"),
                format!("parameter {param:?} is bound to an empty attribute name"),
            ));
        }
        bind.push((param.clone(), attribute.clone()));
    }
    if route.optional && !bind.is_empty() {
        return Err(ConfigError::invalid(
            at("bind"),
            "a route with optional authentication takes no binding: an anonymous request has no attribute to \
             bind, and would reach every value of the parameter",
        ));
    }
    Ok(Access::Protected(Box::new(Protection {
        requirement,
        allow_ips,
        bind,
        optional: route.optional,
    })))
}

fn compile_scopes(
    scopes: &[String],
    group: fn(Vec<Requirement>) -> Result<Requirement, super::RequirementError>,
) -> Result<Requirement, String> {
    let parts = scopes
        .iter()
        .map(|s| Requirement::scope(s))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())?;
    group(parts).map_err(|e| e.to_string())
}

/// The outcome of steps 2–3 for one request. Owns its data (indices into the policy), so that it can wait in a
/// response future while the credential is authenticated.
#[derive(Debug)]
pub(crate) enum Lookup {
    /// A public route: allow anonymously.
    Public { rule: usize },
    /// A protected route, with the decoded values of its bound parameters.
    Protected(RouteMatch),
    /// No rule for this method and path: a credential is still required (step 5), then 403 `no_policy`.
    Unlisted,
}

/// A protected route that matched, ready for steps 7–8: the rule's index, and the percent-decoded value of each
/// bound parameter in the rule's binding order (`None` when a value does not decode).
#[derive(Debug)]
pub(crate) struct RouteMatch {
    rule: usize,
    bound: Vec<Option<String>>,
}

impl Policy {
    /// Starts a builder.
    pub fn builder() -> PolicyBuilder {
        PolicyBuilder::default()
    }

    /// Steps 2–3: canonical path, then method + path matched against the rules. `HEAD` follows `GET`.
    pub(super) fn lookup(&self, method: &Method, path: &str) -> Result<Lookup, Denial> {
        let checked = CheckedPath::new(path)
            .map_err(|e| Denial::new(DenialKind::MalformedRequest, e.detail()))?;
        let Ok(matched) = self.0.router.at(checked.as_str()) else {
            return Ok(Lookup::Unlisted);
        };
        let rules = &self.0.patterns[*matched.value];
        let method = if method == Method::HEAD {
            &Method::GET
        } else {
            method
        };
        let Some(rule) = rules.rule_for(method) else {
            return Ok(Lookup::Unlisted);
        };
        match &self.0.rules[rule].access {
            Access::Public => Ok(Lookup::Public { rule }),
            Access::Protected(protection) => {
                let bound = protection
                    .bind
                    .iter()
                    .map(|(param, _)| {
                        matched
                            .params
                            .get(param)
                            .and_then(decode_segment)
                            .map(std::borrow::Cow::into_owned)
                    })
                    .collect();
                Ok(Lookup::Protected(RouteMatch { rule, bound }))
            }
        }
    }

    /// The matched route pattern of a lookup, if it matched a rule.
    #[inline]
    pub(crate) fn route_of(&self, lookup: &Lookup) -> Option<&str> {
        match lookup {
            Lookup::Public { rule } | Lookup::Protected(RouteMatch { rule, .. }) => {
                Some(&self.0.rules[*rule].pattern)
            }
            Lookup::Unlisted => None,
        }
    }

    /// Step 3's allow: `Some` for a public route, which is allowed anonymously.
    #[inline]
    pub(super) fn public_decision(&self, lookup: &Lookup) -> Option<Decision> {
        match lookup {
            Lookup::Public { rule } => Some(Decision::Allow {
                route: self.0.rules[*rule].pattern.clone(),
                kind: AllowKind::Public,
            }),
            _ => None,
        }
    }

    /// Step 5 without a credential, on a route whose authentication is optional: the anonymous allow (or the
    /// route's network refusal); `None` on any other route.
    pub(super) fn anonymous_decision(
        &self,
        lookup: &Lookup,
        client_ip: Option<&IpAddr>,
    ) -> Option<Decision> {
        let Lookup::Protected(m) = lookup else {
            return None;
        };
        let rule = &self.0.rules[m.rule];
        let Access::Protected(protection) = &rule.access else {
            return None;
        };
        if !protection.optional {
            return None;
        }
        Some(
            match check_network(
                protection.allow_ips.as_ref(),
                client_ip,
                "client IP outside the route's allowlist",
            ) {
                Ok(()) => Decision::Allow {
                    route: rule.pattern.clone(),
                    kind: AllowKind::Anonymous,
                },
                Err(denial) => Decision::Deny(denial),
            },
        )
    }

    /// Every scope some route's requirement names, sorted, each once (e.g. the default `scopes_supported` of the
    /// protected resource metadata).
    pub fn required_scopes(&self) -> Vec<&Scope> {
        let mut scopes: Vec<&Scope> = self
            .0
            .rules
            .iter()
            .filter_map(|rule| match &rule.access {
                Access::Protected(p) => Some(p.requirement.scopes()),
                Access::Public => None,
            })
            .flatten()
            .collect();
        scopes.sort_by(|a, b| a.as_str().cmp(b.as_str()));
        scopes.dedup_by(|a, b| a.as_str() == b.as_str());
        scopes
    }

    /// Each distinct route pattern once (rules for several methods share one), in the order first given.
    pub fn route_patterns(&self) -> impl Iterator<Item = &str> {
        self.0.patterns.iter().map(|p| p.pattern.as_str())
    }

    /// Steps 7–8 after authentication, for any lookup: the one place where an authenticated request is decided.
    #[inline]
    pub(super) fn decide_authenticated(
        &self,
        lookup: &Lookup,
        grant: &Grant,
        client_ip: Option<&IpAddr>,
    ) -> Decision {
        let matched = match lookup {
            Lookup::Public { .. } => {
                return self
                    .public_decision(lookup)
                    .unwrap_or_else(|| unreachable!("a public lookup"));
            }
            Lookup::Unlisted => None,
            Lookup::Protected(m) => Some(m),
        };
        // Step 7 for any credential: its own network restriction, before what the route asks.
        let outcome = check_network(
            grant.allow_ips(),
            client_ip,
            "client IP outside the credential's allowlist",
        )
        .and_then(|()| match matched {
            None => Err(Denial::new(
                DenialKind::NoPolicy,
                "no rule for this method and path",
            )),
            Some(m) => self
                .authorize(m, grant, client_ip)
                .map(|()| self.0.rules[m.rule].pattern.clone()),
        });
        match outcome {
            Ok(route) => Decision::Allow {
                route,
                kind: AllowKind::Granted,
            },
            Err(denial) => Decision::Deny(denial),
        }
    }

    /// Steps 7–8 on a protected route, for a grant whose own network restriction was checked.
    fn authorize(
        &self,
        m: &RouteMatch,
        grant: &Grant,
        client_ip: Option<&IpAddr>,
    ) -> Result<(), Denial> {
        // `lookup` makes a `RouteMatch` only for a protected rule; anything else is refused, never allowed.
        let Access::Protected(protection) = &self.0.rules[m.rule].access else {
            return Err(Denial::new(
                DenialKind::NoPolicy,
                "the matched rule is not a protected rule",
            ));
        };
        check_network(
            protection.allow_ips.as_ref(),
            client_ip,
            "client IP outside the route's allowlist",
        )?;
        if !protection.requirement.is_satisfied_by(grant.scopes()) {
            return Err(Denial::insufficient_scope(
                protection.requirement.missing(grant.scopes()),
            ));
        }
        for ((_, attribute), value) in protection.bind.iter().zip(&m.bound) {
            match (grant.attr(attribute), value) {
                (Some(have), Some(want)) if have == want => {}
                (None, _) => {
                    return Err(Denial::new(
                        DenialKind::ResourceNotPermitted,
                        "the credential lacks an attribute the route binds",
                    ));
                }
                _ => {
                    return Err(Denial::new(
                        DenialKind::ResourceNotPermitted,
                        "a bound path parameter differs from the credential's attribute",
                    ));
                }
            }
        }
        Ok(())
    }
}

/// Step 7 for one allowlist: the client must be inside it, if there is one; an unknown client never is.
#[inline]
fn check_network(
    allow: Option<&CidrSet>,
    client_ip: Option<&IpAddr>,
    detail: &'static str,
) -> Result<(), Denial> {
    match (allow, client_ip) {
        (None, _) => Ok(()),
        (Some(_), None) => Err(Denial::new(
            DenialKind::IpNotAllowed,
            "client IP unknown and an allowlist applies",
        )),
        (Some(set), Some(ip)) if set.contains(*ip) => Ok(()),
        (Some(_), Some(_)) => Err(Denial::new(DenialKind::IpNotAllowed, detail)),
    }
}

impl fmt::Debug for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut list = f.debug_list();
        for p in &self.0.patterns {
            let mut methods: Vec<&str> = p.by_method.iter().map(|(m, _)| m.as_str()).collect();
            methods.sort_unstable();
            list.entry(&format_args!("{} {}", methods.join(","), p.pattern));
        }
        list.finish()
    }
}

#[cfg(test)]
mod tests {
    #![allow(
        clippy::unwrap_used,
        clippy::needless_pass_by_value,
        clippy::unnecessary_wraps
    )]
    use super::*;
    use crate::grant::{Attributes, Rights};
    use crate::policy::ScopeSet;

    fn policy() -> Policy {
        Policy::builder()
            .route(Route::get("/health").public())
            .routes([
                Route::get("/v1/tenants/{tenant}/orders/{id}")
                    .require_all(["orders:read", "tenants:read"])
                    .bind("tenant", "tenant"),
                Route::post("/v1/tenants/{tenant}/orders/{id}")
                    .require_any(["orders:write", "orders:admin"]),
                Route::get("/v1/office")
                    .require_all(["office:read"])
                    .allow_ips(["10.0.0.0/8"]),
                Route::get("/v1/feed")
                    .require_all(["feed:read"])
                    .optional_auth()
                    .allow_ips(["10.0.0.0/8"]),
                Route::get("/v1/news")
                    .require_all(["news:read"])
                    .optional_auth(),
            ])
            .build()
            .unwrap()
    }

    fn grant(scopes: &[&str], allow_ips: Option<&str>, attributes: &[(&str, &str)]) -> Grant {
        let rights = Rights::new(
            ScopeSet::parse(scopes.iter().copied()).unwrap(),
            allow_ips.map(|n| [n.parse::<Cidr>().unwrap()].into_iter().collect()),
            attributes
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect::<Attributes>(),
        );
        Grant::api_key("0123456789abcdef".parse().unwrap(), Arc::new(rights), None)
    }

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    /// The decision for an authenticated request: `Ok(route)` or `Err(reason, detail)`.
    fn decide(
        method: Method,
        path: &str,
        grant: &Grant,
        client: Option<IpAddr>,
    ) -> Result<String, (&'static str, &'static str)> {
        let p = policy();
        let lookup = p.lookup(&method, path).unwrap();
        match p.decide_authenticated(&lookup, grant, client.as_ref()) {
            Decision::Allow { route, kind } => {
                let expected = if matches!(lookup, Lookup::Public { .. }) {
                    AllowKind::Public
                } else {
                    AllowKind::Granted
                };
                assert_eq!(kind, expected);
                Ok(route.to_string())
            }
            Decision::Deny(d) => Err((d.kind().as_str(), d.detail())),
        }
    }

    const ORDER: &str = "/v1/tenants/acme/orders/7";
    const ORDER_ROUTE: &str = "/v1/tenants/{tenant}/orders/{id}";

    #[test]
    fn every_required_scope_and_the_bound_attribute_allow() {
        let reader = grant(
            &["orders:read", "tenants:read"],
            None,
            &[("tenant", "acme")],
        );
        assert_eq!(
            decide(Method::GET, ORDER, &reader, None),
            Ok(ORDER_ROUTE.to_owned())
        );
        // HEAD follows GET.
        assert_eq!(
            decide(Method::HEAD, ORDER, &reader, None),
            Ok(ORDER_ROUTE.to_owned())
        );
        // One scope short.
        let short = grant(&["orders:read"], None, &[("tenant", "acme")]);
        assert_eq!(
            decide(Method::GET, ORDER, &short, None).unwrap_err().0,
            "insufficient_scope"
        );
    }

    #[test]
    fn any_one_scope_of_an_any_requirement_allows() {
        for scope in ["orders:write", "orders:admin"] {
            let g = grant(&[scope], None, &[]);
            assert_eq!(
                decide(Method::POST, ORDER, &g, None),
                Ok(ORDER_ROUTE.to_owned()),
                "{scope}"
            );
        }
        let neither = grant(&["orders:read"], None, &[]);
        assert_eq!(
            decide(Method::POST, ORDER, &neither, None).unwrap_err().0,
            "insufficient_scope"
        );
    }

    #[test]
    fn a_bound_parameter_must_equal_the_attribute() {
        let scopes = ["orders:read", "tenants:read"];
        let other = grant(&scopes, None, &[("tenant", "globex")]);
        assert_eq!(
            decide(Method::GET, ORDER, &other, None),
            Err((
                "resource_not_permitted",
                "a bound path parameter differs from the credential's attribute"
            ))
        );
        let none = grant(&scopes, None, &[("region", "acme")]);
        assert_eq!(
            decide(Method::GET, ORDER, &none, None),
            Err((
                "resource_not_permitted",
                "the credential lacks an attribute the route binds"
            ))
        );
        // The bound value is compared decoded: %61cme is acme.
        let acme = grant(&scopes, None, &[("tenant", "acme")]);
        assert_eq!(
            decide(Method::GET, "/v1/tenants/%61cme/orders/7", &acme, None),
            Ok(ORDER_ROUTE.to_owned())
        );
        // A value that would not decode never reaches the comparison: the path is refused first.
        assert_eq!(
            policy()
                .lookup(&Method::GET, "/v1/tenants/%FF/orders/7")
                .unwrap_err()
                .kind(),
            DenialKind::MalformedRequest
        );
    }

    #[test]
    fn the_routes_and_the_credentials_allowlists_both_apply() {
        let office = grant(&["office:read"], None, &[]);
        assert_eq!(
            decide(Method::GET, "/v1/office", &office, ip("10.1.2.3")),
            Ok("/v1/office".to_owned())
        );
        assert_eq!(
            decide(Method::GET, "/v1/office", &office, ip("192.0.2.1")),
            Err(("ip_not_allowed", "client IP outside the route's allowlist"))
        );
        assert_eq!(
            decide(Method::GET, "/v1/office", &office, None),
            Err((
                "ip_not_allowed",
                "client IP unknown and an allowlist applies"
            ))
        );
        let pinned = grant(&["office:read"], Some("10.9.0.0/16"), &[]);
        assert_eq!(
            decide(Method::GET, "/v1/office", &pinned, ip("10.9.1.1")),
            Ok("/v1/office".to_owned())
        );
        assert_eq!(
            decide(Method::GET, "/v1/office", &pinned, ip("10.1.1.1")),
            Err((
                "ip_not_allowed",
                "client IP outside the credential's allowlist"
            ))
        );
    }

    #[test]
    fn unlisted_and_public_lookups() {
        let any = grant(&["orders:read"], None, &[]);
        assert_eq!(
            decide(Method::DELETE, ORDER, &any, None),
            Err(("no_policy", "no rule for this method and path"))
        );
        assert_eq!(
            decide(Method::GET, "/v1/elsewhere", &any, None),
            Err(("no_policy", "no rule for this method and path"))
        );
        // The credential's own allowlist applies even where no rule does: never a 403 that reveals the policy.
        let pinned = grant(&["orders:read"], Some("10.9.0.0/16"), &[]);
        assert_eq!(
            decide(Method::GET, "/v1/elsewhere", &pinned, ip("192.0.2.1"))
                .unwrap_err()
                .0,
            "ip_not_allowed"
        );
        assert_eq!(
            decide(Method::GET, "/health", &any, None),
            Ok("/health".to_owned())
        );

        let p = policy();
        let public = p.lookup(&Method::GET, "/health").unwrap();
        assert_eq!(p.route_of(&public), Some("/health"));
        let Some(Decision::Allow { route, kind }) = p.public_decision(&public) else {
            panic!("a public route is allowed");
        };
        assert_eq!((&*route, kind), ("/health", AllowKind::Public));
        let protected = p.lookup(&Method::GET, ORDER).unwrap();
        assert_eq!(p.route_of(&protected), Some(ORDER_ROUTE));
        assert!(p.public_decision(&protected).is_none());
        let unlisted = p.lookup(&Method::GET, "/nowhere").unwrap();
        assert_eq!(p.route_of(&unlisted), None);
        assert!(p.public_decision(&unlisted).is_none());
        // A path that is not canonical never reaches the router.
        assert_eq!(
            p.lookup(&Method::GET, "/v1/../health").unwrap_err().kind(),
            DenialKind::MalformedRequest
        );
    }

    #[test]
    fn only_optional_routes_allow_anonymously_and_their_allowlist_still_applies() {
        let p = policy();
        let anonymous = |path: &str, client: Option<IpAddr>| {
            let lookup = p.lookup(&Method::GET, path).unwrap();
            p.anonymous_decision(&lookup, client.as_ref())
                .map(|d| match d {
                    Decision::Allow { route, kind } => {
                        assert_eq!(kind, AllowKind::Anonymous);
                        Ok(route.to_string())
                    }
                    Decision::Deny(d) => Err(d.kind().as_str()),
                })
        };
        assert_eq!(anonymous("/v1/news", None), Some(Ok("/v1/news".to_owned())));
        assert_eq!(
            anonymous("/v1/feed", ip("10.0.0.1")),
            Some(Ok("/v1/feed".to_owned()))
        );
        assert_eq!(
            anonymous("/v1/feed", ip("192.0.2.1")),
            Some(Err("ip_not_allowed"))
        );
        assert_eq!(anonymous("/v1/office", ip("10.0.0.1")), None);
        assert_eq!(anonymous("/health", None), None);
        assert_eq!(anonymous("/nowhere", None), None);
    }

    #[test]
    fn the_policy_lists_its_patterns_and_scopes() {
        let p = policy();
        assert_eq!(
            p.route_patterns().collect::<Vec<_>>(),
            ["/health", ORDER_ROUTE, "/v1/office", "/v1/feed", "/v1/news"]
        );
        let scopes: Vec<&str> = p.required_scopes().iter().map(|s| s.as_str()).collect();
        assert_eq!(
            scopes,
            [
                "feed:read",
                "news:read",
                "office:read",
                "orders:admin",
                "orders:read",
                "orders:write",
                "tenants:read"
            ]
        );
        assert_eq!(
            format!("{p:?}"),
            format!(
                "[GET /health, GET,POST {ORDER_ROUTE}, GET /v1/office, GET /v1/feed, GET /v1/news]"
            )
        );
    }

    fn refusal(route: Route) -> String {
        Policy::builder()
            .route(Route::get("/ok").public())
            .route(route)
            .build()
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn bad_methods_are_refused_and_named() {
        let cases: [(&[&str], &str); 6] = [
            (&[], "at least one method is needed"),
            (&[""], "\"\" is not an upper-case method name"),
            (&["get"], "\"get\" is not an upper-case method name"),
            (&["GeT"], "\"GeT\" is not an upper-case method name"),
            (&["HEAD"], "HEAD follows the GET rule"),
            (&["PUT", "PUT"], "PUT is listed twice"),
        ];
        for (methods, expected) in cases {
            let err = refusal(Route::new(methods.iter().copied(), "/x").public());
            let label = format!("route #2 ({} /x): field `methods`: ", methods.join(","));
            assert!(err.starts_with(&label), "{err}");
            assert!(err.contains(expected), "{methods:?}: {err}");
        }
        // Upper-case extension methods are methods.
        assert!(
            Policy::builder()
                .route(Route::new(["PURGE", "GET"], "/x").public())
                .build()
                .is_ok()
        );
        let err = refusal(Route::get("/ok").require_all(["a:read"]));
        assert!(
            err.contains("GET /ok is already covered by an earlier route"),
            "{err}"
        );
    }

    #[test]
    fn bad_patterns_are_refused_and_named() {
        for (path, expected) in [
            ("/a//b", "is not a canonical path pattern"),
            ("/a/{", "unpaired braces or an empty parameter name"),
            ("/a/{}", "unpaired braces or an empty parameter name"),
        ] {
            let err = refusal(Route::get(path).public());
            assert!(
                err.contains("field `path`") && err.contains(expected),
                "{path}: {err}"
            );
        }
        // Two patterns the router cannot tell apart; the twin shares one pattern between two methods.
        let err = Policy::builder()
            .route(Route::get("/x/{a}").public())
            .route(Route::post("/x/{b}").public())
            .build()
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("route #2 (") && err.contains("field `path`"),
            "{err}"
        );
        assert!(err.contains("cannot tell this pattern apart"), "{err}");
        let twin = Policy::builder()
            .route(Route::get("/x/{a}").public())
            .route(Route::post("/x/{a}").public())
            .build()
            .unwrap();
        assert_eq!(twin.route_patterns().collect::<Vec<_>>(), ["/x/{a}"]);
    }

    #[test]
    fn access_must_be_public_or_protected_and_coherent() {
        let cases = [
            (
                Route::get("/x").public().optional_auth(),
                "auth",
                "optional authentication is for protected",
            ),
            (
                Route::get("/x").public().require_all(["a:read"]),
                "require",
                "takes no requirement",
            ),
            (
                Route::get("/x/{id}").public().bind("id", "id"),
                "bind",
                "takes no requirement",
            ),
            (
                Route::get("/x").public().allow_ips(["10.0.0.0/8"]),
                "allow_ips",
                "takes no requirement",
            ),
            (
                Route::get("/x"),
                "require",
                "either public or has a requirement",
            ),
            (
                Route::get("/x").require_all(Vec::<String>::new()),
                "require",
                "",
            ),
            (
                Route::get("/x")
                    .require_all(["a:read"])
                    .allow_ips(Vec::<String>::new()),
                "allow_ips",
                "empty allowlist",
            ),
            (
                Route::get("/x")
                    .require_all(["a:read"])
                    .allow_ips(["10.0.0.0/33"]),
                "allow_ips",
                "",
            ),
            (
                Route::get("/x/{id}")
                    .require_all(["a:read"])
                    .bind("tenant", "t"),
                "bind",
                "no parameter {tenant}",
            ),
            (
                Route::get("/x/{id}").require_all(["a:read"]).bind("id", ""),
                "bind",
                "empty attribute name",
            ),
            (
                Route::get("/x/{id}")
                    .require_all(["a:read"])
                    .bind("id", "t")
                    .optional_auth(),
                "bind",
                "optional",
            ),
        ];
        for (route, field, expected) in cases {
            let err = refusal(route);
            assert!(err.contains(&format!("field `{field}`")), "{err}");
            assert!(err.contains(expected), "{err}");
        }
        // Each refusal's twin builds.
        for route in [
            Route::get("/x").public(),
            Route::get("/x/{id}")
                .require_all(["a:read"])
                .bind("id", "t")
                .allow_ips(["10.0.0.0/8"]),
            Route::get("/x").require_any(["a:read"]).optional_auth(),
        ] {
            assert!(Policy::builder().route(route).build().is_ok());
        }
    }
}
