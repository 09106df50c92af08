//! What the dashboard shows besides the time series, as it is now: routes
//! and their weights, endpoints and their state, replicas, canaries, and
//! recent changes.

use serde::Serialize;
use serde_json::{Value, json};
use serin_config::proxy::FilterConfig;

use super::Providers;
use crate::Proxy;

/// A replica of the local runtime, as the dashboard shows it.
#[derive(Debug, Clone, Serialize)]
pub struct Replica {
    pub name: String,
    pub service: String,
    pub version: String,
    /// `starting`, `running`, `backoff`, … (the runtime's words).
    pub state: String,
    /// In the registry, taking traffic.
    pub ready: bool,
    pub restarts: u32,
    pub port: u16,
    /// Why it waits or could not start.
    pub message: Option<String>,
}

/// The current state as JSON for the page.
pub fn build(proxy: &Proxy, providers: &Providers) -> Value {
    let snap = proxy.snapshot();
    let routes: Vec<Value> = snap
        .config
        .routes
        .iter()
        .map(|r| {
            // `serin up`'s sidecars name their routes `caller>callee` (an
            // outbound hop) and `inbound:REPLICA` (a replica's sidecar to its
            // own app); every other route is the gateway's.
            let (kind, caller, callee) = match r.name.split_once('>') {
                Some((caller, callee)) => ("sidecar", caller, callee),
                None if r.name.starts_with("inbound:") => ("inbound", "", ""),
                None => ("gateway", "gateway", ""),
            };
            // Services a rule calls besides its backends (not counted per
            // route, so the mesh shows them without a rate).
            let side_calls: Vec<Value> = r
                .rules
                .iter()
                .flat_map(|rule| rule.filters.iter())
                .filter_map(|f| match f {
                    FilterConfig::ExternalAuth(a) => {
                        Some(json!({ "service": a.service, "why": "auth" }))
                    }
                    FilterConfig::RequestMirror(m) => {
                        Some(json!({ "service": m.service, "why": "mirror" }))
                    }
                    _ => None,
                })
                .collect();
            json!({
                "name": r.name,
                "kind": kind,
                "caller": caller,
                "callee": callee,
                "side_calls": side_calls,
                "rules": r.rules.iter().enumerate().map(|(i, rule)| {
                    let total: u64 = rule.backends.iter().map(|b| u64::from(b.weight)).sum();
                    json!({
                        "index": i,
                        "name": rule.name,
                        "backends": rule.backends.iter().map(|b| json!({
                            "service": b.service,
                            "version": b.version,
                            "weight": b.weight,
                            "percent": if total == 0 { 0.0 } else { 100.0 * f64::from(b.weight) / total as f64 },
                        })).collect::<Vec<_>>(),
                    })
                }).collect::<Vec<_>>(),
            })
        })
        .collect();
    let now = crate::outlier::now_ms();
    let endpoints: Vec<Value> = proxy
        .shared()
        .backends()
        .iter()
        .flat_map(|b| {
            b.endpoints()
                .list
                .iter()
                .map(|e| {
                    let state = e.health.state(now);
                    let ejected_ms = match state {
                        crate::outlier::EndpointState::Ejected { for_ms } => for_ms,
                        _ => 0,
                    };
                    json!({
                        "service": &*b.key.service,
                        "version": &*b.key.version,
                        "address": e.addr.to_string(),
                        "name": &*e.name,
                        "state": state.label(),
                        "ejected_for_ms": ejected_ms,
                        "active_requests": e.active(),
                    })
                })
                .collect::<Vec<_>>()
        })
        .collect();
    json!({
        "routes": routes,
        "endpoints": endpoints,
        "replicas": providers.replicas.as_ref().map(|p| p.replicas()),
        "canaries": providers.canary.as_ref().map(|p| p.canaries()),
        "decisions": providers.canary.as_ref().map(|p| p.decisions()).unwrap_or_default(),
        "events": proxy.events(),
        "draining": proxy.shared().is_draining(),
    })
}
