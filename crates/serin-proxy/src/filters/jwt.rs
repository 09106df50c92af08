//! The JWT filter: a request passes when it carries a token signed by a key
//! of the filter's JWKS, for its issuer and one of its audiences, within
//! `exp`/`nbf` (with leeway); chosen claims then go upstream as headers.
//! Otherwise 401 with an RFC 6750 `WWW-Authenticate` and no upstream call.

use std::sync::Arc;

use http::header::{self, HeaderValue};
use http::{HeaderMap, Response, StatusCode};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, Validation};
use serde_json::{Map, Value};
use serin_config::jwks::VerifyingKey;
use serin_config::proxy::JwtConfig;

use super::FilterError;
use super::jwks::Jwks;
use crate::body::ResponseBody;

/// A JWT filter, ready to run.
pub struct CompiledJwt {
    config: JwtConfig,
    keys: Arc<Jwks>,
    /// One per key family (RSA, EC, Ed25519), each with that family's
    /// algorithms: jsonwebtoken checks a key only against a validation of
    /// its own family. Which algorithm a token may use is then decided by
    /// the key that checks it (see [`candidates`]).
    validations: [Validation; 3],
}

/// Why a request's token is refused (the challenge's `error_description`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    /// No token at all: the challenge names no error (RFC 6750 §3.1).
    NoToken,
    Invalid(&'static str),
}

impl CompiledJwt {
    pub fn new(config: &JwtConfig) -> Result<Self, FilterError> {
        let validation = |family: &[Algorithm]| {
            let mut v = Validation::new(family[0]);
            v.algorithms = family.to_vec();
            v.leeway = config.leeway.as_secs();
            v.validate_nbf = true;
            v.set_issuer(&[&config.issuer]);
            v.set_audience(&config.audiences);
            v.set_required_spec_claims(&["exp", "iss", "aud"]);
            v
        };
        Ok(Self {
            keys: Jwks::load(&config.jwks)?,
            config: config.clone(),
            validations: FAMILIES.map(validation),
        })
    }

    /// The validation for tokens of `alg`: `None` for a symmetric one.
    fn validation(&self, alg: Algorithm) -> Option<&Validation> {
        let family = FAMILIES.iter().position(|f| f.contains(&alg))?;
        self.validations.get(family)
    }

    /// The headers claims are copied into.
    pub fn claim_headers(&self) -> impl Iterator<Item = &http::HeaderName> {
        self.config.claims_to_headers.iter().map(|c| &c.header)
    }

    /// Lets the request on with its claim headers set, or refuses it.
    pub fn check(&self, headers: &mut HeaderMap) -> Result<(), Box<Response<ResponseBody>>> {
        // A client's own copies could claim to be anyone.
        for c in &self.config.claims_to_headers {
            headers.remove(&c.header);
        }
        let claims = self
            .verify(headers)
            .map_err(|r| Box::new(unauthorized(r)))?;
        for c in &self.config.claims_to_headers {
            if let Some(value) = claims.get(&c.claim).and_then(header_value) {
                headers.insert(c.header.clone(), value);
            }
        }
        Ok(())
    }

    fn verify(&self, headers: &HeaderMap) -> Result<Map<String, Value>, Refusal> {
        let token = token(headers, self.config.header.as_ref()).ok_or(Refusal::NoToken)?;
        // `alg: none` and unknown algorithms fail here: no such Algorithm.
        let head = jsonwebtoken::decode_header(token)
            .map_err(|_| Refusal::Invalid("the token is malformed"))?;
        let keys = self
            .keys
            .current()
            .ok_or(Refusal::Invalid("the signing keys are not loaded yet"))?;
        let mut refusal = Refusal::Invalid("no key of the key set verifies this token");
        // HS*: no key of a JWKS serin trusts is a shared secret.
        let validation = self.validation(head.alg).ok_or(refusal)?;
        for key in candidates(&keys, head.alg, head.kid.as_deref()) {
            match jsonwebtoken::decode::<Map<String, Value>>(token, &key.key, validation) {
                Ok(data) => return Ok(data.claims),
                Err(e) => refusal = Refusal::Invalid(reason(e.kind())),
            }
        }
        Err(refusal)
    }
}

/// The asymmetric algorithms, by key family (RSA, EC, Ed25519).
const FAMILIES: [&[Algorithm]; 3] = [
    &[
        Algorithm::RS256,
        Algorithm::RS384,
        Algorithm::RS512,
        Algorithm::PS256,
        Algorithm::PS384,
        Algorithm::PS512,
    ],
    &[Algorithm::ES256, Algorithm::ES384],
    &[Algorithm::EdDSA],
];

/// The keys that may check a token of `alg` naming `kid`: a key verifies
/// only the algorithms its JWK allows (so HS* never matches, and an RSA
/// key is never used as an HMAC secret), and a token that names a `kid`
/// is checked with that key only.
fn candidates<'k>(
    keys: &'k [VerifyingKey],
    alg: Algorithm,
    kid: Option<&'k str>,
) -> impl Iterator<Item = &'k VerifyingKey> {
    keys.iter().filter(move |k| {
        k.algorithms.contains(&alg) && kid.is_none_or(|kid| k.kid.as_deref() == Some(kid))
    })
}

/// The token of `Authorization: Bearer TOKEN`, or of the configured header
/// (bare, or after `Bearer `).
fn token<'h>(headers: &'h HeaderMap, from: Option<&header::HeaderName>) -> Option<&'h str> {
    let value = headers
        .get(from.unwrap_or(&header::AUTHORIZATION))?
        .to_str()
        .ok()?
        .trim();
    let token = match value.split_once(' ') {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("bearer") => rest.trim(),
        _ if from.is_some() => value,
        _ => return None,
    };
    (!token.is_empty()).then_some(token)
}

fn reason(kind: &ErrorKind) -> &'static str {
    match kind {
        ErrorKind::ExpiredSignature => "the token has expired",
        ErrorKind::ImmatureSignature => "the token is not valid yet (nbf)",
        ErrorKind::InvalidIssuer => "the token is for another issuer",
        ErrorKind::InvalidAudience => "the token is for another audience",
        ErrorKind::InvalidSignature => "the signature does not verify",
        ErrorKind::MissingRequiredClaim(_) => "the token lacks exp, iss or aud",
        ErrorKind::InvalidAlgorithm => "the token's algorithm is not its key's",
        _ => "the token is malformed",
    }
}

/// A claim as header text: strings as they are, numbers and booleans
/// written out, lists of those joined with commas; other shapes are not
/// sent.
fn header_value(claim: &Value) -> Option<HeaderValue> {
    let text = match claim {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Array(items) => items
            .iter()
            .map(|v| match v {
                Value::String(s) => Some(s.clone()),
                Value::Number(n) => Some(n.to_string()),
                Value::Bool(b) => Some(b.to_string()),
                _ => None,
            })
            .collect::<Option<Vec<_>>>()?
            .join(","),
        Value::Null | Value::Object(_) => return None,
    };
    HeaderValue::from_str(&text).ok()
}

fn unauthorized(refusal: Refusal) -> Response<ResponseBody> {
    let (challenge, body) = match refusal {
        Refusal::NoToken => (
            r#"Bearer realm="serin""#.to_string(),
            "unauthorized: a bearer token is required\n".to_string(),
        ),
        Refusal::Invalid(why) => (
            format!(r#"Bearer realm="serin", error="invalid_token", error_description="{why}""#),
            format!("unauthorized: {why}\n"),
        ),
    };
    let mut resp = Response::new(ResponseBody::full(body));
    *resp.status_mut() = StatusCode::UNAUTHORIZED;
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

    #[test]
    fn tokens_are_read_from_bearer_or_the_configured_header() {
        let custom = header::HeaderName::from_static("x-token");
        let cases: [(&str, &str, Option<&header::HeaderName>, Option<&str>); 7] = [
            ("authorization", "Bearer abc", None, Some("abc")),
            ("authorization", "bearer  abc ", None, Some("abc")),
            ("authorization", "Basic abc", None, None),
            ("authorization", "Bearer ", None, None),
            ("x-token", "abc", Some(&custom), Some("abc")),
            ("x-token", "Bearer abc", Some(&custom), Some("abc")),
            ("authorization", "Bearer abc", Some(&custom), None),
        ];
        for (name, value, from, expected) in cases {
            let mut headers = HeaderMap::new();
            headers.insert(
                header::HeaderName::from_static(name),
                HeaderValue::from_static(value),
            );
            assert_eq!(token(&headers, from), expected, "{name}: {value}");
        }
    }

    #[test]
    fn claims_become_header_text_or_nothing() {
        let cases = [
            (serde_json::json!("alice"), Some("alice")),
            (serde_json::json!(42), Some("42")),
            (serde_json::json!(true), Some("true")),
            (serde_json::json!(["a", "b"]), Some("a,b")),
            (serde_json::json!({"a": 1}), None),
            (serde_json::json!([{"a": 1}]), None),
            (serde_json::json!("line\nbreak"), None),
        ];
        for (claim, expected) in cases {
            let got = header_value(&claim);
            assert_eq!(
                got.as_ref().and_then(|v| v.to_str().ok()),
                expected,
                "{claim}"
            );
        }
    }
}
