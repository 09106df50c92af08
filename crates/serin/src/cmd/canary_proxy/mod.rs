//! The canary's seams on serin's own proxy: where `serin proxy` and `serin
//! up` let a canary write its weights ([`ProxySink`]: the running proxy's
//! route rules) and read its figures ([`EmbeddedSource`]: the proxy's own
//! per-version counters). serin-canary knows the proxy only through its
//! `WeightSink` and `MetricsSource` traits; these adapters, like the
//! Kubernetes sink beside them (`canary_kube`), live where the binary wires
//! the crates together.

mod embedded;
mod sink;

pub use embedded::EmbeddedSource;
pub use sink::ProxySink;
