//! serin's data plane: listeners, the route table, backends and load
//! balancing, filters, metrics, access log, and the admin API.
//!
//! [`Proxy`] is the control plane of one running proxy: it binds listeners,
//! starts the worker threads, compiles configs into snapshots and swaps them
//! on reload, keeps endpoint sets in step with discovery, and drains on
//! shutdown.

pub mod admin;
mod balance;
pub mod body;
pub mod dashboard;
pub mod endpoints;
pub mod events;
mod ext_auth;
mod filters;
mod forward;
mod headers;
mod health;
pub mod metrics;
mod mirror;
mod outlier;
mod pool;
mod ratelimit;
mod resilience;
mod routing;
mod server;
pub mod snapshot;
pub mod state;
pub mod stats;
mod strict;
pub mod telemetry;
mod tls;
pub mod trace_context;
pub mod weights;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use rustc_hash::FxHashSet;
use serin_config::proxy::{ListenerConfig, ProxyConfig, RouteConfig};
use serin_config::{ConfigError, ConfigErrors};
use serin_discovery::{BackendKey, EndpointSpec, Registry};
use tokio::sync::watch;

use crate::endpoints::Backend;
use crate::metrics::{Metrics, ResultLabels};
use crate::server::{ListenerSettings, ListenerSocket, WorkerCommand, WorkerHandle};
use crate::snapshot::Snapshot;

/// State shared by the control plane and every worker.
pub struct Shared {
    pub snapshot: ArcSwap<Snapshot>,
    pub metrics: Arc<Metrics>,
    /// `Some(deadline)` once draining started.
    pub drain: watch::Sender<Option<Instant>>,
    /// Mirrors `drain` for the request path (a watch borrow takes a lock).
    draining: std::sync::atomic::AtomicBool,
    open_connections: AtomicUsize,
    backends: Mutex<BTreeMap<BackendKey, Arc<Backend>>>,
}

impl Shared {
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    pub fn drain_expired(&self) -> bool {
        self.drain
            .borrow()
            .is_some_and(|deadline| Instant::now() >= deadline)
    }

    pub fn open_connections(&self) -> usize {
        self.open_connections.load(Ordering::Relaxed)
    }

    fn connection_opened(&self) {
        self.open_connections.fetch_add(1, Ordering::Relaxed);
    }

    fn connection_closed(&self) {
        self.open_connections.fetch_sub(1, Ordering::Relaxed);
    }

    fn live_endpoint_ids(&self) -> FxHashSet<u64> {
        let backends = self.backends.lock().unwrap_or_else(|e| e.into_inner());
        backends
            .values()
            .flat_map(|b| b.endpoints().list.iter().map(|e| e.id).collect::<Vec<_>>())
            .collect()
    }

    /// The long-lived state of a backend, created on first use.
    fn backend(&self, key: &BackendKey, registry: &Registry) -> Arc<Backend> {
        let mut backends = self.backends.lock().unwrap_or_else(|e| e.into_inner());
        backends
            .entry(key.clone())
            .or_insert_with(|| {
                let b = Arc::new(Backend::new(key.clone()));
                b.set_endpoints(&registry.get(key));
                b
            })
            .clone()
    }

    pub fn backends(&self) -> Vec<Arc<Backend>> {
        let backends = self.backends.lock().unwrap_or_else(|e| e.into_inner());
        backends.values().cloned().collect()
    }
}

/// What [`Proxy::set_rule_mirror`] does to a rule's mirror to one backend.
#[derive(Debug, Clone)]
pub enum MirrorChange {
    /// Shadow `percent` of the rule's requests to `service/version`.
    Set(serin_config::proxy::MirrorConfig),
    /// No longer shadow to `service/version`.
    Remove { service: String, version: String },
}

/// How a proxy is run.
#[derive(Debug, Clone, Default)]
pub struct ProxyOptions {
    /// Where run-time weight changes are kept; none: not kept.
    pub state_file: Option<PathBuf>,
    /// Reload when the config file changes.
    pub watch_config: bool,
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
}

struct Control {
    /// The config as the file (or caller) gave it, before weight overrides.
    file_config: ProxyConfig,
    state: state::StateFile,
    listeners: BTreeMap<SocketAddr, Arc<ListenerSocket>>,
    /// With `routes: kubernetes`: the routes from HTTPRoutes, which stand in
    /// for the file's on every apply.
    kubernetes_routes: Vec<RouteConfig>,
}

/// A running proxy.
pub struct Proxy {
    shared: Arc<Shared>,
    registry: Registry,
    options: ProxyOptions,
    workers: Mutex<Vec<WorkerHandle>>,
    control: Mutex<Control>,
    /// Static endpoints this proxy put in the registry, by service.
    static_services: Mutex<BTreeSet<String>>,
    /// Bumped when a new snapshot is live.
    generation: watch::Sender<u64>,
    /// The trace exporter while tracing is on.
    exporter: Mutex<Option<telemetry::Exporter>>,
    /// Recent changes of the running config, for the dashboard.
    events: events::EventLog,
    /// Active health-check tasks by backend, with the settings they run.
    health_checks: Mutex<
        BTreeMap<
            BackendKey,
            (
                serin_config::proxy::HealthCheckConfig,
                tokio::task::AbortHandle,
            ),
        >,
    >,
}

fn bind_error(
    l: &serin_config::proxy::ListenerConfig,
    file: &str,
    e: &std::io::Error,
) -> ConfigError {
    ConfigError {
        file: file.into(),
        line: l.span.line,
        column: l.span.col,
        path: l.path.clone(),
        message: format!("cannot listen on {}: {e}", l.address),
    }
}

fn config_file_name(cfg: &ProxyConfig) -> String {
    cfg.source
        .as_ref()
        .map_or_else(|| "<config>".to_string(), |p| p.display().to_string())
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
        let state = match &options.state_file {
            Some(p) => state::load(p)?,
            None => state::StateFile::default(),
        };
        // Bind first: an address in use is a config error at its line.
        let listeners = bind_all(&config, &BTreeMap::new())?;
        for (l, sock) in &listeners {
            if let Some(t) = &l.tls {
                let acceptor = tls::acceptor(&t.certificate, &t.key).map_err(|e| {
                    ConfigErrors(vec![ConfigError {
                        file: config_file_name(&config).into(),
                        line: l.span.line,
                        column: l.span.col,
                        path: l.path.clone(),
                        message: e.to_string(),
                    }])
                })?;
                sock.settings.store(Arc::new(ListenerSettings {
                    config: l.clone(),
                    tls: Some(acceptor),
                }));
            }
        }
        let mut effective = config.clone();
        let state = apply_state(&mut effective, state);
        let (drain, _) = watch::channel(None);
        let shared = Arc::new(Shared {
            // Replaced by the real one before any worker starts.
            snapshot: ArcSwap::from_pointee(snapshot::compile(
                Arc::new(ProxyConfig::minimal(Vec::new(), Vec::new(), Vec::new())),
                &metrics,
                |key| Arc::new(Backend::new(key.clone())),
            )),
            metrics,
            drain,
            draining: std::sync::atomic::AtomicBool::new(false),
            open_connections: AtomicUsize::new(0),
            backends: Mutex::new(BTreeMap::new()),
        });
        let (generation, _) = watch::channel(0);
        let proxy = Arc::new(Self {
            shared: shared.clone(),
            registry: registry.clone(),
            options,
            workers: Mutex::new(Vec::new()),
            control: Mutex::new(Control {
                file_config: config,
                state,
                listeners: BTreeMap::new(),
                kubernetes_routes: Vec::new(),
            }),
            static_services: Mutex::new(BTreeSet::new()),
            generation,
            exporter: Mutex::new(None),
            events: events::EventLog::default(),
            health_checks: Mutex::new(BTreeMap::new()),
        });
        proxy.publish_static_endpoints(&effective);
        proxy.install_snapshot(effective);
        let mut workers = Vec::new();
        for id in 0..proxy.shared.snapshot.load().config.workers {
            workers.push(server::spawn_worker(id, shared.clone()).map_err(StartError::Worker)?);
        }
        *proxy.workers.lock().unwrap_or_else(|e| e.into_inner()) = workers;
        proxy.activate_listeners(listeners);
        tokio::spawn(follow_endpoints(proxy.clone()));
        if proxy.options.watch_config {
            tokio::spawn(watch_file(proxy.clone()));
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
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.shared.snapshot.load_full()
    }

    /// Listener names and the addresses they are bound to.
    pub fn listener_addrs(&self) -> Vec<(String, SocketAddr)> {
        let control = self.control.lock().unwrap_or_else(|e| e.into_inner());
        control
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

    fn publish_static_endpoints(&self, config: &ProxyConfig) {
        let mut statics = self
            .static_services
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let mut now = BTreeSet::new();
        for s in &config.services {
            let versions: BTreeMap<String, Vec<EndpointSpec>> = s
                .versions
                .iter()
                .filter_map(|v| {
                    let eps = v.endpoints.as_ref()?;
                    Some((
                        v.name.clone(),
                        eps.iter()
                            .map(|a| EndpointSpec {
                                addr: *a,
                                name: a.to_string().into(),
                            })
                            .collect(),
                    ))
                })
                .collect();
            if !versions.is_empty() {
                self.registry.set_service(&s.name, versions);
                now.insert(s.name.clone());
            }
        }
        for gone in statics.difference(&now) {
            self.registry.set_service(gone, BTreeMap::new());
        }
        *statics = now;
    }

    fn install_snapshot(&self, effective: ProxyConfig) {
        let mut snap = snapshot::compile(Arc::new(effective), &self.shared.metrics, |key| {
            self.shared.backend(key, &self.registry)
        });
        snap.tracer = self.tracer_for(snap.config.tracing.as_ref());
        // Backends no route uses any more are forgotten.
        let rules = || snap.config.routes.iter().flat_map(|r| r.rules.iter());
        let referenced: BTreeSet<BackendKey> = rules()
            .flat_map(|rule| rule.backends.iter())
            .map(|b| BackendKey::new(&b.service, &b.version))
            .chain(
                rules()
                    .flat_map(|rule| rule.filters.iter())
                    .filter_map(|f| match f {
                        serin_config::proxy::FilterConfig::ExternalAuth(a) => {
                            Some(BackendKey::new(&a.service, &a.version))
                        }
                        serin_config::proxy::FilterConfig::RequestMirror(m) => {
                            Some(BackendKey::new(&m.service, &m.version))
                        }
                        _ => None,
                    }),
            )
            .collect();
        let checks: BTreeMap<BackendKey, serin_config::proxy::HealthCheckConfig> = snap
            .config
            .services
            .iter()
            .filter_map(|s| Some((s, s.health_check.clone()?)))
            .flat_map(|(s, hc)| {
                s.versions
                    .iter()
                    .map(move |v| (BackendKey::new(&s.name, &v.name), hc.clone()))
            })
            .filter(|(k, _)| referenced.contains(k))
            .collect();
        self.shared.snapshot.store(Arc::new(snap));
        self.restart_health_checks(checks);
        self.shared
            .backends
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|k, _| referenced.contains(k));
        self.generation.send_modify(|g| *g += 1);
    }

    /// Starts, keeps or stops health-check tasks so that exactly `wanted`
    /// run, each with its settings.
    fn restart_health_checks(
        &self,
        wanted: BTreeMap<BackendKey, serin_config::proxy::HealthCheckConfig>,
    ) {
        let mut running = self.health_checks.lock().unwrap_or_else(|e| e.into_inner());
        running.retain(|key, (cfg, task)| {
            let keep = wanted.get(key) == Some(cfg);
            if !keep {
                task.abort();
            }
            keep
        });
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        for (key, cfg) in wanted {
            if running.contains_key(&key) {
                continue;
            }
            let backend = self.shared.backend(&key, &self.registry);
            let task = rt.spawn(health::run(backend, cfg.clone()));
            running.insert(key, (cfg, task.abort_handle()));
        }
    }

    fn activate_listeners(&self, bound: Vec<(ListenerConfig, Arc<ListenerSocket>)>) {
        let workers = self.workers.lock().unwrap_or_else(|e| e.into_inner());
        let mut control = self.control.lock().unwrap_or_else(|e| e.into_inner());
        // Stop listeners the config no longer has.
        let keep: BTreeSet<SocketAddr> = bound.iter().map(|(_, s)| s.address).collect();
        control.listeners.retain(|addr, l| {
            let kept = keep.contains(addr);
            if !kept {
                let _ = l.stop.send(true);
            }
            kept
        });
        for (config, sock) in bound {
            // TLS files were checked before; a failure here means they
            // changed since, and the listener keeps its previous acceptor.
            let tls = match &config.tls {
                None => None,
                Some(t) => match tls::acceptor(&t.certificate, &t.key) {
                    Ok(a) => Some(a),
                    Err(e) => {
                        tracing::error!(listener = %config.name, error = %e, "TLS not reloaded");
                        sock.settings.load().tls.clone()
                    }
                },
            };
            sock.settings
                .store(Arc::new(ListenerSettings { config, tls }));
            if let std::collections::btree_map::Entry::Vacant(slot) =
                control.listeners.entry(sock.address)
            {
                for w in workers.iter() {
                    let _ = w.commands.send(WorkerCommand::Listen(sock.clone()));
                }
                slot.insert(sock);
            }
        }
    }

    /// Validates `config` (binding new listeners, loading TLS files) and, if
    /// all is well, makes it the running config. Otherwise nothing changes.
    pub fn apply_config(&self, config: ProxyConfig) -> Result<(), ConfigErrors> {
        let routes = config.routes.len();
        let result = self.try_apply(config);
        let label = if result.is_ok() { "success" } else { "failure" };
        match &result {
            Ok(()) => self.events.record(
                "config-applied",
                format!("configuration applied ({routes} routes)"),
            ),
            Err(e) => self.record_rejected(e),
        }
        self.shared
            .metrics
            .reloads
            .get_or_create(&ResultLabels {
                result: label.to_string(),
            })
            .inc();
        result
    }

    fn try_apply(&self, mut config: ProxyConfig) -> Result<(), ConfigErrors> {
        let (existing, old_file, state) = {
            let control = self.control.lock().unwrap_or_else(|e| e.into_inner());
            if config.routes_from_kubernetes {
                config.routes = control.kubernetes_routes.clone();
            }
            (
                control.listeners.clone(),
                control.file_config.clone(),
                control.state.clone(),
            )
        };
        // Workers are fixed for the life of the process.
        config.workers = old_file.workers;
        // So is the admin API's listener, and a token from the command line.
        config.admin.carry_over(&old_file.admin);
        serin_config::proxy::admin::check(&config).map_err(|e| e.into_config_errors())?;
        let file = config_file_name(&config);
        let mut errors = Vec::new();
        for l in &config.listeners {
            if let Some(t) = &l.tls
                && let Err(e) = tls::acceptor(&t.certificate, &t.key)
            {
                errors.push(ConfigError {
                    file: file.as_str().into(),
                    line: l.span.line,
                    column: l.span.col,
                    path: format!("{}.tls", l.path.trim_end_matches(".address")),
                    message: e.to_string(),
                });
            }
        }
        if !errors.is_empty() {
            return Err(ConfigErrors(errors));
        }
        let bound = bind_all(&config, &existing)?;
        let mut state = state;
        drop_changed_overrides(&old_file, &config, &mut state);
        let mut effective = config.clone();
        let state = apply_state(&mut effective, state);
        {
            let mut control = self.control.lock().unwrap_or_else(|e| e.into_inner());
            control.file_config = config;
            control.state = state.clone();
        }
        self.save_state(&state);
        self.publish_static_endpoints(&effective);
        self.install_snapshot(effective);
        self.activate_listeners(bound);
        Ok(())
    }

    // ---- Routes from Kubernetes HTTPRoutes (`routes: kubernetes`) ----

    /// The running config as given (file or caller), before run-time weight
    /// overrides.
    pub fn file_config(&self) -> ProxyConfig {
        let control = self.control.lock().unwrap_or_else(|e| e.into_inner());
        control.file_config.clone()
    }

    /// Serves `routes` (from HTTPRoutes) in place of the file's, now and
    /// after every reload, through the same validated apply as a reload; when
    /// that fails nothing changes. Only for a config with `routes:
    /// kubernetes`.
    pub fn set_kubernetes_routes(&self, routes: Vec<RouteConfig>) -> Result<(), ConfigErrors> {
        let (file, previous) = {
            let mut control = self.control.lock().unwrap_or_else(|e| e.into_inner());
            let previous = std::mem::replace(&mut control.kubernetes_routes, routes);
            (control.file_config.clone(), previous)
        };
        if !file.routes_from_kubernetes {
            let mut control = self.control.lock().unwrap_or_else(|e| e.into_inner());
            control.kubernetes_routes = previous;
            return Err(ConfigErrors(vec![ConfigError {
                file: config_file_name(&file).into(),
                line: 0,
                column: 0,
                path: "routes".into(),
                message: "routes come from this file, not from Kubernetes".into(),
            }]));
        }
        let result = self.apply_config(file);
        if result.is_err() {
            let mut control = self.control.lock().unwrap_or_else(|e| e.into_inner());
            control.kubernetes_routes = previous;
        }
        result
    }

    // ---- end of routes from Kubernetes ----

    /// Reloads the config file this proxy was started from.
    pub fn reload_from_file(&self) -> Result<(), ConfigErrors> {
        let path = {
            let control = self.control.lock().unwrap_or_else(|e| e.into_inner());
            control.file_config.source.clone()
        };
        let Some(path) = path else {
            return Err(ConfigErrors(vec![ConfigError {
                file: "<none>".into(),
                line: 0,
                column: 0,
                path: String::new(),
                message: "this proxy was not started from a config file".into(),
            }]));
        };
        let config = serin_config::proxy::load_proxy_config(&path).inspect_err(|e| {
            self.record_rejected(e);
            self.shared
                .metrics
                .reloads
                .get_or_create(&ResultLabels {
                    result: "failure".to_string(),
                })
                .inc();
        })?;
        self.apply_config(config)
    }

    fn record_rejected(&self, errors: &ConfigErrors) {
        let first = errors
            .0
            .first()
            .map(ToString::to_string)
            .unwrap_or_default();
        self.events.record(
            "config-rejected",
            format!(
                "configuration rejected ({} problems): {first}",
                errors.0.len()
            ),
        );
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

    /// Changes weights of a route at run time and keeps them in the state
    /// file. See [`weights::WeightChange`].
    pub fn set_weights(
        &self,
        change: &weights::WeightChange,
    ) -> Result<weights::RouteWeights, weights::WeightError> {
        let mut control = self.control.lock().unwrap_or_else(|e| e.into_inner());
        let current = self.shared.snapshot.load().config.clone();
        let updates = weights::resolve(&current, change)?;
        let mut state = control.state.clone();
        for (rule, w) in &updates {
            state
                .weights
                .entry(change.route.clone())
                .or_default()
                .insert(*rule, w.clone());
        }
        let mut effective = control.file_config.clone();
        effective
            .apply_weights(&state.weights)
            .map_err(weights::WeightError::Invalid)?;
        control.state = state.clone();
        drop(control);
        self.save_state(&state);
        self.install_snapshot(effective);
        self.events.record(
            "weights",
            format!(
                "route {}: weights {}",
                change.route,
                change
                    .weights
                    .iter()
                    .map(|(v, w)| format!("{v}={w}"))
                    .collect::<Vec<_>>()
                    .join(" ")
            ),
        );
        weights::route_weights(&self.shared.snapshot.load().config, &change.route)
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

    /// Sets (`Some`) or removes (`None`) the RequestMirror filter of rule
    /// `rule` of route `route` that shadows to `mirror.service` and
    /// `mirror.version` (a filter to that backend is replaced), at run time:
    /// served at once, not kept in the state file, and gone after the next
    /// reload of the file (like [`Proxy::add_rule`]). The canary's mirror
    /// step uses it. Removing a mirror the rule does not have changes
    /// nothing.
    pub fn set_rule_mirror(
        &self,
        route: &str,
        rule: usize,
        mirror: MirrorChange,
    ) -> Result<(), weights::WeightError> {
        use serin_config::proxy::FilterConfig;
        let (service, version, percent) = match &mirror {
            MirrorChange::Set(m) => (m.service.as_str(), m.version.as_str(), Some(m.percent)),
            MirrorChange::Remove { service, version } => (service.as_str(), version.as_str(), None),
        };
        let mut control = self.control.lock().unwrap_or_else(|e| e.into_inner());
        let mut file = control.file_config.clone();
        if percent.is_some() {
            let known = file
                .services
                .iter()
                .find(|s| s.name == service)
                .is_some_and(|s| s.versions.iter().any(|v| v.name == version));
            if !known {
                return Err(weights::WeightError::Invalid(format!(
                    "no service version {service}/{version} to mirror to"
                )));
            }
        }
        if let Some(p) = percent
            && !(p.is_finite() && p > 0.0 && p <= 100.0)
        {
            return Err(weights::WeightError::Invalid(format!(
                "a mirror's percent must be above 0 and at most 100, found {p}"
            )));
        }
        let r = file
            .routes
            .iter_mut()
            .find(|r| r.name == route)
            .ok_or_else(|| weights::WeightError::UnknownRoute(route.to_string()))?;
        let n = r.rules.len();
        let target = r.rules.get_mut(rule).ok_or_else(|| {
            weights::WeightError::Invalid(format!("route `{route}` has {n} rules, no rule {rule}"))
        })?;
        let note = match percent {
            Some(p) => (
                "mirror-set",
                format!("route {route} rule {rule}: mirror {p}% to {service}/{version}"),
            ),
            None => (
                "mirror-removed",
                format!("route {route} rule {rule}: no mirror to {service}/{version}"),
            ),
        };
        let before = target.filters.len();
        target.filters.retain(|f| {
            !matches!(f, FilterConfig::RequestMirror(m) if m.service == service && m.version == version)
        });
        let removed = target.filters.len() != before;
        match mirror {
            MirrorChange::Set(m) => target.filters.push(FilterConfig::RequestMirror(m)),
            MirrorChange::Remove { .. } if !removed => return Ok(()),
            MirrorChange::Remove { .. } => {}
        }
        let mut effective = file.clone();
        effective
            .apply_weights(&control.state.weights)
            .map_err(weights::WeightError::Invalid)?;
        control.file_config = file;
        drop(control);
        self.install_snapshot(effective);
        self.events.record(note.0, note.1);
        Ok(())
    }

    /// Adds a rule to route `route` at run time, after the rules of the
    /// file (so every file rule keeps its index, and the weights kept for
    /// it), and serves it at once; a rule with the same name is replaced.
    /// It lives until [`Proxy::remove_rule`] or the next reload of the file,
    /// and is not kept in the state file. The canary's header step uses it.
    /// Gives the rule's index.
    pub fn add_rule(
        &self,
        route: &str,
        rule: serin_config::proxy::RuleConfig,
    ) -> Result<usize, weights::WeightError> {
        let mut control = self.control.lock().unwrap_or_else(|e| e.into_inner());
        let mut file = control.file_config.clone();
        let r = file
            .routes
            .iter_mut()
            .find(|r| r.name == route)
            .ok_or_else(|| weights::WeightError::UnknownRoute(route.to_string()))?;
        let same = rule
            .name
            .as_ref()
            .and_then(|n| r.rules.iter().position(|x| x.name.as_ref() == Some(n)));
        let index = match same {
            Some(i) => {
                r.rules[i] = rule;
                i
            }
            None => {
                r.rules.push(rule);
                r.rules.len() - 1
            }
        };
        let mut effective = file.clone();
        effective
            .apply_weights(&control.state.weights)
            .map_err(weights::WeightError::Invalid)?;
        control.file_config = file;
        drop(control);
        self.install_snapshot(effective);
        self.events
            .record("rule-added", format!("route {route}: rule {index} added"));
        Ok(index)
    }

    /// Removes a rule added by [`Proxy::add_rule`], by name; false when the
    /// route has no rule of that name. (Meant for those rules only: they
    /// come after the file's, so no file rule changes its index.)
    pub fn remove_rule(&self, route: &str, name: &str) -> bool {
        let mut control = self.control.lock().unwrap_or_else(|e| e.into_inner());
        let mut file = control.file_config.clone();
        let Some(r) = file.routes.iter_mut().find(|r| r.name == route) else {
            return false;
        };
        let before = r.rules.len();
        r.rules.retain(|x| x.name.as_deref() != Some(name));
        if r.rules.len() == before {
            return false;
        }
        let mut effective = file.clone();
        if let Err(e) = effective.apply_weights(&control.state.weights) {
            tracing::warn!(error = %e, "weight changes not applied");
        }
        control.file_config = file;
        drop(control);
        self.install_snapshot(effective);
        self.events.record(
            "rule-removed",
            format!("route {route}: rule {name} removed"),
        );
        true
    }

    fn save_state(&self, state: &state::StateFile) {
        if let Some(path) = &self.options.state_file
            && let Err(e) = state::save(path, state)
        {
            tracing::error!(error = %e, "cannot keep weights in the state file");
        }
    }

    /// The tracer for a config's tracing; the exporter is restarted when
    /// the tracing settings changed (the old one exports what it holds on
    /// its own thread).
    fn tracer_for(
        &self,
        config: Option<&serin_config::proxy::TracingConfig>,
    ) -> Option<telemetry::Tracer> {
        let wanted = telemetry::wanted(config);
        let mut slot = self.exporter.lock().unwrap_or_else(|e| e.into_inner());
        if slot.as_ref().map(|e| &e.config) != wanted.as_ref() {
            if let Some(old) = slot.take() {
                std::thread::spawn(move || old.shutdown());
            }
            if let Some(cfg) = &wanted {
                match telemetry::Exporter::start(cfg) {
                    Ok(e) => {
                        tracing::info!(
                            endpoint = cfg
                                .traces_url()
                                .as_deref()
                                .unwrap_or("(from OTEL_EXPORTER_OTLP_* variables)"),
                            "exporting traces over OTLP/HTTP"
                        );
                        *slot = Some(e);
                    }
                    Err(e) => tracing::error!(error = %e, "tracing is off"),
                }
            }
        }
        slot.as_ref().map(telemetry::Exporter::tracer)
    }

    /// Stops accepting, lets requests in flight finish (HTTP/1 answers with
    /// `Connection: close`, HTTP/2 gets GOAWAY) and returns when every
    /// connection closed or `timeout` passed.
    pub async fn drain(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        self.shared.draining.store(true, Ordering::Relaxed);
        self.shared.drain.send_replace(Some(deadline));
        {
            let mut control = self.control.lock().unwrap_or_else(|e| e.into_inner());
            for l in control.listeners.values() {
                let _ = l.stop.send(true);
            }
            control.listeners.clear();
        }
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
        let exporter = self
            .exporter
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(e) = exporter {
            let _ = tokio::task::spawn_blocking(move || e.shutdown()).await;
        }
    }
}

/// Binds the listeners of `config` whose address is not bound yet; every
/// failure is reported against its line.
fn bind_all(
    config: &ProxyConfig,
    existing: &BTreeMap<SocketAddr, Arc<ListenerSocket>>,
) -> Result<Vec<(ListenerConfig, Arc<ListenerSocket>)>, ConfigErrors> {
    let file = config_file_name(config);
    let mut out = Vec::new();
    let mut errors = Vec::new();
    for l in &config.listeners {
        // Port 0 means "any port": the socket is the same listener only if
        // the name is too.
        let reuse = existing
            .values()
            .find(|s| s.configured == l.address && (l.address.port() != 0 || s.name() == l.name));
        if let Some(sock) = reuse {
            out.push((l.clone(), sock.clone()));
            continue;
        }
        match ListenerSocket::bind(l) {
            Ok(sock) => out.push((l.clone(), Arc::new(sock))),
            Err(e) => errors.push(bind_error(l, &file, &e)),
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(ConfigErrors(errors))
    }
}

/// Applies the state file's weights; entries that no longer fit the config
/// are dropped with a warning rather than refusing to start.
fn apply_state(config: &mut ProxyConfig, mut state: state::StateFile) -> state::StateFile {
    let snapshot = config.clone();
    state.weights.retain(|route, rules| {
        rules.retain(|rule, weights| {
            let mut one = BTreeMap::new();
            one.insert(route.clone(), BTreeMap::from([(*rule, weights.clone())]));
            let mut probe = snapshot.clone();
            match probe.apply_weights(&one) {
                Ok(()) => true,
                Err(e) => {
                    tracing::warn!(route, rule, error = %e, "dropping a stale weight change");
                    false
                }
            }
        });
        !rules.is_empty()
    });
    if let Err(e) = config.apply_weights(&state.weights) {
        tracing::warn!(error = %e, "weight changes not applied");
    }
    state
}

/// When a reload changes a rule's weights in the file, the file wins over an
/// earlier run-time change of that rule.
fn drop_changed_overrides(old: &ProxyConfig, new: &ProxyConfig, state: &mut state::StateFile) {
    let weights_of = |cfg: &ProxyConfig, route: &str, rule: usize| {
        cfg.routes
            .iter()
            .find(|r| r.name == route)
            .and_then(|r| r.rules.get(rule))
            .map(|r| r.backends.clone())
    };
    state.weights.retain(|route, rules| {
        rules.retain(|rule, _| weights_of(old, route, *rule) == weights_of(new, route, *rule));
        !rules.is_empty()
    });
}

/// Keeps every backend's endpoints in step with the registry.
async fn follow_endpoints(proxy: Arc<Proxy>) {
    let mut changes = proxy.registry.subscribe();
    let mut generations = proxy.generation.subscribe();
    loop {
        for b in proxy.shared.backends() {
            b.set_endpoints(&proxy.registry.get(&b.key));
        }
        tokio::select! {
            r = changes.changed() => if r.is_err() { break },
            r = generations.changed() => if r.is_err() { break },
        }
        if proxy.shared.is_draining() {
            break;
        }
    }
}

/// Reloads when the config file's contents change (polled: works with every
/// editor's save, including rename-over).
async fn watch_file(proxy: Arc<Proxy>) {
    let path = {
        let control = proxy.control.lock().unwrap_or_else(|e| e.into_inner());
        control.file_config.source.clone()
    };
    let Some(path) = path else { return };
    let mut last = std::fs::read(&path).ok();
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        tick.tick().await;
        if proxy.shared.is_draining() {
            return;
        }
        let now = std::fs::read(&path).ok();
        if now.is_some() && now != last {
            last = now;
            match proxy.reload_from_file() {
                Ok(()) => tracing::info!(file = %path.display(), "configuration reloaded"),
                Err(e) => {
                    tracing::error!(file = %path.display(), "configuration rejected; the running one stays:\n{e}")
                }
            }
        }
    }
}
