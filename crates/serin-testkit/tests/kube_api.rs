//! The API-server stand-in against the real Kubernetes client (kube-rs):
//! what it answers must be what kube-rs understands, including the failures.

use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{ApiResource, DynamicObject, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client, Config};
use serde_json::json;
use serin_testkit::kube_api::{ENDPOINT_SLICE, HTTP_ROUTE, KubeApi};

async fn client(api: &KubeApi) -> (Client, tempfile_dir::Dir) {
    let dir = tempfile_dir::Dir::new();
    let path = dir.0.join("kubeconfig");
    api.write_kubeconfig(&path, "shop");
    let kubeconfig = Kubeconfig::read_from(&path).unwrap_or_else(|e| panic!("kubeconfig: {e}"));
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .unwrap_or_else(|e| panic!("config: {e}"));
    (
        Client::try_from(config).unwrap_or_else(|e| panic!("client: {e}")),
        dir,
    )
}

mod tempfile_dir {
    pub struct Dir(pub std::path::PathBuf);
    impl Dir {
        pub fn new() -> Self {
            let d = std::env::temp_dir().join(format!(
                "kube-api-test-{}-{:?}",
                std::process::id(),
                std::thread::current().id()
            ));
            std::fs::create_dir_all(&d).unwrap_or_else(|e| panic!("{e}"));
            Self(d)
        }
    }
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

fn slice(name: &str, ip: &str) -> serde_json::Value {
    json!({
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": name,
            "namespace": "shop",
            "labels": { "kubernetes.io/service-name": "cart" },
        },
        "addressType": "IPv4",
        "endpoints": [{ "addresses": [ip], "conditions": { "ready": true } }],
        "ports": [{ "name": "http", "port": 8080, "protocol": "TCP" }],
    })
}

/// The next watcher event (errors skipped: the watcher retries), within 10 s.
async fn next<S>(stream: &mut S) -> Event<EndpointSlice>
where
    S: futures_util::Stream<Item = Result<Event<EndpointSlice>, watcher::Error>> + Unpin,
{
    loop {
        match tokio::time::timeout(Duration::from_secs(10), stream.next()).await {
            Ok(Some(Ok(e))) => return e,
            // Errors while the stand-in is down: the watcher retries.
            Ok(Some(Err(_))) => continue,
            Ok(None) => panic!("watch stream ended"),
            Err(_) => panic!("no watch event within 10 s"),
        }
    }
}

fn name(e: &Event<EndpointSlice>) -> String {
    match e {
        Event::Apply(o) | Event::Delete(o) | Event::InitApply(o) => {
            o.metadata.name.clone().unwrap_or_default()
        }
        Event::Init => "<init>".into(),
        Event::InitDone => "<init-done>".into(),
    }
}

#[tokio::test]
async fn kube_rs_lists_watches_and_recovers_from_drops_410_and_restarts() {
    let api = KubeApi::start();
    api.apply(slice("cart-a", "10.0.0.1"));
    let (client, _dir) = client(&api).await;
    let slices: Api<EndpointSlice> = Api::namespaced(client, "shop");
    let config = watcher::Config::default().labels("kubernetes.io/service-name=cart");
    let mut events = watcher::watcher(slices, config).boxed();

    assert_eq!(name(&next(&mut events).await), "<init>");
    assert_eq!(name(&next(&mut events).await), "cart-a");
    assert_eq!(name(&next(&mut events).await), "<init-done>");

    api.apply(slice("cart-b", "10.0.0.2"));
    let e = next(&mut events).await;
    assert!(matches!(e, Event::Apply(_)), "{}", name(&e));
    assert_eq!(name(&e), "cart-b");

    // A cut watch resumes from its resourceVersion: no relist, nothing lost.
    let lists = api.requests(ENDPOINT_SLICE, "list");
    api.drop_watches();
    api.delete(ENDPOINT_SLICE, "shop", "cart-a");
    let e = next(&mut events).await;
    assert!(matches!(e, Event::Delete(_)), "{}", name(&e));
    assert_eq!(api.requests(ENDPOINT_SLICE, "list"), lists);

    // Compaction: the open watch gets a 410 ERROR event; kube-rs lists again.
    api.compact();
    assert_eq!(name(&next(&mut events).await), "<init>");
    assert_eq!(name(&next(&mut events).await), "cart-b");
    assert_eq!(name(&next(&mut events).await), "<init-done>");
    assert_eq!(api.requests(ENDPOINT_SLICE, "list"), lists + 1);

    // A restart while changes happen and history is compacted: the watch
    // from the old resourceVersion gets a 410 event, and kube-rs lists again.
    api.stop();
    api.apply(slice("cart-c", "10.0.0.3"));
    api.compact();
    api.restart();
    assert_eq!(name(&next(&mut events).await), "<init>");
    let mut listed = vec![
        name(&next(&mut events).await),
        name(&next(&mut events).await),
    ];
    listed.sort();
    assert_eq!(listed, ["cart-b", "cart-c"]);
    assert_eq!(name(&next(&mut events).await), "<init-done>");
    assert!(
        api.request_log().iter().any(|l| l.contains("watch=true")),
        "{:?}",
        api.request_log()
    );

    // Bookmarks are accepted silently; later changes still arrive.
    api.bookmark();
    api.apply(slice("cart-d", "10.0.0.4"));
    assert_eq!(name(&next(&mut events).await), "cart-d");

    // HTTP 410 on a watch from a compacted resourceVersion: kube-rs 4 reports
    // it as a failed watch carrying the 410 Status (and, unlike the event,
    // does not list again by itself: its users must restart the watcher).
    api.gone_as_http(true);
    api.stop();
    api.apply(slice("cart-e", "10.0.0.5"));
    api.compact();
    api.restart();
    let gone = loop {
        match tokio::time::timeout(Duration::from_secs(10), events.next()).await {
            Ok(Some(Err(
                watcher::Error::WatchStartFailed(kube::Error::Api(s))
                | watcher::Error::WatchFailed(kube::Error::Api(s)),
            ))) => break s,
            Ok(Some(_)) => continue,
            other => panic!("no failed watch start: {:?}", other.map(|o| o.is_some())),
        }
    };
    assert_eq!(gone.code, 410);
    assert_eq!(gone.reason, "Expired");
}

#[tokio::test]
async fn kube_rs_writes_httproutes_with_patches_and_conflicts() {
    let api = KubeApi::start();
    let (client, _dir) = client(&api).await;
    let resource = ApiResource {
        group: HTTP_ROUTE.group.into(),
        version: HTTP_ROUTE.version.into(),
        api_version: HTTP_ROUTE.api_version(),
        kind: HTTP_ROUTE.kind.into(),
        plural: HTTP_ROUTE.plural.into(),
    };
    let routes: Api<DynamicObject> = Api::namespaced_with(client, "shop", &resource);
    let route: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": { "name": "cart" },
        "spec": { "rules": [{ "backendRefs": [{ "name": "cart-v1", "port": 80, "weight": 100 }] }] },
    }))
    .unwrap_or_else(|e| panic!("{e}"));

    let created = routes
        .create(&PostParams::default(), &route)
        .await
        .unwrap_or_else(|e| panic!("create: {e}"));
    assert!(routes.create(&PostParams::default(), &route).await.is_err());

    // Server-side apply replaces the spec.
    let apply = json!({
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": { "name": "cart" },
        "spec": { "rules": [{ "backendRefs": [
            { "name": "cart-v1", "port": 80, "weight": 90 },
            { "name": "cart-v2", "port": 80, "weight": 10 },
        ] }] },
    });
    routes
        .patch(
            "cart",
            &PatchParams::apply("test").force(),
            &Patch::Apply(&apply),
        )
        .await
        .unwrap_or_else(|e| panic!("apply: {e}"));
    let got = routes
        .get("cart")
        .await
        .unwrap_or_else(|e| panic!("get: {e}"));
    assert_eq!(got.data["spec"]["rules"][0]["backendRefs"][1]["weight"], 10);
    assert_eq!(got.metadata.generation, Some(2));

    // A replace from the stale (created) version conflicts.
    let err = routes
        .replace("cart", &PostParams::default(), &created)
        .await
        .err()
        .unwrap_or_else(|| panic!("a stale replace succeeded"));
    assert!(
        matches!(&err, kube::Error::Api(s) if s.code == 409),
        "{err}"
    );
    // A merge patch from the current version succeeds.
    let merge = json!({ "metadata": { "resourceVersion": got.metadata.resource_version }, "spec": { "hostnames": ["shop.example"] } });
    routes
        .patch("cart", &PatchParams::default(), &Patch::Merge(&merge))
        .await
        .unwrap_or_else(|e| panic!("merge: {e}"));
    let stored = api.get(HTTP_ROUTE, "shop", "cart").unwrap_or_default();
    assert_eq!(stored["spec"]["hostnames"][0], "shop.example");
    assert_eq!(stored["spec"]["rules"][0]["backendRefs"][1]["weight"], 10);
}

fn resource(kind: serin_testkit::kube_api::Kind) -> ApiResource {
    ApiResource {
        group: kind.group.into(),
        version: kind.version.into(),
        api_version: kind.api_version(),
        kind: kind.kind.into(),
        plural: kind.plural.into(),
    }
}

/// The status subresource: a status write changes only `.status` and is
/// resourceVersion-checked; a write to the object leaves `.status` alone
/// and does not count as a new generation unless the spec changed.
#[tokio::test]
async fn kube_rs_writes_status_through_the_status_subresource_only() {
    let api = KubeApi::start();
    let (client, _dir) = client(&api).await;
    let routes: Api<DynamicObject> = Api::namespaced_with(client, "shop", &resource(HTTP_ROUTE));
    let route: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": { "name": "cart" },
        "spec": { "rules": [] },
        "status": { "parents": ["dropped on create"] },
    }))
    .unwrap_or_else(|e| panic!("{e}"));
    let created = routes
        .create(&PostParams::default(), &route)
        .await
        .unwrap_or_else(|e| panic!("create: {e}"));
    assert_eq!(
        created.data.get("status"),
        None,
        "a create drops the status"
    );

    let status = json!({ "parents": [{ "controllerName": "serin.dev/gateway-controller" }] });
    let patch = json!({
        "metadata": { "resourceVersion": created.metadata.resource_version },
        "status": status,
        "spec": { "hostnames": ["ignored.example"] },
    });
    let written = routes
        .patch_status("cart", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap_or_else(|e| panic!("status patch: {e}"));
    assert_eq!(written.data["status"], status);
    assert_eq!(
        written.data["spec"],
        json!({ "rules": [] }),
        "a status write leaves the spec"
    );
    assert_eq!(written.metadata.generation, Some(1));

    // From the stale version: 409.
    let stale = routes
        .patch_status("cart", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .err()
        .unwrap_or_else(|| panic!("a stale status patch succeeded"));
    assert!(
        matches!(&stale, kube::Error::Api(s) if s.code == 409),
        "{stale}"
    );

    // A replace of the object (and the test's apply) keeps the status.
    let mut current = routes.get("cart").await.unwrap_or_else(|e| panic!("{e}"));
    current.data["spec"]["hostnames"] = json!(["shop.example"]);
    current.data["status"] = json!({ "parents": [] });
    let replaced = routes
        .replace("cart", &PostParams::default(), &current)
        .await
        .unwrap_or_else(|e| panic!("replace: {e}"));
    assert_eq!(replaced.data["status"], status);
    assert_eq!(replaced.metadata.generation, Some(2));
    api.apply(json!({
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": { "name": "cart", "namespace": "shop" },
        "spec": { "rules": [] },
    }));
    let stored = api.get(HTTP_ROUTE, "shop", "cart").unwrap_or_default();
    assert_eq!(stored["status"], status);

    // A PUT of the status from the current version.
    let mut current = routes
        .get_status("cart")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    current.data["status"] = json!({ "parents": [] });
    let put = routes
        .replace_status("cart", &PostParams::default(), &current)
        .await
        .unwrap_or_else(|e| panic!("status put: {e}"));
    assert_eq!(put.data["status"], json!({ "parents": [] }));

    // Kinds without a status subresource have no /status path.
    api.apply(json!({
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "ReferenceGrant",
        "metadata": { "name": "any", "namespace": "shop" },
        "spec": { "from": [], "to": [] },
    }));
    let grants: Api<DynamicObject> = Api::namespaced_with(
        routes.clone().into_client(),
        "shop",
        &resource(serin_testkit::kube_api::REFERENCE_GRANT),
    );
    assert!(grants.get("any").await.is_ok());
    let none = grants.get_status("any").await.err();
    assert!(
        matches!(&none, Some(kube::Error::Api(s)) if s.code == 404),
        "{none:?}"
    );
}

/// Cluster-scoped kinds (GatewayClass, Namespace) live under paths without
/// a namespace; Leases in coordination.k8s.io/v1 with the typed client.
#[tokio::test]
async fn kube_rs_reads_cluster_scoped_kinds_and_writes_leases() {
    use k8s_openapi::api::coordination::v1::Lease;
    use k8s_openapi::api::core::v1::Namespace;
    use serin_testkit::kube_api::{GATEWAY_CLASS, LEASE, NAMESPACE};

    let api = KubeApi::start();
    api.apply(json!({
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": { "name": "team-a", "labels": { "team": "a" } },
    }));
    api.apply(json!({
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "GatewayClass",
        "metadata": { "name": "serin", "namespace": "ignored" },
        "spec": { "controllerName": "serin.dev/gateway-controller" },
    }));
    let (client, _dir) = client(&api).await;
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let listed = namespaces
        .list(&kube::api::ListParams::default().labels("team=a"))
        .await
        .unwrap_or_else(|e| panic!("list namespaces: {e}"));
    assert_eq!(listed.items.len(), 1);
    assert_eq!(listed.items[0].metadata.name.as_deref(), Some("team-a"));
    assert_eq!(listed.items[0].metadata.namespace, None);
    let classes: Api<DynamicObject> = Api::all_with(client.clone(), &resource(GATEWAY_CLASS));
    let class = classes
        .get("serin")
        .await
        .unwrap_or_else(|e| panic!("get class: {e}"));
    assert_eq!(class.metadata.namespace, None);
    assert!(api.get(GATEWAY_CLASS, "", "serin").is_some());
    assert!(api.get(NAMESPACE, "", "team-a").is_some());

    let leases: Api<Lease> = Api::namespaced(client, "shop");
    let lease: Lease = serde_json::from_value(json!({
        "metadata": { "name": "serin-gateway" },
        "spec": { "holderIdentity": "pod-a", "leaseDurationSeconds": 15 },
    }))
    .unwrap_or_else(|e| panic!("{e}"));
    let created = leases
        .create(&PostParams::default(), &lease)
        .await
        .unwrap_or_else(|e| panic!("create lease: {e}"));
    assert!(leases.create(&PostParams::default(), &lease).await.is_err());
    let mut renewed = created.clone();
    if let Some(spec) = renewed.spec.as_mut() {
        spec.lease_transitions = Some(1);
    }
    leases
        .replace("serin-gateway", &PostParams::default(), &renewed)
        .await
        .unwrap_or_else(|e| panic!("renew: {e}"));
    // A second replace from the same (now stale) version loses.
    let lost = leases
        .replace("serin-gateway", &PostParams::default(), &renewed)
        .await
        .err()
        .unwrap_or_else(|| panic!("a stale Lease update succeeded"));
    assert!(
        matches!(&lost, kube::Error::Api(s) if s.code == 409),
        "{lost}"
    );
    let stored = api.get(LEASE, "shop", "serin-gateway").unwrap_or_default();
    assert_eq!(stored["spec"]["leaseTransitions"], 1);
}
