//! TLS from serin to a service's endpoints: the name sent as SNI and
//! checked in the endpoint's certificate, the CA bundle or the system's
//! trust store, a client certificate when asked, and ALPN (`http/1.1`, or
//! `h2` for `protocol: h2`).

use std::hash::{Hash, Hasher};
use std::sync::Arc;

use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::ServerName;
use serin_config::proxy::{UpstreamProtocol, UpstreamTlsConfig};
use serin_config::tls::{ca_bundle, certificates, certified_key, private_key};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use super::TlsError;

/// A service's TLS client, built once per snapshot.
pub struct UpstreamTls {
    connector: TlsConnector,
    server_name: ServerName<'static>,
    wants_h2: bool,
    /// Tells pooled connections of one TLS setting from another's (never
    /// 0, which marks plain TCP).
    pub id: u64,
}

impl std::fmt::Debug for UpstreamTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamTls")
            .field("server_name", &self.server_name)
            .field("wants_h2", &self.wants_h2)
            .finish_non_exhaustive()
    }
}

impl UpstreamTls {
    pub fn new(config: &UpstreamTlsConfig, protocol: UpstreamProtocol) -> Result<Self, TlsError> {
        let server_name = ServerName::try_from(config.server_name.clone())
            .map_err(|_| TlsError::ServerName(config.server_name.clone()))?;
        let roots = match &config.ca_certificates {
            Some(path) => Arc::new(ca_bundle(path)?),
            None => system_roots()?,
        };
        let builder = ClientConfig::builder_with_provider(serin_config::tls::provider())
            .with_protocol_versions(super::PROTOCOL_VERSIONS)?
            .with_root_certificates(roots);
        let mut client = match &config.client_certificate {
            None => builder.with_no_client_auth(),
            Some(files) => {
                // Checked to belong together first, for the clearer error.
                certified_key(&files.certificate, &files.key)?;
                builder.with_client_auth_cert(
                    certificates(&files.certificate)?,
                    private_key(&files.key)?,
                )?
            }
        };
        let wants_h2 = protocol == UpstreamProtocol::H2;
        client.alpn_protocols = vec![if wants_h2 {
            b"h2".to_vec()
        } else {
            b"http/1.1".to_vec()
        }];
        let mut h = std::hash::DefaultHasher::new();
        (config, protocol).hash(&mut h);
        Ok(Self {
            connector: TlsConnector::from(Arc::new(client)),
            server_name,
            wants_h2,
            id: h.finish().max(1),
        })
    }

    /// The TLS handshake on a new connection.
    pub async fn handshake(&self, tcp: TcpStream) -> std::io::Result<TlsStream<TcpStream>> {
        let stream = self
            .connector
            .connect(self.server_name.clone(), tcp)
            .await?;
        if self.wants_h2 && stream.get_ref().1.alpn_protocol() != Some(b"h2") {
            return Err(std::io::Error::other(
                "the upstream did not agree to HTTP/2 (ALPN h2)",
            ));
        }
        Ok(stream)
    }
}

/// The system's trust store (read once, shared with serin's own HTTP
/// client).
fn system_roots() -> Result<Arc<RootCertStore>, TlsError> {
    serin_config::tls::system_roots().map_err(|e| TlsError::NoSystemRoots(e.0))
}
