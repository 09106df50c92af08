//! The proxy config file as written: HTTPRoute words for routing, Envoy
//! meanings for upstream settings. Decoded with every problem collected; see
//! [`super::validate`] for the checks that need the whole file.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use crate::decode::Spanned;
use crate::{config_enum, config_struct};

config_struct! {
    /// The whole proxy file.
    pub struct Config {
        admin: Option<Admin> = "admin",
        access_log: Option<AccessLog> = "accessLog",
        tracing: Option<Tracing> = "tracing",
        workers: Option<Spanned<usize>> = "workers",
        drain_timeout: Option<Duration> = "drainTimeout",
        listeners: Vec<Listener> = "listeners",
        services: Vec<Service> = "services",
        routes: Routes = "routes",
        discovery: Option<Discovery> = "discovery",
    }
}

config_enum! {
    /// Where endpoints of versions without static `endpoints` come from.
    /// Without the key: the local runtime (`serin up`) when there is one.
    pub enum Discovery { Kubernetes = "kubernetes" }
    default = Kubernetes
}

/// `routes:` is either the routes themselves or `kubernetes`: routes and
/// weights from HTTPRoute objects.
#[derive(Debug, Clone)]
pub enum Routes {
    List(Vec<Route>),
    Kubernetes(crate::error::Span),
}

impl Default for Routes {
    fn default() -> Self {
        Self::List(Vec::new())
    }
}

impl Routes {
    /// The routes written in the file (none for `kubernetes`).
    pub fn list(&self) -> &[Route] {
        match self {
            Self::List(routes) => routes,
            Self::Kubernetes(_) => &[],
        }
    }
}

impl crate::decode::Decode for Routes {
    fn decode(
        node: crate::decode::Node<'_>,
        problems: &mut crate::error::Problems,
    ) -> Option<Self> {
        if node.is_sequence() || node.is_null() {
            return Vec::<Route>::decode(node, problems).map(Self::List);
        }
        match node.text(problems, "a list of routes or `kubernetes`")? {
            "kubernetes" => Some(Self::Kubernetes(node.span())),
            other => {
                node.report(
                    problems,
                    format!(
                        "expected a list of routes or `kubernetes` (routes from HTTPRoute objects), found `{other}`"
                    ),
                );
                None
            }
        }
    }
}

config_struct! {
    pub struct Admin {
        address: Option<Spanned<SocketAddr>> = "address",
        token: Option<String> = "token",
        metrics_address: Option<Spanned<SocketAddr>> = "metricsAddress",
    }
}

config_enum! {
    pub enum LogFormat { Json = "json", Text = "text" }
    default = Json
}

config_struct! {
    pub struct AccessLog {
        enabled: Option<bool> = "enabled",
        format: LogFormat = "format",
    }
}

config_struct! {
    /// Distributed tracing: W3C trace context, spans exported over OTLP/HTTP
    /// (the names of the OpenTelemetry SDK's environment variables).
    pub struct Tracing {
        enabled: Option<bool> = "enabled",
        endpoint: Option<Spanned<String>> = "endpoint",
        service_name: Option<Spanned<String>> = "serviceName",
        sampling_ratio: Option<Spanned<f64>> = "samplingRatio",
        headers: Option<BTreeMap<String, Spanned<String>>> = "headers",
    }
}

config_struct! {
    pub struct Listener {
        name: Spanned<String> = "name" [required],
        address: Spanned<String> = "address" [required],
        tls: Option<Tls> = "tls",
        limits: Option<Limits> = "limits",
        path_normalization: Option<PathNormalization> = "pathNormalization",
        compression: Option<Compression> = "compression",
        client_address: Option<ClientAddress> = "clientAddress",
        proxy_protocol: Option<ProxyProtocol> = "proxyProtocol",
    }
}

config_struct! {
    /// The load balancers in front of a listener that open each connection
    /// with a PROXY protocol header (HAProxy's v1 or v2) naming the client.
    pub struct ProxyProtocol {
        /// Peers that must send the header; others connect as clients.
        trusted_cidrs: Vec<Spanned<String>> = "trustedCidrs",
    }
}

config_struct! {
    /// Which proxies in front of a listener are trusted to say who the
    /// client is in `X-Forwarded-For`; without the section, none are.
    pub struct ClientAddress {
        /// Proxies in front counted from serin (Envoy's
        /// `xff_num_trusted_hops`).
        trusted_hops: Option<Spanned<u32>> = "trustedHops",
        /// Proxies known by address (NGINX's `set_real_ip_from` with
        /// `real_ip_recursive on`).
        trusted_cidrs: Vec<Spanned<String>> = "trustedCidrs",
    }
}

config_enum! {
    /// A response content coding serin can apply (RFC 9110 §8.4.1 names).
    pub enum ContentCoding { Zstd = "zstd", Br = "br", Gzip = "gzip" }
    default = Gzip
}

config_struct! {
    /// Response compression on a listener, by the client's
    /// `Accept-Encoding`; the section's presence turns it on.
    pub struct Compression {
        encodings: Vec<Spanned<ContentCoding>> = "encodings",
        min_bytes: Option<Spanned<u64>> = "minBytes",
        content_types: Vec<Spanned<String>> = "contentTypes",
    }
}

config_struct! {
    /// How a listener normalises request paths before routing; Envoy's
    /// HTTP connection manager options, with serin's safer defaults.
    pub struct PathNormalization {
        normalize_path: Option<bool> = "normalizePath",
        merge_slashes: Option<bool> = "mergeSlashes",
        escaped_slashes: Option<EscapedSlashesAction> = "escapedSlashes",
        path_parameters: Option<PathParametersAction> = "pathParameters",
    }
}

config_enum! {
    /// What to do with `%2F` and `%5C` (encoded `/` and `\`) and a raw `\`
    /// in a path: Envoy's `path_with_escaped_slashes_action`.
    pub enum EscapedSlashesAction {
        RejectRequest = "RejectRequest",
        UnescapeAndRedirect = "UnescapeAndRedirect",
        UnescapeAndForward = "UnescapeAndForward",
        KeepUnchanged = "KeepUnchanged",
    }
    default = RejectRequest
}

config_enum! {
    /// What to do with a `;` in a path segment (`/admin;x/`, `/..;/`),
    /// which Java servlet containers strip before they route.
    pub enum PathParametersAction {
        RejectRequest = "RejectRequest",
        KeepUnchanged = "KeepUnchanged",
    }
    default = RejectRequest
}

config_struct! {
    /// A listener's TLS: certificates chosen by SNI, a default one, and
    /// client-certificate validation.
    pub struct Tls {
        /// The default certificate: served when the client names no host
        /// or one no entry of `certificates` has.
        certificate: Option<Spanned<String>> = "certificate",
        key: Option<Spanned<String>> = "key",
        certificates: Vec<SniCertificate> = "certificates",
        client_validation: Option<ClientValidation> = "clientValidation",
    }
}

config_struct! {
    /// A certificate served for the host names a client asks for (SNI).
    pub struct SniCertificate {
        certificate: Spanned<String> = "certificate" [required],
        key: Spanned<String> = "key" [required],
        /// Exact names and `*.example.com` wildcards; without it, the DNS
        /// names of the certificate's subject alternative names.
        hostnames: Option<Vec<Spanned<String>>> = "hostnames",
    }
}

config_enum! {
    /// Whether a client must present a certificate (`required`), or may
    /// (`optional`: one presented must still be valid).
    pub enum ClientValidationMode { Required = "required", Optional = "optional" }
    default = Required
}

config_struct! {
    /// Client certificates checked against a CA bundle.
    pub struct ClientValidation {
        mode: ClientValidationMode = "mode",
        ca_certificates: Spanned<String> = "caCertificates" [required],
    }
}

config_struct! {
    /// TLS from serin to a service's endpoints.
    pub struct UpstreamTls {
        /// The name sent as SNI and checked in the endpoint's certificate.
        sni: Option<Spanned<String>> = "sni",
        /// Without it: the system's trust store.
        ca_certificates: Option<Spanned<String>> = "caCertificates",
        /// A client certificate serin presents (with `key`).
        certificate: Option<Spanned<String>> = "certificate",
        key: Option<Spanned<String>> = "key",
    }
}

config_struct! {
    /// Per-listener protection against slow or hostile clients.
    pub struct Limits {
        max_request_header_bytes: Option<Spanned<usize>> = "maxRequestHeaderBytes",
        max_request_headers: Option<Spanned<usize>> = "maxRequestHeaders",
        header_read_timeout: Option<Duration> = "headerReadTimeout",
        idle_timeout: Option<Duration> = "idleTimeout",
        http2_max_concurrent_streams: Option<Spanned<u32>> = "http2MaxConcurrentStreams",
        max_connections: Option<Spanned<usize>> = "maxConnections",
        max_request_body_bytes: Option<Spanned<u64>> = "maxRequestBodyBytes",
    }
}

config_enum! {
    /// How serin speaks to a service's endpoints.
    pub enum UpstreamProtocol { Http1 = "http1", H2c = "h2c", H2 = "h2" }
    default = Http1
}

config_enum! {
    pub enum LbPolicy {
        LeastRequest = "LeastRequest",
        RoundRobin = "RoundRobin",
        Random = "Random",
        RingHash = "RingHash",
    }
    default = LeastRequest
}

config_struct! {
    pub struct LoadBalancer {
        policy: LbPolicy = "type" [tag],
        hash_header: Option<Spanned<String>> = "hashHeader",
    }
}

config_struct! {
    pub struct Pool {
        max_idle_per_endpoint: Option<usize> = "maxIdlePerEndpoint",
        idle_timeout: Option<Duration> = "idleTimeout",
    }
}

config_struct! {
    pub struct Service {
        name: Spanned<String> = "name" [required],
        protocol: UpstreamProtocol = "protocol",
        tls: Option<UpstreamTls> = "tls",
        connect_timeout: Option<Duration> = "connectTimeout",
        load_balancer: Option<LoadBalancer> = "loadBalancer",
        pool: Option<Pool> = "pool",
        circuit_breaker: Option<CircuitBreaker> = "circuitBreaker",
        outlier_detection: Option<OutlierDetection> = "outlierDetection",
        health_check: Option<HealthCheck> = "healthCheck",
        panic_threshold: Option<Spanned<f64>> = "panicThreshold",
        grpc_error_codes: Option<Vec<Spanned<String>>> = "grpcErrorCodes",
        versions: Vec<Version> = "versions" [required],
    }
}

config_struct! {
    pub struct Version {
        name: Spanned<String> = "name" [required],
        /// Static endpoints; absent means "found by discovery".
        endpoints: Option<Vec<Spanned<String>>> = "endpoints",
    }
}

config_struct! {
    /// A route in the shape of a Gateway API HTTPRoute's spec.
    pub struct Route {
        name: Spanned<String> = "name" [required],
        parent_refs: Vec<ParentRef> = "parentRefs",
        hostnames: Vec<Spanned<String>> = "hostnames",
        rules: Vec<Rule> = "rules" [required],
    }
}

config_struct! {
    pub struct ParentRef {
        name: Spanned<String> = "name" [required],
    }
}

config_struct! {
    pub struct Rule {
        name: Option<String> = "name",
        matches: Vec<Match> = "matches",
        filters: Vec<Filter> = "filters",
        backend_refs: Vec<BackendRef> = "backendRefs",
        timeouts: Option<Timeouts> = "timeouts",
        retry: Option<Retry> = "retry",
        fault: Option<Fault> = "fault",
        max_concurrent_requests: Option<Spanned<usize>> = "maxConcurrentRequests",
        rate_limit: Option<RateLimit> = "rateLimit",
        max_request_body_bytes: Option<Spanned<u64>> = "maxRequestBodyBytes",
        session_persistence: Option<SessionPersistence> = "sessionPersistence",
    }
}

config_enum! {
    pub enum SessionType { Cookie = "Cookie", Header = "Header" }
    default = Cookie
}

config_enum! {
    pub enum CookieLifetime { Session = "Session", Permanent = "Permanent" }
    default = Session
}

config_struct! {
    /// The Gateway API's `sessionPersistence` (GEP-1619): a client keeps
    /// the backend and endpoint it got first.
    pub struct SessionPersistence {
        session_name: Option<Spanned<String>> = "sessionName",
        kind: SessionType = "type",
        absolute_timeout: Option<Duration> = "absoluteTimeout",
        idle_timeout: Option<Duration> = "idleTimeout",
        cookie_config: Option<CookieConfig> = "cookieConfig",
    }
}

config_struct! {
    pub struct CookieConfig {
        lifetime_type: CookieLifetime = "lifetimeType",
    }
}

config_enum! {
    pub enum RateLimitUnit { Second = "second", Minute = "minute", Hour = "hour" }
    default = Second
}

config_enum! {
    pub enum RateLimitKeyType { ClientAddress = "ClientAddress", Header = "Header" }
    default = ClientAddress
}

config_struct! {
    /// Token buckets per client (address or a header's value); `global`
    /// shares the count between every serin through Redis.
    pub struct RateLimit {
        requests: Spanned<u32> = "requests" [required],
        unit: RateLimitUnit = "unit",
        burst: Option<Spanned<u32>> = "burst",
        key: Option<RateLimitKey> = "key",
        global: Option<GlobalRateLimit> = "global",
    }
}

config_struct! {
    pub struct RateLimitKey {
        kind: RateLimitKeyType = "type" [tag],
        name: Option<Spanned<String>> = "name",
    }
}

config_struct! {
    pub struct GlobalRateLimit {
        redis: Spanned<String> = "redis" [required],
        fail_open: Option<bool> = "failOpen",
        timeout: Option<Duration> = "timeout",
    }
}

config_struct! {
    /// Fault injection (after Istio's): delay or abort a share of requests,
    /// or only those carrying a header, to test failure handling on purpose.
    pub struct Fault {
        delay: Option<FaultDelay> = "delay",
        abort: Option<FaultAbort> = "abort",
        headers: Vec<ValueMatch> = "headers",
    }
}

config_struct! {
    pub struct FaultDelay {
        fixed_delay: std::time::Duration = "fixedDelay" [required],
        percent: Option<Spanned<f64>> = "percent",
    }
}

config_struct! {
    pub struct FaultAbort {
        status: Spanned<u16> = "httpStatus" [required],
        percent: Option<Spanned<f64>> = "percent",
    }
}

config_struct! {
    /// Passive health: Envoy's outlier detection, per endpoint.
    pub struct OutlierDetection {
        consecutive_5xx: Option<Spanned<u32>> = "consecutive5xx",
        consecutive_gateway_errors: Option<Spanned<u32>> = "consecutiveGatewayErrors",
        consecutive_local_origin_failures: Option<Spanned<u32>> = "consecutiveLocalOriginFailures",
        interval: Option<std::time::Duration> = "interval",
        base_ejection_time: Option<std::time::Duration> = "baseEjectionTime",
        max_ejection_time: Option<std::time::Duration> = "maxEjectionTime",
        max_ejection_percent: Option<Spanned<f64>> = "maxEjectionPercent",
    }
}

config_struct! {
    /// Active health checks over HTTP.
    pub struct HealthCheck {
        path: Spanned<String> = "path" [required],
        interval: Option<std::time::Duration> = "interval",
        timeout: Option<std::time::Duration> = "timeout",
        healthy_threshold: Option<Spanned<u32>> = "healthyThreshold",
        unhealthy_threshold: Option<Spanned<u32>> = "unhealthyThreshold",
        jitter: Option<std::time::Duration> = "jitter",
    }
}

config_struct! {
    /// Envoy's circuit breaker thresholds, per service version.
    pub struct CircuitBreaker {
        max_connections: Option<Spanned<usize>> = "maxConnections",
        max_pending_requests: Option<Spanned<usize>> = "maxPendingRequests",
        max_requests: Option<Spanned<usize>> = "maxRequests",
        max_retries: Option<Spanned<usize>> = "maxRetries",
    }
}

config_enum! {
    pub enum PathMatchType {
        Exact = "Exact",
        PathPrefix = "PathPrefix",
        RegularExpression = "RegularExpression",
    }
    default = PathPrefix
}

config_enum! {
    pub enum ValueMatchType { Exact = "Exact", RegularExpression = "RegularExpression" }
    default = Exact
}

config_enum! {
    pub enum FilterType {
        RequestHeaderModifier = "RequestHeaderModifier",
        ResponseHeaderModifier = "ResponseHeaderModifier",
        UrlRewrite = "URLRewrite",
        RequestRedirect = "RequestRedirect",
        ExternalAuth = "ExternalAuth",
        RequestMirror = "RequestMirror",
        Cors = "CORS",
        ApiKey = "APIKey",
        Jwt = "JWT",
        BasicAuth = "BasicAuth",
    }
    default = RequestHeaderModifier
}

config_enum! {
    pub enum PathModifierType {
        ReplaceFullPath = "ReplaceFullPath",
        ReplacePrefixMatch = "ReplacePrefixMatch",
    }
    default = ReplaceFullPath
}

config_struct! {
    pub struct Match {
        path: Option<PathMatch> = "path",
        headers: Vec<ValueMatch> = "headers",
        query_params: Vec<ValueMatch> = "queryParams",
        method: Option<Spanned<String>> = "method",
        /// serin: the verified client certificate (`name`: `Subject`,
        /// `URI` or `DNS`), as `headers` are matched.
        client_certificate: Vec<ValueMatch> = "clientCertificate",
    }
}

config_struct! {
    pub struct PathMatch {
        kind: PathMatchType = "type" [tag],
        value: Spanned<String> = "value" [required],
    }
}

config_struct! {
    /// A header or query parameter match.
    pub struct ValueMatch {
        kind: ValueMatchType = "type" [tag],
        name: Spanned<String> = "name" [required],
        value: Spanned<String> = "value" [required],
    }
}

config_struct! {
    pub struct Filter {
        kind: FilterType = "type" [required tag],
        request_header_modifier: Option<HeaderModifier> = "requestHeaderModifier",
        response_header_modifier: Option<HeaderModifier> = "responseHeaderModifier",
        url_rewrite: Option<UrlRewrite> = "urlRewrite",
        request_redirect: Option<RequestRedirect> = "requestRedirect",
        external_auth: Option<ExternalAuth> = "externalAuth",
        request_mirror: Option<RequestMirror> = "requestMirror",
        cors: Option<Cors> = "cors",
        api_key: Option<ApiKey> = "apiKey",
        jwt: Option<Jwt> = "jwt",
        basic_auth: Option<BasicAuth> = "basicAuth",
    }
}

config_struct! {
    /// serin: requests must carry a JWT signed by a key of the JWKS, for
    /// the issuer and one of the audiences.
    pub struct Jwt {
        issuer: Spanned<String> = "issuer" [required],
        audiences: Vec<Spanned<String>> = "audiences",
        jwks: Jwks = "jwks" [required],
        leeway: Option<Duration> = "leeway",
        header: Option<Spanned<String>> = "header",
        claims_to_headers: Vec<ClaimToHeader> = "claimsToHeaders",
    }
}

config_struct! {
    /// Exactly one of `file` and `url`.
    pub struct Jwks {
        file: Option<Spanned<String>> = "file",
        url: Option<Spanned<String>> = "url",
        refresh_interval: Option<Duration> = "refreshInterval",
    }
}

config_struct! {
    pub struct ClaimToHeader {
        claim: Spanned<String> = "claim" [required],
        header: Spanned<String> = "header" [required],
    }
}

config_struct! {
    /// serin: requests must carry the user name and password of a user of
    /// an htpasswd file (bcrypt hashes).
    pub struct BasicAuth {
        htpasswd: Spanned<String> = "htpasswd" [required],
        realm: Option<Spanned<String>> = "realm",
        forward_user_header: Option<Spanned<String>> = "forwardUserHeader",
    }
}

config_struct! {
    /// serin: requests must carry one of the named keys in a header; keys
    /// are given as SHA-256 hashes, never in the clear.
    pub struct ApiKey {
        header: Option<Spanned<String>> = "header",
        keys: Vec<ApiKeyEntry> = "keys",
        /// Instead of `keys`: a file of `name sha256hex` lines.
        keys_file: Option<Spanned<String>> = "keysFile",
        forward_key_name_header: Option<Spanned<String>> = "forwardKeyNameHeader",
    }
}

config_struct! {
    /// One accepted key: a name (for logs and the upstream) and the
    /// lower-case hex SHA-256 of the key.
    pub struct ApiKeyEntry {
        name: Spanned<String> = "name" [required],
        sha256: Spanned<String> = "sha256" [required],
    }
}

config_struct! {
    /// The Gateway API's CORS filter (v1.5): which origins may read the
    /// answers, and what a preflight allows.
    pub struct Cors {
        allow_origins: Vec<Spanned<String>> = "allowOrigins",
        allow_methods: Vec<Spanned<String>> = "allowMethods",
        allow_headers: Vec<Spanned<String>> = "allowHeaders",
        expose_headers: Vec<Spanned<String>> = "exposeHeaders",
        max_age: Option<Spanned<u32>> = "maxAge",
        allow_credentials: Option<bool> = "allowCredentials",
    }
}

config_struct! {
    /// Gateway API's RequestMirror: a copy of the request goes to another
    /// backend; its answer is compared with the primary's and discarded.
    pub struct RequestMirror {
        backend_ref: BackendRef = "backendRef" [required],
        percent: Option<Spanned<f64>> = "percent",
        fraction: Option<Fraction> = "fraction",
    }
}

config_struct! {
    /// Gateway API v1.2's share as a fraction: `numerator / denominator`
    /// (denominator 100 when absent), instead of `percent`.
    pub struct Fraction {
        numerator: Spanned<u32> = "numerator" [required],
        denominator: Option<Spanned<u32>> = "denominator",
    }
}

config_struct! {
    /// The Gateway API's ExternalAuth filter (HTTP): the auth service is
    /// asked first.
    pub struct ExternalAuth {
        protocol: Option<Spanned<String>> = "protocol",
        backend_ref: BackendRef = "backendRef" [required],
        http: Option<ExternalAuthHttp> = "http",
        /// serin: how long the auth service may take (default 1s).
        timeout: Option<std::time::Duration> = "timeout",
        /// serin: let requests through when the auth service cannot answer
        /// (default false: fail closed).
        fail_open: Option<bool> = "failOpen",
    }
}

config_struct! {
    pub struct ExternalAuthHttp {
        path: Option<Spanned<String>> = "path",
        allowed_headers: Vec<Spanned<String>> = "allowedHeaders",
        allowed_response_headers: Vec<Spanned<String>> = "allowedResponseHeaders",
    }
}

config_struct! {
    pub struct HeaderModifier {
        set: Vec<HeaderValue> = "set",
        add: Vec<HeaderValue> = "add",
        remove: Vec<Spanned<String>> = "remove",
    }
}

config_struct! {
    pub struct HeaderValue {
        name: Spanned<String> = "name" [required],
        value: Spanned<String> = "value" [required],
    }
}

config_struct! {
    pub struct PathModifier {
        kind: PathModifierType = "type" [required tag],
        replace_full_path: Option<Spanned<String>> = "replaceFullPath",
        replace_prefix_match: Option<Spanned<String>> = "replacePrefixMatch",
    }
}

config_struct! {
    pub struct UrlRewrite {
        hostname: Option<Spanned<String>> = "hostname",
        path: Option<PathModifier> = "path",
    }
}

config_struct! {
    pub struct RequestRedirect {
        scheme: Option<Spanned<String>> = "scheme",
        hostname: Option<Spanned<String>> = "hostname",
        path: Option<PathModifier> = "path",
        port: Option<u16> = "port",
        status_code: Option<Spanned<u16>> = "statusCode",
    }
}

config_struct! {
    /// A backend: a service (and version) of the file. `group` and `kind`
    /// are the Gateway API's; only a core Service (`group: ""`, `kind:
    /// Service`, the default) is one.
    pub struct BackendRef {
        group: Option<Spanned<String>> = "group",
        kind: Option<Spanned<String>> = "kind",
        name: Spanned<String> = "name" [required],
        version: Option<Spanned<String>> = "version",
        weight: Option<Spanned<u32>> = "weight",
        /// The Gateway API's per-backend filters (header modifiers).
        filters: Vec<Filter> = "filters",
    }
}

config_struct! {
    pub struct Timeouts {
        request: Option<Duration> = "request",
        backend_request: Option<Duration> = "backendRequest",
    }
}

config_struct! {
    pub struct Retry {
        attempts: Option<Spanned<u32>> = "attempts",
        codes: Vec<Spanned<u16>> = "codes",
        /// serin: gRPC statuses (`unavailable`, `resource-exhausted`, …)
        /// of trailers-only answers that are retried, as Envoy's `retry_on`.
        grpc_codes: Vec<Spanned<String>> = "grpcCodes",
        backoff: Option<Duration> = "backoff",
        unsafe_methods: Option<bool> = "unsafeMethods",
        budget: Option<RetryBudget> = "budget",
    }
}

config_struct! {
    /// Linkerd's retry budget: retries may add `percent` of the requests of
    /// the last `ttl`, plus `minRetriesPerSecond`.
    pub struct RetryBudget {
        percent: Option<Spanned<f64>> = "percent",
        min_retries_per_second: Option<Spanned<u32>> = "minRetriesPerSecond",
        ttl: Option<Spanned<Duration>> = "ttl",
    }
}

/// Weight overrides kept in the state file: route name → rule index →
/// backend ("service/version") → weight.
pub type WeightOverrides = BTreeMap<String, BTreeMap<usize, BTreeMap<String, u32>>>;
