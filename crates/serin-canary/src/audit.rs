//! The audit log, `NAME.canary-audit.jsonl` beside the config or stack
//! file: one JSON object per line for every decision, by the controller or
//! over the API: when, who, which service, the weights before and after,
//! and the figures behind it. Lines are only ever appended.

use std::collections::{BTreeMap, VecDeque};
use std::io::Write;
use std::path::PathBuf;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::analysis::Analysis;
use crate::hooks::HookOutcome;

/// Who decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Actor {
    /// The canary's own analysis.
    Controller,
    /// Someone, over the admin API (or the CLI, which uses it).
    Api,
    /// `serin apply` (or a reload of the stack file) of a service whose
    /// canary is `auto: true`: it starts, restarts and finishes canaries.
    Apply,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// RFC 3339, UTC.
    pub time: String,
    pub actor: Actor,
    pub service: String,
    /// `start`, `advance`, `check-failed`, `inconclusive`, `halt`,
    /// `rollback`, `promote`, `pause`, `resume`, `abort`, `restart`,
    /// `approve`, `wait` (a gate holds it), `webhook` (one call of a
    /// webhook and its answer).
    pub decision: String,
    pub baseline: String,
    pub canary: String,
    pub step: usize,
    /// Version → percent before and after (equal when weights stayed).
    pub from: BTreeMap<String, u32>,
    pub to: BTreeMap<String, u32>,
    /// The window's analysis, when the decision came from one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub figures: Option<Analysis>,
    /// The webhook call, for a `webhook` entry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<HookOutcome>,
    pub message: String,
}

/// How many decisions [`AuditLog::recent`] remembers.
const RECENT: usize = 50;

pub struct AuditLog {
    path: Option<PathBuf>,
    lock: Mutex<()>,
    /// The last decisions, for the dashboard.
    recent: Mutex<VecDeque<AuditEntry>>,
}

impl AuditLog {
    /// `None`: decisions are only logged (tracing), not kept.
    pub fn new(path: Option<PathBuf>) -> Self {
        Self {
            path,
            lock: Mutex::new(()),
            recent: Mutex::new(VecDeque::new()),
        }
    }

    pub fn path(&self) -> Option<&PathBuf> {
        self.path.as_ref()
    }

    /// The decisions of this process's last moments, oldest first.
    pub fn recent(&self) -> Vec<AuditEntry> {
        let recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        recent.iter().cloned().collect()
    }

    /// Appends an entry (and logs it). A write failure is logged, never
    /// fatal: the canary goes on.
    pub fn record(&self, entry: &AuditEntry) {
        tracing::info!(
            service = %entry.service,
            decision = %entry.decision,
            actor = ?entry.actor,
            from = ?entry.from,
            to = ?entry.to,
            "canary: {}",
            entry.message
        );
        {
            let mut recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
            if recent.len() == RECENT {
                recent.pop_front();
            }
            recent.push_back(entry.clone());
        }
        let Some(path) = &self.path else { return };
        let _guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        let result = serde_json::to_string(entry)
            .map_err(std::io::Error::other)
            .and_then(|line| {
                let mut f = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)?;
                f.write_all(format!("{line}\n").as_bytes())?;
                f.sync_data()
            });
        if let Err(e) = result {
            tracing::error!(file = %path.display(), error = %e, "cannot append to the canary audit log");
        }
    }
}
