//! The proxy config file: decoding, validation, weight overrides.

pub mod admin;
pub mod model;
pub mod raw;
mod validate;

use std::path::Path;

pub use model::*;
pub use validate::default_workers;

use crate::decode::{Decode, Node, parse_document};
use crate::error::{ConfigErrors, Problems};
use crate::guard::read_guarded;

/// Reads and validates a proxy config file. Every problem is reported at
/// once; nothing in the file can make it panic (see [`parse_proxy_config`]).
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
/// paths (TLS files). Never panics: a bug met on the way is reported as a
/// problem of the file.
pub fn parse_proxy_config(
    text: &str,
    file_name: &str,
    base_dir: &Path,
) -> Result<ProxyConfig, ConfigErrors> {
    read_guarded(file_name, || decode_proxy_config(text, file_name, base_dir))
}

fn decode_proxy_config(
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
/// as from `source`, at paths under `routes`. Never panics (see
/// [`parse_proxy_config`]).
pub fn parse_routes(
    text: &str,
    source: &str,
    config: &ProxyConfig,
) -> Result<Vec<RouteConfig>, ConfigErrors> {
    read_guarded(source, || decode_routes(text, source, config))
}

fn decode_routes(
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
            admin: AdminConfig::default(),
            access_log: None,
            tracing: None,
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
    pub fn apply_weights(
        &mut self,
        overrides: &raw::WeightOverrides,
    ) -> Result<(), WeightOverrideError> {
        let mut next = self.routes.clone();
        for (route_name, rules) in overrides {
            let route = next
                .iter_mut()
                .find(|r| &r.name == route_name)
                .ok_or_else(|| WeightOverrideError::NoRoute(route_name.clone()))?;
            for (idx, weights) in rules {
                let rule =
                    route
                        .rules
                        .get_mut(*idx)
                        .ok_or_else(|| WeightOverrideError::NoRule {
                            route: route_name.clone(),
                            rule: *idx,
                        })?;
                for (key, w) in weights {
                    let b = rule
                        .backends
                        .iter_mut()
                        .find(|b| &b.key() == key)
                        .ok_or_else(|| WeightOverrideError::NoBackend {
                            route: route_name.clone(),
                            rule: *idx,
                            backend: key.clone(),
                        })?;
                    b.weight = *w;
                }
                if rule.backends.iter().all(|b| b.weight == 0) {
                    return Err(WeightOverrideError::AllZero {
                        route: route_name.clone(),
                        rule: *idx,
                    });
                }
            }
        }
        self.routes = next;
        Ok(())
    }
}

/// Why weight overrides do not fit a config.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WeightOverrideError {
    #[error("no route named `{0}`")]
    NoRoute(String),
    #[error("route `{route}` has no rule {rule}")]
    NoRule { route: String, rule: usize },
    #[error("rule {rule} of route `{route}` has no backend `{backend}`")]
    NoBackend {
        route: String,
        rule: usize,
        backend: String,
    },
    #[error("rule {rule} of route `{route}`: weights would sum to 0")]
    AllZero { route: String, rule: usize },
}

#[cfg(test)]
mod kubernetes_sources {
    use super::*;

    const SERVICES: &str = "services:\n  - name: cart\n    versions:\n      - name: v1\n";

    #[test]
    fn discovery_and_routes_may_come_from_kubernetes() {
        let text = format!("discovery: kubernetes\n{SERVICES}routes: kubernetes\n");
        let cfg =
            parse_proxy_config(&text, "t.yaml", Path::new(".")).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(cfg.discovery, Some(Discovery::Kubernetes));
        assert!(cfg.routes_from_kubernetes);
        assert!(cfg.routes.is_empty());

        let text = format!(
            "{SERVICES}routes:\n  - name: r\n    rules:\n      - backendRefs: [{{name: cart, version: v1}}]\n"
        );
        let cfg =
            parse_proxy_config(&text, "t.yaml", Path::new(".")).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(cfg.discovery, None);
        assert!(!cfg.routes_from_kubernetes);
        assert_eq!(cfg.routes.len(), 1);
    }

    #[test]
    fn other_sources_are_errors_at_their_place() {
        let text = format!("discovery: consul\n{SERVICES}routes: kube\n");
        let errors = parse_proxy_config(&text, "t.yaml", Path::new("."))
            .err()
            .unwrap_or_else(|| panic!("accepted"))
            .to_string();
        assert!(
            errors.contains("t.yaml:1:12: discovery: unknown value `consul`"),
            "{errors}"
        );
        assert!(
            errors.contains("t.yaml:6:9: routes: expected a list of routes or `kubernetes`"),
            "{errors}"
        );
    }

    #[test]
    fn routes_of_their_own_are_checked_against_the_services() {
        let cfg = parse_proxy_config(SERVICES, "t.yaml", Path::new("."))
            .unwrap_or_else(|e| panic!("{e}"));
        let ok = r#"{"routes": [{"name": "r", "rules": [{"backendRefs": [{"name": "cart", "version": "v1"}]}]}]}"#;
        assert_eq!(
            parse_routes(ok, "HTTPRoute x", &cfg).map(|r| r.len()),
            Ok(1)
        );
        let bad = r#"{"routes": [{"name": "r", "rules": [{"backendRefs": [{"name": "cart", "version": "v9"}]}]}]}"#;
        let errors = parse_routes(bad, "HTTPRoute x", &cfg)
            .err()
            .unwrap_or_else(|| panic!("accepted"));
        assert_eq!(errors.len(), 1);
        assert!(
            errors
                .iter()
                .all(|e| e.path.starts_with("routes[0].rules[0].backendRefs[0]")),
            "{errors}"
        );
    }
}
