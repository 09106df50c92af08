//! `serin tap`: follows a running serin's `GET /tap` and prints each
//! request as a line of text (or the JSON as it comes).

use std::io::Write;
use std::process::ExitCode;

use serde_json::Value;

use super::admin_client::AdminClient;
use crate::cli::TapArgs;

pub fn run(args: &TapArgs) -> anyhow::Result<ExitCode> {
    let client = AdminClient::new(&args.admin)?;
    let mut out = std::io::stdout().lock();
    client.stream_lines(&format!("/tap?{}", query(args)), |line| {
        let Ok(item) = serde_json::from_str::<Value>(line) else {
            return;
        };
        let text = match item["kind"].as_str() {
            Some("tapping") => {
                eprintln!("tapping {} (Ctrl-C to stop)", args.admin.admin);
                return;
            }
            _ if args.json => line.to_string(),
            Some("request") => request_line(&item),
            Some("dropped") => format!(
                "… {} requests not shown (over --rate, or behind)",
                item["count"]
            ),
            _ => return,
        };
        // A closed pipe (`serin tap | head`) ends the stream quietly.
        if writeln!(out, "{text}").and_then(|()| out.flush()).is_err() {
            std::process::exit(0);
        }
    })?;
    Ok(ExitCode::SUCCESS)
}

fn query(args: &TapArgs) -> String {
    let mut q = form_urlencoded::Serializer::new(String::new());
    let pairs = [
        ("route", &args.route),
        ("service", &args.service),
        ("version", &args.version),
        ("status", &args.status),
        ("path_prefix", &args.path_prefix),
    ];
    for (key, value) in pairs {
        if let Some(v) = value {
            q.append_pair(key, v);
        }
    }
    if let Some(rate) = args.rate {
        q.append_pair("rate", &rate.to_string());
    }
    q.finish()
}

/// `12:40:01.123 GET /api/x 200 3.2ms route=api backend=app/v1 endpoint=… retries=0 trace=…`
fn request_line(e: &Value) -> String {
    let text = |k: &str| e[k].as_str().unwrap_or("-").to_string();
    let time = e["unix_ms"]
        .as_u64()
        .map(|ms| {
            let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms);
            humantime::format_rfc3339_millis(t).to_string()
        })
        .unwrap_or_default();
    let backend = match (e["service"].as_str(), e["version"].as_str()) {
        (Some(s), Some(v)) => format!("{s}/{v}"),
        _ => "-".into(),
    };
    format!(
        "{time} {} {} {} {:.1}ms route={} backend={backend} endpoint={} retries={} trace={}",
        text("method"),
        text("path"),
        e["status"],
        e["latency_ms"].as_f64().unwrap_or(0.0),
        text("route"),
        text("endpoint"),
        e["retries"],
        text("trace_id"),
    )
}
