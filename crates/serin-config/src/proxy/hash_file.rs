//! Files of hashed secrets that filters name (an htpasswd file, a file of
//! API keys): read line by line, each problem placed at the file's line.

use std::path::{Path, PathBuf};

use super::validate::readable_file;
use crate::decode::Spanned;
use crate::error::Problems;

/// A file of hashes, read: its path and its lines that say something.
pub(super) struct HashFile<'a> {
    field: &'a Spanned<String>,
    pub path: PathBuf,
    /// `(line number, text)` of every line that is neither blank nor a
    /// `#` comment, trimmed.
    pub lines: Vec<(usize, String)>,
}

impl<'a> HashFile<'a> {
    /// `None` when the file cannot be read (reported at `field`).
    pub fn read(field: &'a Spanned<String>, base_dir: &Path, p: &mut Problems) -> Option<Self> {
        let path = readable_file(field, base_dir, p);
        if !path.is_file() {
            return None;
        }
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) => {
                field.report(p, format!("cannot read {}: {e}", path.display()));
                return None;
            }
        };
        let lines = text
            .lines()
            .enumerate()
            .map(|(i, l)| (i + 1, l.trim().to_string()))
            .filter(|(_, l)| !l.is_empty() && !l.starts_with('#'))
            .collect();
        Some(Self { field, path, lines })
    }

    /// Reports a problem of line `line` of the file, at the field that
    /// names the file: `FIELD: PATH:LINE: message`.
    pub fn report(&self, p: &mut Problems, line: usize, message: impl std::fmt::Display) {
        self.field
            .report(p, format!("{}:{line}: {message}", self.path.display()));
    }

    /// Reports a problem of the whole file.
    pub fn report_file(&self, p: &mut Problems, message: impl std::fmt::Display) {
        self.field
            .report(p, format!("{}: {message}", self.path.display()));
    }
}
