//! Phase 9: every request counted once, where it belongs, its span ended
//! and its access log line written.
//!
//! A request that reached a backend counts in that backend's metrics; its
//! figures (what the canary judges) take the answer only when the backend
//! gave it, or failed it (upstream side), or a fault was injected in its
//! name: a client that broke off or a fault of serin's own is not held
//! against a version. Requests a rule answered itself count for the rule,
//! and requests that matched nothing for no route.

use std::net::SocketAddr;

use http::header::HeaderValue;
use http::{Method, Request, Response};
use http_body::Body;
use hyper::body::Incoming;

use super::{RequestCx, Side};
use crate::body::ResponseBody;
use crate::headers;

/// What the access log needs of a request after its parts moved on.
pub struct RequestSummary {
    method: Method,
    path: String,
    pub(super) request_id: Option<HeaderValue>,
}

impl RequestSummary {
    /// As the client sent it (before normalisation, as Envoy logs it).
    pub fn of(req: &Request<Incoming>) -> Self {
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
    let Some(req) = &cx.summary else { return };
    let endpoint = cx.endpoint.as_deref();
    let bytes = resp.body().size_hint().exact().unwrap_or(0);
    // The field names are the log schema shared with the runtime's service
    // logs (README, "Logs"); `service`, `version` and `replica` name what
    // served the request.
    tracing::info!(
        target: "serin::access",
        service,
        version,
        replica = endpoint.map_or("", |e| &*e.name),
        trace_id = %cx.trace.trace_id(),
        method = %req.method,
        path = %req.path,
        status,
        duration_ms = elapsed.as_secs_f64() * 1000.0,
        route = cx.route.map_or("", |(r, _)| &*r.route),
        upstream = %OptionalAddr(endpoint.map(|e| e.addr)),
        bytes,
        retries = cx.retries,
        request_id = req.request_id.as_ref().and_then(|v| v.to_str().ok()).unwrap_or(""),
        listener = %cx.info.listener,
        client = %cx.info.remote.ip(),
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
