//! Phase 9: every request counted once, where it belongs, its span ended
//! and its access log line written when the response has been sent.
//!
//! A request that reached a backend counts in that backend's metrics; its
//! figures (what the canary judges) take the answer only when the backend
//! gave it, or failed it (upstream side), or a fault was injected in its
//! name: a client that broke off or a fault of serin's own is not held
//! against a version. Requests a rule answered itself count for the rule,
//! and requests that matched nothing for no route.

use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use crate::body::ClientBody;
use bytes::Bytes;
use http::header::HeaderValue;
use http::{Method, Request, Response};
use http_body::{Body, Frame, SizeHint};

use super::{RequestCx, Side};
use crate::body::{BoxError, ResponseBody};
use crate::headers;
use crate::trace_context::TraceIdHex;

/// What the access log needs of a request after its parts moved on.
pub struct RequestSummary {
    method: Method,
    path: String,
    pub(super) request_id: Option<HeaderValue>,
}

impl RequestSummary {
    /// As the client sent it (before normalisation, as Envoy logs it).
    pub fn of(req: &Request<ClientBody>) -> Self {
        Self {
            method: req.method().clone(),
            path: req.uri().path().to_string(),
            request_id: req.headers().get(&headers::X_REQUEST_ID).cloned(),
        }
    }
}

pub(super) fn finish(cx: &RequestCx<'_>, resp: &Response<ResponseBody>) {
    let status = resp.status().as_u16();
    let elapsed = cx.start.elapsed();
    match (cx.backend, cx.route) {
        (Some(b), _) => {
            b.metrics.count_request(status);
            b.metrics.duration.observe(elapsed.as_secs_f64());
            if !matches!(cx.failure, Some(Side::Downstream | Side::Internal)) {
                b.backend.stats.record(status, elapsed);
            }
        }
        (None, Some((rule, _))) => rule.local_metrics.count_request(status),
        (None, None) => cx.snapshot.unrouted.count_request(status),
    }
    let (service, version) = cx.backend.map_or(("", ""), |b| {
        (&*b.backend.key.service, &*b.backend.key.version)
    });
    cx.trace
        .finish(status, cx.backend.is_some().then_some((service, version)));
}

/// Offers the request to the tap's watchers (see [`crate::tap`]).
pub(super) fn tap(cx: &RequestCx<'_>, method: String, path: String, status: u16) {
    cx.ctx.shared.tap.offer(|| {
        let endpoint = cx.endpoint.as_deref();
        crate::tap::TapEvent {
            unix_ms: crate::events::unix_now_ms(),
            listener: cx.info.listener.clone(),
            method,
            path,
            status,
            latency_ms: cx.start.elapsed().as_secs_f64() * 1000.0,
            route: cx.route.map(|(r, _)| r.route.clone()),
            service: cx.backend.map(|b| b.backend.key.service.clone()),
            version: cx.backend.map(|b| b.backend.key.version.clone()),
            endpoint: endpoint.map(|e| e.addr),
            replica: endpoint.map(|e| e.name.clone()),
            retries: cx.retries,
            trace_id: Some(cx.trace.trace_id().to_string()),
        }
    });
}

/// The access line of a request, written when its response has been sent
/// (or has failed): `bytes` is then what the client was sent, and an
/// answer cut short says so (`complete: false`), as Envoy logs at stream
/// end. Only made when the access log is on.
pub(super) fn access_line(
    cx: &mut RequestCx<'_>,
    status: http::StatusCode,
    resp: Response<ResponseBody>,
) -> Response<ResponseBody> {
    let Some(req) = cx.summary.take() else {
        return resp;
    };
    let endpoint = cx.endpoint.as_deref();
    let line = AccessLine {
        service: cx.backend.map(|b| b.backend.key.service.clone()),
        version: cx.backend.map(|b| b.backend.key.version.clone()),
        replica: endpoint.map(|e| e.name.clone()),
        trace_id: cx.trace.trace_id(),
        req,
        status: status.as_u16(),
        start: cx.start,
        route: cx.route.map(|(r, _)| r.route.clone()),
        upstream: endpoint.map(|e| e.addr),
        retries: cx.retries,
        listener: cx.info.listener.clone(),
        client: cx.client,
    };
    let (parts, body) = resp.into_parts();
    if body.is_end_stream() {
        line.write(0, true);
        return Response::from_parts(parts, body);
    }
    Response::from_parts(
        parts,
        ResponseBody::Logged(Box::new(LoggedBody::new(body, line))),
    )
}

/// What an access line says, kept until the response body ends.
pub struct AccessLine {
    service: Option<Arc<str>>,
    version: Option<Arc<str>>,
    replica: Option<Arc<str>>,
    trace_id: TraceIdHex,
    req: RequestSummary,
    status: u16,
    start: Instant,
    route: Option<Arc<str>>,
    upstream: Option<SocketAddr>,
    retries: u32,
    listener: Arc<str>,
    client: IpAddr,
}

impl AccessLine {
    fn write(self, bytes: u64, complete: bool) {
        let status = self.status;
        let req = &self.req;
        // The field names are the log schema shared with the runtime's
        // service logs (README, "Logs"); `service`, `version` and
        // `replica` name what served the request.
        tracing::info!(
            target: "serin::access",
            service = self.service.as_deref().unwrap_or(""),
            version = self.version.as_deref().unwrap_or(""),
            replica = self.replica.as_deref().unwrap_or(""),
            trace_id = %self.trace_id,
            method = %req.method,
            path = %req.path,
            status,
            duration_ms = self.start.elapsed().as_secs_f64() * 1000.0,
            route = self.route.as_deref().unwrap_or(""),
            upstream = %OptionalAddr(self.upstream),
            bytes,
            complete,
            retries = self.retries,
            request_id = req.request_id.as_ref().and_then(|v| v.to_str().ok()).unwrap_or(""),
            listener = %self.listener,
            client = %self.client,
            "{} {} {status}",
            req.method,
            req.path,
        );
    }
}

/// A response body that counts what it gives and writes the access line
/// when it ends, fails, or is dropped before its end (the client went
/// away).
pub struct LoggedBody {
    inner: ResponseBody,
    line: Option<AccessLine>,
    bytes: u64,
}

impl LoggedBody {
    fn new(inner: ResponseBody, line: AccessLine) -> Self {
        Self {
            inner,
            line: Some(line),
            bytes: 0,
        }
    }

    fn write(&mut self, complete: bool) {
        if let Some(line) = self.line.take() {
            line.write(self.bytes, complete);
        }
    }
}

impl Body for LoggedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.bytes += data.len() as u64;
                }
                if this.inner.is_end_stream() {
                    this.write(true);
                }
            }
            Poll::Ready(None) => this.write(true),
            Poll::Ready(Some(Err(_))) => this.write(false),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for LoggedBody {
    fn drop(&mut self) {
        let complete = self.inner.is_end_stream();
        self.write(complete);
    }
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
