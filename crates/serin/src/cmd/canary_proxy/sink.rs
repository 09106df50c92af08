//! Weights in the running proxy: a canary's steps become weight changes,
//! extra rules (header, cookie or host step) and mirrors of serin's own
//! route rules, applied at once with no connection dropped and kept in the
//! proxy's state file.
//!
//! A host step (a blue/green preview host) is a rule beside each carrying
//! rule, in the same route, on the request's Host, rather than a route of
//! its own for the host: such a route would come before every route
//! without hostnames for that host (Gateway API hostname precedence) and
//! shadow their more specific rules, where a rule beside the carrying one
//! changes nothing for any other request.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use serin_canary::settings::{HOST_STEP_NAME, MatchKind, MatchStep};
use serin_canary::sink::{MATCH_RULE_PREFIX, RuleRef, SinkError, WeightSink, shared_rules};
use serin_canary::source::{BoxFuture, Target};
use serin_config::proxy::{
    MatchConfig, MirrorConfig, PathMatch, RouteConfig, RuleConfig, StringMatch, ValueMatch,
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

/// The header condition that a header, cookie or host step adds to a
/// rule's matches.
fn condition(step: &MatchStep) -> Result<ValueMatch, SinkError> {
    Ok(match step.kind {
        MatchKind::Host => {
            // As the route table reads a host: without its port, in any
            // case. The downstream phase gave an HTTP/2 request a Host from
            // its `:authority`, so one condition serves both.
            let pattern = format!(r"(?i)^{}(?::[0-9]*)?$", regex::escape(&step.value));
            let regex = regex::Regex::new(&pattern).map_err(|e| rejected("", e))?;
            ValueMatch {
                name: HOST_STEP_NAME.into(),
                value: StringMatch::RegularExpression(regex),
            }
        }
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

/// Whether the rules a host step adds beside the rules of `carrying`
/// routes will be seen by requests for `host`: each carrying route serves
/// the host, and no other route on a listener it shares names the host
/// more closely (its rules would all come first).
fn check_preview_host(
    routes: &[RouteConfig],
    carrying: &BTreeSet<&str>,
    host: &str,
) -> Result<(), SinkError> {
    let share_a_listener = |a: &RouteConfig, b: &RouteConfig| {
        a.listeners.is_empty()
            || b.listeners.is_empty()
            || a.listeners.iter().any(|l| b.listeners.contains(l))
    };
    for route in routes.iter().filter(|r| carrying.contains(r.name.as_str())) {
        let Some(rank) = serin_proxy::route_host_rank(&route.hostnames, host) else {
            return Err(SinkError::HostNotServed {
                route: route.name.clone(),
                hostnames: route.hostnames.join(", "),
                host: host.to_string(),
            });
        };
        let closer = routes.iter().find(|other| {
            !carrying.contains(other.name.as_str())
                && share_a_listener(route, other)
                && serin_proxy::route_host_rank(&other.hostnames, host).is_some_and(|r| r > rank)
        });
        if let Some(other) = closer {
            return Err(SinkError::HostTaken {
                route: route.name.clone(),
                other: other.name.clone(),
                host: host.to_string(),
            });
        }
    }
    Ok(())
}

/// `original` with `condition` on every match, sending to the canary
/// only: the rule a header, cookie or host step adds beside it.
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
        if step.kind == MatchKind::Host {
            let carrying: BTreeSet<&str> = shared.iter().map(|r| r.route.as_str()).collect();
            check_preview_host(&snap.config.routes, &carrying, &step.value)?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use serin_canary::settings::Options;

    /// Service `a` with v1 and v2 and the routes of `routes` (YAML list
    /// items), parsed as a config file is.
    fn routes(routes: &str) -> Vec<RouteConfig> {
        let text = format!(
            "listeners:\n  - {{name: web, address: '127.0.0.1:18080'}}\n  - {{name: admin, address: '127.0.0.1:18081'}}\n\
             services:\n  - name: a\n    versions: [{{name: v1, endpoints: ['127.0.0.1:1']}}, {{name: v2, endpoints: ['127.0.0.1:2']}}]\n\
             routes:\n{routes}"
        );
        serin_config::proxy::parse_proxy_config(&text, "t.yaml", std::path::Path::new("."))
            .unwrap_or_else(|e| panic!("{e}"))
            .routes
    }

    const BOTH: &str = "backendRefs: [{name: a, version: v1}, {name: a, version: v2, weight: 0}]";

    fn host_step(host: &str) -> MatchStep {
        Options {
            host_step: Some(host.into()),
            ..Options::default()
        }
        .resolve()
        .unwrap_or_else(|e| panic!("{e}"))
        .first_step
        .unwrap_or_else(|| panic!("no first step"))
    }

    #[test]
    fn a_host_step_matches_its_host_on_any_port_in_any_case_only() {
        let c = condition(&host_step("preview.qotm.local")).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.name, "host");
        for (host, want) in [
            ("preview.qotm.local", true),
            ("Preview.QOTM.Local", true),
            ("preview.qotm.local:8080", true),
            ("qotm.local", false),
            ("xpreview.qotm.local", false),
            ("preview.qotm.local.evil.example", false),
            ("preview-qotm-local", false),
            ("preview.qotm.local:80x", false),
        ] {
            assert_eq!(c.value.matches(host), want, "{host}");
        }
    }

    #[test]
    fn the_rule_beside_a_carrying_rule_keeps_its_paths_and_filters_and_sends_to_the_canary() {
        let r = routes(&format!(
            "  - name: r\n    rules:\n      - matches: [{{path: {{type: PathPrefix, value: /quote}}}}, {{path: {{type: Exact, value: /}}}}]\n\
             \x20       filters: [{{type: ResponseHeaderModifier, responseHeaderModifier: {{add: [{{name: x-seen, value: '1'}}]}}}}]\n\
             \x20       {BOTH}\n"
        ));
        let target = Target {
            service: "a".into(),
            baseline: "v1".into(),
            canary: "v2".into(),
        };
        let step = host_step("preview.qotm.local");
        let c = condition(&step).unwrap_or_else(|e| panic!("{e}"));
        let rule = matching_rule(&r[0].rules[0], "serin-canary:a:0".into(), &c, &target);
        assert_eq!(rule.name.as_deref(), Some("serin-canary:a:0"));
        let paths: Vec<String> = rule
            .matches
            .iter()
            .map(|m| format!("{:?}", m.path))
            .collect();
        let original: Vec<String> = r[0].rules[0]
            .matches
            .iter()
            .map(|m| format!("{:?}", m.path))
            .collect();
        assert_eq!(paths, original, "the same paths");
        assert!(
            rule.matches
                .iter()
                .all(|m| m.headers.len() == 1 && m.headers[0].name == "host"),
            "each match asks for the host"
        );
        assert_eq!(rule.filters.len(), 1, "the same filters");
        let backends: Vec<(String, u32)> = rule
            .backends
            .iter()
            .map(|b| (b.version.clone(), b.weight))
            .collect();
        assert_eq!(backends, [("v2".to_string(), 1)]);
    }

    #[test]
    fn a_preview_host_must_reach_the_carrying_routes_before_any_other_route() {
        type Case<'a> = (&'a str, String, Result<(), &'a str>);
        let cases: Vec<Case> = vec![
            (
                "a route without hostnames",
                format!("  - name: r\n    rules: [{{{BOTH}}}]\n"),
                Ok(()),
            ),
            (
                "a route naming the preview host",
                format!(
                    "  - name: r\n    hostnames: [preview.qotm.local, qotm.local]\n    rules: [{{{BOTH}}}]\n"
                ),
                Ok(()),
            ),
            (
                "a route whose wildcard covers it",
                format!("  - name: r\n    hostnames: ['*.qotm.local']\n    rules: [{{{BOTH}}}]\n"),
                Ok(()),
            ),
            (
                "a route for other hosts only",
                format!("  - name: r\n    hostnames: [qotm.local]\n    rules: [{{{BOTH}}}]\n"),
                Err(
                    "route `r` serves only qotm.local, so requests for the preview host \
                     preview.qotm.local never reach it: add preview.qotm.local to its hostnames",
                ),
            ),
            (
                "another route naming the preview host",
                format!(
                    "  - name: r\n    rules: [{{{BOTH}}}]\n\
                     \x20 - name: mine\n    hostnames: [preview.qotm.local]\n    rules: [{{backendRefs: [{{name: a, version: v1}}]}}]\n"
                ),
                Err("route `mine` names preview.qotm.local more closely than route `r` does"),
            ),
            (
                "another route's wildcard covering it",
                format!(
                    "  - name: r\n    rules: [{{{BOTH}}}]\n\
                     \x20 - name: mine\n    hostnames: ['*.qotm.local']\n    rules: [{{backendRefs: [{{name: a, version: v1}}]}}]\n"
                ),
                Err("route `mine` names preview.qotm.local more closely than route `r` does"),
            ),
            (
                "another route's broader wildcard",
                format!(
                    "  - name: r\n    hostnames: ['*.qotm.local']\n    rules: [{{{BOTH}}}]\n\
                     \x20 - name: mine\n    hostnames: ['*.local']\n    rules: [{{backendRefs: [{{name: a, version: v1}}]}}]\n"
                ),
                Ok(()),
            ),
            (
                "another route naming it on another listener",
                format!(
                    "  - name: r\n    parentRefs: [{{name: web}}]\n    rules: [{{{BOTH}}}]\n\
                     \x20 - name: mine\n    parentRefs: [{{name: admin}}]\n    hostnames: [preview.qotm.local]\n    rules: [{{backendRefs: [{{name: a, version: v1}}]}}]\n"
                ),
                Ok(()),
            ),
        ];
        for (name, text, want) in cases {
            let all = routes(&text);
            let got = check_preview_host(&all, &BTreeSet::from(["r"]), "preview.qotm.local")
                .map_err(|e| e.to_string());
            match (got, want) {
                (Ok(()), Ok(())) => {}
                (Err(got), Err(want)) => assert!(got.starts_with(want), "{name}: {got}"),
                (got, want) => panic!("{name}: got {got:?}, want {want:?}"),
            }
        }
    }
}
