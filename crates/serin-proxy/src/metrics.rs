//! Prometheus metrics: RED per route, service and version, plus the proxy's
//! own health (connections, connect failures, retries, timeouts, reloads).

use std::sync::{Arc, OnceLock, RwLock};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use serin_config::proxy::GRPC_CODE_NAMES;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub route: String,
    pub service: String,
    pub version: String,
    pub code: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BackendLabels {
    pub route: String,
    pub service: String,
    pub version: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UpstreamLabels {
    pub service: String,
    pub version: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TimeoutLabels {
    pub route: String,
    pub service: String,
    pub version: String,
    /// `request` (the whole deadline) or `backendRequest` (one try).
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ListenerLabels {
    pub listener: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RejectLabels {
    pub listener: String,
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OverflowLabels {
    pub service: String,
    pub version: String,
    /// One of [`BACKEND_LIMITS`].
    pub limit: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MirrorLabels {
    /// The shadow's backend.
    pub service: String,
    pub version: String,
    /// `same` or `different` status than the primary's, or `error`.
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ShedLabels {
    /// `listener` or `route`.
    pub scope: String,
    pub name: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UnservedLabels {
    pub route: String,
    /// The failure's label: `no_backend` or `invalid_backend`.
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GrpcLabels {
    pub route: String,
    pub service: String,
    pub version: String,
    pub grpc_code: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub result: String,
}

/// Creates a series at 0: it is exported from the start, not from its
/// first event.
fn at_zero<S, M, C>(family: &Family<S, M, C>, labels: &S)
where
    S: Clone + std::hash::Hash + Eq,
    C: prometheus_client::metrics::family::MetricConstructor<M>,
{
    drop(family.get_or_create(labels));
}

fn latency_histogram() -> Histogram {
    // 1 ms to ~33 s: loopback hops sit in the first buckets, the
    // workshop's 500 ms canary in the middle.
    Histogram::new([
        0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    ])
}

/// Metrics of another part of serin in the same process (the canary
/// controller), encoded with the proxy's at each scrape, under the same
/// `serin_` prefix.
pub trait MetricsSection: Send + Sync + std::fmt::Debug + 'static {
    fn encode(
        &self,
        encoder: &mut prometheus_client::encoding::DescriptorEncoder<'_>,
    ) -> std::fmt::Result;
}

/// The sections added after the registry was built, as one collector.
#[derive(Debug, Default)]
struct Sections(RwLock<Vec<Box<dyn MetricsSection>>>);

impl prometheus_client::collector::Collector for Sections {
    fn encode(
        &self,
        mut encoder: prometheus_client::encoding::DescriptorEncoder<'_>,
    ) -> std::fmt::Result {
        let sections = self.0.read().unwrap_or_else(|e| e.into_inner());
        for s in sections.iter() {
            s.encode(&mut encoder)?;
        }
        Ok(())
    }
}

/// Every metric of the proxy. One per process, shared by all workers.
pub struct Metrics {
    pub registry: Registry,
    sections: Arc<Sections>,
    pub requests: Family<RequestLabels, Counter>,
    pub duration: Family<BackendLabels, Histogram, fn() -> Histogram>,
    pub connect_failures: Family<UpstreamLabels, Counter>,
    pub retries: Family<BackendLabels, Counter>,
    pub timeouts: Family<TimeoutLabels, Counter>,
    pub active_connections: Family<ListenerLabels, Gauge>,
    pub rejected: Family<RejectLabels, Counter>,
    pub reloads: Family<ResultLabels, Counter>,
    pub overflows: Family<OverflowLabels, Counter>,
    pub shed: Family<ShedLabels, Counter>,
    pub faults: Family<BackendLabels, Counter>,
    pub ejections: Family<UpstreamLabels, Counter>,
    pub budget_exhausted: Family<BackendLabels, Counter>,
    pub mirrors: Family<MirrorLabels, Counter>,
    pub rate_limited: Family<ShedLabels, Counter>,
    pub unserved: Family<UnservedLabels, Counter>,
    pub grpc_responses: Family<GrpcLabels, Counter>,
}

/// A family of metrics, registered under `name` with its help text.
fn registered<S, M>(registry: &mut Registry, name: &str, help: &str) -> Family<S, M>
where
    S: Clone + std::hash::Hash + Eq + EncodeLabelSet + std::fmt::Debug + Send + Sync + 'static,
    M: Default
        + prometheus_client::metrics::TypedMetric
        + prometheus_client::encoding::EncodeMetric
        + Send
        + Sync
        + std::fmt::Debug
        + 'static,
{
    let family = Family::<S, M>::default();
    registry.register(name, help, family.clone());
    family
}

impl Metrics {
    pub fn new() -> Arc<Self> {
        let mut r = Registry::with_prefix("serin");
        let duration = Family::<BackendLabels, Histogram, fn() -> Histogram>::new_with_constructor(
            latency_histogram,
        );
        r.register_with_unit(
            "request_duration",
            "Time from request to response headers, by route and backend",
            prometheus_client::registry::Unit::Seconds,
            duration.clone(),
        );
        let reloads: Family<ResultLabels, Counter> = registered(
            &mut r,
            "config_reloads",
            "Configuration reloads, by result (success or failure)",
        );
        let sections = Arc::new(Sections::default());
        r.register_collector(Box::new(sections.clone()));
        // Shown from the start, so a dashboard sees 0 rather than nothing.
        for result in ["success", "failure"] {
            at_zero(
                &reloads,
                &ResultLabels {
                    result: result.into(),
                },
            );
        }
        Arc::new(Self {
            requests: registered(
                &mut r,
                "requests",
                "Requests answered, by route, backend and status code",
            ),
            duration,
            connect_failures: registered(
                &mut r,
                "upstream_connect_failures",
                "Failed connection attempts to upstream endpoints",
            ),
            retries: registered(&mut r, "retries", "Requests tried again"),
            timeouts: registered(
                &mut r,
                "timeouts",
                "Requests whose deadline expired (kind: request or backendRequest)",
            ),
            active_connections: registered(
                &mut r,
                "active_connections",
                "Client connections open now",
            ),
            rejected: registered(
                &mut r,
                "downstream_rejected",
                "Client requests refused before routing (malformed, over limits)",
            ),
            reloads,
            overflows: registered(
                &mut r,
                "circuit_breaker_overflows",
                "Requests refused (or retries not made) because a circuit breaker limit was reached",
            ),
            shed: registered(
                &mut r,
                "load_shed",
                "Connections or requests refused by a listener's or a route's limit",
            ),
            faults: registered(
                &mut r,
                "faults_injected",
                "Requests delayed or aborted on purpose",
            ),
            ejections: registered(
                &mut r,
                "outlier_ejections",
                "Endpoints ejected by outlier detection",
            ),
            budget_exhausted: registered(
                &mut r,
                "retry_budget_exhausted",
                "Retries not made because the route's retry budget was spent",
            ),
            mirrors: registered(
                &mut r,
                "mirror_responses",
                "Shadow (mirrored) answers, by whether their status matched the primary's",
            ),
            rate_limited: registered(
                &mut r,
                "rate_limited",
                "Requests refused with 429 by a rate limit (scope: local or global)",
            ),
            unserved: registered(
                &mut r,
                "unserved_requests",
                "Requests answered 500 because their rule had no valid backend for them (reason: no_backend, invalid_backend)",
            ),
            grpc_responses: registered(
                &mut r,
                "grpc_responses",
                "gRPC calls by the status they ended with (grpc_code: OK, UNAVAILABLE, ...; from the trailers, a trailers-only head, or the HTTP status)",
            ),
            registry: r,
            sections,
        })
    }

    /// Adds another part's metrics to every scrape from now on.
    pub fn add_section(&self, section: Box<dyn MetricsSection>) {
        self.sections
            .0
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .push(section);
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

/// The circuit breaker limits of a service version that refuse requests
/// (Envoy's names), each a `limit` label of `serin_circuit_breaker_overflows_total`.
pub const BACKEND_LIMITS: [&str; 4] = [
    "maxConnections",
    "maxPendingRequests",
    "maxRequests",
    "maxRetries",
];

/// Metric handles of one (route, backend) pair, resolved when a snapshot is
/// built so the request path does no label hashing.
pub struct BackendMetrics {
    labels: BackendLabels,
    metrics: Arc<Metrics>,
    pub duration: Histogram,
    pub retries: Counter,
    pub connect_failures: Counter,
    codes: OnceLock<Box<[OnceLock<Counter>]>>,
    /// gRPC statuses, shared with the bodies that see the trailers.
    pub grpc: Arc<GrpcCounters>,
}

/// The gRPC status counters of one (route, backend) pair, each made on
/// its first use (a backend that serves no gRPC exports none).
pub struct GrpcCounters {
    family: Family<GrpcLabels, Counter>,
    labels: BackendLabels,
    slots: [OnceLock<Counter>; GRPC_CODE_NAMES.len()],
}

impl GrpcCounters {
    fn new(metrics: &Metrics, labels: &BackendLabels) -> Arc<Self> {
        Arc::new(Self {
            family: metrics.grpc_responses.clone(),
            labels: labels.clone(),
            slots: std::array::from_fn(|_| OnceLock::new()),
        })
    }

    /// Counts one call that ended with `code`; a number outside the
    /// specification's counts as UNKNOWN, as gRPC clients read it.
    pub fn count(&self, code: u32) {
        let i = usize::try_from(code)
            .ok()
            .filter(|i| *i < GRPC_CODE_NAMES.len())
            .unwrap_or(2);
        self.slots[i]
            .get_or_init(|| {
                self.family
                    .get_or_create(&GrpcLabels {
                        route: self.labels.route.clone(),
                        service: self.labels.service.clone(),
                        version: self.labels.version.clone(),
                        grpc_code: GRPC_CODE_NAMES[i],
                    })
                    .clone()
            })
            .inc();
    }
}

impl BackendMetrics {
    /// The rule's own limits, counted at 0 from the start: its rate limit
    /// (`global`: in Redis) and its concurrency limit.
    pub fn declare_rule_limits(&self, rate_limit: Option<bool>, concurrency: bool) {
        if let Some(global) = rate_limit {
            at_zero(
                &self.metrics.rate_limited,
                &ShedLabels {
                    scope: if global { "global" } else { "local" }.into(),
                    name: self.labels.route.clone(),
                },
            );
        }
        if concurrency {
            at_zero(
                &self.metrics.shed,
                &ShedLabels {
                    scope: "route".into(),
                    name: self.labels.route.clone(),
                },
            );
        }
    }

    /// The counter of requests the rule cannot send to a backend, for the
    /// reason `reason` (a [`crate::request::ProxyError`] label), created at
    /// 0: a rule has one when its backendRefs say it will answer 500.
    pub fn unserved(&self, reason: &str) -> Counter {
        self.metrics
            .unserved
            .get_or_create(&UnservedLabels {
                route: self.labels.route.clone(),
                reason: reason.to_string(),
            })
            .clone()
    }

    /// Handles for requests a rule answers without a backend (redirects,
    /// no route): only their status codes are counted.
    pub fn local(metrics: &Arc<Metrics>, route: &str) -> Self {
        Self {
            labels: BackendLabels {
                route: route.to_string(),
                service: String::new(),
                version: String::new(),
            },
            metrics: metrics.clone(),
            // Not registered: nothing is forwarded, so these stay unseen.
            duration: latency_histogram(),
            retries: Counter::default(),
            connect_failures: Counter::default(),
            codes: OnceLock::new(),
            // Never counted: a rule's own answers have no backend behind.
            grpc: GrpcCounters::new(
                metrics,
                &BackendLabels {
                    route: route.to_string(),
                    service: String::new(),
                    version: String::new(),
                },
            ),
        }
    }

    /// Handles for one backend of a route. Every series it can move is
    /// created here at 0, so a dashboard shows 0 rather than "No data"
    /// until the first event (Prometheus: "avoid missing metrics").
    pub fn new(metrics: &Arc<Metrics>, route: &str, service: &str, version: &str) -> Self {
        let labels = BackendLabels {
            route: route.to_string(),
            service: service.to_string(),
            version: version.to_string(),
        };
        let upstream = UpstreamLabels {
            service: service.to_string(),
            version: version.to_string(),
        };
        for kind in ["request", "backendRequest"] {
            at_zero(
                &metrics.timeouts,
                &TimeoutLabels {
                    route: route.to_string(),
                    service: service.to_string(),
                    version: version.to_string(),
                    kind: kind.to_string(),
                },
            );
        }
        for limit in BACKEND_LIMITS {
            at_zero(
                &metrics.overflows,
                &OverflowLabels {
                    service: service.to_string(),
                    version: version.to_string(),
                    limit: limit.to_string(),
                },
            );
        }
        at_zero(&metrics.ejections, &upstream);
        at_zero(&metrics.budget_exhausted, &labels);
        at_zero(&metrics.faults, &labels);
        Self {
            duration: metrics.duration.get_or_create(&labels).clone(),
            retries: metrics.retries.get_or_create(&labels).clone(),
            connect_failures: metrics
                .connect_failures
                .get_or_create(&UpstreamLabels {
                    service: service.to_string(),
                    version: version.to_string(),
                })
                .clone(),
            grpc: GrpcCounters::new(metrics, &labels),
            labels,
            metrics: metrics.clone(),
            codes: OnceLock::new(),
        }
    }

    /// Counts one answered request with its status code.
    pub fn count_request(&self, code: u16) {
        let slots = self
            .codes
            .get_or_init(|| (100..600).map(|_| OnceLock::new()).collect());
        let make = || {
            self.metrics
                .requests
                .get_or_create(&RequestLabels {
                    route: self.labels.route.clone(),
                    service: self.labels.service.clone(),
                    version: self.labels.version.clone(),
                    code,
                })
                .clone()
        };
        match slots.get(usize::from(code).wrapping_sub(100)) {
            Some(slot) => {
                slot.get_or_init(make).inc();
            }
            None => {
                make().inc();
            }
        }
    }

    pub fn overflow(&self, limit: &str) {
        self.metrics
            .overflows
            .get_or_create(&OverflowLabels {
                service: self.labels.service.clone(),
                version: self.labels.version.clone(),
                limit: limit.to_string(),
            })
            .inc();
    }

    pub fn ejected(&self) {
        self.metrics
            .ejections
            .get_or_create(&UpstreamLabels {
                service: self.labels.service.clone(),
                version: self.labels.version.clone(),
            })
            .inc();
    }

    pub fn budget_exhausted(&self) {
        self.metrics
            .budget_exhausted
            .get_or_create(&self.labels)
            .inc();
    }

    pub fn fault(&self) {
        self.metrics.faults.get_or_create(&self.labels).inc();
    }

    pub fn rate_limited(&self, global: bool) {
        self.metrics
            .rate_limited
            .get_or_create(&ShedLabels {
                scope: if global { "global" } else { "local" }.into(),
                name: self.labels.route.clone(),
            })
            .inc();
    }

    pub fn shed(&self) {
        self.metrics
            .shed
            .get_or_create(&ShedLabels {
                scope: "route".into(),
                name: self.labels.route.clone(),
            })
            .inc();
    }

    pub fn timeout(&self, kind: &str) {
        self.metrics
            .timeouts
            .get_or_create(&TimeoutLabels {
                route: self.labels.route.clone(),
                service: self.labels.service.clone(),
                version: self.labels.version.clone(),
                kind: kind.to_string(),
            })
            .inc();
    }
}
