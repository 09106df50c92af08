//! Where a canary's weights are written.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::settings::MatchStep;
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
    #[error("this weight sink cannot route by header, cookie or host")]
    NoMatching,
    #[error("this weight sink cannot mirror requests")]
    NoMirroring,
    /// A host step on a route whose hostnames leave its host out: requests
    /// for it never reach the route.
    #[error(
        "route `{route}` serves only {hostnames}, so requests for the preview host {host} never \
         reach it: add {host} to its hostnames"
    )]
    HostNotServed {
        route: String,
        hostnames: String,
        host: String,
    },
    /// A host step whose host another route names more closely than the
    /// route carrying the versions: that route's rules come first for it
    /// (Gateway API hostname precedence), so the preview would not be seen.
    #[error(
        "route `{other}` names {host} more closely than route `{route}` does, so its rules serve \
         that host first and the preview would not be seen: give the preview another host, or \
         take {host} out of route `{other}`"
    )]
    HostTaken {
        route: String,
        other: String,
        host: String,
    },
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

/// Writes weights. Implementations live where the binary wires the crates
/// together (crates/serin): the running proxy's route rules (`serin proxy`,
/// `serin up`) and a Kubernetes HTTPRoute (`serin canary run
/// --kubernetes`).
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
/// `SERVICE:RULE`), so a sink can find and remove them.
pub const MATCH_RULE_PREFIX: &str = "serin-canary:";
