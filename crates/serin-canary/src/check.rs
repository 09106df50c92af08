//! One check of a window, judged: a figure of serin's (or the value of a
//! PromQL template) against the check's range. Pure, like [`analysis`]
//! (which combines the checks into the window's verdict).
//!
//! The three checks of every canary are built in ([`default_checks`]):
//! `requests` (the canary's request count, at least `min_requests`),
//! `error-rate` (its 5xx share, at most `max_error_rate`) and
//! `latency-ratio` (its p99 over the baseline's, at most
//! `max_latency_ratio`). A team's own checks are added to them; one of the
//! same name replaces a built-in one.
//!
//! [`analysis`]: crate::analysis

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
pub use serin_config::stack::canary_check::{
    CanaryCheck, CheckError, CheckSource, Figure, Measure, range_text,
};

use crate::analysis::{VersionFigures, WindowFigures, millis, percent};

/// The built-in check of traffic: too few canary requests make a window
/// inconclusive (set by `min_requests`).
pub const REQUESTS_CHECK: &str = "requests";
/// The built-in check of the canary's 5xx share (`max_error_rate`).
pub const ERROR_RATE_CHECK: &str = "error-rate";
/// The built-in check of p99(canary) / p99(baseline) (`max_latency_ratio`).
pub const LATENCY_RATIO_CHECK: &str = "latency-ratio";

/// How one check came out in a window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CheckVerdict {
    /// The value is in the range.
    Pass,
    /// The value is out of the range.
    Fail,
    /// No value (no data, a query without series, an error): never a pass.
    Inconclusive,
    /// Not compared, and rightly so: a ratio to a baseline that had (almost)
    /// no traffic, as at the last step. It counts neither way.
    Skipped,
}

impl CheckVerdict {
    pub const ALL: [CheckVerdict; 4] = [Self::Pass, Self::Fail, Self::Inconclusive, Self::Skipped];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pass => "pass",
            Self::Fail => "fail",
            Self::Inconclusive => "inconclusive",
            Self::Skipped => "skipped",
        }
    }
}

/// One check's outcome in a window: what status, the audit log, `--watch`,
/// the dashboard and the metrics show.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckResult {
    pub name: String,
    /// `figure p99Ratio` or `promql`.
    pub source: String,
    /// For a PromQL check: the query as run for the canary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
    pub verdict: CheckVerdict,
    /// Why it did not pass (or was not compared).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl CheckResult {
    /// `error-rate 0.00% (≤ 1.00%) pass`.
    pub fn summary(&self) -> String {
        let kind = self.kind();
        format!(
            "{} {} ({}) {}",
            self.name,
            self.value.map_or_else(|| "-".to_string(), |v| kind.text(v)),
            kind.range(self.min, self.max),
            self.verdict.as_str()
        )
    }

    fn kind(&self) -> ValueKind {
        // A webhook's value is the HTTP status it answered.
        if self.source.starts_with("webhook") {
            return ValueKind::Count;
        }
        match self
            .source
            .strip_prefix("figure ")
            .map(str::parse::<Figure>)
        {
            Some(Ok(f)) => ValueKind::of(f),
            _ => ValueKind::Plain,
        }
    }
}

/// A check as settings show it: `error-rate errorShare5xx ≤ 1.00%`,
/// `not-found promql ≤ 0`.
pub fn describe(c: &CanaryCheck) -> String {
    let (source, kind) = match &c.source {
        CheckSource::Figure(f) => (f.to_string(), ValueKind::of(*f)),
        CheckSource::Promql(_) => ("promql".to_string(), ValueKind::Plain),
    };
    format!("{} {source} {}", c.name, kind.range(c.min, c.max))
}

/// The value of a PromQL check, as the source ran it.
#[derive(Debug, Clone, PartialEq)]
pub struct QueriedValue {
    /// The query as run.
    pub query: String,
    /// None: no series, or NaN. Err: the query failed.
    pub value: Result<Option<f64>, String>,
}

/// The three built-in checks with the ranges given.
pub fn default_checks(
    min_requests: u64,
    max_error_rate: f64,
    max_latency_ratio: f64,
) -> Vec<CanaryCheck> {
    let figure = |measure, ratio| CheckSource::Figure(Figure { measure, ratio });
    vec![
        CanaryCheck {
            name: REQUESTS_CHECK.into(),
            source: figure(Measure::Requests, false),
            min: Some(min_requests as f64),
            max: None,
        },
        CanaryCheck {
            name: ERROR_RATE_CHECK.into(),
            source: figure(Measure::ErrorShare5xx, false),
            min: None,
            max: Some(max_error_rate),
        },
        CanaryCheck {
            name: LATENCY_RATIO_CHECK.into(),
            source: figure(Measure::P99, true),
            min: None,
            max: Some(max_latency_ratio),
        },
    ]
}

/// `defaults` with `own` added: one of the same name takes the built-in
/// one's place, the others follow in their order.
pub fn with_own(mut defaults: Vec<CanaryCheck>, own: &[CanaryCheck]) -> Vec<CanaryCheck> {
    for c in own {
        match defaults.iter_mut().find(|d| d.name == c.name) {
            Some(d) => *d = c.clone(),
            None => defaults.push(c.clone()),
        }
    }
    defaults
}

/// Does this check gate the window on traffic? A check of the canary's
/// request count: a window with too few requests proves nothing either
/// way, so it is inconclusive and the other checks are not judged.
pub fn is_traffic_gate(c: &CanaryCheck) -> bool {
    matches!(
        c.source,
        CheckSource::Figure(Figure {
            measure: Measure::Requests,
            ratio: false
        })
    )
}

/// What a figure check needs besides the figures.
#[derive(Debug, Clone, Copy)]
pub struct Context {
    pub window_seconds: f64,
    /// Latencies under this count as this much in a latency ratio.
    pub latency_floor: f64,
    /// Fewer baseline requests: no ratio to the baseline.
    pub min_baseline_requests: u64,
}

/// A figure's value in a window, or why there is none.
#[derive(Debug, Clone, PartialEq)]
pub enum FigureValue {
    Value(f64),
    /// No value: inconclusive.
    Missing(String),
    /// A ratio to a baseline without traffic: not compared.
    NoBaseline(String),
}

fn measure(v: &VersionFigures, m: Measure, ctx: &Context) -> Option<f64> {
    let with_requests = |x: f64| (v.requests > 0).then_some(x);
    match m {
        Measure::Requests => Some(v.requests as f64),
        Measure::RequestRate => {
            (ctx.window_seconds > 0.0).then(|| v.requests as f64 / ctx.window_seconds)
        }
        Measure::ErrorShare4xx => with_requests(v.client_error_rate),
        Measure::ErrorShare5xx => with_requests(v.error_rate),
        Measure::P50 => v.p50_seconds,
        Measure::P90 => v.p90_seconds,
        Measure::P99 => v.p99_seconds,
    }
}

fn missing(m: Measure, who: &str) -> String {
    if m.is_latency() {
        format!("no latency figures for the {who}")
    } else {
        format!("no requests of the {who} to take a {} of", m.as_str())
    }
}

/// The value of `figure` in a window.
pub fn figure_value(figure: Figure, f: &WindowFigures, ctx: &Context) -> FigureValue {
    let Some(c) = measure(&f.canary, figure.measure, ctx) else {
        return FigureValue::Missing(missing(figure.measure, "canary"));
    };
    if !figure.ratio {
        return FigureValue::Value(c);
    }
    if f.baseline.requests < ctx.min_baseline_requests {
        return FigureValue::NoBaseline(if f.baseline.requests == 0 {
            "no traffic".to_string()
        } else {
            format!("only {} requests", f.baseline.requests)
        });
    }
    let Some(b) = measure(&f.baseline, figure.measure, ctx) else {
        return FigureValue::Missing(missing(figure.measure, "baseline"));
    };
    let (c, b) = if figure.measure.is_latency() {
        (c.max(ctx.latency_floor), b.max(ctx.latency_floor))
    } else {
        (c, b)
    };
    if b > 0.0 {
        FigureValue::Value(c / b)
    } else if c <= 0.0 {
        // Nothing on either side: the same.
        FigureValue::Value(1.0)
    } else {
        FigureValue::Missing(format!(
            "the baseline's {} is 0: no ratio (check the canary's own figure instead)",
            figure.measure.as_str()
        ))
    }
}

/// How a value reads: shares in percent, latencies in ms.
#[derive(Debug, Clone, Copy)]
enum ValueKind {
    Count,
    Rate,
    Share,
    Seconds,
    Plain,
}

impl ValueKind {
    fn of(f: Figure) -> Self {
        if f.ratio {
            return Self::Plain;
        }
        match f.measure {
            Measure::Requests => Self::Count,
            Measure::RequestRate => Self::Rate,
            Measure::ErrorShare4xx | Measure::ErrorShare5xx => Self::Share,
            Measure::P50 | Measure::P90 | Measure::P99 => Self::Seconds,
        }
    }

    fn text(self, v: f64) -> String {
        match self {
            Self::Count => format!("{v:.0}"),
            Self::Rate => format!("{v:.2}/s"),
            Self::Share => percent(v),
            Self::Seconds => millis(v),
            Self::Plain => format!("{v:.2}"),
        }
    }

    fn range(self, min: Option<f64>, max: Option<f64>) -> String {
        match self {
            Self::Plain => range_text(min, max),
            k => match (min, max) {
                (Some(a), Some(b)) => format!("{} to {}", k.text(a), k.text(b)),
                (Some(a), None) => format!("≥ {}", k.text(a)),
                (None, Some(b)) => format!("≤ {}", k.text(b)),
                (None, None) => "any".into(),
            },
        }
    }
}

/// `canary error rate 2.00% (2 of 100)`: the value in words, for reasons.
fn subject(c: &CanaryCheck, value: f64, f: &WindowFigures, kind: ValueKind) -> String {
    match &c.source {
        CheckSource::Promql(_) => {
            format!("check `{}`: the query gave {}", c.name, kind.text(value))
        }
        CheckSource::Figure(fig) => match (fig.measure, fig.ratio) {
            (Measure::ErrorShare5xx, false) => format!(
                "canary error rate {} ({} of {})",
                percent(value),
                f.canary.errors,
                f.canary.requests
            ),
            (Measure::ErrorShare4xx, false) => format!(
                "canary 4xx share {} ({} of {})",
                percent(value),
                f.canary.client_errors,
                f.canary.requests
            ),
            (m, true) if m.is_latency() => {
                let (c, b) = match m {
                    Measure::P50 => (f.canary.p50_seconds, f.baseline.p50_seconds),
                    Measure::P90 => (f.canary.p90_seconds, f.baseline.p90_seconds),
                    _ => (f.canary.p99_seconds, f.baseline.p99_seconds),
                };
                format!(
                    "canary {m} {} is {value:.2} times the baseline's {}",
                    c.map_or_else(|| "-".into(), millis),
                    b.map_or_else(|| "-".into(), millis),
                    m = m.as_str()
                )
            }
            _ => format!("canary {fig} {}", kind.text(value)),
        },
    }
}

/// What a bound is called in a reason: the flag of a built-in check,
/// else the check's own.
fn bound_name(c: &CanaryCheck, bound: &str) -> String {
    match (c.name.as_str(), bound) {
        (REQUESTS_CHECK, "min") => "min-requests".into(),
        (ERROR_RATE_CHECK, "max") => "max-error-rate".into(),
        (LATENCY_RATIO_CHECK, "max") => "max-latency-ratio".into(),
        (name, bound) => format!("check `{name}`'s {bound}"),
    }
}

/// The range verdict of a value, with the reason when it is out.
fn in_range(c: &CanaryCheck, value: f64, f: &WindowFigures, kind: ValueKind) -> Option<String> {
    if let Some(min) = c.min
        && value < min
    {
        return Some(format!(
            "{} is below {} {}",
            subject(c, value, f, kind),
            bound_name(c, "min"),
            kind.text(min)
        ));
    }
    if let Some(max) = c.max
        && value > max
    {
        return Some(format!(
            "{} is above {} {}",
            subject(c, value, f, kind),
            bound_name(c, "max"),
            match kind {
                // As the flag was given.
                ValueKind::Plain => format!("{max}"),
                k => k.text(max),
            }
        ));
    }
    None
}

/// The traffic gate's reason: `only 49 canary requests in the window,
/// fewer than min-requests 50`.
fn too_few(c: &CanaryCheck, requests: u64) -> String {
    format!(
        "only {requests} canary request{} in the window, fewer than {} {}",
        if requests == 1 { "" } else { "s" },
        bound_name(c, "min"),
        c.min.unwrap_or(0.0)
    )
}

/// Judges one check.
pub fn judge_check(
    c: &CanaryCheck,
    f: &WindowFigures,
    queried: &BTreeMap<String, QueriedValue>,
    ctx: &Context,
) -> CheckResult {
    let mut result = CheckResult {
        name: c.name.clone(),
        source: String::new(),
        query: None,
        value: None,
        min: c.min,
        max: c.max,
        verdict: CheckVerdict::Inconclusive,
        reason: None,
    };
    let (value, kind) = match &c.source {
        CheckSource::Figure(fig) => {
            result.source = format!("figure {fig}");
            (figure_value(*fig, f, ctx), ValueKind::of(*fig))
        }
        CheckSource::Promql(_) => {
            result.source = "promql".into();
            let got = queried.get(&c.name);
            result.query = got.map(|q| q.query.clone());
            let value = match got.map(|q| &q.value) {
                Some(Ok(Some(v))) => FigureValue::Value(*v),
                Some(Ok(None)) => FigureValue::Missing(format!(
                    "check `{}`: the query returned no series (or NaN)",
                    c.name
                )),
                Some(Err(e)) => FigureValue::Missing(format!("check `{}`: {e}", c.name)),
                None => FigureValue::Missing(format!("check `{}` was not run", c.name)),
            };
            (value, ValueKind::Plain)
        }
    };
    match value {
        FigureValue::Value(v) => {
            result.value = Some(v);
            result.reason = if is_traffic_gate(c) && out_of(c, v) {
                Some(too_few(c, f.canary.requests))
            } else {
                in_range(c, v, f, kind)
            };
            result.verdict = if result.reason.is_some() {
                CheckVerdict::Fail
            } else {
                CheckVerdict::Pass
            };
        }
        FigureValue::Missing(why) => result.reason = Some(why),
        FigureValue::NoBaseline(what) => {
            result.verdict = CheckVerdict::Skipped;
            result.reason = Some(format!(
                "the baseline had {what} in the window: check `{}` is not compared",
                c.name
            ));
        }
    }
    result
}

fn out_of(c: &CanaryCheck, v: f64) -> bool {
    c.min.is_some_and(|m| v < m) || c.max.is_some_and(|m| v > m)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> Context {
        Context {
            window_seconds: 10.0,
            latency_floor: 0.01,
            min_baseline_requests: 10,
        }
    }

    fn figures(canary: VersionFigures, baseline: VersionFigures) -> WindowFigures {
        WindowFigures { canary, baseline }
    }

    fn check(source: &str, min: Option<f64>, max: Option<f64>) -> CanaryCheck {
        let source = match source.strip_prefix("promql:") {
            Some(t) => CheckSource::Promql(t.into()),
            None => CheckSource::Figure(source.parse().unwrap()),
        };
        CanaryCheck {
            name: "c".into(),
            source,
            min,
            max,
        }
    }

    #[test]
    fn verdicts_of_figure_checks() {
        let c = VersionFigures::new("v2", 100, 2, Some(0.05))
            .with_client_errors(10)
            .with_latencies(Some(0.02), Some(0.04));
        let b =
            VersionFigures::new("v1", 400, 0, Some(0.025)).with_latencies(Some(0.005), Some(0.02));
        let f = figures(c, b);
        let none = BTreeMap::new();
        use CheckVerdict::*;
        // (figure, min, max, verdict, value)
        type Row = (
            &'static str,
            Option<f64>,
            Option<f64>,
            CheckVerdict,
            Option<f64>,
        );
        let table: [Row; 12] = [
            ("requests", Some(50.0), None, Pass, Some(100.0)),
            ("requests", Some(101.0), None, Fail, Some(100.0)),
            ("requestRate", Some(5.0), Some(20.0), Pass, Some(10.0)),
            ("requestRate", Some(11.0), None, Fail, Some(10.0)),
            ("errorShare5xx", None, Some(0.02), Pass, Some(0.02)),
            ("errorShare5xx", None, Some(0.019), Fail, Some(0.02)),
            ("errorShare4xx", None, Some(0.0), Fail, Some(0.1)),
            ("p50", None, Some(0.02), Pass, Some(0.02)),
            ("p99Ratio", None, Some(2.0), Pass, Some(2.0)),
            // The floor: 20 ms over 10 ms, not over 5 ms.
            ("p50Ratio", None, Some(1.9), Fail, Some(2.0)),
            ("requestRateRatio", Some(0.2), None, Pass, Some(0.25)),
            // No 5xx in the baseline: a ratio of shares is undefined.
            ("errorShare5xxRatio", None, Some(2.0), Inconclusive, None),
        ];
        for (figure, min, max, verdict, value) in table {
            let r = judge_check(&check(figure, min, max), &f, &none, &ctx());
            assert_eq!((r.verdict, r.value), (verdict, value), "{figure}: {r:?}");
            assert_eq!(r.reason.is_some(), verdict != Pass, "{figure}: {r:?}");
        }
    }

    #[test]
    fn missing_data_is_never_a_pass() {
        let f = figures(
            VersionFigures::new("v2", 0, 0, None),
            VersionFigures::new("v1", 3, 0, Some(0.01)),
        );
        let none = BTreeMap::new();
        for (figure, verdict) in [
            ("p99", CheckVerdict::Inconclusive),
            ("errorShare4xx", CheckVerdict::Inconclusive),
            ("p99Ratio", CheckVerdict::Inconclusive),
        ] {
            let r = judge_check(&check(figure, None, Some(1.0)), &f, &none, &ctx());
            assert_eq!(r.verdict, verdict, "{figure}: {r:?}");
        }
        // A canary with latencies, a baseline with 3 requests: not compared.
        let f = figures(VersionFigures::new("v2", 100, 0, Some(0.5)), f.baseline);
        let r = judge_check(&check("p99Ratio", None, Some(1.0)), &f, &none, &ctx());
        assert_eq!(r.verdict, CheckVerdict::Skipped, "{r:?}");
        assert!(r.reason.unwrap_or_default().contains("only 3 requests"));
    }

    #[test]
    fn verdicts_of_promql_checks() {
        let f = WindowFigures::default();
        let ran = |value| {
            BTreeMap::from([(
                "c".to_string(),
                QueriedValue {
                    query: "q".into(),
                    value,
                },
            )])
        };
        let table = [
            (ran(Ok(Some(0.0))), CheckVerdict::Pass),
            (ran(Ok(Some(0.3))), CheckVerdict::Fail),
            (ran(Ok(Some(-1.0))), CheckVerdict::Fail),
            (ran(Ok(None)), CheckVerdict::Inconclusive),
            (ran(Err("gave 3 series".into())), CheckVerdict::Inconclusive),
            (BTreeMap::new(), CheckVerdict::Inconclusive),
        ];
        for (queried, verdict) in table {
            let r = judge_check(
                &check("promql:x", Some(0.0), Some(0.2)),
                &f,
                &queried,
                &ctx(),
            );
            assert_eq!(r.verdict, verdict, "{queried:?}: {r:?}");
        }
        let r = judge_check(
            &check("promql:x", None, Some(0.2)),
            &f,
            &ran(Ok(None)),
            &ctx(),
        );
        assert!(
            r.reason.unwrap_or_default().contains("no series"),
            "no reason"
        );
        assert_eq!(r.query.as_deref(), Some("q"));
    }

    #[test]
    fn own_checks_replace_built_in_ones_by_name() {
        let own = [
            CanaryCheck {
                name: ERROR_RATE_CHECK.into(),
                source: CheckSource::Figure("errorShare5xx".parse().unwrap()),
                min: None,
                max: Some(0.1),
            },
            check("promql:vector(1)", None, Some(0.0)),
        ];
        let all = with_own(default_checks(50, 0.01, 1.5), &own);
        let names: Vec<&str> = all.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["requests", "error-rate", "latency-ratio", "c"]);
        assert_eq!(all[1].max, Some(0.1));
    }

    #[test]
    fn summaries_read_in_the_figure_s_units() {
        let r = CheckResult {
            name: "error-rate".into(),
            source: "figure errorShare5xx".into(),
            query: None,
            value: Some(0.02),
            min: None,
            max: Some(0.01),
            verdict: CheckVerdict::Fail,
            reason: None,
        };
        assert_eq!(r.summary(), "error-rate 2.00% (≤ 1.00%) fail");
        let d: Vec<String> = default_checks(50, 0.01, 1.5).iter().map(describe).collect();
        assert_eq!(
            d,
            [
                "requests requests ≥ 50",
                "error-rate errorShare5xx ≤ 1.00%",
                "latency-ratio p99Ratio ≤ 1.5"
            ]
        );
    }
}
