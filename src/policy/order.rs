//! The decision order, written once: a pure state machine, with no I/O, no clock and no shared state, that every
//! entry point drives — the layer ([`ScopeGateService`](crate::layer::ScopeGateService)), `Policy::check` (the
//! `testing` feature) and, through the layer, `scopegate check`. Nothing else decides.
//!
//! [`Policy::start`] runs steps 0–5 on the facts of a request and either decides, or hands back the presented
//! credential to authenticate (step 6, the only step that may wait). [`Policy::finish`] takes authentication's
//! outcome and runs steps 7–8. The steps are numbered as in `docs/decision-order.md`.

use std::net::IpAddr;
use std::time::Duration;

use http::Method;

use super::compiled::{Lookup, Policy};
use super::decision::{Decision, Denial, DenialKind};
use crate::grant::Grant;

/// What the decision order reads of a request, gathered by its caller: the layer from the request and its
/// connection, `Policy::check` from a probe.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RequestFacts<'r> {
    /// The request's method.
    pub(crate) method: &'r Method,
    /// The request's path, as received (no query string).
    pub(crate) path: &'r str,
    /// Whether TLS is proven (by the connection, or by a trusted proxy).
    pub(crate) tls: bool,
    /// The client's address, when known (for an anonymous request on a route with optional authentication).
    pub(crate) client_ip: Option<&'r IpAddr>,
    /// Step 0's refusal: a malformed forwarding header from a trusted proxy.
    pub(crate) forwarding: Option<&'r Denial>,
}

/// Where [`Policy::start`] left a request.
#[derive(Debug)]
pub(crate) enum Started<C> {
    /// Decided before any authentication: a denial, or a public route's allow. The route lookup, when it ran.
    Decided(Decision, Option<Lookup>),
    /// Steps 0–5 passed: authenticate the credential, then call [`Policy::finish`] with the lookup.
    Authenticate(C, Lookup),
}

impl Policy {
    /// Steps 0–5. `locked_out` (step 4, the throttle) is asked only on a protected or unlisted route, and
    /// `credential` (step 5: `Ok(None)` when none is presented) only after it; neither is asked once a step refused.
    #[inline]
    pub(crate) fn start<C>(
        &self,
        facts: RequestFacts<'_>,
        require_tls: bool,
        locked_out: impl FnOnce() -> Option<Duration>,
        credential: impl FnOnce() -> Result<Option<C>, Denial>,
    ) -> Started<C> {
        // 0. Forwarding headers from a trusted proxy.
        if let Some(denial) = facts.forwarding {
            return Started::Decided(Decision::Deny(denial.clone()), None);
        }
        // 1. Transport.
        if require_tls && !facts.tls {
            let denial = Denial::new(
                DenialKind::TlsRequired,
                "no TLS evidence from the connection or a trusted proxy",
            );
            return Started::Decided(Decision::Deny(denial), None);
        }
        // 2–3. Path and route; a public route is allowed here.
        let lookup = match self.lookup(facts.method, facts.path) {
            Ok(lookup) => lookup,
            Err(denial) => return Started::Decided(Decision::Deny(denial), None),
        };
        if let Some(allowed) = self.public_decision(&lookup) {
            return Started::Decided(allowed, Some(lookup));
        }
        // 4. Throttle.
        if let Some(wait) = locked_out() {
            return Started::Decided(Decision::Deny(Denial::throttled(wait)), Some(lookup));
        }
        // 5. Credential.
        match credential() {
            Ok(Some(presented)) => Started::Authenticate(presented, lookup),
            Ok(None) => {
                let decision = self
                    .anonymous_decision(&lookup, facts.client_ip)
                    .unwrap_or_else(|| {
                        Decision::Deny(Denial::new(
                            DenialKind::MissingCredential,
                            "no credential presented",
                        ))
                    });
                Started::Decided(decision, Some(lookup))
            }
            Err(denial) => Started::Decided(Decision::Deny(denial), Some(lookup)),
        }
    }

    /// Step 6's outcome, then steps 7–8: network, then the route's requirement and bindings.
    #[inline]
    pub(crate) fn finish(
        &self,
        lookup: &Lookup,
        authenticated: Result<&Grant, &Denial>,
        client_ip: Option<&IpAddr>,
    ) -> Decision {
        match authenticated {
            Ok(grant) => self.decide_authenticated(lookup, grant, client_ip),
            Err(denial) => Decision::Deny(denial.clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::cell::Cell;

    use super::*;
    use crate::policy::Route;

    fn policy() -> Policy {
        Policy::builder()
            .route(Route::get("/health").public())
            .route(Route::get("/v1/orders").require_all(["orders:read"]))
            .route(
                Route::get("/v1/news")
                    .require_all(["news:read"])
                    .optional_auth(),
            )
            .build()
            .unwrap()
    }

    fn facts<'r>(path: &'r str, tls: bool, forwarding: Option<&'r Denial>) -> RequestFacts<'r> {
        RequestFacts {
            method: &Method::GET,
            path,
            tls,
            client_ip: None,
            forwarding,
        }
    }

    /// What `start` decided (`Err(reason)` for a denial, `Ok(reason)` for an allow, `Ok("authenticate")`), and
    /// which of the throttle and the credential it asked.
    fn start(
        facts: RequestFacts<'_>,
        require_tls: bool,
        locked: Option<Duration>,
        credential: Result<Option<&'static str>, Denial>,
    ) -> (Result<&'static str, &'static str>, bool, bool) {
        let asked_throttle = Cell::new(false);
        let asked_credential = Cell::new(false);
        let outcome = policy().start(
            facts,
            require_tls,
            || {
                asked_throttle.set(true);
                locked
            },
            || {
                asked_credential.set(true);
                credential
            },
        );
        let outcome = match outcome {
            Started::Decided(Decision::Allow { kind, .. }, _) => Ok(kind.as_str()),
            Started::Decided(Decision::Deny(d), _) => Err(d.kind().as_str()),
            Started::Authenticate(presented, _) => {
                assert_eq!(presented, "key");
                Ok("authenticate")
            }
        };
        (outcome, asked_throttle.get(), asked_credential.get())
    }

    const WAIT: Option<Duration> = Some(Duration::from_secs(5));

    #[test]
    fn a_bad_forwarding_header_is_refused_first() {
        let bad = Denial::new(DenialKind::MalformedRequest, "bad Forwarded");
        assert_eq!(
            start(
                facts("/health", false, Some(&bad)),
                true,
                WAIT,
                Ok(Some("key"))
            ),
            (Err("malformed_request"), false, false)
        );
        assert_eq!(
            start(facts("/health", true, None), true, WAIT, Ok(Some("key"))),
            (Ok("public"), false, false)
        );
    }

    #[test]
    fn tls_is_judged_before_the_route_only_when_required() {
        assert_eq!(
            start(facts("/health", false, None), true, None, Ok(None)),
            (Err("tls_required"), false, false)
        );
        assert_eq!(
            start(facts("/health", false, None), false, None, Ok(None)),
            (Ok("public"), false, false)
        );
        assert_eq!(
            start(facts("/v1/../health", true, None), true, None, Ok(None)),
            (Err("malformed_request"), false, false)
        );
    }

    #[test]
    fn the_throttle_is_asked_before_the_credential_on_non_public_routes() {
        for path in ["/v1/orders", "/v1/unlisted"] {
            assert_eq!(
                start(facts(path, true, None), true, WAIT, Ok(Some("key"))),
                (Err("throttled"), true, false),
                "{path}"
            );
            assert_eq!(
                start(facts(path, true, None), true, None, Ok(Some("key"))),
                (Ok("authenticate"), true, true),
                "{path}"
            );
        }
    }

    #[test]
    fn without_a_credential_only_an_optional_route_allows() {
        assert_eq!(
            start(facts("/v1/orders", true, None), true, None, Ok(None)),
            (Err("missing_credential"), true, true)
        );
        assert_eq!(
            start(facts("/v1/news", true, None), true, None, Ok(None)),
            (Ok("anonymous"), true, true)
        );
        let two = Denial::malformed_credentials("two credentials");
        assert_eq!(
            start(facts("/v1/news", true, None), true, None, Err(two)),
            (Err("malformed_request"), true, true)
        );
    }

    #[test]
    fn finish_keeps_the_authentication_denial() {
        let p = policy();
        let lookup = p.lookup(&Method::GET, "/v1/orders").unwrap();
        let revoked = Denial::new(DenialKind::RevokedCredential, "revoked");
        let decision = p.finish(&lookup, Err(&revoked), None);
        assert_eq!(decision.reason(), "revoked_credential");
    }
}
