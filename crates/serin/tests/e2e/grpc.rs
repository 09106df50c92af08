//! gRPC awareness (issue #13 point 8) with tonic's client and server: each
//! call's status is counted by its name whether it came in the trailers or
//! in a trailers-only head, and `grpc-timeout` caps the rule's deadline.

use std::time::Duration;

use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

use crate::common::{metric_value, metrics_text, proxy};
use crate::protocols::{grpc_health_server, grpc_health_upstream};

fn config(endpoint: std::net::SocketAddr) -> String {
    format!(
        r#"
listeners: [{{name: gw, address: 127.0.0.1:0}}]
services:
  - name: up
    protocol: h2c
    versions: [{{name: v1, endpoints: ["{endpoint}"]}}]
routes:
  - name: all
    rules:
      - backendRefs: [{{name: up, version: v1}}]
        timeouts: {{request: 1h}}
"#
    )
}

fn series(code: &str) -> String {
    format!(
        r#"serin_grpc_responses_total{{route="all",service="up",version="v1",grpc_code="{code}"}}"#
    )
}

async fn health(serin: &serin_testkit::Serin) -> HealthClient<tonic::transport::Channel> {
    let channel = tonic::transport::Channel::from_shared(serin.url("gw"))
        .unwrap_or_else(|e| panic!("uri: {e}"))
        .connect()
        .await
        .unwrap_or_else(|e| panic!("connect to serin: {e}"));
    HealthClient::new(channel)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_calls_status_is_counted_from_trailers_or_a_trailers_only_head() {
    let upstream = grpc_health_upstream().await;
    let serin = proxy(&config(upstream));
    let mut client = health(&serin).await;
    for service in ["", "down"] {
        let resp = client
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await;
        assert!(resp.is_ok(), "{service:?}: {resp:?}");
    }
    // tonic answers an error in the head alone (trailers-only).
    let err = client
        .check(HealthCheckRequest {
            service: "no.such.Service".into(),
        })
        .await
        .err()
        .unwrap_or_else(|| panic!("an unknown service answered OK"));
    assert_eq!(err.code(), tonic::Code::NotFound);
    let text = metrics_text(&serin).await;
    assert_eq!(metric_value(&text, &series("OK")), 2.0, "{text}");
    assert_eq!(metric_value(&text, &series("NOT_FOUND")), 1.0, "{text}");
    // The HTTP view stays what it was: every call answered 200.
    let http = r#"serin_requests_total{route="all",service="up",version="v1",code="200"}"#;
    assert_eq!(metric_value(&text, http), 3.0, "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serins_own_answers_reach_a_grpc_client_as_grpc_statuses() {
    // No rule for the health service's path: serin answers 404 itself.
    let upstream = grpc_health_upstream().await;
    let serin = proxy(&config(upstream).replace(
        "      - backendRefs:",
        "      - matches: [{path: {type: PathPrefix, value: /elsewhere}}]\n        backendRefs:",
    ));
    let mut client = health(&serin).await;
    let err = client
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .err()
        .unwrap_or_else(|| panic!("a call with no route answered OK"));
    // A text body would have been "Internal: invalid compression flag".
    assert_eq!(err.code(), tonic::Code::Unimplemented, "{err:?}");
    assert!(
        err.message().contains("/grpc.health.v1.Health/Check"),
        "the message does not say what had no route: {err:?}"
    );
    assert_eq!(
        err.metadata().get("x-serin-reason").map(|v| v.as_bytes()),
        Some(&b"no_route"[..]),
        "{err:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_timeout_caps_the_rules_deadline() {
    // An upstream that takes connections and never answers: only a
    // deadline ends a call to it. The rule's is an hour; the call's 300 ms.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let addr = silent.local_addr().unwrap_or_else(|e| panic!("{e}"));
    let held = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((s, _)) = silent.accept().await {
            open.push(s);
        }
    });
    let serin = proxy(&config(addr));
    // A plain HTTP/2 client: tonic would enforce `grpc-timeout` itself and
    // reset the call at the same moment as serin's deadline fires.
    let (mut tx, _conn) = crate::common::h2_connect(serin.listener("gw")).await;
    let req = http::Request::builder()
        .method("POST")
        .uri(format!("{}/grpc.health.v1.Health/Check", serin.url("gw")))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("grpc-timeout", "300m")
        // An empty HealthCheckRequest: no compression, length 0.
        .body(http_body_util::Full::new(bytes::Bytes::from_static(
            &[0; 5],
        )))
        .unwrap_or_else(|e| panic!("{e}"));
    // The test's own bound, far above the call's: if serin ignored
    // grpc-timeout, this is what ends the call.
    let resp = tokio::time::timeout(Duration::from_secs(120), tx.send_request(req))
        .await
        .unwrap_or_else(|_| panic!("the call did not end by serin's deadline"))
        .unwrap_or_else(|e| panic!("the call broke off: {e}"));
    // serin's 504, in gRPC's shape: a trailers-only UNAVAILABLE.
    let h = resp.headers();
    assert_eq!(resp.status(), 200, "{resp:?}");
    assert_eq!(h["content-type"], "application/grpc", "{resp:?}");
    assert_eq!(h["grpc-status"], "14", "{resp:?}");
    assert_eq!(h["x-serin-reason"], "request_timeout", "{resp:?}");
    assert!(
        h["grpc-message"].as_bytes().ends_with(b"timeout"),
        "{resp:?}"
    );
    let timed_out = r#"serin_timeouts_total{route="all",service="up",version="v1",kind="request"}"#;
    let (ok, text) = crate::common::metrics_until(&serin, |t| {
        t.lines()
            .any(|l| l.starts_with(timed_out) && !l.ends_with(" 0"))
    })
    .await;
    assert!(ok, "serin's request deadline did not fire:\n{text}");
    held.abort();
}

/// A tonic health server on 127.0.0.1 that knows the service `svc` only
/// when `knows_svc` (else a Check of it answers NOT_FOUND, trailers-only).
async fn health_server(knows_svc: bool) -> std::net::SocketAddr {
    let serving = [("svc", tonic_health::ServingStatus::Serving)];
    grpc_health_server(if knows_svc { &serving } else { &[] }).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_answered_with_a_named_grpc_code_is_retried_elsewhere() {
    let (knows, lacks) = (health_server(true).await, health_server(false).await);
    let serin = proxy(&format!(
        r#"
listeners: [{{name: gw, address: 127.0.0.1:0}}]
services:
  - name: up
    protocol: h2c
    loadBalancer: {{type: RoundRobin}}
    versions: [{{name: v1, endpoints: ["{knows}", "{lacks}"]}}]
routes:
  - name: all
    rules:
      - backendRefs: [{{name: up, version: v1}}]
        retry: {{attempts: 1, grpcCodes: [not-found]}}
"#
    ));
    let mut client = health(&serin).await;
    // Round robin sends calls to the endpoint that lacks the service too;
    // its NOT_FOUND is retried on the other one, so every call succeeds.
    for i in 0..6 {
        let resp = client
            .check(HealthCheckRequest {
                service: "svc".into(),
            })
            .await;
        assert!(resp.is_ok(), "call {i}: {resp:?}");
    }
    let text = metrics_text(&serin).await;
    let retries = r#"serin_retries_total{route="all",service="up",version="v1"}"#;
    let retried = metric_value(&text, retries);
    assert!((1.0..=6.0).contains(&retried), "{text}");
    // Counted once per call, as it ended: the retried NOT_FOUNDs are not.
    assert_eq!(metric_value(&text, &series("OK")), 6.0, "{text}");
    assert!(!text.contains(&series("NOT_FOUND")), "{text}");
}
