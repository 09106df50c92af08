//! `discovery: kubernetes` and `routes: kubernetes`: the tasks that feed a
//! proxy from the cluster's API server (EndpointSlices, HTTPRoutes).

use std::sync::Arc;

use anyhow::Context;
use serin_config::proxy::{Discovery, ProxyConfig};
use serin_discovery::BackendKey;
use serin_discovery::kubernetes::{Targets, follow_endpoint_slices};
use serin_kube::http_routes::follow_http_routes;
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
        let (reader, writer) = (proxy.clone(), proxy.clone());
        tokio::spawn(follow_http_routes(
            client,
            move || reader.file_config(),
            move |routes| {
                writer
                    .set_kubernetes_routes(routes)
                    .map(|_| ())
                    .map_err(|e| e.into_config_errors("HTTPRoutes"))
            },
        ));
    }
    Ok(())
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
