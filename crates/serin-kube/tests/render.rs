//! Renders examples/qotm and a richer stack, parses every object back into
//! the typed k8s-openapi and gateway-api structures (strictly: nothing may be
//! dropped or changed on the way), checks that the objects fit together, and
//! validates them with `kubernetes-validate --strict`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use gateway_api::experimental::httproutes::HttpRoute;
use gateway_api::gatewayclasses::GatewayClass;
use gateway_api::gateways::Gateway;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Container, Probe, Secret, Service, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use serin_config::stack::StackFile;
use serin_kube::{Manifests, RenderError, RenderOptions};

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn qotm_path() -> PathBuf {
    repo_root().join("examples/qotm/stack.yaml")
}

fn mesh_path() -> PathBuf {
    repo_root().join("examples/mesh/stack.yaml")
}

fn rich_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/rich/stack.yaml")
}

fn rich_options() -> RenderOptions {
    RenderOptions {
        image_repo: "registry.example.com/team".into(),
        tag: "1.2.3".into(),
        namespace: Some("shop".into()),
    }
}

fn load(path: &Path) -> StackFile {
    serin_config::stack::load_stack_file(path)
        .unwrap_or_else(|e| panic!("{} does not load:\n{e}", path.display()))
}

fn render(path: &Path, options: &RenderOptions) -> (StackFile, Manifests, String) {
    let stack = load(path);
    let manifests = serin_kube::render(&stack, options)
        .unwrap_or_else(|e| panic!("{} does not render: {e}", path.display()));
    let yaml = manifests
        .to_yaml()
        .unwrap_or_else(|e| panic!("cannot write YAML: {e}"));
    (stack, manifests, yaml)
}

/// Every object of a YAML stream, typed, each checked to parse strictly.
#[derive(Default)]
struct Typed {
    accounts: Vec<ServiceAccount>,
    roles: Vec<Role>,
    bindings: Vec<RoleBinding>,
    cluster_roles: Vec<ClusterRole>,
    cluster_bindings: Vec<ClusterRoleBinding>,
    classes: Vec<GatewayClass>,
    gateways: Vec<Gateway>,
    config_maps: Vec<ConfigMap>,
    secrets: Vec<Secret>,
    services: Vec<Service>,
    deployments: Vec<Deployment>,
    routes: Vec<HttpRoute>,
    /// (kind, name) in stream order.
    order: Vec<(String, String)>,
}

/// Parses `value` as `T`, then writes it back: the two must be equal, so a
/// field the type does not know (dropped by serde) or a value of the wrong
/// shape fails here.
fn strict<T: DeserializeOwned + Serialize>(value: &Value) -> T {
    let typed: T = serde_json::from_value(value.clone()).unwrap_or_else(|e| {
        panic!(
            "does not parse as {}: {e}\n{value:#}",
            std::any::type_name::<T>()
        )
    });
    let back = serde_json::to_value(&typed).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        back,
        *value,
        "{} changed the object on a round trip (an unknown or mistyped field?)",
        std::any::type_name::<T>()
    );
    typed
}

fn parse(yaml: &str) -> Typed {
    assert!(yaml.starts_with("---\n"), "a stream starts with ---");
    let docs: Vec<Value> =
        serde_saphyr::from_multiple(yaml).unwrap_or_else(|e| panic!("not YAML: {e}\n{yaml}"));
    let mut t = Typed::default();
    for d in &docs {
        let api = d["apiVersion"].as_str().unwrap_or_default().to_string();
        let kind = d["kind"].as_str().unwrap_or_default().to_string();
        let name = d["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        match (api.as_str(), kind.as_str()) {
            ("v1", "ServiceAccount") => t.accounts.push(strict(d)),
            ("rbac.authorization.k8s.io/v1", "Role") => t.roles.push(strict(d)),
            ("rbac.authorization.k8s.io/v1", "RoleBinding") => t.bindings.push(strict(d)),
            ("rbac.authorization.k8s.io/v1", "ClusterRole") => t.cluster_roles.push(strict(d)),
            ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding") => {
                t.cluster_bindings.push(strict(d));
            }
            ("gateway.networking.k8s.io/v1", "GatewayClass") => t.classes.push(strict(d)),
            ("gateway.networking.k8s.io/v1", "Gateway") => t.gateways.push(strict(d)),
            ("v1", "ConfigMap") => t.config_maps.push(strict(d)),
            ("v1", "Secret") => t.secrets.push(strict(d)),
            ("v1", "Service") => t.services.push(strict(d)),
            ("apps/v1", "Deployment") => t.deployments.push(strict(d)),
            ("gateway.networking.k8s.io/v1", "HTTPRoute") => t.routes.push(strict(d)),
            other => panic!("unexpected object {other:?}"),
        }
        t.order.push((kind, name));
    }
    t
}

impl Typed {
    fn deployment(&self, name: &str) -> &Deployment {
        self.deployments
            .iter()
            .find(|d| d.metadata.name.as_deref() == Some(name))
            .unwrap_or_else(|| panic!("no Deployment {name}"))
    }

    fn service(&self, name: &str) -> Option<&Service> {
        self.services
            .iter()
            .find(|s| s.metadata.name.as_deref() == Some(name))
    }

    fn route(&self, name: &str) -> &HttpRoute {
        self.routes
            .iter()
            .find(|r| r.metadata.name.as_deref() == Some(name))
            .unwrap_or_else(|| panic!("no HTTPRoute {name}"))
    }

    fn config_map(&self, name: &str) -> &ConfigMap {
        self.config_maps
            .iter()
            .find(|c| c.metadata.name.as_deref() == Some(name))
            .unwrap_or_else(|| panic!("no ConfigMap {name}"))
    }

    fn secret(&self, name: &str) -> &Secret {
        self.secrets
            .iter()
            .find(|c| c.metadata.name.as_deref() == Some(name))
            .unwrap_or_else(|| panic!("no Secret {name}"))
    }

    fn all_metadata(&self) -> Vec<&k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta> {
        let mut m: Vec<_> = self.accounts.iter().map(|o| &o.metadata).collect();
        m.extend(self.roles.iter().map(|o| &o.metadata));
        m.extend(self.bindings.iter().map(|o| &o.metadata));
        m.extend(self.cluster_roles.iter().map(|o| &o.metadata));
        m.extend(self.cluster_bindings.iter().map(|o| &o.metadata));
        m.extend(self.classes.iter().map(|o| &o.metadata));
        m.extend(self.gateways.iter().map(|o| &o.metadata));
        m.extend(self.config_maps.iter().map(|o| &o.metadata));
        m.extend(self.secrets.iter().map(|o| &o.metadata));
        m.extend(self.services.iter().map(|o| &o.metadata));
        m.extend(self.deployments.iter().map(|o| &o.metadata));
        m.extend(self.routes.iter().map(|o| &o.metadata));
        m
    }
}

fn container(d: &Deployment) -> &Container {
    let spec = d.spec.as_ref().and_then(|s| s.template.spec.as_ref());
    spec.and_then(|s| s.containers.first())
        .unwrap_or_else(|| panic!("{:?} has no container", d.metadata.name))
}

/// Every container of the pod, a native sidecar (an init container) too.
fn pod_containers(d: &Deployment) -> Vec<&Container> {
    let spec = d.spec.as_ref().and_then(|s| s.template.spec.as_ref());
    spec.map(|s| {
        s.containers
            .iter()
            .chain(s.init_containers.iter().flatten())
            .collect()
    })
    .unwrap_or_default()
}

fn template_labels(d: &Deployment) -> BTreeMap<String, String> {
    d.spec
        .as_ref()
        .and_then(|s| s.template.metadata.as_ref())
        .and_then(|m| m.labels.clone())
        .unwrap_or_default()
}

fn env_value(c: &Container, name: &str) -> Option<String> {
    c.env
        .as_ref()?
        .iter()
        .find(|e| e.name == name)
        .and_then(|e| e.value.clone())
}

fn subset(small: &BTreeMap<String, String>, big: &BTreeMap<String, String>) -> bool {
    small.iter().all(|(k, v)| big.get(k) == Some(v))
}

/// Deployments, Services and HTTPRoutes fit together: every selector picks
/// pods that exist, every port name resolves, every backend is a Service.
fn check_consistent(t: &Typed) {
    for meta in t.all_metadata() {
        let labels = meta.labels.clone().unwrap_or_default();
        assert_eq!(
            labels.get("app.kubernetes.io/part-of").map(String::as_str),
            Some("serin"),
            "{:?} lacks app.kubernetes.io/part-of: serin",
            meta.name
        );
    }
    for d in &t.deployments {
        let spec = d.spec.as_ref().expect("a Deployment has a spec");
        let selector = spec.selector.match_labels.clone().unwrap_or_default();
        assert!(!selector.is_empty());
        assert!(
            subset(&selector, &template_labels(d)),
            "{:?}: the selector does not match the pod template",
            d.metadata.name
        );
        for c in pod_containers(d) {
            let port_names: BTreeSet<String> = c
                .ports
                .iter()
                .flatten()
                .filter_map(|p| p.name.clone())
                .collect();
            for probe in [&c.readiness_probe, &c.liveness_probe, &c.startup_probe]
                .into_iter()
                .flatten()
            {
                let port = probe
                    .http_get
                    .as_ref()
                    .map(|h| &h.port)
                    .or(probe.tcp_socket.as_ref().map(|t| &t.port));
                if let Some(IntOrString::String(name)) = port {
                    assert!(
                        port_names.contains(name),
                        "probe port {name} is not declared"
                    );
                }
            }
        }
    }
    for s in &t.services {
        let spec = s.spec.as_ref().expect("a Service has a spec");
        let selector = spec.selector.clone().unwrap_or_default();
        let picked: Vec<&Deployment> = t
            .deployments
            .iter()
            .filter(|d| subset(&selector, &template_labels(d)))
            .collect();
        assert!(
            !picked.is_empty(),
            "Service {:?} selects no pods",
            s.metadata.name
        );
        if selector.contains_key("version") {
            assert_eq!(
                picked.len(),
                1,
                "a per-version Service selects one Deployment"
            );
            let d_selector = picked[0]
                .spec
                .as_ref()
                .and_then(|s| s.selector.match_labels.clone())
                .unwrap_or_default();
            assert_eq!(
                selector, d_selector,
                "per-version Service and Deployment agree"
            );
            assert_eq!(s.metadata.name, picked[0].metadata.name);
        }
        for port in spec.ports.iter().flatten() {
            let Some(IntOrString::String(target)) = &port.target_port else {
                panic!("Service {:?} targets a port by number", s.metadata.name);
            };
            for d in &picked {
                assert!(
                    pod_containers(d)
                        .iter()
                        .flat_map(|c| c.ports.iter().flatten())
                        .any(|p| p.name.as_deref() == Some(target)),
                    "{:?} has no port {target}",
                    d.metadata.name
                );
            }
        }
    }
    for r in &t.routes {
        for rule in r.spec.rules.iter().flatten() {
            let mut refs: Vec<(String, Option<i32>)> = rule
                .backend_refs
                .iter()
                .flatten()
                .map(|b| (b.name.clone(), b.port))
                .collect();
            refs.extend(
                rule.filters
                    .iter()
                    .flatten()
                    .filter_map(|f| f.external_auth.as_ref())
                    .map(|a| (a.backend_ref.name.clone(), a.backend_ref.port)),
            );
            refs.extend(
                rule.filters
                    .iter()
                    .flatten()
                    .filter_map(|f| f.request_mirror.as_ref())
                    .map(|m| (m.backend_ref.name.clone(), m.backend_ref.port)),
            );
            for (name, port) in refs {
                let s = t
                    .service(&name)
                    .unwrap_or_else(|| panic!("backend {name} is not a rendered Service"));
                let selector = s.spec.as_ref().and_then(|s| s.selector.clone());
                assert!(
                    selector.is_some_and(|sel| sel.contains_key("version")),
                    "backend {name} is not a per-version Service"
                );
                assert_eq!(port, Some(8080));
                assert!(
                    s.spec
                        .iter()
                        .flat_map(|s| s.ports.iter().flatten())
                        .any(|p| Some(p.port) == port),
                    "Service {name} has no port {port:?}"
                );
            }
        }
    }
}

#[test]
fn qotm_renders_the_objects_of_its_stack() {
    let (_, _, yaml) = render(&qotm_path(), &RenderOptions::default());
    let t = parse(&yaml);
    let order: Vec<String> = t.order.iter().map(|(k, n)| format!("{k}/{n}")).collect();
    assert_eq!(
        order,
        [
            "ServiceAccount/serin-gateway",
            "Role/serin-gateway",
            "RoleBinding/serin-gateway",
            "ClusterRole/serin-gateway",
            "ClusterRoleBinding/serin-gateway",
            "ConfigMap/serin-gateway",
            "Service/qotm",
            "Service/qotm-v1",
            "Deployment/qotm-v1",
            "Service/qotm-v2",
            "Deployment/qotm-v2",
            "Service/auth",
            "Secret/auth-v1-workdir",
            "Service/auth-v1",
            "Deployment/auth-v1",
            "Service/serin-gateway",
            "Deployment/serin-gateway",
            "GatewayClass/serin",
            "Gateway/serin-gateway",
            "HTTPRoute/qotm",
            "HTTPRoute/secure-qotm",
        ]
    );
    check_consistent(&t);

    let v1 = t.deployment("qotm-v1");
    let labels = v1.metadata.labels.clone().unwrap_or_default();
    assert_eq!(labels["app"], "qotm");
    assert_eq!(labels["version"], "v1");
    assert_eq!(v1.spec.as_ref().and_then(|s| s.replicas), Some(2));
    assert_eq!(
        t.deployment("qotm-v2")
            .spec
            .as_ref()
            .and_then(|s| s.replicas),
        Some(1)
    );
    let c = container(v1);
    assert_eq!(
        c.image.as_deref(),
        Some(format!("localhost/serin-demo:{}", serin_kube::DEFAULT_TAG).as_str())
    );
    assert_eq!(
        c.args.clone().unwrap_or_default(),
        ["qotm", "--version", "v1", "--host", "0.0.0.0"]
    );
    assert_eq!(env_value(c, "PORT").as_deref(), Some("8080"));
    assert_eq!(c.ports.as_ref().map(|p| p[0].container_port), Some(8080));
    let pod = v1
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.clone())
        .unwrap_or_default();
    assert_eq!(pod.termination_grace_period_seconds, Some(10));
    let annotations = v1
        .spec
        .as_ref()
        .and_then(|s| s.template.metadata.as_ref())
        .and_then(|m| m.annotations.clone())
        .unwrap_or_default();
    assert_eq!(annotations["prometheus.io/scrape"], "true");
    assert_eq!(annotations["prometheus.io/port"], "8080");
    assert_eq!(annotations["prometheus.io/path"], "/metrics");
    let res = c.resources.clone().unwrap_or_default();
    assert!(
        res.requests
            .is_some_and(|r| r.contains_key("cpu") && r.contains_key("memory"))
    );
    assert!(res.limits.is_some_and(|r| r.contains_key("memory")));
    let strategy = v1
        .spec
        .as_ref()
        .and_then(|s| s.strategy.clone())
        .unwrap_or_default();
    assert_eq!(strategy.type_.as_deref(), Some("RollingUpdate"));
    let ru = strategy.rolling_update.unwrap_or_default();
    assert_eq!(ru.max_surge, Some(IntOrString::Int(1)));
    assert_eq!(ru.max_unavailable, Some(IntOrString::Int(0)));

    // The auth service reads credentials.txt from its working directory.
    let auth = container(t.deployment("auth-v1"));
    assert_eq!(auth.working_dir.as_deref(), Some("/srv/serin"));
    let creds = t.secret("auth-v1-workdir");
    let text = &creds
        .string_data
        .as_ref()
        .map(|d| d["credentials.txt"].clone());
    let local = std::fs::read_to_string(repo_root().join("examples/qotm/credentials.txt"))
        .unwrap_or_default();
    assert_eq!(text.as_deref(), Some(local.as_str()));

    // The gateway.
    let gw = t.deployment("serin-gateway");
    let c = container(gw);
    assert_eq!(
        c.image.as_deref(),
        Some(format!("localhost/serin:{}", serin_kube::DEFAULT_TAG).as_str())
    );
    let args = c.args.clone().unwrap_or_default();
    assert_eq!(args[..3], ["proxy", "--config", "/etc/serin/serin.yaml"]);
    let pod = gw
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.clone())
        .unwrap_or_default();
    assert_eq!(pod.service_account_name.as_deref(), Some("serin-gateway"));
}

#[test]
fn qotm_weights_and_rules_reach_the_httproutes() {
    let (_, _, yaml) = render(&qotm_path(), &RenderOptions::default());
    let t = parse(&yaml);
    for name in ["qotm", "secure-qotm"] {
        let rules = t.route(name).spec.rules.clone().unwrap_or_default();
        assert_eq!(rules.len(), 1);
        let weights: Vec<(String, Option<i32>, Option<i32>)> = rules[0]
            .backend_refs
            .iter()
            .flatten()
            .map(|b| (b.name.clone(), b.port, b.weight))
            .collect();
        assert_eq!(
            weights,
            [
                ("qotm-v1".to_string(), Some(8080), Some(90)),
                ("qotm-v2".to_string(), Some(8080), Some(10)),
            ]
        );
        let m = &rules[0].matches.clone().unwrap_or_default()[0];
        let path = m.path.clone().unwrap_or_default();
        assert_eq!(
            path.value.as_deref(),
            Some(if name == "qotm" {
                "/qotm"
            } else {
                "/secure/qotm"
            })
        );
    }
    let qotm = &t.route("qotm").spec.rules.clone().unwrap_or_default()[0];
    let retry = qotm.retry.clone().unwrap_or_default();
    assert_eq!(retry.attempts, Some(2));
    assert_eq!(retry.codes, Some(vec![502, 503]));
    assert_eq!(retry.backoff.as_deref(), Some("25ms"));
    let rewrite = qotm.filters.clone().unwrap_or_default()[0]
        .url_rewrite
        .clone();
    let path = rewrite.and_then(|u| u.path).unwrap_or_default();
    assert_eq!(path.replace_prefix_match.as_deref(), Some("/"));

    let secure = &t
        .route("secure-qotm")
        .spec
        .rules
        .clone()
        .unwrap_or_default()[0];
    let filters = secure.filters.clone().unwrap_or_default();
    let auth = filters[0].external_auth.clone().unwrap_or_default();
    assert_eq!(auth.backend_ref.name, "auth-v1");
    let http = auth.http.unwrap_or_default();
    assert_eq!(
        http.allowed_headers,
        Some(vec!["authorization".to_string()])
    );
    assert_eq!(
        http.allowed_response_headers,
        Some(vec!["x-user".to_string()])
    );
}

#[test]
fn qotm_probes_are_translated() {
    let (_, _, yaml) = render(&qotm_path(), &RenderOptions::default());
    let t = parse(&yaml);
    let c = container(t.deployment("qotm-v1"));
    let ready = c.readiness_probe.clone().unwrap_or_default();
    let get = ready.http_get.clone().unwrap_or_default();
    assert_eq!(get.path.as_deref(), Some("/ready"));
    assert_eq!(get.port, IntOrString::String("http".into()));
    assert_eq!(
        timing(&ready),
        (Some(0), Some(1), Some(1), Some(3), Some(1)),
        "readiness: {{period: 1s}} and Kubernetes' defaults"
    );
    let live = c.liveness_probe.clone().unwrap_or_default();
    assert_eq!(
        live.http_get.clone().and_then(|g| g.path).as_deref(),
        Some("/health")
    );
    assert_eq!(timing(&live), (Some(3), Some(5), Some(1), Some(3), Some(1)));
    // auth has no liveness probe in the stack, and gets none.
    assert!(container(t.deployment("auth-v1")).liveness_probe.is_none());
}

/// (initialDelaySeconds, periodSeconds, timeoutSeconds, failureThreshold,
/// successThreshold)
type Timing = (
    Option<i32>,
    Option<i32>,
    Option<i32>,
    Option<i32>,
    Option<i32>,
);

fn timing(p: &Probe) -> Timing {
    (
        p.initial_delay_seconds,
        p.period_seconds,
        p.timeout_seconds,
        p.failure_threshold,
        p.success_threshold,
    )
}

#[test]
fn rbac_covers_what_the_gateway_reads_and_writes() {
    let (_, _, yaml) = render(&qotm_path(), &RenderOptions::default());
    let t = parse(&yaml);
    let role = &t.roles[0];
    let allowed = |group: &str, resource: &str, verb: &str| {
        role.rules.iter().flatten().any(|r| {
            r.api_groups.iter().flatten().any(|g| g == group)
                && r.resources.iter().flatten().any(|x| x == resource)
                && r.verbs.iter().any(|v| v == verb)
        })
    };
    for verb in ["get", "list", "watch"] {
        assert!(
            allowed("discovery.k8s.io", "endpointslices", verb),
            "endpointslices {verb}"
        );
        assert!(allowed("", "services", verb), "services {verb}");
        assert!(allowed("", "pods", verb), "pods {verb}");
    }
    for verb in ["get", "list", "watch", "update", "patch"] {
        assert!(
            allowed("gateway.networking.k8s.io", "httproutes", verb),
            "httproutes {verb}"
        );
    }
    // The Gateway API status writer: its Gateway and the Gateway's status,
    // and the Lease that picks the one replica that writes.
    for verb in ["get", "list", "watch"] {
        assert!(
            allowed("gateway.networking.k8s.io", "gateways", verb),
            "gateways {verb}"
        );
    }
    for verb in ["update", "patch"] {
        assert!(
            allowed("gateway.networking.k8s.io", "gateways/status", verb),
            "gateways/status {verb}"
        );
    }
    for verb in ["get", "create", "update"] {
        assert!(
            allowed("coordination.k8s.io", "leases", verb),
            "leases {verb}"
        );
    }
    // Nothing else: no writes beyond HTTPRoutes and status, no secrets.
    for (group, resource, verb) in [
        ("", "secrets", "get"),
        ("", "pods", "delete"),
        ("discovery.k8s.io", "endpointslices", "update"),
        ("gateway.networking.k8s.io", "httproutes", "delete"),
        ("gateway.networking.k8s.io", "gateways", "update"),
        ("coordination.k8s.io", "leases", "delete"),
    ] {
        assert!(
            !allowed(group, resource, verb),
            "{resource} {verb} must not be granted"
        );
    }
    // In every namespace: HTTPRoutes (allowedRoutes may admit other
    // namespaces' routes) and their status, ReferenceGrants, namespaces'
    // labels; reads only, but for the status.
    let cluster = &t.cluster_roles[0];
    let cluster_allowed = |group: &str, resource: &str, verb: &str| {
        cluster.rules.iter().flatten().any(|r| {
            r.api_groups.iter().flatten().any(|g| g == group)
                && r.resources.iter().flatten().any(|x| x == resource)
                && r.verbs.iter().any(|v| v == verb)
        })
    };
    for verb in ["get", "list", "watch"] {
        for resource in ["httproutes", "referencegrants"] {
            assert!(
                cluster_allowed("gateway.networking.k8s.io", resource, verb),
                "{resource} {verb}"
            );
        }
        assert!(cluster_allowed("", "namespaces", verb), "namespaces {verb}");
    }
    for verb in ["get", "list", "watch"] {
        assert!(cluster_allowed(
            "gateway.networking.k8s.io",
            "gatewayclasses",
            verb
        ));
    }
    for verb in ["update", "patch"] {
        assert!(cluster_allowed(
            "gateway.networking.k8s.io",
            "gatewayclasses/status",
            verb
        ));
        assert!(cluster_allowed(
            "gateway.networking.k8s.io",
            "httproutes/status",
            verb
        ));
        assert!(!cluster_allowed(
            "gateway.networking.k8s.io",
            "httproutes",
            verb
        ));
        assert!(!cluster_allowed("", "namespaces", verb));
    }
    let cluster_binding = &t.cluster_bindings[0];
    assert_eq!(cluster_binding.role_ref.kind, "ClusterRole");
    assert_eq!(
        Some(&cluster_binding.role_ref.name),
        cluster.metadata.name.as_ref()
    );
    let subject = &cluster_binding.subjects.clone().unwrap_or_default()[0];
    assert_eq!(
        (subject.kind.as_str(), subject.name.as_str()),
        ("ServiceAccount", "serin-gateway")
    );
    // Unrendered namespace: kubectl's default, which an overlay rewrites.
    assert_eq!(subject.namespace.as_deref(), Some("default"));
    let binding = &t.bindings[0];
    assert_eq!(binding.role_ref.kind, "Role");
    assert_eq!(Some(&binding.role_ref.name), role.metadata.name.as_ref());
    let subject = &binding.subjects.clone().unwrap_or_default()[0];
    assert_eq!(subject.kind, "ServiceAccount");
    assert_eq!(Some(&subject.name), t.accounts[0].metadata.name.as_ref());
    let pod = t
        .deployment("serin-gateway")
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.clone())
        .unwrap_or_default();
    assert_eq!(pod.service_account_name, t.accounts[0].metadata.name);
    // Only the gateway talks to the API server.
    for d in &t.deployments {
        let pod = d
            .spec
            .as_ref()
            .and_then(|s| s.template.spec.clone())
            .unwrap_or_default();
        let is_gateway = d.metadata.name.as_deref() == Some("serin-gateway");
        assert_eq!(pod.automount_service_account_token, Some(is_gateway));
    }
}

/// serin is a Gateway API implementation: its GatewayClass names its
/// controller, and its Gateway (of that class) has the gateway's listener,
/// taking routes from its own namespace; the HTTPRoutes name that Gateway.
/// The Lease holder's identity, the pod's name, reaches the container.
#[test]
fn the_gateway_class_and_gateway_describe_the_gateway() {
    let (_, _, yaml) = render(&qotm_path(), &RenderOptions::default());
    let t = parse(&yaml);
    let class = &t.classes[0];
    assert_eq!(
        class.metadata.name.as_deref(),
        Some(serin_kube::GATEWAY_CLASS_NAME)
    );
    assert_eq!(
        class.metadata.namespace, None,
        "GatewayClass is cluster-scoped"
    );
    assert_eq!(class.spec.controller_name, serin_kube::CONTROLLER_NAME);
    let gateway = &t.gateways[0];
    assert_eq!(
        gateway.metadata.name.as_deref(),
        Some(serin_kube::GATEWAY_NAME)
    );
    assert_eq!(
        gateway.spec.gateway_class_name,
        serin_kube::GATEWAY_CLASS_NAME
    );
    let [listener] = gateway.spec.listeners.as_slice() else {
        panic!("one listener: {:?}", gateway.spec.listeners);
    };
    assert_eq!(listener.protocol, "HTTP");
    assert_eq!(listener.port, 80);
    let from = listener
        .allowed_routes
        .as_ref()
        .and_then(|a| a.namespaces.as_ref())
        .and_then(|n| n.from.clone());
    assert_eq!(
        from,
        Some(gateway_api::gateways::GatewayListenersAllowedRoutesNamespacesFrom::Same)
    );
    for route in &t.routes {
        let parents = route.spec.parent_refs.clone().unwrap_or_default();
        assert!(parents.iter().any(|p| p.name == serin_kube::GATEWAY_NAME));
    }
    let c = container(t.deployment("serin-gateway"));
    let pod_name = c
        .env
        .iter()
        .flatten()
        .find(|e| e.name == serin_kube::lease::POD_NAME_ENV)
        .and_then(|e| e.value_from.as_ref()?.field_ref.as_ref())
        .map(|f| f.field_path.clone());
    assert_eq!(pod_name.as_deref(), Some("metadata.name"));
}

/// The gateway's ConfigMap holds a proxy config that serin reads back as the
/// stack's gateway: the same services and routes, no static endpoints, the
/// listener on every address of the pod, the admin API on its loopback.
fn check_gateway_config(path: &Path, options: &RenderOptions) {
    let (stack, _, yaml) = render(path, options);
    let t = parse(&yaml);
    let cm = t.config_map("serin-gateway");
    let text = cm
        .data
        .as_ref()
        .and_then(|d| d.get("serin.yaml"))
        .expect("the ConfigMap has serin.yaml");
    let cfg = serin_config::proxy::parse_proxy_config(text, "serin.yaml", Path::new("/"))
        .unwrap_or_else(|e| panic!("the rendered proxy config does not load:\n{e}\n{text}"));
    let json = |v: &dyn erased::Ser| v.to_json();
    assert_eq!(
        json(&cfg.services),
        json(&stack.gateway.services),
        "services:\n{text}"
    );
    assert_eq!(
        json(&cfg.routes),
        json(&stack.gateway.routes),
        "routes:\n{text}"
    );
    assert!(
        cfg.services
            .iter()
            .all(|s| s.versions.iter().all(|v| v.endpoints.is_none()))
    );
    let (got, want) = (&cfg.listeners[0], &stack.gateway.listeners[0]);
    assert_eq!(got.name, want.name);
    assert!(got.address.ip().is_unspecified());
    assert_eq!(got.address.port(), want.address.port());
    assert_eq!(got.limits, want.limits);
    assert!(cfg.admin.address.ip().is_loopback());
    assert_eq!(cfg.admin.address.port(), stack.gateway.admin.address.port());
    assert_eq!(cfg.access_log, stack.gateway.access_log);
    assert_eq!(cfg.drain_timeout, stack.gateway.drain_timeout);
    assert_eq!(cfg.workers, stack.gateway.workers);
}

/// `serde_json::to_value` of anything serializable, behind one signature.
mod erased {
    pub trait Ser {
        fn to_json(&self) -> serde_json::Value;
    }
    impl<T: serde::Serialize> Ser for T {
        fn to_json(&self) -> serde_json::Value {
            serde_json::to_value(self).unwrap_or_else(|e| panic!("{e}"))
        }
    }
}

#[test]
fn qotm_gateway_config_reads_back_as_the_stack_gateway() {
    check_gateway_config(&qotm_path(), &RenderOptions::default());
}

#[test]
fn rich_gateway_config_reads_back_as_the_stack_gateway() {
    check_gateway_config(&rich_path(), &rich_options());
}

#[test]
fn rich_stack_renders_every_setting() {
    let (_, _, yaml) = render(&rich_path(), &rich_options());
    let t = parse(&yaml);
    check_consistent(&t);

    // Every namespaced object is in the namespace; the cluster-scoped ones
    // (ClusterRole, ClusterRoleBinding, GatewayClass) in none.
    let cluster_scoped: Vec<_> = t
        .cluster_roles
        .iter()
        .map(|o| &o.metadata)
        .chain(t.cluster_bindings.iter().map(|o| &o.metadata))
        .chain(t.classes.iter().map(|o| &o.metadata))
        .collect();
    for meta in t.all_metadata() {
        let cluster = cluster_scoped.iter().any(|m| std::ptr::eq(*m, meta));
        let want = if cluster { None } else { Some("shop") };
        assert_eq!(meta.namespace.as_deref(), want, "{:?}", meta.name);
    }
    let subject = &t.bindings[0].subjects.clone().unwrap_or_default()[0];
    assert_eq!(subject.namespace.as_deref(), Some("shop"));
    let subject = &t.cluster_bindings[0].subjects.clone().unwrap_or_default()[0];
    assert_eq!(subject.namespace.as_deref(), Some("shop"));

    // Images: a program of its own, the demo, the gateway.
    let api = t.deployment("api-1-10");
    let c = container(api);
    assert_eq!(
        c.image.as_deref(),
        Some("registry.example.com/team/api:1.2.3")
    );
    let web = container(t.deployment("web-v1"));
    assert_eq!(
        web.image.as_deref(),
        Some("registry.example.com/team/serin-demo:1.2.3")
    );
    assert_eq!(
        web.args.clone().unwrap_or_default(),
        ["qotm", "--host", "0.0.0.0"],
        "an explicit --host is kept, not doubled"
    );
    assert_eq!(
        container(t.deployment("serin-gateway")).image.as_deref(),
        Some("registry.example.com/team/serin:1.2.3")
    );

    // A version name with a dot: the label keeps it, the names lose it.
    assert_eq!(template_labels(api)["version"], "1.10");
    assert!(t.service("api-1-10").is_some());
    assert_eq!(api.spec.as_ref().and_then(|s| s.replicas), Some(3));

    // Env: values YAML 1.1 would read as other types stay strings, and
    // Kubernetes' $(VAR) expansion is escaped.
    for (name, value) in [
        ("MODE", "on"),
        ("OCTAL", "0755"),
        ("TIME", "1:20"),
        ("NOTHING", "~"),
        ("PRICE", "$$(NOT_EXPANDED)"),
        ("MULTI", "line one  \n  line two\n\nline four   \n\n"),
        ("HASH", "value # not a comment"),
        ("EMPTY", ""),
        ("SERIN_SERVICE", "api"),
        ("SERIN_VERSION", "1.10"),
        ("SERIN_FILES_DIR", "/var/run/serin/files"),
        ("SERIN_SECRETS_DIR", "/var/run/serin/secrets"),
    ] {
        assert_eq!(env_value(c, name).as_deref(), Some(value), "env {name}");
    }

    // Probes: tcpSocket on the port, durations rounded up; exec; httpGet on
    // an explicit port with Kubernetes' defaults.
    let ready = c.readiness_probe.clone().unwrap_or_default();
    assert_eq!(
        ready.tcp_socket.clone().map(|s| s.port),
        Some(IntOrString::String("http".into()))
    );
    assert_eq!(
        timing(&ready),
        (Some(0), Some(2), Some(1), Some(2), Some(2))
    );
    let live = c.liveness_probe.clone().unwrap_or_default();
    assert_eq!(
        live.exec.clone().and_then(|e| e.command),
        Some(vec!["/bin/check".to_string(), "--quick".to_string()])
    );
    assert_eq!(
        timing(&live),
        (Some(10), Some(20), Some(1), Some(3), Some(1))
    );
    let v2 = container(t.deployment("api-v2"));
    let live = v2.liveness_probe.clone().unwrap_or_default();
    let get = live.http_get.clone().unwrap_or_default();
    assert_eq!(get.port, IntOrString::Int(9090));
    assert_eq!(get.path.as_deref(), Some("/healthz"));
    assert_eq!(
        timing(&live),
        (Some(0), Some(10), Some(1), Some(3), Some(1))
    );
    assert_eq!(v2.args.clone().unwrap_or_default(), ["--mode", "canary"]);
    // web has no readiness probe: ready once the port accepts connections.
    let web_ready = web.readiness_probe.clone().unwrap_or_default();
    assert_eq!(
        web_ready.tcp_socket.map(|s| s.port),
        Some(IntOrString::String("http".into()))
    );

    // Strategy and grace period.
    let strategy = api
        .spec
        .as_ref()
        .and_then(|s| s.strategy.clone())
        .unwrap_or_default();
    assert_eq!(strategy.type_.as_deref(), Some("Recreate"));
    assert!(strategy.rolling_update.is_none());
    let web_strategy = t
        .deployment("web-v1")
        .spec
        .as_ref()
        .and_then(|s| s.strategy.clone())
        .and_then(|s| s.rolling_update)
        .unwrap_or_default();
    assert_eq!(web_strategy.max_surge, Some(IntOrString::Int(0)));
    assert_eq!(web_strategy.max_unavailable, Some(IntOrString::Int(1)));
    let pod = api
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.clone())
        .unwrap_or_default();
    assert_eq!(pod.termination_grace_period_seconds, Some(45));
    let gw_pod = t
        .deployment("serin-gateway")
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.clone())
        .unwrap_or_default();
    assert_eq!(
        gw_pod.termination_grace_period_seconds,
        Some(25),
        "drainTimeout 20s + 5s"
    );

    // Files: a ConfigMap (text and binary) mounted at SERIN_FILES_DIR.
    let files = t.config_map("api-1-10-files");
    let data = files.data.clone().unwrap_or_default();
    assert_eq!(data["config_app.toml"], "greeting = 'hi'\n");
    let binary = files.binary_data.clone().unwrap_or_default();
    let blob = std::fs::read(rich_path().with_file_name("blob.bin")).unwrap_or_default();
    assert_eq!(binary["data_blob.bin"].0, blob);
    let volumes = pod.volumes.clone().unwrap_or_default();
    let files_volume = volumes
        .iter()
        .find(|v| v.name == "files")
        .and_then(|v| v.config_map.clone());
    let items = files_volume.and_then(|c| c.items).unwrap_or_default();
    let paths: BTreeSet<(String, String)> = items.into_iter().map(|i| (i.key, i.path)).collect();
    assert_eq!(
        paths,
        BTreeSet::from([
            ("config_app.toml".to_string(), "config/app.toml".to_string()),
            ("data_blob.bin".to_string(), "data/blob.bin".to_string()),
        ])
    );

    // Secrets: values from the stack; env var or file.
    let secret = t.secret("api-1-10-secrets");
    let values = secret.string_data.clone().unwrap_or_default();
    assert_eq!(values["API_TOKEN"], "s3cr3t: yes");
    assert_eq!(
        values["TLS_KEY"], "-----BEGIN TEST KEY-----\nnot a real key\n-----END TEST KEY-----",
        "one trailing newline dropped, as serin up does"
    );
    let token = c
        .env
        .iter()
        .flatten()
        .find(|e| e.name == "API_TOKEN")
        .cloned()
        .unwrap_or_default();
    let key_ref = token
        .value_from
        .and_then(|f| f.secret_key_ref)
        .unwrap_or_default();
    assert_eq!(
        (key_ref.name.as_str(), key_ref.key.as_str()),
        ("api-1-10-secrets", "API_TOKEN")
    );
    assert!(
        c.env.iter().flatten().all(|e| e.name != "TLS_KEY"),
        "asFile: no env var"
    );
    let secret_volume = volumes
        .iter()
        .find(|v| v.name == "secrets")
        .and_then(|v| v.secret.clone());
    let items = secret_volume.and_then(|s| s.items).unwrap_or_default();
    assert_eq!(items.len(), 1);
    assert_eq!(
        (items[0].key.as_str(), items[0].path.as_str()),
        ("TLS_KEY", "TLS_KEY")
    );
    let mounts: BTreeMap<String, String> = c
        .volume_mounts
        .iter()
        .flatten()
        .map(|m| (m.name.clone(), m.mount_path.clone()))
        .collect();
    assert_eq!(mounts["files"], "/var/run/serin/files");
    assert_eq!(mounts["secrets"], "/var/run/serin/secrets");

    // An argument naming a file of the stack's folder is shipped; one naming
    // no file is not.
    let work = t.secret("api-1-10-workdir");
    let work_data = work.string_data.clone().unwrap_or_default();
    assert_eq!(work_data.keys().collect::<Vec<_>>(), ["notes.txt"]);
    assert_eq!(c.working_dir.as_deref(), Some("/srv/serin"));

    // Routes: every match, filter and weight.
    let api_route = t.route("api");
    assert_eq!(
        api_route.spec.hostnames.clone().unwrap_or_default(),
        ["api.example.com", "*.api.example.com"]
    );
    let rules = api_route.spec.rules.clone().unwrap_or_default();
    assert_eq!(rules.len(), 3);
    let reads = &rules[0];
    assert_eq!(reads.name.as_deref(), Some("reads"));
    let weights: Vec<(String, Option<i32>)> = reads
        .backend_refs
        .iter()
        .flatten()
        .map(|b| (b.name.clone(), b.weight))
        .collect();
    assert_eq!(
        weights,
        [
            ("api-1-10".to_string(), Some(75)),
            ("api-v2".to_string(), Some(25))
        ]
    );
    let timeouts = reads.timeouts.clone().unwrap_or_default();
    assert_eq!(timeouts.request.as_deref(), Some("5s"));
    assert_eq!(timeouts.backend_request.as_deref(), Some("2s"));
    let m = reads.matches.clone().unwrap_or_default();
    let regex = m[1].path.clone().unwrap_or_default();
    assert_eq!(
        regex.value.as_deref(),
        Some("/items/[0-9]+"),
        "the regex as written"
    );
    let q = m[0].query_params.clone().unwrap_or_default();
    assert_eq!(q[0].value, "[0-9]+");
    let h = m[0].headers.clone().unwrap_or_default();
    assert_eq!(
        (h[0].name.as_str(), h[0].value.as_str()),
        ("x-canary", "yes")
    );
    let old = &rules[1];
    assert!(old.backend_refs.is_none());
    let redirect = old.filters.clone().unwrap_or_default()[0]
        .request_redirect
        .clone()
        .unwrap_or_default();
    assert_eq!(redirect.status_code, Some(301));
    assert_eq!(redirect.hostname.as_deref(), Some("new.example.com"));
    let guarded = &rules[2];
    let auth = guarded.filters.clone().unwrap_or_default()[0]
        .external_auth
        .clone()
        .unwrap_or_default();
    assert_eq!(auth.backend_ref.name, "web-v1");
    assert_eq!(auth.http.and_then(|h| h.path).as_deref(), Some("/check"));
    let web_rule = &t.route("web").spec.rules.clone().unwrap_or_default()[0];
    let mirror = web_rule.filters.clone().unwrap_or_default()[0]
        .request_mirror
        .clone()
        .unwrap_or_default();
    assert_eq!(mirror.backend_ref.name, "api-v2");
    let fraction = mirror.fraction.unwrap_or_default();
    assert_eq!(
        (fraction.numerator, fraction.denominator),
        (1, Some(8)),
        "12.5%"
    );
    assert_eq!(
        web_rule
            .timeouts
            .clone()
            .unwrap_or_default()
            .request
            .as_deref(),
        Some("0s"),
        "request: 0s turns the timeout off in both"
    );
}

/// Routes that use neither `retry` nor `ExternalAuth` are standard-channel
/// HTTPRoutes; the others need the experimental channel, and say so by
/// failing the standard types' strict parse.
#[test]
fn routes_without_experimental_fields_are_standard_httproutes() {
    let (_, manifests, _) = render(&rich_path(), &rich_options());
    let mut seen = BTreeMap::new();
    for o in &manifests.objects {
        let serin_kube::Object::HttpRoute(r) = o else {
            continue;
        };
        let value = serde_json::to_value(r).unwrap_or_else(|e| panic!("{e}"));
        let experimental = r.spec.rules.iter().flatten().any(|rule| {
            rule.retry.is_some()
                || rule
                    .filters
                    .iter()
                    .flatten()
                    .any(|f| f.external_auth.is_some())
        });
        let standard = serde_json::from_value::<gateway_api::httproutes::HttpRoute>(value.clone())
            .ok()
            .and_then(|s| serde_json::to_value(s).ok())
            .is_some_and(|back| back == value);
        assert_eq!(standard, !experimental, "HTTPRoute {}", o.name());
        seen.insert(o.name().to_string(), standard);
    }
    assert_eq!(
        seen,
        BTreeMap::from([("api".into(), false), ("web".into(), true)])
    );
}

fn kubernetes_validate() -> &'static str {
    const TOOL: &str = "kubernetes-validate";
    match Command::new(TOOL).arg("--version").output() {
        Ok(out) if out.status.success() => TOOL,
        _ => panic!(
            "{TOOL} is not installed: `pip install kubernetes-validate` \
             (scripts/install-test-deps.sh installs it)"
        ),
    }
}

/// Writes each object but the Gateway API's to its own file and validates
/// them all with `kubernetes-validate --strict` against Kubernetes
/// `version` (the newest it knows when `None`). HTTPRoute, Gateway and
/// GatewayClass are CRDs the tool has no schema for; they are checked by
/// the typed parse only.
fn validate(manifests: &Manifests, version: Option<&str>) {
    let tool = kubernetes_validate();
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let mut files = Vec::new();
    for o in &manifests.objects {
        if matches!(o.kind(), "HTTPRoute" | "Gateway" | "GatewayClass") {
            continue;
        }
        let path = dir.path().join(o.file_name());
        let yaml = o.to_yaml().unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(&path, yaml).unwrap_or_else(|e| panic!("{e}"));
        files.push(path);
    }
    let mut cmd = Command::new(tool);
    cmd.arg("--strict");
    if let Some(v) = version {
        cmd.args(["--kubernetes-version", v]);
    }
    let out = cmd
        .args(&files)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {tool}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{tool} failed:\n{text}");
    let passed = text.lines().filter(|l| l.contains(" passed ")).count();
    assert_eq!(
        passed,
        files.len(),
        "every object passes, with no warning:\n{text}"
    );
    assert!(!text.contains("WARN") && !text.contains("ERROR"), "{text}");
}

/// The oldest Kubernetes the rendered objects are for (k8s-openapi's v1_32
/// feature), and the newest kubernetes-validate knows.
const KUBERNETES_VERSIONS: [Option<&str>; 2] = [Some("1.32.0"), None];

#[test]
fn qotm_objects_pass_kubernetes_validate_strict() {
    let (_, manifests, _) = render(&qotm_path(), &RenderOptions::default());
    for v in KUBERNETES_VERSIONS {
        validate(&manifests, v);
    }
}

#[test]
fn rich_objects_pass_kubernetes_validate_strict() {
    let (_, manifests, _) = render(&rich_path(), &rich_options());
    for v in KUBERNETES_VERSIONS {
        validate(&manifests, v);
    }
}

/// The validator is strict for real: an unknown field and a YAML 1.1
/// boolean where a string belongs are both refused.
#[test]
fn kubernetes_validate_refuses_broken_objects() {
    let tool = kubernetes_validate();
    let (_, manifests, _) = render(&qotm_path(), &RenderOptions::default());
    let deployment = manifests
        .objects
        .iter()
        .find(|o| o.kind() == "Deployment")
        .and_then(|o| o.to_yaml().ok())
        .unwrap_or_default();
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    for (name, broken) in [
        (
            "unknown-field.yaml",
            deployment.replacen("replicas:", "replicaz: 1\n  replicas:", 1),
        ),
        (
            "yaml11-bool.yaml",
            deployment.replacen("value: \"8080\"", "value: on", 1),
        ),
    ] {
        assert_ne!(broken, deployment, "{name}: the edit applied");
        let path = dir.path().join(name);
        std::fs::write(&path, broken).unwrap_or_else(|e| panic!("{e}"));
        let out = Command::new(tool)
            .arg("--strict")
            .arg(&path)
            .output()
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(!out.status.success(), "{name} passed {tool}");
    }
}

#[test]
fn the_kustomize_base_is_in_sync_with_the_renderer() {
    let (_, manifests, _) = render(&qotm_path(), &RenderOptions::default());
    let files = manifests.kustomize().unwrap_or_else(|e| panic!("{e}"));
    let dir = repo_root().join("deploy/kubernetes");
    if std::env::var_os("SERIN_UPDATE_KUSTOMIZE").is_some() {
        serin_kube::write_kustomize(&dir, &files).unwrap_or_else(|e| panic!("{e}"));
    }
    let hint = "deploy/kubernetes is stale: run `serin render kubernetes examples/qotm/stack.yaml \
                --output-dir deploy/kubernetes` (or SERIN_UPDATE_KUSTOMIZE=1 cargo test -p serin-kube)";
    for (name, content) in &files {
        let committed = std::fs::read_to_string(dir.join(name)).unwrap_or_default();
        assert_eq!(&committed, content, "{name}: {hint}");
    }
    let expected: BTreeSet<&str> = files.iter().map(|(n, _)| n.as_str()).collect();
    let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        if name.ends_with(".yaml") || name.ends_with(".yml") {
            assert!(
                expected.contains(name.as_str()),
                "{name} is not rendered: {hint}"
            );
        }
    }
    let kustomization = files
        .iter()
        .find(|(n, _)| n == serin_kube::KUSTOMIZATION)
        .map(|(_, c)| c.clone())
        .unwrap_or_default();
    let k: Value = serde_saphyr::from_str(&kustomization).unwrap_or_else(|e| panic!("{e}"));
    let listed: Vec<&str> = k["resources"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(listed.len(), manifests.objects.len());
    let readme = std::fs::read_to_string(dir.join("README.md")).unwrap_or_default();
    assert!(
        readme.contains("kubectl apply -k deploy/kubernetes"),
        "README says how to apply"
    );
    assert!(
        readme.contains("serin render kubernetes"),
        "README says how it is generated"
    );
}

/// Writes `stack.yaml` (and other files) into a fresh folder and loads it.
fn stack_in_dir(files: &[(&str, &str)]) -> (tempfile::TempDir, StackFile) {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    for (name, content) in files {
        std::fs::write(dir.path().join(name), content).unwrap_or_else(|e| panic!("{e}"));
    }
    let stack = load(&dir.path().join("stack.yaml"));
    (dir, stack)
}

fn render_err(files: &[(&str, &str)], options: &RenderOptions) -> RenderError {
    let (_dir, stack) = stack_in_dir(files);
    match serin_kube::render(&stack, options) {
        Ok(_) => panic!("rendered, but should not have"),
        Err(e) => e,
    }
}

#[test]
fn what_kubernetes_cannot_express_is_refused() {
    let one = |extra: &str| format!("services:\n  - name: a\n    command: serin-demo\n{extra}");
    let e = render_err(
        &[("stack.yaml", &one("    restartPolicy: OnFailure\n"))],
        &RenderOptions::default(),
    );
    assert!(matches!(e, RenderError::RestartPolicy { .. }), "{e}");
    assert!(e.to_string().contains("a/v1"), "{e}");

    let e = render_err(
        &[(
            "stack.yaml",
            &format!(
                "gateway:\n  admin: 127.0.0.1:9901\n  adminToken: hunter2\n{}",
                one("")
            ),
        )],
        &RenderOptions::default(),
    );
    assert!(matches!(e, RenderError::AdminToken), "{e}");
    assert!(!e.to_string().contains("hunter2"), "the token is not shown");

    // Versions `1.10` and `1-10` would both be the Service `a-1-10`.
    let clash =
        "services:\n  - name: a\n    command: x\n    versions: [{name: \"1.10\"}, {name: 1-10}]\n";
    let e = render_err(&[("stack.yaml", clash)], &RenderOptions::default());
    assert!(matches!(e, RenderError::NameClash { .. }), "{e}");

    let e = render_err(
        &[(
            "stack.yaml",
            "services:\n  - name: serin-gateway\n    command: x\n",
        )],
        &RenderOptions::default(),
    );
    assert!(matches!(e, RenderError::NameClash { .. }), "{e}");

    for options in [
        RenderOptions {
            namespace: Some("Shop".into()),
            ..RenderOptions::default()
        },
        RenderOptions {
            tag: "-bad".into(),
            ..RenderOptions::default()
        },
        RenderOptions {
            image_repo: String::new(),
            ..RenderOptions::default()
        },
    ] {
        let e = render_err(&[("stack.yaml", &one(""))], &options);
        assert!(matches!(e, RenderError::BadName { .. }), "{e}");
    }
}

#[test]
fn gateway_tls_becomes_a_tls_secret() {
    let stack = "gateway:\n  tls: {certificate: cert.pem, key: key.pem}\n\
                 services:\n  - name: a\n    command: serin-demo\n";
    // A real pair: the stack's checks read the files as serin will.
    let pair = rcgen::generate_simple_self_signed(vec!["gateway.test".to_string()])
        .unwrap_or_else(|e| panic!("{e}"));
    let (cert, key) = (pair.cert.pem(), pair.signing_key.serialize_pem());
    let (_dir, stack) = stack_in_dir(&[
        ("stack.yaml", stack),
        ("cert.pem", &cert),
        ("key.pem", &key),
    ]);
    let manifests =
        serin_kube::render(&stack, &RenderOptions::default()).unwrap_or_else(|e| panic!("{e}"));
    let t = parse(&manifests.to_yaml().unwrap_or_default());
    let secret = t.secret("serin-gateway-tls");
    assert_eq!(secret.type_.as_deref(), Some("kubernetes.io/tls"));
    let data = secret.string_data.clone().unwrap_or_default();
    assert_eq!(
        (data["tls.crt"].as_str(), data["tls.key"].as_str()),
        (cert.as_str(), key.as_str())
    );
    let config = &t
        .config_map("serin-gateway")
        .data
        .clone()
        .unwrap_or_default()["serin.yaml"];
    assert!(
        config.contains("certificate: /etc/serin/tls/tls.crt"),
        "{config}"
    );
    assert!(config.contains("key: /etc/serin/tls/tls.key"), "{config}");
    let c = container(t.deployment("serin-gateway"));
    assert!(
        c.volume_mounts
            .iter()
            .flatten()
            .any(|m| m.name == "tls" && m.mount_path == "/etc/serin/tls")
    );
    // The Gateway's listener is HTTPS with that Secret.
    let listener = &t.gateways[0].spec.listeners[0];
    assert_eq!(listener.protocol, "HTTPS");
    let refs = listener
        .tls
        .as_ref()
        .and_then(|t| t.certificate_refs.clone());
    assert_eq!(refs.unwrap_or_default()[0].name, "serin-gateway-tls");
    validate(&manifests, None);
}

/// Runs `kubectl kustomize DIR` (offline: what `kubectl apply -k` builds
/// first) and returns the objects it built by (kind, name).
fn kubectl_kustomize(dir: &Path) -> BTreeMap<(String, String), Value> {
    let out = Command::new("kubectl")
        .arg("kustomize")
        .arg(dir)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run kubectl ({e}): install it (Debian: apt-get install kubernetes-client; \
                 scripts/install-test-deps.sh does)"
            )
        });
    assert!(
        out.status.success(),
        "kubectl kustomize {} failed:\n{}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let docs: Vec<Value> =
        serde_saphyr::from_multiple(&text).unwrap_or_else(|e| panic!("not YAML: {e}\n{text}"));
    by_kind_and_name(docs)
}

fn by_kind_and_name(docs: Vec<Value>) -> BTreeMap<(String, String), Value> {
    docs.into_iter()
        .map(|d| {
            let key = (
                d["kind"].as_str().unwrap_or_default().to_string(),
                d["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            );
            (key, d)
        })
        .collect()
}

fn rendered_objects(manifests: &Manifests) -> BTreeMap<(String, String), Value> {
    by_kind_and_name(
        manifests
            .objects
            .iter()
            .map(|o| serde_json::to_value(o).unwrap_or_else(|e| panic!("{e}")))
            .collect(),
    )
}

/// `kubectl apply -k deploy/kubernetes` starts with `kubectl kustomize`:
/// the committed base builds, offline, into exactly the rendered objects.
#[test]
fn kubectl_kustomize_builds_the_base() {
    let built = kubectl_kustomize(&repo_root().join("deploy/kubernetes"));
    let (_, manifests, _) = render(&qotm_path(), &RenderOptions::default());
    assert_eq!(built, rendered_objects(&manifests));
}

/// kubectl reads YAML with Go's YAML 1.1 library: every value of the rich
/// stack (strings like `on`, `0755`, `~`, long and multi-line ones) comes
/// out of it exactly as rendered.
#[test]
fn kubectl_reads_the_rich_objects_as_rendered() {
    let (_, manifests, _) = render(&rich_path(), &rich_options());
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let files = manifests.kustomize().unwrap_or_else(|e| panic!("{e}"));
    serin_kube::write_kustomize(dir.path(), &files).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(kubectl_kustomize(dir.path()), rendered_objects(&manifests));
}

/// The proxy config in the ConfigMap `name`, loaded as `serin proxy` loads it.
fn proxy_config_of(t: &Typed, name: &str) -> serin_config::proxy::ProxyConfig {
    let text = t
        .config_map(name)
        .data
        .as_ref()
        .and_then(|d| d.get("serin.yaml"))
        .unwrap_or_else(|| panic!("{name} has no serin.yaml"));
    serin_config::proxy::parse_proxy_config(text, "serin.yaml", Path::new("/"))
        .unwrap_or_else(|e| panic!("{name}'s proxy config does not load:\n{e}\n{text}"))
}

fn pod_spec(d: &Deployment) -> &k8s_openapi::api::core::v1::PodSpec {
    d.spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .unwrap_or_else(|| panic!("{:?} has no pod spec", d.metadata.name))
}

/// A service with `sidecar:` gets a native sidecar (an init container that
/// keeps running) in front of its app, which listens on the pod's loopback;
/// its probes and Services reach the app through the sidecar.
#[test]
fn mesh_pods_get_a_sidecar_in_front_of_the_app() {
    use serin_kube::sidecar::{APP_PORT, CONTAINER_NAME};
    let (_, _, yaml) = render(&mesh_path(), &RenderOptions::default());
    let t = parse(&yaml);
    check_consistent(&t);
    for name in ["frontend-v1", "pinger-v1", "pinger-v2", "details-v1"] {
        let d = t.deployment(name);
        let pod = pod_spec(d);
        let app = container(d);
        let sidecar = pod
            .init_containers
            .iter()
            .flatten()
            .find(|c| c.name == CONTAINER_NAME)
            .unwrap_or_else(|| panic!("{name} has no sidecar"));
        assert_eq!(sidecar.restart_policy.as_deref(), Some("Always"), "{name}");
        assert_eq!(sidecar.image.as_deref(), Some("localhost/serin:0.1.0"));
        let args = sidecar.args.clone().unwrap_or_default();
        assert_eq!(
            args[..3],
            ["proxy", "--config", "/etc/serin-sidecar/serin.yaml"]
        );
        let ports: Vec<(Option<&str>, i32)> = sidecar
            .ports
            .iter()
            .flatten()
            .map(|p| (p.name.as_deref(), p.container_port))
            .collect();
        assert_eq!(ports, [(Some("http"), 8080), (Some("metrics"), 9090)]);
        // The app: on loopback, no port of its own, probes through 8080.
        assert!(app.ports.is_none(), "{name}");
        assert_eq!(env_value(app, "PORT"), Some(APP_PORT.to_string()));
        let app_args = app.args.clone().unwrap_or_default();
        assert!(
            app_args.ends_with(&["--host".into(), "127.0.0.1".into()]),
            "{app_args:?}"
        );
        for (probe, path) in [
            (&app.readiness_probe, "/ready"),
            (&app.liveness_probe, "/health"),
        ] {
            let get = probe.as_ref().and_then(|p| p.http_get.as_ref());
            assert_eq!(
                get.map(|g| g.port.clone()),
                Some(IntOrString::Int(8080)),
                "{name}"
            );
            assert_eq!(get.and_then(|g| g.path.as_deref()), Some(path));
        }
        // Prometheus scrapes the sidecar.
        let annotations = d
            .spec
            .as_ref()
            .and_then(|s| s.template.metadata.as_ref())
            .and_then(|m| m.annotations.clone())
            .unwrap_or_default();
        assert_eq!(
            annotations.get("prometheus.io/scrape").map(String::as_str),
            Some("true")
        );
        assert_eq!(
            annotations.get("prometheus.io/port").map(String::as_str),
            Some("9090")
        );
        assert_eq!(
            annotations.get("prometheus.io/path").map(String::as_str),
            Some("/metrics")
        );
        // The token is the sidecar's only.
        let service = name.split('-').next().unwrap_or_default();
        assert_eq!(pod.service_account_name.as_deref(), Some(service));
        assert_eq!(pod.automount_service_account_token, Some(false));
        let token_dir = "/var/run/secrets/kubernetes.io/serviceaccount";
        let mounts = |c: &Container| {
            c.volume_mounts
                .iter()
                .flatten()
                .any(|m| m.mount_path == token_dir)
        };
        assert!(mounts(sidecar) && !mounts(app), "{name}");
    }
}

/// The sidecar's config is the replica's sidecar of `serin up`: an inbound
/// listener on the pod's port to the app, an outbound listener per
/// dependency whose URL the app gets, the stack's `caller>callee` routes
/// as they are, and endpoints from EndpointSlices.
#[test]
fn mesh_sidecar_config_has_the_stacks_listeners_and_routes() {
    let (stack, _, yaml) = render(&mesh_path(), &RenderOptions::default());
    let t = parse(&yaml);
    let cfg = proxy_config_of(&t, "frontend-sidecar");
    assert_eq!(
        cfg.discovery,
        Some(serin_config::proxy::Discovery::Kubernetes)
    );
    assert!(cfg.admin.address.ip().is_loopback());
    assert_eq!(
        cfg.admin.metrics_address.map(|a| a.to_string()).as_deref(),
        Some("0.0.0.0:9090")
    );
    let listeners: Vec<(String, String)> = cfg
        .listeners
        .iter()
        .map(|l| (l.name.clone(), l.address.to_string()))
        .collect();
    let app = container(t.deployment("frontend-v1"));
    let pinger_url = env_value(app, "PINGER_URL").unwrap_or_default();
    let details_url = env_value(app, "DETAILS_URL").unwrap_or_default();
    assert_eq!(
        listeners,
        [
            ("in:frontend".to_string(), "0.0.0.0:8080".to_string()),
            (
                "out:frontend:pinger".into(),
                pinger_url.trim_start_matches("http://").into()
            ),
            (
                "out:frontend:details".into(),
                details_url.trim_start_matches("http://").into()
            ),
        ]
    );
    assert!(pinger_url.starts_with("http://127.0.0.1:"), "{pinger_url}");
    let json = |v: &dyn erased::Ser| v.to_json();
    for callee in ["pinger", "details"] {
        let name = format!("frontend>{callee}");
        let got = cfg.routes.iter().find(|r| r.name == name);
        let want = stack.mesh.iter().find(|r| r.name == name);
        assert_eq!(
            got.map(|r| json(&r.rules)),
            want.map(|r| json(&r.rules)),
            "{name}"
        );
        assert_eq!(
            got.map(|r| r.listeners.clone()),
            Some(vec![format!("out:frontend:{callee}")])
        );
        // The callee's versions have no endpoints: discovery finds them.
        let s = cfg.services.iter().find(|s| s.name == callee);
        assert!(s.is_some_and(|s| s.versions.iter().all(|v| v.endpoints.is_none())));
    }
    let inbound = cfg.routes.iter().find(|r| r.name == "inbound:frontend");
    assert_eq!(
        inbound.map(|r| r.listeners.clone()),
        Some(vec!["in:frontend".into()])
    );
    let app_service = cfg.services.iter().find(|s| s.name == "app:frontend");
    let endpoints = app_service.and_then(|s| s.versions[0].endpoints.clone());
    assert_eq!(
        endpoints.map(|e| e[0].to_string()).as_deref(),
        Some("127.0.0.1:8081")
    );
    // A service that calls nobody has only its inbound side.
    let pinger = proxy_config_of(&t, "pinger-sidecar");
    assert_eq!(pinger.listeners.len(), 1);
    assert_eq!(pinger.routes.len(), 1);
}

/// One ServiceAccount per service with a sidecar (its identity), bound to
/// one Role that lets it follow EndpointSlices and nothing else.
#[test]
fn mesh_sidecars_may_read_endpoint_slices_only() {
    let (_, _, yaml) = render(&mesh_path(), &RenderOptions::default());
    let t = parse(&yaml);
    let accounts: BTreeSet<&str> = t
        .accounts
        .iter()
        .filter_map(|a| a.metadata.name.as_deref())
        .collect();
    assert_eq!(
        accounts,
        BTreeSet::from(["serin-gateway", "frontend", "pinger", "details"])
    );
    let role = t
        .roles
        .iter()
        .find(|r| r.metadata.name.as_deref() == Some("serin-sidecar"))
        .expect("a Role serin-sidecar");
    let rules = role.rules.clone().unwrap_or_default();
    assert_eq!(rules.len(), 1);
    assert_eq!(
        rules[0].api_groups,
        Some(vec!["discovery.k8s.io".to_string()])
    );
    assert_eq!(rules[0].resources, Some(vec!["endpointslices".to_string()]));
    assert_eq!(rules[0].verbs, ["get", "list", "watch"]);
    let binding = t
        .bindings
        .iter()
        .find(|b| b.metadata.name.as_deref() == Some("serin-sidecar"))
        .expect("a RoleBinding serin-sidecar");
    assert_eq!(binding.role_ref.name, "serin-sidecar");
    let subjects: BTreeSet<&str> = binding
        .subjects
        .iter()
        .flatten()
        .map(|s| s.name.as_str())
        .collect();
    assert_eq!(subjects, BTreeSet::from(["frontend", "pinger", "details"]));
    // qotm has no sidecar: none of this.
    let (_, _, qotm) = render(&qotm_path(), &RenderOptions::default());
    assert!(!qotm.contains("serin-sidecar"));
}

#[test]
fn mesh_objects_pass_kubernetes_validate_strict() {
    let (_, manifests, _) = render(&mesh_path(), &RenderOptions::default());
    for v in KUBERNETES_VERSIONS {
        validate(&manifests, v);
    }
}
