//! Request mirroring: shadows get a copy, the primary never waits, and the
//! shadows' statuses are compared with the primary's.

use crate::common::{Upstream, client, echo, metrics_until, proxy, wait_until};

fn config(v1: &Upstream, v2: &Upstream, percent: u32) -> String {
    config_with_share(v1, v2, &format!("percent: {percent}"))
}

/// The mirror's share as written: `percent: 25`, `fraction: {...}`.
fn config_with_share(v1: &Upstream, v2: &Upstream, share: &str) -> String {
    format!(
        r#"
listeners:
  - name: gw
    address: 127.0.0.1:0
services:
  - name: svc
    versions:
      - {{name: v1, endpoints: ["{}"]}}
      - {{name: v2, endpoints: ["{}"]}}
routes:
  - name: r
    rules:
      - filters:
          - type: RequestMirror
            requestMirror: {{backendRef: {{name: svc, version: v2}}, {share}}}
        backendRefs: [{{name: svc, version: v1}}]
"#,
        v1.addr, v2.addr
    )
}

#[tokio::test]
async fn shadows_get_copies_and_their_differences_are_counted() {
    let v1 = Upstream::start("v1");
    let v2 = Upstream::start("v2");
    v2.set_status(500);
    let serin = proxy(&config(&v1, &v2, 100));
    let http = client();
    for i in 0..20 {
        let r = http
            .post(format!("{}/orders", serin.url("gw")))
            .body(format!("order {i}"))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.status(), 200, "the client only ever sees the primary");
        let seen = echo(r).await;
        assert_eq!(seen["upstream"], "v1");
        assert_eq!(seen["body"], format!("order {i}"));
    }
    assert!(wait_until(std::time::Duration::from_secs(10), || v2
        .requests()
        == 20));
    let (counted, text) = metrics_until(&serin, |m| {
        m.contains(
            r#"serin_mirror_responses_total{service="svc",version="v2",result="different"} 20"#,
        )
    })
    .await;
    assert!(counted, "{text}");
    // Same status: counted as such.
    v2.set_status(0);
    for _ in 0..5 {
        let _ = http.get(serin.url("gw")).send().await;
    }
    let (same, text) = metrics_until(&serin, |m| {
        m.contains(r#"serin_mirror_responses_total{service="svc",version="v2",result="same"} 5"#)
    })
    .await;
    assert!(same, "{text}");
}

#[tokio::test]
async fn the_primary_never_waits_for_a_slow_shadow() {
    let v1 = Upstream::start("v1");
    let v2 = Upstream::start("v2");
    // Longer than the test client's own 30 s timeout: waiting would fail.
    v2.set_delay(std::time::Duration::from_secs(120));
    let serin = proxy(&config(&v1, &v2, 100));
    for _ in 0..3 {
        let r = client()
            .get(serin.url("gw"))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.status(), 200);
    }
    assert!(wait_until(std::time::Duration::from_secs(10), || v2
        .requests()
        == 3));
}

#[tokio::test]
async fn a_percent_mirrors_a_share() {
    let v1 = Upstream::start("v1");
    let v2 = Upstream::start("v2");
    let serin = proxy(&config(&v1, &v2, 25));
    let http = client();
    for _ in 0..400 {
        let _ = http.get(serin.url("gw")).send().await;
    }
    std::thread::sleep(std::time::Duration::from_millis(300));
    let n = v2.requests();
    assert!((60..=140).contains(&n), "{n} of 400 mirrored at 25%");
}

/// Gateway API v1.2's `fraction` beside `percent`: numerator over
/// denominator (100 when absent) of the requests are mirrored.
#[tokio::test]
async fn a_fraction_mirrors_its_share() {
    let http = client();
    for (share, low, high) in [
        ("fraction: {numerator: 1, denominator: 4}", 60, 140),
        ("fraction: {numerator: 0}", 0, 0),
        ("fraction: {numerator: 3, denominator: 3}", 400, 400),
    ] {
        let v1 = Upstream::start("v1");
        let v2 = Upstream::start("v2");
        let serin = proxy(&config_with_share(&v1, &v2, share));
        for _ in 0..400 {
            let _ = http.get(serin.url("gw")).send().await;
        }
        assert!(
            wait_until(std::time::Duration::from_secs(5), || v2.requests() >= low),
            "{share}: {} of 400 mirrored",
            v2.requests()
        );
        std::thread::sleep(std::time::Duration::from_millis(300));
        let n = v2.requests();
        assert!((low..=high).contains(&n), "{share}: {n} of 400 mirrored");
        assert_eq!(v1.requests(), 400);
    }
}

/// A shadow is bounded by its rule's request timeout: one whose mirror
/// never answers ends as an `error` (and lets its connection go) instead
/// of holding its task and connection for good.
#[tokio::test]
async fn a_shadow_that_never_answers_ends_at_the_rule_timeout() {
    let v1 = Upstream::start("v1");
    let v2 = Upstream::start("v2");
    v2.set_delay(std::time::Duration::from_secs(3600));
    let config = config(&v1, &v2, 100).replace(
        "        backendRefs: [{name: svc, version: v1}]\n",
        "        backendRefs: [{name: svc, version: v1}]\n        timeouts: {request: 1s}\n",
    );
    assert!(config.contains("timeouts"), "{config}");
    let serin = proxy(&config);
    for _ in 0..2 {
        let r = client()
            .get(serin.url("gw"))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.status(), 200, "the primary answers in time");
    }
    let (ended, text) = metrics_until(&serin, |m| {
        m.contains(r#"serin_mirror_responses_total{service="svc",version="v2",result="error"} 2"#)
    })
    .await;
    assert!(ended, "{text}");
}
