//! serin as a Gateway API implementation, against the API-server stand-in
//! (serin_testkit::kube_api) with two real gateway processes: the one that
//! holds the Lease writes HTTPRoute and Gateway status, the other does not
//! until it takes the Lease over; routes from namespaces the Gateway's
//! `allowedRoutes` does not admit are refused (and not served), and a
//! backendRef into another namespace needs a ReferenceGrant (500 until
//! then).

use std::time::Duration;

use crate::common::{Serin, Upstream, client, header};
use crate::kubernetes::{Cluster, NAMESPACE};
use serde_json::{Value, json};
use serin_testkit::kube_api::{
    GATEWAY, GATEWAY_CLASS, HTTP_ROUTE, LEASE, NAMESPACE as NAMESPACES, REFERENCE_GRANT,
};

const CONTROLLER: &str = "serin.dev/gateway-controller";
/// The label the Gateway's listener admits namespaces by.
const ACCESS_LABEL: &str = "serin.dev/gateway-access";

const CONFIG: &str = r#"
listeners:
  - name: gw
    address: 127.0.0.1:0
discovery: kubernetes
services:
  - name: cart
    versions:
      - name: v1
      - name: v2
routes: kubernetes
"#;

impl Cluster {
    /// A gateway replica named `pod` (its Lease identity).
    fn gateway(&self, pod: &str) -> Serin {
        self.proxy_with_env(CONFIG, &[("POD_NAME", pod)])
    }

    fn namespace(&self, name: &str, admitted: bool) {
        let labels = if admitted {
            json!({ ACCESS_LABEL: "true" })
        } else {
            json!({})
        };
        self.api.apply(json!({
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": { "name": name, "labels": labels },
        }));
    }

    /// An HTTPRoute in `namespace` on serin's Gateway: `path` to `backend`.
    fn route(&self, namespace: &str, name: &str, path: &str, backend: Value) {
        self.api.apply(json!({
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "HTTPRoute",
            "metadata": { "name": name, "namespace": namespace },
            "spec": {
                "parentRefs": [{ "name": "serin-gateway", "namespace": NAMESPACE }],
                "rules": [{
                    "matches": [{ "path": { "type": "PathPrefix", "value": path } }],
                    "backendRefs": [backend],
                }],
            },
        }));
    }

    /// serin's `type` condition of the route: (status, reason).
    fn condition(&self, namespace: &str, name: &str, type_: &str) -> Option<(String, String)> {
        let route = self.api.get(HTTP_ROUTE, namespace, name)?;
        let parents = route.pointer("/status/parents")?.as_array()?.clone();
        let ours = parents.iter().find(|p| p["controllerName"] == CONTROLLER)?;
        let c = ours["conditions"]
            .as_array()?
            .iter()
            .find(|c| c["type"] == type_)?;
        Some((
            c["status"].as_str()?.to_string(),
            c["reason"].as_str()?.to_string(),
        ))
    }

    fn lease_holder(&self) -> Option<String> {
        let lease = self.api.get(LEASE, NAMESPACE, "serin-gateway")?;
        lease["spec"]["holderIdentity"].as_str().map(str::to_string)
    }

    /// How many status writes the stand-in has served.
    fn status_writes(&self) -> usize {
        self.api
            .request_log()
            .iter()
            .filter(|l| (l.starts_with("PATCH") || l.starts_with("PUT")) && l.contains("/status"))
            .count()
    }
}

/// Polls `check` for up to 60 s (the status follows watches and a Lease
/// renewed every 2 s; a take-over waits out the 15 s Lease).
async fn until(what: &str, gateways: &[&Serin], mut check: impl FnMut() -> bool) {
    for _ in 0..300 {
        if check() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for g in gateways {
        g.dump();
    }
    panic!("{what}: not reached");
}

/// The status code, or the upstream that answered.
async fn answer(serin: &Serin, path: &str) -> String {
    let resp = client()
        .get(format!("{}{path}", serin.url("gw")))
        .send()
        .await
        .unwrap_or_else(|e| panic!("request: {e}"));
    let who = header(&resp, "x-upstream");
    let status = resp.status().as_u16();
    let _ = resp.bytes().await;
    if who.is_empty() {
        status.to_string()
    } else {
        who
    }
}

/// Polls until `path` is answered by `want` (an upstream or a status).
async fn until_answer(serin: &Serin, path: &str, want: &str) {
    let mut last = String::new();
    for _ in 0..150 {
        last = answer(serin, path).await;
        if last == want {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    serin.dump();
    panic!("{path}: wanted {want}, got {last}");
}

fn wrote_status(serin: &Serin) -> bool {
    serin
        .log_lines()
        .iter()
        .any(|l| l.contains("Gateway API status written"))
}

fn pair(status: &str, reason: &str) -> Option<(String, String)> {
    Some((status.to_string(), reason.to_string()))
}

#[tokio::test]
async fn kubernetes_status_is_written_by_the_lease_holder_and_agrees_with_what_is_served() {
    let cluster = Cluster::start();
    let (a, b) = (Upstream::start("a"), Upstream::start("b"));
    cluster.pod("cart-v1", &a, true);
    cluster.pod("cart-v2", &b, true);
    cluster.namespace(NAMESPACE, true);
    cluster.namespace("team-a", true);
    cluster.namespace("team-b", false);
    cluster.api.apply(json!({
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "GatewayClass",
        "metadata": { "name": "serin" },
        "spec": { "controllerName": CONTROLLER },
    }));
    cluster.api.apply(json!({
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "Gateway",
        "metadata": { "name": "serin-gateway", "namespace": NAMESPACE },
        "spec": {
            "gatewayClassName": "serin",
            "listeners": [{
                "name": "http",
                "port": 80,
                "protocol": "HTTP",
                "allowedRoutes": { "namespaces": {
                    "from": "Selector",
                    "selector": { "matchLabels": { ACCESS_LABEL: "true" } },
                } },
            }],
        },
    }));
    let local = json!({ "name": "cart-v1", "port": 8080 });
    let cross = json!({ "name": "cart-v2", "namespace": NAMESPACE, "port": 8080 });
    cluster.route(NAMESPACE, "cart", "/cart", local);
    cluster.route("team-b", "intruder", "/intruder", cross.clone());
    cluster.route("team-a", "borrow", "/borrow", cross);

    // The first replica takes the Lease; the second finds it held.
    let first = cluster.gateway("gateway-a");
    until("gateway-a holds the Lease", &[&first], || {
        cluster.lease_holder().as_deref() == Some("gateway-a")
    })
    .await;
    let second = cluster.gateway("gateway-b");
    let both = [&first, &second];

    // In the gateway's namespace: accepted, resolved, served.
    until("shop/cart accepted", &both, || {
        cluster.condition(NAMESPACE, "cart", "Accepted") == pair("True", "Accepted")
    })
    .await;
    assert_eq!(
        cluster.condition(NAMESPACE, "cart", "ResolvedRefs"),
        pair("True", "ResolvedRefs")
    );
    // From a namespace the listener does not admit: refused, not served.
    until("team-b/intruder refused", &both, || {
        cluster.condition("team-b", "intruder", "Accepted")
            == pair("False", "NotAllowedByListeners")
    })
    .await;
    // From an admitted namespace, into the gateway's without a grant:
    // accepted, but the backendRef is not permitted and answers 500.
    until("team-a/borrow not permitted", &both, || {
        cluster.condition("team-a", "borrow", "ResolvedRefs") == pair("False", "RefNotPermitted")
    })
    .await;
    assert_eq!(
        cluster.condition("team-a", "borrow", "Accepted"),
        pair("True", "Accepted")
    );
    for gateway in both {
        until_answer(gateway, "/cart", "a").await;
        until_answer(gateway, "/intruder", "404").await;
        until_answer(gateway, "/borrow", "500").await;
    }

    // The Gateway: accepted, two routes attached to its listener.
    until("Gateway status", &both, || {
        let gw = cluster.api.get(GATEWAY, NAMESPACE, "serin-gateway");
        gw.is_some_and(|g| {
            g.pointer("/status/listeners/0/attachedRoutes") == Some(&json!(2))
                && g.pointer("/status/conditions/0/status") == Some(&json!("True"))
        })
    })
    .await;
    let gw = cluster
        .api
        .get(GATEWAY, NAMESPACE, "serin-gateway")
        .unwrap_or_default();
    assert_eq!(gw["status"]["listeners"][0]["name"], "http");
    assert_eq!(
        gw["status"]["listeners"][0]["supportedKinds"][0]["kind"],
        "HTTPRoute"
    );
    // The GatewayClass of serin's controller is accepted.
    until("GatewayClass accepted", &both, || {
        let class = cluster.api.get(GATEWAY_CLASS, "", "serin");
        class.is_some_and(|c| {
            c.pointer("/status/conditions/0/type") == Some(&json!("Accepted"))
                && c.pointer("/status/conditions/0/status") == Some(&json!("True"))
        })
    })
    .await;

    // A ReferenceGrant in the gateway's namespace lets team-a's route in.
    cluster.api.apply(json!({
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "ReferenceGrant",
        "metadata": { "name": "team-a-to-cart", "namespace": NAMESPACE },
        "spec": {
            "from": [{ "group": "gateway.networking.k8s.io", "kind": "HTTPRoute", "namespace": "team-a" }],
            "to": [{ "group": "", "kind": "Service" }],
        },
    }));
    until("team-a/borrow resolved", &both, || {
        cluster.condition("team-a", "borrow", "ResolvedRefs") == pair("True", "ResolvedRefs")
    })
    .await;
    for gateway in both {
        until_answer(gateway, "/borrow", "b").await;
    }

    // Only the Lease holder wrote; once right, the status is not rewritten.
    assert!(wrote_status(&first), "the holder wrote no status");
    assert!(!wrote_status(&second), "the other replica wrote status");
    assert_eq!(cluster.lease_holder().as_deref(), Some("gateway-a"));
    let writes = cluster.status_writes();
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(
        cluster.status_writes(),
        writes,
        "status rewritten while right"
    );

    // The holder renews its Lease (a checked update; the other replica's
    // looks change nothing).
    until("gateway-a renews the Lease", &both, || {
        let lease = cluster.api.get(LEASE, NAMESPACE, "serin-gateway");
        lease.is_some_and(|l| {
            l["spec"]["holderIdentity"] == "gateway-a"
                && l["spec"]["renewTime"] != l["spec"]["acquireTime"]
        })
    })
    .await;

    // The holder goes away: the other takes the Lease over when it
    // expires, and writes from then on.
    first.signal("KILL");
    until("gateway-b takes the Lease over", &both, || {
        cluster.lease_holder().as_deref() == Some("gateway-b")
    })
    .await;
    let lease = cluster
        .api
        .get(LEASE, NAMESPACE, "serin-gateway")
        .unwrap_or_default();
    assert_eq!(lease["spec"]["leaseTransitions"], 1);
    assert!(
        cluster
            .api
            .delete(REFERENCE_GRANT, NAMESPACE, "team-a-to-cart")
    );
    until("team-a/borrow not permitted again", &[&second], || {
        cluster.condition("team-a", "borrow", "ResolvedRefs") == pair("False", "RefNotPermitted")
    })
    .await;
    assert!(wrote_status(&second));
    assert_eq!(answer(&second, "/borrow").await, "500");

    // A Gateway of another controller's class is not serin's: no route
    // attaches (serin's entries go, nothing is served).
    cluster.api.apply(json!({
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "GatewayClass",
        "metadata": { "name": "other" },
        "spec": { "controllerName": "example.com/other-controller" },
    }));
    let mut gateway = cluster
        .api
        .get(GATEWAY, NAMESPACE, "serin-gateway")
        .unwrap_or_default();
    gateway["spec"]["gatewayClassName"] = json!("other");
    cluster.api.apply(gateway);
    until("shop/cart no longer serin's", &[&second], || {
        cluster
            .api
            .get(HTTP_ROUTE, NAMESPACE, "cart")
            .is_some_and(|r| {
                r.pointer("/status/parents")
                    .and_then(Value::as_array)
                    .is_some_and(|p| p.iter().all(|e| e["controllerName"] != CONTROLLER))
            })
    })
    .await;
    until_answer(&second, "/cart", "404").await;
    let class = cluster
        .api
        .get(GATEWAY_CLASS, "", "other")
        .unwrap_or_default();
    assert_eq!(
        class.get("status"),
        None,
        "another controller's class is left alone"
    );
}

/// A gateway whose RBAC is the namespaced Role only (an older render, no
/// ClusterRole) still serves and reports the HTTPRoutes of its own
/// namespace, and says what it cannot see.
#[tokio::test]
async fn kubernetes_status_without_cluster_wide_access_covers_the_gateways_namespace() {
    let cluster = Cluster::start();
    for kind in [HTTP_ROUTE, REFERENCE_GRANT, NAMESPACES, GATEWAY_CLASS] {
        cluster.api.forbid_everywhere(kind);
    }
    let a = Upstream::start("a");
    cluster.pod("cart-v1", &a, true);
    cluster.route(
        NAMESPACE,
        "cart",
        "/cart",
        json!({ "name": "cart-v1", "port": 8080 }),
    );
    let gateway = cluster.gateway("gateway-a");
    until_answer(&gateway, "/cart", "a").await;
    until("shop/cart accepted", &[&gateway], || {
        cluster.condition(NAMESPACE, "cart", "Accepted") == pair("True", "Accepted")
    })
    .await;
    assert!(
        gateway
            .log_lines()
            .iter()
            .any(|l| l.contains("may not list httproutes in every namespace")),
        "the missing permission is not reported"
    );
}
