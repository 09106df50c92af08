//! Weights in the running proxy: a canary's steps become weight changes,
//! extra rules (header or cookie step) and mirrors of serin's own route
//! rules, applied at once with no connection dropped and kept in the
//! proxy's state file.

use std::collections::BTreeMap;
use std::sync::Arc;

use serin_canary::settings::{MatchKind, MatchStep};
use serin_canary::sink::{MATCH_RULE_PREFIX, RuleRef, SinkError, WeightSink, shared_rules};
use serin_canary::source::{BoxFuture, Target};
use serin_config::proxy::{
    MatchConfig, MirrorConfig, PathMatch, RuleConfig, StringMatch, ValueMatch,
};
use serin_discovery::BackendKey;
use serin_proxy::weights::WeightChange;
use serin_proxy::{MirrorChange, Proxy};

/// Weights in the running proxy, through [`Proxy::set_weights`].
pub struct ProxySink {
    proxy: Arc<Proxy>,
}

/// A change of `route` the proxy refused.
fn rejected(route: &str, e: impl std::fmt::Display) -> SinkError {
    SinkError::Rejected {
        route: route.to_string(),
        message: e.to_string(),
    }
}

/// The header condition that a header or cookie step adds to a rule's
/// matches.
fn condition(step: &MatchStep) -> Result<ValueMatch, SinkError> {
    Ok(match step.kind {
        MatchKind::Header => ValueMatch {
            name: step.name.clone(),
            value: StringMatch::Exact(step.value.clone()),
        },
        MatchKind::Cookie => {
            // One cookie among others, in one Cookie header or several
            // (joined with commas).
            let pattern = format!(
                r"(?:^|.*[;,]\s*){}={}(?:\s*[;,].*|$)",
                regex::escape(&step.name),
                regex::escape(&step.value)
            );
            let regex = regex::Regex::new(&pattern).map_err(|e| rejected("", e))?;
            ValueMatch {
                name: "cookie".into(),
                value: StringMatch::RegularExpression(regex),
            }
        }
    })
}

/// `original` with `condition` on every match, sending to the canary
/// only: the rule a header or cookie step adds beside it.
fn matching_rule(
    original: &RuleConfig,
    name: String,
    condition: &ValueMatch,
    target: &Target,
) -> RuleConfig {
    let mut rule = original.clone();
    rule.name = Some(name);
    if rule.matches.is_empty() {
        rule.matches.push(MatchConfig {
            path: PathMatch::PathPrefix(String::new()),
            headers: Vec::new(),
            query_params: Vec::new(),
            method: None,
            client_certificate: Vec::new(),
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
    rule
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

    /// Removes every rule whose name starts with `prefix`.
    fn remove_rules(&self, prefix: &str) -> Result<(), SinkError> {
        let snap = self.proxy.snapshot();
        for route in &snap.config.routes {
            for rule in &route.rules {
                if let Some(name) = rule.name.as_deref()
                    && name.starts_with(prefix)
                {
                    self.proxy
                        .remove_rule(&route.name, name)
                        .map_err(|e| rejected(&route.name, e))?;
                }
            }
        }
        Ok(())
    }

    /// Beside every rule holding both versions, a rule named
    /// `PREFIX RULE` sending requests that match `step` to the canary.
    fn add_matching_rules(
        &self,
        target: &Target,
        step: &MatchStep,
        prefix: &str,
    ) -> Result<(), SinkError> {
        let condition = condition(step)?;
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
            let rule = matching_rule(original, format!("{prefix}{}", r.rule), &condition, target);
            self.proxy
                .add_rule(&r.route, rule)
                .map_err(|e| rejected(&r.route, e))?;
        }
        Ok(())
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
            match step {
                None => self.remove_rules(&prefix),
                Some(step) => self.add_matching_rules(target, step, &prefix),
            }
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
                    .map_err(|e| rejected(&r.route, e))?;
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
                    .get(&BackendKey::new(&target.service, v))
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
                    .map_err(|e| rejected(&r.route, e))?;
            }
            Ok(shared_rules(
                self.carriers_now(&target.service, &target.canary),
                target,
            ))
        })
    }
}
