//! One log schema: `serin up --log-format json` prints access lines and the
//! services' lines with the same leading fields, and an access line carries
//! the trace id of the request.

use serde_json::Value;

use crate::common::client;
use crate::tracing::client_position;
use crate::up::{Stack, qotm_v1_stack};

/// The fields every JSON log line has (README, "Logs").
const SCHEMA: [&str; 7] = [
    "time", "level", "service", "version", "replica", "trace_id", "message",
];

#[track_caller]
fn assert_schema(line: &Value) {
    for field in SCHEMA {
        assert!(line[field].is_string(), "no string `{field}` in {line}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_and_service_lines_share_a_schema_and_the_trace_id() {
    let yaml = qotm_v1_stack(1).replace("gateway:\n", "gateway:\n  accessLog: {}\n");
    let stack = Stack::start(&yaml);
    stack.wait_ready("qotm", "v1", 1).await;
    let (trace, span) = client_position();
    let resp = client()
        .get(stack.url("/qotm/"))
        .header("traceparent", format!("00-{trace}-{span}-01"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(resp.status(), 200);
    let find = |kind: &str| -> Option<Value> {
        stack
            .serin
            .log_lines()
            .iter()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find(|v| v["kind"] == kind && v["trace_id"] == trace.as_str())
    };
    let (access, service) = crate::up::eventually("both lines of the request", async || {
        Some((find("access")?, find("service")?))
    })
    .await;
    assert_schema(&access);
    assert_schema(&service);
    assert_eq!(access["level"], "info");
    assert_eq!(access["service"], "qotm");
    assert_eq!(access["version"], "v1");
    assert_eq!(access["replica"], "qotm-v1-0");
    assert_eq!(access["status"], 200);
    assert_eq!(access["route"], "qotm");
    assert_eq!(access["path"], "/qotm/");
    assert_eq!(access["listener"], "gateway");
    assert!(
        access["request_id"].as_str().is_some_and(|r| !r.is_empty()),
        "{access}"
    );
    assert_eq!(service["service"], "qotm");
    assert_eq!(service["replica"], "qotm-v1-0");
    assert_eq!(service["message"], "request");
    // serin's own lines have the schema too.
    let own = stack
        .serin
        .log_lines()
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v["kind"] == "serin")
        .unwrap_or_else(|| panic!("no line of serin's own"));
    assert_schema(&own);
    assert_eq!(own["service"], "serin");
    stack.stop("TERM").await;
}
