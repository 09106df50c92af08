//! The CORS filter's section checked into [`CorsConfig`]: origins parsed
//! into patterns, methods and header names validated, `*` kept as "any".

use http::Method;

use super::model::{CorsConfig, CorsList, OriginPattern, defaults};
use super::raw;
use super::validate::header_name;
use crate::decode::Spanned;
use crate::error::Problems;

pub(super) fn validate(raw: &raw::Cors, p: &mut Problems) -> CorsConfig {
    let allow_origins = raw
        .allow_origins
        .iter()
        .filter_map(|o| match parse_origin(o) {
            Ok(pattern) => Some(pattern),
            Err(why) => {
                o.report(p, format!("`{}`: {why}", **o));
                None
            }
        })
        .collect();
    let max_age = match &raw.max_age {
        Some(v) if **v == 0 => {
            v.report(p, "maxAge must be at least 1 (seconds)");
            defaults::CORS_MAX_AGE
        }
        Some(v) => **v,
        None => defaults::CORS_MAX_AGE,
    };
    CorsConfig {
        allow_origins,
        allow_methods: list(&raw.allow_methods, p, method),
        allow_headers: list(&raw.allow_headers, p, header_name),
        expose_headers: list(&raw.expose_headers, p, header_name),
        max_age,
        allow_credentials: raw.allow_credentials.unwrap_or(false),
    }
}

/// `*` anywhere in the list makes it [`CorsList::Any`].
fn list<T>(
    raw: &[Spanned<String>],
    p: &mut Problems,
    item: fn(&Spanned<String>, &mut Problems) -> Option<T>,
) -> CorsList<T> {
    if raw.iter().any(|v| v.as_str() == "*") {
        return CorsList::Any;
    }
    CorsList::Only(raw.iter().filter_map(|v| item(v, p)).collect())
}

/// Method names are case-sensitive tokens (RFC 9110 §9.1).
fn method(v: &Spanned<String>, p: &mut Problems) -> Option<Method> {
    match Method::from_bytes(v.as_bytes()) {
        Ok(m) => Some(m),
        Err(_) => {
            v.report(p, format!("`{}` is not an HTTP method", **v));
            None
        }
    }
}

/// Reads one `allowOrigins` entry: `*`, or `http(s)://HOST[:PORT]` whose
/// host may begin with `*`.
pub fn parse_origin(text: &str) -> Result<OriginPattern, &'static str> {
    if text == "*" {
        return Ok(OriginPattern::Any);
    }
    let (scheme, rest) = text
        .split_once("://")
        .ok_or("expected `*` or SCHEME://HOST[:PORT], such as https://app.example.com")?;
    let scheme = scheme.to_ascii_lowercase();
    let default_port = match scheme.as_str() {
        "http" => 80,
        "https" => 443,
        _ => return Err("the scheme must be http or https"),
    };
    if rest.contains(['/', '?', '#', '@']) {
        return Err("an origin has no path, query or user: SCHEME://HOST[:PORT]");
    }
    let (host, port) = split_port(rest)?;
    let (wildcard, host) = match host.strip_prefix('*') {
        Some(after) => (true, after),
        None => (false, host),
    };
    let bracketed = host.starts_with('[') && host.ends_with(']') && !wildcard;
    let plain = host
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
    if host.contains('*') {
        return Err("`*` may only begin the host (`https://*.example.com`)");
    }
    if (host.is_empty() && !wildcard) || !(plain || bracketed) {
        return Err("the host is not a host name or IP address");
    }
    Ok(OriginPattern::Origin {
        scheme,
        host: host.to_ascii_lowercase(),
        wildcard,
        port: port.unwrap_or(default_port),
    })
}

/// `host[:port]`, with a bracketed IPv6 address kept whole.
fn split_port(authority: &str) -> Result<(&str, Option<u16>), &'static str> {
    let colon = match authority.rfind(':') {
        Some(i) if !authority[i..].contains(']') => i,
        _ => return Ok((authority, None)),
    };
    let port = &authority[colon + 1..];
    match port.parse::<u16>() {
        Ok(n) if n > 0 && port.bytes().all(|b| b.is_ascii_digit()) => {
            Ok((&authority[..colon], Some(n)))
        }
        _ => Err("the port must be a number from 1 to 65535"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origin(scheme: &str, host: &str, wildcard: bool, port: u16) -> OriginPattern {
        OriginPattern::Origin {
            scheme: scheme.into(),
            host: host.into(),
            wildcard,
            port,
        }
    }

    #[test]
    fn origins_parse_into_patterns_or_say_what_is_wrong() {
        let cases: &[(&str, Result<OriginPattern, &str>)] = &[
            ("*", Ok(OriginPattern::Any)),
            (
                "https://app.example.com",
                Ok(origin("https", "app.example.com", false, 443)),
            ),
            (
                "HTTP://App.Example.com:8080",
                Ok(origin("http", "app.example.com", false, 8080)),
            ),
            (
                "https://*.example.com",
                Ok(origin("https", ".example.com", true, 443)),
            ),
            ("http://*", Ok(origin("http", "", true, 80))),
            (
                "http://[::1]:3000",
                Ok(origin("http", "[::1]", false, 3000)),
            ),
            ("app.example.com", Err("expected `*`")),
            ("ftp://x.example", Err("scheme must be http or https")),
            ("https://a.example.com/", Err("no path")),
            ("https://a.*.example.com", Err("may only begin the host")),
            ("https://a.example.com:0", Err("port must be")),
            ("https://a.example.com:http", Err("port must be")),
            ("https://", Err("not a host name")),
            ("https://a b", Err("not a host name")),
        ];
        for (text, expected) in cases {
            match (parse_origin(text), expected) {
                (Ok(got), Ok(want)) => assert_eq!(&got, want, "{text}"),
                (Err(got), Err(want)) => assert!(got.contains(want), "{text}: {got}"),
                (got, want) => panic!("{text}: got {got:?}, expected {want:?}"),
            }
        }
    }
}
