//! The JWT and BasicAuth filters, and APIKey keys from a file, with curl as
//! the client: tokens minted here with keys made here (ring), a JWKS from a
//! file and from a URL served by a real HTTP server, htpasswd files with
//! bcrypt hashes. Every refusal is a 401 with its `WWW-Authenticate` and
//! never reaches the upstream; claim and user headers a client sends are
//! replaced by serin's.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use serin_testkit::process::TempDir;

use crate::common::{Upstream, proxy};

const ISSUER: &str = "https://idp.test";
const AUDIENCE: &str = "orders";

/// A P-256 signing key and its public JWK (with `kid`).
struct SigningKey {
    key: EncodingKey,
    jwk: Jwk,
}

impl SigningKey {
    fn new(kid: &str) -> Self {
        let pkcs8 =
            EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new())
                .unwrap_or_else(|e| panic!("key: {e}"));
        let pair = EcdsaKeyPair::from_pkcs8(
            &ECDSA_P256_SHA256_FIXED_SIGNING,
            pkcs8.as_ref(),
            &SystemRandom::new(),
        )
        .unwrap_or_else(|e| panic!("key: {e}"));
        // The public point, uncompressed: 0x04, then x and y (32 bytes each).
        let point = pair.public_key().as_ref();
        let jwk = serde_json::from_value(serde_json::json!({
            "kty": "EC", "crv": "P-256", "alg": "ES256", "use": "sig", "kid": kid,
            "x": b64url(&point[1..33]), "y": b64url(&point[33..65]),
        }))
        .unwrap_or_else(|e| panic!("jwk: {e}"));
        let key = EncodingKey::from_ec_der(pkcs8.as_ref());
        Self { key, jwk }
    }

    fn token(&self, claims: &serde_json::Value) -> String {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = self.jwk.common.key_id.clone();
        jsonwebtoken::encode(&header, claims, &self.key).unwrap_or_else(|e| panic!("sign: {e}"))
    }
}

fn jwks(keys: &[&SigningKey]) -> String {
    let set = JwkSet {
        keys: keys.iter().map(|k| k.jwk.clone()).collect(),
    };
    serde_json::to_string(&set).unwrap_or_else(|e| panic!("{e}"))
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// Claims that pass, with `changes` merged in.
fn claims(changes: serde_json::Value) -> serde_json::Value {
    let mut c = serde_json::json!({
        "iss": ISSUER, "aud": AUDIENCE, "sub": "alice", "exp": now() + 600, "nbf": now() - 10,
    });
    if let (Some(c), Some(changes)) = (c.as_object_mut(), changes.as_object()) {
        c.extend(changes.clone());
    }
    c
}

fn b64url(bytes: &[u8]) -> String {
    // No padding, URL alphabet (RFC 7515 §2), by hand: the test should not
    // trust the code it checks to encode its forgeries.
    const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().fold(0u32, |n, b| (n << 8) | u32::from(*b)) << (8 * (3 - chunk.len()));
        for i in 0..=chunk.len() {
            out.push(char::from(ABC[((n >> (18 - 6 * i)) & 63) as usize]));
        }
    }
    out
}

/// What curl saw: status, response headers (lower-case names), body.
struct Seen {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Seen {
    fn header(&self, name: &str) -> &str {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map_or("", |(_, v)| v.as_str())
    }

    /// A header the upstream received (it echoes them as JSON).
    fn upstream_header(&self, name: &str) -> String {
        let v: serde_json::Value = serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body));
        v["headers"][name].as_str().unwrap_or("").to_string()
    }
}

fn curl(args: &[&str], url: &str) -> Seen {
    let out = Command::new("curl")
        .args(["-sS", "-i", "--noproxy", "*", "--max-time", "20"])
        .args(args)
        .arg(url)
        .output()
        .unwrap_or_else(|e| panic!("curl (install it: scripts/install-test-deps.sh): {e}"));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            panic!(
                "curl {url}: no status ({}): {text}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Seen {
        status,
        headers,
        body: body.to_string(),
    }
}

fn bearer(token: &str) -> String {
    format!("Authorization: Bearer {token}")
}

fn jwt_config(app: &Upstream, jwks: &str) -> String {
    format!(
        r#"
listeners: [{{name: gw, address: "127.0.0.1:0"}}]
services:
  - name: app
    versions: [{{name: v1, endpoints: ["{}"]}}]
routes:
  - name: api
    rules:
      - filters:
          - type: JWT
            jwt:
              issuer: {ISSUER}
              audiences: [{AUDIENCE}, other]
              jwks: {jwks}
              claimsToHeaders: [{{claim: sub, header: x-user}}, {{claim: scope, header: x-scope}}]
        backendRefs: [{{name: app}}]
"#,
        app.addr
    )
}

#[test]
fn jwts_are_checked_against_a_jwks_file_and_claims_reach_the_upstream() {
    let key = SigningKey::new("k1");
    let dir = TempDir::new("serin-jwt");
    let file = dir.path().join("jwks.json");
    std::fs::write(&file, jwks(&[&key])).unwrap_or_else(|e| panic!("{e}"));
    let app = Upstream::start("app");
    let serin = proxy(&jwt_config(&app, &format!("{{file: {}}}", file.display())));
    let url = format!("{}/orders", serin.url("gw"));

    let good = key.token(&claims(serde_json::json!({"scope": ["read", "write"]})));
    let seen = curl(
        &[
            "-H",
            &bearer(&good),
            "-H",
            "x-user: admin",
            "-H",
            "x-scope: all",
        ],
        &url,
    );
    assert_eq!(seen.status, 200, "{}", seen.body);
    assert_eq!(
        seen.upstream_header("x-user"),
        "alice",
        "the claim, not the client's copy"
    );
    assert_eq!(seen.upstream_header("x-scope"), "read,write");
    // A token with no `scope`: the client's forged header is gone all the same.
    let seen = curl(
        &[
            "-H",
            &bearer(&key.token(&claims(serde_json::json!({})))),
            "-H",
            "x-scope: all",
        ],
        &url,
    );
    assert_eq!(seen.status, 200, "{}", seen.body);
    assert_eq!(seen.upstream_header("x-scope"), "");
    assert_eq!(app.requests(), 2);

    let seen = curl(&["-H", "x-user: alice"], &url);
    assert_eq!(seen.status, 401, "no token");
    assert_eq!(seen.header("www-authenticate"), r#"Bearer realm="serin""#);

    let stranger = SigningKey::new("k1");
    let hs256 = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims(serde_json::json!({})),
        &EncodingKey::from_secret(b"a secret the JWKS does not hold"),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let unsigned = format!(
        "{}.{}.",
        b64url(br#"{"alg":"none","typ":"JWT"}"#),
        b64url(claims(serde_json::json!({})).to_string().as_bytes())
    );
    let refused = [
        (
            "expired",
            key.token(&claims(serde_json::json!({"exp": now() - 3600}))),
            "the token has expired",
        ),
        (
            "not yet valid",
            key.token(&claims(serde_json::json!({"nbf": now() + 3600}))),
            "the token is not valid yet (nbf)",
        ),
        (
            "wrong aud",
            key.token(&claims(serde_json::json!({"aud": "billing"}))),
            "the token is for another audience",
        ),
        (
            "wrong iss",
            key.token(&claims(serde_json::json!({"iss": "https://evil.test"}))),
            "the token is for another issuer",
        ),
        (
            "bad signature",
            stranger.token(&claims(serde_json::json!({}))),
            "the signature does not verify",
        ),
        ("alg none", unsigned, "the token is malformed"),
        ("HS256", hs256, "no key of the key set verifies this token"),
        ("garbage", "not.a.jwt".to_string(), "the token is malformed"),
    ];
    for (what, token, why) in refused {
        let seen = curl(&["-H", &bearer(&token)], &url);
        assert_eq!(seen.status, 401, "{what}: {}", seen.body);
        assert_eq!(
            seen.header("www-authenticate"),
            format!(r#"Bearer realm="serin", error="invalid_token", error_description="{why}""#),
            "{what}"
        );
    }
    assert_eq!(app.requests(), 2, "no refused request reached the upstream");
}

/// A JWKS server that answers 503 until it is told to serve the keys.
struct JwksServer {
    url: String,
    up: Arc<AtomicBool>,
    asked: Arc<AtomicUsize>,
}

impl JwksServer {
    fn start(body: String) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
        let url = format!(
            "http://{}/.well-known/jwks.json",
            listener.local_addr().unwrap_or_else(|e| panic!("{e}"))
        );
        let up = Arc::new(AtomicBool::new(false));
        let asked = Arc::new(AtomicUsize::new(0));
        let (up2, asked2) = (up.clone(), asked.clone());
        std::thread::spawn(move || {
            for mut conn in listener.incoming().flatten() {
                let mut buf = [0u8; 4096];
                let _ = conn.read(&mut buf);
                asked2.fetch_add(1, Ordering::SeqCst);
                let (status, body) = if up2.load(Ordering::SeqCst) {
                    ("200 OK", body.as_str())
                } else {
                    ("503 Service Unavailable", "down")
                };
                let _ = write!(
                    conn,
                    "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        Self { url, up, asked }
    }
}

#[test]
fn a_jwks_url_that_is_down_refuses_every_token_until_a_refresh_brings_the_keys() {
    let key = SigningKey::new("k1");
    let jwks_server = JwksServer::start(jwks(&[&key]));
    let app = Upstream::start("app");
    let serin = proxy(&jwt_config(
        &app,
        &format!("{{url: \"{}\", refreshInterval: 1s}}", jwks_server.url),
    ));
    let url = format!("{}/orders", serin.url("gw"));
    let token = key.token(&claims(serde_json::json!({})));

    let seen = curl(&["-H", &bearer(&token)], &url);
    assert_eq!(
        seen.status, 401,
        "fail closed before any keys: {}",
        seen.body
    );
    assert_eq!(
        seen.header("www-authenticate"),
        r#"Bearer realm="serin", error="invalid_token", error_description="the signing keys are not loaded yet""#
    );
    assert_eq!(app.requests(), 0);

    jwks_server.up.store(true, Ordering::SeqCst);
    let mut status = 0;
    for _ in 0..100 {
        status = curl(&["-H", &bearer(&token)], &url).status;
        if status == 200 {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(status, 200, "the keys arrived with a refresh");
    assert!(
        jwks_server.asked.load(Ordering::SeqCst) >= 2,
        "asked again after the 503"
    );

    // Down again: the last good keys stay.
    jwks_server.up.store(false, Ordering::SeqCst);
    let before = jwks_server.asked.load(Ordering::SeqCst);
    serin_testkit::wait_until(Duration::from_secs(20), || {
        jwks_server.asked.load(Ordering::SeqCst) > before
    });
    assert!(
        jwks_server.asked.load(Ordering::SeqCst) > before,
        "refreshed while down"
    );
    assert_eq!(curl(&["-H", &bearer(&token)], &url).status, 200);
}

fn htpasswd(dir: &TempDir) -> std::path::PathBuf {
    let path = dir.path().join("users.htpasswd");
    let hash = bcrypt::hash("s3cret", 4).unwrap_or_else(|e| panic!("{e}"));
    let other = bcrypt::hash("other", 4).unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(&path, format!("# staff\nalice:{hash}\n\nbob:{other}\n"))
        .unwrap_or_else(|e| panic!("{e}"));
    path
}

#[test]
fn basic_auth_checks_bcrypt_passwords_and_forwards_the_user() {
    let dir = TempDir::new("serin-basic");
    let file = htpasswd(&dir);
    let app = Upstream::start("app");
    let serin = proxy(&format!(
        r#"
listeners: [{{name: gw, address: "127.0.0.1:0"}}]
services:
  - name: app
    versions: [{{name: v1, endpoints: ["{}"]}}]
routes:
  - name: staff
    rules:
      - filters:
          - type: BasicAuth
            basicAuth: {{htpasswd: {}, realm: staff, forwardUserHeader: x-user}}
        backendRefs: [{{name: app}}]
"#,
        app.addr,
        file.display()
    ));
    let url = format!("{}/desk", serin.url("gw"));

    let seen = curl(&["-u", "alice:s3cret", "-H", "x-user: bob"], &url);
    assert_eq!(seen.status, 200, "{}", seen.body);
    assert_eq!(seen.upstream_header("x-user"), "alice");

    for (what, args) in [
        ("wrong password", vec!["-u", "alice:other"]),
        ("unknown user", vec!["-u", "mallory:s3cret"]),
        ("no credentials", vec!["-H", "x-user: alice"]),
    ] {
        let seen = curl(&args, &url);
        assert_eq!(seen.status, 401, "{what}");
        assert_eq!(
            seen.header("www-authenticate"),
            r#"Basic realm="staff""#,
            "{what}"
        );
    }
    assert_eq!(app.requests(), 1, "no refused request reached the upstream");
}

#[test]
fn api_keys_can_come_from_a_file() {
    let dir = TempDir::new("serin-keys");
    let file = dir.path().join("keys.txt");
    // printf %s ci-key-7f3a | sha256sum
    std::fs::write(
        &file,
        "# name sha256\nci edd957a149145a52cae4b8539fa149e03b0d8ea27619ab1ae4003f6cb68664b9\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let app = Upstream::start("app");
    let serin = proxy(&format!(
        r#"
listeners: [{{name: gw, address: "127.0.0.1:0"}}]
services:
  - name: app
    versions: [{{name: v1, endpoints: ["{}"]}}]
routes:
  - name: api
    rules:
      - filters:
          - type: APIKey
            apiKey: {{keysFile: {}, forwardKeyNameHeader: x-api-key-name}}
        backendRefs: [{{name: app}}]
"#,
        app.addr,
        file.display()
    ));
    let url = format!("{}/items", serin.url("gw"));
    let seen = curl(&["-H", "x-api-key: ci-key-7f3a"], &url);
    assert_eq!(seen.status, 200, "{}", seen.body);
    assert_eq!(seen.upstream_header("x-api-key-name"), "ci");
    let seen = curl(&["-H", "x-api-key: ci-key-7f3b"], &url);
    assert_eq!(seen.status, 401);
    assert_eq!(
        seen.header("www-authenticate"),
        r#"APIKey realm="serin", header="x-api-key""#
    );
    assert_eq!(app.requests(), 1);
}

/// A JWT filter of this test's issuer that copies `claim` into `x-tier`.
fn tier_jwt(jwks: &str, claim: &str) -> String {
    format!(
        "{{type: JWT, jwt: {{issuer: {ISSUER}, audiences: [{AUDIENCE}], jwks: {jwks}, claimsToHeaders: [{{claim: {claim}, header: x-tier}}]}}}}"
    )
}

#[test]
fn routes_match_on_claims_and_never_on_a_clients_own_claim_header() {
    let key = SigningKey::new("k1");
    let dir = TempDir::new("serin-jwt-route");
    let file = dir.path().join("jwks.json");
    std::fs::write(&file, jwks(&[&key])).unwrap_or_else(|e| panic!("{e}"));
    let jwks = format!("{{file: {}}}", file.display());
    let (gold, standard) = (Upstream::start("gold"), Upstream::start("standard"));
    let jwt = tier_jwt(&jwks, "tier");
    let serin = proxy(&format!(
        r#"
listeners: [{{name: gw, address: "127.0.0.1:0"}}]
services:
  - {{name: gold, versions: [{{name: v1, endpoints: ["{gold}"]}}]}}
  - {{name: standard, versions: [{{name: v1, endpoints: ["{standard}"]}}]}}
routes:
  - name: api
    rules:
      - matches: [{{path: {{type: PathPrefix, value: /orders}}, headers: [{{name: x-tier, value: gold}}]}}]
        filters: [{jwt}]
        backendRefs: [{{name: gold}}]
      - matches: [{{path: {{type: PathPrefix, value: /orders}}}}]
        filters:
          - {jwt}
          - {{type: RequestHeaderModifier, requestHeaderModifier: {{add: [{{name: x-rule, value: standard}}]}}}}
        backendRefs: [{{name: standard}}]
"#,
        gold = gold.addr,
        standard = standard.addr,
    ));
    let url = format!("{}/orders", serin.url("gw"));
    let token = |tier: &str| bearer(&key.token(&claims(serde_json::json!({ "tier": tier }))));

    // Routed on the claim: first to the catch-all rule, whose filter finds
    // the claim; then to the gold rule, which begins afresh (no `x-rule`).
    let seen = curl(&["-H", &token("gold")], &url);
    assert_eq!(seen.status, 200, "{}", seen.body);
    assert_eq!(seen.upstream_header("x-tier"), "gold");
    assert_eq!(
        seen.upstream_header("x-rule"),
        "",
        "the first rule's change stayed"
    );
    assert_eq!((gold.requests(), standard.requests()), (1, 0));

    // A client's own `x-tier: gold` chooses nothing: with a token that says
    // otherwise, or none at all.
    let seen = curl(&["-H", &token("standard"), "-H", "x-tier: gold"], &url);
    assert_eq!(seen.status, 200, "{}", seen.body);
    assert_eq!(seen.upstream_header("x-tier"), "standard");
    assert_eq!(seen.upstream_header("x-rule"), "standard");
    let seen = curl(&["-H", "x-tier: gold"], &url);
    assert_eq!(seen.status, 401, "{}", seen.body);
    assert_eq!((gold.requests(), standard.requests()), (1, 1));
}

#[test]
fn claims_that_send_a_request_from_rule_to_rule_without_end_are_a_500() {
    let key = SigningKey::new("k1");
    let dir = TempDir::new("serin-jwt-loop");
    let file = dir.path().join("jwks.json");
    std::fs::write(&file, jwks(&[&key])).unwrap_or_else(|e| panic!("{e}"));
    let jwks = format!("{{file: {}}}", file.display());
    let app = Upstream::start("app");
    // Rule a copies `to_b` into x-tier, rule b copies `to_a`: a token with
    // to_b=b and to_a=a bounces between them.
    let serin = proxy(&format!(
        r#"
listeners: [{{name: gw, address: "127.0.0.1:0"}}]
services: [{{name: app, versions: [{{name: v1, endpoints: ["{app}"]}}]}}]
routes:
  - name: api
    rules:
      - matches: [{{headers: [{{name: x-tier, value: a}}]}}]
        filters: [{a}]
        backendRefs: [{{name: app}}]
      - matches: [{{headers: [{{name: x-tier, value: b}}]}}]
        filters: [{b}]
        backendRefs: [{{name: app}}]
      - filters: [{first}]
        backendRefs: [{{name: app}}]
"#,
        app = app.addr,
        a = tier_jwt(&jwks, "to_b"),
        b = tier_jwt(&jwks, "to_a"),
        first = tier_jwt(&jwks, "first"),
    ));
    let url = format!("{}/x", serin.url("gw"));
    let bouncing = key.token(&claims(
        serde_json::json!({"first": "a", "to_b": "b", "to_a": "a"}),
    ));
    let seen = curl(&["-H", &bearer(&bouncing)], &url);
    assert_eq!(seen.status, 500, "{}", seen.body);
    assert_eq!(seen.header("x-serin-reason"), "route_loop");
    assert_eq!(app.requests(), 0);
    // One that settles goes through.
    let settling = key.token(&claims(
        serde_json::json!({"first": "a", "to_b": "a", "to_a": "a"}),
    ));
    let seen = curl(&["-H", &bearer(&settling)], &url);
    assert_eq!(seen.status, 200, "{}", seen.body);
    assert_eq!(app.requests(), 1);
}
