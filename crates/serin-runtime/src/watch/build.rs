//! One service's build: its command run in the stack file's folder, its
//! output in the service's logs (`qotm/build | ...`), and its exit status
//! deciding whether every version of the service rolls out again (exit 0)
//! or the running replicas stay as they are (anything else).

use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use crate::handle::RuntimeHandle;
use crate::logs::{LineKind, LineSource, LogStream, pump};
use crate::process::{ProcessSpec, describe_exit};
use crate::status::{BuildState, BuildStatus, unix_ms};

/// How long a build's output may still be read after its process group
/// ended: only a process that left the group (a daemon a build tool
/// starts) can hold the pipes open longer, and its output is not the
/// build's.
const OUTPUT_DRAIN: Duration = Duration::from_secs(2);

/// Builds `service` (when its `watch:` has a `build`) and, when that
/// succeeds, rolls out each of its versions with its own strategy. The
/// outcome is in the service's logs, serin's log and [`BuildStatus`].
pub(crate) async fn build_and_roll(
    handle: &RuntimeHandle,
    service: &str,
    after_build: &super::AfterBuild,
) {
    let stack = handle.stack();
    let Some(spec) = stack.service(service) else {
        return; // removed by an apply since the change
    };
    let command = spec
        .watch
        .as_ref()
        .and_then(|w| w.build.clone())
        .unwrap_or_default();
    let source = build_source(service);
    let started = Instant::now();
    record_start(handle, service, &command.written);
    let outcome = match command.argv.split_first() {
        None => Ok(()),
        Some((program, args)) => {
            say(
                handle,
                &source,
                format!("build started: {}", command.written),
            );
            run(handle, &source, program, args, stack.base_dir.clone()).await
        }
    };
    let took = humantime::format_duration(round_to_ms(started.elapsed()));
    match outcome {
        Ok(()) => {
            if let Some(roll_out) = after_build(service) {
                say(handle, &source, format!("build succeeded in {took}"));
                tracing::info!(%service, "build succeeded; handed to its automatic canary");
                let outcome = roll_out.await;
                say(handle, &source, outcome.clone());
                record_end(handle, service, BuildState::Succeeded, Some(outcome));
                return;
            }
            let versions: Vec<String> = spec.versions.iter().map(|v| v.name.clone()).collect();
            say(
                handle,
                &source,
                format!(
                    "build succeeded in {took}; rolling out {}",
                    versions.join(", ")
                ),
            );
            tracing::info!(%service, "build succeeded; rolling out");
            for version in &versions {
                if let Err(e) = handle.restart(service, version).await {
                    say(handle, &source, format!("cannot roll out {version}: {e}"));
                }
            }
            record_end(handle, service, BuildState::Succeeded, None);
        }
        Err(why) => {
            let message = format!("{why} after {took}");
            say(
                handle,
                &source,
                format!("build failed: {message}; the running replicas stay as they are"),
            );
            tracing::error!(%service, reason = %message, "build failed; the running replicas stay");
            record_end(handle, service, BuildState::Failed, Some(message));
        }
    }
}

/// Runs the build's process to its end; `Err`: why it failed, with its
/// last line of output.
async fn run(
    handle: &RuntimeHandle,
    source: &LineSource,
    program: &str,
    args: &[String],
    cwd: PathBuf,
) -> Result<(), String> {
    let shared = handle.shared();
    let spec = ProcessSpec {
        program: PathBuf::from(program),
        args: args.iter().map(OsString::from).collect(),
        env: vec![("SERIN_SERVICE".into(), source.service.clone().into())],
        cwd,
        capture_output: true,
    };
    let mut proc = shared
        .spawner
        .spawn(&spec)
        .await
        .map_err(|e| format!("cannot start `{program}`: {e}"))?;
    let pumps: Vec<_> = [
        (proc.stdout.take(), LogStream::Stdout),
        (proc.stderr.take(), LogStream::Stderr),
    ]
    .into_iter()
    .filter_map(|(pipe, stream)| {
        let pipe = pipe?;
        Some(tokio::spawn(pump(
            pipe,
            shared.logs.clone(),
            source.clone(),
            stream,
        )))
    })
    .collect();
    let status = proc.wait().await;
    for p in pumps {
        let _ = tokio::time::timeout(OUTPUT_DRAIN, p).await;
    }
    if status.success() {
        return Ok(());
    }
    let why = match describe_exit(status) {
        (Some(code), _, _) => format!("exit status {code}"),
        (None, Some(signal), _) => format!("killed by signal {signal}"),
        _ => "failed".to_string(),
    };
    Err(match shared.logs.last_output(&source.replica) {
        Some(last) => format!("{why} ({last})"),
        None => why,
    })
}

/// Who a build's lines belong to: `service/build`.
fn build_source(service: &str) -> LineSource {
    LineSource {
        service: service.to_string(),
        version: String::new(),
        replica: format!("{service}-build"),
        index: 0,
        secrets: Arc::from(Vec::new()),
        kind: LineKind::Build,
    }
}

/// A line of serin's own about the build, in the service's logs.
fn say(handle: &RuntimeHandle, source: &LineSource, message: String) {
    handle.shared().logs.push(source, LogStream::Serin, message);
}

fn record_start(handle: &RuntimeHandle, service: &str, command: &str) {
    let mut state = handle.shared().lock();
    let builds = state.builds.get(service).map_or(0, |b| b.builds) + 1;
    state.builds.insert(
        service.to_string(),
        BuildStatus {
            service: service.to_string(),
            state: BuildState::Running,
            command: command.to_string(),
            builds,
            started_unix_ms: unix_ms(SystemTime::now()),
            finished_unix_ms: None,
            message: None,
        },
    );
}

fn record_end(handle: &RuntimeHandle, service: &str, state: BuildState, message: Option<String>) {
    if let Some(b) = handle.shared().lock().builds.get_mut(service) {
        b.state = state;
        b.finished_unix_ms = Some(unix_ms(SystemTime::now()));
        b.message = message;
    }
}

fn round_to_ms(d: Duration) -> Duration {
    Duration::from_millis(d.as_millis().try_into().unwrap_or(u64::MAX))
}
