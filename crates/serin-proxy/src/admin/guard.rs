//! What every request to the admin API passes before its route, in order:
//!
//! 1. [`host`]: the `Host` names this admin API (a loopback name, or the
//!    address the client reached), so a web page cannot reach a loopback
//!    admin API through DNS rebinding (its requests carry the page's host
//!    name): 421 otherwise.
//! 2. [`token`]: the token, when the running config has one, read from the
//!    running config on each request so that a reload's token applies at
//!    once: 401 otherwise. `/ready` is exempt, for health checks.
//! 3. [`json_body`]: a call that changes something (any method but GET,
//!    HEAD, OPTIONS) says `Content-Type: application/json`, which a
//!    cross-site form or other "simple" request cannot: 415 otherwise.
//!
//! The metrics listener (`admin.metricsAddress`) is not guarded: it serves
//! only `GET /metrics`, for a Prometheus beyond the pod.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::extract::connect_info::{ConnectInfo, Connected};
use axum::extract::{Request, State};
use axum::http::{Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;
use axum::serve::IncomingStream;
use serin_config::proxy::AdminConfig;

use super::error;
use crate::Proxy;

/// The admin listener a request came through.
#[derive(Clone)]
pub(super) struct Listener {
    pub proxy: Arc<Proxy>,
    /// The address the admin listener is bound to.
    pub bound: SocketAddr,
}

/// The address of the admin listener a connection reached (for a listener
/// on `0.0.0.0`, the one address the client used).
#[derive(Clone, Copy, Debug)]
pub(super) struct Connection {
    local: Option<SocketAddr>,
}

impl Connected<IncomingStream<'_, tokio::net::TcpListener>> for Connection {
    fn connect_info(stream: IncomingStream<'_, tokio::net::TcpListener>) -> Self {
        Connection {
            local: stream.io().local_addr().ok(),
        }
    }
}

/// Runs the three checks in order; the first that fails answers.
pub(super) async fn guard(
    State(listener): State<Listener>,
    ConnectInfo(conn): ConnectInfo<Connection>,
    req: Request,
    next: Next,
) -> Response {
    let config = listener.proxy.snapshot().config.clone();
    let checks = host(&req, conn.local, &config.admin)
        .and_then(|()| token(&req, listener.bound, &config.admin))
        .and_then(|()| json_body(&req));
    match checks {
        Ok(()) => next.run(req).await,
        Err(refused) => refused.into_response(),
    }
}

/// Why a request was refused; its status and message are chosen here.
enum Refused {
    /// The request names another host (or none, or two).
    Host(String),
    /// No token, or a wrong one.
    Token,
    /// Beyond loopback with no token configured (which
    /// [`serin_config::proxy::admin::check`] keeps from happening).
    Closed,
    /// A call that changes something without a JSON body type.
    NotJson { method: Method, path: String },
}

impl Refused {
    fn into_response(self) -> Response {
        match self {
            Refused::Host(what) => error(
                StatusCode::MISDIRECTED_REQUEST,
                format!(
                    "{what}: the admin API answers only to 127.0.0.1, localhost, [::1] or its own \
                     address (a guard against DNS rebinding)"
                ),
            ),
            Refused::Token => error(
                StatusCode::UNAUTHORIZED,
                "admin API token required (Authorization: Bearer …)",
            ),
            Refused::Closed => error(
                StatusCode::UNAUTHORIZED,
                "the admin API beyond loopback has no token configured, so it is closed",
            ),
            Refused::NotJson { method, path } => error(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!(
                    "{method} {path} changes something: send it with Content-Type: application/json"
                ),
            ),
        }
    }
}

/// Every host the request names (the `Host` header, and the authority of
/// an absolute URI or HTTP/2's `:authority`) must be a loopback name, the
/// admin API's configured address, or the address the client reached.
fn host(req: &Request, local: Option<SocketAddr>, admin: &AdminConfig) -> Result<(), Refused> {
    let headers: Vec<_> = req.headers().get_all(header::HOST).iter().collect();
    if headers.len() > 1 {
        return Err(Refused::Host("more than one Host header".into()));
    }
    let mut named: Vec<&str> = headers.iter().map(|h| h.to_str().unwrap_or("")).collect();
    if let Some(a) = req.uri().authority() {
        named.push(a.as_str());
    }
    if named.is_empty() {
        return Err(Refused::Host("no Host header".into()));
    }
    for name in named {
        if !host_allowed(name, admin.address.ip(), local.map(|a| a.ip())) {
            return Err(Refused::Host(format!(
                "Host `{name}` does not name this admin API"
            )));
        }
    }
    Ok(())
}

/// `localhost`, any loopback IP, `admin_ip` (unless it is `0.0.0.0` or
/// `::`) or `local_ip`, with or without a port.
fn host_allowed(host: &str, admin_ip: IpAddr, local_ip: Option<IpAddr>) -> bool {
    let Some(name) = host_name(host) else {
        return false;
    };
    if name.eq_ignore_ascii_case("localhost") {
        return true;
    }
    let Ok(ip) = name.parse::<IpAddr>() else {
        return false;
    };
    let ip = ip.to_canonical();
    ip.is_loopback()
        || (!admin_ip.is_unspecified() && ip == admin_ip.to_canonical())
        || local_ip.is_some_and(|l| ip == l.to_canonical())
}

/// The host of `HOST[:PORT]` or `[IPV6][:PORT]`; `None` when it is not one.
fn host_name(value: &str) -> Option<&str> {
    let (name, port) = match value.strip_prefix('[') {
        Some(rest) => {
            let (inside, after) = rest.split_once(']')?;
            match after {
                "" => (inside, None),
                _ => (inside, Some(after.strip_prefix(':')?)),
            }
        }
        None => match value.rsplit_once(':') {
            Some((name, port)) => (name, Some(port)),
            None => (value, None),
        },
    };
    let port_ok = port.is_none_or(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
    (port_ok && !name.is_empty() && !name.contains(['[', ']'])).then_some(name)
}

/// The running config's token, when it has one (`/ready` is exempt, for
/// health checks). With none, only a loopback listener is open.
fn token(req: &Request, bound: SocketAddr, admin: &AdminConfig) -> Result<(), Refused> {
    let path = req.uri().path();
    if path == "/ready" {
        return Ok(());
    }
    let Some(token) = admin.token.as_deref() else {
        return if bound.ip().is_loopback() {
            Ok(())
        } else {
            Err(Refused::Closed)
        };
    };
    let bearer = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_string);
    // A browser cannot set the header on the dashboard's page or its event
    // stream: there the token may come as `?token=…`.
    let given = bearer.or_else(|| {
        if !(path == "/ui" || path.starts_with("/ui/")) {
            return None;
        }
        form_urlencoded::parse(req.uri().query()?.as_bytes())
            .find(|(k, _)| k == "token")
            .map(|(_, v)| v.into_owned())
    });
    if given.is_some_and(|g| same(g.as_bytes(), token.as_bytes())) {
        Ok(())
    } else {
        Err(Refused::Token)
    }
}

/// Compares without an early exit on the first differing byte.
fn same(given: &[u8], token: &[u8]) -> bool {
    given.len() == token.len()
        && given
            .iter()
            .zip(token)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

/// A call that may change something carries `Content-Type:
/// application/json` (parameters such as `charset` allowed).
fn json_body(req: &Request) -> Result<(), Refused> {
    if matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS) {
        return Ok(());
    }
    let is_json = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/json"));
    if is_json {
        Ok(())
    } else {
        Err(Refused::NotJson {
            method: req.method().clone(),
            path: req.uri().path().to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ADMIN: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 1, 2, 3));
    const ANY: IpAddr = IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED);

    #[test]
    fn loopback_names_and_the_admin_address_are_allowed() {
        for ok in [
            "localhost",
            "LocalHost:9901",
            "127.0.0.1",
            "127.0.0.1:9901",
            "127.9.8.7:1",
            "[::1]",
            "[::1]:9901",
            "10.1.2.3:9901",
            "10.1.2.3",
        ] {
            assert!(host_allowed(ok, ADMIN, None), "{ok}");
        }
        for refused in [
            "evil.example",
            "evil.example:9901",
            "localhost.evil.example",
            "127.0.0.1.evil.example",
            "10.1.2.4:9901",
            "0.0.0.0:9901",
            "::1",
            "[::1",
            "[::1]x",
            "127.0.0.1:",
            "127.0.0.1:x",
            "",
            ":9901",
        ] {
            assert!(!host_allowed(refused, ADMIN, None), "{refused}");
        }
    }

    #[test]
    fn a_listener_on_every_address_allows_the_one_reached() {
        let reached = Some(IpAddr::V4(std::net::Ipv4Addr::new(10, 9, 9, 9)));
        assert!(host_allowed("10.9.9.9:80", ANY, reached));
        assert!(!host_allowed("10.9.9.8:80", ANY, reached));
        assert!(!host_allowed("0.0.0.0:80", ANY, reached));
        // An IPv4 client of a dual-stack listener.
        let mapped = "::ffff:10.9.9.9".parse().ok();
        assert!(host_allowed("10.9.9.9", ANY, mapped));
    }

    #[test]
    fn tokens_compare_whole() {
        assert!(same(b"s3cret", b"s3cret"));
        assert!(!same(b"s3cres", b"s3cret"));
        assert!(!same(b"s3cre", b"s3cret"));
        assert!(!same(b"", b"s3cret"));
    }
}
