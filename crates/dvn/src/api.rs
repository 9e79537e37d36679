//! The node's HTTP routes: the operations listener (liveness, readiness, Prometheus metrics,
//! and the admin API under `/admin/v1` unless that has a listener of its own)
//! and the peer API (served by [`crate::peer::listener`] over mutual TLS).

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

/// The operations listener: health, readiness, metrics, and — unless it has a mutual-TLS
/// listener of its own (`admin.listen`) — the admin API.
pub fn ops_router(ctx: Arc<Context>, metrics: PrometheusHandle, with_admin: bool) -> Router {
    let router = Router::new()
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/metrics", get(render_metrics))
        .route("/status", get(status_page))
        .with_state(ApiState {
            ctx: Arc::clone(&ctx),
            metrics,
        })
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES));
    match with_admin {
        true => router.merge(admin_router(ctx)),
        false => router.route(
            "/admin/v1/{*rest}",
            axum::routing::any(|| async {
                (
                    StatusCode::NOT_FOUND,
                    Json(json!({ "error": "the admin API is on its mutual-TLS listener (admin.listen), not here" })),
                )
            }),
        ),
    }
}

/// The admin API under `/admin/v1`.
pub fn admin_router(ctx: Arc<Context>) -> Router {
    Router::new().nest("/admin/v1", crate::admin::api::router(ctx))
}

/// The peer API: signatures pushed and pulled, pending-transaction claims announced and
/// asked for, and a liveness answer for peers' probes.
pub fn peer_router(ctx: Arc<Context>) -> Router {
    Router::new()
        .route("/v1/signatures", post(server::push))
        .route("/v1/signature-batches", post(server::push_batch))
        .route("/v1/signatures/{call_hash}", get(server::pull))
        .route("/v1/claims", post(server::claim))
        .route("/v1/claims/query", post(server::query_claims))
        .route("/v1/rotations", post(server::rotation))
        .route(
            "/v1/health",
            get(|| async { Json(json!({ "status": "ok" })) }),
        )
        .with_state(ctx)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
}

/// Liveness: 200 while the process can serve.
async fn health(State(state): State<ApiState>) -> Json<serde_json::Value> {
    Json(json!({
        "status": "ok",
        "node": state.ctx.config.node.name,
        "version": env!("CARGO_PKG_VERSION"),
    }))
}

/// Readiness: 200 only when the store, every chain's RPC quorum, both keys' HSM/KMS and enough
/// peers for a quorum answered in the latest health snapshot (refreshed every few seconds);
/// the JSON says each component's state either way.
async fn ready(State(state): State<ApiState>) -> (StatusCode, Json<serde_json::Value>) {
    let (status, body) = readiness(&state.ctx, false);
    (status, Json(body))
}

/// What a key's backend error text is replaced by on the public `/ready`.
pub const HIDDEN_ERROR: &str = "unusable (the reason is on the admin API: GET /admin/v1/ready)";

/// The readiness answer. Backend error texts (HSM/KMS messages can name internal hosts, key
/// ids, accounts) only with `errors` — the admin API's `ready`; the public `/ready` says that a
/// component is down, not why.
pub fn readiness(ctx: &Context, errors: bool) -> (StatusCode, serde_json::Value) {
    let (status, Json(body)) = match ctx.health.latest() {
        Some(snapshot) => {
            let status = if snapshot.ready {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            (
                status,
                Json(json!({
                    "ready": snapshot.ready,
                    "taken_at_ms": snapshot.taken_at_ms,
                    "components": {
                        "store": snapshot.store,
                        "store_disk": snapshot.store_disk,
                        "chains": snapshot.chains,
                        "signer": snapshot.signer,
                        "submitter": snapshot.submitter,
                        "peers": { "up": snapshot.peers, "needed": snapshot.peers_needed },
                    },
                    "backlog": snapshot.backlog,
                    "last_verified": snapshot.last_verified,
                    "packets_by_state": snapshot.packets_by_state,
                })),
            )
        }
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "ready": false, "reason": "first health check still running" })),
        ),
    };
    let mut body = body;
    if !errors {
        for key in ["signer", "submitter"] {
            let error = &mut body["components"][key]["error"];
            if !error.is_null() {
                *error = json!(HIDDEN_ERROR);
            }
        }
        // Where the store lives is the admin side's business too.
        if let Some(disk) = body["components"]["store_disk"].as_object_mut() {
            disk.remove("dir");
        }
    }
    (status, body)
}

async fn render_metrics(State(state): State<ApiState>) -> String {
    state.metrics.render()
}

/// While the node checks its chains at start (RPC endpoints may be unreachable for a while):
/// `/health` answers 200 (the process is alive), `/ready` 503 with the reason, `/metrics` as
/// usual; there is no peer API yet.
pub fn boot_router(
    node: String,
    reason: Arc<std::sync::Mutex<String>>,
    metrics: PrometheusHandle,
) -> Router {
    let health_node = node.clone();
    Router::new()
        .route(
            "/health",
            get(move || async move { Json(json!({ "status": "starting", "node": health_node, "version": env!("CARGO_PKG_VERSION") })) }),
        )
        .route(
            "/ready",
            get(move || async move {
                let reason = reason.lock().unwrap_or_else(|e| e.into_inner()).clone();
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    Json(
                        json!({ "ready": false, "node": node, "starting": true, "reason": reason }),
                    ),
                )
            }),
        )
        .route("/metrics", get(move || async move { metrics.render() }))
}

/// `/status`: the operator's page (see [`crate::ops::page`]). Shows only what `/ready` and
/// `/metrics` already show on this listener, plus the latest packets' states.
async fn status_page(State(state): State<ApiState>) -> axum::response::Html<String> {
    let snapshot = state.ctx.health.latest();
    let recent = match state
        .ctx
        .reader
        .recent_packets(None, crate::ops::page::RECENT_PACKETS)
        .await
    {
        Ok(rows) => rows,
        Err(e) => {
            tracing::debug!("status page: store unavailable: {e}");
            Vec::new()
        }
    };
    axum::response::Html(crate::ops::page::render(
        &state.ctx,
        snapshot.as_ref(),
        &recent,
        &state.metrics.render(),
    ))
}
