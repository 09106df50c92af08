//! Property tests of the config readers: whatever the bytes of a proxy
//! config or stack file — the examples mutated (bytes flipped, multi-byte
//! characters inserted, cut short, keys and values replaced), random YAML
//! made of the config's own words, or plain random bytes — reading it never
//! panics, and every problem it reports has a real place: a line and column
//! from 1 and the field path (only problems of the whole document have none).
//!
//! Each property runs a fixed number of cases (a few seconds in all);
//! `PROPTEST_CASES=100000 cargo test -p serin-config --test no_panic` runs
//! longer. A failure prints the smallest input that shows it.

use std::path::{Path, PathBuf};

use proptest::prelude::*;
use proptest::test_runner::Config;
use serin_config::proxy::{ProxyConfig, parse_proxy_config, parse_routes};
use serin_config::stack::parse_stack_file;
use serin_config::{ConfigErrors, INTERNAL_ERROR};

const PROXY_EXAMPLE: &str = include_str!("../../../examples/proxy/serin.yaml");
const QOTM_STACK: &str = include_str!("../../../examples/qotm/stack.yaml");
const MESH_STACK: &str = include_str!("../../../examples/mesh/stack.yaml");
const COUNTER_STACK: &str = include_str!("../../../examples/counter/stack.yaml");

/// A proxy config with a value in most sections, so that mutations reach
/// the checks of each (the example file is small).
const PROXY_FULL: &str = r#"admin: {address: 127.0.0.1:9901, token: t, metricsAddress: 127.0.0.1:9090}
accessLog: {enabled: true, format: text}
tracing: {endpoint: http://127.0.0.1:4318, serviceName: gw, samplingRatio: 0.5, headers: {x-key: v}}
workers: 2
drainTimeout: 5s
listeners:
  - name: web
    address: 127.0.0.1:0
    limits: {maxRequestHeaderBytes: 8192, maxRequestHeaders: 50, headerReadTimeout: 5s, idleTimeout: 30s, http2MaxConcurrentStreams: 10, maxConnections: 100}
  - name: other
    address: "[::1]:0"
services:
  - name: qotm
    protocol: h2c
    connectTimeout: 250ms
    loadBalancer: {type: RingHash, hashHeader: x-user}
    pool: {maxIdlePerEndpoint: 8, idleTimeout: 10s}
    circuitBreaker: {maxConnections: 10, maxPendingRequests: 5, maxRequests: 200, maxRetries: 20}
    outlierDetection: {consecutive5xx: 3, consecutiveGatewayErrors: 2, consecutiveLocalOriginFailures: 2, interval: 5s, baseEjectionTime: 30s, maxEjectionTime: 1m, maxEjectionPercent: 50}
    healthCheck: {path: /health, interval: 2s, timeout: 1s, healthyThreshold: 1, unhealthyThreshold: 2, jitter: 500ms}
    panicThreshold: 30
    versions:
      - {name: v1, endpoints: ["127.0.0.1:9001", "127.0.0.1:9002"]}
      - {name: v2, endpoints: ["127.0.0.1:9003"]}
  - name: auth
    versions: [{name: v1}]
routes:
  - name: qotm
    parentRefs: [{name: web}]
    hostnames: [api.example.com, "*.example.com"]
    rules:
      - name: main
        matches:
          - path: {type: RegularExpression, value: "/q(otm)?/.*"}
            headers: [{name: x-a, value: "^b+$", type: RegularExpression}]
            queryParams: [{name: q, value: "1"}]
            method: GET
        filters:
          - {type: RequestHeaderModifier, requestHeaderModifier: {set: [{name: x-a, value: b}], add: [{name: x-b, value: c}], remove: [x-c]}}
          - {type: ResponseHeaderModifier, responseHeaderModifier: {set: [{name: x-d, value: e}]}}
          - {type: URLRewrite, urlRewrite: {hostname: b.example.com, path: {type: ReplaceFullPath, replaceFullPath: /x}}}
          - {type: ExternalAuth, externalAuth: {protocol: HTTP, backendRef: {name: auth}, http: {path: /check, allowedHeaders: [authorization], allowedResponseHeaders: [x-user]}, timeout: 1s, failOpen: false}}
          - {type: RequestMirror, requestMirror: {backendRef: {name: qotm, version: v2}, percent: 10}}
        backendRefs:
          - {name: qotm, version: v1, weight: 90}
          - {name: qotm, version: v2, weight: 10}
        timeouts: {request: 5s, backendRequest: 300ms}
        retry: {attempts: 2, codes: [500, 502], backoff: 25ms, unsafeMethods: true, budget: {percent: 20, minRetriesPerSecond: 10, ttl: 10s}}
        fault: {delay: {fixedDelay: 1s, percent: 5}, abort: {httpStatus: 503, percent: 1}, headers: [{name: x-chaos, value: "on"}]}
        maxConcurrentRequests: 500
        rateLimit: {requests: 100, unit: minute, burst: 200, key: {type: Header, name: x-api-key}, global: {redis: "redis://127.0.0.1:6379/", failOpen: true, timeout: 100ms}}
      - matches: [{path: {type: PathPrefix, value: /old}}]
        filters: [{type: RequestRedirect, requestRedirect: {scheme: https, hostname: new.example.com, port: 8443, statusCode: 301, path: {type: ReplacePrefixMatch, replacePrefixMatch: /new}}}]
"#;

/// A stack file with a value in most sections.
const STACK_FULL: &str = r#"gateway:
  listen: 127.0.0.1:0
  admin: 127.0.0.1:0
  adminToken: t
  limits: {maxConnections: 100}
  accessLog: {format: json}
  workers: 1
  drainTimeout: 1s
  routes:
    - name: web
      rules:
        - backendRefs: [{name: web, version: v1, weight: 1}, {name: web, version: v2, weight: 0}]
tracing: {endpoint: http://127.0.0.1:4318}
services:
  - name: web
    command: ./bin/web
    args: [serve]
    env: {GREETING: hi}
    replicas: 2
    protocol: http1
    loadBalancer: {type: RoundRobin}
    connectTimeout: 1s
    circuitBreaker: {maxRequests: 10}
    outlierDetection: {consecutive5xx: 5}
    readiness: {httpGet: {path: /ready, port: 8080}, initialDelay: 1s, period: 1s, timeout: 1s, failureThreshold: 1, successThreshold: 1}
    liveness: {exec: {command: [sh, -c, "true"]}, period: 5s, failureThreshold: 3}
    restartPolicy: OnFailure
    restartBackoff: {initial: 1s, max: 30s, resetAfter: 1m}
    terminationGracePeriod: 5s
    dependsOn: [db]
    files: [{path: config/app.toml, content: "a = 1\n"}, {path: creds, fromFile: credentials.txt}]
    secrets: [{name: TOKEN, value: s3cret}, {name: KEY, fromFile: credentials.txt, asFile: true}, {name: HOME_COPY, fromEnv: HOME}]
    strategy: {type: RollingUpdate, maxSurge: 1, maxUnavailable: 1}
    sidecar:
      outbound:
        - {name: db, env: DB_URL, rule: {backendRefs: [{name: db}], retry: {attempts: 1}}}
    canary: {steps: [5, 50, 100], interval: 10s, maxErrorRate: 1%, maxLatencyRatio: 1.5, latencyFloor: 10ms, minRequests: 20, failures: 2, inconclusiveLimit: 3, prometheus: "http://127.0.0.1:9090", queries: {errorRate: "x"}, headerStep: x-canary=always, mirrorStep: 20}
    versions:
      - {name: v1}
      - {name: v2, replicas: 1, env: {EXTRA: "1"}, strategy: {type: Recreate}, liveness: {tcpSocket: {}}}
  - name: db
    command: serin-demo
    readiness: {tcpSocket: {port: 6379}}
"#;

const PROXY_SEEDS: &[&str] = &[PROXY_EXAMPLE, PROXY_FULL];
const STACK_SEEDS: &[&str] = &[QOTM_STACK, MESH_STACK, COUNTER_STACK, STACK_FULL];

/// Where relative paths in the files point: the qotm example's folder holds
/// the `credentials.txt` the seeds name.
fn base_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/qotm")
}

fn config() -> Config {
    let mut config = Config::default();
    // A fixed count keeps CI's time bounded; PROPTEST_CASES asks for more.
    if std::env::var_os("PROPTEST_CASES").is_none() {
        config.cases = 300;
    }
    config.failure_persistence = None;
    config
}

/// Characters that change meaning in YAML or take more than one byte.
const ODD_CHARS: &[char] = &[
    '€', 'é', '日', '😀', '\u{301}', '\u{feff}', '\u{0}', '\u{7f}', '\u{85}', '\u{2028}', '\t',
    '\r', '\n', ' ', '"', '\'', ':', ',', '{', '}', '[', ']', '&', '*', '!', '|', '>', '-', '#',
    '%', '@', '`', '?', '\\',
];

/// Scalars that reach the decoders' edge cases: numbers past every range,
/// durations and addresses that are almost right, names of other enums.
const ODD_VALUES: &[&str] = &[
    "0",
    "-1",
    "1e309",
    "NaN",
    ".inf",
    "18446744073709551616",
    "4294967296",
    "65536",
    "99999999999999999999999s",
    "1ns",
    "5 parsecs",
    "0x10",
    "1_000",
    "~",
    "null",
    "''",
    "[]",
    "{}",
    "[1, [2, [3]]]",
    "{a: {b: {c: d}}}",
    "true",
    "yes",
    "kubernetes",
    "ab€cd",
    "€",
    "RingHash",
    "RegularExpression",
    "ReplacePrefixMatch",
    "Recreate",
    "Header",
    "CORS",
    "127.0.0.1:0",
    "[::1]:99999",
    "ä.example:80",
    "/(unclosed",
    "*.",
    "redis://",
    "http://",
    "&anchor x",
    "*alias",
    "!!binary aGk=",
    "|\n  block",
];

/// One edit of a file's text.
#[derive(Debug, Clone)]
enum Mutation {
    /// XOR one byte (at a position taken modulo the length) with a value.
    FlipByte(usize, u8),
    InsertChar(usize, char),
    /// Keep only the first part (as a share of the length, in 1/1000).
    Truncate(u16),
    /// Replace the key before the Nth `:` with this text.
    ReplaceKey(usize, String),
    /// Replace the value after the Nth `:` with this text.
    ReplaceValue(usize, String),
    /// Insert a copy of one line elsewhere (duplicate keys, misplaced
    /// sections).
    DuplicateLine(usize, usize),
}

fn text_piece() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-zA-Z]{1,12}",
        "[a-zA-Z€é日😀 ._-]{0,12}",
        prop::sample::select(ODD_VALUES).prop_map(str::to_string),
    ]
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 1..=255u8).prop_map(|(i, b)| Mutation::FlipByte(i, b)),
        (any::<usize>(), prop::sample::select(ODD_CHARS))
            .prop_map(|(i, c)| Mutation::InsertChar(i, c)),
        (0..1000u16).prop_map(Mutation::Truncate),
        (any::<usize>(), text_piece()).prop_map(|(i, k)| Mutation::ReplaceKey(i, k)),
        (any::<usize>(), text_piece()).prop_map(|(i, v)| Mutation::ReplaceValue(i, v)),
        (any::<usize>(), any::<usize>()).prop_map(|(a, b)| Mutation::DuplicateLine(a, b)),
    ]
}

/// The index of the char boundary at or before `i` (taken modulo the
/// length + 1).
fn boundary(text: &str, i: usize) -> usize {
    let mut i = i % (text.len() + 1);
    while !text.is_char_boundary(i) {
        i -= 1;
    }
    i
}

fn apply(text: &str, m: &Mutation) -> String {
    match m {
        Mutation::FlipByte(i, b) => {
            let mut bytes = text.as_bytes().to_vec();
            if bytes.is_empty() {
                return text.to_string();
            }
            let i = i % bytes.len();
            bytes[i] ^= b;
            String::from_utf8_lossy(&bytes).into_owned()
        }
        Mutation::InsertChar(i, c) => {
            let mut t = text.to_string();
            t.insert(boundary(text, *i), *c);
            t
        }
        Mutation::Truncate(share) => {
            let end = boundary(text, text.len() * usize::from(*share) / 1000);
            text[..end].to_string()
        }
        Mutation::ReplaceKey(n, key) | Mutation::ReplaceValue(n, key) => {
            let colons: Vec<usize> = text.match_indices(':').map(|(i, _)| i).collect();
            if colons.is_empty() {
                return text.to_string();
            }
            let at = colons[n % colons.len()];
            let stop = |c: char| matches!(c, ' ' | '\n' | '{' | '}' | '[' | ']' | ',');
            if matches!(m, Mutation::ReplaceKey(..)) {
                let start = text[..at].rfind(stop).map_or(0, |i| i + 1);
                format!("{}{key}{}", &text[..start], &text[at..])
            } else {
                let after = at + 1;
                let rest = &text[after..];
                let skip = rest.len() - rest.trim_start_matches(' ').len();
                let start = after + skip;
                let end = text[start..]
                    .find(['\n', ',', '}', ']'])
                    .map_or(text.len(), |i| start + i);
                format!("{} {key}{}", &text[..after], &text[end..])
            }
        }
        Mutation::DuplicateLine(from, to) => {
            let lines: Vec<&str> = text.lines().collect();
            if lines.is_empty() {
                return text.to_string();
            }
            let line = lines[from % lines.len()];
            let mut out = lines.clone();
            out.insert(to % (lines.len() + 1), line);
            out.join("\n")
        }
    }
}

/// A seed with one to four mutations applied.
fn mutated(seeds: &'static [&'static str]) -> impl Strategy<Value = String> {
    (
        prop::sample::select(seeds),
        prop::collection::vec(mutation(), 1..=4),
    )
        .prop_map(|(seed, ms)| ms.iter().fold(seed.to_string(), |t, m| apply(&t, m)))
}

/// Words of both file formats, so that random documents get past the
/// unknown-field checks into the sections' own checks.
const WORDS: &[&str] = &[
    "listeners",
    "name",
    "address",
    "limits",
    "services",
    "versions",
    "endpoints",
    "routes",
    "rules",
    "matches",
    "path",
    "type",
    "value",
    "filters",
    "backendRefs",
    "weight",
    "version",
    "requestHeaderModifier",
    "set",
    "urlRewrite",
    "replacePrefixMatch",
    "timeouts",
    "request",
    "retry",
    "codes",
    "budget",
    "rateLimit",
    "requests",
    "key",
    "fault",
    "abort",
    "httpStatus",
    "loadBalancer",
    "hashHeader",
    "gateway",
    "command",
    "replicas",
    "readiness",
    "httpGet",
    "exec",
    "strategy",
    "maxSurge",
    "secrets",
    "fromFile",
    "files",
    "content",
    "dependsOn",
    "sidecar",
    "outbound",
    "env",
    "canary",
    "steps",
    "tracing",
    "admin",
    "discovery",
];

/// A random YAML document (as flow-style text) made of the formats' words.
fn document() -> impl Strategy<Value = String> {
    let scalar = prop_oneof![
        prop::sample::select(WORDS).prop_map(str::to_string),
        prop::sample::select(ODD_VALUES).prop_map(|v| format!("{v:?}")),
        "[a-z0-9€]{0,8}",
        any::<i64>().prop_map(|n| n.to_string()),
    ];
    scalar.prop_recursive(5, 64, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(|v| format!("[{}]", v.join(", "))),
            prop::collection::vec(
                (
                    prop_oneof![
                        4 => prop::sample::select(WORDS).prop_map(str::to_string),
                        1 => "[a-zA-Z€é]{1,8}",
                    ],
                    inner
                ),
                0..6
            )
            .prop_map(|kv| {
                let pairs: Vec<String> = kv.iter().map(|(k, v)| format!("{k}: {v}")).collect();
                format!("{{{}}}", pairs.join(", "))
            }),
        ]
    })
}

/// Fails on a panic turned into a problem, and on a problem without a
/// place.
fn check(result: Result<(), ConfigErrors>, text: &str) -> Result<(), TestCaseError> {
    let Err(errors) = result else {
        return Ok(());
    };
    prop_assert!(!errors.is_empty(), "an error without problems");
    for e in errors.iter() {
        prop_assert!(
            !e.message.starts_with(INTERNAL_ERROR),
            "reading panicked: {e}\n--- input:\n{text}"
        );
        prop_assert!(
            e.line >= 1 && e.column >= 1,
            "a problem without a place: {e}\n--- every problem:\n{errors}--- input:\n{text}"
        );
        let document_level = [
            "YAML syntax",
            "the file",
            "missing required field",
            "expected a mapping",
            "a key must",
        ]
        .iter()
        .any(|m| e.message.starts_with(m));
        prop_assert!(
            !e.path.is_empty() || document_level,
            "a problem without a field path: {e}\n--- every problem:\n{errors}--- input:\n{text}"
        );
    }
    Ok(())
}

fn check_both(text: &str) -> Result<(), TestCaseError> {
    let base = base_dir();
    check(parse_proxy_config(text, "f.yaml", &base).map(drop), text)?;
    check(parse_stack_file(text, "f.yaml", &base).map(drop), text)
}

/// The config that routes read on their own are checked against.
fn services() -> ProxyConfig {
    parse_proxy_config(PROXY_FULL, "full.yaml", &base_dir())
        .unwrap_or_else(|e| panic!("the full proxy seed is not valid: {e}"))
}

#[test]
fn the_seeds_are_valid() {
    let base = base_dir();
    for seed in PROXY_SEEDS {
        if let Err(e) = parse_proxy_config(seed, "seed.yaml", &base) {
            panic!("{e}\n{seed}");
        }
    }
    for seed in STACK_SEEDS {
        if let Err(e) = parse_stack_file(seed, "seed.yaml", &base) {
            panic!("{e}\n{seed}");
        }
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn mutated_proxy_configs_never_panic_and_every_problem_has_a_place(text in mutated(PROXY_SEEDS)) {
        check_both(&text)?;
    }

    #[test]
    fn mutated_stack_files_never_panic_and_every_problem_has_a_place(text in mutated(STACK_SEEDS)) {
        check_both(&text)?;
    }

    #[test]
    fn random_documents_never_panic_and_every_problem_has_a_place(text in document()) {
        check_both(&text)?;
        let routes = format!("{{routes: [{text}]}}");
        let config = services();
        check(parse_routes(&routes, "routes.yaml", &config).map(drop), &routes)?;
    }

    #[test]
    fn random_bytes_never_panic_and_every_problem_has_a_place(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        check_both(&String::from_utf8_lossy(&bytes))?;
    }
}
