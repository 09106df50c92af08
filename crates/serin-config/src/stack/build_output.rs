//! Which versions run a service's build output (`watch.output`), and the
//! same versions moved to run a copy of it instead: the pure part of
//! running each build of an `auto: true` service from its own copy.
//!
//! A version runs the output when its `command` is the output or lies in
//! it (a folder), or when one of its `args` does, read as replicas read it:
//! relative to the stack file's folder, their working directory.

use std::path::{Path, PathBuf};

use super::model::{Program, VersionSpec};

/// The folder beside the stack file `NAME.yaml` that holds the copies of
/// the builds automatic canaries judge (`NAME.builds`): the binary writes
/// there, the watcher ignores it.
pub const BUILDS_SUFFIX: &str = ".builds";

/// Where `path` lies relative to `root`: `Some("")` for `root` itself.
fn inside<'a>(path: &'a Path, root: &Path) -> Option<&'a Path> {
    path.strip_prefix(root).ok()
}

/// `arg` as a path from the replica's working directory `base_dir`.
fn arg_path(base_dir: &Path, arg: &str) -> PathBuf {
    base_dir.join(arg)
}

/// Whether `version` runs something in `output`.
pub fn runs_from(version: &VersionSpec, output: &Path, base_dir: &Path) -> bool {
    let command = matches!(&version.program, Program::Path(p) if inside(p, output).is_some());
    command
        || version
            .args
            .iter()
            .any(|a| inside(&arg_path(base_dir, a), output).is_some())
}

/// `version` running from `to` whatever it ran from `from` (its command,
/// its args); anything else is left as it is.
pub fn relocate(version: &mut VersionSpec, from: &Path, to: &Path, base_dir: &Path) {
    let moved = |path: &Path| inside(path, from).map(|rest| join(to, rest));
    if let Program::Path(p) = &version.program
        && let Some(new) = moved(p)
    {
        version.program = Program::Path(new);
    }
    for arg in &mut version.args {
        if let Some(new) = moved(&arg_path(base_dir, arg)) {
            *arg = new.display().to_string();
        }
    }
}

fn join(root: &Path, rest: &Path) -> PathBuf {
    match rest.as_os_str().is_empty() {
        true => root.to_path_buf(),
        false => root.join(rest),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A version of a real stack file, then given `program` and `args`.
    fn version(program: Program, args: &[&str]) -> VersionSpec {
        let text = "services:\n  - name: app\n    command: app\n";
        let parsed = crate::stack::parse_stack_file(text, "t.yaml", Path::new("/srv/app"))
            .unwrap_or_else(|e| panic!("{e}"));
        VersionSpec {
            program,
            args: args.iter().map(|a| a.to_string()).collect(),
            ..parsed.stack.services[0].versions[0].clone()
        }
    }

    /// (command, args, output, runs from it, command and args once moved
    /// to /b/1/OUT-NAME)
    type Row<'a> = (
        Program,
        &'a [&'a str],
        &'a str,
        bool,
        Program,
        &'a [&'a str],
    );

    #[test]
    fn what_runs_from_an_output_and_where_it_runs_from_once_moved() {
        let base = Path::new("/srv/app");
        let path = |p: &str| Program::Path(PathBuf::from(p));
        let name = |n: &str| Program::Name(n.to_string());
        let cases: &[Row] = &[
            // The output is the program (written `./out/run.sh`).
            (
                path("/srv/app/./out/run.sh"),
                &["--port", "8080"],
                "/srv/app/out/run.sh",
                true,
                path("/b/1/run.sh"),
                &["--port", "8080"],
            ),
            // A folder holding the program.
            (
                path("/srv/app/dist/bin/app"),
                &[],
                "/srv/app/dist",
                true,
                path("/b/1/dist/bin/app"),
                &[],
            ),
            // An interpreter running a script in the output, relative to
            // the stack folder, as the replica's working directory reads it.
            (
                name("node"),
                &["dist/index.js", "--verbose"],
                "/srv/app/dist",
                true,
                name("node"),
                &["/b/1/dist/index.js", "--verbose"],
            ),
            // A name that only starts like the output is not in it.
            (
                path("/srv/app/out/run.sh.bak"),
                &["out/run.shx"],
                "/srv/app/out/run.sh",
                false,
                path("/srv/app/out/run.sh.bak"),
                &["out/run.shx"],
            ),
            // Nothing of the output.
            (
                name("serin-demo"),
                &["qotm"],
                "/srv/app/out",
                false,
                name("serin-demo"),
                &["qotm"],
            ),
        ];
        for (program, args, output, runs, moved_program, moved_args) in cases {
            let output = Path::new(output);
            let mut v = version(program.clone(), args);
            assert_eq!(runs_from(&v, output, base), *runs, "{program} {args:?}");
            let to = Path::new("/b/1").join(output.file_name().unwrap_or_default());
            relocate(&mut v, output, &to, base);
            assert_eq!(&v.program, moved_program, "{program} {args:?}");
            assert_eq!(v.args, *moved_args, "{program} {args:?}");
        }
    }

    #[test]
    fn a_copy_moved_to_the_next_copy() {
        let base = Path::new("/srv/app");
        let mut v = version(Program::Path("/b/1/run.sh".into()), &[]);
        relocate(
            &mut v,
            Path::new("/b/1/run.sh"),
            Path::new("/b/2/run.sh"),
            base,
        );
        assert_eq!(v.program, Program::Path("/b/2/run.sh".into()));
    }
}
