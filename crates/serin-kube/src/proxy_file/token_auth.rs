//! The JWT and BasicAuth filters as the proxy file writes them. The files
//! they name are written as the absolute paths the config resolved: the
//! gateway's pod must have them there (a mounted Secret or ConfigMap).

use serde::Serialize;
use serin_config::proxy::{self as p, defaults};

use super::duration;

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Jwt {
    issuer: String,
    audiences: Vec<String>,
    jwks: Jwks,
    #[serde(skip_serializing_if = "Option::is_none")]
    leeway: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    header: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    claims_to_headers: Vec<ClaimToHeader>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Jwks {
    #[serde(skip_serializing_if = "Option::is_none")]
    file: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    refresh_interval: Option<String>,
}

#[derive(Serialize)]
struct ClaimToHeader {
    claim: String,
    header: String,
}

impl Jwt {
    pub(super) fn of(j: &p::JwtConfig) -> Self {
        let jwks = match &j.jwks {
            p::JwksSource::File(path) => Jwks {
                file: Some(path.display().to_string()),
                url: None,
                refresh_interval: None,
            },
            p::JwksSource::Url {
                url,
                refresh_interval,
            } => Jwks {
                file: None,
                url: Some(url.clone()),
                refresh_interval: (*refresh_interval != defaults::JWKS_REFRESH_INTERVAL)
                    .then(|| duration(*refresh_interval)),
            },
        };
        Self {
            issuer: j.issuer.clone(),
            audiences: j.audiences.clone(),
            jwks,
            leeway: (j.leeway != defaults::JWT_LEEWAY).then(|| duration(j.leeway)),
            header: j.header.as_ref().map(|h| h.as_str().to_string()),
            claims_to_headers: j
                .claims_to_headers
                .iter()
                .map(|c| ClaimToHeader {
                    claim: c.claim.clone(),
                    header: c.header.as_str().to_string(),
                })
                .collect(),
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct BasicAuth {
    htpasswd: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    realm: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    forward_user_header: Option<String>,
}

impl BasicAuth {
    pub(super) fn of(b: &p::BasicAuthConfig) -> Self {
        Self {
            htpasswd: b.htpasswd.display().to_string(),
            realm: (b.realm != defaults::BASIC_AUTH_REALM).then(|| b.realm.clone()),
            forward_user_header: b
                .forward_user_header
                .as_ref()
                .map(|h| h.as_str().to_string()),
        }
    }
}
