//! The parts of a sidecar's proxy config that `serin up` (one serin for
//! every replica) and `serin render kubernetes` (a serin in each pod) make
//! alike: its listeners, the service `app:…` that is its own app, and the
//! inbound rule that sends everything to it.

use std::net::SocketAddr;

use crate::proxy::{
    BackendRefConfig, ListenerConfig, ListenerLimits, RuleConfig, ServiceConfig, VersionConfig,
};

/// The one version of a sidecar's `app:…` service.
pub const APP_VERSION: &str = "app";

/// A sidecar's listener `name` (`in:…`, `out:…:DEP`) on `address`.
pub fn listener(name: String, address: SocketAddr) -> ListenerConfig {
    ListenerConfig {
        path: format!("sidecar {name}"),
        name,
        address,
        tls: None,
        limits: ListenerLimits::default(),
        path_normalization: Default::default(),
        compression: None,
        client_address: None,
        proxy_protocol: None,
        span: Default::default(),
    }
}

/// The service `app` of a sidecar: its app at `endpoint`, with the
/// settings of the stack's service `template` but no ejection or health
/// checks (it is the only endpoint, and the runtime's or the kubelet's
/// probes watch it).
pub fn app_service(template: &ServiceConfig, app: String, endpoint: SocketAddr) -> ServiceConfig {
    let mut service = template.clone();
    service.name = app;
    service.outlier_detection = None;
    service.health_check = None;
    service.versions = vec![VersionConfig {
        name: APP_VERSION.into(),
        endpoints: Some(vec![endpoint]),
    }];
    service
}

/// The inbound rule: every request to the service `app`.
pub fn to_app(app: String) -> RuleConfig {
    RuleConfig::catch_all(BackendRefConfig {
        service: app,
        version: APP_VERSION.into(),
        weight: 1,
        filters: Default::default(),
    })
}
