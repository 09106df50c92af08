//! `serin canary`: start, watch and steer canary releases in a running
//! serin, through its admin API. The canary itself runs inside that serin
//! (crates/serin-canary), so closing this terminal changes nothing.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use clap::{Args, Subcommand};
use serde_json::{Value, json};

use super::admin_client::AdminClient;
use crate::cli::AdminTarget;

/// `println!` that ignores a closed stdout (`serin canary status | head`).
macro_rules! out {
    () => {{
        let _ = writeln!(std::io::stdout());
    }};
    ($($arg:tt)*) => {{
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

/// Exit status of `--watch` when the canary was rolled back.
const EXIT_ROLLED_BACK: u8 = 2;
/// Exit status of `--watch` when the canary halted.
const EXIT_HALTED: u8 = 3;
/// How often `--watch` asks for the status.
const WATCH_POLL: Duration = Duration::from_millis(500);
/// How long `--watch` keeps trying while serin cannot be reached (e.g.
/// while it restarts).
const WATCH_UNREACHABLE_LIMIT: Duration = Duration::from_secs(60);

#[derive(Debug, Subcommand)]
pub enum CanaryCommand {
    /// Start a canary release of SERVICE: move traffic to the new version
    /// step by step, comparing it with the baseline at each step.
    ///
    /// At each step the weights of every route rule that holds both versions
    /// become canary STEP% / baseline (100-STEP)%. After one interval the
    /// window is judged: fewer than --min-requests canary requests is
    /// inconclusive (no advance; --inconclusive-limit of them in a row halt
    /// the canary); an error rate above --max-error-rate or a p99 more than
    /// --max-latency-ratio times the baseline's is a failed check (--failures
    /// of them roll back: all traffic to the baseline); otherwise the canary
    /// advances, and passing the last step promotes it (it takes all the
    /// traffic).
    ///
    /// Blue/green is `--steps 100`: all traffic switches to the new version,
    /// it is judged for one interval, and it stays (promoted) or everything
    /// goes back (rolled back).
    ///
    /// With --header-step (or --cookie-step), a first step sends only the
    /// requests carrying that header (or cookie) to the canary, everything
    /// else to the baseline, and judges it like any step before the weights
    /// move.
    ///
    /// Options not given come from the service's `canary:` section in the
    /// stack file, then from the defaults shown here. With --watch, exits 0
    /// when the canary is promoted, 2 when it is rolled back, 3 when it
    /// halts.
    Start(Box<StartArgs>),

    /// Show canaries: phase, step, weights, the last window's figures and,
    /// with Prometheus, the queries.
    Status {
        /// One service; none: every canary.
        service: Option<String>,
        /// Follow the canary until it ends, like `start --watch`.
        #[arg(long, requires = "service")]
        watch: bool,
        /// Print the raw JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        admin: AdminTarget,
    },

    /// Stop judging windows; the weights stay where they are.
    Pause {
        service: String,
        #[command(flatten)]
        admin: AdminTarget,
    },

    /// Go on with a paused or halted canary at its step; a new window
    /// starts.
    Resume {
        service: String,
        #[command(flatten)]
        admin: AdminTarget,
    },

    /// Give the canary all the traffic now, without further analysis.
    Promote {
        service: String,
        #[command(flatten)]
        admin: AdminTarget,
    },

    /// Roll back now: all traffic to the baseline.
    Abort {
        service: String,
        #[command(flatten)]
        admin: AdminTarget,
    },

    /// Run a canary in a Kubernetes cluster, in this process, until it is
    /// promoted (exit 0), rolled back (2) or halted (3): the same steps and
    /// checks as `start`, with the weights written to the HTTPRoute's
    /// backendRefs and the figures from Prometheus (--prometheus).
    ///
    /// The canary's state is kept in the HTTPRoute's annotation
    /// serin.io/canary-state: run the same command again after a restart
    /// and it resumes at the step it was at. Header, cookie and mirror
    /// steps need serin's own proxy and are not available here.
    Run(Box<super::canary_kube::RunArgs>),
}

#[derive(Debug, Args)]
pub struct StartArgs {
    #[command(flatten)]
    pub canary: CanaryArgs,

    /// Follow the canary until it ends: exit 0 when promoted, 2 when rolled
    /// back, 3 when halted.
    #[arg(long)]
    pub watch: bool,

    #[command(flatten)]
    pub admin: AdminTarget,
}

/// What a canary is and how it is judged: `start` and `run` alike.
#[derive(Debug, Args)]
pub struct CanaryArgs {
    /// The service, as named in the stack or config file.
    pub service: String,

    /// The new version (the canary).
    #[arg(long, value_name = "VERSION")]
    pub to: String,

    /// The version it replaces (the baseline); default: the one other
    /// version that shares route rules with the canary.
    #[arg(long, value_name = "VERSION")]
    pub from: Option<String>,

    /// The canary's weight at each step, in percent [default: 5,25,50,100].
    #[arg(long, value_name = "PERCENT,...", value_delimiter = ',')]
    pub steps: Option<Vec<u32>>,

    /// How long each step's window lasts [default: 30s].
    #[arg(long, value_name = "DURATION", value_parser = serin_config::parse_duration)]
    pub interval: Option<Duration>,

    /// The highest canary error rate (5xx) that passes, e.g. 1% or 0.01
    /// [default: 1%].
    #[arg(long, value_name = "RATE", value_parser = serin_config::stack::parse_rate)]
    pub max_error_rate: Option<f64>,

    /// The highest p99(canary) / p99(baseline) that passes [default: 1.5].
    #[arg(long, value_name = "RATIO")]
    pub max_latency_ratio: Option<f64>,

    /// p99s under this count as this much in the ratio, so that two fast
    /// versions are not told apart by noise [default: 10ms].
    #[arg(long, value_name = "DURATION", value_parser = serin_config::parse_duration)]
    pub latency_floor: Option<Duration>,

    /// Fewer canary requests in a window make it inconclusive [default: 50].
    #[arg(long, value_name = "N")]
    pub min_requests: Option<u64>,

    /// Failed checks that roll the canary back [default: 2].
    #[arg(long, value_name = "N")]
    pub failures: Option<u32>,

    /// Inconclusive windows in a row that halt the canary [default: 3].
    #[arg(long, value_name = "N")]
    pub inconclusive_limit: Option<u32>,

    /// Judge with PromQL over this Prometheus instead of serin's own
    /// counters, e.g. http://127.0.0.1:9090.
    #[arg(long, value_name = "URL")]
    pub prometheus: Option<String>,

    /// Replace a PromQL template: requests, error_rate or latency_p99;
    /// {{service}}, {{version}} and {{interval}} are filled in.
    #[arg(long = "query", value_name = "NAME=PROMQL", value_parser = parse_query)]
    pub queries: Vec<(String, String)>,

    /// First a step where only requests with this header reach the canary
    /// (weights stay at 0 until it passes), e.g. x-canary=always.
    #[arg(long, value_name = "NAME=VALUE", conflicts_with = "cookie_step")]
    pub header_step: Option<String>,

    /// The same with a cookie, e.g. canary=always.
    #[arg(long, value_name = "NAME=VALUE")]
    pub cookie_step: Option<String>,

    /// Before any live traffic (and before a header or cookie step), a step
    /// where the canary gets shadow copies of PERCENT of the baseline's
    /// requests and is judged by its shadow answers (those that differ from
    /// the baseline's or fail count against max-error-rate), e.g. 20.
    #[arg(long, value_name = "PERCENT")]
    pub mirror_step: Option<f64>,
}

fn parse_query(s: &str) -> Result<(String, String), String> {
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| format!("`{s}` is not NAME=PROMQL"))?;
    Ok((k.trim().to_string(), v.to_string()))
}

pub fn run(cmd: CanaryCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        CanaryCommand::Start(args) => start(*args),
        CanaryCommand::Status {
            service,
            watch: follow,
            json,
            admin,
        } => {
            let client = AdminClient::new(&admin)?;
            match service {
                Some(s) if follow => watch(&client, &s),
                Some(s) => {
                    let v = client.get(&format!("/canary/{s}"))?;
                    print_status(&v, json)?;
                    Ok(ExitCode::SUCCESS)
                }
                None => {
                    let v = client.get("/canary")?;
                    if json {
                        out!("{}", serde_json::to_string_pretty(&v)?);
                        return Ok(ExitCode::SUCCESS);
                    }
                    let all = v["canaries"].as_array().cloned().unwrap_or_default();
                    if all.is_empty() {
                        out!("no canaries");
                    }
                    for (i, c) in all.iter().enumerate() {
                        if i > 0 {
                            out!();
                        }
                        print_status(c, false)?;
                    }
                    Ok(ExitCode::SUCCESS)
                }
            }
        }
        CanaryCommand::Pause { service, admin } => act(&admin, &service, "pause"),
        CanaryCommand::Resume { service, admin } => act(&admin, &service, "resume"),
        CanaryCommand::Promote { service, admin } => act(&admin, &service, "promote"),
        CanaryCommand::Abort { service, admin } => act(&admin, &service, "abort"),
        CanaryCommand::Run(args) => super::canary_kube::run(*args),
    }
}

fn act(admin: &AdminTarget, service: &str, action: &str) -> anyhow::Result<ExitCode> {
    let client = AdminClient::new(admin)?;
    let v = client.post(&format!("/canary/{service}/{action}"), &json!({}))?;
    print_status(&v, false)?;
    Ok(ExitCode::SUCCESS)
}

/// The start request of a canary, as `POST /canary/{service}/start` takes
/// it (and [`serin_canary::StartRequest::from_json`] reads it).
pub(crate) fn start_body(args: &CanaryArgs) -> Value {
    let mut body = serde_json::Map::new();
    body.insert("to".into(), json!(args.to));
    if let Some(v) = &args.from {
        body.insert("from".into(), json!(v));
    }
    if let Some(v) = &args.steps {
        body.insert("steps".into(), json!(v));
    }
    if let Some(v) = args.interval {
        body.insert(
            "interval".into(),
            json!(humantime::format_duration(v).to_string()),
        );
    }
    if let Some(v) = args.max_error_rate {
        body.insert("max_error_rate".into(), json!(v));
    }
    if let Some(v) = args.max_latency_ratio {
        body.insert("max_latency_ratio".into(), json!(v));
    }
    if let Some(v) = args.latency_floor {
        body.insert(
            "latency_floor".into(),
            json!(humantime::format_duration(v).to_string()),
        );
    }
    if let Some(v) = args.min_requests {
        body.insert("min_requests".into(), json!(v));
    }
    if let Some(v) = args.failures {
        body.insert("failures".into(), json!(v));
    }
    if let Some(v) = args.inconclusive_limit {
        body.insert("inconclusive_limit".into(), json!(v));
    }
    if let Some(v) = &args.prometheus {
        body.insert("prometheus".into(), json!(v));
    }
    if let Some(v) = &args.header_step {
        body.insert("header_step".into(), json!(v));
    }
    if let Some(v) = &args.cookie_step {
        body.insert("cookie_step".into(), json!(v));
    }
    if let Some(v) = args.mirror_step {
        body.insert("mirror_step".into(), json!(v));
    }
    if !args.queries.is_empty() {
        let q: BTreeMap<&str, &str> = args
            .queries
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        body.insert("queries".into(), json!(q));
    }
    Value::Object(body)
}

fn start(args: StartArgs) -> anyhow::Result<ExitCode> {
    let body = start_body(&args.canary);
    let client = AdminClient::new(&args.admin)?;
    let service = &args.canary.service;
    let v = client.post(&format!("/canary/{service}/start"), &body)?;
    if args.watch {
        watch(&client, service)
    } else {
        print_status(&v, false)?;
        out!("\nfollow it with: serin canary status {service} --watch");
        Ok(ExitCode::SUCCESS)
    }
}

fn text<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key].as_str().unwrap_or("?")
}

/// `v1 75%, v2 25%`
fn weights(v: &Value) -> String {
    v["weights"]
        .as_object()
        .map(|w| {
            w.iter()
                .map(|(k, p)| format!("{k} {}%", p.as_u64().unwrap_or(0)))
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default()
}

/// `step 2/4 (25%)`, or `header step (x-canary: always)`.
fn step(v: &Value) -> String {
    if let Some(label) = v["step_label"].as_str() {
        return label.to_string();
    }
    let steps: Vec<u64> = v["settings"]["steps"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_u64).collect())
        .unwrap_or_default();
    let i = v["step"].as_u64().unwrap_or(0);
    format!(
        "step {}/{} ({}%)",
        i + 1,
        steps.len(),
        usize::try_from(i)
            .ok()
            .and_then(|i| steps.get(i))
            .copied()
            .unwrap_or(0)
    )
}

fn percent(x: &Value) -> String {
    x.as_f64()
        .map_or_else(|| "-".into(), |r| format!("{:.2}%", r * 100.0))
}

fn millis(x: &Value) -> String {
    x.as_f64()
        .map_or_else(|| "-".into(), |s| format!("{:.1}ms", s * 1000.0))
}

/// One version's figures: `v2 120 req, 0.00% errors, p99 3.1ms`.
fn figures(f: &Value) -> String {
    format!(
        "{} {} req, {} errors, p99 {}",
        text(f, "version"),
        f["requests"].as_u64().unwrap_or(0),
        percent(&f["error_rate"]),
        millis(&f["p99_seconds"])
    )
}

fn analysis_line(a: &Value) -> String {
    if let Some(sh) = a.get("shadow").filter(|s| !s.is_null()) {
        return format!(
            "{} in the mirror step ({}% shadowed) — {} shadow answers: {} compared, {} same, \
             {} different, {} without answer ({} not matching)",
            text(a, "verdict"),
            sh["percent"].as_f64().unwrap_or(0.0),
            text(sh, "version"),
            sh["answers"].as_u64().unwrap_or(0),
            sh["same"].as_u64().unwrap_or(0),
            sh["different"].as_u64().unwrap_or(0),
            sh["error"].as_u64().unwrap_or(0),
            percent(&sh["mismatch_rate"])
        );
    }
    let mut s = format!(
        "{} at {}% — {}; {}",
        text(a, "verdict"),
        a["canary_weight"].as_u64().unwrap_or(0),
        figures(&a["canary"]),
        figures(&a["baseline"])
    );
    if let Some(r) = a["latency_ratio"].as_f64() {
        s.push_str(&format!("; p99 ratio {r:.2}"));
    }
    s
}

fn print_status(v: &Value, json: bool) -> anyhow::Result<()> {
    if json {
        out!("{}", serde_json::to_string_pretty(v)?);
        return Ok(());
    }
    let s = &v["settings"];
    out!(
        "{}: {}  {} → {}  {}",
        text(v, "service"),
        text(v, "phase"),
        text(v, "baseline"),
        text(v, "canary"),
        step(v)
    );
    out!("  weights      {}", weights(v));
    let rules: Vec<String> = v["rules"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| {
            format!(
                "{} rule {}",
                text(r, "route"),
                r["rule"].as_u64().unwrap_or(0)
            )
        })
        .collect();
    out!("  routes       {}", rules.join(", "));
    out!(
        "  checks       failed {}/{}, inconclusive in a row {}/{}",
        v["failures"].as_u64().unwrap_or(0),
        s["failures"].as_u64().unwrap_or(0),
        v["inconclusive"].as_u64().unwrap_or(0),
        s["inconclusive_limit"].as_u64().unwrap_or(0)
    );
    let steps: Vec<String> = s["steps"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|x| x.to_string())
        .collect();
    out!(
        "  settings     steps {}, interval {}, max-error-rate {}, max-latency-ratio {}, \
         latency-floor {}, min-requests {}",
        steps.join(","),
        text(s, "interval"),
        percent(&s["max_error_rate"]),
        s["max_latency_ratio"],
        text(s, "latency_floor"),
        s["min_requests"]
    );
    if let Some(m) = s["mirror_step"].as_f64() {
        out!("  mirror step  {m}% of the baseline's requests shadowed (serin's own counters)");
    }
    match v["prometheus"].as_str() {
        Some(url) => out!("  source       prometheus {url}"),
        None => out!("  source       {}", text(v, "source")),
    }
    if let Some(a) = v.get("last_analysis").filter(|a| !a.is_null()) {
        out!("  last window  {}", analysis_line(a));
        for r in a["reasons"].as_array().into_iter().flatten() {
            out!("               {}", r.as_str().unwrap_or(""));
        }
    }
    if let Some(end) = v["window_ends_at"].as_str() {
        out!("  next check   {end}");
    }
    out!("  message      {}", text(v, "message"));
    if let Some(q) = v["queries"].as_object() {
        out!("  queries");
        for (name, q) in q {
            out!("    {name:<12} {}", text(q, "template"));
        }
    }
    if let Some(a) = v["audit_log"].as_str() {
        out!("  audit log    {a}");
    }
    Ok(())
}

/// A plain line for a decision: `12:00:01 qotm Progressing step 2/4 (25%): MESSAGE`.
fn line_of(v: &Value) -> String {
    let time = v["updated_at"]
        .as_str()
        .and_then(|t| t.get(11..19))
        .unwrap_or("");
    format!(
        "{time} {} {} {} [{}]: {}",
        text(v, "service"),
        text(v, "phase"),
        step(v),
        weights(v),
        text(v, "message")
    )
}

fn seconds_until(rfc3339: &str) -> Option<f64> {
    let at = humantime::parse_rfc3339_weak(rfc3339).ok()?;
    Some(
        at.duration_since(SystemTime::now())
            .map_or(0.0, |d| d.as_secs_f64()),
    )
}

/// The live line of a terminal: a bar of the canary's weight, the step and
/// the window's countdown.
fn bar_line(v: &Value) -> String {
    const WIDTH: usize = 24;
    let canary = text(v, "canary");
    let weight = v["weights"][canary].as_u64().unwrap_or(0);
    let filled = usize::try_from(weight).unwrap_or(0) * WIDTH / 100;
    let bar: String = "█".repeat(filled) + &"░".repeat(WIDTH - filled.min(WIDTH));
    let window = v["window_ends_at"]
        .as_str()
        .and_then(seconds_until)
        .map(|s| format!("  next check in {s:.0}s"))
        .unwrap_or_default();
    let last = v
        .get("last_analysis")
        .filter(|a| !a.is_null())
        .map(|a| format!("  last: {}", text(a, "verdict")))
        .unwrap_or_default();
    format!(
        "{} {} → {} [{bar}] {weight:>3}%  {}  {}{window}{last}",
        text(v, "service"),
        text(v, "baseline"),
        canary,
        step(v),
        text(v, "phase"),
    )
}

/// Follows a canary until it is promoted (exit 0), rolled back (2) or
/// halted (3). In a terminal a live bar is redrawn and each decision is
/// printed above it; otherwise each decision is one plain line.
fn watch(client: &AdminClient, service: &str) -> anyhow::Result<ExitCode> {
    follow(|| client.get(&format!("/canary/{service}")))
}

/// [`watch`] with the status from `status` (a call that may fail for a
/// while, as while serin restarts).
pub(crate) fn follow(
    mut status: impl FnMut() -> anyhow::Result<Value>,
) -> anyhow::Result<ExitCode> {
    let tty = std::io::stdout().is_terminal();
    let mut out = std::io::stdout();
    let mut seen = String::new();
    let mut unreachable_since: Option<std::time::Instant> = None;
    loop {
        let v = match status() {
            Ok(v) => {
                unreachable_since = None;
                v
            }
            Err(e) => {
                let since = *unreachable_since.get_or_insert_with(std::time::Instant::now);
                if since.elapsed() > WATCH_UNREACHABLE_LIMIT {
                    return Err(e).context("lost the running serin");
                }
                std::thread::sleep(WATCH_POLL);
                continue;
            }
        };
        let key = format!("{}/{}", text(&v, "updated_at"), text(&v, "phase"));
        if key != seen {
            seen = key;
            if tty {
                write!(out, "\r\x1b[2K")?;
            }
            writeln!(out, "{}", line_of(&v))?;
        }
        let code = match text(&v, "phase") {
            "Promoted" => Some(ExitCode::SUCCESS),
            "RolledBack" => Some(ExitCode::from(EXIT_ROLLED_BACK)),
            "Halted" => Some(ExitCode::from(EXIT_HALTED)),
            _ => None,
        };
        if let Some(code) = code {
            if tty {
                write!(out, "\r\x1b[2K")?;
            }
            writeln!(out, "{}: {}", text(&v, "phase"), text(&v, "message"))?;
            out.flush()?;
            return Ok(code);
        }
        if tty {
            write!(out, "\r\x1b[2K{}", bar_line(&v))?;
        }
        out.flush()?;
        std::thread::sleep(WATCH_POLL);
    }
}

/// Starts the canary controller inside a serving process: weights go to
/// `proxy`, figures come from its counters (or Prometheus, per canary),
/// state and audit log live beside `config` (`NAME.canary.json`,
/// `NAME.canary-audit.jsonl`; none: in memory only). Canaries that were
/// running when the process last stopped resume here.
pub async fn start_controller(
    proxy: &std::sync::Arc<serin_proxy::Proxy>,
    config: Option<&std::path::Path>,
    defaults: BTreeMap<String, serin_canary::Options>,
) -> anyhow::Result<serin_canary::Controller> {
    let (state_file, audit_file) = match config.map(serin_canary::files_beside) {
        Some((s, a)) => (Some(s), Some(a)),
        None => (None, None),
    };
    let controller = serin_canary::Controller::start(
        std::sync::Arc::new(serin_canary::ProxySink::new(proxy.clone())),
        std::sync::Arc::new(serin_canary::EmbeddedSource::new(proxy.clone())),
        serin_canary::ControllerOptions {
            state_file,
            audit_file,
            defaults,
            state_backend: None,
        },
    )
    .await
    .context("cannot start the canary controller")?;
    Ok(controller)
}

/// The `canary:` sections of a stack's services, by service.
pub fn stack_defaults(
    stack: &serin_config::stack::Stack,
) -> BTreeMap<String, serin_canary::Options> {
    stack
        .services
        .iter()
        .filter_map(|s| {
            Some((
                s.name.clone(),
                serin_canary::Options::from(s.canary.as_ref()?),
            ))
        })
        .collect()
}
