//! A second network namespace, for tests that need a client that is not on
//! serin's loopback: a namespace of its own joined to the test's by a veth
//! pair, with a /30 from 10.213.0.0/16 on the two ends. The addresses exist
//! only on these two interfaces, inside this machine; nothing is routed
//! anywhere else. Needs root (CI runs as root) and `ip` (iproute2) and
//! `curl` (installed by `scripts/install-test-deps.sh`); when the namespace
//! cannot be made, the test fails: it is not skipped.
//!
//! Each [`Netns`] takes a free block (the veth's name is the lock: `ip link
//! add` fails when another test holds it), so tests may run in parallel,
//! also in several processes. Dropping it deletes the namespace and the
//! veth pair.
//!
//! `ip netns add` and `del` are done under a lock file shared by every test
//! process: the first `ip netns add` on a machine turns `/run/netns` into a
//! bind mount of itself, and two running at once can stack two such mounts,
//! the second hiding the namespace the first just made (`ip link set …
//! netns NAME` then fails with `Invalid "netns" value`, as a cold-machine CI
//! run did).

use std::net::Ipv4Addr;
use std::process::{Command, Output};

/// /30 blocks in 10.213.0.0/16.
const BLOCKS: u32 = 1 << 14;

pub struct Netns {
    /// The namespace's name (`ip netns exec NAME …`).
    pub name: String,
    /// The veth end in the test's namespace.
    host_if: String,
    /// The address of the test's end: serin listens here.
    pub host_addr: Ipv4Addr,
    /// The address of the namespace's end: its clients come from here.
    pub peer_addr: Ipv4Addr,
}

fn ip(args: &[&str]) -> Output {
    Command::new("ip")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run `ip {}`: {e} (install iproute2)", args.join(" ")))
}

/// Where the namespace lock lives: beside `/run/netns`, for every process.
const LOCK_FILE: &str = "/run/serin-test-netns.lock";

/// The namespace lock, held until the file is dropped.
fn try_netns_lock() -> std::io::Result<std::fs::File> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(LOCK_FILE)?;
    file.lock()?;
    Ok(file)
}

fn netns_lock() -> std::fs::File {
    try_netns_lock()
        .unwrap_or_else(|e| panic!("cannot lock {LOCK_FILE} (network namespaces need root): {e}"))
}

fn ok(args: &[&str]) {
    let out = ip(args);
    assert!(
        out.status.success(),
        "`ip {}` failed (network namespaces need root): {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Netns {
    /// Makes a namespace and its veth pair, both ends up with their
    /// addresses. Panics when that is not possible.
    pub fn create() -> Self {
        let start = std::process::id().wrapping_mul(2_654_435_761) % BLOCKS;
        // A block is claimed (its veth made) and its namespace made under
        // the lock, as a drop deletes both under it: a block freed by one
        // test's drop and claimed by the next test (the tests of one
        // process start at the same block) cannot have its new namespace
        // deleted by the old drop.
        let lock = netns_lock();
        for i in 0..BLOCKS {
            let block = (start + i) % BLOCKS;
            let host_if = format!("srn{block}h");
            let peer_if = format!("srn{block}n");
            let out = ip(&[
                "link", "add", &host_if, "type", "veth", "peer", "name", &peer_if,
            ]);
            if !out.status.success() {
                let err = String::from_utf8_lossy(&out.stderr);
                if err.contains("File exists") {
                    continue;
                }
                panic!(
                    "`ip link add {host_if} type veth` failed (network namespaces need root): {err}"
                );
            }
            let base = u32::from(Ipv4Addr::new(10, 213, 0, 0)) + block * 4;
            let me = Netns {
                name: format!("serin-test-{block}"),
                host_if,
                host_addr: Ipv4Addr::from(base + 1),
                peer_addr: Ipv4Addr::from(base + 2),
            };
            // A namespace of this name without its veth is left over from
            // a test that was killed.
            let _ = ip(&["netns", "del", &me.name]);
            ok(&["netns", "add", &me.name]);
            ok(&["link", "set", &peer_if, "netns", &me.name]);
            drop(lock);
            ok(&[
                "addr",
                "add",
                &format!("{}/30", me.host_addr),
                "dev",
                &me.host_if,
            ]);
            ok(&["link", "set", &me.host_if, "up"]);
            ok(&[
                "-n",
                &me.name,
                "addr",
                "add",
                &format!("{}/30", me.peer_addr),
                "dev",
                &peer_if,
            ]);
            ok(&["-n", &me.name, "link", "set", &peer_if, "up"]);
            ok(&["-n", &me.name, "link", "set", "lo", "up"]);
            return me;
        }
        panic!("no free block in 10.213.0.0/16 for a test namespace");
    }

    /// Runs `program ARGS` inside the namespace.
    pub fn run(&self, program: &str, args: &[&str]) -> Output {
        Command::new("ip")
            .args(["netns", "exec", &self.name, program])
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("cannot run {program} in {}: {e}", self.name))
    }

    /// `curl ARGS URL` from inside the namespace: the status and the body.
    pub fn curl(&self, args: &[&str], url: &str) -> (u16, String) {
        let mut all = vec![
            "-sS",
            "--noproxy",
            "*",
            "--max-time",
            "20",
            "-w",
            "\n%{http_code}",
        ];
        all.extend_from_slice(args);
        all.push(url);
        let out = self.run("curl", &all);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
        let status = code.trim().parse().unwrap_or_else(|_| {
            panic!(
                "curl {url} from {}: no status ({}): {text}",
                self.name,
                String::from_utf8_lossy(&out.stderr)
            )
        });
        (status, body.to_string())
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Never a panic in drop: without the lock, delete all the same.
        let _lock = try_netns_lock();
        // The namespace first, while the veth still claims the block;
        // deleting one end deletes the pair, also the end in the namespace.
        let _ = ip(&["netns", "del", &self.name]);
        let _ = ip(&["link", "del", &self.host_if]);
    }
}
