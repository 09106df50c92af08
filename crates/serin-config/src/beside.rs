//! Where serin keeps what it writes about a config or stack file: beside
//! it, named after it (`NAME.yaml` → `NAME.state.json`, `NAME.builds`, …).

use std::path::{Path, PathBuf};

/// `NAME` + `suffix` in the folder of the file `NAME.EXT` (`serin` + `suffix`
/// for a path without a file name).
pub fn beside(file: &Path, suffix: &str) -> PathBuf {
    let stem = file
        .file_stem()
        .map_or_else(|| "serin".into(), |s| s.to_string_lossy().into_owned());
    file.with_file_name(format!("{stem}{suffix}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_beside_are_named_after_the_file() {
        for (file, suffix, expected) in [
            ("/app/stack.yaml", ".state.json", "/app/stack.state.json"),
            ("stack.yaml", ".builds", "stack.builds"),
            (
                "/app/my.stack.yaml",
                ".canary.json",
                "/app/my.stack.canary.json",
            ),
        ] {
            assert_eq!(
                beside(Path::new(file), suffix),
                Path::new(expected),
                "{file}"
            );
        }
    }
}
