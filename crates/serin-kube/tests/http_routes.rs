//! HTTPRoutes read back as serin routes: what the renderer writes for a
//! stack's gateway is, read by `routes: kubernetes`, the same routes (but for
//! the serin-only settings an HTTPRoute has no field for), and what is wrong
//! in an HTTPRoute is reported at its field.

use std::path::Path;

use kube::api::DynamicObject;
use serde_json::{Value, json};
use serin_config::proxy::ProxyConfig;
use serin_kube::http_routes::{attached_to, route_from_http_route};
use serin_kube::{GATEWAY_NAME, Object, RenderOptions};

fn qotm() -> serin_config::stack::StackFile {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/qotm/stack.yaml");
    serin_config::stack::load_stack_file(&path).unwrap_or_else(|e| panic!("{e}"))
}

fn dynamic(value: Value) -> DynamicObject {
    serde_json::from_value(value).unwrap_or_else(|e| panic!("not an object: {e}"))
}

/// A route as JSON without what an HTTPRoute cannot carry.
fn comparable(route: &serin_config::proxy::RouteConfig) -> Value {
    let mut v = serde_json::to_value(route).unwrap_or_else(|e| panic!("{e}"));
    if let Some(rules) = v.get_mut("rules").and_then(Value::as_array_mut) {
        for rule in rules {
            if let Some(rule) = rule.as_object_mut() {
                for key in ["fault", "max_concurrent_requests", "rate_limit"] {
                    rule.remove(key);
                }
            }
        }
    }
    v
}

#[test]
fn rendered_httproutes_read_back_as_the_stack_gateways_routes() {
    let stack = qotm();
    let manifests = serin_kube::render(
        &stack,
        &RenderOptions {
            namespace: Some("shop".into()),
            ..RenderOptions::default()
        },
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let mut seen = 0;
    for object in &manifests.objects {
        let Object::HttpRoute(route) = object else {
            continue;
        };
        let obj = dynamic(serde_json::to_value(route).unwrap_or_else(|e| panic!("{e}")));
        assert!(attached_to(&obj, GATEWAY_NAME));
        let read = route_from_http_route(&obj, &stack.gateway).unwrap_or_else(|e| panic!("{e:?}"));
        assert!(read.warnings.is_empty(), "{:?}", read.warnings);
        let back = read.route;
        let original = stack
            .gateway
            .routes
            .iter()
            .find(|r| r.name == back.name)
            .unwrap_or_else(|| panic!("no route {}", back.name));
        assert_eq!(
            comparable(&back),
            comparable(original),
            "route {}",
            back.name
        );
        seen += 1;
    }
    assert_eq!(seen, stack.gateway.routes.len());
}

fn route(spec: Value) -> DynamicObject {
    dynamic(json!({
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": { "name": "r", "namespace": "shop" },
        "spec": spec,
    }))
}

fn problems(spec: Value, config: &ProxyConfig) -> Vec<String> {
    match route_from_http_route(&route(spec), config) {
        Ok(r) => panic!("accepted: {r:?}"),
        Err(ps) => ps.iter().map(ToString::to_string).collect(),
    }
}

#[test]
fn problems_name_the_httproute_and_its_field() {
    let stack = qotm();
    let cfg = &stack.gateway;
    let p = problems(
        json!({ "rules": [{
            "backendRefs": [{ "name": "qotm-v1" }],
            "filters": [{ "type": "RequestMirror", "requestMirror": { "backendRef": { "name": "nope" } } }],
        }] }),
        cfg,
    );
    assert!(
        p[0].starts_with(
            "HTTPRoute shop/r: spec.rules[0].filters[0].requestMirror.backendRef.name: `nope` is not"
        ),
        "{p:?}"
    );
    let p = problems(
        json!({ "rules": [{
            "backendRefs": [{ "name": "qotm-v1" }],
            "filters": [{ "type": "RequestMirror", "requestMirror": {
                "backendRef": { "name": "qotm-v2" }, "fraction": { "numerator": 3, "denominator": 2 } } }],
        }] }),
        cfg,
    );
    assert!(
        p[0].contains("spec.rules[0].filters[0].requestMirror.fraction.numerator: the numerator must not be above the denominator (2)"),
        "{p:?}"
    );
    let p = problems(
        json!({ "rules": [{
            "matches": [{ "path": { "type": "Bogus", "value": "/" } }],
            "backendRefs": [{ "name": "qotm-v1", "weight": 2_000_000 }],
        }] }),
        cfg,
    );
    assert!(
        p.iter()
            .any(|m| m.contains("spec.rules[0].matches[0].path.type")),
        "{p:?}"
    );
    assert!(
        p.iter()
            .any(|m| m.contains("spec.rules[0].backendRefs[0].weight")),
        "{p:?}"
    );
    let p = problems(
        json!({ "rules": [{ "sessionPersistence": { "sessionName": "a b" }, "backendRefs": [{ "name": "qotm-v1" }] }] }),
        cfg,
    );
    assert!(
        p[0].contains("spec.rules[0].sessionPersistence.sessionName: `a b` is not a cookie name"),
        "{p:?}"
    );
    assert_eq!(
        problems(json!({}), cfg),
        ["HTTPRoute shop/r: spec: a route needs at least one rule"]
    );
}

#[test]
fn only_httproutes_naming_the_gateway_are_attached() {
    let with = |parents: Value| route(json!({ "parentRefs": parents, "rules": [] }));
    assert!(attached_to(
        &with(json!([{ "name": "serin-gateway" }])),
        GATEWAY_NAME
    ));
    assert!(attached_to(
        &with(
            json!([{ "group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "serin-gateway", "namespace": "shop" }])
        ),
        GATEWAY_NAME
    ));
    assert!(!attached_to(
        &with(json!([{ "name": "other" }])),
        GATEWAY_NAME
    ));
    assert!(!attached_to(
        &with(json!([{ "kind": "Service", "group": "", "name": "serin-gateway" }])),
        GATEWAY_NAME
    ));
    assert!(!attached_to(
        &with(json!([{ "name": "serin-gateway", "namespace": "elsewhere" }])),
        GATEWAY_NAME
    ));
    assert!(!attached_to(&route(json!({ "rules": [] })), GATEWAY_NAME));
}

/// Gateway API: a backendRef to a Service that does not exist, or of
/// another kind, is `ResolvedRefs: False`; the route serves, and requests
/// its weights send there get 500. Each is reported at its field.
#[test]
fn unresolved_backend_refs_serve_500_for_their_share_and_are_reported() {
    let stack = qotm();
    let obj = route(json!({ "rules": [
        { "backendRefs": [
            { "name": "qotm-v1", "weight": 3 },
            { "name": "qotm-v9", "port": 8080, "weight": 1 },
            { "name": "bucket", "group": "example.com", "kind": "Bucket", "weight": 2 },
        ] },
        { "matches": [{ "path": { "value": "/ok" } }], "backendRefs": [{ "name": "qotm-v2" }] },
    ] }));
    let read = route_from_http_route(&obj, &stack.gateway).unwrap_or_else(|e| panic!("{e:?}"));
    let rule = &read.route.rules[0];
    assert_eq!(rule.backends.len(), 1);
    assert_eq!(rule.backends[0].weight, 3);
    let unresolved: Vec<(&str, u32, &str)> = rule
        .unresolved
        .iter()
        .map(|u| (u.name.as_str(), u.weight, u.reason.gateway_api_reason()))
        .collect();
    assert_eq!(
        unresolved,
        [
            ("qotm-v9", 1, "BackendNotFound"),
            ("bucket", 2, "InvalidKind")
        ]
    );
    assert!(read.route.rules[1].unresolved.is_empty());
    let reported: Vec<String> = read.warnings.iter().map(ToString::to_string).collect();
    assert_eq!(reported.len(), 2, "{reported:?}");
    assert!(
        reported[0].starts_with("HTTPRoute shop/r: spec.rules[0].backendRefs[1].name: `qotm-v9` is not the per-version Service")
            && reported[0].contains("answered 500 (Gateway API: BackendNotFound)"),
        "{reported:?}"
    );
    assert!(
        reported[1].starts_with("HTTPRoute shop/r: spec.rules[0].backendRefs[2].kind: `Bucket` (group `example.com`) is not a Service"),
        "{reported:?}"
    );
}

/// `requestMirror.fraction` is read as the file reads it: the same share.
#[test]
fn a_mirror_fraction_is_the_files() {
    let stack = qotm();
    let obj = route(json!({ "rules": [{
        "backendRefs": [{ "name": "qotm-v1" }],
        "filters": [{ "type": "RequestMirror", "requestMirror": {
            "backendRef": { "name": "qotm-v2" }, "fraction": { "numerator": 1, "denominator": 8 } } }],
    }] }));
    let read = route_from_http_route(&obj, &stack.gateway).unwrap_or_else(|e| panic!("{e:?}"));
    match read.route.rules[0].filters.first() {
        Some(serin_config::proxy::FilterConfig::RequestMirror(m)) => {
            assert!((m.percent - 12.5).abs() < 1e-9, "{m:?}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_cors_filter_is_read_as_the_files_and_its_problems_are_placed() {
    use serin_config::proxy::{CorsList, FilterConfig};
    let stack = qotm();
    let cors = json!({
        "allowOrigins": ["https://app.example.com", "https://*.example.org"],
        "allowMethods": ["GET", "PUT"],
        "allowHeaders": ["*"],
        "exposeHeaders": ["x-total"],
        "maxAge": 60,
        "allowCredentials": true,
    });
    let obj = route(json!({ "rules": [{
        "backendRefs": [{ "name": "qotm-v1" }],
        "filters": [{ "type": "CORS", "cors": cors }],
    }] }));
    let read = route_from_http_route(&obj, &stack.gateway).unwrap_or_else(|e| panic!("{e:?}"));
    let FilterConfig::Cors(c) = &read.route.rules[0].filters[0] else {
        panic!("not a CORS filter: {:?}", read.route.rules[0].filters);
    };
    let origins: Vec<String> = c.allow_origins.iter().cloned().map(String::from).collect();
    assert_eq!(
        origins,
        ["https://app.example.com:443", "https://*.example.org:443"]
    );
    assert_eq!(
        c.allow_methods,
        CorsList::Only(vec![http::Method::GET, http::Method::PUT])
    );
    assert_eq!(c.allow_headers, CorsList::Any);
    assert_eq!((c.max_age, c.allow_credentials), (60, true));

    let p = problems(
        json!({ "rules": [{
            "backendRefs": [{ "name": "qotm-v1" }],
            "filters": [{ "type": "CORS", "cors": { "allowOrigins": ["app.example.com"] } }],
        }] }),
        &stack.gateway,
    );
    assert!(
        p[0].starts_with("HTTPRoute shop/r: spec.rules[0].filters[0].cors.allowOrigins[0]: `app.example.com`: expected"),
        "{p:?}"
    );
}

#[test]
fn a_backend_refs_header_filters_are_read_and_others_are_placed() {
    let stack = qotm();
    let obj = route(json!({ "rules": [{
        "backendRefs": [{ "name": "qotm-v1", "filters": [
            { "type": "RequestHeaderModifier",
              "requestHeaderModifier": { "set": [{ "name": "x-v", "value": "1" }] } },
        ] }],
    }] }));
    let read = route_from_http_route(&obj, &stack.gateway).unwrap_or_else(|e| panic!("{e:?}"));
    let filters = &read.route.rules[0].backends[0].filters;
    let set = filters.request_headers.as_ref().map(|m| m.set.len());
    assert_eq!(set, Some(1), "{filters:?}");
    assert!(filters.response_headers.is_none());
    let bad = problems(
        json!({ "rules": [{ "backendRefs": [{ "name": "qotm-v1", "filters": [
            { "type": "URLRewrite", "urlRewrite": { "hostname": "x" } },
        ] }] }] }),
        &stack.gateway,
    );
    assert!(
        bad.iter()
            .any(|p| p.contains("spec.rules[0].backendRefs[0].filters[0]")
                && p.contains("may be RequestHeaderModifier or ResponseHeaderModifier")),
        "{bad:?}"
    );
}

#[test]
fn a_rules_session_persistence_is_read_as_the_files() {
    let stack = qotm();
    let obj = route(json!({ "rules": [{
        "backendRefs": [{ "name": "qotm-v1" }],
        "sessionPersistence": {
            "sessionName": "shop", "type": "Cookie", "absoluteTimeout": "1h",
            "idleTimeout": "10m", "cookieConfig": { "lifetimeType": "Permanent" },
        },
    }] }));
    let read = route_from_http_route(&obj, &stack.gateway).unwrap_or_else(|e| panic!("{e:?}"));
    let s = read.route.rules[0]
        .session_persistence
        .as_ref()
        .unwrap_or_else(|| panic!("no sessionPersistence read"));
    assert_eq!(s.name, "shop");
    assert_eq!(s.kind, serin_config::proxy::SessionKind::Cookie);
    assert_eq!(
        s.absolute_timeout,
        Some(std::time::Duration::from_secs(3600))
    );
    assert_eq!(s.idle_timeout, Some(std::time::Duration::from_secs(600)));
    assert!(s.permanent);
    let bad = problems(
        json!({ "rules": [{ "backendRefs": [{ "name": "qotm-v1" }],
            "sessionPersistence": { "cookieConfig": { "lifetimeType": "Permanent" } } }] }),
        &stack.gateway,
    );
    assert!(
        bad.iter().any(
            |p| p.contains("spec.rules[0].sessionPersistence.cookieConfig")
                && p.contains("needs `absoluteTimeout`")
        ),
        "{bad:?}"
    );
}
