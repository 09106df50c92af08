//! Response compression on a listener, checked with curl: each coding it
//! asks for (gzip, br, zstd) is what comes back and decodes to the
//! upstream's bytes, a large body included; small answers, clients that
//! prefer identity, and HEAD go out as they are.

use std::process::Command;

use crate::common::{Serin, Upstream, proxy, tool};

fn config(app: &Upstream) -> String {
    format!(
        r#"
listeners:
  - name: gw
    address: 127.0.0.1:0
    compression: {{minBytes: 1024}}
services:
  - name: app
    versions: [{{name: v1, endpoints: ["{}"]}}]
routes:
  - name: r
    rules:
      - filters:
          - type: ResponseHeaderModifier
            responseHeaderModifier: {{set: [{{name: content-type, value: text/plain}}]}}
        backendRefs: [{{name: app}}]
"#,
        app.addr
    )
}

/// curl's head (lower case) and decoded body for `size` bytes asked of the
/// upstream.
async fn fetch(serin: &Serin, size: usize, curl_args: &[&str]) -> (String, Vec<u8>) {
    let dir = serin_testkit::process::TempDir::new("serin-compression");
    let head = dir.path().join("head");
    let mut cmd = Command::new(tool("curl"));
    cmd.args(["-sS", "--noproxy", "*", "--max-time", "60", "-D"])
        .arg(&head)
        .args(["-H", &format!("x-test-body-bytes: {size}")])
        .args(curl_args)
        .arg(format!("{}/", serin.url("gw")));
    let shown = format!("{cmd:?}");
    let out = tokio::task::spawn_blocking(move || cmd.output())
        .await
        .unwrap_or_else(|e| panic!("{shown}: {e}"))
        .unwrap_or_else(|e| panic!("{shown}: {e}"));
    assert!(
        out.status.success(),
        "{shown}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let head = std::fs::read_to_string(&head).unwrap_or_else(|e| panic!("{e}"));
    (head.to_ascii_lowercase(), out.stdout)
}

#[tokio::test]
async fn each_coding_the_client_asks_for_decodes_to_the_upstreams_bytes() {
    let app = Upstream::start("app");
    let serin = proxy(&config(&app));
    for coding in ["gzip", "br", "zstd"] {
        // --compressed: curl decodes what comes back.
        let accept = format!("accept-encoding: {coding}");
        let (head, body) = fetch(&serin, 300_000, &["--compressed", "-H", &accept]).await;
        assert!(
            head.contains(&format!("content-encoding: {coding}\r\n")),
            "{head}"
        );
        assert!(!head.contains("content-length:"), "{head}");
        assert!(head.contains("vary: accept-encoding"), "{head}");
        assert_eq!(body.len(), 300_000, "{coding}");
        assert!(body.iter().all(|b| *b == b'x'), "{coding}");
    }
    // A large body streams through the encoder curl's default choice
    // picked (serin prefers zstd of "deflate, gzip, br, zstd").
    let (head, body) = fetch(&serin, 32 * 1024 * 1024, &["--compressed"]).await;
    assert!(head.contains("content-encoding: zstd\r\n"), "{head}");
    assert_eq!(body.len(), 32 * 1024 * 1024);
    assert!(body.iter().all(|b| *b == b'x'));
    // The same bytes compressed, not decoded: far fewer of them.
    let (_, raw) = fetch(&serin, 300_000, &["-H", "accept-encoding: gzip"]).await;
    assert!(
        raw.starts_with(&[0x1f, 0x8b]) && raw.len() < 10_000,
        "{}",
        raw.len()
    );

    for (what, size, args) in [
        ("below minBytes", 1000, vec!["-H", "accept-encoding: gzip"]),
        (
            "identity preferred",
            300_000,
            vec!["-H", "accept-encoding: gzip;q=0.5, identity"],
        ),
        ("no accept-encoding", 300_000, vec![]),
        ("HEAD", 300_000, vec!["-I", "-H", "accept-encoding: gzip"]),
    ] {
        let (head, body) = fetch(&serin, size, &args).await;
        assert!(!head.contains("content-encoding"), "{what}: {head}");
        assert!(
            head.contains(&format!("content-length: {size}")),
            "{what}: {head}"
        );
        if what != "HEAD" {
            assert_eq!(body.len(), size, "{what}");
        }
    }
}
