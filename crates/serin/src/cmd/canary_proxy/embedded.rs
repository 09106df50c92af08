//! The default metrics source: the proxy's own cumulative counters per
//! service version ([`Proxy::service_stats`]), snapshot when a window
//! begins and diffed when it ends. Nothing to set up, and exact: it counts
//! every request the proxy answered.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serin_canary::analysis::{ShadowFigures, VersionFigures, WindowFigures};
use serin_canary::source::{BoxFuture, MetricsSource, SourceError, Target};
use serin_proxy::Proxy;
use serin_proxy::stats::{ShadowSnapshot, StatsSnapshot};

/// Counters by version, for one service.
type ByVersion<T> = BTreeMap<String, T>;

pub struct EmbeddedSource {
    proxy: Arc<Proxy>,
    /// The counters when each target's window began, by service.
    begun: Mutex<BTreeMap<String, ByVersion<StatsSnapshot>>>,
    /// The shadow counters when each mirror-step window began, by service.
    shadow_begun: Mutex<BTreeMap<String, ByVersion<ShadowSnapshot>>>,
}

impl EmbeddedSource {
    pub fn new(proxy: Arc<Proxy>) -> Self {
        Self {
            proxy,
            begun: Mutex::new(BTreeMap::new()),
            shadow_begun: Mutex::new(BTreeMap::new()),
        }
    }
}

/// Puts `now` in `map` under `service`.
fn remember<T>(map: &Mutex<BTreeMap<String, T>>, service: &str, now: T) {
    map.lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(service.to_string(), now);
}

/// Takes what `map` holds under `service` (empty when nothing).
fn take<T: Default>(map: &Mutex<BTreeMap<String, T>>, service: &str) -> T {
    map.lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(service)
        .unwrap_or_default()
}

fn figures(version: &str, w: &StatsSnapshot) -> VersionFigures {
    VersionFigures::new(version, w.requests, w.errors, w.quantile(0.99))
        .with_client_errors(w.client_errors)
        .with_latencies(w.quantile(0.5), w.quantile(0.9))
}

/// One version's counters over the window from `before` to `now`.
fn window(
    now: &ByVersion<StatsSnapshot>,
    before: &ByVersion<StatsSnapshot>,
    version: &str,
) -> StatsSnapshot {
    let end = now.get(version).cloned().unwrap_or_default();
    // A counter that went down was recreated (its backend left the routes
    // and came back): count from zero.
    let start = before
        .get(version)
        .filter(|b| b.requests <= end.requests)
        .cloned()
        .unwrap_or_default();
    end.since(&start)
}

impl MetricsSource for EmbeddedSource {
    fn kind(&self) -> &'static str {
        "embedded"
    }

    fn begin<'a>(&'a self, target: &'a Target) -> BoxFuture<'a, Result<(), SourceError>> {
        Box::pin(async move {
            let now = self.proxy.service_stats(&target.service);
            remember(&self.begun, &target.service, now);
            Ok(())
        })
    }

    fn end<'a>(
        &'a self,
        target: &'a Target,
        _window: Duration,
    ) -> BoxFuture<'a, Result<WindowFigures, SourceError>> {
        Box::pin(async move {
            let now = self.proxy.service_stats(&target.service);
            let before = take(&self.begun, &target.service);
            Ok(WindowFigures {
                canary: figures(&target.canary, &window(&now, &before, &target.canary)),
                baseline: figures(&target.baseline, &window(&now, &before, &target.baseline)),
            })
        })
    }

    fn begin_shadow<'a>(&'a self, target: &'a Target) -> BoxFuture<'a, Result<(), SourceError>> {
        Box::pin(async move {
            let now = self.proxy.shadow_stats(&target.service);
            remember(&self.shadow_begun, &target.service, now);
            Ok(())
        })
    }

    fn end_shadow<'a>(
        &'a self,
        target: &'a Target,
        percent: f64,
    ) -> BoxFuture<'a, Result<ShadowFigures, SourceError>> {
        Box::pin(async move {
            let now = self.proxy.shadow_stats(&target.service);
            let before = take(&self.shadow_begun, &target.service);
            let end = now.get(&target.canary).copied().unwrap_or_default();
            // Counters that went down were recreated: count from zero.
            let start = before
                .get(&target.canary)
                .copied()
                .filter(|b| b.total() <= end.total())
                .unwrap_or_default();
            let w = end.since(&start);
            Ok(ShadowFigures::new(
                &target.canary,
                percent,
                w.same,
                w.different,
                w.error,
                w.unknown,
            ))
        })
    }
}
