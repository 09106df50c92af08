//! counter: the Flask + Redis demo. `GET /` increments a key in Redis.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use axum::Router;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use redis::AsyncConnectionConfig;
use redis::aio::MultiplexedConnection;
use tokio::sync::Mutex;
use tracing::Level;

use crate::cli::CounterArgs;
use crate::common::{self, Identity, Readiness, id_event};

/// Limit for connecting to Redis and for each command.
const REDIS_TIMEOUT: Duration = Duration::from_secs(1);

struct Counter {
    id: Arc<Identity>,
    client: redis::Client,
    key: String,
    /// The connection in use; dropped after an error so the next request
    /// connects again.
    conn: Mutex<Option<MultiplexedConnection>>,
}

impl Counter {
    async fn connection(&self) -> redis::RedisResult<MultiplexedConnection> {
        let mut cached = self.conn.lock().await;
        if let Some(conn) = cached.as_ref() {
            return Ok(conn.clone());
        }
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(REDIS_TIMEOUT))
            .set_response_timeout(Some(REDIS_TIMEOUT));
        let conn = self
            .client
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        *cached = Some(conn.clone());
        Ok(conn)
    }

    /// Runs one command, forgetting the connection when it fails.
    async fn query<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T, String> {
        let mut conn = self.connection().await.map_err(|e| e.to_string())?;
        let result = tokio::time::timeout(REDIS_TIMEOUT, cmd.query_async::<T>(&mut conn)).await;
        let error = match result {
            Ok(Ok(value)) => return Ok(value),
            Ok(Err(err)) => err.to_string(),
            Err(_) => format!("no answer within {}ms", REDIS_TIMEOUT.as_millis()),
        };
        *self.conn.lock().await = None;
        Err(error)
    }

    async fn increment(&self) -> Response {
        match self.query::<i64>(redis::cmd("INCR").arg(&self.key)).await {
            Ok(value) => (
                StatusCode::OK,
                format!("[{}] Redis counter value={value}\n", self.id.replica),
            )
                .into_response(),
            Err(error) => {
                id_event!(Level::WARN, self.id, error = %error, "redis failed");
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("[{}] Redis is unavailable: {error}\n", self.id.replica),
                )
                    .into_response()
            }
        }
    }

    async fn ping(&self) -> Result<(), String> {
        self.query::<String>(&redis::cmd("PING"))
            .await
            .map(drop)
            .map_err(|error| format!("Redis is unreachable: {error}"))
    }
}

/// The URL without its password, for logs.
fn redacted(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("***"));
            parsed.to_string()
        }
        _ => url.to_owned(),
    }
}

pub async fn run(args: CounterArgs) -> anyhow::Result<()> {
    let id = Arc::new(Identity::new("counter", &args.serve));
    let client = redis::Client::open(args.redis_url.as_str()).with_context(|| {
        format!(
            "REDIS_URL {:?} is not a valid Redis URL",
            redacted(&args.redis_url)
        )
    })?;
    let addr = common::listen_addr(&args.serve)?;
    id_event!(Level::INFO, id, redis_url = %redacted(&args.redis_url), key = %args.key, "starting");
    let counter = Arc::new(Counter {
        id: Arc::clone(&id),
        client,
        key: args.key,
        conn: Mutex::new(None),
    });
    let readiness = {
        let counter = Arc::clone(&counter);
        Readiness::with_check(move || {
            let counter = Arc::clone(&counter);
            Box::pin(async move { counter.ping().await })
        })
    };
    let router = Router::new().route(
        "/",
        get(move || {
            let counter = Arc::clone(&counter);
            async move { counter.increment().await }
        }),
    );
    let router = common::with_health(router, &readiness);
    common::serve(id, addr, router, readiness).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_passwords() {
        assert_eq!(
            redacted("redis://:pw@127.0.0.1:6379/"),
            "redis://:***@127.0.0.1:6379/"
        );
        assert_eq!(
            redacted("redis://127.0.0.1:6379/"),
            "redis://127.0.0.1:6379/"
        );
    }
}
