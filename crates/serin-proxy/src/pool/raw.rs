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
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::{Method, Request, Response};
use http_body::{Body, Frame, SizeHint};
use tokio::io::AsyncWriteExt;

use super::stream::UpstreamStream;
use super::wire::{self, Chunked, Decoded, Framing, WireError};
use super::{ConnSlot, Failed, Pools, SendError};
use crate::body::{BoxError, ReplayBody, ResponseBody};
use crate::tls::upstream::UpstreamTls;

/// A body up to this size goes out in the same write as the head (one
/// syscall); a larger one is written after it, from its own buffer.
const COALESCE_BODY: usize = 16 * 1024;

/// An HTTP/1.1 connection to an upstream, between exchanges.
pub struct RawConn {
    stream: UpstreamStream,
    buf: BytesMut,
    reused: bool,
    /// The TLS setting it was made with (0: plain TCP).
    tls_id: u64,
}

impl RawConn {
    pub(super) fn new(stream: UpstreamStream, tls_id: u64) -> Self {
        Self {
            stream,
            buf: BytesMut::new(),
            reused: false,
            tls_id,
        }
    }

    pub(super) fn tls_id(&self) -> u64 {
        self.tls_id
    }

    /// Whether an idle connection can carry another request (see
    /// [`UpstreamStream::still_usable`]). An upstream's close that the
    /// reactor has not seen yet is caught by [`send`]: a safe request goes
    /// again on a new connection, as Go's HTTP client does.
    pub(super) fn still_usable(&mut self) -> bool {
        self.stream.still_usable()
    }
}

/// What an exchange needs to give its connection back, or to open a new
/// one.
pub struct Lease {
    pub(super) pools: Rc<Pools>,
    pub(super) ep: u64,
    pub(super) addr: std::net::SocketAddr,
    pub(super) connect_timeout: Duration,
    pub(super) tls: Option<std::sync::Arc<UpstreamTls>>,
    pub(super) max_idle: usize,
    /// Let go (and waiting requests told) when the exchange is over.
    pub(super) slot: ConnSlot,
}

impl Lease {
    fn give_back(self, mut conn: RawConn) {
        conn.reused = true;
        // An idle connection holds no buffer (as NGINX's do not): the next
        // answer is read into the worker's scratch and copied into one of
        // its own size (see `crate::read_scratch`).
        conn.buf = BytesMut::new();
        self.pools.put_raw_idle(self.ep, conn, self.max_idle);
        drop(self.slot);
    }
}

/// How far an exchange got before it failed.
#[derive(Debug)]
enum Failure {
    /// Nothing was written.
    Unwritten(WireError),
    /// Written (wholly or in part), and not a byte of answer read.
    Unanswered(WireError),
    /// The answer broke off or was malformed.
    Broken(WireError),
}

impl Failure {
    fn into_error(self) -> WireError {
        match self {
            Self::Unwritten(e) | Self::Unanswered(e) | Self::Broken(e) => e,
        }
    }
}

/// What to do after a failed exchange.
#[derive(Debug, PartialEq, Eq)]
enum Next {
    /// Send it again on a new connection.
    Resend,
    /// Hand it back unsent: the upstream cannot have seen it.
    Unsent,
    /// Fail it: the upstream may have seen it.
    Fail,
}

/// The decision after a failed exchange. A reused connection that gives
/// out before any answer was most likely closed by the upstream while
/// idle: a request not written at all goes again whatever its method; one
/// written goes again only when it is safe (RFC 9110 §9.2.1: the upstream
/// may have acted on it before closing), as Go's HTTP client does.
fn next_after(failure: &Failure, reused: bool, method: &Method) -> Next {
    match failure {
        Failure::Unwritten(_) if reused => Next::Resend,
        Failure::Unwritten(_) => Next::Unsent,
        Failure::Unanswered(_) if reused && is_safe(method) => Next::Resend,
        Failure::Unanswered(_) | Failure::Broken(_) => Next::Fail,
    }
}

/// Methods a client may expect to be sent again after a connection gave
/// out (RFC 9110 §9.2.1's safe methods, as Go's client chooses).
fn is_safe(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE
    )
}

/// Sends `req` on `conn` and reads the answer's head; see [`next_after`]
/// for a connection that gives out.
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
    let reused = conn.reused;
    let (lease, failure) = match exchange(conn, lease, req.method(), &head, body.as_ref()).await {
        Ok(resp) => return Ok(resp),
        Err(failed) => failed,
    };
    match next_after(&failure, reused, req.method()) {
        Next::Resend => {}
        Next::Unsent => {
            let e = SendError::WireNotSent(failure.into_error());
            return Err((e, Some(Box::new(req))));
        }
        Next::Fail => return Err((SendError::Wire(failure.into_error()), None)),
    }
    let tls = lease.tls.as_deref();
    let stream = match super::connect(lease.addr, lease.connect_timeout, tls).await {
        Ok(s) => s,
        Err(e) => return Err((e, Some(Box::new(req)))),
    };
    let conn = RawConn::new(stream, tls.map_or(0, |t| t.id));
    match exchange(conn, lease, req.method(), &head, body.as_ref()).await {
        Ok(resp) => Ok(resp),
        Err((_, f)) => match next_after(&f, false, req.method()) {
            Next::Unsent => Err((SendError::WireNotSent(f.into_error()), Some(Box::new(req)))),
            Next::Resend | Next::Fail => Err((SendError::Wire(f.into_error()), None)),
        },
    }
}

async fn exchange(
    mut conn: RawConn,
    lease: Lease,
    method: &Method,
    head: &[u8],
    body: Option<&Bytes>,
) -> Result<Response<ResponseBody>, (Lease, Failure)> {
    let failed = |e: WireError, answered: bool| {
        if answered {
            Failure::Broken(e)
        } else {
            Failure::Unanswered(e)
        }
    };
    if let Err(e) = write_request(&mut conn.stream, head, body).await {
        let f = match e {
            Written::Nothing(e) => Failure::Unwritten(e.into()),
            Written::Part(e) => Failure::Unanswered(e.into()),
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
    stream: &mut UpstreamStream,
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
    // rustls holds what it was given until flushed; a TCP stream holds
    // nothing (and is not asked).
    if stream.is_tls() {
        stream.flush().await.map_err(Written::Part)?;
    }
    Ok(())
}

async fn read_more(conn: &mut RawConn) -> io::Result<usize> {
    std::future::poll_fn(|cx| {
        crate::read_scratch::poll_read_into(Pin::new(&mut conn.stream), cx, &mut conn.buf)
    })
    .await
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
            match crate::read_scratch::poll_read_into(Pin::new(&mut conn.stream), cx, &mut conn.buf)
            {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_that_gave_out_is_replaced_only_when_that_is_safe() {
        let unwritten = || Failure::Unwritten(WireError::Closed);
        let unanswered = || Failure::Unanswered(WireError::Closed);
        let broken = || Failure::Broken(WireError::Closed);
        let (get, post) = (Method::GET, Method::POST);
        #[rustfmt::skip]
        let cases = [
            ("reused, nothing written, POST", unwritten(), true, &post, Next::Resend),
            ("new, nothing written", unwritten(), false, &post, Next::Unsent),
            ("reused, no answer, GET", unanswered(), true, &get, Next::Resend),
            ("reused, no answer, POST", unanswered(), true, &post, Next::Fail),
            ("new, no answer, GET", unanswered(), false, &get, Next::Fail),
            ("reused, answer broke off, GET", broken(), true, &get, Next::Fail),
        ];
        for (name, failure, reused, method, want) in cases {
            assert_eq!(next_after(&failure, reused, method), want, "{name}");
        }
    }
}
