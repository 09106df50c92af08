//! What every module here uses.

pub use serin_testkit::{Serin, Upstream, wait_until};

pub const SERIN: &str = env!("CARGO_BIN_EXE_serin");

/// Starts `serin proxy` with a config (YAML text).
pub fn proxy(config: &str) -> Serin {
    Serin::proxy(SERIN, config)
}

/// A keep-alive HTTP client for tests (no proxy from the environment).
/// An HTTP/2 connection (prior knowledge) to `addr` with hyper's own
/// client, for what reqwest and tonic hide or do themselves; the
/// connection runs on a task of its own.
pub async fn h2_connect<B>(
    addr: std::net::SocketAddr,
) -> (
    hyper::client::conn::http2::SendRequest<B>,
    tokio::task::JoinHandle<hyper::Result<()>>,
)
where
    B: hyper::body::Body + Unpin + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
    let (tx, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .unwrap_or_else(|e| panic!("h2 handshake with {addr}: {e}"));
    (tx, tokio::spawn(conn))
}

pub fn client() -> reqwest::Client {
    serin_config::http_client::builder()
        .unwrap_or_else(|e| panic!("client: {e}"))
        .no_proxy()
        .timeout(std::time::Duration::from_secs(30))
        .build()
        .unwrap_or_else(|e| panic!("client: {e}"))
}

/// The JSON an upstream echoed.
pub async fn echo(resp: reqwest::Response) -> serde_json::Value {
    let text = resp.text().await.unwrap_or_default();
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// The value of one series in Prometheus text, e.g.
/// `serin_retries_total{route="r",service="s",version="v1"}`.
pub fn metric_value(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series).map(str::trim))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no series {series} in:\n{text}"))
}

/// The admin API's /metrics text.
pub async fn metrics_text(serin: &Serin) -> String {
    metrics_at(&serin.admin_url("/metrics")).await
}

/// The metrics text at `url` (an admin API's, or a metrics listener's).
pub async fn metrics_at(url: &str) -> String {
    client()
        .get(url)
        .send()
        .await
        .unwrap_or_else(|e| panic!("metrics: {e}"))
        .text()
        .await
        .unwrap_or_default()
}

/// A response header's value as text ("" when absent).
pub fn header(resp: &reqwest::Response, name: &str) -> String {
    resp.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string()
}

/// Polls the admin API's /metrics (every 50 ms, up to 10 s) until `cond`
/// holds for its text; returns whether it did, and the last text.
pub async fn metrics_until(serin: &Serin, cond: impl Fn(&str) -> bool) -> (bool, String) {
    let mut text = String::new();
    for _ in 0..200 {
        text = metrics_text(serin).await;
        if cond(&text) {
            return (true, text);
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    (false, text)
}

/// A program of the suite (a demo service, Prometheus, Redis) on a port
/// it was given, started again elsewhere when the port was taken
/// ([`serin_testkit::spawn_on_free_port`]); killed on drop, its output
/// printed when the test fails.
pub struct Program {
    pub child: std::process::Child,
    pub port: u16,
    pub log: std::path::PathBuf,
    what: String,
    _dir: serin_testkit::process::TempDir,
}

impl Program {
    /// Runs `command(port)` until `listening(its output, port)`.
    pub fn start(
        what: &str,
        command: impl FnMut(u16) -> std::process::Command,
        listening: impl Fn(&str, u16) -> bool,
    ) -> Self {
        let dir = serin_testkit::process::TempDir::new("serin-program");
        let log = dir.path().join("output.log");
        let limit = std::time::Duration::from_secs(60);
        let spawned = serin_testkit::spawn_on_free_port(what, &log, limit, command, listening);
        Self {
            child: spawned.child,
            port: spawned.port,
            log,
            what: what.to_string(),
            _dir: dir,
        }
    }

    /// `serin demo ARGS` with `PORT` set: up when it logs `listening` there.
    pub fn demo(args: &[&str]) -> Self {
        Self::start(
            &format!("serin demo {}", args.join(" ")),
            |port| {
                let mut c = std::process::Command::new(SERIN);
                c.arg("demo").args(args).env("PORT", port.to_string());
                c
            },
            |log, port| serin_testkit::ports::logged_listening(log, "listening", "addr", port),
        )
    }

    /// Prometheus with `config` and its data in `data`: up when it logs
    /// `Listening on` with its address.
    pub fn prometheus(
        bin: &std::path::Path,
        config: &std::path::Path,
        data: &std::path::Path,
    ) -> Self {
        Self::start(
            "prometheus",
            |port| {
                let mut c = std::process::Command::new(bin);
                c.arg(format!("--config.file={}", config.display()))
                    .arg(format!("--storage.tsdb.path={}", data.display()))
                    .arg(format!("--web.listen-address=127.0.0.1:{port}"));
                c
            },
            |log, port| log.contains(&format!("msg=\"Listening on\" address=127.0.0.1:{port}")),
        )
    }

    pub fn addr(&self) -> std::net::SocketAddr {
        std::net::SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// Everything it printed so far.
    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Program {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "----- {} (port {}):\n{}-----",
                self.what,
                self.port,
                self.output()
            );
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A program from Debian's `prometheus` package; a clear failure when it is
/// not installed (these tests never skip).
pub fn tool(name: &str) -> std::path::PathBuf {
    std::env::var_os("PATH")
        .and_then(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join(name))
                .find(|p| p.is_file())
        })
        .unwrap_or_else(|| {
            panic!(
                "`{name}` is not installed. It comes with Debian's `prometheus` package: \
                 run scripts/install-test-deps.sh (or `sudo apt-get install prometheus`)"
            )
        })
}

/// Runs a Playwright script of `crates/serin/tests/browser` (headless
/// Chromium; its `node_modules` and the browser come from
/// scripts/install-test-deps.sh) and gives the JSON object it prints last.
pub async fn run_browser_script(script: &str, args: &[&str]) -> serde_json::Value {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    assert!(
        dir.join("node_modules/playwright-core").is_dir(),
        "{}/node_modules is missing: run scripts/install-test-deps.sh",
        dir.display()
    );
    assert!(
        std::path::Path::new("/usr/bin/chromium").exists(),
        "/usr/bin/chromium is missing: run scripts/install-test-deps.sh"
    );
    let run = tokio::process::Command::new("node")
        .arg(dir.join(script))
        .args(args)
        .current_dir(&dir)
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(std::time::Duration::from_secs(180), run)
        .await
        .unwrap_or_else(|_| panic!("the browser script ran over 180 s"))
        .unwrap_or_else(|e| panic!("cannot run node (scripts/install-test-deps.sh): {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let findings: serde_json::Value = stdout
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str(l).ok())
        .unwrap_or_else(|| {
            panic!("no findings from the browser script\nstdout:\n{stdout}\nstderr:\n{stderr}")
        });
    println!("browser findings: {findings:#}");
    findings
}
