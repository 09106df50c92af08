//! Active health checks: every endpoint of a service version is asked for
//! its health path now and then (with jitter, so checks of many endpoints
//! do not line up). `unhealthyThreshold` failures in a row take it out of
//! the balancer's choice; `healthyThreshold` successes in a row bring it
//! back. They run on the control plane's runtime, not the workers'.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use http::{Request, StatusCode};
use http_body_util::Empty;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use serin_config::proxy::{HealthCheckConfig, UpstreamProtocol};

use crate::endpoints::{Backend, Endpoint};
use crate::tls::upstream::UpstreamTls;

/// A service version's health check, and how its endpoints are spoken to:
/// in the service's own protocol, as its requests are (an h2c-only server
/// does not answer HTTP/1.1, and its endpoints would all be taken out).
#[derive(Clone)]
pub struct HealthCheck {
    pub config: HealthCheckConfig,
    pub tls: Option<Arc<UpstreamTls>>,
    pub protocol: UpstreamProtocol,
}

impl HealthCheck {
    /// Whether `other` checks the same way (a running check is kept).
    pub fn same_as(&self, other: &Self) -> bool {
        let tls_id = |c: &Self| c.tls.as_ref().map_or(0, |t| t.id);
        self.config == other.config
            && self.protocol == other.protocol
            && tls_id(self) == tls_id(other)
    }
}

/// Checks `backend`'s endpoints until the task is aborted.
pub async fn run(backend: Arc<Backend>, check: HealthCheck) {
    let cfg = &check.config;
    loop {
        let jitter = if cfg.jitter.is_zero() {
            Duration::ZERO
        } else {
            let max = u64::try_from(cfg.jitter.as_millis()).unwrap_or(u64::MAX);
            Duration::from_millis(fastrand::u64(0..=max))
        };
        tokio::time::sleep(cfg.interval + jitter).await;
        let endpoints: Vec<Arc<Endpoint>> = backend.endpoints().list.clone();
        let checks = endpoints.iter().map(|ep| {
            let check = &check;
            async move { (ep, probe(ep, check).await) }
        });
        for (ep, ok) in futures_util::future::join_all(checks).await {
            apply(&backend, ep, cfg, ok);
        }
    }
}

/// One check of `ep`, on a connection of its own.
async fn probe(ep: &Endpoint, check: &HealthCheck) -> bool {
    let cfg = &check.config;
    let attempt = async {
        let tls = check.tls.as_deref();
        let stream = crate::pool::connect(ep.addr, cfg.timeout, tls).await.ok()?;
        let io = TokioIo::new(stream);
        let builder =
            Request::get(cfg.path.as_str()).header(http::header::USER_AGENT, "serin-health-check");
        let resp = match check.protocol {
            UpstreamProtocol::Http1 => {
                let (mut tx, conn) = http1::handshake(io).await.ok()?;
                tokio::spawn(async move {
                    let _ = conn.await;
                });
                let req = builder
                    .header(http::header::HOST, ep.addr.to_string())
                    .body(Empty::<bytes::Bytes>::new())
                    .ok()?;
                tx.send_request(req).await.ok()?
            }
            UpstreamProtocol::H2c | UpstreamProtocol::H2 => {
                let (mut tx, conn) = http2::Builder::new(TokioExecutor::new())
                    .timer(TokioTimer::new())
                    .handshake(io)
                    .await
                    .ok()?;
                tokio::spawn(async move {
                    let _ = conn.await;
                });
                // HTTP/2 names the endpoint in `:authority`, from the URI.
                let scheme = if check.protocol == UpstreamProtocol::H2 {
                    "https"
                } else {
                    "http"
                };
                let req = builder
                    .uri(format!("{scheme}://{}{}", ep.addr, cfg.path))
                    .body(Empty::<bytes::Bytes>::new())
                    .ok()?;
                tx.send_request(req).await.ok()?
            }
        };
        Some(resp.status())
    };
    matches!(
        tokio::time::timeout(cfg.timeout, attempt).await,
        Ok(Some(status)) if status.is_success() || status == StatusCode::NO_CONTENT
    )
}

fn apply(backend: &Backend, ep: &Endpoint, cfg: &HealthCheckConfig, ok: bool) {
    let h = &ep.health;
    if ok {
        h.check_failures.store(0, Ordering::Relaxed);
        let n = h.check_successes.fetch_add(1, Ordering::Relaxed) + 1;
        if !h.is_healthy() && n >= cfg.healthy_threshold {
            h.healthy.store(true, Ordering::Relaxed);
            backend.unhealthy.fetch_sub(1, Ordering::Relaxed);
            tracing::info!(backend = %backend.key, endpoint = %ep.addr, "endpoint healthy again");
        }
    } else {
        h.check_successes.store(0, Ordering::Relaxed);
        let n = h.check_failures.fetch_add(1, Ordering::Relaxed) + 1;
        if h.is_healthy() && n >= cfg.unhealthy_threshold {
            h.healthy.store(false, Ordering::Relaxed);
            backend.unhealthy.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(backend = %backend.key, endpoint = %ep.addr, "endpoint failed its health checks");
        }
    }
}
