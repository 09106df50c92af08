use std::process::ExitCode;

use crate::cli::ValidateArgs;

pub fn run(args: &ValidateArgs) -> anyhow::Result<ExitCode> {
    match serin_config::proxy::load_proxy_config(&args.file) {
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
