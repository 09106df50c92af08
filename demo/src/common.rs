//! What every demo service shares: port and identity, JSON logging, the
//! `/health` and `/ready` endpoints, request logging and graceful shutdown.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail};
use axum::Router;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get};
use tracing::Level;

use crate::cli::ServeArgs;

/// How long in-flight requests may take to finish after a stop signal.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Emits a tracing event carrying the service's identity fields.
macro_rules! id_event {
    ($level:expr, $id:expr, $($rest:tt)+) => {
        ::tracing::event!(
            $level,
            service = $id.service,
            version = %$id.version,
            replica = %$id.replica,
            $($rest)+
        )
    };
}
pub(crate) use id_event;

/// Who is answering: put in every log line and in the services' answers.
#[derive(Debug, Clone)]
pub struct Identity {
    pub service: &'static str,
    pub version: String,
    pub replica: String,
}

impl Identity {
    pub fn new(service: &'static str, args: &ServeArgs) -> Self {
        Self {
            service,
            version: args.version.clone(),
            replica: replica_name(),
        }
    }
}

/// The replica's name: `SERIN_REPLICA`, else `HOSTNAME`, else "local".
pub fn replica_name() -> String {
    ["SERIN_REPLICA", "HOSTNAME"]
        .iter()
        .filter_map(|var| std::env::var(var).ok())
        .map(|name| name.trim().to_owned())
        .find(|name| !name.is_empty())
        .unwrap_or_else(|| "local".to_owned())
}

/// The address to listen on: `--host` and `--port`, else the `PORT` variable.
pub fn listen_addr(args: &ServeArgs) -> anyhow::Result<SocketAddr> {
    service_addr(args.host, args.port)
}

/// `host` and `port`, else the `PORT` variable.
pub fn service_addr(host: IpAddr, port: Option<u16>) -> anyhow::Result<SocketAddr> {
    let port = match port {
        Some(port) => port,
        None => port_from_env(std::env::var_os("PORT"))?,
    };
    if port == 0 {
        bail!("port 0 is not allowed: choose a port between 1 and 65535");
    }
    Ok(SocketAddr::new(host, port))
}

fn port_from_env(value: Option<std::ffi::OsString>) -> anyhow::Result<u16> {
    let value = value.ok_or_else(|| {
        anyhow!("the PORT environment variable is not set (set PORT or pass --port)")
    })?;
    let text = value
        .to_str()
        .ok_or_else(|| anyhow!("PORT={value:?} is not valid UTF-8"))?;
    text.trim()
        .parse::<u16>()
        .ok()
        .filter(|port| *port != 0)
        .ok_or_else(|| anyhow!("PORT={text:?} is not a port number between 1 and 65535"))
}

/// Installs the JSON-lines log subscriber on stdout, unless one is already
/// installed (as when the services run inside the `serin` binary).
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // An error only means a subscriber is already set: keep that one.
    let _ = tracing_subscriber::fmt()
        .json()
        .flatten_event(true)
        .with_current_span(false)
        .with_span_list(false)
        .with_env_filter(filter)
        .with_writer(std::io::stdout)
        .try_init();
}

/// A readiness check: `Err(reason)` while the service is not ready.
pub type ReadyFuture = Pin<Box<dyn Future<Output = Result<(), String>> + Send>>;
type ReadyCheck = Box<dyn Fn() -> ReadyFuture + Send + Sync>;

/// What `/ready` answers: not ready while draining or while the service's
/// own check fails.
pub struct Readiness {
    draining: AtomicBool,
    check: Option<ReadyCheck>,
}

impl Readiness {
    /// Ready as soon as the server listens.
    pub fn always() -> Arc<Self> {
        Arc::new(Self {
            draining: AtomicBool::new(false),
            check: None,
        })
    }

    /// Ready when `check` says so.
    pub fn with_check<F>(check: F) -> Arc<Self>
    where
        F: Fn() -> ReadyFuture + Send + Sync + 'static,
    {
        Arc::new(Self {
            draining: AtomicBool::new(false),
            check: Some(Box::new(check)),
        })
    }

    /// Ready once `delay` has passed since `start`.
    pub fn after(start: Instant, delay: Duration) -> Arc<Self> {
        Self::with_check(move || {
            let elapsed = start.elapsed();
            Box::pin(async move {
                if elapsed >= delay {
                    Ok(())
                } else {
                    Err(format!(
                        "warming up: ready in {}",
                        humantime::format_duration(round_ms(delay - elapsed))
                    ))
                }
            })
        })
    }

    pub async fn status(&self) -> Result<(), String> {
        if self.draining.load(Ordering::Relaxed) {
            return Err("shutting down".to_owned());
        }
        match &self.check {
            Some(check) => check().await,
            None => Ok(()),
        }
    }

    fn start_draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }
}

fn round_ms(d: Duration) -> Duration {
    Duration::from_millis(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// `GET /health`: 200 "ok" while the process serves.
pub fn health_route() -> MethodRouter {
    get(|| async { "ok\n" })
}

/// `GET /ready`: 200 when ready, 503 with the reason before.
pub fn ready_route(readiness: Arc<Readiness>) -> MethodRouter {
    get(move || {
        let readiness = Arc::clone(&readiness);
        async move {
            match readiness.status().await {
                Ok(()) => (StatusCode::OK, "ok\n".to_owned()),
                Err(reason) => (
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("not ready: {reason}\n"),
                ),
            }
        }
    })
}

/// Adds `GET /health` and `GET /ready` to `router`.
pub fn with_health(router: Router, readiness: &Arc<Readiness>) -> Router {
    router
        .route("/health", health_route())
        .route("/ready", ready_route(Arc::clone(readiness)))
}

/// One JSON log line per request. Successful probes (`/health`, `/ready`)
/// are logged at debug level so that a supervisor's probing does not drown
/// the log.
async fn log_request(State(id): State<Arc<Identity>>, req: Request, next: Next) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let trace_id = trace_id(req.headers()).unwrap_or("").to_owned();
    let start = Instant::now();
    let response = next.run(req).await;
    let status = response.status().as_u16();
    let duration_ms = (start.elapsed().as_secs_f64() * 1e6).round() / 1e3;
    let probe = path == "/health" || path == "/ready";
    if probe && response.status().is_success() {
        id_event!(Level::DEBUG, id, method = %method, path = %path, status, duration_ms, trace_id, "request");
    } else {
        id_event!(Level::INFO, id, method = %method, path = %path, status, duration_ms, trace_id, "request");
    }
    response
}

/// The trace id of the request's W3C `traceparent`, for the log line (so
/// that it joins serin's access log and spans).
fn trace_id(headers: &axum::http::HeaderMap) -> Option<&str> {
    let v = headers.get("traceparent")?.to_str().ok()?;
    let id = v.get(3..35)?;
    id.bytes().all(|b| b.is_ascii_hexdigit()).then_some(id)
}

/// Serves `router` on `addr` until SIGTERM or Ctrl-C, then drains in-flight
/// requests (for at most [`DRAIN_TIMEOUT`]) and returns.
pub async fn serve(
    id: Arc<Identity>,
    addr: SocketAddr,
    router: Router,
    readiness: Arc<Readiness>,
) -> anyhow::Result<()> {
    // Listen for signals before binding so that no early SIGTERM is lost.
    let signal = shutdown_signal()?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    let local = listener.local_addr().unwrap_or(addr);
    let app = router.layer(middleware::from_fn_with_state(Arc::clone(&id), log_request));

    let stop = Arc::new(tokio::sync::Notify::new());
    let server = axum::serve(listener, app)
        .with_graceful_shutdown({
            let stop = Arc::clone(&stop);
            async move { stop.notified().await }
        })
        .into_future();
    tokio::pin!(server);
    id_event!(Level::INFO, id, addr = %local, pid = std::process::id(), "listening");

    tokio::select! {
        result = &mut server => {
            result.context("server failed")?;
            bail!("server stopped unexpectedly");
        }
        name = signal => {
            id_event!(Level::INFO, id, signal = name, "shutting down: draining in-flight requests");
        }
    }
    readiness.start_draining();
    stop.notify_one();
    match tokio::time::timeout(DRAIN_TIMEOUT, &mut server).await {
        Ok(result) => result.context("server failed while draining")?,
        Err(_) => id_event!(
            Level::WARN,
            id,
            "drain took longer than {}s: stopping anyway",
            DRAIN_TIMEOUT.as_secs()
        ),
    }
    id_event!(Level::INFO, id, "stopped");
    Ok(())
}

/// A future that completes with the signal's name on SIGTERM or Ctrl-C.
fn shutdown_signal() -> anyhow::Result<impl Future<Output = &'static str>> {
    #[cfg(unix)]
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("cannot listen for SIGTERM")?;
    Ok(async move {
        #[cfg(unix)]
        let terminate = async move {
            term.recv().await;
        };
        #[cfg(not(unix))]
        let terminate = std::future::pending::<()>();
        tokio::select! {
            _ = terminate => "SIGTERM",
            result = tokio::signal::ctrl_c() => match result {
                Ok(()) => "SIGINT",
                // Cannot listen for Ctrl-C: rely on SIGTERM alone.
                Err(_) => std::future::pending().await,
            },
        }
    })
}

/// A JSON error answer `{"ok": false, "error": message}`.
pub fn json_error(status: StatusCode, message: impl Into<String>) -> Response {
    (
        status,
        axum::Json(serde_json::json!({ "ok": false, "error": message.into() })),
    )
        .into_response()
}

/// Current time as RFC 3339 UTC with seconds, e.g. `2024-05-01T12:00:00Z`.
pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_from_env_is_checked() {
        assert_eq!(port_from_env(Some("8080".into())).unwrap(), 8080);
        assert_eq!(port_from_env(Some(" 80 ".into())).unwrap(), 80);
        let missing = port_from_env(None).unwrap_err().to_string();
        assert!(missing.contains("PORT"), "{missing}");
        for bad in ["", "abc", "0", "70000", "-1"] {
            let err = port_from_env(Some(bad.into())).unwrap_err().to_string();
            assert!(err.contains("PORT="), "{err}");
        }
    }
}
