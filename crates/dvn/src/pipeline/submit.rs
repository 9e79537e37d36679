//! aggregate → submit: turns `signed` packets with a quorum into one batched `DVN.execute`.
//!
//! One submitter runs per destination chain, with at most one transaction in flight (its
//! nonce is then never ambiguous). Each step first settles what is in flight ([`settle`]), then:
//! - **aggregate**: for every `signed` packet, count the stored signatures that recover to the
//!   destination DVN's on-chain signers over the hash built from our own observation; pull from
//!   the peers when short;
//! - **rotate**: exactly one region owns a packet at any moment — the designated one (fixed by
//!   the source block timestamp), then every `takeover_after` seconds of *destination* time the
//!   next one round the ring — so regions agree without talking and never race each other;
//! - **check again** right before sending (someone else's transaction may have landed);
//! - **batch** up to `max_batch` params under `max_batch_gas`, sign the transaction, persist it,
//!   then broadcast it.
//!
//! [`settle`]: super::settle

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use alloy::consensus::{SignableTransaction, TxEip1559, TxEnvelope};
use alloy::eips::eip2718::Encodable2718;
use alloy::network::TransactionBuilder;
use alloy::primitives::{Bytes, TxKind, B256, U256};
use alloy::rpc::types::TransactionRequest;
use alloy::sol_types::SolCall;
use dvn_lz::contracts::{ExecuteParam, IDVN};
use dvn_lz::{PacketHeader, SignatureSet, UnsignedParam};
use futures::StreamExt;

use super::expiration::too_close;
use super::sign::{canonical_problem, destination_done};
use super::{settle, Context, Progress, Stage};
use crate::store::{now_ms, Expect, PacketRow, PacketState, SubmissionRow};

/// Rotation slot: packets whose source blocks fall in the same slot share a designated
/// submitter, so a burst goes out as one batch.
pub const ROTATION_SLOT_SECS: u64 = 60;
/// How often one packet may trigger a pull from the peers.
const PULL_EVERY: Duration = Duration::from_secs(1);

/// How often a packet another region is to submit is looked up on the destination.
const OTHERS_CHECK_EVERY: Duration = Duration::from_secs(5);

/// Most such look-ups per step (three reads each).
const OTHERS_CHECK_PER_STEP: usize = 20;

/// Clock offset from the destination's latest block time beyond which a warning is logged.
pub const CLOCK_SKEW_TOLERANCE_SECS: u64 = 120;

/// Signature pulls in flight at once per step.
const PULL_CONCURRENCY: usize = 16;

/// The designated submitter index for a packet (into the sorted region list).
pub fn designated(block_timestamp: u64, regions: usize) -> usize {
    usize::try_from((block_timestamp / ROTATION_SLOT_SECS) % regions.max(1) as u64).unwrap_or(0)
}

/// The one region that may *start* submitting a packet at time `now` (unix seconds), if any:
/// the designated region during its first window of `takeover_secs` after the source block,
/// then the next region round the ring, one window each. Only the first half of a window is
/// for starting a submission; the second half is a quiet gap in which the owner's transaction
/// is mined before the next owner looks, and which absorbs clock skew between regions. So two
/// live regions never both send the same packet, and a region coming back never races the one
/// that took over.
pub fn owner(source_timestamp: u64, now: u64, regions: usize, takeover_secs: u64) -> Option<usize> {
    let regions = regions.max(1) as u64;
    let window = takeover_secs.max(2);
    let elapsed = now.saturating_sub(source_timestamp);
    if elapsed % window >= window / 2 {
        return None;
    }
    let first = designated(source_timestamp, regions as usize) as u64;
    usize::try_from((first + (elapsed / window) % regions) % regions).ok()
}

/// Destination blocks that must follow a packet's quorum before a region other than the
/// designated one submits it: a stalled destination (the owner's transaction waiting in its
/// pool) hands the packet to nobody.
pub const TAKEOVER_MIN_BLOCKS: u64 = 3;

#[derive(Debug)]
pub struct SubmitStage {
    ctx: Arc<Context>,
    eid: u32,
    last_pull: HashMap<B256, Instant>,
    /// Destination head when each packet was first seen with a quorum (see
    /// [`TAKEOVER_MIN_BLOCKS`]). Not persisted: a restart only delays a takeover.
    ready_since: HashMap<B256, u64>,
    /// Per account nonce: the destination head when another transaction was first seen to
    /// hold it (see `settle::settle_in_flight`).
    nonce_taken_since: HashMap<u64, u64>,
    /// When a clock-skew warning was last logged.
    skew_warned: Option<Instant>,
    /// When each packet another region is to submit was last looked up on the destination.
    last_checked: HashMap<B256, Instant>,
}

struct Ready {
    row: PacketRow,
    param: ExecuteParam,
}

impl SubmitStage {
    pub fn new(ctx: Arc<Context>, eid: u32) -> Self {
        Self {
            ctx,
            eid,
            last_pull: HashMap::new(),
            ready_since: HashMap::new(),
            nonce_taken_since: HashMap::new(),
            skew_warned: None,
            last_checked: HashMap::new(),
        }
    }

    async fn run_step(&mut self) -> anyhow::Result<Progress> {
        // A replica without the region's submitter lease sends nothing, not even retries.
        if !self.ctx.holds_submitter_role() {
            return Ok(Progress::Idle);
        }
        if settle::settle_in_flight(&self.ctx, self.eid, &mut self.nonce_taken_since).await? {
            return Ok(Progress::Idle);
        }
        let ready = self.aggregate().await?;
        if ready.is_empty() {
            return Ok(Progress::Idle);
        }
        // Let a burst gather into one transaction, up to `batch_wait_ms` after the first.
        let oldest = ready
            .iter()
            .filter_map(|r| r.row.ready_at_ms)
            .min()
            .unwrap_or_else(now_ms);
        let wait = i64::try_from(self.ctx.config.submitter.batch_wait_ms).unwrap_or(i64::MAX);
        if ready.len() < self.ctx.config.submitter.max_batch
            && now_ms().saturating_sub(oldest) < wait
        {
            return Ok(Progress::Idle);
        }
        self.send_batch(ready).await?;
        Ok(Progress::Busy)
    }

    /// Signed packets that have a quorum and are this region's to submit now.
    async fn aggregate(&mut self) -> anyhow::Result<Vec<Ready>> {
        let ctx = Arc::clone(&self.ctx);
        let (chain, dvn) = (ctx.chain(self.eid)?, ctx.dvn(self.eid)?);
        let ttl = self.ctx.config.verification.expiration_secs;
        let now = chain.latest_timestamp().await?;
        self.note_clock_offset(chain.name(), now);
        let head = chain.head().await?;
        let regions = self.ctx.config.regions();
        let me = regions
            .iter()
            .position(|r| *r == self.ctx.config.node.name)
            .unwrap_or(0);
        let takeover = self.ctx.config.submitter.takeover_after_secs;
        let signed = self
            .ctx
            .store
            .packets(PacketState::Signed, Some(self.eid), 2_000)
            .await?;
        let holds = self.ctx.store.holds().await?;
        let signed: Vec<PacketRow> = signed
            .into_iter()
            .filter(|r| !holds.holds(&r.packet.path()))
            .collect();
        self.last_pull
            .retain(|guid, _| signed.iter().any(|r| r.packet.guid == *guid));
        self.pull_missing(&signed, &dvn.signers, dvn.quorum).await?;
        self.ready_since
            .retain(|guid, _| signed.iter().any(|r| r.packet.guid == *guid));
        let mut ready = Vec::new();
        let mut not_ours = Vec::new();
        for row in signed {
            let (Some(call_hash), Some(expires), Some(confirmations)) =
                (row.call_hash, row.expiration, row.confirmations)
            else {
                self.ctx
                    .store
                    .retry(
                        row.expect(),
                        PacketState::Observed,
                        "signed row without its param",
                    )
                    .await?;
                continue;
            };
            if too_close(expires, ttl, now) {
                self.ctx
                    .store
                    .retry(
                        row.expect(),
                        PacketState::Observed,
                        "expiration too close: re-signing for the next window",
                    )
                    .await?;
                continue;
            }
            let Ok(header) = PacketHeader::decode(&row.packet.header) else {
                self.ctx
                    .store
                    .transition(
                        row.expect(),
                        PacketState::Invalid,
                        Some("stored header invalid"),
                    )
                    .await?;
                continue;
            };
            // Rebuild the param from our own observation: only signatures over *this* hash count.
            let unsigned = UnsignedParam::verify(
                dvn.vid,
                chain.config.receive_uln,
                &header,
                row.packet.payload_hash,
                confirmations,
                expires,
            );
            if unsigned.call_hash() != call_hash {
                self.ctx
                    .store
                    .retry(
                        row.expect(),
                        PacketState::Observed,
                        "stored param hash does not match: re-signing",
                    )
                    .await?;
                continue;
            }
            let mut set = SignatureSet::new(call_hash);
            for (_, bytes) in self.ctx.store.signatures(call_hash).await? {
                if let Ok(sig) = dvn_lz::multisig::parse_signature(&bytes) {
                    let _ = set.insert(sig, &dvn.signers);
                }
            }
            if set.len() < dvn.quorum {
                continue;
            }
            let ready_at = match row.ready_at_ms {
                Some(at) => at,
                None => {
                    let at = now_ms();
                    self.ctx.store.mark_ready(row.packet.guid, at).await?;
                    at
                }
            };
            let mut row = row;
            row.ready_at_ms = Some(ready_at);
            let since = *self.ready_since.entry(row.packet.guid).or_insert(head);
            // Turns follow the destination's clock, not this machine's: a region whose clock
            // is off still takes its turn when the chain says so.
            let owner = owner(row.packet.block_timestamp, now, regions.len(), takeover);
            let designated = designated(row.packet.block_timestamp, regions.len());
            let chain_moved = head >= since + TAKEOVER_MIN_BLOCKS;
            if owner != Some(me) || (me != designated && !chain_moved) {
                not_ours.push(row);
                continue;
            }
            let packed = set.pack(dvn.quorum)?;
            ready.push(Ready {
                param: unsigned.into_param(packed),
                row,
            });
        }
        self.check_others_done(chain, dvn.address, not_ours).await?;
        Ok(ready)
    }

    /// Packets with a quorum that another region is to submit: now and then, look whether
    /// the destination already has them, so this node closes them (and its backlog gauge
    /// drops) without waiting for a turn of its own — which, with turns on block time, an
    /// idle destination might not bring for a long while.
    async fn check_others_done(
        &mut self,
        chain: &crate::chain::EvmChain,
        dvn: alloy::primitives::Address,
        rows: Vec<PacketRow>,
    ) -> anyhow::Result<()> {
        let now = Instant::now();
        self.last_checked
            .retain(|_, at| now.duration_since(*at) < OTHERS_CHECK_EVERY);
        let due: Vec<PacketRow> = rows
            .into_iter()
            .filter(|r| !self.last_checked.contains_key(&r.packet.guid))
            .take(OTHERS_CHECK_PER_STEP)
            .collect();
        for row in due {
            self.last_checked.insert(row.packet.guid, now);
            let Ok(header) = PacketHeader::decode(&row.packet.header) else {
                continue;
            };
            let required = row.confirmations.unwrap_or(1);
            if let Some((state, why)) =
                destination_done(chain, dvn, &header, row.packet.payload_hash, required).await?
            {
                self.ctx
                    .store
                    .transition(row.expect(), state, Some(&why))
                    .await?;
            }
        }
        Ok(())
    }

    /// Asks the peers, all at once, for the signatures of every packet still short of a
    /// quorum (each packet at most once per [`PULL_EVERY`]), and stores those that check out.
    /// Concurrent, so one peer that never answers costs one timeout per step, not one per
    /// packet.
    async fn pull_missing(
        &mut self,
        rows: &[PacketRow],
        signers: &[alloy::primitives::Address],
        quorum: usize,
    ) -> anyhow::Result<()> {
        let mut wanted = Vec::new();
        for row in rows {
            let Some(call_hash) = row.call_hash else {
                continue;
            };
            let have = self
                .ctx
                .store
                .signatures(call_hash)
                .await?
                .iter()
                .filter(|(signer, _)| signers.contains(signer))
                .count();
            if have < quorum && self.should_pull(row.packet.guid) {
                wanted.push(call_hash);
            }
        }
        let peers = &self.ctx.peers;
        let pulled: Vec<_> = futures::stream::iter(wanted)
            .map(|call_hash| async move { (call_hash, peers.pull(call_hash, signers).await) })
            .buffer_unordered(PULL_CONCURRENCY)
            .collect()
            .await;
        for (call_hash, found) in pulled {
            for (peer, signer, sig) in found {
                self.ctx
                    .store
                    .insert_signature(call_hash, signer, &sig.as_bytes(), &peer)
                    .await?;
            }
        }
        Ok(())
    }

    /// Exports how far this machine's clock is from the destination's latest block time, and
    /// warns (once a minute) when it is beyond [`CLOCK_SKEW_TOLERANCE_SECS`]: no decision is
    /// taken on the wall clock that block time can make, but a skewed clock is worth fixing.
    fn note_clock_offset(&mut self, chain: &str, block_time: u64) {
        let wall = now_ms() / 1000;
        let offset = wall - i64::try_from(block_time).unwrap_or(i64::MAX);
        metrics::gauge!("dvn_clock_offset_seconds", "chain" => chain.to_string())
            .set(offset as f64);
        if offset.unsigned_abs() > CLOCK_SKEW_TOLERANCE_SECS
            && self
                .skew_warned
                .is_none_or(|at| at.elapsed() > Duration::from_secs(60))
        {
            self.skew_warned = Some(Instant::now());
            tracing::warn!(
                chain,
                offset_secs = offset,
                "this machine's clock is {offset} s from the chain's latest block time: check NTP"
            );
        }
    }

    fn should_pull(&mut self, guid: B256) -> bool {
        let now = Instant::now();
        match self.last_pull.get(&guid) {
            Some(at) if now.duration_since(*at) < PULL_EVERY => false,
            _ => {
                self.last_pull.insert(guid, now);
                true
            }
        }
    }

    /// Checks, batches, signs, persists and broadcasts one `execute`.
    async fn send_batch(&mut self, ready: Vec<Ready>) -> anyhow::Result<()> {
        let ctx = Arc::clone(&self.ctx);
        let (chain, dvn) = (ctx.chain(self.eid)?, ctx.dvn(self.eid)?);
        let mut batch = Vec::new();
        // Source heads, read once per batch, for the re-check of not-yet-final packets.
        let mut source_heads = std::collections::HashMap::new();
        for item in ready {
            // Signed before a reorg, not yet submitted: while the source block could still be
            // reorganised away, the source receipt is re-checked first. An orphan is never
            // submitted (the watcher brings the packet back if it is re-included).
            let p = &item.row.packet;
            let src = ctx.chain(p.src_eid)?;
            let src_head = match source_heads.get(&p.src_eid) {
                Some(h) => *h,
                None => {
                    let h = src.head().await?;
                    source_heads.insert(p.src_eid, h);
                    h
                }
            };
            if src_head.saturating_sub(p.block_number) < src.config.max_reorg_depth {
                if let Some(why) = canonical_problem(src, p).await? {
                    tracing::warn!(guid = %p.guid, "signed packet orphaned before submission: {why}");
                    self.ctx
                        .store
                        .transition(item.row.expect(), PacketState::Orphaned, Some(&why))
                        .await?;
                    continue;
                }
            }
            let header = PacketHeader::decode(&item.row.packet.header)?;
            let required = item.row.confirmations.unwrap_or(1);
            if let Some((state, why)) = destination_done(
                chain,
                dvn.address,
                &header,
                item.row.packet.payload_hash,
                required,
            )
            .await?
            {
                tracing::info!(guid = %item.row.packet.guid, "{why}");
                self.ctx
                    .store
                    .transition(item.row.expect(), state, Some(&why))
                    .await?;
                continue;
            }
            batch.push(item);
            if batch.len() >= self.ctx.config.submitter.max_batch {
                break;
            }
        }
        if batch.is_empty() {
            return Ok(());
        }
        let from = self.ctx.submitter.address();
        let (input, gas) = loop {
            let params: Vec<ExecuteParam> = batch.iter().map(|r| r.param.clone()).collect();
            let input = Bytes::from(IDVN::executeCall { params }.abi_encode());
            let request = TransactionRequest::default()
                .with_from(from)
                .with_to(dvn.address)
                .with_input(input.clone());
            let gas = chain.estimate_gas(&request).await?;
            if gas <= self.ctx.config.submitter.max_batch_gas || batch.len() == 1 {
                break (input, gas);
            }
            batch.truncate(batch.len().div_ceil(2));
        };
        let nonce = chain.pending_nonce(from).await?;
        let (max_fee, priority) =
            capped_fees(chain.fees().await?, self.ctx.config.submitter.max_fee_gwei);
        let tx = TxEip1559 {
            chain_id: chain.config.chain_id,
            nonce,
            // Headroom over the estimate; Conflux charges ≥ ¾ of the limit, so keep it tight.
            gas_limit: gas.saturating_mul(6) / 5,
            max_fee_per_gas: max_fee,
            max_priority_fee_per_gas: priority,
            to: TxKind::Call(dvn.address),
            value: U256::ZERO,
            access_list: Default::default(),
            input,
        };
        let packets: Vec<Expect> = batch.iter().map(|r| r.row.expect()).collect();
        if !self.ctx.may_broadcast().await {
            tracing::info!("lost the submitter lease: not submitting");
            return Ok(());
        }
        let row = sign_transaction(&self.ctx, self.eid, tx).await?;
        if !self.ctx.store.record_submission(&row, &packets).await? {
            // A packet moved since aggregation (settled by another path, re-observed, halted):
            // this transaction is dropped unsent and the next step batches afresh.
            tracing::info!(tx = %row.tx_hash, "a packet changed while batching: transaction discarded unsent");
            return Ok(());
        }
        metrics::counter!("dvn_submissions_total", "chain" => chain.name().to_string())
            .increment(1);
        tracing::info!(chain = chain.name(), tx = %row.tx_hash, nonce, packets = packets.len(), gas, "submitting DVN.execute");
        if !self.ctx.may_broadcast().await {
            // Persisted but not sent: the lease holder's own nonce wins; this row is settled
            // (as dropped, then retried) if this replica holds the lease again.
            tracing::warn!(tx = %row.tx_hash, "lost the submitter lease before broadcasting");
            return Ok(());
        }
        if let Err(e) = chain.broadcast(&row.raw_tx).await {
            // Stored already: settle re-broadcasts it, or replaces it, on its next steps.
            tracing::warn!(tx = %row.tx_hash, "broadcast failed, will retry: {e}");
        }
        Ok(())
    }
}

/// Applies the operator's fee cap.
pub fn capped_fees((max_fee, priority): (u128, u128), cap_gwei: u64) -> (u128, u128) {
    let cap = u128::from(cap_gwei) * 1_000_000_000;
    let max_fee = max_fee.min(cap);
    (max_fee, priority.min(max_fee))
}

/// Signs an EIP-1559 transaction with the submitter key (any backend) into a stored row.
pub async fn sign_transaction(
    ctx: &Context,
    eid: u32,
    tx: TxEip1559,
) -> anyhow::Result<SubmissionRow> {
    let signature = ctx.submitter.sign_digest(tx.signature_hash()).await?;
    let signed = tx.into_signed(signature);
    let tx_hash = *signed.hash();
    let nonce = signed.tx().nonce;
    let envelope = TxEnvelope::from(signed);
    Ok(SubmissionRow {
        tx_hash,
        dst_eid: eid,
        account_nonce: nonce,
        raw_tx: envelope.encoded_2718(),
        created_at_ms: now_ms(),
    })
}

impl Stage for SubmitStage {
    async fn step(&mut self) -> anyhow::Result<Progress> {
        self.run_step().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exactly_one_owner_at_a_time_round_the_ring_with_quiet_gaps() {
        // Source block at t=120 (slot 2 of 60 s → designated region 2 of 3), windows of 10 s.
        assert_eq!(owner(120, 120, 3, 10), Some(2));
        assert_eq!(owner(120, 124, 3, 10), Some(2));
        assert_eq!(owner(120, 125, 3, 10), None, "second half: quiet");
        assert_eq!(owner(120, 129, 3, 10), None);
        assert_eq!(owner(120, 130, 3, 10), Some(0));
        assert_eq!(owner(120, 140, 3, 10), Some(1));
        assert_eq!(owner(120, 150, 3, 10), Some(2), "round the ring");
        assert_eq!(
            owner(120, 100, 3, 10),
            Some(2),
            "a clock behind the source's never underflows"
        );
        // At no second are two regions entitled, and between two owners there is a gap.
        let mut last: Option<(usize, u64)> = None;
        for now in 0..1_000 {
            if let Some(o) = owner(7_000, now, 3, 10) {
                if let Some((prev, at)) = last {
                    if prev != o {
                        assert!(now - at > 5, "gap between owners");
                    }
                }
                last = Some((o, now));
            }
        }
    }

    #[test]
    fn designation_is_the_same_for_a_burst_and_rotates_by_slot() {
        assert_eq!(designated(120, 3), designated(179, 3));
        assert_ne!(designated(120, 3), designated(180, 3));
        assert_eq!(designated(0, 1), 0);
    }

    #[test]
    fn fees_are_capped() {
        assert_eq!(
            capped_fees((900_000_000_000, 2_000_000_000), 500),
            (500_000_000_000, 2_000_000_000)
        );
        assert_eq!(capped_fees((3, 5), 500), (3, 3));
    }
}
