//! The request path, in order: strict checks → route lookup → request
//! filters → weighted backend pick → endpoint pick → forward on a pooled
//! connection with deadlines → retry where safe → response filters →
//! metrics and access log.

use std::cell::Cell;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use http_body::Body;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use serin_config::proxy::{FilterConfig, UpstreamProtocol, defaults};

use crate::balance;
use crate::body::{ReplayBody, ResponseBody};
use crate::endpoints::Endpoint;
use crate::filters;
use crate::headers;
use crate::metrics::RejectLabels;
use crate::outlier::{self, Outcome};
use crate::pool::SendError;
use crate::ratelimit;
use crate::resilience;
use crate::server::WorkerCtx;
use crate::snapshot::{CompiledBackendRef, CompiledRule};
use crate::strict::{self, ConnFlags};
use crate::telemetry::RequestTrace;

/// What the request path knows of the client connection.
pub struct ConnInfo {
    pub listener: Arc<str>,
    pub remote: SocketAddr,
    pub tls: bool,
    pub flags: Arc<ConnFlags>,
    pub requests: Cell<u64>,
}

/// A response serin makes itself, with a short plain-text reason.
pub(crate) fn local(status: StatusCode, reason: &str) -> Response<ResponseBody> {
    let mut resp = Response::new(ResponseBody::full(format!("{reason}\n")));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

/// A 400 that also closes the connection: after a malformed request the
/// byte stream cannot be trusted.
fn reject(ctx: &WorkerCtx, info: &ConnInfo, reason: &'static str) -> Response<ResponseBody> {
    ctx.shared
        .metrics
        .rejected
        .get_or_create(&RejectLabels {
            listener: info.listener.to_string(),
            reason: reason.to_string(),
        })
        .inc();
    let mut resp = local(StatusCode::BAD_REQUEST, &format!("bad request: {reason}"));
    resp.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    resp
}

fn is_idempotent(m: &Method) -> bool {
    matches!(
        *m,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}

fn is_upgrade(req: &Request<Incoming>) -> bool {
    req.version() == Version::HTTP_11
        && req.headers().contains_key(header::UPGRADE)
        && req
            .headers()
            .get(header::CONNECTION)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| {
                v.split(',')
                    .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
            })
}

/// The request's host without port, lower-cased only when needed.
fn request_host(req: &Request<Incoming>) -> String {
    let raw = req
        .uri()
        .authority()
        .map(|a| a.as_str())
        .or_else(|| {
            req.headers()
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
        })
        .unwrap_or("");
    let (host, _) = filters::split_host_port(raw);
    host.to_ascii_lowercase()
}

/// Serves one request. Never fails: every problem becomes a response.
pub async fn handle(
    ctx: Rc<WorkerCtx>,
    info: Rc<ConnInfo>,
    mut req: Request<Incoming>,
) -> Result<Response<ResponseBody>, Infallible> {
    let start = Instant::now();
    let client_version = req.version();
    let number = info.requests.get() + 1;
    info.requests.set(number);
    if let Err(reason) = strict::check_request(req.version(), req.headers(), &info.flags, number) {
        return Ok(reject(&ctx, &info, reason));
    }
    // An HTTP/2 client names the host in :authority; HTTP/1.1 upstreams and
    // URL rewrites need it in Host.
    if !req.headers().contains_key(header::HOST)
        && let Some(auth) = req.uri().authority()
        && let Ok(v) = HeaderValue::from_str(auth.as_str())
    {
        req.headers_mut().insert(header::HOST, v);
    }
    headers::ensure_request_id(req.headers_mut());
    let snapshot = ctx.shared.snapshot.load_full();
    let trace = RequestTrace::start(
        snapshot.tracer.as_ref(),
        &mut req,
        &info.listener,
        info.remote.ip(),
    );
    let host = request_host(&req);
    let Some(table) = snapshot.table(&info.listener) else {
        return Ok(local(StatusCode::NOT_FOUND, "no routes on this listener"));
    };
    let found = table.lookup(
        &host,
        req.method(),
        req.uri().path(),
        req.uri().query(),
        req.headers(),
    );
    let Some((rule, matched)) = found else {
        snapshot.unrouted.count_request(404);
        let resp = local(
            StatusCode::NOT_FOUND,
            &format!(
                "no route matches {} {}{}",
                req.method(),
                host,
                req.uri().path()
            ),
        );
        let summary = snapshot.access_log.then(|| req_summary(&req));
        complete(
            &snapshot,
            &info,
            &trace,
            summary.as_ref(),
            &resp,
            start,
            None,
            None,
            0,
        );
        return Ok(resp);
    };
    trace.routed(req.method(), &rule.route, req.uri().path());
    let summary = snapshot.access_log.then(|| req_summary(&req));
    // A response the rule gives itself (redirect, denial, limit): counted
    // and logged as the rule's own.
    let answer = |resp: Response<ResponseBody>| {
        rule.local_metrics.count_request(resp.status().as_u16());
        complete(
            &snapshot,
            &info,
            &trace,
            summary.as_ref(),
            &resp,
            start,
            Some(rule),
            None,
            0,
        );
        Ok(resp)
    };

    // Request filters, in order.
    let mut response_filters = Vec::new();
    let mut auth_filters = rule.auth.iter();
    for f in &rule.filters {
        match f {
            // Started once the request's body is known (in `forward`).
            FilterConfig::RequestMirror(_) => {}
            FilterConfig::ExternalAuth(_) => {
                let Some(auth) = auth_filters.next() else {
                    continue;
                };
                if let Err(denied) = crate::ext_auth::check(&ctx, &info, &mut req, auth).await {
                    return answer(denied);
                }
            }
            FilterConfig::RequestHeaderModifier(m) => filters::modify_headers(req.headers_mut(), m),
            FilterConfig::ResponseHeaderModifier(m) => response_filters.push(m),
            FilterConfig::UrlRewrite(rw) => {
                let mut uri = req.uri().clone();
                filters::rewrite_url(&mut uri, req.headers_mut(), matched, rw);
                *req.uri_mut() = uri;
            }
            FilterConfig::RequestRedirect(cfg) => {
                let host_hdr = req
                    .uri()
                    .authority()
                    .map(|a| a.as_str().to_string())
                    .or_else(|| {
                        req.headers()
                            .get(header::HOST)
                            .and_then(|h| h.to_str().ok())
                            .map(str::to_string)
                    })
                    .unwrap_or_default();
                let resp = filters::redirect(cfg, req.uri(), &host_hdr, info.tls, matched);
                return answer(resp);
            }
        }
    }

    // Rate limit per client.
    let mut rate_headers = None;
    if let Some(rl) = &rule.rate_limit {
        let key = rl.key(req.headers(), info.remote.ip());
        match rl.check(&ctx.redis, (&rule.route, rule.index), key).await {
            ratelimit::Verdict::Allow { remaining, reset } => {
                rate_headers = Some((remaining, reset))
            }
            ratelimit::Verdict::Deny { retry_after } => {
                rule.local_metrics.rate_limited(rl.config.global.is_some());
                return answer(ratelimit::too_many(rl, retry_after));
            }
            ratelimit::Verdict::Unavailable => {
                let resp = local(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "rate limit service unavailable",
                );
                return answer(resp);
            }
        }
    }

    // Load shedding per rule: past its concurrency limit, 503 at once.
    let _rule_permit = match rule.max_concurrent_requests {
        None => None,
        Some(max) => match rule.in_flight.try_acquire(max) {
            Some(p) => Some(p),
            None => {
                rule.local_metrics.shed();
                return answer(resilience::overflow("maxConcurrentRequests"));
            }
        },
    };

    let Some(backend_ref) = rule.pick_backend() else {
        return answer(local(
            StatusCode::INTERNAL_SERVER_ERROR,
            "every backend of this route has weight 0",
        ));
    };

    // A response on behalf of the chosen backend (its own, or a fault's):
    // counted in its metrics and figures, then logged.
    let served = |resp: Response<ResponseBody>, endpoint: Option<&Endpoint>, retries: u32| {
        let status = resp.status().as_u16();
        let elapsed = start.elapsed();
        backend_ref.metrics.count_request(status);
        backend_ref.metrics.duration.observe(elapsed.as_secs_f64());
        backend_ref.backend.stats.record(status, elapsed);
        complete(
            &snapshot,
            &info,
            &trace,
            summary.as_ref(),
            &resp,
            start,
            Some(rule),
            Some((backend_ref, endpoint)),
            retries,
        );
        Ok(resp)
    };

    if let Some(fault) = &rule.fault {
        let abort = match resilience::decide(fault, req.headers()) {
            resilience::Fault::None => None,
            resilience::Fault::Delay(d) => {
                backend_ref.metrics.fault();
                tokio::time::sleep(d).await;
                None
            }
            resilience::Fault::Abort(status) => Some(status),
            resilience::Fault::DelayThenAbort(d, status) => {
                tokio::time::sleep(d).await;
                Some(status)
            }
        };
        if let Some(status) = abort {
            backend_ref.metrics.fault();
            return served(resilience::aborted(status), None, 0);
        }
    }

    let result = if is_upgrade(&req) {
        upgrade(&ctx, &info, &trace, req, backend_ref).await
    } else {
        forward(&ctx, &info, &trace, req, rule, backend_ref).await
    };
    let (mut resp, endpoint, retries) = match result {
        Ok(v) => v,
        Err(r) => (r, None, 0),
    };
    for m in response_filters {
        filters::modify_headers(resp.headers_mut(), m);
    }
    if let (Some(rl), Some((remaining, reset))) = (&rule.rate_limit, rate_headers) {
        rl.headers(resp.headers_mut(), remaining, reset);
    }
    if ctx.shared.is_draining() && client_version < Version::HTTP_2 {
        resp.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    served(resp, endpoint.as_deref(), retries)
}

/// What the access log needs of a request after its parts moved on.
pub struct RequestSummary {
    method: Method,
    path: String,
    request_id: Option<HeaderValue>,
}

fn req_summary(req: &Request<Incoming>) -> RequestSummary {
    RequestSummary {
        method: req.method().clone(),
        path: req.uri().path().to_string(),
        request_id: req.headers().get(&headers::X_REQUEST_ID).cloned(),
    }
}

type Forwarded = (Response<ResponseBody>, Option<Arc<Endpoint>>, u32);

/// Prepares the upstream request's head: hop-by-hop headers out, forwarding
/// headers in (the request id was set by [`handle`], for every request).
fn upstream_head(
    parts: &mut http::request::Parts,
    info: &ConnInfo,
    protocol: UpstreamProtocol,
    keep_upgrade: bool,
) {
    headers::remove_hop_by_hop(
        &mut parts.headers,
        keep_upgrade,
        protocol == UpstreamProtocol::H2c,
    );
    headers::set_forwarded(&mut parts.headers, info.remote.ip(), info.tls);
}

fn upstream_uri(
    parts: &http::request::Parts,
    protocol: UpstreamProtocol,
    ep: &Endpoint,
) -> Option<Uri> {
    let pq = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
    match protocol {
        UpstreamProtocol::Http1 => {
            if parts.uri.scheme().is_none() && parts.uri.authority().is_none() {
                return Some(parts.uri.clone());
            }
            pq.parse().ok()
        }
        UpstreamProtocol::H2c => {
            let authority = parts
                .headers
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .map_or_else(|| ep.addr.to_string(), str::to_string);
            Uri::builder()
                .scheme("http")
                .authority(authority)
                .path_and_query(pq)
                .build()
                .ok()
        }
    }
}

/// Reads the first frame of a request body before any upstream sees the
/// request: a malformed body (bad chunk size) is refused with 400 here.
async fn read_first_frame(
    body: &mut Incoming,
) -> Result<Option<http_body::Frame<Bytes>>, hyper::Error> {
    if body.is_end_stream() {
        return Ok(None);
    }
    body.frame().await.transpose()
}

/// At most this many endpoints are remembered as tried (more retries than
/// that are refused by config validation anyway).
const MAX_TRIED: usize = 12;

async fn forward(
    ctx: &Rc<WorkerCtx>,
    info: &ConnInfo,
    trace: &RequestTrace,
    req: Request<Incoming>,
    rule: &CompiledRule,
    backend_ref: &CompiledBackendRef,
) -> Result<Forwarded, Response<ResponseBody>> {
    let service = &backend_ref.service;
    let protocol = service.pool.protocol;
    let (mut parts, mut incoming) = req.into_parts();
    let first = match read_first_frame(&mut incoming).await {
        Ok(f) => f,
        Err(e) => {
            tracing::debug!(error = %e, "client request body is malformed");
            return Err(reject(ctx, info, "malformed request body"));
        }
    };
    let body = if first.is_none() && incoming.is_end_stream() {
        ReplayBody::empty()
    } else {
        ReplayBody::new(first, incoming)
    };
    upstream_head(&mut parts, info, protocol, false);
    let mirrored = if rule.mirrors.is_empty() {
        None
    } else {
        crate::mirror::start(ctx, &rule.mirrors, &parts, &body)
    };
    parts.version = match protocol {
        UpstreamProtocol::H2c => Version::HTTP_2,
        UpstreamProtocol::Http1 => Version::HTTP_11,
    };
    let hash_key = service
        .hash_header
        .as_ref()
        .and_then(|h| parts.headers.get(h))
        .map(|v| v.as_bytes().to_vec());
    let retry = &rule.retry;
    // Whether a request that may have reached the upstream can be sent
    // again (a status in `codes`, a reset, a per-try timeout).
    let may_resend = retry.configured && (is_idempotent(&parts.method) || retry.unsafe_methods);
    // An HTTP/2 stream the upstream refused was not processed but is not
    // handed back by hyper: keep a copy to send it again.
    let keep_copy = may_resend || protocol == UpstreamProtocol::H2c;

    // Circuit breaker: requests in flight to this service version.
    let cb = service.circuit_breaker;
    let Some(_request_permit) = backend_ref.backend.requests.try_acquire(cb.max_requests) else {
        backend_ref.metrics.overflow("maxRequests");
        return Err(resilience::overflow("maxRequests"));
    };
    // Circuit breaker: retries in flight. The permit is held through the
    // retry it allowed.
    let take_retry = |slot: &mut Option<resilience::Permit>| -> bool {
        match backend_ref.backend.retries.try_acquire(cb.max_retries) {
            Some(p) => {
                *slot = Some(p);
                true
            }
            None => {
                backend_ref.metrics.overflow("maxRetries");
                false
            }
        }
    };

    // The retry budget: every request deposits, every retry that may reach
    // the upstream withdraws.
    use tower::retry::budget::Budget;
    rule.budget.deposit();
    let budget_allows = || {
        let ok = rule.budget.withdraw();
        if !ok {
            backend_ref.metrics.budget_exhausted();
        }
        ok
    };

    let attempts = async {
        let mut retry_permit: Option<resilience::Permit> = None;
        // A delay the upstream asked for with Retry-After.
        let mut asked_delay: Option<Duration> = None;
        let mut tried = [0u64; MAX_TRIED];
        let mut n_tried = 0usize;
        let mut retries = 0u32;
        let mut body = Some(body);
        // A request that came back unsent from a failed connection.
        let mut unsent: Option<Request<ReplayBody>> = None;
        loop {
            let endpoints = backend_ref.backend.endpoints();
            let picked = balance::pick(
                service.lb,
                &backend_ref.backend,
                &endpoints,
                hash_key.as_deref(),
                &tried[..n_tried],
                service.panic_threshold,
            );
            drop(endpoints);
            let Some(ep) = picked else {
                let msg = format!("no ready endpoint for {}", backend_ref.backend.key);
                return (local(StatusCode::SERVICE_UNAVAILABLE, &msg), None, retries);
            };
            if n_tried < MAX_TRIED {
                tried[n_tried] = ep.id;
                n_tried += 1;
            }
            let observe = |outcome: Outcome| {
                if let Some(cfg) = &service.outlier
                    && outlier::record(&backend_ref.backend, &ep, cfg, outcome)
                {
                    backend_ref.metrics.ejected();
                }
            };
            let can_retry = retries < retry.attempts;
            let attempt = trace.attempt(
                retries + 1,
                (
                    &backend_ref.backend.key.service,
                    &backend_ref.backend.key.version,
                ),
                (&ep.name, ep.addr),
            );
            let guard = ep.start_request();
            let conn = match ctx
                .pools
                .checkout(&ep, &service.pool, &backend_ref.backend)
                .await
            {
                Ok(c) => c,
                Err(SendError::Overflow(limit)) => {
                    attempt.failed("overflow");
                    backend_ref.metrics.overflow(limit);
                    return (resilience::overflow(limit), Some(ep), retries);
                }
                Err(e) => {
                    drop(guard);
                    attempt.failed("connect_error");
                    observe(Outcome::LocalFailure);
                    if e.is_connect() {
                        backend_ref.metrics.connect_failures.inc();
                    }
                    tracing::debug!(error = %e, endpoint = %ep.addr, "upstream connect failed");
                    if can_retry && take_retry(&mut retry_permit) {
                        retries += 1;
                        backend_ref.metrics.retries.inc();
                        continue;
                    }
                    let status = if e.is_connect() {
                        StatusCode::SERVICE_UNAVAILABLE
                    } else {
                        StatusCode::BAD_GATEWAY
                    };
                    return (local(status, "upstream connect error"), Some(ep), retries);
                }
            };
            let (up, next_body) = match unsent.take() {
                Some(r) => {
                    let next = if keep_copy {
                        r.body().try_clone()
                    } else {
                        None
                    };
                    (r, next)
                }
                None => {
                    let Some(this_body) = body.take() else {
                        return (
                            local(StatusCode::BAD_GATEWAY, "request body cannot be replayed"),
                            Some(ep),
                            retries,
                        );
                    };
                    let Some(uri) = upstream_uri(&parts, protocol, &ep) else {
                        return (
                            local(StatusCode::BAD_REQUEST, "request URI cannot be forwarded"),
                            Some(ep),
                            retries,
                        );
                    };
                    let next = if keep_copy {
                        this_body.try_clone()
                    } else {
                        None
                    };
                    let mut up = Request::new(this_body);
                    *up.method_mut() = parts.method.clone();
                    *up.uri_mut() = uri;
                    *up.version_mut() = parts.version;
                    // Copy the headers only when another try may need them.
                    *up.headers_mut() = if next.is_some() {
                        parts.headers.clone()
                    } else {
                        std::mem::take(&mut parts.headers)
                    };
                    (up, next)
                }
            };
            let mut up = up;
            attempt.propagate(up.headers_mut());
            let send = conn.send(up);
            let outcome = match rule.timeouts.backend_request {
                Some(t) => tokio::time::timeout(t, send).await.ok(),
                None => Some(send.await),
            };
            drop(guard);
            match &outcome {
                Some(Ok(resp)) => attempt.answered(resp.status().as_u16()),
                Some(Err(_)) => attempt.failed("connection_error"),
                None => attempt.failed("timeout"),
            }
            observe(match &outcome {
                Some(Ok(resp)) => Outcome::Status(resp.status().as_u16()),
                _ => Outcome::LocalFailure,
            });
            match outcome {
                Some(Ok(resp)) => {
                    let code = resp.status().as_u16();
                    let retry_after = retry_after(&resp);
                    if !(can_retry
                        && may_resend
                        && next_body.is_some()
                        && retry.codes.contains(&code)
                        && retry_after.is_none_or(|d| d <= defaults::MAX_RETRY_AFTER)
                        && budget_allows()
                        && take_retry(&mut retry_permit))
                    {
                        return (strip_response(resp), Some(ep), retries);
                    }
                    asked_delay = retry_after;
                    drop(resp);
                    body = next_body;
                }
                Some(Err((e, returned))) => {
                    tracing::debug!(error = %e, endpoint = %ep.addr, "upstream attempt failed");
                    match returned {
                        // Never written: the same request goes to another
                        // endpoint, whatever its method.
                        Some(r) if can_retry && take_retry(&mut retry_permit) => unsent = Some(r),
                        _ if can_retry
                            && next_body.is_some()
                            && (e.never_reached_upstream() || (may_resend && budget_allows()))
                            && take_retry(&mut retry_permit) =>
                        {
                            body = next_body;
                        }
                        _ => {
                            let reason = "upstream reset or closed the connection";
                            return (local(StatusCode::BAD_GATEWAY, reason), Some(ep), retries);
                        }
                    }
                }
                None => {
                    backend_ref.metrics.timeout("backendRequest");
                    if !(can_retry
                        && may_resend
                        && next_body.is_some()
                        && retry.codes.contains(&504)
                        && budget_allows()
                        && take_retry(&mut retry_permit))
                    {
                        return (
                            local(StatusCode::GATEWAY_TIMEOUT, "upstream request timeout"),
                            Some(ep),
                            retries,
                        );
                    }
                    body = next_body;
                }
            }
            retries += 1;
            backend_ref.metrics.retries.inc();
            if unsent.is_none() {
                let delay = asked_delay
                    .take()
                    .unwrap_or_else(|| backoff(retry.backoff, retries));
                if !delay.is_zero() {
                    tokio::time::sleep(delay).await;
                }
            }
        }
    };
    let done = match rule.timeouts.request {
        Some(deadline) => match tokio::time::timeout(deadline, attempts).await {
            Ok(done) => done,
            Err(_) => {
                backend_ref.metrics.timeout("request");
                (
                    local(StatusCode::GATEWAY_TIMEOUT, "upstream request timeout"),
                    None,
                    0,
                )
            }
        },
        None => attempts.await,
    };
    if let Some(tx) = mirrored {
        let _ = tx.send(done.0.status().as_u16());
    }
    Ok(done)
}

/// `Retry-After` in seconds (the HTTP-date form is not waited for).
fn retry_after(resp: &Response<ResponseBody>) -> Option<Duration> {
    let v = resp.headers().get(header::RETRY_AFTER)?.to_str().ok()?;
    match v.trim().parse::<u64>() {
        Ok(secs) => Some(Duration::from_secs(secs)),
        Err(_) => Some(Duration::MAX),
    }
}

/// Jittered exponential back-off: a random delay between half of and the
/// whole of `base·2^(n-1)`, capped at ten times the base.
fn backoff(base: Duration, retry: u32) -> Duration {
    if base.is_zero() {
        return base;
    }
    let max = base.saturating_mul(10);
    let exp = base
        .saturating_mul(1u32 << retry.saturating_sub(1).min(16))
        .min(max);
    let nanos = u64::try_from(exp.as_nanos()).unwrap_or(u64::MAX);
    Duration::from_nanos(fastrand::u64(nanos / 2..=nanos))
}

/// Removes the upstream's hop-by-hop headers from its response.
pub(crate) fn strip_response(mut resp: Response<ResponseBody>) -> Response<ResponseBody> {
    headers::remove_hop_by_hop(resp.headers_mut(), false, false);
    resp
}

/// A WebSocket or other HTTP/1.1 upgrade: forwarded like a request, tunnelled
/// only once the upstream answered 101.
async fn upgrade(
    ctx: &Rc<WorkerCtx>,
    info: &ConnInfo,
    trace: &RequestTrace,
    mut req: Request<Incoming>,
    backend_ref: &CompiledBackendRef,
) -> Result<Forwarded, Response<ResponseBody>> {
    let service = &backend_ref.service;
    if service.pool.protocol != UpstreamProtocol::Http1 {
        return Err(local(
            StatusCode::NOT_IMPLEMENTED,
            "upgrades need an HTTP/1.1 upstream",
        ));
    }
    let client_upgrade = hyper::upgrade::on(&mut req);
    let (mut parts, _body) = req.into_parts();
    upstream_head(&mut parts, info, UpstreamProtocol::Http1, true);
    let endpoints = backend_ref.backend.endpoints();
    let Some(ep) = balance::pick(
        service.lb,
        &backend_ref.backend,
        &endpoints,
        None,
        &[],
        service.panic_threshold,
    ) else {
        return Err(local(StatusCode::SERVICE_UNAVAILABLE, "no ready endpoint"));
    };
    drop(endpoints);
    let Some(uri) = upstream_uri(&parts, UpstreamProtocol::Http1, &ep) else {
        return Err(local(
            StatusCode::BAD_REQUEST,
            "request URI cannot be forwarded",
        ));
    };
    parts.uri = uri;
    let attempt = trace.attempt(
        1,
        (
            &backend_ref.backend.key.service,
            &backend_ref.backend.key.version,
        ),
        (&ep.name, ep.addr),
    );
    attempt.propagate(&mut parts.headers);
    let up = Request::from_parts(parts, ReplayBody::empty());
    let guard = ep.start_request();
    let conn = match ctx
        .pools
        .checkout(&ep, &service.pool, &backend_ref.backend)
        .await
    {
        Ok(c) => c,
        Err(e) => {
            attempt.failed("connect_error");
            if e.is_connect() {
                backend_ref.metrics.connect_failures.inc();
            }
            return Err(local(StatusCode::BAD_GATEWAY, "upstream connect error"));
        }
    };
    let mut resp = match conn.send(up).await {
        Ok(r) => {
            attempt.answered(r.status().as_u16());
            r
        }
        Err(_) => {
            attempt.failed("connection_error");
            return Err(local(
                StatusCode::BAD_GATEWAY,
                "upstream reset or closed the connection",
            ));
        }
    };
    if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
        drop(guard);
        return Ok((strip_response(resp), Some(ep), 0));
    }
    let upstream_upgrade = hyper::upgrade::on(&mut resp);
    tokio::task::spawn_local(async move {
        let _guard = guard;
        match tokio::try_join!(client_upgrade, upstream_upgrade) {
            Ok((client, upstream)) => {
                let mut client = hyper_util::rt::TokioIo::new(client);
                let mut upstream = hyper_util::rt::TokioIo::new(upstream);
                if let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
                    tracing::debug!(error = %e, "upgraded connection ended");
                }
            }
            Err(e) => tracing::debug!(error = %e, "upgrade failed"),
        }
    });
    Ok((resp, Some(ep), 0))
}

/// Ends the request's span and writes its access log line.
#[allow(clippy::too_many_arguments)]
fn complete(
    snapshot: &crate::snapshot::Snapshot,
    info: &ConnInfo,
    trace: &RequestTrace,
    req: Option<&RequestSummary>,
    resp: &Response<ResponseBody>,
    start: Instant,
    rule: Option<&Arc<CompiledRule>>,
    backend: Option<(&CompiledBackendRef, Option<&Endpoint>)>,
    retries: u32,
) {
    let (service, version) = backend.map_or(("", ""), |(b, _)| {
        (&*b.backend.key.service, &*b.backend.key.version)
    });
    trace.finish(
        resp.status().as_u16(),
        backend.is_some().then_some((service, version)),
    );
    let Some(req) = req else { return };
    if !snapshot.access_log {
        return;
    }
    let endpoint = backend.and_then(|(_, e)| e);
    let bytes = resp.body().size_hint().exact().unwrap_or(0);
    let status = resp.status().as_u16();
    // The field names are the log schema shared with the runtime's service
    // logs (README, "Logs"); `service`, `version` and `replica` name what
    // served the request.
    tracing::info!(
        target: "serin::access",
        service,
        version,
        replica = endpoint.map_or("", |e| &*e.name),
        trace_id = %trace.trace_id(),
        method = %req.method,
        path = %req.path,
        status,
        duration_ms = start.elapsed().as_secs_f64() * 1000.0,
        route = rule.map_or("", |r| &*r.route),
        upstream = %OptionalAddr(endpoint.map(|e| e.addr)),
        bytes,
        retries,
        request_id = req.request_id.as_ref().and_then(|v| v.to_str().ok()).unwrap_or(""),
        listener = %info.listener,
        client = %info.remote.ip(),
        "{} {} {status}",
        req.method,
        req.path,
    );
}

/// An address, or nothing, for a log field.
struct OptionalAddr(Option<SocketAddr>);

impl std::fmt::Display for OptionalAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(a) => a.fmt(f),
            None => Ok(()),
        }
    }
}
