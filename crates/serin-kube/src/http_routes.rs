//! HTTPRoute objects as serin routes: the other direction of [`crate::route`].
//!
//! An HTTPRoute is read as JSON, not as the typed Gateway API struct, so
//! that one malformed object is an error about that object (and names its
//! field) instead of a failed list. Its spec is rewritten into the proxy
//! file's route format — the same words, except that `backendRefs` name a
//! per-version Service (`qotm-v1`, port 8080) where serin names a service
//! and a version — and validated by the proxy config's own validator
//! against the running config's services, so a route from an HTTPRoute is
//! checked exactly as one from the file.
//!
//! Only HTTPRoutes whose `parentRefs` name the Gateway `serin-gateway` (the
//! renderer's) are serin's; [`crate::follow`] watches them and hands every
//! change to the proxy. A rule's backendRef to a Service that is
//! no version of the config, or to another kind than Service, does not make
//! the HTTPRoute bad: that rule answers 500 for the backend's share, as the
//! Gateway API says, and it is logged with its field.

use std::collections::BTreeMap;

use kube::ResourceExt;
use kube::api::{ApiResource, DynamicObject};
use serde_json::{Map, Value, json};
use serin_config::ConfigErrors;
use serin_config::proxy::{ProxyConfig, RouteConfig};

use crate::attachment::References;
use crate::names::version_object_name;

const GATEWAY_GROUP: &str = "gateway.networking.k8s.io";

/// One thing wrong with an HTTPRoute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteProblem {
    /// `namespace/name`
    pub object: String,
    /// The field, as in the object: `spec.rules[0].backendRefs[1].name`.
    pub field: String,
    pub message: String,
}

impl std::fmt::Display for RouteProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "HTTPRoute {}: {}: {}",
            self.object, self.field, self.message
        )
    }
}

/// The Gateway API's HTTPRoute resource (`gateway.networking.k8s.io/v1`).
pub fn http_route_resource() -> ApiResource {
    ApiResource::erase::<gateway_api::experimental::httproutes::HttpRoute>(&())
}

fn object_name(obj: &DynamicObject) -> String {
    format!("{}/{}", obj.namespace().unwrap_or_default(), obj.name_any())
}

/// Whether one of the HTTPRoute's `parentRefs` is the Gateway `gateway` (in
/// the route's namespace).
pub fn attached_to(obj: &DynamicObject, gateway: &str) -> bool {
    let Some(parents) = obj
        .data
        .pointer("/spec/parentRefs")
        .and_then(Value::as_array)
    else {
        return false;
    };
    let namespace = obj.namespace();
    parents.iter().any(|p| {
        let field = |k: &str| p.get(k).and_then(Value::as_str);
        field("name") == Some(gateway)
            && field("kind").is_none_or(|k| k == "Gateway")
            && field("group").is_none_or(|g| g == GATEWAY_GROUP)
            && field("namespace").is_none_or(|n| Some(n) == namespace.as_deref())
    })
}

/// The serin route of one HTTPRoute and what is reported about it.
#[derive(Debug, Clone)]
pub struct ReadRoute {
    pub route: RouteConfig,
    /// What serves but is reported: a rule's backendRef to a Service that is
    /// no service version of the config, or that is not a Service (the
    /// Gateway API's `ResolvedRefs: False`, reasons BackendNotFound and
    /// InvalidKind): its share of the rule's requests is answered 500.
    pub warnings: Vec<RouteProblem>,
}

/// What [`route_from_http_route`] finds while it rewrites an HTTPRoute.
struct Findings {
    /// Refused: the HTTPRoute is not served.
    problems: Vec<RouteProblem>,
    /// Served, with that backend's share answering 500.
    unresolved: Vec<RouteProblem>,
}

/// The serin route of one HTTPRoute, validated against `config`'s services.
/// A rule's backendRef to a Service that is no version of the config is
/// served as unresolved (500 for its share) and reported; elsewhere (a
/// mirror, an auth service) it refuses the HTTPRoute.
pub fn route_from_http_route(
    obj: &DynamicObject,
    config: &ProxyConfig,
) -> Result<ReadRoute, Vec<RouteProblem>> {
    let namespace = obj.namespace().unwrap_or_default();
    route_from_http_route_with(obj, config, &References::within(&namespace))
}

/// [`route_from_http_route`] where `refs` say which backendRefs into other
/// namespaces are permitted (ReferenceGrants) and in which namespace the
/// config's per-version Services are: a rule's backendRef that is not
/// permitted is served as unresolved (500 for its share, RefNotPermitted).
pub fn route_from_http_route_with(
    obj: &DynamicObject,
    config: &ProxyConfig,
    refs: &References,
) -> Result<ReadRoute, Vec<RouteProblem>> {
    let object = object_name(obj);
    let problem = |field: String, message: String| RouteProblem {
        object: object.clone(),
        field,
        message,
    };
    let Some(spec) = obj.data.get("spec").and_then(Value::as_object) else {
        return Err(vec![problem("spec".into(), "missing".into())]);
    };
    let mut found = Findings {
        problems: Vec::new(),
        unresolved: Vec::new(),
    };
    let rewrite = Rewrite {
        backends: per_version_services(config),
        namespace: obj.namespace().unwrap_or_default(),
        refs,
        problem: &problem,
    };
    let rules = spec
        .get("rules")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .enumerate()
        .map(|(i, rule)| rewrite.rule(rule, &format!("spec.rules[{i}]"), &mut found))
        .collect::<Vec<_>>();
    if !found.problems.is_empty() {
        return Err(found.problems);
    }
    let mut route = json!({ "name": obj.name_any(), "rules": rules });
    if let Some(h) = spec.get("hostnames") {
        route["hostnames"] = h.clone();
    }
    let text = json!({ "routes": [route] }).to_string();
    let mut parsed = serin_config::proxy::parse_routes(&text, &object, config)
        .map_err(|errors| problems_of(&object, &errors))?;
    let route = parsed
        .routes
        .pop()
        .ok_or_else(|| vec![problem("spec".into(), "gave no route".into())])?;
    // The validator's own words for what this rewrite already reported.
    let mut warnings = problems_of(&object, &ConfigErrors(parsed.warnings));
    // (Each unresolved problem is at a field of its backendRef.)
    warnings.retain(|w| {
        !found.unresolved.iter().any(|u| {
            let backend = u
                .field
                .rsplit_once('.')
                .map_or(u.field.as_str(), |(b, _)| b);
            w.field == backend || w.field.starts_with(&format!("{backend}."))
        })
    });
    warnings.extend(found.unresolved);
    warnings.sort_by(|a, b| a.field.cmp(&b.field));
    Ok(ReadRoute { route, warnings })
}

/// The per-version Service names of the config's service versions.
pub fn per_version_service_names(config: &ProxyConfig) -> std::collections::BTreeSet<String> {
    per_version_services(config).into_keys().collect()
}

/// Per-version Service name → (service, version).
fn per_version_services(config: &ProxyConfig) -> BTreeMap<String, (&str, &str)> {
    config
        .services
        .iter()
        .flat_map(|s| {
            s.versions.iter().map(move |v| {
                (
                    version_object_name(&s.name, &v.name),
                    (s.name.as_str(), v.name.as_str()),
                )
            })
        })
        .collect()
}

/// Rewrites an HTTPRoute's rules into the proxy file's route format.
struct Rewrite<'a, P> {
    backends: BTreeMap<String, (&'a str, &'a str)>,
    /// The route's namespace.
    namespace: String,
    refs: &'a References,
    problem: &'a P,
}

impl<P: Fn(String, String) -> RouteProblem> Rewrite<'_, P> {
    fn rule(&self, rule: &Value, field: &str, found: &mut Findings) -> Value {
        let Some(rule) = rule.as_object() else {
            return rule.clone();
        };
        let mut out: Map<String, Value> = rule.clone();
        if let Some(refs) = rule.get("backendRefs").and_then(Value::as_array) {
            let refs = refs
                .iter()
                .enumerate()
                .map(|(j, r)| {
                    self.backend_ref(r, &format!("{field}.backendRefs[{j}]"), true, found)
                })
                .collect();
            out.insert("backendRefs".into(), Value::Array(refs));
        }
        if let Some(filters) = rule.get("filters").and_then(Value::as_array) {
            let mut converted = Vec::new();
            for (j, f) in filters.iter().enumerate() {
                let mut f = f.clone();
                let field = format!("{field}.filters[{j}]");
                for key in ["requestMirror", "externalAuth"] {
                    if let Some(r) = f.pointer(&format!("/{key}/backendRef")).cloned() {
                        let at = format!("{field}.{key}.backendRef");
                        f[key]["backendRef"] = self.backend_ref(&r, &at, false, found);
                    }
                }
                converted.push(f);
            }
            out.insert("filters".into(), Value::Array(converted));
        }
        Value::Object(out)
    }

    /// One backendRef as the file writes it. `group` and `kind` go through
    /// as they are: the validator serves a rule's non-Service ref as
    /// unresolved (InvalidKind) and refuses one elsewhere.
    fn backend_ref(&self, r: &Value, field: &str, in_rule: bool, found: &mut Findings) -> Value {
        let text = |k: &str| r.get(k).and_then(Value::as_str);
        let problem = |f: String, m: &str| (self.problem)(f, m.to_string());
        let target = text("namespace").unwrap_or(&self.namespace);
        if r.get("filters").is_some() && !in_rule {
            let m = "a filter's backendRef takes no filters of its own";
            found.problems.push(problem(format!("{field}.filters"), m));
        }
        let name = text("name").unwrap_or("");
        let mut out = json!({ "name": name });
        // A rule backendRef's filters are the proxy file's words; the
        // validator checks them as it checks the file's.
        let keys: &[&str] = if in_rule {
            &["group", "kind", "weight", "filters"]
        } else {
            &["group", "kind", "weight"]
        };
        for &key in keys {
            if let Some(v) = r.get(key) {
                out[key] = v.clone();
            }
        }
        let service =
            text("kind").is_none_or(|k| k == "Service") && text("group").is_none_or(str::is_empty);
        if !service {
            return out;
        }
        if !self.refs.permits(&self.namespace, target, name) {
            let message = format!(
                "no ReferenceGrant in namespace `{target}` lets HTTPRoutes of namespace `{}` refer to Service `{name}`",
                self.namespace
            );
            if in_rule {
                out["version"] = json!("");
                let message = format!(
                    "{message}: this backend's share of the rule's requests is answered 500 (Gateway API: RefNotPermitted)"
                );
                found
                    .unresolved
                    .push(problem(format!("{field}.namespace"), &message));
            } else {
                found
                    .problems
                    .push(problem(format!("{field}.namespace"), &message));
            }
            return out;
        }
        let here = target == self.refs.gateway_namespace;
        if let Some((service, version)) = self.backends.get(name).filter(|_| here) {
            out["name"] = json!(service);
            out["version"] = json!(version);
            return out;
        }
        let known: Vec<&str> = self.backends.keys().map(String::as_str).collect();
        let message = format!(
            "`{name}` is not the per-version Service of a service version in the config (known: {}, in namespace `{}`)",
            known.join(", "),
            self.refs.gateway_namespace
        );
        if in_rule {
            // A version no service has: the validator leaves it unresolved.
            out["version"] = json!("");
            let message = format!(
                "{message}: this backend's share of the rule's requests is answered 500 (Gateway API: BackendNotFound)"
            );
            found
                .unresolved
                .push(problem(format!("{field}.name"), &message));
        } else {
            found
                .problems
                .push(problem(format!("{field}.name"), &message));
        }
        out
    }
}

/// The validator's problems, at the HTTPRoute's field paths: the document
/// it read was `{"routes": [route]}`.
fn problems_of(object: &str, errors: &ConfigErrors) -> Vec<RouteProblem> {
    errors
        .iter()
        .map(|e| {
            let rest = e.path.strip_prefix("routes[0]").unwrap_or(&e.path);
            let field = if rest.starts_with(".name") {
                "metadata.name".to_string()
            } else {
                format!("spec{rest}")
            };
            RouteProblem {
                object: object.to_string(),
                field,
                message: e.message.clone(),
            }
        })
        .collect()
}
