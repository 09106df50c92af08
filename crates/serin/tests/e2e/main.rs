//! End-to-end tests of the `serin` binary: real processes, real sockets,
//! real clients. One test binary; one module per area.

mod canary;
mod common;
mod config_errors;
mod ext_auth;
// Discovery and routes from the Kubernetes API (against a stand-in).
mod kubernetes;
mod mirror;
mod observability;
mod protocols;
mod ratelimit;
mod reload;
mod resilience;
mod routing;
mod strict;
mod up;
mod upstreams;
