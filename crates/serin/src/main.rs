//! The `serin` command: wires the crates together. Each subcommand lives in
//! its own module under `cmd/`.

mod cli;
mod cmd;
mod log_json;
mod logging;

use clap::Parser;

// mimalloc's per-thread free lists suit the worker-per-thread data plane:
// the request path allocates and frees small objects on one thread.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    let cli = cli::Cli::parse();
    logging::init(cli.log_format, cli.verbose);
    match cmd::run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("serin: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
