//! Starting a gRPC server the same way for every service: health (`grpc.health.v1`),
//! reflection (v1 and v1alpha), the tower stack below, request size limits, and a graceful
//! shutdown that first reports NOT_SERVING, then drains calls in flight.

use std::{
    convert::Infallible,
    pin::Pin,
    task::{Context, Poll},
    time::{Duration, Instant},
};

use tokio::net::TcpListener;

use tokio_util::sync::CancellationToken;
use tonic::{
    body::Body,
    server::NamedService,
    service::RoutesBuilder,
    transport::{Server, server::TcpIncoming},
};
use tonic_health::{ServingStatus, server::HealthReporter};
use tower::{Layer, Service, ServiceBuilder};
use tracing::Instrument;

use crate::{auth::AuthLayer, auth::TokenStore, config::ServerConfig};

/// What a server needs from its process.
#[derive(Debug, Clone)]
pub struct ServeContext {
    /// Limits and timeouts.
    pub config: ServerConfig,
    /// Where tokens are verified.
    pub tokens: TokenStore,
    /// Cancelled to shut down.
    pub shutdown: CancellationToken,
}

/// A gRPC server under construction.
pub struct GrpcServer {
    name: String,
    routes: RoutesBuilder,
    reporter: HealthReporter,
    services: Vec<&'static str>,
}

impl std::fmt::Debug for GrpcServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GrpcServer")
            .field("name", &self.name)
            .field("services", &self.services)
            .finish()
    }
}

impl GrpcServer {
    /// A server named `name` (for logs) with health already added.
    pub fn new(name: impl Into<String>) -> Self {
        let (reporter, health) = tonic_health::server::health_reporter();
        let mut routes = RoutesBuilder::default();
        routes.add_service(health);
        Self {
            name: name.into(),
            routes,
            reporter,
            services: Vec::new(),
        }
    }

    /// Adds a service; it is reported SERVING once the server starts.
    pub fn add<S>(&mut self, service: S) -> &mut Self
    where
        S: Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>
            + NamedService
            + Clone
            + Send
            + Sync
            + 'static,
        S::Future: Send + 'static,
    {
        self.services.push(S::NAME);
        self.routes.add_service(service);
        self
    }

    /// The health reporter, e.g. to report NOT_SERVING while a dependency is down.
    pub fn health(&self) -> HealthReporter {
        self.reporter.clone()
    }

    /// Serves on `listener` until `ctx.shutdown` is cancelled; then reports NOT_SERVING,
    /// stops accepting, and waits up to the grace period for calls in flight.
    pub async fn serve(
        mut self,
        listener: TcpListener,
        ctx: ServeContext,
    ) -> Result<(), tonic::transport::Error> {
        let reflection = || {
            let mut builder = tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(minqing_proto::FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
                .with_service_name("grpc.health.v1.Health");
            for name in &self.services {
                builder = builder.with_service_name(*name);
            }
            builder
        };
        let v1 = reflection()
            .build_v1()
            .expect("the compiled descriptor set is valid");
        // grpcurl and Python's reflection client still ask for v1alpha.
        let v1alpha = reflection()
            .build_v1alpha()
            .expect("the compiled descriptor set is valid");
        self.routes.add_service(v1);
        self.routes.add_service(v1alpha);

        for name in &self.services {
            self.reporter
                .set_service_status(*name, ServingStatus::Serving)
                .await;
        }
        self.reporter
            .set_service_status("", ServingStatus::Serving)
            .await;

        let stack = ServiceBuilder::new()
            // Outermost, so every call gets a span (parented on the caller's trace context)
            // and a latency metric, including calls shed or refused below.
            .layer(RpcLayer)
            // Shed before queueing: when the limit below is reached, a new call is answered
            // RESOURCE_EXHAUSTED at once instead of waiting and timing out under load.
            .load_shed()
            // One limit across all connections of this server, so many clients together
            // cannot drive more work than the database pool can take.
            .layer(tower::limit::GlobalConcurrencyLimitLayer::new(
                ctx.config.concurrency_limit,
            ))
            // Inside the limits: verifying a token may touch the database, which the
            // overload protection above must cover.
            .layer(AuthLayer::new(ctx.tokens.clone()))
            .into_inner();

        let reporter = self.reporter.clone();
        let services = self.services.clone();
        let shutdown = ctx.shutdown.clone();
        let name = self.name.clone();
        let signal = async move {
            shutdown.cancelled().await;
            // Tell load balancers first, then stop accepting.
            for name in services {
                reporter
                    .set_service_status(name, ServingStatus::NotServing)
                    .await;
            }
            reporter
                .set_service_status("", ServingStatus::NotServing)
                .await;
        };
        let server = Server::builder()
            // Unary calls are cancelled after this (or the caller's grpc-timeout if sooner).
            .timeout(Duration::from_millis(ctx.config.request_timeout_ms))
            .http2_keepalive_interval(Some(Duration::from_secs(30)))
            .http2_keepalive_timeout(Some(Duration::from_secs(10)))
            .layer(stack)
            .add_routes(self.routes.routes())
            .serve_with_incoming_shutdown(
                // Nagle off on every accepted connection: with it on, a small response waits
                // for the client's delayed ACK (~40 ms). The builder's `tcp_nodelay` applies
                // only to listeners tonic binds itself, so it is set here.
                TcpIncoming::from(listener).with_nodelay(Some(true)),
                signal,
            );
        let grace = Duration::from_millis(ctx.config.shutdown_grace_ms);
        let deadline = async {
            ctx.shutdown.cancelled().await;
            tokio::time::sleep(grace).await;
        };
        tokio::select! {
            result = server => result,
            () = deadline => {
                tracing::warn!(server = %name, "calls still in flight after the shutdown grace period; stopping anyway");
                Ok(())
            }
        }
    }
}

/// Gives every call a tracing span parented on the caller's W3C trace context, and records
/// its latency and status code. Written here rather than taken from tower-http's trace layer,
/// whose gRPC classifier reports caller mistakes (INVALID_ARGUMENT…) as failures and does not
/// hand the status code to a metric without as much glue as this whole layer.
#[derive(Debug, Clone, Copy, Default)]
pub struct RpcLayer;

impl<S> Layer<S> for RpcLayer {
    type Service = RpcService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RpcService { inner }
    }
}

/// The service [`RpcLayer`] makes.
#[derive(Debug, Clone)]
pub struct RpcService<S> {
    inner: S,
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl<S, B, R> Service<http::Request<B>> for RpcService<S>
where
    S: Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
{
    type Response = http::Response<R>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let method = req.uri().path().to_string();
        let span = tracing::info_span!(
            "rpc",
            otel.name = %method,
            otel.kind = "server",
            rpc.system = "grpc",
            rpc.method = %method,
            rpc.grpc.status_code = tracing::field::Empty,
            principal = tracing::field::Empty,
        );
        crate::telemetry::set_parent_from_headers(&span, req.headers());
        let start = Instant::now();
        let future = {
            let _entered = span.enter();
            self.inner.call(req)
        };
        Box::pin(
            async move {
                let result = future.await.map_err(Into::into);
                let code = match &result {
                    // Errors and trailers-only answers carry grpc-status in the headers; a
                    // unary success carries it in trailers, after this point.
                    Ok(response) => response
                        .headers()
                        .get("grpc-status")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.parse::<i32>().ok())
                        .unwrap_or(0),
                    // Shed by the load limit: tonic answers RESOURCE_EXHAUSTED.
                    Err(_) => 8,
                };
                let code = tonic::Code::from_i32(code);
                let millis = start.elapsed().as_secs_f64() * 1e3;
                tracing::Span::current().record("rpc.grpc.status_code", code as i32);
                crate::telemetry::record_rpc(&method, code_name(code), millis);
                match code {
                    tonic::Code::Internal | tonic::Code::Unknown | tonic::Code::DataLoss => {
                        tracing::warn!(code = ?code, millis, "call failed");
                    }
                    _ => tracing::debug!(code = ?code, millis, "call done"),
                }
                result
            }
            .instrument(span),
        )
    }
}

fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "OK",
        Cancelled => "CANCELLED",
        Unknown => "UNKNOWN",
        InvalidArgument => "INVALID_ARGUMENT",
        DeadlineExceeded => "DEADLINE_EXCEEDED",
        NotFound => "NOT_FOUND",
        AlreadyExists => "ALREADY_EXISTS",
        PermissionDenied => "PERMISSION_DENIED",
        ResourceExhausted => "RESOURCE_EXHAUSTED",
        FailedPrecondition => "FAILED_PRECONDITION",
        Aborted => "ABORTED",
        OutOfRange => "OUT_OF_RANGE",
        Unimplemented => "UNIMPLEMENTED",
        Internal => "INTERNAL",
        Unavailable => "UNAVAILABLE",
        DataLoss => "DATA_LOSS",
        Unauthenticated => "UNAUTHENTICATED",
    }
}

/// Binds a listener, with a message that says which address failed.
pub async fn bind(addr: std::net::SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {addr}: {e}"))
}
