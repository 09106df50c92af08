//! A short memory of what changed in the running config (reloads applied or
//! rejected, weight changes, rules and mirrors added or removed), newest
//! last, for the dashboard. Bounded: old entries fall off.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

/// How many changes are remembered.
const KEPT: usize = 100;

/// One change of the running config.
#[derive(Debug, Clone, Serialize)]
pub struct ControlEvent {
    /// Milliseconds since the Unix epoch.
    pub unix_ms: u64,
    /// `config-applied`, `config-rejected`, `weights`, `rule-added`,
    /// `rule-removed`, `mirror-set` or `mirror-removed`.
    pub kind: &'static str,
    pub message: String,
}

#[derive(Debug, Default)]
pub struct EventLog {
    entries: Mutex<VecDeque<ControlEvent>>,
}

impl EventLog {
    pub fn record(&self, kind: &'static str, message: String) {
        let unix_ms = unix_now_ms();
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if entries.len() == KEPT {
            entries.pop_front();
        }
        entries.push_back(ControlEvent {
            unix_ms,
            kind,
            message,
        });
    }

    /// The remembered changes, oldest first.
    pub fn list(&self) -> Vec<ControlEvent> {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries.iter().cloned().collect()
    }
}

/// The wall clock in Unix milliseconds (0 before 1970), as the dashboard,
/// the event log and the tap stamp what they show.
pub fn unix_now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_newest() {
        let log = EventLog::default();
        for i in 0..KEPT + 5 {
            log.record("weights", format!("change {i}"));
        }
        let list = log.list();
        assert_eq!(list.len(), KEPT);
        assert_eq!(list[0].message, "change 5");
        assert_eq!(list[KEPT - 1].message, format!("change {}", KEPT + 4));
    }
}
