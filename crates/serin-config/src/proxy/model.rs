//! The validated proxy configuration: what the data plane runs. Nothing here
//! is unchecked; every name resolves, every regex compiled, every weight sane.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use http::{HeaderName, HeaderValue, Method, StatusCode};
use regex::Regex;
use serde::Serialize;

pub use super::raw::{
    ClientValidationMode, ContentCoding, Discovery, EscapedSlashesAction, LbPolicy, LogFormat,
    PathParametersAction, UpstreamProtocol,
};
use crate::error::Span;

/// Defaults, each with the reason for its value.
pub mod defaults {
    use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
    use std::time::Duration;

    /// Loopback only: the admin API can change routing, so it is not exposed
    /// unless asked (and then it wants a token; see [`crate::proxy::admin`]).
    /// 9901 is Envoy's admin port.
    pub const ADMIN_ADDRESS: SocketAddr =
        SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 9901));
    /// Time for in-flight requests to finish on SIGTERM before connections
    /// are cut; matches Kubernetes' default termination grace period.
    pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
    /// 60 KiB of request headers, as NGINX's large_client_header_buffers
    /// and Envoy's max_request_headers_kb: generous for cookies and JWTs,
    /// small enough to bound memory per connection.
    pub const MAX_REQUEST_HEADER_BYTES: usize = 60 * 1024;
    /// Envoy's and Go's limit: no legitimate client sends more.
    pub const MAX_REQUEST_HEADERS: usize = 100;
    /// Paths are normalised before routing (Envoy's default is off, which
    /// lets `/public/../admin` be routed as public and read as `/admin` by
    /// the application behind).
    pub const NORMALIZE_PATH: bool = true;
    /// `//admin` is `/admin` to most frameworks: route it as that.
    pub const MERGE_SLASHES: bool = true;
    /// A client has this long to send a request's headers (slowloris).
    pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
    /// An idle keep-alive connection is closed after this long.
    pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
    /// Concurrent HTTP/2 streams per client connection (Envoy and Go use 100
    /// to 250; an unbounded number is a resource-exhaustion attack).
    pub const HTTP2_MAX_CONCURRENT_STREAMS: u32 = 100;
    /// Client connections per listener: far above what one machine's
    /// services need, low enough that a connection flood is refused before
    /// file descriptors run out (Linux's usual soft limit is 1024 per
    /// process; serin raises nothing itself).
    pub const MAX_CONNECTIONS: usize = 10_000;
    /// Upstream connections to one service version. HTTP/1.1 needs one per
    /// request in flight, so this follows `CB_MAX_REQUESTS`: it exists to
    /// bound file descriptors, not to queue.
    pub const CB_MAX_CONNECTIONS: usize = 10_000;
    /// Requests that may wait for a connection when `maxConnections` are
    /// open (Envoy's meaning); more get 503 at once. Waiting is bounded by
    /// the request's own deadline.
    pub const CB_MAX_PENDING_REQUESTS: usize = 1_000;
    /// Requests in flight to one service version. Envoy's 1024 is a common
    /// surprise; serin's limit is higher because it only exists to stop a
    /// stuck upstream from collecting every request: past it, answer 503 at
    /// once rather than queue.
    pub const CB_MAX_REQUESTS: usize = 10_000;
    /// Linkerd's retry budget: retries add at most 20 % to the requests of
    /// the last 10 s, plus 10 a second so that quiet routes can retry too.
    pub const RETRY_BUDGET_PERCENT: f64 = 20.0;
    pub const RETRY_BUDGET_MIN_PER_SECOND: u32 = 10;
    pub const RETRY_BUDGET_TTL: Duration = Duration::from_secs(10);
    /// Envoy's outlier detection defaults.
    pub const OUTLIER_CONSECUTIVE: u32 = 5;
    pub const OUTLIER_INTERVAL: Duration = Duration::from_secs(10);
    pub const OUTLIER_BASE_EJECTION: Duration = Duration::from_secs(30);
    pub const OUTLIER_MAX_EJECTION: Duration = Duration::from_secs(300);
    /// Envoy ejects at most 10 % (and always at least one endpoint).
    pub const OUTLIER_MAX_EJECTION_PERCENT: f64 = 10.0;
    /// Envoy's health check thresholds; serin checks every 5 s by default.
    pub const HEALTH_INTERVAL: Duration = Duration::from_secs(5);
    pub const HEALTH_TIMEOUT: Duration = Duration::from_secs(1);
    pub const HEALTH_HEALTHY_THRESHOLD: u32 = 2;
    pub const HEALTH_UNHEALTHY_THRESHOLD: u32 = 3;
    /// Envoy's panic threshold.
    pub const PANIC_THRESHOLD: f64 = 50.0;
    /// Retries in flight to one service version at once. Envoy's 3 is one
    /// of its most reported surprises (under load, retries silently stop);
    /// in serin the retry budget is what bounds retries, and this is only a
    /// backstop against a runaway.
    pub const CB_MAX_RETRIES: usize = 1_000;
    /// Connecting on loopback or a LAN takes well under this; waiting longer
    /// only delays the retry on another endpoint.
    pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
    /// Until response headers, across retries (Envoy's route default). It
    /// does not cut a response body that is streaming, nor upgrades.
    pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
    /// Idle upstream connections kept per endpoint and worker.
    pub const MAX_IDLE_PER_ENDPOINT: usize = 256;
    /// Upstream servers commonly close idle keep-alive connections after 60 s
    /// or more; dropping ours earlier avoids racing their close.
    pub const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(50);
    /// Without a `retry` section, a request whose connection attempt failed
    /// (it provably never reached the upstream) is tried on another endpoint
    /// this many times: a replica that just died must not fail a request.
    pub const CONNECT_FAILURE_RETRIES: u32 = 2;
    /// Retry `codes` when a `retry` section gives none.
    pub const RETRY_CODES: [u16; 3] = [502, 503, 504];
    /// Base of the jittered exponential back-off between retries.
    pub const RETRY_BACKOFF: Duration = Duration::from_millis(25);
    /// Every new trace is sampled: the spans of a few services on one
    /// machine are cheap, and a trace missing when it is wanted costs more.
    /// Lower it where traffic is heavy; a client's sampling decision
    /// (`traceparent` flags) is always followed.
    pub const TRACING_SAMPLING_RATIO: f64 = 1.0;
    /// The `service.name` of serin's spans when neither `serviceName` nor
    /// `OTEL_SERVICE_NAME` gives one.
    pub const TRACING_SERVICE_NAME: &str = "serin";
    /// Gateway API's default backend weight.
    pub const WEIGHT: u32 = 1;
    /// A RequestMirror without `percent` or `fraction` copies every
    /// request (Gateway API).
    pub const MIRROR_PERCENT: f64 = 100.0;
    /// The denominator of a mirror's `fraction` when absent (Gateway API).
    pub const MIRROR_FRACTION_DENOMINATOR: u32 = 100;
    /// An auth check is a small lookup; a slow one is a failing one.
    pub const EXTERNAL_AUTH_TIMEOUT: Duration = Duration::from_secs(1);
    /// When the auth service cannot answer, refuse (403), as Envoy does: an
    /// outage of the auth service must not open every door.
    pub const EXTERNAL_AUTH_FAIL_OPEN: bool = false;
    /// When Redis cannot answer, let requests through: a global rate limit
    /// protects the services from load, and an outage of its counter store
    /// should not become an outage of the whole site.
    pub const GLOBAL_RATE_LIMIT_FAIL_OPEN: bool = true;
    /// How long a request waits for Redis's count: a rate limit check must
    /// cost far less than the request it guards; a slower Redis counts as
    /// down (see `GLOBAL_RATE_LIMIT_FAIL_OPEN`).
    pub const GLOBAL_RATE_LIMIT_TIMEOUT: Duration = Duration::from_millis(100);
    /// An upstream's `Retry-After` longer than this is not waited for: the
    /// answer goes back to the client, who can wait better than a request
    /// held open.
    pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(10);
    /// A preflight's answer may be cached this long (seconds) when the
    /// CORS filter gives no `maxAge`: the Gateway API's default.
    pub const CORS_MAX_AGE: u32 = 5;
    /// The header an APIKey filter reads when it names none: the name
    /// most APIs and gateways (Kong, Envoy's api_key_auth examples) use.
    pub const API_KEY_HEADER: &str = "x-api-key";
    /// How far a JWT's `exp` and `nbf` may be off serin's clock: clocks of
    /// an identity provider and a gateway drift by seconds, and a minute
    /// is what jsonwebtoken, Envoy's and most libraries' examples allow.
    pub const JWT_LEEWAY: Duration = Duration::from_secs(60);
    /// How often a JWKS URL is fetched again: identity providers publish
    /// a new key well before they sign with it (Keycloak, Auth0 and Okta
    /// rotate over days), so minutes are enough, and a provider is asked
    /// no more than a dozen times an hour per gateway.
    pub const JWKS_REFRESH_INTERVAL: Duration = Duration::from_secs(300);
    /// The realm a BasicAuth filter names in its challenge when the config
    /// gives none; browsers show it in their login prompt.
    pub const BASIC_AUTH_REALM: &str = "serin";
    /// Request bodies larger than this get 413 (`0` for none). serin
    /// streams bodies, so this does not bound serin's memory; it bounds
    /// what a client can push into a service that never expected it.
    /// 100 MiB is Cloudflare's request-body limit: room for uploads,
    /// where NGINX's 1 MiB (`client_max_body_size`) is the limit users
    /// of ingress-nginx most often trip over; Envoy sets none on streamed
    /// bodies.
    pub const MAX_REQUEST_BODY_BYTES: u64 = 100 * 1024 * 1024;
    /// The cookie of `sessionPersistence` when it names none (the Gateway
    /// API leaves the default to the implementation).
    pub const SESSION_COOKIE: &str = "serin-session";
    /// The header of a `type: Header` session when it names none.
    pub const SESSION_HEADER: &str = "x-serin-session";
    /// The gRPC statuses that are the service's fault, as 5xx statuses
    /// are: those the HTTP mapping pairs with 500, 501, 503 and 504
    /// (UNKNOWN, DEADLINE_EXCEEDED, UNIMPLEMENTED, INTERNAL, UNAVAILABLE)
    /// and DATA_LOSS. NOT_FOUND, INVALID_ARGUMENT and the like are the
    /// caller's, as 4xx are.
    pub const GRPC_ERROR_CODES: [u32; 6] = [2, 4, 12, 13, 14, 15];
    /// No proxy in front is trusted unless configured: a client that
    /// connects directly could otherwise write any address into
    /// `X-Forwarded-For` and escape a per-client rate limit or forge the
    /// access log (Envoy's `xff_num_trusted_hops` and NGINX's realip
    /// also trust nothing by default).
    pub const TRUSTED_HOPS: u32 = 0;
    /// Answers smaller than this are sent as they are: below about one
    /// packet, compression saves no round trip and costs CPU (Traefik's
    /// default; NGINX's 20 and Envoy's 30 bytes compress even tiny
    /// answers).
    pub const COMPRESSION_MIN_BYTES: u64 = 1024;
    /// Media types compressed when the listener names none: Envoy's
    /// compressor's list, text that compresses well. Images, video and
    /// archives are compressed already; gRPC and event streams are left
    /// alone.
    pub const COMPRESSION_CONTENT_TYPES: [&str; 8] = [
        "application/javascript",
        "application/json",
        "application/xhtml+xml",
        "image/svg+xml",
        "text/css",
        "text/html",
        "text/plain",
        "text/xml",
    ];
    /// serin's preference when a client accepts several codings equally:
    /// zstd compresses about as well as brotli at a fraction of its CPU,
    /// brotli better than gzip, and gzip is what every client has.
    pub const COMPRESSION_ENCODINGS: [super::ContentCoding; 3] = [
        super::ContentCoding::Zstd,
        super::ContentCoding::Br,
        super::ContentCoding::Gzip,
    ];
    /// Request headers an auth service gets when the filter names none:
    /// what carries credentials, and what correlates logs and traces.
    pub const EXTERNAL_AUTH_HEADERS: [&str; 5] = [
        "authorization",
        "cookie",
        "x-request-id",
        "traceparent",
        "tracestate",
    ];
}

#[derive(Debug, Clone, Serialize)]
pub struct ProxyConfig {
    /// The file this came from, when it came from one.
    pub source: Option<PathBuf>,
    pub admin: AdminConfig,
    pub access_log: Option<LogFormat>,
    /// Tracing as configured; `None`: only `OTEL_EXPORTER_OTLP_*` variables
    /// may turn it on.
    pub tracing: Option<TracingConfig>,
    /// Data-plane worker threads (each with its own connection pools).
    pub workers: usize,
    #[serde(with = "humantime_serde_compat")]
    pub drain_timeout: Duration,
    pub listeners: Vec<ListenerConfig>,
    pub services: Vec<ServiceConfig>,
    pub routes: Vec<RouteConfig>,
    /// `discovery: kubernetes`: endpoints of versions without static ones
    /// come from EndpointSlices.
    pub discovery: Option<Discovery>,
    /// `routes: kubernetes`: `routes` come from HTTPRoute objects, not from
    /// the file (empty until they arrive).
    pub routes_from_kubernetes: bool,
    /// What the file says that is valid but likely a mistake (a rule that
    /// answers 500 to every request): `serin validate` prints it, a proxy
    /// logs it when it applies the file.
    #[serde(skip)]
    pub warnings: Vec<crate::ConfigError>,
}

/// Where and how spans are exported (OTLP over HTTP, protobuf).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TracingConfig {
    /// The OTLP/HTTP base URL, as `OTEL_EXPORTER_OTLP_ENDPOINT`: spans go to
    /// `ENDPOINT/v1/traces`. `None`: the `OTEL_EXPORTER_OTLP_*` variables
    /// say, else the OpenTelemetry default `http://localhost:4318`.
    pub endpoint: Option<String>,
    /// `service.name` of the spans; `None`: `OTEL_SERVICE_NAME`, else
    /// [`defaults::TRACING_SERVICE_NAME`].
    pub service_name: Option<String>,
    /// Share of new traces recorded (0 to 1); a client's `traceparent`
    /// decides for the traces it continues.
    pub sampling_ratio: f64,
    /// Headers sent with every export (e.g. an API key).
    #[serde(skip)]
    pub headers: Vec<(String, String)>,
}

impl TracingConfig {
    /// The URL spans are posted to, when the config names one.
    pub fn traces_url(&self) -> Option<String> {
        let base = self.endpoint.as_deref()?;
        if base.ends_with("/v1/traces") {
            return Some(base.to_string());
        }
        Some(format!("{}/v1/traces", base.trim_end_matches('/')))
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct AdminConfig {
    pub address: SocketAddr,
    /// A second listener that serves only `GET /metrics`, with no token:
    /// for a Prometheus outside the pod while the admin API stays on
    /// loopback.
    pub metrics_address: Option<SocketAddr>,
    /// Clients send `Authorization: Bearer TOKEN`; required beyond
    /// loopback (see [`crate::proxy::admin::check`]).
    #[serde(skip)]
    pub token: Option<String>,
    /// Where `address` was set, for messages.
    #[serde(skip)]
    pub address_origin: crate::proxy::admin::Origin,
    /// Where `token` was set: one from the command line stays through
    /// reloads, one from the file changes with it.
    #[serde(skip)]
    pub token_origin: crate::proxy::admin::Origin,
    /// The file's key for the token, for messages (`admin.token`, or
    /// `gateway.adminToken` in a stack file).
    #[serde(skip)]
    pub token_key: &'static str,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ListenerConfig {
    pub name: String,
    pub address: SocketAddr,
    pub tls: Option<TlsConfig>,
    pub limits: ListenerLimits,
    pub path_normalization: PathNormalizationConfig,
    /// Responses compressed by `Accept-Encoding`; `None`: off.
    pub compression: Option<CompressionConfig>,
    /// Who may say the client's address; `None`: nobody, the peer is the
    /// client.
    pub client_address: Option<ClientAddressConfig>,
    /// Who opens connections with a PROXY protocol header; `None`: the
    /// listener does not read one.
    pub proxy_protocol: Option<ProxyProtocolConfig>,
    /// Where the address was written, for bind errors.
    #[serde(skip)]
    pub span: Span,
    #[serde(skip)]
    pub path: String,
}

/// A listener's TLS (README, "TLS"): the files are read again when they
/// change on disk.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TlsConfig {
    /// Served for no SNI, or an SNI that no entry of `certificates` names.
    /// Without one, such a handshake is refused.
    pub default: Option<CertificateFiles>,
    /// Chosen by the client's SNI.
    pub certificates: Vec<SniCertificateConfig>,
    pub client_validation: Option<ClientValidationConfig>,
}

impl TlsConfig {
    /// The default certificate, else the first chosen by SNI: the one a
    /// rendering that carries a single certificate takes.
    pub fn first_certificate(&self) -> Option<&CertificateFiles> {
        self.default
            .as_ref()
            .or_else(|| self.certificates.first().map(|c| &c.files))
    }

    /// Every file the listener's TLS is made of (to watch for changes).
    pub fn files(&self) -> Vec<&std::path::Path> {
        let mut files: Vec<&std::path::Path> = self
            .default
            .iter()
            .chain(self.certificates.iter().map(|c| &c.files))
            .flat_map(|f| [f.certificate.as_path(), f.key.as_path()])
            .collect();
        files.extend(
            self.client_validation
                .iter()
                .map(|c| c.ca_certificates.as_path()),
        );
        files
    }
}

/// A PEM certificate chain (leaf first) and its PEM private key.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct CertificateFiles {
    pub certificate: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SniCertificateConfig {
    pub files: CertificateFiles,
    /// Lowercase; exact names and `*.example.com` (one label, as rustls
    /// and Envoy match). Empty: the certificate's own DNS names, read with
    /// the file (so a renewed certificate with new names serves them).
    pub hostnames: Vec<String>,
}

/// Client certificates checked against a CA bundle.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClientValidationConfig {
    pub mode: ClientValidationMode,
    pub ca_certificates: PathBuf,
}

/// TLS from serin to a service's endpoints.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct UpstreamTlsConfig {
    /// Sent as SNI and checked against the endpoint's certificate.
    pub server_name: String,
    /// `None`: the system's trust store.
    pub ca_certificates: Option<PathBuf>,
    /// The certificate serin presents, when the upstream asks for one.
    pub client_certificate: Option<CertificateFiles>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ListenerLimits {
    pub max_request_header_bytes: usize,
    pub max_request_headers: usize,
    #[serde(with = "humantime_serde_compat")]
    pub header_read_timeout: Duration,
    #[serde(with = "humantime_serde_compat")]
    pub idle_timeout: Duration,
    pub http2_max_concurrent_streams: u32,
    /// Client connections open at once; more are refused.
    pub max_connections: usize,
    /// Largest request body, in bytes (0: none); a rule may say otherwise.
    pub max_request_body_bytes: u64,
}

/// The proxies in front of a listener trusted to name the client in
/// `X-Forwarded-For` (README, "Client address").
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ClientAddressConfig {
    /// The nearest this many hops (the peer, then `X-Forwarded-For` from
    /// the right) are trusted whatever their address.
    pub trusted_hops: u32,
    /// Hops with an address in one of these are trusted.
    pub trusted_cidrs: Vec<ipnet::IpNet>,
}

/// The load balancers in front of a listener that send the PROXY protocol
/// (README, "PROXY protocol").
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProxyProtocolConfig {
    /// A peer with an address in one of these must open its connections
    /// with a PROXY header (v1 or v2); the address it names is the
    /// connection's client. Other peers are clients themselves and their
    /// PROXY header is never read. Never empty.
    pub trusted_cidrs: Vec<ipnet::IpNet>,
}

/// How a listener compresses responses.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CompressionConfig {
    /// The codings serin may use, its preference first.
    pub encodings: Vec<ContentCoding>,
    /// Answers with a smaller `Content-Length` are not compressed.
    pub min_bytes: u64,
    /// Media types (lower case; `text/*` for a whole type) compressed.
    pub content_types: Vec<String>,
}

impl Default for ListenerLimits {
    fn default() -> Self {
        Self {
            max_request_header_bytes: defaults::MAX_REQUEST_HEADER_BYTES,
            max_request_headers: defaults::MAX_REQUEST_HEADERS,
            header_read_timeout: defaults::HEADER_READ_TIMEOUT,
            idle_timeout: defaults::IDLE_TIMEOUT,
            http2_max_concurrent_streams: defaults::HTTP2_MAX_CONCURRENT_STREAMS,
            max_connections: defaults::MAX_CONNECTIONS,
            max_request_body_bytes: defaults::MAX_REQUEST_BODY_BYTES,
        }
    }
}

/// How request paths are normalised before routing (README, "Paths"). The
/// route is chosen on the normalised path, and the upstream receives it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct PathNormalizationConfig {
    /// RFC 3986 dot-segment removal and decoding of percent-encoded
    /// unreserved characters.
    pub normalize_path: bool,
    /// `//` becomes `/`.
    pub merge_slashes: bool,
    pub escaped_slashes: EscapedSlashesAction,
    pub path_parameters: PathParametersAction,
}

impl Default for PathNormalizationConfig {
    fn default() -> Self {
        Self {
            normalize_path: defaults::NORMALIZE_PATH,
            merge_slashes: defaults::MERGE_SLASHES,
            escaped_slashes: EscapedSlashesAction::default(),
            path_parameters: PathParametersAction::default(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ServiceConfig {
    pub name: String,
    pub protocol: UpstreamProtocol,
    /// `None`: plain TCP to the endpoints.
    pub tls: Option<UpstreamTlsConfig>,
    #[serde(with = "humantime_serde_compat")]
    pub connect_timeout: Duration,
    pub load_balancer: LoadBalancerConfig,
    pub max_idle_per_endpoint: usize,
    #[serde(with = "humantime_serde_compat")]
    pub pool_idle_timeout: Duration,
    pub circuit_breaker: CircuitBreakerConfig,
    pub outlier_detection: Option<OutlierConfig>,
    pub health_check: Option<HealthCheckConfig>,
    /// Below this share of usable (healthy, not ejected) endpoints, every
    /// endpoint is used: better spread over all than overload the few.
    pub panic_threshold: f64,
    /// The gRPC statuses that make a call answered 200 a failure of this
    /// service, as a 5xx is (the canary's error rate counts them).
    pub grpc_error_codes: Vec<u32>,
    pub versions: Vec<VersionConfig>,
}

impl UpstreamProtocol {
    /// HTTP/2, in clear text (`h2c`) or over TLS (`h2`).
    pub fn is_http2(self) -> bool {
        matches!(self, Self::H2c | Self::H2)
    }
}

/// Ejects endpoints that keep failing (Envoy's outlier detection).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct OutlierConfig {
    /// Consecutive 5xx answers (serin's own 502/503/504 included).
    pub consecutive_5xx: Option<u32>,
    /// Consecutive 502, 503, 504 or local-origin failures.
    pub consecutive_gateway_errors: Option<u32>,
    /// Consecutive connect failures, resets and timeouts.
    pub consecutive_local_origin_failures: Option<u32>,
    /// How often an endpoint's ejection multiplier decays.
    #[serde(with = "humantime_serde_compat")]
    pub interval: Duration,
    /// Ejection time, times the number of ejections so far.
    #[serde(with = "humantime_serde_compat")]
    pub base_ejection_time: Duration,
    #[serde(with = "humantime_serde_compat")]
    pub max_ejection_time: Duration,
    /// At most this share of a version's endpoints is ejected at once (at
    /// least one may be, whatever the share).
    pub max_ejection_percent: f64,
}

/// Active HTTP health checks of every endpoint.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HealthCheckConfig {
    pub path: String,
    #[serde(with = "humantime_serde_compat")]
    pub interval: Duration,
    #[serde(with = "humantime_serde_compat")]
    pub timeout: Duration,
    pub healthy_threshold: u32,
    pub unhealthy_threshold: u32,
    #[serde(with = "humantime_serde_compat")]
    pub jitter: Duration,
}

/// Limits per service version; an overflow answers 503 at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct CircuitBreakerConfig {
    /// Upstream connections to the version, from every worker.
    pub max_connections: usize,
    /// Requests waiting for a connection while `max_connections` are open.
    pub max_pending_requests: usize,
    pub max_requests: usize,
    pub max_retries: usize,
}

impl Default for CircuitBreakerConfig {
    fn default() -> Self {
        Self {
            max_connections: defaults::CB_MAX_CONNECTIONS,
            max_pending_requests: defaults::CB_MAX_PENDING_REQUESTS,
            max_requests: defaults::CB_MAX_REQUESTS,
            max_retries: defaults::CB_MAX_RETRIES,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LoadBalancerConfig {
    pub policy: LbPolicy,
    /// For RingHash: the request header hashed to pick an endpoint.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[serde(serialize_with = "ser_opt_header")]
    pub hash_header: Option<HeaderName>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VersionConfig {
    pub name: String,
    /// `None`: endpoints come from discovery (the local runtime, Kubernetes).
    pub endpoints: Option<Vec<SocketAddr>>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RouteConfig {
    pub name: String,
    /// Listener names this route attaches to; empty means all.
    pub listeners: Vec<String>,
    pub hostnames: Vec<String>,
    pub rules: Vec<RuleConfig>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RuleConfig {
    pub name: Option<String>,
    /// ORed; an empty list matches every request (`PathPrefix /`).
    pub matches: Vec<MatchConfig>,
    pub filters: Vec<FilterConfig>,
    pub backends: Vec<BackendRefConfig>,
    /// backendRefs that cannot be served, each with its weight: the share
    /// of requests the weights give them is answered 500 (Gateway API). With
    /// no backends and none of these, every request gets 500.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub unresolved: Vec<UnresolvedBackendRef>,
    pub timeouts: TimeoutsConfig,
    pub retry: RetryConfig,
    pub fault: Option<FaultConfig>,
    /// Requests of this rule in flight at once; more get 503 at once.
    pub max_concurrent_requests: Option<usize>,
    pub rate_limit: Option<RateLimitConfig>,
    /// Largest request body for this rule (0: none); `None`: the
    /// listener's.
    pub max_request_body_bytes: Option<u64>,
    /// A client keeps its backend (version) and endpoint.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session_persistence: Option<SessionPersistenceConfig>,
}

impl RuleConfig {
    /// A rule for every request (`PathPrefix /`) to `backend` alone, with
    /// the default request timeout and nothing else: the one route of
    /// `serin proxy --upstream` and a sidecar's inbound rule to its app.
    pub fn catch_all(backend: BackendRefConfig) -> Self {
        Self {
            name: None,
            matches: vec![MatchConfig {
                path: PathMatch::PathPrefix(String::new()),
                headers: Vec::new(),
                query_params: Vec::new(),
                method: None,
                client_certificate: Vec::new(),
            }],
            filters: Vec::new(),
            backends: vec![backend],
            unresolved: Vec::new(),
            timeouts: TimeoutsConfig {
                request: Some(defaults::REQUEST_TIMEOUT),
                backend_request: None,
            },
            retry: RetryConfig::default(),
            fault: None,
            max_concurrent_requests: None,
            rate_limit: None,
            max_request_body_bytes: None,
            session_persistence: None,
        }
    }
}

/// The Gateway API's `sessionPersistence` (GEP-1619): the first answer
/// names the backend and endpoint in a cookie or header; later requests
/// that carry it go there while it is healthy and weighted, and until a
/// timeout ends the session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SessionPersistenceConfig {
    /// The cookie's or header's name.
    pub name: String,
    pub kind: SessionKind,
    /// A session ends this long after it began.
    #[serde(serialize_with = "ser_opt_duration")]
    pub absolute_timeout: Option<Duration>,
    /// A session ends after this long without a request.
    #[serde(serialize_with = "ser_opt_duration")]
    pub idle_timeout: Option<Duration>,
    /// The cookie outlives the browser session (`Max-Age` from
    /// `absoluteTimeout`); else it is a session cookie.
    pub permanent: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum SessionKind {
    Cookie,
    Header,
}

/// Requests per client per unit of time; over it, 429.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RateLimitConfig {
    pub requests: u32,
    #[serde(with = "humantime_serde_compat")]
    pub per: Duration,
    /// Requests a client may make at once after being quiet (local only).
    pub burst: u32,
    /// `None`: the client's address; else this header's value (requests
    /// without it share one bucket).
    #[serde(serialize_with = "ser_opt_header")]
    pub key_header: Option<HeaderName>,
    pub global: Option<GlobalRateLimitConfig>,
}

/// A fixed-window count per key in Redis, shared by every serin.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GlobalRateLimitConfig {
    pub redis: String,
    /// When Redis cannot answer: let requests through (true) or refuse them
    /// with 503 (false).
    pub fail_open: bool,
    #[serde(with = "humantime_serde_compat")]
    pub timeout: Duration,
}

/// Delay or abort a share of requests on purpose.
#[derive(Debug, Clone, Serialize)]
pub struct FaultConfig {
    /// Only requests matching every header match (none: every request).
    pub headers: Vec<ValueMatch>,
    pub delay: Option<(Duration, f64)>,
    pub abort: Option<(u16, f64)>,
}

#[derive(Debug, Clone, Serialize)]
pub struct MatchConfig {
    pub path: PathMatch,
    pub headers: Vec<ValueMatch>,
    pub query_params: Vec<ValueMatch>,
    #[serde(serialize_with = "ser_opt_display")]
    pub method: Option<Method>,
    /// Every one must hold for the verified client certificate; a request
    /// without one matches none.
    pub client_certificate: Vec<IdentityMatch>,
}

/// A condition on the verified client certificate.
#[derive(Debug, Clone, Serialize)]
pub struct IdentityMatch {
    pub field: IdentityField,
    pub value: StringMatch,
}

/// Which part of a client certificate a match reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum IdentityField {
    /// The subject, RFC 4514 form (`CN=client,O=Example`).
    Subject,
    /// Any URI subject alternative name (a SPIFFE id, say).
    Uri,
    /// Any DNS subject alternative name.
    Dns,
}

impl IdentityField {
    pub const NAMES: [&str; 3] = ["Subject", "URI", "DNS"];

    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "Subject" => Some(Self::Subject),
            "URI" => Some(Self::Uri),
            "DNS" => Some(Self::Dns),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub enum PathMatch {
    Exact(String),
    /// Stored without a trailing slash; matches whole path segments.
    PathPrefix(String),
    RegularExpression(#[serde(serialize_with = "ser_regex")] Regex),
}

#[derive(Debug, Clone, Serialize)]
pub struct ValueMatch {
    pub name: String,
    pub value: StringMatch,
}

#[derive(Debug, Clone, Serialize)]
pub enum StringMatch {
    Exact(String),
    RegularExpression(#[serde(serialize_with = "ser_regex")] Regex),
}

impl StringMatch {
    pub fn matches(&self, s: &str) -> bool {
        match self {
            Self::Exact(v) => v == s,
            Self::RegularExpression(r) => r.is_match(s),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub enum FilterConfig {
    RequestHeaderModifier(HeaderModifierConfig),
    ResponseHeaderModifier(HeaderModifierConfig),
    UrlRewrite(UrlRewriteConfig),
    RequestRedirect(RedirectConfig),
    ExternalAuth(ExternalAuthConfig),
    RequestMirror(MirrorConfig),
    Cors(CorsConfig),
    ApiKey(ApiKeyConfig),
    Jwt(JwtConfig),
    BasicAuth(BasicAuthConfig),
}

/// The JWT filter, checked: a key source, the claims a token must carry,
/// header names valid.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct JwtConfig {
    /// The `iss` a token must carry.
    pub issuer: String,
    /// A token's `aud` must name one of these; never empty.
    pub audiences: Vec<String>,
    pub jwks: JwksSource,
    /// Allowed clock skew for `exp` and `nbf`.
    pub leeway: Duration,
    /// Where the token is read; `None`: `Authorization: Bearer TOKEN`.
    #[serde(serialize_with = "ser_opt_header")]
    pub header: Option<HeaderName>,
    /// Claims set as request headers for the upstream (a client's own
    /// copies are removed first).
    pub claims_to_headers: Vec<ClaimToHeader>,
}

/// Where a JWT filter's keys come from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum JwksSource {
    /// Read when the snapshot is built (and checked by validation).
    File(PathBuf),
    /// Fetched in the background, again every `refresh_interval`.
    Url {
        url: String,
        refresh_interval: Duration,
    },
}

/// One claim copied to a request header.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ClaimToHeader {
    pub claim: String,
    #[serde(serialize_with = "ser_header")]
    pub header: HeaderName,
}

/// The BasicAuth filter, checked: every user of its htpasswd file has a
/// bcrypt hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BasicAuthConfig {
    /// The file the users were read from (what a rendered config names).
    pub htpasswd: PathBuf,
    pub realm: String,
    /// The users and their bcrypt hashes; never empty.
    pub users: Vec<BasicAuthUser>,
    /// Set to the user's name on the way upstream (a client's own copy is
    /// removed first); `None`: not sent.
    #[serde(serialize_with = "ser_opt_header")]
    pub forward_user_header: Option<HeaderName>,
}

/// One user of an htpasswd file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BasicAuthUser {
    pub name: String,
    /// `$2y$`, `$2b$` or `$2a$` bcrypt.
    pub bcrypt: String,
}

/// The APIKey filter, checked: header names valid, every hash 32 bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ApiKeyConfig {
    /// The request header that carries the key.
    #[serde(serialize_with = "ser_header")]
    pub header: HeaderName,
    /// The accepted keys; never empty.
    pub keys: Vec<ApiKeyEntryConfig>,
    /// Set to the matched key's name on the way upstream (a client's own
    /// copy is removed first); `None`: not sent.
    #[serde(serialize_with = "ser_opt_header")]
    pub forward_key_name_header: Option<HeaderName>,
}

/// One accepted API key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ApiKeyEntryConfig {
    pub name: String,
    /// SHA-256 of the key.
    pub sha256: [u8; 32],
}

/// The Gateway API's CORS filter, checked: origins parsed, methods and
/// header names valid.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CorsConfig {
    pub allow_origins: Vec<OriginPattern>,
    pub allow_methods: CorsList<Method>,
    pub allow_headers: CorsList<HeaderName>,
    pub expose_headers: CorsList<HeaderName>,
    /// Seconds a browser may cache a preflight's answer.
    pub max_age: u32,
    pub allow_credentials: bool,
}

/// A CORS list: `*` (everything), or the names given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CorsList<T> {
    Any,
    Only(Vec<T>),
}

impl<T: AsRef<str>> Serialize for CorsList<T> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Any => s.collect_seq(["*"]),
            Self::Only(list) => s.collect_seq(list.iter().map(AsRef::as_ref)),
        }
    }
}

/// One entry of `allowOrigins`: `*`, or `SCHEME://HOST[:PORT]` whose host
/// may start with `*` (any run of characters, dots included, to its left).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(into = "String")]
pub enum OriginPattern {
    Any,
    Origin {
        /// `http` or `https`, lower case.
        scheme: String,
        /// Lower case; for a wildcard host, what follows the `*`.
        host: String,
        /// The host started with `*`.
        wildcard: bool,
        /// The given port, or the scheme's (80, 443).
        port: u16,
    },
}

impl From<OriginPattern> for String {
    fn from(p: OriginPattern) -> String {
        match p {
            OriginPattern::Any => "*".into(),
            OriginPattern::Origin {
                scheme,
                host,
                wildcard,
                port,
            } => format!(
                "{scheme}://{}{host}:{port}",
                if wildcard { "*" } else { "" }
            ),
        }
    }
}

/// Shadow traffic: a share of requests is copied to another backend.
#[derive(Debug, Clone, Serialize)]
pub struct MirrorConfig {
    pub service: String,
    pub version: String,
    /// The share mirrored, 0 to 100 (the file's `percent`, or its
    /// `fraction` as a percentage).
    pub percent: f64,
}

/// Ask an auth service before forwarding (Gateway API ExternalAuth, HTTP).
#[derive(Debug, Clone, Serialize)]
pub struct ExternalAuthConfig {
    pub service: String,
    pub version: String,
    /// Prefix of the path the auth service is asked on (the request's path
    /// follows it).
    pub path_prefix: String,
    /// Request headers sent to the auth service (besides Host and the
    /// method and path, which it always gets).
    #[serde(serialize_with = "ser_headers")]
    pub allowed_headers: Vec<HeaderName>,
    /// Headers of an allowing answer copied into the upstream request.
    #[serde(serialize_with = "ser_headers")]
    pub allowed_response_headers: Vec<HeaderName>,
    #[serde(with = "humantime_serde_compat")]
    pub timeout: Duration,
    pub fail_open: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct HeaderModifierConfig {
    #[serde(serialize_with = "ser_header_pairs")]
    pub set: Vec<(HeaderName, HeaderValue)>,
    #[serde(serialize_with = "ser_header_pairs")]
    pub add: Vec<(HeaderName, HeaderValue)>,
    #[serde(serialize_with = "ser_headers")]
    pub remove: Vec<HeaderName>,
}

#[derive(Debug, Clone, Serialize)]
pub enum PathModifier {
    ReplaceFullPath(String),
    ReplacePrefixMatch(String),
}

#[derive(Debug, Clone, Serialize)]
pub struct UrlRewriteConfig {
    pub hostname: Option<String>,
    pub path: Option<PathModifier>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RedirectConfig {
    pub scheme: Option<String>,
    pub hostname: Option<String>,
    pub path: Option<PathModifier>,
    pub port: Option<u16>,
    #[serde(serialize_with = "ser_status")]
    pub status: StatusCode,
}

/// A backendRef that names nothing serin can send to (the Gateway API's
/// `ResolvedRefs: False`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UnresolvedBackendRef {
    pub name: String,
    pub weight: u32,
    pub reason: UnresolvedReason,
}

/// Why a backendRef cannot be served, with the Gateway API's reason names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum UnresolvedReason {
    /// Not a core Service (`group: ""`, `kind: Service`).
    InvalidKind { group: String, kind: String },
    /// No such service (or version): only for routes from HTTPRoutes, where
    /// a file's typo is refused.
    BackendNotFound,
}

impl UnresolvedReason {
    /// The Gateway API's reason for the `ResolvedRefs` condition.
    pub fn gateway_api_reason(&self) -> &'static str {
        match self {
            Self::InvalidKind { .. } => "InvalidKind",
            Self::BackendNotFound => "BackendNotFound",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BackendRefConfig {
    pub service: String,
    pub version: String,
    pub weight: u32,
    /// What the Gateway API's `backendRefs[].filters` do to the requests
    /// sent to this backend and to its answers.
    #[serde(skip_serializing_if = "BackendFilters::is_empty")]
    pub filters: BackendFilters,
}

/// A backendRef's own filters: header modifiers, the ones the Gateway API
/// defines for a backend (README, "Per-backend filters"). They run after
/// the rule's: on the request once this backend is picked, on the answer
/// before the rule's response filters.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct BackendFilters {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_headers: Option<HeaderModifierConfig>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response_headers: Option<HeaderModifierConfig>,
}

impl BackendFilters {
    pub fn is_empty(&self) -> bool {
        self.request_headers.is_none() && self.response_headers.is_none()
    }
}

impl BackendRefConfig {
    /// `service/version`, the key used by weight changes and metrics.
    pub fn key(&self) -> String {
        format!("{}/{}", self.service, self.version)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct TimeoutsConfig {
    #[serde(serialize_with = "ser_opt_duration")]
    pub request: Option<Duration>,
    #[serde(serialize_with = "ser_opt_duration")]
    pub backend_request: Option<Duration>,
}

/// The gRPC status codes' names (grpc/doc/statuscodes.md), by number: the
/// metric labels, and in lower case with hyphens the names `grpcCodes`
/// takes (`resource-exhausted`, as Envoy's `retry_on`).
pub const GRPC_CODE_NAMES: [&str; 17] = [
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RetryConfig {
    /// Retries after the first try (Gateway API's `attempts`).
    pub attempts: u32,
    pub codes: Vec<u16>,
    /// gRPC status codes (numbers) retried when a call's answer carries one
    /// in its head (README, "gRPC").
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub grpc_codes: Vec<u32>,
    #[serde(with = "humantime_serde_compat")]
    pub backoff: Duration,
    /// Also retry non-idempotent methods after the request may have reached
    /// the upstream. Off by default: a POST must not be applied twice.
    pub unsafe_methods: bool,
    /// Whether the file configured retries at all (else only connect
    /// failures are retried).
    pub configured: bool,
    /// Limits retries that may reach the upstream (not those of requests
    /// that provably never did).
    pub budget: RetryBudgetConfig,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct RetryBudgetConfig {
    /// Retries allowed per 100 requests.
    pub percent: f64,
    pub min_retries_per_second: u32,
    #[serde(with = "humantime_serde_compat")]
    pub ttl: Duration,
}

impl Default for RetryBudgetConfig {
    fn default() -> Self {
        Self {
            percent: defaults::RETRY_BUDGET_PERCENT,
            min_retries_per_second: defaults::RETRY_BUDGET_MIN_PER_SECOND,
            ttl: defaults::RETRY_BUDGET_TTL,
        }
    }
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            attempts: defaults::CONNECT_FAILURE_RETRIES,
            codes: Vec::new(),
            grpc_codes: Vec::new(),
            backoff: defaults::RETRY_BACKOFF,
            unsafe_methods: false,
            configured: false,
            budget: RetryBudgetConfig::default(),
        }
    }
}

fn ser_regex<S: serde::Serializer>(r: &Regex, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(r.as_str())
}

fn ser_opt_display<S: serde::Serializer, T: std::fmt::Display>(
    v: &Option<T>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match v {
        Some(v) => s.collect_str(v),
        None => s.serialize_none(),
    }
}

fn ser_header<S: serde::Serializer>(v: &HeaderName, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(v.as_str())
}

fn ser_opt_header<S: serde::Serializer>(v: &Option<HeaderName>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(v) => s.serialize_str(v.as_str()),
        None => s.serialize_none(),
    }
}

fn ser_status<S: serde::Serializer>(v: &StatusCode, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u16(v.as_u16())
}

fn ser_opt_duration<S: serde::Serializer>(v: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(d) => s.collect_str(&humantime::format_duration(*d)),
        None => s.serialize_none(),
    }
}

fn ser_header_pairs<S: serde::Serializer>(
    v: &[(HeaderName, HeaderValue)],
    s: S,
) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeSeq;
    let mut seq = s.serialize_seq(Some(v.len()))?;
    for (n, val) in v {
        seq.serialize_element(&(n.as_str(), val.to_str().unwrap_or("<binary>")))?;
    }
    seq.end()
}

fn ser_headers<S: serde::Serializer>(v: &[HeaderName], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(v.iter().map(HeaderName::as_str))
}

/// Durations shown as `250ms`, `5s` in the effective config.
mod humantime_serde_compat {
    use std::time::Duration;

    pub fn serialize<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&humantime::format_duration(*d))
    }
}
