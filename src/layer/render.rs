//! Denials on the wire: HTTP (RFC 6750 challenge + RFC 9457 problem body) and gRPC (trailers-only status), both
//! read from the one table, `DenialKind::answer`.

use std::sync::Arc;

use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_TYPE, HeaderValue, RETRY_AFTER, WWW_AUTHENTICATE};
use http::{HeaderMap, Response, StatusCode};
use http_body_util::Full;

use super::throttle::retry_after_secs;
use crate::policy::{Challenge, Denial, DenialKind};

/// A user hook that may replace the body of a denial (content type and bytes). It sees only the coarse kind, and
/// cannot change the status, the headers or the decision.
pub type DenialBodyHook = Arc<dyn Fn(DenialKind) -> Option<(HeaderValue, Bytes)> + Send + Sync>;

/// Whether a request is gRPC (its content type is `application/grpc` or `application/grpc+…`).
pub(crate) fn is_grpc(headers: &HeaderMap) -> bool {
    headers.get(CONTENT_TYPE).is_some_and(|v| {
        let v = v.as_bytes();
        v.len() >= 16
            && v[..16].eq_ignore_ascii_case(b"application/grpc")
            && (v.len() == 16 || matches!(v[16], b'+' | b';'))
    })
}

fn title(code: &str) -> &'static str {
    match code {
        "malformed_request" => "Malformed request",
        "unauthenticated" => "Authentication required",
        "tls_required" => "TLS required",
        "insufficient_scope" => "Insufficient scope",
        "throttled" => "Too many failed attempts",
        "unavailable" => "Service unavailable",
        _ => "Forbidden",
    }
}

fn challenge(denial: &Denial, realm: &str) -> Option<String> {
    let answer = denial.answer();
    let error = match answer.challenge {
        Challenge::Realm => return Some(format!("Bearer realm=\"{realm}\"")),
        Challenge::InvalidToken => "invalid_token",
        Challenge::InsufficientScope => {
            let scopes: Vec<&str> = denial
                .scope_hint()
                .iter()
                .map(crate::policy::Scope::as_str)
                .collect();
            return Some(format!(
                "Bearer realm=\"{realm}\", error=\"insufficient_scope\", scope=\"{}\"",
                scopes.join(" ")
            ));
        }
        Challenge::InvalidRequest => "invalid_request",
        _ => return None,
    };
    Some(format!("Bearer realm=\"{realm}\", error=\"{error}\""))
}

/// Renders a denial. `realm` was validated at build time (quoted-string safe).
pub(crate) fn render(
    denial: &Denial,
    grpc: bool,
    realm: &str,
    hook: Option<&DenialBodyHook>,
) -> Response<Full<Bytes>> {
    let answer = denial.answer();
    let mut response = Response::new(Full::new(Bytes::new()));
    let headers = response.headers_mut();
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if grpc {
        // Trailers-only response: HTTP 200 with the gRPC status in the headers.
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
        headers.insert(
            "grpc-status",
            HeaderValue::from(u16::from(answer.grpc_code)),
        );
        headers.insert(
            "grpc-message",
            HeaderValue::from_static(answer.problem_code),
        );
        return response;
    }
    *response.status_mut() = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::FORBIDDEN);
    let headers = response.headers_mut();
    if let Some(value) = challenge(denial, realm).and_then(|c| HeaderValue::from_str(&c).ok()) {
        headers.insert(WWW_AUTHENTICATE, value);
    }
    if let Some(wait) = denial.retry_after() {
        headers.insert(RETRY_AFTER, HeaderValue::from(retry_after_secs(wait)));
    }
    let custom = hook.and_then(|h| h(denial.kind()));
    let (content_type, body) = custom.unwrap_or_else(|| {
        let body = serde_json::json!({
            "type": "about:blank",
            "title": title(answer.problem_code),
            "status": answer.status,
            "code": answer.problem_code,
        });
        (
            HeaderValue::from_static("application/problem+json"),
            Bytes::from(body.to_string()),
        )
    });
    headers.insert(CONTENT_TYPE, content_type);
    *response.body_mut() = Full::new(body);
    response
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt;

    use super::*;
    use crate::policy::Scope;

    fn body(r: Response<Full<Bytes>>) -> serde_json::Value {
        let bytes = futures_executor(r.into_body().collect())
            .unwrap()
            .to_bytes();
        serde_json::from_slice(&bytes).unwrap()
    }

    fn futures_executor<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(f)
    }

    #[test]
    fn http_denials_follow_the_table() {
        for kind in DenialKind::ALL {
            let r = render(&Denial::new(kind, "x"), false, "api", None);
            assert_eq!(r.status().as_u16(), kind.answer().status, "{kind}");
            assert_eq!(r.headers()[CONTENT_TYPE], "application/problem+json");
            let json = body(r);
            assert_eq!(json["code"], kind.answer().problem_code);
            assert_eq!(json["status"], kind.answer().status);
            assert_eq!(
                json.as_object().unwrap().len(),
                4,
                "bodies stay minimal: {json}"
            );
        }
    }

    #[test]
    fn challenges() {
        let r = render(
            &Denial::new(DenialKind::MissingCredential, "x"),
            false,
            "api",
            None,
        );
        assert_eq!(r.headers()[WWW_AUTHENTICATE], "Bearer realm=\"api\"");
        let r = render(
            &Denial::new(DenialKind::RevokedCredential, "x"),
            false,
            "api",
            None,
        );
        assert_eq!(
            r.headers()[WWW_AUTHENTICATE],
            "Bearer realm=\"api\", error=\"invalid_token\""
        );
        let hint = vec![Scope::parse("a:read").unwrap(), Scope::parse("b").unwrap()];
        let r = render(&Denial::insufficient_scope(hint), false, "api", None);
        assert_eq!(
            r.headers()[WWW_AUTHENTICATE],
            "Bearer realm=\"api\", error=\"insufficient_scope\", scope=\"a:read b\""
        );
        let r = render(&Denial::malformed_credentials("two"), false, "api", None);
        assert_eq!(
            r.headers()[WWW_AUTHENTICATE],
            "Bearer realm=\"api\", error=\"invalid_request\""
        );
        for kind in [
            DenialKind::MalformedRequest,
            DenialKind::TlsRequired,
            DenialKind::NoPolicy,
            DenialKind::Unavailable,
        ] {
            let r = render(&Denial::new(kind, "x"), false, "api", None);
            assert!(r.headers().get(WWW_AUTHENTICATE).is_none(), "{kind}");
        }
    }

    #[test]
    fn throttled_has_retry_after() {
        let r = render(
            &Denial::throttled(std::time::Duration::from_millis(1500)),
            false,
            "api",
            None,
        );
        assert_eq!(r.status(), 429);
        assert_eq!(r.headers()[RETRY_AFTER], "2");
    }

    #[test]
    fn grpc_denials_are_trailers_only() {
        for kind in DenialKind::ALL {
            let r = render(&Denial::new(kind, "x"), true, "api", None);
            assert_eq!(r.status(), 200);
            assert_eq!(
                r.headers()["grpc-status"],
                kind.answer().grpc_code.to_string().as_str()
            );
            assert!(r.headers().get("grpc-message").is_some());
        }
    }

    #[test]
    fn grpc_detection() {
        let mut h = HeaderMap::new();
        for (ct, grpc) in [
            ("application/grpc", true),
            ("application/grpc+proto", true),
            ("Application/GRPC", true),
            ("application/grpc-web", false),
            ("application/json", false),
        ] {
            h.insert(CONTENT_TYPE, HeaderValue::from_static(ct));
            assert_eq!(is_grpc(&h), grpc, "{ct}");
        }
    }

    #[test]
    fn hook_changes_the_body_only() {
        let hook: DenialBodyHook = Arc::new(|kind| {
            Some((
                HeaderValue::from_static("text/plain"),
                Bytes::from(format!("no: {kind}")),
            ))
        });
        let r = render(
            &Denial::new(DenialKind::NoPolicy, "x"),
            false,
            "api",
            Some(&hook),
        );
        assert_eq!(r.status(), 403);
        assert_eq!(r.headers()[CONTENT_TYPE], "text/plain");
    }
}
