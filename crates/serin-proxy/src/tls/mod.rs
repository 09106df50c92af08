//! TLS (rustls): a listener's certificates chosen by SNI and reloaded when
//! their files change, client-certificate verification, and TLS to
//! upstreams. TLS 1.3 and 1.2 only, with rustls's cipher suites.

mod identity;
mod sni;
pub mod upstream;
mod watch;

use std::hash::{Hash, Hasher};
use std::path::Path;
use std::sync::{Arc, Weak};

use arc_swap::ArcSwap;
use rustls::ServerConfig;
use rustls::server::WebPkiClientVerifier;
use serin_config::proxy::{ClientValidationMode, TlsConfig};
use serin_config::tls::{TlsFileError, ca_bundle, certified_key, dns_names};
use tokio_rustls::TlsAcceptor;

pub use identity::{PeerIdentity, forward_client_cert};
use sni::{CertSet, Served, SniResolver};

/// TLS 1.3 and 1.2: nothing older (issue 13; as Envoy's and Go's defaults).
pub(crate) const PROTOCOL_VERSIONS: &[&rustls::SupportedProtocolVersion] =
    &[&rustls::version::TLS13, &rustls::version::TLS12];

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error(transparent)]
    File(#[from] TlsFileError),
    #[error("client certificate validation cannot be set up: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
    #[error("TLS settings refused: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("`{0}` cannot be sent as SNI: not a DNS name or an IP address")]
    ServerName(String),
    #[error(
        "the system trust store has no usable certificate ({0}); install ca-certificates or give `caCertificates`"
    )]
    NoSystemRoots(String),
}

/// A listener's TLS as one handshake uses it; replaced whole when a file
/// changes, so a handshake sees one consistent set.
pub struct Loaded {
    pub acceptor: TlsAcceptor,
    certs: Arc<CertSet>,
    /// Of the files' bytes: an event that changed nothing reloads nothing.
    fingerprint: u64,
}

impl Loaded {
    /// The verified client certificate of a finished handshake.
    pub fn peer_identity<T>(
        &self,
        stream: &tokio_rustls::server::TlsStream<T>,
    ) -> Option<PeerIdentity> {
        let conn = stream.get_ref().1;
        let leaf = conn.peer_certificates()?.first()?;
        let by = self
            .certs
            .pick(conn.server_name())
            .and_then(|s| s.uri.as_deref());
        PeerIdentity::of(leaf, by)
    }
}

/// A listener's TLS: what new handshakes use, kept current with its files.
pub struct ListenerTls {
    config: TlsConfig,
    listener: Arc<str>,
    current: Arc<ArcSwap<Loaded>>,
    /// Stops watching when the listener's TLS is replaced or gone.
    _watch: Option<watch::FileWatch>,
}

impl ListenerTls {
    /// Loads the files and starts watching them. A watch that cannot be
    /// set up is logged: the files are then read again only on reload
    /// (SIGHUP, `serin apply`).
    pub fn start(listener: &str, config: &TlsConfig) -> Result<Arc<Self>, TlsError> {
        let current = Arc::new(ArcSwap::from_pointee(load(config)?));
        let listener: Arc<str> = listener.into();
        let weak = Arc::downgrade(&current);
        let (cfg, name) = (config.clone(), listener.clone());
        let files = config.files().into_iter().map(Path::to_path_buf).collect();
        let watch = match watch::FileWatch::start(files, move || refresh(&weak, &cfg, &name)) {
            Ok(w) => Some(w),
            Err(e) => {
                tracing::warn!(listener = %listener, error = %e, "TLS files are not watched; they are read again on reload only");
                None
            }
        };
        Ok(Arc::new(Self {
            config: config.clone(),
            listener,
            current,
            _watch: watch,
        }))
    }

    /// What the next handshake uses.
    pub fn current(&self) -> Arc<Loaded> {
        self.current.load_full()
    }

    /// Whether this serves `config` (a reload with the same TLS section
    /// keeps it, and reads its files again).
    pub fn is_for(&self, config: &TlsConfig) -> bool {
        self.config == *config
    }

    /// Reads the files again (a reload of the config).
    pub fn refresh(&self) {
        refresh(&Arc::downgrade(&self.current), &self.config, &self.listener);
    }
}

/// Loads the files again; a bad new file keeps the old certificates
/// serving, and says what is wrong and where.
fn refresh(current: &Weak<ArcSwap<Loaded>>, config: &TlsConfig, listener: &str) {
    let Some(current) = current.upgrade() else {
        return;
    };
    if fingerprint(config) == current.load().fingerprint {
        return;
    }
    match load(config) {
        Ok(loaded) => {
            current.store(Arc::new(loaded));
            tracing::info!(%listener, "TLS files changed: new handshakes use them");
        }
        Err(e) => {
            tracing::error!(%listener, error = %e, "TLS files changed but cannot be used; the previous certificates keep serving");
        }
    }
}

/// Checks that `config`'s files can serve (before a config is applied).
pub fn check(config: &TlsConfig) -> Result<(), TlsError> {
    load(config).map(drop)
}

fn fingerprint(config: &TlsConfig) -> u64 {
    let mut h = std::hash::DefaultHasher::new();
    for f in config.files() {
        std::fs::read(f).ok().hash(&mut h);
    }
    h.finish()
}

fn load(config: &TlsConfig) -> Result<Loaded, TlsError> {
    let fingerprint = fingerprint(config);
    let mut certs = CertSet::default();
    if let Some(d) = &config.default {
        certs.set_default(served(&d.certificate, &d.key)?);
    }
    for c in &config.certificates {
        let s = served(&c.files.certificate, &c.files.key)?;
        let names = if c.hostnames.is_empty() {
            let leaf = s.key.end_entity_cert()?;
            dns_names(leaf, &c.files.certificate)?
        } else {
            c.hostnames.clone()
        };
        for n in &names {
            certs.add(n, &s);
        }
    }
    let certs = Arc::new(certs);
    let provider = serin_config::tls::provider();
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(PROTOCOL_VERSIONS)?;
    let builder = match &config.client_validation {
        None => builder.with_no_client_auth(),
        Some(v) => {
            let roots = Arc::new(ca_bundle(&v.ca_certificates)?);
            let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider);
            let verifier = match v.mode {
                ClientValidationMode::Required => verifier,
                ClientValidationMode::Optional => verifier.allow_unauthenticated(),
            };
            builder.with_client_cert_verifier(verifier.build()?)
        }
    };
    let mut server = builder.with_cert_resolver(Arc::new(SniResolver(certs.clone())));
    server.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Loaded {
        acceptor: TlsAcceptor::from(Arc::new(server)),
        certs,
        fingerprint,
    })
}

fn served(cert: &Path, key: &Path) -> Result<Arc<Served>, TlsError> {
    let key = certified_key(cert, key)?;
    let uri = identity::first_uri(key.end_entity_cert()?);
    Ok(Arc::new(Served { key, uri }))
}

pub fn negotiated_h2<T>(stream: &tokio_rustls::server::TlsStream<T>) -> bool {
    stream.get_ref().1.alpn_protocol() == Some(b"h2")
}
