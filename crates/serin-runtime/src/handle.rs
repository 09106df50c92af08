//! Starting the runtime and driving it while it runs.

use std::collections::BTreeSet;
use std::sync::Arc;

use serin_config::stack::{MAX_REPLICAS, Stack};
use serin_discovery::Registry;
use tokio::sync::broadcast;

use crate::controller;
use crate::error::RuntimeError;
use crate::logs::{LogFilter, LogLine, LogStore};
use crate::process::{Spawner, resolve};
use crate::shared::{Shared, State, VersionKey, VersionState};
use crate::status::{ApplySummary, ReplicaStatus, RuntimeEvent};
use crate::workdir::WorkDir;
use crate::{RuntimeOptions, options_print};

/// The local runtime: `Runtime::start` runs a stack and returns the handle
/// that drives it.
pub struct Runtime;

impl Runtime {
    /// Starts every version's replicas (each service's first start waits for
    /// its `dependsOn`) and keeps `registry` fed with the endpoints of ready
    /// replicas. Returns at once; use [`RuntimeHandle::wait_all_rolled_out`]
    /// to wait for readiness.
    ///
    /// Fails, starting nothing, when a command cannot be found or the
    /// runtime folder cannot be made. Must be called within a Tokio runtime,
    /// which must outlive the handle.
    pub async fn start(
        stack: Stack,
        registry: Registry,
        options: RuntimeOptions,
    ) -> Result<RuntimeHandle, RuntimeError> {
        preflight(&stack)?;
        let rt = tokio::runtime::Handle::current();
        let workdir = WorkDir::create(options.work_dir.as_deref())
            .map_err(|e| RuntimeError::io("cannot create the runtime folder", e))?;
        let spawner =
            Spawner::start().map_err(|e| RuntimeError::io("cannot start the spawner thread", e))?;
        let logs = LogStore::new(options.log_history, options_print(&options));
        let shared = Arc::new(Shared::new(
            registry,
            spawner,
            logs,
            workdir,
            rt,
            stack.clone(),
        ));
        {
            let mut state = shared.lock();
            for svc in &stack.services {
                for v in &svc.versions {
                    add_version(&shared, &mut state, &svc.name, v.clone(), &stack);
                }
            }
        }
        Ok(RuntimeHandle { shared })
    }
}

fn add_version(
    shared: &Arc<Shared>,
    state: &mut State,
    service: &str,
    spec: serin_config::stack::VersionSpec,
    stack: &Stack,
) {
    let vkey = (service.to_string(), spec.name.clone());
    let vs = VersionState::new(service, spec, &stack.base_dir);
    // The backend exists from the start, with no endpoints until a replica
    // is ready.
    shared.sync_registry(false, &vs);
    let wake = vs.wake.clone();
    state.versions.insert(vkey.clone(), vs);
    controller::spawn(shared.clone(), vkey, wake);
}

/// Checks that every command can be found, so that a typo fails at once
/// rather than as a crash loop.
fn preflight(stack: &Stack) -> Result<(), RuntimeError> {
    for svc in &stack.services {
        for v in &svc.versions {
            resolve(&v.program).map_err(|reason| RuntimeError::Command {
                service: svc.name.clone(),
                version: v.name.clone(),
                reason,
            })?;
        }
    }
    Ok(())
}

/// Drives a running stack. Cheap to clone; every clone drives the same one.
#[derive(Clone)]
pub struct RuntimeHandle {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for RuntimeHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.shared.lock();
        f.debug_struct("RuntimeHandle")
            .field("versions", &state.versions.len())
            .field("shutting_down", &state.shutting_down)
            .finish()
    }
}

/// Recent log lines and, when following, the lines still to come.
pub struct Logs {
    /// Oldest first.
    pub lines: Vec<Arc<LogLine>>,
    pub follow: Option<LogFollower>,
}

/// The log lines written after [`RuntimeHandle::logs`] was called.
pub struct LogFollower {
    rx: broadcast::Receiver<Arc<LogLine>>,
    done: tokio::sync::watch::Receiver<bool>,
    filter: LogFilter,
    /// Lines a slow reader missed since the last call.
    pub missed: u64,
}

impl LogFollower {
    /// The next matching line; `None` once the runtime has shut down.
    pub async fn next(&mut self) -> Option<Arc<LogLine>> {
        loop {
            let received = tokio::select! {
                r = self.rx.recv() => r,
                () = async { let _ = self.done.wait_for(|d| *d).await; } => return None,
            };
            match received {
                Ok(line) if self.filter.matches(&line) => return Some(line),
                Ok(_) => {}
                Err(broadcast::error::RecvError::Lagged(n)) => self.missed += n,
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }
}

impl RuntimeHandle {
    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Each watched service's last build (`serin up --watch`), by service.
    pub fn builds(&self) -> Vec<crate::status::BuildStatus> {
        self.shared.lock().builds.values().cloned().collect()
    }

    /// The registry the runtime feeds.
    pub fn registry(&self) -> &Registry {
        &self.shared.registry
    }

    /// The stack as last started or applied (replica counts as written, not
    /// as scaled since).
    pub fn stack(&self) -> Stack {
        self.shared.lock().stack.clone()
    }

    /// Every replica, ordered by service, version and index.
    pub fn ps(&self) -> Vec<ReplicaStatus> {
        let state = self.shared.lock();
        let mut out: Vec<ReplicaStatus> = state
            .versions
            .values()
            .flat_map(|vs| vs.replicas.values().map(Shared::snapshot))
            .collect();
        out.sort_by(|a, b| {
            (&a.service, &a.version, a.index, a.revision)
                .cmp(&(&b.service, &b.version, b.index, b.revision))
        });
        out
    }

    /// Sets a version's replica count (until the next apply).
    pub async fn scale(
        &self,
        service: &str,
        version: &str,
        replicas: u32,
    ) -> Result<(), RuntimeError> {
        if replicas > MAX_REPLICAS {
            return Err(RuntimeError::BadReplicas {
                got: replicas,
                max: MAX_REPLICAS,
            });
        }
        self.with_version(service, version, |vs| {
            if vs.desired != replicas {
                vs.desired = replicas;
                vs.rolling = true;
            }
        })
    }

    /// Rolls every replica of a version: new replicas replace the old ones
    /// per the version's strategy (by default one at a time, each new one
    /// ready before an old one stops). Returns at once with the new
    /// revision; [`RuntimeHandle::wait_rollout`] waits for the end.
    pub async fn restart(&self, service: &str, version: &str) -> Result<u64, RuntimeError> {
        let mut revision = 0;
        self.with_version(service, version, |vs| {
            vs.revision += 1;
            vs.rolling = true;
            revision = vs.revision;
        })?;
        Ok(revision)
    }

    fn with_version(
        &self,
        service: &str,
        version: &str,
        change: impl FnOnce(&mut VersionState),
    ) -> Result<(), RuntimeError> {
        let wake = {
            let mut state = self.shared.lock();
            if state.shutting_down {
                return Err(RuntimeError::ShuttingDown);
            }
            let vs = find(&mut state, service, version)?;
            change(vs);
            vs.wake.clone()
        };
        wake.notify_one();
        self.shared.bump();
        Ok(())
    }

    /// Runs a changed stack: new versions start, removed ones stop, versions
    /// whose template changed roll out per their strategy, and replica
    /// counts are set to the file's. Returns at once with what changed.
    /// Fails, changing nothing, when a command cannot be found.
    pub async fn apply(&self, stack: Stack) -> Result<ApplySummary, RuntimeError> {
        preflight(&stack)?;
        let mut summary = ApplySummary::default();
        let mut wakes = Vec::new();
        {
            let mut guard = self.shared.lock();
            let state = &mut *guard;
            if state.shutting_down {
                return Err(RuntimeError::ShuttingDown);
            }
            let wanted: BTreeSet<VersionKey> = stack
                .services
                .iter()
                .flat_map(|s| s.versions.iter().map(|v| (s.name.clone(), v.name.clone())))
                .collect();
            for (vkey, vs) in state.versions.iter_mut() {
                if !wanted.contains(vkey) && !vs.removed {
                    vs.removed = true;
                    wakes.push(vs.wake.clone());
                    summary.removed.push(format!("{}/{}", vkey.0, vkey.1));
                }
            }
            for svc in &stack.services {
                for v in &svc.versions {
                    let vkey = (svc.name.clone(), v.name.clone());
                    let name = format!("{}/{}", vkey.0, vkey.1);
                    let Some(vs) = state.versions.get_mut(&vkey) else {
                        add_version(&self.shared, state, &svc.name, v.clone(), &stack);
                        summary.added.push(name);
                        continue;
                    };
                    let same = vs.spec.same_template(v) && *vs.base_dir == *stack.base_dir;
                    if vs.removed {
                        vs.removed = false;
                        vs.revision += 1;
                        summary.added.push(name);
                    } else if !same {
                        vs.revision += 1;
                        summary.rolled.push(name);
                    } else if vs.desired != v.replicas {
                        summary.scaled.push(name);
                    } else {
                        summary.unchanged.push(name);
                    }
                    if !same || vs.desired != v.replicas {
                        vs.rolling = true;
                    }
                    vs.spec = Arc::new(v.clone());
                    vs.base_dir = Arc::from(stack.base_dir.as_path());
                    vs.desired = v.replicas;
                    wakes.push(vs.wake.clone());
                }
            }
            state.stack = stack;
        }
        for w in wakes {
            w.notify_one();
        }
        self.shared.bump();
        Ok(summary)
    }

    /// Waits until a version runs its wanted replicas of its latest revision,
    /// all ready, and nothing else. Fails when the version is (or becomes)
    /// unknown, or the runtime shuts down. Bound it with a timeout: a
    /// version whose replicas never get ready never finishes.
    pub async fn wait_rollout(&self, service: &str, version: &str) -> Result<(), RuntimeError> {
        let mut result = Ok(());
        self.shared
            .wait_until(|state| {
                if state.shutting_down {
                    result = Err(RuntimeError::ShuttingDown);
                    return true;
                }
                match state
                    .versions
                    .get(&(service.to_string(), version.to_string()))
                {
                    Some(vs) if !vs.removed => vs.rolled_out(),
                    _ => {
                        result = Err(not_found(state, service, version));
                        true
                    }
                }
            })
            .await;
        result
    }

    /// Waits until every version is rolled out (see
    /// [`RuntimeHandle::wait_rollout`]) and removed ones are gone.
    pub async fn wait_all_rolled_out(&self) -> Result<(), RuntimeError> {
        let mut result = Ok(());
        self.shared
            .wait_until(|state| {
                if state.shutting_down {
                    result = Err(RuntimeError::ShuttingDown);
                    return true;
                }
                state.versions.values().all(|vs| vs.rolled_out())
            })
            .await;
        result
    }

    /// Recent log lines of the matching replicas (the last `tail`, or all
    /// kept), and with `follow` the lines still to come.
    pub fn logs(
        &self,
        filter: LogFilter,
        tail: Option<usize>,
        follow: bool,
    ) -> Result<Logs, RuntimeError> {
        if let Some(service) = &filter.service {
            let mut state = self.shared.lock();
            match &filter.version {
                Some(version) => {
                    find(&mut state, service, version)?;
                }
                None => {
                    if !state.versions.keys().any(|(s, _)| s == service) {
                        return Err(RuntimeError::UnknownService(service.clone()));
                    }
                }
            }
        }
        let (lines, rx) = self.shared.logs.read(&filter, tail, follow);
        Ok(Logs {
            lines,
            follow: rx.map(|rx| LogFollower {
                rx,
                done: self.shared.shutdown_done.subscribe(),
                filter,
                missed: 0,
            }),
        })
    }

    /// Every change of a replica, and finished rollouts, from now on.
    pub fn events(&self) -> broadcast::Receiver<RuntimeEvent> {
        self.shared.events.subscribe()
    }

    /// Stops everything gracefully: every replica leaves the registry at
    /// once, then services are stopped in reverse `dependsOn` order (a
    /// service before what it depends on), each replica's process group
    /// getting SIGTERM and, after its grace period, SIGKILL. Returns when
    /// every process has ended and the runtime's files are removed. Calling
    /// it again waits for the first call.
    pub async fn shutdown(&self) -> Result<(), RuntimeError> {
        let (first, levels, wakes) = {
            let mut guard = self.shared.lock();
            let state = &mut *guard;
            let first = !state.shutting_down;
            state.shutting_down = true;
            for vs in state.versions.values() {
                self.shared.sync_registry(true, vs);
            }
            let wakes: Vec<_> = state.versions.values().map(|vs| vs.wake.clone()).collect();
            (first, stop_levels(state), wakes)
        };
        for w in wakes {
            w.notify_one();
        }
        self.shared.bump();
        if !first {
            let mut done = self.shared.shutdown_done.subscribe();
            let _ = done.wait_for(|d| *d).await;
            return Ok(());
        }
        for level in levels {
            {
                let mut guard = self.shared.lock();
                let state = &mut *guard;
                for (vkey, vs) in state.versions.iter_mut() {
                    if level.contains(&vkey.0) {
                        let uids: Vec<u64> = vs.replicas.keys().copied().collect();
                        for uid in uids {
                            self.shared.mark_stopping(true, vs, uid);
                        }
                    }
                }
            }
            self.shared.bump();
            self.shared
                .wait_until(|state| {
                    state
                        .versions
                        .iter()
                        .filter(|(k, _)| level.contains(&k.0))
                        .all(|(_, vs)| vs.replicas.is_empty())
                })
                .await;
        }
        self.shared.workdir.remove();
        self.shared.shutdown_done.send_replace(true);
        Ok(())
    }
}

/// Services in the order to stop them: those nothing depends on first.
/// Every service that has replicas is in some level (removed services and
/// unknown ones in the first).
fn stop_levels(state: &State) -> Vec<BTreeSet<String>> {
    let mut remaining: BTreeSet<String> = state.versions.keys().map(|(s, _)| s.clone()).collect();
    let deps = |s: &str| -> Vec<String> {
        state
            .stack
            .service(s)
            .map(|svc| svc.depends_on.iter().map(|d| d.service.clone()).collect())
            .unwrap_or_default()
    };
    let mut levels = Vec::new();
    while !remaining.is_empty() {
        // Services no remaining service depends on.
        let needed: BTreeSet<String> = remaining.iter().flat_map(|s| deps(s)).collect();
        let mut level: BTreeSet<String> = remaining
            .iter()
            .filter(|s| !needed.contains(*s))
            .cloned()
            .collect();
        if level.is_empty() {
            // A cycle cannot pass validation; stop the rest together.
            level = std::mem::take(&mut remaining);
        }
        remaining.retain(|s| !level.contains(s));
        levels.push(level);
    }
    levels
}

fn find<'a>(
    state: &'a mut State,
    service: &str,
    version: &str,
) -> Result<&'a mut VersionState, RuntimeError> {
    let err = not_found(state, service, version);
    match state
        .versions
        .get_mut(&(service.to_string(), version.to_string()))
    {
        Some(vs) if !vs.removed => Ok(vs),
        _ => Err(err),
    }
}

fn not_found(state: &State, service: &str, version: &str) -> RuntimeError {
    if state
        .versions
        .iter()
        .any(|((s, _), vs)| s == service && !vs.removed)
    {
        RuntimeError::UnknownVersion {
            service: service.to_string(),
            version: version.to_string(),
        }
    } else {
        RuntimeError::UnknownService(service.to_string())
    }
}
