//! Unit-testing access policies: no server, no async.
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

use crate::grant::{Attributes, CredentialKind, Grant};
use crate::network::{Cidr, CidrSet};
use crate::policy::{AllowKind, Decision, Denial, DenialKind, Policy, ScopeSet};
use crate::policy::{Lookup, decide_authenticated};

/// The facts of one request, for [`Policy::check`].
#[derive(Debug, Clone)]
#[must_use]
pub struct Probe {
    method: Method,
    path: String,
    tls: bool,
    client_ip: Option<IpAddr>,
    credential: Option<ProbeCredential>,
}

#[derive(Debug, Clone)]
struct ProbeCredential {
    kind: CredentialKind,
    principal: String,
    scopes: Vec<String>,
    superuser: bool,
    attributes: Attributes,
    allow_ips: Option<Vec<String>>,
}

impl Default for ProbeCredential {
    fn default() -> Self {
        ProbeCredential {
            kind: CredentialKind::ApiKey,
            principal: "probe".to_owned(),
            scopes: Vec::new(),
            superuser: false,
            attributes: Attributes::new(),
            allow_ips: None,
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

    fn credential_mut(&mut self) -> &mut ProbeCredential {
        self.credential.get_or_insert_with(ProbeCredential::default)
    }

    /// The request carries a valid credential granting these scopes. A malformed scope makes the credential
    /// invalid (401 `invalid_credential`), as a token with a malformed scope claim is.
    pub fn scopes<I, S>(mut self, scopes: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.credential_mut()
            .scopes
            .extend(scopes.into_iter().map(Into::into));
        self
    }

    /// The credential is a superuser one whose bare `*` scope was accepted through the named option.
    pub fn danger_superuser(mut self) -> Self {
        let c = self.credential_mut();
        c.superuser = true;
        c.scopes.push("*".to_owned());
        self
    }

    /// The request carries a valid credential with this attribute (e.g. `tenant`).
    pub fn attr(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.credential_mut()
            .attributes
            .insert(name.into(), value.into());
        self
    }

    /// The credential is restricted to these networks. A bad network makes the credential invalid.
    pub fn credential_allow_ips<I, S>(mut self, networks: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.credential_mut().allow_ips = Some(networks.into_iter().map(Into::into).collect());
        self
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

    fn grant(credential: &ProbeCredential) -> Result<Grant, Denial> {
        let invalid = || {
            Denial::new(
                DenialKind::InvalidCredential,
                "the probe's credential is malformed",
            )
        };
        let scopes = if credential.superuser {
            ScopeSet::danger_allow_superuser(&credential.scopes)
        } else {
            ScopeSet::parse(&credential.scopes)
        }
        .map_err(|_| invalid())?;
        let allow_ips = match &credential.allow_ips {
            None => None,
            Some(list) => Some(
                list.iter()
                    .map(|s| s.parse::<Cidr>())
                    .collect::<Result<CidrSet, _>>()
                    .map_err(|_| invalid())?,
            ),
        };
        Ok(Grant::new(
            credential.kind,
            credential.principal.clone(),
            scopes,
            allow_ips,
            credential.attributes.clone(),
        ))
    }
}

impl Policy {
    /// Runs the decision order on a probe, with TLS required (the default transport): TLS (1), path (2),
    /// route (3), credential presence (5), the probe's grant standing in for authentication (6), network (7),
    /// requirement and bindings (8).
    pub fn check(&self, probe: &Probe) -> Decision {
        if !probe.tls {
            return Decision::Deny(Denial::new(
                DenialKind::TlsRequired,
                "the request did not arrive over TLS",
            ));
        }
        let lookup = match self.lookup(&probe.method, &probe.path) {
            Ok(lookup) => lookup,
            Err(denial) => return Decision::Deny(denial),
        };
        if let Lookup::Public { route } = lookup {
            return Decision::Allow {
                route: route.to_owned(),
                kind: AllowKind::Public,
            };
        }
        let Some(credential) = &probe.credential else {
            return Decision::Deny(Denial::new(
                DenialKind::MissingCredential,
                "no credential presented",
            ));
        };
        match Probe::grant(credential) {
            Ok(grant) => decide_authenticated(&lookup, &grant, probe.client_ip),
            Err(denial) => Decision::Deny(denial),
        }
    }
}
