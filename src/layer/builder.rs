//! The layer's builder: every setting is checked once, in [`ScopeGateBuilder::build`], never on the request path.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{AUTHORIZATION, HeaderName, HeaderValue};

use super::metrics::DecisionMetrics;
use super::rate_limit::KeyRateLimits;
use super::render::{DenialBodyHook, PreparedDenials};
use super::resource::ProtectedResource;
use super::service::{Gate, ScopeGateLayer};
use super::throttle::{Throttle, ThrottleConfig};
use super::{AuditSink, DEFAULT_REALM, TracingAudit};
use crate::credential::{Authenticator, DEFAULT_MAX_CREDENTIAL_LEN};
use crate::error::{ConfigError, Location};
use crate::network::{Cidr, CidrSet};
use crate::policy::Policy;

/// Builds a [`ScopeGateLayer`].
#[must_use]
pub struct ScopeGateBuilder {
    policy: Policy,
    api_keys: Option<Arc<dyn Authenticator>>,
    jwt: Option<Arc<dyn Authenticator>>,
    allow_plaintext: bool,
    trusted_proxies: Vec<Cidr>,
    hsts_max_age: Option<Duration>,
    key_header: HeaderName,
    max_credential_len: usize,
    throttle: Option<ThrottleConfig>,
    audit: Arc<dyn AuditSink>,
    realm: String,
    body_hook: Option<DenialBodyHook>,
    resource: Option<ProtectedResource>,
    shadow: Option<Policy>,
}

impl fmt::Debug for ScopeGateBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScopeGateBuilder")
            .field("policy", &self.policy)
            .field("api_keys", &self.api_keys.is_some())
            .field("jwt", &self.jwt.is_some())
            .field("allow_plaintext", &self.allow_plaintext)
            .field("trusted_proxies", &self.trusted_proxies)
            .finish_non_exhaustive()
    }
}

impl ScopeGateLayer {
    /// Starts a gate for `policy`, with the safe defaults: TLS required, no trusted proxy, API keys in `x-api-key`,
    /// credentials up to 8 KiB, the default throttle, audit events through `tracing`, realm `scopegate`.
    pub fn builder(policy: Policy) -> ScopeGateBuilder {
        ScopeGateBuilder {
            policy,
            api_keys: None,
            jwt: None,
            allow_plaintext: false,
            trusted_proxies: Vec::new(),
            hsts_max_age: None,
            key_header: HeaderName::from_static(crate::credential::api_key::DEFAULT_KEY_HEADER),
            max_credential_len: DEFAULT_MAX_CREDENTIAL_LEN,
            throttle: Some(ThrottleConfig::default()),
            audit: Arc::new(TracingAudit),
            realm: DEFAULT_REALM.to_owned(),
            body_hook: None,
            resource: None,
            shadow: None,
        }
    }
}

impl ScopeGateBuilder {
    /// Authenticates API keys (from the key header, or `Authorization: Bearer` tokens without a `.`).
    pub fn api_keys(mut self, authenticator: impl Authenticator) -> Self {
        self.api_keys = Some(Arc::new(authenticator));
        self
    }

    /// Authenticates JWT bearer tokens (`Authorization: Bearer` tokens with `.`s).
    pub fn jwt(mut self, authenticator: impl Authenticator) -> Self {
        self.jwt = Some(Arc::new(authenticator));
        self
    }

    /// Serves requests without TLS evidence. Credentials sent in plaintext are credentials for everyone on the path:
    /// only for local development behind nothing.
    pub fn danger_allow_plaintext(mut self) -> Self {
        self.allow_plaintext = true;
        self
    }

    /// Peers (networks) whose `Forwarded`/`X-Forwarded-*` headers are believed. Defaults to none. `0.0.0.0/0` and
    /// `::/0` are refused at build time.
    pub fn trusted_proxies(mut self, networks: impl IntoIterator<Item = Cidr>) -> Self {
        self.trusted_proxies = networks.into_iter().collect();
        self
    }

    /// Adds `Strict-Transport-Security: max-age=…` to allowed responses over TLS. Defaults to off.
    pub fn hsts_max_age(mut self, max_age: Duration) -> Self {
        self.hsts_max_age = (!max_age.is_zero()).then_some(max_age);
        self
    }

    /// The header carrying API keys. Defaults to `x-api-key`. `Authorization`, `Proxy-Authorization` and `Cookie`
    /// are refused at build time.
    pub fn api_key_header(mut self, name: HeaderName) -> Self {
        self.key_header = name;
        self
    }

    /// The longest credential accepted; longer ones are refused before any store or crypto work. Defaults to 8 KiB.
    pub fn max_credential_len(mut self, bytes: usize) -> Self {
        self.max_credential_len = bytes;
        self
    }

    /// The failed-authentication throttle. Defaults to [`ThrottleConfig::default`].
    pub fn throttle(mut self, config: ThrottleConfig) -> Self {
        self.throttle = Some(config);
        self
    }

    /// Turns the throttle off (e.g. when an upstream gateway already throttles by client).
    pub fn danger_disable_throttle(mut self) -> Self {
        self.throttle = None;
        self
    }

    /// Where audit events go. Defaults to [`TracingAudit`].
    pub fn audit(mut self, sink: impl AuditSink) -> Self {
        self.audit = Arc::new(sink);
        self
    }

    /// The realm of `WWW-Authenticate` challenges. Defaults to `scopegate`.
    pub fn realm(mut self, realm: impl Into<String>) -> Self {
        self.realm = realm.into();
        self
    }

    /// Replaces the body of denials (never their status, headers, or the decision).
    pub fn denial_body(mut self, hook: DenialBodyHook) -> Self {
        self.body_hook = Some(hook);
        self
    }

    /// Serves RFC 9728 protected resource metadata and points every 401 challenge at it. Defaults to none.
    pub fn protected_resource(mut self, resource: ProtectedResource) -> Self {
        self.resource = Some(resource);
        self
    }

    /// Decides every request with `candidate` as well, beside the enforced policy, and audits what it would have
    /// decided (`shadow_decision`, `shadow_reason` in each [`AuditEvent`](super::AuditEvent)). The candidate never
    /// changes a response, a status or a header. It sees the same facts and, when the enforced policy authenticated
    /// the credential, the same outcome: the store is never asked twice. When only the candidate needs a credential
    /// authenticated (the enforced route is public, say), a cached answer is used and the store is never asked; then
    /// without one the shadow decision is `unavailable`. For rolling out a stricter policy: watch the shadow denials,
    /// then enforce it.
    pub fn shadow(mut self, candidate: Policy) -> Self {
        self.shadow = Some(candidate);
        self
    }

    /// Validates the configuration and builds the layer.
    pub fn build(self) -> Result<ScopeGateLayer, ConfigError> {
        let at = |field: &str| Location {
            section: Some("gate".to_owned()),
            field: Some(field.to_owned()),
            ..Location::default()
        };
        let mut trusted = CidrSet::new();
        for cidr in self.trusted_proxies {
            crate::network::check_trusted_proxy(&cidr)
                .map_err(|problem| ConfigError::invalid(at("trusted_proxies"), problem))?;
            trusted.insert(cidr);
        }
        let key_header = self.key_header;
        if key_header == AUTHORIZATION
            || key_header == http::header::PROXY_AUTHORIZATION
            || key_header == http::header::COOKIE
        {
            return Err(ConfigError::invalid(
                at("api_key_header"),
                format!("{key_header} cannot be the API-key header"),
            ));
        }
        if self.realm.is_empty()
            || !self
                .realm
                .bytes()
                .all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\')
        {
            return Err(ConfigError::invalid(
                at("realm"),
                "the realm must be printable ASCII without '\"' or '\\'",
            ));
        }
        if self.max_credential_len == 0 {
            return Err(ConfigError::invalid(
                at("max_credential_len"),
                "must be at least 1",
            ));
        }
        let hsts = self.hsts_max_age.map(|age| hsts_value(age.as_secs()));
        let resource = self
            .resource
            .map(|r| r.compile(&self.policy))
            .transpose()
            .map_err(|(field, why)| {
                ConfigError::invalid(
                    Location {
                        section: Some("protected resource".to_owned()),
                        field: Some(field.to_owned()),
                        ..Location::default()
                    },
                    why,
                )
            })?;
        for authenticator in self.api_keys.iter().chain(&self.jwt) {
            authenticator.attach_audit(&self.audit);
        }
        // The latency clock calibrates itself when made (once per process, up to 200 ms): here, not on the first
        // request.
        let _ = super::service::latency_clock();
        Ok(ScopeGateLayer {
            gate: Arc::new(Gate {
                policy: self.policy,
                api_keys: self.api_keys,
                jwt: self.jwt,
                require_tls: !self.allow_plaintext,
                trusted_proxies: trusted,
                hsts,
                key_header,
                max_credential_len: self.max_credential_len,
                throttle: self.throttle.map(Throttle::new),
                audit: self.audit,
                denials: PreparedDenials::new(&self.realm),
                body_hook: self.body_hook,
                resource,
                shadow: self.shadow,
                rate_limits: KeyRateLimits::default(),
                metrics: DecisionMetrics::default(),
            }),
        })
    }
}

/// The `Strict-Transport-Security` value for `max_age` seconds, kept for the process when the budget allows (each
/// allowed response over TLS gets a clone: of kept text, a pointer copy; of a counted one, an atomic increment and
/// decrement).
fn hsts_value(max_age: u64) -> HeaderValue {
    let text = format!("max-age={max_age}");
    crate::kept::keep(&text)
        .and_then(|kept| HeaderValue::from_maybe_shared(Bytes::from_static(kept.as_bytes())).ok())
        // Digits only: always a valid header value.
        .or_else(|| HeaderValue::try_from(text).ok())
        .unwrap_or(HeaderValue::from_static("max-age=0"))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::policy::Route;

    fn builder() -> ScopeGateBuilder {
        let policy = Policy::builder()
            .route(Route::get("/health").public())
            .build()
            .unwrap();
        ScopeGateLayer::builder(policy)
    }

    fn refusal(b: ScopeGateBuilder) -> String {
        b.build().unwrap_err().to_string()
    }

    #[test]
    fn header_names_that_carry_other_secrets_are_refused_as_the_key_header() {
        for name in [
            AUTHORIZATION,
            http::header::PROXY_AUTHORIZATION,
            http::header::COOKIE,
        ] {
            let err = refusal(builder().api_key_header(name.clone()));
            assert!(err.starts_with("gate: field `api_key_header`: "), "{err}");
            assert!(err.contains(name.as_str()), "{err}");
        }
        let custom = HeaderName::from_static("x-service-key");
        let layer = builder().api_key_header(custom.clone()).build().unwrap();
        assert_eq!(layer.gate.key_header, custom);
    }

    #[test]
    fn the_realm_must_be_non_empty_printable_ascii_without_quote_or_backslash() {
        for realm in ["", "a\"b", "a\\b", "tab\there", "del\x7f", "\x1f", "réalm"] {
            let err = refusal(builder().realm(realm));
            assert!(err.starts_with("gate: field `realm`: "), "{realm:?}: {err}");
        }
        // The printable range's two ends, and a single character.
        for realm in [" api ~", "x"] {
            assert!(builder().realm(realm).build().is_ok(), "{realm:?}");
        }
    }

    #[test]
    fn the_credential_bound_must_be_at_least_one_byte() {
        let err = refusal(builder().max_credential_len(0));
        assert!(
            err.starts_with("gate: field `max_credential_len`: "),
            "{err}"
        );
        let layer = builder().max_credential_len(1).build().unwrap();
        assert_eq!(layer.gate.max_credential_len, 1);
    }

    #[test]
    fn a_catch_all_trusted_proxy_is_refused() {
        for all in ["0.0.0.0/0", "::/0"] {
            let err = refusal(builder().trusted_proxies([all.parse().unwrap()]));
            assert!(err.starts_with("gate: field `trusted_proxies`: "), "{err}");
        }
        let layer = builder()
            .trusted_proxies(["10.0.0.0/8".parse().unwrap()])
            .build()
            .unwrap();
        assert!(layer.gate.trusted_proxies.contains([10, 1, 2, 3].into()));
        assert!(!layer.gate.trusted_proxies.contains([11, 1, 2, 3].into()));
    }

    #[test]
    fn hsts_is_off_by_default_and_for_a_zero_age() {
        assert!(builder().build().unwrap().gate.hsts.is_none());
        let zero = builder().hsts_max_age(Duration::ZERO).build().unwrap();
        assert!(zero.gate.hsts.is_none());
        let day = builder()
            .hsts_max_age(Duration::from_secs(86_400))
            .build()
            .unwrap();
        assert_eq!(day.gate.hsts.as_ref().unwrap(), "max-age=86400");
    }

    #[test]
    fn the_hsts_value_is_kept_text_shared_by_gates_with_the_same_age() {
        let value = |secs| {
            builder()
                .hsts_max_age(Duration::from_secs(secs))
                .build()
                .unwrap()
                .gate
                .hsts
                .clone()
                .unwrap()
        };
        let (a, b, other) = (value(31_536_017), value(31_536_017), value(31_536_018));
        // One kept text behind both gates' values (and behind every clone a response gets).
        assert!(std::ptr::eq(a.as_bytes(), b.as_bytes()));
        assert!(std::ptr::eq(a.clone().as_bytes(), a.as_bytes()));
        assert_eq!(other, "max-age=31536018");
        assert!(!std::ptr::eq(a.as_bytes(), other.as_bytes()));
    }

    #[test]
    fn a_bad_protected_resource_is_refused_with_its_field() {
        let err =
            refusal(builder().protected_resource(ProtectedResource::new("http://api.example")));
        assert!(
            err.starts_with("protected resource: field `uri`: "),
            "{err}"
        );
        let err = refusal(builder().protected_resource(
            ProtectedResource::new("https://api.example").authorization_servers(["ftp://idp"]),
        ));
        assert!(
            err.starts_with("protected resource: field `authorization_servers`: "),
            "{err}"
        );
        let layer = builder()
            .protected_resource(ProtectedResource::new("https://api.example"))
            .build()
            .unwrap();
        assert!(layer.gate.resource.is_some());
    }

    #[test]
    fn tls_is_required_unless_plaintext_is_allowed() {
        assert!(builder().build().unwrap().gate.require_tls);
        assert!(
            !builder()
                .danger_allow_plaintext()
                .build()
                .unwrap()
                .gate
                .require_tls
        );
    }

    #[test]
    fn debug_shows_the_shape_not_the_parts() {
        let text = format!("{:?}", builder().danger_allow_plaintext());
        assert!(text.starts_with("ScopeGateBuilder {"), "{text}");
        assert!(text.contains("allow_plaintext: true"), "{text}");
        assert!(text.contains("api_keys: false"), "{text}");
        let layer = builder().build().unwrap();
        let text = format!("{layer:?}");
        assert!(text.starts_with("ScopeGateLayer { policy: "), "{text}");
        let service = tower_layer::Layer::layer(&layer, ());
        assert_eq!(format!("{service:?}"), "ScopeGateService { .. }");
    }
}
