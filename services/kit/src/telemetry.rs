//! Logs, traces and metrics, set up once per process.
//!
//! - Logs: `tracing` with pretty or JSON lines, filtered by config or `RUST_LOG`.
//! - Traces: OpenTelemetry, exported by OTLP when `OTEL_EXPORTER_OTLP_ENDPOINT` (or the
//!   traces-specific variable) is set; the W3C propagator takes trace context from incoming
//!   gRPC metadata and passes it on in outgoing calls and in every stored event, so one trace
//!   follows a case across services. Without an endpoint, contexts are still made and passed
//!   on (so events carry them) but nothing is exported.
//! - Metrics: OpenTelemetry instruments, read by a Prometheus registry for `/metrics` and
//!   exported by OTLP when an endpoint is set.

use std::{collections::HashMap, sync::OnceLock};

use opentelemetry::{
    KeyValue, global,
    metrics::{Histogram, Meter},
    propagation::{Extractor, Injector},
    trace::TracerProvider as _,
};
use opentelemetry_sdk::{
    Resource,
    metrics::SdkMeterProvider,
    propagation::TraceContextPropagator,
    trace::{Sampler, SdkTracerProvider},
};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::{
    EnvFilter, Layer, filter::LevelFilter, layer::SubscriberExt, util::SubscriberInitExt,
};

use crate::config::{LogConfig, LogFormat};

/// Keeps the providers alive; call [`Telemetry::shutdown`] before exit to flush.
pub struct Telemetry {
    tracer_provider: SdkTracerProvider,
    meter_provider: SdkMeterProvider,
    registry: prometheus::Registry,
}

impl std::fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Telemetry")
    }
}

fn otlp_configured(signal: &str) -> bool {
    let set = |k: &str| std::env::var(k).is_ok_and(|v| !v.is_empty());
    set("OTEL_EXPORTER_OTLP_ENDPOINT") || set(&format!("OTEL_EXPORTER_OTLP_{signal}_ENDPOINT"))
}

/// Sets up logging, tracing and metrics for `service`. Returns an error only when an
/// exporter cannot be built; a collector that is configured but down only logs errors.
pub fn init(service: &str, log: &LogConfig) -> anyhow::Result<Telemetry> {
    let resource = Resource::builder()
        .with_service_name(service.to_string())
        .build();
    global::set_text_map_propagator(TraceContextPropagator::new());

    let export_traces = otlp_configured("TRACES");
    let mut tracer_builder = SdkTracerProvider::builder().with_resource(resource.clone());
    if export_traces {
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .build()?;
        tracer_builder = tracer_builder.with_batch_exporter(exporter);
    } else {
        // Nothing to export to: keep making (and propagating) contexts, record nothing.
        tracer_builder =
            tracer_builder.with_sampler(Sampler::ParentBased(Box::new(Sampler::AlwaysOff)));
    }
    let tracer_provider = tracer_builder.build();
    global::set_tracer_provider(tracer_provider.clone());

    let registry = prometheus::Registry::new();
    let prometheus_reader = opentelemetry_prometheus::exporter()
        .with_registry(registry.clone())
        .build()?;
    let mut meter_builder = SdkMeterProvider::builder()
        .with_resource(resource)
        .with_reader(prometheus_reader);
    if otlp_configured("METRICS") {
        let exporter = opentelemetry_otlp::MetricExporter::builder()
            .with_tonic()
            .build()?;
        meter_builder = meter_builder.with_periodic_exporter(exporter);
    }
    let meter_provider = meter_builder.build();
    global::set_meter_provider(meter_provider.clone());

    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&log.filter))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    // The log filter governs log lines only: spans at INFO and above always reach the
    // OpenTelemetry layer, so trace context is made, passed on and exported whatever the
    // log level.
    let otel = tracing_opentelemetry::layer()
        .with_tracer(tracer_provider.tracer("minqing"))
        .with_filter(LevelFilter::INFO);
    let fmt = match log.format {
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .with_current_span(true)
            .with_filter(filter)
            .boxed(),
        LogFormat::Pretty => tracing_subscriber::fmt::layer()
            .with_target(false)
            .with_filter(filter)
            .boxed(),
    };
    // A second initialisation (tests, or `up` after `serve`) keeps the first subscriber.
    let _ = tracing_subscriber::registry()
        .with(otel)
        .with(fmt)
        .try_init();

    Ok(Telemetry {
        tracer_provider,
        meter_provider,
        registry,
    })
}

/// For tests: contexts made and propagated, logs to the test writer, nothing exported.
pub fn init_for_tests() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        global::set_text_map_propagator(TraceContextPropagator::new());
        let provider = SdkTracerProvider::builder()
            .with_sampler(Sampler::ParentBased(Box::new(Sampler::AlwaysOff)))
            .build();
        global::set_tracer_provider(provider.clone());
        let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn"));
        let _ = tracing_subscriber::registry()
            .with(
                tracing_opentelemetry::layer()
                    .with_tracer(provider.tracer("minqing-test"))
                    .with_filter(LevelFilter::INFO),
            )
            .with(
                tracing_subscriber::fmt::layer()
                    .with_test_writer()
                    .with_filter(filter),
            )
            .try_init();
    });
}

impl Telemetry {
    /// The Prometheus text exposition of every metric.
    pub fn render_metrics(&self) -> String {
        render(&self.registry)
    }

    /// A handle that renders metrics (for the HTTP endpoint).
    pub fn registry(&self) -> prometheus::Registry {
        self.registry.clone()
    }

    /// Flushes and stops the exporters. A collector that is down costs a logged error.
    pub fn shutdown(self) {
        if let Err(err) = self.tracer_provider.shutdown() {
            tracing::debug!(error = %err, "trace exporter shutdown");
        }
        if let Err(err) = self.meter_provider.shutdown() {
            tracing::debug!(error = %err, "metric exporter shutdown");
        }
    }
}

/// Renders a registry in the Prometheus text format.
pub fn render(registry: &prometheus::Registry) -> String {
    use prometheus::Encoder;
    let mut out = Vec::new();
    let encoder = prometheus::TextEncoder::new();
    if let Err(err) = encoder.encode(&registry.gather(), &mut out) {
        tracing::warn!(error = %err, "cannot render metrics");
    }
    String::from_utf8(out).unwrap_or_default()
}

struct HeaderExtractor<'a>(&'a http::HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

struct MetadataInjector<'a>(&'a mut tonic::metadata::MetadataMap);

impl Injector for MetadataInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(key), Ok(value)) = (
            tonic::metadata::MetadataKey::from_bytes(key.as_bytes()),
            value.parse(),
        ) {
            self.0.insert(key, value);
        }
    }
}

/// Makes `span` a child of the trace context carried in `headers`, if any.
pub fn set_parent_from_headers(span: &tracing::Span, headers: &http::HeaderMap) {
    let cx = global::get_text_map_propagator(|p| p.extract(&HeaderExtractor(headers)));
    let _ = span.set_parent(cx);
}

/// Makes `span` a child of a stored W3C context (an event's `traceparent`).
pub fn set_parent_from_traceparent(span: &tracing::Span, traceparent: &str, tracestate: &str) {
    if traceparent.is_empty() {
        return;
    }
    let mut carrier = HashMap::new();
    carrier.insert("traceparent".to_string(), traceparent.to_string());
    if !tracestate.is_empty() {
        carrier.insert("tracestate".to_string(), tracestate.to_string());
    }
    let cx = global::get_text_map_propagator(|p| p.extract(&carrier));
    let _ = span.set_parent(cx);
}

/// The current span's W3C `traceparent` and `tracestate` (empty strings when there is none).
pub fn current_trace_context() -> (String, String) {
    let cx = tracing::Span::current().context();
    let mut carrier: HashMap<String, String> = HashMap::new();
    global::get_text_map_propagator(|p| p.inject_context(&cx, &mut carrier));
    (
        carrier.remove("traceparent").unwrap_or_default(),
        carrier.remove("tracestate").unwrap_or_default(),
    )
}

/// Adds the current trace context to outgoing gRPC metadata.
pub fn inject_trace_context(metadata: &mut tonic::metadata::MetadataMap) {
    let cx = tracing::Span::current().context();
    global::get_text_map_propagator(|p| p.inject_context(&cx, &mut MetadataInjector(metadata)));
}

/// The suite's meter.
pub fn meter() -> Meter {
    global::meter("minqing")
}

struct Instruments {
    rpc_duration: Histogram<f64>,
    feed_lag: Histogram<f64>,
}

fn instruments() -> &'static Instruments {
    static INSTRUMENTS: OnceLock<Instruments> = OnceLock::new();
    INSTRUMENTS.get_or_init(|| {
        let meter = meter();
        Instruments {
            rpc_duration: meter
                .f64_histogram("rpc.server.duration")
                .with_unit("ms")
                .with_description(
                    "gRPC server call latency until response headers, by method and status",
                )
                .with_boundaries(vec![
                    0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 5000.0,
                ])
                .build(),
            feed_lag: meter
                .f64_histogram("minqing.feed.lag")
                .with_unit("s")
                .with_description("Age of events when a consumer applied them")
                .with_boundaries(vec![0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 30.0, 300.0])
                .build(),
        }
    })
}

/// Records one gRPC call.
pub fn record_rpc(method: &str, code: &str, millis: f64) {
    instruments().rpc_duration.record(
        millis,
        &[
            KeyValue::new("rpc.method", method.to_string()),
            KeyValue::new("rpc.grpc.status_code", code.to_string()),
        ],
    );
}

/// Records how old an event was when a consumer applied it.
pub fn record_feed_lag(consumer: &str, event_time: Option<&prost_types::Timestamp>) {
    let Some(micros) = event_time.and_then(crate::time::from_timestamp) else {
        return;
    };
    let lag = (crate::time::Clock::System.now_micros() - micros).max(0) as f64 / 1e6;
    instruments()
        .feed_lag
        .record(lag, &[KeyValue::new("consumer", consumer.to_string())]);
}
