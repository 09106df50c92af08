//! What every module here uses.

pub use serin_testkit::{Serin, Upstream, wait_until};

pub const SERIN: &str = env!("CARGO_BIN_EXE_serin");

/// Starts `serin proxy` with a config (YAML text).
pub fn proxy(config: &str) -> Serin {
    Serin::proxy(SERIN, config)
}

/// A keep-alive HTTP client for tests (no proxy from the environment).
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(std::time::Duration::from_secs(30))
        .build()
        .unwrap_or_else(|e| panic!("client: {e}"))
}

/// The JSON an upstream echoed.
pub async fn echo(resp: reqwest::Response) -> serde_json::Value {
    let text = resp.text().await.unwrap_or_default();
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// The value of one series in Prometheus text, e.g.
/// `serin_retries_total{route="r",service="s",version="v1"}`.
pub fn metric_value(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series).map(str::trim))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no series {series} in:\n{text}"))
}

/// The admin API's /metrics text.
pub async fn metrics_text(serin: &Serin) -> String {
    client()
        .get(serin.admin_url("/metrics"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("metrics: {e}"))
        .text()
        .await
        .unwrap_or_default()
}

/// A response header's value as text ("" when absent).
pub fn header(resp: &reqwest::Response, name: &str) -> String {
    resp.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string()
}

/// Polls the admin API's /metrics (every 50 ms, up to 10 s) until `cond`
/// holds for its text; returns whether it did, and the last text.
pub async fn metrics_until(serin: &Serin, cond: impl Fn(&str) -> bool) -> (bool, String) {
    let mut text = String::new();
    for _ in 0..200 {
        text = metrics_text(serin).await;
        if cond(&text) {
            return (true, text);
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    (false, text)
}
