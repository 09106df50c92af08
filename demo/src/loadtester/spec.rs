//! What one webhook call asks the load tester for: the call's `metadata`
//! read into a bounded [`LoadSpec`] (or a stop), every bad key named.

use std::collections::BTreeMap;
use std::time::Duration;

use reqwest::Method;
use reqwest::header::{HeaderName, HeaderValue};
use serde::Deserialize;
use serde_json::Value;

/// Requests per second when `rate` is not given: what Flagger's load-tester
/// examples use (`hey -q 10`), enough for a canary window of 30 s to reach
/// serin's default `minRequests` (50) at a 20 % step.
pub const DEFAULT_RATE: f64 = 10.0;

/// The most `rate` may ask for. The tester exercises a canary; it is not a
/// benchmark, and a typo (`rate: 100000`) must not flood a shared stack.
pub const MAX_RATE: f64 = 1000.0;

/// How long a load runs when `duration` is not given: Flagger's examples'
/// `-z 1m`, longer than one window (30 s by default), and renewed by every
/// `rollout` call, so a canary's windows never go without load.
pub const DEFAULT_DURATION: Duration = Duration::from_secs(60);

/// The longest `duration`: a load outlives the canary that started it only
/// this long if nothing stops it.
pub const MAX_DURATION: Duration = Duration::from_secs(600);

/// Requests in flight at once when `concurrency` is not given (`hey -c 4`):
/// a slow target is not answered by ever more connections.
pub const DEFAULT_CONCURRENCY: usize = 4;

/// The most `concurrency` may ask for.
pub const MAX_CONCURRENCY: usize = 64;

/// How long one request may take when `timeout` is not given; a request
/// with no answer by then counts as failed.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// The share of a waiting test's requests that may fail when
/// `maxErrorRate` is not given: none, as a smoke test expects.
pub const DEFAULT_MAX_ERROR_RATE: f64 = 0.0;

/// The metadata keys the tester reads (`header.NAME` besides).
const KEYS: &[&str] = &[
    "url",
    "method",
    "rate",
    "duration",
    "concurrency",
    "timeout",
    "wait",
    "maxErrorRate",
    "stop",
];

/// One load: requests to `url` at `rate` per second for `duration`.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadSpec {
    pub url: reqwest::Url,
    pub method: Method,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub rate: f64,
    pub duration: Duration,
    pub concurrency: usize,
    pub timeout: Duration,
    /// The call waits for the load's end and answers its verdict (a smoke
    /// or load test as a gate), instead of answering at once.
    pub wait: bool,
    /// With `wait`: the share of requests that may fail (5xx or no answer)
    /// for the test to pass.
    pub max_error_rate: f64,
}

/// What a call asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum Ask {
    Start(Box<LoadSpec>),
    /// `stop: "true"`: end every load of the call's service.
    Stop,
}

/// A metadata key the tester cannot use.
#[derive(Debug, PartialEq, thiserror::Error)]
pub enum SpecError {
    #[error("metadata has no `url`: the address to send the load to (http://HOST:PORT/PATH)")]
    NoUrl,
    #[error("metadata `{key}`: `{value}` {why}")]
    Bad {
        key: String,
        value: String,
        why: String,
    },
    #[error("metadata `{key}` is not a key the load tester reads (it reads {known}, header.NAME)")]
    Unknown { key: String, known: String },
}

fn bad(key: &str, value: &str, why: impl Into<String>) -> SpecError {
    SpecError::Bad {
        key: key.to_string(),
        value: value.to_string(),
        why: why.into(),
    }
}

/// The part of a canary's webhook body (serin's or Flagger's) the tester
/// reads; everything else in it is ignored.
#[derive(Debug, Default, Deserialize)]
pub struct HookCall {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub service: String,
    #[serde(default)]
    pub metadata: BTreeMap<String, Value>,
}

impl HookCall {
    /// The load this call owns: one per service and webhook, so the
    /// `rollout` call of each window renews its own load instead of adding
    /// one.
    pub fn key(&self) -> String {
        format!("{}/{}", self.service, self.name)
    }

    /// The metadata as text: a number or a boolean given over the API is
    /// read as it is written.
    fn text(&self) -> Result<BTreeMap<&str, String>, SpecError> {
        self.metadata
            .iter()
            .map(|(k, v)| {
                let text = match v {
                    Value::String(s) => s.clone(),
                    Value::Number(n) => n.to_string(),
                    Value::Bool(b) => b.to_string(),
                    other => {
                        return Err(bad(
                            k,
                            &other.to_string(),
                            "is not a text, number or boolean",
                        ));
                    }
                };
                Ok((k.as_str(), text))
            })
            .collect()
    }

    /// What this call asks for.
    pub fn ask(&self) -> Result<Ask, SpecError> {
        let meta = self.text()?;
        for key in meta.keys() {
            if !KEYS.contains(key) && !key.starts_with("header.") {
                return Err(SpecError::Unknown {
                    key: key.to_string(),
                    known: KEYS.join(", "),
                });
            }
        }
        if let Some(stop) = meta.get("stop")
            && flag("stop", stop)?
        {
            return Ok(Ask::Stop);
        }
        let url = meta.get("url").ok_or(SpecError::NoUrl)?;
        Ok(Ask::Start(Box::new(LoadSpec {
            url: url_of(url)?,
            method: match meta.get("method") {
                None => Method::GET,
                Some(m) => Method::from_bytes(m.trim().to_ascii_uppercase().as_bytes())
                    .map_err(|_| bad("method", m, "is not an HTTP method"))?,
            },
            headers: headers(&meta)?,
            rate: bounded_number("rate", meta.get("rate"), DEFAULT_RATE, MAX_RATE)?,
            duration: duration(
                "duration",
                meta.get("duration"),
                DEFAULT_DURATION,
                MAX_DURATION,
            )?,
            concurrency: bounded_number(
                "concurrency",
                meta.get("concurrency"),
                DEFAULT_CONCURRENCY as f64,
                MAX_CONCURRENCY as f64,
            )
            .and_then(|n| whole("concurrency", n))?,
            timeout: duration(
                "timeout",
                meta.get("timeout"),
                DEFAULT_REQUEST_TIMEOUT,
                MAX_DURATION,
            )?,
            wait: meta.get("wait").map_or(Ok(false), |w| flag("wait", w))?,
            max_error_rate: meta
                .get("maxErrorRate")
                .map_or(Ok(DEFAULT_MAX_ERROR_RATE), |r| share("maxErrorRate", r))?,
        })))
    }
}

fn url_of(text: &str) -> Result<reqwest::Url, SpecError> {
    let url = reqwest::Url::parse(text.trim())
        .map_err(|e| bad("url", text, format!("is not a URL: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(bad("url", text, "is not an http:// or https:// URL"));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(bad("url", text, "names no host"));
    }
    Ok(url)
}

fn headers(meta: &BTreeMap<&str, String>) -> Result<Vec<(HeaderName, HeaderValue)>, SpecError> {
    meta.iter()
        .filter_map(|(k, v)| k.strip_prefix("header.").map(|name| (*k, name, v)))
        .map(|(key, name, value)| {
            let name = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| bad(key, value, "names no valid header"))?;
            let value = HeaderValue::from_str(value)
                .map_err(|_| bad(key, value, "is not a valid header value"))?;
            Ok((name, value))
        })
        .collect()
}

/// A number above 0 and at most `max`.
fn bounded_number(
    key: &str,
    given: Option<&String>,
    default: f64,
    max: f64,
) -> Result<f64, SpecError> {
    let Some(text) = given else {
        return Ok(default);
    };
    let n: f64 = text
        .trim()
        .parse()
        .map_err(|_| bad(key, text, "is not a number"))?;
    if !(n.is_finite() && n > 0.0) {
        return Err(bad(key, text, "must be above 0"));
    }
    if n > max {
        return Err(bad(
            key,
            text,
            format!("is above the most the load tester allows, {max}"),
        ));
    }
    Ok(n)
}

fn whole(key: &str, n: f64) -> Result<usize, SpecError> {
    if n.fract() != 0.0 {
        return Err(bad(key, &n.to_string(), "must be a whole number"));
    }
    Ok(n as usize)
}

fn duration(
    key: &str,
    given: Option<&String>,
    default: Duration,
    max: Duration,
) -> Result<Duration, SpecError> {
    let Some(text) = given else {
        return Ok(default);
    };
    let d = humantime::parse_duration(text.trim())
        .map_err(|e| bad(key, text, format!("is not a duration such as 30s: {e}")))?;
    if d.is_zero() {
        return Err(bad(key, text, "must be longer than 0"));
    }
    if d > max {
        return Err(bad(
            key,
            text,
            format!(
                "is longer than the load tester allows, {}",
                humantime::format_duration(max)
            ),
        ));
    }
    Ok(d)
}

fn flag(key: &str, text: &str) -> Result<bool, SpecError> {
    match text.trim() {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(bad(key, text, "is not true or false")),
    }
}

/// `5%` or `0.05`: a share from 0 to 1.
fn share(key: &str, text: &str) -> Result<f64, SpecError> {
    let t = text.trim();
    let n = match t.strip_suffix('%') {
        Some(p) => p.trim().parse::<f64>().map(|p| p / 100.0),
        None => t.parse::<f64>(),
    }
    .map_err(|_| bad(key, text, "is not a share such as 5% or 0.05"))?;
    if !(0.0..=1.0).contains(&n) {
        return Err(bad(key, text, "must be from 0 to 100%"));
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn call(metadata: Value) -> HookCall {
        serde_json::from_value(json!({"name": "load", "service": "qotm", "metadata": metadata}))
            .unwrap_or_else(|e| panic!("{e}"))
    }

    fn start(metadata: Value) -> LoadSpec {
        match call(metadata).ask() {
            Ok(Ask::Start(spec)) => *spec,
            other => panic!("not a start: {other:?}"),
        }
    }

    #[test]
    fn a_url_alone_takes_every_default() {
        let spec = start(json!({"url": "http://127.0.0.1:8080/qotm/"}));
        assert_eq!(spec.url.as_str(), "http://127.0.0.1:8080/qotm/");
        let spec = start(json!({"url": "https://qotm.example/"}));
        assert_eq!(spec.url.as_str(), "https://qotm.example/");
        assert_eq!(spec.method, Method::GET);
        assert_eq!(spec.rate, DEFAULT_RATE);
        assert_eq!(spec.duration, DEFAULT_DURATION);
        assert_eq!(spec.concurrency, DEFAULT_CONCURRENCY);
        assert_eq!(spec.timeout, DEFAULT_REQUEST_TIMEOUT);
        assert!(!spec.wait);
        assert_eq!(spec.max_error_rate, DEFAULT_MAX_ERROR_RATE);
        assert!(spec.headers.is_empty());
    }

    #[test]
    fn every_key_is_read_and_numbers_may_be_json_numbers() {
        let spec = start(json!({
            "url": "http://gateway:8080/x",
            "method": "post",
            "rate": 50,
            "duration": "2m",
            "concurrency": "8",
            "timeout": "500ms",
            "wait": true,
            "maxErrorRate": "5%",
            "header.x-preview": "1",
        }));
        assert_eq!(spec.method, Method::POST);
        assert_eq!(spec.rate, 50.0);
        assert_eq!(spec.duration, Duration::from_secs(120));
        assert_eq!(spec.concurrency, 8);
        assert_eq!(spec.timeout, Duration::from_millis(500));
        assert!(spec.wait);
        assert!((spec.max_error_rate - 0.05).abs() < 1e-12);
        assert_eq!(spec.headers.len(), 1);
        assert_eq!(spec.headers[0].0.as_str(), "x-preview");
        assert_eq!(spec.headers[0].1, "1");
    }

    #[test]
    fn stop_needs_no_url() {
        assert_eq!(call(json!({"stop": "true"})).ask(), Ok(Ask::Stop));
    }

    #[test]
    fn the_key_is_the_service_and_the_webhook() {
        assert_eq!(call(json!({})).key(), "qotm/load");
    }

    /// Each bad value, and the words its error must carry.
    #[test]
    fn bad_metadata_is_named() {
        let table: &[(Value, &str)] = &[
            (json!({}), "no `url`"),
            (json!({"url": "ftp://a/"}), "not an http:// or https:// URL"),
            (json!({"url": "not a url"}), "is not a URL"),
            (
                json!({"url": "http://a/", "rate": "0"}),
                "`rate`: `0` must be above 0",
            ),
            (
                json!({"url": "http://a/", "rate": "fast"}),
                "`rate`: `fast` is not a number",
            ),
            (
                json!({"url": "http://a/", "rate": 5000}),
                "above the most the load tester allows, 1000",
            ),
            (
                json!({"url": "http://a/", "concurrency": "1.5"}),
                "must be a whole number",
            ),
            (
                json!({"url": "http://a/", "concurrency": "100"}),
                "allows, 64",
            ),
            (
                json!({"url": "http://a/", "duration": "1h"}),
                "longer than the load tester allows, 10m",
            ),
            (
                json!({"url": "http://a/", "duration": "0s"}),
                "longer than 0",
            ),
            (
                json!({"url": "http://a/", "duration": "soon"}),
                "not a duration",
            ),
            (
                json!({"url": "http://a/", "wait": "yes"}),
                "not true or false",
            ),
            (
                json!({"url": "http://a/", "maxErrorRate": "150%"}),
                "from 0 to 100%",
            ),
            (
                json!({"url": "http://a/", "method": "GE T"}),
                "not an HTTP method",
            ),
            (
                json!({"url": "http://a/", "header.bad name": "1"}),
                "names no valid header",
            ),
            (
                json!({"url": "http://a/", "rat": "5"}),
                "`rat` is not a key the load tester reads",
            ),
            (
                json!({"url": "http://a/", "rate": [1]}),
                "not a text, number or boolean",
            ),
        ];
        for (metadata, words) in table {
            let err = match call(metadata.clone()).ask() {
                Err(e) => e.to_string(),
                Ok(ask) => panic!("{metadata} was taken: {ask:?}"),
            };
            assert!(
                err.contains(words),
                "{metadata}: `{err}` does not say `{words}`"
            );
        }
    }
}
