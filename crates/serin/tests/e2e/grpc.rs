//! gRPC awareness (issue #13 point 8) with tonic's client and server: each
//! call's status is counted by its name whether it came in the trailers or
//! in a trailers-only head, and `grpc-timeout` caps the rule's deadline.

use std::time::Duration;

use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

use crate::common::{metric_value, metrics_text, proxy};
use crate::protocols::grpc_health_upstream;

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
    let mut client = health(&serin).await;
    let mut req = tonic::Request::new(HealthCheckRequest {
        service: String::new(),
    });
    req.set_timeout(Duration::from_millis(300));
    // The test's own bound, far above the call's: if serin ignored
    // grpc-timeout, this is what ends the call.
    let call = tokio::time::timeout(Duration::from_secs(120), client.check(req)).await;
    let err = match call {
        Ok(Err(e)) => e,
        other => panic!("the call did not end by serin's deadline: {other:?}"),
    };
    // tonic reads serin's 504 as UNAVAILABLE, or its own timer may fire.
    assert!(
        matches!(
            err.code(),
            tonic::Code::Unavailable | tonic::Code::Cancelled | tonic::Code::DeadlineExceeded
        ),
        "{err:?}"
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
