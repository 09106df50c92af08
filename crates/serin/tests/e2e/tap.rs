//! `serin tap` (issue #16, point 4) against a real serin: a request sent
//! after the tap started is shown with its route, backend and endpoint;
//! the filters are applied in serin; a bad filter is refused.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use crate::common::{SERIN, Serin, Upstream, proxy};

/// A running `serin tap`, its output lines coming through a channel.
struct Tap {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Tap {
    /// Starts `serin tap ARGS` and waits until it taps.
    fn start(serin: &Serin, args: &[&str]) -> Self {
        let mut child = Command::new(SERIN)
            .arg("tap")
            .args(args)
            .arg("--admin")
            .arg(serin.admin.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("serin tap: {e}"));
        let (tx, lines) = mpsc::channel();
        let stdout = child.stdout.take().unwrap_or_else(|| panic!("no stdout"));
        let stderr = child.stderr.take().unwrap_or_else(|| panic!("no stderr"));
        for out in [
            Box::new(stdout) as Box<dyn std::io::Read + Send>,
            Box::new(stderr),
        ] {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(out).lines().map_while(Result::ok) {
                    let _ = tx.send(line);
                }
            });
        }
        let mut tap = Self {
            child,
            lines,
            seen: Vec::new(),
        };
        tap.wait_for(|l| l.starts_with("tapping "));
        tap
    }

    /// Reads lines until one satisfies `want` (30 s at most).
    fn wait_for(&mut self, want: impl Fn(&str) -> bool) -> String {
        loop {
            match self.lines.recv_timeout(Duration::from_secs(30)) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if want(&line) {
                        return line;
                    }
                }
                Err(e) => panic!("serin tap: {e}; it printed:\n{}", self.seen.join("\n")),
            }
        }
    }
}

impl Drop for Tap {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn config(app: &Upstream, other: &Upstream) -> String {
    format!(
        r#"
listeners: [{{name: gw, address: "127.0.0.1:0"}}]
services:
  - {{name: app, versions: [{{name: v1, endpoints: ["{app}"]}}]}}
  - {{name: other, versions: [{{name: v1, endpoints: ["{other}"]}}]}}
routes:
  - name: api
    rules:
      - matches: [{{path: {{type: PathPrefix, value: /api}}}}]
        backendRefs: [{{name: app}}]
      - matches: [{{path: {{type: PathPrefix, value: /other}}}}]
        backendRefs: [{{name: other}}]
"#,
        app = app.addr,
        other = other.addr,
    )
}

fn get(serin: &Serin, path: &str) -> u16 {
    let out = Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--noproxy",
            "*",
        ])
        .arg(format!("{}{path}", serin.url("gw")))
        .output()
        .unwrap_or_else(|e| panic!("curl: {e}"));
    String::from_utf8_lossy(&out.stdout).parse().unwrap_or(0)
}

#[test]
fn a_tap_shows_requests_sent_after_it_started_with_route_and_endpoint() {
    let (app, other) = (Upstream::start("app"), Upstream::start("other"));
    let serin = proxy(&config(&app, &other));
    let mut tap = Tap::start(&serin, &["--service", "app"]);
    assert_eq!(get(&serin, "/other/1"), 200);
    assert_eq!(get(&serin, "/api/orders?id=7"), 200);
    let line = tap.wait_for(|l| l.contains(" GET "));
    for expected in [
        " GET /api/orders 200 ",
        "route=api",
        "backend=app/v1",
        &format!("endpoint={}", app.addr),
        "retries=0",
        "trace=",
    ] {
        assert!(line.contains(expected), "missing {expected:?} in {line:?}");
    }
    // The request to the other service was sent first and was not shown.
    assert!(
        !tap.seen.iter().any(|l| l.contains("/other/")),
        "{:?}",
        tap.seen
    );

    // A status filter, as JSON: only the 404 comes.
    let mut misses = Tap::start(&serin, &["--status", "4xx", "--json"]);
    assert_eq!(get(&serin, "/api/ok"), 200);
    assert_eq!(get(&serin, "/nowhere"), 404);
    let line = misses.wait_for(|l| l.starts_with('{'));
    let v: serde_json::Value =
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
    assert_eq!(v["kind"], "request", "{v}");
    assert_eq!(v["path"], "/nowhere", "{v}");
    assert_eq!(v["status"], 404, "{v}");
    assert!(v["route"].is_null(), "{v}");
}

#[test]
fn a_filter_that_cannot_be_read_is_refused_with_the_reason() {
    let (app, other) = (Upstream::start("app"), Upstream::start("other"));
    let serin = proxy(&config(&app, &other));
    let out = Command::new(SERIN)
        .args([
            "tap",
            "--status",
            "6xx",
            "--admin",
            &serin.admin.to_string(),
        ])
        .output()
        .unwrap_or_else(|e| panic!("serin tap: {e}"));
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(
        text.contains("status \"6xx\" is neither a class (2xx … 5xx) nor a status"),
        "{text}"
    );
}
