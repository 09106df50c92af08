//! `serin ps`, `scale`, `restart`, `logs`, `apply`: control of a running
//! `serin up` through its admin API.

use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, bail};
use serde_json::{Value, json};

use super::admin_client::AdminClient;
use crate::cli::AdminTarget;

/// `SERVICE/VERSION`, or `SERVICE` when the running stack gives it exactly
/// one version.
fn target(client: &AdminClient, target: &str) -> anyhow::Result<(String, String)> {
    if let Some((s, v)) = target.split_once('/') {
        return Ok((s.to_string(), v.to_string()));
    }
    let ps = client.get("/runtime/ps")?;
    let mut versions: Vec<String> = ps
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| r["service"] == target)
        .filter_map(|r| r["version"].as_str().map(str::to_string))
        .collect();
    versions.sort();
    versions.dedup();
    match versions.as_slice() {
        [one] => Ok((target.to_string(), one.clone())),
        [] => bail!("no replicas of a service named `{target}`; name it as SERVICE/VERSION"),
        many => bail!(
            "service `{target}` has versions {}: name one as {target}/VERSION",
            many.join(", ")
        ),
    }
}

pub fn ps(admin: &AdminTarget, raw: bool) -> anyhow::Result<ExitCode> {
    let client = AdminClient::new(admin)?;
    let ps = client.get("/runtime/ps")?;
    if raw {
        println!("{}", serde_json::to_string_pretty(&ps)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<22} {:<8} {:<17} {:<6} {:>8} {:>7} {:>6} {:>8}",
        "NAME", "VERSION", "STATE", "READY", "RESTARTS", "AGE", "PORT", "PID"
    );
    for r in ps.as_array().into_iter().flatten() {
        let pid = r["pid"].as_u64().map_or("-".to_string(), |p| p.to_string());
        println!(
            "{:<22} {:<8} {:<17} {:<6} {:>8} {:>7} {:>6} {:>8}",
            r["name"].as_str().unwrap_or("?"),
            r["version"].as_str().unwrap_or("?"),
            r["state"].as_str().unwrap_or("?"),
            if r["ready"].as_bool() == Some(true) {
                "1/1"
            } else {
                "0/1"
            },
            r["restarts"].as_u64().unwrap_or(0),
            age(r["age_secs"].as_u64().unwrap_or(0)),
            r["port"].as_u64().unwrap_or(0),
            pid,
        );
    }
    print_builds(&client.get("/runtime/builds")?);
    Ok(ExitCode::SUCCESS)
}

/// The last build of each watched service (`serin up --watch`), when there
/// was one.
fn print_builds(builds: &Value) {
    let builds = builds.as_array().map(Vec::as_slice).unwrap_or_default();
    if builds.is_empty() {
        return;
    }
    println!("\n{:<22} {:<10} {:>6}  MESSAGE", "BUILD", "STATE", "BUILDS");
    for b in builds {
        let message = b["message"]
            .as_str()
            .or_else(|| b["command"].as_str())
            .unwrap_or("");
        println!(
            "{:<22} {:<10} {:>6}  {message}",
            b["service"].as_str().unwrap_or("?"),
            b["state"].as_str().unwrap_or("?"),
            b["builds"].as_u64().unwrap_or(0),
        );
    }
}

/// Ages as kubectl shows them: 45s, 3m12s, 2h5m, 3d4h.
fn age(secs: u64) -> String {
    match secs {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m{}s", s / 60, s % 60),
        s if s < 86_400 => format!("{}h{}m", s / 3600, (s % 3600) / 60),
        s => format!("{}d{}h", s / 86_400, (s % 86_400) / 3600),
    }
}

pub fn scale(
    admin: &AdminTarget,
    what: &str,
    replicas: u32,
    wait: bool,
) -> anyhow::Result<ExitCode> {
    let client = AdminClient::new(admin)?;
    let (service, version) = target(&client, what)?;
    client.post(
        "/runtime/scale",
        &json!({"service": service, "version": version, "replicas": replicas, "wait": wait}),
    )?;
    println!("{service}/{version} scaled to {replicas}");
    Ok(ExitCode::SUCCESS)
}

pub fn restart(admin: &AdminTarget, what: &str, wait: bool) -> anyhow::Result<ExitCode> {
    let client = AdminClient::new(admin)?;
    let (service, version) = target(&client, what)?;
    client.post(
        "/runtime/restart",
        &json!({"service": service, "version": version, "wait": wait}),
    )?;
    println!(
        "{service}/{version} restarting{}",
        if wait {
            ": rollout complete"
        } else {
            " (rolling)"
        }
    );
    Ok(ExitCode::SUCCESS)
}

pub fn logs(
    admin: &AdminTarget,
    what: Option<&str>,
    follow: bool,
    tail: usize,
) -> anyhow::Result<ExitCode> {
    let client = AdminClient::new(admin)?;
    let mut query = format!("/runtime/logs?tail={tail}&follow={follow}&format=text");
    if let Some(t) = what {
        match t.split_once('/') {
            Some((s, v)) => query.push_str(&format!("&service={s}&version={v}")),
            None => query.push_str(&format!("&service={t}")),
        }
    }
    client.stream_lines(&query, |line| println!("{line}"))?;
    Ok(ExitCode::SUCCESS)
}

pub fn apply(admin: &AdminTarget, stack: Option<&Path>) -> anyhow::Result<ExitCode> {
    let client = AdminClient::new(admin)?;
    let body = match stack {
        Some(p) => {
            let text = std::fs::read_to_string(p)
                .with_context(|| format!("cannot read {}", p.display()))?;
            // The file's own name in errors, and its folder for relative
            // paths, as `serin up FILE` would have them.
            let path = std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
            json!({ "stack": text, "path": path })
        }
        None => json!({}),
    };
    let result = client.post("/apply", &body)?;
    let summary = &result["summary"];
    for key in ["added", "removed", "rolled", "scaled", "unchanged"] {
        let items: Vec<&str> = summary[key]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        if !items.is_empty() {
            println!("{key:<10} {}", items.join(", "));
        }
    }
    Ok(ExitCode::SUCCESS)
}
