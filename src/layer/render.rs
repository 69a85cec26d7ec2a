//! Denials on the wire: HTTP (RFC 6750 challenge + RFC 9457 problem body), gRPC (trailers-only status) and
//! gRPC-web (the status in a trailer frame in the body), all read from the one table, `DenialKind::answer`.

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

/// How a request wants its denial: as HTTP, gRPC, or gRPC-web (binary or base64 text), from its content type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum GrpcFlavor {
    /// Not gRPC: an HTTP problem body.
    None,
    /// `application/grpc`, `application/grpc+…`: a trailers-only response.
    Grpc,
    /// `application/grpc-web`, `application/grpc-web+…`: the status in a trailer frame of the body.
    Web,
    /// `application/grpc-web-text`, `application/grpc-web-text+…`: the same frame, base64.
    WebText,
}

impl GrpcFlavor {
    pub(crate) fn of(headers: &HeaderMap) -> Self {
        let Some(value) = headers.get(CONTENT_TYPE) else {
            return GrpcFlavor::None;
        };
        let v = value.as_bytes();
        // The type, up to a `+` subtype or `;` parameters, compared without case.
        let end = v
            .iter()
            .position(|b| matches!(b, b'+' | b';'))
            .unwrap_or(v.len());
        let base = &v[..end];
        if base.eq_ignore_ascii_case(b"application/grpc") {
            GrpcFlavor::Grpc
        } else if base.eq_ignore_ascii_case(b"application/grpc-web") {
            GrpcFlavor::Web
        } else if base.eq_ignore_ascii_case(b"application/grpc-web-text") {
            GrpcFlavor::WebText
        } else {
            GrpcFlavor::None
        }
    }
}

/// A gRPC-web trailer frame: the flag byte 0x80, the length (4 bytes, big-endian), then the trailers as HTTP/1
/// header lines.
fn web_trailer_frame(grpc_code: u8, message: &str) -> Vec<u8> {
    let trailers = format!("grpc-status:{grpc_code}\r\ngrpc-message:{message}\r\n");
    let mut frame = Vec::with_capacity(5 + trailers.len());
    frame.push(0x80);
    frame.extend_from_slice(&u32::try_from(trailers.len()).unwrap_or(0).to_be_bytes());
    frame.extend_from_slice(trailers.as_bytes());
    frame
}

fn title(code: &str) -> &'static str {
    match code {
        "malformed_request" => "Malformed request",
        "unauthenticated" => "Authentication required",
        "tls_required" => "TLS required",
        "insufficient_scope" => "Insufficient scope",
        "throttled" => "Too many failed attempts",
        "rate_limited" => "Rate limit exceeded",
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

/// The parts of each kind's HTTP denial that never change, made once per gate: the problem body, and the challenge
/// with the gate's realm. Only `insufficient_scope`'s challenge, which names the missing scopes, is made per denial.
pub(crate) struct PreparedDenials {
    bodies: [Bytes; DenialKind::ALL.len()],
    challenges: [Option<HeaderValue>; DenialKind::ALL.len()],
    /// `Bearer error="invalid_request"`, for malformed credential headers.
    invalid_request: Option<HeaderValue>,
    realm: String,
}

impl PreparedDenials {
    /// For a gate whose realm is `realm` (validated at build time: quoted-string safe).
    pub(crate) fn new(realm: &str) -> Self {
        let header = |text: Option<String>| text.and_then(|t| HeaderValue::from_str(&t).ok());
        PreparedDenials {
            bodies: DenialKind::ALL.map(|kind| {
                let answer = kind.answer();
                let body = serde_json::json!({
                    "type": "about:blank",
                    "title": title(answer.problem_code),
                    "status": answer.status,
                    "code": answer.problem_code,
                });
                Bytes::from(body.to_string())
            }),
            challenges: DenialKind::ALL
                .map(|kind| header(challenge(&Denial::new(kind, ""), realm))),
            invalid_request: header(challenge(&Denial::malformed_credentials(""), realm)),
            realm: realm.to_owned(),
        }
    }

    /// The gate's default realm, for denials rendered outside a gate.
    pub(crate) fn default_realm() -> &'static PreparedDenials {
        static DEFAULT: std::sync::OnceLock<PreparedDenials> = std::sync::OnceLock::new();
        DEFAULT.get_or_init(|| PreparedDenials::new(super::DEFAULT_REALM))
    }

    fn index(kind: DenialKind) -> usize {
        DenialKind::ALL.iter().position(|k| *k == kind).unwrap_or(0)
    }

    /// The `WWW-Authenticate` value of `denial`, if it has one.
    fn challenge(&self, denial: &Denial) -> Option<HeaderValue> {
        match denial.answer().challenge {
            Challenge::InsufficientScope => {
                challenge(denial, &self.realm).and_then(|c| HeaderValue::from_str(&c).ok())
            }
            Challenge::InvalidRequest => self.invalid_request.clone(),
            _ => self.challenges[Self::index(denial.kind())].clone(),
        }
    }
}

/// Renders a denial from the gate's prepared parts.
pub(crate) fn render(
    denial: &Denial,
    flavor: GrpcFlavor,
    prepared: &PreparedDenials,
    hook: Option<&DenialBodyHook>,
) -> Response<Full<Bytes>> {
    use base64::Engine as _;
    let answer = denial.answer();
    let mut response = Response::new(Full::new(Bytes::new()));
    let headers = response.headers_mut();
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    match flavor {
        GrpcFlavor::None => {}
        GrpcFlavor::Grpc => {
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
        GrpcFlavor::Web | GrpcFlavor::WebText => {
            // gRPC-web: HTTP 200, no message, the status in the body's trailer frame.
            let frame = web_trailer_frame(answer.grpc_code, answer.problem_code);
            let (content_type, body) = if flavor == GrpcFlavor::Web {
                ("application/grpc-web+proto", frame)
            } else {
                (
                    "application/grpc-web-text+proto",
                    base64::engine::general_purpose::STANDARD
                        .encode(frame)
                        .into_bytes(),
                )
            };
            headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
            *response.body_mut() = Full::new(Bytes::from(body));
            return response;
        }
    }
    *response.status_mut() = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::FORBIDDEN);
    let headers = response.headers_mut();
    if let Some(value) = prepared.challenge(denial) {
        headers.insert(WWW_AUTHENTICATE, value);
    }
    if let Some(wait) = denial.retry_after() {
        headers.insert(RETRY_AFTER, HeaderValue::from(retry_after_secs(wait)));
    }
    let custom = hook.and_then(|h| h(denial.kind()));
    let (content_type, body) = custom.unwrap_or_else(|| {
        (
            HeaderValue::from_static("application/problem+json"),
            prepared.bodies[PreparedDenials::index(denial.kind())].clone(),
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
            let r = render(
                &Denial::new(kind, "x"),
                GrpcFlavor::None,
                &PreparedDenials::new("api"),
                None,
            );
            assert_eq!(r.status().as_u16(), kind.answer().status, "{kind}");
            assert_eq!(r.headers()[CONTENT_TYPE], "application/problem+json");
            let json = body(r);
            assert_eq!(json["code"], kind.answer().problem_code);
            assert_eq!(json["status"], kind.answer().status);
            assert_eq!(json["type"], "about:blank");
            let title = match kind.answer().problem_code {
                "malformed_request" => "Malformed request",
                "unauthenticated" => "Authentication required",
                "tls_required" => "TLS required",
                "insufficient_scope" => "Insufficient scope",
                "throttled" => "Too many failed attempts",
                "rate_limited" => "Rate limit exceeded",
                "unavailable" => "Service unavailable",
                "forbidden" => "Forbidden",
                other => panic!("a problem code without a title in this table: {other}"),
            };
            assert_eq!(json["title"], title, "{kind}");
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
            GrpcFlavor::None,
            &PreparedDenials::new("api"),
            None,
        );
        assert_eq!(r.headers()[WWW_AUTHENTICATE], "Bearer realm=\"api\"");
        let r = render(
            &Denial::new(DenialKind::RevokedCredential, "x"),
            GrpcFlavor::None,
            &PreparedDenials::new("api"),
            None,
        );
        assert_eq!(
            r.headers()[WWW_AUTHENTICATE],
            "Bearer realm=\"api\", error=\"invalid_token\""
        );
        let hint = vec![Scope::parse("a:read").unwrap(), Scope::parse("b").unwrap()];
        let r = render(
            &Denial::insufficient_scope(hint),
            GrpcFlavor::None,
            &PreparedDenials::new("api"),
            None,
        );
        assert_eq!(
            r.headers()[WWW_AUTHENTICATE],
            "Bearer realm=\"api\", error=\"insufficient_scope\", scope=\"a:read b\""
        );
        let r = render(
            &Denial::malformed_credentials("two"),
            GrpcFlavor::None,
            &PreparedDenials::new("api"),
            None,
        );
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
            let r = render(
                &Denial::new(kind, "x"),
                GrpcFlavor::None,
                &PreparedDenials::new("api"),
                None,
            );
            assert!(r.headers().get(WWW_AUTHENTICATE).is_none(), "{kind}");
        }
    }

    #[test]
    fn throttled_has_retry_after() {
        let r = render(
            &Denial::throttled(std::time::Duration::from_millis(1500)),
            GrpcFlavor::None,
            &PreparedDenials::new("api"),
            None,
        );
        assert_eq!(r.status(), 429);
        assert_eq!(r.headers()[RETRY_AFTER], "2");
    }

    #[test]
    fn grpc_denials_are_trailers_only() {
        for kind in DenialKind::ALL {
            let r = render(
                &Denial::new(kind, "x"),
                GrpcFlavor::Grpc,
                &PreparedDenials::new("api"),
                None,
            );
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
        for (ct, flavor) in [
            ("application/grpc", GrpcFlavor::Grpc),
            ("application/grpc+proto", GrpcFlavor::Grpc),
            ("Application/GRPC", GrpcFlavor::Grpc),
            ("application/grpc;charset=utf-8", GrpcFlavor::Grpc),
            ("application/grpc-web", GrpcFlavor::Web),
            ("application/grpc-web+proto", GrpcFlavor::Web),
            ("application/grpc-web-text", GrpcFlavor::WebText),
            ("application/grpc-web-text+proto", GrpcFlavor::WebText),
            ("application/grpcx", GrpcFlavor::None),
            ("application/grpc-webx", GrpcFlavor::None),
            ("application/json", GrpcFlavor::None),
        ] {
            h.insert(CONTENT_TYPE, HeaderValue::from_static(ct));
            assert_eq!(GrpcFlavor::of(&h), flavor, "{ct}");
        }
        assert_eq!(GrpcFlavor::of(&HeaderMap::new()), GrpcFlavor::None);
    }

    #[test]
    fn grpc_web_denials_carry_the_status_in_a_trailer_frame() {
        use base64::Engine as _;
        for kind in DenialKind::ALL {
            let code = kind.answer().grpc_code;
            let trailers = format!(
                "grpc-status:{code}\r\ngrpc-message:{}\r\n",
                kind.answer().problem_code
            );
            let r = render(
                &Denial::new(kind, "x"),
                GrpcFlavor::Web,
                &PreparedDenials::new("api"),
                None,
            );
            assert_eq!(r.status(), 200);
            assert_eq!(r.headers()[CONTENT_TYPE], "application/grpc-web+proto");
            assert!(r.headers().get("grpc-status").is_none());
            let bytes = futures_executor(r.into_body().collect())
                .unwrap()
                .to_bytes();
            assert_eq!(bytes[0], 0x80, "a trailer frame");
            let len = u32::from_be_bytes(bytes[1..5].try_into().unwrap()) as usize;
            assert_eq!(&bytes[5..], trailers.as_bytes());
            assert_eq!(len, trailers.len());
            let r = render(
                &Denial::new(kind, "x"),
                GrpcFlavor::WebText,
                &PreparedDenials::new("api"),
                None,
            );
            assert_eq!(r.headers()[CONTENT_TYPE], "application/grpc-web-text+proto");
            let text = futures_executor(r.into_body().collect())
                .unwrap()
                .to_bytes();
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(&text)
                .unwrap();
            assert_eq!(&decoded[5..], trailers.as_bytes());
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
            GrpcFlavor::None,
            &PreparedDenials::new("api"),
            Some(&hook),
        );
        assert_eq!(r.status(), 403);
        assert_eq!(r.headers()[CONTENT_TYPE], "text/plain");
    }
}
