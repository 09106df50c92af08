//! Issue #11, point 3: the admin API is closed unless opened on purpose.
//! An address beyond loopback without a token does not start, however it
//! is given; the token (from the file, `--admin-token` or
//! `SERIN_ADMIN_TOKEN`) is asked of clients in another network namespace.
//! Clients are curl, in one of [`Netns`]'s.

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
