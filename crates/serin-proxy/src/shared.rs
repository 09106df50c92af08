//! State shared by the control plane and every worker thread: the running
//! snapshot, metrics, the drain signal, open connections, and the
//! long-lived state of each backend.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use arc_swap::ArcSwap;
use rustc_hash::FxHashSet;
use serin_discovery::{BackendKey, Registry};
use tokio::sync::watch;

use crate::endpoints::Backend;
use crate::metrics::Metrics;
use crate::snapshot::Snapshot;

/// State shared by the control plane and every worker.
pub struct Shared {
    pub snapshot: ArcSwap<Snapshot>,
    pub metrics: Arc<Metrics>,
    /// `Some(deadline)` once draining started.
    pub drain: watch::Sender<Option<Instant>>,
    /// Mirrors `drain` for the request path (a watch borrow takes a lock).
    pub(crate) draining: AtomicBool,
    pub(crate) open_connections: AtomicUsize,
    pub(crate) backends: Mutex<BTreeMap<BackendKey, Arc<Backend>>>,
    /// [`crate::ProxyOptions::worker_tidy`].
    pub(crate) worker_tidy: Option<fn()>,
    /// Where requests are offered to `serin tap` watchers.
    pub tap: Arc<crate::tap::Hub>,
}

impl Shared {
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    pub fn drain_expired(&self) -> bool {
        self.drain
            .borrow()
            .is_some_and(|deadline| Instant::now() >= deadline)
    }

    pub fn open_connections(&self) -> usize {
        self.open_connections.load(Ordering::Relaxed)
    }

    pub(crate) fn connection_opened(&self) {
        self.open_connections.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn connection_closed(&self) {
        self.open_connections.fetch_sub(1, Ordering::Relaxed);
    }

    pub(crate) fn live_endpoint_ids(&self) -> FxHashSet<u64> {
        let backends = self.backends.lock().unwrap_or_else(|e| e.into_inner());
        backends
            .values()
            .flat_map(|b| b.endpoints().list.iter().map(|e| e.id).collect::<Vec<_>>())
            .collect()
    }

    /// The long-lived state of a backend, created on first use.
    pub(crate) fn backend(&self, key: &BackendKey, registry: &Registry) -> Arc<Backend> {
        let mut backends = self.backends.lock().unwrap_or_else(|e| e.into_inner());
        backends
            .entry(key.clone())
            .or_insert_with(|| {
                let b = Arc::new(Backend::new(key.clone()));
                b.set_endpoints(&registry.get(key));
                b
            })
            .clone()
    }

    pub fn backends(&self) -> Vec<Arc<Backend>> {
        let backends = self.backends.lock().unwrap_or_else(|e| e.into_inner());
        backends.values().cloned().collect()
    }
}
