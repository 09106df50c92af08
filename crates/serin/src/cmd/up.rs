//! `serin up`: the local runtime and the gateway in one process.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::json;
use serin_config::stack::StackFile;
use serin_discovery::Registry;
use serin_proxy::{Proxy, ProxyOptions};
use serin_runtime::{ColorChoice, LogFormat, Runtime, RuntimeHandle, RuntimeOptions};

use super::canary_auto::{Applied, AutoCanary, AutoState, RollOutError};
use crate::cli::UpArgs;

/// The default stack, built in so `serin up` works from anywhere.
const DEFAULT_STACK: &str = include_str!("../../../../examples/qotm/stack.yaml");
const DEFAULT_CREDENTIALS: &str = include_str!("../../../../examples/qotm/credentials.txt");
const DEFAULT_STACK_PATH: &str = "examples/qotm/stack.yaml";

pub fn run(args: UpArgs, json_logs: bool) -> anyhow::Result<ExitCode> {
    let rt = super::control_runtime()?;
    rt.block_on(up(args, json_logs))
}

/// Where the stack comes from: the given file, `examples/qotm/stack.yaml`
/// when it is here, else the built-in copy written to a folder of its own.
fn stack_path(args: &UpArgs) -> anyhow::Result<PathBuf> {
    if let Some(p) = &args.stack {
        return Ok(p.clone());
    }
    let here = Path::new(DEFAULT_STACK_PATH);
    if here.exists() {
        return Ok(here.to_path_buf());
    }
    let user = std::env::var("USER").unwrap_or_else(|_| "user".into());
    let dir = std::env::temp_dir().join(format!("serin-qotm-{user}"));
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    std::fs::write(dir.join("stack.yaml"), DEFAULT_STACK)?;
    std::fs::write(dir.join("credentials.txt"), DEFAULT_CREDENTIALS)?;
    Ok(dir.join("stack.yaml"))
}

async fn up(args: UpArgs, json_logs: bool) -> anyhow::Result<ExitCode> {
    let mut signals = super::proxy::Signals::take_over()?;
    let path = stack_path(&args)?;
    let (text, parsed) = read_stack_file(&path, None);
    let StackFile {
        stack,
        mut gateway,
        mesh,
    } = match parsed {
        Ok(f) => f,
        Err(errors) => {
            eprint!("{errors}");
            return Ok(ExitCode::FAILURE);
        }
    };
    if let (Some(a), Some(l)) = (args.listen, gateway.listeners.first_mut()) {
        l.address = a;
    }
    let (admin, token_origin) =
        super::proxy::admin_command_line(args.admin, args.admin_token.clone());
    gateway
        .admin
        .apply_command_line(&admin, token_origin.clone());
    gateway.source = Some(path.clone());
    if let Err(e) = serin_config::proxy::admin::check(&gateway) {
        return Ok(super::proxy::refuse_admin(e));
    }
    let applied = Applied {
        text,
        stack: stack.clone(),
        gateway: gateway.clone(),
        mesh,
        builds: BTreeMap::new(),
    };
    // Automatic canaries judge builds, so each build runs from its copy,
    // the first one too.
    let applied = match applied
        .with_builds(&super::builds::builds_dir(&path), &BTreeMap::new())
        .await
    {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            return Ok(ExitCode::FAILURE);
        }
    };
    let auto = AutoState::open(&path, applied).await;
    // What runs: the file, with the revisions automatic canaries hold.
    let (running, gateway, mesh) = auto.effective();
    let registry = Registry::new();
    let proxy = match Proxy::start(
        gateway.clone(),
        registry.clone(),
        ProxyOptions {
            state_file: Some(serin_proxy::state::path_beside(&path)),
            watch_config: false,
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
    let options = RuntimeOptions {
        log_format: if json_logs {
            LogFormat::Json
        } else {
            LogFormat::Text
        },
        color: if args.no_color {
            ColorChoice::Never
        } else {
            ColorChoice::Auto
        },
        ..RuntimeOptions::default()
    };
    // A Ctrl-C while the stack starts (a replica may take its whole ready
    // timeout) ends serin at once; the replicas started so far go with it
    // (`PR_SET_PDEATHSIG`).
    let runtime = tokio::select! {
        started = Runtime::start(running, registry, options) => {
            started.context("cannot start the stack")?
        }
        () = signals.stopped() => {
            tracing::info!("stopped while the stack was starting");
            return Ok(ExitCode::SUCCESS);
        }
    };
    let canary =
        super::canary::start_controller(&proxy, Some(&path), super::canary::stack_defaults(&stack))
            .await?;
    let sidecars = super::mesh::Mesh::new(proxy.clone(), runtime.clone(), gateway.clone(), mesh);
    tokio::spawn(sidecars.clone().run());
    let auto = AutoCanary::start(
        auto,
        canary.clone(),
        proxy.clone(),
        runtime.clone(),
        sidecars,
    )
    .await;
    let state = Arc::new(UpState {
        auto,
        path: path.clone(),
        overrides: Overrides {
            listen: args.listen,
            admin,
            token_origin,
        },
    });
    let watching = match args.watch {
        true => Some(watch(&state, &runtime, &path)?),
        false => None,
    };
    let app = serin_proxy::admin::router(proxy.clone())
        .merge(serin_runtime::admin_router(runtime.clone()))
        .merge(serin_canary::api::router(canary.clone()))
        .merge(
            serin_proxy::dashboard::Dashboard::start(
                proxy.clone(),
                super::dashboard::providers(&canary, Some(&runtime)),
            )
            .router(),
        )
        .merge(
            Router::new()
                .route("/apply", post(apply))
                .with_state(state.clone()),
        );
    let (stop_admin, admin_stopped) = tokio::sync::oneshot::channel::<()>();
    let (admin_bound, admin) = serin_proxy::admin::serve(proxy.clone(), app, async {
        let _ = admin_stopped.await;
    })
    .await?;
    let admin_task = tokio::spawn(admin);
    for (name, addr) in proxy.listener_addrs() {
        tracing::info!(listener = %name, address = %addr, "listening");
    }
    tracing::info!(
        address = %admin_bound,
        token = %super::proxy::token_origin(&gateway.admin),
        "admin API listening"
    );
    print_summary(&path, &proxy, admin_bound, &stack, watching.is_some());

    signals
        .until_stopped(|| apply_again(&state, "SIGHUP"))
        .await;
    // No build or apply starts from here on; one under way is ended.
    if let Some(w) = watching {
        w.stop();
    }
    // Canaries stop deciding; their state stays for the next `serin up`.
    canary.stop();
    tracing::info!("stopping the stack");
    // Replicas leave the registry first, so no new request goes to one that
    // is stopping; then the gateway drains.
    if let Err(e) = runtime.shutdown().await {
        tracing::error!(error = %e, "stopping the stack");
    }
    proxy.drain(gateway.drain_timeout).await;
    let _ = stop_admin.send(());
    let _ = admin_task.await;
    tracing::info!("stopped");
    Ok(ExitCode::SUCCESS)
}

/// `serin up --watch`: rebuilds on the services' `watch:` paths, applies
/// the stack file when it changes.
fn watch(
    state: &Arc<UpState>,
    runtime: &RuntimeHandle,
    path: &Path,
) -> anyhow::Result<serin_runtime::watch::Watching> {
    let apply = {
        let state = state.clone();
        move || {
            let state = state.clone();
            async move { apply_again(&state, "watch").await }
        }
    };
    // A build of a service whose automatic canary judges builds is its
    // canary's to roll out; any other is rolled out in place.
    let after_build: serin_runtime::watch::AfterBuild = {
        let state = state.clone();
        Arc::new(move |service: &str| {
            let judged = state.auto.judges_builds(service);
            let (state, service) = (state.clone(), service.to_string());
            judged.then(|| {
                Box::pin(async move { state.auto.rebuilt(&service).await })
                    as std::pin::Pin<Box<dyn std::future::Future<Output = String> + Send>>
            })
        })
    };
    serin_runtime::watch::spawn(runtime.clone(), path, apply, after_build).context("cannot watch")
}

fn print_summary(
    path: &Path,
    proxy: &Proxy,
    admin: std::net::SocketAddr,
    stack: &serin_config::stack::Stack,
    watching: bool,
) {
    let gateway = proxy
        .listener_addrs()
        .first()
        .map(|(_, a)| format!("http://{a}"))
        .unwrap_or_default();
    let mut out = format!("\nserin up: {}\n", path.display());
    for s in &stack.services {
        let versions: Vec<String> = s
            .versions
            .iter()
            .map(|v| format!("{} ×{}", v.name, v.replicas))
            .collect();
        out.push_str(&format!(
            "  service {:<10} {}\n",
            s.name,
            versions.join(", ")
        ));
    }
    if watching {
        out.push_str(&format!("  watching         {}\n", path.display()));
        for s in &stack.services {
            let Some(w) = &s.watch else { continue };
            let paths: Vec<String> = w.paths.iter().map(|p| p.display().to_string()).collect();
            let build = w
                .build
                .as_ref()
                .map_or("(none: roll out only)", |b| b.written.as_str());
            out.push_str(&format!(
                "    {:<14} {}  build: {build}\n",
                s.name,
                paths.join(", ")
            ));
        }
    }
    out.push_str(&format!("  gateway          {gateway}\n"));
    for r in &proxy.snapshot().config.routes {
        for rule in &r.rules {
            for m in &rule.matches {
                if let serin_config::proxy::PathMatch::PathPrefix(p)
                | serin_config::proxy::PathMatch::Exact(p) = &m.path
                {
                    out.push_str(&format!("    curl {gateway}{}/\n", p.trim_end_matches('/')));
                }
            }
        }
    }
    out.push_str(&format!(
        "  admin API        http://{admin}  (serin ps, serin logs -f, serin weights get ROUTE)\n  \
         dashboard        http://{admin}/ui\n\
         Ctrl-C stops everything.\n"
    ));
    eprintln!("{out}");
}

/// Command-line overrides that an `apply` keeps.
struct Overrides {
    listen: Option<std::net::SocketAddr>,
    /// `--admin`, `--admin-token` (the proxy keeps them too; see
    /// `AdminConfig::carry_over`).
    admin: serin_config::proxy::admin::CommandLine,
    token_origin: serin_config::proxy::admin::Origin,
}

struct UpState {
    /// Rolls out an applied stack: the gateway and the replicas' sidecars,
    /// the services, the canaries' defaults and the automatic canaries.
    auto: AutoCanary,
    path: PathBuf,
    overrides: Overrides,
}

#[derive(serde::Deserialize)]
struct ApplyBody {
    /// The stack file's text; when absent, the file serin was started from is
    /// read again.
    #[serde(default)]
    stack: Option<String>,
    /// Where `stack` was read from: errors name it, and relative paths in it
    /// are resolved against its folder. Default: the file serin was started
    /// from.
    #[serde(default)]
    path: Option<PathBuf>,
}

/// The text of the stack file at `file` (or `text`, as sent) and what it
/// says. Relative paths in it are resolved against its folder.
fn read_stack_file(
    file: &Path,
    text: Option<String>,
) -> (String, Result<StackFile, serin_config::ConfigErrors>) {
    let base = match file.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let text = match text.map_or_else(|| std::fs::read_to_string(file), Ok) {
        Ok(t) => t,
        // The loader says why, at the file's place.
        Err(_) => return (String::new(), serin_config::stack::load_stack_file(file)),
    };
    let parsed = serin_config::stack::parse_stack_file(&text, &file.display().to_string(), base);
    (text, parsed)
}

/// Rolls out a changed stack file (see [`AutoCanary::apply`]). `text`:
/// the file's text as sent; `None` reads the file serin was started from
/// again.
async fn apply_stack(
    state: &UpState,
    text: Option<String>,
    file: Option<&Path>,
) -> Result<serde_json::Value, RollOutError> {
    let file = match (&text, file) {
        (Some(_), Some(f)) => f,
        _ => &state.path,
    };
    let (text, parsed) = read_stack_file(file, text);
    let StackFile {
        stack,
        mut gateway,
        mesh,
    } = parsed.map_err(RollOutError::Rejected)?;
    if let (Some(a), Some(l)) = (state.overrides.listen, gateway.listeners.first_mut()) {
        l.address = a;
    }
    gateway
        .admin
        .apply_command_line(&state.overrides.admin, state.overrides.token_origin.clone());
    gateway.source = Some(state.path.clone());
    let applied = Applied {
        text,
        stack,
        gateway,
        mesh,
        builds: BTreeMap::new(),
    };
    state.auto.apply(applied).await
}

/// `POST /apply` (`serin apply`).
async fn apply(State(state): State<Arc<UpState>>, Json(body): Json<ApplyBody>) -> Response {
    match apply_stack(&state, body.stack, body.path.as_deref()).await {
        Ok(summary) => Json(json!({ "result": "applied", "summary": summary })).into_response(),
        Err(RollOutError::Rejected(errors)) => rejected(&errors),
        Err(RollOutError::Internal(e)) => (
            axum::http::StatusCode::INTERNAL_SERVER_ERROR,
            Json(json!({ "error": e })),
        )
            .into_response(),
        Err(RollOutError::Refused(e)) => (
            axum::http::StatusCode::BAD_REQUEST,
            Json(json!({ "error": e })),
        )
            .into_response(),
        Err(RollOutError::Busy(e)) => (
            axum::http::StatusCode::CONFLICT,
            Json(json!({ "error": e })),
        )
            .into_response(),
    }
}

/// SIGHUP under `serin up`, and a change of the stack file under `serin up
/// --watch`, apply the stack file again, as `serin apply` does (the file is
/// a stack file, not a proxy config). `why` says which in serin's log.
async fn apply_again(state: &UpState, why: &str) {
    match apply_stack(state, None, None).await {
        Ok(summary) => tracing::info!(%summary, "stack file applied ({why})"),
        Err(RollOutError::Rejected(errors)) => {
            tracing::error!(
                "stack file rejected ({why}); the running stack stays as it was:\n{errors}"
            );
        }
        Err(RollOutError::Internal(e) | RollOutError::Refused(e) | RollOutError::Busy(e)) => {
            tracing::error!("stack file apply failed ({why}): {e}");
        }
    }
}

fn rejected(errors: &serin_config::ConfigErrors) -> Response {
    (
        axum::http::StatusCode::BAD_REQUEST,
        Json(json!({
            "error": "stack file rejected; the running stack stays as it was",
            "problems": errors.0.iter().map(ToString::to_string).collect::<Vec<_>>(),
        })),
    )
        .into_response()
}
