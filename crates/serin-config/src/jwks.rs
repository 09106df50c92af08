//! JSON Web Key Sets (RFC 7517) turned into the keys a JWT filter verifies
//! signatures with: public signature keys only, each with the algorithms
//! it may verify.

use std::path::{Path, PathBuf};

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};

/// One key a token's signature may be checked with.
#[derive(Clone)]
pub struct VerifyingKey {
    /// The JWK's `kid`; a token naming a `kid` is checked with its key only.
    pub kid: Option<String>,
    /// The algorithms this key verifies (never HS* nor `none`).
    pub algorithms: Vec<Algorithm>,
    pub key: DecodingKey,
}

impl std::fmt::Debug for VerifyingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifyingKey")
            .field("kid", &self.kid)
            .field("algorithms", &self.algorithms)
            .finish_non_exhaustive()
    }
}

/// A JWKS document, its keys read one by one.
#[derive(serde::Deserialize)]
struct KeySet {
    keys: Vec<serde_json::Value>,
}

/// Why a key set cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum JwksError {
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("not a JSON Web Key Set ({{\"keys\": [...]}}): {0}")]
    Json(#[from] serde_json::Error),
    #[error(
        "key {0}: a symmetric (`oct`) key is a shared secret; a JWKS that serin trusts holds public keys only (HS* tokens are refused)"
    )]
    Symmetric(String),
    #[error("key {kid}: {why}")]
    Unusable { kid: String, why: String },
    #[error("the key set has no signature key (RSA, EC P-256/P-384 or Ed25519)")]
    NoKeys,
}

/// The keys of the JWKS file at `path`.
pub fn read_jwks_file(path: &Path) -> Result<Vec<VerifyingKey>, JwksError> {
    let text = std::fs::read(path).map_err(|source| JwksError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse_jwks(&text)
}

/// The signature keys of a JWKS document. Keys meant for encryption
/// (`use: enc`, RSA-OAEP) are skipped, as identity providers publish them
/// beside their signing keys; a symmetric key fails the whole set.
pub fn parse_jwks(text: &[u8]) -> Result<Vec<VerifyingKey>, JwksError> {
    let set: KeySet = serde_json::from_slice(text)?;
    let mut keys = Vec::new();
    for (index, raw) in set.keys.into_iter().enumerate() {
        // A key of a type or `alg` not known here (identity providers add
        // new ones) is skipped, not a reason to refuse its neighbours.
        let Ok(jwk) = serde_json::from_value::<Jwk>(raw) else {
            continue;
        };
        let jwk = &jwk;
        let kid = jwk
            .common
            .key_id
            .clone()
            .unwrap_or_else(|| format!("#{index}"));
        if matches!(jwk.algorithm, AlgorithmParameters::OctetKey(_)) {
            return Err(JwksError::Symmetric(kid));
        }
        if jwk.common.public_key_use == Some(PublicKeyUse::Encryption) {
            continue;
        }
        let Some(algorithms) = algorithms(jwk) else {
            continue;
        };
        let key = DecodingKey::from_jwk(jwk).map_err(|e| JwksError::Unusable {
            kid: kid.clone(),
            why: e.to_string(),
        })?;
        keys.push(VerifyingKey {
            kid: jwk.common.key_id.clone(),
            algorithms,
            key,
        });
    }
    if keys.is_empty() {
        return Err(JwksError::NoKeys);
    }
    Ok(keys)
}

/// The signature algorithms a key verifies: its `alg` when it names one of
/// its own family, else what its type and curve allow. `None`: not a
/// signature key serin can use.
fn algorithms(jwk: &Jwk) -> Option<Vec<Algorithm>> {
    let family: &[Algorithm] = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => &[
            Algorithm::RS256,
            Algorithm::RS384,
            Algorithm::RS512,
            Algorithm::PS256,
            Algorithm::PS384,
            Algorithm::PS512,
        ],
        AlgorithmParameters::EllipticCurve(ec) => match ec.curve {
            EllipticCurve::P256 => &[Algorithm::ES256],
            EllipticCurve::P384 => &[Algorithm::ES384],
            _ => return None,
        },
        AlgorithmParameters::OctetKeyPair(okp) => match okp.curve {
            EllipticCurve::Ed25519 => &[Algorithm::EdDSA],
            _ => return None,
        },
        _ => return None,
    };
    match jwk.common.key_algorithm {
        None => Some(family.to_vec()),
        Some(named) => {
            let alg = signature_algorithm(named)?;
            family.contains(&alg).then(|| vec![alg])
        }
    }
}

/// The signature algorithm a JWK's `alg` names; `None` for an encryption one.
fn signature_algorithm(named: KeyAlgorithm) -> Option<Algorithm> {
    Some(match named {
        KeyAlgorithm::HS256 => Algorithm::HS256,
        KeyAlgorithm::HS384 => Algorithm::HS384,
        KeyAlgorithm::HS512 => Algorithm::HS512,
        KeyAlgorithm::ES256 => Algorithm::ES256,
        KeyAlgorithm::ES384 => Algorithm::ES384,
        KeyAlgorithm::RS256 => Algorithm::RS256,
        KeyAlgorithm::RS384 => Algorithm::RS384,
        KeyAlgorithm::RS512 => Algorithm::RS512,
        KeyAlgorithm::PS256 => Algorithm::PS256,
        KeyAlgorithm::PS384 => Algorithm::PS384,
        KeyAlgorithm::PS512 => Algorithm::PS512,
        KeyAlgorithm::EdDSA => Algorithm::EdDSA,
        KeyAlgorithm::RSA1_5 | KeyAlgorithm::RSA_OAEP | KeyAlgorithm::RSA_OAEP_256 => {
            return None;
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A P-256 public key (RFC 7515 A.3's), as a JWK with `extra` fields.
    fn ec(extra: &str) -> String {
        format!(
            r#"{{"kty":"EC","crv":"P-256","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"{extra}}}"#
        )
    }

    #[test]
    fn key_sets_give_signature_keys_or_say_why_not() {
        // (the key set, each key's algorithms or the error's start)
        type Case = (String, Result<Vec<Vec<Algorithm>>, &'static str>);
        let cases: [Case; 8] = [
            (
                format!(r#"{{"keys":[{}]}}"#, ec(r#","kid":"a""#)),
                Ok(vec![vec![Algorithm::ES256]]),
            ),
            (
                format!(r#"{{"keys":[{}]}}"#, ec(r#","alg":"ES256""#)),
                Ok(vec![vec![Algorithm::ES256]]),
            ),
            (
                // An alg of another family is not believed.
                format!(r#"{{"keys":[{}]}}"#, ec(r#","alg":"HS256""#)),
                Err("the key set has no signature key"),
            ),
            (
                format!(
                    r#"{{"keys":[{},{}]}}"#,
                    ec(r#","use":"enc""#),
                    ec(r#","use":"sig""#)
                ),
                Ok(vec![vec![Algorithm::ES256]]),
            ),
            (
                r#"{"keys":[{"kty":"oct","kid":"s","k":"c2VjcmV0"}]}"#.into(),
                Err("key s: a symmetric"),
            ),
            (
                r#"{"keys":[]}"#.into(),
                Err("the key set has no signature key"),
            ),
            ("[1,2]".into(), Err("not a JSON Web Key Set")),
            (
                // A key of an algorithm not known here is passed over.
                format!(
                    r#"{{"keys":[{},{}]}}"#,
                    ec(r#","alg":"ES999""#),
                    ec(r#","kid":"b""#)
                ),
                Ok(vec![vec![Algorithm::ES256]]),
            ),
        ];
        for (text, expected) in cases {
            let got = parse_jwks(text.as_bytes())
                .map(|keys| keys.into_iter().map(|k| k.algorithms).collect::<Vec<_>>())
                .map_err(|e| e.to_string());
            match (&got, &expected) {
                (Ok(g), Ok(e)) => assert_eq!(g, e, "{text}"),
                (Err(g), Err(e)) => assert!(g.starts_with(e), "{text}: {g}"),
                _ => panic!("{text}: got {got:?}, expected {expected:?}"),
            }
        }
    }
}
