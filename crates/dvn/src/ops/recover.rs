//! The operator's levers on stuck packets and halted paths, through the same store the
//! pipeline uses (a running node picks each change up on its next step):
//! `dvn path list`, `dvn path resume …` (after the equivocation guard halted a path) and
//! `dvn retry <guid>` (re-queue an `invalid` packet once its cause is fixed) and
//! `dvn rescan` (scan a chain again from a block).

use alloy::primitives::B256;
use serde_json::{json, Value};

use crate::config::Config;
use crate::store::{PacketState, PathKey, Store};

/// A chain given by name or eid, as the operator types it.
pub fn resolve_eid(config: &Config, chain: &str) -> anyhow::Result<u32> {
    if let Some(c) = config.chains.iter().find(|c| c.name == chain) {
        return Ok(c.eid);
    }
    let eid: u32 = chain
        .parse()
        .map_err(|_| anyhow::anyhow!("{chain} is neither a configured chain name nor an eid"))?;
    anyhow::ensure!(
        config.chains.iter().any(|c| c.eid == eid),
        "eid {eid} is not a configured chain"
    );
    Ok(eid)
}

/// An OApp address or 32-byte word, as the path key holds it.
pub fn parse_word(text: &str) -> anyhow::Result<B256> {
    if let Ok(word) = text.parse::<B256>() {
        return Ok(word);
    }
    let address: alloy::primitives::Address = text
        .parse()
        .map_err(|_| anyhow::anyhow!("{text} is neither an address nor a 32-byte word"))?;
    Ok(address.into_word())
}

/// The halted paths, as JSON.
pub async fn list_halted(config: &Config, store: &Store) -> anyhow::Result<Value> {
    let name = |eid: u32| {
        config
            .chains
            .iter()
            .find(|c| c.eid == eid)
            .map_or_else(|| eid.to_string(), |c| c.name.clone())
    };
    let halted: Vec<Value> = store
        .halted_paths()
        .await?
        .into_iter()
        .map(|h| {
            json!({
                "src": name(h.path.src_eid),
                "dst": name(h.path.dst_eid),
                "sender": h.path.sender.to_string(),
                "receiver": h.path.receiver.to_string(),
                "nonce": h.nonce,
                "reason": h.reason,
                "halted_at_ms": h.halted_at_ms,
            })
        })
        .collect();
    Ok(json!({ "halted_paths": halted }))
}

/// Lets a halted path go on. The conflicting packet itself stays in `conflict`: it is never
/// signed again; the operator has decided the path's later nonces may be.
pub async fn resume_path(store: &Store, path: &PathKey) -> anyhow::Result<Value> {
    anyhow::ensure!(
        store.resume_path(path).await?,
        "that path is not halted (see `dvn path list`)"
    );
    tracing::warn!(src = path.src_eid, dst = path.dst_eid, sender = %path.sender, receiver = %path.receiver, "halted path resumed by an operator");
    Ok(json!({ "resumed": true }))
}

/// Re-queues an `invalid` packet: back to `observed`, where every check runs again from the
/// chains. Any other state is refused (only `invalid` waits for an operator).
pub async fn retry_packet(store: &Store, guid: B256) -> anyhow::Result<Value> {
    let row = store
        .packet(guid)
        .await?
        .ok_or_else(|| anyhow::anyhow!("no packet {guid} in this node's store"))?;
    anyhow::ensure!(
        row.state == PacketState::Invalid,
        "packet {guid} is {}, not invalid: nothing to retry",
        row.state.as_str()
    );
    anyhow::ensure!(
        store
            .transition(
                row.expect(),
                PacketState::Observed,
                Some("re-queued by an operator")
            )
            .await?,
        "packet {guid} changed while retrying it; look again with `dvn why`"
    );
    Ok(json!({ "guid": guid.to_string(), "state": "observed" }))
}

/// Moves chain `chain`'s scan cursor back so the watcher reads again from block `from` to the
/// head. Idempotent (observations are), and safe while the node runs: the watcher moves the
/// cursor only from where its step began, so a step in flight cannot undo the rescan. Never
/// moves the cursor forward (that would skip blocks).
pub async fn rescan(
    store: &Store,
    chain: &crate::chain::EvmChain,
    from: u64,
) -> anyhow::Result<Value> {
    let eid = chain.eid();
    anyhow::ensure!(from >= 1, "--from must be at least 1");
    let cursor = store.cursor(eid).await?;
    if let Some((at, _)) = cursor {
        anyhow::ensure!(
            from <= at + 1,
            "{} is scanned only up to block {at}: a rescan from {from} would skip blocks",
            chain.name()
        );
    }
    let (hash, _) = chain.block(from - 1).await?;
    store.rewind_cursor(eid, (from - 1, hash)).await?;
    tracing::warn!(
        chain = chain.name(),
        from,
        "rescan requested by an operator"
    );
    Ok(json!({ "chain": chain.name(), "from": from, "previous_cursor": cursor.map(|c| c.0) }))
}

/// The configuration of a chain given by name or eid.
pub fn chain_config<'c>(
    config: &'c Config,
    chain: &str,
) -> anyhow::Result<&'c crate::config::ChainConfig> {
    let eid = resolve_eid(config, chain)?;
    config
        .chains
        .iter()
        .find(|c| c.eid == eid)
        .ok_or_else(|| anyhow::anyhow!("chain {chain} is not configured"))
}
