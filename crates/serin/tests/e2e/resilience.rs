//! Containing failures: circuit breakers, load shedding, fault injection.

use std::io::{Read, Write};
use std::time::Duration;

use crate::common::{Upstream, client, header, metric_value, metrics_text, proxy, wait_until};

fn config(up: &Upstream, service_extra: &str, rule_extra: &str, listener_extra: &str) -> String {
    format!(
        r#"
listeners:
  - name: gw
    address: 127.0.0.1:0
{listener_extra}
services:
  - name: svc
{service_extra}
    versions: [{{name: v1, endpoints: ["{}"]}}]
routes:
  - name: r
    rules:
      - backendRefs: [{{name: svc, version: v1}}]
{rule_extra}
"#,
        up.addr
    )
}

/// Sends `n` requests at once (each held `delay_ms` by the upstream) and
/// returns (status, overflow header) of each.
async fn concurrent(url: &str, n: usize, delay_ms: u64) -> Vec<(u16, String)> {
    let http = client();
    let tasks: Vec<_> = (0..n)
        .map(|_| {
            let http = http.clone();
            let url = url.to_string();
            tokio::spawn(async move {
                let r = http
                    .get(&url)
                    .header("x-test-delay-ms", delay_ms.to_string())
                    .send()
                    .await
                    .unwrap_or_else(|e| panic!("{e}"));
                let h = header(&r, "x-serin-overflow");
                (r.status().as_u16(), h)
            })
        })
        .collect();
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.unwrap_or_else(|e| panic!("{e}")));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn max_requests_refuses_at_once_with_a_header_saying_why() {
    let up = Upstream::start("slow");
    let serin = proxy(&config(&up, "    circuitBreaker: {maxRequests: 2}", "", ""));
    let results = concurrent(&serin.url("gw"), 5, 3000).await;
    let ok = results.iter().filter(|(s, _)| *s == 200).count();
    let refused = results
        .iter()
        .filter(|(s, h)| *s == 503 && h == "maxRequests")
        .count();
    assert_eq!((ok, refused), (2, 3), "{results:?}");
    assert_eq!(
        up.requests(),
        2,
        "refused requests never reach the upstream"
    );
    let m = metrics_text(&serin).await;
    assert_eq!(
        metric_value(
            &m,
            r#"serin_circuit_breaker_overflows_total{service="svc",version="v1",limit="maxRequests"}"#
        ),
        3.0
    );
}

#[tokio::test]
async fn max_retries_bounds_retries_in_flight() {
    let up = Upstream::start("failing");
    up.set_status(503);
    let serin = proxy(&config(
        &up,
        "    circuitBreaker: {maxRetries: 0}",
        "        retry: {attempts: 3, codes: [503], backoff: 1ms}",
        "",
    ));
    for _ in 0..5 {
        let r = client()
            .get(serin.url("gw"))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.status(), 503);
    }
    assert_eq!(up.requests(), 5, "no retry was allowed");
    let m = metrics_text(&serin).await;
    assert_eq!(
        metric_value(
            &m,
            r#"serin_circuit_breaker_overflows_total{service="svc",version="v1",limit="maxRetries"}"#
        ),
        5.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rule_sheds_requests_past_its_concurrency_limit() {
    let up = Upstream::start("slow");
    let serin = proxy(&config(&up, "", "        maxConcurrentRequests: 1", ""));
    let results = concurrent(&serin.url("gw"), 3, 3000).await;
    let refused = results
        .iter()
        .filter(|(s, h)| *s == 503 && h == "maxConcurrentRequests")
        .count();
    assert_eq!(refused, 2, "{results:?}");
    let m = metrics_text(&serin).await;
    assert_eq!(
        metric_value(&m, r#"serin_load_shed_total{scope="route",name="r"}"#),
        2.0
    );
}

#[test]
fn a_listener_refuses_connections_past_its_limit() {
    let up = Upstream::start("up");
    let serin = proxy(&config(&up, "", "", "    limits: {maxConnections: 1}"));
    let addr = serin.listener("gw");
    // One keep-alive connection holds the only slot.
    let mut first = std::net::TcpStream::connect(addr).unwrap_or_else(|e| panic!("{e}"));
    first
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap_or_else(|e| panic!("{e}"));
    let mut buf = [0u8; 4096];
    first
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap_or_else(|e| panic!("{e}"));
    let n = first.read(&mut buf).unwrap_or_else(|e| panic!("{e}"));
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    let second = serin_testkit::raw::exchange(addr, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(second.starts_with("HTTP/1.1 503"), "{second}");
    assert!(
        second.contains("x-serin-overflow: maxConnections"),
        "{second}"
    );
    drop(first);
    let freed = wait_until(Duration::from_secs(10), || {
        serin_testkit::raw::exchange(
            addr,
            b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
        .starts_with("HTTP/1.1 200")
    });
    assert!(freed, "the slot came back when the first connection closed");
}

#[tokio::test]
async fn faults_are_injected_for_a_share_or_by_header() {
    let up = Upstream::start("up");
    let serin = proxy(&config(
        &up,
        "",
        r#"        fault:
          abort: {httpStatus: 503, percent: 100}
          headers: [{name: x-fault, value: abort}]"#,
        "",
    ));
    let http = client();
    let r = http
        .get(serin.url("gw"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.status(), 200);
    let r = http
        .get(serin.url("gw"))
        .header("x-fault", "abort")
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.status(), 503);
    assert_eq!(
        r.headers().get("x-serin-fault").map(|v| v.as_bytes()),
        Some(&b"abort"[..])
    );
    assert_eq!(up.requests(), 1);

    let half = proxy(&config(
        &up,
        "",
        r#"        fault:
          delay: {fixedDelay: 1ms, percent: 100}
          abort: {httpStatus: 500, percent: 50}"#,
        "",
    ));
    let mut aborted = 0;
    for _ in 0..400 {
        let r = http
            .get(half.url("gw"))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        if r.status() == 500 {
            aborted += 1;
        }
    }
    assert!((120..=280).contains(&aborted), "{aborted} of 400 aborted");
    let m = metrics_text(&half).await;
    assert_eq!(
        metric_value(
            &m,
            r#"serin_requests_total{route="r",service="svc",version="v1",code="500"}"#
        ),
        f64::from(aborted)
    );
    assert!(
        metric_value(
            &m,
            r#"serin_faults_injected_total{route="r",service="svc",version="v1"}"#
        ) >= 400.0
    );
}

fn multi_config(ups: &[&Upstream], service_extra: &str) -> String {
    let eps: Vec<String> = ups.iter().map(|u| format!("\"{}\"", u.addr)).collect();
    format!(
        r#"
listeners:
  - name: gw
    address: 127.0.0.1:0
services:
  - name: svc
    loadBalancer: {{type: RoundRobin}}
{service_extra}
    versions: [{{name: v1, endpoints: [{}]}}]
routes:
  - name: r
    rules:
      - backendRefs: [{{name: svc, version: v1}}]
"#,
        eps.join(", ")
    )
}

async fn endpoints_json(serin: &crate::common::Serin) -> serde_json::Value {
    client()
        .get(serin.admin_url("/endpoints"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .json()
        .await
        .unwrap_or_default()
}

#[tokio::test]
async fn an_endpoint_that_keeps_failing_is_ejected() {
    let good1 = Upstream::start("good1");
    let good2 = Upstream::start("good2");
    let bad = Upstream::start("bad");
    bad.set_status(500);
    let serin = proxy(&multi_config(
        &[&good1, &bad, &good2],
        "    outlierDetection: {consecutive5xx: 3, baseEjectionTime: 60s, maxEjectionPercent: 50}",
    ));
    let http = client();
    let mut errors = 0;
    for _ in 0..60 {
        let r = http
            .get(serin.url("gw"))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        if r.status() == 500 {
            errors += 1;
        }
    }
    assert_eq!(bad.requests(), 3, "ejected after three 5xx in a row");
    assert_eq!(errors, 3);
    let eps = endpoints_json(&serin).await;
    let bad_state = eps["backends"][0]["endpoints"]
        .as_array()
        .and_then(|l| {
            l.iter()
                .find(|e| e["address"] == bad.addr.to_string())
                .cloned()
        })
        .unwrap_or_default();
    assert!(
        bad_state["ejected_for_ms"].as_u64().unwrap_or(0) > 0,
        "{eps}"
    );
    let m = metrics_text(&serin).await;
    assert_eq!(
        metric_value(
            &m,
            r#"serin_outlier_ejections_total{service="svc",version="v1"}"#
        ),
        1.0
    );
}

#[tokio::test]
async fn failing_health_checks_take_an_endpoint_out_and_passing_ones_bring_it_back() {
    let a = Upstream::start("a");
    let b = Upstream::start("b");
    a.set_status(503);
    let serin = proxy(&multi_config(
        &[&a, &b],
        "    healthCheck: {path: /health, interval: 100ms, timeout: 1s, healthyThreshold: 1, unhealthyThreshold: 2}",
    ));
    let unhealthy = |want: bool| {
        let serin = &serin;
        let a_addr = a.addr.to_string();
        async move {
            for _ in 0..200 {
                let eps = endpoints_json(serin).await;
                let state = eps["backends"][0]["endpoints"]
                    .as_array()
                    .and_then(|l| l.iter().find(|e| e["address"] == a_addr).cloned())
                    .unwrap_or_default();
                if state["healthy"] == serde_json::Value::Bool(!want) {
                    return true;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            false
        }
    };
    assert!(unhealthy(true).await, "a never marked unhealthy");
    let http = client();
    for _ in 0..20 {
        // a answers 503 to everything: a 200 from b means a was skipped.
        let r = http
            .get(serin.url("gw"))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.status(), 200, "only the healthy endpoint gets traffic");
    }
    a.set_status(0);
    assert!(unhealthy(false).await, "a never came back");
    let mut from_a = 0;
    for _ in 0..20 {
        let r = http
            .get(serin.url("gw"))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        if r.headers().get("x-upstream").map(|v| v.as_bytes()) == Some(&b"a"[..]) {
            from_a += 1;
        }
    }
    assert!(from_a >= 5, "a gets its share again ({from_a} of 20)");
}

#[tokio::test]
async fn below_the_panic_threshold_traffic_spreads_over_every_endpoint() {
    let a = Upstream::start("a");
    let b = Upstream::start("b");
    a.set_status(503);
    b.set_status(503);
    let serin = proxy(&multi_config(
        &[&a, &b],
        "    healthCheck: {path: /health, interval: 100ms, healthyThreshold: 1, unhealthyThreshold: 1}\n    panicThreshold: 50",
    ));
    let mut both_down = false;
    for _ in 0..200 {
        let eps = endpoints_json(&serin).await;
        if eps.to_string().matches("\"healthy\":false").count() == 2 {
            both_down = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(both_down);
    let mut seen = std::collections::BTreeMap::new();
    for _ in 0..20 {
        let r = client()
            .get(serin.url("gw"))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let who = header(&r, "x-upstream");
        *seen.entry(who).or_insert(0) += 1;
    }
    assert!(
        seen.get("a") >= Some(&5) && seen.get("b") >= Some(&5),
        "spread over both: {seen:?}"
    );
}

#[tokio::test]
async fn a_retry_budget_bounds_the_extra_load_on_a_failing_upstream() {
    let up = Upstream::start("failing");
    up.set_status(503);
    let serin = proxy(&config(
        &up,
        "",
        "        retry: {attempts: 3, codes: [503], backoff: 0ms, budget: {percent: 20, minRetriesPerSecond: 1, ttl: 10s}}",
        "",
    ));
    let http = client();
    let n = 300;
    for _ in 0..n {
        let r = http
            .get(serin.url("gw"))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.status(), 503);
    }
    // Without a budget: 4 tries each (1200). With it: 20 % more, plus the
    // reserve of 1 a second over 10 s.
    let seen = up.requests();
    assert!(seen >= n, "{seen}");
    assert!(
        seen <= n + n / 5 + 10 + 5,
        "the upstream saw {seen} requests for {n}"
    );
    let m = metrics_text(&serin).await;
    assert!(
        metric_value(
            &m,
            r#"serin_retry_budget_exhausted_total{route="r",service="svc",version="v1"}"#
        ) > 0.0
    );
}

#[tokio::test]
async fn retry_after_is_honoured_and_a_long_one_is_not_waited_for() {
    let up = Upstream::start("busy");
    let serin = proxy(&config(
        &up,
        "",
        "        retry: {attempts: 1, codes: [503], backoff: 0ms}",
        "",
    ));
    let http = client();
    let r = http
        .get(serin.url("gw"))
        .header("x-test-status", "503")
        .header("x-test-retry-after", "3600")
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.status(), 503);
    assert_eq!(
        r.headers().get("retry-after").map(|v| v.as_bytes()),
        Some(&b"3600"[..])
    );
    assert_eq!(
        up.requests(),
        1,
        "an hour is not waited for: the client gets the answer"
    );
    let r = http
        .get(serin.url("gw"))
        .header("x-test-status", "503")
        .header("x-test-retry-after", "0")
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.status(), 503);
    assert_eq!(up.requests(), 3, "retried after the (zero) delay asked for");
}

/// The chaos test: three replicas, one answering 500s and one slow, under
/// continuous load. The bad ones are ejected, retries stay bounded (counted
/// at the upstreams), and the client sees no failure a healthy replica
/// could have served.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn chaos_bad_replicas_are_contained() {
    let good = Upstream::start("good");
    let erroring = Upstream::start("erroring");
    erroring.set_status(500);
    let slow = Upstream::start("slow");
    slow.set_delay(Duration::from_secs(5));
    let eps = [&good, &erroring, &slow]
        .iter()
        .map(|u| format!("\"{}\"", u.addr))
        .collect::<Vec<_>>()
        .join(", ");
    let serin = proxy(&format!(
        r#"
listeners:
  - name: gw
    address: 127.0.0.1:0
services:
  - name: qotm
    outlierDetection:
      consecutive5xx: 3
      consecutiveLocalOriginFailures: 2
      baseEjectionTime: 60s
      maxEjectionPercent: 67
    # One healthy replica of three is enough: no panic mode.
    panicThreshold: 30
    versions: [{{name: v1, endpoints: [{eps}]}}]
routes:
  - name: qotm
    rules:
      - backendRefs: [{{name: qotm, version: v1}}]
        timeouts: {{request: 10s, backendRequest: 300ms}}
        retry: {{attempts: 2, codes: [500, 502, 503, 504], backoff: 1ms}}
"#
    ));
    let clients = 8;
    let per_client = 50;
    let tasks: Vec<_> = (0..clients)
        .map(|_| {
            let url = serin.url("gw");
            tokio::spawn(async move {
                let http = client();
                let mut failures = Vec::new();
                for _ in 0..per_client {
                    match http.get(&url).send().await {
                        Ok(r) if r.status() == 200 => {}
                        Ok(r) => failures.push(r.status().to_string()),
                        Err(e) => failures.push(e.to_string()),
                    }
                }
                failures
            })
        })
        .collect();
    let mut failures = Vec::new();
    for t in tasks {
        failures.extend(t.await.unwrap_or_else(|e| panic!("{e}")));
    }
    let m = metrics_text(&serin).await;
    assert!(
        failures.is_empty(),
        "{} client failures: {:?}\n{}",
        failures.len(),
        &failures[..failures.len().min(5)],
        m.lines()
            .filter(|l| !l.starts_with('#') && !l.contains("_bucket"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    // Each bad replica got its threshold's worth, plus what was already in
    // flight when it was ejected (at most one per client).
    assert!(
        erroring.requests() <= 3 + clients,
        "erroring saw {}",
        erroring.requests()
    );
    assert!(
        slow.requests() <= 2 + clients,
        "slow saw {}",
        slow.requests()
    );
    let total = clients * per_client;
    assert_eq!(
        good.requests(),
        total,
        "every request was served by the healthy replica"
    );
    let m = metrics_text(&serin).await;
    assert_eq!(
        metric_value(
            &m,
            r#"serin_outlier_ejections_total{service="qotm",version="v1"}"#
        ),
        2.0
    );
    let retries = metric_value(
        &m,
        r#"serin_retries_total{route="qotm",service="qotm",version="v1"}"#,
    );
    assert!(
        retries as usize <= erroring.requests() + slow.requests(),
        "{retries} retries"
    );
}

/// Requests on two workers queue for one upstream connection: each place
/// given back must wake a waiter, whichever worker it waits on. A lost
/// wake-up leaves a request waiting until its deadline (504).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn waiting_requests_on_every_worker_get_the_freed_connection() {
    let up = Upstream::start("v1");
    let serin = proxy(&config(
        &up,
        "    circuitBreaker: {maxConnections: 1, maxPendingRequests: 1000}",
        "",
        "workers: 2",
    ));
    let results = concurrent(&serin.url("gw"), 200, 1).await;
    let failed: Vec<_> = results.iter().filter(|(s, _)| *s != 200).collect();
    assert!(failed.is_empty(), "{} failed: {failed:?}", failed.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn max_connections_queues_up_to_max_pending_requests() {
    let up = Upstream::start("slow");
    let serin = proxy(&config(
        &up,
        "    circuitBreaker: {maxConnections: 1, maxPendingRequests: 1}",
        "",
        // One worker: an idle pooled connection holds no place, so with two
        // workers the waiting request may open its own (still one in use).
        "workers: 1",
    ));
    let results = concurrent(&serin.url("gw"), 3, 3000).await;
    let ok = results.iter().filter(|(s, _)| *s == 200).count();
    let refused = results
        .iter()
        .filter(|(s, h)| *s == 503 && h == "maxPendingRequests")
        .count();
    // One on the only connection, one waiting for it, one refused.
    assert_eq!((ok, refused), (2, 1), "{results:?}");
    assert_eq!(up.connections(), 1, "never more than maxConnections");
    let m = metrics_text(&serin).await;
    assert_eq!(
        metric_value(
            &m,
            r#"serin_circuit_breaker_overflows_total{service="svc",version="v1",limit="maxPendingRequests"}"#
        ),
        1.0
    );
}
