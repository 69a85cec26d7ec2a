//! The axum extractor: a handler takes a [`Grant`] argument; a route behind the gate always has one.
//!
//! A handler that asks for a `Grant` where none was inserted means the stack is misconfigured (the layer is
//! missing, or the route is public): it answers 500, not 401, the way axum's `Extension` does.
//! `Option<Grant>` is `None` on public routes. A handler may also take [`Allowed`] (the route and the client), which
//! every allowed request has.
//!
//! Behind a server that scopegate's acceptors do not run (`axum::serve`), the gate reads the peer from axum's
//! `ConnectInfo<SocketAddr>` (`into_make_service_with_connect_info`); such a connection counts as plaintext.

use axum_core::extract::{FromRequestParts, OptionalFromRequestParts};
use axum_core::response::{IntoResponse, Response};
use http::StatusCode;
use http::request::Parts;

use crate::grant::Grant;
use crate::layer::Allowed;
use crate::network::ConnectionInfo;

/// axum's `ConnectInfo<SocketAddr>`: the peer only; axum's own server does not terminate TLS.
pub(super) fn connection_info(extensions: &http::Extensions) -> Option<ConnectionInfo> {
    extensions
        .get::<::axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|::axum::extract::ConnectInfo(addr)| ConnectionInfo {
            peer: Some(addr.ip()),
            tls: false,
        })
}

/// The rejection when no [`Grant`] (or, for an [`Allowed`] argument, no decision) is in the request: 500, because
/// the gate is missing from the stack.
#[derive(Debug, Clone, Copy)]
pub struct MissingGrant;

impl IntoResponse for MissingGrant {
    fn into_response(self) -> Response {
        tracing::error!(
            target: crate::layer::AUDIT_TARGET,
            "a handler asked for a Grant but the request has none: is the scopegate layer missing from this route?"
        );
        (StatusCode::INTERNAL_SERVER_ERROR, "internal error").into_response()
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Grant {
    type Rejection = MissingGrant;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts.extensions.get::<Grant>().cloned().ok_or(MissingGrant)
    }
}

impl<S: Send + Sync> OptionalFromRequestParts<S> for Grant {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        _state: &S,
    ) -> Result<Option<Self>, Self::Rejection> {
        Ok(parts.extensions.get::<Grant>().cloned())
    }
}

/// A handler behind the gate may take [`Allowed`]: the matched route and the client, on every allowed request
/// (inside the grant of an authenticated one, see [`Allowed::of`]). Missing, it answers 500 as a missing grant does.
impl<S: Send + Sync> FromRequestParts<S> for Allowed {
    type Rejection = MissingGrant;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Allowed::of(&parts.extensions).cloned().ok_or(MissingGrant)
    }
}

/// A handler may return `Result<_, Denial>`: an in-handler refusal (from [`Grant::require`], say) is answered
/// exactly as the gate answers its own — status, RFC 6750 challenge and RFC 9457 body from the one table — and is
/// recorded as a `tracing` event on the audit target (`scopegate::audit`), so that resource-level decisions are
/// audited too. The challenge's realm is the default, `scopegate`.
impl IntoResponse for crate::policy::Denial {
    fn into_response(self) -> Response {
        tracing::warn!(
            target: crate::layer::AUDIT_TARGET,
            decision = "deny",
            reason = self.reason(),
            detail = self.detail(),
            status = self.answer().status,
            "authorization decision in a handler"
        );
        crate::layer::render_denial(&self).map(axum_core::body::Body::new)
    }
}
