//! Observability outside the binary: the Prometheus scrape configs in
//! `deploy/prometheus/` and the Grafana dashboards in `deploy/grafana/`,
//! checked with the real Prometheus and promtool (Debian's `prometheus`
//! package) against what a running serin really exports.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;
use serin_testkit::process::TempDir;
use serin_testkit::raw;

use crate::common::{Program, Serin, Upstream, client, metrics_text, proxy, tool};

// ------------------------------------------------------------------ files

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn read(rel: &str) -> String {
    let path = repo().join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

const DASHBOARDS: [&str; 2] = [
    "deploy/grafana/dashboards/serin-red.json",
    "deploy/grafana/dashboards/serin-traffic-shift.json",
];

fn dashboard(rel: &str) -> Value {
    serde_json::from_str(&read(rel)).unwrap_or_else(|e| panic!("{rel} is not JSON: {e}"))
}

/// Every panel, rows' nested panels included.
fn panels(dash: &Value) -> Vec<&Value> {
    fn walk<'a>(list: &'a Value, out: &mut Vec<&'a Value>) {
        for p in list.as_array().into_iter().flatten() {
            out.push(p);
            walk(&p["panels"], out);
        }
    }
    let mut out = Vec::new();
    walk(&dash["panels"], &mut out);
    out
}

/// (panel title, expr, legendFormat) of every query of every panel.
fn panel_queries(dash: &Value) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    for p in panels(dash) {
        for t in p["targets"].as_array().into_iter().flatten() {
            out.push((
                p["title"].as_str().unwrap_or("").to_string(),
                t["expr"].as_str().unwrap_or("").to_string(),
                t["legendFormat"].as_str().unwrap_or("").to_string(),
            ));
        }
    }
    out
}

fn variables(dash: &Value) -> Vec<&Value> {
    dash["templating"]["list"]
        .as_array()
        .map(|l| l.iter().collect())
        .unwrap_or_default()
}

/// The text of a query variable (`label_values(...)`), string or object form.
fn variable_query(var: &Value) -> String {
    var["query"]["query"]
        .as_str()
        .or_else(|| var["query"].as_str())
        .or_else(|| var["definition"].as_str())
        .unwrap_or("")
        .to_string()
}

/// `label_values(SELECTOR, LABEL)` split in its two parts.
fn label_values(query: &str) -> Option<(String, String)> {
    let inner = query
        .trim()
        .strip_prefix("label_values(")?
        .strip_suffix(')')?;
    let (selector, label) = inner.rsplit_once(',')?;
    Some((selector.trim().to_string(), label.trim().to_string()))
}

// ------------------------------------------------------------------ tools

/// `promtool check config FILE`: (passed, output).
fn promtool_check(file: &Path) -> (bool, String) {
    let out = Command::new(tool("promtool"))
        .args(["check", "config"])
        .arg(file)
        .output()
        .unwrap_or_else(|e| panic!("promtool: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// `kubernetes.yml` with its pod discovery replaced by file discovery of
/// `pods` (whose targets carry the `__meta_kubernetes_*` labels pod
/// discovery would), so Prometheus builds without Kubernetes discovery (as
/// Debian's is) run the same relabelling.
fn kubernetes_with_file_sd(config: &str, pods: &Path) -> String {
    let sd = "    kubernetes_sd_configs:\n      - role: pod\n";
    assert!(
        config.contains(sd),
        "kubernetes.yml no longer has {sd:?}; update this test"
    );
    config.replace(
        sd,
        &format!(
            "    file_sd_configs:\n      - files: [\"{}\"]\n        refresh_interval: 1s\n",
            pods.display()
        ),
    )
}

/// The local config scraping `admin` every second instead of
/// 127.0.0.1:9901 every 5 s.
fn local_config_for(admin: std::net::SocketAddr) -> String {
    let text = read("deploy/prometheus/prometheus.yml");
    for must in [
        "\"127.0.0.1:9901\"",
        "scrape_interval: 5s",
        "job_name: serin",
    ] {
        assert!(
            text.contains(must),
            "prometheus.yml lost {must}; update this test"
        );
    }
    text.replace("\"127.0.0.1:9901\"", &format!("\"{admin}\""))
        .replace("scrape_interval: 5s", "scrape_interval: 1s")
        .replace("evaluation_interval: 5s", "evaluation_interval: 1s")
}

// ------------------------------------------------------------------ prometheus

/// A real Prometheus for one test, killed on drop; its log is printed when
/// the test fails.
struct Prometheus {
    _program: Program,
    base: String,
    _dir: TempDir,
}

impl Prometheus {
    /// Runs Prometheus with `config` (files it names may live in `dir`) on
    /// a free loopback port and waits until it is ready.
    async fn start(dir: TempDir, config: &str) -> Self {
        let config_path = dir.path().join("prometheus.yml");
        std::fs::write(&config_path, config).unwrap_or_else(|e| panic!("write config: {e}"));
        let program =
            Program::prometheus(&tool("prometheus"), &config_path, &dir.path().join("data"));
        let me = Self {
            base: format!("http://127.0.0.1:{}", program.port),
            _program: program,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let ready = client()
                .get(format!("{}/-/ready", me.base))
                .send()
                .await
                .is_ok_and(|r| r.status() == 200);
            if ready {
                return me;
            }
            assert!(
                Instant::now() < deadline,
                "prometheus was not ready within 20 s"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn get(&self, path: &str, params: &[(&str, &str)]) -> Value {
        let query: Vec<String> = params
            .iter()
            .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
            .collect();
        let url = format!("{}{path}?{}", self.base, query.join("&"));
        let resp = client()
            .get(&url)
            .send()
            .await
            .unwrap_or_else(|e| panic!("prometheus {url}: {e}"));
        let text = resp.text().await.unwrap_or_default();
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("prometheus {url}: {e}: {text}"))
    }

    /// An instant query; the whole answer (`status`, `data` or `error`).
    async fn query(&self, promql: &str) -> Value {
        self.get("/api/v1/query", &[("query", promql)]).await
    }

    /// An instant query that must succeed; its vector as (labels, value).
    async fn vector(&self, promql: &str) -> Vec<(BTreeMap<String, String>, f64)> {
        let answer = self.query(promql).await;
        assert_eq!(answer["status"], "success", "{promql}: {answer}");
        samples(&answer)
    }
}

/// Percent-encoding for a query string.
fn encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The samples of an instant vector answer.
fn samples(answer: &Value) -> Vec<(BTreeMap<String, String>, f64)> {
    answer["data"]["result"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| {
            let labels = r["metric"]
                .as_object()
                .into_iter()
                .flatten()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string()))
                .collect();
            let value = r["value"][1]
                .as_str()
                .and_then(|v| v.parse().ok())
                .unwrap_or(f64::NAN);
            (labels, value)
        })
        .collect()
}

fn by_label(samples: &[(BTreeMap<String, String>, f64)], label: &str) -> BTreeMap<String, f64> {
    samples
        .iter()
        .map(|(l, v)| (l.get(label).cloned().unwrap_or_default(), *v))
        .collect()
}

// ------------------------------------------------------------------ promql

const AGGREGATIONS: &[&str] = &[
    "sum",
    "avg",
    "count",
    "min",
    "max",
    "group",
    "stddev",
    "stdvar",
    "topk",
    "bottomk",
    "quantile",
    "count_values",
    "limitk",
    "limit_ratio",
];
const KEYWORDS: &[&str] = &[
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "offset",
    "and",
    "or",
    "unless",
    "atan2",
    "inf",
    "nan",
];
/// Keywords followed by a list of label names in parentheses.
const LABEL_LISTS: &[&str] = &[
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];

/// What a PromQL expression refers to.
#[derive(Debug, Default)]
struct Refs {
    /// Metric selectors: name and the label names of its matchers.
    selectors: Vec<(String, Vec<String>)>,
    /// Label names in `by (...)`, `on (...)` and the like.
    grouping: BTreeSet<String>,
    /// Selectors with no metric name (`{__name__=...}`), which this check
    /// cannot follow.
    nameless: usize,
}

fn is_ident_start(c: u8) -> bool {
    c.is_ascii_alphabetic() || c == b'_' || c == b':'
}

fn is_ident(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_' || c == b':'
}

/// The index just past the string literal opening at `i`.
fn skip_string(s: &[u8], i: usize) -> usize {
    let quote = s[i];
    let mut j = i + 1;
    while j < s.len() && s[j] != quote {
        if s[j] == b'\\' && quote != b'`' {
            j += 1;
        }
        j += 1;
    }
    j + 1
}

/// The index of the first non-space byte at or after `i`.
fn skip_space(s: &[u8], mut i: usize) -> usize {
    while i < s.len() && s[i].is_ascii_whitespace() {
        i += 1;
    }
    i
}

/// The label names of the matchers in `{...}` opening at `i`, and the index
/// just past the closing brace.
fn matchers(s: &[u8], i: usize) -> (Vec<String>, usize) {
    let mut labels = Vec::new();
    let mut j = i + 1;
    let mut expect_label = true;
    while j < s.len() && s[j] != b'}' {
        let c = s[j];
        if c == b'"' || c == b'\'' || c == b'`' {
            j = skip_string(s, j);
        } else if c == b',' {
            expect_label = true;
            j += 1;
        } else if expect_label && is_ident_start(c) {
            let start = j;
            while j < s.len() && is_ident(s[j]) {
                j += 1;
            }
            labels.push(String::from_utf8_lossy(&s[start..j]).into_owned());
            expect_label = false;
        } else {
            j += 1;
        }
    }
    (labels, j + 1)
}

/// A small PromQL tokenizer: finds the metric names an expression selects
/// (identifiers that are not functions, keywords, label names, strings,
/// numbers, durations or Grafana variables).
fn promql_refs(expr: &str) -> Refs {
    let s = expr.as_bytes();
    let mut refs = Refs::default();
    let mut i = 0;
    while i < s.len() {
        let c = s[i];
        if c == b'"' || c == b'\'' || c == b'`' {
            i = skip_string(s, i);
        } else if c == b'$' {
            // A Grafana variable: $name or ${name}.
            i += 1;
            if s.get(i) == Some(&b'{') {
                while i < s.len() && s[i] != b'}' {
                    i += 1;
                }
                i += 1;
            } else {
                while i < s.len() && is_ident(s[i]) {
                    i += 1;
                }
            }
        } else if c == b'[' {
            // A range or subquery: durations and variables only.
            while i < s.len() && s[i] != b']' {
                i += 1;
            }
            i += 1;
        } else if c == b'{' {
            refs.nameless += 1;
            i = matchers(s, i).1;
        } else if c.is_ascii_digit() || (c == b'.' && s.get(i + 1).is_some_and(u8::is_ascii_digit))
        {
            // A number or a duration (0.95, 1e3, 5m).
            while i < s.len() && (is_ident(s[i]) || s[i] == b'.') {
                i += 1;
            }
        } else if is_ident_start(c) {
            let start = i;
            while i < s.len() && is_ident(s[i]) {
                i += 1;
            }
            let word = String::from_utf8_lossy(&s[start..i]).into_owned();
            let lower = word.to_ascii_lowercase();
            let next = skip_space(s, i);
            if LABEL_LISTS.contains(&lower.as_str()) {
                if s.get(next) == Some(&b'(') {
                    let close = s[next..]
                        .iter()
                        .position(|&b| b == b')')
                        .map_or(s.len(), |p| next + p);
                    for l in String::from_utf8_lossy(&s[next + 1..close]).split(',') {
                        let l = l.trim();
                        if !l.is_empty() {
                            refs.grouping.insert(l.to_string());
                        }
                    }
                    i = close + 1;
                }
            } else if s.get(next) == Some(&b'(') {
                // A function or an aggregation: not a metric.
            } else if AGGREGATIONS.contains(&lower.as_str()) || KEYWORDS.contains(&lower.as_str()) {
                // `sum by (...)`, `or`, `bool`...
            } else if s.get(next) == Some(&b'{') {
                let (labels, end) = matchers(s, next);
                refs.selectors.push((word, labels));
                i = end;
            } else {
                refs.selectors.push((word, Vec::new()));
            }
        } else {
            i += 1;
        }
    }
    refs
}

// ------------------------------------------------------------------ /metrics

/// What a serin's /metrics says: families with their types, and each
/// sample name with the label names seen on it.
struct Exported {
    types: BTreeMap<String, String>,
    series: BTreeMap<String, BTreeSet<String>>,
}

fn parse_exposition(text: &str) -> Exported {
    let mut types = BTreeMap::new();
    let mut series: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split_whitespace();
            if let (Some(name), Some(kind)) = (parts.next(), parts.next()) {
                types.insert(name.to_string(), kind.to_string());
            }
            continue;
        }
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let end = line.find(['{', ' ']).unwrap_or(line.len());
        let name = line[..end].to_string();
        let labels = if line[end..].starts_with('{') {
            matchers(&line.as_bytes()[end..], 0).0
        } else {
            Vec::new()
        };
        series.entry(name).or_default().extend(labels);
    }
    Exported { types, series }
}

impl Exported {
    /// The metric family a sample name belongs to and its type: a counter's
    /// `_total`, a histogram's `_bucket`/`_sum`/`_count` (and nothing
    /// else: `_count` of a counter is not a series).
    fn family_of(&self, name: &str) -> Option<(String, String)> {
        if let Some(kind) = self.types.get(name)
            && kind != "histogram"
            && kind != "summary"
        {
            return Some((name.to_string(), kind.clone()));
        }
        let suffixes: &[(&str, &[&str])] = &[
            ("_total", &["counter"]),
            ("_bucket", &["histogram"]),
            ("_sum", &["histogram", "summary"]),
            ("_count", &["histogram", "summary"]),
            ("_created", &["counter", "histogram", "summary"]),
        ];
        for (suffix, kinds) in suffixes {
            if let Some(base) = name.strip_suffix(suffix)
                && let Some(kind) = self.types.get(base)
                && kinds.contains(&kind.as_str())
            {
                return Some((base.to_string(), kind.clone()));
            }
        }
        None
    }

    /// Problems with one expression (or variable query) against /metrics.
    fn check(&self, what: &str, expr: &str, problems: &mut Vec<String>) {
        let refs = promql_refs(expr);
        if refs.selectors.is_empty() {
            problems.push(format!("{what}: selects no metric: {expr}"));
        }
        if refs.nameless > 0 {
            problems.push(format!(
                "{what}: a selector without a metric name cannot be checked: {expr}"
            ));
        }
        let mut known_labels: BTreeSet<String> = BTreeSet::new();
        for (name, labels) in &refs.selectors {
            let Some((family, kind)) = self.family_of(name) else {
                let hint = match self.types.get(name).map(String::as_str) {
                    Some("histogram") => " (a histogram: use _bucket, _sum or _count)",
                    _ if self.types.contains_key(&format!("{name}_total"))
                        || self.types.contains_key(name.trim_end_matches("_total")) =>
                    {
                        " (a counter: the series is NAME_total)"
                    }
                    _ => "",
                };
                problems.push(format!(
                    "{what}: `{name}` is not a metric serin exports{hint}: {expr}"
                ));
                continue;
            };
            let Some(seen) = self.series.get(name) else {
                problems.push(format!(
                    "{what}: `{name}` ({kind} {family}) has no series in /metrics: {expr}"
                ));
                continue;
            };
            for l in labels {
                if l != "__name__" && !seen.contains(l) {
                    problems.push(format!(
                        "{what}: `{name}` has no label `{l}` (it has {seen:?}): {expr}"
                    ));
                }
            }
            if name.ends_with("_bucket")
                && kind == "histogram"
                && (!expr.contains("histogram_quantile(") || !refs.grouping.contains("le"))
            {
                problems.push(format!(
                    "{what}: `{name}` outside histogram_quantile(..., sum by (le, ...)): {expr}"
                ));
            }
            known_labels.extend(seen.iter().cloned());
        }
        for l in &refs.grouping {
            if !known_labels.contains(l) && !refs.selectors.is_empty() {
                problems.push(format!(
                    "{what}: grouping label `{l}` is on none of the metrics used: {expr}"
                ));
            }
        }
    }
}

// ------------------------------------------------------------------ traffic

/// Requests sent in the background until dropped.
struct Load {
    stop: Arc<AtomicBool>,
}

impl Load {
    fn new() -> Self {
        Self {
            stop: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Sends GET `url` with `headers` every `every` (one at a time).
    fn spawn(&self, url: String, headers: &[(&'static str, &'static str)], every: Duration) {
        let stop = self.stop.clone();
        let headers = headers.to_vec();
        tokio::spawn(async move {
            let http = client();
            while !stop.load(Ordering::SeqCst) {
                let mut req = http.get(&url);
                for (k, v) in &headers {
                    req = req.header(*k, *v);
                }
                if let Ok(r) = req.send().await {
                    let _ = r.bytes().await;
                }
                tokio::time::sleep(every).await;
            }
        });
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn split_config(v1: &[String], v2: &[String], route_extra: &str) -> String {
    split_config_with(v1, v2, route_extra, "", "")
}

/// [`split_config`] with more services after `svc` and more routes after
/// `shift` (YAML list items, indented as in the config).
fn split_config_with(
    v1: &[String],
    v2: &[String],
    route_extra: &str,
    more_services: &str,
    more_routes: &str,
) -> String {
    let list = |eps: &[String]| {
        eps.iter()
            .map(|e| format!("\"{e}\""))
            .collect::<Vec<_>>()
            .join(", ")
    };
    format!(
        r#"
listeners:
  - name: gw
    address: 127.0.0.1:0
services:
  - name: svc
    loadBalancer: {{type: RoundRobin}}
    versions:
      - name: v1
        endpoints: [{}]
      - name: v2
        endpoints: [{}]
{more_services}
routes:
  - name: shift
    rules:
      - backendRefs:
          - {{name: svc, version: v1, weight: 80}}
          - {{name: svc, version: v2, weight: 20}}
{route_extra}
{more_routes}
"#,
        list(v1),
        list(v2)
    )
}

/// Upstreams, services, routes and traffic that make every resilience and
/// mirror counter count: a circuit breaker overflowing, an endpoint
/// ejected, a spent retry budget, a route shedding load, a rate limit and
/// a fault hit, and a shadow answering now like the primary, now not.
struct Incidents {
    good: Upstream,
    /// 500 to everything: ejected by outlier detection.
    erroring: Upstream,
    /// 503 to everything: retried until the budget is spent.
    unavailable: Upstream,
    /// The shadow (mirror) version: 500 unless asked for another status.
    shadow: Upstream,
}

impl Incidents {
    fn start() -> Self {
        let me = Self {
            good: Upstream::start("good"),
            erroring: Upstream::start("erroring"),
            unavailable: Upstream::start("unavailable"),
            shadow: Upstream::start("shadow"),
        };
        me.erroring.set_status(500);
        me.unavailable.set_status(503);
        me.shadow.set_status(500);
        me
    }

    fn services(&self) -> String {
        let (good, erroring, unavailable, shadow) = (
            self.good.addr,
            self.erroring.addr,
            self.unavailable.addr,
            self.shadow.addr,
        );
        format!(
            r#"  - name: breaker
    circuitBreaker: {{maxRequests: 1}}
    versions: [{{name: v1, endpoints: ["{good}"]}}]
  - name: flaky
    loadBalancer: {{type: RoundRobin}}
    outlierDetection: {{consecutive5xx: 1}}
    versions: [{{name: v1, endpoints: ["{good}", "{erroring}"]}}]
  - name: failing
    versions: [{{name: v1, endpoints: ["{unavailable}"]}}]
  - name: shop
    versions:
      - {{name: v1, endpoints: ["{good}"]}}
      - {{name: v2, endpoints: ["{shadow}"]}}"#
        )
    }

    /// One route per incident, on its own path.
    const ROUTES: &str = r#"  - name: breaker
    rules:
      - matches: [{path: {type: PathPrefix, value: /breaker}}]
        backendRefs: [{name: breaker, version: v1}]
  - name: flaky
    rules:
      - matches: [{path: {type: PathPrefix, value: /flaky}}]
        backendRefs: [{name: flaky, version: v1}]
  - name: budget
    rules:
      - matches: [{path: {type: PathPrefix, value: /budget}}]
        backendRefs: [{name: failing, version: v1}]
        retry: {attempts: 3, codes: [503], backoff: 0ms, budget: {percent: 0, minRetriesPerSecond: 0}}
  - name: shed
    rules:
      - matches: [{path: {type: PathPrefix, value: /shed}}]
        backendRefs: [{name: shop, version: v1}]
        maxConcurrentRequests: 1
  - name: limited
    rules:
      - matches: [{path: {type: PathPrefix, value: /limited}}]
        backendRefs: [{name: shop, version: v1}]
        rateLimit: {requests: 1, unit: hour}
  - name: fault
    rules:
      - matches: [{path: {type: PathPrefix, value: /fault}}]
        backendRefs: [{name: shop, version: v1}]
        fault: {abort: {httpStatus: 503, percent: 100}}
  - name: mirror
    rules:
      - matches: [{path: {type: PathPrefix, value: /mirror}}]
        filters:
          - type: RequestMirror
            requestMirror: {backendRef: {name: shop, version: v2}}
        backendRefs: [{name: shop, version: v1}]"#;

    /// Series that count once the traffic of [`Incidents::drive`] flows.
    const COUNTED: [&str; 8] = [
        r#"serin_circuit_breaker_overflows_total{service="breaker",version="v1",limit="maxRequests"}"#,
        r#"serin_outlier_ejections_total{service="flaky",version="v1"}"#,
        r#"serin_retry_budget_exhausted_total{route="budget",service="failing",version="v1"}"#,
        r#"serin_load_shed_total{scope="route",name="shed"}"#,
        r#"serin_rate_limited_total{scope="local",name="limited"}"#,
        r#"serin_faults_injected_total{route="fault",service="shop",version="v1"}"#,
        r#"serin_mirror_responses_total{service="shop",version="v2",result="same"}"#,
        r#"serin_mirror_responses_total{service="shop",version="v2",result="different"}"#,
    ];

    /// Keeps every incident happening, on the listener at `base`.
    fn drive(load: &Load, base: &str) {
        let at = |path: &str| format!("{base}{path}");
        // Two slow requests at a time against a limit of one.
        let slow = [("x-test-delay-ms", "300")];
        for _ in 0..2 {
            load.spawn(at("/breaker"), &slow, Duration::from_millis(20));
            load.spawn(at("/shed"), &slow, Duration::from_millis(20));
        }
        load.spawn(at("/flaky"), &[], Duration::from_millis(50));
        load.spawn(at("/budget"), &[], Duration::from_millis(50));
        load.spawn(at("/limited"), &[], Duration::from_millis(100));
        load.spawn(at("/fault"), &[], Duration::from_millis(50));
        // The shadow answers 500: different from the primary's 200, unless
        // both are asked for 200 (same), at the same pace.
        load.spawn(at("/mirror"), &[], Duration::from_millis(20));
        load.spawn(
            at("/mirror"),
            &[("x-test-status", "200")],
            Duration::from_millis(20),
        );
    }
}

/// Grafana's variables in `text` replaced by `values` (`$name`, `${name}`).
fn substitute(text: &str, values: &BTreeMap<String, String>) -> String {
    let s = text.as_bytes();
    let mut out = String::new();
    let mut i = 0;
    while i < s.len() {
        if s[i] == b'$' {
            let (name, end) = if s.get(i + 1) == Some(&b'{') {
                let close = s[i..]
                    .iter()
                    .position(|&b| b == b'}')
                    .map_or(s.len(), |p| i + p);
                (text[i + 2..close].to_string(), close + 1)
            } else {
                let mut j = i + 1;
                while j < s.len() && is_ident(s[j]) {
                    j += 1;
                }
                (text[i + 1..j].to_string(), j)
            };
            let value = values
                .get(&name)
                .unwrap_or_else(|| panic!("no value for ${name} in {text}"));
            out.push_str(value);
            i = end;
        } else {
            let ch = text[i..].chars().next().unwrap_or_default();
            out.push(ch);
            i += ch.len_utf8();
        }
    }
    out
}

/// Grafana's built-in variables as the tests set them.
fn builtins() -> BTreeMap<String, String> {
    [
        ("__rate_interval", "30s"),
        ("__interval", "5s"),
        ("__range", "5m"),
        ("datasource", "prometheus"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

// ------------------------------------------------------------------ tests

#[test]
fn scrape_configs_pass_promtool() {
    let local = repo().join("deploy/prometheus/prometheus.yml");
    let (ok, out) = promtool_check(&local);
    assert!(ok, "promtool check config prometheus.yml:\n{out}");
    let text = read("deploy/prometheus/prometheus.yml");
    for must in [
        "\"127.0.0.1:9901\"",
        "scrape_interval: 5s",
        "metrics_path: /metrics",
    ] {
        assert!(text.contains(must), "prometheus.yml: no {must}");
    }

    let kube = repo().join("deploy/prometheus/kubernetes.yml");
    let (ok, out) = promtool_check(&kube);
    if !ok {
        // Debian builds Prometheus without Kubernetes discovery, so its
        // promtool does not know `kubernetes_sd_configs`. Everything else
        // (the relabelling) is checked with file discovery in its place;
        // the relabelling itself runs in
        // kubernetes_relabelling_labels_annotated_pods_and_keeps_serins_version.
        assert!(
            out.contains("field kubernetes_sd_configs not found"),
            "promtool check config kubernetes.yml:\n{out}"
        );
        let dir = TempDir::new("serin-promtool");
        let variant = dir.path().join("kubernetes.yml");
        std::fs::write(
            &variant,
            kubernetes_with_file_sd(
                &read("deploy/prometheus/kubernetes.yml"),
                Path::new("pods.json"),
            ),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let (ok, out) = promtool_check(&variant);
        assert!(
            ok,
            "promtool check config kubernetes.yml (pod discovery as file discovery, \
             this promtool has no Kubernetes discovery):\n{out}"
        );
    }
    let text = read("deploy/prometheus/kubernetes.yml");
    for must in [
        "__meta_kubernetes_pod_annotation_prometheus_io_scrape",
        "__meta_kubernetes_pod_annotation_prometheus_io_path",
        "__meta_kubernetes_pod_annotation_prometheus_io_port",
    ] {
        assert!(text.contains(must), "kubernetes.yml: no {must}");
    }
}

/// The real Prometheus scrapes serin while traffic is split 80/20 and gives
/// the request rate per version back through PromQL, as does the traffic
/// shift dashboard's share panel.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_reads_the_request_rate_per_version_back() {
    let v1 = Upstream::start("v1");
    let v2 = Upstream::start("v2");
    let serin = proxy(&split_config(
        &[v1.addr.to_string()],
        &[v2.addr.to_string()],
        "",
    ));
    let prom = Prometheus::start(TempDir::new("serin-prom"), &local_config_for(serin.admin)).await;
    let load = Load::new();
    load.spawn(serin.url("gw"), &[], Duration::from_millis(3));

    let rate = r#"sum by (version) (rate(serin_requests_total{job="serin", route="shift"}[30s]))"#;
    let count =
        r#"sum by (version) (increase(serin_requests_total{job="serin", route="shift"}[30s]))"#;
    let deadline = Instant::now() + Duration::from_secs(60);
    let rates = loop {
        let rates = by_label(&prom.vector(rate).await, "version");
        let counts = by_label(&prom.vector(count).await, "version");
        let both = ["v1", "v2"]
            .iter()
            .all(|v| rates.get(*v).is_some_and(|r| *r > 0.0));
        if both && counts.values().sum::<f64>() >= 200.0 {
            break rates;
        }
        assert!(
            Instant::now() < deadline,
            "no request rate for both versions within 60 s: rates {rates:?}, counts {counts:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let share_v2 = rates["v2"] / (rates["v1"] + rates["v2"]);
    assert!(
        (0.1..=0.3).contains(&share_v2),
        "weights 80/20, but v2 has {share_v2:.3} of the rate: {rates:?}"
    );

    // The dashboard's own query, for this service and route.
    let dash = dashboard("deploy/grafana/dashboards/serin-traffic-shift.json");
    let (_, expr, _) = panel_queries(&dash)
        .into_iter()
        .find(|(title, _, _)| title == "Share of requests per version")
        .unwrap_or_else(|| panic!("no panel \"Share of requests per version\""));
    let mut values = builtins();
    values.insert("service".into(), "svc".into());
    values.insert("route".into(), "shift".into());
    let shares = by_label(&prom.vector(&substitute(&expr, &values)).await, "version");
    let total: f64 = shares.values().sum();
    assert!(
        (total - 1.0).abs() < 1e-6,
        "shares do not add up to 100%: {shares:?}"
    );
    let v2_share = shares.get("v2").copied().unwrap_or(0.0);
    assert!(
        (0.1..=0.3).contains(&v2_share),
        "share panel: v2 at {v2_share:.3}, weights 80/20: {shares:?}"
    );
    drop(load);
    drop(prom);
}

/// kubernetes.yml's relabelling, run by the real Prometheus on pods as pod
/// discovery describes them: only annotated, running pods are scraped, at
/// the annotated port and path, with namespace/pod/app/pod_version labels,
/// and serin's own `version` label stays as it is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubernetes_relabelling_labels_annotated_pods_and_keeps_serins_version() {
    let up = Upstream::start("v1");
    let serin = proxy(&split_config(
        &[up.addr.to_string()],
        &[up.addr.to_string()],
        "",
    ));
    for _ in 0..10 {
        let r = client()
            .get(serin.url("gw"))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.status(), 200);
    }
    let port = serin.admin.port().to_string();
    let pod = |name: &str, phase: &str, annotations: &[(&str, &str)]| {
        let mut labels = serde_json::json!({
            "__meta_kubernetes_namespace": "shop",
            "__meta_kubernetes_pod_name": name,
            "__meta_kubernetes_pod_label_app": "gateway",
            "__meta_kubernetes_pod_label_version": "v7",
            "__meta_kubernetes_pod_phase": phase,
        });
        for (k, v) in annotations {
            labels[format!("__meta_kubernetes_pod_annotation_prometheus_io_{k}")] = (*v).into();
        }
        // Pod discovery's address: the pod IP and a container port.
        serde_json::json!({"targets": ["127.0.0.1:8080"], "labels": labels})
    };
    let pods = serde_json::json!([
        pod(
            "gateway-7c9d-x2x1p",
            "Running",
            &[
                ("scrape", "true"),
                ("port", port.as_str()),
                ("path", "/metrics")
            ]
        ),
        pod(
            "gateway-7c9d-k4n2q",
            "Running",
            &[
                ("scrape", "true"),
                ("port", port.as_str()),
                ("path", "/elsewhere")
            ]
        ),
        pod("gateway-7c9d-plain", "Running", &[]),
        pod(
            "gateway-7c9d-off",
            "Running",
            &[("scrape", "false"), ("port", port.as_str())]
        ),
        pod(
            "gateway-7c9d-new",
            "Pending",
            &[("scrape", "true"), ("port", port.as_str())]
        ),
    ]);
    let dir = TempDir::new("serin-prom-k8s");
    let pods_file = dir.path().join("pods.json");
    std::fs::write(&pods_file, pods.to_string()).unwrap_or_else(|e| panic!("{e}"));
    let config = kubernetes_with_file_sd(&read("deploy/prometheus/kubernetes.yml"), &pods_file)
        .replace("scrape_interval: 15s", "scrape_interval: 1s");
    let prom = Prometheus::start(dir, &config).await;

    let deadline = Instant::now() + Duration::from_secs(30);
    let targets = loop {
        let t = prom.get("/api/v1/targets", &[]).await;
        let active = t["data"]["activeTargets"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if active.len() >= 2 {
            break t;
        }
        assert!(Instant::now() < deadline, "no targets within 30 s: {t}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let active = targets["data"]["activeTargets"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let mut urls: Vec<String> = active
        .iter()
        .map(|t| t["scrapeUrl"].as_str().unwrap_or("").to_string())
        .collect();
    urls.sort();
    assert_eq!(
        urls,
        vec![
            format!("http://127.0.0.1:{port}/elsewhere"),
            format!("http://127.0.0.1:{port}/metrics"),
        ],
        "scraped: only the annotated running pods, at their annotated port and path: {targets}"
    );
    let dropped = targets["data"]["droppedTargets"]
        .as_array()
        .map_or(0, Vec::len);
    assert_eq!(
        dropped, 3,
        "not annotated, scrape=false, Pending: {targets}"
    );
    let scraped = active
        .iter()
        .find(|t| t["labels"]["pod"] == "gateway-7c9d-x2x1p")
        .unwrap_or_else(|| panic!("no target for the pod: {targets}"));
    for (label, value) in [
        ("namespace", "shop"),
        ("pod", "gateway-7c9d-x2x1p"),
        ("app", "gateway"),
        ("pod_version", "v7"),
    ] {
        assert_eq!(scraped["labels"][label], value, "{label}: {scraped}");
    }

    let series = r#"serin_requests_total{job="kubernetes-pods", namespace="shop", pod="gateway-7c9d-x2x1p", app="gateway", pod_version="v7", route="shift", service="svc"}"#;
    let deadline = Instant::now() + Duration::from_secs(30);
    let found = loop {
        let found = prom.vector(series).await;
        if !found.is_empty() {
            break found;
        }
        assert!(Instant::now() < deadline, "no {series} within 30 s");
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let versions: BTreeSet<String> = found
        .iter()
        .filter_map(|(l, _)| l.get("version").cloned())
        .collect();
    assert!(
        versions.iter().all(|v| v == "v1" || v == "v2") && !versions.is_empty(),
        "serin's version label must be the backend version, not the pod's: {found:?}"
    );
    let renamed = prom.vector(r#"{exported_version=~".+"}"#).await;
    assert!(renamed.is_empty(), "labels clashed: {renamed:?}");
}

/// The dashboards are well-formed Grafana JSON that provisioning can load.
#[test]
fn dashboards_are_valid_provisionable_grafana_json() {
    let mut uids = BTreeSet::new();
    for rel in DASHBOARDS {
        let dash = dashboard(rel);
        let uid = dash["uid"].as_str().unwrap_or("");
        assert!(
            !uid.is_empty() && uid.len() <= 40 && uids.insert(uid.to_string()),
            "{rel}: uid {uid:?} missing, too long or not unique"
        );
        assert!(
            dash["title"].as_str().is_some_and(|t| !t.is_empty()),
            "{rel}: no title"
        );
        let schema = dash["schemaVersion"].as_u64().unwrap_or(0);
        assert!((36..=41).contains(&schema), "{rel}: schemaVersion {schema}");
        assert!(
            dash["id"].is_null(),
            "{rel}: id must be null for provisioning"
        );
        assert!(
            dash.get("__inputs").is_none(),
            "{rel}: __inputs is for import, not provisioning"
        );

        let vars = variables(&dash);
        let mut defined = builtins();
        for v in &vars {
            let name = v["name"].as_str().unwrap_or("");
            assert!(!name.is_empty(), "{rel}: variable without a name");
            defined.insert(name.to_string(), String::new());
            match v["type"].as_str() {
                Some("datasource") => assert_eq!(v["query"], "prometheus", "{rel}: {v}"),
                Some("query") => {
                    let q = variable_query(v);
                    assert!(
                        label_values(&q).is_some(),
                        "{rel}: variable {name}: not label_values(SELECTOR, LABEL): {q}"
                    );
                    assert_eq!(v["datasource"]["uid"], "${datasource}", "{rel}: {name}");
                }
                other => panic!("{rel}: variable {name} of unexpected type {other:?}"),
            }
        }
        for name in ["datasource", "service"] {
            assert!(
                vars.iter().any(|v| v["name"] == name),
                "{rel}: no variable {name}"
            );
        }

        let mut ids = BTreeSet::new();
        let mut boxes: Vec<(String, u64, u64, u64, u64)> = Vec::new();
        for p in panels(&dash) {
            let title = p["title"].as_str().unwrap_or("").to_string();
            let id = p["id"].as_u64().unwrap_or(0);
            assert!(
                id > 0 && ids.insert(id),
                "{rel}: panel {title:?}: id {id} missing or reused"
            );
            let kind = p["type"].as_str().unwrap_or("");
            assert!(
                [
                    "row",
                    "timeseries",
                    "stat",
                    "bargauge",
                    "gauge",
                    "piechart",
                    "table",
                    "text"
                ]
                .contains(&kind),
                "{rel}: panel {title:?}: type {kind:?}"
            );
            let g = &p["gridPos"];
            let (x, y, w, h) = (
                g["x"].as_u64().unwrap_or(99),
                g["y"].as_u64().unwrap_or(0),
                g["w"].as_u64().unwrap_or(0),
                g["h"].as_u64().unwrap_or(0),
            );
            assert!(
                w > 0 && h > 0 && x + w <= 24,
                "{rel}: panel {title:?}: gridPos {g}"
            );
            for (other, ox, oy, ow, oh) in &boxes {
                let overlap = x < ox + ow && *ox < x + w && y < oy + oh && *oy < y + h;
                assert!(!overlap, "{rel}: panels {title:?} and {other:?} overlap");
            }
            boxes.push((title.clone(), x, y, w, h));
            if kind == "row" {
                continue;
            }
            assert!(!title.is_empty(), "{rel}: a panel without a title");
            assert_eq!(p["datasource"]["uid"], "${datasource}", "{rel}: {title}");
            let targets = p["targets"].as_array().cloned().unwrap_or_default();
            assert!(!targets.is_empty(), "{rel}: panel {title:?} has no query");
            let mut ref_ids = BTreeSet::new();
            for t in &targets {
                let ref_id = t["refId"].as_str().unwrap_or("");
                assert!(
                    ref_ids.insert(ref_id.to_string()),
                    "{rel}: {title}: refId {ref_id:?} reused"
                );
                assert_eq!(t["datasource"]["uid"], "${datasource}", "{rel}: {title}");
                let expr = t["expr"].as_str().unwrap_or("");
                assert!(!expr.is_empty(), "{rel}: {title}: empty expr");
                // Every variable is defined (substitute panics otherwise).
                let _ = substitute(expr, &defined);
                let _ = substitute(&title, &defined);
                // A legend names only labels the query keeps.
                let legend = t["legendFormat"].as_str().unwrap_or("");
                let refs = promql_refs(expr);
                for part in legend.split("{{").skip(1) {
                    let label = part.split("}}").next().unwrap_or("").trim();
                    assert!(
                        refs.grouping.contains(label),
                        "{rel}: {title}: legend {{{{{label}}}}} but the query keeps only {:?}: {expr}",
                        refs.grouping
                    );
                }
            }
        }
    }

    let ds = read("deploy/grafana/provisioning/datasources/prometheus.yml");
    for must in [
        "apiVersion: 1",
        "type: prometheus",
        "uid: serin-prometheus",
        "url: ",
    ] {
        assert!(ds.contains(must), "datasource provisioning: no {must:?}");
    }
    let provider = read("deploy/grafana/provisioning/dashboards/serin.yml");
    for must in ["apiVersion: 1", "type: file", "path: "] {
        assert!(
            provider.contains(must),
            "dashboard provisioning: no {must:?}"
        );
    }
}

/// The dashboards' queries name only metrics (and labels) a running serin
/// really exports, with every series made to exist, and each of them runs
/// in the real Prometheus without error and returns data.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_queries_use_only_exported_metrics_and_run_in_prometheus() {
    let v1 = Upstream::start("v1");
    let v2 = Upstream::start("v2");
    let dead_port = serin_testkit::DeadPort::new();
    let dead = dead_port.addr;
    let incidents = Incidents::start();
    // v2 has a dead endpoint: connect failures, each retried on the other.
    let serin: Serin = proxy(&split_config_with(
        &[v1.addr.to_string()],
        &[dead.to_string(), v2.addr.to_string()],
        "        timeouts: {request: 400ms}",
        &incidents.services(),
        Incidents::ROUTES,
    ));
    let prom = Prometheus::start(
        TempDir::new("serin-prom-dash"),
        &local_config_for(serin.admin),
    )
    .await;

    // Every series into existence, and kept moving for rate().
    let load = Load::new();
    load.spawn(serin.url("gw"), &[], Duration::from_millis(5));
    load.spawn(
        serin.url("gw"),
        &[("x-test-status", "503")],
        Duration::from_millis(50),
    );
    load.spawn(
        serin.url("gw"),
        &[("x-test-delay-ms", "1000")],
        Duration::from_millis(200),
    );
    Incidents::drive(&load, &serin.url("gw"));
    let gw = serin.listener("gw");
    let rejected = tokio::task::spawn_blocking(move || {
        raw::exchange_closes(
            gw,
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello",
        )
        .0
    })
    .await
    .unwrap_or_default();
    assert!(rejected.starts_with("HTTP/1.1 400"), "{rejected}");
    let reload = client()
        .post(serin.admin_url("/reload"))
        .header("content-type", "application/json")
        .send()
        .await
        .unwrap_or_else(|e| panic!("reload: {e}"));
    assert_eq!(reload.status(), 200, "reload");
    // A canary of svc that judges a window a second and stays at the
    // routes' own split (too few requests for any verdict but
    // inconclusive, and never halting), so the canary's series exist.
    let canary = client()
        .post(serin.admin_url("/canary/svc/start"))
        .json(&serde_json::json!({
            "to": "v2", "steps": [20, 50], "interval": "1s",
            "min_requests": 1_000_000_000u64, "inconclusive_limit": 1_000_000u32,
        }))
        .send()
        .await
        .unwrap_or_else(|e| panic!("canary start: {e}"));
    assert_eq!(canary.status(), 200, "canary start");

    let wanted = [
        "serin_requests_total",
        "serin_request_duration_seconds_bucket",
        "serin_upstream_connect_failures_total",
        "serin_retries_total",
        "serin_timeouts_total",
        "serin_active_connections",
        "serin_downstream_rejected_total",
        "serin_config_reloads_total",
        "serin_circuit_breaker_overflows_total",
        "serin_load_shed_total",
        "serin_faults_injected_total",
        "serin_outlier_ejections_total",
        "serin_retry_budget_exhausted_total",
        "serin_mirror_responses_total",
        "serin_rate_limited_total",
        "serin_canary_phase",
        "serin_canary_weight",
        "serin_canary_check_value",
        "serin_canary_check_verdict",
        "serin_canary_waiting",
    ];
    // Series that must have counted something, not only exist.
    let counting: Vec<&str> = ["serin_upstream_connect_failures_total{"]
        .into_iter()
        .chain(Incidents::COUNTED)
        .collect();
    let deadline = Instant::now() + Duration::from_secs(20);
    let exported = loop {
        let text = metrics_text(&serin).await;
        let exported = parse_exposition(&text);
        let missing: Vec<&str> = wanted
            .iter()
            .copied()
            .filter(|n| !exported.series.contains_key(*n))
            .collect();
        let not_counted: Vec<&str> = counting
            .iter()
            .copied()
            .filter(|series| {
                !text
                    .lines()
                    .any(|l| l.starts_with(series) && !l.ends_with(" 0"))
            })
            .collect();
        if missing.is_empty() && not_counted.is_empty() {
            break exported;
        }
        assert!(
            Instant::now() < deadline,
            "series still missing after 20 s of traffic: {missing:?}, \
             or not counting: {not_counted:?}:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };

    // Names and labels against /metrics.
    let mut problems = Vec::new();
    let mut queries: Vec<(String, String)> = Vec::new();
    let mut used_families = BTreeSet::new();
    for rel in DASHBOARDS {
        let dash = dashboard(rel);
        for v in variables(&dash) {
            if v["type"] != "query" {
                continue;
            }
            let q = variable_query(v);
            let what = format!("{rel}: variable {}", v["name"]);
            let Some((selector, label)) = label_values(&q) else {
                problems.push(format!("{what}: not label_values(SELECTOR, LABEL): {q}"));
                continue;
            };
            exported.check(&what, &selector, &mut problems);
            for (name, _) in promql_refs(&selector).selectors {
                if !exported
                    .series
                    .get(&name)
                    .is_some_and(|l| l.contains(&label))
                {
                    problems.push(format!("{what}: `{name}` has no label `{label}`: {q}"));
                }
            }
        }
        for (title, expr, _) in panel_queries(&dash) {
            exported.check(&format!("{rel}: panel {title:?}"), &expr, &mut problems);
            for (name, _) in promql_refs(&expr).selectors {
                if let Some((family, _)) = exported.family_of(&name) {
                    used_families.insert(family);
                }
            }
            queries.push((format!("{rel}: panel {title:?}"), expr));
        }
    }
    assert!(
        problems.is_empty(),
        "dashboard queries that do not match serin's /metrics:\n{}",
        problems.join("\n")
    );
    let unused: Vec<&String> = exported
        .types
        .keys()
        .filter(|f| !used_families.contains(*f))
        .collect();
    if !unused.is_empty() {
        eprintln!("note: metric families no dashboard shows: {unused:?}");
    }

    // Variables resolved through Prometheus, the way Grafana does.
    let mut problems = Vec::new();
    let mut resolved: Vec<(String, BTreeMap<String, String>)> = Vec::new();
    for rel in DASHBOARDS {
        let dash = dashboard(rel);
        let mut values = builtins();
        for v in variables(&dash) {
            if v["type"] != "query" {
                continue;
            }
            let name = v["name"].as_str().unwrap_or("").to_string();
            let (selector, label) = label_values(&variable_query(v)).unwrap_or_default();
            let selector = substitute(&selector, &values);
            let deadline = Instant::now() + Duration::from_secs(30);
            let options = loop {
                let answer = prom
                    .get(
                        &format!("/api/v1/label/{label}/values"),
                        &[("match[]", &selector)],
                    )
                    .await;
                assert_eq!(
                    answer["status"], "success",
                    "{rel}: variable {name}: {answer}"
                );
                let options: Vec<String> = answer["data"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|o| o.as_str().map(String::from))
                    .collect();
                if !options.is_empty() {
                    break options;
                }
                assert!(
                    Instant::now() < deadline,
                    "{rel}: variable {name} ({label} of {selector}) has no values after 30 s"
                );
                tokio::time::sleep(Duration::from_millis(250)).await;
            };
            let value = if v["includeAll"] == true {
                v["allValue"].as_str().unwrap_or(".*").to_string()
            } else if options.iter().any(|o| o == "svc") {
                "svc".to_string()
            } else {
                options[0].clone()
            };
            values.insert(name, value);
        }
        resolved.push((rel.to_string(), values));
    }

    // Every panel query runs and, with traffic of every kind flowing,
    // returns data.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut empty = Vec::new();
        for (what, expr) in &queries {
            let values = resolved
                .iter()
                .find(|(rel, _)| what.starts_with(rel.as_str()))
                .map(|(_, v)| v.clone())
                .unwrap_or_default();
            let promql = substitute(expr, &values);
            let answer = prom.query(&promql).await;
            if answer["status"] != "success" {
                problems.push(format!("{what}: {promql}: {}", answer["error"]));
            } else if samples(&answer).is_empty() {
                empty.push(format!("{what}: {promql}"));
            }
        }
        assert!(
            problems.is_empty(),
            "queries Prometheus refused:\n{}",
            problems.join("\n")
        );
        if empty.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "queries still without data after 30 s of traffic:\n{}",
            empty.join("\n")
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // The shadow panel gives the number a new version is judged by: half
    // of shop v2's shadow answers differ from the primary's.
    let red = DASHBOARDS[0];
    let title = "Shadow answers by result per version (share)";
    let (_, expr, _) = panel_queries(&dashboard(red))
        .into_iter()
        .find(|(t, _, _)| t == title)
        .unwrap_or_else(|| panic!("{red}: no panel {title:?}"));
    let values = resolved
        .iter()
        .find(|(rel, _)| rel == red)
        .map(|(_, v)| v.clone())
        .unwrap_or_default();
    let shares: BTreeMap<String, f64> = prom
        .vector(&substitute(&expr, &values))
        .await
        .into_iter()
        .filter(|(l, _)| {
            l.get("service").is_some_and(|s| s == "shop")
                && l.get("version").is_some_and(|v| v == "v2")
        })
        .map(|(l, v)| (l.get("result").cloned().unwrap_or_default(), v))
        .collect();
    let total: f64 = shares.values().sum();
    assert!(
        (total - 1.0).abs() < 1e-6,
        "{title}: shop v2's shares do not add up to 100%: {shares:?}"
    );
    let different = shares.get("different").copied().unwrap_or(0.0);
    assert!(
        (0.2..=0.8).contains(&different),
        "{title}: shop v2 answers differently to half the requests, the panel says {different:.3}: {shares:?}"
    );
    drop(load);
    drop(prom);
    drop(incidents);
}

#[test]
fn the_promql_tokenizer_finds_metric_names_and_nothing_else() {
    let refs = promql_refs(
        r#"histogram_quantile(0.95, sum by (le, version) (rate(serin_request_duration_seconds_bucket{service=~"$service", route="a{b}"}[$__rate_interval])))
           / on (version) group_left sum without (code) (increase(serin_requests_total[5m] offset 1m)) or vector(0) * scalar(serin_active_connections) > bool 1e3"#,
    );
    let names: Vec<&str> = refs.selectors.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        vec![
            "serin_request_duration_seconds_bucket",
            "serin_requests_total",
            "serin_active_connections"
        ]
    );
    assert_eq!(refs.selectors[0].1, vec!["service", "route"]);
    assert_eq!(
        refs.grouping,
        ["code", "le", "version"]
            .iter()
            .map(|s| s.to_string())
            .collect()
    );
    assert_eq!(refs.nameless, 0);

    let exported = parse_exposition(
        "# TYPE serin_requests counter\n\
         serin_requests_total{route=\"r\",code=\"200\"} 1\n\
         # TYPE serin_request_duration_seconds histogram\n\
         serin_request_duration_seconds_bucket{route=\"r\",le=\"0.1\"} 1\n\
         serin_request_duration_seconds_sum{route=\"r\"} 0.01\n\
         serin_request_duration_seconds_count{route=\"r\"} 1\n\
         # EOF\n",
    );
    let mut problems = Vec::new();
    for ok in [
        "sum(rate(serin_requests_total{route=\"r\"}[1m]))",
        "histogram_quantile(0.9, sum by (le) (rate(serin_request_duration_seconds_bucket[1m])))",
        "rate(serin_request_duration_seconds_sum[1m]) / rate(serin_request_duration_seconds_count[1m])",
    ] {
        exported.check("ok", ok, &mut problems);
    }
    assert!(problems.is_empty(), "{problems:?}");
    for bad in [
        "rate(serin_requests[1m])",
        "rate(serin_request_duration_seconds[1m])",
        "rate(serin_requests_count[1m])",
        "rate(serin_request_duration_seconds_total[1m])",
        "rate(serin_requests_total{versoin=\"v1\"}[1m])",
        "sum by (le) (rate(serin_request_duration_seconds_bucket[1m]))",
        "sum by (pod) (rate(serin_requests_total[1m]))",
    ] {
        let mut p = Vec::new();
        exported.check("bad", bad, &mut p);
        assert!(!p.is_empty(), "{bad} passed");
    }
}

/// `admin.metricsAddress`: a second listener with only `/metrics` and no
/// token, for a Prometheus outside the pod, while the admin API wants its
/// token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_metrics_listener_serves_only_metrics_and_wants_no_token() {
    let upstream = Upstream::start("u");
    let serin = proxy(&format!(
        "admin: {{token: s3cret, metricsAddress: 127.0.0.1:0}}\n\
         listeners: [{{name: web, address: 127.0.0.1:0}}]\n\
         services: [{{name: s, versions: [{{name: v1, endpoints: [\"{}\"]}}]}}]\n\
         routes: [{{name: r, rules: [{{backendRefs: [{{name: s, version: v1}}]}}]}}]\n",
        upstream.addr
    ));
    let http = client();
    let sent = http
        .get(format!("{}/", serin.url("web")))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(sent.status(), 200);
    let metrics = format!("http://{}", serin.logged_address("metrics listening"));
    let resp = http
        .get(format!("{metrics}/metrics"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(resp.status(), 200);
    let text = resp.text().await.unwrap_or_default();
    assert!(
        text.contains("serin_requests_total{") && text.contains("route=\"r\""),
        "{text}"
    );
    // Nothing else there: not the routes, not a weight change.
    for (method, path) in [("GET", "/routes"), ("GET", "/config"), ("POST", "/reload")] {
        let resp = http
            .request(
                method.parse().unwrap_or_default(),
                format!("{metrics}{path}"),
            )
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(resp.status(), 404, "{method} {path}");
    }
    // The admin API still wants its token, for its metrics too.
    let resp = http
        .get(serin.admin_url("/metrics"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(resp.status(), 401);
}
