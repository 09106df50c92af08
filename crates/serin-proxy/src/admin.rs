//! The admin API (default 127.0.0.1:9901): readiness, Prometheus metrics,
//! the effective config, routes with their weights, weight changes, reload,
//! `explain` (what serin would do with a request),
//! and the dashboard at `/ui` (see [`crate::dashboard`]).
//! Other parts of serin (the local runtime, canaries) merge their own
//! routes into the router given to [`serve`]; every request, theirs too,
//! passes the [`guard`]s first.

mod guard;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{Path, RawQuery, State};
use axum::http::{StatusCode, header};
use axum::middleware;
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
        .route("/explain", get(explain))
        .route("/tap", get(tap))
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

/// `GET /explain?path=/x&method=GET&host=h&header=k:v`: what the request
/// path would do with that request (see [`crate::explain`]).
pub(crate) async fn explain(
    State(proxy): State<Arc<Proxy>>,
    RawQuery(query): RawQuery,
) -> Response {
    let answer = crate::explain::Question::from_query(query.as_deref().unwrap_or(""))
        .and_then(|q| crate::explain::explain(&proxy.snapshot(), &q));
    match answer {
        // The text is made here once, for the CLI and the dashboard alike.
        Ok(e) => Json(json!({ "explanation": &e, "text": e.to_text() })).into_response(),
        Err(e) => error(StatusCode::BAD_REQUEST, e),
    }
}

/// What `GET /tap` takes: the filters and the rate.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub(crate) struct TapQuery {
    route: Option<String>,
    service: Option<String>,
    version: Option<String>,
    status: Option<String>,
    path_prefix: Option<String>,
    rate: Option<u32>,
    /// The admin token, which a browser sends in the query on `/ui/` paths.
    #[serde(default, rename = "token")]
    _token: Option<String>,
}

/// `GET /tap`: the requests serin answers from now on, one JSON object a
/// line (`{"kind": "request", …}` or `{"kind": "dropped", "count": N}`),
/// until the client goes.
pub(crate) async fn tap(
    State(proxy): State<Arc<Proxy>>,
    query: Result<axum::extract::Query<TapQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let q = match query {
        Ok(axum::extract::Query(q)) => q,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.body_text()),
    };
    let status = match q.status.as_deref().map(str::parse).transpose() {
        Ok(s) => s,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    let filter = crate::tap::TapFilter {
        route: q.route,
        service: q.service,
        version: q.version,
        status,
        path_prefix: q.path_prefix,
    };
    let rate = q.rate.unwrap_or(crate::tap::DEFAULT_TAP_RATE);
    let watcher = proxy.shared().tap.watch(filter, rate);
    // The head goes at once, so a client knows it taps before any request.
    let opened = futures_util::stream::once(async {
        Ok::<_, std::convert::Infallible>(bytes::Bytes::from_static(b"{\"kind\":\"tapping\"}\n"))
    });
    let items = futures_util::stream::unfold(watcher, |mut w| async move {
        let item = w.next().await?;
        let mut line = serde_json::to_vec(&item).unwrap_or_default();
        line.push(b'\n');
        Some((Ok(bytes::Bytes::from(line)), w))
    });
    let mut response = axum::body::Body::from_stream(futures_util::StreamExt::chain(opened, items))
        .into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        axum::http::HeaderValue::from_static("application/x-ndjson"),
    );
    response
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

/// Why the admin API did not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// Beyond loopback with no token.
    #[error(transparent)]
    Exposed(#[from] serin_config::proxy::admin::Exposed),
    #[error("cannot serve the admin API on {address}: {source}")]
    Bind {
        address: SocketAddr,
        source: std::io::Error,
    },
}

/// Serves `app` (the [`router`], merged with other parts' routes) on the
/// running config's admin address, behind the [`guard`]s (Host, token,
/// JSON body). Refuses an address beyond loopback with no token
/// ([`serin_config::proxy::admin::check`]) and binds now, so either is
/// reported at start; returns the bound address and the server future.
pub async fn serve(
    proxy: Arc<Proxy>,
    app: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<
    (
        SocketAddr,
        impl std::future::Future<Output = std::io::Result<()>>,
    ),
    ServeError,
> {
    let config = proxy.snapshot().config.clone();
    serin_config::proxy::admin::check(&config)?;
    let address = config.admin.address;
    let bind = |source| ServeError::Bind { address, source };
    let listener = tokio::net::TcpListener::bind(address).await.map_err(bind)?;
    let bound = listener.local_addr().map_err(bind)?;
    let app = app.layer(middleware::from_fn_with_state(
        guard::Listener { proxy, bound },
        guard::guard,
    ));
    let fut = async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<guard::Connection>(),
        )
        .with_graceful_shutdown(shutdown)
        .await
    };
    Ok((bound, fut))
}

/// Serves the [`metrics_router`] on `addr` (`admin.metricsAddress`), with
/// no guard: it changes nothing and is meant for a Prometheus beyond the
/// pod. Binds now; returns the bound address and the server future.
pub async fn serve_metrics(
    addr: SocketAddr,
    proxy: Arc<Proxy>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<(
    SocketAddr,
    impl std::future::Future<Output = std::io::Result<()>>,
)> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let app = metrics_router(proxy);
    let fut = async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await
    };
    Ok((bound, fut))
}
