//! The route table: hostnames, then rules in Gateway API precedence, compiled
//! once per snapshot so a lookup is a hash probe and a short scan.

use std::sync::Arc;

use http::{HeaderMap, Method};
use rustc_hash::FxHashMap;
use serin_config::proxy::{MatchConfig, PathMatch, RouteConfig};

use crate::snapshot::CompiledRule;

/// One match of one rule.
struct Entry {
    m: MatchConfig,
    rule: Arc<CompiledRule>,
}

/// A hostname's rules, most precedent first.
#[derive(Default)]
struct VirtualHost {
    entries: Vec<Entry>,
}

/// The routes attached to one listener.
#[derive(Default)]
pub struct RouteTable {
    exact: FxHashMap<String, VirtualHost>,
    /// `*.example.com` stored as `.example.com`, longest first.
    wildcard: Vec<(String, VirtualHost)>,
    any: VirtualHost,
}

/// Where a route's rule sits in precedence: bigger sorts first.
fn precedence(m: &MatchConfig) -> (u8, usize, bool, usize, usize) {
    let (kind, len) = match &m.path {
        PathMatch::Exact(p) => (3, p.len()),
        // Envoy Gateway's order (the Gateway API leaves regex unranked): a
        // regex is more specific than a prefix, less than an exact path.
        PathMatch::RegularExpression(r) => (2, r.as_str().len()),
        PathMatch::PathPrefix(p) => (1, p.len()),
    };
    (
        kind,
        len,
        m.method.is_some(),
        m.headers.len(),
        m.query_params.len(),
    )
}

impl RouteTable {
    /// Builds the table from routes (in file order, which breaks ties like
    /// the Gateway API's creation time) and their compiled rules.
    pub fn build(routes: &[(&RouteConfig, Vec<Arc<CompiledRule>>)]) -> Self {
        // Every (match, rule) with its tie-breakers.
        struct Cand<'a> {
            hostnames: &'a [String],
            route_order: usize,
            route_name: &'a str,
            rule_index: usize,
            m: MatchConfig,
            rule: Arc<CompiledRule>,
        }
        let mut cands = Vec::new();
        for (order, (route, rules)) in routes.iter().enumerate() {
            for (i, (rule_cfg, rule)) in route.rules.iter().zip(rules).enumerate() {
                let matches = if rule_cfg.matches.is_empty() {
                    vec![MatchConfig {
                        path: PathMatch::PathPrefix(String::new()),
                        headers: Vec::new(),
                        query_params: Vec::new(),
                        method: None,
                    }]
                } else {
                    rule_cfg.matches.clone()
                };
                for m in matches {
                    cands.push(Cand {
                        hostnames: &route.hostnames,
                        route_order: order,
                        route_name: &route.name,
                        rule_index: i,
                        m,
                        rule: rule.clone(),
                    });
                }
            }
        }
        cands.sort_by(|a, b| {
            precedence(&b.m)
                .cmp(&precedence(&a.m))
                .then(a.route_order.cmp(&b.route_order))
                .then(a.route_name.cmp(b.route_name))
                .then(a.rule_index.cmp(&b.rule_index))
        });
        let mut table = RouteTable::default();
        let mut exact_names: Vec<&str> = Vec::new();
        let mut wild_names: Vec<&str> = Vec::new();
        for c in &cands {
            for h in c.hostnames {
                if let Some(suffix) = h.strip_prefix('*') {
                    if !suffix.is_empty() && !wild_names.contains(&suffix) {
                        wild_names.push(suffix);
                    }
                } else if !exact_names.contains(&h.as_str()) {
                    exact_names.push(h);
                }
            }
        }
        let applies = |hostnames: &[String], host: &str| {
            hostnames.is_empty()
                || hostnames.iter().any(|h| {
                    h == "*"
                        || h == host
                        || h.strip_prefix('*').is_some_and(|s| {
                            !s.is_empty() && host.ends_with(s) && host.len() > s.len()
                        })
                })
        };
        let entries_for = |host: Option<&str>| VirtualHost {
            entries: cands
                .iter()
                .filter(|c| match host {
                    Some(h) => applies(c.hostnames, h),
                    None => c.hostnames.is_empty() || c.hostnames.iter().any(|h| h == "*"),
                })
                .map(|c| Entry {
                    m: c.m.clone(),
                    rule: c.rule.clone(),
                })
                .collect(),
        };
        for h in exact_names {
            table.exact.insert(h.to_string(), entries_for(Some(h)));
        }
        wild_names.sort_by_key(|s| std::cmp::Reverse(s.len()));
        for suffix in wild_names {
            // A wildcard vhost holds routes for that wildcard (and broader
            // ones) plus hostname-less routes.
            let vh = VirtualHost {
                entries: cands
                    .iter()
                    .filter(|c| {
                        c.hostnames.is_empty()
                            || c.hostnames.iter().any(|h| {
                                h == "*"
                                    || h.strip_prefix('*')
                                        .is_some_and(|s| !s.is_empty() && suffix.ends_with(s))
                            })
                    })
                    .map(|c| Entry {
                        m: c.m.clone(),
                        rule: c.rule.clone(),
                    })
                    .collect(),
            };
            table.wildcard.push((suffix.to_string(), vh));
        }
        table.any = entries_for(None);
        table
    }

    /// The rule for a request and the path match that chose it.
    pub fn lookup<'a>(
        &'a self,
        host: &str,
        method: &Method,
        path: &str,
        query: Option<&str>,
        headers: &HeaderMap,
    ) -> Option<(&'a Arc<CompiledRule>, &'a MatchConfig)> {
        let vh = self
            .exact
            .get(host)
            .or_else(|| {
                self.wildcard
                    .iter()
                    .find(|(suffix, _)| {
                        host.ends_with(suffix.as_str()) && host.len() > suffix.len()
                    })
                    .map(|(_, vh)| vh)
            })
            .unwrap_or(&self.any);
        vh.entries
            .iter()
            .find(|e| matches(&e.m, method, path, query, headers))
            .map(|e| (&e.rule, &e.m))
    }

    pub fn is_empty(&self) -> bool {
        self.exact.is_empty() && self.wildcard.is_empty() && self.any.entries.is_empty()
    }
}

/// A prefix matches whole path segments: `/foo` matches `/foo` and
/// `/foo/bar`, not `/foobar`.
pub fn prefix_matches(prefix: &str, path: &str) -> bool {
    path.starts_with(prefix)
        && (path.len() == prefix.len()
            || prefix.is_empty()
            || path.as_bytes()[prefix.len()] == b'/')
}

fn matches(
    m: &MatchConfig,
    method: &Method,
    path: &str,
    query: Option<&str>,
    headers: &HeaderMap,
) -> bool {
    let path_ok = match &m.path {
        PathMatch::Exact(p) => p == path,
        PathMatch::PathPrefix(p) => prefix_matches(p, path),
        PathMatch::RegularExpression(r) => r.is_match(path),
    };
    if !path_ok {
        return false;
    }
    if let Some(want) = &m.method
        && want != method
    {
        return false;
    }
    for h in &m.headers {
        // Several values of one header are matched as one comma-joined
        // value, as RFC 9110 allows folding them.
        let mut values = headers.get_all(h.name.as_str()).iter();
        let ok = match (values.next(), values.next()) {
            (None, _) => false,
            (Some(v), None) => v.to_str().is_ok_and(|v| h.value.matches(v)),
            (Some(_), Some(_)) => {
                let joined: Vec<&str> = headers
                    .get_all(h.name.as_str())
                    .iter()
                    .filter_map(|v| v.to_str().ok())
                    .collect();
                h.value.matches(&joined.join(","))
            }
        };
        if !ok {
            return false;
        }
    }
    if !m.query_params.is_empty() {
        let q = query.unwrap_or("");
        for qm in &m.query_params {
            // The first occurrence of a parameter counts (Gateway API).
            let found = form_urlencoded::parse(q.as_bytes())
                .find(|(k, _)| k == qm.name.as_str())
                .map(|(_, v)| v);
            if !found.is_some_and(|v| qm.value.matches(&v)) {
                return false;
            }
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::prefix_matches;

    #[test]
    fn prefixes_match_whole_segments() {
        assert!(prefix_matches("/foo", "/foo"));
        assert!(prefix_matches("/foo", "/foo/"));
        assert!(prefix_matches("/foo", "/foo/bar"));
        assert!(!prefix_matches("/foo", "/foobar"));
        assert!(prefix_matches("", "/anything"));
    }
}
