//! `serin up --watch` end to end: a service built by a real build command
//! from a watched source folder, rebuilt and rolled out when a source
//! changes (a new process, no failed request under load); a broken build
//! that leaves the running replica serving and says why; a stack file
//! that applies itself when it changes, and is refused with its place
//! when broken.

use std::path::Path;

use serde_json::Value;
use serin_testkit::process::TempDir;

use crate::common::{SERIN, client};
use crate::up::{
    Load, QUICK, Stack, assert_gone, eventually, pid, qotm_gateway, qotm_v1_stack, serin_cli, text,
};

/// The build: copies `src/run.sh` to `out/run.sh`, or fails with exit
/// status 3 and a message on stderr when the source says BROKEN.
const BUILD: &str = "#!/bin/sh
if grep -q BROKEN src/run.sh; then
  echo 'src/run.sh: BROKEN is not a command' >&2
  exit 3
fi
mkdir -p out && cp src/run.sh out/run.sh && chmod +x out/run.sh && echo 'built out/run.sh'
";

/// The service's source: qotm answering with `version` in its JSON.
fn write_source(dir: &Path, version: &str) {
    let script = format!("#!/bin/sh\nexec {SERIN} demo qotm --version {version}\n");
    std::fs::write(dir.join("src/run.sh"), script).unwrap_or_else(|e| panic!("write: {e}"));
}

/// A folder with the source, the build script, the first build's output
/// and a stack file running `out/run.sh` with `watch: {paths: [src]}`.
fn watched_project(version: &str) -> TempDir {
    let dir = TempDir::new("serin-watch");
    std::fs::create_dir_all(dir.path().join("src")).unwrap_or_else(|e| panic!("mkdir: {e}"));
    std::fs::write(dir.path().join("build.sh"), BUILD).unwrap_or_else(|e| panic!("write: {e}"));
    write_source(dir.path(), version);
    let first = std::process::Command::new("sh")
        .arg("build.sh")
        .current_dir(dir.path())
        .output()
        .unwrap_or_else(|e| panic!("the first build: {e}"));
    assert!(first.status.success(), "the first build: {first:?}");
    let stack = format!(
        "{}services:
  - name: qotm
    command: ./out/run.sh{QUICK}
    watch: {{paths: [src], build: sh build.sh}}
    versions:
      - name: v1
",
        qotm_gateway(&["{name: qotm, version: v1}"])
    );
    std::fs::write(dir.path().join("stack.yaml"), stack).unwrap_or_else(|e| panic!("write: {e}"));
    dir
}

/// `GET /runtime/builds`: the service's last build.
async fn last_build(stack: &Stack, service: &str) -> Option<Value> {
    let url = stack.serin.admin_url("/runtime/builds");
    let resp = client().get(&url).send().await.ok()?;
    let builds: Value = resp.json().await.ok()?;
    builds
        .as_array()?
        .iter()
        .find(|b| b["service"] == service)
        .cloned()
}

/// Fails unless qotm's logs (`serin logs qotm`) hold each of `expected`.
async fn assert_logged(stack: &Stack, expected: &[&str]) {
    let logs = stack.logs_of("qotm").await;
    for e in expected {
        assert!(logs.contains(e), "no `{e}` in:\n{logs}");
    }
}

/// Waits until qotm/v1 runs one ready replica other than `old`, and
/// returns it.
async fn replaced(stack: &Stack, old: &Value) -> Value {
    eventually("qotm/v1 rolled out with a new process", async || {
        let now = stack.wait_ready("qotm", "v1", 1).await;
        let new = &now[0];
        (pid(new) != pid(old) && new["revision"].as_u64() > old["revision"].as_u64())
            .then(|| new.clone())
    })
    .await
}

/// `serin up --watch` of [`watched_project`] serving `v1-a`: its replica
/// and clients already getting answers.
async fn start_watched_under_load() -> (Stack, Value, Load) {
    let stack = Stack::start_in(watched_project("v1-a"), &["--watch"]);
    let old = stack.wait_ready("qotm", "v1", 1).await.remove(0);
    let load = Load::start(stack.url("/qotm/"));
    load.more(50).await;
    (stack, old, load)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watched_source_change_rebuilds_and_rolls_out_with_no_failed_request() {
    let (stack, old, load) = start_watched_under_load().await;

    // A burst of saves, as an editor or a checkout makes.
    for _ in 0..3 {
        write_source(&stack.path(""), "v1-b");
    }
    let new = replaced(&stack, &old).await;
    assert_gone(&pid(&old).into_iter().collect()).await;
    load.next_answers_from(
        "v1-b",
        &format!("every answer comes from the rebuilt {new}"),
    )
    .await;
    load.finish().await;

    assert_logged(
        &stack,
        &[
            "qotm/build | [serin] build started: sh build.sh",
            "qotm/build | built out/run.sh",
            "qotm/build | [serin] build succeeded",
        ],
    )
    .await;
    let build = last_build(&stack, "qotm").await;
    assert_eq!(
        build.as_ref().map(|b| b["state"].clone()),
        Some("Succeeded".into()),
        "{build:?}"
    );
    stack.stop("TERM").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_build_keeps_the_old_replica_serving_and_says_why() {
    let (stack, old, load) = start_watched_under_load().await;

    std::fs::write(stack.path("src/run.sh"), "BROKEN\n").unwrap_or_else(|e| panic!("write: {e}"));
    let failed = eventually("the build failed", async || {
        last_build(&stack, "qotm")
            .await
            .filter(|b| b["state"] == "Failed")
    })
    .await;
    let message = failed["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("exit status 3") && message.contains("BROKEN is not a command"),
        "{failed}"
    );
    assert_logged(
        &stack,
        &[
            "qotm/build | src/run.sh: BROKEN is not a command",
            "qotm/build | [serin] build failed: exit status 3",
            "the running replicas stay as they are",
        ],
    )
    .await;
    let ps = stack.cli_ok(&["ps"]).await;
    assert!(
        ps.lines()
            .any(|l| l.starts_with("qotm ") && l.contains("Failed") && l.contains("exit status 3")),
        "serin ps shows the failed build:\n{ps}"
    );
    load.next_answers_from("v1-a", "the old build still answers")
        .await;
    let still = stack.wait_ready("qotm", "v1", 1).await.remove(0);
    assert_eq!(
        (pid(&still), &still["revision"]),
        (pid(&old), &old["revision"]),
        "the old replica still serves"
    );

    // Fixed: the next build rolls out.
    write_source(&stack.path(""), "v1-c");
    replaced(&stack, &old).await;
    load.next_answers_from("v1-c", "the fixed build answers")
        .await;
    load.finish().await;
    stack.stop("TERM").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stack_file_change_applies_itself_and_a_broken_one_changes_nothing() {
    let dir = TempDir::new("serin-watch-stack");
    std::fs::write(dir.path().join("stack.yaml"), qotm_v1_stack(1))
        .unwrap_or_else(|e| panic!("write: {e}"));
    let stack = Stack::start_in(dir, &["--watch"]);
    let old = stack.wait_ready("qotm", "v1", 1).await.remove(0);
    let file = stack.path("stack.yaml");
    let logged = |what: &str| stack.serin.log_lines().iter().any(|l| l.contains(what));

    // A watch that names a path that does not exist: refused at its place.
    let broken = qotm_v1_stack(2) + "    watch: {paths: [nowhere]}\n";
    let (line, column) = broken
        .lines()
        .enumerate()
        .find_map(|(i, l)| l.find("nowhere").map(|c| (i + 1, c + 1)))
        .unwrap_or_default();
    std::fs::write(&file, &broken).unwrap_or_else(|e| panic!("write: {e}"));
    let expected =
        format!("stack.yaml:{line}:{column}: services[0].watch.paths[0]: cannot watch `nowhere`");
    eventually("the broken stack file refused at its place", async || {
        (logged("stack file rejected (watch)") && logged(&expected)).then_some(())
    })
    .await;
    let still = stack.wait_ready("qotm", "v1", 1).await.remove(0);
    assert_eq!(pid(&still), pid(&old), "a refused file changed nothing");

    std::fs::write(&file, qotm_v1_stack(2)).unwrap_or_else(|e| panic!("write: {e}"));
    let two = stack.wait_ready("qotm", "v1", 2).await;
    let applied = || {
        let lines = stack.serin.log_lines();
        lines
            .iter()
            .filter(|l| l.contains("stack file applied (watch)"))
            .count()
    };
    eventually("the apply logged", async || (applied() == 1).then_some(())).await;

    // A `watch:` added by an apply is watched from then on.
    std::fs::create_dir_all(stack.path("src")).unwrap_or_else(|e| panic!("mkdir: {e}"));
    let watched = qotm_v1_stack(2) + "    watch: {paths: [src], build: echo rebuilt-by-watch}\n";
    std::fs::write(&file, watched).unwrap_or_else(|e| panic!("write: {e}"));
    eventually("the second apply logged", async || {
        (applied() == 2).then_some(())
    })
    .await;
    eventually("the added watch in place", async || {
        let lines = stack.serin.log_lines();
        lines
            .iter()
            .any(|l| {
                // `services` is a list, JSON-escaped in a JSON log line.
                l.contains("watching the stack as applied")
                    && (l.contains(r#"[\"qotm\"]"#) || l.contains(r#"["qotm"]"#))
            })
            .then_some(())
    })
    .await;
    std::fs::write(stack.path("src/main.c"), "int main;\n").unwrap_or_else(|e| panic!("{e}"));
    eventually("the added watch rebuilt qotm", async || {
        let now = stack.wait_ready("qotm", "v1", 2).await;
        now.iter()
            .all(|r| !two.iter().any(|t| pid(t) == pid(r)))
            .then_some(())
    })
    .await;
    assert_logged(&stack, &["qotm/build | rebuilt-by-watch"]).await;
    stack.stop("TERM").await;
}

/// `serin validate` of `yaml` as `stack.yaml` in a folder with `src/`:
/// fails, and says why on stderr (returned).
async fn validate_failing(yaml: &str) -> String {
    let dir = TempDir::new("serin-watch-validate");
    std::fs::create_dir_all(dir.path().join("src")).unwrap_or_else(|e| panic!("mkdir: {e}"));
    let file = dir.path().join("stack.yaml");
    std::fs::write(&file, yaml).unwrap_or_else(|e| panic!("write: {e}"));
    let out = serin_cli(&["validate", &file.display().to_string()]).await;
    let (stdout, stderr) = text(&out);
    assert!(!out.status.success(), "{stdout}{stderr}");
    stderr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serin_validate_names_each_bad_watch_key_at_its_place() {
    let stderr = validate_failing(
        "services:
  - name: a
    command: x
    watch: {paths: [src, nope], ignore: ['[x'], build: []}
  - name: b
    command: x
    watch: {build: make}
",
    )
    .await;
    for expected in [
        "stack.yaml:4:26: services[0].watch.paths[1]: cannot watch `nope`",
        "stack.yaml:4:42: services[0].watch.ignore[0]: `[x` is not a glob",
        "stack.yaml:4:56: services[0].watch.build: `build` is empty",
        "stack.yaml:7:12: services[1].watch: ",
    ] {
        assert!(stderr.contains(expected), "no `{expected}` in:\n{stderr}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serin_validate_names_each_bad_build_output_at_its_place() {
    let stderr = validate_failing(
        "services:
  - name: a
    command: ./out/a
    canary: {auto: true}
    watch: {paths: [src], build: make}
  - name: b
    command: ./out/b
    watch: {paths: [src], output: out/b}
  - name: c
    command: ./out/c
    watch: {paths: [src], build: make, output: out/other}
  - name: d
    command: node
    args: [dist/index.js]
    canary: {auto: true}
    watch: {paths: [src], build: make, output: dist}
",
    )
    .await;
    for expected in [
        "stack.yaml:5:34: services[0].watch.build: with `canary: {auto: true}` a build needs \
         `output`",
        "stack.yaml:8:35: services[1].watch.output: `output` names what the build writes, and \
         this `watch:` has no `build`",
        "stack.yaml:11:48: services[2].watch.output: no version runs `out/other`",
        "): `output` is what the versions' `command` (or one of their `args`) runs",
    ] {
        assert!(stderr.contains(expected), "no `{expected}` in:\n{stderr}");
    }
    // d is right: its versions run `dist/index.js` from its output.
    assert!(!stderr.contains("services[3]"), "{stderr}");
}
