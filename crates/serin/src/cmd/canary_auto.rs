//! Canaries that start themselves under `serin up` (`auto: true`): every
//! roll-out of the stack file (`serin apply`, SIGHUP, a file watch) goes
//! through [`AutoCanary::apply`], which decides per version what the apply
//! means (serin-canary's `auto`: a new revision, the same one, a newer one
//! during a canary, …), gives the runtime and the proxy the stack and
//! gateway that hold the new revision beside the baseline, and starts,
//! restarts or aborts the canary. A task per held revision finishes it when
//! its canary ends: promoted, the baseline version takes the new revision
//! and the canary version is retired; rolled back, the canary version is
//! stopped. The held revisions (with the stack file texts they came from)
//! are kept in `NAME.canary-auto.json` beside the stack file, written
//! atomically, so a serin killed with SIGKILL comes back holding the same.
//!
//! A service whose `watch:` builds it (`output`) runs each build from its
//! own copy ([`super::builds`]): a rebuild under `serin up --watch` is a
//! new revision like a changed file ([`AutoCanary::rebuilt`]), and each
//! held revision keeps the copy it runs.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use serin_canary::audit::{Actor, AuditEntry};
use serin_canary::auto::{
    Held, Revision, Stage, canary_version, classify, effective_gateway, effective_routes,
    effective_stack,
};
use serin_canary::{Command, Phase, StartRequest, StateBackend, Target, WeightSink};
use serin_config::proxy::{ProxyConfig, RouteConfig};
use serin_config::stack::{Stack, VersionSpec};
use serin_runtime::RuntimeHandle;

use super::builds::{self, CopyError};
use super::canary_proxy::ProxySink;
use super::mesh::Mesh;

/// A stack file as applied: the file's own text and what it says (with
/// the command line's overrides applied to the gateway), each `auto: true`
/// service with a build output running a copy of it.
#[derive(Clone)]
pub struct Applied {
    pub text: String,
    /// The file's services, with [`Self::builds`] in place of each output.
    pub stack: Stack,
    pub gateway: ProxyConfig,
    pub mesh: Vec<RouteConfig>,
    /// Per service, the copy of its `watch.output` its versions run.
    pub builds: BTreeMap<String, PathBuf>,
}

/// The build output of `service` when it is an `auto: true` service whose
/// build says what it writes.
fn build_output(stack: &Stack, service: &str) -> Option<PathBuf> {
    if !is_auto(stack, service) {
        return None;
    }
    stack.service(service)?.watch.as_ref()?.output.clone()
}

/// Moves every version of `service` in `stack` from `from` to `to`.
fn relocate(stack: &mut Stack, service: &str, from: &Path, to: &Path) {
    let base_dir = stack.base_dir.clone();
    if let Some(svc) = stack.services.iter_mut().find(|s| s.name == service) {
        for v in &mut svc.versions {
            serin_config::stack::build_output::relocate(v, from, to, &base_dir);
        }
    }
}

impl Applied {
    /// A file just read (its services run their outputs): each `auto:
    /// true` service with a build output runs the copy `current` holds for
    /// it (the build running now), else a fresh copy of its output.
    pub async fn with_builds(
        mut self,
        builds_dir: &Path,
        current: &BTreeMap<String, PathBuf>,
    ) -> Result<Self, CopyError> {
        let services: Vec<String> = self.stack.services.iter().map(|s| s.name.clone()).collect();
        for service in services {
            let Some(output) = build_output(&self.stack, &service) else {
                continue;
            };
            let copy = match current.get(&service) {
                Some(copy) if copy.file_name() == output.file_name() => copy.clone(),
                _ => copy_of(builds_dir, &service, &output).await?,
            };
            relocate(&mut self.stack, &service, &output, &copy);
            self.builds.insert(service, copy);
        }
        Ok(self)
    }

    /// The same, with `service` (whose build names `output`) running the
    /// build copy `copy` instead of what it ran.
    fn rebuilt(&self, service: &str, output: &Path, copy: &Path) -> Self {
        let mut out = self.clone();
        let old = out.builds.insert(service.to_string(), copy.to_path_buf());
        relocate(
            &mut out.stack,
            service,
            old.as_deref().unwrap_or(output),
            copy,
        );
        out
    }
}

/// [`builds::copy_output`] off the runtime's threads (an output may be a
/// large binary).
async fn copy_of(builds_dir: &Path, service: &str, output: &Path) -> Result<PathBuf, CopyError> {
    let (dir, svc, out) = (
        builds_dir.to_path_buf(),
        service.to_string(),
        output.to_path_buf(),
    );
    match tokio::task::spawn_blocking(move || builds::copy_output(&dir, &svc, &out)).await {
        Ok(result) => result,
        Err(e) => Err(CopyError::Write {
            service: service.to_string(),
            path: builds_dir.to_path_buf(),
            source: std::io::Error::other(e),
        }),
    }
}

/// One held revision as saved.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Saved {
    version: String,
    stage: Stage,
    /// The canary judging it (0 before it started).
    canary_id: u64,
    /// A stack file text whose `version` is the baseline.
    baseline_text: String,
    /// A stack file text whose `version` is the new revision.
    candidate_text: String,
    /// The build copy the baseline runs, for a service whose build says
    /// what it writes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    baseline_build: Option<PathBuf>,
    /// The build copy the new revision runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    candidate_build: Option<PathBuf>,
}

#[derive(Debug, Clone)]
struct Release {
    saved: Saved,
    baseline: VersionSpec,
    candidate: VersionSpec,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct SavedFile {
    #[serde(default)]
    releases: BTreeMap<String, Saved>,
}

/// What to do once the stack is rolled out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    /// Start (or, with `true`, restart) the canary of the held revision.
    Start(bool),
    /// Abort the canary: its revision is no longer held.
    Abort,
    /// After a restart of serin: watch or finish the held revision.
    Resume,
}

/// The held revisions and the last stack file applied.
pub struct AutoState {
    state_file: PathBuf,
    /// Where the build copies are (see [`builds`]).
    builds_dir: PathBuf,
    releases: BTreeMap<String, Release>,
    applied: Applied,
    pending: Vec<(String, Action)>,
}

/// `NAME.canary-auto.json` beside the stack file `NAME.yaml`.
fn state_file_beside(stack: &Path) -> PathBuf {
    serin_config::beside(stack, ".canary-auto.json")
}

/// The version `version` of `service` in stack file `text`, running the
/// build copy `build` (if any) in place of its output.
fn version_in(
    text: &str,
    path: &Path,
    (service, version): (&str, &str),
    build: Option<&Path>,
) -> Option<VersionSpec> {
    let base = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let parsed = serin_config::stack::parse_stack_file(text, &path.display().to_string(), base);
    let mut stack = parsed.ok()?.stack;
    if let (Some(output), Some(copy)) = (build_output(&stack, service), build) {
        relocate(&mut stack, service, &output, copy);
    }
    stack.version(service, version).cloned()
}

/// The version of `service` an apply of `incoming` may canary and its
/// baseline: the held one, else the first whose processes changed.
fn baseline_of(
    incoming: &Stack,
    service: &str,
    held: Option<&Release>,
    running: Option<&Stack>,
) -> Option<(String, VersionSpec)> {
    if let Some(r) = held {
        return Some((r.saved.version.clone(), r.baseline.clone()));
    }
    let running = running?.service(service)?;
    let incoming = incoming.service(service)?;
    running.versions.iter().find_map(|old| {
        let new = incoming.version(&old.name)?;
        (!new.same_template(old)).then(|| (old.name.clone(), old.clone()))
    })
}

/// Whether `service` starts canaries by itself.
fn is_auto(stack: &Stack, service: &str) -> bool {
    stack
        .service(service)
        .and_then(|s| s.canary.as_ref())
        .and_then(|c| c.auto)
        .unwrap_or(serin_config::stack::DEFAULT_AUTO)
}

impl AutoState {
    /// Reads the held revisions saved beside `stack_path` and decides what
    /// the file serin starts with means for them (it may have changed
    /// while serin was down). A saved entry that cannot be read back is
    /// dropped with an error in the log.
    pub async fn open(stack_path: &Path, applied: Applied) -> Self {
        let state_file = state_file_beside(stack_path);
        let saved: SavedFile = match serin_canary::FileBackend::new(state_file.clone())
            .load()
            .await
        {
            Ok(Some(text)) => serde_json::from_str(&text).unwrap_or_else(|e| {
                tracing::error!(file = %state_file.display(), error = %e, "cannot read the automatic canaries' state; starting without it");
                SavedFile::default()
            }),
            Ok(None) => SavedFile::default(),
            Err(e) => {
                tracing::error!(file = %state_file.display(), error = %e, "cannot read the automatic canaries' state; starting without it");
                SavedFile::default()
            }
        };
        let mut releases = BTreeMap::new();
        for (service, s) in saved.releases {
            let at = (service.as_str(), s.version.as_str());
            let specs = (
                version_in(
                    &s.baseline_text,
                    stack_path,
                    at,
                    s.baseline_build.as_deref(),
                ),
                version_in(
                    &s.candidate_text,
                    stack_path,
                    at,
                    s.candidate_build.as_deref(),
                ),
            );
            let (Some(baseline), Some(candidate)) = specs else {
                tracing::error!(%service, version = %s.version, "a held revision's stack file text no longer reads; it is dropped");
                continue;
            };
            releases.insert(
                service,
                Release {
                    saved: s,
                    baseline,
                    candidate,
                },
            );
        }
        let mut me = Self {
            state_file,
            builds_dir: builds::builds_dir(stack_path),
            releases,
            applied: applied.clone(),
            pending: Vec::new(),
        };
        // A file changed while a promotion was being finished: the
        // promotion is finished first, then the file is judged again.
        me.pending = me.plan(&applied, None).unwrap_or_else(|_| {
            me.releases
                .iter()
                .filter(|(_, r)| r.saved.stage == Stage::Promoting)
                .map(|(s, _)| (s.clone(), Action::Resume))
                .collect()
        });
        me.applied = applied;
        me
    }

    /// The stack, gateway and sidecar routes to run now.
    pub fn effective(&self) -> (Stack, ProxyConfig, Vec<RouteConfig>) {
        let held = self.held();
        let stack = effective_stack(&self.applied.stack, &held);
        let mut gateway = self.applied.gateway.clone();
        effective_gateway(&mut gateway, &held);
        let mut mesh = self.applied.mesh.clone();
        effective_routes(&mut mesh, &held);
        (stack, gateway, mesh)
    }

    fn held(&self) -> Vec<Held> {
        self.releases
            .iter()
            .map(|(service, r)| Held {
                service: service.clone(),
                version: r.saved.version.clone(),
                stage: r.saved.stage,
                baseline: r.baseline.clone(),
                candidate: r.candidate.clone(),
            })
            .collect()
    }

    /// Decides what `incoming` means for each `auto: true` service and
    /// updates the held revisions; `running` is the stack the runtime runs
    /// (none at a start). Fails, changing nothing, while a promotion
    /// finishes and the file changes that version.
    fn plan(
        &mut self,
        incoming: &Applied,
        running: Option<&Stack>,
    ) -> Result<Vec<(String, Action)>, String> {
        let mut releases = self.releases.clone();
        let mut actions = Vec::new();
        // Held revisions of services that are gone, or no longer auto.
        releases.retain(|service, r| {
            let keep = is_auto(&incoming.stack, service)
                && incoming.stack.version(service, &r.saved.version).is_some();
            if !keep && r.saved.stage == Stage::Judging {
                actions.push((service.clone(), Action::Abort));
            }
            keep
        });
        for svc in &incoming.stack.services {
            if !is_auto(&incoming.stack, &svc.name) {
                continue;
            }
            let held = releases.get(&svc.name).cloned();
            let Some((version, baseline)) =
                baseline_of(&incoming.stack, &svc.name, held.as_ref(), running)
            else {
                continue;
            };
            let Some(new) = svc.version(&version) else {
                continue;
            };
            let revision = classify(
                &baseline,
                new,
                held.as_ref().map(|r| (r.saved.stage, &r.candidate)),
            );
            match revision {
                Revision::Busy => {
                    return Err(format!(
                        "the promotion of {}/{version} is being finished; apply again once it is \
                         done",
                        svc.name
                    ));
                }
                Revision::Unchanged => {
                    releases.remove(&svc.name);
                }
                Revision::Same if running.is_none() => {
                    actions.push((svc.name.clone(), Action::Resume));
                }
                Revision::Same => {}
                Revision::Reverted => {
                    releases.remove(&svc.name);
                    actions.push((svc.name.clone(), Action::Abort));
                }
                Revision::Start | Revision::Restart => {
                    let (baseline_text, baseline_build) = held.as_ref().map_or_else(
                        || {
                            let build = self.applied.builds.get(&svc.name).cloned();
                            (self.applied.text.clone(), build)
                        },
                        |r| {
                            (
                                r.saved.baseline_text.clone(),
                                r.saved.baseline_build.clone(),
                            )
                        },
                    );
                    let restart = held
                        .as_ref()
                        .is_some_and(|r| r.saved.stage == Stage::Judging);
                    releases.insert(
                        svc.name.clone(),
                        Release {
                            saved: Saved {
                                version: version.clone(),
                                stage: Stage::Judging,
                                canary_id: 0,
                                baseline_text,
                                candidate_text: incoming.text.clone(),
                                baseline_build,
                                candidate_build: incoming.builds.get(&svc.name).cloned(),
                            },
                            baseline,
                            candidate: new.clone(),
                        },
                    );
                    actions.push((svc.name.clone(), Action::Start(restart)));
                }
            }
        }
        self.releases = releases;
        Ok(actions)
    }

    async fn save(&self) {
        let file = SavedFile {
            releases: self
                .releases
                .iter()
                .map(|(s, r)| (s.clone(), r.saved.clone()))
                .collect(),
        };
        let text = serde_json::to_string_pretty(&file).unwrap_or_default();
        if let Err(e) = serin_canary::FileBackend::new(self.state_file.clone())
            .save(&text)
            .await
        {
            tracing::error!(file = %self.state_file.display(), error = %e, "cannot save the automatic canaries' state");
        }
        self.prune_builds().await;
    }

    /// Removes the build copies no revision runs any more (after the
    /// state that stops using them is saved).
    async fn prune_builds(&self) {
        let releases = self.releases.values().map(|r| &r.saved);
        let held = releases.flat_map(|s| [&s.baseline_build, &s.candidate_build]);
        let keep: BTreeSet<PathBuf> = held
            .flatten()
            .chain(self.applied.builds.values())
            .cloned()
            .collect();
        let dir = self.builds_dir.clone();
        let _ = tokio::task::spawn_blocking(move || builds::prune(&dir, &keep)).await;
    }
}

/// What a failed roll-out says.
fn describe(e: &RollOutError) -> String {
    match e {
        RollOutError::Rejected(e) => e.to_string(),
        RollOutError::Busy(e) | RollOutError::Refused(e) | RollOutError::Internal(e) => e.clone(),
    }
}

/// Logs a roll-out that failed on a task of its own (the stack keeps
/// running as it was).
fn log_failure(e: &RollOutError, why: &str) {
    match e {
        RollOutError::Rejected(e) => tracing::error!("cannot roll out ({why}):\n{e}"),
        RollOutError::Busy(e) | RollOutError::Refused(e) | RollOutError::Internal(e) => {
            tracing::error!("cannot roll out ({why}): {e}");
        }
    }
}

/// Runs the held revisions of a `serin up`. Cheap to clone.
#[derive(Clone)]
pub struct AutoCanary {
    inner: Arc<Inner>,
}

struct Inner {
    /// Held across a whole apply, so applies and finishing steps take
    /// turns.
    state: tokio::sync::Mutex<AutoState>,
    controller: serin_canary::Controller,
    sink: ProxySink,
    runtime: RuntimeHandle,
    sidecars: Arc<Mesh>,
    /// The services whose held revision has a task watching it.
    watching: Mutex<BTreeMap<String, u64>>,
}

/// Why an apply changed nothing or stopped part-way.
pub enum RollOutError {
    Rejected(serin_config::ConfigErrors),
    /// A promotion being finished holds the version.
    Busy(String),
    /// The runtime refused the stack (a command that cannot start, …).
    Refused(String),
    /// serin failed (a task it ran ended abnormally).
    Internal(String),
}

impl AutoCanary {
    /// Takes over `state` (the one the stack was started with) and carries
    /// out what its start decided.
    pub async fn start(
        state: AutoState,
        controller: serin_canary::Controller,
        proxy: Arc<serin_proxy::Proxy>,
        runtime: RuntimeHandle,
        sidecars: Arc<Mesh>,
    ) -> Self {
        let me = Self {
            inner: Arc::new(Inner {
                state: tokio::sync::Mutex::new(state),
                controller,
                sink: ProxySink::new(proxy),
                runtime,
                sidecars,
                watching: Mutex::new(BTreeMap::new()),
            }),
        };
        let mut state = me.inner.state.lock().await;
        let pending = std::mem::take(&mut state.pending);
        state.save().await;
        me.act(&mut state, pending).await;
        drop(state);
        me
    }

    /// Rolls out a stack file: decides what it means for each `auto: true`
    /// service, then gives the proxy its gateway (checked before anything
    /// changes) and the runtime its services, and starts, restarts or
    /// aborts canaries. Returns the runtime's summary.
    pub async fn apply(&self, incoming: Applied) -> Result<serde_json::Value, RollOutError> {
        let mut state = self.inner.state.lock().await;
        let incoming = incoming
            .with_builds(&state.builds_dir, &state.applied.builds)
            .await
            .map_err(|e| RollOutError::Refused(e.to_string()))?;
        self.apply_locked(&mut state, incoming).await
    }

    /// Whether a build of `service` is for its canary to judge (an `auto:
    /// true` service whose build names its output), as the stack runs now.
    pub fn judges_builds(&self, service: &str) -> bool {
        build_output(&self.inner.runtime.stack(), service).is_some()
    }

    /// `service` was built again (`serin up --watch`): its output is
    /// copied and the copy rolled out as a new revision, judged by its
    /// canary while the running revision keeps serving its own copy. The
    /// outcome, for the service's logs.
    pub async fn rebuilt(&self, service: &str) -> String {
        let mut state = self.inner.state.lock().await;
        let Some(output) = build_output(&state.applied.stack, service) else {
            return format!("{service} no longer names a build output; nothing rolled out");
        };
        let copy = match copy_of(&state.builds_dir, service, &output).await {
            Ok(copy) => copy,
            Err(e) => return format!("{e}; the running revision stays"),
        };
        if state.applied.builds.get(service) == Some(&copy) {
            return format!(
                "the build's output is the same as the one running ({}); nothing to roll out",
                copy.display()
            );
        }
        let incoming = state.applied.rebuilt(service, &output, &copy);
        match self.apply_locked(&mut state, incoming).await {
            Ok(_) => {
                let judged = state
                    .releases
                    .get(service)
                    .filter(|r| r.saved.stage == Stage::Judging)
                    .filter(|r| r.saved.candidate_build.as_ref() == Some(&copy));
                match judged {
                    Some(r) => format!(
                        "the build ({}) runs as {service}/{} and its canary judges it; \
                     {service}/{} keeps serving the build it runs",
                        copy.display(),
                        canary_version(&r.saved.version),
                        r.saved.version
                    ),
                    None => format!("the build ({}) is rolled out", copy.display()),
                }
            }
            Err(e) => format!("cannot roll the build out: {}", describe(&e)),
        }
    }

    /// [`Self::apply`] with the state held.
    async fn apply_locked(
        &self,
        state: &mut AutoState,
        incoming: Applied,
    ) -> Result<serde_json::Value, RollOutError> {
        let running = self.inner.runtime.stack();
        let before = (state.releases.clone(), state.applied.clone());
        let actions = state
            .plan(&incoming, Some(&running))
            .map_err(RollOutError::Busy)?;
        state.applied = incoming;
        // Canaries whose revision goes are aborted while their weights can
        // still be set (the rules still hold the canary version).
        self.abort_before(&actions).await;
        let summary = match self.roll_out(state).await {
            Ok(s) => s,
            Err(e) => {
                (state.releases, state.applied) = before;
                return Err(e);
            }
        };
        state.save().await;
        self.act(state, actions).await;
        Ok(summary)
    }

    /// Gives the proxy and the runtime the stack and gateway `state` holds;
    /// the runtime's summary of what changed.
    async fn roll_out(&self, state: &AutoState) -> Result<serde_json::Value, RollOutError> {
        let (stack, gateway, mesh) = state.effective();
        let sidecars = self.inner.sidecars.clone();
        match tokio::task::spawn_blocking(move || sidecars.set_source(gateway, mesh)).await {
            Ok(Ok(())) => self
                .inner
                .controller
                .set_defaults(super::canary::stack_defaults(&state.applied.stack)),
            Ok(Err(errors)) => return Err(RollOutError::Rejected(errors)),
            Err(e) => return Err(RollOutError::Internal(e.to_string())),
        }
        self.inner
            .runtime
            .apply(stack)
            .await
            .map(|summary| serde_json::to_value(summary).unwrap_or_default())
            .map_err(|e| RollOutError::Refused(e.to_string()))
    }

    /// [`Self::roll_out`] from a task: a failure is logged (the stack
    /// keeps running as it was).
    async fn roll_out_logged(&self, state: &AutoState, why: &str) {
        match self.roll_out(state).await {
            Ok(summary) => tracing::info!(%summary, "stack rolled out: {why}"),
            Err(e) => log_failure(&e, why),
        }
    }

    /// The aborts a plan decided: a revision no longer held, or one a
    /// newer revision replaces (Flagger restarts the analysis).
    async fn abort_before(&self, actions: &[(String, Action)]) {
        for (service, action) in actions {
            match action {
                Action::Abort => self.abort(service, "its revision is no longer held").await,
                Action::Start(true) => {
                    self.abort(
                        service,
                        "a newer revision was applied; the analysis starts again",
                    )
                    .await;
                }
                Action::Start(false) | Action::Resume => {}
            }
        }
    }

    /// Carries out what a plan decided, once the stack is rolled out.
    async fn act(&self, state: &mut AutoState, actions: Vec<(String, Action)>) {
        for (service, action) in actions {
            match action {
                Action::Abort => {}
                Action::Start(_) => self.start_canary(state, &service).await,
                Action::Resume => self.resume(state, &service),
            }
        }
    }

    /// Aborts the canary of `service` if one runs.
    async fn abort(&self, service: &str, why: &str) {
        let running = self
            .inner
            .controller
            .status(service)
            .is_ok_and(|s| !s.state.phase.is_final());
        if !running {
            return;
        }
        match self
            .inner
            .controller
            .command_as(service, Command::Abort, Actor::Apply)
            .await
        {
            Ok(_) => tracing::info!(%service, "automatic canary aborted: {why}"),
            Err(e) => tracing::error!(%service, error = %e, "cannot abort the canary"),
        }
    }

    /// Starts the canary of the revision held for `service`. When it
    /// cannot start, the revision is rolled back at once: the baseline
    /// keeps serving.
    async fn start_canary(&self, state: &mut AutoState, service: &str) {
        let Some(version) = state.releases.get(service).map(|r| r.saved.version.clone()) else {
            return;
        };
        let request = StartRequest {
            to: canary_version(&version),
            from: Some(version.clone()),
            options: serin_canary::Options::default(),
        };
        let started = self
            .inner
            .controller
            .start_canary_as(service, request, Actor::Apply)
            .await;
        let Some(release) = state.releases.get_mut(service) else {
            return;
        };
        match started {
            Ok(status) => {
                release.saved.canary_id = status.state.id;
                state.save().await;
                self.watch(service, status.state.id);
            }
            Err(e) => {
                tracing::error!(%service, error = %e, "the automatic canary cannot start; its revision is rolled back");
                release.saved.stage = Stage::RolledBack;
                state.save().await;
                self.roll_out_logged(state, "an automatic canary could not start")
                    .await;
            }
        }
    }

    /// After a restart of serin: watch a judged revision, finish a
    /// promoted one.
    fn resume(&self, state: &AutoState, service: &str) {
        let Some(r) = state.releases.get(service) else {
            return;
        };
        match r.saved.stage {
            Stage::Judging => self.watch(service, r.saved.canary_id),
            Stage::Promoting => {
                let me = self.clone();
                let (service, id) = (service.to_string(), r.saved.canary_id);
                tokio::spawn(async move { me.finish_promotion(&service, id).await });
            }
            Stage::RolledBack => {}
        }
    }

    /// Starts the task that finishes the held revision of `service` once
    /// its canary `id` is promoted or rolled back.
    fn watch(&self, service: &str, id: u64) {
        self.inner
            .watching
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(service.to_string(), id);
        let me = self.clone();
        let service = service.to_string();
        // Subscribed before the first look, so no decision falls between.
        let mut changes = me.inner.controller.changes();
        tokio::spawn(async move {
            loop {
                let current = me
                    .inner
                    .watching
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .get(&service)
                    .copied();
                if current != Some(id) {
                    return;
                }
                if let Ok(status) = me.inner.controller.status(&service) {
                    if status.state.id != id {
                        return;
                    }
                    match status.state.phase {
                        Phase::Promoted => return me.finish_promotion(&service, id).await,
                        Phase::RolledBack => return me.retire(&service, id).await,
                        _ => {}
                    }
                }
                if changes.changed().await.is_err() {
                    return;
                }
            }
        });
    }

    /// The held revision of `service` if its canary is still `id`.
    fn held_by<'a>(state: &'a mut AutoState, service: &str, id: u64) -> Option<&'a mut Release> {
        state
            .releases
            .get_mut(service)
            .filter(|r| r.saved.canary_id == id)
    }

    /// Moves the held revision of `service` (if its canary is still `id`)
    /// to `stage`, saves it and rolls the stack out; its version.
    async fn enter(
        &self,
        state: &mut AutoState,
        (service, id): (&str, u64),
        stage: Stage,
        why: &str,
    ) -> Option<String> {
        let r = Self::held_by(state, service, id)?;
        r.saved.stage = stage;
        let version = r.saved.version.clone();
        state.save().await;
        self.roll_out_logged(state, why).await;
        Some(version)
    }

    /// The canary was promoted: the baseline version is rolled to the new
    /// revision while the canary version serves, takes the traffic back,
    /// and the canary version is retired.
    async fn finish_promotion(&self, service: &str, id: u64) {
        let mut state = self.inner.state.lock().await;
        let why = "a promoted revision replaces its baseline";
        let Some(version) = self
            .enter(&mut state, (service, id), Stage::Promoting, why)
            .await
        else {
            return;
        };
        drop(state);
        if let Err(e) = self.inner.runtime.wait_rollout(service, &version).await {
            tracing::error!(%service, %version, error = %e, "the promoted revision did not roll out");
            return;
        }
        let mut state = self.inner.state.lock().await;
        if Self::held_by(&mut state, service, id).is_none() {
            return;
        }
        let target = Target {
            service: service.to_string(),
            baseline: version.clone(),
            canary: canary_version(&version),
        };
        if let Err(e) = self.inner.sink.set(&target, 0).await {
            tracing::error!(%service, error = %e, "cannot give the traffic back to the baseline version");
            return;
        }
        state.releases.remove(service);
        // The file as last applied, again: the canary version goes, and a
        // file changed meanwhile (while serin was down) is judged now.
        let applied = state.applied.clone();
        if let Err(e) = self.apply_locked(&mut state, applied).await {
            log_failure(&e, "a promoted revision's canary version is retired");
        }
        self.record(
            &target,
            "finish",
            (100, 0),
            format!(
                "{service}/{version} runs the promoted revision and takes all the traffic; \
                 {service}/{} is retired",
                target.canary
            ),
        );
    }

    /// The canary was rolled back (or aborted): the canary version is
    /// stopped and the baseline keeps the old revision.
    async fn retire(&self, service: &str, id: u64) {
        let mut state = self.inner.state.lock().await;
        let why = "a rolled back revision is stopped";
        let Some(version) = self
            .enter(&mut state, (service, id), Stage::RolledBack, why)
            .await
        else {
            return;
        };
        let target = Target {
            service: service.to_string(),
            baseline: version.clone(),
            canary: canary_version(&version),
        };
        self.record(
            &target,
            "retire",
            (0, 0),
            format!(
                "the new revision of {service}/{version} was rolled back: {service}/{} is \
                 stopped and {service}/{version} keeps serving the old revision (the same \
                 revision is not tried again; apply a changed file to)",
                target.canary
            ),
        );
    }

    /// Appends an automatic canary's own decision to the audit log;
    /// `from` and `to`: the canary version's percent before and after.
    fn record(&self, target: &Target, decision: &str, (from, to): (u32, u32), message: String) {
        let weights = |canary: u32| {
            BTreeMap::from([
                (target.baseline.clone(), 100 - canary),
                (target.canary.clone(), canary),
            ])
        };
        let (from, to) = (weights(from), weights(to));
        self.inner.controller.record(&AuditEntry {
            time: humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
            actor: Actor::Apply,
            service: target.service.clone(),
            decision: decision.to_string(),
            baseline: target.baseline.clone(),
            canary: target.canary.clone(),
            step: 0,
            from,
            to,
            figures: None,
            webhook: None,
            message,
        });
    }
}
