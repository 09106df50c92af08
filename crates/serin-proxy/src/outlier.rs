//! Endpoint health: passive (Envoy's outlier detection: endpoints that keep
//! failing are ejected for a while, longer each time) and the flag that
//! active health checks ([`crate::health`]) set. The load balancer skips
//! ejected and unhealthy endpoints unless too few are left (panic
//! threshold), when it spreads over all of them instead.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::Instant;

use serin_config::proxy::OutlierConfig;

use crate::endpoints::{Backend, Endpoint};

/// Milliseconds since the process started: a cheap, monotonic clock for
/// ejection deadlines (0 means "never").
pub fn now_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    let start = START.get_or_init(Instant::now);
    u64::try_from(start.elapsed().as_millis())
        .unwrap_or(u64::MAX)
        .max(1)
}

/// Health state of one endpoint.
#[derive(Debug)]
pub struct EndpointHealth {
    consecutive_5xx: AtomicU32,
    consecutive_gateway: AtomicU32,
    consecutive_local: AtomicU32,
    /// Ejected until this time (ms, see [`now_ms`]); 0 when not ejected.
    ejected_until: AtomicU64,
    /// How many times it was ejected, decaying while it behaves.
    ejections: AtomicU32,
    last_ejection_end: AtomicU64,
    /// Set by active health checks.
    pub(crate) healthy: AtomicBool,
    pub(crate) check_successes: AtomicU32,
    pub(crate) check_failures: AtomicU32,
}

impl Default for EndpointHealth {
    fn default() -> Self {
        Self {
            consecutive_5xx: AtomicU32::new(0),
            consecutive_gateway: AtomicU32::new(0),
            consecutive_local: AtomicU32::new(0),
            ejected_until: AtomicU64::new(0),
            ejections: AtomicU32::new(0),
            last_ejection_end: AtomicU64::new(0),
            healthy: AtomicBool::new(true),
            check_successes: AtomicU32::new(0),
            check_failures: AtomicU32::new(0),
        }
    }
}

impl EndpointHealth {
    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    /// Milliseconds of ejection left (0: not ejected).
    pub fn ejected_for(&self, now: u64) -> u64 {
        self.ejected_until
            .load(Ordering::Relaxed)
            .saturating_sub(now)
    }

    pub fn usable(&self, now: u64) -> bool {
        self.is_healthy() && self.ejected_until.load(Ordering::Relaxed) <= now
    }

    /// Whether the balancer may pick the endpoint now, and if not why
    /// (what the dashboard and `explain` show).
    pub fn state(&self, now: u64) -> EndpointState {
        match self.ejected_for(now) {
            0 if self.is_healthy() => EndpointState::Ready,
            0 => EndpointState::Unhealthy,
            ms => EndpointState::Ejected { for_ms: ms },
        }
    }
}

/// An endpoint's standing with outlier detection and health checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndpointState {
    Ready,
    /// Ejected by outlier detection for this many more milliseconds.
    Ejected {
        for_ms: u64,
    },
    /// Failing its health check.
    Unhealthy,
}

impl EndpointState {
    pub fn label(self) -> &'static str {
        match self {
            Self::Ready => "ready",
            Self::Ejected { .. } => "ejected",
            Self::Unhealthy => "unhealthy",
        }
    }
}

/// What one attempt on an endpoint came to.
#[derive(Debug, Clone, Copy)]
pub enum Outcome {
    Status(u16),
    /// Connect failure, reset, or timeout: the failure is serin's side of
    /// the wire (local origin).
    LocalFailure,
}

/// Counts an outcome and ejects the endpoint when a threshold is reached.
/// Returns true when it was ejected now.
pub fn record(backend: &Backend, ep: &Endpoint, cfg: &OutlierConfig, outcome: Outcome) -> bool {
    let h = &ep.health;
    let (five, gateway, local) = match outcome {
        Outcome::Status(code) if code < 500 => {
            h.consecutive_5xx.store(0, Ordering::Relaxed);
            h.consecutive_gateway.store(0, Ordering::Relaxed);
            h.consecutive_local.store(0, Ordering::Relaxed);
            return false;
        }
        Outcome::Status(code) => (true, matches!(code, 502..=504), false),
        // Counted as a 503 too, as Envoy does unless told to split them.
        Outcome::LocalFailure => (true, true, true),
    };
    let bump = |c: &AtomicU32, on: bool| {
        if on {
            c.fetch_add(1, Ordering::Relaxed) + 1
        } else {
            0
        }
    };
    let n5 = bump(&h.consecutive_5xx, five);
    let ng = bump(&h.consecutive_gateway, gateway);
    let nl = bump(&h.consecutive_local, local);
    if !gateway {
        h.consecutive_gateway.store(0, Ordering::Relaxed);
    }
    let tripped = cfg.consecutive_5xx.is_some_and(|t| five && n5 >= t)
        || cfg
            .consecutive_gateway_errors
            .is_some_and(|t| gateway && ng >= t)
        || cfg
            .consecutive_local_origin_failures
            .is_some_and(|t| local && nl >= t);
    if tripped {
        eject(backend, ep, cfg)
    } else {
        false
    }
}

fn eject(backend: &Backend, ep: &Endpoint, cfg: &OutlierConfig) -> bool {
    let now = now_ms();
    let h = &ep.health;
    if h.ejected_until.load(Ordering::Relaxed) > now {
        return false;
    }
    let set = backend.endpoints();
    let total = set.list.len();
    let ejected = set
        .list
        .iter()
        .filter(|e| e.health.ejected_until.load(Ordering::Relaxed) > now)
        .count();
    // At least one endpoint may always be ejected, as in Envoy.
    let allowed = ((total as f64 * cfg.max_ejection_percent / 100.0).floor() as usize).max(1);
    if ejected >= allowed || total <= 1 {
        return false;
    }
    // The multiplier decays by one per interval spent un-ejected.
    let interval = u64::try_from(cfg.interval.as_millis())
        .unwrap_or(u64::MAX)
        .max(1);
    let since = now.saturating_sub(h.last_ejection_end.load(Ordering::Relaxed));
    let decayed = h
        .ejections
        .load(Ordering::Relaxed)
        .saturating_sub(u32::try_from(since / interval).unwrap_or(u32::MAX));
    let k = decayed + 1;
    h.ejections.store(k, Ordering::Relaxed);
    let base = u64::try_from(cfg.base_ejection_time.as_millis()).unwrap_or(u64::MAX);
    let max = u64::try_from(cfg.max_ejection_time.as_millis()).unwrap_or(u64::MAX);
    let until = now + base.saturating_mul(u64::from(k)).min(max.max(base));
    h.ejected_until.store(until, Ordering::Relaxed);
    h.last_ejection_end.store(until, Ordering::Relaxed);
    h.consecutive_5xx.store(0, Ordering::Relaxed);
    h.consecutive_gateway.store(0, Ordering::Relaxed);
    h.consecutive_local.store(0, Ordering::Relaxed);
    backend.degraded_until.fetch_max(until, Ordering::Relaxed);
    tracing::warn!(
        backend = %backend.key,
        endpoint = %ep.addr,
        ejection_ms = until - now,
        "endpoint ejected"
    );
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use serin_discovery::{BackendKey, EndpointSpec};
    use std::time::Duration;

    fn cfg() -> OutlierConfig {
        OutlierConfig {
            consecutive_5xx: Some(3),
            consecutive_gateway_errors: None,
            consecutive_local_origin_failures: Some(2),
            interval: Duration::from_secs(10),
            base_ejection_time: Duration::from_secs(30),
            max_ejection_time: Duration::from_secs(300),
            max_ejection_percent: 67.0,
        }
    }

    #[test]
    fn three_5xx_in_a_row_eject_and_a_success_resets() {
        let b = Backend::new(BackendKey::new("s", "v1"));
        let specs: Vec<EndpointSpec> = (0..3)
            .map(|i| EndpointSpec {
                addr: ([127, 0, 0, 1], 9000 + i).into(),
                name: format!("e{i}").into(),
            })
            .collect();
        b.set_endpoints(&specs);
        let set = b.endpoints();
        let (e0, e1, e2) = (&set.list[0], &set.list[1], &set.list[2]);
        assert!(!record(&b, e0, &cfg(), Outcome::Status(500)));
        assert!(!record(&b, e0, &cfg(), Outcome::Status(500)));
        assert!(!record(&b, e0, &cfg(), Outcome::Status(200)));
        assert!(!record(&b, e0, &cfg(), Outcome::Status(500)));
        assert!(!record(&b, e0, &cfg(), Outcome::Status(500)));
        assert!(record(&b, e0, &cfg(), Outcome::Status(500)));
        assert!(!e0.health.usable(now_ms()));
        // Two local-origin failures eject the second.
        assert!(!record(&b, e1, &cfg(), Outcome::LocalFailure));
        assert!(record(&b, e1, &cfg(), Outcome::LocalFailure));
        // 67 % of three: no third ejection.
        for _ in 0..5 {
            assert!(!record(&b, e2, &cfg(), Outcome::Status(503)));
        }
    }
}
