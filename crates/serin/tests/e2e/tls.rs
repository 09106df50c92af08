//! TLS in full (issue 13, point 1), with curl and `openssl s_client`:
//! certificates chosen by SNI, reloaded from disk, client certificates,
//! `x-forwarded-client-cert`, routes on the client's identity, and TLS to
//! upstreams. Certificates are made by rcgen, signed by a test CA.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, SanType};
use serin_testkit::process::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::common::{Serin, Upstream, proxy, wait_until};

/// A certificate authority of the test, writing what it signs to `dir`.
pub(crate) struct Ca {
    issuer: Issuer<'static, KeyPair>,
    /// `ca.pem`, for `--cacert` and `caCertificates`.
    pub(crate) pem: PathBuf,
    dir: PathBuf,
}

/// What a leaf certificate is for.
pub(crate) struct Leaf<'a> {
    common_name: &'a str,
    dns: &'a [&'a str],
    uri: Option<&'a str>,
}

impl Ca {
    pub(crate) fn new(dir: &Path, name: &str) -> Self {
        let mut params =
            CertificateParams::new(Vec::<String>::new()).unwrap_or_else(|e| panic!("{e}"));
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let key = KeyPair::generate().unwrap_or_else(|e| panic!("{e}"));
        let cert = params.self_signed(&key).unwrap_or_else(|e| panic!("{e}"));
        let pem = dir.join(format!("{name}.pem"));
        write(&pem, &cert.pem());
        Self {
            issuer: Issuer::new(params, key),
            pem,
            dir: dir.to_path_buf(),
        }
    }

    /// Signs a leaf and writes `STEM.pem` and `STEM.key`.
    pub(crate) fn sign(&self, stem: &str, leaf: &Leaf<'_>) -> (PathBuf, PathBuf) {
        let (cert, key) = self.sign_pem(leaf);
        let (c, k) = (
            self.dir.join(format!("{stem}.pem")),
            self.dir.join(format!("{stem}.key")),
        );
        write(&c, &cert);
        write(&k, &key);
        (c, k)
    }

    /// A leaf's certificate and key as PEM text.
    fn sign_pem(&self, leaf: &Leaf<'_>) -> (String, String) {
        let names: Vec<String> = leaf.dns.iter().map(ToString::to_string).collect();
        let mut params = CertificateParams::new(names).unwrap_or_else(|e| panic!("{e}"));
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::OrganizationName, "Serin Test");
        params
            .distinguished_name
            .push(DnType::CommonName, leaf.common_name);
        if let Some(u) = leaf.uri {
            params
                .subject_alt_names
                .push(SanType::URI(u.try_into().unwrap_or_else(|e| panic!("{e}"))));
        }
        let key = KeyPair::generate().unwrap_or_else(|e| panic!("{e}"));
        let cert = params
            .signed_by(&key, &self.issuer)
            .unwrap_or_else(|e| panic!("{e}"));
        (cert.pem(), key.serialize_pem())
    }
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

pub(crate) fn leaf<'a>(common_name: &'a str, dns: &'a [&'a str]) -> Leaf<'a> {
    Leaf {
        common_name,
        dns,
        uri: None,
    }
}

/// A tool the test needs; a missing one fails the test saying what to
/// install (`scripts/install-test-deps.sh` does).
fn tool(name: &str, version_flag: &str) -> Command {
    let found = Command::new(name)
        .arg(version_flag)
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        found,
        "`{name}` is needed by this test: run scripts/install-test-deps.sh"
    );
    Command::new(name)
}

async fn run(mut cmd: Command) -> Output {
    let shown = format!("{cmd:?}");
    tokio::task::spawn_blocking(move || cmd.stdin(Stdio::null()).output())
        .await
        .unwrap_or_else(|e| panic!("{shown}: {e}"))
        .unwrap_or_else(|e| panic!("{shown}: {e}"))
}

/// curl to `https://HOST:PORT/PATH` with HOST resolved to 127.0.0.1 (so
/// HOST is the SNI), trusting `ca`.
fn curl(host: &str, port: u16, path: &str, ca: &Path) -> Command {
    let mut c = tool("curl", "--version");
    c.args(["-sS", "--noproxy", "*", "--max-time", "20", "--http1.1"]);
    c.args(["--resolve", &format!("{host}:{port}:127.0.0.1")]);
    c.arg("--cacert").arg(ca);
    c.arg(format!("https://{host}:{port}{path}"));
    c
}

fn with_client_cert(mut c: Command, cert: &(PathBuf, PathBuf)) -> Command {
    c.arg("--cert").arg(&cert.0).arg("--key").arg(&cert.1);
    c
}

/// The upstream's echo of what a curl run got through.
fn echoed(out: &Output) -> serde_json::Value {
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "curl failed ({}): {}\n{stdout}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}"))
}

fn header<'a>(echo: &'a serde_json::Value, name: &str) -> Option<&'a str> {
    echo["headers"][name].as_str()
}

/// The subject of the certificate serin serves for `sni` (`None`: send no
/// SNI), as `openssl s_client` prints it (spaces removed); `Err` with
/// s_client's output when the handshake fails.
async fn served_subject(port: u16, sni: Option<&str>, ca: &Path) -> Result<String, String> {
    let mut c = tool("openssl", "version");
    c.args(["s_client", "-connect", &format!("127.0.0.1:{port}")]);
    match sni {
        Some(name) => c.args(["-servername", name]),
        None => c.arg("-noservername"),
    };
    c.arg("-CAfile").arg(ca);
    let out = run(c).await;
    let text = String::from_utf8_lossy(&out.stdout).replace(' ', "");
    let subject = text
        .lines()
        .find_map(|l| l.strip_prefix("subject="))
        .map(str::to_string);
    match subject {
        Some(s) if out.status.success() => Ok(s),
        _ => Err(format!(
            "{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )),
    }
}

fn listener_with_tls(tls: &str) -> String {
    format!("listeners:\n  - name: gw\n    address: 127.0.0.1:0\n    tls:\n{tls}\n")
}

fn routes_to(up: &Upstream) -> String {
    format!(
        r#"services:
  - name: up
    versions: [{{name: v1, endpoints: ["{}"]}}]
routes:
  - name: all
    rules:
      - backendRefs: [{{name: up, version: v1}}]
"#,
        up.addr
    )
}

fn port(serin: &Serin) -> u16 {
    serin.listener("gw").port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sni_picks_the_exact_then_the_wildcard_then_the_default_certificate() {
    let dir = TempDir::new("serin-tls-sni");
    let ca = Ca::new(dir.path(), "ca");
    let default = ca.sign("default", &leaf("default-cert", &["default.test"]));
    let api = ca.sign("api", &leaf("api-cert", &["api.example.com"]));
    let wild = ca.sign("wild", &leaf("wild-cert", &["*.example.com"]));
    let up = Upstream::start("up");
    let serin = proxy(&format!(
        "{}{}",
        listener_with_tls(&format!(
            r#"      certificate: "{}"
      key: "{}"
      certificates:
        - {{certificate: "{}", key: "{}"}}
        - {{certificate: "{}", key: "{}", hostnames: ["*.example.com"]}}"#,
            default.0.display(),
            default.1.display(),
            api.0.display(),
            api.1.display(),
            wild.0.display(),
            wild.1.display(),
        )),
        routes_to(&up)
    ));
    let port = port(&serin);
    let cases = [
        (Some("api.example.com"), "CN=api-cert"),
        (Some("web.example.com"), "CN=wild-cert"),
        // One label only: not the wildcard's.
        (Some("a.b.example.com"), "CN=default-cert"),
        (Some("other.test"), "CN=default-cert"),
        (None, "CN=default-cert"),
    ];
    for (sni, want) in cases {
        let got = served_subject(port, sni, &ca.pem)
            .await
            .unwrap_or_else(|e| panic!("SNI {sni:?}: handshake failed:\n{e}"));
        assert!(
            got.contains(want),
            "SNI {sni:?}: served {got}, expected {want}"
        );
    }
    // curl checks the name against what it was served.
    for host in ["api.example.com", "web.example.com"] {
        let echo = echoed(&run(curl(host, port, "/sni", &ca.pem)).await);
        assert_eq!(echo["path"], "/sni", "{host}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_default_an_unknown_or_missing_sni_is_refused() {
    let dir = TempDir::new("serin-tls-nodefault");
    let ca = Ca::new(dir.path(), "ca");
    let api = ca.sign("api", &leaf("api-cert", &["api.example.com"]));
    let up = Upstream::start("up");
    let serin = proxy(&format!(
        "{}{}",
        listener_with_tls(&format!(
            r#"      certificates: [{{certificate: "{}", key: "{}"}}]"#,
            api.0.display(),
            api.1.display()
        )),
        routes_to(&up)
    ));
    let port = port(&serin);
    let known = echoed(&run(curl("api.example.com", port, "/", &ca.pem)).await);
    assert_eq!(known["path"], "/");
    for sni in [Some("other.test"), None] {
        let refused = served_subject(port, sni, &ca.pem).await;
        assert!(
            refused.is_err(),
            "SNI {sni:?} was served {refused:?} though no certificate is for it"
        );
    }
    let out = run(curl("other.test", port, "/", &ca.pem)).await;
    assert!(!out.status.success(), "curl was served for an unknown SNI");
    assert_eq!(up.requests(), 1, "a refused handshake reached the upstream");
}

/// A TLS client connection that stays open (HTTP/1.1 keep-alive), trusting
/// `ca`, with SNI `localhost`.
async fn keep_alive_connection(
    port: u16,
    ca: &Path,
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let mut roots = rustls::RootCertStore::empty();
    let pem = std::fs::read(ca).unwrap_or_else(|e| panic!("{e}"));
    for c in rustls_pki_types::pem::PemObject::pem_slice_iter(&pem) {
        roots
            .add(c.unwrap_or_else(|e| panic!("{e}")))
            .unwrap_or_else(|e| panic!("{e}"));
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap_or_else(|e| panic!("{e}"))
    .with_root_certificates(roots)
    .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap_or_else(|e| panic!("connect: {e}"));
    let name =
        rustls_pki_types::ServerName::try_from("localhost").unwrap_or_else(|e| panic!("{e}"));
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .unwrap_or_else(|e| panic!("handshake: {e}"))
}

/// One GET on an open connection; the status line of the answer (whose
/// body is read whole, by its Content-Length).
async fn get_on(conn: &mut tokio_rustls::client::TlsStream<tokio::net::TcpStream>) -> String {
    conn.write_all(b"GET /again HTTP/1.1\r\nhost: localhost\r\n\r\n")
        .await
        .unwrap_or_else(|e| panic!("write: {e}"));
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = conn
            .read(&mut buf)
            .await
            .unwrap_or_else(|e| panic!("read: {e}"));
        assert!(
            n > 0,
            "connection closed: {}",
            String::from_utf8_lossy(&got)
        );
        got.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&got).to_string();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let len: usize = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().to_string())
                })
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            if body.len() >= len {
                return head.lines().next().unwrap_or("").to_string();
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_rotated_on_disk_serves_the_next_handshake_and_open_connections_stay() {
    let dir = TempDir::new("serin-tls-rotate");
    let ca = Ca::new(dir.path(), "ca");
    let (cert, key) = ca.sign("served", &leaf("first", &["localhost"]));
    let up = Upstream::start("up");
    let serin = proxy(&format!(
        "{}{}",
        listener_with_tls(&format!(
            "      certificate: \"{}\"\n      key: \"{}\"",
            cert.display(),
            key.display()
        )),
        routes_to(&up)
    ));
    let port = port(&serin);
    let mut open = keep_alive_connection(port, &ca.pem).await;
    assert_eq!(get_on(&mut open).await, "HTTP/1.1 200 OK");
    let subject = |sni| served_subject(port, sni, &ca.pem);
    assert!(
        subject(Some("localhost"))
            .await
            .unwrap_or_default()
            .contains("CN=first")
    );

    // Rotated: the key first, then the certificate, in place.
    let (new_cert, new_key) = ca.sign_pem(&leaf("second", &["localhost"]));
    write(&key, &new_key);
    write(&cert, &new_cert);
    let mut served = String::new();
    for _ in 0..200 {
        served = subject(Some("localhost")).await.unwrap_or_default();
        if served.contains("CN=second") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        served.contains("CN=second"),
        "still served after the rotation: {served}"
    );
    assert_eq!(
        get_on(&mut open).await,
        "HTTP/1.1 200 OK",
        "the connection opened before the rotation"
    );

    // A bad new file: the current certificate keeps serving, and the log
    // says which file is wrong.
    write(&cert, "not a certificate\n");
    let logged = wait_until(Duration::from_secs(10), || {
        serin
            .log_lines()
            .iter()
            .any(|l| l.contains("cannot be used") && l.contains("served.pem"))
    });
    assert!(
        logged,
        "no log of the bad file:\n{}",
        serin.log_lines().join("\n")
    );
    let still = subject(Some("localhost")).await.unwrap_or_default();
    assert!(still.contains("CN=second"), "after a bad file: {still}");
    let echo = echoed(&run(curl("localhost", port, "/", &ca.pem)).await);
    assert_eq!(echo["path"], "/");
}

/// Two listeners with client validation (`req`: required, `opt`:
/// optional), routes to `up`; and clients of the CA.
struct Mtls {
    serin: Serin,
    ca: Ca,
    client: (PathBuf, PathBuf),
    admin: (PathBuf, PathBuf),
    _dir: TempDir,
    _ups: (Upstream, Upstream),
}

fn mtls() -> Mtls {
    let dir = TempDir::new("serin-tls-mtls");
    let ca = Ca::new(dir.path(), "ca");
    let server = ca.sign("server", &leaf("server", &["localhost"]));
    let client = ca.sign(
        "client",
        &Leaf {
            common_name: "client",
            dns: &["client.test"],
            uri: Some("spiffe://test/client"),
        },
    );
    let admin = ca.sign(
        "admin",
        &Leaf {
            common_name: "admin",
            dns: &[],
            uri: Some("spiffe://test/admin"),
        },
    );
    let (public, private) = (Upstream::start("public"), Upstream::start("admin"));
    let tls = |mode: &str| {
        format!(
            r#"    tls:
      certificate: "{}"
      key: "{}"
      clientValidation: {{mode: {mode}, caCertificates: "{}"}}"#,
            server.0.display(),
            server.1.display(),
            ca.pem.display()
        )
    };
    let serin = proxy(&format!(
        r#"listeners:
  - name: req
    address: 127.0.0.1:0
{}
  - name: opt
    address: 127.0.0.1:0
{}
services:
  - name: public
    versions: [{{name: v1, endpoints: ["{}"]}}]
  - name: admin
    versions: [{{name: v1, endpoints: ["{}"]}}]
routes:
  - name: all
    rules:
      - matches:
          - path: {{type: PathPrefix, value: /}}
            clientCertificate:
              - {{name: URI, value: "spiffe://test/admin"}}
              - {{type: RegularExpression, name: Subject, value: "CN=admin,.*"}}
        backendRefs: [{{name: admin, version: v1}}]
      - backendRefs: [{{name: public, version: v1}}]
"#,
        tls("required"),
        tls("optional"),
        public.addr,
        private.addr
    ));
    Mtls {
        serin,
        ca,
        client,
        admin,
        _dir: dir,
        _ups: (public, private),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_certificates_required_optional_and_x_forwarded_client_cert() {
    let m = mtls();
    let (req, opt) = (
        m.serin.listener("req").port(),
        m.serin.listener("opt").port(),
    );
    let spoofed = "By=spiffe://evil;Hash=00;Subject=\"CN=admin\";URI=spiffe://test/admin";

    // required, no certificate: refused in the handshake.
    let out = run(curl("localhost", req, "/", &m.ca.pem)).await;
    assert!(!out.status.success(), "served without a client certificate");

    // required, with one: the identity goes upstream; the client's own
    // x-forwarded-client-cert is replaced.
    let mut c = with_client_cert(curl("localhost", req, "/", &m.ca.pem), &m.client);
    c.args(["-H", &format!("x-forwarded-client-cert: {spoofed}")]);
    let echo = echoed(&run(c).await);
    let xfcc = header(&echo, "x-forwarded-client-cert").unwrap_or_default();
    assert!(xfcc.starts_with("Hash="), "{xfcc}");
    assert!(
        xfcc.contains(
            ";Subject=\"CN=client,O=Serin Test\";URI=spiffe://test/client;DNS=client.test"
        ),
        "{xfcc}"
    );
    assert!(!xfcc.contains("evil"), "the client's XFCC was kept: {xfcc}");
    assert_eq!(echo["upstream"], "public");

    // optional, none: served, with no XFCC, not even the client's.
    let mut c = curl("localhost", opt, "/", &m.ca.pem);
    c.args(["-H", &format!("x-forwarded-client-cert: {spoofed}")]);
    let echo = echoed(&run(c).await);
    assert_eq!(header(&echo, "x-forwarded-client-cert"), None, "{echo}");
    assert_eq!(echo["upstream"], "public", "a spoofed XFCC chose the route");

    // openssl s_client with a client certificate.
    let mut c = tool("openssl", "version");
    c.args(["s_client", "-connect", &format!("127.0.0.1:{req}")]);
    c.args(["-servername", "localhost", "-quiet"]);
    c.arg("-CAfile").arg(&m.ca.pem);
    c.arg("-cert").arg(&m.client.0).arg("-key").arg(&m.client.1);
    let request = b"GET /s_client HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n";
    let out = tokio::task::spawn_blocking(move || {
        let mut child = c
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("openssl: {e}"));
        if let Some(mut stdin) = child.stdin.take() {
            let _ = std::io::Write::write_all(&mut stdin, request);
            // Kept open until the answer is in: s_client quits at EOF.
            std::thread::sleep(Duration::from_secs(2));
        }
        child
            .wait_with_output()
            .unwrap_or_else(|e| panic!("openssl: {e}"))
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.starts_with("HTTP/1.1 200"),
        "s_client got:\n{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("spiffe://test/client"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_match_on_the_verified_client_identity() {
    let m = mtls();
    let opt = m.serin.listener("opt").port();
    let cases = [
        ("the admin certificate", Some(&m.admin), "admin"),
        ("another certificate", Some(&m.client), "public"),
        ("no certificate", None, "public"),
    ];
    for (what, cert, want) in cases {
        let c = curl("localhost", opt, "/x", &m.ca.pem);
        let c = match cert {
            Some(cert) => with_client_cert(c, cert),
            None => c,
        };
        let echo = echoed(&run(c).await);
        assert_eq!(echo["upstream"], want, "{what}");
    }
}

/// A proxy in front of TLS upstreams: `api` (default SNI: the service's
/// name), `named` (`sni: backend.internal`, a client certificate, HTTP/2),
/// `wrongca` (trusting another CA); each on its own path prefix. One
/// worker: a client's second connection (its pool may open one while the
/// first is being given back) then finds the same upstream pool.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstreams_over_tls_with_sni_a_ca_bundle_and_a_client_certificate() {
    let dir = TempDir::new("serin-tls-upstream");
    let ca = Ca::new(dir.path(), "ca");
    let other_ca = Ca::new(dir.path(), "other-ca");
    let backend = ca.sign("backend", &leaf("backend", &["api", "backend.internal"]));
    let serin_client = ca.sign("serin-client", &leaf("serin", &["serin.test"]));
    let up = Upstream::start_tls("tls-up", &backend.0, &backend.1, Some(&ca.pem));
    let service = |name: &str, protocol: &str, tls: String| {
        format!(
            "  - name: {name}\n    protocol: {protocol}\n    tls: {tls}\n    versions: [{{name: v1, endpoints: [\"{}\"]}}]\n",
            up.addr
        )
    };
    let route = |name: &str| {
        format!(
            "      - matches: [{{path: {{type: PathPrefix, value: /{name}}}}}]\n        backendRefs: [{{name: {name}, version: v1}}]\n"
        )
    };
    let serin = proxy(&format!(
        "workers: 1\nlisteners: [{{name: gw, address: \"127.0.0.1:0\"}}]\nservices:\n{}{}{}routes:\n  - name: all\n    rules:\n{}{}{}",
        service(
            "api",
            "http1",
            format!("{{caCertificates: \"{}\"}}", ca.pem.display())
        ),
        service(
            "named",
            "h2",
            format!(
                "{{sni: backend.internal, caCertificates: \"{}\", certificate: \"{}\", key: \"{}\"}}",
                ca.pem.display(),
                serin_client.0.display(),
                serin_client.1.display()
            )
        ),
        service(
            "wrongca",
            "http1",
            format!("{{caCertificates: \"{}\"}}", other_ca.pem.display())
        ),
        route("api"),
        route("named"),
        route("wrongca"),
    ));
    let client = crate::common::client();
    let url = |path: &str| format!("{}{path}", serin.url("gw"));
    for _ in 0..2 {
        // Twice: the second request goes on a pooled TLS connection.
        let echo = crate::common::echo(
            client
                .get(url("/api"))
                .send()
                .await
                .unwrap_or_else(|e| panic!("{e}")),
        )
        .await;
        assert_eq!(header(&echo, "x-test-sni"), Some("api"), "{echo}");
        assert_eq!(header(&echo, "x-test-client-cert"), Some("absent"));
        assert_eq!(echo["version"], "HTTP/1.1");
    }
    assert_eq!(up.connections(), 1, "the TLS connection was not reused");
    let echo = crate::common::echo(
        client
            .get(url("/named"))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}")),
    )
    .await;
    assert_eq!(
        header(&echo, "x-test-sni"),
        Some("backend.internal"),
        "{echo}"
    );
    assert_eq!(header(&echo, "x-test-client-cert"), Some("present"));
    assert_eq!(echo["version"], "HTTP/2.0");

    let before = up.requests();
    let resp = client
        .get(url("/wrongca"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(resp.status(), 503);
    assert_eq!(
        crate::common::header(&resp, "x-serin-reason"),
        "connect_failure"
    );
    assert_eq!(
        up.requests(),
        before,
        "a request went to an upstream serin does not trust"
    );
}
