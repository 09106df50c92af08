//! Reading and writing one HTTPRoute in a cluster: the weights of its
//! rules' `backendRefs` and its annotations (where `serin canary run`
//! keeps its state).
//!
//! Every change is a read-modify-write of the whole object with its
//! `resourceVersion` (a PUT the API server refuses with 409 Conflict when
//! someone changed the route in between); on 409 the route is read again
//! and the change applied again, a few times. The object is handled as
//! JSON, not as the Gateway API types, so fields this version of serin does
//! not know (a newer Gateway API) are written back unchanged.

use std::collections::BTreeMap;
use std::time::Duration;

use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, PostParams};
use serde_json::Value;

/// How often a change is tried when the route keeps changing under it.
const CONFLICT_ATTEMPTS: u32 = 8;
/// The pause after the first conflict; it grows with each attempt.
const CONFLICT_PAUSE: Duration = Duration::from_millis(50);
/// A backendRef with no `weight` has weight 1 (Gateway API).
const DEFAULT_WEIGHT: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    #[error("cannot connect to Kubernetes: {0}")]
    Connect(String),
    #[error("HTTPRoute {route}: {source}")]
    Api {
        route: String,
        #[source]
        source: Box<kube::Error>,
    },
    #[error("HTTPRoute {route}: {message}")]
    Shape { route: String, message: String },
    #[error(
        "HTTPRoute {route} kept changing: no change applied after {CONFLICT_ATTEMPTS} attempts"
    )]
    Conflict { route: String },
}

/// The backendRefs of one rule: Service name → weight, in order.
pub type RuleWeights = BTreeMap<String, u32>;

/// One HTTPRoute, `namespace/name`.
#[derive(Clone)]
pub struct RouteClient {
    api: Api<DynamicObject>,
    namespace: String,
    name: String,
}

impl std::fmt::Debug for RouteClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RouteClient({})", self.describe())
    }
}

fn http_route_resource() -> ApiResource {
    ApiResource::from_gvk(&GroupVersionKind::gvk(
        "gateway.networking.k8s.io",
        "v1",
        "HTTPRoute",
    ))
}

impl RouteClient {
    /// Connects the way kubectl does (the in-cluster service account, else
    /// `KUBECONFIG` or ~/.kube/config); `namespace` none: the config's
    /// namespace (in a pod: its own).
    pub async fn connect(namespace: Option<&str>, name: &str) -> Result<Self, RouteError> {
        let config = kube::Config::infer()
            .await
            .map_err(|e| RouteError::Connect(e.to_string()))?;
        let namespace = namespace.map_or_else(|| config.default_namespace.clone(), str::to_string);
        let client =
            kube::Client::try_from(config).map_err(|e| RouteError::Connect(e.to_string()))?;
        Ok(Self::new(client, &namespace, name))
    }

    pub fn new(client: kube::Client, namespace: &str, name: &str) -> Self {
        Self {
            api: Api::namespaced_with(client, namespace, &http_route_resource()),
            namespace: namespace.to_string(),
            name: name.to_string(),
        }
    }

    /// `namespace/name`.
    /// The namespace of the HTTPRoute.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    pub fn describe(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    fn api_error(&self, source: kube::Error) -> RouteError {
        RouteError::Api {
            route: self.describe(),
            source: Box::new(source),
        }
    }

    fn shape(&self, message: impl Into<String>) -> RouteError {
        RouteError::Shape {
            route: self.describe(),
            message: message.into(),
        }
    }

    async fn get(&self) -> Result<DynamicObject, RouteError> {
        self.api
            .get(&self.name)
            .await
            .map_err(|e| self.api_error(e))
    }

    /// The weights of every rule, by rule index.
    pub async fn rules(&self) -> Result<Vec<RuleWeights>, RouteError> {
        let route = self.get().await?;
        rule_weights(&route.data).map_err(|m| self.shape(m))
    }

    /// The value of annotation `key`, if the route has it.
    pub async fn annotation(&self, key: &str) -> Result<Option<String>, RouteError> {
        let route = self.get().await?;
        Ok(route.metadata.annotations.and_then(|mut a| a.remove(key)))
    }

    /// Sets annotation `key` to `value`.
    pub async fn set_annotation(&self, key: &str, value: &str) -> Result<(), RouteError> {
        self.update(|route| {
            route
                .metadata
                .annotations
                .get_or_insert_with(BTreeMap::new)
                .insert(key.to_string(), value.to_string());
            Ok(())
        })
        .await
        .map(|_| ())
    }

    /// In each rule of `changes` (rule index → Service name → weight), sets
    /// the weights of the backendRefs named; the others keep theirs. One
    /// write for all the rules. Gives every rule's weights afterwards.
    pub async fn set_weights(
        &self,
        changes: &BTreeMap<usize, RuleWeights>,
    ) -> Result<Vec<RuleWeights>, RouteError> {
        let route = self
            .update(|route| {
                let rules = route
                    .data
                    .pointer_mut("/spec/rules")
                    .and_then(Value::as_array_mut)
                    .ok_or("it has no spec.rules")?;
                for (index, weights) in changes {
                    let refs = rules
                        .get_mut(*index)
                        .and_then(|r| r.get_mut("backendRefs"))
                        .and_then(Value::as_array_mut)
                        .ok_or_else(|| format!("it has no rule {index} with backendRefs"))?;
                    for (name, weight) in weights {
                        let backend = refs
                            .iter_mut()
                            .find(|b| b.get("name").and_then(Value::as_str) == Some(name))
                            .ok_or_else(|| {
                                format!("rule {index} has no backendRef named `{name}`")
                            })?;
                        backend["weight"] = Value::from(*weight);
                    }
                }
                Ok(())
            })
            .await?;
        rule_weights(&route.data).map_err(|m| self.shape(m))
    }

    /// Reads the route, lets `change` edit it, and writes it back with the
    /// `resourceVersion` it was read at; again from the start on 409.
    async fn update(
        &self,
        mut change: impl FnMut(&mut DynamicObject) -> Result<(), String>,
    ) -> Result<DynamicObject, RouteError> {
        for attempt in 1..=CONFLICT_ATTEMPTS {
            let mut route = self.get().await?;
            change(&mut route).map_err(|m| self.shape(m))?;
            match self
                .api
                .replace(&self.name, &PostParams::default(), &route)
                .await
            {
                Ok(written) => return Ok(written),
                Err(kube::Error::Api(status)) if status.is_conflict() => {
                    tracing::debug!(route = %self.describe(), attempt, "HTTPRoute changed meanwhile: reading it again");
                    tokio::time::sleep(CONFLICT_PAUSE * attempt).await;
                }
                Err(e) => return Err(self.api_error(e)),
            }
        }
        Err(RouteError::Conflict {
            route: self.describe(),
        })
    }
}

/// `spec.rules[*].backendRefs` as name → weight per rule.
fn rule_weights(data: &Value) -> Result<Vec<RuleWeights>, String> {
    let Some(rules) = data.pointer("/spec/rules") else {
        return Ok(Vec::new());
    };
    let rules = rules.as_array().ok_or("spec.rules is not a list")?;
    rules
        .iter()
        .enumerate()
        .map(|(i, rule)| {
            let Some(refs) = rule.get("backendRefs") else {
                return Ok(RuleWeights::new());
            };
            refs.as_array()
                .ok_or_else(|| format!("rule {i}: backendRefs is not a list"))?
                .iter()
                .map(|b| {
                    let name = b
                        .get("name")
                        .and_then(Value::as_str)
                        .ok_or_else(|| format!("rule {i}: a backendRef has no name"))?;
                    let weight = match b.get("weight") {
                        None | Some(Value::Null) => DEFAULT_WEIGHT,
                        Some(w) => w
                            .as_u64()
                            .and_then(|w| u32::try_from(w).ok())
                            .ok_or_else(|| format!("rule {i}: `{name}` has weight {w}"))?,
                    };
                    Ok((name.to_string(), weight))
                })
                .collect()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn weights_are_read_per_rule_with_the_gateway_api_default() {
        let data = json!({"spec": {"rules": [
            {"backendRefs": [{"name": "qotm-v1", "weight": 90}, {"name": "qotm-v2", "weight": 10}]},
            {"matches": []},
            {"backendRefs": [{"name": "auth-v1"}]},
        ]}});
        let rules = rule_weights(&data).unwrap();
        assert_eq!(rules.len(), 3);
        assert_eq!(rules[0]["qotm-v1"], 90);
        assert_eq!(rules[0]["qotm-v2"], 10);
        assert!(rules[1].is_empty());
        assert_eq!(rules[2]["auth-v1"], 1);
        let bad = json!({"spec": {"rules": [{"backendRefs": [{"name": "a", "weight": -1}]}]}});
        assert!(
            rule_weights(&bad)
                .unwrap_err()
                .contains("`a` has weight -1")
        );
    }
}
