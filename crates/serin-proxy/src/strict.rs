//! Strict HTTP/1 request checks, on top of hyper's parser.
//!
//! hyper (with httparse) already refuses obs-fold, bare CR, NUL and other
//! control bytes, malformed and conflicting Content-Length values, and a
//! Transfer-Encoding whose last coding is not `chunked`. What it lets through
//! and serin refuses, because two hops may read them differently (request
//! smuggling): Content-Length together with Transfer-Encoding (hyper drops
//! the Content-Length), Content-Length sent twice with the same value (hyper
//! keeps one), and white space after a coding (httparse trims it). None of
//! these can be seen once parsed, so [`RawHeadScanner`] looks at the header
//! lines as the bytes arrive and flags the connection.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use http::header::{CONTENT_LENGTH, TRANSFER_ENCODING};
use http::{HeaderMap, Version};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Why a request was refused before routing.
pub fn check_request(
    version: Version,
    headers: &HeaderMap,
    raw_flag: &ConnFlags,
    request_number: u64,
) -> Result<(), &'static str> {
    if let Some(why) = raw_flag.verdict(request_number) {
        return Err(why);
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

const BAD_TE_SPACE: u8 = 1;
const BAD_CL_AND_TE: u8 = 2;
const BAD_CL_TWICE: u8 = 3;

/// What the raw scanner and the connection share. Atomics only because an
/// upgraded connection must be `Send`; every access is from one thread.
pub struct ConnFlags {
    /// The number (from 1) of the first request head on this connection
    /// whose framing headers are ambiguous; 0 while there is none.
    bad_head: AtomicU64,
    /// Why that head is ambiguous.
    bad_reason: std::sync::atomic::AtomicU8,
    /// Bumped on every read or write that moved bytes (idle detection
    /// without a clock call per operation).
    activity: AtomicU64,
}

impl Default for ConnFlags {
    fn default() -> Self {
        Self {
            bad_head: AtomicU64::new(0),
            bad_reason: std::sync::atomic::AtomicU8::new(0),
            activity: AtomicU64::new(0),
        }
    }
}

impl ConnFlags {
    pub fn activity(&self) -> u64 {
        self.activity.load(Ordering::Relaxed)
    }

    pub(crate) fn bump(&self) {
        // Load and store, not a locked add: one thread writes.
        self.activity.store(
            self.activity.load(Ordering::Relaxed).wrapping_add(1),
            Ordering::Relaxed,
        );
    }

    fn flag(&self, head: u64, why: u8) {
        if self.bad_head.load(Ordering::Relaxed) == 0 {
            self.bad_reason.store(why, Ordering::Relaxed);
            self.bad_head.store(head, Ordering::Relaxed);
        }
    }

    /// Why request number `n` (from 1) of this connection must be refused.
    pub fn verdict(&self, n: u64) -> Option<&'static str> {
        if self.bad_head.load(Ordering::Relaxed) != n {
            return None;
        }
        Some(match self.bad_reason.load(Ordering::Relaxed) {
            BAD_TE_SPACE => "Transfer-Encoding with white space around its coding",
            BAD_CL_AND_TE => "both Content-Length and Transfer-Encoding",
            _ => "Content-Length sent more than once",
        })
    }
}

/// Where the scanner is in the byte stream of an HTTP/1 connection.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Phase {
    /// Header lines of a request.
    Head,
    /// This many body bytes remain (Content-Length framing).
    Body(u64),
    /// A chunk-size line of a chunked body.
    ChunkSize,
    /// This many bytes of chunk data, then its CRLF, remain.
    ChunkData(u64),
    /// Trailer lines after the last chunk.
    Trailers,
    /// Framing the scanner cannot follow (hyper refuses such a request and
    /// closes the connection): stop looking.
    Lost,
}

/// Wraps a client connection: counts activity and, for HTTP/1, follows the
/// message framing (Content-Length or chunked) so that it reads the header
/// lines of each request head, and notes the first head whose framing
/// headers are ambiguous.
pub struct RawHeadScanner<T> {
    inner: T,
    flags: Arc<ConnFlags>,
    scan: bool,
    phase: Phase,
    /// The start of a line that continues in the next read (bounded).
    carry: Vec<u8>,
    /// The current line began in an earlier read and was too long to keep.
    skipping: bool,
    /// Requests heads seen, counting the current one.
    heads: u64,
    /// The next non-empty line starts a new head.
    at_head_start: bool,
    /// The next line is the CRLF that ends chunk data.
    expect_crlf: bool,
    /// Framing lines in the current head.
    content_lengths: u8,
    transfer_encodings: u8,
    content_length: Option<u64>,
    te_space: bool,
}

const TE_PREFIX: &[u8] = b"transfer-encoding:";
const CL_PREFIX: &[u8] = b"content-length:";
/// Enough of a line to classify it, read a chunk size, or see a TE value's
/// end.
const MAX_CARRY: usize = 256;

impl<T> RawHeadScanner<T> {
    pub fn new(inner: T, flags: Arc<ConnFlags>, scan: bool) -> Self {
        Self::after(inner, flags, scan, 0)
    }

    /// A scanner that starts after `heads` requests were read by someone
    /// else (serin's own HTTP/1.1 server, before it hands over), so its
    /// numbers match the connection's request numbers.
    pub fn after(inner: T, flags: Arc<ConnFlags>, scan: bool, heads: u64) -> Self {
        Self {
            inner,
            flags,
            scan,
            phase: Phase::Head,
            carry: Vec::new(),
            skipping: false,
            heads,
            at_head_start: true,
            expect_crlf: false,
            content_lengths: 0,
            transfer_encodings: 0,
            content_length: None,
            te_space: false,
        }
    }

    fn scan_bytes(&mut self, data: &[u8]) {
        let mut pos = 0;
        while pos < data.len() {
            match self.phase {
                Phase::Lost => return,
                Phase::Body(n) | Phase::ChunkData(n) => {
                    let take = usize::try_from(n)
                        .unwrap_or(usize::MAX)
                        .min(data.len() - pos);
                    pos += take;
                    let left = n - take as u64;
                    self.phase = match (self.phase, left) {
                        (Phase::Body(_), 0) => Phase::Head,
                        (Phase::Body(_), _) => Phase::Body(left),
                        (_, _) => Phase::ChunkData(left),
                    };
                    if let Phase::ChunkData(0) = self.phase {
                        // The CRLF after the data is read as an empty line.
                        self.phase = Phase::ChunkSize;
                        self.skipping = false;
                        self.carry.clear();
                        self.expect_crlf = true;
                    }
                }
                Phase::Head | Phase::ChunkSize | Phase::Trailers => {
                    let end = memchr::memchr(b'\n', &data[pos..]).map(|i| pos + i);
                    let piece = &data[pos..end.map_or(data.len(), |e| e + 1)];
                    pos = end.map_or(data.len(), |e| e + 1);
                    if self.skipping {
                        self.skipping = end.is_none();
                        continue;
                    }
                    if end.is_none() || !self.carry.is_empty() {
                        let room = MAX_CARRY.saturating_sub(self.carry.len());
                        self.carry
                            .extend_from_slice(&piece[..room.min(piece.len())]);
                        if end.is_none() {
                            // Too long to keep whole: its start is enough.
                            self.skipping = piece.len() > room;
                            if !self.skipping {
                                continue;
                            }
                            let line = std::mem::take(&mut self.carry);
                            self.on_line(&line, false);
                            continue;
                        }
                        let line = std::mem::take(&mut self.carry);
                        self.on_line(&line, piece.len() <= room);
                    } else {
                        self.on_line(piece, true);
                    }
                }
            }
        }
    }

    /// One line (`complete`: its end is included).
    fn on_line(&mut self, line: &[u8], complete: bool) {
        let content = |v: &[u8]| -> usize {
            let v = v.strip_suffix(b"\n").unwrap_or(v);
            v.strip_suffix(b"\r").unwrap_or(v).len()
        };
        let blank = complete && content(line) == 0;
        match self.phase {
            Phase::Head => {
                if blank {
                    self.end_of_head();
                } else {
                    if self.at_head_start {
                        self.heads += 1;
                        self.at_head_start = false;
                    }
                    self.header_line(line, complete, &content);
                }
            }
            Phase::ChunkSize => {
                if self.expect_crlf {
                    self.expect_crlf = false;
                    if !blank {
                        self.phase = Phase::Lost;
                    }
                    return;
                }
                let text = &line[..content(line)];
                let digits = text.split(|b| *b == b';').next().unwrap_or(&[]);
                let digits = std::str::from_utf8(digits)
                    .unwrap_or("")
                    .trim_end_matches([' ', '\t']);
                match u64::from_str_radix(digits, 16) {
                    Ok(0) if !digits.is_empty() => self.phase = Phase::Trailers,
                    Ok(n) if !digits.starts_with('+') => self.phase = Phase::ChunkData(n),
                    _ => self.phase = Phase::Lost,
                }
            }
            Phase::Trailers if blank => {
                self.phase = Phase::Head;
                self.at_head_start = true;
            }
            _ => {}
        }
    }

    fn header_line(&mut self, line: &[u8], complete: bool, content: &dyn Fn(&[u8]) -> usize) {
        let starts = |prefix: &[u8]| {
            line.len() >= prefix.len() && line[..prefix.len()].eq_ignore_ascii_case(prefix)
        };
        if starts(CL_PREFIX) {
            self.content_lengths = self.content_lengths.saturating_add(1);
            let value = &line[CL_PREFIX.len()..content(line).max(CL_PREFIX.len())];
            self.content_length = std::str::from_utf8(value)
                .ok()
                .map(|v| v.trim_matches([' ', '\t']))
                .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|v| v.parse().ok());
        } else if starts(TE_PREFIX) {
            self.transfer_encodings = self.transfer_encodings.saturating_add(1);
            let value = &line[TE_PREFIX.len()..];
            let value = &value[..content(value)];
            if complete && value.last().is_some_and(|b| *b == b' ' || *b == b'\t') {
                self.te_space = true;
            }
        }
    }

    fn end_of_head(&mut self) {
        if self.at_head_start {
            // An empty line before any request line: allowed between
            // requests, and not a head.
            return;
        }
        let head = self.heads;
        if self.content_lengths > 0 && self.transfer_encodings > 0 {
            self.flags.flag(head, BAD_CL_AND_TE);
        } else if self.content_lengths > 1 {
            self.flags.flag(head, BAD_CL_TWICE);
        } else if self.te_space {
            self.flags.flag(head, BAD_TE_SPACE);
        }
        self.phase = if self.transfer_encodings > 0 {
            Phase::ChunkSize
        } else if self.content_lengths == 1 {
            match self.content_length {
                Some(0) => Phase::Head,
                Some(n) => Phase::Body(n),
                None => Phase::Lost,
            }
        } else {
            Phase::Head
        };
        self.content_lengths = 0;
        self.transfer_encodings = 0;
        self.content_length = None;
        self.te_space = false;
        self.at_head_start = true;
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

    /// The first bad head's number and reason, after scanning `chunks`.
    fn scan(chunks: &[&[u8]]) -> (u64, Option<&'static str>) {
        let flags = Arc::new(ConnFlags::default());
        let mut s = RawHeadScanner::new((), flags.clone(), true);
        for c in chunks {
            s.scan_bytes(c);
        }
        let n = flags.bad_head.load(Ordering::Relaxed);
        (n, flags.verdict(n))
    }

    const SPACE: Option<&str> = Some("Transfer-Encoding with white space around its coding");
    const BOTH: Option<&str> = Some("both Content-Length and Transfer-Encoding");
    const TWICE: Option<&str> = Some("Content-Length sent more than once");

    #[test]
    fn finds_trailing_space_after_chunked() {
        assert_eq!(
            scan(&[b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked \r\n\r\n"]),
            (1, SPACE)
        );
        assert_eq!(
            scan(&[b"POST / HTTP/1.1\r\ntransfer-encoding: chunked\t\r\n\r\n"]),
            (1, SPACE)
        );
        assert_eq!(
            scan(&[b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"]).0,
            0
        );
        assert_eq!(scan(&[b"GET / HTTP/1.1\r\nTE: trailers \r\n\r\n"]).0, 0);
    }

    #[test]
    fn finds_it_across_reads() {
        assert_eq!(
            scan(&[
                b"POST / HTTP/1.1\r\nTransfer-Enc",
                b"oding: chunked ",
                b"\r\n\r\n"
            ]),
            (1, SPACE)
        );
        assert_eq!(
            scan(&[
                b"POST / HTTP/1.1\r\n",
                b"Transfer-Encoding: chunked \r\n\r\n"
            ]),
            (1, SPACE)
        );
    }

    #[test]
    fn finds_ambiguous_framing_in_the_right_head() {
        assert_eq!(
            scan(&[b"POST / HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"]),
            (1, BOTH)
        );
        assert_eq!(
            scan(&[b"POST / HTTP/1.1\r\nContent-Length: 5\r\ncontent-length: 5\r\n\r\nhello"]),
            (1, TWICE)
        );
        // Bodies are skipped by their framing, whatever they contain.
        let pipelined = b"POST /a HTTP/1.1\r\nContent-Length: 40\r\n\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n\
            POST /b HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n0\r\nX-Trailer: 1\r\n\r\n\
            \r\nGET /c HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert_eq!(scan(&[pipelined]), (3, BOTH));
        // The same, one byte at a time.
        let bytes: Vec<&[u8]> = pipelined.chunks(1).collect();
        assert_eq!(scan(&bytes), (3, BOTH));
        // A long line does not hide what follows.
        let long = format!(
            "GET / HTTP/1.1\r\nCookie: {}\r\nContent-Length: 0\r\nContent-Length: 0\r\n\r\n",
            "x".repeat(5000)
        );
        assert_eq!(scan(&[long.as_bytes()]), (1, TWICE));
    }

    mod properties {
        //! Property tests of the scanner: whatever bytes a client sends,
        //! in whatever reads, scanning never panics; and for heads whose
        //! lines fit the scanner's carry, how the bytes are split into
        //! reads does not change the verdict (a client cannot hide an
        //! ambiguous head by splitting it).

        use proptest::prelude::*;
        use proptest::test_runner::Config;

        use super::*;

        /// Requests the scanner follows: bodies by length, chunked bodies
        /// with extensions and trailers, pipelining, and each kind of
        /// ambiguous head.
        const SEEDS: &[&[u8]] = &[
            b"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
            b"POST /a HTTP/1.1\r\nContent-Length: 5\r\n\r\nhelloGET /b HTTP/1.1\r\n\r\n",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n0\r\nX-Trailer: 1\r\n\r\nGET / HTTP/1.1\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: 5\r\ncontent-length: 5\r\n\r\nhello",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked \r\n\r\n0\r\n\r\n",
            b"\r\nGET / HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
        ];

        /// Bytes that matter to the scanner's state: line ends, framing
        /// header names and values, chunk-size characters.
        const PIECES: &[&[u8]] = &[
            b"\r\n",
            b"\n",
            b"\r",
            b"\r\n\r\n",
            b" ",
            b"\t",
            b";",
            b"0",
            b"f",
            b"+",
            b"ffffffffffffffffff",
            b"18446744073709551615",
            b"Content-Length:",
            b"Transfer-Encoding:",
            b"content-length: 99999999999999999999",
            b"transfer-encoding: chunked",
            b"\x00",
            b"\xff",
            b"\xe2\x82\xac",
        ];

        fn config() -> Config {
            let mut config = Config::default();
            // A fixed count keeps CI's time bounded; PROPTEST_CASES asks for more.
            if std::env::var_os("PROPTEST_CASES").is_none() {
                config.cases = 2000;
            }
            config.failure_persistence = None;
            config
        }

        /// A seed with bytes flipped, pieces inserted and parts cut out.
        fn mutated_request() -> impl Strategy<Value = Vec<u8>> {
            let edit = prop_oneof![
                (any::<usize>(), any::<u8>()).prop_map(|(i, b)| (0u8, i, vec![b])),
                (any::<usize>(), prop::sample::select(PIECES)).prop_map(|(i, p)| (
                    1,
                    i,
                    p.to_vec()
                )),
                (any::<usize>(), 1..64usize).prop_map(|(i, n)| (2, i, vec![0; n])),
            ];
            (
                prop::collection::vec(prop::sample::select(SEEDS), 1..4),
                prop::collection::vec(edit, 0..6),
            )
                .prop_map(|(seeds, edits)| {
                    let mut bytes = seeds.concat();
                    for (kind, at, what) in edits {
                        let i = at % (bytes.len() + 1);
                        match kind {
                            0 if i < bytes.len() => bytes[i] ^= what[0],
                            1 => {
                                bytes.splice(i..i, what);
                            }
                            _ => {
                                let end = (i + what.len()).min(bytes.len());
                                bytes.drain(i..end);
                            }
                        }
                    }
                    bytes
                })
        }

        /// Scans `bytes` in reads of the given sizes (cycled); the first bad
        /// head's number and why.
        fn scan_in_reads(bytes: &[u8], sizes: &[usize]) -> (u64, Option<&'static str>) {
            let flags = Arc::new(ConnFlags::default());
            let mut s = RawHeadScanner::new((), flags.clone(), true);
            let mut rest = bytes;
            for size in sizes.iter().cycle() {
                if rest.is_empty() {
                    break;
                }
                let (read, tail) = rest.split_at((*size).clamp(1, rest.len()));
                s.scan_bytes(read);
                rest = tail;
            }
            let n = flags.bad_head.load(Ordering::Relaxed);
            // Heads count from 1; 0 means none was flagged.
            (n, flags.verdict(n).filter(|_| n > 0))
        }

        proptest! {
            #![proptest_config(config())]

            #[test]
            fn any_bytes_in_any_reads_scan_without_panic(
                bytes in prop::collection::vec(any::<u8>(), 0..4096),
                sizes in prop::collection::vec(1..600usize, 1..8),
            ) {
                let (n, why) = scan_in_reads(&bytes, &sizes);
                prop_assert_eq!(n == 0, why.is_none());
                // At most one head is flagged: the first bad one.
                prop_assert!(n == 0 || (n as usize) <= bytes.len());
            }

            #[test]
            fn mutated_requests_scan_without_panic_and_splitting_changes_nothing(
                bytes in mutated_request(),
                sizes in prop::collection::vec(1..40usize, 1..8),
            ) {
                let whole = scan_in_reads(&bytes, &[usize::MAX]);
                let split = scan_in_reads(&bytes, &sizes);
                // Lines longer than the carry are judged by their start
                // when they come in pieces: only shorter ones must agree.
                let short_lines = bytes.split(|b| *b == b'\n').all(|l| l.len() < MAX_CARRY);
                if short_lines {
                    prop_assert_eq!(whole, split, "{:?} in reads of {:?}", String::from_utf8_lossy(&bytes), sizes);
                }
                let mut h = HeaderMap::new();
                for line in bytes.split(|b| *b == b'\n') {
                    if let Some((name, value)) = std::str::from_utf8(line).ok().and_then(|l| l.split_once(':'))
                        && let (Ok(name), Ok(value)) = (
                            http::HeaderName::from_bytes(name.as_bytes()),
                            http::HeaderValue::from_str(value.trim()),
                        )
                    {
                        h.append(name, value);
                    }
                }
                let flags = ConnFlags::default();
                let _ = check_request(Version::HTTP_11, &h, &flags, 1);
            }
        }
    }

    #[test]
    fn headers_are_checked() {
        let flags = ConnFlags::default();
        let mut h = HeaderMap::new();
        h.insert(CONTENT_LENGTH, http::HeaderValue::from_static("5"));
        assert!(check_request(Version::HTTP_11, &h, &flags, 1).is_ok());
        h.append(CONTENT_LENGTH, http::HeaderValue::from_static("5"));
        assert!(check_request(Version::HTTP_11, &h, &flags, 1).is_err());
        let mut h = HeaderMap::new();
        h.insert(
            TRANSFER_ENCODING,
            http::HeaderValue::from_static("gzip, chunked"),
        );
        assert!(check_request(Version::HTTP_11, &h, &flags, 1).is_err());
    }
}
