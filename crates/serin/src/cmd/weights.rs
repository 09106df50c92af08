use std::collections::BTreeMap;
use std::process::ExitCode;

use serde_json::{Value, json};

use super::admin_client::AdminClient;
use crate::cli::WeightsCommand;

pub fn run(cmd: WeightsCommand) -> anyhow::Result<ExitCode> {
    let (admin, value) = match cmd {
        WeightsCommand::Get { route, admin } => {
            let client = AdminClient::new(&admin)?;
            (admin, client.get(&format!("/routes/{route}/weights"))?)
        }
        WeightsCommand::Set {
            route,
            weights,
            rule,
            admin,
        } => {
            let client = AdminClient::new(&admin)?;
            let weights: BTreeMap<String, u32> = weights.into_iter().collect();
            let body = json!({ "rule": rule, "weights": weights });
            (
                admin,
                client.post(&format!("/routes/{route}/weights"), &body)?,
            )
        }
    };
    let _ = admin;
    print_weights(&value);
    Ok(ExitCode::SUCCESS)
}

fn print_weights(v: &Value) {
    let route = v.get("route").and_then(Value::as_str).unwrap_or("?");
    for rule in v
        .get("rules")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let index = rule.get("index").and_then(Value::as_u64).unwrap_or(0);
        let weights = rule.get("weights").and_then(Value::as_object);
        let total: u64 = weights
            .map(|w| w.values().filter_map(Value::as_u64).sum())
            .unwrap_or(0);
        println!("route {route}, rule {index}:");
        for (backend, w) in weights.into_iter().flatten() {
            let w = w.as_u64().unwrap_or(0);
            let pct = if total == 0 {
                0.0
            } else {
                w as f64 * 100.0 / total as f64
            };
            println!("  {backend:<24} weight {w:>7}  ({pct:.1}%)");
        }
    }
}
