//! Issue #11, point 3: the admin API is closed unless opened on purpose.
//! An address beyond loopback without a token does not start, however it
//! is given; the token (from the file, `--admin-token` or
//! `SERIN_ADMIN_TOKEN`) is asked of clients in another network namespace
//! and follows reloads; a `Host` that does not name the admin API (DNS
//! rebinding) is refused; calls that change something want a JSON content
//! type. Clients are curl, in the test's namespace or in one of
//! [`Netns`]'s.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

use serin_testkit::process::TempDir;
use serin_testkit::{Netns, Serin, Upstream, wait_until};

use crate::common::SERIN;
use crate::up::{LIMIT, qotm_v1_stack};

const TOKEN_ENV: &str = "SERIN_ADMIN_TOKEN";

/// A proxy config with one loopback listener and a route `split` over two
/// versions (weights 100/0), and `admin` as the file's admin section.
fn config(upstream: &Upstream, admin: &str) -> String {
    format!(
        "{admin}listeners: [{{name: gw, address: 127.0.0.1:0}}]\n\
         services: [{{name: s, versions: [{{name: a, endpoints: [\"{0}\"]}}, {{name: b, endpoints: [\"{0}\"]}}]}}]\n\
         routes: [{{name: split, rules: [{{backendRefs: [{{name: s, version: a, weight: 100}}, {{name: s, version: b, weight: 0}}]}}]}}]\n",
        upstream.addr
    )
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    path.display().to_string()
}

/// Runs `serin ARGS` that must refuse to start: returns what it printed.
/// Fails the test when the admin API comes up instead.
fn refused(args: &[&str], dir: &Path) -> String {
    let mut child = Command::new(SERIN)
        .args(args)
        .args(["--log-format", "json"])
        .current_dir(dir)
        .env_remove(TOKEN_ENV)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("serin {args:?}: {e}"));
    let mut printed = String::new();
    if let Some(err) = child.stderr.take() {
        for line in BufReader::new(err).lines().map_while(Result::ok) {
            if line.contains("admin API listening") {
                let _ = child.kill();
                let _ = child.wait();
                panic!("serin {args:?} opened its admin API:\n{printed}{line}");
            }
            printed.push_str(&line);
            printed.push('\n');
        }
    }
    let status = child
        .wait()
        .unwrap_or_else(|e| panic!("serin {args:?}: {e}"));
    assert!(!status.success(), "serin {args:?} succeeded:\n{printed}");
    printed
}

/// `curl ARGS URL` from the test's namespace: the status and the body.
fn curl(args: &[&str], url: &str) -> (u16, String) {
    let out = Command::new("curl")
        .args(["-sS", "--noproxy", "*", "--max-time", "20"])
        .args(["-w", "\n%{http_code}"])
        .args(args)
        .arg(url)
        .output()
        .unwrap_or_else(|e| panic!("curl (install it: scripts/install-test-deps.sh): {e}"));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    let status = code.trim().parse().unwrap_or_else(|_| {
        panic!(
            "curl {url}: no status ({}): {text}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (status, body.to_string())
}

fn bearer(token: &str) -> String {
    format!("Authorization: Bearer {token}")
}

/// (a) `--admin` on `serin proxy` (with a file and in quick mode), the
/// file's `admin.address`, `serin up --admin` and the stack's
/// `gateway.admin` beyond loopback with no token: serin does not start, and
/// says what and where.
#[test]
fn an_admin_api_beyond_loopback_with_no_token_does_not_start() {
    let ns = Netns::create();
    let addr = format!("{}:0", ns.host_addr);
    let upstream = Upstream::start("u");
    let tmp = TempDir::new("serin-admin");
    let dir = tmp.path();
    let wanted = format!("the admin API on a non-loopback address ({addr})");

    let file = write(dir, "serin.yaml", &config(&upstream, ""));
    let out = refused(&["proxy", "--config", &file, "--admin", &addr], dir);
    assert!(out.contains(&format!("--admin {addr}: {wanted}")), "{out}");
    assert!(
        out.contains("--admin-token") && out.contains(TOKEN_ENV),
        "{out}"
    );

    let up = upstream.addr.to_string();
    let quick = [
        "proxy",
        "--listen",
        "127.0.0.1:0",
        "--upstream",
        &up,
        "--admin",
        &addr,
    ];
    let out = refused(&quick, dir);
    assert!(out.contains(&format!("--admin {addr}: {wanted}")), "{out}");

    let open = write(
        dir,
        "open.yaml",
        &config(&upstream, &format!("admin:\n  address: {addr}\n")),
    );
    let out = refused(&["proxy", "--config", &open], dir);
    assert!(
        out.contains(&format!("{open}:2:12: admin.address: {wanted}")),
        "{out}"
    );
    // `serin validate` says the same.
    let out = refused(&["validate", &open], dir);
    assert!(
        out.contains(&format!("{open}:2:12: admin.address: {wanted}")),
        "{out}"
    );

    let stack = write(dir, "stack.yaml", &qotm_v1_stack(1));
    let out = refused(
        &["up", &stack, "--listen", "127.0.0.1:0", "--admin", &addr],
        dir,
    );
    assert!(out.contains(&format!("--admin {addr}: {wanted}")), "{out}");

    let text = qotm_v1_stack(1).replacen("gateway:\n", &format!("gateway:\n  admin: {addr}\n"), 1);
    let stack = write(dir, "open-stack.yaml", &text);
    let out = refused(&["up", &stack, "--listen", "127.0.0.1:0"], dir);
    assert!(
        out.contains(&format!("{stack}:2:10: gateway.admin: {wanted}"))
            && out.contains("gateway.adminToken"),
        "{out}"
    );
    // `serin validate` of the stack file says the same.
    let out = refused(&["validate", &stack], dir);
    assert!(
        out.contains(&format!("{stack}:2:10: gateway.admin: {wanted}")),
        "{out}"
    );
}

/// Asks the admin API at `base` from the other namespace: 401 with no
/// token or a wrong one, 200 with `token`; `/ready` needs none.
fn only_with(ns: &Netns, base: &str, token: &str) {
    let routes = format!("{base}/routes");
    assert_eq!(ns.curl(&[], &routes).0, 401, "{routes} with no token");
    let wrong = bearer(&format!("{token}x"));
    assert_eq!(ns.curl(&["-H", &wrong], &routes).0, 401, "wrong token");
    let wrong = bearer(&token[1..]);
    assert_eq!(ns.curl(&["-H", &wrong], &routes).0, 401, "wrong token");
    let (status, body) = ns.curl(&["-H", &bearer(token)], &routes);
    assert_eq!(status, 200, "{routes}: {body}");
    assert!(
        body.contains("\"split\"") || body.contains("\"qotm\""),
        "{body}"
    );
    assert_eq!(ns.curl(&[], &format!("{base}/ready")).0, 200, "/ready");
}

/// (b) With a token from `SERIN_ADMIN_TOKEN` or `--admin-token`, an admin
/// API on the veth's address answers the other namespace only with it; in
/// quick mode and under `serin up` too, whose services do not get the
/// token in their environment.
#[test]
fn a_token_from_the_environment_or_a_flag_opens_the_admin_api_beyond_loopback() {
    let ns = Netns::create();
    let addr = format!("{}:0", ns.host_addr);
    let upstream = Upstream::start("u");
    let tmp = TempDir::new("serin-admin");
    let dir = tmp.path();
    let file = write(dir, "serin.yaml", &config(&upstream, ""));
    let path = Path::new(&file);

    let args = ["proxy", "--config", &file, "--admin", &addr];
    let serin = Serin::spawn_with_env(SERIN, &args, dir, path, &[(TOKEN_ENV, "from-env")]);
    only_with(&ns, &serin.admin_url(""), "from-env");
    assert!(serin.log_lines().iter().any(|l| l.contains(TOKEN_ENV)));
    drop(serin);

    let args = [
        "proxy",
        "--config",
        &file,
        "--admin",
        &addr,
        "--admin-token",
        "from-flag",
    ];
    // The flag wins over the environment.
    let serin = Serin::spawn_with_env(SERIN, &args, dir, path, &[(TOKEN_ENV, "from-env")]);
    only_with(&ns, &serin.admin_url(""), "from-flag");
    let routes = serin.admin_url("/routes");
    assert_eq!(ns.curl(&["-H", &bearer("from-env")], &routes).0, 401);
    drop(serin);

    let up = upstream.addr.to_string();
    let quick = [
        "proxy",
        "--listen",
        "127.0.0.1:0",
        "--upstream",
        &up,
        "--admin",
        &addr,
        "--admin-token",
        "quick",
    ];
    let serin = Serin::spawn(SERIN, &quick, dir, path);
    let base = serin.admin_url("");
    assert_eq!(ns.curl(&[], &format!("{base}/routes")).0, 401);
    let (status, body) = ns.curl(&["-H", &bearer("quick")], &format!("{base}/routes"));
    assert_eq!(status, 200, "{body}");
    drop(serin);

    // `serin up`: the token opens the admin API, and its services do not
    // see it.
    let seen = dir.join("seen.txt");
    let stack = qotm_v1_stack(1).replacen(
        "services:\n",
        &format!(
            "services:\n  - name: env\n    command: sh\n    args: [-c, 'echo \"token=${{{TOKEN_ENV}:-none}}\" > {}; exec sleep 600']\n    versions: [{{name: v1}}]\n",
            seen.display()
        ),
        1,
    );
    let stack = write(dir, "stack.yaml", &stack);
    let serin = Serin::spawn_with_env(
        SERIN,
        &[
            "up",
            &stack,
            "--listen",
            "127.0.0.1:0",
            "--admin",
            &addr,
            "--no-color",
        ],
        dir,
        Path::new(&stack),
        &[(TOKEN_ENV, "stack-token")],
    );
    let base = serin.admin_url("");
    assert_eq!(ns.curl(&[], &format!("{base}/runtime/ps")).0, 401);
    let (status, body) = ns.curl(
        &["-H", &bearer("stack-token")],
        &format!("{base}/runtime/ps"),
    );
    assert_eq!(status, 200, "{body}");
    assert!(
        wait_until(LIMIT, || std::fs::read_to_string(&seen)
            .is_ok_and(|t| t.ends_with('\n'))),
        "the env service did not start"
    );
    let seen = std::fs::read_to_string(&seen).unwrap_or_default();
    assert_eq!(seen.trim(), "token=none");
}

/// (c) A reload that changes the file's token applies it at once: the old
/// one gets 401, the new one 200. A reload that takes the token away from
/// an admin API beyond loopback is refused, and the token keeps working.
#[test]
fn a_reloaded_token_takes_effect_at_once_and_cannot_be_taken_away() {
    let ns = Netns::create();
    let addr = format!("{}:0", ns.host_addr);
    let upstream = Upstream::start("u");
    let tmp = TempDir::new("serin-admin");
    let dir = tmp.path();
    let admin = |token: &str| format!("admin:\n  address: {addr}\n{token}");
    let file = write(
        dir,
        "serin.yaml",
        &config(&upstream, &admin("  token: one\n")),
    );
    let serin = Serin::spawn(SERIN, &["proxy", "--config", &file], dir, Path::new(&file));
    let base = serin.admin_url("");
    only_with(&ns, &base, "one");

    write(
        dir,
        "serin.yaml",
        &config(&upstream, &admin("  token: two\n")),
    );
    serin.signal("HUP");
    let routes = format!("{base}/routes");
    assert!(
        wait_until(LIMIT, || ns.curl(&["-H", &bearer("two")], &routes).0 == 200),
        "the new token never worked"
    );
    only_with(&ns, &base, "two");
    assert_eq!(ns.curl(&["-H", &bearer("one")], &routes).0, 401);

    // No token: refused, with where and why.
    write(dir, "serin.yaml", &config(&upstream, &admin("")));
    let (status, body) = curl(
        &[
            "-X",
            "POST",
            "-H",
            &bearer("two"),
            "-H",
            "Content-Type: application/json",
        ],
        &format!("{base}/reload"),
    );
    assert_eq!(status, 400, "{body}");
    assert!(
        body.contains(&format!(
            "{file}:2:12: admin.address: the admin API on a non-loopback"
        )),
        "{body}"
    );
    only_with(&ns, &base, "two");
}

/// (d) A `Host` that does not name the admin API (a page's own name, as in
/// DNS rebinding: here curl resolves `evil.example` to the admin's
/// loopback address) is refused on every route, over HTTP/1.1 and HTTP/2;
/// 127.0.0.1, localhost and [::1] with or without a port are served, and
/// `serin healthcheck` passes. The metrics listener is left alone.
#[test]
fn a_host_that_does_not_name_the_admin_api_is_refused() {
    let upstream = Upstream::start("u");
    let serin = crate::common::proxy(&config(&upstream, "admin: {metricsAddress: 127.0.0.1:0}\n"));
    let metrics = serin.logged_address("metrics listening");
    let port = serin.admin.port();
    let resolve = format!("evil.example:{port}:127.0.0.1");
    for path in [
        "/routes",
        "/config",
        "/ready",
        "/metrics",
        "/ui",
        "/ui/state",
    ] {
        let url = format!("http://evil.example:{port}{path}");
        for h2 in [None, Some("--http2-prior-knowledge")] {
            let mut args = vec!["--resolve", &resolve];
            args.extend(h2);
            let (status, body) = curl(&args, &url);
            assert_eq!(status, 421, "{url} {h2:?}: {body}");
            assert!(
                body.contains("\"error\"") && body.contains("DNS rebinding"),
                "{body}"
            );
        }
        let local = serin.admin_url(path);
        let (status, body) = curl(&["-H", "Host: evil.example"], &local);
        assert_eq!(status, 421, "{local} with Host evil.example: {body}");
        for host in [
            format!("127.0.0.1:{port}"),
            "127.0.0.1".to_string(),
            "localhost".to_string(),
            format!("localhost:{port}"),
            format!("[::1]:{port}"),
            "127.1.2.3".to_string(),
        ] {
            let (status, body) = curl(&["-H", &format!("Host: {host}")], &local);
            assert_eq!(status, 200, "{local} with Host {host}: {body}");
        }
    }
    let (status, _) = curl(
        &[
            "--resolve",
            &resolve,
            "-X",
            "POST",
            "-H",
            "Content-Type: application/json",
        ],
        &format!("http://evil.example:{port}/reload"),
    );
    assert_eq!(status, 421);
    let healthy = Command::new(SERIN)
        .args(["healthcheck", "--admin", &serin.admin.to_string()])
        .env_remove(TOKEN_ENV)
        .status()
        .unwrap_or_else(|e| panic!("serin healthcheck: {e}"));
    assert!(healthy.success());
    let (status, body) = curl(
        &["-H", "Host: evil.example"],
        &format!("http://{metrics}/metrics"),
    );
    assert_eq!(status, 200, "the metrics listener: {body}");
}

/// (e) Calls that change something with a body that is not JSON (plain
/// text, a form: what a page may send anywhere without asking) get 415 and
/// change nothing; `application/json` (with a charset) is served.
#[test]
fn calls_that_change_something_want_a_json_content_type() {
    let upstream = Upstream::start("u");
    let serin = crate::common::proxy(&config(&upstream, ""));
    let weights = serin.admin_url("/routes/split/weights");
    let change = r#"{"weights": {"a": 0, "b": 100}}"#;
    let not_json = [
        None,
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
        Some("multipart/form-data; boundary=x"),
        Some("application/jsonx"),
    ];
    for method in ["PUT", "POST"] {
        for ct in not_json {
            let header = ct.map(|c| format!("Content-Type: {c}"));
            let mut args = vec!["-X", method, "--data-binary", change];
            match &header {
                Some(h) => args.extend(["-H", h.as_str()]),
                // curl's default for --data-binary is a form: say none.
                None => args.extend(["-H", "Content-Type:"]),
            }
            let (status, body) = curl(&args, &weights);
            assert_eq!(status, 415, "{method} {ct:?}: {body}");
            assert!(body.contains("application/json"), "{body}");
        }
    }
    let (_, now) = curl(&[], &weights);
    assert!(now.contains(r#""s/a":100"#), "{now}");

    let reload = serin.admin_url("/reload");
    for ct in not_json {
        let header = ct.map_or("Content-Type:".to_string(), |c| {
            format!("Content-Type: {c}")
        });
        let (status, body) = curl(&["-X", "POST", "-H", &header], &reload);
        assert_eq!(status, 415, "reload with {ct:?}: {body}");
    }
    let (status, body) = curl(
        &[
            "-X",
            "POST",
            "-H",
            "Content-Type: text/plain",
            "--data",
            "x",
        ],
        &serin.admin_url("/canary/s/abort"),
    );
    assert_eq!(status, 415, "canary: {body}");
    let (_, metrics) = curl(&[], &serin.admin_url("/metrics"));
    let reloads = |metrics: &str| {
        crate::common::metric_value(metrics, "serin_config_reloads_total{result=\"success\"}")
    };
    assert_eq!(reloads(&metrics), 0.0, "a reload happened");

    let (status, body) = curl(
        &[
            "-X",
            "PUT",
            "-H",
            "Content-Type: application/json; charset=utf-8",
            "--data-binary",
            change,
        ],
        &weights,
    );
    assert_eq!(status, 200, "{body}");
    let (status, body) = curl(
        &["-X", "POST", "-H", "Content-Type: application/json"],
        &reload,
    );
    assert_eq!(status, 200, "{body}");
    let (_, metrics) = curl(&[], &serin.admin_url("/metrics"));
    assert_eq!(reloads(&metrics), 1.0);
}
