//! The request-body limit: 413 at once for a declared length over it,
//! and for a chunked body the moment the bytes read pass it, with the
//! upstream never getting a complete request; a rule's limit overrides the
//! listener's.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serin_testkit::raw::exchange;

use crate::common::{Upstream, client, echo, metric_value, metrics_text, proxy, wait_until};

/// An upstream that never answers and keeps every byte it was sent, and
/// whether the sender closed the connection.
struct Recorder {
    addr: SocketAddr,
    seen: Arc<Mutex<(Vec<u8>, bool)>>,
}

impl Recorder {
    fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("bind: {e}"));
        let addr = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
        let seen = Arc::new(Mutex::new((Vec::new(), false)));
        let record = seen.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { return };
                let mut buf = [0u8; 4096];
                let mut got = 0;
                loop {
                    match conn.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            got += n;
                            lock(&record).0.extend_from_slice(&buf[..n]);
                        }
                    }
                }
                // A connection opened and closed unused says nothing.
                if got > 0 {
                    lock(&record).1 = true;
                }
            }
        });
        Self { addr, seen }
    }

    fn seen(&self) -> (String, bool) {
        let seen = lock(&self.seen);
        (String::from_utf8_lossy(&seen.0).into_owned(), seen.1)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Sends one 600-byte chunk, waits until the upstream has it, sends
/// another, and reads the answer.
fn chunked_over_limit(gw: SocketAddr, seen: &Mutex<(Vec<u8>, bool)>) -> String {
    let chunk = format!("258\r\n{}\r\n", "x".repeat(600));
    let mut conn = TcpStream::connect(gw).unwrap_or_else(|e| panic!("connect: {e}"));
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap_or_else(|e| panic!("{e}"));
    let head = "POST /listener/up HTTP/1.1\r\nhost: a\r\ntransfer-encoding: chunked\r\n\r\n";
    conn.write_all(format!("{head}{chunk}").as_bytes())
        .unwrap_or_else(|e| panic!("write: {e}"));
    let streamed = wait_until(Duration::from_secs(10), || {
        body_bytes(&String::from_utf8_lossy(&lock(seen).0)) == 600
    });
    assert!(streamed, "the first chunk did not reach the upstream");
    conn.write_all(chunk.as_bytes())
        .unwrap_or_else(|e| panic!("write: {e}"));
    let mut answer = String::new();
    let _ = conn.read_to_string(&mut answer);
    answer
}

/// The body bytes (`x`) in what the upstream received after the head.
fn body_bytes(seen: &str) -> usize {
    seen.split_once("\r\n\r\n")
        .map_or(0, |(_, body)| body.matches('x').count())
}

fn config(recorder: SocketAddr, echo: &Upstream) -> String {
    format!(
        r#"
listeners:
  - name: gw
    address: 127.0.0.1:0
    limits: {{maxRequestBodyBytes: 1000}}
services:
  - name: recorder
    versions: [{{name: v1, endpoints: ["{recorder}"]}}]
  - name: echo
    versions: [{{name: v1, endpoints: ["{}"]}}]
routes:
  - name: r
    rules:
      - matches: [{{path: {{type: PathPrefix, value: /listener}}}}]
        backendRefs: [{{name: recorder}}]
      - matches: [{{path: {{type: PathPrefix, value: /small}}}}]
        maxRequestBodyBytes: 100
        backendRefs: [{{name: echo}}]
      - matches: [{{path: {{type: PathPrefix, value: /open}}}}]
        maxRequestBodyBytes: 0
        backendRefs: [{{name: echo}}]
"#,
        echo.addr
    )
}

#[tokio::test]
async fn bodies_over_the_limit_get_413_before_the_upstream_has_them() {
    let recorder = Recorder::start();
    let app = Upstream::start("echo");
    let serin = proxy(&config(recorder.addr, &app));
    let gw = serin.listener("gw");

    // Declared over the listener's limit: answered before a byte of body
    // is sent, and the upstream is not even connected to.
    let head = "POST /listener HTTP/1.1\r\nhost: a\r\ncontent-length: 2000\r\n\r\n";
    let answer = tokio::task::spawn_blocking(move || exchange(gw, head.as_bytes()))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(
        answer.contains("x-serin-reason: body_too_large"),
        "{answer}"
    );
    assert_eq!(recorder.seen().0, "", "the upstream saw nothing");

    // Chunked: 600 bytes pass and stream to the upstream; the next 600
    // cross the limit and cut the body the upstream was receiving: its
    // terminating chunk never comes.
    let seen = recorder.seen.clone();
    let answer = tokio::task::spawn_blocking(move || chunked_over_limit(gw, &seen))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(
        answer.contains("x-serin-reason: body_too_large"),
        "{answer}"
    );
    assert!(
        wait_until(Duration::from_secs(10), || recorder.seen().1),
        "serin did not close the upstream connection"
    );
    let (seen, _) = recorder.seen();
    assert!(seen.starts_with("POST /listener/up HTTP/1.1\r\n"), "{seen}");
    assert!(
        !seen.contains("\r\n0\r\n\r\n"),
        "the upstream got a complete chunked body: {seen}"
    );
    assert_eq!(
        body_bytes(&seen),
        600,
        "only what was within the limit reached the upstream"
    );

    // A rule's limit wins over the listener's, both ways.
    let http = client();
    let small = http
        .post(format!("{}/small", serin.url("gw")))
        .body(vec![b'a'; 101])
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(small.status(), 413);
    let open = http
        .post(format!("{}/open", serin.url("gw")))
        .body(vec![b'a'; 5000])
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(open.status(), 200);
    assert_eq!(echo(open).await["body"].as_str().map(str::len), Some(5000));
    assert_eq!(
        app.requests(),
        1,
        "only the request within its limit arrived"
    );

    let metrics = metrics_text(&serin).await;
    let refused = metric_value(
        &metrics,
        r#"serin_downstream_rejected_total{listener="gw",reason="body_too_large"}"#,
    );
    assert_eq!(refused, 3.0, "{metrics}");
}
