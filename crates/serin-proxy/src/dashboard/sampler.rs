//! The dashboard's time series: every tick, the cumulative request counters
//! and latency histograms the proxy keeps anyway are read (off the request
//! path) and turned into the interval's request rate, error rate and
//! p50/p95/p99, per route and per route's service version. The last
//! [`HISTORY`] samples are kept.

use std::collections::{BTreeMap, VecDeque};
use std::time::Instant;

use serde::Serialize;

use super::metrics_text::parse_line;
use crate::stats::bucket_quantile;

/// How many samples are kept (at one a second: ten minutes).
pub const HISTORY: usize = 600;

/// Route, service, version.
type Key = (String, String, String);

/// One series' cumulative counters at one moment.
#[derive(Debug, Default, Clone)]
struct Cumulative {
    requests: u64,
    errors: u64,
    /// Cumulative bucket counts by upper bound (`+Inf` last), as Prometheus
    /// gives them.
    buckets: Vec<(f64, u64)>,
}

/// One series over one interval.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Point {
    pub route: String,
    /// Both empty: the route's total over its backends.
    pub service: String,
    pub version: String,
    /// Requests answered since the proxy started.
    pub total: u64,
    pub rps: f64,
    /// Share of the interval's requests answered with a 5xx, in percent.
    pub error_pct: f64,
    /// Latency quantiles in milliseconds; none when no request finished.
    pub p50_ms: Option<f64>,
    pub p95_ms: Option<f64>,
    pub p99_ms: Option<f64>,
}

/// Every series at the end of one interval.
#[derive(Debug, Clone, Serialize)]
pub struct Sample {
    /// Milliseconds since the Unix epoch.
    pub t: u64,
    pub series: Vec<Point>,
}

/// Turns successive readings of the metrics text into samples.
pub struct Sampler {
    last: Option<(Instant, BTreeMap<Key, Cumulative>)>,
    history: VecDeque<Sample>,
}

impl Default for Sampler {
    fn default() -> Self {
        Self::new()
    }
}

impl Sampler {
    pub fn new() -> Self {
        Self {
            last: None,
            history: VecDeque::with_capacity(HISTORY),
        }
    }

    /// Takes a reading (the metrics text at `now`) and gives the sample of
    /// the interval since the previous one (none for the first reading).
    pub fn observe(&mut self, text: &str, now: Instant, unix_ms: u64) -> Option<Sample> {
        let current = read(text);
        let previous = self.last.replace((now, current));
        let (then, previous) = previous?;
        let (_, current) = self.last.as_ref()?;
        let secs = now.duration_since(then).as_secs_f64().max(1e-3);
        let sample = Sample {
            t: unix_ms,
            series: points(&previous, current, secs),
        };
        if self.history.len() == HISTORY {
            self.history.pop_front();
        }
        self.history.push_back(sample.clone());
        Some(sample)
    }

    /// The kept samples, oldest first.
    pub fn history(&self) -> Vec<Sample> {
        self.history.iter().cloned().collect()
    }
}

/// The request counters and latency histograms of every (route, service,
/// version) in the metrics text. Requests answered without a backend
/// (redirects, no route) have no service and are left out.
fn read(text: &str) -> BTreeMap<Key, Cumulative> {
    let mut out: BTreeMap<Key, Cumulative> = BTreeMap::new();
    for line in text.lines().filter_map(parse_line) {
        let requests = line.name == "serin_requests_total";
        let bucket = line.name == "serin_request_duration_seconds_bucket";
        if !(requests || bucket) {
            continue;
        }
        let (Some(route), Some(service), Some(version)) = (
            line.label("route"),
            line.label("service"),
            line.label("version"),
        ) else {
            continue;
        };
        if service.is_empty() {
            continue;
        }
        let entry = out
            .entry((route.to_string(), service.to_string(), version.to_string()))
            .or_default();
        // Counters are integers well within f64's exact range.
        let count = line.value as u64;
        if requests {
            entry.requests += count;
            if line
                .label("code")
                .and_then(|c| c.parse::<u16>().ok())
                .is_some_and(|c| c >= 500)
            {
                entry.errors += count;
            }
        } else {
            let le = match line.label("le") {
                Some("+Inf") => f64::INFINITY,
                Some(v) => match v.parse() {
                    Ok(le) => le,
                    Err(_) => continue,
                },
                None => continue,
            };
            entry.buckets.push((le, count));
        }
    }
    out
}

/// What happened between two readings, per series, plus each route's total.
#[derive(Default)]
struct Delta {
    total: u64,
    requests: u64,
    errors: u64,
    /// Upper bounds (without `+Inf`) and requests per bucket (one more).
    bounds: Vec<f64>,
    counts: Vec<u64>,
}

impl Delta {
    fn between(before: Option<&Cumulative>, now: &Cumulative) -> Self {
        let empty = Cumulative::default();
        let before = before.unwrap_or(&empty);
        let mut bounds = Vec::new();
        let mut counts = Vec::new();
        let mut below = 0u64;
        for (i, (le, cumulative)) in now.buckets.iter().enumerate() {
            let earlier = before.buckets.get(i).map_or(0, |(_, c)| *c);
            let within_and_below = cumulative.saturating_sub(earlier);
            counts.push(within_and_below.saturating_sub(below));
            below = within_and_below;
            if le.is_finite() {
                bounds.push(*le);
            }
        }
        Self {
            total: now.requests,
            requests: now.requests.saturating_sub(before.requests),
            errors: now.errors.saturating_sub(before.errors),
            bounds,
            counts,
        }
    }

    fn add(&mut self, other: &Delta) {
        self.total += other.total;
        self.requests += other.requests;
        self.errors += other.errors;
        if self.counts.is_empty() {
            self.bounds.clone_from(&other.bounds);
            self.counts = vec![0; other.counts.len()];
        }
        // Every series shares the one histogram layout.
        if self.counts.len() == other.counts.len() {
            for (a, b) in self.counts.iter_mut().zip(&other.counts) {
                *a += b;
            }
        }
    }

    fn point(&self, route: &str, service: &str, version: &str, secs: f64) -> Point {
        let ms = |q| bucket_quantile(&self.bounds, &self.counts, q).map(|s| s * 1000.0);
        Point {
            route: route.to_string(),
            service: service.to_string(),
            version: version.to_string(),
            total: self.total,
            rps: self.requests as f64 / secs,
            error_pct: if self.requests == 0 {
                0.0
            } else {
                100.0 * self.errors as f64 / self.requests as f64
            },
            p50_ms: ms(0.5),
            p95_ms: ms(0.95),
            p99_ms: ms(0.99),
        }
    }
}

fn points(
    before: &BTreeMap<Key, Cumulative>,
    now: &BTreeMap<Key, Cumulative>,
    secs: f64,
) -> Vec<Point> {
    let mut out = Vec::new();
    let mut route_totals: BTreeMap<&str, Delta> = BTreeMap::new();
    for (key @ (route, service, version), cumulative) in now {
        let delta = Delta::between(before.get(key), cumulative);
        out.push(delta.point(route, service, version, secs));
        route_totals.entry(route).or_default().add(&delta);
    }
    for (route, delta) in route_totals {
        out.push(delta.point(route, "", "", secs));
    }
    out
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn text(ok: u64, errors: u64, fast: u64, slow: u64) -> String {
        format!(
            "# TYPE serin_requests counter\n\
             serin_requests_total{{route=\"r\",service=\"s\",version=\"v1\",code=\"200\"}} {ok}\n\
             serin_requests_total{{route=\"r\",service=\"s\",version=\"v1\",code=\"503\"}} {errors}\n\
             serin_requests_total{{route=\"r\",service=\"\",version=\"\",code=\"404\"}} 7\n\
             serin_request_duration_seconds_bucket{{le=\"0.01\",route=\"r\",service=\"s\",version=\"v1\"}} {fast}\n\
             serin_request_duration_seconds_bucket{{le=\"0.1\",route=\"r\",service=\"s\",version=\"v1\"}} {}\n\
             serin_request_duration_seconds_bucket{{le=\"+Inf\",route=\"r\",service=\"s\",version=\"v1\"}} {}\n\
             # EOF\n",
            fast + slow,
            fast + slow
        )
    }

    #[test]
    fn rates_errors_and_quantiles_of_an_interval() {
        let mut s = Sampler::new();
        let t0 = Instant::now();
        assert!(s.observe(&text(10, 0, 10, 0), t0, 1).is_none());
        let sample = s
            .observe(&text(100, 10, 80, 30), t0 + Duration::from_secs(2), 2)
            .unwrap_or_else(|| panic!("no sample"));
        let v1 = &sample.series[0];
        assert_eq!((v1.route.as_str(), v1.version.as_str()), ("r", "v1"));
        assert_eq!(v1.total, 110);
        assert!((v1.rps - 50.0).abs() < 1e-9, "{}", v1.rps);
        assert!((v1.error_pct - 10.0).abs() < 1e-9, "{}", v1.error_pct);
        // 70 fast (≤ 10 ms) and 30 slow (10–100 ms).
        let p50 = v1.p50_ms.unwrap_or(0.0);
        assert!(p50 > 0.0 && p50 <= 10.0, "{p50}");
        let p99 = v1.p99_ms.unwrap_or(0.0);
        assert!(p99 > 10.0 && p99 <= 100.0, "{p99}");
        let total = &sample.series[1];
        assert_eq!((total.route.as_str(), total.service.as_str()), ("r", ""));
        assert_eq!(total.rps, v1.rps);
        assert_eq!(total.p99_ms, v1.p99_ms);
        assert_eq!(s.history().len(), 1);
        // A quiet interval: no latency, no errors.
        let quiet = s
            .observe(&text(100, 10, 80, 30), t0 + Duration::from_secs(3), 3)
            .unwrap_or_else(|| panic!("no sample"));
        assert_eq!(quiet.series[0].rps, 0.0);
        assert_eq!(quiet.series[0].p50_ms, None);
    }
}
