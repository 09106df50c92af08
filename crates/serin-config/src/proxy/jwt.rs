//! The JWT filter's section checked into [`JwtConfig`]: an issuer and
//! audiences, exactly one key source (a JWKS file that reads as one, or an
//! http(s) URL), header names valid and unique.

use std::collections::BTreeSet;
use std::path::Path;

use http::header;

use super::model::{ClaimToHeader, JwksSource, JwtConfig, defaults};
use super::raw;
use super::validate::{header_name, readable_file};
use crate::decode::Spanned;
use crate::error::Problems;

/// `None` when the section cannot make a filter (reported already).
pub(super) fn validate(raw: &raw::Jwt, base_dir: &Path, p: &mut Problems) -> Option<JwtConfig> {
    // Every problem is reported before giving up on the filter.
    let issuer = (!raw.issuer.is_empty()).then(|| raw.issuer.to_string());
    if issuer.is_none() {
        raw.issuer.report(p, "issuer must not be empty");
    }
    let audiences = audiences(raw, p);
    let jwks = jwks(&raw.jwks, base_dir, p);
    let header = raw.header.as_ref().map(|h| header_name(h, p));
    let claims_to_headers = claims_to_headers(&raw.claims_to_headers, p);
    Some(JwtConfig {
        issuer: issuer?,
        audiences: audiences?,
        jwks: jwks?,
        leeway: raw.leeway.unwrap_or(defaults::JWT_LEEWAY),
        header: match header {
            Some(h) => Some(h?),
            None => None,
        },
        claims_to_headers: claims_to_headers?,
    })
}

fn audiences(raw: &raw::Jwt, p: &mut Problems) -> Option<Vec<String>> {
    if raw.audiences.is_empty() {
        // A token for any audience would do: one meant for another service
        // of the same issuer would open this one (a confused deputy).
        p.report(
            raw.span,
            raw.node_path.clone(),
            "a JWT filter needs at least one entry in `audiences`",
        );
        return None;
    }
    let mut ok = true;
    for a in raw.audiences.iter().filter(|a| a.is_empty()) {
        a.report(p, "an audience must not be empty");
        ok = false;
    }
    ok.then(|| raw.audiences.iter().map(|a| a.to_string()).collect())
}

fn jwks(raw: &raw::Jwks, base_dir: &Path, p: &mut Problems) -> Option<JwksSource> {
    match (&raw.file, &raw.url) {
        (Some(file), None) => {
            if raw.refresh_interval.is_some() {
                p.report(
                    raw.span,
                    format!("{}.refreshInterval", raw.node_path),
                    "refreshInterval is for a `url`; a `file` is read when the config is loaded",
                );
            }
            jwks_file(file, base_dir, p).map(JwksSource::File)
        }
        (None, Some(url)) => {
            let refresh_interval = raw
                .refresh_interval
                .unwrap_or(defaults::JWKS_REFRESH_INTERVAL);
            if refresh_interval.is_zero() {
                p.report(
                    raw.span,
                    format!("{}.refreshInterval", raw.node_path),
                    "refreshInterval must be longer than 0s",
                );
                return None;
            }
            jwks_url(url, p).map(|url| JwksSource::Url {
                url,
                refresh_interval,
            })
        }
        _ => {
            p.report(
                raw.span,
                raw.node_path.clone(),
                "jwks needs exactly one of `file` (a JWKS file) and `url` (fetched and refreshed)",
            );
            None
        }
    }
}

fn jwks_file(
    file: &Spanned<String>,
    base_dir: &Path,
    p: &mut Problems,
) -> Option<std::path::PathBuf> {
    let path = readable_file(file, base_dir, p);
    if !path.is_file() {
        return None;
    }
    match crate::jwks::read_jwks_file(&path) {
        Ok(_) => Some(path),
        Err(e) => {
            file.report(p, format!("{}: {e}", path.display()));
            None
        }
    }
}

fn jwks_url(url: &Spanned<String>, p: &mut Problems) -> Option<String> {
    let parsed = url.parse::<http::Uri>().ok();
    let fits = parsed.as_ref().is_some_and(|u| {
        matches!(u.scheme_str(), Some("http" | "https")) && u.host().is_some_and(|h| !h.is_empty())
    });
    if !fits {
        url.report(
            p,
            format!(
                "`{}` is not an http(s) URL such as https://idp.example.com/.well-known/jwks.json",
                **url
            ),
        );
        return None;
    }
    Some(url.to_string())
}

fn claims_to_headers(raw: &[raw::ClaimToHeader], p: &mut Problems) -> Option<Vec<ClaimToHeader>> {
    let mut seen = BTreeSet::new();
    let mut out = Vec::with_capacity(raw.len());
    for c in raw {
        if c.claim.is_empty() {
            c.claim.report(p, "a claim's name must not be empty");
        }
        let Some(name) = header_name(&c.header, p) else {
            continue;
        };
        if name == header::AUTHORIZATION || name == header::HOST {
            c.header.report(p, format!("`{name}` cannot carry a claim"));
        } else if !seen.insert(name.as_str().to_string()) {
            c.header
                .report(p, format!("header `{name}` is given a claim twice"));
        } else if !c.claim.is_empty() {
            out.push(ClaimToHeader {
                claim: c.claim.to_string(),
                header: name,
            });
        }
    }
    (out.len() == raw.len()).then_some(out)
}
