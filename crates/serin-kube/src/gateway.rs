//! The gateway in a cluster: the serin proxy as a Deployment with its config
//! in a ConfigMap, a Service in front of it, and the RBAC it needs to find
//! endpoints, read and write HTTPRoutes and write Gateway API status.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec, DeploymentStrategy};
use k8s_openapi::api::core::v1::{
    ConfigMap, ConfigMapVolumeSource, Container, ContainerPort, EmptyDirVolumeSource, EnvVar,
    EnvVarSource, ObjectFieldSelector, PodSpec, PodTemplateSpec, Probe, Secret, SecretVolumeSource,
    Service, ServiceAccount, ServicePort, ServiceSpec, TCPSocketAction, Volume, VolumeMount,
};
use k8s_openapi::api::rbac::v1::{
    ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding, RoleRef, Subject,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serin_config::proxy::ProxyConfig;

use crate::names::{
    CONTAINER_PORT, Context, GATEWAY_NAME, LABEL_APP, METRICS_PORT, METRICS_PORT_NAME, PORT_NAME,
    labels, prometheus_annotations,
};
use crate::workload::{container_security, mount, pod_security, resources, seconds};
use crate::{Object, RenderError, proxy_file};

/// The gateway's config file in its pod, from the ConfigMap.
pub const CONFIG_DIR: &str = "/etc/serin";
/// The ConfigMap's key, and the file's name under [`CONFIG_DIR`].
pub const CONFIG_FILE: &str = "serin.yaml";
/// Where the proxy keeps weights changed through its admin API: a writable
/// volume, since the ConfigMap's is read-only.
pub const STATE_DIR: &str = "/var/run/serin/state";
/// The gateway's TLS certificate and key, from a `kubernetes.io/tls` Secret.
pub const TLS_DIR: &str = "/etc/serin/tls";
/// The Service's port: the usual one for HTTP.
pub const SERVICE_PORT: u16 = 80;
/// One replica: weights changed through the admin API live in that pod
/// until routes and weights come from HTTPRoute objects (discovery).
pub const REPLICAS: i32 = 1;
/// A proxy holds little beyond its connection pools; the requests leave
/// room for a few thousand connections.
pub const CPU_REQUEST: &str = "250m";
pub const MEMORY_REQUEST: &str = "64Mi";
pub const MEMORY_LIMIT: &str = "512Mi";
/// Added to the proxy's drain timeout for the grace period, so the kubelet's
/// SIGKILL comes after the drain has ended, not during it.
const GRACE_MARGIN_SECONDS: i32 = 5;

/// What the proxy reads and writes in its own namespace: endpoints of the
/// services and the pods behind them (for their `version` label), HTTPRoute
/// weights (for canaries), its Gateway and that Gateway's status, and the
/// Lease that picks the one replica that writes status.
const RULES: &[(&str, &[&str], &[&str])] = &[
    (
        "discovery.k8s.io",
        &["endpointslices"],
        &["get", "list", "watch"],
    ),
    ("", &["services", "pods"], &["get", "list", "watch"]),
    (
        "gateway.networking.k8s.io",
        &["httproutes"],
        &["get", "list", "watch", "update", "patch"],
    ),
    (
        "gateway.networking.k8s.io",
        &["gateways"],
        &["get", "list", "watch"],
    ),
    (
        "gateway.networking.k8s.io",
        &["gateways/status"],
        &["get", "update", "patch"],
    ),
    (
        "coordination.k8s.io",
        &["leases"],
        &["get", "create", "update"],
    ),
];

/// What it reads and writes in every namespace: HTTPRoutes of other
/// namespaces may attach to its Gateway (`allowedRoutes`), which it must
/// see to say whether they did (their status), the ReferenceGrants that let
/// them name its Services, the namespaces' labels (`allowedRoutes` by
/// selector) and the GatewayClasses (whose status says serin accepts those
/// of its controller).
const CLUSTER_RULES: &[(&str, &[&str], &[&str])] = &[
    (
        "gateway.networking.k8s.io",
        &["httproutes", "referencegrants", "gatewayclasses"],
        &["get", "list", "watch"],
    ),
    (
        "gateway.networking.k8s.io",
        &["httproutes/status", "gatewayclasses/status"],
        &["get", "update", "patch"],
    ),
    ("", &["namespaces"], &["get", "list", "watch"]),
];

fn policy_rules(rules: &[(&str, &[&str], &[&str])]) -> Vec<PolicyRule> {
    rules
        .iter()
        .map(|(group, resources, verbs)| PolicyRule {
            api_groups: Some(vec![(*group).to_string()]),
            resources: Some(resources.iter().map(|r| (*r).to_string()).collect()),
            verbs: verbs.iter().map(|v| (*v).to_string()).collect(),
            ..PolicyRule::default()
        })
        .collect()
}

/// The namespace of a ClusterRoleBinding's ServiceAccount when the render
/// names none: the one `kubectl apply` uses then (a Kustomize overlay's
/// `namespace:` rewrites it with the ServiceAccount's).
const DEFAULT_NAMESPACE: &str = "default";

fn gateway_labels() -> BTreeMap<String, String> {
    labels(&[
        (LABEL_APP, GATEWAY_NAME),
        ("app.kubernetes.io/component", "gateway"),
    ])
}

/// The ServiceAccount the gateway runs as, its Role and the RoleBinding.
pub(crate) fn rbac(ctx: &Context) -> Vec<Object> {
    let account = ServiceAccount {
        metadata: ctx.meta(GATEWAY_NAME, gateway_labels()),
        ..ServiceAccount::default()
    };
    let role = Role {
        metadata: ctx.meta(GATEWAY_NAME, gateway_labels()),
        rules: Some(policy_rules(RULES)),
    };
    let cluster_role = ClusterRole {
        metadata: cluster_meta(),
        rules: Some(policy_rules(CLUSTER_RULES)),
        aggregation_rule: None,
    };
    let cluster_binding = ClusterRoleBinding {
        metadata: cluster_meta(),
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".into(),
            kind: "ClusterRole".into(),
            name: GATEWAY_NAME.into(),
        },
        // A ClusterRoleBinding's ServiceAccount needs its namespace.
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".into(),
            name: GATEWAY_NAME.into(),
            namespace: Some(
                ctx.namespace
                    .clone()
                    .unwrap_or_else(|| DEFAULT_NAMESPACE.into()),
            ),
            api_group: None,
        }]),
    };
    let binding = RoleBinding {
        metadata: ctx.meta(GATEWAY_NAME, gateway_labels()),
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".into(),
            kind: "Role".into(),
            name: GATEWAY_NAME.into(),
        },
        // Without a namespace, a RoleBinding's ServiceAccount is the one of
        // the binding's own namespace: the base applies to any namespace.
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".into(),
            name: GATEWAY_NAME.into(),
            namespace: ctx.namespace.clone(),
            api_group: None,
        }]),
    };
    vec![
        Object::ServiceAccount(Box::new(account)),
        Object::Role(Box::new(role)),
        Object::RoleBinding(Box::new(binding)),
        Object::ClusterRole(Box::new(cluster_role)),
        Object::ClusterRoleBinding(Box::new(cluster_binding)),
    ]
}

/// The metadata of a cluster-scoped object: no namespace.
fn cluster_meta() -> ObjectMeta {
    ObjectMeta {
        name: Some(GATEWAY_NAME.into()),
        labels: Some(gateway_labels()),
        ..ObjectMeta::default()
    }
}

/// The gateway's listener port (8080 when the stack leaves it to the OS).
fn listen_port(gw: &ProxyConfig) -> u16 {
    gw.listeners
        .first()
        .map(|l| l.address.port())
        .filter(|p| *p != 0)
        .unwrap_or(CONTAINER_PORT)
}

/// The port of the gateway's metrics listener: [`METRICS_PORT`] or the
/// next one its listener and admin API leave free.
fn metrics_port(gw: &ProxyConfig) -> u16 {
    let taken = [listen_port(gw), gw.admin.address.port()];
    (METRICS_PORT..=u16::MAX)
        .find(|p| !taken.contains(p))
        .unwrap_or(METRICS_PORT)
}

/// The ConfigMap with the gateway's proxy config: the stack's routes and
/// services, the services with no static endpoints (discovery finds them),
/// the listener on every address of the pod, the admin API on its loopback
/// and the metrics listener (only `/metrics`) on every address, for
/// Prometheus.
pub(crate) fn config_map(ctx: &Context, gw: &ProxyConfig) -> Result<Object, RenderError> {
    if gw.admin.token.is_some() {
        return Err(RenderError::AdminToken);
    }
    let port = listen_port(gw);
    let admin_port = gw.admin.address.port();
    if admin_port == port {
        return Err(RenderError::OutOfRange {
            what: "the gateway's admin port (the same as its listener's)".into(),
            value: admin_port.to_string(),
        });
    }
    let tls = gw
        .listeners
        .first()
        .and_then(|l| l.tls.as_ref()?.first_certificate())
        .map(|_| (format!("{TLS_DIR}/tls.crt"), format!("{TLS_DIR}/tls.key")));
    // In the cluster, the versions' endpoints are their Services' pods.
    let gw = &ProxyConfig {
        discovery: Some(serin_config::proxy::Discovery::Kubernetes),
        ..gw.clone()
    };
    let text = proxy_file::write(
        gw,
        SocketAddr::from((Ipv4Addr::UNSPECIFIED, port)),
        SocketAddr::from((Ipv4Addr::LOCALHOST, admin_port)),
        Some(SocketAddr::from((Ipv4Addr::UNSPECIFIED, metrics_port(gw)))),
        tls,
    )?;
    Ok(Object::ConfigMap(Box::new(ConfigMap {
        metadata: ctx.meta(GATEWAY_NAME, gateway_labels()),
        data: Some(BTreeMap::from([(CONFIG_FILE.to_string(), text)])),
        ..ConfigMap::default()
    })))
}

/// The gateway's TLS Secret (when it has TLS), Service and Deployment.
pub(crate) fn workload(ctx: &Context, gw: &ProxyConfig) -> Result<Vec<Object>, RenderError> {
    let mut out = Vec::new();
    let port = listen_port(gw);
    let mut volumes = vec![
        Volume {
            name: "config".into(),
            config_map: Some(ConfigMapVolumeSource {
                name: GATEWAY_NAME.into(),
                ..ConfigMapVolumeSource::default()
            }),
            ..Volume::default()
        },
        Volume {
            name: "state".into(),
            empty_dir: Some(EmptyDirVolumeSource::default()),
            ..Volume::default()
        },
    ];
    let mut mounts = vec![
        mount("config", CONFIG_DIR),
        VolumeMount {
            read_only: None,
            ..mount("state", STATE_DIR)
        },
    ];
    // One kubernetes.io/tls Secret: the listener's default certificate (or
    // its first by SNI).
    if let Some(tls) = gw
        .listeners
        .first()
        .and_then(|l| l.tls.as_ref()?.first_certificate())
    {
        let read = |path: &std::path::Path| {
            std::fs::read_to_string(path).map_err(|e| RenderError::Read {
                path: path.to_path_buf(),
                source: e,
            })
        };
        let name = format!("{GATEWAY_NAME}-tls");
        out.push(Object::Secret(Box::new(Secret {
            metadata: ctx.meta(&name, gateway_labels()),
            type_: Some("kubernetes.io/tls".into()),
            string_data: Some(BTreeMap::from([
                ("tls.crt".to_string(), read(&tls.certificate)?),
                ("tls.key".to_string(), read(&tls.key)?),
            ])),
            ..Secret::default()
        })));
        volumes.push(Volume {
            name: "tls".into(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(name),
                default_mode: Some(0o440),
                ..SecretVolumeSource::default()
            }),
            ..Volume::default()
        });
        mounts.push(mount("tls", TLS_DIR));
    }

    out.push(Object::Service(Box::new(Service {
        metadata: ctx.meta(GATEWAY_NAME, gateway_labels()),
        spec: Some(ServiceSpec {
            selector: Some(BTreeMap::from([(
                LABEL_APP.to_string(),
                GATEWAY_NAME.to_string(),
            )])),
            ports: Some(vec![ServicePort {
                name: Some(PORT_NAME.into()),
                port: i32::from(SERVICE_PORT),
                target_port: Some(IntOrString::String(PORT_NAME.into())),
                protocol: Some("TCP".into()),
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    })));

    // The admin API (and its /ready) is on the pod's loopback, out of the
    // kubelet's reach: the probes check that the listener accepts.
    let tcp_probe = |period: i32| Probe {
        tcp_socket: Some(TCPSocketAction {
            port: IntOrString::String(PORT_NAME.into()),
            host: None,
        }),
        period_seconds: Some(period),
        timeout_seconds: Some(1),
        failure_threshold: Some(3),
        success_threshold: Some(1),
        ..Probe::default()
    };
    let container = Container {
        name: "serin".into(),
        image: Some(ctx.image_named("serin")),
        args: Some(
            [
                "proxy",
                "--config",
                &format!("{CONFIG_DIR}/{CONFIG_FILE}"),
                "--state-file",
                &format!("{STATE_DIR}/serin.state.json"),
            ]
            .iter()
            .map(|s| (*s).to_string())
            .collect(),
        ),
        ports: Some(vec![
            ContainerPort {
                name: Some(PORT_NAME.into()),
                container_port: i32::from(port),
                protocol: Some("TCP".into()),
                ..ContainerPort::default()
            },
            ContainerPort {
                name: Some(METRICS_PORT_NAME.into()),
                container_port: i32::from(metrics_port(gw)),
                protocol: Some("TCP".into()),
                ..ContainerPort::default()
            },
        ]),
        // The Lease holder's identity (status is written by one replica).
        env: Some(vec![EnvVar {
            name: crate::lease::POD_NAME_ENV.into(),
            value_from: Some(EnvVarSource {
                field_ref: Some(ObjectFieldSelector {
                    field_path: "metadata.name".into(),
                    api_version: None,
                }),
                ..EnvVarSource::default()
            }),
            value: None,
        }]),
        readiness_probe: Some(tcp_probe(5)),
        liveness_probe: Some(tcp_probe(10)),
        resources: Some(resources(CPU_REQUEST, MEMORY_REQUEST, MEMORY_LIMIT)),
        security_context: Some(container_security()),
        volume_mounts: Some(mounts),
        ..Container::default()
    };
    let grace = seconds(gw.drain_timeout, 0, "the gateway's drainTimeout")?
        .saturating_add(GRACE_MARGIN_SECONDS);
    let selector = BTreeMap::from([(LABEL_APP.to_string(), GATEWAY_NAME.to_string())]);
    out.push(Object::Deployment(Box::new(Deployment {
        metadata: ctx.meta(GATEWAY_NAME, gateway_labels()),
        spec: Some(DeploymentSpec {
            replicas: Some(REPLICAS),
            selector: LabelSelector {
                match_labels: Some(selector),
                match_expressions: None,
            },
            strategy: Some(DeploymentStrategy {
                type_: Some("RollingUpdate".into()),
                rolling_update: None,
            }),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(gateway_labels()),
                    annotations: Some(prometheus_annotations(metrics_port(gw))),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    service_account_name: Some(GATEWAY_NAME.into()),
                    automount_service_account_token: Some(true),
                    enable_service_links: Some(false),
                    termination_grace_period_seconds: Some(i64::from(grace)),
                    security_context: Some(pod_security()),
                    containers: vec![container],
                    volumes: Some(volumes),
                    ..PodSpec::default()
                }),
            },
            ..DeploymentSpec::default()
        }),
        ..Deployment::default()
    })));
    Ok(out)
}
