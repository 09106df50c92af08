//! HTTP/1.1 from clients on the wire, as pure functions: which request
//! heads serin's own server takes (and which it leaves to hyper), and the
//! response head and chunk framing it writes. No I/O here; the connection
//! loop in [`super`] drives them.

use std::io::Write as _;

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, StatusCode, Uri, Version};
use http_body::SizeHint;

use crate::pool::wire::{HeaderPlace, STACK_HEADERS, place_in};

/// A request head serin's own server serves: origin-form target, no
/// body or a `Content-Length` one small enough to read whole, no upgrade,
/// no `Expect`.
#[derive(Debug)]
pub struct RequestHead {
    pub method: Method,
    pub uri: Uri,
    pub version: Version,
    pub headers: HeaderMap,
    /// The body's length (`Content-Length`, or 0).
    pub body_len: usize,
    /// The client wants the connection closed after this exchange
    /// (`Connection: close`, or HTTP/1.0 without `keep-alive`).
    pub close: bool,
    /// The client takes trailers in a chunked answer (`TE: trailers`).
    pub trailers: bool,
    /// The head's bytes, to give back with [`put_back`] when the request
    /// is left to hyper after all.
    pub raw: Bytes,
}

/// What [`parse_request_head`] found at the start of the buffer.
#[derive(Debug)]
pub enum Head {
    /// More bytes are needed.
    Partial,
    /// A head serin serves; its bytes were taken out of the buffer.
    Ready(Box<RequestHead>),
    /// A head for hyper (the buffer is untouched): anything unusual, so
    /// that every refusal, limit and rare feature keeps hyper's handling.
    HandOff(&'static str),
}

/// Limits the parse applies (the listener's).
#[derive(Debug, Clone, Copy)]
pub struct HeadLimits {
    pub max_head_bytes: usize,
    pub max_headers: usize,
    /// The largest body read whole before the request path starts.
    pub max_whole_body: usize,
}

/// Parses the request head at the start of `buf`.
pub fn parse_request_head(buf: &mut BytesMut, limits: HeadLimits) -> Head {
    let mut slots = [httparse::EMPTY_HEADER; STACK_HEADERS];
    let mut places = [HeaderPlace::default(); STACK_HEADERS];
    let room = limits.max_headers.min(STACK_HEADERS);
    let mut parsed = httparse::Request::new(&mut slots[..room]);
    let len = match parsed.parse(buf) {
        Ok(httparse::Status::Complete(len)) if len <= limits.max_head_bytes => len,
        Ok(httparse::Status::Partial) if buf.len() <= limits.max_head_bytes => {
            return Head::Partial;
        }
        // Over a limit, malformed, or more headers than the stack holds:
        // hyper answers these (400, 431) as it always has.
        Ok(_) | Err(_) => return Head::HandOff("limit or malformed head"),
    };
    let (Some(method), Some(target), Some(minor)) = (parsed.method, parsed.path, parsed.version)
    else {
        return Head::HandOff("incomplete request line");
    };
    if !target.starts_with('/') {
        return Head::HandOff("target not in origin form");
    }
    let Ok(method) = Method::from_bytes(method.as_bytes()) else {
        return Head::HandOff("method");
    };
    if method == Method::CONNECT {
        return Head::HandOff("CONNECT");
    }
    let Some(target) = place_in(buf, target.as_bytes()) else {
        return Head::HandOff("target outside the head");
    };
    let count = parsed.headers.len();
    for (place, h) in places.iter_mut().zip(parsed.headers.iter()) {
        match (place_in(buf, h.name.as_bytes()), place_in(buf, h.value)) {
            (Some(name), Some(value)) => *place = HeaderPlace { name, value },
            _ => return Head::HandOff("header outside the head"),
        }
    }
    let version = if minor == 0 {
        Version::HTTP_10
    } else {
        Version::HTTP_11
    };
    // Checked on the bytes still in `buf`: a hand-off leaves it whole.
    let head = &buf[..len];
    let mut framing = Framing::default();
    for place in &places[..count] {
        let name = &head[place.name.0..place.name.1];
        let value = &head[place.value.0..place.value.1];
        if let Err(why) = framing.note(name, value) {
            return Head::HandOff(why);
        }
    }
    if framing.body_len > limits.max_whole_body {
        return Head::HandOff("body larger than read whole");
    }
    let head = buf.split_to(len).freeze();
    let uri = Uri::from_maybe_shared(head.slice(target.0..target.1));
    match (uri, headers_of(&head, &places[..count])) {
        (Ok(uri), Some(headers)) => Head::Ready(Box::new(RequestHead {
            method,
            uri,
            version,
            headers,
            body_len: framing.body_len,
            close: framing.close || (version == Version::HTTP_10 && !framing.keep_alive),
            trailers: framing.trailers,
            raw: head,
        })),
        // httparse passed them, `http` did not (a control byte in a value,
        // a target `Uri` refuses): rare, so the head is put back by copy.
        _ => {
            put_back(buf, &head);
            Head::HandOff("header value or target")
        }
    }
}

/// Puts a head taken out of `buf` back in front of it (by copy: rare).
pub fn put_back(buf: &mut BytesMut, head: &[u8]) {
    let mut whole = BytesMut::with_capacity(head.len() + buf.len());
    whole.extend_from_slice(head);
    whole.extend_from_slice(buf);
    *buf = whole;
}

/// What the framing headers of a request say; anything hyper should judge
/// is a reason to hand the head off.
#[derive(Debug, Default)]
struct Framing {
    body_len: usize,
    content_length_seen: bool,
    close: bool,
    keep_alive: bool,
    trailers: bool,
}

impl Framing {
    fn note(&mut self, name: &[u8], value: &[u8]) -> Result<(), &'static str> {
        if name.eq_ignore_ascii_case(b"content-length") {
            if self.content_length_seen {
                return Err("Content-Length twice");
            }
            self.content_length_seen = true;
            self.body_len = digits(value).ok_or("Content-Length not a number")?;
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            return Err("Transfer-Encoding");
        } else if name.eq_ignore_ascii_case(b"upgrade") {
            return Err("Upgrade");
        } else if name.eq_ignore_ascii_case(b"expect") {
            return Err("Expect");
        } else if name.eq_ignore_ascii_case(b"connection") {
            for option in value.split(|&b| b == b',') {
                let option = option.trim_ascii();
                if option.eq_ignore_ascii_case(b"close") {
                    self.close = true;
                } else if option.eq_ignore_ascii_case(b"keep-alive") {
                    self.keep_alive = true;
                } else if option.eq_ignore_ascii_case(b"upgrade") {
                    return Err("Connection: upgrade");
                }
            }
        } else if name.eq_ignore_ascii_case(b"te") {
            self.trailers |= value
                .split(|&b| b == b',')
                .any(|v| v.trim_ascii().eq_ignore_ascii_case(b"trailers"));
        }
        Ok(())
    }
}

/// A `Content-Length` value: ASCII digits only, as RFC 9110 §8.6 has it
/// (a sign, a space or a list is hyper's to refuse).
fn digits(value: &[u8]) -> Option<usize> {
    if value.is_empty() || value.len() > 18 || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    value
        .iter()
        .try_fold(0usize, |n, d| Some(n * 10 + usize::from(d - b'0')))
}

/// The headers, their values slices of the head's shared bytes.
/// Room in a request's header map for what serin adds before it goes
/// upstream (`x-request-id`, `traceparent`, `x-forwarded-for`,
/// `x-forwarded-proto`, and a few a filter sets): a map sized to the
/// client's headers alone grew, rehashed and reallocated on the first of
/// them (callgrind: ~1,500 instructions per request, 4 %).
const HEADERS_ADDED: usize = 8;

fn headers_of(head: &Bytes, places: &[HeaderPlace]) -> Option<HeaderMap> {
    let mut headers = HeaderMap::with_capacity(places.len() + HEADERS_ADDED);
    for place in places {
        let name = HeaderName::from_bytes(&head[place.name.0..place.name.1]).ok()?;
        let value =
            HeaderValue::from_maybe_shared(head.slice(place.value.0..place.value.1)).ok()?;
        headers.append(name, value);
    }
    Some(headers)
}

/// How a response body goes on the wire (RFC 9112 §6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFraming {
    /// No body bytes (HEAD, 1xx, 204, 304); the headers go as they are.
    None,
    /// `Content-Length` of this many bytes.
    Length(u64),
    Chunked,
    /// Until serin closes the connection (an HTTP/1.0 client and a body
    /// of unknown length).
    Close,
}

/// How to frame an answer to a `head_request` from a client of
/// `client_version`.
pub fn response_framing(
    head_request: bool,
    status: StatusCode,
    headers: &HeaderMap,
    size: &SizeHint,
    client_version: Version,
) -> BodyFraming {
    if head_request
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        return BodyFraming::None;
    }
    if let Some(n) = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| digits(v.as_bytes()))
    {
        return BodyFraming::Length(n as u64);
    }
    match size.exact() {
        Some(n) => BodyFraming::Length(n),
        None if client_version == Version::HTTP_10 => BodyFraming::Close,
        None => BodyFraming::Chunked,
    }
}

/// Writes the response head. serin writes the framing and connection
/// headers itself; `date` is added when the answer has none.
pub fn encode_response_head(
    out: &mut Vec<u8>,
    status: StatusCode,
    headers: &HeaderMap,
    framing: BodyFraming,
    keep_alive: bool,
    client_version: Version,
    date: &[u8],
) {
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    // 204 and 1xx carry no Content-Length (RFC 9110 §8.6); HEAD and 304
    // keep the one the upstream sent.
    let drop_length = framing != BodyFraming::None
        || status == StatusCode::NO_CONTENT
        || status.is_informational();
    for (name, value) in headers {
        if name == header::CONNECTION
            || name == header::TRANSFER_ENCODING
            || (name == header::CONTENT_LENGTH && drop_length)
            || name.as_str() == "keep-alive"
        {
            continue;
        }
        line(out, name.as_str().as_bytes(), value.as_bytes());
    }
    match framing {
        BodyFraming::Length(n) => {
            // Writing to a Vec cannot fail.
            let _ = write!(out, "content-length: {n}\r\n");
        }
        BodyFraming::Chunked => line(out, b"transfer-encoding", b"chunked"),
        BodyFraming::None | BodyFraming::Close => {}
    }
    if !keep_alive {
        line(out, b"connection", b"close");
    } else if client_version == Version::HTTP_10 {
        line(out, b"connection", b"keep-alive");
    }
    if !headers.contains_key(header::DATE) {
        line(out, b"date", date);
    }
    out.extend_from_slice(b"\r\n");
}

fn line(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// The line that opens a chunk of `len` bytes.
pub fn chunk_start(out: &mut Vec<u8>, len: usize) {
    let _ = write!(out, "{len:x}\r\n");
}

/// The last chunk, with `trailers` when the client takes them.
pub fn last_chunk(out: &mut Vec<u8>, trailers: Option<&HeaderMap>) {
    out.extend_from_slice(b"0\r\n");
    for (name, value) in trailers.into_iter().flatten() {
        line(out, name.as_str().as_bytes(), value.as_bytes());
    }
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: HeadLimits = HeadLimits {
        max_head_bytes: 1024,
        max_headers: 8,
        max_whole_body: 100,
    };

    fn parse(raw: &str) -> Head {
        parse_request_head(&mut BytesMut::from(raw), LIMITS)
    }

    #[test]
    fn heads_serin_serves_and_those_it_leaves_to_hyper() {
        // (request, None = served, Some(reason) = handed off)
        let cases: &[(&str, Option<&str>)] = &[
            ("GET / HTTP/1.1\r\nhost: a\r\n\r\n", None),
            (
                "POST /x HTTP/1.1\r\nhost: a\r\ncontent-length: 5\r\n\r\nhello",
                None,
            ),
            ("GET /x HTTP/1.0\r\n\r\n", None),
            // No Host, two Hosts: served, so the downstream phase answers 400.
            ("GET / HTTP/1.1\r\n\r\n", None),
            ("GET / HTTP/1.1\r\nhost: a\r\nhost: b\r\n\r\n", None),
            (
                "POST / HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n",
                Some("Transfer-Encoding"),
            ),
            (
                "POST / HTTP/1.1\r\ncontent-length: 1\r\ncontent-length: 1\r\n\r\n",
                Some("Content-Length twice"),
            ),
            (
                "POST / HTTP/1.1\r\ncontent-length: +1\r\n\r\n",
                Some("Content-Length not a number"),
            ),
            (
                "POST / HTTP/1.1\r\ncontent-length: 1, 1\r\n\r\n",
                Some("Content-Length not a number"),
            ),
            (
                "POST / HTTP/1.1\r\ncontent-length: 101\r\n\r\n",
                Some("body larger than read whole"),
            ),
            (
                "GET / HTTP/1.1\r\nupgrade: websocket\r\nconnection: upgrade\r\n\r\n",
                Some("Upgrade"),
            ),
            (
                "GET / HTTP/1.1\r\nconnection: upgrade\r\n\r\n",
                Some("Connection: upgrade"),
            ),
            (
                "POST / HTTP/1.1\r\nexpect: 100-continue\r\n\r\n",
                Some("Expect"),
            ),
            (
                "CONNECT a:443 HTTP/1.1\r\n\r\n",
                Some("target not in origin form"),
            ),
            (
                "GET http://a/ HTTP/1.1\r\n\r\n",
                Some("target not in origin form"),
            ),
            (
                "OPTIONS * HTTP/1.1\r\n\r\n",
                Some("target not in origin form"),
            ),
            (
                "GET / HTTP/1.1\r\nbad header\r\n\r\n",
                Some("limit or malformed head"),
            ),
            (
                "GET / HTTP/1.1\r\nfolded: a\r\n b\r\n\r\n",
                Some("limit or malformed head"),
            ),
        ];
        for (raw, want) in cases {
            match (parse(raw), want) {
                (Head::Ready(_), None) => {}
                (Head::HandOff(why), Some(want)) => assert_eq!(why, *want, "{raw:?}"),
                (got, _) => panic!("{raw:?}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn limits_hand_off_and_a_short_head_waits() {
        assert!(matches!(
            parse("GET / HTTP/1.1\r\nhost: a\r\n"),
            Head::Partial
        ));
        let long = format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(2000));
        assert!(matches!(parse(&long), Head::HandOff(_)));
        let endless = format!("GET /{}", "a".repeat(2000));
        assert!(matches!(parse(&endless), Head::HandOff(_)));
        let many: String = (0..9).map(|i| format!("h{i}: v\r\n")).collect();
        assert!(matches!(
            parse(&format!("GET / HTTP/1.1\r\n{many}\r\n")),
            Head::HandOff(_)
        ));
    }

    #[test]
    fn a_served_head_leaves_the_body_and_a_handed_off_one_everything() {
        let mut buf = BytesMut::from(
            "POST /p?q=1 HTTP/1.1\r\nhost: a\r\ncontent-length: 2\r\nconnection: close\r\nte: trailers\r\n\r\nhiGET",
        );
        let Head::Ready(head) = parse_request_head(&mut buf, LIMITS) else {
            panic!("not served");
        };
        assert_eq!(&buf[..], b"hiGET");
        assert_eq!(head.method, Method::POST);
        assert_eq!(head.uri, "/p?q=1");
        assert_eq!(head.body_len, 2);
        assert!(head.close && head.trailers);
        assert_eq!(head.headers["host"], "a");
        put_back(&mut buf, &head.raw);
        let Head::Ready(again) = parse_request_head(&mut buf, LIMITS) else {
            panic!("not served after put_back");
        };
        assert_eq!((again.uri, &buf[..]), (head.uri, &b"hiGET"[..]));

        let raw = "POST / HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n";
        let mut buf = BytesMut::from(raw);
        assert!(matches!(
            parse_request_head(&mut buf, LIMITS),
            Head::HandOff(_)
        ));
        assert_eq!(&buf[..], raw.as_bytes());
    }

    #[test]
    fn keep_alive_by_version_and_connection_options() {
        let close = |raw: &str| match parse(raw) {
            Head::Ready(h) => h.close,
            other => panic!("{raw:?}: {other:?}"),
        };
        assert!(!close("GET / HTTP/1.1\r\n\r\n"));
        assert!(close(
            "GET / HTTP/1.1\r\nconnection: keep-alive, close\r\n\r\n"
        ));
        assert!(close("GET / HTTP/1.0\r\n\r\n"));
        assert!(!close("GET / HTTP/1.0\r\nconnection: Keep-Alive\r\n\r\n"));
    }

    #[test]
    fn response_framing_by_method_status_length_and_version() {
        let mut with_length = HeaderMap::new();
        with_length.insert(header::CONTENT_LENGTH, HeaderValue::from_static("7"));
        let none = HeaderMap::new();
        let exact = SizeHint::with_exact(3);
        let unknown = SizeHint::new();
        let ok = StatusCode::OK;
        let v11 = Version::HTTP_11;
        let cases = [
            (true, ok, &with_length, &exact, v11, BodyFraming::None),
            (
                false,
                StatusCode::NO_CONTENT,
                &none,
                &exact,
                v11,
                BodyFraming::None,
            ),
            (
                false,
                StatusCode::NOT_MODIFIED,
                &with_length,
                &exact,
                v11,
                BodyFraming::None,
            ),
            (
                false,
                ok,
                &with_length,
                &unknown,
                v11,
                BodyFraming::Length(7),
            ),
            (false, ok, &none, &exact, v11, BodyFraming::Length(3)),
            (false, ok, &none, &unknown, v11, BodyFraming::Chunked),
            (
                false,
                ok,
                &none,
                &unknown,
                Version::HTTP_10,
                BodyFraming::Close,
            ),
        ];
        for (head, status, headers, size, version, want) in cases {
            assert_eq!(
                response_framing(head, status, headers, size, version),
                want,
                "{head} {status} {headers:?} {version:?}"
            );
        }
    }

    #[test]
    fn the_head_serin_writes() {
        let mut headers = HeaderMap::new();
        headers.insert("x-a", HeaderValue::from_static("1"));
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from_static("9"));
        headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
        let mut out = Vec::new();
        let date = b"Wed, 02 Dec 2026 03:00:00 GMT";
        let status = StatusCode::OK;
        encode_response_head(
            &mut out,
            status,
            &headers,
            BodyFraming::Length(9),
            true,
            Version::HTTP_11,
            date,
        );
        assert_eq!(
            String::from_utf8_lossy(&out),
            "HTTP/1.1 200 OK\r\nx-a: 1\r\ncontent-length: 9\r\ndate: Wed, 02 Dec 2026 03:00:00 GMT\r\n\r\n"
        );
        out.clear();
        encode_response_head(
            &mut out,
            status,
            &headers,
            BodyFraming::Chunked,
            true,
            Version::HTTP_10,
            date,
        );
        assert_eq!(
            String::from_utf8_lossy(&out),
            "HTTP/1.1 200 OK\r\nx-a: 1\r\ntransfer-encoding: chunked\r\nconnection: keep-alive\r\ndate: Wed, 02 Dec 2026 03:00:00 GMT\r\n\r\n"
        );
        out.clear();
        headers.insert(header::DATE, HeaderValue::from_static("then"));
        encode_response_head(
            &mut out,
            StatusCode::NOT_MODIFIED,
            &headers,
            BodyFraming::None,
            false,
            Version::HTTP_11,
            date,
        );
        assert_eq!(
            String::from_utf8_lossy(&out),
            "HTTP/1.1 304 Not Modified\r\nx-a: 1\r\ncontent-length: 9\r\ndate: then\r\nconnection: close\r\n\r\n"
        );
    }

    #[test]
    fn chunks_and_trailers() {
        let mut out = Vec::new();
        chunk_start(&mut out, 300);
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", HeaderValue::from_static("0"));
        last_chunk(&mut out, Some(&trailers));
        assert_eq!(&out[..], b"12c\r\n0\r\ngrpc-status: 0\r\n\r\n");
    }
}
