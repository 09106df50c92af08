//! End-to-end tests of the local runtime with real processes: a small
//! Python HTTP service (`support/server.py`) run as replicas.
//!
//! No test measures time: each waits (boundedly) for a condition.

mod support;

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serin_discovery::{BackendKey, Registry};
use serin_runtime::{LogFilter, ReplicaState, Runtime, RuntimeError, RuntimeEvent, admin_router};
use support::*;

/// Settings that keep tests quick: short back-off and probe periods.
const FAST: &str = "
    restartBackoff: {initial: 300ms, max: 2s, resetAfter: 1m}
    terminationGracePeriod: 5s
    readiness: {httpGet: {path: /ready}, period: 100ms, timeout: 2s, failureThreshold: 1}";

fn web(name: &str, replicas: u32, extra_args: &str, extra: &str) -> String {
    format!(
        "  - name: {name}
    command: python3
    args: [server.py{extra_args}]
    replicas: {replicas}{FAST}{extra}
"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_are_registered_only_when_ready() {
    let dir = test_dir("ready");
    let ready = dir.join("ready-flag");
    let yaml = format!(
        "services:\n{}",
        web(
            "qotm",
            2,
            "",
            &format!("\n    env: {{READY_FILE: {}}}", ready.display())
        )
    );
    let rt = start(&dir, &yaml).await;
    rt.wait_for("two running processes, not ready", |rt| {
        let ps = rt.handle.ps();
        ps.len() == 2
            && ps
                .iter()
                .all(|r| r.pid.is_some() && r.state == ReplicaState::Starting)
    })
    .await;
    // Running but not ready: the backend exists with no endpoint.
    let key = BackendKey::new("qotm", "v1");
    assert!(rt.registry.snapshot().contains_key(&key), "{}", rt.dump());
    assert!(rt.endpoints("qotm", "v1").is_empty(), "{}", rt.dump());

    std::fs::write(&ready, "").unwrap();
    rt.wait_for("both replicas registered", |rt| {
        rt.endpoints("qotm", "v1").len() == 2
    })
    .await;
    let mut names = BTreeSet::new();
    for addr in rt.endpoints("qotm", "v1") {
        let body = json_get(addr, "/").unwrap_or_else(|| panic!("{addr} did not answer"));
        names.insert(body["replica"].as_str().unwrap_or_default().to_string());
    }
    assert_eq!(
        names,
        BTreeSet::from(["qotm-v1-0".to_string(), "qotm-v1-1".to_string()])
    );
    let ps = rt.handle.ps();
    assert!(
        ps.iter()
            .all(|r| r.ready && r.state == ReplicaState::Running)
    );
    let ports: BTreeSet<u16> = ps.iter().map(|r| r.port).collect();
    assert_eq!(ports.len(), 2, "each replica has its own port");

    // Failing readiness takes them out of rotation, processes still running.
    std::fs::remove_file(&ready).unwrap();
    rt.wait_for("no endpoint once readiness fails", |rt| {
        rt.endpoints("qotm", "v1").is_empty()
            && rt
                .handle
                .ps()
                .iter()
                .all(|r| r.state == ReplicaState::NotReady && r.pid.is_some())
    })
    .await;
    rt.shutdown_and_check().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_that_is_never_ready_gets_no_traffic() {
    let dir = test_dir("never-ready");
    let missing = dir.join("never-created");
    let yaml = format!(
        "services:\n  - name: qotm\n    command: python3\n    args: [server.py]{FAST}
    versions:
      - name: v1
      - name: v2
        env: {{READY_FILE: {}}}\n",
        missing.display()
    );
    let rt = start(&dir, &yaml).await;
    rt.rolled_out("qotm", "v1").await;
    rt.wait_for("v2 running", |rt| {
        rt.handle
            .ps()
            .iter()
            .any(|r| r.version == "v2" && r.pid.is_some())
    })
    .await;
    let v2_port = rt
        .handle
        .ps()
        .iter()
        .find(|r| r.version == "v2")
        .unwrap()
        .port;
    // It answers HTTP, but is not ready: not in the registry.
    rt.wait_for("v2 answering 503 on /ready", |_| {
        http_get(([127, 0, 0, 1], v2_port).into(), "/ready").map(|a| a.0) == Some(503)
    })
    .await;
    assert!(rt.endpoints("qotm", "v2").is_empty(), "{}", rt.dump());
    assert_eq!(rt.endpoints("qotm", "v1").len(), 1);
    rt.shutdown_and_check().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_and_tcp_socket_probes() {
    let dir = test_dir("exec-probe");
    let ready = dir.join("exec-ready");
    // The exec probe runs with the replica's environment (READY_FILE, PORT);
    // v2's liveness probe dials a port nobody listens on.
    let yaml = format!(
        "services:
  - name: qotm
    command: python3
    args: [server.py]
    env: {{READY_FILE: {}}}
    readiness: {{exec: {{command: [sh, -c, 'test -e \"$READY_FILE\" && test -n \"$PORT\"']}}, period: 100ms, failureThreshold: 1}}
    restartBackoff: {{initial: 100ms, max: 200ms}}
    versions:
      - name: v1
      - name: v2
        liveness: {{tcpSocket: {{port: 1}}, period: 100ms, failureThreshold: 1}}
",
        ready.display()
    );
    let rt = start(&dir, &yaml).await;
    rt.wait_for("v1 running, not ready", |rt| {
        rt.handle
            .ps()
            .first()
            .is_some_and(|r| r.pid.is_some() && r.state == ReplicaState::Starting)
    })
    .await;
    assert!(rt.endpoints("qotm", "v1").is_empty());
    std::fs::write(&ready, "").unwrap();
    rt.rolled_out("qotm", "v1").await;
    assert_eq!(rt.endpoints("qotm", "v1").len(), 1);
    rt.wait_for("v2 restarted by its tcpSocket liveness probe", |rt| {
        rt.handle.ps().iter().any(|r| {
            r.version == "v2"
                && r.restarts >= 1
                && r.last_exit
                    .as_ref()
                    .is_some_and(|e| e.reason == "LivenessFailed")
        })
    })
    .await;
    rt.shutdown_and_check().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_leaves_the_registry_and_is_restarted_with_back_off() {
    let dir = test_dir("crash");
    // A longer initial back-off, to look at the replica while it waits.
    let yaml = format!(
        "services:\n{}",
        web(
            "qotm",
            1,
            "",
            "\n    restartBackoff: {initial: 1500ms, max: 3s, resetAfter: 1m}"
        )
        .replace(
            "    restartBackoff: {initial: 300ms, max: 2s, resetAfter: 1m}\n",
            ""
        )
    );
    let rt = start(&dir, &yaml).await;
    rt.rolled_out("qotm", "v1").await;
    let first = rt.handle.ps()[0].clone();

    // First crash: restarted at once (as the kubelet does).
    let addr = rt.endpoints("qotm", "v1")[0];
    let _ = http_get(addr, "/crash");
    rt.wait_for("first restart, ready again", |rt| {
        let r = &rt.handle.ps()[0];
        r.restarts == 1 && r.ready
    })
    .await;
    let r = rt.handle.ps()[0].clone();
    assert_eq!(r.port, first.port, "a restarted replica keeps its port");
    assert_ne!(r.pid, first.pid);
    assert_eq!(r.last_exit.as_ref().and_then(|e| e.code), Some(3));
    assert!(pid_gone(first.pid.unwrap()));

    // Second crash: CrashLoopBackOff, and out of the registry meanwhile.
    let _ = http_get(addr, "/crash");
    rt.wait_for("CrashLoopBackOff", |rt| {
        rt.handle.ps()[0].state == ReplicaState::CrashLoopBackOff
    })
    .await;
    assert!(rt.endpoints("qotm", "v1").is_empty(), "{}", rt.dump());
    assert!(!rt.handle.ps()[0].ready);
    rt.wait_for("second restart, ready again", |rt| {
        let r = &rt.handle.ps()[0];
        r.restarts == 2 && r.ready && rt.endpoints("qotm", "v1").len() == 1
    })
    .await;
    rt.shutdown_and_check().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_liveness_probe_restarts_the_replica() {
    let dir = test_dir("liveness");
    let healthy = dir.join("healthy");
    std::fs::write(&healthy, "").unwrap();
    let yaml = format!(
        "services:\n{}",
        web(
            "qotm",
            1,
            "",
            &format!(
                "\n    env: {{HEALTH_FILE: {}}}\n    liveness: {{httpGet: {{path: /health}}, initialDelay: 2s, period: 200ms, failureThreshold: 2}}",
                healthy.display()
            )
        )
    );
    let rt = start(&dir, &yaml).await;
    rt.rolled_out("qotm", "v1").await;
    let before = rt.handle.ps()[0].clone();
    assert_eq!(before.restarts, 0);
    std::fs::remove_file(&healthy).unwrap();
    rt.wait_for("a restart after liveness failed", |rt| {
        rt.handle.ps()[0].restarts >= 1
    })
    .await;
    let after = rt.handle.ps()[0].clone();
    assert_eq!(
        after.last_exit.as_ref().map(|e| e.reason.as_str()),
        Some("LivenessFailed")
    );
    assert!(
        pid_gone(before.pid.unwrap()),
        "the unhealthy process was stopped"
    );
    std::fs::write(&healthy, "").unwrap();
    rt.wait_for("ready again", |rt| rt.endpoints("qotm", "v1").len() == 1)
        .await;
    rt.shutdown_and_check().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_policies() {
    let dir = test_dir("policies");
    let job = |name: &str, code: u8, policy: &str| {
        format!(
            "  - name: {name}
    command: python3
    args: [server.py, --exit={code}]
    restartPolicy: {policy}
    restartBackoff: {{initial: 100ms, max: 200ms, resetAfter: 1m}}
"
        )
    };
    let yaml = format!(
        "services:\n{}{}{}{}",
        job("never", 1, "Never"),
        job("done", 0, "OnFailure"),
        job("failing", 1, "OnFailure"),
        job("always", 0, "Always"),
    );
    let rt = start(&dir, &yaml).await;
    let get = |rt: &Running, s: &str| rt.handle.ps().into_iter().find(|r| r.service == s);
    rt.wait_for("never: exited, not restarted", |rt| {
        get(rt, "never").is_some_and(|r| r.state == ReplicaState::Exited)
    })
    .await;
    rt.wait_for("done: exited with 0, not restarted", |rt| {
        get(rt, "done").is_some_and(|r| r.state == ReplicaState::Exited)
    })
    .await;
    rt.wait_for("failing: restarted", |rt| {
        get(rt, "failing").is_some_and(|r| r.restarts >= 2)
    })
    .await;
    rt.wait_for("always: restarted after a clean exit", |rt| {
        get(rt, "always").is_some_and(|r| r.restarts >= 2)
    })
    .await;
    let never = get(&rt, "never").unwrap();
    assert_eq!((never.restarts, never.pid), (0, None));
    assert_eq!(never.last_exit.as_ref().and_then(|e| e.code), Some(1));
    let done = get(&rt, "done").unwrap();
    assert_eq!(done.restarts, 0);
    assert_eq!(done.last_exit.as_ref().and_then(|e| e.code), Some(0));
    // The exited ones stay exited while the others keep being restarted.
    let failing_now = get(&rt, "failing").unwrap().restarts;
    rt.wait_for("failing: restarted again", |rt| {
        get(rt, "failing").is_some_and(|r| r.restarts > failing_now)
    })
    .await;
    assert_eq!(get(&rt, "never").unwrap().restarts, 0);
    assert_eq!(get(&rt, "done").unwrap().restarts, 0);
    rt.shutdown_and_check().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scale_up_and_down() {
    let dir = test_dir("scale");
    let rt = start(&dir, &format!("services:\n{}", web("qotm", 1, "", ""))).await;
    rt.rolled_out("qotm", "v1").await;
    rt.handle.scale("qotm", "v1", 3).await.unwrap();
    rt.rolled_out("qotm", "v1").await;
    assert_eq!(rt.endpoints("qotm", "v1").len(), 3, "{}", rt.dump());
    let names: Vec<String> = rt.handle.ps().into_iter().map(|r| r.name).collect();
    assert_eq!(names, ["qotm-v1-0", "qotm-v1-1", "qotm-v1-2"]);
    let pids = rt.pids();

    rt.handle.scale("qotm", "v1", 1).await.unwrap();
    rt.rolled_out("qotm", "v1").await;
    assert_eq!(rt.endpoints("qotm", "v1").len(), 1);
    let left = rt.handle.ps();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].name, "qotm-v1-0", "the newest replicas go first");
    for pid in pids {
        if Some(pid) != left[0].pid {
            assert!(pid_gone(pid), "scaled-down process {pid} still runs");
        }
    }

    assert!(matches!(
        rt.handle.scale("qotm", "v9", 1).await,
        Err(RuntimeError::UnknownVersion { .. })
    ));
    assert!(matches!(
        rt.handle.scale("nope", "v1", 1).await,
        Err(RuntimeError::UnknownService(_))
    ));
    assert!(matches!(
        rt.handle.scale("qotm", "v1", 1000).await,
        Err(RuntimeError::BadReplicas { .. })
    ));
    rt.handle.scale("qotm", "v1", 0).await.unwrap();
    rt.rolled_out("qotm", "v1").await;
    assert!(rt.handle.ps().is_empty());
    assert!(rt.endpoints("qotm", "v1").is_empty());
    rt.shutdown_and_check().await;
}

/// Records the smallest number of endpoints of `key` seen at any change of
/// the registry (and by polling in between) until stopped.
fn watch_min_endpoints(
    registry: &Registry,
    key: BackendKey,
) -> (Arc<AtomicUsize>, tokio::task::JoinHandle<()>) {
    let min = Arc::new(AtomicUsize::new(usize::MAX));
    let m = min.clone();
    let registry = registry.clone();
    let mut rx = registry.subscribe();
    let task = tokio::spawn(async move {
        loop {
            m.fetch_min(registry.get(&key).len(), Ordering::SeqCst);
            let _ = tokio::time::timeout(Duration::from_millis(2), rx.changed()).await;
        }
    });
    (min, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_keeps_ready_replicas_registered() {
    let dir = test_dir("rolling");
    let rt = start(
        &dir,
        &format!("services:\n{}", web("qotm", 2, ", --delay-start=0.3", "")),
    )
    .await;
    rt.rolled_out("qotm", "v1").await;
    let old_pids: BTreeSet<u32> = rt.pids().into_iter().collect();
    let (min, watcher) = watch_min_endpoints(&rt.registry, BackendKey::new("qotm", "v1"));

    let revision = rt.handle.restart("qotm", "v1").await.unwrap();
    assert_eq!(revision, 2);
    tokio::time::timeout(PATIENCE, rt.handle.wait_rollout("qotm", "v1"))
        .await
        .unwrap_or_else(|_| panic!("rollout did not finish\n{}", rt.dump()))
        .unwrap();
    watcher.abort();

    let ps = rt.handle.ps();
    assert_eq!(ps.len(), 2);
    assert!(ps.iter().all(|r| r.revision == 2 && r.ready));
    let new_pids: BTreeSet<u32> = rt.pids().into_iter().collect();
    assert!(
        old_pids.is_disjoint(&new_pids),
        "every replica was replaced"
    );
    for pid in old_pids {
        assert!(pid_gone(pid));
    }
    // maxUnavailable 0: never fewer than the wanted 2 ready replicas.
    assert!(
        min.load(Ordering::SeqCst) >= 2,
        "saw {} endpoints during the rollout",
        min.load(Ordering::SeqCst)
    );
    rt.shutdown_and_check().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_rolls_changed_versions_adds_and_removes() {
    let dir = test_dir("apply");
    let yaml = |tag: &str, extra_service: &str| {
        format!(
            "services:\n{}{extra_service}",
            web("qotm", 2, &format!(", --tag={tag}"), "")
        )
    };
    let rt = start(&dir, &yaml("a", &web("old", 1, "", ""))).await;
    rt.all_rolled_out().await;
    let (min, watcher) = watch_min_endpoints(&rt.registry, BackendKey::new("qotm", "v1"));

    let summary = rt
        .handle
        .apply(stack(&dir, &yaml("b", &web("new", 1, "", ""))))
        .await
        .unwrap();
    assert_eq!(summary.rolled, ["qotm/v1"]);
    assert_eq!(summary.added, ["new/v1"]);
    assert_eq!(summary.removed, ["old/v1"]);
    tokio::time::timeout(PATIENCE, rt.handle.wait_all_rolled_out())
        .await
        .unwrap_or_else(|_| panic!("apply did not finish\n{}", rt.dump()))
        .unwrap();
    watcher.abort();
    rt.wait_for("old service gone", |rt| {
        rt.handle.ps().iter().all(|r| r.service != "old")
            && !rt
                .registry
                .snapshot()
                .contains_key(&BackendKey::new("old", "v1"))
    })
    .await;
    assert_eq!(rt.endpoints("new", "v1").len(), 1);
    for addr in rt.endpoints("qotm", "v1") {
        let body = json_get(addr, "/").unwrap();
        assert_eq!(body["tag"], "b", "{}", rt.dump());
    }
    assert!(min.load(Ordering::SeqCst) >= 2);

    // The same stack again changes nothing; a replica count only scales.
    let again = rt
        .handle
        .apply(stack(&dir, &yaml("b", &web("new", 1, "", ""))))
        .await
        .unwrap();
    assert_eq!(again.unchanged.len(), 2, "{again:?}");
    let scaled = rt
        .handle
        .apply(stack(&dir, &yaml("b", &web("new", 2, "", ""))))
        .await
        .unwrap();
    assert_eq!(scaled.scaled, ["new/v1"]);
    rt.all_rolled_out().await;
    assert!(
        rt.handle
            .ps()
            .iter()
            .all(|r| r.revision == 2 || r.service == "new")
    );
    rt.shutdown_and_check().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recreate_stops_every_old_replica_before_starting_new_ones() {
    let dir = test_dir("recreate");
    let yaml = |tag: &str| {
        format!(
            "services:\n{}",
            web(
                "qotm",
                2,
                &format!(", --tag={tag}"),
                "\n    strategy: {type: Recreate}"
            )
        )
    };
    let rt = start(&dir, &yaml("a")).await;
    rt.all_rolled_out().await;
    let mut events = rt.handle.events();
    rt.handle.apply(stack(&dir, &yaml("b"))).await.unwrap();
    let mut removed = 0;
    tokio::time::timeout(PATIENCE, async {
        loop {
            match events.recv().await {
                Ok(RuntimeEvent::ReplicaRemoved { .. }) => removed += 1,
                Ok(RuntimeEvent::ReplicaChanged { replica }) if replica.revision == 2 => {
                    assert_eq!(
                        removed, 2,
                        "a new replica appeared before the old ones were gone"
                    );
                    break;
                }
                _ => {}
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no new replica\n{}", rt.dump()));
    rt.all_rolled_out().await;
    for addr in rt.endpoints("qotm", "v1") {
        assert_eq!(json_get(addr, "/").unwrap()["tag"], "b");
    }
    rt.shutdown_and_check().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_sends_sigterm_then_sigkill() {
    let dir = test_dir("shutdown");
    let yaml = format!(
        "services:\n{}{}",
        web("polite", 1, "", ""),
        web("stubborn", 1, ", --ignore-term", "").replace(
            "terminationGracePeriod: 5s",
            "terminationGracePeriod: 300ms"
        ),
    );
    let rt = start(&dir, &yaml).await;
    rt.all_rolled_out().await;
    let mut events = rt.handle.events();
    let work_dir = dir.join("run");
    assert!(work_dir.exists());
    let pids = rt.pids();
    assert_eq!(pids.len(), 2);
    let registry = rt.registry.clone();
    let handle = rt.handle.clone();
    rt.shutdown_and_check().await;
    assert!(registry.snapshot().is_empty());
    let mut exits = std::collections::BTreeMap::new();
    while let Ok(e) = events.try_recv() {
        if let RuntimeEvent::ReplicaChanged { replica } = e
            && let Some(exit) = replica.last_exit
        {
            exits.insert(replica.service, exit);
        }
    }
    assert_eq!(exits["polite"].code, Some(0), "{exits:?}");
    assert_eq!(exits["stubborn"].signal, Some(9), "{exits:?}");
    assert!(matches!(
        handle.scale("polite", "v1", 1).await,
        Err(RuntimeError::ShuttingDown)
    ));
    // A second shutdown is fine.
    handle.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn depends_on_waits_for_a_ready_replica() {
    let dir = test_dir("depends");
    let ready = dir.join("auth-ready");
    let yaml = format!(
        "services:\n{}{}",
        web("qotm", 1, "", "\n    dependsOn: [auth]"),
        web(
            "auth",
            1,
            "",
            &format!("\n    env: {{READY_FILE: {}}}", ready.display())
        ),
    );
    let rt = start(&dir, &yaml).await;
    rt.wait_for("auth running, qotm pending", |rt| {
        let ps = rt.handle.ps();
        ps.iter().any(|r| r.service == "auth" && r.pid.is_some())
            && ps.iter().any(|r| {
                r.service == "qotm"
                    && r.state == ReplicaState::Pending
                    && r.message.as_deref().is_some_and(|m| m.contains("auth"))
            })
    })
    .await;
    assert!(
        rt.handle
            .ps()
            .iter()
            .all(|r| r.service != "qotm" || r.pid.is_none())
    );
    std::fs::write(&ready, "").unwrap();
    rt.all_rolled_out().await;
    assert_eq!(rt.endpoints("qotm", "v1").len(), 1);
    rt.shutdown_and_check().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_waits_for_depends_on_as_the_first_start_does() {
    let dir = test_dir("depends-restart");
    let ready = dir.join("auth-ready");
    std::fs::write(&ready, "").unwrap();
    let yaml = format!(
        "services:\n{}{}",
        web(
            "qotm",
            1,
            "",
            "\n    dependsOn: [{service: auth, condition: ready}]"
        ),
        web(
            "auth",
            1,
            "",
            &format!("\n    env: {{READY_FILE: {}}}", ready.display())
        ),
    );
    let rt = start(&dir, &yaml).await;
    rt.all_rolled_out().await;
    // auth is no longer ready; then qotm crashes.
    std::fs::remove_file(&ready).unwrap();
    rt.wait_for("auth not ready", |rt| rt.endpoints("auth", "v1").is_empty())
        .await;
    let first = rt
        .handle
        .ps()
        .into_iter()
        .find(|r| r.service == "qotm")
        .unwrap();
    let _ = http_get(rt.endpoints("qotm", "v1")[0], "/crash");
    rt.wait_for("qotm waits for auth before it restarts", |rt| {
        rt.handle.ps().iter().any(|r| {
            r.service == "qotm"
                && r.state == ReplicaState::Pending
                && r.pid.is_none()
                && r.message.as_deref() == Some("waiting for a ready replica of auth")
        })
    })
    .await;
    std::fs::write(&ready, "").unwrap();
    rt.wait_for("qotm restarted once auth is ready", |rt| {
        rt.handle
            .ps()
            .iter()
            .any(|r| r.service == "qotm" && r.ready && r.restarts == 1 && r.pid != first.pid)
    })
    .await;
    rt.shutdown_and_check().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_started_condition_needs_a_running_process_not_a_ready_one() {
    let dir = test_dir("depends-started");
    // auth never becomes ready: no READY_FILE is ever written.
    let yaml = format!(
        "services:\n{}{}",
        web(
            "qotm",
            1,
            "",
            "\n    dependsOn: [{service: auth, condition: started}]"
        ),
        web(
            "auth",
            1,
            "",
            &format!("\n    env: {{READY_FILE: {}}}", dir.join("never").display())
        ),
    );
    let rt = start(&dir, &yaml).await;
    rt.rolled_out("qotm", "v1").await;
    assert!(rt.endpoints("auth", "v1").is_empty(), "{}", rt.dump());
    rt.shutdown_and_check().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_and_files_are_handed_over_but_never_shown() {
    let dir = test_dir("secrets");
    const TOKEN: &str = "tok-SECRET-0123456789";
    const KEY: &str = "key-SECRET-abcdef";
    std::fs::write(dir.join("token.txt"), format!("{TOKEN}\n")).unwrap();
    let yaml = format!(
        "services:\n{}",
        web(
            "qotm",
            1,
            ", --print-secret",
            &format!(
                "
    secrets:
      - {{name: API_TOKEN, fromFile: token.txt}}
      - {{name: TLS_KEY, value: {KEY}, asFile: true}}
    files:
      - {{path: config/app.toml, content: \"greeting = 'hi'\"}}"
            )
        )
    );
    let rt = start(&dir, &yaml).await;
    let mut events = rt.handle.events();
    rt.rolled_out("qotm", "v1").await;
    let addr = rt.endpoints("qotm", "v1")[0];
    let check = json_get(addr, "/check").unwrap();
    assert_eq!(check["token_len"], TOKEN.len());
    assert_eq!(check["tls_key_file"], KEY);
    assert_eq!(check["tls_key_in_env"], false);
    assert_eq!(check["config"], "greeting = 'hi'");
    assert_eq!(check["service"], "qotm");
    assert_eq!(check["port"], addr.port().to_string());

    // Private folders and files.
    let run = dir.join("run");
    let mut seen_files = 0;
    let mut stack = vec![run.clone()];
    while let Some(p) = stack.pop() {
        for entry in std::fs::read_dir(&p).unwrap() {
            let entry = entry.unwrap();
            let mode = entry.metadata().unwrap().permissions().mode() & 0o777;
            if entry.file_type().unwrap().is_dir() {
                assert_eq!(mode, 0o700, "{}", entry.path().display());
                stack.push(entry.path());
            } else {
                assert_eq!(mode, 0o600, "{}", entry.path().display());
                seen_files += 1;
            }
        }
    }
    assert_eq!(seen_files, 2);

    // The replica printed its token: masked in the logs.
    rt.wait_for("the token line in the logs", |rt| {
        rt.handle
            .logs(LogFilter::default(), None, false)
            .unwrap()
            .lines
            .iter()
            .any(|l| l.message == "my token is ***")
    })
    .await;
    let logs = rt.handle.logs(LogFilter::default(), None, false).unwrap();
    let all_logs: String = logs.lines.iter().map(|l| format!("{l:?}\n")).collect();
    let ps = serde_json::to_string(&rt.handle.ps()).unwrap();
    let mut seen_events = String::new();
    while let Ok(e) = events.try_recv() {
        seen_events.push_str(&serde_json::to_string(&e).unwrap());
    }
    let stack_debug = format!("{:?}", rt.handle.stack());
    for secret in [TOKEN, KEY] {
        assert!(!all_logs.contains(secret), "secret in logs:\n{all_logs}");
        assert!(!ps.contains(secret), "secret in ps: {ps}");
        assert!(!seen_events.contains(secret), "secret in events");
        assert!(!stack_debug.contains(secret), "secret in the stack's Debug");
    }
    rt.shutdown_and_check().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_commands_and_stacks_are_rejected() {
    let dir = test_dir("bad");
    let registry = Registry::new();
    let yaml = "services:\n  - {name: a, command: surely-no-such-command-here}\n";
    let err = Runtime::start(stack(&dir, yaml), registry.clone(), quiet_options(&dir))
        .await
        .expect_err("start must fail");
    assert!(
        err.to_string()
            .contains("a/v1: cannot find the command `surely-no-such-command-here`"),
        "{err}"
    );
    let yaml = "services:\n  - {name: a, command: ./missing.sh}\n";
    let err = Runtime::start(stack(&dir, yaml), registry.clone(), quiet_options(&dir))
        .await
        .expect_err("start must fail");
    assert!(
        err.to_string().contains("missing.sh` does not exist"),
        "{err}"
    );
    assert!(registry.snapshot().is_empty());

    let rt = start(&dir, &format!("services:\n{}", web("qotm", 1, "", ""))).await;
    rt.all_rolled_out().await;
    let before = rt.handle.ps();
    let bad = stack(
        &dir,
        "services:\n  - {name: qotm, command: nope-not-a-command}\n",
    );
    assert!(matches!(
        rt.handle.apply(bad).await,
        Err(RuntimeError::Command { .. })
    ));
    assert_eq!(rt.handle.ps(), before_with_age(&rt, &before));
    rt.shutdown_and_check().await;
}

/// `before` with today's ages, to compare a `ps` taken later.
fn before_with_age(
    rt: &Running,
    before: &[serin_runtime::ReplicaStatus],
) -> Vec<serin_runtime::ReplicaStatus> {
    let now = rt.handle.ps();
    before
        .iter()
        .zip(&now)
        .map(|(b, n)| {
            let mut b = b.clone();
            b.age_secs = n.age_secs;
            b
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_api() {
    let dir = test_dir("admin");
    let rt = start(
        &dir,
        &format!("services:\n{}", web("qotm", 1, ", --tag=a", "")),
    )
    .await;
    rt.all_rolled_out().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let app = admin_router(rt.handle.clone());
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    let client = serin_config::http_client::builder()
        .unwrap()
        .timeout(PATIENCE)
        .build()
        .unwrap();

    let ps: serde_json::Value = client
        .get(format!("{base}/runtime/ps"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ps[0]["name"], "qotm-v1-0");
    assert_eq!(ps[0]["state"], "Running");
    assert_eq!(ps[0]["ready"], true);

    // Follow the logs while scaling up.
    let mut follow = serin_config::http_client::builder()
        .unwrap()
        .build()
        .unwrap()
        .get(format!("{base}/runtime/logs?service=qotm&follow=true"))
        .send()
        .await
        .unwrap();
    assert_eq!(follow.status(), 200);
    let scaled = client
        .post(format!("{base}/runtime/scale"))
        .json(&serde_json::json!({"service": "qotm", "version": "v1", "replicas": 2, "wait": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(scaled.status(), 200);
    assert_eq!(rt.endpoints("qotm", "v1").len(), 2);
    let mut streamed = String::new();
    tokio::time::timeout(PATIENCE, async {
        while !streamed.contains("starting qotm-v1-1") {
            match follow.chunk().await.unwrap() {
                Some(c) => streamed.push_str(&String::from_utf8_lossy(&c)),
                None => break,
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no streamed line; got {streamed}"));
    let first: serde_json::Value = serde_json::from_str(streamed.lines().next().unwrap()).unwrap();
    assert_eq!(first["service"], "qotm");

    let text = client
        .get(format!(
            "{base}/runtime/logs?service=qotm&version=v1&tail=1000&format=text"
        ))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        text.contains("qotm/v1/0 | starting qotm-v1-0 tag a"),
        "{text}"
    );

    let restarted = client
        .post(format!("{base}/runtime/restart"))
        .json(&serde_json::json!({"service": "qotm", "version": "v1", "wait": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(restarted.status(), 200);
    let body: serde_json::Value = restarted.json().await.unwrap();
    assert_eq!(body["revision"], 2);

    // Errors.
    let status_and_error = |resp: reqwest::Response| async move {
        let status = resp.status().as_u16();
        let body: serde_json::Value = resp.json().await.unwrap();
        (status, body)
    };
    let (s, b) = status_and_error(
        client
            .post(format!("{base}/runtime/scale"))
            .json(&serde_json::json!({"service": "nope", "version": "v1", "replicas": 1}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (s, b["error"].as_str().unwrap()),
        (404, "unknown service `nope`")
    );
    let (s, _) = status_and_error(
        client
            .post(format!("{base}/runtime/restart"))
            .json(&serde_json::json!({"service": "qotm", "version": "v7"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, 404);
    let (s, b) = status_and_error(
        client
            .post(format!("{base}/runtime/scale"))
            .header("content-type", "application/json")
            .body("{\"service\": \"qotm\"}")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, 400);
    assert!(
        b["error"].as_str().unwrap().contains("missing field"),
        "{b}"
    );
    let (s, _) = status_and_error(
        client
            .get(format!("{base}/runtime/logs?service=nope"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, 404);

    // A bad stack file: every problem, and nothing changes.
    let before: Vec<String> = rt.handle.ps().into_iter().map(|r| r.name).collect();
    let path = dir.join("stack.yaml");
    let (s, b) = status_and_error(
        client
            .post(format!("{base}/runtime/apply"))
            .json(&serde_json::json!({
                "stack": "services:\n  - name: qotm\n    comand: x\n    replicas: lots\n",
                "path": path.display().to_string(),
            }))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, 400, "{b}");
    let problems = b["problems"].as_array().unwrap();
    assert_eq!(problems.len(), 3, "{b}");
    assert_eq!(problems[0]["line"], 2);
    assert!(
        b["error"].as_str().unwrap().contains(&format!(
            "{}:3:5: services[0].comand: unknown field",
            path.display()
        )),
        "{b}"
    );
    let after: Vec<String> = rt.handle.ps().into_iter().map(|r| r.name).collect();
    assert_eq!(before, after);

    // A good one is applied.
    let good = format!("services:\n{}", web("qotm", 1, ", --tag=c", ""));
    let (s, b) = status_and_error(
        client
            .post(format!("{base}/runtime/apply"))
            .json(&serde_json::json!({"stack": good, "path": path.display().to_string(), "wait": true}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["rolled"][0], "qotm/v1");
    let addr = rt.endpoints("qotm", "v1")[0];
    assert_eq!(json_get(addr, "/").unwrap()["tag"], "c");

    // Followers end with the runtime.
    let follower = tokio::spawn(async move { while let Ok(Some(_)) = follow.chunk().await {} });
    rt.shutdown_and_check().await;
    tokio::time::timeout(PATIENCE, follower)
        .await
        .expect("the log stream ends at shutdown")
        .unwrap();
    server.abort();
}

/// Not a test on its own: run by `children_die_when_serin_is_killed` in a
/// child process, where it starts a runtime, writes its replicas' pids and
/// waits to be SIGKILLed.
#[test]
fn pdeathsig_helper() {
    let Some(dir) = std::env::var_os("SERIN_RUNTIME_TEST_HELPER_DIR") else {
        return;
    };
    let dir = std::path::PathBuf::from(dir);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let running = start(&dir, &format!("services:\n{}", web("qotm", 2, "", ""))).await;
        running.all_rolled_out().await;
        let pids: Vec<String> = running.pids().iter().map(ToString::to_string).collect();
        std::fs::write(dir.join("pids.tmp"), pids.join("\n")).unwrap();
        std::fs::rename(dir.join("pids.tmp"), dir.join("pids")).unwrap();
        std::future::pending::<()>().await;
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn children_die_when_serin_is_killed() {
    let dir = test_dir("pdeathsig");
    let mut helper = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "pdeathsig_helper",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("SERIN_RUNTIME_TEST_HELPER_DIR", &dir)
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let pids_file = dir.join("pids");
    eventually("the helper's replicas", || pids_file.exists()).await;
    let pids: Vec<u32> = std::fs::read_to_string(&pids_file)
        .unwrap()
        .lines()
        .map(|l| l.parse().unwrap())
        .collect();
    assert_eq!(pids.len(), 2);
    assert!(pids.iter().all(|p| !pid_gone(*p)));
    helper.kill().unwrap(); // SIGKILL: no chance to clean up
    helper.wait().unwrap();
    eventually("the replicas die with their parent", || {
        pids.iter().all(|p| pid_gone(*p))
    })
    .await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// The port a replica is given is found free and let go; when another
/// process takes it before the replica binds it, the replica fails to bind
/// and is given another port before it restarts, instead of crashing on
/// the taken one forever (or being judged ready on the stranger's socket).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_whose_port_was_taken_meanwhile_moves_to_another() {
    let dir = test_dir("port-taken");
    let yaml = format!("services:\n{}", web("qotm", 1, ", --delay-start=1.5", ""));
    let rt = start(&dir, &yaml).await;
    rt.wait_for("a port for the replica", |rt| {
        rt.handle.ps().first().is_some_and(|r| r.port != 0)
    })
    .await;
    let given = rt.handle.ps()[0].port;
    // Taken while the replica sleeps before binding it.
    let stranger = std::net::TcpListener::bind(("127.0.0.1", given))
        .unwrap_or_else(|e| panic!("port {given} was not free for the test: {e}\n{}", rt.dump()));
    rt.wait_for("ready on another port", |rt| {
        let r = &rt.handle.ps()[0];
        r.ready && r.port != given && rt.endpoints("qotm", "v1").len() == 1
    })
    .await;
    let r = rt.handle.ps()[0].clone();
    assert_eq!(r.restarts, 1, "{}", rt.dump());
    assert_eq!(
        rt.endpoints("qotm", "v1")[0].port(),
        r.port,
        "{}",
        rt.dump()
    );
    drop(stranger);
    rt.shutdown_and_check().await;
}
