//! Path normalisation before routing: one spelling per path, so that no
//! request an application reads as path P is routed as another path.
//!
//! With the defaults (README, "Paths"): percent-encoded unreserved
//! characters are decoded (`%61` → `a`), other escapes are upper-cased,
//! repeated slashes are merged, dot segments are removed (RFC 3986 §5.2.4),
//! and the forms that frameworks read in different ways are refused rather
//! than guessed at: an encoded slash or backslash, a raw backslash, a `;`
//! parameter in a segment, an encoded control byte, a bad escape, and a dot
//! segment above the root.

use std::borrow::Cow;

use serin_config::proxy::{EscapedSlashesAction, PathNormalizationConfig, PathParametersAction};

/// What becomes of a path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathVerdict<'a> {
    /// Route on it and forward it (unchanged, or normalised).
    Route(Cow<'a, str>),
    /// Answer with a redirect to this path
    /// (`escapedSlashes: UnescapeAndRedirect`).
    Redirect(String),
}

/// Why a path is refused (400).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PathRejection {
    #[error("a `%` not followed by two hex digits")]
    BadEscape,
    #[error("an encoded control character")]
    EncodedControl,
    #[error("an encoded slash or backslash (`%2F`, `%5C`)")]
    EscapedSlash,
    #[error("a backslash")]
    Backslash,
    #[error("a `;` parameter in a path segment")]
    PathParameter,
    #[error("a `..` segment above the root")]
    AboveRoot,
}

impl PathRejection {
    /// A short name for metrics and the reason header.
    pub fn label(self) -> &'static str {
        match self {
            Self::BadEscape => "path_bad_escape",
            Self::EncodedControl => "path_encoded_control",
            Self::EscapedSlash => "path_escaped_slash",
            Self::Backslash => "path_backslash",
            Self::PathParameter => "path_parameter",
            Self::AboveRoot => "path_above_root",
        }
    }
}

/// The path to route on, by `options`. `path` is the request target's path
/// (no query), as the client sent it.
pub fn normalize<'a>(
    path: &'a str,
    options: &PathNormalizationConfig,
) -> Result<PathVerdict<'a>, PathRejection> {
    // The common case costs one scan and no allocation.
    if !needs_work(path.as_bytes()) || !path.starts_with('/') {
        return Ok(PathVerdict::Route(Cow::Borrowed(path)));
    }
    let (decoded, unescaped_slash) = decode(path, options)?;
    let merged = if options.merge_slashes {
        merge_slashes(&decoded)
    } else {
        decoded
    };
    let out = if options.normalize_path {
        remove_dot_segments(&merged)?
    } else {
        merged
    };
    if unescaped_slash && options.escaped_slashes == EscapedSlashesAction::UnescapeAndRedirect {
        return Ok(PathVerdict::Redirect(out));
    }
    Ok(PathVerdict::Route(if out == path {
        Cow::Borrowed(path)
    } else {
        Cow::Owned(out)
    }))
}

/// Whether anything in the path may need a change or a refusal.
fn needs_work(path: &[u8]) -> bool {
    let mut prev = 0u8;
    for (i, &b) in path.iter().enumerate() {
        match b {
            b'%' | b'\\' | b';' => return true,
            b'/' if prev == b'/' => return true,
            // A segment starting with a dot: `.` or `..` or `.x`; only the
            // first two are dot segments, checked on the slow path.
            b'.' if prev == b'/' => {
                let rest = &path[i..];
                if rest.starts_with(b"./")
                    || rest.starts_with(b"../")
                    || rest == b"."
                    || rest == b".."
                {
                    return true;
                }
            }
            _ => {}
        }
        prev = b;
    }
    false
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// Decodes escapes of unreserved characters (with `normalize_path`), deals
/// with slashes and backslashes by `escaped_slashes`, and refuses what
/// cannot be read one way only. Says whether an escaped slash was decoded.
fn decode(path: &str, options: &PathNormalizationConfig) -> Result<(String, bool), PathRejection> {
    let unescape = matches!(
        options.escaped_slashes,
        EscapedSlashesAction::UnescapeAndRedirect | EscapedSlashesAction::UnescapeAndForward
    );
    let bytes = path.as_bytes();
    let mut out = String::with_capacity(path.len());
    let mut unescaped_slash = false;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        match b {
            b'%' => {
                let (Some(hi), Some(lo)) = (
                    bytes.get(i + 1).copied().and_then(hex),
                    bytes.get(i + 2).copied().and_then(hex),
                ) else {
                    return Err(PathRejection::BadEscape);
                };
                let v = hi << 4 | lo;
                match v {
                    0x00..=0x1f | 0x7f => return Err(PathRejection::EncodedControl),
                    b'/' | b'\\' => match options.escaped_slashes {
                        EscapedSlashesAction::RejectRequest => {
                            return Err(PathRejection::EscapedSlash);
                        }
                        EscapedSlashesAction::KeepUnchanged => {
                            out.push('%');
                            out.push_str(if v == b'/' { "2F" } else { "5C" });
                        }
                        _ => {
                            out.push('/');
                            unescaped_slash = true;
                        }
                    },
                    v if options.normalize_path && is_unreserved(v) => out.push(char::from(v)),
                    v => {
                        out.push('%');
                        out.push(char::from(b"0123456789ABCDEF"[usize::from(v >> 4)]));
                        out.push(char::from(b"0123456789ABCDEF"[usize::from(v & 0xf)]));
                    }
                }
                i += 3;
                continue;
            }
            b'\\' => match options.escaped_slashes {
                EscapedSlashesAction::KeepUnchanged => out.push('\\'),
                _ if unescape => {
                    out.push('/');
                    unescaped_slash = true;
                }
                _ => return Err(PathRejection::Backslash),
            },
            b';' if options.path_parameters == PathParametersAction::RejectRequest => {
                return Err(PathRejection::PathParameter);
            }
            _ => {
                // Copy the run up to the next byte of interest at once
                // (keeps multi-byte characters whole).
                let end = bytes[i..]
                    .iter()
                    .position(|c| matches!(c, b'%' | b'\\' | b';'))
                    .map_or(bytes.len(), |n| i + n);
                out.push_str(&path[i..end.max(i + 1)]);
                i = end.max(i + 1);
                continue;
            }
        }
        i += 1;
    }
    Ok((out, unescaped_slash))
}

fn merge_slashes(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    let mut prev_slash = false;
    for c in path.chars() {
        if c == '/' && prev_slash {
            continue;
        }
        prev_slash = c == '/';
        out.push(c);
    }
    out
}

/// RFC 3986 §5.2.4 on an absolute path, except that a `..` with nothing
/// left to remove is refused instead of silently dropped: a client that
/// sends one is probing, and applications differ on what it means.
fn remove_dot_segments(path: &str) -> Result<String, PathRejection> {
    let mut segments: Vec<&str> = Vec::new();
    let mut parts = path.split('/').skip(1).peekable();
    let mut trailing_slash = false;
    while let Some(seg) = parts.next() {
        let last = parts.peek().is_none();
        match seg {
            "." => trailing_slash = last,
            ".." => {
                if segments.pop().is_none() {
                    return Err(PathRejection::AboveRoot);
                }
                trailing_slash = last;
            }
            s => {
                segments.push(s);
                trailing_slash = false;
            }
        }
    }
    let mut out = String::with_capacity(path.len());
    for s in &segments {
        out.push('/');
        out.push_str(s);
    }
    if trailing_slash || out.is_empty() {
        out.push('/');
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(
        normalize_path: bool,
        merge_slashes: bool,
        escaped_slashes: EscapedSlashesAction,
        path_parameters: PathParametersAction,
    ) -> PathNormalizationConfig {
        PathNormalizationConfig {
            normalize_path,
            merge_slashes,
            escaped_slashes,
            path_parameters,
        }
    }

    fn route(p: &str) -> Result<PathVerdict<'static>, PathRejection> {
        Ok(PathVerdict::Route(Cow::Owned(p.to_string())))
    }

    #[test]
    fn defaults_give_one_spelling_or_a_refusal() {
        use PathRejection::*;
        let cases: &[(&str, Result<PathVerdict<'static>, PathRejection>)] = &[
            ("/", route("/")),
            ("/admin/x", route("/admin/x")),
            ("/a.b/c..d/.e", route("/a.b/c..d/.e")),
            // Dot segments.
            ("/public/../admin/x", route("/admin/x")),
            ("/public/./admin", route("/public/admin")),
            ("/a/b/..", route("/a/")),
            ("/a/b/.", route("/a/b/")),
            ("/a/..", route("/")),
            ("/..", Err(AboveRoot)),
            ("/../admin", Err(AboveRoot)),
            ("/a/../../admin", Err(AboveRoot)),
            // Encoded unreserved characters, dots included.
            ("/%61dmin/x", route("/admin/x")),
            ("/public/%2e%2e/admin/x", route("/admin/x")),
            ("/public/%2E%2e/admin", route("/admin")),
            ("/public/.%2e/admin", route("/admin")),
            ("/%7euser", route("/~user")),
            // Reserved and other escapes stay, upper-cased.
            ("/a%3fb", route("/a%3Fb")),
            ("/a%3Fb", route("/a%3Fb")),
            ("/caf%c3%a9", route("/caf%C3%A9")),
            ("/100%25", route("/100%25")),
            ("/a%2", Err(BadEscape)),
            ("/a%zz", Err(BadEscape)),
            ("/a%00b", Err(EncodedControl)),
            ("/a%0d%0ab", Err(EncodedControl)),
            // Slashes.
            ("//admin/x", route("/admin/x")),
            ("/public//../admin", route("/admin")),
            ("/a///b", route("/a/b")),
            ("/admin%2fx", Err(EscapedSlash)),
            ("/public/..%2Fadmin", Err(EscapedSlash)),
            ("/admin%5cx", Err(EscapedSlash)),
            ("/public\\..\\admin", Err(Backslash)),
            // Path parameters, which servlet containers strip.
            ("/admin;x=1/secret", Err(PathParameter)),
            ("/public/..;/admin", Err(PathParameter)),
            ("/a%3bb", route("/a%3Bb")),
            // Not a path this works on.
            ("*", route("*")),
        ];
        let d = PathNormalizationConfig::default();
        for (given, want) in cases {
            let got = normalize(given, &d).map(|v| match v {
                PathVerdict::Route(p) => PathVerdict::Route(Cow::Owned(p.into_owned())),
                other => other,
            });
            assert_eq!(&got, want, "{given}");
        }
    }

    #[test]
    fn the_common_path_is_borrowed() {
        let d = PathNormalizationConfig::default();
        for p in ["/", "/api/v1/users/42", "/a.b/.well-known/x", "/x-y_z~"] {
            assert!(
                matches!(normalize(p, &d), Ok(PathVerdict::Route(Cow::Borrowed(_)))),
                "{p}"
            );
        }
    }

    #[test]
    fn each_option_does_what_envoy_says() {
        use EscapedSlashesAction as E;
        use PathParametersAction as P;
        type Case = (
            &'static str,
            PathNormalizationConfig,
            Result<PathVerdict<'static>, PathRejection>,
        );
        let cases: Vec<Case> = vec![
            // normalizePath off: escapes and dot segments stay as sent.
            (
                "/public/../admin",
                options(false, true, E::RejectRequest, P::RejectRequest),
                route("/public/../admin"),
            ),
            (
                "/%61dmin",
                options(false, true, E::RejectRequest, P::RejectRequest),
                route("/%61dmin"),
            ),
            // mergeSlashes off.
            (
                "//admin",
                options(true, false, E::RejectRequest, P::RejectRequest),
                route("//admin"),
            ),
            (
                "/a//../b",
                options(true, false, E::RejectRequest, P::RejectRequest),
                route("/a/b"),
            ),
            // Escaped slashes.
            (
                "/a%2Fb",
                options(true, true, E::KeepUnchanged, P::RejectRequest),
                route("/a%2Fb"),
            ),
            (
                "/a%2fb",
                options(true, true, E::KeepUnchanged, P::RejectRequest),
                route("/a%2Fb"),
            ),
            (
                "/a%2Fb",
                options(true, true, E::UnescapeAndForward, P::RejectRequest),
                route("/a/b"),
            ),
            (
                "/a%5Cb",
                options(true, true, E::UnescapeAndForward, P::RejectRequest),
                route("/a/b"),
            ),
            (
                "/a\\b",
                options(true, true, E::UnescapeAndForward, P::RejectRequest),
                route("/a/b"),
            ),
            (
                "/a\\b",
                options(true, true, E::KeepUnchanged, P::RejectRequest),
                route("/a\\b"),
            ),
            (
                "/x/..%2Fadmin",
                options(true, true, E::UnescapeAndRedirect, P::RejectRequest),
                Ok(PathVerdict::Redirect("/admin".into())),
            ),
            // Path parameters kept.
            (
                "/a;jsessionid=1/b",
                options(true, true, E::RejectRequest, P::KeepUnchanged),
                route("/a;jsessionid=1/b"),
            ),
        ];
        for (given, opts, want) in cases {
            let got = normalize(given, &opts).map(|v| match v {
                PathVerdict::Route(p) => PathVerdict::Route(Cow::Owned(p.into_owned())),
                other => other,
            });
            assert_eq!(got, want, "{given} with {opts:?}");
        }
    }
}
