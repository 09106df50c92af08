//! Routing: hostnames, matches with Gateway API precedence, filters,
//! weighted splits, and the 404 for no match.

use std::collections::BTreeMap;

use crate::common::{Upstream, client, echo, header, proxy};

fn two_upstreams_config(a: &Upstream, b: &Upstream, routes: &str) -> String {
    format!(
        r#"
listeners:
  - name: gw
    address: 127.0.0.1:0
services:
  - name: svc
    versions:
      - name: a
        endpoints: ["{}"]
      - name: b
        endpoints: ["{}"]
routes:
{routes}
"#,
        a.addr, b.addr
    )
}

async fn upstream_of(url: String, headers: &[(&str, &str)]) -> (u16, String) {
    let mut req = client().get(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.unwrap_or_else(|e| panic!("request: {e}"));
    let status = resp.status().as_u16();
    let who = header(&resp, "x-upstream");
    (status, who)
}

#[tokio::test]
async fn matches_follow_gateway_api_precedence() {
    let a = Upstream::start("a");
    let b = Upstream::start("b");
    let serin = proxy(&two_upstreams_config(
        &a,
        &b,
        r#"
  - name: catch-all
    rules:
      - backendRefs: [{name: svc, version: a}]
  - name: specific
    rules:
      - matches: [{path: {type: PathPrefix, value: /api}}]
        backendRefs: [{name: svc, version: b}]
      - matches: [{path: {type: Exact, value: /api/exact}}]
        backendRefs: [{name: svc, version: a}]
      - matches: [{path: {type: PathPrefix, value: /api}, headers: [{name: x-canary, value: always}]}]
        backendRefs: [{name: svc, version: a}]
      - matches: [{path: {type: PathPrefix, value: /api}, method: DELETE}]
        backendRefs: [{name: svc, version: a}]
      - matches: [{path: {type: PathPrefix, value: /api}, queryParams: [{name: debug, type: RegularExpression, value: "1|yes"}]}]
        backendRefs: [{name: svc, version: a}]
      - matches: [{path: {type: RegularExpression, value: "/items/[0-9]+"}}]
        backendRefs: [{name: svc, version: b}]
"#,
    ));
    let url = |p: &str| format!("{}{p}", serin.url("gw"));
    // The longest prefix wins over the catch-all `/`.
    assert_eq!(upstream_of(url("/api/x"), &[]).await, (200, "b".into()));
    assert_eq!(upstream_of(url("/api"), &[]).await, (200, "b".into()));
    // A prefix matches whole segments only.
    assert_eq!(upstream_of(url("/apis"), &[]).await, (200, "a".into()));
    // Exact beats prefix.
    assert_eq!(upstream_of(url("/api/exact"), &[]).await, (200, "a".into()));
    // With equal paths, a header match is more specific.
    assert_eq!(
        upstream_of(url("/api/x"), &[("x-canary", "always")]).await,
        (200, "a".into())
    );
    assert_eq!(
        upstream_of(url("/api/x"), &[("x-canary", "never")]).await,
        (200, "b".into())
    );
    // Query parameter match, with a regular expression.
    assert_eq!(
        upstream_of(url("/api/x?debug=yes"), &[]).await,
        (200, "a".into())
    );
    assert_eq!(
        upstream_of(url("/api/x?debug=no"), &[]).await,
        (200, "b".into())
    );
    // Regular expressions match the whole path.
    assert_eq!(upstream_of(url("/items/42"), &[]).await, (200, "b".into()));
    assert_eq!(
        upstream_of(url("/items/42/x"), &[]).await,
        (200, "a".into())
    );
    // Method match.
    let resp = client()
        .delete(url("/api/x"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        resp.headers().get("x-upstream").map(|v| v.as_bytes()),
        Some(&b"a"[..])
    );
}

#[tokio::test]
async fn hostnames_select_routes_and_unmatched_requests_get_a_404_that_says_so() {
    let a = Upstream::start("a");
    let b = Upstream::start("b");
    let serin = proxy(&two_upstreams_config(
        &a,
        &b,
        r#"
  - name: exact-host
    hostnames: [api.example.com]
    rules:
      - backendRefs: [{name: svc, version: a}]
  - name: wildcard-host
    hostnames: ["*.example.com"]
    rules:
      - matches: [{path: {type: PathPrefix, value: /only}}]
        backendRefs: [{name: svc, version: b}]
"#,
    ));
    let url = format!("{}/", serin.url("gw"));
    assert_eq!(
        upstream_of(url.clone(), &[("host", "api.example.com")]).await,
        (200, "a".into())
    );
    assert_eq!(
        upstream_of(url.clone(), &[("host", "API.Example.com:8080")]).await,
        (200, "a".into())
    );
    assert_eq!(
        upstream_of(
            format!("{}/only/x", serin.url("gw")),
            &[("host", "www.example.com")]
        )
        .await,
        (200, "b".into())
    );
    // www.example.com has a route, but not for `/`.
    let resp = client()
        .get(&url)
        .header("host", "www.example.com")
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(resp.status(), 404);
    let body = resp.text().await.unwrap_or_default();
    assert!(
        body.contains("no route matches GET www.example.com/"),
        "{body}"
    );
    // Another host entirely.
    assert_eq!(upstream_of(url, &[("host", "other.org")]).await.0, 404);
}

#[tokio::test]
async fn filters_modify_headers_rewrite_and_redirect() {
    let a = Upstream::start("a");
    let b = Upstream::start("b");
    let serin = proxy(&two_upstreams_config(
        &a,
        &b,
        r#"
  - name: filters
    rules:
      - matches: [{path: {type: PathPrefix, value: /qotm/}}]
        filters:
          - type: RequestHeaderModifier
            requestHeaderModifier:
              set: [{name: x-set, value: set-value}]
              add: [{name: x-add, value: added}]
              remove: [x-remove-me]
          - type: ResponseHeaderModifier
            responseHeaderModifier:
              set: [{name: x-served-by, value: serin}]
              remove: [x-upstream]
          - type: URLRewrite
            urlRewrite:
              hostname: internal.local
              path: {type: ReplacePrefixMatch, replacePrefixMatch: /}
        backendRefs: [{name: svc, version: a}]
      - matches: [{path: {type: Exact, value: /old}}]
        filters:
          - type: RequestRedirect
            requestRedirect: {scheme: https, hostname: new.example.com, statusCode: 301, path: {type: ReplaceFullPath, replaceFullPath: /new}}
"#,
    ));
    let resp = client()
        .get(format!("{}/qotm/quote/1?x=1", serin.url("gw")))
        .header("x-remove-me", "1")
        .header("x-add", "original")
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        resp.headers().get("x-served-by").map(|v| v.as_bytes()),
        Some(&b"serin"[..])
    );
    assert!(resp.headers().get("x-upstream").is_none());
    let seen = echo(resp).await;
    assert_eq!(seen["path"], "/quote/1");
    assert_eq!(seen["query"], "x=1");
    assert_eq!(seen["headers"]["host"], "internal.local");
    assert_eq!(seen["headers"]["x-set"], "set-value");
    assert!(seen["headers"].get("x-remove-me").is_none());
    // Both values of x-add reached the upstream (the echo joins them).
    let add = seen["headers"]["x-add"].as_str().unwrap_or("");
    assert!(add.contains("original") || add.contains("added"), "{add}");

    let no_redirects = serin_config::http_client::builder()
        .unwrap_or_else(|e| panic!("{e}"))
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    let resp = no_redirects
        .get(format!("{}/old?keep=1", serin.url("gw")))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(resp.status(), 301);
    assert_eq!(
        resp.headers().get("location").and_then(|v| v.to_str().ok()),
        Some("https://new.example.com/new?keep=1")
    );
    assert_eq!(a.requests(), 1);
}

/// Over 10,000 requests each backend's share is within 1.5 percentage
/// points of its weight.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weighted_split_is_exact_enough_to_trust() {
    let a = Upstream::start("a");
    let b = Upstream::start("b");
    let serin = proxy(&two_upstreams_config(
        &a,
        &b,
        r#"
  - name: split
    rules:
      - backendRefs:
          - {name: svc, version: a, weight: 90}
          - {name: svc, version: b, weight: 10}
"#,
    ));
    let url = format!("{}/", serin.url("gw"));
    let http = client();
    let total = 10_000usize;
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let http = http.clone();
        let url = url.clone();
        tasks.push(tokio::spawn(async move {
            let mut counts: BTreeMap<String, usize> = BTreeMap::new();
            for _ in 0..total / 16 {
                let resp = http
                    .get(&url)
                    .send()
                    .await
                    .unwrap_or_else(|e| panic!("{e}"));
                assert_eq!(resp.status(), 200);
                let who = resp
                    .headers()
                    .get("x-upstream")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("?")
                    .to_string();
                let _ = resp.bytes().await;
                *counts.entry(who).or_default() += 1;
            }
            counts
        }));
    }
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for t in tasks {
        for (k, v) in t.await.unwrap_or_else(|e| panic!("{e}")) {
            *counts.entry(k).or_default() += v;
        }
    }
    let n: usize = counts.values().sum();
    assert_eq!(n, total);
    let share_a = counts.get("a").copied().unwrap_or(0) as f64 * 100.0 / n as f64;
    let share_b = counts.get("b").copied().unwrap_or(0) as f64 * 100.0 / n as f64;
    assert!(
        (share_a - 90.0).abs() <= 1.5,
        "a got {share_a:.2}% ({counts:?})"
    );
    assert!(
        (share_b - 10.0).abs() <= 1.5,
        "b got {share_b:.2}% ({counts:?})"
    );
}
