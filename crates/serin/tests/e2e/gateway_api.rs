//! Gateway API semantics the file format follows (issue #12, point 4): a
//! rule without backendRefs answers 500, a backendRef that is not a core
//! Service answers 500 for its weight share, and a core Service written out
//! (`group: ""`, `kind: Service`) is a backend like any other.

use std::collections::BTreeMap;

use crate::common::{Upstream, client, header, metric_value, metrics_text, proxy};

/// Who answered `n` GETs of `path`: the upstream's name, or the status and
/// `x-serin-reason` when serin answered itself.
async fn answers(serin: &serin_testkit::Serin, path: &str, n: usize) -> BTreeMap<String, usize> {
    let http = client();
    let mut seen = BTreeMap::new();
    for _ in 0..n {
        let resp = http
            .get(format!("{}{path}", serin.url("gw")))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{path}: {e}"));
        let who = match header(&resp, "x-upstream") {
            up if !up.is_empty() => up,
            _ => format!(
                "{} {}",
                resp.status().as_u16(),
                header(&resp, "x-serin-reason")
            ),
        };
        let _ = resp.bytes().await;
        *seen.entry(who).or_insert(0) += 1;
    }
    seen
}

#[tokio::test]
async fn a_rule_without_backend_refs_answers_500_and_a_redirect_still_redirects() {
    let up = Upstream::start("up");
    let serin = proxy(&format!(
        r#"
listeners: [{{name: gw, address: 127.0.0.1:0}}]
services: [{{name: svc, versions: [{{name: v1, endpoints: ["{}"]}}]}}]
routes:
  - name: none
    rules:
      - matches: [{{path: {{value: /none}}}}]
  - name: moved
    rules:
      - matches: [{{path: {{value: /old}}}}]
        filters: [{{type: RequestRedirect, requestRedirect: {{path: {{type: ReplaceFullPath, replaceFullPath: /new}}}}}}]
  - name: app
    rules:
      - backendRefs: [{{name: svc}}]
"#,
        up.addr
    ));
    // The series is there before the first such request.
    let before = metrics_text(&serin).await;
    let series = r#"serin_unserved_requests_total{route="none",reason="no_backend"}"#;
    assert_eq!(metric_value(&before, series), 0.0);

    let got = answers(&serin, "/none/x", 5).await;
    assert_eq!(got, BTreeMap::from([("500 no_backend".to_string(), 5)]));
    let redirect = serin_config::http_client::builder()
        .unwrap_or_else(|e| panic!("{e}"))
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap_or_else(|e| panic!("{e}"))
        .get(format!("{}/old", serin.url("gw")))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(redirect.status(), 302);
    assert!(header(&redirect, "location").ends_with("/new"));
    assert_eq!(
        answers(&serin, "/app", 3).await,
        BTreeMap::from([("up".to_string(), 3)])
    );
    assert_eq!(up.requests(), 3, "only the routed requests reached it");
    assert_eq!(metric_value(&metrics_text(&serin).await, series), 5.0);
}

#[tokio::test]
async fn a_backend_ref_that_is_not_a_service_answers_500_for_its_share() {
    let up = Upstream::start("up");
    let serin = proxy(&format!(
        r#"
listeners: [{{name: gw, address: 127.0.0.1:0}}]
services: [{{name: svc, versions: [{{name: v1, endpoints: ["{}"]}}]}}]
routes:
  - name: mixed
    rules:
      - backendRefs:
          - {{group: "", kind: Service, name: svc, weight: 3}}
          - {{group: example.com, kind: Bucket, name: files, weight: 1}}
  - name: other
    rules:
      - matches: [{{path: {{value: /other}}}}]
        backendRefs: [{{kind: ConfigMap, name: settings}}]
"#,
        up.addr
    ));
    let got = answers(&serin, "/", 400).await;
    let served = got.get("up").copied().unwrap_or(0);
    let refused = got.get("500 invalid_backend").copied().unwrap_or(0);
    assert_eq!(served + refused, 400, "{got:?}");
    assert!((60..=140).contains(&refused), "a quarter is 500: {got:?}");
    assert_eq!(up.requests(), served);
    assert_eq!(
        answers(&serin, "/other", 5).await,
        BTreeMap::from([("500 invalid_backend".to_string(), 5)])
    );
    let text = metrics_text(&serin).await;
    let share = |route: &str| {
        metric_value(
            &text,
            &format!(
                r#"serin_unserved_requests_total{{route="{route}",reason="invalid_backend"}}"#
            ),
        )
    };
    assert_eq!(share("mixed"), refused as f64);
    assert_eq!(share("other"), 5.0);
}

/// `backendRefs[].filters`: each backend's header modifiers apply to the
/// requests sent to it and its answers only, after the rule's own.
#[tokio::test]
async fn a_backend_refs_filters_touch_only_its_own_requests_and_answers() {
    let (v1, v2) = (Upstream::start("v1"), Upstream::start("v2"));
    let serin = proxy(&format!(
        r#"
listeners: [{{name: gw, address: 127.0.0.1:0}}]
services:
  - name: s
    versions:
      - {{name: v1, endpoints: ["{}"]}}
      - {{name: v2, endpoints: ["{}"]}}
routes:
  - name: r
    rules:
      - filters:
          - type: RequestHeaderModifier
            requestHeaderModifier: {{set: [{{name: x-picked, value: rule}}]}}
        backendRefs:
          - name: s
            version: v1
            filters:
              - type: RequestHeaderModifier
                requestHeaderModifier: {{set: [{{name: x-picked, value: v1}}]}}
          - name: s
            version: v2
            filters:
              - type: ResponseHeaderModifier
                responseHeaderModifier: {{add: [{{name: x-served-by, value: v2}}]}}
"#,
        v1.addr, v2.addr
    ));
    let http = client();
    let mut seen = BTreeMap::new();
    for _ in 0..40 {
        let resp = http
            .get(serin.url("gw"))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let served_by = header(&resp, "x-served-by");
        let echo = crate::common::echo(resp).await;
        let upstream = echo["upstream"].as_str().unwrap_or("?").to_string();
        let picked = echo["headers"]["x-picked"]
            .as_str()
            .unwrap_or("")
            .to_string();
        *seen.entry((upstream, picked, served_by)).or_insert(0) += 1;
    }
    // v1 sees its own value over the rule's; v2 sees the rule's, and only
    // v2's answers carry its response header.
    let kinds: Vec<_> = seen.keys().cloned().collect();
    assert_eq!(
        kinds,
        vec![
            ("v1".into(), "v1".into(), String::new()),
            ("v2".into(), "rule".into(), "v2".into()),
        ],
        "{seen:?}"
    );
}
