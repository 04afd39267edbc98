//! Telemetry: where logs and spans go. Logs are human-readable text by default, JSON lines
//! with `--log-format json`, on stderr; the level comes from `RUST_LOG` (default `info`).
//!
//! With the `otel` cargo feature, spans are also exported over OTLP/HTTP (protobuf) when the
//! standard `OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set,
//! and the W3C trace-context propagator is installed globally for sinks that pass
//! `traceparent` on. Like `RUST_LOG`, these variables are read here and not through the
//! config file, because every OpenTelemetry deployment already sets them this way. Without
//! the feature, nothing of OpenTelemetry is compiled in.

use tracing_subscriber::EnvFilter;

use crate::trace_context::TraceParent;
use tracing_subscriber::Layer;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// Keeps span export running; dropping it sends the spans still buffered. Hold it until the
/// program ends.
#[must_use = "dropping the guard stops span export"]
pub struct Guard {
    #[cfg(feature = "otel")]
    provider: Option<opentelemetry_sdk::trace::SdkTracerProvider>,
}

impl Drop for Guard {
    fn drop(&mut self) {
        #[cfg(feature = "otel")]
        if let Some(provider) = self.provider.take() {
            if let Err(err) = provider.shutdown() {
                eprintln!("ccrelay: cannot flush spans to the OTLP endpoint: {err}");
            }
        }
    }
}

/// Installs the global subscriber. Call it once, before any tokio runtime starts (the OTLP
/// exporter's HTTP client is a blocking one, with its own thread).
///
/// # Panics
/// When a global subscriber is already installed.
pub fn init(format: LogFormat) -> Guard {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let logs = match format {
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_writer(std::io::stderr)
            .boxed(),
    };
    let registry = tracing_subscriber::registry().with(filter).with(logs);

    #[cfg(feature = "otel")]
    {
        let (spans, provider, failure) = match otel::layer() {
            Ok(Some((layer, provider))) => (Some(layer), Some(provider), None),
            Ok(None) => (None, None, None),
            Err(err) => (None, None, Some(err)),
        };
        registry.with(spans).init();
        if let Some(err) = failure {
            tracing::error!(error = %err, "spans are not exported: the OTLP exporter could not be built");
        }
        Guard { provider }
    }
    #[cfg(not(feature = "otel"))]
    {
        registry.init();
        Guard {}
    }
}

/// The trace context of the request being handled: its span was made by `span_in_trace`
/// from `incoming` (a `traceparent` header), so it continues the sender's trace when that
/// was valid; otherwise a new trace starts. With OpenTelemetry export on, the ids are the
/// exported span's own, so the far side joins the very same trace.
pub fn ingest_trace(incoming: Option<&str>) -> TraceParent {
    #[cfg(feature = "otel")]
    if let Some(exported) = otel::current() {
        return exported;
    }
    incoming
        .and_then(TraceParent::parse)
        .map_or_else(TraceParent::new_root, |parent| parent.child())
}

/// Makes a span with `make` as a child of the trace `traceparent` names, if it is valid, and
/// records its `trace_id` field. The parent must be in place when the span is created, since
/// OpenTelemetry starts the exported span then.
pub fn span_in_trace(
    traceparent: Option<&str>,
    make: impl FnOnce() -> tracing::Span,
) -> tracing::Span {
    // These spans are at info level: below it (a benchmark's RUST_LOG=warn) they are disabled,
    // and parsing the traceparent for them is wasted on the delivery path.
    if tracing::level_filters::LevelFilter::current() < tracing::Level::INFO {
        return make();
    }
    let parent = traceparent.and_then(TraceParent::parse);
    #[cfg(feature = "otel")]
    let attached = parent.as_ref().map(otel::attach);
    let span = make();
    #[cfg(feature = "otel")]
    drop(attached);
    if let Some(parent) = parent {
        span.record("trace_id", parent.trace_id_hex());
    }
    span
}

#[cfg(feature = "otel")]
mod otel {
    use opentelemetry::trace::TracerProvider as _;
    use opentelemetry_otlp::ExporterBuildError as BuildError;
    use opentelemetry_otlp::WithExportConfig as _;
    use opentelemetry_sdk::Resource;
    use opentelemetry_sdk::propagation::TraceContextPropagator;
    use opentelemetry_sdk::trace::SdkTracerProvider;
    use tracing_subscriber::registry::LookupSpan;

    use super::TraceParent;

    pub(super) type SpanLayer<S> =
        tracing_opentelemetry::OpenTelemetryLayer<S, opentelemetry_sdk::trace::Tracer>;

    /// The variables that name where spans go; without either, nothing is exported.
    const ENDPOINT_VARIABLES: [&str; 2] = [
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        "OTEL_EXPORTER_OTLP_ENDPOINT",
    ];

    /// The span-export layer and its provider, or `None` when no endpoint is configured or
    /// `OTEL_SDK_DISABLED=true`.
    pub(super) fn layer<S>() -> Result<Option<(SpanLayer<S>, SdkTracerProvider)>, BuildError>
    where
        S: tracing::Subscriber + for<'span> LookupSpan<'span>,
    {
        let disabled = std::env::var("OTEL_SDK_DISABLED")
            .is_ok_and(|value| value.trim().eq_ignore_ascii_case("true"));
        let configured = ENDPOINT_VARIABLES
            .iter()
            .any(|name| std::env::var_os(name).is_some_and(|value| !value.is_empty()));
        if disabled || !configured {
            return Ok(None);
        }
        // The exporter reads the endpoint, headers, timeout and compression from the standard
        // OTEL_EXPORTER_OTLP_* variables itself.
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
            .build()?;
        let mut resource = Resource::builder();
        // OTEL_SERVICE_NAME, when set, names the service; otherwise it is "ccrelay".
        if std::env::var_os("OTEL_SERVICE_NAME").is_none() {
            resource = resource.with_service_name("ccrelay");
        }
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(resource.build())
            .build();
        let tracer = provider.tracer(env!("CARGO_PKG_NAME"));
        opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
        opentelemetry::global::set_tracer_provider(provider.clone());
        Ok(Some((
            tracing_opentelemetry::layer().with_tracer(tracer),
            provider,
        )))
    }

    /// The exported ids of the current span, or `None` when no span is being exported (no
    /// endpoint configured, or the span is filtered out).
    pub(super) fn current() -> Option<TraceParent> {
        use opentelemetry::trace::TraceContextExt as _;
        use tracing_opentelemetry::OpenTelemetrySpanExt as _;
        let context = tracing::Span::current().context();
        let span_context = context.span().span_context().clone();
        if !span_context.is_valid() {
            return None;
        }
        Some(TraceParent {
            trace_id: span_context.trace_id().to_bytes(),
            span_id: span_context.span_id().to_bytes(),
            sampled: span_context.is_sampled(),
        })
    }

    /// Makes `parent` the OpenTelemetry context of spans created until the guard drops.
    pub(super) fn attach(parent: &TraceParent) -> opentelemetry::ContextGuard {
        use opentelemetry::trace::{
            SpanContext, SpanId, TraceContextExt as _, TraceFlags, TraceId, TraceState,
        };
        let flags = if parent.sampled {
            TraceFlags::SAMPLED
        } else {
            TraceFlags::default()
        };
        let remote = SpanContext::new(
            TraceId::from_bytes(parent.trace_id),
            SpanId::from_bytes(parent.span_id),
            flags,
            true,
            TraceState::default(),
        );
        opentelemetry::Context::new()
            .with_remote_span_context(remote)
            .attach()
    }
}
