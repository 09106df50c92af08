//! Canaries that start themselves (`auto: true`) under a real `serin up`:
//! `serin apply` of a changed version runs the new revision as
//! `VERSION-canary` beside the old one and judges it; a failing one is
//! rolled back while the old revision serves on, a healthy one is promoted
//! and the old revision retired. Real replicas (`serin demo qotm`), load
//! from the test; nothing here asserts on elapsed time.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::client;
use crate::up::{LIMIT, Stack, eventually};

/// The longest a whole canary may take before a test gives up.
const CANARY_LIMIT: Duration = Duration::from_secs(180);

/// qotm behind `/`, one version `v1` answering as `answer` with `extra`
/// arguments, its canary automatic with short windows.
fn stack_yaml(canary: &str, answer: &str, extra: &str) -> String {
    format!(
        "gateway:
  routes:
    - name: qotm
      rules:
        - backendRefs: [{{name: qotm}}]
services:
  - name: qotm
    command: serin-demo
    readiness: {{httpGet: {{path: /ready}}, period: 200ms}}
    restartBackoff: {{initial: 200ms, max: 1s, resetAfter: 10s}}
    terminationGracePeriod: 5s
    canary: {{auto: true, interval: 1s, failures: 1, maxLatencyRatio: 50, \
     inconclusiveLimit: 1000, {canary}}}
    versions:
      - name: v1
        replicas: 2
        args: [qotm, --version, {answer}{extra}]
"
    )
}

/// The steps of most tests.
const STEPS: &str = "steps: [50, 100], minRequests: 10";

/// Answers seen by the load, by the `version` they name and their status.
type Seen = BTreeMap<(String, u16), usize>;

/// Clients sending GETs without pause until stopped, every answer counted
/// by (version, status); one without a JSON answer is kept as a failure.
struct Load {
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<Seen>>,
    failed: Arc<Mutex<Vec<String>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    fn start(url: String, header: Option<(&'static str, &'static str)>) -> Self {
        Self::start_reading(url, header, "/version")
    }

    /// As [`Self::start`], the version read at the JSON pointer `version_at`
    /// of each answer.
    fn start_reading(
        url: String,
        header: Option<(&'static str, &'static str)>,
        version_at: &'static str,
    ) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new(Seen::new()));
        let failed = Arc::new(Mutex::new(Vec::new()));
        let tasks = (0..4)
            .map(|_| {
                let (url, stop, seen, failed) =
                    (url.clone(), stop.clone(), seen.clone(), failed.clone());
                tokio::spawn(async move {
                    let http = client();
                    while !stop.load(Ordering::SeqCst) {
                        let mut req = http.get(&url);
                        if let Some((k, v)) = header {
                            req = req.header(k, v);
                        }
                        match answer_at(req, version_at).await {
                            Ok(key) => {
                                *seen
                                    .lock()
                                    .unwrap_or_else(|e| e.into_inner())
                                    .entry(key)
                                    .or_default() += 1;
                            }
                            Err(e) => failed.lock().unwrap_or_else(|e| e.into_inner()).push(e),
                        }
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                })
            })
            .collect();
        Self {
            stop,
            seen,
            failed,
            tasks,
        }
    }

    fn seen(&self) -> Seen {
        self.seen.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn reset(&self) {
        self.seen.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }

    /// Waits until `n` more answers have come.
    async fn more(&self, n: usize) {
        let count = |s: &Seen| s.values().sum::<usize>();
        let target = count(&self.seen()) + n;
        eventually(&format!("{n} more answers"), async || {
            (count(&self.seen()) >= target).then_some(())
        })
        .await;
    }

    /// Stops the clients; fails the test if any request got no answer.
    async fn finish(self) -> Seen {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.tasks {
            t.await.unwrap_or_else(|e| panic!("load task: {e}"));
        }
        let failed = self.failed.lock().unwrap_or_else(|e| e.into_inner());
        assert!(failed.is_empty(), "requests without an answer: {failed:#?}");
        self.seen.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// (the answer's `version`, its status), or why there was none.
async fn answer(req: reqwest::RequestBuilder) -> Result<(String, u16), String> {
    answer_at(req, "/version").await
}

/// (the version at the JSON pointer `at` of the answer, its status), or why
/// there was none.
async fn answer_at(req: reqwest::RequestBuilder, at: &str) -> Result<(String, u16), String> {
    let r = req.send().await.map_err(|e| format!("{e:?}"))?;
    let status = r.status().as_u16();
    let body = r.text().await.map_err(|e| format!("body: {e:?}"))?;
    let v: Value = serde_json::from_str(&body).map_err(|_| format!("HTTP {status}: {body}"))?;
    let version = v.pointer(at).and_then(Value::as_str).unwrap_or("?");
    Ok((version.to_string(), status))
}

/// `serin apply` of `yaml` (written over the stack file first): its JSON
/// answer.
async fn apply(stack: &Stack, yaml: &str) -> Value {
    std::fs::write(stack.path("stack.yaml"), yaml).unwrap_or_else(|e| panic!("{e}"));
    let r = client()
        .post(stack.serin.admin_url("/apply"))
        .json(&serde_json::json!({}))
        .send()
        .await
        .unwrap_or_else(|e| panic!("apply: {e}"));
    let status = r.status();
    let v: Value = r.json().await.unwrap_or_else(|e| panic!("apply: {e}"));
    assert!(status.is_success(), "apply: {status} {v}");
    v
}

async fn canary(stack: &Stack) -> Value {
    canary_of(stack, "qotm").await
}

async fn canary_of(stack: &Stack, service: &str) -> Value {
    let r = client()
        .get(stack.serin.admin_url(&format!("/canary/{service}")))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    r.json().await.unwrap_or_else(|e| panic!("{e}"))
}

/// Polls the canary of qotm until `cond` holds.
async fn wait_canary(stack: &Stack, what: &str, cond: impl Fn(&Value) -> bool) -> Value {
    wait_canary_of(stack, "qotm", what, cond).await
}

/// Polls the canary of `service` until `cond` holds.
async fn wait_canary_of(
    stack: &Stack,
    service: &str,
    what: &str,
    cond: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + CANARY_LIMIT;
    loop {
        let v = canary_of(stack, service).await;
        if cond(&v) {
            return v;
        }
        assert!(Instant::now() < deadline, "{what} never came:\n{v:#}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The audit log's entries whole so far: a last line without its newline
/// is still being written.
fn audit(stack: &Stack) -> Vec<Value> {
    let text = std::fs::read_to_string(stack.path("stack.canary-audit.jsonl")).unwrap_or_default();
    let whole = text.rfind('\n').map_or("", |end| &text[..end]);
    whole
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("audit line {l}: {e}")))
        .collect()
}

/// Waits until the audit log holds a `decision`; that entry.
async fn wait_decision(stack: &Stack, decision: &str) -> Value {
    let deadline = Instant::now() + CANARY_LIMIT;
    loop {
        if let Some(e) = audit(stack).into_iter().find(|e| e["decision"] == decision) {
            return e;
        }
        assert!(
            Instant::now() < deadline,
            "no `{decision}` in the audit log: {:#?}",
            audit(stack)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The versions of qotm's replicas now (`v1`, `v1-canary`), each counted.
async fn replica_versions(stack: &Stack) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for r in stack.ps().await {
        *out.entry(r["version"].as_str().unwrap_or("?").to_string())
            .or_default() += 1;
    }
    out
}

/// Waits until qotm runs only `v1` (2 replicas), the canary version gone.
async fn only_v1(stack: &Stack, what: &str) {
    eventually(what, async || {
        let versions = replica_versions(stack).await;
        (versions == BTreeMap::from([("v1".to_string(), 2)])).then_some(())
    })
    .await;
}

/// The automatic canaries' state file.
fn auto_state(stack: &Stack) -> Value {
    let text = std::fs::read_to_string(stack.path("stack.canary-auto.json"))
        .unwrap_or_else(|e| panic!("stack.canary-auto.json: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_apply_of_a_failing_revision_starts_a_canary_that_is_rolled_back_while_the_old_one_serves()
 {
    let stack = Stack::start(&stack_yaml(STEPS, "old", ""));
    stack.wait_ready("qotm", "v1", 2).await;
    let load = Load::start(stack.url("/"), None);
    load.more(50).await;

    // Every answer of the new revision is a 500.
    let out = apply(&stack, &stack_yaml(STEPS, "new", ", --error-rate, 1")).await;
    assert!(
        out["summary"]["added"]
            .to_string()
            .contains("qotm/v1-canary"),
        "{out}"
    );
    let v = wait_canary(&stack, "the automatic canary", |v| {
        v["canary"] == "v1-canary"
    })
    .await;
    assert_eq!(v["baseline"], "v1", "{v:#}");
    let start = audit(&stack)
        .into_iter()
        .find(|e| e["decision"] == "start")
        .unwrap_or_else(|| panic!("no start: {:#?}", audit(&stack)));
    assert_eq!(start["actor"], "apply", "{start}");
    let v = wait_canary(&stack, "the rollback", |v| v["phase"] != "Progressing").await;
    assert_eq!(v["phase"], "RolledBack", "{v:#}");
    let retire = wait_decision(&stack, "retire").await;
    assert_eq!(retire["actor"], "apply", "{retire}");
    only_v1(&stack, "v1-canary stopped").await;
    assert_eq!(
        auto_state(&stack)["releases"]["qotm"]["stage"],
        "RolledBack",
        "the state says so"
    );

    // Every answer so far: the old revision never failed, the new one got
    // traffic and failed it all.
    let seen = load.seen();
    for ((version, status), n) in &seen {
        match version.as_str() {
            "old" => assert_eq!(*status, 200, "{n} answers of the old revision: {seen:?}"),
            "new" => assert_eq!(*status, 500, "{seen:?}"),
            other => panic!("an answer of {other}: {seen:?}"),
        }
    }
    assert!(
        seen.contains_key(&("new".to_string(), 500)),
        "the canary got traffic: {seen:?}"
    );

    // The same file again tries nothing: the old revision serves on.
    let out = apply(&stack, &stack_yaml(STEPS, "new", ", --error-rate, 1")).await;
    assert!(!out.to_string().contains("v1-canary"), "{out}");
    load.reset();
    load.more(100).await;
    let seen = load.finish().await;
    assert_eq!(
        seen.keys().collect::<Vec<_>>(),
        [&("old".to_string(), 200)],
        "only the old revision answers now"
    );
    assert_eq!(canary(&stack).await["phase"], "RolledBack");
    stack.stop("TERM").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_apply_of_a_healthy_revision_is_promoted_and_takes_all_the_traffic() {
    let stack = Stack::start(&stack_yaml(STEPS, "old", ""));
    stack.wait_ready("qotm", "v1", 2).await;
    let load = Load::start(stack.url("/"), None);
    load.more(50).await;
    apply(&stack, &stack_yaml(STEPS, "new", "")).await;
    let v = wait_canary(&stack, "the promotion", |v| {
        v["canary"] == "v1-canary" && v["phase"] != "Progressing"
    })
    .await;
    assert_eq!(v["phase"], "Promoted", "{v:#}");
    let finish = wait_decision(&stack, "finish").await;
    assert_eq!(finish["to"]["v1"], 100, "{finish}");
    only_v1(&stack, "only v1, of the new revision").await;
    load.reset();
    load.more(100).await;
    let seen = load.finish().await;
    assert_eq!(
        seen.keys().collect::<Vec<_>>(),
        [&("new".to_string(), 200)],
        "the new revision takes all the traffic as v1"
    );
    let state = auto_state(&stack);
    assert!(
        state["releases"].as_object().is_some_and(|r| r.is_empty()),
        "{state}"
    );
    assert!(LIMIT > Duration::ZERO);
    stack.stop("TERM").await;
}

/// One step of 50% that waits for `serin canary approve`: a canary that
/// stays running until the test says.
const HELD: &str = "steps: [50], approval: true, minRequests: 10";

/// `POST /canary/qotm/approve`.
async fn approve(stack: &Stack) {
    approve_of(stack, "qotm").await;
}

/// `POST /canary/SERVICE/approve`.
async fn approve_of(stack: &Stack, service: &str) {
    let r = client()
        .post(stack.serin.admin_url(&format!("/canary/{service}/approve")))
        .json(&serde_json::json!({}))
        .send()
        .await
        .unwrap_or_else(|e| panic!("approve: {e}"));
    assert!(r.status().is_success(), "approve: {}", r.status());
}

/// Waits until the load has seen answers of exactly `versions` (all 200)
/// since it was reset.
async fn wait_answers(load: &Load, versions: &[&str]) {
    let want: Vec<(String, u16)> = versions.iter().map(|v| (v.to_string(), 200)).collect();
    eventually(&format!("answers of {versions:?} only"), async || {
        load.reset();
        load.more(60).await;
        let seen: Vec<(String, u16)> = load.seen().into_keys().collect();
        (seen == want).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_apply_during_a_canary_restarts_the_analysis_for_the_newest_revision() {
    let stack = Stack::start(&stack_yaml(HELD, "old", ""));
    stack.wait_ready("qotm", "v1", 2).await;
    let load = Load::start(stack.url("/"), None);
    apply(&stack, &stack_yaml(HELD, "new", "")).await;
    let first = wait_canary(&stack, "the wait for approval", |v| {
        v["waiting"]["gate"] == "approval"
    })
    .await;
    wait_answers(&load, &["new", "old"]).await;

    apply(&stack, &stack_yaml(HELD, "newer", "")).await;
    let second = wait_canary(&stack, "a new canary", |v| v["id"] != first["id"]).await;
    assert_eq!(second["canary"], "v1-canary", "{second:#}");
    let entries = audit(&stack);
    let abort = entries
        .iter()
        .find(|e| e["decision"] == "abort")
        .unwrap_or_else(|| panic!("no abort: {entries:#?}"));
    assert_eq!(abort["actor"], "apply", "{abort}");
    assert_eq!(
        entries.iter().filter(|e| e["decision"] == "start").count(),
        2,
        "{entries:#?}"
    );
    wait_canary(&stack, "the wait for approval", |v| {
        v["waiting"]["gate"] == "approval"
    })
    .await;
    wait_answers(&load, &["newer", "old"]).await;

    approve(&stack).await;
    wait_decision(&stack, "finish").await;
    wait_answers(&load, &["newer"]).await;
    load.finish().await;
    stack.stop("TERM").await;
}

/// The mesh example's shape: the gateway sends `/` to frontend, whose
/// sidecar calls pinger and details; pinger's canary is automatic, held at
/// 50 % until approved, its one version answering as `answer`.
fn mesh_stack_yaml(answer: &str) -> String {
    format!(
        "gateway:
  routes:
    - name: frontend
      rules:
        - backendRefs: [{{name: frontend}}]
services:
  - name: frontend
    command: serin-demo
    args: [frontend]
    readiness: {{httpGet: {{path: /ready}}, period: 200ms}}
    sidecar:
      outbound:
        - {{name: pinger, env: PINGER_URL}}
        - {{name: details, env: DETAILS_URL}}
  - name: pinger
    command: serin-demo
    readiness: {{httpGet: {{path: /ready}}, period: 200ms}}
    terminationGracePeriod: 5s
    sidecar: {{}}
    canary: {{auto: true, interval: 1s, failures: 1, maxLatencyRatio: 50, \
     inconclusiveLimit: 1000, {HELD}}}
    versions:
      - name: v1
        args: [pinger, --version, {answer}]
  - name: details
    command: serin-demo
    args: [details]
    readiness: {{httpGet: {{path: /ready}}, period: 200ms}}
    sidecar: {{}}
"
    )
}

/// Only the frontend's sidecar sends to pinger: the automatic canary moves
/// that traffic between services (the `frontend>pinger` route) as it moves
/// the gateway's, and after promotion the new revision answers it alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_automatic_canary_moves_the_traffic_of_a_sidecars_route() {
    let stack = Stack::start(&mesh_stack_yaml("old"));
    for service in ["frontend", "pinger", "details"] {
        stack.wait_ready(service, "v1", 1).await;
    }
    let load = Load::start_reading(stack.url("/api"), None, "/pinger/body/version");
    wait_answers(&load, &["old"]).await;
    apply(&stack, &mesh_stack_yaml("new")).await;
    wait_canary_of(&stack, "pinger", "the wait for approval", |v| {
        v["waiting"]["gate"] == "approval"
    })
    .await;
    wait_answers(&load, &["new", "old"]).await;
    let metrics = crate::common::metrics_text(&stack.serin).await;
    let series = r#"serin_requests_total{route="frontend>pinger",service="pinger",version="v1-canary",code="200"}"#;
    assert!(metrics.contains(series), "{series} missing:\n{metrics}");

    approve_of(&stack, "pinger").await;
    wait_decision(&stack, "finish").await;
    wait_answers(&load, &["new"]).await;
    load.finish().await;
    stack.stop("TERM").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_an_automatic_canary_then_restart_holds_both_revisions_again() {
    let mut stack = Stack::start(&stack_yaml(HELD, "old", ""));
    stack.wait_ready("qotm", "v1", 2).await;
    let load = Load::start(stack.url("/"), None);
    apply(&stack, &stack_yaml(HELD, "new", "")).await;
    let before = wait_canary(&stack, "the wait for approval", |v| {
        v["waiting"]["gate"] == "approval"
    })
    .await;
    load.finish().await;
    assert_eq!(auto_state(&stack)["releases"]["qotm"]["stage"], "Judging");

    stack.serin.signal("KILL");
    let code = tokio::task::block_in_place(|| stack.serin.wait(LIMIT));
    assert_eq!(code, None, "killed by a signal");
    // The stack file says `new`; the old revision is still the baseline.
    stack.serin = serin_testkit::Serin::up(crate::common::SERIN, &stack.path("stack.yaml"), &[]);
    stack.wait_ready("qotm", "v1", 2).await;
    stack.wait_ready("qotm", "v1-canary", 2).await;
    let after = canary(&stack).await;
    assert_eq!(after["id"], before["id"], "the same canary: {after:#}");
    assert_eq!(after["weights"], before["weights"], "{after:#}");
    let load = Load::start(stack.url("/"), None);
    wait_answers(&load, &["new", "old"]).await;

    approve(&stack).await;
    wait_decision(&stack, "finish").await;
    wait_answers(&load, &["new"]).await;
    only_v1(&stack, "only v1").await;
    load.finish().await;
    stack.stop("TERM").await;
}

/// Blue/green on the preview header `x-preview: 1`; the preview step needs
/// 50 requests, more than the test's own probes send.
const BLUE_GREEN: &str = "blueGreen: {previewHeader: x-preview=1}, minRequests: 50";

/// The version that answers one request to `path`, with the preview
/// header or without.
async fn version_of(stack: &Stack, path: &str, preview: bool) -> String {
    let mut req = client().get(stack.url(path));
    if preview {
        req = req.header("x-preview", "1");
    }
    let (version, status) = answer(req).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(status, 200, "{path}: {version}");
    version
}

/// Applies the new revision, waits for its preview and checks that only
/// requests with the preview header reach it.
async fn previewed(stack: &Stack, new_args: &str) {
    apply(stack, &stack_yaml(BLUE_GREEN, "new", new_args)).await;
    let v = wait_canary(stack, "the preview step", |v| {
        v["canary"] == "v1-canary" && v["match_step"] == true
    })
    .await;
    assert_eq!(v["weights"]["v1-canary"], 0, "{v:#}");
    stack.wait_ready("qotm", "v1-canary", 2).await;
    for _ in 0..10 {
        assert_eq!(version_of(stack, "/quote/1", true).await, "new");
        assert_eq!(version_of(stack, "/quote/1", false).await, "old");
    }
    assert_eq!(canary(stack).await["match_step"], true, "still previewing");
}

/// The `advance` that left the preview: straight from 0 to 100.
fn switch(stack: &Stack) -> Value {
    let entries = audit(stack);
    entries
        .into_iter()
        .find(|e| e["decision"] == "advance")
        .unwrap_or_else(|| panic!("no advance: {:#?}", audit(stack)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blue_green_previews_on_its_header_then_switches_at_once_and_is_promoted() {
    let stack = Stack::start(&stack_yaml(BLUE_GREEN, "old", ""));
    stack.wait_ready("qotm", "v1", 2).await;
    previewed(&stack, "").await;
    let testers = Load::start(stack.url("/quote/1"), Some(("x-preview", "1")));
    let everyone = Load::start(stack.url("/"), None);
    let v = wait_canary(&stack, "the end", |v| v["phase"] != "Progressing").await;
    assert_eq!(v["phase"], "Promoted", "{v:#}");
    let s = switch(&stack);
    assert_eq!(
        (&s["from"]["v1-canary"], &s["to"]["v1-canary"]),
        (&Value::from(0), &Value::from(100)),
        "at once: {s}"
    );
    wait_decision(&stack, "finish").await;
    testers.finish().await;
    wait_answers(&everyone, &["new"]).await;
    everyone.finish().await;
    stack.stop("TERM").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blue_green_that_fails_after_the_switch_is_rolled_back_to_the_old_version() {
    let stack = Stack::start(&stack_yaml(BLUE_GREEN, "old", ""));
    stack.wait_ready("qotm", "v1", 2).await;
    // The new revision answers quotes by index but fails every random one:
    // the preview (by index) passes, live traffic after the switch fails.
    previewed(&stack, ", --error-rate, 1").await;
    let testers = Load::start(stack.url("/quote/1"), Some(("x-preview", "1")));
    let everyone = Load::start(stack.url("/"), None);
    let v = wait_canary(&stack, "the end", |v| v["phase"] != "Progressing").await;
    assert_eq!(v["phase"], "RolledBack", "{v:#}");
    assert_eq!(
        switch(&stack)["to"]["v1-canary"],
        100,
        "it was switched first"
    );
    let rollback = wait_decision(&stack, "rollback").await;
    assert_eq!(rollback["from"]["v1-canary"], 100, "{rollback}");
    wait_decision(&stack, "retire").await;
    testers.finish().await;
    wait_answers(&everyone, &["old"]).await;
    everyone.finish().await;
    stack.stop("TERM").await;
}

/// Blue/green on the preview host; the preview step needs 50 requests, as
/// on the header.
const BLUE_GREEN_HOST: &str = "blueGreen: {previewHost: preview.qotm.local}, minRequests: 50";

/// The host the preview of [`BLUE_GREEN_HOST`] is on.
const PREVIEW_HOST: &str = "preview.qotm.local";

/// The version that answers one request to `path` sent with `Host: host`.
async fn version_for_host(stack: &Stack, path: &str, host: &str) -> String {
    let req = client().get(stack.url(path)).header("host", host);
    let (version, status) = answer(req).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(status, 200, "{host}{path}: {version}");
    version
}

/// Applies the new revision, waits for its preview and checks that only
/// requests for the preview host reach it: whatever the port or the case
/// of the host, and not for another host or none named.
async fn previewed_on_host(stack: &Stack, new_args: &str) {
    apply(stack, &stack_yaml(BLUE_GREEN_HOST, "new", new_args)).await;
    let v = wait_canary(stack, "the preview step", |v| {
        v["canary"] == "v1-canary" && v["match_step"] == true
    })
    .await;
    assert_eq!(v["weights"]["v1-canary"], 0, "{v:#}");
    assert!(
        v["message"]
            .as_str()
            .is_some_and(|m| m.contains("host step (preview.qotm.local)")),
        "{v:#}"
    );
    stack.wait_ready("qotm", "v1-canary", 2).await;
    let port = stack
        .url("/")
        .rsplit(':')
        .next()
        .map(|p| p.trim_end_matches('/').to_string())
        .unwrap_or_default();
    for _ in 0..5 {
        for host in [
            PREVIEW_HOST.to_string(),
            format!("Preview.QOTM.local:{port}"),
        ] {
            assert_eq!(version_for_host(stack, "/quote/1", &host).await, "new");
        }
        assert_eq!(version_of(stack, "/quote/1", false).await, "old");
        for other in [
            "qotm.local",
            "preview.qotm.local.example",
            "xpreview.qotm.local",
        ] {
            assert_eq!(
                version_for_host(stack, "/quote/1", other).await,
                "old",
                "{other}"
            );
        }
    }
    assert_eq!(canary(stack).await["match_step"], true, "still previewing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blue_green_previews_on_its_host_then_switches_at_once_and_is_promoted() {
    let stack = Stack::start(&stack_yaml(BLUE_GREEN_HOST, "old", ""));
    stack.wait_ready("qotm", "v1", 2).await;
    previewed_on_host(&stack, "").await;
    let testers = Load::start(stack.url("/quote/1"), Some(("host", PREVIEW_HOST)));
    let everyone = Load::start(stack.url("/"), None);
    let v = wait_canary(&stack, "the end", |v| v["phase"] != "Progressing").await;
    assert_eq!(v["phase"], "Promoted", "{v:#}");
    let s = switch(&stack);
    assert_eq!(
        (&s["from"]["v1-canary"], &s["to"]["v1-canary"]),
        (&Value::from(0), &Value::from(100)),
        "at once: {s}"
    );
    assert!(
        s["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("host step (preview.qotm.local) passed")),
        "{s}"
    );
    wait_decision(&stack, "finish").await;
    testers.finish().await;
    wait_answers(&everyone, &["new"]).await;
    everyone.finish().await;
    // The preview's rules are gone: the host is served as any other.
    assert_eq!(
        version_for_host(&stack, "/quote/1", PREVIEW_HOST).await,
        "new"
    );
    stack.stop("TERM").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blue_green_that_fails_on_its_preview_host_is_rolled_back_before_anyone_else_sees_it() {
    let stack = Stack::start(&stack_yaml(BLUE_GREEN_HOST, "old", ""));
    stack.wait_ready("qotm", "v1", 2).await;
    let everyone = Load::start(stack.url("/"), None);
    everyone.more(50).await;
    // The new revision answers quotes by index but fails every random one:
    // the testers on the preview host ask for random ones.
    previewed_on_host(&stack, ", --error-rate, 1").await;
    let testers = Load::start(stack.url("/"), Some(("host", PREVIEW_HOST)));
    let v = wait_canary(&stack, "the end", |v| v["phase"] != "Progressing").await;
    assert_eq!(v["phase"], "RolledBack", "{v:#}");
    let rollback = wait_decision(&stack, "rollback").await;
    assert_eq!(
        rollback["from"]["v1-canary"], 0,
        "never switched: {rollback}"
    );
    assert!(
        audit(&stack).iter().all(|e| e["decision"] != "advance"),
        "no switch: {:#?}",
        audit(&stack)
    );
    wait_decision(&stack, "retire").await;
    let tested = testers.finish().await;
    assert!(
        tested.contains_key(&("new".to_string(), 500)),
        "the preview got the testers' requests: {tested:?}"
    );
    everyone.more(50).await;
    let seen = everyone.finish().await;
    assert_eq!(
        seen.keys().collect::<Vec<_>>(),
        [&("old".to_string(), 200)],
        "the plain traffic never saw the new revision"
    );
    assert_eq!(
        version_for_host(&stack, "/quote/1", PREVIEW_HOST).await,
        "old"
    );
    stack.stop("TERM").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_a_preview_on_its_host_then_restart_routes_the_preview_again() {
    let mut stack = Stack::start(&stack_yaml(BLUE_GREEN_HOST, "old", ""));
    stack.wait_ready("qotm", "v1", 2).await;
    previewed_on_host(&stack, "").await;
    let before = canary(&stack).await;

    stack.serin.signal("KILL");
    let code = tokio::task::block_in_place(|| stack.serin.wait(LIMIT));
    assert_eq!(code, None, "killed by a signal");
    stack.serin = serin_testkit::Serin::up(crate::common::SERIN, &stack.path("stack.yaml"), &[]);
    stack.wait_ready("qotm", "v1", 2).await;
    stack.wait_ready("qotm", "v1-canary", 2).await;
    let after = canary(&stack).await;
    assert_eq!(after["id"], before["id"], "the same canary: {after:#}");
    assert_eq!(after["match_step"], true, "still previewing: {after:#}");
    // The proxy does not keep the preview's rules: the resumed canary puts
    // them back.
    eventually("the preview host routed again", async || {
        let req = client()
            .get(stack.url("/quote/1"))
            .header("host", PREVIEW_HOST);
        (answer(req).await.ok()? == ("new".to_string(), 200)).then_some(())
    })
    .await;
    for _ in 0..5 {
        assert_eq!(
            version_for_host(&stack, "/quote/1", PREVIEW_HOST).await,
            "new"
        );
        assert_eq!(version_of(&stack, "/quote/1", false).await, "old");
    }
    stack.stop("TERM").await;
}

/// The build of [`built_project`]: copies `src/run.sh` to `out/run.sh`.
const BUILD: &str = "#!/bin/sh\nmkdir -p out && cp src/run.sh out/run.sh && chmod +x out/run.sh\n";

/// The service's source: qotm answering as `answer`, with `extra` args.
fn write_source(dir: &std::path::Path, answer: &str, extra: &str) {
    let script = format!(
        "#!/bin/sh\nexec {} demo qotm --version {answer}{extra}\n",
        crate::common::SERIN
    );
    std::fs::write(dir.join("src/run.sh"), script).unwrap_or_else(|e| panic!("write: {e}"));
}

/// Runs the build of [`built_project`] in `dir`, as its developer would.
fn build_by_hand(dir: &std::path::Path) {
    let out = std::process::Command::new("sh")
        .arg("build.sh")
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("the build: {e}"));
    assert!(out.status.success(), "the build: {out:?}");
}

/// A project built from `src/` into `out/run.sh` (built once already),
/// whose stack file runs that build with an automatic canary and says so
/// (`watch.output`).
fn built_project(answer: &str) -> serin_testkit::process::TempDir {
    let dir = serin_testkit::process::TempDir::new("serin-auto-build");
    std::fs::create_dir_all(dir.path().join("src")).unwrap_or_else(|e| panic!("mkdir: {e}"));
    std::fs::write(dir.path().join("build.sh"), BUILD).unwrap_or_else(|e| panic!("write: {e}"));
    write_source(dir.path(), answer, "");
    build_by_hand(dir.path());
    let yaml = stack_yaml(STEPS, answer, "")
        .replace("command: serin-demo", "command: ./out/run.sh")
        .replace(&format!("        args: [qotm, --version, {answer}]\n"), "")
        .replace(
            "    canary:",
            "    watch: {paths: [src], build: sh build.sh, output: out/run.sh}\n    canary:",
        );
    std::fs::write(dir.path().join("stack.yaml"), yaml).unwrap_or_else(|e| panic!("write: {e}"));
    dir
}

/// `GET /runtime/builds`: qotm's last build.
async fn last_build(stack: &Stack) -> Value {
    let r = client()
        .get(stack.serin.admin_url("/runtime/builds"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let builds: Value = r.json().await.unwrap_or_else(|e| panic!("{e}"));
    builds
        .as_array()
        .and_then(|b| b.iter().find(|b| b["service"] == "qotm"))
        .cloned()
        .unwrap_or_else(|| panic!("no build of qotm: {builds}"))
}

/// The build copies beside the stack file now.
fn build_copies(stack: &Stack) -> Vec<String> {
    let dir = stack.path("stack.builds/qotm");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuild_under_watch_is_judged_by_its_canary_while_the_running_build_serves_on() {
    let stack = Stack::start_in(built_project("old"), &["--watch"]);
    stack.wait_ready("qotm", "v1", 2).await;
    let load = Load::start(stack.url("/"), None);
    load.more(50).await;
    assert_eq!(
        build_copies(&stack).len(),
        1,
        "the first build runs from its copy"
    );

    // A rebuild whose every answer is a 500: judged as v1-canary, rolled
    // back, while v1 serves on from its own copy.
    write_source(&stack.path(""), "new", " --error-rate 1");
    let v = wait_canary(&stack, "the canary of the rebuild", |v| {
        v["canary"] == "v1-canary"
    })
    .await;
    assert_eq!(v["baseline"], "v1", "{v:#}");
    let v = wait_canary(&stack, "the rollback", |v| v["phase"] != "Progressing").await;
    assert_eq!(v["phase"], "RolledBack", "{v:#}");
    wait_decision(&stack, "retire").await;
    only_v1(&stack, "v1-canary stopped").await;
    let release = auto_state(&stack)["releases"]["qotm"].clone();
    let (baseline, candidate) = (
        release["baseline_build"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
        release["candidate_build"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
    );
    assert!(
        baseline.contains("stack.builds/qotm/") && candidate.contains("stack.builds/qotm/"),
        "{release:#}"
    );
    assert_ne!(baseline, candidate, "{release:#}");
    let runs = std::fs::read_to_string(&baseline).unwrap_or_else(|e| panic!("{baseline}: {e}"));
    assert!(
        runs.contains("--version old"),
        "the baseline's copy: {runs}"
    );
    let build = last_build(&stack).await;
    assert!(
        build["message"]
            .as_str()
            .is_some_and(|m| m.contains("runs as qotm/v1-canary and its canary judges it")),
        "{build:#}"
    );

    // out/run.sh is the failing build now; a v1 replica that dies comes
    // back running the build v1 was judged with.
    let old = stack.wait_ready("qotm", "v1", 2).await;
    let victim = crate::up::pid(&old[0]).unwrap_or_else(|| panic!("no pid: {}", old[0]));
    let killed = std::process::Command::new("kill")
        .args(["-KILL", &victim.to_string()])
        .status()
        .unwrap_or_else(|e| panic!("kill: {e}"));
    assert!(killed.success());
    eventually("the killed replica replaced", async || {
        let now = stack.wait_ready("qotm", "v1", 2).await;
        now.iter()
            .all(|r| crate::up::pid(r) != Some(victim))
            .then_some(())
    })
    .await;
    wait_answers(&load, &["old"]).await;

    // A healthy rebuild: judged again, promoted, and it alone serves.
    write_source(&stack.path(""), "newer", "");
    let v = wait_canary(&stack, "the promotion of the next rebuild", |v| {
        v["phase"] == "Promoted"
    })
    .await;
    assert_eq!(v["canary"], "v1-canary", "{v:#}");
    wait_decision(&stack, "finish").await;
    only_v1(&stack, "only v1, of the new build").await;
    wait_answers(&load, &["newer"]).await;
    let seen = load.finish().await;
    for ((version, status), n) in &seen {
        if version == "old" || version == "newer" {
            assert_eq!(*status, 200, "{n} answers of {version}: {seen:?}");
        }
    }
    eventually("the unused copies removed", async || {
        (build_copies(&stack).len() == 1).then_some(())
    })
    .await;
    stack.stop("TERM").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_the_canary_of_a_rebuild_then_restart_runs_both_builds_again() {
    let dir = built_project("old");
    let yaml = std::fs::read_to_string(dir.path().join("stack.yaml"))
        .unwrap_or_else(|e| panic!("{e}"))
        .replace(STEPS, HELD);
    std::fs::write(dir.path().join("stack.yaml"), yaml).unwrap_or_else(|e| panic!("{e}"));
    let mut stack = Stack::start_in(dir, &["--watch"]);
    stack.wait_ready("qotm", "v1", 2).await;
    let load = Load::start(stack.url("/"), None);
    write_source(&stack.path(""), "new", "");
    let before = wait_canary(&stack, "the wait for approval", |v| {
        v["waiting"]["gate"] == "approval"
    })
    .await;
    load.finish().await;

    stack.serin.signal("KILL");
    let code = tokio::task::block_in_place(|| stack.serin.wait(LIMIT));
    assert_eq!(code, None, "killed by a signal");
    // While serin is down the output changes again, and is put back: the
    // restart copies what is there (the held revision's bytes) and finds
    // both revisions' copies where the state says.
    write_source(&stack.path(""), "while-down", "");
    build_by_hand(&stack.path(""));
    write_source(&stack.path(""), "new", "");
    build_by_hand(&stack.path(""));
    stack.serin = serin_testkit::Serin::up(
        crate::common::SERIN,
        &stack.path("stack.yaml"),
        &["--watch"],
    );
    stack.wait_ready("qotm", "v1", 2).await;
    stack.wait_ready("qotm", "v1-canary", 2).await;
    let after = canary(&stack).await;
    assert_eq!(after["id"], before["id"], "the same canary: {after:#}");
    let load = Load::start(stack.url("/"), None);
    wait_answers(&load, &["new", "old"]).await;

    approve(&stack).await;
    wait_decision(&stack, "finish").await;
    wait_answers(&load, &["new"]).await;
    load.finish().await;
    eventually("only the promoted build's copy left", async || {
        (build_copies(&stack).len() == 1).then_some(())
    })
    .await;
    stack.stop("TERM").await;
}
