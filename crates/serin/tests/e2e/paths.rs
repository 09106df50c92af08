//! Path normalisation before routing (issue #12, point 3): one route
//! `PathPrefix /admin` → `guard`, one `PathPrefix /` → `app`. Every
//! spelling an application reads as `/admin/...` must reach `guard` with
//! that path, or be refused; none may reach `app`.

use serin_testkit::raw::exchange;

use crate::common::{Upstream, proxy};

fn config(guard: &Upstream, app: &Upstream, normalization: &str) -> String {
    format!(
        r#"
listeners:
  - name: gw
    address: 127.0.0.1:0
{normalization}
services:
  - name: guard
    versions: [{{name: v1, endpoints: ["{}"]}}]
  - name: app
    versions: [{{name: v1, endpoints: ["{}"]}}]
routes:
  - name: admin
    rules:
      - matches: [{{path: {{type: PathPrefix, value: /admin}}}}]
        backendRefs: [{{name: guard, version: v1}}]
  - name: public
    rules:
      - backendRefs: [{{name: app, version: v1}}]
"#,
        guard.addr, app.addr
    )
}

/// What happened to a raw request: its status, which upstream answered
/// and the path that upstream got (both empty when serin answered itself).
fn send(addr: std::net::SocketAddr, target: &str) -> (String, String, String) {
    let raw = exchange(
        addr,
        format!("GET {target} HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n").as_bytes(),
    );
    let status = raw.split(' ').nth(1).unwrap_or("").to_string();
    let body = raw.split("\r\n\r\n").nth(1).unwrap_or("");
    let echo: serde_json::Value = serde_json::from_str(body).unwrap_or(serde_json::Value::Null);
    (
        status,
        echo["upstream"].as_str().unwrap_or("").to_string(),
        echo["path"].as_str().unwrap_or("").to_string(),
    )
}

#[tokio::test]
async fn every_spelling_of_admin_reaches_the_admin_route_with_its_normal_path() {
    let guard = Upstream::start("guard");
    let app = Upstream::start("app");
    let serin = proxy(&config(&guard, &app, ""));
    let addr = serin.listener("gw");
    let cases = [
        // kind of spelling, target, upstream, path it must get
        ("plain", "/admin/x", "guard", "/admin/x"),
        ("dot segment", "/public/../admin/x", "guard", "/admin/x"),
        ("single dot", "/./admin/x", "guard", "/admin/x"),
        (
            "encoded dots",
            "/public/%2e%2e/admin/x",
            "guard",
            "/admin/x",
        ),
        (
            "mixed-case encoded dots",
            "/public/%2E%2e/admin/x",
            "guard",
            "/admin/x",
        ),
        ("encoded letter", "/%61dmin/x", "guard", "/admin/x"),
        ("encoded letters", "/%41%64min/x", "app", "/Admin/x"),
        ("double slash", "//admin/x", "guard", "/admin/x"),
        (
            "slashes inside",
            "/public//..//admin//x",
            "guard",
            "/admin/x",
        ),
        (
            "query kept",
            "/public/../admin/x?a=%2e",
            "guard",
            "/admin/x",
        ),
        ("public stays public", "/public/x", "app", "/public/x"),
        (
            "lookalike prefix",
            "/administrator",
            "app",
            "/administrator",
        ),
    ];
    let mut wrong = Vec::new();
    for (kind, target, upstream, path) in cases {
        let got = send(addr, target);
        let want = ("200".to_string(), upstream.to_string(), path.to_string());
        if got != want {
            wrong.push(format!("{kind}: {target} → {got:?}, want {want:?}"));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[tokio::test]
async fn ambiguous_spellings_are_refused_and_reach_no_upstream() {
    let guard = Upstream::start("guard");
    let app = Upstream::start("app");
    let serin = proxy(&config(&guard, &app, ""));
    let addr = serin.listener("gw");
    let cases = [
        (
            "encoded slash",
            "/public/..%2Fadmin/x",
            "path_escaped_slash",
        ),
        (
            "lower-case encoded slash",
            "/admin%2fx",
            "path_escaped_slash",
        ),
        (
            "encoded backslash",
            "/public/..%5Cadmin/x",
            "path_escaped_slash",
        ),
        ("backslash", "/public\\..\\admin/x", "path_backslash"),
        ("path parameter", "/admin;a=b/x", "path_parameter"),
        ("servlet dot-dot", "/public/..;/admin/x", "path_parameter"),
        ("above the root", "/../admin/x", "path_above_root"),
        (
            "encoded above the root",
            "/%2e%2e/admin/x",
            "path_above_root",
        ),
        ("bad escape", "/admin/%zz", "path_bad_escape"),
        ("encoded NUL", "/admin%00/x", "path_encoded_control"),
    ];
    let mut wrong = Vec::new();
    for (kind, target, reason) in cases {
        let raw = exchange(
            addr,
            format!("GET {target} HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n").as_bytes(),
        );
        let refused = raw.starts_with("HTTP/1.1 400 ")
            && raw
                .to_ascii_lowercase()
                .contains(&format!("x-serin-reason: {reason}"));
        if !refused {
            wrong.push(format!(
                "{kind}: {target} → {}",
                raw.lines().next().unwrap_or("")
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    assert_eq!(
        guard.requests() + app.requests(),
        0,
        "an upstream was reached"
    );
}

#[tokio::test]
async fn each_option_can_be_set_per_listener() {
    let guard = Upstream::start("guard");
    let app = Upstream::start("app");
    // Envoy's behaviour for escaped slashes: decode and redirect; path
    // parameters kept for an application that uses them.
    let serin = proxy(&config(
        &guard,
        &app,
        "    pathNormalization: {escapedSlashes: UnescapeAndRedirect, pathParameters: KeepUnchanged}",
    ));
    let addr = serin.listener("gw");
    let raw = exchange(
        addr,
        b"GET /x/..%2Fadmin/y?q=1 HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n",
    );
    assert!(raw.starts_with("HTTP/1.1 307 "), "{raw}");
    assert!(
        raw.to_ascii_lowercase().contains("location: /admin/y?q=1"),
        "{raw}"
    );
    assert_eq!(
        send(addr, "/app;jsessionid=1/x"),
        ("200".into(), "app".into(), "/app;jsessionid=1/x".into())
    );

    // Normalisation off: the route is decided on the path as sent, and the
    // upstream gets the same path (never one spelling routed, another sent).
    let off = proxy(&config(
        &guard,
        &app,
        "    pathNormalization: {normalizePath: false, mergeSlashes: false, escapedSlashes: KeepUnchanged}",
    ));
    let addr = off.listener("gw");
    assert_eq!(
        send(addr, "/%61dmin/x"),
        ("200".into(), "app".into(), "/%61dmin/x".into())
    );
    assert_eq!(
        send(addr, "//admin/x"),
        ("200".into(), "app".into(), "//admin/x".into())
    );
}
