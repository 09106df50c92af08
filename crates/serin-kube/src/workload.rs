//! A stack service: its Service, and per version a Deployment, a Service and
//! the ConfigMap and Secrets its files and secrets become.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use k8s_openapi::ByteString;
use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment,
};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMap, ConfigMapVolumeSource, Container, ContainerPort, EmptyDirVolumeSource,
    EnvVar, EnvVarSource, ExecAction, HTTPGetAction, KeyToPath, ObjectFieldSelector,
    PodSecurityContext, PodSpec, PodTemplateSpec, Probe, ResourceRequirements, SeccompProfile,
    Secret, SecretKeySelector, SecretVolumeSource, SecurityContext, Service, ServicePort,
    ServiceSpec, TCPSocketAction, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serin_config::stack::{
    MAX_FILE_BYTES, ProbeAction, RestartPolicy, ServiceSpec as StackService, Strategy, VersionSpec,
};

use crate::names::{
    CONTAINER_PORT, Context, LABEL_APP, LABEL_VERSION, PORT_NAME, data_key, is_demo, labels,
    version_object_name, version_selector,
};
use crate::sidecar::Sidecar;
use crate::{Object, RenderError};

/// Where a version's `files` are mounted (`SERIN_FILES_DIR`).
pub const FILES_DIR: &str = "/var/run/serin/files";
/// Where `asFile` secrets are mounted (`SERIN_SECRETS_DIR`).
pub const SECRETS_DIR: &str = "/var/run/serin/secrets";
/// The working directory of a container whose args name files of the stack's
/// folder: locally a process runs in that folder.
pub const WORK_DIR: &str = "/srv/serin";
/// The non-root user and group the containers run as (the `nonroot` user of
/// distroless images; serin's images are built for it).
pub const RUN_AS: i64 = 65532;
/// Kubernetes' default file mode for ConfigMap volumes: readable by all.
const FILES_MODE: i32 = 0o444;
/// Secrets: readable by the owner and the pod's group (`fsGroup`) only.
const SECRETS_MODE: i32 = 0o440;

/// Resources a service asks for unless told otherwise. A small web service
/// idles far below these; the requests let the scheduler spread replicas.
/// No CPU limit: CFS throttling adds tail latency while spare CPU sits idle.
/// A memory limit stops a leak from taking the node down.
pub const SERVICE_CPU_REQUEST: &str = "100m";
pub const SERVICE_MEMORY_REQUEST: &str = "64Mi";
pub const SERVICE_MEMORY_LIMIT: &str = "256Mi";

/// Every object of one stack service.
pub(crate) fn service_objects(
    ctx: &Context,
    service: &StackService,
    sidecar: Option<&Sidecar>,
) -> Result<Vec<Object>, RenderError> {
    let mut out = vec![Object::Service(Box::new(service_for(
        ctx,
        &service.name,
        labels(&[(LABEL_APP, &service.name)]),
        BTreeMap::from([(LABEL_APP.to_string(), service.name.clone())]),
    )))];
    for v in &service.versions {
        out.extend(version_objects(ctx, &service.name, v, sidecar)?);
    }
    Ok(out)
}

/// A ClusterIP Service on port 8080 for the pods `selector` picks.
pub(crate) fn service_for(
    ctx: &Context,
    name: &str,
    labels: BTreeMap<String, String>,
    selector: BTreeMap<String, String>,
) -> Service {
    Service {
        metadata: ctx.meta(name, labels),
        spec: Some(ServiceSpec {
            selector: Some(selector),
            ports: Some(vec![ServicePort {
                name: Some(PORT_NAME.into()),
                port: i32::from(CONTAINER_PORT),
                target_port: Some(IntOrString::String(PORT_NAME.into())),
                protocol: Some("TCP".into()),
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

/// What the volumes of a version add to its container.
#[derive(Default)]
struct Mounts {
    volumes: Vec<Volume>,
    mounts: Vec<VolumeMount>,
    env: Vec<EnvVar>,
    working_dir: Option<String>,
}

fn version_objects(
    ctx: &Context,
    service: &str,
    v: &VersionSpec,
    sidecar: Option<&Sidecar>,
) -> Result<Vec<Object>, RenderError> {
    if v.restart_policy != RestartPolicy::Always {
        return Err(RenderError::RestartPolicy {
            service: service.into(),
            version: v.name.clone(),
            policy: v.restart_policy.as_str(),
        });
    }
    let name = version_object_name(service, &v.name);
    let obj_labels = labels(&[(LABEL_APP, service), (LABEL_VERSION, &v.name)]);
    let mut out = Vec::new();
    let mut m = Mounts::default();
    if let Some(cm) = files_config_map(ctx, &name, &obj_labels, v, &mut m) {
        out.push(Object::ConfigMap(Box::new(cm)));
    }
    if let Some(secret) = secrets(ctx, &name, &obj_labels, v, &mut m) {
        out.push(Object::Secret(Box::new(secret)));
    }
    if let Some(secret) = work_dir(ctx, &name, &obj_labels, v, &mut m)? {
        out.push(Object::Secret(Box::new(secret)));
    }
    out.push(Object::Service(Box::new(service_for(
        ctx,
        &name,
        obj_labels.clone(),
        version_selector(service, &v.name),
    ))));
    let pod = Pod {
        service,
        name: &name,
        labels: obj_labels,
        sidecar,
    };
    out.push(Object::Deployment(Box::new(deployment(ctx, pod, v, m)?)));
    Ok(out)
}

/// `files` as a ConfigMap (text as `data`, anything else as `binaryData`),
/// mounted read-only at [`FILES_DIR`].
fn files_config_map(
    ctx: &Context,
    name: &str,
    obj_labels: &BTreeMap<String, String>,
    v: &VersionSpec,
    m: &mut Mounts,
) -> Option<ConfigMap> {
    if v.files.is_empty() {
        return None;
    }
    let cm_name = format!("{name}-files");
    let mut taken = BTreeSet::new();
    let mut data = BTreeMap::new();
    let mut binary = BTreeMap::new();
    let mut items = Vec::new();
    for f in &v.files {
        let path = f.path.to_string_lossy().replace('\\', "/");
        let key = data_key(&path, &mut taken);
        match String::from_utf8(f.content.clone()) {
            Ok(text) => {
                data.insert(key.clone(), text);
            }
            Err(e) => {
                binary.insert(key.clone(), ByteString(e.into_bytes()));
            }
        }
        items.push(KeyToPath {
            key,
            path,
            mode: None,
        });
    }
    m.volumes.push(Volume {
        name: "files".into(),
        config_map: Some(ConfigMapVolumeSource {
            name: cm_name.clone(),
            items: Some(items),
            default_mode: Some(FILES_MODE),
            ..ConfigMapVolumeSource::default()
        }),
        ..Volume::default()
    });
    m.mounts.push(mount("files", FILES_DIR));
    m.env.push(env("SERIN_FILES_DIR", FILES_DIR));
    Some(ConfigMap {
        metadata: ctx.meta(&cm_name, obj_labels.clone()),
        data: (!data.is_empty()).then_some(data),
        binary_data: (!binary.is_empty()).then_some(binary),
        ..ConfigMap::default()
    })
}

/// `secrets` as one Secret: each is an env var from it, or with `asFile` a
/// file of it under [`SECRETS_DIR`].
fn secrets(
    ctx: &Context,
    name: &str,
    obj_labels: &BTreeMap<String, String>,
    v: &VersionSpec,
    m: &mut Mounts,
) -> Option<Secret> {
    if v.secrets.is_empty() {
        return None;
    }
    let secret_name = format!("{name}-secrets");
    let mut string_data = BTreeMap::new();
    let mut items = Vec::new();
    for s in &v.secrets {
        // Secret names are environment variable names: valid keys as they are.
        string_data.insert(s.name.clone(), s.value.expose().to_string());
        if s.as_file {
            items.push(KeyToPath {
                key: s.name.clone(),
                path: s.name.clone(),
                mode: None,
            });
        } else {
            m.env.push(EnvVar {
                name: s.name.clone(),
                value_from: Some(EnvVarSource {
                    secret_key_ref: Some(SecretKeySelector {
                        name: secret_name.clone(),
                        key: s.name.clone(),
                        optional: Some(false),
                    }),
                    ..EnvVarSource::default()
                }),
                ..EnvVar::default()
            });
        }
    }
    if !items.is_empty() {
        m.volumes.push(Volume {
            name: "secrets".into(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(secret_name.clone()),
                items: Some(items),
                default_mode: Some(SECRETS_MODE),
                ..SecretVolumeSource::default()
            }),
            ..Volume::default()
        });
        m.mounts.push(mount("secrets", SECRETS_DIR));
        m.env.push(env("SERIN_SECRETS_DIR", SECRETS_DIR));
    }
    Some(Secret {
        metadata: ctx.meta(&secret_name, obj_labels.clone()),
        type_: Some("Opaque".into()),
        string_data: Some(string_data),
        ..Secret::default()
    })
}

/// Locally a process runs in the stack file's folder, so an argument such as
/// `credentials.txt` names a file there. Each argument that is the relative
/// path of a file in that folder is shipped in a Secret (it may hold
/// credentials) mounted as the container's working directory.
fn work_dir(
    ctx: &Context,
    name: &str,
    obj_labels: &BTreeMap<String, String>,
    v: &VersionSpec,
    m: &mut Mounts,
) -> Result<Option<Secret>, RenderError> {
    let mut taken = BTreeSet::new();
    let mut string_data = BTreeMap::new();
    let mut data = BTreeMap::new();
    let mut items: Vec<KeyToPath> = Vec::new();
    for arg in &v.args {
        let rel = std::path::Path::new(arg);
        let plain = !arg.starts_with('-')
            && rel.is_relative()
            && rel
                .components()
                .all(|c| matches!(c, std::path::Component::Normal(_)));
        if !plain || items.iter().any(|i| &i.path == arg) {
            continue;
        }
        let full = ctx.base_dir.join(rel);
        let Ok(meta) = std::fs::metadata(&full) else {
            continue;
        };
        if !meta.is_file() || meta.len() > MAX_FILE_BYTES {
            continue;
        }
        let content = std::fs::read(&full).map_err(|e| RenderError::Read {
            path: full.clone(),
            source: e,
        })?;
        let key = data_key(arg, &mut taken);
        match String::from_utf8(content) {
            Ok(text) => {
                string_data.insert(key.clone(), text);
            }
            Err(e) => {
                data.insert(key.clone(), ByteString(e.into_bytes()));
            }
        }
        items.push(KeyToPath {
            key,
            path: arg.clone(),
            mode: None,
        });
    }
    if items.is_empty() {
        return Ok(None);
    }
    let secret_name = format!("{name}-workdir");
    m.volumes.push(Volume {
        name: "workdir".into(),
        secret: Some(SecretVolumeSource {
            secret_name: Some(secret_name.clone()),
            items: Some(items),
            default_mode: Some(SECRETS_MODE),
            ..SecretVolumeSource::default()
        }),
        ..Volume::default()
    });
    m.mounts.push(mount("workdir", WORK_DIR));
    m.working_dir = Some(WORK_DIR.into());
    Ok(Some(Secret {
        metadata: ctx.meta(&secret_name, obj_labels.clone()),
        type_: Some("Opaque".into()),
        string_data: (!string_data.is_empty()).then_some(string_data),
        data: (!data.is_empty()).then_some(data),
        ..Secret::default()
    }))
}

/// Whose pods a Deployment makes.
struct Pod<'a> {
    service: &'a str,
    name: &'a str,
    labels: BTreeMap<String, String>,
    /// With a sidecar, the app listens on the pod's loopback behind it.
    sidecar: Option<&'a Sidecar>,
}

fn deployment(
    ctx: &Context,
    pod: Pod<'_>,
    v: &VersionSpec,
    m: Mounts,
) -> Result<Deployment, RenderError> {
    let Pod {
        service,
        name,
        labels: obj_labels,
        sidecar,
    } = pod;
    let what = |field: &str| format!("{service}/{}: {field}", v.name);
    let mut env_vars = match sidecar {
        Some(sc) => sc.app_env(),
        None => vec![env("PORT", &CONTAINER_PORT.to_string())],
    };
    env_vars.extend([
        env("SERIN_SERVICE", service),
        env("SERIN_VERSION", &v.name),
        EnvVar {
            name: "SERIN_REPLICA".into(),
            value_from: Some(EnvVarSource {
                field_ref: Some(ObjectFieldSelector {
                    field_path: "metadata.name".into(),
                    api_version: None,
                }),
                ..EnvVarSource::default()
            }),
            ..EnvVar::default()
        },
    ]);
    env_vars.extend(m.env);
    env_vars.extend(v.env.iter().map(|(k, val)| env(k, &escape_expansion(val))));

    let mut args: Vec<String> = v.args.iter().map(|a| escape_expansion(a)).collect();
    // The demo services listen on loopback unless told otherwise; in a pod
    // the kubelet's probes and the Services come from outside it, or, with
    // a sidecar, through the sidecar on the pod's loopback.
    if is_demo(&v.program)
        && !args
            .iter()
            .any(|a| a == "--host" || a.starts_with("--host="))
    {
        let host = if sidecar.is_some() {
            "127.0.0.1"
        } else {
            "0.0.0.0"
        };
        args.extend(["--host".to_string(), host.to_string()]);
    }

    // The probes' port: the container's, or with a sidecar its inbound
    // listener (a number: the app's container declares no port), so that
    // they go through the sidecar to the app.
    let probe_port = match sidecar {
        Some(_) => IntOrString::Int(i32::from(CONTAINER_PORT)),
        None => IntOrString::String(PORT_NAME.into()),
    };
    // No readiness probe means "ready once the port accepts connections",
    // which is what a TCP probe checks.
    let readiness = match &v.readiness {
        Some(p) => probe(p, &probe_port, &what("readiness"))?,
        None => Probe {
            tcp_socket: Some(TCPSocketAction {
                port: probe_port.clone(),
                host: None,
            }),
            ..default_probe_timing()
        },
    };
    let liveness = v
        .liveness
        .as_ref()
        .map(|p| probe(p, &probe_port, &what("liveness")))
        .transpose()?;

    let mut volumes = m.volumes;
    let mut mounts = m.mounts;
    // The root filesystem is read-only; programs get a writable /tmp.
    volumes.push(Volume {
        name: "tmp".into(),
        empty_dir: Some(EmptyDirVolumeSource::default()),
        ..Volume::default()
    });
    mounts.push(VolumeMount {
        read_only: None,
        ..mount("tmp", "/tmp")
    });

    let container = Container {
        name: service.into(),
        image: Some(ctx.image(service, &v.program)),
        args: (!args.is_empty()).then_some(args),
        env: Some(env_vars),
        // With a sidecar, the pod's port is the sidecar's.
        ports: sidecar.is_none().then(|| {
            vec![ContainerPort {
                name: Some(PORT_NAME.into()),
                container_port: i32::from(CONTAINER_PORT),
                protocol: Some("TCP".into()),
                ..ContainerPort::default()
            }]
        }),
        readiness_probe: Some(readiness),
        liveness_probe: liveness,
        resources: Some(resources(
            SERVICE_CPU_REQUEST,
            SERVICE_MEMORY_REQUEST,
            SERVICE_MEMORY_LIMIT,
        )),
        security_context: Some(container_security()),
        volume_mounts: Some(mounts),
        working_dir: m.working_dir,
        ..Container::default()
    };

    let strategy = match v.strategy {
        Strategy::RollingUpdate {
            max_surge,
            max_unavailable,
        } => DeploymentStrategy {
            type_: Some("RollingUpdate".into()),
            rolling_update: Some(RollingUpdateDeployment {
                max_surge: Some(IntOrString::Int(int(max_surge, &what("maxSurge"))?)),
                max_unavailable: Some(IntOrString::Int(int(
                    max_unavailable,
                    &what("maxUnavailable"),
                )?)),
            }),
        },
        Strategy::Recreate => DeploymentStrategy {
            type_: Some("Recreate".into()),
            rolling_update: None,
        },
    };

    // With a sidecar, Prometheus scrapes its metrics: every hop of the pod.
    let annotations = crate::names::prometheus_annotations(match sidecar {
        Some(_) => crate::names::METRICS_PORT,
        None => CONTAINER_PORT,
    });
    let mut pod_spec = PodSpec {
        containers: vec![container],
        volumes: Some(volumes),
        termination_grace_period_seconds: Some(i64::from(seconds(
            v.termination_grace_period,
            0,
            &what("terminationGracePeriod"),
        )?)),
        // The services do not talk to the API server.
        automount_service_account_token: Some(false),
        // No FOO_SERVICE_HOST variables: they could shadow the
        // stack's own env, and DNS finds Services anyway.
        enable_service_links: Some(false),
        security_context: Some(pod_security()),
        ..PodSpec::default()
    };
    if let Some(sc) = sidecar {
        sc.add_to(ctx, &mut pod_spec);
    }

    Ok(Deployment {
        metadata: ctx.meta(name, obj_labels.clone()),
        spec: Some(DeploymentSpec {
            replicas: Some(int(v.replicas, &what("replicas"))?),
            selector: LabelSelector {
                match_labels: Some(version_selector(service, &v.name)),
                match_expressions: None,
            },
            strategy: Some(strategy),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(obj_labels),
                    annotations: Some(annotations),
                    ..ObjectMeta::default()
                }),
                spec: Some(pod_spec),
            },
            ..DeploymentSpec::default()
        }),
        ..Deployment::default()
    })
}

/// A stack probe as a Kubernetes probe: the same action on the container's
/// port (or the probe's own port), durations rounded up to whole seconds.
fn probe(
    p: &serin_config::stack::Probe,
    default_port: &IntOrString,
    what: &str,
) -> Result<Probe, RenderError> {
    let port = |port: Option<u16>| match port {
        Some(n) => IntOrString::Int(i32::from(n)),
        None => default_port.clone(),
    };
    let mut out = Probe {
        initial_delay_seconds: Some(seconds(
            p.initial_delay,
            0,
            &format!("{what} initialDelay"),
        )?),
        period_seconds: Some(seconds(p.period, 1, &format!("{what} period"))?),
        timeout_seconds: Some(seconds(p.timeout, 1, &format!("{what} timeout"))?),
        failure_threshold: Some(int(
            p.failure_threshold,
            &format!("{what} failureThreshold"),
        )?),
        success_threshold: Some(int(
            p.success_threshold,
            &format!("{what} successThreshold"),
        )?),
        ..Probe::default()
    };
    match &p.action {
        ProbeAction::HttpGet { path, port: p } => {
            out.http_get = Some(HTTPGetAction {
                path: Some(path.clone()),
                port: port(*p),
                scheme: Some("HTTP".into()),
                ..HTTPGetAction::default()
            });
        }
        ProbeAction::TcpSocket { port: p } => {
            out.tcp_socket = Some(TCPSocketAction {
                port: port(*p),
                host: None,
            });
        }
        ProbeAction::Exec { command } => {
            out.exec = Some(ExecAction {
                command: Some(command.clone()),
            });
        }
    }
    Ok(out)
}

/// Kubernetes' probe defaults, written out.
fn default_probe_timing() -> Probe {
    use serin_config::stack::{
        DEFAULT_PROBE_FAILURE_THRESHOLD, DEFAULT_PROBE_PERIOD, DEFAULT_PROBE_SUCCESS_THRESHOLD,
        DEFAULT_PROBE_TIMEOUT,
    };
    let secs = |d: Duration| i32::try_from(d.as_secs()).unwrap_or(i32::MAX);
    let n = |v: u32| i32::try_from(v).unwrap_or(i32::MAX);
    Probe {
        period_seconds: Some(secs(DEFAULT_PROBE_PERIOD)),
        timeout_seconds: Some(secs(DEFAULT_PROBE_TIMEOUT)),
        failure_threshold: Some(n(DEFAULT_PROBE_FAILURE_THRESHOLD)),
        success_threshold: Some(n(DEFAULT_PROBE_SUCCESS_THRESHOLD)),
        ..Probe::default()
    }
}

/// Whole seconds, rounded up, at least `min`.
pub(crate) fn seconds(d: Duration, min: i32, what: &str) -> Result<i32, RenderError> {
    let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    let secs = i32::try_from(secs).map_err(|_| RenderError::OutOfRange {
        what: what.into(),
        value: format!("{d:?}"),
    })?;
    Ok(secs.max(min))
}

pub(crate) fn int(v: u32, what: &str) -> Result<i32, RenderError> {
    i32::try_from(v).map_err(|_| RenderError::OutOfRange {
        what: what.into(),
        value: v.to_string(),
    })
}

pub(crate) fn env(name: &str, value: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value.into()),
        value_from: None,
    }
}

pub(crate) fn mount(volume: &str, path: &str) -> VolumeMount {
    VolumeMount {
        name: volume.into(),
        mount_path: path.into(),
        read_only: Some(true),
        ..VolumeMount::default()
    }
}

/// Kubernetes expands `$(VAR)` in args and env values, and `$$` to `$`; the
/// local runtime expands nothing. Doubling every `$` keeps the text as
/// written.
pub(crate) fn escape_expansion(s: &str) -> String {
    s.replace('$', "$$")
}

pub(crate) fn resources(cpu: &str, memory: &str, memory_limit: &str) -> ResourceRequirements {
    ResourceRequirements {
        requests: Some(BTreeMap::from([
            ("cpu".to_string(), Quantity(cpu.into())),
            ("memory".to_string(), Quantity(memory.into())),
        ])),
        limits: Some(BTreeMap::from([(
            "memory".to_string(),
            Quantity(memory_limit.into()),
        )])),
        ..ResourceRequirements::default()
    }
}

/// Non-root, with the restricted Pod Security Standard's settings.
pub(crate) fn pod_security() -> PodSecurityContext {
    PodSecurityContext {
        run_as_non_root: Some(true),
        run_as_user: Some(RUN_AS),
        run_as_group: Some(RUN_AS),
        fs_group: Some(RUN_AS),
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".into(),
            localhost_profile: None,
        }),
        ..PodSecurityContext::default()
    }
}

pub(crate) fn container_security() -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        read_only_root_filesystem: Some(true),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".into()]),
            add: None,
        }),
        ..SecurityContext::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_round_up() {
        assert_eq!(seconds(Duration::from_millis(500), 1, "x").ok(), Some(1));
        assert_eq!(seconds(Duration::from_millis(1500), 1, "x").ok(), Some(2));
        assert_eq!(seconds(Duration::ZERO, 1, "x").ok(), Some(1));
        assert_eq!(seconds(Duration::ZERO, 0, "x").ok(), Some(0));
        assert!(seconds(Duration::from_secs(u64::MAX), 0, "x").is_err());
    }

    #[test]
    fn dollars_survive_kubernetes_expansion() {
        assert_eq!(escape_expansion("plain"), "plain");
        assert_eq!(escape_expansion("$(HOME)"), "$$(HOME)");
        assert_eq!(escape_expansion("a$$b"), "a$$$$b");
    }
}
