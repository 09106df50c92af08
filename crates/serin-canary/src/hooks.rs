//! Calling a canary's webhooks: the JSON body each one gets (service,
//! versions, phase, step, weights, the last window's figures and checks,
//! its metadata), the POST with its timeout, and the outcome as the audit
//! log keeps it. What an outcome *means* (a halt, a failed check, a gate
//! that stays shut) is [`crate::gate`]'s.
//!
//! The controller calls a canary's hooks in turn while it holds that
//! canary's decision lock (as it does while it queries Prometheus), so a
//! command such as `abort` waits at most for their timeouts; post-rollout
//! hooks are called off that path.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::analysis::Analysis;
use crate::settings::{HookType, Webhook};
use crate::store::CanaryState;

/// A webhook that has not answered in 10 s is taken as failed: long enough
/// for a smoke test or an approval service to answer, short enough that a
/// dead one does not hold a window (whose interval is 30 s by default) for
/// long. Flagger's hooks default to a minute, but they run load tests in
/// the call; serin's load test is its own step.
pub const DEFAULT_WEBHOOK_TIMEOUT: Duration = Duration::from_secs(10);

/// How much of a webhook's answer the audit log keeps: enough for a short
/// reason ("blocked: change freeze"), not a whole page.
const ANSWER_EXCERPT: usize = 200;

/// What a webhook is POSTed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HookBody {
    /// The webhook's own name and type.
    pub name: String,
    #[serde(rename = "type")]
    pub kind: HookType,
    pub service: String,
    /// The baseline and the canary versions.
    pub from: String,
    pub to: String,
    pub phase: String,
    /// The step index (into `steps`), and the step as status shows it.
    pub step: usize,
    pub step_label: String,
    /// Version → percent now.
    pub weights: BTreeMap<String, u32>,
    /// The window just judged (for `rollout` and `confirm-promotion`), or
    /// the last one: its figures and each check's value and verdict.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_window: Option<Analysis>,
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
}

impl HookBody {
    pub fn new(
        hook: &Webhook,
        state: &CanaryState,
        step_label: String,
        window: Option<&Analysis>,
    ) -> Self {
        Self {
            name: hook.name.clone(),
            kind: hook.kind,
            service: state.service.clone(),
            from: state.baseline.clone(),
            to: state.canary.clone(),
            phase: state.phase.as_str().to_string(),
            step: state.step,
            step_label,
            weights: state.weights.clone(),
            last_window: window.or(state.last_analysis.as_ref()).cloned(),
            metadata: hook.metadata.clone(),
        }
    }
}

/// One call of a webhook, as the audit log and status keep it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HookOutcome {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: HookType,
    pub url: String,
    /// The HTTP status it answered; none when it did not answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// Why there is no answer (refused, timed out, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The start of its answer's body.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub answer: String,
    /// 2xx.
    pub ok: bool,
    pub millis: u64,
}

impl HookOutcome {
    /// `answered 403`, `answered 200`, `did not answer: timed out after 10s`.
    pub fn answer_text(&self) -> String {
        match (self.status, &self.error) {
            (Some(s), _) if self.answer.is_empty() => format!("answered {s}"),
            (Some(s), _) => format!("answered {s} ({})", self.answer),
            (None, Some(e)) => format!("did not answer: {e}"),
            (None, None) => "did not answer".into(),
        }
    }

    /// `confirm-promotion webhook `gate` (http://…) answered 403 in 3 ms`.
    pub fn text(&self) -> String {
        format!(
            "{} webhook `{}` ({}) {} in {} ms",
            self.kind,
            self.name,
            self.url,
            self.answer_text(),
            self.millis
        )
    }
}

/// POSTs `body` to `hook` and waits for its answer (up to its timeout).
/// Never fails: no answer is an outcome that is not ok.
pub async fn call(http: &reqwest::Client, hook: &Webhook, body: &HookBody) -> HookOutcome {
    let timeout = hook.timeout.unwrap_or(DEFAULT_WEBHOOK_TIMEOUT);
    let began = Instant::now();
    let sent = http
        .post(&hook.url)
        .timeout(timeout)
        .json(body)
        .send()
        .await;
    let (status, error, answer) = match sent {
        Ok(resp) => {
            let status = resp.status().as_u16();
            let text = resp.text().await.unwrap_or_default();
            (Some(status), None, excerpt(&text))
        }
        Err(e) if e.is_timeout() => (
            None,
            Some(format!(
                "timed out after {}",
                crate::duration_text::format(timeout)
            )),
            String::new(),
        ),
        Err(e) => (None, Some(error_chain(&e)), String::new()),
    };
    HookOutcome {
        name: hook.name.clone(),
        kind: hook.kind,
        url: hook.url.clone(),
        ok: status.is_some_and(|s| (200..300).contains(&s)),
        status,
        error,
        answer,
        millis: u64::try_from(began.elapsed().as_millis()).unwrap_or(u64::MAX),
    }
}

/// The first [`ANSWER_EXCERPT`] characters of an answer, on one line.
fn excerpt(text: &str) -> String {
    let one_line: String = text
        .trim()
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(ANSWER_EXCERPT)
        .collect();
    one_line
}

/// An error with its causes: reqwest's own message says only "error
/// sending request".
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cause = c.source();
    }
    s
}
