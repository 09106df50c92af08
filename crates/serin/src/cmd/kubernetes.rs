//! `discovery: kubernetes` and `routes: kubernetes`: the tasks that feed a
//! proxy from the cluster's API server (EndpointSlices, HTTPRoutes), and
//! the ones that write Gateway API status back (by the Lease holder only).

use std::sync::Arc;

use anyhow::Context;
use serin_config::proxy::{Discovery, ProxyConfig};
use serin_discovery::BackendKey;
use serin_discovery::kubernetes::{Targets, follow_endpoint_slices};
use serin_kube::follow::follow_cluster;
use serin_kube::lease::{hold_lease, identity};
use serin_kube::status_writer::write_statuses;
use serin_proxy::Proxy;
use tokio::sync::watch;

/// Starts what the proxy's config asks for; nothing when it asks for
/// neither. The client comes from KUBECONFIG, ~/.kube/config or the pod's
/// service account.
pub async fn start(proxy: &Arc<Proxy>) -> anyhow::Result<()> {
    let config = proxy.file_config();
    let discovery = config.discovery == Some(Discovery::Kubernetes);
    if !discovery && !config.routes_from_kubernetes {
        return Ok(());
    }
    let client = serin_discovery::kubernetes::client()
        .await
        .context("the config asks for Kubernetes (discovery or routes)")?;
    tracing::info!(
        namespace = client.default_namespace(),
        discovery,
        routes = config.routes_from_kubernetes,
        "following the Kubernetes API"
    );
    if discovery {
        let (targets, receiver) = watch::channel(targets_of(&config));
        // Versions added or removed by a reload change what is followed.
        let p = proxy.clone();
        tokio::spawn(async move {
            let mut generations = p.generations();
            while generations.changed().await.is_ok() {
                let now = targets_of(&p.file_config());
                targets.send_if_modified(|t| {
                    let changed = *t != now;
                    *t = now;
                    changed
                });
            }
        });
        tokio::spawn(follow_endpoint_slices(
            client.clone(),
            proxy.registry().clone(),
            receiver,
            serin_kube::PORT_NAME.to_string(),
        ));
    }
    if config.routes_from_kubernetes {
        follow_routes(proxy, client);
    }
    Ok(())
}

/// Routes from HTTPRoutes, and their status written by whichever replica
/// holds the Lease.
fn follow_routes(proxy: &Arc<Proxy>, client: serin_discovery::kubernetes::Client) {
    let (plans, planned) = watch::channel(Vec::new());
    let (holding, held) = watch::channel(false);
    let identity = identity();
    tracing::info!(identity = %identity, "writing Gateway API status while holding the Lease");
    tokio::spawn(hold_lease(client.clone(), identity, holding));
    tokio::spawn(write_statuses(client.clone(), planned, held));
    let (reader, writer) = (proxy.clone(), proxy.clone());
    tokio::spawn(follow_cluster(
        client,
        move || reader.file_config(),
        move |routes| {
            writer
                .set_kubernetes_routes(routes)
                .map(|_| ())
                .map_err(|e| e.into_config_errors("HTTPRoutes"))
        },
        plans,
    ));
}

/// The per-version Service of every version without static endpoints.
fn targets_of(config: &ProxyConfig) -> Targets {
    config
        .services
        .iter()
        .flat_map(|s| {
            s.versions
                .iter()
                .filter(|v| v.endpoints.is_none())
                .map(move |v| {
                    (
                        serin_kube::version_object_name(&s.name, &v.name),
                        BackendKey::new(&s.name, &v.name),
                    )
                })
        })
        .collect()
}
