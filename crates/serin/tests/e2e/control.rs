//! One writer of the configuration: weight changes and reloads from every
//! source, raced against each other, are applied exactly once and in order.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use serde_json::Value;

use crate::common::{Serin, Upstream, client, proxy};

const ROUTES: usize = 8;

/// Eight routes, each one rule splitting between `svc/a` and `svc/b`; the
/// weights of `changed` (route index) are `file_weights`, the others 1/1.
/// `generation` only changes a comment, so the file watcher sees a new file.
fn config(
    a: SocketAddr,
    b: SocketAddr,
    generation: u32,
    changed: Option<(usize, u32, u32)>,
) -> String {
    let mut text = format!(
        "# generation {generation}\nlisteners:\n  - name: gw\n    address: 127.0.0.1:0\n\
         services:\n  - name: svc\n    versions:\n      - name: a\n        endpoints: [\"{}\"]\n      - name: b\n        endpoints: [\"{}\"]\nroutes:\n",
        a, b
    );
    for r in 0..ROUTES {
        let (wa, wb) = match changed {
            Some((c, wa, wb)) if c == r => (wa, wb),
            _ => (1, 1),
        };
        text.push_str(&format!(
            "  - name: r{r}\n    hostnames: [r{r}.test]\n    rules:\n      - backendRefs:\n          - {{name: svc, version: a, weight: {wa}}}\n          - {{name: svc, version: b, weight: {wb}}}\n"
        ));
    }
    text
}

async fn put_weights(serin: &Serin, route: &str, a: u32, b: u32) -> (u16, String) {
    let r = client()
        .put(serin.admin_url(&format!("/routes/{route}/weights")))
        .header("content-type", "application/json")
        .body(format!(r#"{{"weights": {{"a": {a}, "b": {b}}}}}"#))
        .send()
        .await
        .unwrap_or_else(|e| panic!("PUT weights: {e:?}"));
    (r.status().as_u16(), r.text().await.unwrap_or_default())
}

async fn post_reload(serin: &Serin) -> (u16, Value) {
    let r = client()
        .post(serin.admin_url("/reload"))
        .header("content-type", "application/json")
        .send()
        .await
        .unwrap_or_else(|e| panic!("POST /reload: {e:?}"));
    let status = r.status().as_u16();
    let text = r.text().await.unwrap_or_default();
    (
        status,
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}")),
    )
}

/// `service/version` → weight of rule 0 of `route`, as the admin API serves it.
async fn served_weights(serin: &Serin, route: &str) -> BTreeMap<String, u64> {
    let text = client()
        .get(serin.admin_url(&format!("/routes/{route}/weights")))
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET weights: {e}"))
        .text()
        .await
        .unwrap_or_default();
    let v: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
    weights_of(&v["rules"][0]["weights"])
}

fn weights_of(v: &Value) -> BTreeMap<String, u64> {
    v.as_object()
        .map(|o| {
            o.iter()
                .map(|(k, w)| (k.clone(), w.as_u64().unwrap_or(u64::MAX)))
                .collect()
        })
        .unwrap_or_default()
}

fn expected(a: u32, b: u32) -> BTreeMap<String, u64> {
    BTreeMap::from([("svc/a".into(), a.into()), ("svc/b".into(), b.into())])
}

/// Hundreds of weight changes on eight routes at once, raced against
/// reloads by `POST /reload`, SIGHUP and the file watcher: at the end the
/// admin API, the running config and the state file all hold, for every
/// route, the last change that was acknowledged — none overwritten by a
/// reload that started before it, none lost beside another route's.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn raced_weight_changes_and_reloads_keep_every_acknowledged_change() {
    let a = Upstream::start("a");
    let b = Upstream::start("b");
    let serin = proxy(&config(a.addr, b.addr, 0, None));
    let serin = std::sync::Arc::new(serin);
    let mut writers = Vec::new();
    for r in 0..ROUTES {
        let serin = serin.clone();
        writers.push(tokio::spawn(async move {
            let route = format!("r{r}");
            let mut last = None;
            for i in 0..40u32 {
                let wa = (i * 13 + r as u32 * 7) % 100 + 1;
                let (status, body) = put_weights(&serin, &route, wa, 101 - wa).await;
                assert_eq!(status, 200, "PUT {route} #{i}: {body}");
                last = Some((wa, 101 - wa));
            }
            (route, last)
        }));
    }
    let reloader = {
        let serin = serin.clone();
        let (a, b) = (a.addr, b.addr);
        tokio::spawn(async move {
            for i in 1..=60u32 {
                // The file keeps every rule's weights, so every run-time
                // change must survive every reload.
                std::fs::write(&serin.config, config(a, b, i, None))
                    .unwrap_or_else(|e| panic!("{e}"));
                if i % 2 == 0 {
                    let (status, body) = post_reload(&serin).await;
                    assert_eq!(status, 200, "reload #{i}: {body}");
                    assert_eq!(
                        body["replacedWeightChanges"],
                        serde_json::json!([]),
                        "{body}"
                    );
                } else {
                    serin.signal("HUP");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        })
    };
    let mut last = BTreeMap::new();
    for w in writers {
        let (route, weights) = w.await.unwrap_or_else(|e| panic!("{e}"));
        last.insert(
            route,
            weights.unwrap_or_else(|| panic!("no change acknowledged")),
        );
    }
    reloader.await.unwrap_or_else(|e| panic!("{e}"));
    // One more reload through the same writer: it runs after every signal
    // and watcher reload above was applied or queued before it.
    let (status, body) = post_reload(&serin).await;
    assert_eq!(status, 200, "{body}");

    let state_text = std::fs::read_to_string(serin.dir.join("serin.state.json"))
        .unwrap_or_else(|e| panic!("state file: {e}"));
    let state: Value = serde_json::from_str(&state_text).unwrap_or_else(|e| panic!("{e}"));
    let running: Value = serde_json::from_str(
        &client()
            .get(serin.admin_url("/config"))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .text()
            .await
            .unwrap_or_default(),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    for (route, (wa, wb)) in &last {
        let want = expected(*wa, *wb);
        assert_eq!(
            served_weights(&serin, route).await,
            want,
            "GET weights of {route}"
        );
        assert_eq!(
            weights_of(&state["weights"][route]["0"]),
            want,
            "state file for {route}:\n{state_text}"
        );
        let rule = running["routes"]
            .as_array()
            .and_then(|rs| rs.iter().find(|r| r["name"] == route.as_str()))
            .map(|r| r["rules"][0]["backends"].clone())
            .unwrap_or_default();
        let in_config: BTreeMap<String, u64> = rule
            .as_array()
            .map(|bs| {
                bs.iter()
                    .map(|b| {
                        (
                            format!(
                                "{}/{}",
                                b["service"].as_str().unwrap_or(""),
                                b["version"].as_str().unwrap_or("")
                            ),
                            b["weight"].as_u64().unwrap_or(u64::MAX),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        assert_eq!(in_config, want, "running config of {route}");
    }
    let log = serin.log_lines().join("\n");
    assert!(!log.contains("cannot write state file"), "{log}");
    let leftovers: Vec<_> = std::fs::read_dir(&serin.dir)
        .unwrap_or_else(|e| panic!("{e}"))
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
}

/// A reload whose file changes one rule's weights wins for that rule only,
/// and says so; the other route's run-time change stays.
#[tokio::test]
async fn a_reload_replaces_only_the_run_time_weights_whose_rule_the_file_changed() {
    let a = Upstream::start("a");
    let b = Upstream::start("b");
    let serin = proxy(&config(a.addr, b.addr, 0, None));
    for route in ["r0", "r1"] {
        let (status, body) = put_weights(&serin, route, 90, 10).await;
        assert_eq!(status, 200, "{body}");
        let answer: Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(answer["persisted"], true, "{body}");
        assert!(
            answer["lasts"]
                .as_str()
                .is_some_and(|s| s.contains("file wins")),
            "{body}"
        );
    }
    std::fs::write(&serin.config, config(a.addr, b.addr, 1, Some((0, 3, 7))))
        .unwrap_or_else(|e| panic!("{e}"));
    let (status, body) = post_reload(&serin).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["replacedWeightChanges"],
        serde_json::json!([{"route": "r0", "rule": 0}]),
        "{body}"
    );
    assert_eq!(served_weights(&serin, "r0").await, expected(3, 7));
    assert_eq!(served_weights(&serin, "r1").await, expected(90, 10));
    let state = std::fs::read_to_string(serin.dir.join("serin.state.json")).unwrap_or_default();
    assert!(!state.contains("\"r0\""), "{state}");
    assert!(state.contains("\"r1\""), "{state}");
}
