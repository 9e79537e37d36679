//! Claims of other regions on the packets this node is about to submit.
//!
//! Turns alone cannot keep two regions from verifying a packet twice: a region's `execute`
//! may still sit in some pool when its turn ends, and land after the next region's. So each
//! region announces its pending transaction (sender, nonce, packets) to the others, and a
//! region about to submit a packet first looks for a claim on it. A claim **stands while the
//! chain shows the sender's nonce unused** — until then that transaction may land — and
//! lapses by itself once the nonce is used (by the `execute`, and then the destination shows
//! the packets verified, or by the cancel its sender sends when its turn has passed on).
//!
//! What a region says can only delay a packet here, never get it verified twice: the lapse
//! is read from the chain, and the destination is checked again before sending.

use std::collections::{BTreeMap, HashMap};

use alloy::primitives::{keccak256, Address, B256};

use super::transactions::payloads_verified;
use super::Context;
use crate::store::{PacketState, PeerClaim};

/// Most mined claims whose receipts are read in one step (the rest wait for the next).
const RECEIPTS_PER_STEP: usize = 16;

/// The packets among `guids` that a standing claim holds back, with the claim holding each.
///
/// With `ask_peers` (a takeover), the reachable peers are asked first, so a claim whose
/// announcement was lost still counts; what they answer is stored like an announcement.
pub async fn standing(
    ctx: &Context,
    eid: u32,
    guids: &[B256],
    ask_peers: bool,
) -> anyhow::Result<HashMap<B256, PeerClaim>> {
    if ask_peers {
        for (region, claim) in ctx.peers.query_claims(eid, guids).await {
            if !ctx.config.peer_may_claim(&region, claim.sender) {
                tracing::warn!(peer = %region, sender = %claim.sender, "peer answered with a claim for an account that is not its configured submitter: ignored");
                continue;
            }
            ctx.store
                .record_peer_claim(
                    &region,
                    eid,
                    claim.sender,
                    claim.nonce,
                    claim.tx_hash,
                    &claim.guids,
                )
                .await?;
        }
    }
    let claims = ctx.store.peer_claims(eid, Some(guids)).await?;
    if claims.is_empty() {
        return Ok(HashMap::new());
    }
    let next_nonce = next_nonces(ctx.chain(eid)?, &claims).await?;
    for (&sender, &mined) in &next_nonce {
        let lapsed = ctx.store.drop_used_peer_claims(eid, sender, mined).await?;
        if lapsed > 0 {
            tracing::debug!(%sender, mined, "peer claims lapsed: their nonce is used");
        }
    }
    let mut held = HashMap::new();
    for claim in claims {
        if claim.nonce < next_nonce.get(&claim.sender).copied().unwrap_or(0) {
            continue;
        }
        for guid in &claim.guids {
            held.insert(*guid, claim.clone());
        }
    }
    Ok(held)
}

/// Each claiming sender's next nonce on the destination: one agreed read per sender.
async fn next_nonces(
    chain: &crate::chain::EvmChain,
    claims: &[PeerClaim],
) -> anyhow::Result<BTreeMap<Address, u64>> {
    let mut next_nonce = BTreeMap::new();
    for claim in claims {
        if let std::collections::btree_map::Entry::Vacant(entry) = next_nonce.entry(claim.sender) {
            entry.insert(chain.mined_nonce(claim.sender).await?);
        }
    }
    Ok(next_nonce)
}

/// Closes the packets other regions' mined transactions verified, from those transactions'
/// receipts: one agreed receipt read for a whole claimed batch. Without it, this node learns
/// of each such packet with a destination check of its own (a few reads per packet), or only
/// when its turn on the packet comes and it checks it before sending — in a catch-up, where the
/// regions verify the backlog side by side, that was most of every node's checks and reads.
///
/// Only the receipt counts: our DVN's `PayloadVerified` on the receive ULN for the packet's
/// header and payload, with at least the confirmations this node signed. A claim only says
/// which transaction to read; a region that names the wrong one makes this node read a
/// receipt for nothing, never close a packet that is not verified. A claim whose transaction
/// has no receipt (replaced, cancelled) is dropped and its packets go on as before. Returns
/// how many packets were closed.
pub async fn settle_mined(ctx: &Context, eid: u32) -> anyhow::Result<usize> {
    let claims = ctx.reader.peer_claims(eid, None).await?;
    if claims.is_empty() {
        return Ok(0);
    }
    let chain = ctx.chain(eid)?;
    let dvn = ctx.dvn(eid)?;
    let next_nonce = next_nonces(chain, &claims).await?;
    let mut closed = 0;
    let mined = claims
        .iter()
        .filter(|c| c.nonce < next_nonce.get(&c.sender).copied().unwrap_or(0))
        .take(RECEIPTS_PER_STEP);
    for claim in mined {
        if let Some(receipt) = chain.receipt(claim.tx_hash).await? {
            let verified = match receipt.status() {
                true => {
                    payloads_verified(receipt.inner.logs(), chain.config.receive_uln, dvn.address)
                }
                false => HashMap::new(),
            };
            let why = format!(
                "verified by {}'s transaction {} (its receipt)",
                claim.region, claim.tx_hash
            );
            // The claim's packets in one read and their moves in one commit.
            let moves: Vec<_> = ctx
                .reader
                .packets_by_guid(&claim.guids)
                .await?
                .into_iter()
                .filter(|row| {
                    let key = (keccak256(&row.packet.header), row.packet.payload_hash);
                    row.state == PacketState::Signed
                        && row.confirmations.is_some_and(|required| {
                            verified.get(&key).is_some_and(|c| *c >= required)
                        })
                })
                .map(|row| (row.expect(), PacketState::Verified, Some(why.as_str())))
                .collect();
            let applied = ctx.store.transition_all(&moves).await?;
            closed += applied.into_iter().filter(|moved| *moved).count();
        }
        ctx.store.drop_peer_claim(eid, claim.tx_hash).await?;
    }
    if closed > 0 {
        tracing::debug!(
            chain = chain.name(),
            closed,
            "packets verified by other regions' transactions closed from their receipts"
        );
    }
    Ok(closed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::peer::protocol::{ClaimEntry, ClaimPush, MAX_BODY_BYTES, MAX_CLAIM_GUIDS};

    #[test]
    fn a_full_claim_message_fits_the_peer_body_limit() {
        let push = ClaimPush {
            version: 1,
            dst_eid: u32::MAX,
            claim: ClaimEntry {
                sender: Address::repeat_byte(0xff),
                nonce: u64::MAX,
                tx_hash: B256::repeat_byte(0xff),
                guids: vec![B256::repeat_byte(0xff); MAX_CLAIM_GUIDS],
            },
        };
        let body = serde_json::to_vec(&push).unwrap();
        assert!(body.len() < MAX_BODY_BYTES, "{} bytes", body.len());
        assert!(push.claim.check().is_ok());
        let too_many = ClaimEntry {
            guids: vec![B256::ZERO; MAX_CLAIM_GUIDS + 1],
            ..push.claim.clone()
        };
        assert!(too_many.check().is_err());
        let none = ClaimEntry {
            guids: vec![],
            ..push.claim
        };
        assert!(none.check().is_err());
    }
}
