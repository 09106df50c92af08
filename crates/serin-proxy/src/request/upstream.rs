//! Phase 7: the request goes to an endpoint of the chosen backend on a
//! pooled connection, under the circuit breaker and the deadlines; after
//! each attempt the [`retry`](super::retry) decision says whether another
//! goes out, and the retry budget and `maxRetries` whether it may.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::body::ClientBody;
use bytes::Bytes;
use http::header;
use http::{Request, Response, Uri, Version};
use http_body::Body;
use http_body_util::BodyExt;
use serin_config::proxy::UpstreamProtocol;
use tower::retry::budget::Budget;

use super::error::{Deadline, ProxyError, Side};
use super::retry::{self, Attempt, Decision, Delay, RetryPolicy};
use super::{ConnInfo, RequestCx};
use crate::balance;
use crate::body::{BodyProbe, ReplayBody, ResponseBody};
use crate::body_limit::BodyLimit;
use crate::endpoints::Endpoint;
use crate::headers;
use crate::outlier::{self, Outcome};
use crate::pool::SendError;
use crate::resilience::Permit;
use crate::snapshot::{CompiledBackendRef, CompiledRule};

/// At most this many endpoints are remembered as tried (more retries than
/// that are refused by config validation anyway).
const MAX_TRIED: usize = 12;

pub(super) async fn forward<'s>(
    cx: &mut RequestCx<'s>,
    req: Request<ClientBody>,
    rule: &'s CompiledRule,
    backend: &'s CompiledBackendRef,
    mut body_limit: Option<BodyLimit>,
) -> Result<Response<ResponseBody>, ProxyError> {
    let protocol = backend.service.pool.protocol;
    let (mut parts, mut incoming) = req.into_parts();
    // A malformed body (bad chunk size) is refused before any upstream
    // sees the request.
    let first = read_first_frame(&mut incoming)
        .await
        .map_err(|_| ProxyError::Malformed("malformed request body"))?;
    if let (Some(limit), Some(data)) = (&mut body_limit, first.as_ref().and_then(|f| f.data_ref()))
    {
        limit
            .take(data.len())
            .map_err(|e| ProxyError::BodyTooLarge(e.max))?;
    }
    let body = if first.is_none() && incoming.is_end_stream() {
        ReplayBody::empty()
    } else {
        ReplayBody::new(first, incoming).with_limit(body_limit)
    };
    // A gRPC call's own deadline shortens the rule's, never lengthens it.
    let deadline = if cx.grpc {
        super::grpc::deadline(rule.timeouts.request, super::grpc::timeout(&parts.headers))
    } else {
        rule.timeouts.request
    };
    upstream_head(&mut parts, cx.info, protocol, false);
    let mirrored = if cx.mirrors.is_empty() {
        None
    } else {
        crate::mirror::start(cx.ctx, &cx.mirrors, &parts, &body, deadline)
    };
    parts.version = if protocol.is_http2() {
        Version::HTTP_2
    } else {
        Version::HTTP_11
    };
    let cb = backend.service.circuit_breaker;
    let Some(_in_flight) = backend.backend.requests.try_acquire(cb.max_requests) else {
        backend.metrics.overflow("maxRequests");
        return Err(ProxyError::Overflow("maxRequests"));
    };
    // The retry budget: every request deposits, every retry that may reach
    // the upstream withdraws.
    rule.budget.deposit();
    let policy = RetryPolicy::new(&rule.retry, &parts.method, cx.grpc);
    // serin's own HTTP/1.1 exchange carries a request whose body is
    // complete; a streaming upload goes through hyper's client.
    let in_hand = protocol == UpstreamProtocol::Http1 && body.in_hand();
    let mut attempts = Attempts {
        rule,
        backend,
        in_hand,
        // An HTTP/2 stream the upstream refused was not processed but is
        // not handed back by hyper: keep a copy to send it again.
        keep_copy: policy.may_resend() || protocol.is_http2(),
        policy,
        probe: body.probe(),
        body: Some(body),
        unsent: None,
        hash_key: backend
            .service
            .hash_header
            .as_ref()
            .and_then(|h| parts.headers.get(h))
            .map(|v| v.as_bytes().to_vec()),
        parts,
        retry_permit: None,
        tried: [0; MAX_TRIED],
        n_tried: 0,
    };
    let result = match deadline {
        // Not `tokio::time::timeout(deadline, attempts.run(cx))`: that
        // moves the tries' future (several KiB: the pool checkout and the
        // exchange inside it) into the `Timeout` and again into this
        // future's state, memcpy of every byte each time. Pinned where it
        // is made, it is polled in place (callgrind: 4.6 % fewer
        // instructions per request); the deadline is polled after it, as
        // `Timeout` does. (Pinning the futures awaited by value elsewhere
        // on the path made it worse: each pinned one takes its own room
        // in its caller's state, and the boxed exchange grew.)
        Some(deadline) => {
            let tries = std::pin::pin!(attempts.run(cx));
            let expiry = std::pin::pin!(tokio::time::sleep(deadline));
            tokio::select! {
                biased;
                result = tries => result,
                () = expiry => {
                    backend.metrics.timeout(Deadline::Request.label());
                    Err(ProxyError::Timeout(Deadline::Request))
                }
            }
        }
        None => attempts.run(cx).await,
    };
    if let Some(tx) = mirrored {
        let status = result
            .as_ref()
            .map_or_else(|e| e.status(), Response::status);
        let _ = tx.send(status.as_u16());
    }
    result
}

/// The tries of one request.
struct Attempts<'s> {
    rule: &'s CompiledRule,
    backend: &'s CompiledBackendRef,
    /// The body is complete: see [`crate::pool::Pools::checkout`].
    in_hand: bool,
    policy: RetryPolicy<'s>,
    keep_copy: bool,
    parts: http::request::Parts,
    /// The body for the next try, while there is one.
    body: Option<ReplayBody>,
    probe: BodyProbe,
    /// A request that came back unsent from a failed connection.
    unsent: Option<Request<ReplayBody>>,
    hash_key: Option<Vec<u8>>,
    /// Held through the retry it allowed (`maxRetries`).
    retry_permit: Option<Permit>,
    tried: [u64; MAX_TRIED],
    n_tried: usize,
}

impl<'s> Attempts<'s> {
    async fn run(&mut self, cx: &mut RequestCx<'s>) -> Result<Response<ResponseBody>, ProxyError> {
        loop {
            let preferred = cx.session.as_ref().and_then(|s| s.endpoint);
            let ep = self.pick(preferred)?;
            cx.endpoint = Some(ep.clone());
            let result = self.once(cx, &ep).await;
            self.observe(&ep, &result);
            let attempt = match &result {
                Ok(resp) => Attempt::Answered {
                    status: resp.status().as_u16(),
                    grpc_status: if cx.grpc {
                        super::grpc::status(resp.headers())
                    } else {
                        None
                    },
                    retry_after: retry_after(resp),
                },
                Err(e) => Attempt::Failed(e),
            };
            let Decision::Retry {
                draws_budget,
                delay,
            } = self.policy.decide(
                attempt,
                cx.retries,
                self.body.is_some() || self.unsent.is_some(),
            )
            else {
                return result.map(strip_response);
            };
            if !(self.budget_allows(draws_budget) && self.take_retry()) {
                return result.map(strip_response);
            }
            drop(result);
            cx.retries += 1;
            self.backend.metrics.retries.inc();
            let wait = match delay {
                Delay::None => Duration::ZERO,
                Delay::Backoff => retry::backoff(self.rule.retry.backoff, cx.retries),
                Delay::After(d) => d,
            };
            if !wait.is_zero() {
                tokio::time::sleep(wait).await;
            }
        }
    }

    /// The endpoint of the next try: the session's on the first, while it
    /// is among the backend's and usable; else the balancer's choice.
    fn pick(&mut self, preferred: Option<SocketAddr>) -> Result<Arc<Endpoint>, ProxyError> {
        let b = self.backend;
        let endpoints = b.backend.endpoints();
        let sticky = preferred.filter(|_| self.n_tried == 0).and_then(|addr| {
            let now = crate::outlier::now_ms();
            endpoints
                .list
                .iter()
                .find(|e| e.addr == addr && e.health.usable(now))
                .cloned()
        });
        let picked = match sticky {
            Some(e) => Some(e),
            None => balance::pick(
                b.service.lb,
                &b.backend,
                &endpoints,
                self.hash_key.as_deref(),
                &self.tried[..self.n_tried],
                b.service.panic_threshold,
            ),
        }
        .ok_or_else(|| ProxyError::NoEndpoint(b.backend.key.to_string()))?;
        if self.n_tried < MAX_TRIED {
            self.tried[self.n_tried] = picked.id;
            self.n_tried += 1;
        }
        Ok(picked)
    }

    /// One try on `ep`.
    async fn once(
        &mut self,
        cx: &RequestCx<'s>,
        ep: &Arc<Endpoint>,
    ) -> Result<Response<ResponseBody>, ProxyError> {
        let b = self.backend;
        let span = cx.trace.attempt(
            cx.retries + 1,
            (&b.backend.key.service, &b.backend.key.version),
            (&ep.name, ep.addr),
        );
        let _active = ep.start_request();
        let conn = match cx
            .ctx
            .pools
            .checkout(ep, &b.service.pool, &b.backend, self.in_hand)
            .await
        {
            Ok(c) => c,
            Err(SendError::Overflow(limit)) => {
                span.failed("overflow");
                b.metrics.overflow(limit);
                return Err(ProxyError::Overflow(limit));
            }
            Err(e) => {
                span.failed("connect_error");
                if e.is_connect() {
                    b.metrics.connect_failures.inc();
                }
                tracing::debug!(error = %e, endpoint = %ep.addr, "upstream connect failed");
                return Err(ProxyError::ConnectFailed);
            }
        };
        let mut up = self.next_request(ep)?;
        span.propagate(up.headers_mut());
        let send = conn.send(up);
        let outcome = match self.rule.timeouts.backend_request {
            Some(t) => tokio::time::timeout(t, send).await.ok(),
            None => Some(send.await),
        };
        match outcome {
            Some(Ok(resp)) => {
                span.answered(resp.status().as_u16());
                Ok(resp)
            }
            Some(Err((e, returned))) => {
                tracing::debug!(error = %e, endpoint = %ep.addr, "upstream attempt failed");
                if let Some(max) = self.probe.too_large() {
                    span.failed("body_too_large");
                    return Err(ProxyError::BodyTooLarge(max));
                }
                if self.probe.client_broke_off() {
                    span.failed("client_aborted");
                    return Err(ProxyError::ClientAborted);
                }
                if e.is_head_too_large() {
                    span.failed("head_too_large");
                    return Err(ProxyError::UpstreamHeadTooLarge);
                }
                span.failed("connection_error");
                match returned {
                    Some(r) => {
                        self.unsent = Some(*r);
                        Err(ProxyError::Unsent)
                    }
                    None => Err(ProxyError::UpstreamReset {
                        reached: !e.never_reached_upstream(),
                    }),
                }
            }
            None => {
                span.failed("timeout");
                b.metrics.timeout(Deadline::BackendRequest.label());
                Err(ProxyError::Timeout(Deadline::BackendRequest))
            }
        }
    }

    /// The request for the next try: one that came back unsent, or a new
    /// one from the head and the body (keeping a copy when another try may
    /// need it).
    fn next_request(&mut self, ep: &Endpoint) -> Result<Request<ReplayBody>, ProxyError> {
        if let Some(r) = self.unsent.take() {
            self.body = if self.keep_copy {
                r.body().try_clone()
            } else {
                None
            };
            return Ok(r);
        }
        let body = self.body.take().ok_or(ProxyError::ReplayImpossible)?;
        let protocol = self.backend.service.pool.protocol;
        let uri = upstream_uri(&self.parts, protocol, ep).ok_or(ProxyError::UriNotForwardable)?;
        self.body = if self.keep_copy {
            body.try_clone()
        } else {
            None
        };
        let mut up = Request::new(body);
        *up.method_mut() = self.parts.method.clone();
        *up.uri_mut() = uri;
        *up.version_mut() = self.parts.version;
        // Copy the headers only when another try may need them.
        *up.headers_mut() = if self.body.is_some() {
            self.parts.headers.clone()
        } else {
            std::mem::take(&mut self.parts.headers)
        };
        Ok(up)
    }

    /// Outlier detection sees what the endpoint did: its answers, and the
    /// failures that are the upstream's (not a full breaker, not a client
    /// that broke off).
    fn observe(&self, ep: &Endpoint, result: &Result<Response<ResponseBody>, ProxyError>) {
        let outcome = match result {
            Ok(resp) => Outcome::Status(resp.status().as_u16()),
            Err(ProxyError::Overflow(_)) => return,
            Err(e) if e.side() == Side::Upstream => Outcome::LocalFailure,
            Err(_) => return,
        };
        if let Some(cfg) = &self.backend.service.outlier
            && outlier::record(&self.backend.backend, ep, cfg, outcome)
        {
            self.backend.metrics.ejected();
        }
    }

    fn budget_allows(&self, draws: bool) -> bool {
        if !draws {
            return true;
        }
        let ok = self.rule.budget.withdraw();
        if !ok {
            self.backend.metrics.budget_exhausted();
        }
        ok
    }

    /// The `maxRetries` circuit breaker: retries in flight to the version.
    fn take_retry(&mut self) -> bool {
        let max = self.backend.service.circuit_breaker.max_retries;
        match self.backend.backend.retries.try_acquire(max) {
            Some(p) => {
                self.retry_permit = Some(p);
                true
            }
            None => {
                self.backend.metrics.overflow("maxRetries");
                false
            }
        }
    }
}

/// Reads the first frame of a request body before any upstream sees the
/// request.
async fn read_first_frame(
    body: &mut ClientBody,
) -> Result<Option<http_body::Frame<Bytes>>, hyper::Error> {
    if body.is_end_stream() {
        return Ok(None);
    }
    body.frame().await.transpose()
}

/// Prepares the upstream request's head: hop-by-hop headers out, forwarding
/// headers in (the request id was set by the downstream phase).
pub(super) fn upstream_head(
    parts: &mut http::request::Parts,
    info: &ConnInfo,
    protocol: UpstreamProtocol,
    keep_upgrade: bool,
) {
    headers::remove_hop_by_hop(&mut parts.headers, keep_upgrade, protocol.is_http2());
    headers::set_forwarded(&mut parts.headers, &info.forwarded_for, info.tls);
}

/// The target for the upstream: origin-form for HTTP/1.1 (built from
/// parts, so a path such as `//a` is never read as an authority), an
/// absolute URI for HTTP/2.
pub(super) fn upstream_uri(
    parts: &http::request::Parts,
    protocol: UpstreamProtocol,
    ep: &Endpoint,
) -> Option<Uri> {
    let pq = parts.uri.path_and_query().cloned();
    match protocol {
        UpstreamProtocol::Http1 => {
            if parts.uri.scheme().is_none() && parts.uri.authority().is_none() {
                return Some(parts.uri.clone());
            }
            let mut p = http::uri::Parts::default();
            p.path_and_query =
                Some(pq.unwrap_or_else(|| http::uri::PathAndQuery::from_static("/")));
            Uri::from_parts(p).ok()
        }
        UpstreamProtocol::H2c | UpstreamProtocol::H2 => {
            let scheme = if protocol == UpstreamProtocol::H2 {
                "https"
            } else {
                "http"
            };
            let authority = parts
                .headers
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .map_or_else(|| ep.addr.to_string(), str::to_string);
            Uri::builder()
                .scheme(scheme)
                .authority(authority)
                .path_and_query(pq.unwrap_or_else(|| http::uri::PathAndQuery::from_static("/")))
                .build()
                .ok()
        }
    }
}

/// `Retry-After` in seconds (the HTTP-date form is not waited for).
fn retry_after(resp: &Response<ResponseBody>) -> Option<Duration> {
    let v = resp.headers().get(header::RETRY_AFTER)?.to_str().ok()?;
    match v.trim().parse::<u64>() {
        Ok(secs) => Some(Duration::from_secs(secs)),
        Err(_) => Some(Duration::MAX),
    }
}

/// The upstream's answer as serin forwards it: its hop-by-hop headers out,
/// and, when it came chunked, no `Content-Length` beside: the body was read
/// by its chunks (RFC 9112 §6.3), and a length kept beside them would make
/// the client read a different, silently truncated body.
pub(crate) fn strip_response(mut resp: Response<ResponseBody>) -> Response<ResponseBody> {
    if resp.headers().contains_key(header::TRANSFER_ENCODING) {
        resp.headers_mut().remove(header::CONTENT_LENGTH);
    }
    headers::remove_hop_by_hop(resp.headers_mut(), false, false);
    resp
}
