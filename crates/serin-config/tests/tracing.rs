//! The `tracing` section of a proxy config and of a stack file.

use std::path::Path;

use serin_config::proxy::{TracingConfig, defaults, parse_proxy_config};
use serin_config::stack::parse_stack_file;

const LISTENER: &str = "listeners: [{name: web, address: \"127.0.0.1:0\"}]\n";

fn proxy(text: &str) -> Result<Option<TracingConfig>, Vec<String>> {
    parse_proxy_config(&format!("{LISTENER}{text}"), "serin.yaml", Path::new("/"))
        .map(|c| c.tracing)
        .map_err(|e| e.iter().map(ToString::to_string).collect())
}

#[test]
fn a_full_section_is_read() {
    let t = proxy(
        "tracing:\n  endpoint: http://127.0.0.1:4318\n  serviceName: edge\n  samplingRatio: 0.25\n  headers: {x-api-key: abc}\n",
    )
    .expect("valid")
    .expect("tracing on");
    assert_eq!(t.endpoint.as_deref(), Some("http://127.0.0.1:4318"));
    assert_eq!(
        t.traces_url().as_deref(),
        Some("http://127.0.0.1:4318/v1/traces")
    );
    assert_eq!(t.service_name.as_deref(), Some("edge"));
    assert_eq!(t.sampling_ratio, 0.25);
    assert_eq!(
        t.headers,
        vec![("x-api-key".to_string(), "abc".to_string())]
    );
}

#[test]
fn defaults_and_off() {
    let t = proxy("tracing: {}\n").expect("valid").expect("tracing on");
    assert_eq!(t.endpoint, None);
    assert_eq!(t.sampling_ratio, defaults::TRACING_SAMPLING_RATIO);
    assert_eq!(proxy("tracing: {enabled: false}\n"), Ok(None));
    assert_eq!(proxy(""), Ok(None));
}

#[test]
fn bad_values_are_reported_at_their_place() {
    let errs = proxy(
        "tracing:\n  endpoint: 127.0.0.1:4318\n  samplingRatio: 2\n  serviceNmae: x\n  headers: {\"bad name\": v}\n",
    )
    .expect_err("invalid");
    let all = errs.join("\n");
    assert!(
        all.contains("serin.yaml:3:13") && all.contains("bad endpoint"),
        "{all}"
    );
    assert!(
        all.contains("serin.yaml:4:18") && all.contains("from 0 to 1"),
        "{all}"
    );
    assert!(
        all.contains("serviceNmae") && all.contains("serviceName"),
        "{all}"
    );
    assert!(
        all.contains("`bad name` is not a valid header name"),
        "{all}"
    );
}

#[test]
fn a_stack_file_traces_its_gateway_and_sidecars() {
    let text = "services:\n  - name: a\n    command: serin-demo\ntracing:\n  endpoint: http://127.0.0.1:4318\n  serviceName: shop\n";
    let file =
        parse_stack_file(text, "stack.yaml", Path::new("/")).unwrap_or_else(|e| panic!("{e}"));
    let t = file.gateway.tracing.expect("tracing on");
    assert_eq!(t.service_name.as_deref(), Some("shop"));
}
