//! Decision metrics through the `metrics` facade: whichever recorder the application installed (Prometheus,
//! StatsD, …) receives them; without one they cost a no-op call.
//!
//! - `scopegate_decisions_total{decision, reason}`: a counter per decision. `decision` is `allow` or `deny`,
//!   `reason` a reason kind (`granted`, `public`, `anonymous`, or a denial kind): a fixed set of label values, never
//!   a path, a route, a credential id or a secret, so the series stay few.
//! - `scopegate_decision_duration_seconds`: a histogram of the time from the request's arrival at the gate to its
//!   decision (the inner service's time is not in it).
//!
//! The handles are taken from the recorder on the gate's first decision and kept: install the recorder before the
//! gate serves its first request. A decision then costs two handle updates (an atomic add and a histogram record
//! for the Prometheus exporter), no lookup.

use std::sync::OnceLock;
use std::time::Duration;

use metrics::{Counter, Histogram};

use crate::policy::{AllowKind, Decision, DenialKind};

/// The counter's name.
pub const DECISIONS_TOTAL: &str = "scopegate_decisions_total";
/// The histogram's name.
pub const DECISION_DURATION_SECONDS: &str = "scopegate_decision_duration_seconds";

const ALLOW_KINDS: [AllowKind; 3] = [AllowKind::Public, AllowKind::Granted, AllowKind::Anonymous];

struct Handles {
    allows: [Counter; ALLOW_KINDS.len()],
    denials: [Counter; DenialKind::ALL.len()],
    duration: Histogram,
}

/// The metrics of one gate.
#[derive(Default)]
pub(crate) struct DecisionMetrics {
    handles: OnceLock<Handles>,
}

impl DecisionMetrics {
    fn handles(&self) -> &Handles {
        self.handles.get_or_init(|| {
            Handles {
            allows: ALLOW_KINDS.map(|kind| {
                metrics::counter!(DECISIONS_TOTAL, "decision" => "allow", "reason" => kind.as_str())
            }),
            denials: DenialKind::ALL.map(|kind| {
                metrics::counter!(DECISIONS_TOTAL, "decision" => "deny", "reason" => kind.as_str())
            }),
            duration: metrics::histogram!(DECISION_DURATION_SECONDS),
        }
        })
    }

    /// Records one decision, taken `elapsed` after the request arrived.
    pub(crate) fn record(&self, decision: &Decision, elapsed: Duration) {
        let handles = self.handles();
        let counter = match decision {
            Decision::Allow { kind, .. } => ALLOW_KINDS
                .iter()
                .position(|k| k == kind)
                .map(|i| &handles.allows[i]),
            Decision::Deny(denial) => DenialKind::ALL
                .iter()
                .position(|k| *k == denial.kind())
                .map(|i| &handles.denials[i]),
        };
        if let Some(counter) = counter {
            counter.increment(1);
        }
        handles.duration.record(elapsed.as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use metrics_exporter_prometheus::PrometheusBuilder;

    use super::*;
    use crate::policy::Denial;

    fn allow(kind: AllowKind) -> Decision {
        Decision::Allow {
            route: crate::policy::RoutePattern::from("/v1/x"),
            kind,
        }
    }

    fn deny(kind: DenialKind) -> Decision {
        Decision::Deny(Denial::new(kind, "a fixed sentence"))
    }

    #[test]
    fn each_decision_counts_under_its_own_labels_and_its_duration_is_recorded() {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        let gate = DecisionMetrics::default();
        metrics::with_local_recorder(&recorder, || {
            gate.record(&allow(AllowKind::Granted), Duration::from_micros(3));
            gate.record(&allow(AllowKind::Granted), Duration::from_micros(3));
            gate.record(&allow(AllowKind::Anonymous), Duration::from_micros(3));
            gate.record(
                &deny(DenialKind::MissingCredential),
                Duration::from_micros(3),
            );
            gate.record(
                &deny(DenialKind::InsufficientScope),
                Duration::from_micros(3),
            );
            gate.record(
                &deny(DenialKind::InsufficientScope),
                Duration::from_micros(3),
            );
            gate.record(
                &deny(DenialKind::InsufficientScope),
                Duration::from_micros(3),
            );
        });
        let text = handle.render();
        let count = |decision: &str, reason: &str| -> Option<u64> {
            let series =
                format!("{DECISIONS_TOTAL}{{decision=\"{decision}\",reason=\"{reason}\"}} ");
            text.lines()
                .find_map(|l| l.strip_prefix(&series))
                .map(|n| n.parse().unwrap())
        };
        assert_eq!(count("allow", "granted"), Some(2), "{text}");
        assert_eq!(count("allow", "anonymous"), Some(1), "{text}");
        assert_eq!(count("allow", "public"), Some(0), "{text}");
        assert_eq!(count("deny", "missing_credential"), Some(1), "{text}");
        assert_eq!(count("deny", "insufficient_scope"), Some(3), "{text}");
        assert_eq!(count("deny", "throttled"), Some(0), "{text}");
        assert!(
            text.contains(&format!("{DECISION_DURATION_SECONDS}_count 7")),
            "{text}"
        );
    }
}
