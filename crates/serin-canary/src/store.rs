//! The canary state: every canary (one per service, the last one started)
//! with its phase, step, weights and counters, saved whole on every change
//! before the next window starts, so a restarted serin (even after SIGKILL)
//! resumes from it. Where it is saved is a [`StateBackend`]: the state
//! file `NAME.canary.json` beside the config or stack file (written
//! atomically: temporary file, fsync, rename), or, for `serin canary run
//! --kubernetes`, an annotation on the HTTPRoute.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use crate::analysis::Analysis;
use crate::gate::Waiting;
use crate::settings::Settings;
use crate::sink::RuleRef;
use crate::source::{BoxFuture, Target};

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
    /// No traffic has moved yet: its pre-rollout webhooks or its
    /// confirm-rollout gate are still to pass (weights stay at 0).
    #[serde(default)]
    pub before_rollout: bool,
    /// Its pre-rollout webhooks answered 2xx (they are not called again,
    /// even after a restart).
    #[serde(default)]
    pub pre_rollout_passed: bool,
    /// The gate that holds it, while one does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting: Option<Waiting>,
    /// Opened over the API (`serin canary approve`): the approval gate lets
    /// it be promoted.
    #[serde(default)]
    pub approved: bool,
    /// Promoted or rolled back, and its post-rollout webhooks not called
    /// yet: a restart calls them.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub post_rollout_pending: bool,
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
    #[error("canary state in {place} is not valid: {source}")]
    Parse {
        place: String,
        source: serde_json::Error,
    },
    #[error("cannot write canary state file {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A [`StateBackend`] other than a file failed.
    #[error("canary state in {place}: {message}")]
    Backend { place: String, message: String },
}

/// Where the canaries' state is kept between runs: the text of the state
/// (JSON), read once at start and written whole on every change. A file
/// ([`FileBackend`]) beside the config or stack; in a cluster, an
/// annotation on the HTTPRoute (crates/serin-kube).
pub trait StateBackend: Send + Sync + std::fmt::Debug {
    /// Where it is, for messages: a path, `HTTPRoute ns/name`.
    fn place(&self) -> String;

    /// The text last saved; `None` when nothing was saved yet.
    fn load(&self) -> BoxFuture<'_, Result<Option<String>, StoreError>>;

    /// Replaces the saved text with `text`, durably, before returning.
    fn save<'a>(&'a self, text: &'a str) -> BoxFuture<'a, Result<(), StoreError>>;
}

/// The state file, `NAME.canary.json`: written atomically (temporary file,
/// fsync, rename).
#[derive(Debug)]
pub struct FileBackend {
    path: PathBuf,
}

impl FileBackend {
    pub fn new(path: PathBuf) -> Self {
        Self { path }
    }
}

impl StateBackend for FileBackend {
    fn place(&self) -> String {
        self.path.display().to_string()
    }

    fn load(&self) -> BoxFuture<'_, Result<Option<String>, StoreError>> {
        Box::pin(async move {
            match std::fs::read_to_string(&self.path) {
                Ok(text) => Ok(Some(text)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(source) => Err(StoreError::Read {
                    path: self.path.clone(),
                    source,
                }),
            }
        })
    }

    fn save<'a>(&'a self, text: &'a str) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move { write_atomically(&self.path, text) })
    }
}

/// Every canary's state, in memory and (with a backend) saved.
pub struct Store {
    backend: Option<Arc<dyn StateBackend>>,
    canaries: Mutex<BTreeMap<String, CanaryState>>,
    /// Held while saving, so that saves land in the order of the changes.
    saving: tokio::sync::Mutex<()>,
}

impl Store {
    /// Reads what `backend` saved (nothing yet: no canaries); `None`:
    /// memory only.
    pub async fn open(backend: Option<Arc<dyn StateBackend>>) -> Result<Self, StoreError> {
        let canaries = match &backend {
            None => BTreeMap::new(),
            Some(b) => match b.load().await? {
                Some(text) => serde_json::from_str::<File>(&text)
                    .map_err(|source| StoreError::Parse {
                        place: b.place(),
                        source,
                    })?
                    .canaries
                    .into_iter()
                    .map(|(service, mut state)| {
                        state.settings.fill_in_checks();
                        (service, state)
                    })
                    .collect(),
                None => BTreeMap::new(),
            },
        };
        Ok(Self {
            backend,
            canaries: Mutex::new(canaries),
            saving: tokio::sync::Mutex::new(()),
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

    /// Sets `post_rollout_pending` of canary `id` of `service` to false and
    /// saves, unless another canary of the service took its place.
    pub async fn post_rollout_done(&self, service: &str, id: u64) -> Result<(), StoreError> {
        let state = {
            let canaries = self.canaries.lock().unwrap_or_else(|e| e.into_inner());
            match canaries.get(service) {
                Some(s) if s.id == id && s.post_rollout_pending => {
                    let mut s = s.clone();
                    s.post_rollout_pending = false;
                    s
                }
                _ => return Ok(()),
            }
        };
        self.put_if(state, |old| old.is_some_and(|o| o.id == id))
            .await
    }

    /// Keeps `state` (replacing the service's earlier one) and saves every
    /// canary. On a save error the memory keeps the change (the running
    /// canary goes on) and the error is returned to be reported.
    pub async fn put(&self, state: CanaryState) -> Result<(), StoreError> {
        self.put_if(state, |_| true).await
    }

    /// [`Store::put`] when `keep` says yes to the service's state now
    /// (checked under the lock, so a canary started meanwhile is not
    /// overwritten).
    async fn put_if(
        &self,
        state: CanaryState,
        keep: impl FnOnce(Option<&CanaryState>) -> bool,
    ) -> Result<(), StoreError> {
        let _in_order = self.saving.lock().await;
        let file = {
            let mut canaries = self.canaries.lock().unwrap_or_else(|e| e.into_inner());
            if !keep(canaries.get(&state.service)) {
                return Ok(());
            }
            canaries.insert(state.service.clone(), state);
            File {
                canaries: canaries.clone(),
            }
        };
        let Some(backend) = &self.backend else {
            return Ok(());
        };
        let text = serde_json::to_string_pretty(&file).map_err(|e| StoreError::Backend {
            place: backend.place(),
            message: e.to_string(),
        })?;
        backend.save(&text).await
    }
}

/// The mode of serin's state files: read and written by serin's user only.
const STATE_FILE_MODE: u32 = 0o600;

fn write_atomically(path: &Path, text: &str) -> Result<(), StoreError> {
    let err = |source| StoreError::Write {
        path: path.to_path_buf(),
        source,
    };
    let tmp = path.with_extension("json.tmp");
    // Owner only: the automatic canaries' state holds stack file texts,
    // and with them any secret written inline.
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(STATE_FILE_MODE)
        .open(&tmp)
        .map_err(err)?;
    // A file left by an older serin keeps its mode through `open`.
    f.set_permissions(std::fs::Permissions::from_mode(STATE_FILE_MODE))
        .map_err(err)?;
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

#[cfg(test)]
mod file_tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn a_state_file_is_written_whole_and_readable_by_its_owner_only() {
        let dir = std::env::temp_dir().join(format!("serin-store-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
        let path = dir.join("stack.canary-auto.json");
        // An older file, world-readable: the next save tightens it.
        std::fs::write(path.with_extension("json.tmp"), "old").unwrap_or_else(|e| panic!("{e}"));
        let mode = std::fs::Permissions::from_mode(0o644);
        std::fs::set_permissions(path.with_extension("json.tmp"), mode)
            .unwrap_or_else(|e| panic!("{e}"));
        write_atomically(&path, "{\"a\": 1}").unwrap_or_else(|e| panic!("{e}"));
        let meta = std::fs::metadata(&path).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(text, "{\"a\": 1}\n");
        std::fs::remove_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
    }
}
