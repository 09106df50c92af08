//! The canary state file, `NAME.canary.json` beside the config or stack
//! file: every canary (one per service, the last one started) with its
//! phase, step, weights and counters. Written atomically (temporary file,
//! fsync, rename) on every change, so a crash, even SIGKILL, leaves either
//! the old or the new state and a restarted serin resumes from it.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::analysis::Analysis;
use crate::settings::Settings;
use crate::sink::RuleRef;
use crate::source::Target;

/// Where a canary is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub enum Phase {
    /// Windows are judged; it advances, rolls back or halts by itself.
    Progressing,
    /// Paused over the API: weights stay, no window is judged.
    Paused,
    /// Stopped by itself (too many inconclusive windows, or weights that
    /// could not be set): weights stay until someone resumes, promotes or
    /// aborts it.
    Halted,
    /// The canary took all the traffic. Final.
    Promoted,
    /// All traffic went back to the baseline. Final.
    RolledBack,
}

impl Phase {
    /// Promoted and RolledBack are final; the others hold the service.
    pub fn is_final(self) -> bool {
        matches!(self, Self::Promoted | Self::RolledBack)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Progressing => "Progressing",
            Self::Paused => "Paused",
            Self::Halted => "Halted",
            Self::Promoted => "Promoted",
            Self::RolledBack => "RolledBack",
        }
    }
}

/// One canary, as persisted and as `status` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CanaryState {
    /// Tells this canary from an earlier one of the same service.
    pub id: u64,
    pub service: String,
    pub baseline: String,
    pub canary: String,
    pub phase: Phase,
    /// The step (index into `settings.steps`) being judged or last reached.
    pub step: usize,
    /// In the header or cookie step (before `step` 0): only matching
    /// requests reach the canary.
    #[serde(default)]
    pub match_step: bool,
    /// In the mirror step (before the header step and `step` 0): the
    /// canary gets only shadow copies of the baseline's requests.
    #[serde(default)]
    pub mirror_step: bool,
    /// Version → percent, as last set.
    pub weights: BTreeMap<String, u32>,
    /// Failed checks so far.
    pub failures: u32,
    /// Inconclusive windows in a row.
    pub inconclusive: u32,
    /// What happened last, in words.
    pub message: String,
    pub settings: Settings,
    /// The route rules that carry both versions, as last set.
    pub rules: Vec<RuleRef>,
    /// The weights of those rules before the canary started.
    pub initial_rules: Vec<RuleRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_analysis: Option<Analysis>,
    pub started_at: String,
    pub updated_at: String,
}

impl CanaryState {
    pub fn target(&self) -> Target {
        Target {
            service: self.service.clone(),
            baseline: self.baseline.clone(),
            canary: self.canary.clone(),
        }
    }

    /// The canary's weight in percent now.
    pub fn canary_weight(&self) -> u32 {
        self.weights.get(&self.canary).copied().unwrap_or(0)
    }

    /// Version → percent for a canary weight.
    pub fn weights_for(&self, canary_percent: u32) -> BTreeMap<String, u32> {
        BTreeMap::from([
            (self.baseline.clone(), 100 - canary_percent.min(100)),
            (self.canary.clone(), canary_percent.min(100)),
        ])
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct File {
    #[serde(default)]
    canaries: BTreeMap<String, CanaryState>,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot read canary state file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("canary state file {path} is not valid: {source}")]
    Parse {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("cannot write canary state file {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Every canary's state, in memory and (with a path) on disk.
pub struct Store {
    path: Option<PathBuf>,
    canaries: Mutex<BTreeMap<String, CanaryState>>,
}

impl Store {
    /// Reads the file at `path` (none yet: no canaries); `None`: memory
    /// only.
    pub fn open(path: Option<PathBuf>) -> Result<Self, StoreError> {
        let canaries = match &path {
            None => BTreeMap::new(),
            Some(p) => match std::fs::read_to_string(p) {
                Ok(text) => {
                    serde_json::from_str::<File>(&text)
                        .map_err(|source| StoreError::Parse {
                            path: p.clone(),
                            source,
                        })?
                        .canaries
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
                Err(source) => {
                    return Err(StoreError::Read {
                        path: p.clone(),
                        source,
                    });
                }
            },
        };
        Ok(Self {
            path,
            canaries: Mutex::new(canaries),
        })
    }

    pub fn get(&self, service: &str) -> Option<CanaryState> {
        self.canaries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(service)
            .cloned()
    }

    pub fn list(&self) -> Vec<CanaryState> {
        self.canaries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect()
    }

    /// Keeps `state` (replacing the service's earlier one) and writes the
    /// file. On a write error the memory keeps the change (the running
    /// canary goes on) and the error is returned to be reported.
    pub fn put(&self, state: CanaryState) -> Result<(), StoreError> {
        let mut canaries = self.canaries.lock().unwrap_or_else(|e| e.into_inner());
        canaries.insert(state.service.clone(), state);
        match &self.path {
            Some(p) => write_atomically(
                p,
                &File {
                    canaries: canaries.clone(),
                },
            ),
            None => Ok(()),
        }
    }
}

fn write_atomically(path: &Path, file: &File) -> Result<(), StoreError> {
    let err = |source| StoreError::Write {
        path: path.to_path_buf(),
        source,
    };
    let text = serde_json::to_string_pretty(file).map_err(|e| err(std::io::Error::other(e)))?;
    let tmp = path.with_extension("json.tmp");
    let mut f = std::fs::File::create(&tmp).map_err(err)?;
    f.write_all(text.as_bytes()).map_err(err)?;
    f.write_all(b"\n").map_err(err)?;
    f.sync_all().map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}
