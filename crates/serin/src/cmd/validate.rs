//! `serin validate`: reads a proxy config or a stack file as `serin proxy`
//! or `serin up` would, without running it, and prints every problem.

use std::process::ExitCode;

use serin_config::kind::{FileKind, file_kind};
use serin_config::{ConfigError, ConfigErrors};

use crate::cli::ValidateArgs;

pub fn run(args: &ValidateArgs) -> anyhow::Result<ExitCode> {
    // A file that cannot be read is reported by the proxy config's reader.
    let kind =
        std::fs::read_to_string(&args.file).map_or(FileKind::ProxyConfig, |text| file_kind(&text));
    let (kind_name, checked) = match kind {
        FileKind::ProxyConfig => (
            "proxy config",
            serin_config::proxy::load_proxy_config(&args.file)
                .and_then(admin_may_open)
                .map(|cfg| {
                let summary = format!(
                    "{} listener(s), {} service(s), {} route(s)",
                    cfg.listeners.len(),
                    cfg.services.len(),
                    cfg.routes.len()
                );
                (summary, cfg.warnings)
            }),
        ),
        FileKind::StackFile => (
            "stack file",
            serin_config::stack::load_stack_file(&args.file).and_then(|mut file| {
                // The gateway's admin API is opened as `serin up` opens it,
                // its problems placed in this file.
                file.gateway.source = Some(args.file.clone());
                let gateway = admin_may_open(file.gateway)?;
                let versions: usize = file.stack.services.iter().map(|s| s.versions.len()).sum();
                let summary = format!(
                    "{} service(s), {versions} version(s), {} gateway route(s), {} sidecar route(s)",
                    file.stack.services.len(),
                    gateway.routes.len(),
                    file.mesh.len()
                );
                Ok((summary, gateway.warnings))
            }),
        ),
    };
    Ok(report(args, kind_name, checked))
}

/// What a valid file says, and its warnings: what is valid but likely a
/// mistake (printed, and the file is still valid).
type Checked = (String, Vec<ConfigError>);

fn report(args: &ValidateArgs, kind: &str, checked: Result<Checked, ConfigErrors>) -> ExitCode {
    match checked {
        Ok((summary, warnings)) => {
            if args.json {
                println!(
                    "{}",
                    serde_json::json!({"valid": true, "kind": kind, "problems": [], "warnings": warnings})
                );
            } else {
                for w in &warnings {
                    eprintln!("warning: {w}");
                }
                println!("{}: valid {kind} ({summary})", args.file.display());
            }
            ExitCode::SUCCESS
        }
        Err(errors) => {
            if args.json {
                println!(
                    "{}",
                    serde_json::json!({"valid": false, "kind": kind, "problems": errors, "warnings": []})
                );
            } else {
                eprint!("{errors}");
            }
            ExitCode::FAILURE
        }
    }
}

/// The admin API's address beyond loopback needs a token: from the file or,
/// when serin runs, from `SERIN_ADMIN_TOKEN` (read here too).
fn admin_may_open(
    mut cfg: serin_config::proxy::ProxyConfig,
) -> Result<serin_config::proxy::ProxyConfig, serin_config::ConfigErrors> {
    let env = std::env::var(serin_config::proxy::admin::TOKEN_ENV).ok();
    let (command_line, origin) = super::proxy::admin_command_line(None, env);
    cfg.admin.apply_command_line(&command_line, origin);
    serin_config::proxy::admin::check(&cfg).map_err(|e| e.into_config_errors())?;
    Ok(cfg)
}
