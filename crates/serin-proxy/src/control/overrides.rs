//! How run-time weight changes (the state file) meet the config file: which
//! of them still fit, and which a reload's file replaces.

use std::collections::BTreeMap;

use serin_config::proxy::ProxyConfig;

use crate::state::StateFile;

/// A rule of a route, by name and index.
pub type RuleId = (String, usize);

/// Keeps the overrides of `state` that fit `config` (the route, rule and
/// backends still exist and the weights do not sum to 0) and says which
/// did not: a state file older than the config must not stop a start.
pub fn fitting(config: &ProxyConfig, mut state: StateFile) -> (StateFile, Vec<RuleId>) {
    let mut dropped = Vec::new();
    state.weights.retain(|route, rules| {
        rules.retain(|rule, weights| {
            let one = BTreeMap::from([(route.clone(), BTreeMap::from([(*rule, weights.clone())]))]);
            let fits = config.clone().apply_weights(&one).is_ok();
            if !fits {
                dropped.push((route.clone(), *rule));
            }
            fits
        });
        !rules.is_empty()
    });
    (state, dropped)
}

/// The rules whose weights the file changed between `old` and `new`: there
/// the file wins over an earlier run-time change (README, "weights"). Their
/// overrides are removed from `state` and returned.
pub fn replaced_by_file(
    old: &ProxyConfig,
    new: &ProxyConfig,
    state: &mut StateFile,
) -> Vec<RuleId> {
    let backends_of = |cfg: &ProxyConfig, route: &str, rule: usize| {
        cfg.routes
            .iter()
            .find(|r| r.name == route)
            .and_then(|r| r.rules.get(rule))
            .map(|r| r.backends.clone())
    };
    let mut replaced = Vec::new();
    state.weights.retain(|route, rules| {
        rules.retain(|rule, _| {
            let same = backends_of(old, route, *rule) == backends_of(new, route, *rule);
            if !same {
                replaced.push((route.clone(), *rule));
            }
            same
        });
        !rules.is_empty()
    });
    replaced
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(v1: u32, v2: u32) -> ProxyConfig {
        let text = format!(
            "services:\n  - name: a\n    versions: [{{name: v1, endpoints: ['127.0.0.1:1']}}, {{name: v2, endpoints: ['127.0.0.1:2']}}]\n\
             routes:\n  - name: r\n    rules:\n      - backendRefs: [{{name: a, version: v1, weight: {v1}}}, {{name: a, version: v2, weight: {v2}}}]\n\
             \x20 - name: s\n    rules:\n      - backendRefs: [{{name: a, version: v1}}]\n"
        );
        serin_config::proxy::parse_proxy_config(&text, "t.yaml", std::path::Path::new("."))
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// Route, rule index, `service/version` → weight.
    type Entry<'a> = (&'a str, usize, &'a [(&'a str, u32)]);

    fn state(entries: &[Entry]) -> StateFile {
        let mut s = StateFile::default();
        for (route, rule, weights) in entries {
            s.weights.entry(route.to_string()).or_default().insert(
                *rule,
                weights.iter().map(|(k, w)| (k.to_string(), *w)).collect(),
            );
        }
        s
    }

    #[test]
    fn overrides_that_no_longer_fit_are_dropped_and_named() {
        type Case<'a> = (&'a str, StateFile, Vec<RuleId>);
        let cases: Vec<Case> = vec![
            (
                "fits",
                state(&[("r", 0, &[("a/v1", 10), ("a/v2", 90)])]),
                vec![],
            ),
            (
                "unknown route",
                state(&[("gone", 0, &[("a/v1", 1)])]),
                vec![("gone".into(), 0)],
            ),
            (
                "unknown rule",
                state(&[("r", 3, &[("a/v1", 1)])]),
                vec![("r".into(), 3)],
            ),
            (
                "unknown backend",
                state(&[("r", 0, &[("a/v9", 1)])]),
                vec![("r".into(), 0)],
            ),
            (
                "sums to zero",
                state(&[("r", 0, &[("a/v1", 0), ("a/v2", 0)])]),
                vec![("r".into(), 0)],
            ),
            (
                "one of two",
                state(&[("r", 0, &[("a/v1", 5)]), ("s", 0, &[("a/v9", 5)])]),
                vec![("s".into(), 0)],
            ),
        ];
        for (name, given, want_dropped) in cases {
            let (kept, dropped) = fitting(&config(1, 1), given.clone());
            assert_eq!(dropped, want_dropped, "{name}");
            let kept_count: usize = kept.weights.values().map(BTreeMap::len).sum();
            let given_count: usize = given.weights.values().map(BTreeMap::len).sum();
            assert_eq!(kept_count + dropped.len(), given_count, "{name}");
        }
    }

    #[test]
    fn the_file_wins_only_for_the_rules_whose_weights_it_changed() {
        let cases = [
            ("same file", config(1, 1), vec![]),
            (
                "weights of r changed",
                config(1, 3),
                vec![("r".to_string(), 0)],
            ),
        ];
        for (name, new, want) in cases {
            let mut s = state(&[("r", 0, &[("a/v1", 9)]), ("s", 0, &[("a/v1", 4)])]);
            let replaced = replaced_by_file(&config(1, 1), &new, &mut s);
            assert_eq!(replaced, want, "{name}");
            assert!(
                s.weights.contains_key("s"),
                "{name}: the other route's change stays"
            );
            assert_eq!(s.weights.contains_key("r"), want.is_empty(), "{name}");
        }
    }
}
