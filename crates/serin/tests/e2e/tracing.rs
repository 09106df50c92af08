//! Distributed tracing: W3C trace context through the proxy, and spans
//! exported over OTLP/HTTP to a receiver inside the test that decodes them
//! as a collector would.

use std::time::Duration;

use serin_testkit::otlp::{SPAN_KIND_CLIENT, SPAN_KIND_SERVER};
use serin_testkit::{OtlpReceiver, ReceivedSpan};

use crate::common::{Upstream, client, echo, proxy};
use crate::up::{Stack, mesh_example};

/// Spans reach the receiver when the SDK's batch is sent (every 5 s by
/// default) or at exit; this bounds the wait.
const EXPORT_WAIT: Duration = Duration::from_secs(30);

/// A client's own position in a trace: (trace id, span id).
pub(crate) fn client_position() -> (String, String) {
    use std::hash::{BuildHasher, Hasher};
    let random = || {
        std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish()
    };
    (
        format!("{:016x}{:016x}", random(), random()),
        format!("{:016x}", random() | 1),
    )
}

/// The one span of `spans` that `pick` selects; fails with them all shown.
#[track_caller]
fn one<'a>(
    spans: &'a [ReceivedSpan],
    what: &str,
    pick: impl Fn(&ReceivedSpan) -> bool,
) -> &'a ReceivedSpan {
    let found: Vec<&ReceivedSpan> = spans.iter().filter(|s| pick(s)).collect();
    assert_eq!(found.len(), 1, "expected one {what} span among {spans:#?}");
    found[0]
}

fn server(spans: &[ReceivedSpan], listener: &str) -> ReceivedSpan {
    one(spans, &format!("server span of {listener}"), |s| {
        s.kind == SPAN_KIND_SERVER && s.attr("serin.listener").starts_with(listener)
    })
    .clone()
}

fn attempt_of(spans: &[ReceivedSpan], parent: &ReceivedSpan, number: u32) -> ReceivedSpan {
    one(
        spans,
        &format!("attempt {number} under {}", parent.name),
        |s| {
            s.kind == SPAN_KIND_CLIENT
                && s.parent_span_id == parent.span_id
                && s.attr("serin.attempt") == number.to_string()
        },
    )
    .clone()
}

/// The mesh example with tracing: gateway → frontend's inbound sidecar →
/// the frontend app → its outbound sidecar → pinger's inbound sidecar. Each
/// hop's server span is the child of the previous hop's attempt span (the
/// frontend app passes the `traceparent` it got on), and the whole chain
/// continues the client's trace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mesh_hops_are_parent_and_child_in_the_clients_trace() {
    let receiver = OtlpReceiver::start();
    let yaml = format!(
        "{}\ntracing:\n  endpoint: {}\n  serviceName: mesh\n",
        mesh_example(),
        receiver.endpoint()
    );
    let stack = Stack::start(&yaml);
    stack.wait_mesh_ready().await;
    let (trace, client_span) = client_position();
    let resp = client()
        .get(stack.url("/api"))
        .header("traceparent", format!("00-{trace}-{client_span}-01"))
        .header("tracestate", "client=1")
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(resp.status(), 200);
    let all = tokio::task::block_in_place(|| {
        receiver.wait_for(EXPORT_WAIT, |spans| {
            spans.iter().any(|s| {
                s.trace_id == trace
                    && s.kind == SPAN_KIND_CLIENT
                    && s.attr("serin.endpoint").starts_with("pinger-")
            })
        })
    });
    let spans: Vec<ReceivedSpan> = all.into_iter().filter(|s| s.trace_id == trace).collect();
    assert!(spans.iter().all(|s| s.service == "mesh"), "{spans:#?}");

    let gateway = server(&spans, "gateway");
    assert_eq!(
        gateway.parent_span_id, client_span,
        "continues the client's span"
    );
    assert_eq!(gateway.attr("serin.route"), "frontend");
    assert_eq!(gateway.attr("http.response.status_code"), "200");
    let gateway_try = attempt_of(&spans, &gateway, 1);

    let inbound = server(&spans, "in:frontend-");
    assert_eq!(
        inbound.parent_span_id, gateway_try.span_id,
        "gateway → sidecar"
    );
    let inbound_try = attempt_of(&spans, &inbound, 1);

    let outbound = server(&spans, "out:frontend-v1-0:pinger");
    assert_eq!(
        outbound.parent_span_id, inbound_try.span_id,
        "the app's call is a child of the attempt that reached it"
    );
    assert_eq!(outbound.attr("serin.route"), "frontend>pinger");
    let outbound_try = attempt_of(&spans, &outbound, 1);

    let pinger = server(&spans, "in:pinger-");
    assert_eq!(
        pinger.parent_span_id, outbound_try.span_id,
        "sidecar → sidecar"
    );
    attempt_of(&spans, &pinger, 1);
    stack.stop("TERM").await;
}

fn retrying_proxy(receiver: &OtlpReceiver, a: &Upstream, b: &Upstream) -> String {
    format!(
        r#"
tracing:
  endpoint: {}
  serviceName: edge
listeners:
  - name: gw
    address: 127.0.0.1:0
services:
  - name: svc
    loadBalancer: {{type: RoundRobin}}
    versions: [{{name: v1, endpoints: ["{}", "{}"]}}]
routes:
  - name: r
    rules:
      - backendRefs: [{{name: svc, version: v1}}]
        retry: {{attempts: 1, codes: [503], backoff: 1ms}}
"#,
        receiver.endpoint(),
        a.addr,
        b.addr
    )
}

/// A request without `traceparent` starts a trace; a retry is an attempt
/// span of its own, and the upstream's `traceparent` names the attempt that
/// reached it as the parent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_trace_with_one_span_per_attempt() {
    let receiver = OtlpReceiver::start();
    let (a, b) = (Upstream::start("a"), Upstream::start("b"));
    let serin = proxy(&retrying_proxy(&receiver, &a, &b));
    let resp = client()
        .get(format!("{}/x", serin.url("gw")))
        .header("x-test-status", "503")
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(resp.status(), 503);
    let body = echo(resp).await;
    let sent = body["headers"]["traceparent"]
        .as_str()
        .unwrap_or("")
        .to_string();
    let parts: Vec<&str> = sent.split('-').collect();
    assert_eq!(parts.len(), 4, "the upstream got a traceparent: {body}");
    let (trace, parent) = (parts[1].to_string(), parts[2].to_string());
    let spans = tokio::task::block_in_place(|| {
        receiver.wait_for(EXPORT_WAIT, |spans| {
            spans.iter().filter(|s| s.trace_id == trace).count() >= 3
        })
    });
    let spans: Vec<ReceivedSpan> = spans.into_iter().filter(|s| s.trace_id == trace).collect();
    let request = server(&spans, "gw");
    assert_eq!(
        request.parent_span_id, "",
        "a new trace's first span is its root"
    );
    assert_eq!(request.service, "edge");
    assert_eq!(request.name, "GET r");
    assert_eq!(request.attr("http.response.status_code"), "503");
    let first = attempt_of(&spans, &request, 1);
    let second = attempt_of(&spans, &request, 2);
    assert_eq!(second.attr("http.request.resend_count"), "1");
    assert_eq!(first.attr("http.response.status_code"), "503");
    assert_ne!(first.attr("server.port"), second.attr("server.port"));
    assert_eq!(
        parent, second.span_id,
        "the upstream's parent is the last attempt"
    );
}

/// Without an exporter serin still propagates: a client's `traceparent` and
/// `tracestate` reach the upstream unchanged, and a request without one
/// gets a new, valid one.
#[tokio::test]
async fn without_an_exporter_the_trace_context_is_propagated() {
    let up = Upstream::start("up");
    let serin = proxy(&format!(
        r#"
listeners: [{{name: gw, address: "127.0.0.1:0"}}]
services: [{{name: svc, versions: [{{name: v1, endpoints: ["{}"]}}]}}]
routes: [{{name: r, rules: [{{backendRefs: [{{name: svc, version: v1}}]}}]}}]
"#,
        up.addr
    ));
    let http = client();
    let given = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    let body = echo(
        http.get(serin.url("gw"))
            .header("traceparent", given)
            .header("tracestate", "congo=t61rcWkgMzE")
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}")),
    )
    .await;
    assert_eq!(body["headers"]["traceparent"], given);
    assert_eq!(body["headers"]["tracestate"], "congo=t61rcWkgMzE");
    let mut seen = Vec::new();
    for bad in [None, Some("00-not-a-trace")] {
        let mut req = http.get(serin.url("gw")).header("tracestate", "stale=1");
        if let Some(v) = bad {
            req = req.header("traceparent", v);
        }
        let body = echo(req.send().await.unwrap_or_else(|e| panic!("{e}"))).await;
        let tp = body["headers"]["traceparent"]
            .as_str()
            .unwrap_or("")
            .to_string();
        let parts: Vec<&str> = tp.split('-').collect();
        assert!(
            parts.len() == 4 && parts[0] == "00" && parts[1].len() == 32 && parts[2].len() == 16,
            "a new traceparent: {tp}"
        );
        assert!(body["headers"].get("tracestate").is_none(), "{body}");
        seen.push(parts[1].to_string());
    }
    assert_ne!(seen[0], seen[1], "each new trace has its own id");
}

/// Sampling is parent-based: with `samplingRatio: 0` serin records no new
/// trace, but a client's sampled trace is recorded and an unsampled one is
/// not; either way the upstream learns the decision from the flags.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sampling_follows_the_client() {
    let receiver = OtlpReceiver::start();
    let up = Upstream::start("up");
    let serin = proxy(&format!(
        r#"
tracing: {{endpoint: "{}", samplingRatio: 0}}
listeners: [{{name: gw, address: "127.0.0.1:0"}}]
services: [{{name: svc, versions: [{{name: v1, endpoints: ["{}"]}}]}}]
routes: [{{name: r, rules: [{{backendRefs: [{{name: svc, version: v1}}]}}]}}]
"#,
        receiver.endpoint(),
        up.addr
    ));
    let http = client();
    let mut traces = Vec::new();
    for flags in [None, Some("00"), Some("01")] {
        let (trace, span) = client_position();
        let mut req = http.get(serin.url("gw"));
        if let Some(f) = flags {
            req = req.header("traceparent", format!("00-{trace}-{span}-{f}"));
        }
        let body = echo(req.send().await.unwrap_or_else(|e| panic!("{e}"))).await;
        let sent = body["headers"]["traceparent"]
            .as_str()
            .unwrap_or("")
            .to_string();
        let want = if flags == Some("01") { "-01" } else { "-00" };
        assert!(sent.ends_with(want), "{flags:?}: upstream got {sent}");
        traces.push(sent.split('-').nth(1).unwrap_or("").to_string());
    }
    // Spans leave in the order they ended: once the last request's are in,
    // the others would have been too.
    let sampled = traces[2].clone();
    let spans = tokio::task::block_in_place(|| {
        receiver.wait_for(EXPORT_WAIT, |spans| {
            spans.iter().filter(|s| s.trace_id == sampled).count() >= 2
        })
    });
    assert!(spans.iter().any(|s| s.trace_id == sampled), "{spans:#?}");
    assert!(
        spans.iter().all(|s| s.trace_id == sampled),
        "only the client's sampled trace is recorded: {spans:#?}"
    );
}
