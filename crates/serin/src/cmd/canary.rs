//! `serin canary`: start, watch and steer canary releases in a running
//! serin, through its admin API. The canary itself runs inside that serin
//! (crates/serin-canary), so closing this terminal changes nothing.

use std::collections::BTreeMap;
use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand};
use serde_json::{Value, json};
use serin_canary::Status;
use serin_canary::api::CanaryList;

use super::admin_client::AdminClient;
use super::canary_status::{follow, print_status};
use crate::cli::AdminTarget;

/// `println!` that ignores a closed stdout (`serin canary status | head`).
macro_rules! out {
    () => {{
        let _ = writeln!(std::io::stdout());
    }};
    ($($arg:tt)*) => {{
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

#[derive(Debug, Subcommand)]
pub enum CanaryCommand {
    /// Start a canary release of SERVICE: move traffic to the new version
    /// step by step, comparing it with the baseline at each step.
    ///
    /// At each step the weights of every route rule that holds both versions
    /// become canary STEP% / baseline (100-STEP)%. After one interval the
    /// window is judged: fewer than --min-requests canary requests is
    /// inconclusive (no advance; --inconclusive-limit of them in a row halt
    /// the canary); an error rate above --max-error-rate or a p99 more than
    /// --max-latency-ratio times the baseline's is a failed check (--failures
    /// of them roll back: all traffic to the baseline); otherwise the canary
    /// advances, and passing the last step promotes it (it takes all the
    /// traffic).
    ///
    /// Blue/green is `--steps 100`: all traffic switches to the new version,
    /// it is judged for one interval, and it stays (promoted) or everything
    /// goes back (rolled back).
    ///
    /// With --header-step (or --cookie-step), a first step sends only the
    /// requests carrying that header (or cookie) to the canary, everything
    /// else to the baseline, and judges it like any step before the weights
    /// move.
    ///
    /// Options not given come from the service's `canary:` section in the
    /// stack file, then from the defaults shown here. With --watch, exits 0
    /// when the canary is promoted, 2 when it is rolled back, 3 when it
    /// halts.
    Start(Box<StartArgs>),

    /// Show canaries: phase, step, weights, the last window's figures and,
    /// with Prometheus, the queries.
    Status {
        /// One service; none: every canary.
        service: Option<String>,
        /// Follow the canary until it ends, like `start --watch`.
        #[arg(long, requires = "service")]
        watch: bool,
        /// Print the raw JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        admin: AdminTarget,
    },

    /// Stop judging windows; the weights stay where they are.
    Pause {
        service: String,
        #[command(flatten)]
        admin: AdminTarget,
    },

    /// Go on with a paused or halted canary at its step; a new window
    /// starts.
    Resume {
        service: String,
        #[command(flatten)]
        admin: AdminTarget,
    },

    /// Give the canary all the traffic now, without further analysis.
    Promote {
        service: String,
        #[command(flatten)]
        admin: AdminTarget,
    },

    /// Roll back now: all traffic to the baseline.
    Abort {
        service: String,
        #[command(flatten)]
        admin: AdminTarget,
    },

    /// Open the approval gate of a canary started with --approval: the
    /// next window of its last step that passes promotes it.
    Approve {
        service: String,
        #[command(flatten)]
        admin: AdminTarget,
    },

    /// Run a canary in a Kubernetes cluster, in this process, until it is
    /// promoted (exit 0), rolled back (2) or halted (3): the same steps and
    /// checks as `start`, with the weights written to the HTTPRoute's
    /// backendRefs and the figures from Prometheus (--prometheus).
    ///
    /// The canary's state is kept in the HTTPRoute's annotation
    /// serin.io/canary-state: run the same command again after a restart
    /// and it resumes at the step it was at. Header, cookie and mirror
    /// steps need serin's own proxy and are not available here, nor is
    /// --approval (there is no admin API to approve through); webhooks
    /// and notifications are.
    Run(Box<super::canary_kube::RunArgs>),
}

#[derive(Debug, Args)]
pub struct StartArgs {
    #[command(flatten)]
    pub canary: CanaryArgs,

    /// Follow the canary until it ends: exit 0 when promoted, 2 when rolled
    /// back, 3 when halted.
    #[arg(long)]
    pub watch: bool,

    #[command(flatten)]
    pub admin: AdminTarget,
}

/// What a canary is and how it is judged: `start` and `run` alike.
#[derive(Debug, Args)]
pub struct CanaryArgs {
    /// The service, as named in the stack or config file.
    pub service: String,

    /// The new version (the canary).
    #[arg(long, value_name = "VERSION")]
    pub to: String,

    /// The version it replaces (the baseline); default: the one other
    /// version that shares route rules with the canary.
    #[arg(long, value_name = "VERSION")]
    pub from: Option<String>,

    /// The canary's weight at each step, in percent [default: 5,25,50,100].
    #[arg(long, value_name = "PERCENT,...", value_delimiter = ',')]
    pub steps: Option<Vec<u32>>,

    /// How long each step's window lasts [default: 30s].
    #[arg(long, value_name = "DURATION", value_parser = serin_config::parse_duration)]
    pub interval: Option<Duration>,

    /// The highest canary error rate (5xx) that passes, e.g. 1% or 0.01
    /// [default: 1%].
    #[arg(long, value_name = "RATE", value_parser = serin_config::stack::parse_rate)]
    pub max_error_rate: Option<f64>,

    /// The highest p99(canary) / p99(baseline) that passes [default: 1.5].
    #[arg(long, value_name = "RATIO")]
    pub max_latency_ratio: Option<f64>,

    /// p99s under this count as this much in the ratio, so that two fast
    /// versions are not told apart by noise [default: 10ms].
    #[arg(long, value_name = "DURATION", value_parser = serin_config::parse_duration)]
    pub latency_floor: Option<Duration>,

    /// Fewer canary requests in a window make it inconclusive [default: 50].
    #[arg(long, value_name = "N")]
    pub min_requests: Option<u64>,

    /// Failed checks that roll the canary back [default: 2].
    #[arg(long, value_name = "N")]
    pub failures: Option<u32>,

    /// Inconclusive windows in a row that halt the canary [default: 3].
    #[arg(long, value_name = "N")]
    pub inconclusive_limit: Option<u32>,

    /// Judge with PromQL over this Prometheus instead of serin's own
    /// counters, e.g. http://127.0.0.1:9090.
    #[arg(long, value_name = "URL")]
    pub prometheus: Option<String>,

    /// Replace a PromQL template of serin's figures: requests, error_rate,
    /// client_error_rate, latency_p50, latency_p90 or latency_p99;
    /// {{service}}, {{version}}, {{interval}} and {{namespace}} are filled
    /// in.
    #[arg(long = "query", value_name = "NAME=PROMQL", value_parser = parse_query)]
    pub queries: Vec<(String, String)>,

    /// First a step where only requests with this header reach the canary
    /// (weights stay at 0 until it passes), e.g. x-canary=always.
    #[arg(long, value_name = "NAME=VALUE", conflicts_with = "cookie_step")]
    pub header_step: Option<String>,

    /// The same with a cookie, e.g. canary=always.
    #[arg(long, value_name = "NAME=VALUE")]
    pub cookie_step: Option<String>,

    /// The same for requests to this host (their Host or :authority, any
    /// port, any case), e.g. preview.qotm.local: a blue/green preview. One
    /// match step: not with --header-step or --cookie-step.
    #[arg(
        long,
        value_name = "HOST",
        conflicts_with_all = ["header_step", "cookie_step"]
    )]
    pub host_step: Option<String>,

    /// Before any live traffic (and before a header or cookie step), a step
    /// where the canary gets shadow copies of PERCENT of the baseline's
    /// requests and is judged by its shadow answers (those that differ from
    /// the baseline's or fail count against max-error-rate), e.g. 20.
    #[arg(long, value_name = "PERCENT")]
    pub mirror_step: Option<f64>,

    /// A check of your own, judged with the built-in ones (requests,
    /// error-rate, latency-ratio; one of the same name replaces it):
    /// NAME=figure:FIGURE;max=X or NAME=promql:TEMPLATE;min=X;max=Y, e.g.
    /// 'not-found=figure:errorShare4xx;max=1%' or
    /// 'queue=promql:max(queue_depth{service="{{service}}"});max=100'.
    /// FIGURE: requests, requestRate, errorShare4xx, errorShare5xx, p50,
    /// p90, p99, or any of them + Ratio (the canary's over the
    /// baseline's). A PromQL check needs --prometheus; a query that
    /// returns nothing is inconclusive. Repeat for more.
    #[arg(
        long = "check",
        value_name = "NAME=SOURCE;max=X",
        value_parser = serin_config::stack::canary_check::parse_check_flag
    )]
    pub checks: Vec<serin_canary::check::CanaryCheck>,

    /// A webhook (Flagger's types): TYPE=URL[;name=NAME][;timeout=D]
    /// [default timeout: 10s]. pre-rollout: called once before any traffic
    /// moves; a non-2xx answer rolls the canary back (all traffic stays on
    /// the baseline). rollout: called at the end of each window; non-2xx is
    /// a failed check. confirm-rollout: a gate before the first step,
    /// polled each interval until 2xx. confirm-promotion: a gate at the
    /// last step, polled each interval until 2xx while the windows go on
    /// being judged. post-rollout: told of the promotion or rollback. The
    /// name defaults to the type; metadata is for the stack file and the
    /// API. Repeat for more.
    #[arg(
        long = "webhook",
        value_name = "TYPE=URL",
        value_parser = serin_config::stack::canary_hook::parse_webhook_flag
    )]
    pub webhooks: Vec<serin_canary::settings::Webhook>,

    /// Wait for `serin canary approve SERVICE` before the promotion.
    #[arg(long)]
    pub approval: bool,

    /// Tell URL of the start, each step, a halt, the rollback and the
    /// promotion: URL[;format=slack|json] [default format: slack, i.e.
    /// {"text": ...}]. Repeat for more.
    #[arg(
        long = "notify",
        value_name = "URL",
        value_parser = serin_config::stack::canary_hook::parse_notify_flag
    )]
    pub notify: Vec<serin_canary::settings::NotifyTarget>,
}

fn parse_query(s: &str) -> Result<(String, String), String> {
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| format!("`{s}` is not NAME=PROMQL"))?;
    Ok((k.trim().to_string(), v.to_string()))
}

pub fn run(cmd: CanaryCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        CanaryCommand::Start(args) => start(*args),
        CanaryCommand::Status {
            service,
            watch: follow,
            json,
            admin,
        } => {
            let client = AdminClient::new(&admin)?;
            status(&client, service.as_deref(), follow, json)
        }
        CanaryCommand::Pause { service, admin } => act(&admin, &service, "pause"),
        CanaryCommand::Resume { service, admin } => act(&admin, &service, "resume"),
        CanaryCommand::Promote { service, admin } => act(&admin, &service, "promote"),
        CanaryCommand::Abort { service, admin } => act(&admin, &service, "abort"),
        CanaryCommand::Approve { service, admin } => act(&admin, &service, "approve"),
        CanaryCommand::Run(args) => super::canary_kube::run(*args),
    }
}

/// `serin canary status [SERVICE] [--watch] [--json]`.
fn status(
    client: &AdminClient,
    service: Option<&str>,
    follow: bool,
    json: bool,
) -> anyhow::Result<ExitCode> {
    if let (true, Some(service)) = (follow, service) {
        return watch(client, service);
    }
    let path = service.map_or_else(|| "/canary".to_string(), |s| format!("/canary/{s}"));
    if json {
        // As the API answered it, fields this serin does not know included.
        let v = client.get(&path)?;
        out!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(ExitCode::SUCCESS);
    }
    let all = match service {
        Some(_) => vec![client.get_as::<Status>(&path)?],
        None => client.get_as::<CanaryList>(&path)?.canaries,
    };
    if all.is_empty() {
        out!("no canaries");
    }
    for (i, c) in all.iter().enumerate() {
        if i > 0 {
            out!();
        }
        print_status(c);
    }
    Ok(ExitCode::SUCCESS)
}

fn act(admin: &AdminTarget, service: &str, action: &str) -> anyhow::Result<ExitCode> {
    let client = AdminClient::new(admin)?;
    let v: Status = client.post_as(&format!("/canary/{service}/{action}"), &json!({}))?;
    print_status(&v);
    Ok(ExitCode::SUCCESS)
}

/// The start request of a canary, as `POST /canary/{service}/start` takes
/// it (and [`serin_canary::StartRequest::from_json`] reads it).
pub(crate) fn start_body(args: &CanaryArgs) -> Value {
    let mut body = serde_json::Map::new();
    body.insert("to".into(), json!(args.to));
    if let Some(v) = &args.from {
        body.insert("from".into(), json!(v));
    }
    if let Some(v) = &args.steps {
        body.insert("steps".into(), json!(v));
    }
    if let Some(v) = args.interval {
        body.insert(
            "interval".into(),
            json!(humantime::format_duration(v).to_string()),
        );
    }
    if let Some(v) = args.max_error_rate {
        body.insert("max_error_rate".into(), json!(v));
    }
    if let Some(v) = args.max_latency_ratio {
        body.insert("max_latency_ratio".into(), json!(v));
    }
    if let Some(v) = args.latency_floor {
        body.insert(
            "latency_floor".into(),
            json!(humantime::format_duration(v).to_string()),
        );
    }
    if let Some(v) = args.min_requests {
        body.insert("min_requests".into(), json!(v));
    }
    if let Some(v) = args.failures {
        body.insert("failures".into(), json!(v));
    }
    if let Some(v) = args.inconclusive_limit {
        body.insert("inconclusive_limit".into(), json!(v));
    }
    if let Some(v) = &args.prometheus {
        body.insert("prometheus".into(), json!(v));
    }
    if let Some(v) = &args.header_step {
        body.insert("header_step".into(), json!(v));
    }
    if let Some(v) = &args.cookie_step {
        body.insert("cookie_step".into(), json!(v));
    }
    if let Some(v) = &args.host_step {
        body.insert("host_step".into(), json!(v));
    }
    if let Some(v) = args.mirror_step {
        body.insert("mirror_step".into(), json!(v));
    }
    if !args.checks.is_empty() {
        body.insert("checks".into(), json!(args.checks));
    }
    if !args.webhooks.is_empty() {
        body.insert("webhooks".into(), json!(args.webhooks));
    }
    if args.approval {
        body.insert("approval".into(), json!(true));
    }
    if !args.notify.is_empty() {
        body.insert("notify".into(), json!(args.notify));
    }
    if !args.queries.is_empty() {
        let q: BTreeMap<&str, &str> = args
            .queries
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        body.insert("queries".into(), json!(q));
    }
    Value::Object(body)
}

fn start(args: StartArgs) -> anyhow::Result<ExitCode> {
    let body = start_body(&args.canary);
    let client = AdminClient::new(&args.admin)?;
    let service = &args.canary.service;
    let v: Status = client.post_as(&format!("/canary/{service}/start"), &body)?;
    if args.watch {
        watch(&client, service)
    } else {
        print_status(&v);
        out!("\nfollow it with: serin canary status {service} --watch");
        Ok(ExitCode::SUCCESS)
    }
}

/// Follows a canary until it is promoted (exit 0), rolled back (2) or
/// halted (3): [`follow`] with the status from the admin API.
fn watch(client: &AdminClient, service: &str) -> anyhow::Result<ExitCode> {
    follow(|| client.get_as(&format!("/canary/{service}")))
}

/// Starts the canary controller inside a serving process: weights go to
/// `proxy`, figures come from its counters (or Prometheus, per canary),
/// state and audit log live beside `config` (`NAME.canary.json`,
/// `NAME.canary-audit.jsonl`; none: in memory only). Canaries that were
/// running when the process last stopped resume here.
pub async fn start_controller(
    proxy: &std::sync::Arc<serin_proxy::Proxy>,
    config: Option<&std::path::Path>,
    defaults: BTreeMap<String, serin_canary::Options>,
) -> anyhow::Result<serin_canary::Controller> {
    let (state_file, audit_file) = match config.map(serin_canary::files_beside) {
        Some((s, a)) => (Some(s), Some(a)),
        None => (None, None),
    };
    let controller = serin_canary::Controller::start(
        std::sync::Arc::new(super::canary_proxy::ProxySink::new(proxy.clone())),
        std::sync::Arc::new(super::canary_proxy::EmbeddedSource::new(proxy.clone())),
        serin_canary::ControllerOptions {
            state_file,
            audit_file,
            defaults,
            state_backend: None,
            namespace: None,
        },
    )
    .await
    .context("cannot start the canary controller")?;
    proxy
        .metrics()
        .add_section(Box::new(CanaryMetrics(controller.clone())));
    Ok(controller)
}

/// The canary controller's series on the proxy's `/metrics`.
struct CanaryMetrics(serin_canary::Controller);

impl std::fmt::Debug for CanaryMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CanaryMetrics")
    }
}

impl serin_proxy::metrics::MetricsSection for CanaryMetrics {
    fn encode(
        &self,
        encoder: &mut prometheus_client::encoding::DescriptorEncoder<'_>,
    ) -> std::fmt::Result {
        self.0.encode_metrics(encoder)
    }
}

/// The `canary:` sections of a stack's services, by service.
pub fn stack_defaults(
    stack: &serin_config::stack::Stack,
) -> BTreeMap<String, serin_canary::Options> {
    stack
        .services
        .iter()
        .filter_map(|s| {
            Some((
                s.name.clone(),
                serin_canary::Options::from(s.canary.as_ref()?),
            ))
        })
        .collect()
}
