//! Listeners, workers and client connections.
//!
//! Each worker is a thread with its own single-threaded runtime, its own
//! connection pools and its own copy of every listening socket (the kernel
//! hands each accepted connection to one worker). Nothing on the request path
//! crosses threads.

use std::cell::Cell;
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use serin_config::proxy::ListenerConfig;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};

use crate::body::ClientBody;
use crate::metrics::ListenerLabels;
use crate::pool::{LocalExec, Pools};
use crate::request::{self, ConnInfo};
use crate::shared::Shared;
use crate::strict::{ConnFlags, RawHeadScanner};
use crate::tls;

mod http1;

/// A bound listening socket and its current settings. The socket outlives
/// reloads that keep its address; settings change in place.
pub struct ListenerSocket {
    /// The address bound (the OS's port when the config said 0).
    pub address: SocketAddr,
    /// The address as configured; a reload keeps the socket while it stays.
    pub configured: SocketAddr,
    pub socket: std::net::TcpListener,
    pub settings: ArcSwap<ListenerSettings>,
    /// Set to true to stop accepting on this socket.
    pub stop: watch::Sender<bool>,
    /// Client connections open on this listener (all workers).
    pub open: Arc<crate::resilience::Gauge>,
}

pub struct ListenerSettings {
    pub config: ListenerConfig,
    /// Certificates by SNI, reloaded when their files change.
    pub tls: Option<Arc<tls::ListenerTls>>,
    /// `config.name`, shared by every connection's [`ConnInfo`] rather
    /// than copied into each.
    pub name: Arc<str>,
}

impl ListenerSettings {
    pub fn new(config: ListenerConfig, tls: Option<Arc<tls::ListenerTls>>) -> Self {
        let name = config.name.as_str().into();
        Self { config, tls, name }
    }
}

impl ListenerSocket {
    /// Binds the listener's address. The error is the OS's, to be reported
    /// against the config line.
    pub fn bind(config: &ListenerConfig) -> std::io::Result<Self> {
        let domain = socket2::Domain::for_address(config.address);
        let sock =
            socket2::Socket::new(domain, socket2::Type::STREAM, Some(socket2::Protocol::TCP))?;
        // Restart without waiting for TIME_WAIT sockets of the last run.
        sock.set_reuse_address(true)?;
        sock.set_nonblocking(true)?;
        sock.bind(&config.address.into())?;
        sock.listen(4096)?;
        let socket: std::net::TcpListener = sock.into();
        let address = socket.local_addr()?;
        let (stop, _) = watch::channel(false);
        Ok(Self {
            address,
            configured: config.address,
            open: Arc::default(),
            socket,
            settings: ArcSwap::from_pointee(ListenerSettings::new(config.clone(), None)),
            stop,
        })
    }

    pub fn name(&self) -> String {
        self.settings.load().config.name.clone()
    }
}

/// What the control plane tells a worker.
pub enum WorkerCommand {
    Listen(Arc<ListenerSocket>),
}

/// The handle of a running worker thread.
pub struct WorkerHandle {
    pub commands: mpsc::UnboundedSender<WorkerCommand>,
    pub thread: Option<std::thread::JoinHandle<()>>,
}

/// Per-worker state shared by its connections.
pub struct WorkerCtx {
    pub shared: Arc<Shared>,
    pub pools: Rc<Pools>,
    pub connections: Connections,
    pub redis: crate::ratelimit::RedisConnections,
}

pub fn spawn_worker(id: usize, shared: Arc<Shared>) -> std::io::Result<WorkerHandle> {
    let (tx, mut rx) = mpsc::unbounded_channel::<WorkerCommand>();
    let thread = std::thread::Builder::new()
        .name(format!("serin-worker-{id}"))
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    tracing::error!(error = %e, "cannot start worker runtime");
                    return;
                }
            };
            let local = tokio::task::LocalSet::new();
            local.block_on(&rt, async move {
                let ctx = Rc::new(WorkerCtx {
                    shared: shared.clone(),
                    pools: Pools::new(),
                    connections: Connections::default(),
                    redis: Default::default(),
                });
                tokio::task::spawn_local(sweep_pools(ctx.clone()));
                tokio::task::spawn_local(Connections::supervise(ctx.clone()));
                let mut drain = shared.drain.subscribe();
                loop {
                    tokio::select! {
                        cmd = rx.recv() => match cmd {
                            Some(WorkerCommand::Listen(l)) => {
                                tokio::task::spawn_local(accept_loop(ctx.clone(), l));
                            }
                            None => break,
                        },
                        _ = drain.wait_for(|d| d.is_some()) => break,
                    }
                }
                // Draining: wait for connections to finish (bounded by the
                // drain deadline the control plane enforces).
                while shared.open_connections() > 0 {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    if shared.drain_expired() {
                        break;
                    }
                }
            });
        })?;
    Ok(WorkerHandle {
        commands: tx,
        thread: Some(thread),
    })
}

async fn sweep_pools(ctx: Rc<WorkerCtx>) {
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    loop {
        tick.tick().await;
        let snap = ctx.shared.snapshot.load();
        let live = ctx.shared.live_endpoint_ids();
        let timeout = snap
            .config
            .services
            .iter()
            .map(|s| s.pool_idle_timeout)
            .max()
            .unwrap_or(serin_config::proxy::defaults::POOL_IDLE_TIMEOUT);
        ctx.pools.sweep(timeout, |id| live.contains(&id));
        if let Some(tidy) = ctx.shared.worker_tidy {
            tidy();
        }
    }
}

async fn accept_loop(ctx: Rc<WorkerCtx>, listener: Arc<ListenerSocket>) {
    let std_listener = match listener.socket.try_clone() {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(error = %e, address = %listener.address, "cannot share listening socket");
            return;
        }
    };
    let tokio_listener = match tokio::net::TcpListener::from_std(std_listener) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(error = %e, address = %listener.address, "cannot register listening socket");
            return;
        }
    };
    let mut stop = listener.stop.subscribe();
    let mut drain = ctx.shared.drain.subscribe();
    loop {
        tokio::select! {
            biased;
            _ = stop.wait_for(|s| *s) => break,
            _ = drain.wait_for(|d| d.is_some()) => break,
            res = tokio_listener.accept() => match res {
                Ok((stream, remote)) => {
                    let max = listener.settings.load().config.limits.max_connections;
                    match listener.open.try_acquire(max) {
                        Some(permit) => {
                            // The connection's future is the task's, with no
                            // block around it that would keep its arguments
                            // a second time.
                            tokio::task::spawn_local(serve_connection(
                                ctx.clone(),
                                listener.clone(),
                                stream,
                                remote,
                                permit,
                            ));
                        }
                        None => shed_connection(&ctx, &listener, stream),
                    }
                }
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, address = %listener.address, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }
}

/// Over the listener's connection limit: a short 503 and close, without
/// reading the request (HTTP/1 clients see why; others see a closed
/// connection).
fn shed_connection(ctx: &WorkerCtx, listener: &ListenerSocket, stream: TcpStream) {
    const OVERLOADED: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain\r\nx-serin-overflow: maxConnections\r\nconnection: close\r\ncontent-length: 46\r\n\r\noverloaded: maxConnections reached; try later\n";
    let _ = stream.try_write(OVERLOADED);
    ctx.shared
        .metrics
        .shed
        .get_or_create(&crate::metrics::ShedLabels {
            scope: "listener".into(),
            name: listener.name(),
        })
        .inc();
}

struct OpenConnection {
    shared: Arc<Shared>,
    gauge: prometheus_client::metrics::gauge::Gauge,
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.shared.connection_closed();
        self.gauge.dec();
    }
}

/// Serves one accepted connection; `_permit` holds its place among the
/// listener's `maxConnections` until it ends.
async fn serve_connection(
    ctx: Rc<WorkerCtx>,
    listener: Arc<ListenerSocket>,
    mut stream: TcpStream,
    peer: SocketAddr,
    _permit: crate::resilience::Permit,
) {
    let settings = listener.settings.load_full();
    let cfg = &settings.config;
    let gauge = ctx
        .shared
        .metrics
        .active_connections
        .get_or_create(&ListenerLabels {
            listener: cfg.name.clone(),
        })
        .clone();
    gauge.inc();
    ctx.shared.connection_opened();
    let _open = OpenConnection {
        shared: ctx.shared.clone(),
        gauge,
    };
    let _ = stream.set_nodelay(true);
    let Some(remote) = client_of(&ctx, cfg, &mut stream, peer).await else {
        return;
    };
    let info = Rc::new(ConnInfo {
        listener: settings.name.clone(),
        remote,
        forwarded_for: crate::headers::forwarded_for_value(remote.ip()),
        tls: settings.tls.is_some(),
        flags: Arc::new(ConnFlags::default()),
        requests: Cell::new(0),
        peer: std::cell::OnceCell::new(),
    });
    match &settings.tls {
        None => serve_plain(ctx, info, cfg, stream).await,
        // Boxed, with hyper's HTTP/2 below: a plain HTTP/1.1 connection's
        // task keeps no room for their state.
        Some(listener_tls) => Box::pin(serve_tls(ctx, info, cfg, stream, listener_tls)).await,
    }
}

/// The connection's client: the peer, or, when the peer is a load balancer
/// the listener's `proxyProtocol` trusts, the source its PROXY header
/// names. `None`: a trusted peer sent no usable header; the connection is
/// closed (a balancer that does not speak the protocol is misconfigured,
/// and serving it would give every client the balancer's address).
async fn client_of(
    ctx: &WorkerCtx,
    cfg: &ListenerConfig,
    stream: &mut TcpStream,
    peer: SocketAddr,
) -> Option<SocketAddr> {
    let Some(proxy_protocol) = &cfg.proxy_protocol else {
        return Some(peer);
    };
    let peer_ip = peer.ip().to_canonical();
    if !proxy_protocol
        .trusted_cidrs
        .iter()
        .any(|net| net.contains(&peer_ip))
    {
        return Some(peer);
    }
    // The header is part of the request's head: it counts against the
    // header-read timeout. Boxed, and made inside the box: the read's state
    // (its buffer for the longest header, the timer) is over 1 KB, and
    // unboxed it would be room in every connection's task for its life.
    let header = Box::pin(unless_draining(
        ctx,
        tokio::time::timeout(
            cfg.limits.header_read_timeout,
            crate::proxy_protocol::read_header(stream),
        ),
    ));
    let problem = match header.await {
        Some(Ok(Ok(source))) => {
            let client = source.map_or(peer, |s| SocketAddr::new(s.ip().to_canonical(), s.port()));
            return Some(client);
        }
        Some(Ok(Err(e))) => e.to_string(),
        Some(Err(_)) => "no PROXY protocol header within the header-read timeout".to_string(),
        None => return None,
    };
    tracing::debug!(%peer, listener = %cfg.name, "closing a trusted peer's connection: {problem}");
    ctx.shared
        .metrics
        .rejected
        .get_or_create(&crate::metrics::RejectLabels {
            listener: cfg.name.clone(),
            reason: "proxy_protocol".to_string(),
        })
        .inc();
    None
}

/// A plain-TCP client connection: HTTP/2 with prior knowledge goes to
/// hyper; HTTP/1.1 is served by serin's own server, which hands the
/// connection to hyper at the first request it does not take.
async fn serve_plain(
    ctx: Rc<WorkerCtx>,
    info: Rc<ConnInfo>,
    cfg: &ListenerConfig,
    mut stream: TcpStream,
) {
    let limits = &cfg.limits;
    let remote = info.remote;
    // Prior knowledge: an HTTP/2 client starts with the preface. Waiting
    // for it counts against the header-read timeout.
    // Boxed (once per connection), and made inside the box: the
    // connection's task keeps no room for the sniff's timer after it.
    let first = Box::pin(unless_draining(
        &ctx,
        tokio::time::timeout(limits.header_read_timeout, sniff_h2_preface(&stream)),
    ));
    match first.await {
        Some(Ok(Some(false))) => {}
        Some(Ok(Some(true))) => {
            let io = RawHeadScanner::new(stream, info.flags.clone(), false);
            return Box::pin(serve_io(ctx, info, cfg, io, true)).await;
        }
        Some(Ok(None)) => return,
        Some(Err(_)) => {
            return tracing::debug!(%remote, "no request within the header-read timeout");
        }
        None => {
            return tracing::debug!(%remote, "draining: closing a connection that sent nothing");
        }
    }
    let ctl = ConnControl::register(&ctx, &info.flags, limits.idle_timeout);
    ctl.head_timeout.set(limits.header_read_timeout);
    let served = http1::serve(&ctx, &info, limits, &mut stream, &ctl);
    let Some(http1::Ending::HandOff(rest)) = supervised(&ctl, served).await else {
        return;
    };
    drop(ctl);
    let io = http1::Prefixed::new(stream, rest.freeze());
    let io = RawHeadScanner::after(io, info.flags.clone(), true, info.requests.get());
    Box::pin(serve_io(ctx, info, cfg, io, false)).await;
}

async fn serve_tls(
    ctx: Rc<WorkerCtx>,
    info: Rc<ConnInfo>,
    cfg: &ListenerConfig,
    stream: TcpStream,
    listener_tls: &tls::ListenerTls,
) {
    let remote = info.remote;
    let current = listener_tls.current();
    let handshake = tokio::time::timeout(
        cfg.limits.header_read_timeout,
        current.acceptor.accept(stream),
    );
    match unless_draining(&ctx, handshake).await {
        Some(Ok(Ok(tls_stream))) => {
            // The verified client certificate, for route matches and
            // x-forwarded-client-cert.
            if let Some(peer) = current.peer_identity(&tls_stream) {
                let _ = info.peer.set(Box::new(peer));
            }
            let h2 = tls::negotiated_h2(&tls_stream);
            let io = RawHeadScanner::new(tls_stream, info.flags.clone(), !h2);
            serve_io(ctx, info, cfg, io, h2).await;
        }
        Some(Ok(Err(e))) => tracing::debug!(error = %e, %remote, "TLS handshake failed"),
        Some(Err(_)) => tracing::debug!(%remote, "TLS handshake timed out"),
        None => {
            tracing::debug!(%remote, "draining: closing a connection in its TLS handshake")
        }
    }
}

/// Runs `first` (what a new connection does before hyper serves it: the
/// preface sniff or the TLS handshake), or gives `None` when the proxy
/// drains first: a connection that sent no request yet (clients open spare
/// ones) would otherwise hold the drain until its header-read timeout.
/// Bytes already there win, so a request that arrived is still served.
async fn unless_draining<F: std::future::Future>(ctx: &WorkerCtx, first: F) -> Option<F::Output> {
    let mut drain = ctx.shared.drain.subscribe();
    tokio::select! {
        biased;
        out = first => Some(out),
        _ = drain.wait_for(|d| d.is_some()) => None,
    }
}

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Peeks at the first bytes: `Some(true)` for the HTTP/2 preface,
/// `Some(false)` for anything else, `None` when the client went away.
async fn sniff_h2_preface(stream: &TcpStream) -> Option<bool> {
    let mut buf = [0u8; 24];
    loop {
        let n = stream.peek(&mut buf).await.ok()?;
        if n == 0 {
            return None;
        }
        if buf[..n] != H2_PREFACE[..n] {
            return Some(false);
        }
        if n == H2_PREFACE.len() {
            return Some(true);
        }
        // A prefix of the preface so far (a client sending it piecemeal):
        // the peeked bytes keep the socket readable, so poll again later.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn serve_io<T>(
    ctx: Rc<WorkerCtx>,
    info: Rc<ConnInfo>,
    cfg: &ListenerConfig,
    io: RawHeadScanner<T>,
    h2: bool,
) where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let limits = &cfg.limits;
    let flags = info.flags.clone();
    let svc_ctx = ctx.clone();
    // Boxed where it is made: hyper moves a stream's future into its
    // wrapper, then the executor into its task, and each move copies the
    // whole request future (several KB); boxed, only the box moves.
    let service = service_fn(move |req: http::Request<hyper::body::Incoming>| {
        Box::pin(request::handle(
            svc_ctx.clone(),
            info.clone(),
            req.map(ClientBody::Streamed),
        ))
    });
    if h2 {
        let mut builder = hyper::server::conn::http2::Builder::new(LocalExec);
        builder
            .timer(TokioTimer::new())
            .max_concurrent_streams(limits.http2_max_concurrent_streams)
            .max_header_list_size(
                u32::try_from(limits.max_request_header_bytes).unwrap_or(u32::MAX),
            )
            .max_pending_accept_reset_streams(Some(50))
            .max_local_error_reset_streams(Some(256))
            .keep_alive_interval(Some(Duration::from_secs(30)))
            .keep_alive_timeout(Duration::from_secs(20));
        let conn = builder.serve_connection(TokioIo::new(io), service);
        drive(&ctx, &flags, limits.idle_timeout, conn, |c| {
            c.graceful_shutdown()
        })
        .await;
    } else {
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_read_timeout)
            .max_headers(limits.max_request_headers)
            .max_header_size(limits.max_request_header_bytes);
        let conn = builder
            .serve_connection(TokioIo::new(io), service)
            .with_upgrades();
        drive(&ctx, &flags, limits.idle_timeout, conn, |c| {
            c.graceful_shutdown()
        })
        .await;
    }
}

/// What a worker's supervisor tells one connection.
#[derive(Default)]
pub struct ConnControl {
    /// Start a graceful shutdown (drain, idle).
    shutdown: Cell<bool>,
    /// Stop now (the drain deadline passed).
    kill: Cell<bool>,
    waker: std::cell::RefCell<Option<std::task::Waker>>,
    flags: Arc<ConnFlags>,
    idle_timeout: Cell<Duration>,
    /// Set by serin's own HTTP/1.1 server while it waits for a request
    /// head: the header-read timeout applies then, as hyper applies it
    /// from the end of one answer to the next head (README,
    /// `headerReadTimeout`), without a timer per request.
    awaiting_head: Cell<bool>,
    head_timeout: Cell<Duration>,
    /// The activity count seen at the last sweep, and when it last changed.
    seen: Cell<(u64, Option<tokio::time::Instant>)>,
}

impl ConnControl {
    /// A connection's control, on the worker's supervisor list.
    fn register(ctx: &WorkerCtx, flags: &Arc<ConnFlags>, idle: Duration) -> Rc<Self> {
        let ctl = Rc::new(ConnControl {
            flags: flags.clone(),
            idle_timeout: Cell::new(idle),
            ..Default::default()
        });
        if ctx.shared.is_draining() {
            ctl.shutdown.set(true);
        }
        ctx.connections.register(&ctl);
        ctl
    }

    /// How long the connection may stay without a byte read or written.
    fn quiet_limit(&self) -> Duration {
        if self.awaiting_head.get() {
            self.head_timeout.get().min(self.idle_timeout.get())
        } else {
            self.idle_timeout.get()
        }
    }

    fn wake(&self) {
        if let Some(w) = self.waker.borrow().as_ref() {
            w.wake_by_ref();
        }
    }
}

/// The worker's connections, swept now and then for idleness and drain.
/// One timer per worker instead of one per connection, and nothing polled
/// per request.
#[derive(Default)]
pub struct Connections {
    list: std::cell::RefCell<Vec<std::rc::Weak<ConnControl>>>,
}

/// How often connections are checked for idleness and drain deadlines.
const SWEEP_INTERVAL: Duration = Duration::from_millis(250);

impl Connections {
    fn register(&self, ctl: &Rc<ConnControl>) {
        self.list.borrow_mut().push(Rc::downgrade(ctl));
    }

    /// Runs for the life of the worker.
    pub async fn supervise(ctx: Rc<WorkerCtx>) {
        let mut tick = tokio::time::interval(SWEEP_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let now = tokio::time::Instant::now();
            let draining = ctx.shared.is_draining();
            let expired = ctx.shared.drain_expired();
            ctx.connections.list.borrow_mut().retain(|weak| {
                let Some(ctl) = weak.upgrade() else {
                    return false;
                };
                let activity = ctl.flags.activity();
                let (last, since) = ctl.seen.get();
                let since = if since.is_none() || activity != last {
                    now
                } else {
                    since.unwrap_or(now)
                };
                ctl.seen.set((activity, Some(since)));
                if expired {
                    ctl.kill.set(true);
                    ctl.wake();
                } else if !ctl.shutdown.get()
                    && (draining || now.duration_since(since) >= ctl.quiet_limit())
                {
                    // HTTP/1: finish the request in flight, answer with
                    // `Connection: close`; HTTP/2: GOAWAY, finish open
                    // streams. An idle connection just closes.
                    ctl.shutdown.set(true);
                    ctl.wake();
                }
                true
            });
        }
    }
}

pin_project_lite::pin_project! {
    /// A client connection under its supervisor's control: `graceful`
    /// starts its shutdown when the supervisor asks; it is dropped when
    /// the drain deadline passes.
    struct Controlled<'c, C, G> {
        #[pin]
        conn: C,
        ctl: &'c ConnControl,
        graceful: G,
        shutdown_started: bool,
    }
}

impl<C, G> std::future::Future for Controlled<'_, C, G>
where
    C: std::future::Future,
    G: Fn(Pin<&mut C>),
{
    /// `None`: stopped by the supervisor.
    type Output = Option<C::Output>;

    fn poll(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        let mut this = self.project();
        {
            let mut w = this.ctl.waker.borrow_mut();
            if !w.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                *w = Some(cx.waker().clone());
            }
        }
        if this.ctl.kill.get() {
            return std::task::Poll::Ready(None);
        }
        if this.ctl.shutdown.get() && !*this.shutdown_started {
            *this.shutdown_started = true;
            (this.graceful)(this.conn.as_mut());
        }
        this.conn.poll(cx).map(Some)
    }
}

/// Runs a connection that watches `ctl.shutdown` itself (serin's own
/// HTTP/1.1 server) until it ends or the drain deadline stops it.
fn supervised<'c, F: std::future::Future + 'c>(
    ctl: &'c ConnControl,
    conn: F,
) -> impl std::future::Future<Output = Option<F::Output>> + 'c {
    // Not an `async fn`: one would keep `conn` in its own state beside
    // the `Controlled` it is moved into, twice the room in every
    // connection's task for its life.
    Controlled {
        conn,
        ctl,
        graceful: |_: Pin<&mut F>| {},
        shutdown_started: false,
    }
}

/// Runs a hyper client connection to its end under the worker's
/// supervisor.
async fn drive<C, E>(
    ctx: &WorkerCtx,
    flags: &Arc<ConnFlags>,
    idle: Duration,
    conn: C,
    graceful: impl Fn(Pin<&mut C>),
) where
    C: std::future::Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    let ctl = ConnControl::register(ctx, flags, idle);
    let controlled = Controlled {
        conn,
        ctl: &ctl,
        graceful,
        shutdown_started: false,
    };
    if let Some(Err(e)) = controlled.await {
        tracing::debug!(error = %e, "client connection ended with an error");
    }
}
