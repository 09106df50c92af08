//! The default metrics source: the proxy's own cumulative counters per
//! service version ([`serin_proxy::Proxy::service_stats`]), snapshot when a
//! window begins and diffed when it ends. Nothing to set up, and exact: it
//! counts every request the proxy answered.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serin_proxy::Proxy;
use serin_proxy::stats::{ShadowSnapshot, StatsSnapshot};

use crate::analysis::{ShadowFigures, VersionFigures, WindowFigures};
use crate::source::{BoxFuture, MetricsSource, SourceError, Target};

pub struct EmbeddedSource {
    proxy: Arc<Proxy>,
    /// The counters when each target's window began, by service.
    begun: Mutex<BTreeMap<String, BTreeMap<String, StatsSnapshot>>>,
    /// The shadow counters when each mirror-step window began, by service.
    shadow_begun: Mutex<BTreeMap<String, BTreeMap<String, ShadowSnapshot>>>,
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

fn figures(version: &str, w: &StatsSnapshot) -> VersionFigures {
    VersionFigures::new(version, w.requests, w.errors, w.quantile(0.99))
}

impl MetricsSource for EmbeddedSource {
    fn kind(&self) -> &'static str {
        "embedded"
    }

    fn begin<'a>(&'a self, target: &'a Target) -> BoxFuture<'a, Result<(), SourceError>> {
        Box::pin(async move {
            let now = self.proxy.service_stats(&target.service);
            self.begun
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(target.service.clone(), now);
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
            let before = self
                .begun
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&target.service)
                .unwrap_or_default();
            let window = |version: &str| {
                let end = now.get(version).cloned().unwrap_or_default();
                // A counter that went down was recreated (its backend left
                // the routes and came back): count from zero.
                let start = before
                    .get(version)
                    .filter(|b| b.requests <= end.requests)
                    .cloned()
                    .unwrap_or_default();
                end.since(&start)
            };
            Ok(WindowFigures {
                canary: figures(&target.canary, &window(&target.canary)),
                baseline: figures(&target.baseline, &window(&target.baseline)),
            })
        })
    }

    fn begin_shadow<'a>(&'a self, target: &'a Target) -> BoxFuture<'a, Result<(), SourceError>> {
        Box::pin(async move {
            let now = self.proxy.shadow_stats(&target.service);
            self.shadow_begun
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(target.service.clone(), now);
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
            let before = self
                .shadow_begun
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&target.service)
                .unwrap_or_default();
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
