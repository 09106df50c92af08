//! `serin-demo`: the sample services of the serin story, one per subcommand.

use std::process::ExitCode;

fn main() -> ExitCode {
    match serin_demo::main_with_args(std::env::args_os()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("serin-demo: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
