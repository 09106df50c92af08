//! The builds automatic canaries judge: each successful build of an
//! `auto: true` service is copied out of its `watch.output` into
//! `STEM.builds/SERVICE/DIGEST/NAME` beside the stack file, and its
//! versions run the copy. So a new build is a new revision (its path
//! differs), the running revision keeps its own copy (a replica it
//! restarts runs the build it was judged with, not the one being judged),
//! and the same bytes built again are the same revision (the folder is
//! named by their digest). Copies no revision uses any more are removed.

use std::collections::BTreeSet;
use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// The folder beside `stack_file` (`NAME.yaml`) holding the copies:
/// `NAME.builds` (the watcher ignores it).
pub fn builds_dir(stack_file: &Path) -> PathBuf {
    serin_config::beside(stack_file, serin_config::stack::build_output::BUILDS_SUFFIX)
}

/// How many hex digits of the output's SHA-256 name its copy: 96 bits,
/// far beyond any number of builds one stack sees.
const DIGEST_HEX_DIGITS: usize = 24;

/// Why a build output could not be copied.
#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    #[error(
        "service `{service}`: cannot read its build output {} (`watch.output`; does the build \
         write it?): {source}",
        path.display()
    )]
    Read {
        service: String,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("service `{service}`: cannot copy its build output to {}: {source}", path.display())]
    Write {
        service: String,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Copies `output` (a file or a folder) into `builds/SERVICE/DIGEST/`
/// unless a copy of the same bytes is there already; returns what the
/// versions run instead of `output`: the copy's path.
pub fn copy_output(builds: &Path, service: &str, output: &Path) -> Result<PathBuf, CopyError> {
    let read = |path: &Path, source| CopyError::Read {
        service: service.to_string(),
        path: path.to_path_buf(),
        source,
    };
    let digest = digest(output).map_err(|(path, e)| read(&path, e))?;
    let name = output.file_name().unwrap_or_default();
    let folder = builds.join(service).join(&digest);
    let copy = folder.join(name);
    if copy.exists() {
        return Ok(copy);
    }
    let write = |path: &Path, source| CopyError::Write {
        service: service.to_string(),
        path: path.to_path_buf(),
        source,
    };
    // Copied whole into a temporary folder, then renamed: a copy that is
    // there is complete, even after a crash part-way.
    let tmp = builds
        .join(service)
        .join(format!(".{digest}.{}.tmp", std::process::id()));
    let _ = fs::remove_dir_all(&tmp);
    fs::create_dir_all(&tmp).map_err(|e| write(&tmp, e))?;
    copy_tree(output, &tmp.join(name)).map_err(|e| write(&tmp, e))?;
    match fs::rename(&tmp, &folder) {
        Ok(()) => Ok(copy),
        // Another copy of the same bytes got there first.
        Err(_) if copy.exists() => {
            let _ = fs::remove_dir_all(&tmp);
            Ok(copy)
        }
        Err(e) => {
            let _ = fs::remove_dir_all(&tmp);
            Err(write(&folder, e))
        }
    }
}

/// Removes the copies of `builds` that none of `keep` lies in (the paths
/// the running and held revisions run), and leftovers of copies cut
/// short. A copy that cannot be removed is left, with a warning.
pub fn prune(builds: &Path, keep: &BTreeSet<PathBuf>) {
    let Ok(services) = fs::read_dir(builds) else {
        return;
    };
    for service in services.flatten() {
        let Ok(copies) = fs::read_dir(service.path()) else {
            continue;
        };
        for copy in copies.flatten() {
            let path = copy.path();
            if keep.iter().any(|k| k.starts_with(&path)) {
                continue;
            }
            if let Err(e) = fs::remove_dir_all(&path) {
                tracing::warn!(path = %path.display(), error = %e, "cannot remove an unused build copy");
            }
        }
    }
}

/// SHA-256 over the output's files in name order: each one's path inside
/// the output, whether it is executable, and its bytes. Or the path that
/// could not be read.
fn digest(output: &Path) -> Result<String, (PathBuf, io::Error)> {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    let mut files = Vec::new();
    list_files(output, &mut files)?;
    for path in files {
        let meta = fs::metadata(&path).map_err(|e| (path.clone(), e))?;
        let name = path.strip_prefix(output).unwrap_or(&path).to_string_lossy();
        ctx.update(&(name.len() as u64).to_le_bytes());
        ctx.update(name.as_bytes());
        ctx.update(&[u8::from(meta.permissions().mode() & 0o111 != 0)]);
        ctx.update(&meta.len().to_le_bytes());
        hash_file(&mut ctx, &path).map_err(|e| (path.clone(), e))?;
    }
    let sum = ctx.finish();
    let hex: String = sum.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    Ok(hex[..DIGEST_HEX_DIGITS].to_string())
}

/// Feeds the bytes of the file at `path` to `ctx`, a chunk at a time (an
/// output may be a binary of hundreds of megabytes).
fn hash_file(ctx: &mut ring::digest::Context, path: &Path) -> io::Result<()> {
    let mut file = fs::File::open(path)?;
    let mut chunk = vec![0; HASH_CHUNK];
    loop {
        match file.read(&mut chunk) {
            Ok(0) => return Ok(()),
            Ok(n) => ctx.update(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// The read size while hashing an output: large enough that the syscalls
/// do not count beside the hashing.
const HASH_CHUNK: usize = 256 * 1024;

/// The files at or under `path`, sorted by name, into `out`.
fn list_files(path: &Path, out: &mut Vec<PathBuf>) -> Result<(), (PathBuf, io::Error)> {
    let meta = fs::metadata(path).map_err(|e| (path.to_path_buf(), e))?;
    if !meta.is_dir() {
        out.push(path.to_path_buf());
        return Ok(());
    }
    let mut entries: Vec<PathBuf> = fs::read_dir(path)
        .map_err(|e| (path.to_path_buf(), e))?
        .map(|entry| entry.map(|e| e.path()))
        .collect::<Result<_, _>>()
        .map_err(|e| (path.to_path_buf(), e))?;
    entries.sort();
    for entry in entries {
        list_files(&entry, out)?;
    }
    Ok(())
}

/// Copies a file (its permissions with it) or a folder, following links.
fn copy_tree(from: &Path, to: &Path) -> io::Result<()> {
    if !fs::metadata(from)?.is_dir() {
        return fs::copy(from, to).map(|_| ());
    }
    fs::create_dir_all(to)?;
    for entry in fs::read_dir(from)? {
        let entry = entry?;
        copy_tree(&entry.path(), &to.join(entry.file_name()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp() -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "serin-builds-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos())
        ));
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn the_same_bytes_are_one_copy_and_new_bytes_another_and_unused_ones_go() {
        let dir = temp();
        let (out, builds) = (dir.join("out"), dir.join("stack.builds"));
        fs::create_dir_all(out.join("lib")).unwrap();
        fs::write(out.join("run.sh"), "v1").unwrap();
        fs::write(out.join("lib/data"), "d").unwrap();
        let first = copy_output(&builds, "app", &out).unwrap();
        assert_eq!(fs::read_to_string(first.join("run.sh")).unwrap(), "v1");
        assert_eq!(fs::read_to_string(first.join("lib/data")).unwrap(), "d");
        assert_eq!(first.file_name(), out.file_name());
        // Built again, the same bytes: the same copy.
        assert_eq!(copy_output(&builds, "app", &out).unwrap(), first);

        fs::write(out.join("run.sh"), "v2").unwrap();
        let second = copy_output(&builds, "app", &out).unwrap();
        assert_ne!(second, first);
        assert_eq!(fs::read_to_string(first.join("run.sh")).unwrap(), "v1");

        // An executable bit alone is a new build too.
        let mut perms = fs::metadata(out.join("run.sh")).unwrap().permissions();
        perms.set_mode(0o755);
        fs::set_permissions(out.join("run.sh"), perms).unwrap();
        let third = copy_output(&builds, "app", &out).unwrap();
        assert_ne!(third, second);

        prune(&builds, &BTreeSet::from([second.join("run.sh")]));
        assert!(!first.exists() && !third.exists() && second.exists());
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn an_output_the_build_did_not_write_says_which_and_why() {
        let dir = temp();
        let err = copy_output(&dir.join("b"), "app", &dir.join("missing")).unwrap_err();
        let text = err.to_string();
        assert!(
            text.starts_with("service `app`: cannot read its build output")
                && text.contains("missing"),
            "{text}"
        );
        fs::remove_dir_all(&dir).unwrap();
    }
}
