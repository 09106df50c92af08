//! Every way a request can fail, as one type: what went wrong, which side
//! is to blame, and whether another try may be made (after pingora-error).
//! The status, the reason header and the metric label of each are chosen
//! here and nowhere else.

use http::header::{self, HeaderValue};
use http::{Response, StatusCode};

use super::path::PathRejection;
use crate::body::ResponseBody;
use crate::headers::X_SERIN_REASON;

/// Who caused a failure. Only upstream-side failures count against an
/// endpoint (outlier detection), a backend's figures (the canary's error
/// rate) or its health.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The client: a malformed request, a path refused, an aborted upload.
    Downstream,
    /// The service version: unreachable, reset, too slow, saturated.
    Upstream,
    /// serin itself or its configuration.
    Internal,
}

/// Whether a failed attempt may be tried again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetrySafety {
    /// The upstream provably did not see the request: always safe.
    Always,
    /// The upstream may have seen it: only for an idempotent request, or a
    /// route that allows it, within the retry budget.
    IfIdempotent,
    /// Trying again cannot help.
    Never,
}

/// Which deadline passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deadline {
    /// `timeouts.backendRequest`: one try.
    BackendRequest,
    /// `timeouts.request`: the whole request, across retries.
    Request,
}

impl Deadline {
    pub fn label(self) -> &'static str {
        match self {
            Self::BackendRequest => "backendRequest",
            Self::Request => "request",
        }
    }
}

/// A request that serin answers itself because something failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProxyError {
    /// The request breaks HTTP framing or serin's strict rules; the
    /// connection is closed after the answer.
    #[error("bad request: {0}")]
    Malformed(&'static str),
    /// The Host header is missing, repeated, empty, malformed, or disagrees
    /// with an absolute-form target (RFC 9112 §3.2).
    #[error("bad request: {0}")]
    BadHost(&'static str),
    #[error("bad request: the path has {0}")]
    PathRejected(PathRejection),
    /// No rule matches (the text says what was asked).
    #[error("{0}")]
    NoRoute(String),
    /// The client's request body broke off (reset, closed, bad chunk) while
    /// it was being sent upstream.
    #[error("the client's request body broke off")]
    ClientAborted,
    #[error("request URI cannot be forwarded")]
    UriNotForwardable,
    /// The request body is over the rule's or listener's limit: declared
    /// so, or read so while it streamed (the upstream saw it break off).
    #[error("request body larger than {0} bytes")]
    BodyTooLarge(u64),
    /// Every backend of the rule has weight 0, or it has none.
    #[error("no backend to send this request to")]
    NoBackend,
    /// The weights sent the request to a backendRef that cannot be served:
    /// not a Service, or (from an HTTPRoute) a Service that does not exist.
    #[error("the backend for this request is not valid")]
    InvalidBackend,
    #[error("no ready endpoint for {0}")]
    NoEndpoint(String),
    /// Connecting failed (refused, timed out, handshake): every try.
    #[error("upstream connect error")]
    ConnectFailed,
    /// The connection broke before the request was written; it comes back
    /// for another try.
    #[error("upstream connection closed before the request was sent")]
    Unsent,
    /// The exchange broke after the request may have reached the upstream.
    #[error("upstream reset or closed the connection")]
    UpstreamReset { reached: bool },
    /// The upstream's response head is over the bound client heads have.
    #[error("upstream response head too large")]
    UpstreamHeadTooLarge,
    #[error("upstream request timeout")]
    Timeout(Deadline),
    /// A circuit breaker or load-shedding limit is full.
    #[error("overloaded: {0} reached; try again later")]
    Overflow(&'static str),
    #[error("rate limit service unavailable")]
    RateLimitUnavailable,
    #[error("upgrades need an HTTP/1.1 upstream")]
    UpgradeNeedsHttp1,
    #[error("request body cannot be replayed")]
    ReplayImpossible,
    /// The request's claims sent it from rule to rule more often than
    /// [`rule::MAX_RULES_ENTERED`](super::rule::MAX_RULES_ENTERED) allows.
    #[error("the request's claims route it from rule to rule without end")]
    RouteLoop,
}

impl ProxyError {
    pub fn side(&self) -> Side {
        match self {
            Self::Malformed(_)
            | Self::BadHost(_)
            | Self::PathRejected(_)
            | Self::NoRoute(_)
            | Self::ClientAborted
            | Self::BodyTooLarge(_)
            | Self::UriNotForwardable => Side::Downstream,
            Self::NoEndpoint(_)
            | Self::ConnectFailed
            | Self::Unsent
            | Self::UpstreamReset { .. }
            | Self::UpstreamHeadTooLarge
            | Self::Timeout(_)
            | Self::Overflow(_) => Side::Upstream,
            Self::NoBackend
            | Self::InvalidBackend
            | Self::RateLimitUnavailable
            | Self::UpgradeNeedsHttp1
            | Self::ReplayImpossible
            | Self::RouteLoop => Side::Internal,
        }
    }

    pub fn retry(&self) -> RetrySafety {
        match self {
            Self::ConnectFailed | Self::Unsent | Self::UpstreamReset { reached: false } => {
                RetrySafety::Always
            }
            Self::UpstreamReset { reached: true } | Self::Timeout(Deadline::BackendRequest) => {
                RetrySafety::IfIdempotent
            }
            _ => RetrySafety::Never,
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Self::Malformed(_)
            | Self::BadHost(_)
            | Self::PathRejected(_)
            | Self::ClientAborted
            | Self::UriNotForwardable => StatusCode::BAD_REQUEST,
            Self::NoRoute(_) => StatusCode::NOT_FOUND,
            Self::BodyTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            // Gateway API: a rule with no backend answers 500, and so does
            // the share of requests an invalid backendRef would get.
            Self::NoBackend | Self::InvalidBackend | Self::ReplayImpossible | Self::RouteLoop => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
            // Gateway API: when no endpoint can be reached, 503 (not 502).
            Self::NoEndpoint(_)
            | Self::ConnectFailed
            | Self::Unsent
            | Self::Overflow(_)
            | Self::RateLimitUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            Self::UpstreamReset { .. } | Self::UpstreamHeadTooLarge => StatusCode::BAD_GATEWAY,
            Self::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
            Self::UpgradeNeedsHttp1 => StatusCode::NOT_IMPLEMENTED,
        }
    }

    /// The short name in the `x-serin-reason` header and metric labels.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Malformed(_) => "malformed_request",
            Self::BadHost(_) => "bad_host",
            Self::PathRejected(r) => r.label(),
            Self::NoRoute(_) => "no_route",
            Self::ClientAborted => "client_aborted",
            Self::UriNotForwardable => "bad_uri",
            Self::BodyTooLarge(_) => "body_too_large",
            Self::NoBackend => "no_backend",
            Self::InvalidBackend => "invalid_backend",
            Self::NoEndpoint(_) => "no_endpoint",
            Self::ConnectFailed | Self::Unsent => "connect_failure",
            Self::UpstreamReset { .. } => "upstream_reset",
            Self::UpstreamHeadTooLarge => "upstream_head_too_large",
            Self::Timeout(Deadline::BackendRequest) => "backend_request_timeout",
            Self::Timeout(Deadline::Request) => "request_timeout",
            Self::Overflow(_) => "overflow",
            Self::RateLimitUnavailable => "rate_limit_unavailable",
            Self::UpgradeNeedsHttp1 => "upgrade_needs_http1",
            Self::ReplayImpossible => "replay_impossible",
            Self::RouteLoop => "route_loop",
        }
    }

    /// Whether the client's byte stream can no longer be trusted (or the
    /// rest of a refused body is not worth reading), so the connection is
    /// closed after the answer.
    pub fn closes_connection(&self) -> bool {
        matches!(
            self,
            Self::Malformed(_) | Self::BadHost(_) | Self::ClientAborted | Self::BodyTooLarge(_)
        )
    }

    /// The answer the client gets.
    pub fn response(&self) -> Response<ResponseBody> {
        let mut resp = local(self.status(), &self.to_string());
        let headers = resp.headers_mut();
        headers.insert(X_SERIN_REASON, HeaderValue::from_static(self.label()));
        if let Self::Overflow(limit) = self {
            headers.insert(
                crate::headers::X_SERIN_OVERFLOW,
                HeaderValue::from_static(limit),
            );
        }
        if self.closes_connection() {
            headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        resp
    }
}

/// A response serin makes itself, with a short plain-text reason.
pub(crate) fn local(status: StatusCode, reason: &str) -> Response<ResponseBody> {
    let mut resp = Response::new(ResponseBody::full(format!("{reason}\n")));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_failure_has_its_status_side_and_retry() {
        use RetrySafety::*;
        use Side::*;
        let cases = [
            (ProxyError::Malformed("x"), 400, Downstream, Never),
            (ProxyError::BadHost("x"), 400, Downstream, Never),
            (
                ProxyError::PathRejected(PathRejection::AboveRoot),
                400,
                Downstream,
                Never,
            ),
            (ProxyError::NoRoute("GET /".into()), 404, Downstream, Never),
            (ProxyError::ClientAborted, 400, Downstream, Never),
            (ProxyError::BodyTooLarge(10), 413, Downstream, Never),
            (ProxyError::NoBackend, 500, Internal, Never),
            (ProxyError::InvalidBackend, 500, Internal, Never),
            (ProxyError::RouteLoop, 500, Internal, Never),
            (ProxyError::NoEndpoint("s/v".into()), 503, Upstream, Never),
            (ProxyError::ConnectFailed, 503, Upstream, Always),
            (ProxyError::Unsent, 503, Upstream, Always),
            (
                ProxyError::UpstreamReset { reached: false },
                502,
                Upstream,
                Always,
            ),
            (
                ProxyError::UpstreamReset { reached: true },
                502,
                Upstream,
                IfIdempotent,
            ),
            (
                ProxyError::Timeout(Deadline::BackendRequest),
                504,
                Upstream,
                IfIdempotent,
            ),
            (ProxyError::Timeout(Deadline::Request), 504, Upstream, Never),
            (ProxyError::Overflow("maxRequests"), 503, Upstream, Never),
            (ProxyError::RateLimitUnavailable, 503, Internal, Never),
        ];
        for (e, status, side, retry) in cases {
            assert_eq!(e.status().as_u16(), status, "{e:?}");
            assert_eq!(e.side(), side, "{e:?}");
            assert_eq!(e.retry(), retry, "{e:?}");
            let resp = e.response();
            assert_eq!(resp.status().as_u16(), status, "{e:?}");
            assert_eq!(
                resp.headers().get(X_SERIN_REASON).map(|v| v.as_bytes()),
                Some(e.label().as_bytes()),
                "{e:?}"
            );
        }
    }
}
