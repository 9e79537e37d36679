//! `dvn why <guid>`: where one packet is and what it is waiting for, read from the store.

use alloy::primitives::B256;
use serde_json::{json, Value};

use crate::config::Config;
use crate::store::{PacketState, Store};

fn chain_name(config: &Config, eid: u32) -> String {
    config
        .chains
        .iter()
        .find(|c| c.eid == eid)
        .map(|c| c.name.clone())
        .unwrap_or_else(|| format!("eid {eid}"))
}

/// The explanation as JSON (the text form prints its fields).
pub async fn explain(config: &Config, store: &Store, guid: B256) -> anyhow::Result<Value> {
    let Some(row) = store.packet(guid).await? else {
        let mut cursors = serde_json::Map::new();
        for chain in &config.chains {
            let cursor = store.cursor(chain.eid).await?.map(|(block, _)| block);
            cursors.insert(chain.name.clone(), json!(cursor));
        }
        return Ok(json!({
            "guid": guid.to_string(),
            "state": "unknown",
            "waiting_for": "this node has not seen the packet: it is not assigned to our DVN (no DVNFeePaid naming it in its send transaction), or the source block is past the scan cursor",
            "scan_cursors": cursors,
        }));
    };
    let p = &row.packet;
    let signatures = match row.call_hash {
        Some(hash) => store.signatures(hash).await?.len(),
        None => 0,
    };
    // Other regions' pending transactions recorded as carrying it: it waits for each until
    // the chain shows that transaction's nonce used (this view reads the store only).
    let claims: Vec<Value> = if row.state == PacketState::Signed {
        store
            .peer_claims(p.dst_eid, Some(&[guid]))
            .await?
            .into_iter()
            .map(|c| {
                json!({
                    "region": c.region,
                    "tx": c.tx_hash.to_string(),
                    "sender": c.sender.to_string(),
                    "nonce": c.nonce,
                })
            })
            .collect()
    } else {
        Vec::new()
    };
    let waiting_for = match row.state {
        PacketState::Observed => format!(
            "source confirmations and checks before signing (confirmations counted: {}); attempts {}",
            row.confirmations.map_or("not yet".into(), |c| c.to_string()),
            row.attempts
        ),
        PacketState::Signed if !claims.is_empty() => format!(
            "another region's pending transaction carrying it (see peer_claims): no region submits it again until the chain shows that transaction's nonce used; {signatures} signatures collected"
        ),
        PacketState::Signed => format!(
            "the DVN quorum and its submission: {signatures} signatures collected (ours included); once the quorum is in, the designated region submits (others take over after their turn) and this node confirms PayloadVerified on the destination — if peers are down, it waits for them"
        ),
        PacketState::Submitted => format!(
            "the receipt of execute transaction {} on the destination",
            row.submission.map_or("?".into(), |h| h.to_string())
        ),
        PacketState::Verified => "nothing: our DVN's PayloadVerified is on the destination".into(),
        PacketState::Skipped => "nothing: it was already verified, committed or delivered when we looked".into(),
        PacketState::Orphaned => "nothing: its source transaction left the canonical chain (reorg)".into(),
        PacketState::Invalid => "nothing: it can never be verified (see last_error)".into(),
        PacketState::Conflict => "a human: the source showed a different payload for a nonce we already signed; the path is halted".into(),
    };
    Ok(json!({
        "guid": guid.to_string(),
        "path": format!("{} -> {}", chain_name(config, p.src_eid), chain_name(config, p.dst_eid)),
        "nonce": p.nonce,
        "state": row.state.as_str(),
        "waiting_for": waiting_for,
        "source_tx": p.tx_hash.to_string(),
        "source_block": p.block_number,
        "confirmations": row.confirmations,
        "expiration": row.expiration,
        "signatures": signatures,
        // When this node first counted a quorum of valid signatures (unix ms), if it has.
        "quorum_since_ms": row.ready_at_ms,
        "submission": row.submission.map(|h| h.to_string()),
        "attempts": row.attempts,
        "last_error": row.last_error,
        "peer_claims": (!claims.is_empty()).then_some(claims),
    }))
}

/// The text form.
pub fn render(value: &Value) -> String {
    let mut out = String::new();
    if let Some(map) = value.as_object() {
        for (key, v) in map {
            if v.is_null() {
                continue;
            }
            let text = match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            out.push_str(&format!("{key:<14} {text}\n"));
        }
    }
    out
}
