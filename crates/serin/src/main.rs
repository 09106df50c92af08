//! The `serin` command: wires the crates together. Each subcommand lives in
//! its own module under `cmd/`.

mod cli;
mod cmd;
mod logging;

use clap::Parser;

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
