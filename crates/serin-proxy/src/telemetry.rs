//! Spans of the proxy's work, exported over OTLP/HTTP (protobuf) when an
//! endpoint is configured: one server span per request through the proxy
//! (with the route chosen) and one client span per upstream attempt (retries
//! are attempts 2, 3, ...). The upstream's `traceparent` names the attempt
//! span as parent, so the next hop's spans hang under it.
//!
//! Spans live in the request's future on its worker and are handed, when
//! they end, to the OpenTelemetry SDK's batch processor, which exports from
//! its own thread. Without an exporter nothing here runs but
//! [`crate::trace_context::continue_or_start`].

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

use http::{HeaderMap, Method};
use opentelemetry::trace::{
    Span as _, SpanContext, SpanId, SpanKind, Status, TraceContextExt, TraceFlags, TraceId,
    TraceState, Tracer as _, TracerProvider as _,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{Sampler, SdkTracer, SdkTracerProvider};
use serin_config::proxy::{TracingConfig, defaults};

use crate::trace_context::{self, TRACEPARENT, TRACESTATE, TraceIdHex, TraceParent};

/// Variables that turn tracing on without a `tracing` section, as for any
/// OpenTelemetry SDK.
const ENDPOINT_VARIABLES: [&str; 2] = [
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
];

/// Why tracing could not start.
#[derive(Debug, thiserror::Error)]
#[error("cannot export traces: {0}")]
pub struct TelemetryError(#[from] opentelemetry_otlp::ExporterBuildError);

/// The tracing a config asks for: its section, else defaults when an
/// `OTEL_EXPORTER_OTLP_*ENDPOINT` variable is set, else none.
pub fn wanted(config: Option<&TracingConfig>) -> Option<TracingConfig> {
    if let Some(c) = config {
        return Some(c.clone());
    }
    let from_env = ENDPOINT_VARIABLES
        .iter()
        .any(|v| std::env::var_os(v).is_some_and(|s| !s.is_empty()));
    from_env.then(|| TracingConfig {
        endpoint: None,
        service_name: None,
        sampling_ratio: defaults::TRACING_SAMPLING_RATIO,
        headers: Vec::new(),
    })
}

/// A running exporter: the SDK's provider with its batch processor thread.
pub struct Exporter {
    pub config: TracingConfig,
    provider: SdkTracerProvider,
    tracer: SdkTracer,
}

impl Exporter {
    pub fn start(config: &TracingConfig) -> Result<Self, TelemetryError> {
        // The exporter builds its own reqwest client (so it honours the
        // OTEL_EXPORTER_OTLP_* timeout and the rest), which takes the
        // process's default crypto provider; the workspace's reqwest has
        // none of its own (serin_config::http_client says why). ring is
        // serin's crypto everywhere; a provider already installed stays.
        if rustls::crypto::CryptoProvider::get_default().is_none() {
            let _already = rustls::crypto::ring::default_provider().install_default();
        }
        let mut builder = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpBinary);
        if let Some(url) = config.traces_url() {
            builder = builder.with_endpoint(url);
        }
        if !config.headers.is_empty() {
            builder =
                builder.with_headers(config.headers.iter().cloned().collect::<HashMap<_, _>>());
        }
        let exporter = builder.build()?;
        // The SDK's resource reads OTEL_SERVICE_NAME and
        // OTEL_RESOURCE_ATTRIBUTES; the config's name wins over them.
        let mut resource = Resource::builder();
        match &config.service_name {
            Some(name) => resource = resource.with_service_name(name.clone()),
            None if std::env::var_os("OTEL_SERVICE_NAME").is_none() => {
                resource = resource.with_service_name(defaults::TRACING_SERVICE_NAME);
            }
            None => {}
        }
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
                config.sampling_ratio,
            ))))
            .with_resource(resource.build())
            .build();
        let tracer = provider.tracer("serin");
        Ok(Self {
            config: config.clone(),
            provider,
            tracer,
        })
    }

    /// What the request path records spans with.
    pub fn tracer(&self) -> Tracer {
        Tracer(self.tracer.clone())
    }

    /// Exports what is queued and stops. Blocks (on the export's HTTP
    /// request): call it off the runtime's threads.
    pub fn shutdown(self) {
        if let Err(e) = self.provider.shutdown() {
            tracing::warn!(error = %e, "trace exporter did not shut down cleanly");
        }
    }
}

/// Records spans; cheap to clone, shared by the workers through the snapshot.
#[derive(Clone, Debug)]
pub struct Tracer(SdkTracer);

/// The trace of one request through the proxy.
pub struct RequestTrace {
    /// The position the next hop continues from when no attempt span says
    /// otherwise; its trace id is the one logged.
    position: TraceParent,
    /// The request's span, when spans are recorded.
    recorded: Option<(SdkTracer, Context)>,
}

impl RequestTrace {
    /// Continues the client's trace or starts one, and with a tracer opens
    /// the request's span. Sets the request's `traceparent` to what filters
    /// and mirrors should see as their parent.
    pub fn start<B>(
        tracer: Option<&Tracer>,
        req: &mut http::Request<B>,
        listener: &str,
        client: IpAddr,
    ) -> Self {
        let Some(Tracer(tracer)) = tracer else {
            return Self {
                position: trace_context::continue_or_start(req.headers_mut()),
                recorded: None,
            };
        };
        let method = req.method().clone();
        let headers = req.headers_mut();
        let parent = match TraceParent::from_headers(headers) {
            Some(tp) => {
                let state = headers
                    .get(&TRACESTATE)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|s| TraceState::from_str(s).ok())
                    .unwrap_or_default();
                Context::new().with_remote_span_context(SpanContext::new(
                    TraceId::from_bytes(tp.trace_id),
                    SpanId::from_bytes(tp.parent_id),
                    TraceFlags::new(tp.flags),
                    true,
                    state,
                ))
            }
            None => {
                headers.remove(&TRACESTATE);
                Context::new()
            }
        };
        let span = tracer
            .span_builder(method.to_string())
            .with_kind(SpanKind::Server)
            .with_attributes([
                KeyValue::new("http.request.method", method.as_str().to_string()),
                KeyValue::new("serin.listener", listener.to_string()),
                KeyValue::new("client.address", client.to_string()),
            ])
            .start_with_context(tracer, &parent);
        if !span.span_context().is_valid() {
            // The provider is shutting down: no span, but still a trace.
            return Self {
                position: trace_context::continue_or_start(headers),
                recorded: None,
            };
        }
        let position = position_of(span.span_context());
        headers.insert(TRACEPARENT.clone(), position.to_header());
        Self {
            position,
            recorded: Some((tracer.clone(), parent.with_span(span))),
        }
    }

    pub fn trace_id(&self) -> TraceIdHex {
        self.position.trace_id_hex()
    }

    /// Names the request's span after the route it matched.
    pub fn routed(&self, method: &Method, route: &str, path: &str) {
        if let Some((_, cx)) = &self.recorded {
            let span = cx.span();
            span.update_name(format!("{method} {route}"));
            span.set_attribute(KeyValue::new("serin.route", route.to_string()));
            span.set_attribute(KeyValue::new("url.path", path.to_string()));
        }
    }

    /// Ends the request's span with the status sent to the client.
    pub fn finish(&self, status: u16, backend: Option<(&str, &str)>) {
        let Some((_, cx)) = &self.recorded else {
            return;
        };
        let span = cx.span();
        span.set_attribute(KeyValue::new(
            "http.response.status_code",
            i64::from(status),
        ));
        if let Some((service, version)) = backend {
            span.set_attribute(KeyValue::new("serin.service", service.to_string()));
            span.set_attribute(KeyValue::new("serin.version", version.to_string()));
        }
        if status >= 500 {
            span.set_status(Status::error(""));
        }
        span.end();
    }

    /// Opens the span of attempt `number` (1 for the first try) to the
    /// endpoint `name` at `addr` of `service`/`version`.
    pub fn attempt(
        &self,
        number: u32,
        (service, version): (&str, &str),
        (name, addr): (&str, SocketAddr),
    ) -> Attempt {
        let Some((tracer, cx)) = &self.recorded else {
            return Attempt(None);
        };
        let mut attributes = vec![
            KeyValue::new("serin.attempt", i64::from(number)),
            KeyValue::new("serin.endpoint", name.to_string()),
            KeyValue::new("server.address", addr.ip().to_string()),
            KeyValue::new("server.port", i64::from(addr.port())),
        ];
        if number > 1 {
            attributes.push(KeyValue::new(
                "http.request.resend_count",
                i64::from(number - 1),
            ));
        }
        let span = tracer
            .span_builder(format!("{service}/{version}"))
            .with_kind(SpanKind::Client)
            .with_attributes(attributes)
            .start_with_context(tracer, cx);
        Attempt(span.span_context().is_valid().then_some(span))
    }
}

/// The span of one upstream attempt; ends when told how it went.
pub struct Attempt(Option<opentelemetry_sdk::trace::Span>);

impl Attempt {
    /// Sets the upstream request's `traceparent` to this attempt's span, so
    /// that the next hop's spans are its children. Without a span the
    /// request keeps the `traceparent` set when it came in.
    pub fn propagate(&self, headers: &mut HeaderMap) {
        if let Some(span) = &self.0 {
            headers.insert(
                TRACEPARENT.clone(),
                position_of(span.span_context()).to_header(),
            );
        }
    }

    /// The upstream answered `status`.
    pub fn answered(self, status: u16) {
        if let Some(mut span) = self.0 {
            span.set_attribute(KeyValue::new(
                "http.response.status_code",
                i64::from(status),
            ));
            if status >= 500 {
                span.set_status(Status::error(""));
            }
            span.end();
        }
    }

    /// The attempt got no response: `error` says why (a short constant).
    pub fn failed(self, error: &'static str) {
        if let Some(mut span) = self.0 {
            span.set_attribute(KeyValue::new("error.type", error));
            span.set_status(Status::error(error));
            span.end();
        }
    }
}

fn position_of(sc: &SpanContext) -> TraceParent {
    TraceParent {
        trace_id: sc.trace_id().to_bytes(),
        parent_id: sc.span_id().to_bytes(),
        flags: sc.trace_flags().to_u8(),
    }
}
