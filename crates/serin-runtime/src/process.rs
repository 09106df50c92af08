//! Starting, watching and stopping child processes.
//!
//! Every child runs in its own process group, so that a terminal's Ctrl-C
//! reaches serin only (which then stops the children gracefully) and so that
//! a stop reaches the whole group (a shell and what it started). Every child
//! also asks the kernel for SIGKILL when its parent goes away
//! (`PR_SET_PDEATHSIG`), so nothing is left behind when serin itself is
//! killed with SIGKILL.

use std::ffi::OsString;
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use serin_config::stack::Program;
use tokio::net::unix::pipe;
use tokio::sync::oneshot;

/// Starts children from one dedicated thread.
///
/// `PR_SET_PDEATHSIG` fires when the *thread* that forked the child exits,
/// not when the process does. Tokio's blocking-pool threads exit when idle
/// (and a worker thread can turn into one with `block_in_place`), which would
/// SIGKILL perfectly healthy children. So every fork happens on this thread,
/// which lives as long as the runtime: it ends only when the last
/// [`Spawner`] is dropped, after every replica has been stopped (and if the
/// runtime is dropped without a shutdown, its children die with it, which is
/// what we want too).
#[derive(Debug)]
pub(crate) struct Spawner {
    requests: mpsc::Sender<SpawnRequest>,
}

struct SpawnRequest {
    command: Command,
    reply: oneshot::Sender<io::Result<Child>>,
}

impl Spawner {
    pub(crate) fn start() -> io::Result<Self> {
        let (requests, rx) = mpsc::channel::<SpawnRequest>();
        std::thread::Builder::new()
            .name("serin-spawner".into())
            .spawn(move || {
                for mut req in rx {
                    let result = req.command.spawn();
                    if let Err(Ok(mut child)) = req.reply.send(result) {
                        // Nobody waits for it any more: do not leave it running.
                        signal_group(child.id(), Signal::SIGKILL);
                        let _ = child.wait();
                    }
                }
            })?;
        Ok(Self { requests })
    }

    /// Starts `spec` in its own process group, with PDEATHSIG set; stdin is
    /// /dev/null, stdout and stderr are pipes.
    pub(crate) async fn spawn(&self, spec: &ProcessSpec) -> io::Result<Proc> {
        let command = spec.command();
        let (reply, rx) = oneshot::channel();
        self.requests
            .send(SpawnRequest { command, reply })
            .map_err(|_| io::Error::other("the spawner thread is gone"))?;
        let mut child = rx
            .await
            .map_err(|_| io::Error::other("the spawner thread is gone"))??;
        let pid = child.id();
        let stdout = child.stdout.take().map(OwnedFd::from);
        let stderr = child.stderr.take().map(OwnedFd::from);
        let (exit_tx, exit) = oneshot::channel();
        // Waiting is blocking in std; a small thread per child does it (the
        // waiting thread does not matter for PDEATHSIG, only the forking one).
        let waiter = std::thread::Builder::new()
            .name(format!("serin-wait-{pid}"))
            .spawn(move || {
                let status = child.wait();
                let _ = exit_tx.send(status);
            });
        if let Err(e) = waiter {
            signal_group(pid, Signal::SIGKILL);
            return Err(e);
        }
        let stdout = stdout.map(pipe::Receiver::from_owned_fd).transpose()?;
        let stderr = stderr.map(pipe::Receiver::from_owned_fd).transpose()?;
        Ok(Proc {
            pid,
            exit,
            stdout,
            stderr,
            status: None,
        })
    }
}

/// What to start.
#[derive(Debug, Clone)]
pub(crate) struct ProcessSpec {
    pub program: PathBuf,
    pub args: Vec<OsString>,
    pub env: Vec<(OsString, OsString)>,
    pub cwd: PathBuf,
    /// Pipes for stdout and stderr (else /dev/null).
    pub capture_output: bool,
}

impl ProcessSpec {
    fn command(&self) -> Command {
        let mut cmd = Command::new(&self.program);
        // serin's admin token is not the services' business (a stack's
        // `env` may still pass it on purpose).
        cmd.args(&self.args)
            .env_remove(serin_config::proxy::admin::TOKEN_ENV)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .current_dir(&self.cwd)
            .stdin(Stdio::null())
            .process_group(0);
        if self.capture_output {
            cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        } else {
            cmd.stdout(Stdio::null()).stderr(Stdio::null());
        }
        let parent = nix::unistd::getpid().as_raw();
        // SAFETY: the closure runs in the forked child before exec and only
        // makes async-signal-safe calls (prctl, getppid) and builds errors
        // without allocating.
        unsafe {
            cmd.pre_exec(move || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) == -1 {
                    return Err(io::Error::last_os_error());
                }
                // serin may have died between fork and prctl; then the
                // signal will never come, so do not start at all.
                if libc::getppid() != parent {
                    return Err(io::Error::from_raw_os_error(libc::ESRCH));
                }
                Ok(())
            });
        }
        cmd
    }
}

/// A running child process.
#[derive(Debug)]
pub(crate) struct Proc {
    pub pid: u32,
    exit: oneshot::Receiver<io::Result<ExitStatus>>,
    pub stdout: Option<pipe::Receiver>,
    pub stderr: Option<pipe::Receiver>,
    status: Option<ExitStatus>,
}

impl Proc {
    /// Waits for the process to end (cancel-safe; the result is kept).
    pub(crate) async fn wait(&mut self) -> ExitStatus {
        if let Some(s) = self.status {
            return s;
        }
        let status = match (&mut self.exit).await {
            Ok(Ok(s)) => s,
            // The waiter failed or vanished: the process cannot be watched;
            // call it killed.
            _ => ExitStatus::from_raw(libc::SIGKILL),
        };
        self.status = Some(status);
        // Whatever the leader left in its group goes with it.
        signal_group(self.pid, Signal::SIGKILL);
        status
    }

    /// Stops the process group: SIGTERM, then SIGKILL after `grace`.
    pub(crate) async fn terminate(&mut self, grace: Duration) -> ExitStatus {
        if let Some(s) = self.status {
            return s;
        }
        signal_group(self.pid, Signal::SIGTERM);
        match tokio::time::timeout(grace, self.wait()).await {
            Ok(s) => s,
            Err(_) => {
                signal_group(self.pid, Signal::SIGKILL);
                self.wait().await
            }
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        // A process nobody watches any more must not outlive its replica.
        if self.status.is_none() {
            signal_group(self.pid, Signal::SIGKILL);
        }
    }
}

/// Sends `signal` to the process group led by `pid`; a group that is gone
/// is fine.
pub(crate) fn signal_group(pid: u32, signal: Signal) {
    if let Ok(pid) = i32::try_from(pid) {
        let _ = killpg(Pid::from_raw(pid), signal);
    }
}

/// The program to execute for a stack's `command`, and arguments to put
/// before the stack's `args`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Resolved {
    pub program: PathBuf,
    pub prefix_args: Vec<String>,
}

/// Finds the executable for `program`:
/// - a path (it had a `/`): that file;
/// - a bare name: the folder of the current executable first (so serin's
///   sibling binaries win), then `PATH`;
/// - `serin-demo` when no such executable exists: the current executable
///   with `demo` put before the arguments, since the `serin` binary embeds
///   the demo services as `serin demo ...`.
pub(crate) fn resolve(program: &Program) -> Result<Resolved, String> {
    let plain = |program: PathBuf| Resolved {
        program,
        prefix_args: Vec::new(),
    };
    match program {
        Program::Path(p) => {
            if is_executable(p) {
                Ok(plain(p.clone()))
            } else if p.exists() {
                Err(format!("`{}` is not an executable file", p.display()))
            } else {
                Err(format!("`{}` does not exist", p.display()))
            }
        }
        Program::Name(name) => {
            let exe = std::env::current_exe().ok();
            let beside = exe
                .as_deref()
                .and_then(Path::parent)
                .map(|d| d.join(name))
                .filter(|p| is_executable(p));
            if let Some(p) = beside {
                return Ok(plain(p));
            }
            if let Some(paths) = std::env::var_os("PATH") {
                for dir in std::env::split_paths(&paths) {
                    let candidate = dir.join(name);
                    if is_executable(&candidate) {
                        return Ok(plain(candidate));
                    }
                }
            }
            if name == "serin-demo"
                && let Some(exe) = exe
            {
                return Ok(Resolved {
                    program: exe,
                    prefix_args: vec!["demo".to_string()],
                });
            }
            Err(format!(
                "cannot find the command `{name}` next to serin's executable or in PATH"
            ))
        }
    }
}

fn is_executable(p: &Path) -> bool {
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// A free port on 127.0.0.1, found by binding port 0 and letting it go.
pub(crate) fn free_port() -> io::Result<u16> {
    let listener = std::net::TcpListener::bind(("127.0.0.1", 0))?;
    Ok(listener.local_addr()?.port())
}

/// How an exit status reads in `serin ps`.
pub(crate) fn describe_exit(status: ExitStatus) -> (Option<i32>, Option<i32>, &'static str) {
    match (status.code(), status.signal()) {
        (Some(0), _) => (Some(0), None, "Completed"),
        (Some(c), _) => (Some(c), None, "Error"),
        (None, Some(s)) => (None, Some(s), "Signaled"),
        (None, None) => (None, None, "Error"),
    }
}
