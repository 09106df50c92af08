//! The canary's own Prometheus series, made from every canary's state at
//! each scrape (a canary moves a few times a minute; nothing to count in
//! between): its phase, the weights, and each check's last value and
//! verdict.
//!
//! - `serin_canary_phase{service,phase}`: 1 for the phase the canary is
//!   in, 0 for the others (a state set);
//! - `serin_canary_weight{service,version}`: each version's percent;
//! - `serin_canary_check_value{service,check}`: the check's value in the
//!   last window (absent while it has none);
//! - `serin_canary_check_verdict{service,check,verdict}`: 1 for the last
//!   window's verdict, 0 for the others;
//! - `serin_canary_waiting{service,gate}`: 1 for the gate that holds the
//!   canary (`confirm-rollout`, `confirm-promotion`, `approval`), 0 for
//!   the others (all 0 while none holds it).

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;

use crate::check::CheckVerdict;
use crate::gate::GateKind;
use crate::store::{CanaryState, Phase};

type FloatGauge = Gauge<f64, AtomicU64>;

/// Every phase, so the state set always lists all of them.
const PHASES: [Phase; 5] = [
    Phase::Progressing,
    Phase::Paused,
    Phase::Halted,
    Phase::Promoted,
    Phase::RolledBack,
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PhaseLabels {
    service: String,
    phase: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WeightLabels {
    service: String,
    version: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CheckLabels {
    service: String,
    check: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct GateLabels {
    service: String,
    gate: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VerdictLabels {
    service: String,
    check: String,
    verdict: String,
}

/// The series of `canaries`, written to `encoder` (whose registry adds
/// the `serin_` prefix).
pub fn encode(canaries: &[CanaryState], encoder: &mut DescriptorEncoder<'_>) -> std::fmt::Result {
    let phase = Family::<PhaseLabels, FloatGauge>::default();
    let weight = Family::<WeightLabels, FloatGauge>::default();
    let value = Family::<CheckLabels, FloatGauge>::default();
    let verdict = Family::<VerdictLabels, FloatGauge>::default();
    let waiting = Family::<GateLabels, FloatGauge>::default();
    for c in canaries {
        let service = || c.service.clone();
        let held_at = c.waiting.as_ref().map(|w| w.gate);
        for g in GateKind::ALL {
            let labels = GateLabels {
                service: service(),
                gate: g.as_str().to_string(),
            };
            waiting
                .get_or_create(&labels)
                .set(f64::from(u8::from(held_at == Some(g))));
        }
        for p in PHASES {
            let labels = PhaseLabels {
                service: service(),
                phase: p.as_str().to_string(),
            };
            phase
                .get_or_create(&labels)
                .set(f64::from(u8::from(p == c.phase)));
        }
        for (version, percent) in &c.weights {
            let labels = WeightLabels {
                service: service(),
                version: version.clone(),
            };
            weight.get_or_create(&labels).set(f64::from(*percent));
        }
        let checks = c.last_analysis.iter().flat_map(|a| &a.checks);
        for r in checks {
            if let Some(v) = r.value {
                let labels = CheckLabels {
                    service: service(),
                    check: r.name.clone(),
                };
                value.get_or_create(&labels).set(v);
            }
            for v in CheckVerdict::ALL {
                let labels = VerdictLabels {
                    service: service(),
                    check: r.name.clone(),
                    verdict: v.as_str().to_string(),
                };
                verdict
                    .get_or_create(&labels)
                    .set(f64::from(u8::from(v == r.verdict)));
            }
        }
    }
    let help = [
        (
            "canary_phase",
            "The phase of each service's canary: 1 for the one it is in",
        ),
        (
            "canary_weight",
            "Each version's weight in a canary, in percent",
        ),
        (
            "canary_check_value",
            "Each canary check's value in the last window",
        ),
        (
            "canary_check_verdict",
            "Each canary check's verdict in the last window: 1 for the one it had",
        ),
        (
            "canary_waiting",
            "The gate that holds each canary: 1 for the one it waits at",
        ),
    ];
    let families: [&dyn EncodeMetric; 5] = [&phase, &weight, &value, &verdict, &waiting];
    for ((name, help), family) in help.iter().zip(families) {
        let m = encoder.encode_descriptor(name, help, None, family.metric_type())?;
        family.encode(m)?;
    }
    Ok(())
}
