//! Sidecars for `serin up`: for every replica of a service with `sidecar:`,
//! an inbound listener in front of the app (where the registry sends the
//! service's traffic) and an outbound listener per dependency (whose URL the
//! app finds in an environment variable). They are listeners of this same
//! proxy, so every hop has the gateway's routing, resilience and metrics;
//! an outbound hop's route is `caller>callee`, labelling its metrics with
//! both. The listeners follow the replicas as they come and go.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use serin_config::ConfigErrors;
use serin_config::proxy::{ProxyConfig, RouteConfig};
use serin_config::stack::sidecar;
use serin_proxy::Proxy;
use serin_runtime::{ReplicaStatus, RuntimeHandle};

/// The gateway's config and the sidecars' routes, from the stack file.
struct Source {
    gateway: ProxyConfig,
    mesh: Vec<RouteConfig>,
}

pub struct Mesh {
    proxy: Arc<Proxy>,
    runtime: RuntimeHandle,
    source: Mutex<Source>,
    /// What the running config was built from, to skip needless reloads.
    last: Mutex<Option<String>>,
}

impl Mesh {
    pub fn new(
        proxy: Arc<Proxy>,
        runtime: RuntimeHandle,
        gateway: ProxyConfig,
        mesh: Vec<RouteConfig>,
    ) -> Arc<Self> {
        Arc::new(Self {
            proxy,
            runtime,
            source: Mutex::new(Source { gateway, mesh }),
            last: Mutex::new(None),
        })
    }

    /// Takes a new stack file's gateway and sidecar routes and applies them
    /// with the replicas' listeners; on problems nothing changes.
    pub fn set_source(
        &self,
        gateway: ProxyConfig,
        mesh: Vec<RouteConfig>,
    ) -> Result<(), ConfigErrors> {
        let previous = {
            let mut s = self.source.lock().unwrap_or_else(|e| e.into_inner());
            std::mem::replace(&mut *s, Source { gateway, mesh })
        };
        match self.rebuild(true) {
            Ok(()) => Ok(()),
            Err(e) => {
                *self.source.lock().unwrap_or_else(|e| e.into_inner()) = previous;
                Err(e)
            }
        }
    }

    /// Rebuilds the proxy config from the stack and the replicas now.
    fn rebuild(&self, force: bool) -> Result<(), ConfigErrors> {
        let replicas = self.runtime.ps();
        let signature = signature(&replicas);
        {
            let last = self.last.lock().unwrap_or_else(|e| e.into_inner());
            if !force && last.as_deref() == Some(signature.as_str()) {
                return Ok(());
            }
        }
        let config = {
            let s = self.source.lock().unwrap_or_else(|e| e.into_inner());
            build(&s.gateway, &s.mesh, &replicas)
        };
        self.proxy
            .apply_config(config)
            .map_err(|e| e.into_config_errors("the stack's gateway and sidecars"))?;
        *self.last.lock().unwrap_or_else(|e| e.into_inner()) = Some(signature);
        Ok(())
    }

    /// Follows the runtime's events for the life of `serin up`.
    pub async fn run(self: Arc<Self>) {
        let mut events = self.runtime.events();
        loop {
            let me = self.clone();
            match tokio::task::spawn_blocking(move || me.rebuild(false)).await {
                Ok(Err(e)) => tracing::error!("sidecar listeners not updated:\n{e}"),
                Err(e) => tracing::error!(error = %e, "sidecar update failed"),
                Ok(Ok(())) => {}
            }
            match events.recv().await {
                Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            }
        }
    }
}

/// The replicas' sidecar ports and app ports: when it changes, the config does.
fn signature(replicas: &[ReplicaStatus]) -> String {
    replicas
        .iter()
        .filter_map(|r| {
            let sc = r.sidecar.as_ref()?;
            Some(format!(
                "{}:{}:{}:{:?};",
                r.name, r.port, sc.inbound, sc.outbound
            ))
        })
        .collect()
}

fn local(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// The gateway's config plus, per replica with a sidecar, its inbound
/// listener (to its own app, as service `app:REPLICA`) and its outbound
/// listeners (to which each `caller>callee` route attaches).
fn build(gateway: &ProxyConfig, mesh: &[RouteConfig], replicas: &[ReplicaStatus]) -> ProxyConfig {
    let mut cfg = gateway.clone();
    // The gateway's routes stay on the gateway's listeners: attached to a
    // sidecar's, a catch-all route would send its traffic around in a loop.
    let gateway_listeners: Vec<String> = gateway.listeners.iter().map(|l| l.name.clone()).collect();
    for r in cfg.routes.iter_mut().filter(|r| r.listeners.is_empty()) {
        r.listeners = gateway_listeners.clone();
    }
    for r in replicas {
        let Some(sc) = &r.sidecar else { continue };
        if r.port == 0 || sc.inbound == 0 {
            continue;
        }
        let Some(template) = gateway.services.iter().find(|s| s.name == r.service) else {
            continue;
        };
        let inbound = format!("in:{}", r.name);
        let app = format!("app:{}", r.name);
        cfg.listeners
            .push(sidecar::listener(inbound.clone(), local(sc.inbound)));
        cfg.services
            .push(sidecar::app_service(template, app.clone(), local(r.port)));
        cfg.routes.push(RouteConfig {
            name: format!("inbound:{}", r.name),
            listeners: vec![inbound],
            hostnames: Vec::new(),
            rules: vec![sidecar::to_app(app)],
        });
        for (dep, port) in &sc.outbound {
            let name = format!("out:{}:{dep}", r.name);
            cfg.listeners.push(sidecar::listener(name, local(*port)));
        }
    }
    for route in mesh {
        let Some((caller, callee)) = route.name.split_once('>') else {
            continue;
        };
        let listeners: Vec<String> = replicas
            .iter()
            .filter(|r| r.service == caller && r.port != 0)
            .filter(|r| {
                r.sidecar
                    .as_ref()
                    .is_some_and(|s| s.outbound.contains_key(callee))
            })
            .map(|r| format!("out:{}:{callee}", r.name))
            .collect();
        // A route with no listener would attach to every listener.
        if listeners.is_empty() {
            continue;
        }
        let mut route = route.clone();
        route.listeners = listeners;
        cfg.routes.push(route);
    }
    cfg
}
