//! Strict with bad bytes (issue point 10): every request-smuggling and
//! malformed-head vector is answered 400, the connection is closed, and the
//! upstream never sees it. Plus the limits and timeouts that protect
//! listeners, and control cases showing good requests still go through.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use serin_testkit::raw;

use crate::common::{Serin, Upstream, proxy};

fn config(up: &Upstream, limits: &str) -> String {
    format!(
        r#"
listeners:
  - name: gw
    address: 127.0.0.1:0
{limits}
services:
  - name: echo
    versions:
      - name: v1
        endpoints: ["{}"]
routes:
  - name: all
    rules:
      - backendRefs: [{{name: echo, version: v1}}]
"#,
        up.addr
    )
}

fn start() -> (Upstream, Serin) {
    let up = Upstream::start("up");
    let serin = proxy(&config(&up, ""));
    (up, serin)
}

/// The status code of a raw response ("" when there was none).
fn status_of(resp: &str) -> &str {
    resp.strip_prefix("HTTP/1.1 ")
        .and_then(|r| r.get(..3))
        .unwrap_or("")
}

/// Sends `request` on a new connection and checks it is refused with one of
/// `statuses`, the connection is closed, and nothing reached the upstream.
fn assert_refused_with(request: &[u8], statuses: &[&str]) {
    let (up, serin) = start();
    let (resp, closed) = raw::exchange_closes(serin.listener("gw"), request);
    let shown = String::from_utf8_lossy(&request[..request.len().min(300)]);
    assert!(
        statuses.contains(&status_of(&resp)),
        "expected {statuses:?} for {shown:?}, serin answered:\n{resp}"
    );
    assert!(
        closed,
        "connection left open after refusing {shown:?}; answer:\n{resp}"
    );
    // The answer came before the upstream could have been asked, so this
    // cannot race.
    assert_eq!(
        up.requests(),
        0,
        "{shown:?} reached the upstream; serin answered:\n{resp}"
    );
}

fn assert_refused(request: &[u8]) {
    assert_refused_with(request, &["400"]);
}

#[test]
fn content_length_with_transfer_encoding() {
    assert_refused(
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\
          Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    );
}

#[test]
fn transfer_encoding_with_content_length() {
    // The same, in the other order.
    assert_refused(
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\
          Content-Length: 5\r\n\r\n0\r\n\r\n",
    );
}

#[test]
fn duplicate_content_length_equal_values() {
    assert_refused(
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello",
    );
}

#[test]
fn duplicate_content_length_different_values() {
    assert_refused(
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
    );
}

#[test]
fn content_length_list_in_one_header() {
    assert_refused(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5, 6\r\n\r\nhello!");
}

#[test]
fn content_length_equal_list_in_one_header() {
    // `5, 5` is what RFC 9110 lets a recipient collapse; serin refuses any
    // list (one more hop might not collapse it).
    assert_refused(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5, 5\r\n\r\nhello");
}

#[test]
fn content_length_with_plus_sign() {
    assert_refused(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: +5\r\n\r\nhello");
}

#[test]
fn content_length_in_hex() {
    assert_refused(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0x10\r\n\r\n0123456789abcdef");
}

#[test]
fn content_length_empty() {
    assert_refused(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: \r\n\r\nhello");
}

#[test]
fn content_length_negative() {
    assert_refused(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\nhello");
}

#[test]
fn transfer_encoding_xchunked() {
    assert_refused(
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: xchunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    );
}

#[test]
fn transfer_encoding_chunked_with_trailing_space() {
    assert_refused(
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked \r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    );
}

#[test]
fn transfer_encoding_chunked_with_trailing_tab() {
    assert_refused(
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\t\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    );
}

#[test]
fn transfer_encoding_chunked_then_gzip() {
    assert_refused(
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, gzip\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    );
}

#[test]
fn transfer_encoding_sent_twice() {
    assert_refused(
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\
          Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    );
}

#[test]
fn obs_fold() {
    assert_refused(b"GET / HTTP/1.1\r\nHost: x\r\nX-Folded: first\r\n  second\r\n\r\n");
}

#[test]
fn obs_fold_with_tab() {
    assert_refused(b"GET / HTTP/1.1\r\nHost: x\r\nX-Folded: first\r\n\tsecond\r\n\r\n");
}

#[test]
fn bare_cr_in_header_value() {
    assert_refused(b"GET / HTTP/1.1\r\nHost: x\r\nX-Bad: a\rb\r\n\r\n");
}

#[test]
fn nul_in_header_value() {
    assert_refused(b"GET / HTTP/1.1\r\nHost: x\r\nX-Bad: a\0b\r\n\r\n");
}

#[test]
fn control_byte_in_header_value() {
    assert_refused(b"GET / HTTP/1.1\r\nHost: x\r\nX-Bad: a\x01b\r\n\r\n");
}

#[test]
fn control_byte_in_header_name() {
    assert_refused(b"GET / HTTP/1.1\r\nHost: x\r\nX-B\x01ad: ab\r\n\r\n");
}

#[test]
fn space_before_header_colon() {
    // RFC 9112 §5.1: a server must reject white space between name and colon.
    assert_refused(b"GET / HTTP/1.1\r\nHost: x\r\nX-Bad : ab\r\n\r\n");
}

#[test]
fn invalid_chunk_size() {
    assert_refused(
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
    );
}

#[test]
fn chunk_size_with_sign() {
    assert_refused(
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n+5\r\nhello\r\n0\r\n\r\n",
    );
}

#[test]
fn more_than_100_headers() {
    let mut req = b"GET / HTTP/1.1\r\nHost: x\r\n".to_vec();
    for i in 0..101 {
        req.extend_from_slice(format!("X-H{i}: v\r\n").as_bytes());
    }
    req.extend_from_slice(b"\r\n");
    // hyper answers a head over its limits with 431 (Request Header Fields
    // Too Large), which is the more precise refusal: accepted here.
    assert_refused_with(&req, &["400", "431"]);
}

#[test]
fn more_than_60_kib_of_headers() {
    let mut req = b"GET / HTTP/1.1\r\nHost: x\r\n".to_vec();
    // 62 KiB over a few headers (fewer than 100).
    for i in 0..31 {
        req.extend_from_slice(format!("X-Big{i}: ").as_bytes());
        req.extend_from_slice(&[b'a'; 2048]);
        req.extend_from_slice(b"\r\n");
    }
    req.extend_from_slice(b"\r\n");
    assert!(req.len() > 61 * 1024);
    // As above: 431 is accepted for a head over the size limit.
    assert_refused_with(&req, &["400", "431"]);
}

#[test]
fn just_under_the_header_limits_is_served() {
    let (up, serin) = start();
    let mut req = b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n".to_vec();
    // 85 more headers (87 in all: the upstream, itself a hyper server with
    // a limit of 100, also gets serin's forwarding headers), about 56 KiB.
    for i in 0..85 {
        req.extend_from_slice(format!("X-H{i}: ").as_bytes());
        req.extend_from_slice(&[b'a'; 660]);
        req.extend_from_slice(b"\r\n");
    }
    req.extend_from_slice(b"\r\n");
    let (resp, _) = raw::exchange_closes(serin.listener("gw"), &req);
    assert_eq!(status_of(&resp), "200", "{}", &resp[..resp.len().min(500)]);
    assert_eq!(up.requests(), 1);
}

#[test]
fn well_formed_chunked_post_reaches_the_upstream() {
    let (up, serin) = start();
    let (resp, closed) = raw::exchange_closes(
        serin.listener("gw"),
        b"POST /upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\
          Connection: close\r\n\r\n5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\n\r\n",
    );
    assert_eq!(status_of(&resp), "200", "{resp}");
    assert!(closed);
    let body = resp.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    let json: serde_json::Value =
        serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {resp}"));
    assert_eq!(json["path"], "/upload");
    assert_eq!(json["body"], "hello world");
    assert_eq!(up.requests(), 1);
}

#[test]
fn content_length_post_reaches_the_upstream() {
    let (up, serin) = start();
    let (resp, _) = raw::exchange_closes(
        serin.listener("gw"),
        b"POST /cl HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello",
    );
    assert_eq!(status_of(&resp), "200", "{resp}");
    assert!(resp.contains("\"body\":\"hello\""), "{resp}");
    assert_eq!(up.requests(), 1);
}

#[test]
fn pipelined_requests_are_all_answered_in_order() {
    let (up, serin) = start();
    let (resp, closed) = raw::exchange_closes(
        serin.listener("gw"),
        b"GET /one HTTP/1.1\r\nHost: x\r\n\r\n\
          POST /two HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc\
          GET /three HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert!(closed);
    assert_eq!(resp.matches("HTTP/1.1 200").count(), 3, "{resp}");
    let one = resp.find("\"/one\"");
    let two = resp.find("\"/two\"");
    let three = resp.find("\"/three\"");
    assert!(
        one.is_some() && one < two && two < three,
        "answers out of order: {resp}"
    );
    assert!(resp.contains("\"body\":\"abc\""), "{resp}");
    assert_eq!(up.requests(), 3);
}

#[test]
fn a_bad_request_after_a_good_one_stops_the_connection() {
    // A smuggling attempt pipelined behind a good request: the good one is
    // answered, the bad one refused, and nothing after it is read.
    let (up, serin) = start();
    let (resp, closed) = raw::exchange_closes(
        serin.listener("gw"),
        b"GET /ok HTTP/1.1\r\nHost: x\r\n\r\n\
          POST /bad HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n\
          0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
    );
    assert!(closed, "{resp}");
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert!(resp.contains("HTTP/1.1 400"), "{resp}");
    assert!(!resp.contains("/smuggled"), "{resp}");
    assert_eq!(up.requests(), 1);
}

/// Reads until the server closes the connection (true) or `limit` passes
/// with no data (false).
fn closed_by_server(s: &mut TcpStream, limit: Duration) -> (bool, String) {
    s.set_read_timeout(Some(limit))
        .unwrap_or_else(|e| panic!("timeout: {e}"));
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let closed = loop {
        match s.read(&mut buf) {
            Ok(0) => break true,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break true,
            Err(_) => break false,
        }
    };
    (closed, String::from_utf8_lossy(&out).into_owned())
}

#[test]
fn header_read_timeout_closes_a_slow_request() {
    let up = Upstream::start("up");
    let serin = proxy(&config(&up, "    limits: {headerReadTimeout: 1s}"));
    let mut s = TcpStream::connect(serin.listener("gw")).unwrap_or_else(|e| panic!("connect: {e}"));
    s.write_all(b"GET /slow HTTP/1.1\r\nHost: x\r\nX-Sl")
        .unwrap_or_else(|e| panic!("write: {e}"));
    // The limit is far above the 1 s timeout (and below the 60 s default
    // idle timeout): it only keeps a broken server from hanging the test.
    let (closed, got) = closed_by_server(&mut s, Duration::from_secs(20));
    assert!(
        closed,
        "serin kept a half-sent request open; it sent: {got:?}"
    );
    assert!(
        got.is_empty() || got.starts_with("HTTP/1.1 408") || got.starts_with("HTTP/1.1 400"),
        "{got}"
    );
    assert_eq!(up.requests(), 0);
}

#[test]
fn header_read_timeout_closes_a_silent_connection() {
    let up = Upstream::start("up");
    let serin = proxy(&config(&up, "    limits: {headerReadTimeout: 1s}"));
    let mut s = TcpStream::connect(serin.listener("gw")).unwrap_or_else(|e| panic!("connect: {e}"));
    let (closed, got) = closed_by_server(&mut s, Duration::from_secs(20));
    assert!(
        closed,
        "serin kept a silent connection open; it sent: {got:?}"
    );
    assert_eq!(up.requests(), 0);
}

/// One request on a keep-alive connection, then nothing: serin must close
/// it under `limits` (the 20 s bound only keeps a broken server from
/// hanging the test).
fn idle_http1_connection_is_closed(limits: &str) {
    let up = Upstream::start("up");
    let serin = proxy(&config(&up, limits));
    let mut s = TcpStream::connect(serin.listener("gw")).unwrap_or_else(|e| panic!("connect: {e}"));
    s.write_all(b"GET /first HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap_or_else(|e| panic!("write: {e}"));
    let (closed, got) = closed_by_server(&mut s, Duration::from_secs(20));
    assert!(got.starts_with("HTTP/1.1 200"), "{got}");
    assert!(
        closed,
        "idle keep-alive connection left open under {limits}; got {got}"
    );
    assert_eq!(up.requests(), 1);
}

/// Closed well before the 30 s header-read timeout.
#[test]
fn idle_timeout_closes_an_idle_http1_connection() {
    idle_http1_connection_is_closed("    limits: {idleTimeout: 1s, headerReadTimeout: 30s}");
}

/// README, `headerReadTimeout`: for HTTP/1.1 it also bounds the wait for
/// the next head on a keep-alive connection (as hyper's timer does), so
/// with a 60 s idle timeout the connection still closes after 1 s.
#[test]
fn header_read_timeout_closes_an_idle_keep_alive_connection() {
    idle_http1_connection_is_closed("    limits: {idleTimeout: 60s, headerReadTimeout: 1s}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_timeout_closes_an_idle_http2_connection() {
    let up = Upstream::start("up");
    let serin = proxy(&config(
        &up,
        "    limits: {idleTimeout: 1s, headerReadTimeout: 30s}",
    ));
    let addr = serin.listener("gw");
    let (mut tx, conn) = crate::common::h2_connect(addr).await;
    let req = http::Request::builder()
        .uri(format!("http://{addr}/h2"))
        .body(http_body_util::Empty::<Bytes>::new())
        .unwrap_or_else(|e| panic!("request: {e}"));
    let resp = tx
        .send_request(req)
        .await
        .unwrap_or_else(|e| panic!("send: {e}"));
    assert_eq!(resp.status(), 200);
    let _ = resp
        .into_body()
        .collect()
        .await
        .unwrap_or_else(|e| panic!("body: {e}"));
    // Now idle: serin must end the connection (GOAWAY, then close), which
    // completes the client's connection future. The limit only keeps a
    // broken server from hanging the test.
    let ended = tokio::time::timeout(Duration::from_secs(20), conn).await;
    assert!(ended.is_ok(), "idle HTTP/2 connection left open");
    assert_eq!(up.requests(), 1);
}
