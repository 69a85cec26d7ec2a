//! The compiled policy: route lookup (steps 2–3) and the grant's authorization on the route (steps 7–8).

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

use http::Method;

use super::decision::{AllowKind, Decision, Denial, DenialKind};
use super::path::{CheckedPath, decode_segment};
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
    /// Shared with every allow on this rule (a reference count, not a copy of the text).
    pattern: Arc<str>,
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
                pattern: Arc::from(route.path.as_str()),
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
    pub(crate) fn route_of(&self, lookup: &Lookup) -> Option<&str> {
        match lookup {
            Lookup::Public { rule } | Lookup::Protected(RouteMatch { rule, .. }) => {
                Some(&self.0.rules[*rule].pattern)
            }
            Lookup::Unlisted => None,
        }
    }

    /// Step 3's allow: `Some` for a public route, which is allowed anonymously.
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
        client_ip: Option<IpAddr>,
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
    pub(super) fn decide_authenticated(
        &self,
        lookup: &Lookup,
        grant: &Grant,
        client_ip: Option<IpAddr>,
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
        client_ip: Option<IpAddr>,
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
fn check_network(
    allow: Option<&CidrSet>,
    client_ip: Option<IpAddr>,
    detail: &'static str,
) -> Result<(), Denial> {
    match (allow, client_ip) {
        (None, _) => Ok(()),
        (Some(_), None) => Err(Denial::new(
            DenialKind::IpNotAllowed,
            "client IP unknown and an allowlist applies",
        )),
        (Some(set), Some(ip)) if set.contains(ip) => Ok(()),
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
