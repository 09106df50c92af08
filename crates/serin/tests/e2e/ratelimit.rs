//! Rate limits: local token buckets per client, and a global limit shared
//! by two serin processes through a real redis-server.

use std::process::Command;

use crate::common::{Program, Upstream, client, metric_value, metrics_text, proxy};

fn config(up: &Upstream, rate_limit: &str) -> String {
    format!(
        r#"
listeners:
  - name: gw
    address: 127.0.0.1:0
services:
  - name: svc
    versions: [{{name: v1, endpoints: ["{}"]}}]
routes:
  - name: r
    rules:
      - backendRefs: [{{name: svc, version: v1}}]
        rateLimit:
{rate_limit}
"#,
        up.addr
    )
}

#[tokio::test]
async fn a_client_over_its_limit_gets_429_with_headers_that_say_when() {
    let up = Upstream::start("up");
    let serin = proxy(&config(
        &up,
        "          requests: 5\n          unit: minute",
    ));
    let http = client();
    for i in 0..5 {
        let r = http
            .get(serin.url("gw"))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.status(), 200, "request {i}");
        assert_eq!(
            r.headers().get("ratelimit-limit").map(|v| v.as_bytes()),
            Some(&b"5"[..])
        );
        let remaining: u32 = r
            .headers()
            .get("ratelimit-remaining")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .unwrap_or(99);
        assert_eq!(remaining, 4 - i);
    }
    let r = http
        .get(serin.url("gw"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.status(), 429);
    let retry_after: u64 = r
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    assert_eq!(
        r.headers().get("ratelimit-remaining").map(|v| v.as_bytes()),
        Some(&b"0"[..])
    );
    assert_eq!(up.requests(), 5);
    let m = metrics_text(&serin).await;
    assert_eq!(
        metric_value(&m, r#"serin_rate_limited_total{scope="local",name="r"}"#),
        1.0
    );
}

#[tokio::test]
async fn a_header_key_gives_each_caller_its_own_bucket() {
    let up = Upstream::start("up");
    let serin = proxy(&config(
        &up,
        "          requests: 2\n          unit: hour\n          key: {type: Header, name: x-api-key}",
    ));
    let http = client();
    let status = |key: &'static str| {
        let http = http.clone();
        let url = serin.url("gw");
        async move {
            http.get(url)
                .header("x-api-key", key)
                .send()
                .await
                .map(|r| r.status().as_u16())
                .unwrap_or(0)
        }
    };
    assert_eq!(status("alice").await, 200);
    assert_eq!(status("alice").await, 200);
    assert_eq!(status("alice").await, 429);
    assert_eq!(status("bob").await, 200);
}

/// A real redis-server on a free port (up when it says it is ready).
struct Redis(Program);

fn redis() -> Redis {
    Redis(Program::start(
        "redis-server",
        |port| {
            let mut c = Command::new("redis-server");
            c.args([
                "--port",
                &port.to_string(),
                "--save",
                "",
                "--appendonly",
                "no",
                "--bind",
                "127.0.0.1",
            ]);
            c
        },
        |log, _| log.contains("Ready to accept connections"),
    ))
}

#[tokio::test]
async fn a_global_limit_is_shared_by_two_serin_processes_through_redis() {
    let redis = redis();
    let up = Upstream::start("up");
    let cfg = config(
        &up,
        &format!(
            "          requests: 10\n          unit: hour\n          global: {{redis: \"redis://127.0.0.1:{}/\", failOpen: false}}",
            redis.0.port
        ),
    );
    let a = proxy(&cfg);
    let b = proxy(&cfg);
    let http = client();
    let mut ok = 0;
    let mut limited = 0;
    for i in 0..16 {
        let serin = if i % 2 == 0 { &a } else { &b };
        let r = http
            .get(serin.url("gw"))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        match r.status().as_u16() {
            200 => ok += 1,
            429 => limited += 1,
            s => panic!("unexpected {s}"),
        }
    }
    assert_eq!((ok, limited), (10, 6), "ten allowed across both processes");
    // Fail closed: with Redis gone, requests are refused with 503.
    drop(redis);
    let r = http
        .get(a.url("gw"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.status(), 503);
}

#[tokio::test]
async fn a_global_limit_fails_open_when_told_to() {
    let up = Upstream::start("up");
    // Nothing listens there, and no test beside can start to.
    let dead = serin_testkit::DeadPort::new();
    let port = dead.addr.port();
    let serin = proxy(&config(
        &up,
        &format!(
            "          requests: 1\n          unit: hour\n          global: {{redis: \"redis://127.0.0.1:{port}/\", failOpen: true}}"
        ),
    ));
    for _ in 0..3 {
        let r = client()
            .get(serin.url("gw"))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.status(), 200);
    }
}
