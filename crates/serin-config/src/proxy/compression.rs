//! A listener's `compression` section checked into [`CompressionConfig`].

use super::model::{CompressionConfig, defaults};
use super::raw;
use crate::error::Problems;

pub(super) fn validate(raw: &raw::Compression, p: &mut Problems) -> CompressionConfig {
    let mut encodings = Vec::new();
    for e in &raw.encodings {
        if encodings.contains(&**e) {
            e.report(p, format!("`{}` is listed twice", **e));
        } else {
            encodings.push(**e);
        }
    }
    if raw.encodings.is_empty() {
        encodings = defaults::COMPRESSION_ENCODINGS.to_vec();
    }
    let content_types = if raw.content_types.is_empty() {
        defaults::COMPRESSION_CONTENT_TYPES
            .iter()
            .map(|t| (*t).to_string())
            .collect()
    } else {
        raw.content_types
            .iter()
            .filter_map(|t| {
                if is_media_range(t) {
                    Some(t.to_ascii_lowercase())
                } else {
                    t.report(
                        p,
                        format!(
                            "`{}` is not a media type such as text/html or text/* (no parameters)",
                            **t
                        ),
                    );
                    None
                }
            })
            .collect()
    };
    CompressionConfig {
        encodings,
        min_bytes: raw
            .min_bytes
            .as_ref()
            .map_or(defaults::COMPRESSION_MIN_BYTES, |v| **v),
        content_types,
    }
}

/// `type/subtype` or `type/*`, tokens only (RFC 9110 §8.3.1).
fn is_media_range(text: &str) -> bool {
    let token = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$&-^_.+".contains(&b))
    };
    match text.split_once('/') {
        Some((kind, "*")) => token(kind),
        Some((kind, sub)) => token(kind) && token(sub),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::is_media_range;

    #[test]
    fn media_ranges_are_type_slash_subtype_or_a_whole_type() {
        for (text, ok) in [
            ("text/html", true),
            ("application/vnd.api+json", true),
            ("text/*", true),
            ("*/*", false),
            ("text", false),
            ("text/html; charset=utf-8", false),
            ("/html", false),
        ] {
            assert_eq!(is_media_range(text), ok, "{text}");
        }
    }
}
