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

/// Gives back to the system the memory this thread's mimalloc heap holds
/// free past its purge delay. mimalloc does so itself only while it
/// allocates, so a worker idle after a burst would keep the burst's pages
/// (the data plane calls this on each worker every few seconds).
pub(crate) fn tidy_allocator() {
    // SAFETY: `mi_collect` only walks and trims the calling thread's heap
    // and the free segments; it takes no pointer and may be called at any
    // time from any thread.
    unsafe { libmimalloc_sys::mi_collect(false) }
}

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
