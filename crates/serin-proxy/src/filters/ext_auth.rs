//! The ExternalAuth filter (Gateway API, HTTP): the auth service is asked
//! first, with the request's method and path and its allowed headers. An
//! answer in 2xx lets the request through, with the allowed response
//! headers copied into it; any other answer goes back to the client as it
//! is. When the auth service cannot answer in time the request is refused
//! with 403 (as Envoy's ext_authz), unless the filter says `failOpen`.

use crate::body::ClientBody;
use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode, Uri};

use super::CompiledExtAuth;
use crate::balance;
use crate::body::{ReplayBody, ResponseBody};
use crate::headers;
use crate::request::ConnInfo;
use crate::request::error::local;
use crate::request::strip_response;
use crate::server::WorkerCtx;

/// `Ok` to go on (headers added to `req`), `Err` with the answer for the
/// client.
pub async fn check(
    ctx: &WorkerCtx,
    info: &ConnInfo,
    req: &mut Request<ClientBody>,
    auth: &CompiledExtAuth,
) -> Result<(), Response<ResponseBody>> {
    let cfg = &auth.config;
    let result = tokio::time::timeout(cfg.timeout, ask(ctx, info, req, auth)).await;
    let failure = match result {
        Ok(Ok(resp)) => Ok(resp),
        Ok(Err(reason)) => Err(reason),
        Err(_) => Err("the auth service did not answer in time"),
    };
    let resp = match failure {
        Ok(resp) => resp,
        Err(reason) => {
            tracing::warn!(service = %cfg.service, reason, "external authorization failed");
            if cfg.fail_open {
                return Ok(());
            }
            return Err(local(
                StatusCode::FORBIDDEN,
                "external authorization failed",
            ));
        }
    };
    if !resp.status().is_success() {
        return Err(strip_response(resp));
    }
    for name in &cfg.allowed_response_headers {
        let values: Vec<HeaderValue> = resp.headers().get_all(name).iter().cloned().collect();
        if !values.is_empty() {
            req.headers_mut().remove(name);
            for v in values {
                req.headers_mut().append(name.clone(), v);
            }
        }
    }
    Ok(())
}

async fn ask(
    ctx: &WorkerCtx,
    info: &ConnInfo,
    req: &Request<ClientBody>,
    auth: &CompiledExtAuth,
) -> Result<Response<ResponseBody>, &'static str> {
    let cfg = &auth.config;
    let endpoints = auth.backend.endpoints();
    let ep = balance::pick(
        auth.service.lb,
        &auth.backend,
        &endpoints,
        None,
        &[],
        auth.service.panic_threshold,
    )
    .ok_or("no ready endpoint of the auth service")?;
    drop(endpoints);
    let path = req.uri().path_and_query().map_or("/", |pq| pq.as_str());
    let uri: Uri = format!("{}{path}", cfg.path_prefix)
        .parse()
        .map_err(|_| "request path cannot be sent to the auth service")?;
    let mut ask = Request::new(ReplayBody::empty());
    *ask.method_mut() = req.method().clone();
    *ask.uri_mut() = uri;
    let h = ask.headers_mut();
    if let Some(host) = req.headers().get(header::HOST) {
        h.insert(header::HOST, host.clone());
    }
    for name in &cfg.allowed_headers {
        for v in req.headers().get_all(name) {
            h.append(name.clone(), v.clone());
        }
    }
    headers::set_forwarded(h, &info.forwarded_for, info.tls);
    h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
    let conn = ctx
        .pools
        .checkout(&ep, &auth.service.pool, &auth.backend, false)
        .await
        .map_err(|_| "cannot connect to the auth service")?;
    conn.send(ask)
        .await
        .map_err(|_| "the auth service closed the connection")
}
