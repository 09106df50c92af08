//! The Prometheus metrics source: PromQL over Prometheus' HTTP API
//! (`/api/v1/query`), for when the figures should come from what the team
//! already watches (several proxies, a cluster) rather than from this
//! process.
//!
//! Six templated queries give serin's figures, each run for the canary and
//! for the baseline at the end of a window; `{{service}}`, `{{version}}`,
//! `{{interval}}` (the window, e.g. `30s`) and `{{namespace}}` are filled
//! in:
//!
//! - `requests`: how many requests the version answered in the window;
//! - `error_rate`: the share of them that were 5xx (0 to 1);
//! - `client_error_rate`: the share that were 4xx;
//! - `latency_p50`, `latency_p90`, `latency_p99`: percentiles of latency,
//!   in seconds.
//!
//! A canary's PromQL checks are run here too, for the canary version.
//!
//! Each must give one number (a scalar, or a vector of one series; no
//! series at all counts as none). The built-in ones read serin's own
//! metrics, `serin_requests_total` and `serin_request_duration_seconds`.
//! Prometheus only knows what it scraped, so the interval should span
//! several scrapes.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use serin_config::stack::canary_check::{
    DEFAULT_NAMESPACE, TemplateValues, check_template, render_template,
};

use crate::analysis::{VersionFigures, WindowFigures};
use crate::check::QueriedValue;
use crate::source::{BoxFuture, MetricsSource, QueryView, SourceError, Target};

pub const DEFAULT_REQUESTS_QUERY: &str = r#"sum(increase(serin_requests_total{service="{{service}}",version="{{version}}"}[{{interval}}]))"#;
pub const DEFAULT_ERROR_RATE_QUERY: &str = r#"(sum(increase(serin_requests_total{service="{{service}}",version="{{version}}",code=~"5.."}[{{interval}}])) or vector(0)) / sum(increase(serin_requests_total{service="{{service}}",version="{{version}}"}[{{interval}}]))"#;
pub const DEFAULT_CLIENT_ERROR_RATE_QUERY: &str = r#"(sum(increase(serin_requests_total{service="{{service}}",version="{{version}}",code=~"4.."}[{{interval}}])) or vector(0)) / sum(increase(serin_requests_total{service="{{service}}",version="{{version}}"}[{{interval}}]))"#;
pub const DEFAULT_LATENCY_P50_QUERY: &str = r#"histogram_quantile(0.5, sum by (le) (rate(serin_request_duration_seconds_bucket{service="{{service}}",version="{{version}}"}[{{interval}}])))"#;
pub const DEFAULT_LATENCY_P90_QUERY: &str = r#"histogram_quantile(0.9, sum by (le) (rate(serin_request_duration_seconds_bucket{service="{{service}}",version="{{version}}"}[{{interval}}])))"#;
pub const DEFAULT_LATENCY_P99_QUERY: &str = r#"histogram_quantile(0.99, sum by (le) (rate(serin_request_duration_seconds_bucket{service="{{service}}",version="{{version}}"}[{{interval}}])))"#;

/// The names of the templates, as `--query NAME=PROMQL` takes them.
pub const QUERY_NAMES: [&str; 6] = [
    "requests",
    "error_rate",
    "client_error_rate",
    "latency_p50",
    "latency_p90",
    "latency_p99",
];

/// How long one query may take.
const QUERY_TIMEOUT: Duration = Duration::from_secs(10);

/// The PromQL templates of a canary.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Queries {
    pub requests: String,
    pub error_rate: String,
    /// Absent in a state saved before it existed: the built-in one.
    #[serde(default = "default_client_error_rate")]
    pub client_error_rate: String,
    #[serde(default = "default_latency_p50")]
    pub latency_p50: String,
    #[serde(default = "default_latency_p90")]
    pub latency_p90: String,
    pub latency_p99: String,
}

fn default_client_error_rate() -> String {
    DEFAULT_CLIENT_ERROR_RATE_QUERY.into()
}

fn default_latency_p50() -> String {
    DEFAULT_LATENCY_P50_QUERY.into()
}

fn default_latency_p90() -> String {
    DEFAULT_LATENCY_P90_QUERY.into()
}

impl Default for Queries {
    fn default() -> Self {
        Self {
            requests: DEFAULT_REQUESTS_QUERY.into(),
            error_rate: DEFAULT_ERROR_RATE_QUERY.into(),
            client_error_rate: default_client_error_rate(),
            latency_p50: default_latency_p50(),
            latency_p90: default_latency_p90(),
            latency_p99: DEFAULT_LATENCY_P99_QUERY.into(),
        }
    }
}

impl Queries {
    /// These templates with some replaced by name (`requests`,
    /// `error_rate`, `client_error_rate`, `latency_p50`, `latency_p90`,
    /// `latency_p99`; the stack file's camelCase names are accepted too).
    pub fn with_overrides(mut self, overrides: &BTreeMap<String, String>) -> Result<Self, String> {
        for (name, template) in overrides {
            if template.trim().is_empty() {
                return Err(format!("the `{name}` template is empty"));
            }
            check_template(template).map_err(|e| format!("the `{name}` template: {e}"))?;
            let slot = match name.as_str() {
                "requests" => &mut self.requests,
                "error_rate" | "errorRate" => &mut self.error_rate,
                "client_error_rate" | "clientErrorRate" => &mut self.client_error_rate,
                "latency_p50" | "latencyP50" => &mut self.latency_p50,
                "latency_p90" | "latencyP90" => &mut self.latency_p90,
                "latency_p99" | "latencyP99" => &mut self.latency_p99,
                other => {
                    return Err(format!(
                        "unknown query `{other}`: the templates are {}",
                        QUERY_NAMES.join(", ")
                    ));
                }
            };
            *slot = template.clone();
        }
        Ok(self)
    }

    /// Each template and what it becomes for both versions of `target`.
    pub fn views(&self, target: &Target, window: Duration) -> BTreeMap<String, QueryView> {
        self.named()
            .into_iter()
            .map(|(name, t)| {
                (
                    name.to_string(),
                    QueryView {
                        template: t.to_string(),
                        canary: render(t, &target.service, &target.canary, window),
                        baseline: render(t, &target.service, &target.baseline, window),
                    },
                )
            })
            .collect()
    }

    fn named(&self) -> [(&'static str, &str); 6] {
        [
            (QUERY_NAMES[0], &self.requests),
            (QUERY_NAMES[1], &self.error_rate),
            (QUERY_NAMES[2], &self.client_error_rate),
            (QUERY_NAMES[3], &self.latency_p50),
            (QUERY_NAMES[4], &self.latency_p90),
            (QUERY_NAMES[5], &self.latency_p99),
        ]
    }
}

/// A window length as PromQL writes it: `30s`, or `1500ms`.
pub fn promql_duration(d: Duration) -> String {
    let ms = d.as_millis().max(1);
    if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

/// Fills in a template, outside a cluster (`{{namespace}}` is
/// [`DEFAULT_NAMESPACE`]).
pub fn render(template: &str, service: &str, version: &str, window: Duration) -> String {
    render_in(template, service, version, window, DEFAULT_NAMESPACE)
}

/// Fills in a template for a version of a service in `namespace`.
pub fn render_in(
    template: &str,
    service: &str,
    version: &str,
    window: Duration,
    namespace: &str,
) -> String {
    render_template(
        template,
        &TemplateValues {
            service,
            version,
            interval: &promql_duration(window),
            namespace,
        },
    )
}

pub struct PrometheusSource {
    url: String,
    queries: Queries,
    /// What `{{namespace}}` becomes.
    namespace: String,
    http: reqwest::Client,
}

impl PrometheusSource {
    pub fn new(url: &str, queries: Queries) -> Result<Self, SourceError> {
        Self::in_namespace(url, queries, DEFAULT_NAMESPACE)
    }

    /// A source whose templates' `{{namespace}}` is `namespace`.
    pub fn in_namespace(url: &str, queries: Queries, namespace: &str) -> Result<Self, SourceError> {
        let http = serin_config::http_client::builder()
            .map_err(|e| SourceError::Other(e.to_string()))?
            .no_proxy()
            .timeout(QUERY_TIMEOUT)
            .build()
            .map_err(|e| SourceError::Other(format!("HTTP client: {e}")))?;
        Ok(Self {
            url: url.trim_end_matches('/').to_string(),
            queries,
            namespace: namespace.to_string(),
            http,
        })
    }

    fn error(&self, message: impl Into<String>) -> SourceError {
        SourceError::Prometheus {
            url: self.url.clone(),
            message: message.into(),
        }
    }

    /// Runs an instant query; `None` when it gives no series or NaN.
    async fn query(&self, promql: &str) -> Result<Option<f64>, SourceError> {
        let body = form_urlencoded::Serializer::new(String::new())
            .append_pair("query", promql)
            .finish();
        let resp = self
            .http
            .post(format!("{}/api/v1/query", self.url))
            .header(
                reqwest::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .body(body)
            .send()
            .await
            .map_err(|e| self.error(e.to_string()))?;
        let status = resp.status();
        let text = resp.text().await.map_err(|e| self.error(e.to_string()))?;
        let v: Value = serde_json::from_str(&text)
            .map_err(|_| self.error(format!("HTTP {status}, not JSON: {text:.200}")))?;
        if v["status"] != "success" {
            return Err(self.error(format!(
                "query `{promql}` failed: {}",
                v["error"].as_str().unwrap_or(&text)
            )));
        }
        let sample = |pair: &Value| -> Option<f64> {
            pair.get(1)?
                .as_str()?
                .parse::<f64>()
                .ok()
                .filter(|x| x.is_finite())
        };
        let data = &v["data"];
        match data["resultType"].as_str() {
            Some("scalar") => Ok(sample(&data["result"])),
            Some("vector") => {
                let series = data["result"].as_array().map_or(&[][..], Vec::as_slice);
                match series {
                    [] => Ok(None),
                    [one] => Ok(sample(&one["value"])),
                    many => Err(self.error(format!(
                        "query `{promql}` gave {} series; aggregate it to one, e.g. with sum(...)",
                        many.len()
                    ))),
                }
            }
            other => Err(self.error(format!(
                "query `{promql}` gave a {}, not a number",
                other.unwrap_or("nothing")
            ))),
        }
    }

    async fn version(
        &self,
        service: &str,
        version: &str,
        window: Duration,
    ) -> Result<VersionFigures, SourceError> {
        let run = |t: &str| render_in(t, service, version, window, &self.namespace);
        let q = &self.queries;
        let requests = self.query(&run(&q.requests)).await?;
        let error_rate = self.query(&run(&q.error_rate)).await?;
        let client_error_rate = self.query(&run(&q.client_error_rate)).await?;
        let p50 = self.query(&run(&q.latency_p50)).await?;
        let p90 = self.query(&run(&q.latency_p90)).await?;
        let p99 = self.query(&run(&q.latency_p99)).await?;
        // `increase` extrapolates to the window's edges: round to whole
        // requests.
        let requests = requests.unwrap_or(0.0).max(0.0).round() as u64;
        let error_rate = error_rate.unwrap_or(0.0).clamp(0.0, 1.0);
        let errors = (error_rate * requests as f64).round() as u64;
        let client_error_rate = client_error_rate.unwrap_or(0.0).clamp(0.0, 1.0);
        let client_errors = (client_error_rate * requests as f64).round() as u64;
        let with_requests = |p: Option<f64>| p.filter(|_| requests > 0);
        let mut f = VersionFigures::new(version, requests, errors, with_requests(p99))
            .with_client_errors(client_errors)
            .with_latencies(with_requests(p50), with_requests(p90));
        // Keep Prometheus' own rates rather than the rounded ones.
        if requests > 0 {
            f.error_rate = error_rate;
            f.client_error_rate = client_error_rate;
        }
        Ok(f)
    }
}

impl MetricsSource for PrometheusSource {
    fn kind(&self) -> &'static str {
        "prometheus"
    }

    fn begin<'a>(&'a self, _target: &'a Target) -> BoxFuture<'a, Result<(), SourceError>> {
        Box::pin(async { Ok(()) })
    }

    fn end<'a>(
        &'a self,
        target: &'a Target,
        window: Duration,
    ) -> BoxFuture<'a, Result<WindowFigures, SourceError>> {
        Box::pin(async move {
            Ok(WindowFigures {
                canary: self
                    .version(&target.service, &target.canary, window)
                    .await?,
                baseline: self
                    .version(&target.service, &target.baseline, window)
                    .await?,
            })
        })
    }

    fn queries(&self, target: &Target, window: Duration) -> BTreeMap<String, QueryView> {
        self.queries.views(target, window)
    }

    fn run_checks<'a>(
        &'a self,
        target: &'a Target,
        window: Duration,
        checks: &'a [(String, String)],
    ) -> BoxFuture<'a, BTreeMap<String, QueriedValue>> {
        Box::pin(async move {
            let mut out = BTreeMap::new();
            for (name, template) in checks {
                let query = render_in(
                    template,
                    &target.service,
                    &target.canary,
                    window,
                    &self.namespace,
                );
                let value = self.query(&query).await.map_err(|e| e.to_string());
                out.insert(name.clone(), QueriedValue { query, value });
            }
            out
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_are_filled_in() {
        let q = render(
            DEFAULT_REQUESTS_QUERY,
            "qotm",
            "v2",
            Duration::from_millis(1500),
        );
        assert_eq!(
            q,
            r#"sum(increase(serin_requests_total{service="qotm",version="v2"}[1500ms]))"#
        );
        assert_eq!(promql_duration(Duration::from_secs(30)), "30s");
    }

    #[test]
    fn overrides_by_name() {
        let q = Queries::default()
            .with_overrides(&BTreeMap::from([("errorRate".into(), "vector(0)".into())]))
            .unwrap();
        assert_eq!(q.error_rate, "vector(0)");
        assert_eq!(q.requests, DEFAULT_REQUESTS_QUERY);
        assert!(
            Queries::default()
                .with_overrides(&BTreeMap::from([("p99".into(), "x".into())]))
                .is_err()
        );
    }
}
