//! The vocabulary of a canary's checks, shared by the stack file's
//! `canary.checks`, `serin canary start --check` and the admin API: the
//! figures serin measures itself, PromQL templates and their placeholders,
//! and one check as written (a name, a source, a range). What a check
//! *means* for a window is serin-canary's.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// What a PromQL template may name: `{{service}}`, `{{version}}` (the
/// version being measured), `{{interval}}` (the window, e.g. `30s`) and
/// `{{namespace}}` (Kubernetes'; `default` outside a cluster).
pub const TEMPLATE_PLACEHOLDERS: [&str; 4] = ["service", "version", "interval", "namespace"];

/// `{{namespace}}` outside a cluster: the namespace Kubernetes itself puts
/// objects in when none is named.
pub const DEFAULT_NAMESPACE: &str = "default";

/// A figure serin measures for each version over a window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Measure {
    /// Requests answered in the window (a count).
    Requests,
    /// Requests per second.
    RequestRate,
    /// The share (0 to 1) of answers with a 4xx status.
    ErrorShare4xx,
    /// The share (0 to 1) of answers with a 5xx status.
    ErrorShare5xx,
    /// Latency percentiles to response headers, in seconds.
    P50,
    P90,
    P99,
}

impl Measure {
    pub const ALL: [Measure; 7] = [
        Self::Requests,
        Self::RequestRate,
        Self::ErrorShare4xx,
        Self::ErrorShare5xx,
        Self::P50,
        Self::P90,
        Self::P99,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Requests => "requests",
            Self::RequestRate => "requestRate",
            Self::ErrorShare4xx => "errorShare4xx",
            Self::ErrorShare5xx => "errorShare5xx",
            Self::P50 => "p50",
            Self::P90 => "p90",
            Self::P99 => "p99",
        }
    }

    /// A latency percentile (in seconds)?
    pub fn is_latency(self) -> bool {
        matches!(self, Self::P50 | Self::P90 | Self::P99)
    }
}

/// A figure of the canary, or (`ratio`) the canary's over the baseline's:
/// `p99`, `p99Ratio`, `errorShare4xx`, ...
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Figure {
    pub measure: Measure,
    pub ratio: bool,
}

impl Figure {
    /// Every figure's name, for error messages and docs.
    pub fn names() -> Vec<String> {
        Measure::ALL
            .iter()
            .flat_map(|m| {
                [
                    Figure {
                        measure: *m,
                        ratio: false,
                    },
                    Figure {
                        measure: *m,
                        ratio: true,
                    },
                ]
            })
            .map(|f| f.to_string())
            .collect()
    }
}

impl fmt::Display for Figure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.measure.as_str())?;
        if self.ratio {
            f.write_str("Ratio")?;
        }
        Ok(())
    }
}

impl FromStr for Figure {
    type Err = CheckError;
    fn from_str(s: &str) -> Result<Self, CheckError> {
        let (base, ratio) = match s.strip_suffix("Ratio") {
            Some(b) => (b, true),
            None => (s, false),
        };
        Measure::ALL
            .iter()
            .find(|m| m.as_str() == base)
            .map(|m| Figure { measure: *m, ratio })
            .ok_or_else(|| CheckError::UnknownFigure(s.to_string()))
    }
}

impl TryFrom<String> for Figure {
    type Error = CheckError;
    fn try_from(s: String) -> Result<Self, CheckError> {
        s.parse()
    }
}

impl From<Figure> for String {
    fn from(f: Figure) -> String {
        f.to_string()
    }
}

/// Where a check's value comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum CheckSource {
    /// One of serin's own figures of the canary (from serin's counters, or
    /// from Prometheus when the canary asks it).
    Figure(Figure),
    /// A PromQL template, run in Prometheus for the canary version at the
    /// end of each window; it must give one number.
    Promql(String),
}

/// One named check: its value must stay within `min` and `max` (both
/// inclusive; at least one is given). As JSON: `{"name": "p90", "figure":
/// "p90Ratio", "max": 2}` or `{"name": "...", "promql": "...", "min": 0}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "WrittenCheck", into = "WrittenCheck")]
pub struct CanaryCheck {
    pub name: String,
    pub source: CheckSource,
    pub min: Option<f64>,
    pub max: Option<f64>,
}

/// A check as JSON writes it: one key per source, so that a misspelt key
/// is refused rather than ignored.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct WrittenCheck {
    name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    figure: Option<Figure>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    promql: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    min: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    max: Option<f64>,
}

impl TryFrom<WrittenCheck> for CanaryCheck {
    type Error = CheckError;
    fn try_from(w: WrittenCheck) -> Result<Self, CheckError> {
        let source = match (w.figure, w.promql) {
            (Some(f), None) => CheckSource::Figure(f),
            (None, Some(t)) => CheckSource::Promql(t),
            (Some(_), Some(_)) => return Err(CheckError::TwoSources),
            (None, None) => return Err(CheckError::NoSource),
        };
        Ok(CanaryCheck {
            name: w.name,
            source,
            min: w.min,
            max: w.max,
        })
    }
}

impl From<CanaryCheck> for WrittenCheck {
    fn from(c: CanaryCheck) -> Self {
        let (figure, promql) = match c.source {
            CheckSource::Figure(f) => (Some(f), None),
            CheckSource::Promql(t) => (None, Some(t)),
        };
        WrittenCheck {
            name: c.name,
            figure,
            promql,
            min: c.min,
            max: c.max,
        }
    }
}

// Bounds are checked finite by `check_range`, so equality is an
// equivalence (the stack model is `Eq`).
impl Eq for CanaryCheck {}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CheckError {
    #[error(
        "unknown placeholder `{{{{{name}}}}}` at character {at} of the template; the \
         placeholders are {{{{service}}}}, {{{{version}}}}, {{{{interval}}}} and \
         {{{{namespace}}}}"
    )]
    UnknownPlaceholder { name: String, at: usize },
    #[error("`{{{{` at character {at} of the template is not closed with `}}}}`")]
    UnclosedPlaceholder { at: usize },
    #[error("a PromQL template cannot be empty")]
    EmptyTemplate,
    #[error("unknown figure `{0}`; the figures are {names}", names = Figure::names().join(", "))]
    UnknownFigure(String),
    #[error("`{0}` is not a check name: use letters, digits, `-` and `_`, starting with a letter")]
    BadName(String),
    #[error("check `{0}` is given twice")]
    Duplicate(String),
    #[error("a check needs a range: `min`, `max` or both")]
    NoRange,
    #[error("`{0}` must be a finite number")]
    NotFinite(&'static str),
    #[error("`min` {min} is above `max` {max}: no value could pass")]
    EmptyRange { min: f64, max: f64 },
    #[error("a check takes `figure` or `promql`, not both")]
    TwoSources,
    #[error("a check needs a source: `figure: NAME` or `promql: TEMPLATE`")]
    NoSource,
    #[error(
        "`{0}` is not a check: write NAME=figure:FIGURE;max=X or NAME=promql:TEMPLATE;min=X;max=Y"
    )]
    BadFlag(String),
    #[error("`{0}` is not a bound: write a number such as 0.05, or a percent such as 5%")]
    BadBound(String),
}

/// Checks a PromQL template: every `{{...}}` is one of
/// [`TEMPLATE_PLACEHOLDERS`].
pub fn check_template(template: &str) -> Result<(), CheckError> {
    if template.trim().is_empty() {
        return Err(CheckError::EmptyTemplate);
    }
    let mut rest = template;
    let mut offset = 0;
    while let Some(open) = rest.find("{{") {
        let at = offset + open;
        let after = &rest[open + 2..];
        let close = after
            .find("}}")
            .ok_or(CheckError::UnclosedPlaceholder { at: at + 1 })?;
        let name = after[..close].trim();
        if !TEMPLATE_PLACEHOLDERS.contains(&name) {
            return Err(CheckError::UnknownPlaceholder {
                name: name.to_string(),
                at: at + 1,
            });
        }
        let consumed = open + 2 + close + 2;
        offset += consumed;
        rest = &rest[consumed..];
    }
    Ok(())
}

/// What the placeholders of a template become.
#[derive(Debug, Clone, Copy)]
pub struct TemplateValues<'a> {
    pub service: &'a str,
    pub version: &'a str,
    /// The window as PromQL writes it, e.g. `30s`.
    pub interval: &'a str,
    pub namespace: &'a str,
}

/// Fills in a template that [`check_template`] accepted (`{{ name }}` with
/// spaces too).
pub fn render_template(template: &str, v: &TemplateValues<'_>) -> String {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(open) = rest.find("{{") {
        out.push_str(&rest[..open]);
        let after = &rest[open + 2..];
        let Some(close) = after.find("}}") else {
            out.push_str(&rest[open..]);
            return out;
        };
        match after[..close].trim() {
            "service" => out.push_str(v.service),
            "version" => out.push_str(v.version),
            "interval" => out.push_str(v.interval),
            "namespace" => out.push_str(v.namespace),
            _ => out.push_str(&rest[open..open + 2 + close + 2]),
        }
        rest = &after[close + 2..];
    }
    out.push_str(rest);
    out
}

/// Checks a check's name: a letter, then letters, digits, `-` or `_` (it
/// becomes a Prometheus label value and a word on the command line).
pub fn check_name(name: &str) -> Result<(), CheckError> {
    let mut chars = name.chars();
    let ok = chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if ok {
        Ok(())
    } else {
        Err(CheckError::BadName(name.to_string()))
    }
}

/// Checks a range: at least one bound, both finite, `min <= max`.
pub fn check_range(min: Option<f64>, max: Option<f64>) -> Result<(), CheckError> {
    if min.is_none() && max.is_none() {
        return Err(CheckError::NoRange);
    }
    if min.is_some_and(|m| !m.is_finite()) {
        return Err(CheckError::NotFinite("min"));
    }
    if max.is_some_and(|m| !m.is_finite()) {
        return Err(CheckError::NotFinite("max"));
    }
    if let (Some(min), Some(max)) = (min, max)
        && min > max
    {
        return Err(CheckError::EmptyRange { min, max });
    }
    Ok(())
}

impl CanaryCheck {
    /// Every problem of this check on its own (names against each other
    /// are [`check_unique`]'s).
    pub fn problems(&self) -> Vec<CheckError> {
        let mut out = Vec::new();
        if let Err(e) = check_name(&self.name) {
            out.push(e);
        }
        if let CheckSource::Promql(t) = &self.source
            && let Err(e) = check_template(t)
        {
            out.push(e);
        }
        if let Err(e) = check_range(self.min, self.max) {
            out.push(e);
        }
        out
    }

    /// `[min, max]` as status shows it: `≤ 0.05`, `≥ 50`, `0.1 to 2`.
    pub fn range_text(&self) -> String {
        range_text(self.min, self.max)
    }
}

/// `≤ 0.05`, `≥ 50`, `0.1 to 2`.
pub fn range_text(min: Option<f64>, max: Option<f64>) -> String {
    match (min, max) {
        (Some(a), Some(b)) => format!("{a} to {b}"),
        (Some(a), None) => format!("≥ {a}"),
        (None, Some(b)) => format!("≤ {b}"),
        (None, None) => "any".into(),
    }
}

/// The first name given twice, if any.
pub fn check_unique<'a>(names: impl IntoIterator<Item = &'a str>) -> Result<(), CheckError> {
    let mut seen = std::collections::BTreeSet::new();
    for n in names {
        if !seen.insert(n) {
            return Err(CheckError::Duplicate(n.to_string()));
        }
    }
    Ok(())
}

/// A bound as typed: `0.05`, `2`, or `5%`.
pub fn parse_bound(s: &str) -> Result<f64, CheckError> {
    let t = s.trim();
    let value = match t.strip_suffix('%') {
        Some(n) => n.trim().parse::<f64>().map(|x| x / 100.0),
        None => t.parse::<f64>(),
    };
    value
        .ok()
        .filter(|x| x.is_finite())
        .ok_or_else(|| CheckError::BadBound(s.to_string()))
}

/// Reads `serin canary start --check`: `NAME=figure:FIGURE;max=X` or
/// `NAME=promql:TEMPLATE;min=X;max=Y`. The bounds are the `;min=` and
/// `;max=` parts at the end, so a template may hold `;` itself.
pub fn parse_check_flag(s: &str) -> Result<CanaryCheck, CheckError> {
    let bad = || CheckError::BadFlag(s.to_string());
    let (name, mut rest) = s.split_once('=').ok_or_else(bad)?;
    let (mut min, mut max) = (None, None);
    while let Some(cut) = rest.rfind(';') {
        let tail = rest[cut + 1..].trim();
        if let Some(v) = tail.strip_prefix("min=") {
            min = Some(parse_bound(v)?);
        } else if let Some(v) = tail.strip_prefix("max=") {
            max = Some(parse_bound(v)?);
        } else {
            break;
        }
        rest = &rest[..cut];
    }
    let source = if let Some(f) = rest.strip_prefix("figure:") {
        CheckSource::Figure(f.trim().parse()?)
    } else if let Some(t) = rest.strip_prefix("promql:") {
        CheckSource::Promql(t.to_string())
    } else {
        return Err(bad());
    };
    let check = CanaryCheck {
        name: name.trim().to_string(),
        source,
        min,
        max,
    };
    match check.problems().into_iter().next() {
        Some(e) => Err(e),
        None => Ok(check),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_are_checked() {
        let table: [(&str, Result<(), CheckError>); 7] = [
            (
                r#"sum(rate(x{service="{{service}}",version="{{version}}"}[{{interval}}]))"#,
                Ok(()),
            ),
            ("up{namespace=\"{{ namespace }}\"}", Ok(())),
            ("vector(1)", Ok(())),
            ("  ", Err(CheckError::EmptyTemplate)),
            (
                "x{a=\"{{srevice}}\"}",
                Err(CheckError::UnknownPlaceholder {
                    name: "srevice".into(),
                    at: 6,
                }),
            ),
            (
                "{{version}}{{x}}",
                Err(CheckError::UnknownPlaceholder {
                    name: "x".into(),
                    at: 12,
                }),
            ),
            (
                "x{a=\"{{version\"}",
                Err(CheckError::UnclosedPlaceholder { at: 6 }),
            ),
        ];
        for (template, want) in table {
            assert_eq!(check_template(template), want, "{template}");
        }
    }

    #[test]
    fn templates_are_filled_in() {
        let v = TemplateValues {
            service: "qotm",
            version: "v2",
            interval: "30s",
            namespace: "shop",
        };
        let table = [
            (
                r#"x{service="{{service}}",version="{{ version }}"}[{{interval}}]"#,
                r#"x{service="qotm",version="v2"}[30s]"#,
            ),
            ("{{namespace}}/{{service}}", "shop/qotm"),
            ("no placeholders", "no placeholders"),
            ("{{version}}{{version}}", "v2v2"),
            // Not a placeholder: left as it is (check_template refuses it).
            ("{{x}} {{version", "{{x}} {{version"),
        ];
        for (template, want) in table {
            assert_eq!(render_template(template, &v), want, "{template}");
        }
    }

    #[test]
    fn figures_by_name() {
        let table = [
            ("p99", Some((Measure::P99, false))),
            ("p99Ratio", Some((Measure::P99, true))),
            ("errorShare4xx", Some((Measure::ErrorShare4xx, false))),
            ("errorShare5xxRatio", Some((Measure::ErrorShare5xx, true))),
            ("requestRate", Some((Measure::RequestRate, false))),
            ("requests", Some((Measure::Requests, false))),
            ("p95", None),
            ("Ratio", None),
        ];
        for (name, want) in table {
            let got = name.parse::<Figure>().ok().map(|f| (f.measure, f.ratio));
            assert_eq!(got, want, "{name}");
            if let Some((measure, ratio)) = want {
                assert_eq!(Figure { measure, ratio }.to_string(), name);
            }
        }
        let e = "p95".parse::<Figure>().unwrap_err().to_string();
        assert!(e.contains("p90Ratio"), "{e}");
    }

    #[test]
    fn check_flags() {
        let c = parse_check_flag("not-found=promql:sum(x{a=\"b;c\"});max=0").unwrap();
        assert_eq!(c.name, "not-found");
        assert_eq!(c.source, CheckSource::Promql("sum(x{a=\"b;c\"})".into()));
        assert_eq!((c.min, c.max), (None, Some(0.0)));
        let c = parse_check_flag("p90=figure:p90Ratio;min=0.5;max=2").unwrap();
        assert_eq!(
            c.source,
            CheckSource::Figure(Figure {
                measure: Measure::P90,
                ratio: true
            })
        );
        assert_eq!((c.min, c.max), (Some(0.5), Some(2.0)));
        let c = parse_check_flag("e4=figure:errorShare4xx;max=5%").unwrap();
        assert_eq!(c.max, Some(0.05));
        for (flag, part) in [
            ("nothing", "is not a check"),
            ("x=figure:p95;max=1", "unknown figure `p95`"),
            ("x=sql:select;max=1", "is not a check"),
            ("x=figure:p99", "needs a range"),
            ("x=figure:p99;max=lots", "`lots` is not a bound"),
            ("x=figure:p99;min=2;max=1", "above `max`"),
            ("9x=figure:p99;max=1", "not a check name"),
            (
                "x=promql:up{a=\"{{pod}}\"};max=1",
                "unknown placeholder `{{pod}}`",
            ),
        ] {
            let e = parse_check_flag(flag).unwrap_err().to_string();
            assert!(e.contains(part), "{flag}: {part} not in {e}");
        }
    }

    #[test]
    fn checks_as_json() {
        let c: CanaryCheck =
            serde_json::from_value(serde_json::json!({"name": "p", "figure": "p99", "max": 0.2}))
                .unwrap();
        assert_eq!(
            c.source.clone(),
            CheckSource::Figure("p99".parse().unwrap())
        );
        assert_eq!(
            serde_json::to_value(&c).unwrap(),
            serde_json::json!({"name": "p", "figure": "p99", "max": 0.2})
        );
        let e = serde_json::from_value::<CanaryCheck>(
            serde_json::json!({"name": "p", "figure": "p95", "max": 1}),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("unknown figure"), "{e}");
        for (body, part) in [
            (
                serde_json::json!({"name": "p", "figure": "p99", "mx": 1}),
                "unknown field `mx`",
            ),
            (serde_json::json!({"name": "p", "max": 1}), "needs a source"),
            (
                serde_json::json!({"name": "p", "figure": "p99", "promql": "up", "max": 1}),
                "not both",
            ),
        ] {
            let e = serde_json::from_value::<CanaryCheck>(body)
                .unwrap_err()
                .to_string();
            assert!(e.contains(part), "{part} not in {e}");
        }
        assert_eq!(
            check_unique(["a", "b", "a"]),
            Err(CheckError::Duplicate("a".into()))
        );
    }
}
