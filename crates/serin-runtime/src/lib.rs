//! The local runtime of `serin up`: runs a stack's services as supervised
//! processes on one machine, with Kubernetes' semantics and none of its
//! set-up.
//!
//! - Each version of a service runs as `replicas` processes
//!   (`service-version-N`), each with its own loopback port in `PORT` (kept
//!   across restarts of that replica) and `SERIN_SERVICE`, `SERIN_VERSION`,
//!   `SERIN_REPLICA` in its environment, plus the stack's `env` and secrets.
//!   Processes run in the stack file's folder.
//! - `command`: a path (with a `/`) relative to the stack file's folder, or a
//!   bare name looked up next to serin's executable, then in `PATH`. The name
//!   `serin-demo`, when no such executable exists, runs serin's own
//!   executable as `serin demo ARGS...` (the `serin` binary embeds the demo
//!   services).
//! - The [`serin_discovery::Registry`] holds the endpoints of *ready*
//!   replicas only. A replica that crashes, fails readiness or is being
//!   stopped leaves it at once (before it is sent SIGTERM). Without a
//!   readiness probe a replica is ready once its port accepts TCP
//!   connections.
//! - Liveness failures restart the replica; `restartPolicy` decides what
//!   happens when a process ends, with the kubelet's CrashLoopBackOff
//!   (first restart at once, then `initial` doubling to `max`, reset after
//!   `resetAfter` of running).
//! - `dependsOn`: each start and restart of a replica waits until every
//!   service it depends on meets its condition (`ready`: a ready replica;
//!   `started`: a running process); a dependency that goes away later does
//!   not stop the replicas already running.
//! - Stopping a replica: out of the registry, SIGTERM to its process group,
//!   `terminationGracePeriod`, SIGKILL; whatever is left in the group when
//!   its leader ends is killed too.
//! - Children run in their own process groups (Ctrl-C in a terminal reaches
//!   serin only, which stops them gracefully) and die with serin even when
//!   it is SIGKILLed (`PR_SET_PDEATHSIG`, set from one long-lived spawner thread).
//! - `files` and `asFile` secrets are written under a private runtime folder
//!   (0700 folders, 0600 files), named to the process by `SERIN_FILES_DIR` and
//!   `SERIN_SECRETS_DIR`, and removed on shutdown. Secret values are never
//!   logged or shown by `ps`, and are masked in the replicas' own output.
//! - Rollouts (`restart`, a changed template in `apply`): `RollingUpdate`
//!   starts new replicas within `replicas + maxSurge` and stops an old one
//!   when it is not ready or when the ready count stays at least
//!   `replicas - maxUnavailable` without it; `Recreate` stops every old
//!   replica before starting new ones. Scaling down stops replicas that are
//!   not ready first, then the newest.
//! - Logs: see [`logs`]. HTTP control: see [`admin`]. Rebuilding on a
//!   change (`serin up --watch`): see [`watch`].
//!
//! Dropping every [`RuntimeHandle`] without [`RuntimeHandle::shutdown`]
//! leaves the stack running until the Tokio runtime ends, when every
//! process is killed without grace.

pub mod admin;
mod backoff;
mod controller;
mod error;
mod handle;
pub mod logs;
mod probe;
mod process;
mod replica;
mod shared;
mod status;
pub mod watch;
mod workdir;

use std::path::PathBuf;

pub use admin::admin_router;
pub use error::RuntimeError;
pub use handle::{LogFollower, Logs, Runtime, RuntimeHandle};
pub use logs::{ColorChoice, LineKind, LogFilter, LogFormat, LogLine, LogStream};
pub use status::{
    ApplySummary, BuildState, BuildStatus, ExitInfo, ReplicaState, ReplicaStatus, RuntimeEvent,
};

/// Lines kept per replica for `serin logs` by default.
pub const DEFAULT_LOG_HISTORY: usize = 1000;

/// How the runtime runs.
#[derive(Debug, Clone)]
pub struct RuntimeOptions {
    /// How replica logs are printed on stdout.
    pub log_format: LogFormat,
    /// Whether replica logs are printed on stdout at all (they are kept for
    /// [`RuntimeHandle::logs`] either way).
    pub print_logs: bool,
    pub color: ColorChoice,
    /// Lines kept per replica.
    pub log_history: usize,
    /// Where replicas' private folders go; by default a fresh folder in the
    /// system's temporary folder, removed at shutdown.
    pub work_dir: Option<PathBuf>,
}

impl Default for RuntimeOptions {
    fn default() -> Self {
        Self {
            log_format: LogFormat::Text,
            print_logs: true,
            color: ColorChoice::Auto,
            log_history: DEFAULT_LOG_HISTORY,
            work_dir: None,
        }
    }
}

fn options_print(o: &RuntimeOptions) -> Option<(LogFormat, ColorChoice)> {
    o.print_logs.then_some((o.log_format, o.color))
}
