//! The rule phase: the route lookup on the normalised path, then the
//! rule's own request phase (a CORS preflight answered, a declared body
//! size checked, the filters in order). When a rule's JWT filters copy
//! claims into headers, the route is looked up again with them, so routes
//! can match on claims (as Envoy's `clear_route_cache`).

use std::sync::Arc;

use http::{HeaderMap, Request, Response};

use super::{ProxyError, RequestCx, route};
use crate::body::{ClientBody, ResponseBody};
use crate::body_limit::BodyLimit;
use crate::filters::{CorsRequest, Flow};
use crate::routing::RouteTable;
use crate::snapshot::CompiledRule;

/// How many rules one request may enter. A second lookup happens only
/// after a JWT filter set claim headers; one token's claims are the same
/// in every rule, so the second lookup settles it unless rules copy
/// different claims to the same header. Four bounds such a config: the
/// request is then answered 500 (`route_loop`).
pub(super) const MAX_RULES_ENTERED: usize = 4;

/// What the rule phase ends with.
pub(super) enum Entered<'s> {
    /// The rule the request goes on with, and its body limit.
    Rule(&'s Arc<CompiledRule>, Option<BodyLimit>),
    /// The rule answered the request itself (a preflight, a denial, a
    /// redirect).
    Answer(Response<ResponseBody>),
}

/// Finds the request's rule and runs its request phase.
pub(super) async fn enter<'s>(
    cx: &mut RequestCx<'s>,
    table: &'s RouteTable,
    req: &mut Request<ClientBody>,
) -> Result<Entered<'s>, ProxyError> {
    // Headers a JWT filter sets are serin's on this listener: a client's
    // own copies could otherwise choose a route meant for a claim.
    for name in &table.edge.claim_headers {
        req.headers_mut().remove(name);
    }
    let mut rule = route::lookup(cx, table, req)?;
    for _ in 0..MAX_RULES_ENTERED {
        // The request as routed, kept only when claims may route it again.
        let routed =
            (!rule.claim_headers.is_empty()).then(|| (req.uri().clone(), req.headers().clone()));
        let entered = request_phase(cx, table, rule, req).await?;
        let (Entered::Rule(..), Some((uri, mut headers))) = (&entered, routed) else {
            return Ok(entered);
        };
        with_claims(&mut headers, req.headers(), rule);
        cx.route = None;
        let next = route::lookup_with(cx, table, req.method(), &uri, &headers)?;
        if Arc::ptr_eq(next, rule) {
            return Ok(entered);
        }
        // Another rule begins from the request as it came, plus the
        // claims: the first rule's rewrites and header changes are its own.
        *req.uri_mut() = uri;
        *req.headers_mut() = headers;
        cx.cors = None;
        rule = next;
    }
    Err(ProxyError::RouteLoop)
}

/// `routed` (the request's headers when it was routed) with the claim
/// headers `rule`'s filters set in `filtered`.
fn with_claims(routed: &mut HeaderMap, filtered: &HeaderMap, rule: &CompiledRule) {
    for name in &rule.claim_headers {
        routed.remove(name);
        for value in filtered.get_all(name) {
            routed.append(name.clone(), value.clone());
        }
    }
}

/// The rule's own request phase.
async fn request_phase<'s>(
    cx: &mut RequestCx<'s>,
    table: &'s RouteTable,
    rule: &'s Arc<CompiledRule>,
    req: &mut Request<ClientBody>,
) -> Result<Entered<'s>, ProxyError> {
    if let Some(cors) = rule.cors() {
        match cors.on_request(req) {
            CorsRequest::Preflight(answer) => return Ok(Entered::Answer(answer)),
            CorsRequest::Actual(origin) => cx.cors = Some((cors, origin)),
        }
    }
    let body_limit = BodyLimit::of(
        table.edge.max_request_body_bytes,
        rule.max_request_body_bytes,
    );
    if let Some(limit) = &body_limit {
        limit
            .check_declared(req.headers())
            .map_err(|e| ProxyError::BodyTooLarge(e.max))?;
    }
    for filter in &rule.filters {
        if let Flow::Respond(answer) = filter.on_request(cx, req).await {
            return Ok(Entered::Answer(*answer));
        }
    }
    Ok(Entered::Rule(rule, body_limit))
}
