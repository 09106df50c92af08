//! Body types of the data path.
//!
//! Request bodies stream to the upstream while a copy of the first bytes is
//! kept so a retry can send them again ([`ReplayBody`], after linkerd's
//! replay body): nothing waits for a whole body, and a body larger than the
//! replay limit simply makes that request not retryable.

use std::cell::RefCell;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

use crate::body_limit::BodyLimit;

/// Bytes of request body kept for replay; a larger body is not retried.
pub const REPLAY_LIMIT: usize = 64 * 1024;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A client's request body as the request path reads it.
pub enum ClientBody {
    /// Read by hyper as it arrives: HTTP/2, TLS, and the HTTP/1.1 requests
    /// serin's own server leaves to hyper (chunked, large, upgrades).
    Streamed(Incoming),
    /// Read whole by serin's own HTTP/1.1 server before the request path
    /// starts (a small `Content-Length` body, or none).
    Whole(Option<Bytes>),
}

impl Body for ClientBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            Self::Streamed(b) => Pin::new(b).poll_frame(cx),
            Self::Whole(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::Streamed(b) => b.is_end_stream(),
            Self::Whole(b) => b.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Self::Streamed(b) => b.size_hint(),
            Self::Whole(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
        }
    }
}

struct ReplayState {
    /// Data frames read so far (while within the limit).
    frames: Vec<Bytes>,
    trailers: Option<HeaderMap>,
    rest: Option<ClientBody>,
    buffered: usize,
    /// More was read than kept: replay is impossible.
    overflow: bool,
    /// `rest` has ended.
    done: bool,
    /// The client's body broke off (reset, closed, bad chunk): a failed
    /// upstream exchange is then the client's doing, not the upstream's.
    broke: bool,
    /// What the client may still send; past it the body ends in an error.
    limit: Option<BodyLimit>,
    /// The body passed `limit`.
    too_large: bool,
}

/// A request body that can be sent more than once while it is small.
pub struct ReplayBody {
    state: Rc<RefCell<ReplayState>>,
    /// Next frame of `frames` this copy sends.
    pos: usize,
    trailers_sent: bool,
}

impl ReplayBody {
    /// Wraps a client body. `first` is a frame already read (to check the body
    /// is well formed before any upstream sees the request).
    pub fn new(first: Option<Frame<Bytes>>, rest: ClientBody) -> Self {
        let mut state = ReplayState {
            frames: Vec::new(),
            trailers: None,
            done: rest.is_end_stream(),
            rest: Some(rest),
            buffered: 0,
            overflow: false,
            broke: false,
            limit: None,
            too_large: false,
        };
        if let Some(frame) = first {
            match frame.into_data() {
                Ok(data) => {
                    state.buffered = data.len();
                    state.overflow = data.len() > REPLAY_LIMIT;
                    // Even past the limit the first frame is kept for this
                    // copy; `overflow` forbids any other.
                    state.frames.push(data);
                }
                Err(frame) => {
                    state.trailers = frame.into_trailers().ok();
                    state.done = true;
                }
            }
        }
        Self {
            state: Rc::new(RefCell::new(state)),
            pos: 0,
            trailers_sent: false,
        }
    }

    /// A body with no bytes.
    pub fn empty() -> Self {
        Self {
            state: Rc::new(RefCell::new(ReplayState {
                frames: Vec::new(),
                trailers: None,
                rest: None,
                buffered: 0,
                overflow: false,
                done: true,
                broke: false,
                limit: None,
                too_large: false,
            })),
            pos: 0,
            trailers_sent: false,
        }
    }

    /// The whole body, when all of it has been read and kept (and it has
    /// no trailers): what serin's own HTTP/1.1 exchange can send at once.
    pub fn buffered(&self) -> Option<Bytes> {
        if !self.in_hand() {
            return None;
        }
        let st = self.state.borrow();
        match st.frames.as_slice() {
            [] => Some(Bytes::new()),
            [one] => Some(one.clone()),
            many => Some(many.concat().into()),
        }
    }

    /// Whether [`Self::buffered`] has the body.
    pub fn in_hand(&self) -> bool {
        let st = self.state.borrow();
        let ended = st.done || st.rest.as_ref().is_some_and(Body::is_end_stream);
        ended && !st.overflow && st.trailers.is_none() && self.pos == 0
    }

    /// Counts what is read of the client's body against `limit` (which has
    /// counted what was read before).
    pub fn with_limit(self, limit: Option<BodyLimit>) -> Self {
        self.state.borrow_mut().limit = limit;
        self
    }

    /// A handle that tells, after the body was sent away, whether the
    /// client's body broke off while any copy of it was read.
    pub fn probe(&self) -> BodyProbe {
        BodyProbe(self.state.clone())
    }

    /// Another copy from the start, if everything sent so far was kept.
    pub fn try_clone(&self) -> Option<Self> {
        if self.state.borrow().overflow {
            return None;
        }
        Some(Self {
            state: self.state.clone(),
            pos: 0,
            trailers_sent: false,
        })
    }
}

/// See [`ReplayBody::probe`].
pub struct BodyProbe(Rc<RefCell<ReplayState>>);

impl BodyProbe {
    pub fn client_broke_off(&self) -> bool {
        self.0.borrow().broke
    }

    /// The limit the body passed while it was read, if it did.
    pub fn too_large(&self) -> Option<u64> {
        let st = self.0.borrow();
        st.limit.filter(|_| st.too_large).map(|l| l.max())
    }
}

impl Body for ReplayBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let mut st = this.state.borrow_mut();
        if this.pos < st.frames.len() {
            let data = st.frames[this.pos].clone();
            this.pos += 1;
            return Poll::Ready(Some(Ok(Frame::data(data))));
        }
        if st.done {
            if !this.trailers_sent
                && let Some(t) = st.trailers.clone()
            {
                this.trailers_sent = true;
                return Poll::Ready(Some(Ok(Frame::trailers(t))));
            }
            return Poll::Ready(None);
        }
        let Some(rest) = st.rest.as_mut() else {
            return Poll::Ready(None);
        };
        match Pin::new(rest).poll_frame(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(None) => {
                st.done = true;
                st.rest = None;
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(e))) => {
                // The client's body broke: no copy can be complete.
                st.overflow = true;
                st.broke = true;
                Poll::Ready(Some(Err(e.into())))
            }
            Poll::Ready(Some(Ok(frame))) => {
                let frame = match frame.into_data() {
                    Ok(data) => {
                        if let Some(Err(e)) = st.limit.as_mut().map(|l| l.take(data.len())) {
                            // No copy may be complete: the upstream must
                            // see a body that breaks off.
                            st.too_large = true;
                            st.overflow = true;
                            st.frames.clear();
                            return Poll::Ready(Some(Err(e.into())));
                        }
                        if !st.overflow {
                            if st.buffered + data.len() > REPLAY_LIMIT {
                                st.overflow = true;
                                st.frames.clear();
                            } else {
                                st.buffered += data.len();
                                st.frames.push(data.clone());
                                this.pos += 1;
                            }
                        }
                        Frame::data(data)
                    }
                    Err(frame) => {
                        if let Some(t) = frame.trailers_ref() {
                            st.trailers = Some(t.clone());
                            this.trailers_sent = true;
                        }
                        st.done = true;
                        frame
                    }
                };
                if st.rest.as_ref().is_some_and(Body::is_end_stream) {
                    st.done = true;
                    st.rest = None;
                }
                Poll::Ready(Some(Ok(frame)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        let st = self.state.borrow();
        st.done && self.pos >= st.frames.len() && (self.trailers_sent || st.trailers.is_none())
    }

    fn size_hint(&self) -> SizeHint {
        let st = self.state.borrow();
        let kept: u64 = st
            .frames
            .iter()
            .skip(self.pos)
            .map(|b| b.len() as u64)
            .sum();
        match &st.rest {
            Some(rest) if !st.done => {
                let h = rest.size_hint();
                let mut out = SizeHint::new();
                out.set_lower(h.lower() + kept);
                if let Some(u) = h.upper() {
                    out.set_upper(u + kept);
                }
                out
            }
            _ => SizeHint::with_exact(kept),
        }
    }
}

/// A response body: the upstream's, streamed (from hyper's client, or
/// from serin's own HTTP/1.1 exchange), or complete in hand.
pub enum ResponseBody {
    // Boxed, so the answers that are moved from phase to phase stay small
    // (the profile showed their copies).
    Upstream(Box<crate::pool::PooledBody>),
    Raw(Box<crate::pool::RawBody>),
    Full(Option<Bytes>),
    /// Any of the others, with the access line to write at its end.
    Logged(Box<crate::request::LoggedBody>),
    /// Any of the others, compressed as it streams.
    Compressed(Box<crate::compression::CompressedBody>),
    /// Any of the others, counting the gRPC status its trailers carry.
    Grpc(Box<crate::request::GrpcBody>),
}

impl ResponseBody {
    pub fn full(b: impl Into<Bytes>) -> Self {
        Self::Full(Some(b.into()))
    }

    pub fn empty() -> Self {
        Self::Full(None)
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            Self::Upstream(b) => Pin::new(b.as_mut()).poll_frame(cx).map_err(BoxError::from),
            Self::Raw(b) => Pin::new(b.as_mut()).poll_frame(cx),
            Self::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            Self::Logged(b) => Pin::new(b.as_mut()).poll_frame(cx),
            Self::Compressed(b) => Pin::new(b.as_mut()).poll_frame(cx),
            Self::Grpc(b) => Pin::new(b.as_mut()).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::Upstream(b) => b.is_end_stream(),
            Self::Raw(b) => b.is_end_stream(),
            Self::Full(b) => b.is_none(),
            Self::Logged(b) => b.is_end_stream(),
            Self::Compressed(b) => b.is_end_stream(),
            Self::Grpc(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Self::Upstream(b) => b.size_hint(),
            Self::Raw(b) => b.size_hint(),
            Self::Logged(b) => b.size_hint(),
            Self::Compressed(b) => b.size_hint(),
            Self::Grpc(b) => b.size_hint(),
            Self::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
        }
    }
}
