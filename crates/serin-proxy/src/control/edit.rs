//! The one writer of the running configuration. Every change — a reload
//! from any source, routes from HTTPRoutes, a weight change, a canary's
//! mirror or rule — is a [`Change`] applied by [`Proxy::edit`] while it
//! holds the control state: plan → validate → build → persist → install →
//! record. A change is acknowledged only once it is persisted and serving,
//! and the next one starts from it, so none is lost or applied out of order.

use std::panic::AssertUnwindSafe;

use serin_config::proxy::{
    FilterConfig, MirrorConfig, ProxyConfig, RouteConfig, RuleConfig, WeightOverrideError,
};
use serin_config::{ConfigError, ConfigErrors};

use super::{Control, Proxy, overrides};
use crate::metrics::ResultLabels;
use crate::server::ListenerSocket;
use crate::state::{self, StateError, StateFile};
use crate::weights::{self, RouteWeights, WeightChange, WeightError};
use serin_config::proxy::ListenerConfig;
use std::sync::Arc;

/// One change of the running configuration.
#[derive(Debug, Clone)]
pub enum Change {
    /// Read the config file again (SIGHUP, `POST /reload`, the watcher).
    ReloadFile,
    /// A whole new config from the caller (`serin up`'s gateway and mesh).
    Config(ProxyConfig),
    /// Routes from HTTPRoutes, serving in place of the file's (`routes:
    /// kubernetes`).
    KubernetesRoutes(Vec<RouteConfig>),
    /// Weights of a route's rules, kept in the state file.
    Weights(WeightChange),
    /// A rule's mirror to one backend (the canary's mirror step); not kept
    /// in the state file, and gone after the next reload of the file.
    Mirror {
        route: String,
        rule: usize,
        change: MirrorChange,
    },
    /// A rule added after the file's rules of `route` (so every file rule
    /// keeps its index and its kept weights), replacing one of the same
    /// name; lives until removed or the next reload (the canary's header
    /// step).
    AddRule { route: String, rule: RuleConfig },
    /// Removes a rule added by [`Change::AddRule`], by name.
    RemoveRule { route: String, name: String },
}

impl Change {
    /// Whether it replaces the config as a whole (counted as a reload).
    fn is_reload(&self) -> bool {
        matches!(
            self,
            Self::ReloadFile | Self::Config(_) | Self::KubernetesRoutes(_)
        )
    }
}

/// What [`Change::Mirror`] does to a rule's mirror to one backend.
#[derive(Debug, Clone)]
pub enum MirrorChange {
    /// Shadow `percent` of the rule's requests to `service/version`.
    Set(MirrorConfig),
    /// No longer shadow to `service/version`.
    Remove { service: String, version: String },
}

/// What an applied change did.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Applied {
    /// False when there was nothing to do (removing what is not there).
    pub changed: bool,
    /// Run-time weight changes this reload replaced: the file changed the
    /// weights of these rules (route, rule index), and there the file wins.
    pub replaced: Vec<(String, usize)>,
    /// The index of the rule [`Change::AddRule`] added or replaced.
    pub rule: Option<usize>,
    /// With [`Change::Weights`]: the route's weights now.
    pub weights: Option<RouteWeights>,
    /// The change is in the state file and survives a restart.
    pub persisted: bool,
}

/// Why a change was refused. Nothing changed.
#[derive(Debug, thiserror::Error)]
pub enum EditError {
    /// The new config does not validate, or a listener cannot be bound.
    #[error("{0}")]
    Config(#[from] ConfigErrors),
    #[error(transparent)]
    Weights(#[from] WeightError),
    #[error("route `{route}` has {rules} rules, no rule {rule}")]
    NoRule {
        route: String,
        rule: usize,
        rules: usize,
    },
    #[error("no service version {service}/{version}, named by {by}")]
    UnknownBackend {
        service: String,
        version: String,
        by: String,
    },
    #[error("a mirror's percent must be from 0 to 100, found {0}")]
    MirrorPercent(f64),
    #[error("{0}")]
    Snapshot(#[from] crate::snapshot::SnapshotError),
    #[error("the run-time weights do not fit: {0}")]
    Overrides(#[from] WeightOverrideError),
    #[error("routes come from this file, not from Kubernetes")]
    NotKubernetesRoutes,
    #[error("this proxy was not started from a config file")]
    NoConfigFile,
    /// The state file cannot be written: the change is refused rather than
    /// served and then lost at the next restart.
    #[error("not applied, since it cannot be kept: {0}")]
    Persist(#[from] StateError),
    /// A bug: building the new configuration panicked. Caught, so the
    /// running configuration stays and the process serves on.
    #[error("internal error while building the configuration, nothing changed: {0}")]
    Internal(String),
}

impl EditError {
    /// Whether the change named something that does not exist (a route).
    pub fn is_not_found(&self) -> bool {
        matches!(self, Self::Weights(WeightError::UnknownRoute(_)))
    }

    /// Whether the fault is serin's (state file, bug) rather than the
    /// change's.
    pub fn is_internal(&self) -> bool {
        matches!(self, Self::Persist(_) | Self::Internal(_))
    }

    /// As config problems, for callers that report per file (HTTPRoutes):
    /// a problem that is not the config's is reported against `file`.
    pub fn into_config_errors(self, file: &str) -> ConfigErrors {
        match self {
            Self::Config(e) => e,
            other => ConfigErrors(vec![ConfigError {
                file: file.into(),
                line: 1,
                column: 1,
                path: "routes".into(),
                message: other.to_string(),
            }]),
        }
    }
}

/// What the dashboard's event log records of a change: its kind and text.
type Event = (&'static str, String);

/// A change worked out against the control state, not yet applied.
struct Plan {
    file: ProxyConfig,
    state: StateFile,
    kubernetes_routes: Option<Vec<RouteConfig>>,
    /// Listeners may have changed: bind what is new.
    rebind: bool,
    event: Event,
    /// What the new file says that is valid but likely a mistake; logged
    /// once it serves.
    warnings: Vec<serin_config::ConfigError>,
    applied: Applied,
}

impl Proxy {
    /// Applies `change` on top of every change before it, or refuses it and
    /// changes nothing. The one way the running configuration changes.
    pub fn edit(&self, change: Change) -> Result<Applied, EditError> {
        let reload = change.is_reload();
        let mut control = self.control();
        let result = self.apply(&mut control, change);
        drop(control);
        match &result {
            Ok(applied) if applied.changed => {}
            Ok(_) => return result,
            Err(e) if reload => self.record_rejected(e),
            Err(_) => {}
        }
        if reload {
            let result_label = if result.is_ok() { "success" } else { "failure" };
            self.shared
                .metrics
                .reloads
                .get_or_create(&ResultLabels {
                    result: result_label.to_string(),
                })
                .inc();
        }
        result
    }

    fn apply(&self, control: &mut Control, change: Change) -> Result<Applied, EditError> {
        let Some(plan) = caught(|| plan(control, change))? else {
            return Ok(Applied::default());
        };
        let mut effective = plan.file.clone();
        effective.apply_weights(&plan.state.weights)?;
        check_references(&effective)?;
        let bound = if plan.rebind {
            Some(bind_all(&effective, control)?)
        } else {
            None
        };
        let snapshot = caught(|| Ok(self.build(effective)?))?;
        if plan.state != control.state
            && let Some(path) = &self.options.state_file
        {
            state::save(path, &plan.state)?;
        }
        self.install(control, snapshot);
        if let Some(bound) = bound {
            self.activate_listeners(control, bound);
        }
        control.file_config = plan.file;
        control.state = plan.state;
        if let Some(routes) = plan.kubernetes_routes {
            control.kubernetes_routes = routes;
        }
        for (route, rule) in &plan.applied.replaced {
            tracing::warn!(
                route,
                rule,
                "the file changed this rule's weights: it replaces the run-time weight change"
            );
        }
        self.events.record(plan.event.0, plan.event.1);
        self.warn(&plan.warnings);
        let mut applied = plan.applied;
        if applied.weights.is_some() {
            applied.persisted = self.options.state_file.is_some();
        }
        Ok(applied)
    }

    /// Binds and validates the first config and serves it; the listeners
    /// are returned for the workers to take once they run.
    pub(super) fn edit_at_start(
        &self,
        config: ProxyConfig,
        saved: StateFile,
    ) -> Result<Vec<(ListenerConfig, Arc<ListenerSocket>)>, EditError> {
        let mut control = self.control();
        let (state, dropped) = overrides::fitting(&config, saved);
        for (route, rule) in dropped {
            tracing::warn!(
                route,
                rule,
                "dropping a stale weight change from the state file"
            );
        }
        let mut effective = config.clone();
        effective.apply_weights(&state.weights)?;
        let bound = bind_all(&effective, &control)?;
        let snapshot = caught(|| Ok(self.build(effective)?))?;
        self.install(&mut control, snapshot);
        self.warn(&config.warnings);
        control.file_config = config;
        control.state = state;
        Ok(bound)
    }

    /// Logs what the config says that is valid but likely a mistake (a rule
    /// that answers 500), and shows it in the dashboard's events.
    fn warn(&self, warnings: &[serin_config::ConfigError]) {
        for w in warnings {
            tracing::warn!("configuration warning: {w}");
            self.events.record("config-warning", w.to_string());
        }
    }

    fn record_rejected(&self, error: &EditError) {
        let text = match error {
            EditError::Config(errors) => format!(
                "configuration rejected ({} problems): {}",
                errors.len(),
                errors
                    .iter()
                    .next()
                    .map(ToString::to_string)
                    .unwrap_or_default()
            ),
            other => format!("configuration rejected: {other}"),
        };
        self.events.record("config-rejected", text);
    }

    /// Validates `config` (binding new listeners, loading TLS files) and, if
    /// all is well, makes it the running config. Otherwise nothing changes.
    pub fn apply_config(&self, config: ProxyConfig) -> Result<Applied, EditError> {
        self.edit(Change::Config(config))
    }

    /// Reloads the config file this proxy was started from.
    pub fn reload_from_file(&self) -> Result<Applied, EditError> {
        self.edit(Change::ReloadFile)
    }

    /// Serves `routes` (from HTTPRoutes) in place of the file's, now and
    /// after every reload. Only for a config with `routes: kubernetes`.
    pub fn set_kubernetes_routes(&self, routes: Vec<RouteConfig>) -> Result<Applied, EditError> {
        self.edit(Change::KubernetesRoutes(routes))
    }

    /// Changes weights of a route at run time and keeps them in the state
    /// file. See [`WeightChange`].
    pub fn set_weights(&self, change: &WeightChange) -> Result<Applied, EditError> {
        self.edit(Change::Weights(change.clone()))
    }

    /// See [`Change::Mirror`].
    pub fn set_rule_mirror(
        &self,
        route: &str,
        rule: usize,
        change: MirrorChange,
    ) -> Result<Applied, EditError> {
        self.edit(Change::Mirror {
            route: route.to_string(),
            rule,
            change,
        })
    }

    /// See [`Change::AddRule`]; gives the rule's index.
    pub fn add_rule(&self, route: &str, rule: RuleConfig) -> Result<usize, EditError> {
        let applied = self.edit(Change::AddRule {
            route: route.to_string(),
            rule,
        })?;
        Ok(applied.rule.unwrap_or_default())
    }

    /// See [`Change::RemoveRule`]; false when the route has no rule of that
    /// name.
    pub fn remove_rule(&self, route: &str, name: &str) -> Result<bool, EditError> {
        let applied = self.edit(Change::RemoveRule {
            route: route.to_string(),
            name: name.to_string(),
        })?;
        Ok(applied.changed)
    }
}

/// Runs a step of building a config, turning a panic into an error: a bug
/// met by one change must not take the serving process down.
fn caught<T>(step: impl FnOnce() -> Result<T, EditError>) -> Result<T, EditError> {
    std::panic::catch_unwind(AssertUnwindSafe(step)).unwrap_or_else(|panic| {
        let text = panic
            .downcast_ref::<&str>()
            .map(ToString::to_string)
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic".into());
        tracing::error!(panic = %text, "building a configuration failed");
        Err(EditError::Internal(text))
    })
}

/// Works out what `change` makes of the control state; `None`: nothing to
/// do.
fn plan(control: &Control, change: Change) -> Result<Option<Plan>, EditError> {
    match change {
        Change::ReloadFile => {
            let path = control
                .file_config
                .source
                .clone()
                .ok_or(EditError::NoConfigFile)?;
            let config = serin_config::proxy::load_proxy_config(&path)?;
            new_config(control, config, None).map(Some)
        }
        Change::Config(config) => new_config(control, config, None).map(Some),
        Change::KubernetesRoutes(routes) => {
            if !control.file_config.routes_from_kubernetes {
                return Err(EditError::NotKubernetesRoutes);
            }
            let file = control.file_config.clone();
            new_config(control, file, Some(routes)).map(Some)
        }
        Change::Weights(change) => weights(control, &change).map(Some),
        Change::Mirror {
            route,
            rule,
            change,
        } => mirror(control, &route, rule, change),
        Change::AddRule { route, rule } => add_rule(control, &route, rule).map(Some),
        Change::RemoveRule { route, name } => Ok(remove_rule(control, &route, &name)),
    }
}

impl Plan {
    /// A run-time change: listeners stay as they are.
    fn run_time(file: ProxyConfig, state: StateFile, event: Event, applied: Applied) -> Self {
        Self {
            file,
            state,
            kubernetes_routes: None,
            rebind: false,
            event,
            warnings: Vec::new(),
            applied: Applied {
                changed: true,
                ..applied
            },
        }
    }
}

/// New weights for the rules of a route, kept in the state file. Backends
/// the change does not name keep their current weights.
fn weights(control: &Control, change: &WeightChange) -> Result<Plan, EditError> {
    let mut effective = control.file_config.clone();
    effective.apply_weights(&control.state.weights)?;
    let updates = weights::resolve(&effective, change)?;
    let mut state = control.state.clone();
    let route_state = state.weights.entry(change.route.clone()).or_default();
    for (rule, w) in updates {
        route_state.entry(rule).or_default().extend(w);
    }
    let mut effective = control.file_config.clone();
    effective.apply_weights(&state.weights)?;
    let now = weights::route_weights(&effective, &change.route)?;
    let text = change
        .weights
        .iter()
        .map(|(v, w)| format!("{v}={w}"))
        .collect::<Vec<_>>()
        .join(" ");
    let event = ("weights", format!("route {}: weights {text}", change.route));
    let applied = Applied {
        weights: Some(now),
        ..Applied::default()
    };
    Ok(Plan::run_time(
        control.file_config.clone(),
        state,
        event,
        applied,
    ))
}

/// See [`Change::AddRule`].
fn add_rule(control: &Control, route: &str, rule: RuleConfig) -> Result<Plan, EditError> {
    let mut file = control.file_config.clone();
    let r = route_mut(&mut file, route)?;
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
    let event = ("rule-added", format!("route {route}: rule {index} added"));
    let applied = Applied {
        rule: Some(index),
        ..Applied::default()
    };
    Ok(Plan::run_time(file, control.state.clone(), event, applied))
}

/// See [`Change::RemoveRule`]; `None` when there is no such rule.
fn remove_rule(control: &Control, route: &str, name: &str) -> Option<Plan> {
    let mut file = control.file_config.clone();
    let r = route_mut(&mut file, route).ok()?;
    let before = r.rules.len();
    r.rules.retain(|x| x.name.as_deref() != Some(name));
    if r.rules.len() == before {
        return None;
    }
    let event = (
        "rule-removed",
        format!("route {route}: rule {name} removed"),
    );
    Some(Plan::run_time(
        file,
        control.state.clone(),
        event,
        Applied::default(),
    ))
}

/// A new file config: the workers stay (fixed for the life of the process),
/// so do the admin API's listener and a token from the command line (and
/// an admin API beyond loopback still needs a token); HTTPRoutes keep
/// standing in for the routes, and run-time weight changes stay except
/// where the file changed that rule's weights.
fn new_config(
    control: &Control,
    mut config: ProxyConfig,
    kubernetes_routes: Option<Vec<RouteConfig>>,
) -> Result<Plan, EditError> {
    config.workers = control.file_config.workers;
    config.admin.carry_over(&control.file_config.admin);
    serin_config::proxy::admin::check(&config).map_err(|e| e.into_config_errors())?;
    if config.routes_from_kubernetes {
        config.routes = kubernetes_routes
            .clone()
            .unwrap_or_else(|| control.kubernetes_routes.clone());
    }
    let mut state = control.state.clone();
    let replaced = overrides::replaced_by_file(&control.file_config, &config, &mut state);
    let event = (
        "config-applied",
        format!("configuration applied ({} routes)", config.routes.len()),
    );
    // A file's warnings, when the file is what changed (HTTPRoutes report
    // their own).
    let warnings = if kubernetes_routes.is_none() {
        config.warnings.clone()
    } else {
        Vec::new()
    };
    Ok(Plan {
        file: config,
        state,
        kubernetes_routes,
        rebind: true,
        event,
        warnings,
        applied: Applied {
            changed: true,
            replaced,
            ..Applied::default()
        },
    })
}

fn route_mut<'c>(file: &'c mut ProxyConfig, route: &str) -> Result<&'c mut RouteConfig, EditError> {
    file.routes
        .iter_mut()
        .find(|r| r.name == route)
        .ok_or_else(|| WeightError::UnknownRoute(route.to_string()).into())
}

/// `change` made to rule `rule`'s mirrors; `None` when removing a mirror the
/// rule does not have.
fn mirror(
    control: &Control,
    route: &str,
    rule: usize,
    change: MirrorChange,
) -> Result<Option<Plan>, EditError> {
    let (service, version) = match &change {
        MirrorChange::Set(m) => (m.service.clone(), m.version.clone()),
        MirrorChange::Remove { service, version } => (service.clone(), version.clone()),
    };
    let mut file = control.file_config.clone();
    let r = route_mut(&mut file, route)?;
    let rules = r.rules.len();
    let target = r.rules.get_mut(rule).ok_or_else(|| EditError::NoRule {
        route: route.to_string(),
        rule,
        rules,
    })?;
    let before = target.filters.len();
    target.filters.retain(|f| {
        !matches!(f, FilterConfig::RequestMirror(m) if m.service == service && m.version == version)
    });
    let removed = target.filters.len() != before;
    let event = match change {
        MirrorChange::Set(m) => {
            let text = format!(
                "route {route} rule {rule}: mirror {}% to {service}/{version}",
                m.percent
            );
            target.filters.push(FilterConfig::RequestMirror(m));
            ("mirror-set", text)
        }
        MirrorChange::Remove { .. } if !removed => return Ok(None),
        MirrorChange::Remove { .. } => (
            "mirror-removed",
            format!("route {route} rule {rule}: no mirror to {service}/{version}"),
        ),
    };
    Ok(Some(Plan::run_time(
        file,
        control.state.clone(),
        event,
        Applied::default(),
    )))
}

/// What every config must satisfy however it was made: each backend,
/// mirror and auth service it names exists, and each mirror's share is a
/// percentage. (A file is checked at its lines when it is read; this
/// catches a run-time change that would break the same rules.)
fn check_references(config: &ProxyConfig) -> Result<(), EditError> {
    let known = |service: &str, version: &str| {
        config
            .services
            .iter()
            .any(|s| s.name == service && s.versions.iter().any(|v| v.name == version))
    };
    let unknown = |service: &str, version: &str, by: String| EditError::UnknownBackend {
        service: service.to_string(),
        version: version.to_string(),
        by,
    };
    for route in &config.routes {
        for (index, rule) in route.rules.iter().enumerate() {
            let by = || format!("route {} rule {index}", route.name);
            for b in &rule.backends {
                if !known(&b.service, &b.version) {
                    return Err(unknown(&b.service, &b.version, by()));
                }
            }
            for f in &rule.filters {
                match f {
                    FilterConfig::RequestMirror(m) => {
                        if !known(&m.service, &m.version) {
                            return Err(unknown(&m.service, &m.version, by()));
                        }
                        if !(m.percent.is_finite() && (0.0..=100.0).contains(&m.percent)) {
                            return Err(EditError::MirrorPercent(m.percent));
                        }
                    }
                    FilterConfig::ExternalAuth(a) if !known(&a.service, &a.version) => {
                        return Err(unknown(&a.service, &a.version, by()));
                    }
                    _ => {}
                }
            }
        }
    }
    Ok(())
}

/// Binds the listeners of `config` that are not bound yet and checks their
/// TLS files; every failure is reported against its line.
fn bind_all(
    config: &ProxyConfig,
    control: &Control,
) -> Result<Vec<(ListenerConfig, Arc<ListenerSocket>)>, ConfigErrors> {
    let file: Arc<str> = config
        .source
        .as_ref()
        .map_or_else(|| "<config>".to_string(), |p| p.display().to_string())
        .into();
    let at = |l: &ListenerConfig, path: String, message: String| ConfigError {
        file: file.clone(),
        line: l.span.line,
        column: l.span.col,
        path,
        message,
    };
    let mut out = Vec::new();
    let mut errors = Vec::new();
    for l in &config.listeners {
        if let Some(t) = &l.tls
            && let Err(e) = crate::tls::check(t)
        {
            let path = format!("{}.tls", l.path.trim_end_matches(".address"));
            errors.push(at(l, path, e.to_string()));
            continue;
        }
        // Port 0 means "any port": the socket is the same listener only if
        // the name is too.
        let reuse = control
            .listeners
            .values()
            .find(|s| s.configured == l.address && (l.address.port() != 0 || s.name() == l.name));
        if let Some(sock) = reuse {
            out.push((l.clone(), sock.clone()));
            continue;
        }
        match ListenerSocket::bind(l) {
            Ok(sock) => out.push((l.clone(), Arc::new(sock))),
            Err(e) => errors.push(at(
                l,
                l.path.clone(),
                format!("cannot listen on {}: {e}", l.address),
            )),
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(ConfigErrors(errors))
    }
}
