//! The peer API handlers: accept verified signatures over hashes we know, serve ours.

use std::sync::Arc;

use alloy::primitives::{Bytes, B256};
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;

use super::protocol::{
    check_signature, PushReply, Rejection, SignatureEntry, SignatureList, SignaturePush,
    MAX_SIGNATURES_PER_HASH, PROTOCOL_VERSION,
};
use crate::pipeline::Context;

fn rejected(why: Rejection) -> (StatusCode, Json<PushReply>) {
    metrics::counter!("dvn_peer_signatures_rejected_total", "peer" => "push", "reason" => why.label()).increment(1);
    let status = match why {
        Rejection::UnknownHash => StatusCode::ACCEPTED,
        Rejection::BadRequest | Rejection::Version | Rejection::Malformed => {
            StatusCode::BAD_REQUEST
        }
        Rejection::WrongSigner | Rejection::NotASigner => StatusCode::FORBIDDEN,
        Rejection::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
    };
    (
        status,
        Json(PushReply {
            accepted: false,
            reason: Some(why.to_string()),
        }),
    )
}

/// `POST /v1/signatures`.
pub async fn push(
    State(ctx): State<Arc<Context>>,
    body: Result<Json<SignaturePush>, JsonRejection>,
) -> (StatusCode, Json<PushReply>) {
    let push = match body {
        Ok(Json(push)) => push,
        Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            tracing::warn!("peer push: body over the size limit");
            return rejected(Rejection::TooLarge);
        }
        Err(e) => {
            tracing::warn!("peer push: malformed request: {e}");
            return rejected(Rejection::BadRequest);
        }
    };
    if push.version != PROTOCOL_VERSION {
        return rejected(Rejection::Version);
    }
    let packet = match ctx.store.packet_by_call_hash(push.call_hash).await {
        Ok(Some(p)) => p,
        Ok(None) => return rejected(Rejection::UnknownHash),
        Err(e) => {
            tracing::warn!("peer push: store unavailable: {e}");
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(PushReply {
                    accepted: false,
                    reason: Some("store unavailable".into()),
                }),
            );
        }
    };
    let Ok(dvn) = ctx.dvn(packet.packet.dst_eid) else {
        return rejected(Rejection::UnknownHash);
    };
    let signature = match check_signature(
        push.call_hash,
        push.signer,
        &push.signature,
        &dvn.signers,
    ) {
        Ok(s) => s,
        Err(why) => {
            tracing::warn!(call_hash = %push.call_hash, signer = %push.signer, "rejected pushed signature: {why}");
            return rejected(why);
        }
    };
    match ctx
        .store
        .insert_signature(push.call_hash, push.signer, &signature.as_bytes(), "peer")
        .await
    {
        Ok(_) => {
            ctx.wake.submit.notify_one();
            (
                StatusCode::OK,
                Json(PushReply {
                    accepted: true,
                    reason: None,
                }),
            )
        }
        Err(e) => {
            tracing::warn!("peer push: store write failed: {e}");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(PushReply {
                    accepted: false,
                    reason: Some("store unavailable".into()),
                }),
            )
        }
    }
}

/// `GET /v1/signatures/{call_hash}`.
pub async fn pull(
    State(ctx): State<Arc<Context>>,
    Path(call_hash): Path<String>,
) -> Result<Json<SignatureList>, StatusCode> {
    let call_hash: B256 = call_hash.parse().map_err(|_| StatusCode::BAD_REQUEST)?;
    let signatures = ctx
        .store
        .signatures(call_hash)
        .await
        .map_err(|_| StatusCode::SERVICE_UNAVAILABLE)?;
    Ok(Json(SignatureList {
        version: PROTOCOL_VERSION,
        signatures: signatures
            .into_iter()
            .take(MAX_SIGNATURES_PER_HASH)
            .map(|(signer, signature)| SignatureEntry {
                signer,
                signature: Bytes::from(signature),
            })
            .collect(),
    }))
}
