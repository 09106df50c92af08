//! Replica logs: read line by line from each process's stdout and stderr,
//! kept in a ring buffer per replica for `serin logs`, broadcast for
//! `serin logs -f`, and printed on serin's stdout.
//!
//! Printed lines look like `qotm/v1/0 | the line`, the prefix coloured per
//! service (plain when stdout is not a terminal or `NO_COLOR` is set). With
//! [`LogFormat::Json`] each line is one JSON object:
//!
//! ```json
//! {"time":"2025-01-01T12:00:00.000Z","level":"info","service":"qotm","version":"v1",
//!  "replica":"qotm-v1-0","trace_id":"","message":"listening on 127.0.0.1:40211",
//!  "kind":"service","stream":"stdout"}
//! ```
//!
//! The first seven fields are the schema serin's access log shares (README,
//! "Logs"). When the replica's line is itself a JSON object it is also put
//! under `"fields"`; its own `level` (if a string) becomes the line's level,
//! its `message` or `msg` the message and its `trace_id` (or `traceId`) the
//! trace id. A plain line's level is `info` and its trace id is the one
//! written as `trace_id=…` in it, if any. `stream` is `stdout`, `stderr`,
//! or `serin` for what the runtime says about the replica (started, exited,
//! restarting).
//!
//! A service's build (`serin up --watch`) writes to the same logs: its lines
//! read `qotm/build | ...`, come from replica `qotm-build` with no version,
//! and have `"kind":"build"` in JSON. A filter on a version shows its
//! service's build lines too (a build is for every version).
//!
//! Secret values (of at least [`MIN_MASKED_SECRET_LEN`] characters) that a
//! replica prints are replaced by `***` before a line is stored or shown.

use std::collections::{BTreeMap, VecDeque};
use std::io::{IsTerminal, Write};
use std::sync::mpsc::{SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use tokio::io::AsyncReadExt;
use tokio::sync::broadcast;

/// How printed logs look.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum LogFormat {
    /// `service/version/index | line`, coloured per service on a terminal.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// Whether printed logs are coloured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ColorChoice {
    /// When stdout is a terminal and `NO_COLOR` is unset or empty.
    #[default]
    Auto,
    Always,
    Never,
}

/// Secret values shorter than this are not masked in logs: masking `1` or
/// `on` would garble every line.
pub const MIN_MASKED_SECRET_LEN: usize = 4;
/// The longest line kept; longer ones are cut into pieces of this size.
pub const MAX_LINE_BYTES: usize = 16 * 1024;
/// Lines waiting to be printed before new ones are dropped (a stalled
/// terminal must not stall the replicas).
const PRINT_QUEUE: usize = 8192;
/// Lines buffered for followers that read slowly before they miss some.
const FOLLOW_QUEUE: usize = 4096;

/// Where a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogStream {
    Stdout,
    Stderr,
    /// The runtime, about the replica.
    Serin,
}

/// Whose output a line is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LineKind {
    /// A replica's.
    #[default]
    Service,
    /// A service's build command's (`serin up --watch`).
    Build,
}

impl LineKind {
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Service => "service",
            Self::Build => "build",
        }
    }
}

/// One line of a replica's output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogLine {
    /// Increases with every line of the runtime: orders lines of replicas.
    pub seq: u64,
    /// RFC 3339 UTC with milliseconds.
    pub time: String,
    pub service: String,
    pub version: String,
    /// The replica's name, e.g. `qotm-v1-0`.
    pub replica: String,
    pub index: u32,
    pub stream: LogStream,
    pub message: String,
    #[serde(default)]
    pub kind: LineKind,
}

impl LogLine {
    /// The JSON form printed with [`LogFormat::Json`] (see the module docs).
    pub fn to_json(&self) -> serde_json::Value {
        let mut obj = serde_json::Map::new();
        obj.insert("time".into(), self.time.clone().into());
        let parsed = match serde_json::from_str::<serde_json::Value>(&self.message) {
            Ok(serde_json::Value::Object(fields)) => Some(fields),
            _ => None,
        };
        let field = |names: &[&str]| -> Option<&str> {
            let fields = parsed.as_ref()?;
            names.iter().find_map(|n| fields.get(*n)?.as_str())
        };
        let level = field(&["level"]).map_or_else(|| "info".to_string(), str::to_ascii_lowercase);
        let trace_id = match &parsed {
            Some(_) => field(&["trace_id", "traceId"]).unwrap_or(""),
            None => logfmt_trace_id(&self.message),
        };
        let message = match &parsed {
            Some(_) => field(&["message", "msg"]).unwrap_or(&self.message),
            None => &self.message,
        };
        obj.insert("level".into(), level.into());
        obj.insert("service".into(), self.service.clone().into());
        obj.insert("version".into(), self.version.clone().into());
        obj.insert("replica".into(), self.replica.clone().into());
        obj.insert("trace_id".into(), trace_id.into());
        obj.insert("message".into(), message.into());
        obj.insert("kind".into(), self.kind.as_str().into());
        let stream = match self.stream {
            LogStream::Stdout => "stdout",
            LogStream::Stderr => "stderr",
            LogStream::Serin => "serin",
        };
        obj.insert("stream".into(), stream.into());
        if let Some(mut fields) = parsed {
            // What was lifted to the top is not said twice: the keys the
            // level, trace id and message came from, and any field equal to
            // the top-level field of the same name.
            fn lifted(key: &str) -> &str {
                match key {
                    "traceId" => "trace_id",
                    "msg" => "message",
                    other => other,
                }
            }
            fields.retain(|k, v| {
                let top = obj.get(lifted(k)).and_then(|t| t.as_str());
                let own = v.as_str().map(|v| {
                    if k == "level" {
                        v.to_ascii_lowercase()
                    } else {
                        v.to_string()
                    }
                });
                top.is_none() || own.as_deref() != top
            });
            if !fields.is_empty() {
                obj.insert("fields".into(), serde_json::Value::Object(fields));
            }
        }
        serde_json::Value::Object(obj)
    }

    /// [`Self::to_json`] as one line, the schema's fields first and in the
    /// schema's order (a JSON object's keys are otherwise sorted).
    pub fn to_json_line(&self) -> String {
        let serde_json::Value::Object(mut obj) = self.to_json() else {
            return String::new();
        };
        let mut line = String::with_capacity(256);
        line.push('{');
        let mut push = |key: &str, value: &serde_json::Value| {
            if line.len() > 1 {
                line.push(',');
            }
            line.push_str(&serde_json::Value::from(key).to_string());
            line.push(':');
            line.push_str(&value.to_string());
        };
        for key in JSON_ORDER {
            if let Some(v) = obj.remove(key) {
                push(key, &v);
            }
        }
        for (key, v) in &obj {
            push(key, v);
        }
        line.push('}');
        line
    }

    /// `service/version/index | message` without colour.
    pub fn to_text(&self) -> String {
        format!("{} | {}{}", self.prefix(), self.note(), self.message)
    }

    /// Whose line it is: `service/version/index`, or `service/build`.
    fn prefix(&self) -> String {
        match self.kind {
            LineKind::Service => format!("{}/{}/{}", self.service, self.version, self.index),
            LineKind::Build => format!("{}/build", self.service),
        }
    }

    fn note(&self) -> &'static str {
        if self.stream == LogStream::Serin {
            "[serin] "
        } else {
            ""
        }
    }
}

/// The 32-hex-digit id after `trace_id=` in a plain line, or "".
fn logfmt_trace_id(line: &str) -> &str {
    let Some(at) = line.find("trace_id=") else {
        return "";
    };
    let rest = line[at + "trace_id=".len()..].trim_start_matches('"');
    match rest.get(..32) {
        Some(id) if id.bytes().all(|b| b.is_ascii_hexdigit()) => id,
        _ => "",
    }
}

/// The order of a JSON line's fields: the log schema's, then the rest.
const JSON_ORDER: [&str; 10] = [
    "time", "level", "service", "version", "replica", "trace_id", "message", "kind", "stream",
    "fields",
];

/// Which replicas' lines to read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogFilter {
    pub service: Option<String>,
    pub version: Option<String>,
}

impl LogFilter {
    pub fn matches(&self, line: &LogLine) -> bool {
        self.service.as_ref().is_none_or(|s| *s == line.service)
            && (line.kind == LineKind::Build
                || self.version.as_ref().is_none_or(|v| *v == line.version))
    }
}

/// The lines of the runtime's replicas.
pub(crate) struct LogStore {
    inner: Mutex<Inner>,
    tx: broadcast::Sender<Arc<LogLine>>,
    capacity: usize,
    printer: Option<Printer>,
}

struct Inner {
    next_seq: u64,
    buffers: BTreeMap<String, VecDeque<Arc<LogLine>>>,
}

impl LogStore {
    pub(crate) fn new(capacity: usize, print: Option<(LogFormat, ColorChoice)>) -> Self {
        let (tx, _) = broadcast::channel(FOLLOW_QUEUE);
        Self {
            inner: Mutex::new(Inner {
                next_seq: 0,
                buffers: BTreeMap::new(),
            }),
            tx,
            capacity: capacity.max(1),
            printer: print.and_then(|(format, color)| Printer::start(format, color)),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn push(&self, source: &LineSource, stream: LogStream, message: String) {
        let line = {
            let mut inner = self.lock();
            let seq = inner.next_seq;
            inner.next_seq += 1;
            let line = Arc::new(LogLine {
                seq,
                time: humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string(),
                service: source.service.clone(),
                version: source.version.clone(),
                replica: source.replica.clone(),
                index: source.index,
                stream,
                message,
                kind: source.kind,
            });
            let buf = inner.buffers.entry(source.replica.clone()).or_default();
            if buf.len() >= self.capacity {
                buf.pop_front();
            }
            buf.push_back(line.clone());
            // Sent under the lock so that a follower that subscribed with a
            // snapshot sees every later line exactly once.
            let _ = self.tx.send(line.clone());
            line
        };
        if let Some(p) = &self.printer {
            p.print(&line);
        }
    }

    /// The last `tail` matching lines (all kept ones when `None`), oldest
    /// first, and, with `follow`, a receiver of every later line.
    pub(crate) fn read(
        &self,
        filter: &LogFilter,
        tail: Option<usize>,
        follow: bool,
    ) -> (Vec<Arc<LogLine>>, Option<broadcast::Receiver<Arc<LogLine>>>) {
        let inner = self.lock();
        let mut lines: Vec<Arc<LogLine>> = inner
            .buffers
            .values()
            .flatten()
            .filter(|l| filter.matches(l))
            .cloned()
            .collect();
        lines.sort_by_key(|l| l.seq);
        if let Some(t) = tail {
            let skip = lines.len().saturating_sub(t);
            lines.drain(..skip);
        }
        let rx = follow.then(|| self.tx.subscribe());
        (lines, rx)
    }

    /// The last line a replica (or a build) printed itself, not one serin
    /// wrote about it.
    pub(crate) fn last_output(&self, replica: &str) -> Option<String> {
        let inner = self.lock();
        let lines = inner.buffers.get(replica)?;
        lines
            .iter()
            .rev()
            .find(|l| l.stream != LogStream::Serin)
            .map(|l| l.message.clone())
    }

    /// Forgets a replica's lines (it is gone).
    pub(crate) fn forget(&self, replica: &str) {
        self.lock().buffers.remove(replica);
    }
}

/// Who a line belongs to, and what to hide in it.
#[derive(Debug, Clone)]
pub(crate) struct LineSource {
    pub service: String,
    pub version: String,
    pub replica: String,
    pub index: u32,
    /// Secret values to mask.
    pub secrets: Arc<[String]>,
    pub kind: LineKind,
}

impl LineSource {
    pub(crate) fn mask(&self, mut line: String) -> String {
        for s in self.secrets.iter() {
            if line.contains(s.as_str()) {
                line = line.replace(s.as_str(), "***");
            }
        }
        line
    }
}

/// Reads `pipe` line by line into the store until the process closes it.
pub(crate) async fn pump(
    mut pipe: tokio::net::unix::pipe::Receiver,
    store: Arc<LogStore>,
    source: LineSource,
    stream: LogStream,
) {
    let mut buf: Vec<u8> = Vec::with_capacity(4096);
    let mut chunk = vec![0u8; 8192];
    let emit = |bytes: &[u8]| {
        let mut bytes = bytes;
        if let Some(b) = bytes.strip_suffix(b"\n") {
            bytes = b;
        }
        if let Some(b) = bytes.strip_suffix(b"\r") {
            bytes = b;
        }
        let text = String::from_utf8_lossy(bytes).into_owned();
        store.push(&source, stream, source.mask(text));
    };
    loop {
        let n = match pipe.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        buf.extend_from_slice(&chunk[..n]);
        let mut start = 0;
        while let Some(pos) = buf[start..].iter().position(|b| *b == b'\n') {
            emit(&buf[start..=start + pos]);
            start += pos + 1;
        }
        buf.drain(..start);
        while buf.len() >= MAX_LINE_BYTES {
            let rest = buf.split_off(MAX_LINE_BYTES);
            emit(&buf);
            buf = rest;
        }
    }
    if !buf.is_empty() {
        emit(&buf);
    }
}

/// Prints lines on stdout from its own thread, so that a slow terminal never
/// blocks the runtime; lines beyond [`PRINT_QUEUE`] are dropped and counted.
struct Printer {
    tx: SyncSender<Arc<LogLine>>,
    dropped: Arc<std::sync::atomic::AtomicU64>,
}

impl Printer {
    fn start(format: LogFormat, color: ColorChoice) -> Option<Self> {
        let color = match color {
            ColorChoice::Always => true,
            ColorChoice::Never => false,
            ColorChoice::Auto => {
                std::io::stdout().is_terminal()
                    && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
            }
        };
        let (tx, rx) = sync_channel::<Arc<LogLine>>(PRINT_QUEUE);
        let dropped = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let dropped2 = dropped.clone();
        let spawned = std::thread::Builder::new()
            .name("serin-logs".into())
            .spawn(move || {
                let mut width = 0;
                for line in rx {
                    let mut out = std::io::stdout().lock();
                    let lost = dropped2.swap(0, std::sync::atomic::Ordering::Relaxed);
                    if lost > 0 {
                        let _ = writeln!(
                            out,
                            "serin: {lost} log lines were dropped (stdout too slow)"
                        );
                    }
                    let text = match format {
                        LogFormat::Json => line.to_json_line(),
                        LogFormat::Text => text_line(&line, color, &mut width),
                    };
                    let _ = writeln!(out, "{text}");
                }
            });
        spawned.ok().map(|_| Self { tx, dropped })
    }

    fn print(&self, line: &Arc<LogLine>) {
        if let Err(TrySendError::Full(_)) = self.tx.try_send(line.clone()) {
            self.dropped
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }
}

/// ANSI colours given to services in turn (by a hash of the name, so a
/// service keeps its colour across runs).
const COLOURS: &[&str] = &["36", "33", "32", "35", "34", "91", "96", "93", "92", "95"];

fn text_line(line: &LogLine, color: bool, width: &mut usize) -> String {
    let prefix = line.prefix();
    *width = (*width).max(prefix.len()).min(40);
    let pad = " ".repeat(width.saturating_sub(prefix.len()));
    let note = line.note();
    if color {
        let hash = line
            .service
            .bytes()
            .fold(5381u32, |h, b| h.wrapping_mul(33) ^ u32::from(b));
        let colour = COLOURS[hash as usize % COLOURS.len()];
        format!(
            "\x1b[{colour}m{prefix}{pad} |\x1b[0m {note}{}",
            line.message
        )
    } else {
        format!("{prefix}{pad} | {note}{}", line.message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(message: &str, stream: LogStream) -> LogLine {
        LogLine {
            seq: 0,
            time: "2025-01-01T00:00:00.000Z".into(),
            service: "qotm".into(),
            version: "v1".into(),
            replica: "qotm-v1-0".into(),
            index: 0,
            stream,
            message: message.into(),
            kind: LineKind::Service,
        }
    }

    #[test]
    fn json_lines_put_structured_output_under_fields() {
        let plain = line("hello", LogStream::Stdout).to_json();
        assert_eq!(plain["message"], "hello");
        assert_eq!(plain["level"], "info");
        assert_eq!(plain["stream"], "stdout");
        assert_eq!(plain["trace_id"], "");
        let text = line("hello", LogStream::Stdout).to_json_line();
        assert!(
            text.starts_with(r#"{"time":"2025-01-01T00:00:00.000Z","level":"info","service":"qotm","version":"v1","replica":"qotm-v1-0","trace_id":"","message":"hello","kind":"service""#),
            "{text}"
        );
        assert_eq!(plain["kind"], "service");
        let structured = line(
            r#"{"level":"WARN","msg":"slow","trace_id":"4bf92f3577b34da6a3ce929d0e0e4736"}"#,
            LogStream::Stderr,
        )
        .to_json();
        assert_eq!(structured["fields"], serde_json::Value::Null, "all lifted");
        assert_eq!(structured["level"], "warn");
        assert_eq!(structured["message"], "slow");
        assert_eq!(structured["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
        let logfmt = line(
            "GET / trace_id=4bf92f3577b34da6a3ce929d0e0e4736 status=200",
            LogStream::Stdout,
        )
        .to_json();
        assert_eq!(logfmt["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
    }

    #[test]
    fn text_lines_have_a_prefix() {
        let mut w = 0;
        assert_eq!(
            text_line(&line("hi", LogStream::Stdout), false, &mut w),
            "qotm/v1/0 | hi"
        );
        let coloured = text_line(&line("hi", LogStream::Serin), true, &mut w);
        assert!(coloured.starts_with("\x1b[") && coloured.ends_with("[serin] hi"));
        let build = LogLine {
            kind: LineKind::Build,
            version: String::new(),
            replica: "qotm-build".into(),
            ..line("error: expected `;`", LogStream::Stderr)
        };
        assert_eq!(build.to_text(), "qotm/build | error: expected `;`");
        assert_eq!(build.to_json()["kind"], "build");
        let v1 = LogFilter {
            service: Some("qotm".into()),
            version: Some("v1".into()),
        };
        assert!(
            v1.matches(&build),
            "a version's logs show its service's build"
        );
    }

    #[test]
    fn secrets_are_masked() {
        let source = LineSource {
            service: "a".into(),
            version: "v1".into(),
            replica: "a-v1-0".into(),
            index: 0,
            secrets: Arc::from(vec!["hunter22".to_string()]),
            kind: LineKind::Service,
        };
        assert_eq!(source.mask("pass=hunter22!".into()), "pass=***!");
    }
}
