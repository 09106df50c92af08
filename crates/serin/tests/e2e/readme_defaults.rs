//! The README's defaults are the code's: every default the README states
//! for the config file (its table and that of "Containing failures"), for
//! retries, tracing, the stack's restarts and canaries is read from the
//! README's text and compared with the named constant it comes from, so a
//! change to either side alone fails here. A table row that states a
//! default must have a check below.

use std::time::Duration;

use regex::Regex;
use serin_canary::settings as canary;
use serin_config::proxy::{ClientValidationMode, LbPolicy, UpstreamProtocol, defaults};
use serin_config::stack as stack_defaults;

const README: &str = include_str!("../../../../README.md");

/// A value as the README writes it.
#[derive(Debug, PartialEq)]
enum Value {
    /// `20s`, `5 s`, `5 min`, `25ms`.
    Duration(Duration),
    /// `100`, `10,000`, `1.5`, `20 %` (the number).
    Number(f64),
    /// `60 KiB`.
    Bytes(u64),
    /// `once`, `twice`, `N times`.
    Times(u32),
    /// Anything else, as written.
    Text(String),
}

impl Value {
    /// Reads `text` as the same kind of value as `self`.
    fn read_like(&self, text: &str) -> Result<Value, String> {
        let text = text.trim();
        let number = |t: &str| {
            t.trim_end_matches('%')
                .replace(',', "")
                .trim()
                .parse::<f64>()
                .map_err(|e| format!("`{t}`: {e}"))
        };
        Ok(match self {
            Value::Duration(_) => Value::Duration(
                serin_config::parse_duration(text).map_err(|e| format!("`{text}`: {e}"))?,
            ),
            Value::Number(_) => Value::Number(number(text)?),
            Value::Bytes(_) => {
                let (n, unit) = text
                    .split_once(' ')
                    .ok_or_else(|| format!("`{text}`: no unit"))?;
                let scale = match unit {
                    "KiB" => 1024,
                    "MiB" => 1024 * 1024,
                    "bytes" => 1,
                    other => return Err(format!("`{text}`: unit {other}")),
                };
                Value::Bytes((number(n)? as u64) * scale)
            }
            Value::Times(_) => Value::Times(match text {
                "once" => 1,
                "twice" => 2,
                other => other
                    .strip_suffix(" times")
                    .and_then(|n| n.parse().ok())
                    .ok_or_else(|| format!("`{text}`: not a count"))?,
            }),
            Value::Text(_) => Value::Text(text.to_string()),
        })
    }
}

fn dur(d: Duration) -> Value {
    Value::Duration(d)
}

fn num(n: impl Into<f64>) -> Value {
    Value::Number(n.into())
}

fn count(n: usize) -> Value {
    Value::Number(n as f64)
}

fn text(t: impl ToString) -> Value {
    Value::Text(t.to_string())
}

/// `` `a`, `b` and `c` ``, as the README lists names.
fn spoken_list(names: &[&str]) -> String {
    let quoted: Vec<String> = names.iter().map(|n| format!("`{n}`")).collect();
    match quoted.split_last() {
        Some((last, [])) => last.clone(),
        Some((last, rest)) => format!("{} and {last}", rest.join(", ")),
        None => String::new(),
    }
}

/// Where a default is stated: in a table row (by its first cell, e.g.
/// `listeners[].limits`) or anywhere in the prose (`None`), as a pattern
/// whose groups are the values, and the constants they must equal.
struct Check {
    row: Option<&'static str>,
    pattern: &'static str,
    expected: Vec<Value>,
}

fn row(row: &'static str, pattern: &'static str, expected: Vec<Value>) -> Check {
    Check {
        row: Some(row),
        pattern,
        expected,
    }
}

fn prose(pattern: &'static str, expected: Vec<Value>) -> Check {
    Check {
        row: None,
        pattern,
        expected,
    }
}

fn checks() -> Vec<Check> {
    use defaults as d;
    use serin_demo::loadtester as lt;
    vec![
        // ### The config file
        row(
            "admin.address",
            r"\(default `([^`]+)`\)",
            vec![text(d::ADMIN_ADDRESS)],
        ),
        // One per CPU is a function, checked on its own below.
        row(
            "workers",
            r"\(default: (one per CPU)\)",
            vec![text("one per CPU")],
        ),
        row(
            "drainTimeout",
            r"\(default `([^`]+)`\)",
            vec![dur(d::DRAIN_TIMEOUT)],
        ),
        row(
            "listeners[].limits",
            r"`maxRequestHeaderBytes` \(([^)]+)\), `maxRequestHeaders` \(([^)]+)\), `headerReadTimeout` \(([^;)]+)[;)].*`idleTimeout` \(([^)]+)\), `http2MaxConcurrentStreams` \(([^)]+)\), `maxRequestBodyBytes` \(([^,]+),",
            vec![
                Value::Bytes(d::MAX_REQUEST_HEADER_BYTES as u64),
                count(d::MAX_REQUEST_HEADERS),
                dur(d::HEADER_READ_TIMEOUT),
                dur(d::IDLE_TIMEOUT),
                num(d::HTTP2_MAX_CONCURRENT_STREAMS),
                Value::Bytes(d::MAX_REQUEST_BODY_BYTES),
            ],
        ),
        row(
            "services[].grpcErrorCodes",
            r"\(default ([^;]+);",
            vec![text(
                d::GRPC_ERROR_CODES
                    .iter()
                    .map(|&c| {
                        let name = serin_config::proxy::GRPC_CODE_NAMES[c as usize];
                        format!("`{}`", name.to_ascii_lowercase().replace('_', "-"))
                    })
                    .collect::<Vec<_>>()
                    .join(", "),
            )],
        ),
        row(
            "routes[].rules[].sessionPersistence",
            r"`sessionName` \(default `([^`]+)`, or `([^`]+)` for a header\)",
            vec![text(d::SESSION_COOKIE), text(d::SESSION_HEADER)],
        ),
        row(
            "listeners[].clientAddress",
            r"`trustedHops` \(default (\d+),.*`trustedCidrs` \(default (none),",
            vec![num(d::TRUSTED_HOPS), text("none")],
        ),
        // Behaviours, not constants: tests/e2e/tls.rs serves a certificate
        // by its own names and sends a service's name as its SNI.
        row(
            "listeners[].tls.certificates[]",
            r"default: (the DNS names of the certificate's subject alternative names)",
            vec![text(
                "the DNS names of the certificate's subject alternative names",
            )],
        ),
        row(
            "services[].tls",
            r"default: the service's `(name)`.*default: (the system's trust store)",
            vec![text("name"), text("the system's trust store")],
        ),
        row(
            "listeners[].tls.clientValidation",
            r"`mode`: `(\w+)` \(default",
            vec![text(ClientValidationMode::default())],
        ),
        row(
            "services[].protocol",
            r"`(\w+)` \(default\)",
            vec![text(UpstreamProtocol::default())],
        ),
        row(
            "services[].loadBalancer.type",
            r"`(\w+)` \([^)]*default\)",
            vec![text(LbPolicy::default())],
        ),
        row(
            "services[].connectTimeout",
            r"default `([^`]+)`",
            vec![dur(d::CONNECT_TIMEOUT)],
        ),
        row(
            "services[].pool",
            r"`maxIdlePerEndpoint` \((\d+) per worker\), `idleTimeout` \(([^)]+)\)",
            vec![count(d::MAX_IDLE_PER_ENDPOINT), dur(d::POOL_IDLE_TIMEOUT)],
        ),
        // A behaviour (no listener named: every listener), checked below.
        row(
            "routes[].parentRefs[].name",
            r"\(default: (all)\)",
            vec![text("all")],
        ),
        row(
            "routes[].rules[].backendRefs[]",
            r"`weight` \(default (\d+)\)",
            vec![num(d::WEIGHT)],
        ),
        row(
            "routes[].rules[].timeouts",
            r"default ([^,]+), `0` for none",
            vec![dur(d::REQUEST_TIMEOUT)],
        ),
        row(
            "routes[].rules[].retry",
            r"`codes` \(default ([\d, ]+)\), `backoff` \([^)]*default ([^)]+)\)",
            vec![
                text(d::RETRY_CODES.map(|c| c.to_string()).join(", ")),
                dur(d::RETRY_BACKOFF),
            ],
        ),
        prose(
            r"`--rate` \(default ([\d,]+) a second, at most ([\d,]+)\)",
            vec![
                num(serin_proxy::tap::DEFAULT_TAP_RATE),
                num(serin_proxy::tap::MAX_TAP_RATE),
            ],
        ),
        prose(
            r"a slow watcher fell more\s+than ([\d,]+) behind",
            vec![count(serin_proxy::tap::TAP_BUFFER)],
        ),
        prose(
            r"also without a `retry` section \((\w+)\)",
            vec![Value::Times(d::CONNECT_FAILURE_RETRIES)],
        ),
        prose(
            r"RequestMirror's share is `percent` \(0 to 100, default (\d+): every",
            vec![num(d::MIRROR_PERCENT)],
        ),
        prose(
            r"\(the denominator (\d+) when absent,",
            vec![num(d::MIRROR_FRACTION_DENOMINATOR)],
        ),
        prose(
            r"only while the request body is within (\d+ KiB)",
            vec![Value::Bytes(serin_proxy::body::REPLAY_LIMIT as u64)],
        ),
        // ## Containing failures
        row(
            "circuitBreaker.maxConnections",
            r"\(([\d,]+);",
            vec![count(d::CB_MAX_CONNECTIONS)],
        ),
        row(
            "circuitBreaker.maxPendingRequests",
            r"\(([\d,]+)\)",
            vec![count(d::CB_MAX_PENDING_REQUESTS)],
        ),
        row(
            "circuitBreaker.maxRequests",
            r"\(([\d,]+):",
            vec![count(d::CB_MAX_REQUESTS)],
        ),
        row(
            "circuitBreaker.maxRetries",
            r"\(([\d,]+):",
            vec![count(d::CB_MAX_RETRIES)],
        ),
        row(
            "retry.budget",
            r"\(Linkerd's ([\d.]+ %), (\d+)/s, ([^)]+)\)",
            vec![
                num(d::RETRY_BUDGET_PERCENT),
                num(d::RETRY_BUDGET_MIN_PER_SECOND),
                dur(d::RETRY_BUDGET_TTL),
            ],
        ),
        row(
            "Retry-After",
            r"\(up to ([^;]+);",
            vec![dur(d::MAX_RETRY_AFTER)],
        ),
        row(
            "outlierDetection",
            r"`consecutive5xx` \((\d+) when no counter is named\).*`baseEjectionTime` \(([^)]+)\).*`maxEjectionTime` \(([^)]+)\).*`maxEjectionPercent` \(([\d.]+ %)",
            vec![
                num(d::OUTLIER_CONSECUTIVE),
                dur(d::OUTLIER_BASE_EJECTION),
                dur(d::OUTLIER_MAX_EJECTION),
                num(d::OUTLIER_MAX_EJECTION_PERCENT),
            ],
        ),
        row(
            "healthCheck",
            r"`interval` \(([^)]+)\), `timeout` \(([^)]+)\), `healthyThreshold` \((\d+)\), `unhealthyThreshold` \((\d+)\)",
            vec![
                dur(d::HEALTH_INTERVAL),
                dur(d::HEALTH_TIMEOUT),
                num(d::HEALTH_HEALTHY_THRESHOLD),
                num(d::HEALTH_UNHEALTHY_THRESHOLD),
            ],
        ),
        row(
            "panicThreshold",
            r"\(([\d.]+ %)\)",
            vec![num(d::PANIC_THRESHOLD)],
        ),
        row(
            "limits.maxConnections",
            r"\(([\d,]+)\)",
            vec![count(d::MAX_CONNECTIONS)],
        ),
        row(
            "rateLimit",
            r"`global: \{redis: URL, failOpen: (\w+), timeout: ([^}]+)\}`",
            vec![
                text(d::GLOBAL_RATE_LIMIT_FAIL_OPEN),
                dur(d::GLOBAL_RATE_LIMIT_TIMEOUT),
            ],
        ),
        prose(
            r"timeout: (\S+) # serin: how long auth may take",
            vec![dur(d::EXTERNAL_AUTH_TIMEOUT)],
        ),
        prose(
            r"failOpen: (\w+) # serin: on auth failure refuse with 403 \(Envoy's default\)",
            vec![text(d::EXTERNAL_AUTH_FAIL_OPEN)],
        ),
        prose(
            r"copies only bodies of known size up to (\d+ KiB)",
            vec![Value::Bytes(serin_proxy::body::REPLAY_LIMIT as u64)],
        ),
        row(
            "listeners[].compression",
            r"`encodings` \(default `([^`]+)`, .*`minBytes` \((\d+)\)",
            vec![
                text(d::COMPRESSION_ENCODINGS.map(|c| c.as_str()).join(", ")),
                num(d::COMPRESSION_MIN_BYTES as f64),
            ],
        ),
        prose(
            r"\(default: Envoy's list, ((?:`[^`]+`,? )+and `[^`]+`|(?:`[^`]+`, )+`[^`]+`)\)",
            vec![text(
                d::COMPRESSION_CONTENT_TYPES
                    .map(|t| format!("`{t}`"))
                    .join(", "),
            )],
        ),
        // ## At the edge
        prose(
            r"\(the rule's, else its listener's; `listeners\[\]\.limits`, default (\d+ MiB)\)",
            vec![Value::Bytes(d::MAX_REQUEST_BODY_BYTES)],
        ),
        prose(
            r"maxAge: 600 # seconds a browser caches the preflight \(default (\d+), the Gateway API's\)",
            vec![num(d::CORS_MAX_AGE)],
        ),
        prose(
            r"\| `jwt\.leeway` \| `([^`]+)` \|",
            vec![dur(d::JWT_LEEWAY)],
        ),
        prose(
            r"leeway: \S+ # clock skew allowed on exp and nbf \(default (\w+)\)",
            vec![dur(d::JWT_LEEWAY)],
        ),
        prose(
            r"\| `jwt\.jwks\.refreshInterval` \| `([^`]+)` \|",
            vec![dur(d::JWKS_REFRESH_INTERVAL)],
        ),
        prose(
            r"\| `basicAuth\.realm` \| `([^`]+)` \|",
            vec![text(d::BASIC_AUTH_REALM)],
        ),
        prose(
            r"\| `apiKey\.header` \| `([^`]+)` \|",
            vec![text(d::API_KEY_HEADER)],
        ),
        // ## Tracing
        prose(
            r"# default: OTEL_SERVICE_NAME, else (\w+)",
            vec![text(d::TRACING_SERVICE_NAME)],
        ),
        prose(
            r"# share of new traces \(default ([\d.]+)\)",
            vec![num(d::TRACING_SAMPLING_RATIO)],
        ),
        // ## serin up
        prose(
            r"CrashLoopBackOff \((\d+ s) doubling to (\d+ min), reset after (\d+ min) running\)",
            vec![
                dur(stack_defaults::DEFAULT_BACKOFF_INITIAL),
                dur(stack_defaults::DEFAULT_BACKOFF_MAX),
                dur(stack_defaults::DEFAULT_BACKOFF_RESET_AFTER),
            ],
        ),
        // ### Watching: `serin up --watch`
        prose(
            r"a build starts once no change came for (\d+ ms) \(compose watch's quiet period\), or (\d+ s) after the first change",
            vec![
                dur(serin_runtime::watch::QUIET_PERIOD),
                dur(serin_runtime::watch::MAX_DELAY),
            ],
        ),
        row(
            "watch.ignore",
            r"; ([^;]+) are always ignored",
            vec![text(spoken_list(stack_defaults::DEFAULT_WATCH_IGNORE))],
        ),
        // ## Canary releases
        prose(
            r"--watch +# (\d+)% → (\d+)% → (\d+)% → (\d+)%, (\d+ s) per step",
            canary::DEFAULT_STEPS
                .iter()
                .map(|s| num(*s))
                .chain([dur(canary::DEFAULT_INTERVAL)])
                .collect(),
        ),
        prose(
            r"fewer than `--min-requests` \((\d+)\) canary requests",
            vec![num(canary::DEFAULT_MIN_REQUESTS as f64)],
        ),
        prose(
            r"`--inconclusive-limit` \((\d+)\)",
            vec![num(canary::DEFAULT_INCONCLUSIVE_LIMIT)],
        ),
        prose(
            r"`--max-error-rate` \((\d+)%\)",
            vec![num(canary::DEFAULT_MAX_ERROR_RATE * 100.0)],
        ),
        prose(
            r"`--max-latency-ratio` \(([\d.]+)\)",
            vec![num(canary::DEFAULT_MAX_LATENCY_RATIO)],
        ),
        prose(
            r"`--failures` \((\d+)\)",
            vec![num(canary::DEFAULT_FAILURES)],
        ),
        prose(
            r"`--latency-floor` \((\w+)\)",
            vec![dur(canary::DEFAULT_LATENCY_FLOOR)],
        ),
        // ### A canary that starts itself
        prose(
            r"`auto` \(default `(\w+)`\)",
            vec![Value::Text(stack_defaults::DEFAULT_AUTO.to_string())],
        ),
        prose(
            r"runs beside it as the version `v1(-\w+)`",
            vec![Value::Text(
                stack_defaults::CANARY_VERSION_SUFFIX.to_string(),
            )],
        ),
        // ### Blue/green with a preview
        prose(
            r"then switched at once \(`steps: \[(\d+)\]`\)",
            vec![num(canary::BLUE_GREEN_STEPS[0])],
        ),
        // ### A load tester built in
        prose(
            r"\| `method` \| `(\w+)` \|",
            vec![text(reqwest::Method::GET)],
        ),
        prose(
            r"\| `rate` \| `(\d+)` \| requests per second, at most `(\d+)`",
            vec![num(lt::DEFAULT_RATE), num(lt::MAX_RATE)],
        ),
        prose(
            r"\| `duration` \| `(\w+)` \| how long it sends, at most `(\w+)`",
            vec![dur(lt::DEFAULT_DURATION), dur(lt::MAX_DURATION)],
        ),
        prose(
            r"\| `concurrency` \| `(\d+)` \| requests in flight at once, at most `(\d+)`",
            vec![count(lt::DEFAULT_CONCURRENCY), count(lt::MAX_CONCURRENCY)],
        ),
        prose(
            r"\| `timeout` \| `(\w+)` \| one request's",
            vec![dur(lt::DEFAULT_REQUEST_TIMEOUT)],
        ),
        prose(
            r"\| `maxErrorRate` \| `(\d+)%` \|",
            vec![num(lt::DEFAULT_MAX_ERROR_RATE * 100.0)],
        ),
        prose(
            r"at most (\d+) run at once \(429 beyond\)",
            vec![count(lt::MAX_LOADS)],
        ),
        // ### Webhooks, gates and notifications
        prose(
            r"no answer within\s+its `timeout` \((\d+ s) by default\)",
            vec![dur(serin_canary::hooks::DEFAULT_WEBHOOK_TIMEOUT)],
        ),
        prose(
            r"is tried (\d+) times in all, waiting about (\d+ ms), then twice\s+as long each time \(with jitter, at most (\d+ s)\)",
            vec![
                num(serin_canary::notify::NOTIFY_ATTEMPTS),
                dur(serin_canary::notify::NOTIFY_BACKOFF),
                dur(serin_canary::notify::NOTIFY_BACKOFF_CAP),
            ],
        ),
    ]
}

/// The headers of the README's tables of config keys: "The config file",
/// "Containing failures" and the stack's `watch`.
const CONFIG_TABLES: [&str; 3] = [
    "| key | meaning |",
    "| setting | where | meaning (default) |",
    "| key | meaning (default) |",
];

/// Each row of the config tables: its first cell (without backticks) and
/// the whole line.
fn table_rows() -> Vec<(String, &'static str)> {
    let mut rows = Vec::new();
    let mut in_table = false;
    for line in README.lines() {
        if CONFIG_TABLES.contains(&line) {
            in_table = true;
        } else if !line.starts_with('|') {
            in_table = false;
        } else if in_table && !line.starts_with("|--") {
            let first = line
                .split('|')
                .nth(1)
                .unwrap_or("")
                .trim()
                .trim_matches('`');
            rows.push((first.to_string(), line));
        }
    }
    rows
}

#[test]
fn every_default_the_readme_states_is_the_codes() {
    let rows = table_rows();
    // Prose wraps: patterns match it with every run of white space as one
    // space.
    let flat = README.split_whitespace().collect::<Vec<_>>().join(" ");
    let mut problems = Vec::new();
    for check in checks() {
        let re = Regex::new(check.pattern).unwrap_or_else(|e| panic!("{}: {e}", check.pattern));
        let haystack = match check.row {
            Some(name) => match rows.iter().find(|(first, _)| first == name) {
                Some((_, line)) => *line,
                None => {
                    problems.push(format!("no README table row `{name}`"));
                    continue;
                }
            },
            None => flat.as_str(),
        };
        let where_ = check.row.unwrap_or("the README");
        let Some(caps) = re.captures(haystack) else {
            problems.push(format!("{where_}: no match for {}", check.pattern));
            continue;
        };
        for (i, expected) in check.expected.iter().enumerate() {
            let written = caps.get(i + 1).map_or("", |m| m.as_str());
            match expected.read_like(written) {
                Ok(v) if v == *expected => {}
                Ok(v) => problems.push(format!(
                    "{where_}: the README says `{written}` ({v:?}), the code {expected:?}"
                )),
                Err(e) => problems.push(format!("{where_}: cannot read {e}")),
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn every_config_table_row_that_states_a_default_is_checked() {
    let rows = table_rows();
    assert!(
        rows.len() > 30,
        "the config tables were not found: {rows:?}"
    );
    let states_default =
        Regex::new(r"\bdefault\b|\((?:up to |Linkerd's )?\d").unwrap_or_else(|e| panic!("{e}"));
    let checked: Vec<&str> = checks().iter().filter_map(|c| c.row).collect();
    let unchecked: Vec<&str> = rows
        .iter()
        .filter(|(first, line)| {
            // The meaning cells only: the first names the setting.
            let meaning = line.splitn(3, '|').nth(2).unwrap_or("");
            states_default.is_match(meaning) && !checked.contains(&first.as_str())
        })
        .map(|(first, _)| first.as_str())
        .collect();
    assert!(
        unchecked.is_empty(),
        "README rows that state a default no check reads: {unchecked:?}"
    );
}

#[test]
fn the_defaults_that_are_behaviours_behave_as_the_readme_says() {
    // `workers`: one per CPU.
    let cpus = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    assert_eq!(serin_config::proxy::default_workers(), cpus);
    // `parentRefs` left out: the route is on every listener (none named).
    let cfg = serin_config::proxy::parse_proxy_config(
        "listeners: [{name: a, address: '127.0.0.1:0'}, {name: b, address: '127.0.0.1:0'}]\n\
         services: [{name: s, versions: [{name: v1, endpoints: ['127.0.0.1:1']}]}]\n\
         routes: [{name: r, rules: [{backendRefs: [{name: s}]}]}]\n",
        "t.yaml",
        std::path::Path::new("."),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        cfg.routes[0].listeners.is_empty(),
        "{:?}",
        cfg.routes[0].listeners
    );
}
