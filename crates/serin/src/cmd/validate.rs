use std::process::ExitCode;

use crate::cli::ValidateArgs;

pub fn run(args: &ValidateArgs) -> anyhow::Result<ExitCode> {
    match serin_config::proxy::load_proxy_config(&args.file).and_then(admin_may_open) {
        Ok(cfg) => {
            if args.json {
                println!("{}", serde_json::json!({"valid": true, "problems": []}));
            } else {
                println!(
                    "{}: valid ({} listener(s), {} service(s), {} route(s))",
                    args.file.display(),
                    cfg.listeners.len(),
                    cfg.services.len(),
                    cfg.routes.len()
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(errors) => {
            if args.json {
                println!(
                    "{}",
                    serde_json::json!({"valid": false, "problems": errors})
                );
            } else {
                eprint!("{errors}");
            }
            Ok(ExitCode::FAILURE)
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
