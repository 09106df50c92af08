//! Every problem has its place (line, column and field path), and a file
//! gets only the problems it has: a required field that is missing or
//! unreadable, or a section whose `type` is unknown, is reported once —
//! not again through the placeholder that stands in for it (an empty
//! name, a default type) at `FILE:0:0` or as a section it is not.

use std::path::Path;

use serin_config::proxy::parse_proxy_config;
use serin_config::stack::parse_stack_file;

/// Listeners and services that the routes of the proxy cases refer to.
const PROXY_BASE: &str = "listeners: [{name: gw, address: '127.0.0.1:0'}]
services: [{name: s, versions: [{name: v1, endpoints: ['127.0.0.1:1']}]}]
";

/// A route (from line 4) whose one rule has `rule` (flow-style mapping
/// entries).
fn route_with(rule: &str) -> String {
    format!(
        "{PROXY_BASE}routes:\n  - name: r\n    rules:\n      - {{backendRefs: [{{name: s}}], {rule}}}\n"
    )
}

fn proxy_problems(text: &str) -> Vec<String> {
    match parse_proxy_config(text, "t.yaml", Path::new("/nonexistent")) {
        Ok(_) => Vec::new(),
        Err(e) => e.iter().map(ToString::to_string).collect(),
    }
}

fn stack_problems(text: &str) -> Vec<String> {
    match parse_stack_file(text, "t.yaml", Path::new("/nonexistent")) {
        Ok(_) => Vec::new(),
        Err(e) => e.iter().map(ToString::to_string).collect(),
    }
}

/// Checks every case and fails with every mismatch at once.
#[track_caller]
fn check_cases(cases: &[(&str, String, &[&str])], problems: fn(&str) -> Vec<String>) {
    let mut mismatches = Vec::new();
    for (what, text, expected) in cases {
        let got = problems(text);
        if got != *expected {
            mismatches.push(format!(
                "{what}:\n{text}--- got:\n{}\n--- expected:\n{}\n",
                got.join("\n"),
                expected.join("\n")
            ));
        }
    }
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
}

#[test]
fn proxy_config_problems_are_reported_once_at_their_place() {
    let cases: &[(&str, String, &[&str])] = &[
        (
            "a listener without a name",
            "listeners: [{address: '127.0.0.1:0'}]\n".into(),
            &["t.yaml:1:13: listeners[0]: missing required field `name`"],
        ),
        (
            "a listener name that is not a string",
            "listeners: [{name: [gw], address: '127.0.0.1:0'}]\n".into(),
            &["t.yaml:1:20: listeners[0].name: expected a string, found a list"],
        ),
        (
            "TLS without its key",
            "listeners: [{name: gw, address: '127.0.0.1:0', tls: {certificate: /etc/hostname}}]\n"
                .into(),
            &[
                "t.yaml:1:53: listeners[0].tls: the default certificate needs both `certificate` and `key`",
            ],
        ),
        (
            "a service and a version without names",
            "services: [{versions: [{endpoints: ['127.0.0.1:1']}]}]\n".into(),
            &[
                "t.yaml:1:12: services[0]: missing required field `name`",
                "t.yaml:1:24: services[0].versions[0]: missing required field `name`",
            ],
        ),
        (
            "a health check without a path",
            "services: [{name: s, healthCheck: {interval: 1s}, versions: [{name: v1}]}]\n".into(),
            &["t.yaml:1:35: services[0].healthCheck: missing required field `path`"],
        ),
        (
            "an unknown load balancer with a non-ASCII name",
            "services: [{name: s, loadBalancer: {type: ab€cd}, versions: [{name: v1}]}]\n".into(),
            &[
                "t.yaml:1:43: services[0].loadBalancer.type: unknown value `ab€cd`, expected one of: LeastRequest, RoundRobin, Random, RingHash",
            ],
        ),
        (
            "an unknown top-level key with a non-ASCII name",
            format!("{PROXY_BASE}ab€cd: 1\n"),
            &[
                "t.yaml:3:1: ab€cd: unknown field `ab€cd`, expected one of: admin, accessLog, tracing, workers, drainTimeout, listeners, services, routes, discovery",
            ],
        ),
        (
            "a route without a name",
            format!("{PROXY_BASE}routes: [{{rules: [{{backendRefs: [{{name: s}}]}}]}}]\n"),
            &["t.yaml:3:10: routes[0]: missing required field `name`"],
        ),
        (
            "a backend without a name",
            route_with("filters: []").replace("{name: s}", "{weight: 1}"),
            &["t.yaml:6:24: routes[0].rules[0].backendRefs[0]: missing required field `name`"],
        ),
        (
            "an unknown filter type",
            route_with("filters: [{type: OAuth2}]"),
            &[
                "t.yaml:6:53: routes[0].rules[0].filters[0].type: unknown value `OAuth2`, expected one of: RequestHeaderModifier, ResponseHeaderModifier, URLRewrite, RequestRedirect, ExternalAuth, RequestMirror, CORS, APIKey, JWT, BasicAuth",
            ],
        ),
        (
            "an unknown filter type with a section of its own",
            route_with("filters: [{type: OAuth2, oauth2: {issuer: x}}]"),
            &[
                "t.yaml:6:53: routes[0].rules[0].filters[0].type: unknown value `OAuth2`, expected one of: RequestHeaderModifier, ResponseHeaderModifier, URLRewrite, RequestRedirect, ExternalAuth, RequestMirror, CORS, APIKey, JWT, BasicAuth",
            ],
        ),
        (
            "a JWT filter without its section",
            route_with("filters: [{type: JWT}]"),
            &["t.yaml:6:46: routes[0].rules[0].filters[0]: this JWT filter needs its `jwt` section"],
        ),
        (
            "a CORS filter without its section",
            route_with("filters: [{type: CORS}]"),
            &["t.yaml:6:46: routes[0].rules[0].filters[0]: this CORS filter needs its `cors` section"],
        ),
        (
            "CORS origins, methods, headers and maxAge that are not valid",
            route_with(
                "filters: [{type: CORS, cors: {allowOrigins: ['https://*.a.com', 'a.com', 'https://a.*.com'], allowMethods: ['GET', 'G T'], allowHeaders: ['x y'], maxAge: 0}}]",
            ),
            &[
                "t.yaml:6:100: routes[0].rules[0].filters[0].cors.allowOrigins[1]: `a.com`: expected `*` or SCHEME://HOST[:PORT], such as https://app.example.com",
                "t.yaml:6:109: routes[0].rules[0].filters[0].cors.allowOrigins[2]: `https://a.*.com`: `*` may only begin the host (`https://*.example.com`)",
                "t.yaml:6:151: routes[0].rules[0].filters[0].cors.allowMethods[1]: `G T` is not an HTTP method",
                "t.yaml:6:174: routes[0].rules[0].filters[0].cors.allowHeaders[0]: `x y` is not a valid header name",
                "t.yaml:6:190: routes[0].rules[0].filters[0].cors.maxAge: maxAge must be at least 1 (seconds)",
            ],
        ),
        (
            "a request-body limit that is not a number",
            route_with("maxRequestBodyBytes: 1MB"),
            &["t.yaml:6:57: routes[0].rules[0].maxRequestBodyBytes: expected a whole number from 0 to 18446744073709551615, found `1MB`"],
        ),
        (
            "compression with an unknown coding and a bad media type",
            "listeners: [{name: gw, address: '127.0.0.1:0', compression: {encodings: [gzip, deflate, gzip], contentTypes: ['text/html; q=1']}}]\n".into(),
            &[
                "t.yaml:1:80: listeners[0].compression.encodings[1]: unknown value `deflate`, expected one of: zstd, br, gzip",
                "t.yaml:1:89: listeners[0].compression.encodings[2]: `gzip` is listed twice",
                "t.yaml:1:111: listeners[0].compression.contentTypes[0]: `text/html; q=1` is not a media type such as text/html or text/* (no parameters)",
            ],
        ),
        (
            "a filter type with a typo",
            route_with(
                "filters: [{type: RequestHeaderModifer, requestHeaderModifier: {set: [{name: 'bad name', value: x}]}}]",
            ),
            &[
                "t.yaml:6:53: routes[0].rules[0].filters[0].type: unknown value `RequestHeaderModifer`, did you mean `RequestHeaderModifier`?",
            ],
        ),
        (
            "a filter without a type",
            route_with("filters: [{requestHeaderModifier: {set: [{name: x, value: y}]}}]"),
            &["t.yaml:6:46: routes[0].rules[0].filters[0]: missing required field `type`"],
        ),
        (
            "a mirror without a backend",
            route_with("filters: [{type: RequestMirror, requestMirror: {percent: 5}}]"),
            &[
                "t.yaml:6:83: routes[0].rules[0].filters[0].requestMirror: missing required field `backendRef`",
            ],
        ),
        (
            "an external auth without a backend",
            route_with("filters: [{type: ExternalAuth, externalAuth: {timeout: 1s}}]"),
            &[
                "t.yaml:6:81: routes[0].rules[0].filters[0].externalAuth: missing required field `backendRef`",
            ],
        ),
        (
            "an unknown path modifier type",
            route_with(
                "matches: [{path: {value: /a}}], filters: [{type: URLRewrite, urlRewrite: {path: {type: ReplacePrefix, replacePrefixMatch: /}}}]",
            ),
            &[
                "t.yaml:6:123: routes[0].rules[0].filters[0].urlRewrite.path.type: unknown value `ReplacePrefix`, did you mean `ReplacePrefixMatch`?",
            ],
        ),
        (
            "an unknown path match type",
            route_with("matches: [{path: {type: Regex, value: '^/a'}}]"),
            &[
                "t.yaml:6:60: routes[0].rules[0].matches[0].path.type: unknown value `Regex`, did you mean `RegularExpression`?",
            ],
        ),
        (
            "a path match without a value",
            route_with("matches: [{path: {type: Exact}}]"),
            &["t.yaml:6:53: routes[0].rules[0].matches[0].path: missing required field `value`"],
        ),
        (
            "an unknown header match type",
            route_with("matches: [{headers: [{type: Regexp, name: x, value: '('}]}]"),
            &[
                "t.yaml:6:64: routes[0].rules[0].matches[0].headers[0].type: unknown value `Regexp`, did you mean `RegularExpression`?",
            ],
        ),
        (
            "a rate limit without requests",
            route_with("rateLimit: {unit: minute}"),
            &["t.yaml:6:47: routes[0].rules[0].rateLimit: missing required field `requests`"],
        ),
        (
            "an unknown rate limit key type",
            route_with("rateLimit: {requests: 5, key: {type: Headr}}"),
            &[
                "t.yaml:6:73: routes[0].rules[0].rateLimit.key.type: unknown value `Headr`, did you mean `Header`?",
            ],
        ),
        (
            "a global rate limit without Redis",
            route_with("rateLimit: {requests: 5, global: {failOpen: true}}"),
            &["t.yaml:6:69: routes[0].rules[0].rateLimit.global: missing required field `redis`"],
        ),
        (
            "a fault abort without a status",
            route_with("fault: {abort: {percent: 5}}"),
            &["t.yaml:6:51: routes[0].rules[0].fault.abort: missing required field `httpStatus`"],
        ),
        (
            "a fault delay with an unreadable delay",
            route_with("fault: {delay: {fixedDelay: soon}}"),
            &[
                "t.yaml:6:64: routes[0].rules[0].fault.delay.fixedDelay: bad duration `soon` (expected number at 0); write it like 250ms, 5s, 1m or 1h30m",
            ],
        ),
        (
            "a mirror share given twice",
            route_with(
                "filters: [{type: RequestMirror, requestMirror: {backendRef: {name: s}, percent: 5, fraction: {numerator: 1}}}]",
            ),
            &[
                "t.yaml:6:129: routes[0].rules[0].filters[0].requestMirror.fraction: give `percent` or `fraction`, not both",
            ],
        ),
        (
            "a mirror fraction over a denominator of 0",
            route_with(
                "filters: [{type: RequestMirror, requestMirror: {backendRef: {name: s}, fraction: {numerator: 0, denominator: 0}}}]",
            ),
            &[
                "t.yaml:6:145: routes[0].rules[0].filters[0].requestMirror.fraction.denominator: the denominator must be at least 1",
            ],
        ),
        (
            "a mirror fraction above 1",
            route_with(
                "filters: [{type: RequestMirror, requestMirror: {backendRef: {name: s}, fraction: {numerator: 101}}}]",
            ),
            &[
                "t.yaml:6:129: routes[0].rules[0].filters[0].requestMirror.fraction.numerator: the numerator must not be above the denominator (100)",
            ],
        ),
        (
            "a mirror fraction without a numerator",
            route_with(
                "filters: [{type: RequestMirror, requestMirror: {backendRef: {name: s}, fraction: {denominator: 3}}}]",
            ),
            &[
                "t.yaml:6:117: routes[0].rules[0].filters[0].requestMirror.fraction: missing required field `numerator`",
            ],
        ),
        (
            "a mirror to something that is not a Service",
            route_with(
                "filters: [{type: RequestMirror, requestMirror: {backendRef: {name: s, kind: ConfigMap}}}]",
            ),
            &[
                "t.yaml:6:112: routes[0].rules[0].filters[0].requestMirror.backendRef.kind: only a Service (group \"\", kind Service) can be this backend, not `ConfigMap`",
            ],
        ),
        (
            "a file's backend to a service that does not exist",
            route_with("filters: []").replace("{name: s}", "{name: nope}"),
            &[
                "t.yaml:6:31: routes[0].rules[0].backendRefs[0].name: no service named `nope`; services are: s",
            ],
        ),
    ];
    check_cases(cases, proxy_problems);
}

fn proxy_warnings(text: &str) -> Vec<String> {
    match parse_proxy_config(text, "t.yaml", Path::new("/nonexistent")) {
        Ok(cfg) => cfg.warnings.iter().map(ToString::to_string).collect(),
        Err(e) => e.iter().map(|e| format!("error: {e}")).collect(),
    }
}

/// What the Gateway API accepts and answers 500 for is valid, and warned
/// about at its place: a rule with no backendRefs, a backendRef that is not
/// a Service. A core Service, written out, is a backend like any other.
#[test]
fn proxy_config_warnings_are_at_their_place() {
    let rule =
        |rule: &str| format!("{PROXY_BASE}routes:\n  - name: r\n    rules:\n      - {{{rule}}}\n");
    let cases: &[(&str, String, &[&str])] = &[
        (
            "a rule without backendRefs",
            rule("matches: [{path: {value: /gone}}]"),
            &[
                "t.yaml:6:9: routes[0].rules[0]: a rule without `backendRefs` (or a RequestRedirect filter) answers 500 to every request, as the Gateway API says",
            ],
        ),
        (
            "a rule that redirects needs no backendRefs",
            rule("filters: [{type: RequestRedirect, requestRedirect: {hostname: example.com}}]"),
            &[],
        ),
        (
            "a backendRef of another kind, beside a Service",
            rule(
                "backendRefs: [{name: s, group: '', kind: Service, weight: 3}, {group: example.com, kind: Bucket, name: b}]",
            ),
            &[
                "t.yaml:6:99: routes[0].rules[0].backendRefs[1].kind: `Bucket` (group `example.com`) is not a Service (group \"\", kind Service): this backend's share of the rule's requests is answered 500 (Gateway API: InvalidKind)",
            ],
        ),
        (
            "a backendRef of another group",
            rule("backendRefs: [{name: s, group: apps}]"),
            &[
                "t.yaml:6:41: routes[0].rules[0].backendRefs[0].group: `Service` (group `apps`) is not a Service (group \"\", kind Service): this backend's share of the rule's requests is answered 500 (Gateway API: InvalidKind)",
            ],
        ),
    ];
    check_cases(cases, proxy_warnings);
}

/// A service (from line 2) with `entries` (flow-style mapping entries).
fn service_with(entries: &str) -> String {
    format!("services:\n  - {{name: web, command: ./web, {entries}}}\n")
}

#[test]
fn stack_file_problems_are_reported_once_at_their_place() {
    let cases: &[(&str, String, &[&str])] = &[
        (
            "no services",
            "gateway: {}\n".into(),
            &["t.yaml:1:1: missing required field `services`"],
        ),
        (
            "services that are not a list",
            "services: 5\n".into(),
            &["t.yaml:1:11: services: expected a list, found a scalar"],
        ),
        (
            "a service and a version without names",
            "services:\n  - {command: ./web, versions: [{replicas: 1}]}\n".into(),
            &[
                "t.yaml:2:5: services[0]: missing required field `name`",
                "t.yaml:2:33: services[0].versions[0]: missing required field `name`",
            ],
        ),
        (
            "a file without a path",
            service_with("files: [{content: x}]"),
            &["t.yaml:2:41: services[0].files[0]: missing required field `path`"],
        ),
        (
            "a secret without a name",
            service_with("secrets: [{value: x}]"),
            &["t.yaml:2:43: services[0].secrets[0]: missing required field `name`"],
        ),
        (
            "an exec probe without a command",
            service_with("liveness: {exec: {}}"),
            &["t.yaml:2:50: services[0].liveness.exec: missing required field `command`"],
        ),
        (
            "an outbound hop without a service or variable",
            service_with("sidecar: {outbound: [{rule: {backendRefs: [{name: web}]}}]}"),
            &[
                "t.yaml:2:54: services[0].sidecar.outbound[0]: missing required field `name`",
                "t.yaml:2:54: services[0].sidecar.outbound[0]: missing required field `env`",
            ],
        ),
        (
            "an unknown strategy type",
            service_with("strategy: {type: Recreat, maxSurge: 0, maxUnavailable: 0}"),
            &["t.yaml:2:50: services[0].strategy.type: unknown value `Recreat`, did you mean `Recreate`?"],
        ),
        (
            "an unknown restart policy with a non-ASCII name",
            service_with("restartPolicy: Alwäys"),
            &["t.yaml:2:48: services[0].restartPolicy: unknown value `Alwäys`, did you mean `Always`?"],
        ),
        (
            "a version named twice, with a route to it",
            "gateway: {routes: [{name: r, rules: [{backendRefs: [{name: web, version: v1}]}]}]}\nservices: [{name: web, command: ./web, versions: [{name: v1}, {name: v1}]}]\n".into(),
            &["t.yaml:2:70: services[0].versions[1].name: version `v1` is defined twice (first on line 2)"],
        ),
        (
            "a gateway route without a name",
            "gateway: {routes: [{rules: [{backendRefs: [{name: web}]}]}]}\nservices: [{name: web, command: ./web}]\n".into(),
            &["t.yaml:1:20: gateway.routes[0]: missing required field `name`"],
        ),
    ];
    check_cases(cases, stack_problems);
}

/// Files for the TLS cases: two certificates with their keys, one without
/// DNS names, a CA bundle.
struct TlsFiles(std::path::PathBuf);

impl TlsFiles {
    fn new() -> Self {
        let dir = std::env::temp_dir().join(format!("serin-places-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
        let write = |name: &str, text: &str| {
            std::fs::write(dir.join(name), text).unwrap_or_else(|e| panic!("{e}"));
        };
        for (stem, names) in [
            ("a", vec!["a.test".to_string()]),
            ("b", vec!["b.test".into()]),
            ("nodns", vec![]),
        ] {
            let ck = rcgen::generate_simple_self_signed(names).unwrap_or_else(|e| panic!("{e}"));
            write(&format!("{stem}.pem"), &ck.cert.pem());
            write(&format!("{stem}.key"), &ck.signing_key.serialize_pem());
        }
        Self(dir)
    }
}

impl Drop for TlsFiles {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn tls_problems_are_reported_at_their_place() {
    let files = TlsFiles::new();
    let dir = files.0.display().to_string();
    let listener =
        |tls: &str| format!("listeners:\n  - name: gw\n    address: 127.0.0.1:0\n    tls:\n{tls}");
    let service = |extra: &str| {
        format!(
            "services:\n  - name: s\n{extra}    versions: [{{name: v1, endpoints: ['127.0.0.1:1']}}]\n"
        )
    };
    let cases: Vec<(&str, String, Vec<String>)> = vec![
        (
            "a certificate file that is not there",
            listener("      certificates: [{certificate: missing.pem, key: a.key}]\n"),
            vec![format!("t.yaml:5:36: listeners[0].tls.certificates[0].certificate: cannot read {dir}/missing.pem: No such file or directory (os error 2)")],
        ),
        (
            "a key that is not the certificate's",
            listener("      certificate: a.pem\n      key: b.key\n"),
            vec![format!("t.yaml:5:20: listeners[0].tls.certificate: private key {dir}/b.key does not belong to certificate {dir}/a.pem")],
        ),
        (
            "a client validation mode that does not exist",
            listener("      certificate: a.pem\n      key: a.key\n      clientValidation: {mode: sometimes, caCertificates: a.pem}\n"),
            vec!["t.yaml:7:32: listeners[0].tls.clientValidation.mode: unknown value `sometimes`, expected one of: required, optional".into()],
        ),
        (
            "client validation without a CA",
            listener("      certificate: a.pem\n      key: a.key\n      clientValidation: {mode: optional}\n"),
            vec!["t.yaml:7:25: listeners[0].tls.clientValidation: missing required field `caCertificates`".into()],
        ),
        (
            "a CA bundle with no certificate in it",
            listener("      certificate: a.pem\n      key: a.key\n      clientValidation: {caCertificates: a.key}\n"),
            vec![format!("t.yaml:7:42: listeners[0].tls.clientValidation.caCertificates: {dir}/a.key holds no PEM certificate")],
        ),
        (
            "no certificate at all",
            listener("      clientValidation: {caCertificates: a.pem}\n"),
            vec!["t.yaml:5:7: listeners[0].tls: tls needs a certificate: `certificate` and `key` (the default), or `certificates` chosen by SNI".into()],
        ),
        (
            "SNI names that are not names, or named twice",
            listener("      certificates:\n        - {certificate: a.pem, key: a.key, hostnames: ['*.*.a.test', a.test]}\n        - {certificate: b.pem, key: b.key, hostnames: [A.test]}\n"),
            vec![
                "t.yaml:6:56: listeners[0].tls.certificates[0].hostnames[0]: `*.*.a.test`: a wildcard is `*.` followed by a name, as in *.example.com".into(),
                "t.yaml:7:11: listeners[0].tls.certificates[1]: `a.test` is served by the certificate at line 6 already".into(),
            ],
        ),
        (
            "a certificate chosen by its names that has none",
            listener("      certificates: [{certificate: nodns.pem, key: nodns.key}]\n"),
            vec!["t.yaml:5:36: listeners[0].tls.certificates[0].certificate: the certificate has no DNS names to be chosen by: give `hostnames`".into()],
        ),
        (
            "h2 without TLS",
            service("    protocol: h2\n"),
            vec!["t.yaml:2:5: services[0]: protocol h2 is HTTP/2 over TLS: give the service a `tls` section (or use h2c)".into()],
        ),
        (
            "h2c with TLS, a client certificate without its key, a bad SNI, a missing CA",
            service("    protocol: h2c\n    tls: {sni: 'not a name', caCertificates: none.pem, certificate: a.pem}\n"),
            vec![
                "t.yaml:2:5: services[0]: protocol h2c is HTTP/2 without TLS; with `tls`, use protocol h2".into(),
                "t.yaml:4:10: services[0].tls: a client certificate needs both `certificate` and `key`".into(),
                "t.yaml:4:16: services[0].tls.sni: `not a name` is not a DNS name or an IP address".into(),
                format!("t.yaml:4:46: services[0].tls.caCertificates: cannot read {dir}/none.pem: No such file or directory (os error 2)"),
            ],
        ),
        (
            "a client certificate match on a field certificates do not have",
            format!("{}routes:\n  - name: r\n    rules:\n      - matches: [{{clientCertificate: [{{name: Email, value: x}}]}}]\n        backendRefs: [{{name: s}}]\n", service("")),
            vec!["t.yaml:7:47: routes[0].rules[0].matches[0].clientCertificate[0].name: unknown client certificate field `Email`, expected one of: Subject, URI, DNS".into()],
        ),
    ];
    let mut mismatches = Vec::new();
    for (what, text, expected) in cases {
        let got: Vec<String> = match parse_proxy_config(&text, "t.yaml", &files.0) {
            Ok(_) => Vec::new(),
            Err(e) => e.iter().map(ToString::to_string).collect(),
        };
        if got != expected {
            mismatches.push(format!(
                "{what}:\n{text}--- got:\n{}\n--- expected:\n{}\n",
                got.join("\n"),
                expected.join("\n")
            ));
        }
    }
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
}
