//! Session persistence (issue #13 point 5), the Gateway API's
//! `sessionPersistence`: a client that sends back what the first answer
//! gave it (a header here; the cookie in the canary's test) keeps its
//! endpoint while that endpoint is healthy, and moves when it is not.

use crate::common::{Upstream, client, proxy};

const SESSION: &str = "x-serin-session";

/// One request with `session` (when it has one): the upstream that
/// answered, its status, and the session the answer names.
async fn get(url: &str, session: Option<&str>) -> (String, u16, Option<String>) {
    let mut req = client().get(url);
    if let Some(s) = session {
        req = req.header(SESSION, s);
    }
    let resp = req
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let status = resp.status().as_u16();
    let renewed = crate::common::header(&resp, SESSION);
    let body: serde_json::Value = resp.json().await.unwrap_or_default();
    (
        body["upstream"].as_str().unwrap_or("?").to_string(),
        status,
        (!renewed.is_empty()).then_some(renewed),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_keeps_its_endpoint_while_healthy_then_moves() {
    let (a, b) = (Upstream::start("a"), Upstream::start("b"));
    let serin = proxy(&format!(
        r#"
listeners: [{{name: gw, address: 127.0.0.1:0}}]
services:
  - name: app
    loadBalancer: {{type: RoundRobin}}
    outlierDetection: {{consecutive5xx: 1, baseEjectionTime: 5m}}
    versions: [{{name: v1, endpoints: ["{}", "{}"]}}]
routes:
  - name: app
    rules:
      - backendRefs: [{{name: app, version: v1}}]
        sessionPersistence: {{type: Header}}
"#,
        a.addr, b.addr
    ));
    let url = format!("{}/", serin.url("gw"));
    // Round robin alone alternates; a session does not.
    let (first, _, session) = get(&url, None).await;
    let session = session.unwrap_or_else(|| panic!("the first answer named no session"));
    for i in 0..10 {
        let (up, status, renewed) = get(&url, Some(&session)).await;
        assert_eq!((up.as_str(), status), (first.as_str(), 200), "request {i}");
        assert_eq!(renewed, None, "an unchanged session is not sent again");
    }
    // Without the session, both endpoints answer.
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..4 {
        seen.insert(get(&url, None).await.0);
    }
    assert_eq!(seen.len(), 2, "{seen:?}");

    // The session's endpoint fails and is ejected: the session moves.
    let (failing, other) = if first == "a" { (&a, "b") } else { (&b, "a") };
    failing
        .control
        .status
        .store(503, std::sync::atomic::Ordering::SeqCst);
    let (up, status, _) = get(&url, Some(&session)).await;
    assert!(
        status == 503 || up == other,
        "the session's endpoint answered {status} from {up}"
    );
    let (up, status, moved) = get(&url, Some(&session)).await;
    assert_eq!((up.as_str(), status), (other, 200));
    let moved = moved.unwrap_or_else(|| panic!("a moved session is sent again"));
    assert_ne!(moved, session);
    for i in 0..5 {
        let (up, _, _) = get(&url, Some(&moved)).await;
        assert_eq!(up, other, "request {i} after the move");
    }

    // A value serin did not make is no session: a new one starts.
    let (_, status, fresh) = get(&url, Some("not-a-session")).await;
    assert_eq!(status, 200);
    assert!(fresh.is_some(), "a bad value gets a new session");
}
