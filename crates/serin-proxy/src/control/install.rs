//! Making a validated config the running one: compile its snapshot and swap
//! it in, publish its static endpoints, keep health checks and the trace
//! exporter in step, and hand new listeners to the workers.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Arc;

use serin_config::proxy::{FilterConfig, ListenerConfig, ProxyConfig};
use serin_discovery::{BackendKey, EndpointSpec};

use super::{Control, Proxy};
use crate::server::{ListenerSettings, ListenerSocket, WorkerCommand};
use crate::snapshot::{Snapshot, SnapshotError};
use crate::{health, snapshot, telemetry, tls};

impl Proxy {
    /// Compiles `effective` (the file config with run-time weights applied)
    /// into a snapshot; nothing serves it yet.
    pub(super) fn build(&self, effective: ProxyConfig) -> Result<Snapshot, SnapshotError> {
        snapshot::compile(Arc::new(effective), &self.shared.metrics, |key| {
            self.shared.backend(key, &self.registry)
        })
    }

    /// Serves `snap`.
    pub(super) fn install(&self, control: &mut Control, mut snap: Snapshot) {
        self.publish_static_endpoints(control, &snap.config);
        // Backends the snapshot created take the endpoints just published
        // before any request can see them.
        for b in self.shared.backends() {
            b.set_endpoints(&self.registry.get(&b.key));
        }
        snap.tracer = tracer_for(control, snap.config.tracing.as_ref());
        let referenced = referenced_backends(&snap.config);
        let upstream_tls = &snap.upstream_tls;
        let checks: BTreeMap<BackendKey, HealthCheck> = snap
            .config
            .services
            .iter()
            .filter_map(|s| {
                let check = HealthCheck {
                    config: s.health_check.clone()?,
                    tls: upstream_tls.get(&s.name).cloned(),
                    protocol: s.protocol,
                };
                Some((s, check))
            })
            .flat_map(|(s, hc)| {
                s.versions
                    .iter()
                    .map(move |v| (BackendKey::new(&s.name, &v.name), hc.clone()))
            })
            .filter(|(k, _)| referenced.contains(k))
            .collect();
        self.shared.snapshot.store(Arc::new(snap));
        self.restart_health_checks(control, checks);
        // Backends no route uses any more are forgotten.
        self.shared
            .backends
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|k, _| referenced.contains(k));
        self.generation.send_modify(|g| *g += 1);
    }

    fn publish_static_endpoints(&self, control: &mut Control, config: &ProxyConfig) {
        let mut now = BTreeSet::new();
        for s in &config.services {
            let versions: BTreeMap<String, Vec<EndpointSpec>> = s
                .versions
                .iter()
                .filter_map(|v| {
                    let eps = v.endpoints.as_ref()?;
                    let specs = eps
                        .iter()
                        .map(|a| EndpointSpec {
                            addr: *a,
                            name: a.to_string().into(),
                        })
                        .collect();
                    Some((v.name.clone(), specs))
                })
                .collect();
            if !versions.is_empty() {
                self.registry.set_service(&s.name, versions);
                now.insert(s.name.clone());
            }
        }
        for gone in control.static_services.difference(&now) {
            self.registry.set_service(gone, BTreeMap::new());
        }
        control.static_services = now;
    }

    /// Starts, keeps or stops health-check tasks so that exactly `wanted`
    /// run, each with its settings.
    fn restart_health_checks(
        &self,
        control: &mut Control,
        wanted: BTreeMap<BackendKey, HealthCheck>,
    ) {
        let running = &mut control.health_checks;
        running.retain(|key, (cfg, task)| {
            let keep = wanted.get(key).is_some_and(|w| w.same_as(cfg));
            if !keep {
                task.abort();
            }
            keep
        });
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        for (key, cfg) in wanted {
            if running.contains_key(&key) {
                continue;
            }
            let backend = self.shared.backend(&key, &self.registry);
            let task = rt.spawn(health::run(backend, cfg.clone()));
            running.insert(key, (cfg, task.abort_handle()));
        }
    }

    /// Makes `bound` the listeners: new ones are handed to every worker,
    /// kept ones take their new settings, and the rest stop.
    pub(super) fn activate_listeners(
        &self,
        control: &mut Control,
        bound: Vec<(ListenerConfig, Arc<ListenerSocket>)>,
    ) {
        let workers = self.workers.lock().unwrap_or_else(|e| e.into_inner());
        let keep: BTreeSet<SocketAddr> = bound.iter().map(|(_, s)| s.address).collect();
        control.listeners.retain(|addr, l| {
            let kept = keep.contains(addr);
            if !kept {
                let _ = l.stop.send(true);
            }
            kept
        });
        for (config, sock) in bound {
            let tls = listener_tls(&config, &sock);
            sock.settings
                .store(Arc::new(ListenerSettings::new(config, tls)));
            if let std::collections::btree_map::Entry::Vacant(slot) =
                control.listeners.entry(sock.address)
            {
                for w in workers.iter() {
                    let _ = w.commands.send(WorkerCommand::Listen(sock.clone()));
                }
                slot.insert(sock);
            }
        }
    }

    /// At start, once the workers run: they take the first listeners.
    pub(super) fn listen_on(&self, bound: Vec<(ListenerConfig, Arc<ListenerSocket>)>) {
        let mut control = self.control();
        self.activate_listeners(&mut control, bound);
    }
}

pub(super) use health::HealthCheck;

/// The TLS a listener serves with under `config`: the one it has when the
/// section is the same (its files read again, as a reload promises), else
/// a new one. TLS files were checked before; a failure here means they
/// changed since, and the listener keeps what it had.
fn listener_tls(config: &ListenerConfig, sock: &ListenerSocket) -> Option<Arc<tls::ListenerTls>> {
    let wanted = config.tls.as_ref()?;
    let had = sock.settings.load().tls.clone();
    if let Some(had) = had.as_ref().filter(|t| t.is_for(wanted)) {
        had.refresh();
        return Some(had.clone());
    }
    match tls::ListenerTls::start(&config.name, wanted) {
        Ok(t) => Some(t),
        Err(e) => {
            tracing::error!(listener = %config.name, error = %e, "TLS not reloaded");
            had
        }
    }
}

/// Every backend a route, a mirror or an auth filter of `config` uses.
fn referenced_backends(config: &ProxyConfig) -> BTreeSet<BackendKey> {
    let rules = || config.routes.iter().flat_map(|r| r.rules.iter());
    rules()
        .flat_map(|rule| rule.backends.iter())
        .map(|b| BackendKey::new(&b.service, &b.version))
        .chain(
            rules()
                .flat_map(|rule| rule.filters.iter())
                .filter_map(|f| match f {
                    FilterConfig::ExternalAuth(a) => Some(BackendKey::new(&a.service, &a.version)),
                    FilterConfig::RequestMirror(m) => Some(BackendKey::new(&m.service, &m.version)),
                    _ => None,
                }),
        )
        .collect()
}

/// The tracer for a config's tracing; the exporter is restarted when the
/// tracing settings changed (the old one exports what it holds on its own
/// thread).
fn tracer_for(
    control: &mut Control,
    config: Option<&serin_config::proxy::TracingConfig>,
) -> Option<telemetry::Tracer> {
    let wanted = telemetry::wanted(config);
    let slot = &mut control.exporter;
    if slot.as_ref().map(|e| &e.config) != wanted.as_ref() {
        if let Some(old) = slot.take() {
            std::thread::spawn(move || old.shutdown());
        }
        if let Some(cfg) = &wanted {
            match telemetry::Exporter::start(cfg) {
                Ok(e) => {
                    tracing::info!(
                        endpoint = cfg
                            .traces_url()
                            .as_deref()
                            .unwrap_or("(from OTEL_EXPORTER_OTLP_* variables)"),
                        "exporting traces over OTLP/HTTP"
                    );
                    *slot = Some(e);
                }
                Err(e) => tracing::error!(error = %e, "tracing is off"),
            }
        }
    }
    slot.as_ref().map(telemetry::Exporter::tracer)
}
