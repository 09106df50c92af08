//! Readiness and liveness probes, with Kubernetes' semantics.
//!
//! A probe first runs `initial_delay` after the process starts, then every
//! `period`; each run has `timeout` to succeed. Readiness turns true after
//! `success_threshold` successes in a row and false after
//! `failure_threshold` failures in a row; liveness fails after
//! `failure_threshold` failures in a row, and the replica is restarted.
//!
//! A replica without a readiness probe is ready once its `PORT` accepts a
//! TCP connection (checked every [`IMPLICIT_READINESS_PERIOD`]), so no
//! traffic is sent before it listens; it then stays ready while its process
//! runs. A service that listens on no port needs an explicit probe, e.g.
//! `readiness: {exec: {command: ["true"]}}`.

use std::net::SocketAddr;
use std::time::Duration;

use serin_config::stack::{Probe, ProbeAction};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::process::{ProcessSpec, Spawner, signal_group};

/// How often the port of a replica without a readiness probe is tried.
pub const IMPLICIT_READINESS_PERIOD: Duration = Duration::from_millis(100);
/// How long one implicit readiness connection may take.
const IMPLICIT_READINESS_TIMEOUT: Duration = Duration::from_secs(1);

/// What a probe needs to know about its replica.
pub(crate) struct Target<'a> {
    pub port: u16,
    pub spawner: &'a Spawner,
    /// For exec probes: the replica's program environment and folder.
    pub exec_env: &'a ProcessSpec,
}

/// Runs one probe; `Ok` on success, `Err(why)` on failure.
pub(crate) async fn run_once(probe: &Probe, target: &Target<'_>) -> Result<(), String> {
    match tokio::time::timeout(probe.timeout, attempt(&probe.action, target, probe.timeout)).await {
        Ok(r) => r,
        Err(_) => Err(format!("timed out after {:?}", probe.timeout)),
    }
}

async fn attempt(
    action: &ProbeAction,
    target: &Target<'_>,
    timeout: Duration,
) -> Result<(), String> {
    match action {
        ProbeAction::HttpGet { path, port } => http_get(port.unwrap_or(target.port), path).await,
        ProbeAction::TcpSocket { port } => {
            let addr = SocketAddr::from(([127, 0, 0, 1], port.unwrap_or(target.port)));
            TcpStream::connect(addr)
                .await
                .map(drop)
                .map_err(|e| format!("connect to {addr}: {e}"))
        }
        ProbeAction::Exec { command } => exec(command, target, timeout).await,
    }
}

/// `GET path` on 127.0.0.1:port; 2xx and 3xx are success.
async fn http_get(port: u16, path: &str) -> Result<(), String> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut stream = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect to {addr}: {e}"))?;
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUser-Agent: serin-probe\r\n\
         Accept: */*\r\nConnection: close\r\n\r\n"
    );
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| format!("send to {addr}: {e}"))?;
    let mut head = Vec::with_capacity(256);
    let mut buf = [0u8; 256];
    while !head.contains(&b'\n') && head.len() < 4096 {
        let n = stream
            .read(&mut buf)
            .await
            .map_err(|e| format!("read from {addr}: {e}"))?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let status_line = String::from_utf8_lossy(&head);
    let status_line = status_line.lines().next().unwrap_or_default();
    let code: Option<u16> = status_line
        .strip_prefix("HTTP/1.")
        .and_then(|rest| rest.get(2..5))
        .and_then(|c| c.parse().ok());
    match code {
        Some(c) if (200..400).contains(&c) => Ok(()),
        Some(c) => Err(format!("GET {path} answered {c}")),
        None => Err(format!("GET {path}: not an HTTP answer")),
    }
}

/// Runs the command (no shell) with the replica's environment; status 0 is
/// success. On timeout its process group is killed.
async fn exec(command: &[String], target: &Target<'_>, timeout: Duration) -> Result<(), String> {
    let Some((program, args)) = command.split_first() else {
        return Err("empty command".into());
    };
    let program = if program.contains('/') {
        target.exec_env.cwd.join(program)
    } else {
        which(program).ok_or_else(|| format!("cannot find `{program}` in PATH"))?
    };
    let spec = ProcessSpec {
        program,
        args: args.iter().map(Into::into).collect(),
        env: target.exec_env.env.clone(),
        cwd: target.exec_env.cwd.clone(),
        capture_output: false,
    };
    let mut proc = target
        .spawner
        .spawn(&spec)
        .await
        .map_err(|e| format!("cannot run {}: {e}", command.join(" ")))?;
    let pid = proc.pid;
    match tokio::time::timeout(timeout, proc.wait()).await {
        Ok(status) if status.success() => Ok(()),
        Ok(status) => Err(format!("`{}` ended with {status}", command.join(" "))),
        Err(_) => {
            signal_group(pid, nix::sys::signal::Signal::SIGKILL);
            let _ = proc.wait().await;
            Err(format!("timed out after {timeout:?}"))
        }
    }
}

fn which(name: &str) -> Option<std::path::PathBuf> {
    let paths = std::env::var_os("PATH")?;
    std::env::split_paths(&paths)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// Whether the replica's port accepts a TCP connection.
pub(crate) async fn port_open(port: u16) -> bool {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    matches!(
        tokio::time::timeout(IMPLICIT_READINESS_TIMEOUT, TcpStream::connect(addr)).await,
        Ok(Ok(_))
    )
}

/// Counts results against a probe's thresholds.
#[derive(Debug, Default)]
pub(crate) struct Counter {
    successes: u32,
    failures: u32,
}

impl Counter {
    /// Records a result; returns the new verdict when a threshold is
    /// reached (`Some(true)`: passing, `Some(false)`: failing).
    pub(crate) fn record(&mut self, probe: &Probe, ok: bool) -> Option<bool> {
        if ok {
            self.failures = 0;
            self.successes = self.successes.saturating_add(1);
            (self.successes >= probe.success_threshold).then_some(true)
        } else {
            self.successes = 0;
            self.failures = self.failures.saturating_add(1);
            (self.failures >= probe.failure_threshold).then_some(false)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds() {
        let probe = Probe {
            action: ProbeAction::TcpSocket { port: None },
            initial_delay: Duration::ZERO,
            period: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            failure_threshold: 3,
            success_threshold: 2,
        };
        let mut c = Counter::default();
        assert_eq!(c.record(&probe, true), None);
        assert_eq!(c.record(&probe, true), Some(true));
        assert_eq!(c.record(&probe, false), None);
        assert_eq!(c.record(&probe, false), None);
        assert_eq!(c.record(&probe, true), None);
        assert_eq!(c.record(&probe, false), None);
        assert_eq!(c.record(&probe, false), None);
        assert_eq!(c.record(&probe, false), Some(false));
    }
}
