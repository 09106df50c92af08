//! `serin proxy`: the data plane on its own, from a file or in front of one
//! upstream.

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use serin_config::proxy::{
    BackendRefConfig, ListenerConfig, ListenerLimits, LoadBalancerConfig, LogFormat, ProxyConfig,
    RouteConfig, RuleConfig, ServiceConfig, UpstreamProtocol, VersionConfig, admin, defaults,
};
use serin_discovery::Registry;
use serin_proxy::{Proxy, ProxyOptions};
use tokio::signal::unix::{Signal, SignalKind, signal};

use crate::cli::ProxyArgs;

pub fn run(args: ProxyArgs) -> anyhow::Result<ExitCode> {
    let mut config = match &args.config {
        Some(path) => match serin_config::proxy::load_proxy_config(path) {
            Ok(c) => c,
            Err(errors) => {
                eprint!("{errors}");
                return Ok(ExitCode::FAILURE);
            }
        },
        None => quick_config(&args)?,
    };
    if let Some(w) = args.workers {
        anyhow::ensure!((1..=256).contains(&w), "--workers must be from 1 to 256");
        config.workers = w;
    }
    let (command_line, token_origin) = admin_command_line(args.admin, args.admin_token.clone());
    config.admin.apply_command_line(&command_line, token_origin);
    if let Err(e) = serin_config::proxy::admin::check(&config) {
        return Ok(refuse_admin(e));
    }
    if args.access_log && config.access_log.is_none() {
        config.access_log = Some(LogFormat::Json);
    }
    let state_file = args
        .state_file
        .clone()
        .or_else(|| args.config.as_deref().map(serin_proxy::state::path_beside));
    let rt = super::control_runtime()?;
    rt.block_on(serve(config, state_file, args.config.is_some()))
}

/// The admin settings of `--admin` and `--admin-token` (or
/// `SERIN_ADMIN_TOKEN`), and where the token came from.
pub(super) fn admin_command_line(
    address: Option<std::net::SocketAddr>,
    token: Option<String>,
) -> (admin::CommandLine, admin::Origin) {
    let env = std::env::var(admin::TOKEN_ENV).ok();
    admin::CommandLine::new(address, token, env.as_deref())
}

/// Says why the admin API may not open (at its place in the file, or
/// naming the flag) and gives the exit code.
pub(super) fn refuse_admin(e: admin::Exposed) -> ExitCode {
    match e.origin {
        admin::Origin::File { .. } => eprint!("{}", e.into_config_errors()),
        _ => eprintln!("serin: error: {e}"),
    }
    ExitCode::FAILURE
}

/// One listener, one service, one catch-all route.
fn quick_config(args: &ProxyArgs) -> anyhow::Result<ProxyConfig> {
    let upstream = args.upstream.as_deref().context("--upstream is required")?;
    let addr = std::net::ToSocketAddrs::to_socket_addrs(upstream)
        .with_context(|| format!("--upstream {upstream}: not HOST:PORT"))?
        .next()
        .with_context(|| format!("--upstream {upstream} resolves to no address"))?;
    let listen = args
        .listen
        .unwrap_or(std::net::SocketAddr::from(([127, 0, 0, 1], 8080)));
    let listener = ListenerConfig {
        name: "default".into(),
        address: listen,
        tls: None,
        limits: ListenerLimits::default(),
        path_normalization: Default::default(),
        compression: None,
        client_address: None,
        proxy_protocol: None,
        span: Default::default(),
        path: "--listen".into(),
    };
    let service = ServiceConfig {
        name: "upstream".into(),
        protocol: UpstreamProtocol::Http1,
        tls: None,
        connect_timeout: defaults::CONNECT_TIMEOUT,
        load_balancer: LoadBalancerConfig {
            policy: Default::default(),
            hash_header: None,
        },
        max_idle_per_endpoint: defaults::MAX_IDLE_PER_ENDPOINT,
        circuit_breaker: Default::default(),
        outlier_detection: None,
        health_check: None,
        panic_threshold: defaults::PANIC_THRESHOLD,
        grpc_error_codes: defaults::GRPC_ERROR_CODES.to_vec(),
        pool_idle_timeout: defaults::POOL_IDLE_TIMEOUT,
        versions: vec![VersionConfig {
            name: "default".into(),
            endpoints: Some(vec![addr]),
        }],
    };
    let route = RouteConfig {
        name: "default".into(),
        listeners: vec![],
        hostnames: vec![],
        rules: vec![RuleConfig::catch_all(BackendRefConfig {
            service: "upstream".into(),
            version: "default".into(),
            weight: 1,
            filters: Default::default(),
        })],
    };
    Ok(ProxyConfig::minimal(
        vec![listener],
        vec![service],
        vec![route],
    ))
}

async fn serve(
    config: ProxyConfig,
    state_file: Option<std::path::PathBuf>,
    from_file: bool,
) -> anyhow::Result<ExitCode> {
    let mut signals = Signals::take_over()?;
    let metrics_addr = config.admin.metrics_address;
    let token_from = token_origin(&config.admin);
    let drain_timeout = config.drain_timeout;
    let canary_beside = config.source.clone();
    let proxy = match Proxy::start(
        config,
        Registry::new(),
        ProxyOptions {
            state_file,
            watch_config: from_file,
            worker_tidy: Some(crate::tidy_allocator),
        },
    ) {
        Ok(p) => p,
        Err(serin_proxy::StartError::Config(errors)) => {
            eprint!("{errors}");
            return Ok(ExitCode::FAILURE);
        }
        Err(e) => return Err(e.into()),
    };
    super::kubernetes::start(&proxy).await?;
    let canary = super::canary::start_controller(
        &proxy,
        canary_beside.as_deref(),
        std::collections::BTreeMap::new(),
    )
    .await?;
    let (stop_admin, admin_stopped) = tokio::sync::oneshot::channel::<()>();
    let (admin_bound, admin) = serin_proxy::admin::serve(
        proxy.clone(),
        serin_proxy::admin::router(proxy.clone())
            .merge(serin_canary::api::router(canary.clone()))
            .merge(
                serin_proxy::dashboard::Dashboard::start(
                    proxy.clone(),
                    super::dashboard::providers(&canary, None),
                )
                .router(),
            ),
        async {
            let _ = admin_stopped.await;
        },
    )
    .await?;
    let admin_task = tokio::spawn(admin);
    let (stop_metrics, metrics_stopped) = tokio::sync::oneshot::channel::<()>();
    let metrics_task = match metrics_addr {
        Some(addr) => {
            let (bound, metrics) = serin_proxy::admin::serve_metrics(addr, proxy.clone(), async {
                let _ = metrics_stopped.await;
            })
            .await
            .with_context(|| format!("cannot serve the metrics on {addr}"))?;
            tracing::info!(address = %bound, "metrics listening");
            Some(tokio::spawn(metrics))
        }
        None => None,
    };
    for (name, addr) in proxy.listener_addrs() {
        tracing::info!(listener = %name, address = %addr, "listening");
    }
    tracing::info!(address = %admin_bound, token = %token_from, "admin API listening");
    signals
        .until_stopped(|| reload_on_hangup(proxy.clone()))
        .await;
    // Canaries stop deciding; their state stays for the next start.
    canary.stop();
    tracing::info!(timeout = ?drain_timeout, "draining");
    proxy.drain(drain_timeout).await;
    let _ = stop_admin.send(());
    let _ = admin_task.await;
    let _ = stop_metrics.send(());
    if let Some(task) = metrics_task {
        let _ = task.await;
    }
    tracing::info!("stopped");
    Ok(ExitCode::SUCCESS)
}

/// Where the admin API's token comes from, for the start-up line.
pub(super) fn token_origin(admin: &serin_config::proxy::AdminConfig) -> String {
    match admin.token {
        None => "none".into(),
        Some(_) => admin.token_origin.to_string(),
    }
}

/// The signals serin answers (SIGTERM and SIGINT stop it, SIGHUP reloads),
/// taken over from their default actions, which end the process at once.
/// A command takes them over first, before it binds or announces anything:
/// a SIGHUP sent as soon as serin says it listens must reload it, not end
/// it (a test that did so lost serin now and then), and a SIGTERM during
/// start must still drain.
pub struct Signals {
    term: Signal,
    int: Signal,
    hup: Signal,
}

impl Signals {
    pub fn take_over() -> anyhow::Result<Self> {
        let take = |kind: SignalKind, name: &str| {
            signal(kind).with_context(|| format!("cannot take over {name}"))
        };
        Ok(Self {
            term: take(SignalKind::terminate(), "SIGTERM")?,
            int: take(SignalKind::interrupt(), "SIGINT")?,
            hup: take(SignalKind::hangup(), "SIGHUP")?,
        })
    }

    /// Returns on SIGTERM or SIGINT (also one that came before this was
    /// called); a SIGHUP meanwhile waits for [`Self::until_stopped`].
    pub async fn stopped(&mut self) {
        stop_signal(&mut self.term, &mut self.int).await;
    }

    /// Returns on SIGTERM or SIGINT (also one that came before this was
    /// called); runs `on_hangup` on each SIGHUP.
    pub async fn until_stopped<F, Fut>(&mut self, mut on_hangup: F)
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = ()>,
    {
        loop {
            tokio::select! {
                () = stop_signal(&mut self.term, &mut self.int) => return,
                _ = self.hup.recv() => on_hangup().await,
            }
        }
    }
}

/// The first of SIGTERM and SIGINT (the fields apart, so a caller can wait
/// for SIGHUP beside it).
async fn stop_signal(term: &mut Signal, int: &mut Signal) {
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

async fn reload_on_hangup(proxy: Arc<Proxy>) {
    // A reload that fails in any way, even by a panic (a bug), leaves the
    // running config serving: it must not end the signal loop, and with it
    // the process.
    match tokio::task::spawn_blocking(move || proxy.reload_from_file()).await {
        Ok(Ok(_)) => tracing::info!("configuration reloaded (SIGHUP)"),
        Ok(Err(e)) => tracing::error!("configuration rejected; the running one stays:\n{e}"),
        Err(e) => tracing::error!("configuration reload failed ({e}); the running one stays"),
    }
}
