//! Helpers for the end-to-end tests: start the real `serin-demo` binary (and
//! `redis-server`) on free ports, and stop them when the test ends.

#![allow(dead_code)]

use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

pub const BIN: &str = env!("CARGO_BIN_EXE_serin-demo");

/// How long a process may take to come up or go away.
pub const STARTUP: Duration = Duration::from_secs(10);
const POLL: Duration = Duration::from_millis(50);

/// Variables of the test's own environment that would change the services.
const CLEARED_ENV: [&str; 8] = [
    "PORT",
    "SERIN_VERSION",
    "SERIN_REPLICA",
    "AUTH_CREDENTIALS_FILE",
    "PINGER_URL",
    "DETAILS_URL",
    "REDIS_URL",
    "RUST_LOG",
];

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

/// An HTTP client that ignores proxy settings.
pub fn http() -> reqwest::Client {
    serin_config::http_client::builder()
        .expect("HTTP client TLS")
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("build HTTP client")
}

/// A `serin-demo <service>` command being set up.
pub struct Demo {
    cmd: Command,
    port: u16,
    dir: TempDir,
}

impl Demo {
    pub fn new(service: &str) -> Self {
        let port = free_port();
        let mut cmd = Command::new(BIN);
        cmd.arg(service);
        for var in CLEARED_ENV {
            cmd.env_remove(var);
        }
        cmd.env("PORT", port.to_string())
            .env("SERIN_REPLICA", format!("{service}-test"));
        Self {
            cmd,
            port,
            dir: tempfile::tempdir().expect("temp dir"),
        }
    }

    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        self.cmd.args(args);
        self
    }

    pub fn arg(mut self, arg: impl AsRef<std::ffi::OsStr>) -> Self {
        self.cmd.arg(arg);
        self
    }

    pub fn env(mut self, key: &str, value: impl AsRef<std::ffi::OsStr>) -> Self {
        self.cmd.env(key, value);
        self
    }

    pub fn env_remove(mut self, key: &str) -> Self {
        self.cmd.env_remove(key);
        self
    }

    /// Starts the process without waiting for it to serve.
    pub fn spawn(mut self) -> Running {
        let stdout = self.dir.path().join("stdout.log");
        let stderr = self.dir.path().join("stderr.log");
        let child = self
            .cmd
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&stdout).expect("create stdout.log"))
            .stderr(std::fs::File::create(&stderr).expect("create stderr.log"))
            .spawn()
            .expect("start serin-demo");
        Running {
            child,
            port: self.port,
            stdout,
            stderr,
            _dir: self.dir,
        }
    }

    /// Starts the process and waits until `/health` answers 200.
    pub async fn start(self) -> Running {
        let mut running = self.spawn();
        running.wait_healthy().await;
        running
    }
}

/// A running `serin-demo`; killed when dropped.
pub struct Running {
    child: Child,
    pub port: u16,
    stdout: PathBuf,
    stderr: PathBuf,
    _dir: TempDir,
}

impl Running {
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn stdout(&self) -> String {
        std::fs::read_to_string(&self.stdout).unwrap_or_default()
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Polls `/health` until it answers 200; panics if the process exits or
    /// does not come up within [`STARTUP`].
    pub async fn wait_healthy(&mut self) {
        let client = http();
        let url = self.url("/health");
        let deadline = Instant::now() + STARTUP;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                panic!(
                    "serin-demo exited with {status} before serving\nstdout:\n{}\nstderr:\n{}",
                    self.stdout(),
                    self.stderr()
                );
            }
            if let Ok(resp) = client.get(&url).send().await
                && resp.status() == 200
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "serin-demo did not answer {url} within {STARTUP:?}\nstderr:\n{}",
                self.stderr()
            );
            tokio::time::sleep(POLL).await;
        }
    }

    /// Waits for the process to exit; panics if it does not within `within`.
    pub async fn wait_exit(&mut self, within: Duration) -> ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "serin-demo still runs after {within:?}"
            );
            tokio::time::sleep(POLL).await;
        }
    }

    pub fn terminate(&self) {
        let pid = i32::try_from(self.pid()).expect("pid fits i32");
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGTERM,
        )
        .expect("send SIGTERM");
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `url` until it answers `status`; panics after [`STARTUP`].
pub async fn wait_for_status(url: &str, status: u16) {
    let client = http();
    let deadline = Instant::now() + STARTUP;
    loop {
        let got = client.get(url).send().await.map(|r| r.status().as_u16());
        if matches!(got, Ok(s) if s == status) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{url} did not answer {status} within {STARTUP:?} (last: {got:?})"
        );
        tokio::time::sleep(POLL).await;
    }
}

/// A throw-away `redis-server` on a free port; killed when dropped.
pub struct Redis {
    child: Child,
    pub port: u16,
    _dir: TempDir,
}

impl Redis {
    /// Starts `redis-server` and waits until it answers PING. Fails the test
    /// (never skips it) when `redis-server` is not installed.
    pub fn start() -> Self {
        let port = free_port();
        let dir = tempfile::tempdir().expect("temp dir");
        let log = std::fs::File::create(dir.path().join("redis.log")).expect("redis.log");
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string()])
            .args(["--bind", "127.0.0.1"])
            .args(["--save", ""])
            .args(["--appendonly", "no"])
            .arg("--dir")
            .arg(dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log"))
            .stderr(log)
            .spawn();
        let child = match child {
            Ok(child) => child,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => panic!(
                "redis-server is not installed (needed by the counter tests): \
                 install it with `apt-get install -y redis-server`"
            ),
            Err(err) => panic!("cannot start redis-server: {err}"),
        };
        let mut redis = Self {
            child,
            port,
            _dir: dir,
        };
        redis.wait_ping(dir_log(&redis));
        redis
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    fn wait_ping(&mut self, log: PathBuf) {
        let deadline = Instant::now() + STARTUP;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                panic!(
                    "redis-server exited with {status}:\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            if ping(self.port) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "redis-server did not answer PING within {STARTUP:?}"
            );
            std::thread::sleep(POLL);
        }
    }

    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn dir_log(redis: &Redis) -> PathBuf {
    redis._dir.path().join("redis.log")
}

fn ping(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
    if stream.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut buf = [0u8; 16];
    matches!(stream.read(&mut buf), Ok(n) if buf[..n].starts_with(b"+PONG"))
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Writes `text` to `name` in `dir` and returns the path.
pub fn write_file(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write file");
    path
}
