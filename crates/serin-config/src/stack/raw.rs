//! The stack file as written: raw structs with the place of every value, for
//! the checks in `validate` to point at.
//!
//! To add a top-level section (e.g. `gateway`) or a per-service key (e.g.
//! `sidecar`, `canary`), add a field to [`RawStack`] or [`RawService`]; the
//! decoder then accepts the key and still rejects unknown ones.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::config_struct;
use crate::decode::{Decode, Node, Spanned, suggest};
use crate::error::Problems;

config_struct! {
    /// The whole stack file.
    pub struct RawStack {
        services: Spanned<Vec<RawService>> = "services" [required],
        gateway: Option<RawGateway> = "gateway",
        /// Tracing of the gateway and every sidecar (they share one process).
        tracing: Option<crate::proxy::raw::Tracing> = "tracing",
    }
}

config_struct! {
    /// A sidecar per replica: an inbound listener in front of the app and an
    /// outbound listener per dependency, all on 127.0.0.1.
    pub struct RawSidecar {
        outbound: Vec<RawOutbound> = "outbound",
    }
}

config_struct! {
    /// One dependency called through the sidecar.
    pub struct RawOutbound {
        /// The service called.
        name: Spanned<String> = "name" [required],
        /// The environment variable that gets `http://127.0.0.1:PORT`.
        env: Spanned<String> = "env" [required],
        /// The rule of this hop, in the proxy's vocabulary (backendRefs with
        /// weights, timeouts, retry, ...); default: every version of the
        /// service, equal weights.
        rule: Option<crate::proxy::raw::Rule> = "rule",
    }
}

config_struct! {
    /// The gateway of a stack: one listener in front of the stack's
    /// services, its admin API, and routes in the proxy's vocabulary whose
    /// backends are the stack's services and versions.
    pub struct RawGateway {
        listen: Option<Spanned<String>> = "listen",
        admin: Option<Spanned<String>> = "admin",
        admin_token: Option<String> = "adminToken",
        tls: Option<crate::proxy::raw::Tls> = "tls",
        limits: Option<crate::proxy::raw::Limits> = "limits",
        path_normalization: Option<crate::proxy::raw::PathNormalization> = "pathNormalization",
        compression: Option<crate::proxy::raw::Compression> = "compression",
        client_address: Option<crate::proxy::raw::ClientAddress> = "clientAddress",
        proxy_protocol: Option<crate::proxy::raw::ProxyProtocol> = "proxyProtocol",
        access_log: Option<crate::proxy::raw::AccessLog> = "accessLog",
        workers: Option<Spanned<usize>> = "workers",
        drain_timeout: Option<Duration> = "drainTimeout",
        routes: Vec<crate::proxy::raw::Route> = "routes",
    }
}

config_struct! {
    /// One service: defaults for its versions, and the versions.
    pub struct RawService {
        name: Spanned<String> = "name" [required],
        /// How the gateway speaks to this service (`http1`, `h2c`).
        protocol: crate::proxy::raw::UpstreamProtocol = "protocol",
        load_balancer: Option<crate::proxy::raw::LoadBalancer> = "loadBalancer",
        connect_timeout: Option<Duration> = "connectTimeout",
        circuit_breaker: Option<crate::proxy::raw::CircuitBreaker> = "circuitBreaker",
        sidecar: Option<RawSidecar> = "sidecar",
        outlier_detection: Option<crate::proxy::raw::OutlierDetection> = "outlierDetection",
        grpc_error_codes: Option<Vec<Spanned<String>>> = "grpcErrorCodes",
        depends_on: Vec<RawDependency> = "dependsOn",
        versions: Option<Spanned<Vec<RawVersion>>> = "versions",
        command: Option<Spanned<String>> = "command",
        args: Option<Vec<String>> = "args",
        env: Option<RawEnv> = "env",
        replicas: Option<Spanned<u32>> = "replicas",
        readiness: Option<RawProbe> = "readiness",
        liveness: Option<RawProbe> = "liveness",
        restart_policy: Option<RestartPolicy> = "restartPolicy",
        restart_backoff: Option<RawBackoff> = "restartBackoff",
        termination_grace_period: Option<Duration> = "terminationGracePeriod",
        files: Option<Vec<RawFile>> = "files",
        secrets: Option<Vec<RawSecret>> = "secrets",
        strategy: Option<RawStrategy> = "strategy",
        /// Defaults for `serin canary start` on this service.
        canary: Option<RawCanary> = "canary",
        /// What `serin up --watch` watches, and how it rebuilds.
        watch: Option<super::watch::RawWatch> = "watch",
    }
}

config_struct! {
    /// One version of a service: every key overrides the service's.
    pub struct RawVersion {
        name: Spanned<String> = "name" [required],
        command: Option<Spanned<String>> = "command",
        args: Option<Vec<String>> = "args",
        env: Option<RawEnv> = "env",
        replicas: Option<Spanned<u32>> = "replicas",
        readiness: Option<RawProbe> = "readiness",
        liveness: Option<RawProbe> = "liveness",
        restart_policy: Option<RestartPolicy> = "restartPolicy",
        restart_backoff: Option<RawBackoff> = "restartBackoff",
        termination_grace_period: Option<Duration> = "terminationGracePeriod",
        files: Option<Vec<RawFile>> = "files",
        secrets: Option<Vec<RawSecret>> = "secrets",
        strategy: Option<RawStrategy> = "strategy",
    }
}

config_struct! {
    /// A service's defaults for `serin canary start` (each flag of the
    /// command overrides its key).
    pub struct RawCanary {
        steps: Option<Spanned<Vec<Spanned<u32>>>> = "steps",
        interval: Option<Spanned<Duration>> = "interval",
        /// `1%` or `0.01`.
        max_error_rate: Option<Spanned<String>> = "maxErrorRate",
        max_latency_ratio: Option<Spanned<f64>> = "maxLatencyRatio",
        latency_floor: Option<Spanned<Duration>> = "latencyFloor",
        min_requests: Option<Spanned<u64>> = "minRequests",
        failures: Option<Spanned<u32>> = "failures",
        inconclusive_limit: Option<Spanned<u32>> = "inconclusiveLimit",
        prometheus: Option<Spanned<String>> = "prometheus",
        queries: Option<RawCanaryQueries> = "queries",
        /// `x-canary=always`: a first step where only such requests reach
        /// the canary.
        header_step: Option<Spanned<String>> = "headerStep",
        /// `canary=always`: the same with a cookie.
        cookie_step: Option<Spanned<String>> = "cookieStep",
        /// `20`: first a step where the canary gets shadow copies of 20%
        /// of the baseline's requests.
        mirror_step: Option<Spanned<f64>> = "mirrorStep",
        /// Named checks of the team's own, added to the built-in ones (a
        /// check of the same name replaces a built-in one).
        checks: Option<Vec<RawCanaryCheck>> = "checks",
        /// Webhooks and gates (Flagger's types).
        webhooks: Option<Vec<RawCanaryWebhook>> = "webhooks",
        /// `true`: the canary waits for `serin canary approve` before its
        /// promotion.
        approval: Option<Spanned<bool>> = "approval",
        /// Where its transitions are told.
        notify: Option<Vec<RawCanaryNotify>> = "notify",
        /// `true`: under `serin up`, an apply that changes a version starts
        /// a canary of the new revision instead of a plain rollout.
        auto: Option<Spanned<bool>> = "auto",
        /// Blue/green: the new version first on a preview match only, then
        /// all the traffic at once.
        blue_green: Option<RawBlueGreen> = "blueGreen",
    }
}

config_struct! {
    /// Blue/green with a preview: how requests reach the new version before
    /// the switch.
    pub struct RawBlueGreen {
        /// `x-preview=1`: requests with this header reach the new version.
        preview_header: Option<Spanned<String>> = "previewHeader",
        /// `preview.qotm.local`: requests for this host (any port) reach
        /// the new version.
        preview_host: Option<Spanned<String>> = "previewHost",
    }
}

config_struct! {
    /// One webhook: its name, type, URL, timeout and metadata.
    pub struct RawCanaryWebhook {
        name: Spanned<String> = "name" [required],
        kind: Spanned<String> = "type" [required],
        url: Spanned<String> = "url" [required],
        timeout: Option<Spanned<Duration>> = "timeout",
        metadata: Option<BTreeMap<String, String>> = "metadata",
    }
}

config_struct! {
    /// One notification target: a URL and the message's shape.
    pub struct RawCanaryNotify {
        url: Spanned<String> = "url" [required],
        format: Option<Spanned<String>> = "format",
    }
}

config_struct! {
    /// One check: a figure of serin's or a PromQL template, and its range.
    pub struct RawCanaryCheck {
        name: Spanned<String> = "name" [required],
        figure: Option<Spanned<String>> = "figure",
        promql: Option<Spanned<String>> = "promql",
        min: Option<Spanned<f64>> = "min",
        max: Option<Spanned<f64>> = "max",
    }
}

config_struct! {
    /// PromQL templates that replace the built-in ones.
    pub struct RawCanaryQueries {
        requests: Option<Spanned<String>> = "requests",
        error_rate: Option<Spanned<String>> = "errorRate",
        latency_p99: Option<Spanned<String>> = "latencyP99",
    }
}

config_struct! {
    /// A readiness or liveness probe.
    pub struct RawProbe {
        http_get: Option<RawHttpGet> = "httpGet",
        tcp_socket: Option<RawTcpSocket> = "tcpSocket",
        exec: Option<RawExec> = "exec",
        initial_delay: Option<Spanned<Duration>> = "initialDelay",
        period: Option<Spanned<Duration>> = "period",
        timeout: Option<Spanned<Duration>> = "timeout",
        failure_threshold: Option<Spanned<u32>> = "failureThreshold",
        success_threshold: Option<Spanned<u32>> = "successThreshold",
    }
}

config_struct! {
    pub struct RawHttpGet {
        path: Option<Spanned<String>> = "path",
        port: Option<Spanned<u16>> = "port",
    }
}

config_struct! {
    pub struct RawTcpSocket {
        port: Option<Spanned<u16>> = "port",
    }
}

config_struct! {
    pub struct RawExec {
        command: Spanned<Vec<String>> = "command" [required],
    }
}

config_struct! {
    /// CrashLoopBackOff timing.
    pub struct RawBackoff {
        initial: Option<Spanned<Duration>> = "initial",
        max: Option<Spanned<Duration>> = "max",
        reset_after: Option<Spanned<Duration>> = "resetAfter",
    }
}

config_struct! {
    /// A file handed to the service.
    pub struct RawFile {
        file_path: Spanned<String> = "path" [required],
        content: Option<String> = "content",
        from_file: Option<Spanned<String>> = "fromFile",
    }
}

config_struct! {
    /// A secret handed to the service.
    pub struct RawSecret {
        name: Spanned<String> = "name" [required],
        value: Option<String> = "value",
        from_file: Option<Spanned<String>> = "fromFile",
        from_env: Option<Spanned<String>> = "fromEnv",
        as_file: Option<bool> = "asFile",
    }
}

config_struct! {
    /// How a changed version is rolled out.
    pub struct RawStrategy {
        kind: Option<Spanned<StrategyType>> = "type" [tag],
        max_surge: Option<Spanned<u32>> = "maxSurge",
        max_unavailable: Option<Spanned<u32>> = "maxUnavailable",
    }
}

/// Environment variables as written, keys with their places.
#[derive(Debug, Clone, Default)]
pub struct RawEnv {
    pub entries: Vec<(Spanned<String>, String)>,
}

impl Decode for RawEnv {
    fn decode(node: Node<'_>, problems: &mut Problems) -> Option<Self> {
        let mut entries = Vec::new();
        node.each_entry(problems, |key, key_span, value, p| {
            if let Some(v) = String::decode(value, p) {
                let key = Spanned {
                    value: key.to_string(),
                    span: key_span,
                    path: value.path().to_string(),
                };
                entries.push((key, v));
            }
        });
        Some(Self { entries })
    }
}

config_struct! {
    /// A `dependsOn` entry written in full.
    pub struct RawDependencyMap {
        service: Spanned<String> = "service" [required],
        condition: Option<Spanned<DependencyCondition>> = "condition",
    }
}

/// One `dependsOn` entry: a service's name, or `{service, condition}`.
#[derive(Debug, Clone, Default)]
pub struct RawDependency {
    pub service: Spanned<String>,
    pub condition: Option<Spanned<DependencyCondition>>,
}

impl Decode for RawDependency {
    fn decode(node: Node<'_>, problems: &mut Problems) -> Option<Self> {
        if node.is_mapping() {
            let full = RawDependencyMap::decode(node, problems)?;
            return Some(Self {
                service: full.service,
                condition: full.condition,
            });
        }
        Some(Self {
            service: Spanned::<String>::decode(node, problems)?,
            condition: None,
        })
    }
}

/// What a dependency must have before a replica (re)starts, as compose's
/// `depends_on` conditions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum DependencyCondition {
    /// A ready replica (compose's `service_healthy`): what a caller needs.
    #[default]
    Ready,
    /// A replica whose process runs, ready or not (`service_started`).
    Started,
}

impl DependencyCondition {
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Ready => "ready",
            Self::Started => "started",
        }
    }
}

impl Decode for DependencyCondition {
    fn decode(node: Node<'_>, problems: &mut Problems) -> Option<Self> {
        decode_name(
            node,
            problems,
            &[("ready", Self::Ready), ("started", Self::Started)],
        )
    }
}

/// When a replica's process is restarted after it ends (Kubernetes'
/// `restartPolicy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum RestartPolicy {
    /// Whatever the exit status.
    #[default]
    Always,
    /// Only after a failure: a non-zero exit status or a signal.
    OnFailure,
    /// Never; the replica stays `Exited`.
    Never,
}

impl RestartPolicy {
    pub const NAMES: &'static [&'static str] = &["Always", "OnFailure", "Never"];

    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Always => "Always",
            Self::OnFailure => "OnFailure",
            Self::Never => "Never",
        }
    }
}

impl Decode for RestartPolicy {
    fn decode(node: Node<'_>, problems: &mut Problems) -> Option<Self> {
        decode_name(
            node,
            problems,
            &[
                ("Always", Self::Always),
                ("OnFailure", Self::OnFailure),
                ("Never", Self::Never),
            ],
        )
    }
}

/// The kind of rollout strategy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum StrategyType {
    #[default]
    RollingUpdate,
    Recreate,
}

impl Decode for StrategyType {
    fn decode(node: Node<'_>, problems: &mut Problems) -> Option<Self> {
        decode_name(
            node,
            problems,
            &[
                ("RollingUpdate", Self::RollingUpdate),
                ("Recreate", Self::Recreate),
            ],
        )
    }
}

/// Reads one of a fixed set of names, suggesting the closest on a typo.
fn decode_name<T: Copy>(
    node: Node<'_>,
    problems: &mut Problems,
    options: &[(&'static str, T)],
) -> Option<T> {
    let s = node.text(problems, "a name")?;
    if let Some((_, v)) = options.iter().find(|(n, _)| *n == s) {
        return Some(*v);
    }
    let names: Vec<&str> = options.iter().map(|(n, _)| *n).collect();
    let mut msg = format!("unknown value `{s}`");
    match suggest(s, &names) {
        Some(g) => msg.push_str(&format!(", did you mean `{g}`?")),
        None => msg.push_str(&format!(", expected one of: {}", names.join(", "))),
    }
    node.report(problems, msg);
    None
}
