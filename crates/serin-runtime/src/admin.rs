//! The runtime's part of the admin API, for `serin ps`, `scale`, `restart`,
//! `logs` and `apply`. Every answer is JSON; errors are
//! `{"error": "..."}` with 404 for an unknown service or version, 400 for
//! bad input and 503 while shutting down.
//!
//! | request | body / query | answer |
//! |---|---|---|
//! | `GET /runtime/ps` | | `[ReplicaStatus, ...]` |
//! | `GET /runtime/builds` | | `[BuildStatus, ...]`: each watched service's last build (`serin up --watch`) |
//! | `POST /runtime/scale` | `{"service", "version", "replicas", "wait"?}` | `{"service", "version", "replicas"}` |
//! | `POST /runtime/restart` | `{"service", "version", "wait"?}` | `{"service", "version", "revision"}` |
//! | `GET /runtime/logs` | `?service=&version=&tail=&follow=true&format=json\|text` | one line per log line, streamed while following |
//! | `POST /runtime/apply` | `{"stack": "<file text>", "path": "/abs/stack.yaml", "wait"?}` | `ApplySummary`, or 400 with `{"error", "problems": [ConfigError]}` leaving the stack as it was |
//!
//! With `"wait": true` the answer comes once the rollout is complete (bound
//! it with a client timeout). Log lines are NDJSON ([`LogLine`] objects) by
//! default, or `service/version/index | message` text with `format=text`.

use std::convert::Infallible;
use std::path::Path;

use axum::Json;
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::json;

use crate::error::RuntimeError;
use crate::handle::RuntimeHandle;
use crate::logs::{LogFilter, LogLine};

/// The runtime's admin endpoints, to merge into the admin server.
pub fn admin_router(handle: RuntimeHandle) -> Router {
    Router::new()
        .route("/runtime/ps", get(ps))
        .route("/runtime/builds", get(builds))
        .route("/runtime/scale", post(scale))
        .route("/runtime/restart", post(restart))
        .route("/runtime/logs", get(logs))
        .route("/runtime/apply", post(apply))
        .with_state(handle)
}

/// An error answer.
struct ApiError {
    status: StatusCode,
    body: serde_json::Value,
}

impl ApiError {
    fn bad_request(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            body: json!({ "error": message.into() }),
        }
    }
}

impl From<RuntimeError> for ApiError {
    fn from(e: RuntimeError) -> Self {
        let status = match &e {
            RuntimeError::UnknownService(_) | RuntimeError::UnknownVersion { .. } => {
                StatusCode::NOT_FOUND
            }
            RuntimeError::BadReplicas { .. } | RuntimeError::Command { .. } => {
                StatusCode::BAD_REQUEST
            }
            RuntimeError::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
            RuntimeError::Io { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        };
        Self {
            status,
            body: json!({ "error": e.to_string() }),
        }
    }
}

impl From<JsonRejection> for ApiError {
    fn from(e: JsonRejection) -> Self {
        Self::bad_request(e.body_text())
    }
}

impl From<QueryRejection> for ApiError {
    fn from(e: QueryRejection) -> Self {
        Self::bad_request(e.body_text())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(self.body)).into_response()
    }
}

async fn ps(State(handle): State<RuntimeHandle>) -> Response {
    Json(handle.ps()).into_response()
}

async fn builds(State(handle): State<RuntimeHandle>) -> Response {
    Json(handle.builds()).into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ScaleRequest {
    service: String,
    version: String,
    replicas: u32,
    #[serde(default)]
    wait: bool,
}

async fn scale(
    State(handle): State<RuntimeHandle>,
    body: Result<Json<ScaleRequest>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(req) = body?;
    handle
        .scale(&req.service, &req.version, req.replicas)
        .await?;
    if req.wait {
        handle.wait_rollout(&req.service, &req.version).await?;
    }
    Ok(Json(json!({
        "service": req.service,
        "version": req.version,
        "replicas": req.replicas,
    }))
    .into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RestartRequest {
    service: String,
    version: String,
    #[serde(default)]
    wait: bool,
}

async fn restart(
    State(handle): State<RuntimeHandle>,
    body: Result<Json<RestartRequest>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(req) = body?;
    let revision = handle.restart(&req.service, &req.version).await?;
    if req.wait {
        handle.wait_rollout(&req.service, &req.version).await?;
    }
    Ok(Json(json!({
        "service": req.service,
        "version": req.version,
        "revision": revision,
    }))
    .into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LogsQuery {
    service: Option<String>,
    version: Option<String>,
    tail: Option<usize>,
    #[serde(default)]
    follow: bool,
    format: Option<String>,
}

async fn logs(
    State(handle): State<RuntimeHandle>,
    query: Result<Query<LogsQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = query?;
    let text = match q.format.as_deref() {
        None | Some("json") => false,
        Some("text") => true,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "unknown format `{other}`: use json or text"
            )));
        }
    };
    if q.version.is_some() && q.service.is_none() {
        return Err(ApiError::bad_request("`version` needs `service`"));
    }
    let filter = LogFilter {
        service: q.service,
        version: q.version,
    };
    let logs = handle.logs(filter, q.tail, q.follow)?;
    let render = move |line: &LogLine| -> Result<Bytes, Infallible> {
        let mut s = if text {
            line.to_text()
        } else {
            serde_json::to_string(line).unwrap_or_default()
        };
        s.push('\n');
        Ok(Bytes::from(s))
    };
    let recent = futures_util::stream::iter(
        logs.lines
            .into_iter()
            .map(move |l| render(&l))
            .collect::<Vec<_>>(),
    );
    let body = match logs.follow {
        None => Body::from_stream(recent),
        Some(follower) => {
            let more = futures_util::stream::unfold(follower, move |mut f| async move {
                let line = f.next().await?;
                Some((render(&line), f))
            });
            Body::from_stream(recent.chain(more))
        }
    };
    let content_type = if text {
        "text/plain; charset=utf-8"
    } else {
        "application/x-ndjson"
    };
    let mut response = body.into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    Ok(response)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ApplyRequest {
    /// The stack file's text.
    stack: String,
    /// The stack file's path: names it in errors; relative paths in the
    /// stack are resolved against its folder.
    path: String,
    #[serde(default)]
    wait: bool,
}

async fn apply(
    State(handle): State<RuntimeHandle>,
    body: Result<Json<ApplyRequest>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(req) = body?;
    let path = Path::new(&req.path);
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let name = if req.path.is_empty() {
        "<stack>"
    } else {
        req.path.as_str()
    };
    let stack =
        serin_config::stack::parse_stack(&req.stack, name, dir).map_err(|errors| ApiError {
            status: StatusCode::BAD_REQUEST,
            body: json!({ "error": errors.to_string(), "problems": errors }),
        })?;
    let summary = handle.apply(stack).await?;
    if req.wait {
        handle.wait_all_rolled_out().await?;
    }
    Ok(Json(summary).into_response())
}
