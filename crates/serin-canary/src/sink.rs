//! Where a canary's weights are written.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serin_proxy::Proxy;
use serin_proxy::weights::WeightChange;

use crate::source::{BoxFuture, Target};

/// A route rule that sends traffic to a service, with the weights of the
/// service's versions in it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleRef {
    pub route: String,
    pub rule: usize,
    /// Version → weight, for the service's backends of the rule.
    pub weights: BTreeMap<String, u32>,
}

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("unknown service `{0}`")]
    UnknownService(String),
    #[error("cannot set weights of route `{route}`: {message}")]
    Rejected { route: String, message: String },
    #[error("no route rule sends traffic to both {service}/{baseline} and {service}/{canary}")]
    NoRule {
        service: String,
        baseline: String,
        canary: String,
    },
}

/// Writes weights. Implementations: the running proxy ([`ProxySink`]); a
/// Kubernetes HTTPRoute writer is the planned second.
pub trait WeightSink: Send + Sync {
    /// The versions of `service`, or [`SinkError::UnknownService`].
    fn versions<'a>(&'a self, service: &'a str) -> BoxFuture<'a, Result<Vec<String>, SinkError>>;

    /// Every route rule with a backend `service/version`, with the weights
    /// of all the service's versions in that rule.
    fn carriers<'a>(
        &'a self,
        service: &'a str,
        version: &'a str,
    ) -> BoxFuture<'a, Result<Vec<RuleRef>, SinkError>>;

    /// On every rule whose backends hold both versions: canary
    /// `canary_percent`, baseline `100 - canary_percent`; other backends
    /// keep their weights. Gives the rules as they are afterwards.
    fn set<'a>(
        &'a self,
        target: &'a Target,
        canary_percent: u32,
    ) -> BoxFuture<'a, Result<Vec<RuleRef>, SinkError>>;
}

/// The rules of `rules` that hold both versions of `target`.
pub fn shared_rules(rules: Vec<RuleRef>, target: &Target) -> Vec<RuleRef> {
    rules
        .into_iter()
        .filter(|r| {
            r.weights.contains_key(&target.baseline) && r.weights.contains_key(&target.canary)
        })
        .collect()
}

/// Weights in the running proxy, through [`Proxy::set_weights`]: applied at
/// once with no connection dropped, and kept in the proxy's state file.
pub struct ProxySink {
    proxy: Arc<Proxy>,
}

impl ProxySink {
    pub fn new(proxy: Arc<Proxy>) -> Self {
        Self { proxy }
    }

    fn carriers_now(&self, service: &str, version: &str) -> Vec<RuleRef> {
        let snap = self.proxy.snapshot();
        let mut out = Vec::new();
        for route in &snap.config.routes {
            for (index, rule) in route.rules.iter().enumerate() {
                let weights: BTreeMap<String, u32> = rule
                    .backends
                    .iter()
                    .filter(|b| b.service == service)
                    .map(|b| (b.version.clone(), b.weight))
                    .collect();
                if weights.contains_key(version) {
                    out.push(RuleRef {
                        route: route.name.clone(),
                        rule: index,
                        weights,
                    });
                }
            }
        }
        out
    }
}

impl WeightSink for ProxySink {
    fn versions<'a>(&'a self, service: &'a str) -> BoxFuture<'a, Result<Vec<String>, SinkError>> {
        Box::pin(async move {
            let snap = self.proxy.snapshot();
            snap.config
                .services
                .iter()
                .find(|s| s.name == service)
                .map(|s| s.versions.iter().map(|v| v.name.clone()).collect())
                .ok_or_else(|| SinkError::UnknownService(service.to_string()))
        })
    }

    fn carriers<'a>(
        &'a self,
        service: &'a str,
        version: &'a str,
    ) -> BoxFuture<'a, Result<Vec<RuleRef>, SinkError>> {
        Box::pin(async move { Ok(self.carriers_now(service, version)) })
    }

    fn set<'a>(
        &'a self,
        target: &'a Target,
        canary_percent: u32,
    ) -> BoxFuture<'a, Result<Vec<RuleRef>, SinkError>> {
        Box::pin(async move {
            let percent = canary_percent.min(100);
            let rules = shared_rules(self.carriers_now(&target.service, &target.canary), target);
            if rules.is_empty() {
                return Err(SinkError::NoRule {
                    service: target.service.clone(),
                    baseline: target.baseline.clone(),
                    canary: target.canary.clone(),
                });
            }
            for r in &rules {
                let change = WeightChange {
                    route: r.route.clone(),
                    rule: Some(r.rule),
                    weights: BTreeMap::from([
                        (
                            format!("{}/{}", target.service, target.baseline),
                            100 - percent,
                        ),
                        (format!("{}/{}", target.service, target.canary), percent),
                    ]),
                };
                self.proxy
                    .set_weights(&change)
                    .map_err(|e| SinkError::Rejected {
                        route: r.route.clone(),
                        message: e.to_string(),
                    })?;
            }
            Ok(shared_rules(
                self.carriers_now(&target.service, &target.canary),
                target,
            ))
        })
    }
}
