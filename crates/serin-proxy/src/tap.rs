//! Live tap (`serin tap`, `GET /tap`): a stream of summaries of the
//! requests serin answers, filtered at the source and rate-bounded per
//! watcher. While nobody taps, a request pays one relaxed atomic load: no
//! allocation, no lock (see `tests/tap_costs.rs`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde::Serialize;
use tokio::sync::broadcast;

/// Requests kept for watchers that fall behind; beyond it the oldest are
/// dropped for them (and counted), never held back from the request path.
pub const TAP_BUFFER: usize = 1024;

/// Requests a watcher is shown per second unless it asks otherwise: more
/// than a terminal can be read at, little enough to cost nothing notable.
pub const DEFAULT_TAP_RATE: u32 = 100;

/// The most a watcher may ask for per second.
pub const MAX_TAP_RATE: u32 = 10_000;

/// One request, as a tap shows it.
#[derive(Debug, Clone, Serialize)]
pub struct TapEvent {
    /// Unix time in milliseconds when the answer's head was sent.
    pub unix_ms: u64,
    pub listener: Arc<str>,
    pub method: String,
    /// The path as the client sent it (before normalisation).
    pub path: String,
    pub status: u16,
    pub latency_ms: f64,
    pub route: Option<Arc<str>>,
    pub service: Option<Arc<str>>,
    pub version: Option<Arc<str>>,
    pub endpoint: Option<SocketAddr>,
    /// The replica's name, when discovery gave one.
    pub replica: Option<Arc<str>>,
    pub retries: u32,
    pub trace_id: Option<String>,
}

/// Where requests are offered to the watchers (one per process).
pub struct Hub {
    watchers: AtomicUsize,
    sender: broadcast::Sender<Arc<TapEvent>>,
}

impl Default for Hub {
    fn default() -> Self {
        let (sender, _) = broadcast::channel(TAP_BUFFER);
        Self {
            watchers: AtomicUsize::new(0),
            sender,
        }
    }
}

impl Hub {
    /// Whether anyone taps: what the request path asks before it keeps
    /// anything for the tap.
    #[inline]
    pub fn active(&self) -> bool {
        self.watchers.load(Ordering::Relaxed) != 0
    }

    /// Offers a request; `event` is made only when someone taps.
    #[inline]
    pub fn offer(&self, event: impl FnOnce() -> TapEvent) {
        if self.active() {
            // No receiver left (the last watcher just went) is not an error.
            let _ = self.sender.send(Arc::new(event()));
        }
    }

    /// A new watcher of the requests that pass `filter`, at most `rate` a
    /// second.
    pub fn watch(self: &Arc<Self>, filter: TapFilter, rate: u32) -> Watcher {
        let receiver = self.sender.subscribe();
        self.watchers.fetch_add(1, Ordering::Relaxed);
        Watcher {
            hub: self.clone(),
            receiver,
            filter,
            bucket: Bucket::new(rate.clamp(1, MAX_TAP_RATE)),
            pending: None,
        }
    }
}

/// Which requests a watcher wants; `None` fields match all.
#[derive(Debug, Clone, Default)]
pub struct TapFilter {
    pub route: Option<String>,
    pub service: Option<String>,
    pub version: Option<String>,
    /// `5xx`, `4xx`, … or one status (`404`).
    pub status: Option<StatusFilter>,
    pub path_prefix: Option<String>,
}

/// A status or a class of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusFilter {
    Class(u16),
    Exact(u16),
}

/// A status filter that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("status {0:?} is neither a class (2xx … 5xx) nor a status (100 … 599)")]
pub struct BadStatusFilter(pub String);

impl std::str::FromStr for StatusFilter {
    type Err = BadStatusFilter;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || BadStatusFilter(s.to_string());
        let lower = s.to_ascii_lowercase();
        if let Some(class) = lower.strip_suffix("xx") {
            return match class.parse::<u16>() {
                Ok(c @ 1..=5) => Ok(Self::Class(c)),
                _ => Err(bad()),
            };
        }
        match lower.parse::<u16>() {
            Ok(code @ 100..=599) => Ok(Self::Exact(code)),
            _ => Err(bad()),
        }
    }
}

impl TapFilter {
    pub fn admits(&self, e: &TapEvent) -> bool {
        let same = |want: &Option<String>, got: &Option<Arc<str>>| {
            want.as_deref().is_none_or(|w| got.as_deref() == Some(w))
        };
        same(&self.route, &e.route)
            && same(&self.service, &e.service)
            && same(&self.version, &e.version)
            && self.status.is_none_or(|s| match s {
                StatusFilter::Class(c) => e.status / 100 == c,
                StatusFilter::Exact(code) => e.status == code,
            })
            && self
                .path_prefix
                .as_deref()
                .is_none_or(|p| e.path.starts_with(p))
    }
}

/// What a watcher is given next.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum TapItem {
    Request(Arc<TapEvent>),
    /// Requests that passed the filter and were not shown: over the rate,
    /// or lost while the watcher fell behind.
    Dropped {
        count: u64,
    },
}

/// One watcher's end of the tap.
pub struct Watcher {
    hub: Arc<Hub>,
    receiver: broadcast::Receiver<Arc<TapEvent>>,
    filter: TapFilter,
    bucket: Bucket,
    /// A request to show after the count of those dropped before it.
    pending: Option<Arc<TapEvent>>,
}

impl Watcher {
    /// The next request to show, or before it a count of those that were
    /// not; `None` once the hub is gone.
    pub async fn next(&mut self) -> Option<TapItem> {
        if let Some(event) = self.pending.take() {
            return Some(TapItem::Request(event));
        }
        let mut dropped = 0u64;
        loop {
            let event = match self.receiver.recv().await {
                Ok(e) => e,
                // Lost while this watcher fell behind (some of them may
                // not have passed its filter: they are not known any more).
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    dropped += n;
                    continue;
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            };
            if !self.filter.admits(&event) {
                continue;
            }
            // Judged at the request's time, not the watcher's reading.
            if !self.bucket.take(event.unix_ms) {
                dropped += 1;
                continue;
            }
            if dropped > 0 {
                self.pending = Some(event);
                return Some(TapItem::Dropped { count: dropped });
            }
            return Some(TapItem::Request(event));
        }
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.hub.watchers.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A token bucket of `rate` a second, holding at most one second's worth,
/// on the requests' own clock (Unix milliseconds).
struct Bucket {
    rate: f64,
    tokens: f64,
    last_ms: Option<u64>,
}

impl Bucket {
    fn new(rate: u32) -> Self {
        Self {
            rate: f64::from(rate),
            tokens: f64::from(rate),
            last_ms: None,
        }
    }

    fn take(&mut self, now_ms: u64) -> bool {
        let elapsed_ms = self.last_ms.map_or(0, |last| now_ms.saturating_sub(last));
        let earned = elapsed_ms as f64 / 1000.0 * self.rate;
        self.tokens = (self.tokens + earned).min(self.rate);
        self.last_ms = Some(self.last_ms.map_or(now_ms, |last| last.max(now_ms)));
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bucket_lets_rate_a_second_through_on_the_requests_clock() {
        // (request time in ms, shown?) at 2 a second.
        let cases = [
            (0, true),
            (10, true),
            (20, false),
            (400, false),
            (520, true),
            (530, false),
            (2_000, true),
            (2_001, true),
            (2_002, false),
            // A request stamped earlier than the last (clocks of two
            // workers) earns nothing and takes nothing back.
            (1_500, false),
        ];
        let mut bucket = Bucket::new(2);
        for (at, shown) in cases {
            assert_eq!(bucket.take(at), shown, "at {at} ms");
        }
    }

    #[test]
    fn status_filters_are_classes_or_statuses() {
        let cases = [
            ("5xx", Ok(StatusFilter::Class(5))),
            ("4XX", Ok(StatusFilter::Class(4))),
            ("404", Ok(StatusFilter::Exact(404))),
            ("6xx", Err(BadStatusFilter("6xx".into()))),
            ("99", Err(BadStatusFilter("99".into()))),
            ("ok", Err(BadStatusFilter("ok".into()))),
        ];
        for (text, expected) in cases {
            assert_eq!(text.parse::<StatusFilter>(), expected, "{text}");
        }
    }
}
