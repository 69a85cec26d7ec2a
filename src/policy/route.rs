//! Route rules, as the builder and the gate file state them, before compilation.

use std::collections::BTreeMap;

use http::Method;

use super::requirement::Requirement;

/// One rule of a policy: methods + path pattern, and either public access or a protection.
///
/// Path patterns use axum's syntax (`/v1/tenants/{tenant}/invoices/{id}`, `/files/{*path}`) and are matched by the
/// same router crate axum uses, on the path exactly as received. `HEAD` follows the `GET` rule and may not be
/// listed itself.
///
/// Errors in a rule (bad method, bad pattern, bad CIDR, a binding to a parameter the pattern lacks) are reported by
/// [`PolicyBuilder::build`](super::PolicyBuilder::build), naming the route and the field.
///
/// ```
/// use scopegate::policy::{Requirement, Route};
///
/// let health = Route::get("/health").public();
/// let invoice = Route::get("/v1/tenants/{tenant}/invoices/{id}")
///     .require_all(["invoices:read"])
///     .bind("tenant", "tenant")
///     .allow_ips(["10.0.0.0/8"]);
/// # let _ = (health, invoice);
/// ```
#[derive(Debug, Clone)]
#[must_use]
pub struct Route {
    pub(crate) methods: Vec<String>,
    pub(crate) path: String,
    pub(crate) public: bool,
    pub(crate) optional: bool,
    pub(crate) require: Option<RequireSpec>,
    pub(crate) bind: BTreeMap<String, String>,
    pub(crate) allow_ips: Option<Vec<String>>,
    /// 1-based line in the gate file, when the route came from one.
    pub(crate) line: Option<usize>,
}

/// A requirement as written: already parsed, or scope strings to parse at build time.
#[derive(Debug, Clone)]
pub(crate) enum RequireSpec {
    Parsed(Requirement),
    All(Vec<String>),
    Any(Vec<String>),
}

impl Route {
    /// A rule for `path` with the given methods (upper-case names such as `"GET"`, `"POST"`).
    pub fn new<I, S>(methods: I, path: impl Into<String>) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Route {
            methods: methods.into_iter().map(Into::into).collect(),
            path: path.into(),
            public: false,
            optional: false,
            require: None,
            bind: BTreeMap::new(),
            allow_ips: None,
            line: None,
        }
    }

    /// A `GET` rule (which `HEAD` follows).
    pub fn get(path: impl Into<String>) -> Self {
        Self::new([Method::GET.as_str()], path)
    }

    /// A `POST` rule.
    pub fn post(path: impl Into<String>) -> Self {
        Self::new([Method::POST.as_str()], path)
    }

    /// A `PUT` rule.
    pub fn put(path: impl Into<String>) -> Self {
        Self::new([Method::PUT.as_str()], path)
    }

    /// A `PATCH` rule.
    pub fn patch(path: impl Into<String>) -> Self {
        Self::new([Method::PATCH.as_str()], path)
    }

    /// A `DELETE` rule.
    pub fn delete(path: impl Into<String>) -> Self {
        Self::new([Method::DELETE.as_str()], path)
    }

    /// Marks the route public: allowed anonymously, no credential is looked at. Exclusive with requirements,
    /// bindings and allowlists.
    pub fn public(mut self) -> Self {
        self.public = true;
        self
    }

    /// Makes authentication optional (gate file: `auth = "optional"`): a request without any credential is allowed
    /// as anonymous (no scopes; handlers read `Option<Grant>`), and the route's allowlist still applies to it. A
    /// request that presents a credential goes through every step as on any protected route: a bad credential is
    /// 401 (and counts towards the throttle), a missing scope 403. The route still needs a requirement (for
    /// credentials), and takes no `bind` (an anonymous request has no attribute to bind: it would see every
    /// tenant's resources).
    pub fn optional_auth(mut self) -> Self {
        self.optional = true;
        self
    }

    /// Requires a parsed requirement.
    pub fn require(mut self, requirement: Requirement) -> Self {
        self.require = Some(RequireSpec::Parsed(requirement));
        self
    }

    /// Requires every one of these scopes (parsed at build time).
    pub fn require_all<I, S>(mut self, scopes: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.require = Some(RequireSpec::All(
            scopes.into_iter().map(Into::into).collect(),
        ));
        self
    }

    /// Requires at least one of these scopes (parsed at build time).
    pub fn require_any<I, S>(mut self, scopes: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.require = Some(RequireSpec::Any(
            scopes.into_iter().map(Into::into).collect(),
        ));
        self
    }

    /// Binds path parameter `param` to the credential attribute `attribute`: the request is allowed only when the
    /// percent-decoded parameter equals the attribute exactly (`403 resource_not_permitted` otherwise, and when the
    /// credential lacks the attribute).
    pub fn bind(mut self, param: impl Into<String>, attribute: impl Into<String>) -> Self {
        self.bind.insert(param.into(), attribute.into());
        self
    }

    /// Restricts the route to clients inside these networks (on top of any credential allowlist).
    pub fn allow_ips<I, S>(mut self, networks: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.allow_ips = Some(networks.into_iter().map(Into::into).collect());
        self
    }

    /// A short name for error messages: `GET /v1/x`.
    pub(crate) fn label(&self) -> String {
        format!("{} {}", self.methods.join(","), self.path)
    }
}

/// Names of the parameters in an axum/matchit pattern (`{name}`, `{*name}`; `{{` and `}}` are literal braces).
/// `None` when braces do not pair up.
pub(crate) fn pattern_params(pattern: &str) -> Option<Vec<String>> {
    let mut names = Vec::new();
    let mut chars = pattern.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '{' if chars.peek() == Some(&'{') => {
                chars.next();
            }
            '}' if chars.peek() == Some(&'}') => {
                chars.next();
            }
            '{' => {
                let mut name = String::new();
                loop {
                    match chars.next() {
                        Some('}') => break,
                        Some('{') | None => return None,
                        Some(ch) => name.push(ch),
                    }
                }
                let name = name.strip_prefix('*').map(str::to_owned).unwrap_or(name);
                if name.is_empty() {
                    return None;
                }
                names.push(name);
            }
            '}' => return None,
            _ => {}
        }
    }
    Some(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameter_names() {
        assert_eq!(
            pattern_params("/a/{x}/b/{*rest}"),
            Some(vec!["x".to_owned(), "rest".to_owned()])
        );
        assert_eq!(
            pattern_params("/a/{{literal}}/{id}"),
            Some(vec!["id".to_owned()])
        );
        assert_eq!(pattern_params("/a/{x"), None);
        assert_eq!(pattern_params("/a/x}"), None);
        assert_eq!(pattern_params("/a/{}"), None);
        assert_eq!(pattern_params("/static"), Some(vec![]));
    }
}
