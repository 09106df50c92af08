//! Upstream connections, pooled per worker thread.
//!
//! Each worker owns its pools (no lock, no cross-thread wake-up): HTTP/1.1
//! connections are kept idle per endpoint and reused last-in first-out;
//! an h2c endpoint gets one multiplexed connection per worker. A response
//! body gives its connection back when it ends, so a connection is reused
//! only once the previous exchange is really over.
//!
//! An HTTP/1.1 request whose body is in hand is exchanged by serin itself
//! in the request's task ([`raw`]); a streaming upload or an upgrade goes
//! through hyper's client connection, which runs a task of its own.

mod raw;
mod stream;
pub mod wire;

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioIo, TokioTimer};
use rustc_hash::FxHashMap;
use serin_config::proxy::UpstreamProtocol;
use tokio::net::TcpStream;

use crate::body::{ReplayBody, ResponseBody};
use crate::endpoints::Endpoint;
use crate::tls::upstream::UpstreamTls;
pub use raw::RawBody;
use raw::{Lease, RawConn};
pub use stream::UpstreamStream;
use wire::WireError;

/// Runs hyper's background tasks on the worker's own thread.
#[derive(Clone, Copy, Debug, Default)]
pub struct LocalExec;

impl<F> hyper::rt::Executor<F> for LocalExec
where
    F: Future + 'static,
{
    fn execute(&self, fut: F) {
        tokio::task::spawn_local(fut);
    }
}

/// Why an exchange with an upstream failed, and whether it may have reached
/// the upstream (which decides whether a retry is safe).
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("connect to {addr} failed: {source}")]
    Connect {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("connect to {0} timed out")]
    ConnectTimeout(std::net::SocketAddr),
    /// The TLS handshake failed (the certificate not trusted, no shared
    /// version, ALPN refused): nothing was sent.
    #[error("TLS handshake with {addr} failed: {source}")]
    Tls {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    /// The request was never written (connection closed first, stream
    /// refused): safe to retry whatever the method.
    #[error("request not sent: {0}")]
    NotSent(hyper::Error),
    /// A circuit breaker limit (`maxPendingRequests`) refused the request.
    #[error("circuit breaker: {0} reached")]
    Overflow(&'static str),
    /// The upstream may have seen the request.
    #[error("upstream exchange failed: {0}")]
    Upstream(hyper::Error),
    /// serin's own HTTP/1.1 exchange failed after the request went out
    /// (or partly out): the upstream may have seen it.
    #[error("{0}")]
    Wire(WireError),
    /// serin's own HTTP/1.1 exchange failed before a byte was written.
    #[error("request not sent: {0}")]
    WireNotSent(WireError),
}

impl SendError {
    /// True when the upstream provably did not process the request.
    pub fn never_reached_upstream(&self) -> bool {
        !matches!(self, Self::Upstream(_) | Self::Wire(_))
    }

    /// The upstream's response head was over [`MAX_RESPONSE_HEAD_BYTES`]
    /// or [`MAX_RESPONSE_HEADERS`].
    pub fn is_head_too_large(&self) -> bool {
        match self {
            Self::Upstream(e) => e.is_parse_too_large(),
            Self::Wire(e) => matches!(e, WireError::HeadTooLarge),
            _ => false,
        }
    }

    pub fn is_connect(&self) -> bool {
        matches!(
            self,
            Self::Connect { .. } | Self::ConnectTimeout(_) | Self::Tls { .. }
        )
    }
}

fn classify(e: hyper::Error) -> SendError {
    if e.is_canceled() {
        return SendError::NotSent(e);
    }
    // An HTTP/2 stream refused (REFUSED_STREAM) was not processed.
    if let Some(h2) = std::error::Error::source(&e).and_then(|s| s.downcast_ref::<h2::Error>())
        && h2.reason() == Some(h2::Reason::REFUSED_STREAM)
    {
        return SendError::NotSent(e);
    }
    SendError::Upstream(e)
}

struct Idle {
    tx: http1::SendRequest<ReplayBody>,
    since: Instant,
    /// [`PoolSettings::tls_id`] of the connection.
    tls_id: u64,
}

struct RawIdle {
    conn: RawConn,
    since: Instant,
}

#[derive(Default)]
struct EndpointPool {
    idle: Vec<Idle>,
    raw_idle: Vec<RawIdle>,
    /// With its [`PoolSettings::tls_id`].
    h2: Option<(http2::SendRequest<ReplayBody>, u64)>,
}

/// An upstream's response head may be at most this large: the client's
/// side has the same bound (`maxRequestHeaderBytes`), and hyper's own
/// default (about 400 KB) would let one response hold that much memory per
/// connection. A larger head is a broken exchange (502).
pub(crate) const MAX_RESPONSE_HEAD_BYTES: usize =
    serin_config::proxy::defaults::MAX_REQUEST_HEADER_BYTES;
/// And have at most this many headers (as requests: Envoy's and Go's 100).
pub(crate) const MAX_RESPONSE_HEADERS: usize = serin_config::proxy::defaults::MAX_REQUEST_HEADERS;

/// A TCP connection to an upstream, within `timeout`.
async fn connect_addr(
    addr: std::net::SocketAddr,
    timeout: Duration,
) -> Result<TcpStream, SendError> {
    let stream = tokio::time::timeout(timeout, TcpStream::connect(addr))
        .await
        .map_err(|_| SendError::ConnectTimeout(addr))?
        .map_err(|source| SendError::Connect { addr, source })?;
    // Requests are small and latency-bound: do not wait to coalesce.
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

/// A connection to an upstream, within `timeout`, over TLS when `tls`
/// says so (the handshake has `timeout` of its own).
pub(crate) async fn connect(
    addr: std::net::SocketAddr,
    timeout: Duration,
    tls: Option<&UpstreamTls>,
) -> Result<UpstreamStream, SendError> {
    let tcp = connect_addr(addr, timeout).await?;
    let Some(tls) = tls else {
        return Ok(UpstreamStream::Plain(tcp));
    };
    match tokio::time::timeout(timeout, tls.handshake(tcp)).await {
        Ok(Ok(stream)) => Ok(UpstreamStream::Tls(Box::new(stream))),
        Ok(Err(source)) => Err(SendError::Tls { addr, source }),
        Err(_) => Err(SendError::ConnectTimeout(addr)),
    }
}

/// Settings of one service that the pool needs.
#[derive(Debug, Clone)]
pub struct PoolSettings {
    pub protocol: UpstreamProtocol,
    pub max_connections: usize,
    pub max_pending: usize,
    pub connect_timeout: Duration,
    pub max_idle: usize,
    pub idle_timeout: Duration,
    /// TLS to the endpoints; `None`: plain TCP.
    pub tls: Option<Arc<UpstreamTls>>,
}

impl PoolSettings {
    /// Which TLS setting a connection was made with (0: plain TCP): a
    /// pooled connection serves only requests of the same one.
    fn tls_id(&self) -> u64 {
        self.tls.as_ref().map_or(0, |t| t.id)
    }
}

/// A worker's connection pools, keyed by endpoint id.
#[derive(Default)]
pub struct Pools {
    map: RefCell<FxHashMap<u64, EndpointPool>>,
}

impl Pools {
    pub fn new() -> Rc<Self> {
        Rc::new(Self::default())
    }

    fn take_idle(
        &self,
        ep: u64,
        settings: &PoolSettings,
    ) -> Option<http1::SendRequest<ReplayBody>> {
        let mut map = self.map.borrow_mut();
        let pool = map.get_mut(&ep)?;
        let now = Instant::now();
        while let Some(idle) = pool.idle.pop() {
            if idle.tx.is_closed()
                || now.duration_since(idle.since) > settings.idle_timeout
                || idle.tls_id != settings.tls_id()
            {
                continue;
            }
            return Some(idle.tx);
        }
        None
    }

    fn put_idle(&self, ep: u64, tx: http1::SendRequest<ReplayBody>, max_idle: usize, tls_id: u64) {
        if tx.is_closed() {
            return;
        }
        let mut map = self.map.borrow_mut();
        let pool = map.entry(ep).or_default();
        if pool.idle.len() < max_idle {
            pool.idle.push(Idle {
                tx,
                since: Instant::now(),
                tls_id,
            });
        }
    }

    fn take_raw_idle(&self, ep: u64, settings: &PoolSettings) -> Option<RawConn> {
        let mut map = self.map.borrow_mut();
        let pool = map.get_mut(&ep)?;
        let now = Instant::now();
        while let Some(mut idle) = pool.raw_idle.pop() {
            if now.duration_since(idle.since) > settings.idle_timeout
                || idle.conn.tls_id() != settings.tls_id()
                || !idle.conn.still_usable()
            {
                continue;
            }
            return Some(idle.conn);
        }
        None
    }

    fn put_raw_idle(&self, ep: u64, conn: RawConn, max_idle: usize) {
        let mut map = self.map.borrow_mut();
        let pool = map.entry(ep).or_default();
        if pool.raw_idle.len() < max_idle {
            pool.raw_idle.push(RawIdle {
                conn,
                since: Instant::now(),
            });
        }
    }

    /// One of the backend's `maxConnections` for an HTTP/1.1 exchange,
    /// waiting for one (in the `maxPendingRequests` waiting room) when all
    /// carry requests.
    async fn http1_slot(
        backend: &crate::endpoints::Backend,
        settings: &PoolSettings,
    ) -> Result<ConnSlot, SendError> {
        let mut pending: Option<crate::resilience::Permit> = None;
        loop {
            // Registered before looking, so a place freed between the
            // look and the wait is not missed.
            let freed = backend.connection_freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            if let Some(slot) = ConnSlot::take(backend, settings) {
                return Ok(slot);
            }
            if pending.is_none() {
                pending = Some(
                    backend
                        .pending
                        .try_acquire(settings.max_pending)
                        .ok_or(SendError::Overflow("maxPendingRequests"))?,
                );
            }
            // Woken when a place is freed, and only then: every place is
            // given back by `ConnSlot`'s drop, which frees it before it
            // tells, and the gauge never counts past its limit, so no
            // give-back goes unseen (the wake-ups once missed under load
            // were those two, fixed in a1562ec). The request's deadline
            // still bounds the wait.
            freed.await;
        }
    }

    /// A connection for serin's own HTTP/1.1 exchange ([`raw`]): a pooled
    /// one, or a new one.
    async fn checkout_raw(
        self: &Rc<Self>,
        ep: &Arc<Endpoint>,
        settings: &PoolSettings,
        backend: &crate::endpoints::Backend,
    ) -> Result<Conn, SendError> {
        let slot = Self::http1_slot(backend, settings).await?;
        let conn = match self.take_raw_idle(ep.id, settings) {
            Some(conn) => conn,
            None => {
                let tls = settings.tls.as_deref();
                let stream = connect(ep.addr, settings.connect_timeout, tls).await?;
                RawConn::new(stream, settings.tls_id())
            }
        };
        Ok(Conn::Raw {
            conn,
            lease: Lease {
                pools: self.clone(),
                ep: ep.id,
                addr: ep.addr,
                connect_timeout: settings.connect_timeout,
                tls: settings.tls.clone(),
                max_idle: settings.max_idle,
                slot,
            },
        })
    }

    /// A connection to an endpoint: a pooled one, or a new one. Failing here
    /// means the request was not sent (safe to retry anywhere).
    /// `request_in_hand`: the request's body is complete (see
    /// [`ReplayBody::buffered`]) and no upgrade is asked for, so serin's
    /// own HTTP/1.1 exchange can carry it.
    pub async fn checkout(
        self: &Rc<Self>,
        ep: &Arc<Endpoint>,
        settings: &PoolSettings,
        backend: &crate::endpoints::Backend,
        request_in_hand: bool,
    ) -> Result<Conn, SendError> {
        match settings.protocol {
            UpstreamProtocol::Http1 if request_in_hand => {
                self.checkout_raw(ep, settings, backend).await
            }
            UpstreamProtocol::Http1 => loop {
                let slot = Self::http1_slot(backend, settings).await?;
                let tx = match self.take_idle(ep.id, settings) {
                    Some(mut tx) => {
                        // Ready soon after the previous body ended; an error
                        // means the upstream closed it meanwhile.
                        if tx.ready().await.is_err() {
                            continue;
                        }
                        tx
                    }
                    None => {
                        let tls = settings.tls.as_deref();
                        let stream = connect(ep.addr, settings.connect_timeout, tls).await?;
                        let (tx, conn) = http1::Builder::new()
                            .max_header_size(MAX_RESPONSE_HEAD_BYTES)
                            .max_headers(MAX_RESPONSE_HEADERS)
                            .handshake(TokioIo::new(stream))
                            .await
                            .map_err(SendError::NotSent)?;
                        tokio::task::spawn_local(async move {
                            if let Err(e) = conn.with_upgrades().await {
                                tracing::debug!(error = %e, "upstream connection ended");
                            }
                        });
                        tx
                    }
                };
                return Ok(Conn::H1 {
                    tx,
                    pools: self.clone(),
                    ep: ep.id,
                    max_idle: settings.max_idle,
                    tls_id: settings.tls_id(),
                    slot,
                });
            },
            UpstreamProtocol::H2c | UpstreamProtocol::H2 => {
                let existing = {
                    let map = self.map.borrow();
                    map.get(&ep.id)
                        .and_then(|p| p.h2.clone())
                        .filter(|(tx, id)| !tx.is_closed() && *id == settings.tls_id())
                        .map(|(tx, _)| tx)
                };
                let mut tx = match existing {
                    Some(tx) => tx,
                    None => {
                        let slot = ConnSlot::take(backend, settings)
                            .ok_or(SendError::Overflow("maxConnections"))?;
                        let tls = settings.tls.as_deref();
                        let stream = connect(ep.addr, settings.connect_timeout, tls).await?;
                        let (tx, conn) = http2::Builder::new(LocalExec)
                            .timer(TokioTimer::new())
                            .handshake(TokioIo::new(stream))
                            .await
                            .map_err(SendError::NotSent)?;
                        tokio::task::spawn_local(async move {
                            let _slot = slot;
                            if let Err(e) = conn.await {
                                tracing::debug!(error = %e, "upstream h2 connection ended");
                            }
                        });
                        self.map.borrow_mut().entry(ep.id).or_default().h2 =
                            Some((tx.clone(), settings.tls_id()));
                        tx
                    }
                };
                tx.ready().await.map_err(SendError::NotSent)?;
                Ok(Conn::H2(tx))
            }
        }
    }

    /// Drops idle connections older than their timeout and pools of
    /// endpoints that are gone. Called now and then by the worker.
    pub fn sweep(&self, idle_timeout: Duration, live: impl Fn(u64) -> bool) {
        let now = Instant::now();
        let mut map = self.map.borrow_mut();
        map.retain(|id, pool| {
            if !live(*id) {
                return false;
            }
            pool.idle
                .retain(|i| !i.tx.is_closed() && now.duration_since(i.since) <= idle_timeout);
            pool.raw_idle.retain_mut(|i| {
                now.duration_since(i.since) <= idle_timeout && i.conn.still_usable()
            });
            if pool.h2.as_ref().is_some_and(|(tx, _)| tx.is_closed()) {
                pool.h2 = None;
            }
            !pool.idle.is_empty() || !pool.raw_idle.is_empty() || pool.h2.is_some()
        });
    }
}

/// One of a backend's `maxConnections`: held by an HTTP/1.1 connection while
/// it carries a request (an idle pooled connection holds none, so idle
/// connections of one worker never starve another's requests), and by an
/// h2c connection for its life. When it is let go, waiting requests are
/// told.
pub struct ConnSlot {
    permit: Option<crate::resilience::Permit>,
    freed: Arc<tokio::sync::Notify>,
}

impl ConnSlot {
    fn take(backend: &crate::endpoints::Backend, settings: &PoolSettings) -> Option<Self> {
        Some(Self {
            permit: Some(backend.connections.try_acquire(settings.max_connections)?),
            freed: backend.connection_freed.clone(),
        })
    }
}

impl Drop for ConnSlot {
    fn drop(&mut self) {
        // The place is given back before the waiters are told: a waiter on
        // another worker may run at once, and must find it free.
        drop(self.permit.take());
        self.freed.notify_waiters();
    }
}

/// A connection ready for one request.
pub enum Conn {
    H1 {
        tx: http1::SendRequest<ReplayBody>,
        pools: Rc<Pools>,
        ep: u64,
        max_idle: usize,
        tls_id: u64,
        slot: ConnSlot,
    },
    H2(http2::SendRequest<ReplayBody>),
    /// For serin's own HTTP/1.1 exchange.
    Raw {
        conn: RawConn,
        lease: Lease,
    },
}

/// A failed exchange, with the request when it was never sent.
/// (The request is boxed: a `Result` is as large as its larger side, and
/// every move of an answer would otherwise copy room for a request.)
pub type Failed = (SendError, Option<Box<Request<ReplayBody>>>);

impl Conn {
    /// Sends the request. When the connection failed before the request was
    /// written, the request comes back with the error, ready for another try.
    pub async fn send(self, req: Request<ReplayBody>) -> Result<Response<ResponseBody>, Failed> {
        match self {
            Conn::H1 {
                mut tx,
                pools,
                ep,
                max_idle,
                tls_id,
                slot,
            } => {
                let resp = tx.try_send_request(req).await.map_err(unsent)?;
                let upgrade = resp.status() == http::StatusCode::SWITCHING_PROTOCOLS;
                let ret = (!upgrade).then_some(GiveBack {
                    pools,
                    ep,
                    tx,
                    max_idle,
                    tls_id,
                    slot,
                });
                Ok(resp.map(|body| ResponseBody::Upstream(Box::new(PooledBody::new(body, ret)))))
            }
            Conn::H2(mut tx) => {
                let resp = tx.try_send_request(req).await.map_err(unsent)?;
                Ok(resp.map(|body| ResponseBody::Upstream(Box::new(PooledBody::new(body, None)))))
            }
            Conn::Raw { conn, lease } => raw::send(conn, lease, req).await,
        }
    }
}

fn unsent(mut e: hyper::client::conn::TrySendError<Request<ReplayBody>>) -> Failed {
    let req = e.take_message();
    let err = e.into_error();
    match req {
        Some(req) => (SendError::NotSent(err), Some(Box::new(req))),
        None => (classify(err), None),
    }
}

struct GiveBack {
    pools: Rc<Pools>,
    ep: u64,
    tx: http1::SendRequest<ReplayBody>,
    max_idle: usize,
    tls_id: u64,
    /// Let go (and waiting requests told) when the exchange is over.
    slot: ConnSlot,
}

impl GiveBack {
    fn give(self) {
        self.pools
            .put_idle(self.ep, self.tx, self.max_idle, self.tls_id);
        drop(self.slot);
    }
}

/// An upstream response body that returns its connection to the pool when
/// it ends. A body that breaks or is dropped early takes its connection
/// with it: a half-read response cannot be followed by another.
pub struct PooledBody {
    inner: Incoming,
    ret: Option<GiveBack>,
}

impl PooledBody {
    fn new(inner: Incoming, ret: Option<GiveBack>) -> Self {
        let mut body = Self { inner, ret };
        if body.inner.is_end_stream()
            && let Some(r) = body.ret.take()
        {
            r.give();
        }
        body
    }

    /// The raw upstream body (for upgrades, which take the connection).
    pub fn into_inner(self) -> Incoming {
        self.inner
    }
}

impl Body for PooledBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = &mut *self;
        let res = Pin::new(&mut this.inner).poll_frame(cx);
        match &res {
            Poll::Ready(None) => {
                if let Some(r) = this.ret.take() {
                    r.give();
                }
            }
            Poll::Ready(Some(Ok(_))) if this.inner.is_end_stream() => {
                if let Some(r) = this.ret.take() {
                    r.give();
                }
            }
            Poll::Ready(Some(Err(_))) => {
                this.ret = None;
            }
            _ => {}
        }
        res
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
