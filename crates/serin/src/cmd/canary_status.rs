//! How `serin canary` shows a canary: the status block, the line per
//! decision and the live bar of `--watch`. Everything is read from the
//! canary crate's typed [`Status`] (the admin API's JSON read back into
//! it), so a renamed field is a compile error here, not a silent blank.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use serin_canary::analysis::{Analysis, ShadowFigures, VersionFigures};
use serin_canary::check::CheckResult;
use serin_canary::{Phase, Status};

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

/// `v1 75%, v2 25%`
fn weights(w: &BTreeMap<String, u32>) -> String {
    w.iter()
        .map(|(k, p)| format!("{k} {p}%"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn percent(rate: f64) -> String {
    format!("{:.2}%", rate * 100.0)
}

fn millis(seconds: Option<f64>) -> String {
    seconds.map_or_else(|| "-".into(), |s| format!("{:.1}ms", s * 1000.0))
}

/// A number as JSON writes it (`1.5`, `2.0`), as status has always shown
/// the ratio.
fn number(x: f64) -> String {
    serde_json::Number::from_f64(x).map_or_else(|| x.to_string(), |n| n.to_string())
}

/// One version's figures: `v2 120 req, 0.00% errors, p99 3.1ms`.
fn figures(f: &VersionFigures) -> String {
    format!(
        "{} {} req, {} errors, p99 {}",
        f.version,
        f.requests,
        percent(f.error_rate),
        millis(f.p99_seconds)
    )
}

fn shadow_line(a: &Analysis, sh: &ShadowFigures) -> String {
    format!(
        "{} in the mirror step ({}% shadowed) — {} shadow answers: {} compared, {} same, \
         {} different, {} without answer ({} not matching)",
        a.verdict.as_str(),
        sh.percent,
        sh.version,
        sh.answers,
        sh.same,
        sh.different,
        sh.error,
        percent(sh.mismatch_rate)
    )
}

fn analysis_line(a: &Analysis) -> String {
    if let Some(sh) = &a.shadow {
        return shadow_line(a, sh);
    }
    let mut s = format!(
        "{} at {}% — {}; {}",
        a.verdict.as_str(),
        a.canary_weight,
        figures(&a.canary),
        figures(&a.baseline)
    );
    if let Some(r) = a.latency_ratio {
        s.push_str(&format!("; p99 ratio {r:.2}"));
    }
    s
}

/// The canary's settings on one line.
fn settings_line(v: &Status) -> String {
    let s = &v.state.settings;
    let steps: Vec<String> = s.steps.iter().map(u32::to_string).collect();
    format!(
        "steps {}, interval {}, max-error-rate {}, max-latency-ratio {}, latency-floor {}, \
         min-requests {}",
        steps.join(","),
        serin_canary::duration_text::format(s.interval),
        percent(s.max_error_rate),
        number(s.max_latency_ratio),
        serin_canary::duration_text::format(s.latency_floor),
        s.min_requests
    )
}

/// The status block of `serin canary status`, `start` and the actions.
pub fn print_status(v: &Status) {
    let st = &v.state;
    out!(
        "{}: {}  {} → {}  {}",
        st.service,
        st.phase.as_str(),
        st.baseline,
        st.canary,
        v.step_label
    );
    out!("  weights      {}", weights(&st.weights));
    let rules: Vec<String> = st
        .rules
        .iter()
        .map(|r| format!("{} rule {}", r.route, r.rule))
        .collect();
    out!("  routes       {}", rules.join(", "));
    out!(
        "  checks       failed {}/{}, inconclusive in a row {}/{}",
        st.failures,
        st.settings.failures,
        st.inconclusive,
        st.settings.inconclusive_limit
    );
    out!("  settings     {}", settings_line(v));
    if let Some(m) = st.settings.mirror_step {
        out!("  mirror step  {m}% of the baseline's requests shadowed (serin's own counters)");
    }
    print_hooks(v);
    print_tail(v);
}

/// What the canary waits for, its webhooks, its approval gate and where
/// its transitions are told.
fn print_hooks(v: &Status) {
    let st = &v.state;
    if let Some(w) = &st.waiting {
        out!("  waiting for  {} (since {})", w.text(), w.since);
    }
    if !st.settings.webhooks.is_empty() {
        let hooks: Vec<String> = st
            .settings
            .webhooks
            .iter()
            .map(|h| format!("{} ({}) {}", h.name, h.kind, h.url))
            .collect();
        out!("  webhooks     {}", hooks.join(", "));
    }
    if st.settings.approval {
        let state = if st.approved {
            "approved".to_string()
        } else {
            format!(
                "needed before the promotion: serin canary approve {}",
                st.service
            )
        };
        out!("  approval     {state}");
    }
    if !st.settings.notify.is_empty() {
        let targets: Vec<String> = st
            .settings
            .notify
            .iter()
            .map(|n| format!("{} ({})", n.url, n.format.as_str()))
            .collect();
        out!("  notify       {}", targets.join(", "));
    }
}

/// Each check with its last value, range and verdict; before the first
/// window, each check with its range.
fn print_checks(v: &Status) {
    let results = v
        .state
        .last_analysis
        .as_ref()
        .map(|a| a.checks.as_slice())
        .unwrap_or_default();
    if results.is_empty() {
        let all: Vec<String> = v
            .state
            .settings
            .checks
            .iter()
            .map(serin_canary::check::describe)
            .collect();
        out!("  checks of it {}", all.join(", "));
        return;
    }
    out!("  check results (last window)");
    for r in results {
        out!("    {}", check_line(r));
    }
}

/// `error-rate      0.00%  (≤ 1.00%)  pass`, with the query of a PromQL
/// check and the reason of one that did not pass.
fn check_line(r: &CheckResult) -> String {
    let mut s = r.summary();
    if let Some(q) = &r.query {
        s.push_str(&format!("  [{q}]"));
    }
    if let Some(why) = &r.reason {
        s.push_str(&format!(" — {why}"));
    }
    s
}

/// The second half of [`print_status`]: source, last window, next check,
/// message, queries and audit log.
fn print_tail(v: &Status) {
    match &v.prometheus {
        Some(url) => out!("  source       prometheus {url}"),
        None => out!("  source       {}", v.source),
    }
    if let Some(a) = &v.state.last_analysis {
        out!("  last window  {}", analysis_line(a));
        for r in &a.reasons {
            out!("               {r}");
        }
    }
    print_checks(v);
    if let Some(end) = &v.window_ends_at {
        out!("  next check   {end}");
    }
    out!("  message      {}", v.state.message);
    if !v.queries.is_empty() {
        out!("  queries");
        for (name, q) in &v.queries {
            out!("    {name:<12} {}", q.template);
        }
    }
    if let Some(a) = &v.audit_log {
        out!("  audit log    {a}");
    }
}

/// A plain line for a decision: `12:00:01 qotm Progressing step 2/4 (25%): MESSAGE`.
fn line_of(v: &Status) -> String {
    let st = &v.state;
    let time = st.updated_at.get(11..19).unwrap_or("");
    format!(
        "{time} {} {} {} [{}]: {}",
        st.service,
        st.phase.as_str(),
        v.step_label,
        weights(&st.weights),
        st.message
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
fn bar_line(v: &Status) -> String {
    const WIDTH: usize = 24;
    let st = &v.state;
    let weight = st.canary_weight();
    let filled = usize::try_from(weight).unwrap_or(0) * WIDTH / 100;
    let bar: String = "█".repeat(filled) + &"░".repeat(WIDTH - filled.min(WIDTH));
    let window = v
        .window_ends_at
        .as_deref()
        .and_then(seconds_until)
        .map(|s| format!("  next check in {s:.0}s"))
        .unwrap_or_default();
    let last = st
        .last_analysis
        .as_ref()
        .map(|a| format!("  last: {}", a.verdict.as_str()))
        .unwrap_or_default();
    format!(
        "{} {} → {} [{bar}] {weight:>3}%  {}  {}{window}{last}",
        st.service,
        st.baseline,
        st.canary,
        v.step_label,
        st.phase.as_str(),
    )
}

/// How `--watch` exits in `phase`; none while the canary goes on.
fn exit_code(phase: Phase) -> Option<ExitCode> {
    match phase {
        Phase::Promoted => Some(ExitCode::SUCCESS),
        Phase::RolledBack => Some(ExitCode::from(EXIT_ROLLED_BACK)),
        Phase::Halted => Some(ExitCode::from(EXIT_HALTED)),
        Phase::Progressing | Phase::Paused => None,
    }
}

/// The next status from `status`, waiting while serin cannot be reached
/// (up to [`WATCH_UNREACHABLE_LIMIT`]). An answer that does not read as a
/// [`Status`] ends the watch at once: waiting would not mend it.
fn next_status(status: &mut impl FnMut() -> anyhow::Result<Status>) -> anyhow::Result<Status> {
    let mut unreachable_since: Option<std::time::Instant> = None;
    loop {
        match status() {
            Ok(v) => return Ok(v),
            Err(e) if e.downcast_ref::<serde_json::Error>().is_some() => return Err(e),
            Err(e) => {
                let since = *unreachable_since.get_or_insert_with(std::time::Instant::now);
                if since.elapsed() > WATCH_UNREACHABLE_LIMIT {
                    return Err(e).context("lost the running serin");
                }
                std::thread::sleep(WATCH_POLL);
            }
        }
    }
}

/// Follows a canary, with its status from `status` (a call that may fail
/// for a while, as while serin restarts), until it is promoted (exit 0),
/// rolled back (2) or halted (3). In a terminal a live bar is redrawn and
/// each decision is printed above it; otherwise each decision is one plain
/// line.
pub fn follow(mut status: impl FnMut() -> anyhow::Result<Status>) -> anyhow::Result<ExitCode> {
    let tty = std::io::stdout().is_terminal();
    let mut out = std::io::stdout();
    let mut seen = String::new();
    // The window whose checks were printed last.
    let mut judged = String::new();
    loop {
        let v = next_status(&mut status)?;
        let key = format!("{}/{}", v.state.updated_at, v.state.phase.as_str());
        if key != seen {
            seen = key;
            if tty {
                write!(out, "\r\x1b[2K")?;
            }
            writeln!(out, "{}", line_of(&v))?;
            if let Some(a) = v.state.last_analysis.as_ref().filter(|a| a.at != judged) {
                judged = a.at.clone();
                for r in &a.checks {
                    writeln!(out, "    {}", check_line(r))?;
                }
            }
        }
        if let Some(code) = exit_code(v.state.phase) {
            if tty {
                write!(out, "\r\x1b[2K")?;
            }
            writeln!(out, "{}: {}", v.state.phase.as_str(), v.state.message)?;
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
