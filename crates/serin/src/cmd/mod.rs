//! One module per subcommand.

mod admin_client;
mod proxy;
mod validate;
mod weights;

use std::process::ExitCode;

use crate::cli::{Cli, Command};

pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Proxy(args) => proxy::run(args),
        Command::Validate(args) => validate::run(&args),
        Command::Weights(cmd) => weights::run(cmd),
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
