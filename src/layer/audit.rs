//! Audit: one structured event per decision, allow or deny, 400 and 429 included.
//!
//! Events never carry a secret: the credential appears only as its public id (an API key's id or a JWT's `sub`),
//! and the path never includes the query string (query strings carry secrets). The default sink emits a `tracing`
//! event on the target [`AUDIT_TARGET`]; [`JsonLinesAudit`] writes one JSON object per line (JSON-encoded, so no
//! path can forge a line).

use std::fmt;
use std::io::Write;
use std::net::IpAddr;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use serde::Serialize;

/// The `tracing` target of audit events.
pub const AUDIT_TARGET: &str = "scopegate::audit";

/// One decision.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct AuditEvent<'a> {
    /// `allow` or `deny`.
    pub decision: &'static str,
    /// `public`, `granted`, or the denial kind.
    pub reason: &'static str,
    /// A fixed sentence saying precisely why (never a secret).
    pub detail: &'static str,
    /// The HTTP status answered (200 for allows handed to the service).
    pub status: u16,
    /// `api_key` or `jwt`, once authenticated.
    pub credential_kind: Option<&'static str>,
    /// The credential's public id (API key id or JWT `sub`), once authenticated.
    pub credential_id: Option<&'a str>,
    /// The resolved client IP, when known.
    pub client_ip: Option<IpAddr>,
    /// The trusted proxy that forwarded the request, if one did.
    pub peer_ip: Option<IpAddr>,
    /// The request method.
    pub method: &'a str,
    /// The request path, without the query string.
    pub path: &'a str,
    /// The matched route pattern, if any.
    pub route: Option<&'a str>,
    /// Time spent deciding, in microseconds.
    pub latency_us: u64,
    /// With a shadow policy: what it would have decided (`allow` or `deny`), never enforced.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shadow_decision: Option<&'static str>,
    /// With a shadow policy: its reason (`granted`, `insufficient_scope`, …).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shadow_reason: Option<&'static str>,
}

impl AuditEvent<'_> {
    #[inline]
    pub(crate) fn latency_of(elapsed: Duration) -> u64 {
        u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX)
    }
}

/// A live key set's refresh failed (the last good set stays in use), or succeeded again after failures.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct KeySetEvent<'a> {
    /// Always `key_set_refresh`.
    pub event: &'static str,
    /// `failed` or `recovered`.
    pub outcome: &'static str,
    /// The issuer whose key set it is.
    pub issuer: &'a str,
    /// Where the keys come from (a URL).
    pub source: &'a str,
    /// Why the fetch failed (never a token or a key).
    pub cause: Option<&'a str>,
}

#[cfg(feature = "jwt")]
impl<'a> KeySetEvent<'a> {
    pub(crate) fn new(
        issuer: &'a str,
        source: &'a str,
        outcome: &'static str,
        cause: Option<&'a str>,
    ) -> Self {
        KeySetEvent {
            event: "key_set_refresh",
            outcome,
            issuer,
            source,
            cause,
        }
    }
}

/// Where audit events go. Called synchronously on the request path: keep it fast (hand events to a channel if the
/// destination is slow).
pub trait AuditSink: Send + Sync + 'static {
    /// Records one decision.
    fn record(&self, event: &AuditEvent<'_>);

    /// Whether [`record`](Self::record) would keep a decision's event now. Asked before each event is built: a sink
    /// that answers `false` costs the request nothing beyond this call (the decision is still counted in the
    /// metrics). Defaults to `true`; answer `false` only when `record` would drop the event anyway.
    fn enabled(&self) -> bool {
        true
    }

    /// Records a live key set's refresh failure or recovery (off the request path). Defaults to a `tracing`
    /// event on [`AUDIT_TARGET`] (warn for failures).
    fn record_key_set(&self, event: &KeySetEvent<'_>) {
        if event.outcome == "failed" {
            tracing::warn!(target: AUDIT_TARGET, event = event.event, outcome = event.outcome,
                issuer = event.issuer, source = event.source, cause = event.cause, "key set refresh failed");
        } else {
            tracing::info!(target: AUDIT_TARGET, event = event.event, outcome = event.outcome,
                issuer = event.issuer, source = event.source, "key set refresh recovered");
        }
    }
}

/// The default sink: a `tracing` event per decision on [`AUDIT_TARGET`] (info for allows, warn for denials).
#[derive(Debug, Clone, Copy, Default)]
pub struct TracingAudit;

impl AuditSink for TracingAudit {
    /// Whether a subscriber takes events on [`AUDIT_TARGET`] at either level used (info for allows, warn for
    /// denials): without one, no event is built.
    fn enabled(&self) -> bool {
        tracing::enabled!(target: AUDIT_TARGET, tracing::Level::WARN)
            || tracing::enabled!(target: AUDIT_TARGET, tracing::Level::INFO)
    }

    fn record(&self, e: &AuditEvent<'_>) {
        let client_ip = e.client_ip.map(tracing::field::display);
        let peer_ip = e.peer_ip.map(tracing::field::display);
        macro_rules! emit {
            ($level:ident) => {
                tracing::$level!(
                    target: AUDIT_TARGET,
                    decision = e.decision,
                    reason = e.reason,
                    detail = e.detail,
                    status = e.status,
                    credential_kind = e.credential_kind,
                    credential_id = e.credential_id,
                    client_ip,
                    peer_ip,
                    method = %e.method,
                    path = %e.path,
                    route = e.route,
                    latency_us = e.latency_us,
                    shadow_decision = e.shadow_decision,
                    shadow_reason = e.shadow_reason,
                    "authorization decision"
                )
            };
        }
        if e.decision == "allow" {
            emit!(info);
        } else {
            emit!(warn);
        }
    }
}

/// Writes each event as one JSON object per line (e.g. to stderr, as `scopegate serve` does).
pub struct JsonLinesAudit<W>(Mutex<W>);

impl<W: Write + Send + 'static> JsonLinesAudit<W> {
    /// Writes events to `out`.
    pub fn new(out: W) -> Self {
        JsonLinesAudit(Mutex::new(out))
    }
}

impl<W> fmt::Debug for JsonLinesAudit<W> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("JsonLinesAudit")
    }
}

impl<W: Write + Send + 'static> AuditSink for JsonLinesAudit<W> {
    fn record(&self, event: &AuditEvent<'_>) {
        self.write_line(event);
    }

    fn record_key_set(&self, event: &KeySetEvent<'_>) {
        self.write_line(event);
    }
}

impl<W: Write + Send + 'static> JsonLinesAudit<W> {
    fn write_line(&self, event: &impl Serialize) {
        let mut out = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        // An audit write that fails cannot be reported to the client; tracing gets it instead.
        if let Err(error) = serde_json::to_writer(&mut *out, event)
            .map_err(std::io::Error::from)
            .and_then(|()| out.write_all(b"\n"))
        {
            tracing::error!(target: AUDIT_TARGET, %error, "audit event could not be written");
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::test_logs::{Shared, logged};

    fn event(decision: &'static str, path: &'static str) -> AuditEvent<'static> {
        AuditEvent {
            decision,
            reason: if decision == "allow" {
                "granted"
            } else {
                "insufficient_scope"
            },
            detail: "a fixed sentence",
            status: if decision == "allow" { 200 } else { 403 },
            credential_kind: Some("api_key"),
            credential_id: Some("key-1"),
            client_ip: Some(IpAddr::from([192, 0, 2, 9])),
            peer_ip: None,
            method: "GET",
            path,
            route: Some("/v1/invoices/{id}"),
            latency_us: 12,
            shadow_decision: None,
            shadow_reason: None,
        }
    }

    fn key_set(outcome: &'static str) -> KeySetEvent<'static> {
        KeySetEvent {
            event: "key_set_refresh",
            outcome,
            issuer: "https://idp.example",
            source: "https://idp.example/jwks",
            cause: (outcome == "failed").then_some("connection refused"),
        }
    }

    fn traced(f: impl FnOnce()) -> String {
        logged(true, f)
    }

    #[test]
    fn latency_is_whole_microseconds_and_saturates() {
        assert_eq!(AuditEvent::latency_of(Duration::from_nanos(1_999)), 1);
        assert_eq!(AuditEvent::latency_of(Duration::from_micros(1_500)), 1_500);
        assert_eq!(AuditEvent::latency_of(Duration::ZERO), 0);
        assert_eq!(AuditEvent::latency_of(Duration::MAX), u64::MAX);
    }

    #[test]
    fn tracing_audit_logs_allows_at_info_and_denials_at_warn() {
        let allow = traced(|| TracingAudit.record(&event("allow", "/v1/invoices/7")));
        assert!(allow.contains(r#""level":"INFO""#), "{allow}");
        assert!(allow.contains(r#""decision":"allow""#), "{allow}");
        assert!(allow.contains(AUDIT_TARGET), "{allow}");
        let deny = traced(|| TracingAudit.record(&event("deny", "/v1/invoices/7")));
        assert!(deny.contains(r#""level":"WARN""#), "{deny}");
        assert!(deny.contains(r#""reason":"insufficient_scope""#), "{deny}");
    }

    #[test]
    fn tracing_audit_is_enabled_only_when_a_subscriber_takes_its_events() {
        // A second dispatcher, kept for the test, makes tracing ask the subscriber every time (see `logged`).
        let _second = tracing::Dispatch::new(tracing_subscriber::registry());
        let only = |level| {
            tracing_subscriber::fmt()
                .with_max_level(level)
                .with_writer(std::io::sink)
                .finish()
        };
        let errors_only = only(tracing::Level::ERROR);
        assert!(!tracing::subscriber::with_default(errors_only, || {
            TracingAudit.enabled()
        }));
        let warnings = only(tracing::Level::WARN);
        assert!(tracing::subscriber::with_default(warnings, || {
            TracingAudit.enabled()
        }));
        let mut enabled = false;
        traced(|| enabled = TracingAudit.enabled());
        assert!(enabled);
    }

    #[test]
    fn key_set_failures_log_at_warn_and_recoveries_at_info() {
        let failed = traced(|| TracingAudit.record_key_set(&key_set("failed")));
        assert!(failed.contains(r#""level":"WARN""#), "{failed}");
        assert!(failed.contains("connection refused"), "{failed}");
        let recovered = traced(|| TracingAudit.record_key_set(&key_set("recovered")));
        assert!(recovered.contains(r#""level":"INFO""#), "{recovered}");
        assert!(
            recovered.contains("key set refresh recovered"),
            "{recovered}"
        );
    }

    #[test]
    fn json_lines_writes_one_object_per_event() {
        let out = Shared::default();
        let sink = JsonLinesAudit::new(out.clone());
        // A newline in the path stays inside its JSON string: no forged line.
        sink.record(&event("deny", "/v1/a\n{\"decision\":\"allow\"}"));
        sink.record_key_set(&key_set("failed"));
        let text = out.text();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert_eq!(lines[0]["decision"], "deny");
        assert_eq!(lines[0]["path"], "/v1/a\n{\"decision\":\"allow\"}");
        assert_eq!(lines[1]["event"], "key_set_refresh");
        assert_eq!(lines[1]["cause"], "connection refused");
        assert_eq!(format!("{sink:?}"), "JsonLinesAudit");
    }
}
