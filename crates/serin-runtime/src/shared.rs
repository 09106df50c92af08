//! The runtime's shared state: every version with its wanted replica count
//! and its replicas, behind one lock that is never held across an await.
//!
//! Whoever changes a replica's readiness or stops it updates the registry in
//! the same critical section, so the registry always holds exactly the ready
//! replicas that are not stopping.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Instant, SystemTime};

use serin_config::stack::{DependencyCondition, Stack, VersionSpec};
use serin_discovery::{BackendKey, EndpointSpec, Registry};
use tokio::sync::{Notify, broadcast, watch};

use crate::logs::{LineSource, LogStore, LogStream};
use crate::process::{Spawner, free_port};
use crate::status::{ReplicaState, ReplicaStatus, RuntimeEvent, unix_ms};
use crate::workdir::WorkDir;

/// `(service, version)`.
pub(crate) type VersionKey = (String, String);

pub(crate) struct Shared {
    pub registry: Registry,
    pub spawner: Spawner,
    pub logs: Arc<LogStore>,
    pub events: broadcast::Sender<RuntimeEvent>,
    /// Bumped on every change of the state, for whoever waits on a
    /// condition (dependencies, rollouts, shutdown).
    pub changed: watch::Sender<u64>,
    pub workdir: WorkDir,
    pub rt: tokio::runtime::Handle,
    /// Set once a shutdown has finished.
    pub shutdown_done: watch::Sender<bool>,
    state: Mutex<State>,
}

pub(crate) struct State {
    pub stack: Stack,
    pub versions: BTreeMap<VersionKey, VersionState>,
    pub shutting_down: bool,
    pub next_uid: u64,
    /// Ports handed to live replicas, so two never get the same one.
    pub ports: BTreeSet<u16>,
    /// Each watched service's last build, by service.
    pub builds: BTreeMap<String, crate::status::BuildStatus>,
}

pub(crate) struct VersionState {
    pub key: BackendKey,
    pub spec: Arc<VersionSpec>,
    pub base_dir: Arc<Path>,
    /// Replicas of an older revision are replaced by a rollout.
    pub revision: u64,
    pub desired: u32,
    /// No longer in the stack: its replicas are stopped, then it goes.
    pub removed: bool,
    /// A rollout or scale is under way; `RolloutComplete` is sent when done.
    pub rolling: bool,
    /// Wakes the version's controller.
    pub wake: Arc<Notify>,
    pub replicas: BTreeMap<u64, ReplicaEntry>,
}

pub(crate) struct ReplicaEntry {
    pub revision: u64,
    pub stopping: bool,
    pub stop: watch::Sender<bool>,
    pub status: ReplicaStatus,
    pub created: Instant,
}

impl VersionState {
    pub(crate) fn new(service: &str, spec: VersionSpec, base_dir: &Path) -> Self {
        Self {
            key: BackendKey::new(service, &spec.name),
            desired: spec.replicas,
            spec: Arc::new(spec),
            base_dir: Arc::from(base_dir),
            revision: 1,
            removed: false,
            rolling: true,
            wake: Arc::new(Notify::new()),
            replicas: BTreeMap::new(),
        }
    }

    /// Whether the version runs exactly its wanted replicas of its latest
    /// revision, all ready, and nothing else.
    pub(crate) fn rolled_out(&self) -> bool {
        !self.removed
            && self.replicas.len() == self.desired as usize
            && self
                .replicas
                .values()
                .all(|r| r.revision == self.revision && !r.stopping && r.status.ready)
    }
}

impl Shared {
    pub(crate) fn new(
        registry: Registry,
        spawner: Spawner,
        logs: LogStore,
        workdir: WorkDir,
        rt: tokio::runtime::Handle,
        stack: Stack,
    ) -> Self {
        let (events, _) = broadcast::channel(1024);
        Self {
            registry,
            spawner,
            logs: Arc::new(logs),
            events,
            changed: watch::channel(0).0,
            workdir,
            rt,
            shutdown_done: watch::channel(false).0,
            state: Mutex::new(State {
                stack,
                versions: BTreeMap::new(),
                shutting_down: false,
                next_uid: 0,
                ports: BTreeSet::new(),
                builds: BTreeMap::new(),
            }),
        }
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Tells every waiter that the state changed.
    pub(crate) fn bump(&self) {
        self.changed.send_modify(|n| *n = n.wrapping_add(1));
    }

    pub(crate) fn emit(&self, event: RuntimeEvent) {
        let _ = self.events.send(event);
    }

    /// Waits until `cond` holds for the state.
    pub(crate) async fn wait_until(&self, mut cond: impl FnMut(&State) -> bool) {
        let mut rx = self.changed.subscribe();
        loop {
            if cond(&self.lock()) {
                return;
            }
            if rx.changed().await.is_err() {
                return;
            }
        }
    }

    /// Puts the version's ready, not stopping replicas in the registry (none
    /// while shutting down).
    pub(crate) fn sync_registry(&self, shutting_down: bool, vs: &VersionState) {
        if shutting_down || vs.removed && vs.replicas.is_empty() {
            self.registry.remove(&vs.key);
            return;
        }
        let endpoints = vs
            .replicas
            .values()
            .filter(|r| r.status.ready && !r.stopping && r.status.port != 0)
            .map(|r| EndpointSpec {
                // With a sidecar, traffic goes through its inbound listener.
                addr: SocketAddr::from((
                    [127, 0, 0, 1],
                    r.status
                        .sidecar
                        .as_ref()
                        .map_or(r.status.port, |s| s.inbound),
                )),
                name: r.status.name.as_str().into(),
            })
            .collect();
        self.registry.set(vs.key.clone(), endpoints);
    }

    /// A snapshot of a replica's status with its age filled in.
    pub(crate) fn snapshot(entry: &ReplicaEntry) -> ReplicaStatus {
        let mut s = entry.status.clone();
        s.age_secs = entry.created.elapsed().as_secs();
        s
    }

    /// Changes a replica's entry; keeps the registry, waiters, the version's
    /// controller and event listeners up to date. Returns `false` when the
    /// replica is gone.
    pub(crate) fn update_replica(
        &self,
        vkey: &VersionKey,
        uid: u64,
        change: impl FnOnce(&mut ReplicaEntry),
    ) -> bool {
        let (event, wake) = {
            let mut guard = self.lock();
            let state = &mut *guard;
            let shutting_down = state.shutting_down;
            let Some(vs) = state.versions.get_mut(vkey) else {
                return false;
            };
            let Some(entry) = vs.replicas.get_mut(&uid) else {
                return false;
            };
            let before = entry.status.clone();
            change(entry);
            if entry.stopping {
                entry.status.ready = false;
                entry.status.state = ReplicaState::Terminating;
            }
            if entry.status == before {
                return true;
            }
            let event = RuntimeEvent::ReplicaChanged {
                replica: Self::snapshot(entry),
            };
            if before.ready != entry.status.ready || before.port != entry.status.port {
                self.sync_registry(shutting_down, vs);
            }
            (event, vs.wake.clone())
        };
        self.emit(event);
        self.bump();
        wake.notify_one();
        true
    }

    /// Marks a replica as stopping: out of the registry at once, then told
    /// to stop (its task sends SIGTERM). Call with the state locked.
    pub(crate) fn mark_stopping(&self, shutting_down: bool, vs: &mut VersionState, uid: u64) {
        let Some(entry) = vs.replicas.get_mut(&uid) else {
            return;
        };
        if entry.stopping {
            return;
        }
        entry.stopping = true;
        entry.status.ready = false;
        entry.status.state = ReplicaState::Terminating;
        let event = RuntimeEvent::ReplicaChanged {
            replica: Self::snapshot(entry),
        };
        self.sync_registry(shutting_down, vs);
        if let Some(entry) = vs.replicas.get(&uid) {
            entry.stop.send_replace(true);
        }
        self.emit(event);
    }

    /// Removes a replica whose task has ended.
    pub(crate) fn remove_replica(&self, vkey: &VersionKey, uid: u64) {
        let wake = {
            let mut guard = self.lock();
            let state = &mut *guard;
            let shutting_down = state.shutting_down;
            let Some(vs) = state.versions.get_mut(vkey) else {
                return;
            };
            let Some(entry) = vs.replicas.remove(&uid) else {
                return;
            };
            state.ports.remove(&entry.status.port);
            self.sync_registry(shutting_down, vs);
            self.emit(RuntimeEvent::ReplicaRemoved {
                name: entry.status.name.clone(),
                service: entry.status.service.clone(),
                version: entry.status.version.clone(),
            });
            vs.wake.clone()
        };
        self.bump();
        wake.notify_one();
    }

    /// A free loopback port no other replica holds. Found free by binding
    /// port 0 and letting it go, so another process may take it before the
    /// replica binds it: the replica then exits, and is given another port
    /// before it restarts ([`crate::replica`]).
    pub(crate) fn allocate_port(&self) -> std::io::Result<u16> {
        let mut last = None;
        for _ in 0..32 {
            let port = free_port()?;
            let mut state = self.lock();
            if state.ports.insert(port) {
                return Ok(port);
            }
            last = Some(port);
        }
        Err(std::io::Error::other(format!(
            "no free port found (last tried {})",
            last.unwrap_or(0)
        )))
    }

    /// Gives `port` back (its replica moved to another).
    pub(crate) fn release_port(&self, port: u16) {
        self.lock().ports.remove(&port);
    }

    /// What `service`'s `dependsOn` still waits for, in words ("a ready
    /// replica of auth"); empty when every condition holds.
    pub(crate) fn missing_dependencies(&self, service: &str) -> Vec<String> {
        let state = self.lock();
        let Some(spec) = state.stack.service(service) else {
            return Vec::new();
        };
        spec.depends_on
            .iter()
            .filter(|dep| {
                !state.versions.iter().any(|((s, _), vs)| {
                    *s == dep.service
                        && vs
                            .replicas
                            .values()
                            .any(|r| !r.stopping && meets(&r.status, dep.condition))
                })
            })
            .map(|dep| format!("a {} replica of {}", dep.condition.as_str(), dep.service))
            .collect()
    }

    /// Writes a line from the runtime into a replica's log.
    pub(crate) fn say(&self, source: &LineSource, message: impl Into<String>) {
        let message = message.into();
        tracing::debug!(replica = %source.replica, "{message}");
        self.logs.push(source, LogStream::Serin, message);
    }
}

/// Whether a replica in `status` meets a dependent's `condition`.
fn meets(status: &ReplicaStatus, condition: DependencyCondition) -> bool {
    match condition {
        DependencyCondition::Ready => status.ready,
        DependencyCondition::Started => matches!(
            status.state,
            ReplicaState::Starting | ReplicaState::Running | ReplicaState::NotReady
        ),
    }
}

pub(crate) fn now_ms() -> u64 {
    unix_ms(SystemTime::now())
}
