//! Reload with nothing lost, the admin API, weights that survive restarts,
//! and graceful drain.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use crate::common::{
    SERIN, Serin, Upstream, client, metric_value, metrics_text, metrics_until, proxy,
};

fn split_config(a: &Upstream, b: &Upstream, wa: u32, wb: u32) -> String {
    format!(
        r#"
listeners:
  - name: gw
    address: 127.0.0.1:0
services:
  - name: svc
    versions:
      - name: a
        endpoints: ["{}"]
      - name: b
        endpoints: ["{}"]
routes:
  - name: split
    rules:
      - backendRefs:
          - {{name: svc, version: a, weight: {wa}}}
          - {{name: svc, version: b, weight: {wb}}}
"#,
        a.addr, b.addr
    )
}

/// 100 reloads, weights changing each time, under continuous load from
/// keep-alive and new connections: no failed request, no connection error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_reloads_under_load_lose_nothing() {
    let a = Upstream::start("a");
    let b = Upstream::start("b");
    let serin = proxy(&split_config(&a, &b, 50, 50));
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let mut load = Vec::new();
    for i in 0..6 {
        let url = serin.url("gw");
        let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
        load.push(tokio::spawn(async move {
            // Half the clients keep connections alive, half open a new one
            // per request.
            let keep_alive = i % 2 == 0;
            let mut http = client();
            while !stop.load(Ordering::SeqCst) {
                if !keep_alive {
                    http = serin_config::http_client::builder()
                        .unwrap_or_else(|e| panic!("{e}"))
                        .no_proxy()
                        .pool_max_idle_per_host(0)
                        .build()
                        .unwrap_or_else(|e| panic!("{e}"));
                }
                match http.get(&url).send().await {
                    Ok(r) if r.status() == 200 => match r.bytes().await {
                        Ok(_) => {
                            ok.fetch_add(1, Ordering::SeqCst);
                        }
                        Err(e) => failed
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .push(format!("body: {e}")),
                    },
                    Ok(r) => failed
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(format!("status {}", r.status())),
                    Err(e) => failed
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(format!("{e:?}")),
                }
            }
        }));
    }
    let admin = client();
    for i in 0..100u32 {
        let wa = (i * 7) % 100 + 1;
        std::fs::write(&serin.config, split_config(&a, &b, wa, 101 - wa))
            .unwrap_or_else(|e| panic!("{e}"));
        // Alternate the ways to reload: admin API and SIGHUP (the file
        // watcher reloads too).
        if i % 2 == 0 {
            let r = admin
                .post(serin.admin_url("/reload"))
                .header("content-type", "application/json")
                .send()
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(r.status(), 200, "{}", r.text().await.unwrap_or_default());
        } else {
            serin.signal("HUP");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    stop.store(true, Ordering::SeqCst);
    for t in load {
        t.await.unwrap_or_else(|e| panic!("{e}"));
    }
    let failed = failed.lock().unwrap_or_else(|e| e.into_inner()).clone();
    assert!(
        failed.is_empty(),
        "{} failures, e.g. {:?}",
        failed.len(),
        &failed[..failed.len().min(5)]
    );
    assert!(ok.load(Ordering::SeqCst) > 100);
    let metrics = metrics_text(&serin).await;
    let reloads = metric_value(&metrics, "serin_config_reloads_total{result=\"success\"}");
    assert!(reloads >= 100.0, "{reloads} reloads");
    // The last weights are the ones serving.
    let w = admin
        .get(serin.admin_url("/routes/split/weights"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .json::<serde_json::Value>()
        .await
        .unwrap_or_default();
    let wa = (99 * 7) % 100 + 1;
    assert_eq!(w["rules"][0]["weights"]["svc/a"], wa);
}

#[tokio::test]
async fn a_bad_config_is_rejected_with_its_errors_and_the_old_one_keeps_serving() {
    let a = Upstream::start("a");
    let b = Upstream::start("b");
    let serin = proxy(&split_config(&a, &b, 100, 0));
    std::fs::write(
        &serin.config,
        split_config(&a, &b, 0, 0).replace("name: split", "name: split\n    bogus: 1"),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let r = client()
        .post(serin.admin_url("/reload"))
        .header("content-type", "application/json")
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.status(), 400);
    let body: serde_json::Value = r.json().await.unwrap_or_default();
    let problems = body["problems"].to_string();
    assert!(
        problems.contains("serin.yaml:14:5: routes[0].bogus: unknown field `bogus`"),
        "{problems}"
    );
    assert!(problems.contains("weights sum to 0"), "{problems}");
    let resp = client()
        .get(serin.url("gw"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers().get("x-upstream").map(|v| v.as_bytes()),
        Some(&b"a"[..])
    );
    let metrics = metrics_text(&serin).await;
    assert!(metric_value(&metrics, "serin_config_reloads_total{result=\"failure\"}") >= 1.0);
}

fn cli(args: &[&str]) -> std::process::Output {
    std::process::Command::new(SERIN)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run serin {args:?}: {e}"))
}

#[tokio::test]
async fn weight_changes_apply_at_once_and_survive_a_restart() {
    let a = Upstream::start("a");
    let b = Upstream::start("b");
    let mut serin = proxy(&split_config(&a, &b, 100, 0));
    let admin = serin.admin.to_string();
    let out = cli(&["weights", "set", "split", "a=0", "b=100", "--admin", &admin]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let shown = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        shown.contains("svc/b") && shown.contains("100.0%"),
        "{shown}"
    );
    for _ in 0..20 {
        let r = client()
            .get(serin.url("gw"))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            r.headers().get("x-upstream").map(|v| v.as_bytes()),
            Some(&b"b"[..])
        );
    }
    // Bad changes are refused and change nothing.
    let out = cli(&["weights", "set", "split", "c=1", "--admin", &admin]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no backend `c`"));
    let out = cli(&["weights", "set", "nosuch", "a=1", "--admin", &admin]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("no route named `nosuch`"));

    // Restart (SIGKILL: nothing gets a chance to save on the way out).
    let dir = serin.dir.clone();
    let config = serin.config.clone();
    serin.signal("KILL");
    serin.wait(Duration::from_secs(10));
    let state = std::fs::read_to_string(dir.join("serin.state.json")).unwrap_or_default();
    assert!(state.contains("\"svc/b\": 100"), "{state}");
    let serin2 = Serin::spawn(
        SERIN,
        &[
            "proxy",
            "--config",
            &config.display().to_string(),
            "--admin",
            "127.0.0.1:0",
        ],
        &dir,
        &config,
    );
    for _ in 0..20 {
        let r = client()
            .get(serin2.url("gw"))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            r.headers().get("x-upstream").map(|v| v.as_bytes()),
            Some(&b"b"[..])
        );
    }
    let out = cli(&[
        "weights",
        "get",
        "split",
        "--admin",
        &serin2.admin.to_string(),
    ]);
    let shown = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(shown.contains("svc/a") && shown.contains("0.0%"), "{shown}");
    drop(serin);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_requests_in_flight() {
    let a = Upstream::start("a");
    let b = Upstream::start("b");
    let mut serin = proxy(&split_config(&a, &b, 1, 0));
    let url = serin.url("gw");
    let in_flight = tokio::spawn(async move {
        client()
            .get(url)
            .header("x-test-delay-ms", "1500")
            .send()
            .await
            .map(|r| r.status().as_u16())
    });
    // Wait until the upstream holds the request, then ask serin to stop.
    let mut waited = 0;
    while a.requests() == 0 && waited < 500 {
        tokio::time::sleep(Duration::from_millis(10)).await;
        waited += 1;
    }
    serin.signal("TERM");
    let status = in_flight.await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(status.ok(), Some(200), "the request in flight finished");
    let code = tokio::task::spawn_blocking(move || {
        let code = serin.wait(Duration::from_secs(20));
        (code, serin)
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(code.0, Some(0));
}

#[tokio::test]
async fn admin_api_shows_config_routes_endpoints_and_metrics() {
    let a = Upstream::start("a");
    let b = Upstream::start("b");
    let serin = proxy(&split_config(&a, &b, 3, 1));
    let http = client();
    let get = |p: &str| http.get(serin.admin_url(p)).send();
    assert_eq!(
        get("/ready").await.map(|r| r.status().as_u16()).ok(),
        Some(200)
    );
    let cfg: serde_json::Value = get("/config")
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .json()
        .await
        .unwrap_or_default();
    assert_eq!(cfg["routes"][0]["name"], "split");
    let routes: serde_json::Value = get("/routes")
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .json()
        .await
        .unwrap_or_default();
    assert_eq!(routes["routes"][0]["rules"][0]["backends"][0]["weight"], 3);
    assert_eq!(
        routes["routes"][0]["rules"][0]["backends"][1]["endpoints"],
        1
    );
    let _ = http.get(serin.url("gw")).send().await;
    let eps: serde_json::Value = get("/endpoints")
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .json()
        .await
        .unwrap_or_default();
    assert!(
        eps["backends"].as_array().is_some_and(|b| b.len() == 2),
        "{eps}"
    );
    let metrics = metrics_text(&serin).await;
    for name in [
        "serin_requests_total",
        "serin_request_duration_seconds_bucket",
        "serin_active_connections",
        "serin_config_reloads_total",
    ] {
        assert!(metrics.contains(name), "{name} missing:\n{metrics}");
    }
}

/// A file that made reading panic before serin 0.1's hardening: a
/// non-ASCII character among the first bytes of an unknown key (the "did
/// you mean" suggestion cut it inside `€`).
fn panicky_config(a: &Upstream, b: &Upstream) -> String {
    format!("{}ab€cd: 1\n", split_config(a, b, 0, 100))
}

/// `serin_config_reloads_total{result=RESULT}`, 0 while there is none.
fn reloads(metrics: &str, result: &str) -> f64 {
    let series = format!("serin_config_reloads_total{{result=\"{result}\"}}");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series.as_str()))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

/// Replaces the config file in one step (write, then rename), so that the
/// watcher never reads half of it.
fn replace_config(serin: &Serin, text: &str) {
    let tmp = serin.config.with_extension("yaml.new");
    std::fs::write(&tmp, text).unwrap_or_else(|e| panic!("{e}"));
    std::fs::rename(&tmp, &serin.config).unwrap_or_else(|e| panic!("{e}"));
}

/// Edits the file (a comment) until the watcher applies an edit: from then
/// on it is known to run and to compare with this text. (It reads the file
/// when it starts, which may be after an edit made right after serin
/// reported its admin API: that edit is not seen as one.) Returns the
/// successful reloads so far.
async fn until_the_watcher_runs(serin: &Serin, text: &str) -> f64 {
    let mut metrics = String::new();
    for i in 0..20 {
        replace_config(serin, &format!("# watched {i}\n{text}"));
        for _ in 0..20 {
            metrics = metrics_text(serin).await;
            if reloads(&metrics, "success") >= 1.0 {
                return reloads(&metrics, "success");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    panic!("the watcher applied no edit:\n{metrics}");
}

/// The upstream that answered a request through listener `gw`.
async fn served_by(serin: &Serin) -> String {
    let r = client()
        .get(serin.url("gw"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("request through serin: {e}"));
    assert_eq!(r.status(), 200);
    crate::common::header(&r, "x-upstream")
}

#[tokio::test]
async fn a_sighup_reload_of_a_file_that_panicked_leaves_serin_serving() {
    let a = Upstream::start("a");
    let b = Upstream::start("b");
    let config = split_config(&a, &b, 100, 0);
    let serin = proxy(&config);
    let applied = until_the_watcher_runs(&serin, &config).await;
    replace_config(&serin, &panicky_config(&a, &b));
    serin.signal("HUP");
    // The SIGHUP's reload and the file watcher's are both rejected.
    let (rejected, metrics) = metrics_until(&serin, |m| reloads(m, "failure") >= 2.0).await;
    assert!(rejected, "two rejected reloads expected:\n{metrics}");
    assert!(
        serin_testkit::process::pid_alive(serin.pid()),
        "serin exited"
    );
    assert_eq!(served_by(&serin).await, "a", "the old routes serve");
    assert_eq!(reloads(&metrics, "success"), applied);
}

#[tokio::test]
async fn a_file_that_panicked_is_a_400_and_the_watcher_applies_the_next_good_edit() {
    let a = Upstream::start("a");
    let b = Upstream::start("b");
    let config = split_config(&a, &b, 100, 0);
    let serin = proxy(&config);
    let applied = until_the_watcher_runs(&serin, &config).await;
    replace_config(&serin, &panicky_config(&a, &b));
    // The watcher rejects it (and lives on).
    let (rejected, metrics) = metrics_until(&serin, |m| reloads(m, "failure") >= 1.0).await;
    assert!(rejected, "the watcher did not reject the file:\n{metrics}");
    let r = client()
        .post(serin.admin_url("/reload"))
        .header("content-type", "application/json")
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.status(), 400);
    let body: serde_json::Value = r.json().await.unwrap_or_default();
    let problems = body["problems"].to_string();
    assert!(
        problems.contains("serin.yaml:18:1: ab€cd: unknown field `ab€cd`, expected one of:"),
        "{body}"
    );
    assert_eq!(served_by(&serin).await, "a", "the old routes serve");
    // A good edit afterwards is applied by the watcher.
    replace_config(&serin, &split_config(&a, &b, 0, 100));
    let (good, metrics) = metrics_until(&serin, |m| reloads(m, "success") > applied).await;
    assert!(good, "the watcher did not apply the good edit:\n{metrics}");
    assert_eq!(served_by(&serin).await, "b", "the new routes serve");
}

/// Deterministic pseudo-random numbers (xorshift64), so that a failure can
/// be replayed.
struct Xorshift(u64);

impl Xorshift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        let i = usize::try_from(self.next() % items.len() as u64).unwrap_or(0);
        &items[i]
    }
}

/// Random YAML-looking text: `key: value` lines whose keys mix ASCII with
/// multi-byte characters, and whose values also hold YAML's punctuation.
fn random_text(rng: &mut Xorshift) -> String {
    const KEY: &[char] = &['a', 'b', 'R', 'x', '1', '€', 'é', '日', '😀', '-', '_'];
    const VALUE: &[char] = &[
        'a', 'R', '1', '€', 'é', '日', '😀', ' ', ':', '{', '}', '[', ']', ',', '"', '#', '&', '*',
    ];
    let mut text = String::new();
    for _ in 0..(1 + rng.next() % 8) {
        for _ in 0..(1 + rng.next() % 10) {
            text.push(*rng.pick(KEY));
        }
        text.push_str(": ");
        for _ in 0..(rng.next() % 6) {
            text.push(*rng.pick(VALUE));
        }
        text.push('\n');
    }
    text
}

#[tokio::test]
async fn reloads_of_random_bytes_leave_serin_serving() {
    let a = Upstream::start("a");
    let b = Upstream::start("b");
    let serin = proxy(&split_config(&a, &b, 100, 0));
    let admin = client();
    let mut rng = Xorshift(0x5e71_2026);
    for i in 0..40 {
        // Raw bytes (mostly not UTF-8), random text, and random text after
        // a good config (its keys then sit in a known mapping).
        let contents: Vec<u8> = match i % 3 {
            0 => (0..rng.next() % 2048)
                .map(|_| rng.next().to_le_bytes()[0])
                .collect(),
            1 => random_text(&mut rng).into_bytes(),
            _ => format!("{}{}", split_config(&a, &b, 0, 100), random_text(&mut rng)).into_bytes(),
        };
        std::fs::write(&serin.config, &contents).unwrap_or_else(|e| panic!("{e}"));
        let r = admin
            .post(serin.admin_url("/reload"))
            .header("content-type", "application/json")
            .send()
            .await
            .unwrap_or_else(|e| panic!("reload {i}: {e}"));
        let status = r.status();
        let body = r.text().await.unwrap_or_default();
        assert_eq!(
            status,
            400,
            "reload {i} of {:?}: {body}",
            String::from_utf8_lossy(&contents)
        );
        assert_eq!(served_by(&serin).await, "a", "after reload {i}");
    }
    serin.signal("HUP");
    let (rejected, metrics) = metrics_until(&serin, |m| reloads(m, "failure") >= 41.0).await;
    assert!(rejected, "{metrics}");
    assert_eq!(served_by(&serin).await, "a");
}
