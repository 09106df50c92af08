//! The stack file: good files give the resolved model, bad ones every
//! problem with `file:line:column: path: message`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serin_config::stack::*;

fn parse(text: &str) -> Result<Stack, Vec<String>> {
    parse_in(text, Path::new("/srv/app"))
}

fn parse_in(text: &str, dir: &Path) -> Result<Stack, Vec<String>> {
    parse_stack(text, "stack.yaml", dir).map_err(|e| e.iter().map(ToString::to_string).collect())
}

fn errors(text: &str) -> Vec<String> {
    match parse(text) {
        Ok(s) => panic!("expected errors, got {s:#?}"),
        Err(e) => e,
    }
}

/// Asserts that some error contains every one of `parts`.
#[track_caller]
fn assert_error(errs: &[String], parts: &[&str]) {
    assert!(
        errs.iter().any(|e| parts.iter().all(|p| e.contains(p))),
        "no error contains {parts:?}; errors:\n{}",
        errs.join("\n")
    );
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("serin-stack-test-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn full_example_resolves_defaults_and_overrides() {
    let dir = temp_dir("full");
    std::fs::create_dir_all(dir.join("secrets")).unwrap();
    std::fs::write(dir.join("secrets/token.txt"), "s3cret-token\n").unwrap();
    std::fs::write(dir.join("quotes.txt"), "a quote").unwrap();
    let text = r#"
services:
  - name: auth
    command: serin-demo
    args: [auth]
  - name: qotm
    command: serin-demo
    args: [qotm]
    env: {QUOTE_LANG: en, LEVEL: 3}
    replicas: 1
    readiness: {httpGet: {path: /ready}, initialDelay: 0s, period: 1s, timeout: 1s, failureThreshold: 1, successThreshold: 1}
    liveness:  {httpGet: {path: /health}, period: 5s, failureThreshold: 3}
    restartPolicy: OnFailure
    restartBackoff: {initial: 100ms, max: 1s, resetAfter: 10s}
    terminationGracePeriod: 2s
    dependsOn: [auth]
    files:
      - {path: config/app.toml, content: "x = 1\n"}
      - {path: quotes.txt, fromFile: quotes.txt}
    secrets:
      - {name: API_TOKEN, fromFile: secrets/token.txt}
      - {name: DB_PASS, fromEnv: PATH}
      - {name: TLS_KEY, value: "key", asFile: true}
    strategy: {type: RollingUpdate, maxSurge: 2, maxUnavailable: 1}
    versions:
      - name: v1
        replicas: 2
        args: [qotm, --version, v1]
      - name: "1.10"
        command: ./bin/qotm
        env: {EXTRA: "1", QUOTE_LANG: fr}
        liveness: {exec: {command: [sh, -c, "true"]}}
        strategy: {type: Recreate}
"#;
    let stack = parse_in(text, &dir).unwrap_or_else(|e| panic!("{}", e.join("\n")));
    assert_eq!(stack.base_dir, dir);
    assert_eq!(stack.services.len(), 2);

    let auth = &stack.services[0];
    assert_eq!(auth.versions.len(), 1);
    let a = &auth.versions[0];
    assert_eq!(a.name, DEFAULT_VERSION);
    assert_eq!(a.program, Program::Name("serin-demo".into()));
    assert_eq!(a.replicas, DEFAULT_REPLICAS);
    assert_eq!(a.readiness, None);
    assert_eq!(a.restart_policy, RestartPolicy::Always);
    assert_eq!(a.restart_backoff.initial, Duration::from_secs(10));
    assert_eq!(a.restart_backoff.max, Duration::from_secs(300));
    assert_eq!(a.restart_backoff.reset_after, Duration::from_secs(600));
    assert_eq!(a.termination_grace_period, Duration::from_secs(30));
    assert_eq!(
        a.strategy,
        Strategy::RollingUpdate {
            max_surge: 1,
            max_unavailable: 0
        }
    );

    let q = &stack.services[1];
    assert_eq!(
        q.depends_on,
        [serin_config::stack::Dependency {
            service: "auth".into(),
            condition: serin_config::stack::DependencyCondition::Ready,
        }]
    );
    let v1 = q.version("v1").unwrap();
    assert_eq!(v1.replicas, 2);
    assert_eq!(v1.args, ["qotm", "--version", "v1"]);
    assert_eq!(v1.env.get("QUOTE_LANG").map(String::as_str), Some("en"));
    assert_eq!(v1.env.get("LEVEL").map(String::as_str), Some("3"));
    let r = v1.readiness.as_ref().unwrap();
    assert_eq!(
        r.action,
        ProbeAction::HttpGet {
            path: "/ready".into(),
            port: None
        }
    );
    assert_eq!((r.period, r.failure_threshold), (Duration::from_secs(1), 1));
    let l = v1.liveness.as_ref().unwrap();
    assert_eq!(
        (l.period, l.timeout, l.failure_threshold),
        (Duration::from_secs(5), Duration::from_secs(1), 3)
    );
    assert_eq!(v1.restart_policy, RestartPolicy::OnFailure);
    assert_eq!(v1.restart_backoff.initial, Duration::from_millis(100));
    assert_eq!(v1.termination_grace_period, Duration::from_secs(2));
    assert_eq!(v1.files.len(), 2);
    assert_eq!(v1.files[1].content, b"a quote");
    let token = v1.secrets.iter().find(|s| s.name == "API_TOKEN").unwrap();
    assert_eq!(
        token.value.expose(),
        "s3cret-token",
        "one trailing newline is dropped"
    );
    assert!(
        !format!("{v1:?}").contains("s3cret-token"),
        "Debug must not show secrets"
    );
    let db = v1.secrets.iter().find(|s| s.name == "DB_PASS").unwrap();
    assert_eq!(db.value.expose(), std::env::var("PATH").unwrap());
    assert!(v1.secrets.iter().any(|s| s.name == "TLS_KEY" && s.as_file));
    assert_eq!(
        v1.strategy,
        Strategy::RollingUpdate {
            max_surge: 2,
            max_unavailable: 1
        }
    );

    let v110 = q.version("1.10").unwrap();
    assert_eq!(v110.replicas, 1, "inherited from the service");
    assert_eq!(v110.args, ["qotm"], "inherited from the service");
    assert_eq!(v110.program, Program::Path(dir.join("./bin/qotm")));
    assert_eq!(v110.env.get("QUOTE_LANG").map(String::as_str), Some("fr"));
    assert_eq!(v110.env.get("EXTRA").map(String::as_str), Some("1"));
    assert_eq!(v110.env.get("LEVEL").map(String::as_str), Some("3"));
    assert_eq!(
        v110.liveness.as_ref().unwrap().action,
        ProbeAction::Exec {
            command: vec!["sh".into(), "-c".into(), "true".into()]
        }
    );
    assert_eq!(v110.strategy, Strategy::Recreate);
    assert!(!v1.same_template(v110));
    let mut scaled = v1.clone();
    scaled.replicas = 7;
    assert!(v1.same_template(&scaled));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn minimal_file() {
    let stack =
        parse("services:\n  - {name: web, command: python3, args: [-m, http.server]}\n").unwrap();
    assert_eq!(stack.services[0].versions[0].name, "v1");
    assert_eq!(stack.services[0].versions[0].args, ["-m", "http.server"]);
    assert_eq!(stack.base_dir, Path::new("/srv/app"));
}

#[test]
fn load_stack_reads_relative_to_the_file() {
    let dir = temp_dir("load");
    std::fs::write(dir.join("hello.txt"), "hi").unwrap();
    std::fs::write(
        dir.join("stack.yaml"),
        "services:\n  - name: a\n    command: bin/a\n    files: [{path: h.txt, fromFile: hello.txt}]\n",
    )
    .unwrap();
    let stack = load_stack(&dir.join("stack.yaml")).unwrap();
    let v = &stack.services[0].versions[0];
    assert_eq!(v.program, Program::Path(dir.join("bin/a")));
    assert_eq!(v.files[0].content, b"hi");

    let missing = load_stack(&dir.join("nope.yaml")).unwrap_err().to_string();
    assert!(
        missing.contains("nope.yaml:1:1: cannot read the stack file"),
        "{missing}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn structural_errors_have_places_and_paths() {
    let errs = errors(
        "services:\n  - name: qotm\n    comand: x\n    replicas: many\n    restartPolicy: Alwys\n",
    );
    assert_error(
        &errs,
        &["stack.yaml:3:5: services[0].comand: unknown field `comand`, did you mean `command`?"],
    );
    assert_error(
        &errs,
        &["stack.yaml:4:15: services[0].replicas: expected a whole number"],
    );
    assert_error(
        &errs,
        &[
            "stack.yaml:5:20: services[0].restartPolicy: unknown value `Alwys`, did you mean `Always`?",
        ],
    );
    assert_error(&errs, &["stack.yaml:2:5: services[0]: missing `command`"]);
}

#[test]
fn names_must_be_unique_and_well_formed() {
    let errs = errors(
        "services:
  - name: qotm
    command: x
    versions:
      - name: v1
      - name: v1
      - name: V_2
  - name: qotm
    command: x
  - name: Bad_Name
    command: x
  - name: a-b
    command: x
    versions: [{name: c}]
  - name: a
    command: x
    versions: [{name: b-c}]
",
    );
    assert_error(
        &errs,
        &[
            "stack.yaml:6:15: services[0].versions[1].name: version `v1` is defined twice (first on line 5)",
        ],
    );
    assert_error(
        &errs,
        &["stack.yaml:7:15: services[0].versions[2].name: bad version name `V_2`"],
    );
    assert_error(
        &errs,
        &["stack.yaml:8:11: services[1].name: service `qotm` is defined twice (first on line 2)"],
    );
    assert_error(
        &errs,
        &["stack.yaml:10:11: services[2].name: bad service name `Bad_Name`"],
    );
    assert_error(
        &errs,
        &[
            "stack.yaml:17:23: services[4].versions[0].name: a/b-c and a-b/c would both name their replicas `a-b-c-N`",
        ],
    );
}

#[test]
fn depends_on_must_name_services_without_cycles() {
    let errs = errors(
        "services:
  - {name: a, command: x, dependsOn: [b]}
  - {name: b, command: x, dependsOn: [c, athu]}
  - {name: c, command: x, dependsOn: [a, c]}
",
    );
    assert_error(
        &errs,
        &[
            "stack.yaml:3:",
            "services[1].dependsOn[1]: unknown service `athu`",
        ],
    );
    assert_error(
        &errs,
        &[
            "stack.yaml:4:",
            "services[2].dependsOn[1]: a service cannot depend on itself",
        ],
    );
    assert_error(
        &errs,
        &["services[2].dependsOn[0]: dependsOn forms a cycle: a → b → c → a"],
    );
}

#[test]
fn depends_on_takes_a_condition_and_names_a_wrong_one() {
    let errs = errors(
        "services:
  - {name: a, command: x, dependsOn: [b, {service: c, condition: started}]}
  - {name: b, command: x, dependsOn: [{service: c, condition: healthy}, {condition: ready}]}
  - {name: c, command: x}
",
    );
    assert_error(
        &errs,
        &[
            "stack.yaml:3:",
            "services[1].dependsOn[0].condition",
            "healthy",
        ],
    );
    assert_error(
        &errs,
        &["stack.yaml:3:", "services[1].dependsOn[1]", "service"],
    );
    assert!(!errs.iter().any(|e| e.contains("services[0]")), "{errs:?}");
}

#[test]
fn a_long_dependson_chain_is_checked_without_deep_recursion() {
    // 5000 services, each depending on the next, the last on the first:
    // one cycle through all of them. Checked on a thread with a small stack
    // (256 KiB), which one stack frame per service overflows.
    let n = 5000;
    let mut text = String::from("services:\n");
    for i in 0..n {
        text.push_str(&format!(
            "  - {{name: s{i}, command: x, dependsOn: [s{}]}}\n",
            (i + 1) % n
        ));
    }
    let errs = std::thread::Builder::new()
        .stack_size(256 * 1024)
        .spawn(move || errors(&text))
        .unwrap()
        .join()
        .unwrap();
    assert_eq!(errs.len(), 1, "{}", errs.join("\n"));
    assert!(
        errs[0].starts_with(&format!("stack.yaml:{}:", n + 1))
            && errs[0].contains("dependsOn forms a cycle: s0 → s1 → s2 → ")
            && errs[0].ends_with(&format!("s{} → s0", n - 1)),
        "{}",
        &errs[0][..200.min(errs[0].len())]
    );
}

#[test]
fn probe_problems() {
    let errs = errors(
        "services:
  - name: a
    command: x
    readiness: {period: 1s}
    liveness: {httpGet: {path: health}, exec: {command: [true]}, successThreshold: 2, failureThreshold: 0, timeout: 0s}
    versions:
      - name: v1
        readiness: {tcpSocket: {port: 0}}
      - name: v2
        readiness: {exec: {command: []}}
",
    );
    assert_error(
        &errs,
        &["stack.yaml:4:16: services[0].readiness: a probe needs one of `httpGet`, `tcpSocket`"],
    );
    assert_error(
        &errs,
        &[
            "stack.yaml:5:15: services[0].liveness: a probe takes only one of",
            "found httpGet and exec",
        ],
    );
    assert_error(
        &errs,
        &["services[0].liveness.httpGet.path: an HTTP path starts with `/`"],
    );
    assert_error(
        &errs,
        &["services[0].liveness.successThreshold: a liveness probe's `successThreshold` must be 1"],
    );
    assert_error(
        &errs,
        &["services[0].liveness.failureThreshold: `failureThreshold` must be at least 1"],
    );
    assert_error(
        &errs,
        &["services[0].liveness.timeout: `timeout` must be more than 0"],
    );
    assert_error(
        &errs,
        &[
            "stack.yaml:8:",
            "services[0].versions[0].readiness.tcpSocket.port: a probe's port must be from 1 to 65535",
        ],
    );
    assert_error(
        &errs,
        &[
            "stack.yaml:10:",
            "services[0].versions[1].readiness.exec.command: an exec probe needs a command",
        ],
    );
}

#[test]
fn replicas_strategy_and_backoff_bounds() {
    let errs = errors(
        "services:
  - name: a
    command: x
    replicas: 101
    strategy: {maxSurge: 0, maxUnavailable: 0}
    restartBackoff: {initial: 1m, max: 10s}
    versions:
      - name: v1
        strategy: {type: Recreate, maxSurge: 1}
      - name: v2
        strategy: {type: Rolling}
",
    );
    assert_error(
        &errs,
        &["stack.yaml:4:15: services[0].replicas: replicas must be from 0 to 100, found 101"],
    );
    assert_error(
        &errs,
        &[
            "stack.yaml:5:15: services[0].strategy: `maxSurge` and `maxUnavailable` cannot both be 0",
        ],
    );
    assert_error(
        &errs,
        &["services[0].restartBackoff.max: `max` must not be less than `initial`"],
    );
    assert_error(
        &errs,
        &[
            "services[0].versions[0].strategy.maxSurge: `maxSurge` applies only to `type: RollingUpdate`",
        ],
    );
    assert_error(
        &errs,
        &["services[0].versions[1].strategy.type: unknown value `Rolling`"],
    );
}

#[test]
fn env_files_and_secrets_problems() {
    let dir = temp_dir("bad-files");
    let errs = parse_in(
        "services:
  - name: a
    command: x
    env: {PORT: '80', 1BAD: x, TOKEN: y}
    files:
      - {path: /etc/passwd, content: x}
      - {path: ../up.txt, content: x}
      - {path: ok.txt}
      - {path: missing.txt, fromFile: missing.txt}
      - {path: ok.txt, content: a}
    secrets:
      - {name: TOKEN, value: abc}
      - {name: B, value: x, fromEnv: HOME}
      - {name: C}
      - {name: D, fromEnv: SERIN_TEST_SURELY_UNSET_VARIABLE}
      - {name: SERIN_REPLICA, value: x}
      - {name: E, fromFile: nope/secret.txt}
",
        &dir,
    )
    .unwrap_err();
    assert_error(
        &errs,
        &["stack.yaml:4:11: services[0].env.PORT: `PORT` is set by serin"],
    );
    assert_error(
        &errs,
        &["services[0].env.1BAD: bad environment variable name `1BAD`"],
    );
    assert_error(
        &errs,
        &["stack.yaml:6:16: services[0].files[0].path: `/etc/passwd` must be a relative path"],
    );
    assert_error(
        &errs,
        &["services[0].files[1].path: `../up.txt` must be a relative path"],
    );
    assert_error(
        &errs,
        &["stack.yaml:8:9: services[0].files[2]: a file needs `content` or `fromFile`"],
    );
    assert_error(
        &errs,
        &["services[0].files[3].fromFile: cannot read", "missing.txt"],
    );
    assert_error(
        &errs,
        &["services[0].files[4].path: file `ok.txt` is listed twice"],
    );
    assert_error(
        &errs,
        &["stack.yaml:12:16: services[0].secrets[0].name: `TOKEN` is also set in `env`"],
    );
    assert_error(
        &errs,
        &[
            "services[0].secrets[1]: a secret takes only one of",
            "found value and fromEnv",
        ],
    );
    assert_error(
        &errs,
        &["services[0].secrets[2]: a secret needs one of `value`, `fromFile` or `fromEnv`"],
    );
    assert_error(
        &errs,
        &[
            "services[0].secrets[3].fromEnv: the environment variable `SERIN_TEST_SURELY_UNSET_VARIABLE` is not set",
        ],
    );
    assert_error(
        &errs,
        &["services[0].secrets[4].name: `SERIN_REPLICA` is set by serin"],
    );
    assert_error(&errs, &["services[0].secrets[5].fromFile: cannot read"]);
    // Never the secret's value in a message.
    assert!(errs.iter().all(|e| !e.contains("abc")), "{errs:#?}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn empty_and_broken_files() {
    assert_error(&errors(""), &["stack.yaml:1:1: the file is empty"]);
    assert_error(
        &errors("services: []\n"),
        &["stack.yaml:1:11: services: a stack needs at least one service"],
    );
    assert_error(
        &errors("servces: []\n"),
        &["unknown field `servces`, did you mean `services`?"],
    );
    assert_error(
        &errors("services:\n  - name: a\n    command: x\n    versions: []\n"),
        &["services[0].versions: a service needs at least one version"],
    );
    assert_error(&errors("services: [\n"), &["stack.yaml:", "YAML syntax"]);
}

#[test]
fn sidecar_outbound_entries_are_checked() {
    let text = r#"
services:
  - name: web
    command: app
    sidecar:
      outbound:
        - {name: nosuch, env: NOSUCH_URL}
        - {name: api, env: PORT}
        - {name: api, env: "1BAD"}
  - name: api
    command: app
    sidecar: {}
"#;
    let errors = serin_config::stack::parse_stack_file(text, "s.yaml", std::path::Path::new("."))
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        errors.contains(
            "s.yaml:7:18: services[0].sidecar.outbound[0].name: no service named `nosuch`"
        ),
        "{errors}"
    );
    assert!(errors.contains("`PORT` is set by serin"), "{errors}");
    assert!(errors.contains("an environment variable name"), "{errors}");
    let good = r#"
services:
  - name: web
    command: app
    sidecar:
      outbound:
        - name: api
          env: API_URL
          rule: {backendRefs: [{name: api, weight: 1}], retry: {attempts: 1}}
  - name: api
    command: app
    sidecar: {}
"#;
    let file = serin_config::stack::parse_stack_file(good, "s.yaml", std::path::Path::new("."))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(file.mesh.len(), 1);
    assert_eq!(file.mesh[0].name, "web>api");
    assert!(file.gateway.routes.is_empty());
    let web = &file.stack.services[0].versions[0];
    assert_eq!(
        web.sidecar.as_ref().map(|s| s.outbound[0].env.as_str()),
        Some("API_URL")
    );
}

#[test]
fn the_gateway_takes_client_address_as_a_listener_does() {
    let good = "gateway:\n  clientAddress: {trustedHops: 2, trustedCidrs: [10.0.0.0/8]}\nservices:\n  - {name: web, command: app}\n";
    let file = serin_config::stack::parse_stack_file(good, "s.yaml", Path::new("."))
        .unwrap_or_else(|e| panic!("{e}"));
    let trusted = file.gateway.listeners[0].client_address.as_ref();
    assert_eq!(trusted.map(|c| c.trusted_hops), Some(2));
    assert_eq!(
        trusted.map(|c| c
            .trusted_cidrs
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()),
        Some(vec!["10.0.0.0/8".to_string()])
    );
    let bad = "gateway:\n  clientAddress: {trustedCidrs: [10.0.0.0/40]}\nservices:\n  - {name: web, command: app}\n";
    let errs = match serin_config::stack::parse_stack_file(bad, "s.yaml", Path::new(".")) {
        Ok(_) => panic!("a bad CIDR was accepted"),
        Err(e) => e.iter().map(ToString::to_string).collect::<Vec<_>>(),
    };
    assert_error(
        &errs,
        &[
            "s.yaml:2:34",
            "gateway.clientAddress.trustedCidrs[0]",
            "is not a CIDR",
        ],
    );
}

#[test]
fn the_gateway_takes_proxy_protocol_as_a_listener_does() {
    let good = "gateway:\n  proxyProtocol: {trustedCidrs: [10.0.0.0/8, \"fd00::1\"]}\nservices:\n  - {name: web, command: app}\n";
    let file = serin_config::stack::parse_stack_file(good, "s.yaml", Path::new("."))
        .unwrap_or_else(|e| panic!("{e}"));
    let trusted = file.gateway.listeners[0].proxy_protocol.as_ref();
    assert_eq!(
        trusted.map(|c| c
            .trusted_cidrs
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()),
        Some(vec!["10.0.0.0/8".to_string(), "fd00::1/128".to_string()])
    );
    let bad =
        "gateway:\n  proxyProtocol: {trustedCidrs: []}\nservices:\n  - {name: web, command: app}\n";
    let errs = match serin_config::stack::parse_stack_file(bad, "s.yaml", Path::new(".")) {
        Ok(_) => panic!("a proxyProtocol without trusted peers was accepted"),
        Err(e) => e.iter().map(ToString::to_string).collect::<Vec<_>>(),
    };
    assert_error(
        &errs,
        &["s.yaml:2:18", "gateway.proxyProtocol", "at least one entry"],
    );
}

#[test]
fn watch_resolves_paths_globs_and_the_build() {
    let dir = temp_dir("watch-good");
    std::fs::create_dir_all(dir.join("src")).unwrap();
    std::fs::write(dir.join("Cargo.toml"), "").unwrap();
    let stack = parse_in(
        "services:
  - name: a
    command: x
    watch: {paths: [src, Cargo.toml], ignore: ['*.tmp'], build: cargo build --bin a}
  - name: b
    command: x
    watch: {paths: [src], build: [make, b]}
  - name: e
    command: x
    watch: {paths: [src], build: [./build.sh, e]}
  - name: c
    command: x
    watch: {paths: [.]}
  - {name: d, command: x}
",
        &dir,
    )
    .unwrap();
    let a = stack.service("a").and_then(|s| s.watch.clone()).unwrap();
    assert_eq!(a.paths, [dir.join("src"), dir.join("Cargo.toml")]);
    let mut ignore = vec!["*.tmp".to_string()];
    ignore.extend(DEFAULT_WATCH_IGNORE.iter().map(|g| g.to_string()));
    assert_eq!(a.ignore, ignore);
    let line = "cargo build --bin a";
    let built = a.build.unwrap();
    assert_eq!(
        (built.argv, built.written.as_str()),
        (vec!["sh".into(), "-c".into(), line.into()], line)
    );
    let b = stack.service("b").and_then(|s| s.watch.clone()).unwrap();
    let argv = |w: &WatchSpec| w.build.as_ref().map(|b| b.argv.clone());
    assert_eq!(argv(&b), Some(vec!["make".into(), "b".into()]));
    let e = stack.service("e").and_then(|s| s.watch.clone()).unwrap();
    let script = dir.join("./build.sh").display().to_string();
    assert_eq!(argv(&e), Some(vec![script, "e".into()]));
    assert_eq!(e.build.map(|b| b.written), Some("./build.sh e".into()));
    let c = stack.service("c").and_then(|s| s.watch.clone()).unwrap();
    assert_eq!(
        (c.build.is_none(), c.ignore.len()),
        (true, DEFAULT_WATCH_IGNORE.len())
    );
    assert_eq!(stack.service("d").map(|s| s.watch.is_some()), Some(false));
}

#[test]
fn watch_problems_have_places() {
    let dir = temp_dir("watch-bad");
    std::fs::create_dir_all(dir.join("src")).unwrap();
    let errs = match parse_in(
        "services:
  - name: a
    command: x
    watch: {ignore: ['*.tmp']}
  - name: b
    command: x
    watch:
      paths: [src, nowhere]
      ignore: ['src/[a']
      build: ''
  - name: c
    command: x
    watch: {paths: [], build: [], unknown: 1}
",
        &dir,
    ) {
        Ok(s) => panic!("expected errors, got {s:#?}"),
        Err(e) => e,
    };
    assert_error(&errs, &["stack.yaml:4:12: services[0].watch: ", "paths"]);
    assert_error(
        &errs,
        &[
            "stack.yaml:8:20: services[1].watch.paths[1]: cannot watch `nowhere`",
            "nowhere",
        ],
    );
    assert_error(
        &errs,
        &["stack.yaml:9:16: services[1].watch.ignore[0]: `src/[a` is not a glob"],
    );
    assert_error(
        &errs,
        &["stack.yaml:10:14: services[1].watch.build: `build` is empty"],
    );
    assert_error(
        &errs,
        &[
            "stack.yaml:13:",
            "services[2].watch.paths: `paths` is empty",
        ],
    );
    assert_error(
        &errs,
        &[
            "stack.yaml:13:",
            "services[2].watch.build: `build` is empty",
        ],
    );
    assert_error(&errs, &["stack.yaml:13:", "unknown"]);
}
