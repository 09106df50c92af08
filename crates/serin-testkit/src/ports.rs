//! Ports for programs that bind them themselves, without races between
//! tests running side by side.
//!
//! The rule, for every test of the suite:
//!
//! - **A port nothing may answer on** (a dead upstream, a Redis that is not
//!   there): [`DeadPort`], a socket kept bound but not
//!   listening, so no other test can be given the port while it lives.
//! - **serin's own listeners** (listeners, the admin API, the metrics
//!   listener): `127.0.0.1:0`, and the address serin reports (its
//!   `listening` / `admin API listening` / `metrics listening` log lines,
//!   read by [`Serin`](crate::Serin)).
//! - **Other programs that cannot report a port they picked** (Prometheus,
//!   Redis, the demo services, containers): a port found free by
//!   [`free_port`] may be taken by a test beside before the program binds
//!   it, so start it with [`on_free_port`]: when the program says the port
//!   is taken ([`Bind::Taken`]: it exited, or its log says the address is
//!   in use), it is started again on another port, and after [`TRIES`]
//!   tries the test fails with what each try saw. "Listening" must come
//!   from the program itself (its own log line, or its own exit), never
//!   from a connect to the port, which another test's server can answer.
//!   [`spawn_on_free_port`] does all of this for a child process.
//!
//! A test that passes alone must pass beside the others.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

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

/// Tries of [`on_free_port`] before it gives up.
pub const TRIES: usize = 5;

/// A loopback port found free (bound to 0 and released). Only for
/// [`on_free_port`]: alone, another test can take it before it is used.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("cannot find a free port: {e}"))
}

/// What a program did with the port it was given.
pub enum Bind<T> {
    /// It listens there (by its own word).
    Listening(T),
    /// Another process held the port; what showed it (a log line, an exit
    /// status), for the failure message.
    Taken(String),
}

impl<T> Bind<T> {
    /// What it listens with, made `f(t)`.
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Bind<U> {
        match self {
            Self::Listening(t) => Bind::Listening(f(t)),
            Self::Taken(why) => Bind::Taken(why),
        }
    }
}

/// `start(port)` on a free port, again on another one while the port was
/// [`Bind::Taken`], up to [`TRIES`] times; panics with what each try saw.
/// `start` panics itself on any other failure.
pub fn on_free_port<T>(what: &str, mut start: impl FnMut(u16) -> Bind<T>) -> T {
    let mut seen = Vec::new();
    for _ in 0..TRIES {
        let port = free_port();
        match start(port) {
            Bind::Listening(t) => return t,
            Bind::Taken(why) => seen.push(format!("  port {port}: {why}")),
        }
    }
    all_taken(what, &seen)
}

/// [`on_free_port`] for a `start` that awaits (e.g. asks an API whether the
/// program came up).
pub async fn on_free_port_async<T>(what: &str, mut start: impl AsyncFnMut(u16) -> Bind<T>) -> T {
    let mut seen = Vec::new();
    for _ in 0..TRIES {
        let port = free_port();
        match start(port).await {
            Bind::Listening(t) => return t,
            Bind::Taken(why) => seen.push(format!("  port {port}: {why}")),
        }
    }
    all_taken(what, &seen)
}

fn all_taken(what: &str, seen: &[String]) -> ! {
    panic!(
        "{what} found its port taken {TRIES} times in a row:\n{}",
        seen.join("\n")
    )
}

/// Whether a program's output says its address was in use (Rust's, Go's
/// and Redis' words alike).
pub fn says_address_in_use(log: &str) -> bool {
    log.to_ascii_lowercase().contains("address already in use")
}

/// A child process started by [`spawn_on_free_port`].
pub struct Spawned {
    pub child: Child,
    pub port: u16,
}

/// Runs `command(port)` with its stdout and stderr in the file `log` (made
/// anew each try) until `listening(log text, port)` holds: its own word
/// that it listens. When it exits first and its log says the address was in
/// use, another port is tried ([`on_free_port`]); any other exit, or no
/// word within `limit`, panics with the command and its log.
pub fn spawn_on_free_port(
    what: &str,
    log: &Path,
    limit: Duration,
    mut command: impl FnMut(u16) -> Command,
    listening: impl Fn(&str, u16) -> bool,
) -> Spawned {
    on_free_port(what, |port| {
        let mut cmd = command(port);
        let shown = format!("{cmd:?}");
        let out = std::fs::File::create(log)
            .unwrap_or_else(|e| panic!("{what}: cannot create {}: {e}", log.display()));
        let err = out
            .try_clone()
            .unwrap_or_else(|e| panic!("{what}: {}: {e}", log.display()));
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("{what}: cannot run {shown}: {e}"));
        let deadline = Instant::now() + limit;
        loop {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            if listening(&text, port) {
                return Bind::Listening(Spawned { child, port });
            }
            if let Ok(Some(status)) = child.try_wait() {
                // All of its output is in the file now.
                let text = std::fs::read_to_string(log).unwrap_or_default();
                if says_address_in_use(&text) {
                    return Bind::Taken(format!("{shown} exited with {status}: {}", last(&text)));
                }
                panic!("{what}: {shown} exited with {status}; its output:\n{text}");
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "{what}: {shown} did not say it listens within {limit:?}; its output:\n{text}"
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    })
}

/// The last non-empty line of `text`.
pub fn last(text: &str) -> &str {
    text.lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
}

/// A JSON log line of serin or its demo services, `{"message": MESSAGE,
/// FIELD: "ADDRESS", ...}`, with an address whose port is `port`: such a
/// program's own word that it listens there.
pub fn logged_listening(log: &str, message: &str, field: &str, port: u16) -> bool {
    log.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .any(|v| {
            v["message"] == message
                && v[field]
                    .as_str()
                    .and_then(|a| a.parse::<std::net::SocketAddr>().ok())
                    .is_some_and(|a| a.port() == port)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_taken_port_is_tried_again_and_each_try_is_reported() {
        let mut tries = Vec::new();
        let got = on_free_port("x", |port| {
            tries.push(port);
            if tries.len() < 3 {
                Bind::Taken("address already in use".into())
            } else {
                Bind::Listening(port)
            }
        });
        assert_eq!(tries.len(), 3);
        assert_eq!(Some(&got), tries.last());
        let failed = std::panic::catch_unwind(|| {
            on_free_port::<()>("prometheus", |_| Bind::Taken("in use".into()))
        });
        let message = failed
            .err()
            .and_then(|e| e.downcast_ref::<String>().cloned())
            .unwrap_or_default();
        assert!(
            message.contains("prometheus found its port taken 5 times"),
            "{message}"
        );
        assert_eq!(message.matches(": in use").count(), TRIES, "{message}");
    }

    /// A port held by a listener beside: the program exits saying so and is
    /// started again elsewhere; it is not taken for listening because the
    /// port answers.
    #[test]
    fn a_program_whose_port_is_held_is_started_again_on_another() {
        let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let held_port = held.local_addr().unwrap().port();
        let dir = std::env::temp_dir().join(format!("serin-ports-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut first = true;
        let spawned = spawn_on_free_port(
            "python",
            &dir.join("log"),
            Duration::from_secs(20),
            |port| {
                let port = if std::mem::take(&mut first) {
                    held_port
                } else {
                    port
                };
                let mut c = Command::new("python3");
                c.args(["-c", SERVE, &port.to_string()]);
                c
            },
            |log, port| log.contains(&format!("listening on {port}")),
        );
        assert_ne!(spawned.port, held_port);
        let mut child = spawned.child;
        let _ = child.kill();
        let _ = child.wait();
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Binds the port of argv[1], says so, and waits.
    const SERVE: &str = "import socket, sys, time\n\
        s = socket.socket()\n\
        s.bind(('127.0.0.1', int(sys.argv[1])))\n\
        s.listen()\n\
        print('listening on', sys.argv[1], flush=True)\n\
        time.sleep(60)\n";
}
