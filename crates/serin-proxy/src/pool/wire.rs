//! HTTP/1.1 to upstreams on the wire, as pure functions: the request head
//! serin writes, the response head it reads (RFC 9112 §6.3 framing), and
//! the chunked body decoder. No I/O here; [`super::raw`] drives them.

use std::io::Write as _;

use bytes::{Buf, Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, StatusCode, Version};

use crate::headers::connection_has;

/// What went wrong on an upstream HTTP/1.1 connection. All of these are
/// the upstream's side.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("upstream connection failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("upstream closed the connection before its answer was complete")]
    Closed,
    #[error("upstream answered with a malformed message: {0}")]
    Malformed(&'static str),
    /// Over [`super::MAX_RESPONSE_HEAD_BYTES`] or
    /// [`super::MAX_RESPONSE_HEADERS`].
    #[error("upstream response head over the size limit")]
    HeadTooLarge,
}

/// How the response body is delimited (RFC 9112 §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body (HEAD, 204, 304).
    Empty,
    Length(u64),
    Chunked,
    /// Until the upstream closes; the connection cannot be reused.
    Close,
}

/// A parsed response head.
#[derive(Debug)]
pub struct ResponseHead {
    pub status: StatusCode,
    pub version: Version,
    pub headers: HeaderMap,
    pub framing: Framing,
    /// The connection may carry another request after this response.
    pub keep_alive: bool,
}

/// Writes the request head for an origin-form `target` with a body of
/// `body_len` bytes already in hand. The request's own framing headers are
/// replaced by serin's (`Content-Length` of what is sent); `Host` is taken
/// from `authority` when the request has none (a request that came over
/// HTTP/2 carries it as `:authority`).
pub fn encode_request_head(
    out: &mut Vec<u8>,
    method: &Method,
    target: &str,
    headers: &HeaderMap,
    authority: Option<&str>,
    body_len: usize,
) {
    out.extend_from_slice(method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    if !headers.contains_key(header::HOST)
        && let Some(authority) = authority
    {
        out.extend_from_slice(b"host: ");
        out.extend_from_slice(authority.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    for (name, value) in headers {
        if name == header::CONTENT_LENGTH || name == header::TRANSFER_ENCODING {
            continue;
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if body_len > 0 || method_has_body_semantics(method) {
        // Writing to a Vec cannot fail.
        let _ = write!(out, "content-length: {body_len}\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// Methods whose requests are expected to carry a body, so an empty one is
/// announced (`Content-Length: 0`) rather than left to be guessed.
fn method_has_body_semantics(method: &Method) -> bool {
    *method == Method::POST || *method == Method::PUT || *method == Method::PATCH
}

/// Parses a response head at the start of `buf`. `Ok(None)`: more bytes
/// are needed. On success the head's bytes are taken out of `buf`.
/// Interim (1xx) answers are not returned: the caller skips them by
/// calling again.
pub fn parse_response_head(
    buf: &mut BytesMut,
    request_method: &Method,
    max_head_bytes: usize,
    max_headers: usize,
) -> Result<Option<ResponseHead>, WireError> {
    let mut slots = [httparse::EMPTY_HEADER; STACK_HEADERS];
    let mut places = [HeaderPlace::default(); STACK_HEADERS];
    let room = max_headers.min(STACK_HEADERS);
    let first = parse_into(buf, max_head_bytes, &mut slots[..room], &mut places);
    let mut heap_places;
    let (
        Parsed {
            len,
            code,
            minor,
            count,
        },
        places,
    ) = match first {
        Ok(Some(p)) => (p, &places[..]),
        Ok(None) => return Ok(None),
        Err(WireError::HeadTooLarge) if max_headers > room && buf.len() <= max_head_bytes => {
            // More headers than the stack holds: the rare answer with many
            // pays for room for all of them.
            let mut heap_slots = vec![httparse::EMPTY_HEADER; max_headers];
            heap_places = vec![HeaderPlace::default(); max_headers];
            match parse_into(buf, max_head_bytes, &mut heap_slots, &mut heap_places)? {
                Some(p) => (p, &heap_places[..]),
                None => return Ok(None),
            }
        }
        Err(e) => return Err(e),
    };
    if len > max_head_bytes {
        return Err(WireError::HeadTooLarge);
    }
    let status = StatusCode::from_u16(code.unwrap_or(0))
        .map_err(|_| WireError::Malformed("invalid status code"))?;
    let version = if minor == Some(0) {
        Version::HTTP_10
    } else {
        Version::HTTP_11
    };
    let head = buf.split_to(len).freeze();
    let mut headers = HeaderMap::with_capacity(count);
    for place in &places[..count] {
        let name = HeaderName::from_bytes(&head[place.name.0..place.name.1])
            .map_err(|_| WireError::Malformed("invalid header name"))?;
        let value = HeaderValue::from_maybe_shared(head.slice(place.value.0..place.value.1))
            .map_err(|_| WireError::Malformed("invalid header value"))?;
        headers.append(name, value);
    }
    let framing = framing(request_method, status, &headers)?;
    let keep_alive = version == Version::HTTP_11
        && framing != Framing::Close
        && !connection_has(&headers, "close");
    Ok(Some(ResponseHead {
        status,
        version,
        headers,
        framing,
        keep_alive,
    }))
}

/// Headers parsed with room on the stack; an answer with more is parsed
/// again with room for [`super::MAX_RESPONSE_HEADERS`]. Zeroing room for
/// all of them on every answer showed in the profile.
pub(crate) const STACK_HEADERS: usize = 32;

/// Where a header's name and value lie in the head, so the values can
/// become slices of the head's shared bytes once the parser lets go of
/// the buffer (as hyper does), not copies.
#[derive(Clone, Copy, Default)]
pub(crate) struct HeaderPlace {
    pub name: (usize, usize),
    pub value: (usize, usize),
}

/// What [`parse_into`] found.
struct Parsed {
    len: usize,
    code: Option<u16>,
    minor: Option<u8>,
    count: usize,
}

/// Parses the head in `buf` with room for `slots.len()` headers, writing
/// where each lies to `places`. `Ok(None)`: incomplete.
fn parse_into<'b>(
    buf: &'b [u8],
    max_head_bytes: usize,
    slots: &mut [httparse::Header<'b>],
    places: &mut [HeaderPlace],
) -> Result<Option<Parsed>, WireError> {
    let mut parsed = httparse::Response::new(slots);
    let len = match parsed.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() > max_head_bytes => {
            return Err(WireError::HeadTooLarge);
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(WireError::HeadTooLarge),
        Err(_) => return Err(WireError::Malformed("invalid response head")),
    };
    for (place, h) in places.iter_mut().zip(parsed.headers.iter()) {
        place.name = place_in(buf, h.name.as_bytes()).ok_or(OUTSIDE_HEAD)?;
        place.value = place_in(buf, h.value).ok_or(OUTSIDE_HEAD)?;
    }
    Ok(Some(Parsed {
        len,
        code: parsed.code,
        minor: parsed.version,
        count: parsed.headers.len(),
    }))
}

/// A parser slice that is not in the buffer parsed (cannot happen with
/// httparse; checked rather than trusted).
const OUTSIDE_HEAD: WireError = WireError::Malformed("header outside the head");

/// Where `part`, a slice the parser took from `buf`, lies in it. An empty
/// part may point anywhere: it is placed at 0.
pub(crate) fn place_in(buf: &[u8], part: &[u8]) -> Option<(usize, usize)> {
    if part.is_empty() {
        return Some((0, 0));
    }
    (part.as_ptr() as usize)
        .checked_sub(buf.as_ptr() as usize)
        .map(|start| (start, start + part.len()))
        .filter(|&(_, end)| end <= buf.len())
}

/// How the body of a response to `method` with `status` is delimited (RFC
/// 9112 §6.3).
pub fn framing(
    method: &Method,
    status: StatusCode,
    headers: &HeaderMap,
) -> Result<Framing, WireError> {
    if *method == Method::HEAD
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        return Ok(Framing::Empty);
    }
    if headers.contains_key(header::TRANSFER_ENCODING) {
        // Chunked must be the final coding; otherwise the body runs to
        // the close. A Content-Length beside it is ignored (and removed
        // before the answer goes on).
        let last = headers
            .get_all(header::TRANSFER_ENCODING)
            .iter()
            .next_back()
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.rsplit(',').next())
            .map(str::trim);
        return Ok(match last {
            Some(t) if t.eq_ignore_ascii_case("chunked") => Framing::Chunked,
            _ => Framing::Close,
        });
    }
    let mut length: Option<u64> = None;
    for value in headers.get_all(header::CONTENT_LENGTH) {
        let text = value
            .to_str()
            .map_err(|_| WireError::Malformed("invalid Content-Length"))?;
        for part in text.split(',') {
            let part = part.trim();
            if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
                return Err(WireError::Malformed("invalid Content-Length"));
            }
            let n: u64 = part
                .parse()
                .map_err(|_| WireError::Malformed("invalid Content-Length"))?;
            if length.is_some_and(|l| l != n) {
                return Err(WireError::Malformed("conflicting Content-Length"));
            }
            length = Some(n);
        }
    }
    Ok(match length {
        Some(0) => Framing::Empty,
        Some(n) => Framing::Length(n),
        None => Framing::Close,
    })
}

/// A chunk-size or trailer line may be at most this long: a size is 16
/// hex digits, and extensions are not used by anything serin forwards.
const MAX_CHUNK_LINE: usize = 4096;

/// Where the chunked decoder is in the body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Chunked {
    Size,
    Data(u64),
    DataEnd,
    Trailers,
    Done,
}

/// What the chunked decoder got out of the buffer.
#[derive(Debug, PartialEq)]
pub enum Decoded {
    Data(Bytes),
    /// The last chunk, with the trailer fields if there were any.
    End(Option<HeaderMap>),
    NeedMore,
}

impl Chunked {
    /// Decodes what `buf` holds, taking the bytes it used out of it.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Decoded, WireError> {
        loop {
            match *self {
                Self::Size => {
                    let Some(line) = take_line(buf)? else {
                        return Ok(Decoded::NeedMore);
                    };
                    let size = chunk_size(&line)?;
                    *self = if size == 0 {
                        Self::Trailers
                    } else {
                        Self::Data(size)
                    };
                }
                Self::Data(left) => {
                    if buf.is_empty() {
                        return Ok(Decoded::NeedMore);
                    }
                    let n = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
                    let data = buf.split_to(n).freeze();
                    let left = left - n as u64;
                    *self = if left == 0 {
                        Self::DataEnd
                    } else {
                        Self::Data(left)
                    };
                    return Ok(Decoded::Data(data));
                }
                Self::DataEnd => {
                    if buf.len() < 2 {
                        return Ok(Decoded::NeedMore);
                    }
                    if &buf[..2] != b"\r\n" {
                        return Err(WireError::Malformed("chunk data not followed by CRLF"));
                    }
                    buf.advance(2);
                    *self = Self::Size;
                }
                Self::Trailers => {
                    if buf.starts_with(b"\r\n") {
                        buf.advance(2);
                        *self = Self::Done;
                        return Ok(Decoded::End(None));
                    }
                    let Some(end) = find(buf, b"\r\n\r\n") else {
                        if buf.len() > MAX_CHUNK_LINE {
                            return Err(WireError::HeadTooLarge);
                        }
                        return Ok(Decoded::NeedMore);
                    };
                    let section = buf.split_to(end + 4);
                    *self = Self::Done;
                    return Ok(Decoded::End(Some(trailers(&section)?)));
                }
                Self::Done => return Ok(Decoded::End(None)),
            }
        }
    }
}

fn take_line(buf: &mut BytesMut) -> Result<Option<BytesMut>, WireError> {
    match find(buf, b"\r\n") {
        Some(i) => {
            let mut line = buf.split_to(i + 2);
            line.truncate(i);
            Ok(Some(line))
        }
        None if buf.len() > MAX_CHUNK_LINE => Err(WireError::Malformed("chunk size line too long")),
        None => Ok(None),
    }
}

fn chunk_size(line: &[u8]) -> Result<u64, WireError> {
    // Extensions (`;name=value`) are allowed and ignored (RFC 9112 §7.1.1).
    let digits = line
        .split(|&b| b == b';')
        .next()
        .unwrap_or_default()
        .trim_ascii_end();
    if digits.is_empty() || digits.len() > 16 {
        return Err(WireError::Malformed("invalid chunk size"));
    }
    let mut size: u64 = 0;
    for &d in digits {
        let v = match d {
            b'0'..=b'9' => d - b'0',
            b'a'..=b'f' => d - b'a' + 10,
            b'A'..=b'F' => d - b'A' + 10,
            _ => return Err(WireError::Malformed("invalid chunk size")),
        };
        size = size << 4 | u64::from(v);
    }
    Ok(size)
}

fn trailers(section: &[u8]) -> Result<HeaderMap, WireError> {
    let mut slots = [httparse::EMPTY_HEADER; super::MAX_RESPONSE_HEADERS];
    let parsed = match httparse::parse_headers(section, &mut slots) {
        Ok(httparse::Status::Complete((_, parsed))) => parsed,
        Ok(httparse::Status::Partial) => return Err(WireError::Malformed("invalid trailers")),
        Err(httparse::Error::TooManyHeaders) => return Err(WireError::HeadTooLarge),
        Err(_) => return Err(WireError::Malformed("invalid trailers")),
    };
    let mut map = HeaderMap::with_capacity(parsed.len());
    for h in parsed {
        let name = HeaderName::from_bytes(h.name.as_bytes())
            .map_err(|_| WireError::Malformed("invalid trailer name"))?;
        let value = HeaderValue::from_bytes(h.value)
            .map_err(|_| WireError::Malformed("invalid trailer value"))?;
        map.append(name, value);
    }
    Ok(map)
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: usize = super::super::MAX_RESPONSE_HEAD_BYTES;
    const N: usize = super::super::MAX_RESPONSE_HEADERS;

    fn head(raw: &str, method: &Method) -> Result<Option<ResponseHead>, WireError> {
        let mut buf = BytesMut::from(raw.as_bytes());
        parse_response_head(&mut buf, method, MAX, N)
    }

    fn framing_of(raw: &str, method: &Method) -> Result<(Framing, bool), String> {
        match head(raw, method) {
            Ok(Some(h)) => Ok((h.framing, h.keep_alive)),
            Ok(None) => Err("partial".into()),
            Err(e) => Err(e.to_string()),
        }
    }

    /// The framing and keep-alive a head gives, or a part of the error.
    type Want = Result<(Framing, bool), &'static str>;

    #[test]
    fn response_framing_follows_rfc_9112_6_3() {
        use Framing::*;
        let get = Method::GET;
        #[rustfmt::skip]
        let cases: &[(&str, &Method, Want)] = &[
            ("HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n", &get, Ok((Length(5), true))),
            ("HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n", &get, Ok((Empty, true))),
            ("HTTP/1.1 200 OK\r\ncontent-length: 5, 5\r\n\r\n", &get, Ok((Length(5), true))),
            ("HTTP/1.1 200 OK\r\ncontent-length: 5\r\ncontent-length: 6\r\n\r\n", &get, Err("conflicting")),
            ("HTTP/1.1 200 OK\r\ncontent-length: +5\r\n\r\n", &get, Err("invalid Content-Length")),
            ("HTTP/1.1 200 OK\r\ncontent-length: 5\r\ntransfer-encoding: chunked\r\n\r\n", &get, Ok((Chunked, true))),
            ("HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, chunked\r\n\r\n", &get, Ok((Chunked, true))),
            ("HTTP/1.1 200 OK\r\ntransfer-encoding: chunked, gzip\r\n\r\n", &get, Ok((Close, false))),
            ("HTTP/1.1 200 OK\r\n\r\n", &get, Ok((Close, false))),
            ("HTTP/1.1 204 No Content\r\ncontent-length: 5\r\n\r\n", &get, Ok((Empty, true))),
            ("HTTP/1.1 304 Not Modified\r\ncontent-length: 5\r\n\r\n", &get, Ok((Empty, true))),
            ("HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n", &Method::HEAD, Ok((Empty, true))),
            ("HTTP/1.1 200 OK\r\ncontent-length: 5\r\nconnection: close\r\n\r\n", &get, Ok((Length(5), false))),
            ("HTTP/1.0 200 OK\r\ncontent-length: 5\r\n\r\n", &get, Ok((Length(5), false))),
            ("HTTP/1.1 200 OK\r\ncontent-len", &get, Err("partial")),
            ("HTTP/1.1 2000 OK\r\n\r\n", &get, Err("malformed")),
            ("HTTP/1.1 200 OK\r\nbad header\r\n\r\n", &get, Err("malformed")),
        ];
        for (raw, method, want) in cases {
            let got = framing_of(raw, method);
            match (want, &got) {
                (Ok(w), Ok(g)) => assert_eq!(w, g, "{raw:?}"),
                (Err(w), Err(g)) => assert!(g.contains(w), "{raw:?}: {g}"),
                _ => panic!("{raw:?}: want {want:?}, got {got:?}"),
            }
        }
    }

    #[test]
    fn head_limits_are_kept() {
        let big = format!("HTTP/1.1 200 OK\r\nx: {}\r\n\r\n", "a".repeat(MAX));
        assert!(matches!(
            head(&big, &Method::GET),
            Err(WireError::HeadTooLarge)
        ));
        let unfinished = format!("HTTP/1.1 200 OK\r\nx: {}", "a".repeat(MAX));
        assert!(matches!(
            head(&unfinished, &Method::GET),
            Err(WireError::HeadTooLarge)
        ));
        // More than the stack's room, within the limit: parsed whole.
        let forty: String = (0..40).map(|i| format!("x{i}: {i}\r\n")).collect();
        let forty = format!("HTTP/1.1 200 OK\r\n{forty}\r\n");
        let parsed = head(&forty, &Method::GET).ok().flatten();
        assert_eq!(parsed.as_ref().map(|h| h.headers.len()), Some(40));
        assert_eq!(
            parsed.and_then(|h| h.headers.get("x39").cloned()),
            Some(HeaderValue::from_static("39"))
        );
        let many: String = (0..=N).map(|i| format!("x{i}: 1\r\n")).collect();
        let many = format!("HTTP/1.1 200 OK\r\n{many}\r\n");
        assert!(matches!(
            head(&many, &Method::GET),
            Err(WireError::HeadTooLarge)
        ));
    }

    #[test]
    fn head_leaves_the_body_in_the_buffer() {
        let mut buf =
            BytesMut::from(&b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nx-a: b\r\n\r\nhi"[..]);
        let h = parse_response_head(&mut buf, &Method::GET, MAX, N)
            .ok()
            .flatten()
            .map(|h| (h.status, h.headers.get("x-a").cloned()));
        assert_eq!(
            h,
            Some((StatusCode::OK, Some(HeaderValue::from_static("b"))))
        );
        assert_eq!(&buf[..], b"hi");
    }

    #[test]
    fn request_head_replaces_framing_and_adds_host() {
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("99"));
        h.insert("x-a", HeaderValue::from_static("1"));
        let mut out = Vec::new();
        encode_request_head(&mut out, &Method::POST, "/p?q=1", &h, Some("a.test"), 3);
        assert_eq!(
            String::from_utf8_lossy(&out),
            "POST /p?q=1 HTTP/1.1\r\nhost: a.test\r\nx-a: 1\r\ncontent-length: 3\r\n\r\n"
        );
        let mut out = Vec::new();
        encode_request_head(&mut out, &Method::GET, "/", &HeaderMap::new(), None, 0);
        assert_eq!(String::from_utf8_lossy(&out), "GET / HTTP/1.1\r\n\r\n");
        let mut out = Vec::new();
        encode_request_head(&mut out, &Method::PUT, "/", &HeaderMap::new(), None, 0);
        assert!(String::from_utf8_lossy(&out).ends_with("content-length: 0\r\n\r\n"));
    }

    fn decode_all(input: &[u8], step: usize) -> Result<(Vec<u8>, Option<HeaderMap>), String> {
        let mut state = Chunked::Size;
        let mut buf = BytesMut::new();
        let mut body = Vec::new();
        for piece in input.chunks(step.max(1)) {
            buf.extend_from_slice(piece);
            loop {
                match state.decode(&mut buf).map_err(|e| e.to_string())? {
                    Decoded::Data(d) => body.extend_from_slice(&d),
                    Decoded::End(t) => return Ok((body, t)),
                    Decoded::NeedMore => break,
                }
            }
        }
        Err(format!("unfinished after {} bytes", input.len()))
    }

    #[test]
    fn chunked_bodies_decode_in_any_read_size() {
        let plain = b"5\r\nhello\r\n1;ext=1\r\n \r\nA\r\n0123456789\r\n0\r\n\r\n";
        let trailed = b"2\r\nhi\r\n0\r\ngrpc-status: 0\r\n\r\n";
        for step in [1, 2, 3, 7, 100] {
            assert_eq!(
                decode_all(plain, step),
                Ok((b"hello 0123456789".to_vec(), None)),
                "step {step}"
            );
            let (body, t) = decode_all(trailed, step).unwrap_or_default();
            assert_eq!(body, b"hi");
            assert_eq!(
                t.and_then(|t| t.get("grpc-status").cloned()),
                Some(HeaderValue::from_static("0"))
            );
        }
    }

    #[test]
    fn malformed_chunked_bodies_are_refused() {
        #[rustfmt::skip]
        let cases: &[&[u8]] = &[
            b"x\r\nhello\r\n0\r\n\r\n",
            b"5\r\nhelloXX0\r\n\r\n",
            b"11111111111111111\r\n",
            b"\r\n",
        ];
        for raw in cases {
            assert!(
                decode_all(raw, 100).is_err_and(|e| e.contains("malformed")),
                "{:?}",
                String::from_utf8_lossy(raw)
            );
        }
    }
}
