//! The client's address behind trusted proxies: `X-Forwarded-For` is
//! believed only from the hops a listener trusts, and the address it names
//! is the one a per-client rate limit counts.

use crate::common::{Upstream, client, echo, proxy};

/// A listener with `client_address` (YAML under the key, or empty for
/// none) in front of a rule that lets each client one request a minute.
fn config(up: &Upstream, client_address: &str) -> String {
    format!(
        r#"
listeners:
  - name: gw
    address: 127.0.0.1:0
{client_address}
services:
  - name: svc
    versions: [{{name: v1, endpoints: ["{}"]}}]
routes:
  - name: r
    rules:
      - backendRefs: [{{name: svc, version: v1}}]
        rateLimit:
          requests: 1
          unit: minute
"#,
        up.addr
    )
}

/// The status of a GET sent with `x-forwarded-for: xff`, and the
/// `x-forwarded-for` the upstream received when it got the request.
async fn get(url: &str, xff: &str) -> (u16, Option<String>) {
    let r = client()
        .get(url)
        .header("x-forwarded-for", xff)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let status = r.status().as_u16();
    if status != 200 {
        return (status, None);
    }
    let json = echo(r).await;
    let received = json["headers"]["x-forwarded-for"]
        .as_str()
        .map(str::to_string);
    (status, received)
}

#[tokio::test]
async fn a_trusted_proxy_names_the_client_that_the_rate_limit_counts() {
    let up = Upstream::start("up");
    let serin = proxy(&config(
        &up,
        "    clientAddress:\n      trustedCidrs: [127.0.0.0/8]",
    ));
    let url = serin.url("gw");
    // The proxy on 127.0.0.1 is trusted: its entry names the client, and
    // serin appends the proxy to the chain it forwards.
    assert_eq!(
        get(&url, "203.0.113.1").await,
        (200, Some("203.0.113.1, 127.0.0.1".into()))
    );
    assert_eq!(get(&url, "203.0.113.1").await.0, 429, "same client again");
    // Another client behind the same proxy has a budget of its own.
    assert_eq!(get(&url, "203.0.113.2").await.0, 200);
}

#[tokio::test]
async fn entries_left_of_the_trusted_hops_do_not_make_a_new_client() {
    let up = Upstream::start("up");
    let serin = proxy(&config(&up, "    clientAddress:\n      trustedHops: 1"));
    let url = serin.url("gw");
    assert_eq!(get(&url, "6.6.6.6, 203.0.113.1").await.0, 200);
    // The client wrote another address in front: still the same client.
    assert_eq!(get(&url, "7.7.7.7, 203.0.113.1").await.0, 429);
    assert_eq!(get(&url, "7.7.7.7, 203.0.113.2").await.0, 200);
}

#[tokio::test]
async fn without_trusted_proxies_the_header_cannot_make_a_new_client() {
    let up = Upstream::start("up");
    let serin = proxy(&config(&up, ""));
    let url = serin.url("gw");
    assert_eq!(get(&url, "203.0.113.1").await.0, 200);
    // The peer is the client, whatever it writes in the header.
    assert_eq!(get(&url, "203.0.113.2").await.0, 429);
}
