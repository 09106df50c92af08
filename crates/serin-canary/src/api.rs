//! The canary's admin API routes, merged into the serving process's admin
//! API:
//!
//! | | |
//! |---|---|
//! | `POST /canary/{service}/start` | start: `{"to": "v2", "from": "v1", "steps": [5, 25, 50, 100], "interval": "30s", "max_error_rate": "1%", "max_latency_ratio": 1.5, "latency_floor": "10ms", "min_requests": 50, "failures": 2, "inconclusive_limit": 3, "prometheus": "http://127.0.0.1:9090", "queries": {"requests": "…"}, "header_step": "x-canary=always" (or "cookie_step": "canary=always", or "host_step": "preview.qotm.local"), "mirror_step": 20, "checks": [...], "webhooks": [{"name": "gate", "type": "confirm-promotion", "url": "http://…", "timeout": "10s", "metadata": {…}}], "approval": true, "notify": [{"url": "http://…", "format": "slack"}]}` (only `to` is required) |
//! | `GET /canary` | every canary: `{"canaries": [STATUS, …]}` |
//! | `GET /canary/{service}` | one canary's STATUS: phase, step, weights, last analysis, queries |
//! | `POST /canary/{service}/pause`, `/resume`, `/promote`, `/abort`, `/approve` | act on it (`approve` opens the approval gate of a canary started with `approval`); answers its STATUS |
//!
//! Errors are `{"error": "…"}` with 400 (bad options), 404 (unknown
//! service, version or canary), 409 (a canary already holds the service, or
//! the action does not fit its phase), 422 (no route rule carries both
//! versions) or 502 (the weights could not be written).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::controller::{Command, Controller, Status};
use crate::error::CanaryError;
use crate::settings::StartRequest;

/// What `GET /canary` answers: every canary's [`Status`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CanaryList {
    pub canaries: Vec<Status>,
}

pub fn router(controller: Controller) -> Router {
    Router::new()
        .route("/canary", get(list))
        .route("/canary/{service}", get(status))
        .route("/canary/{service}/{action}", post(act))
        .with_state(controller)
}

fn error(status: StatusCode, message: impl std::fmt::Display) -> Response {
    (status, Json(json!({ "error": message.to_string() }))).into_response()
}

fn failure(e: &CanaryError) -> Response {
    let status = match e {
        CanaryError::UnknownService(_)
        | CanaryError::UnknownVersion { .. }
        | CanaryError::NoCanary(_) => StatusCode::NOT_FOUND,
        CanaryError::Conflict(_) => StatusCode::CONFLICT,
        CanaryError::Routing(_)
        | CanaryError::Sink(
            crate::sink::SinkError::NoRule { .. }
            | crate::sink::SinkError::HostNotServed { .. }
            | crate::sink::SinkError::HostTaken { .. },
        ) => StatusCode::UNPROCESSABLE_ENTITY,
        CanaryError::BadOptions(_) => StatusCode::BAD_REQUEST,
        CanaryError::Sink(_) => StatusCode::BAD_GATEWAY,
        CanaryError::Store(_) | CanaryError::HttpClient(_) => StatusCode::INTERNAL_SERVER_ERROR,
    };
    error(status, e)
}

async fn list(State(c): State<Controller>) -> Response {
    Json(CanaryList { canaries: c.list() }).into_response()
}

async fn status(State(c): State<Controller>, Path(service): Path<String>) -> Response {
    match c.status(&service) {
        Ok(s) => Json(s).into_response(),
        Err(e) => failure(&e),
    }
}

async fn act(
    State(c): State<Controller>,
    Path((service, action)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> Response {
    let result = if action == "start" {
        let value: serde_json::Value = if body.iter().all(u8::is_ascii_whitespace) {
            json!({})
        } else {
            match serde_json::from_slice(&body) {
                Ok(v) => v,
                Err(e) => return error(StatusCode::BAD_REQUEST, format!("body is not JSON: {e}")),
            }
        };
        match StartRequest::from_json(value) {
            Ok(req) => c.start_canary(&service, req).await,
            Err(e) => Err(e),
        }
    } else {
        match Command::parse(&action) {
            Some(cmd) => c.command(&service, cmd).await,
            None => {
                return error(
                    StatusCode::NOT_FOUND,
                    format!(
                        "no canary action `{action}`: use start, pause, resume, promote, abort or \
                         approve"
                    ),
                );
            }
        }
    };
    match result {
        Ok(s) => Json(s).into_response(),
        Err(e) => failure(&e),
    }
}
