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
#[derive(Debug)]
pub(crate) struct RequestFacts<'r> {
    /// The request's method.
    pub(crate) method: &'r Method,
    /// The request's path, as received (no query string).
    pub(crate) path: &'r str,
    /// Whether TLS is proven (by the connection, or by a trusted proxy).
    pub(crate) tls: bool,
    /// The client's address, when known (for an anonymous request on a route with optional authentication).
    pub(crate) client_ip: Option<IpAddr>,
    /// Step 0's refusal: a malformed forwarding header from a trusted proxy.
    pub(crate) forwarding: Option<Denial>,
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
            return Started::Decided(Decision::Deny(denial), None);
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
        client_ip: Option<IpAddr>,
    ) -> Decision {
        match authenticated {
            Ok(grant) => self.decide_authenticated(lookup, grant, client_ip),
            Err(denial) => Decision::Deny(denial.clone()),
        }
    }
}
