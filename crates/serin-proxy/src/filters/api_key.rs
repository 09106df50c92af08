//! The APIKey filter: a request passes when the SHA-256 of its key header
//! equals one configured hash (compared in constant time); otherwise 401
//! and no upstream is contacted.

use http::header::{self, HeaderValue};
use http::{HeaderMap, Response, StatusCode};
use serin_config::proxy::ApiKeyConfig;
use subtle::ConstantTimeEq;

use crate::body::ResponseBody;

/// The matched key's name, or the refusal to send back.
pub fn check(
    config: &ApiKeyConfig,
    headers: &mut HeaderMap,
) -> Result<(), Box<Response<ResponseBody>>> {
    // A client's own copy could claim a key it does not hold.
    if let Some(forward) = &config.forward_key_name_header {
        headers.remove(forward);
    }
    let Some(name) = headers
        .get(&config.header)
        .and_then(|key| matching_key(config, key.as_bytes()))
    else {
        return Err(Box::new(unauthorized(config)));
    };
    if let Some(forward) = &config.forward_key_name_header
        && let Ok(value) = HeaderValue::from_str(name)
    {
        headers.insert(forward.clone(), value);
    }
    Ok(())
}

/// The name of the key whose hash `presented` has. Every hash is compared,
/// so the time taken says nothing about which one matched.
fn matching_key<'c>(config: &'c ApiKeyConfig, presented: &[u8]) -> Option<&'c str> {
    let digest = ring::digest::digest(&ring::digest::SHA256, presented);
    let mut found = None;
    for key in &config.keys {
        if bool::from(key.sha256.ct_eq(digest.as_ref())) {
            found = Some(key.name.as_str());
        }
    }
    found
}

fn unauthorized(config: &ApiKeyConfig) -> Response<ResponseBody> {
    let mut resp = Response::new(ResponseBody::full(
        "unauthorized: missing or unknown API key\n",
    ));
    *resp.status_mut() = StatusCode::UNAUTHORIZED;
    // RFC 9110 §11.6.1: a 401 names its scheme; this one says which header.
    let challenge = format!("APIKey realm=\"serin\", header=\"{}\"", config.header);
    if let Ok(v) = HeaderValue::from_str(&challenge) {
        resp.headers_mut().insert(header::WWW_AUTHENTICATE, v);
    }
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;
    use serin_config::proxy::ApiKeyEntryConfig;

    fn sha(key: &str) -> [u8; 32] {
        let d = ring::digest::digest(&ring::digest::SHA256, key.as_bytes());
        let mut out = [0u8; 32];
        out.copy_from_slice(d.as_ref());
        out
    }

    #[test]
    fn keys_are_matched_by_hash() {
        let config = ApiKeyConfig {
            header: http::HeaderName::from_static("x-api-key"),
            keys: vec![
                ApiKeyEntryConfig {
                    name: "ci".into(),
                    sha256: sha("k1"),
                },
                ApiKeyEntryConfig {
                    name: "ops".into(),
                    sha256: sha("k2"),
                },
            ],
            forward_key_name_header: None,
        };
        let cases: [(&str, Option<&str>); 4] = [
            ("k1", Some("ci")),
            ("k2", Some("ops")),
            ("k3", None),
            ("", None),
        ];
        for (presented, name) in cases {
            assert_eq!(
                matching_key(&config, presented.as_bytes()),
                name,
                "{presented}"
            );
        }
    }
}
