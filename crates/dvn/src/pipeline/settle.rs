//! settle: a mined `execute` is not a verification. Each packet in it counts as verified only
//! by its `PayloadVerified` log from our destination DVN (or by the destination's state);
//! otherwise it is classified and sent back: expired → re-sign for the next window, anything
//! else (bad signatures, a reverting target, a reverted transaction) → re-aggregate.
//!
//! Also handles what is still in flight: re-broadcasts the stored transaction (a crash may
//! have come between persisting and broadcasting), and replaces a stuck one with the same
//! nonce and higher fees, up to the configured cap.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use alloy::consensus::{Transaction, TxEip1559, TxEnvelope};
use alloy::eips::eip2718::Decodable2718;
use alloy::primitives::{keccak256, TxKind, B256};
use alloy::rpc::types::TransactionReceipt;
use alloy::sol_types::SolEvent;
use dvn_lz::contracts::{IReceiveUln302, IDVN};
use dvn_lz::PacketHeader;

use super::sign::destination_done;
use super::submit::{capped_fees, sign_transaction};
use super::Context;
use crate::store::{now_ms, Expect, PacketRow, PacketState, SubmissionRow};

/// After this many failed attempts a packet stops being retried and waits for an operator.
pub const MAX_ATTEMPTS: u64 = 10;

/// Destination blocks for which "our nonce is mined but none of our receipts is visible" must
/// hold before the submission counts as dropped (a node may report the account's new nonce
/// a moment before it serves the receipt; blocks, not seconds, so a slow or stalled chain
/// cannot make a live transaction look dropped).
const NONCE_TAKEN_BLOCKS: u64 = 3;

/// Settles or nurses the in-flight submission on `eid`. Returns true while one is in flight.
///
/// `taken_since` remembers, per account nonce, the destination head at which another
/// transaction was first seen to hold our nonce.
pub async fn settle_in_flight(
    ctx: &Context,
    eid: u32,
    taken_since: &mut HashMap<u64, u64>,
) -> anyhow::Result<bool> {
    let pending = ctx.store.pending_submissions(eid).await?;
    let Some(first) = pending.first() else {
        return Ok(false);
    };
    let chain = ctx.chain(eid)?;
    let nonce = first.account_nonce;
    let same_nonce: Vec<&SubmissionRow> = pending
        .iter()
        .filter(|s| s.account_nonce == nonce)
        .collect();
    // The account's mined nonce is read *before* the receipts: if one of ours is mined by the
    // time we read the nonce, its receipt is visible to the reads after it. (Reading them the
    // other way round raced: a transaction mined between the two reads looked like another
    // transaction had taken our nonce, and its packets were needlessly submitted again.)
    let mined = chain.mined_nonce(ctx.submitter.address()).await?;
    for sub in &same_nonce {
        if let Some(receipt) = chain.receipt(sub.tx_hash).await? {
            settle_receipt(ctx, eid, &same_nonce, sub.tx_hash, &receipt).await?;
            return Ok(false);
        }
    }
    // Nothing of ours mined. If a transaction with our nonce was mined anyway, it was not one
    // of ours (the key was used elsewhere, or we cancelled it): ours can never land, so retry
    // the packets. Only once that has held for NONCE_TAKEN_BLOCKS destination blocks: a node
    // may report the account's new nonce a moment before it serves the receipt (seen on anvil
    // right after a send).
    taken_since.retain(|n, _| *n >= nonce);
    if mined > nonce {
        let head = chain.head().await?;
        let since = *taken_since.entry(nonce).or_insert(head);
        if head < since + NONCE_TAKEN_BLOCKS {
            return Ok(true);
        }
        taken_since.remove(&nonce);
        for sub in &same_nonce {
            ctx.store.finish_submission(sub.tx_hash, "dropped").await?;
            for row in ctx.store.packets_of_submission(sub.tx_hash).await? {
                ctx.store
                    .retry(
                        row.expect(),
                        PacketState::Signed,
                        "submission dropped: its nonce was used by another transaction",
                    )
                    .await?;
            }
        }
        tracing::warn!(
            nonce,
            "nonce used by another transaction: retrying the packets"
        );
        return Ok(false);
    }
    // Re-broadcast (a crash may have come between persisting and broadcasting; the pool may have
    // dropped it); the same bytes cannot be mined twice.
    let newest = same_nonce
        .iter()
        .max_by_key(|s| s.created_at_ms)
        .copied()
        .unwrap_or(first);
    if !ctx.may_broadcast().await {
        return Ok(true);
    }
    if cancel_if_halted(ctx, eid, &same_nonce, newest).await? {
        return Ok(true);
    }
    // Before sending it again, check what it would still do: while this node was down (or its
    // transaction waited), another region may have taken its packets over and verified them.
    // Re-sending would verify them twice (verify has no on-chain replay protection), so the
    // transaction is cancelled instead and the rest go back for a fresh batch.
    // No region takes over before `takeover_after_secs`, so younger transactions skip the
    // (three reads per packet) check.
    let takeover_ms = i64::try_from(
        ctx.config
            .submitter
            .takeover_after_secs
            .saturating_mul(1000),
    )
    .unwrap_or(i64::MAX);
    let oldest = same_nonce
        .iter()
        .map(|s| s.created_at_ms)
        .min()
        .unwrap_or(newest.created_at_ms);
    if now_ms().saturating_sub(oldest) >= takeover_ms / 2
        && cancel_if_overtaken(ctx, eid, &same_nonce, newest).await?
    {
        return Ok(true);
    }
    let _ = chain.broadcast(&newest.raw_tx).await;
    let age = now_ms().saturating_sub(newest.created_at_ms);
    if age > replace_after_ms(ctx) {
        replace(ctx, eid, newest, same_nonce.len(), Replacement::SameCall).await?;
    }
    Ok(true)
}

/// Cancels the in-flight transaction when some of its packets are already verified on the
/// destination; settles those, and returns the others to `signed`. True when it cancelled.
async fn cancel_if_overtaken(
    ctx: &Context,
    eid: u32,
    same_nonce: &[&SubmissionRow],
    newest: &SubmissionRow,
) -> anyhow::Result<bool> {
    let chain = ctx.chain(eid)?;
    let dvn = ctx.dvn(eid)?;
    let mut rows = Vec::new();
    for sub in same_nonce {
        rows.extend(ctx.store.packets_of_submission(sub.tx_hash).await?);
    }
    let mut done = Vec::new();
    let mut open = Vec::new();
    for row in rows {
        let header = PacketHeader::decode(&row.packet.header)?;
        let required = row.confirmations.unwrap_or(1);
        match destination_done(
            chain,
            dvn.address,
            &header,
            row.packet.payload_hash,
            required,
        )
        .await?
        {
            Some(outcome) => done.push((row, outcome)),
            None => open.push(row),
        }
    }
    if done.is_empty() {
        return Ok(false);
    }
    tracing::warn!(tx = %newest.tx_hash, verified_elsewhere = done.len(), still_open = open.len(), "packets of our pending transaction were verified meanwhile: cancelling it");
    for (row, (state, why)) in &done {
        ctx.store
            .transition(row.expect(), *state, Some(why))
            .await?;
    }
    for row in &open {
        ctx.store
            .retry(
                row.expect(),
                PacketState::Signed,
                "pending transaction cancelled: re-batching",
            )
            .await?;
    }
    replace(ctx, eid, newest, same_nonce.len(), Replacement::Cancel).await?;
    Ok(true)
}

/// Cancels the in-flight transaction when it carries a packet of a path the equivocation guard
/// halted: nothing on that path may land until an operator resumes it. Its packets go back to
/// `signed` (the halted ones wait there). True when it cancelled.
async fn cancel_if_halted(
    ctx: &Context,
    eid: u32,
    same_nonce: &[&SubmissionRow],
    newest: &SubmissionRow,
) -> anyhow::Result<bool> {
    let halted: HashSet<_> = ctx.store.halted_path_set().await?;
    if halted.is_empty() {
        return Ok(false);
    }
    let mut rows = Vec::new();
    for sub in same_nonce {
        rows.extend(ctx.store.packets_attached(sub.tx_hash).await?);
    }
    if !rows.iter().any(|r| halted.contains(&r.packet.path())) {
        return Ok(false);
    }
    tracing::error!(tx = %newest.tx_hash, "pending transaction carries a packet of a halted path: cancelling it");
    // The conflicting packet itself has moved to `conflict`; the others go back to `signed`.
    for row in rows.iter().filter(|r| r.state == PacketState::Submitted) {
        ctx.store
            .retry(
                row.expect(),
                PacketState::Signed,
                "pending transaction cancelled: path halted",
            )
            .await?;
    }
    replace(ctx, eid, newest, same_nonce.len(), Replacement::Cancel).await?;
    Ok(true)
}

/// What a replacement transaction does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Replacement {
    /// The same `execute`, with higher fees.
    SameCall,
    /// A zero-value transfer to ourselves: takes the nonce so the old call can never land.
    Cancel,
}

fn replace_after_ms(ctx: &Context) -> i64 {
    i64::try_from(Duration::from_secs(ctx.config.submitter.replace_after_secs).as_millis())
        .unwrap_or(i64::MAX)
}

/// Re-sends `stuck` with the same nonce and fees raised by 12.5 % (the usual minimum for a
/// replacement), never above the configured cap.
async fn replace(
    ctx: &Context,
    eid: u32,
    stuck: &SubmissionRow,
    attempts: usize,
    kind: Replacement,
) -> anyhow::Result<()> {
    let chain = ctx.chain(eid)?;
    // A cancel must always be attempted; only fee bumps of the same call are capped in number.
    if kind == Replacement::SameCall && attempts > ctx.config.submitter.max_replacements as usize {
        tracing::error!(tx = %stuck.tx_hash, "transaction stuck after {attempts} attempts: fee cap reached, needs an operator");
        return Ok(());
    }
    let TxEnvelope::Eip1559(old) = TxEnvelope::decode_2718(&mut stuck.raw_tx.as_slice())? else {
        anyhow::bail!("stored submission is not an EIP-1559 transaction");
    };
    let old = old.tx();
    let bump = |v: u128| v.saturating_mul(9) / 8 + 1;
    let (suggested_fee, suggested_tip) = chain.fees().await?;
    let (max_fee, priority) = capped_fees(
        (
            bump(old.max_fee_per_gas()).max(suggested_fee),
            bump(old.max_priority_fee_per_gas.max(1)).max(suggested_tip),
        ),
        ctx.config.submitter.max_fee_gwei,
    );
    if max_fee <= old.max_fee_per_gas() {
        tracing::error!(tx = %stuck.tx_hash, "cannot replace: already at the fee cap");
        return Ok(());
    }
    let mut tx = TxEip1559 {
        max_fee_per_gas: max_fee,
        max_priority_fee_per_gas: priority,
        ..old.clone()
    };
    if kind == Replacement::Cancel {
        tx.to = TxKind::Call(ctx.submitter.address());
        tx.input = Default::default();
        tx.gas_limit = 21_000;
    }
    let row = sign_transaction(ctx, eid, tx).await?;
    // A cancel carries no packets; a fee bump carries the stuck transaction's.
    let packets: Vec<Expect> = match kind {
        Replacement::Cancel => Vec::new(),
        Replacement::SameCall => ctx
            .store
            .packets_of_submission(stuck.tx_hash)
            .await?
            .iter()
            .map(PacketRow::expect)
            .collect(),
    };
    if !ctx.store.record_submission(&row, &packets).await? {
        tracing::info!(old = %stuck.tx_hash, "packets moved while replacing: replacement discarded unsent");
        return Ok(());
    }
    metrics::counter!("dvn_submission_replacements_total", "chain" => chain.name().to_string())
        .increment(1);
    tracing::warn!(old = %stuck.tx_hash, new = %row.tx_hash, max_fee, "replacing stuck transaction");
    if ctx.may_broadcast().await {
        chain.broadcast(&row.raw_tx).await?;
    }
    Ok(())
}

/// Applies a mined receipt to every packet attached to any same-nonce submission.
async fn settle_receipt(
    ctx: &Context,
    eid: u32,
    same_nonce: &[&SubmissionRow],
    mined: B256,
    receipt: &TransactionReceipt,
) -> anyhow::Result<()> {
    let chain = ctx.chain(eid)?;
    let dvn = ctx.dvn(eid)?;
    let mut verified = HashSet::new();
    let mut failures = 0usize;
    for log in receipt.inner.logs() {
        let topic = log.topics().first().copied();
        if log.address() == chain.config.receive_uln
            && topic == Some(IReceiveUln302::PayloadVerified::SIGNATURE_HASH)
        {
            if let Ok(event) = IReceiveUln302::PayloadVerified::decode_log_data(&log.inner.data) {
                if event.dvn == dvn.address {
                    verified.insert((keccak256(&event.header), event.proofHash));
                }
            }
        } else if log.address() == dvn.address
            && (topic == Some(IDVN::VerifySignaturesFailed::SIGNATURE_HASH)
                || topic == Some(IDVN::ExecuteFailed::SIGNATURE_HASH))
        {
            failures += 1;
            if topic == Some(IDVN::VerifySignaturesFailed::SIGNATURE_HASH) {
                // The signer set or quorum may have changed on chain: re-read it before the
                // packets are aggregated again.
                ctx.wake.signers.notify_one();
            }
        }
    }
    let (_, block_time) = chain
        .block(receipt.block_number.unwrap_or_default())
        .await?;
    metrics::counter!("dvn_submission_gas_used_total", "chain" => chain.name().to_string())
        .increment(receipt.gas_used);
    for sub in same_nonce {
        for row in ctx.store.packets_of_submission(sub.tx_hash).await? {
            let p = &row.packet;
            if verified.contains(&(keccak256(&p.header), p.payload_hash)) {
                ctx.store
                    .transition(row.expect(), PacketState::Verified, None)
                    .await?;
                let latency =
                    now_ms().saturating_sub(i64::try_from(p.block_timestamp).unwrap_or(0) * 1000);
                metrics::histogram!("dvn_verification_latency_seconds", "chain" => chain.name().to_string()).record(latency as f64 / 1000.0);
                metrics::counter!("dvn_packets_verified_total", "chain" => chain.name().to_string()).increment(1);
                tracing::info!(guid = %p.guid, nonce = p.nonce, tx = %mined, "verified");
                continue;
            }
            let header = PacketHeader::decode(&p.header)?;
            let required = row.confirmations.unwrap_or(1);
            if let Some((state, why)) =
                destination_done(chain, dvn.address, &header, p.payload_hash, required).await?
            {
                ctx.store
                    .transition(row.expect(), state, Some(&why))
                    .await?;
                continue;
            }
            let (state, why) = if row.expiration.is_some_and(|e| e <= block_time) {
                (
                    PacketState::Observed,
                    "expired before inclusion: re-signing for the next window",
                )
            } else if !receipt.status() {
                (
                    PacketState::Signed,
                    "execute transaction reverted (does the submitter still hold ADMIN_ROLE?)",
                )
            } else {
                (
                    PacketState::Signed,
                    "execute skipped the param (VerifySignaturesFailed / ExecuteFailed)",
                )
            };
            if row.attempts + 1 >= MAX_ATTEMPTS {
                tracing::error!(guid = %p.guid, "{why}; giving up after {MAX_ATTEMPTS} attempts");
                ctx.store
                    .transition(row.expect(), PacketState::Invalid, Some(why))
                    .await?;
            } else {
                tracing::warn!(guid = %p.guid, failures, "{why}");
                ctx.store.retry(row.expect(), state, why).await?;
            }
        }
        let state = if sub.tx_hash == mined {
            "mined"
        } else {
            "replaced"
        };
        ctx.store.finish_submission(sub.tx_hash, state).await?;
    }
    Ok(())
}
