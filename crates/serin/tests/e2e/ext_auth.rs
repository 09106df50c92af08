//! ExternalAuth: the real demo auth service is asked first.

use serin_testkit::process::TempDir;

use crate::common::{Program, Upstream, client, echo, proxy};

/// `serin demo auth` with a credentials file, on a free port.
struct Auth {
    program: Program,
    _dir: TempDir,
}

fn start_auth() -> Auth {
    let dir = TempDir::new("serin-auth");
    let creds = dir.path().join("credentials.txt");
    std::fs::write(&creds, "token good-token alice\nbasic bob secret\n")
        .unwrap_or_else(|e| panic!("{e}"));
    let creds = creds.display().to_string();
    Auth {
        program: Program::demo(&["auth", "--credentials", &creds]),
        _dir: dir,
    }
}

fn config(auth_port: u16, upstream: &Upstream, fail_open: bool) -> String {
    format!(
        r#"
listeners:
  - name: gw
    address: 127.0.0.1:0
services:
  - name: auth
    versions: [{{name: v1, endpoints: ["127.0.0.1:{auth_port}"]}}]
  - name: app
    versions: [{{name: v1, endpoints: ["{}"]}}]
routes:
  - name: secure
    rules:
      - matches: [{{path: {{type: PathPrefix, value: /secure}}}}]
        filters:
          - type: ExternalAuth
            externalAuth:
              backendRef: {{name: auth}}
              failOpen: {fail_open}
              http:
                allowedHeaders: [authorization]
                allowedResponseHeaders: [x-user]
        backendRefs: [{{name: app}}]
"#,
        upstream.addr
    )
}

#[tokio::test]
async fn the_auth_service_decides_and_its_answers_go_back_as_they_are() {
    let auth = start_auth();
    let app = Upstream::start("app");
    let serin = proxy(&config(auth.program.port, &app, false));
    let url = format!("{}/secure/x", serin.url("gw"));
    let http = client();

    let resp = http
        .get(&url)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(resp.status(), 401);
    assert!(resp.headers().get("www-authenticate").is_some());

    let resp = http
        .get(&url)
        .bearer_auth("wrong")
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(resp.status(), 403);
    assert_eq!(
        app.requests(),
        0,
        "denied requests never reach the upstream"
    );

    let resp = http
        .get(&url)
        .bearer_auth("good-token")
        .header("x-user", "mallory")
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(resp.status(), 200);
    let seen = echo(resp).await;
    assert_eq!(
        seen["headers"]["x-user"], "alice",
        "the auth service's x-user replaced the client's"
    );

    let resp = http
        .get(&url)
        .basic_auth("bob", Some("secret"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(echo(resp).await["headers"]["x-user"], "bob");
}

#[tokio::test]
async fn a_dead_auth_service_fails_closed_unless_told_otherwise() {
    // Nothing answers there, and no test beside can start to.
    let dead = serin_testkit::DeadPort::new();
    let port = dead.addr.port();
    let app = Upstream::start("app");
    let closed = proxy(&config(port, &app, false));
    let resp = client()
        .get(format!("{}/secure/x", closed.url("gw")))
        .bearer_auth("good-token")
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(resp.status(), 403);
    assert_eq!(app.requests(), 0);
    let open = proxy(&config(port, &app, true));
    let resp = client()
        .get(format!("{}/secure/x", open.url("gw")))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(resp.status(), 200);
}
