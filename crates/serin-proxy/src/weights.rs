//! Weight changes at run time: `serin weights set ROUTE v1=90 v2=10`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serin_config::proxy::ProxyConfig;

/// A request to change weights of a route.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WeightChange {
    pub route: String,
    /// One rule (by index); none: every rule that has all the named
    /// backends.
    #[serde(default)]
    pub rule: Option<usize>,
    /// Backend → weight. A backend is named `service/version`, or just
    /// `version` when that is unambiguous within the rule.
    pub weights: BTreeMap<String, u32>,
}

#[derive(Debug, thiserror::Error)]
pub enum WeightError {
    #[error("no route named `{0}`")]
    UnknownRoute(String),
    #[error("{0}")]
    Invalid(String),
}

/// The weights of a route's rules now.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RouteWeights {
    pub route: String,
    pub rules: Vec<RuleWeights>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RuleWeights {
    pub index: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// `service/version` → weight
    pub weights: BTreeMap<String, u32>,
}

pub fn route_weights(config: &ProxyConfig, route: &str) -> Result<RouteWeights, WeightError> {
    let r = config
        .routes
        .iter()
        .find(|r| r.name == route)
        .ok_or_else(|| WeightError::UnknownRoute(route.to_string()))?;
    Ok(RouteWeights {
        route: r.name.clone(),
        rules: r
            .rules
            .iter()
            .enumerate()
            .filter(|(_, rule)| !rule.backends.is_empty())
            .map(|(index, rule)| RuleWeights {
                index,
                name: rule.name.clone(),
                weights: rule.backends.iter().map(|b| (b.key(), b.weight)).collect(),
            })
            .collect(),
    })
}

/// Turns a change into full `service/version` weights per rule index, or
/// says what does not fit.
pub fn resolve(
    config: &ProxyConfig,
    change: &WeightChange,
) -> Result<BTreeMap<usize, BTreeMap<String, u32>>, WeightError> {
    let route = config
        .routes
        .iter()
        .find(|r| r.name == change.route)
        .ok_or_else(|| WeightError::UnknownRoute(change.route.clone()))?;
    if change.weights.is_empty() {
        return Err(WeightError::Invalid("no weights given".into()));
    }
    if let Some((k, w)) = change.weights.iter().find(|(_, w)| **w > 1_000_000) {
        return Err(WeightError::Invalid(format!(
            "weight of {k} is {w}: at most 1000000"
        )));
    }
    let mut out = BTreeMap::new();
    let mut reasons = Vec::new();
    for (index, rule) in route.rules.iter().enumerate() {
        if change.rule.is_some_and(|r| r != index) {
            continue;
        }
        let mut resolved = BTreeMap::new();
        let mut fits = true;
        for (name, w) in &change.weights {
            let found: Vec<String> = rule
                .backends
                .iter()
                .filter(|b| {
                    if name.contains('/') {
                        &b.key() == name
                    } else {
                        &b.version == name
                    }
                })
                .map(serin_config::proxy::BackendRefConfig::key)
                .collect();
            match found.as_slice() {
                [one] => {
                    resolved.insert(one.clone(), *w);
                }
                [] => {
                    reasons.push(format!("rule {index} has no backend `{name}`"));
                    fits = false;
                }
                _ => {
                    reasons.push(format!(
                        "rule {index}: `{name}` is ambiguous ({}); name it as service/version",
                        found.join(", ")
                    ));
                    fits = false;
                }
            }
        }
        if !fits {
            continue;
        }
        let total: u64 = rule
            .backends
            .iter()
            .map(|b| u64::from(*resolved.get(&b.key()).unwrap_or(&b.weight)))
            .sum();
        if total == 0 {
            return Err(WeightError::Invalid(format!(
                "rule {index}: the weights would sum to 0"
            )));
        }
        out.insert(index, resolved);
    }
    if out.is_empty() {
        if let Some(r) = change.rule
            && r >= route.rules.len()
        {
            return Err(WeightError::Invalid(format!(
                "route `{}` has {} rule(s); there is no rule {r}",
                route.name,
                route.rules.len()
            )));
        }
        return Err(WeightError::Invalid(reasons.join("; ")));
    }
    Ok(out)
}
