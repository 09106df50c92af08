//! Helpers shared by serin's end-to-end tests: test upstream servers, a
//! runner for the `serin` binary that dumps its logs when a test fails, and
//! raw socket clients. Everything listens on 127.0.0.1 with OS-picked ports,
//! but for the test namespaces of [`netns`].

pub mod kube_api;
pub mod netns;
pub mod otlp;
pub mod process;
pub mod raw;
mod server_thread;
pub mod upstream;

pub use kube_api::KubeApi;
pub use netns::Netns;
pub use otlp::{OtlpReceiver, ReceivedSpan};
pub use process::{Serin, wait_until};
pub use upstream::{Upstream, UpstreamControl};

/// A loopback port where nothing listens, and nothing can start to while
/// this lives: the socket stays bound (not listening), so a connect is
/// refused and no other test can be given the port. A port found free and
/// released can be taken by a test running beside, which then answers.
pub struct DeadPort {
    pub addr: std::net::SocketAddr,
    _held: socket2::Socket,
}

impl DeadPort {
    pub fn new() -> Self {
        let held = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
            .unwrap_or_else(|e| panic!("socket: {e}"));
        held.bind(&std::net::SocketAddr::from(([127, 0, 0, 1], 0)).into())
            .unwrap_or_else(|e| panic!("bind: {e}"));
        let addr = held
            .local_addr()
            .ok()
            .and_then(|a| a.as_socket())
            .unwrap_or_else(|| panic!("bound socket has no address"));
        Self { addr, _held: held }
    }
}

impl Default for DeadPort {
    fn default() -> Self {
        Self::new()
    }
}

/// A free loopback port (bind to 0, read it, release it). Prefer port 0 in
/// configs where serin can report the port; this is for programs that
/// cannot.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("cannot find a free port: {e}"))
}
