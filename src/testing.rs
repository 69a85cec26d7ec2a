//! Unit-testing access policies: no server, no async. Behind the `testing` feature.
//!
//! These kits make a [`Grant`] without the gate ([`TestGrant::build`], [`StaticCredentials`]), so they must never be
//! in a production binary: enable the feature for tests only,
//!
//! ```toml
//! [dev-dependencies]
//! scopegate = { version = "0.1", features = ["testing"] }
//! ```
//!
//! Without it, only the gate creates grants.
//!
//! A [`Probe`] states a request's facts (method, path, TLS, client IP) and, optionally, the credential's grant
//! (scopes, attributes, allowlist). [`Policy::check`] runs the decision order on it — the same functions the
//! layer runs — and returns the [`Decision`] with its reason.
//!
//! A probe describes a request over TLS from an unknown client IP, without a credential, until told otherwise.
//!
//! ```
//! use scopegate::policy::{Policy, Route};
//! use scopegate::testing::Probe;
//!
//! let policy = Policy::builder()
//!     .route(Route::post("/v1/invoices").require_all(["invoices:write"]).allow_ips(["10.0.0.0/8"]))
//!     .build()?;
//!
//! let writer = Probe::post("/v1/invoices").scopes(["invoices:write"]).client_ip("10.1.2.3".parse()?);
//! assert!(policy.check(&writer).is_allowed());
//!
//! // Each allow has its deny twin.
//! assert_eq!(policy.check(&writer.clone().client_ip("192.0.2.7".parse()?)).reason(), "ip_not_allowed");
//! assert_eq!(policy.check(&writer.clone().plaintext()).reason(), "tls_required");
//! assert_eq!(policy.check(&Probe::post("/v1/invoices")).reason(), "missing_credential");
//! let reader = Probe::post("/v1/invoices").scopes(["invoices:read"]).client_ip("10.1.2.3".parse()?);
//! assert_eq!(policy.check(&reader).reason(), "insufficient_scope");
//! // The network is checked before the scopes (step 7 before 8), and an unknown client IP is outside any allowlist.
//! assert_eq!(policy.check(&Probe::post("/v1/invoices").scopes(["invoices:write"])).reason(), "ip_not_allowed");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::net::IpAddr;

use http::Method;

use std::sync::Arc;

use crate::credential::{Authentication, Authenticator};
use crate::grant::{Attributes, CredentialKind, Grant};
use crate::network::{Cidr, CidrSet};
use crate::policy::{Decision, Denial, DenialKind, Policy, RequestFacts, ScopeSet, Started};
use crate::secret::Secret;

/// The facts of one request, for [`Policy::check`].
#[derive(Debug, Clone)]
#[must_use]
pub struct Probe {
    method: Method,
    path: String,
    tls: bool,
    client_ip: Option<IpAddr>,
    credential: Option<TestGrant>,
}

/// A grant for tests: what a credential would be granted, without a store or a token.
///
/// Used by [`Probe`] and by [`StaticCredentials`].
#[derive(Debug, Clone)]
#[must_use]
pub struct TestGrant {
    kind: CredentialKind,
    principal: String,
    scopes: Vec<String>,
    superuser: bool,
    attributes: Attributes,
    allow_ips: Option<Vec<String>>,
}

impl TestGrant {
    /// An API key's grant with this id and no scope.
    pub fn api_key(id: impl Into<String>) -> Self {
        TestGrant {
            kind: CredentialKind::ApiKey,
            principal: id.into(),
            scopes: Vec::new(),
            superuser: false,
            attributes: Attributes::new(),
            allow_ips: None,
        }
    }

    /// A JWT's grant with this subject and no scope.
    pub fn jwt(subject: impl Into<String>) -> Self {
        TestGrant {
            kind: CredentialKind::Jwt,
            ..Self::api_key(subject)
        }
    }

    /// Adds granted scopes. A malformed scope makes the credential invalid (401 `invalid_credential`).
    pub fn scopes<I, S>(mut self, scopes: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.scopes.extend(scopes.into_iter().map(Into::into));
        self
    }

    /// Grants the bare `*`, as the named superuser option allows.
    pub fn danger_superuser(mut self) -> Self {
        self.superuser = true;
        self.scopes.push("*".to_owned());
        self
    }

    /// Adds an attribute (e.g. `tenant`).
    pub fn attr(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.attributes.insert(name.into(), value.into());
        self
    }

    /// Restricts the credential to these networks. A bad network makes the credential invalid.
    pub fn allow_ips<I, S>(mut self, networks: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.allow_ips = Some(networks.into_iter().map(Into::into).collect());
        self
    }

    /// The grant, or the `invalid_credential` denial a malformed scope or network gives.
    pub fn build(&self) -> Result<Grant, Denial> {
        let invalid = || Denial::invalid_credential("the test credential is malformed");
        let scopes = if self.superuser {
            ScopeSet::danger_allow_superuser(&self.scopes)
        } else {
            ScopeSet::parse(&self.scopes)
        }
        .map_err(|_| invalid())?;
        let allow_ips = match &self.allow_ips {
            None => None,
            Some(list) => Some(
                list.iter()
                    .map(|s| s.parse::<Cidr>())
                    .collect::<Result<CidrSet, _>>()
                    .map_err(|_| invalid())?,
            ),
        };
        Ok(Grant::new(
            self.kind,
            self.principal.clone(),
            scopes,
            allow_ips,
            self.attributes.clone(),
        ))
    }
}

/// An [`Authenticator`] over a fixed table of credentials, for tests of a gated service: each credential string
/// maps to a [`TestGrant`] or to a denial (to simulate revoked keys or a store outage). Credentials are compared in
/// constant time; an unknown credential is `invalid_credential`.
#[derive(Debug, Clone, Default)]
pub struct StaticCredentials {
    entries: Arc<Vec<(Secret, Result<Grant, Denial>)>>,
    pending: bool,
}

impl StaticCredentials {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// `credential` authenticates as `grant`.
    #[must_use]
    pub fn with(mut self, credential: &str, grant: &TestGrant) -> Self {
        Arc::make_mut(&mut self.entries).push((Secret::from(credential), grant.build()));
        self
    }

    /// Answers through a future ([`Authentication::Pending`]), as a store-backed authenticator does on a cache miss,
    /// so that tests also cover the gate's waiting path. By default the answer is immediate.
    #[must_use]
    pub fn pending(mut self) -> Self {
        self.pending = true;
        self
    }

    /// `credential` is refused with `kind` (e.g. `RevokedCredential`, or `Unavailable` for a store outage).
    #[must_use]
    pub fn with_denial(mut self, credential: &str, kind: DenialKind) -> Self {
        Arc::make_mut(&mut self.entries).push((
            Secret::from(credential),
            Err(Denial::new(kind, "static test denial")),
        ));
        self
    }
}

impl Authenticator for StaticCredentials {
    fn authenticate(&self, credential: crate::SecretRef<'_>) -> Authentication {
        let mut found: Option<Result<Grant, Denial>> = None;
        for (secret, outcome) in self.entries.iter() {
            if secret.ct_eq_bytes(credential.expose()) && found.is_none() {
                found = Some(outcome.clone());
            }
        }
        let outcome =
            found.unwrap_or_else(|| Err(Denial::invalid_credential("unknown test credential")));
        if self.pending {
            Authentication::Pending(Box::pin(async move {
                // Not ready at the first poll: the gate must wait, and is woken at once.
                let mut waited = false;
                std::future::poll_fn(|cx| {
                    if waited {
                        std::task::Poll::Ready(())
                    } else {
                        waited = true;
                        cx.waker().wake_by_ref();
                        std::task::Poll::Pending
                    }
                })
                .await;
                outcome
            }))
        } else {
            Authentication::Ready(outcome)
        }
    }
}

impl Probe {
    /// A request with this method and path (the path exactly as a client would send it, without the query).
    pub fn new(method: Method, path: impl Into<String>) -> Self {
        Probe {
            method,
            path: path.into(),
            tls: true,
            client_ip: None,
            credential: None,
        }
    }

    /// A `GET` request.
    pub fn get(path: impl Into<String>) -> Self {
        Self::new(Method::GET, path)
    }

    /// A `HEAD` request.
    pub fn head(path: impl Into<String>) -> Self {
        Self::new(Method::HEAD, path)
    }

    /// A `POST` request.
    pub fn post(path: impl Into<String>) -> Self {
        Self::new(Method::POST, path)
    }

    /// A `PUT` request.
    pub fn put(path: impl Into<String>) -> Self {
        Self::new(Method::PUT, path)
    }

    /// A `DELETE` request.
    pub fn delete(path: impl Into<String>) -> Self {
        Self::new(Method::DELETE, path)
    }

    /// Whether the request arrived over TLS (default: true).
    pub fn tls(mut self, tls: bool) -> Self {
        self.tls = tls;
        self
    }

    /// The request arrived without TLS.
    pub fn plaintext(self) -> Self {
        self.tls(false)
    }

    /// The resolved client IP (default: unknown).
    pub fn client_ip(mut self, ip: IpAddr) -> Self {
        self.client_ip = Some(ip);
        self
    }

    fn credential_mut(&mut self) -> &mut TestGrant {
        self.credential
            .get_or_insert_with(|| TestGrant::api_key("probe"))
    }

    /// Applies a [`TestGrant`] setter to the request's credential (a new API key `probe` if it has none).
    fn with_credential(mut self, set: impl FnOnce(TestGrant) -> TestGrant) -> Self {
        let credential = self
            .credential
            .take()
            .unwrap_or_else(|| TestGrant::api_key("probe"));
        self.credential = Some(set(credential));
        self
    }

    /// The request carries a valid credential granting these scopes. A malformed scope makes the credential
    /// invalid (401 `invalid_credential`), as a token with a malformed scope claim is.
    pub fn scopes<I, S>(self, scopes: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.with_credential(|c| c.scopes(scopes))
    }

    /// The credential is a superuser one whose bare `*` scope was accepted through the named option.
    pub fn danger_superuser(self) -> Self {
        self.with_credential(TestGrant::danger_superuser)
    }

    /// The request carries a valid credential with this attribute (e.g. `tenant`).
    pub fn attr(self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.with_credential(|c| c.attr(name, value))
    }

    /// The credential is restricted to these networks. A bad network makes the credential invalid.
    pub fn credential_allow_ips<I, S>(self, networks: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.with_credential(|c| c.allow_ips(networks))
    }

    /// The credential is a JWT with this subject (default: an API key with id `probe`).
    pub fn jwt_subject(mut self, subject: impl Into<String>) -> Self {
        let c = self.credential_mut();
        c.kind = CredentialKind::Jwt;
        c.principal = subject.into();
        self
    }

    /// The request carries a valid credential with no scope at all.
    pub fn authenticated(mut self) -> Self {
        self.credential_mut();
        self
    }
}

impl Policy {
    /// Runs the decision order on a probe, with TLS required (the default transport): the same state machine the
    /// layer drives, with the probe's grant standing in for authentication (step 6) and no throttle (step 4).
    pub fn check(&self, probe: &Probe) -> Decision {
        let facts = RequestFacts {
            method: &probe.method,
            path: &probe.path,
            tls: probe.tls,
            client_ip: probe.client_ip.as_ref(),
            forwarding: None,
        };
        match self.start(facts, true, || None, || Ok(probe.credential.as_ref())) {
            Started::Decided(decision, _) => decision,
            Started::Authenticate(credential, lookup) => self.finish(
                &lookup,
                credential.build().as_ref(),
                probe.client_ip.as_ref(),
            ),
        }
    }
}
