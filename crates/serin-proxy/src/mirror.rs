//! Request mirroring (Gateway API RequestMirror): a copy of a request goes
//! to another backend in the background; the primary never waits for it and
//! its answer is discarded. Beyond Envoy: the shadow's status is compared
//! with the primary's and counted per version, so a new version of a
//! stateful service can be judged before it gets live traffic.

use std::rc::Rc;
use std::sync::Arc;

use http::{HeaderValue, Request, Uri};
use http_body::Body;
use tokio::sync::oneshot;

use crate::balance;
use crate::body::{REPLAY_LIMIT, ReplayBody};
use crate::endpoints::Backend;
use crate::metrics::{Metrics, MirrorLabels};
use crate::server::WorkerCtx;
use crate::snapshot::CompiledService;

/// How long a shadow may take when its rule sets no request timeout:
/// Envoy's default route timeout. Nobody waits for a shadow, so without a
/// bound a mirror that never answers would keep every shadow's task and
/// connection for good.
pub const DEFAULT_SHADOW_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(15);

/// A RequestMirror filter with its backend resolved.
pub struct CompiledMirror {
    pub config: serin_config::proxy::MirrorConfig,
    pub backend: Arc<Backend>,
    pub service: Arc<CompiledService>,
}

/// Starts shadows of a request whose head is `parts` and body `body` (a
/// copy is made; bodies over the replay limit or of unknown length are not
/// mirrored, since the copy would have to hold them). Returns a sender for
/// the primary's status, which the shadows compare with theirs. A shadow
/// gets `timeout` (the rule's request timeout) or
/// [`DEFAULT_SHADOW_TIMEOUT`], answer body included; one that runs out
/// counts as an error.
pub fn start(
    ctx: &Rc<WorkerCtx>,
    mirrors: &[&CompiledMirror],
    parts: &http::request::Parts,
    body: &ReplayBody,
    timeout: Option<std::time::Duration>,
) -> Option<oneshot::Sender<u16>> {
    let timeout = timeout.unwrap_or(DEFAULT_SHADOW_TIMEOUT);
    let chosen: Vec<&CompiledMirror> = mirrors
        .iter()
        .copied()
        .filter(|m| m.config.percent >= 100.0 || fastrand::f64() * 100.0 < m.config.percent)
        .collect();
    if chosen.is_empty()
        || body
            .size_hint()
            .upper()
            .is_none_or(|u| u > REPLAY_LIMIT as u64)
    {
        return None;
    }
    let (tx, rx) = oneshot::channel::<u16>();
    let primary = futures_util::future::FutureExt::shared(async move { rx.await.ok() });
    for m in chosen {
        let copy = body.try_clone()?;
        let mut req = Request::new(copy);
        *req.method_mut() = parts.method.clone();
        *req.version_mut() = if m.service.pool.protocol.is_http2() {
            http::Version::HTTP_2
        } else {
            http::Version::HTTP_11
        };
        *req.headers_mut() = parts.headers.clone();
        req.headers_mut()
            .insert("x-serin-shadow", HeaderValue::from_static("true"));
        let ctx = ctx.clone();
        let backend = m.backend.clone();
        let service = m.service.clone();
        let labels = MirrorLabels {
            service: m.config.service.clone(),
            version: m.config.version.clone(),
            result: String::new(),
        };
        let primary = primary.clone();
        let pq = parts
            .uri
            .path_and_query()
            .map_or("/", |pq| pq.as_str())
            .to_string();
        tokio::task::spawn_local(async move {
            let status = tokio::time::timeout(timeout, shadow(&ctx, &backend, &service, req, &pq))
                .await
                .ok()
                .flatten();
            let primary = primary.await;
            let result = match (status, primary) {
                (Some(s), Some(p)) if s == p => "same",
                (Some(_), Some(_)) => "different",
                (None, _) => "error",
                (Some(_), None) => "unknown",
            };
            backend.shadow.record(result);
            count(&ctx.shared.metrics, labels, result);
        });
    }
    Some(tx)
}

fn count(metrics: &Metrics, mut labels: MirrorLabels, result: &str) {
    labels.result = result.to_string();
    metrics.mirrors.get_or_create(&labels).inc();
}

async fn shadow(
    ctx: &WorkerCtx,
    backend: &Backend,
    service: &CompiledService,
    mut req: Request<ReplayBody>,
    path_and_query: &str,
) -> Option<u16> {
    let endpoints = backend.endpoints();
    let ep = balance::pick(
        service.lb,
        backend,
        &endpoints,
        None,
        &[],
        service.panic_threshold,
    )?;
    drop(endpoints);
    let uri: Uri = match service.pool.protocol {
        serin_config::proxy::UpstreamProtocol::Http1 => path_and_query.parse().ok()?,
        serin_config::proxy::UpstreamProtocol::H2c => {
            format!("http://{}{path_and_query}", ep.addr).parse().ok()?
        }
        serin_config::proxy::UpstreamProtocol::H2 => format!("https://{}{path_and_query}", ep.addr)
            .parse()
            .ok()?,
    };
    *req.uri_mut() = uri;
    let conn = ctx
        .pools
        .checkout(&ep, &service.pool, backend, false)
        .await
        .ok()?;
    let resp = conn.send(req).await.ok()?;
    let status = resp.status().as_u16();
    // Read the answer to its end so the connection goes back to the pool.
    let _ = http_body_util::BodyExt::collect(resp.into_body()).await;
    Some(status)
}
