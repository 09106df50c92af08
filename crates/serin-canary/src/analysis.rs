//! Judging one window: each of the canary's checks ([`crate::check`]),
//! combined into the window's verdict. A pure function, so every rule is
//! tested here without processes or clocks.
//!
//! The combination: a traffic check out of its range (too few canary
//! requests) makes the window inconclusive and the others are not judged;
//! otherwise one failed check fails the window, else one inconclusive check
//! makes it inconclusive (no data is never healthy), else it passes.
//! Skipped checks (a ratio to a baseline without traffic) count neither
//! way, and the reasons say so.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::check::{
    CheckResult, CheckVerdict, Context, FigureValue, Measure, QueriedValue, figure_value,
    is_traffic_gate, judge_check,
};
use crate::settings::Settings;

/// Below this many baseline requests in a window there is no baseline p99
/// worth dividing by (at 100% the baseline gets only requests that were in
/// flight when the weights changed): the canary is judged on its error rate
/// only, and the analysis says so.
pub const MIN_BASELINE_REQUESTS: u64 = 10;

/// What one version did in a window.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct VersionFigures {
    pub version: String,
    pub requests: u64,
    /// Answers with a 5xx status.
    pub errors: u64,
    /// `errors / requests` (0 without requests).
    pub error_rate: f64,
    /// The 99th percentile of latency to response headers, in seconds;
    /// none without requests.
    pub p99_seconds: Option<f64>,
    /// Answers with a 4xx status.
    #[serde(default)]
    pub client_errors: u64,
    /// `client_errors / requests` (0 without requests).
    #[serde(default)]
    pub client_error_rate: f64,
    /// The median and 90th percentile of latency, like `p99_seconds`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p50_seconds: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p90_seconds: Option<f64>,
}

impl VersionFigures {
    pub fn new(version: &str, requests: u64, errors: u64, p99_seconds: Option<f64>) -> Self {
        Self {
            version: version.to_string(),
            requests,
            errors,
            error_rate: if requests == 0 {
                0.0
            } else {
                errors as f64 / requests as f64
            },
            p99_seconds,
            client_errors: 0,
            client_error_rate: 0.0,
            p50_seconds: None,
            p90_seconds: None,
        }
    }

    /// These figures with `n` answers that were 4xx.
    pub fn with_client_errors(mut self, n: u64) -> Self {
        self.client_errors = n;
        self.client_error_rate = if self.requests == 0 {
            0.0
        } else {
            n as f64 / self.requests as f64
        };
        self
    }

    /// These figures with a median and a 90th percentile.
    pub fn with_latencies(mut self, p50: Option<f64>, p90: Option<f64>) -> Self {
        self.p50_seconds = p50;
        self.p90_seconds = p90;
        self
    }
}

/// The canary's shadow answers over one window of the mirror step: each
/// compared with the baseline's answer to the same request.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ShadowFigures {
    /// The canary version (the mirror).
    pub version: String,
    /// The share of the baseline's requests shadowed, in percent.
    pub percent: f64,
    /// Shadow answers with the baseline's status.
    pub same: u64,
    /// Shadow answers with another status.
    pub different: u64,
    /// Shadows that got no answer.
    pub error: u64,
    /// Shadows whose primary failed before answering: not judged.
    pub unknown: u64,
    /// `same + different + error`: the answers judged.
    pub answers: u64,
    /// `(different + error) / answers` (0 without answers).
    pub mismatch_rate: f64,
}

impl ShadowFigures {
    pub fn new(
        version: &str,
        percent: f64,
        same: u64,
        different: u64,
        error: u64,
        unknown: u64,
    ) -> Self {
        let answers = same + different + error;
        Self {
            version: version.to_string(),
            percent,
            same,
            different,
            error,
            unknown,
            answers,
            mismatch_rate: if answers == 0 {
                0.0
            } else {
                (different + error) as f64 / answers as f64
            },
        }
    }
}

/// Both versions over one window, as a metrics source measured them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WindowFigures {
    pub canary: VersionFigures,
    pub baseline: VersionFigures,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// Healthy: advance.
    Pass,
    /// A failed check.
    Fail,
    /// Too little data: neither advance nor count as healthy.
    Inconclusive,
}

impl Verdict {
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Pass => "pass",
            Self::Fail => "fail",
            Self::Inconclusive => "inconclusive",
        }
    }
}

/// One judged window, as shown in status and written to the audit log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Analysis {
    /// When the window ended (RFC 3339).
    pub at: String,
    /// The step (index from 0) and the canary's weight in percent.
    pub step: usize,
    pub canary_weight: u32,
    pub window_seconds: f64,
    /// `embedded` or `prometheus`.
    pub source: String,
    pub canary: VersionFigures,
    pub baseline: VersionFigures,
    /// p99(canary) / p99(baseline), each at least the latency floor; none
    /// when it was not compared.
    pub latency_ratio: Option<f64>,
    pub verdict: Verdict,
    /// Why it failed or was inconclusive, and anything the reader should
    /// know (e.g. that the baseline had no traffic).
    pub reasons: Vec<String>,
    /// Each check: its value, range and verdict (none in the mirror step,
    /// which is judged by its shadow answers).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub checks: Vec<CheckResult>,
    /// In the mirror step: the canary's shadow answers, which it was judged
    /// by (its live figures are then empty).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shadow: Option<ShadowFigures>,
}

/// The outcome of [`judge`].
#[derive(Debug, Clone, PartialEq)]
pub struct Judgement {
    pub verdict: Verdict,
    pub latency_ratio: Option<f64>,
    pub reasons: Vec<String>,
    pub checks: Vec<CheckResult>,
}

pub fn percent(rate: f64) -> String {
    format!("{:.2}%", rate * 100.0)
}

pub fn millis(seconds: f64) -> String {
    let ms = seconds * 1000.0;
    if ms < 10.0 {
        format!("{ms:.1}ms")
    } else {
        format!("{ms:.0}ms")
    }
}

/// What was measured in a window besides the figures.
#[derive(Debug, Clone, Default)]
pub struct Window {
    /// How long it lasted, in seconds.
    pub seconds: f64,
    /// The values of the PromQL checks, by check name.
    pub queried: BTreeMap<String, QueriedValue>,
}

/// Judges a window by the canary's checks (see the module's rules).
pub fn judge(f: &WindowFigures, w: &Window, s: &Settings) -> Judgement {
    let ctx = Context {
        window_seconds: w.seconds,
        latency_floor: s.latency_floor.as_secs_f64(),
        min_baseline_requests: MIN_BASELINE_REQUESTS.min(s.min_requests),
    };
    let mut checks: Vec<CheckResult> = s
        .checks
        .iter()
        .map(|c| judge_check(c, f, &w.queried, &ctx))
        .collect();
    let gated: Vec<String> = s
        .checks
        .iter()
        .zip(&checks)
        .filter(|(c, r)| is_traffic_gate(c) && r.verdict == CheckVerdict::Fail)
        .filter_map(|(_, r)| r.reason.clone())
        .collect();
    if !gated.is_empty() {
        for (c, r) in s.checks.iter().zip(checks.iter_mut()) {
            if !is_traffic_gate(c) {
                r.verdict = CheckVerdict::Inconclusive;
                r.reason = Some("not judged: too little traffic in the window".into());
            }
        }
        return Judgement {
            verdict: Verdict::Inconclusive,
            latency_ratio: None,
            reasons: gated,
            checks,
        };
    }
    let reasons = checks.iter().filter_map(|r| r.reason.clone()).collect();
    let has = |v: CheckVerdict| checks.iter().any(|r| r.verdict == v);
    let verdict = if has(CheckVerdict::Fail) {
        Verdict::Fail
    } else if has(CheckVerdict::Inconclusive) {
        Verdict::Inconclusive
    } else {
        Verdict::Pass
    };
    let p99_ratio = crate::check::Figure {
        measure: Measure::P99,
        ratio: true,
    };
    let latency_ratio = match figure_value(p99_ratio, f, &ctx) {
        FigureValue::Value(r) => Some(r),
        _ => None,
    };
    Judgement {
        verdict,
        latency_ratio,
        reasons,
        checks,
    }
}

/// Judges a window of the mirror step. Inconclusive when fewer than
/// `min_requests` shadow answers were compared; a failed check when the
/// share of them that differed from the baseline's or got no answer is
/// above `max_error_rate`; else a pass.
pub fn judge_shadow(f: &ShadowFigures, s: &Settings) -> Judgement {
    let mut reasons = Vec::new();
    if f.answers < s.min_requests {
        reasons.push(format!(
            "only {} shadow answer{} compared in the window, fewer than min-requests {}",
            f.answers,
            if f.answers == 1 { "" } else { "s" },
            s.min_requests
        ));
        return Judgement {
            verdict: Verdict::Inconclusive,
            latency_ratio: None,
            reasons,
            checks: Vec::new(),
        };
    }
    let failed = f.mismatch_rate > s.max_error_rate;
    if failed {
        reasons.push(format!(
            "{} of the canary's shadow answers ({} different, {} without answer, of {}) did \
             not match the baseline's, above max-error-rate {}",
            percent(f.mismatch_rate),
            f.different,
            f.error,
            f.answers,
            percent(s.max_error_rate)
        ));
    }
    Judgement {
        verdict: if failed { Verdict::Fail } else { Verdict::Pass },
        latency_ratio: None,
        reasons,
        checks: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::Options;

    fn settings() -> Settings {
        Options::default().resolve().unwrap()
    }

    fn judge_figures(f: &WindowFigures, s: &Settings) -> Judgement {
        let w = Window {
            seconds: 30.0,
            queried: BTreeMap::new(),
        };
        judge(f, &w, s)
    }

    fn figures(c: (u64, u64, f64), b: (u64, u64, f64)) -> WindowFigures {
        WindowFigures {
            canary: VersionFigures::new("v2", c.0, c.1, (c.0 > 0).then_some(c.2)),
            baseline: VersionFigures::new("v1", b.0, b.1, (b.0 > 0).then_some(b.2)),
        }
    }

    #[test]
    fn shadow_answers_are_judged() {
        let s = settings();
        let j = judge_shadow(&ShadowFigures::new("v2", 20.0, 99, 1, 0, 7), &s);
        assert_eq!(j.verdict, Verdict::Pass, "{j:?}");
        let j = judge_shadow(&ShadowFigures::new("v2", 20.0, 90, 5, 5, 0), &s);
        assert_eq!(j.verdict, Verdict::Fail, "{j:?}");
        assert!(j.reasons[0].contains("10.00%"), "{j:?}");
        // Unknown primaries are not judged: too few answers.
        let j = judge_shadow(&ShadowFigures::new("v2", 20.0, 40, 0, 0, 100), &s);
        assert_eq!(j.verdict, Verdict::Inconclusive, "{j:?}");
        assert!(j.reasons[0].contains("only 40 shadow answers"), "{j:?}");
    }

    #[test]
    fn healthy_canary_passes() {
        let j = judge_figures(&figures((100, 0, 0.004), (1900, 1, 0.003)), &settings());
        assert_eq!(j.verdict, Verdict::Pass, "{j:?}");
        // Both under the 10 ms floor: equal.
        assert_eq!(j.latency_ratio, Some(1.0));
    }

    #[test]
    fn too_little_traffic_is_inconclusive_even_when_it_looks_bad() {
        let j = judge_figures(&figures((49, 49, 0.9), (1000, 0, 0.002)), &settings());
        assert_eq!(j.verdict, Verdict::Inconclusive);
        assert!(j.reasons[0].contains("only 49 canary requests"), "{j:?}");
        let j = judge_figures(&figures((0, 0, 0.0), (0, 0, 0.0)), &settings());
        assert_eq!(j.verdict, Verdict::Inconclusive);
    }

    #[test]
    fn errors_fail() {
        let j = judge_figures(&figures((100, 2, 0.002), (1000, 0, 0.002)), &settings());
        assert_eq!(j.verdict, Verdict::Fail);
        assert!(j.reasons[0].contains("2.00% (2 of 100)"), "{j:?}");
        // Exactly at the limit passes.
        let j = judge_figures(&figures((100, 1, 0.002), (1000, 0, 0.002)), &settings());
        assert_eq!(j.verdict, Verdict::Pass, "{j:?}");
    }

    #[test]
    fn slow_fails() {
        let j = judge_figures(&figures((100, 0, 0.5), (1000, 0, 0.002)), &settings());
        assert_eq!(j.verdict, Verdict::Fail);
        assert_eq!(j.latency_ratio, Some(50.0));
        let j = judge_figures(&figures((100, 0, 0.150), (1000, 0, 0.100)), &settings());
        assert_eq!(j.verdict, Verdict::Pass, "{j:?}");
        let j = judge_figures(&figures((100, 0, 0.151), (1000, 0, 0.100)), &settings());
        assert_eq!(j.verdict, Verdict::Fail, "{j:?}");
    }

    #[test]
    fn no_baseline_traffic_judges_errors_only_and_says_so() {
        let j = judge_figures(&figures((100, 0, 0.5), (0, 0, 0.0)), &settings());
        assert_eq!(j.verdict, Verdict::Pass);
        assert_eq!(j.latency_ratio, None);
        assert!(j.reasons[0].contains("baseline had no traffic"), "{j:?}");
        let j = judge_figures(&figures((100, 5, 0.001), (3, 0, 0.001)), &settings());
        assert_eq!(j.verdict, Verdict::Fail);
        assert!(j.reasons[1].contains("only 3 requests"), "{j:?}");
    }
}
