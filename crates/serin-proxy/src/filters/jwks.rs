//! A JWT filter's keys: read from a JWKS file when the snapshot is built,
//! or fetched from a JWKS URL and refreshed in the background. A failed
//! refresh keeps the last good keys; before the first good fetch there are
//! none, and every token is refused (fail closed).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use bytes::Bytes;
use http::{Request, StatusCode, Uri, header};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::rt::TokioIo;
use serin_config::jwks::{JwksError, VerifyingKey, parse_jwks, read_jwks_file};
use serin_config::proxy::{JwksSource, UpstreamProtocol, UpstreamTlsConfig};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use super::FilterError;
use crate::tls::upstream::UpstreamTls;

/// A failed fetch is tried again this soon (or at the refresh interval,
/// when that is shorter): before the first good fetch every request is
/// refused, so waiting a whole interval would be an outage.
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(5);
/// One fetch may take this long: an identity provider answers in well
/// under a second; a hung one must not hold the refresher forever.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
/// A key set larger than this is refused: real ones are a few KiB, and a
/// misconfigured URL must not make serin read a whole download.
const MAX_JWKS_BYTES: usize = 1024 * 1024;

/// The keys tokens are checked with, as of now.
pub struct Jwks {
    keys: ArcSwapOption<Vec<VerifyingKey>>,
    /// The background fetch of a URL's keys (none for a file).
    refresher: std::sync::OnceLock<tokio::task::AbortHandle>,
}

impl Drop for Jwks {
    fn drop(&mut self) {
        if let Some(task) = self.refresher.get() {
            task.abort();
        }
    }
}

impl Jwks {
    /// The keys of `source`: a file is read now (its problems fail the
    /// snapshot); a URL's keys are shared with the snapshot before this
    /// one when it names the same URL, so a reload does not refuse tokens
    /// until a new fetch comes back.
    pub fn load(source: &JwksSource) -> Result<Arc<Self>, FilterError> {
        match source {
            JwksSource::File(path) => {
                let keys = read_jwks_file(path).map_err(|e| FilterError::Jwks {
                    location: path.display().to_string(),
                    why: e.to_string(),
                })?;
                Ok(Arc::new(Self {
                    keys: ArcSwapOption::from_pointee(keys),
                    refresher: std::sync::OnceLock::new(),
                }))
            }
            JwksSource::Url {
                url,
                refresh_interval,
            } => shared_url_keys(url, *refresh_interval),
        }
    }

    /// `None` until a JWKS URL has answered once.
    pub fn current(&self) -> Option<Arc<Vec<VerifyingKey>>> {
        self.keys.load_full()
    }
}

type UrlKey = (String, Duration);

/// Key sets of URLs by (URL, interval), for as long as a snapshot holds
/// them: one refresher per URL however often the config is reloaded.
fn url_registry() -> &'static Mutex<HashMap<UrlKey, Weak<Jwks>>> {
    static REGISTRY: std::sync::OnceLock<Mutex<HashMap<UrlKey, Weak<Jwks>>>> =
        std::sync::OnceLock::new();
    REGISTRY.get_or_init(Mutex::default)
}

fn shared_url_keys(url: &str, interval: Duration) -> Result<Arc<Jwks>, FilterError> {
    let uri: Uri = url.parse().map_err(|_| FilterError::Jwks {
        location: url.to_string(),
        why: "not a URL".into(),
    })?;
    let runtime = tokio::runtime::Handle::try_current().map_err(|_| FilterError::Jwks {
        location: url.to_string(),
        why: "no runtime to fetch it on".into(),
    })?;
    let mut registry = url_registry()
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    registry.retain(|_, weak| weak.strong_count() > 0);
    let key = (url.to_string(), interval);
    if let Some(alive) = registry.get(&key).and_then(Weak::upgrade) {
        return Ok(alive);
    }
    let jwks = Arc::new(Jwks {
        keys: ArcSwapOption::empty(),
        refresher: std::sync::OnceLock::new(),
    });
    let task = runtime.spawn(refresh(Arc::downgrade(&jwks), uri, interval));
    // Set once, just made: `set` cannot find it taken.
    let _ = jwks.refresher.set(task.abort_handle());
    registry.insert(key, Arc::downgrade(&jwks));
    Ok(jwks)
}

/// Fetches the keys now and again every `interval`, until the key set is
/// dropped.
async fn refresh(jwks: Weak<Jwks>, uri: Uri, interval: Duration) {
    loop {
        let fetched = tokio::time::timeout(FETCH_TIMEOUT, fetch(&uri))
            .await
            .unwrap_or_else(|_| Err(FetchError::TimedOut));
        let Some(target) = jwks.upgrade() else {
            return;
        };
        let wait = match fetched {
            Ok(keys) => {
                tracing::info!(url = %uri, keys = keys.len(), "JWKS fetched");
                target.keys.store(Some(Arc::new(keys)));
                interval
            }
            Err(e) => {
                let kept = target.keys.load().is_some();
                tracing::warn!(url = %uri, error = %e, kept_last_good_keys = kept, "JWKS fetch failed");
                interval.min(RETRY_AFTER_FAILURE)
            }
        };
        drop(target);
        tokio::time::sleep(wait).await;
    }
}

/// Why a JWKS URL gave no keys.
#[derive(Debug, thiserror::Error)]
enum FetchError {
    #[error("cannot connect: {0}")]
    Connect(std::io::Error),
    #[error("TLS: {0}")]
    Tls(String),
    #[error("HTTP: {0}")]
    Http(#[from] hyper::Error),
    #[error("the answer was {0}, not 200")]
    Status(StatusCode),
    #[error("the body could not be read, or is over {} bytes", MAX_JWKS_BYTES)]
    Body,
    #[error("no answer within {:?}", FETCH_TIMEOUT)]
    TimedOut,
    #[error(transparent)]
    Keys(#[from] JwksError),
}

async fn fetch(uri: &Uri) -> Result<Vec<VerifyingKey>, FetchError> {
    let host = uri.host().unwrap_or_default();
    let https = uri.scheme_str() == Some("https");
    let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
    let tcp = TcpStream::connect((host.trim_matches(['[', ']']), port))
        .await
        .map_err(FetchError::Connect)?;
    let body = if https {
        let tls = UpstreamTls::new(
            &UpstreamTlsConfig {
                server_name: host.to_string(),
                ca_certificates: None,
                client_certificate: None,
            },
            UpstreamProtocol::Http1,
        )
        .map_err(|e| FetchError::Tls(e.to_string()))?;
        let stream = tls
            .handshake(tcp)
            .await
            .map_err(|e| FetchError::Tls(e.to_string()))?;
        get(stream, uri).await?
    } else {
        get(tcp, uri).await?
    };
    Ok(parse_jwks(&body)?)
}

/// One HTTP/1.1 GET on a connection of its own.
async fn get<S>(stream: S, uri: &Uri) -> Result<Bytes, FetchError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let authority = uri.authority().map_or("", |a| a.as_str());
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let req = Request::get(path)
        .header(header::HOST, authority)
        .header(header::ACCEPT, "application/json")
        .body(Empty::<Bytes>::new())
        .map_err(|_| FetchError::Body)?;
    let resp = sender.send_request(req).await?;
    if resp.status() != StatusCode::OK {
        return Err(FetchError::Status(resp.status()));
    }
    Limited::new(resp.into_body(), MAX_JWKS_BYTES)
        .collect()
        .await
        .map(|b| b.to_bytes())
        .map_err(|_| FetchError::Body)
}
