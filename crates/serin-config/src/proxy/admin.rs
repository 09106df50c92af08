//! Who may open the admin API: it changes routing, weights and the running
//! config, so it listens on loopback unless told otherwise, and an address
//! beyond loopback wants a token. [`check`] is the one place that decides,
//! for every way the address is set: the config file's `admin.address`, a
//! stack's `gateway.admin`, and `--admin` on `serin proxy` (file or quick
//! mode) and `serin up`.
//!
//! The token comes from, first to last: `--admin-token`, the environment
//! variable [`TOKEN_ENV`], the file (`admin.token`, a stack's
//! `gateway.adminToken`). The address and a token from the command line are
//! fixed for the life of the process (the listener is bound once); a
//! token from the file changes with the file: [`AdminConfig::carry_over`]
//! keeps what is fixed when a reload or apply brings a new config, and
//! checks it again, so a reload cannot leave an open admin API beyond
//! loopback.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;

use super::model::{AdminConfig, ProxyConfig, defaults};
use crate::error::{ConfigError, ConfigErrors, Span};

/// The environment variable with the admin API's token (for `serin proxy`
/// and `serin up`, and for the commands that call the admin API).
pub const TOKEN_ENV: &str = "SERIN_ADMIN_TOKEN";
/// The flag that sets the admin API's address.
pub const ADDRESS_FLAG: &str = "--admin";
/// The flag that sets the admin API's token.
pub const TOKEN_FLAG: &str = "--admin-token";
/// A proxy config file's key for the token.
pub const FILE_TOKEN_KEY: &str = "admin.token";
/// A stack file's key for the gateway's token.
pub const STACK_TOKEN_KEY: &str = "gateway.adminToken";

/// Where an admin setting came from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Origin {
    /// Nobody set it: the default.
    #[default]
    Default,
    /// The config (or stack) file, at this place and field path.
    File { span: Span, path: String },
    /// A command-line flag such as [`ADDRESS_FLAG`].
    Flag(&'static str),
    /// An environment variable such as [`TOKEN_ENV`].
    Env(&'static str),
}

impl Origin {
    /// Set when the process started, so fixed until it ends.
    pub fn is_command_line(&self) -> bool {
        matches!(self, Origin::Flag(_) | Origin::Env(_))
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Default => f.write_str("the default"),
            Origin::File { path, .. } => write!(f, "the file's {path}"),
            Origin::Flag(name) | Origin::Env(name) => f.write_str(name),
        }
    }
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            address: defaults::ADMIN_ADDRESS,
            metrics_address: None,
            token: None,
            address_origin: Origin::Default,
            token_origin: Origin::Default,
            token_key: FILE_TOKEN_KEY,
        }
    }
}

/// Admin settings from the command line, which win over the file's.
#[derive(Debug, Clone, Default)]
pub struct CommandLine {
    /// `--admin`.
    pub address: Option<SocketAddr>,
    /// `--admin-token`, or [`TOKEN_ENV`] (clap reads both into one value).
    pub token: Option<String>,
}

impl CommandLine {
    /// The settings of `--admin` and `--admin-token`; `token_env` is the
    /// value of [`TOKEN_ENV`] (clap already took the flag over it, so a
    /// token equal to it is named after it).
    pub fn new(
        address: Option<SocketAddr>,
        token: Option<String>,
        token_env: Option<&str>,
    ) -> (Self, Origin) {
        let origin = match (&token, token_env) {
            (Some(t), Some(e)) if t == e => Origin::Env(TOKEN_ENV),
            _ => Origin::Flag(TOKEN_FLAG),
        };
        (
            CommandLine {
                address,
                token: token.filter(|t| !t.is_empty()),
            },
            origin,
        )
    }
}

impl AdminConfig {
    /// Applies the command line's settings over the file's ([`check`] the
    /// result).
    pub fn apply_command_line(
        &mut self,
        command_line: &CommandLine,
        token_origin: Origin,
    ) -> &mut Self {
        if let Some(a) = command_line.address {
            self.address = a;
            self.address_origin = Origin::Flag(ADDRESS_FLAG);
        }
        if let Some(t) = &command_line.token {
            self.token = Some(t.clone());
            self.token_origin = token_origin;
        }
        self
    }

    /// Makes these settings, from a config about to replace the running
    /// one (a reload, an apply), follow the running admin API: it keeps
    /// its address (its listener is bound once) and a token from the
    /// command line (it wins over the file's); a token from the file is the
    /// new file's. [`check`] the result.
    pub fn carry_over(&mut self, running: &AdminConfig) {
        // The new file's place names the address, while it still sets one.
        let own_place = matches!(self.address_origin, Origin::File { .. })
            && matches!(running.address_origin, Origin::File { .. });
        if !own_place {
            self.address_origin = running.address_origin.clone();
        }
        self.address = running.address;
        self.metrics_address = running.metrics_address;
        if running.token_origin.is_command_line() {
            self.token = running.token.clone();
            self.token_origin = running.token_origin.clone();
        }
    }
}

/// The admin API would listen beyond loopback with no token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct Exposed {
    pub address: SocketAddr,
    /// Where the address was set.
    pub origin: Origin,
    /// The config or stack file, when there is one.
    pub file: Option<Arc<str>>,
    /// The file's key for the token (`admin.token`, `gateway.adminToken`).
    pub token_key: &'static str,
}

impl Exposed {
    fn message(&self) -> String {
        format!(
            "the admin API on a non-loopback address ({}) can change routing, weights and \
             the running config: give it a token ({TOKEN_FLAG}, {TOKEN_ENV}, or {} in the \
             file), or keep it on loopback",
            self.address, self.token_key
        )
    }

    /// As a config problem: at the address's place in the file, else at
    /// the file's start naming the token's key.
    pub fn into_config_errors(self) -> ConfigErrors {
        let file = self.file.clone().unwrap_or_else(|| "<config>".into());
        let (span, path, message) = match &self.origin {
            Origin::File { span, path } => (*span, path.clone(), self.message()),
            other => (
                Span::default(),
                self.token_key.to_string(),
                format!("set by {other}: {}", self.message()),
            ),
        };
        ConfigErrors(vec![ConfigError {
            file,
            line: span.line,
            column: span.col,
            path,
            message,
        }])
    }
}

impl fmt::Display for Exposed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.origin {
            Origin::File { span, path } => write!(
                f,
                "{}:{}:{}: {path}: {}",
                self.file.as_deref().unwrap_or("<config>"),
                span.line,
                span.col,
                self.message()
            ),
            Origin::Flag(name) | Origin::Env(name) => {
                write!(f, "{name} {}: {}", self.address, self.message())
            }
            Origin::Default => write!(f, "{}", self.message()),
        }
    }
}

/// The one rule: an admin API beyond loopback must have a token. Every way
/// of setting the address ends here, at start and on every reload.
pub fn check(config: &ProxyConfig) -> Result<(), Exposed> {
    let admin = &config.admin;
    if admin.address.ip().is_loopback() || admin.token.is_some() {
        return Ok(());
    }
    Err(Exposed {
        address: admin.address,
        origin: admin.address_origin.clone(),
        file: config
            .source
            .as_ref()
            .map(|p| Arc::from(p.display().to_string())),
        token_key: admin.token_key,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(address: &str, token: Option<&str>) -> ProxyConfig {
        let mut c = ProxyConfig::minimal(vec![], vec![], vec![]);
        c.source = Some("serin.yaml".into());
        c.admin.address = address.parse().unwrap_or(defaults::ADMIN_ADDRESS);
        c.admin.address_origin = Origin::File {
            span: Span::new(3, 12),
            path: "admin.address".into(),
        };
        c.admin.token = token.map(str::to_string);
        c
    }

    #[test]
    fn beyond_loopback_wants_a_token() {
        assert_eq!(check(&config("127.0.0.1:9901", None)), Ok(()));
        assert_eq!(check(&config("127.8.9.10:9901", None)), Ok(()));
        assert_eq!(check(&config("[::1]:9901", None)), Ok(()));
        assert_eq!(check(&config("0.0.0.0:9901", Some("t"))), Ok(()));
        for open in ["0.0.0.0:9901", "10.1.2.3:9901", "[::]:9901"] {
            let e = check(&config(open, None)).err();
            let text = e.map(|e| e.to_string()).unwrap_or_default();
            assert!(
                text.starts_with("serin.yaml:3:12: admin.address: the admin API on a non-loopback"),
                "{open}: {text}"
            );
        }
    }

    #[test]
    fn a_flag_is_named_and_its_token_wins() {
        let mut c = config("127.0.0.1:9901", Some("from-file"));
        let (cl, origin) = CommandLine::new(
            Some("0.0.0.0:9901".parse().unwrap_or(defaults::ADMIN_ADDRESS)),
            None,
            None,
        );
        c.admin.token = None;
        c.admin.apply_command_line(&cl, origin);
        let text = check(&c).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(text.starts_with("--admin 0.0.0.0:9901: "), "{text}");

        let (cl, origin) = CommandLine::new(None, Some("t".into()), Some("t"));
        c.admin.apply_command_line(&cl, origin);
        assert_eq!(check(&c), Ok(()));
        assert_eq!(c.admin.token_origin, Origin::Env(TOKEN_ENV));
        let (_, origin) = CommandLine::new(None, Some("t".into()), Some("other"));
        assert_eq!(origin, Origin::Flag(TOKEN_FLAG));
    }

    #[test]
    fn a_reload_keeps_what_the_command_line_fixed() {
        let mut running = config("127.0.0.1:9901", None);
        let (cl, origin) = CommandLine::new(
            Some("10.0.0.1:9901".parse().unwrap_or(defaults::ADMIN_ADDRESS)),
            Some("cli".into()),
            None,
        );
        running.admin.apply_command_line(&cl, origin);
        let mut next = config("127.0.0.1:9901", Some("file"));
        next.admin.carry_over(&running.admin);
        assert_eq!(next.admin.address, running.admin.address);
        assert_eq!(next.admin.token.as_deref(), Some("cli"));

        // A token from the file goes with the file, and its removal from an
        // admin API beyond loopback is refused.
        let mut running = config("10.0.0.1:9901", Some("old"));
        let mut next = config("10.0.0.1:9901", Some("new"));
        next.admin.carry_over(&running.admin);
        assert_eq!(next.admin.token.as_deref(), Some("new"));
        running.admin = next.admin.clone();
        let mut next = config("127.0.0.1:9901", None);
        next.admin.address_origin = Origin::Default;
        next.admin.carry_over(&running.admin);
        let errors = check(&next).map_err(Exposed::into_config_errors);
        let text = errors.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(text.contains("serin.yaml:3:12: admin.address"), "{text}");
    }
}
