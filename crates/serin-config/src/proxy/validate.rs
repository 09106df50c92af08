//! Checks that need the whole file (names that must resolve, sums, regexes)
//! and the conversion from raw structs into the validated model.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::Path;

use http::{HeaderName, HeaderValue, Method, StatusCode};
use regex::Regex;

use super::admin::Origin;
use super::model::*;
use super::raw;
use crate::decode::Spanned;
use crate::error::{Problems, Span};

/// Upper bound of a backend weight, as in the Gateway API.
const MAX_WEIGHT: u32 = 1_000_000;
const MAX_RETRY_ATTEMPTS: u32 = 10;

pub(crate) fn validate(raw: raw::Config, base_dir: &Path, p: &mut Problems) -> ProxyConfig {
    let admin = admin(raw.admin.as_ref(), p);
    let listeners = listeners(&raw.listeners, base_dir, p);
    let services = services(&raw.services, base_dir, p);
    let listener_names: BTreeSet<&str> = listeners.iter().map(|l| l.name.as_str()).collect();
    let refs = Refs {
        services: &services,
        base_dir,
        missing: MissingService::Refused,
    };
    let routes = routes(raw.routes.list(), refs, &listener_names, p);
    let workers = match &raw.workers {
        Some(w) if **w == 0 || **w > 256 => {
            w.report(p, "workers must be from 1 to 256");
            1
        }
        Some(w) => **w,
        None => default_workers(),
    };
    ProxyConfig {
        source: None,
        admin,
        access_log: raw
            .access_log
            .as_ref()
            .filter(|a| a.enabled.unwrap_or(true))
            .map(|a| a.format),
        tracing: tracing(raw.tracing.as_ref(), p),
        workers,
        drain_timeout: raw.drain_timeout.unwrap_or(defaults::DRAIN_TIMEOUT),
        listeners,
        services,
        routes,
        discovery: raw.discovery,
        routes_from_kubernetes: matches!(raw.routes, raw::Routes::Kubernetes(_)),
        warnings: Vec::new(),
    }
}

/// What a rule's backendRef that names no service version is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MissingService {
    /// In a file: a typo the user must see, refused at its place.
    Refused,
    /// In routes from elsewhere (HTTPRoutes), written apart from the
    /// services: the Gateway API's BackendNotFound. That backend's share
    /// of the rule answers 500, with a warning; every other route serves.
    Unresolved,
}

/// What backendRefs are resolved against.
#[derive(Clone, Copy)]
struct Refs<'a> {
    services: &'a [ServiceConfig],
    /// Where files that filters name are found.
    base_dir: &'a Path,
    missing: MissingService,
}

/// Validates routes that come from elsewhere (Kubernetes HTTPRoutes, turned
/// into the file's route format) against a validated config's services and
/// listeners. A rule's backendRef to a service version that does not exist
/// is unresolved (its share answers 500) and warned about, not refused.
pub(crate) fn routes_only(
    raw: &[raw::Route],
    config: &ProxyConfig,
    p: &mut Problems,
) -> Vec<RouteConfig> {
    let listener_names: BTreeSet<&str> = config.listeners.iter().map(|l| l.name.as_str()).collect();
    let refs = Refs {
        services: &config.services,
        // HTTPRoutes carry no filter that names a file.
        base_dir: Path::new("."),
        missing: MissingService::Unresolved,
    };
    routes(raw, refs, &listener_names, p)
}

/// One worker per CPU, as NGINX's `worker_processes auto`.
pub fn default_workers() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZero::get)
}

/// The tracing section; `enabled: false` turns it off as if absent.
fn tracing(raw: Option<&raw::Tracing>, p: &mut Problems) -> Option<TracingConfig> {
    let raw = raw.filter(|t| t.enabled.unwrap_or(true))?;
    if let Some(e) = &raw.endpoint {
        match e.parse::<http::Uri>() {
            Ok(uri) if uri.scheme_str() == Some("http") && uri.authority().is_some() => {}
            Ok(uri) if uri.scheme_str() == Some("https") => e.report(
                p,
                format!(
                    "`{}`: serin exports over plain HTTP; send to a local OpenTelemetry Collector (http://HOST:4318) that forwards over TLS",
                    **e
                ),
            ),
            _ => e.report(
                p,
                format!(
                    "bad endpoint `{}`: expected an OTLP/HTTP URL such as http://127.0.0.1:4318",
                    **e
                ),
            ),
        }
    }
    if let Some(n) = &raw.service_name
        && n.trim().is_empty()
    {
        n.report(p, "serviceName must not be empty");
    }
    let sampling_ratio = match &raw.sampling_ratio {
        Some(r) if !(0.0..=1.0).contains(&**r) => {
            r.report(
                p,
                format!("samplingRatio must be from 0 to 1, found {}", **r),
            );
            defaults::TRACING_SAMPLING_RATIO
        }
        Some(r) => **r,
        None => defaults::TRACING_SAMPLING_RATIO,
    };
    let mut headers = Vec::new();
    for (name, value) in raw.headers.iter().flatten() {
        if HeaderName::from_bytes(name.as_bytes()).is_err() {
            value.report(p, format!("`{name}` is not a valid header name"));
        } else if HeaderValue::from_str(value).is_err() {
            value.report(p, format!("the value of header `{name}` is not valid"));
        } else {
            headers.push((name.clone(), value.value.clone()));
        }
    }
    Some(TracingConfig {
        endpoint: raw.endpoint.as_ref().map(|e| e.value.clone()),
        service_name: raw.service_name.as_ref().map(|n| n.value.clone()),
        sampling_ratio,
        headers,
    })
}

/// The admin settings as the file gives them. Whether they may be opened
/// (beyond loopback only with a token) is decided by
/// [`super::admin::check`] once the command line is known, since a token
/// may come from there.
fn admin(raw: Option<&raw::Admin>, p: &mut Problems) -> AdminConfig {
    let Some(raw) = raw else {
        return AdminConfig::default();
    };
    let (address, address_origin) = match &raw.address {
        Some(a) => (
            **a,
            Origin::File {
                span: a.span,
                path: a.path.clone(),
            },
        ),
        None => (defaults::ADMIN_ADDRESS, Origin::Default),
    };
    let metrics_address = raw.metrics_address.as_ref().map(|a| **a);
    if let Some(m) = &raw.metrics_address
        && **m == address
        && m.port() != 0
    {
        p.report(
            m.span,
            "admin.metricsAddress",
            format!(
                "{} is the admin API's address: give the metrics their own port",
                **m
            ),
        );
    }
    let token = raw.token.clone().filter(|t| !t.is_empty());
    let token_origin = match token {
        Some(_) => Origin::File {
            span: raw.span,
            path: format!("{}.token", raw.node_path),
        },
        None => Origin::Default,
    };
    AdminConfig {
        address,
        metrics_address,
        token,
        address_origin,
        token_origin,
        token_key: super::admin::FILE_TOKEN_KEY,
    }
}

fn listeners(raw: &[raw::Listener], base_dir: &Path, p: &mut Problems) -> Vec<ListenerConfig> {
    let mut names = BTreeMap::new();
    let mut addrs = BTreeMap::new();
    let mut out = Vec::new();
    for l in raw {
        unique(&mut names, &l.name, "listener name", p);
        let address = match l.address.parse::<SocketAddr>() {
            Ok(a) => a,
            Err(_) => {
                if !l.address.is_empty() {
                    l.address.report(
                        p,
                        format!(
                            "bad address `{}`: expected IP:PORT such as 127.0.0.1:8080 or [::1]:8080",
                            *l.address
                        ),
                    );
                }
                SocketAddr::from(([127, 0, 0, 1], 0))
            }
        };
        if address.port() != 0
            && let Some(first) = addrs.insert(address, l.address.span)
        {
            l.address.report(
                p,
                format!(
                    "address {address} is already used by the listener at line {}",
                    first.line
                ),
            );
        }
        let tls = l
            .tls
            .as_ref()
            .map(|t| super::tls::listener_tls(t, base_dir, p));
        let mut limits = ListenerLimits::default();
        if let Some(raw) = &l.limits {
            if let Some(v) = &raw.max_request_header_bytes {
                positive(v, p);
                limits.max_request_header_bytes = **v;
            }
            if let Some(v) = &raw.max_request_headers {
                positive(v, p);
                limits.max_request_headers = **v;
            }
            if let Some(v) = &raw.http2_max_concurrent_streams {
                if **v == 0 {
                    v.report(p, "must be at least 1");
                }
                limits.http2_max_concurrent_streams = **v;
            }
            if let Some(v) = raw.header_read_timeout {
                limits.header_read_timeout = v;
            }
            if let Some(v) = raw.idle_timeout {
                limits.idle_timeout = v;
            }
            if let Some(v) = &raw.max_connections {
                positive(v, p);
                limits.max_connections = **v;
            }
            if let Some(v) = &raw.max_request_body_bytes {
                limits.max_request_body_bytes = **v;
            }
        }
        let path_normalization = l
            .path_normalization
            .as_ref()
            .map(|raw| {
                let d = PathNormalizationConfig::default();
                PathNormalizationConfig {
                    normalize_path: raw.normalize_path.unwrap_or(d.normalize_path),
                    merge_slashes: raw.merge_slashes.unwrap_or(d.merge_slashes),
                    escaped_slashes: raw.escaped_slashes.unwrap_or(d.escaped_slashes),
                    path_parameters: raw.path_parameters.unwrap_or(d.path_parameters),
                }
            })
            .unwrap_or_default();
        out.push(ListenerConfig {
            name: l.name.value.clone(),
            address,
            tls,
            limits,
            path_normalization,
            compression: l
                .compression
                .as_ref()
                .map(|c| super::compression::validate(c, p)),
            client_address: l.client_address.as_ref().map(|c| client_address(c, p)),
            proxy_protocol: l.proxy_protocol.as_ref().map(|c| proxy_protocol(c, p)),
            span: l.address.span,
            path: l.address.path.clone(),
        });
    }
    out
}

/// A listener's `clientAddress`: each CIDR parses.
fn client_address(raw: &super::raw::ClientAddress, p: &mut Problems) -> ClientAddressConfig {
    ClientAddressConfig {
        trusted_hops: raw
            .trusted_hops
            .as_ref()
            .map_or(defaults::TRUSTED_HOPS, |v| **v),
        trusted_cidrs: cidrs(&raw.trusted_cidrs, p),
    }
}

/// A listener's `proxyProtocol`: at least one CIDR, each parses.
fn proxy_protocol(raw: &super::raw::ProxyProtocol, p: &mut Problems) -> ProxyProtocolConfig {
    if raw.trusted_cidrs.is_empty() {
        // Without a trusted peer the section would change nothing: surely
        // a mistake, and trusting every peer must be said out loud.
        p.report(
            raw.span,
            raw.node_path.clone(),
            "proxyProtocol needs at least one entry in `trustedCidrs` (the load \
             balancers' addresses; 0.0.0.0/0 and ::/0 trust every peer)",
        );
    }
    ProxyProtocolConfig {
        trusted_cidrs: cidrs(&raw.trusted_cidrs, p),
    }
}

/// `retry.grpcCodes`: gRPC status names in lower case with hyphens.
/// gRPC status names as numbers; `ok_is` says why `ok` cannot be one.
fn grpc_codes(raw: &[Spanned<String>], p: &mut Problems, ok_is: &str) -> Vec<u32> {
    let names = || {
        GRPC_CODE_NAMES[1..]
            .iter()
            .map(|n| n.to_ascii_lowercase().replace('_', "-"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    raw.iter()
        .filter_map(|c| {
            let wanted = c.value.to_ascii_uppercase().replace('-', "_");
            match GRPC_CODE_NAMES.iter().position(|n| *n == wanted) {
                Some(0) => {
                    c.report(p, format!("`ok` is a success: {ok_is}"));
                    None
                }
                Some(i) => u32::try_from(i).ok(),
                None => {
                    c.report(
                        p,
                        format!(
                            "unknown gRPC status `{}`, expected one of: {}",
                            c.value,
                            names()
                        ),
                    );
                    None
                }
            }
        })
        .collect()
}

/// CIDRs of trusted peers (`10.0.0.0/8`, `2001:db8::/32`, or one
/// address); each one that does not parse is reported at its place.
fn cidrs(raw: &[Spanned<String>], p: &mut Problems) -> Vec<ipnet::IpNet> {
    raw.iter()
        .filter_map(|c| {
            let text = c.value.trim();
            let parsed = text
                .parse::<ipnet::IpNet>()
                .or_else(|_| text.parse::<std::net::IpAddr>().map(ipnet::IpNet::from));
            match parsed {
                Ok(net) => Some(net.trunc()),
                Err(_) => {
                    c.report(
                        p,
                        format!(
                            "`{text}` is not a CIDR (an address and prefix such as \
                             10.0.0.0/8 or 2001:db8::/32, or one address)"
                        ),
                    );
                    None
                }
            }
        })
        .collect()
}

fn positive(v: &Spanned<usize>, p: &mut Problems) {
    if **v == 0 {
        v.report(p, "must be at least 1");
    }
}

pub(super) fn readable_file(
    path: &Spanned<String>,
    base_dir: &Path,
    p: &mut Problems,
) -> std::path::PathBuf {
    let full = base_dir.join(&**path);
    if let Err(e) = std::fs::metadata(&full) {
        path.report(p, format!("cannot read {}: {e}", full.display()));
    }
    full
}

fn unique<'a>(
    seen: &mut BTreeMap<&'a str, Span>,
    name: &'a Spanned<String>,
    what: &str,
    p: &mut Problems,
) {
    if name.is_empty() {
        name.report(p, format!("{what} must not be empty"));
        return;
    }
    if let Some(first) = seen.insert(name.as_str(), name.span) {
        name.report(
            p,
            format!(
                "duplicate {what} `{}` (first at line {})",
                **name, first.line
            ),
        );
    }
}

fn services(raw: &[raw::Service], base_dir: &Path, p: &mut Problems) -> Vec<ServiceConfig> {
    let mut names = BTreeMap::new();
    let mut out = Vec::new();
    for s in raw {
        unique(&mut names, &s.name, "service name", p);
        let mut versions = Vec::new();
        let mut vnames = BTreeMap::new();
        if s.versions.is_empty() {
            p.report(
                s.span,
                s.node_path.clone(),
                "a service needs at least one version",
            );
        }
        for v in &s.versions {
            unique(&mut vnames, &v.name, "version name", p);
            let endpoints = v.endpoints.as_ref().map(|eps| {
                eps.iter()
                    .filter_map(|e| match resolve_endpoint(e) {
                        Ok(a) => Some(a),
                        Err(msg) => {
                            e.report(p, msg);
                            None
                        }
                    })
                    .collect()
            });
            versions.push(VersionConfig {
                name: v.name.value.clone(),
                endpoints,
            });
        }
        let lb = s.load_balancer.clone().unwrap_or_default();
        let hash_header = lb.hash_header.as_ref().and_then(|h| header_name(h, p));
        if lb.policy == LbPolicy::RingHash && hash_header.is_none() && lb.hash_header.is_none() {
            p.report(
                lb.span,
                format!("{}.loadBalancer", s.node_path),
                "RingHash needs `hashHeader`: the request header whose value picks the endpoint",
            );
        }
        let pool = s.pool.clone().unwrap_or_default();
        let mut circuit_breaker = CircuitBreakerConfig::default();
        if let Some(cb) = &s.circuit_breaker {
            if let Some(v) = &cb.max_connections {
                positive(v, p);
                circuit_breaker.max_connections = **v;
            }
            if let Some(v) = &cb.max_pending_requests {
                circuit_breaker.max_pending_requests = **v;
            }
            if let Some(v) = &cb.max_requests {
                positive(v, p);
                circuit_breaker.max_requests = **v;
            }
            if let Some(v) = &cb.max_retries {
                circuit_breaker.max_retries = **v;
            }
        }
        let outlier_detection = s.outlier_detection.as_ref().map(|o| {
            let count = |v: &Option<Spanned<u32>>, p: &mut Problems| {
                v.as_ref().map(|c| {
                    if **c == 0 {
                        c.report(p, "must be at least 1");
                    }
                    **c
                })
            };
            let (c5, cg, cl) = (
                count(&o.consecutive_5xx, p),
                count(&o.consecutive_gateway_errors, p),
                count(&o.consecutive_local_origin_failures, p),
            );
            let any = c5.is_some() || cg.is_some() || cl.is_some();
            OutlierConfig {
                // With no counter named, Envoy's default: five 5xx in a row.
                consecutive_5xx: if any {
                    c5
                } else {
                    Some(defaults::OUTLIER_CONSECUTIVE)
                },
                consecutive_gateway_errors: cg,
                consecutive_local_origin_failures: cl,
                interval: o.interval.unwrap_or(defaults::OUTLIER_INTERVAL),
                base_ejection_time: o
                    .base_ejection_time
                    .unwrap_or(defaults::OUTLIER_BASE_EJECTION),
                max_ejection_time: o
                    .max_ejection_time
                    .unwrap_or(defaults::OUTLIER_MAX_EJECTION),
                max_ejection_percent: percent_of(
                    o.max_ejection_percent.as_ref(),
                    defaults::OUTLIER_MAX_EJECTION_PERCENT,
                    p,
                ),
            }
        });
        let health_check = s.health_check.as_ref().map(|h| {
            if !h.path.starts_with('/') {
                h.path.report(p, "a path must start with `/`");
            }
            let threshold = |v: &Option<Spanned<u32>>, d: u32, p: &mut Problems| {
                v.as_ref().map_or(d, |c| {
                    if **c == 0 {
                        c.report(p, "must be at least 1");
                    }
                    **c
                })
            };
            HealthCheckConfig {
                path: h.path.value.clone(),
                interval: h.interval.unwrap_or(defaults::HEALTH_INTERVAL),
                timeout: h.timeout.unwrap_or(defaults::HEALTH_TIMEOUT),
                healthy_threshold: threshold(
                    &h.healthy_threshold,
                    defaults::HEALTH_HEALTHY_THRESHOLD,
                    p,
                ),
                unhealthy_threshold: threshold(
                    &h.unhealthy_threshold,
                    defaults::HEALTH_UNHEALTHY_THRESHOLD,
                    p,
                ),
                jitter: h.jitter.unwrap_or_default(),
            }
        });
        out.push(ServiceConfig {
            tls: super::tls::upstream_tls(s, base_dir, p),
            outlier_detection,
            health_check,
            panic_threshold: percent_of(s.panic_threshold.as_ref(), defaults::PANIC_THRESHOLD, p),
            grpc_error_codes: s.grpc_error_codes.as_ref().map_or_else(
                || defaults::GRPC_ERROR_CODES.to_vec(),
                |c| grpc_codes(c, p, "it is never a failure"),
            ),
            circuit_breaker,
            name: s.name.value.clone(),
            protocol: s.protocol,
            connect_timeout: s.connect_timeout.unwrap_or(defaults::CONNECT_TIMEOUT),
            load_balancer: LoadBalancerConfig {
                policy: lb.policy,
                hash_header,
            },
            max_idle_per_endpoint: pool
                .max_idle_per_endpoint
                .unwrap_or(defaults::MAX_IDLE_PER_ENDPOINT),
            pool_idle_timeout: pool.idle_timeout.unwrap_or(defaults::POOL_IDLE_TIMEOUT),
            versions,
        });
    }
    out
}

fn resolve_endpoint(e: &str) -> Result<SocketAddr, String> {
    if let Ok(a) = e.parse::<SocketAddr>() {
        return Ok(a);
    }
    let Some((host, port)) = e.rsplit_once(':') else {
        return Err(format!("endpoint `{e}` needs a port, as in 127.0.0.1:9001"));
    };
    // Only a name that can be a host name is looked up (in DNS, maybe):
    // not text that no resolver could answer for.
    let host_name = !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-');
    if !host_name {
        return Err(format!(
            "endpoint `{e}`: `{host}` is neither an IP address nor a host name"
        ));
    }
    if port.parse::<u16>().is_err() {
        return Err(format!(
            "endpoint `{e}`: `{port}` is not a port (0 to 65535)"
        ));
    }
    match e.to_socket_addrs() {
        Ok(mut addrs) => addrs
            .next()
            .ok_or_else(|| format!("endpoint `{e}` resolves to no address")),
        Err(err) => Err(format!("endpoint `{e}` cannot be resolved: {err}")),
    }
}

pub(super) fn header_name(name: &Spanned<String>, p: &mut Problems) -> Option<HeaderName> {
    match HeaderName::from_bytes(name.to_ascii_lowercase().as_bytes()) {
        Ok(h) => Some(h),
        Err(_) => {
            name.report(p, format!("`{}` is not a valid header name", **name));
            None
        }
    }
}

fn header_value(value: &Spanned<String>, p: &mut Problems) -> Option<HeaderValue> {
    match HeaderValue::from_str(value) {
        Ok(v) => Some(v),
        Err(_) => {
            value.report(p, "not a valid header value (control characters?)");
            None
        }
    }
}

/// Regexes match the whole value, as Envoy's `safe_regex` does.
fn full_regex(r: &Spanned<String>, p: &mut Problems) -> Option<Regex> {
    match Regex::new(&format!("^(?:{})$", **r)) {
        Ok(re) => Some(re),
        Err(e) => {
            let msg = e.to_string();
            let detail = msg.lines().last().unwrap_or("invalid");
            r.report(p, format!("bad regular expression `{}`: {detail}", **r));
            None
        }
    }
}

fn routes(
    raw: &[raw::Route],
    refs: Refs<'_>,
    listeners: &BTreeSet<&str>,
    p: &mut Problems,
) -> Vec<RouteConfig> {
    let mut names = BTreeMap::new();
    let mut out = Vec::new();
    for r in raw {
        unique(&mut names, &r.name, "route name", p);
        let mut parents = Vec::new();
        for parent in &r.parent_refs {
            if !listeners.contains(parent.name.as_str()) {
                let mut msg = format!("no listener named `{}`", *parent.name);
                let known: Vec<&str> = listeners.iter().copied().collect();
                if let Some(s) = crate::decode::suggest(&parent.name, &known) {
                    msg.push_str(&format!(", did you mean `{s}`?"));
                }
                parent.name.report(p, msg);
            }
            parents.push(parent.name.value.clone());
        }
        let hostnames = r.hostnames.iter().filter_map(|h| hostname(h, p)).collect();
        if r.rules.is_empty() {
            p.report(
                r.span,
                r.node_path.clone(),
                "a route needs at least one rule",
            );
        }
        let rules = r
            .rules
            .iter()
            .map(|rule| rule_config(rule, refs, p))
            .collect();
        out.push(RouteConfig {
            name: r.name.value.clone(),
            listeners: parents,
            hostnames,
            rules,
        });
    }
    out
}

fn hostname(h: &Spanned<String>, p: &mut Problems) -> Option<String> {
    let lower = h.to_ascii_lowercase();
    let bare = lower.strip_prefix("*.").unwrap_or(&lower);
    let ok = lower == "*"
        || (!bare.is_empty()
            && bare.split('.').all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            }));
    if !ok {
        h.report(
            p,
            format!(
                "`{}` is not a hostname: expected e.g. example.com or *.example.com",
                **h
            ),
        );
        return None;
    }
    Some(lower)
}

fn rule_config(rule: &raw::Rule, refs: Refs<'_>, p: &mut Problems) -> RuleConfig {
    let matches: Vec<MatchConfig> = rule
        .matches
        .iter()
        .filter_map(|m| match_config(m, p))
        .collect();
    let filters: Vec<FilterConfig> = rule
        .filters
        .iter()
        .filter_map(|f| filter_config(f, &matches, refs, p))
        .collect();
    let redirects = filters
        .iter()
        .any(|f| matches!(f, FilterConfig::RequestRedirect(_)));
    let (backends, unresolved) = rule_backends(rule, refs, redirects, p);
    let timeouts = TimeoutsConfig {
        request: Some(
            rule.timeouts
                .as_ref()
                .and_then(|t| t.request)
                .unwrap_or(defaults::REQUEST_TIMEOUT),
        )
        .filter(|d| !d.is_zero()),
        backend_request: rule
            .timeouts
            .as_ref()
            .and_then(|t| t.backend_request)
            .filter(|d| !d.is_zero()),
    };
    if let (Some(req), Some(be)) = (timeouts.request, timeouts.backend_request)
        && be > req
    {
        let span = rule.timeouts.as_ref().map_or(rule.span, |t| t.span);
        p.report(
            span,
            format!("{}.timeouts.backendRequest", rule.node_path),
            "backendRequest must not be longer than request",
        );
    }
    let retry = match &rule.retry {
        None => RetryConfig::default(),
        Some(r) => {
            let attempts = r.attempts.as_ref().map_or(1, |a| **a);
            if let Some(a) = &r.attempts
                && **a > MAX_RETRY_ATTEMPTS
            {
                a.report(p, format!("at most {MAX_RETRY_ATTEMPTS} retries"));
            }
            let codes: Vec<u16> = if r.codes.is_empty() {
                defaults::RETRY_CODES.to_vec()
            } else {
                r.codes
                    .iter()
                    .filter(|c| {
                        let ok = (400..=599).contains(&***c);
                        if !ok {
                            c.report(p, "retry codes must be from 400 to 599");
                        }
                        ok
                    })
                    .map(|c| **c)
                    .collect()
            };
            let mut budget = RetryBudgetConfig::default();
            if let Some(b) = &r.budget {
                if let Some(v) = &b.percent {
                    if !(0.0..=1000.0).contains(&**v) {
                        v.report(p, "percent must be from 0 to 1000");
                    } else {
                        budget.percent = **v;
                    }
                }
                if let Some(v) = &b.min_retries_per_second {
                    budget.min_retries_per_second = **v;
                }
                if let Some(v) = &b.ttl {
                    if **v < std::time::Duration::from_secs(1)
                        || **v > std::time::Duration::from_secs(60)
                    {
                        v.report(p, "ttl must be from 1s to 60s");
                    } else {
                        budget.ttl = **v;
                    }
                }
            }
            RetryConfig {
                attempts,
                codes,
                grpc_codes: grpc_codes(&r.grpc_codes, p, "it is never retried"),
                backoff: r.backoff.unwrap_or(defaults::RETRY_BACKOFF),
                unsafe_methods: r.unsafe_methods.unwrap_or(false),
                configured: true,
                budget,
            }
        }
    };
    let fault = rule.fault.as_ref().and_then(|f| fault_config(f, p));
    if let Some(v) = &rule.max_concurrent_requests {
        positive(v, p);
    }
    let rate_limit = rule.rate_limit.as_ref().map(|r| {
        if *r.requests == 0 {
            r.requests.report(p, "must be at least 1");
        }
        let key_header = match (
            r.key.as_ref().map(|k| k.kind),
            r.key.as_ref().and_then(|k| k.name.as_ref()),
        ) {
            (Some(raw::RateLimitKeyType::Header), Some(name)) => header_name(name, p),
            (Some(raw::RateLimitKeyType::Header), None) => {
                let span = r.key.as_ref().map_or(r.span, |k| k.span);
                p.report(
                    span,
                    format!("{}.key", r.node_path),
                    "a Header key needs `name`",
                );
                None
            }
            _ => None,
        };
        let global = r.global.as_ref().map(|g| {
            if !g.redis.starts_with("redis://") && !g.redis.starts_with("rediss://") {
                g.redis
                    .report(p, "expected a Redis URL such as redis://127.0.0.1:6379/");
            }
            GlobalRateLimitConfig {
                redis: g.redis.value.clone(),
                fail_open: g.fail_open.unwrap_or(defaults::GLOBAL_RATE_LIMIT_FAIL_OPEN),
                timeout: g.timeout.unwrap_or(defaults::GLOBAL_RATE_LIMIT_TIMEOUT),
            }
        });
        RateLimitConfig {
            requests: (*r.requests).max(1),
            per: match r.unit {
                raw::RateLimitUnit::Second => std::time::Duration::from_secs(1),
                raw::RateLimitUnit::Minute => std::time::Duration::from_secs(60),
                raw::RateLimitUnit::Hour => std::time::Duration::from_secs(3600),
            },
            burst: r.burst.as_ref().map_or(*r.requests, |b| **b).max(1),
            key_header,
            global,
        }
    });
    RuleConfig {
        rate_limit,
        name: rule.name.clone(),
        matches,
        filters,
        backends,
        unresolved,
        timeouts,
        retry,
        fault,
        max_concurrent_requests: rule.max_concurrent_requests.as_ref().map(|v| **v),
        max_request_body_bytes: rule.max_request_body_bytes.as_ref().map(|v| **v),
        session_persistence: rule
            .session_persistence
            .as_ref()
            .and_then(|s| session_persistence(s, p)),
    }
}

/// A rule's `sessionPersistence`: a name a cookie or header can have, and
/// a permanent cookie only with the lifetime that gives its `Max-Age`.
fn session_persistence(
    raw: &raw::SessionPersistence,
    p: &mut Problems,
) -> Option<SessionPersistenceConfig> {
    let kind = match raw.kind {
        raw::SessionType::Cookie => SessionKind::Cookie,
        raw::SessionType::Header => SessionKind::Header,
    };
    let name = match (&raw.session_name, kind) {
        (None, SessionKind::Cookie) => Some(defaults::SESSION_COOKIE.to_string()),
        (None, SessionKind::Header) => Some(defaults::SESSION_HEADER.to_string()),
        (Some(name), SessionKind::Cookie) => {
            // RFC 6265 §4.1.1: a cookie name is an RFC 7230 token.
            let token = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
            if name.is_empty() || !name.bytes().all(token) {
                name.report(p, format!("`{}` is not a cookie name", name.value));
                None
            } else {
                Some(name.value.clone())
            }
        }
        (Some(name), SessionKind::Header) => header_name(name, p).map(|h| h.to_string()),
    };
    let permanent = raw
        .cookie_config
        .as_ref()
        .is_some_and(|c| c.lifetime_type == raw::CookieLifetime::Permanent);
    if let (true, Some(c), None) = (permanent, &raw.cookie_config, raw.absolute_timeout) {
        p.report(
            c.span,
            format!("{}.cookieConfig", raw.node_path),
            "a Permanent cookie needs `absoluteTimeout` (its Max-Age)",
        );
    }
    for (what, d) in [
        ("absoluteTimeout", raw.absolute_timeout),
        ("idleTimeout", raw.idle_timeout),
    ] {
        if d.is_some_and(|d| d.as_secs() == 0) {
            p.report(
                raw.span,
                format!("{}.{what}", raw.node_path),
                "must be at least 1s (sessions are timed in seconds)",
            );
        }
    }
    Some(SessionPersistenceConfig {
        name: name?,
        kind,
        absolute_timeout: raw.absolute_timeout,
        idle_timeout: raw.idle_timeout,
        permanent,
    })
}

fn percent_of(v: Option<&Spanned<f64>>, default: f64, p: &mut Problems) -> f64 {
    match v {
        None => default,
        Some(v) if (0.0..=100.0).contains(&**v) => **v,
        Some(v) => {
            v.report(p, "a percentage must be from 0 to 100");
            default
        }
    }
}

/// A mirror's share: its `percent`, or its `fraction` (Gateway API v1.2:
/// the two are exclusive; the denominator is 100 when absent, at least 1,
/// and not below the numerator). Every request when neither is given.
fn mirror_percent(m: &raw::RequestMirror, p: &mut Problems) -> f64 {
    let Some(f) = &m.fraction else {
        return percent_of(m.percent.as_ref(), defaults::MIRROR_PERCENT, p);
    };
    if m.percent.is_some() {
        p.report(
            f.span,
            f.node_path.clone(),
            "give `percent` or `fraction`, not both",
        );
    }
    let numerator = *f.numerator;
    let denominator = f
        .denominator
        .as_ref()
        .map_or(defaults::MIRROR_FRACTION_DENOMINATOR, |d| **d);
    match &f.denominator {
        Some(d) if **d == 0 => {
            d.report(p, "the denominator must be at least 1");
            return defaults::MIRROR_PERCENT;
        }
        _ => {}
    }
    if numerator > denominator {
        f.numerator.report(
            p,
            format!("the numerator must not be above the denominator ({denominator})"),
        );
        return defaults::MIRROR_PERCENT;
    }
    f64::from(numerator) * 100.0 / f64::from(denominator)
}

fn percent(v: Option<&Spanned<f64>>, p: &mut Problems) -> f64 {
    match v {
        None => 100.0,
        Some(v) if (0.0..=100.0).contains(&**v) => **v,
        Some(v) => {
            v.report(p, "a percentage must be from 0 to 100");
            100.0
        }
    }
}

fn fault_config(f: &raw::Fault, p: &mut Problems) -> Option<FaultConfig> {
    if f.delay.is_none() && f.abort.is_none() {
        p.report(
            f.span,
            f.node_path.clone(),
            "a fault needs `delay` or `abort`",
        );
        return None;
    }
    let abort = f.abort.as_ref().map(|a| {
        if !(200..=599).contains(&*a.status) {
            a.status.report(p, "httpStatus must be from 200 to 599");
        }
        (*a.status, percent(a.percent.as_ref(), p))
    });
    Some(FaultConfig {
        headers: f
            .headers
            .iter()
            .filter_map(|h| value_match(h, true, p))
            .collect(),
        delay: f
            .delay
            .as_ref()
            .map(|d| (d.fixed_delay, percent(d.percent.as_ref(), p))),
        abort,
    })
}

/// Why a backendRef names no service version, and where.
struct Miss {
    span: Span,
    path: String,
    message: String,
    /// No such service or version (rather than an ambiguous one).
    not_found: bool,
}

/// The service version a backendRef names.
fn find_backend(b: &raw::BackendRef, services: &[ServiceConfig]) -> Result<(String, String), Miss> {
    let miss = |at: &Spanned<String>, message: String, not_found: bool| Miss {
        span: at.span,
        path: at.path.clone(),
        message,
        not_found,
    };
    let Some(svc) = services.iter().find(|s| s.name == *b.name) else {
        let known: Vec<&str> = services.iter().map(|s| s.name.as_str()).collect();
        let mut msg = format!("no service named `{}`", *b.name);
        match crate::decode::suggest(&b.name, &known) {
            Some(s) => msg.push_str(&format!(", did you mean `{s}`?")),
            None if !known.is_empty() => {
                msg.push_str(&format!("; services are: {}", known.join(", ")));
            }
            None => msg.push_str("; the file defines no services"),
        }
        return Err(miss(&b.name, msg, true));
    };
    let version = match &b.version {
        Some(v) if !svc.versions.iter().any(|x| x.name == **v) => {
            let known: Vec<&str> = svc.versions.iter().map(|x| x.name.as_str()).collect();
            let msg = format!(
                "service `{}` has no version `{}`; its versions are: {}",
                svc.name,
                **v,
                known.join(", ")
            );
            return Err(miss(v, msg, true));
        }
        Some(v) => v.value.clone(),
        None => match svc.versions.as_slice() {
            [only] => only.name.clone(),
            _ => {
                let msg = format!(
                    "service `{}` has several versions: say which with `version`",
                    svc.name
                );
                return Err(miss(&b.name, msg, false));
            }
        },
    };
    Ok((svc.name.clone(), version))
}

/// The backendRef's weight (reported when over the Gateway API's bound).
fn weight_of(b: &raw::BackendRef, p: &mut Problems) -> u32 {
    if let Some(w) = &b.weight
        && **w > MAX_WEIGHT
    {
        w.report(p, format!("weight must be from 0 to {MAX_WEIGHT}"));
    }
    b.weight.as_ref().map_or(defaults::WEIGHT, |w| **w)
}

/// The `group` and `kind` of a backendRef that is not a core Service
/// (`group: ""`, `kind: Service`, the Gateway API's defaults), with the
/// place to report it at.
fn not_a_service(b: &raw::BackendRef) -> Option<(String, String, &Spanned<String>)> {
    let group = b.group.as_ref().filter(|g| !g.is_empty());
    let kind = b.kind.as_ref().filter(|k| k.as_str() != "Service");
    let at = kind.or(group)?;
    Some((
        group.map_or(String::new(), |g| g.value.clone()),
        b.kind
            .as_ref()
            .map_or("Service".into(), |k| k.value.clone()),
        at,
    ))
}

/// `Kind` or `Kind` (group `group`), for messages.
fn group_kind(group: &str, kind: &str) -> String {
    if group.is_empty() {
        format!("`{kind}`")
    } else {
        format!("`{kind}` (group `{group}`)")
    }
}

/// The backend of a filter (a mirror, an auth service): it must exist.
fn backend_ref(
    b: &raw::BackendRef,
    services: &[ServiceConfig],
    p: &mut Problems,
) -> Option<BackendRefConfig> {
    let weight = weight_of(b, p);
    if let Some((group, kind, at)) = not_a_service(b) {
        at.report(
            p,
            format!(
                "only a Service (group \"\", kind Service) can be this backend, not {}",
                group_kind(&group, &kind)
            ),
        );
        return None;
    }
    if let Some(f) = b.filters.first() {
        p.report(
            f.span,
            f.node_path.clone(),
            "a filter's backendRef takes no filters of its own (they are for a rule's backendRefs)",
        );
    }
    match find_backend(b, services) {
        Ok((service, version)) => Some(BackendRefConfig {
            service,
            version,
            weight,
            filters: BackendFilters::default(),
        }),
        Err(miss) => {
            p.report(miss.span, miss.path, miss.message);
            None
        }
    }
}

/// A rule's backendRefs: those that serve, and those that cannot (a kind
/// other than Service; with [`MissingService::Unresolved`], a service that
/// does not exist), each of the latter with a warning: their share of the
/// rule's requests answers 500, as the Gateway API says.
fn rule_backends(
    rule: &raw::Rule,
    refs: Refs<'_>,
    redirects: bool,
    p: &mut Problems,
) -> (Vec<BackendRefConfig>, Vec<UnresolvedBackendRef>) {
    const SHARE_500: &str = "this backend's share of the rule's requests is answered 500";
    let mut backends = Vec::new();
    let mut unresolved = Vec::new();
    let mut seen = BTreeMap::new();
    for b in &rule.backend_refs {
        let weight = weight_of(b, p);
        let unserved = |reason| UnresolvedBackendRef {
            name: b.name.value.clone(),
            weight,
            reason,
        };
        if let Some((group, kind, at)) = not_a_service(b) {
            let msg = format!(
                "{} is not a Service (group \"\", kind Service): {SHARE_500} (Gateway API: InvalidKind)",
                group_kind(&group, &kind)
            );
            p.warn(at.span, at.path.clone(), msg);
            unresolved.push(unserved(UnresolvedReason::InvalidKind { group, kind }));
            continue;
        }
        match find_backend(b, refs.services) {
            Ok((service, version)) => {
                let cfg = BackendRefConfig {
                    service,
                    version,
                    weight,
                    filters: backend_filters(&b.filters, p),
                };
                if let Some(line) = seen.insert(cfg.key(), b.span.line) {
                    p.report(
                        b.span,
                        b.node_path.clone(),
                        format!(
                            "backend {} is listed twice in this rule (first at line {line})",
                            cfg.key()
                        ),
                    );
                }
                backends.push(cfg);
            }
            Err(miss) if miss.not_found && refs.missing == MissingService::Unresolved => {
                let msg = format!(
                    "{}: {SHARE_500} (Gateway API: BackendNotFound)",
                    miss.message
                );
                p.warn(miss.span, miss.path, msg);
                unresolved.push(unserved(UnresolvedReason::BackendNotFound));
            }
            Err(miss) => p.report(miss.span, miss.path, miss.message),
        }
    }
    if rule.backend_refs.is_empty() && !redirects {
        p.warn(
            rule.span,
            rule.node_path.clone(),
            "a rule without `backendRefs` (or a RequestRedirect filter) answers 500 to every request, as the Gateway API says",
        );
    }
    let weights = backends
        .iter()
        .map(|b| b.weight)
        .chain(unresolved.iter().map(|u| u.weight));
    if !rule.backend_refs.is_empty()
        && rule.backend_refs.len() == backends.len() + unresolved.len()
        && weights.map(u64::from).sum::<u64>() == 0
    {
        p.report(
            rule.span,
            format!("{}.backendRefs", rule.node_path),
            "the backend weights sum to 0: no backend would get traffic",
        );
    }
    (backends, unresolved)
}

fn match_config(m: &raw::Match, p: &mut Problems) -> Option<MatchConfig> {
    let path = match &m.path {
        None => PathMatch::PathPrefix(String::new()),
        Some(pm) => {
            if !pm.value.starts_with('/') && pm.kind != raw::PathMatchType::RegularExpression {
                pm.value.report(p, "a path must start with `/`");
            }
            match pm.kind {
                raw::PathMatchType::Exact => PathMatch::Exact(pm.value.value.clone()),
                raw::PathMatchType::PathPrefix => {
                    PathMatch::PathPrefix(pm.value.trim_end_matches('/').to_string())
                }
                raw::PathMatchType::RegularExpression => {
                    PathMatch::RegularExpression(full_regex(&pm.value, p)?)
                }
            }
        }
    };
    let headers = m
        .headers
        .iter()
        .filter_map(|h| value_match(h, true, p))
        .collect();
    let query_params = m
        .query_params
        .iter()
        .filter_map(|q| value_match(q, false, p))
        .collect();
    let method = match &m.method {
        None => None,
        Some(s) => match Method::from_bytes(s.as_bytes()) {
            Ok(meth) if s.bytes().all(|b| b.is_ascii_uppercase()) => Some(meth),
            _ => {
                s.report(
                    p,
                    format!("`{}` is not an HTTP method such as GET or POST", **s),
                );
                None
            }
        },
    };
    let client_certificate = m
        .client_certificate
        .iter()
        .filter_map(|c| identity_match(c, p))
        .collect();
    Some(MatchConfig {
        path,
        headers,
        query_params,
        method,
        client_certificate,
    })
}

fn identity_match(v: &raw::ValueMatch, p: &mut Problems) -> Option<IdentityMatch> {
    let Some(field) = IdentityField::parse(&v.name) else {
        v.name.report(
            p,
            format!(
                "unknown client certificate field `{}`, expected one of: {}",
                *v.name,
                IdentityField::NAMES.join(", ")
            ),
        );
        return None;
    };
    let value = match v.kind {
        raw::ValueMatchType::Exact => StringMatch::Exact(v.value.value.clone()),
        raw::ValueMatchType::RegularExpression => {
            StringMatch::RegularExpression(full_regex(&v.value, p)?)
        }
    };
    Some(IdentityMatch { field, value })
}

fn value_match(v: &raw::ValueMatch, is_header: bool, p: &mut Problems) -> Option<ValueMatch> {
    let name = if is_header {
        header_name(&v.name, p)?.as_str().to_string()
    } else {
        v.name.value.clone()
    };
    let value = match v.kind {
        raw::ValueMatchType::Exact => StringMatch::Exact(v.value.value.clone()),
        raw::ValueMatchType::RegularExpression => {
            StringMatch::RegularExpression(full_regex(&v.value, p)?)
        }
    };
    Some(ValueMatch { name, value })
}

/// A rule backendRef's `filters`: each of the two header modifiers at most
/// once (as the Gateway API says of a rule's filters); any other type is
/// refused at its place, since serin would otherwise drop it silently.
fn backend_filters(raw: &[raw::Filter], p: &mut Problems) -> BackendFilters {
    use raw::FilterType as T;
    let mut out = BackendFilters::default();
    for f in raw {
        let (slot, section, key) = match f.kind {
            T::RequestHeaderModifier => (
                &mut out.request_headers,
                &f.request_header_modifier,
                "requestHeaderModifier",
            ),
            T::ResponseHeaderModifier => (
                &mut out.response_headers,
                &f.response_header_modifier,
                "responseHeaderModifier",
            ),
            other => {
                p.report(
                    f.span,
                    f.node_path.clone(),
                    format!(
                        "a backendRef's filters may be RequestHeaderModifier or \
                         ResponseHeaderModifier, not {other} (put it in the rule's filters)"
                    ),
                );
                continue;
            }
        };
        let Some(section) = section else {
            p.report(
                f.span,
                f.node_path.clone(),
                format!("this {} filter needs its `{key}` section", f.kind),
            );
            continue;
        };
        if slot.is_some() {
            p.report(
                f.span,
                f.node_path.clone(),
                format!("a backendRef has at most one {} filter", f.kind),
            );
            continue;
        }
        *slot = Some(header_modifier(section, p));
    }
    out
}

fn filter_config(
    f: &raw::Filter,
    matches: &[MatchConfig],
    refs: Refs<'_>,
    p: &mut Problems,
) -> Option<FilterConfig> {
    let services = refs.services;
    use raw::FilterType as T;
    let missing = |p: &mut Problems, key: &str| {
        p.report(
            f.span,
            f.node_path.clone(),
            format!("this {} filter needs its `{key}` section", f.kind),
        );
    };
    match f.kind {
        T::RequestHeaderModifier => match &f.request_header_modifier {
            Some(m) => Some(FilterConfig::RequestHeaderModifier(header_modifier(m, p))),
            None => {
                missing(p, "requestHeaderModifier");
                None
            }
        },
        T::ResponseHeaderModifier => match &f.response_header_modifier {
            Some(m) => Some(FilterConfig::ResponseHeaderModifier(header_modifier(m, p))),
            None => {
                missing(p, "responseHeaderModifier");
                None
            }
        },
        T::UrlRewrite => match &f.url_rewrite {
            Some(u) => {
                let path = u.path.as_ref().and_then(|m| path_modifier(m, matches, p));
                Some(FilterConfig::UrlRewrite(UrlRewriteConfig {
                    hostname: u.hostname.as_ref().and_then(|h| hostname(h, p)),
                    path,
                }))
            }
            None => {
                missing(p, "urlRewrite");
                None
            }
        },
        T::RequestMirror => match &f.request_mirror {
            Some(m) => {
                let backend = backend_ref(&m.backend_ref, services, p)?;
                Some(FilterConfig::RequestMirror(MirrorConfig {
                    service: backend.service,
                    version: backend.version,
                    percent: mirror_percent(m, p),
                }))
            }
            None => {
                missing(p, "requestMirror");
                None
            }
        },
        T::ExternalAuth => match &f.external_auth {
            Some(a) => {
                if let Some(proto) = &a.protocol
                    && proto.as_str() != "HTTP"
                {
                    proto.report(p, "only the HTTP protocol is supported for ExternalAuth");
                }
                let backend = backend_ref(&a.backend_ref, services, p)?;
                let http = a.http.clone().unwrap_or_default();
                let path_prefix = http
                    .path
                    .as_ref()
                    .map_or(String::new(), |v| v.trim_end_matches('/').to_string());
                if let Some(v) = &http.path
                    && !v.is_empty()
                    && !v.starts_with('/')
                {
                    v.report(p, "a path must start with `/`");
                }
                let allowed_headers = if http.allowed_headers.is_empty() {
                    defaults::EXTERNAL_AUTH_HEADERS
                        .iter()
                        .map(|h| HeaderName::from_static(h))
                        .collect()
                } else {
                    http.allowed_headers
                        .iter()
                        .filter_map(|h| header_name(h, p))
                        .collect()
                };
                Some(FilterConfig::ExternalAuth(ExternalAuthConfig {
                    service: backend.service,
                    version: backend.version,
                    path_prefix,
                    allowed_headers,
                    allowed_response_headers: http
                        .allowed_response_headers
                        .iter()
                        .filter_map(|h| header_name(h, p))
                        .collect(),
                    timeout: a.timeout.unwrap_or(defaults::EXTERNAL_AUTH_TIMEOUT),
                    fail_open: a.fail_open.unwrap_or(defaults::EXTERNAL_AUTH_FAIL_OPEN),
                }))
            }
            None => {
                missing(p, "externalAuth");
                None
            }
        },
        T::ApiKey => match &f.api_key {
            Some(k) => super::api_key::validate(k, refs.base_dir, p).map(FilterConfig::ApiKey),
            None => {
                missing(p, "apiKey");
                None
            }
        },
        T::Jwt => match &f.jwt {
            Some(j) => super::jwt::validate(j, refs.base_dir, p).map(FilterConfig::Jwt),
            None => {
                missing(p, "jwt");
                None
            }
        },
        T::BasicAuth => match &f.basic_auth {
            Some(b) => {
                super::basic_auth::validate(b, refs.base_dir, p).map(FilterConfig::BasicAuth)
            }
            None => {
                missing(p, "basicAuth");
                None
            }
        },
        T::Cors => match &f.cors {
            Some(c) => Some(FilterConfig::Cors(super::cors::validate(c, p))),
            None => {
                missing(p, "cors");
                None
            }
        },
        T::RequestRedirect => match &f.request_redirect {
            Some(r) => {
                let status = match &r.status_code {
                    None => StatusCode::FOUND,
                    Some(c) => match **c {
                        301 | 302 | 303 | 307 | 308 => {
                            StatusCode::from_u16(**c).unwrap_or(StatusCode::FOUND)
                        }
                        _ => {
                            c.report(p, "a redirect status must be 301, 302, 303, 307 or 308");
                            StatusCode::FOUND
                        }
                    },
                };
                if let Some(s) = &r.scheme
                    && !matches!(s.as_str(), "http" | "https")
                {
                    s.report(p, "scheme must be http or https");
                }
                Some(FilterConfig::RequestRedirect(RedirectConfig {
                    scheme: r.scheme.as_ref().map(|s| s.value.clone()),
                    hostname: r.hostname.as_ref().and_then(|h| hostname(h, p)),
                    path: r.path.as_ref().and_then(|m| path_modifier(m, matches, p)),
                    port: r.port,
                    status,
                }))
            }
            None => {
                missing(p, "requestRedirect");
                None
            }
        },
    }
}

fn path_modifier(
    m: &raw::PathModifier,
    matches: &[MatchConfig],
    p: &mut Problems,
) -> Option<PathModifier> {
    match m.kind {
        raw::PathModifierType::ReplaceFullPath => match &m.replace_full_path {
            Some(v) => Some(PathModifier::ReplaceFullPath(v.value.clone())),
            None => {
                p.report(
                    m.span,
                    m.node_path.clone(),
                    "ReplaceFullPath needs `replaceFullPath`",
                );
                None
            }
        },
        raw::PathModifierType::ReplacePrefixMatch => {
            // As in the Gateway API: only meaningful after a prefix match.
            if matches.is_empty()
                || !matches
                    .iter()
                    .all(|m| matches!(m.path, PathMatch::PathPrefix(_)))
            {
                p.report(
                    m.span,
                    m.node_path.clone(),
                    "ReplacePrefixMatch needs every match of the rule to be a PathPrefix match",
                );
            }
            match &m.replace_prefix_match {
                Some(v) => Some(PathModifier::ReplacePrefixMatch(v.value.clone())),
                None => {
                    p.report(
                        m.span,
                        m.node_path.clone(),
                        "ReplacePrefixMatch needs `replacePrefixMatch`",
                    );
                    None
                }
            }
        }
    }
}

fn header_modifier(m: &raw::HeaderModifier, p: &mut Problems) -> HeaderModifierConfig {
    let pairs = |list: &[raw::HeaderValue], p: &mut Problems| -> Vec<(HeaderName, HeaderValue)> {
        list.iter()
            .filter_map(|h| Some((header_name(&h.name, p)?, header_value(&h.value, p)?)))
            .collect()
    };
    HeaderModifierConfig {
        set: pairs(&m.set, p),
        add: pairs(&m.add, p),
        remove: m.remove.iter().filter_map(|h| header_name(h, p)).collect(),
    }
}

#[cfg(test)]
mod endpoint_tests {
    use super::resolve_endpoint;

    #[test]
    fn only_names_that_can_be_host_names_are_looked_up() {
        assert_eq!(
            resolve_endpoint("127.0.0.1:9001").map(|a| a.port()),
            Ok(9001)
        );
        assert_eq!(
            resolve_endpoint("localhost:9001").map(|a| a.port()),
            Ok(9001)
        );
        for (bad, why) in [
            ("127.0.0.1", "needs a port"),
            ("ä.example:80", "is neither an IP address nor a host name"),
            ("a b:80", "is neither an IP address nor a host name"),
            (":80", "is neither an IP address nor a host name"),
            ("localhost:http", "is not a port"),
            ("localhost:65536", "is not a port"),
        ] {
            let err = resolve_endpoint(bad).err().unwrap_or_default();
            assert!(err.contains(why), "{bad}: {err}");
        }
    }
}
