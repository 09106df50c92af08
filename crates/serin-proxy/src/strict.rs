//! Strict HTTP/1 request checks, on top of hyper's parser.
//!
//! hyper (with httparse) already refuses obs-fold, bare CR, NUL and other
//! control bytes, malformed and conflicting Content-Length values, and a
//! Transfer-Encoding whose last coding is not `chunked`. What it lets through
//! and serin refuses, because two hops may read them differently (request
//! smuggling): Content-Length together with Transfer-Encoding, Content-Length
//! sent twice (even with equal values), and white space after a coding —
//! which httparse trims before anyone can see it, so [`RawHeadScanner`] looks
//! at the bytes as they arrive.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};

use http::header::{CONTENT_LENGTH, TRANSFER_ENCODING};
use http::{HeaderMap, Version};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Why a request was refused before routing.
pub fn check_request(
    version: Version,
    headers: &HeaderMap,
    raw_flag: &ConnFlags,
) -> Result<(), &'static str> {
    if raw_flag.bad_te.load(Ordering::Relaxed) {
        return Err("Transfer-Encoding with white space around its coding");
    }
    if version == Version::HTTP_2 || version == Version::HTTP_3 {
        // h2 framing carries no Content-Length/Transfer-Encoding ambiguity,
        // and the h2 layer refused connection-specific headers already.
        return Ok(());
    }
    let mut te = headers.get_all(TRANSFER_ENCODING).iter();
    let has_te = te.next().is_some();
    let mut cl = headers.get_all(CONTENT_LENGTH).iter();
    let first_cl = cl.next();
    if has_te && first_cl.is_some() {
        return Err("both Content-Length and Transfer-Encoding");
    }
    if cl.next().is_some() {
        return Err("Content-Length sent more than once");
    }
    if let Some(v) = first_cl
        && (v.is_empty() || !v.as_bytes().iter().all(u8::is_ascii_digit))
    {
        return Err("malformed Content-Length");
    }
    if has_te {
        if te.next().is_some() {
            return Err("Transfer-Encoding sent more than once");
        }
        let value = headers
            .get(TRANSFER_ENCODING)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        // Only `chunked`, alone: other codings are not needed for requests
        // and are where parsers disagree.
        if !value.eq_ignore_ascii_case("chunked") {
            return Err("Transfer-Encoding other than chunked");
        }
    }
    Ok(())
}

/// What the raw scanner and the connection share. Atomics only because an
/// upgraded connection must be `Send`; every access is from one thread.
#[derive(Default)]
pub struct ConnFlags {
    /// A Transfer-Encoding line with white space before its end was seen.
    pub bad_te: AtomicBool,
    /// Bumped on every read or write that moved bytes (idle detection
    /// without a clock call per operation).
    pub activity: AtomicU64,
}

impl ConnFlags {
    pub fn activity(&self) -> u64 {
        self.activity.load(Ordering::Relaxed)
    }

    fn bump(&self) {
        // Load and store, not a locked add: one thread writes.
        self.activity.store(
            self.activity.load(Ordering::Relaxed).wrapping_add(1),
            Ordering::Relaxed,
        );
    }
}

/// Wraps a client connection: counts activity and, for HTTP/1, scans raw
/// header lines for `Transfer-Encoding: chunked<SP>` before the parser trims
/// the space.
pub struct RawHeadScanner<T> {
    inner: T,
    flags: Arc<ConnFlags>,
    scan: bool,
    /// The unfinished last line of the previous read (bounded).
    carry: Vec<u8>,
}

const TE_PREFIX: &[u8] = b"transfer-encoding:";
/// Longest line fragment kept between reads; a TE line is short.
const MAX_CARRY: usize = 256;

impl<T> RawHeadScanner<T> {
    pub fn new(inner: T, flags: Arc<ConnFlags>, scan: bool) -> Self {
        Self {
            inner,
            flags,
            scan,
            carry: Vec::new(),
        }
    }

    fn scan_bytes(&mut self, data: &[u8]) {
        // Lines are only inspected from their start, found after a '\n'.
        let mut start = 0;
        if !self.carry.is_empty() {
            match memchr::memchr(b'\n', data) {
                Some(nl) => {
                    self.carry.extend_from_slice(&data[..=nl]);
                    let line = std::mem::take(&mut self.carry);
                    self.check_line(&line);
                    start = nl + 1;
                }
                None => {
                    if self.carry.len() + data.len() <= MAX_CARRY {
                        self.carry.extend_from_slice(data);
                    } else {
                        self.carry.clear();
                    }
                    return;
                }
            }
        }
        let mut pos = start;
        while pos < data.len() {
            let line_end = memchr::memchr(b'\n', &data[pos..]).map(|i| pos + i);
            let first = data[pos];
            if first == b't' || first == b'T' {
                match line_end {
                    Some(end) => self.check_line(&data[pos..=end]),
                    None => {
                        if data.len() - pos <= MAX_CARRY {
                            self.carry.extend_from_slice(&data[pos..]);
                        }
                    }
                }
            }
            match line_end {
                Some(end) => pos = end + 1,
                None => break,
            }
        }
        // A line that starts at the very end of this read may be a TE line.
        if data.last() == Some(&b'\n') {
            self.carry.clear();
        }
    }

    fn check_line(&self, line: &[u8]) {
        if line.len() < TE_PREFIX.len() || !line[..TE_PREFIX.len()].eq_ignore_ascii_case(TE_PREFIX)
        {
            return;
        }
        let value = &line[TE_PREFIX.len()..];
        let value = value.strip_suffix(b"\n").unwrap_or(value);
        let value = value.strip_suffix(b"\r").unwrap_or(value);
        if value.last().is_some_and(|b| *b == b' ' || *b == b'\t') {
            self.flags.bad_te.store(true, Ordering::Relaxed);
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for RawHeadScanner<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let res = Pin::new(&mut self.inner).poll_read(cx, buf);
        let after = buf.filled().len();
        if after > before {
            self.flags.bump();
            if self.scan {
                let this = &mut *self;
                this.scan_bytes(&buf.filled()[before..after]);
            }
        }
        res
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for RawHeadScanner<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let res = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(res, Poll::Ready(Ok(n)) if n > 0) {
            self.flags.bump();
        }
        res
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let res = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(res, Poll::Ready(Ok(n)) if n > 0) {
            self.flags.bump();
        }
        res
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan(chunks: &[&[u8]]) -> bool {
        let flags = Arc::new(ConnFlags::default());
        let mut s = RawHeadScanner::new((), flags.clone(), true);
        for c in chunks {
            s.scan_bytes(c);
        }
        flags.bad_te.load(Ordering::Relaxed)
    }

    #[test]
    fn finds_trailing_space_after_chunked() {
        assert!(scan(&[
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked \r\n\r\n"
        ]));
        assert!(scan(&[
            b"POST / HTTP/1.1\r\ntransfer-encoding: chunked\t\r\n\r\n"
        ]));
        assert!(!scan(&[
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
        ]));
        assert!(!scan(&[b"GET / HTTP/1.1\r\nTE: trailers \r\n\r\n"]));
    }

    #[test]
    fn finds_it_across_reads() {
        assert!(scan(&[
            b"POST / HTTP/1.1\r\nTransfer-Enc",
            b"oding: chunked ",
            b"\r\n\r\n"
        ]));
        assert!(scan(&[
            b"POST / HTTP/1.1\r\n",
            b"Transfer-Encoding: chunked \r\n"
        ]));
    }

    #[test]
    fn headers_are_checked() {
        let flags = ConnFlags::default();
        let mut h = HeaderMap::new();
        h.insert(CONTENT_LENGTH, http::HeaderValue::from_static("5"));
        assert!(check_request(Version::HTTP_11, &h, &flags).is_ok());
        h.append(CONTENT_LENGTH, http::HeaderValue::from_static("5"));
        assert!(check_request(Version::HTTP_11, &h, &flags).is_err());
        let mut h = HeaderMap::new();
        h.insert(CONTENT_LENGTH, http::HeaderValue::from_static("5"));
        h.insert(TRANSFER_ENCODING, http::HeaderValue::from_static("chunked"));
        assert!(check_request(Version::HTTP_11, &h, &flags).is_err());
        let mut h = HeaderMap::new();
        h.insert(
            TRANSFER_ENCODING,
            http::HeaderValue::from_static("gzip, chunked"),
        );
        assert!(check_request(Version::HTTP_11, &h, &flags).is_err());
    }
}
