//! A small blocking client for the admin API, used by the CLI subcommands
//! that talk to a running serin. Calls that change something send JSON
//! (`Content-Type: application/json`), as the admin API wants.

use anyhow::{Context, bail};
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::cli::AdminTarget;

pub struct AdminClient {
    base: String,
    token: Option<String>,
    http: reqwest::Client,
    rt: tokio::runtime::Runtime,
}

impl AdminClient {
    pub fn new(target: &AdminTarget) -> anyhow::Result<Self> {
        // An admin API on every address (0.0.0.0, ::) is reached on
        // loopback, a Host it answers to.
        let mut admin = target.admin;
        if admin.ip().is_unspecified() {
            admin.set_ip(match admin {
                std::net::SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
                std::net::SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
            });
        }
        Ok(Self {
            base: format!("http://{admin}"),
            token: target.token.clone(),
            http: serin_config::http_client::builder()?
                .timeout(std::time::Duration::from_secs(30))
                .build()?,
            rt: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?,
        })
    }

    pub fn get(&self, path: &str) -> anyhow::Result<Value> {
        self.send(reqwest::Method::GET, path, None)
    }

    pub fn post(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        self.send(reqwest::Method::POST, path, Some(body))
    }

    /// [`get`](Self::get), read as `T` (the type the API answers with).
    pub fn get_as<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        let value = self.get(path)?;
        read_as(value, "GET", path)
    }

    /// [`post`](Self::post), read as `T`.
    pub fn post_as<T: DeserializeOwned>(&self, path: &str, body: &Value) -> anyhow::Result<T> {
        let value = self.post(path, body)?;
        read_as(value, "POST", path)
    }

    /// GETs `path` and calls `line` for each line of the answer as it
    /// arrives (for streams that do not end, like `logs -f`).
    pub fn stream_lines(&self, path: &str, mut line: impl FnMut(&str)) -> anyhow::Result<()> {
        let url = format!("{}{path}", self.base);
        // No overall timeout: a followed log stream lasts as long as serin.
        let mut req = serin_config::http_client::builder()?.build()?.get(&url);
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        self.rt.block_on(async {
            let mut resp = req.send().await.with_context(|| {
                format!(
                    "cannot reach the admin API at {} (is serin running?)",
                    self.base
                )
            })?;
            if !resp.status().is_success() {
                let status = resp.status();
                let text = resp.text().await.unwrap_or_default();
                // The admin API's errors are `{"error": "…"}`: say the sentence.
                let said = serde_json::from_str::<Value>(&text)
                    .ok()
                    .and_then(|v| v.get("error").and_then(Value::as_str).map(str::to_string))
                    .unwrap_or(text);
                bail!("{said} (HTTP {status})");
            }
            let mut pending = Vec::new();
            while let Some(chunk) = resp.chunk().await? {
                pending.extend_from_slice(&chunk);
                while let Some(nl) = pending.iter().position(|b| *b == b'\n') {
                    let rest = pending.split_off(nl + 1);
                    line(String::from_utf8_lossy(&pending[..nl]).trim_end_matches('\r'));
                    pending = rest;
                }
            }
            if !pending.is_empty() {
                line(&String::from_utf8_lossy(&pending));
            }
            Ok(())
        })
    }

    fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<Value> {
        let url = format!("{}{path}", self.base);
        let mut req = self.http.request(method, &url);
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        self.rt.block_on(async {
            let resp = req.send().await.with_context(|| {
                format!(
                    "cannot reach the admin API at {} (is serin running?)",
                    self.base
                )
            })?;
            let status = resp.status();
            let text = resp.text().await?;
            let value: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
            if !status.is_success() {
                let msg = value
                    .get("error")
                    .and_then(Value::as_str)
                    .map_or_else(|| value.to_string(), str::to_string);
                let problems = value
                    .get("problems")
                    .and_then(Value::as_array)
                    .map(|p| {
                        p.iter()
                            .filter_map(Value::as_str)
                            .map(|s| format!("\n  {s}"))
                            .collect::<String>()
                    })
                    .unwrap_or_default();
                bail!("{msg} (HTTP {status}){problems}");
            }
            Ok(value)
        })
    }
}

/// `value` as `T`, or an error that shows what the API answered.
fn read_as<T: DeserializeOwned>(value: Value, method: &str, path: &str) -> anyhow::Result<T> {
    let shown = value.to_string();
    serde_json::from_value(value).with_context(|| {
        format!(
            "the answer to {method} {path} is not what this serin reads (another version?): {shown}"
        )
    })
}
