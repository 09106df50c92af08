//! A test server on a thread of its own with its own tokio runtime, so that
//! it serves whatever runtime (or none) the test uses, and stopping it cuts
//! every connection at once (dropping the runtime drops their tasks).

use std::future::Future;
use std::net::SocketAddr;

use tokio::sync::oneshot;

pub(crate) struct ServerThread {
    pub(crate) addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ServerThread {
    /// Listens on 127.0.0.1 with a port the OS picks, as `start`.
    pub(crate) fn start_local<F, Fut>(on_connection: F) -> Self
    where
        F: Fn(tokio::net::TcpStream) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap_or_else(|e| panic!("bind test server: {e}"));
        Self::start(listener, on_connection)
    }

    /// Accepts connections on `listener` and runs `on_connection` for each
    /// in a task of its own.
    pub(crate) fn start<F, Fut>(listener: std::net::TcpListener, on_connection: F) -> Self
    where
        F: Fn(tokio::net::TcpStream) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let addr = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("test server address: {e}"));
        listener
            .set_nonblocking(true)
            .unwrap_or_else(|e| panic!("nonblocking: {e}"));
        let (stop, mut stopped) = oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .unwrap_or_else(|e| panic!("runtime: {e}"));
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener)
                    .unwrap_or_else(|e| panic!("listener: {e}"));
                loop {
                    tokio::select! {
                        _ = &mut stopped => break,
                        accepted = listener.accept() => {
                            let Ok((stream, _)) = accepted else { continue };
                            tokio::spawn(on_connection(stream));
                        }
                    }
                }
            });
        });
        Self {
            addr,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// Stops accepting, cuts every connection and waits for the thread.
    pub(crate) fn stop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for ServerThread {
    fn drop(&mut self) {
        self.stop();
    }
}
