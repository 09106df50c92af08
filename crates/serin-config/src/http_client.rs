//! The HTTP client serin calls out with (webhooks, notifications,
//! Prometheus, the admin CLI, the demo services): reqwest with rustls on
//! ring and the system's trust store, configured here once.
//!
//! The workspace builds reqwest with `rustls-no-provider` (its `rustls`
//! feature brings aws-lc, which the workspace keeps out), so a client built
//! any other way has no crypto provider and panics; `clippy.toml` refuses
//! reqwest's own constructors outside this module.

use std::sync::Arc;

/// Why serin's HTTP client cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum HttpClientError {
    #[error("TLS for serin's HTTP client: {0}")]
    Tls(#[from] rustls::Error),
}

/// ALPN for https://: HTTP/2 where the server offers it (reqwest has it
/// built in), else HTTP/1.1.
const ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// TLS for serin's HTTP clients: ring, TLS 1.2 and 1.3, the system's
/// trust store (`SSL_CERT_FILE` and `SSL_CERT_DIR` name another, as for
/// OpenSSL). Without a usable store, https:// calls fail their handshake
/// with "unknown issuer" and http:// works as before: a client of plain
/// HTTP (the admin CLI) must not fail on a machine without CA certificates,
/// such as a minimal container image.
pub fn tls() -> Result<rustls::ClientConfig, HttpClientError> {
    let roots =
        crate::tls::system_roots().unwrap_or_else(|_| Arc::new(rustls::RootCertStore::empty()));
    let mut config = rustls::ClientConfig::builder_with_provider(crate::tls::provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
    Ok(config)
}

/// A reqwest client builder with serin's TLS ([`tls`]); set timeouts and
/// the rest on it.
#[allow(clippy::disallowed_methods)]
pub fn builder() -> Result<reqwest::ClientBuilder, HttpClientError> {
    Ok(reqwest::Client::builder().tls_backend_preconfigured(tls()?))
}

/// [`builder`] for reqwest's blocking client.
#[allow(clippy::disallowed_methods)]
pub fn blocking_builder() -> Result<reqwest::blocking::ClientBuilder, HttpClientError> {
    Ok(reqwest::blocking::Client::builder().tls_backend_preconfigured(tls()?))
}
