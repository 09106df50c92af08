//! End-to-end tests of the `serin` binary: real processes, real sockets,
//! real clients. One test binary; one module per area.

mod common;
mod config_errors;
mod protocols;
mod reload;
mod routing;
mod strict;
mod upstreams;
