//! Whether a failed or unwanted attempt is tried again: one pure decision
//! (after linkerd2-proxy's route `RetryPolicy`), table-tested. The caller
//! then asks the retry budget (when the decision says the retry draws on
//! it) and the `maxRetries` circuit breaker.

use std::time::Duration;

use http::Method;
use serin_config::proxy::RetryConfig;

use super::error::{ProxyError, RetrySafety};

// A `Retry-After` longer than this is not waited for (see the constant).
use serin_config::proxy::defaults::MAX_RETRY_AFTER;

/// A rule's retry settings as they apply to one request.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy<'a> {
    config: &'a RetryConfig,
    /// A request that may have reached the upstream may be sent again: the
    /// route configured retries and the method is idempotent, or the route
    /// allows unsafe methods.
    may_resend: bool,
    /// A gRPC call may be sent again when its answer's head carries one of
    /// the rule's `grpcCodes` (the user named them: Envoy's `retry_on`
    /// does not look at the method either, and every call is a POST).
    may_resend_grpc: bool,
}

/// How an attempt ended, as the decision sees it.
#[derive(Debug, Clone, Copy)]
pub enum Attempt<'a> {
    /// The upstream answered.
    Answered {
        status: u16,
        /// The `grpc-status` of a trailers-only answer to a gRPC call.
        grpc_status: Option<u32>,
        retry_after: Option<Duration>,
    },
    /// It failed.
    Failed(&'a ProxyError),
}

/// When a retry goes out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delay {
    /// At once: the last try never reached the upstream.
    None,
    /// After the rule's jittered exponential back-off.
    Backoff,
    /// When the upstream asked to (`Retry-After`).
    After(Duration),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Retry {
        /// The retry may reach the upstream twice: it draws on the budget.
        draws_budget: bool,
        delay: Delay,
    },
    Stop,
}

/// Methods that may be sent twice (RFC 9110 §9.2.2).
pub fn is_idempotent(m: &Method) -> bool {
    matches!(
        *m,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}

impl<'a> RetryPolicy<'a> {
    pub fn new(config: &'a RetryConfig, method: &Method, grpc_call: bool) -> Self {
        Self {
            config,
            may_resend: config.configured && (is_idempotent(method) || config.unsafe_methods),
            may_resend_grpc: config.configured && grpc_call && !config.grpc_codes.is_empty(),
        }
    }

    /// Whether a request may be sent again after it may have reached the
    /// upstream (decides whether a copy of it is kept).
    pub fn may_resend(&self) -> bool {
        self.may_resend || self.may_resend_grpc
    }

    /// What to do after `attempt`, the `retries_done + 1`-th try, when a copy
    /// of the body is (`body_replayable`) or is not at hand.
    pub fn decide(
        &self,
        attempt: Attempt<'_>,
        retries_done: u32,
        body_replayable: bool,
    ) -> Decision {
        if retries_done >= self.config.attempts {
            return Decision::Stop;
        }
        match attempt {
            Attempt::Answered {
                status,
                grpc_status,
                retry_after,
            } => {
                let wanted = (self.may_resend && self.config.codes.contains(&status))
                    || (self.may_resend_grpc
                        && grpc_status.is_some_and(|c| self.config.grpc_codes.contains(&c)));
                match retry_after {
                    _ if !wanted || !body_replayable => Decision::Stop,
                    Some(after) if after > MAX_RETRY_AFTER => Decision::Stop,
                    Some(after) => resend(Delay::After(after)),
                    None => resend(Delay::Backoff),
                }
            }
            Attempt::Failed(e) => match (e.retry(), e) {
                // It comes back with its own body, at once.
                (RetrySafety::Always, ProxyError::Unsent) => Decision::Retry {
                    draws_budget: false,
                    delay: Delay::None,
                },
                (RetrySafety::Always, _) if body_replayable => Decision::Retry {
                    draws_budget: false,
                    delay: match e {
                        ProxyError::ConnectFailed => Delay::None,
                        _ => Delay::Backoff,
                    },
                },
                (RetrySafety::IfIdempotent, ProxyError::Timeout(_))
                    if self.may_resend && body_replayable && self.config.codes.contains(&504) =>
                {
                    resend(Delay::Backoff)
                }
                (RetrySafety::IfIdempotent, ProxyError::UpstreamReset { .. })
                    if self.may_resend && body_replayable =>
                {
                    resend(Delay::Backoff)
                }
                _ => Decision::Stop,
            },
        }
    }
}

/// A retry of a request the upstream may have seen.
fn resend(delay: Delay) -> Decision {
    Decision::Retry {
        draws_budget: true,
        delay,
    }
}

/// Jittered exponential back-off: a random delay between half of and the
/// whole of `base·2^(n-1)`, capped at ten times the base.
pub fn backoff(base: Duration, retry: u32) -> Duration {
    if base.is_zero() {
        return base;
    }
    let max = base.saturating_mul(10);
    let exp = base
        .saturating_mul(1u32 << retry.saturating_sub(1).min(16))
        .min(max);
    let nanos = u64::try_from(exp.as_nanos()).unwrap_or(u64::MAX);
    Duration::from_nanos(fastrand::u64(nanos / 2..=nanos))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::error::Deadline;

    fn config(configured: bool, unsafe_methods: bool) -> RetryConfig {
        RetryConfig {
            attempts: 2,
            codes: vec![502, 503, 504],
            grpc_codes: vec![14],
            backoff: Duration::from_millis(25),
            unsafe_methods,
            configured,
            budget: serin_config::proxy::RetryBudgetConfig {
                percent: 20.0,
                min_retries_per_second: 10,
                ttl: Duration::from_secs(10),
            },
        }
    }

    const RESEND: Decision = Decision::Retry {
        draws_budget: true,
        delay: Delay::Backoff,
    };
    const AGAIN_AT_ONCE: Decision = Decision::Retry {
        draws_budget: false,
        delay: Delay::None,
    };
    const UNSENT: Decision = Decision::Retry {
        draws_budget: false,
        delay: Delay::None,
    };

    #[test]
    fn the_decision_follows_safety_settings_and_what_is_at_hand() {
        let answered = |status| Attempt::Answered {
            status,
            grpc_status: None,
            retry_after: None,
        };
        let connect = ProxyError::ConnectFailed;
        let unsent = ProxyError::Unsent;
        let never_reached = ProxyError::UpstreamReset { reached: false };
        let reset = ProxyError::UpstreamReset { reached: true };
        let timeout = ProxyError::Timeout(Deadline::BackendRequest);
        let overflow = ProxyError::Overflow("maxPendingRequests");
        let aborted = ProxyError::ClientAborted;
        let get = Method::GET;
        let post = Method::POST;
        #[rustfmt::skip]
        let cases: Vec<(&str, RetryConfig, &Method, Attempt, u32, bool, Decision)> = vec![
            // name, config, method, attempt, retries done, body at hand, decision
            ("503 to a GET", config(true, false), &get, answered(503), 0, true, RESEND),
            ("200 is kept", config(true, false), &get, answered(200), 0, true, Decision::Stop),
            ("500 is not in codes", config(true, false), &get, answered(500), 0, true, Decision::Stop),
            ("no retries configured", config(false, false), &get, answered(503), 0, true, Decision::Stop),
            ("503 to a POST", config(true, false), &post, answered(503), 0, true, Decision::Stop),
            ("503 to a POST, unsafe allowed", config(true, true), &post, answered(503), 0, true, RESEND),
            ("attempts used up", config(true, false), &get, answered(503), 2, true, Decision::Stop),
            ("body too big to replay", config(true, false), &get, answered(503), 0, false, Decision::Stop),
            ("connect failure, even a POST", config(false, false), &post, Attempt::Failed(&connect), 0, true, AGAIN_AT_ONCE),
            ("connect failure, attempts used up", config(false, false), &post, Attempt::Failed(&connect), 2, true, Decision::Stop),
            ("unsent comes back with its body", config(false, false), &post, Attempt::Failed(&unsent), 0, false, UNSENT),
            ("never reached, body kept", config(false, false), &post, Attempt::Failed(&never_reached), 0, true,
                Decision::Retry { draws_budget: false, delay: Delay::Backoff }),
            ("reset after a GET was sent", config(true, false), &get, Attempt::Failed(&reset), 0, true, RESEND),
            ("reset after a POST was sent", config(true, false), &post, Attempt::Failed(&reset), 0, true, Decision::Stop),
            ("try timed out, 504 in codes", config(true, false), &get, Attempt::Failed(&timeout), 0, true, RESEND),
            ("a full breaker is not retried", config(true, false), &get, Attempt::Failed(&overflow), 0, true, Decision::Stop),
            ("a client abort is not retried", config(true, true), &post, Attempt::Failed(&aborted), 0, true, Decision::Stop),
        ];
        for (name, cfg, method, attempt, done, body, want) in cases {
            let policy = RetryPolicy::new(&cfg, method, false);
            assert_eq!(policy.decide(attempt, done, body), want, "{name}");
        }
    }

    #[test]
    fn grpc_calls_are_retried_on_the_codes_named_in_their_head() {
        let grpc = |status| Attempt::Answered {
            status: 200,
            grpc_status: status,
            retry_after: None,
        };
        let mut no_grpc_codes = config(true, false);
        no_grpc_codes.grpc_codes.clear();
        #[rustfmt::skip]
        let cases: Vec<(&str, RetryConfig, bool, Attempt, u32, bool, Decision)> = vec![
            // name, config, a gRPC call, attempt, retries done, body at hand, decision
            ("UNAVAILABLE is named", config(true, false), true, grpc(Some(14)), 0, true, RESEND),
            ("NOT_FOUND is not", config(true, false), true, grpc(Some(5)), 0, true, Decision::Stop),
            ("OK", config(true, false), true, grpc(Some(0)), 0, true, Decision::Stop),
            ("status in trailers: already streaming", config(true, false), true, grpc(None), 0, true, Decision::Stop),
            ("no grpcCodes", no_grpc_codes, true, grpc(Some(14)), 0, true, Decision::Stop),
            ("retries not configured", config(false, false), true, grpc(Some(14)), 0, true, Decision::Stop),
            ("not a gRPC call", config(true, false), false, grpc(Some(14)), 0, true, Decision::Stop),
            ("attempts used up", config(true, false), true, grpc(Some(14)), 2, true, Decision::Stop),
            ("body too big to replay", config(true, false), true, grpc(Some(14)), 0, false, Decision::Stop),
            ("a gRPC POST is not resent on 503 for its grpcCodes", config(true, false), true,
                Attempt::Answered { status: 503, grpc_status: None, retry_after: None }, 0, true, Decision::Stop),
        ];
        for (name, cfg, call, attempt, done, body, want) in cases {
            let policy = RetryPolicy::new(&cfg, &Method::POST, call);
            assert_eq!(policy.decide(attempt, done, body), want, "{name}");
        }
        let cfg = config(true, false);
        assert!(RetryPolicy::new(&cfg, &Method::POST, true).may_resend());
        assert!(!RetryPolicy::new(&cfg, &Method::POST, false).may_resend());
    }

    #[test]
    fn retry_after_is_followed_up_to_its_limit() {
        let cfg = config(true, false);
        let policy = RetryPolicy::new(&cfg, &Method::GET, false);
        let after = |secs| Attempt::Answered {
            status: 503,
            grpc_status: None,
            retry_after: Some(Duration::from_secs(secs)),
        };
        assert_eq!(
            policy.decide(after(2), 0, true),
            Decision::Retry {
                draws_budget: true,
                delay: Delay::After(Duration::from_secs(2))
            }
        );
        assert_eq!(policy.decide(after(11), 0, true), Decision::Stop);
    }

    #[test]
    fn backoff_grows_within_its_bounds() {
        let base = Duration::from_millis(10);
        for retry in 1..20 {
            let d = backoff(base, retry);
            let full = base.saturating_mul(1 << (retry - 1).min(16)).min(base * 10);
            assert!(d >= full / 2 && d <= full, "retry {retry}: {d:?}");
        }
        assert_eq!(backoff(Duration::ZERO, 3), Duration::ZERO);
    }
}
