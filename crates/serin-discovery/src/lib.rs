//! Where endpoints come from.
//!
//! The proxy reads endpoints from a [`Registry`]: a map from (service,
//! version) to the addresses that may take traffic right now. Sources write
//! into it: a static list from the config file, the local runtime (ready
//! replicas only), or Kubernetes EndpointSlices. Endpoints change far more
//! often than routes, so the registry is separate from the route snapshot and
//! a change here swaps only the endpoint sets.

pub mod kubernetes;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;
use tokio::sync::watch;

/// A service and one of its versions.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BackendKey {
    pub service: Arc<str>,
    pub version: Arc<str>,
}

impl BackendKey {
    pub fn new(service: &str, version: &str) -> Self {
        Self {
            service: service.into(),
            version: version.into(),
        }
    }
}

impl std::fmt::Display for BackendKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.service, self.version)
    }
}

/// One endpoint as a source reports it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EndpointSpec {
    pub addr: SocketAddr,
    /// A name for people (replica name, pod name); the address when none.
    pub name: Arc<str>,
}

/// Every backend's ready endpoints at one moment. Immutable; a change makes a
/// new one.
pub type EndpointMap = BTreeMap<BackendKey, Arc<[EndpointSpec]>>;

/// The shared endpoint registry. Cheap to clone; every clone sees the same
/// state.
#[derive(Clone)]
pub struct Registry {
    current: Arc<ArcSwap<EndpointMap>>,
    changed: watch::Sender<u64>,
}

impl Default for Registry {
    fn default() -> Self {
        Self::new()
    }
}

impl Registry {
    pub fn new() -> Self {
        let (changed, _) = watch::channel(0);
        Self {
            current: Arc::new(ArcSwap::from_pointee(EndpointMap::new())),
            changed,
        }
    }

    /// The endpoints of every backend now.
    pub fn snapshot(&self) -> Arc<EndpointMap> {
        self.current.load_full()
    }

    /// The endpoints of one backend now (empty when unknown).
    pub fn get(&self, key: &BackendKey) -> Arc<[EndpointSpec]> {
        self.current
            .load()
            .get(key)
            .cloned()
            .unwrap_or_else(|| Arc::from(Vec::new()))
    }

    /// Replaces one backend's endpoints. Does nothing (and wakes nobody) when
    /// they are the same as before.
    pub fn set(&self, key: BackendKey, mut endpoints: Vec<EndpointSpec>) {
        endpoints.sort();
        endpoints.dedup();
        self.update(|map| {
            if map.get(&key).is_some_and(|old| **old == *endpoints) {
                return false;
            }
            map.insert(key.clone(), Arc::from(endpoints.clone()));
            true
        });
    }

    /// Replaces every backend whose service is `service` at once; backends of
    /// that service not in `versions` are removed.
    pub fn set_service(&self, service: &str, versions: BTreeMap<String, Vec<EndpointSpec>>) {
        self.update(|map| {
            let mut next: EndpointMap = map
                .iter()
                .filter(|(k, _)| &*k.service != service)
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            for (version, mut eps) in versions.clone() {
                eps.sort();
                eps.dedup();
                next.insert(BackendKey::new(service, &version), Arc::from(eps));
            }
            if next == *map {
                return false;
            }
            *map = next;
            true
        });
    }

    /// Removes one backend.
    pub fn remove(&self, key: &BackendKey) {
        self.update(|map| map.remove(key).is_some());
    }

    fn update(&self, mut change: impl FnMut(&mut EndpointMap) -> bool) {
        // Writers are rare (discovery events), so a read-copy-update loop is
        // fine; readers on the request path never wait.
        let mut changed = false;
        self.current.rcu(|old| {
            let mut next = EndpointMap::clone(old);
            changed = change(&mut next);
            next
        });
        if changed {
            self.changed.send_modify(|n| *n += 1);
        }
    }

    /// A receiver that wakes on every change.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(port: u16) -> EndpointSpec {
        EndpointSpec {
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            name: format!("r{port}").into(),
        }
    }

    #[test]
    fn set_notifies_only_on_change() {
        let reg = Registry::new();
        let mut rx = reg.subscribe();
        let key = BackendKey::new("qotm", "v1");
        reg.set(key.clone(), vec![ep(2), ep(1)]);
        assert!(rx.has_changed().unwrap_or(false));
        rx.borrow_and_update();
        reg.set(key.clone(), vec![ep(1), ep(2)]);
        assert!(!rx.has_changed().unwrap_or(true));
        assert_eq!(reg.get(&key).len(), 2);
        reg.set_service("qotm", BTreeMap::from([("v2".to_string(), vec![ep(3)])]));
        assert_eq!(reg.get(&key).len(), 0);
        assert_eq!(reg.get(&BackendKey::new("qotm", "v2")).len(), 1);
    }
}
