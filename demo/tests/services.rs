//! End-to-end tests: the real `serin-demo` binary as child processes.

mod support;

use std::time::Duration;

use serde_json::Value;
use support::{Demo, Redis, free_port, http, wait_for_status, write_file};

async fn get_json(url: &str) -> (u16, Value) {
    let resp = http().get(url).send().await.expect("request");
    let status = resp.status().as_u16();
    let body = resp.json::<Value>().await.expect("JSON body");
    (status, body)
}

async fn get_text(url: &str) -> (u16, String) {
    let resp = http().get(url).send().await.expect("request");
    let status = resp.status().as_u16();
    (status, resp.text().await.expect("body"))
}

fn keys(value: &Value) -> Vec<&str> {
    let mut keys: Vec<&str> = value
        .as_object()
        .expect("JSON object")
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    keys
}

// ---------------------------------------------------------------- qotm

#[tokio::test]
async fn qotm_answers_a_quote_at_any_path() {
    let qotm = Demo::new("qotm")
        .env("SERIN_REPLICA", "qotm-a")
        .start()
        .await;
    for path in ["/", "/qotm/", "/anything/else"] {
        let (status, body) = get_json(&qotm.url(path)).await;
        assert_eq!(status, 200, "{path}");
        assert_eq!(keys(&body), ["hostname", "ok", "quote", "time", "version"]);
        assert_eq!(body["hostname"], "qotm-a");
        assert_eq!(body["ok"], true);
        assert_eq!(body["version"], "v1");
        assert!(!body["quote"].as_str().unwrap().is_empty());
        let time = body["time"].as_str().unwrap();
        assert!(humantime_like(time), "time {time:?} is not RFC 3339 UTC");
    }
    let (status, body) = get_text(&qotm.url("/health")).await;
    assert_eq!((status, body.trim()), (200, "ok"));
    assert_eq!(get_text(&qotm.url("/ready")).await.0, 200);
}

fn humantime_like(t: &str) -> bool {
    // YYYY-MM-DDTHH:MM:SSZ
    let b = t.as_bytes();
    b.len() == 20 && b[4] == b'-' && b[10] == b'T' && b[19] == b'Z'
}

#[tokio::test]
async fn qotm_quote_by_index() {
    let qotm = Demo::new("qotm").args(["--version", "v2"]).start().await;
    let (status, body) = get_json(&qotm.url("/quote/1")).await;
    assert_eq!(status, 200);
    assert_eq!(body["quote"], "A late night does not make any sense.");
    assert_eq!(body["version"], "v2");

    let (status, body) = get_json(&qotm.url("/quote/10")).await;
    assert_eq!(status, 404);
    assert_eq!(body["ok"], false);
    assert!(body["error"].as_str().unwrap().contains("no quote 10"));

    let (status, body) = get_json(&qotm.url("/quote/one")).await;
    assert_eq!(status, 400);
    assert_eq!(body["ok"], false);
}

#[tokio::test]
async fn qotm_error_rate_one_fails_every_answer() {
    let qotm = Demo::new("qotm").args(["--error-rate", "1"]).start().await;
    for _ in 0..5 {
        let (status, body) = get_json(&qotm.url("/")).await;
        assert_eq!(status, 500);
        assert_eq!(body["ok"], false);
        assert_eq!(body["error"], "injected");
    }
    assert_eq!(get_text(&qotm.url("/health")).await.0, 200);
}

#[tokio::test]
async fn qotm_error_rate_zero_never_fails() {
    let qotm = Demo::new("qotm").args(["--error-rate", "0"]).start().await;
    for _ in 0..20 {
        assert_eq!(get_json(&qotm.url("/")).await.0, 200);
    }
}

#[tokio::test]
async fn qotm_rejects_a_bad_error_rate() {
    let mut qotm = Demo::new("qotm").args(["--error-rate", "1.5"]).spawn();
    let status = qotm.wait_exit(support::STARTUP).await;
    assert!(!status.success());
    assert!(
        qotm.stderr().contains("not between 0 and 1"),
        "{}",
        qotm.stderr()
    );
}

#[tokio::test]
async fn qotm_ready_after_delays_readiness() {
    let qotm = Demo::new("qotm")
        .args(["--ready-after", "3s"])
        .start()
        .await;
    let (status, body) = get_text(&qotm.url("/ready")).await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("not ready"), "{body}");
    // Serves while not ready.
    assert_eq!(get_json(&qotm.url("/")).await.0, 200);
    wait_for_status(&qotm.url("/ready"), 200).await;
}

#[tokio::test]
async fn qotm_with_delay_still_answers() {
    let qotm = Demo::new("qotm").args(["--delay", "100ms"]).start().await;
    assert_eq!(get_json(&qotm.url("/")).await.0, 200);
    assert_eq!(get_json(&qotm.url("/quote/0")).await.0, 200);
}

#[tokio::test]
async fn qotm_crash_exits_with_failure() {
    let mut qotm = Demo::new("qotm").start().await;
    let resp = http()
        .post(qotm.url("/crash"))
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.text().await.unwrap().trim(), "crashing");
    let status = qotm.wait_exit(support::STARTUP).await;
    assert_eq!(status.code(), Some(1), "{status}");
}

#[tokio::test]
async fn sigterm_exits_cleanly_and_logs_json_lines() {
    let mut qotm = Demo::new("qotm")
        .args(["--version", "v3"])
        .env("SERIN_REPLICA", "qotm-z")
        .start()
        .await;
    assert_eq!(get_json(&qotm.url("/quote/2")).await.0, 200);
    qotm.terminate();
    let status = qotm.wait_exit(support::STARTUP).await;
    assert_eq!(status.code(), Some(0), "{status}\n{}", qotm.stderr());

    let lines: Vec<Value> = qotm
        .stdout()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect();
    for line in &lines {
        assert_eq!(line["service"], "qotm", "{line}");
        assert_eq!(line["version"], "v3", "{line}");
        assert_eq!(line["replica"], "qotm-z", "{line}");
    }
    let request = lines
        .iter()
        .find(|l| l["message"] == "request" && l["path"] == "/quote/2")
        .expect("a request log line");
    assert_eq!(request["method"], "GET");
    assert_eq!(request["status"], 200);
    assert!(request["duration_ms"].is_number());
    assert!(lines.iter().any(|l| l["message"] == "listening"));
    assert!(lines.iter().any(|l| l["message"] == "stopped"));
}

#[tokio::test]
async fn missing_or_bad_port_is_an_error() {
    let mut missing = Demo::new("pinger").env_remove("PORT").spawn();
    assert!(!missing.wait_exit(support::STARTUP).await.success());
    assert!(missing.stderr().contains("PORT"), "{}", missing.stderr());

    let mut bad = Demo::new("pinger").env("PORT", "http").spawn();
    assert!(!bad.wait_exit(support::STARTUP).await.success());
    assert!(bad.stderr().contains("PORT=\"http\""), "{}", bad.stderr());
}

// ---------------------------------------------------------------- auth

const CREDENTIALS: &str = "\
# test credentials
token s3cr3t alice
basic bob hunter2
";

#[tokio::test]
async fn auth_allows_denies_and_challenges() {
    let dir = tempfile::tempdir().unwrap();
    let creds = write_file(dir.path(), "credentials", CREDENTIALS);
    let auth = Demo::new("auth")
        .arg("--credentials")
        .arg(&creds)
        .start()
        .await;
    let client = http();

    let resp = client
        .get(auth.url("/some/page?x=1"))
        .bearer_auth("s3cr3t")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-user"], "alice");
    assert_eq!(resp.text().await.unwrap(), "");

    let resp = client
        .post(auth.url("/api/orders"))
        .basic_auth("bob", Some("hunter2"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-user"], "bob");

    let resp = client.get(auth.url("/")).send().await.unwrap();
    assert_eq!(resp.status(), 401);
    assert_eq!(
        resp.headers()["www-authenticate"],
        r#"Basic realm="serin", Bearer"#
    );
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["ok"], false);

    for request in [
        client.get(auth.url("/")).bearer_auth("wrong"),
        client.get(auth.url("/")).basic_auth("bob", Some("nope")),
    ] {
        let resp = request.send().await.unwrap();
        assert_eq!(resp.status(), 403);
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["ok"], false);
        assert!(body["error"].is_string());
    }

    // The probes are the service's own; other methods on them are checked.
    assert_eq!(get_text(&auth.url("/health")).await.0, 200);
    assert_eq!(get_text(&auth.url("/ready")).await.0, 200);
    let resp = client.post(auth.url("/health")).send().await.unwrap();
    assert_eq!(resp.status(), 401);
}

#[tokio::test]
async fn auth_bad_credentials_line_names_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let creds = write_file(dir.path(), "credentials", "token ok alice\n\nbasic bob\n");
    let mut auth = Demo::new("auth")
        .env("AUTH_CREDENTIALS_FILE", &creds)
        .spawn();
    let status = auth.wait_exit(support::STARTUP).await;
    assert!(!status.success());
    let expected = format!("{}:3:", creds.display());
    assert!(auth.stderr().contains(&expected), "{}", auth.stderr());
}

// ---------------------------------------------------------------- pinger, details

#[tokio::test]
async fn pinger_v2_answers_with_more_detail() {
    let v1 = Demo::new("pinger").start().await;
    let (status, body) = get_json(&v1.url("/")).await;
    assert_eq!(status, 200);
    assert_eq!(keys(&body), ["message", "replica", "service", "version"]);
    assert_eq!(body["message"], "pong");
    assert_eq!(body["service"], "pinger");
    assert_eq!(body["replica"], "pinger-test");

    let v2 = Demo::new("pinger").env("SERIN_VERSION", "v2").start().await;
    get_json(&v2.url("/")).await;
    let (status, body) = get_json(&v2.url("/")).await;
    assert_eq!(status, 200);
    assert_eq!(body["version"], "v2");
    assert!(body["time"].is_string());
    assert!(body["uptime_seconds"].is_number());
    assert_eq!(body["requests_served"], 2);

    let detailed = Demo::new("pinger").arg("--detailed").start().await;
    let (_, body) = get_json(&detailed.url("/")).await;
    assert_eq!(body["version"], "v1");
    assert_eq!(body["requests_served"], 1);
}

#[tokio::test]
async fn details_answers_product_details() {
    let details = Demo::new("details").args(["--version", "v4"]).start().await;
    let (status, body) = get_json(&details.url("/")).await;
    assert_eq!(status, 200);
    assert_eq!(body["service"], "details");
    assert_eq!(body["version"], "v4");
    assert_eq!(body["replica"], "details-test");
    assert!(body["details"].is_object());
}

// ---------------------------------------------------------------- frontend

#[tokio::test]
async fn frontend_shows_both_dependencies() {
    let pinger = Demo::new("pinger")
        .args(["--version", "v2"])
        .env("SERIN_REPLICA", "pinger-r1")
        .start()
        .await;
    let details = Demo::new("details")
        .args(["--version", "v7"])
        .env("SERIN_REPLICA", "details-r9")
        .start()
        .await;
    let frontend = Demo::new("frontend")
        .env("PINGER_URL", pinger.base())
        .env("DETAILS_URL", details.base())
        .start()
        .await;

    let (status, page) = get_text(&frontend.url("/")).await;
    assert_eq!(status, 200);
    for needle in ["v2", "pinger-r1", "v7", "details-r9", "frontend-test"] {
        assert!(page.contains(needle), "page lacks {needle}:\n{page}");
    }
    assert!(!page.contains("card error"), "{page}");

    let (status, api) = get_json(&frontend.url("/api")).await;
    assert_eq!(status, 200);
    assert_eq!(api["ok"], true);
    assert_eq!(api["pinger"]["body"]["version"], "v2");
    assert_eq!(api["details"]["body"]["version"], "v7");
}

#[tokio::test]
async fn frontend_shows_an_error_when_a_dependency_is_down() {
    let pinger = Demo::new("pinger").start().await;
    let down = format!("http://127.0.0.1:{}", free_port());
    let frontend = Demo::new("frontend")
        .env("PINGER_URL", pinger.base())
        .env("DETAILS_URL", &down)
        .start()
        .await;

    let (status, page) = get_text(&frontend.url("/")).await;
    assert_eq!(status, 200);
    assert!(page.contains("card error"), "{page}");
    assert!(page.contains("details is unavailable"), "{page}");
    assert!(page.contains("pinger-test"), "{page}");

    let (status, api) = get_json(&frontend.url("/api")).await;
    assert_eq!(status, 502);
    assert_eq!(api["ok"], false);
    assert_eq!(api["pinger"]["ok"], true);
    assert_eq!(api["details"]["ok"], false);
    assert!(api["details"]["error"].is_string());
}

#[tokio::test]
async fn frontend_propagates_trace_headers() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    // A fake dependency that records the request heads it receives.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let fake = format!("http://{}", listener.local_addr().unwrap());
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = tx.send(String::from_utf8_lossy(&head).to_lowercase());
                let body = r#"{"service":"fake","version":"vf","replica":"fake-1"}"#;
                let answer = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\
                     content-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(answer.as_bytes()).await;
            });
        }
    });

    let frontend = Demo::new("frontend")
        .env("PINGER_URL", &fake)
        .env("DETAILS_URL", &fake)
        .start()
        .await;
    let traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    let resp = http()
        .get(frontend.url("/api"))
        .header("traceparent", traceparent)
        .header("x-request-id", "req-42")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    for _ in 0..2 {
        let head = tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .expect("the fake dependency got a request")
            .expect("request head");
        assert!(
            head.contains(&format!("traceparent: {traceparent}")),
            "{head}"
        );
        assert!(head.contains("x-request-id: req-42"), "{head}");
    }
}

// ---------------------------------------------------------------- counter

#[tokio::test]
async fn counter_counts_in_redis() {
    let mut redis = Redis::start();
    let counter = Demo::new("counter")
        .env("REDIS_URL", redis.url())
        .env("SERIN_REPLICA", "counter-r")
        .start()
        .await;
    wait_for_status(&counter.url("/ready"), 200).await;
    assert_eq!(
        get_text(&counter.url("/")).await,
        (200, "[counter-r] Redis counter value=1\n".to_owned())
    );
    assert_eq!(
        get_text(&counter.url("/")).await,
        (200, "[counter-r] Redis counter value=2\n".to_owned())
    );

    // Another key counts on its own.
    let other = Demo::new("counter")
        .env("REDIS_URL", redis.url())
        .args(["--key", "other"])
        .start()
        .await;
    let (status, text) = get_text(&other.url("/")).await;
    assert_eq!(status, 200);
    assert!(text.ends_with("Redis counter value=1\n"), "{text}");

    // Redis goes away: not ready, and counting fails clearly.
    redis.stop();
    wait_for_status(&counter.url("/ready"), 503).await;
    let (status, text) = get_text(&counter.url("/")).await;
    assert_eq!(status, 503);
    assert!(text.contains("Redis is unavailable"), "{text}");
}

#[tokio::test]
async fn counter_is_not_ready_without_redis() {
    let counter = Demo::new("counter")
        .env("REDIS_URL", format!("redis://127.0.0.1:{}/", free_port()))
        .start()
        .await;
    let (status, text) = get_text(&counter.url("/ready")).await;
    assert_eq!(status, 503);
    assert!(text.contains("Redis is unreachable"), "{text}");
    let (status, text) = get_text(&counter.url("/")).await;
    assert_eq!(status, 503);
    assert!(text.contains("Redis is unavailable"), "{text}");
}
