//! loadtester: a canary webhook target that sends a bounded load to a URL
//! (what Flagger's flagger-loadtester does, built in), so a canary gets
//! traffic, or is tested, before users reach it.
//!
//! `POST /` takes a canary webhook's JSON body and reads its `metadata`
//! ([`spec`]): one load per service and webhook, renewed by the same call
//! of the next window, answered at once (202) or, with `wait: "true"`, at
//! its end with its verdict (200 passed, 500 failed). `GET /loads` lists
//! the loads and their counts.

mod load;
mod spec;

use std::collections::BTreeMap;
use std::collections::btree_map::Entry;
use std::sync::{Arc, Mutex, MutexGuard};

use anyhow::Context as _;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::json;
use tracing::Level;

use crate::cli::LoadtesterArgs;
use crate::common::{self, Identity, Readiness, id_event, json_error};
use load::Load;
use spec::{Ask, HookCall, LoadSpec};
pub use spec::{
    DEFAULT_CONCURRENCY, DEFAULT_DURATION, DEFAULT_MAX_ERROR_RATE, DEFAULT_RATE,
    DEFAULT_REQUEST_TIMEOUT, MAX_CONCURRENCY, MAX_DURATION, MAX_RATE,
};

/// Loads running at once: one per canary webhook pointed here. More than
/// this is a runaway (a key that changes every call), refused with 429.
pub const MAX_LOADS: usize = 16;

struct Tester {
    id: Arc<Identity>,
    http: reqwest::Client,
    loads: Mutex<BTreeMap<String, Load>>,
}

impl Tester {
    fn loads(&self) -> MutexGuard<'_, BTreeMap<String, Load>> {
        // A panic while holding it leaves the map whole: take it anyway.
        self.loads.lock().unwrap_or_else(|e| e.into_inner())
    }
}

pub async fn run(args: LoadtesterArgs) -> anyhow::Result<()> {
    let id = Arc::new(Identity::new("loadtester", &args.serve));
    let addr = common::listen_addr(&args.serve)?;
    let http = serin_config::http_client::builder()?
        .no_proxy()
        .build()
        .context("cannot build the HTTP client")?;
    id_event!(Level::INFO, id, "starting");
    let tester = Arc::new(Tester {
        id: Arc::clone(&id),
        http,
        loads: Mutex::new(BTreeMap::new()),
    });
    let readiness = Readiness::always();
    let router = Router::new()
        .route("/", post(call))
        .route("/loads", get(list))
        .with_state(tester);
    let router = common::with_health(router, &readiness);
    common::serve(id, addr, router, readiness).await
}

async fn list(State(t): State<Arc<Tester>>) -> Response {
    let loads: Vec<_> = t.loads().iter().map(|(k, l)| l.summary(k)).collect();
    axum::Json(json!({ "loads": loads })).into_response()
}

async fn call(State(t): State<Arc<Tester>>, body: axum::body::Bytes) -> Response {
    let call: HookCall = match serde_json::from_slice(&body) {
        Ok(c) => c,
        Err(e) => {
            return json_error(
                StatusCode::BAD_REQUEST,
                format!("the body is not a webhook call's JSON object: {e}"),
            );
        }
    };
    match call.ask() {
        Err(e) => json_error(StatusCode::BAD_REQUEST, e.to_string()),
        Ok(Ask::Stop) => stop(&t, &call),
        Ok(Ask::Start(spec)) if spec.wait => gate(&t, call.key(), *spec).await,
        Ok(Ask::Start(spec)) => start(&t, call.key(), *spec),
    }
}

/// Ends every load of the call's service (a `post-rollout` call).
fn stop(t: &Tester, call: &HookCall) -> Response {
    let prefix = format!("{}/", call.service);
    let mut loads = t.loads();
    let stopped: Vec<String> = loads
        .keys()
        .filter(|k| k.starts_with(&prefix))
        .cloned()
        .collect();
    for key in &stopped {
        if let Some(load) = loads.remove(key) {
            load.stop();
        }
    }
    id_event!(Level::INFO, t.id, service = %call.service, ?stopped, "loads stopped");
    axum::Json(json!({ "stopped": stopped })).into_response()
}

/// Starts (or renews) a load and answers at once.
fn start(t: &Tester, key: String, spec: LoadSpec) -> Response {
    let mut loads = t.loads();
    if let Some(running) = loads.get(&key)
        && running.is_running()
        && *running.spec == spec
    {
        running.renew();
        return (
            StatusCode::OK,
            axum::Json(json!({ "renewed": running.summary(&key) })),
        )
            .into_response();
    }
    match begin(t, &mut loads, &key, spec) {
        Ok(load) => (
            StatusCode::ACCEPTED,
            axum::Json(json!({ "started": load.summary(&key) })),
        )
            .into_response(),
        Err(refused) => refused.into_response(),
    }
}

/// Runs a load to its end and answers whether it passed: a smoke or load
/// test as a canary's gate (`pre-rollout`, `rollout`).
async fn gate(t: &Tester, key: String, spec: LoadSpec) -> Response {
    let (mut done, spec, counts) = {
        let mut loads = t.loads();
        match begin(t, &mut loads, &key, spec) {
            Ok(load) => (
                load.done.clone(),
                Arc::clone(&load.spec),
                Arc::clone(&load.counts),
            ),
            Err(refused) => return refused.into_response(),
        }
    };
    // The sender is dropped without a word when the load is stopped or
    // replaced by another call of the same key.
    if done.wait_for(|d| *d).await.is_err() {
        return (
            StatusCode::CONFLICT,
            format!("the load `{key}` was stopped or replaced before its end"),
        )
            .into_response();
    }
    let (passed, verdict) = (load::passed(&spec, &counts), load::verdict(&spec, &counts));
    id_event!(Level::INFO, t.id, key = %key, passed, %verdict, "load test done");
    let status = if passed {
        StatusCode::OK
    } else {
        StatusCode::INTERNAL_SERVER_ERROR
    };
    (status, verdict).into_response()
}

/// More than [`MAX_LOADS`] would run.
struct TooManyLoads;

impl IntoResponse for TooManyLoads {
    fn into_response(self) -> Response {
        json_error(
            StatusCode::TOO_MANY_REQUESTS,
            format!("{MAX_LOADS} loads are running already; stop one (metadata stop: \"true\")"),
        )
    }
}

/// Starts `spec` as the load `key`, replacing (and stopping) the one of
/// that key; refused when too many run.
fn begin<'a>(
    t: &Tester,
    loads: &'a mut BTreeMap<String, Load>,
    key: &str,
    spec: LoadSpec,
) -> Result<&'a Load, TooManyLoads> {
    let running = loads.values().filter(|l| l.is_running()).count();
    if !loads.get(key).is_some_and(Load::is_running) && running >= MAX_LOADS {
        return Err(TooManyLoads);
    }
    // Finished loads stay listed in `GET /loads`, up to a bound.
    if loads.len() >= 2 * MAX_LOADS {
        loads.retain(|_, l| l.is_running());
    }
    id_event!(
        Level::INFO,
        t.id,
        key = %key,
        url = %spec.url,
        rate = spec.rate,
        seconds = spec.duration.as_secs_f64(),
        "load started"
    );
    let load = Load::start(spec, t.http.clone());
    // The load it replaces, if any, is stopped as it is dropped.
    Ok(match loads.entry(key.to_string()) {
        Entry::Occupied(mut taken) => {
            taken.insert(load);
            taken.into_mut()
        }
        Entry::Vacant(free) => free.insert(load),
    })
}
