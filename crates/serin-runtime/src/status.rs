//! What the runtime reports: replica status (`serin ps`), events, and the
//! summary of an apply.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// Where a replica is in its life, in the spirit of `kubectl get pods`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ReplicaState {
    /// Created, or ended and to be restarted: waits for its service's
    /// `dependsOn` before it starts.
    Pending,
    /// The process runs but has not passed readiness since it started.
    Starting,
    /// The process runs and is ready: it is in the registry.
    Running,
    /// The process runs but failed readiness after having passed it.
    NotReady,
    /// The process ended and the replica waits out its back-off delay.
    CrashLoopBackOff,
    /// Being stopped (SIGTERM, grace period, SIGKILL); out of the registry.
    Terminating,
    /// The process ended and the restart policy says not to restart it.
    Exited,
}

impl ReplicaState {
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Pending => "Pending",
            Self::Starting => "Starting",
            Self::Running => "Running",
            Self::NotReady => "NotReady",
            Self::CrashLoopBackOff => "CrashLoopBackOff",
            Self::Terminating => "Terminating",
            Self::Exited => "Exited",
        }
    }
}

impl std::fmt::Display for ReplicaState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a replica's last process ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitInfo {
    /// The exit status when it exited by itself.
    pub code: Option<i32>,
    /// The signal that ended it.
    pub signal: Option<i32>,
    /// `Completed` (status 0), `Error`, `Signaled`, `LivenessFailed` or
    /// `StartFailed` (the process could not be started).
    pub reason: String,
    /// When it ended, milliseconds since the Unix epoch.
    pub at_unix_ms: u64,
}

impl ExitInfo {
    /// Whether the end counts as a success for `restartPolicy: OnFailure`.
    pub fn succeeded(&self) -> bool {
        self.code == Some(0) && self.reason == "Completed"
    }
}

/// One replica as `serin ps` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaStatus {
    /// `service-version-index`, e.g. `qotm-v1-0`.
    pub name: String,
    pub service: String,
    pub version: String,
    pub index: u32,
    pub state: ReplicaState,
    /// Whether it is in the registry (takes traffic).
    pub ready: bool,
    /// How many times its process was restarted.
    pub restarts: u32,
    /// Its `PORT`, kept across restarts (0 until assigned).
    pub port: u16,
    /// The process id (also its process group id) while it runs.
    pub pid: Option<u32>,
    /// When the replica was created, milliseconds since the Unix epoch.
    pub created_unix_ms: u64,
    /// When its current process started.
    pub started_unix_ms: Option<u64>,
    /// Seconds since the replica was created, when this status was taken.
    pub age_secs: u64,
    pub last_exit: Option<ExitInfo>,
    /// A short note for people: why it waits, why it could not start.
    pub message: Option<String>,
    /// Which rollout of its version it belongs to (bumped by every restart
    /// or changed template).
    pub revision: u64,
    /// The replica's sidecar, when its service has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sidecar: Option<SidecarPorts>,
}

/// The ports of a replica's sidecar (kept across restarts, as `port`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SidecarPorts {
    /// Where other services (and the gateway) reach this replica.
    pub inbound: u16,
    /// Dependency service → the port of its outbound listener.
    pub outbound: std::collections::BTreeMap<String, u16>,
}

/// Something that happened in the runtime, for dashboards and waiting.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum RuntimeEvent {
    /// A replica was created or its status changed.
    ReplicaChanged { replica: ReplicaStatus },
    /// A replica is gone (stopped and cleaned up).
    ReplicaRemoved {
        name: String,
        service: String,
        version: String,
    },
    /// A version has its wanted number of ready replicas of its latest
    /// revision and nothing else.
    RolloutComplete {
        service: String,
        version: String,
        revision: u64,
    },
}

/// What an apply changed, each entry `service/version`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApplySummary {
    /// New versions, started.
    pub added: Vec<String>,
    /// Versions no longer in the stack, stopped.
    pub removed: Vec<String>,
    /// Versions whose template changed, rolled out.
    pub rolled: Vec<String>,
    /// Versions whose replica count changed only.
    pub scaled: Vec<String>,
    pub unchanged: Vec<String>,
}

pub(crate) fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_millis()
        .try_into()
        .unwrap_or(u64::MAX)
}

/// Where a service's last build (`serin up --watch`) stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum BuildState {
    Running,
    /// Exited 0; the service's versions were rolled out again.
    Succeeded,
    /// Exited otherwise or could not start; the running replicas stayed.
    Failed,
}

/// A service's last build, for `serin ps` and `GET /runtime/builds`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BuildStatus {
    pub service: String,
    pub state: BuildState,
    /// The build command as written (empty: no `build`, a change only
    /// rolls the versions).
    pub command: String,
    /// Builds of this service since `serin up` started, this one included.
    pub builds: u64,
    pub started_unix_ms: u64,
    pub finished_unix_ms: Option<u64>,
    /// What went wrong, for a failed build: the exit status and the
    /// build's last line of output. For a build an automatic canary
    /// judges: what became of it.
    pub message: Option<String>,
}
