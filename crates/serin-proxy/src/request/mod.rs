//! The request path, phase by phase.

pub(crate) mod path;
