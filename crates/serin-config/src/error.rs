//! Config errors that say where and what: `file:line:column: path: message`.

use std::fmt;
use std::sync::Arc;

/// A place in a config file. Lines and columns count from 1.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Span {
    pub line: u32,
    pub col: u32,
}

impl Span {
    pub fn new(line: usize, col: usize) -> Self {
        Self {
            line: u32::try_from(line).unwrap_or(u32::MAX),
            col: u32::try_from(col).unwrap_or(u32::MAX),
        }
    }
}

/// One problem in a config file.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ConfigError {
    pub file: Arc<str>,
    pub line: u32,
    pub column: u32,
    /// Where in the document, e.g. `routes[0].rules[1].backendRefs[0].weight`.
    pub path: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: ", self.file, self.line, self.column)?;
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        f.write_str(&self.message)
    }
}

/// Every problem found in a config file, in file order.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize)]
#[serde(transparent)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0.len();
        writeln!(
            f,
            "{n} problem{} in the configuration:",
            if n == 1 { "" } else { "s" }
        )?;
        for e in &self.0 {
            writeln!(f, "  {e}")?;
        }
        Ok(())
    }
}

impl ConfigErrors {
    pub fn iter(&self) -> impl Iterator<Item = &ConfigError> {
        self.0.iter()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Collects problems while a file is decoded and validated, so that every
/// problem is reported at once instead of one per run. Warnings are kept
/// apart: what the file says is valid and serves, but probably not what
/// was meant (a rule that answers 500 to every request).
#[derive(Debug)]
pub struct Problems {
    file: Arc<str>,
    errors: Vec<ConfigError>,
    warnings: Vec<ConfigError>,
    /// Field paths whose problem is reported already (see [`Self::settle`]).
    settled: Vec<String>,
}

impl Problems {
    pub fn new(file: impl Into<Arc<str>>) -> Self {
        Self {
            file: file.into(),
            errors: Vec::new(),
            warnings: Vec::new(),
            settled: Vec::new(),
        }
    }

    pub fn file(&self) -> &Arc<str> {
        &self.file
    }

    /// Records a problem, unless it is at or under a settled path.
    pub fn report(&mut self, span: Span, path: impl Into<String>, message: impl Into<String>) {
        let path = path.into();
        if self.is_settled(&path) {
            return;
        }
        self.errors.push(ConfigError {
            file: self.file.clone(),
            line: span.line,
            column: span.col,
            path,
            message: message.into(),
        });
    }

    /// Records a warning: the file is valid, but this is likely a mistake.
    pub fn warn(&mut self, span: Span, path: impl Into<String>, message: impl Into<String>) {
        self.warnings.push(ConfigError {
            file: self.file.clone(),
            line: span.line,
            column: span.col,
            path: path.into(),
            message: message.into(),
        });
    }

    /// The warnings recorded so far, sorted by place in the file (they are
    /// not errors: [`Self::finish`] ignores them).
    pub fn take_warnings(&mut self) -> Vec<ConfigError> {
        let mut w = std::mem::take(&mut self.warnings);
        w.sort_by_key(|e| (e.line, e.column));
        w.dedup();
        w
    }

    /// Says that what is at `path` is wrong and reported: a required field
    /// that is missing or unreadable, or a section whose `type` is unknown.
    /// What stands in for it (an empty name, a default kind) is not what
    /// the file says, so later problems at or under `path` would only be
    /// consequences of the first one, and misleading: they are dropped.
    pub fn settle(&mut self, path: impl Into<String>) {
        let path = path.into();
        // The root is never settled: its problems are the whole file's.
        if !path.is_empty() && !self.is_settled(&path) {
            self.settled.push(path);
        }
    }

    /// Settles `section` (see [`Self::settle`]) and drops the problems
    /// already reported under it but the one at `keep` (the `type` that
    /// was wrong): which of its fields are known depends on that `type`.
    pub fn settle_section(&mut self, section: &str, keep: &str) {
        self.errors
            .retain(|e| e.path == keep || !is_at_or_under(&e.path, section));
        self.settle(section);
    }

    fn is_settled(&self, path: &str) -> bool {
        self.settled.iter().any(|s| is_at_or_under(path, s))
    }

    pub fn is_empty(&self) -> bool {
        self.errors.is_empty()
    }

    /// `Ok(value)` when nothing was reported, else every problem, sorted by
    /// place in the file.
    pub fn finish<T>(self, value: T) -> Result<T, ConfigErrors> {
        if self.errors.is_empty() {
            return Ok(value);
        }
        Err(self.into_errors())
    }

    /// Every problem reported, sorted by place in the file.
    pub fn into_errors(mut self) -> ConfigErrors {
        self.errors.sort_by_key(|e| (e.line, e.column));
        self.errors.dedup();
        ConfigErrors(self.errors)
    }
}

/// Whether field path `path` is `base` or a path inside it (`base.x`,
/// `base[0]`).
fn is_at_or_under(path: &str, base: &str) -> bool {
    !base.is_empty()
        && path
            .strip_prefix(base)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with(['.', '[']))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problems_at_or_under_a_settled_path_are_dropped() {
        let mut p = Problems::new("f.yaml");
        p.report(Span::new(1, 1), "a.b", "first");
        p.settle("a.b");
        for path in ["a.b", "a.b.c", "a.b[0]"] {
            p.report(Span::new(2, 1), path, "consequence");
        }
        for path in ["a.bc", "a", "", "x.a.b"] {
            p.report(Span::new(3, 1), path, "kept");
        }
        p.settle("");
        p.report(Span::new(4, 1), "", "the root is never settled");
        let errors = p.into_errors();
        let kept: Vec<&str> = errors.iter().map(|e| e.message.as_str()).collect();
        assert_eq!(
            kept,
            [
                "first",
                "kept",
                "kept",
                "kept",
                "kept",
                "the root is never settled"
            ]
        );
    }

    #[test]
    fn a_settled_section_keeps_only_its_type_problem() {
        let mut p = Problems::new("f.yaml");
        p.report(Span::new(1, 1), "f[0].cors", "unknown field `cors`");
        p.report(Span::new(1, 5), "f[0].type", "unknown value `CORS`");
        p.report(Span::new(2, 1), "f[1].cors", "another section");
        p.settle_section("f[0]", "f[0].type");
        p.report(Span::new(3, 1), "f[0]", "a filter needs ...");
        let errors = p.into_errors();
        let kept: Vec<&str> = errors.iter().map(|e| e.message.as_str()).collect();
        assert_eq!(kept, ["unknown value `CORS`", "another section"]);
    }
}
