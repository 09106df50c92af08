//! The stack's gateway, checked and turned into a proxy config whose
//! services are the stack's services (endpoints come from the runtime).

use std::net::SocketAddr;
use std::path::Path;

use super::model::Stack;
use super::raw::RawStack;
use crate::decode::Spanned;
use crate::error::Problems;
use crate::proxy::{self, ProxyConfig, raw as praw};

/// Where the gateway listens unless the stack says.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
/// The gateway listener's name (routes may name it in `parentRefs`).
pub const LISTENER_NAME: &str = "gateway";

fn address(
    given: Option<&Spanned<String>>,
    default: &str,
    gateway: &praw::Listener,
    check: bool,
    p: &mut Problems,
) -> Spanned<String> {
    match given {
        Some(a) => {
            // The listener's address is checked with the proxy config.
            if check && a.parse::<SocketAddr>().is_err() {
                a.report(
                    p,
                    format!(
                        "bad address `{}`: expected IP:PORT such as 127.0.0.1:8080",
                        **a
                    ),
                );
            }
            a.clone()
        }
        None => Spanned {
            value: default.to_string(),
            span: gateway.span,
            path: gateway.node_path.clone(),
        },
    }
}

pub(super) fn validate(
    raw: &RawStack,
    stack: &Stack,
    base_dir: &Path,
    p: &mut Problems,
) -> ProxyConfig {
    let gw = raw.gateway.clone().unwrap_or_default();
    // Without a `gateway` section, its defaults are the file's: problems
    // with them (an address that cannot be bound) point at its start.
    let gw_span = raw.gateway.as_ref().map_or(raw.span, |g| g.span);
    let anchor = praw::Listener {
        span: gw_span,
        node_path: "gateway".into(),
        ..Default::default()
    };
    let listen = address(gw.listen.as_ref(), DEFAULT_LISTEN, &anchor, false, p);
    let default_admin = proxy::defaults::ADMIN_ADDRESS.to_string();
    let admin = address(gw.admin.as_ref(), &default_admin, &anchor, true, p);
    let admin_addr = admin.parse::<SocketAddr>().ok().map(|a| Spanned {
        value: a,
        span: admin.span,
        path: admin.path.clone(),
    });
    let services = raw
        .services
        .value
        .iter()
        .filter_map(|rs| {
            let spec = stack.services.iter().find(|s| s.name == *rs.name)?;
            Some(praw::Service {
                span: rs.span,
                node_path: rs.node_path.clone(),
                name: rs.name.clone(),
                protocol: rs.protocol,
                tls: None,
                connect_timeout: rs.connect_timeout,
                load_balancer: rs.load_balancer.clone(),
                pool: None,
                circuit_breaker: rs.circuit_breaker.clone(),
                outlier_detection: rs.outlier_detection.clone(),
                health_check: None,
                panic_threshold: None,
                grpc_error_codes: rs.grpc_error_codes.clone(),
                // A version named twice is reported by the stack's checks;
                // the gateway's must not report it again.
                versions: spec
                    .versions
                    .iter()
                    .enumerate()
                    .filter(|(i, v)| !spec.versions[..*i].iter().any(|w| w.name == v.name))
                    .map(|(_, v)| praw::Version {
                        span: rs.span,
                        node_path: rs.node_path.clone(),
                        name: Spanned {
                            value: v.name.clone(),
                            span: rs.name.span,
                            path: rs.name.path.clone(),
                        },
                        endpoints: None,
                    })
                    .collect(),
            })
        })
        .collect();
    // Each sidecar's outbound hop is a route named `caller>callee`, checked
    // with the gateway's and taken out of it again by the caller.
    let mut routes = gw.routes.clone();
    for rs in &raw.services.value {
        let Some(sc) = &rs.sidecar else { continue };
        let mut envs = std::collections::BTreeSet::new();
        for o in &sc.outbound {
            let Some(dep) = stack.services.iter().find(|s| s.name == *o.name) else {
                o.name
                    .report(p, format!("no service named `{}` in this stack", *o.name));
                continue;
            };
            let valid_env = !o.env.is_empty()
                && o.env
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_')
                && !o.env.as_bytes()[0].is_ascii_digit();
            if !valid_env {
                o.env
                    .report(p, "an environment variable name: letters, digits and _");
            } else if super::model::RESERVED_ENV.contains(&o.env.as_str()) {
                o.env.report(p, format!("`{}` is set by serin", *o.env));
            } else if !envs.insert(o.env.value.clone()) {
                o.env
                    .report(p, format!("`{}` is used by another outbound", *o.env));
            }
            let rule = o.rule.clone().unwrap_or_else(|| praw::Rule {
                span: o.span,
                node_path: o.node_path.clone(),
                backend_refs: dep
                    .versions
                    .iter()
                    .map(|v| praw::BackendRef {
                        span: o.name.span,
                        node_path: o.name.path.clone(),
                        name: o.name.clone(),
                        version: Some(Spanned {
                            value: v.name.clone(),
                            span: o.name.span,
                            path: o.name.path.clone(),
                        }),
                        weight: None,
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            });
            routes.push(praw::Route {
                span: o.span,
                node_path: o.node_path.clone(),
                name: Spanned {
                    value: mesh_route_name(&rs.name, &o.name),
                    span: o.name.span,
                    path: o.name.path.clone(),
                },
                parent_refs: Vec::new(),
                hostnames: Vec::new(),
                rules: vec![rule],
            });
        }
    }
    let config = praw::Config {
        span: gw_span,
        node_path: "gateway".into(),
        admin: Some(praw::Admin {
            span: admin.span,
            node_path: admin.path.clone(),
            address: admin_addr,
            token: gw.admin_token.clone(),
            metrics_address: None,
        }),
        access_log: gw.access_log.clone(),
        tracing: raw.tracing.clone(),
        workers: gw.workers.clone(),
        drain_timeout: gw.drain_timeout,
        listeners: vec![praw::Listener {
            span: listen.span,
            node_path: listen.path.clone(),
            name: Spanned {
                value: LISTENER_NAME.to_string(),
                span: listen.span,
                path: listen.path.clone(),
            },
            address: listen,
            tls: gw.tls.clone(),
            limits: gw.limits.clone(),
            path_normalization: gw.path_normalization.clone(),
            compression: gw.compression.clone(),
            client_address: gw.client_address.clone(),
            proxy_protocol: gw.proxy_protocol.clone(),
        }],
        services,
        routes: praw::Routes::List(routes),
        discovery: None,
    };
    let mut config = proxy::validate_raw(config, base_dir, p);
    // Messages name the stack's keys.
    config.admin.token_key = proxy::admin::STACK_TOKEN_KEY;
    if config.admin.token.is_some() {
        config.admin.token_origin = proxy::admin::Origin::File {
            span: gw.span,
            path: proxy::admin::STACK_TOKEN_KEY.into(),
        };
    }
    if gw.admin.is_none() {
        config.admin.address_origin = proxy::admin::Origin::Default;
    }
    config
}

/// The route of a sidecar's outbound hop: `caller>callee`, which also labels
/// its metrics with both.
pub fn mesh_route_name(caller: &str, callee: &str) -> String {
    format!("{caller}>{callee}")
}
