//! The validated stack: plain values, defaults filled in, nothing left to
//! check. Built only by [`super::parse_stack`] and [`super::load_stack`].

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

pub use super::raw::{DependencyCondition, RestartPolicy, StrategyType};
pub use super::watch::{BuildCommand, DEFAULT_WATCH_IGNORE, IgnoreRules, WatchError, WatchSpec};

/// The version name of a service written without `versions`.
pub const DEFAULT_VERSION: &str = "v1";
/// Replicas of a version when the file does not say.
pub const DEFAULT_REPLICAS: u32 = 1;
/// The most replicas one version may ask for: a laptop, not a cluster.
pub const MAX_REPLICAS: u32 = 100;
/// Kubernetes' probe defaults (`initialDelaySeconds: 0`, `periodSeconds: 10`,
/// `timeoutSeconds: 1`, `failureThreshold: 3`, `successThreshold: 1`), so a
/// stack behaves the same when rendered to a cluster.
pub const DEFAULT_PROBE_INITIAL_DELAY: Duration = Duration::ZERO;
pub const DEFAULT_PROBE_PERIOD: Duration = Duration::from_secs(10);
pub const DEFAULT_PROBE_TIMEOUT: Duration = Duration::from_secs(1);
pub const DEFAULT_PROBE_FAILURE_THRESHOLD: u32 = 3;
pub const DEFAULT_PROBE_SUCCESS_THRESHOLD: u32 = 1;
/// Kubernetes' CrashLoopBackOff: 10 s doubling to a 5 min cap, reset after
/// 10 min of running.
pub const DEFAULT_BACKOFF_INITIAL: Duration = Duration::from_secs(10);
pub const DEFAULT_BACKOFF_MAX: Duration = Duration::from_secs(300);
pub const DEFAULT_BACKOFF_RESET_AFTER: Duration = Duration::from_secs(600);
/// Kubernetes' `terminationGracePeriodSeconds` default.
pub const DEFAULT_TERMINATION_GRACE_PERIOD: Duration = Duration::from_secs(30);
/// Rolling updates start one new replica at a time and stop an old one only
/// when the new one is ready, so capacity never drops during a rollout.
pub const DEFAULT_MAX_SURGE: u32 = 1;
pub const DEFAULT_MAX_UNAVAILABLE: u32 = 0;
/// The largest file or secret read into the stack (Kubernetes' ConfigMap and
/// Secret limit).
pub const MAX_FILE_BYTES: u64 = 1024 * 1024;
/// Environment variables serin sets for every replica.
pub const RESERVED_ENV: &[&str] = &[
    "PORT",
    "SERIN_SERVICE",
    "SERIN_VERSION",
    "SERIN_REPLICA",
    "SERIN_FILES_DIR",
    "SERIN_SECRETS_DIR",
];

/// A validated stack file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stack {
    /// The file's name as given, for messages.
    pub source: String,
    /// The (absolute) folder of the stack file: relative paths were resolved
    /// against it, and processes run in it.
    pub base_dir: PathBuf,
    /// In file order; names are unique and `depends_on` has no cycles.
    pub services: Vec<ServiceSpec>,
}

impl Stack {
    pub fn service(&self, name: &str) -> Option<&ServiceSpec> {
        self.services.iter().find(|s| s.name == name)
    }

    pub fn version(&self, service: &str, version: &str) -> Option<&VersionSpec> {
        self.service(service)?.version(version)
    }
}

/// A service another waits for, and what it waits for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Dependency {
    pub service: String,
    pub condition: DependencyCondition,
}

/// One service.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServiceSpec {
    pub name: String,
    /// Services of this stack this service's replicas wait for before each
    /// start and restart.
    pub depends_on: Vec<Dependency>,
    /// In file order, at least one, names unique.
    pub versions: Vec<VersionSpec>,
    /// The `canary:` section: defaults for `serin canary start` on this
    /// service (each unset key falls back to the built-in default).
    pub canary: Option<CanaryDefaults>,
    /// The `watch:` section: what `serin up --watch` rebuilds this
    /// service's versions on.
    pub watch: Option<WatchSpec>,
}

impl ServiceSpec {
    pub fn version(&self, name: &str) -> Option<&VersionSpec> {
        self.versions.iter().find(|v| v.name == name)
    }
}

/// One version of a service with every setting resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionSpec {
    pub name: String,
    pub program: Program,
    pub args: Vec<String>,
    pub env: BTreeMap<String, String>,
    pub replicas: u32,
    /// `None`: ready once the replica's port accepts connections.
    pub readiness: Option<Probe>,
    pub liveness: Option<Probe>,
    pub restart_policy: RestartPolicy,
    pub restart_backoff: Backoff,
    pub termination_grace_period: Duration,
    pub files: Vec<FileSpec>,
    pub secrets: Vec<SecretSpec>,
    pub strategy: Strategy,
    /// Run a sidecar for each replica (the service's `sidecar:`).
    pub sidecar: Option<SidecarSpec>,
}

/// What a replica's sidecar listens for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SidecarSpec {
    /// Dependencies, each with its own outbound listener; the app finds the
    /// listener's URL in `env`.
    pub outbound: Vec<OutboundSpec>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboundSpec {
    pub service: String,
    pub env: String,
}

impl VersionSpec {
    /// Whether two versions run the same processes (everything but the
    /// replica count is equal): a change needs a rollout, a replica count
    /// change only a scale.
    pub fn same_template(&self, other: &Self) -> bool {
        let mut a = self.clone();
        a.replicas = other.replicas;
        a == *other
    }
}

/// What to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Program {
    /// An absolute path (a `command` with a `/`, resolved against the stack
    /// file's folder).
    Path(PathBuf),
    /// A bare name, looked up when the process starts.
    Name(String),
}

impl fmt::Display for Program {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Path(p) => write!(f, "{}", p.display()),
            Self::Name(n) => f.write_str(n),
        }
    }
}

/// A readiness or liveness probe, Kubernetes' semantics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    pub action: ProbeAction,
    pub initial_delay: Duration,
    pub period: Duration,
    pub timeout: Duration,
    pub failure_threshold: u32,
    pub success_threshold: u32,
}

/// What a probe does; `port: None` means the replica's `PORT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeAction {
    /// `GET http://127.0.0.1:port/path`; 2xx and 3xx are success.
    HttpGet { path: String, port: Option<u16> },
    /// A TCP connection to `127.0.0.1:port` is success.
    TcpSocket { port: Option<u16> },
    /// The command (no shell) exits with status 0.
    Exec { command: Vec<String> },
}

/// CrashLoopBackOff timing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
    pub reset_after: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            initial: DEFAULT_BACKOFF_INITIAL,
            max: DEFAULT_BACKOFF_MAX,
            reset_after: DEFAULT_BACKOFF_RESET_AFTER,
        }
    }
}

/// A file written for the service under `$SERIN_FILES_DIR`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileSpec {
    /// Relative, no `..`.
    pub path: PathBuf,
    pub content: Vec<u8>,
}

/// A secret handed to the service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretSpec {
    /// The environment variable, or with `as_file` the file name under
    /// `$SERIN_SECRETS_DIR`.
    pub name: String,
    pub value: SecretValue,
    pub as_file: bool,
}

/// A secret's value: `Debug` and `Display` never show it.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct SecretValue(String);

impl SecretValue {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The value itself, for handing it to the service only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretValue(<redacted>)")
    }
}

impl fmt::Display for SecretValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// How a changed version replaces its replicas.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    /// Start up to `max_surge` replicas above the wanted count and stop old
    /// ones while at most `max_unavailable` are missing from the ready count.
    RollingUpdate {
        max_surge: u32,
        max_unavailable: u32,
    },
    /// Stop every old replica, then start the new ones.
    Recreate,
}

impl Default for Strategy {
    fn default() -> Self {
        Self::RollingUpdate {
            max_surge: DEFAULT_MAX_SURGE,
            max_unavailable: DEFAULT_MAX_UNAVAILABLE,
        }
    }
}

/// A service's defaults for `serin canary start`, as written (`None`: not
/// set here). The meanings and the built-in defaults are serin-canary's.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CanaryDefaults {
    /// Canary weights in percent, strictly increasing, from 1 to 100.
    pub steps: Option<Vec<u32>>,
    /// How long each step's analysis window lasts.
    pub interval: Option<Duration>,
    /// The highest canary error rate that passes, from 0 to 1.
    pub max_error_rate: Option<f64>,
    /// The highest p99(canary) / p99(baseline) that passes.
    pub max_latency_ratio: Option<f64>,
    /// p99s below this count as this much in the latency ratio.
    pub latency_floor: Option<Duration>,
    /// Fewer canary requests in a window make it inconclusive.
    pub min_requests: Option<u64>,
    /// Failed checks that roll the canary back.
    pub failures: Option<u32>,
    /// Consecutive inconclusive windows that halt the canary.
    pub inconclusive_limit: Option<u32>,
    /// Prometheus' URL: the analysis asks it instead of serin's counters.
    pub prometheus: Option<String>,
    /// PromQL templates overriding the built-in ones, by name:
    /// `requests`, `error_rate`, `latency_p99` (`errorRate` and
    /// `latencyP99` in the file).
    pub queries: BTreeMap<String, String>,
    /// `NAME=VALUE`: a first step where only requests with this header
    /// reach the canary.
    pub header_step: Option<String>,
    /// `NAME=VALUE`: the same with a cookie.
    pub cookie_step: Option<String>,
    /// Percent (above 0, at most 100): a first step where the canary gets
    /// only shadow copies of this share of the baseline's requests.
    pub mirror_step: Option<f64>,
    /// Checks of the team's own, in the order written.
    pub checks: Vec<super::canary_check::CanaryCheck>,
    /// Webhooks and gates, in the order written.
    pub webhooks: Vec<super::canary_hook::Webhook>,
    /// Wait for `serin canary approve` before the promotion.
    pub approval: Option<bool>,
    /// Where the canary's transitions are told.
    pub notify: Vec<super::canary_hook::NotifyTarget>,
    /// Under `serin up`, an apply that changes a version starts a canary of
    /// the new revision (`None`: not set here, which is `false`).
    pub auto: Option<bool>,
    /// Blue/green: the `NAME=VALUE` header that reaches the new version
    /// before the switch (a first step, then one step of 100%).
    pub blue_green_preview_header: Option<String>,
    /// Blue/green: the host name (lower case) that reaches the new version
    /// before the switch, instead of a header.
    pub blue_green_preview_host: Option<String>,
}

/// Whether an apply starts a canary by itself when a service does not say:
/// no, as before `auto` existed — judging a rollout is a choice a team makes
/// per service (Flagger starts one only for the workloads it is told of).
pub const DEFAULT_AUTO: bool = false;

/// The suffix of the backend version a new revision runs as while an
/// automatic canary judges it (`v1` → `v1-canary`), Flagger's name for it.
pub const CANARY_VERSION_SUFFIX: &str = "-canary";

// Every number in it was checked to be finite, so equality is an
// equivalence and `ServiceSpec` stays `Eq`.
impl Eq for CanaryDefaults {}

/// Reads an error rate written as a percentage (`1%`, `0.5%`) or a
/// fraction (`0.01`); the result is from 0 to 1.
pub fn parse_rate(s: &str) -> Result<f64, String> {
    let t = s.trim();
    let (number, scale) = match t.strip_suffix('%') {
        Some(n) => (n.trim(), 100.0),
        None => (t, 1.0),
    };
    let v: f64 = number.parse().map_err(|_| {
        format!("`{s}` is not a rate: write a percentage like 1% or a fraction like 0.01")
    })?;
    let rate = v / scale;
    if !rate.is_finite() || !(0.0..=1.0).contains(&rate) {
        return Err(format!("`{s}` is not a rate from 0% to 100%"));
    }
    Ok(rate)
}

/// Reads a canary's header or cookie step, `NAME=VALUE`.
pub fn parse_match_step(s: &str) -> Result<(String, String), String> {
    let (name, value) = s
        .split_once('=')
        .ok_or_else(|| format!("`{s}` is not NAME=VALUE, e.g. x-canary=always"))?;
    let (name, value) = (name.trim(), value.trim());
    if name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.!#$%&'*+^`|~".contains(&b))
    {
        return Err(format!("`{name}` is not a header or cookie name"));
    }
    if value.is_empty() || value.chars().any(|c| c.is_control()) {
        return Err(format!("`{s}` needs a value without control characters"));
    }
    Ok((name.to_string(), value.to_string()))
}

/// The longest host name DNS allows (RFC 1035 §2.3.4, without the root).
const MAX_HOST_NAME: usize = 253;
/// The longest label of a host name (RFC 1035 §2.3.4).
const MAX_HOST_LABEL: usize = 63;

/// Reads a canary's preview host: one DNS name (RFC 1123 labels of
/// letters, digits and `-`), without a port, a wildcard or an IP address,
/// given back in lower case as requests are matched (a Host's port is
/// ignored and its case does not count).
pub fn parse_preview_host(s: &str) -> Result<String, String> {
    let host = s.trim();
    if host.is_empty() {
        return Err("give a host name, e.g. preview.qotm.local".into());
    }
    if host.contains('*') {
        return Err(format!(
            "`{host}` is a wildcard: a preview is one host name, e.g. preview.qotm.local"
        ));
    }
    if host.contains(':') || host.contains('[') {
        return Err(format!(
            "`{host}` has a port or is an IPv6 address: give the host name alone (requests \
             match it on any port)"
        ));
    }
    if host.parse::<std::net::Ipv4Addr>().is_ok() {
        return Err(format!(
            "`{host}` is an IP address: give a host name (as the Gateway API's hostnames)"
        ));
    }
    let label_ok = |l: &str| {
        (1..=MAX_HOST_LABEL).contains(&l.len())
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if host.len() > MAX_HOST_NAME || !host.split('.').all(label_ok) {
        return Err(format!(
            "`{host}` is not a host name: labels of letters, digits and `-` joined by dots, \
             e.g. preview.qotm.local"
        ));
    }
    Ok(host.to_ascii_lowercase())
}

/// Checks canary steps: at least one, each from 1 to 100, strictly
/// increasing.
pub fn check_canary_steps(steps: &[u32]) -> Result<(), String> {
    if steps.is_empty() {
        return Err("give at least one step, e.g. [5, 25, 50, 100]".into());
    }
    if let Some(s) = steps.iter().find(|s| !(1..=100).contains(*s)) {
        return Err(format!(
            "step {s} is not a weight from 1 to 100 (percent of the traffic)"
        ));
    }
    if steps.windows(2).any(|w| w[0] >= w[1]) {
        return Err("steps must increase, e.g. [5, 25, 50, 100]".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preview_hosts_are_one_dns_name_in_lower_case() {
        let long_label = "a".repeat(64);
        let long_name = ["a".repeat(60).as_str(); 5].join(".");
        let cases: [(&str, Result<&str, &str>); 14] = [
            ("preview.qotm.local", Ok("preview.qotm.local")),
            ("  Preview.QOTM.local ", Ok("preview.qotm.local")),
            ("preview", Ok("preview")),
            ("a-1.b2.example", Ok("a-1.b2.example")),
            ("", Err("give a host name")),
            ("*.qotm.local", Err("is a wildcard")),
            ("preview.qotm.local:8080", Err("has a port")),
            ("[::1]", Err("has a port or is an IPv6 address")),
            ("127.0.0.1", Err("is an IP address")),
            ("-preview.local", Err("is not a host name")),
            ("preview..local", Err("is not a host name")),
            ("preview.local.", Err("is not a host name")),
            (long_label.as_str(), Err("is not a host name")),
            (long_name.as_str(), Err("is not a host name")),
        ];
        for (given, want) in cases {
            match (parse_preview_host(given), want) {
                (Ok(got), Ok(want)) => assert_eq!(got, want, "{given:?}"),
                (Err(got), Err(want)) => assert!(got.contains(want), "{given:?}: {got}"),
                (got, want) => panic!("{given:?}: got {got:?}, want {want:?}"),
            }
        }
    }
}
