//! What can go wrong when driving the runtime.

use std::io;

/// An error from the runtime's API. Messages never hold a secret's value.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("unknown service `{0}`")]
    UnknownService(String),
    #[error("service `{service}` has no version `{version}`")]
    UnknownVersion { service: String, version: String },
    #[error("replicas must be from 0 to {max}, got {got}")]
    BadReplicas { got: u32, max: u32 },
    #[error("{service}/{version}: {reason}")]
    Command {
        service: String,
        version: String,
        reason: String,
    },
    #[error("the runtime is shutting down")]
    ShuttingDown,
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
}

impl RuntimeError {
    pub(crate) fn io(context: impl Into<String>, source: io::Error) -> Self {
        Self::Io {
            context: context.into(),
            source,
        }
    }

    /// Whether the error is about something that does not exist (HTTP 404).
    pub fn is_not_found(&self) -> bool {
        matches!(self, Self::UnknownService(_) | Self::UnknownVersion { .. })
    }
}
