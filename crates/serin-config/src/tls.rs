//! TLS files (PEM certificate chains, private keys, CA bundles) read as
//! rustls will use them, so `serin validate` and a running proxy refuse the
//! same files for the same reasons.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use rustls::RootCertStore;
use rustls::crypto::CryptoProvider;
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// Why a TLS file cannot be used; each says which file.
#[derive(Debug, thiserror::Error)]
pub enum TlsFileError {
    #[error("cannot read certificate {}: {source}", path.display())]
    Certificate {
        path: PathBuf,
        source: rustls_pki_types::pem::Error,
    },
    #[error("{} holds no PEM certificate", path.display())]
    NoCertificate { path: PathBuf },
    #[error("cannot read private key {}: {source}", path.display())]
    Key {
        path: PathBuf,
        source: rustls_pki_types::pem::Error,
    },
    #[error("private key {} cannot be used: {source}", path.display())]
    UnusableKey {
        path: PathBuf,
        source: rustls::Error,
    },
    #[error("private key {} does not belong to certificate {}", key.display(), certificate.display())]
    KeyMismatch { certificate: PathBuf, key: PathBuf },
    #[error("certificate {} cannot be parsed: {reason}", path.display())]
    Unparsable { path: PathBuf, reason: String },
    #[error("CA bundle {} holds no certificate a client could be checked against", path.display())]
    EmptyBundle { path: PathBuf },
}

/// The crypto serin uses everywhere (ring, as the rest of the workspace).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The system's trust store holds no certificate serin can use; why.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct NoSystemRoots(pub String);

/// The system's trust store (rustls-native-certs: the OS's own list, which
/// the distribution keeps current and where an organisation adds its
/// private CAs; webpki-roots would be a copy of Mozilla's frozen into the
/// binary). Read once, at the first use.
pub fn system_roots() -> Result<Arc<RootCertStore>, NoSystemRoots> {
    static ROOTS: OnceLock<Result<Arc<RootCertStore>, NoSystemRoots>> = OnceLock::new();
    ROOTS
        .get_or_init(|| {
            let found = rustls_native_certs::load_native_certs();
            let mut roots = RootCertStore::empty();
            let (_, ignored) = roots.add_parsable_certificates(found.certs);
            if roots.is_empty() {
                let why = found
                    .errors
                    .first()
                    .map_or_else(|| format!("{ignored} unusable"), ToString::to_string);
                return Err(NoSystemRoots(why));
            }
            Ok(Arc::new(roots))
        })
        .clone()
}

/// Every certificate of a PEM file, in order.
pub fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsFileError> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|source| TlsFileError::Certificate {
            path: path.to_path_buf(),
            source,
        })?;
    if certs.is_empty() {
        return Err(TlsFileError::NoCertificate {
            path: path.to_path_buf(),
        });
    }
    Ok(certs)
}

/// The private key of a PEM file (PKCS#8, PKCS#1 or SEC1).
pub fn private_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsFileError> {
    PrivateKeyDer::from_pem_file(path).map_err(|source| TlsFileError::Key {
        path: path.to_path_buf(),
        source,
    })
}

/// A certificate chain and its private key, checked to belong together.
pub fn certified_key(cert: &Path, key: &Path) -> Result<Arc<CertifiedKey>, TlsFileError> {
    let chain = certificates(cert)?;
    let der = private_key(key)?;
    let signing = provider()
        .key_provider
        .load_private_key(der)
        .map_err(|source| TlsFileError::UnusableKey {
            path: key.to_path_buf(),
            source,
        })?;
    let certified = CertifiedKey::new(chain, signing);
    match certified.keys_match() {
        Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {
            Ok(Arc::new(certified))
        }
        Err(rustls::Error::InconsistentKeys(_)) => Err(TlsFileError::KeyMismatch {
            certificate: cert.to_path_buf(),
            key: key.to_path_buf(),
        }),
        Err(e) => Err(TlsFileError::Unparsable {
            path: cert.to_path_buf(),
            reason: e.to_string(),
        }),
    }
}

/// The trust anchors of a PEM CA bundle. A certificate in it that is not a
/// usable anchor is an error: a bundle silently missing a CA refuses
/// clients (or upstreams) nobody expected to be refused.
pub fn ca_bundle(path: &Path) -> Result<RootCertStore, TlsFileError> {
    let mut roots = RootCertStore::empty();
    for cert in certificates(path)? {
        roots.add(cert).map_err(|e| TlsFileError::Unparsable {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
    }
    if roots.is_empty() {
        return Err(TlsFileError::EmptyBundle {
            path: path.to_path_buf(),
        });
    }
    Ok(roots)
}

/// The DNS names in a certificate's subject alternative names (lowercase,
/// wildcards as written): the names it is served for when the config gives
/// none.
pub fn dns_names(cert: &CertificateDer<'_>, path: &Path) -> Result<Vec<String>, TlsFileError> {
    let unparsable = |reason: String| TlsFileError::Unparsable {
        path: path.to_path_buf(),
        reason,
    };
    let (_, parsed) =
        x509_parser::parse_x509_certificate(cert).map_err(|e| unparsable(e.to_string()))?;
    let san = parsed
        .subject_alternative_name()
        .map_err(|e| unparsable(e.to_string()))?;
    Ok(san
        .map(|ext| {
            ext.value
                .general_names
                .iter()
                .filter_map(|n| match n {
                    x509_parser::extensions::GeneralName::DNSName(d) => {
                        Some(d.to_ascii_lowercase())
                    }
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap_or_else(|e| panic!("write {}: {e}", p.display()));
        p
    }

    #[test]
    fn files_that_cannot_serve_are_refused_saying_which() {
        let dir = std::env::temp_dir().join(format!("serin-config-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
        let a = rcgen::generate_simple_self_signed(vec!["a.test".into()])
            .unwrap_or_else(|e| panic!("{e}"));
        let b = rcgen::generate_simple_self_signed(vec!["b.test".into()])
            .unwrap_or_else(|e| panic!("{e}"));
        let cert_a = write(&dir, "a.pem", &a.cert.pem());
        let key_a = write(&dir, "a.key", &a.signing_key.serialize_pem());
        let key_b = write(&dir, "b.key", &b.signing_key.serialize_pem());
        let empty = write(&dir, "empty.pem", "");
        let missing = dir.join("missing.pem");
        assert!(certified_key(&cert_a, &key_a).is_ok());
        let cases: [(&str, Result<(), TlsFileError>, &str); 4] = [
            (
                "other key",
                certified_key(&cert_a, &key_b).map(drop),
                "does not belong",
            ),
            (
                "no file",
                certified_key(&missing, &key_a).map(drop),
                "missing.pem",
            ),
            (
                "empty",
                certified_key(&empty, &key_a).map(drop),
                "holds no PEM",
            ),
            ("key as bundle", ca_bundle(&key_a).map(drop), "holds no PEM"),
        ];
        for (what, got, want) in cases {
            let e = got.err().unwrap_or_else(|| panic!("{what}: accepted"));
            assert!(e.to_string().contains(want), "{what}: {e}");
        }
        let names = dns_names(&a.cert.der().clone(), &cert_a).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(names, ["a.test"]);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
