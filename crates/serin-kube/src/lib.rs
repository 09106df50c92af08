//! serin on Kubernetes: the objects a stack file becomes in a cluster.
//!
//! [`render`] turns a loaded stack file ([`serin_config::stack::StackFile`])
//! into typed Kubernetes objects ([`Object`]), written as one YAML stream
//! ([`Manifests::to_yaml`]) or as a Kustomize base ([`Manifests::kustomize`],
//! [`write_kustomize`]). `serin render kubernetes STACK` prints the stream.
//!
//! # What a stack becomes
//!
//! | stack | Kubernetes |
//! |---|---|
//! | a service version `S/V` | Deployment `S-V` (labels `app: S`, `version: V`), Service `S-V` selecting that version |
//! | a service `S` | Service `S` selecting every version (`app: S`) |
//! | `replicas`, `strategy`, `terminationGracePeriod` | the Deployment's `replicas`, `strategy`, `terminationGracePeriodSeconds` |
//! | `readiness`, `liveness` | `readinessProbe`, `livenessProbe` (no readiness probe: a TCP probe on the port, as the local runtime does) |
//! | `command: serin-demo` | image `REPO/serin-demo:TAG`; any other command: `REPO/S:TAG` (the image's entrypoint is the program) |
//! | `args`, `env` | `args`, `env`, plus `PORT` (8080, the container port) and `SERIN_SERVICE`, `SERIN_VERSION`, `SERIN_REPLICA` (the pod's name) |
//! | `files` | ConfigMap `S-V-files` mounted at `$SERIN_FILES_DIR` |
//! | `secrets` | Secret `S-V-secrets` (`stringData`, values from the stack): env vars, or files under `$SERIN_SECRETS_DIR` with `asFile` |
//! | args naming files in the stack's folder (`credentials.txt`) | Secret `S-V-workdir` mounted as the working directory, since processes run in the stack file's folder |
//! | the gateway | Deployment, Service, ConfigMap (`serin.yaml`: the proxy config, services without static endpoints), ServiceAccount, Role and RoleBinding, ClusterRole and ClusterRoleBinding `serin-gateway` |
//! | the gateway, for the Gateway API | GatewayClass `serin` (controller [`CONTROLLER_NAME`]) and Gateway `serin-gateway` with the gateway's listener (port 80, HTTP or HTTPS with the TLS Secret, `allowedRoutes` from the same namespace) |
//! | a service with `sidecar:` | in its pods a native sidecar `serin-sidecar` (inbound on 8080 to the app on 127.0.0.1:8081, outbound on 127.0.0.1 from 4140 whose URLs go into the outbounds' `env`, metrics on 9090) with ConfigMap `S-sidecar`; ServiceAccount `S`; Role and RoleBinding `serin-sidecar` ([`sidecar`]) |
//! | each gateway route | an HTTPRoute with the rules, matches, filters, `backendRefs` (the per-version Services, port 8080) and weights |
//!
//! Every object carries `app.kubernetes.io/part-of: serin`. Pods run as a
//! non-root user with a read-only root filesystem (a writable `/tmp`), drop
//! every capability, and only the gateway and the sidecars get a
//! ServiceAccount token.
//! Service pods carry `prometheus.io/scrape`, `port` (8080, or the
//! sidecar's 9090) and `path` (`/metrics`) annotations.
//!
//! The HTTPRoutes use the Gateway API's experimental channel types, since
//! serin's routes have `retry` and the `ExternalAuth` filter; a route with
//! neither is also a valid standard-channel HTTPRoute. Their `parentRefs`
//! name the Gateway `serin-gateway`; a gateway whose config says
//! `routes: kubernetes` serves those that attach ([`follow`],
//! [`attachment`], [`http_routes`]) and says so in their status
//! ([`route_status`], [`status_writer`]; one replica, the [`lease`]
//! holder), and one with
//! `discovery: kubernetes` finds the pods through the per-version Services'
//! EndpointSlices.
//!
//! # What does not carry over
//!
//! - `restartBackoff`: the kubelet has its own CrashLoopBackOff (10 s to
//!   5 min); `restartPolicy` other than `Always` is refused, since a
//!   Deployment's pods always restart.
//! - Probe durations are whole seconds in Kubernetes: they are rounded up.
//! - Kubernetes expands `$(VAR)` in args and env values; every `$` is
//!   doubled so that they reach the program as written.
//! - The demo services listen on loopback unless told otherwise: their
//!   containers get `--host 0.0.0.0` (unless the args already set `--host`).
//! - The gateway's admin API stays on the pod's loopback (it can change
//!   routing); reach it with `kubectl port-forward`. Its metrics are also
//!   served alone on port 9090 (`admin.metricsAddress`, port `metrics`),
//!   which the gateway pod's `prometheus.io/*` annotations name. A stack
//!   `adminToken` is refused rather than written into a ConfigMap.
//! - serin-only route settings (`retry.unsafeMethods` and `budget`,
//!   ExternalAuth `timeout` and `failOpen`, `fault`, `maxConcurrentRequests`)
//!   have no HTTPRoute field: they are in the gateway's ConfigMap only.
//! - `workers` equal to the rendering machine's CPU count is taken for the
//!   default and left out: the pod picks its own.

pub mod attachment;
mod error;
pub mod follow;
mod gateway;
mod gateway_object;
pub mod http_routes;
pub mod lease;
mod names;
mod output;
mod proxy_file;
mod route;
pub mod route_client;
pub mod route_status;
pub mod sidecar;
pub mod status_writer;
mod workload;

pub use error::RenderError;
pub use gateway_object::gateway_spec;
pub use names::{
    CONTAINER_PORT, CONTROLLER_NAME, GATEWAY_CLASS_NAME, GATEWAY_NAME, LABEL_APP, LABEL_PART_OF,
    LABEL_VERSION, PART_OF, PORT_NAME, version_object_name,
};
pub use output::{KUSTOMIZATION, Manifests, Object, write_kustomize};

use serin_config::stack::StackFile;

/// Where images come from unless `--image-repo` says: podman names the
/// images it builds `localhost/NAME`, and kind and minikube load them under
/// that name.
pub const DEFAULT_IMAGE_REPO: &str = "localhost";

/// The image tag unless `--tag` says: the version of serin that rendered the
/// objects, so that the images and the objects come from the same source.
pub const DEFAULT_TAG: &str = env!("CARGO_PKG_VERSION");

/// The program whose image is shared by every service that runs it.
pub const DEMO_PROGRAM: &str = "serin-demo";

/// How to render.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderOptions {
    /// Images are `IMAGE_REPO/NAME:TAG`.
    pub image_repo: String,
    pub tag: String,
    /// Written into every object; `None`: the namespace `kubectl` applies to.
    pub namespace: Option<String>,
}

impl Default for RenderOptions {
    fn default() -> Self {
        Self {
            image_repo: DEFAULT_IMAGE_REPO.to_string(),
            tag: DEFAULT_TAG.to_string(),
            namespace: None,
        }
    }
}

/// Renders the Kubernetes objects of a stack, in the order `kubectl apply`
/// should create them: RBAC, the gateway's config, each service's config,
/// Services and Deployments, the gateway, its GatewayClass and Gateway,
/// then the HTTPRoutes.
pub fn render(stack: &StackFile, options: &RenderOptions) -> Result<Manifests, RenderError> {
    let ctx = names::Context::new(stack, options)?;
    let sidecars = stack
        .stack
        .services
        .iter()
        .map(|s| sidecar::plan(stack, s))
        .collect::<Result<Vec<_>, _>>()?;
    let mut objects = gateway::rbac(&ctx);
    objects.extend(sidecar::rbac(&ctx, &sidecars));
    objects.push(gateway::config_map(&ctx, &stack.gateway)?);
    for (service, sc) in stack.stack.services.iter().zip(&sidecars) {
        if let Some(sc) = sc {
            objects.push(sc.config_map(&ctx)?);
        }
        objects.extend(workload::service_objects(&ctx, service, sc.as_ref())?);
    }
    objects.extend(gateway::workload(&ctx, &stack.gateway)?);
    objects.extend(gateway_object::objects(&ctx, &stack.gateway));
    for r in &stack.gateway.routes {
        objects.push(Object::HttpRoute(Box::new(route::http_route(&ctx, r)?)));
    }
    Ok(Manifests { objects })
}
