//! The live dashboard at the admin address's `/ui`: request rate, error rate
//! and latency per route and version as charts over the last minutes,
//! weights, canaries, endpoints and replicas, the mesh, and recent changes.
//!
//! The page and its charting library (uPlot, vendored under `assets/`) are
//! built into the binary: it works offline. `GET /ui/state` gives the kept
//! history and the state now; `GET /ui/events` (server-sent events) pushes
//! one `update` a second with the new sample and the state. Like the rest of
//! the admin API it wants the token when one is set; a browser passes it as
//! `?token=…` (see [`crate::admin`]).

mod metrics_text;
pub mod sampler;
pub mod status;

use std::convert::Infallible;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;
use tokio::sync::broadcast;

use crate::Proxy;
pub use status::Replica;

/// How often a sample is taken and pushed.
pub const INTERVAL: Duration = Duration::from_secs(1);

/// Canaries, from the canary controller (a part this crate does not know).
pub trait CanaryView: Send + Sync {
    /// Every canary's status, as `GET /canary` gives them.
    fn canaries(&self) -> Vec<serde_json::Value>;
    /// Recent decisions (audit log entries), oldest first.
    fn decisions(&self) -> Vec<serde_json::Value>;
}

/// The local runtime's replicas (`serin up`).
pub trait ReplicaView: Send + Sync {
    fn replicas(&self) -> Vec<Replica>;
}

/// What the serving process can add to the dashboard; each is optional
/// (`serin proxy` has neither replicas nor, without a canary, canaries).
#[derive(Clone, Default)]
pub struct Providers {
    pub canary: Option<Arc<dyn CanaryView>>,
    pub replicas: Option<Arc<dyn ReplicaView>>,
}

/// A running dashboard: its sampler and the stream of updates.
pub struct Dashboard {
    proxy: Arc<Proxy>,
    providers: Providers,
    sampler: Mutex<sampler::Sampler>,
    updates: broadcast::Sender<Arc<str>>,
}

impl Dashboard {
    /// Starts sampling (until the proxy drains). Must be called inside a
    /// tokio runtime.
    pub fn start(proxy: Arc<Proxy>, providers: Providers) -> Arc<Self> {
        let (updates, _) = broadcast::channel(16);
        let dashboard = Arc::new(Self {
            proxy,
            providers,
            sampler: Mutex::new(sampler::Sampler::new()),
            updates,
        });
        dashboard.tick();
        tokio::spawn(run(dashboard.clone()));
        dashboard
    }

    /// The dashboard's routes, to merge into the admin router.
    pub fn router(self: &Arc<Self>) -> Router {
        Router::new()
            .route("/ui", get(page))
            .route("/ui/", get(page))
            .route("/ui/state", get(state))
            .route("/ui/events", get(events))
            .route("/ui/explain", get(explain))
            .route("/ui/tap", get(tap))
            .with_state(self.clone())
    }

    /// Takes a sample and pushes it with the state now.
    fn tick(&self) {
        let text = self.proxy.metrics().encode();
        let unix_ms = crate::events::unix_now_ms();
        let sample = self
            .sampler
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .observe(&text, Instant::now(), unix_ms);
        let Some(sample) = sample else { return };
        if self.updates.receiver_count() == 0 {
            return;
        }
        let update = json!({
            "sample": sample,
            "status": status::build(&self.proxy, &self.providers),
        });
        // No receiver left is not an error: nobody is watching.
        let _ = self.updates.send(update.to_string().into());
    }
}

/// The admin API's `/explain` under `/ui/`, where a browser may send the
/// token as `?token=…`.
async fn explain(
    State(dashboard): State<Arc<Dashboard>>,
    query: axum::extract::RawQuery,
) -> Response {
    crate::admin::explain(State(dashboard.proxy.clone()), query).await
}

/// The admin API's `/tap` under `/ui/`, for the dashboard's tap panel.
async fn tap(
    State(dashboard): State<Arc<Dashboard>>,
    query: Result<
        axum::extract::Query<crate::admin::TapQuery>,
        axum::extract::rejection::QueryRejection,
    >,
) -> Response {
    crate::admin::tap(State(dashboard.proxy.clone()), query).await
}

async fn run(dashboard: Arc<Dashboard>) {
    let mut tick = tokio::time::interval(INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        if dashboard.proxy.shared().is_draining() {
            return;
        }
        dashboard.tick();
    }
}

const INDEX_HTML: &str = include_str!("assets/index.html");
const APP_JS: &str = include_str!("assets/app.js");
const APP_CSS: &str = include_str!("assets/app.css");
const UPLOT_JS: &str = include_str!("assets/vendor/uplot/uPlot.iife.min.js");
const UPLOT_CSS: &str = include_str!("assets/vendor/uplot/uPlot.min.css");

/// The page with its styles and scripts inline: one response, so a token
/// given in the page's address covers everything it needs.
static PAGE: LazyLock<String> = LazyLock::new(|| {
    INDEX_HTML
        .replace("/*serin:uplot-css*/", UPLOT_CSS)
        .replace("/*serin:app-css*/", APP_CSS)
        .replace("/*serin:app-js*/", APP_JS)
        .replace("/*serin:uplot-js*/", UPLOT_JS)
});

async fn page() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
                 connect-src 'self'; img-src 'self' data:",
            ),
        ],
        PAGE.as_str(),
    )
        .into_response()
}

async fn state(State(d): State<Arc<Dashboard>>) -> Response {
    let history = d
        .sampler
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .history();
    axum::Json(json!({
        "interval_ms": INTERVAL.as_millis() as u64,
        "history": history,
        "status": status::build(&d.proxy, &d.providers),
    }))
    .into_response()
}

/// One `update` event per sample, until the proxy drains (so a graceful
/// shutdown of the admin server does not wait for open pages).
async fn events(State(d): State<Arc<Dashboard>>) -> Response {
    let updates = d.updates.subscribe();
    let drain = d.proxy.shared().drain.subscribe();
    let stream =
        futures_util::stream::unfold((updates, drain), |(mut updates, mut drain)| async move {
            loop {
                if drain.borrow().is_some() {
                    return None;
                }
                tokio::select! {
                    update = updates.recv() => match update {
                        Ok(u) => {
                            let event = Event::default().event("update").data(&*u);
                            return Some((Ok::<_, Infallible>(event), (updates, drain)));
                        }
                        // A slow page misses samples; it gets the next one.
                        Err(broadcast::error::RecvError::Lagged(_)) => {}
                        Err(broadcast::error::RecvError::Closed) => return None,
                    },
                    changed = drain.changed() => if changed.is_err() { return None },
                }
            }
        });
    Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response()
}
