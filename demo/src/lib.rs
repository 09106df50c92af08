//! The sample services of the serin story: `qotm` (quote of the moment),
//! `auth` (external authorization), `pinger`, `details`, `frontend`,
//! `counter` (Redis), and `loadtester` (a canary webhook target that sends
//! a bounded load).
//!
//! Each service is an axum server that reads its port from `PORT`, answers
//! `GET /health` and `GET /ready`, logs JSON lines to stdout and stops cleanly
//! on SIGTERM or Ctrl-C.
//!
//! Embedding: a binary adds [`DemoCommand`] as a clap subcommand and calls
//! [`run`] from inside its tokio runtime, or calls [`main_with_args`] from a
//! plain (non-async) `main`.

mod auth;
mod cli;
mod common;
mod counter;
mod details;
mod frontend;
mod healthcheck;
pub mod loadtester;
mod pinger;
mod qotm;

use std::ffi::OsString;

use anyhow::Context as _;
use clap::Parser as _;

pub use cli::{
    AuthArgs, Cli, CounterArgs, DemoCommand, FrontendArgs, HealthcheckArgs, LoadtesterArgs,
    PingerArgs, QotmArgs, ServeArgs,
};

/// Runs one demo service until it is asked to stop (SIGTERM or Ctrl-C).
///
/// Installs the JSON log subscriber unless the process already has one, so it
/// is safe to call from a binary that set up its own tracing.
pub async fn run(cmd: DemoCommand) -> anyhow::Result<()> {
    // A health check is one-shot: its answer is its exit status, no logs.
    if !matches!(cmd, DemoCommand::Healthcheck(_)) {
        common::init_logging();
    }
    match cmd {
        DemoCommand::Qotm(args) => qotm::run(args).await,
        DemoCommand::Auth(args) => auth::run(args).await,
        DemoCommand::Pinger(args) => pinger::run(args).await,
        DemoCommand::Details(args) => details::run(args).await,
        DemoCommand::Frontend(args) => frontend::run(args).await,
        DemoCommand::Counter(args) => counter::run(args).await,
        DemoCommand::Loadtester(args) => loadtester::run(args).await,
        DemoCommand::Healthcheck(args) => healthcheck::run(&args).await,
    }
}

/// Parses `args` (the first item is the program name) as [`Cli`], builds a
/// tokio runtime and runs the chosen service. Exits the process on a command
/// line error or `--help`, as clap does. Must not be called from inside a
/// tokio runtime: use [`run`] there.
pub fn main_with_args<I, T>(args: I) -> anyhow::Result<()>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let cli = Cli::parse_from(args);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the tokio runtime")?;
    runtime.block_on(run(cli.command))
}
