//! Phases 4 and 6: what may go on. The rule's limits (rate limit, its
//! concurrency limit) before a backend is picked; fault injection once it
//! is. Refusals here are the rule's own answers, not failures of a backend.

use crate::body::ClientBody;
use http::{Request, Response};

use super::{ProxyError, RequestCx};
use crate::body::ResponseBody;
use crate::ratelimit::{self, Verdict};
use crate::resilience::{self, Fault, Permit};
use crate::snapshot::{CompiledBackendRef, CompiledRule};

/// What the rule's limits decided.
pub(super) enum RuleAdmission<'s> {
    Admitted(Admitted<'s>),
    /// A 429 (rate limit) or 503 (concurrency limit), counted for the rule.
    Refused(Response<ResponseBody>),
}

/// A request the rule's limits let through: it holds its place in the
/// rule's concurrency limit until it is answered, and owes the client the
/// rate limit's headers.
pub(super) struct Admitted<'s> {
    _place: Option<Permit>,
    rate: Option<(&'s ratelimit::CompiledRateLimit, u64, std::time::Duration)>,
}

impl Admitted<'_> {
    /// Adds the `RateLimit-*` headers to the upstream's answer.
    pub(super) fn on_response(&self, resp: &mut Response<ResponseBody>) {
        if let Some((rl, remaining, reset)) = self.rate {
            rl.headers(resp.headers_mut(), remaining, reset);
        }
    }
}

pub(super) async fn rule<'s>(
    cx: &RequestCx<'s>,
    rule: &'s CompiledRule,
    req: &Request<ClientBody>,
) -> Result<RuleAdmission<'s>, ProxyError> {
    let mut rate = None;
    if let Some(rl) = &rule.rate_limit {
        let key = rl.key(req.headers(), cx.client);
        match rl
            .check(&cx.ctx.redis, (&rule.route, rule.index), key)
            .await
        {
            Verdict::Allow { remaining, reset } => rate = Some((rl, remaining, reset)),
            Verdict::Deny { retry_after } => {
                rule.local_metrics.rate_limited(rl.config.global.is_some());
                return Ok(RuleAdmission::Refused(ratelimit::too_many(rl, retry_after)));
            }
            Verdict::Unavailable => return Err(ProxyError::RateLimitUnavailable),
        }
    }
    // Load shedding per rule: past its concurrency limit, 503 at once.
    let place = match rule.max_concurrent_requests {
        None => None,
        Some(max) => match rule.in_flight.try_acquire(max) {
            Some(p) => Some(p),
            None => {
                rule.local_metrics.shed();
                return Err(ProxyError::Overflow("maxConcurrentRequests"));
            }
        },
    };
    Ok(RuleAdmission::Admitted(Admitted {
        _place: place,
        rate,
    }))
}

/// Fault injection (the rule's `fault`): a delay, and maybe an answer in
/// the backend's name instead of the backend's.
pub(super) async fn fault(
    backend: &CompiledBackendRef,
    rule: &CompiledRule,
    req: &Request<ClientBody>,
) -> Option<Response<ResponseBody>> {
    let fault = rule.fault.as_ref()?;
    let abort = match resilience::decide(fault, req.headers()) {
        Fault::None => None,
        Fault::Delay(d) => {
            backend.metrics.fault();
            tokio::time::sleep(d).await;
            None
        }
        Fault::Abort(status) => Some(status),
        Fault::DelayThenAbort(d, status) => {
            tokio::time::sleep(d).await;
            Some(status)
        }
    };
    let status = abort?;
    backend.metrics.fault();
    Some(resilience::aborted(status))
}
