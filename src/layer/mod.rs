//! The Tower layer: the whole decision order in front of a service.
//!
//! ```
//! use std::convert::Infallible;
//! use http::{Request, Response, StatusCode};
//! use scopegate::layer::ScopeGateLayer;
//! use scopegate::network::ConnectionInfo;
//! use scopegate::policy::{Policy, Route};
//! use tower::{ServiceBuilder, ServiceExt, service_fn};
//!
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
//! let policy = Policy::builder().route(Route::get("/health").public()).build()?;
//! let gate = ScopeGateLayer::builder(policy).build()?;
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
mod builder;
mod future;
mod metrics;
mod rate_limit;
mod render;
mod resource;
mod service;
mod throttle;

use std::net::IpAddr;

use bytes::Bytes;
use http_body_util::{Either, Full};

pub use audit::{AUDIT_TARGET, AuditEvent, AuditSink, JsonLinesAudit, KeySetEvent, TracingAudit};
pub use builder::ScopeGateBuilder;
pub use future::ResponseFuture;
pub use metrics::{DECISION_DURATION_SECONDS, DECISIONS_TOTAL};
pub use render::DenialBodyHook;
pub use resource::{PROTECTED_RESOURCE_PATH, ProtectedResource};
pub use service::{ScopeGateLayer, ScopeGateService};
pub use throttle::{MAX_LOCKED_CLIENTS, ThrottleConfig};

/// The RFC 6750 realm of challenges when none is configured.
const DEFAULT_REALM: &str = "scopegate";

#[cfg(feature = "axum")]
use crate::policy::Denial;
use crate::policy::{AllowKind, RoutePattern};

/// What the gate decided about an allowed request: the matched route and the client.
///
/// An allowed request carries exactly one extension from the gate: the [`Grant`](crate::Grant) when a credential
/// was authenticated (which holds this, see [`Grant::allowed`](crate::Grant::allowed)), else this alone (public
/// routes, and anonymous requests on optional-auth routes). [`Allowed::of`] reads it either way; with axum, a
/// handler takes `Allowed` as an argument.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allowed {
    route: RoutePattern,
    kind: AllowKind,
    client_ip: Option<IpAddr>,
    peer_ip: Option<IpAddr>,
}

impl Allowed {
    /// The gate's decision in a request's extensions: inside the [`Grant`](crate::Grant) of an authenticated
    /// request, or on its own. `None` when the gate did not allow this request (it is not behind the gate).
    pub fn of(extensions: &http::Extensions) -> Option<&Allowed> {
        extensions.get::<Allowed>().or_else(|| {
            extensions
                .get::<crate::Grant>()
                .and_then(crate::Grant::allowed)
        })
    }

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

/// Renders a denial the way the gate does for an HTTP request, with the default realm: for in-handler refusals.
#[cfg(feature = "axum")]
pub(crate) fn render_denial(denial: &Denial) -> http::Response<Full<Bytes>> {
    render::render(
        denial,
        render::GrpcFlavor::None,
        render::PreparedDenials::default_realm(),
        None,
    )
}

/// The response body of a gated service: the inner service's body, or a denial's.
pub type GateBody<B> = Either<B, Full<Bytes>>;

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::sync::Arc;

    use super::*;
    use crate::grant::{Attributes, Rights};
    use crate::policy::ScopeSet;

    fn allowed(kind: AllowKind) -> Allowed {
        Allowed {
            route: RoutePattern::from("/v1/orders/{id}"),
            kind,
            client_ip: Some(IpAddr::from([192, 0, 2, 7])),
            peer_ip: Some(IpAddr::from([10, 0, 0, 1])),
        }
    }

    #[test]
    fn the_decision_is_read_alone_or_from_the_grant() {
        let mut alone = http::Extensions::new();
        assert_eq!(Allowed::of(&alone), None, "not behind the gate");
        alone.insert(allowed(AllowKind::Public));
        let read = Allowed::of(&alone).unwrap();
        assert_eq!(read.route(), "/v1/orders/{id}");
        assert_eq!(read.kind(), AllowKind::Public);
        assert_eq!(read.client_ip(), Some(IpAddr::from([192, 0, 2, 7])));
        assert_eq!(read.peer_ip(), Some(IpAddr::from([10, 0, 0, 1])));

        let rights = Arc::new(Rights::new(ScopeSet::new(), None, Attributes::new()));
        let grant = crate::Grant::api_key("0123456789abcdef".parse().unwrap(), rights, None);
        let mut with_grant = http::Extensions::new();
        with_grant.insert(grant.clone());
        assert_eq!(
            Allowed::of(&with_grant),
            None,
            "a grant the gate did not allow"
        );
        with_grant.insert(grant.with_allowed(allowed(AllowKind::Granted)));
        assert_eq!(Allowed::of(&with_grant), Some(&allowed(AllowKind::Granted)));
    }
}
