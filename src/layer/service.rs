//! The layer and its service: the compiled gate, and `Service::call`, which drives the decision order.

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use http::{Extensions, Request, Response};
use http_body_util::Full;
use tower_layer::Layer;
use tower_service::Service;

use super::future::{AwaitingAuth, ResponseFuture, State};
use super::metrics::DecisionMetrics;
use super::rate_limit::KeyRateLimits;
use super::render::{DenialBodyHook, GrpcFlavor, PreparedDenials, render};
use super::resource::ResourceDocument;
use super::throttle::Throttle;
use super::{AuditEvent, AuditSink, GateBody};
use crate::credential::sealed::Inside;
use crate::credential::{
    Authentication, Authenticator, CredentialSource, PresentedCredential, WALK_AT_MOST,
    read_credential,
};
use crate::grant::Grant;
use crate::network::{CidrSet, ClientFacts, ConnectionInfo, resolve_client};
use crate::policy::{Decision, Denial, DenialKind, Lookup, Policy, RequestFacts, Started};

pub(super) struct Gate {
    pub(super) policy: Policy,
    pub(super) api_keys: Option<Arc<dyn Authenticator>>,
    pub(super) jwt: Option<Arc<dyn Authenticator>>,
    pub(super) require_tls: bool,
    pub(super) trusted_proxies: CidrSet,
    pub(super) hsts: Option<HeaderValue>,
    pub(super) key_header: HeaderName,
    pub(super) max_credential_len: usize,
    pub(super) throttle: Option<Throttle>,
    pub(super) audit: Arc<dyn AuditSink>,
    /// Each denial kind's body and challenge (with the realm), made once.
    pub(super) denials: PreparedDenials,
    pub(super) body_hook: Option<DenialBodyHook>,
    pub(super) resource: Option<ResourceDocument>,
    /// A candidate policy, decided beside the enforced one and only audited.
    pub(super) shadow: Option<Policy>,
    pub(super) rate_limits: KeyRateLimits,
    pub(super) metrics: DecisionMetrics,
}

/// The layer: cheap to clone, holds the compiled configuration.
#[derive(Clone)]
pub struct ScopeGateLayer {
    pub(super) gate: Arc<Gate>,
}

impl fmt::Debug for ScopeGateLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScopeGateLayer")
            .field("policy", &self.gate.policy)
            .finish_non_exhaustive()
    }
}

impl<S> Layer<S> for ScopeGateLayer {
    type Service = ScopeGateService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ScopeGateService {
            inner,
            gate: self.gate.clone(),
        }
    }
}

/// The gated service.
#[derive(Clone)]
pub struct ScopeGateService<S> {
    inner: S,
    gate: Arc<Gate>,
}

impl<S> fmt::Debug for ScopeGateService<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScopeGateService").finish_non_exhaustive()
    }
}

/// What the gate knows of a request while deciding.
pub(super) struct RequestContext {
    /// The request's arrival at the gate: a raw reading of [`latency_clock`] (two per request: at arrival and at
    /// the decision).
    pub(super) started: u64,
    pub(super) client: ClientFacts,
    /// Step 0's refusal: a trusted proxy's forwarding headers that could not be read.
    pub(super) forwarding: Option<Denial>,
}

/// The clock of decision latencies: the CPU's time-stamp counter where it is invariant (else the monotonic clock),
/// read raw and scaled only for the difference; `std::time::Instant::now` costs more than twice as much per read.
/// One per process: it calibrates itself when made (up to 200 ms), which the first gate built does.
#[inline]
pub(super) fn latency_clock() -> &'static quanta::Clock {
    static CLOCK: std::sync::OnceLock<quanta::Clock> = std::sync::OnceLock::new();
    CLOCK.get_or_init(quanta::Clock::new)
}

impl RequestContext {
    /// Step 0: the client, from the connection and a trusted proxy's forwarding headers. Made in place (never
    /// inlined: its caller gets the context written where it keeps it; inlined, the facts were built in one place
    /// and copied to another straight after, a copy that reloads bytes still in the store queue and stalls).
    #[inline(never)]
    fn of<B>(req: &Request<B>, gate: &Gate, started: u64) -> Self {
        // The acceptor's marker, borrowed where it lies.
        let fallback;
        let connection = if let Some(marker) = req.extensions().get::<ConnectionInfo>() {
            marker
        } else {
            fallback = connection_fallback(req.extensions());
            &fallback
        };
        match resolve_client(req.headers(), connection, &gate.trusted_proxies) {
            Ok(client) => RequestContext {
                started,
                client,
                forwarding: None,
            },
            // Unknown client: audited with the peer only.
            Err(denial) => RequestContext {
                started,
                client: ClientFacts::unresolved(connection.peer),
                forwarding: Some(denial),
            },
        }
    }
}

/// The request's connection facts when the acceptor left no marker: a framework's connect info (`integrations`), else
/// plaintext from an unknown peer.
#[cold]
fn connection_fallback(extensions: &Extensions) -> ConnectionInfo {
    crate::integrations::connection_info(extensions).unwrap_or(ConnectionInfo {
        peer: None,
        tls: false,
    })
}

/// Where the synchronous steps left a request.
enum Progress {
    /// Decided: a denial, or a public route's allow; the route lookup, when it ran.
    Decided(Decision, Option<Lookup>),
    /// Authentication (step 6) is under way, of the credential read from this header.
    Authenticating(Authentication, Lookup, CredentialSource),
}

impl Gate {
    /// Steps 0–6 up to the start of authentication, through the policy's decision order.
    #[inline]
    fn start<B>(&self, req: &Request<B>, ctx: &RequestContext) -> Progress {
        match self.steps_to_credential(&self.policy, req, ctx) {
            Started::Decided(decision, lookup) => Progress::Decided(decision, lookup),
            Started::Authenticate((presented, recalled), lookup) => {
                let source = presented.source();
                Progress::Authenticating(self.authenticate(presented, recalled), lookup, source)
            }
        }
    }

    /// Steps 0–5 of `policy` (the enforced one, or the shadow) on this request's facts, this gate's transport rule,
    /// throttle and credential headers. Always inlined: its outcome stays in registers instead of being written by a
    /// call and read straight back.
    #[allow(clippy::inline_always)] // measured: see docs/performance.md, "Inlined across the crate boundary"
    #[inline(always)]
    fn steps_to_credential<'r, B>(
        &self,
        policy: &Policy,
        req: &'r Request<B>,
        ctx: &'r RequestContext,
    ) -> Started<(PresentedCredential<'r>, Option<Grant>)> {
        let client = &ctx.client;
        let facts = RequestFacts {
            method: req.method(),
            path: req.uri().path(),
            tls: client.tls,
            client_ip: client.client_ip.as_ref(),
            forwarding: ctx.forwarding.as_ref(),
        };
        let locked_out = || {
            self.throttle
                .as_ref()
                .and_then(|throttle| throttle.locked_out(client.throttle_ip()))
        };
        // A bearer token the JWT authenticator remembers is read without its character check (see
        // `read_credential`), and authenticated by that memory.
        let recall = |token| self.jwt.as_ref()?.recall(token, Inside(()));
        let credential = || {
            read_credential(
                req.headers(),
                &self.key_header,
                self.max_credential_len,
                recall,
            )
        };
        policy.start(facts, self.require_tls, locked_out, credential)
    }

    /// 6. Authenticate: choose the authenticator by the credential's shape (or take the grant step 5 recalled).
    fn authenticate(
        &self,
        presented: PresentedCredential<'_>,
        recalled: Option<Grant>,
    ) -> Authentication {
        if let Some(grant) = recalled {
            return Authentication::Ready(Ok(grant));
        }
        let authenticator = if presented.is_jwt_shaped() {
            &self.jwt
        } else {
            &self.api_keys
        };
        match authenticator {
            Some(a) => a.authenticate(presented.secret()),
            None => Authentication::Ready(Err(Denial::invalid_credential(
                "no authenticator for this kind of credential",
            ))),
        }
    }

    /// The shadow policy's decision of steps 0–8 for this request, on the same facts and, when the enforced policy
    /// authenticated, the same outcome (`outcome`); `None` without a shadow policy. The store is never asked for
    /// the shadow: when only the shadow needs a credential authenticated, a cached answer is used, and without one
    /// the shadow decision is `unavailable`.
    #[inline]
    pub(super) fn shadow_decision<B>(
        &self,
        req: &Request<B>,
        ctx: &RequestContext,
        outcome: Option<Result<&Grant, &Denial>>,
    ) -> Option<Decision> {
        let shadow = self.shadow.as_ref()?;
        Some(self.decide_shadow(shadow, req, ctx, outcome))
    }

    fn decide_shadow<B>(
        &self,
        shadow: &Policy,
        req: &Request<B>,
        ctx: &RequestContext,
        outcome: Option<Result<&Grant, &Denial>>,
    ) -> Decision {
        match self.steps_to_credential(shadow, req, ctx) {
            Started::Decided(decision, _) => decision,
            Started::Authenticate((presented, recalled), lookup) => match outcome {
                Some(outcome) => shadow.finish(&lookup, outcome, ctx.client.client_ip.as_ref()),
                None => match self.authenticate(presented, recalled) {
                    Authentication::Ready(outcome) => {
                        shadow.finish(&lookup, outcome.as_ref(), ctx.client.client_ip.as_ref())
                    }
                    // Dropped unpolled: no store read, no key set fetch.
                    Authentication::Pending(_) => Decision::Deny(Denial::new(
                        DenialKind::Unavailable,
                        "the shadow policy needed a credential that only a store read could authenticate",
                    )),
                },
            },
        }
    }

    fn count_failure(&self, denial: &Denial, client: &ClientFacts) {
        if let (true, Some(throttle)) = (denial.counts_as_failed_auth(), &self.throttle) {
            throttle.record_failure(client.throttle_ip());
        }
    }

    /// Audits and counts one decision. `shadow` is the shadow policy's, when there is one.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn audit<B>(
        &self,
        req: &Request<B>,
        ctx: &RequestContext,
        decision: &Decision,
        status: u16,
        grant: Option<&Grant>,
        route: Option<&str>,
        shadow: Option<&Decision>,
    ) {
        let (verdict, detail) = match decision {
            Decision::Allow { .. } => ("allow", "allowed"),
            Decision::Deny(d) => ("deny", d.detail()),
        };
        let clock = latency_clock();
        let elapsed = clock.delta(ctx.started, clock.raw());
        self.metrics.record(decision, elapsed);
        if !self.audit.enabled() {
            return;
        }
        self.audit.record(&AuditEvent {
            decision: verdict,
            reason: decision.reason(),
            detail,
            status,
            credential_kind: grant.map(|g| g.kind().as_str()),
            credential_id: grant.map(Grant::principal),
            client_ip: ctx.client.client_ip,
            peer_ip: ctx.client.peer_ip,
            method: req.method().as_str(),
            path: req.uri().path(),
            route,
            latency_us: AuditEvent::latency_of(elapsed),
            shadow_decision: shadow.map(|d| match d {
                Decision::Allow { .. } => "allow",
                Decision::Deny(_) => "deny",
            }),
            shadow_reason: shadow.map(Decision::reason),
        });
    }

    /// Answers a denial: shadow (before the throttle counts this failure), throttle, render, audit. `outcome` is
    /// authentication's, when it ran.
    pub(super) fn deny<B>(
        &self,
        req: &Request<B>,
        ctx: &RequestContext,
        denial: Denial,
        outcome: Option<Result<&Grant, &Denial>>,
        route: Option<&str>,
    ) -> Response<Full<Bytes>> {
        let shadow = self.shadow_decision(req, ctx, outcome);
        let grant = outcome.and_then(Result::ok);
        self.count_failure(&denial, &ctx.client);
        // A gRPC client gets its denial in gRPC's form (read here: an allowed request never needs it).
        let grpc = GrpcFlavor::of(req.headers());
        let mut response = render(&denial, grpc, &self.denials, self.body_hook.as_ref());
        if let Some(resource) = &self.resource {
            resource.point_challenge(&mut response);
        }
        // The status as sent (a gRPC denial travels in HTTP 200 with trailers).
        let status = response.status().as_u16();
        let decision = Decision::Deny(denial);
        self.audit(req, ctx, &decision, status, grant, route, shadow.as_ref());
        response
    }
}

/// Marks the credential headers of a request about to reach the inner service sensitive (HPACK never indexes them,
/// `Debug` hides them). `read`: the header step 5 read the credential from, which then has exactly one value and is
/// the only credential header; without one (a public route, an anonymous allow), both are looked for.
pub(super) fn mark_sensitive<B>(
    req: &mut Request<B>,
    key_header: &HeaderName,
    read: Option<CredentialSource>,
) {
    let headers = req.headers_mut();
    if let Some(source) = read
        && headers.len() > WALK_AT_MOST
    {
        // One value, so `get_mut` reaches all of it.
        if let Some(value) = headers.get_mut(source.name(key_header)) {
            value.set_sensitive(true);
        }
        return;
    }
    // Every value of either name, in one walk over the request's header lines: no name is hashed (a custom one, the
    // API-key header, costs a hash of its bytes per lookup), nothing is reserved (`entry` would reallocate a full
    // map), and every repeated value is reached. After step 5 read a credential, the other name has no line, so
    // marking both names marks the one read. Beyond `WALK_AT_MOST` lines, a lookup of the name read costs less.
    for (name, value) in headers.iter_mut() {
        if CredentialSource::of(name, key_header).is_some() {
            value.set_sensitive(true);
        }
    }
}

impl<S, B, ResBody> Service<Request<B>> for ScopeGateService<S>
where
    S: Service<Request<B>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send,
    B: Send + 'static,
{
    type Response = Response<GateBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S, B>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let started = latency_clock().raw();
        let gate = &*self.gate;
        let ctx = RequestContext::of(&req, gate, started);
        // The protected resource metadata: public, but only where the gate would serve anything (TLS).
        if let Some(resource) = &gate.resource
            && let Some(path) = resource.path_for(req.method(), req.uri().path())
            && (ctx.client.tls || !gate.require_tls)
            && ctx.forwarding.is_none()
        {
            let decision = Decision::Allow {
                route: path.clone(),
                kind: crate::policy::AllowKind::Public,
            };
            // Served whatever either policy says.
            let shadow = gate.shadow.as_ref().map(|_| decision.clone());
            gate.audit(
                &req,
                &ctx,
                &decision,
                200,
                None,
                Some(path.as_str()),
                shadow.as_ref(),
            );
            return ResponseFuture::ready(resource.response());
        }
        // Take the service that was driven to readiness; leave a clone behind.
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        match gate.start(&req, &ctx) {
            Progress::Decided(Decision::Deny(denial), lookup) => {
                let route = lookup.as_ref().and_then(|l| gate.policy.route_of(l));
                ResponseFuture::ready(gate.deny(&req, &ctx, denial, None, route))
            }
            Progress::Decided(decision, _) => {
                let route = match &decision {
                    Decision::Allow { route, .. } => Some(&**route),
                    Decision::Deny(_) => None,
                };
                let shadow = gate.shadow_decision(&req, &ctx, None);
                let status = decision.status();
                gate.audit(&req, &ctx, &decision, status, None, route, shadow.as_ref());
                ResponseFuture::inner(inner, req, gate, &ctx, decision, None, None, None)
            }
            Progress::Authenticating(auth, lookup, source) => {
                let pending = AwaitingAuth {
                    inner,
                    req,
                    lookup,
                    source,
                    ctx,
                };
                match auth {
                    Authentication::Ready(outcome) => pending.decide(gate, outcome),
                    Authentication::Pending(auth) => ResponseFuture {
                        state: State::Authenticating {
                            auth,
                            pending: Some(Box::new((self.gate.clone(), pending))),
                        },
                    },
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::convert::Infallible;

    use http::header::AUTHORIZATION;

    use super::*;
    use crate::policy::Route;

    /// An inner service that is not ready: overloaded (an error), or busy (pending).
    #[derive(Clone)]
    struct NotReady(Option<&'static str>);

    impl Service<Request<()>> for NotReady {
        type Response = Response<()>;
        type Error = &'static str;
        type Future = std::future::Ready<Result<Response<()>, &'static str>>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
            match self.0 {
                Some(error) => Poll::Ready(Err(error)),
                None => Poll::Pending,
            }
        }

        fn call(&mut self, _: Request<()>) -> Self::Future {
            std::future::ready(Err("called while not ready"))
        }
    }

    fn layer() -> ScopeGateLayer {
        let policy = Policy::builder()
            .route(Route::get("/health").public())
            .build()
            .unwrap();
        ScopeGateLayer::builder(policy).build().unwrap()
    }

    #[test]
    fn readiness_is_the_inner_services() {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let mut overloaded = layer().layer(NotReady(Some("overloaded")));
        assert_eq!(
            overloaded.poll_ready(&mut cx),
            Poll::Ready(Err("overloaded"))
        );
        let mut busy = layer().layer(NotReady(None));
        assert_eq!(busy.poll_ready(&mut cx), Poll::Pending);
        let mut ready = layer().layer(tower::service_fn(|_: Request<()>| async {
            Ok::<_, Infallible>(Response::new(()))
        }));
        assert!(matches!(ready.poll_ready(&mut cx), Poll::Ready(Ok(()))));
    }

    #[tokio::test]
    async fn the_resource_document_is_served_only_where_the_gate_serves() {
        use tower::ServiceExt;
        let policy = || {
            Policy::builder()
                .route(Route::get("/health").public())
                .build()
                .unwrap()
        };
        let resource = || super::super::ProtectedResource::new("https://api.example");
        let strict = ScopeGateLayer::builder(policy())
            .protected_resource(resource())
            .build()
            .unwrap();
        let plaintext = ScopeGateLayer::builder(policy())
            .protected_resource(resource())
            .danger_allow_plaintext()
            .build()
            .unwrap();
        let status = |layer: &ScopeGateLayer, tls: bool| {
            let svc = layer.layer(tower::service_fn(|_: Request<()>| async {
                Ok::<_, Infallible>(Response::new(()))
            }));
            let mut req = Request::get("/.well-known/oauth-protected-resource")
                .body(())
                .unwrap();
            req.extensions_mut().insert(ConnectionInfo {
                peer: Some([192, 0, 2, 1].into()),
                tls,
            });
            async move { svc.oneshot(req).await.unwrap().status().as_u16() }
        };
        assert_eq!(status(&strict, true).await, 200);
        assert_eq!(status(&strict, false).await, 403);
        assert_eq!(status(&plaintext, false).await, 200);
    }

    #[test]
    fn credential_headers_are_marked_sensitive() {
        let key = HeaderName::from_static("x-api-key");
        // Walked (a few lines), and looked up by name (more lines than a walk takes on).
        for filler in [0, WALK_AT_MOST] {
            let request = || {
                let mut req = Request::get("/")
                    .header(AUTHORIZATION, "Bearer t")
                    .header(&key, "sg_k")
                    .header("x-other", "v")
                    .body(())
                    .unwrap();
                for i in 0..filler {
                    let name = HeaderName::from_bytes(format!("x-filler-{i}").as_bytes()).unwrap();
                    req.headers_mut()
                        .insert(name, HeaderValue::from_static("v"));
                }
                req
            };
            let sensitive = |req: &Request<()>| {
                ["authorization", "x-api-key", "x-other"].map(|n| req.headers()[n].is_sensitive())
            };
            let mut none_read = request();
            mark_sensitive(&mut none_read, &key, None);
            assert_eq!(sensitive(&none_read), [true, true, false]);
            // After step 5 read a credential, its header is the only credential header: it is marked, nothing else.
            let mut only_key = request();
            only_key.headers_mut().remove(AUTHORIZATION);
            mark_sensitive(&mut only_key, &key, Some(CredentialSource::KeyHeader));
            assert!(only_key.headers()["x-api-key"].is_sensitive());
            assert!(!only_key.headers()["x-other"].is_sensitive());
            let mut only_bearer = request();
            only_bearer.headers_mut().remove(&key);
            mark_sensitive(
                &mut only_bearer,
                &key,
                Some(CredentialSource::Authorization),
            );
            assert!(only_bearer.headers()[AUTHORIZATION].is_sensitive());
            assert!(!only_bearer.headers()["x-other"].is_sensitive());
        }
    }
}
