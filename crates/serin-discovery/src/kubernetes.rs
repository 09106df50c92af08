//! Endpoints from Kubernetes EndpointSlices.
//!
//! `serin render kubernetes` gives every service version its own Service
//! (`qotm-v1`), so the EndpointSlices of that Service (label
//! `kubernetes.io/service-name: qotm-v1`) are exactly that version's pods.
//! [`follow_endpoint_slices`] watches the slices of the client's namespace
//! and keeps each targeted backend's ready endpoints in the [`Registry`].
//!
//! A watch that fails is retried with back-off, a cut watch resumes from its
//! resourceVersion, and a 410 Gone (history compacted) lists again; while
//! that happens the endpoints known so far keep serving: the reflector's
//! store is only replaced when a new list is complete (kube-rs' `InitDone`).

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;

use futures_util::{Stream, StreamExt};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::reflector::{self, Store};
use kube::runtime::watcher::{self, Event};
use kube::runtime::{WatchStreamExt, reflector::Lookup};
use kube::{Api, Resource};
use tokio::sync::watch;

pub use kube::Client;

use crate::{BackendKey, EndpointSpec, Registry};

/// The label that names an EndpointSlice's Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// Which Kubernetes Service's endpoints are which backend's: Service name
/// → backend.
pub type Targets = BTreeMap<String, BackendKey>;

/// Why no Kubernetes client could be made.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(
        "no Kubernetes client configuration (KUBECONFIG, ~/.kube/config or the in-cluster service account): {0}"
    )]
    Config(#[from] kube::config::InferConfigError),
    #[error("cannot make a Kubernetes client: {0}")]
    Client(#[from] kube::Error),
}

/// A client configured from the usual places: `KUBECONFIG` or
/// `~/.kube/config`, else the in-cluster service account. Its default
/// namespace is the kubeconfig context's, or the pod's.
pub async fn client() -> Result<Client, ClientError> {
    let config = kube::Config::infer().await?;
    Ok(Client::try_from(config)?)
}

/// Whether a watcher error is a 410 Gone: the resourceVersion it resumes
/// from has been compacted away.
fn is_gone(error: &watcher::Error) -> bool {
    match error {
        watcher::Error::WatchError(status) => status.code == 410,
        watcher::Error::WatchStartFailed(kube::Error::Api(status))
        | watcher::Error::WatchFailed(kube::Error::Api(status)) => status.code == 410,
        _ => false,
    }
}

type EventStream<K> = Pin<Box<dyn Stream<Item = Result<Event<K>, watcher::Error>> + Send>>;

/// A kube-rs watcher that also lists again after an HTTP 410 on a watch
/// request. kube-rs lists again by itself after a 410 ERROR event (what API
/// servers send), but after an HTTP 410 it would keep retrying the same
/// compacted resourceVersion; a fresh watcher starts with a list instead.
/// Errors are passed on (after the fresh start), with back-off between them.
pub fn relisting_watcher<K>(api: Api<K>, config: watcher::Config) -> EventStream<K>
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    let fresh = {
        let api = api.clone();
        let config = config.clone();
        move || -> EventStream<K> { watcher::watcher(api.clone(), config.clone()).boxed() }
    };
    let first = fresh();
    futures_util::stream::unfold((first, fresh), |(mut inner, fresh)| async move {
        let item = inner.next().await?;
        if let Err(e) = &item
            && is_gone(e)
        {
            inner = fresh();
        }
        Some((item, (inner, fresh)))
    })
    .default_backoff()
    .boxed()
}

/// Watches the EndpointSlices of the client's namespace and keeps every
/// backend of `targets` at its Service's ready endpoints on the port named
/// `port_name` (or a slice's only, unnamed, port). Backends that stop being
/// targets are removed from the registry. Runs until the task is dropped.
pub async fn follow_endpoint_slices(
    client: Client,
    registry: Registry,
    mut targets: watch::Receiver<Targets>,
    port_name: String,
) {
    let api: Api<EndpointSlice> = Api::default_namespaced(client);
    let writer = reflector::store::Writer::<EndpointSlice>::default();
    let store = writer.as_reader();
    let config = watcher::Config::default().labels(SERVICE_NAME_LABEL);
    let mut events = reflector::reflector(writer, relisting_watcher(api, config)).boxed();
    let mut published = BTreeSet::new();
    // Nothing is published before the first complete list: an empty
    // registry would be wrong, not just stale.
    let mut listed = false;
    let mut failing = false;
    loop {
        tokio::select! {
            event = events.next() => {
                let Some(event) = event else { return };
                match event {
                    Ok(Event::InitDone) => {
                        if !listed || failing {
                            tracing::info!(slices = store.state().len(), "EndpointSlices listed");
                        }
                        listed = true;
                        failing = false;
                    }
                    Ok(Event::Apply(_) | Event::Delete(_)) => failing = false,
                    Ok(Event::Init | Event::InitApply(_)) => continue,
                    Err(e) => {
                        // Known endpoints stay; the watcher retries.
                        if !failing {
                            tracing::warn!(error = %e, "EndpointSlice watch failed; the known endpoints keep serving while it retries");
                        } else {
                            tracing::debug!(error = %e, "EndpointSlice watch still failing");
                        }
                        failing = true;
                        continue;
                    }
                }
            }
            changed = targets.changed() => {
                if changed.is_err() {
                    return;
                }
            }
        }
        if listed {
            let now = targets.borrow_and_update().clone();
            publish(&store, &now, &port_name, &registry, &mut published);
        }
    }
}

/// Puts every target's ready endpoints into the registry and removes the
/// backends published before that are no target any more.
fn publish(
    store: &Store<EndpointSlice>,
    targets: &Targets,
    port_name: &str,
    registry: &Registry,
    published: &mut BTreeSet<BackendKey>,
) {
    let slices = store.state();
    let mut by_service = ready_endpoints(&slices, port_name);
    let mut now = BTreeSet::new();
    for (service, key) in targets {
        let endpoints = by_service.remove(service).unwrap_or_default();
        tracing::debug!(backend = %key, endpoints = endpoints.len(), "endpoints from EndpointSlices");
        registry.set(key.clone(), endpoints);
        now.insert(key.clone());
    }
    for gone in published.difference(&now) {
        registry.remove(gone);
    }
    *published = now;
}

/// The ready endpoints of every Service the slices belong to.
pub fn ready_endpoints(
    slices: &[Arc<EndpointSlice>],
    port_name: &str,
) -> BTreeMap<String, Vec<EndpointSpec>> {
    let mut out: BTreeMap<String, Vec<EndpointSpec>> = BTreeMap::new();
    for slice in slices {
        let Some(service) = slice
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(SERVICE_NAME_LABEL))
        else {
            continue;
        };
        let endpoints = out.entry(service.clone()).or_default();
        // FQDN slices name hosts, not addresses.
        if !matches!(slice.address_type.as_str(), "IPv4" | "IPv6") {
            continue;
        }
        let Some(port) = slice_port(slice, port_name) else {
            tracing::debug!(slice = %slice.name().unwrap_or_default(), port = port_name, "EndpointSlice has no such port");
            continue;
        };
        for ep in &slice.endpoints {
            // The API: "a nil value should be interpreted as ready".
            let ready = ep.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true);
            if !ready {
                continue;
            }
            for address in &ep.addresses {
                let Ok(ip) = address.parse::<IpAddr>() else {
                    continue;
                };
                let addr = SocketAddr::new(ip, port);
                let name = ep
                    .target_ref
                    .as_ref()
                    .and_then(|t| t.name.clone())
                    .or_else(|| ep.hostname.clone())
                    .unwrap_or_else(|| addr.to_string());
                endpoints.push(EndpointSpec {
                    addr,
                    name: name.into(),
                });
            }
        }
    }
    out
}

/// The slice's port named `port_name`, or its only port when that has no
/// name (a Service with one unnamed port).
fn slice_port(slice: &EndpointSlice, port_name: &str) -> Option<u16> {
    let ports = slice.ports.as_deref().unwrap_or_default();
    let port = ports
        .iter()
        .find(|p| p.name.as_deref() == Some(port_name))
        .or_else(|| match ports {
            [only] if only.name.as_deref().unwrap_or("").is_empty() => Some(only),
            _ => None,
        })?;
    port.port.and_then(|p| u16::try_from(p).ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn slice(
        service: &str,
        port: Option<&str>,
        eps: &[(&str, Option<bool>)],
    ) -> Arc<EndpointSlice> {
        Arc::new(EndpointSlice {
            metadata: ObjectMeta {
                name: Some(format!("{service}-x")),
                labels: Some(BTreeMap::from([(
                    SERVICE_NAME_LABEL.to_string(),
                    service.to_string(),
                )])),
                ..ObjectMeta::default()
            },
            address_type: "IPv4".into(),
            endpoints: eps
                .iter()
                .map(|(ip, ready)| Endpoint {
                    addresses: vec![(*ip).to_string()],
                    conditions: Some(EndpointConditions {
                        ready: *ready,
                        ..EndpointConditions::default()
                    }),
                    ..Endpoint::default()
                })
                .collect(),
            ports: Some(vec![EndpointPort {
                name: port.map(str::to_string),
                port: Some(8080),
                ..EndpointPort::default()
            }]),
        })
    }

    #[test]
    fn only_ready_endpoints_on_the_named_port() {
        let slices = [
            slice(
                "cart-v1",
                Some("http"),
                &[
                    ("10.0.0.1", Some(true)),
                    ("10.0.0.2", Some(false)),
                    ("10.0.0.3", None),
                ],
            ),
            slice("cart-v2", Some("metrics"), &[("10.0.0.4", Some(true))]),
            slice("cart-v3", None, &[("10.0.0.5", Some(true))]),
        ];
        let eps = ready_endpoints(&slices, "http");
        let addrs = |s: &str| -> Vec<String> {
            eps.get(s)
                .map(|v| v.iter().map(|e| e.addr.to_string()).collect())
                .unwrap_or_default()
        };
        assert_eq!(addrs("cart-v1"), ["10.0.0.1:8080", "10.0.0.3:8080"]);
        assert!(addrs("cart-v2").is_empty());
        assert_eq!(addrs("cart-v3"), ["10.0.0.5:8080"]);
    }
}
