//! Phase 2: the rule for the request, looked up on the normalised path in
//! the listener's precompiled table (see [`crate::routing`]); and phase 5:
//! the rule's backend for it, picked by weight.

use std::sync::Arc;

use crate::body::ClientBody;
use http::{HeaderMap, Method, Request, Uri};

use super::{ProxyError, RequestCx};
use crate::filters::split_host_port;
use crate::routing::RouteTable;
use crate::snapshot::{CompiledBackendRef, CompiledRule};

pub(super) fn lookup<'s>(
    cx: &mut RequestCx<'s>,
    table: &'s RouteTable,
    req: &Request<ClientBody>,
) -> Result<&'s Arc<CompiledRule>, ProxyError> {
    lookup_with(cx, table, req.method(), req.uri(), req.headers())
}

/// The same for a request of these parts (a second lookup with claims).
pub(super) fn lookup_with<'s>(
    cx: &mut RequestCx<'s>,
    table: &'s RouteTable,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
) -> Result<&'s Arc<CompiledRule>, ProxyError> {
    // The downstream phase made Host agree with the target, or set it.
    let raw = headers
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    let (host, _) = split_host_port(raw);
    // Host names are matched in lower case; most arrive so, and are not
    // copied.
    let host: std::borrow::Cow<'_, str> = if host.bytes().any(|b| b.is_ascii_uppercase()) {
        host.to_ascii_lowercase().into()
    } else {
        host.into()
    };
    let Some((rule, matched)) = table.lookup(
        &host,
        method,
        uri.path(),
        uri.query(),
        headers,
        cx.info.peer.get().map(Box::as_ref),
    ) else {
        return Err(ProxyError::NoRoute(format!(
            "no route matches {method} {host}{}",
            uri.path()
        )));
    };
    cx.route = Some((rule, matched));
    cx.trace.routed(method, &rule.route, uri.path());
    Ok(rule)
}

/// The backend the rule's weights pick. A rule without one answers 500
/// (Gateway API), counted for the rule: it has no backend, or the weights
/// fell on a backendRef that is not a Service or does not exist.
pub(super) fn backend(rule: &CompiledRule) -> Result<&CompiledBackendRef, ProxyError> {
    rule.pick_backend().inspect_err(|e| {
        tracing::debug!(route = %rule.route, rule = rule.index, reason = e.label(), "no backend for the request");
        rule.count_unserved(e);
    })
}
