//! Every flag of `serin`, defined once; help comes from these definitions.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use serin_config::proxy::admin::TOKEN_ENV;
use serin_config::proxy::defaults::ADMIN_ADDRESS;

/// serin: an L7 proxy, API gateway and sidecar with canary releases,
/// resilience and live metrics — and a local runtime that runs a whole stack
/// of services on one machine.
#[derive(Debug, Parser)]
#[command(
    name = "serin",
    version,
    propagate_version = true,
    max_term_width = 100
)]
pub struct Cli {
    /// Log format: human-readable text, or one JSON object per line.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Auto, env = "SERIN_LOG_FORMAT")]
    pub log_format: LogFormat,

    /// More logging (-v: debug, -vv: trace). RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Text in a terminal, JSON otherwise.
    Auto,
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a whole stack on this machine: its services as supervised
    /// processes, and the gateway in front of them.
    ///
    /// With no STACK, runs examples/qotm/stack.yaml (built in, so it works
    /// from any folder). Ctrl-C or SIGTERM stops everything gracefully;
    /// the services also die with serin if it is killed.
    Up(UpArgs),

    /// List the replicas of a running `serin up` (like `kubectl get pods`).
    Ps {
        #[command(flatten)]
        admin: AdminTarget,
        /// Print the raw JSON.
        #[arg(long)]
        json: bool,
    },

    /// Set the number of replicas of a service version: `serin scale qotm/v1 3`.
    Scale {
        /// SERVICE/VERSION (or SERVICE when it has one version).
        target: String,
        /// The number of replicas wanted.
        replicas: u32,
        /// Wait until the version has that many ready replicas.
        #[arg(long)]
        wait: bool,
        #[command(flatten)]
        admin: AdminTarget,
    },

    /// Restart a service version one replica at a time: a new replica is
    /// started and must be ready before an old one stops.
    Restart {
        /// SERVICE/VERSION (or SERVICE when it has one version).
        target: String,
        /// Wait until the rollout is complete.
        #[arg(long)]
        wait: bool,
        #[command(flatten)]
        admin: AdminTarget,
    },

    /// Show the logs of a service's replicas: `serin logs qotm -f`.
    Logs {
        /// SERVICE or SERVICE/VERSION; none: every service.
        target: Option<String>,
        /// Keep printing new lines as they come.
        #[arg(short, long)]
        follow: bool,
        /// Lines of history to print first.
        #[arg(long, default_value_t = 100)]
        tail: usize,
        #[command(flatten)]
        admin: AdminTarget,
    },

    /// Roll out a changed stack file to a running `serin up`.
    ///
    /// The file is checked first; when it has problems nothing changes.
    /// Changed versions roll out with their strategy (RollingUpdate with
    /// maxSurge/maxUnavailable, or Recreate); the gateway's routes change at
    /// once.
    Apply {
        /// The stack file; default: the file `serin up` was started with.
        stack: Option<PathBuf>,
        #[command(flatten)]
        admin: AdminTarget,
    },

    /// Run the proxy: from a config file, or in front of one upstream.
    ///
    /// With --config, serves the listeners, routes and services of a YAML
    /// file, reloading it when it changes, on SIGHUP, or on
    /// `POST /reload` to the admin API. With --listen and --upstream,
    /// proxies every request to one upstream with no file.
    Proxy(ProxyArgs),

    /// A container health check: GETs the running serin's admin `/ready`
    /// (no token needed) and exits 0 when it answers 200, 1 otherwise
    /// (also while it drains for shutdown).
    Healthcheck {
        #[command(flatten)]
        admin: AdminTarget,
    },

    /// Check a proxy config or stack file without running it.
    ///
    /// Prints every problem at once as FILE:LINE:COLUMN: FIELD: MESSAGE and
    /// exits 1 when there is any.
    Validate(ValidateArgs),

    /// Show or change route weights of a running serin (admin API).
    #[command(subcommand)]
    Weights(WeightsCommand),

    /// Explain what a running serin would do with a request, without
    /// sending it: the path after normalisation, the rule that matches and
    /// why, the nearest rules that do not and what differs, what runs in
    /// order, the backends with their weights and endpoints.
    ///
    /// e.g. `serin explain --host api.example.com --header x-tier=gold GET /orders`
    Explain(ExplainArgs),

    /// Watch the requests a running serin answers, live: time, method,
    /// path, status, latency, route, backend, endpoint, retries, trace id.
    ///
    /// Filtered in serin, and at most `--rate` requests a second are shown
    /// (the others are counted). Ctrl-C stops it.
    // `--version` is a filter here, not serin's version.
    #[command(disable_version_flag = true)]
    Tap(TapArgs),

    /// Canary releases in a running serin: move traffic to a new version
    /// step by step, judge it against the old one, roll back or promote.
    #[command(subcommand)]
    Canary(crate::cmd::canary::CanaryCommand),

    /// Run one of the demo services (qotm, auth, pinger, details, frontend,
    /// counter); the same program as `serin-demo`.
    Demo {
        #[command(subcommand)]
        service: serin_demo::DemoCommand,
    },

    /// Turn a stack file into another platform's objects.
    #[command(subcommand)]
    Render(RenderCommand),
}

#[derive(Debug, Args)]
pub struct ProxyArgs {
    /// The proxy config file (YAML).
    #[arg(short, long, value_name = "FILE", conflicts_with_all = ["listen", "upstream"], required_unless_present = "upstream")]
    pub config: Option<PathBuf>,

    /// Quick start: the address to listen on (with --upstream).
    #[arg(
        long,
        value_name = "ADDR",
        requires = "upstream",
        default_value = "127.0.0.1:8080"
    )]
    pub listen: Option<SocketAddr>,

    /// Quick start: the one upstream, HOST:PORT, that gets every request.
    #[arg(long, value_name = "HOST:PORT")]
    pub upstream: Option<String>,

    /// Worker threads (default: the config's `workers`, else one per CPU).
    #[arg(long, value_name = "N")]
    pub workers: Option<usize>,

    /// The admin API address (overrides the config's admin.address). Beyond
    /// loopback it needs a token (--admin-token, SERIN_ADMIN_TOKEN or
    /// admin.token), or serin does not start.
    #[arg(long, value_name = "ADDR")]
    pub admin: Option<SocketAddr>,

    /// The admin API's token (clients send `Authorization: Bearer TOKEN`);
    /// wins over the config's admin.token and stays through reloads.
    #[arg(long, value_name = "TOKEN", env = TOKEN_ENV, hide_env_values = true)]
    pub admin_token: Option<String>,

    /// Write an access log line per request (JSON with --log-format json).
    #[arg(long)]
    pub access_log: bool,

    /// Where run-time weight changes are kept (default: NAME.state.json
    /// beside the config file).
    #[arg(long, value_name = "FILE")]
    pub state_file: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct UpArgs {
    /// The stack file (default: examples/qotm/stack.yaml, built in).
    #[arg(value_name = "STACK")]
    pub stack: Option<PathBuf>,

    /// Listen on this address instead of the stack's gateway.listen.
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,

    /// Serve the admin API on this address instead of the stack's
    /// gateway.admin. Beyond loopback it needs a token (--admin-token,
    /// SERIN_ADMIN_TOKEN or gateway.adminToken), or serin does not start.
    #[arg(long, value_name = "ADDR")]
    pub admin: Option<SocketAddr>,

    /// The admin API's token (clients send `Authorization: Bearer TOKEN`);
    /// wins over the stack's gateway.adminToken. The services do not get
    /// SERIN_ADMIN_TOKEN in their environment.
    #[arg(long, value_name = "TOKEN", env = TOKEN_ENV, hide_env_values = true)]
    pub admin_token: Option<String>,

    /// Print replica logs without colours.
    #[arg(long)]
    pub no_color: bool,

    /// Watch while running: a change under a service's `watch.paths` runs
    /// its `watch.build` and rolls its versions out again (a failed build
    /// leaves them running); a change of the stack file applies it.
    #[arg(long)]
    pub watch: bool,
}

#[derive(Debug, Args)]
pub struct TapArgs {
    /// Only this route's requests.
    pub route: Option<String>,
    /// Only requests sent to this service.
    #[arg(long)]
    pub service: Option<String>,
    /// Only requests sent to this version (with `--service`, of it).
    #[arg(long, value_name = "VERSION")]
    pub version: Option<String>,
    /// Only these statuses: a class (`5xx`) or one (`404`).
    #[arg(long, value_name = "STATUS")]
    pub status: Option<String>,
    /// Only paths that begin with this.
    #[arg(long, value_name = "PREFIX")]
    pub path_prefix: Option<String>,
    /// At most this many requests a second (default 100).
    #[arg(long, value_name = "N")]
    pub rate: Option<u32>,
    /// One JSON object a line instead of text.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub admin: AdminTarget,
}

#[derive(Debug, Args)]
pub struct ExplainArgs {
    /// The request's method (GET, POST, …).
    pub method: String,
    /// The request target: a path, with a query or without.
    pub path: String,
    /// The Host the request names (default: none, so only routes without
    /// hostnames serve it).
    #[arg(long, value_name = "HOST")]
    pub host: Option<String>,
    /// A header the request carries, as NAME=VALUE (or NAME:VALUE); as
    /// often as needed.
    #[arg(long = "header", short = 'H', value_name = "NAME=VALUE", value_parser = parse_header)]
    pub headers: Vec<(String, String)>,
    /// The listener the request comes to (needed when there are several).
    #[arg(long, value_name = "NAME")]
    pub listener: Option<String>,
    /// Print the admin API's JSON instead of text.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub admin: AdminTarget,
}

fn parse_header(s: &str) -> Result<(String, String), String> {
    let (name, value) = s
        .split_once('=')
        .or_else(|| s.split_once(':'))
        .ok_or_else(|| format!("`{s}` is not NAME=VALUE"))?;
    if name.trim().is_empty() {
        return Err(format!("`{s}` names no header"));
    }
    Ok((name.trim().to_string(), value.trim().to_string()))
}

#[derive(Debug, Args)]
pub struct ValidateArgs {
    /// The proxy config (`serin proxy --config`) or stack file (`serin up`)
    /// to check. A file is read as a stack file when it has a `gateway`
    /// section, or services with keys only a stack has (`command`,
    /// `replicas`, ...) and none of the proxy config's own (`listeners`,
    /// `routes`, ...).
    #[arg(value_name = "FILE")]
    pub file: PathBuf,

    /// Print the problems as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args, Clone)]
pub struct AdminTarget {
    /// Address of the running serin's admin API.
    #[arg(
        long,
        value_name = "ADDR",
        default_value_t = ADMIN_ADDRESS,
        env = "SERIN_ADMIN"
    )]
    pub admin: SocketAddr,

    /// Admin API token, when the admin API wants one.
    #[arg(long, value_name = "TOKEN", env = TOKEN_ENV, hide_env_values = true)]
    pub token: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum WeightsCommand {
    /// Print a route's weights, rule by rule.
    Get {
        /// The route's name.
        route: String,
        #[command(flatten)]
        admin: AdminTarget,
    },
    /// Change a route's weights, e.g. `serin weights set qotm v1=90 v2=10`.
    ///
    /// A backend is named by its version, or service/version when a rule
    /// has two services with the same version name. Backends not named keep
    /// their weight. The change is kept across restarts.
    Set {
        /// The route's name.
        route: String,
        /// BACKEND=WEIGHT pairs.
        #[arg(value_name = "BACKEND=WEIGHT", required = true, value_parser = parse_weight)]
        weights: Vec<(String, u32)>,
        /// Only this rule (index from 0); default: every rule with these
        /// backends.
        #[arg(long)]
        rule: Option<usize>,
        #[command(flatten)]
        admin: AdminTarget,
    },
}

fn parse_weight(s: &str) -> Result<(String, u32), String> {
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| format!("`{s}` is not BACKEND=WEIGHT"))?;
    if k.is_empty() {
        return Err(format!("`{s}` names no backend"));
    }
    let w = v
        .parse::<u32>()
        .map_err(|_| format!("weight `{v}` is not a whole number"))?;
    Ok((k.to_string(), w))
}

#[derive(Debug, Subcommand)]
pub enum RenderCommand {
    /// Print the Kubernetes objects of a stack as one YAML stream: a
    /// Deployment and a Service per service version, a Service per service,
    /// their ConfigMaps and Secrets, the gateway (Deployment, Service,
    /// ConfigMap, RBAC) and an HTTPRoute per route with its weights.
    ///
    /// Apply with `serin render kubernetes STACK | kubectl apply -f -`, or
    /// write a Kustomize base with --output-dir.
    Kubernetes(RenderKubernetesArgs),
}

#[derive(Debug, Args)]
pub struct RenderKubernetesArgs {
    /// The stack file.
    #[arg(value_name = "STACK")]
    pub stack: PathBuf,

    /// Images are IMAGE_REPO/NAME:TAG (serin, serin-demo, or the service's
    /// name).
    #[arg(long, value_name = "IMAGE_REPO", default_value = serin_kube::DEFAULT_IMAGE_REPO)]
    pub image_repo: String,

    /// The images' tag.
    #[arg(long, value_name = "TAG", default_value = serin_kube::DEFAULT_TAG)]
    pub tag: String,

    /// Put every object in this namespace (default: none, so the one
    /// kubectl applies to).
    #[arg(long, short = 'n', value_name = "NAMESPACE")]
    pub namespace: Option<String>,

    /// Write a Kustomize base here (one file per object and a
    /// kustomization.yaml) instead of printing.
    #[arg(long, value_name = "DIR")]
    pub output_dir: Option<PathBuf>,
}
