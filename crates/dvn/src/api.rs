//! The node's HTTP listener: liveness and readiness, Prometheus metrics, and the peer API.

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use metrics_exporter_prometheus::PrometheusHandle;
use serde_json::json;

use crate::peer::protocol::MAX_BODY_BYTES;
use crate::peer::server;
use crate::pipeline::Context;

#[derive(Clone)]
struct ApiState {
    ctx: Arc<Context>,
    metrics: PrometheusHandle,
}

/// All routes.
pub fn router(ctx: Arc<Context>, metrics: PrometheusHandle) -> Router {
    let peer = Router::new()
        .route("/v1/signatures", post(server::push))
        .route("/v1/signatures/{call_hash}", get(server::pull))
        .with_state(Arc::clone(&ctx));
    Router::new()
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/metrics", get(render_metrics))
        .with_state(ApiState { ctx, metrics })
        .merge(peer)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
}

/// Liveness: 200 while the process can serve.
async fn health(State(state): State<ApiState>) -> Json<serde_json::Value> {
    Json(json!({ "status": "ok", "node": state.ctx.config.node.name }))
}

fn key_state(key: &crate::signer::KeyHandle) -> serde_json::Value {
    let health = key.health();
    json!({
        "up": health.up(),
        "backend": key.backend(),
        "address": key.address().to_string(),
        "error": health.last_error(),
    })
}

/// Readiness: the store answers and both keys' HSM/KMS answer (as last seen by a signature or
/// the idle probe). (Chains and peers join this with the operations work.)
async fn ready(State(state): State<ApiState>) -> (StatusCode, Json<serde_json::Value>) {
    let store = state.ctx.store.ping().await;
    let signer = state.ctx.signer.health().up();
    let submitter = state.ctx.submitter.health().up();
    let ready = store && signer && submitter;
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(json!({
            "ready": ready,
            "components": {
                "store": store,
                "signer": key_state(&state.ctx.signer),
                "submitter": key_state(&state.ctx.submitter),
            }
        })),
    )
}

async fn render_metrics(State(state): State<ApiState>) -> String {
    state.metrics.render()
}
