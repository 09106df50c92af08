//! Canary webhooks, gates, the approval and notifications (issue #15,
//! points 2 and 3): real serin, real qotm versions, the CLI and the admin
//! API, and a webhook receiver written here (an axum server on
//! 127.0.0.1:0 that records every body and answers the status the test
//! sets). Windows are 1 s; nothing here asserts on elapsed time.

use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::canary::{
    NOT_A_LATENCY_TEST, Qotm, audit, canary_weights, cli, config, decisions, load, route_weights,
    series_value, status, wait_status,
};
use std::path::PathBuf;

use serin_testkit::process::TempDir;

use crate::common::{Program, SERIN, Serin, client, proxy};
use crate::tls::{Ca, leaf};

/// A webhook receiver: every POST's path and JSON body, answered with the
/// status set by [`Receiver::answer`].
struct Receiver {
    url: String,
    answer: Arc<AtomicU16>,
    delay_ms: Arc<AtomicU64>,
    bodies: Arc<Mutex<Vec<(String, Value)>>>,
    _server: tokio::task::JoinHandle<()>,
}

#[derive(Clone)]
struct Shared {
    answer: Arc<AtomicU16>,
    /// How long an answer waits (after the body is recorded).
    delay_ms: Arc<AtomicU64>,
    bodies: Arc<Mutex<Vec<(String, Value)>>>,
}

async fn record(
    axum::extract::State(s): axum::extract::State<Shared>,
    uri: axum::http::Uri,
    body: axum::body::Bytes,
) -> axum::http::StatusCode {
    // Read before the body is recorded: a test that sees the body and
    // changes the answer changes the next one, not this one.
    let answer = s.answer.load(Ordering::SeqCst);
    let delay = Duration::from_millis(s.delay_ms.load(Ordering::SeqCst));
    let value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    s.bodies
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push((uri.path().to_string(), value));
    tokio::time::sleep(delay).await;
    axum::http::StatusCode::from_u16(answer)
        .unwrap_or(axum::http::StatusCode::INTERNAL_SERVER_ERROR)
}

/// The receiver's listener over TLS: a connection whose handshake fails
/// (a client that does not trust the certificate) is counted and dropped.
struct TlsListener {
    tcp: tokio::net::TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    refused: Arc<AtomicU64>,
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Ok((stream, addr)) = self.tcp.accept().await else {
                continue;
            };
            match self.acceptor.accept(stream).await {
                Ok(tls) => return (tls, addr),
                Err(_) => {
                    self.refused.fetch_add(1, Ordering::SeqCst);
                }
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}

/// A TLS server config for the receiver: `cert` and `key` (PEM files).
fn receiver_tls(cert: &std::path::Path, key: &std::path::Path) -> tokio_rustls::TlsAcceptor {
    use rustls_pki_types::pem::PemObject;
    let chain = rustls_pki_types::CertificateDer::pem_file_iter(cert)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .unwrap_or_else(|e| panic!("{}: {e}", cert.display()));
    let key = rustls_pki_types::PrivateKeyDer::from_pem_file(key)
        .unwrap_or_else(|e| panic!("{}: {e}", key.display()));
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .and_then(|b| b.with_no_client_auth().with_single_cert(chain, key))
    .unwrap_or_else(|e| panic!("receiver TLS: {e}"));
    tokio_rustls::TlsAcceptor::from(Arc::new(config))
}

impl Receiver {
    async fn start(answer: u16) -> Self {
        Self::serve(answer, None).await.0
    }

    /// A receiver at `https://127.0.0.1:PORT` with the certificate `cert`
    /// and key `key`; the count of refused handshakes.
    async fn start_tls(
        answer: u16,
        (cert, key): &(std::path::PathBuf, std::path::PathBuf),
    ) -> (Self, Arc<AtomicU64>) {
        let (me, refused) = Self::serve(answer, Some(receiver_tls(cert, key))).await;
        (me, refused.unwrap_or_default())
    }

    async fn serve(
        answer: u16,
        tls: Option<tokio_rustls::TlsAcceptor>,
    ) -> (Self, Option<Arc<AtomicU64>>) {
        let shared = Shared {
            answer: Arc::new(AtomicU16::new(answer)),
            delay_ms: Arc::new(AtomicU64::new(0)),
            bodies: Arc::new(Mutex::new(Vec::new())),
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("bind: {e}"));
        let addr = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("addr: {e}"));
        let app = axum::Router::new()
            .fallback(record)
            .with_state(shared.clone());
        let (scheme, refused, server) = match tls {
            None => (
                "http",
                None,
                tokio::spawn(async move {
                    let _ = axum::serve(listener, app).await;
                }),
            ),
            Some(acceptor) => {
                let refused = Arc::new(AtomicU64::new(0));
                let listener = TlsListener {
                    tcp: listener,
                    acceptor,
                    refused: refused.clone(),
                };
                (
                    "https",
                    Some(refused),
                    tokio::spawn(async move {
                        let _ = axum::serve(listener, app).await;
                    }),
                )
            }
        };
        let me = Self {
            url: format!("{scheme}://{addr}"),
            answer: shared.answer,
            delay_ms: shared.delay_ms,
            bodies: shared.bodies,
            _server: server,
        };
        (me, refused)
    }

    fn answer(&self, status: u16) {
        self.answer.store(status, Ordering::SeqCst);
    }

    fn delay(&self, d: Duration) {
        self.delay_ms.store(
            u64::try_from(d.as_millis()).unwrap_or(u64::MAX),
            Ordering::SeqCst,
        );
    }

    /// The bodies POSTed to `path`, in order.
    fn bodies(&self, path: &str) -> Vec<Value> {
        self.bodies
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|(p, _)| p == path)
            .map(|(_, b)| b.clone())
            .collect()
    }

    /// Waits (up to two minutes) until `path` got at least `n` bodies.
    async fn wait_for(&self, path: &str, n: usize) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let got = self.bodies(path);
            if got.len() >= n {
                return got;
            }
            assert!(
                Instant::now() < deadline,
                "{path} got {} bodies, not {n}: {got:#?}",
                got.len()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// `serin canary start qotm --to v2` with short windows and `extra`.
async fn start(serin: &Serin, steps: &str, extra: &[&str]) -> (i32, String) {
    let args = [
        &[
            "start",
            "qotm",
            "--to",
            "v2",
            "--max-latency-ratio",
            NOT_A_LATENCY_TEST,
            "--steps",
            steps,
            "--interval",
            "1s",
            "--min-requests",
            "20",
            "--inconclusive-limit",
            "1000",
        ][..],
        extra,
    ]
    .concat();
    cli(serin, &args).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pre_rollout_webhook_answering_500_keeps_all_traffic_on_the_baseline() {
    let hooks = Receiver::start(500).await;
    let v1 = Qotm::start("v1", &[]);
    let v2 = Qotm::start("v2", &[]);
    let serin = proxy(&config(&v1, &v2));
    let load = load(&serin);
    let hook = format!("pre-rollout={}/pre;name=smoke", hooks.url);
    let (code, out) = start(&serin, "20,50,100", &["--webhook", &hook, "--watch"]).await;
    load.stop().await;
    assert_eq!(code, 2, "--watch exits 2 on a rollback:\n{out}");
    let v = status(&serin).await;
    assert_eq!(v["phase"], "RolledBack", "{v:#}");
    assert_eq!(canary_weights(&v), (100, 0));
    assert_eq!(route_weights(&serin).await, (100, 0));
    let message = v["message"].as_str().unwrap_or("");
    assert!(
        message.contains("before any traffic") && message.contains("`smoke`"),
        "{v:#}"
    );
    assert!(message.contains("answered 500"), "{v:#}");

    let entries = audit(&serin);
    assert_eq!(
        decisions(&entries),
        ["start", "webhook", "rollback"],
        "{entries:#?}"
    );
    for e in &entries {
        assert_eq!(e["to"]["v2"], 0, "traffic never moved: {e:#}");
    }
    assert_eq!(entries[1]["webhook"]["status"], 500, "{:#}", entries[1]);
    assert_eq!(entries[1]["webhook"]["name"], "smoke");

    let bodies = hooks.bodies("/pre");
    assert_eq!(bodies.len(), 1, "called once: {bodies:#?}");
    let b = &bodies[0];
    assert_eq!(
        (&b["type"], &b["service"], &b["from"], &b["to"]),
        (
            &json!("pre-rollout"),
            &json!("qotm"),
            &json!("v1"),
            &json!("v2")
        )
    );
    assert_eq!(b["weights"]["v2"], 0, "{b:#}");
}

/// Starts a canary over the admin API, as a stack's `canary:` section or
/// a deploy tool would give it.
async fn start_over_the_api(serin: &Serin, body: Value) -> Value {
    let r = client()
        .post(serin.admin_url("/canary/qotm/start"))
        .json(&body)
        .send()
        .await
        .unwrap_or_else(|e| panic!("start: {e}"));
    let code = r.status().as_u16();
    let v: Value = r.json().await.unwrap_or_else(|e| panic!("start: {e}"));
    assert_eq!(code, 200, "{v:#}");
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_confirm_promotion_gate_holds_the_last_step_until_it_answers_2xx() {
    let hooks = Receiver::start(403).await;
    let v1 = Qotm::start("v1", &[]);
    let v2 = Qotm::start("v2", &[]);
    let serin = proxy(&config(&v1, &v2));
    let load = load(&serin);
    start_over_the_api(
        &serin,
        json!({
            "to": "v2", "steps": [50, 100], "interval": "1s", "min_requests": 20,
            "max_latency_ratio": 50, "inconclusive_limit": 1000,
            "webhooks": [{
                "name": "change-window", "type": "confirm-promotion",
                "url": format!("{}/gate", hooks.url), "timeout": "5s",
                "metadata": {"ticket": "CHG-1"},
            }],
        }),
    )
    .await;
    let held = wait_status(&serin, |v| v["waiting"]["gate"] == "confirm-promotion").await;
    assert_eq!(held["step"], 1, "{held:#}");
    // Polled again at each window while it holds, the canary at its last
    // weights and still judged.
    let polled = hooks.wait_for("/gate", 3).await;
    let v = status(&serin).await;
    assert_eq!(v["phase"], "Progressing", "{v:#}");
    assert_eq!(canary_weights(&v), (0, 100));
    assert_eq!(route_weights(&serin).await, (0, 100));
    assert!(
        v["step_label"]
            .as_str()
            .is_some_and(|s| s.contains("waiting for confirm-promotion")),
        "{v:#}"
    );
    let (code, out) = cli(&serin, &["status", "qotm"]).await;
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("waiting for  confirm-promotion webhook `change-window` (answered 403)"),
        "{out}"
    );
    let gate = |g: &'static str| format!("gate=\"{g}\"");
    assert_eq!(
        series_value(
            &serin,
            "serin_canary_waiting",
            &[&gate("confirm-promotion")]
        )
        .await,
        Some(1.0)
    );
    assert_eq!(
        series_value(&serin, "serin_canary_waiting", &[&gate("approval")]).await,
        Some(0.0)
    );
    let b = &polled[0];
    assert_eq!(b["type"], "confirm-promotion", "{b:#}");
    assert_eq!(b["metadata"]["ticket"], "CHG-1", "{b:#}");
    assert_eq!(b["weights"]["v2"], 100, "{b:#}");
    assert!(b["last_window"]["checks"].as_array().is_some(), "{b:#}");

    hooks.answer(200);
    let done = wait_status(&serin, |v| v["phase"] != "Progressing").await;
    load.stop().await;
    assert_eq!(done["phase"], "Promoted", "{done:#}");
    assert!(done.get("waiting").is_none(), "{done:#}");
    let entries = audit(&serin);
    let d = decisions(&entries);
    assert!(d.contains(&"wait".to_string()), "{d:?}");
    assert_eq!(d.last().map(String::as_str), Some("promote"), "{d:?}");
    let answers: Vec<&Value> = entries
        .iter()
        .filter(|e| e["decision"] == "webhook")
        .map(|e| &e["webhook"]["status"])
        .collect();
    assert_eq!(answers.first(), Some(&&json!(403)), "{answers:?}");
    assert_eq!(answers.last(), Some(&&json!(200)), "{answers:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notification_receiver_gets_every_transition_in_order() {
    let hooks = Receiver::start(200).await;
    let v1 = Qotm::start("v1", &[]);
    let v2 = Qotm::start("v2", &[]);
    let serin = proxy(&config(&v1, &v2));
    let load = load(&serin);
    let slack = format!("{}/slack", hooks.url);
    let generic = format!("{}/json;format=json", hooks.url);
    let post = format!("post-rollout={}/post", hooks.url);
    let (code, out) = start(
        &serin,
        "20,50,100",
        &[
            "--notify",
            &slack,
            "--notify",
            &generic,
            "--webhook",
            &post,
            "--watch",
        ],
    )
    .await;
    load.stop().await;
    assert_eq!(code, 0, "promoted:\n{out}");
    // start, the steps to 50% and 100%, the promotion.
    let texts: Vec<String> = hooks
        .wait_for("/slack", 4)
        .await
        .iter()
        .map(|b| b["text"].as_str().unwrap_or("?").to_string())
        .collect();
    let said = ["started", "moved on", "moved on", "was promoted"];
    assert_eq!(texts.len(), said.len(), "{texts:#?}");
    for (text, what) in texts.iter().zip(said) {
        assert!(
            text.starts_with(&format!("The canary of qotm (v1 → v2) {what}")),
            "{what}: {texts:#?}"
        );
    }
    assert!(texts[3].contains("takes all the traffic"), "{texts:#?}");
    let events: Vec<Value> = hooks
        .wait_for("/json", 4)
        .await
        .iter()
        .map(|b| b["event"].clone())
        .collect();
    assert_eq!(
        events,
        [
            json!("start"),
            json!("step"),
            json!("step"),
            json!("promotion")
        ]
    );
    let last = hooks.bodies("/json").pop().unwrap_or_default();
    assert_eq!(
        (&last["weights"]["v2"], &last["service"]),
        (&json!(100), &json!("qotm"))
    );
    // The post-rollout webhook is told of the promotion, and the audit log
    // keeps its call.
    let post = hooks.wait_for("/post", 1).await;
    assert_eq!(
        (&post[0]["type"], &post[0]["phase"]),
        (&json!("post-rollout"), &json!("Promoted"))
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    while !audit(&serin)
        .iter()
        .any(|e| e["decision"] == "webhook" && e["webhook"]["type"] == "post-rollout")
    {
        assert!(Instant::now() < deadline, "{:#?}", audit(&serin));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notification_that_fails_is_retried_and_still_arrives_in_order() {
    // The receiver fails the first try; the test lets it answer 200 once
    // it was reached.
    let flaky = Receiver::start(503).await;
    let v1 = Qotm::start("v1", &[]);
    let v2 = Qotm::start("v2", &[]);
    let serin = proxy(&config(&v1, &v2));
    let load = load(&serin);
    let target = format!("{}/n;format=json", flaky.url);
    let (code, out) = start(&serin, "50,100", &["--notify", &target]).await;
    assert_eq!(code, 0, "{out}");
    flaky.wait_for("/n", 1).await;
    flaky.answer(200);
    let done = wait_status(&serin, |v| v["phase"] != "Progressing").await;
    load.stop().await;
    assert_eq!(done["phase"], "Promoted", "{done:#}");
    let wanted = [json!("start"), json!("step"), json!("promotion")];
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut events: Vec<Value> = flaky
            .bodies("/n")
            .iter()
            .map(|b| b["event"].clone())
            .collect();
        // The first message came more than once: once refused, then again.
        events.dedup();
        if events == wanted {
            break;
        }
        assert!(Instant::now() < deadline, "{events:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(flaky.bodies("/n").len() > wanted.len(), "retried");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_confirm_rollout_gate_keeps_all_traffic_on_the_baseline_until_it_answers_2xx() {
    let hooks = Receiver::start(403).await;
    let v1 = Qotm::start("v1", &[]);
    let v2 = Qotm::start("v2", &[]);
    let serin = proxy(&config(&v1, &v2));
    let load = load(&serin);
    let hook = format!("confirm-rollout={}/go;name=go", hooks.url);
    let (code, out) = start(&serin, "50,100", &["--webhook", &hook]).await;
    assert_eq!(code, 0, "{out}");
    wait_status(&serin, |v| v["waiting"]["gate"] == "confirm-rollout").await;
    // Polled each interval; no traffic moves meanwhile.
    hooks.wait_for("/go", 3).await;
    let v = status(&serin).await;
    assert_eq!(v["phase"], "Progressing", "{v:#}");
    assert_eq!(canary_weights(&v), (100, 0));
    assert_eq!(route_weights(&serin).await, (100, 0));
    assert!(
        v["step_label"]
            .as_str()
            .is_some_and(|s| s.starts_with("before the rollout")),
        "{v:#}"
    );
    hooks.answer(200);
    let moved = wait_status(&serin, |v| v["weights"]["v2"] == 50).await;
    assert!(moved.get("waiting").is_none(), "{moved:#}");
    let done = wait_status(&serin, |v| v["phase"] != "Progressing").await;
    load.stop().await;
    assert_eq!(done["phase"], "Promoted", "{done:#}");
    let d = decisions(&audit(&serin));
    assert_eq!(
        d.get(..2),
        Some(&["start".to_string(), "webhook".to_string()][..]),
        "{d:?}"
    );
    assert!(d.contains(&"wait".to_string()), "{d:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serin_canary_approve_opens_the_approval_gate_even_after_a_sigkill() {
    let v1 = Qotm::start("v1", &[]);
    let v2 = Qotm::start("v2", &[]);
    let mut first = proxy(&config(&v1, &v2));
    let load1 = load(&first);
    let (code, out) = start(&first, "50,100", &["--approval"]).await;
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("approval     needed before the promotion"),
        "{out}"
    );
    let held = wait_status(&first, |v| v["waiting"]["gate"] == "approval").await;
    assert_eq!(canary_weights(&held), (0, 100));
    load1.stop().await;

    // The gate is kept in the state file: a SIGKILL does not open it.
    first.signal("KILL");
    assert_eq!(first.wait(Duration::from_secs(10)), None, "killed");
    let config = first.config.display().to_string();
    let second = Serin::spawn(
        SERIN,
        &["proxy", "--config", &config, "--admin", "127.0.0.1:0"],
        &first.dir,
        &first.config,
    );
    let load2 = load(&second);
    let after = status(&second).await;
    assert_eq!(after["phase"], "Progressing", "{after:#}");
    assert_eq!(after["waiting"]["gate"], "approval", "{after:#}");
    assert_eq!(route_weights(&second).await, (0, 100));

    let (code, out) = cli(&second, &["approve", "qotm"]).await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("approved over the API"), "{out}");
    let done = wait_status(&second, |v| v["phase"] != "Progressing").await;
    load2.stop().await;
    assert_eq!(done["phase"], "Promoted", "{done:#}");
    let d = decisions(&audit(&second));
    let approve = d.iter().position(|d| d == "approve");
    assert!(approve.is_some(), "{d:?}");
    assert_eq!(d.last().map(String::as_str), Some("promote"), "{d:?}");

    // Nothing left to approve.
    let (code, out) = cli(&second, &["approve", "qotm"]).await;
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("it is Promoted"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollout_webhook_answering_500_is_a_failed_check_that_rolls_back() {
    let hooks = Receiver::start(500).await;
    let v1 = Qotm::start("v1", &[]);
    let v2 = Qotm::start("v2", &[]);
    let serin = proxy(&config(&v1, &v2));
    let load = load(&serin);
    let hook = format!("rollout={}/smoke;name=smoke-test", hooks.url);
    let (code, out) = start(
        &serin,
        "20,50,100",
        &["--webhook", &hook, "--failures", "1", "--watch"],
    )
    .await;
    load.stop().await;
    assert_eq!(code, 2, "rolled back:\n{out}");
    assert!(
        out.contains("smoke-test 500 (200 to 299) fail"),
        "--watch shows it: {out}"
    );
    let v = status(&serin).await;
    assert_eq!(route_weights(&serin).await, (100, 0));
    let checks = v["last_analysis"]["checks"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let smoke = checks
        .iter()
        .find(|c| c["name"] == "smoke-test")
        .unwrap_or_else(|| panic!("no smoke-test check: {v:#}"));
    assert_eq!(smoke["verdict"], "fail", "{smoke:#}");
    assert_eq!(smoke["value"], 500.0, "{smoke:#}");
    assert!(
        v["message"]
            .as_str()
            .is_some_and(|m| m.contains("rollout webhook `smoke-test` answered 500")),
        "{v:#}"
    );
    assert!(!hooks.bodies("/smoke").is_empty());
}

/// A test CA in `dir`, and a receiver certificate for 127.0.0.1 it signs.
fn receiver_certificate(dir: &std::path::Path, ca: &str) -> (Ca, (PathBuf, PathBuf)) {
    let ca = Ca::new(dir, ca);
    let cert = ca.sign("receiver", &leaf("receiver", &["127.0.0.1"]));
    (ca, cert)
}

/// Webhooks and notifications over https (Slack's incoming webhooks are
/// https only): serin trusts the receiver's test CA through
/// `SSL_CERT_FILE`, as it would a private CA; the `rollout` webhook passes
/// each window and every transition is told.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_webhooks_and_notifications_reach_a_receiver_serin_trusts() {
    let dir = TempDir::new("https-hooks");
    let (ca, cert) = receiver_certificate(dir.path(), "hooks-ca");
    let (hooks, refused) = Receiver::start_tls(200, &cert).await;
    assert!(hooks.url.starts_with("https://127.0.0.1:"), "{}", hooks.url);
    let v1 = Qotm::start("v1", &[]);
    let v2 = Qotm::start("v2", &[]);
    let ca_file = ca.pem.display().to_string();
    let serin = Serin::proxy_with_env(
        SERIN,
        &config(&v1, &v2),
        &[("SSL_CERT_FILE", ca_file.as_str())],
    );
    let load = load(&serin);
    let hook = format!("rollout={}/smoke;name=smoke-test", hooks.url);
    let notify = format!("{}/json;format=json", hooks.url);
    let (code, out) = start(
        &serin,
        "50,100",
        &["--webhook", &hook, "--notify", &notify, "--watch"],
    )
    .await;
    load.stop().await;
    assert_eq!(code, 0, "promoted:\n{out}");
    assert!(!hooks.bodies("/smoke").is_empty(), "rollout webhook called");
    let events: Vec<Value> = hooks
        .wait_for("/json", 3)
        .await
        .iter()
        .map(|b| b["event"].clone())
        .collect();
    assert_eq!(events, [json!("start"), json!("step"), json!("promotion")]);
    assert_eq!(refused.load(Ordering::SeqCst), 0, "no handshake refused");
}

/// A receiver whose certificate serin cannot verify (signed by a CA serin
/// does not trust) is never called: the handshake fails, so the `rollout`
/// webhook is a failed check and the canary rolls back, saying why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_https_webhook_serin_cannot_verify_is_a_failed_check_that_rolls_back() {
    let dir = TempDir::new("https-untrusted");
    let (_trusted, _) = receiver_certificate(dir.path(), "trusted-ca");
    let other = TempDir::new("https-other-ca");
    let (_unknown, cert) = receiver_certificate(other.path(), "unknown-ca");
    let (hooks, refused) = Receiver::start_tls(200, &cert).await;
    let v1 = Qotm::start("v1", &[]);
    let v2 = Qotm::start("v2", &[]);
    let trusted = dir.path().join("trusted-ca.pem").display().to_string();
    let serin = Serin::proxy_with_env(
        SERIN,
        &config(&v1, &v2),
        &[("SSL_CERT_FILE", trusted.as_str())],
    );
    let load = load(&serin);
    let hook = format!("rollout={}/smoke;name=smoke-test", hooks.url);
    let (code, out) = start(
        &serin,
        "50,100",
        &["--webhook", &hook, "--failures", "1", "--watch"],
    )
    .await;
    load.stop().await;
    assert_eq!(code, 2, "rolled back:\n{out}");
    assert_eq!(route_weights(&serin).await, (100, 0));
    assert!(hooks.bodies("/smoke").is_empty(), "never reached");
    assert!(
        refused.load(Ordering::SeqCst) > 0,
        "the handshake was refused"
    );
    let v = status(&serin).await;
    let smoke = v["last_analysis"]["checks"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["name"] == "smoke-test").cloned())
        .unwrap_or_else(|| panic!("no smoke-test check: {v:#}"));
    assert_eq!(smoke["verdict"], "fail", "{smoke:#}");
    assert!(
        v["message"]
            .as_str()
            .is_some_and(|m| m.contains("smoke-test") && m.contains("certificate")),
        "the message names the webhook and the certificate: {v:#}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_post_rollout_call_cut_by_a_sigkill_is_made_again_after_the_restart() {
    let hooks = Receiver::start(200).await;
    // The first call is still waiting for its answer when serin dies.
    hooks.delay(Duration::from_secs(60));
    let v1 = Qotm::start("v1", &[]);
    let v2 = Qotm::start("v2", &[]);
    let mut first = proxy(&config(&v1, &v2));
    let load1 = load(&first);
    let post = format!("post-rollout={}/post;timeout=90s", hooks.url);
    let (code, out) = start(&first, "100", &["--webhook", &post, "--watch"]).await;
    load1.stop().await;
    assert_eq!(code, 0, "promoted:\n{out}");
    hooks.wait_for("/post", 1).await;
    let v = status(&first).await;
    assert_eq!(v["post_rollout_pending"], true, "{v:#}");

    first.signal("KILL");
    assert_eq!(first.wait(Duration::from_secs(10)), None, "killed");
    hooks.delay(Duration::ZERO);
    let config = first.config.display().to_string();
    let second = Serin::spawn(
        SERIN,
        &["proxy", "--config", &config, "--admin", "127.0.0.1:0"],
        &first.dir,
        &first.config,
    );
    let again = hooks.wait_for("/post", 2).await;
    assert_eq!(again[1]["phase"], "Promoted", "{again:#?}");
    let done = wait_status(&second, |v| v.get("post_rollout_pending").is_none()).await;
    assert_eq!(done["phase"], "Promoted", "{done:#}");
    let called = audit(&second)
        .iter()
        .filter(|e| e["decision"] == "webhook" && e["webhook"]["type"] == "post-rollout")
        .count();
    assert_eq!(called, 1, "the cut call left no line; the second one did");
}

/// serin's built-in load tester (`serin demo loadtester`), a webhook
/// target like Flagger's: its address.
fn load_tester() -> (Program, String) {
    let program = Program::demo(&["loadtester"]);
    let url = format!("http://{}/", program.addr());
    (program, url)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_no_user_reaches_is_driven_by_the_built_in_load_tester_and_promoted() {
    let (_tester, tester) = load_tester();
    let v1 = Qotm::start("v1", &[]);
    let v2 = Qotm::start("v2", &[]);
    let serin = proxy(&config(&v1, &v2));
    // The test itself sends nothing: every request the canary is judged on
    // comes from the load tester, started by the first window's `rollout`
    // call and renewed by each one after.
    start_over_the_api(
        &serin,
        json!({
            "to": "v2", "steps": [50, 100], "interval": "1s", "min_requests": 20,
            "max_latency_ratio": 50, "inconclusive_limit": 1000,
            "webhooks": [
                {
                    "name": "load", "type": "rollout", "url": tester,
                    "metadata": {"url": format!("{}/", serin.url("web")), "rate": "100", "duration": "30s"},
                },
                {
                    "name": "stop-load", "type": "post-rollout", "url": tester,
                    "metadata": {"stop": "true"},
                },
            ],
        }),
    )
    .await;
    let done = wait_status(&serin, |v| v["phase"] != "Progressing").await;
    assert_eq!(done["phase"], "Promoted", "{done:#}");
    assert_eq!(route_weights(&serin).await, (0, 100));
    let requests = done["last_analysis"]["canary"]["requests"]
        .as_f64()
        .unwrap_or(0.0);
    assert!(requests >= 20.0, "the last window had load: {done:#}");

    let entries = audit(&serin);
    let calls: Vec<&Value> = entries
        .iter()
        .filter(|e| e["decision"] == "webhook" && e["webhook"]["name"] == "load")
        .map(|e| &e["webhook"]["status"])
        .collect();
    // 202 when the load starts, 200 each time a window renews it.
    assert_eq!(calls.first(), Some(&&json!(202)), "{entries:#?}");
    assert!(calls[1..].iter().all(|s| **s == json!(200)), "{calls:?}");
    // The post-rollout call stops it.
    let stopped = wait_for_loads(&tester, |loads| loads.is_empty()).await;
    assert_eq!(stopped, json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pre_rollout_load_test_that_v2_fails_keeps_all_traffic_on_the_baseline() {
    let (_tester, tester) = load_tester();
    let v1 = Qotm::start("v1", &[]);
    let v2 = Qotm::start("v2", &["--error-rate", "1"]);
    let serin = proxy(&config(&v1, &v2));
    let load = load(&serin);
    // The test goes to v2 itself, before any user does: the gate waits
    // for the load's end and answers its verdict.
    start_over_the_api(
        &serin,
        json!({
            "to": "v2", "steps": [50, 100], "interval": "1s", "min_requests": 20,
            "max_latency_ratio": 50, "inconclusive_limit": 1000,
            "webhooks": [{
                "name": "smoke", "type": "pre-rollout", "url": tester, "timeout": "10s",
                "metadata": {
                    "url": format!("http://{}/", v2.addr), "rate": "50", "duration": "1s",
                    "wait": "true", "maxErrorRate": "1%",
                },
            }],
        }),
    )
    .await;
    let v = wait_status(&serin, |v| v["phase"] != "Progressing").await;
    load.stop().await;
    assert_eq!(v["phase"], "RolledBack", "{v:#}");
    assert_eq!(canary_weights(&v), (100, 0));
    assert_eq!(route_weights(&serin).await, (100, 0));
    let message = v["message"].as_str().unwrap_or("");
    assert!(
        message.contains("`smoke`") && message.contains("answered 500"),
        "{v:#}"
    );
    let entries = audit(&serin);
    assert_eq!(
        decisions(&entries),
        ["start", "webhook", "rollback"],
        "{entries:#?}"
    );
    let answer = entries[1]["webhook"]["answer"].as_str().unwrap_or("");
    assert!(
        answer.starts_with("failed: ") && answer.contains("requests failed (5xx or no answer)"),
        "the verdict says why: {:#}",
        entries[1]
    );
    for e in &entries {
        assert_eq!(e["to"]["v2"], 0, "traffic never moved: {e:#}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_load_tester_refuses_what_it_cannot_do_and_says_which_key() {
    let (_tester, tester) = load_tester();
    let call = |metadata: Value| {
        let tester = tester.clone();
        async move {
            let r = client()
                .post(&tester)
                .json(&json!({"name": "load", "service": "qotm", "metadata": metadata}))
                .send()
                .await
                .unwrap_or_else(|e| panic!("POST: {e}"));
            let code = r.status().as_u16();
            (code, r.text().await.unwrap_or_default())
        }
    };
    for (metadata, words) in [
        (json!({}), "no `url`"),
        (
            json!({"url": "http://127.0.0.1:1/", "rate": 5000}),
            "`rate`",
        ),
        (
            json!({"url": "http://127.0.0.1:1/", "durtion": "1s"}),
            "`durtion`",
        ),
    ] {
        let (code, body) = call(metadata.clone()).await;
        assert_eq!(code, 400, "{metadata}: {body}");
        assert!(body.contains(words), "{metadata}: {body}");
    }
    let r = client()
        .post(&tester)
        .body("not json")
        .send()
        .await
        .unwrap_or_else(|e| panic!("POST: {e}"));
    assert_eq!(r.status().as_u16(), 400);
    // Nothing was started by any of them.
    assert_eq!(wait_for_loads(&tester, |_| true).await, json!([]));
    // A target that refuses connections fails a waiting test.
    let (code, body) = call(json!({
        "url": "http://127.0.0.1:1/", "rate": 20, "duration": "500ms", "wait": true,
    }))
    .await;
    assert_eq!(code, 500, "{body}");
    assert!(body.starts_with("failed: "), "{body}");
}

/// The load tester's `GET /loads`, once `cond` holds (up to 30 s).
async fn wait_for_loads(tester: &str, cond: impl Fn(&Vec<Value>) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let v: Value = client()
            .get(format!("{tester}loads"))
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET /loads: {e}"))
            .json()
            .await
            .unwrap_or_else(|e| panic!("GET /loads: {e}"));
        let loads = v["loads"].as_array().cloned().unwrap_or_default();
        if cond(&loads) {
            return Value::Array(loads);
        }
        assert!(
            Instant::now() < deadline,
            "the loads never got there: {v:#}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
