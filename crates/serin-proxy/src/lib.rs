//! serin's data plane: listeners, the route table, backends and load
//! balancing, filters, metrics, access log, and the admin API; and
//! [`Proxy`], the control plane of one running proxy (see [`control`]).

pub mod admin;
mod balance;
pub mod body;
mod body_limit;
mod client_addr;
mod compression;
pub mod control;
pub mod dashboard;
pub mod endpoints;
pub mod events;
pub mod explain;
mod filters;
mod headers;
mod health;
pub mod metrics;
mod mirror;
mod outlier;
mod pool;
mod proxy_protocol;
mod ratelimit;
mod read_scratch;
mod request;
mod resilience;
mod routing;
mod server;
mod shared;
pub mod snapshot;
pub mod state;
pub mod stats;
mod strict;
pub mod tap;
pub mod telemetry;
mod tls;
pub mod trace_context;
pub mod weights;

pub use control::{Applied, Change, EditError, MirrorChange, Proxy, ProxyOptions, StartError};
pub use routing::route_host_rank;
pub use shared::Shared;
