//! The certificate a listener serves, chosen by the client's SNI: an exact
//! name, then a `*.` wildcard of one label (as rustls and Envoy match),
//! then the default. With no default, a handshake that names no host or an
//! unknown one is refused.

use std::sync::Arc;

use rustc_hash::FxHashMap;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// A certificate ready to serve, with what `x-forwarded-client-cert`
/// says of it.
#[derive(Debug)]
pub struct Served {
    pub key: Arc<CertifiedKey>,
    /// Its first URI subject alternative name: XFCC's `By`.
    pub uri: Option<String>,
}

/// A listener's certificates by the names they are served for.
#[derive(Debug, Default)]
pub struct CertSet {
    exact: FxHashMap<String, Arc<Served>>,
    /// `*.example.com` stored as `example.com`.
    wildcard: FxHashMap<String, Arc<Served>>,
    default: Option<Arc<Served>>,
}

impl CertSet {
    pub fn set_default(&mut self, served: Arc<Served>) {
        self.default = Some(served);
    }

    /// Serves `served` for `name` (lowercase; `*.` for a wildcard). The
    /// first certificate given a name keeps it.
    pub fn add(&mut self, name: &str, served: &Arc<Served>) {
        let map = match name.strip_prefix("*.") {
            Some(_) => &mut self.wildcard,
            None => &mut self.exact,
        };
        let key = name.strip_prefix("*.").unwrap_or(name).to_string();
        map.entry(key).or_insert_with(|| served.clone());
    }

    /// The certificate for an SNI name (`None`: the client sent none).
    pub fn pick(&self, sni: Option<&str>) -> Option<&Arc<Served>> {
        let Some(name) = sni else {
            return self.default.as_ref();
        };
        let lower;
        let name = if name.bytes().any(|b| b.is_ascii_uppercase()) {
            lower = name.to_ascii_lowercase();
            lower.as_str()
        } else {
            name
        };
        self.exact
            .get(name)
            .or_else(|| {
                let (label, parent) = name.split_once('.')?;
                if label.is_empty() {
                    return None;
                }
                self.wildcard.get(parent)
            })
            .or(self.default.as_ref())
    }
}

/// The resolver a listener's rustls config asks on each handshake.
#[derive(Debug)]
pub struct SniResolver(pub Arc<CertSet>);

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let picked = self.0.pick(hello.server_name());
        if picked.is_none() {
            tracing::debug!(sni = ?hello.server_name(), "no certificate for this SNI and no default: handshake refused");
        }
        picked.map(|s| s.key.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn served(uri: &str) -> Arc<Served> {
        let ck = rcgen::generate_simple_self_signed(vec!["x.test".into()])
            .unwrap_or_else(|e| panic!("{e}"));
        let key = rustls::crypto::ring::sign::any_supported_type(
            &rustls_pki_types::PrivateKeyDer::Pkcs8(ck.signing_key.serialize_der().into()),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        Arc::new(Served {
            key: Arc::new(CertifiedKey::new(vec![ck.cert.der().clone()], key)),
            uri: Some(uri.into()),
        })
    }

    #[test]
    fn sni_picks_exact_then_one_label_wildcard_then_default() {
        let mut with_default = CertSet::default();
        with_default.add("api.example.com", &served("exact"));
        with_default.add("*.example.com", &served("wild"));
        with_default.set_default(served("default"));
        let mut without = CertSet::default();
        without.add("api.example.com", &served("exact"));
        without.add("*.example.com", &served("wild"));
        #[rustfmt::skip]
        let cases = [
            (Some("api.example.com"), Some("exact"), Some("exact")),
            (Some("API.Example.COM"), Some("exact"), Some("exact")),
            (Some("web.example.com"), Some("wild"), Some("wild")),
            (Some("a.b.example.com"), Some("default"), None),
            (Some("example.com"), Some("default"), None),
            (Some("other.test"), Some("default"), None),
            (None, Some("default"), None),
        ];
        for (sni, want_default, want_none) in cases {
            let got = |set: &CertSet| set.pick(sni).and_then(|s| s.uri.clone());
            assert_eq!(
                got(&with_default).as_deref(),
                want_default,
                "{sni:?} with default"
            );
            assert_eq!(
                got(&without).as_deref(),
                want_none,
                "{sni:?} without default"
            );
        }
    }
}
