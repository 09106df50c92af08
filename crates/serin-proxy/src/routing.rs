//! The route table: hostnames, then rules in Gateway API precedence, compiled
//! once per snapshot so a lookup is a hash probe and a short scan.

use std::ops::ControlFlow;
use std::sync::Arc;

use http::{HeaderMap, Method};
use rustc_hash::FxHashMap;
use serin_config::proxy::{
    IdentityField, IdentityMatch, MatchConfig, PathMatch, PathNormalizationConfig, RouteConfig,
    ValueMatch,
};

use crate::snapshot::CompiledRule;
use crate::tls::PeerIdentity;

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
    /// How the listener's paths are normalised before a lookup.
    path: PathNormalizationConfig,
    /// The listener's own settings the request path reads.
    pub edge: crate::snapshot::ListenerEdge,
}

/// Where a route's rule sits in precedence: bigger sorts first.
fn precedence(m: &MatchConfig) -> (u8, usize, bool, usize, usize, usize) {
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
        // serin's own condition, after the Gateway API's: more of them is
        // more specific.
        m.client_certificate.len(),
    )
}

impl RouteTable {
    /// Builds the table from routes (in file order, which breaks ties like
    /// the Gateway API's creation time) and their compiled rules.
    pub fn build(
        routes: &[(&RouteConfig, Vec<Arc<CompiledRule>>)],
        path: PathNormalizationConfig,
    ) -> Self {
        let cands = candidates(routes);
        let (exact_names, mut wild_names) = hostnames(&cands);
        let mut table = RouteTable {
            path,
            ..RouteTable::default()
        };
        for h in exact_names {
            table
                .exact
                .insert(h.to_string(), vhost_for(&cands, Some(h)));
        }
        wild_names.sort_by_key(|s| std::cmp::Reverse(s.len()));
        for suffix in wild_names {
            table
                .wildcard
                .push((suffix.to_string(), wildcard_vhost(&cands, suffix)));
        }
        table.any = vhost_for(&cands, None);
        table
    }

    /// The rule for a request and the path match that chose it. `peer`:
    /// the connection's verified client certificate.
    pub fn lookup<'a>(
        &'a self,
        host: &str,
        method: &Method,
        path: &str,
        query: Option<&str>,
        headers: &HeaderMap,
        peer: Option<&PeerIdentity>,
    ) -> Option<(&'a Arc<CompiledRule>, &'a MatchConfig)> {
        let (vh, _) = self.virtual_host(host);
        let probe = Probe {
            host,
            method,
            path,
            query,
            headers,
            peer,
        };
        vh.entries
            .iter()
            .find(|e| check(&e.m, &probe, |_| ControlFlow::Break(())))
            .map(|e| (&e.rule, &e.m))
    }

    /// The rules that serve `host`, and which name chose them.
    fn virtual_host(&self, host: &str) -> (&VirtualHost, HostChoice<'_>) {
        if let Some(vh) = self.exact.get(host) {
            return (vh, HostChoice::Exact);
        }
        self.wildcard
            .iter()
            .find(|(suffix, _)| host.ends_with(suffix.as_str()) && host.len() > suffix.len())
            .map_or((&self.any, HostChoice::Any), |(suffix, vh)| {
                (vh, HostChoice::Wildcard(suffix))
            })
    }

    /// Every match that could serve the request, in precedence order, each
    /// with the conditions the request does not meet (none: it matches).
    /// What `lookup` decides, told in full (see [`crate::explain`]).
    pub fn consider<'a>(&'a self, p: &Probe<'_>) -> (HostChoice<'a>, Vec<Considered<'a>>) {
        let (vh, choice) = self.virtual_host(p.host);
        let considered = vh
            .entries
            .iter()
            .map(|e| {
                let mut misses = Vec::new();
                check(&e.m, p, |m| {
                    misses.push(m);
                    ControlFlow::Continue(())
                });
                Considered {
                    rule: &e.rule,
                    m: &e.m,
                    misses,
                }
            })
            .collect();
        (choice, considered)
    }

    pub fn path_options(&self) -> &PathNormalizationConfig {
        &self.path
    }

    pub fn is_empty(&self) -> bool {
        self.exact.is_empty() && self.wildcard.is_empty() && self.any.entries.is_empty()
    }
}

/// Which of a listener's host names served a request's host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostChoice<'a> {
    /// A route names the host exactly.
    Exact,
    /// A route's wildcard: the suffix (`.example.com`).
    Wildcard(&'a str),
    /// No route names it: the routes without hostnames serve it.
    Any,
}

/// One match as an explanation sees it.
pub struct Considered<'a> {
    pub rule: &'a Arc<CompiledRule>,
    pub m: &'a MatchConfig,
    /// The conditions the request does not meet; none: it matches.
    pub misses: Vec<Miss<'a>>,
}

/// A prefix matches whole path segments: `/foo` matches `/foo` and
/// `/foo/bar`, not `/foobar`.
pub fn prefix_matches(prefix: &str, path: &str) -> bool {
    path.starts_with(prefix)
        && (path.len() == prefix.len()
            || prefix.is_empty()
            || path.as_bytes()[prefix.len()] == b'/')
}

/// The parts of a request a match reads.
#[derive(Clone, Copy)]
pub struct Probe<'r> {
    /// Lower case, without a port.
    pub host: &'r str,
    pub method: &'r Method,
    /// As normalised.
    pub path: &'r str,
    pub query: Option<&'r str>,
    pub headers: &'r HeaderMap,
    /// The connection's verified client certificate.
    pub peer: Option<&'r PeerIdentity>,
}

/// A condition of a match that a request does not meet.
#[derive(Debug, Clone, Copy)]
pub enum Miss<'m> {
    Path(&'m PathMatch),
    Method(&'m Method),
    Header(&'m ValueMatch),
    Query(&'m ValueMatch),
    ClientCertificate(&'m IdentityMatch),
}

/// Whether `m` holds for the request: `on_miss` hears of each condition
/// that does not, and says whether to go on looking (a lookup stops at the
/// first; an explanation wants them all).
fn check<'m>(
    m: &'m MatchConfig,
    p: &Probe<'_>,
    mut on_miss: impl FnMut(Miss<'m>) -> ControlFlow<()>,
) -> bool {
    let mut held = true;
    let mut miss = |what| {
        held = false;
        on_miss(what)
    };
    let path_ok = match &m.path {
        PathMatch::Exact(want) => want == p.path,
        PathMatch::PathPrefix(want) => prefix_matches(want, p.path),
        PathMatch::RegularExpression(r) => r.is_match(p.path),
    };
    if !path_ok && miss(Miss::Path(&m.path)).is_break() {
        return false;
    }
    if let Some(want) = &m.method
        && want != p.method
        && miss(Miss::Method(want)).is_break()
    {
        return false;
    }
    for h in &m.headers {
        if !header_holds(h, p.headers) && miss(Miss::Header(h)).is_break() {
            return false;
        }
    }
    for q in &m.query_params {
        if !query_holds(q, p.query) && miss(Miss::Query(q)).is_break() {
            return false;
        }
    }
    for c in &m.client_certificate {
        if !identity_holds(c, p.peer) && miss(Miss::ClientCertificate(c)).is_break() {
            return false;
        }
    }
    held
}

/// Several values of one header are matched as one comma-joined value, as
/// RFC 9110 allows folding them.
fn header_holds(h: &ValueMatch, headers: &HeaderMap) -> bool {
    let mut values = headers.get_all(h.name.as_str()).iter();
    match (values.next(), values.next()) {
        (None, _) => false,
        (Some(v), None) => v.to_str().is_ok_and(|v| h.value.matches(v)),
        (Some(_), Some(_)) => h
            .value
            .matches(&header_text(headers, &h.name).unwrap_or_default()),
    }
}

/// A header's values as one comma-joined text (`None`: it is absent).
pub fn header_text(headers: &HeaderMap, name: &str) -> Option<String> {
    let values: Vec<&str> = headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    (!values.is_empty()).then(|| values.join(","))
}

/// The first occurrence of a parameter counts (Gateway API).
fn query_holds(q: &ValueMatch, query: Option<&str>) -> bool {
    query_value(query, &q.name).is_some_and(|v| q.value.matches(&v))
}

/// The value of the query's first parameter `name`.
pub fn query_value(query: Option<&str>, name: &str) -> Option<String> {
    form_urlencoded::parse(query.unwrap_or("").as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// A request without a verified client certificate meets no condition on
/// one.
fn identity_holds(c: &IdentityMatch, peer: Option<&PeerIdentity>) -> bool {
    let Some(peer) = peer else {
        return false;
    };
    match c.field {
        IdentityField::Subject => c.value.matches(&peer.subject),
        IdentityField::Uri => peer.uris.iter().any(|u| c.value.matches(u)),
        IdentityField::Dns => peer.dns.iter().any(|d| c.value.matches(d)),
    }
}

/// One (match, rule) of the config with its tie-breakers.
struct Cand<'a> {
    hostnames: &'a [String],
    route_order: usize,
    route_name: &'a str,
    rule_index: usize,
    m: MatchConfig,
    rule: Arc<CompiledRule>,
}

/// Every (match, rule), in match precedence (Gateway API order: the most
/// specific match first, then route order, route name, rule index).
fn candidates<'a>(routes: &'a [(&'a RouteConfig, Vec<Arc<CompiledRule>>)]) -> Vec<Cand<'a>> {
    let mut cands = Vec::new();
    for (order, (route, rules)) in routes.iter().enumerate() {
        for (i, (rule_cfg, rule)) in route.rules.iter().zip(rules).enumerate() {
            let matches = if rule_cfg.matches.is_empty() {
                vec![MatchConfig {
                    path: PathMatch::PathPrefix(String::new()),
                    headers: Vec::new(),
                    query_params: Vec::new(),
                    method: None,
                    client_certificate: Vec::new(),
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
    cands
}

/// The exact hostnames and the wildcard suffixes (`*.a.com` → `.a.com`)
/// the routes name, each once.
fn hostnames<'a>(cands: &[Cand<'a>]) -> (Vec<&'a str>, Vec<&'a str>) {
    let mut exact: Vec<&str> = Vec::new();
    let mut wild: Vec<&str> = Vec::new();
    for c in cands {
        for h in c.hostnames {
            if let Some(suffix) = h.strip_prefix('*') {
                if !suffix.is_empty() && !wild.contains(&suffix) {
                    wild.push(suffix);
                }
            } else if !exact.contains(&h.as_str()) {
                exact.push(h);
            }
        }
    }
    (exact, wild)
}

/// Whether a route with `hostnames` serves `host`.
fn applies(hostnames: &[String], host: &str) -> bool {
    hostnames.is_empty()
        || hostnames.iter().any(|h| {
            h == "*"
                || h == host
                || h.strip_prefix('*')
                    .is_some_and(|s| !s.is_empty() && host.ends_with(s) && host.len() > s.len())
        })
}

/// How closely a route with `hostnames` names `host` (lower case, without
/// a port), as a lookup ranks the routes serving it: the bigger, the
/// sooner its rules are tried; `None`: such a route does not serve `host`.
/// For callers that add rules and must know whose rules come first (a
/// canary's preview host).
pub fn route_host_rank(hostnames: &[String], host: &str) -> Option<(u8, usize)> {
    applies(hostnames, host).then(|| host_rank(hostnames, host))
}

/// How specifically `hostnames` names `host`. Gateway API: rules of the
/// route with the most specific matching hostname come first (a
/// non-wildcard match, then the most characters); match precedence orders
/// rules within that.
fn host_rank(hostnames: &[String], host: &str) -> (u8, usize) {
    hostnames
        .iter()
        .filter_map(|h| {
            if h == host {
                Some((2, h.len()))
            } else if h == "*" {
                Some((0, 0))
            } else {
                h.strip_prefix('*')
                    .filter(|s| !s.is_empty() && host.ends_with(s) && host.len() > s.len())
                    .map(|s| (1, s.len()))
            }
        })
        .max()
        .unwrap_or((0, 0))
}

/// The rules for requests to `host` (`None`: a host no route names). The
/// candidates are already in match order and the sort is stable, so
/// match precedence orders rules of the same host rank.
fn vhost_for(cands: &[Cand<'_>], host: Option<&str>) -> VirtualHost {
    let mut chosen: Vec<(&Cand<'_>, (u8, usize))> = cands
        .iter()
        .filter(|c| match host {
            Some(h) => applies(c.hostnames, h),
            None => c.hostnames.is_empty() || c.hostnames.iter().any(|h| h == "*"),
        })
        .map(|c| (c, host.map_or((0, 0), |h| host_rank(c.hostnames, h))))
        .collect();
    chosen.sort_by_key(|(_, rank)| std::cmp::Reverse(*rank));
    vhost_of(chosen)
}

/// The rules for a wildcard `suffix`: routes for that wildcard (and
/// broader ones) plus hostname-less routes.
fn wildcard_vhost(cands: &[Cand<'_>], suffix: &str) -> VirtualHost {
    let mut chosen: Vec<(&Cand<'_>, usize)> = cands
        .iter()
        .filter_map(|c| {
            if c.hostnames.is_empty() || c.hostnames.iter().any(|h| h == "*") {
                return Some((c, 0));
            }
            c.hostnames
                .iter()
                .filter_map(|h| h.strip_prefix('*'))
                .filter(|s| !s.is_empty() && suffix.ends_with(s))
                .map(str::len)
                .max()
                .map(|len| (c, len))
        })
        .collect();
    chosen.sort_by_key(|(_, rank)| std::cmp::Reverse(*rank));
    vhost_of(chosen)
}

fn vhost_of<R>(chosen: Vec<(&Cand<'_>, R)>) -> VirtualHost {
    VirtualHost {
        entries: chosen
            .into_iter()
            .map(|(c, _)| Entry {
                m: c.m.clone(),
                rule: c.rule.clone(),
            })
            .collect(),
    }
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

#[cfg(test)]
mod table_tests {
    use std::sync::Arc;

    use http::{HeaderMap, HeaderValue, Method};
    use serin_config::proxy::parse_proxy_config;

    use crate::endpoints::Backend;
    use crate::metrics::Metrics;
    use crate::snapshot::compile;

    /// Which rule (route name, index) a request lands on.
    fn route_of(
        yaml: &str,
        host: &str,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Option<(String, usize)> {
        let cfg = parse_proxy_config(yaml, "t.yaml", std::path::Path::new("."))
            .unwrap_or_else(|e| panic!("{e}"));
        let snap = compile(Arc::new(cfg), &Metrics::new(), |k| {
            Arc::new(Backend::new(k.clone()))
        })
        .unwrap_or_else(|e| panic!("{e}"));
        let table = snap.table("gw").unwrap_or_else(|| panic!("no table"));
        let mut h = HeaderMap::new();
        for (k, v) in headers {
            let name = http::HeaderName::from_bytes(k.as_bytes()).unwrap_or_else(|e| panic!("{e}"));
            h.insert(
                name,
                HeaderValue::from_str(v).unwrap_or_else(|e| panic!("{e}")),
            );
        }
        let (p, q) = path
            .split_once('?')
            .map_or((path, None), |(p, q)| (p, Some(q)));
        table
            .lookup(host, &method, p, q, &h, None)
            .map(|(rule, _)| (rule.route.to_string(), rule.index))
    }

    const CONFIG: &str = r#"
listeners: [{name: gw, address: "127.0.0.1:0"}]
services: [{name: s, versions: [{name: v1, endpoints: ["127.0.0.1:1"]}]}]
routes:
  - name: first
    rules:
      - matches: [{path: {type: PathPrefix, value: /}}]
        backendRefs: [{name: s}]
      - matches: [{path: {type: PathPrefix, value: /a}}]
        backendRefs: [{name: s}]
      - matches: [{path: {type: PathPrefix, value: /a/b}}]
        backendRefs: [{name: s}]
  - name: second
    rules:
      - matches: [{path: {type: PathPrefix, value: /a/b}, method: POST}]
        backendRefs: [{name: s}]
      - matches: [{path: {type: PathPrefix, value: /a/b}, headers: [{name: x, value: "1"}, {name: y, value: "2"}]}]
        backendRefs: [{name: s}]
      - matches: [{path: {type: PathPrefix, value: /a/b}, headers: [{name: x, value: "1"}]}]
        backendRefs: [{name: s}]
      - matches: [{path: {type: Exact, value: /a/b/c}}]
        backendRefs: [{name: s}]
  - name: hosted
    hostnames: ["*.example.com"]
    rules:
      - matches: [{path: {type: PathPrefix, value: /a}}]
        backendRefs: [{name: s}]
"#;

    #[test]
    fn precedence_is_the_gateway_apis() {
        let r = |method: Method, path: &str, headers: &[(&str, &str)]| {
            route_of(CONFIG, "h", method, path, headers)
        };
        assert_eq!(r(Method::GET, "/x", &[]), Some(("first".into(), 0)));
        assert_eq!(r(Method::GET, "/a/x", &[]), Some(("first".into(), 1)));
        // Longest prefix first.
        assert_eq!(r(Method::GET, "/a/b/x", &[]), Some(("first".into(), 2)));
        // A method match beats header matches at the same prefix length.
        assert_eq!(
            r(Method::POST, "/a/b/x", &[("x", "1"), ("y", "2")]),
            Some(("second".into(), 0))
        );
        // More header matches beat fewer.
        assert_eq!(
            r(Method::GET, "/a/b/x", &[("x", "1"), ("y", "2")]),
            Some(("second".into(), 1))
        );
        assert_eq!(
            r(Method::GET, "/a/b/x", &[("x", "1")]),
            Some(("second".into(), 2))
        );
        // Exact beats every prefix.
        assert_eq!(
            r(Method::POST, "/a/b/c", &[("x", "1")]),
            Some(("second".into(), 3))
        );
    }

    #[test]
    fn hostnames_pick_their_routes_first() {
        assert_eq!(
            route_of(CONFIG, "www.example.com", Method::GET, "/a/b", &[]),
            Some(("hosted".into(), 0))
        );
        // Hostname-less routes still serve the wildcard host's other paths.
        assert_eq!(
            route_of(CONFIG, "www.example.com", Method::GET, "/z", &[]),
            Some(("first".into(), 0))
        );
        assert_eq!(
            route_of(CONFIG, "example.com", Method::GET, "/a/b", &[]),
            Some(("first".into(), 2))
        );
    }
}
