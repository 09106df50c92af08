//! One module per subcommand.

mod admin_client;
mod builds;
pub(crate) mod canary;
mod canary_auto;
mod canary_kube;
mod canary_proxy;
mod canary_status;
mod dashboard;
mod explain;
mod kubernetes;
mod mesh;
mod proxy;
mod render;
mod stack_control;
mod tap;
mod up;
mod validate;
mod weights;

use std::process::ExitCode;

use crate::cli::{Cli, Command};

pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let json_logs = crate::logging::is_json(cli.log_format);
    match cli.command {
        Command::Up(args) => up::run(args, json_logs),
        Command::Ps { admin, json } => stack_control::ps(&admin, json),
        Command::Scale {
            target,
            replicas,
            wait,
            admin,
        } => stack_control::scale(&admin, &target, replicas, wait),
        Command::Restart {
            target,
            wait,
            admin,
        } => stack_control::restart(&admin, &target, wait),
        Command::Logs {
            target,
            follow,
            tail,
            admin,
        } => stack_control::logs(&admin, target.as_deref(), follow, tail),
        Command::Apply { stack, admin } => stack_control::apply(&admin, stack.as_deref()),
        Command::Proxy(args) => proxy::run(args),
        Command::Validate(args) => validate::run(&args),
        Command::Healthcheck { admin } => {
            admin_client::AdminClient::new(&admin)?.get("/ready")?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Weights(cmd) => weights::run(cmd),
        Command::Explain(args) => explain::run(&args),
        Command::Tap(args) => tap::run(&args),
        Command::Canary(cmd) => canary::run(cmd),
        Command::Render(cmd) => render::run(cmd),
        Command::Demo { service } => {
            let rt = tokio::runtime::Runtime::new()?;
            rt.block_on(serin_demo::run(service))?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// A multi-threaded runtime for the control plane (admin API, reloads,
/// discovery); the data plane runs on its own worker threads.
pub fn control_runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("serin-control")
        .enable_all()
        .build()?)
}
