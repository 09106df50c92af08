//! Notifications: on a canary's start, each step, halt, rollback and
//! promotion, a message POSTed to its `notify` targets, as Slack's `{"text":
//! ...}` or as generic JSON. Delivery is off the controller's path: the
//! controller only puts the message on a bounded queue ([`Notifier::send`]
//! never waits); one task delivers them in order, retrying each target with
//! jittered exponential back-off a bounded number of times; a message
//! that cannot be delivered (or that finds the queue full) is logged and
//! dropped, and the canary goes on.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::settings::{NotifyFormat, NotifyTarget};

/// Messages waiting to be delivered. A canary makes a handful per window,
/// so 256 is minutes of a dead target's retries; beyond it messages are
/// dropped (logged) rather than held in memory without bound.
pub const NOTIFY_QUEUE: usize = 256;
/// Tries per target and message: a restarting chat server or relay gets
/// a few seconds; a dead one does not hold the queue for long.
pub const NOTIFY_ATTEMPTS: u32 = 4;
/// The first retry waits about this long, each next one twice as long.
pub const NOTIFY_BACKOFF: Duration = Duration::from_millis(500);
/// No retry waits longer than this.
pub const NOTIFY_BACKOFF_CAP: Duration = Duration::from_secs(8);
/// One delivery attempt gives up after this long.
pub const NOTIFY_TIMEOUT: Duration = Duration::from_secs(10);

/// What happened to a canary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    Start,
    Step,
    Halt,
    Rollback,
    Promotion,
}

impl Event {
    /// The event of an audit decision; none for decisions nobody is told
    /// of (inconclusive windows, pauses, webhook calls, ...).
    pub fn of_decision(decision: &str) -> Option<Self> {
        Some(match decision {
            "start" => Self::Start,
            "advance" => Self::Step,
            "halt" => Self::Halt,
            "rollback" | "abort" => Self::Rollback,
            "promote" => Self::Promotion,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Start => "start",
            Self::Step => "step",
            Self::Halt => "halt",
            Self::Rollback => "rollback",
            Self::Promotion => "promotion",
        }
    }

    fn verb(self) -> &'static str {
        match self {
            Self::Start => "started",
            Self::Step => "moved on",
            Self::Halt => "halted",
            Self::Rollback => "was rolled back",
            Self::Promotion => "was promoted",
        }
    }
}

/// One message, for every target of one canary.
#[derive(Debug, Clone, PartialEq)]
pub struct Notification {
    pub targets: Vec<NotifyTarget>,
    pub event: Event,
    pub service: String,
    pub baseline: String,
    pub canary: String,
    pub phase: String,
    pub step_label: String,
    pub weights: BTreeMap<String, u32>,
    /// What happened and why, as the audit log says it.
    pub message: String,
    pub time: String,
}

impl Notification {
    /// `The canary of qotm (v1 → v2) was promoted: …`.
    pub fn sentence(&self) -> String {
        format!(
            "The canary of {} ({} → {}) {} at {}: {}",
            self.service,
            self.baseline,
            self.canary,
            self.event.verb(),
            self.step_label,
            self.message
        )
    }

    /// The body for a target of `format`.
    pub fn body(&self, format: NotifyFormat) -> Value {
        match format {
            NotifyFormat::Slack => json!({ "text": self.sentence() }),
            NotifyFormat::Json => json!({
                "event": self.event.as_str(),
                "service": self.service,
                "from": self.baseline,
                "to": self.canary,
                "phase": self.phase,
                "step": self.step_label,
                "weights": self.weights,
                "message": self.message,
                "time": self.time,
            }),
        }
    }
}

/// The controller's end of the queue. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Notifier {
    queue: mpsc::Sender<Notification>,
}

impl Notifier {
    /// Starts the delivering task (inside a tokio runtime).
    pub fn start(http: reqwest::Client) -> Self {
        let (queue, rx) = mpsc::channel(NOTIFY_QUEUE);
        tokio::spawn(deliver_all(http, rx));
        Self { queue }
    }

    /// Queues `n` for delivery; never waits. A full queue drops it (logged).
    pub fn send(&self, n: Notification) {
        if n.targets.is_empty() {
            return;
        }
        if let Err(e) = self.queue.try_send(n) {
            tracing::warn!(error = %e, "canary notification dropped: the queue is full");
        }
    }
}

async fn deliver_all(http: reqwest::Client, mut rx: mpsc::Receiver<Notification>) {
    while let Some(n) = rx.recv().await {
        // Targets are told at once; each one's messages stay in order.
        let mut each = tokio::task::JoinSet::new();
        for target in n.targets.clone() {
            let (http, body) = (http.clone(), n.body(target.format));
            let event = n.event.as_str();
            let service = n.service.clone();
            each.spawn(async move {
                if let Err(e) = deliver(&http, &target.url, &body).await {
                    tracing::error!(
                        url = %target.url, service = %service, event,
                        "canary notification not delivered after {NOTIFY_ATTEMPTS} tries: {e}"
                    );
                }
            });
        }
        while each.join_next().await.is_some() {}
    }
}

/// POSTs `body` until a 2xx answer, up to [`NOTIFY_ATTEMPTS`] times.
async fn deliver(http: &reqwest::Client, url: &str, body: &Value) -> Result<(), String> {
    let mut last = String::new();
    for attempt in 0..NOTIFY_ATTEMPTS {
        if attempt > 0 {
            tokio::time::sleep(backoff(attempt, fastrand::f64())).await;
        }
        match http
            .post(url)
            .timeout(NOTIFY_TIMEOUT)
            .json(body)
            .send()
            .await
        {
            Ok(r) if r.status().is_success() => return Ok(()),
            Ok(r) => last = format!("answered {}", r.status().as_u16()),
            Err(e) => last = crate::hooks::error_chain(&e),
        }
    }
    Err(last)
}

/// The wait before retry `attempt` (1, 2, ...): [`NOTIFY_BACKOFF`] doubled
/// each time, capped at [`NOTIFY_BACKOFF_CAP`], of which `jitter` (0 to 1)
/// takes a random half, so that many serins do not retry in step.
pub fn backoff(attempt: u32, jitter: f64) -> Duration {
    let doubled = NOTIFY_BACKOFF.saturating_mul(1u32 << attempt.saturating_sub(1).min(16));
    let full = doubled.min(NOTIFY_BACKOFF_CAP);
    full.mul_f64(0.5 + 0.5 * jitter.clamp(0.0, 1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_up_to_the_cap() {
        let table = [
            (1, 0.0, 250),
            (1, 1.0, 500),
            (2, 1.0, 1000),
            (3, 0.5, 1500),
            (5, 1.0, 8000),
            (40, 0.0, 4000),
        ];
        for (attempt, jitter, millis) in table {
            assert_eq!(
                backoff(attempt, jitter),
                Duration::from_millis(millis),
                "attempt {attempt}, jitter {jitter}"
            );
        }
    }

    #[test]
    fn bodies_name_service_versions_and_what_happened() {
        let n = Notification {
            targets: Vec::new(),
            event: Event::Rollback,
            service: "qotm".into(),
            baseline: "v1".into(),
            canary: "v2".into(),
            phase: "RolledBack".into(),
            step_label: "step 2/3 (50%)".into(),
            weights: BTreeMap::from([("v1".into(), 100), ("v2".into(), 0)]),
            message: "error-rate 5.00% (≤ 1.00%)".into(),
            time: "t".into(),
        };
        assert_eq!(
            n.body(NotifyFormat::Slack)["text"],
            "The canary of qotm (v1 → v2) was rolled back at step 2/3 (50%): error-rate 5.00% \
             (≤ 1.00%)"
        );
        let j = n.body(NotifyFormat::Json);
        assert_eq!(
            (&j["event"], &j["weights"]["v1"], &j["to"]),
            (&json!("rollback"), &json!(100), &json!("v2"))
        );
        assert_eq!(Event::of_decision("abort"), Some(Event::Rollback));
        assert_eq!(Event::of_decision("inconclusive"), None);
    }
}
