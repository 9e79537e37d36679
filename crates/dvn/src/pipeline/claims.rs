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

use alloy::primitives::{Address, B256};

use super::Context;
use crate::store::PeerClaim;

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
    let claims = ctx.store.peer_claims(eid, guids).await?;
    if claims.is_empty() {
        return Ok(HashMap::new());
    }
    let chain = ctx.chain(eid)?;
    // One agreed read per sender: its next nonce on the destination.
    let mut next_nonce: BTreeMap<Address, u64> = BTreeMap::new();
    for claim in &claims {
        if let std::collections::btree_map::Entry::Vacant(entry) = next_nonce.entry(claim.sender) {
            let mined = chain.mined_nonce(claim.sender).await?;
            entry.insert(mined);
            let lapsed = ctx
                .store
                .drop_used_peer_claims(eid, claim.sender, mined)
                .await?;
            if lapsed > 0 {
                tracing::debug!(sender = %claim.sender, mined, "peer claims lapsed: their nonce is used");
            }
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
