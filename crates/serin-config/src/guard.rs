//! The boundary of config reading: a bug (a panic) while a file is decoded
//! or validated becomes a problem of that file, so that no caller — a
//! reload on SIGHUP, the file watcher, `POST /reload`, `serin apply` — is
//! taken down by it and the running config keeps serving.

use std::panic::{AssertUnwindSafe, catch_unwind};

use crate::error::{ConfigErrors, Problems, Span};

/// The start of the message of a problem made from a panic.
pub const INTERNAL_ERROR: &str = "internal error while reading the config";

/// Runs `read` (decoding and validating `file`); a panic in it is turned
/// into one problem of the file instead of unwinding into the caller.
pub(crate) fn read_guarded<T>(
    file: &str,
    read: impl FnOnce() -> Result<T, ConfigErrors>,
) -> Result<T, ConfigErrors> {
    // Unwind safety: `read` builds its values from scratch and shares
    // nothing with the caller but its inputs, which it only reads, so no
    // broken state can be seen after a panic.
    match catch_unwind(AssertUnwindSafe(read)) {
        Ok(result) => result,
        Err(payload) => {
            let what = payload
                .downcast_ref::<&str>()
                .map(|s| (*s).to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic without a message".to_string());
            let mut problems = Problems::new(file);
            problems.report(
                Span::new(1, 1),
                "",
                format!(
                    "{INTERNAL_ERROR}: {what} (a bug in serin: please report it; nothing was \
                     changed)"
                ),
            );
            Err(problems.into_errors())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_becomes_a_problem_of_the_file() {
        let errors = read_guarded::<()>("f.yaml", || panic!("index out of bounds"))
            .err()
            .unwrap_or_else(|| panic!("no error"));
        assert_eq!(errors.len(), 1);
        let text = errors.0[0].to_string();
        assert!(
            text.starts_with(&format!(
                "f.yaml:1:1: {INTERNAL_ERROR}: index out of bounds"
            )),
            "{text}"
        );
        let n = 3;
        let errors = read_guarded::<()>("f.yaml", || panic!("formatted {n}"))
            .err()
            .unwrap_or_else(|| panic!("no error"));
        assert!(errors.0[0].message.contains("formatted 3"), "{errors}");
        assert_eq!(read_guarded("f.yaml", || Ok(7)), Ok(7));
    }
}
