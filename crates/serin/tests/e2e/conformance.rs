//! What a gateway owes HTTP (issue #12, point 4), and whose fault a failure
//! is (point 2): through real sockets, with raw clients and upstreams that
//! send what libraries will not.

use std::io::Write;
use std::net::TcpStream;
use std::time::Duration;

use serin_testkit::raw::exchange;
use serin_testkit::upstream::fixed_answer_upstream;

use crate::common::{Upstream, client, metric_value, metrics_text, proxy};

fn one_route(upstream: std::net::SocketAddr, service_extra: &str) -> String {
    format!(
        r#"
listeners:
  - name: gw
    address: 127.0.0.1:0
services:
  - name: svc
{service_extra}
    versions: [{{name: v1, endpoints: ["{upstream}"]}}]
routes:
  - name: r
    rules:
      - backendRefs: [{{name: svc, version: v1}}]
"#
    )
}

#[tokio::test]
async fn host_must_be_one_well_formed_name_that_agrees_with_the_target() {
    let up = Upstream::start("up");
    let serin = proxy(&one_route(up.addr, ""));
    let addr = serin.listener("gw");
    let cases: [(&str, &[u8]); 8] = [
        ("no Host", b"GET / HTTP/1.1\r\n\r\n"),
        ("two Hosts", b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"),
        ("empty Host", b"GET / HTTP/1.1\r\nHost: \r\n\r\n"),
        ("space in Host", b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n"),
        ("list in Host", b"GET / HTTP/1.1\r\nHost: a, b\r\n\r\n"),
        ("user info", b"GET / HTTP/1.1\r\nHost: u@a\r\n\r\n"),
        ("bad port", b"GET / HTTP/1.1\r\nHost: a:x\r\n\r\n"),
        (
            "absolute-form for another host",
            b"GET http://b.example/ HTTP/1.1\r\nHost: a.example\r\n\r\n",
        ),
    ];
    let mut wrong = Vec::new();
    for (kind, request) in cases {
        let raw = exchange(addr, request);
        if !raw.starts_with("HTTP/1.1 400 ") || !raw.contains("x-serin-reason: bad_host") {
            wrong.push(format!(
                "{kind}: {}",
                raw.lines().next().unwrap_or("(nothing)")
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    assert_eq!(up.requests(), 0, "a bad Host reached the upstream");
    // What is fine stays fine.
    for request in [
        &b"GET / HTTP/1.1\r\nHost: a.example:8080\r\nConnection: close\r\n\r\n"[..],
        b"GET http://a.example/ HTTP/1.1\r\nHost: a.example\r\nConnection: close\r\n\r\n",
        b"GET / HTTP/1.0\r\n\r\n",
    ] {
        let raw = exchange(addr, request);
        assert!(raw.starts_with("HTTP/1."), "{raw}");
        assert!(raw.contains(" 200 OK"), "{raw}");
    }
}

// The raw upstream is a task of this runtime, and the raw client blocks:
// two threads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_1_0_upstream_is_answered_as_http_1_1() {
    let up = fixed_answer_upstream(b"HTTP/1.0 200 OK\r\ncontent-length: 2\r\n\r\nok").await;
    let serin = proxy(&one_route(up, ""));
    let raw = exchange(
        serin.listener("gw"),
        b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    );
    assert!(raw.starts_with("HTTP/1.1 200 OK\r\n"), "{raw}");
    assert!(raw.ends_with("\r\n\r\nok"), "{raw}");
}

#[tokio::test]
async fn a_chunked_answer_with_a_content_length_is_read_by_its_chunks() {
    // Content-Length: 2 beside a 5-byte chunked body: the body is the
    // chunks (RFC 9112 §6.3), and the length must not go on to the client.
    let up = fixed_answer_upstream(
        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    )
    .await;
    let serin = proxy(&one_route(up, ""));
    let resp = client()
        .get(serin.url("gw"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers().get("content-length"), None);
    assert_eq!(resp.text().await.unwrap_or_default(), "hello");
}

#[tokio::test]
async fn connect_failures_that_use_up_their_retries_answer_503() {
    let dead = serin_testkit::DeadPort::new();
    let serin = proxy(&one_route(dead.addr, ""));
    let resp = client()
        .get(serin.url("gw"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(resp.status(), 503);
    assert_eq!(
        resp.headers().get("x-serin-reason").map(|v| v.as_bytes()),
        Some(&b"connect_failure"[..])
    );
}

/// A client that sends part of a declared body, then goes away.
fn abort_upload(addr: std::net::SocketAddr, how: &str) {
    let mut s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("{e}"));
    let head = match how {
        "chunked" => "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n100\r\nabc",
        _ => "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 100000\r\n\r\nabc",
    };
    s.write_all(head.as_bytes())
        .unwrap_or_else(|e| panic!("{e}"));
    // Let serin start the upstream exchange with the body streaming.
    std::thread::sleep(Duration::from_millis(150));
    if how == "reset" {
        // SO_LINGER 0: close sends RST.
        let sock = socket2::SockRef::from(&s);
        let _ = sock.set_linger(Some(Duration::ZERO));
    }
    drop(s);
}

#[tokio::test]
async fn a_client_that_aborts_its_upload_is_not_held_against_the_endpoint() {
    let up = Upstream::start("up");
    // One failure would eject the endpoint.
    let serin = proxy(&one_route(
        up.addr,
        "    outlierDetection: {consecutive5xx: 1, consecutiveGatewayErrors: 1, consecutiveLocalOriginFailures: 1, maxEjectionPercent: 100}",
    ));
    let addr = serin.listener("gw");
    for how in ["close", "reset", "chunked", "close", "reset", "chunked"] {
        tokio::task::spawn_blocking(move || abort_upload(addr, how))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    }
    // The aborted uploads are over once the upstream saw them end.
    let _ = serin_testkit::wait_until(Duration::from_secs(10), || up.requests() >= 1);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let endpoints: serde_json::Value = client()
        .get(serin.admin_url("/endpoints"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .json()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let ep = &endpoints["backends"][0]["endpoints"][0];
    assert_eq!(ep["ejected_for_ms"], 0, "{endpoints}");
    let metrics = metrics_text(&serin).await;
    assert_eq!(
        metric_value(
            &metrics,
            "serin_outlier_ejections_total{service=\"svc\",version=\"v1\"}"
        ),
        0.0,
        "{metrics}"
    );
    assert!(
        !metrics.contains("code=\"502\""),
        "an abort counted as the backend's 502:\n{metrics}"
    );
    // And the endpoint serves.
    let resp = client()
        .get(serin.url("gw"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn an_upstream_head_over_the_limit_is_not_forwarded() {
    // 100 KB of one header: over the 60 KiB bound the client's heads have.
    let mut answer = b"HTTP/1.1 200 OK\r\nx-big: ".to_vec();
    answer.extend(std::iter::repeat_n(b'a', 100 * 1024));
    answer.extend_from_slice(b"\r\ncontent-length: 2\r\n\r\nok");
    let up = fixed_answer_upstream(Box::leak(answer.into_boxed_slice())).await;
    let serin = proxy(&one_route(up, ""));
    let resp = client()
        .get(serin.url("gw"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(resp.status(), 502);
    assert_eq!(
        resp.headers().get("x-serin-reason").map(|v| v.as_bytes()),
        Some(&b"upstream_head_too_large"[..])
    );
    assert_eq!(resp.headers().get("x-big"), None);
}

#[tokio::test]
async fn every_series_the_config_implies_is_exported_at_zero_before_any_request() {
    let up = Upstream::start("up");
    let config = one_route(up.addr, "").replace(
        "      - backendRefs: [{name: svc, version: v1}]",
        "      - backendRefs: [{name: svc, version: v1}]\n        maxConcurrentRequests: 10\n        rateLimit: {requests: 100, unit: second}",
    );
    let serin = proxy(&config);
    let metrics = metrics_text(&serin).await;
    for series in [
        "serin_timeouts_total{route=\"r\",service=\"svc\",version=\"v1\",kind=\"request\"}",
        "serin_timeouts_total{route=\"r\",service=\"svc\",version=\"v1\",kind=\"backendRequest\"}",
        "serin_circuit_breaker_overflows_total{service=\"svc\",version=\"v1\",limit=\"maxConnections\"}",
        "serin_circuit_breaker_overflows_total{service=\"svc\",version=\"v1\",limit=\"maxPendingRequests\"}",
        "serin_circuit_breaker_overflows_total{service=\"svc\",version=\"v1\",limit=\"maxRequests\"}",
        "serin_circuit_breaker_overflows_total{service=\"svc\",version=\"v1\",limit=\"maxRetries\"}",
        "serin_outlier_ejections_total{service=\"svc\",version=\"v1\"}",
        "serin_retry_budget_exhausted_total{route=\"r\",service=\"svc\",version=\"v1\"}",
        "serin_faults_injected_total{route=\"r\",service=\"svc\",version=\"v1\"}",
        "serin_rate_limited_total{scope=\"local\",name=\"r\"}",
        "serin_load_shed_total{scope=\"route\",name=\"r\"}",
        "serin_config_reloads_total{result=\"success\"}",
        "serin_config_reloads_total{result=\"failure\"}",
        "serin_retries_total{route=\"r\",service=\"svc\",version=\"v1\"}",
        "serin_upstream_connect_failures_total{service=\"svc\",version=\"v1\"}",
    ] {
        assert_eq!(metric_value(&metrics, series), 0.0, "{series}");
    }
}
