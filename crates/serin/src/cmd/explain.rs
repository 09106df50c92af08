//! `serin explain`: asks a running serin's admin API what it would do with
//! a request (`GET /explain`) and prints the answer as text or JSON.

use std::process::ExitCode;

use super::admin_client::AdminClient;
use crate::cli::ExplainArgs;

pub fn run(args: &ExplainArgs) -> anyhow::Result<ExitCode> {
    let client = AdminClient::new(&args.admin)?;
    let path = format!("/explain?{}", query(args));
    let answer = client.get(&path)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&answer["explanation"])?);
    } else {
        print!("{}", answer["text"].as_str().unwrap_or_default());
    }
    Ok(ExitCode::SUCCESS)
}

/// The admin API's query for the request `args` describe.
fn query(args: &ExplainArgs) -> String {
    let mut q = form_urlencoded::Serializer::new(String::new());
    q.append_pair("method", &args.method);
    q.append_pair("path", &args.path);
    if let Some(host) = &args.host {
        q.append_pair("host", host);
    }
    if let Some(listener) = &args.listener {
        q.append_pair("listener", listener);
    }
    for (name, value) in &args.headers {
        q.append_pair("header", &format!("{name}:{value}"));
    }
    q.finish()
}
