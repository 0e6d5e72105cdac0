//! The operations endpoint beside the gRPC servers: `/metrics` (Prometheus text), `/healthz`
//! (the process is up) and `/readyz` (every database answers and no shutdown is under way).

use axum::{Router, extract::State, http::StatusCode, routing::get};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::db::Db;

#[derive(Clone)]
struct Ops {
    registry: Option<prometheus::Registry>,
    dbs: Vec<Db>,
    shutdown: CancellationToken,
}

/// Serves the operations endpoint until `shutdown`.
pub async fn serve_ops(
    listener: TcpListener,
    registry: Option<prometheus::Registry>,
    dbs: Vec<Db>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let ops = Ops {
        registry,
        dbs,
        shutdown: shutdown.clone(),
    };
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .with_state(ops);
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
}

async fn metrics(State(ops): State<Ops>) -> (StatusCode, String) {
    match &ops.registry {
        Some(registry) => (StatusCode::OK, crate::telemetry::render(registry)),
        None => (StatusCode::NOT_FOUND, "metrics are not enabled\n".into()),
    }
}

async fn ready(State(ops): State<Ops>) -> (StatusCode, String) {
    if ops.shutdown.is_cancelled() {
        return (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n".into());
    }
    for db in &ops.dbs {
        if let Err(err) = sqlx::query("SELECT 1").execute(db.pool()).await {
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                format!("database {} is not answering: {err}\n", db.name()),
            );
        }
    }
    (StatusCode::OK, "ready\n".into())
}
