//! Which HTTPRoutes attach to serin's Gateway, and which of their
//! backendRefs resolve: the Gateway API's rules, as pure decisions.
//!
//! A route attaches through each of its `parentRefs` that names the Gateway
//! `serin-gateway` (in the gateway's namespace) when a listener takes it:
//! the ref's `sectionName` and `port` name that listener, the listener's
//! `allowedRoutes` admits the route's namespace (`Same`, `All`, or a
//! `Selector` over the namespace's labels) and kind, and the listener's
//! `hostname` meets one of the route's `hostnames`. Otherwise the ref is
//! not accepted, with the reason the spec names for the first check that
//! failed (`NoMatchingParent`, `NotAllowedByListeners`,
//! `NoMatchingListenerHostname`).
//!
//! A backendRef resolves when it is a Service (InvalidKind otherwise), in
//! the route's own namespace or in one whose `ReferenceGrant` lets
//! HTTPRoutes of the route's namespace refer to it (RefNotPermitted
//! otherwise), and is the per-version Service of a service version of the
//! gateway's config, in the gateway's namespace (BackendNotFound
//! otherwise): those are the Services whose endpoints the gateway follows.
//! The same decisions pick what the gateway serves ([`crate::http_routes`])
//! and what status it writes ([`crate::route_status`]), so the two agree.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use gateway_api::gateways::{
    GatewayListeners, GatewayListenersAllowedRoutesNamespacesFrom as From,
    GatewayListenersAllowedRoutesNamespacesSelector as NamespaceSelector, GatewaySpec,
};
use serde_json::Value;

use crate::names::GATEWAY_NAME;

/// The Gateway API's API group.
pub const GATEWAY_GROUP: &str = "gateway.networking.k8s.io";

/// Why a parentRef is not accepted, or a backendRef not resolved: the
/// Gateway API's reason names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Reason {
    Accepted,
    NotAllowedByListeners,
    NoMatchingListenerHostname,
    NoMatchingParent,
    UnsupportedValue,
    ResolvedRefs,
    RefNotPermitted,
    InvalidKind,
    BackendNotFound,
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// serin's Gateway as the routes see it.
#[derive(Debug, Clone)]
pub struct GatewayView {
    pub namespace: String,
    /// Whether serin controls the Gateway: its `gatewayClassName` is a
    /// GatewayClass with serin's controller (or the cluster has no Gateway
    /// and serin acts on the one it renders). Otherwise no route is serin's.
    pub controlled: bool,
    pub spec: GatewaySpec,
    /// Namespace name → its labels (for `allowedRoutes` by selector).
    pub namespace_labels: BTreeMap<String, BTreeMap<String, String>>,
}

/// Whether serin controls a Gateway of class `class`: a GatewayClass of
/// that name (in `classes`: name → `spec.controllerName`) names serin's
/// controller.
pub fn controls_class(class: &str, classes: &BTreeMap<String, String>) -> bool {
    classes
        .get(class)
        .is_some_and(|c| c == crate::names::CONTROLLER_NAME)
}

/// Whether a listener carries HTTPRoutes: its protocol is HTTP or HTTPS and
/// its `allowedRoutes.kinds`, if given, include HTTPRoute.
pub fn listener_takes_http_routes(listener: &GatewayListeners) -> bool {
    let protocol = matches!(listener.protocol.as_str(), "HTTP" | "HTTPS");
    let kinds = listener
        .allowed_routes
        .as_ref()
        .and_then(|a| a.kinds.as_ref())
        .is_none_or(|kinds| {
            kinds.iter().any(|k| {
                k.kind == "HTTPRoute" && k.group.as_deref().is_none_or(|g| g == GATEWAY_GROUP)
            })
        });
    protocol && kinds
}

/// How one of a route's parentRefs to serin's Gateway fares: the names of
/// the listeners it attached to, or why none.
pub type ParentOutcome = Result<Vec<String>, (Reason, String)>;

impl GatewayView {
    /// Whether `parent` (a parentRef of a route in `route_namespace`) names
    /// serin's Gateway.
    pub fn is_ours(&self, parent: &Value, route_namespace: &str) -> bool {
        let field = |k: &str| parent.get(k).and_then(Value::as_str);
        self.controlled
            && field("name") == Some(GATEWAY_NAME)
            && field("kind").is_none_or(|k| k == "Gateway")
            && field("group").is_none_or(|g| g == GATEWAY_GROUP)
            && field("namespace").unwrap_or(route_namespace) == self.namespace
    }

    /// The listeners `parent` attaches a route of `route_namespace` with
    /// `hostnames` to.
    pub fn attach(
        &self,
        parent: &Value,
        route_namespace: &str,
        hostnames: &[String],
    ) -> ParentOutcome {
        let section = parent.get("sectionName").and_then(Value::as_str);
        let port = parent.get("port").and_then(Value::as_i64);
        let named: Vec<&GatewayListeners> = self
            .spec
            .listeners
            .iter()
            .filter(|l| section.is_none_or(|s| s == l.name))
            .filter(|l| port.is_none_or(|p| p == i64::from(l.port)))
            .collect();
        if named.is_empty() {
            let what = match (section, port) {
                (Some(s), Some(p)) => format!("sectionName `{s}` and port {p}"),
                (Some(s), None) => format!("sectionName `{s}`"),
                (None, Some(p)) => format!("port {p}"),
                (None, None) => "the parentRef".into(),
            };
            let message = format!("{what} match no listener of Gateway {}", self.describe());
            return Err((Reason::NoMatchingParent, message));
        }
        let allowed: Vec<&GatewayListeners> = named
            .into_iter()
            .filter(|l| listener_takes_http_routes(l) && self.admits(l, route_namespace))
            .collect();
        if allowed.is_empty() {
            let message = format!(
                "no listener of Gateway {} allows HTTPRoutes from namespace `{route_namespace}` (allowedRoutes)",
                self.describe()
            );
            return Err((Reason::NotAllowedByListeners, message));
        }
        let matching: Vec<String> = allowed
            .into_iter()
            .filter(|l| hostnames_meet(l.hostname.as_deref(), hostnames))
            .map(|l| l.name.clone())
            .collect();
        if matching.is_empty() {
            let message = format!(
                "no hostname of the route ({}) matches a listener hostname of Gateway {}",
                hostnames.join(", "),
                self.describe()
            );
            return Err((Reason::NoMatchingListenerHostname, message));
        }
        Ok(matching)
    }

    fn describe(&self) -> String {
        format!("{}/{GATEWAY_NAME}", self.namespace)
    }

    /// Whether the listener's `allowedRoutes.namespaces` admits `namespace`
    /// (default: the Gateway's own).
    fn admits(&self, listener: &GatewayListeners, namespace: &str) -> bool {
        let namespaces = listener
            .allowed_routes
            .as_ref()
            .and_then(|a| a.namespaces.as_ref());
        let from = namespaces
            .and_then(|n| n.from.clone())
            .unwrap_or(From::Same);
        match from {
            From::Same => namespace == self.namespace,
            From::All => true,
            From::Selector => namespaces
                .and_then(|n| n.selector.as_ref())
                .zip(self.namespace_labels.get(namespace))
                .is_some_and(|(selector, labels)| selects(selector, labels)),
        }
    }
}

/// A Kubernetes label selector over `labels`: every `matchLabels` pair and
/// every `matchExpressions` term (`In`, `NotIn`, `Exists`, `DoesNotExist`;
/// an unknown operator selects nothing).
fn selects(selector: &NamespaceSelector, labels: &BTreeMap<String, String>) -> bool {
    let pairs = selector
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    let terms = selector.match_expressions.iter().flatten().all(|e| {
        let values = e.values.as_deref().unwrap_or_default();
        let value = labels.get(&e.key);
        match e.operator.as_str() {
            "In" => value.is_some_and(|v| values.contains(v)),
            "NotIn" => value.is_none_or(|v| !values.contains(v)),
            "Exists" => value.is_some(),
            "DoesNotExist" => value.is_none(),
            _ => false,
        }
    });
    pairs && terms
}

/// Whether a listener with `listener` hostname (none: any) takes a route
/// with `hostnames` (none: any): one pair is equal, or a wildcard
/// (`*.example.com`, one or more labels) covers the other.
pub fn hostnames_meet(listener: Option<&str>, hostnames: &[String]) -> bool {
    let Some(listener) = listener else {
        return true;
    };
    hostnames.is_empty()
        || hostnames
            .iter()
            .any(|h| covers(listener, h) || covers(h, listener))
}

/// Whether `pattern` (maybe `*.suffix`) covers `host`.
fn covers(pattern: &str, host: &str) -> bool {
    let (pattern, host) = (pattern.to_ascii_lowercase(), host.to_ascii_lowercase());
    match pattern.strip_prefix('*') {
        Some(suffix) => {
            host.len() > suffix.len() && host.ends_with(&suffix) && !host.starts_with('*')
                || host.strip_prefix('*').is_some_and(|h| h.ends_with(&suffix))
        }
        None => pattern == host,
    }
}

/// One `ReferenceGrant`'s permission, as far as serin uses it: HTTPRoutes
/// of `from_namespace` may refer to Services (`service`: only that one) in
/// `namespace`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub namespace: String,
    pub from_namespace: String,
    pub service: Option<String>,
}

/// The grants of one `ReferenceGrant` (as JSON) in `namespace`: the pairs
/// of its `from` entries for HTTPRoutes and `to` entries for Services.
pub fn grants_of(namespace: &str, spec: &Value) -> Vec<Grant> {
    let list = |k: &str| {
        spec.get(k)
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
    };
    let text = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
    let from: Vec<String> = list("from")
        .iter()
        .filter(|f| text(f, "group").as_deref() == Some(GATEWAY_GROUP))
        .filter(|f| text(f, "kind").as_deref() == Some("HTTPRoute"))
        .filter_map(|f| text(f, "namespace"))
        .collect();
    let to: Vec<Option<String>> = list("to")
        .iter()
        .filter(|t| text(t, "group").unwrap_or_default().is_empty())
        .filter(|t| text(t, "kind").as_deref() == Some("Service"))
        .map(|t| text(t, "name"))
        .collect();
    from.iter()
        .flat_map(|f| {
            to.iter().map(|t| Grant {
                namespace: namespace.to_string(),
                from_namespace: f.clone(),
                service: t.clone(),
            })
        })
        .collect()
}

/// Where backendRefs may point and what they can resolve to.
#[derive(Debug, Clone, Default)]
pub struct References {
    /// The gateway's namespace: where the per-version Services are.
    pub gateway_namespace: String,
    pub grants: Vec<Grant>,
}

impl References {
    /// No grants: only references within a namespace are permitted.
    pub fn within(gateway_namespace: &str) -> Self {
        Self {
            gateway_namespace: gateway_namespace.to_string(),
            grants: Vec::new(),
        }
    }

    /// Whether a route in `from` may refer to Service `name` in `to`.
    pub fn permits(&self, from: &str, to: &str, name: &str) -> bool {
        from == to
            || self.grants.iter().any(|g| {
                g.namespace == to
                    && g.from_namespace == from
                    && g.service.as_deref().is_none_or(|s| s == name)
            })
    }

    /// How a backendRef of a route in `route_namespace` resolves, given the
    /// per-version Service names of the config (`services`).
    pub fn resolve(
        &self,
        route_namespace: &str,
        backend: &Value,
        services: &BTreeSet<String>,
    ) -> Resolution {
        let text = |k: &str| backend.get(k).and_then(Value::as_str);
        let name = text("name").unwrap_or_default();
        let namespace = text("namespace").unwrap_or(route_namespace);
        let service =
            text("kind").is_none_or(|k| k == "Service") && text("group").is_none_or(str::is_empty);
        if !service {
            return Resolution::Unresolved(
                Reason::InvalidKind,
                format!(
                    "{}/{} `{name}` is not a Service",
                    text("group").unwrap_or_default(),
                    text("kind").unwrap_or_default()
                ),
            );
        }
        if !self.permits(route_namespace, namespace, name) {
            return Resolution::Unresolved(
                Reason::RefNotPermitted,
                format!(
                    "no ReferenceGrant in namespace `{namespace}` lets HTTPRoutes of namespace `{route_namespace}` refer to Service `{name}`"
                ),
            );
        }
        if namespace != self.gateway_namespace || !services.contains(name) {
            return Resolution::Unresolved(
                Reason::BackendNotFound,
                format!(
                    "Service {namespace}/{name} is not the per-version Service of a service version of the gateway's config (namespace `{}`)",
                    self.gateway_namespace
                ),
            );
        }
        Resolution::Resolved
    }
}

/// How one backendRef resolves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolution {
    Resolved,
    Unresolved(Reason, String),
}

/// The `ResolvedRefs` outcome of a route: the reason of its first
/// unresolved rule backendRef, with every such ref in the message.
pub fn resolved_refs(
    refs: &References,
    route_namespace: &str,
    spec: &Value,
    services: &BTreeSet<String>,
) -> Result<(), (Reason, String)> {
    let mut unresolved = Vec::new();
    let rules = spec
        .get("rules")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    for (i, rule) in rules.iter().enumerate() {
        let backends = rule
            .get("backendRefs")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        for (j, backend) in backends.iter().enumerate() {
            if let Resolution::Unresolved(reason, message) =
                refs.resolve(route_namespace, backend, services)
            {
                unresolved.push((
                    reason,
                    format!("spec.rules[{i}].backendRefs[{j}]: {message}"),
                ));
            }
        }
    }
    let Some(first) = unresolved.first().map(|(r, _)| *r) else {
        return Ok(());
    };
    let messages: Vec<String> = unresolved.into_iter().map(|(_, m)| m).collect();
    Err((first, messages.join("; ")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use gateway_api::gateways::{
        GatewayListenersAllowedRoutes, GatewayListenersAllowedRoutesKinds,
        GatewayListenersAllowedRoutesNamespaces,
        GatewayListenersAllowedRoutesNamespacesSelectorMatchExpressions as Expression,
    };
    use serde_json::json;

    fn listener(name: &str, port: i32, hostname: Option<&str>, from: From) -> GatewayListeners {
        GatewayListeners {
            name: name.into(),
            port,
            protocol: "HTTP".into(),
            hostname: hostname.map(str::to_string),
            tls: None,
            allowed_routes: Some(GatewayListenersAllowedRoutes {
                kinds: None,
                namespaces: Some(GatewayListenersAllowedRoutesNamespaces {
                    from: Some(from),
                    selector: Some(NamespaceSelector {
                        match_labels: Some(BTreeMap::from([("team".into(), "a".into())])),
                        match_expressions: Some(vec![Expression {
                            key: "frozen".into(),
                            operator: "DoesNotExist".into(),
                            values: None,
                        }]),
                    }),
                }),
            }),
        }
    }

    fn gateway(listeners: Vec<GatewayListeners>) -> GatewayView {
        let labels = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
                .collect()
        };
        GatewayView {
            namespace: "shop".into(),
            controlled: true,
            spec: GatewaySpec {
                gateway_class_name: "serin".into(),
                listeners,
                ..GatewaySpec::default()
            },
            namespace_labels: BTreeMap::from([
                ("shop".to_string(), labels(&[])),
                ("team-a".to_string(), labels(&[("team", "a")])),
                (
                    "team-a-frozen".to_string(),
                    labels(&[("team", "a"), ("frozen", "yes")]),
                ),
                ("team-b".to_string(), labels(&[("team", "b")])),
            ]),
        }
    }

    /// What, the Gateway, the parentRef, the route's namespace and
    /// hostnames, and the listeners it attaches to or why not.
    type Case<'a> = (
        &'a str,
        &'a GatewayView,
        Value,
        &'a str,
        &'a [&'a str],
        Result<Vec<&'a str>, Reason>,
    );

    #[test]
    fn parent_refs_attach_as_the_listeners_allow() {
        let same = gateway(vec![listener("http", 80, None, From::Same)]);
        let selected = gateway(vec![listener("http", 80, None, From::Selector)]);
        let hosts = gateway(vec![
            listener("shop", 80, Some("shop.example.com"), From::All),
            listener("wild", 80, Some("*.example.org"), From::All),
            listener("other", 8443, None, From::All),
        ]);
        let parent = json!({ "name": "serin-gateway" });
        let none: &[&str] = &[];
        let cases: Vec<Case> = vec![
            (
                "same namespace",
                &same,
                parent.clone(),
                "shop",
                none,
                Ok(vec!["http"]),
            ),
            (
                "other namespace, Same",
                &same,
                parent.clone(),
                "team-a",
                none,
                Err(Reason::NotAllowedByListeners),
            ),
            (
                "selected namespace",
                &selected,
                parent.clone(),
                "team-a",
                none,
                Ok(vec!["http"]),
            ),
            (
                "selector's expression refuses",
                &selected,
                parent.clone(),
                "team-a-frozen",
                none,
                Err(Reason::NotAllowedByListeners),
            ),
            (
                "unselected namespace",
                &selected,
                parent.clone(),
                "team-b",
                none,
                Err(Reason::NotAllowedByListeners),
            ),
            (
                "unknown namespace",
                &selected,
                parent.clone(),
                "nowhere",
                none,
                Err(Reason::NotAllowedByListeners),
            ),
            (
                "sectionName",
                &same,
                json!({ "name": "serin-gateway", "sectionName": "http" }),
                "shop",
                none,
                Ok(vec!["http"]),
            ),
            (
                "no such sectionName",
                &same,
                json!({ "name": "serin-gateway", "sectionName": "https" }),
                "shop",
                none,
                Err(Reason::NoMatchingParent),
            ),
            (
                "no such port",
                &same,
                json!({ "name": "serin-gateway", "port": 8080 }),
                "shop",
                none,
                Err(Reason::NoMatchingParent),
            ),
            (
                "no hostnames: every listener",
                &hosts,
                parent.clone(),
                "team-b",
                none,
                Ok(vec!["shop", "wild", "other"]),
            ),
            (
                "exact hostname",
                &hosts,
                parent.clone(),
                "shop",
                &["shop.example.com"],
                Ok(vec!["shop", "other"]),
            ),
            (
                "hostname under a wildcard",
                &hosts,
                parent.clone(),
                "shop",
                &["a.b.example.org"],
                Ok(vec!["wild", "other"]),
            ),
            (
                "wildcard route hostname",
                &hosts,
                parent.clone(),
                "shop",
                &["*.example.com"],
                Ok(vec!["shop", "other"]),
            ),
            (
                "port picks the listener",
                &hosts,
                json!({ "name": "serin-gateway", "port": 80 }),
                "shop",
                &["x.example.net"],
                Err(Reason::NoMatchingListenerHostname),
            ),
            (
                "wildcard is not its own apex",
                &hosts,
                json!({ "name": "serin-gateway", "sectionName": "wild" }),
                "shop",
                &["example.org"],
                Err(Reason::NoMatchingListenerHostname),
            ),
        ];
        for (what, gw, parent, namespace, hostnames, want) in cases {
            let hostnames: Vec<String> = hostnames.iter().map(|h| (*h).to_string()).collect();
            let got = gw
                .attach(&parent, namespace, &hostnames)
                .map_err(|(reason, _)| reason);
            let want = want.map(|l| l.iter().map(|s| (*s).to_string()).collect::<Vec<_>>());
            assert_eq!(got, want, "{what}");
        }
    }

    #[test]
    fn serin_controls_gateways_of_its_classes_only() {
        let classes = BTreeMap::from([
            (
                "serin".to_string(),
                "serin.dev/gateway-controller".to_string(),
            ),
            (
                "envoy".to_string(),
                "gateway.envoyproxy.io/gatewayclass-controller".to_string(),
            ),
        ]);
        assert!(controls_class("serin", &classes));
        assert!(!controls_class("envoy", &classes));
        assert!(!controls_class("missing", &classes));
    }

    #[test]
    fn listeners_of_other_protocols_or_kinds_take_no_http_routes() {
        let mut tcp = listener("tcp", 9000, None, From::All);
        tcp.protocol = "TCP".into();
        let mut grpc_only = listener("grpc", 80, None, From::All);
        if let Some(a) = grpc_only.allowed_routes.as_mut() {
            a.kinds = Some(vec![GatewayListenersAllowedRoutesKinds {
                group: None,
                kind: "GRPCRoute".into(),
            }]);
        }
        let gw = gateway(vec![tcp, grpc_only]);
        let outcome = gw.attach(&json!({ "name": "serin-gateway" }), "shop", &[]);
        assert_eq!(
            outcome.map_err(|(r, _)| r),
            Err(Reason::NotAllowedByListeners)
        );
    }

    #[test]
    fn only_refs_to_serins_gateway_in_its_namespace_are_ours() {
        let gw = gateway(vec![]);
        let cases = [
            (json!({ "name": "serin-gateway" }), "shop", true),
            (json!({ "name": "serin-gateway" }), "team-a", false),
            (
                json!({ "name": "serin-gateway", "namespace": "shop" }),
                "team-a",
                true,
            ),
            (
                json!({ "name": "serin-gateway", "kind": "Service" }),
                "shop",
                false,
            ),
            (
                json!({ "name": "serin-gateway", "group": "example.com" }),
                "shop",
                false,
            ),
            (json!({ "name": "other" }), "shop", false),
        ];
        for (parent, namespace, want) in cases {
            assert_eq!(
                gw.is_ours(&parent, namespace),
                want,
                "{parent} from {namespace}"
            );
        }
    }

    #[test]
    fn backend_refs_resolve_within_the_namespace_or_by_grant() {
        let grant = json!({
            "from": [
                { "group": "gateway.networking.k8s.io", "kind": "HTTPRoute", "namespace": "team-a" },
                { "group": "gateway.networking.k8s.io", "kind": "GRPCRoute", "namespace": "team-b" },
            ],
            "to": [{ "group": "", "kind": "Service", "name": "cart-v1" }],
        });
        let refs = References {
            gateway_namespace: "shop".into(),
            grants: grants_of("shop", &grant),
        };
        let services: BTreeSet<String> = ["cart-v1".to_string(), "cart-v2".to_string()].into();
        let cases = [
            ("same namespace", "shop", json!({ "name": "cart-v1" }), None),
            (
                "granted",
                "team-a",
                json!({ "name": "cart-v1", "namespace": "shop" }),
                None,
            ),
            (
                "not that Service",
                "team-a",
                json!({ "name": "cart-v2", "namespace": "shop" }),
                Some(Reason::RefNotPermitted),
            ),
            (
                "grant for another kind",
                "team-b",
                json!({ "name": "cart-v1", "namespace": "shop" }),
                Some(Reason::RefNotPermitted),
            ),
            (
                "route's own namespace, no such version",
                "team-a",
                json!({ "name": "cart-v1" }),
                Some(Reason::BackendNotFound),
            ),
            (
                "unknown Service",
                "shop",
                json!({ "name": "cart-v9" }),
                Some(Reason::BackendNotFound),
            ),
            (
                "not a Service",
                "shop",
                json!({ "name": "cart-v1", "group": "example.com", "kind": "Bucket" }),
                Some(Reason::InvalidKind),
            ),
        ];
        for (what, namespace, backend, want) in cases {
            let got = match refs.resolve(namespace, &backend, &services) {
                Resolution::Resolved => None,
                Resolution::Unresolved(reason, _) => Some(reason),
            };
            assert_eq!(got, want, "{what}");
        }
        let spec = json!({ "rules": [
            { "backendRefs": [{ "name": "cart-v1" }] },
            { "backendRefs": [{ "name": "cart-v1", "namespace": "elsewhere" }, { "name": "cart-v9" }] },
        ]});
        let (reason, message) = resolved_refs(&refs, "shop", &spec, &services).unwrap_err();
        assert_eq!(reason, Reason::RefNotPermitted);
        assert!(
            message.contains("spec.rules[1].backendRefs[0]"),
            "{message}"
        );
        assert!(
            message.contains("spec.rules[1].backendRefs[1]"),
            "{message}"
        );
    }
}
