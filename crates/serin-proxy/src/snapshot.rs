//! The running configuration: an immutable snapshot compiled from a
//! validated config, swapped atomically on reload. Requests in flight keep
//! the snapshot they started with.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use http::HeaderName;
use serin_config::proxy::{
    LbPolicy, ProxyConfig, RetryConfig, RuleConfig, ServiceConfig, TimeoutsConfig,
};
use serin_discovery::BackendKey;

use crate::endpoints::Backend;
use crate::filters::{Filter, FilterError};
use crate::metrics::{BackendMetrics, Metrics};
use crate::pool::PoolSettings;
use crate::request::ProxyError;
use crate::routing::RouteTable;
use crate::tls::TlsError;
use crate::tls::upstream::UpstreamTls;

/// Why a snapshot cannot be built: it is refused, and the running one
/// stays.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("a filter cannot be built: {0}")]
    Filter(#[from] FilterError),
    #[error("service {service}: TLS to its endpoints cannot be set up: {source}")]
    UpstreamTls { service: String, source: TlsError },
}

/// A service's settings as the request path needs them.
pub struct CompiledService {
    pub name: Arc<str>,
    pub circuit_breaker: serin_config::proxy::CircuitBreakerConfig,
    pub outlier: Option<serin_config::proxy::OutlierConfig>,
    pub panic_threshold: f64,
    pub pool: PoolSettings,
    pub lb: LbPolicy,
    pub hash_header: Option<HeaderName>,
    /// `grpcErrorCodes`: bit `code` set for each.
    pub grpc_error_codes: u32,
}

/// One weighted backend of a rule.
pub struct CompiledBackendRef {
    pub backend: Arc<Backend>,
    pub service: Arc<CompiledService>,
    pub weight: u32,
    pub metrics: BackendMetrics,
    /// The backendRef's own filters (Gateway API `backendRefs[].filters`).
    pub filters: Vec<Filter>,
}

/// One rule of a route, ready to serve.
pub struct CompiledRule {
    pub route: Arc<str>,
    pub index: usize,
    /// The rule's filters, in its order.
    pub filters: Vec<Filter>,
    /// The headers the rule's JWT filters copy claims into: when there are
    /// any, the request is routed again after the filters (see
    /// `request::rule`).
    pub claim_headers: Vec<http::HeaderName>,
    pub backends: Vec<CompiledBackendRef>,
    /// Running sums of weights, for the weighted pick: the backends', then
    /// those of the backendRefs that cannot be served (whose share of the
    /// requests answers 500, as the Gateway API says).
    cumulative: Vec<u64>,
    /// Counts the requests this rule cannot send to a backend, when its
    /// backendRefs say there will be some (none, all of weight 0, or an
    /// invalid one).
    unserved: Option<prometheus_client::metrics::counter::Counter>,
    pub timeouts: TimeoutsConfig,
    pub retry: RetryConfig,
    pub fault: Option<serin_config::proxy::FaultConfig>,
    pub max_concurrent_requests: Option<usize>,
    /// The rule's request-body limit (0: none); `None`: the listener's.
    pub max_request_body_bytes: Option<u64>,
    /// The rule's `sessionPersistence`: a client keeps its backend.
    pub session_persistence: Option<serin_config::proxy::SessionPersistenceConfig>,
    pub rate_limit: Option<crate::ratelimit::CompiledRateLimit>,
    /// Retries that may reach the upstream draw on this (Linkerd's budget).
    pub budget: tower::retry::budget::TpsBudget,
    /// Requests of this rule in flight (for `max_concurrent_requests`).
    pub in_flight: Arc<crate::resilience::Gauge>,
    /// Metrics of requests this rule answers itself (redirects, no backend).
    pub local_metrics: BackendMetrics,
}

impl CompiledRule {
    /// The rule's CORS filter, if it has one.
    pub fn cors(&self) -> Option<&crate::filters::CompiledCors> {
        self.filters.iter().find_map(|f| match f {
            Filter::Cors(c) => Some(c),
            _ => None,
        })
    }

    /// Picks a backend by weight: [`ProxyError::NoBackend`] when the rule
    /// has none (or every weight is 0), [`ProxyError::InvalidBackend`] for
    /// the share of an unresolved backendRef. A version with no ready
    /// endpoint gives its share to the others that have some (a version
    /// still starting must not fail its share of requests); when none has
    /// any, the pick stands and the request gets a 503.
    pub fn pick_backend(&self) -> Result<&CompiledBackendRef, ProxyError> {
        let total = self.cumulative.last().copied().unwrap_or(0);
        if total == 0 {
            return Err(ProxyError::NoBackend);
        }
        let r = fastrand::u64(..total);
        let i = self.cumulative.partition_point(|c| *c <= r);
        let picked = self.backends.get(i).ok_or(ProxyError::InvalidBackend)?;
        if !picked.backend.endpoints().list.is_empty() {
            return Ok(picked);
        }
        let ready =
            |b: &&CompiledBackendRef| b.weight > 0 && !b.backend.endpoints().list.is_empty();
        let ready_total: u64 = self
            .backends
            .iter()
            .filter(ready)
            .map(|b| u64::from(b.weight))
            .sum();
        if ready_total == 0 {
            return Ok(picked);
        }
        let mut r = fastrand::u64(..ready_total);
        for b in self.backends.iter().filter(ready) {
            let w = u64::from(b.weight);
            if r < w {
                return Ok(b);
            }
            r -= w;
        }
        Ok(picked)
    }

    /// The backend a session names, while it can serve: weighted above 0
    /// and with endpoints.
    pub fn backend_named(&self, service: &str, version: &str) -> Option<&CompiledBackendRef> {
        self.backends.iter().find(|b| {
            b.weight > 0
                && *b.backend.key.service == *service
                && *b.backend.key.version == *version
                && !b.backend.endpoints().list.is_empty()
        })
    }

    /// Counts a request [`Self::pick_backend`] found no backend for.
    pub fn count_unserved(&self, e: &ProxyError) {
        match &self.unserved {
            Some(c) => {
                c.inc();
            }
            None => {
                self.local_metrics.unserved(e.label()).inc();
            }
        }
    }
}

/// What a listener sets for every request on it (the route table holds it).
#[derive(Default)]
pub struct ListenerEdge {
    /// Largest request body (0: none), unless the rule says.
    pub max_request_body_bytes: u64,
    /// How answers are compressed; `None`: they are not.
    pub compression: Option<serin_config::proxy::CompressionConfig>,
    /// Proxies trusted to name the client; `None`: the peer is the client.
    pub client_address: Option<crate::client_addr::TrustedProxies>,
    /// Every header a JWT filter of the listener's rules copies claims
    /// into: a client's own copies are removed before routing.
    pub claim_headers: Vec<http::HeaderName>,
}

/// Everything the data plane serves at one moment.
pub struct Snapshot {
    pub config: Arc<ProxyConfig>,
    /// Route tables by listener name.
    pub tables: BTreeMap<String, Arc<RouteTable>>,
    pub access_log: bool,
    /// Records spans when traces are exported (set by the control plane,
    /// which owns the exporter).
    pub tracer: Option<crate::telemetry::Tracer>,
    /// Counts requests that match no route.
    pub unrouted: BackendMetrics,
    /// TLS clients of the services that have one, by service name (for
    /// health checks, which run apart from the request path).
    pub upstream_tls: BTreeMap<String, Arc<UpstreamTls>>,
}

impl Snapshot {
    /// Serves nothing: what a proxy holds before its first config.
    pub fn empty(metrics: &Arc<Metrics>) -> Self {
        Self {
            config: Arc::new(ProxyConfig::minimal(Vec::new(), Vec::new(), Vec::new())),
            tables: BTreeMap::new(),
            access_log: false,
            tracer: None,
            unrouted: BackendMetrics::local(metrics, ""),
            upstream_tls: BTreeMap::new(),
        }
    }

    pub fn table(&self, listener: &str) -> Option<&Arc<RouteTable>> {
        self.tables.get(listener)
    }
}

/// Compiles a validated config. `backend` returns the long-lived state of a
/// service version (created on first use). A filter that cannot be built
/// fails the whole snapshot: a rule never serves with a filter skipped.
pub fn compile(
    config: Arc<ProxyConfig>,
    metrics: &Arc<Metrics>,
    mut backend: impl FnMut(&BackendKey) -> Arc<Backend>,
) -> Result<Snapshot, SnapshotError> {
    let services: BTreeMap<&str, Arc<CompiledService>> = config
        .services
        .iter()
        .map(|s| Ok((s.name.as_str(), Arc::new(compile_service(s)?))))
        .collect::<Result<_, SnapshotError>>()?;
    let mut compiled_routes = Vec::new();
    for route in &config.routes {
        let route_name: Arc<str> = route.name.as_str().into();
        let rules: Vec<Arc<CompiledRule>> = route
            .rules
            .iter()
            .enumerate()
            .map(|(index, rule)| {
                let at = RuleAt {
                    route: &route_name,
                    index,
                };
                compile_rule(at, rule, &services, metrics, &mut backend).map(Arc::new)
            })
            .collect::<Result<_, FilterError>>()?;
        compiled_routes.push((route, rules));
    }
    let tables = config
        .listeners
        .iter()
        .map(|l| {
            let attached: Vec<_> = compiled_routes
                .iter()
                .filter(|(r, _)| r.listeners.is_empty() || r.listeners.contains(&l.name))
                .map(|(r, rules)| (*r, rules.clone()))
                .collect();
            let mut claim_headers: Vec<http::HeaderName> = attached
                .iter()
                .flat_map(|(_, rules)| rules.iter().flat_map(|r| r.claim_headers.iter().cloned()))
                .collect();
            claim_headers.sort_by(|a, b| a.as_str().cmp(b.as_str()));
            claim_headers.dedup();
            let mut table = RouteTable::build(&attached, l.path_normalization);
            table.edge = ListenerEdge {
                max_request_body_bytes: l.limits.max_request_body_bytes,
                compression: l.compression.clone(),
                client_address: l
                    .client_address
                    .as_ref()
                    .map(crate::client_addr::TrustedProxies::new),
                claim_headers,
            };
            (l.name.clone(), Arc::new(table))
        })
        .collect();
    let upstream_tls = services
        .iter()
        .filter_map(|(name, s)| Some((name.to_string(), s.pool.tls.clone()?)))
        .collect();
    Ok(Snapshot {
        access_log: config.access_log.is_some(),
        tracer: None,
        tables,
        upstream_tls,
        unrouted: BackendMetrics::local(metrics, ""),
        config,
    })
}

/// Where a rule sits: its route and index.
struct RuleAt<'a> {
    route: &'a Arc<str>,
    index: usize,
}

fn compile_rule(
    at: RuleAt<'_>,
    rule: &RuleConfig,
    services: &BTreeMap<&str, Arc<CompiledService>>,
    metrics: &Arc<Metrics>,
    backend: &mut impl FnMut(&BackendKey) -> Arc<Backend>,
) -> Result<CompiledRule, FilterError> {
    let mut backends = Vec::new();
    let mut cumulative = Vec::new();
    let mut sum = 0u64;
    for b in &rule.backends {
        let Some(service) = services.get(b.service.as_str()) else {
            continue;
        };
        sum += u64::from(b.weight);
        cumulative.push(sum);
        backends.push(CompiledBackendRef {
            backend: backend(&BackendKey::new(&b.service, &b.version)),
            service: service.clone(),
            weight: b.weight,
            metrics: BackendMetrics::new(metrics, at.route, &b.service, &b.version),
            filters: Filter::of_backend(&b.filters),
        });
    }
    let invalid: u64 = rule.unresolved.iter().map(|u| u64::from(u.weight)).sum();
    if invalid > 0 {
        cumulative.push(sum + invalid);
    }
    let filters = rule
        .filters
        .iter()
        .map(|f| Filter::compile(f, services, &mut *backend))
        .collect::<Result<Vec<_>, _>>()?;
    let local_metrics = BackendMetrics::local(metrics, at.route);
    local_metrics.declare_rule_limits(
        rule.rate_limit.as_ref().map(|rl| rl.global.is_some()),
        rule.max_concurrent_requests.is_some(),
    );
    let unserved = match (sum, invalid) {
        (0, 0) => Some(ProxyError::NoBackend),
        (_, 1..) => Some(ProxyError::InvalidBackend),
        _ => None,
    }
    .map(|e| local_metrics.unserved(e.label()));
    let claim_headers = filters
        .iter()
        .flat_map(Filter::claim_headers)
        .cloned()
        .collect();
    Ok(CompiledRule {
        route: at.route.clone(),
        index: at.index,
        claim_headers,
        filters,
        backends,
        cumulative,
        unserved,
        timeouts: rule.timeouts,
        retry: rule.retry.clone(),
        fault: rule.fault.clone(),
        rate_limit: rule
            .rate_limit
            .clone()
            .map(crate::ratelimit::CompiledRateLimit::new),
        budget: tower::retry::budget::TpsBudget::new(
            rule.retry
                .budget
                .ttl
                .clamp(Duration::from_secs(1), Duration::from_secs(60)),
            rule.retry.budget.min_retries_per_second.min(1_000_000),
            (rule.retry.budget.percent / 100.0).clamp(0.0, 1000.0) as f32,
        ),
        max_concurrent_requests: rule.max_concurrent_requests,
        max_request_body_bytes: rule.max_request_body_bytes,
        session_persistence: rule.session_persistence.clone(),
        in_flight: Arc::default(),
        local_metrics,
    })
}

fn compile_service(s: &ServiceConfig) -> Result<CompiledService, SnapshotError> {
    let tls = match &s.tls {
        None => None,
        Some(t) => Some(Arc::new(UpstreamTls::new(t, s.protocol).map_err(
            |source| SnapshotError::UpstreamTls {
                service: s.name.clone(),
                source,
            },
        )?)),
    };
    Ok(CompiledService {
        circuit_breaker: s.circuit_breaker,
        outlier: s.outlier_detection,
        panic_threshold: s.panic_threshold,
        name: s.name.as_str().into(),
        pool: PoolSettings {
            protocol: s.protocol,
            max_connections: s.circuit_breaker.max_connections,
            max_pending: s.circuit_breaker.max_pending_requests,
            connect_timeout: s.connect_timeout,
            max_idle: s.max_idle_per_endpoint,
            idle_timeout: s.pool_idle_timeout,
            tls,
        },
        lb: s.load_balancer.policy,
        hash_header: s.load_balancer.hash_header.clone(),
        grpc_error_codes: s
            .grpc_error_codes
            .iter()
            .filter(|c| **c < 32)
            .fold(0, |mask, c| mask | (1 << c)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serin_config::proxy::parse_proxy_config;

    #[test]
    fn weighted_pick_follows_the_weights() {
        let cfg = parse_proxy_config(
            r#"
listeners: [{name: gw, address: "127.0.0.1:0"}]
services: [{name: s, versions: [{name: a, endpoints: ["127.0.0.1:1"]}, {name: b, endpoints: ["127.0.0.1:2"]}, {name: c, endpoints: ["127.0.0.1:3"]}]}]
routes:
  - name: r
    rules:
      - backendRefs: [{name: s, version: a, weight: 70}, {name: s, version: b, weight: 30}, {name: s, version: c, weight: 0}]
"#,
            "t.yaml",
            std::path::Path::new("."),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let snap = compile(Arc::new(cfg), &Metrics::new(), |k| {
            Arc::new(Backend::new(k.clone()))
        })
        .unwrap_or_else(|e| panic!("{e}"));
        let rule = snap
            .table("gw")
            .and_then(|t| {
                t.lookup(
                    "h",
                    &http::Method::GET,
                    "/",
                    None,
                    &http::HeaderMap::new(),
                    None,
                )
            })
            .map(|(r, _)| r.clone())
            .unwrap_or_else(|| panic!("no rule"));
        let mut counts = BTreeMap::new();
        let n = 100_000;
        for _ in 0..n {
            let b = rule.pick_backend().unwrap_or_else(|e| panic!("{e}"));
            *counts.entry(b.backend.key.version.to_string()).or_insert(0) += 1;
        }
        let share = |v: &str| f64::from(*counts.get(v).unwrap_or(&0)) * 100.0 / f64::from(n);
        assert!((share("a") - 70.0).abs() < 1.0, "{counts:?}");
        assert!((share("b") - 30.0).abs() < 1.0, "{counts:?}");
        assert_eq!(counts.get("c"), None, "weight 0 gets nothing");
    }

    fn rules_of(yaml: &str) -> (Arc<Metrics>, Vec<Arc<CompiledRule>>) {
        let cfg = parse_proxy_config(yaml, "t.yaml", std::path::Path::new("."))
            .unwrap_or_else(|e| panic!("{e}"));
        let metrics = Metrics::new();
        let snap = compile(Arc::new(cfg), &metrics, |k| {
            Arc::new(Backend::new(k.clone()))
        })
        .unwrap_or_else(|e| panic!("{e}"));
        let table = snap.table("gw").unwrap_or_else(|| panic!("no table"));
        let rule = |path: &str| {
            table
                .lookup(
                    "h",
                    &http::Method::GET,
                    path,
                    None,
                    &http::HeaderMap::new(),
                    None,
                )
                .map(|(r, _)| r.clone())
                .unwrap_or_else(|| panic!("no rule for {path}"))
        };
        (metrics, vec![rule("/"), rule("/none"), rule("/kind")])
    }

    /// Gateway API: a rule without backendRefs answers 500, and so does the
    /// share of requests the weights give a backendRef that is not a
    /// Service; the series that count them exist from the start.
    #[test]
    fn a_rule_without_a_valid_backend_answers_500_for_its_share() {
        let (metrics, rules) = rules_of(
            r#"
listeners: [{name: gw, address: "127.0.0.1:0"}]
services: [{name: s, versions: [{name: a, endpoints: ["127.0.0.1:1"]}]}]
routes:
  - name: mixed
    rules:
      - backendRefs: [{name: s, weight: 75}, {name: b, group: example.com, kind: Bucket, weight: 25}]
  - name: none
    rules:
      - matches: [{path: {value: /none}}]
  - name: kind
    rules:
      - matches: [{path: {value: /kind}}]
        backendRefs: [{name: s, weight: 0}, {name: c, kind: ConfigMap}]
"#,
        );
        let text = metrics.encode();
        for (route, reason) in [
            ("mixed", "invalid_backend"),
            ("none", "no_backend"),
            ("kind", "invalid_backend"),
        ] {
            let series =
                format!(r#"serin_unserved_requests_total{{route="{route}",reason="{reason}"}} 0"#);
            assert!(text.contains(&series), "{series} missing:\n{text}");
        }
        let n = 40_000;
        let invalid = (0..n)
            .filter(|_| rules[0].pick_backend().err() == Some(ProxyError::InvalidBackend))
            .count();
        let share = invalid as f64 * 100.0 / f64::from(n);
        assert!((share - 25.0).abs() < 1.5, "{share}% invalid");
        assert_eq!(rules[1].pick_backend().err(), Some(ProxyError::NoBackend));
        for _ in 0..100 {
            assert_eq!(
                rules[2].pick_backend().err(),
                Some(ProxyError::InvalidBackend)
            );
        }
        rules[1].count_unserved(&ProxyError::NoBackend);
        assert!(
            metrics
                .encode()
                .contains(r#"serin_unserved_requests_total{route="none",reason="no_backend"} 1"#)
        );
    }
}
