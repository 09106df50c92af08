//! details: `GET /` answers product details as JSON.

use std::sync::Arc;

use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Value, json};
use tracing::Level;

use crate::cli::ServeArgs;
use crate::common::{self, Identity, Readiness, id_event};

fn answer(id: &Identity) -> Value {
    json!({
        "service": id.service,
        "version": id.version,
        "replica": id.replica,
        "details": {
            "id": 0,
            "title": "The Comedy of Errors",
            "author": "William Shakespeare",
            "year": 1595,
            "type": "paperback",
            "pages": 200,
            "publisher": "PublisherA",
            "language": "English",
            "isbn_10": "1234567890",
            "isbn_13": "123-1234567890",
        },
    })
}

pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    let id = Arc::new(Identity::new("details", &args));
    let addr = common::listen_addr(&args)?;
    id_event!(Level::INFO, id, "starting");
    let readiness = Readiness::always();
    let router = Router::new().route("/", {
        let id = Arc::clone(&id);
        get(move || {
            let id = Arc::clone(&id);
            async move { Json(answer(&id)) }
        })
    });
    let router = common::with_health(router, &readiness);
    common::serve(id, addr, router, readiness).await
}
