//! Where a canary's weights are written.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serin_config::proxy::{MatchConfig, MirrorConfig, PathMatch, StringMatch, ValueMatch};
use serin_proxy::weights::WeightChange;
use serin_proxy::{MirrorChange, Proxy};

use crate::settings::{MatchKind, MatchStep};
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
    #[error("this weight sink cannot route by header or cookie")]
    NoMatching,
    #[error("this weight sink cannot mirror requests")]
    NoMirroring,
    #[error("no route rule sends traffic to both {service}/{baseline} and {service}/{canary}")]
    NoRule {
        service: String,
        baseline: String,
        canary: String,
    },
}

impl SinkError {
    /// No route rule holds both versions of `target`.
    pub fn no_rule(target: &Target) -> Self {
        Self::NoRule {
            service: target.service.clone(),
            baseline: target.baseline.clone(),
            canary: target.canary.clone(),
        }
    }
}

/// Writes weights. Implementations: the running proxy ([`ProxySink`]); a
/// Kubernetes HTTPRoute (`serin canary run --kubernetes`, crates/serin).
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

    /// With `Some(step)`: requests matching `step` go to the canary only,
    /// beside every rule that holds both versions (the rest keep their
    /// weights). With `None`: no longer. Idempotent.
    fn route_matching<'a>(
        &'a self,
        _target: &'a Target,
        _step: Option<&'a MatchStep>,
    ) -> BoxFuture<'a, Result<(), SinkError>> {
        Box::pin(async { Err(SinkError::NoMatching) })
    }

    /// With `Some(percent)`: on every rule that carries the baseline, a
    /// shadow copy of `percent` of the requests goes to the canary (the
    /// mirror step); the weights do not change. With `None`: no longer.
    /// Idempotent.
    fn mirror<'a>(
        &'a self,
        _target: &'a Target,
        _percent: Option<f64>,
    ) -> BoxFuture<'a, Result<(), SinkError>> {
        Box::pin(async { Err(SinkError::NoMirroring) })
    }

    /// Whether both versions have endpoints to send traffic to. A window
    /// waits for it (up to one interval), so replicas still starting after
    /// a restart are not judged as a failing canary.
    fn has_endpoints<'a>(&'a self, _target: &'a Target) -> BoxFuture<'a, bool> {
        Box::pin(async { true })
    }
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

/// Names of the rules a header or cookie step adds start with this (then
/// `SERVICE:RULE`).
pub const MATCH_RULE_PREFIX: &str = "serin-canary:";

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

    fn route_matching<'a>(
        &'a self,
        target: &'a Target,
        step: Option<&'a MatchStep>,
    ) -> BoxFuture<'a, Result<(), SinkError>> {
        Box::pin(async move {
            let prefix = format!("{MATCH_RULE_PREFIX}{}:", target.service);
            let Some(step) = step else {
                let snap = self.proxy.snapshot();
                for route in &snap.config.routes {
                    for rule in &route.rules {
                        if let Some(name) = rule.name.as_deref()
                            && name.starts_with(&prefix)
                        {
                            self.proxy.remove_rule(&route.name, name).map_err(|e| {
                                SinkError::Rejected {
                                    route: route.name.clone(),
                                    message: e.to_string(),
                                }
                            })?;
                        }
                    }
                }
                return Ok(());
            };
            let condition = match step.kind {
                MatchKind::Header => ValueMatch {
                    name: step.name.clone(),
                    value: StringMatch::Exact(step.value.clone()),
                },
                MatchKind::Cookie => {
                    // One cookie among others, in one Cookie header or
                    // several (joined with commas).
                    let pattern = format!(
                        r"(?:^|.*[;,]\s*){}={}(?:\s*[;,].*|$)",
                        regex::escape(&step.name),
                        regex::escape(&step.value)
                    );
                    let regex = regex::Regex::new(&pattern).map_err(|e| SinkError::Rejected {
                        route: String::new(),
                        message: e.to_string(),
                    })?;
                    ValueMatch {
                        name: "cookie".into(),
                        value: StringMatch::RegularExpression(regex),
                    }
                }
            };
            let snap = self.proxy.snapshot();
            let shared = shared_rules(self.carriers_now(&target.service, &target.canary), target);
            if shared.is_empty() {
                return Err(SinkError::no_rule(target));
            }
            for r in shared {
                let Some(original) = snap
                    .config
                    .routes
                    .iter()
                    .find(|x| x.name == r.route)
                    .and_then(|x| x.rules.get(r.rule))
                else {
                    continue;
                };
                let mut rule = original.clone();
                rule.name = Some(format!("{prefix}{}", r.rule));
                if rule.matches.is_empty() {
                    rule.matches.push(MatchConfig {
                        path: PathMatch::PathPrefix(String::new()),
                        headers: Vec::new(),
                        query_params: Vec::new(),
                        method: None,
                    });
                }
                for m in &mut rule.matches {
                    m.headers.push(condition.clone());
                }
                rule.backends
                    .retain(|b| b.service == target.service && b.version == target.canary);
                for b in &mut rule.backends {
                    b.weight = 1;
                }
                self.proxy
                    .add_rule(&r.route, rule)
                    .map_err(|e| SinkError::Rejected {
                        route: r.route.clone(),
                        message: e.to_string(),
                    })?;
            }
            Ok(())
        })
    }

    fn mirror<'a>(
        &'a self,
        target: &'a Target,
        percent: Option<f64>,
    ) -> BoxFuture<'a, Result<(), SinkError>> {
        Box::pin(async move {
            let rules = self.carriers_now(&target.service, &target.baseline);
            if percent.is_some() && rules.is_empty() {
                return Err(SinkError::no_rule(target));
            }
            for r in rules {
                let change = match percent {
                    Some(percent) => MirrorChange::Set(MirrorConfig {
                        service: target.service.clone(),
                        version: target.canary.clone(),
                        percent,
                    }),
                    None => MirrorChange::Remove {
                        service: target.service.clone(),
                        version: target.canary.clone(),
                    },
                };
                self.proxy
                    .set_rule_mirror(&r.route, r.rule, change)
                    .map_err(|e| SinkError::Rejected {
                        route: r.route.clone(),
                        message: e.to_string(),
                    })?;
            }
            Ok(())
        })
    }

    fn has_endpoints<'a>(&'a self, target: &'a Target) -> BoxFuture<'a, bool> {
        Box::pin(async move {
            [&target.baseline, &target.canary].iter().all(|v| {
                !self
                    .proxy
                    .registry()
                    .get(&serin_discovery::BackendKey::new(&target.service, v))
                    .is_empty()
            })
        })
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
                return Err(SinkError::no_rule(target));
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
