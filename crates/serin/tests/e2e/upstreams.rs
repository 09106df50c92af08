//! Upstreams: load balancing, pooling, h2c, timeouts and retries.

use std::collections::BTreeMap;

use crate::common::{Upstream, client, echo, header, metric_value, proxy};

fn config(endpoints: &[String], service_extra: &str, rule_extra: &str) -> String {
    let eps: Vec<String> = endpoints.iter().map(|e| format!("\"{e}\"")).collect();
    format!(
        r#"
listeners:
  - name: gw
    address: 127.0.0.1:0
services:
  - name: svc
{service_extra}
    versions:
      - name: v1
        endpoints: [{}]
routes:
  - name: r
    rules:
      - backendRefs: [{{name: svc, version: v1}}]
{rule_extra}
"#,
        eps.join(", ")
    )
}

async fn who(resp: reqwest::Response) -> (u16, String) {
    let status = resp.status().as_u16();
    let who = header(&resp, "x-upstream");
    let _ = resp.bytes().await;
    (status, who)
}

#[tokio::test]
async fn round_robin_visits_every_endpoint_in_turn_and_reuses_connections() {
    let ups: Vec<Upstream> = (0..3).map(|i| Upstream::start(&format!("u{i}"))).collect();
    let eps: Vec<String> = ups.iter().map(|u| u.addr.to_string()).collect();
    let serin = proxy(&config(&eps, "    loadBalancer: {type: RoundRobin}", ""));
    let http = client();
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for _ in 0..30 {
        let (status, u) = who(http
            .get(serin.url("gw"))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}")))
        .await;
        assert_eq!(status, 200);
        *counts.entry(u).or_default() += 1;
    }
    assert_eq!(
        counts.values().copied().collect::<Vec<_>>(),
        vec![10, 10, 10],
        "{counts:?}"
    );
    // Sequential requests reuse pooled keep-alive connections.
    for u in &ups {
        assert!(
            u.connections() <= 2,
            "{} opened {} connections for 10 requests",
            u.name,
            u.connections()
        );
    }
}

#[tokio::test]
async fn ring_hash_keeps_a_key_on_one_endpoint() {
    let ups: Vec<Upstream> = (0..3).map(|i| Upstream::start(&format!("u{i}"))).collect();
    let eps: Vec<String> = ups.iter().map(|u| u.addr.to_string()).collect();
    let serin = proxy(&config(
        &eps,
        "    loadBalancer: {type: RingHash, hashHeader: x-user}",
        "",
    ));
    let http = client();
    let mut seen = BTreeMap::new();
    for user in 0..30 {
        let key = format!("user-{user}");
        let (_, first) = who(http
            .get(serin.url("gw"))
            .header("x-user", &key)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}")))
        .await;
        for _ in 0..3 {
            let (_, again) = who(http
                .get(serin.url("gw"))
                .header("x-user", &key)
                .send()
                .await
                .unwrap_or_else(|e| panic!("{e}")))
            .await;
            assert_eq!(again, first, "{key} moved");
        }
        seen.insert(first, ());
    }
    assert!(
        seen.len() >= 2,
        "30 keys all landed on one endpoint: {seen:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_request_sends_less_to_a_slow_endpoint() {
    let fast = Upstream::start("fast");
    let slow = Upstream::start("slow");
    slow.set_delay(std::time::Duration::from_millis(300));
    let serin = proxy(&config(
        &[fast.addr.to_string(), slow.addr.to_string()],
        "",
        "",
    ));
    let http = client();
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let http = http.clone();
        let url = serin.url("gw");
        tasks.push(tokio::spawn(async move {
            for _ in 0..10 {
                let r = http
                    .get(&url)
                    .send()
                    .await
                    .unwrap_or_else(|e| panic!("{e}"));
                assert_eq!(r.status(), 200);
                let _ = r.bytes().await;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap_or_else(|e| panic!("{e}"));
    }
    assert!(
        fast.requests() > 2 * slow.requests(),
        "fast {} slow {}",
        fast.requests(),
        slow.requests()
    );
}

#[tokio::test]
async fn h2c_upstreams_get_http2() {
    let up = Upstream::start("h2");
    let serin = proxy(&config(&[up.addr.to_string()], "    protocol: h2c", ""));
    let seen = echo(
        client()
            .get(format!("{}/x", serin.url("gw")))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}")),
    )
    .await;
    assert_eq!(seen["version"], "HTTP/2.0");
    assert_eq!(seen["path"], "/x");
}

#[tokio::test]
async fn timeouts_answer_504() {
    let up = Upstream::start("slow");
    let serin = proxy(&config(
        &[up.addr.to_string()],
        "",
        "        timeouts: {request: 5s, backendRequest: 200ms}",
    ));
    let resp = client()
        .get(serin.url("gw"))
        .header("x-test-delay-ms", "3000")
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(resp.status(), 504);
    let serin2 = proxy(&config(
        &[up.addr.to_string()],
        "",
        "        timeouts: {request: 200ms}",
    ));
    let resp = client()
        .get(serin2.url("gw"))
        .header("x-test-delay-ms", "3000")
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(resp.status(), 504);
    let metrics = client()
        .get(serin2.admin_url("/metrics"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .text()
        .await
        .unwrap_or_default();
    assert!(
        metrics.contains(
            r#"serin_timeouts_total{route="r",service="svc",version="v1",kind="request"} 1"#
        ),
        "{metrics}"
    );
}

#[tokio::test]
async fn retries_only_where_safe() {
    let bad = Upstream::start("bad");
    bad.set_status(503);
    let good = Upstream::start("good");
    let eps = [bad.addr.to_string(), good.addr.to_string()];
    let serin = proxy(&config(
        &eps,
        "    loadBalancer: {type: RoundRobin}",
        "        retry: {attempts: 2, codes: [503], backoff: 1ms}",
    ));
    let http = client();
    for _ in 0..10 {
        let (status, u) = who(http
            .get(serin.url("gw"))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}")))
        .await;
        assert_eq!(
            (status, u.as_str()),
            (200, "good"),
            "GET is idempotent: retried"
        );
    }
    let bad_before = bad.requests();
    let mut post_503 = 0;
    for _ in 0..10 {
        let (status, _) = who(http
            .post(serin.url("gw"))
            .body("x")
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}")))
        .await;
        if status == 503 {
            post_503 += 1;
        }
    }
    // Round robin sends half the POSTs to the bad endpoint; they are not
    // tried again, so the client sees those 503s.
    assert_eq!(post_503, bad.requests() - bad_before);
    assert!(post_503 > 0);

    let serin_unsafe = proxy(&config(
        &eps,
        "    loadBalancer: {type: RoundRobin}",
        "        retry: {attempts: 2, codes: [503], backoff: 1ms, unsafeMethods: true}",
    ));
    for _ in 0..6 {
        let (status, _) = who(http
            .post(serin_unsafe.url("gw"))
            .body("x")
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}")))
        .await;
        assert_eq!(status, 200, "unsafeMethods: POST retried");
    }
}

#[tokio::test]
async fn connect_failures_are_retried_for_every_method() {
    let good = Upstream::start("good");
    // A port nothing listens on (held, so no test beside can take it).
    let dead_port = serin_testkit::DeadPort::new();
    let dead = dead_port.addr;
    let serin = proxy(&config(
        &[dead.to_string(), good.addr.to_string()],
        "    loadBalancer: {type: RoundRobin}",
        "",
    ));
    let http = client();
    for _ in 0..6 {
        let (status, _) = who(http
            .post(serin.url("gw"))
            .body("payload")
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}")))
        .await;
        assert_eq!(status, 200);
    }
    let metrics = http
        .get(serin.admin_url("/metrics"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .text()
        .await
        .unwrap_or_default();
    let failures = metric_value(
        &metrics,
        "serin_upstream_connect_failures_total{service=\"svc\",version=\"v1\"}",
    );
    let retries = metric_value(
        &metrics,
        "serin_retries_total{route=\"r\",service=\"svc\",version=\"v1\"}",
    );
    assert!(failures >= 1.0, "{metrics}");
    assert_eq!(
        failures, retries,
        "every connect failure was retried: {metrics}"
    );
}

#[tokio::test]
async fn a_dead_upstream_answers_503() {
    let dead_port = serin_testkit::DeadPort::new();
    let dead = dead_port.addr;
    let serin = proxy(&config(&[dead.to_string()], "", ""));
    let resp = client()
        .get(serin.url("gw"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(resp.status(), 503);
    assert!(
        resp.text()
            .await
            .unwrap_or_default()
            .contains("connect error")
    );
}

/// An upstream that speaks HTTP/2 only (h2c with prior knowledge, as a gRPC
/// server does): `/health` answers 200, or 503 while `sick` is set; every
/// other path 200. Counts the health checks it answered.
struct H2cOnly {
    addr: std::net::SocketAddr,
    checks: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    sick: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl H2cOnly {
    async fn start() -> Self {
        use std::sync::atomic::Ordering;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("bind: {e}"));
        let addr = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("addr: {e}"));
        let checks = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let sick = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (c, s) = (checks.clone(), sick.clone());
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (c, s) = (c.clone(), s.clone());
                let service = hyper::service::service_fn(move |req: http::Request<_>| {
                    let health = req.uri().path() == "/health"
                        && req.headers().get("user-agent")
                            == Some(&http::HeaderValue::from_static("serin-health-check"));
                    let status = if health {
                        c.fetch_add(1, Ordering::Relaxed);
                        if s.load(Ordering::Relaxed) { 503 } else { 200 }
                    } else {
                        200
                    };
                    async move {
                        http::Response::builder()
                            .status(status)
                            .header("x-upstream", "h2c-only")
                            .body(http_body_util::Full::new(bytes::Bytes::from_static(b"ok")))
                    }
                });
                tokio::spawn(async move {
                    let _ = hyper::server::conn::http2::Builder::new(
                        hyper_util::rt::TokioExecutor::new(),
                    )
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
                });
            }
        });
        Self { addr, checks, sick }
    }
}

/// Whether the admin API says the only endpoint is healthy.
async fn endpoint_healthy(serin: &crate::common::Serin) -> Option<bool> {
    let v: serde_json::Value = client()
        .get(serin.admin_url("/endpoints"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET /endpoints: {e}"))
        .json()
        .await
        .unwrap_or_default();
    v["backends"].as_array()?.first()?["endpoints"][0]["healthy"].as_bool()
}

/// Health checks of an h2c service are made over HTTP/2, as its requests
/// are: an upstream that speaks only HTTP/2 stays in (it was taken out by
/// checks made over HTTP/1.1), and a failing check over HTTP/2 takes it
/// out and a passing one brings it back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_services_are_health_checked_over_http2() {
    use std::sync::atomic::Ordering;
    let up = H2cOnly::start().await;
    let serin = proxy(&config(
        &[up.addr.to_string()],
        "    protocol: h2c\n    healthCheck: {path: /health, interval: 100ms, timeout: 2s, healthyThreshold: 1, unhealthyThreshold: 1}",
        "",
    ));
    let mut checked = false;
    for _ in 0..300 {
        if up.checks.load(Ordering::Relaxed) >= 3 {
            checked = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(checked, "three health checks answered over HTTP/2");
    assert_eq!(endpoint_healthy(&serin).await, Some(true));

    up.sick.store(true, Ordering::Relaxed);
    let mut out = false;
    for _ in 0..300 {
        if endpoint_healthy(&serin).await == Some(false) {
            out = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(out, "a 503 from /health over HTTP/2 takes the endpoint out");

    up.sick.store(false, Ordering::Relaxed);
    let mut back = false;
    for _ in 0..300 {
        if endpoint_healthy(&serin).await == Some(true) {
            back = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(back, "a 200 brings it back");
    let (status, who) = who(client()
        .get(serin.url("gw"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}")))
    .await;
    assert_eq!((status, who.as_str()), (200, "h2c-only"));
}
