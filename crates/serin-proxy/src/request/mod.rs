//! The request path. [`handle`] runs one request through its phases, in
//! order, each in a module of its own:
//!
//! 1. [`downstream`]: what the client sent is checked (strict framing,
//!    Host), the path normalised, a request id and trace context set;
//! 2. [`route`]: the rule, on the normalised path;
//!    A body declared over the [`crate::body_limit`] is refused here.
//! 3. request filters ([`crate::filters`]), in the rule's order, after a
//!    CORS filter has answered a preflight (before auth, whatever its
//!    place; its headers go on every answer of the rule); claims a JWT
//!    filter copies into headers route the request again ([`rule`]);
//! 4. [`admission`] of the rule: rate limit, concurrency limit;
//! 5. the weighted pick of a backend ([`route`]; a rule with none, or the
//!    share of a backendRef that cannot be served, answers 500);
//! 6. [`admission`] of the backend: fault injection; the circuit breaker
//!    is taken by the upstream phase;
//! 7. [`upstream`]: attempts on pooled connections with deadlines, each
//!    followed by the [`retry`] decision (or [`upgrade`] for a tunnel);
//! 8. response filters;
//! 9. on every answer: the CORS headers, [`crate::compression`] of the
//!    listener; then [`log`]: metrics, trace, access log.
//!
//! A phase fails with a [`ProxyError`], which says who is to blame and
//! chooses the answer; a phase that answers on the rule's behalf (a
//! redirect, a denial, a 429) returns the answer instead.

mod admission;
mod downstream;
pub mod error;
mod grpc;
mod log;
pub mod path;
pub mod retry;
mod route;
mod rule;
mod session;
mod upgrade;
mod upstream;

use std::cell::Cell;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use crate::body::ClientBody;
use http::header::{self, HeaderValue};
use http::{Request, Response, Version};
use serin_config::proxy::{CompressionConfig, ContentCoding, MatchConfig};

pub use error::{ProxyError, Side};
pub use grpc::GrpcBody;
pub(crate) use log::LoggedBody;
pub(crate) use upstream::strip_response;

use crate::body::ResponseBody;
use crate::endpoints::Endpoint;
use crate::filters::{CompiledCors, Flow};
use crate::metrics::RejectLabels;
use crate::mirror::CompiledMirror;
use crate::server::WorkerCtx;
use crate::snapshot::{CompiledBackendRef, CompiledRule, Snapshot};
use crate::strict::ConnFlags;
use crate::telemetry::RequestTrace;

/// What the request path knows of the client connection.
pub struct ConnInfo {
    pub listener: Arc<str>,
    pub remote: SocketAddr,
    /// `remote`'s address as `x-forwarded-for` carries it.
    pub forwarded_for: HeaderValue,
    pub tls: bool,
    pub flags: Arc<ConnFlags>,
    pub requests: Cell<u64>,
    /// The client certificate verified in the TLS handshake, if any;
    /// boxed, so a connection without one (most) keeps 8 bytes for it.
    pub peer: std::cell::OnceCell<Box<crate::tls::PeerIdentity>>,
}

/// One request's state as it moves through the phases. Everything it
/// borrows lives in the snapshot the request started on.
pub struct RequestCx<'s> {
    pub ctx: &'s Rc<WorkerCtx>,
    pub info: &'s ConnInfo,
    pub snapshot: &'s Snapshot,
    pub start: Instant,
    /// The client's HTTP version (the request's changes on its way up).
    pub client_version: Version,
    pub trace: RequestTrace,
    /// What the access log needs of the request, when it is on.
    pub summary: Option<log::RequestSummary>,
    /// The rule that routed the request and the match that chose it.
    pub route: Option<(&'s Arc<CompiledRule>, &'s MatchConfig)>,
    /// The backend the request went to.
    pub backend: Option<&'s CompiledBackendRef>,
    /// The endpoint of the last attempt.
    pub endpoint: Option<Arc<Endpoint>>,
    pub retries: u32,
    /// Mirrors the rule's RequestMirror filters asked for.
    pub mirrors: Vec<&'s CompiledMirror>,
    /// Set when serin answered for a failure: who caused it.
    pub failure: Option<Side>,
    /// The listener's compression and the coding the client accepts best.
    pub compress: Option<(&'s CompressionConfig, Option<ContentCoding>)>,
    /// The rule's CORS filter and the request's `Origin`, for the answer.
    pub cors: Option<(&'s CompiledCors, Option<HeaderValue>)>,
    /// The client's address: the peer unless the listener trusts proxies
    /// to name it (see [`crate::client_addr`]).
    pub client: std::net::IpAddr,
    /// The request is a gRPC call (its status is counted, `grpc-timeout`
    /// caps its deadline).
    pub grpc: bool,
    /// The rule keeps sessions: the one the request carried, if it holds.
    pub session: Option<SessionCx<'s>>,
}

/// A request of a rule with `sessionPersistence`.
pub struct SessionCx<'s> {
    pub config: &'s serin_config::proxy::SessionPersistenceConfig,
    pub held: Option<session::Session>,
    /// The endpoint to try first: the session's, when its backend serves.
    pub endpoint: Option<SocketAddr>,
    pub now: u64,
}

/// The path match of a request not (yet) routed.
static NO_MATCH: MatchConfig = MatchConfig {
    path: serin_config::proxy::PathMatch::PathPrefix(String::new()),
    headers: Vec::new(),
    query_params: Vec::new(),
    method: None,
    client_certificate: Vec::new(),
};

impl<'s> RequestCx<'s> {
    /// The match that routed the request.
    pub fn matched(&self) -> &'s MatchConfig {
        self.route.map_or(&NO_MATCH, |(_, m)| m)
    }

    /// The answer to a failure, counted where it belongs.
    fn fail(&mut self, e: &ProxyError) -> Response<ResponseBody> {
        tracing::debug!(error = %e, side = ?e.side(), "request failed");
        self.failure = Some(e.side());
        if let ProxyError::Malformed(reason) | ProxyError::BadHost(reason) = e {
            self.count_rejected(reason);
        } else if let ProxyError::PathRejected(r) = e {
            self.count_rejected(r.label());
        } else if let ProxyError::BodyTooLarge(_) = e {
            self.count_rejected(e.label());
        }
        e.response()
    }

    fn count_rejected(&self, reason: &str) {
        self.ctx
            .shared
            .metrics
            .rejected
            .get_or_create(&RejectLabels {
                listener: self.info.listener.to_string(),
                reason: reason.to_string(),
            })
            .inc();
    }
}

/// Serves one request. Never fails: every problem becomes a response.
pub async fn handle(
    ctx: Rc<WorkerCtx>,
    info: Rc<ConnInfo>,
    mut req: Request<ClientBody>,
) -> Result<Response<ResponseBody>, Infallible> {
    let start = Instant::now();
    let number = info.requests.get() + 1;
    info.requests.set(number);
    let snapshot = ctx.shared.snapshot.load_full();
    // Kept only while someone taps: otherwise one atomic load.
    let tapped = ctx
        .shared
        .tap
        .active()
        .then(|| (req.method().to_string(), req.uri().path().to_string()));
    let trace = RequestTrace::start(
        snapshot.tracer.as_ref(),
        &mut req,
        &info.listener,
        info.remote.ip(),
    );
    let mut cx = RequestCx {
        ctx: &ctx,
        info: &info,
        snapshot: &snapshot,
        start,
        client_version: req.version(),
        trace,
        summary: snapshot.access_log.then(|| log::RequestSummary::of(&req)),
        route: None,
        backend: None,
        endpoint: None,
        retries: 0,
        mirrors: Vec::new(),
        failure: None,
        compress: None,
        cors: None,
        client: info.remote.ip(),
        grpc: grpc::is_call(&req),
        session: None,
    };
    let mut resp = match serve(&mut cx, req, number).await {
        Ok(resp) => resp,
        Err(e) => cx.fail(&e),
    };
    if let Some((cors, origin)) = &cx.cors {
        cors.on_response(origin.as_ref(), resp.headers_mut());
    }
    // serin's own answer to a gRPC call is reshaped below, not compressed.
    let grpc_local = cx.grpc && cx.failure.is_some();
    if let (Some((cfg, coding)), false) = (cx.compress, grpc_local) {
        resp = crate::compression::apply(cfg, coding, resp);
    }
    own_framing(&cx, &mut resp);
    log::finish(&cx, &resp);
    if let (true, Some(backend)) = (cx.grpc, cx.backend) {
        resp = grpc::observe(backend, resp);
    }
    let status = resp.status();
    if let Some((method, path)) = tapped {
        log::tap(&cx, method, path, status.as_u16());
    }
    if grpc_local {
        resp = grpc::local_answer(resp);
    }
    Ok(log::access_line(&mut cx, status, resp))
}

/// The phases, in order.
async fn serve<'s>(
    cx: &mut RequestCx<'s>,
    mut req: Request<ClientBody>,
    number: u64,
) -> Result<Response<ResponseBody>, ProxyError> {
    let table = cx
        .snapshot
        .table(&cx.info.listener)
        .ok_or_else(|| ProxyError::NoRoute("no routes on this listener".into()))?;
    if let Some(trusted) = &table.edge.client_address {
        cx.client = trusted.client(cx.info.remote.ip(), req.headers());
    }
    if let Some(cfg) = &table.edge.compression {
        cx.compress = Some((cfg, crate::compression::negotiate(cfg, &req)));
    }
    if let Some(answer) = downstream::check(cx, table, &mut req, number)? {
        return Ok(answer);
    }
    let (rule, body_limit) = match rule::enter(cx, table, &mut req).await? {
        rule::Entered::Rule(rule, limit) => (rule, limit),
        rule::Entered::Answer(answer) => return Ok(answer),
    };
    let admitted = match admission::rule(cx, rule, &req).await? {
        admission::RuleAdmission::Admitted(a) => a,
        admission::RuleAdmission::Refused(answer) => return Ok(answer),
    };
    let backend = match &rule.session_persistence {
        None => route::backend(rule)?,
        Some(config) => sticky_backend(cx, rule, config, &req)?,
    };
    cx.backend = Some(backend);
    for filter in &backend.filters {
        if let Flow::Respond(answer) = filter.on_request(cx, &mut req).await {
            return Ok(*answer);
        }
    }
    if let Some(answer) = admission::fault(backend, rule, &req).await {
        return Ok(answer);
    }
    let mut resp = if upgrade::is_upgrade(&req) {
        upgrade::forward(cx, req, backend).await?
    } else {
        upstream::forward(cx, req, rule, backend, body_limit).await?
    };
    if let Some(sticky) = &cx.session {
        renew_session(cx, sticky, backend, &mut resp);
    }
    for filter in backend.filters.iter().chain(&rule.filters) {
        filter.on_response(&mut resp);
    }
    admitted.on_response(&mut resp);
    Ok(resp)
}

/// The backend of the session the request carries, while it holds and
/// that backend serves; else the weighted pick, which starts a session.
fn sticky_backend<'s>(
    cx: &mut RequestCx<'s>,
    rule: &'s CompiledRule,
    config: &'s serin_config::proxy::SessionPersistenceConfig,
    req: &Request<ClientBody>,
) -> Result<&'s CompiledBackendRef, ProxyError> {
    let now = session::now();
    let held = session::read(config, req.headers(), now);
    let kept = held
        .as_ref()
        .and_then(|s| Some((rule.backend_named(&s.service, &s.version)?, s.endpoint)));
    let (backend, endpoint) = match kept {
        Some((b, endpoint)) => (b, Some(endpoint)),
        None => (route::backend(rule)?, None),
    };
    cx.session = Some(SessionCx {
        config,
        held,
        endpoint,
        now,
    });
    Ok(backend)
}

/// Tells the client the session the answer belongs to (see
/// [`session::answer`]).
fn renew_session(
    cx: &RequestCx<'_>,
    sticky: &SessionCx<'_>,
    backend: &CompiledBackendRef,
    resp: &mut Response<ResponseBody>,
) {
    let Some(endpoint) = &cx.endpoint else {
        return;
    };
    let key = &backend.backend.key;
    let began = sticky
        .held
        .as_ref()
        .filter(|h| *h.service == *key.service && *h.version == *key.version)
        .map_or(sticky.now, |h| h.began);
    let serving = session::Session {
        service: key.service.to_string(),
        version: key.version.to_string(),
        endpoint: endpoint.addr,
        began,
        seen: sticky.now,
    };
    session::answer(
        sticky.config,
        sticky.held.as_ref(),
        serving,
        &cx.matched().path,
        cx.info.tls,
        resp.headers_mut(),
    );
}

/// serin speaks for itself on every response: its own HTTP version (RFC
/// 9110 §6.2; an HTTP/1.0 upstream's answer goes out as HTTP/1.1), and
/// `Connection: close` to HTTP/1 clients while draining.
fn own_framing(cx: &RequestCx<'_>, resp: &mut Response<ResponseBody>) {
    *resp.version_mut() = if cx.client_version >= Version::HTTP_2 {
        cx.client_version
    } else {
        Version::HTTP_11
    };
    if cx.ctx.shared.is_draining() && cx.client_version < Version::HTTP_2 {
        resp.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
}
