//! When a burst of changes becomes one build: a pure decision per watched
//! target (a service, the stack file), fed with changes, clock ticks and
//! the end of its build, and table-tested below.
//!
//! Trailing-edge debounce: a build starts once no change came for
//! [`QUIET_PERIOD`], or [`MAX_DELAY`] after the first change of a burst
//! that never goes quiet. While a build runs, new changes queue one more
//! build (never more than one), which waits for its own quiet period after
//! the running one ends.

use std::time::{Duration, Instant};

/// Changes closer together than this are one burst, one build: compose
/// watch's quiet period (500 ms), long enough for an editor's save (write,
/// rename, chmod) or a `git checkout` of many files, short enough not to be
/// noticed.
pub const QUIET_PERIOD: Duration = Duration::from_millis(500);

/// A burst that never goes quiet (a tool rewriting a watched file every
/// 100 ms) still builds after this long: Tilt's cap on its batching.
pub const MAX_DELAY: Duration = Duration::from_secs(10);

/// Where one target's changes stand.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum Phase {
    /// Nothing to do.
    #[default]
    Idle,
    /// Changes came, the first at `first` and the last at `last`; no build
    /// runs.
    Settling { first: Instant, last: Instant },
    /// A build runs; `again`: a change came since it started.
    Building { again: bool },
}

/// What a target is told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Input {
    /// A change of one of its paths, at this time.
    Changed(Instant),
    /// The clock says it is this time (a wake-up at [`Phase::due`]).
    Tick(Instant),
    /// Its build ended (however it ended), at this time.
    BuildDone(Instant),
}

impl Phase {
    /// When a settling burst is ripe for its build.
    pub(crate) fn due(&self) -> Option<Instant> {
        match *self {
            Self::Settling { first, last } => Some((last + QUIET_PERIOD).min(first + MAX_DELAY)),
            _ => None,
        }
    }

    /// The next phase, and whether a build starts now.
    ///
    /// Queue one more rather than cancel and restart: a build killed
    /// half-way may leave half-written outputs behind (not every tool
    /// writes atomically as cargo does), and a long build restarted on
    /// every save would never finish during a burst of edits; the queued
    /// build sees every change made while the first one ran.
    pub(crate) fn step(self, input: Input) -> (Self, bool) {
        match (self, input) {
            (Self::Idle, Input::Changed(t)) => (Self::Settling { first: t, last: t }, false),
            (Self::Settling { first, .. }, Input::Changed(t)) => {
                (Self::Settling { first, last: t }, false)
            }
            (Self::Settling { .. }, Input::Tick(t)) if self.due().is_some_and(|d| t >= d) => {
                (Self::Building { again: false }, true)
            }
            (Self::Building { .. }, Input::Changed(_)) => (Self::Building { again: true }, false),
            (Self::Building { again: true }, Input::BuildDone(t)) => {
                (Self::Settling { first: t, last: t }, false)
            }
            (Self::Building { again: false }, Input::BuildDone(_)) => (Self::Idle, false),
            (phase, _) => (phase, false),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_is_one_build_and_a_change_during_a_build_queues_one_more() {
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        let q = QUIET_PERIOD.as_millis() as u64;
        let max = MAX_DELAY.as_millis() as u64;
        let settling = |first, last| Phase::Settling {
            first: ms(first),
            last: ms(last),
        };
        use Input::*;
        use Phase::*;
        // (phase, input, next phase, a build starts)
        let table = [
            (Idle, Changed(ms(0)), settling(0, 0), false),
            (Idle, Tick(ms(0)), Idle, false),
            (Idle, BuildDone(ms(0)), Idle, false),
            // A burst: each change moves the quiet period on.
            (settling(0, 0), Changed(ms(100)), settling(0, 100), false),
            (settling(0, 100), Tick(ms(q + 99)), settling(0, 100), false),
            (
                settling(0, 100),
                Tick(ms(q + 100)),
                Building { again: false },
                true,
            ),
            // A burst that never goes quiet builds after MAX_DELAY.
            (
                settling(0, max - 1),
                Tick(ms(max - 1)),
                settling(0, max - 1),
                false,
            ),
            (
                settling(0, max - 1),
                Tick(ms(max)),
                Building { again: false },
                true,
            ),
            // During a build: one more is queued, however many changes.
            (
                Building { again: false },
                Changed(ms(1)),
                Building { again: true },
                false,
            ),
            (
                Building { again: true },
                Changed(ms(2)),
                Building { again: true },
                false,
            ),
            (
                Building { again: true },
                Tick(ms(max * 2)),
                Building { again: true },
                false,
            ),
            (Building { again: false }, BuildDone(ms(5)), Idle, false),
            (
                Building { again: true },
                BuildDone(ms(5)),
                settling(5, 5),
                false,
            ),
        ];
        for (i, (phase, input, next, builds)) in table.into_iter().enumerate() {
            assert_eq!(
                phase.step(input),
                (next, builds),
                "row {i}: {phase:?} + {input:?}"
            );
        }
    }

    #[test]
    fn only_a_settling_burst_is_due() {
        let t = Instant::now();
        assert_eq!(Phase::Idle.due(), None);
        assert_eq!(Phase::Building { again: true }.due(), None);
        let burst = Phase::Settling { first: t, last: t };
        assert_eq!(burst.due(), Some(t + QUIET_PERIOD));
    }
}
