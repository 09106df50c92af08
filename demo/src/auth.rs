//! External authorization (Gateway API ExternalAuth, HTTP mode): every
//! request's `Authorization` header is checked against a credentials file.
//!
//! The file has one credential a line, `#` starts a comment:
//!
//! ```text
//! token <token> <user>
//! basic <user> <password>
//! ```

use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::Router;
use axum::extract::Request;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use tracing::Level;

use crate::cli::AuthArgs;
use crate::common::{self, Identity, Readiness, id_event, json_error};

const CHALLENGE: &str = r#"Basic realm="serin", Bearer"#;

/// A credentials file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    #[error("cannot read credentials file {}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}:{line}: {message}", path.display())]
    Line {
        path: PathBuf,
        line: usize,
        message: String,
    },
}

/// The allowed credentials.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Credentials {
    /// (token, user)
    tokens: Vec<(String, String)>,
    /// (user, password)
    basic: Vec<(String, String)>,
}

impl Credentials {
    pub fn load(path: &Path) -> Result<Self, CredentialsError> {
        let text = std::fs::read_to_string(path).map_err(|source| CredentialsError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text).map_err(|(line, message)| CredentialsError::Line {
            path: path.to_owned(),
            line,
            message,
        })
    }

    /// Parses the file's text; an error carries the 1-based line number.
    pub fn parse(text: &str) -> Result<Self, (usize, String)> {
        let mut creds = Self::default();
        for (index, raw) in text.lines().enumerate() {
            let line_no = index + 1;
            let line = raw.split_once('#').map_or(raw, |(before, _)| before);
            let words: Vec<&str> = line.split_whitespace().collect();
            match words.as_slice() {
                [] => {}
                ["token", token, user] => {
                    if creds.tokens.iter().any(|(t, _)| t == token) {
                        return Err((line_no, "this token is already defined".to_owned()));
                    }
                    creds.tokens.push(((*token).to_owned(), (*user).to_owned()));
                }
                ["basic", user, password] => {
                    if user.contains(':') {
                        return Err((line_no, format!("user name {user:?} contains ':'")));
                    }
                    if creds.basic.iter().any(|(u, _)| u == user) {
                        return Err((line_no, format!("user {user:?} is already defined")));
                    }
                    creds
                        .basic
                        .push(((*user).to_owned(), (*password).to_owned()));
                }
                [kind @ ("token" | "basic"), ..] => {
                    let expected = if *kind == "token" {
                        "token <token> <user>"
                    } else {
                        "basic <user> <password>"
                    };
                    return Err((
                        line_no,
                        format!("expected `{expected}`, found {} words", words.len()),
                    ));
                }
                [kind, ..] => {
                    return Err((
                        line_no,
                        format!("unknown kind {kind:?}: expected `token` or `basic`"),
                    ));
                }
            }
        }
        Ok(creds)
    }

    fn len(&self) -> usize {
        self.tokens.len() + self.basic.len()
    }

    /// The user a bearer token belongs to.
    fn token_user(&self, token: &str) -> Option<&str> {
        // Look at every entry so the time taken does not tell which matched.
        let mut found = None;
        for (known, user) in &self.tokens {
            if constant_time_eq(known.as_bytes(), token.as_bytes()) {
                found = Some(user.as_str());
            }
        }
        found
    }

    /// Whether the user and password are known.
    fn basic_ok(&self, user: &str, password: &str) -> bool {
        let mut ok = false;
        for (known_user, known_password) in &self.basic {
            let user_eq = constant_time_eq(known_user.as_bytes(), user.as_bytes());
            let password_eq = constant_time_eq(known_password.as_bytes(), password.as_bytes());
            ok |= user_eq & password_eq;
        }
        ok
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The outcome of checking one request.
#[derive(Debug, PartialEq, Eq)]
enum Decision {
    Allow(String),
    /// No usable credentials: 401 with a challenge.
    Unauthenticated(&'static str),
    /// Credentials given but not known: 403.
    Forbidden(&'static str),
}

fn decide(creds: &Credentials, headers: &HeaderMap) -> Decision {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Decision::Unauthenticated("missing Authorization header");
    };
    let Ok(value) = value.to_str() else {
        return Decision::Unauthenticated("malformed Authorization header");
    };
    let (scheme, rest) = value.trim().split_once(' ').unwrap_or((value.trim(), ""));
    let rest = rest.trim();
    if scheme.eq_ignore_ascii_case("bearer") {
        if rest.is_empty() {
            return Decision::Unauthenticated("empty bearer token");
        }
        match creds.token_user(rest) {
            Some(user) => Decision::Allow(user.to_owned()),
            None => Decision::Forbidden("unknown token"),
        }
    } else if scheme.eq_ignore_ascii_case("basic") {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(rest)
            .ok()
            .and_then(|bytes| String::from_utf8(bytes).ok());
        let Some((user, password)) = decoded.as_deref().and_then(|s| s.split_once(':')) else {
            return Decision::Unauthenticated("malformed Basic credentials");
        };
        if creds.basic_ok(user, password) {
            Decision::Allow(user.to_owned())
        } else {
            Decision::Forbidden("unknown user or wrong password")
        }
    } else {
        Decision::Unauthenticated("unsupported Authorization scheme: use Basic or Bearer")
    }
}

fn respond(id: &Identity, decision: Decision) -> Response {
    match decision {
        Decision::Allow(user) => match HeaderValue::from_str(&user) {
            Ok(value) => {
                let mut response = StatusCode::OK.into_response();
                response.headers_mut().insert("x-user", value);
                response
            }
            Err(_) => json_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "user name is not a valid header",
            ),
        },
        Decision::Unauthenticated(reason) => {
            id_event!(Level::DEBUG, id, reason, "unauthenticated");
            let mut response = json_error(StatusCode::UNAUTHORIZED, reason);
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(CHALLENGE),
            );
            response
        }
        Decision::Forbidden(reason) => {
            id_event!(Level::DEBUG, id, reason, "forbidden");
            json_error(StatusCode::FORBIDDEN, reason)
        }
    }
}

pub async fn run(args: AuthArgs) -> anyhow::Result<()> {
    let id = Arc::new(Identity::new("auth", &args.serve));
    let creds = Credentials::load(&args.credentials)?;
    let addr = common::listen_addr(&args.serve)?;
    if creds.len() == 0 {
        id_event!(
            Level::WARN,
            id,
            "the credentials file has no credentials: every request will be refused"
        );
    }
    id_event!(
        Level::INFO,
        id,
        credentials = %args.credentials.display(),
        tokens = creds.tokens.len(),
        users = creds.basic.len(),
        "starting"
    );
    let readiness = Readiness::always();
    let creds = Arc::new(creds);
    let check = {
        let id = Arc::clone(&id);
        move |req: Request| {
            let creds = Arc::clone(&creds);
            let id = Arc::clone(&id);
            async move { respond(&id, decide(&creds, req.headers())) }
        }
    };
    // GET /health and GET /ready are the service's own; anything else,
    // including other methods on those paths, is checked.
    let router = Router::new()
        .route("/health", common::health_route().fallback(check.clone()))
        .route(
            "/ready",
            common::ready_route(Arc::clone(&readiness)).fallback(check.clone()),
        )
        .fallback(check);
    common::serve(id, addr, router, readiness).await
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "\
# demo credentials
token s3cr3t alice   # trailing comment
basic bob hunter2

   token other carol
";

    fn headers(auth: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, HeaderValue::from_str(auth).unwrap());
        h
    }

    #[test]
    fn parses_tokens_and_users() {
        let creds = Credentials::parse(FILE).unwrap();
        assert_eq!(creds.token_user("s3cr3t"), Some("alice"));
        assert_eq!(creds.token_user("other"), Some("carol"));
        assert_eq!(creds.token_user("nope"), None);
        assert!(creds.basic_ok("bob", "hunter2"));
        assert!(!creds.basic_ok("bob", "hunter3"));
        assert_eq!(creds.len(), 3);
    }

    #[test]
    fn bad_lines_name_their_line() {
        let cases = [
            ("token onlytoken\n", 1, "expected `token <token> <user>`"),
            (
                "# ok\n\nbasic bob\n",
                3,
                "expected `basic <user> <password>`",
            ),
            ("basic a b c\n", 1, "found 4 words"),
            ("password x y\n", 1, "unknown kind \"password\""),
            ("token t a\ntoken t b\n", 2, "already defined"),
            ("basic a:b c\n", 1, "contains ':'"),
        ];
        for (text, line, needle) in cases {
            let (got_line, message) = Credentials::parse(text).unwrap_err();
            assert_eq!(got_line, line, "{text:?}");
            assert!(message.contains(needle), "{text:?}: {message}");
        }
    }

    #[test]
    fn load_error_shows_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("creds.txt");
        std::fs::write(&path, "token a b\nnonsense\n").unwrap();
        let err = Credentials::load(&path).unwrap_err().to_string();
        assert!(err.starts_with(&format!("{}:2: ", path.display())), "{err}");
        let missing = Credentials::load(&dir.path().join("missing")).unwrap_err();
        assert!(matches!(missing, CredentialsError::Read { .. }));
    }

    #[test]
    fn decides() {
        let creds = Credentials::parse(FILE).unwrap();
        let basic = |s: &str| {
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(s)
            )
        };
        assert_eq!(
            decide(&creds, &headers("Bearer s3cr3t")),
            Decision::Allow("alice".into())
        );
        assert_eq!(
            decide(&creds, &headers("bearer  s3cr3t ")),
            Decision::Allow("alice".into())
        );
        assert_eq!(
            decide(&creds, &headers(&basic("bob:hunter2"))),
            Decision::Allow("bob".into())
        );
        assert!(matches!(
            decide(&creds, &headers("Bearer wrong")),
            Decision::Forbidden(_)
        ));
        assert!(matches!(
            decide(&creds, &headers(&basic("bob:wrong"))),
            Decision::Forbidden(_)
        ));
        assert!(matches!(
            decide(&creds, &HeaderMap::new()),
            Decision::Unauthenticated(_)
        ));
        assert!(matches!(
            decide(&creds, &headers("Basic !!!")),
            Decision::Unauthenticated(_)
        ));
        assert!(matches!(
            decide(&creds, &headers("Digest x")),
            Decision::Unauthenticated(_)
        ));
    }
}
