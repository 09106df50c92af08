//! The BasicAuth filter: a request passes when its `Authorization: Basic`
//! credentials are a user of the filter's htpasswd file and the password
//! matches the user's bcrypt hash; otherwise 401 with
//! `WWW-Authenticate: Basic realm="..."` and no upstream call.
//!
//! bcrypt is slow on purpose (tens of milliseconds at the usual cost), so
//! each check runs on tokio's blocking pool, never on a request worker,
//! and at most one check per CPU runs at once: a flood of wrong passwords
//! queues for the CPUs instead of taking every blocking thread. Successful
//! checks are not cached: a cache would keep a password-equivalent in
//! memory and let a stolen hash of it in without the password.

use std::sync::Arc;

use base64::Engine;
use http::header::{self, HeaderValue};
use http::{HeaderMap, Response, StatusCode};
use serin_config::proxy::BasicAuthConfig;
use tokio::sync::Semaphore;

use crate::body::ResponseBody;

/// A BasicAuth filter, ready to run.
pub struct CompiledBasicAuth {
    config: Arc<BasicAuthConfig>,
    /// One permit per CPU: how many bcrypt checks run at once.
    checks: Arc<Semaphore>,
    challenge: HeaderValue,
}

impl CompiledBasicAuth {
    pub fn new(config: &BasicAuthConfig) -> Self {
        let cpus = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
        let challenge = HeaderValue::from_str(&format!("Basic realm=\"{}\"", config.realm))
            .unwrap_or_else(|_| HeaderValue::from_static("Basic realm=\"serin\""));
        Self {
            config: Arc::new(config.clone()),
            checks: Arc::new(Semaphore::new(cpus)),
            challenge,
        }
    }

    /// Lets the request on (with the user's name forwarded when asked), or
    /// refuses it.
    pub async fn check(&self, headers: &mut HeaderMap) -> Result<(), Box<Response<ResponseBody>>> {
        // A client's own copy could claim to be another user.
        if let Some(forward) = &self.config.forward_user_header {
            headers.remove(forward);
        }
        let Some((user, password)) = credentials(headers) else {
            return Err(Box::new(self.unauthorized()));
        };
        let Ok(_permit) = self.checks.clone().acquire_owned().await else {
            return Err(Box::new(self.unauthorized()));
        };
        let config = self.config.clone();
        let name = user.clone();
        let verified = tokio::task::spawn_blocking(move || verify(&config, &name, &password))
            .await
            .unwrap_or(false);
        if !verified {
            return Err(Box::new(self.unauthorized()));
        }
        if let Some(forward) = &self.config.forward_user_header
            && let Ok(value) = HeaderValue::from_str(&user)
        {
            headers.insert(forward.clone(), value);
        }
        Ok(())
    }

    fn unauthorized(&self) -> Response<ResponseBody> {
        let mut resp = Response::new(ResponseBody::full(
            "unauthorized: a known user name and password are required\n",
        ));
        *resp.status_mut() = StatusCode::UNAUTHORIZED;
        resp.headers_mut()
            .insert(header::WWW_AUTHENTICATE, self.challenge.clone());
        resp.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        resp
    }
}

/// The user and password of `Authorization: Basic BASE64(user:password)`.
fn credentials(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, encoded) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}

/// Whether `password` is `user`'s. An unknown user costs a bcrypt check
/// too (against another user's hash, the answer thrown away), so timing
/// does not tell which user names exist.
fn verify(config: &BasicAuthConfig, user: &str, password: &str) -> bool {
    match config.users.iter().find(|u| u.name == user) {
        Some(u) => bcrypt::verify(password, &u.bcrypt).unwrap_or(false),
        None => {
            if let Some(any) = config.users.first() {
                let _ = bcrypt::verify(password, &any.bcrypt);
            }
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_credentials_are_read_or_not() {
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        let cases = [
            (format!("Basic {}", b64("alice:pw")), Some(("alice", "pw"))),
            (
                format!("basic {}", b64("alice:a:b")),
                Some(("alice", "a:b")),
            ),
            (format!("Basic {}", b64("alice:")), Some(("alice", ""))),
            (format!("Basic {}", b64("no-colon")), None),
            ("Basic !!!".to_string(), None),
            (format!("Bearer {}", b64("alice:pw")), None),
        ];
        for (value, expected) in cases {
            let mut headers = HeaderMap::new();
            headers.insert(
                header::AUTHORIZATION,
                HeaderValue::from_str(&value).unwrap_or_else(|e| panic!("{e}")),
            );
            let got = credentials(&headers);
            assert_eq!(
                got.as_ref().map(|(u, p)| (u.as_str(), p.as_str())),
                expected,
                "{value}"
            );
        }
    }
}
