//! Quote of the moment: the workshop's sample service.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::Path;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;
use tracing::Level;

use crate::cli::QotmArgs;
use crate::common::{self, Identity, Readiness, id_event, json_error};

/// The quotes, served at random by `GET /` and by index by `GET /quote/N`.
pub const QUOTES: [&str; 10] = [
    "Abstraction is ever present.",
    "A late night does not make any sense.",
    "A principal idea is omnipresent, much like candy.",
    "Nihilism gambles with lives, happiness, and even destiny itself!",
    "The light at the end of the tunnel is interdependent on the relatedness of motivation, subcultures, and management.",
    "Utter nonsense is a storyteller without equal.",
    "Non-locality is the driver of truth. By summoning, we vibrate.",
    "A small mercy is nothing at all?",
    "The last sentence you read is often sensible nonsense.",
    "668: The Neighbor of the Beast.",
];

/// How long `/crash` waits after answering before the process exits.
const CRASH_AFTER: Duration = Duration::from_millis(50);

struct Qotm {
    id: Arc<Identity>,
    delay: Duration,
    error_rate: f64,
}

impl Qotm {
    fn quote(&self, quote: &str) -> Response {
        Json(json!({
            "hostname": self.id.replica,
            "ok": true,
            "quote": quote,
            "time": common::now_rfc3339(),
            "version": self.id.version,
        }))
        .into_response()
    }

    async fn random(&self) -> Response {
        tokio::time::sleep(self.delay).await;
        if self.error_rate > 0.0 && fastrand::f64() < self.error_rate {
            return (
                StatusCode::INTERNAL_SERVER_ERROR,
                Json(json!({
                    "hostname": self.id.replica,
                    "ok": false,
                    "error": "injected",
                    "version": self.id.version,
                })),
            )
                .into_response();
        }
        let quote = QUOTES[fastrand::usize(..QUOTES.len())];
        self.quote(quote)
    }

    async fn by_index(&self, index: &str) -> Response {
        tokio::time::sleep(self.delay).await;
        let Ok(n) = index.parse::<usize>() else {
            return json_error(
                StatusCode::BAD_REQUEST,
                format!(
                    "quote index must be a number from 0 to {}, not {index:?}",
                    QUOTES.len() - 1
                ),
            );
        };
        match QUOTES.get(n) {
            Some(quote) => self.quote(quote),
            None => json_error(
                StatusCode::NOT_FOUND,
                format!(
                    "no quote {n}: there are {} quotes, 0 to {}",
                    QUOTES.len(),
                    QUOTES.len() - 1
                ),
            ),
        }
    }

    fn crash(&self) -> Response {
        id_event!(
            Level::WARN,
            self.id,
            "crash requested: exiting with status 1"
        );
        tokio::spawn(async {
            tokio::time::sleep(CRASH_AFTER).await;
            std::process::exit(1);
        });
        (StatusCode::OK, "crashing\n").into_response()
    }
}

pub async fn run(args: QotmArgs) -> anyhow::Result<()> {
    let start = Instant::now();
    let id = Arc::new(Identity::new("qotm", &args.serve));
    let addr = common::listen_addr(&args.serve)?;
    let readiness = Readiness::after(start, args.ready_after);
    let qotm = Arc::new(Qotm {
        id: Arc::clone(&id),
        delay: args.delay,
        error_rate: args.error_rate,
    });
    id_event!(
        Level::INFO,
        id,
        delay_ms = u64::try_from(args.delay.as_millis()).unwrap_or(u64::MAX),
        error_rate = args.error_rate,
        ready_after_ms = u64::try_from(args.ready_after.as_millis()).unwrap_or(u64::MAX),
        "starting"
    );
    common::serve(id, addr, router(qotm, &readiness), readiness).await
}

fn router(qotm: Arc<Qotm>, readiness: &Arc<Readiness>) -> Router {
    let random = {
        let qotm = Arc::clone(&qotm);
        get(move || {
            let qotm = Arc::clone(&qotm);
            async move { qotm.random().await }
        })
    };
    let by_index = {
        let qotm = Arc::clone(&qotm);
        get(move |Path(index): Path<String>| {
            let qotm = Arc::clone(&qotm);
            async move { qotm.by_index(&index).await }
        })
    };
    let crash = {
        let qotm = Arc::clone(&qotm);
        let crash = move || {
            let qotm = Arc::clone(&qotm);
            async move { qotm.crash() }
        };
        get(crash.clone()).post(crash)
    };
    let router = Router::new()
        .route("/", random.clone())
        .route("/{*rest}", random)
        .route("/quote/{n}", by_index)
        .route("/crash", crash);
    common::with_health(router, readiness)
}
