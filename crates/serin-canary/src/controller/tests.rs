//! The controller's decisions with a fake sink and scripted figures (the
//! end-to-end tests in crates/serin/tests/e2e/canary.rs do the same with
//! real processes and traffic).

use std::collections::VecDeque;
use std::path::PathBuf;
use std::time::Duration;

use super::*;
use crate::source::BoxFuture;

struct FakeSink {
    rules: Mutex<Vec<RuleRef>>,
    matching: Mutex<Option<crate::settings::MatchStep>>,
    mirror: Mutex<Option<f64>>,
    /// Every canary weight set while a mirror was on.
    weights_while_mirroring: Mutex<Vec<u32>>,
}

impl FakeSink {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            rules: Mutex::new(vec![RuleRef {
                route: "qotm".into(),
                rule: 0,
                weights: BTreeMap::from([("v1".into(), 90), ("v2".into(), 10)]),
            }]),
            matching: Mutex::new(None),
            mirror: Mutex::new(None),
            weights_while_mirroring: Mutex::new(Vec::new()),
        })
    }

    fn weights(&self) -> BTreeMap<String, u32> {
        self.rules.lock().unwrap()[0].weights.clone()
    }
}

impl WeightSink for FakeSink {
    fn mirror<'a>(
        &'a self,
        _target: &'a Target,
        percent: Option<f64>,
    ) -> BoxFuture<'a, Result<(), SinkError>> {
        Box::pin(async move {
            *self.mirror.lock().unwrap() = percent;
            Ok(())
        })
    }

    fn route_matching<'a>(
        &'a self,
        _target: &'a Target,
        step: Option<&'a crate::settings::MatchStep>,
    ) -> BoxFuture<'a, Result<(), SinkError>> {
        Box::pin(async move {
            *self.matching.lock().unwrap() = step.cloned();
            Ok(())
        })
    }

    fn versions<'a>(&'a self, service: &'a str) -> BoxFuture<'a, Result<Vec<String>, SinkError>> {
        Box::pin(async move {
            if service == "qotm" {
                Ok(vec!["v1".into(), "v2".into(), "v3".into()])
            } else {
                Err(SinkError::UnknownService(service.into()))
            }
        })
    }

    fn carriers<'a>(
        &'a self,
        _service: &'a str,
        version: &'a str,
    ) -> BoxFuture<'a, Result<Vec<RuleRef>, SinkError>> {
        Box::pin(async move {
            Ok(self
                .rules
                .lock()
                .unwrap()
                .iter()
                .filter(|r| r.weights.contains_key(version))
                .cloned()
                .collect())
        })
    }

    fn set<'a>(
        &'a self,
        target: &'a Target,
        canary_percent: u32,
    ) -> BoxFuture<'a, Result<Vec<RuleRef>, SinkError>> {
        Box::pin(async move {
            if self.mirror.lock().unwrap().is_some() {
                self.weights_while_mirroring
                    .lock()
                    .unwrap()
                    .push(canary_percent);
            }
            let mut rules = self.rules.lock().unwrap();
            for r in rules.iter_mut() {
                if r.weights.contains_key(&target.baseline)
                    && r.weights.contains_key(&target.canary)
                {
                    r.weights
                        .insert(target.baseline.clone(), 100 - canary_percent);
                    r.weights.insert(target.canary.clone(), canary_percent);
                }
            }
            Ok(rules.clone())
        })
    }
}

/// Answers scripted windows, then `rest` forever.
struct Script {
    windows: Mutex<VecDeque<WindowFigures>>,
    rest: WindowFigures,
    /// Shadow answers of mirror-step windows, then healthy ones.
    shadows: Mutex<VecDeque<crate::analysis::ShadowFigures>>,
}

impl MetricsSource for Script {
    fn kind(&self) -> &'static str {
        "embedded"
    }

    fn begin<'a>(&'a self, _target: &'a Target) -> BoxFuture<'a, Result<(), SourceError>> {
        Box::pin(async { Ok(()) })
    }

    fn end<'a>(
        &'a self,
        _target: &'a Target,
        _window: Duration,
    ) -> BoxFuture<'a, Result<WindowFigures, SourceError>> {
        Box::pin(async move {
            Ok(self
                .windows
                .lock()
                .unwrap()
                .pop_front()
                .unwrap_or_else(|| self.rest.clone()))
        })
    }

    fn begin_shadow<'a>(&'a self, _target: &'a Target) -> BoxFuture<'a, Result<(), SourceError>> {
        Box::pin(async { Ok(()) })
    }

    fn end_shadow<'a>(
        &'a self,
        _target: &'a Target,
        percent: f64,
    ) -> BoxFuture<'a, Result<crate::analysis::ShadowFigures, SourceError>> {
        Box::pin(async move {
            Ok(self.shadows.lock().unwrap().pop_front().unwrap_or_else(|| {
                crate::analysis::ShadowFigures::new("v2", percent, 200, 0, 0, 0)
            }))
        })
    }
}

fn window(canary: (u64, u64, f64), baseline: (u64, u64, f64)) -> WindowFigures {
    WindowFigures {
        canary: VersionFigures::new("v2", canary.0, canary.1, Some(canary.2)),
        baseline: VersionFigures::new("v1", baseline.0, baseline.1, Some(baseline.2)),
    }
}

fn healthy() -> WindowFigures {
    window((200, 0, 0.002), (2000, 0, 0.002))
}

fn empty() -> WindowFigures {
    WindowFigures::default()
}

fn script(windows: Vec<WindowFigures>, rest: WindowFigures) -> Arc<Script> {
    Arc::new(Script {
        windows: Mutex::new(windows.into()),
        rest,
        shadows: Mutex::new(VecDeque::new()),
    })
}

/// A temporary folder, removed on drop.
struct Dir(PathBuf);

impl std::ops::Deref for Dir {
    type Target = std::path::Path;
    fn deref(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn temp_dir() -> Dir {
    let dir = std::env::temp_dir().join(format!("serin-canary-test-{}", new_id()));
    std::fs::create_dir_all(&dir).unwrap();
    Dir(dir)
}

async fn controller(sink: Arc<FakeSink>, source: Arc<Script>, dir: &std::path::Path) -> Controller {
    let (state_file, audit_file) = files_beside(&dir.join("stack.yaml"));
    Controller::start(
        sink,
        source,
        ControllerOptions {
            state_file: Some(state_file),
            audit_file: Some(audit_file),
            ..ControllerOptions::default()
        },
    )
    .await
    .unwrap()
}

fn request(steps: &[u32]) -> StartRequest {
    StartRequest {
        to: "v2".into(),
        from: None,
        options: Options {
            steps: Some(steps.to_vec()),
            interval: Some(Duration::from_millis(100)),
            ..Options::default()
        },
    }
}

async fn wait_for(c: &Controller, cond: impl Fn(&Status) -> bool) -> Status {
    for _ in 0..300 {
        let s = c.status("qotm").unwrap();
        if cond(&s) {
            return s;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("condition never held: {:#?}", c.status("qotm"));
}

fn audit_decisions(dir: &std::path::Path) -> Vec<String> {
    std::fs::read_to_string(dir.join("stack.canary-audit.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            v["decision"].as_str().unwrap().to_string()
        })
        .collect()
}

#[tokio::test]
async fn healthy_canary_is_promoted() {
    let dir = temp_dir();
    let sink = FakeSink::new();
    let c = controller(sink.clone(), script(vec![], healthy()), &dir).await;
    let s = c
        .start_canary("qotm", request(&[5, 50, 100]))
        .await
        .unwrap();
    assert_eq!(s.state.baseline, "v1", "inferred from the shared rule");
    assert_eq!(s.state.phase, Phase::Progressing);
    let s = wait_for(&c, |s| s.state.phase.is_final()).await;
    assert_eq!(s.state.phase, Phase::Promoted, "{}", s.state.message);
    assert_eq!(sink.weights()["v2"], 100);
    assert_eq!(sink.weights()["v1"], 0);
    assert_eq!(
        audit_decisions(&dir),
        ["start", "advance", "advance", "promote"]
    );
}

#[tokio::test]
async fn failing_checks_roll_back() {
    let dir = temp_dir();
    let sink = FakeSink::new();
    let slow = window((200, 0, 0.5), (2000, 0, 0.002));
    let c = controller(sink.clone(), script(vec![healthy()], slow), &dir).await;
    c.start_canary("qotm", request(&[5, 50, 100]))
        .await
        .unwrap();
    let s = wait_for(&c, |s| s.state.phase.is_final()).await;
    assert_eq!(s.state.phase, Phase::RolledBack, "{}", s.state.message);
    assert_eq!(s.state.failures, 2);
    assert!(s.state.message.contains("p99"), "{}", s.state.message);
    assert_eq!(sink.weights()["v2"], 0);
    assert_eq!(sink.weights()["v1"], 100);
    assert_eq!(
        audit_decisions(&dir),
        ["start", "advance", "check-failed", "rollback"]
    );
}

#[tokio::test]
async fn no_traffic_halts_and_never_promotes() {
    let dir = temp_dir();
    let sink = FakeSink::new();
    let c = controller(sink.clone(), script(vec![], empty()), &dir).await;
    c.start_canary("qotm", request(&[5, 100])).await.unwrap();
    let s = wait_for(&c, |s| s.state.phase == Phase::Halted).await;
    assert_eq!(s.state.step, 0);
    assert_eq!(s.state.inconclusive, 3);
    assert!(
        s.state.message.contains("inconclusive"),
        "{}",
        s.state.message
    );
    assert_eq!(sink.weights()["v2"], 5, "weights stay");
    // Halted holds the service; resume starts counting again.
    let e = c
        .start_canary("qotm", request(&[5, 100]))
        .await
        .unwrap_err();
    assert!(matches!(e, CanaryError::Conflict(_)), "{e}");
    let s = c.command("qotm", Command::Resume).await.unwrap();
    assert_eq!(
        (s.state.phase, s.state.inconclusive),
        (Phase::Progressing, 0)
    );
    let s = c.command("qotm", Command::Abort).await.unwrap();
    assert_eq!(s.state.phase, Phase::RolledBack);
    assert_eq!(sink.weights()["v2"], 0);
    let e = c.command("qotm", Command::Promote).await.unwrap_err();
    assert!(matches!(e, CanaryError::Conflict(_)), "{e}");
}

#[tokio::test]
async fn a_restart_resumes_at_the_same_step_and_weights() {
    let dir = temp_dir();
    let sink = FakeSink::new();
    let first = controller(sink.clone(), script(vec![healthy()], empty()), &dir).await;
    let mut req = request(&[5, 25, 50, 100]);
    req.options.inconclusive_limit = Some(1000);
    first.start_canary("qotm", req).await.unwrap();
    wait_for(&first, |s| s.state.step == 1 && s.state.inconclusive >= 1).await;
    first.stop();

    // A new process: the proxy's weights may be anything; the canary's win.
    let sink = FakeSink::new();
    let second = controller(sink.clone(), script(vec![], healthy()), &dir).await;
    let s = second.status("qotm").unwrap();
    assert_eq!((s.state.phase, s.state.step), (Phase::Progressing, 1));
    assert_eq!(sink.weights()["v2"], 25);
    assert_eq!(sink.weights()["v1"], 75);
    let s = wait_for(&second, |s| s.state.phase.is_final()).await;
    assert_eq!(s.state.phase, Phase::Promoted, "{}", s.state.message);
    assert!(audit_decisions(&dir).contains(&"restart".to_string()));
}

#[tokio::test]
async fn pause_resume_promote_and_bad_requests() {
    let dir = temp_dir();
    let sink = FakeSink::new();
    let c = controller(sink.clone(), script(vec![], healthy()), &dir).await;
    let mut req = request(&[5, 25, 50, 100]);
    req.options.interval = Some(Duration::from_secs(60));
    c.start_canary("qotm", req.clone()).await.unwrap();
    let s = c.command("qotm", Command::Pause).await.unwrap();
    assert_eq!(s.state.phase, Phase::Paused);
    assert!(matches!(
        c.command("qotm", Command::Pause).await,
        Err(CanaryError::Conflict(_))
    ));
    c.command("qotm", Command::Resume).await.unwrap();
    let s = c.command("qotm", Command::Promote).await.unwrap();
    assert_eq!(s.state.phase, Phase::Promoted);
    assert_eq!(sink.weights()["v2"], 100);

    // After a finished canary a new one may start; v3 shares no rule.
    let mut bad = req.clone();
    bad.to = "v3".into();
    assert!(matches!(
        c.start_canary("qotm", bad).await,
        Err(CanaryError::Routing(_))
    ));
    let mut bad = req.clone();
    bad.to = "v9".into();
    assert!(matches!(
        c.start_canary("qotm", bad).await,
        Err(CanaryError::UnknownVersion { .. })
    ));
    assert!(matches!(
        c.start_canary("nope", req.clone()).await,
        Err(CanaryError::UnknownService(_))
    ));
    assert!(matches!(
        c.command("nope", Command::Abort).await,
        Err(CanaryError::NoCanary(_))
    ));
}

#[tokio::test]
async fn a_header_step_comes_before_the_weights() {
    let dir = temp_dir();
    let sink = FakeSink::new();
    let c = controller(sink.clone(), script(vec![empty()], healthy()), &dir).await;
    let mut req = request(&[50, 100]);
    req.options.header_step = Some("X-Canary=always".into());
    let s = c.start_canary("qotm", req).await.unwrap();
    assert!(s.state.match_step);
    assert_eq!(s.step_label, "header step (x-canary: always)");
    assert_eq!(sink.weights()["v2"], 0, "only matching requests reach v2");
    assert_eq!(
        sink.matching
            .lock()
            .unwrap()
            .as_ref()
            .map(|m| m.name.clone()),
        Some("x-canary".into())
    );
    let s = wait_for(&c, |s| s.state.phase.is_final()).await;
    assert_eq!(s.state.phase, Phase::Promoted, "{}", s.state.message);
    assert!(!s.state.match_step);
    assert!(
        sink.matching.lock().unwrap().is_none(),
        "the header rules are gone"
    );
    assert_eq!(sink.weights()["v2"], 100);
    assert_eq!(
        audit_decisions(&dir),
        ["start", "inconclusive", "advance", "advance", "promote"]
    );
}

#[tokio::test]
async fn a_mirror_step_comes_first_and_passes_to_the_weights() {
    let dir = temp_dir();
    let sink = FakeSink::new();
    let source = script(vec![], healthy());
    source
        .shadows
        .lock()
        .unwrap()
        .push_back(crate::analysis::ShadowFigures::new("v2", 20.0, 3, 0, 0, 0));
    let c = controller(sink.clone(), source, &dir).await;
    let mut req = request(&[50, 100]);
    req.options.mirror_step = Some(20.0);
    req.options.header_step = Some("X-Canary=always".into());
    let s = c.start_canary("qotm", req).await.unwrap();
    assert!(s.state.mirror_step && !s.state.match_step);
    assert_eq!(s.step_label, "mirror step (20% shadowed)");
    assert_eq!(sink.weights()["v2"], 0, "no live traffic to v2");
    assert_eq!(*sink.mirror.lock().unwrap(), Some(20.0));
    let s = wait_for(&c, |s| s.state.phase.is_final()).await;
    assert_eq!(s.state.phase, Phase::Promoted, "{}", s.state.message);
    assert!(sink.mirror.lock().unwrap().is_none(), "the mirror is gone");
    assert!(
        sink.weights_while_mirroring
            .lock()
            .unwrap()
            .iter()
            .all(|w| *w == 0)
    );
    assert_eq!(
        audit_decisions(&dir),
        [
            "start",
            "inconclusive",
            "advance",
            "advance",
            "advance",
            "promote"
        ]
    );
}

#[tokio::test]
async fn a_mirror_step_whose_shadows_differ_rolls_back_without_live_traffic() {
    let dir = temp_dir();
    let sink = FakeSink::new();
    let source = script(vec![], healthy());
    for _ in 0..2 {
        source
            .shadows
            .lock()
            .unwrap()
            .push_back(crate::analysis::ShadowFigures::new(
                "v2", 20.0, 100, 100, 0, 0,
            ));
    }
    let c = controller(sink.clone(), source, &dir).await;
    let mut req = request(&[50, 100]);
    req.options.mirror_step = Some(20.0);
    c.start_canary("qotm", req).await.unwrap();
    let s = wait_for(&c, |s| s.state.phase.is_final()).await;
    assert_eq!(s.state.phase, Phase::RolledBack, "{}", s.state.message);
    assert!(
        s.state.message.contains("mirror step (20% shadowed)"),
        "{}",
        s.state.message
    );
    let shadow = s.state.last_analysis.and_then(|a| a.shadow).unwrap();
    assert_eq!((shadow.answers, shadow.different), (200, 100));
    assert!(sink.mirror.lock().unwrap().is_none(), "the mirror is gone");
    assert_eq!(sink.weights()["v2"], 0);
    assert_eq!(audit_decisions(&dir), ["start", "check-failed", "rollback"]);
}

#[tokio::test]
async fn a_restart_in_the_mirror_step_sets_the_mirror_again() {
    let dir = temp_dir();
    let sink = FakeSink::new();
    let c = controller(sink.clone(), script(vec![], healthy()), &dir).await;
    let mut req = request(&[50, 100]);
    req.options.mirror_step = Some(20.0);
    req.options.interval = Some(Duration::from_secs(60));
    c.start_canary("qotm", req).await.unwrap();
    c.stop();
    // A new process: the proxy forgot the mirror (it is not in its state
    // file), the canary's state file brings it back.
    let sink = FakeSink::new();
    let c = controller(sink.clone(), script(vec![], healthy()), &dir).await;
    let s = c.status("qotm").unwrap();
    assert!(s.state.mirror_step, "{}", s.state.message);
    assert_eq!(s.step_label, "mirror step (20% shadowed)");
    assert_eq!(*sink.mirror.lock().unwrap(), Some(20.0));
    assert_eq!(sink.weights()["v2"], 0);
    c.stop();
}

/// The CLI reads the admin API's JSON back as [`Status`]: nothing is lost
/// or renamed on the way, mid-window (with an analysis) and at the end.
#[tokio::test]
async fn a_status_reads_back_as_the_struct_it_was_written_from() {
    let dir = temp_dir();
    let c = controller(FakeSink::new(), script(vec![], healthy()), &dir).await;
    c.start_canary("qotm", request(&[5, 50, 100]))
        .await
        .unwrap();
    let mid = wait_for(&c, |s| {
        s.state.last_analysis.is_some() && s.window_ends_at.is_some()
    })
    .await;
    let end = wait_for(&c, |s| s.state.phase.is_final()).await;
    for s in [mid, end] {
        let written = serde_json::to_value(&s).unwrap();
        let read: Status =
            serde_json::from_value(written.clone()).unwrap_or_else(|e| panic!("{e}: {written:#}"));
        assert_eq!(serde_json::to_value(&read).unwrap(), written);
        assert_eq!(read.state.phase, s.state.phase);
        assert_eq!(read.step_label, s.step_label);
    }
    let list = crate::api::CanaryList { canaries: c.list() };
    let written = serde_json::to_value(&list).unwrap();
    let read: crate::api::CanaryList = serde_json::from_value(written.clone()).unwrap();
    assert_eq!(serde_json::to_value(&read).unwrap(), written);
}

#[tokio::test]
async fn a_check_of_ones_own_rolls_back_what_the_built_in_ones_pass() {
    let dir = temp_dir();
    let sink = FakeSink::new();
    // No 5xx, fast: healthy by the built-in checks; 10% 404s.
    let mut f = healthy();
    f.canary = f.canary.with_client_errors(20);
    let c = controller(sink.clone(), script(vec![], f), &dir).await;
    let mut r = request(&[5, 50, 100]);
    r.options.checks = vec![
        serin_config::stack::canary_check::parse_check_flag("not-found=figure:errorShare4xx;max=0")
            .unwrap(),
    ];
    let s = c.start_canary("qotm", r).await.unwrap();
    let names: Vec<&str> = s
        .state
        .settings
        .checks
        .iter()
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(
        names,
        ["requests", "error-rate", "latency-ratio", "not-found"]
    );
    let s = wait_for(&c, |s| s.state.phase.is_final()).await;
    assert_eq!(s.state.phase, Phase::RolledBack, "{}", s.state.message);
    assert!(
        s.state.message.contains("4xx share 10.00%"),
        "{}",
        s.state.message
    );
    let a = s.state.last_analysis.unwrap();
    let verdicts: Vec<(&str, CheckVerdict)> = a
        .checks
        .iter()
        .map(|r| (r.name.as_str(), r.verdict))
        .collect();
    assert_eq!(
        verdicts,
        [
            ("requests", CheckVerdict::Pass),
            ("error-rate", CheckVerdict::Pass),
            ("latency-ratio", CheckVerdict::Pass),
            ("not-found", CheckVerdict::Fail)
        ]
    );
    assert_eq!(a.checks[3].value, Some(0.1));
    // The audit log has each check of each decision.
    let text = std::fs::read_to_string(dir.join("stack.canary-audit.jsonl")).unwrap();
    let last: serde_json::Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
    assert_eq!(last["decision"], "rollback");
    assert_eq!(last["figures"]["checks"][3]["name"], "not-found");
    assert_eq!(last["figures"]["checks"][3]["verdict"], "fail");
    assert_eq!(last["figures"]["checks"][3]["max"], 0.0);
}

#[tokio::test]
async fn a_promql_check_without_prometheus_is_refused_and_changes_nothing() {
    let dir = temp_dir();
    let sink = FakeSink::new();
    let c = controller(sink.clone(), script(vec![], healthy()), &dir).await;
    let mut r = request(&[5, 100]);
    r.options.checks = vec![
        serin_config::stack::canary_check::parse_check_flag("q=promql:vector(1);max=0").unwrap(),
    ];
    let e = c.start_canary("qotm", r).await.unwrap_err().to_string();
    assert!(e.contains("`q`: a PromQL check needs a Prometheus"), "{e}");
    assert_eq!(sink.weights()["v2"], 10, "weights untouched");
    assert!(c.status("qotm").is_err());
}

#[tokio::test]
async fn a_state_saved_before_checks_resumes_with_the_built_in_ones() {
    let dir = temp_dir();
    let sink = FakeSink::new();
    {
        let c = controller(sink.clone(), script(vec![], empty()), &dir).await;
        c.start_canary("qotm", request(&[5, 100])).await.unwrap();
        c.stop();
    }
    // Take `checks` out of the saved settings, as an older serin wrote them.
    let path = dir.join("stack.canary.json");
    let mut saved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let settings = &mut saved["canaries"]["qotm"]["settings"];
    settings.as_object_mut().unwrap().remove("checks");
    settings["max_error_rate"] = serde_json::json!(0.2);
    std::fs::write(&path, saved.to_string()).unwrap();
    let c = controller(sink, script(vec![], healthy()), &dir).await;
    let s = c.status("qotm").unwrap();
    assert_eq!(s.state.settings.checks.len(), 3);
    assert_eq!(s.state.settings.checks[1].max, Some(0.2));
    c.stop();
}
