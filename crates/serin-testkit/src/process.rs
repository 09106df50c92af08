//! Runs the `serin` binary for a test and reads what it says. When a test
//! fails (panics) while a [`Serin`] is alive, its command line, config and
//! logs are printed, so the failure explains itself.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Polls `cond` every 20 ms for up to `limit`; true when it held.
pub fn wait_until(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    loop {
        if cond() {
            return true;
        }
        if start.elapsed() > limit {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub struct Serin {
    child: Option<Child>,
    pub dir: PathBuf,
    pub config: PathBuf,
    pub admin: SocketAddr,
    /// Listener name → bound address.
    pub listeners: Vec<(String, SocketAddr)>,
    command: String,
    log: Arc<Mutex<Vec<String>>>,
    _tmp: Option<TempDir>,
}

/// A temporary directory removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(prefix: &str) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "{prefix}-{}-{}",
            std::process::id(),
            fastrand_u64()
        ));
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("temp dir: {e}"));
        Self(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn fastrand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.finish()
}

impl Serin {
    /// Writes `config` to a new temporary directory and runs
    /// `serin proxy --config FILE` with the admin API on a free port. Waits
    /// until the admin API is up.
    pub fn proxy(bin: &str, config: &str) -> Self {
        Self::proxy_with_env(bin, config, &[])
    }

    /// [`Serin::proxy`] with extra environment variables (e.g. `KUBECONFIG`).
    pub fn proxy_with_env(bin: &str, config: &str, env: &[(&str, &str)]) -> Self {
        match Self::try_proxy_with_env(bin, config, env) {
            crate::ports::Bind::Listening(s) => s,
            crate::ports::Bind::Taken(log) => panic!("serin found an address in use:\n{log}"),
        }
    }

    /// [`Serin::proxy_with_env`] for a config that names fixed ports (found
    /// free by [`crate::ports::free_port`]): [`crate::ports::Bind::Taken`]
    /// with serin's output when it exited because an address was in use, so
    /// the test can try other ports ([`crate::ports::on_free_port`]'s rule).
    pub fn try_proxy_with_env(
        bin: &str,
        config: &str,
        env: &[(&str, &str)],
    ) -> crate::ports::Bind<Self> {
        let tmp = TempDir::new("serin-test");
        let path = tmp.path().join("serin.yaml");
        std::fs::write(&path, config).unwrap_or_else(|e| panic!("write config: {e}"));
        let started = Self::try_spawn_with_env(
            bin,
            &[
                "proxy",
                "--config",
                &path.display().to_string(),
                "--admin",
                "127.0.0.1:0",
            ],
            tmp.path(),
            &path,
            env,
        );
        started.map(|mut s| {
            s._tmp = Some(tmp);
            s
        })
    }

    /// Runs `serin ARGS` (which must start something with an admin API) in
    /// `dir` and waits for the admin API.
    pub fn spawn(bin: &str, args: &[&str], dir: &Path, config: &Path) -> Self {
        Self::spawn_with_env(bin, args, dir, config, &[])
    }

    /// [`Serin::spawn`] with extra environment variables.
    pub fn spawn_with_env(
        bin: &str,
        args: &[&str],
        dir: &Path,
        config: &Path,
        env: &[(&str, &str)],
    ) -> Self {
        match Self::try_spawn_with_env(bin, args, dir, config, env) {
            crate::ports::Bind::Listening(s) => s,
            crate::ports::Bind::Taken(log) => panic!("serin found an address in use:\n{log}"),
        }
    }

    /// [`Serin::spawn_with_env`], or [`crate::ports::Bind::Taken`] with
    /// serin's output when it exited early saying an address was in use
    /// (any other early exit panics, with the output).
    fn try_spawn_with_env(
        bin: &str,
        args: &[&str],
        dir: &Path,
        config: &Path,
        env: &[(&str, &str)],
    ) -> crate::ports::Bind<Self> {
        let mut cmd = Command::new(bin);
        cmd.envs(env.iter().copied());
        cmd.args(args)
            .arg("--log-format")
            .arg("json")
            .current_dir(dir)
            .env(
                "RUST_LOG",
                std::env::var("SERIN_TEST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let command = format!("{bin} {}", args.join(" "));
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {command}: {e}"));
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel::<String>();
        for stream in [
            child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
        ]
        .into_iter()
        .flatten()
        {
            let log = log.clone();
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    let _ = tx.send(line.clone());
                    if let Ok(mut l) = log.lock() {
                        l.push(line);
                    }
                }
            });
        }
        let mut me = Self {
            child: Some(child),
            dir: dir.to_path_buf(),
            config: config.to_path_buf(),
            admin: SocketAddr::from(([127, 0, 0, 1], 0)),
            listeners: Vec::new(),
            command,
            log,
            _tmp: None,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            let Ok(line) = rx.recv_timeout(Duration::from_millis(100)) else {
                if let Some(status) = me.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                    // The reader threads may still hold the last lines.
                    std::thread::sleep(Duration::from_millis(100));
                    let output = me.log_lines().join("\n");
                    if crate::ports::says_address_in_use(&output) {
                        return crate::ports::Bind::Taken(output);
                    }
                    me.dump();
                    panic!("serin exited early with {status}");
                }
                continue;
            };
            let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else {
                continue;
            };
            let msg = v.get("message").and_then(|m| m.as_str()).unwrap_or("");
            let addr = v
                .get("address")
                .and_then(|a| a.as_str())
                .and_then(|a| a.parse::<SocketAddr>().ok());
            match (msg, addr) {
                ("listening", Some(a)) => {
                    let name = v
                        .get("listener")
                        .and_then(|n| n.as_str())
                        .unwrap_or("")
                        .to_string();
                    me.listeners.push((name, a));
                }
                ("admin API listening", Some(a)) => {
                    me.admin = a;
                    return crate::ports::Bind::Listening(me);
                }
                _ => {}
            }
        }
        me.dump();
        panic!("serin did not report its admin API within 30 s");
    }

    /// Runs `serin up STACK --listen 127.0.0.1:0 --admin 127.0.0.1:0
    /// --no-color EXTRA...` in the stack file's folder and waits until the
    /// admin API is up (the replicas may still be starting). The gateway
    /// listener is named `gateway`.
    pub fn up(bin: &str, stack: &Path, extra_args: &[&str]) -> Self {
        let mut args = vec![
            "--listen",
            "127.0.0.1:0",
            "--admin",
            "127.0.0.1:0",
            "--no-color",
        ];
        args.extend_from_slice(extra_args);
        Self::up_with(bin, stack, &args)
    }

    /// Runs `serin up STACK ARGS...` in the stack file's folder with exactly
    /// these arguments (for a stack whose addresses must stay as written)
    /// and waits until the admin API is up.
    pub fn up_with(bin: &str, stack: &Path, args: &[&str]) -> Self {
        let stack_arg = stack.display().to_string();
        let mut all = vec!["up", stack_arg.as_str()];
        all.extend_from_slice(args);
        let dir = match stack.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        Self::spawn(bin, &all, &dir, stack)
    }

    /// The bound address of a listener.
    pub fn listener(&self, name: &str) -> SocketAddr {
        self.listeners
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, a)| *a)
            .unwrap_or_else(|| panic!("no listener {name} in {:?}", self.listeners))
    }

    /// `http://ADDR` of a listener.
    pub fn url(&self, name: &str) -> String {
        format!("http://{}", self.listener(name))
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin)
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// The `address` of serin's JSON log line `message` (e.g. `metrics
    /// listening`), waiting up to 10 s for it: where a listener serin bound
    /// on port 0 is. Panics (with serin's output) when it does not come.
    pub fn logged_address(&self, message: &str) -> SocketAddr {
        let mut found = None;
        wait_until(Duration::from_secs(10), || {
            found = self.log_lines().iter().find_map(|l| {
                let v = serde_json::from_str::<serde_json::Value>(l).ok()?;
                (v["message"] == message).then_some(())?;
                v["address"].as_str()?.parse::<SocketAddr>().ok()
            });
            found.is_some()
        });
        // Dropping `self` on the panic shows serin's output.
        found.unwrap_or_else(|| panic!("serin did not log `{message}` with an address within 10 s"))
    }

    /// Every line serin printed so far.
    pub fn log_lines(&self) -> Vec<String> {
        self.log.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// Sends a signal (e.g. "TERM", "HUP", "KILL").
    pub fn signal(&self, sig: &str) {
        let _ = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.pid().to_string())
            .status();
    }

    /// Waits for the process to exit and returns its exit code.
    pub fn wait(&mut self, limit: Duration) -> Option<i32> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                self.child = None;
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    pub fn dump(&self) {
        eprintln!("----- serin: {}", self.command);
        if let Ok(c) = std::fs::read_to_string(&self.config) {
            eprintln!("----- config {}:\n{c}", self.config.display());
        }
        eprintln!("----- output:");
        for l in self.log_lines() {
            eprintln!("{l}");
        }
        eprintln!("-----");
    }
}

/// Whether process `pid` still runs: it exists and is not a zombie (a
/// zombie has ended; only its exit status waits to be collected).
pub fn pid_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the command name, which is in parentheses and
        // may itself hold spaces or parentheses.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

impl Drop for Serin {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.dump();
        }
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
