//! Config errors: every problem at once, each with file:line:column, the
//! field path and what is wrong; non-zero exit.

use crate::common::SERIN;

fn validate(yaml: &str) -> (bool, String) {
    let dir = std::env::temp_dir().join(format!(
        "serin-validate-{}-{}",
        std::process::id(),
        yaml.len()
    ));
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
    let file = dir.join("bad.yaml");
    std::fs::write(&file, yaml).unwrap_or_else(|e| panic!("{e}"));
    let out = std::process::Command::new(SERIN)
        .args(["validate", &file.display().to_string()])
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    let _ = std::fs::remove_dir_all(&dir);
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn every_problem_is_reported_at_once_with_its_place() {
    let (ok, out) = validate(
        r#"listeners:
  - name: gw
    address: 127.0.0.1:0
    colour: blue
  - name: gw
    address: nowhere
services:
  - name: qotm
    connectTimeout: soon
    versions:
      - name: v1
        endpoints: ["127.0.0.1:9001"]
      - name: v1
        endpoints: ["127.0.0.1:9002"]
routes:
  - name: r
    rules:
      - matches:
          - path: {type: RegularExpression, value: "/(unclosed"}
            headers: [{name: x, value: 1, type: Regex}]
        timeouts: {request: 5 parsecs}
        backendRefs:
          - {name: qotm, version: v1, weight: 0}
          - {name: qotm, version: v9, weight: "lots"}
          - {name: quotm, version: v1}
  - name: zero
    rules:
      - backendRefs: [{name: qotm, version: v1, weight: 0}]
"#,
    );
    assert!(!ok, "{out}");
    for expected in [
        "bad.yaml:4:5: listeners[0].colour: unknown field `colour`",
        "bad.yaml:5:11: listeners[1].name: duplicate listener name `gw` (first at line 2)",
        "bad.yaml:6:14: listeners[1].address: bad address `nowhere`",
        "bad.yaml:9:21: services[0].connectTimeout: bad duration `soon`",
        "bad.yaml:13:15: services[0].versions[1].name: duplicate version name `v1`",
        "bad.yaml:19:52: routes[0].rules[0].matches[0].path.value: bad regular expression `/(unclosed`: error: unclosed group",
        "bad.yaml:20:49: routes[0].rules[0].matches[0].headers[0].type: unknown value `Regex`, did you mean `RegularExpression`?",
        "bad.yaml:24:35: routes[0].rules[0].backendRefs[1].version: service `qotm` has no version `v9`",
        "bad.yaml:21:29: routes[0].rules[0].timeouts.request: bad duration `5 parsecs`",
        "bad.yaml:24:47: routes[0].rules[0].backendRefs[1].weight: expected a whole number",
        "bad.yaml:25:20: routes[0].rules[0].backendRefs[2].name: no service named `quotm`, did you mean `qotm`?",
        "bad.yaml:28:9: routes[1].rules[0].backendRefs: the backend weights sum to 0",
    ] {
        assert!(
            out.contains(expected),
            "missing: {expected}\n--- output:\n{out}"
        );
    }
}

#[test]
fn unknown_versions_and_wrong_types_are_named() {
    let (ok, out) = validate(
        r#"listeners: {name: gw}
services:
  - name: s
    versions: [{name: v1, endpoints: ["127.0.0.1:1"]}]
routes:
  - name: r
    rules:
      - backendRefs: [{name: s, version: v2}]
"#,
    );
    assert!(!ok);
    assert!(
        out.contains("bad.yaml:1:12: listeners: expected a list, found a mapping"),
        "{out}"
    );
    assert!(out.contains("routes[0].rules[0].backendRefs[0].version: service `s` has no version `v2`; its versions are: v1"), "{out}");
}

#[test]
fn yaml_syntax_errors_have_a_place_and_good_files_pass() {
    let (ok, out) = validate("listeners: [\n  {name: a\n");
    assert!(!ok);
    assert!(
        out.contains("bad.yaml:") && out.contains("YAML syntax"),
        "{out}"
    );
    let (ok, out) = validate(
        "listeners: [{name: gw, address: '127.0.0.1:0'}]\nservices: [{name: s, versions: [{name: v1, endpoints: ['127.0.0.1:1']}]}]\nroutes: [{name: r, rules: [{backendRefs: [{name: s}]}]}]\n",
    );
    assert!(ok, "{out}");
    assert!(out.contains("valid"), "{out}");
}

#[test]
fn an_address_that_cannot_be_bound_is_a_config_error_at_its_line() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
    let addr = taken.local_addr().unwrap_or_else(|e| panic!("{e}"));
    let dir = std::env::temp_dir().join(format!("serin-bind-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
    let file = dir.join("serin.yaml");
    std::fs::write(
        &file,
        format!(
            "listeners:\n  - name: gw\n    address: {addr}\nservices: [{{name: s, versions: [{{name: v1, endpoints: ['127.0.0.1:1']}}]}}]\nroutes: [{{name: r, rules: [{{backendRefs: [{{name: s}}]}}]}}]\n"
        ),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let out = std::process::Command::new(SERIN)
        .args([
            "proxy",
            "--config",
            &file.display().to_string(),
            "--admin",
            "127.0.0.1:0",
        ])
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    let _ = std::fs::remove_dir_all(&dir);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "serin.yaml:3:14: listeners[0].address: cannot listen on {addr}"
        )),
        "{err}"
    );
    drop(taken);
}

#[test]
fn the_metrics_listener_cannot_share_the_admin_address() {
    let (ok, out) = validate(
        "admin:\n  address: 127.0.0.1:9901\n  metricsAddress: 127.0.0.1:9901\n\
         listeners: [{name: web, address: 127.0.0.1:0}]\n",
    );
    assert!(!ok, "{out}");
    assert!(
        out.contains("bad.yaml:3:")
            && out.contains("admin.metricsAddress")
            && out.contains("give the metrics their own port"),
        "{out}"
    );
}

/// `serin validate FILE [--json]`: whether it passed, and stdout + stderr.
fn validate_path(file: &std::path::Path, json: bool) -> (bool, String) {
    let mut cmd = std::process::Command::new(SERIN);
    cmd.arg("validate").arg(file);
    if json {
        cmd.arg("--json");
    }
    let out = cmd.output().unwrap_or_else(|e| panic!("{e}"));
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn example(path: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples")
        .join(path)
}

#[test]
fn the_example_stack_files_and_proxy_config_are_valid() {
    for stack in ["qotm/stack.yaml", "mesh/stack.yaml", "counter/stack.yaml"] {
        let (ok, out) = validate_path(&example(stack), false);
        assert!(ok, "{stack}: {out}");
        assert!(out.contains("stack.yaml: valid stack file ("), "{out}");
    }
    let (ok, out) = validate_path(&example("proxy/serin.yaml"), false);
    assert!(
        ok && out.contains("serin.yaml: valid proxy config ("),
        "{out}"
    );
    let (ok, out) = validate_path(&example("qotm/stack.yaml"), true);
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap_or_default();
    assert!(ok, "{out}");
    assert_eq!(v["kind"], "stack file", "{out}");
    assert_eq!(v["valid"], true, "{out}");
}

#[test]
fn a_bad_stack_file_gets_every_problem_with_its_place() {
    let (ok, out) = validate(
        r#"gateway:
  listen: 127.0.0.1:0
  admin: nowhere
  routes:
    - name: web
      rules:
        - backendRefs: [{name: web, version: v3}]
services:
  - name: web
    command: ./web
    replicas: 500
    restartPolicy: Sometimes
    versions:
      - name: v1
      - name: v1
  - name: db
    command: redis-server
    dependsOn: [web, nosuch]
    readiness: {httpGet: {path: ready}}
"#,
    );
    assert!(!ok, "{out}");
    let expected = [
        "bad.yaml:3:10: gateway.admin: bad address `nowhere`",
        "bad.yaml:7:46: gateway.routes[0].rules[0].backendRefs[0].version: service `web` has no version `v3`",
        "bad.yaml:11:15: services[0].replicas: replicas must be from 0 to 100, found 500",
        "bad.yaml:12:20: services[0].restartPolicy: unknown value `Sometimes`",
        "bad.yaml:15:15: services[0].versions[1].name: version `v1` is defined twice",
        "bad.yaml:18:22: services[1].dependsOn[1]: unknown service `nosuch`",
        "bad.yaml:19:33: services[1].readiness.httpGet.path: an HTTP path starts with `/`",
    ];
    for e in expected {
        assert!(out.contains(e), "missing: {e}\n--- output:\n{out}");
    }
    // Read as a stack file, not as a proxy config (whose reader knows no
    // `gateway`), and nothing but those problems, each with its place.
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines[0],
        format!("{} problems in the configuration:", expected.len()),
        "{out}"
    );
    let placed = regex::Regex::new(r"^  \S*/bad\.yaml:[1-9]\d*:[1-9]\d*: [A-Za-z][\w.\[\]]*: \S")
        .unwrap_or_else(|e| panic!("{e}"));
    for line in &lines[1..] {
        assert!(
            placed.is_match(line),
            "not FILE:LINE:COL: field.path: message: {line}"
        );
    }
}

/// What the Gateway API accepts and answers 500 for is valid: `serin
/// validate` passes it and warns at its place (in text and in JSON). A
/// backendRef to a service the file does not define stays an error.
#[test]
fn a_rule_that_answers_500_is_valid_with_a_warning_at_its_place() {
    let text = "listeners: [{name: gw, address: 127.0.0.1:0}]
services: [{name: s, versions: [{name: v1, endpoints: ['127.0.0.1:1']}]}]
routes:
  - name: r
    rules:
      - matches: [{path: {value: /gone}}]
      - backendRefs: [{name: s}, {name: b, group: example.com, kind: Bucket}]
";
    let dir = std::env::temp_dir().join(format!("serin-warn-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
    let file = dir.join("serin.yaml");
    std::fs::write(&file, text).unwrap_or_else(|e| panic!("{e}"));
    let (ok, out) = validate_path(&file, false);
    assert!(ok, "{out}");
    assert!(
        out.contains("warning: ")
            && out.contains("serin.yaml:6:9: routes[0].rules[0]: a rule without `backendRefs`"),
        "{out}"
    );
    assert!(
        out.contains("serin.yaml:7:70: routes[0].rules[1].backendRefs[1].kind: `Bucket` (group `example.com`) is not a Service"),
        "{out}"
    );
    let (ok, out) = validate_path(&file, true);
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap_or_default();
    assert!(ok && v["valid"] == true, "{out}");
    assert_eq!(v["warnings"].as_array().map(Vec::len), Some(2), "{out}");
    assert_eq!(v["warnings"][0]["line"], 6, "{out}");

    std::fs::write(&file, text.replace("{name: s}", "{name: nope}"))
        .unwrap_or_else(|e| panic!("{e}"));
    let (ok, out) = validate_path(&file, false);
    assert!(!ok && out.contains("no service named `nope`"), "{out}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_bad_trusted_cidr_or_hop_count_is_reported_at_its_place() {
    let (ok, out) = validate(
        r#"listeners:
  - name: gw
    address: 127.0.0.1:0
    clientAddress:
      trustedHops: -1
      trustedCidrs: [10.0.0.0/8, 10.0.0.0/33, proxy.local, "::1"]
services: []
routes: []
"#,
    );
    assert!(!ok, "{out}");
    for expected in [
        "bad.yaml:5:20: listeners[0].clientAddress.trustedHops: expected a whole number",
        "bad.yaml:6:34: listeners[0].clientAddress.trustedCidrs[1]: `10.0.0.0/33` is not a CIDR",
        "bad.yaml:6:47: listeners[0].clientAddress.trustedCidrs[2]: `proxy.local` is not a CIDR",
    ] {
        assert!(out.contains(expected), "missing {expected:?} in:\n{out}");
    }
    assert!(!out.contains("trustedCidrs[0]"), "{out}");
    assert!(!out.contains("trustedCidrs[3]"), "{out}");
}

#[test]
fn proxy_protocol_needs_a_trusted_peer_and_each_cidr_parses() {
    let (ok, out) = validate(
        r#"listeners:
  - name: gw
    address: 127.0.0.1:0
    proxyProtocol:
      trustedCidrs: [10.0.0.0/8, nlb.local]
  - name: other
    address: 127.0.0.1:0
    proxyProtocol: {trustedCidrs: []}
services: []
routes: []
"#,
    );
    assert!(!ok, "{out}");
    for expected in [
        "bad.yaml:5:34: listeners[0].proxyProtocol.trustedCidrs[1]: `nlb.local` is not a CIDR",
        "bad.yaml:8:20: listeners[1].proxyProtocol: proxyProtocol needs at least one entry in `trustedCidrs`",
    ] {
        assert!(out.contains(expected), "missing {expected:?} in:\n{out}");
    }
    assert!(!out.contains("trustedCidrs[0]"), "{out}");
}

#[test]
fn api_key_filters_name_every_bad_key_and_header() {
    let (ok, out) = validate(
        r#"listeners: [{name: gw, address: '127.0.0.1:0'}]
services: [{name: s, versions: [{name: v1, endpoints: ['127.0.0.1:1']}]}]
routes:
  - name: r
    rules:
      - filters:
          - type: APIKey
            apiKey:
              header: "bad header"
              keys:
                - {name: ci, sha256: not-hex}
                - {name: ci, sha256: "0000000000000000000000000000000000000000000000000000000000000000"}
          - type: APIKey
            apiKey: {keys: []}
          - type: APIKey
        backendRefs: [{name: s}]
"#,
    );
    assert!(!ok, "{out}");
    for expected in [
        "bad.yaml:9:23: routes[0].rules[0].filters[0].apiKey.header: `bad header` is not a valid header name",
        "bad.yaml:11:38: routes[0].rules[0].filters[0].apiKey.keys[0].sha256: sha256 must be 64 hex digits",
        "bad.yaml:12:26: routes[0].rules[0].filters[0].apiKey.keys[1].name: key name `ci` is given twice",
        "bad.yaml:14:21: routes[0].rules[0].filters[1].apiKey: an APIKey filter needs at least one entry in `keys`",
        "bad.yaml:15:13: routes[0].rules[0].filters[2]: this APIKey filter needs its `apiKey` section",
    ] {
        assert!(
            out.contains(expected),
            "missing: {expected}\n--- output:\n{out}"
        );
    }
}

#[test]
fn a_backend_ref_takes_header_modifiers_only_each_once() {
    let (ok, out) = validate(
        r#"listeners: [{name: gw, address: '127.0.0.1:0'}]
services: [{name: s, versions: [{name: v1, endpoints: ['127.0.0.1:1']}]}]
routes:
  - name: r
    rules:
      - backendRefs:
          - name: s
            version: v1
            filters:
              - {type: URLRewrite, urlRewrite: {hostname: x}}
              - {type: RequestHeaderModifier, requestHeaderModifier: {set: [{name: a, value: b}]}}
              - {type: RequestHeaderModifier, requestHeaderModifier: {remove: [a]}}
              - {type: ResponseHeaderModifier}
"#,
    );
    assert!(!ok, "{out}");
    for expected in [
        "bad.yaml:10:17: routes[0].rules[0].backendRefs[0].filters[0]: a backendRef's filters may be RequestHeaderModifier or ResponseHeaderModifier, not URLRewrite",
        "bad.yaml:12:17: routes[0].rules[0].backendRefs[0].filters[2]: a backendRef has at most one RequestHeaderModifier filter",
        "bad.yaml:13:17: routes[0].rules[0].backendRefs[0].filters[3]: this ResponseHeaderModifier filter needs its `responseHeaderModifier` section",
    ] {
        assert!(out.contains(expected), "missing {expected:?} in:\n{out}");
    }
    assert!(!out.contains("filters[1]"), "{out}");
}

#[test]
fn grpc_retry_codes_are_names_of_failures() {
    let (ok, out) = validate(
        r#"listeners: [{name: gw, address: '127.0.0.1:0'}]
services: [{name: s, versions: [{name: v1, endpoints: ['127.0.0.1:1']}]}]
routes:
  - name: r
    rules:
      - backendRefs: [{name: s, version: v1}]
        retry: {grpcCodes: [unavailable, ok, UNAVAILABLE, nope]}
"#,
    );
    assert!(!ok, "{out}");
    for expected in [
        "bad.yaml:7:42: routes[0].rules[0].retry.grpcCodes[1]: `ok` is a success",
        "bad.yaml:7:59: routes[0].rules[0].retry.grpcCodes[3]: unknown gRPC status `nope`, expected one of: cancelled, unknown,",
    ] {
        assert!(out.contains(expected), "missing {expected:?} in:\n{out}");
    }
    assert!(
        !out.contains("grpcCodes[0]") && !out.contains("grpcCodes[2]"),
        "{out}"
    );
}

#[test]
fn a_services_grpc_error_codes_are_names_of_failures() {
    let (ok, out) = validate(
        r#"listeners: [{name: gw, address: '127.0.0.1:0'}]
services:
  - name: s
    grpcErrorCodes: [internal, ok, bogus]
    versions: [{name: v1, endpoints: ['127.0.0.1:1']}]
routes: [{name: r, rules: [{backendRefs: [{name: s, version: v1}]}]}]
"#,
    );
    assert!(!ok, "{out}");
    for expected in [
        "bad.yaml:4:32: services[0].grpcErrorCodes[1]: `ok` is a success: it is never a failure",
        "bad.yaml:4:36: services[0].grpcErrorCodes[2]: unknown gRPC status `bogus`",
    ] {
        assert!(out.contains(expected), "missing {expected:?} in:\n{out}");
    }
    assert!(!out.contains("grpcErrorCodes[0]"), "{out}");
}

#[test]
fn a_canary_s_own_checks_are_validated_at_their_place() {
    let (ok, out) = validate(
        r#"services:
  - name: qotm
    command: serin-demo
    canary:
      checks:
        - {name: not-found, figure: errorShare4xx, max: 0}
        - name: queue
          promql: 'max(queue{service="{{service}}",pod="{{pod}}"})'
          max: 100
        - name: p95
          figure: p95
          max: 0.2
        - name: nobounds
          figure: p99
        - {name: not-found, figure: p99, min: 2, max: 1}
"#,
    );
    assert!(!ok, "{out}");
    let expected = [
        "bad.yaml:8:19: services[0].canary.checks[1].promql: unknown placeholder `{{pod}}` \
         at character 38",
        "bad.yaml:11:19: services[0].canary.checks[2].figure: unknown figure `p95`",
        "bad.yaml:13:11: services[0].canary.checks[3]: a check needs a range",
        "bad.yaml:15:18: services[0].canary.checks[4].name: check `not-found` is defined twice \
         (first on line 6)",
        "bad.yaml:15:47: services[0].canary.checks[4].min: `min` 2 is above `max` 1",
    ];
    for e in expected {
        assert!(out.contains(e), "missing: {e}\n--- output:\n{out}");
    }
    assert!(
        out.starts_with(&format!("{} problems", expected.len())),
        "{out}"
    );
}

#[test]
fn a_canary_s_webhooks_and_notify_targets_are_validated_at_their_place() {
    let (ok, out) = validate(
        r#"services:
  - name: qotm
    command: serin-demo
    canary:
      webhooks:
        - {name: smoke, type: pre-deploy, url: 'http://127.0.0.1:9/'}
        - name: gate
          type: confirm-promotion
          url: ftp://hooks.example/gate
          timeout: 0s
        - {name: gate, type: rollout, url: 'http://127.0.0.1:9/'}
      notify:
        - {url: 'http://127.0.0.1:9/', format: teams}
"#,
    );
    assert!(!ok, "{out}");
    let expected = [
        "bad.yaml:6:31: services[0].canary.webhooks[0].type: unknown webhook type `pre-deploy`",
        "bad.yaml:9:16: services[0].canary.webhooks[1].url: `ftp://hooks.example/gate` is not \
         an http:// or https:// URL",
        "bad.yaml:10:20: services[0].canary.webhooks[1].timeout: a webhook's timeout must be \
         more than 0",
        "bad.yaml:11:18: services[0].canary.webhooks[2].name: webhook `gate` is defined twice \
         (first on line 7)",
        "bad.yaml:13:48: services[0].canary.notify[0].format: unknown notification format \
         `teams`",
    ];
    for e in expected {
        assert!(out.contains(e), "missing: {e}\n--- output:\n{out}");
    }
    assert!(
        out.starts_with(&format!("{} problems", expected.len())),
        "{out}"
    );
}

#[test]
fn automatic_and_blue_green_canary_keys_are_validated_at_their_place() {
    let (ok, out) = validate(
        r#"services:
  - name: qotm
    command: serin-demo
    canary: {auto: yes please, blueGreen: {previewHeader: x-preview}}
  - name: cart
    command: serin-demo
    canary:
      auto: true
      steps: [50, 100]
      blueGreen: {}
    versions: [{name: v1}, {name: v1-canary}]
"#,
    );
    assert!(!ok, "{out}");
    let expected = [
        "bad.yaml:4:20: services[0].canary.auto: expected true or false",
        "bad.yaml:4:59: services[0].canary.blueGreen.previewHeader: `x-preview` is not \
         NAME=VALUE",
        "bad.yaml:8:13: services[1].canary.auto: `auto: true` runs a new revision of `v1` as \
         `v1-canary`, which is already a version of this service",
        "bad.yaml:10:18: services[1].canary.blueGreen: `blueGreen` needs `previewHeader`",
        "bad.yaml:9:14: services[1].canary.steps: `steps` does not go with `blueGreen`",
    ];
    for e in expected {
        assert!(out.contains(e), "missing: {e}\n--- output:\n{out}");
    }
    assert!(
        out.starts_with(&format!("{} problems", expected.len())),
        "{out}"
    );
}

#[test]
fn a_blue_green_preview_host_is_one_host_name_alone_at_its_place() {
    let (ok, out) = validate(
        r#"services:
  - name: qotm
    command: serin-demo
    canary: {blueGreen: {previewHost: 'preview.qotm.local:8080'}}
  - name: cart
    command: serin-demo
    canary:
      blueGreen: {previewHeader: x-preview=1, previewHost: preview.cart.local}
  - name: shop
    command: serin-demo
    canary: {blueGreen: {previewHost: '*.shop.local'}, steps: [100]}
"#,
    );
    assert!(!ok, "{out}");
    let expected = [
        "bad.yaml:4:39: services[0].canary.blueGreen.previewHost: `preview.qotm.local:8080` has \
         a port",
        "bad.yaml:8:60: services[1].canary.blueGreen.previewHost: `blueGreen` previews on \
         `previewHeader` or `previewHost`, not both",
        "bad.yaml:11:39: services[2].canary.blueGreen.previewHost: `*.shop.local` is a wildcard",
        "services[2].canary.steps: `steps` does not go with `blueGreen`, which previews on its \
         header or host",
    ];
    for e in expected {
        assert!(out.contains(e), "missing: {e}\n--- output:\n{out}");
    }
    assert!(
        out.starts_with(&format!("{} problems", expected.len())),
        "{out}"
    );
}

#[test]
fn token_auth_filters_name_every_bad_setting_and_the_line_of_every_bad_file() {
    let dir = serin_testkit::process::TempDir::new("serin-validate-auth");
    for (name, text) in [
        (
            "oct.json",
            r#"{"keys":[{"kty":"oct","kid":"s","k":"c2VjcmV0"}]}"#,
        ),
        ("users.htpasswd", "# staff\nalice:$apr1$abc$def\nbob\n"),
        ("keys.txt", "ci 00\nci2 zz\n"),
    ] {
        std::fs::write(dir.path().join(name), text).unwrap_or_else(|e| panic!("{e}"));
    }
    let file = dir.path().join("bad.yaml");
    std::fs::write(
        &file,
        r#"listeners: [{name: gw, address: '127.0.0.1:0'}]
services: [{name: s, versions: [{name: v1, endpoints: ['127.0.0.1:1']}]}]
routes:
  - name: r
    rules:
      - filters:
          - type: JWT
            jwt: {issuer: "", audiences: [], jwks: {file: oct.json}}
          - type: JWT
            jwt: {issuer: i, audiences: [a], jwks: {url: "ftp://x"}, claimsToHeaders: [{claim: sub, header: authorization}]}
          - type: JWT
            jwt: {issuer: i, audiences: [a], jwks: {file: missing.json, url: "http://x"}}
          - type: BasicAuth
            basicAuth: {htpasswd: users.htpasswd, realm: 'a"b'}
          - type: APIKey
            apiKey: {keysFile: keys.txt}
          - type: APIKey
            apiKey: {keysFile: keys.txt, keys: [{name: a, sha256: "00"}]}
          - type: JWT
        backendRefs: [{name: s}]
"#,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let (ok, out) = validate_path(&file, false);
    assert!(!ok, "{out}");
    let d = dir.path().display();
    for expected in [
        "bad.yaml:8:27: routes[0].rules[0].filters[0].jwt.issuer: issuer must not be empty".to_string(),
        "bad.yaml:8:18: routes[0].rules[0].filters[0].jwt: a JWT filter needs at least one entry in `audiences`".to_string(),
        format!("bad.yaml:8:59: routes[0].rules[0].filters[0].jwt.jwks.file: {d}/oct.json: key s: a symmetric (`oct`) key"),
        "bad.yaml:10:58: routes[0].rules[0].filters[1].jwt.jwks.url: `ftp://x` is not an http(s) URL".to_string(),
        "bad.yaml:10:109: routes[0].rules[0].filters[1].jwt.claimsToHeaders[0].header: `authorization` cannot carry a claim".to_string(),
        "bad.yaml:12:52: routes[0].rules[0].filters[2].jwt.jwks: jwks needs exactly one of `file` (a JWKS file) and `url`".to_string(),
        "bad.yaml:14:58: routes[0].rules[0].filters[3].basicAuth.realm: realm must be non-empty text".to_string(),
        format!("bad.yaml:14:35: routes[0].rules[0].filters[3].basicAuth.htpasswd: {d}/users.htpasswd:2: user `alice`: only bcrypt hashes ($2y$, $2b$, $2a$) are accepted"),
        format!("bad.yaml:14:35: routes[0].rules[0].filters[3].basicAuth.htpasswd: {d}/users.htpasswd:3: expected `user:hash`"),
        format!("bad.yaml:16:32: routes[0].rules[0].filters[4].apiKey.keysFile: {d}/keys.txt:1: sha256 must be 64 hex digits"),
        format!("bad.yaml:16:32: routes[0].rules[0].filters[4].apiKey.keysFile: {d}/keys.txt:2: sha256 must be 64 hex digits"),
        "bad.yaml:18:32: routes[0].rules[0].filters[5].apiKey.keysFile: give either `keys` or `keysFile`, not both".to_string(),
        "bad.yaml:19:13: routes[0].rules[0].filters[6]: this JWT filter needs its `jwt` section".to_string(),
    ] {
        assert!(out.contains(&expected), "missing: {expected}\n--- output:\n{out}");
    }
}

#[test]
fn session_persistence_settings_are_checked_at_their_place() {
    let (ok, out) = validate(
        r#"listeners: [{name: gw, address: '127.0.0.1:0'}]
services: [{name: s, versions: [{name: v1, endpoints: ['127.0.0.1:1']}]}]
routes:
  - name: r
    rules:
      - backendRefs: [{name: s, version: v1}]
        sessionPersistence: {sessionName: "a b", cookieConfig: {lifetimeType: Permanent}}
      - backendRefs: [{name: s, version: v1}]
        sessionPersistence: {type: Header, sessionName: "x session"}
      - backendRefs: [{name: s, version: v1}]
        sessionPersistence: {type: Sticky}
"#,
    );
    assert!(!ok, "{out}");
    for expected in [
        "bad.yaml:7:43: routes[0].rules[0].sessionPersistence.sessionName: `a b` is not a cookie name",
        "bad.yaml:7:64: routes[0].rules[0].sessionPersistence.cookieConfig: a Permanent cookie needs `absoluteTimeout` (its Max-Age)",
        "bad.yaml:9:57: routes[0].rules[1].sessionPersistence.sessionName: `x session` is not a valid header name",
        "bad.yaml:11:36: routes[0].rules[2].sessionPersistence.type: unknown value `Sticky`, expected one of: Cookie, Header",
    ] {
        assert!(out.contains(expected), "missing {expected:?} in:\n{out}");
    }
}
