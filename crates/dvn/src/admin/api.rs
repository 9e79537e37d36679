//! `/admin/v1/…` on the operations listener. Every call, allowed or not, goes the same way:
//! authenticate the bearer token → check the role's permission → (a change) record `begun` in
//! the audit log, refusing the change when that record cannot be written → act through the
//! store the pipeline uses → record the outcome. Denied and unauthenticated calls are recorded
//! too. Nothing is kept in memory only: a pause is a row the pipeline reads every step.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use alloy::primitives::B256;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use super::redact;
use super::roles::Permission;
use super::token::{self, Caller, TokenError};
use crate::ops::recover;
use crate::pipeline::Context;
use crate::store::{AuditEntry, PacketState, PathKey, PauseScope};

/// The largest admin request body (larger ones are refused, and audited).
pub const MAX_ADMIN_BODY_BYTES: usize = 16 * 1024;

#[derive(Clone)]
struct AdminState {
    ctx: Arc<Context>,
}

/// The admin routes (nested under `/admin/v1` by [`crate::api::admin_router`]).
pub fn router(ctx: Arc<Context>) -> Router {
    Router::new()
        .route("/status", get(status))
        .route("/ready", get(ready))
        .route("/packets", get(packets))
        .route("/packets/{guid}", get(packet))
        .route("/packets/{guid}/retry", post(retry))
        .route("/pause", post(pause))
        .route("/resume", post(resume))
        .route("/paths/resume", post(resume_halted))
        .route("/rescan", post(rescan))
        .route("/reload", post(reload))
        .route("/backup", post(backup))
        .route("/logs", get(logs))
        .route("/audit", get(audit))
        .route("/audit/verify", get(audit_verify))
        .route("/rotations", get(rotations).post(propose_rotation))
        .route("/rotations/{id}/approve", post(approve_rotation))
        .route("/rotations/{id}/reject", post(reject_rotation))
        .with_state(AdminState { ctx })
        // Twice the cap, so an oversized body still reaches the handler and is audited; the
        // handler refuses anything above the cap.
        .layer(DefaultBodyLimit::max(MAX_ADMIN_BODY_BYTES * 2))
}

/// An error answer: its status and a message safe to show (never a secret).
#[derive(Debug)]
enum ApiError {
    BadRequest(String),
    Refused(String),
    TooLarge,
    Unavailable(String),
}

impl ApiError {
    fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::Refused(_) => StatusCode::CONFLICT,
            Self::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    fn message(&self) -> String {
        match self {
            Self::BadRequest(m) | Self::Refused(m) | Self::Unavailable(m) => m.clone(),
            Self::TooLarge => format!("request body over {MAX_ADMIN_BODY_BYTES} bytes"),
        }
    }
}

/// Refusals from the operator levers ("that path is not halted", …) are the operator's to read.
impl From<anyhow::Error> for ApiError {
    fn from(e: anyhow::Error) -> Self {
        Self::Refused(format!("{e:#}"))
    }
}

impl From<crate::store::StoreError> for ApiError {
    fn from(e: crate::store::StoreError) -> Self {
        Self::Unavailable(format!("store: {e}"))
    }
}

fn error_response(status: StatusCode, message: &str, seq: Option<u64>) -> Response {
    (status, Json(json!({ "error": message, "audit_seq": seq }))).into_response()
}

/// What the caller sent besides the body: its token, its address, and on the mutual-TLS
/// admin listener the name its client certificate carries.
struct Origin {
    headers: HeaderMap,
    ip: String,
    client_cert: Option<String>,
}

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Origin {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _: &S,
    ) -> Result<Self, Self::Rejection> {
        let ip = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map_or_else(|| "unknown".into(), |c| c.0.ip().to_string());
        let client_cert = parts
            .extensions
            .get::<crate::peer::listener::PeerName>()
            .map(|name| name.0.clone());
        Ok(Self {
            headers: parts.headers.clone(),
            ip,
            client_cert,
        })
    }
}

impl Origin {
    fn bearer(&self) -> Option<&str> {
        self.headers
            .get(axum::http::header::AUTHORIZATION)?
            .to_str()
            .ok()?
            .strip_prefix("Bearer ")
            .map(str::trim)
    }
}

/// One admin call: what it is and what it needs.
struct Call {
    operation: &'static str,
    permission: Permission,
    /// A change (recorded as `begun` before it is made; refused if that record fails).
    changes: bool,
    target: String,
    params: Value,
}

impl Call {
    /// A read (no change) without parameters.
    fn read(operation: &'static str, permission: Permission, target: impl Into<String>) -> Self {
        Self::new(operation, permission, false, target, json!({}))
    }

    fn new(
        operation: &'static str,
        permission: Permission,
        changes: bool,
        target: impl Into<String>,
        params: Value,
    ) -> Self {
        Self {
            operation,
            permission,
            changes,
            target: target.into(),
            params,
        }
    }
}

/// The path every call takes; `work` runs only for an authenticated caller whose role allows
/// the call, and (for a change) only once `begun` is in the audit log.
async fn guarded<F, Fut>(state: &AdminState, origin: Origin, call: Call, work: F) -> Response
where
    F: FnOnce(Caller, Arc<Context>) -> Fut,
    Fut: Future<Output = Result<Value, ApiError>>,
{
    let store = &state.ctx.store;
    let mut params = redact::params(&call.params);
    if let (Some(name), Value::Object(all)) = (&origin.client_cert, &mut params) {
        all.insert("tls_client".into(), json!(name));
    }
    let entry = |operator: &str, role: &str, result: String| AuditEntry {
        operator: operator.to_string(),
        role: role.to_string(),
        operation: call.operation.to_string(),
        target: call.target.clone(),
        params: params.clone(),
        result,
        source_ip: origin.ip.clone(),
    };
    let presented = origin.bearer().unwrap_or_default().to_string();
    let caller = match presented.is_empty() {
        true => Err(TokenError::Missing),
        false => token::authenticate(store, &presented).await,
    };
    let caller = match caller {
        Ok(caller) => caller,
        Err(why) => {
            // The token's id (not its secret) names who tried, when it is well formed.
            let who = token::token_id(&presented)
                .map_or("unknown".to_string(), |id| format!("token:{id}"));
            let seq = store
                .audit_append(&entry(&who, "none", format!("unauthenticated: {why}")))
                .await
                .ok();
            tracing::warn!(operation = call.operation, source_ip = %origin.ip, "admin call refused: {why}");
            metrics::counter!("dvn_admin_requests_total", "operation" => call.operation, "result" => "unauthenticated")
                .increment(1);
            let status = match why {
                TokenError::Store(_) => StatusCode::SERVICE_UNAVAILABLE,
                _ => StatusCode::UNAUTHORIZED,
            };
            return error_response(status, &why.to_string(), seq);
        }
    };
    let role = caller.role.as_str();
    if !caller.role.allows(call.permission) {
        let seq = store
            .audit_append(&entry(&caller.operator, role, "denied".into()))
            .await
            .ok();
        tracing::warn!(operator = %caller.operator, role, operation = call.operation, "admin call denied");
        metrics::counter!("dvn_admin_requests_total", "operation" => call.operation, "result" => "denied")
            .increment(1);
        return error_response(
            StatusCode::FORBIDDEN,
            &format!("role {role} may not {}", call.operation),
            seq,
        );
    }
    let operator = caller.operator.clone();
    if call.changes {
        if let Err(e) = store
            .audit_append(&entry(&operator, role, "begun".into()))
            .await
        {
            tracing::error!(
                operation = call.operation,
                "audit log not writable, change refused: {e}"
            );
            return error_response(
                StatusCode::SERVICE_UNAVAILABLE,
                "the audit log cannot be written: change refused",
                None,
            );
        }
    }
    let outcome = work(caller, Arc::clone(&state.ctx)).await;
    let class = if outcome.is_ok() { "ok" } else { "error" };
    metrics::counter!("dvn_admin_requests_total", "operation" => call.operation, "result" => class)
        .increment(1);
    let result = match &outcome {
        Ok(_) => "ok".to_string(),
        Err(e) => format!("error: {}", e.message()),
    };
    let recorded = store.audit_append(&entry(&operator, role, result)).await;
    if call.changes {
        tracing::warn!(operator = %operator, role, operation = call.operation, target = %call.target, ok = outcome.is_ok(), "admin change");
    }
    match (outcome, recorded) {
        // A read whose record cannot be written is not answered (fail closed).
        (Ok(_), Err(_)) if !call.changes => error_response(
            StatusCode::SERVICE_UNAVAILABLE,
            "the audit log cannot be written",
            None,
        ),
        (Ok(mut value), seq) => {
            if let (Some(map), Ok(seq)) = (value.as_object_mut(), seq) {
                map.insert("audit_seq".into(), json!(seq));
            }
            Json(value).into_response()
        }
        (Err(e), seq) => error_response(e.status(), &e.message(), seq.ok()),
    }
}

/// A JSON body, checked for size and shape: Err is the refusal to audit and answer.
fn parse_body<T: serde::de::DeserializeOwned>(
    body: Result<Bytes, BytesRejection>,
) -> Result<T, ApiError> {
    let bytes = body.map_err(|e| match e.status() {
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::TooLarge,
        _ => ApiError::BadRequest(e.body_text()),
    })?;
    if bytes.len() > MAX_ADMIN_BODY_BYTES {
        return Err(ApiError::TooLarge);
    }
    serde_json::from_slice(&bytes).map_err(|e| ApiError::BadRequest(format!("request body: {e}")))
}

/// The body as JSON for the audit record when it parses (redacted later), else a note.
fn body_params(body: &Result<Bytes, BytesRejection>) -> Value {
    match body {
        Ok(b) if b.len() <= MAX_ADMIN_BODY_BYTES => {
            serde_json::from_slice(b).unwrap_or_else(|_| json!({ "body": "not JSON" }))
        }
        Ok(b) => json!({ "body_bytes": b.len() }),
        Err(_) => json!({ "body": "unreadable" }),
    }
}

fn parse_guid(text: &str) -> Result<B256, ApiError> {
    text.parse()
        .map_err(|_| ApiError::BadRequest(format!("{text} is not a 32-byte hex GUID")))
}

async fn status(State(state): State<AdminState>, origin: Origin) -> Response {
    let call = Call::read("status", Permission::ReadStatus, "node");
    guarded(&state, origin, call, |_, ctx| async move {
        let store = &ctx.store;
        let by_state: serde_json::Map<String, Value> = store
            .count_by_state()
            .await?
            .into_iter()
            .map(|(s, n)| (s, json!(n)))
            .collect();
        let halted = recover::list_halted(&ctx.config, store).await?;
        Ok(json!({
            "node": ctx.config.node.name,
            "packets_by_state": by_state,
            "halted_paths": halted["halted_paths"],
            "pauses": store.pauses().await?,
            "audit_head": store.audit_head().await?.map(|(seq, hash)| json!({ "seq": seq, "hash": hash })),
        }))
    })
    .await
}

/// `/ready` with the components' error texts (the public one hides them).
async fn ready(State(state): State<AdminState>, origin: Origin) -> Response {
    let call = Call::read("ready", Permission::ReadStatus, "node");
    guarded(&state, origin, call, |_, ctx| async move {
        Ok(crate::api::readiness(&ctx, true).1)
    })
    .await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PacketsQuery {
    state: Option<String>,
    limit: Option<u64>,
}

async fn packets(
    State(state): State<AdminState>,
    origin: Origin,
    query: Result<Query<PacketsQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let call = Call::read("packets.list", Permission::ReadStatus, "packets");
    guarded(&state, origin, call, |_, ctx| async move {
        let Query(query) = query.map_err(|e| ApiError::BadRequest(e.body_text()))?;
        let wanted = match query.state.as_deref() {
            None | Some("") => None,
            Some(s) => Some(
                PacketState::parse(s)
                    .ok_or_else(|| ApiError::BadRequest(format!("unknown state {s}")))?,
            ),
        };
        let limit = query.limit.unwrap_or(100).min(1_000);
        let rows = ctx.store.recent_packets(wanted, limit).await?;
        let listed: Vec<Value> = rows
            .iter()
            .map(|r| {
                json!({
                    "guid": r.packet.guid,
                    "src_eid": r.packet.src_eid,
                    "dst_eid": r.packet.dst_eid,
                    "nonce": r.packet.nonce,
                    "state": r.state.as_str(),
                    "attempts": r.attempts,
                    "last_error": r.last_error,
                })
            })
            .collect();
        Ok(json!({ "packets": listed }))
    })
    .await
}

async fn packet(
    State(state): State<AdminState>,
    origin: Origin,
    Path(guid): Path<String>,
) -> Response {
    let call = Call::read(
        "packets.why",
        Permission::ReadStatus,
        format!("packet:{guid}"),
    );
    guarded(&state, origin, call, |_, ctx| async move {
        let guid = parse_guid(&guid)?;
        Ok(crate::ops::why::explain(&ctx.config, &ctx.store, guid).await?)
    })
    .await
}

async fn retry(
    State(state): State<AdminState>,
    origin: Origin,
    Path(guid): Path<String>,
) -> Response {
    let call = Call::new(
        "packets.retry",
        Permission::ManageService,
        true,
        format!("packet:{guid}"),
        json!({}),
    );
    guarded(&state, origin, call, |_, ctx| async move {
        let guid = parse_guid(&guid)?;
        let done = recover::retry_packet(&ctx.store, guid).await?;
        ctx.wake.sign.notify_waiters();
        Ok(done)
    })
    .await
}

/// A pause's scope as the caller names it: chains by name or eid, OApps by address or word.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ScopeRequest {
    /// `node`, `chain` or `path` (not used by the halted-path resume, which is always a path).
    #[serde(default)]
    scope: String,
    chain: Option<String>,
    src: Option<String>,
    dst: Option<String>,
    sender: Option<String>,
    receiver: Option<String>,
    reason: Option<String>,
}

fn path_of(ctx: &Context, r: &ScopeRequest) -> Result<PathKey, ApiError> {
    let need = |v: &Option<String>, name: &str| {
        v.clone()
            .ok_or_else(|| ApiError::BadRequest(format!("a path needs {name}")))
    };
    Ok(PathKey {
        src_eid: recover::resolve_eid(&ctx.config, &need(&r.src, "src")?)
            .map_err(|e| ApiError::BadRequest(e.to_string()))?,
        sender: recover::parse_word(&need(&r.sender, "sender")?)
            .map_err(|e| ApiError::BadRequest(e.to_string()))?,
        dst_eid: recover::resolve_eid(&ctx.config, &need(&r.dst, "dst")?)
            .map_err(|e| ApiError::BadRequest(e.to_string()))?,
        receiver: recover::parse_word(&need(&r.receiver, "receiver")?)
            .map_err(|e| ApiError::BadRequest(e.to_string()))?,
    })
}

fn scope_of(ctx: &Context, r: &ScopeRequest) -> Result<PauseScope, ApiError> {
    match r.scope.as_str() {
        "node" => Ok(PauseScope::Node),
        "chain" => {
            let chain = r
                .chain
                .as_deref()
                .ok_or_else(|| ApiError::BadRequest("a chain scope needs chain".into()))?;
            let eid = recover::resolve_eid(&ctx.config, chain)
                .map_err(|e| ApiError::BadRequest(e.to_string()))?;
            Ok(PauseScope::Chain { eid })
        }
        "path" => Ok(PauseScope::Path(path_of(ctx, r)?)),
        other => Err(ApiError::BadRequest(format!(
            "scope {other}: expected node, chain or path"
        ))),
    }
}

/// The audit target of a scope request (best effort for a malformed one).
fn scope_target(ctx: &Context, body: &Result<ScopeRequest, ApiError>) -> String {
    match body {
        Ok(r) => scope_of(ctx, r).map_or_else(|_| format!("{}:?", r.scope), |s| s.key()),
        Err(_) => "malformed request".into(),
    }
}

async fn pause(
    State(state): State<AdminState>,
    origin: Origin,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    pause_or_resume(state, origin, body, true).await
}

async fn resume(
    State(state): State<AdminState>,
    origin: Origin,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    pause_or_resume(state, origin, body, false).await
}

async fn pause_or_resume(
    state: AdminState,
    origin: Origin,
    body: Result<Bytes, BytesRejection>,
    pausing: bool,
) -> Response {
    let params = body_params(&body);
    let request: Result<ScopeRequest, ApiError> = parse_body(body);
    let call = Call {
        operation: if pausing { "pause" } else { "resume" },
        permission: Permission::ManageService,
        changes: true,
        target: scope_target(&state.ctx, &request),
        params,
    };
    guarded(&state, origin, call, |caller, ctx| async move {
        let request = request?;
        let scope = scope_of(&ctx, &request)?;
        if pausing {
            let reason = request.reason.unwrap_or_default();
            if reason.trim().is_empty() || reason.len() > 500 {
                return Err(ApiError::BadRequest(
                    "a pause needs a reason (at most 500 characters)".into(),
                ));
            }
            let new = ctx.store.pause(&scope, &reason, &caller.operator).await?;
            Ok(json!({ "paused": scope.key(), "already_paused": !new }))
        } else {
            if !ctx.store.unpause(&scope).await? {
                return Err(ApiError::Refused(format!("{} is not paused", scope.key())));
            }
            ctx.wake.sign.notify_waiters();
            ctx.wake.submit.notify_waiters();
            Ok(json!({ "resumed": scope.key() }))
        }
    })
    .await
}

async fn resume_halted(
    State(state): State<AdminState>,
    origin: Origin,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let params = body_params(&body);
    let request: Result<ScopeRequest, ApiError> = parse_body(body);
    let path = request.as_ref().ok().map(|r| path_of(&state.ctx, r));
    let call = Call {
        operation: "paths.resume_halted",
        permission: Permission::ResumeHalted,
        changes: true,
        target: match &path {
            Some(Ok(p)) => PauseScope::Path(*p).key(),
            _ => "malformed request".into(),
        },
        params,
    };
    guarded(&state, origin, call, |_, ctx| async move {
        request?;
        let path = path.ok_or_else(|| ApiError::BadRequest("no path".into()))??;
        let done = recover::resume_path(&ctx.store, &path).await?;
        ctx.wake.sign.notify_waiters();
        Ok(done)
    })
    .await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RescanRequest {
    chain: String,
    from: u64,
}

async fn rescan(
    State(state): State<AdminState>,
    origin: Origin,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let params = body_params(&body);
    let request: Result<RescanRequest, ApiError> = parse_body(body);
    let call = Call {
        operation: "rescan",
        permission: Permission::ManageService,
        changes: true,
        target: match &request {
            Ok(r) => format!("chain:{}", r.chain),
            Err(_) => "malformed request".into(),
        },
        params,
    };
    guarded(&state, origin, call, |_, ctx| async move {
        let request = request?;
        let eid = recover::resolve_eid(&ctx.config, &request.chain)
            .map_err(|e| ApiError::BadRequest(e.to_string()))?;
        let chain = ctx.chains.get(&eid).ok_or_else(|| {
            ApiError::BadRequest(format!("chain {} is not served", request.chain))
        })?;
        Ok(recover::rescan(&ctx.store, chain, request.from).await?)
    })
    .await
}

/// Reads the configuration file again: validated as a whole (any problem refuses it all);
/// only what a running node can take without a restart (`governor`) may differ — anything
/// else is refused naming the sections, so a half-applied configuration never runs.
async fn reload(State(state): State<AdminState>, origin: Origin) -> Response {
    let call = Call::new(
        "config.reload",
        Permission::ManageService,
        true,
        "config",
        json!({}),
    );
    guarded(&state, origin, call, |_, ctx| async move {
        let path = ctx
            .config_path
            .as_ref()
            .ok_or_else(|| ApiError::Refused("this node was not started from a file".into()))?;
        let new = crate::config::Config::load(path)
            .map_err(|e| ApiError::BadRequest(format!("configuration refused: {e}")))?;
        let restart = ctx.config.needs_restart_for(&new);
        if !restart.is_empty() {
            return Err(ApiError::Refused(format!(
                "configuration refused: {} cannot change without a restart",
                restart.join(", ")
            )));
        }
        let changed = {
            let mut live = ctx.governor.write().unwrap_or_else(|e| e.into_inner());
            let changed = *live != new.governor;
            *live = new.governor.clone();
            changed
        };
        ctx.wake.sign.notify_waiters();
        Ok(json!({
            "reloaded": true,
            "config_sha256": new.digest(),
            "changed": if changed { vec!["governor"] } else { Vec::new() },
        }))
    })
    .await
}

/// Takes a backup now (what `dvn backup` does on the host) into `backup.dir`, uploaded to
/// every `backup.remote` with the configured retention.
async fn backup(State(state): State<AdminState>, origin: Origin) -> Response {
    let call = Call::new(
        "backup",
        Permission::ManageService,
        true,
        "store",
        json!({}),
    );
    guarded(&state, origin, call, |_, ctx| async move {
        let (Some(path), Some(dir)) = (&ctx.config_path, &ctx.config.backup.dir) else {
            return Err(ApiError::Refused(
                "backup.dir is not configured (or the node was not started from a file)".into(),
            ));
        };
        let backup = &ctx.config.backup;
        let shipped = crate::backup::create_and_ship(
            path,
            dir,
            backup.logs.as_deref(),
            backup.log_days,
            None,
            false,
        )
        .await
        .map_err(|e| ApiError::Refused(format!("backup failed: {e:#}")))?;
        Ok(json!(shipped))
    })
    .await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LinesQuery {
    lines: Option<usize>,
}

async fn logs(
    State(state): State<AdminState>,
    origin: Origin,
    query: Result<Query<LinesQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let call = Call::read("logs", Permission::ReadLogs, "node");
    guarded(&state, origin, call, |_, _| async move {
        let Query(query) = query.map_err(|e| ApiError::BadRequest(e.body_text()))?;
        let n = query.lines.unwrap_or(200).min(crate::logs::KEPT_LINES);
        Ok(json!({ "lines": crate::logs::recent(n) }))
    })
    .await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AuditQuery {
    after: Option<u64>,
    limit: Option<u64>,
}

async fn audit(
    State(state): State<AdminState>,
    origin: Origin,
    query: Result<Query<AuditQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let call = Call::read("audit.read", Permission::ReadAudit, "audit_log");
    guarded(&state, origin, call, |_, ctx| async move {
        let Query(query) = query.map_err(|e| ApiError::BadRequest(e.body_text()))?;
        let records = ctx
            .store
            .audit_records(
                query.after.unwrap_or(0),
                query.limit.unwrap_or(500).min(5_000),
            )
            .await?;
        Ok(json!({ "records": records }))
    })
    .await
}

async fn audit_verify(State(state): State<AdminState>, origin: Origin) -> Response {
    let call = Call::read("audit.verify", Permission::ReadAudit, "audit_log");
    guarded(&state, origin, call, |_, ctx| async move {
        let records = ctx.store.audit_all().await?;
        let head = records
            .last()
            .map(|r| json!({ "seq": r.seq, "hash": r.hash }));
        Ok(match crate::store::verify_audit_chain(&records) {
            Ok(()) => json!({ "intact": true, "records": records.len(), "head": head }),
            Err(e) => json!({ "intact": false, "records": records.len(), "break": e.to_string() }),
        })
    })
    .await
}

/// Signer rotations known here, each with the DVN's current signer set on its chain.
async fn rotations(State(state): State<AdminState>, origin: Origin) -> Response {
    let call = Call::read("keys.rotations", Permission::ReadStatus, "rotations");
    guarded(&state, origin, call, |_, ctx| async move {
        let listed: Vec<Value> = ctx
            .store
            .rotations()
            .await?
            .into_iter()
            .map(|r| {
                let chain = ctx.chains.get(&r.dst_eid).map(|c| c.name().to_string());
                let mut v = json!(r);
                v["chain"] = json!(chain);
                v["signers_now"] = json!(ctx.dvn(r.dst_eid).ok().map(|d| d.signers));
                v
            })
            .collect();
        Ok(json!({
            "node": ctx.config.node.name,
            "signer": ctx.signer.address(),
            "signer_next": ctx.signer_next.as_ref().map(|k| k.address()),
            "signing_with": ctx.chains.values().map(|c| (c.name().to_string(), ctx.signing_key(c.eid()).address())).collect::<std::collections::BTreeMap<_, _>>(),
            "rotations": listed,
        }))
    })
    .await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ProposeRequest {
    chain: String,
    #[serde(default)]
    expires_in_secs: Option<u64>,
}

/// Proposes replacing this region's signer with `signer_next` on one chain.
async fn propose_rotation(
    State(state): State<AdminState>,
    origin: Origin,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let params = body_params(&body);
    let request: Result<ProposeRequest, ApiError> = parse_body(body);
    let call = Call::new(
        "keys.rotate.propose",
        Permission::ManageKeys,
        true,
        match &request {
            Ok(r) => format!("chain:{}", r.chain),
            Err(_) => "malformed request".into(),
        },
        params,
    );
    guarded(&state, origin, call, |_, ctx| async move {
        let request = request?;
        let eid = recover::resolve_eid(&ctx.config, &request.chain)
            .map_err(|e| ApiError::BadRequest(e.to_string()))?;
        let ttl = request
            .expires_in_secs
            .unwrap_or(crate::pipeline::rotation::DEFAULT_ROTATION_TTL_SECS);
        let proposed = crate::pipeline::rotation::propose(&ctx, eid, ttl).await?;
        Ok(json!(proposed))
    })
    .await
}

fn parse_rotation_id(text: &str) -> Result<B256, ApiError> {
    text.parse()
        .map_err(|_| ApiError::BadRequest(format!("{text} is not a 32-byte hex rotation id")))
}

/// Signs a peer's rotation after checking it again.
async fn approve_rotation(
    State(state): State<AdminState>,
    origin: Origin,
    Path(id): Path<String>,
) -> Response {
    let call = Call::new(
        "keys.rotate.approve",
        Permission::ManageKeys,
        true,
        format!("rotation:{id}"),
        json!({}),
    );
    guarded(&state, origin, call, |_, ctx| async move {
        let id = parse_rotation_id(&id)?;
        Ok(json!(crate::pipeline::rotation::approve(&ctx, id).await?))
    })
    .await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RejectRequest {
    reason: String,
}

/// Refuses a peer's rotation: this region never signs it.
async fn reject_rotation(
    State(state): State<AdminState>,
    origin: Origin,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let params = body_params(&body);
    let request: Result<RejectRequest, ApiError> = parse_body(body);
    let call = Call::new(
        "keys.rotate.reject",
        Permission::ManageKeys,
        true,
        format!("rotation:{id}"),
        params,
    );
    guarded(&state, origin, call, |_, ctx| async move {
        let request = request?;
        let id = parse_rotation_id(&id)?;
        Ok(json!(
            crate::pipeline::rotation::reject(&ctx, id, &request.reason).await?
        ))
    })
    .await
}
