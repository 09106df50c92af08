//! Why a stack cannot be rendered.

use std::path::PathBuf;

/// A stack that has no faithful Kubernetes form, or output that cannot be
/// written.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error("`{name}` is not usable as a Kubernetes {what} name: {why}")]
    BadName {
        name: String,
        what: &'static str,
        why: String,
    },

    #[error("{what} `{name}` would be rendered twice ({first} and {second})")]
    NameClash {
        what: &'static str,
        name: String,
        first: String,
        second: String,
    },

    #[error(
        "{service}/{version}: restartPolicy {policy} cannot be rendered: a Deployment's pods always restart (restartPolicy Always)"
    )]
    RestartPolicy {
        service: String,
        version: String,
        policy: &'static str,
    },

    #[error(
        "the gateway's adminToken would be written into a ConfigMap: remove it (in a pod the admin API listens on loopback only; reach it with `kubectl port-forward`)"
    )]
    AdminToken,

    #[error("{what} is out of range for Kubernetes: {value}")]
    OutOfRange { what: String, value: String },

    #[error("route `{route}`: {message}")]
    Route { route: String, message: String },

    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },

    #[error("cannot write {}: {source}", path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },

    #[error("cannot write {what} as YAML: {message}")]
    Yaml { what: String, message: String },
}
