//! The benches' inner service, audit sink and driver: a small fixed response, a sink that records nothing, and a
//! call polled to completion without an executor.

use std::convert::Infallible;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use scopegate::layer::{AuditEvent, AuditSink};
use tower::Service;

use crate::poll::ready;

/// The benchmark's audit sink: records nothing.
pub(crate) struct NoAudit;

impl AuditSink for NoAudit {
    fn record(&self, _event: &AuditEvent<'_>) {}
}

/// The inner service: a small fixed response with its `Content-Type`, as axum's hello world answers (so the
/// response's header map exists before the gate adds `Strict-Transport-Security`, as on every real response).
pub(crate) async fn hello(_req: Request<()>) -> Result<Response<Full<Bytes>>, Infallible> {
    let mut response = Response::new(Full::new(Bytes::from_static(b"hello")));
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    Ok(response)
}

/// `poll_ready`, then `call`, then the response future to completion.
pub(crate) fn call<S>(service: &mut S, req: Request<()>) -> Result<S::Response, S::Error>
where
    S: Service<Request<()>>,
{
    ready(std::future::poll_fn(|cx| service.poll_ready(cx)))?;
    ready(service.call(req))
}
