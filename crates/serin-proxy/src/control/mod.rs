//! The control plane of one running proxy: it binds listeners, starts the
//! worker threads, applies every change of the configuration through one
//! writer ([`edit`]), keeps endpoint sets in step with discovery, and drains
//! on shutdown.

mod edit;
mod follow;
mod install;
mod overrides;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use serin_config::ConfigErrors;
use serin_config::proxy::{ProxyConfig, RouteConfig};
use serin_discovery::{BackendKey, Registry};
use tokio::sync::watch;

pub use edit::{Applied, Change, EditError, MirrorChange};

use crate::metrics::Metrics;
use crate::server::{ListenerSocket, WorkerHandle};
use crate::shared::Shared;
use crate::{events, snapshot, state, stats, telemetry};

/// How a proxy is run.
#[derive(Debug, Clone, Default)]
pub struct ProxyOptions {
    /// Where run-time weight changes are kept; none: not kept.
    pub state_file: Option<PathBuf>,
    /// Reload when the config file changes.
    pub watch_config: bool,
    /// Run on each worker thread at every pool sweep (a few seconds apart):
    /// the binary's allocator gives back there what a burst left free. An
    /// allocator that returns memory only in the course of later
    /// allocations (mimalloc) never does so on a worker gone idle, so the
    /// memory of 2,000 requests at once stayed resident while their
    /// connections idled (bench/results/).
    pub worker_tidy: Option<fn()>,
}

/// Why a proxy did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{0}")]
    Config(#[from] ConfigErrors),
    #[error("cannot start worker thread: {0}")]
    Worker(std::io::Error),
    #[error(transparent)]
    State(#[from] state::StateError),
    #[error(transparent)]
    Edit(#[from] EditError),
}

/// What the one writer owns. Only [`Proxy::edit`] changes it, and holds it
/// from reading it to installing the result, so changes apply one at a
/// time, in order, each on top of the one before.
struct Control {
    /// The config as the file (or caller) gave it, before weight overrides.
    file_config: ProxyConfig,
    /// The run-time weight changes, as last persisted.
    state: state::StateFile,
    listeners: BTreeMap<SocketAddr, Arc<ListenerSocket>>,
    /// With `routes: kubernetes`: the routes from HTTPRoutes, which stand in
    /// for the file's on every apply.
    kubernetes_routes: Vec<RouteConfig>,
    /// Static endpoints this proxy put in the registry, by service.
    static_services: BTreeSet<String>,
    /// Active health-check tasks by backend, with the settings they run.
    /// With the id of the TLS setting they check over (0: plain TCP).
    health_checks: BTreeMap<BackendKey, (install::HealthCheck, tokio::task::AbortHandle)>,
    /// The trace exporter while tracing is on.
    exporter: Option<telemetry::Exporter>,
}

/// A running proxy.
pub struct Proxy {
    shared: Arc<Shared>,
    registry: Registry,
    options: ProxyOptions,
    workers: Mutex<Vec<WorkerHandle>>,
    control: Mutex<Control>,
    /// Bumped when a new snapshot is live.
    generation: watch::Sender<u64>,
    /// Recent changes of the running config, for the dashboard.
    events: events::EventLog,
}

impl Proxy {
    /// Binds every listener, starts the workers and serves `config`. Must be
    /// called inside a tokio runtime (the control plane's).
    pub fn start(
        config: ProxyConfig,
        registry: Registry,
        options: ProxyOptions,
    ) -> Result<Arc<Self>, StartError> {
        let metrics = Metrics::new();
        let saved = match &options.state_file {
            Some(p) => state::load(p)?,
            None => state::StateFile::default(),
        };
        let (drain, _) = watch::channel(None);
        let shared = Arc::new(Shared {
            // Replaced by the real one before any worker starts.
            snapshot: ArcSwap::from_pointee(snapshot::Snapshot::empty(&metrics)),
            metrics,
            drain,
            draining: AtomicBool::new(false),
            open_connections: AtomicUsize::new(0),
            backends: Mutex::new(BTreeMap::new()),
            worker_tidy: options.worker_tidy,
            tap: Arc::default(),
        });
        let (generation, _) = watch::channel(0);
        let workers = config.workers;
        let proxy = Arc::new(Self {
            shared: shared.clone(),
            registry,
            options,
            workers: Mutex::new(Vec::new()),
            control: Mutex::new(Control {
                file_config: config.clone(),
                state: state::StateFile::default(),
                listeners: BTreeMap::new(),
                kubernetes_routes: Vec::new(),
                static_services: BTreeSet::new(),
                health_checks: BTreeMap::new(),
                exporter: None,
            }),
            generation,
            events: events::EventLog::default(),
        });
        // The first config goes through the same writer as every later one;
        // the workers start once it is installed, and listen once they run.
        let bound = proxy.edit_at_start(config, saved).map_err(|e| match e {
            EditError::Config(errors) => StartError::Config(errors),
            other => StartError::Edit(other),
        })?;
        let mut handles = Vec::new();
        for id in 0..workers {
            handles.push(server::spawn_worker(id, shared.clone()).map_err(StartError::Worker)?);
        }
        *proxy.workers.lock().unwrap_or_else(|e| e.into_inner()) = handles;
        proxy.listen_on(bound);
        tokio::spawn(follow::endpoints(proxy.clone()));
        if proxy.options.watch_config {
            tokio::spawn(follow::config_file(proxy.clone()));
        }
        Ok(proxy)
    }

    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.shared.metrics
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The snapshot serving now.
    pub fn snapshot(&self) -> Arc<snapshot::Snapshot> {
        self.shared.snapshot.load_full()
    }

    /// Listener names and the addresses they are bound to.
    pub fn listener_addrs(&self) -> Vec<(String, SocketAddr)> {
        self.control()
            .listeners
            .values()
            .map(|l| (l.name(), l.address))
            .collect()
    }

    /// Recent changes of the running config, oldest first.
    pub fn events(&self) -> Vec<events::ControlEvent> {
        self.events.list()
    }

    /// A receiver that changes whenever a new snapshot is live.
    pub fn generations(&self) -> watch::Receiver<u64> {
        self.generation.subscribe()
    }

    /// The running config as given (file or caller), before run-time weight
    /// overrides.
    pub fn file_config(&self) -> ProxyConfig {
        self.control().file_config.clone()
    }

    /// The cumulative counters of every version of `service` that a route
    /// uses (diff two calls for a window).
    pub fn service_stats(&self, service: &str) -> BTreeMap<String, stats::StatsSnapshot> {
        self.shared
            .backends()
            .iter()
            .filter(|b| &*b.key.service == service)
            .map(|b| (b.key.version.to_string(), b.stats.snapshot()))
            .collect()
    }

    /// The cumulative shadow counters (request mirroring) of every version
    /// of `service` that a route uses (diff two calls for a window).
    pub fn shadow_stats(&self, service: &str) -> BTreeMap<String, stats::ShadowSnapshot> {
        self.shared
            .backends()
            .iter()
            .filter(|b| &*b.key.service == service)
            .map(|b| (b.key.version.to_string(), b.shadow.snapshot()))
            .collect()
    }

    fn control(&self) -> std::sync::MutexGuard<'_, Control> {
        // A panic while the writer held the lock was caught before it could
        // install anything (see `edit`), so the state behind it is whole.
        self.control.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Stops accepting, lets requests in flight finish (HTTP/1 answers with
    /// `Connection: close`, HTTP/2 gets GOAWAY) and returns when every
    /// connection closed or `timeout` passed.
    pub async fn drain(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        self.shared.draining.store(true, Ordering::Relaxed);
        self.shared.drain.send_replace(Some(deadline));
        let exporter = {
            let mut control = self.control();
            for l in control.listeners.values() {
                let _ = l.stop.send(true);
            }
            control.listeners.clear();
            control.exporter.take()
        };
        while self.shared.open_connections() > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let workers = std::mem::take(&mut *self.workers.lock().unwrap_or_else(|e| e.into_inner()));
        for mut w in workers {
            drop(w.commands);
            if let Some(t) = w.thread.take() {
                let _ = tokio::task::spawn_blocking(move || t.join()).await;
            }
        }
        // The spans of the last requests are exported before exit.
        if let Some(e) = exporter {
            let _ = tokio::task::spawn_blocking(move || e.shutdown()).await;
        }
    }
}

use crate::server;

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::{Duration, Instant};

    use super::*;

    static TIDIED_ON: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
    static TIDIES: AtomicUsize = AtomicUsize::new(0);

    fn note_tidy() {
        TIDIES.fetch_add(1, Ordering::Relaxed);
        let name = std::thread::current().name().unwrap_or("").to_string();
        if let Ok(mut names) = TIDIED_ON.lock() {
            names.push(name);
        }
    }

    /// The allocator hook runs on every worker thread (mimalloc's heaps
    /// are per thread, so a call elsewhere would trim the wrong heap).
    #[tokio::test]
    async fn worker_tidy_runs_on_each_worker_thread() {
        let yaml = "workers: 2\nlisteners:\n  - name: gw\n    address: 127.0.0.1:0\n\
                    services: []\nroutes: []\n";
        let config =
            serin_config::proxy::parse_proxy_config(yaml, "t.yaml", std::path::Path::new("."))
                .unwrap_or_else(|e| panic!("{e}"));
        let _proxy = Proxy::start(
            config,
            Registry::new(),
            ProxyOptions {
                worker_tidy: Some(note_tidy),
                ..ProxyOptions::default()
            },
        )
        .unwrap_or_else(|e| panic!("{e}"));
        // The pool sweep's first tick is at once.
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut names = Vec::new();
        while Instant::now() < deadline {
            names = TIDIED_ON.lock().map(|n| n.clone()).unwrap_or_default();
            names.sort();
            names.dedup();
            if names.len() == 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(names, ["serin-worker-0", "serin-worker-1"], "tidied on");
        assert!(TIDIES.load(Ordering::Relaxed) >= 2);
    }
}
