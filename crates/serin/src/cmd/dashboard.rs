//! What the dashboard (`/ui`, in serin-proxy) shows from the parts it does
//! not know: the canary controller and the local runtime.

use std::sync::Arc;

use serin_proxy::dashboard::{CanaryView, Providers, Replica, ReplicaView};

struct Canaries(serin_canary::Controller);

impl CanaryView for Canaries {
    fn canaries(&self) -> Vec<serde_json::Value> {
        self.0
            .list()
            .iter()
            .filter_map(|s| serde_json::to_value(s).ok())
            .collect()
    }

    fn decisions(&self) -> Vec<serde_json::Value> {
        self.0
            .recent_decisions()
            .iter()
            .filter_map(|d| serde_json::to_value(d).ok())
            .collect()
    }
}

struct Replicas(serin_runtime::RuntimeHandle);

impl ReplicaView for Replicas {
    fn replicas(&self) -> Vec<Replica> {
        self.0
            .ps()
            .into_iter()
            .map(|r| Replica {
                state: r.state.as_str().to_string(),
                name: r.name,
                service: r.service,
                version: r.version,
                ready: r.ready,
                restarts: r.restarts,
                port: r.port,
                message: r.message,
            })
            .collect()
    }
}

/// The dashboard's providers: the canary controller and, under `serin up`,
/// the runtime's replicas.
pub fn providers(
    canary: &serin_canary::Controller,
    runtime: Option<&serin_runtime::RuntimeHandle>,
) -> Providers {
    Providers {
        canary: Some(Arc::new(Canaries(canary.clone()))),
        replicas: runtime.map(|r| Arc::new(Replicas(r.clone())) as Arc<dyn ReplicaView>),
    }
}
