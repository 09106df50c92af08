//! Tells when TLS files change on disk (inotify on Linux, through
//! `notify`). The folders holding the files are watched, not the files:
//! an editor's save, `mv new.pem cert.pem` and Kubernetes' swap of a
//! Secret volume's `..data` link all replace the file rather than write
//! it, and a watch on the old file would see nothing of its successor.
//!
//! A missed event: when the kernel's queue overflows, notify says so
//! (`need_rescan`) and every file is read again; a reload of the config
//! (SIGHUP, `serin apply`) reads them again too. Reading is cheap and a
//! read that finds the same bytes changes nothing.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use notify::event::{AccessKind, AccessMode};
use notify::{EventKind, RecursiveMode, Watcher};

/// Events closer together than this are one change: a certificate and its
/// key are written one after the other, and reading between the two
/// would log a mismatch that fixes itself a moment later.
const SETTLE: Duration = Duration::from_millis(200);

/// Watches while it lives; dropping it ends the watch and its thread.
pub struct FileWatch {
    _watcher: notify::RecommendedWatcher,
}

impl FileWatch {
    /// Calls `on_change` (on a thread of its own) after each change of
    /// any of `files`.
    pub fn start(
        files: Vec<PathBuf>,
        on_change: impl Fn() + Send + 'static,
    ) -> notify::Result<Self> {
        let files: BTreeSet<PathBuf> = files.iter().map(|f| absolute(f)).collect();
        let dirs: BTreeSet<PathBuf> = files
            .iter()
            .map(|f| {
                f.parent()
                    .map_or_else(|| PathBuf::from("/"), Path::to_path_buf)
            })
            .collect();
        let (tx, rx) = mpsc::channel();
        let mut watcher = notify::recommended_watcher(tx)?;
        for d in &dirs {
            watcher.watch(d, RecursiveMode::NonRecursive)?;
        }
        std::thread::Builder::new()
            .name("serin-tls-watch".into())
            .spawn(move || settle_and_call(&rx, &files, &on_change))
            .map_err(notify::Error::io)?;
        Ok(Self { _watcher: watcher })
    }
}

/// Until the watcher is dropped: waits for a change that concerns the
/// files, lets it settle (until [`SETTLE`] passes with no other such
/// change), calls `on_change`.
fn settle_and_call(
    rx: &mpsc::Receiver<notify::Result<notify::Event>>,
    files: &BTreeSet<PathBuf>,
    on_change: &impl Fn(),
) {
    while let Ok(first) = rx.recv() {
        if !concerns(&first, files) {
            continue;
        }
        let mut quiet_until = Instant::now() + SETTLE;
        loop {
            let left = quiet_until.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(next) if concerns(&next, files) => quiet_until = Instant::now() + SETTLE,
                Ok(_) => {}
                Err(mpsc::RecvTimeoutError::Timeout) => break,
                Err(mpsc::RecvTimeoutError::Disconnected) => return,
            }
        }
        on_change();
    }
}

/// Whether an event may have changed one of `files`: a change (not a
/// read: reading the files, serin's own reads included, changes nothing)
/// that names one, or a `..`-prefixed entry beside them (Kubernetes'
/// atomic writer); or the watcher lost events or failed.
fn concerns(event: &notify::Result<notify::Event>, files: &BTreeSet<PathBuf>) -> bool {
    match event {
        Err(e) => {
            tracing::warn!(error = %e, "watching TLS files: reading them again");
            true
        }
        Ok(ev) if ev.need_rescan() => true,
        Ok(ev) if is_read(ev.kind) => false,
        Ok(ev) => ev.paths.iter().any(|p| {
            files.contains(p)
                || p.file_name()
                    .is_some_and(|n| n.as_encoded_bytes().starts_with(b".."))
        }),
    }
}

/// An open, a read or a close without writing.
fn is_read(kind: EventKind) -> bool {
    matches!(kind, EventKind::Access(a) if a != AccessKind::Close(AccessMode::Write))
}

fn absolute(p: &Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_beside_the_files_that_cannot_change_them_are_ignored() {
        let files: BTreeSet<PathBuf> = [PathBuf::from("/etc/tls/cert.pem")].into();
        let event = |path: &str| {
            Ok(notify::Event::new(notify::EventKind::Any).add_path(PathBuf::from(path)))
        };
        let read = |path: &str| {
            let kind = EventKind::Access(AccessKind::Close(AccessMode::Read));
            Ok(notify::Event::new(kind).add_path(PathBuf::from(path)))
        };
        let written = |path: &str| {
            let kind = EventKind::Access(AccessKind::Close(AccessMode::Write));
            Ok(notify::Event::new(kind).add_path(PathBuf::from(path)))
        };
        let rescan =
            Ok(notify::Event::new(notify::EventKind::Other).set_flag(notify::event::Flag::Rescan));
        #[rustfmt::skip]
        let cases = [
            ("the file", event("/etc/tls/cert.pem"), true),
            ("a Secret volume's link", event("/etc/tls/..data"), true),
            ("another file", event("/etc/tls/notes.txt"), false),
            ("a read of the file", read("/etc/tls/cert.pem"), false),
            ("a write of the file ending", written("/etc/tls/cert.pem"), true),
            ("events lost", rescan, true),
            ("a watch error", Err(notify::Error::generic("gone")), true),
        ];
        for (what, ev, want) in cases {
            assert_eq!(concerns(&ev, &files), want, "{what}");
        }
    }
}
