//! The URLRewrite and RequestRedirect filters: the new path, host and
//! location, by the Gateway API's rules.

use http::header::{HOST, LOCATION};
use http::{HeaderMap, HeaderValue, Response, Uri};
use serin_config::proxy::{MatchConfig, PathMatch, PathModifier, RedirectConfig, UrlRewriteConfig};

use crate::body::ResponseBody;

/// The new path when `modifier` applies to `path` that `matched` selected.
pub fn rewrite_path(path: &str, matched: &MatchConfig, modifier: &PathModifier) -> String {
    match modifier {
        PathModifier::ReplaceFullPath(p) => p.clone(),
        PathModifier::ReplacePrefixMatch(replacement) => {
            let prefix = match &matched.path {
                PathMatch::PathPrefix(p) => p.as_str(),
                _ => "",
            };
            let rest = path.get(prefix.len()..).unwrap_or("");
            // Gateway API: replacing `/foo` with `/` in `/foo/bar` gives
            // `/bar`, not `//bar`.
            let base = replacement.trim_end_matches('/');
            let joined = match (base.is_empty(), rest.is_empty()) {
                (true, true) => "/".to_string(),
                (true, false) => rest.to_string(),
                (false, _) => format!("{base}{rest}"),
            };
            if joined.starts_with('/') {
                joined
            } else {
                format!("/{joined}")
            }
        }
    }
}

/// Applies a URLRewrite to the request's URI (path, keeping the query) and
/// host.
pub fn rewrite_url(
    uri: &mut Uri,
    headers: &mut HeaderMap,
    matched: &MatchConfig,
    rw: &UrlRewriteConfig,
) {
    if let Some(host) = &rw.hostname
        && let Ok(v) = HeaderValue::from_str(host)
    {
        headers.insert(HOST, v);
    }
    if let Some(modifier) = &rw.path {
        let new_path = rewrite_path(uri.path(), matched, modifier);
        let pq = match uri.query() {
            Some(q) => format!("{new_path}?{q}"),
            None => new_path,
        };
        if let Ok(new_uri) = Uri::builder().path_and_query(pq).build() {
            *uri = new_uri;
        }
    }
}

/// The redirect response for a request.
pub fn redirect(
    cfg: &RedirectConfig,
    uri: &Uri,
    host: &str,
    tls: bool,
    matched: &MatchConfig,
) -> Response<ResponseBody> {
    let scheme = cfg
        .scheme
        .as_deref()
        .unwrap_or(if tls { "https" } else { "http" });
    let (req_host, req_port) = split_host_port(host);
    let hostname = cfg.hostname.as_deref().unwrap_or(req_host);
    // Gateway API: with no port given, keep the request's port unless the
    // scheme changed, then use the scheme's well-known port.
    let port = cfg
        .port
        .or_else(|| if cfg.scheme.is_some() { None } else { req_port });
    let default_port = if scheme == "https" { 443 } else { 80 };
    let authority = match port {
        Some(p) if p != default_port => format!("{hostname}:{p}"),
        _ => hostname.to_string(),
    };
    let path = match &cfg.path {
        Some(m) => rewrite_path(uri.path(), matched, m),
        None => uri.path().to_string(),
    };
    let location = match uri.query() {
        Some(q) => format!("{scheme}://{authority}{path}?{q}"),
        None => format!("{scheme}://{authority}{path}"),
    };
    let mut resp = Response::new(ResponseBody::empty());
    *resp.status_mut() = cfg.status;
    if let Ok(v) = HeaderValue::from_str(&location) {
        resp.headers_mut().insert(LOCATION, v);
    }
    resp
}

/// `host[:port]`, also for bracketed IPv6.
pub fn split_host_port(host: &str) -> (&str, Option<u16>) {
    if let Some(rest) = host.strip_prefix('[') {
        if let Some((h, after)) = rest.split_once(']') {
            let port = after.strip_prefix(':').and_then(|p| p.parse().ok());
            return (h, port);
        }
        return (host, None);
    }
    match host.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') => match p.parse() {
            Ok(port) => (h, Some(port)),
            Err(_) => (host, None),
        },
        _ => (host, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prefix(p: &str) -> MatchConfig {
        MatchConfig {
            path: PathMatch::PathPrefix(p.trim_end_matches('/').to_string()),
            headers: vec![],
            query_params: vec![],
            method: None,
            client_certificate: Vec::new(),
        }
    }

    #[test]
    fn prefix_rewrites_follow_the_gateway_api() {
        let m = prefix("/foo");
        let r = |to: &str, path: &str| {
            rewrite_path(path, &m, &PathModifier::ReplacePrefixMatch(to.to_string()))
        };
        assert_eq!(r("/", "/foo/bar"), "/bar");
        assert_eq!(r("/", "/foo"), "/");
        assert_eq!(r("/xyz", "/foo/bar"), "/xyz/bar");
        assert_eq!(r("/xyz/", "/foo"), "/xyz");
        assert_eq!(r("/xyz", "/foo/"), "/xyz/");
    }

    #[test]
    fn host_and_port_split() {
        assert_eq!(split_host_port("a.com:8080"), ("a.com", Some(8080)));
        assert_eq!(split_host_port("a.com"), ("a.com", None));
        assert_eq!(split_host_port("[::1]:80"), ("::1", Some(80)));
    }
}
