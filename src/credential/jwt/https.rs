//! Key sets fetched over HTTPS: a `jwks_url`, or OpenID Connect Discovery (RFC 8414's metadata as the fallback).
//!
//! reqwest on rustls (aws-lc-rs, the crate's crypto backend), trusting the system roots plus the configured CA
//! files. Every fetch is bounded: `https://` only, a whole-request timeout, a body size bound checked as it
//! arrives, and redirects followed only within the same origin.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use reqwest::{StatusCode, Url, header};
use serde_json::Value;

use super::keyset::{JwksDocument, JwksFetch, JwksSource};

/// Default time allowed for one fetch, connection included.
pub(crate) const DEFAULT_FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// Default largest document accepted, in bytes.
pub(crate) const DEFAULT_MAX_BYTES: usize = 1024 * 1024;
/// Redirects followed within one origin, at most.
const MAX_REDIRECTS: usize = 5;

/// Why a key set could not be fetched, or a fetcher set up. Messages name the URL or file at fault, never a token.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FetchError {
    /// A URL that is not an absolute `https://` URL.
    #[error("{url:?}: {reason}")]
    Url {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A CA file that cannot be read or holds no certificate.
    #[error("CA file {path}: {reason}")]
    Ca {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A setting out of bounds.
    #[error("{0}")]
    Setting(&'static str),
    /// The request failed: connection, TLS, timeout, or a redirect to another origin.
    #[error("GET {url}: {reason}")]
    Request {
        /// The URL.
        url: String,
        /// What failed.
        reason: String,
    },
    /// The server answered with a status other than 200.
    #[error("GET {url}: status {status}")]
    Status {
        /// The URL.
        url: String,
        /// The status.
        status: u16,
    },
    /// The body is larger than the bound.
    #[error("GET {url}: the body is larger than {max_bytes} bytes")]
    TooLarge {
        /// The URL.
        url: String,
        /// The bound.
        max_bytes: usize,
    },
    /// The metadata document is unusable (not JSON, another issuer, no `https://` `jwks_uri`).
    #[error("{url}: {reason}")]
    Metadata {
        /// The metadata document's URL.
        url: String,
        /// What is wrong.
        reason: String,
    },
}

/// Fetches key sets over HTTPS. Cheap to clone (one connection pool inside); one fetcher can serve many issuers.
///
/// ```
/// # fn main() -> Result<(), scopegate::credential::jwt::FetchError> {
/// use std::time::Duration;
/// use scopegate::credential::jwt::HttpsFetcher;
///
/// let fetcher = HttpsFetcher::builder()
///     .timeout(Duration::from_secs(5))
///     .max_bytes(1 << 20)
///     .build()?;
/// # let _ = fetcher;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct HttpsFetcher {
    client: reqwest::Client,
    max_bytes: usize,
    timeout: Duration,
}

impl fmt::Debug for HttpsFetcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpsFetcher")
            .field("max_bytes", &self.max_bytes)
            .finish_non_exhaustive()
    }
}

/// Builds an [`HttpsFetcher`]. Start with [`HttpsFetcher::builder`].
#[derive(Debug)]
#[must_use]
pub struct HttpsFetcherBuilder {
    ca_files: Vec<PathBuf>,
    ca_pems: Vec<Vec<u8>>,
    timeout: Duration,
    max_bytes: usize,
}

impl HttpsFetcherBuilder {
    /// Trusts the certificates of a PEM file besides the system roots (an internal CA, say). Read by
    /// [`build`](Self::build).
    pub fn ca_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.ca_files.push(path.into());
        self
    }

    /// Trusts the certificates of a PEM document besides the system roots.
    pub fn ca_pem(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.ca_pems.push(pem.into());
        self
    }

    /// The time allowed for one request, from connecting to the last byte. Defaults to 5 s.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The largest document accepted, in bytes. Defaults to 1 MiB.
    pub fn max_bytes(mut self, max_bytes: usize) -> Self {
        self.max_bytes = max_bytes;
        self
    }

    /// Reads the CA files and makes the client.
    pub fn build(self) -> Result<HttpsFetcher, FetchError> {
        if self.timeout < Duration::from_millis(1) {
            return Err(FetchError::Setting("timeout_seconds must be at least 1"));
        }
        if self.max_bytes == 0 {
            return Err(FetchError::Setting("max_bytes must be at least 1"));
        }
        let mut roots = Vec::new();
        for path in &self.ca_files {
            let pem = std::fs::read(path).map_err(|e| FetchError::Ca {
                path: path.clone(),
                reason: e.to_string(),
            })?;
            roots.extend(certificates(&pem, path)?);
        }
        for pem in &self.ca_pems {
            roots.extend(certificates(pem, Path::new("(in-memory PEM)"))?);
        }
        let client = reqwest::Client::builder()
            .https_only(true)
            // The configured URLs are reached directly: an environment proxy is not consulted.
            .no_proxy()
            .timeout(self.timeout)
            .redirect(reqwest::redirect::Policy::custom(same_origin_only))
            .tls_certs_merge(roots)
            .build()
            .map_err(|e| FetchError::Setting(leak_free(&e)))?;
        Ok(HttpsFetcher {
            client,
            max_bytes: self.max_bytes,
            timeout: self.timeout,
        })
    }
}

/// reqwest's build error names no secret, but its text is not static; the causes are few and all about TLS setup.
fn leak_free(_: &reqwest::Error) -> &'static str {
    "the HTTPS client could not be set up (TLS roots)"
}

fn certificates(pem: &[u8], path: &Path) -> Result<Vec<reqwest::Certificate>, FetchError> {
    let certs = reqwest::Certificate::from_pem_bundle(pem).map_err(|e| FetchError::Ca {
        path: path.to_owned(),
        reason: e.to_string(),
    })?;
    if certs.is_empty() {
        return Err(FetchError::Ca {
            path: path.to_owned(),
            reason: "no certificate in it".to_owned(),
        });
    }
    Ok(certs)
}

fn same_origin_only(attempt: reqwest::redirect::Attempt<'_>) -> reqwest::redirect::Action {
    let first = attempt.previous().first().map(Url::origin);
    if attempt.previous().len() > MAX_REDIRECTS {
        attempt.error("too many redirects")
    } else if first.is_some_and(|origin| origin == attempt.url().origin()) {
        attempt.follow()
    } else {
        attempt.error("a redirect to another origin is not followed")
    }
}

/// An absolute `https://` URL with a host and no fragment.
fn https_url(url: &str) -> Result<Url, FetchError> {
    let refuse = |reason| FetchError::Url {
        url: url.to_owned(),
        reason,
    };
    let parsed = Url::parse(url).map_err(|_| refuse("not an absolute URL"))?;
    if parsed.scheme() != "https" {
        return Err(refuse(
            "key sets are fetched over https:// only (a key set over plain HTTP can be replaced by anyone on the path)",
        ));
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(refuse("the URL has no host"));
    }
    if parsed.fragment().is_some() || !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(refuse("the URL may not carry a fragment or credentials"));
    }
    Ok(parsed)
}

/// The `max-age` of a `Cache-Control` header, unless it forbids reuse (`no-store`, `no-cache`).
fn max_age(headers: &header::HeaderMap) -> Option<Duration> {
    let mut age = None;
    for value in headers.get_all(header::CACHE_CONTROL) {
        for directive in value.to_str().ok()?.split(',') {
            let directive = directive.trim();
            let lower = directive.to_ascii_lowercase();
            if lower == "no-store" || lower == "no-cache" {
                return None;
            }
            if let Some(n) = lower.strip_prefix("max-age=") {
                age = Some(Duration::from_secs(n.trim_matches('"').parse().ok()?));
            }
        }
    }
    age
}

impl HttpsFetcher {
    /// Starts a configuration: system roots, a 5 s timeout, a 1 MiB bound.
    pub fn builder() -> HttpsFetcherBuilder {
        HttpsFetcherBuilder {
            ca_files: Vec::new(),
            ca_pems: Vec::new(),
            timeout: DEFAULT_FETCH_TIMEOUT,
            max_bytes: DEFAULT_MAX_BYTES,
        }
    }

    /// A source of the key set at `url` (which must be `https://`).
    pub(super) fn jwks_url(&self, url: &str) -> Result<JwksUrl, FetchError> {
        Ok(JwksUrl {
            fetcher: self.clone(),
            url: https_url(url)?,
        })
    }

    /// A source of the key set that `issuer`'s metadata document names.
    pub(super) fn discovery(&self, issuer: &str) -> Result<Discovery, FetchError> {
        let base = https_url(issuer)?;
        if base.query().is_some() {
            return Err(FetchError::Url {
                url: issuer.to_owned(),
                reason: "an issuer identifier has no query (RFC 8414 §2)",
            });
        }
        let path = base.path().trim_end_matches('/');
        let mut oidc = base.clone();
        oidc.set_path(&format!("{path}/.well-known/openid-configuration"));
        let mut rfc8414 = base.clone();
        rfc8414.set_path(&format!("/.well-known/oauth-authorization-server{path}"));
        Ok(Discovery {
            fetcher: self.clone(),
            issuer: issuer.to_owned(),
            metadata: [oidc, rfc8414],
            jwks_uri: Mutex::new(None),
        })
    }

    /// When a fetch that starts now must be done.
    fn deadline(&self) -> Instant {
        Instant::now() + self.timeout
    }

    /// GETs `url`: status 200, at most `max_bytes`, before `deadline` (one deadline for every request of a fetch).
    async fn get(
        &self,
        url: &Url,
        deadline: Instant,
    ) -> Result<(Vec<u8>, Option<Duration>), FetchError> {
        let request_error = |e: reqwest::Error| FetchError::Request {
            url: shown(url),
            reason: describe(&e),
        };
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(FetchError::Request {
                url: shown(url),
                reason: "timed out".to_owned(),
            });
        }
        let mut response = self
            .client
            .get(url.clone())
            .header(header::ACCEPT, "application/json")
            .timeout(left)
            .send()
            .await
            .map_err(request_error)?;
        if response.status() != StatusCode::OK {
            return Err(FetchError::Status {
                url: shown(url),
                status: response.status().as_u16(),
            });
        }
        let too_large = || FetchError::TooLarge {
            url: shown(url),
            max_bytes: self.max_bytes,
        };
        if response
            .content_length()
            .is_some_and(|len| len > self.max_bytes as u64)
        {
            return Err(too_large());
        }
        let age = max_age(response.headers());
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(request_error)? {
            if body.len() + chunk.len() > self.max_bytes {
                return Err(too_large());
            }
            body.extend_from_slice(&chunk);
        }
        Ok((body, age))
    }
}

/// A URL as errors and events show it: without its query, which may carry a token of the provider's.
fn shown(url: &Url) -> String {
    let mut shown = url.clone();
    if shown.query().is_some() {
        shown.set_query(Some("redacted"));
    }
    shown.to_string()
}

/// reqwest's error and its causes in one line (connection refused, certificate unknown, timed out, …).
fn describe(error: &reqwest::Error) -> String {
    let mut text = if error.is_timeout() {
        "timed out".to_owned()
    } else if error.is_redirect() {
        "redirect refused".to_owned()
    } else {
        "request failed".to_owned()
    };
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// The key set at a fixed `https://` URL.
#[derive(Debug)]
pub(super) struct JwksUrl {
    fetcher: HttpsFetcher,
    url: Url,
}

impl JwksSource for JwksUrl {
    fn fetch(&self) -> JwksFetch<'_> {
        Box::pin(async move {
            let (bytes, age) = self.fetcher.get(&self.url, self.fetcher.deadline()).await?;
            Ok(with_age(JwksDocument::new(bytes), age))
        })
    }

    fn describe(&self) -> String {
        shown(&self.url)
    }
}

fn with_age(document: JwksDocument, age: Option<Duration>) -> JwksDocument {
    match age {
        Some(age) => document.with_max_age(age),
        None => document,
    }
}

/// The key set named by an issuer's metadata document. The `jwks_uri` found is kept until a key-set fetch fails,
/// then looked up again.
pub(super) struct Discovery {
    fetcher: HttpsFetcher,
    issuer: String,
    /// OpenID Connect Discovery's document, then RFC 8414's.
    metadata: [Url; 2],
    jwks_uri: Mutex<Option<Url>>,
}

impl fmt::Debug for Discovery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Discovery")
            .field("issuer", &self.issuer)
            .finish_non_exhaustive()
    }
}

impl Discovery {
    /// `jwks_uri` from the first metadata document that exists; the document must name our issuer exactly.
    async fn discover(&self, deadline: Instant) -> Result<Url, FetchError> {
        let mut missing = None;
        for url in &self.metadata {
            let body = match self.fetcher.get(url, deadline).await {
                Ok((body, _)) => body,
                // Only a document that does not exist sends us to the next one.
                Err(FetchError::Status { status: 404, .. }) => {
                    missing.get_or_insert_with(|| url.clone());
                    continue;
                }
                Err(e) => return Err(e),
            };
            return self.jwks_uri_of(url, &body);
        }
        Err(FetchError::Metadata {
            url: missing.as_ref().map_or_else(String::new, shown),
            reason: "neither the OpenID Connect nor the RFC 8414 metadata document exists (404)"
                .to_owned(),
        })
    }

    fn jwks_uri_of(&self, url: &Url, body: &[u8]) -> Result<Url, FetchError> {
        let refuse = |reason: String| FetchError::Metadata {
            url: shown(url),
            reason,
        };
        let doc: Value = serde_json::from_slice(body)
            .map_err(|e| refuse(format!("not a JSON document: {e}")))?;
        match doc.get("issuer").and_then(Value::as_str) {
            Some(issuer) if issuer == self.issuer => {}
            Some(other) => {
                return Err(refuse(format!(
                    "the document names the issuer {other:?}, not {:?} (refused: issuer mix-up)",
                    self.issuer
                )));
            }
            None => return Err(refuse("the document has no issuer string".to_owned())),
        }
        let jwks_uri = doc
            .get("jwks_uri")
            .and_then(Value::as_str)
            .ok_or_else(|| refuse("the document has no jwks_uri string".to_owned()))?;
        https_url(jwks_uri).map_err(|e| refuse(format!("jwks_uri {e}")))
    }

    fn known_uri(&self) -> Option<Url> {
        self.jwks_uri
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn remember(&self, uri: Option<Url>) {
        *self.jwks_uri.lock().unwrap_or_else(PoisonError::into_inner) = uri;
    }
}

impl JwksSource for Discovery {
    fn fetch(&self) -> JwksFetch<'_> {
        Box::pin(async move {
            let deadline = self.fetcher.deadline();
            let uri = match self.known_uri() {
                Some(uri) => uri,
                None => self.discover(deadline).await?,
            };
            match self.fetcher.get(&uri, deadline).await {
                Ok((bytes, age)) => {
                    self.remember(Some(uri));
                    Ok(with_age(JwksDocument::new(bytes), age))
                }
                Err(e) => {
                    // The provider may have moved its keys: look the URI up again next time.
                    self.remember(None);
                    Err(e.into())
                }
            }
        })
    }

    fn describe(&self) -> String {
        match self.known_uri() {
            Some(uri) => shown(&uri),
            None => format!("the key set of {} (discovery)", self.issuer),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn only_absolute_https_urls_are_accepted() {
        for good in [
            "https://login.example/keys",
            "https://login.example:8443/realms/acme/protocol/openid-connect/certs",
        ] {
            assert!(https_url(good).is_ok(), "{good}");
        }
        for bad in [
            "http://login.example/keys",
            "HTTP://login.example/keys",
            "ftp://login.example/keys",
            "/keys",
            "login.example/keys",
            "https://user:pw@login.example/keys",
            "https://user@login.example/keys",
            "https://:pw@login.example/keys",
            "https://login.example/keys#frag",
            "https://login.example/keys#",
            "",
        ] {
            assert!(https_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn urls_are_shown_without_their_query() {
        let url = Url::parse("https://login.example/keys?api_key=secret").unwrap();
        assert_eq!(shown(&url), "https://login.example/keys?redacted");
        let url = Url::parse("https://login.example/keys").unwrap();
        assert_eq!(shown(&url), "https://login.example/keys");
    }

    #[test]
    fn discovery_urls_follow_oidc_and_rfc_8414() {
        let fetcher = HttpsFetcher::builder().build().unwrap();
        let d = fetcher
            .discovery("https://login.example/realms/acme")
            .unwrap();
        assert_eq!(
            d.metadata[0].as_str(),
            "https://login.example/realms/acme/.well-known/openid-configuration"
        );
        assert_eq!(
            d.metadata[1].as_str(),
            "https://login.example/.well-known/oauth-authorization-server/realms/acme"
        );
        let d = fetcher.discovery("https://login.example/").unwrap();
        assert_eq!(
            d.metadata[0].as_str(),
            "https://login.example/.well-known/openid-configuration"
        );
        assert_eq!(
            d.metadata[1].as_str(),
            "https://login.example/.well-known/oauth-authorization-server"
        );
        assert!(fetcher.discovery("http://login.example").is_err());
        assert!(
            fetcher
                .discovery("https://login.example/?tenant=a")
                .is_err()
        );
    }

    #[test]
    fn the_metadata_must_name_the_configured_issuer_exactly() {
        let fetcher = HttpsFetcher::builder().build().unwrap();
        let d = fetcher.discovery("https://login.example").unwrap();
        let url = d.metadata[0].clone();
        let ok = br#"{"issuer":"https://login.example","jwks_uri":"https://login.example/keys"}"#;
        assert_eq!(
            d.jwks_uri_of(&url, ok).unwrap().as_str(),
            "https://login.example/keys"
        );
        for bad in [
            &br#"{"issuer":"https://login.example/","jwks_uri":"https://login.example/keys"}"#[..],
            br#"{"issuer":"https://evil.example","jwks_uri":"https://login.example/keys"}"#,
            br#"{"jwks_uri":"https://login.example/keys"}"#,
            br#"{"issuer":"https://login.example","jwks_uri":"http://login.example/keys"}"#,
            br#"{"issuer":"https://login.example"}"#,
            b"<html>",
        ] {
            assert!(
                d.jwks_uri_of(&url, bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn cache_control_max_age_is_read_unless_reuse_is_forbidden() {
        let headers = |value: &str| {
            let mut h = header::HeaderMap::new();
            h.insert(header::CACHE_CONTROL, value.parse().unwrap());
            h
        };
        assert_eq!(
            max_age(&headers("public, max-age=600")),
            Some(Duration::from_secs(600))
        );
        assert_eq!(
            max_age(&headers("Max-Age=120")),
            Some(Duration::from_secs(120))
        );
        assert_eq!(max_age(&headers("no-store, max-age=600")), None);
        assert_eq!(max_age(&headers("max-age=600, no-cache")), None);
        assert_eq!(max_age(&headers("max-age=soon")), None);
        assert_eq!(max_age(&header::HeaderMap::new()), None);
    }

    #[test]
    fn bad_settings_and_ca_files_are_named() {
        let err = HttpsFetcher::builder()
            .ca_file("/nonexistent/ca.pem")
            .build()
            .unwrap_err();
        assert!(err.to_string().contains("/nonexistent/ca.pem"), "{err}");
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate").unwrap();
        let err = HttpsFetcher::builder().ca_file(&empty).build().unwrap_err();
        assert!(err.to_string().contains("empty.pem"), "{err}");
        assert!(HttpsFetcher::builder().max_bytes(0).build().is_err());
        assert!(
            HttpsFetcher::builder()
                .timeout(Duration::ZERO)
                .build()
                .is_err()
        );
        // The twins: the smallest settings that are accepted.
        let smallest = HttpsFetcher::builder()
            .timeout(Duration::from_millis(1))
            .max_bytes(1)
            .build()
            .unwrap();
        assert_eq!(
            (smallest.timeout, smallest.max_bytes),
            (Duration::from_millis(1), 1)
        );
        // The defaults: 5 s, 1 MiB.
        let default = HttpsFetcher::builder().build().unwrap();
        assert_eq!(
            (default.timeout, default.max_bytes),
            (Duration::from_secs(5), 1 << 20)
        );
        let before = Instant::now();
        let deadline = default.deadline();
        assert!(
            deadline >= before + Duration::from_secs(5)
                && deadline <= Instant::now() + Duration::from_secs(5)
        );
    }
}
