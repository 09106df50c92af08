//! Logs via tracing: text in a terminal, JSON lines (see [`crate::log_json`])
//! when asked or piped.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use crate::cli::LogFormat;

pub fn init(format: LogFormat, verbose: u8) {
    let default = match verbose {
        0 => "info",
        1 => "debug",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let json = is_json(format);
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let result = if json {
        builder.event_format(crate::log_json::JsonLines).try_init()
    } else {
        builder.with_target(false).try_init()
    };
    if let Err(e) = result {
        eprintln!("serin: cannot set up logging: {e}");
    }
}

/// Whether logs are JSON: asked for, or automatic and not on a terminal.
pub fn is_json(format: LogFormat) -> bool {
    match format {
        LogFormat::Json => true,
        LogFormat::Text => false,
        LogFormat::Auto => !std::io::stderr().is_terminal(),
    }
}
