//! The CORS filter: preflights are answered by serin before the auth
//! service or any upstream sees them, whatever the filter's place; answers
//! carry the CORS headers for allowed origins only. Once with reqwest
//! (what each answer holds), once from real pages in headless Chromium
//! (crates/serin/tests/browser/cors.mjs): a credentialed fetch through an
//! ExternalAuth route succeeds from the allowed origin and is refused by
//! the browser from another.

use serin_testkit::process::TempDir;

use crate::common::{Program, Upstream, client, echo, header, proxy, run_browser_script};

const ALLOWED: &str = "http://allowed.test";

/// A route whose ExternalAuth filter comes before its CORS filter.
fn config(auth: &str, app: &Upstream) -> String {
    format!(
        r#"
listeners:
  - name: gw
    address: 127.0.0.1:0
services:
  - name: auth
    versions: [{{name: v1, endpoints: ["{auth}"]}}]
  - name: app
    versions: [{{name: v1, endpoints: ["{}"]}}]
routes:
  - name: api
    rules:
      - matches: [{{path: {{type: PathPrefix, value: /api}}}}]
        filters:
          - type: ExternalAuth
            externalAuth:
              backendRef: {{name: auth}}
              http: {{allowedHeaders: [authorization], allowedResponseHeaders: [x-user]}}
          - type: CORS
            cors:
              allowOrigins: ["{ALLOWED}", "https://*.example.com"]
              allowMethods: [GET, PUT]
              allowHeaders: [authorization, x-client]
              exposeHeaders: [x-upstream]
              maxAge: 600
              allowCredentials: true
        backendRefs: [{{name: app}}]
"#,
        app.addr
    )
}

#[tokio::test]
async fn preflights_are_answered_before_auth_and_answers_carry_cors_headers() {
    // An upstream as the auth service: it allows everything and counts
    // what it is asked.
    let auth = Upstream::start("auth");
    let app = Upstream::start("app");
    let serin = proxy(&config(&auth.addr.to_string(), &app));
    let url = format!("{}/api/items", serin.url("gw"));
    let http = client();
    let preflight = |origin: &'static str| {
        http.request(reqwest::Method::OPTIONS, &url)
            .header("origin", origin)
            .header("access-control-request-method", "PUT")
            .header("access-control-request-headers", "authorization, x-client")
            .send()
    };

    let ok = preflight(ALLOWED).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(ok.status(), 204);
    assert_eq!(header(&ok, "access-control-allow-origin"), ALLOWED);
    assert_eq!(header(&ok, "access-control-allow-credentials"), "true");
    assert_eq!(header(&ok, "access-control-allow-methods"), "GET, PUT");
    assert_eq!(
        header(&ok, "access-control-allow-headers"),
        "authorization, x-client"
    );
    assert_eq!(header(&ok, "access-control-max-age"), "600");
    assert!(header(&ok, "vary").contains("origin"));

    let wildcard = preflight("https://a.b.example.com")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        header(&wildcard, "access-control-allow-origin"),
        "https://a.b.example.com"
    );

    let denied = preflight("http://denied.test")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(denied.status(), 204);
    for name in [
        "access-control-allow-origin",
        "access-control-allow-credentials",
        "access-control-allow-methods",
    ] {
        assert!(
            denied.headers().get(name).is_none(),
            "{name} on a denied preflight"
        );
    }
    assert_eq!(auth.requests(), 0, "no preflight reached the auth service");
    assert_eq!(app.requests(), 0, "no preflight reached the upstream");

    let actual = http
        .put(&url)
        .header("origin", ALLOWED)
        .bearer_auth("t")
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(actual.status(), 200);
    assert_eq!(header(&actual, "access-control-allow-origin"), ALLOWED);
    assert_eq!(header(&actual, "access-control-allow-credentials"), "true");
    assert_eq!(
        header(&actual, "access-control-expose-headers"),
        "x-upstream"
    );
    assert_eq!(header(&actual, "vary"), "origin");
    assert_eq!(auth.requests(), 1, "the actual request is authorized");

    let other = http
        .get(&url)
        .header("origin", "http://denied.test")
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        other.status(),
        200,
        "serin does not refuse; the browser does"
    );
    assert!(other.headers().get("access-control-allow-origin").is_none());
    assert_eq!(header(&other, "vary"), "origin");
    assert_eq!(echo(other).await["upstream"], "app");
}

#[tokio::test]
async fn a_browser_fetches_with_credentials_through_auth_from_the_allowed_origin_only() {
    let dir = TempDir::new("serin-cors-auth");
    let creds = dir.path().join("credentials.txt");
    std::fs::write(&creds, "token good-token alice\n").unwrap_or_else(|e| panic!("{e}"));
    let creds = creds.display().to_string();
    // The real demo auth service: a preflight that reached it (it carries
    // no Authorization) would get 401 and the fetch would fail.
    let auth = Program::demo(&["auth", "--credentials", &creds]);
    let app = Upstream::start("app");
    let serin = proxy(&config(&auth.addr().to_string(), &app));
    let api = format!("{}/api/items", serin.url("gw"));

    let findings = run_browser_script("cors.mjs", &[&api]).await;
    if findings.get("error").is_some() {
        serin.dump();
        panic!("the browser script failed: {findings:#}");
    }
    let allowed = &findings["allowed"];
    assert_eq!(allowed["ok"], true, "{findings:#}");
    assert_eq!(allowed["status"], 200, "{findings:#}");
    assert_eq!(
        allowed["upstream"], "app",
        "x-upstream is exposed: {findings:#}"
    );
    let seen: serde_json::Value = serde_json::from_str(allowed["body"].as_str().unwrap_or(""))
        .unwrap_or_else(|e| panic!("{e}: {findings:#}"));
    assert_eq!(seen["method"], "PUT");
    assert_eq!(
        seen["headers"]["x-user"], "alice",
        "the auth service allowed it"
    );
    assert_eq!(seen["headers"]["origin"], ALLOWED);

    let denied = &findings["denied"];
    assert_eq!(denied["ok"], false, "the browser refuses: {findings:#}");
    assert!(
        denied["error"]
            .as_str()
            .unwrap_or("")
            .contains("Failed to fetch"),
        "{findings:#}"
    );
    let refused = findings["console_errors"].to_string();
    assert!(
        refused.contains("preflight") && refused.contains("Access-Control-Allow-Origin"),
        "the browser refused on the preflight's missing header: {findings:#}"
    );
    assert_eq!(
        app.requests(),
        1,
        "only the allowed page's request reached the upstream"
    );
}
