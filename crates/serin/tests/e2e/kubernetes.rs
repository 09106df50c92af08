//! `discovery: kubernetes` and `routes: kubernetes` against the API-server
//! stand-in (serin_testkit::kube_api): the proxy's endpoints follow
//! EndpointSlices (ready ones, split into versions by the per-version
//! Services), its routes and weights follow HTTPRoutes, and both survive
//! cut watches, compaction (410) and API server restarts. The pods are echo
//! upstreams on 127.0.0.1, one EndpointSlice each (a slice has one port for
//! all its endpoints).

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::{Value, json};
use serin_testkit::KubeApi;
use serin_testkit::kube_api::{ENDPOINT_SLICE, HTTP_ROUTE};
use serin_testkit::process::TempDir;

use crate::common::{SERIN, Serin, Upstream, client, header};

pub(crate) const NAMESPACE: &str = "shop";

/// The stand-in, and a kubeconfig pointing at it.
pub(crate) struct Cluster {
    pub(crate) api: KubeApi,
    dir: TempDir,
}

impl Cluster {
    pub(crate) fn start() -> Self {
        let api = KubeApi::start();
        let dir = TempDir::new("serin-kube");
        api.write_kubeconfig(&dir.path().join("kubeconfig"), NAMESPACE);
        Self { api, dir }
    }

    /// `serin proxy` with `config`, finding the stand-in through KUBECONFIG.
    fn proxy(&self, config: &str) -> Serin {
        self.proxy_with_env(config, &[])
    }

    /// [`Self::proxy`] with more environment variables.
    pub(crate) fn proxy_with_env(&self, config: &str, env: &[(&str, &str)]) -> Serin {
        let kubeconfig = self.dir.path().join("kubeconfig").display().to_string();
        let mut all = vec![("KUBECONFIG", kubeconfig.as_str())];
        all.extend_from_slice(env);
        Serin::proxy_with_env(SERIN, config, &all)
    }

    /// The EndpointSlice of one pod (`upstream`) of the Service `service`.
    pub(crate) fn pod(&self, service: &str, upstream: &Upstream, ready: bool) {
        self.api.apply(json!({
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {
                "name": slice_name(service, upstream),
                "namespace": NAMESPACE,
                "labels": { "kubernetes.io/service-name": service },
            },
            "addressType": "IPv4",
            "endpoints": [{
                "addresses": [upstream.addr.ip().to_string()],
                "conditions": { "ready": ready },
                "targetRef": { "kind": "Pod", "name": upstream.name, "namespace": NAMESPACE },
            }],
            "ports": [{ "name": "http", "port": upstream.addr.port(), "protocol": "TCP" }],
        }));
    }

    fn remove_pod(&self, service: &str, upstream: &Upstream) {
        assert!(
            self.api
                .delete(ENDPOINT_SLICE, NAMESPACE, &slice_name(service, upstream))
        );
    }

    /// An HTTPRoute `name` attached to serin's gateway with one rule.
    fn http_route(&self, name: &str, rule: Value) {
        self.api.apply(json!({
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "HTTPRoute",
            "metadata": { "name": name, "namespace": NAMESPACE },
            "spec": {
                "parentRefs": [{ "name": "serin-gateway" }],
                "rules": [rule],
            },
        }));
    }
}

fn slice_name(service: &str, upstream: &Upstream) -> String {
    format!("{service}-{}", upstream.addr.port())
}

/// Backend refs to `cart-v1` and `cart-v2` with these weights.
fn weights(v1: u32, v2: u32) -> Value {
    json!({
        "backendRefs": [
            { "name": "cart-v1", "port": 8080, "weight": v1 },
            { "name": "cart-v2", "port": 8080, "weight": v2 },
        ],
    })
}

const SERVICES: &str = r#"
listeners:
  - name: gw
    address: 127.0.0.1:0
discovery: kubernetes
services:
  - name: cart
    versions:
      - name: v1
      - name: v2
"#;

/// Routes from the file: everything to cart v1.
fn file_routes() -> String {
    format!(
        "{SERVICES}routes:\n  - name: cart\n    rules:\n      - backendRefs: [{{name: cart, version: v1}}]\n"
    )
}

fn kubernetes_routes() -> String {
    format!("{SERVICES}routes: kubernetes\n")
}

/// Who answered 30 requests: upstream names, or the status when serin
/// answered itself.
async fn answers(serin: &Serin, path: &str) -> BTreeSet<String> {
    let http = client();
    let mut seen = BTreeSet::new();
    for _ in 0..30 {
        let resp = http
            .get(format!("{}{path}", serin.url("gw")))
            .send()
            .await
            .unwrap_or_else(|e| panic!("request: {e}"));
        let who = header(&resp, "x-upstream");
        let status = resp.status().as_u16();
        let _ = resp.bytes().await;
        seen.insert(if who.is_empty() {
            status.to_string()
        } else {
            who
        });
    }
    seen
}

/// Polls until exactly `want` answer (up to 30 s: a watch that failed
/// retries with back-off); panics with what answered otherwise.
async fn until_answered(serin: &Serin, path: &str, want: &[&str]) {
    let want: BTreeSet<String> = want.iter().map(|s| (*s).to_string()).collect();
    let mut last = BTreeSet::new();
    for _ in 0..150 {
        last = answers(serin, path).await;
        if last == want {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    serin.dump();
    panic!("{path}: wanted answers from {want:?}, got {last:?}");
}

/// Asserts that exactly `want` answer now.
async fn answered_now(serin: &Serin, path: &str, want: &[&str]) {
    let want: BTreeSet<String> = want.iter().map(|s| (*s).to_string()).collect();
    assert_eq!(answers(serin, path).await, want);
}

#[tokio::test]
async fn endpoints_are_the_ready_endpoints_of_each_versions_service() {
    let cluster = Cluster::start();
    let (a1, a2, b1) = (
        Upstream::start("a1"),
        Upstream::start("a2"),
        Upstream::start("b1"),
    );
    // cart-v2's pod must never get cart v1's traffic.
    cluster.pod("cart-v2", &b1, true);
    cluster.pod("cart-v1", &a1, true);
    let serin = cluster.proxy(&file_routes());
    until_answered(&serin, "/", &["a1"]).await;

    cluster.pod("cart-v1", &a2, false);
    answered_now(&serin, "/", &["a1"]).await;
    cluster.pod("cart-v1", &a2, true);
    until_answered(&serin, "/", &["a1", "a2"]).await;

    // Not ready: out, though the slice is still there.
    cluster.pod("cart-v1", &a1, false);
    until_answered(&serin, "/", &["a2"]).await;

    // No endpoints at all: serin answers 503 itself.
    cluster.remove_pod("cart-v1", &a2);
    until_answered(&serin, "/", &["503"]).await;
    cluster.pod("cart-v1", &a1, true);
    until_answered(&serin, "/", &["a1"]).await;
    assert_eq!(b1.requests(), 0);
}

#[tokio::test]
async fn routes_and_weights_come_from_httproutes_attached_to_the_gateway() {
    let cluster = Cluster::start();
    let (a, b) = (Upstream::start("a"), Upstream::start("b"));
    cluster.pod("cart-v1", &a, true);
    cluster.pod("cart-v2", &b, true);
    cluster.http_route("cart", weights(100, 0));
    // An HTTPRoute of another gateway is not serin's.
    cluster.api.apply(json!({
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": { "name": "other", "namespace": NAMESPACE },
        "spec": {
            "parentRefs": [{ "name": "someone-elses-gateway" }],
            "rules": [{
                "matches": [{ "path": { "type": "PathPrefix", "value": "/other" } }],
                "backendRefs": [{ "name": "cart-v2", "port": 8080 }],
            }],
        },
    }));
    let serin = cluster.proxy(&kubernetes_routes());
    until_answered(&serin, "/", &["a"]).await;
    // /other goes where the serin route sends everything: to a.
    answered_now(&serin, "/other", &["a"]).await;

    // A weight change in the HTTPRoute shifts the traffic.
    cluster.http_route("cart", weights(0, 100));
    until_answered(&serin, "/", &["b"]).await;
    cluster.http_route("cart", weights(50, 50));
    until_answered(&serin, "/", &["a", "b"]).await;

    // Matches and a second route: /v1 pinned to v1.
    cluster.api.apply(json!({
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": { "name": "pinned", "namespace": NAMESPACE },
        "spec": {
            "parentRefs": [{ "group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "serin-gateway" }],
            "rules": [{
                "matches": [{ "path": { "type": "PathPrefix", "value": "/v1" } }],
                "backendRefs": [{ "name": "cart-v1", "port": 8080 }],
            }],
        },
    }));
    until_answered(&serin, "/v1", &["a"]).await;

    // Deleting an HTTPRoute removes its route.
    assert!(cluster.api.delete(HTTP_ROUTE, NAMESPACE, "cart"));
    until_answered(&serin, "/", &["404"]).await;
    answered_now(&serin, "/v1/x", &["a"]).await;
}

#[tokio::test]
async fn a_bad_httproute_is_reported_and_the_current_routes_keep_serving() {
    let cluster = Cluster::start();
    let (a, b) = (Upstream::start("a"), Upstream::start("b"));
    cluster.pod("cart-v1", &a, true);
    cluster.pod("cart-v2", &b, true);
    cluster.http_route("cart", weights(100, 0));
    let serin = cluster.proxy(&kubernetes_routes());
    until_answered(&serin, "/", &["a"]).await;

    let reported = |field: &'static str| {
        let serin = &serin;
        move || {
            serin
                .log_lines()
                .iter()
                .any(|l| l.contains("HTTPRoute shop/cart") && l.contains(field))
        }
    };

    // A value the validator refuses: a weight above the Gateway API's limit.
    cluster.http_route("cart", weights(2_000_000, 0));
    assert!(
        serin_testkit::wait_until(
            Duration::from_secs(20),
            reported("spec.rules[0].backendRefs[0].weight")
        ),
        "no error about the weight"
    );
    answered_now(&serin, "/", &["a"]).await;

    // Fixed: the change applies.
    cluster.http_route("cart", weights(0, 1));
    until_answered(&serin, "/", &["b"]).await;
}

#[tokio::test]
async fn known_endpoints_survive_cut_watches_compaction_and_api_server_restarts() {
    let cluster = Cluster::start();
    let api = &cluster.api;
    let (a, b, c) = (
        Upstream::start("a"),
        Upstream::start("b"),
        Upstream::start("c"),
    );
    cluster.pod("cart-v1", &a, true);
    let serin = cluster.proxy(&file_routes());
    until_answered(&serin, "/", &["a"]).await;

    // A cut watch resumes from where it was: nothing listed again.
    let lists = api.requests(ENDPOINT_SLICE, "list");
    api.drop_watches();
    answered_now(&serin, "/", &["a"]).await;
    cluster.pod("cart-v1", &b, true);
    until_answered(&serin, "/", &["a", "b"]).await;
    assert_eq!(api.requests(ENDPOINT_SLICE, "list"), lists);

    // Compaction: the watch gets a 410 ERROR event and lists again; the
    // endpoints keep serving meanwhile, and later changes apply.
    api.compact();
    answered_now(&serin, "/", &["a", "b"]).await;
    cluster.pod("cart-v1", &b, false);
    until_answered(&serin, "/", &["a"]).await;
    assert!(api.requests(ENDPOINT_SLICE, "list") > lists);

    // The API server goes away: the known endpoints keep serving.
    api.stop();
    answered_now(&serin, "/", &["a"]).await;
    // Changes made while it was away, with the history compacted too, are
    // found when it is back.
    cluster.pod("cart-v1", &c, true);
    api.compact();
    api.restart();
    until_answered(&serin, "/", &["a", "c"]).await;
    cluster.remove_pod("cart-v1", &a);
    until_answered(&serin, "/", &["c"]).await;

    // A server that refuses the compacted resourceVersion with HTTP 410
    // instead of an event: serin lists again too.
    api.gone_as_http(true);
    let lists = api.requests(ENDPOINT_SLICE, "list");
    api.stop();
    cluster.pod("cart-v1", &b, true);
    api.compact();
    api.restart();
    until_answered(&serin, "/", &["b", "c"]).await;
    assert!(api.requests(ENDPOINT_SLICE, "list") > lists);
    cluster.pod("cart-v1", &c, false);
    until_answered(&serin, "/", &["b"]).await;
}

#[tokio::test]
async fn routes_from_httproutes_survive_an_api_server_restart() {
    let cluster = Cluster::start();
    let (a, b) = (Upstream::start("a"), Upstream::start("b"));
    cluster.pod("cart-v1", &a, true);
    cluster.pod("cart-v2", &b, true);
    cluster.http_route("cart", weights(1, 0));
    let serin = cluster.proxy(&kubernetes_routes());
    until_answered(&serin, "/", &["a"]).await;

    cluster.api.stop();
    answered_now(&serin, "/", &["a"]).await;
    cluster.http_route("cart", weights(0, 1));
    cluster.api.compact();
    cluster.api.restart();
    until_answered(&serin, "/", &["b"]).await;
    cluster.api.drop_watches();
    cluster.http_route("cart", weights(1, 0));
    until_answered(&serin, "/", &["a"]).await;
}

/// Gateway API: a backendRef to a Service that does not exist makes its
/// rule answer 500 (ResolvedRefs False, BackendNotFound), and it is
/// reported; the route's other rules and every other route serve.
#[tokio::test]
async fn a_backend_ref_to_a_missing_service_answers_500_for_its_rule_and_the_rest_serves() {
    let cluster = Cluster::start();
    let (a, b) = (Upstream::start("a"), Upstream::start("b"));
    cluster.pod("cart-v1", &a, true);
    cluster.pod("cart-v2", &b, true);
    cluster.api.apply(json!({
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": { "name": "cart", "namespace": NAMESPACE },
        "spec": {
            "parentRefs": [{ "name": "serin-gateway" }],
            "rules": [
                { "backendRefs": [{ "name": "cart-v1", "port": 8080 }] },
                {
                    "matches": [{ "path": { "type": "PathPrefix", "value": "/gone" } }],
                    "backendRefs": [{ "name": "cart-v3", "port": 8080 }],
                },
            ],
        },
    }));
    cluster.api.apply(json!({
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": { "name": "other", "namespace": NAMESPACE },
        "spec": {
            "parentRefs": [{ "name": "serin-gateway" }],
            "rules": [{
                "matches": [{ "path": { "type": "PathPrefix", "value": "/other" } }],
                "backendRefs": [{ "name": "cart-v2", "port": 8080 }],
            }],
        },
    }));
    let serin = cluster.proxy(&kubernetes_routes());
    until_answered(&serin, "/", &["a"]).await;
    answered_now(&serin, "/gone/x", &["500"]).await;
    answered_now(&serin, "/other", &["b"]).await;
    let resp = client()
        .get(format!("{}/gone", serin.url("gw")))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(header(&resp, "x-serin-reason"), "invalid_backend");
    assert!(
        serin
            .log_lines()
            .iter()
            .any(|l| l.contains("HTTPRoute shop/cart")
                && l.contains("spec.rules[1].backendRefs[0].name")
                && l.contains("BackendNotFound")),
        "not reported:\n{}",
        serin.log_lines().join("\n")
    );
}
