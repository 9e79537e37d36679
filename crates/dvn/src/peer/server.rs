//! The peer API handlers: accept verified signatures over hashes we know, serve ours; record
//! the peers' claims on packets their pending transactions carry, and answer for ours.

use std::sync::Arc;

use alloy::primitives::{Bytes, B256};
use axum::extract::rejection::JsonRejection;
use axum::extract::{Extension, Path, State};
use axum::http::StatusCode;
use axum::Json;

use super::listener::PeerName;
use super::protocol::{
    check_signature, BatchReply, ClaimList, ClaimPush, ClaimQuery, PushReply, Rejection,
    RotationProposal, SignatureBatch, SignatureEntry, SignatureList, SignaturePush,
    MAX_BATCH_SIGNATURES, MAX_CLAIM_GUIDS, MAX_SIGNATURES_PER_HASH, PROTOCOL_VERSION,
};
use crate::pipeline::Context;

fn rejected(why: Rejection) -> (StatusCode, Json<PushReply>) {
    count_rejection(why);
    refusal(why)
}

fn rejected_claim(why: Rejection) -> (StatusCode, Json<PushReply>) {
    metrics::counter!("dvn_peer_claims_rejected_total", "reason" => why.label()).increment(1);
    refusal(why)
}

fn refusal(why: Rejection) -> (StatusCode, Json<PushReply>) {
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

/// What became of a pushed signature that was taken.
enum Kept {
    Stored,
    /// Over a param this node has not signed yet, from an on-chain signer: held in memory
    /// until it does.
    Held,
}

impl Kept {
    fn reply(self) -> PushReply {
        PushReply {
            accepted: true,
            reason: matches!(self, Self::Held)
                .then(|| "held until this node signs that param".to_string()),
        }
    }
}

/// Why a pushed signature was not stored.
enum NotStored {
    Rejected(Rejection),
    /// The store could not take it now (unreachable, or the group commit's queue full): the
    /// pusher gives up, and the signature is pulled later.
    Unavailable,
}

/// Checks one pushed signature — over a param hash we know, from an on-chain signer of
/// that param's DVN — and stores it through the group commit.
async fn store_pushed(
    ctx: &Context,
    call_hash: B256,
    signer: alloy::primitives::Address,
    bytes: &[u8],
) -> Result<Kept, NotStored> {
    // A packet's param, or one of a signer rotation's two.
    // Looked up through the reader connections: under a backlog pushes come by the hundred
    // a second, and the pipeline's writer connection has better things to do.
    let dst_eid = match ctx.reader.packet_by_call_hash(call_hash).await {
        Ok(Some(p)) => p.packet.dst_eid,
        Ok(None) => match ctx.reader.rotation_by_call_hash(call_hash).await {
            Ok(Some(r)) => r.dst_eid,
            Ok(None) => return hold_early(ctx, call_hash, signer, bytes),
            Err(e) => {
                tracing::warn!("peer push: store unavailable: {e}");
                return Err(NotStored::Unavailable);
            }
        },
        Err(e) => {
            tracing::warn!("peer push: store unavailable: {e}");
            return Err(NotStored::Unavailable);
        }
    };
    let Ok(dvn) = ctx.dvn(dst_eid) else {
        return Err(NotStored::Rejected(Rejection::UnknownHash));
    };
    let signature = check_signature(call_hash, signer, bytes, &dvn.signers).map_err(|why| {
        tracing::warn!(%call_hash, %signer, "rejected pushed signature: {why}");
        NotStored::Rejected(why)
    })?;
    match ctx
        .signature_writer
        .insert(call_hash, signer, signature.as_bytes().to_vec(), "peer")
        .await
    {
        Ok(_) => {
            ctx.wake.submit.notify_one();
            Ok(Kept::Stored)
        }
        Err(crate::store::GroupCommitError::Busy) => {
            tracing::debug!("peer push: too many signatures waiting to be stored");
            Err(NotStored::Unavailable)
        }
        Err(e) => {
            tracing::warn!("peer push: store write failed: {e}");
            Err(NotStored::Unavailable)
        }
    }
}

/// A push over a hash this node does not know (yet): held when it recovers to a member of
/// one of our DVNs' on-chain signer sets, declined otherwise. Which DVN it is for is only known
/// once this node signs the param; the sign stage checks it against that DVN's set again.
fn hold_early(
    ctx: &Context,
    call_hash: B256,
    signer: alloy::primitives::Address,
    bytes: &[u8],
) -> Result<Kept, NotStored> {
    let members: Vec<alloy::primitives::Address> = ctx
        .dvns
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .values()
        .flat_map(|dvn| dvn.signers.iter().copied())
        .collect();
    match check_signature(call_hash, signer, bytes, &members) {
        Ok(signature) => {
            ctx.early_signatures
                .hold(call_hash, signer, signature.as_bytes().to_vec());
            Ok(Kept::Held)
        }
        Err(Rejection::WrongSigner | Rejection::NotASigner | Rejection::Malformed) => {
            Err(NotStored::Rejected(Rejection::UnknownHash))
        }
        Err(why) => Err(NotStored::Rejected(why)),
    }
}

fn count_rejection(why: Rejection) {
    metrics::counter!("dvn_peer_signatures_rejected_total", "peer" => "push", "reason" => why.label()).increment(1);
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
    match store_pushed(&ctx, push.call_hash, push.signer, &push.signature).await {
        Ok(kept) => (StatusCode::OK, Json(kept.reply())),
        Err(NotStored::Rejected(why)) => rejected(why),
        Err(NotStored::Unavailable) => store_unavailable(),
    }
}

/// `POST /v1/signature-batches`: each signature checked and stored as a single push would
/// be (side by side, so they share group commits), each answered on its own; the batch as a
/// whole is refused only when it is malformed or larger than [`MAX_BATCH_SIGNATURES`].
pub async fn push_batch(
    State(ctx): State<Arc<Context>>,
    body: Result<Json<SignatureBatch>, JsonRejection>,
) -> Result<Json<BatchReply>, (StatusCode, Json<PushReply>)> {
    let batch = match body {
        Ok(Json(batch)) => batch,
        Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            tracing::warn!("peer batch push: body over the size limit");
            return Err(rejected(Rejection::TooLarge));
        }
        Err(e) => {
            tracing::warn!("peer batch push: malformed request: {e}");
            return Err(rejected(Rejection::BadRequest));
        }
    };
    if batch.version != PROTOCOL_VERSION {
        return Err(rejected(Rejection::Version));
    }
    if batch.signatures.is_empty() || batch.signatures.len() > MAX_BATCH_SIGNATURES {
        return Err(rejected(Rejection::BadRequest));
    }
    let stored = futures::future::join_all(
        batch
            .signatures
            .iter()
            .map(|s| store_pushed(&ctx, s.call_hash, s.signer, &s.signature)),
    )
    .await;
    let replies = stored
        .into_iter()
        .map(|outcome| match outcome {
            Ok(kept) => kept.reply(),
            Err(NotStored::Rejected(why)) => {
                count_rejection(why);
                PushReply {
                    accepted: false,
                    reason: Some(why.to_string()),
                }
            }
            Err(NotStored::Unavailable) => PushReply {
                accepted: false,
                reason: Some("store unavailable, pull it later".into()),
            },
        })
        .collect();
    Ok(Json(BatchReply {
        version: PROTOCOL_VERSION,
        replies,
    }))
}

/// `GET /v1/signatures/{call_hash}`.
pub async fn pull(
    State(ctx): State<Arc<Context>>,
    Path(call_hash): Path<String>,
) -> Result<Json<SignatureList>, StatusCode> {
    let call_hash: B256 = call_hash.parse().map_err(|_| StatusCode::BAD_REQUEST)?;
    let signatures = ctx
        .reader
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

fn store_unavailable() -> (StatusCode, Json<PushReply>) {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        Json(PushReply {
            accepted: false,
            reason: Some("store unavailable".into()),
        }),
    )
}

/// `POST /v1/claims`: a peer's transaction pending on a destination, and its packets. Kept
/// until the chain shows the sender's nonce used (checked when a packet it names is about to
/// be submitted here). The region is the one the peer's certificate names.
pub async fn claim(
    State(ctx): State<Arc<Context>>,
    peer: Option<Extension<PeerName>>,
    body: Result<Json<ClaimPush>, JsonRejection>,
) -> (StatusCode, Json<PushReply>) {
    let push = match body {
        Ok(Json(push)) => push,
        Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            return rejected_claim(Rejection::TooLarge)
        }
        Err(e) => {
            tracing::warn!("peer claim: malformed request: {e}");
            return rejected_claim(Rejection::BadRequest);
        }
    };
    if push.version != PROTOCOL_VERSION {
        return rejected_claim(Rejection::Version);
    }
    if let Err(why) = push.claim.check() {
        return rejected_claim(why);
    }
    if ctx.chain(push.dst_eid).is_err() {
        tracing::warn!(
            dst_eid = push.dst_eid,
            "peer claim for a chain not configured here"
        );
        return rejected_claim(Rejection::BadRequest);
    }
    let region = peer.map_or_else(|| "peer".to_string(), |Extension(PeerName(name))| name);
    let claim = &push.claim;
    if !ctx.config.peer_may_claim(&region, claim.sender) {
        tracing::warn!(peer = %region, sender = %claim.sender, "peer claim for an account that is not its configured submitter: refused");
        metrics::counter!("dvn_peer_claims_rejected_total", "reason" => "wrong_sender")
            .increment(1);
        return (
            StatusCode::FORBIDDEN,
            Json(PushReply {
                accepted: false,
                reason: Some("sender is not this region's submitter".into()),
            }),
        );
    }
    match ctx
        .store
        .record_peer_claim(
            &region,
            push.dst_eid,
            claim.sender,
            claim.nonce,
            claim.tx_hash,
            &claim.guids,
        )
        .await
    {
        Ok(()) => {
            metrics::counter!("dvn_peer_claims_received_total", "peer" => region.clone())
                .increment(1);
            tracing::info!(peer = %region, tx = %claim.tx_hash, nonce = claim.nonce, packets = claim.guids.len(), "peer announced a pending transaction");
            (
                StatusCode::OK,
                Json(PushReply {
                    accepted: true,
                    reason: None,
                }),
            )
        }
        Err(e) => {
            tracing::warn!("peer claim: store write failed: {e}");
            store_unavailable()
        }
    }
}

/// `POST /v1/claims/query`: which of the asker's packets our pending transactions carry.
pub async fn query_claims(
    State(ctx): State<Arc<Context>>,
    body: Result<Json<ClaimQuery>, JsonRejection>,
) -> Result<Json<ClaimList>, StatusCode> {
    let Ok(Json(query)) = body else {
        return Err(StatusCode::BAD_REQUEST);
    };
    if query.version != PROTOCOL_VERSION || query.guids.len() > MAX_CLAIM_GUIDS {
        return Err(StatusCode::BAD_REQUEST);
    }
    let asked: std::collections::HashSet<B256> = query.guids.into_iter().collect();
    let ours = crate::pipeline::transactions::own_claims(&ctx, query.dst_eid)
        .await
        .map_err(|_| StatusCode::SERVICE_UNAVAILABLE)?;
    let claims = ours
        .into_iter()
        .filter_map(|mut claim| {
            claim.guids.retain(|g| asked.contains(g));
            (!claim.guids.is_empty()).then_some(claim)
        })
        .collect();
    Ok(Json(ClaimList {
        version: PROTOCOL_VERSION,
        claims,
    }))
}

/// `POST /v1/rotations`: a peer proposes replacing its own signer. Checked (it may only remove
/// its own configured signer; see [`crate::pipeline::rotation::check`]) and recorded for this
/// region's operator to approve; nothing is signed here until then.
pub async fn rotation(
    State(ctx): State<Arc<Context>>,
    peer: Option<Extension<PeerName>>,
    body: Result<Json<RotationProposal>, JsonRejection>,
) -> (StatusCode, Json<PushReply>) {
    let refuse = |status: StatusCode, reason: &str, label: &'static str| {
        metrics::counter!("dvn_rotations_rejected_total", "reason" => label).increment(1);
        (
            status,
            Json(PushReply {
                accepted: false,
                reason: Some(reason.to_string()),
            }),
        )
    };
    let proposal = match body {
        Ok(Json(p)) if p.version == PROTOCOL_VERSION => p,
        Ok(_) => {
            return refuse(
                StatusCode::BAD_REQUEST,
                "unsupported protocol version",
                "version",
            )
        }
        Err(e) => {
            tracing::warn!("peer rotation: malformed request: {e}");
            return refuse(StatusCode::BAD_REQUEST, "malformed request", "bad_request");
        }
    };
    if ctx.chain(proposal.dst_eid).is_err() {
        return refuse(
            StatusCode::BAD_REQUEST,
            "chain not configured here",
            "bad_request",
        );
    }
    let region = peer.map(|Extension(PeerName(name))| name);
    match crate::pipeline::rotation::receive(&ctx, region.as_deref(), &proposal).await {
        Ok(Ok(_)) => (
            StatusCode::OK,
            Json(PushReply {
                accepted: true,
                reason: None,
            }),
        ),
        Ok(Err(problem)) => {
            tracing::warn!(peer = ?region, add = %proposal.add, remove = %proposal.remove, "refused a signer rotation proposal: {problem}");
            refuse(StatusCode::FORBIDDEN, &problem.to_string(), "check_failed")
        }
        Err(e) => {
            tracing::warn!("peer rotation: cannot check it now: {e:#}");
            store_unavailable()
        }
    }
}
