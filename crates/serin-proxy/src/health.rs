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
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use serin_config::proxy::HealthCheckConfig;

use crate::endpoints::{Backend, Endpoint};
use crate::tls::upstream::UpstreamTls;

/// Checks `backend`'s endpoints until the task is aborted, over TLS when
/// the service's endpoints are reached so.
pub async fn run(backend: Arc<Backend>, cfg: HealthCheckConfig, tls: Option<Arc<UpstreamTls>>) {
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
            let (cfg, tls) = (&cfg, tls.as_deref());
            async move { (ep, check(ep, cfg, tls).await) }
        });
        for (ep, ok) in futures_util::future::join_all(checks).await {
            apply(&backend, ep, &cfg, ok);
        }
    }
}

async fn check(ep: &Endpoint, cfg: &HealthCheckConfig, tls: Option<&UpstreamTls>) -> bool {
    let attempt = async {
        let stream = crate::pool::connect(ep.addr, cfg.timeout, tls).await.ok()?;
        let (mut tx, conn) = http1::handshake(TokioIo::new(stream)).await.ok()?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let req = Request::get(cfg.path.as_str())
            .header(http::header::HOST, ep.addr.to_string())
            .header(http::header::USER_AGENT, "serin-health-check")
            .body(Empty::<bytes::Bytes>::new())
            .ok()?;
        let resp = tx.send_request(req).await.ok()?;
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
