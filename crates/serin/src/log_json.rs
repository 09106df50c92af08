//! serin's own log lines as JSON, in the schema shared with access logs and
//! the runtime's service logs (README, "Logs"): `time`, `level`, `service`,
//! `version`, `replica`, `trace_id`, `message` and `kind` first, then the
//! event's other fields.
//!
//! An event's own `service`, `version`, `replica` or `trace_id` field fills
//! the slot of that name (an access line names the service that served the
//! request); otherwise the line is serin's: service `serin`, its version.

use std::fmt::{self, Write as _};

use serde_json::Value;
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// The target of access log events (see serin-proxy's forward.rs).
const ACCESS_TARGET: &str = "serin::access";

/// The slots every line has, in order, after `time` and `level`.
const SLOTS: [&str; 5] = ["service", "version", "replica", "trace_id", "message"];

/// Formats each event as one JSON object on one line.
pub struct JsonLines;

impl<S, N> FormatEvent<S, N> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let meta = event.metadata();
        let mut fields = Fields::default();
        event.record(&mut fields);
        let access = meta.target() == ACCESS_TARGET;
        let mut slots: [Value; 5] = [
            Value::from("serin"),
            Value::from(env!("CARGO_PKG_VERSION")),
            Value::from(""),
            Value::from(""),
            Value::from(""),
        ];
        let mut rest = Vec::with_capacity(fields.0.len());
        for (name, value) in fields.0 {
            match SLOTS.iter().position(|s| *s == name) {
                Some(i) => slots[i] = value,
                None => rest.push((name, value)),
            }
        }
        let mut line = String::with_capacity(320);
        line.push('{');
        push(&mut line, "time", &Value::from(now()));
        push(
            &mut line,
            "level",
            &Value::from(meta.level().as_str().to_ascii_lowercase()),
        );
        for (name, value) in SLOTS.iter().zip(&slots) {
            push(&mut line, name, value);
        }
        push(
            &mut line,
            "kind",
            &Value::from(if access { "access" } else { "serin" }),
        );
        if !access {
            push(&mut line, "target", &Value::from(meta.target()));
        }
        for (name, value) in &rest {
            push(&mut line, name, value);
        }
        line.push('}');
        writeln!(writer, "{line}")
    }
}

/// RFC 3339 UTC with milliseconds, as the runtime's service log lines.
fn now() -> String {
    humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string()
}

fn push(line: &mut String, name: &str, value: &Value) {
    if !line.ends_with('{') {
        line.push(',');
    }
    let _ = write!(line, "{}:{value}", Value::from(name));
}

/// An event's fields in the order they were written.
#[derive(Default)]
struct Fields(Vec<(&'static str, Value)>);

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.push((field.name(), Value::from(value)));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.push((field.name(), Value::from(value)));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.push((field.name(), Value::from(value)));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.push((field.name(), Value::from(value)));
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.push((field.name(), Value::from(value)));
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.0.push((field.name(), Value::from(value.to_string())));
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0
            .push((field.name(), Value::from(format!("{value:?}"))));
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    use tracing_subscriber::fmt::MakeWriter;

    use super::*;

    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl Write for Buffer {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().map_or(Ok(0), |mut v| {
                v.extend_from_slice(b);
                Ok(b.len())
            })
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Buffer {
        type Writer = Buffer;
        fn make_writer(&'a self) -> Self::Writer {
            self.clone()
        }
    }

    fn lines(f: impl FnOnce()) -> Vec<Value> {
        let buf = Buffer::default();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(buf.clone())
            .event_format(JsonLines)
            .finish();
        tracing::subscriber::with_default(subscriber, f);
        let text = String::from_utf8(buf.0.lock().map(|v| v.clone()).unwrap_or_default())
            .unwrap_or_default();
        text.lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect()
    }

    #[test]
    fn own_and_access_lines_share_the_schema() {
        let out = lines(|| {
            tracing::warn!(address = "127.0.0.1:1", "listening");
            tracing::info!(
                target: "serin::access",
                service = "qotm",
                version = "v1",
                replica = "qotm-v1-0",
                trace_id = "4bf92f3577b34da6a3ce929d0e0e4736",
                status = 200u64,
                "GET / 200"
            );
        });
        assert_eq!(out.len(), 2);
        for v in &out {
            for key in [
                "time", "level", "service", "version", "replica", "trace_id", "message",
            ] {
                assert!(v.get(key).is_some(), "{key} missing in {v}");
            }
        }
        assert_eq!(out[0]["level"], "warn");
        assert_eq!(out[0]["service"], "serin");
        assert_eq!(out[0]["message"], "listening");
        assert_eq!(out[0]["address"], "127.0.0.1:1");
        assert_eq!(out[0]["kind"], "serin");
        assert_eq!(out[1]["kind"], "access");
        assert_eq!(out[1]["service"], "qotm");
        assert_eq!(out[1]["replica"], "qotm-v1-0");
        assert_eq!(out[1]["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(out[1]["status"], 200);
        assert_eq!(out[1]["message"], "GET / 200");
    }
}
