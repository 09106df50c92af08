//! The canary reaches the proxy, the runtime and the cluster only through
//! its own traits (`WeightSink`, `MetricsSource`, `StateBackend`): their
//! adapters live in the binary (crates/serin, `cmd/canary_proxy`,
//! `cmd/canary_kube.rs`). This test fails if this crate's manifest names
//! one of those crates again (issue #12, point 6).

/// The crates of a sink, a source or a data plane.
const FORBIDDEN: [&str; 4] = [
    "serin-proxy",
    "serin-discovery",
    "serin-runtime",
    "serin-kube",
];

/// The dependencies a manifest names, in every dependency table
/// (`[dependencies]`, `[dev-dependencies]`, `[target.'…'.dependencies]`,
/// `[dependencies.NAME]`), by their key (`name = …`, `name.workspace = …`).
fn dependencies(manifest: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut in_table = false;
    for line in manifest.lines().map(str::trim) {
        if let Some(header) = line.strip_prefix('[') {
            let header = header.trim_end_matches(']');
            in_table = header.ends_with("dependencies");
            // `[dependencies.NAME]`: one dependency as its own table.
            if let Some((table, name)) = header.rsplit_once('.')
                && table.ends_with("dependencies")
            {
                out.push(name.trim().to_string());
            }
            continue;
        }
        if !in_table || line.starts_with('#') || line.is_empty() {
            continue;
        }
        let key = line.split(['=', '.']).next().unwrap_or("").trim();
        out.push(key.trim_matches('"').to_string());
    }
    out
}

#[test]
fn the_canary_crate_depends_on_no_data_plane() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml");
    let manifest = std::fs::read_to_string(path).unwrap();
    let deps = dependencies(&manifest);
    assert!(
        deps.contains(&"serin-config".to_string()),
        "{path} read as {deps:?}"
    );
    let found: Vec<&String> = deps
        .iter()
        .filter(|d| FORBIDDEN.contains(&d.as_str()))
        .collect();
    assert!(
        found.is_empty(),
        "{path} depends on {found:?}: the canary must reach them through its traits, \
         with the adapters in crates/serin (all its dependencies: {deps:?})"
    );
}

#[test]
fn every_way_of_naming_a_dependency_is_seen() {
    let manifest = r#"
[package]
name = "x"
serin-proxy = "not a dependency"

[dependencies]
serin-proxy.workspace = true
"serin-kube" = { path = "../serin-kube" }

[target.'cfg(unix)'.dependencies]
serin-runtime = "1"

[dev-dependencies.serin-discovery]
path = "../serin-discovery"
"#;
    assert_eq!(
        dependencies(manifest),
        [
            "serin-proxy",
            "serin-kube",
            "serin-runtime",
            "serin-discovery"
        ]
    );
}
