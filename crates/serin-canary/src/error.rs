//! What can go wrong when a canary is asked to do something.

use crate::sink::SinkError;
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum CanaryError {
    #[error("unknown service `{0}`")]
    UnknownService(String),
    #[error("service `{service}` has no version `{version}` (its versions: {known})")]
    UnknownVersion {
        service: String,
        version: String,
        known: String,
    },
    #[error("no canary for service `{0}`; start one with `serin canary start {0} --to VERSION`")]
    NoCanary(String),
    /// A canary is already running, or it is in a phase where the action
    /// makes no sense.
    #[error("{0}")]
    Conflict(String),
    /// No route rule carries both versions, or the baseline is ambiguous.
    #[error("{0}")]
    Routing(String),
    #[error("bad options: {0}")]
    BadOptions(String),
    #[error(transparent)]
    Sink(#[from] SinkError),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The client for webhooks and notifications cannot be built.
    #[error("the canary's HTTP client: {0}")]
    HttpClient(#[source] Box<dyn std::error::Error + Send + Sync>),
}
