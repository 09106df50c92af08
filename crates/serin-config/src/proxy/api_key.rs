//! The APIKey filter's section checked into [`ApiKeyConfig`]: header
//! names valid, names unique, every key a SHA-256 in hex, written inline
//! or in a file of `name sha256hex` lines.

use std::collections::BTreeSet;
use std::path::Path;

use http::HeaderName;

use super::hash_file::HashFile;
use super::model::{ApiKeyConfig, ApiKeyEntryConfig, defaults};
use super::raw;
use super::validate::header_name;
use crate::decode::Spanned;
use crate::error::Problems;

/// `None` when the section cannot make a filter (reported already).
pub(super) fn validate(
    raw: &raw::ApiKey,
    base_dir: &Path,
    p: &mut Problems,
) -> Option<ApiKeyConfig> {
    // Every problem is reported before giving up on the filter.
    let header = match &raw.header {
        Some(h) => header_name(h, p),
        None => Some(HeaderName::from_static(defaults::API_KEY_HEADER)),
    };
    let forward_key_name_header = raw
        .forward_key_name_header
        .as_ref()
        .map(|h| header_name(h, p));
    let keys = match &raw.keys_file {
        Some(file) if !raw.keys.is_empty() => {
            file.report(p, "give either `keys` or `keysFile`, not both");
            None
        }
        Some(file) => keys_file(file, base_dir, p),
        None => inline_keys(raw, p),
    };
    let forward_key_name_header = match forward_key_name_header {
        Some(h) => Some(h?),
        None => None,
    };
    Some(ApiKeyConfig {
        header: header?,
        keys: keys?,
        forward_key_name_header,
    })
}

/// The keys written in the config file.
fn inline_keys(raw: &raw::ApiKey, p: &mut Problems) -> Option<Vec<ApiKeyEntryConfig>> {
    if raw.keys.is_empty() {
        // Fail closed would refuse every request: surely a mistake.
        p.report(
            raw.span,
            raw.node_path.clone(),
            "an APIKey filter needs at least one entry in `keys` (or a `keysFile`)",
        );
        return None;
    }
    let mut names = BTreeSet::new();
    let mut keys = Vec::with_capacity(raw.keys.len());
    for entry in &raw.keys {
        if entry.name.is_empty() {
            entry.name.report(p, "a key's name must not be empty");
        } else if !names.insert(entry.name.as_str()) {
            entry
                .name
                .report(p, format!("key name `{}` is given twice", *entry.name));
        }
        match parse_sha256(&entry.sha256) {
            Some(sha256) => keys.push(ApiKeyEntryConfig {
                name: entry.name.to_string(),
                sha256,
            }),
            None => entry.sha256.report(p, SHA256_FORMAT),
        }
    }
    (keys.len() == raw.keys.len()).then_some(keys)
}

/// The keys of a file of `name sha256hex` lines, every bad line reported.
fn keys_file(
    field: &Spanned<String>,
    base_dir: &Path,
    p: &mut Problems,
) -> Option<Vec<ApiKeyEntryConfig>> {
    let file = HashFile::read(field, base_dir, p)?;
    let mut names = BTreeSet::new();
    let mut keys = Vec::with_capacity(file.lines.len());
    let mut ok = true;
    for (line, text) in &file.lines {
        let mut words = text.split_whitespace();
        let (Some(name), Some(hex), None) = (words.next(), words.next(), words.next()) else {
            file.report(p, *line, "expected `name sha256hex`");
            ok = false;
            continue;
        };
        match parse_sha256(hex) {
            None => {
                file.report(p, *line, SHA256_FORMAT);
                ok = false;
            }
            Some(_) if !names.insert(name) => {
                file.report(p, *line, format!("key name `{name}` is given twice"));
                ok = false;
            }
            Some(sha256) => keys.push(ApiKeyEntryConfig {
                name: name.to_string(),
                sha256,
            }),
        }
    }
    if ok && keys.is_empty() {
        file.report_file(p, "the file has no keys");
        return None;
    }
    ok.then_some(keys)
}

const SHA256_FORMAT: &str = "sha256 must be 64 hex digits (such as `printf %s KEY | sha256sum`)";

/// A SHA-256 written as 64 hex digits, either case.
pub fn parse_sha256(hex: &str) -> Option<[u8; 32]> {
    let digits = hex.as_bytes();
    if digits.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (byte, pair) in out.iter_mut().zip(digits.chunks_exact(2)) {
        let hi = (pair[0] as char).to_digit(16)?;
        let lo = (pair[1] as char).to_digit(16)?;
        *byte = u8::try_from(hi * 16 + lo).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::parse_sha256;

    #[test]
    fn sha256_hex_is_read_or_refused() {
        let zeros = "0".repeat(64);
        let mixed = format!("{}Ab", "f".repeat(62));
        let cases: [(&str, Option<u8>); 5] = [
            (&zeros, Some(0)),
            (&mixed, Some(0xab)),
            ("abc", None),
            (&"g".repeat(64), None),
            (&"0".repeat(66), None),
        ];
        for (text, last) in cases {
            assert_eq!(parse_sha256(text).map(|h| h[31]), last, "{text}");
        }
    }
}
