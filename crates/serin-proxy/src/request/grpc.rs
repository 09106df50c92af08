//! gRPC calls seen through: each call's status counted for its backend
//! (from the trailers, a trailers-only head, or the HTTP status serin or the
//! upstream answered), `grpc-timeout` as a cap on the request deadline, and
//! serin's own failure answers given to a call in gRPC's shape.
//!
//! Only HTTP/2 requests with a `application/grpc` content type are calls:
//! an HTTP/1.1 request costs one comparison here.

use std::borrow::Cow;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response, Version, header};
use http_body::{Body, Frame, SizeHint};
use percent_encoding::{AsciiSet, CONTROLS};

use crate::body::{BoxError, ResponseBody};
use crate::endpoints::Backend;
use crate::metrics::GrpcCounters;
use crate::snapshot::CompiledBackendRef;

/// The status of a call that ended without one (gRPC clients read it so).
const UNKNOWN: u32 = 2;
/// The status of a call the client gave up before its end.
const CANCELLED: u32 = 1;
/// The status of a call whose answer broke off mid-stream.
const UNAVAILABLE: u32 = 14;

/// Whether `req` is a gRPC call.
pub fn is_call<B>(req: &Request<B>) -> bool {
    req.version() == Version::HTTP_2
        && req
            .headers()
            .get(header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

/// The call's own deadline (`grpc-timeout`), if it sent a valid one.
pub fn timeout(headers: &HeaderMap) -> Option<Duration> {
    parse_timeout(headers.get("grpc-timeout")?.as_bytes())
}

/// `grpc-timeout`: at most 8 digits and a unit (PROTOCOL-HTTP2.md).
fn parse_timeout(v: &[u8]) -> Option<Duration> {
    let (&unit, digits) = v.split_last()?;
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n: u64 = std::str::from_utf8(digits).ok()?.parse().ok()?;
    Some(match unit {
        b'H' => Duration::from_secs(n * 3600),
        b'M' => Duration::from_secs(n * 60),
        b'S' => Duration::from_secs(n),
        b'm' => Duration::from_millis(n),
        b'u' => Duration::from_micros(n),
        b'n' => Duration::from_nanos(n),
        _ => return None,
    })
}

/// The earlier of the rule's deadline and the call's.
pub fn deadline(rule: Option<Duration>, call: Option<Duration>) -> Option<Duration> {
    match (rule, call) {
        (Some(r), Some(c)) => Some(r.min(c)),
        (r, c) => r.or(c),
    }
}

/// A `grpc-status` in `headers`.
pub fn status(headers: &HeaderMap) -> Option<u32> {
    std::str::from_utf8(headers.get("grpc-status")?.as_bytes())
        .ok()?
        .parse()
        .ok()
}

/// The status a gRPC client gives a call answered with an HTTP status
/// other than 200 (grpc/doc/http-grpc-status-mapping.md).
pub fn status_for_http(code: u16) -> u32 {
    match code {
        400 => 13,             // INTERNAL
        401 => 16,             // UNAUTHENTICATED
        403 => 7,              // PERMISSION_DENIED
        404 => 12,             // UNIMPLEMENTED
        429 | 502..=504 => 14, // UNAVAILABLE
        _ => UNKNOWN,
    }
}

/// Counts the call answered by `resp` now when its head says how it ended
/// (a trailers-only answer, an HTTP error), or else when its trailers come.
pub fn observe(
    backend: &CompiledBackendRef,
    resp: Response<ResponseBody>,
) -> Response<ResponseBody> {
    let mut tally = Tally {
        counters: backend.metrics.grpc.clone(),
        backend: backend.backend.clone(),
        errors: backend.service.grpc_error_codes,
    };
    if resp.status() != http::StatusCode::OK {
        // The HTTP status is the failure the figures count already.
        tally
            .counters
            .count(status_for_http(resp.status().as_u16()));
        return resp;
    }
    if let Some(code) = status(resp.headers()) {
        tally.count(code);
        return resp;
    }
    resp.map(|inner| {
        ResponseBody::Grpc(Box::new(GrpcBody {
            inner,
            tally: Some(tally),
        }))
    })
}

/// Where a call answered 200 is counted when it ends: its status among the
/// metrics, and a failure of its backend (the canary's error figure) when
/// the status is one of the service's `grpcErrorCodes`.
struct Tally {
    counters: Arc<GrpcCounters>,
    backend: Arc<Backend>,
    /// The service's error codes, bit `code` set for each.
    errors: u32,
}

impl Tally {
    fn count(&mut self, code: u32) {
        self.counters.count(code);
        if code < 32 && self.errors & (1 << code) != 0 {
            self.backend.stats.record_failed_call();
        }
    }
}

/// Bytes a `grpc-message` carries percent-encoded (PROTOCOL-HTTP2.md: all
/// but printable ASCII, and `%` itself).
const GRPC_MESSAGE: &AsciiSet = &CONTROLS.add(b'%');

/// serin's own failure answer to a gRPC call, reshaped as a trailers-only
/// answer: HTTP 200, `application/grpc`, the status a client would read
/// from the HTTP status, and the plain-text reason as `grpc-message`. As
/// Envoy does, so a client reports "UNAVAILABLE: request timed out"
/// instead of failing to decode a text body. The HTTP status was counted
/// and logged before this.
pub fn local_answer(resp: Response<ResponseBody>) -> Response<ResponseBody> {
    let (mut parts, body) = resp.into_parts();
    let reason = match &body {
        ResponseBody::Full(Some(text)) => String::from_utf8_lossy(text),
        _ => Cow::Borrowed(""),
    };
    let message = percent_encoding::utf8_percent_encode(reason.trim_end(), GRPC_MESSAGE);
    let headers = &mut parts.headers;
    headers.remove(header::CONTENT_LENGTH);
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    headers.insert(
        "grpc-status",
        HeaderValue::from(status_for_http(parts.status.as_u16())),
    );
    if let Ok(message) = HeaderValue::from_str(&message.to_string()) {
        headers.insert("grpc-message", message);
    }
    parts.status = http::StatusCode::OK;
    Response::from_parts(parts, ResponseBody::empty())
}

/// An answer's body that counts the call's status when it ends.
pub struct GrpcBody {
    inner: ResponseBody,
    /// Taken when counted: each call counts once.
    tally: Option<Tally>,
}

impl GrpcBody {
    fn count(&mut self, code: u32) {
        if let Some(mut t) = self.tally.take() {
            t.count(code);
        }
    }
}

impl Body for GrpcBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(trailers) = frame.trailers_ref() {
                    this.count(status(trailers).unwrap_or(UNKNOWN));
                } else if this.inner.is_end_stream() {
                    this.count(UNKNOWN);
                }
            }
            Poll::Ready(None) => this.count(UNKNOWN),
            Poll::Ready(Some(Err(_))) => this.count(UNAVAILABLE),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for GrpcBody {
    fn drop(&mut self) {
        // Dropped before its end: the client went away.
        self.count(CANCELLED);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeouts() {
        let cases: &[(&str, Option<Duration>)] = &[
            ("100m", Some(Duration::from_millis(100))),
            ("2S", Some(Duration::from_secs(2))),
            ("1H", Some(Duration::from_secs(3600))),
            ("3M", Some(Duration::from_secs(180))),
            ("250u", Some(Duration::from_micros(250))),
            ("99999999n", Some(Duration::from_nanos(99_999_999))),
            ("123456789m", None), // nine digits
            ("10", None),         // no unit
            ("m", None),
            ("10x", None),
            ("-1S", None),
            ("1.5S", None),
            ("", None),
        ];
        for (text, want) in cases {
            assert_eq!(parse_timeout(text.as_bytes()), *want, "{text:?}");
        }
    }

    #[test]
    fn the_earlier_deadline_wins() {
        let s = Duration::from_secs;
        assert_eq!(deadline(Some(s(15)), Some(s(2))), Some(s(2)));
        assert_eq!(deadline(Some(s(1)), Some(s(2))), Some(s(1)));
        assert_eq!(deadline(None, Some(s(2))), Some(s(2)));
        assert_eq!(deadline(Some(s(3)), None), Some(s(3)));
        assert_eq!(deadline(None, None), None);
    }

    #[test]
    fn http_statuses_map_as_grpc_clients_read_them() {
        for (http, grpc) in [
            (400, 13),
            (401, 16),
            (403, 7),
            (404, 12),
            (429, 14),
            (502, 14),
            (503, 14),
            (504, 14),
            (500, 2),
            (418, 2),
        ] {
            assert_eq!(status_for_http(http), grpc, "{http}");
        }
    }

    #[test]
    fn serins_own_answer_becomes_trailers_only() {
        let mut resp = Response::new(ResponseBody::full("over 50% — try later\n"));
        *resp.status_mut() = http::StatusCode::SERVICE_UNAVAILABLE;
        let h = resp.headers_mut();
        h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("24"));
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        h.insert("x-serin-reason", HeaderValue::from_static("overflow"));
        let resp = local_answer(resp);
        assert_eq!(resp.status(), http::StatusCode::OK);
        let h = resp.headers();
        assert_eq!(h["content-type"], "application/grpc");
        assert_eq!(h["grpc-status"], "14");
        assert_eq!(h["grpc-message"], "over 50%25 %E2%80%94 try later");
        assert_eq!(h["x-serin-reason"], "overflow");
        assert!(h.get(header::CONTENT_LENGTH).is_none());
        assert!(resp.body().is_end_stream());
    }
}
