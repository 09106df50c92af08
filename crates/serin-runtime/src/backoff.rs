//! CrashLoopBackOff: how long to wait before restarting a replica whose
//! process ended.
//!
//! As the kubelet does it: the first restart is immediate; each later one
//! waits `initial`, then twice as long each time, up to `max`. A process that
//! ran for `reset_after` without ending resets the sequence.

use std::time::Duration;

use serin_config::stack::Backoff;

#[derive(Debug, Clone)]
pub(crate) struct CrashLoop {
    config: Backoff,
    /// The delay of the next restart; `None` until the first one.
    next: Option<Duration>,
}

impl CrashLoop {
    pub(crate) fn new(config: Backoff) -> Self {
        Self { config, next: None }
    }

    /// The delay before restarting a process that ran for `ran`.
    pub(crate) fn delay_after(&mut self, ran: Duration) -> Duration {
        if ran >= self.config.reset_after {
            self.next = None;
        }
        match self.next {
            None => {
                self.next = Some(self.config.initial.min(self.config.max));
                Duration::ZERO
            }
            Some(d) => {
                self.next = Some(d.saturating_mul(2).min(self.config.max));
                d
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubelet_sequence() {
        let s = Duration::from_secs;
        let mut b = CrashLoop::new(Backoff {
            initial: s(10),
            max: s(300),
            reset_after: s(600),
        });
        let delays: Vec<u64> = (0..8).map(|_| b.delay_after(s(1)).as_secs()).collect();
        assert_eq!(delays, [0, 10, 20, 40, 80, 160, 300, 300]);
        assert_eq!(
            b.delay_after(s(600)),
            Duration::ZERO,
            "reset after a long run"
        );
        assert_eq!(b.delay_after(s(1)), s(10));
    }
}
