//! Rate limits per route rule: token buckets per client (its address or a
//! header's value) kept in this process (governor's GCRA), or, with
//! `global`, a fixed-window count per client in Redis shared by every serin
//! replica. Over the limit: 429 with `Retry-After` and the `RateLimit-*`
//! headers of the IETF draft; allowed answers carry those headers too.

use std::cell::RefCell;
use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::{DefaultKeyedRateLimiter, Quota};
use http::{HeaderMap, HeaderValue, Response, StatusCode};
use serin_config::proxy::{GlobalRateLimitConfig, RateLimitConfig};

use crate::body::ResponseBody;

type Limiter = DefaultKeyedRateLimiter<String, StateInformationMiddleware>;

pub struct CompiledRateLimit {
    pub config: RateLimitConfig,
    local: Limiter,
    checks: AtomicU64,
}

/// What a check decided.
pub enum Verdict {
    Allow {
        remaining: u64,
        reset: Duration,
    },
    Deny {
        retry_after: Duration,
    },
    /// Redis could not answer and the limit fails closed.
    Unavailable,
}

/// How often the local buckets of quiet clients are dropped (in checks).
const PRUNE_EVERY: u64 = 4096;

impl CompiledRateLimit {
    pub fn new(config: RateLimitConfig) -> Self {
        let one = NonZeroU32::MIN;
        let per = config.per / config.requests.max(1);
        let quota = Quota::with_period(per.max(Duration::from_nanos(1)))
            .unwrap_or_else(|| Quota::per_second(one))
            .allow_burst(NonZeroU32::new(config.burst).unwrap_or(one));
        Self {
            local: DefaultKeyedRateLimiter::keyed(quota)
                .with_middleware::<StateInformationMiddleware>(),
            config,
            checks: AtomicU64::new(0),
        }
    }

    /// The key of a request: a header's value, or the client's address.
    pub fn key(&self, headers: &HeaderMap, client: std::net::IpAddr) -> String {
        match &self.config.key_header {
            Some(h) => headers
                .get(h)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string(),
            None => client.to_string(),
        }
    }

    /// `scope` names the limit in Redis (`route:rule`); only the global
    /// limit reads it.
    pub async fn check(
        &self,
        redis: &RedisConnections,
        scope: (&str, usize),
        key: String,
    ) -> Verdict {
        if let Some(global) = &self.config.global {
            return check_global(redis, global, &self.config, scope, &key).await;
        }
        if self.checks.fetch_add(1, Ordering::Relaxed) % PRUNE_EVERY == PRUNE_EVERY - 1 {
            self.local.retain_recent();
        }
        match self.local.check_key(&key) {
            Ok(state) => Verdict::Allow {
                remaining: u64::from(state.remaining_burst_capacity()),
                reset: self.config.per / self.config.requests.max(1),
            },
            Err(not_until) => Verdict::Deny {
                retry_after: not_until.wait_time_from(DefaultClock::default().now()),
            },
        }
    }

    /// `RateLimit-*` headers for an answer.
    pub fn headers(&self, headers: &mut HeaderMap, remaining: u64, reset: Duration) {
        let limit = if self.config.global.is_some() {
            self.config.requests
        } else {
            self.config.burst
        };
        headers.insert("ratelimit-limit", HeaderValue::from(limit));
        headers.insert("ratelimit-remaining", HeaderValue::from(remaining));
        headers.insert("ratelimit-reset", HeaderValue::from(ceil_secs(reset)));
    }
}

fn ceil_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

/// The 429 for a client over its limit.
pub fn too_many(rl: &CompiledRateLimit, retry_after: Duration) -> Response<ResponseBody> {
    let mut resp = Response::new(ResponseBody::full("rate limit exceeded; retry later\n"));
    *resp.status_mut() = StatusCode::TOO_MANY_REQUESTS;
    let secs = ceil_secs(retry_after).max(1);
    resp.headers_mut()
        .insert(http::header::RETRY_AFTER, HeaderValue::from(secs));
    rl.headers(resp.headers_mut(), 0, Duration::from_secs(secs));
    resp
}

/// A worker's Redis connections, by URL (each worker its own: the request
/// path stays on its thread).
#[derive(Default)]
pub struct RedisConnections {
    conns: RefCell<HashMap<String, redis::aio::MultiplexedConnection>>,
}

impl RedisConnections {
    async fn get(&self, url: &str) -> Result<redis::aio::MultiplexedConnection, redis::RedisError> {
        if let Some(c) = self.conns.borrow().get(url) {
            return Ok(c.clone());
        }
        let client = redis::Client::open(url)?;
        let conn = client.get_multiplexed_async_connection().await?;
        self.conns
            .borrow_mut()
            .insert(url.to_string(), conn.clone());
        Ok(conn)
    }

    fn forget(&self, url: &str) {
        self.conns.borrow_mut().remove(url);
    }
}

async fn check_global(
    redis: &RedisConnections,
    global: &GlobalRateLimitConfig,
    cfg: &RateLimitConfig,
    (route, rule): (&str, usize),
    key: &str,
) -> Verdict {
    let per = cfg.per.as_secs().max(1);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let window = now.as_secs() / per;
    let reset = Duration::from_secs((window + 1) * per).saturating_sub(now);
    let redis_key = format!("serin:ratelimit:{route}:{rule}:{key}:{window}");
    let count = async {
        let mut conn = redis.get(&global.redis).await?;
        let (count, _): (u64, i64) = redis::pipe()
            .atomic()
            .incr(&redis_key, 1u64)
            .expire(&redis_key, i64::try_from(per * 2).unwrap_or(i64::MAX))
            .query_async(&mut conn)
            .await?;
        Ok::<u64, redis::RedisError>(count)
    };
    match tokio::time::timeout(global.timeout, count).await {
        Ok(Ok(n)) if n <= u64::from(cfg.requests) => Verdict::Allow {
            remaining: u64::from(cfg.requests) - n,
            reset,
        },
        Ok(Ok(_)) => Verdict::Deny { retry_after: reset },
        failure => {
            if let Ok(Err(e)) = &failure {
                tracing::warn!(error = %e, redis = %global.redis, "global rate limit unavailable");
            } else {
                tracing::warn!(redis = %global.redis, "global rate limit timed out");
            }
            redis.forget(&global.redis);
            if global.fail_open {
                Verdict::Allow {
                    remaining: u64::from(cfg.requests),
                    reset,
                }
            } else {
                Verdict::Unavailable
            }
        }
    }
}
