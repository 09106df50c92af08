//! A service's sidecar in its pods: the serin container beside the app,
//! the ConfigMap with its proxy config (inbound listener, one outbound
//! listener per dependency, the stack's `caller>callee` routes), and the
//! ServiceAccounts and Role it needs to follow EndpointSlices.
//!
//! The listeners, services and routes are those `serin up` gives a replica
//! (`in:R`, `app:R`, `inbound:R`, `out:R:DEP`), with the service's name for
//! the replica's: a pod is one replica, and its name is not known when the
//! objects are rendered.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, SocketAddr};

use k8s_openapi::api::core::v1::{
    ConfigMap, ConfigMapProjection, ConfigMapVolumeSource, Container, ContainerPort,
    DownwardAPIProjection, DownwardAPIVolumeFile, EmptyDirVolumeSource, KeyToPath,
    ObjectFieldSelector, PodSpec, Probe, ProjectedVolumeSource, ServiceAccount,
    ServiceAccountTokenProjection, TCPSocketAction, Volume, VolumeMount, VolumeProjection,
};
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serin_config::proxy::{
    Discovery, FilterConfig, ProxyConfig, RouteConfig, ServiceConfig, defaults,
};
use serin_config::stack::{ServiceSpec as StackService, StackFile, mesh_route_name, sidecar};

use crate::names::{
    CONTAINER_PORT, Context, LABEL_APP, METRICS_PORT, METRICS_PORT_NAME, PORT_NAME, labels,
};
use crate::workload::{container_security, env, mount, resources};
use crate::{Object, RenderError, proxy_file};

/// The sidecar's container in the pod.
pub const CONTAINER_NAME: &str = "serin-sidecar";
/// Where its config file is, from its ConfigMap (`S-sidecar`, key
/// `serin.yaml`).
pub const CONFIG_DIR: &str = "/etc/serin-sidecar";
/// The ConfigMap's key and the file's name under [`CONFIG_DIR`]: the
/// gateway's.
pub use crate::gateway::CONFIG_FILE;
/// Where it keeps weights changed through its admin API (a writable
/// volume; the ConfigMap's is read-only).
pub const STATE_DIR: &str = "/var/run/serin-sidecar/state";
/// The app's port, on the pod's loopback only. The container port
/// ([`CONTAINER_PORT`], which the Services and the kubelet's probes reach)
/// is the sidecar's inbound listener; the app takes the next one.
pub const APP_PORT: u16 = 8081;
/// The first outbound listener's port (127.0.0.1), one more per dependency
/// in the order the stack lists them: Linkerd's outbound port, far from the
/// ports a web app picks for itself.
pub const OUTBOUND_FIRST_PORT: u16 = 4140;
/// The sidecar's admin API, on the pod's loopback (it can change routing):
/// serin's default admin port.
pub const ADMIN_PORT: u16 = defaults::ADMIN_ADDRESS.port();
/// A sidecar carries one pod's traffic: one worker keeps it small, as
/// Linkerd's proxy keeps to one core unless told otherwise.
pub const WORKERS: usize = 1;
/// Resources of the sidecar: far less than the gateway's, since it carries
/// one pod's traffic. No CPU limit (throttling adds tail latency).
pub const CPU_REQUEST: &str = "50m";
pub const MEMORY_REQUEST: &str = "32Mi";
pub const MEMORY_LIMIT: &str = "256Mi";
/// The Role and RoleBinding of every sidecar.
pub const RBAC_NAME: &str = "serin-sidecar";
/// Where Kubernetes client libraries (kube-rs' in-cluster config) look for
/// the ServiceAccount token, the cluster's CA and the namespace.
const TOKEN_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
/// The kubelet's own lifetime for the token it mounts (an hour and 7 s);
/// it rotates the file well before the token expires.
const TOKEN_SECONDS: i64 = 3607;

/// A service's sidecar: its outbound listeners and its proxy config.
pub(crate) struct Sidecar {
    service: String,
    /// `(env, port)` per dependency, in the stack's order.
    outbound: Vec<(String, u16)>,
    config: ProxyConfig,
}

/// The sidecar of `service`, when the stack gives it one.
pub(crate) fn plan(
    stack: &StackFile,
    service: &StackService,
) -> Result<Option<Sidecar>, RenderError> {
    let Some(spec) = service.versions.iter().find_map(|v| v.sidecar.as_ref()) else {
        return Ok(None);
    };
    let name = &service.name;
    let ports = outbound_ports(spec.outbound.len())?;
    let inbound = format!("in:{name}");
    let app = format!("app:{name}");
    let gw = &stack.gateway;
    let mut listeners = vec![sidecar::listener(
        inbound.clone(),
        SocketAddr::from((Ipv4Addr::UNSPECIFIED, CONTAINER_PORT)),
    )];
    let mut routes = vec![inbound_route(name, inbound, app.clone())];
    let mut outbound = Vec::new();
    for (o, port) in spec.outbound.iter().zip(ports) {
        let out = format!("out:{name}:{}", o.service);
        listeners.push(sidecar::listener(
            out.clone(),
            SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
        ));
        // The stack's own route of this hop, checked with the gateway's.
        let route_name = mesh_route_name(name, &o.service);
        if let Some(r) = stack.mesh.iter().find(|r| r.name == route_name) {
            routes.push(RouteConfig {
                listeners: vec![out],
                ..r.clone()
            });
        }
        outbound.push((o.env.clone(), port));
    }
    let called = called_services(&routes);
    let mut services: Vec<ServiceConfig> = gw
        .services
        .iter()
        .filter(|s| called.contains(&s.name))
        .cloned()
        .collect();
    services.extend(app_service(gw, name, app));
    let config = ProxyConfig {
        listeners,
        services,
        routes,
        discovery: Some(Discovery::Kubernetes),
        routes_from_kubernetes: false,
        workers: WORKERS,
        warnings: Vec::new(),
        ..gw.clone()
    };
    Ok(Some(Sidecar {
        service: name.clone(),
        outbound,
        config,
    }))
}

/// [`OUTBOUND_FIRST_PORT`] upward, past the pod's other ports.
fn outbound_ports(n: usize) -> Result<Vec<u16>, RenderError> {
    let taken = [CONTAINER_PORT, APP_PORT, METRICS_PORT, ADMIN_PORT];
    let ports: Vec<u16> = (OUTBOUND_FIRST_PORT..=u16::MAX)
        .filter(|p| !taken.contains(p))
        .take(n)
        .collect();
    if ports.len() < n {
        return Err(RenderError::OutOfRange {
            what: "a sidecar's outbound listeners (one port each)".into(),
            value: n.to_string(),
        });
    }
    Ok(ports)
}

/// `inbound:S`: everything the inbound listener takes goes to the app.
fn inbound_route(service: &str, listener: String, app: String) -> RouteConfig {
    RouteConfig {
        name: format!("inbound:{service}"),
        listeners: vec![listener],
        hostnames: Vec::new(),
        rules: vec![sidecar::to_app(app)],
    }
}

/// `app:S`: the app on the pod's loopback (see [`sidecar::app_service`]).
fn app_service(gw: &ProxyConfig, service: &str, app: String) -> Option<ServiceConfig> {
    let template = gw.services.iter().find(|s| s.name == service)?;
    let endpoint = SocketAddr::from((Ipv4Addr::LOCALHOST, APP_PORT));
    Some(sidecar::app_service(template, app, endpoint))
}

/// The services the routes send requests to: backends, mirrors, auth.
fn called_services(routes: &[RouteConfig]) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for rule in routes.iter().flat_map(|r| &r.rules) {
        out.extend(rule.backends.iter().map(|b| b.service.clone()));
        for f in &rule.filters {
            match f {
                FilterConfig::ExternalAuth(a) => {
                    out.insert(a.service.clone());
                }
                FilterConfig::RequestMirror(m) => {
                    out.insert(m.service.clone());
                }
                _ => {}
            }
        }
    }
    out
}

fn sidecar_labels(service: &str) -> BTreeMap<String, String> {
    labels(&[
        (LABEL_APP, service),
        ("app.kubernetes.io/component", "sidecar"),
    ])
}

impl Sidecar {
    fn config_map_name(&self) -> String {
        format!("{}-sidecar", self.service)
    }

    /// The ConfigMap `S-sidecar` with the sidecar's proxy config: the
    /// admin API on the pod's loopback, metrics on every address.
    pub(crate) fn config_map(&self, ctx: &Context) -> Result<Object, RenderError> {
        let text = proxy_file::write_all(
            &self.config,
            SocketAddr::from((Ipv4Addr::LOCALHOST, ADMIN_PORT)),
            SocketAddr::from((Ipv4Addr::UNSPECIFIED, METRICS_PORT)),
            &format!("the proxy config of {}'s sidecar", self.service),
        )?;
        Ok(Object::ConfigMap(Box::new(ConfigMap {
            metadata: ctx.meta(&self.config_map_name(), sidecar_labels(&self.service)),
            data: Some(BTreeMap::from([(CONFIG_FILE.to_string(), text)])),
            ..ConfigMap::default()
        })))
    }

    /// What the app finds in its environment: `PORT` on loopback and
    /// each dependency's outbound URL.
    pub(crate) fn app_env(&self) -> Vec<k8s_openapi::api::core::v1::EnvVar> {
        let mut out = vec![env("PORT", &APP_PORT.to_string())];
        for (name, port) in &self.outbound {
            out.push(env(name, &format!("http://127.0.0.1:{port}")));
        }
        out
    }

    /// Puts the sidecar into a pod: a native sidecar (an init container
    /// that keeps running, so it starts before the app and stops after
    /// it), its volumes, the service's ServiceAccount with the token in the
    /// sidecar only, and the scrape annotations on its metrics port.
    pub(crate) fn add_to(&self, ctx: &Context, pod: &mut PodSpec) {
        pod.init_containers
            .get_or_insert_with(Vec::new)
            .push(self.container(ctx));
        pod.volumes
            .get_or_insert_with(Vec::new)
            .extend(self.volumes());
        pod.service_account_name = Some(self.service.clone());
        // The app does not talk to the API server: no token for it.
        pod.automount_service_account_token = Some(false);
    }

    fn container(&self, ctx: &Context) -> Container {
        let tcp = |port: &str, period: i32| Probe {
            tcp_socket: Some(TCPSocketAction {
                port: IntOrString::String(port.into()),
                host: None,
            }),
            period_seconds: Some(period),
            timeout_seconds: Some(1),
            failure_threshold: Some(3),
            success_threshold: Some(1),
            ..Probe::default()
        };
        let port = |name: &str, number: u16| ContainerPort {
            name: Some(name.into()),
            container_port: i32::from(number),
            protocol: Some("TCP".into()),
            ..ContainerPort::default()
        };
        let args = [
            "proxy",
            "--config",
            &format!("{CONFIG_DIR}/{CONFIG_FILE}"),
            "--state-file",
            &format!("{STATE_DIR}/serin.state.json"),
        ];
        Container {
            name: CONTAINER_NAME.into(),
            image: Some(ctx.image_named("serin")),
            args: Some(args.iter().map(|s| (*s).to_string()).collect()),
            ports: Some(vec![
                port(PORT_NAME, CONTAINER_PORT),
                port(METRICS_PORT_NAME, METRICS_PORT),
            ]),
            // The app starts once the inbound listener is bound.
            startup_probe: Some(Probe {
                failure_threshold: Some(30),
                ..tcp(PORT_NAME, 1)
            }),
            readiness_probe: Some(tcp(PORT_NAME, 5)),
            liveness_probe: Some(tcp(METRICS_PORT_NAME, 10)),
            restart_policy: Some("Always".into()),
            resources: Some(resources(CPU_REQUEST, MEMORY_REQUEST, MEMORY_LIMIT)),
            security_context: Some(container_security()),
            volume_mounts: Some(vec![
                mount("sidecar-config", CONFIG_DIR),
                VolumeMount {
                    read_only: None,
                    ..mount("sidecar-state", STATE_DIR)
                },
                mount("sidecar-token", TOKEN_DIR),
            ]),
            ..Container::default()
        }
    }

    fn volumes(&self) -> Vec<Volume> {
        vec![
            Volume {
                name: "sidecar-config".into(),
                config_map: Some(ConfigMapVolumeSource {
                    name: self.config_map_name(),
                    ..ConfigMapVolumeSource::default()
                }),
                ..Volume::default()
            },
            Volume {
                name: "sidecar-state".into(),
                empty_dir: Some(EmptyDirVolumeSource::default()),
                ..Volume::default()
            },
            token_volume(),
        ]
    }
}

/// What the kubelet mounts when it mounts a ServiceAccount token (the
/// token, the cluster's CA, the namespace), for the sidecar's container
/// only.
fn token_volume() -> Volume {
    Volume {
        name: "sidecar-token".into(),
        projected: Some(ProjectedVolumeSource {
            sources: Some(vec![
                VolumeProjection {
                    service_account_token: Some(ServiceAccountTokenProjection {
                        path: "token".into(),
                        expiration_seconds: Some(TOKEN_SECONDS),
                        audience: None,
                    }),
                    ..VolumeProjection::default()
                },
                VolumeProjection {
                    config_map: Some(ConfigMapProjection {
                        name: "kube-root-ca.crt".into(),
                        items: Some(vec![KeyToPath {
                            key: "ca.crt".into(),
                            path: "ca.crt".into(),
                            mode: None,
                        }]),
                        optional: None,
                    }),
                    ..VolumeProjection::default()
                },
                VolumeProjection {
                    downward_api: Some(DownwardAPIProjection {
                        items: Some(vec![DownwardAPIVolumeFile {
                            path: "namespace".into(),
                            field_ref: Some(ObjectFieldSelector {
                                field_path: "metadata.namespace".into(),
                                api_version: None,
                            }),
                            ..DownwardAPIVolumeFile::default()
                        }]),
                    }),
                    ..VolumeProjection::default()
                },
            ]),
            default_mode: None,
        }),
        ..Volume::default()
    }
}

/// A ServiceAccount per service with a sidecar, named after it: the
/// identity its pods run as (the one a mesh's mutual TLS names, as
/// Linkerd's and Istio's do), and one Role and RoleBinding for all of
/// them, since every sidecar needs the same: to follow the namespace's
/// EndpointSlices. Nothing when no service has a sidecar.
pub(crate) fn rbac(ctx: &Context, sidecars: &[Option<Sidecar>]) -> Vec<Object> {
    let sidecars: Vec<&Sidecar> = sidecars.iter().flatten().collect();
    if sidecars.is_empty() {
        return Vec::new();
    }
    let mut out: Vec<Object> = sidecars
        .iter()
        .map(|s| {
            Object::ServiceAccount(Box::new(ServiceAccount {
                metadata: ctx.meta(&s.service, sidecar_labels(&s.service)),
                ..ServiceAccount::default()
            }))
        })
        .collect();
    let rbac_labels = labels(&[("app.kubernetes.io/component", "sidecar")]);
    out.push(Object::Role(Box::new(Role {
        metadata: ctx.meta(RBAC_NAME, rbac_labels.clone()),
        rules: Some(vec![PolicyRule {
            api_groups: Some(vec!["discovery.k8s.io".into()]),
            resources: Some(vec!["endpointslices".into()]),
            verbs: ["get", "list", "watch"].map(String::from).to_vec(),
            ..PolicyRule::default()
        }]),
    })));
    out.push(Object::RoleBinding(Box::new(RoleBinding {
        metadata: ctx.meta(RBAC_NAME, rbac_labels),
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".into(),
            kind: "Role".into(),
            name: RBAC_NAME.into(),
        },
        // No namespace: the ServiceAccounts of the binding's own.
        subjects: Some(
            sidecars
                .iter()
                .map(|s| Subject {
                    kind: "ServiceAccount".into(),
                    name: s.service.clone(),
                    namespace: ctx.namespace.clone(),
                    api_group: None,
                })
                .collect(),
        ),
    })));
    out
}
