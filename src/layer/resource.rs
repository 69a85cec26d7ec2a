//! RFC 9728 protected resource metadata: the document that tells OAuth 2.1 clients (MCP clients among them) which
//! authorization servers issue tokens for this API, and the `resource_metadata` parameter that points 401
//! challenges at it.

use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_TYPE, HeaderValue, WWW_AUTHENTICATE};
use http::{Method, Response};
use http_body_util::Full;

use crate::policy::{Policy, RoutePattern};

/// The well-known path of the metadata document (RFC 9728 §3).
pub const PROTECTED_RESOURCE_PATH: &str = "/.well-known/oauth-protected-resource";

/// The protected resource metadata a gate serves (RFC 9728).
///
/// The gate answers `GET /.well-known/oauth-protected-resource` (and, when the resource identifier has a path,
/// the path-suffixed form of RFC 9728 §3.1) without a credential, and every 401 challenge carries
/// `resource_metadata="…"` pointing at it. Give the resource identifier to your JWT authenticator as an accepted
/// audience too (RFC 8707; the gate file does this itself).
///
/// ```
/// use scopegate::layer::{ProtectedResource, ScopeGateLayer};
/// use scopegate::policy::{Policy, Route};
///
/// let policy = Policy::builder()
///     .route(Route::get("/v1/orders").require_all(["orders:read"]))
///     .build()
///     .unwrap();
/// let gate = ScopeGateLayer::builder(policy)
///     .protected_resource(
///         ProtectedResource::new("https://api.example")
///             .authorization_servers(["https://login.example/realms/acme"]),
///     )
///     .build()
///     .unwrap();
/// # let _ = gate;
/// ```
#[derive(Debug, Clone)]
pub struct ProtectedResource {
    uri: String,
    authorization_servers: Vec<String>,
    scopes_supported: Option<Vec<String>>,
}

impl ProtectedResource {
    /// The resource identifier: an `https://` URL without query or fragment.
    pub fn new(uri: impl Into<String>) -> Self {
        ProtectedResource {
            uri: uri.into(),
            authorization_servers: Vec::new(),
            scopes_supported: None,
        }
    }

    /// The issuer identifiers of the authorization servers that issue tokens for this resource.
    #[must_use]
    pub fn authorization_servers<S: Into<String>>(
        mut self,
        servers: impl IntoIterator<Item = S>,
    ) -> Self {
        self.authorization_servers
            .extend(servers.into_iter().map(Into::into));
        self
    }

    /// The scopes clients may request. Defaults to every scope that a route of the policy requires.
    #[must_use]
    pub fn scopes_supported<S: Into<String>>(
        mut self,
        scopes: impl IntoIterator<Item = S>,
    ) -> Self {
        self.scopes_supported = Some(scopes.into_iter().map(Into::into).collect());
        self
    }

    /// The resource identifier.
    pub fn uri(&self) -> &str {
        &self.uri
    }

    /// An `https://` URL with a host, no query, no fragment, no credentials, and nothing that would need escaping
    /// in a header's quoted string.
    pub(crate) fn check_uri(uri: &str) -> Result<(), String> {
        let Some(rest) = uri.strip_prefix("https://") else {
            return Err(format!("{uri:?} is not an https:// URL"));
        };
        let host = rest.split('/').next().unwrap_or("");
        if host.is_empty() || host.contains('@') {
            return Err(format!("{uri:?} has no host (or carries credentials)"));
        }
        if uri.contains(['?', '#']) {
            return Err(format!(
                "{uri:?}: a resource identifier has no query or fragment (RFC 9728 §1.2)"
            ));
        }
        if !uri
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\')
        {
            return Err(format!("{uri:?} holds a character a URL does not"));
        }
        Ok(())
    }

    /// The document, its paths and the challenge parameter, made once.
    pub(super) fn compile(
        self,
        policy: &Policy,
    ) -> Result<ResourceDocument, (&'static str, String)> {
        Self::check_uri(&self.uri).map_err(|why| ("uri", why))?;
        if let Some(bad) = self
            .authorization_servers
            .iter()
            .find(|s| Self::check_uri(s).is_err())
        {
            return Err((
                "authorization_servers",
                format!("{bad:?} is not an https:// issuer identifier"),
            ));
        }
        let scopes = self.scopes_supported.unwrap_or_else(|| {
            policy
                .required_scopes()
                .into_iter()
                .map(|s| s.as_str().to_owned())
                .collect()
        });
        let rest = &self.uri["https://".len()..];
        // RFC 9728 §3.1: only a slash right after the host goes; a path keeps its own trailing slash.
        let (origin, path) = match rest.find('/') {
            Some(at) if &rest[at..] == "/" => (&self.uri[..8 + at], ""),
            Some(at) => (&self.uri[..8 + at], &rest[at..]),
            None => (self.uri.as_str(), ""),
        };
        let mut paths = vec![PROTECTED_RESOURCE_PATH.to_owned()];
        if !path.is_empty() {
            paths.push(format!("{PROTECTED_RESOURCE_PATH}{path}"));
        }
        // The document of this resource: the path-suffixed form when the identifier has a path (RFC 9728 §3.1).
        let metadata_url = format!("{origin}{}", paths[paths.len() - 1]);
        let body = serde_json::json!({
            "resource": self.uri,
            "authorization_servers": self.authorization_servers,
            "scopes_supported": scopes,
            "bearer_methods_supported": ["header"],
        });
        Ok(ResourceDocument {
            paths: paths.iter().map(|p| RoutePattern::compiled(p)).collect(),
            body: Bytes::from(body.to_string()),
            challenge: format!(", resource_metadata=\"{metadata_url}\""),
        })
    }
}

/// The compiled document.
pub(super) struct ResourceDocument {
    /// Kept like a policy's route patterns: an allow of the document hands one out.
    paths: Vec<RoutePattern>,
    body: Bytes,
    /// `, resource_metadata="…"`, appended to 401 challenges.
    pub(super) challenge: String,
}

impl ResourceDocument {
    /// The well-known path this request asks for, if it is a GET or HEAD of one.
    pub(super) fn path_for(&self, method: &Method, path: &str) -> Option<&RoutePattern> {
        if method != Method::GET && method != Method::HEAD {
            return None;
        }
        self.paths.iter().find(|p| p.as_str() == path)
    }

    /// Adds `resource_metadata` to a 401's `WWW-Authenticate` challenge.
    pub(super) fn point_challenge(&self, response: &mut Response<Full<Bytes>>) {
        if response.status() != http::StatusCode::UNAUTHORIZED {
            return;
        }
        let Some(challenge) = response.headers().get(WWW_AUTHENTICATE) else {
            return;
        };
        let mut value = challenge.as_bytes().to_vec();
        value.extend_from_slice(self.challenge.as_bytes());
        // The URL was checked to be header-safe when the document was made.
        if let Ok(value) = HeaderValue::from_bytes(&value) {
            response.headers_mut().insert(WWW_AUTHENTICATE, value);
        }
    }

    pub(super) fn response(&self) -> Response<Full<Bytes>> {
        let mut response = Response::new(Full::new(self.body.clone()));
        let headers = response.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        headers.insert(CACHE_CONTROL, HeaderValue::from_static("max-age=300"));
        response
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::policy::Route;

    fn policy() -> Policy {
        Policy::builder()
            .route(Route::get("/v1/orders").require_all(["orders:read"]))
            .route(Route::post("/v1/orders").require_any(["orders:write", "orders:admin"]))
            .route(Route::get("/health").public())
            .build()
            .unwrap()
    }

    #[test]
    fn the_document_lists_the_servers_and_the_required_scopes() {
        let resource = ProtectedResource::new("https://api.example")
            .authorization_servers(["https://login.example"]);
        assert_eq!(resource.uri(), "https://api.example");
        let doc = resource.compile(&policy()).unwrap();
        let body: serde_json::Value = serde_json::from_slice(&doc.body).unwrap();
        assert_eq!(body["resource"], "https://api.example");
        assert_eq!(body["authorization_servers"][0], "https://login.example");
        assert_eq!(
            body["scopes_supported"],
            serde_json::json!(["orders:admin", "orders:read", "orders:write"])
        );
        assert_eq!(
            doc.challenge,
            ", resource_metadata=\"https://api.example/.well-known/oauth-protected-resource\""
        );
        assert!(
            doc.path_for(&Method::GET, PROTECTED_RESOURCE_PATH)
                .is_some()
        );
        assert!(
            doc.path_for(&Method::HEAD, PROTECTED_RESOURCE_PATH)
                .is_some()
        );
        assert!(
            doc.path_for(&Method::POST, PROTECTED_RESOURCE_PATH)
                .is_none()
        );
        assert!(
            doc.path_for(&Method::GET, "/.well-known/oauth-protected-resourcex")
                .is_none()
        );
    }

    #[test]
    fn a_resource_with_a_path_has_the_path_suffixed_document() {
        let doc = ProtectedResource::new("https://api.example/tenants/acme")
            .scopes_supported(["a"])
            .compile(&policy())
            .unwrap();
        assert!(
            doc.path_for(
                &Method::GET,
                "/.well-known/oauth-protected-resource/tenants/acme"
            )
            .is_some()
        );
        assert!(
            doc.path_for(&Method::GET, PROTECTED_RESOURCE_PATH)
                .is_some()
        );
        assert!(
            doc.challenge.contains(
                "https://api.example/.well-known/oauth-protected-resource/tenants/acme\""
            )
        );
        // RFC 9728 §3.1 removes only a slash right after the host.
        let doc = ProtectedResource::new("https://api.example/tenants/acme/")
            .compile(&policy())
            .unwrap();
        assert!(
            doc.path_for(
                &Method::GET,
                "/.well-known/oauth-protected-resource/tenants/acme/"
            )
            .is_some()
        );
        let doc = ProtectedResource::new("https://api.example/")
            .compile(&policy())
            .unwrap();
        assert!(
            doc.challenge
                .ends_with("\"https://api.example/.well-known/oauth-protected-resource\"")
        );
    }

    #[test]
    fn bad_identifiers_are_refused() {
        for bad in [
            "http://api.example",
            "https://",
            "https://api.example/?a=b",
            "https://api.example/#x",
            "https://user@api.example",
            "https://api.example/\"x",
            "api.example",
        ] {
            assert!(ProtectedResource::check_uri(bad).is_err(), "{bad}");
            assert!(
                ProtectedResource::new(bad).compile(&policy()).is_err(),
                "{bad}"
            );
        }
        assert!(
            ProtectedResource::new("https://api.example")
                .authorization_servers(["http://login.example"])
                .compile(&policy())
                .is_err()
        );
    }

    #[test]
    fn only_a_401_challenge_points_at_the_document() {
        let doc = ProtectedResource::new("https://api.example")
            .compile(&policy())
            .unwrap();
        let answer = |status: u16, challenge: Option<&'static str>| {
            let mut response = Response::new(Full::new(Bytes::new()));
            *response.status_mut() = http::StatusCode::from_u16(status).unwrap();
            if let Some(c) = challenge {
                response
                    .headers_mut()
                    .insert(WWW_AUTHENTICATE, HeaderValue::from_static(c));
            }
            doc.point_challenge(&mut response);
            response.headers().get(WWW_AUTHENTICATE).cloned()
        };
        assert_eq!(
            answer(401, Some("Bearer realm=\"api\"")).unwrap(),
            "Bearer realm=\"api\", resource_metadata=\"https://api.example/.well-known/oauth-protected-resource\""
        );
        // A 403's challenge (insufficient_scope) stays as it was; a 401 without one gets none.
        assert_eq!(
            answer(403, Some("Bearer error=\"insufficient_scope\"")).unwrap(),
            "Bearer error=\"insufficient_scope\""
        );
        assert_eq!(answer(401, None), None);
    }

    #[test]
    fn the_document_is_served_as_cacheable_json() {
        let doc = ProtectedResource::new("https://api.example")
            .compile(&policy())
            .unwrap();
        let response = doc.response();
        assert_eq!(response.status(), http::StatusCode::OK);
        assert_eq!(response.headers()[CONTENT_TYPE], "application/json");
        assert_eq!(response.headers()[CACHE_CONTROL], "max-age=300");
        let body = response.into_body();
        let frame = full_bytes(body);
        let json: serde_json::Value = serde_json::from_slice(&frame).unwrap();
        assert_eq!(json["resource"], "https://api.example");
    }

    /// A `Full` body's bytes, read without a runtime.
    fn full_bytes(body: Full<Bytes>) -> Bytes {
        use http_body::Body;
        let mut body = std::pin::pin!(body);
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        match body.as_mut().poll_frame(&mut cx) {
            std::task::Poll::Ready(Some(Ok(frame))) => frame.into_data().unwrap(),
            _ => panic!("a full body is ready at once"),
        }
    }
}
