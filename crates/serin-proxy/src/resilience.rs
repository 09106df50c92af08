//! Containing failures on the request path: circuit breakers per service
//! version (Envoy's meanings), per-rule concurrency limits, and fault
//! injection. Every refusal is immediate (503, with `x-serin-overflow`
//! naming the limit: [`crate::request::ProxyError::Overflow`]) and counted: queueing without bound is how one slow
//! dependency takes its callers down.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use http::{HeaderMap, HeaderValue, Response, StatusCode};
use serin_config::proxy::FaultConfig;

use crate::body::ResponseBody;

/// A count of things in flight with a ceiling.
#[derive(Debug, Default)]
pub struct Gauge(AtomicUsize);

/// Holds one unit of a [`Gauge`] until dropped.
pub struct Permit(Arc<Gauge>);

impl Drop for Permit {
    fn drop(&mut self) {
        (self.0).0.fetch_sub(1, Ordering::Release);
    }
}

impl Gauge {
    /// Takes one unit unless `max` are taken.
    pub fn try_acquire(self: &Arc<Self>, max: usize) -> Option<Permit> {
        // Never counts past `max`, not even for a moment: a refused taker's
        // passing increment would refuse someone else, who might then wait
        // for a wake-up that never comes.
        self.0
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()?;
        Some(Permit(self.clone()))
    }

    pub fn current(&self) -> usize {
        self.0.load(Ordering::Relaxed)
    }
}

/// What fault injection decided for one request.
pub enum Fault {
    None,
    Delay(Duration),
    Abort(u16),
    DelayThenAbort(Duration, u16),
}

fn chance(percent: f64) -> bool {
    percent >= 100.0 || fastrand::f64() * 100.0 < percent
}

/// Rolls the dice of a rule's fault settings for a request.
pub fn decide(cfg: &FaultConfig, headers: &HeaderMap) -> Fault {
    let selected = cfg.headers.iter().all(|m| {
        headers
            .get(m.name.as_str())
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| m.value.matches(v))
    });
    if !selected {
        return Fault::None;
    }
    let delay = cfg.delay.filter(|(_, p)| chance(*p)).map(|(d, _)| d);
    let abort = cfg.abort.filter(|(_, p)| chance(*p)).map(|(s, _)| s);
    match (delay, abort) {
        (None, None) => Fault::None,
        (Some(d), None) => Fault::Delay(d),
        (None, Some(s)) => Fault::Abort(s),
        (Some(d), Some(s)) => Fault::DelayThenAbort(d, s),
    }
}

/// The response of an injected abort.
pub fn aborted(status: u16) -> Response<ResponseBody> {
    let mut resp = Response::new(ResponseBody::full("fault injected\n"));
    *resp.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
    resp.headers_mut()
        .insert("x-serin-fault", HeaderValue::from_static("abort"));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gauge_refuses_past_its_ceiling_and_frees_on_drop() {
        let g = Arc::new(Gauge::default());
        let a = g.try_acquire(2);
        let b = g.try_acquire(2);
        assert!(a.is_some() && b.is_some());
        assert!(g.try_acquire(2).is_none());
        drop(a);
        assert!(g.try_acquire(2).is_some());
        assert_eq!(g.current(), 1);
    }
}
