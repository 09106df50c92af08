//! pinger: `GET /` answers "pong"; v2 (or `--detailed`) adds time, uptime
//! and a request count.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Value, json};
use tracing::Level;

use crate::cli::PingerArgs;
use crate::common::{self, Identity, Readiness, id_event};

struct Pinger {
    id: Arc<Identity>,
    detailed: bool,
    started: Instant,
    served: AtomicU64,
}

impl Pinger {
    fn answer(&self) -> Value {
        let served = self.served.fetch_add(1, Ordering::Relaxed) + 1;
        let mut body = json!({
            "service": self.id.service,
            "version": self.id.version,
            "replica": self.id.replica,
            "message": "pong",
        });
        if self.detailed
            && let Some(map) = body.as_object_mut()
        {
            map.insert("time".into(), common::now_rfc3339().into());
            let uptime = (self.started.elapsed().as_secs_f64() * 1e3).round() / 1e3;
            map.insert("uptime_seconds".into(), uptime.into());
            map.insert("requests_served".into(), served.into());
        }
        body
    }
}

pub async fn run(args: PingerArgs) -> anyhow::Result<()> {
    let id = Arc::new(Identity::new("pinger", &args.serve));
    let addr = common::listen_addr(&args.serve)?;
    let detailed = args.detailed || args.serve.version == "v2";
    id_event!(Level::INFO, id, detailed, "starting");
    let pinger = Arc::new(Pinger {
        id: Arc::clone(&id),
        detailed,
        started: Instant::now(),
        served: AtomicU64::new(0),
    });
    let readiness = Readiness::always();
    let router = Router::new().route(
        "/",
        get(move || {
            let pinger = Arc::clone(&pinger);
            async move { Json(pinger.answer()) }
        }),
    );
    let router = common::with_health(router, &readiness);
    common::serve(id, addr, router, readiness).await
}
