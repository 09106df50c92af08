//! A validated proxy config written back as a proxy config file (the
//! format of `serin_config::proxy::raw`), for the gateway's and the
//! sidecars' ConfigMaps.
//!
//! Values equal to serin's defaults are left out so that the file reads like
//! one a person wrote; reading the file back gives the same validated config
//! (a test checks that).

use std::net::SocketAddr;
use std::time::Duration;

use serde::Serialize;
use serin_config::proxy::{
    self as p, FilterConfig, LbPolicy, PathMatch, PathModifier, ProxyConfig, StringMatch,
    UpstreamProtocol, defaults,
};

use crate::RenderError;

mod token_auth;

/// The validated config as a proxy config file, with `listen` as the
/// address of its one listener, `admin` as the admin API's and `metrics`
/// as the metrics listener's.
pub(crate) fn write(
    cfg: &ProxyConfig,
    listen: SocketAddr,
    admin: SocketAddr,
    metrics: Option<SocketAddr>,
    tls: Option<(String, String)>,
) -> Result<String, RenderError> {
    let first = cfg.listeners.first();
    let name = first.map_or_else(|| "gateway".to_string(), |l| l.name.clone());
    let listener = Listener::of(first, name, listen, tls);
    to_text(
        &File::from_config(cfg, vec![listener], admin, metrics)?,
        "the gateway's proxy config",
    )
}

/// The validated config as a proxy config file with every listener at its
/// own address and without TLS (a sidecar's: an inbound listener and one
/// per dependency).
pub(crate) fn write_all(
    cfg: &ProxyConfig,
    admin: SocketAddr,
    metrics: SocketAddr,
    what: &str,
) -> Result<String, RenderError> {
    let listeners = cfg
        .listeners
        .iter()
        .map(|l| Listener::of(Some(l), l.name.clone(), l.address, None))
        .collect();
    to_text(
        &File::from_config(cfg, listeners, admin, Some(metrics))?,
        what,
    )
}

fn to_text(file: &File, what: &str) -> Result<String, RenderError> {
    serde_saphyr::to_string(file).map_err(|e| RenderError::Yaml {
        what: what.into(),
        message: e.to_string(),
    })
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// Durations as the config writes them: `25ms`, `15s`, `2m`, exact.
fn duration(d: Duration) -> String {
    let nanos = d.as_nanos();
    for (unit, size) in [
        ("h", 3_600_000_000_000u128),
        ("m", 60_000_000_000),
        ("s", 1_000_000_000),
        ("ms", 1_000_000),
        ("us", 1_000),
    ] {
        if nanos >= size && nanos.is_multiple_of(size) {
            return format!("{}{unit}", nanos / size);
        }
    }
    if nanos == 0 {
        "0s".into()
    } else {
        format!("{nanos}ns")
    }
}

fn header_value(v: &http::HeaderValue) -> Result<String, String> {
    std::str::from_utf8(v.as_bytes())
        .map(str::to_string)
        .map_err(|_| "a header value is not UTF-8".to_string())
}

/// The regex text as written: validation wraps it as `^(?:...)$`.
pub(crate) fn regex_source(r: &regex::Regex) -> String {
    let s = r.as_str();
    s.strip_prefix("^(?:")
        .and_then(|s| s.strip_suffix(")$"))
        .unwrap_or(s)
        .to_string()
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct File {
    admin: Admin,
    #[serde(skip_serializing_if = "Option::is_none")]
    access_log: Option<AccessLog>,
    #[serde(skip_serializing_if = "Option::is_none")]
    workers: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    drain_timeout: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tracing: Option<Tracing>,
    listeners: Vec<Listener>,
    #[serde(skip_serializing_if = "Option::is_none")]
    discovery: Option<&'static str>,
    services: Vec<Service>,
    routes: Vec<Route>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Admin {
    address: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    metrics_address: Option<String>,
}

#[derive(Serialize)]
struct AccessLog {
    format: &'static str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Tracing {
    #[serde(skip_serializing_if = "Option::is_none")]
    endpoint: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    service_name: Option<String>,
    sampling_ratio: f64,
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    headers: std::collections::BTreeMap<String, String>,
}

impl Tracing {
    fn of(t: &p::TracingConfig) -> Self {
        Self {
            endpoint: t.endpoint.clone(),
            service_name: t.service_name.clone(),
            sampling_ratio: t.sampling_ratio,
            headers: t.headers.iter().cloned().collect(),
        }
    }
}

/// A listener's path normalisation, written only where it differs from
/// the defaults (which are the safe ones).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct PathNormalization {
    normalize_path: bool,
    merge_slashes: bool,
    escaped_slashes: &'static str,
    path_parameters: &'static str,
}

impl PathNormalization {
    fn of(n: &p::PathNormalizationConfig) -> Option<Self> {
        (*n != p::PathNormalizationConfig::default()).then(|| Self {
            normalize_path: n.normalize_path,
            merge_slashes: n.merge_slashes,
            escaped_slashes: n.escaped_slashes.as_str(),
            path_parameters: n.path_parameters.as_str(),
        })
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct RateLimit {
    requests: u32,
    unit: &'static str,
    burst: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    key: Option<RateLimitKey>,
    #[serde(skip_serializing_if = "Option::is_none")]
    global: Option<GlobalRateLimit>,
}

#[derive(Serialize)]
struct RateLimitKey {
    #[serde(rename = "type")]
    kind: &'static str,
    name: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct GlobalRateLimit {
    redis: String,
    fail_open: bool,
    timeout: String,
}

impl RateLimit {
    fn of(r: &p::RateLimitConfig) -> Result<Self, String> {
        let unit = match r.per.as_secs() {
            1 => "second",
            60 => "minute",
            3600 => "hour",
            _ => return Err(format!("a rate limit per {} has no unit", duration(r.per))),
        };
        Ok(Self {
            requests: r.requests,
            unit,
            burst: r.burst,
            key: r.key_header.as_ref().map(|h| RateLimitKey {
                kind: "Header",
                name: h.as_str().to_string(),
            }),
            global: r.global.as_ref().map(|g| GlobalRateLimit {
                redis: g.redis.clone(),
                fail_open: g.fail_open,
                timeout: duration(g.timeout),
            }),
        })
    }
}

#[derive(Serialize)]
struct Listener {
    name: String,
    address: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    tls: Option<Tls>,
    #[serde(skip_serializing_if = "Limits::is_empty")]
    limits: Limits,
    #[serde(rename = "pathNormalization", skip_serializing_if = "Option::is_none")]
    path_normalization: Option<PathNormalization>,
    #[serde(rename = "clientAddress", skip_serializing_if = "Option::is_none")]
    client_address: Option<ClientAddress>,
    #[serde(rename = "proxyProtocol", skip_serializing_if = "Option::is_none")]
    proxy_protocol: Option<ProxyProtocol>,
    #[serde(skip_serializing_if = "Option::is_none")]
    compression: Option<Compression>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ClientAddress {
    trusted_hops: u32,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    trusted_cidrs: Vec<String>,
}

impl ClientAddress {
    fn of(c: &p::ClientAddressConfig) -> Self {
        Self {
            trusted_hops: c.trusted_hops,
            trusted_cidrs: c.trusted_cidrs.iter().map(ToString::to_string).collect(),
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ProxyProtocol {
    trusted_cidrs: Vec<String>,
}

impl ProxyProtocol {
    fn of(c: &p::ProxyProtocolConfig) -> Self {
        Self {
            trusted_cidrs: c.trusted_cidrs.iter().map(ToString::to_string).collect(),
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Compression {
    encodings: Vec<&'static str>,
    min_bytes: u64,
    content_types: Vec<String>,
}

impl Compression {
    fn of(c: &p::CompressionConfig) -> Self {
        Self {
            encodings: c.encodings.iter().map(p::ContentCoding::as_str).collect(),
            min_bytes: c.min_bytes,
            content_types: c.content_types.clone(),
        }
    }
}

#[derive(Serialize)]
struct Tls {
    certificate: String,
    key: String,
}

#[derive(Serialize, Default)]
#[serde(rename_all = "camelCase")]
struct Limits {
    #[serde(skip_serializing_if = "Option::is_none")]
    max_request_header_bytes: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_request_headers: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    header_read_timeout: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    idle_timeout: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    http2_max_concurrent_streams: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_connections: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_request_body_bytes: Option<u64>,
}

impl Limits {
    fn is_empty(&self) -> bool {
        self.max_request_header_bytes.is_none()
            && self.max_request_headers.is_none()
            && self.header_read_timeout.is_none()
            && self.idle_timeout.is_none()
            && self.http2_max_concurrent_streams.is_none()
            && self.max_connections.is_none()
            && self.max_request_body_bytes.is_none()
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Service {
    name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    protocol: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    connect_timeout: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    load_balancer: Option<LoadBalancer>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pool: Option<Pool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    circuit_breaker: Option<CircuitBreaker>,
    #[serde(skip_serializing_if = "Option::is_none")]
    outlier_detection: Option<Outlier>,
    #[serde(skip_serializing_if = "Option::is_none")]
    health_check: Option<HealthCheck>,
    #[serde(skip_serializing_if = "Option::is_none")]
    panic_threshold: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    grpc_error_codes: Option<Vec<String>>,
    versions: Vec<Version>,
}

/// A version: its static `endpoints`, or none (discovery finds them).
#[derive(Serialize)]
struct Version {
    name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    endpoints: Option<Vec<String>>,
}

#[derive(Serialize)]
struct Named {
    name: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct LoadBalancer {
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    hash_header: Option<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Pool {
    max_idle_per_endpoint: usize,
    idle_timeout: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct CircuitBreaker {
    max_requests: usize,
    max_retries: usize,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Outlier {
    #[serde(rename = "consecutive5xx", skip_serializing_if = "Option::is_none")]
    consecutive_5xx: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    consecutive_gateway_errors: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    consecutive_local_origin_failures: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    interval: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    base_ejection_time: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_ejection_time: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_ejection_percent: Option<f64>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct HealthCheck {
    path: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    interval: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    timeout: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    healthy_threshold: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    unhealthy_threshold: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    jitter: Option<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Route {
    name: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    parent_refs: Vec<Named>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    hostnames: Vec<String>,
    rules: Vec<Rule>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Rule {
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    matches: Vec<Match>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    filters: Vec<Filter>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    backend_refs: Vec<BackendRef>,
    #[serde(skip_serializing_if = "Timeouts::is_empty")]
    timeouts: Timeouts,
    #[serde(skip_serializing_if = "Option::is_none")]
    retry: Option<Retry>,
    #[serde(skip_serializing_if = "Option::is_none")]
    fault: Option<Fault>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_concurrent_requests: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    rate_limit: Option<RateLimit>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_request_body_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    session_persistence: Option<SessionPersistence>,
}

/// A rule's `sessionPersistence`, as a stack file writes it.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct SessionPersistence {
    session_name: String,
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    absolute_timeout: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    idle_timeout: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cookie_config: Option<CookieConfig>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct CookieConfig {
    lifetime_type: &'static str,
}

impl SessionPersistence {
    fn of(s: &p::SessionPersistenceConfig) -> Self {
        Self {
            session_name: s.name.clone(),
            kind: match s.kind {
                p::SessionKind::Cookie => "Cookie",
                p::SessionKind::Header => "Header",
            },
            absolute_timeout: s.absolute_timeout.map(duration),
            idle_timeout: s.idle_timeout.map(duration),
            cookie_config: s.permanent.then_some(CookieConfig {
                lifetime_type: "Permanent",
            }),
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Match {
    path: TypedValue,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    headers: Vec<NamedMatch>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    query_params: Vec<NamedMatch>,
    #[serde(skip_serializing_if = "Option::is_none")]
    method: Option<String>,
}

#[derive(Serialize)]
struct TypedValue {
    #[serde(rename = "type")]
    kind: &'static str,
    value: String,
}

#[derive(Serialize)]
struct NamedMatch {
    #[serde(rename = "type")]
    kind: &'static str,
    name: String,
    value: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Filter {
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    request_header_modifier: Option<HeaderModifier>,
    #[serde(skip_serializing_if = "Option::is_none")]
    response_header_modifier: Option<HeaderModifier>,
    #[serde(skip_serializing_if = "Option::is_none")]
    url_rewrite: Option<UrlRewrite>,
    #[serde(skip_serializing_if = "Option::is_none")]
    request_redirect: Option<Redirect>,
    #[serde(skip_serializing_if = "Option::is_none")]
    external_auth: Option<ExternalAuth>,
    #[serde(skip_serializing_if = "Option::is_none")]
    request_mirror: Option<Mirror>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cors: Option<Cors>,
    #[serde(skip_serializing_if = "Option::is_none")]
    api_key: Option<ApiKey>,
    #[serde(skip_serializing_if = "Option::is_none")]
    jwt: Option<token_auth::Jwt>,
    #[serde(skip_serializing_if = "Option::is_none")]
    basic_auth: Option<token_auth::BasicAuth>,
}

/// The APIKey filter as the file writes it: hashes in hex.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ApiKey {
    header: String,
    keys: Vec<ApiKeyEntry>,
    #[serde(skip_serializing_if = "Option::is_none")]
    forward_key_name_header: Option<String>,
}

#[derive(Serialize)]
struct ApiKeyEntry {
    name: String,
    sha256: String,
}

impl ApiKey {
    fn of(k: &p::ApiKeyConfig) -> Self {
        Self {
            header: k.header.as_str().to_string(),
            keys: k
                .keys
                .iter()
                .map(|e| ApiKeyEntry {
                    name: e.name.clone(),
                    sha256: e.sha256.iter().map(|b| format!("{b:02x}")).collect(),
                })
                .collect(),
            forward_key_name_header: k
                .forward_key_name_header
                .as_ref()
                .map(|h| h.as_str().to_string()),
        }
    }
}

/// The CORS filter as the file (and an HTTPRoute) writes it.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Cors {
    allow_origins: Vec<String>,
    allow_methods: Vec<String>,
    allow_headers: Vec<String>,
    expose_headers: Vec<String>,
    max_age: u32,
    allow_credentials: bool,
}

impl Cors {
    pub(crate) fn of(c: &p::CorsConfig) -> Self {
        let names = |list: &p::CorsList<http::HeaderName>| match list {
            p::CorsList::Any => vec!["*".to_string()],
            p::CorsList::Only(v) => v.iter().map(|h| h.as_str().to_string()).collect(),
        };
        Self {
            allow_origins: c.allow_origins.iter().cloned().map(String::from).collect(),
            allow_methods: match &c.allow_methods {
                p::CorsList::Any => vec!["*".to_string()],
                p::CorsList::Only(v) => v.iter().map(ToString::to_string).collect(),
            },
            allow_headers: names(&c.allow_headers),
            expose_headers: names(&c.expose_headers),
            max_age: c.max_age,
            allow_credentials: c.allow_credentials,
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Mirror {
    backend_ref: BackendRef,
    #[serde(skip_serializing_if = "Option::is_none")]
    percent: Option<f64>,
}

impl Filter {
    fn new(kind: &'static str) -> Self {
        Self {
            kind,
            request_header_modifier: None,
            response_header_modifier: None,
            url_rewrite: None,
            request_redirect: None,
            external_auth: None,
            request_mirror: None,
            cors: None,
            api_key: None,
            jwt: None,
            basic_auth: None,
        }
    }
}

#[derive(Serialize)]
struct HeaderModifier {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    set: Vec<HeaderPair>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    add: Vec<HeaderPair>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    remove: Vec<String>,
}

#[derive(Serialize)]
struct HeaderPair {
    name: String,
    value: String,
}

#[derive(Serialize)]
struct UrlRewrite {
    #[serde(skip_serializing_if = "Option::is_none")]
    hostname: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    path: Option<PathMod>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Redirect {
    #[serde(skip_serializing_if = "Option::is_none")]
    scheme: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    hostname: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    path: Option<PathMod>,
    #[serde(skip_serializing_if = "Option::is_none")]
    port: Option<u16>,
    status_code: u16,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct PathMod {
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    replace_full_path: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    replace_prefix_match: Option<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ExternalAuth {
    backend_ref: BackendRef,
    http: ExternalAuthHttp,
    #[serde(skip_serializing_if = "Option::is_none")]
    timeout: Option<String>,
    #[serde(skip_serializing_if = "is_false")]
    fail_open: bool,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ExternalAuthHttp {
    #[serde(skip_serializing_if = "Option::is_none")]
    path: Option<String>,
    allowed_headers: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    allowed_response_headers: Vec<String>,
}

#[derive(Serialize, Default)]
struct BackendRef {
    #[serde(skip_serializing_if = "Option::is_none")]
    group: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    kind: Option<String>,
    name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    weight: Option<u32>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    filters: Vec<Filter>,
}

#[derive(Serialize, Default)]
#[serde(rename_all = "camelCase")]
struct Timeouts {
    #[serde(skip_serializing_if = "Option::is_none")]
    request: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    backend_request: Option<String>,
}

impl Timeouts {
    fn is_empty(&self) -> bool {
        self.request.is_none() && self.backend_request.is_none()
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Retry {
    attempts: u32,
    codes: Vec<u16>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    grpc_codes: Vec<String>,
    backoff: String,
    #[serde(skip_serializing_if = "is_false")]
    unsafe_methods: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    budget: Option<RetryBudget>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct RetryBudget {
    percent: f64,
    min_retries_per_second: u32,
    ttl: String,
}

#[derive(Serialize)]
struct Fault {
    #[serde(skip_serializing_if = "Option::is_none")]
    delay: Option<FaultDelay>,
    #[serde(skip_serializing_if = "Option::is_none")]
    abort: Option<FaultAbort>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    headers: Vec<NamedMatch>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct FaultDelay {
    fixed_delay: String,
    percent: f64,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct FaultAbort {
    http_status: u16,
    percent: f64,
}

impl Listener {
    /// A listener named `name` at `address` with the settings of `l`.
    fn of(
        l: Option<&p::ListenerConfig>,
        name: String,
        address: SocketAddr,
        tls: Option<(String, String)>,
    ) -> Self {
        Self {
            name,
            address: address.to_string(),
            tls: tls.map(|(certificate, key)| Tls { certificate, key }),
            limits: l.map(|l| limits(&l.limits)).unwrap_or_default(),
            path_normalization: l.and_then(|l| PathNormalization::of(&l.path_normalization)),
            client_address: l
                .and_then(|l| l.client_address.as_ref())
                .map(ClientAddress::of),
            proxy_protocol: l
                .and_then(|l| l.proxy_protocol.as_ref())
                .map(ProxyProtocol::of),
            compression: l.and_then(|l| l.compression.as_ref()).map(Compression::of),
        }
    }
}

impl File {
    fn from_config(
        cfg: &ProxyConfig,
        listeners: Vec<Listener>,
        admin: SocketAddr,
        metrics: Option<SocketAddr>,
    ) -> Result<Self, RenderError> {
        Ok(Self {
            admin: Admin {
                address: admin.to_string(),
                metrics_address: metrics.map(|m| m.to_string()),
            },
            access_log: cfg.access_log.map(|f| AccessLog { format: f.as_str() }),
            tracing: cfg.tracing.as_ref().map(Tracing::of),
            // The model has no "unset": the default is one worker per CPU
            // of the machine that loaded it, which is not the pod's.
            workers: (cfg.workers != p::default_workers()).then_some(cfg.workers),
            drain_timeout: (cfg.drain_timeout != defaults::DRAIN_TIMEOUT)
                .then(|| duration(cfg.drain_timeout)),
            discovery: cfg.discovery.map(|d| d.as_str()),
            listeners,
            services: cfg.services.iter().map(service).collect(),
            routes: cfg.routes.iter().map(route).collect::<Result<_, _>>()?,
        })
    }
}

fn limits(l: &p::ListenerLimits) -> Limits {
    let d = p::ListenerLimits::default();
    Limits {
        max_request_header_bytes: (l.max_request_header_bytes != d.max_request_header_bytes)
            .then_some(l.max_request_header_bytes),
        max_request_headers: (l.max_request_headers != d.max_request_headers)
            .then_some(l.max_request_headers),
        header_read_timeout: (l.header_read_timeout != d.header_read_timeout)
            .then(|| duration(l.header_read_timeout)),
        idle_timeout: (l.idle_timeout != d.idle_timeout).then(|| duration(l.idle_timeout)),
        http2_max_concurrent_streams: (l.http2_max_concurrent_streams
            != d.http2_max_concurrent_streams)
            .then_some(l.http2_max_concurrent_streams),
        max_connections: (l.max_connections != d.max_connections).then_some(l.max_connections),
        max_request_body_bytes: (l.max_request_body_bytes != d.max_request_body_bytes)
            .then_some(l.max_request_body_bytes),
    }
}

fn service(s: &p::ServiceConfig) -> Service {
    let lb = &s.load_balancer;
    let pool_default = s.max_idle_per_endpoint == defaults::MAX_IDLE_PER_ENDPOINT
        && s.pool_idle_timeout == defaults::POOL_IDLE_TIMEOUT;
    Service {
        name: s.name.clone(),
        protocol: (s.protocol != UpstreamProtocol::default()).then(|| s.protocol.as_str()),
        connect_timeout: (s.connect_timeout != defaults::CONNECT_TIMEOUT)
            .then(|| duration(s.connect_timeout)),
        load_balancer: (lb.policy != LbPolicy::default() || lb.hash_header.is_some()).then(|| {
            LoadBalancer {
                kind: lb.policy.as_str(),
                hash_header: lb.hash_header.as_ref().map(|h| h.as_str().to_string()),
            }
        }),
        pool: (!pool_default).then(|| Pool {
            max_idle_per_endpoint: s.max_idle_per_endpoint,
            idle_timeout: duration(s.pool_idle_timeout),
        }),
        circuit_breaker: (s.circuit_breaker != p::CircuitBreakerConfig::default()).then_some(
            CircuitBreaker {
                max_requests: s.circuit_breaker.max_requests,
                max_retries: s.circuit_breaker.max_retries,
            },
        ),
        outlier_detection: s.outlier_detection.as_ref().map(outlier),
        health_check: s.health_check.as_ref().map(health_check),
        #[allow(clippy::float_cmp)] // the default exactly, or written out
        panic_threshold: (s.panic_threshold != defaults::PANIC_THRESHOLD)
            .then_some(s.panic_threshold),
        grpc_error_codes: (s.grpc_error_codes != defaults::GRPC_ERROR_CODES)
            .then(|| grpc_code_names(&s.grpc_error_codes)),
        versions: s
            .versions
            .iter()
            .map(|v| Version {
                name: v.name.clone(),
                endpoints: v
                    .endpoints
                    .as_ref()
                    .map(|e| e.iter().map(ToString::to_string).collect()),
            })
            .collect(),
    }
}

fn outlier(o: &p::OutlierConfig) -> Outlier {
    Outlier {
        consecutive_5xx: o.consecutive_5xx,
        consecutive_gateway_errors: o.consecutive_gateway_errors,
        consecutive_local_origin_failures: o.consecutive_local_origin_failures,
        interval: (o.interval != defaults::OUTLIER_INTERVAL).then(|| duration(o.interval)),
        base_ejection_time: (o.base_ejection_time != defaults::OUTLIER_BASE_EJECTION)
            .then(|| duration(o.base_ejection_time)),
        max_ejection_time: (o.max_ejection_time != defaults::OUTLIER_MAX_EJECTION)
            .then(|| duration(o.max_ejection_time)),
        #[allow(clippy::float_cmp)] // the default exactly, or written out
        max_ejection_percent: (o.max_ejection_percent != defaults::OUTLIER_MAX_EJECTION_PERCENT)
            .then_some(o.max_ejection_percent),
    }
}

fn health_check(h: &p::HealthCheckConfig) -> HealthCheck {
    HealthCheck {
        path: h.path.clone(),
        interval: (h.interval != defaults::HEALTH_INTERVAL).then(|| duration(h.interval)),
        timeout: (h.timeout != defaults::HEALTH_TIMEOUT).then(|| duration(h.timeout)),
        healthy_threshold: (h.healthy_threshold != defaults::HEALTH_HEALTHY_THRESHOLD)
            .then_some(h.healthy_threshold),
        unhealthy_threshold: (h.unhealthy_threshold != defaults::HEALTH_UNHEALTHY_THRESHOLD)
            .then_some(h.unhealthy_threshold),
        jitter: (!h.jitter.is_zero()).then(|| duration(h.jitter)),
    }
}

fn route(r: &p::RouteConfig) -> Result<Route, RenderError> {
    let err = |message: String| RenderError::Route {
        route: r.name.clone(),
        message,
    };
    let mut rules = Vec::new();
    for rule in &r.rules {
        rules.push(self::rule(rule).map_err(err)?);
    }
    Ok(Route {
        name: r.name.clone(),
        parent_refs: r
            .listeners
            .iter()
            .map(|l| Named { name: l.clone() })
            .collect(),
        hostnames: r.hostnames.clone(),
        rules,
    })
}

fn rule(rule: &p::RuleConfig) -> Result<Rule, String> {
    let request = match rule.timeouts.request {
        None => Some("0s".to_string()),
        Some(d) if d == defaults::REQUEST_TIMEOUT => None,
        Some(d) => Some(duration(d)),
    };
    Ok(Rule {
        name: rule.name.clone(),
        matches: rule.matches.iter().map(match_).collect(),
        filters: rule.filters.iter().map(filter).collect::<Result<_, _>>()?,
        backend_refs: rule
            .backends
            .iter()
            .map(|b| {
                Ok(BackendRef {
                    name: b.service.clone(),
                    version: Some(b.version.clone()),
                    weight: Some(b.weight),
                    filters: backend_filters(&b.filters)?,
                    ..BackendRef::default()
                })
            })
            .collect::<Result<Vec<_>, String>>()?
            .into_iter()
            .chain(rule.unresolved.iter().filter_map(|u| match &u.reason {
                // Another kind than Service, as written; a Service not found
                // is only ever from an HTTPRoute, never from a file.
                p::UnresolvedReason::InvalidKind { group, kind } => Some(BackendRef {
                    group: Some(group.clone()),
                    kind: Some(kind.clone()),
                    name: u.name.clone(),
                    version: None,
                    weight: Some(u.weight),
                    filters: Vec::new(),
                }),
                p::UnresolvedReason::BackendNotFound => None,
            }))
            .collect(),
        timeouts: Timeouts {
            request,
            backend_request: rule.timeouts.backend_request.map(duration),
        },
        retry: rule.retry.configured.then(|| Retry {
            attempts: rule.retry.attempts,
            codes: rule.retry.codes.clone(),
            grpc_codes: grpc_code_names(&rule.retry.grpc_codes),
            backoff: duration(rule.retry.backoff),
            unsafe_methods: rule.retry.unsafe_methods,
            budget: (rule.retry.budget != p::RetryBudgetConfig::default()).then(|| RetryBudget {
                percent: rule.retry.budget.percent,
                min_retries_per_second: rule.retry.budget.min_retries_per_second,
                ttl: duration(rule.retry.budget.ttl),
            }),
        }),
        fault: rule.fault.as_ref().map(|f| Fault {
            delay: f.delay.map(|(d, percent)| FaultDelay {
                fixed_delay: duration(d),
                percent,
            }),
            abort: f.abort.map(|(http_status, percent)| FaultAbort {
                http_status,
                percent,
            }),
            headers: f.headers.iter().map(named_match).collect(),
        }),
        max_concurrent_requests: rule.max_concurrent_requests,
        rate_limit: rule.rate_limit.as_ref().map(RateLimit::of).transpose()?,
        max_request_body_bytes: rule.max_request_body_bytes,
        session_persistence: rule
            .session_persistence
            .as_ref()
            .map(SessionPersistence::of),
    })
}

/// gRPC statuses as a file names them (`resource-exhausted`).
fn grpc_code_names(codes: &[u32]) -> Vec<String> {
    codes
        .iter()
        .filter_map(|c| p::GRPC_CODE_NAMES.get(usize::try_from(*c).ok()?))
        .map(|n| n.to_ascii_lowercase().replace('_', "-"))
        .collect()
}

fn match_(m: &p::MatchConfig) -> Match {
    let path = match &m.path {
        PathMatch::Exact(v) => TypedValue {
            kind: "Exact",
            value: v.clone(),
        },
        // Stored without its trailing slash; `/` is stored as "".
        PathMatch::PathPrefix(v) => TypedValue {
            kind: "PathPrefix",
            value: if v.is_empty() { "/".into() } else { v.clone() },
        },
        PathMatch::RegularExpression(r) => TypedValue {
            kind: "RegularExpression",
            value: regex_source(r),
        },
    };
    Match {
        path,
        headers: m.headers.iter().map(named_match).collect(),
        query_params: m.query_params.iter().map(named_match).collect(),
        method: m.method.as_ref().map(ToString::to_string),
    }
}

fn named_match(v: &p::ValueMatch) -> NamedMatch {
    let (kind, value) = match &v.value {
        StringMatch::Exact(s) => ("Exact", s.clone()),
        StringMatch::RegularExpression(r) => ("RegularExpression", regex_source(r)),
    };
    NamedMatch {
        kind,
        name: v.name.clone(),
        value,
    }
}

fn path_mod(m: &PathModifier) -> PathMod {
    match m {
        PathModifier::ReplaceFullPath(v) => PathMod {
            kind: "ReplaceFullPath",
            replace_full_path: Some(v.clone()),
            replace_prefix_match: None,
        },
        PathModifier::ReplacePrefixMatch(v) => PathMod {
            kind: "ReplacePrefixMatch",
            replace_full_path: None,
            replace_prefix_match: Some(v.clone()),
        },
    }
}

fn header_modifier(m: &p::HeaderModifierConfig) -> Result<HeaderModifier, String> {
    let pairs = |list: &[(http::HeaderName, http::HeaderValue)]| {
        list.iter()
            .map(|(n, v)| {
                Ok(HeaderPair {
                    name: n.as_str().to_string(),
                    value: header_value(v)?,
                })
            })
            .collect::<Result<Vec<_>, String>>()
    };
    Ok(HeaderModifier {
        set: pairs(&m.set)?,
        add: pairs(&m.add)?,
        remove: m.remove.iter().map(|h| h.as_str().to_string()).collect(),
    })
}

/// A backendRef's header modifiers, as a rule's filters are written.
fn backend_filters(f: &p::BackendFilters) -> Result<Vec<Filter>, String> {
    let mut out = Vec::new();
    if let Some(m) = &f.request_headers {
        out.push(filter(&FilterConfig::RequestHeaderModifier(m.clone()))?);
    }
    if let Some(m) = &f.response_headers {
        out.push(filter(&FilterConfig::ResponseHeaderModifier(m.clone()))?);
    }
    Ok(out)
}

fn filter(f: &FilterConfig) -> Result<Filter, String> {
    Ok(match f {
        FilterConfig::RequestHeaderModifier(m) => Filter {
            request_header_modifier: Some(header_modifier(m)?),
            ..Filter::new("RequestHeaderModifier")
        },
        FilterConfig::ResponseHeaderModifier(m) => Filter {
            response_header_modifier: Some(header_modifier(m)?),
            ..Filter::new("ResponseHeaderModifier")
        },
        FilterConfig::UrlRewrite(u) => Filter {
            url_rewrite: Some(UrlRewrite {
                hostname: u.hostname.clone(),
                path: u.path.as_ref().map(path_mod),
            }),
            ..Filter::new("URLRewrite")
        },
        FilterConfig::RequestRedirect(r) => Filter {
            request_redirect: Some(Redirect {
                scheme: r.scheme.clone(),
                hostname: r.hostname.clone(),
                path: r.path.as_ref().map(path_mod),
                port: r.port,
                status_code: r.status.as_u16(),
            }),
            ..Filter::new("RequestRedirect")
        },
        FilterConfig::ExternalAuth(a) => Filter {
            external_auth: Some(ExternalAuth {
                backend_ref: BackendRef {
                    name: a.service.clone(),
                    version: Some(a.version.clone()),
                    ..BackendRef::default()
                },
                http: ExternalAuthHttp {
                    path: (!a.path_prefix.is_empty()).then(|| a.path_prefix.clone()),
                    allowed_headers: a
                        .allowed_headers
                        .iter()
                        .map(|h| h.as_str().to_string())
                        .collect(),
                    allowed_response_headers: a
                        .allowed_response_headers
                        .iter()
                        .map(|h| h.as_str().to_string())
                        .collect(),
                },
                timeout: (a.timeout != defaults::EXTERNAL_AUTH_TIMEOUT)
                    .then(|| duration(a.timeout)),
                fail_open: a.fail_open,
            }),
            ..Filter::new("ExternalAuth")
        },
        FilterConfig::RequestMirror(m) => Filter {
            request_mirror: Some(Mirror {
                backend_ref: BackendRef {
                    name: m.service.clone(),
                    version: Some(m.version.clone()),
                    ..BackendRef::default()
                },
                #[allow(clippy::float_cmp)] // 100 exactly is the default
                percent: (m.percent != 100.0).then_some(m.percent),
            }),
            ..Filter::new("RequestMirror")
        },
        FilterConfig::Cors(c) => Filter {
            cors: Some(Cors::of(c)),
            ..Filter::new("CORS")
        },
        FilterConfig::ApiKey(k) => Filter {
            api_key: Some(ApiKey::of(k)),
            ..Filter::new("APIKey")
        },
        FilterConfig::Jwt(j) => Filter {
            jwt: Some(token_auth::Jwt::of(j)),
            ..Filter::new("JWT")
        },
        FilterConfig::BasicAuth(b) => Filter {
            basic_auth: Some(token_auth::BasicAuth::of(b)),
            ..Filter::new("BasicAuth")
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Settings a stack cannot set (yet) but a proxy config can: written
    /// back, they read as the same config.
    #[test]
    fn a_proxy_config_reads_back_the_same() {
        let text = r#"
tracing: {endpoint: "http://127.0.0.1:4318", serviceName: gw, samplingRatio: 0.25, headers: {x-tenant: a}}
listeners:
  - name: gateway
    address: "127.0.0.1:8080"
    pathNormalization: {mergeSlashes: false, escapedSlashes: UnescapeAndForward}
    clientAddress: {trustedHops: 1, trustedCidrs: ["10.0.0.0/8", "fd00::/8"]}
    proxyProtocol: {trustedCidrs: ["10.0.0.0/8", "fd00::/8"]}
services:
  - name: a
    healthCheck: {path: /healthz, interval: 2s, timeout: 300ms, healthyThreshold: 1, unhealthyThreshold: 4, jitter: 100ms}
    panicThreshold: 25
    grpcErrorCodes: [unavailable, resource-exhausted]
    outlierDetection: {consecutiveLocalOriginFailures: 2, baseEjectionTime: 10s, maxEjectionTime: 1m}
    pool: {maxIdlePerEndpoint: 8, idleTimeout: 20s}
    loadBalancer: {type: RoundRobin}
    versions: [{name: v1}, {name: v2}]
routes:
  - name: r
    rules:
      - matches: [{path: {type: PathPrefix, value: /}, headers: [{type: RegularExpression, name: x-a, value: "b.*"}]}]
        filters:
          - type: RequestMirror
            requestMirror: {backendRef: {name: a, version: v2}, percent: 5}
        backendRefs:
          - name: a
            version: v1
            filters:
              - {type: RequestHeaderModifier, requestHeaderModifier: {set: [{name: x-backend, value: v1}]}}
              - {type: ResponseHeaderModifier, responseHeaderModifier: {remove: [server]}}
        retry: {attempts: 2, grpcCodes: [unavailable, resource-exhausted], budget: {percent: 50, minRetriesPerSecond: 1, ttl: 5s}}
        fault: {headers: [{name: x-fault, value: "1"}], delay: {fixedDelay: 1s, percent: 50}}
        rateLimit: {requests: 100, unit: minute, burst: 150, key: {type: Header, name: x-api-key}, global: {redis: "redis://127.0.0.1:6379/", failOpen: false, timeout: 50ms}}
      - backendRefs: [{name: a, version: v2}]
        rateLimit: {requests: 5, unit: second}
        sessionPersistence: {sessionName: s, absoluteTimeout: 1h, idleTimeout: 10m, cookieConfig: {lifetimeType: Permanent}}
      - backendRefs: [{name: a, version: v2}]
        sessionPersistence: {type: Header}
"#;
        let json = |v: serde_json::Result<serde_json::Value>| v.ok();
        let cfg =
            serin_config::proxy::parse_proxy_config(text, "in.yaml", std::path::Path::new("/"))
                .unwrap_or_else(|e| panic!("{e}"));
        let listen = SocketAddr::from(([0, 0, 0, 0], 8080));
        let admin = SocketAddr::from(([127, 0, 0, 1], 9901));
        let metrics = SocketAddr::from(([0, 0, 0, 0], 9090));
        let written =
            write(&cfg, listen, admin, Some(metrics), None).unwrap_or_else(|e| panic!("{e}"));
        let back = serin_config::proxy::parse_proxy_config(
            &written,
            "out.yaml",
            std::path::Path::new("/"),
        )
        .unwrap_or_else(|e| panic!("{e}\n{written}"));
        assert_eq!(
            json(serde_json::to_value(&back.services)),
            json(serde_json::to_value(&cfg.services)),
            "{written}"
        );
        assert_eq!(
            json(serde_json::to_value(&back.routes)),
            json(serde_json::to_value(&cfg.routes)),
            "{written}"
        );
        assert!(cfg.routes[0].rules[0].rate_limit.is_some(), "{written}");
        let normalization = |c: &ProxyConfig| {
            c.listeners
                .first()
                .map(|l| json(serde_json::to_value(l.path_normalization)))
        };
        assert_eq!(normalization(&back), normalization(&cfg), "{written}");
        let trusted = |c: &ProxyConfig| c.listeners.first().map(|l| l.client_address.clone());
        assert_eq!(trusted(&back), trusted(&cfg), "{written}");
        assert!(cfg.listeners[0].client_address.is_some());
        let proxy_protocol =
            |c: &ProxyConfig| c.listeners.first().map(|l| l.proxy_protocol.clone());
        assert_eq!(proxy_protocol(&back), proxy_protocol(&cfg), "{written}");
        assert!(cfg.listeners[0].proxy_protocol.is_some());
        assert_ne!(
            cfg.listeners[0].path_normalization,
            p::PathNormalizationConfig::default()
        );
        assert_eq!(
            json(serde_json::to_value(&back.tracing)),
            json(serde_json::to_value(&cfg.tracing)),
            "{written}"
        );
        assert!(cfg.tracing.is_some());
    }

    /// The token auth filters name files by absolute path; written back
    /// they read as the same filters (APIKey's `keysFile` as inline keys).
    #[test]
    fn token_auth_filters_read_back_the_same() {
        let dir = std::env::temp_dir().join(format!("serin-kube-auth-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
        let jwks = r#"{"keys":[{"kty":"EC","crv":"P-256","kid":"k1","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}]}"#;
        let hash = "$2y$05$abcdefghijklmnopqrstuu5Bz0y7aMVPzN5k3ZJr1BB2zBqXCcFJy";
        for (name, text) in [
            ("jwks.json", jwks.to_string()),
            ("users.htpasswd", format!("alice:{hash}\n")),
            ("keys.txt", format!("ci {}\n", "ab".repeat(32))),
        ] {
            std::fs::write(dir.join(name), text).unwrap_or_else(|e| panic!("{e}"));
        }
        let text = r#"
listeners: [{name: gateway, address: "127.0.0.1:8080"}]
services: [{name: a, versions: [{name: v1}]}]
routes:
  - name: r
    rules:
      - filters:
          - type: JWT
            jwt: {issuer: "https://idp", audiences: [api, web], jwks: {file: jwks.json}, leeway: 5s, header: x-token, claimsToHeaders: [{claim: sub, header: x-user}]}
          - type: JWT
            jwt: {issuer: "https://idp", audiences: [api], jwks: {url: "https://idp/jwks", refreshInterval: 30s}}
          - type: BasicAuth
            basicAuth: {htpasswd: users.htpasswd, realm: staff, forwardUserHeader: x-user-name}
          - type: APIKey
            apiKey: {keysFile: keys.txt}
        backendRefs: [{name: a, version: v1}]
"#;
        let cfg = serin_config::proxy::parse_proxy_config(text, "in.yaml", &dir)
            .unwrap_or_else(|e| panic!("{e}"));
        let listen = SocketAddr::from(([0, 0, 0, 0], 8080));
        let admin = SocketAddr::from(([127, 0, 0, 1], 9901));
        let written = write(&cfg, listen, admin, None, None).unwrap_or_else(|e| panic!("{e}"));
        let back = serin_config::proxy::parse_proxy_config(
            &written,
            "out.yaml",
            std::path::Path::new("/"),
        )
        .unwrap_or_else(|e| panic!("{e}\n{written}"));
        let _ = std::fs::remove_dir_all(&dir);
        let json = |c: &ProxyConfig| serde_json::to_value(&c.routes).ok();
        assert_eq!(json(&back), json(&cfg), "{written}");
        assert_eq!(cfg.routes[0].rules[0].filters.len(), 4, "{written}");
    }

    #[test]
    fn durations_are_exact() {
        assert_eq!(duration(Duration::from_millis(25)), "25ms");
        assert_eq!(duration(Duration::from_secs(15)), "15s");
        assert_eq!(duration(Duration::from_secs(90)), "90s");
        assert_eq!(duration(Duration::from_secs(120)), "2m");
        assert_eq!(duration(Duration::from_micros(1500)), "1500us");
        assert_eq!(duration(Duration::ZERO), "0s");
        for text in ["25ms", "15s", "90s", "2m", "1500us", "0s", "7ns"] {
            let d = serin_config::parse_duration(text).ok();
            assert_eq!(d.map(duration).as_deref(), Some(text));
        }
    }
}
