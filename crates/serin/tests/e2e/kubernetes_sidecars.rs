//! The sidecar pod `serin render kubernetes` makes of examples/mesh, run as
//! processes against the API-server stand-in: each pod's sidecar is a
//! `serin proxy` with the rendered ConfigMap's config, each app is
//! `serin demo` with the rendered args and env, and the callees' endpoints
//! are EndpointSlices of their per-version Services. Only the addresses
//! change: the inbound listener (0.0.0.0:8080 in a pod) and the metrics
//! listener bind 127.0.0.1:0, the app's loopback port and the outbound
//! ports become free loopback ports, the same ones in the config and in
//! the app's env.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};
use serin_testkit::KubeApi;
use serin_testkit::process::TempDir;

use crate::common::{Program, SERIN, Serin, client};

const NAMESPACE: &str = "shop";

/// The objects `serin render kubernetes examples/mesh/stack.yaml` prints.
fn rendered() -> Vec<Value> {
    let stack = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/mesh/stack.yaml");
    let out = std::process::Command::new(SERIN)
        .args(["render", "kubernetes"])
        .arg(&stack)
        .output()
        .unwrap_or_else(|e| panic!("serin render: {e}"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    serde_saphyr::from_multiple(&text).unwrap_or_else(|e| panic!("not YAML: {e}\n{text}"))
}

fn object<'a>(objects: &'a [Value], kind: &str, name: &str) -> &'a Value {
    objects
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name} rendered"))
}

/// The app container of a rendered Deployment.
fn app_container<'a>(objects: &'a [Value], deployment: &str) -> &'a Value {
    &object(objects, "Deployment", deployment)["spec"]["template"]["spec"]["containers"][0]
}

/// One pod as processes: the sidecar and its app.
struct Pod {
    sidecar: Serin,
    _app: Program,
}

/// A loopback port found free per outbound listener of a rendered sidecar
/// config: rendered address → the address used here. Another test can take
/// one before the sidecar binds it; [`start_pod`] then tries again.
fn outbound_ports(config: &Value) -> BTreeMap<String, String> {
    config["listeners"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|l| l["address"].as_str())
        .filter(|a| a.starts_with("127.0.0.1:"))
        .map(|a| {
            let port = serin_testkit::ports::free_port();
            (a.to_string(), format!("127.0.0.1:{port}"))
        })
        .collect()
}

/// The rendered config with its addresses moved (see the module's doc).
fn rewrite(config: &Value, outbound: &BTreeMap<String, String>, app: SocketAddr) -> String {
    let mut c = config.clone();
    c["admin"]["metricsAddress"] = json!("127.0.0.1:0");
    for l in c["listeners"].as_array_mut().into_iter().flatten() {
        let rendered = l["address"].as_str().unwrap_or_default().to_string();
        l["address"] = json!(
            outbound
                .get(&rendered)
                .cloned()
                .unwrap_or("127.0.0.1:0".into())
        );
    }
    for s in c["services"].as_array_mut().into_iter().flatten() {
        for v in s["versions"].as_array_mut().into_iter().flatten() {
            if v.get("endpoints").is_some() {
                assert_eq!(v["endpoints"], json!(["127.0.0.1:8081"]), "the app's port");
                v["endpoints"] = json!([app.to_string()]);
            }
        }
    }
    serde_saphyr::to_string(&c).unwrap_or_else(|e| panic!("{e}"))
}

/// Starts the rendered pod of `deployment` (sidecar ConfigMap `config`).
/// The outbound listeners' ports are fixed in both the sidecar's config
/// and the app's environment, so they are found free and, when the sidecar
/// finds one taken by a test beside, the pod is started again on others
/// (`serin_testkit::ports`' rule for fixed ports).
fn start_pod(objects: &[Value], deployment: &str, config: &str, kubeconfig: &Path) -> Pod {
    let text = object(objects, "ConfigMap", config)["data"]["serin.yaml"]
        .as_str()
        .unwrap_or_else(|| panic!("{config} has no serin.yaml"));
    let rendered: Value = serde_saphyr::from_str(text).unwrap_or_else(|e| panic!("{e}"));
    let mut seen = Vec::new();
    for _ in 0..serin_testkit::ports::TRIES {
        match try_start_pod(objects, deployment, &rendered, kubeconfig) {
            serin_testkit::ports::Bind::Listening(pod) => return pod,
            serin_testkit::ports::Bind::Taken(log) => seen.push(log),
        }
    }
    panic!("{deployment}'s sidecar found its outbound ports taken each time:\n{seen:#?}")
}

/// One try of [`start_pod`] on outbound ports found free now.
fn try_start_pod(
    objects: &[Value],
    deployment: &str,
    rendered: &Value,
    kubeconfig: &Path,
) -> serin_testkit::ports::Bind<Pod> {
    let outbound = outbound_ports(rendered);
    let c = app_container(objects, deployment);
    let args: Vec<String> = c["args"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|a| a.as_str().map(str::to_string))
        .collect();
    assert_eq!(args[args.len() - 2..], ["--host", "127.0.0.1"], "{args:?}");
    let env: Vec<(String, String)> = c["env"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| {
            Some((
                e["name"].as_str()?.to_string(),
                e["value"].as_str()?.to_string(),
            ))
        })
        .filter(|(name, _)| name != "PORT")
        .map(|(name, value)| {
            let value = outbound
                .iter()
                .fold(value, |v, (from, to)| v.replace(from, to));
            (name, value)
        })
        .collect();
    let app = Program::start(
        &format!("{deployment}'s app"),
        |port| {
            let mut cmd = std::process::Command::new(SERIN);
            cmd.arg("demo").args(&args).envs(env.clone());
            cmd.env("PORT", port.to_string());
            cmd
        },
        |log, port| serin_testkit::ports::logged_listening(log, "listening", "addr", port),
    );
    let config = rewrite(rendered, &outbound, app.addr());
    let kubeconfig = kubeconfig.display().to_string();
    Serin::try_proxy_with_env(SERIN, &config, &[("KUBECONFIG", &kubeconfig)])
        .map(|sidecar| Pod { sidecar, _app: app })
}

/// The EndpointSlice of one pod of `service` at `addr`.
fn endpoint_slice(api: &KubeApi, service: &str, addr: SocketAddr) {
    api.apply(json!({
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": format!("{service}-{}", addr.port()),
            "namespace": NAMESPACE,
            "labels": { "kubernetes.io/service-name": service },
        },
        "addressType": "IPv4",
        "endpoints": [{ "addresses": [addr.ip().to_string()], "conditions": { "ready": true } }],
        "ports": [{ "name": "http", "port": addr.port(), "protocol": "TCP" }],
    }));
}

async fn metrics(sidecar: &Serin) -> String {
    let addr = sidecar.logged_address("metrics listening");
    crate::common::metrics_at(&format!("http://{addr}/metrics")).await
}

/// frontend → pinger (v1 and v2, each a pod with its sidecar) and details:
/// a request on the frontend's inbound listener reaches its app, the app's
/// calls go out through its outbound listeners to the callees' sidecars
/// found by EndpointSlices, and each sidecar's metrics listener counts the
/// hops as `serin up` does. The kubelet's probe path answers through the
/// sidecar.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rendered_sidecar_pod_calls_sidecar_to_sidecar() {
    let objects = rendered();
    let api = KubeApi::start();
    let dir = TempDir::new("serin-kube-sidecars");
    let kubeconfig = dir.path().join("kubeconfig");
    api.write_kubeconfig(&kubeconfig, NAMESPACE);
    let pinger_v1 = start_pod(&objects, "pinger-v1", "pinger-sidecar", &kubeconfig);
    let pinger_v2 = start_pod(&objects, "pinger-v2", "pinger-sidecar", &kubeconfig);
    let details = start_pod(&objects, "details-v1", "details-sidecar", &kubeconfig);
    endpoint_slice(&api, "pinger-v1", pinger_v1.sidecar.listener("in:pinger"));
    endpoint_slice(&api, "pinger-v2", pinger_v2.sidecar.listener("in:pinger"));
    endpoint_slice(&api, "details-v1", details.sidecar.listener("in:details"));
    let frontend = start_pod(&objects, "frontend-v1", "frontend-sidecar", &kubeconfig);
    let inbound = frontend.sidecar.url("in:frontend");

    let http = client();
    let mut pingers = BTreeSet::new();
    let mut last = Value::Null;
    for _ in 0..150 {
        if let Ok(resp) = http.get(format!("{inbound}/api")).send().await {
            last = resp.json().await.unwrap_or_default();
            if last["ok"] == true
                && last["details"]["ok"] == true
                && let Some(v) = last["pinger"]["body"]["version"].as_str()
            {
                pingers.insert(v.to_string());
            }
        }
        if pingers.len() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    if pingers.len() != 2 {
        frontend.sidecar.dump();
        panic!("the frontend did not reach pinger v1 and v2: saw {pingers:?}, last {last}");
    }

    // The readiness probe as the kubelet makes it: its path, on the pod's
    // port (the inbound listener).
    let probe = &app_container(&objects, "frontend-v1")["readinessProbe"]["httpGet"];
    assert_eq!(probe["port"], 8080);
    let path = probe["path"].as_str().unwrap_or_default();
    let ready = http.get(format!("{inbound}{path}")).send().await;
    assert_eq!(ready.map(|r| r.status().as_u16()).ok(), Some(200));

    let text = metrics(&frontend.sidecar).await;
    for series in [
        r#"serin_requests_total{route="frontend>pinger",service="pinger",version="v1",code="200"}"#,
        r#"serin_requests_total{route="frontend>pinger",service="pinger",version="v2",code="200"}"#,
        r#"serin_requests_total{route="frontend>details",service="details",version="v1",code="200"}"#,
        r#"serin_requests_total{route="inbound:frontend",service="app:frontend",version="app",code="200"}"#,
    ] {
        assert!(text.contains(series), "{series} missing:\n{text}");
    }
    let text = metrics(&pinger_v1.sidecar).await;
    let series = r#"serin_requests_total{route="inbound:pinger",service="app:pinger",version="app",code="200"}"#;
    assert!(text.contains(series), "{series} missing:\n{text}");
}
