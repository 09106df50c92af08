//! Backends (a service's version) and their endpoints, with the state that
//! outlives reloads: in-flight counts, load-balancer cursors.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use arc_swap::ArcSwap;
use serin_discovery::{BackendKey, EndpointSpec};

static NEXT_ENDPOINT_ID: AtomicU64 = AtomicU64::new(1);

/// One address that serves a backend.
#[derive(Debug)]
pub struct Endpoint {
    /// Unique for the life of the process; keys per-worker connection pools.
    pub id: u64,
    pub addr: SocketAddr,
    pub name: Arc<str>,
    /// Requests in flight to this endpoint, across workers (for P2C).
    active: AtomicUsize,
    /// Ejection and health-check state.
    pub health: crate::outlier::EndpointHealth,
}

impl Endpoint {
    pub fn new(spec: &EndpointSpec) -> Self {
        Self {
            id: NEXT_ENDPOINT_ID.fetch_add(1, Ordering::Relaxed),
            addr: spec.addr,
            name: spec.name.clone(),
            active: AtomicUsize::new(0),
            health: Default::default(),
        }
    }

    pub fn active(&self) -> usize {
        self.active.load(Ordering::Relaxed)
    }

    /// Counts a request in flight until the guard drops.
    pub fn start_request(self: &Arc<Self>) -> ActiveGuard {
        self.active.fetch_add(1, Ordering::Relaxed);
        ActiveGuard(self.clone())
    }
}

pub struct ActiveGuard(Arc<Endpoint>);

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The endpoints of a backend at one moment.
#[derive(Debug, Default)]
pub struct EndpointSet {
    pub list: Vec<Arc<Endpoint>>,
    ring: OnceLock<Vec<(u64, usize)>>,
}

/// Points per endpoint on the hash ring: enough for an even spread over a
/// handful of endpoints, few enough to build in microseconds.
const RING_POINTS_PER_ENDPOINT: usize = 100;

impl EndpointSet {
    pub fn new(list: Vec<Arc<Endpoint>>) -> Self {
        Self {
            list,
            ring: OnceLock::new(),
        }
    }

    /// The consistent-hash ring (built on first use): sorted (hash, index).
    pub fn ring(&self) -> &[(u64, usize)] {
        self.ring.get_or_init(|| {
            let mut ring = Vec::with_capacity(self.list.len() * RING_POINTS_PER_ENDPOINT);
            for (i, ep) in self.list.iter().enumerate() {
                for point in 0..RING_POINTS_PER_ENDPOINT {
                    let key = format!("{}#{point}", ep.addr);
                    ring.push((hash64(key.as_bytes()), i));
                }
            }
            ring.sort_unstable();
            ring
        })
    }
}

/// A stable 64-bit hash (FNV-1a then a mix), the same in every process so
/// that several serin replicas send a key to the same endpoint.
pub fn hash64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    // splitmix64 finaliser: FNV alone clusters on similar keys.
    h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

/// A service version as the data plane sees it. Lives across reloads while
/// the backend exists, so counters and endpoint state are kept.
#[derive(Debug)]
pub struct Backend {
    pub key: BackendKey,
    /// Requests and retries in flight, for the circuit breaker.
    pub requests: Arc<crate::resilience::Gauge>,
    pub retries: Arc<crate::resilience::Gauge>,
    /// Upstream connections open, and requests waiting for one.
    pub connections: Arc<crate::resilience::Gauge>,
    pub pending: Arc<crate::resilience::Gauge>,
    /// Woken when a connection closes or goes back to a pool.
    pub connection_freed: Arc<tokio::sync::Notify>,
    /// Requests, errors and latency, for serin's own analysis (canary).
    pub stats: crate::stats::BackendStats,
    /// Shadow answers of this version when it is a mirror, for the canary's
    /// mirror step.
    pub shadow: crate::stats::ShadowStats,
    /// The latest ejection deadline of any endpoint (ms; 0: none), so the
    /// balancer can skip health checks when nothing is ejected.
    pub degraded_until: std::sync::atomic::AtomicU64,
    /// Endpoints that fail active health checks now.
    pub unhealthy: AtomicUsize,
    endpoints: ArcSwap<EndpointSet>,
    /// Round-robin cursor.
    pub cursor: AtomicUsize,
}

impl Backend {
    pub fn new(key: BackendKey) -> Self {
        Self {
            key,
            requests: Arc::default(),
            retries: Arc::default(),
            connections: Arc::default(),
            pending: Arc::default(),
            connection_freed: Arc::default(),
            stats: Default::default(),
            shadow: Default::default(),
            degraded_until: Default::default(),
            unhealthy: AtomicUsize::new(0),
            endpoints: ArcSwap::from_pointee(EndpointSet::default()),
            cursor: AtomicUsize::new(0),
        }
    }

    pub fn endpoints(&self) -> arc_swap::Guard<Arc<EndpointSet>> {
        self.endpoints.load()
    }

    /// Replaces the endpoint set, keeping the state of endpoints that stay.
    pub fn set_endpoints(&self, specs: &[EndpointSpec]) {
        let old = self.endpoints.load();
        let list: Vec<Arc<Endpoint>> = specs
            .iter()
            .map(|spec| {
                old.list
                    .iter()
                    .find(|e| e.addr == spec.addr)
                    .cloned()
                    .unwrap_or_else(|| Arc::new(Endpoint::new(spec)))
            })
            .collect();
        let unhealthy = list.iter().filter(|e| !e.health.is_healthy()).count();
        self.endpoints.store(Arc::new(EndpointSet::new(list)));
        self.unhealthy.store(unhealthy, Ordering::Relaxed);
    }
}
