//! serin's own HTTP/1.1 server for plain-TCP client connections: it reads
//! request heads with `httparse`, serves the common request in the
//! connection's own task, and hands the connection to hyper at the first
//! head it does not take (see [`wire::parse_request_head`]).
//!
//! Why: the profile put a quarter of the request path's instructions in
//! hyper's server, and an idle keep-alive connection held hyper's read and
//! write buffers and the request future's room (about 38 KB each). Here an
//! idle connection waits for readability with no buffer, a request's
//! buffer is freed when its answer is sent, and the request future is
//! allocated only while a request runs.

mod date;
mod prefixed;
pub mod wire;

use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http::{Method, Request, Response, Version};
use http_body::Body;
use serin_config::proxy::ListenerLimits;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

pub use prefixed::Prefixed;

use self::wire::{BodyFraming, Head, HeadLimits, RequestHead};
use super::{ConnControl, WorkerCtx};
use crate::body::{ClientBody, ResponseBody};
use crate::request::{self, ConnInfo};

/// How a connection served here ended.
pub enum Ending {
    /// Closed (by either side, a timeout, or the drain).
    Closed,
    /// The next request is hyper's: these bytes (its head onwards) were
    /// read from the socket and are to be read again.
    HandOff(BytesMut),
}

/// Answer bytes gathered before a write; a larger data frame is written
/// as it is rather than copied.
const WRITE_GATHER: usize = 16 * 1024;

/// Bodies up to this size that arrive with their head are taken whole
/// before the request path starts (so the upstream exchange can send the
/// request in one write); larger ones, and ones still on their way, stream
/// through hyper. The replay limit: a body kept for retries is kept anyway.
const MAX_WHOLE_BODY: usize = crate::body::REPLAY_LIMIT;

/// One client connection's state.
struct Conn<'a> {
    ctx: &'a Rc<WorkerCtx>,
    info: &'a Rc<ConnInfo>,
    limits: &'a ListenerLimits,
    stream: &'a mut TcpStream,
    ctl: &'a ConnControl,
    /// Bytes read and not yet parsed; empty (no allocation) while idle.
    buf: BytesMut,
}

/// Serves requests on `stream` until it closes or a head is for hyper.
pub async fn serve(
    ctx: &Rc<WorkerCtx>,
    info: &Rc<ConnInfo>,
    limits: &ListenerLimits,
    stream: &mut TcpStream,
    ctl: &ConnControl,
) -> Ending {
    let mut conn = Conn {
        ctx,
        info,
        limits,
        stream,
        ctl,
        buf: BytesMut::new(),
    };
    loop {
        let head = match conn.read_head().await {
            Ok(Head::Ready(head)) => head,
            Ok(Head::HandOff(why)) => {
                tracing::trace!(why, "request head left to hyper");
                return Ending::HandOff(conn.buf);
            }
            Ok(Head::Partial) | Err(_) => return Ending::Closed,
        };
        let body = match conn.body_in_hand(head.body_len) {
            Ok(Some(body)) => body,
            Ok(None) => {
                // The body is still on its way: the request path must see
                // the head first (a 413 before the body, an early answer),
                // so this request, and the connection, are hyper's.
                wire::put_back(&mut conn.buf, &head.raw);
                return Ending::HandOff(conn.buf);
            }
            Err(_) => return Ending::Closed,
        };
        if conn.buf.is_empty() {
            // Give the buffer back: nothing of the next request is here.
            conn.buf = BytesMut::new();
        }
        // Boxed, request and answer state with it: an idle connection
        // keeps no room for them (the request future alone is ~6 KB).
        match Box::pin(conn.exchange(*head, body)).await {
            Ok(true) => {}
            Ok(false) | Err(_) => return Ending::Closed,
        }
    }
}

impl Conn<'_> {
    fn head_limits(&self) -> HeadLimits {
        HeadLimits {
            max_head_bytes: self.limits.max_request_header_bytes,
            max_headers: self.limits.max_request_headers,
            max_whole_body: MAX_WHOLE_BODY,
        }
    }

    /// Reads until a head is complete. `Partial` means the client closed,
    /// went idle past a shutdown, or sent part of a head and stopped.
    async fn read_head(&mut self) -> io::Result<Head> {
        self.ctl.awaiting_head.set(true);
        let head = self.read_head_bytes().await;
        self.ctl.awaiting_head.set(false);
        head
    }

    async fn read_head_bytes(&mut self) -> io::Result<Head> {
        let mut deadline = None;
        loop {
            if !self.buf.is_empty() {
                let limits = self.head_limits();
                match wire::parse_request_head(&mut self.buf, limits) {
                    Head::Partial => {}
                    done => return Ok(done),
                }
            }
            let more = if self.buf.is_empty() {
                self.read_idle().await?
            } else {
                // Part of a head: the rest must come within the
                // header-read timeout (a timer only for heads that arrive
                // in pieces).
                let until = *deadline.get_or_insert_with(|| {
                    tokio::time::Instant::now() + self.limits.header_read_timeout
                });
                // Boxed, as the timer is: only a head in pieces pays for them.
                Box::pin(tokio::time::timeout_at(until, self.read_more()))
                    .await
                    .unwrap_or(Ok(false))?
            };
            if !more {
                return Ok(Head::Partial);
            }
        }
    }

    /// Waits, holding no buffer, for the next request's first bytes and
    /// reads them. `false`: closed, or shut down while idle. Bytes already
    /// there win over a shutdown, so a request that arrived is served.
    async fn read_idle(&mut self) -> io::Result<bool> {
        poll_fn(|cx| self.poll_idle(cx)).await
    }

    /// A read that finds nothing holds no buffer (the worker's scratch is
    /// read into, see [`crate::read_scratch`]), so an idle connection reads
    /// at once rather than first waiting for readiness.
    fn poll_idle(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<bool>> {
        match self.poll_read_some(cx) {
            Poll::Ready(read) => Poll::Ready(read.map(|read| matches!(read, Read::Bytes))),
            Poll::Pending if self.ctl.shutdown.get() => Poll::Ready(Ok(false)),
            Poll::Pending => Poll::Pending,
        }
    }

    /// Reads what the socket has, waiting for it. `false`: the client
    /// closed.
    async fn read_more(&mut self) -> io::Result<bool> {
        let read = poll_fn(|cx| self.poll_read_some(cx)).await?;
        Ok(matches!(read, Read::Bytes))
    }

    /// One read into the buffer, through tokio's `poll_read`: a read that
    /// does not fill the room it was given clears the socket's readiness
    /// (epoll is edge-triggered, so the socket is drained), where
    /// `try_read` leaves it set. The next wait then sleeps at once instead
    /// of first making a `recvfrom` that finds nothing: strace showed 0.34
    /// such reads per request under load.
    fn poll_read_some(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<Read>> {
        let stream = Pin::new(&mut *self.stream);
        match std::task::ready!(crate::read_scratch::poll_read_into(
            stream,
            cx,
            &mut self.buf
        )) {
            Ok(0) => Poll::Ready(Ok(Read::Closed)),
            Ok(_) => {
                self.info.flags.bump();
                Poll::Ready(Ok(Read::Bytes))
            }
            Err(e) => Poll::Ready(Err(e)),
        }
    }

    /// A read that does not wait, for a body that may already be there.
    fn try_read(&mut self) -> io::Result<Read> {
        match crate::read_scratch::try_read_into(self.stream, &mut self.buf) {
            Ok(0) => Ok(Read::Closed),
            Ok(_) => {
                self.info.flags.bump();
                Ok(Read::Bytes)
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(Read::NotYet),
            Err(e) => Err(e),
        }
    }

    /// The `Content-Length` body of `len` bytes, if it came with its head
    /// (after one more look at the socket). `Ok(None)`: not all there.
    fn body_in_hand(&mut self, len: usize) -> io::Result<Option<Option<Bytes>>> {
        if len == 0 {
            return Ok(Some(None));
        }
        if self.buf.len() < len {
            self.buf.reserve(len - self.buf.len());
            self.try_read()?;
        }
        if self.buf.len() < len {
            return Ok(None);
        }
        Ok(Some(Some(self.buf.split_to(len).freeze())))
    }

    /// Runs the request through the request path and sends its answer.
    /// `true`: the connection carries another request.
    async fn exchange(&mut self, head: RequestHead, body: Option<Bytes>) -> io::Result<bool> {
        let RequestHead {
            method,
            uri,
            version,
            headers,
            close,
            trailers,
            ..
        } = head;
        let head_request = method == Method::HEAD;
        let mut req = Request::new(ClientBody::Whole(body));
        *req.method_mut() = method;
        *req.uri_mut() = uri;
        *req.version_mut() = version;
        *req.headers_mut() = headers;
        let resp = match request::handle(self.ctx.clone(), self.info.clone(), req).await {
            Ok(resp) => resp,
            Err(never) => match never {},
        };
        let answer = Answer {
            head_request,
            version,
            close,
            trailers,
        };
        self.respond(resp, answer).await
    }

    async fn respond(&mut self, resp: Response<ResponseBody>, asked: Answer) -> io::Result<bool> {
        let (parts, mut body) = resp.into_parts();
        let framing = wire::response_framing(
            asked.head_request,
            parts.status,
            &parts.headers,
            &body.size_hint(),
            asked.version,
        );
        let keep_alive = !asked.close
            && framing != BodyFraming::Close
            && !self.ctl.shutdown.get()
            && !crate::headers::connection_has(&parts.headers, "close");
        let mut out = Vec::with_capacity(1024);
        date::with_date(|date| {
            wire::encode_response_head(
                &mut out,
                parts.status,
                &parts.headers,
                framing,
                keep_alive,
                asked.version,
                date,
            );
        });
        drop(parts);
        let complete = if framing == BodyFraming::None {
            self.flush(&mut out).await?;
            true
        } else {
            self.send_body(&mut out, &mut body, framing, asked.trailers)
                .await?
        };
        Ok(keep_alive && complete)
    }

    /// Sends the body as `framing` says, flushing whenever the body has
    /// nothing ready (a stream's events go out as they come). `false`: the
    /// body broke off or did not match its length.
    async fn send_body(
        &mut self,
        out: &mut Vec<u8>,
        body: &mut ResponseBody,
        framing: BodyFraming,
        trailers_ok: bool,
    ) -> io::Result<bool> {
        let chunked = framing == BodyFraming::Chunked;
        let mut remaining = match framing {
            BodyFraming::Length(n) => n,
            _ => u64::MAX,
        };
        loop {
            let next = poll_fn(|cx| match Pin::new(&mut *body).poll_frame(cx) {
                Poll::Ready(frame) => Poll::Ready(Some(frame)),
                Poll::Pending if !out.is_empty() => Poll::Ready(None),
                Poll::Pending => Poll::Pending,
            })
            .await;
            let frame = match next {
                None => {
                    self.flush(out).await?;
                    continue;
                }
                Some(None) => break,
                Some(Some(Err(e))) => {
                    tracing::debug!(error = %e, "answer body broke off");
                    self.flush(out).await?;
                    return Ok(false);
                }
                Some(Some(Ok(frame))) => frame,
            };
            let mut data = match frame.into_data() {
                Ok(data) => data,
                Err(frame) => {
                    if chunked && let Ok(trailers) = frame.into_trailers() {
                        wire::last_chunk(out, trailers_ok.then_some(&trailers));
                        self.flush(out).await?;
                        return Ok(true);
                    }
                    // Trailers cannot go out in other framings.
                    continue;
                }
            };
            let over = data.len() as u64 > remaining;
            if over {
                data.truncate(usize::try_from(remaining).unwrap_or(usize::MAX));
            }
            remaining -= data.len() as u64;
            if data.is_empty() && !over {
                continue;
            }
            if chunked {
                wire::chunk_start(out, data.len());
            }
            if out.len() + data.len() <= WRITE_GATHER {
                out.extend_from_slice(&data);
            } else {
                self.flush(out).await?;
                self.write(&data).await?;
            }
            if chunked {
                out.extend_from_slice(b"\r\n");
            }
            if over {
                // More than its Content-Length: the rest cannot be framed.
                self.flush(out).await?;
                return Ok(false);
            }
            if out.len() >= WRITE_GATHER {
                self.flush(out).await?;
            }
        }
        if chunked {
            wire::last_chunk(out, None);
        }
        self.flush(out).await?;
        Ok(match framing {
            BodyFraming::Length(_) => remaining == 0,
            BodyFraming::Chunked => true,
            BodyFraming::Close | BodyFraming::None => false,
        })
    }

    async fn flush(&mut self, out: &mut Vec<u8>) -> io::Result<()> {
        if !out.is_empty() {
            self.write(out).await?;
            out.clear();
        }
        Ok(())
    }

    async fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes).await?;
        self.info.flags.bump();
        Ok(())
    }
}

/// What the request said about its answer.
struct Answer {
    head_request: bool,
    version: Version,
    close: bool,
    trailers: bool,
}

/// What one non-blocking read found.
enum Read {
    Bytes,
    Closed,
    NotYet,
}
