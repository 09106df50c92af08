//! Canaries that start themselves (`auto: true` in a service's `canary:`
//! section), as Flagger's: a change of a version's processes (command,
//! args, env, files, probes…) is a new **revision**. The running revision
//! stays the baseline (`v1`) with all the traffic; the new one runs beside
//! it as the version `v1-canary` and is judged by a canary from its first
//! step. On promotion `v1` takes the new revision (a rolling update while
//! `v1-canary` serves), gets the traffic back and `v1-canary` is retired;
//! on rollback `v1-canary` is stopped and `v1` keeps the old revision until
//! the file changes again.
//!
//! This module holds the pure decisions: what an apply means for one
//! version ([`classify`]), and the stack and gateway the runtime and the
//! proxy run while revisions are held ([`effective_stack`],
//! [`effective_gateway`], [`effective_routes`] for the sidecars' routes). Running them is the binary's (`serin up`).

use serde::{Deserialize, Serialize};
use serin_config::proxy::{BackendRefConfig, ProxyConfig, RouteConfig, VersionConfig};
use serin_config::stack::{CANARY_VERSION_SUFFIX, Stack, VersionSpec};

/// Where a held revision is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub enum Stage {
    /// Its canary runs: the baseline keeps the old revision.
    Judging,
    /// Its canary was promoted: the baseline is rolled to it while the
    /// canary version serves, then the canary version is retired.
    Promoting,
    /// Its canary was rolled back: it is stopped, the baseline keeps the
    /// old revision, and the same revision is not tried again.
    RolledBack,
}

/// What an apply means for one version of an `auto: true` service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Revision {
    /// The same processes as the baseline (a replica count may differ):
    /// no canary, the apply goes on as usual.
    Unchanged,
    /// A new revision, no canary of it yet: one starts.
    Start,
    /// The revision already held: nothing changes.
    Same,
    /// A newer revision while one is judged: that canary is aborted and the
    /// analysis starts again, at the first step, for the newest (Flagger's
    /// behaviour).
    Restart,
    /// Back to the baseline's processes while a canary judges another
    /// revision: the canary is aborted and its revision retired.
    Reverted,
    /// A change while a promotion finishes: refused, nothing changes (apply
    /// again once it is done).
    Busy,
}

/// Decides what `incoming` (the version in the applied file) is, given the
/// running baseline and the revision held for the version, if any.
pub fn classify(
    baseline: &VersionSpec,
    incoming: &VersionSpec,
    held: Option<(Stage, &VersionSpec)>,
) -> Revision {
    let is_baseline = incoming.same_template(baseline);
    let Some((stage, candidate)) = held else {
        return if is_baseline {
            Revision::Unchanged
        } else {
            Revision::Start
        };
    };
    if incoming.same_template(candidate) {
        return Revision::Same;
    }
    match stage {
        Stage::Promoting => Revision::Busy,
        Stage::Judging if is_baseline => Revision::Reverted,
        Stage::Judging => Revision::Restart,
        Stage::RolledBack if is_baseline => Revision::Unchanged,
        Stage::RolledBack => Revision::Start,
    }
}

/// The backend version a new revision of `version` runs as.
pub fn canary_version(version: &str) -> String {
    format!("{version}{CANARY_VERSION_SUFFIX}")
}

/// One version whose new revision is held beside (or instead of) the file's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held {
    pub service: String,
    pub version: String,
    pub stage: Stage,
    /// The revision that keeps serving as `version` until a promotion.
    pub baseline: VersionSpec,
    /// The new revision.
    pub candidate: VersionSpec,
}

/// `spec` named `name`, with the file's replica count.
fn as_version(spec: &VersionSpec, name: String, replicas: u32) -> VersionSpec {
    VersionSpec {
        name,
        replicas,
        ..spec.clone()
    }
}

/// The stack the runtime runs for the file's `incoming`: each held
/// version keeps its baseline (`Judging`, `RolledBack`) or takes its
/// candidate (`Promoting`), and while judged or promoted its candidate also
/// runs as the canary version. Replica counts are the file's.
pub fn effective_stack(incoming: &Stack, held: &[Held]) -> Stack {
    let mut out = incoming.clone();
    for h in held {
        let Some(svc) = out.services.iter_mut().find(|s| s.name == h.service) else {
            continue;
        };
        let Some(i) = svc.versions.iter().position(|v| v.name == h.version) else {
            continue;
        };
        let replicas = svc.versions[i].replicas;
        let serving = match h.stage {
            Stage::Judging | Stage::RolledBack => &h.baseline,
            Stage::Promoting => &h.candidate,
        };
        svc.versions[i] = as_version(serving, h.version.clone(), replicas);
        if h.stage != Stage::RolledBack {
            let canary = as_version(&h.candidate, canary_version(&h.version), replicas);
            svc.versions.push(canary);
        }
    }
    out
}

/// The gateway for the file's `gateway`: while a held revision is judged
/// or promoted, its canary version is a version of the service, and every
/// route rule that sends to the baseline also holds the canary version at
/// weight 0 (the canary controller moves the weights from there).
pub fn effective_gateway(gateway: &mut ProxyConfig, held: &[Held]) {
    for h in held.iter().filter(|h| h.stage != Stage::RolledBack) {
        let canary = canary_version(&h.version);
        if let Some(svc) = gateway.services.iter_mut().find(|s| s.name == h.service)
            && let Some(base) = svc.versions.iter().find(|v| v.name == h.version)
            && !svc.versions.iter().any(|v| v.name == canary)
        {
            let version = VersionConfig {
                name: canary.clone(),
                endpoints: base.endpoints.clone(),
            };
            svc.versions.push(version);
        }
    }
    effective_routes(&mut gateway.routes, held);
}

/// Every rule of `routes` that sends to a held baseline also holds its
/// canary version, at weight 0, while the revision is judged or promoted.
/// The gateway's routes and the sidecars' `caller>callee` routes both go
/// through here, so a canary moves the traffic between services as it
/// moves the gateway's (its controller sets the weights of every rule that
/// holds both versions).
pub fn effective_routes(routes: &mut [RouteConfig], held: &[Held]) {
    for h in held.iter().filter(|h| h.stage != Stage::RolledBack) {
        let canary = canary_version(&h.version);
        for rule in routes.iter_mut().flat_map(|r| r.rules.iter_mut()) {
            let Some(base) = rule
                .backends
                .iter()
                .find(|b| b.service == h.service && b.version == h.version)
            else {
                continue;
            };
            if rule
                .backends
                .iter()
                .any(|b| b.service == h.service && b.version == canary)
            {
                continue;
            }
            let added = BackendRefConfig {
                version: canary.clone(),
                weight: 0,
                ..base.clone()
            };
            rule.backends.push(added);
        }
    }
}

#[cfg(test)]
mod tests;
