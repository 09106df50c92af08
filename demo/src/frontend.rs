//! frontend: an HTML page (and a JSON `/api`) built from calls to pinger and
//! details. Trace headers of the incoming request go along on those calls.

use std::fmt::Write as _;
use std::sync::Arc;

use anyhow::{Context as _, bail};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use serde_json::{Value, json};
use tracing::Level;

use crate::cli::FrontendArgs;
use crate::common::{self, Identity, Readiness, id_event};

/// Incoming headers passed on to the dependencies.
const PROPAGATED: [&str; 3] = ["traceparent", "tracestate", "x-request-id"];

/// Longest part of a failed dependency's answer quoted in an error.
const SNIPPET: usize = 200;

struct Frontend {
    id: Arc<Identity>,
    client: reqwest::Client,
    pinger_url: String,
    details_url: String,
}

/// What one dependency answered.
#[derive(Debug, Serialize)]
struct Outcome {
    ok: bool,
    url: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    body: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

impl Outcome {
    fn failed(url: &str, status: Option<u16>, error: String) -> Self {
        Self {
            ok: false,
            url: url.to_owned(),
            status,
            body: None,
            error: Some(error),
        }
    }

    fn field(&self, name: &str) -> &str {
        self.body
            .as_ref()
            .and_then(|body| body.get(name))
            .and_then(Value::as_str)
            .unwrap_or("?")
    }
}

impl Frontend {
    async fn call(&self, url: &str, incoming: &HeaderMap) -> Outcome {
        let mut request = self.client.get(url);
        for name in PROPAGATED {
            if let Some(value) = incoming.get(name) {
                request = request.header(name, value.clone());
            }
        }
        let response = match request.send().await {
            Ok(response) => response,
            Err(err) => return Outcome::failed(url, None, error_chain(&err)),
        };
        let status = response.status();
        let text = match response.text().await {
            Ok(text) => text,
            Err(err) => return Outcome::failed(url, Some(status.as_u16()), error_chain(&err)),
        };
        if !status.is_success() {
            return Outcome::failed(
                url,
                Some(status.as_u16()),
                format!("answered HTTP {status}: {}", snippet(&text)),
            );
        }
        match serde_json::from_str::<Value>(&text) {
            Ok(body) => Outcome {
                ok: true,
                url: url.to_owned(),
                status: Some(status.as_u16()),
                body: Some(body),
                error: None,
            },
            Err(err) => Outcome::failed(
                url,
                Some(status.as_u16()),
                format!(
                    "answered something that is not JSON ({err}): {}",
                    snippet(&text)
                ),
            ),
        }
    }

    async fn gather(&self, incoming: &HeaderMap) -> (Outcome, Outcome) {
        let (pinger, details) = tokio::join!(
            self.call(&self.pinger_url, incoming),
            self.call(&self.details_url, incoming)
        );
        for (name, outcome) in [("pinger", &pinger), ("details", &details)] {
            if let Some(error) = &outcome.error {
                id_event!(Level::WARN, self.id, dependency = name, url = %outcome.url, error = %error, "dependency failed");
            }
        }
        (pinger, details)
    }

    async fn api(&self, incoming: HeaderMap) -> Response {
        let (pinger, details) = self.gather(&incoming).await;
        let ok = pinger.ok && details.ok;
        let status = if ok {
            StatusCode::OK
        } else {
            StatusCode::BAD_GATEWAY
        };
        let body = json!({
            "ok": ok,
            "frontend": { "version": self.id.version, "replica": self.id.replica },
            "pinger": pinger,
            "details": details,
        });
        (status, Json(body)).into_response()
    }

    async fn page(&self, incoming: HeaderMap) -> Html<String> {
        let (pinger, details) = self.gather(&incoming).await;
        Html(render(&self.id, &pinger, &details))
    }
}

fn render(id: &Identity, pinger: &Outcome, details: &Outcome) -> String {
    let mut html = String::from(
        "<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <title>serin demo</title>\n<style>\n\
         body { font-family: sans-serif; margin: 2em; max-width: 50em; }\n\
         .card { border: 1px solid #ccc; border-radius: 6px; padding: 0.5em 1em; margin: 1em 0; }\n\
         .error { border-color: #c00; background: #fee; color: #900; }\n\
         pre { background: #f6f6f6; padding: 0.5em; overflow-x: auto; }\n\
         </style>\n</head>\n<body>\n<h1>serin demo</h1>\n",
    );
    let _ = writeln!(
        html,
        "<p>frontend version <b class=\"version\">{}</b> on replica <b class=\"replica\">{}</b></p>",
        escape(&id.version),
        escape(&id.replica)
    );
    for (name, outcome) in [("pinger", pinger), ("details", details)] {
        match &outcome.error {
            None => {
                let body = outcome
                    .body
                    .as_ref()
                    .and_then(|body| serde_json::to_string_pretty(body).ok())
                    .unwrap_or_default();
                let _ = writeln!(
                    html,
                    "<section class=\"card\" id=\"{name}\">\n<h2>{name}</h2>\n\
                     <p>version <b class=\"version\">{}</b> on replica <b class=\"replica\">{}</b></p>\n\
                     <pre>{}</pre>\n</section>",
                    escape(outcome.field("version")),
                    escape(outcome.field("replica")),
                    escape(&body)
                );
            }
            Some(error) => {
                let _ = writeln!(
                    html,
                    "<section class=\"card error\" id=\"{name}\">\n<h2>{name}</h2>\n\
                     <p><b>{name} is unavailable</b> ({})</p>\n<pre>{}</pre>\n</section>",
                    escape(&outcome.url),
                    escape(error)
                );
            }
        }
    }
    html.push_str("</body>\n</html>\n");
    html
}

/// Escapes text for HTML element content and attribute values.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn snippet(text: &str) -> String {
    let text = text.trim();
    match text.char_indices().nth(SNIPPET) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_owned(),
    }
}

fn error_chain(err: &dyn std::error::Error) -> String {
    let mut message = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let _ = write!(message, ": {cause}");
        source = cause.source();
    }
    message
}

/// Checks a base URL and returns the URL of its root (`<base>/`).
fn root_url(flag: &str, base: &str) -> anyhow::Result<String> {
    let url = reqwest::Url::parse(base.trim())
        .with_context(|| format!("{flag} {base:?} is not a valid URL"))?;
    if url.scheme() != "http" {
        bail!("{flag} {base:?} must be an http:// URL");
    }
    let mut root = url.to_string();
    if !root.ends_with('/') {
        root.push('/');
    }
    Ok(root)
}

pub async fn run(args: FrontendArgs) -> anyhow::Result<()> {
    let id = Arc::new(Identity::new("frontend", &args.serve));
    let pinger_url = root_url("PINGER_URL", &args.pinger_url)?;
    let details_url = root_url("DETAILS_URL", &args.details_url)?;
    let addr = common::listen_addr(&args.serve)?;
    let client = serin_config::http_client::builder()?
        .timeout(args.timeout)
        .connect_timeout(args.timeout)
        .no_proxy()
        .build()
        .context("cannot build the HTTP client")?;
    id_event!(Level::INFO, id, pinger_url = %pinger_url, details_url = %details_url, "starting");
    let frontend = Arc::new(Frontend {
        id: Arc::clone(&id),
        client,
        pinger_url,
        details_url,
    });
    let page = {
        let frontend = Arc::clone(&frontend);
        get(move |headers: HeaderMap| {
            let frontend = Arc::clone(&frontend);
            async move { frontend.page(headers).await }
        })
    };
    let api = get(move |headers: HeaderMap| {
        let frontend = Arc::clone(&frontend);
        async move { frontend.api(headers).await }
    });
    let readiness = Readiness::always();
    let router = Router::new().route("/", page).route("/api", api);
    let router = common::with_health(router, &readiness);
    common::serve(id, addr, router, readiness).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_html() {
        assert_eq!(
            escape(r#"<a href="x">'&'</a>"#),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
    }

    #[test]
    fn root_urls() {
        assert_eq!(
            root_url("PINGER_URL", "http://127.0.0.1:7001").unwrap(),
            "http://127.0.0.1:7001/"
        );
        assert_eq!(
            root_url("PINGER_URL", "http://gw:8080/pinger").unwrap(),
            "http://gw:8080/pinger/"
        );
        assert!(root_url("PINGER_URL", "127.0.0.1:7001").is_err());
        assert!(root_url("PINGER_URL", "ftp://x/").is_err());
    }

    #[test]
    fn page_escapes_dependency_answers() {
        let id = Identity {
            service: "frontend",
            version: "v1".into(),
            replica: "r<1>".into(),
        };
        let pinger = Outcome {
            ok: true,
            url: "http://p/".into(),
            status: Some(200),
            body: Some(json!({"version": "<script>", "replica": "p-1"})),
            error: None,
        };
        let details = Outcome::failed("http://d/", None, "refused <b>".into());
        let html = render(&id, &pinger, &details);
        assert!(html.contains("&lt;script&gt;"));
        assert!(!html.contains("<script>"));
        assert!(html.contains("r&lt;1&gt;"));
        assert!(html.contains("refused &lt;b&gt;"));
        assert!(html.contains("class=\"card error\""));
    }
}
