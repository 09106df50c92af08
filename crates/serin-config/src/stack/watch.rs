//! A service's `watch:` section (`serin up --watch`): the paths whose
//! changes rebuild the service, the globs that do not count, and the build
//! command. Decoded here, checked here, and the one place the meaning of an
//! `ignore` glob is defined ([`IgnoreRules`]), for the checks and the
//! watcher alike.

use std::path::{Component, Path, PathBuf};

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};

use crate::config_struct;
use crate::decode::{Decode, Node, Spanned};
use crate::error::Problems;

/// Ignored under every watched path, whatever `ignore` says: build outputs
/// (Cargo's and many others' `target/`) and the repository's own folder.
/// A build that writes into a watched path it does not ignore would start
/// itself again and again.
pub const DEFAULT_WATCH_IGNORE: &[&str] = &["target", ".git"];

config_struct! {
    /// `watch:` as written.
    pub struct RawWatch {
        paths: Spanned<Vec<Spanned<String>>> = "paths" [required],
        ignore: Option<Vec<Spanned<String>>> = "ignore",
        build: Option<RawBuild> = "build",
        output: Option<Spanned<String>> = "output",
    }
}

/// A build command: a shell line (`cargo build`) or a program and its
/// arguments (`[go, build, -o, bin/app, .]`).
#[derive(Debug, Clone, Default)]
pub struct RawBuild {
    pub argv: Spanned<Vec<String>>,
    /// Written as one string, run by `sh -c`.
    pub shell: bool,
}

impl Decode for RawBuild {
    fn decode(node: Node<'_>, problems: &mut Problems) -> Option<Self> {
        if node.is_sequence() {
            return Some(Self {
                argv: Spanned::<Vec<String>>::decode(node, problems)?,
                shell: false,
            });
        }
        let line = Spanned::<String>::decode(node, problems)?;
        Some(Self {
            argv: Spanned {
                value: vec![line.value],
                span: line.span,
                path: line.path,
            },
            shell: true,
        })
    }
}

/// A validated `watch:` section.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WatchSpec {
    /// Absolute; each existed when the file was loaded.
    pub paths: Vec<PathBuf>,
    /// The globs as written, then [`DEFAULT_WATCH_IGNORE`]; each compiles.
    pub ignore: Vec<String>,
    /// `None`: a change only rolls the versions out again.
    pub build: Option<BuildCommand>,
    /// What the build writes (a file or a folder, absolute) that the
    /// versions run. With `auto: true` each successful build is copied out
    /// of it, so a new build is a new revision and the running one keeps
    /// its own copy. `None`: the build replaces what the versions run.
    pub output: Option<PathBuf>,
}

/// A service's build command.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BuildCommand {
    /// What runs: the program and its arguments (`sh -c LINE` for a line).
    pub argv: Vec<String>,
    /// As written, for messages.
    pub written: String,
}

impl WatchSpec {
    /// The compiled `ignore` globs.
    pub fn ignore_rules(&self) -> Result<IgnoreRules, WatchError> {
        IgnoreRules::new(&self.ignore)
    }
}

/// A glob of `ignore` that does not compile.
#[derive(Debug, thiserror::Error)]
#[error("`{pattern}` is not a glob: {reason}")]
pub struct WatchError {
    pub pattern: String,
    pub reason: String,
}

/// What `ignore` globs mean, gitignore-like: a glob without a `/` matches
/// a name at any depth (`*.log`, `target`); one with a `/` is anchored at
/// the watched path (`src/generated`); a glob that matches a folder
/// ignores everything beneath it; a trailing `/` is dropped.
#[derive(Debug, Clone)]
pub struct IgnoreRules {
    globs: GlobSet,
}

impl IgnoreRules {
    pub fn new(patterns: &[String]) -> Result<Self, WatchError> {
        let mut set = GlobSetBuilder::new();
        for pattern in patterns {
            set.add(compile(pattern)?);
        }
        let globs = set.build().map_err(|e| WatchError {
            pattern: patterns.join(", "),
            reason: e.to_string(),
        })?;
        Ok(Self { globs })
    }

    /// Whether a changed path, relative to the watched path, is ignored:
    /// the path itself or a folder above it matches a glob.
    pub fn is_ignored(&self, relative: &Path) -> bool {
        let mut prefix = PathBuf::new();
        for part in relative.components() {
            if let Component::Normal(name) = part {
                prefix.push(name);
                if self.globs.is_match(&prefix) {
                    return true;
                }
            }
        }
        false
    }
}

fn compile(pattern: &str) -> Result<globset::Glob, WatchError> {
    let trimmed = pattern.trim_end_matches('/');
    let anchored = trimmed.trim_start_matches("./");
    let full = if anchored.contains('/') {
        anchored.to_string()
    } else {
        format!("**/{anchored}")
    };
    GlobBuilder::new(&full)
        .literal_separator(true)
        .build()
        .map_err(|e| WatchError {
            pattern: pattern.to_string(),
            reason: e.kind().to_string(),
        })
}

/// Checks a `watch:` section; every problem is reported at its place.
/// `base_dir`: the stack file's folder, which relative paths start from.
pub(super) fn validate(raw: &RawWatch, base_dir: &Path, p: &mut Problems) -> WatchSpec {
    if raw.paths.value.is_empty() {
        raw.paths.report(
            p,
            "`paths` is empty: give the folders or files to watch, e.g. [src]",
        );
    }
    let paths = raw
        .paths
        .value
        .iter()
        .filter_map(|path| watched_path(path, base_dir, p))
        .collect();
    let mut ignore = Vec::new();
    for glob in raw.ignore.iter().flatten() {
        match compile(&glob.value) {
            Ok(_) if glob.value.trim().is_empty() => glob.report(p, "an `ignore` glob is empty"),
            Ok(_) => ignore.push(glob.value.clone()),
            Err(e) => glob.report(p, e.to_string()),
        }
    }
    ignore.extend(DEFAULT_WATCH_IGNORE.iter().map(|g| g.to_string()));
    WatchSpec {
        paths,
        ignore,
        build: raw.build.as_ref().and_then(|b| build(b, base_dir, p)),
        output: raw
            .output
            .as_ref()
            .and_then(|o| output(o, raw, base_dir, p)),
    }
}

/// `output`, made absolute; it need not exist yet (the first build makes
/// it), but it only means something with a `build`.
fn output(
    output: &Spanned<String>,
    raw: &RawWatch,
    base_dir: &Path,
    p: &mut Problems,
) -> Option<PathBuf> {
    if output.value.trim().is_empty() {
        output.report(
            p,
            "`output` is empty: give the file or folder the build writes",
        );
        return None;
    }
    if raw.build.is_none() {
        output.report(
            p,
            "`output` names what the build writes, and this `watch:` has no `build`",
        );
        return None;
    }
    Some(base_dir.join(&output.value))
}

/// One of `paths`, made absolute; it must exist.
fn watched_path(path: &Spanned<String>, base_dir: &Path, p: &mut Problems) -> Option<PathBuf> {
    if path.value.trim().is_empty() {
        path.report(p, "a watched path is empty");
        return None;
    }
    let full = base_dir.join(&path.value);
    match std::fs::metadata(&full) {
        Ok(_) => Some(full),
        Err(e) => {
            path.report(
                p,
                format!("cannot watch `{}`: {e} ({})", path.value, full.display()),
            );
            None
        }
    }
}

/// The build's program and arguments; a program given as a relative path
/// (`./build.sh`) is made absolute against `base_dir`, as `command` is.
fn build(raw: &RawBuild, base_dir: &Path, p: &mut Problems) -> Option<BuildCommand> {
    let argv = &raw.argv;
    if argv
        .value
        .first()
        .is_none_or(|first| first.trim().is_empty())
    {
        argv.report(
            p,
            "`build` is empty: give a command, e.g. `cargo build` or [go, build, -o, bin/app, .]",
        );
        return None;
    }
    if argv.value.iter().any(|a| a.contains('\0')) {
        argv.report(p, "`build` cannot hold a NUL character");
        return None;
    }
    let written = argv.value.join(" ");
    if raw.shell {
        let argv = vec!["sh".into(), "-c".into(), written.clone()];
        return Some(BuildCommand { argv, written });
    }
    let mut argv = argv.value.clone();
    if argv[0].contains('/') {
        argv[0] = base_dir.join(&argv[0]).display().to_string();
    }
    Some(BuildCommand { argv, written })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ignore_globs_match_like_gitignore() {
        let rules = IgnoreRules::new(&[
            "*.log".to_string(),
            "src/generated/".to_string(),
            "target".to_string(),
        ])
        .unwrap();
        for (path, ignored) in [
            ("app.log", true),
            ("deep/down/app.log", true),
            ("target/debug/app", true),
            ("crates/x/target/debug/app", true),
            ("src/generated/schema.rs", true),
            ("other/src/generated/schema.rs", false),
            ("src/main.rs", false),
            ("targets/main.rs", false),
            ("log", false),
        ] {
            assert_eq!(rules.is_ignored(Path::new(path)), ignored, "{path}");
        }
    }

    #[test]
    fn a_glob_that_does_not_compile_is_named() {
        let e = IgnoreRules::new(&["src/[a".to_string()]).unwrap_err();
        assert!(e.to_string().starts_with("`src/[a` is not a glob"), "{e}");
    }
}
