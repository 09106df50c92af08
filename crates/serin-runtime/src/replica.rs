//! One replica's life, as the kubelet runs a one-container pod: wait for
//! dependencies, start the process, probe it, restart it per its
//! `restartPolicy` with CrashLoopBackOff, and stop it when told (SIGTERM to
//! its process group, the grace period, SIGKILL).

use std::convert::Infallible;
use std::ffi::OsString;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serin_config::stack::{RestartPolicy, VersionSpec};
use tokio::sync::watch;

use crate::backoff::CrashLoop;
use crate::logs::{LineSource, LogStream, pump};
use crate::probe::{self, Counter, IMPLICIT_READINESS_PERIOD, Target};
use crate::process::{ProcessSpec, describe_exit, resolve};
use crate::shared::{Shared, VersionKey, now_ms};
use crate::status::{ExitInfo, ReplicaState};
use crate::workdir::write_replica_dir;

pub(crate) struct ReplicaCtx {
    pub shared: Arc<Shared>,
    pub vkey: VersionKey,
    pub uid: u64,
    pub spec: Arc<VersionSpec>,
    pub base_dir: Arc<Path>,
    pub stop: watch::Receiver<bool>,
    pub source: LineSource,
}

/// Starts the replica's task. Whatever happens to it, the replica leaves the
/// state (and its process group is killed: a dropped process is killed).
pub(crate) fn spawn(ctx: ReplicaCtx) {
    let shared = ctx.shared.clone();
    let vkey = ctx.vkey.clone();
    let uid = ctx.uid;
    let task = shared.rt.spawn(run(ctx));
    shared.rt.clone().spawn(async move {
        if task.await.is_err() {
            tracing::error!(service = %vkey.0, version = %vkey.1, "a replica task failed");
            shared.remove_replica(&vkey, uid);
        }
    });
}

async fn run(mut ctx: ReplicaCtx) {
    lifecycle(&mut ctx).await;
    let dir = ctx.shared.workdir.replica_dir(&ctx.source.replica, ctx.uid);
    let _ = std::fs::remove_dir_all(dir);
    ctx.shared.logs.forget(&ctx.source.replica);
    ctx.shared.remove_replica(&ctx.vkey, ctx.uid);
}

/// How one run of the process ended.
enum Outcome {
    /// Told to stop; the process is gone.
    Stopped,
    /// It ended (or could not start).
    Ended(ExitInfo),
}

impl ReplicaCtx {
    fn update(&self, change: impl FnOnce(&mut crate::shared::ReplicaEntry)) {
        self.shared.update_replica(&self.vkey, self.uid, change);
    }

    fn say(&self, message: impl Into<String>) {
        self.shared.say(&self.source, message);
    }

    fn stopping(&self) -> bool {
        *self.stop.borrow()
    }

    async fn stopped(&mut self) {
        wait_stop(&mut self.stop).await;
    }
}

async fn lifecycle(ctx: &mut ReplicaCtx) {
    if !wait_dependencies(ctx).await {
        return;
    }
    let port = match ctx.shared.allocate_port() {
        Ok(p) => p,
        Err(e) => {
            ctx.say(format!("cannot find a free port: {e}"));
            ctx.update(|r| r.status.message = Some(format!("no free port: {e}")));
            ctx.stopped().await;
            return;
        }
    };
    ctx.update(|r| r.status.port = port);
    let mut sidecar_ports = None;
    if let Some(sc) = ctx.spec.sidecar.clone() {
        let mut ports = crate::status::SidecarPorts::default();
        let take = || ctx.shared.allocate_port();
        let allocated = (|| -> std::io::Result<()> {
            ports.inbound = take()?;
            for o in &sc.outbound {
                ports.outbound.insert(o.service.clone(), take()?);
            }
            Ok(())
        })();
        if let Err(e) = allocated {
            ctx.say(format!("cannot find free ports for the sidecar: {e}"));
            ctx.update(|r| r.status.message = Some(format!("no free port: {e}")));
            ctx.stopped().await;
            return;
        }
        sidecar_ports = Some(ports.clone());
        ctx.update(|r| r.status.sidecar = Some(ports));
    }
    let mut crash = CrashLoop::new(ctx.spec.restart_backoff);
    let mut port = port;
    loop {
        let started = Instant::now();
        let exit = match run_process(ctx, port, sidecar_ports.as_ref()).await {
            Outcome::Stopped => return,
            Outcome::Ended(exit) => exit,
        };
        port = move_if_taken(ctx, port).await;
        let restart = match ctx.spec.restart_policy {
            RestartPolicy::Always => true,
            RestartPolicy::OnFailure => !exit.succeeded(),
            RestartPolicy::Never => false,
        };
        let ended = exit_text(&exit);
        if !restart {
            ctx.say(format!(
                "{ended}; not restarted (restartPolicy: {})",
                ctx.spec.restart_policy.as_str()
            ));
            ctx.update(|r| {
                r.status.state = ReplicaState::Exited;
                r.status.last_exit = Some(exit);
            });
            ctx.stopped().await;
            return;
        }
        let delay = crash.delay_after(started.elapsed());
        if delay.is_zero() {
            ctx.say(format!("{ended}; restarting"));
            ctx.update(|r| r.status.last_exit = Some(exit));
        } else {
            let wait = humantime::format_duration(round_ms(delay)).to_string();
            ctx.say(format!("{ended}; restarting in {wait} (CrashLoopBackOff)"));
            ctx.update(|r| {
                r.status.state = ReplicaState::CrashLoopBackOff;
                r.status.last_exit = Some(exit);
                r.status.message = Some(format!("back-off {wait} restarting failed replica"));
            });
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = ctx.stopped() => return,
            }
        }
        if ctx.stopping() {
            return;
        }
        // A restart waits for `dependsOn` as the first start does: a caller
        // restarted while its dependency is down would only fail again.
        if !ctx.shared.missing_dependencies(&ctx.vkey.0).is_empty() {
            ctx.update(|r| r.status.state = ReplicaState::Pending);
            if !wait_dependencies(ctx).await {
                return;
            }
        }
        ctx.update(|r| r.status.restarts = r.status.restarts.saturating_add(1));
    }
}

/// The port of a replica whose process has ended: if something still
/// accepts connections on it, another process took it (between the
/// runtime finding it free and the replica binding it), so the replica
/// would fail to bind it again, and its readiness would be judged on the
/// stranger: it gets another port before it restarts.
async fn move_if_taken(ctx: &ReplicaCtx, port: u16) -> u16 {
    if !probe::port_open(port).await {
        return port;
    }
    match ctx.shared.allocate_port() {
        Ok(new) => {
            ctx.shared.release_port(port);
            ctx.say(format!(
                "port {port} is held by another process; the replica moves to port {new}"
            ));
            ctx.update(|r| r.status.port = new);
            new
        }
        Err(e) => {
            ctx.say(format!(
                "port {port} is held by another process and no other is free: {e}"
            ));
            port
        }
    }
}

async fn wait_stop(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

fn round_ms(d: Duration) -> Duration {
    Duration::from_millis(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn exit_text(exit: &ExitInfo) -> String {
    match (exit.reason.as_str(), exit.code, exit.signal) {
        ("StartFailed", _, _) => "could not start".to_string(),
        ("LivenessFailed", _, _) => "killed after failing its liveness probe".to_string(),
        (_, Some(c), _) => format!("exited with status {c}"),
        (_, _, Some(s)) => format!("killed by signal {s}"),
        _ => "ended".to_string(),
    }
}

/// Waits until every service in `dependsOn` has a ready replica; `false`
/// when told to stop first.
async fn wait_dependencies(ctx: &mut ReplicaCtx) -> bool {
    let mut changed = ctx.shared.changed.subscribe();
    let mut said = Vec::new();
    loop {
        if ctx.stopping() {
            return false;
        }
        let missing = ctx.shared.missing_dependencies(&ctx.vkey.0);
        if missing.is_empty() {
            if !said.is_empty() {
                ctx.update(|r| r.status.message = None);
            }
            return true;
        }
        if missing != said {
            let msg = format!("waiting for {}", missing.join(", "));
            ctx.say(msg.clone());
            ctx.update(|r| r.status.message = Some(msg));
            said = missing;
        }
        tokio::select! {
            r = changed.changed() => if r.is_err() { return false },
            () = ctx.stopped() => return false,
        }
    }
}

/// The environment and command line of the replica's process.
fn process_spec(
    ctx: &ReplicaCtx,
    port: u16,
    sidecar: Option<&crate::status::SidecarPorts>,
) -> Result<ProcessSpec, String> {
    let resolved = resolve(&ctx.spec.program)?;
    let dir = ctx.shared.workdir.replica_dir(&ctx.source.replica, ctx.uid);
    let written = write_replica_dir(&dir, &ctx.spec)
        .map_err(|e| format!("cannot write the replica's files: {e}"))?;
    let mut env: Vec<(OsString, OsString)> = ctx
        .spec
        .env
        .iter()
        .map(|(k, v)| (k.into(), v.into()))
        .collect();
    for s in ctx.spec.secrets.iter().filter(|s| !s.as_file) {
        env.push((s.name.clone().into(), s.value.expose().into()));
    }
    env.push(("PORT".into(), port.to_string().into()));
    // The app reaches its dependencies through its sidecar's outbound
    // listeners.
    if let (Some(spec), Some(ports)) = (&ctx.spec.sidecar, sidecar) {
        for o in &spec.outbound {
            if let Some(p) = ports.outbound.get(&o.service) {
                env.push((o.env.clone().into(), format!("http://127.0.0.1:{p}").into()));
            }
        }
    }
    env.push(("SERIN_SERVICE".into(), ctx.vkey.0.clone().into()));
    env.push(("SERIN_VERSION".into(), ctx.vkey.1.clone().into()));
    env.push(("SERIN_REPLICA".into(), ctx.source.replica.clone().into()));
    if let Some(d) = written.files_dir {
        env.push(("SERIN_FILES_DIR".into(), d.into()));
    }
    if let Some(d) = written.secrets_dir {
        env.push(("SERIN_SECRETS_DIR".into(), d.into()));
    }
    let args = resolved
        .prefix_args
        .iter()
        .chain(&ctx.spec.args)
        .map(Into::into)
        .collect();
    Ok(ProcessSpec {
        program: resolved.program,
        args,
        env,
        cwd: ctx.base_dir.to_path_buf(),
        capture_output: true,
    })
}

/// Runs the process once, until it ends, fails liveness, or is stopped.
async fn run_process(
    ctx: &mut ReplicaCtx,
    port: u16,
    sidecar: Option<&crate::status::SidecarPorts>,
) -> Outcome {
    if ctx.stopping() {
        return Outcome::Stopped;
    }
    let started = match process_spec(ctx, port, sidecar) {
        Ok(spec) => match ctx.shared.spawner.spawn(&spec).await {
            Ok(p) => Ok((p, spec)),
            Err(e) => Err(format!("cannot start `{}`: {e}", spec.program.display())),
        },
        Err(e) => Err(e),
    };
    let (mut proc, spec) = match started {
        Ok(p) => p,
        Err(e) => {
            ctx.say(e.clone());
            ctx.update(|r| r.status.message = Some(e));
            return Outcome::Ended(ExitInfo {
                code: None,
                signal: None,
                reason: "StartFailed".into(),
                at_unix_ms: now_ms(),
            });
        }
    };
    let pid = proc.pid;
    ctx.say(format!("started (pid {pid}, port {port})"));
    ctx.update(|r| {
        r.status.pid = Some(pid);
        r.status.started_unix_ms = Some(now_ms());
        r.status.state = ReplicaState::Starting;
        r.status.ready = false;
        r.status.message = None;
    });
    let logs = &ctx.shared.logs;
    if let Some(out) = proc.stdout.take() {
        ctx.shared.rt.spawn(pump(
            out,
            logs.clone(),
            ctx.source.clone(),
            LogStream::Stdout,
        ));
    }
    if let Some(err) = proc.stderr.take() {
        ctx.shared.rt.spawn(pump(
            err,
            logs.clone(),
            ctx.source.clone(),
            LogStream::Stderr,
        ));
    }

    let target = Target {
        port,
        spawner: &ctx.shared.spawner,
        exec_env: &spec,
    };
    let grace = ctx.spec.termination_grace_period;
    let outcome = {
        let readiness = readiness(ctx, &target);
        let liveness = liveness(ctx, &target);
        let mut stop = ctx.stop.clone();
        tokio::select! {
            status = proc.wait() => {
                let (code, signal, reason) = describe_exit(status);
                Outcome::Ended(ExitInfo { code, signal, reason: reason.into(), at_unix_ms: now_ms() })
            }
            why = liveness => {
                ctx.say(format!("liveness probe failed: {why}; restarting"));
                ctx.update(|r| {
                    r.status.ready = false;
                    r.status.state = ReplicaState::NotReady;
                });
                let status = proc.terminate(grace).await;
                let (code, signal, _) = describe_exit(status);
                Outcome::Ended(ExitInfo { code, signal, reason: "LivenessFailed".into(), at_unix_ms: now_ms() })
            }
            never = readiness => match never {},
            () = wait_stop(&mut stop) => {
                ctx.say(format!(
                    "stopping: SIGTERM, SIGKILL after {}",
                    humantime::format_duration(round_ms(grace))
                ));
                let status = proc.terminate(grace).await;
                let (code, signal, reason) = describe_exit(status);
                let exit = ExitInfo { code, signal, reason: reason.into(), at_unix_ms: now_ms() };
                ctx.say(exit_text(&exit));
                ctx.update(|r| r.status.last_exit = Some(exit));
                Outcome::Stopped
            }
        }
    };
    ctx.update(|r| {
        r.status.ready = false;
        r.status.pid = None;
    });
    outcome
}

/// Keeps the replica's readiness up to date while its process runs.
async fn readiness(ctx: &ReplicaCtx, target: &Target<'_>) -> Infallible {
    let set = |ready: bool, ever: bool| {
        ctx.update(|r| {
            r.status.ready = ready;
            r.status.state = match (ready, ever) {
                (true, _) => ReplicaState::Running,
                (false, true) => ReplicaState::NotReady,
                (false, false) => ReplicaState::Starting,
            };
        });
    };
    let Some(probe) = &ctx.spec.readiness else {
        // No probe: ready once the port accepts connections.
        while !probe::port_open(target.port).await {
            tokio::time::sleep(IMPLICIT_READINESS_PERIOD).await;
        }
        set(true, true);
        return std::future::pending().await;
    };
    tokio::time::sleep(probe.initial_delay).await;
    let mut counter = Counter::default();
    let mut ready = false;
    let mut ever = false;
    loop {
        let result = probe::run_once(probe, target).await;
        match counter.record(probe, result.is_ok()) {
            Some(true) if !ready => {
                ready = true;
                ever = true;
                set(true, true);
            }
            Some(false) if ready => {
                ready = false;
                let why = result.err().unwrap_or_default();
                ctx.say(format!("readiness probe failed: {why}; out of rotation"));
                set(false, ever);
            }
            _ => {}
        }
        tokio::time::sleep(probe.period).await;
    }
}

/// Returns (with the last failure) when liveness has failed
/// `failureThreshold` times in a row; never without a liveness probe.
async fn liveness(ctx: &ReplicaCtx, target: &Target<'_>) -> String {
    let Some(probe) = &ctx.spec.liveness else {
        return std::future::pending().await;
    };
    tokio::time::sleep(probe.initial_delay).await;
    let mut counter = Counter::default();
    loop {
        let result = probe::run_once(probe, target).await;
        if counter.record(probe, result.is_ok()) == Some(false) {
            return result.err().unwrap_or_default();
        }
        tokio::time::sleep(probe.period).await;
    }
}
