//! Helpers shared by serin's end-to-end tests: test upstream servers, a
//! runner for the `serin` binary that dumps its logs when a test fails, and
//! raw socket clients. Everything listens on 127.0.0.1 with OS-picked ports,
//! but for the test namespaces of [`netns`].
//!
//! Ports follow one rule so that a test passing alone passes beside the
//! others ([`ports`]): a port nothing may answer on is a [`DeadPort`];
//! serin's own listeners bind port 0 and report it; any other program that
//! binds a port itself is started with [`on_free_port`] (or
//! [`spawn_on_free_port`]), which starts it again on another port when the
//! one it was given turns out taken.

pub mod kube_api;
pub mod netns;
pub mod otlp;
pub mod ports;
pub mod process;
pub mod raw;
mod server_thread;
pub mod upstream;

pub use kube_api::KubeApi;
pub use netns::Netns;
pub use otlp::{OtlpReceiver, ReceivedSpan};
pub use ports::{Bind, DeadPort, Spawned, on_free_port, spawn_on_free_port};
pub use process::{Serin, wait_until};
pub use upstream::{Upstream, UpstreamControl};
