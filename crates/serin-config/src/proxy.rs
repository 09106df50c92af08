//! The proxy config file: decoding, validation, weight overrides.

pub mod admin;
mod api_key;
mod basic_auth;
mod compression;
mod cors;
mod hash_file;
mod jwt;
pub use cors::parse_origin;
pub mod model;
pub mod raw;
mod tls;
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
    let mut cfg = validate::validate(raw, base_dir, &mut p);
    cfg.warnings = p.take_warnings();
    p.finish(cfg)
}

/// Routes read by [`parse_routes`], with the warnings about them (such as a
/// backendRef to a service version that does not exist, whose share of its
/// rule answers 500).
#[derive(Debug, Clone)]
pub struct ParsedRoutes {
    pub routes: Vec<RouteConfig>,
    pub warnings: Vec<crate::ConfigError>,
}

/// Decodes and validates routes written as a document of their own (YAML or
/// JSON `{"routes": [...]}`, e.g. HTTPRoutes turned into the file's route
/// format) against `config`'s services and listeners. Problems are reported
/// as from `source`, at paths under `routes`. Unlike a file's, a rule's
/// backendRef to a service version that does not exist is not refused: it
/// is unresolved (Gateway API: BackendNotFound, its share answers 500) and
/// warned about, so one missing Service does not take every route down.
/// Never panics (see [`parse_proxy_config`]).
pub fn parse_routes(
    text: &str,
    source: &str,
    config: &ProxyConfig,
) -> Result<ParsedRoutes, ConfigErrors> {
    read_guarded(source, || decode_routes(text, source, config))
}

fn decode_routes(
    text: &str,
    source: &str,
    config: &ProxyConfig,
) -> Result<ParsedRoutes, ConfigErrors> {
    let mut p = Problems::new(source);
    let Some(doc) = parse_document(text, &mut p) else {
        return Err(p.into_errors());
    };
    let raw = raw::Config::decode(Node::root(&doc), &mut p).unwrap_or_default();
    let routes = validate::routes_only(raw.routes.list(), config, &mut p);
    let warnings = p.take_warnings();
    p.finish(ParsedRoutes { routes, warnings })
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
            warnings: Vec::new(),
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
            parse_routes(ok, "HTTPRoute x", &cfg).map(|r| r.routes.len()),
            Ok(1)
        );
        let bad = r#"{"routes": [{"name": "r", "rules": [{"backendRefs": [{"name": "cart", "version": "v1", "weight": 2000000}]}]}]}"#;
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

    /// Routes from HTTPRoutes name Services written apart from the config:
    /// one that does not exist leaves its share of the rule unresolved
    /// (answered 500) with a warning at its place; a file refuses it.
    #[test]
    fn a_missing_service_in_routes_of_their_own_is_unresolved_not_refused() {
        let cfg = parse_proxy_config(SERVICES, "t.yaml", Path::new("."))
            .unwrap_or_else(|e| panic!("{e}"));
        let text = r#"{"routes": [{"name": "r", "rules": [{"backendRefs": [{"name": "cart", "version": "v1", "weight": 3}, {"name": "cart", "version": "v9"}, {"name": "gone"}]}]}]}"#;
        let parsed = parse_routes(text, "HTTPRoute x", &cfg).unwrap_or_else(|e| panic!("{e}"));
        let rule = &parsed.routes[0].rules[0];
        assert_eq!(rule.backends.len(), 1);
        let unresolved: Vec<(&str, u32, &UnresolvedReason)> = rule
            .unresolved
            .iter()
            .map(|u| (u.name.as_str(), u.weight, &u.reason))
            .collect();
        assert_eq!(
            unresolved,
            [
                ("cart", 1, &UnresolvedReason::BackendNotFound),
                ("gone", 1, &UnresolvedReason::BackendNotFound)
            ]
        );
        let paths: Vec<&str> = parsed.warnings.iter().map(|w| w.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "routes[0].rules[0].backendRefs[1].version",
                "routes[0].rules[0].backendRefs[2].name"
            ]
        );
        assert!(
            parsed.warnings[1].message.contains("answered 500"),
            "{:?}",
            parsed.warnings
        );
        let file = format!(
            "{SERVICES}routes: [{{name: r, rules: [{{backendRefs: [{{name: gone}}]}}]}}]\n"
        );
        assert!(parse_proxy_config(&file, "t.yaml", Path::new(".")).is_err());
    }

    /// Gateway API v1.2's `fraction` beside `percent`: the same share, its
    /// denominator 100 when absent.
    #[test]
    fn a_mirror_share_may_be_a_fraction() {
        let share = |mirror: &str| {
            let text = format!(
                "{SERVICES}routes: [{{name: r, rules: [{{backendRefs: [{{name: cart}}], filters: [{{type: RequestMirror, requestMirror: {{backendRef: {{name: cart}}, {mirror}}}}}]}}]}}]\n"
            );
            let cfg = parse_proxy_config(&text, "t.yaml", Path::new("."))
                .unwrap_or_else(|e| panic!("{e}"));
            match cfg.routes[0].rules[0].filters.first() {
                Some(FilterConfig::RequestMirror(m)) => m.percent,
                other => panic!("{other:?}"),
            }
        };
        let close = |a: f64, b: f64| (a - b).abs() < 1e-9;
        assert!(close(share("percent: 25"), 25.0));
        assert!(close(share("fraction: {numerator: 5}"), 5.0));
        assert!(close(
            share("fraction: {numerator: 1, denominator: 3}"),
            100.0 / 3.0
        ));
        assert!(close(
            share("fraction: {numerator: 0, denominator: 1}"),
            0.0
        ));
        assert!(close(
            share("fraction: {numerator: 7, denominator: 7}"),
            100.0
        ));
    }
}
