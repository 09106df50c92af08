//! Phase 7 for a WebSocket or other HTTP/1.1 upgrade: forwarded like a
//! request, tunnelled only once the upstream answered 101. Not retried: a
//! tunnel's bytes cannot be replayed.

use crate::body::ClientBody;
use http::header;
use http::{Request, Response, StatusCode, Version};
use serin_config::proxy::UpstreamProtocol;

use super::RequestCx;
use super::error::ProxyError;
use super::upstream::{strip_response, upstream_head, upstream_uri};
use crate::balance;
use crate::body::{ReplayBody, ResponseBody};
use crate::snapshot::CompiledBackendRef;

/// An HTTP/1.1 request that asks to switch protocols.
pub(super) fn is_upgrade(req: &Request<ClientBody>) -> bool {
    req.version() == Version::HTTP_11
        && req.headers().contains_key(header::UPGRADE)
        && req
            .headers()
            .get(header::CONNECTION)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| {
                v.split(',')
                    .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
            })
}

pub(super) async fn forward<'s>(
    cx: &mut RequestCx<'s>,
    mut req: Request<ClientBody>,
    backend: &'s CompiledBackendRef,
) -> Result<Response<ResponseBody>, ProxyError> {
    let service = &backend.service;
    if service.pool.protocol != UpstreamProtocol::Http1 {
        return Err(ProxyError::UpgradeNeedsHttp1);
    }
    let client_upgrade = hyper::upgrade::on(&mut req);
    let (mut parts, _body) = req.into_parts();
    upstream_head(&mut parts, cx.info, UpstreamProtocol::Http1, true);
    let endpoints = backend.backend.endpoints();
    let ep = balance::pick(
        service.lb,
        &backend.backend,
        &endpoints,
        None,
        &[],
        service.panic_threshold,
    )
    .ok_or_else(|| ProxyError::NoEndpoint(backend.backend.key.to_string()))?;
    drop(endpoints);
    cx.endpoint = Some(ep.clone());
    parts.uri =
        upstream_uri(&parts, UpstreamProtocol::Http1, &ep).ok_or(ProxyError::UriNotForwardable)?;
    let attempt = cx.trace.attempt(
        1,
        (&backend.backend.key.service, &backend.backend.key.version),
        (&ep.name, ep.addr),
    );
    attempt.propagate(&mut parts.headers);
    let up = Request::from_parts(parts, ReplayBody::empty());
    let guard = ep.start_request();
    let conn = match cx
        .ctx
        .pools
        .checkout(&ep, &service.pool, &backend.backend, false)
        .await
    {
        Ok(c) => c,
        Err(e) => {
            attempt.failed("connect_error");
            if e.is_connect() {
                backend.metrics.connect_failures.inc();
            }
            return Err(ProxyError::ConnectFailed);
        }
    };
    let mut resp = match conn.send(up).await {
        Ok(r) => {
            attempt.answered(r.status().as_u16());
            r
        }
        Err(_) => {
            attempt.failed("connection_error");
            return Err(ProxyError::UpstreamReset { reached: true });
        }
    };
    if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
        drop(guard);
        return Ok(strip_response(resp));
    }
    let upstream_upgrade = hyper::upgrade::on(&mut resp);
    tokio::task::spawn_local(async move {
        let _guard = guard;
        match tokio::try_join!(client_upgrade, upstream_upgrade) {
            Ok((client, upstream)) => {
                let mut client = hyper_util::rt::TokioIo::new(client);
                let mut upstream = hyper_util::rt::TokioIo::new(upstream);
                if let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
                    tracing::debug!(error = %e, "upgraded connection ended");
                }
            }
            Err(e) => tracing::debug!(error = %e, "upgrade failed"),
        }
    });
    Ok(resp)
}
