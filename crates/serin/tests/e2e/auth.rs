//! Token auth filters at the edge: the APIKey filter lets through only
//! requests carrying a configured key (given to serin as its SHA-256),
//! answers 401 with `WWW-Authenticate` otherwise without reaching the
//! upstream, and forwards the key's name in a header a client cannot forge.

use crate::common::{Upstream, client, echo, header, proxy};

/// `printf %s ci-key-7f3a | sha256sum`
const CI_KEY_SHA256: &str = "edd957a149145a52cae4b8539fa149e03b0d8ea27619ab1ae4003f6cb68664b9";
/// `printf %s ops-key-91c2 | sha256sum`
const OPS_KEY_SHA256: &str = "fca48c42f36225dfc53ed7e1d40bdba7d8d8737e18c8fcbc819dac43e64836c2";

fn config(app: &Upstream) -> String {
    format!(
        r#"
listeners:
  - name: gw
    address: 127.0.0.1:0
services:
  - name: app
    versions: [{{name: v1, endpoints: ["{}"]}}]
routes:
  - name: api
    rules:
      - filters:
          - type: APIKey
            apiKey:
              forwardKeyNameHeader: x-api-key-name
              keys:
                - {{name: ci, sha256: {CI_KEY_SHA256}}}
                - {{name: ops, sha256: "{}"}}
        backendRefs: [{{name: app}}]
"#,
        app.addr,
        OPS_KEY_SHA256.to_ascii_uppercase(),
    )
}

#[tokio::test]
async fn api_keys_are_checked_by_hash_and_the_key_name_reaches_the_upstream() {
    let app = Upstream::start("app");
    let serin = proxy(&config(&app));
    let url = format!("{}/items", serin.url("gw"));
    let http = client();

    for (what, key) in [
        ("no key", None),
        ("an unknown key", Some("ci-key-7f3b")),
        ("the hash itself", Some(CI_KEY_SHA256)),
        ("an empty key", Some("")),
    ] {
        let mut req = http.get(&url).header("x-api-key-name", "ci");
        if let Some(key) = key {
            req = req.header("x-api-key", key);
        }
        let resp = req.send().await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(resp.status(), 401, "{what}");
        assert_eq!(
            header(&resp, "www-authenticate"),
            r#"APIKey realm="serin", header="x-api-key""#,
            "{what}"
        );
    }
    assert_eq!(app.requests(), 0, "no refused request reached the upstream");

    for (key, name) in [("ci-key-7f3a", "ci"), ("ops-key-91c2", "ops")] {
        let resp = http
            .get(&url)
            .header("x-api-key", key)
            // A client's claim to be another key is replaced.
            .header("x-api-key-name", "admin")
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(resp.status(), 200, "{name}");
        let seen = echo(resp).await;
        assert_eq!(seen["headers"]["x-api-key-name"], name);
    }
    assert_eq!(app.requests(), 2);
}
