//! The PROXY protocol on a listener: HAProxy in TCP mode in front (v1 and
//! v2 headers) names the client, curl's `--haproxy-protocol` sends v1 over
//! plain and TLS connections, a trusted peer without a header is closed and
//! counted, and an untrusted peer's header is never read.

use std::path::Path;
use std::process::{Command, Output, Stdio};

use serin_testkit::process::TempDir;

use crate::common::{Program, Upstream, metric_value, metrics_text, proxy};

/// A loopback address other than 127.0.0.1 for the client's side, so the
/// address a header names differs from the peer's.
const CLIENT_IP: &str = "127.0.0.9";

/// HAProxy in TCP mode on a free port, passing every connection to
/// `serin` with a PROXY header (`send-proxy` for v1, `send-proxy-v2`).
fn haproxy(dir: &Path, serin: std::net::SocketAddr, send: &str) -> Program {
    let config = dir.join(format!("{send}.cfg"));
    Program::start(
        &format!("haproxy ({send})"),
        |port| {
            let text = format!(
                "defaults\n  mode tcp\n  timeout connect 5s\n  timeout client 30s\n  \
                 timeout server 30s\nfrontend fe\n  bind 127.0.0.1:{port}\n  \
                 default_backend be\nbackend be\n  server serin {serin} {send}\n"
            );
            std::fs::write(&config, text).unwrap_or_else(|e| panic!("{}: {e}", config.display()));
            let mut c = Command::new("haproxy");
            // Master-worker in the foreground: "Loading success." is said
            // only once every listener is bound.
            c.args(["-W", "-db", "-f"]).arg(&config);
            c
        },
        |log, _| log.contains("Loading success."),
    )
}

/// curl from [`CLIENT_IP`] with `args`; its output.
fn curl(args: &[&str], url: &str) -> Output {
    Command::new("curl")
        .args([
            "-sS",
            "--noproxy",
            "*",
            "--max-time",
            "20",
            "--interface",
            CLIENT_IP,
        ])
        .args(args)
        .arg(url)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("curl is needed (scripts/install-test-deps.sh): {e}"))
}

/// The `x-forwarded-for` the upstream's echo says it received.
fn forwarded_for(out: &Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "curl failed ({}): {}\n{stdout}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let echo: serde_json::Value =
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}"));
    echo["headers"]["x-forwarded-for"]
        .as_str()
        .unwrap_or_else(|| panic!("no x-forwarded-for in {echo}"))
        .to_string()
}

fn config(up: &Upstream, tls: &str) -> String {
    format!(
        r#"
listeners:
  - name: gw
    address: 127.0.0.1:0
    proxyProtocol:
      trustedCidrs: [127.0.0.1/32]
{tls}
services:
  - name: svc
    versions: [{{name: v1, endpoints: ["{}"]}}]
routes:
  - name: r
    rules:
      - backendRefs: [{{name: svc, version: v1}}]
"#,
        up.addr
    )
}

#[tokio::test]
async fn haproxy_in_front_names_the_client_in_v1_and_v2() {
    let up = Upstream::start("up");
    let serin = proxy(&config(&up, ""));
    let dir = TempDir::new("serin-proxy-protocol");
    let gw = serin.listener("gw");
    for send in ["send-proxy", "send-proxy-v2"] {
        let front = haproxy(dir.path(), gw, send);
        let through = format!("http://127.0.0.1:{}/", front.port);
        // HAProxy connects from 127.0.0.1 (trusted); the client it names is
        // curl's address, which serin forwards as the client.
        assert_eq!(forwarded_for(&curl(&[], &through)), CLIENT_IP, "{send}");
    }
}

#[tokio::test]
async fn a_trusted_peer_must_send_the_header_and_an_untrusted_one_is_never_believed() {
    let up = Upstream::start("up");
    let serin = proxy(&config(&up, ""));
    let url = serin.url("gw");
    // curl from 127.0.0.1 (trusted) with its own v1 header.
    let trusted = |args: &[&str]| {
        let mut all = vec!["--interface", "127.0.0.1"];
        all.extend_from_slice(args);
        curl(&all, &url)
    };
    assert_eq!(
        forwarded_for(&trusted(&["--haproxy-protocol"])),
        "127.0.0.1"
    );
    // Without a header, the trusted peer's connection is closed unanswered.
    let closed = trusted(&["-o", "/dev/null", "-w", "%{http_code}"]);
    assert!(!closed.status.success(), "{closed:?}");
    assert_eq!(String::from_utf8_lossy(&closed.stdout), "000", "{closed:?}");
    let metrics = metrics_text(&serin).await;
    let series = r#"serin_downstream_rejected_total{listener="gw",reason="proxy_protocol"}"#;
    assert_eq!(metric_value(&metrics, series), 1.0, "{metrics}");
    // Another peer is a client itself: served without a header, and a
    // header it sends is a malformed request, not a new address.
    assert_eq!(forwarded_for(&curl(&[], &url)), CLIENT_IP);
    let spoofed = curl(
        &[
            "--haproxy-protocol",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
        ],
        &url,
    );
    assert_eq!(
        String::from_utf8_lossy(&spoofed.stdout),
        "400",
        "{spoofed:?}"
    );
}

#[tokio::test]
async fn tls_follows_the_header() {
    let up = Upstream::start("up");
    let dir = TempDir::new("serin-proxy-protocol-tls");
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()])
        .unwrap_or_else(|e| panic!("{e}"));
    let (cert_path, key_path) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert_path, cert.cert.pem()).unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(&key_path, cert.signing_key.serialize_pem()).unwrap_or_else(|e| panic!("{e}"));
    let tls = format!(
        "    tls: {{certificate: \"{}\", key: \"{}\"}}",
        cert_path.display(),
        key_path.display()
    );
    let serin = proxy(&config(&up, &tls));
    let url = serin.url("gw").replacen("http://", "https://", 1);
    let out = curl(
        &["--interface", "127.0.0.1", "--haproxy-protocol", "-k"],
        &url,
    );
    assert_eq!(forwarded_for(&out), "127.0.0.1");
}
