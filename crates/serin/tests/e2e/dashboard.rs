//! The dashboard at the admin address's `/ui`, in a real browser: headless
//! Chromium driven by Playwright (crates/serin/tests/browser/dashboard.mjs)
//! loads it while `serin up` serves the qotm example and requests flow; it
//! must show the routes and versions, numbers that move, a weight change
//! made over the admin API, and a running canary's step. Screenshots are
//! kept under `target/test-artifacts/dashboard/`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::Value;
use serin_testkit::Serin;
use serin_testkit::process::TempDir;

use crate::common::{SERIN, client, run_browser_script};

/// `target/test-artifacts/dashboard/NAME`, made empty: the test binary is
/// `target/<profile>/deps/e2e-…`.
fn artifact_dir(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_else(|e| panic!("current_exe: {e}"));
    let target = exe
        .ancestors()
        .nth(3)
        .unwrap_or_else(|| panic!("no target folder above {}", exe.display()));
    let dir = target.join("test-artifacts/dashboard").join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    dir
}

/// Copies an example's folder, so that the state files `serin up` writes
/// beside the stack stay out of the repository.
fn example_copy(name: &str) -> (TempDir, PathBuf) {
    let src = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples")
        .join(name);
    let dir = TempDir::new("serin-dashboard");
    for entry in std::fs::read_dir(&src).unwrap_or_else(|e| panic!("{}: {e}", src.display())) {
        let path = entry.unwrap_or_else(|e| panic!("{e}")).path();
        if path.is_file() {
            let to = dir.path().join(path.file_name().unwrap_or_default());
            std::fs::copy(&path, &to).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        }
    }
    let stack = dir.path().join("stack.yaml");
    (dir, stack)
}

/// Sends GET `url` every 20 ms until the returned flag is set; counts the
/// answers.
fn traffic(url: String) -> (Arc<AtomicBool>, Arc<AtomicUsize>) {
    let stop = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(AtomicUsize::new(0));
    let (s, a) = (stop.clone(), answered.clone());
    tokio::spawn(async move {
        let http = client();
        while !s.load(Ordering::Relaxed) {
            if http.get(&url).send().await.is_ok() {
                a.fetch_add(1, Ordering::Relaxed);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    (stop, answered)
}

/// Waits until `url` answers 200 (the stack's replicas are up).
async fn wait_for_ok(serin: &Serin, url: &str) {
    let http = client();
    for _ in 0..300 {
        if let Ok(r) = http.get(url).send().await
            && r.status() == 200
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    serin.dump();
    panic!("{url} did not answer 200 within 30 s");
}

/// Runs the Playwright script in `mode` against `admin` and gives its
/// findings.
async fn run_browser(mode: &str, admin: &str, artifacts: &Path) -> Value {
    let artifacts = artifacts.display().to_string();
    run_browser_script("dashboard.mjs", &[mode, admin, &artifacts]).await
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

/// Every screenshot exists and is a PNG; their paths are printed.
fn check_screenshots(findings: &Value) {
    let shots = findings["screenshots"]
        .as_object()
        .unwrap_or_else(|| panic!("no screenshots in {findings}"));
    assert!(!shots.is_empty());
    for (name, path) in shots {
        let path = path.as_str().unwrap_or_default();
        let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("screenshot {path}: {e}"));
        assert!(bytes.starts_with(b"\x89PNG"), "{path} is not a PNG");
        println!("screenshot {name}: {path}");
    }
}

/// What a browser run leaves: serin still running (in its folder), the
/// script's findings, and how many requests the traffic got answered.
struct Browsed {
    serin: Serin,
    _dir: TempDir,
    findings: Value,
    answered: usize,
}

/// Runs `serin up` on a copy of `examples/EXAMPLE`, sends requests to
/// `path` on the gateway, and runs the browser script's `EXAMPLE` part
/// while they flow; its screenshots go to `test-artifacts/dashboard/EXAMPLE`.
async fn browse(example: &str, path: &str) -> Browsed {
    let (dir, stack) = example_copy(example);
    let serin = Serin::up(SERIN, &stack, &[]);
    let url = format!("{}{path}", serin.url("gateway"));
    wait_for_ok(&serin, &url).await;
    let (stop, answered) = traffic(url);
    let artifacts = artifact_dir(example);
    let findings = run_browser(example, &serin.admin_url(""), &artifacts).await;
    stop.store(true, Ordering::Relaxed);
    if findings.get("error").is_some() {
        serin.dump();
        panic!("the browser script failed: {findings:#}");
    }
    check_screenshots(&findings);
    Browsed {
        serin,
        _dir: dir,
        findings,
        answered: answered.load(Ordering::Relaxed),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_follows_traffic_weights_and_a_canary_in_a_browser() {
    let Browsed {
        serin,
        _dir,
        findings,
        answered,
    } = browse("qotm", "/qotm/").await;
    assert!(answered > 0, "no request was answered");

    assert_eq!(findings["title"], "serin dashboard");
    assert_eq!(findings["connection"], "Live");
    assert_eq!(strings(&findings["routes"]), ["qotm", "secure-qotm"]);
    assert_eq!(strings(&findings["versions"]), ["v1", "v2", "all"]);
    assert_eq!(findings["charts"], 3, "{findings}");
    // The route's row changed between two reads while requests flowed.
    assert_ne!(findings["total_first"], findings["total_second"]);
    let total = |row: &Value| -> u64 {
        row.as_str()
            .and_then(|r| r.split('\t').nth(1))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or_else(|| panic!("no total in {row}"))
    };
    assert!(total(&findings["total_second"]) > total(&findings["total_first"]));
    assert_eq!(findings["weights_before"], "Weights: v1 90% · v2 10%");
    assert_eq!(findings["weights_after"], "Weights: v1 50% · v2 50%");
    assert_eq!(findings["canary_step"], "step 1/3 (20%)");
    assert_eq!(findings["canary_phase"], "Progressing");
    assert_eq!(findings["weights_canary"], "Weights: v1 80% · v2 20%");
    // The first window was judged: a verdict and both versions' figures.
    let verdict = findings["canary_verdict"].as_str().unwrap_or_default();
    assert!(
        ["pass", "fail", "inconclusive"].contains(&verdict),
        "{findings}"
    );
    let figures = strings(&findings["canary_figures"]);
    assert_eq!(figures.len(), 2, "{findings}");
    assert!(
        figures[0].starts_with("v1\t") && figures[1].starts_with("v2\t"),
        "{figures:?}"
    );
    // A gate that holds a canary is shown with what it waits for.
    let waiting = findings["canary_waiting"].as_str().unwrap_or_default();
    assert!(
        waiting.starts_with("confirm-rollout `hold` (did not answer"),
        "{findings}"
    );
    let changes = strings(&findings["changes"]);
    assert!(
        changes
            .iter()
            .any(|c| c.contains("route qotm: weights v1=50 v2=50")),
        "{changes:?}"
    );
    assert!(
        changes.iter().any(|c| c.contains("canary start")),
        "{changes:?}"
    );
    // qotm v1 ×2, v2 and auth: four replicas and four endpoints.
    assert_eq!(findings["replica_rows"], 4, "{findings}");
    assert_eq!(findings["endpoint_rows"], 4, "{findings}");
    // gateway → qotm and gateway → auth (external auth).
    assert_eq!(findings["mesh_edges"], 2, "{findings}");
    // A laptop screen: nothing wider than 1366 px; the keyboard reaches the
    // skip link first; every picture has a text alternative.
    assert_eq!(findings["scroll_width"], 1366, "{findings}");
    assert_eq!(findings["first_tab"], "Skip to content");
    assert_eq!(findings["legend_label"], "v1 (shown when pressed)");
    assert_eq!(
        strings(&findings["legend_pressed"]),
        ["true", "false", "true"]
    );
    assert_eq!(findings["images_without_label"], 0, "{findings}");
    let explained = findings["explain"].as_str().unwrap_or_default();
    assert!(
        explained.contains("matches route qotm rule 0: PathPrefix /qotm")
            && explained.contains("step 1: filter URLRewrite")
            && explained.contains("backend qotm/v1: weight "),
        "{findings}"
    );
    // The tap panel: a request of route qotm, answered 200 by a version.
    let row = findings["tap_first_row"].as_str().unwrap_or_default();
    assert!(
        row.contains("GET\t/qotm/") && row.contains("\t200\t") && row.contains("\tqotm\tqotm/v"),
        "{findings}"
    );
    assert_eq!(findings["tap_state"], "Stopped.", "{findings}");
    assert!(
        strings(&findings["console_errors"]).is_empty(),
        "{findings}"
    );

    stop_with_open_stream(serin).await;
}

/// The mesh example: sidecar routes (`caller>callee`) get their own cards,
/// and the mesh graph shows who calls whom with traffic on every hop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_draws_the_mesh_of_sidecars_in_a_browser() {
    let Browsed {
        serin,
        _dir,
        findings,
        answered,
    } = browse("mesh", "/api").await;
    assert!(answered > 0, "no request was answered");
    let routes = strings(&findings["routes"]);
    for r in ["frontend", "frontend>pinger", "frontend>details"] {
        assert!(routes.iter().any(|x| x == r), "{r} not in {routes:?}");
    }
    assert!(
        strings(&findings["kinds"])
            .iter()
            .any(|k| k == "sidecar route: frontend calls pinger"),
        "{findings}"
    );
    let mut nodes = strings(&findings["mesh_nodes"]);
    nodes.sort();
    assert_eq!(nodes, ["details", "frontend", "gateway", "pinger"]);
    assert_eq!(findings["scroll_width"], 1366, "{findings}");
    stop_with_open_stream(serin).await;
}

/// Stops serin with a dashboard event stream open: the stream ends when
/// the proxy drains, so the admin server's graceful stop does not wait on
/// it and serin exits cleanly.
async fn stop_with_open_stream(mut serin: Serin) {
    let mut events = client()
        .get(serin.admin_url("/ui/events"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET /ui/events: {e}"));
    assert_eq!(events.status(), 200);
    let first = events
        .chunk()
        .await
        .unwrap_or_else(|e| panic!("event stream: {e}"))
        .unwrap_or_default();
    assert!(
        String::from_utf8_lossy(&first).contains("event: update"),
        "{first:?}"
    );
    serin.signal("TERM");
    let code = tokio::task::spawn_blocking(move || serin.wait(Duration::from_secs(60)))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(code, Some(0), "serin did not stop cleanly");
    drop(events);
}

/// With an admin token, the dashboard wants it like the rest of the admin
/// API: as `Authorization: Bearer`, or (what a browser can send for a page
/// and an event stream) as `?token=` on `/ui` addresses only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_wants_the_admin_token() {
    let upstream = crate::common::Upstream::start("a");
    let serin = crate::common::proxy(&format!(
        "listeners:
  - name: gw
    address: 127.0.0.1:0
admin:
  address: 127.0.0.1:0
  token: s3cret
services:
  - name: svc
    versions:
      - name: v1
        endpoints: [\"{}\"]
routes:
  - name: r
    rules:
      - backendRefs: [{{name: svc, version: v1}}]
",
        upstream.addr
    ));
    let http = client();
    let status = |path: &str, bearer: Option<&str>| {
        let mut req = http.get(serin.admin_url(path));
        if let Some(t) = bearer {
            req = req.bearer_auth(t);
        }
        async move { req.send().await.map(|r| r.status().as_u16()).unwrap_or(0) }
    };
    for path in ["/ui", "/ui/state", "/ui/events"] {
        assert_eq!(status(path, None).await, 401, "{path} without a token");
        assert_eq!(
            status(path, Some("wrong")).await,
            401,
            "{path}, wrong token"
        );
        assert_eq!(
            status(&format!("{path}?token=wrong"), None).await,
            401,
            "{path}?token=wrong"
        );
    }
    assert_eq!(status("/ui?token=s3cret", None).await, 200);
    assert_eq!(status("/ui/state", Some("s3cret")).await, 200);
    assert_eq!(status("/ui/events?token=s3cret", None).await, 200);
    // The query form is for the dashboard only.
    assert_eq!(status("/routes?token=s3cret", None).await, 401);
    assert_eq!(status("/routes", Some("s3cret")).await, 200);
}
