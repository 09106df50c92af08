//! The admin API (default 127.0.0.1:9901): readiness, Prometheus metrics,
//! the effective config, routes with their weights, weight changes, reload,
//! and the dashboard at `/ui` (see [`crate::dashboard`]).
//! Other parts of serin (the local runtime) add their own routes with
//! [`serve`]'s `extra` router.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;

use crate::Proxy;
use crate::weights::WeightChange;

fn error(status: StatusCode, message: impl std::fmt::Display) -> Response {
    (status, Json(json!({ "error": message.to_string() }))).into_response()
}

/// The proxy's admin routes.
pub fn router(proxy: Arc<Proxy>) -> Router {
    Router::new()
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
        .route("/config", get(config))
        .route("/routes", get(routes))
        .route(
            "/routes/{name}/weights",
            get(get_weights).put(set_weights).post(set_weights),
        )
        .route("/endpoints", get(endpoints))
        .route("/listeners", get(listeners))
        .route("/reload", post(reload))
        .with_state(proxy)
}

/// Only `GET /metrics`, for the metrics listener (`admin.metricsAddress`):
/// it changes nothing, so it needs no token and may listen beyond loopback.
pub fn metrics_router(proxy: Arc<Proxy>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .with_state(proxy)
}

async fn ready(State(proxy): State<Arc<Proxy>>) -> Response {
    if proxy.shared().is_draining() {
        (StatusCode::SERVICE_UNAVAILABLE, "draining\n").into_response()
    } else {
        (StatusCode::OK, "ready\n").into_response()
    }
}

async fn metrics(State(proxy): State<Arc<Proxy>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        proxy.metrics().encode(),
    )
        .into_response()
}

async fn config(State(proxy): State<Arc<Proxy>>) -> Response {
    Json(&*proxy.snapshot().config).into_response()
}

async fn routes(State(proxy): State<Arc<Proxy>>) -> Response {
    let snap = proxy.snapshot();
    let routes: Vec<_> = snap
        .config
        .routes
        .iter()
        .map(|r| {
            json!({
                "name": r.name,
                "listeners": r.listeners,
                "hostnames": r.hostnames,
                "rules": r.rules.iter().enumerate().map(|(i, rule)| json!({
                    "index": i,
                    "name": rule.name,
                    "backends": rule.backends.iter().map(|b| json!({
                        "service": b.service,
                        "version": b.version,
                        "weight": b.weight,
                        "endpoints": proxy.registry().get(&serin_discovery::BackendKey::new(&b.service, &b.version)).len(),
                    })).collect::<Vec<_>>(),
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    Json(json!({ "routes": routes })).into_response()
}

async fn get_weights(State(proxy): State<Arc<Proxy>>, Path(name): Path<String>) -> Response {
    match crate::weights::route_weights(&proxy.snapshot().config, &name) {
        Ok(w) => Json(w).into_response(),
        Err(e) => error(StatusCode::NOT_FOUND, e),
    }
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct WeightBody {
    #[serde(default)]
    rule: Option<usize>,
    weights: std::collections::BTreeMap<String, u32>,
}

async fn set_weights(
    State(proxy): State<Arc<Proxy>>,
    Path(name): Path<String>,
    body: Result<Json<WeightBody>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let Json(body) = match body {
        Ok(b) => b,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.body_text()),
    };
    let change = WeightChange {
        route: name,
        rule: body.rule,
        weights: body.weights,
    };
    let p = proxy.clone();
    let applied = tokio::task::spawn_blocking(move || p.set_weights(&change).map(|a| (change, a)));
    match applied.await {
        Ok(Ok((change, applied))) => {
            tracing::info!(route = %change.route, weights = ?change.weights, "weights changed");
            Json(WeightAnswer::new(applied)).into_response()
        }
        Ok(Err(e)) => edit_error(&e),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e),
    }
}

/// The answer to a weight change: the route's weights now, and how long
/// they last.
#[derive(serde::Serialize)]
struct WeightAnswer {
    #[serde(flatten)]
    weights: Option<crate::weights::RouteWeights>,
    /// Kept in the state file: they survive a restart.
    persisted: bool,
    /// When they end.
    lasts: &'static str,
}

impl WeightAnswer {
    fn new(applied: crate::Applied) -> Self {
        Self {
            weights: applied.weights,
            persisted: applied.persisted,
            lasts: if applied.persisted {
                "kept across restarts and reloads, until a reload whose file changes this rule's weights (there the file wins)"
            } else {
                "until this process stops (no state file), or a reload whose file changes this rule's weights"
            },
        }
    }
}

/// The status for a refused change: the change's fault is 4xx, serin's 500.
fn edit_error(e: &crate::EditError) -> Response {
    let status = if e.is_not_found() {
        StatusCode::NOT_FOUND
    } else if e.is_internal() {
        StatusCode::INTERNAL_SERVER_ERROR
    } else {
        StatusCode::BAD_REQUEST
    };
    error(status, e)
}

async fn endpoints(State(proxy): State<Arc<Proxy>>) -> Response {
    let backends: Vec<_> = proxy
        .shared()
        .backends()
        .iter()
        .map(|b| {
            json!({
                "service": &*b.key.service,
                "version": &*b.key.version,
                "endpoints": b.endpoints().list.iter().map(|e| json!({
                    "address": e.addr.to_string(),
                    "name": &*e.name,
                    "active_requests": e.active(),
                    "healthy": e.health.is_healthy(),
                    "ejected_for_ms": e.health.ejected_for(crate::outlier::now_ms()),
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    Json(json!({ "backends": backends })).into_response()
}

async fn listeners(State(proxy): State<Arc<Proxy>>) -> Response {
    let list: Vec<_> = proxy
        .listener_addrs()
        .into_iter()
        .map(|(name, addr)| json!({ "name": name, "address": addr.to_string() }))
        .collect();
    Json(json!({ "listeners": list })).into_response()
}

async fn reload(State(proxy): State<Arc<Proxy>>) -> Response {
    let p = proxy.clone();
    match tokio::task::spawn_blocking(move || p.reload_from_file()).await {
        Ok(Ok(applied)) => Json(json!({
            "result": "reloaded",
            // Run-time weight changes the file replaced: it changed those
            // rules' weights, and there the file wins.
            "replacedWeightChanges": applied.replaced.iter()
                .map(|(route, rule)| json!({ "route": route, "rule": rule }))
                .collect::<Vec<_>>(),
        }))
        .into_response(),
        Ok(Err(crate::EditError::Config(errors))) => (
            StatusCode::BAD_REQUEST,
            Json(json!({
                "error": "configuration rejected; the running one stays",
                "problems": errors.0.iter().map(ToString::to_string).collect::<Vec<_>>(),
            })),
        )
            .into_response(),
        Ok(Err(e)) => edit_error(&e),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e),
    }
}

async fn require_token(
    State(token): State<Arc<String>>,
    headers: HeaderMap,
    req: Request,
    next: Next,
) -> Response {
    if req.uri().path() == "/ready" {
        return next.run(req).await;
    }
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_string);
    // A browser cannot set the header on the dashboard's page or its event
    // stream: there the token may come as `?token=…`.
    let given = bearer.or_else(|| {
        if !(req.uri().path() == "/ui" || req.uri().path().starts_with("/ui/")) {
            return None;
        }
        form_urlencoded::parse(req.uri().query()?.as_bytes())
            .find(|(k, _)| k == "token")
            .map(|(_, v)| v.into_owned())
    });
    // Compare without an early exit on the first differing byte.
    let ok = given.is_some_and(|g| {
        g.len() == token.len()
            && g.bytes()
                .zip(token.bytes())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0
    });
    if ok {
        next.run(req).await
    } else {
        error(
            StatusCode::UNAUTHORIZED,
            "admin API token required (Authorization: Bearer …)",
        )
    }
}

/// Binds the admin address now (so a bind error is reported at start) and
/// returns the bound address and the server future.
pub async fn serve(
    addr: SocketAddr,
    token: Option<String>,
    app: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<(
    SocketAddr,
    impl std::future::Future<Output = std::io::Result<()>>,
)> {
    let app = match token {
        Some(t) => app.layer(middleware::from_fn_with_state(Arc::new(t), require_token)),
        None => app,
    };
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let fut = async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await
    };
    Ok((bound, fut))
}
