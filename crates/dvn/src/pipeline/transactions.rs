//! The transaction manager: the whole life of a submitter transaction on one destination —
//! build, sign, persist, broadcast, announce, fee-bump, cancel, settle — in one place. The
//! submit stage decides *which* params go into an `execute`; this module owns how that
//! transaction reaches the chain and what its receipt means.
//!
//! Rules it keeps:
//! - **Consecutive nonces in flight**, at most `submitter.max_in_flight` per destination, each
//!   carrying its own packets (a packet moves `signed` → `submitted` with the row that
//!   carries it, atomically, so no two transactions of ours carry one packet); every
//!   transaction persisted before it is broadcast (a crash in between re-broadcasts the same
//!   bytes). Only the lowest waiting nonce is fee-bumped: the ones above it wait on it.
//! - **A mined `execute` is not a verification**: each packet counts as verified only by its
//!   `PayloadVerified` log from our DVN (or by the destination's state); otherwise it is
//!   classified and sent back: expired → re-sign for the next window, anything else (bad
//!   signatures, a reverting target, a reverted transaction) → re-aggregate.
//! - **Stuck → replaced** with the same nonce and higher fees, up to the configured cap.
//! - **A turn that passed is withdrawn**: once another region's turn to start one of its packets
//!   has begun (destination block time, see [`turns`]), a pending `execute` is cancelled with a
//!   same-nonce self-transfer instead of being bumped again; its packets stay attached until
//!   one of the two is mined.
//! - **Announced**: after broadcasting, the transaction's (sender, nonce, packets) is pushed to
//!   the peers as a claim, so the next region in turn waits while it stands (see [`claims`]).
//!
//! [`turns`]: super::turns
//! [`claims`]: super::claims

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use alloy::consensus::{SignableTransaction, Transaction, TxEip1559, TxEnvelope};
use alloy::eips::eip2718::{Decodable2718, Encodable2718};
use alloy::primitives::{keccak256, Address, Bytes, TxKind, B256, U256};
use alloy::rpc::types::{TransactionReceipt, TransactionRequest};
use alloy::sol_types::SolEvent;
use dvn_lz::contracts::{IReceiveUln302, IDVN};
use dvn_lz::PacketHeader;

use super::gas::{CallShape, GasEstimates, MinedCall};
use super::sign::destination_done;
use super::{execute, turns, Context};
use crate::peer::protocol::ClaimEntry;
use crate::store::{now_ms, Expect, PacketRow, PacketState, SubmissionRow};
use crate::telemetry::PacketStage;

/// After this many failed attempts a packet stops being retried and waits for an operator.
pub const MAX_ATTEMPTS: u64 = 10;

/// Destination blocks for which "our nonce is mined but none of our receipts is visible" must
/// hold before the submission counts as dropped (a node may report the account's new nonce
/// a moment before it serves the receipt; blocks, not seconds, so a slow or stalled chain
/// cannot make a live transaction look dropped).
const NONCE_TAKEN_BLOCKS: u64 = 3;

/// What a replacement transaction does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Replacement {
    /// The same `execute`, with higher fees.
    SameCall,
    /// A zero-value transfer to ourselves: takes the nonce so the old call can never land.
    Cancel,
}

/// Why a pending `execute` is withdrawn (the metrics label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelReason {
    /// Another region's turn for one of its packets has begun.
    TurnHandedOn,
    /// Some of its packets were verified by another transaction meanwhile.
    Overtaken,
    /// It carries a packet of a path the equivocation guard halted.
    PathHalted,
}

impl CancelReason {
    pub const ALL: [Self; 3] = [Self::TurnHandedOn, Self::Overtaken, Self::PathHalted];

    pub fn label(self) -> &'static str {
        match self {
            Self::TurnHandedOn => "turn_handed_on",
            Self::Overtaken => "overtaken",
            Self::PathHalted => "path_halted",
        }
    }
}

/// The transaction manager of one destination chain (owned by its submit stage).
#[derive(Debug)]
pub struct TxManager {
    ctx: Arc<Context>,
    eid: u32,
    /// Per account nonce: the destination head when another transaction was first seen to
    /// hold it.
    nonce_taken_since: HashMap<u64, u64>,
    /// Transactions already reported as impossible to replace (logged once each, not every
    /// step).
    reported_stuck: HashSet<B256>,
    /// The mined nonce at which an unknown pending transaction of our account was last
    /// reported (logged once per nonce).
    reported_unknown: Option<u64>,
    /// `execute` gas estimates our mined calls showed enough, per call shape.
    gas_estimates: GasEstimates,
    /// The destination block each batch closed for was meant to make, by nonce (a fee bump
    /// keeps the nonce, and counts as late).
    aims: HashMap<u64, Aim>,
    /// Whether each aimed transaction that teaches the lead, mined since the last
    /// [`Self::take_landed`], made its block.
    landed: Vec<bool>,
}

/// The destination block a batch closed for, to tell when it is mined whether it made it.
#[derive(Debug, Clone, Copy)]
pub struct Aim {
    pub block: u64,
    /// Whether making it or not says something about the lead it closed with (see
    /// [`TxManager::take_landed`]); it is counted in `dvn_submit_batches_landed_total` either way.
    pub teaches_lead: bool,
}

impl TxManager {
    pub fn new(ctx: Arc<Context>, eid: u32) -> Self {
        let profile = ctx.chains.get(&eid).map(|c| c.config.profile);
        Self {
            ctx,
            eid,
            nonce_taken_since: HashMap::new(),
            reported_stuck: HashSet::new(),
            reported_unknown: None,
            gas_estimates: GasEstimates::for_profile(profile.unwrap_or_default()),
            aims: HashMap::new(),
            landed: Vec::new(),
        }
    }

    /// Whether each transaction sent with an aim that teaches the lead, and mined since the
    /// last call, made the block it aimed at, oldest first.
    pub fn take_landed(&mut self) -> Vec<bool> {
        std::mem::take(&mut self.landed)
    }

    /// The gas estimate for an `execute` carrying `params` params: one learned from our mined
    /// calls of the same shape when there is one (then the call is only run once, to see it
    /// would not revert), else the endpoints' `eth_estimateGas` — then also `true`: the
    /// caller waited for it. See [`super::gas`].
    pub async fn execute_gas(
        &self,
        request: &TransactionRequest,
        params: usize,
    ) -> anyhow::Result<(u64, bool)> {
        let chain = self.ctx.chain(self.eid)?;
        let shape = call_shape(request, params);
        let Some(gas) = self.gas_estimates.reusable(&shape, Instant::now()) else {
            return Ok((chain.estimate_gas(request).await?, true));
        };
        chain.runs_without_revert(request).await?;
        metrics::counter!("dvn_execute_gas_estimates_reused_total", "chain" => chain.name().to_string())
            .increment(1);
        Ok((gas, false))
    }

    /// While a batch gathers: makes sure an estimate for `request`, an `execute` carrying
    /// `params` params, can be had without `eth_estimateGas` — learned, or on a line through
    /// learned ones — and estimates it now when not, so that the batch, when it closes, is
    /// not held for `eth_estimateGas` between closing and broadcast (see [`super::gas`]).
    pub async fn estimate_ahead(
        &mut self,
        request: &TransactionRequest,
        params: usize,
    ) -> anyhow::Result<()> {
        let shape = call_shape(request, params);
        if self
            .gas_estimates
            .reusable(&shape, Instant::now())
            .is_some()
        {
            return Ok(());
        }
        let estimate = self.ctx.chain(self.eid)?.estimate_gas(request).await?;
        self.gas_estimates.anchor(shape, estimate, Instant::now());
        Ok(())
    }

    /// Signs, persists, broadcasts and announces one `execute` carrying `packets` (all or
    /// nothing: when a packet moved since it was read, nothing is sent). True when it was
    /// recorded (and so will be broadcast, now or by the next steps). `aim`: the destination
    /// block it is meant to make (a batch closed for that block), to tell when it is mined
    /// whether it did (see [`Self::take_landed`]).
    pub async fn send(
        &mut self,
        to: Address,
        input: Bytes,
        gas: u64,
        packets: &[Expect],
        aim: Option<Aim>,
    ) -> anyhow::Result<bool> {
        let ctx = Arc::clone(&self.ctx);
        let chain = ctx.chain(self.eid)?;
        let from = ctx.submitter.address();
        // Our next nonce follows our own transactions in flight (settled first by the stage),
        // or the mined one. If the chain sees more of our account pending than that, this
        // store does not know one of them: a replica of this region with a store of its own
        // sent it before the lease moved here (or it was sent by hand). Ours would take the
        // next nonce and both could land, so wait until it is mined; its packets then show
        // verified on the destination.
        let ours_next = ctx
            .store
            .pending_submissions(self.eid)
            .await?
            .iter()
            .map(|s| s.account_nonce + 1)
            .max();
        let mined = chain.mined_nonce(from).await?;
        let nonce = ours_next.map_or(mined, |next| next.max(mined));
        let pending = chain.pending_nonce(from).await?;
        if pending > nonce {
            if self.reported_unknown != Some(mined) {
                self.reported_unknown = Some(mined);
                metrics::counter!("dvn_unknown_pending_waits_total", "chain" => chain.name().to_string()).increment(1);
                tracing::warn!(
                    chain = chain.name(),
                    account = %from,
                    mined,
                    pending,
                    "a transaction of our account this node did not send is pending (another replica's?): waiting until it is mined"
                );
            }
            return Ok(false);
        }
        let (max_fee, priority) =
            capped_fees(chain.fees().await?, ctx.config.submitter.max_fee_gwei);
        let floor = chain.config.profile.calldata_gas_floor(input.len());
        let tx = TxEip1559 {
            chain_id: chain.config.chain_id,
            nonce,
            gas_limit: self.gas_estimates.headroom().limit_for(gas, floor),
            max_fee_per_gas: max_fee,
            max_priority_fee_per_gas: priority,
            to: TxKind::Call(to),
            value: U256::ZERO,
            access_list: Default::default(),
            input,
        };
        if !ctx.may_broadcast().await {
            tracing::info!("lost the submitter lease: not submitting");
            return Ok(false);
        }
        let row = self.sign(tx).await?;
        if !ctx.store.record_submission(&row, packets).await? {
            // A packet moved since aggregation (settled by another path, re-observed, halted):
            // this transaction is dropped unsent and the next step batches afresh.
            tracing::info!(tx = %row.tx_hash, "a packet changed while batching: transaction discarded unsent");
            return Ok(false);
        }
        metrics::counter!("dvn_submissions_total", "chain" => chain.name().to_string())
            .increment(1);
        if let Some(aim) = aim {
            self.aims.insert(nonce, aim);
        }
        tracing::info!(chain = chain.name(), tx = %row.tx_hash, nonce, packets = packets.len(), gas, "submitting DVN.execute");
        if !ctx.may_broadcast().await {
            // Persisted but not sent: the lease holder's own nonce wins; this row is settled
            // (as dropped, then retried) if this replica holds the lease again.
            tracing::warn!(tx = %row.tx_hash, "lost the submitter lease before broadcasting");
            return Ok(true);
        }
        if let Err(e) = chain.broadcast(&row.raw_tx).await {
            // Stored already: settle re-broadcasts it, or replaces it, on its next steps.
            tracing::warn!(tx = %row.tx_hash, "broadcast failed, will retry: {e}");
        }
        // Announced after the broadcast: the claim only matters to a region whose turn comes
        // later, and the peers also ask for claims before they take a packet over. A call
        // without packets (a signer rotation) claims nothing.
        if packets.is_empty() {
            return Ok(true);
        }
        ctx.peers.announce_claim_in_background(
            self.eid,
            ClaimEntry {
                sender: from,
                nonce,
                tx_hash: row.tx_hash,
                guids: packets.iter().map(|p| p.guid).collect(),
            },
        );
        Ok(true)
    }

    /// Signs an EIP-1559 transaction with the submitter key (any backend) into a stored row.
    async fn sign(&self, tx: TxEip1559) -> anyhow::Result<SubmissionRow> {
        let signature = self.ctx.submitter.sign_digest(tx.signature_hash()).await?;
        let signed = tx.into_signed(signature);
        let tx_hash = *signed.hash();
        let nonce = signed.tx().nonce;
        let envelope = TxEnvelope::from(signed);
        Ok(SubmissionRow {
            tx_hash,
            dst_eid: self.eid,
            account_nonce: nonce,
            raw_tx: envelope.encoded_2718(),
            created_at_ms: now_ms(),
        })
    }

    /// Settles or nurses every in-flight submission, nonce by nonce from the lowest. Returns
    /// how many nonces are still in flight.
    pub async fn settle_in_flight(&mut self) -> anyhow::Result<usize> {
        let ctx = Arc::clone(&self.ctx);
        let pending = ctx.store.pending_submissions(self.eid).await?;
        let Some(first) = pending.first() else {
            self.nonce_taken_since.clear();
            self.reported_stuck.clear();
            self.aims.clear();
            return Ok(0);
        };
        let chain = ctx.chain(self.eid)?;
        let own = ctx.submitter.address();
        let mut nonces: Vec<u64> = pending.iter().map(|s| s.account_nonce).collect();
        nonces.dedup();
        self.nonce_taken_since
            .retain(|n, _| *n >= first.account_nonce);
        self.aims.retain(|n, _| *n >= first.account_nonce);
        self.reported_stuck
            .retain(|tx| pending.iter().any(|s| s.tx_hash == *tx));
        // The account's mined nonce is read *before* the receipts: if one of ours is mined by
        // the time we read the nonce, its receipt is visible to the reads after it. (Reading
        // them the other way round raced: a transaction mined between the two reads looked
        // like another transaction had taken our nonce, and its packets were needlessly
        // submitted again.)
        let mined = chain.mined_nonce(own).await?;
        let mut in_flight = 0;
        // Only the lowest nonce still waiting can be stuck; those above it wait on it, so
        // bumping their fees would buy nothing.
        let mut lowest_waiting = true;
        for nonce in nonces {
            let same_nonce: Vec<&SubmissionRow> = pending
                .iter()
                .filter(|s| s.account_nonce == nonce)
                .collect();
            // A nonce at or above the mined one could have been mined only after that read:
            // its receipt is looked for on the next step (the lowest one is looked for now, as
            // a single transaction in flight always was).
            if nonce < mined || lowest_waiting {
                if let Some((sub, receipt)) = self.mined_receipt(&same_nonce).await? {
                    self.settle_receipt(&same_nonce, sub, &receipt).await?;
                    continue;
                }
            }
            if nonce < mined {
                if self.nonce_taken(&same_nonce, nonce).await? {
                    in_flight += 1;
                }
                continue;
            }
            in_flight += 1;
            self.nurse(&same_nonce, own, lowest_waiting).await?;
            lowest_waiting = false;
        }
        Ok(in_flight)
    }

    /// The first of `same_nonce` with a receipt, and that receipt.
    async fn mined_receipt<'a>(
        &self,
        same_nonce: &[&'a SubmissionRow],
    ) -> anyhow::Result<Option<(&'a SubmissionRow, TransactionReceipt)>> {
        let chain = self.ctx.chain(self.eid)?;
        for sub in same_nonce {
            if let Some(receipt) = chain.receipt(sub.tx_hash).await? {
                return Ok(Some((sub, receipt)));
            }
        }
        Ok(None)
    }

    /// `nonce` is used on chain and none of our transactions with it has a receipt: it was not
    /// one of ours (the key was used elsewhere), so ours can never land and the packets are
    /// retried. Only once that has held for [`NONCE_TAKEN_BLOCKS`] destination blocks: a node
    /// may report the account's new nonce a moment before it serves the receipt (seen on
    /// anvil right after a send). True while still waiting for that.
    async fn nonce_taken(
        &mut self,
        same_nonce: &[&SubmissionRow],
        nonce: u64,
    ) -> anyhow::Result<bool> {
        let ctx = Arc::clone(&self.ctx);
        let head = ctx.chain(self.eid)?.head().await?;
        let since = *self.nonce_taken_since.entry(nonce).or_insert(head);
        if head < since + NONCE_TAKEN_BLOCKS {
            return Ok(true);
        }
        self.nonce_taken_since.remove(&nonce);
        for sub in same_nonce {
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
        Ok(false)
    }

    /// Keeps one unmined nonce going: withdraws it when its packets must not land from us any
    /// more, re-broadcasts it, and (when it is the lowest waiting, so nothing of ours holds it
    /// up) replaces it with higher fees once it is stuck.
    async fn nurse(
        &mut self,
        same_nonce: &[&SubmissionRow],
        own: Address,
        lowest_waiting: bool,
    ) -> anyhow::Result<()> {
        let ctx = Arc::clone(&self.ctx);
        let chain = ctx.chain(self.eid)?;
        let Some(newest) = same_nonce.iter().max_by_key(|s| s.created_at_ms).copied() else {
            return Ok(());
        };
        if !ctx.may_broadcast().await {
            return Ok(());
        }
        // Once withdrawn, the cancel is what is nursed (re-broadcast, fee-bumped); the
        // decisions to withdraw are taken once.
        if !same_nonce.iter().any(|s| is_cancel(s, own)) {
            if let Some(reason) = self.reason_to_cancel(same_nonce).await? {
                self.replace(newest, same_nonce.len(), Replacement::Cancel)
                    .await?;
                metrics::counter!("dvn_submission_cancels_total", "chain" => chain.name().to_string(), "reason" => reason.label()).increment(1);
                return Ok(());
            }
        }
        // Re-broadcast (a crash may have come between persisting and broadcasting; the pool
        // may have dropped it); the same bytes cannot be mined twice.
        let _ = chain.broadcast(&newest.raw_tx).await;
        let age = now_ms().saturating_sub(newest.created_at_ms);
        if lowest_waiting && age > replace_after_ms(&ctx) {
            self.replace(newest, same_nonce.len(), Replacement::SameCall)
                .await?;
        }
        Ok(())
    }

    /// Whether the pending `execute` must be withdrawn, and why. Its packets stay attached to
    /// it: whichever of it and the cancel is mined settles them.
    async fn reason_to_cancel(
        &self,
        same_nonce: &[&SubmissionRow],
    ) -> anyhow::Result<Option<CancelReason>> {
        let mut attached = Vec::new();
        for sub in same_nonce {
            attached.extend(self.ctx.store.packets_attached(sub.tx_hash).await?);
        }
        let newest = same_nonce.iter().map(|s| s.tx_hash).collect::<Vec<_>>();
        // The equivocation guard: nothing on a halted path may land until an operator resumes
        // it (the conflicting packet itself has moved to `conflict`).
        let halted: HashSet<_> = self.ctx.store.halted_path_set().await?;
        if attached.iter().any(|r| halted.contains(&r.packet.path())) {
            tracing::error!(tx = ?newest, "pending transaction carries a packet of a halted path: cancelling it");
            return Ok(Some(CancelReason::PathHalted));
        }
        let open: Vec<&PacketRow> = attached
            .iter()
            .filter(|r| r.state == PacketState::Submitted)
            .collect();
        if open.is_empty() {
            return Ok(None);
        }
        // The turn: once another region may start one of these packets, this transaction
        // must not land after that region's (verify has no on-chain replay protection). The
        // other region waits on our claim until our nonce is used, so cancelling hands the
        // packets on cleanly; bumping further would only race it.
        let chain = self.ctx.chain(self.eid)?;
        let now = chain.latest_timestamp().await?;
        let regions = self.ctx.config.regions();
        let me = self.ctx.config.region_index();
        let takeover = self.ctx.config.submitter.takeover_after_secs;
        if let Some(row) = open
            .iter()
            .find(|r| turns::handed_on(r.packet.block_timestamp, now, regions.len(), takeover, me))
        {
            tracing::warn!(tx = ?newest, guid = %row.packet.guid, "another region's turn has begun for a packet of our pending transaction: cancelling it");
            return Ok(Some(CancelReason::TurnHandedOn));
        }
        // Before sending it again, check what it would still do: while this node was down (or
        // its transaction waited), another region may have verified some of its packets.
        // No region takes over before `takeover_after_secs`, so younger transactions skip the
        // (three reads per packet) check.
        let takeover_ms = i64::try_from(takeover.saturating_mul(1000)).unwrap_or(i64::MAX);
        let oldest = same_nonce
            .iter()
            .map(|s| s.created_at_ms)
            .min()
            .unwrap_or_else(now_ms);
        if now_ms().saturating_sub(oldest) < takeover_ms / 2 {
            return Ok(None);
        }
        let dvn = self.ctx.dvn(self.eid)?;
        let mut verified_elsewhere = 0usize;
        for row in &open {
            let header = PacketHeader::decode(&row.packet.header)?;
            let required = row.confirmations.unwrap_or(1);
            if let Some((state, why)) = destination_done(
                chain,
                dvn.address,
                &header,
                row.packet.payload_hash,
                required,
            )
            .await?
            {
                self.ctx
                    .store
                    .transition(row.expect(), state, Some(&why))
                    .await?;
                verified_elsewhere += 1;
            }
        }
        if verified_elsewhere == 0 {
            return Ok(None);
        }
        tracing::warn!(tx = ?newest, verified_elsewhere, still_open = open.len() - verified_elsewhere, "packets of our pending transaction were verified meanwhile: cancelling it");
        Ok(Some(CancelReason::Overtaken))
    }

    /// Re-sends `stuck` with the same nonce and fees raised by 12.5 % (the usual minimum for
    /// a replacement), never above the configured cap; or cancels it.
    async fn replace(
        &mut self,
        stuck: &SubmissionRow,
        attempts: usize,
        kind: Replacement,
    ) -> anyhow::Result<()> {
        let ctx = Arc::clone(&self.ctx);
        let chain = ctx.chain(self.eid)?;
        // A cancel must always be attempted; only fee bumps of the same call are capped in
        // number.
        if kind == Replacement::SameCall
            && attempts > ctx.config.submitter.max_replacements as usize
        {
            if self.reported_stuck.insert(stuck.tx_hash) {
                tracing::error!(tx = %stuck.tx_hash, "transaction stuck after {attempts} attempts: fee cap reached, needs an operator");
            }
            return Ok(());
        }
        let old = decode_eip1559(stuck)?;
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
            if self.reported_stuck.insert(stuck.tx_hash) {
                tracing::error!(tx = %stuck.tx_hash, cancel = kind == Replacement::Cancel, "cannot replace: already at the fee cap (submitter.max_fee_gwei)");
            }
            return Ok(());
        }
        let mut tx = TxEip1559 {
            max_fee_per_gas: max_fee,
            max_priority_fee_per_gas: priority,
            ..old
        };
        if kind == Replacement::Cancel {
            tx.to = TxKind::Call(ctx.submitter.address());
            tx.input = Default::default();
            tx.gas_limit = 21_000;
        }
        let row = self.sign(tx).await?;
        // A cancel carries no packets (the cancelled call's stay attached to it); a fee bump
        // carries the stuck transaction's.
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
        tracing::warn!(old = %stuck.tx_hash, new = %row.tx_hash, max_fee, cancel = kind == Replacement::Cancel, "replacing stuck transaction");
        if ctx.may_broadcast().await {
            chain.broadcast(&row.raw_tx).await?;
        }
        Ok(())
    }

    /// Applies a mined receipt to every packet attached to any same-nonce submission.
    async fn settle_receipt(
        &mut self,
        same_nonce: &[&SubmissionRow],
        mined: &SubmissionRow,
        receipt: &TransactionReceipt,
    ) -> anyhow::Result<()> {
        let ctx = &self.ctx;
        let chain = ctx.chain(self.eid)?;
        let dvn = ctx.dvn(self.eid)?;
        let cancelled = is_cancel(mined, ctx.submitter.address());
        let verified =
            payloads_verified(receipt.inner.logs(), chain.config.receive_uln, dvn.address);
        let mut failures = 0usize;
        let mut signature_failed = Vec::new();
        for log in receipt.inner.logs() {
            let topic = log.topics().first().copied();
            if log.address() == dvn.address
                && (topic == Some(IDVN::VerifySignaturesFailed::SIGNATURE_HASH)
                    || topic == Some(IDVN::ExecuteFailed::SIGNATURE_HASH))
            {
                failures += 1;
                if topic == Some(IDVN::VerifySignaturesFailed::SIGNATURE_HASH) {
                    // The signer set or quorum may have changed on chain: re-read it before
                    // the packets are aggregated again.
                    ctx.wake.signers.notify_one();
                    if let Ok(event) =
                        IDVN::VerifySignaturesFailed::decode_log_data(&log.inner.data)
                    {
                        signature_failed.push(event.idx);
                    }
                }
            }
        }
        if !cancelled {
            if let Some(call) = mined_call(mined, receipt, failures, verified.len()) {
                self.gas_estimates.mined(&call, Instant::now());
            }
        }
        if let Some(aim) = self.aims.remove(&mined.account_nonce) {
            let made = receipt.block_number.is_some_and(|b| b <= aim.block);
            let block = if made { "made" } else { "missed" };
            if !made {
                tracing::info!(
                    chain = chain.name(),
                    tx = %mined.tx_hash,
                    aimed = aim.block,
                    mined_in = ?receipt.block_number,
                    widens_margin = aim.teaches_lead,
                    "a batch closed for a block was mined in a later one"
                );
            }
            metrics::counter!("dvn_submit_batches_landed_total", "chain" => chain.name().to_string(), "block" => block).increment(1);
            if aim.teaches_lead {
                self.landed.push(made);
            }
        }
        // A reverted execute: the usual cause is a submitter that lost ADMIN_ROLE. Then the
        // packets were never tried, so no attempt is used up; the role is re-read at once.
        // Today's state: no decision reads historical state.
        let lost_admin = !receipt.status()
            && !execute::may_execute(chain, dvn.address, ctx.submitter.address()).await?;
        if !receipt.status() {
            ctx.wake.signers.notify_one();
        }
        let (_, block_time) = chain
            .block(receipt.block_number.unwrap_or_default())
            .await?;
        metrics::counter!("dvn_submission_gas_used_total", "chain" => chain.name().to_string())
            .increment(receipt.gas_used);
        // Which params the DVN skipped for their signatures (the event gives the index into
        // the mined call's params).
        let signature_failed = params_at(mined, &signature_failed);
        for sub in same_nonce {
            let (done, rest): (Vec<PacketRow>, Vec<PacketRow>) = ctx
                .store
                .packets_of_submission(sub.tx_hash)
                .await?
                .into_iter()
                .partition(|row| {
                    verified.contains_key(&(keccak256(&row.packet.header), row.packet.payload_hash))
                });
            // The verified ones in one commit: a full batch is dozens of packets.
            let moves: Vec<_> = done
                .iter()
                .map(|row| (row.expect(), PacketState::Verified, None))
                .collect();
            let applied = ctx.store.transition_all(&moves).await?;
            for (row, _) in done.iter().zip(applied).filter(|(_, moved)| *moved) {
                let p = &row.packet;
                PacketStage::Mine.reached(row.updated_at_ms);
                let latency =
                    now_ms().saturating_sub(i64::try_from(p.block_timestamp).unwrap_or(0) * 1000);
                metrics::histogram!("dvn_verification_latency_seconds", "chain" => chain.name().to_string()).record(latency as f64 / 1000.0);
                metrics::counter!("dvn_packets_verified_total", "chain" => chain.name().to_string()).increment(1);
                tracing::info!(guid = %p.guid, nonce = p.nonce, tx = %mined.tx_hash, "verified");
            }
            for row in rest {
                let p = &row.packet;
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
                if cancelled || lost_admin {
                    // Withdrawn by us, or refused before any param was tried: no attempt is
                    // used up.
                    let why = if cancelled {
                        "pending transaction cancelled: re-batching"
                    } else {
                        "execute reverted: the submitter lacks ADMIN_ROLE on the DVN"
                    };
                    ctx.store
                        .retry(row.expect(), PacketState::Signed, why)
                        .await?;
                    continue;
                }
                // Our signatures checked out against the set we knew, so the chain's set or
                // quorum changed: re-aggregated after the re-read, without using up the
                // packet's attempts (bounded all the same, should the set keep moving).
                if signature_failed.contains(&(keccak256(&p.header), p.payload_hash))
                    && row.attempts + 1 < MAX_ATTEMPTS * 3
                {
                    tracing::warn!(guid = %p.guid, "the DVN refused the param's signatures (its signer set or quorum changed?): re-aggregating after re-reading it");
                    ctx.store
                        .retry(
                            row.expect(),
                            PacketState::Signed,
                            "signatures refused on chain: signer set re-read, re-aggregating",
                        )
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
            let state = if sub.tx_hash == mined.tx_hash {
                "mined"
            } else {
                "replaced"
            };
            ctx.store.finish_submission(sub.tx_hash, state).await?;
        }
        Ok(())
    }
}

/// Our pending `execute`s on `eid` as claims for the peers: per nonce, every packet attached
/// to any of its transactions (a fee bump or a cancel shares the nonce).
pub async fn own_claims(ctx: &Context, eid: u32) -> anyhow::Result<Vec<ClaimEntry>> {
    let mut claims: Vec<ClaimEntry> = Vec::new();
    for sub in ctx.store.pending_submissions(eid).await? {
        let guids: Vec<B256> = ctx
            .store
            .packets_attached(sub.tx_hash)
            .await?
            .iter()
            .map(|r| r.packet.guid)
            .collect();
        match claims.iter_mut().find(|c| c.nonce == sub.account_nonce) {
            Some(claim) => claim.guids.extend(guids),
            None => claims.push(ClaimEntry {
                sender: ctx.submitter.address(),
                nonce: sub.account_nonce,
                tx_hash: sub.tx_hash,
                guids,
            }),
        }
    }
    for claim in &mut claims {
        claim.guids.sort();
        claim.guids.dedup();
    }
    Ok(claims)
}

/// The packets (header hash, payload hash) of the `verify` params at `indexes` of the
/// `execute` that `mined` carries; empty when it cannot be decoded.
fn params_at(mined: &SubmissionRow, indexes: &[U256]) -> HashSet<(B256, B256)> {
    use alloy::sol_types::SolCall;
    let Ok(tx) = decode_eip1559(mined) else {
        return HashSet::new();
    };
    let Some(call_data) = execute::mined_call_data(&tx.input) else {
        return HashSet::new();
    };
    indexes
        .iter()
        .filter_map(|idx| call_data.get(usize::try_from(*idx).ok()?))
        .filter_map(|data| IReceiveUln302::verifyCall::abi_decode(data).ok())
        .map(|v| (keccak256(&v.packetHeader), v.payloadHash))
        .collect()
}

fn decode_eip1559(row: &SubmissionRow) -> anyhow::Result<TxEip1559> {
    match TxEnvelope::decode_2718(&mut row.raw_tx.as_slice())? {
        TxEnvelope::Eip1559(signed) => Ok(signed.tx().clone()),
        _ => anyhow::bail!("stored submission is not an EIP-1559 transaction"),
    }
}

/// Whether a stored submission is a cancel: a plain transfer to the sending account itself.
/// What the gas estimates learn from one of our mined `execute`s; `None` when its stored
/// bytes are not an `execute` (nothing to learn).
fn mined_call(
    mined: &SubmissionRow,
    receipt: &TransactionReceipt,
    failed_params: usize,
    verified_params: usize,
) -> Option<MinedCall> {
    let tx = decode_eip1559(mined).ok()?;
    let params = execute::mined_call_data(&tx.input)?.len();
    Some(MinedCall {
        shape: CallShape {
            to: tx.to.to().copied()?,
            params,
            calldata: tx.input.len(),
        },
        gas_limit: tx.gas_limit,
        gas_used: receipt.gas_used,
        succeeded: receipt.status(),
        failed_params,
        verified_params,
    })
}

fn is_cancel(row: &SubmissionRow, own: Address) -> bool {
    decode_eip1559(row).is_ok_and(|tx| tx.to == TxKind::Call(own) && tx.input.is_empty())
}

/// Applies the operator's fee cap.
pub fn capped_fees((max_fee, priority): (u128, u128), cap_gwei: u64) -> (u128, u128) {
    let cap = u128::from(cap_gwei) * 1_000_000_000;
    let max_fee = max_fee.min(cap);
    (max_fee, priority.min(max_fee))
}

fn replace_after_ms(ctx: &Context) -> i64 {
    i64::try_from(Duration::from_secs(ctx.config.submitter.replace_after_secs).as_millis())
        .unwrap_or(i64::MAX)
}

/// What our DVN verified in a mined transaction's `logs`: (header hash, payload hash) →
/// confirmations, from the receive ULN's `PayloadVerified` events naming our DVN. Only the
/// receipt counts, never who sent the transaction or what it claimed to carry.
pub fn payloads_verified(
    logs: &[alloy::rpc::types::Log],
    receive_uln: Address,
    dvn: Address,
) -> HashMap<(B256, B256), u64> {
    let mut verified = HashMap::new();
    for log in logs {
        if log.address() != receive_uln
            || log.topics().first() != Some(&IReceiveUln302::PayloadVerified::SIGNATURE_HASH)
        {
            continue;
        }
        let Ok(event) = IReceiveUln302::PayloadVerified::decode_log_data(&log.inner.data) else {
            continue;
        };
        if event.dvn == dvn {
            let confirmations = u64::try_from(event.confirmations).unwrap_or(u64::MAX);
            verified.insert((keccak256(&event.header), event.proofHash), confirmations);
        }
    }
    verified
}

/// The shape of an `execute` request carrying `params` params (what its gas depends on).
fn call_shape(request: &TransactionRequest, params: usize) -> CallShape {
    CallShape {
        to: request
            .to
            .and_then(|to| to.to().copied())
            .unwrap_or_default(),
        params,
        calldata: request.input.input().map_or(0, |i| i.len()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fees_are_capped() {
        assert_eq!(
            capped_fees((900_000_000_000, 2_000_000_000), 500),
            (500_000_000_000, 2_000_000_000)
        );
        assert_eq!(capped_fees((3, 5), 500), (3, 3));
    }

    fn row(tx: TxEip1559) -> SubmissionRow {
        let signer = alloy::signers::local::PrivateKeySigner::random();
        let sig =
            alloy::signers::SignerSync::sign_hash_sync(&signer, &tx.signature_hash()).unwrap();
        let signed = tx.into_signed(sig);
        SubmissionRow {
            tx_hash: *signed.hash(),
            dst_eid: 1,
            account_nonce: signed.tx().nonce,
            raw_tx: TxEnvelope::from(signed).encoded_2718(),
            created_at_ms: 0,
        }
    }

    #[test]
    fn a_cancel_is_a_plain_transfer_to_ourselves() {
        let own = Address::repeat_byte(1);
        let cancel = TxEip1559 {
            to: TxKind::Call(own),
            gas_limit: 21_000,
            ..Default::default()
        };
        assert!(is_cancel(&row(cancel.clone()), own));
        let execute = TxEip1559 {
            to: TxKind::Call(Address::repeat_byte(2)),
            input: Bytes::from_static(&[1, 2, 3, 4]),
            ..Default::default()
        };
        assert!(!is_cancel(&row(execute), own));
        let call_to_self = TxEip1559 {
            input: Bytes::from_static(&[1]),
            ..cancel
        };
        assert!(!is_cancel(&row(call_to_self), own));
    }

    #[test]
    fn a_refused_signature_event_names_the_packet_at_its_index() {
        use alloy::sol_types::SolCall;
        let header = |nonce| PacketHeader {
            nonce,
            src_eid: 30101,
            sender: B256::repeat_byte(1),
            dst_eid: 30212,
            receiver: B256::repeat_byte(2),
        };
        let params: Vec<_> = (1..=3)
            .map(|n| {
                dvn_lz::UnsignedParam::verify(
                    212,
                    Address::repeat_byte(9),
                    &header(n),
                    B256::repeat_byte(n as u8),
                    1,
                    99,
                )
                .into_param(Bytes::new())
            })
            .collect();
        let execute = TxEip1559 {
            to: TxKind::Call(Address::repeat_byte(2)),
            input: IDVN::executeCall { params }.abi_encode().into(),
            ..Default::default()
        };
        let found = params_at(&row(execute), &[U256::from(1), U256::from(7)]);
        let expected = (keccak256(header(2).encode()), B256::repeat_byte(2));
        assert_eq!(found, HashSet::from([expected]));
        assert!(params_at(&row(TxEip1559::default()), &[U256::ZERO]).is_empty());
    }
}
