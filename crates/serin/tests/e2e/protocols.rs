//! Protocols (issue point 6), each with real clients: curl over HTTP/1.1,
//! h2c and TLS (ALPN), nghttp, a tonic gRPC client and server, a WebSocket
//! client and server; hop-by-hop and forwarding headers; request ids and
//! trace context; truncated upstream bodies.

use std::net::SocketAddr;
use std::process::{Command, Output};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Full};
use serin_testkit::process::TempDir;
use serin_testkit::raw;
use serin_testkit::upstream::{fixed_answer_upstream, truncating_upstream};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;

use crate::common::{Serin, Upstream, client, echo, proxy};

/// A config with one listener `gw` sending everything to `endpoint`.
fn config_for(endpoint: SocketAddr, protocol: &str, listener_extra: &str) -> String {
    format!(
        r#"
listeners:
  - name: gw
    address: 127.0.0.1:0
{listener_extra}
services:
  - name: up
    protocol: {protocol}
    versions:
      - name: v1
        endpoints: ["{endpoint}"]
routes:
  - name: all
    rules:
      - backendRefs: [{{name: up, version: v1}}]
"#
    )
}

fn echo_proxy(up: &Upstream) -> Serin {
    proxy(&config_for(up.addr, "http1", ""))
}

/// A command-line tool the tests need. A missing tool fails the test with
/// what to install: these tests never skip.
fn tool(name: &str) -> Command {
    let found = Command::new(name)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        found,
        "`{name}` is needed by this test but cannot be run: install it \
         (Debian: `apt-get install -y curl nghttp2-client`)"
    );
    Command::new(name)
}

/// Runs a command off the async runtime (servers in the test may live on it).
async fn run(mut cmd: Command) -> Output {
    let shown = format!("{cmd:?}");
    tokio::task::spawn_blocking(move || cmd.output())
        .await
        .unwrap_or_else(|e| panic!("{shown}: {e}"))
        .unwrap_or_else(|e| panic!("{shown}: {e}"))
}

/// curl with no proxy from the environment, quiet but showing errors.
fn curl() -> Command {
    let mut c = tool("curl");
    c.args(["-sS", "--noproxy", "*", "--max-time", "20"]);
    c
}

/// What a curl run that used `-w '\n%{http_version}'` printed: the body and
/// the HTTP version curl spoke.
fn body_and_version(out: &Output) -> (serde_json::Value, String) {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "curl failed ({}): {}\n{stdout}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let (body, version) = stdout
        .rsplit_once('\n')
        .unwrap_or_else(|| panic!("no version line in {stdout:?}"));
    let json = serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"));
    (json, version.trim().to_string())
}

fn header<'a>(echoed: &'a serde_json::Value, name: &str) -> Option<&'a str> {
    echoed["headers"][name].as_str()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_over_http1_and_h2c_prior_knowledge() {
    let up = Upstream::start("up");
    let serin = echo_proxy(&up);
    let url = format!("{}/hello?x=1", serin.url("gw"));

    let mut c = curl();
    c.args(["--http1.1", "-w", "\n%{http_version}", &url]);
    let (json, version) = body_and_version(&run(c).await);
    assert_eq!(version, "1.1");
    assert_eq!(json["path"], "/hello");
    assert_eq!(json["query"], "x=1");
    assert_eq!(json["version"], "HTTP/1.1");

    let mut c = curl();
    c.args(["--http2-prior-knowledge", "-w", "\n%{http_version}", &url]);
    let (json, version) = body_and_version(&run(c).await);
    assert_eq!(version, "2", "curl did not speak HTTP/2 with serin");
    assert_eq!(json["path"], "/hello");
    // The upstream is HTTP/1.1 whatever the client spoke.
    assert_eq!(json["version"], "HTTP/1.1");

    // A body goes up over HTTP/2 too.
    let mut c = curl();
    c.args([
        "--http2-prior-knowledge",
        "-w",
        "\n%{http_version}",
        "--data-binary",
        "posted over h2",
        &url,
    ]);
    let (json, version) = body_and_version(&run(c).await);
    assert_eq!(version, "2");
    assert_eq!(json["method"], "POST");
    assert_eq!(json["body"], "posted over h2");
    assert_eq!(up.requests(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nghttp_speaks_h2c_with_serin() {
    let up = Upstream::start("up");
    let serin = echo_proxy(&up);
    let url = format!("{}/from-nghttp", serin.url("gw"));
    let mut c = tool("nghttp");
    c.args(["-v", "-H", "x-from: nghttp", &url]);
    let out = run(c).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "nghttp failed ({}): {stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains(":status: 200"), "no 200 in:\n{stdout}");
    assert!(
        stdout.contains("\"path\":\"/from-nghttp\""),
        "no echo in:\n{stdout}"
    );
    assert!(
        stdout.contains("\"x-from\":\"nghttp\""),
        "header lost:\n{stdout}"
    );
    assert_eq!(up.requests(), 1);
}

/// A self-signed certificate for `localhost` and its key, written to `dir`.
fn self_signed(dir: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()])
        .unwrap_or_else(|e| panic!("rcgen: {e}"));
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    std::fs::write(&cert, ck.cert.pem()).unwrap_or_else(|e| panic!("write cert: {e}"));
    std::fs::write(&key, ck.signing_key.serialize_pem())
        .unwrap_or_else(|e| panic!("write key: {e}"));
    (cert, key)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_alpn_h2_and_http1() {
    let up = Upstream::start("up");
    let certs = TempDir::new("serin-tls");
    let (cert, key) = self_signed(certs.path());
    let serin = proxy(&config_for(
        up.addr,
        "http1",
        &format!(
            "    tls: {{certificate: \"{}\", key: \"{}\"}}",
            cert.display(),
            key.display()
        ),
    ));
    let addr = serin.listener("gw");
    let url = format!("https://localhost:{}/secure", addr.port());
    let resolve = format!("localhost:{}:127.0.0.1", addr.port());
    let cacert = cert.display().to_string();

    for (flag, want) in [("--http1.1", "1.1"), ("--http2", "2")] {
        let mut c = curl();
        c.args([
            flag,
            "--cacert",
            &cacert,
            "--resolve",
            &resolve,
            "-w",
            "\n%{http_version}",
            &url,
        ]);
        let (json, version) = body_and_version(&run(c).await);
        assert_eq!(version, want, "curl {flag} over TLS spoke HTTP/{version}");
        assert_eq!(json["path"], "/secure");
        assert_eq!(header(&json, "x-forwarded-proto"), Some("https"));
        assert_eq!(
            header(&json, "host"),
            Some(&*format!("localhost:{}", addr.port()))
        );
    }

    // Plain HTTP on the TLS port is not served.
    let mut c = curl();
    c.args(["--http1.1", &format!("http://{addr}/")]);
    let out = run(c).await;
    assert!(
        !out.status.success(),
        "plain HTTP was served on a TLS listener"
    );
    assert_eq!(up.requests(), 2);
}

/// A tonic health server on 127.0.0.1 (HTTP/2 only): the `""` service is
/// SERVING, `"down"` NOT_SERVING.
pub(crate) async fn grpc_health_upstream() -> SocketAddr {
    grpc_health_server(&[("down", tonic_health::ServingStatus::NotServing)]).await
}

/// A tonic health server on 127.0.0.1 that knows `""` (SERVING) and the
/// services of `statuses`; any other is NOT_FOUND.
pub(crate) async fn grpc_health_server(
    statuses: &[(&str, tonic_health::ServingStatus)],
) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|e| panic!("bind: {e}"));
    let addr = listener
        .local_addr()
        .unwrap_or_else(|e| panic!("addr: {e}"));
    let (reporter, service) = tonic_health::server::health_reporter();
    for (name, status) in statuses {
        reporter.set_service_status(name, *status).await;
    }
    tokio::spawn(async move {
        let _keep = reporter;
        let incoming = tonic::transport::server::TcpIncoming::from(listener);
        if let Err(e) = tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(incoming)
            .await
        {
            eprintln!("gRPC upstream: {e}");
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_end_to_end_with_tonic() {
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;

    let upstream = grpc_health_upstream().await;
    let serin = proxy(&config_for(upstream, "h2c", ""));
    let channel = tonic::transport::Channel::from_shared(serin.url("gw"))
        .unwrap_or_else(|e| panic!("uri: {e}"))
        .connect()
        .await
        .unwrap_or_else(|e| panic!("connect to serin: {e}"));
    let mut health = HealthClient::new(channel);

    let resp = health
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap_or_else(|e| panic!("Check through serin failed: {e:?}"));
    assert_eq!(resp.get_ref().status(), ServingStatus::Serving);

    let resp = health
        .check(HealthCheckRequest {
            service: "down".into(),
        })
        .await
        .unwrap_or_else(|e| panic!("Check through serin failed: {e:?}"));
    assert_eq!(resp.get_ref().status(), ServingStatus::NotServing);

    // An error status arrives as that status, with its message.
    let err = health
        .check(HealthCheckRequest {
            service: "no.such.Service".into(),
        })
        .await
        .err()
        .unwrap_or_else(|| panic!("an unknown service answered OK through serin"));
    assert_eq!(err.code(), tonic::Code::NotFound, "{err:?}");
    assert_eq!(err.message(), "service not registered");

    // A server stream: Watch sends the current status and stays open.
    let mut stream = health
        .watch(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap_or_else(|e| panic!("Watch through serin failed: {e:?}"))
        .into_inner();
    let first = stream
        .message()
        .await
        .unwrap_or_else(|e| panic!("Watch stream broke: {e:?}"))
        .unwrap_or_else(|| panic!("Watch stream ended at once"));
    assert_eq!(first.status(), ServingStatus::Serving);
}

/// gRPC over a plain HTTP/2 client, to look at what tonic hides: the
/// response's trailers carry `grpc-status: 0` after the message, and an error
/// keeps its `grpc-status` and `grpc-message`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_trailers_and_status_are_preserved() {
    let upstream = grpc_health_upstream().await;
    let serin = proxy(&config_for(upstream, "h2c", ""));
    let (mut tx, _conn) = crate::common::h2_connect(serin.listener("gw")).await;

    // A gRPC message: uncompressed flag, 4-byte length, protobuf bytes.
    fn grpc_frame(msg: &[u8]) -> Bytes {
        let mut b = vec![0u8];
        b.extend_from_slice(&u32::try_from(msg.len()).unwrap_or(0).to_be_bytes());
        b.extend_from_slice(msg);
        Bytes::from(b)
    }
    let check = |service: &str| {
        // HealthCheckRequest { service = 1 (string) }.
        let mut msg = Vec::new();
        if !service.is_empty() {
            msg.push(0x0a);
            msg.push(u8::try_from(service.len()).unwrap_or(0));
            msg.extend_from_slice(service.as_bytes());
        }
        http::Request::builder()
            .method("POST")
            .uri(format!(
                "http://{}/grpc.health.v1.Health/Check",
                serin.listener("gw")
            ))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(Full::new(grpc_frame(&msg)))
            .unwrap_or_else(|e| panic!("request: {e}"))
    };

    let resp = tx
        .send_request(check(""))
        .await
        .unwrap_or_else(|e| panic!("Check: {e}"));
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "application/grpc");
    let collected = resp
        .into_body()
        .collect()
        .await
        .unwrap_or_else(|e| panic!("Check body: {e}"));
    let trailers = collected
        .trailers()
        .cloned()
        .unwrap_or_else(|| panic!("the gRPC response lost its trailers"));
    assert_eq!(
        trailers.get("grpc-status").map(|v| v.as_bytes()),
        Some(&b"0"[..]),
        "trailers: {trailers:?}"
    );
    // HealthCheckResponse { status = 1 (SERVING) }.
    assert_eq!(&collected.to_bytes()[..], &grpc_frame(&[0x08, 0x01])[..]);

    // An error: tonic answers it in the response head ("trailers-only").
    let resp = tx
        .send_request(check("no.such.Service"))
        .await
        .unwrap_or_else(|e| panic!("Check: {e}"));
    let head = resp.headers().clone();
    let collected = resp
        .into_body()
        .collect()
        .await
        .unwrap_or_else(|e| panic!("Check body: {e}"));
    let trailers = collected.trailers().cloned().unwrap_or_default();
    let status = head
        .get("grpc-status")
        .or_else(|| trailers.get("grpc-status"))
        .map(|v| v.as_bytes().to_vec());
    assert_eq!(
        status.as_deref(),
        Some(&b"5"[..]),
        "head {head:?} trailers {trailers:?}"
    );
    let message = head
        .get("grpc-message")
        .or_else(|| trailers.get("grpc-message"))
        .map(|v| v.as_bytes().to_vec());
    // grpc-message is percent-encoded on the wire.
    assert_eq!(message.as_deref(), Some(&b"service%20not%20registered"[..]));
}

/// A WebSocket upstream: greets each client, then echoes every message
/// back with a prefix.
async fn websocket_upstream() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|e| panic!("bind: {e}"));
    let addr = listener
        .local_addr()
        .unwrap_or_else(|e| panic!("addr: {e}"));
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else {
                    return;
                };
                if ws.send(Message::text("welcome")).await.is_err() {
                    return;
                }
                while let Some(Ok(msg)) = ws.next().await {
                    let reply = match msg {
                        Message::Text(t) => Message::text(format!("echo: {}", t.as_str())),
                        Message::Binary(b) => Message::binary(b),
                        Message::Close(_) => break,
                        _ => continue,
                    };
                    if ws.send(reply).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_is_tunnelled_after_101() {
    let upstream = websocket_upstream().await;
    let serin = proxy(&config_for(upstream, "http1", ""));
    let url = format!("ws://{}/chat", serin.listener("gw"));
    let (mut ws, resp) = tokio_tungstenite::connect_async(url)
        .await
        .unwrap_or_else(|e| panic!("WebSocket handshake through serin: {e}"));
    assert_eq!(resp.status(), 101);

    let next = |m: Option<Result<Message, _>>| match m {
        Some(Ok(m)) => m,
        other => panic!("expected a message, got {other:?}"),
    };
    // Upstream → client, unprompted.
    assert_eq!(next(ws.next().await), Message::text("welcome"));
    // Client → upstream → client, several times on the same tunnel.
    for i in 0..5 {
        ws.send(Message::text(format!("hello {i}")))
            .await
            .unwrap_or_else(|e| panic!("send: {e}"));
        assert_eq!(
            next(ws.next().await),
            Message::text(format!("echo: hello {i}"))
        );
    }
    let blob: Vec<u8> = (0..=255u8).cycle().take(100_000).collect();
    ws.send(Message::binary(blob.clone()))
        .await
        .unwrap_or_else(|e| panic!("send: {e}"));
    assert_eq!(next(ws.next().await), Message::binary(blob));
    ws.close(None)
        .await
        .unwrap_or_else(|e| panic!("close: {e}"));
}

/// Reads one HTTP/1.1 response with a Content-Length body from a blocking
/// stream: (head, body).
fn read_response(s: &mut std::net::TcpStream) -> (String, String) {
    use std::io::Read;
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        let n = s
            .read(&mut byte)
            .unwrap_or_else(|e| panic!("read head: {e}"));
        assert!(
            n > 0,
            "closed in the head: {}",
            String::from_utf8_lossy(&buf)
        );
        buf.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&buf).into_owned();
    let len: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .unwrap_or_else(|| panic!("no content-length in {head}"));
    let mut body = vec![0u8; len];
    s.read_exact(&mut body)
        .unwrap_or_else(|e| panic!("read body: {e}"));
    (head, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrade_answered_200_is_not_tunnelled() {
    let up = Upstream::start("up");
    let serin = echo_proxy(&up);
    let addr = serin.listener("gw");
    let (first, second) = tokio::task::spawn_blocking(move || {
        use std::io::Write;
        let mut s = std::net::TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect: {e}"));
        s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
            .unwrap_or_else(|e| panic!("timeout: {e}"));
        s.write_all(
            b"GET /ws HTTP/1.1\r\nHost: example.test\r\nConnection: Upgrade\r\n\
              Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\
              Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
        )
        .unwrap_or_else(|e| panic!("write: {e}"));
        let first = read_response(&mut s);
        // Still HTTP on this connection: serin parses the next request and
        // adds its headers (a tunnel would pass the bytes on untouched).
        s.write_all(b"GET /after HTTP/1.1\r\nHost: example.test\r\n\r\n")
            .unwrap_or_else(|e| panic!("write: {e}"));
        let second = read_response(&mut s);
        (first, second)
    })
    .await
    .unwrap_or_else(|e| panic!("client: {e}"));
    assert!(
        first.0.starts_with("HTTP/1.1 200"),
        "first answer: {}",
        first.0
    );
    let json: serde_json::Value =
        serde_json::from_str(&first.1).unwrap_or_else(|e| panic!("not JSON ({e}): {}", first.1));
    assert_eq!(json["path"], "/ws");
    assert!(
        second.0.starts_with("HTTP/1.1 200"),
        "second answer: {}",
        second.0
    );
    let json: serde_json::Value =
        serde_json::from_str(&second.1).unwrap_or_else(|e| panic!("not JSON ({e}): {}", second.1));
    assert_eq!(json["path"], "/after");
    assert!(
        header(&json, "x-request-id").is_some() && header(&json, "x-forwarded-for").is_some(),
        "the request after a refused upgrade went through a tunnel: {json}"
    );
    assert_eq!(up.requests(), 2);
}

/// A raw HTTP/1.1 upstream answering every request with `response`; counts
/// requests.
async fn fixed_upstream(response: &'static [u8]) -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|e| panic!("bind: {e}"));
    let addr = listener
        .local_addr()
        .unwrap_or_else(|e| panic!("addr: {e}"));
    let count = Arc::new(AtomicUsize::new(0));
    let n = count.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let n = n.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    let Ok(read) = s.read(&mut chunk).await else {
                        return;
                    };
                    if read == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..read]);
                    // Requests here have no body: one head, one answer.
                    while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        buf.drain(..end + 4);
                        n.fetch_add(1, Ordering::SeqCst);
                        if s.write_all(response).await.is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    (addr, count)
}

/// The header lines of a raw response head, lower-cased names.
fn head_lines(resp: &str) -> Vec<(String, String)> {
    resp.split("\r\n\r\n")
        .next()
        .unwrap_or("")
        .lines()
        .skip(1)
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hop_by_hop_headers_are_removed_on_the_way_up() {
    let up = Upstream::start("up");
    let serin = echo_proxy(&up);
    let addr = serin.listener("gw");
    let resp = tokio::task::spawn_blocking(move || {
        raw::exchange(
            addr,
            b"GET /hop HTTP/1.1\r\nHost: example.test\r\n\
              Connection: close, x-hop-named\r\nX-Hop-Named: secret\r\n\
              Keep-Alive: timeout=5\r\nProxy-Connection: keep-alive\r\n\
              TE: trailers, deflate\r\nUpgrade: h2c\r\n\
              Proxy-Authorization: Basic Zm9vOmJhcg==\r\n\
              X-End-To-End: kept\r\n\r\n",
        )
    })
    .await
    .unwrap_or_else(|e| panic!("client: {e}"));
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    let body = resp.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    let json: serde_json::Value =
        serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {resp}"));
    let headers = json["headers"]
        .as_object()
        .unwrap_or_else(|| panic!("no headers in {json}"));
    for gone in [
        "x-hop-named",
        "keep-alive",
        "proxy-connection",
        "te",
        "upgrade",
        "proxy-authorization",
    ] {
        assert!(
            !headers.contains_key(gone),
            "`{gone}` reached the upstream: {json}"
        );
    }
    // The upstream's own connection header (if any) is the proxy's, not the
    // client's list.
    if let Some(c) = header(&json, "connection") {
        assert!(!c.contains("x-hop-named"), "connection: {c}");
    }
    assert_eq!(header(&json, "x-end-to-end"), Some("kept"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn te_trailers_is_kept_for_h2c_upstreams_only_as_trailers() {
    let up = Upstream::start("up");
    let serin = proxy(&config_for(up.addr, "h2c", ""));
    let resp = client()
        .get(format!("{}/te", serin.url("gw")))
        .header("te", "trailers, deflate")
        .send()
        .await
        .unwrap_or_else(|e| panic!("request: {e}"));
    assert_eq!(resp.status(), 200);
    let json = echo(resp).await;
    assert_eq!(json["version"], "HTTP/2.0");
    assert_eq!(header(&json, "te"), Some("trailers"), "{json}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hop_by_hop_headers_are_removed_from_responses() {
    let (upstream, count) = fixed_upstream(
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\
          Connection: x-resp-hop\r\nX-Resp-Hop: secret\r\n\
          Keep-Alive: timeout=5, max=100\r\nProxy-Connection: keep-alive\r\n\
          Upgrade: h2c\r\nTrailer: x-checksum\r\nX-Kept: yes\r\n\r\nok",
    )
    .await;
    let serin = proxy(&config_for(upstream, "http1", ""));
    let addr = serin.listener("gw");
    let resp = tokio::task::spawn_blocking(move || {
        raw::exchange(
            addr,
            b"GET / HTTP/1.1\r\nHost: example.test\r\nConnection: close\r\n\r\n",
        )
    })
    .await
    .unwrap_or_else(|e| panic!("client: {e}"));
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert!(resp.ends_with("\r\n\r\nok"), "{resp}");
    let lines = head_lines(&resp);
    let has = |n: &str| lines.iter().any(|(k, _)| k == n);
    for gone in [
        "x-resp-hop",
        "keep-alive",
        "proxy-connection",
        "upgrade",
        "trailer",
    ] {
        assert!(!has(gone), "`{gone}` reached the client:\n{resp}");
    }
    for (k, v) in &lines {
        if k == "connection" {
            assert!(!v.contains("x-resp-hop"), "connection: {v}");
        }
    }
    assert!(has("x-kept"), "{resp}");
    assert_eq!(count.load(Ordering::SeqCst), 1);
}

fn is_uuid_v4(s: &str) -> bool {
    let b = s.as_bytes();
    s.len() == 36
        && [8, 13, 18, 23].iter().all(|&i| b[i] == b'-')
        && b.iter()
            .enumerate()
            .all(|(i, c)| [8, 13, 18, 23].contains(&i) || c.is_ascii_hexdigit())
        && b[14] == b'4'
        && matches!(b[19], b'8' | b'9' | b'a' | b'b' | b'A' | b'B')
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarding_headers_request_id_and_traceparent() {
    let up = Upstream::start("up");
    let serin = echo_proxy(&up);
    let url = format!("{}/fwd", serin.url("gw"));
    let c = client();

    // No forwarding headers from the client.
    let json = echo(c.get(&url).send().await.unwrap_or_else(|e| panic!("{e}"))).await;
    assert_eq!(
        header(&json, "x-forwarded-for"),
        Some("127.0.0.1"),
        "{json}"
    );
    assert_eq!(header(&json, "x-forwarded-proto"), Some("http"));
    let id = header(&json, "x-request-id").unwrap_or_else(|| panic!("no x-request-id: {json}"));
    assert!(is_uuid_v4(id), "x-request-id {id:?} is not a UUID");
    let json2 = echo(c.get(&url).send().await.unwrap_or_else(|e| panic!("{e}"))).await;
    assert_ne!(
        header(&json2, "x-request-id"),
        Some(id),
        "request ids repeat"
    );

    // The client's values: x-forwarded-for is appended to, the request id and
    // the trace context pass unchanged; a client cannot claim https.
    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let json = echo(
        c.get(&url)
            .header("x-forwarded-for", "203.0.113.7, 10.0.0.1")
            .header("x-forwarded-proto", "https")
            .header("x-request-id", "client-chosen-id-42")
            .header("traceparent", traceparent)
            .header("tracestate", "vendor=value")
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}")),
    )
    .await;
    assert_eq!(
        header(&json, "x-forwarded-for"),
        Some("203.0.113.7, 10.0.0.1, 127.0.0.1"),
        "{json}"
    );
    assert_eq!(header(&json, "x-forwarded-proto"), Some("http"));
    assert_eq!(header(&json, "x-request-id"), Some("client-chosen-id-42"));
    assert_eq!(header(&json, "traceparent"), Some(traceparent));
    assert_eq!(header(&json, "tracestate"), Some("vendor=value"));

    // The same over HTTP/2 from the client.
    let mut cmd = curl();
    cmd.args([
        "--http2-prior-knowledge",
        "-H",
        &format!("traceparent: {traceparent}"),
        "-w",
        "\n%{http_version}",
        &url,
    ]);
    let (json, version) = body_and_version(&run(cmd).await);
    assert_eq!(version, "2");
    assert_eq!(header(&json, "x-forwarded-for"), Some("127.0.0.1"));
    assert_eq!(header(&json, "x-forwarded-proto"), Some("http"));
    assert!(
        header(&json, "x-request-id").is_some_and(is_uuid_v4),
        "{json}"
    );
    assert_eq!(header(&json, "traceparent"), Some(traceparent));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncated_upstream_response_is_a_broken_stream() {
    let upstream = truncating_upstream().await;
    let serin = proxy(&config_for(upstream, "http1", ""));
    let url = format!("{}/cut", serin.url("gw"));

    // reqwest: the answer breaks off, at the head or in the body (which,
    // depends on whether serin had sent the head before the upstream's
    // close was read), never as a clean, short body.
    if let Ok(resp) = client().get(&url).send().await {
        let body = resp.bytes().await;
        assert!(
            body.is_err(),
            "a truncated body arrived as a clean one: {body:?}"
        );
    }

    // curl over HTTP/1.1 and HTTP/2: a non-zero exit, never a short 200.
    for flag in ["--http1.1", "--http2-prior-knowledge"] {
        let mut c = curl();
        c.args([flag, "-o", "/dev/null", &url]);
        let out = run(c).await;
        assert!(
            !out.status.success(),
            "curl {flag} saw a truncated response as complete: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_client_to_http1_upstream_gets_a_host_header() {
    let up = Upstream::start("up");
    let serin = echo_proxy(&up);
    let addr = serin.listener("gw");

    let mut c = curl();
    c.args([
        "--http2-prior-knowledge",
        "-w",
        "\n%{http_version}",
        &format!("http://{addr}/h"),
    ]);
    let (json, version) = body_and_version(&run(c).await);
    assert_eq!(version, "2");
    assert_eq!(json["version"], "HTTP/1.1");
    assert_eq!(header(&json, "host"), Some(&*addr.to_string()), "{json}");

    // curl turns -H Host into :authority on HTTP/2.
    let mut c = curl();
    c.args([
        "--http2-prior-knowledge",
        "-H",
        "Host: api.example.test",
        "-w",
        "\n%{http_version}",
        &format!("http://{addr}/h"),
    ]);
    let (json, version) = body_and_version(&run(c).await);
    assert_eq!(version, "2");
    assert_eq!(header(&json, "host"), Some("api.example.test"), "{json}");

    // And with a plain hyper h2 client that sends only :authority.
    let (mut tx, _conn) = crate::common::h2_connect(addr).await;
    let req = http::Request::builder()
        .uri("http://only-authority.test:8080/h")
        .body(http_body_util::Empty::<Bytes>::new())
        .unwrap_or_else(|e| panic!("request: {e}"));
    let resp = tx
        .send_request(req)
        .await
        .unwrap_or_else(|e| panic!("send: {e}"));
    let body = resp
        .into_body()
        .collect()
        .await
        .unwrap_or_else(|e| panic!("body: {e}"))
        .to_bytes();
    let json: serde_json::Value = serde_json::from_slice(&body)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&body)));
    assert_eq!(
        header(&json, "host"),
        Some("only-authority.test:8080"),
        "{json}"
    );
}

/// An upstream that answers as if it kept the connection (HTTP/1.1, no
/// `Connection: close`) and then closes it, so every pooled connection is
/// found closed by the next request. A safe request sent at once (before
/// serin can have seen the close) goes again on a new connection; any
/// request sent after the close arrived finds the connection gone before
/// using it. (A POST sent at the very moment of the close may fail, as
/// with every proxy: the upstream may have seen it.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_closing_idle_connections_fails_no_request() {
    let upstream = fixed_answer_upstream(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok").await;
    let serin = proxy(&config_for(upstream, "http1", ""));
    let url = format!("{}/again", serin.url("gw"));
    let client = client();
    for i in 0..8 {
        for (what, req) in [
            ("GET at once", client.get(&url)),
            ("GET at once", client.get(&url)),
        ] {
            expect_ok(i, what, req).await;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        expect_ok(i, "POST after the close", client.post(&url).body("payload")).await;
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

async fn expect_ok(i: usize, what: &str, req: reqwest::RequestBuilder) {
    let resp = req
        .send()
        .await
        .unwrap_or_else(|e| panic!("round {i}, {what}: {e}"));
    let status = resp.status();
    let body = resp.text().await.unwrap_or_default();
    assert_eq!(
        (status.as_u16(), body.as_str()),
        (200, "ok"),
        "round {i}, {what}"
    );
}

/// The access line is written when the answer has been sent: `bytes` is
/// what the client got, and an answer the upstream cut short is logged as
/// not complete rather than as the length it announced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_log_has_the_bytes_sent_and_marks_a_cut_answer() {
    let cut = truncating_upstream().await;
    let whole = fixed_answer_upstream(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello").await;
    let serin = proxy(&format!(
        r#"
accessLog: {{}}
listeners:
  - name: gw
    address: 127.0.0.1:0
services:
  - name: cut
    versions: [{{name: v1, endpoints: ["{cut}"]}}]
  - name: whole
    versions: [{{name: v1, endpoints: ["{whole}"]}}]
routes:
  - name: r
    rules:
      - matches: [{{path: {{type: PathPrefix, value: /cut}}}}]
        backendRefs: [{{name: cut, version: v1}}]
      - backendRefs: [{{name: whole, version: v1}}]
"#
    ));
    let base = serin.url("gw");
    let mut c = curl();
    c.args(["--http1.1", "-o", "/dev/null", &format!("{base}/cut")]);
    let out = run(c).await;
    assert!(!out.status.success(), "the cut answer looked complete");
    let resp = client()
        .get(format!("{base}/whole"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("request: {e}"));
    assert_eq!(resp.text().await.unwrap_or_default(), "hello");

    let access = |path: &str| {
        serin
            .log_lines()
            .iter()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|v| v["kind"] == "access" && v["path"] == path)
    };
    let seen = serin_testkit::wait_until(std::time::Duration::from_secs(10), || {
        access("/cut").is_some() && access("/whole").is_some()
    });
    assert!(seen, "access lines missing: {:#?}", serin.log_lines());
    let whole_line = access("/whole").unwrap_or_default();
    assert_eq!(
        (&whole_line["bytes"], &whole_line["complete"]),
        (&serde_json::json!(5), &serde_json::json!(true)),
        "{whole_line}"
    );
    let cut_line = access("/cut").unwrap_or_default();
    assert_eq!(cut_line["complete"], serde_json::json!(false), "{cut_line}");
    assert!(
        cut_line["bytes"].as_u64().is_some_and(|b| b <= 10),
        "{cut_line}"
    );
}

/// Bodies larger than one read, by length and by chunks (with trailers),
/// arrive whole and unchanged through serin's own HTTP/1.1 exchange.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_and_chunked_upstream_bodies_arrive_whole() {
    let body: Vec<u8> = (0..4 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    let mut by_length =
        format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n", body.len()).into_bytes();
    by_length.extend_from_slice(&body);
    let mut chunked = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n".to_vec();
    let mut sent = Vec::new();
    for (i, piece) in body[..300_000].chunks(997).enumerate() {
        let piece = &piece[..piece.len().min(1 + i * 7 % 997)];
        chunked.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
        chunked.extend_from_slice(piece);
        chunked.extend_from_slice(b"\r\n");
        sent.extend_from_slice(piece);
    }
    chunked.extend_from_slice(b"0\r\nx-checksum: done\r\n\r\n");
    let by_length = fixed_answer_upstream(Vec::leak(by_length)).await;
    let chunked = fixed_answer_upstream(Vec::leak(chunked)).await;
    for (name, upstream, want) in [
        ("content-length", by_length, &body),
        ("chunked", chunked, &sent),
    ] {
        let serin = proxy(&config_for(upstream, "http1", ""));
        let resp = client()
            .get(format!("{}/big", serin.url("gw")))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(resp.status(), 200, "{name}");
        let got = resp
            .bytes()
            .await
            .unwrap_or_else(|e| panic!("{name} body: {e}"));
        assert_eq!(got.len(), want.len(), "{name}: length");
        assert!(got[..] == want[..], "{name}: bytes differ");
    }
}

/// One keep-alive connection through serin's own HTTP/1.1 server and, from
/// the first request it leaves to hyper (a chunked upload), through
/// hyper's: every answer whole and in order, pipelined ones too, and
/// HTTP/1.0's keep-alive honoured.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_connection_keeps_its_requests_whole_across_both_http1_servers() {
    let up = Upstream::start("up");
    let serin = echo_proxy(&up);
    let addr = serin.listener("gw");
    let answers = tokio::task::spawn_blocking(move || {
        use std::io::Write;
        let mut s = std::net::TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect: {e}"));
        s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
            .unwrap_or_else(|e| panic!("timeout: {e}"));
        let send = |s: &mut std::net::TcpStream, bytes: &[u8], answers: usize| {
            s.write_all(bytes).unwrap_or_else(|e| panic!("write: {e}"));
            (0..answers).map(|_| read_response(s)).collect::<Vec<_>>()
        };
        let mut all = Vec::new();
        all.extend(send(&mut s, b"GET /a HTTP/1.1\r\nHost: t\r\n\r\n", 1));
        // Two requests in one write: answered in order.
        all.extend(send(
            &mut s,
            b"GET /b HTTP/1.1\r\nHost: t\r\n\r\nPOST /c HTTP/1.1\r\nHost: t\r\ncontent-length: 5\r\n\r\nhello",
            2,
        ));
        all.extend(send(&mut s, b"HEAD /d HTTP/1.1\r\nHost: t\r\n\r\n", 0));
        let head = {
            // A HEAD answer has a length and no body: read the head only.
            let mut buf = Vec::new();
            let mut byte = [0u8; 1];
            while !buf.ends_with(b"\r\n\r\n") {
                let n = std::io::Read::read(&mut s, &mut byte)
                    .unwrap_or_else(|e| panic!("read HEAD answer: {e}"));
                assert!(n > 0, "closed after HEAD");
                buf.push(byte[0]);
            }
            String::from_utf8_lossy(&buf).into_owned()
        };
        // The first request serin's own server leaves to hyper; the
        // connection stays hyper's from here.
        all.extend(send(
            &mut s,
            b"POST /e HTTP/1.1\r\nHost: t\r\ntransfer-encoding: chunked\r\n\r\n5\r\nworld\r\n0\r\n\r\n",
            1,
        ));
        all.extend(send(&mut s, b"GET /f HTTP/1.1\r\nHost: t\r\n\r\n", 1));
        (all, head)
    })
    .await
    .unwrap_or_else(|e| panic!("client: {e}"));
    let (answers, head) = answers;
    let seen: Vec<(String, String, String)> = answers
        .iter()
        .map(|(head, body)| {
            let echoed: serde_json::Value =
                serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {head}{body}"));
            (
                head.lines().next().unwrap_or("").to_string(),
                echoed["path"].as_str().unwrap_or("").to_string(),
                echoed["body"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    let ok = "HTTP/1.1 200 OK".to_string();
    let want: Vec<(String, String, String)> = [
        ("/a", ""),
        ("/b", ""),
        ("/c", "hello"),
        ("/e", "world"),
        ("/f", ""),
    ]
    .iter()
    .map(|(p, b)| (ok.clone(), p.to_string(), b.to_string()))
    .collect();
    assert_eq!(seen, want);
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert!(
        head.to_ascii_lowercase().contains("content-length: "),
        "{head}"
    );
    for (head, _) in &answers {
        assert!(
            head.to_ascii_lowercase().contains("\r\ndate: "),
            "no date: {head}"
        );
    }
}

#[tokio::test]
async fn http_1_0_keeps_the_connection_only_when_asked() {
    let up = Upstream::start("up");
    let serin = echo_proxy(&up);
    let addr = serin.listener("gw");
    let (kept, closed) = tokio::task::spawn_blocking(move || {
        use std::io::Write;
        let mut s = std::net::TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect: {e}"));
        s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
            .unwrap_or_else(|e| panic!("timeout: {e}"));
        s.write_all(b"GET /one HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
            .unwrap_or_else(|e| panic!("write: {e}"));
        let first = read_response(&mut s);
        s.write_all(b"GET /two HTTP/1.0\r\n\r\n")
            .unwrap_or_else(|e| panic!("write: {e}"));
        let second = read_response(&mut s);
        let mut rest = [0u8; 16];
        let after = std::io::Read::read(&mut s, &mut rest).unwrap_or_else(|e| panic!("read: {e}"));
        ((first, second), after)
    })
    .await
    .unwrap_or_else(|e| panic!("client: {e}"));
    let ((first, second), after) = (kept, closed);
    assert!(
        first
            .0
            .to_ascii_lowercase()
            .contains("connection: keep-alive"),
        "{}",
        first.0
    );
    assert!(first.1.contains("\"/one\""), "{}", first.1);
    assert!(
        second.0.to_ascii_lowercase().contains("connection: close"),
        "{}",
        second.0
    );
    assert!(second.1.contains("\"/two\""), "{}", second.1);
    assert_eq!(
        after, 0,
        "the connection stays open after an HTTP/1.0 request without keep-alive"
    );
}
