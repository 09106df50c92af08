//! The Gateway API objects that say serin is the gateway: the
//! `GatewayClass` `serin` (its controller name) and the `Gateway`
//! `serin-gateway` with serin's listener.
//!
//! The same [`gateway_spec`] is the rendered Gateway and, at run time, the
//! Gateway a gateway acts on while the cluster has none (so that routes
//! attach the same way before and after the Gateway is applied).

use gateway_api::gatewayclasses::{GatewayClass, GatewayClassSpec};
use gateway_api::gateways::{
    Gateway, GatewayListeners, GatewayListenersAllowedRoutes,
    GatewayListenersAllowedRoutesNamespaces, GatewayListenersAllowedRoutesNamespacesFrom,
    GatewayListenersTls, GatewayListenersTlsCertificateRefs, GatewayListenersTlsMode, GatewaySpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serin_config::proxy::ProxyConfig;

use crate::Object;
use crate::names::{CONTROLLER_NAME, Context, GATEWAY_CLASS_NAME, GATEWAY_NAME, labels};

/// The Gateway's listener port: the gateway Service's, where clients reach
/// it (the pod's own port is behind it).
const LISTENER_PORT: u16 = crate::gateway::SERVICE_PORT;

/// The listener's name when the stack's is no valid Gateway API
/// `SectionName` (lowercase DNS labels).
const FALLBACK_LISTENER_NAME: &str = "http";

/// The TLS Secret of the gateway (see [`crate::gateway`]).
pub fn tls_secret_name() -> String {
    format!("{GATEWAY_NAME}-tls")
}

/// The GatewayClass `serin` and the Gateway `serin-gateway`.
pub(crate) fn objects(ctx: &Context, gw: &ProxyConfig) -> Vec<Object> {
    let class = GatewayClass {
        // Cluster-scoped: no namespace.
        metadata: ObjectMeta {
            name: Some(GATEWAY_CLASS_NAME.into()),
            labels: Some(labels(&[])),
            ..ObjectMeta::default()
        },
        spec: GatewayClassSpec {
            controller_name: CONTROLLER_NAME.into(),
            description: Some("serin: edge API gateway and service mesh".into()),
            parameters_ref: None,
        },
        status: None,
    };
    let gateway = Gateway {
        metadata: ctx.meta(GATEWAY_NAME, labels(&[])),
        spec: gateway_spec(gw),
        status: None,
    };
    vec![
        Object::GatewayClass(Box::new(class)),
        Object::Gateway(Box::new(gateway)),
    ]
}

/// serin's Gateway: class `serin`, one listener per listener of the config
/// (the rendered gateway has one), routes from the Gateway's own namespace
/// only (the Gateway API's default, written out so it is seen).
pub fn gateway_spec(gw: &ProxyConfig) -> GatewaySpec {
    let listeners =
        gw.listeners
            .iter()
            .take(1)
            .map(|l| {
                let tls = l.tls.as_ref().and_then(|t| t.first_certificate()).map(|_| {
                    GatewayListenersTls {
                        mode: Some(GatewayListenersTlsMode::Terminate),
                        certificate_refs: Some(vec![GatewayListenersTlsCertificateRefs {
                            group: None,
                            kind: None,
                            name: tls_secret_name(),
                            namespace: None,
                        }]),
                        ..GatewayListenersTls::default()
                    }
                });
                GatewayListeners {
                    name: section_name(&l.name),
                    port: i32::from(LISTENER_PORT),
                    protocol: if tls.is_some() { "HTTPS" } else { "HTTP" }.into(),
                    hostname: None,
                    tls,
                    allowed_routes: Some(GatewayListenersAllowedRoutes {
                        kinds: None,
                        namespaces: Some(GatewayListenersAllowedRoutesNamespaces {
                            from: Some(GatewayListenersAllowedRoutesNamespacesFrom::Same),
                            selector: None,
                        }),
                    }),
                }
            })
            .collect();
    GatewaySpec {
        gateway_class_name: GATEWAY_CLASS_NAME.into(),
        listeners,
        ..GatewaySpec::default()
    }
}

/// A listener name as a Gateway API `SectionName`: lowercase letters,
/// digits and `-`, alphanumeric at both ends, at most 253 characters.
fn section_name(name: &str) -> String {
    let mapped: String = name
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .take(253)
        .collect();
    let trimmed = mapped.trim_matches('-');
    if trimmed.is_empty() {
        FALLBACK_LISTENER_NAME.into()
    } else {
        trimmed.into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listener_names_become_section_names() {
        assert_eq!(section_name("gw"), "gw");
        assert_eq!(section_name("Public_HTTP"), "public-http");
        assert_eq!(section_name("__"), "http");
    }
}
