//! One running load: requests sent at a fixed rate with a bound on those
//! in flight, until its end (which a renewing call moves), counted by
//! outcome.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::MissedTickBehavior;

use super::spec::LoadSpec;

/// What a load's requests came to.
#[derive(Debug, Default)]
pub struct Counts {
    pub sent: AtomicU64,
    /// 1xx, 2xx and 3xx answers.
    pub ok: AtomicU64,
    pub client_errors: AtomicU64,
    pub server_errors: AtomicU64,
    /// No answer: refused, reset, timed out.
    pub failed: AtomicU64,
    /// Ticks that sent nothing because `concurrency` requests were still in
    /// flight: the target is slower than the rate asks.
    pub skipped: AtomicU64,
}

fn read(n: &AtomicU64) -> u64 {
    n.load(Ordering::Relaxed)
}

impl Counts {
    /// 5xx answers and requests with no answer.
    pub fn errors(&self) -> u64 {
        read(&self.server_errors) + read(&self.failed)
    }

    fn record(&self, answer: Result<reqwest::StatusCode, ()>) {
        let counter = match answer {
            Ok(s) if s.is_server_error() => &self.server_errors,
            Ok(s) if s.is_client_error() => &self.client_errors,
            Ok(_) => &self.ok,
            Err(()) => &self.failed,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// A load, as the registry holds it.
pub struct Load {
    pub spec: Arc<LoadSpec>,
    pub counts: Arc<Counts>,
    started: Instant,
    /// Milliseconds after `started` at which no more requests are sent.
    ends_after_ms: Arc<AtomicU64>,
    /// Becomes true once the last request in flight is done.
    pub done: watch::Receiver<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Load {
    /// Starts `spec` on its own task.
    pub fn start(spec: LoadSpec, http: reqwest::Client) -> Self {
        let spec = Arc::new(spec);
        let counts = Arc::new(Counts::default());
        let started = Instant::now();
        let ends_after_ms = Arc::new(AtomicU64::new(millis(spec.duration)));
        let (done_tx, done) = watch::channel(false);
        let task = tokio::spawn(run(
            Arc::clone(&spec),
            Arc::clone(&counts),
            started,
            Arc::clone(&ends_after_ms),
            http,
            done_tx,
        ));
        Self {
            spec,
            counts,
            started,
            ends_after_ms,
            done,
            task,
        }
    }

    /// Neither at its end nor stopped.
    pub fn is_running(&self) -> bool {
        !*self.done.borrow() && !self.task.is_finished()
    }

    /// Moves the end to one `duration` from now: the same load asked for
    /// again goes on without a gap.
    pub fn renew(&self) {
        let end = self.started.elapsed() + self.spec.duration;
        self.ends_after_ms.store(millis(end), Ordering::Relaxed);
    }

    /// Ends it now; requests in flight are dropped.
    pub fn stop(&self) {
        self.task.abort();
    }

    /// Its spec and counts, as `GET /loads` and a call's answer show them.
    pub fn summary(&self, key: &str) -> Value {
        let c = &self.counts;
        json!({
            "key": key,
            "url": self.spec.url.as_str(),
            "method": self.spec.method.as_str(),
            "rate": self.spec.rate,
            "concurrency": self.spec.concurrency,
            "running": self.is_running(),
            "seconds": (self.started.elapsed().as_secs_f64() * 10.0).round() / 10.0,
            "sent": read(&c.sent),
            "ok": read(&c.ok),
            "client_errors": read(&c.client_errors),
            "server_errors": read(&c.server_errors),
            "failed": read(&c.failed),
            "skipped": read(&c.skipped),
        })
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Whether a load passed as a gate: something was sent, and no more than
/// `maxErrorRate` of it failed (5xx or no answer).
pub fn passed(spec: &LoadSpec, counts: &Counts) -> bool {
    let sent = read(&counts.sent);
    sent > 0 && (counts.errors() as f64) <= spec.max_error_rate * sent as f64
}

/// The verdict as one line, first what decided it: a canary's audit log
/// keeps the start of a webhook's answer.
pub fn verdict(spec: &LoadSpec, counts: &Counts) -> String {
    let sent = read(&counts.sent);
    let head = if sent == 0 {
        "failed: no request was sent".to_string()
    } else {
        format!(
            "{}: {} of {sent} requests failed (5xx or no answer), {} maxErrorRate {}%",
            if passed(spec, counts) {
                "passed"
            } else {
                "failed"
            },
            counts.errors(),
            if passed(spec, counts) {
                "within"
            } else {
                "above"
            },
            spec.max_error_rate * 100.0
        )
    };
    format!(
        "{head}; {} {}: ok {}, 4xx {}, 5xx {}, no answer {}, skipped {}",
        spec.method,
        spec.url,
        read(&counts.ok),
        read(&counts.client_errors),
        read(&counts.server_errors),
        read(&counts.failed),
        read(&counts.skipped)
    )
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Sends until the end, then waits for those in flight (each bounded by
/// the request timeout) and says it is done.
async fn run(
    spec: Arc<LoadSpec>,
    counts: Arc<Counts>,
    started: Instant,
    ends_after_ms: Arc<AtomicU64>,
    http: reqwest::Client,
    done: watch::Sender<bool>,
) {
    let mut ticks = tokio::time::interval(Duration::from_secs_f64(1.0 / spec.rate));
    // A late tick is dropped, not made up: the rate is a bound.
    ticks.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let mut in_flight = JoinSet::new();
    loop {
        ticks.tick().await;
        if millis(started.elapsed()) >= ends_after_ms.load(Ordering::Relaxed) {
            break;
        }
        while in_flight.try_join_next().is_some() {}
        if in_flight.len() >= spec.concurrency {
            counts.skipped.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        counts.sent.fetch_add(1, Ordering::Relaxed);
        in_flight.spawn(send(Arc::clone(&spec), Arc::clone(&counts), http.clone()));
    }
    while in_flight.join_next().await.is_some() {}
    let _ = done.send(true);
}

async fn send(spec: Arc<LoadSpec>, counts: Arc<Counts>, http: reqwest::Client) {
    let mut request = http
        .request(spec.method.clone(), spec.url.clone())
        .timeout(spec.timeout);
    for (name, value) in &spec.headers {
        request = request.header(name, value);
    }
    let answer = match request.send().await {
        // An answer whose body breaks off is no answer.
        Ok(r) => {
            let status = r.status();
            r.bytes().await.map(|_| status).map_err(|_| ())
        }
        Err(_) => Err(()),
    };
    counts.record(answer);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(max_error_rate: f64) -> LoadSpec {
        LoadSpec {
            url: reqwest::Url::parse("http://127.0.0.1:1/").unwrap_or_else(|e| panic!("{e}")),
            method: reqwest::Method::GET,
            headers: Vec::new(),
            rate: 10.0,
            duration: Duration::from_secs(1),
            concurrency: 1,
            timeout: Duration::from_secs(1),
            wait: true,
            max_error_rate,
        }
    }

    fn counts(sent: u64, ok: u64, server_errors: u64, failed: u64) -> Counts {
        let c = Counts::default();
        c.sent.store(sent, Ordering::Relaxed);
        c.ok.store(ok, Ordering::Relaxed);
        c.server_errors.store(server_errors, Ordering::Relaxed);
        c.failed.store(failed, Ordering::Relaxed);
        c
    }

    /// (maxErrorRate, sent, ok, 5xx, no answer) → passed, and how the verdict starts.
    #[test]
    fn a_gate_passes_on_a_share_of_failures_within_its_bound_and_never_on_nothing() {
        let table = [
            (0.0, 10, 10, 0, 0, true, "passed: 0 of 10"),
            (0.0, 10, 9, 1, 0, false, "failed: 1 of 10"),
            (0.0, 10, 9, 0, 1, false, "failed: 1 of 10"),
            (0.1, 10, 9, 1, 0, true, "passed: 1 of 10"),
            (0.1, 10, 8, 1, 1, false, "failed: 2 of 10"),
            (1.0, 0, 0, 0, 0, false, "failed: no request was sent"),
        ];
        for (rate, sent, ok, errors, failed, pass, head) in table {
            let (s, c) = (spec(rate), counts(sent, ok, errors, failed));
            assert_eq!(passed(&s, &c), pass, "{rate} {sent} {ok} {errors} {failed}");
            let v = verdict(&s, &c);
            assert!(v.starts_with(head), "`{v}` does not start with `{head}`");
        }
    }

    #[test]
    fn a_4xx_answer_is_an_answer_not_a_failure() {
        let c = counts(2, 1, 0, 0);
        c.client_errors.store(1, Ordering::Relaxed);
        assert!(passed(&spec(0.0), &c));
        assert!(verdict(&spec(0.0), &c).contains("4xx 1"));
    }
}
