//! `serin canary run --kubernetes`: a canary whose weights are written to
//! an HTTPRoute in the Kubernetes API-server stand-in (serin-testkit's
//! kube_api, reached through a kubeconfig as a cluster would be) and whose
//! figures come from a real Prometheus scraping a real serin gateway in
//! front of real qotm versions.
//!
//! The gateway here keeps its own weights (v1 and v2 50/50): what is under
//! test is the controller's loop — Prometheus figures in, HTTPRoute weights
//! out, state in the route's annotation — so both versions get traffic
//! whatever the route says. Every write the stand-in received is followed
//! with a watch on the route, in order.

use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use serin_testkit::kube_api::{HTTP_ROUTE, KubeApi};
use serin_testkit::process::TempDir;

use crate::canary::{Load, Prometheus, Qotm, weighted_config};
use crate::common::{SERIN, Serin, client, proxy, wait_until};

const NAMESPACE: &str = "shop";
const STATE_ANNOTATION: &str = "serin.io/canary-state";

/// The route as `serin render kubernetes` writes it: rule 0 splits qotm
/// between its per-version Services; rule 1 is another service's, which the
/// canary must leave alone.
fn http_route() -> Value {
    json!({
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": "qotm", "namespace": NAMESPACE, "labels": {"app.kubernetes.io/part-of": "serin"}},
        "spec": {"rules": [
            {
                "matches": [{"path": {"type": "PathPrefix", "value": "/qotm"}}],
                "backendRefs": [
                    {"name": "qotm-v1", "port": 8080, "weight": 100},
                    {"name": "qotm-v2", "port": 8080, "weight": 0}
                ]
            },
            {
                "matches": [{"path": {"type": "PathPrefix", "value": "/auth"}}],
                "backendRefs": [{"name": "auth-v1", "port": 8080}]
            }
        ]}
    })
}

/// (qotm-v1, qotm-v2) weights of rule 0.
fn weights(route: &Value) -> (u64, u64) {
    let refs = &route["spec"]["rules"][0]["backendRefs"];
    let of = |name: &str| {
        refs.as_array()
            .and_then(|a| a.iter().find(|b| b["name"] == name))
            .and_then(|b| b["weight"].as_u64())
            .unwrap_or(999)
    };
    (of("qotm-v1"), of("qotm-v2"))
}

/// Every distinct (v1, v2) weight pair the stand-in stored, in order, from
/// a watch of the route (writes of the state annotation alone repeat the
/// pair and are left out).
struct WeightLog {
    seen: Arc<Mutex<Vec<(u64, u64)>>>,
    task: tokio::task::JoinHandle<()>,
}

impl WeightLog {
    async fn start(api: &KubeApi) -> Self {
        let url = format!(
            "{}/apis/gateway.networking.k8s.io/v1/namespaces/{NAMESPACE}/httproutes?watch=true&resourceVersion={}",
            api.url(),
            api.resource_version()
        );
        let seen = Arc::new(Mutex::new(Vec::new()));
        let mut resp = client()
            .get(&url)
            .timeout(Duration::from_secs(600))
            .send()
            .await
            .unwrap_or_else(|e| panic!("watch {url}: {e}"));
        let task = tokio::spawn({
            let seen = seen.clone();
            async move {
                let mut pending = Vec::new();
                while let Ok(Some(chunk)) = resp.chunk().await {
                    pending.extend_from_slice(&chunk);
                    while let Some(nl) = pending.iter().position(|b| *b == b'\n') {
                        let line: Vec<u8> = pending.drain(..=nl).collect();
                        let Ok(event) = serde_json::from_slice::<Value>(&line) else {
                            continue;
                        };
                        let pair = weights(&event["object"]);
                        let mut seen = seen.lock().unwrap_or_else(|e| e.into_inner());
                        if seen.last() != Some(&pair) {
                            seen.push(pair);
                        }
                    }
                }
            }
        });
        Self { seen, task }
    }

    fn seen(&self) -> Vec<(u64, u64)> {
        self.seen.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl Drop for WeightLog {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The stand-in with the route, and a kubeconfig pointing at it.
struct Cluster {
    api: KubeApi,
    kubeconfig: std::path::PathBuf,
    _dir: TempDir,
}

impl Cluster {
    fn start() -> Self {
        let api = KubeApi::start();
        api.apply(http_route());
        let dir = TempDir::new("serin-canary-kube");
        let kubeconfig = dir.path().join("kubeconfig");
        api.write_kubeconfig(&kubeconfig, NAMESPACE);
        Self {
            api,
            kubeconfig,
            _dir: dir,
        }
    }

    fn route(&self) -> Value {
        self.api
            .get(HTTP_ROUTE, NAMESPACE, "qotm")
            .unwrap_or_else(|| panic!("the HTTPRoute is gone"))
    }

    /// The canary's state, from the route's annotation.
    fn state(&self) -> Value {
        self.saved_state()
            .unwrap_or_else(|| panic!("no {STATE_ANNOTATION} annotation: {:#}", self.route()))
    }

    fn saved_state(&self) -> Option<Value> {
        let route = self.route();
        let text = route["metadata"]["annotations"][STATE_ANNOTATION].as_str()?;
        let state: Value = serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"));
        Some(state["canaries"]["qotm"].clone())
    }

    /// `serin canary run qotm --to v2 --kubernetes --route qotm ARGS`,
    /// output to `log`.
    fn run(&self, prometheus: &str, args: &[&str], log: &std::path::Path) -> Child {
        let out = std::fs::File::create(log).unwrap_or_else(|e| panic!("{e}"));
        Command::new(SERIN)
            .args(["canary", "run", "qotm", "--to", "v2", "--kubernetes"])
            .args(["--route", "qotm", "--prometheus", prometheus])
            .args(args)
            .env("KUBECONFIG", &self.kubeconfig)
            .env("SERIN_LOG_FORMAT", "text")
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap_or_else(|e| panic!("{e}")))
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("serin canary run: {e}"))
    }
}

/// Waits for `child` to exit (up to three minutes): its exit status.
fn exit_code(child: &mut Child, log: &std::path::Path) -> i32 {
    let mut code = None;
    wait_until(Duration::from_secs(180), || {
        code = child.try_wait().ok().flatten().and_then(|s| s.code());
        code.is_some()
    });
    code.unwrap_or_else(|| {
        let _ = child.kill();
        panic!(
            "serin canary run did not end:\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        )
    })
}

/// Everything a test runs: the stand-in, qotm v1 and v2 behind a gateway
/// that sends each half the traffic (under load), a Prometheus scraping it
/// and the log of the route's weights.
struct Scene {
    cluster: Cluster,
    serin: Serin,
    prometheus: Prometheus,
    load: Load,
    weights: WeightLog,
    _versions: (Qotm, Qotm),
}

impl Scene {
    async fn start(v2_args: &[&str]) -> Self {
        let cluster = Cluster::start();
        let v1 = Qotm::start("v1", &[]);
        let v2 = Qotm::start("v2", v2_args);
        let serin = proxy(&weighted_config(&v1, &v2, (50, 50)));
        let prometheus = Prometheus::start(serin.admin).await;
        let load = Load::start(
            format!("{}/", serin.url("web")),
            4,
            Duration::from_millis(20),
        );
        let weights = WeightLog::start(&cluster.api).await;
        Self {
            cluster,
            serin,
            prometheus,
            load,
            weights,
            _versions: (v1, v2),
        }
    }

    /// `serin canary run …` with the test's steps and windows.
    fn run(&self, log: &std::path::Path) -> Child {
        let args = [&["--steps", "25,50,100"][..], &WINDOWS[..]].concat();
        self.cluster.run(&self.prometheus.url, &args, log)
    }
}

/// Short windows; one failed check rolls back. Latency is not judged (p99s
/// under 1 s count as 1 s): these tests are about errors, and two fast
/// versions on a busy machine differ by noise.
const WINDOWS: [&str; 8] = [
    "--interval",
    "3s",
    "--min-requests",
    "10",
    "--failures",
    "1",
    "--latency-floor",
    "1s",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubernetes_canary_rolls_back_an_erroring_version_in_the_http_route() {
    let scene = Scene::start(&["--error-rate", "0.5"]).await;
    let cluster = &scene.cluster;
    let log = scene.serin.dir.join("canary-run.log");
    let mut run = scene.run(&log);
    let code = exit_code(&mut run, &log);
    scene.load.stop().await;
    let out = std::fs::read_to_string(&log).unwrap_or_default();
    assert_eq!(code, 2, "rolled back (exit 2):\n{out}");
    assert!(out.contains("RolledBack"), "{out}");

    // The stand-in saw the first step, then everything back to v1.
    let seen = &scene.weights;
    assert!(
        wait_until(Duration::from_secs(5), || seen.seen()
            == [(75, 25), (100, 0)]),
        "weights written: {:?}\n{out}",
        seen.seen()
    );
    let route = cluster.route();
    assert_eq!(weights(&route), (100, 0));
    // The other rule is as it was.
    assert_eq!(
        route["spec"]["rules"][1],
        http_route()["spec"]["rules"][1],
        "{route:#}"
    );
    let state = cluster.state();
    assert_eq!(state["phase"], "RolledBack", "{state:#}");
    let a = &state["last_analysis"];
    assert_eq!(a["source"], "prometheus", "{state:#}");
    assert!(a["canary"]["error_rate"].as_f64() > Some(0.2), "{state:#}");
    assert_eq!(a["baseline"]["error_rate"].as_f64(), Some(0.0), "{state:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubernetes_canary_resumes_from_the_route_annotation_after_sigkill_and_promotes() {
    let scene = Scene::start(&[]).await;
    let cluster = &scene.cluster;
    let seen = &scene.weights;

    // The first run passes the first step (weights written, then the
    // state saved), then dies with no chance to say goodbye.
    let first_log = scene.serin.dir.join("canary-run-1.log");
    let mut first = scene.run(&first_log);
    let reached = wait_until(Duration::from_secs(120), || {
        cluster.saved_state().is_some_and(|s| s["step"] == 1)
            && weights(&cluster.route()) == (50, 50)
    });
    let _ = first.kill();
    let _ = first.wait();
    assert!(
        reached,
        "never at step 2: {:?}\n{}",
        seen.seen(),
        std::fs::read_to_string(&first_log).unwrap_or_default()
    );
    let state = cluster.state();
    assert_eq!(state["phase"], "Progressing", "{state:#}");
    assert_eq!(state["step"], 1, "{state:#}");

    // The same command again resumes at step 2 (no new canary, no step 1
    // again) and promotes.
    let second_log = scene.serin.dir.join("canary-run-2.log");
    let mut second = scene.run(&second_log);
    let code = exit_code(&mut second, &second_log);
    let out = std::fs::read_to_string(&second_log).unwrap_or_default();
    assert_eq!(code, 0, "promoted (exit 0):\n{out}");
    assert!(out.contains("resuming"), "{out}");
    assert!(
        wait_until(Duration::from_secs(5), || seen.seen()
            == [(75, 25), (50, 50), (0, 100)]),
        "weights written: {:?}\n{out}",
        seen.seen()
    );
    let resumed = cluster.state();
    assert_eq!(resumed["phase"], "Promoted", "{resumed:#}");
    assert_eq!(resumed["id"], state["id"], "the same canary went on");
    assert_eq!(weights(&cluster.route()), (0, 100));
}
