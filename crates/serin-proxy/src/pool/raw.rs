//! An upstream HTTP/1.1 exchange driven inside the request's own task: the
//! head (and a body already in hand) written straight to the pooled
//! socket, the answer parsed with `httparse` ([`super::wire`]), the body
//! read as the client takes it. Compared with hyper's client connection
//! this spares, per request, a channel send, a oneshot, a wake-up of the
//! connection's task and a second header map pass (the profile in
//! `bench/results/` shows where that went).
//!
//! Used for requests whose body is complete before the exchange starts
//! (every GET, small POSTs); a streaming upload or an upgrade goes through
//! hyper's client, which writes and reads at once.

use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::{Method, Request, Response};
use http_body::{Body, Frame, SizeHint};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use super::wire::{self, Chunked, Decoded, Framing, WireError};
use super::{ConnSlot, Failed, Pools, SendError};
use crate::body::{BoxError, ReplayBody, ResponseBody};

/// Read buffers grow by this much: a response head and a small body fit
/// in one read.
const READ_CHUNK: usize = 8 * 1024;

/// A body up to this size goes out in the same write as the head (one
/// syscall); a larger one is written after it, from its own buffer.
const COALESCE_BODY: usize = 16 * 1024;

/// An HTTP/1.1 connection to an upstream, between exchanges.
pub struct RawConn {
    stream: TcpStream,
    buf: BytesMut,
    reused: bool,
}

impl RawConn {
    pub(super) fn new(stream: TcpStream) -> Self {
        Self {
            stream,
            buf: BytesMut::new(),
            reused: false,
        }
    }

    /// Whether an idle connection can carry another request: not closed
    /// by the upstream, nothing unasked-for waiting on it. Free for a
    /// healthy connection: tokio clears a socket's readiness when a read
    /// leaves the buffer short (as the last read of an answer does), so
    /// only an event since then (a close, stray bytes) costs a look, one
    /// non-blocking read. An upstream's close that the reactor has not
    /// seen yet is caught by [`send`]: a safe request goes again on a new
    /// connection, as Go's HTTP client does.
    pub(super) fn still_usable(&self) -> bool {
        let mut cx = Context::from_waker(Waker::noop());
        if self.stream.poll_read_ready(&mut cx).is_pending() {
            return true;
        }
        let mut probe = [0u8; 1];
        matches!(self.stream.try_read(&mut probe), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
    }
}

/// What an exchange needs to give its connection back, or to open a new
/// one.
pub struct Lease {
    pub(super) pools: Rc<Pools>,
    pub(super) ep: u64,
    pub(super) addr: std::net::SocketAddr,
    pub(super) connect_timeout: Duration,
    pub(super) max_idle: usize,
    /// Let go (and waiting requests told) when the exchange is over.
    pub(super) slot: ConnSlot,
}

impl Lease {
    fn give_back(self, mut conn: RawConn) {
        conn.reused = true;
        self.pools.put_raw_idle(self.ep, conn, self.max_idle);
        drop(self.slot);
    }
}

/// How an exchange failed before the upstream answered.
enum Failure {
    /// A reused connection gave out before the upstream answered a byte:
    /// most likely closed by the upstream while idle.
    Stale(WireError),
    /// Nothing was written.
    NotSent(WireError),
    Broken(WireError),
}

/// Sends `req` on `conn` and reads the answer's head. A reused connection
/// found closed is replaced by a new one for a request that is safe to
/// send again.
pub async fn send(
    conn: RawConn,
    lease: Lease,
    req: Request<ReplayBody>,
) -> Result<Response<ResponseBody>, Failed> {
    let Some(body) = req.body().buffered() else {
        let e = WireError::Malformed("request body not in hand");
        return Err((SendError::WireNotSent(e), Some(Box::new(req))));
    };
    let mut head = Vec::with_capacity(256 + body.len().min(COALESCE_BODY));
    let target = req.uri().path_and_query().map_or("/", |pq| pq.as_str());
    let authority = req.uri().authority().map(http::uri::Authority::as_str);
    wire::encode_request_head(
        &mut head,
        req.method(),
        target,
        req.headers(),
        authority,
        body.len(),
    );
    let coalesce = body.len() <= COALESCE_BODY;
    if coalesce {
        head.extend_from_slice(&body);
    }
    let body = (!coalesce).then_some(body);
    let (lease, failure) = match exchange(conn, lease, req.method(), &head, body.as_ref()).await {
        Ok(resp) => return Ok(resp),
        Err(failed) => failed,
    };
    match failure {
        Failure::Stale(_) if is_safe(req.method()) => {}
        Failure::Stale(e) | Failure::Broken(e) => return Err((SendError::Wire(e), None)),
        Failure::NotSent(e) => return Err((SendError::WireNotSent(e), Some(Box::new(req)))),
    }
    let stream = match super::connect_addr(lease.addr, lease.connect_timeout).await {
        Ok(s) => s,
        Err(e) => return Err((e, Some(Box::new(req)))),
    };
    match exchange(
        RawConn::new(stream),
        lease,
        req.method(),
        &head,
        body.as_ref(),
    )
    .await
    {
        Ok(resp) => Ok(resp),
        Err((_, Failure::NotSent(e))) => Err((SendError::WireNotSent(e), Some(Box::new(req)))),
        Err((_, Failure::Stale(e) | Failure::Broken(e))) => Err((SendError::Wire(e), None)),
    }
}

/// Methods a client may expect to be sent again after a connection gave
/// out (RFC 9110 §9.2.2's safe methods, as Go's client chooses).
fn is_safe(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE
    )
}

async fn exchange(
    mut conn: RawConn,
    lease: Lease,
    method: &Method,
    head: &[u8],
    body: Option<&Bytes>,
) -> Result<Response<ResponseBody>, (Lease, Failure)> {
    let reused = conn.reused;
    let failed = |e: WireError, answered: bool| {
        if reused && !answered {
            Failure::Stale(e)
        } else {
            Failure::Broken(e)
        }
    };
    if let Err(e) = write_request(&mut conn.stream, head, body).await {
        let f = match e {
            Written::Nothing(e) if reused => Failure::Stale(e.into()),
            Written::Nothing(e) => Failure::NotSent(e.into()),
            Written::Part(e) => failed(e.into(), false),
        };
        return Err((lease, f));
    }
    let parsed = loop {
        match wire::parse_response_head(
            &mut conn.buf,
            method,
            super::MAX_RESPONSE_HEAD_BYTES,
            super::MAX_RESPONSE_HEADERS,
        ) {
            // Interim answers (100 Continue, 103 Early Hints) are not
            // passed on; the final one follows on the same connection.
            Ok(Some(h)) if h.status.is_informational() => {}
            Ok(Some(h)) => break h,
            Ok(None) => {
                let answered = !conn.buf.is_empty();
                match read_more(&mut conn).await {
                    Ok(0) => return Err((lease, failed(WireError::Closed, answered))),
                    Ok(_) => {}
                    Err(e) => return Err((lease, failed(e.into(), answered))),
                }
            }
            Err(e) => return Err((lease, Failure::Broken(e))),
        }
    };
    let mut parts = Response::new(()).into_parts().0;
    parts.status = parsed.status;
    parts.version = parsed.version;
    parts.headers = parsed.headers;
    let body = match parsed.framing {
        Framing::Empty => {
            finish(conn, lease, parsed.keep_alive);
            ResponseBody::empty()
        }
        Framing::Length(n) if conn.buf.len() as u64 >= n => {
            // The whole body came with the head (the usual small answer):
            // the connection is free before the client is answered.
            let data = conn.buf.split_to(n as usize).freeze();
            finish(conn, lease, parsed.keep_alive);
            ResponseBody::full(data)
        }
        framing => ResponseBody::Raw(Box::new(RawBody {
            state: match framing {
                Framing::Length(n) => State::Length(n),
                Framing::Chunked => State::Chunked(Chunked::Size),
                _ => State::Close,
            },
            conn: Some((conn, lease)),
            keep_alive: parsed.keep_alive,
        })),
    };
    Ok(Response::from_parts(parts, body))
}

/// Ends an exchange whose body has been read: the connection goes back to
/// the pool when it can carry another request.
fn finish(conn: RawConn, lease: Lease, keep_alive: bool) {
    // Bytes beyond the answer were not asked for: the connection is out
    // of step and is closed.
    if keep_alive && conn.buf.is_empty() {
        lease.give_back(conn);
    }
}

enum Written {
    Nothing(io::Error),
    Part(io::Error),
}

async fn write_request(
    stream: &mut TcpStream,
    head: &[u8],
    body: Option<&Bytes>,
) -> Result<(), Written> {
    let mut sent = 0;
    while sent < head.len() {
        match stream.write(&head[sent..]).await {
            Ok(0) => {
                let e = io::Error::from(io::ErrorKind::WriteZero);
                return Err(if sent == 0 {
                    Written::Nothing(e)
                } else {
                    Written::Part(e)
                });
            }
            Ok(n) => sent += n,
            Err(e) if sent == 0 => return Err(Written::Nothing(e)),
            Err(e) => return Err(Written::Part(e)),
        }
    }
    if let Some(body) = body {
        stream.write_all(body).await.map_err(Written::Part)?;
    }
    Ok(())
}

async fn read_more(conn: &mut RawConn) -> io::Result<usize> {
    if conn.buf.capacity() - conn.buf.len() < READ_CHUNK / 4 {
        conn.buf.reserve(READ_CHUNK);
    }
    tokio::io::AsyncReadExt::read_buf(&mut conn.stream, &mut conn.buf).await
}

enum State {
    Length(u64),
    Chunked(Chunked),
    Close,
    Done,
}

/// The body of an upstream answer read from its connection as the client
/// takes it; the connection goes back to the pool when the body ends. A
/// body dropped or broken early closes its connection.
pub struct RawBody {
    state: State,
    conn: Option<(RawConn, Lease)>,
    keep_alive: bool,
}

impl RawBody {
    fn end(&mut self) {
        self.state = State::Done;
        if let Some((conn, lease)) = self.conn.take() {
            finish(conn, lease, self.keep_alive);
        }
    }

    fn fail(&mut self, e: WireError) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.state = State::Done;
        self.conn = None;
        Poll::Ready(Some(Err(Box::new(e))))
    }

    /// The next frame from what is buffered, if one can be made:
    /// `Ok(None)` when more must be read; `Ok(Some(None))` at the end.
    fn frame_from_buffer(&mut self) -> Result<Option<Option<Frame<Bytes>>>, WireError> {
        let Some((conn, _)) = self.conn.as_mut() else {
            return Ok(Some(None));
        };
        let buf = &mut conn.buf;
        let (frame, ended) = match &mut self.state {
            State::Done => return Ok(Some(None)),
            State::Length(_) | State::Close if buf.is_empty() => return Ok(None),
            State::Length(left) => {
                let n = usize::try_from(*left).unwrap_or(usize::MAX).min(buf.len());
                let data = buf.split_to(n).freeze();
                *left -= n as u64;
                (Some(Frame::data(data)), *left == 0)
            }
            State::Close => (Some(Frame::data(buf.split().freeze())), false),
            State::Chunked(decoder) => match decoder.decode(buf)? {
                Decoded::Data(data) => (Some(Frame::data(data)), false),
                Decoded::End(trailers) => (trailers.map(Frame::trailers), true),
                Decoded::NeedMore => return Ok(None),
            },
        };
        if ended {
            self.end();
        }
        Ok(Some(frame))
    }
}

impl Body for RawBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        loop {
            match this.frame_from_buffer() {
                Ok(Some(frame)) => return Poll::Ready(frame.map(Ok)),
                Ok(None) => {}
                Err(e) => return this.fail(e),
            }
            let Some((conn, _)) = this.conn.as_mut() else {
                return Poll::Ready(None);
            };
            if conn.buf.capacity() - conn.buf.len() < READ_CHUNK / 4 {
                conn.buf.reserve(READ_CHUNK);
            }
            match tokio_util::io::poll_read_buf(Pin::new(&mut conn.stream), cx, &mut conn.buf) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(0)) if matches!(this.state, State::Close) => {
                    this.state = State::Done;
                    this.conn = None;
                    return Poll::Ready(None);
                }
                // A body cut short is an error, so the client's answer is
                // cut short too rather than ended as if complete.
                Poll::Ready(Ok(0)) => return this.fail(WireError::Closed),
                Poll::Ready(Ok(_)) => {}
                Poll::Ready(Err(e)) => return this.fail(e.into()),
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.state, State::Done)
    }

    fn size_hint(&self) -> SizeHint {
        match self.state {
            State::Length(n) => SizeHint::with_exact(n),
            State::Done => SizeHint::with_exact(0),
            _ => SizeHint::default(),
        }
    }
}
