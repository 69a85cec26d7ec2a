//! Decisions, denials, and the one table that maps each denial to its answer on the wire.
//!
//! ```
//! use scopegate::policy::DenialKind;
//!
//! let answer = DenialKind::InsufficientScope.answer();
//! assert_eq!(answer.status, 403);
//! assert_eq!(answer.problem_code, "insufficient_scope");
//! assert_eq!(answer.grpc_code, 7);
//! assert_eq!(DenialKind::Unavailable.answer().status, 503);
//! ```

use std::fmt;
use std::time::Duration;

use super::pattern::RoutePattern;
use super::scope::Scope;

/// Why a request was refused: a stable, coarse reason. The string forms are part of the public contract (audit
/// events, `scopegate check --json`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DenialKind {
    /// No TLS evidence.
    TlsRequired,
    /// An ambiguous path, several credentials, a malformed forwarding header.
    MalformedRequest,
    /// No credential on a route that needs one.
    MissingCredential,
    /// A credential that does not verify (bad shape, bad checksum, unknown id, wrong secret, bad signature, bad claims).
    InvalidCredential,
    /// A credential past its expiry.
    ExpiredCredential,
    /// A revoked credential (or an old key after its rotation grace).
    RevokedCredential,
    /// A disabled API key (refused until it is enabled again).
    DisabledCredential,
    /// The client IP is outside the credential's or the route's allowlist, or unknown when one applies.
    IpNotAllowed,
    /// The route (method + path) is not in the policy.
    NoPolicy,
    /// The credential's scopes fall short of the route's requirement.
    InsufficientScope,
    /// A bound path parameter differs from (or lacks) the credential's attribute.
    ResourceNotPermitted,
    /// Too many failed authentications from this client.
    Throttled,
    /// The API key is past its rate limit.
    RateLimited,
    /// A store or key set did not answer: fail closed.
    Unavailable,
}

/// What the client is told, for one denial kind. Produced only by [`DenialKind::answer`], the one table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Answer {
    /// HTTP status code.
    pub status: u16,
    /// The `WWW-Authenticate` challenge to send, if any.
    pub challenge: Challenge,
    /// The coarse `code` member of the RFC 9457 problem body.
    pub problem_code: &'static str,
    /// The gRPC status code (for requests with an `application/grpc` content type).
    pub grpc_code: u8,
}

/// The RFC 6750 challenge carried by a denial.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Challenge {
    /// No `WWW-Authenticate` header.
    None,
    /// `Bearer realm="…"`: a credential is needed.
    Realm,
    /// `Bearer error="invalid_request"` (when the malformation is about credentials).
    InvalidRequest,
    /// `Bearer error="invalid_token"`.
    InvalidToken,
    /// `Bearer error="insufficient_scope", scope="…"`.
    InsufficientScope,
}

impl DenialKind {
    /// Every kind, in the order of the table in the contract.
    pub const ALL: [DenialKind; 14] = [
        DenialKind::MalformedRequest,
        DenialKind::MissingCredential,
        DenialKind::InvalidCredential,
        DenialKind::ExpiredCredential,
        DenialKind::RevokedCredential,
        DenialKind::DisabledCredential,
        DenialKind::TlsRequired,
        DenialKind::IpNotAllowed,
        DenialKind::NoPolicy,
        DenialKind::ResourceNotPermitted,
        DenialKind::InsufficientScope,
        DenialKind::Throttled,
        DenialKind::RateLimited,
        DenialKind::Unavailable,
    ];

    /// The stable reason string (`insufficient_scope`, …).
    #[inline]
    pub fn as_str(self) -> &'static str {
        match self {
            DenialKind::TlsRequired => "tls_required",
            DenialKind::MalformedRequest => "malformed_request",
            DenialKind::MissingCredential => "missing_credential",
            DenialKind::InvalidCredential => "invalid_credential",
            DenialKind::ExpiredCredential => "expired_credential",
            DenialKind::RevokedCredential => "revoked_credential",
            DenialKind::DisabledCredential => "disabled_credential",
            DenialKind::IpNotAllowed => "ip_not_allowed",
            DenialKind::NoPolicy => "no_policy",
            DenialKind::InsufficientScope => "insufficient_scope",
            DenialKind::ResourceNotPermitted => "resource_not_permitted",
            DenialKind::Throttled => "throttled",
            DenialKind::RateLimited => "rate_limited",
            DenialKind::Unavailable => "unavailable",
        }
    }

    /// The answer for this kind: THE table (the denial table of `docs/decision-order.md`). Every renderer reads it; nothing else maps kinds.
    pub fn answer(self) -> Answer {
        let (status, challenge, problem_code, grpc_code) = match self {
            DenialKind::MalformedRequest => (400, Challenge::None, "malformed_request", 3),
            DenialKind::MissingCredential => (401, Challenge::Realm, "unauthenticated", 16),
            DenialKind::InvalidCredential
            | DenialKind::ExpiredCredential
            | DenialKind::RevokedCredential
            | DenialKind::DisabledCredential => {
                (401, Challenge::InvalidToken, "unauthenticated", 16)
            }
            DenialKind::TlsRequired => (403, Challenge::None, "tls_required", 7),
            DenialKind::IpNotAllowed | DenialKind::NoPolicy | DenialKind::ResourceNotPermitted => {
                (403, Challenge::None, "forbidden", 7)
            }
            DenialKind::InsufficientScope => {
                (403, Challenge::InsufficientScope, "insufficient_scope", 7)
            }
            DenialKind::Throttled => (429, Challenge::None, "throttled", 8),
            DenialKind::RateLimited => (429, Challenge::None, "rate_limited", 8),
            DenialKind::Unavailable => (503, Challenge::None, "unavailable", 14),
        };
        Answer {
            status,
            challenge,
            problem_code,
            grpc_code,
        }
    }
}

impl fmt::Display for DenialKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A refused request: an opaque value with a stable [`kind`](Denial::kind). The precise reason
/// ([`detail`](Denial::detail)) is for the audit event only, never for the client.
#[derive(Clone, PartialEq, Eq)]
pub struct Denial {
    kind: DenialKind,
    detail: &'static str,
    /// For `insufficient_scope`: the scopes that would satisfy the requirement (RFC 6750 `scope` attribute).
    scope_hint: Vec<Scope>,
    /// For `malformed_request`: whether the malformation concerns credentials (adds `error="invalid_request"`).
    about_credentials: bool,
    retry_after: Option<Duration>,
}

impl Denial {
    /// A denial of `kind`; `detail` is a fixed, secret-free sentence for the audit log.
    pub(crate) fn new(kind: DenialKind, detail: &'static str) -> Self {
        Denial {
            kind,
            detail,
            scope_hint: Vec::new(),
            about_credentials: false,
            retry_after: None,
        }
    }

    pub(crate) fn insufficient_scope(scope_hint: Vec<Scope>) -> Self {
        Denial {
            scope_hint,
            ..Denial::new(
                DenialKind::InsufficientScope,
                "scopes fall short of the route's requirement",
            )
        }
    }

    /// `invalid_credential`: the presented credential is not one we accept (malformed, unknown, wrong, unverifiable).
    pub(crate) fn invalid_credential(detail: &'static str) -> Self {
        Denial::new(DenialKind::InvalidCredential, detail)
    }

    pub(crate) fn malformed_credentials(detail: &'static str) -> Self {
        Denial {
            about_credentials: true,
            ..Denial::new(DenialKind::MalformedRequest, detail)
        }
    }

    pub(crate) fn throttled(retry_after: Duration) -> Self {
        Denial {
            retry_after: Some(retry_after),
            ..Denial::new(
                DenialKind::Throttled,
                "too many failed authentications from this client",
            )
        }
    }

    /// Past the key's rate limit: 429 `rate_limited`, with `Retry-After`.
    pub(crate) fn rate_limited(retry_after: Duration) -> Self {
        Denial {
            retry_after: Some(retry_after),
            ..Denial::new(
                DenialKind::RateLimited,
                "the API key is past its rate limit",
            )
        }
    }

    /// The stable reason kind.
    pub fn kind(&self) -> DenialKind {
        self.kind
    }

    /// The stable reason string (`insufficient_scope`, …).
    pub fn reason(&self) -> &'static str {
        self.kind.as_str()
    }

    /// A fixed, secret-free sentence saying precisely why, for audit events and `scopegate check`.
    pub fn detail(&self) -> &'static str {
        self.detail
    }

    /// The answer on the wire: its kind's row of the table, with the RFC 6750 `invalid_request` challenge when a
    /// malformed request concerns the credential headers.
    pub fn answer(&self) -> Answer {
        let mut answer = self.kind.answer();
        if self.about_credentials {
            answer.challenge = Challenge::InvalidRequest;
        }
        answer
    }

    /// For `insufficient_scope`: the scopes the RFC 6750 challenge names.
    pub fn scope_hint(&self) -> &[Scope] {
        &self.scope_hint
    }

    /// Whether a `malformed_request` concerns the credential headers.
    pub fn is_about_credentials(&self) -> bool {
        self.about_credentials
    }

    /// Whether this denial counts as a failed authentication for the throttle: every 401 after a
    /// credential was presented, and a malformed credential header (two credentials, a comma-joined value).
    pub fn counts_as_failed_auth(&self) -> bool {
        match self.kind {
            DenialKind::InvalidCredential
            | DenialKind::ExpiredCredential
            | DenialKind::RevokedCredential
            | DenialKind::DisabledCredential => true,
            DenialKind::MalformedRequest => self.about_credentials,
            _ => false,
        }
    }

    /// For `throttled`: how long the client should wait.
    pub fn retry_after(&self) -> Option<Duration> {
        self.retry_after
    }
}

impl fmt::Debug for Denial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Denial")
            .field("kind", &self.kind)
            .field("detail", &self.detail)
            .finish_non_exhaustive()
    }
}

impl fmt::Display for Denial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind, self.detail)
    }
}

impl std::error::Error for Denial {}

/// How an allowed request was allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum AllowKind {
    /// A public route: no credential was looked at.
    Public,
    /// A credential was authenticated and its grant satisfied the route.
    Granted,
    /// No credential, on a route whose authentication is optional.
    Anonymous,
}

impl AllowKind {
    /// The stable reason string: `public`, `granted` or `anonymous`.
    #[inline]
    pub fn as_str(self) -> &'static str {
        match self {
            AllowKind::Public => "public",
            AllowKind::Granted => "granted",
            AllowKind::Anonymous => "anonymous",
        }
    }
}

/// The outcome of the decision order for one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Allowed on the matched route pattern.
    Allow {
        /// The matched route pattern (`/v1/tenants/{tenant}/invoices/{id}`), as the policy keeps it (a copy costs no
        /// reference count: see [`RoutePattern`]).
        route: RoutePattern,
        /// Public, or granted to a credential.
        kind: AllowKind,
    },
    /// Refused.
    Deny(Denial),
}

impl Decision {
    /// Whether the request is allowed.
    pub fn is_allowed(&self) -> bool {
        matches!(self, Decision::Allow { .. })
    }

    /// The denial, if refused.
    pub fn denial(&self) -> Option<&Denial> {
        match self {
            Decision::Deny(d) => Some(d),
            Decision::Allow { .. } => None,
        }
    }

    /// The stable reason string: `public`, `granted` or a [`DenialKind`] string.
    #[inline]
    pub fn reason(&self) -> &'static str {
        match self {
            Decision::Allow { kind, .. } => kind.as_str(),
            Decision::Deny(d) => d.kind.as_str(),
        }
    }

    /// The HTTP status the request gets (200 when allowed).
    #[inline]
    pub fn status(&self) -> u16 {
        match self {
            Decision::Allow { .. } => 200,
            Decision::Deny(d) => d.answer().status,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_matches_the_contract() {
        let rows: Vec<(&str, u16, &str, u8)> = DenialKind::ALL
            .iter()
            .map(|k| {
                let a = k.answer();
                (k.as_str(), a.status, a.problem_code, a.grpc_code)
            })
            .collect();
        assert_eq!(
            rows,
            vec![
                ("malformed_request", 400, "malformed_request", 3),
                ("missing_credential", 401, "unauthenticated", 16),
                ("invalid_credential", 401, "unauthenticated", 16),
                ("expired_credential", 401, "unauthenticated", 16),
                ("revoked_credential", 401, "unauthenticated", 16),
                ("disabled_credential", 401, "unauthenticated", 16),
                ("tls_required", 403, "tls_required", 7),
                ("ip_not_allowed", 403, "forbidden", 7),
                ("no_policy", 403, "forbidden", 7),
                ("resource_not_permitted", 403, "forbidden", 7),
                ("insufficient_scope", 403, "insufficient_scope", 7),
                ("throttled", 429, "throttled", 8),
                ("rate_limited", 429, "rate_limited", 8),
                ("unavailable", 503, "unavailable", 14),
            ]
        );
    }

    #[test]
    fn challenges_follow_rfc6750() {
        assert_eq!(
            DenialKind::MissingCredential.answer().challenge,
            Challenge::Realm
        );
        assert_eq!(
            DenialKind::RevokedCredential.answer().challenge,
            Challenge::InvalidToken
        );
        assert_eq!(
            DenialKind::InsufficientScope.answer().challenge,
            Challenge::InsufficientScope
        );
        assert_eq!(DenialKind::NoPolicy.answer().challenge, Challenge::None);
        assert_eq!(DenialKind::TlsRequired.answer().challenge, Challenge::None);
        // A malformed request about the credential headers adds `invalid_request`; any other one has none.
        let about_credentials = Denial::malformed_credentials("two credentials").answer();
        assert_eq!(about_credentials.challenge, Challenge::InvalidRequest);
        assert_eq!(about_credentials.status, 400);
        assert_eq!(
            Denial::new(DenialKind::MalformedRequest, "bad path")
                .answer()
                .challenge,
            Challenge::None
        );
    }

    #[test]
    fn only_failed_authentication_is_counted() {
        assert!(Denial::new(DenialKind::InvalidCredential, "x").counts_as_failed_auth());
        assert!(Denial::new(DenialKind::RevokedCredential, "x").counts_as_failed_auth());
        assert!(Denial::malformed_credentials("two credentials").counts_as_failed_auth());
        assert!(!Denial::new(DenialKind::MalformedRequest, "dot segment").counts_as_failed_auth());
        assert!(!Denial::new(DenialKind::MissingCredential, "x").counts_as_failed_auth());
        assert!(!Denial::insufficient_scope(vec![]).counts_as_failed_auth());
    }

    #[test]
    fn only_malformed_credential_headers_are_about_credentials() {
        let headers = Denial::malformed_credentials("two credentials");
        assert!(headers.is_about_credentials());
        assert!(headers.counts_as_failed_auth());
        assert_eq!(headers.answer().challenge, Challenge::InvalidRequest);
        let path = Denial::new(DenialKind::MalformedRequest, "a dot segment");
        assert!(!path.is_about_credentials());
        assert!(!path.counts_as_failed_auth());
        assert_eq!(path.answer().challenge, Challenge::None);
    }

    #[test]
    fn reasons_and_waits() {
        for kind in DenialKind::ALL {
            let denial = Denial::new(kind, "x");
            assert_eq!(denial.reason(), kind.as_str());
            assert_eq!(kind.to_string(), kind.as_str());
            assert_eq!(denial.retry_after(), None);
        }
        let limited = Denial::rate_limited(Duration::from_secs(7));
        assert_eq!(limited.kind(), DenialKind::RateLimited);
        assert_eq!(limited.retry_after(), Some(Duration::from_secs(7)));
        let throttled = Denial::throttled(Duration::from_secs(9));
        assert_eq!(throttled.kind(), DenialKind::Throttled);
        assert_eq!(throttled.retry_after(), Some(Duration::from_secs(9)));
    }

    #[test]
    fn a_decision_reads_as_its_kind() {
        for (kind, text) in [
            (AllowKind::Public, "public"),
            (AllowKind::Granted, "granted"),
            (AllowKind::Anonymous, "anonymous"),
        ] {
            assert_eq!(kind.as_str(), text);
            let allow = Decision::Allow {
                route: RoutePattern::from("/x"),
                kind,
            };
            assert!(allow.is_allowed());
            assert!(allow.denial().is_none());
            assert_eq!(allow.reason(), text);
            assert_eq!(allow.status(), 200);
        }
        let deny = Decision::Deny(Denial::new(
            DenialKind::NoPolicy,
            "no rule for this method and path",
        ));
        assert!(!deny.is_allowed());
        assert_eq!(deny.denial().unwrap().kind(), DenialKind::NoPolicy);
        assert_eq!(deny.reason(), "no_policy");
        assert_eq!(deny.status(), 403);
        assert_eq!(
            deny.denial().unwrap().to_string(),
            "no_policy: no rule for this method and path"
        );
    }
}
