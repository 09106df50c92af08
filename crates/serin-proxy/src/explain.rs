//! What serin would do with a request, told without sending it (`serin
//! explain`, `GET /explain`): the listener, the path as normalised, the
//! rule that matches and why, the nearest rules that do not and what
//! differed, the filters in the order they run, the backends with their
//! weights, and each endpoint with why it can or cannot be picked.

use std::sync::Arc;

use http::{HeaderMap, HeaderName, HeaderValue, Method};
use serde::Serialize;
use serin_config::proxy::{IdentityField, MatchConfig, PathMatch, StringMatch, ValueMatch};

use crate::filters::{Filter, split_host_port};
use crate::outlier::EndpointState;
use crate::request::path::{self, PathVerdict};
use crate::routing::{Considered, HostChoice, Miss, Probe, RouteTable};
use crate::snapshot::{CompiledRule, Snapshot};

/// How many rules that do not match an explanation names: enough to spot
/// a near miss, few enough to read.
pub const NEAREST_SHOWN: usize = 3;

/// The request to explain, as a client would send it.
#[derive(Debug, Clone, Default)]
pub struct Question {
    /// `None`: the only listener (an error when there are several).
    pub listener: Option<String>,
    pub method: String,
    /// The request target: a path, with a query or without.
    pub target: String,
    /// `None`: no Host, so only routes without hostnames can serve it.
    pub host: Option<String>,
    pub headers: Vec<(String, String)>,
}

/// Why a request cannot be explained.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExplainError {
    #[error("no listener named {name:?}; the listeners are: {known}")]
    UnknownListener { name: String, known: String },
    #[error("there are several listeners ({known}): name one")]
    WhichListener { known: String },
    #[error("{0:?} is not an HTTP method")]
    Method(String),
    #[error("the target must begin with `/`, not {0:?}")]
    Target(String),
    #[error("header {0:?} is not a valid header name and value")]
    Header(String),
    #[error("query parameter {0:?} is not one of listener, method, path, host, header")]
    UnknownParameter(String),
    #[error("a `path` parameter is needed (the request target to explain)")]
    NoPath,
    #[error("header {0:?} is not NAME:VALUE")]
    HeaderForm(String),
}

impl Question {
    /// A question from the admin API's query: `path` (required), `method`
    /// (default GET), `host`, `listener`, and `header=NAME:VALUE` as often
    /// as needed.
    pub fn from_query(query: &str) -> Result<Self, ExplainError> {
        let mut q = Question {
            method: "GET".into(),
            ..Question::default()
        };
        let mut target = None;
        for (key, value) in form_urlencoded::parse(query.as_bytes()) {
            let value = value.into_owned();
            match &*key {
                "listener" => q.listener = Some(value),
                "method" => q.method = value,
                "path" => target = Some(value),
                "host" => q.host = Some(value),
                "header" => {
                    let (name, v) = value
                        .split_once(':')
                        .ok_or_else(|| ExplainError::HeaderForm(value.clone()))?;
                    q.headers
                        .push((name.trim().to_string(), v.trim().to_string()));
                }
                // The admin API's own (a browser's way to send it).
                "token" => {}
                other => return Err(ExplainError::UnknownParameter(other.to_string())),
            }
        }
        q.target = target.ok_or(ExplainError::NoPath)?;
        Ok(q)
    }
}

/// The answer, as JSON for the admin API and text for the CLI.
#[derive(Debug, Serialize)]
pub struct Explanation {
    pub listener: String,
    pub method: String,
    pub host: String,
    /// Which of the listener's host names served the host.
    pub hosts: String,
    pub path: PathStep,
    /// The rule that serves the request; `None`: a 404 (or the path is
    /// refused first).
    pub matched: Option<RuleSeen>,
    /// The closest rules that do not serve it, closest first.
    pub nearest: Vec<RuleSeen>,
    /// What runs on the request, in order (none without a match).
    pub steps: Vec<String>,
    pub backends: Vec<BackendSeen>,
}

/// The path, as asked and as routed.
#[derive(Debug, Serialize)]
pub struct PathStep {
    pub asked: String,
    /// What rules match against.
    pub routed: Option<String>,
    /// Why the path is refused (400) or redirected, when it is.
    pub outcome: Option<String>,
}

/// A rule as an explanation shows it.
#[derive(Debug, Serialize)]
pub struct RuleSeen {
    pub route: String,
    pub rule: usize,
    /// The match, in words (`PathPrefix /api, header x-tier = gold`).
    #[serde(rename = "match")]
    pub matcher: String,
    /// What the request lacks for it (none for the rule that matches, or a
    /// later one the match shadows).
    pub differs: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct BackendSeen {
    pub service: String,
    pub version: String,
    pub weight: u32,
    /// Its share of the rule's requests, in percent.
    pub share: f64,
    pub endpoints: Vec<EndpointSeen>,
}

#[derive(Debug, Serialize)]
pub struct EndpointSeen {
    pub address: String,
    pub eligible: bool,
    pub why: String,
}

/// Explains `q` against the running snapshot.
pub fn explain(snapshot: &Snapshot, q: &Question) -> Result<Explanation, ExplainError> {
    let (listener, table) = listener(snapshot, q.listener.as_deref())?;
    let method = Method::from_bytes(q.method.as_bytes())
        .map_err(|_| ExplainError::Method(q.method.clone()))?;
    if !q.target.starts_with('/') {
        return Err(ExplainError::Target(q.target.clone()));
    }
    let (asked, query) = match q.target.split_once('?') {
        Some((p, query)) => (p, Some(query)),
        None => (q.target.as_str(), None),
    };
    let headers = headers(q)?;
    let host = q
        .host
        .as_deref()
        .map(|h| split_host_port(h).0.to_ascii_lowercase())
        .unwrap_or_default();
    let mut answer = Explanation {
        listener: listener.to_string(),
        method: method.to_string(),
        host: host.clone(),
        hosts: String::new(),
        path: PathStep {
            asked: asked.to_string(),
            routed: None,
            outcome: None,
        },
        matched: None,
        nearest: Vec::new(),
        steps: Vec::new(),
        backends: Vec::new(),
    };
    let routed = match path::normalize(asked, table.path_options()) {
        Ok(PathVerdict::Route(p)) => p.into_owned(),
        Ok(PathVerdict::Redirect(to)) => {
            answer.path.outcome = Some(format!("redirected (308) to {to}"));
            return Ok(answer);
        }
        Err(why) => {
            answer.path.outcome =
                Some(format!("refused (400 {}): the path has {why}", why.label()));
            return Ok(answer);
        }
    };
    answer.path.routed = Some(routed.clone());
    let probe = Probe {
        host: &host,
        method: &method,
        path: &routed,
        query,
        headers: &headers,
        peer: None,
    };
    let (choice, considered) = table.consider(&probe);
    answer.hosts = hosts(choice, &host);
    let chosen = considered.iter().position(|c| c.misses.is_empty());
    answer.nearest = nearest(&considered, chosen, &probe);
    if let Some(i) = chosen {
        let c = &considered[i];
        answer.matched = Some(seen(c, &probe));
        answer.steps = steps(c.rule);
        answer.backends = backends(c.rule);
    }
    Ok(answer)
}

fn listener<'s>(
    snapshot: &'s Snapshot,
    name: Option<&str>,
) -> Result<(&'s str, &'s RouteTable), ExplainError> {
    let known = || {
        let names: Vec<&str> = snapshot.tables.keys().map(String::as_str).collect();
        names.join(", ")
    };
    match name {
        Some(name) => snapshot
            .tables
            .get_key_value(name)
            .map(|(n, t)| (n.as_str(), &**t))
            .ok_or_else(|| ExplainError::UnknownListener {
                name: name.to_string(),
                known: known(),
            }),
        None => match snapshot.tables.iter().next() {
            Some((n, t)) if snapshot.tables.len() == 1 => Ok((n.as_str(), &**t)),
            _ => Err(ExplainError::WhichListener { known: known() }),
        },
    }
}

fn headers(q: &Question) -> Result<HeaderMap, ExplainError> {
    let mut map = HeaderMap::new();
    for (name, value) in &q.headers {
        let bad = || ExplainError::Header(format!("{name}: {value}"));
        let n = HeaderName::from_bytes(name.as_bytes()).map_err(|_| bad())?;
        let v = HeaderValue::from_str(value).map_err(|_| bad())?;
        map.append(n, v);
    }
    if let Some(host) = &q.host {
        let v = HeaderValue::from_str(host)
            .map_err(|_| ExplainError::Header(format!("host: {host}")))?;
        map.insert(http::header::HOST, v);
    }
    Ok(map)
}

fn hosts(choice: HostChoice<'_>, host: &str) -> String {
    match choice {
        HostChoice::Exact => format!("routes naming {host}"),
        HostChoice::Wildcard(suffix) => format!("routes naming *{suffix}"),
        HostChoice::Any if host.is_empty() => "routes without hostnames (no Host)".into(),
        HostChoice::Any => format!("routes without hostnames (none names {host})"),
    }
}

/// The rules closest to matching, fewest differences first (precedence
/// breaking ties); a later rule that matches too is shown as shadowed.
fn nearest(considered: &[Considered<'_>], chosen: Option<usize>, p: &Probe<'_>) -> Vec<RuleSeen> {
    let mut others: Vec<(usize, &Considered<'_>)> = considered
        .iter()
        .enumerate()
        .filter(|(i, c)| {
            Some(*i) != chosen && chosen.is_none_or(|m| !Arc::ptr_eq(c.rule, considered[m].rule))
        })
        .collect();
    others.sort_by_key(|(i, c)| (c.misses.is_empty(), c.misses.len(), *i));
    others.dedup_by(|a, b| Arc::ptr_eq(a.1.rule, b.1.rule));
    others
        .into_iter()
        .take(NEAREST_SHOWN)
        .map(|(_, c)| {
            let mut s = seen(c, p);
            if c.misses.is_empty() {
                s.differs
                    .push("matches too, but an earlier rule takes precedence".into());
            }
            s
        })
        .collect()
}

fn seen(c: &Considered<'_>, p: &Probe<'_>) -> RuleSeen {
    RuleSeen {
        route: c.rule.route.to_string(),
        rule: c.rule.index,
        matcher: describe_match(c.m),
        differs: c.misses.iter().map(|m| describe_miss(*m, p)).collect(),
    }
}

/// A match in words, every condition it has.
pub fn describe_match(m: &MatchConfig) -> String {
    let mut parts = vec![describe_path(&m.path)];
    parts.extend(m.method.as_ref().map(|method| format!("method {method}")));
    parts.extend(
        m.headers
            .iter()
            .map(|h| format!("header {}", describe_value(h))),
    );
    parts.extend(
        m.query_params
            .iter()
            .map(|q| format!("query {}", describe_value(q))),
    );
    parts.extend(m.client_certificate.iter().map(|c| {
        format!(
            "client certificate {} {}",
            field(c.field),
            describe_string(&c.value)
        )
    }));
    parts.join(", ")
}

fn describe_path(p: &PathMatch) -> String {
    match p {
        PathMatch::Exact(v) => format!("Exact {v}"),
        PathMatch::PathPrefix(v) if v.is_empty() => "PathPrefix /".into(),
        PathMatch::PathPrefix(v) => format!("PathPrefix {v}"),
        PathMatch::RegularExpression(r) => format!("RegularExpression {}", r.as_str()),
    }
}

fn describe_value(v: &ValueMatch) -> String {
    format!("{} {}", v.name, describe_string(&v.value))
}

fn describe_string(s: &StringMatch) -> String {
    match s {
        StringMatch::Exact(v) => format!("= {v}"),
        StringMatch::RegularExpression(r) => format!("~ {}", r.as_str()),
    }
}

fn field(f: IdentityField) -> &'static str {
    match f {
        IdentityField::Subject => "subject",
        IdentityField::Uri => "URI SAN",
        IdentityField::Dns => "DNS SAN",
    }
}

/// What the request lacks for one condition, with what it has instead.
pub fn describe_miss(miss: Miss<'_>, p: &Probe<'_>) -> String {
    let has = |v: Option<String>| {
        v.map_or_else(|| "it has none".to_string(), |v| format!("it has {v:?}"))
    };
    match miss {
        Miss::Path(want) => format!("path: wants {}, it is {}", describe_path(want), p.path),
        Miss::Method(want) => format!("method: wants {want}, it is {}", p.method),
        Miss::Header(h) => format!(
            "header {}: wants {}, {}",
            h.name,
            describe_string(&h.value),
            has(crate::routing::header_text(p.headers, &h.name))
        ),
        Miss::Query(q) => format!(
            "query {}: wants {}, {}",
            q.name,
            describe_string(&q.value),
            has(crate::routing::query_value(p.query, &q.name))
        ),
        Miss::ClientCertificate(c) => format!(
            "client certificate: wants {} {} (an explanation has no certificate)",
            field(c.field),
            describe_string(&c.value)
        ),
    }
}

/// What runs on a request of `rule`, in order (see [`crate::request`]).
fn steps(rule: &CompiledRule) -> Vec<String> {
    let mut steps = Vec::new();
    if rule.cors().is_some() {
        steps.push("CORS: a preflight is answered here, before any other filter".to_string());
    }
    steps.extend(
        rule.filters
            .iter()
            .filter(|f| !matches!(f, Filter::Cors(_)))
            .map(|f| format!("filter {}", f.kind())),
    );
    if !rule.claim_headers.is_empty() {
        steps.push("route again with the JWT claims' headers".to_string());
    }
    if rule.rate_limit.is_some() {
        steps.push("admission: the rule's rate limit".to_string());
    }
    if let Some(n) = rule.max_concurrent_requests {
        steps.push(format!("admission: at most {n} requests at once"));
    }
    steps.push(if rule.session_persistence.is_some() {
        "backend: the session's, else picked by weight".to_string()
    } else {
        "backend: picked by weight".to_string()
    });
    if rule.backends.iter().any(|b| !b.filters.is_empty()) {
        steps.push("the backend's own filters".to_string());
    }
    if rule.fault.is_some() {
        steps.push("fault injection".to_string());
    }
    steps.push(format!(
        "upstream: up to {} tries (retries {})",
        rule.retry.attempts + 1,
        rule.retry.attempts
    ));
    steps
}

fn backends(rule: &CompiledRule) -> Vec<BackendSeen> {
    let total: u64 = rule.backends.iter().map(|b| u64::from(b.weight)).sum();
    let now = crate::outlier::now_ms();
    rule.backends
        .iter()
        .map(|b| BackendSeen {
            service: b.backend.key.service.to_string(),
            version: b.backend.key.version.to_string(),
            weight: b.weight,
            share: if total == 0 {
                0.0
            } else {
                (f64::from(b.weight) * 100.0 / total as f64 * 10.0).round() / 10.0
            },
            endpoints: b
                .backend
                .endpoints()
                .list
                .iter()
                .map(|e| {
                    let (eligible, why) = match e.health.state(now) {
                        EndpointState::Ready => (true, "healthy".to_string()),
                        EndpointState::Ejected { for_ms } => (
                            false,
                            format!("ejected by outlier detection for {for_ms} ms more"),
                        ),
                        EndpointState::Unhealthy => (false, "failing its health check".to_string()),
                    };
                    EndpointSeen {
                        address: e.addr.to_string(),
                        eligible,
                        why,
                    }
                })
                .collect(),
        })
        .collect()
}

impl Explanation {
    /// The explanation as a person reads it.
    pub fn to_text(&self) -> String {
        let mut out = format!(
            "{} {} on listener {} (host {:?}: {})\n",
            self.method, self.path.asked, self.listener, self.host, self.hosts
        );
        if let Some(outcome) = &self.path.outcome {
            out.push_str(&format!("path: {outcome}\n"));
            return out;
        }
        if let Some(routed) = self.path.routed.as_ref().filter(|r| **r != self.path.asked) {
            out.push_str(&format!("path after normalisation: {routed}\n"));
        }
        match &self.matched {
            Some(m) => out.push_str(&format!(
                "matches route {} rule {}: {}\n",
                m.route, m.rule, m.matcher
            )),
            None => out.push_str("matches no rule: 404 no_route\n"),
        }
        for n in &self.nearest {
            out.push_str(&format!(
                "  nearest: route {} rule {} ({})\n",
                n.route, n.rule, n.matcher
            ));
            for d in &n.differs {
                out.push_str(&format!("    - {d}\n"));
            }
        }
        for (i, s) in self.steps.iter().enumerate() {
            out.push_str(&format!("step {}: {s}\n", i + 1));
        }
        for b in &self.backends {
            out.push_str(&format!(
                "backend {}/{}: weight {} ({}%)\n",
                b.service, b.version, b.weight, b.share
            ));
            for e in &b.endpoints {
                let mark = if e.eligible {
                    "eligible"
                } else {
                    "not eligible"
                };
                out.push_str(&format!("  {} {mark}: {}\n", e.address, e.why));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_query_becomes_a_question_or_says_what_is_wrong() {
        let q = Question::from_query(
            "path=%2Fapi%3Fid%3D1&method=POST&host=a.test&header=x-tier%3A%20gold&header=x-b:c&token=t",
        );
        let q = q.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(q.target, "/api?id=1");
        assert_eq!(q.method, "POST");
        assert_eq!(q.host.as_deref(), Some("a.test"));
        assert_eq!(
            q.headers,
            [("x-tier".into(), "gold".into()), ("x-b".into(), "c".into())]
        );
        let cases = [
            ("method=GET", ExplainError::NoPath),
            (
                "path=/&header=nocolon",
                ExplainError::HeaderForm("nocolon".into()),
            ),
            (
                "path=/&verb=GET",
                ExplainError::UnknownParameter("verb".into()),
            ),
        ];
        for (query, expected) in cases {
            assert_eq!(Question::from_query(query).err(), Some(expected), "{query}");
        }
        let defaulted = Question::from_query("path=/").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(defaulted.method, "GET");
    }
}
