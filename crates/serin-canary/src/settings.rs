//! What a canary is told: the options of `serin canary start` (the same as
//! a service's `canary:` section in the stack file), their defaults, and the
//! checked [`Settings`] a canary runs with.
//!
//! Precedence, key by key: the start request, then the service's `canary:`
//! section, then the built-in defaults below.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize};
use serin_config::stack::{
    CanaryDefaults, check_canary_steps, parse_match_step, parse_preview_host, parse_rate,
};

use crate::check::{CanaryCheck, CheckSource, default_checks, with_own};
use crate::error::CanaryError;
use crate::prometheus::Queries;
use serin_config::stack::canary_check::check_unique;
pub use serin_config::stack::canary_hook::{HookType, NotifyFormat, NotifyTarget, Webhook};
use serin_config::stack::canary_hook::{check_hook_url, check_unique_hooks};

/// Flagger's and Argo Rollouts' usual ramp: a small blast radius first,
/// then half, then everything.
pub const DEFAULT_STEPS: [u32; 4] = [5, 25, 50, 100];
/// Long enough for a few hundred requests of modest traffic and for
/// Prometheus to scrape several times (its default scrape is 15s–30s).
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(30);
/// 1%: a canary may not fail more than one request in a hundred.
pub const DEFAULT_MAX_ERROR_RATE: f64 = 0.01;
/// The canary's p99 may be at most half again the baseline's.
pub const DEFAULT_MAX_LATENCY_RATIO: f64 = 1.5;
/// p99s under 10 ms count as 10 ms in the latency ratio: between two fast
/// versions on a loaded machine, a 2 ms against 4 ms p99 is scheduling
/// noise, not a regression (and histogram buckets are coarse down there).
pub const DEFAULT_LATENCY_FLOOR: Duration = Duration::from_millis(10);
/// Below 50 canary requests one error moves the rate by 2%: too few to
/// judge either way.
pub const DEFAULT_MIN_REQUESTS: u64 = 50;
/// A single bad window can be bad luck; two are a pattern.
pub const DEFAULT_FAILURES: u32 = 2;
/// Three windows without traffic in a row stop the canary rather than let
/// it sit at a step forever.
pub const DEFAULT_INCONCLUSIVE_LIMIT: u32 = 3;

/// Options as given: every key optional; [`Options::or`] fills gaps from
/// a fallback and [`Options::resolve`] checks them and fills in the
/// built-in defaults.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Options {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub steps: Option<Vec<u32>>,
    #[serde(
        default,
        with = "crate::duration_text::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub interval: Option<Duration>,
    /// `"1%"` or `0.01`.
    #[serde(
        default,
        deserialize_with = "rate",
        skip_serializing_if = "Option::is_none"
    )]
    pub max_error_rate: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_latency_ratio: Option<f64>,
    #[serde(
        default,
        with = "crate::duration_text::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub latency_floor: Option<Duration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_requests: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failures: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inconclusive_limit: Option<u32>,
    /// Prometheus' base URL: analyse with PromQL instead of serin's own
    /// counters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prometheus: Option<String>,
    /// PromQL templates replacing the built-in ones: `requests`,
    /// `error_rate`, `latency_p99`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub queries: BTreeMap<String, String>,
    /// `NAME=VALUE`: first a step where only requests carrying this header
    /// reach the canary (the workshops' A/B testing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header_step: Option<String>,
    /// `NAME=VALUE`: the same with a cookie.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cookie_step: Option<String>,
    /// A host name: the same for requests to this host (its `Host` or
    /// `:authority`, any port, any case), e.g. a blue/green preview.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_step: Option<String>,
    /// Percent: first a step where the canary gets only shadow copies of
    /// this share of the baseline's requests, judged by its shadow answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mirror_step: Option<f64>,
    /// Checks of the team's own, added to the built-in ones (one of the
    /// same name replaces a built-in one).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub checks: Vec<CanaryCheck>,
    /// Webhooks and gates (Flagger's types); one of the same name as the
    /// fallback's replaces it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub webhooks: Vec<Webhook>,
    /// Wait for `serin canary approve` before the promotion.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval: Option<bool>,
    /// Where the canary's transitions are told; given here, they replace
    /// the fallback's.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notify: Vec<NotifyTarget>,
}

fn rate<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Written {
        Text(String),
        Number(f64),
    }
    match Option::<Written>::deserialize(d)? {
        None => Ok(None),
        Some(Written::Text(s)) => parse_rate(&s).map(Some).map_err(serde::de::Error::custom),
        Some(Written::Number(n)) => parse_rate(&n.to_string())
            .map(Some)
            .map_err(serde::de::Error::custom),
    }
}

/// The one step of a blue/green canary after its preview: the switch sends
/// every request to the new version at once (Flagger's and Argo's meaning).
pub const BLUE_GREEN_STEPS: [u32; 1] = [100];

impl From<&CanaryDefaults> for Options {
    /// A `blueGreen` section becomes its preview header as the header step
    /// (or its preview host as the host step) and [`BLUE_GREEN_STEPS`]
    /// (validation refuses it beside either).
    fn from(d: &CanaryDefaults) -> Self {
        let blue_green = d.blue_green_preview_header.as_ref();
        let preview_host = d.blue_green_preview_host.as_ref();
        Self {
            steps: match blue_green.or(preview_host) {
                Some(_) => Some(BLUE_GREEN_STEPS.to_vec()),
                None => d.steps.clone(),
            },
            interval: d.interval,
            max_error_rate: d.max_error_rate,
            max_latency_ratio: d.max_latency_ratio,
            latency_floor: d.latency_floor,
            min_requests: d.min_requests,
            failures: d.failures,
            inconclusive_limit: d.inconclusive_limit,
            prometheus: d.prometheus.clone(),
            queries: d.queries.clone(),
            header_step: blue_green.or(d.header_step.as_ref()).cloned(),
            cookie_step: d.cookie_step.clone(),
            host_step: preview_host.cloned(),
            mirror_step: d.mirror_step,
            checks: d.checks.clone(),
            webhooks: d.webhooks.clone(),
            approval: d.approval,
            notify: d.notify.clone(),
        }
    }
}

impl Options {
    /// These options, with the keys they leave out taken from `fallback`.
    /// Query templates are merged by name.
    pub fn or(self, fallback: &Options) -> Options {
        let mut queries = fallback.queries.clone();
        queries.extend(self.queries);
        let own_match_step =
            self.header_step.is_some() || self.cookie_step.is_some() || self.host_step.is_some();
        let checks = with_own(fallback.checks.clone(), &self.checks);
        let webhooks = hooks_with_own(fallback.webhooks.clone(), &self.webhooks);
        let notify = if self.notify.is_empty() {
            fallback.notify.clone()
        } else {
            self.notify
        };
        Options {
            steps: self.steps.or_else(|| fallback.steps.clone()),
            interval: self.interval.or(fallback.interval),
            max_error_rate: self.max_error_rate.or(fallback.max_error_rate),
            max_latency_ratio: self.max_latency_ratio.or(fallback.max_latency_ratio),
            latency_floor: self.latency_floor.or(fallback.latency_floor),
            min_requests: self.min_requests.or(fallback.min_requests),
            failures: self.failures.or(fallback.failures),
            inconclusive_limit: self.inconclusive_limit.or(fallback.inconclusive_limit),
            prometheus: self.prometheus.or_else(|| fallback.prometheus.clone()),
            queries,
            // A header, cookie or host step given here replaces the
            // fallback's either way: they are one setting.
            header_step: if own_match_step {
                self.header_step
            } else {
                fallback.header_step.clone()
            },
            cookie_step: if own_match_step {
                self.cookie_step
            } else {
                fallback.cookie_step.clone()
            },
            host_step: if own_match_step {
                self.host_step
            } else {
                fallback.host_step.clone()
            },
            mirror_step: self.mirror_step.or(fallback.mirror_step),
            checks,
            webhooks,
            approval: self.approval.or(fallback.approval),
            notify,
        }
    }

    /// Checks every option and fills in the built-in defaults; all
    /// problems are reported at once.
    pub fn resolve(self) -> Result<Settings, CanaryError> {
        let mut problems = Vec::new();
        let steps = self.steps.unwrap_or_else(|| DEFAULT_STEPS.to_vec());
        if let Err(e) = check_canary_steps(&steps) {
            problems.push(format!("steps: {e}"));
        }
        let interval = self.interval.unwrap_or(DEFAULT_INTERVAL);
        if interval < Duration::from_millis(100) {
            problems.push("interval: must be at least 100ms".into());
        }
        let max_error_rate = self.max_error_rate.unwrap_or(DEFAULT_MAX_ERROR_RATE);
        if !(0.0..=1.0).contains(&max_error_rate) {
            problems.push("max_error_rate: must be from 0% to 100%".into());
        }
        let max_latency_ratio = self.max_latency_ratio.unwrap_or(DEFAULT_MAX_LATENCY_RATIO);
        if !(max_latency_ratio.is_finite() && max_latency_ratio >= 1.0) {
            problems.push(format!(
                "max_latency_ratio: must be at least 1 (p99 of the canary over the baseline's), \
                 found {max_latency_ratio}"
            ));
        }
        let min_requests = self.min_requests.unwrap_or(DEFAULT_MIN_REQUESTS);
        if min_requests < 1 {
            problems.push("min_requests: must be at least 1".into());
        }
        let failures = self.failures.unwrap_or(DEFAULT_FAILURES);
        if failures < 1 {
            problems.push("failures: must be at least 1".into());
        }
        let inconclusive_limit = self
            .inconclusive_limit
            .unwrap_or(DEFAULT_INCONCLUSIVE_LIMIT);
        if inconclusive_limit < 1 {
            problems.push("inconclusive_limit: must be at least 1".into());
        }
        let prometheus = match self.prometheus {
            None => {
                if !self.queries.is_empty() {
                    problems.push(
                        "queries: PromQL templates need a Prometheus (--prometheus URL)".into(),
                    );
                }
                None
            }
            Some(url) => {
                let url = url.trim().trim_end_matches('/').to_string();
                if !(url.starts_with("http://") || url.starts_with("https://"))
                    || url.contains(char::is_whitespace)
                {
                    problems.push(format!(
                        "prometheus: `{url}` is not a URL such as http://127.0.0.1:9090"
                    ));
                }
                match Queries::default().with_overrides(&self.queries) {
                    Ok(queries) => Some(PrometheusSettings { url, queries }),
                    Err(e) => {
                        problems.push(format!("queries: {e}"));
                        None
                    }
                }
            }
        };
        let mut first_step = None;
        for (given, kind) in [
            (&self.header_step, MatchKind::Header),
            (&self.cookie_step, MatchKind::Cookie),
        ] {
            if let Some(s) = given {
                match parse_match_step(s) {
                    Ok((name, value)) => {
                        first_step = Some(MatchStep {
                            kind,
                            name: if kind == MatchKind::Header {
                                name.to_ascii_lowercase()
                            } else {
                                name
                            },
                            value,
                        });
                    }
                    Err(e) => problems.push(format!("{}_step: {e}", kind.as_str())),
                }
            }
        }
        if let Some(m) = self.mirror_step
            && !(m.is_finite() && m > 0.0 && m <= 100.0)
        {
            problems.push(format!(
                "mirror_step: the percent of requests to shadow must be above 0 and at most \
                 100, found {m}"
            ));
        }
        if let Some(h) = &self.host_step {
            match parse_preview_host(h) {
                Ok(host) => {
                    first_step = Some(MatchStep {
                        kind: MatchKind::Host,
                        name: HOST_STEP_NAME.into(),
                        value: host,
                    });
                }
                Err(e) => problems.push(format!("host_step: {e}")),
            }
        }
        let given: Vec<&str> = [
            (self.header_step.is_some(), "header_step"),
            (self.cookie_step.is_some(), "cookie_step"),
            (self.host_step.is_some(), "host_step"),
        ]
        .into_iter()
        .filter_map(|(on, key)| on.then_some(key))
        .collect();
        if given.len() > 1 {
            problems.push(format!(
                "{}: a canary has one match step, give one of them",
                given.join(" and ")
            ));
        }
        check_own_checks(&self.checks, prometheus.is_some(), &mut problems);
        check_hooks(&self.webhooks, &self.notify, &mut problems);
        let checks = with_own(
            default_checks(min_requests, max_error_rate, max_latency_ratio),
            &self.checks,
        );
        if !problems.is_empty() {
            return Err(CanaryError::BadOptions(problems.join("; ")));
        }
        Ok(Settings {
            steps,
            interval,
            max_error_rate,
            max_latency_ratio,
            latency_floor: self.latency_floor.unwrap_or(DEFAULT_LATENCY_FLOOR),
            min_requests,
            failures,
            inconclusive_limit,
            prometheus,
            first_step,
            mirror_step: self.mirror_step,
            checks,
            webhooks: self.webhooks,
            approval: self.approval.unwrap_or(false),
            notify: self.notify,
        })
    }
}

/// Problems of a canary's own checks, each named by its check.
fn check_own_checks(checks: &[CanaryCheck], prometheus: bool, problems: &mut Vec<String>) {
    for c in checks {
        for e in c.problems() {
            problems.push(format!("checks: `{}`: {e}", c.name));
        }
        if matches!(c.source, CheckSource::Promql(_)) && !prometheus {
            problems.push(format!(
                "checks: `{}`: a PromQL check needs a Prometheus (--prometheus URL)",
                c.name
            ));
        }
    }
    if let Err(e) = check_unique(checks.iter().map(|c| c.name.as_str())) {
        problems.push(format!("checks: {e}"));
    }
}

/// `defaults` with `own` added: one of the same name takes the fallback's
/// place, the others follow in their order.
fn hooks_with_own(mut defaults: Vec<Webhook>, own: &[Webhook]) -> Vec<Webhook> {
    for h in own {
        match defaults.iter_mut().find(|d| d.name == h.name) {
            Some(d) => *d = h.clone(),
            None => defaults.push(h.clone()),
        }
    }
    defaults
}

/// Problems of a canary's webhooks and notification targets, each named
/// by its webhook or target.
fn check_hooks(hooks: &[Webhook], notify: &[NotifyTarget], problems: &mut Vec<String>) {
    for h in hooks {
        for e in h.problems() {
            problems.push(format!("webhooks: `{}`: {e}", h.name));
        }
    }
    if let Err(e) = check_unique_hooks(hooks) {
        problems.push(format!("webhooks: {e}"));
    }
    for (i, n) in notify.iter().enumerate() {
        if let Err(e) = check_hook_url(&n.url) {
            problems.push(format!("notify[{i}]: {e}"));
        }
    }
}

/// The checked settings of one canary (kept in the state file with it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Settings {
    /// Canary weights in percent, increasing, each from 1 to 100.
    pub steps: Vec<u32>,
    /// How long each analysis window lasts.
    #[serde(with = "crate::duration_text")]
    pub interval: Duration,
    /// The highest canary error rate (5xx share, 0 to 1) that passes.
    pub max_error_rate: f64,
    /// The highest p99(canary) / p99(baseline) that passes.
    pub max_latency_ratio: f64,
    /// p99s below this count as this much in the ratio.
    #[serde(with = "crate::duration_text")]
    pub latency_floor: Duration,
    /// Fewer canary requests in a window make it inconclusive.
    pub min_requests: u64,
    /// Failed checks that roll the canary back.
    pub failures: u32,
    /// Inconclusive windows in a row that halt the canary.
    pub inconclusive_limit: u32,
    /// Analyse with Prometheus; none: with serin's own counters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prometheus: Option<PrometheusSettings>,
    /// Before the weighted steps: only requests matching this reach the
    /// canary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_step: Option<MatchStep>,
    /// Before everything else: the canary gets shadow copies of this
    /// percent of the baseline's requests, and is judged by its shadow
    /// answers (always from serin's own counters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mirror_step: Option<f64>,
    /// Every check a window is judged by, the built-in ones first (a state
    /// saved before checks existed has none here: see
    /// [`Settings::fill_in_checks`]).
    #[serde(default)]
    pub checks: Vec<CanaryCheck>,
    /// Webhooks and gates, in the order given.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub webhooks: Vec<Webhook>,
    /// Wait for `serin canary approve` before the promotion.
    #[serde(default)]
    pub approval: bool,
    /// Where the canary's transitions are told.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notify: Vec<NotifyTarget>,
}

impl Settings {
    /// The webhooks of one type, in the order given.
    pub fn hooks(&self, kind: HookType) -> impl Iterator<Item = &Webhook> {
        self.webhooks.iter().filter(move |h| h.kind == kind)
    }

    /// Is there anything to pass before traffic moves (a pre-rollout
    /// webhook or a confirm-rollout gate)?
    pub fn gated_rollout(&self) -> bool {
        self.hooks(HookType::PreRollout).next().is_some()
            || self.hooks(HookType::ConfirmRollout).next().is_some()
    }
}

impl Settings {
    /// Gives a canary saved before checks existed the built-in ones, from
    /// its thresholds: it resumes judged as it was.
    pub fn fill_in_checks(&mut self) {
        if self.checks.is_empty() {
            self.checks = default_checks(
                self.min_requests,
                self.max_error_rate,
                self.max_latency_ratio,
            );
        }
    }
}

/// A step where the canary gets only the requests that carry a header or a
/// cookie, or are for a host (testers, a chosen group of users, a preview
/// host); every other request goes to the baseline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MatchStep {
    pub kind: MatchKind,
    /// The header's or cookie's name; [`HOST_STEP_NAME`] for a host step.
    pub name: String,
    /// The value it must have; the host name (lower case) for a host step.
    pub value: String,
}

/// The `name` of a host step's [`MatchStep`]: the header it reads.
pub const HOST_STEP_NAME: &str = "host";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MatchKind {
    Header,
    Cookie,
    /// The request's host (`Host` or `:authority`) without its port, in
    /// any case.
    Host,
}

impl MatchKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Header => "header",
            Self::Cookie => "cookie",
            Self::Host => "host",
        }
    }
}

impl std::fmt::Display for MatchStep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.kind {
            MatchKind::Header => write!(f, "{}: {}", self.name, self.value),
            MatchKind::Cookie => write!(f, "{}={}", self.name, self.value),
            MatchKind::Host => f.write_str(&self.value),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PrometheusSettings {
    pub url: String,
    pub queries: Queries,
}

/// What `POST /canary/{service}/start` takes: the canary version, the
/// baseline (optional when only one other version shares the route rules),
/// and any [`Options`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StartRequest {
    pub to: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    #[serde(flatten)]
    pub options: Options,
}

impl StartRequest {
    /// Reads a start request, refusing unknown keys (serde cannot with a
    /// flattened struct, and a misspelt option must not go unnoticed).
    pub fn from_json(value: serde_json::Value) -> Result<Self, CanaryError> {
        const KNOWN: &[&str] = &[
            "to",
            "from",
            "steps",
            "interval",
            "max_error_rate",
            "max_latency_ratio",
            "latency_floor",
            "min_requests",
            "failures",
            "inconclusive_limit",
            "prometheus",
            "queries",
            "header_step",
            "cookie_step",
            "host_step",
            "mirror_step",
            "checks",
            "webhooks",
            "approval",
            "notify",
        ];
        if let Some(map) = value.as_object() {
            let unknown: Vec<&str> = map
                .keys()
                .map(String::as_str)
                .filter(|k| !KNOWN.contains(k))
                .collect();
            if !unknown.is_empty() {
                return Err(CanaryError::BadOptions(format!(
                    "unknown option{} {}; known: {}",
                    if unknown.len() == 1 { "" } else { "s" },
                    unknown.join(", "),
                    KNOWN.join(", ")
                )));
            }
        }
        serde_json::from_value(value).map_err(|e| CanaryError::BadOptions(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_precedence() {
        let s = Options::default().resolve().unwrap();
        assert_eq!(s.steps, vec![5, 25, 50, 100]);
        assert_eq!(s.interval, Duration::from_secs(30));
        assert!((s.max_error_rate - 0.01).abs() < 1e-12);
        assert_eq!(
            (s.min_requests, s.failures, s.inconclusive_limit),
            (50, 2, 3)
        );
        assert!(s.prometheus.is_none());

        let service = Options {
            steps: Some(vec![10, 100]),
            failures: Some(5),
            ..Options::default()
        };
        let given = Options {
            failures: Some(1),
            ..Options::default()
        };
        let s = given.or(&service).resolve().unwrap();
        assert_eq!(s.steps, vec![10, 100]);
        assert_eq!(s.failures, 1);
    }

    #[test]
    fn start_requests_from_json() {
        let r = StartRequest::from_json(serde_json::json!({
            "to": "v2", "steps": [100], "interval": "1s", "max_error_rate": "2.5%",
            "latency_floor": 0.05,
        }))
        .unwrap();
        assert_eq!(r.to, "v2");
        assert_eq!(r.options.steps, Some(vec![100]));
        assert_eq!(r.options.interval, Some(Duration::from_secs(1)));
        assert_eq!(r.options.latency_floor, Some(Duration::from_millis(50)));
        assert!((r.options.max_error_rate.unwrap() - 0.025).abs() < 1e-12);

        let e = StartRequest::from_json(serde_json::json!({"to": "v2", "step": [5]}))
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown option step"), "{e}");
        let e = StartRequest::from_json(serde_json::json!({"to": "v2", "max_error_rate": "150%"}))
            .unwrap_err()
            .to_string();
        assert!(e.contains("0% to 100%"), "{e}");
        let r =
            StartRequest::from_json(serde_json::json!({"to": "v2", "mirror_step": 20})).unwrap();
        assert_eq!(r.options.clone().resolve().unwrap().mirror_step, Some(20.0));
        let e = StartRequest::from_json(serde_json::json!({"to": "v2", "mirror_step": 150}))
            .unwrap()
            .options
            .resolve()
            .unwrap_err()
            .to_string();
        assert!(e.contains("mirror_step"), "{e}");
    }

    #[test]
    fn bad_options_are_all_reported() {
        let e = Options {
            steps: Some(vec![50, 25]),
            max_latency_ratio: Some(0.5),
            failures: Some(0),
            queries: BTreeMap::from([("requests".into(), "x".into())]),
            ..Options::default()
        }
        .resolve()
        .unwrap_err()
        .to_string();
        for part in [
            "steps must increase",
            "max_latency_ratio",
            "failures",
            "queries",
        ] {
            assert!(e.contains(part), "{part} missing in {e}");
        }
    }

    #[test]
    fn stack_file_webhooks_approval_and_notify() {
        let text = r#"
services:
  - name: qotm
    command: serin-demo
    canary:
      approval: true
      webhooks:
        - {name: smoke, type: pre-rollout, url: 'http://127.0.0.1:9/smoke', timeout: 30s}
        - name: gate
          type: confirm-promotion
          url: http://127.0.0.1:9/gate
          metadata: {ticket: CHG-1}
      notify:
        - {url: 'http://127.0.0.1:9/slack'}
        - {url: 'http://127.0.0.1:9/json', format: json}
    versions:
      - {name: v1, args: [qotm]}
"#;
        let stack = serin_config::stack::parse_stack(text, "stack.yaml", std::path::Path::new("."))
            .unwrap();
        let s = Options::from(stack.services[0].canary.as_ref().unwrap())
            .resolve()
            .unwrap();
        assert!(s.approval);
        assert!(s.gated_rollout());
        let hooks: Vec<(&str, HookType, Option<Duration>)> = s
            .webhooks
            .iter()
            .map(|h| (h.name.as_str(), h.kind, h.timeout))
            .collect();
        assert_eq!(
            hooks,
            [
                ("smoke", HookType::PreRollout, Some(Duration::from_secs(30))),
                ("gate", HookType::ConfirmPromotion, None)
            ]
        );
        assert_eq!(s.webhooks[1].metadata["ticket"], "CHG-1");
        let formats: Vec<NotifyFormat> = s.notify.iter().map(|n| n.format).collect();
        assert_eq!(formats, [NotifyFormat::Slack, NotifyFormat::Json]);

        let bad = r#"
services:
  - name: qotm
    command: serin-demo
    canary:
      webhooks:
        - {name: smoke, type: pre-deploy, url: 'http://h/'}
        - {name: gate, type: rollout, url: 'ftp://h/', timeout: 0s}
        - {name: gate, type: rollout, url: 'http://h/', colour: red}
      notify:
        - {url: 'http://h/', format: xml}
      approval: maybe
    versions:
      - {name: v1, args: [qotm]}
"#;
        let errors = serin_config::stack::parse_stack(bad, "stack.yaml", std::path::Path::new("."))
            .unwrap_err()
            .to_string();
        for part in [
            "stack.yaml:7:31: services[0].canary.webhooks[0].type: unknown webhook type \
             `pre-deploy`",
            "stack.yaml:8:44: services[0].canary.webhooks[1].url: `ftp://h/` is not an http:// or \
             https:// URL",
            "services[0].canary.webhooks[1].timeout: a webhook's timeout must be more than 0",
            "stack.yaml:9:18: services[0].canary.webhooks[2].name: webhook `gate` is defined \
             twice (first on line 8)",
            "colour",
            "services[0].canary.notify[0].format: unknown notification format `xml`",
            "services[0].canary.approval",
        ] {
            assert!(errors.contains(part), "{part} missing in:\n{errors}");
        }

        let e = StartRequest::from_json(serde_json::json!({
            "to": "v2",
            "webhooks": [{"name": "g", "type": "rollout", "url": "ftp://h/"}],
            "notify": [{"url": "http://h/", "format": "json"}],
            "approval": true,
        }))
        .unwrap()
        .options
        .resolve()
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("webhooks: `g`: `ftp://h/` is not an http:// or https:// URL"),
            "{e}"
        );
    }

    #[test]
    fn stack_file_canary_section() {
        let text = r#"
services:
  - name: qotm
    command: serin-demo
    canary:
      steps: [10, 50, 100]
      interval: 5s
      maxErrorRate: 2%
      maxLatencyRatio: 2
      minRequests: 20
      failures: 1
      inconclusiveLimit: 4
      prometheus: http://127.0.0.1:9090/
      queries:
        requests: 'sum(x{service="{{service}}"})'
      headerStep: X-Canary=always
      mirrorStep: 20
      checks:
        - name: not-found
          promql: 'sum(x{service="{{service}}"})'
          max: 0
        - {name: error-rate, figure: errorShare5xx, max: 0.05}
        - {name: p90, figure: p90Ratio, min: 0.5, max: 2}
    versions:
      - {name: v1, args: [qotm]}
"#;
        let stack = serin_config::stack::parse_stack(text, "stack.yaml", std::path::Path::new("."))
            .unwrap();
        let d = stack.services[0].canary.as_ref().unwrap();
        let o = Options::from(d);
        let s = o.resolve().unwrap();
        assert_eq!(s.steps, vec![10, 50, 100]);
        assert_eq!(s.interval, Duration::from_secs(5));
        assert!((s.max_error_rate - 0.02).abs() < 1e-12);
        assert_eq!(
            (s.min_requests, s.failures, s.inconclusive_limit),
            (20, 1, 4)
        );
        let p = s.prometheus.unwrap();
        assert_eq!(p.url, "http://127.0.0.1:9090");
        assert_eq!(p.queries.requests, r#"sum(x{service="{{service}}"})"#);
        let m = s.first_step.unwrap();
        assert_eq!(
            (m.kind, m.name.as_str(), m.value.as_str()),
            (MatchKind::Header, "x-canary", "always")
        );
        assert_eq!(s.mirror_step, Some(20.0));
        let checks: Vec<String> = s.checks.iter().map(crate::check::describe).collect();
        assert_eq!(
            checks,
            [
                "requests requests ≥ 20",
                "error-rate errorShare5xx ≤ 5.00%",
                "latency-ratio p99Ratio ≤ 2",
                "not-found promql ≤ 0",
                "p90 p90Ratio 0.5 to 2",
            ]
        );

        let bad = r#"
services:
  - name: qotm
    command: serin-demo
    canary:
      steps: [5, 250]
      maxErrorRate: lots
      failures: 0
      stpes: [1]
      headerStep: novalue
      mirrorStep: 0
      checks:
        - name: odd
          figure: p95
          max: 1
        - name: pods
          promql: 'x{a="{{pod}}"}'
          max: 1
        - name: none
          figure: p99
        - name: pods
          figure: p99
          min: 2
          max: 1
"#;
        let errors = serin_config::stack::parse_stack(bad, "stack.yaml", std::path::Path::new("."))
            .unwrap_err()
            .to_string();
        for part in [
            "stack.yaml:6:18",
            "services[0].canary.steps[1]",
            "step 250",
            "maxErrorRate",
            "`failures` must be at least 1",
            "did you mean `steps`",
            "services[0].canary.headerStep: `novalue` is not NAME=VALUE",
            "`mirrorStep` is the percent of requests to shadow",
            "stack.yaml:14:19: services[0].canary.checks[0].figure: unknown figure `p95`",
            "stack.yaml:17:19: services[0].canary.checks[1].promql: unknown placeholder \
             `{{pod}}` at character 6",
            "stack.yaml:19:11: services[0].canary.checks[2]: a check needs a range",
            "stack.yaml:21:17: services[0].canary.checks[3].name: check `pods` is defined twice \
             (first on line 16)",
            "stack.yaml:23:16: services[0].canary.checks[3].min: `min` 2 is above `max` 1",
        ] {
            assert!(errors.contains(part), "{part} missing in:\n{errors}");
        }
    }

    #[test]
    fn blue_green_on_a_preview_host_is_a_host_step_then_one_switch() {
        let text = r#"
services:
  - name: qotm
    command: serin-demo
    canary:
      blueGreen: {previewHost: Preview.QOTM.local}
    versions:
      - {name: v1, args: [qotm]}
"#;
        let stack = serin_config::stack::parse_stack(text, "stack.yaml", std::path::Path::new("."))
            .unwrap();
        let s = Options::from(stack.services[0].canary.as_ref().unwrap())
            .resolve()
            .unwrap();
        assert_eq!(s.steps, BLUE_GREEN_STEPS);
        let m = s.first_step.unwrap();
        assert_eq!(
            (m.kind, m.name.as_str(), m.value.as_str()),
            (MatchKind::Host, HOST_STEP_NAME, "preview.qotm.local")
        );
        assert_eq!(m.to_string(), "preview.qotm.local");

        let bad = r#"
services:
  - name: qotm
    command: serin-demo
    canary:
      blueGreen: {previewHost: '*.qotm.local'}
  - name: cart
    command: serin-demo
    canary:
      blueGreen: {previewHeader: x-preview=1, previewHost: preview.cart.local}
  - name: shop
    command: serin-demo
    canary:
      blueGreen: {previewHost: 'shop.local:8080'}
"#;
        let errors = serin_config::stack::parse_stack(bad, "stack.yaml", std::path::Path::new("."))
            .unwrap_err()
            .to_string();
        for part in [
            "stack.yaml:6:32: services[0].canary.blueGreen.previewHost: `*.qotm.local` is a \
             wildcard",
            "stack.yaml:10:60: services[1].canary.blueGreen.previewHost: `blueGreen` previews on \
             `previewHeader` or `previewHost`, not both",
            "stack.yaml:14:32: services[2].canary.blueGreen.previewHost: `shop.local:8080` has a \
             port",
        ] {
            assert!(errors.contains(part), "{part} missing in:\n{errors}");
        }
    }

    #[test]
    fn a_host_step_from_the_api_is_one_host_and_the_only_match_step() {
        let r = StartRequest::from_json(serde_json::json!({
            "to": "v2", "host_step": "preview.qotm.local",
        }))
        .unwrap();
        let m = r.options.resolve().unwrap().first_step.unwrap();
        assert_eq!(
            (m.kind, m.value.as_str()),
            (MatchKind::Host, "preview.qotm.local")
        );

        type Case<'a> = (&'a str, serde_json::Value, &'a str);
        let cases: [Case; 3] = [
            (
                "beside a cookie step",
                serde_json::json!({"to": "v2", "host_step": "p.local", "cookie_step": "c=1"}),
                "cookie_step and host_step: a canary has one match step",
            ),
            (
                "beside a header step",
                serde_json::json!({"to": "v2", "host_step": "p.local", "header_step": "x=1"}),
                "header_step and host_step: a canary has one match step",
            ),
            (
                "with a port",
                serde_json::json!({"to": "v2", "host_step": "p.local:80"}),
                "host_step: `p.local:80` has a port",
            ),
        ];
        for (name, body, want) in cases {
            let e = StartRequest::from_json(body)
                .unwrap()
                .options
                .resolve()
                .unwrap_err()
                .to_string();
            assert!(e.contains(want), "{name}: {e}");
        }

        // A host step given at start replaces the service's header step:
        // the match steps are one setting.
        let service = Options {
            header_step: Some("x-preview=1".into()),
            ..Options::default()
        };
        let given = Options {
            host_step: Some("preview.qotm.local".into()),
            ..Options::default()
        };
        let s = given.or(&service).resolve().unwrap();
        assert_eq!(s.first_step.map(|m| m.kind), Some(MatchKind::Host));
    }
}
