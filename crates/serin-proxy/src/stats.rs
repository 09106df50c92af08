//! Counters per service version that serin itself reads (the canary's
//! analysis): requests, client and server errors and a latency histogram, all
//! cumulative; a reader diffs two snapshots to get a window.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Upper bounds of the latency buckets, in seconds (the last is +Inf).
/// Finer than the Prometheus histogram's at the low end so that a ratio of
/// two p99s of fast services is still meaningful.
pub const LATENCY_BOUNDS: [f64; 20] = [
    0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.025, 0.04, 0.06, 0.1, 0.15, 0.25,
    0.4, 0.6, 1.0, 2.5, 5.0, 10.0,
];

#[derive(Debug, Default)]
pub struct BackendStats {
    requests: AtomicU64,
    errors: AtomicU64,
    client_errors: AtomicU64,
    buckets: [AtomicU64; LATENCY_BOUNDS.len() + 1],
}

/// The counters at one moment.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StatsSnapshot {
    pub requests: u64,
    /// Answers with a 5xx status (serin's own 502/503/504 included), and
    /// gRPC calls answered 200 that ended with one of their service's
    /// `grpcErrorCodes`.
    pub errors: u64,
    /// Answers with a 4xx status.
    #[serde(default)]
    pub client_errors: u64,
    /// Requests per latency bucket (see [`LATENCY_BOUNDS`]; last: slower).
    pub buckets: Vec<u64>,
}

impl BackendStats {
    pub fn record(&self, status: u16, elapsed: Duration) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        if status >= 500 {
            self.errors.fetch_add(1, Ordering::Relaxed);
        } else if status >= 400 {
            self.client_errors.fetch_add(1, Ordering::Relaxed);
        }
        let secs = elapsed.as_secs_f64();
        let i = LATENCY_BOUNDS.partition_point(|b| *b < secs);
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
    }

    /// A gRPC call, counted at its head as answered 200, ended with one of
    /// its service's error codes.
    pub fn record_failed_call(&self) {
        self.errors.fetch_add(1, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> StatsSnapshot {
        StatsSnapshot {
            requests: self.requests.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
            client_errors: self.client_errors.load(Ordering::Relaxed),
            buckets: self
                .buckets
                .iter()
                .map(|b| b.load(Ordering::Relaxed))
                .collect(),
        }
    }
}

impl StatsSnapshot {
    /// What happened between `earlier` and `self`.
    pub fn since(&self, earlier: &StatsSnapshot) -> StatsSnapshot {
        StatsSnapshot {
            requests: self.requests.saturating_sub(earlier.requests),
            errors: self.errors.saturating_sub(earlier.errors),
            client_errors: self.client_errors.saturating_sub(earlier.client_errors),
            buckets: self
                .buckets
                .iter()
                .enumerate()
                .map(|(i, b)| b.saturating_sub(earlier.buckets.get(i).copied().unwrap_or(0)))
                .collect(),
        }
    }

    /// Share of requests that were server errors (0 when there were none).
    pub fn error_rate(&self) -> f64 {
        if self.requests == 0 {
            0.0
        } else {
            self.errors as f64 / self.requests as f64
        }
    }

    /// The `q` quantile of latency (seconds), interpolated within its
    /// bucket as Prometheus' `histogram_quantile` does; `None` with no data.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        bucket_quantile(&LATENCY_BOUNDS, &self.buckets, q)
    }
}

/// The `q` quantile of a histogram given as request counts per bucket
/// (`counts[i]` up to `bounds[i]`; one more count than bounds: slower than
/// the last), interpolated within its bucket as Prometheus'
/// `histogram_quantile` does; `None` with no data.
pub fn bucket_quantile(bounds: &[f64], counts: &[u64], q: f64) -> Option<f64> {
    let total: u64 = counts.iter().sum();
    if total == 0 {
        return None;
    }
    let rank = q * total as f64;
    let mut seen = 0u64;
    for (i, count) in counts.iter().enumerate() {
        let before = seen as f64;
        seen += count;
        if seen as f64 >= rank && *count > 0 {
            let lower = match i.checked_sub(1) {
                None => 0.0,
                Some(j) => bounds.get(j).or(bounds.last()).copied().unwrap_or(0.0),
            };
            let Some(upper) = bounds.get(i).copied() else {
                return Some(lower);
            };
            let within = (rank - before) / *count as f64;
            return Some(lower + (upper - lower) * within.clamp(0.0, 1.0));
        }
    }
    bounds.last().copied()
}

/// Shadow answers of one version (request mirroring), compared with the
/// primary's: cumulative, like [`BackendStats`].
#[derive(Debug, Default)]
pub struct ShadowStats {
    same: AtomicU64,
    different: AtomicU64,
    error: AtomicU64,
    unknown: AtomicU64,
}

/// The shadow counters at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShadowSnapshot {
    /// The shadow answered with the primary's status.
    pub same: u64,
    /// The shadow answered with another status.
    pub different: u64,
    /// The shadow got no answer (no endpoint, connection failure).
    pub error: u64,
    /// The primary's status is not known (it failed before answering).
    pub unknown: u64,
}

impl ShadowStats {
    /// Counts one shadow answer: `same`, `different`, `error` or `unknown`
    /// (the `result` label of `serin_mirror_responses_total`).
    pub fn record(&self, result: &str) {
        let counter = match result {
            "same" => &self.same,
            "different" => &self.different,
            "error" => &self.error,
            _ => &self.unknown,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> ShadowSnapshot {
        ShadowSnapshot {
            same: self.same.load(Ordering::Relaxed),
            different: self.different.load(Ordering::Relaxed),
            error: self.error.load(Ordering::Relaxed),
            unknown: self.unknown.load(Ordering::Relaxed),
        }
    }
}

impl ShadowSnapshot {
    /// What happened between `earlier` and `self`.
    pub fn since(&self, earlier: &ShadowSnapshot) -> ShadowSnapshot {
        ShadowSnapshot {
            same: self.same.saturating_sub(earlier.same),
            different: self.different.saturating_sub(earlier.different),
            error: self.error.saturating_sub(earlier.error),
            unknown: self.unknown.saturating_sub(earlier.unknown),
        }
    }

    /// Every shadow answer counted.
    pub fn total(&self) -> u64 {
        self.same + self.different + self.error + self.unknown
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_rates_and_quantiles() {
        let s = BackendStats::default();
        let before = s.snapshot();
        for _ in 0..98 {
            s.record(200, Duration::from_millis(2));
        }
        s.record(503, Duration::from_millis(2));
        s.record(200, Duration::from_millis(700));
        let w = s.snapshot().since(&before);
        assert_eq!((w.requests, w.errors), (100, 1));
        assert!((w.error_rate() - 0.01).abs() < 1e-9);
        let p50 = w.quantile(0.5).unwrap_or(0.0);
        assert!(p50 > 0.001 && p50 <= 0.002, "{p50}");
        let p999 = w.quantile(0.999).unwrap_or(0.0);
        assert!(p999 > 0.6 && p999 <= 1.0, "{p999}");
        assert_eq!(StatsSnapshot::default().quantile(0.99), None);
    }

    #[test]
    fn shadow_windows() {
        let s = ShadowStats::default();
        s.record("same");
        let before = s.snapshot();
        for r in ["same", "same", "different", "error", "unknown"] {
            s.record(r);
        }
        let w = s.snapshot().since(&before);
        assert_eq!((w.same, w.different, w.error, w.unknown), (2, 1, 1, 1));
        assert_eq!(w.total(), 5);
    }
}
