//! Command line of the demo services: one subcommand per service.

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

/// The `serin-demo` binary's command line.
#[derive(Debug, Parser)]
#[command(
    name = "serin-demo",
    about = "The sample services of the serin story",
    disable_version_flag = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: DemoCommand,
}

/// One demo service. Embed it in another binary as a clap subcommand and
/// hand the parsed value to [`crate::run`].
#[derive(Debug, Subcommand)]
pub enum DemoCommand {
    /// Quote of the moment: `GET /` answers a random quote as JSON.
    #[command(disable_version_flag = true)]
    Qotm(QotmArgs),
    /// External authorization (HTTP mode): checks `Authorization` on every request.
    #[command(disable_version_flag = true)]
    Auth(AuthArgs),
    /// `GET /` answers "pong" (more detail in v2 or with `--detailed`).
    #[command(disable_version_flag = true)]
    Pinger(PingerArgs),
    /// `GET /` answers product details as JSON.
    #[command(disable_version_flag = true)]
    Details(ServeArgs),
    /// An HTML page built from calls to pinger and details.
    #[command(disable_version_flag = true)]
    Frontend(FrontendArgs),
    /// `GET /` increments a counter in Redis.
    #[command(disable_version_flag = true)]
    Counter(CounterArgs),
    /// A canary webhook target: `POST /` with a webhook's JSON sends a
    /// bounded load (metadata `url`, `rate`, `duration`, ...) to a URL.
    #[command(disable_version_flag = true)]
    Loadtester(LoadtesterArgs),
    /// A container health check: GETs a running service's `/ready` (or
    /// --path) and exits 0 on a 2xx answer, 1 otherwise.
    #[command(disable_version_flag = true)]
    Healthcheck(HealthcheckArgs),
}

/// Options every service has.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, default_value_t = IpAddr::V4(Ipv4Addr::LOCALHOST))]
    pub host: IpAddr,
    /// Port to listen on [default: the `PORT` environment variable].
    #[arg(long)]
    pub port: Option<u16>,
    /// Version this replica reports (in answers and logs).
    #[arg(long = "version", env = "SERIN_VERSION", default_value = "v1")]
    pub version: String,
}

#[derive(Debug, Clone, Args)]
pub struct HealthcheckArgs {
    /// The service's address (one it listens on).
    #[arg(long, default_value_t = IpAddr::V4(Ipv4Addr::LOCALHOST))]
    pub host: IpAddr,
    /// The service's port [default: the `PORT` environment variable].
    #[arg(long)]
    pub port: Option<u16>,
    /// The path to GET.
    #[arg(long, default_value = "/ready")]
    pub path: String,
    /// Give up after this long.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
}

#[derive(Debug, Clone, Args)]
pub struct QotmArgs {
    #[command(flatten)]
    pub serve: ServeArgs,
    /// Delay every answer of `/` and `/quote/N` by this long (e.g. `500ms`).
    #[arg(long, default_value = "0s", value_parser = humantime::parse_duration)]
    pub delay: Duration,
    /// Fraction (0 to 1) of `/` answers that are HTTP 500.
    #[arg(long, default_value_t = 0.0, value_parser = parse_rate)]
    pub error_rate: f64,
    /// `/ready` answers 503 until this long after start (e.g. `3s`).
    #[arg(long, default_value = "0s", value_parser = humantime::parse_duration)]
    pub ready_after: Duration,
}

#[derive(Debug, Clone, Args)]
pub struct AuthArgs {
    #[command(flatten)]
    pub serve: ServeArgs,
    /// Credentials file: lines `token <token> <user>` and `basic <user> <password>`.
    #[arg(long, env = "AUTH_CREDENTIALS_FILE")]
    pub credentials: PathBuf,
}

#[derive(Debug, Clone, Args)]
pub struct PingerArgs {
    #[command(flatten)]
    pub serve: ServeArgs,
    /// Add time, uptime and request count to answers (always on for v2).
    #[arg(long)]
    pub detailed: bool,
}

#[derive(Debug, Clone, Args)]
pub struct FrontendArgs {
    #[command(flatten)]
    pub serve: ServeArgs,
    /// Base URL of the pinger service.
    #[arg(long, env = "PINGER_URL")]
    pub pinger_url: String,
    /// Base URL of the details service.
    #[arg(long, env = "DETAILS_URL")]
    pub details_url: String,
    /// Timeout of each call to a dependency.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
}

#[derive(Debug, Clone, Args)]
pub struct CounterArgs {
    #[command(flatten)]
    pub serve: ServeArgs,
    /// Redis to count in.
    #[arg(long, env = "REDIS_URL", default_value = "redis://127.0.0.1:6379/")]
    pub redis_url: String,
    /// Key to increment.
    #[arg(long, default_value = "counter")]
    pub key: String,
}

#[derive(Debug, Clone, Args)]
pub struct LoadtesterArgs {
    #[command(flatten)]
    pub serve: ServeArgs,
}

fn parse_rate(s: &str) -> Result<f64, String> {
    let rate: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("'{s}' is not a number"))?;
    if !(0.0..=1.0).contains(&rate) {
        return Err(format!("{rate} is not between 0 and 1"));
    }
    Ok(rate)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory as _;

    #[test]
    fn cli_is_valid() {
        Cli::command().debug_assert();
    }

    /// The `serin` binary embeds the services as `serin demo <service>` with
    /// its own `--version` flag propagated: the services' `--version` must win.
    #[derive(Debug, Parser)]
    #[command(name = "serin", version, propagate_version = true)]
    struct Outer {
        #[command(subcommand)]
        cmd: OuterCmd,
    }

    #[derive(Debug, Subcommand)]
    enum OuterCmd {
        Demo {
            #[command(subcommand)]
            cmd: DemoCommand,
        },
    }

    #[test]
    fn embeds_as_a_subcommand() {
        Outer::command().debug_assert();
        let outer = Outer::try_parse_from([
            "serin",
            "demo",
            "qotm",
            "--version",
            "v2",
            "--error-rate",
            "0.25",
            "--delay",
            "500ms",
        ])
        .unwrap();
        let OuterCmd::Demo {
            cmd: DemoCommand::Qotm(args),
        } = outer.cmd
        else {
            panic!("wrong command");
        };
        assert_eq!(args.serve.version, "v2");
        assert_eq!(args.error_rate, 0.25);
        assert_eq!(args.delay, Duration::from_millis(500));
    }

    #[test]
    fn error_rate_is_validated() {
        assert_eq!(parse_rate("0"), Ok(0.0));
        assert_eq!(parse_rate("1"), Ok(1.0));
        assert!(parse_rate("1.5").is_err());
        assert!(parse_rate("-0.1").is_err());
        assert!(parse_rate("NaN").is_err());
        assert!(parse_rate("lots").is_err());
        let err = Cli::try_parse_from(["serin-demo", "qotm", "--error-rate", "2"]).unwrap_err();
        assert!(err.to_string().contains("not between 0 and 1"), "{err}");
    }
}
