//! Response compression on a listener (`listeners[].compression`): the
//! coding is chosen from the client's `Accept-Encoding` (q-values, `*`,
//! `identity;q=0`), and an eligible answer streams through the encoder
//! (nothing is buffered whole; the encoder emits as its blocks fill).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use async_compression::Level;
use async_compression::tokio::bufread::{BrotliEncoder, GzipEncoder, ZstdEncoder};
use bytes::Bytes;
use futures_util::Stream;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use serin_config::proxy::{CompressionConfig, ContentCoding};
use tokio::io::{AsyncRead, ReadBuf};
use tokio_util::io::{ReaderStream, StreamReader};

use crate::body::{BoxError, ResponseBody};

/// zlib's default level: the usual balance of ratio and CPU for gzip.
const GZIP_LEVEL: i32 = 6;
/// Brotli's default (11) is for static files; at 4 it compresses about as
/// well as gzip 6 at similar speed, what CDNs use for dynamic answers.
const BROTLI_QUALITY: i32 = 4;
/// zstd's own default level.
const ZSTD_LEVEL: i32 = 3;

/// The coding the client accepts best of `offered` (serin's preference
/// breaking ties), or `None` when it prefers the answer as it is. `HEAD`
/// and range requests are never compressed.
pub fn negotiate<B>(cfg: &CompressionConfig, req: &Request<B>) -> Option<ContentCoding> {
    if req.method() == Method::HEAD || req.headers().contains_key(header::RANGE) {
        return None;
    }
    let accept = req.headers().get_all(header::ACCEPT_ENCODING);
    let q_of = |name: &str| -> Option<f32> {
        let mut star = None;
        for value in &accept {
            for (coding, q) in value.to_str().ok().into_iter().flat_map(parse_accept) {
                if coding.eq_ignore_ascii_case(name) {
                    return Some(q);
                }
                if coding == "*" {
                    star = Some(q);
                }
            }
        }
        star
    };
    // Unlisted, identity is acceptable but no coding the client named is
    // worse than it (RFC 9110 §12.5.3).
    let identity = q_of("identity").unwrap_or(0.0);
    let mut best: Option<(ContentCoding, f32)> = None;
    for coding in &cfg.encodings {
        let q = q_of(coding.as_str()).unwrap_or(0.0);
        if q > 0.0 && best.is_none_or(|(_, b)| q > b) {
            best = Some((*coding, q));
        }
    }
    best.filter(|(_, q)| *q >= identity).map(|(c, _)| c)
}

/// `gzip;q=0.8, br` as (coding, q) pairs; an element with a bad `q` is
/// left out (RFC 9110 §12.4.2).
fn parse_accept(value: &str) -> impl Iterator<Item = (&str, f32)> {
    value.split(',').filter_map(|element| {
        let mut parts = element.split(';').map(str::trim);
        let coding = parts.next().filter(|c| !c.is_empty())?;
        let mut q = 1.0;
        for param in parts {
            if let Some((k, v)) = param.split_once('=')
                && k.trim().eq_ignore_ascii_case("q")
            {
                q = v
                    .trim()
                    .parse::<f32>()
                    .ok()
                    .filter(|q| (0.0..=1.0).contains(q))?;
            }
        }
        Some((coding, q))
    })
}

/// Whether the answer is one serin may compress: a media type of the
/// list, not encoded already, not `no-transform`, not a partial, empty or
/// bodiless answer, and not known to be smaller than `minBytes`.
fn eligible(cfg: &CompressionConfig, status: StatusCode, h: &HeaderMap) -> bool {
    if status.is_informational()
        || matches!(
            status,
            StatusCode::NO_CONTENT | StatusCode::NOT_MODIFIED | StatusCode::PARTIAL_CONTENT
        )
        || h.contains_key(header::CONTENT_RANGE)
    {
        return false;
    }
    if h.get(header::CONTENT_ENCODING)
        .is_some_and(|e| !e.as_bytes().eq_ignore_ascii_case(b"identity"))
    {
        return false;
    }
    let no_transform = h.get_all(header::CACHE_CONTROL).iter().any(|v| {
        v.to_str().is_ok_and(|v| {
            v.split(',')
                .any(|d| d.trim().eq_ignore_ascii_case("no-transform"))
        })
    });
    let length = h
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    !no_transform && length.is_none_or(|n| n >= cfg.min_bytes) && listed_type(cfg, h)
}

fn listed_type(cfg: &CompressionConfig, h: &HeaderMap) -> bool {
    let Some(media) = h
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|m| m.trim().to_ascii_lowercase())
    else {
        return false;
    };
    cfg.content_types
        .iter()
        .any(|t| match t.strip_suffix("/*") {
            Some(kind) => media.split_once('/').is_some_and(|(k, _)| k == kind),
            None => *t == media,
        })
}

/// Compresses `resp` with `coding` when it is eligible; an eligible answer
/// gets `Vary: Accept-Encoding` whatever the client accepted.
pub fn apply(
    cfg: &CompressionConfig,
    coding: Option<ContentCoding>,
    resp: Response<ResponseBody>,
) -> Response<ResponseBody> {
    if !eligible(cfg, resp.status(), resp.headers()) {
        return resp;
    }
    let (mut parts, body) = resp.into_parts();
    parts
        .headers
        .append(header::VARY, HeaderValue::from_static("accept-encoding"));
    let Some(coding) = coding.filter(|_| !body.is_end_stream()) else {
        return Response::from_parts(parts, body);
    };
    let h = &mut parts.headers;
    h.remove(header::CONTENT_LENGTH);
    h.remove(header::ACCEPT_RANGES);
    h.insert(
        header::CONTENT_ENCODING,
        HeaderValue::from_static(coding.as_str()),
    );
    // Another representation: a strong validator would now lie.
    if let Some(tag) = h.get(header::ETAG)
        && tag.as_bytes().starts_with(b"\"")
        && let Ok(weak) = HeaderValue::from_bytes(&[b"W/", tag.as_bytes()].concat())
    {
        h.insert(header::ETAG, weak);
    }
    let body = ResponseBody::Compressed(Box::new(CompressedBody::new(coding, body)));
    Response::from_parts(parts, body)
}

/// The answer's data as a byte stream (trailers are dropped: no listed
/// media type has them).
struct DataStream(ResponseBody);

impl Stream for DataStream {
    type Item = io::Result<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        loop {
            return match Pin::new(&mut self.0).poll_frame(cx) {
                Poll::Pending => Poll::Pending,
                Poll::Ready(None) => Poll::Ready(None),
                Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(io::Error::other(e)))),
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) => Poll::Ready(Some(Ok(data))),
                    Err(_) => continue,
                },
            };
        }
    }
}

type Source = StreamReader<DataStream, Bytes>;

enum Encoder {
    Gzip(GzipEncoder<Source>),
    // Its state is kilobytes; the others' a few hundred bytes.
    Br(Box<BrotliEncoder<Source>>),
    Zstd(ZstdEncoder<Source>),
}

impl AsyncRead for Encoder {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Gzip(e) => Pin::new(e).poll_read(cx, buf),
            Self::Br(e) => Pin::new(e.as_mut()).poll_read(cx, buf),
            Self::Zstd(e) => Pin::new(e).poll_read(cx, buf),
        }
    }
}

/// An answer's body, compressed as it streams.
pub struct CompressedBody(ReaderStream<Encoder>);

impl CompressedBody {
    fn new(coding: ContentCoding, body: ResponseBody) -> Self {
        let source = StreamReader::new(DataStream(body));
        let encoder = match coding {
            ContentCoding::Gzip => Encoder::Gzip(GzipEncoder::with_quality(
                source,
                Level::Precise(GZIP_LEVEL),
            )),
            ContentCoding::Br => Encoder::Br(Box::new(BrotliEncoder::with_quality(
                source,
                Level::Precise(BROTLI_QUALITY),
            ))),
            ContentCoding::Zstd => Encoder::Zstd(ZstdEncoder::with_quality(
                source,
                Level::Precise(ZSTD_LEVEL),
            )),
        };
        Self(ReaderStream::new(encoder))
    }
}

impl Body for CompressedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        Pin::new(&mut self.0)
            .poll_next(cx)
            .map(|next| next.map(|r| r.map(Frame::data).map_err(BoxError::from)))
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serin_config::proxy::defaults;

    fn cfg() -> CompressionConfig {
        CompressionConfig {
            encodings: defaults::COMPRESSION_ENCODINGS.to_vec(),
            min_bytes: 1024,
            content_types: vec!["application/json".into(), "text/*".into()],
        }
    }

    fn req(method: Method, accept: Option<&'static str>, range: bool) -> Request<()> {
        let mut b = Request::builder().method(method);
        if let Some(a) = accept {
            b = b.header(header::ACCEPT_ENCODING, a);
        }
        if range {
            b = b.header(header::RANGE, "bytes=0-10");
        }
        b.body(()).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn the_coding_follows_q_values_then_serins_preference() {
        use ContentCoding::*;
        let cases: &[(Option<&'static str>, Option<ContentCoding>)] = &[
            (None, None),
            (Some(""), None),
            (Some("gzip"), Some(Gzip)),
            (Some("gzip, deflate, br, zstd"), Some(Zstd)),
            (Some("GZIP, BR"), Some(Br)),
            (Some("gzip;q=1, br;q=0.5"), Some(Gzip)),
            (Some("gzip;q=0.5, br;q=0.9, zstd;q=0.1"), Some(Br)),
            (Some("br;q=0, gzip"), Some(Gzip)),
            (Some("*"), Some(Zstd)),
            (Some("*;q=0.5, zstd;q=0"), Some(Br)),
            (Some("deflate, compress"), None),
            (Some("gzip;q=0.5, identity"), None),
            (Some("gzip;q=0.5, identity;q=0"), Some(Gzip)),
            (Some("identity;q=0"), None),
            (Some("gzip;q=2, br;q=x"), None),
            (Some("gzip ; Q=0.7 , br;q=0.6"), Some(Gzip)),
        ];
        for (accept, want) in cases {
            let got = negotiate(&cfg(), &req(Method::GET, *accept, false));
            assert_eq!(got, *want, "{accept:?}");
        }
        assert_eq!(
            negotiate(&cfg(), &req(Method::HEAD, Some("gzip"), false)),
            None
        );
        assert_eq!(
            negotiate(&cfg(), &req(Method::GET, Some("gzip"), true)),
            None
        );
    }

    #[test]
    fn only_eligible_answers_are_compressed() {
        let h = |pairs: &[(&'static str, &'static str)]| {
            let mut h = HeaderMap::new();
            for (k, v) in pairs {
                h.append(*k, HeaderValue::from_static(v));
            }
            h
        };
        let json = ("content-type", "application/json; charset=utf-8");
        let ok = StatusCode::OK;
        let cases: &[(StatusCode, HeaderMap, bool)] = &[
            (ok, h(&[json]), true),
            (ok, h(&[("content-type", "text/css")]), true),
            (ok, h(&[("content-type", "image/png")]), false),
            (ok, h(&[]), false),
            (ok, h(&[json, ("content-length", "1023")]), false),
            (ok, h(&[json, ("content-length", "1024")]), true),
            (ok, h(&[json, ("content-encoding", "gzip")]), false),
            (ok, h(&[json, ("content-encoding", "identity")]), true),
            (
                ok,
                h(&[json, ("cache-control", "public, No-Transform")]),
                false,
            ),
            (ok, h(&[json, ("content-range", "bytes 0-1/2")]), false),
            (StatusCode::NO_CONTENT, h(&[json]), false),
            (StatusCode::NOT_MODIFIED, h(&[json]), false),
            (StatusCode::PARTIAL_CONTENT, h(&[json]), false),
            (StatusCode::NOT_FOUND, h(&[json]), true),
        ];
        for (i, (status, headers, want)) in cases.iter().enumerate() {
            assert_eq!(
                eligible(&cfg(), *status, headers),
                *want,
                "case {i}: {headers:?}"
            );
        }
    }
}
