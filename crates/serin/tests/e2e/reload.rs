//! Reload with nothing lost, the admin API, weights that survive restarts,
//! and graceful drain.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use crate::common::{SERIN, Serin, Upstream, client, metric_value, metrics_text, proxy};

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
                    http = reqwest::Client::builder()
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
