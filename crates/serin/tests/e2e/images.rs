//! The container images of deploy/Containerfile, built by
//! deploy/build-images.sh and run with podman: a serin-demo container
//! serving qotm behind a serin gateway container, both static binaries in
//! `FROM scratch` images, as a non-root user, with OCI labels and working
//! health checks.
//!
//! The binaries are built with the `image-test` profile (the release code
//! without LTO, so CI's second, static, build stays short); scripts/test.sh
//! compiles them before the tests run, so this test only packs them.

use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use serde_json::Value;
use serin_testkit::process::TempDir;

use crate::common::{client, wait_until};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Runs `podman ARGS` (containers with `--runtime runc`: crun refuses this
/// machine's cgroups); a clear failure when podman is not installed.
fn podman(args: &[&str]) -> Output {
    Command::new("podman")
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run podman ({e}): run scripts/install-test-deps.sh (it installs podman \
                 and runc and configures /etc/containers/containers.conf)"
            )
        })
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn podman_ok(args: &[&str]) -> String {
    let out = podman(args);
    assert!(
        out.status.success(),
        "podman {} failed: {}",
        args.join(" "),
        text(&out)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// What the test made, removed at the end whether it passed or not (the
/// containers' logs are printed first when it failed).
struct Made {
    containers: Vec<String>,
    images: Vec<String>,
}

impl Drop for Made {
    fn drop(&mut self) {
        for c in &self.containers {
            if std::thread::panicking() {
                eprintln!("--- podman logs {c}:\n{}", text(&podman(&["logs", c])));
            }
            podman(&["rm", "--force", "--time", "2", c]);
        }
        for i in &self.images {
            podman(&["rmi", "--force", i]);
        }
    }
}

fn run_container(made: &mut Made, name: &str, args: &[&str]) {
    let mut all = vec![
        "run",
        "--detach",
        "--name",
        name,
        "--runtime",
        "runc",
        "--network=host",
    ];
    all.extend_from_slice(args);
    made.containers.push(name.to_string());
    podman_ok(&all);
}

/// Runs container `name` (`args_for(port)`, on the host's network) on a
/// free port, again on another when it exits saying the address was in
/// use; up when `listening(its logs, port)`. Gives the port and the logs
/// then.
fn run_container_on_free_port(
    made: &mut Made,
    name: &str,
    args_for: impl Fn(u16) -> Vec<String>,
    listening: impl Fn(&str, u16) -> bool,
) -> (u16, String) {
    serin_testkit::on_free_port(name, |port| {
        let args = args_for(port);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        run_container(made, name, &args);
        let mut logs = String::new();
        let mut running = true;
        let up = wait_until(Duration::from_secs(30), || {
            logs = text(&podman(&["logs", name]));
            running = podman_ok(&["inspect", "--format", "{{.State.Running}}", name]) == "true";
            listening(&logs, port) || !running
        });
        if listening(&logs, port) {
            return serin_testkit::Bind::Listening((port, logs));
        }
        assert!(up, "{name} did not say it listens within 30 s:\n{logs}");
        assert!(
            serin_testkit::ports::says_address_in_use(&logs),
            "{name} exited:\n{logs}"
        );
        podman_ok(&["rm", "--force", name]);
        made.containers.retain(|c| c != name);
        serin_testkit::Bind::Taken(serin_testkit::ports::last(&logs).to_string())
    })
}

/// The address of serin's JSON log line `message` (with `listener` when
/// given) in `logs`.
fn logged_address(
    logs: &str,
    message: &str,
    listener: Option<&str>,
) -> Option<std::net::SocketAddr> {
    logs.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["message"] == message)
        .filter(|v| listener.is_none_or(|n| v["listener"] == n))
        .find_map(|v| v["address"].as_str()?.parse().ok())
}

fn inspect_image(image: &str) -> Value {
    let json = podman_ok(&["image", "inspect", image]);
    let v: Value = serde_json::from_str(&json).unwrap_or_else(|e| panic!("{e}: {json}"));
    v[0].clone()
}

/// Every file and folder of an image's root file system, as `MODE
/// USER:GROUP /PATH`, sorted.
fn image_files(image: &str) -> Vec<String> {
    let root = podman_ok(&["image", "mount", image]);
    let mut files = Vec::new();
    let mut stack = vec![PathBuf::from(&root)];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let path = entry.unwrap_or_else(|e| panic!("{e}")).path();
            let meta = std::fs::symlink_metadata(&path).unwrap_or_else(|e| panic!("{e}"));
            if meta.is_dir() {
                stack.push(path.clone());
            }
            let owner = |id: u32| {
                if id == 0 {
                    "root".to_string()
                } else {
                    id.to_string()
                }
            };
            files.push(format!(
                "{} {}:{} /{}",
                mode_text(&meta),
                owner(meta.uid()),
                owner(meta.gid()),
                path.strip_prefix(&root).unwrap_or(&path).display()
            ));
        }
    }
    podman_ok(&["image", "unmount", image]);
    files.sort();
    files
}

/// `drwxrwxrwt`, as ls shows it.
fn mode_text(meta: &std::fs::Metadata) -> String {
    let mode = meta.permissions().mode();
    let mut s = String::from(if meta.is_dir() { "d" } else { "-" });
    for (i, c) in "rwxrwxrwx".chars().enumerate() {
        s.push(if mode & (0o400 >> i) != 0 { c } else { '-' });
    }
    if mode & 0o1000 != 0 {
        s.pop();
        s.push(if mode & 0o001 != 0 { 't' } else { 'T' });
    }
    s
}

/// The user the container's first process runs as: (uid, gid) from its
/// /proc status, the kernel's word rather than the image's.
fn process_ids(container: &str) -> (u32, u32) {
    let pid = podman_ok(&["inspect", "--format", "{{.State.Pid}}", container]);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("/proc/{pid}/status: {e}"));
    let first = |key: &str| -> u32 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no {key} in {status}"))
    };
    (first("Uid:"), first("Gid:"))
}

#[tokio::test(flavor = "multi_thread")]
async fn images_run_qotm_behind_the_gateway_as_non_root_with_health_checks() {
    let tag = format!("e2e-{}", std::process::id());
    let out = Command::new(repo().join("deploy/build-images.sh"))
        .args(["--profile", "image-test", "--tag", &tag])
        .output()
        .unwrap_or_else(|e| panic!("deploy/build-images.sh: {e}"));
    let mut made = Made {
        containers: Vec::new(),
        images: vec![
            format!("localhost/serin:{tag}"),
            format!("localhost/serin-demo:{tag}"),
        ],
    };
    assert!(
        out.status.success(),
        "build-images.sh failed: {}",
        text(&out)
    );
    let printed: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(
        printed, made.images,
        "the script prints the images it built"
    );
    let (serin_image, demo_image) = (made.images[0].clone(), made.images[1].clone());

    // Labels, user and the rest of the image config.
    for (image, title) in [(&serin_image, "serin"), (&demo_image, "serin-demo")] {
        let v = inspect_image(image);
        let labels = &v["Labels"];
        assert_eq!(labels["org.opencontainers.image.title"], title, "{v:#}");
        assert_eq!(
            labels["org.opencontainers.image.version"],
            env!("CARGO_PKG_VERSION")
        );
        assert_eq!(labels["org.opencontainers.image.licenses"], "Apache-2.0");
        let revision = labels["org.opencontainers.image.revision"]
            .as_str()
            .unwrap_or_default();
        assert!(revision.len() >= 40, "revision label: {revision:?}");
        assert_eq!(v["Config"]["User"], "65532:65532", "{v:#}");
        assert_eq!(v["Config"]["Entrypoint"][0], format!("/{title}"));
        assert!(
            v["Config"]["ExposedPorts"]
                .as_object()
                .is_some_and(|p| p.contains_key("8080/tcp")),
            "{v:#}"
        );
        assert_eq!(
            v["Healthcheck"]["Test"],
            serde_json::json!(["CMD", format!("/{title}"), "healthcheck"]),
            "{v:#}"
        );
        // FROM scratch: the binary and a few small files; no shell, no libc.
        assert_eq!(
            image_files(image),
            [
                "-r-xr-xr-x root:root /BINARY",
                "-rw-r--r-- root:root /etc/group",
                "-rw-r--r-- root:root /etc/nsswitch.conf",
                "-rw-r--r-- root:root /etc/passwd",
                "drwxr-xr-x 65532:65532 /var/run/serin/state",
                "drwxr-xr-x root:root /etc",
                "drwxr-xr-x root:root /var",
                "drwxr-xr-x root:root /var/run",
                "drwxr-xr-x root:root /var/run/serin",
                "drwxrwxrwt root:root /tmp",
            ]
            .map(|l| l.replace("BINARY", title)),
            "{image}"
        );
    }

    let suffix = std::process::id();
    // serin-demo: the image's command (qotm), on a free port of loopback
    // (its health check reads PORT, so the port is given, not picked).
    let demo = format!("serin-e2e-demo-{suffix}");
    let (demo_port, _) = run_container_on_free_port(
        &mut made,
        &demo,
        |port| {
            let env = format!("--env=PORT={port}");
            [
                env.as_str(),
                demo_image.as_str(),
                "qotm",
                "--host",
                "127.0.0.1",
            ]
            .map(String::from)
            .to_vec()
        },
        |logs, port| serin_testkit::ports::logged_listening(logs, "listening", "addr", port),
    );

    // The gateway: the image's command (proxy --config /etc/serin/serin.yaml)
    // with a config routing to qotm by name (`localhost`: resolved through
    // /etc/nsswitch.conf and /etc/hosts by the static glibc). Its listener
    // binds port 0 and says where; the admin API's port is given (the
    // image's health check reads SERIN_ADMIN).
    let dir = TempDir::new("serin-image");
    let gateway = format!("serin-e2e-gateway-{suffix}");
    let mount = format!("{}:/etc/serin:ro", dir.path().display());
    let (_, logs) = run_container_on_free_port(
        &mut made,
        &gateway,
        |admin_port| {
            std::fs::write(
                dir.path().join("serin.yaml"),
                format!(
                    "admin:\n  address: 127.0.0.1:{admin_port}\n\
                     listeners:\n  - name: gateway\n    address: 127.0.0.1:0\n\
                     services:\n  - name: qotm\n    versions:\n      - name: v1\n        \
                     endpoints: [\"localhost:{demo_port}\"]\n\
                     routes:\n  - name: qotm\n    rules:\n      - matches:\n          \
                     - path: {{type: PathPrefix, value: /qotm}}\n        filters:\n          \
                     - type: URLRewrite\n            urlRewrite:\n              path: \
                     {{type: ReplacePrefixMatch, replacePrefixMatch: /}}\n        \
                     backendRefs:\n          - {{name: qotm, version: v1}}\n"
                ),
            )
            .unwrap_or_else(|e| panic!("config: {e}"));
            let env = format!("--env=SERIN_ADMIN=127.0.0.1:{admin_port}");
            [
                "--volume",
                mount.as_str(),
                env.as_str(),
                serin_image.as_str(),
            ]
            .map(String::from)
            .to_vec()
        },
        |logs, port| {
            logged_address(logs, "admin API listening", None).is_some_and(|a| a.port() == port)
        },
    );
    let gateway_addr = logged_address(&logs, "listening", Some("gateway"))
        .unwrap_or_else(|| panic!("the gateway did not say where it listens:\n{logs}"));

    // A request through the gateway container reaches the demo container.
    let http = client();
    let url = format!("http://{gateway_addr}/qotm/");
    let mut answer = None;
    for _ in 0..300 {
        if let Ok(resp) = http.get(&url).send().await
            && resp.status().is_success()
        {
            answer = resp.json::<Value>().await.ok();
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let answer = answer.unwrap_or_else(|| panic!("no answer from {url}"));
    assert!(answer["quote"].is_string(), "{answer}");
    assert_eq!(answer["version"], "v1", "{answer}");

    // Both run as the image's user, not root.
    assert_eq!(process_ids(&demo), (65532, 65532));
    assert_eq!(process_ids(&gateway), (65532, 65532));

    // The images' health checks pass (podman runs the HEALTHCHECK command
    // in the container) ...
    for c in [&demo, &gateway] {
        let mut last = String::new();
        let healthy = wait_until(Duration::from_secs(30), || {
            let out = podman(&["healthcheck", "run", c]);
            last = text(&out);
            out.status.success()
        });
        assert!(healthy, "{c}: healthcheck run: {last}");
    }
    // ... and fail when the thing checked does not answer.
    let down = podman(&[
        "exec",
        &gateway,
        "/serin",
        "healthcheck",
        "--admin",
        "127.0.0.1:1",
    ]);
    assert_eq!(down.status.code(), Some(1), "{}", text(&down));
    let down = podman(&["exec", &demo, "/serin-demo", "healthcheck", "--port", "1"]);
    assert_eq!(down.status.code(), Some(1), "{}", text(&down));

    // SIGTERM (podman stop) ends both cleanly: exit status 0.
    for c in [&gateway, &demo] {
        podman_ok(&["stop", "--time", "20", c]);
        let code = podman_ok(&["inspect", "--format", "{{.State.ExitCode}}", c]);
        assert_eq!(code, "0", "{c} exit status");
    }
}
