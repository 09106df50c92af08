//! Phase 1: what the client sent. Strict framing (see [`crate::strict`]),
//! one well-formed Host that agrees with the target (RFC 9112 §3.2), the
//! path normalised (see [`super::path`]) and written back so that the
//! upstream receives the path the route was chosen on, a request id, and
//! `x-forwarded-client-cert` from the verified client certificate only.

use std::borrow::Cow;

use crate::body::ClientBody;
use http::header::{self, HeaderValue};
use http::uri::PathAndQuery;
use http::{Request, Response, Uri, Version};

use super::path::{self, PathVerdict};
use super::{ProxyError, RequestCx};
use crate::body::ResponseBody;
use crate::routing::RouteTable;
use crate::{filters, headers, strict};

/// `Ok(Some(answer))` when the request is answered here (a redirect to the
/// normalised path).
pub(super) fn check(
    cx: &mut RequestCx<'_>,
    table: &RouteTable,
    req: &mut Request<ClientBody>,
    number: u64,
) -> Result<Option<Response<ResponseBody>>, ProxyError> {
    strict::check_request(req.version(), req.headers(), &cx.info.flags, number)
        .map_err(ProxyError::Malformed)?;
    host(req)?;
    crate::tls::forward_client_cert(req.headers_mut(), cx.info.peer.get().map(Box::as_ref));
    let id = headers::ensure_request_id(req.headers_mut());
    if let Some(summary) = &mut cx.summary {
        summary.request_id = Some(id);
    }
    let verdict = path::normalize(req.uri().path(), table.path_options())
        .map_err(ProxyError::PathRejected)?;
    match verdict {
        PathVerdict::Route(Cow::Borrowed(_)) => Ok(None),
        PathVerdict::Route(Cow::Owned(normal)) => {
            let uri = with_path(req.uri(), &normal).ok_or(ProxyError::UriNotForwardable)?;
            *req.uri_mut() = uri;
            Ok(None)
        }
        PathVerdict::Redirect(normal) => {
            Ok(Some(filters::redirect_to_path(&normal, req.uri().query())))
        }
    }
}

/// The Host rules of RFC 9112 §3.2 (and RFC 9113 §8.3.1 for HTTP/2): an
/// HTTP/1.1 request has exactly one Host, it is a valid `host[:port]`, and
/// it names the same authority as an absolute-form target. An HTTP/2
/// request that names its host only in `:authority` gets a Host from it,
/// which HTTP/1.1 upstreams and URL rewrites need.
fn host(req: &mut Request<ClientBody>) -> Result<(), ProxyError> {
    let mut hosts = req.headers().get_all(header::HOST).iter();
    let first = hosts.next();
    if hosts.next().is_some() {
        return Err(ProxyError::BadHost("more than one Host header"));
    }
    let target = req.uri().authority();
    let Some(value) = first else {
        if let Some(auth) = target {
            let v = HeaderValue::from_str(auth.as_str())
                .map_err(|_| ProxyError::BadHost("malformed authority"))?;
            req.headers_mut().insert(header::HOST, v);
            return Ok(());
        }
        // HTTP/1.0 may leave it out.
        return match req.version() {
            Version::HTTP_09 | Version::HTTP_10 => Ok(()),
            _ => Err(ProxyError::BadHost("no Host header")),
        };
    };
    let given = value
        .to_str()
        .ok()
        .filter(|v| valid_host(v))
        .ok_or(ProxyError::BadHost("malformed Host header"))?;
    if let Some(auth) = target
        && !auth.as_str().eq_ignore_ascii_case(given)
    {
        return Err(ProxyError::BadHost(
            "Host disagrees with the request target",
        ));
    }
    Ok(())
}

/// `uri-host [":" port]`: a DNS name or IPv4 address, or an IPv6 address
/// in brackets, and an optional decimal port; no user info, list, white
/// space or anything else a second reader might take apart differently.
fn valid_host(v: &str) -> bool {
    let (host, port) = match v.strip_prefix('[') {
        Some(rest) => match rest.split_once(']') {
            Some((ip6, after)) if ip6.parse::<std::net::Ipv6Addr>().is_ok() => (
                None,
                after
                    .strip_prefix(':')
                    .or(if after.is_empty() { None } else { Some("x") }),
            ),
            _ => return false,
        },
        None => match v.rsplit_once(':') {
            Some((h, p)) => (Some(h), Some(p)),
            None => (Some(v), None),
        },
    };
    let host_ok = host.is_none_or(|h| {
        !h.is_empty()
            && h.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
    });
    let port_ok = port.is_none_or(|p| !p.is_empty() && p.len() <= 5 && p.parse::<u16>().is_ok());
    host_ok && port_ok
}

/// `uri` with its path replaced (query, scheme and authority kept).
fn with_path(uri: &Uri, path: &str) -> Option<Uri> {
    let pq = match uri.query() {
        Some(q) => PathAndQuery::from_maybe_shared(format!("{path}?{q}")),
        None => PathAndQuery::try_from(path),
    }
    .ok()?;
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = Some(pq);
    Uri::from_parts(parts).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_values() {
        let cases = [
            ("example.com", true),
            ("example.com:8080", true),
            ("127.0.0.1:80", true),
            ("[::1]:80", true),
            ("[::1]", true),
            ("[::1]x", false),
            ("[nope]:80", false),
            ("a:1:2", false),
            ("", false),
            ("a b", false),
            ("a, b", false),
            ("a,b", false),
            ("user@example.com", false),
            ("example.com:", false),
            ("example.com:x", false),
            ("example.com/x", false),
        ];
        for (v, ok) in cases {
            assert_eq!(valid_host(v), ok, "{v:?}");
        }
    }

    #[test]
    fn the_new_path_keeps_the_rest_of_the_target() {
        let cases = [
            ("/a/../b?x=1", "/b", "/b?x=1"),
            ("/a", "/b", "/b"),
            ("http://h:1/a/./b?q", "/a/b", "http://h:1/a/b?q"),
        ];
        for (given, path, want) in cases {
            let uri: Uri = given.parse().unwrap_or_else(|e| panic!("{e}"));
            let got = with_path(&uri, path).map(|u| u.to_string());
            assert_eq!(got.as_deref(), Some(want), "{given}");
        }
    }
}
