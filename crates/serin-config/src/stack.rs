//! The stack file of `serin up`: which services to run, how many replicas of
//! each version, how to probe them, restart them and roll them out.
//!
//! The file is decoded into raw structs ([`raw`]) with every problem reported
//! at once (`file:line:column: path: message`), then checked and resolved
//! into the validated model ([`Stack`] and friends, in [`model`]) that the
//! runtime trusts: defaults filled in, service settings merged into each
//! version, secrets and files read, paths made absolute.
//!
//! # Example
//!
//! ```yaml
//! services:
//!   - name: auth
//!     command: serin-demo            # a bare name: next to the serin executable, then PATH
//!     args: [auth, --users, users.txt]
//!     readiness: {httpGet: {path: /ready}, period: 1s}
//!
//!   - name: qotm
//!     # Every key but `name`, `dependsOn` and `versions` is a default for the
//!     # service's versions; each version may override it.
//!     command: serin-demo            # or ./bin/qotm: a path relative to this file's folder
//!     args: [qotm]
//!     env: {QUOTE_LANG: en}          # merged with the version's env (the version wins)
//!     replicas: 1                    # 0 to 100
//!     readiness:                     # traffic only once ready
//!       httpGet: {path: /ready}      # `port` defaults to the replica's PORT
//!       initialDelay: 0s
//!       period: 1s
//!       timeout: 1s
//!       failureThreshold: 1
//!       successThreshold: 1
//!     liveness:                      # restarted when it fails failureThreshold times in a row
//!       httpGet: {path: /health}     # or tcpSocket: {} or exec: {command: [sh, -c, "..."]}
//!       period: 5s
//!       failureThreshold: 3
//!     restartPolicy: Always          # Always | OnFailure | Never
//!     restartBackoff: {initial: 10s, max: 5m, resetAfter: 10m}
//!     terminationGracePeriod: 30s    # SIGTERM, then SIGKILL after this long
//!     dependsOn: [auth]              # each start and restart waits for a ready replica of auth
//!                                    # ({service: auth, condition: started}: a running one)
//!     files:                         # written under $SERIN_FILES_DIR (mode 0600, dirs 0700)
//!       - {path: config/app.toml, content: "greeting = 'hi'\n"}
//!       - {path: quotes.txt, fromFile: data/quotes.txt}
//!     secrets:                       # env vars, or files under $SERIN_SECRETS_DIR with asFile
//!       - {name: API_TOKEN, fromFile: secrets/token.txt}
//!       - {name: DB_PASS, fromEnv: HOST_DB_PASS}
//!       - {name: TLS_KEY, value: "...", asFile: true}
//!     strategy: {type: RollingUpdate, maxSurge: 1, maxUnavailable: 0}   # or {type: Recreate}
//!     watch:                         # `serin up --watch`: rebuild and roll on a change
//!       paths: [src, Cargo.toml]     # relative to this file's folder; each must exist
//!       ignore: ["*.tmp", src/generated]   # target and .git always
//!       build: cargo build           # `sh -c` line, or [cargo, build]; none: only roll
//!     versions:
//!       - name: v1
//!         replicas: 2
//!         args: [qotm, --version, v1]
//!       - name: v2
//!         args: [qotm, --version, v2]
//!         env: {EXTRA: "1"}
//! ```
//!
//! # Meanings and defaults
//!
//! - `services[].name` is a DNS label (`a-z`, `0-9`, `-`, starting with a
//!   letter); version names are lowercase labels that may also hold `.`
//!   (`v1`, `1.10`). A service without `versions` has one version named
//!   [`DEFAULT_VERSION`] made of the service's own settings. Replicas are
//!   named `service-version-N`, so these names must be unique in the stack.
//! - A version inherits every setting of its service and overrides it key by
//!   key: `env` is merged by variable, `files` by path and `secrets` by name
//!   (the version's entry wins); every other key is replaced as a whole.
//! - `command` is required (on the service or on each version). One with a
//!   `/` is a path relative to the stack file's folder; a bare name is looked
//!   up by the runtime when it starts the process. Processes run in the stack
//!   file's folder.
//! - Probes follow Kubernetes: exactly one of `httpGet` (`path`, default `/`;
//!   a 2xx or 3xx answer is success), `tcpSocket` (a connection is success)
//!   or `exec` (exit status 0 is success); `port` defaults to the replica's
//!   `PORT`. Defaults are Kubernetes' ([`DEFAULT_PROBE_PERIOD`] and the other
//!   `DEFAULT_PROBE_*` constants); thresholds are at least 1 and a liveness
//!   probe's `successThreshold` must be 1.
//! - `restartBackoff` defaults to Kubernetes' CrashLoopBackOff: 10 s doubling
//!   to 5 min, forgotten after 10 min of running.
//! - `strategy` defaults to `RollingUpdate` with `maxSurge: 1` and
//!   `maxUnavailable: 0` (a new replica is ready before an old one stops);
//!   both 0 is an error, as in Kubernetes.
//! - `files[]` take exactly one of `content` and `fromFile` (relative to the
//!   stack file's folder, read when the file is loaded); `path` is relative
//!   and stays inside the files folder.
//! - `secrets[]` take exactly one of `value`, `fromFile` (one trailing
//!   newline is dropped) and `fromEnv` (read from serin's environment when
//!   the file is loaded). A secret is handed over as an environment variable
//!   named `name`, or with `asFile: true` only as the file
//!   `$SERIN_SECRETS_DIR/name`. Secret values are never shown: their `Debug`
//!   is redacted and no error message quotes them.
//! - `watch` is the service's only (not a version default): a change under
//!   one of `paths` runs `build` in the stack file's folder and, when it
//!   exits 0, rolls every version of the service out again (see
//!   serin-runtime's `watch`). `ignore` globs are gitignore-like (see
//!   [`watch::IgnoreRules`]); [`DEFAULT_WATCH_IGNORE`] is always added.
//! - `PORT`, `SERIN_SERVICE`, `SERIN_VERSION`, `SERIN_REPLICA`,
//!   `SERIN_FILES_DIR` and `SERIN_SECRETS_DIR` are set by serin and may not
//!   be set in `env` or `secrets`.

pub mod build_output;
pub mod canary_check;
pub mod canary_hook;
mod gateway;
pub use gateway::mesh_route_name;
pub mod model;
pub mod raw;
pub mod sidecar;
mod validate;
pub mod watch;

use std::path::Path;

pub use model::*;

use crate::decode::{Decode, Node, parse_document};
use crate::error::{ConfigErrors, Problems, Span};
use crate::guard::read_guarded;

/// Reads, decodes and validates the stack file at `path`. Relative paths in
/// it are resolved against the file's folder.
pub fn load_stack(path: &Path) -> Result<Stack, ConfigErrors> {
    let name = path.display().to_string();
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => {
            let mut problems = Problems::new(name);
            problems.report(
                Span::new(1, 1),
                "",
                format!("cannot read the stack file: {e}"),
            );
            return problems.finish(Stack::default());
        }
    };
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => Path::new(".").to_path_buf(),
    };
    parse_stack(&text, &name, &dir)
}

/// Decodes and validates stack file text. `file_name` is used in error
/// messages; `base_dir` is the folder relative paths are resolved against
/// (made absolute here).
pub fn parse_stack(text: &str, file_name: &str, base_dir: &Path) -> Result<Stack, ConfigErrors> {
    parse_stack_file(text, file_name, base_dir).map(|f| f.stack)
}

/// A stack file: its services and the gateway in front of them.
#[derive(Debug, Clone)]
pub struct StackFile {
    pub stack: Stack,
    /// The proxy config of the gateway: one listener named `gateway`, the
    /// stack's services (endpoints found by the runtime) and the routes.
    pub gateway: crate::proxy::ProxyConfig,
    /// The sidecars' outbound routes (`caller>callee`), checked like the
    /// gateway's; their listeners come and go with the replicas.
    pub mesh: Vec<crate::proxy::RouteConfig>,
}

/// Reads, decodes and validates a stack file with its gateway.
pub fn load_stack_file(path: &Path) -> Result<StackFile, ConfigErrors> {
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| {
        let mut problems = Problems::new(name.clone());
        problems.report(
            Span::new(1, 1),
            "",
            format!("cannot read the stack file: {e}"),
        );
        problems.into_errors()
    })?;
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => Path::new(".").to_path_buf(),
    };
    parse_stack_file(&text, &name, &dir)
}

/// Decodes and validates stack file text with its gateway; every problem of
/// both is reported at once. Never panics: a bug met on the way is reported
/// as a problem of the file.
pub fn parse_stack_file(
    text: &str,
    file_name: &str,
    base_dir: &Path,
) -> Result<StackFile, ConfigErrors> {
    read_guarded(file_name, || decode_stack_file(text, file_name, base_dir))
}

fn decode_stack_file(
    text: &str,
    file_name: &str,
    base_dir: &Path,
) -> Result<StackFile, ConfigErrors> {
    let mut problems = Problems::new(file_name);
    let Some(doc) = parse_document(text, &mut problems) else {
        return Err(problems.into_errors());
    };
    let raw = raw::RawStack::decode(Node::root(&doc), &mut problems).unwrap_or_default();
    let base_dir = std::path::absolute(base_dir).unwrap_or_else(|_| base_dir.to_path_buf());
    let stack = validate::validate(&raw, file_name, &base_dir, &mut problems);
    let mut gateway = gateway::validate(&raw, &stack, &base_dir, &mut problems);
    let (mesh, routes): (Vec<_>, Vec<_>) = gateway
        .routes
        .into_iter()
        .partition(|r| r.name.contains('>'));
    gateway.routes = routes;
    gateway.warnings = problems.take_warnings();
    problems.finish(StackFile {
        stack,
        gateway,
        mesh,
    })
}
