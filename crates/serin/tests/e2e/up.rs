//! `serin up` end to end: a stack's services as real supervised processes
//! behind the gateway, controlled with the real `serin ps|scale|restart|
//! logs|apply` commands. Every test checks by pid that no process is left.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use serin_testkit::Serin;
use serin_testkit::process::{TempDir, pid_alive};

use crate::common::{SERIN, client};

/// The longest any one thing may take before a test gives up.
pub(crate) const LIMIT: Duration = Duration::from_secs(30);

/// Keys every test service shares: quick probes and quick restarts, so the
/// tests do not wait out Kubernetes' defaults.
pub(crate) const QUICK: &str = "
    readiness: {httpGet: {path: /ready}, period: 200ms}
    restartBackoff: {initial: 200ms, max: 1s, resetAfter: 10s}
    terminationGracePeriod: 5s";

/// A gateway whose route `/qotm/` goes to the given backends (YAML flow
/// maps), with the retries of the qotm example.
pub(crate) fn qotm_gateway(backends: &[&str]) -> String {
    let refs: String = backends
        .iter()
        .map(|b| format!("            - {b}\n"))
        .collect();
    format!(
        "gateway:
  routes:
    - name: qotm
      rules:
        - matches:
            - path: {{type: PathPrefix, value: /qotm/}}
          filters:
            - type: URLRewrite
              urlRewrite:
                path: {{type: ReplacePrefixMatch, replacePrefixMatch: /}}
          backendRefs:
{refs}          retry: {{attempts: 2, codes: [502, 503], backoff: 25ms}}
"
    )
}

/// The stack of most tests: qotm v1 ×`v1` (all traffic) and nothing else.
pub(crate) fn qotm_v1_stack(v1: u32) -> String {
    format!(
        "{}services:
  - name: qotm
    command: serin-demo{QUICK}
    versions:
      - name: v1
        replicas: {v1}
        args: [qotm, --version, v1]
",
        qotm_gateway(&["{name: qotm, version: v1}"])
    )
}

/// Polls `f` until it gives a value; fails the test with `what` after
/// [`LIMIT`].
pub(crate) async fn eventually<T>(what: &str, mut f: impl AsyncFnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(start.elapsed() < LIMIT, "gave up after {LIMIT:?}: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Text output of a command, for assertions.
pub(crate) fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs `serin ARGS` (a CLI command, not a server) and waits for it.
pub(crate) async fn serin_cli(args: &[&str]) -> Output {
    let mut cmd = tokio::process::Command::new(SERIN);
    cmd.args(args)
        .env_remove("SERIN_ADMIN")
        .env_remove("SERIN_LOG_FORMAT")
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    tokio::time::timeout(LIMIT * 2, cmd.output())
        .await
        .unwrap_or_else(|_| panic!("serin {} did not finish", args.join(" ")))
        .unwrap_or_else(|e| panic!("cannot run serin {}: {e}", args.join(" ")))
}

/// A running `serin up` of a stack file in a folder of its own.
/// (Also used by the tracing and logs tests.)
pub(crate) struct Stack {
    // Dropped first: serin is killed (its children die with it), then the
    // folder goes.
    pub(crate) serin: Serin,
    dir: TempDir,
}

impl Stack {
    /// Writes `yaml` as `stack.yaml` in a new folder and runs `serin up` on
    /// it with the gateway and admin API on free ports.
    pub(crate) fn start(yaml: &str) -> Self {
        let dir = TempDir::new("serin-up");
        std::fs::write(dir.path().join("stack.yaml"), yaml)
            .unwrap_or_else(|e| panic!("write stack: {e}"));
        Self::start_in(dir, &[])
    }

    /// Runs `serin up ARGS` on `stack.yaml` in `dir`.
    pub(crate) fn start_in(dir: TempDir, args: &[&str]) -> Self {
        let serin = Serin::up(SERIN, &dir.path().join("stack.yaml"), args);
        Self { serin, dir }
    }

    /// The text of the runtime's logs of `service` (`serin logs SERVICE`).
    pub(crate) async fn logs_of(&self, service: &str) -> String {
        let url = self.serin.admin_url(&format!(
            "/runtime/logs?service={service}&tail=200&format=text"
        ));
        let resp = client()
            .get(&url)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{url}: {e}"));
        resp.text().await.unwrap_or_default()
    }

    /// Whether the stack's `redis` replica bound its port, by its own word
    /// in its log ("Ready to accept connections"), or found it taken by a
    /// process beside (a port of the stack file cannot be 0). Its
    /// readiness probe cannot tell: it connects to whatever holds the port.
    async fn redis_bound(&self) -> serin_testkit::Bind<()> {
        let deadline = Instant::now() + LIMIT;
        loop {
            let logs = self.logs_of("redis").await;
            if logs.contains("Ready to accept connections") {
                return serin_testkit::Bind::Listening(());
            }
            if serin_testkit::ports::says_address_in_use(&logs) {
                return serin_testkit::Bind::Taken(serin_testkit::ports::last(&logs).to_string());
            }
            assert!(Instant::now() < deadline, "redis did not start:\n{logs}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub(crate) fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `http://GATEWAY` + `path`.
    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}{path}", self.serin.url("gateway"))
    }

    fn admin(&self) -> String {
        self.serin.admin.to_string()
    }

    /// `serin ARGS --admin ADDR`.
    async fn cli(&self, args: &[&str]) -> Output {
        let admin = self.admin();
        let mut all = args.to_vec();
        all.extend(["--admin", &admin]);
        serin_cli(&all).await
    }

    /// Like [`Self::cli`], failing the test unless it succeeds; its stdout.
    pub(crate) async fn cli_ok(&self, args: &[&str]) -> String {
        let out = self.cli(args).await;
        let (stdout, stderr) = text(&out);
        assert!(
            out.status.success(),
            "serin {} failed ({}):\n{stdout}\n{stderr}",
            args.join(" "),
            out.status
        );
        stdout
    }

    /// `GET /runtime/ps`: one JSON object per replica.
    pub(crate) async fn ps(&self) -> Vec<Value> {
        let resp = client()
            .get(self.serin.admin_url("/runtime/ps"))
            .send()
            .await
            .unwrap_or_else(|e| panic!("/runtime/ps: {e}"));
        let v: Value = resp
            .json()
            .await
            .unwrap_or_else(|e| panic!("/runtime/ps: {e}"));
        v.as_array().cloned().unwrap_or_default()
    }

    async fn replica(&self, name: &str) -> Value {
        self.ps()
            .await
            .into_iter()
            .find(|r| r["name"] == name)
            .unwrap_or_else(|| panic!("no replica {name}"))
    }

    /// Waits until `service/version` has exactly `n` replicas, every one
    /// running and ready, and returns them.
    pub(crate) async fn wait_ready(&self, service: &str, version: &str, n: usize) -> Vec<Value> {
        eventually(
            &format!("{service}/{version}: {n} ready replicas"),
            async || {
                let mine: Vec<Value> = self
                    .ps()
                    .await
                    .into_iter()
                    .filter(|r| r["service"] == service && r["version"] == version)
                    .collect();
                let all_ready = mine
                    .iter()
                    .all(|r| r["ready"] == true && r["state"] == "Running" && r["pid"].is_u64());
                (mine.len() == n && all_ready).then_some(mine)
            },
        )
        .await
    }

    /// The pids of every replica process now running.
    async fn pids(&self) -> BTreeSet<u32> {
        self.ps().await.iter().filter_map(pid).collect()
    }

    /// Sends `signal` (INT or TERM) to serin, expects it to stop everything
    /// and exit 0, and checks that no replica process is left.
    pub(crate) async fn stop(mut self, signal: &str) {
        let pids = self.pids().await;
        self.serin.signal(signal);
        let code = tokio::task::block_in_place(|| self.serin.wait(LIMIT));
        assert_eq!(code, Some(0), "serin's exit after SIG{signal}");
        assert!(
            self.serin
                .log_lines()
                .iter()
                .any(|l| l.contains("\"stopped\"")),
            "serin did not say it stopped"
        );
        assert_gone(&pids).await;
    }
}

/// A replica's pid, while its process runs.
pub(crate) fn pid(r: &Value) -> Option<u32> {
    r["pid"].as_u64().and_then(|p| u32::try_from(p).ok())
}

/// Fails unless every process in `pids` ends (zombies count as ended).
pub(crate) async fn assert_gone(pids: &BTreeSet<u32>) {
    eventually(&format!("processes {pids:?} end"), async || {
        pids.iter().all(|p| !pid_alive(*p)).then_some(())
    })
    .await;
}

/// The row of `serin ps` for a replica, split into columns: NAME VERSION
/// STATE READY RESTARTS AGE PORT PID.
fn ps_row<'a>(out: &'a str, name: &str) -> Vec<&'a str> {
    out.lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|cols| cols.first() == Some(&name))
        .unwrap_or_else(|| panic!("no row {name} in serin ps:\n{out}"))
}

/// Clients sending GETs to one URL, without pause, until finished: half
/// on keep-alive connections, half on a new connection each time.
pub(crate) struct Load {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicUsize>,
    failed: Arc<Mutex<Vec<String>>>,
    /// The `version` field of the JSON answers, counted.
    versions: Arc<Mutex<BTreeMap<String, usize>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    pub(crate) fn start(url: String) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicUsize::new(0));
        let failed = Arc::new(Mutex::new(Vec::new()));
        let versions = Arc::new(Mutex::new(BTreeMap::new()));
        let tasks = (0..4)
            .map(|i| {
                let (url, stop, ok, failed, versions) = (
                    url.clone(),
                    stop.clone(),
                    ok.clone(),
                    failed.clone(),
                    versions.clone(),
                );
                tokio::spawn(async move {
                    let keep_alive = i % 2 == 0;
                    let mut http = client();
                    while !stop.load(Ordering::SeqCst) {
                        if !keep_alive {
                            http = serin_config::http_client::builder()
                                .unwrap_or_else(|e| panic!("{e}"))
                                .no_proxy()
                                .pool_max_idle_per_host(0)
                                .timeout(LIMIT)
                                .build()
                                .unwrap_or_else(|e| panic!("{e}"));
                        }
                        let result = match http.get(&url).send().await {
                            Ok(r) => {
                                let status = r.status();
                                match r.text().await {
                                    Ok(body) if status == 200 => Ok(body),
                                    Ok(body) => Err(format!("HTTP {status}: {body}")),
                                    Err(e) => Err(format!("body: {e:?}")),
                                }
                            }
                            Err(e) => Err(format!("{e:?}")),
                        };
                        match result {
                            Ok(body) => {
                                ok.fetch_add(1, Ordering::SeqCst);
                                if let Some(v) = serde_json::from_str::<Value>(&body)
                                    .ok()
                                    .and_then(|v| v["version"].as_str().map(str::to_string))
                                {
                                    *versions
                                        .lock()
                                        .unwrap_or_else(|e| e.into_inner())
                                        .entry(v)
                                        .or_default() += 1;
                                }
                            }
                            Err(e) => failed.lock().unwrap_or_else(|e| e.into_inner()).push(e),
                        }
                        // Steady load that leaves the 2 CPUs some room for
                        // the replicas and their probes.
                        tokio::time::sleep(Duration::from_millis(2)).await;
                    }
                })
            })
            .collect();
        Self {
            stop,
            ok,
            failed,
            versions,
            tasks,
        }
    }

    /// Waits until `n` more requests have succeeded.
    pub(crate) async fn more(&self, n: usize) {
        let target = self.ok.load(Ordering::SeqCst) + n;
        eventually(&format!("{n} more successful requests"), async || {
            (self.ok.load(Ordering::SeqCst) >= target).then_some(())
        })
        .await;
    }

    pub(crate) fn versions(&self) -> BTreeMap<String, usize> {
        self.versions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Forgets the versions seen so far, then fails unless the next 50
    /// answers all come from `version`.
    pub(crate) async fn next_answers_from(&self, version: &str, why: &str) {
        self.reset_versions();
        self.more(50).await;
        assert_eq!(
            self.versions().keys().collect::<Vec<_>>(),
            [version],
            "{why}"
        );
    }

    pub(crate) fn reset_versions(&self) {
        self.versions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }

    /// Stops the clients; fails the test if any request failed. Returns how
    /// many succeeded.
    pub(crate) async fn finish(self) -> usize {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.tasks {
            t.await.unwrap_or_else(|e| panic!("load task: {e}"));
        }
        let failed = self.failed.lock().unwrap_or_else(|e| e.into_inner());
        let ok = self.ok.load(Ordering::SeqCst);
        assert!(
            failed.is_empty(),
            "{} of {} requests failed, first ones: {:#?}",
            failed.len(),
            failed.len() + ok,
            &failed[..failed.len().min(10)]
        );
        assert!(ok > 0, "no request succeeded");
        ok
    }
}

/// `/crash` kills a replica: with two replicas and clients hammering the
/// gateway, no request fails while it is down; it comes back, and `serin
/// ps` counts the restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crashed_replica_comes_back_and_no_request_fails() {
    let stack = Stack::start(&qotm_v1_stack(2));
    let before = stack.wait_ready("qotm", "v1", 2).await;
    let victim = before
        .iter()
        .find(|r| r["name"] == "qotm-v1-0")
        .unwrap_or_else(|| panic!("no qotm-v1-0 in {before:?}"));
    let (old_pid, port) = (
        pid(victim).unwrap_or_else(|| panic!("no pid: {victim}")),
        victim["port"].as_u64().unwrap_or(0),
    );
    let load = Load::start(stack.url("/qotm/"));
    load.more(50).await;

    // Straight to the replica, so that exactly this one dies.
    let resp = client()
        .post(format!("http://127.0.0.1:{port}/crash"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("POST /crash: {e}"));
    assert_eq!(resp.status(), 200);
    assert_gone(&BTreeSet::from([old_pid])).await;
    load.more(50).await;

    let back = eventually("qotm-v1-0 restarted and ready", async || {
        let r = stack.replica("qotm-v1-0").await;
        (r["ready"] == true && pid(&r).is_some_and(|p| p != old_pid)).then_some(r)
    })
    .await;
    assert_eq!(back["restarts"], 1, "{back}");
    assert_eq!(back["port"], port, "a replica keeps its port: {back}");
    assert_eq!(back["last_exit"]["code"], 1, "{back}");
    load.more(50).await;
    load.finish().await;

    let out = stack.cli_ok(&["ps"]).await;
    let row = ps_row(&out, "qotm-v1-0");
    assert_eq!(
        (row[2], row[3], row[4]),
        ("Running", "1/1", "1"),
        "STATE READY RESTARTS of qotm-v1-0 in:\n{out}"
    );
    let row = ps_row(&out, "qotm-v1-1");
    assert_eq!(row[4], "0", "the other replica did not restart:\n{out}");
    stack.stop("TERM").await;
}

/// Runs `yaml`, where replica `ready` becomes ready and replica `unready`
/// runs and answers but never passes readiness; checks that every answer
/// through the gateway comes from `ready` and that `serin ps` shows
/// `unready` not ready.
async fn check_unready_gets_no_traffic(yaml: &str, ready: &str, unready: &str) {
    let stack = Stack::start(yaml);
    let ready_port = eventually(&format!("{ready} ready"), async || {
        let r = stack.replica(ready).await;
        (r["ready"] == true).then(|| r["port"].clone())
    })
    .await;
    // Both answer on their own ports (the unready one just not on /ready).
    for (name, port) in [
        (ready, ready_port),
        (unready, stack.replica(unready).await["port"].clone()),
    ] {
        let direct = format!("http://127.0.0.1:{port}/");
        let answer = eventually(&format!("{name} answers on its port"), async || {
            client().get(&direct).send().await.ok()?.text().await.ok()
        })
        .await;
        assert!(answer.contains(name), "{answer}");
    }

    let http = client();
    for _ in 0..40 {
        let resp = http
            .get(stack.url("/qotm/"))
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET /qotm/: {e}"));
        let status = resp.status();
        let body = resp.text().await.unwrap_or_default();
        assert_eq!(status, 200, "{body}");
        let body: Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"));
        assert_eq!(
            body["hostname"], ready,
            "a replica that is not ready answered: {body}"
        );
    }

    let r = stack.replica(unready).await;
    assert_eq!(r["ready"], false, "{r}");
    assert_eq!(r["state"], "Starting", "{r}");
    assert_eq!(r["restarts"], 0, "{r}");
    let out = stack.cli_ok(&["ps"]).await;
    let row = ps_row(&out, unready);
    assert_eq!((row[2], row[3]), ("Starting", "0/1"), "in:\n{out}");
    let row = ps_row(&out, ready);
    assert_eq!((row[2], row[3]), ("Running", "1/1"), "in:\n{out}");
    stack.stop("TERM").await;
}

/// Of two replicas of a version, the one that is not ready gets no traffic,
/// and `serin ps` shows it not ready.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replica_that_is_not_ready_gets_no_traffic() {
    let yaml = format!(
        "{}services:
  - name: qotm
    command: serin-demo
    # Exec probes run with the replica's environment: qotm-v1-1 never passes.
    readiness:
      exec: {{command: [sh, -c, 'test \"$SERIN_REPLICA\" != qotm-v1-1']}}
      period: 200ms
    restartBackoff: {{initial: 200ms, max: 1s, resetAfter: 10s}}
    versions:
      - name: v1
        replicas: 2
        args: [qotm, --version, v1]
",
        qotm_gateway(&["{name: qotm, version: v1}"])
    );
    check_unready_gets_no_traffic(&yaml, "qotm-v1-0", "qotm-v1-1").await;
}

/// A version whose only replica is not ready gets none of the traffic of
/// its weight: with v1=50 v2=50 and v2 not ready, every answer is v1's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn version_that_is_not_ready_gets_none_of_its_weight() {
    let yaml = format!(
        "{}services:
  - name: qotm
    command: serin-demo{QUICK}
    versions:
      - name: v1
        args: [qotm, --version, v1]
      - name: v2
        args: [qotm, --version, v2, --ready-after, 60s]
",
        qotm_gateway(&[
            "{name: qotm, version: v1, weight: 50}",
            "{name: qotm, version: v2, weight: 50}",
        ])
    );
    check_unready_gets_no_traffic(&yaml, "qotm-v1-0", "qotm-v2-0").await;
}

/// A failing liveness probe restarts the replica.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_liveness_probe_restarts_the_replica() {
    let yaml = format!(
        "{}services:
  - name: qotm
    command: serin-demo{QUICK}
    liveness: {{exec: {{command: [sh, -c, 'exit 3']}}, period: 200ms, failureThreshold: 2}}
    versions:
      - name: v1
        args: [qotm, --version, v1]
",
        qotm_gateway(&["{name: qotm, version: v1}"])
    );
    let stack = Stack::start(&yaml);
    let first = eventually("qotm-v1-0 running", async || {
        pid(&stack.replica("qotm-v1-0").await)
    })
    .await;
    let r = eventually("qotm-v1-0 restarted by its liveness probe", async || {
        let r = stack.replica("qotm-v1-0").await;
        (r["restarts"].as_u64() >= Some(1) && r["last_exit"].is_object()).then_some(r)
    })
    .await;
    assert_eq!(r["last_exit"]["reason"], "LivenessFailed", "{r}");
    assert_gone(&BTreeSet::from([first])).await;
    let pids = stack.pids().await;
    // The replica keeps being restarted; stop it wherever it is.
    stack.stop("TERM").await;
    assert_gone(&pids).await;
}

/// A rolling restart, then a scale up and down, under continuous load: no
/// request is lost, and the old processes are gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_restart_and_scaling_lose_no_request() {
    let stack = Stack::start(&qotm_v1_stack(2));
    let before = stack.wait_ready("qotm", "v1", 2).await;
    let old: BTreeSet<u32> = before.iter().filter_map(pid).collect();
    let revision = before[0]["revision"].as_u64().unwrap_or(0);
    let load = Load::start(stack.url("/qotm/"));
    load.more(50).await;

    let out = stack.cli_ok(&["restart", "qotm/v1", "--wait"]).await;
    assert!(out.contains("rollout complete"), "{out}");
    let after = stack.wait_ready("qotm", "v1", 2).await;
    for r in &after {
        assert!(
            r["revision"].as_u64() > Some(revision),
            "not restarted: {r}"
        );
        assert!(!old.contains(&pid(r).unwrap_or(0)), "old process: {r}");
    }
    assert_gone(&old).await;
    load.more(50).await;

    stack.cli_ok(&["scale", "qotm/v1", "3", "--wait"]).await;
    let three = stack.wait_ready("qotm", "v1", 3).await;
    load.more(50).await;
    stack.cli_ok(&["scale", "qotm", "1", "--wait"]).await;
    let one = stack.wait_ready("qotm", "v1", 1).await;
    let stopped: BTreeSet<u32> = three
        .iter()
        .filter_map(pid)
        .filter(|p| Some(*p) != pid(&one[0]))
        .collect();
    assert_eq!(stopped.len(), 2);
    assert_gone(&stopped).await;
    load.more(50).await;
    load.finish().await;
    stack.stop("TERM").await;
}

/// A stack whose replicas are qotm (serin's own executable) and a plain
/// `sleep`, for the signal tests.
fn signal_stack() -> String {
    format!(
        "{}  - name: sleeper
    command: sh
    args: [-c, 'exec sleep 600']
    readiness: {{exec: {{command: ['true']}}, period: 200ms}}
",
        qotm_v1_stack(2)
    )
}

/// Ctrl-C (SIGINT) stops everything: serin exits 0, no replica is left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_stops_every_process() {
    let stack = Stack::start(&signal_stack());
    stack.wait_ready("qotm", "v1", 2).await;
    stack.wait_ready("sleeper", "v1", 1).await;
    stack.stop("INT").await;
}

/// SIGTERM stops everything: serin exits 0, no replica is left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_every_process() {
    let stack = Stack::start(&signal_stack());
    stack.wait_ready("qotm", "v1", 2).await;
    stack.wait_ready("sleeper", "v1", 1).await;
    stack.stop("TERM").await;
}

/// A client connection that never sent a request (clients open spare ones)
/// does not hold serin's stop: it is closed at once, not after the
/// header-read timeout (here longer than the test waits).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unused_client_connection_does_not_hold_the_stop() {
    let yaml = qotm_v1_stack(1).replacen(
        "gateway:\n",
        "gateway:\n  limits: {headerReadTimeout: 120s}\n",
        1,
    );
    let stack = Stack::start(&yaml);
    stack.wait_ready("qotm", "v1", 1).await;
    let mut unused = tokio::net::TcpStream::connect(stack.serin.listener("gateway"))
        .await
        .unwrap_or_else(|e| panic!("connect: {e}"));
    // The gateway has accepted it before the stop.
    let resp = client()
        .get(stack.url("/qotm/"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET /qotm/: {e}"));
    assert_eq!(resp.status(), 200);
    stack.stop("TERM").await;
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(LIMIT, tokio::io::AsyncReadExt::read(&mut unused, &mut buf))
        .await
        .unwrap_or_else(|_| panic!("the unused connection stays open"));
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
}

/// SIGKILL of serin: its replicas die with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_die_with_a_killed_serin() {
    let mut stack = Stack::start(&signal_stack());
    stack.wait_ready("qotm", "v1", 2).await;
    stack.wait_ready("sleeper", "v1", 1).await;
    let pids = stack.pids().await;
    assert_eq!(pids.len(), 3, "{pids:?}");
    stack.serin.signal("KILL");
    let code = tokio::task::block_in_place(|| stack.serin.wait(LIMIT));
    assert_eq!(code, None, "killed, serin has no exit code");
    assert_gone(&pids).await;
}

/// Fails the test with a clear message when a program the test needs is
/// not installed.
fn require(program: &str) {
    let found = std::process::Command::new(program)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        found,
        "this test needs `{program}` on PATH: run scripts/install-test-deps.sh"
    );
}

/// The counter example counts through a real redis-server that the stack
/// starts itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counter_example_counts_in_redis() {
    require("redis-server");
    require("redis-cli");
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/counter/stack.yaml");
    let yaml =
        std::fs::read_to_string(&example).unwrap_or_else(|e| panic!("{}: {e}", example.display()));
    // The example's Redis port, made a free one (the gateway and admin
    // addresses are given on the command line).
    assert!(yaml.contains("6390"), "the example's Redis port changed");
    let stack =
        serin_testkit::ports::on_free_port_async("the counter example's Redis", async |port| {
            let dir = TempDir::new("serin-up");
            std::fs::write(
                dir.path().join("stack.yaml"),
                yaml.replace("6390", &port.to_string()),
            )
            .unwrap_or_else(|e| panic!("write stack: {e}"));
            let stack = Stack::start_in(dir, &[]);
            stack.redis_bound().await.map(|()| stack)
        })
        .await;
    stack.wait_ready("redis", "v1", 1).await;
    stack.wait_ready("counter", "v1", 2).await;

    let http = client();
    let mut values = Vec::new();
    let mut replicas = BTreeSet::new();
    eventually("both counter replicas answer", async || {
        let resp = http.get(stack.url("/")).send().await.ok()?;
        assert_eq!(resp.status(), 200);
        let body = resp.text().await.ok()?;
        // `[counter-v1-0] Redis counter value=7`
        let (replica, value) = body
            .trim()
            .strip_prefix('[')
            .and_then(|s| s.split_once("] Redis counter value="))
            .unwrap_or_else(|| panic!("unexpected answer: {body}"));
        values.push(
            value
                .parse::<u64>()
                .unwrap_or_else(|e| panic!("{e}: {body}")),
        );
        replicas.insert(replica.to_string());
        (replicas.len() == 2 && values.len() >= 2).then_some(())
    })
    .await;
    assert_eq!(
        replicas,
        BTreeSet::from(["counter-v1-0".to_string(), "counter-v1-1".to_string()])
    );
    assert_eq!(values[0], 1, "a fresh Redis: {values:?}");
    assert!(
        values.windows(2).all(|w| w[1] == w[0] + 1),
        "one count across both replicas: {values:?}"
    );
    let redis = stack.replica("redis-v1-0").await;
    let logs = stack.cli_ok(&["logs", "redis", "--tail", "50"]).await;
    assert!(logs.contains("redis/v1/0 |"), "{logs}");
    assert!(pid(&redis).is_some());
    stack.stop("INT").await;
}

/// Bad stack files give their errors with file:line:column: `serin up`
/// exits non-zero; `serin apply` is rejected and the stack keeps serving as
/// it was; a good changed file then rolls out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_stack_files_are_rejected_and_good_ones_roll_out() {
    // `serin up` of a bad file.
    let dir = TempDir::new("serin-up-bad");
    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "services:
  - name: qotm
    command: serin-demo
    replicas: lots
    restartPolicy: Sometimes
    versions:
      - name: v1
        args: [qotm]
gateway:
  routes:
    - name: qotm
      rules:
        - backendRefs:
            - {name: qotm, version: v3}
",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let out = serin_cli(&[
        "up",
        &bad.display().to_string(),
        "--listen",
        "127.0.0.1:0",
        "--admin",
        "127.0.0.1:0",
    ])
    .await;
    let (_, stderr) = text(&out);
    assert!(!out.status.success(), "serin up of a bad file:\n{stderr}");
    for expected in [
        "bad.yaml:4:15: services[0].replicas: expected a whole number",
        "bad.yaml:5:20: services[0].restartPolicy: unknown value `Sometimes`",
        "bad.yaml:14:37: gateway.routes[0].rules[0].backendRefs[0].version: service `qotm` has no version `v3`",
    ] {
        assert!(stderr.contains(expected), "no `{expected}` in:\n{stderr}");
    }

    // A running stack: v1 takes every request, v2 none.
    let stack_yaml = |v1_args: &str, w1: u32, w2: u32| {
        format!(
            "{}services:
  - name: qotm
    command: serin-demo{QUICK}
    versions:
      - name: v1
        args: [qotm, --version, v1{v1_args}]
      - name: v2
        args: [qotm, --version, v2]
",
            qotm_gateway(&[
                &format!("{{name: qotm, version: v1, weight: {w1}}}"),
                &format!("{{name: qotm, version: v2, weight: {w2}}}"),
            ])
        )
    };
    let stack = Stack::start(&stack_yaml("", 100, 0));
    let v1 = stack.wait_ready("qotm", "v1", 1).await;
    stack.wait_ready("qotm", "v2", 1).await;
    let pids = stack.pids().await;
    let load = Load::start(stack.url("/qotm/"));
    load.more(50).await;

    // `serin apply` of a bad file: rejected, nothing changes.
    let bad_apply = stack.path("bad-apply.yaml");
    let bad_text = stack_yaml(", --delay, 1ms", 0, 100) + "    strategy: {type: Sometimes}\n";
    std::fs::write(&bad_apply, &bad_text).unwrap_or_else(|e| panic!("{e}"));
    let (line, col) = bad_text
        .lines()
        .enumerate()
        .find_map(|(i, l)| l.find("Sometimes").map(|c| (i + 1, c + 1)))
        .unwrap_or_default();
    let out = stack
        .cli(&["apply", &bad_apply.display().to_string()])
        .await;
    let (stdout, stderr) = text(&out);
    assert!(
        !out.status.success(),
        "apply of a bad file:\n{stdout}\n{stderr}"
    );
    let expected = format!(
        "bad-apply.yaml:{line}:{col}: services[0].strategy.type: unknown value `Sometimes`"
    );
    assert!(stderr.contains(&expected), "no `{expected}` in:\n{stderr}");
    load.more(50).await;
    assert_eq!(stack.pids().await, pids, "a rejected apply changed nothing");
    assert_eq!(
        load.versions().keys().collect::<Vec<_>>(),
        ["v1"],
        "weights unchanged"
    );

    // A good changed file: v1's args and the weights change.
    let good = stack.path("good.yaml");
    std::fs::write(&good, stack_yaml(", --delay, 1ms", 0, 100)).unwrap_or_else(|e| panic!("{e}"));
    let out = stack.cli_ok(&["apply", &good.display().to_string()]).await;
    assert!(
        out.lines()
            .any(|l| l.starts_with("rolled") && l.contains("qotm/v1")),
        "{out}"
    );
    let new_v1 = eventually("qotm/v1 rolled out", async || {
        let now: Vec<Value> = stack
            .ps()
            .await
            .into_iter()
            .filter(|r| r["version"] == "v1")
            .collect();
        (now.len() == 1
            && now[0]["ready"] == true
            && now[0]["revision"].as_u64() > v1[0]["revision"].as_u64())
        .then(|| now[0].clone())
    })
    .await;
    assert_ne!(pid(&new_v1), pid(&v1[0]));
    load.more(20).await;
    load.next_answers_from("v2", "the new weights send everything to v2")
        .await;
    load.finish().await;
    assert_gone(&BTreeSet::from_iter(pid(&v1[0]))).await;
    stack.stop("TERM").await;
}

/// `serin logs qotm --tail 5`: the last five lines of qotm's replicas, each
/// with its `service/version/replica |` prefix.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_show_replica_prefixes() {
    let yaml = format!(
        "{}services:
  - name: qotm
    command: serin-demo{QUICK}
    versions:
      - name: v1
        args: [qotm, --version, v1]
      - name: v2
        args: [qotm, --version, v2]
  - name: other
    command: serin-demo
    args: [details]
",
        qotm_gateway(&[
            "{name: qotm, version: v1, weight: 50}",
            "{name: qotm, version: v2, weight: 50}",
        ])
    );
    let stack = Stack::start(&yaml);
    stack.wait_ready("qotm", "v1", 1).await;
    stack.wait_ready("qotm", "v2", 1).await;
    stack.wait_ready("other", "v1", 1).await;
    let http = client();
    for _ in 0..10 {
        let resp = http
            .get(stack.url("/qotm/"))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(resp.status(), 200);
    }

    let out = stack.cli_ok(&["logs", "qotm", "--tail", "5"]).await;
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 5, "{out}");
    for l in &lines {
        assert!(
            l.starts_with("qotm/v1/0 | ") || l.starts_with("qotm/v2/0 | "),
            "no replica prefix: {l}"
        );
    }
    // Every line of one version, the runtime's own ones marked.
    let out = stack.cli_ok(&["logs", "qotm/v2", "--tail", "1000"]).await;
    assert!(out.lines().all(|l| l.starts_with("qotm/v2/0 | ")), "{out}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("qotm/v2/0 | [serin] started (pid ")),
        "{out}"
    );
    let out = stack.cli(&["logs", "nope"]).await;
    assert!(!out.status.success(), "logs of an unknown service");
    stack.stop("TERM").await;
}

/// The text of examples/mesh/stack.yaml.
pub(crate) fn mesh_example() -> String {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/mesh/stack.yaml");
    std::fs::read_to_string(&example).unwrap_or_else(|e| panic!("{}: {e}", example.display()))
}

impl Stack {
    /// Waits until every version of the mesh example has its replica ready.
    pub(crate) async fn wait_mesh_ready(&self) {
        for (service, version) in [
            ("frontend", "v1"),
            ("pinger", "v1"),
            ("pinger", "v2"),
            ("details", "v1"),
        ] {
            self.wait_ready(service, version, 1).await;
        }
    }
}

/// The mesh example: every call goes sidecar to sidecar. The frontend
/// reaches pinger v1 and v2 (a weighted split on its outbound route) and
/// details through its outbound listeners; each hop is counted with the
/// caller and the callee, and the split changes at run time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mesh_example_calls_sidecar_to_sidecar() {
    // A copy, so that run-time weight changes stay out of the example's folder.
    let stack = Stack::start(&mesh_example());
    stack.wait_mesh_ready().await;
    let http = client();
    let mut pingers = BTreeSet::new();
    eventually("the frontend sees pinger v1 and v2", async || {
        let resp = http.get(stack.url("/api")).send().await.ok()?;
        let body: Value = resp.json().await.ok()?;
        assert_eq!(body["ok"], true, "{body}");
        assert_eq!(body["details"]["ok"], true, "{body}");
        pingers.insert(body["pinger"]["body"]["version"].as_str()?.to_string());
        (pingers.len() == 2).then_some(())
    })
    .await;
    let metrics = http
        .get(stack.serin.admin_url("/metrics"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .text()
        .await
        .unwrap_or_default();
    for series in [
        r#"serin_requests_total{route="frontend>pinger",service="pinger",version="v1",code="200"}"#,
        r#"serin_requests_total{route="frontend>pinger",service="pinger",version="v2",code="200"}"#,
        r#"serin_requests_total{route="frontend>details",service="details",version="v1",code="200"}"#,
        r#"serin_requests_total{route="inbound:pinger-v1-0",service="app:pinger-v1-0",version="app",code="200"}"#,
        r#"serin_requests_total{route="inbound:frontend-v1-0",service="app:frontend-v1-0",version="app",code="200"}"#,
    ] {
        assert!(metrics.contains(series), "{series} missing:\n{metrics}");
    }
    // The frontend's split is a route like any other.
    let out = stack
        .cli(&["weights", "set", "frontend>pinger", "v1=0", "v2=100"])
        .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for _ in 0..10 {
        let body: Value = http
            .get(stack.url("/api"))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .json()
            .await
            .unwrap_or_default();
        assert_eq!(body["pinger"]["body"]["version"], "v2", "{body}");
    }
    stack.stop("TERM").await;
}

/// SIGHUP under `serin up` applies the stack file again, as `serin apply`
/// does: a broken edit is refused and the stack keeps running as it was; a
/// good one rolls out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_applies_the_stack_file_again() {
    let stack = Stack::start(&qotm_v1_stack(1));
    stack.wait_ready("qotm", "v1", 1).await;
    let file = stack.path("stack.yaml");
    let logged = |what: &'static str| {
        let lines = stack.serin.log_lines();
        lines.iter().any(|l| l.contains(what)).then_some(())
    };

    std::fs::write(&file, "services: [oops").unwrap_or_else(|e| panic!("write: {e}"));
    stack.serin.signal("HUP");
    eventually("the broken file refused", async || {
        logged("stack file rejected")
    })
    .await;
    stack.wait_ready("qotm", "v1", 1).await;

    std::fs::write(&file, qotm_v1_stack(2)).unwrap_or_else(|e| panic!("write: {e}"));
    stack.serin.signal("HUP");
    stack.wait_ready("qotm", "v1", 2).await;
    eventually("the apply logged", async || {
        logged("stack file applied (SIGHUP)")
    })
    .await;
}
