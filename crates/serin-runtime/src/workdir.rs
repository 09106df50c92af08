//! Private folders for what a replica is handed on disk: its `files` and its
//! `asFile` secrets. Folders are mode 0700 and files 0600, created before
//! anything is written into them, and removed with the replica (and the
//! whole runtime folder at shutdown).

use std::fs::{DirBuilder, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use serin_config::stack::VersionSpec;

/// The runtime's own folder, holding one folder per replica.
#[derive(Debug)]
pub(crate) struct WorkDir {
    pub root: PathBuf,
    /// Whether serin made `root` (then it removes it at shutdown).
    owned: bool,
}

impl WorkDir {
    /// Uses `dir` (created if missing) or makes a fresh one in the system's
    /// temporary folder.
    pub(crate) fn create(dir: Option<&Path>) -> io::Result<Self> {
        if let Some(dir) = dir {
            let existed = dir.exists();
            DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
            return Ok(Self {
                root: dir.to_path_buf(),
                owned: !existed,
            });
        }
        let base = std::env::temp_dir();
        let mut last = None;
        for _ in 0..16 {
            let root = base.join(format!(
                "serin-{}-{:08x}",
                std::process::id(),
                fastrand::u32(..)
            ));
            match DirBuilder::new().mode(0o700).create(&root) {
                Ok(()) => return Ok(Self { root, owned: true }),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| io::Error::other("cannot create a runtime folder")))
    }

    pub(crate) fn replica_dir(&self, replica: &str, uid: u64) -> PathBuf {
        self.root.join(format!("{replica}-{uid}"))
    }

    /// Removes everything serin wrote.
    pub(crate) fn remove(&self) {
        if self.owned {
            let _ = std::fs::remove_dir_all(&self.root);
        }
    }
}

/// The folders written for one replica, to name in its environment.
#[derive(Debug, Default, Clone)]
pub(crate) struct Written {
    pub files_dir: Option<PathBuf>,
    pub secrets_dir: Option<PathBuf>,
}

/// Writes a replica's files and `asFile` secrets under `dir` (rewritten on
/// every start, so a crash that scribbled on them is undone).
pub(crate) fn write_replica_dir(dir: &Path, spec: &VersionSpec) -> io::Result<Written> {
    let mut written = Written::default();
    let secrets: Vec<_> = spec.secrets.iter().filter(|s| s.as_file).collect();
    if spec.files.is_empty() && secrets.is_empty() {
        return Ok(written);
    }
    private_dir(dir)?;
    if !spec.files.is_empty() {
        let files = dir.join("files");
        private_dir(&files)?;
        for f in &spec.files {
            let path = files.join(&f.path);
            if let Some(parent) = path.parent() {
                private_dir(parent)?;
            }
            private_file(&path, &f.content)?;
        }
        written.files_dir = Some(files);
    }
    if !secrets.is_empty() {
        let sdir = dir.join("secrets");
        private_dir(&sdir)?;
        for s in secrets {
            private_file(&sdir.join(&s.name), s.value.expose().as_bytes())?;
        }
        written.secrets_dir = Some(sdir);
    }
    Ok(written)
}

fn private_dir(dir: &Path) -> io::Result<()> {
    DirBuilder::new().recursive(true).mode(0o700).create(dir)
}

/// Writes a file that only serin's user can read; the mode is set when the
/// file is created, so its content is never readable by others.
fn private_file(path: &Path, content: &[u8]) -> io::Result<()> {
    // Remove first: an existing file keeps its old mode on open.
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(content)?;
    f.sync_all()
}
