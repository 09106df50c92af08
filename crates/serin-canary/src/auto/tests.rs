//! Table tests of the automatic canary's pure decisions.

use super::*;

/// qotm with one version `v1` running `args`, from a real stack file.
fn spec(args: &str) -> VersionSpec {
    stack(args).services[0].versions[0].clone()
}

fn stack(args: &str) -> Stack {
    let text = format!(
        "services:\n  - name: qotm\n    command: serin-demo\n    canary: {{auto: true}}\n    \
         versions:\n      - {{name: v1, replicas: 2, args: [{args}]}}\n"
    );
    serin_config::stack::parse_stack_file(&text, "t.yaml", std::path::Path::new("."))
        .unwrap_or_else(|e| panic!("{e}"))
        .stack
}

/// (baseline, incoming, held, expected).
type Row<'a> = (
    &'a VersionSpec,
    &'a VersionSpec,
    Option<(Stage, &'a VersionSpec)>,
    Revision,
);

#[test]
fn what_an_apply_means_for_a_version() {
    let (a, b, c) = (spec("qotm, a"), spec("qotm, b"), spec("qotm, c"));
    let mut a3 = a.clone();
    a3.replicas = 3;
    use Revision::*;
    use Stage::*;
    // (baseline, incoming, held, expected)
    let table: &[Row] = &[
        (&a, &a, None, Unchanged),
        (&a, &a3, None, Unchanged),
        (&a, &b, None, Start),
        (&a, &b, Some((Judging, &b)), Same),
        (&a, &c, Some((Judging, &b)), Restart),
        (&a, &a, Some((Judging, &b)), Reverted),
        (&a, &b, Some((Promoting, &b)), Same),
        (&a, &c, Some((Promoting, &b)), Busy),
        (&a, &a, Some((Promoting, &b)), Busy),
        (&a, &b, Some((RolledBack, &b)), Same),
        (&a, &a, Some((RolledBack, &b)), Unchanged),
        (&a, &c, Some((RolledBack, &b)), Start),
    ];
    for (i, (baseline, incoming, held, expected)) in table.iter().enumerate() {
        assert_eq!(
            classify(baseline, incoming, *held),
            *expected,
            "row {i}: {:?} → {:?} held {:?}",
            baseline.args,
            incoming.args,
            held.map(|(s, c)| (s, c.args.clone()))
        );
    }
}

#[test]
fn the_runtime_runs_the_baseline_and_the_candidate_beside_it() {
    let file = stack("qotm, b");
    let held = |stage| Held {
        service: "qotm".into(),
        version: "v1".into(),
        stage,
        baseline: spec("qotm, a"),
        candidate: spec("qotm, b"),
    };
    let args = |s: &Stack| -> Vec<(String, String, u32)> {
        s.services[0]
            .versions
            .iter()
            .map(|v| (v.name.clone(), v.args.join(" "), v.replicas))
            .collect()
    };
    let row = |n: &str, a: &str| (n.to_string(), a.to_string(), 2);
    assert_eq!(
        args(&effective_stack(&file, &[held(Stage::Judging)])),
        [row("v1", "qotm a"), row("v1-canary", "qotm b")]
    );
    assert_eq!(
        args(&effective_stack(&file, &[held(Stage::Promoting)])),
        [row("v1", "qotm b"), row("v1-canary", "qotm b")]
    );
    assert_eq!(
        args(&effective_stack(&file, &[held(Stage::RolledBack)])),
        [row("v1", "qotm a")]
    );
    assert_eq!(args(&effective_stack(&file, &[])), [row("v1", "qotm b")]);
}

/// qotm's `v1` held at `stage`, revision `a` against `b`.
fn held(stage: Stage) -> Held {
    Held {
        service: "qotm".into(),
        version: "v1".into(),
        stage,
        baseline: spec("a"),
        candidate: spec("b"),
    }
}

#[test]
fn the_gateway_holds_the_canary_version_at_weight_0_beside_the_baseline() {
    let text = "gateway:\n  routes:\n    - name: qotm\n      rules:\n        - backendRefs: [{name: qotm}]\n\
                services:\n  - name: qotm\n    command: serin-demo\n    canary: {auto: true}\n";
    let mut gw = serin_config::stack::parse_stack_file(text, "t.yaml", std::path::Path::new("."))
        .unwrap_or_else(|e| panic!("{e}"))
        .gateway;
    let mut rolled_back = gw.clone();
    effective_gateway(&mut rolled_back, &[held(Stage::RolledBack)]);
    assert_eq!(rolled_back.routes[0].rules[0].backends.len(), 1);
    effective_gateway(&mut gw, &[held(Stage::Judging)]);
    // Twice changes nothing more.
    effective_gateway(&mut gw, &[held(Stage::Judging)]);
    let refs: Vec<(String, u32)> = gw.routes[0].rules[0]
        .backends
        .iter()
        .map(|b| (b.key(), b.weight))
        .collect();
    assert_eq!(
        refs,
        [
            ("qotm/v1".to_string(), 1),
            ("qotm/v1-canary".to_string(), 0)
        ]
    );
    let versions: Vec<&str> = gw.services[0]
        .versions
        .iter()
        .map(|v| v.name.as_str())
        .collect();
    assert_eq!(versions, ["v1", "v1-canary"]);
}

#[test]
fn a_sidecars_route_to_the_service_holds_the_canary_version_too() {
    let text = "services:\n  - name: web\n    command: serin-demo\n    \
                sidecar: {outbound: [{name: qotm, env: QOTM_URL}, {name: other, env: OTHER_URL}]}\n  \
                - name: qotm\n    command: serin-demo\n    canary: {auto: true}\n  \
                - name: other\n    command: serin-demo\n";
    let file = serin_config::stack::parse_stack_file(text, "t.yaml", std::path::Path::new("."))
        .unwrap_or_else(|e| panic!("{e}"));
    let refs = |routes: &[RouteConfig]| -> Vec<(String, Vec<(String, u32)>)> {
        routes
            .iter()
            .map(|r| {
                let backends = r.rules[0]
                    .backends
                    .iter()
                    .map(|b| (b.key(), b.weight))
                    .collect();
                (r.name.clone(), backends)
            })
            .collect()
    };
    let plain = refs(&file.mesh);
    let mut rolled_back = file.mesh.clone();
    effective_routes(&mut rolled_back, &[held(Stage::RolledBack)]);
    assert_eq!(
        refs(&rolled_back),
        plain,
        "a rolled-back revision adds nothing"
    );
    for stage in [Stage::Judging, Stage::Promoting] {
        let mut mesh = file.mesh.clone();
        effective_routes(&mut mesh, &[held(stage)]);
        effective_routes(&mut mesh, &[held(stage)]);
        assert_eq!(
            refs(&mesh),
            [
                (
                    "web>qotm".to_string(),
                    vec![
                        ("qotm/v1".to_string(), 1),
                        ("qotm/v1-canary".to_string(), 0)
                    ]
                ),
                ("web>other".to_string(), vec![("other/v1".to_string(), 1)]),
            ],
            "{stage:?}: the route to qotm holds its canary once, the other is as it was"
        );
    }
}
