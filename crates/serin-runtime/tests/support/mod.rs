//! Helpers for the runtime's end-to-end tests: a folder per test with the
//! test service (`server.py`), a stack parsed from YAML, bounded polling
//! that dumps the runtime's state when it gives up, a tiny HTTP client, and
//! process checks.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serin_config::stack::{Stack, parse_stack};
use serin_discovery::{BackendKey, Registry};
use serin_runtime::{LogFilter, Runtime, RuntimeHandle, RuntimeOptions};

/// How long a condition may take before a test fails.
pub const PATIENCE: Duration = Duration::from_secs(20);

pub const SERVER_PY: &str = include_str!("server.py");

/// A fresh folder for one test, holding `server.py`.
pub fn test_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("serin-rt-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("server.py"), SERVER_PY).unwrap();
    dir
}

pub fn stack(dir: &Path, yaml: &str) -> Stack {
    parse_stack(yaml, "stack.yaml", dir).unwrap_or_else(|e| panic!("bad test stack: {e}"))
}

pub fn quiet_options(dir: &Path) -> RuntimeOptions {
    RuntimeOptions {
        print_logs: std::env::var_os("SERIN_TEST_PRINT_LOGS").is_some(),
        work_dir: Some(dir.join("run")),
        ..RuntimeOptions::default()
    }
}

pub struct Running {
    pub dir: PathBuf,
    pub registry: Registry,
    pub handle: RuntimeHandle,
}

pub async fn start(dir: &Path, yaml: &str) -> Running {
    let registry = Registry::new();
    let handle = Runtime::start(stack(dir, yaml), registry.clone(), quiet_options(dir))
        .await
        .unwrap_or_else(|e| panic!("start: {e}"));
    Running {
        dir: dir.to_path_buf(),
        registry,
        handle,
    }
}

impl Running {
    pub fn endpoints(&self, service: &str, version: &str) -> Vec<SocketAddr> {
        self.registry
            .get(&BackendKey::new(service, version))
            .iter()
            .map(|e| e.addr)
            .collect()
    }

    pub fn pids(&self) -> Vec<u32> {
        self.handle.ps().iter().filter_map(|r| r.pid).collect()
    }

    /// The runtime's state and logs, for failure messages.
    pub fn dump(&self) -> String {
        let mut out = String::from("--- ps:\n");
        for r in self.handle.ps() {
            out.push_str(&format!(
                "{} state={} ready={} restarts={} port={} pid={:?} rev={} exit={:?} msg={:?}\n",
                r.name,
                r.state,
                r.ready,
                r.restarts,
                r.port,
                r.pid,
                r.revision,
                r.last_exit,
                r.message
            ));
        }
        out.push_str("--- registry:\n");
        for (k, v) in self.registry.snapshot().iter() {
            out.push_str(&format!(
                "{k}: {:?}\n",
                v.iter().map(|e| e.addr).collect::<Vec<_>>()
            ));
        }
        out.push_str("--- logs:\n");
        if let Ok(logs) = self.handle.logs(LogFilter::default(), Some(200), false) {
            for l in logs.lines {
                out.push_str(&format!("{} {}\n", l.replica, l.message));
            }
        }
        out
    }

    /// Polls `cond` until it holds; fails with `what` and a dump after
    /// [`PATIENCE`].
    pub async fn wait_for(&self, what: &str, mut cond: impl FnMut(&Self) -> bool) {
        let start = Instant::now();
        while !cond(self) {
            if start.elapsed() > PATIENCE {
                panic!("gave up waiting for: {what}\n{}", self.dump());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits (boundedly) for a version's rollout to complete.
    pub async fn rolled_out(&self, service: &str, version: &str) {
        match tokio::time::timeout(PATIENCE, self.handle.wait_rollout(service, version)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => panic!("rollout of {service}/{version}: {e}\n{}", self.dump()),
            Err(_) => panic!(
                "rollout of {service}/{version} did not finish\n{}",
                self.dump()
            ),
        }
    }

    /// Waits (boundedly) until every version is rolled out.
    pub async fn all_rolled_out(&self) {
        match tokio::time::timeout(PATIENCE, self.handle.wait_all_rolled_out()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => panic!("rollout: {e}\n{}", self.dump()),
            Err(_) => panic!("the stack did not roll out\n{}", self.dump()),
        }
    }

    /// Shuts down and checks that every process it ran is gone.
    pub async fn shutdown_and_check(self) {
        let pids = self.pids();
        tokio::time::timeout(PATIENCE, self.handle.shutdown())
            .await
            .unwrap_or_else(|_| panic!("shutdown hung\n{}", self.dump()))
            .unwrap();
        for pid in pids {
            assert!(pid_gone(pid), "process {pid} is still there after shutdown");
        }
        assert!(self.handle.ps().is_empty(), "{}", self.dump());
        assert!(self.registry.snapshot().is_empty(), "{}", self.dump());
        assert!(
            !self.dir.join("run").exists(),
            "the runtime's private folder is left after shutdown"
        );
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Whether a process is gone (or a zombie nobody reaped yet: it runs no
/// more either way).
pub fn pid_gone(pid: u32) -> bool {
    let Ok(raw) = i32::try_from(pid) else {
        return true;
    };
    match nix_kill0(raw) {
        false => true,
        true => std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| {
                s.rsplit_once(')')
                    .map(|(_, rest)| rest.trim_start().starts_with('Z'))
                    .unwrap_or(false)
            })
            .unwrap_or(true),
    }
}

fn nix_kill0(pid: i32) -> bool {
    // SAFETY: signal 0 only checks that the process exists.
    let r = unsafe { libc::kill(pid, 0) };
    r == 0 || std::io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH)
}

/// Polls a plain condition (no runtime at hand).
pub async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < PATIENCE, "gave up waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `GET path` with a short timeout: the status and body, or `None` when the
/// server did not answer.
pub fn http_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).ok()?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n")?;
    let code = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((code, body.to_string()))
}

pub fn json_get(addr: SocketAddr, path: &str) -> Option<serde_json::Value> {
    let (code, body) = http_get(addr, path)?;
    (code == 200).then(|| serde_json::from_str(&body).ok())?
}
