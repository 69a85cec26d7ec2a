//! The Tower layer: the whole decision order in front of a service.
//!
//! ```
//! use std::convert::Infallible;
//! use http::{Request, Response, StatusCode};
//! use scopegate::layer::ScopeGate;
//! use scopegate::network::ConnectionInfo;
//! use scopegate::policy::{Policy, Route};
//! use tower::{ServiceBuilder, ServiceExt, service_fn};
//!
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
//! let policy = Policy::builder().route(Route::get("/health").public()).build()?;
//! let gate = ScopeGate::builder(policy).build()?;
//! let service = ServiceBuilder::new()
//!     .layer(gate)
//!     .service(service_fn(|_req: Request<String>| async { Ok::<_, Infallible>(Response::new(String::from("ok"))) }));
//!
//! // Over TLS (the acceptor marks the connection): allowed.
//! let mut req = Request::get("/health").body(String::new())?;
//! req.extensions_mut().insert(ConnectionInfo { peer: Some("192.0.2.1".parse()?), tls: true });
//! assert_eq!(service.clone().oneshot(req).await?.status(), StatusCode::OK);
//!
//! // Plaintext: refused.
//! let mut req = Request::get("/health").body(String::new())?;
//! req.extensions_mut().insert(ConnectionInfo { peer: Some("192.0.2.1".parse()?), tls: false });
//! assert_eq!(service.oneshot(req).await?.status(), StatusCode::FORBIDDEN);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # }).unwrap();
//! ```

mod audit;
mod render;
mod throttle;

use std::fmt;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{AUTHORIZATION, HeaderName, HeaderValue, STRICT_TRANSPORT_SECURITY};
use http::{Extensions, Request, Response};
use http_body_util::{Either, Full};
use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;

pub use audit::{AUDIT_TARGET, AuditEvent, AuditSink, JsonLinesAudit, TracingAudit};

/// The RFC 6750 realm of challenges when none is configured.
const DEFAULT_REALM: &str = "scopegate";
pub use render::DenialBodyHook;
pub use throttle::{MAX_LOCKED_CLIENTS, ThrottleConfig};

use self::render::{is_grpc, render};
use self::throttle::Throttle;
use crate::credential::{
    AuthFuture, Authentication, Authenticator, CredentialSource, DEFAULT_MAX_CREDENTIAL_LEN,
    extract_credential,
};
use crate::error::{ConfigError, Location};
use crate::grant::Grant;
use crate::network::{Cidr, CidrSet, ClientFacts, ConnectionInfo, resolve_client};
use crate::policy::{
    AllowKind, Decision, Denial, DenialKind, Lookup, Policy, RequestFacts, Started,
};

/// What the gate decided about an allowed request, in the request's extensions beside the [`Grant`] (which public
/// routes do not get).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allowed {
    route: String,
    kind: AllowKind,
    client_ip: Option<IpAddr>,
    peer_ip: Option<IpAddr>,
}

impl Allowed {
    /// The matched route pattern.
    pub fn route(&self) -> &str {
        &self.route
    }

    /// Public, or granted to a credential.
    pub fn kind(&self) -> AllowKind {
        self.kind
    }

    /// The resolved client IP, when known.
    pub fn client_ip(&self) -> Option<IpAddr> {
        self.client_ip
    }

    /// The trusted proxy that forwarded the request, if one did.
    pub fn peer_ip(&self) -> Option<IpAddr> {
        self.peer_ip
    }
}

/// Renders a denial the way the gate does (HTTP, or gRPC when `grpc`), with the default realm: for in-handler
/// refusals.
#[cfg(feature = "axum")]
pub(crate) fn render_denial(denial: &Denial, grpc: bool) -> Response<Full<Bytes>> {
    render(denial, grpc, DEFAULT_REALM, None)
}

/// The response body of a gated service: the inner service's body, or a denial's.
pub type GateBody<B> = Either<B, Full<Bytes>>;

/// Builds a [`ScopeGateLayer`].
#[must_use]
pub struct ScopeGate {
    policy: Policy,
    api_keys: Option<Arc<dyn Authenticator>>,
    jwt: Option<Arc<dyn Authenticator>>,
    allow_plaintext: bool,
    trusted_proxies: Vec<String>,
    hsts_max_age: Option<Duration>,
    key_header: String,
    max_credential_len: usize,
    throttle: Option<ThrottleConfig>,
    audit: Arc<dyn AuditSink>,
    realm: String,
    body_hook: Option<DenialBodyHook>,
}

impl fmt::Debug for ScopeGate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScopeGate")
            .field("policy", &self.policy)
            .field("api_keys", &self.api_keys.is_some())
            .field("jwt", &self.jwt.is_some())
            .field("allow_plaintext", &self.allow_plaintext)
            .field("trusted_proxies", &self.trusted_proxies)
            .finish_non_exhaustive()
    }
}

impl ScopeGate {
    /// Starts a gate for `policy`, with the safe defaults: TLS required, no trusted proxy, API keys in `x-api-key`,
    /// credentials up to 8 KiB, the default throttle, audit events through `tracing`, realm `scopegate`.
    pub fn builder(policy: Policy) -> Self {
        ScopeGate {
            policy,
            api_keys: None,
            jwt: None,
            allow_plaintext: false,
            trusted_proxies: Vec::new(),
            hsts_max_age: None,
            key_header: "x-api-key".to_owned(),
            max_credential_len: DEFAULT_MAX_CREDENTIAL_LEN,
            throttle: Some(ThrottleConfig::default()),
            audit: Arc::new(TracingAudit),
            realm: DEFAULT_REALM.to_owned(),
            body_hook: None,
        }
    }

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

    /// Peers (CIDRs) whose `Forwarded`/`X-Forwarded-*` headers are believed. Defaults to none. `0.0.0.0/0` and
    /// `::/0` are refused at build time.
    pub fn trusted_proxies<I, S>(mut self, networks: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.trusted_proxies = networks.into_iter().map(Into::into).collect();
        self
    }

    /// Adds `Strict-Transport-Security: max-age=…` to allowed responses over TLS. Defaults to off.
    pub fn hsts_max_age(mut self, max_age: Duration) -> Self {
        self.hsts_max_age = (!max_age.is_zero()).then_some(max_age);
        self
    }

    /// The header carrying API keys. Defaults to `x-api-key`.
    pub fn api_key_header(mut self, name: impl Into<String>) -> Self {
        self.key_header = name.into();
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

    /// Validates the configuration and builds the layer.
    pub fn build(self) -> Result<ScopeGateLayer, ConfigError> {
        let at = |field: &str| Location {
            section: Some("gate".to_owned()),
            field: Some(field.to_owned()),
            ..Location::default()
        };
        let mut trusted = CidrSet::new();
        for text in &self.trusted_proxies {
            let cidr: Cidr = text.parse().map_err(|e: crate::network::CidrError| {
                ConfigError::invalid(at("trusted_proxies"), e.to_string())
            })?;
            crate::network::check_trusted_proxy(&cidr)
                .map_err(|problem| ConfigError::invalid(at("trusted_proxies"), problem))?;
            trusted.insert(cidr);
        }
        let key_header = HeaderName::from_bytes(self.key_header.as_bytes()).map_err(|_| {
            ConfigError::invalid(
                at("api_key_header"),
                format!("{:?} is not a header name", self.key_header),
            )
        })?;
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
        let hsts = self.hsts_max_age.map(|age| {
            // Digits only: always a valid header value.
            HeaderValue::try_from(format!("max-age={}", age.as_secs()))
                .unwrap_or(HeaderValue::from_static("max-age=0"))
        });
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
                realm: self.realm,
                body_hook: self.body_hook,
            }),
        })
    }
}

struct Gate {
    policy: Policy,
    api_keys: Option<Arc<dyn Authenticator>>,
    jwt: Option<Arc<dyn Authenticator>>,
    require_tls: bool,
    trusted_proxies: CidrSet,
    hsts: Option<HeaderValue>,
    key_header: HeaderName,
    max_credential_len: usize,
    throttle: Option<Throttle>,
    audit: Arc<dyn AuditSink>,
    realm: String,
    body_hook: Option<DenialBodyHook>,
}

/// The layer: cheap to clone, holds the compiled configuration.
#[derive(Clone)]
pub struct ScopeGateLayer {
    gate: Arc<Gate>,
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
struct RequestContext {
    started: Instant,
    client: ClientFacts,
    grpc: bool,
}

/// The request's connection facts: the acceptor's marker, else a framework's connect info (`integrations`), else
/// plaintext from an unknown peer.
fn connection(extensions: &Extensions) -> ConnectionInfo {
    extensions
        .get::<ConnectionInfo>()
        .copied()
        .or_else(|| crate::integrations::connection_info(extensions))
        .unwrap_or(ConnectionInfo {
            peer: None,
            tls: false,
        })
}

/// Where the synchronous steps left a request.
enum Progress {
    /// Decided: a denial, or a public route's allow; the route lookup, when it ran.
    Decided(Decision, Option<Lookup>),
    /// Authentication (step 6) is under way.
    Authenticating(Authentication, Lookup),
}

impl Gate {
    /// Steps 0–6 up to the start of authentication, through the policy's decision order.
    fn start<B>(
        &self,
        req: &Request<B>,
        client: &ClientFacts,
        forwarding: Option<Denial>,
    ) -> Progress {
        let facts = RequestFacts {
            method: req.method(),
            path: req.uri().path(),
            tls: client.tls,
            forwarding,
        };
        let locked_out = || {
            self.throttle
                .as_ref()
                .and_then(|throttle| throttle.locked_out(client.throttle_ip()))
        };
        let credential =
            || extract_credential(req.headers(), &self.key_header, self.max_credential_len);
        match self
            .policy
            .start(facts, self.require_tls, locked_out, credential)
        {
            Started::Decided(decision, lookup) => Progress::Decided(decision, lookup),
            Started::Authenticate(presented, lookup) => {
                // 6. Authenticate: choose the authenticator by shape.
                let is_jwt = presented.source() == CredentialSource::Authorization
                    && presented.secret().expose().contains(&b'.');
                let authenticator = if is_jwt { &self.jwt } else { &self.api_keys };
                let authentication = match authenticator {
                    Some(a) => a.authenticate(presented.into_secret()),
                    None => Authentication::Ready(Err(Denial::invalid_credential(
                        "no authenticator for this kind of credential",
                    ))),
                };
                Progress::Authenticating(authentication, lookup)
            }
        }
    }

    fn count_failure(&self, denial: &Denial, client: &ClientFacts) {
        if let (true, Some(throttle)) = (denial.counts_as_failed_auth(), &self.throttle) {
            throttle.record_failure(client.throttle_ip());
        }
    }

    fn audit<B>(
        &self,
        req: &Request<B>,
        ctx: &RequestContext,
        decision: &Decision,
        status: u16,
        grant: Option<&Grant>,
        route: Option<&str>,
    ) {
        let (verdict, detail) = match decision {
            Decision::Allow { .. } => ("allow", "allowed"),
            Decision::Deny(d) => ("deny", d.detail()),
        };
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
            latency_us: AuditEvent::latency_of(ctx.started.elapsed()),
        });
    }

    /// Answers a denial: throttle, render, audit.
    fn deny<B>(
        &self,
        req: &Request<B>,
        ctx: &RequestContext,
        denial: Denial,
        grant: Option<&Grant>,
        route: Option<&str>,
    ) -> Response<Full<Bytes>> {
        self.count_failure(&denial, &ctx.client);
        let response = render(&denial, ctx.grpc, &self.realm, self.body_hook.as_ref());
        // The status as sent (a gRPC denial travels in HTTP 200 with trailers).
        let status = response.status().as_u16();
        self.audit(req, ctx, &Decision::Deny(denial), status, grant, route);
        response
    }
}

fn mark_sensitive<B>(req: &mut Request<B>, key_header: &HeaderName) {
    let headers = req.headers_mut();
    for name in [&AUTHORIZATION, key_header] {
        // `entry` reserves room for an insertion first: on a full map (hyper sizes the map to the headers it
        // parsed) it would reallocate the map on every request. A single value, the usual case, is reached with
        // `get_mut`; several (refused at step 5 anyway) through `entry`.
        let mut values = headers.get_all(name).iter();
        match (values.next(), values.next()) {
            (None, _) => {}
            (Some(_), None) => {
                if let Some(value) = headers.get_mut(name) {
                    value.set_sensitive(true);
                }
            }
            (Some(_), Some(_)) => {
                if let http::header::Entry::Occupied(mut entry) = headers.entry(name) {
                    for value in entry.iter_mut() {
                        value.set_sensitive(true);
                    }
                }
            }
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

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        let started = Instant::now();
        let gate = self.gate.clone();
        mark_sensitive(&mut req, &gate.key_header);
        let grpc = is_grpc(req.headers());
        let connection = connection(req.extensions());
        // 0. The client, from the connection and a trusted proxy's forwarding headers.
        let (client, forwarding) =
            match resolve_client(req.headers(), connection, &gate.trusted_proxies) {
                Ok(client) => (client, None),
                // Unknown client: audited with the peer only.
                Err(denial) => (ClientFacts::unresolved(connection.peer), Some(denial)),
            };
        let ctx = RequestContext {
            started,
            client,
            grpc,
        };
        // Take the service that was driven to readiness; leave a clone behind.
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        match gate.start(&req, &ctx.client, forwarding) {
            Progress::Decided(Decision::Deny(denial), lookup) => {
                let route = lookup.as_ref().and_then(|l| gate.policy.route_of(l));
                ResponseFuture::ready(gate.deny(&req, &ctx, denial, None, route))
            }
            Progress::Decided(decision, _) => {
                let route = match &decision {
                    Decision::Allow { route, .. } => Some(route.as_str()),
                    Decision::Deny(_) => None,
                };
                gate.audit(&req, &ctx, &decision, decision.status(), None, route);
                ResponseFuture::inner(inner, req, &gate, &ctx, decision)
            }
            Progress::Authenticating(auth, lookup) => {
                let pending = AwaitingAuth {
                    inner,
                    req,
                    lookup,
                    gate,
                    ctx,
                };
                match auth {
                    Authentication::Ready(outcome) => pending.decide(outcome),
                    Authentication::Pending(auth) => ResponseFuture {
                        state: State::Authenticating {
                            auth,
                            pending: Some(pending),
                        },
                    },
                }
            }
        }
    }
}

struct AwaitingAuth<S, B> {
    inner: S,
    req: Request<B>,
    lookup: Lookup,
    gate: Arc<Gate>,
    ctx: RequestContext,
}

impl<S, B> AwaitingAuth<S, B>
where
    S: Service<Request<B>>,
{
    /// Steps 7–9 once authentication has an outcome: deny, or call the inner service with the grant attached.
    fn decide(self, outcome: Result<Grant, Denial>) -> ResponseFuture<S, B> {
        let AwaitingAuth {
            inner,
            mut req,
            lookup,
            gate,
            ctx,
        } = self;
        let route = gate.policy.route_of(&lookup);
        // 7–8.
        let decision = gate.policy.finish(&lookup, &outcome, ctx.client.client_ip);
        let (decision, grant) = match (decision, outcome) {
            (Decision::Deny(denial), outcome) => {
                let grant = outcome.ok();
                return ResponseFuture::ready(gate.deny(&req, &ctx, denial, grant.as_ref(), route));
            }
            (Decision::Allow { .. }, Err(denial)) => {
                // `finish` denies every failed authentication; were it not to, this still refuses.
                return ResponseFuture::ready(gate.deny(&req, &ctx, denial, None, route));
            }
            (decision @ Decision::Allow { .. }, Ok(grant)) => (decision, grant),
        };
        // 9. Allow.
        gate.audit(
            &req,
            &ctx,
            &decision,
            decision.status(),
            Some(&grant),
            route,
        );
        req.extensions_mut().insert(grant);
        ResponseFuture::inner(inner, req, &gate, &ctx, decision)
    }
}

pin_project! {
    /// The response future of [`ScopeGateService`].
    pub struct ResponseFuture<S, B>
    where
        S: Service<Request<B>>,
    {
        #[pin]
        state: State<S, B>,
    }
}

pin_project! {
    #[project = Projected]
    enum State<S, B>
    where
        S: Service<Request<B>>,
    {
        // Denied without calling the inner service.
        Ready { response: Option<Response<Full<Bytes>>> },
        // Waiting for authentication (a store lookup, a key set).
        Authenticating { auth: AuthFuture, pending: Option<AwaitingAuth<S, B>> },
        // Allowed: the inner service is answering.
        Inner { #[pin] future: S::Future, hsts: Option<HeaderValue> },
    }
}

impl<S, B> ResponseFuture<S, B>
where
    S: Service<Request<B>>,
{
    fn ready(response: Response<Full<Bytes>>) -> Self {
        ResponseFuture {
            state: State::Ready {
                response: Some(response),
            },
        }
    }

    fn inner(
        mut inner: S,
        mut req: Request<B>,
        gate: &Gate,
        ctx: &RequestContext,
        decision: Decision,
    ) -> Self {
        if let Decision::Allow { route, kind } = decision {
            req.extensions_mut().insert(Allowed {
                route,
                kind,
                client_ip: ctx.client.client_ip,
                peer_ip: ctx.client.peer_ip,
            });
        }
        let hsts = if ctx.client.tls {
            gate.hsts.clone()
        } else {
            None
        };
        ResponseFuture {
            state: State::Inner {
                future: inner.call(req),
                hsts,
            },
        }
    }
}

/// A response future polled again after it completed: a caller bug, answered with 503 (fail closed), not a panic.
fn polled_after_completion() -> Response<Full<Bytes>> {
    let denial = Denial::new(
        DenialKind::Unavailable,
        "response future polled after completion",
    );
    render(&denial, false, DEFAULT_REALM, None)
}

impl<S, B, ResBody> Future for ResponseFuture<S, B>
where
    S: Service<Request<B>, Response = Response<ResBody>>,
{
    type Output = Result<Response<GateBody<ResBody>>, S::Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        loop {
            match self.as_mut().project().state.project() {
                Projected::Ready { response } => {
                    let response = response.take().unwrap_or_else(polled_after_completion);
                    return Poll::Ready(Ok(response.map(Either::Right)));
                }
                Projected::Inner { future, hsts } => {
                    let mut response = ready!(future.poll(cx))?;
                    if let Some(value) = hsts.take() {
                        response
                            .headers_mut()
                            .insert(STRICT_TRANSPORT_SECURITY, value);
                    }
                    return Poll::Ready(Ok(response.map(Either::Left)));
                }
                Projected::Authenticating { auth, pending } => {
                    let outcome = ready!(auth.as_mut().poll(cx));
                    let Some(pending) = pending.take() else {
                        return Poll::Ready(Ok(polled_after_completion().map(Either::Right)));
                    };
                    let next = pending.decide(outcome);
                    self.as_mut().project().state.set(next.state);
                }
            }
        }
    }
}
