//! The Prometheus metrics source: PromQL over Prometheus' HTTP API
//! (`/api/v1/query`), for when the figures should come from what the team
//! already watches (several proxies, a cluster) rather than from this
//! process.
//!
//! Three templated queries, each run for the canary and for the baseline at
//! the end of a window; `{{service}}`, `{{version}}` and `{{interval}}` (the
//! window, e.g. `30s`) are filled in:
//!
//! - `requests`: how many requests the version answered in the window;
//! - `error_rate`: the share of them that were 5xx (0 to 1);
//! - `latency_p99`: the 99th percentile of latency, in seconds.
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

use crate::analysis::{VersionFigures, WindowFigures};
use crate::source::{BoxFuture, MetricsSource, QueryView, SourceError, Target};

pub const DEFAULT_REQUESTS_QUERY: &str = r#"sum(increase(serin_requests_total{service="{{service}}",version="{{version}}"}[{{interval}}]))"#;
pub const DEFAULT_ERROR_RATE_QUERY: &str = r#"(sum(increase(serin_requests_total{service="{{service}}",version="{{version}}",code=~"5.."}[{{interval}}])) or vector(0)) / sum(increase(serin_requests_total{service="{{service}}",version="{{version}}"}[{{interval}}]))"#;
pub const DEFAULT_LATENCY_P99_QUERY: &str = r#"histogram_quantile(0.99, sum by (le) (rate(serin_request_duration_seconds_bucket{service="{{service}}",version="{{version}}"}[{{interval}}])))"#;

/// How long one query may take.
const QUERY_TIMEOUT: Duration = Duration::from_secs(10);

/// The PromQL templates of a canary.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Queries {
    pub requests: String,
    pub error_rate: String,
    pub latency_p99: String,
}

impl Default for Queries {
    fn default() -> Self {
        Self {
            requests: DEFAULT_REQUESTS_QUERY.into(),
            error_rate: DEFAULT_ERROR_RATE_QUERY.into(),
            latency_p99: DEFAULT_LATENCY_P99_QUERY.into(),
        }
    }
}

impl Queries {
    /// These templates with some replaced by name (`requests`,
    /// `error_rate`, `latency_p99`; the stack file's `errorRate` and
    /// `latencyP99` are accepted too).
    pub fn with_overrides(mut self, overrides: &BTreeMap<String, String>) -> Result<Self, String> {
        for (name, template) in overrides {
            if template.trim().is_empty() {
                return Err(format!("the `{name}` template is empty"));
            }
            match name.as_str() {
                "requests" => self.requests = template.clone(),
                "error_rate" | "errorRate" => self.error_rate = template.clone(),
                "latency_p99" | "latencyP99" => self.latency_p99 = template.clone(),
                other => {
                    return Err(format!(
                        "unknown query `{other}`: the templates are requests, error_rate and \
                         latency_p99"
                    ));
                }
            }
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

    fn named(&self) -> [(&'static str, &str); 3] {
        [
            ("requests", &self.requests),
            ("error_rate", &self.error_rate),
            ("latency_p99", &self.latency_p99),
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

/// Fills in a template.
pub fn render(template: &str, service: &str, version: &str, window: Duration) -> String {
    template
        .replace("{{service}}", service)
        .replace("{{version}}", version)
        .replace("{{interval}}", &promql_duration(window))
}

pub struct PrometheusSource {
    url: String,
    queries: Queries,
    http: reqwest::Client,
}

impl PrometheusSource {
    pub fn new(url: &str, queries: Queries) -> Result<Self, SourceError> {
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(QUERY_TIMEOUT)
            .build()
            .map_err(|e| SourceError::Other(format!("HTTP client: {e}")))?;
        Ok(Self {
            url: url.trim_end_matches('/').to_string(),
            queries,
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
        let run = |t: &str| render(t, service, version, window);
        let requests = self.query(&run(&self.queries.requests)).await?;
        let error_rate = self.query(&run(&self.queries.error_rate)).await?;
        let p99 = self.query(&run(&self.queries.latency_p99)).await?;
        // `increase` extrapolates to the window's edges: round to whole
        // requests.
        let requests = requests.unwrap_or(0.0).max(0.0).round() as u64;
        let error_rate = error_rate.unwrap_or(0.0).clamp(0.0, 1.0);
        let errors = (error_rate * requests as f64).round() as u64;
        let mut f = VersionFigures::new(version, requests, errors, p99.filter(|_| requests > 0));
        // Keep Prometheus' own rate rather than the rounded one.
        f.error_rate = if requests == 0 { 0.0 } else { error_rate };
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
