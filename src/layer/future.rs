//! The response future: a denial ready at once, authentication under way, or the inner service answering.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http::header::{HeaderValue, STRICT_TRANSPORT_SECURITY};
use http::{Request, Response};
use http_body_util::{Either, Full};
use pin_project_lite::pin_project;
use tower_service::Service;

use super::rate_limit::{RateHeaders, RateOutcome};
use super::render::{GrpcFlavor, PreparedDenials, render};
use super::service::{Gate, RequestContext, mark_sensitive};
use super::{Allowed, GateBody};
use crate::credential::{AuthFuture, CredentialSource};
use crate::grant::Grant;
use crate::policy::{Decision, Denial, DenialKind, Lookup};

pub(super) struct AwaitingAuth<S, B> {
    pub(super) inner: S,
    pub(super) req: Request<B>,
    pub(super) lookup: Lookup,
    /// The header the credential was read from.
    pub(super) source: CredentialSource,
    pub(super) ctx: RequestContext,
}

impl<S, B> AwaitingAuth<S, B>
where
    S: Service<Request<B>>,
{
    /// Steps 7–10 once authentication has an outcome: deny, or call the inner service with the grant attached.
    pub(super) fn decide(
        self,
        gate: &Gate,
        outcome: Result<Grant, Denial>,
    ) -> ResponseFuture<S, B> {
        let AwaitingAuth {
            inner,
            req,
            lookup,
            source,
            ctx,
        } = self;
        let route = gate.policy.route_of(&lookup);
        // 7–8.
        let decision = gate
            .policy
            .finish(&lookup, outcome.as_ref(), ctx.client.client_ip.as_ref());
        let grant = match (&decision, outcome) {
            (Decision::Allow { .. }, Ok(grant)) => grant,
            (Decision::Deny(denial), outcome) => {
                let denial = denial.clone();
                let response = gate.deny(&req, &ctx, denial, Some(outcome.as_ref()), route);
                return ResponseFuture::ready(response);
            }
            // `finish` denies every failed authentication; were it not to, this still refuses.
            (Decision::Allow { .. }, Err(denial)) => {
                let response = gate.deny(&req, &ctx, denial.clone(), Some(Err(&denial)), route);
                return ResponseFuture::ready(response);
            }
        };
        // 9. Rate: a key with a limit, past it, is refused (and the refusal consumes nothing).
        let rate = match (grant.rate_limit(), grant.key_id()) {
            (Some(limit), Some(id)) => match gate.rate_limits.check(id, limit) {
                RateOutcome::Allowed(headers) => Some(headers),
                RateOutcome::Limited(wait, headers) => {
                    let denial = Denial::rate_limited(wait);
                    let mut response = gate.deny(&req, &ctx, denial, Some(Ok(&grant)), route);
                    headers.apply(response.headers_mut());
                    return ResponseFuture::ready(response);
                }
            },
            _ => None,
        };
        // 10. Allow.
        let shadow = gate.shadow_decision(&req, &ctx, Some(Ok(&grant)));
        gate.audit(
            &req,
            &ctx,
            &decision,
            decision.status(),
            Some(&grant),
            route,
            shadow.as_ref(),
        );
        ResponseFuture::inner(
            inner,
            req,
            gate,
            &ctx,
            decision,
            Some(grant),
            Some(source),
            rate,
        )
    }
}

pin_project! {
    /// The response future of [`ScopeGateService`].
    pub struct ResponseFuture<S, B>
    where
        S: Service<Request<B>>,
    {
        #[pin]
        pub(super) state: State<S, B>,
    }
}

pin_project! {
    #[project = Projected]
    pub(super) enum State<S, B>
    where
        S: Service<Request<B>>,
    {
        // Denied without calling the inner service.
        Ready { response: Option<Response<Full<Bytes>>> },
        // Waiting for authentication (a store lookup, a key set), holding the gate (the only path that takes a
        // reference to it: the others borrow the service's). Boxed: this state is rare (a cache miss), and without
        // the box every response future would be the size of a whole request.
        Authenticating { auth: AuthFuture, pending: Option<Box<(Arc<Gate>, AwaitingAuth<S, B>)>> },
        // Allowed: the inner service is answering.
        Inner { #[pin] future: S::Future, hsts: Option<HeaderValue>, rate: Option<RateHeaders> },
    }
}

impl<S, B> ResponseFuture<S, B>
where
    S: Service<Request<B>>,
{
    pub(super) fn ready(response: Response<Full<Bytes>>) -> Self {
        ResponseFuture {
            state: State::Ready {
                response: Some(response),
            },
        }
    }

    /// Hands an allowed request to the inner service with its credential headers marked sensitive and one
    /// extension: the grant carrying the decision, or (without a grant) the decision alone. `source`: the header
    /// the grant's credential was read from.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn inner(
        mut inner: S,
        mut req: Request<B>,
        gate: &Gate,
        ctx: &RequestContext,
        decision: Decision,
        grant: Option<Grant>,
        source: Option<CredentialSource>,
        rate: Option<RateHeaders>,
    ) -> Self {
        mark_sensitive(&mut req, &gate.key_header, source);
        if let Decision::Allow { route, kind } = decision {
            let allowed = Allowed {
                route,
                kind,
                client_ip: ctx.client.client_ip,
                peer_ip: ctx.client.peer_ip,
            };
            // This gate's decision replaces an earlier one (an outer gate's): the grant replaces any grant, and a
            // stale `Allowed` beside it goes, or `Allowed::of` would read the outer decision.
            if let Some(grant) = grant {
                let extensions = req.extensions_mut();
                drop(extensions.insert(grant.with_allowed(allowed)));
                drop(extensions.remove::<Allowed>());
            } else {
                drop(req.extensions_mut().insert(allowed));
            }
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
                rate,
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
    render(
        &denial,
        GrpcFlavor::None,
        PreparedDenials::default_realm(),
        None,
    )
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
                Projected::Inner { future, hsts, rate } => {
                    let mut response = ready!(future.poll(cx))?;
                    if let Some(value) = hsts.take() {
                        response
                            .headers_mut()
                            .insert(STRICT_TRANSPORT_SECURITY, value);
                    }
                    if let Some(headers) = rate.take() {
                        headers.apply(response.headers_mut());
                    }
                    return Poll::Ready(Ok(response.map(Either::Left)));
                }
                Projected::Authenticating { auth, pending } => {
                    let outcome = ready!(auth.as_mut().poll(cx));
                    let Some(pending) = pending.take() else {
                        return Poll::Ready(Ok(polled_after_completion().map(Either::Right)));
                    };
                    let (gate, pending) = *pending;
                    let next = pending.decide(&gate, outcome);
                    self.as_mut().project().state.set(next.state);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::convert::Infallible;

    use http::StatusCode;

    use super::*;

    type Inner = tower::util::ServiceFn<
        fn(Request<()>) -> std::future::Ready<Result<Response<()>, Infallible>>,
    >;

    #[test]
    fn a_future_polled_after_it_completed_answers_503_not_a_panic() {
        let denial = Response::builder()
            .status(StatusCode::UNAUTHORIZED)
            .body(Full::new(Bytes::new()))
            .unwrap();
        let mut future = std::pin::pin!(ResponseFuture::<Inner, ()>::ready(denial));
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let Poll::Ready(Ok(first)) = future.as_mut().poll(&mut cx) else {
            panic!("a ready denial is ready");
        };
        assert_eq!(first.status(), StatusCode::UNAUTHORIZED);
        let Poll::Ready(Ok(again)) = future.as_mut().poll(&mut cx) else {
            panic!("polled again, still ready");
        };
        assert_eq!(again.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            again.headers()[http::header::CONTENT_TYPE],
            "application/problem+json"
        );
    }
}
