//! The controller: one tokio task per running canary that sets the step's
//! weights, waits one interval, judges the window and decides; and the
//! commands of the admin API (start, pause, resume, promote, abort,
//! approve). Webhooks, gates and notifications are in [`gates`].
//!
//! Decisions on one canary are serialized by its slot's lock: the task
//! takes it to conclude a window, a command takes it to act. Every command
//! bumps the slot's epoch, so a window that a command interrupted is not
//! judged; the task starts a new one.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::analysis::{
    self, Analysis, Judgement, ShadowFigures, Verdict, VersionFigures, WindowFigures, judge,
    judge_shadow,
};
use crate::audit::{Actor, AuditEntry, AuditLog};
use crate::check::{CheckResult, CheckSource, CheckVerdict, QueriedValue};
use crate::error::CanaryError;
use crate::notify::Notifier;
use crate::prometheus::PrometheusSource;
use crate::settings::{HookType, Options, Settings, StartRequest};
use crate::sink::{RuleRef, SinkError, WeightSink, shared_rules};
use crate::source::{MetricsSource, QueryView, SourceError, Target};
use crate::store::{CanaryState, FileBackend, Phase, StateBackend, Store};

/// How often a window that waits for endpoints looks again.
const ENDPOINT_POLL: Duration = Duration::from_millis(200);

/// Where a controller keeps things, and the services' defaults.
#[derive(Debug, Clone, Default)]
pub struct ControllerOptions {
    /// The state file; none: canaries live in memory only (unless
    /// `state_backend` is set).
    pub state_file: Option<PathBuf>,
    /// Where the state is kept instead of `state_file` (e.g. on a
    /// Kubernetes object).
    pub state_backend: Option<Arc<dyn StateBackend>>,
    /// The audit log; none: decisions are only logged.
    pub audit_file: Option<PathBuf>,
    /// Per-service defaults (a stack's `canary:` sections).
    pub defaults: BTreeMap<String, Options>,
    /// What `{{namespace}}` becomes in PromQL templates; none: `default`.
    pub namespace: Option<String>,
}

/// `NAME.canary.json` and `NAME.canary-audit.jsonl` beside a config or
/// stack file `NAME.yaml`.
pub fn files_beside(config: &Path) -> (PathBuf, PathBuf) {
    (
        serin_config::beside(config, ".canary.json"),
        serin_config::beside(config, ".canary-audit.jsonl"),
    )
}

/// A canary as `status` shows it: its state, where its figures come from
/// (with the queries, for Prometheus) and the window in progress. The admin
/// API answers it as JSON and the CLI reads it back as this struct.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Status {
    #[serde(flatten)]
    pub state: CanaryState,
    /// `step 2/4 (25%)`, or `header step (x-canary: always)`.
    pub step_label: String,
    /// `embedded` or `prometheus`.
    pub source: String,
    /// Prometheus' URL, when it is the source.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prometheus: Option<String>,
    /// The PromQL run at the end of each window, by name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub queries: BTreeMap<String, QueryView>,
    /// The window being measured, when one is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window_started_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window_ends_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audit_log: Option<String>,
}

/// What the admin API may ask of a running canary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Pause,
    Resume,
    Promote,
    Abort,
    /// Opens the approval gate.
    Approve,
}

impl Command {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "pause" => Some(Self::Pause),
            "resume" => Some(Self::Resume),
            "promote" => Some(Self::Promote),
            "abort" => Some(Self::Abort),
            "approve" => Some(Self::Approve),
            _ => None,
        }
    }
}

/// The running side of one canary.
struct Slot {
    id: u64,
    /// Held while deciding (end of a window, or a command).
    decide: tokio::sync::Mutex<()>,
    /// Bumped by every command: a window in progress is dropped.
    epoch: watch::Sender<u64>,
    source: Arc<dyn MetricsSource>,
    task: Mutex<Option<JoinHandle<()>>>,
    /// The window being measured: its start and length.
    window: Mutex<Option<(SystemTime, Duration)>>,
}

struct Inner {
    sink: Arc<dyn WeightSink>,
    embedded: Arc<dyn MetricsSource>,
    store: Store,
    audit: AuditLog,
    defaults: RwLock<BTreeMap<String, Options>>,
    /// What `{{namespace}}` becomes in PromQL templates.
    namespace: String,
    slots: Mutex<BTreeMap<String, Arc<Slot>>>,
    /// Serializes starts, so two cannot both find the service free.
    starting: tokio::sync::Mutex<()>,
    /// Calls the webhooks.
    http: reqwest::Client,
    /// Tells the notification targets, off the controller's path.
    notifier: Notifier,
    /// Bumped after every decision is saved (see [`Controller::changes`]).
    decided: watch::Sender<u64>,
}

/// Runs canaries. Cheap to clone; every clone is the same controller.
#[derive(Clone)]
pub struct Controller {
    inner: Arc<Inner>,
}

fn now_text() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}

fn new_id() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// `step 2/4 (25%)`, `mirror step (20% shadowed)`, or `header step
/// (x-canary: always)`.
fn step_text(state: &CanaryState) -> String {
    if state.before_rollout {
        return "before the rollout (no traffic yet)".into();
    }
    if state.mirror_step {
        return format!(
            "mirror step ({}% shadowed)",
            state.settings.mirror_step.unwrap_or(100.0)
        );
    }
    if state.match_step
        && let Some(m) = &state.settings.first_step
    {
        return format!("{} step ({m})", m.kind.as_str());
    }
    format!(
        "step {}/{} ({}%)",
        state.step + 1,
        state.settings.steps.len(),
        state.settings.steps.get(state.step).copied().unwrap_or(0)
    )
}

/// One line of figures: `v2: 120 requests, 0.00% errors, p99 3.1ms; v1: …`.
fn figures_text(a: &Analysis) -> String {
    if let Some(s) = &a.shadow {
        return shadow_text(s);
    }
    let one = |f: &VersionFigures| {
        format!(
            "{}: {} requests, {} errors, p99 {}",
            f.version,
            f.requests,
            crate::analysis::percent(f.error_rate),
            f.p99_seconds
                .map_or_else(|| "-".to_string(), crate::analysis::millis)
        )
    };
    let mut s = format!("{}; {}", one(&a.canary), one(&a.baseline));
    if let Some(r) = a.latency_ratio {
        s.push_str(&format!("; p99 ratio {r:.2}"));
    }
    s
}

/// Every check of a window without figures: inconclusive, no value.
fn unmeasured(settings: &Settings) -> Vec<CheckResult> {
    settings
        .checks
        .iter()
        .map(|c| CheckResult {
            name: c.name.clone(),
            source: match &c.source {
                CheckSource::Figure(f) => format!("figure {f}"),
                CheckSource::Promql(_) => "promql".into(),
            },
            query: None,
            value: None,
            min: c.min,
            max: c.max,
            verdict: CheckVerdict::Inconclusive,
            reason: Some("no figures for the window".into()),
        })
        .collect()
}

/// `v2 shadow answers: 200 compared, 150 same, 50 different, 0 without
/// answer (25.00% not matching)`.
fn shadow_text(s: &ShadowFigures) -> String {
    format!(
        "{} shadow answers: {} compared, {} same, {} different, {} without answer ({} not \
         matching)",
        s.version,
        s.answers,
        s.same,
        s.different,
        s.error,
        crate::analysis::percent(s.mismatch_rate)
    )
}

/// What a window measured: live traffic (with the values of the PromQL
/// checks), or the mirror step's shadows.
enum Measured {
    Live(WindowFigures, BTreeMap<String, QueriedValue>),
    Shadow(ShadowFigures),
}

impl Controller {
    /// Opens the state file and resumes every canary that was not finished
    /// (at the same step, with the same weights; the window starts again).
    /// Must be called inside a tokio runtime.
    pub async fn start(
        sink: Arc<dyn WeightSink>,
        embedded: Arc<dyn MetricsSource>,
        options: ControllerOptions,
    ) -> Result<Self, CanaryError> {
        let backend = options.state_backend.or_else(|| {
            options
                .state_file
                .map(|p| Arc::new(FileBackend::new(p)) as Arc<dyn StateBackend>)
        });
        let store = Store::open(backend).await?;
        let http = serin_config::http_client::builder()
            .map_err(|e| CanaryError::HttpClient(e.into()))?
            .build()
            .map_err(|e| CanaryError::HttpClient(e.into()))?;
        let me = Self {
            inner: Arc::new(Inner {
                sink,
                embedded,
                store,
                audit: AuditLog::new(options.audit_file),
                defaults: RwLock::new(options.defaults),
                namespace: options.namespace.unwrap_or_else(|| {
                    serin_config::stack::canary_check::DEFAULT_NAMESPACE.to_string()
                }),
                slots: Mutex::new(BTreeMap::new()),
                starting: tokio::sync::Mutex::new(()),
                notifier: Notifier::start(http.clone()),
                http,
                decided: watch::channel(0).0,
            }),
        };
        for mut state in me.inner.store.list() {
            if state.phase.is_final() {
                if state.post_rollout_pending {
                    me.spawn_post_rollout(state);
                }
                continue;
            }
            let from = state.weights.clone();
            let slot = match me.source_for(&state.settings) {
                Ok(source) => Arc::new(Slot::new(state.id, source)),
                Err(e) => {
                    state.phase = Phase::Halted;
                    state.message = format!("halted: cannot resume after a restart: {e}");
                    me.commit(state, Actor::Controller, "halt", from, None)
                        .await;
                    continue;
                }
            };
            let (percent, match_step) = (state.canary_weight(), state.match_step);
            let again = if state.before_rollout {
                me.set_weights(&mut state, 0, false).await
            } else if state.mirror_step {
                me.enter_mirror(&mut state).await
            } else {
                me.set_weights(&mut state, percent, match_step).await
            };
            match again {
                Ok(()) => {
                    state.message = format!(
                        "serin restarted: {} at {}, weights {} (a new window starts)",
                        state.phase.as_str(),
                        step_text(&state),
                        weights_text(&state.weights)
                    );
                }
                Err(e) => {
                    state.phase = Phase::Halted;
                    state.message =
                        format!("halted: cannot set the weights again after a restart: {e}");
                }
            }
            let service = state.service.clone();
            me.commit(state, Actor::Controller, "restart", from, None)
                .await;
            me.inner
                .slots
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(service.clone(), slot.clone());
            me.ensure_task(&service, &slot);
        }
        Ok(me)
    }

    /// Stops every canary task (the state stays as it is, to be resumed by
    /// the next start): for a process that is shutting down.
    pub fn stop(&self) {
        for slot in self
            .inner
            .slots
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
        {
            if let Some(task) = slot.task.lock().unwrap_or_else(|e| e.into_inner()).take() {
                task.abort();
            }
        }
    }

    /// Replaces the per-service defaults (after the stack file changed).
    pub fn set_defaults(&self, defaults: BTreeMap<String, Options>) {
        *self
            .inner
            .defaults
            .write()
            .unwrap_or_else(|e| e.into_inner()) = defaults;
    }

    fn source_for(&self, settings: &Settings) -> Result<Arc<dyn MetricsSource>, SourceError> {
        Ok(match &settings.prometheus {
            Some(p) => Arc::new(PrometheusSource::in_namespace(
                &p.url,
                p.queries.clone(),
                &self.inner.namespace,
            )?),
            None => self.inner.embedded.clone(),
        })
    }

    fn slot(&self, service: &str) -> Option<Arc<Slot>> {
        self.inner
            .slots
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(service)
            .cloned()
    }

    /// Every canary's series ([`crate::metrics`]), for a scrape.
    pub fn encode_metrics(
        &self,
        encoder: &mut prometheus_client::encoding::DescriptorEncoder<'_>,
    ) -> std::fmt::Result {
        crate::metrics::encode(&self.inner.store.list(), encoder)
    }

    /// The last decisions of this process (the audit log keeps them all),
    /// oldest first.
    pub fn recent_decisions(&self) -> Vec<crate::audit::AuditEntry> {
        self.inner.audit.recent()
    }

    /// Every canary, running or finished (the last one of each service).
    pub fn list(&self) -> Vec<Status> {
        self.inner
            .store
            .list()
            .into_iter()
            .map(|s| self.view(s))
            .collect()
    }

    pub fn status(&self, service: &str) -> Result<Status, CanaryError> {
        self.inner
            .store
            .get(service)
            .map(|s| self.view(s))
            .ok_or_else(|| CanaryError::NoCanary(service.to_string()))
    }

    fn view(&self, state: CanaryState) -> Status {
        let target = state.target();
        let (source, prometheus, queries) = match &state.settings.prometheus {
            Some(p) => (
                "prometheus".to_string(),
                Some(p.url.clone()),
                p.queries.views(&target, state.settings.interval),
            ),
            None => (
                self.inner.embedded.kind().to_string(),
                None,
                BTreeMap::new(),
            ),
        };
        let window = self
            .slot(&state.service)
            .filter(|s| s.id == state.id && state.phase == Phase::Progressing)
            .and_then(|s| *s.window.lock().unwrap_or_else(|e| e.into_inner()));
        Status {
            step_label: match &state.waiting {
                Some(w) => format!("{}, waiting for {}", step_text(&state), w.text()),
                None => step_text(&state),
            },
            source,
            prometheus,
            queries,
            window_started_at: window
                .map(|(at, _)| humantime::format_rfc3339_millis(at).to_string()),
            window_ends_at: window
                .map(|(at, len)| humantime::format_rfc3339_millis(at + len).to_string()),
            audit_log: self.inner.audit.path().map(|p| p.display().to_string()),
            state,
        }
    }

    /// Starts a canary of `service`: checks the versions, the routes and the
    /// options, sets the first step's weights and starts the analysis.
    pub async fn start_canary(
        &self,
        service: &str,
        request: StartRequest,
    ) -> Result<Status, CanaryError> {
        self.start_canary_as(service, request, Actor::Api).await
    }

    /// [`Self::start_canary`], with who asked for it in the audit log.
    pub async fn start_canary_as(
        &self,
        service: &str,
        request: StartRequest,
        actor: Actor,
    ) -> Result<Status, CanaryError> {
        let _one_at_a_time = self.inner.starting.lock().await;
        let versions = self
            .inner
            .sink
            .versions(service)
            .await
            .map_err(|e| match e {
                SinkError::UnknownService(s) => CanaryError::UnknownService(s),
                e => e.into(),
            })?;
        let known = |v: &str| -> Result<(), CanaryError> {
            if versions.iter().any(|k| k == v) {
                Ok(())
            } else {
                Err(CanaryError::UnknownVersion {
                    service: service.to_string(),
                    version: v.to_string(),
                    known: versions.join(", "),
                })
            }
        };
        if request.to.is_empty() {
            return Err(CanaryError::BadOptions(
                "`to`: name the canary version".into(),
            ));
        }
        known(&request.to)?;
        if let Some(from) = &request.from {
            known(from)?;
            if *from == request.to {
                return Err(CanaryError::BadOptions(format!(
                    "the canary and the baseline are both `{from}`"
                )));
            }
        }
        let defaults = self
            .inner
            .defaults
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(service)
            .cloned()
            .unwrap_or_default();
        let settings = request.options.clone().or(&defaults).resolve()?;

        if let Some(old) = self.inner.store.get(service)
            && !old.phase.is_final()
        {
            return Err(CanaryError::Conflict(format!(
                "a canary of {service} ({} → {}) is already {} at {}; promote or abort it first",
                old.baseline,
                old.canary,
                old.phase.as_str(),
                step_text(&old)
            )));
        }

        let carriers = self.inner.sink.carriers(service, &request.to).await?;
        let baseline = match &request.from {
            Some(f) => f.clone(),
            None => infer_baseline(service, &request.to, &carriers)?,
        };
        let target = Target {
            service: service.to_string(),
            baseline: baseline.clone(),
            canary: request.to.clone(),
        };
        let initial_rules = shared_rules(carriers, &target);
        if initial_rules.is_empty() {
            return Err(CanaryError::Routing(format!(
                "no route rule sends traffic to both {service}/{baseline} and {service}/{to}: add \
                 `{{name: {service}, version: {to}, weight: 0}}` to the backendRefs of a rule \
                 that has {service}/{baseline}",
                to = request.to
            )));
        }
        let source = self
            .source_for(&settings)
            .map_err(|e| CanaryError::BadOptions(e.to_string()))?;
        // Webhooks or a gate before any traffic: the weights stay at 0
        // and the first step is entered when they pass.
        let before_rollout = settings.gated_rollout();
        let mirror_step = settings.mirror_step.is_some() && !before_rollout;
        let match_step = settings.first_step.is_some() && !mirror_step && !before_rollout;
        let first = if match_step || mirror_step || before_rollout {
            0
        } else {
            settings.steps.first().copied().unwrap_or(100)
        };
        let rules = self.inner.sink.set(&target, first).await?;
        let entered = match (settings.mirror_step, &settings.first_step) {
            _ if before_rollout => Ok(()),
            (Some(percent), _) => self.inner.sink.mirror(&target, Some(percent)).await,
            (None, Some(m)) => self.inner.sink.route_matching(&target, Some(m)).await,
            (None, None) => Ok(()),
        };
        if let Err(e) = entered {
            // Leave the weights as they were before the canary.
            if let Some(r) = initial_rules.first()
                && let Some(w) = r.weights.get(&target.canary)
            {
                let total: u32 = r.weights.values().sum();
                let percent = (w * 100).checked_div(total).unwrap_or(0);
                let _ = self.inner.sink.set(&target, percent).await;
            }
            return Err(e.into());
        }
        let from: BTreeMap<String, u32> = initial_rules
            .first()
            .map(|r| {
                r.weights
                    .iter()
                    .filter(|(v, _)| **v == baseline || **v == request.to)
                    .map(|(v, w)| (v.clone(), *w))
                    .collect()
            })
            .unwrap_or_default();
        let now = now_text();
        let mut state = CanaryState {
            id: new_id(),
            service: service.to_string(),
            baseline,
            canary: request.to.clone(),
            phase: Phase::Progressing,
            step: 0,
            match_step,
            mirror_step,
            weights: BTreeMap::new(),
            failures: 0,
            inconclusive: 0,
            message: String::new(),
            settings,
            rules,
            initial_rules,
            last_analysis: None,
            before_rollout,
            pre_rollout_passed: false,
            waiting: None,
            approved: false,
            post_rollout_pending: false,
            started_at: now.clone(),
            updated_at: now,
        };
        state.weights = state.weights_for(first);
        state.message = format!(
            "started: {} → {}, {}, weights {}",
            state.baseline,
            state.canary,
            step_text(&state),
            weights_text(&state.weights)
        );
        let slot = Arc::new(Slot::new(state.id, source));
        if let Some(old) = self
            .inner
            .slots
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(service.to_string(), slot.clone())
            && let Some(task) = old.task.lock().unwrap_or_else(|e| e.into_inner()).take()
        {
            task.abort();
        }
        self.commit(state, actor, "start", from, None).await;
        self.ensure_task(service, &slot);
        self.status(service)
    }

    /// Appends a decision taken outside a canary's own steps (an automatic
    /// canary's promotion finished, its revision retired) to the audit log.
    pub fn record(&self, entry: &crate::audit::AuditEntry) {
        self.inner.audit.record(entry);
    }

    /// Pause, resume, promote, abort or approve the canary of `service`.
    pub async fn command(&self, service: &str, command: Command) -> Result<Status, CanaryError> {
        self.command_as(service, command, Actor::Api).await
    }

    /// [`Self::command`], with who gave it in the audit log.
    pub async fn command_as(
        &self,
        service: &str,
        command: Command,
        actor: Actor,
    ) -> Result<Status, CanaryError> {
        let state = self
            .inner
            .store
            .get(service)
            .ok_or_else(|| CanaryError::NoCanary(service.to_string()))?;
        let slot = match self.slot(service).filter(|s| s.id == state.id) {
            Some(s) => s,
            None => {
                // A finished canary from before a restart has no slot.
                let source = self
                    .source_for(&state.settings)
                    .unwrap_or_else(|_| self.inner.embedded.clone());
                let s = Arc::new(Slot::new(state.id, source));
                self.inner
                    .slots
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(service.to_string(), s.clone());
                s
            }
        };
        let _deciding = slot.decide.lock().await;
        let mut state = self
            .inner
            .store
            .get(service)
            .filter(|s| s.id == slot.id)
            .ok_or_else(|| CanaryError::NoCanary(service.to_string()))?;
        let from = state.weights.clone();
        let wrong_phase = |state: &CanaryState, what: &str| {
            CanaryError::Conflict(format!(
                "cannot {what} the canary of {service}: it is {}",
                state.phase.as_str()
            ))
        };
        let decision = match command {
            Command::Pause => {
                if state.phase != Phase::Progressing {
                    return Err(wrong_phase(&state, "pause"));
                }
                state.phase = Phase::Paused;
                state.message = format!(
                    "paused at {}; weights stay at {}",
                    step_text(&state),
                    weights_text(&state.weights)
                );
                "pause"
            }
            Command::Resume => {
                if !matches!(state.phase, Phase::Paused | Phase::Halted) {
                    return Err(wrong_phase(&state, "resume"));
                }
                state.phase = Phase::Progressing;
                state.inconclusive = 0;
                state.message = format!("resumed at {}; a new window starts", step_text(&state));
                "resume"
            }
            Command::Promote => {
                if state.phase.is_final() {
                    return Err(wrong_phase(&state, "promote"));
                }
                self.set_weights(&mut state, 100, false).await?;
                state.phase = Phase::Promoted;
                state.message = format!(
                    "promoted over the API: {}/{} takes all the traffic",
                    state.service, state.canary
                );
                "promote"
            }
            Command::Approve => self.approve(&mut state)?,
            Command::Abort => {
                if state.phase.is_final() {
                    return Err(wrong_phase(&state, "abort"));
                }
                self.set_weights(&mut state, 0, false).await?;
                state.phase = Phase::RolledBack;
                let by = match actor {
                    Actor::Apply => "by an apply of the stack file",
                    Actor::Api | Actor::Controller => "over the API",
                };
                state.message = format!(
                    "aborted {by} at {}: all traffic back to {}/{}",
                    step_text(&state),
                    state.service,
                    state.baseline
                );
                "abort"
            }
        };
        *slot.window.lock().unwrap_or_else(|e| e.into_inner()) = None;
        self.commit(state, actor, decision, from, None).await;
        slot.epoch.send_modify(|e| *e += 1);
        if command == Command::Resume {
            self.ensure_task(service, &slot);
        }
        self.status(service)
    }

    /// Sets the canary's weight; with `match_step`, matching requests go
    /// to the canary too (the header or cookie step), else no longer.
    async fn set_weights(
        &self,
        state: &mut CanaryState,
        percent: u32,
        match_step: bool,
    ) -> Result<(), SinkError> {
        let target = state.target();
        state.rules = self.inner.sink.set(&target, percent).await?;
        state.weights = state.weights_for(percent);
        if state.mirror_step {
            if let Err(e) = self.inner.sink.mirror(&target, None).await {
                tracing::error!(service = %state.service, error = %e, "canary: cannot remove the mirror of the mirror step");
            }
            state.mirror_step = false;
        }
        if let Some(m) = &state.settings.first_step {
            if match_step {
                self.inner.sink.route_matching(&target, Some(m)).await?;
            } else if state.match_step
                && let Err(e) = self.inner.sink.route_matching(&target, None).await
            {
                tracing::error!(service = %state.service, error = %e, "canary: cannot remove the rules of the header step");
            }
        }
        state.match_step = match_step;
        Ok(())
    }

    /// The mirror step: no live traffic to the canary, a shadow copy of the
    /// step's share of the baseline's requests instead (set again after a
    /// restart: the proxy does not keep it).
    async fn enter_mirror(&self, state: &mut CanaryState) -> Result<(), SinkError> {
        let target = state.target();
        state.rules = self.inner.sink.set(&target, 0).await?;
        state.weights = state.weights_for(0);
        let percent = state.settings.mirror_step.unwrap_or(100.0);
        self.inner.sink.mirror(&target, Some(percent)).await?;
        state.mirror_step = true;
        state.match_step = false;
        Ok(())
    }

    /// Keeps the new state (saved, then the audit log).
    async fn commit(
        &self,
        mut state: CanaryState,
        actor: Actor,
        decision: &str,
        from: BTreeMap<String, u32>,
        figures: Option<Analysis>,
    ) {
        state.updated_at = now_text();
        if state.phase.is_final() {
            state.waiting = None;
            state.before_rollout = false;
            // Kept before the call, so that a crash before it ends has the
            // next start call it.
            state.post_rollout_pending = matches!(decision, "promote" | "rollback" | "abort")
                && state.settings.hooks(HookType::PostRollout).next().is_some();
        }
        let entry = AuditEntry {
            time: state.updated_at.clone(),
            actor,
            service: state.service.clone(),
            decision: decision.to_string(),
            baseline: state.baseline.clone(),
            canary: state.canary.clone(),
            step: state.step,
            from,
            to: state.weights.clone(),
            figures,
            webhook: None,
            message: state.message.clone(),
        };
        let kept = state.clone();
        if let Err(e) = self.inner.store.put(state).await {
            tracing::error!(error = %e, "canary state not saved");
        }
        self.inner.audit.record(&entry);
        self.after_commit(&kept, decision);
        self.inner.decided.send_modify(|n| *n += 1);
    }

    /// Changes each time a decision of any canary is saved: what waits for
    /// a canary to end reads its status when this moves, not on a timer.
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.inner.decided.subscribe()
    }

    fn ensure_task(&self, service: &str, slot: &Arc<Slot>) {
        let mut task = slot.task.lock().unwrap_or_else(|e| e.into_inner());
        if task.as_ref().is_some_and(|t| !t.is_finished()) {
            return;
        }
        *task = Some(tokio::spawn(
            self.clone().drive(service.to_string(), slot.clone()),
        ));
    }

    /// The loop of one canary: a window per iteration while it progresses.
    async fn drive(self, service: String, slot: Arc<Slot>) {
        let mut epochs = slot.epoch.subscribe();
        loop {
            epochs.borrow_and_update();
            let Some(state) = self.inner.store.get(&service).filter(|s| s.id == slot.id) else {
                return;
            };
            match state.phase {
                Phase::Progressing => {}
                Phase::Paused => {
                    if epochs.changed().await.is_err() {
                        return;
                    }
                    continue;
                }
                Phase::Halted | Phase::Promoted | Phase::RolledBack => return,
            }
            let interval = state.settings.interval;
            if state.before_rollout {
                if self.before_rollout(&service, &slot, &mut epochs).await
                    && sleep_or_change(&mut epochs, interval).await == Woke::Closed
                {
                    return;
                }
                continue;
            }
            let target = state.target();
            // Wait (up to one interval) for both versions to have
            // endpoints: replicas may still be starting after a restart.
            let waiting = Instant::now();
            while !self.inner.sink.has_endpoints(&target).await && waiting.elapsed() < interval {
                match sleep_or_change(&mut epochs, ENDPOINT_POLL).await {
                    Woke::Elapsed => {}
                    Woke::Changed => break,
                    Woke::Closed => return,
                }
            }
            if epochs.has_changed().unwrap_or(true) {
                continue;
            }
            // A reload of the config file drops the rules of a header step:
            // they are put back for each window.
            if state.match_step
                && let Some(m) = &state.settings.first_step
                && let Err(e) = self.inner.sink.route_matching(&target, Some(m)).await
            {
                tracing::error!(service = %service, error = %e, "canary: cannot route the header step");
            }
            // The same for the mirror of a mirror step. Its windows are
            // always measured with serin's own shadow counters.
            let mirror = state
                .mirror_step
                .then(|| state.settings.mirror_step.unwrap_or(100.0));
            if let Some(percent) = mirror
                && let Err(e) = self.inner.sink.mirror(&target, Some(percent)).await
            {
                tracing::error!(service = %service, error = %e, "canary: cannot mirror for the mirror step");
            }
            let began = Instant::now();
            *slot.window.lock().unwrap_or_else(|e| e.into_inner()) =
                Some((SystemTime::now(), interval));
            let begun = match mirror {
                Some(_) => self.inner.embedded.begin_shadow(&target).await,
                None => slot.source.begin(&target).await,
            };
            match sleep_or_change(&mut epochs, interval).await {
                Woke::Elapsed => {}
                Woke::Changed => continue,
                Woke::Closed => return,
            }
            let _deciding = slot.decide.lock().await;
            if epochs.has_changed().unwrap_or(true) {
                continue;
            }
            let Some(state) = self
                .inner
                .store
                .get(&service)
                .filter(|s| s.id == slot.id && s.phase == Phase::Progressing)
            else {
                continue;
            };
            let window = began.elapsed();
            let (figures, kind) = match (begun, mirror) {
                (Err(e), _) => (Err(e), slot.source.kind()),
                (Ok(()), Some(percent)) => (
                    self.inner
                        .embedded
                        .end_shadow(&target, percent)
                        .await
                        .map(Measured::Shadow),
                    self.inner.embedded.kind(),
                ),
                (Ok(()), None) => (
                    self.measure_live(&slot, &state, window).await,
                    slot.source.kind(),
                ),
            };
            *slot.window.lock().unwrap_or_else(|e| e.into_inner()) = None;
            self.conclude(state, figures, window, kind).await;
        }
    }

    /// The figures of a live window, with the values of the canary's
    /// PromQL checks.
    async fn measure_live(
        &self,
        slot: &Slot,
        state: &CanaryState,
        window: Duration,
    ) -> Result<Measured, SourceError> {
        let target = state.target();
        let figures = slot.source.end(&target, window).await?;
        let promql: Vec<(String, String)> = state
            .settings
            .checks
            .iter()
            .filter_map(|c| match &c.source {
                CheckSource::Promql(t) => Some((c.name.clone(), t.clone())),
                CheckSource::Figure(_) => None,
            })
            .collect();
        let queried = if promql.is_empty() {
            BTreeMap::new()
        } else {
            slot.source.run_checks(&target, window, &promql).await
        };
        Ok(Measured::Live(figures, queried))
    }

    /// Judges a window and acts on the verdict.
    async fn conclude(
        &self,
        mut state: CanaryState,
        figures: Result<Measured, SourceError>,
        window: Duration,
        source: &str,
    ) {
        let none = WindowFigures {
            canary: VersionFigures::new(&state.canary, 0, 0, None),
            baseline: VersionFigures::new(&state.baseline, 0, 0, None),
        };
        let mut shadow = None;
        let seconds = window.as_secs_f64();
        let (figures, judgement) = match figures {
            Ok(Measured::Live(f, queried)) => {
                let j = judge(&f, &analysis::Window { seconds, queried }, &state.settings);
                (f, j)
            }
            Ok(Measured::Shadow(f)) => {
                let j = judge_shadow(&f, &state.settings);
                shadow = Some(f);
                (none, j)
            }
            Err(e) => (
                none,
                Judgement {
                    verdict: Verdict::Inconclusive,
                    latency_ratio: None,
                    reasons: vec![format!("no figures for the window: {e}")],
                    checks: unmeasured(&state.settings),
                },
            ),
        };
        let mut analysis = Analysis {
            at: now_text(),
            step: state.step,
            canary_weight: state.canary_weight(),
            window_seconds: (window.as_secs_f64() * 1000.0).round() / 1000.0,
            source: source.to_string(),
            canary: figures.canary,
            baseline: figures.baseline,
            latency_ratio: judgement.latency_ratio,
            verdict: judgement.verdict,
            reasons: judgement.reasons,
            checks: judgement.checks,
            shadow,
        };
        let rollout = self
            .call_hooks(&state, HookType::Rollout, Some(&analysis))
            .await;
        crate::gate::add_rollout_results(&mut analysis, &rollout);
        let from = state.weights.clone();
        let steps = state.settings.steps.clone();
        let why = if analysis.reasons.is_empty() {
            String::new()
        } else {
            format!(" ({})", analysis.reasons.join("; "))
        };
        let figures_line = figures_text(&analysis);
        let decision = match analysis.verdict {
            Verdict::Pass => {
                state.inconclusive = 0;
                let passed = step_text(&state);
                if state.mirror_step {
                    // On to the header step, or the first live step; the
                    // mirror goes either way.
                    let (percent, match_step) = if state.settings.first_step.is_some() {
                        (0, true)
                    } else {
                        (steps.first().copied().unwrap_or(100), false)
                    };
                    match self.set_weights(&mut state, percent, match_step).await {
                        Ok(()) => {
                            state.message = format!(
                                "{passed} passed ({figures_line}){why}; now {}",
                                step_text(&state)
                            );
                            "advance"
                        }
                        Err(e) => self.halt_on_sink_error(&mut state, &e),
                    }
                } else if state.match_step {
                    let first = steps.first().copied().unwrap_or(100);
                    match self.set_weights(&mut state, first, false).await {
                        Ok(()) => {
                            state.message = format!(
                                "{passed} passed ({figures_line}){why}; now {}",
                                step_text(&state)
                            );
                            "advance"
                        }
                        Err(e) => self.halt_on_sink_error(&mut state, &e),
                    }
                } else if state.step + 1 >= steps.len() {
                    match self.promotion_gate(&state, &analysis).await {
                        Some(w) => {
                            state.message = format!(
                                "{passed} passed ({figures_line}){why}; holding at {} until {} \
                                 opens",
                                weights_text(&state.weights),
                                w.text()
                            );
                            state.waiting = Some(w);
                            "wait"
                        }
                        None => {
                            self.promote_at_last_step(&mut state, &passed, &figures_line, &why)
                                .await
                        }
                    }
                } else {
                    let next = steps[state.step + 1];
                    match self.set_weights(&mut state, next, false).await {
                        Ok(()) => {
                            state.step += 1;
                            state.message = format!(
                                "{passed} passed ({figures_line}){why}; now {}",
                                step_text(&state)
                            );
                            "advance"
                        }
                        Err(e) => self.halt_on_sink_error(&mut state, &e),
                    }
                }
            }
            Verdict::Fail => {
                state.inconclusive = 0;
                state.failures += 1;
                let limit = state.settings.failures;
                if state.failures >= limit {
                    let at = step_text(&state);
                    match self.set_weights(&mut state, 0, false).await {
                        Ok(()) => {
                            state.phase = Phase::RolledBack;
                            state.message = format!(
                                "rolled back at {at} after {} failed check{}: {}; all traffic \
                                 back to {}/{} ({figures_line})",
                                state.failures,
                                if state.failures == 1 { "" } else { "s" },
                                analysis.reasons.join("; "),
                                state.service,
                                state.baseline
                            );
                            "rollback"
                        }
                        Err(e) => self.halt_on_sink_error(&mut state, &e),
                    }
                } else {
                    state.message = format!(
                        "failed check {} of {limit} at {}: {} ({figures_line}); the step is \
                         judged again",
                        state.failures,
                        step_text(&state),
                        analysis.reasons.join("; ")
                    );
                    "check-failed"
                }
            }
            Verdict::Inconclusive => {
                state.inconclusive += 1;
                let limit = state.settings.inconclusive_limit;
                if state.inconclusive >= limit {
                    state.phase = Phase::Halted;
                    state.message = format!(
                        "halted after {} inconclusive window{} in a row at {}: {}; weights stay \
                         at {} (send traffic and resume, or promote or abort)",
                        state.inconclusive,
                        if state.inconclusive == 1 { "" } else { "s" },
                        step_text(&state),
                        analysis.reasons.join("; "),
                        weights_text(&state.weights)
                    );
                    "halt"
                } else {
                    state.message = format!(
                        "inconclusive window {} of {limit} at {}: {}",
                        state.inconclusive,
                        step_text(&state),
                        analysis.reasons.join("; ")
                    );
                    "inconclusive"
                }
            }
        };
        state.last_analysis = Some(analysis.clone());
        self.commit(state, Actor::Controller, decision, from, Some(analysis))
            .await;
    }

    /// The last step passed and no gate holds it: the canary takes all the
    /// traffic.
    async fn promote_at_last_step(
        &self,
        state: &mut CanaryState,
        passed: &str,
        figures_line: &str,
        why: &str,
    ) -> &'static str {
        match self.set_weights(state, 100, false).await {
            Ok(()) => {
                state.phase = Phase::Promoted;
                state.message = format!(
                    "promoted: {passed} passed ({figures_line}){why}; {}/{} takes all the traffic",
                    state.service, state.canary
                );
                "promote"
            }
            Err(e) => self.halt_on_sink_error(state, &e),
        }
    }

    /// `serin canary approve`: opens the approval gate of a canary that
    /// has one; the next window of its last step that passes promotes it.
    fn approve(&self, state: &mut CanaryState) -> Result<&'static str, CanaryError> {
        let service = &state.service;
        if state.phase.is_final() {
            return Err(CanaryError::Conflict(format!(
                "cannot approve the canary of {service}: it is {}",
                state.phase.as_str()
            )));
        }
        if !state.settings.approval {
            return Err(CanaryError::Conflict(format!(
                "the canary of {service} has no approval gate (start it with --approval, or \
                 `approval: true` in its canary section)"
            )));
        }
        state.approved = true;
        let held = state
            .waiting
            .take_if(|w| w.gate == crate::gate::GateKind::Approval)
            .is_some();
        state.message = if held {
            format!(
                "approved over the API at {}: the next window that passes promotes it",
                step_text(state)
            )
        } else {
            format!(
                "approved over the API at {}: the approval gate will not hold its promotion",
                step_text(state)
            )
        };
        Ok("approve")
    }

    fn halt_on_sink_error(&self, state: &mut CanaryState, e: &SinkError) -> &'static str {
        tracing::error!(service = %state.service, error = %e, "canary: cannot set weights");
        state.phase = Phase::Halted;
        state.message = format!(
            "halted at {}: cannot set weights: {e}; they stay at {}",
            step_text(state),
            weights_text(&state.weights)
        );
        "halt"
    }
}

impl Slot {
    fn new(id: u64, source: Arc<dyn MetricsSource>) -> Self {
        let (epoch, _) = watch::channel(0);
        Self {
            id,
            decide: tokio::sync::Mutex::new(()),
            epoch,
            source,
            task: Mutex::new(None),
            window: Mutex::new(None),
        }
    }
}

mod gates;

/// What ended one of the controller loop's waits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Woke {
    /// The time went by.
    Elapsed,
    /// The canary changed (an action, a new window): look again.
    Changed,
    /// The canary is gone.
    Closed,
}

/// Waits `d`, or less when the canary's epoch moves.
async fn sleep_or_change(epochs: &mut watch::Receiver<u64>, d: Duration) -> Woke {
    tokio::select! {
        () = tokio::time::sleep(d) => Woke::Elapsed,
        changed = epochs.changed() => match changed {
            Ok(()) => Woke::Changed,
            Err(_) => Woke::Closed,
        },
    }
}

#[cfg(test)]
mod tests;

/// `v1 95%, v2 5%`
pub fn weights_text(w: &BTreeMap<String, u32>) -> String {
    w.iter()
        .map(|(v, p)| format!("{v} {p}%"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The baseline when none was named: the one other version of the service
/// that shares route rules with the canary.
fn infer_baseline(
    service: &str,
    canary: &str,
    carriers: &[RuleRef],
) -> Result<String, CanaryError> {
    let mut others: Vec<&String> = carriers
        .iter()
        .flat_map(|r| r.weights.keys())
        .filter(|v| *v != canary)
        .collect();
    others.sort();
    others.dedup();
    match others.as_slice() {
        [one] => Ok((*one).clone()),
        [] => Err(CanaryError::Routing(format!(
            "no route rule sends traffic to {service}/{canary} next to another version of \
             {service}: add `{{name: {service}, version: {canary}, weight: 0}}` to the \
             backendRefs of a rule with the current version"
        ))),
        many => Err(CanaryError::Routing(format!(
            "{service}/{canary} shares route rules with {}: name the baseline with --from",
            many.iter()
                .map(|v| v.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}
