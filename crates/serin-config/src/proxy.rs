//! The proxy config file: decoding, validation, weight overrides.

pub mod model;
pub mod raw;
mod validate;

use std::path::Path;

pub use model::*;
pub use validate::default_workers;

use crate::decode::{Decode, Node, parse_document};
use crate::error::{ConfigErrors, Problems};

/// Reads and validates a proxy config file. Every problem is reported at
/// once.
pub fn load_proxy_config(path: &Path) -> Result<ProxyConfig, ConfigErrors> {
    let name = path.display().to_string();
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => {
            let mut p = Problems::new(name);
            p.report(
                crate::Span::new(1, 1),
                "",
                format!("cannot read the file: {e}"),
            );
            return Err(p.into_errors());
        }
    };
    let base = path.parent().unwrap_or(Path::new("."));
    let mut cfg = parse_proxy_config(&text, &name, base)?;
    cfg.source = Some(path.to_path_buf());
    Ok(cfg)
}

/// Parses and validates proxy config text; `base_dir` resolves relative
/// paths (TLS files).
pub fn parse_proxy_config(
    text: &str,
    file_name: &str,
    base_dir: &Path,
) -> Result<ProxyConfig, ConfigErrors> {
    let mut p = Problems::new(file_name);
    let Some(doc) = parse_document(text, &mut p) else {
        return Err(p.into_errors());
    };
    let raw = raw::Config::decode(Node::root(&doc), &mut p).unwrap_or_default();
    let cfg = validate::validate(raw, base_dir, &mut p);
    p.finish(cfg)
}

/// Decodes and validates routes written as a document of their own (YAML or
/// JSON `{"routes": [...]}`, e.g. HTTPRoutes turned into the file's route
/// format) against `config`'s services and listeners. Problems are reported
/// as from `source`, at paths under `routes`.
pub fn parse_routes(
    text: &str,
    source: &str,
    config: &ProxyConfig,
) -> Result<Vec<RouteConfig>, ConfigErrors> {
    let mut p = Problems::new(source);
    let Some(doc) = parse_document(text, &mut p) else {
        return Err(p.into_errors());
    };
    let raw = raw::Config::decode(Node::root(&doc), &mut p).unwrap_or_default();
    let routes = validate::routes_only(raw.routes.list(), config, &mut p);
    p.finish(routes)
}

/// Decodes and validates the parts of a proxy config that another file (the
/// stack file's `gateway`) embeds, reporting into the caller's problems.
pub fn validate_raw(raw: raw::Config, base_dir: &Path, problems: &mut Problems) -> ProxyConfig {
    validate::validate(raw, base_dir, problems)
}

impl ProxyConfig {
    /// A config with defaults for everything but its parts.
    pub fn minimal(
        listeners: Vec<ListenerConfig>,
        services: Vec<ServiceConfig>,
        routes: Vec<RouteConfig>,
    ) -> Self {
        ProxyConfig {
            source: None,
            admin: AdminConfig {
                address: std::net::SocketAddr::from(([127, 0, 0, 1], 9901)),
                token: None,
                span: Default::default(),
            },
            access_log: None,
            workers: default_workers(),
            drain_timeout: defaults::DRAIN_TIMEOUT,
            listeners,
            services,
            routes,
            discovery: None,
            routes_from_kubernetes: false,
        }
    }

    /// Applies weight overrides (from the admin API or the state file).
    /// Unknown routes, rules or backends are errors and change nothing.
    pub fn apply_weights(&mut self, overrides: &raw::WeightOverrides) -> Result<(), String> {
        let mut next = self.routes.clone();
        for (route_name, rules) in overrides {
            let route = next
                .iter_mut()
                .find(|r| &r.name == route_name)
                .ok_or_else(|| format!("no route named `{route_name}`"))?;
            for (idx, weights) in rules {
                let rule = route
                    .rules
                    .get_mut(*idx)
                    .ok_or_else(|| format!("route `{route_name}` has no rule {idx}"))?;
                for (key, w) in weights {
                    let b = rule
                        .backends
                        .iter_mut()
                        .find(|b| &b.key() == key)
                        .ok_or_else(|| {
                            format!("rule {idx} of route `{route_name}` has no backend `{key}`")
                        })?;
                    b.weight = *w;
                }
                if rule.backends.iter().all(|b| b.weight == 0) {
                    return Err(format!(
                        "rule {idx} of route `{route_name}`: weights would sum to 0"
                    ));
                }
            }
        }
        self.routes = next;
        Ok(())
    }
}
