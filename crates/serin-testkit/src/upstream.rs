//! A test upstream: answers JSON describing the request it got, and can be
//! told (per request by headers, or for all requests by its control handle)
//! to answer a status, delay, close the connection or cut the body short.
//!
//! Request headers it obeys:
//! - `x-test-status: 503` answers that status;
//! - `x-test-delay-ms: 200` waits that long before answering;
//! - `x-test-body-bytes: 100000` answers a body of that many bytes;
//! - `x-test-truncate: 1` promises 1000 bytes, sends 10 and closes.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::io::AsyncWriteExt;

use crate::server_thread::ServerThread;

/// What tests change while an upstream runs.
#[derive(Default)]
pub struct UpstreamControl {
    /// Answer this status to everything (0: normal).
    pub status: AtomicU16,
    /// Delay every answer by this many milliseconds.
    pub delay_ms: AtomicU64,
    /// Requests received.
    pub requests: AtomicUsize,
    /// Connections accepted.
    pub connections: AtomicUsize,
    /// Refuse to be ready (answer 503 on /ready... and everything).
    pub down: AtomicBool,
}

pub struct Upstream {
    pub addr: SocketAddr,
    pub name: String,
    pub control: Arc<UpstreamControl>,
    _server: ServerThread,
}

impl Upstream {
    /// Starts an upstream named `name` on 127.0.0.1 (HTTP/1.1 and h2c).
    pub fn start(name: &str) -> Self {
        let control = Arc::new(UpstreamControl::default());
        let ctl = control.clone();
        let label = name.to_string();
        let server = ServerThread::start_local(move |stream| {
            ctl.connections.fetch_add(1, Ordering::SeqCst);
            serve(stream, ctl.clone(), label.clone())
        });
        Self {
            addr: server.addr,
            name: name.to_string(),
            control,
            _server: server,
        }
    }

    /// Starts an upstream over TLS (rustls) with `cert` and `key` (PEM),
    /// offering h2 and http/1.1 by ALPN, and asking for a client
    /// certificate signed by `client_ca` when given (optional: a client
    /// without one is served). Each request it echoes carries two headers
    /// of its own: `x-test-sni` (the SNI the client sent, `-` for none)
    /// and `x-test-client-cert` (`present` or `absent`).
    pub fn start_tls(
        name: &str,
        cert: &std::path::Path,
        key: &std::path::Path,
        client_ca: Option<&std::path::Path>,
    ) -> Self {
        let acceptor = tls_acceptor(cert, key, client_ca);
        let control = Arc::new(UpstreamControl::default());
        let ctl = control.clone();
        let label = name.to_string();
        let server = ServerThread::start_local(move |stream| {
            ctl.connections.fetch_add(1, Ordering::SeqCst);
            serve_tls(acceptor.clone(), stream, ctl.clone(), label.clone())
        });
        Self {
            addr: server.addr,
            name: name.to_string(),
            control,
            _server: server,
        }
    }

    pub fn requests(&self) -> usize {
        self.control.requests.load(Ordering::SeqCst)
    }

    pub fn connections(&self) -> usize {
        self.control.connections.load(Ordering::SeqCst)
    }

    pub fn set_status(&self, status: u16) {
        self.control.status.store(status, Ordering::SeqCst);
    }

    pub fn set_delay(&self, d: Duration) {
        self.control.delay_ms.store(
            u64::try_from(d.as_millis()).unwrap_or(u64::MAX),
            Ordering::SeqCst,
        );
    }
}

async fn serve(stream: tokio::net::TcpStream, ctl: Arc<UpstreamControl>, label: String) {
    let svc = service_fn(move |req: Request<Incoming>| {
        let ctl = ctl.clone();
        let label = label.clone();
        async move { Ok::<_, std::convert::Infallible>(answer(req, ctl, label).await) }
    });
    let _ = auto::Builder::new(TokioExecutor::new())
        .serve_connection_with_upgrades(TokioIo::new(stream), svc)
        .await;
}

fn tls_acceptor(
    cert: &std::path::Path,
    key: &std::path::Path,
    client_ca: Option<&std::path::Path>,
) -> tokio_rustls::TlsAcceptor {
    use rustls_pki_types::pem::PemObject;
    let certs = rustls_pki_types::CertificateDer::pem_file_iter(cert)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .unwrap_or_else(|e| panic!("test upstream certificate {}: {e}", cert.display()));
    let key = rustls_pki_types::PrivateKeyDer::from_pem_file(key)
        .unwrap_or_else(|e| panic!("test upstream key {}: {e}", key.display()));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap_or_else(|e| panic!("test upstream TLS: {e}"));
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in rustls_pki_types::CertificateDer::pem_file_iter(ca)
                .and_then(|it| it.collect::<Result<Vec<_>, _>>())
                .unwrap_or_else(|e| panic!("test upstream CA {}: {e}", ca.display()))
            {
                roots
                    .add(c)
                    .unwrap_or_else(|e| panic!("test upstream CA: {e}"));
            }
            let verifier =
                rustls::server::WebPkiClientVerifier::builder_with_provider(roots.into(), provider)
                    .allow_unauthenticated()
                    .build()
                    .unwrap_or_else(|e| panic!("test upstream verifier: {e}"));
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder
        .with_single_cert(certs, key)
        .unwrap_or_else(|e| panic!("test upstream TLS: {e}"));
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    tokio_rustls::TlsAcceptor::from(Arc::new(config))
}

async fn serve_tls(
    acceptor: tokio_rustls::TlsAcceptor,
    stream: tokio::net::TcpStream,
    ctl: Arc<UpstreamControl>,
    label: String,
) {
    let Ok(tls) = acceptor.accept(stream).await else {
        return;
    };
    let conn = tls.get_ref().1;
    let sni = http::HeaderValue::from_str(conn.server_name().unwrap_or("-"))
        .unwrap_or(http::HeaderValue::from_static("?"));
    let client_cert = http::HeaderValue::from_static(match conn.peer_certificates() {
        Some(_) => "present",
        None => "absent",
    });
    let svc = service_fn(move |mut req: Request<Incoming>| {
        let (ctl, label) = (ctl.clone(), label.clone());
        req.headers_mut().insert("x-test-sni", sni.clone());
        req.headers_mut()
            .insert("x-test-client-cert", client_cert.clone());
        async move { Ok::<_, std::convert::Infallible>(answer(req, ctl, label).await) }
    });
    let _ = auto::Builder::new(TokioExecutor::new())
        .serve_connection(TokioIo::new(tls), svc)
        .await;
}

fn header_num(req: &Request<Incoming>, name: &str) -> Option<u64> {
    req.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

async fn answer(
    req: Request<Incoming>,
    ctl: Arc<UpstreamControl>,
    label: String,
) -> Response<Full<Bytes>> {
    ctl.requests.fetch_add(1, Ordering::SeqCst);
    let delay =
        header_num(&req, "x-test-delay-ms").unwrap_or_else(|| ctl.delay_ms.load(Ordering::SeqCst));
    let status = header_num(&req, "x-test-status")
        .and_then(|s| u16::try_from(s).ok())
        .or_else(|| Some(ctl.status.load(Ordering::SeqCst)).filter(|s| *s != 0))
        .unwrap_or(200);
    let size = header_num(&req, "x-test-body-bytes");
    let retry_after = header_num(&req, "x-test-retry-after");
    let method = req.method().to_string();
    let uri = req.uri().clone();
    let version = format!("{:?}", req.version());
    let headers: serde_json::Map<String, serde_json::Value> = req
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_string(),
                serde_json::Value::String(v.to_str().unwrap_or("<binary>").to_string()),
            )
        })
        .collect();
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    let payload = match size {
        Some(n) => Bytes::from(vec![b'x'; usize::try_from(n).unwrap_or(0)]),
        None => Bytes::from(
            serde_json::json!({
                "upstream": label,
                "method": method,
                "path": uri.path(),
                "query": uri.query(),
                "version": version,
                "headers": headers,
                "body": String::from_utf8_lossy(&body),
            })
            .to_string(),
        ),
    };
    let mut resp = Response::new(Full::new(payload));
    *resp.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
    if let Some(secs) = retry_after {
        resp.headers_mut()
            .insert(http::header::RETRY_AFTER, http::HeaderValue::from(secs));
    }
    resp.headers_mut().insert(
        "x-upstream",
        http::HeaderValue::from_str(&label).unwrap_or(http::HeaderValue::from_static("?")),
    );
    resp
}

/// A raw upstream that answers every request with a response whose body is
/// cut short, then closes: for "truncated upstream response" tests.
pub async fn truncating_upstream() -> SocketAddr {
    fixed_answer_upstream(b"HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\nonly ten b").await
}

/// A raw upstream that reads a request head and answers `answer`, byte for
/// byte, then closes: for answers no HTTP library would send.
pub async fn fixed_answer_upstream(answer: &'static [u8]) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|e| panic!("bind: {e}"));
    let addr = listener
        .local_addr()
        .unwrap_or_else(|e| panic!("addr: {e}"));
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tokio::io::AsyncReadExt::read(&mut s, &mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = s.write_all(answer).await;
                let _ = s.shutdown().await;
            });
        }
    });
    addr
}
