//! `serin explain` and `GET /explain` (issue #16, point 3) against a real
//! serin: the CLI names the rule a request matches and why, the nearest
//! rule when nothing matches and what differs, the path as normalised, the
//! steps in order, and each endpoint with why it can or cannot be picked.

use std::net::TcpListener;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::common::{SERIN, Serin, Upstream, proxy, wait_until};

/// Runs `serin explain ARGS --admin ADDR`: (success, stdout and stderr).
fn explain(serin: &Serin, args: &[&str]) -> (bool, String) {
    let out = Command::new(SERIN)
        .arg("explain")
        .args(args)
        .arg("--admin")
        .arg(serin.admin.to_string())
        .output()
        .unwrap_or_else(|e| panic!("serin explain: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn json(serin: &Serin, args: &[&str]) -> Value {
    let (ok, text) = explain(serin, &[args, &["--json"]].concat());
    assert!(ok, "{text}");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

/// A port that takes connections and closes each at once: a health check
/// of it fails, and it stays this test's while the listener lives.
fn closing_port() -> (TcpListener, std::net::SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
    let addr = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
    let accept = listener.try_clone().unwrap_or_else(|e| panic!("{e}"));
    std::thread::spawn(move || {
        for conn in accept.incoming() {
            drop(conn);
        }
    });
    (listener, addr)
}

fn config(gold: &Upstream, app: &Upstream, dead: std::net::SocketAddr) -> String {
    format!(
        r#"
listeners: [{{name: gw, address: "127.0.0.1:0"}}]
services:
  - {{name: gold, versions: [{{name: v1, endpoints: ["{gold}"]}}]}}
  - name: app
    healthCheck: {{path: /health, interval: 100ms, healthyThreshold: 1, unhealthyThreshold: 1}}
    versions:
      - {{name: v1, endpoints: ["{app}", "{dead}"]}}
      - {{name: v2, endpoints: ["{app}"]}}
routes:
  - name: api
    rules:
      - matches: [{{path: {{type: PathPrefix, value: /api}}, headers: [{{name: x-tier, value: gold}}]}}]
        backendRefs: [{{name: gold, version: v1}}]
      - matches: [{{path: {{type: PathPrefix, value: /api}}, method: GET}}]
        filters:
          - {{type: RequestHeaderModifier, requestHeaderModifier: {{set: [{{name: x-from, value: gw}}]}}}}
        backendRefs:
          - {{name: app, version: v1, weight: 90}}
          - {{name: app, version: v2, weight: 10}}
"#,
        gold = gold.addr,
        app = app.addr,
    )
}

#[test]
fn explain_names_the_matching_rule_the_nearest_miss_and_the_endpoints() {
    let (gold, app) = (Upstream::start("gold"), Upstream::start("app"));
    let (_closing, dead) = closing_port();
    let serin = proxy(&config(&gold, &app, dead));

    // A match, reached by a path that had to be normalised.
    let (ok, text) = explain(&serin, &["GET", "/x/../api//orders?id=1"]);
    assert!(ok, "{text}");
    for expected in [
        "path after normalisation: /api/orders",
        "matches route api rule 1: PathPrefix /api, method GET",
        "nearest: route api rule 0 (PathPrefix /api, header x-tier = gold)",
        "- header x-tier: wants = gold, it has none",
        "step 1: filter RequestHeaderModifier",
        "backend app/v1: weight 90 (90%)",
        "backend app/v2: weight 10 (10%)",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
    }
    // The header moves it to the more specific rule.
    let v = json(&serin, &["--header", "x-tier=gold", "POST", "/api"]);
    assert_eq!(v["matched"]["rule"], 0, "{v:#}");
    assert_eq!(v["backends"][0]["service"], "gold", "{v:#}");

    // A miss names the nearest rule and what differs.
    let (ok, text) = explain(&serin, &["POST", "/other"]);
    assert!(ok, "{text}");
    for expected in [
        "matches no rule: 404 no_route",
        "- path: wants PathPrefix /api, it is /other",
        "- method: wants GET, it is POST",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
    }
    // A path serin refuses is said to be refused, before any route.
    let (ok, text) = explain(&serin, &["GET", "/api/%2e%2e/%2e%2e/etc"]);
    assert!(ok, "{text}");
    assert!(text.contains("refused (400 path_above_root)"), "{text}");

    // The endpoint whose health check fails is named as not eligible.
    let dead = dead.to_string();
    let endpoint = |v: &Value| {
        v["backends"][0]["endpoints"]
            .as_array()
            .and_then(|list| list.iter().find(|e| e["address"] == dead.as_str()).cloned())
            .unwrap_or(Value::Null)
    };
    let mut last = Value::Null;
    let failed = wait_until(Duration::from_secs(30), || {
        last = endpoint(&json(&serin, &["GET", "/api"]));
        last["eligible"] == false
    });
    assert!(failed, "{last:#}");
    assert_eq!(last["why"], "failing its health check", "{last:#}");
    assert_eq!(gold.requests(), 0, "explain sent nothing upstream");
}

#[test]
fn a_question_that_cannot_be_asked_is_a_clear_error() {
    let (gold, app) = (Upstream::start("gold"), Upstream::start("app"));
    let (_closing, dead) = closing_port();
    let serin = proxy(&config(&gold, &app, dead));
    for (args, expected) in [
        (&["GET", "api"][..], "the target must begin with `/`"),
        (
            &["GET", "/", "--listener", "nope"],
            "no listener named \"nope\"; the listeners are: gw",
        ),
        (&["G E T", "/"], "is not an HTTP method"),
    ] {
        let (ok, text) = explain(&serin, args);
        assert!(!ok, "{args:?}: {text}");
        assert!(
            text.contains(expected),
            "{args:?}: missing {expected:?} in:\n{text}"
        );
    }
    let (ok, text) = explain(&serin, &["--header", "novalue", "GET", "/"]);
    assert!(!ok && text.contains("is not NAME=VALUE"), "{text}");
}
