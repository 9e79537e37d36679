//! aggregate → submit: turns `signed` packets with a quorum into one batched `DVN.execute`.
//!
//! One submitter runs per destination chain. Each step first lets the [transaction manager]
//! settle or nurse what is in flight (up to `submitter.max_in_flight` consecutive nonces;
//! behind one already in flight only a full batch goes out, so pipelining serves a backlog
//! and ordinary traffic still gathers into one transaction per block), then:
//! - **aggregate**: for every `signed` packet, count the stored signatures that recover to the
//!   destination DVN's on-chain signers over the hash built from our own observation; pull from
//!   the peers when short;
//! - **rotate**: exactly one region may start a packet at any moment ([`turns`]) — the
//!   designated one (fixed by the source block timestamp), then every `takeover_after` seconds
//!   of *destination* time the next one round the ring — so regions agree without talking;
//! - **respect claims**: a packet another region's still-pending transaction carries waits
//!   until the chain shows that transaction's nonce used ([`claims`]);
//! - **check again** right before sending (someone else's transaction may have landed);
//! - **batch** up to `max_batch` params under `max_batch_gas` and within what a node's pool
//!   takes ([`execute::MAX_INPUT_BYTES`] of calldata) — a partial batch closes when
//!   the destination's next block is due ([`batching`]) — and hand the call to the
//!   transaction manager, which signs, persists, broadcasts and announces it.
//!
//! [transaction manager]: super::transactions
//! [`turns`]: super::turns
//! [`claims`]: super::claims
//! [`batching`]: super::batching

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use alloy::network::TransactionBuilder;
use alloy::primitives::{Bytes, B256};
use alloy::rpc::types::TransactionRequest;
use dvn_lz::contracts::ExecuteParam;
use dvn_lz::{PacketHeader, SignatureSet, UnsignedParam};
use futures::StreamExt;

use super::batching::{self, BlockCadence, BlockLead};
use super::expiration::too_close;
use super::rotation::Rotations;
use super::sign::{canonical_problem, destination_done, destination_done_at, Shared};
use super::transactions::{Aim, TxManager};
use super::turns::{
    catch_up_designation, designated, owner, ROTATION_SLOT_SECS, TAKEOVER_MIN_BLOCKS,
};
use super::{claims, execute, Context, Progress, Stage};
use crate::chain::LatestBlock;
use crate::store::{now_ms, Designation, Expect, PacketRow, PacketState};
use crate::telemetry::PacketStage;

/// Signed packets read per step, lowest nonces of every path first — and beyond a full page,
/// this region's own share read besides (per designation it owns now) —: this many, or twice
/// what a step can send (`max_in_flight` × `max_batch`; 400 with the defaults) where that is
/// more (see [`page_size`]). Each row is held twice while read (SQLite's sorter and the
/// decoded row): a page of 2,000 held about 4 MB at the peak of a 10,000-packet catch-up.
const PAGE: usize = 1_000;

/// See [`PAGE`]: a page never holds back what a step could send, however large the operator
/// makes `max_batch` or `max_in_flight`.
fn page_size(submitter: &crate::config::SubmitterConfig) -> usize {
    PAGE.max(
        2usize
            .saturating_mul(submitter.max_in_flight)
            .saturating_mul(submitter.max_batch),
    )
}

/// How often one packet may trigger a pull from the peers.
const PULL_EVERY: Duration = Duration::from_secs(1);

/// Most packets whose signatures are pulled in one step.
const PULLS_PER_STEP: usize = 256;

/// How long after this node sees a packet another region is to submit it first looks it up on
/// the destination, and how often after that.
const OTHERS_CHECK_EVERY: Duration = Duration::from_secs(5);

/// Most such look-ups per step (three reads each).
const OTHERS_CHECK_PER_STEP: usize = 20;

/// Clock offset from the destination's latest block time beyond which a warning is logged.
pub const CLOCK_SKEW_TOLERANCE_SECS: u64 = 120;

/// Pre-send checks (a few reads each) in flight at once while a batch is assembled.
const CHECK_CONCURRENCY: usize = 8;

/// Signature pulls in flight at once per step.
const PULL_CONCURRENCY: usize = 16;

#[derive(Debug)]
pub struct SubmitStage {
    ctx: Arc<Context>,
    eid: u32,
    last_pull: HashMap<B256, Instant>,
    /// Destination head when each packet was first seen with a quorum (see
    /// [`TAKEOVER_MIN_BLOCKS`]). Not persisted: a restart only delays a takeover.
    ready_since: HashMap<B256, u64>,
    /// The life of our transactions on this destination.
    txs: TxManager,
    /// Signer rotations on this destination: settled here, and ours executed.
    rotations: Rotations,
    /// When a failing rotation step was last logged.
    rotation_warned: Option<Instant>,
    /// When a failure to read other regions' mined transactions was last logged.
    claims_warned: Option<Instant>,
    /// Peer claims already reported as holding packets back (logged once each).
    reported_claims: HashSet<B256>,
    /// When a clock-skew warning was last logged.
    skew_warned: Option<Instant>,
    /// When each packet another region is to submit was first seen waiting here, or last
    /// looked up on the destination.
    last_checked: HashMap<B256, Instant>,
    /// Packed quorum signatures of signed packets already found to have one, by call hash,
    /// for the signer set and quorum in `packed_for`: a backlog of thousands is not re-read
    /// and re-recovered from the store on every step.
    packed: HashMap<B256, Bytes>,
    packed_for: (Vec<alloy::primitives::Address>, usize),
    /// Signed packets still short of a quorum: the signatures counted so far and the stored
    /// signers already looked at, so each stored signature is recovered once (for the same
    /// signer set), not on every step while its packet waits — under a catch-up that waiting
    /// was thousands of recoveries a step.
    partial: HashMap<B256, (SignatureSet, HashSet<alloy::primitives::Address>)>,
    /// The destination's block cadence: when a partial batch closes.
    cadence: BlockCadence,
    /// How long before the next block a partial batch closes, from how long ours took.
    lead: BlockLead,
    /// When the last step held a partial batch back: how long until it closes, so the stage
    /// wakes then rather than at its next tick.
    closes_in: Option<Duration>,
    /// The destination's latest block as this step's aggregation read it.
    latest: Option<LatestBlock>,
    /// The destination head when a partial batch of ours last went out.
    partial_sent_at: Option<u64>,
    /// Packets found still to submit on the destination, by GUID: the destination block
    /// (hash) they were checked at. While a batch gathers its packets are checked as they
    /// become ready; when it closes, only those not checked at the then latest block are
    /// read again, so the reads are not between the batch closing and its broadcast.
    prechecked: HashMap<B256, B256>,
}

struct Ready {
    row: PacketRow,
    param: ExecuteParam,
}

impl SubmitStage {
    pub fn new(ctx: Arc<Context>, eid: u32) -> Self {
        let submitter = &ctx.config.submitter;
        let lead = BlockLead::new(
            Duration::from_millis(submitter.block_lead_ms),
            Duration::from_millis(submitter.block_lead_margin_ms),
        );
        Self {
            txs: TxManager::new(Arc::clone(&ctx), eid),
            rotations: Rotations::new(Arc::clone(&ctx), eid),
            rotation_warned: None,
            claims_warned: None,
            ctx,
            eid,
            last_pull: HashMap::new(),
            ready_since: HashMap::new(),
            reported_claims: HashSet::new(),
            skew_warned: None,
            last_checked: HashMap::new(),
            packed: HashMap::new(),
            packed_for: (Vec::new(), 0),
            partial: HashMap::new(),
            cadence: BlockCadence::default(),
            lead,
            closes_in: None,
            latest: None,
            partial_sent_at: None,
            prechecked: HashMap::new(),
        }
    }

    async fn run_step(&mut self) -> anyhow::Result<Progress> {
        self.closes_in = None;
        // A replica without the region's submitter lease sends nothing, not even retries.
        if !self.ctx.holds_submitter_role() {
            return Ok(Progress::Idle);
        }
        // What the other regions' mined transactions verified leaves the backlog first (a
        // failed read only leaves those packets to their own checks).
        if let Err(e) = claims::settle_mined(&self.ctx, self.eid).await {
            if self
                .claims_warned
                .is_none_or(|at| at.elapsed() > Duration::from_secs(60))
            {
                self.claims_warned = Some(Instant::now());
                tracing::warn!(chain = self.eid, "reading other regions' mined transactions failed (retried every step, logged once a minute): {e:#}");
            }
        }
        let in_flight = self.txs.settle_in_flight().await?;
        for made_its_block in self.txs.take_landed() {
            self.lead.landed(made_its_block);
        }
        if in_flight >= self.ctx.config.submitter.max_in_flight {
            return Ok(Progress::Idle);
        }
        // Without ADMIN_ROLE every execute reverts: send nothing (the other regions take our
        // turns) until the role is back.
        if !self.ctx.dvn(self.eid)?.submitter_is_admin {
            return Ok(Progress::Idle);
        }
        // A rotation of ours with a quorum goes out on its own, when nothing else of ours is
        // in flight; one that cannot be read or sent never holds up the packets.
        if in_flight == 0 {
            match self.rotations.step(&mut self.txs).await {
                Ok(true) => return Ok(Progress::Busy),
                Ok(false) => {}
                Err(e) => {
                    if self
                        .rotation_warned
                        .is_none_or(|at| at.elapsed() > Duration::from_secs(60))
                    {
                        self.rotation_warned = Some(Instant::now());
                        tracing::warn!(chain = self.eid, "signer rotation step failed (retried every step, logged once a minute): {e:#}");
                    }
                }
            }
        }
        let ready = self.aggregate().await?;
        if ready.is_empty() {
            return Ok(Progress::Idle);
        }
        let max_batch = self.ctx.config.submitter.max_batch;
        // A partial batch goes out at most once per destination block: behind one of ours in
        // flight only when that went out at an earlier head or was full. So ordinary traffic
        // gathers into one transaction per block, while packets left over after a full batch
        // (more ready in a block than `max_batch`) still make the next block instead of
        // waiting for the full one to settle — at a rate near `max_batch` per block they
        // otherwise piled up, and every packet waited a block more.
        let head = self.latest.map(|l| l.number);
        if in_flight > 0
            && ready.len() < max_batch
            && self.partial_sent_at.is_some_and(|at| Some(at) >= head)
        {
            self.check_ahead(ready).await;
            return Ok(Progress::Idle);
        }
        // Let packets gather into one transaction until the destination's next block is due
        // (at most `batch_wait_ms` after the first was ready).
        let oldest = ready
            .iter()
            .filter_map(|r| r.row.ready_at_ms)
            .min()
            .unwrap_or_else(now_ms);
        let waited =
            Duration::from_millis(u64::try_from(now_ms().saturating_sub(oldest)).unwrap_or(0));
        let max_wait = Duration::from_millis(self.ctx.config.submitter.batch_wait_ms);
        let lead = self.lead.lead();
        metrics::gauge!("dvn_submit_lead_seconds", "chain" => self.ctx.chain(self.eid)?.name().to_string())
            .set(lead.as_secs_f64());
        let closes_in = batching::closes_in(&self.cadence, waited, max_wait, lead, Instant::now());
        if ready.len() < max_batch && !closes_in.is_zero() {
            self.closes_in = Some(closes_in);
            self.check_ahead(ready).await;
            return Ok(Progress::Idle);
        }
        let mut ready = ready;
        self.hold_back_claimed(&mut ready).await?;
        // As many batches as there are free slots, from this one aggregation: a partial batch
        // goes out only first.
        let mut slots = self.ctx.config.submitter.max_in_flight - in_flight;
        let mut sent = 0;
        while slots > 0 && !ready.is_empty() && (sent == 0 || ready.len() >= max_batch) {
            let partial = ready.len() < max_batch;
            let (went_out, rest) = self.send_batch(ready, partial).await?;
            ready = rest;
            if !went_out {
                break;
            }
            if partial {
                self.partial_sent_at = head;
            }
            sent += 1;
            slots -= 1;
        }
        // Busy only when a transaction went out: packets held back (a peer's claim, an unknown
        // transaction of our account in flight) wait a tick, not a tight loop of reads.
        Ok(if sent > 0 {
            Progress::Busy
        } else {
            Progress::Idle
        })
    }

    /// Signed packets that have a quorum and are this region's to submit now.
    async fn aggregate(&mut self) -> anyhow::Result<Vec<Ready>> {
        let ctx = Arc::clone(&self.ctx);
        let (chain, dvn) = (ctx.chain(self.eid)?, ctx.dvn(self.eid)?);
        let ttl = self.ctx.config.verification.expiration_secs;
        let latest = chain.latest_block().await?;
        let (head, now) = (latest.number, latest.timestamp);
        self.latest = Some(latest);
        self.note_clock_offset(chain.name(), now);
        // The new-heads stream saw this block arrive, most likely before this read did: its
        // sighting counts once the agreed endpoints confirm the number.
        let read_at = Instant::now();
        let seen = chain
            .new_heads
            .latest()
            .filter(|announced| announced.number == head)
            .map_or(read_at, |announced| announced.at.min(read_at));
        self.cadence.observe(head, now, seen);
        let regions = self.ctx.config.regions();
        let me = self.ctx.config.region_index();
        let takeover = self.ctx.config.submitter.takeover_after_secs;
        let our_key = self.ctx.signing_key_for(&dvn).address();
        // Reads through the reader connections, so that a signing backlog's writes (ours and
        // the peers' signatures) do not queue the submission's reads behind them; every move
        // this stage makes is a compare-and-set on the writer, so a read a moment old is safe.
        let signed = self.page(now, regions.len(), me, takeover).await?;
        let holds = self.ctx.reader.holds().await?;
        let signed: Vec<PacketRow> = signed
            .into_iter()
            .filter(|r| !holds.holds(&r.packet.path()))
            .collect();
        // Sets, not scans: a catch-up holds thousands of signed packets.
        let guids: HashSet<B256> = signed.iter().map(|r| r.packet.guid).collect();
        self.last_pull.retain(|guid, _| guids.contains(guid));
        self.prechecked.retain(|guid, _| guids.contains(guid));
        if self.packed_for.0 != dvn.signers || self.packed_for.1 != dvn.quorum {
            self.packed.clear();
            self.partial.clear();
            self.packed_for = (dvn.signers.clone(), dvn.quorum);
        }
        let open: HashSet<B256> = signed.iter().filter_map(|r| r.call_hash).collect();
        self.packed.retain(|call_hash, _| open.contains(call_hash));
        self.partial.retain(|call_hash, _| open.contains(call_hash));
        // The stored signatures of every packet not yet known to have a quorum, in a few
        // queries; what the pulls bring is added to them.
        let unpacked: Vec<B256> = open
            .iter()
            .filter(|h| !self.packed.contains_key(*h))
            .copied()
            .collect();
        let mut stored = self.ctx.reader.signatures_of(&unpacked).await?;
        self.pull_missing(&signed, &mut stored, &dvn.signers, dvn.quorum)
            .await?;
        self.ready_since.retain(|guid, _| guids.contains(guid));
        let mut ready = Vec::new();
        let mut not_ours = Vec::new();
        let mut newly_ready = Vec::new();
        let ready_now = now_ms();
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
            let packed = match self.packed.get(&call_hash) {
                Some(packed) => Some(packed.clone()),
                None => {
                    let stored = stored.get(&call_hash).map(Vec::as_slice).unwrap_or(&[]);
                    let (set, looked_at) = self
                        .partial
                        .entry(call_hash)
                        .or_insert_with(|| (SignatureSet::new(call_hash), HashSet::new()));
                    for (signer, bytes) in stored {
                        if looked_at.insert(*signer) {
                            count_signature(set, bytes, &dvn.signers);
                        }
                    }
                    if set.len() >= dvn.quorum {
                        let packed = set.pack(dvn.quorum)?;
                        self.partial.remove(&call_hash);
                        self.packed.insert(call_hash, packed.clone());
                        Some(packed)
                    } else if stored.iter().any(|(signer, _)| *signer == our_key) {
                        None
                    } else {
                        // Signed with a key this region no longer signs with here (a rotation
                        // executed since): that signature no longer counts, so sign it again.
                        self.ctx
                            .store
                            .retry(
                                row.expect(),
                                PacketState::Observed,
                                "our signer rotated since it was signed: re-signing with the new key",
                            )
                            .await?;
                        None
                    }
                }
            };
            let Some(packed) = packed else {
                continue;
            };
            let ready_at = match row.ready_at_ms {
                Some(at) => at,
                None => {
                    newly_ready.push(row.packet.guid);
                    PacketStage::Quorum.reached(row.updated_at_ms);
                    ready_now
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
            ready.push(Ready {
                param: unsigned.into_param(packed),
                row,
            });
        }
        self.ctx
            .store
            .mark_ready_all(&newly_ready, ready_now)
            .await?;
        self.check_others_done(chain, dvn.address, not_ours).await?;
        Ok(ready)
    }

    /// The signed packets this step looks at: the lowest nonces of every path and, when there
    /// are more than a page of them, this region's own share besides. A burst's packets share
    /// a designation (their source blocks fall in one rotation slot), so the lowest 2,000 of a
    /// backlog are often all one other region's to submit: with that page alone, the other
    /// regions would wait for it to work through them instead of sending their own share.
    async fn page(
        &self,
        now: u64,
        regions: usize,
        me: usize,
        takeover: u64,
    ) -> anyhow::Result<Vec<PacketRow>> {
        let reader = &self.ctx.reader;
        let page = page_size(&self.ctx.config.submitter);
        let mut signed = reader
            .packets(PacketState::Signed, Some(self.eid), page)
            .await?;
        if signed.len() < page || regions < 2 {
            return Ok(signed);
        }
        let mut seen: HashSet<B256> = signed.iter().map(|r| r.packet.guid).collect();
        // Old packets (a catch-up) in the designation this region owns now, and fresh ones
        // designated to it.
        let mut designations = vec![me];
        if let Some(old) = catch_up_designation(now, regions, takeover, me) {
            if old != me {
                designations.insert(0, old);
            }
        }
        for index in designations {
            let designation = Designation {
                slot_secs: ROTATION_SLOT_SECS,
                regions: regions as u64,
                index: index as u64,
            };
            let own = reader
                .packets_designated(PacketState::Signed, self.eid, designation, page)
                .await?;
            signed.extend(own.into_iter().filter(|r| seen.insert(r.packet.guid)));
        }
        Ok(signed)
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
        let waiting: HashSet<B256> = rows.iter().map(|r| r.packet.guid).collect();
        self.last_checked.retain(|guid, _| waiting.contains(guid));
        let mut due = Vec::new();
        for row in rows {
            match self.last_checked.entry(row.packet.guid) {
                // First seen waiting for another region: its transaction is most likely on
                // its way (and its claim closes the packet here when mined), so the first
                // look-up comes only after a while — three reads a packet otherwise, for each
                // region not submitting it.
                std::collections::hash_map::Entry::Vacant(e) => {
                    e.insert(now);
                }
                std::collections::hash_map::Entry::Occupied(mut e) => {
                    if due.len() < OTHERS_CHECK_PER_STEP
                        && now.duration_since(*e.get()) >= OTHERS_CHECK_EVERY
                    {
                        e.insert(now);
                        due.push(row);
                    }
                }
            }
        }
        for row in due {
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
    /// quorum (each packet at most once per [`PULL_EVERY`], at most [`PULLS_PER_STEP`] a step),
    /// and stores those that check out. Pulled at once, not after a grace for the pushes: a
    /// push arriving before the peer has observed the packet is declined, and a 1 s grace
    /// cost 0.9 s of p99 latency at 20 packets/s (bench `steady`, one run each).
    /// Concurrent, so one peer that never answers costs one timeout per step, not one per
    /// packet.
    async fn pull_missing(
        &mut self,
        rows: &[PacketRow],
        stored: &mut HashMap<B256, Vec<(alloy::primitives::Address, Vec<u8>)>>,
        signers: &[alloy::primitives::Address],
        quorum: usize,
    ) -> anyhow::Result<()> {
        let mut wanted = Vec::new();
        for row in rows {
            let Some(call_hash) = row.call_hash else {
                continue;
            };
            if self.packed.contains_key(&call_hash) {
                continue;
            }
            let have = stored.get(&call_hash).map_or(0, |sigs| {
                sigs.iter()
                    .filter(|(signer, _)| signers.contains(signer))
                    .count()
            });
            if have < quorum && self.should_pull(row.packet.guid) {
                let held: Vec<alloy::primitives::Address> = stored
                    .get(&call_hash)
                    .map(|sigs| sigs.iter().map(|(signer, _)| *signer).collect())
                    .unwrap_or_default();
                wanted.push((call_hash, held));
                if wanted.len() == PULLS_PER_STEP {
                    break;
                }
            }
        }
        let peers = &self.ctx.peers;
        let pulled: Vec<_> = futures::stream::iter(wanted)
            .map(|(call_hash, held)| async move {
                (call_hash, peers.pull(call_hash, signers, &held).await)
            })
            .buffer_unordered(PULL_CONCURRENCY)
            .collect()
            .await;
        let mut found_all = Vec::new();
        for (call_hash, found) in pulled {
            for (peer, signer, sig) in found {
                let bytes = sig.as_bytes().to_vec();
                stored
                    .entry(call_hash)
                    .or_default()
                    .push((signer, bytes.clone()));
                found_all.push((call_hash, signer, bytes, peer));
            }
        }
        self.ctx.store.insert_signatures(&found_all).await?;
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

    /// Checks and batches one `execute` from the front of `ready` and hands it to the
    /// transaction manager. True when a transaction was sent; and the candidates not looked
    /// at. A `partial` batch closed for the destination's next block: whether it made that
    /// block teaches the lead.
    async fn send_batch(
        &mut self,
        ready: Vec<Ready>,
        partial: bool,
    ) -> anyhow::Result<(bool, Vec<Ready>)> {
        let started = Instant::now();
        let ctx = Arc::clone(&self.ctx);
        let (chain, dvn) = (ctx.chain(self.eid)?, ctx.dvn(self.eid)?);
        let max_batch = self.ctx.config.submitter.max_batch;
        // The destination as it is now: packets already checked at this very block are not
        // read again.
        let latest = chain.latest_block().await?;
        // Source heads, read once per batch, for the re-check of not-yet-final packets.
        let mut heads = HashMap::new();
        for item in &ready {
            let src_eid = item.row.packet.src_eid;
            if let std::collections::hash_map::Entry::Vacant(e) = heads.entry(src_eid) {
                e.insert(ctx.chain(src_eid)?.recent_head().await?);
            }
        }
        let source = SourceView {
            heads: Arc::new(heads),
            blocks: Arc::new(Shared::default()),
        };
        let mut batch = Vec::new();
        let mut candidates = ready.into_iter();
        while batch.len() < max_batch {
            let chunk: Vec<Ready> = candidates.by_ref().take(max_batch - batch.len()).collect();
            if chunk.is_empty() {
                break;
            }
            batch.extend(
                self.keep_still_to_submit(chunk, latest, Some(&source))
                    .await?,
            );
        }
        let rest: Vec<Ready> = candidates.collect();
        // Whose turn, read afresh right before sending: under a backlog a step can outlast the
        // quiet half of a turn window (its reads queue behind the other stages' writes), and a
        // turn checked at the step's start may have passed to another region meanwhile —
        // sending then would race that region's transaction (seen in a 10k catch-up: 40
        // packets verified twice).
        let now = chain.latest_timestamp().await?;
        let regions = self.ctx.config.regions().len();
        let me = self.ctx.config.region_index();
        let takeover = self.ctx.config.submitter.takeover_after_secs;
        let before = batch.len();
        batch.retain(|r| owner(r.row.packet.block_timestamp, now, regions, takeover) == Some(me));
        if batch.len() < before {
            tracing::info!(
                chain = chain.name(),
                packets = before - batch.len(),
                "the turn passed on while the batch was checked: left to its new owner"
            );
        }
        if batch.is_empty() {
            return Ok((false, rest));
        }
        let from = self.ctx.submitter.address();
        // Whether this close waited for `eth_estimateGas`, on any of its tries.
        let mut waited = false;
        let (to, input, gas) = loop {
            let params: Vec<ExecuteParam> = batch.iter().map(|r| r.param.clone()).collect();
            let (to, input) = execute::call(&chain.config, dvn.address, params)?;
            if input.len() > execute::MAX_INPUT_BYTES && batch.len() > 1 {
                batch.truncate(batch.len().div_ceil(2));
                continue;
            }
            let request = TransactionRequest::default()
                .with_from(from)
                .with_to(to)
                .with_input(input.clone());
            let (gas, estimated) = match self.txs.execute_gas(&request, batch.len()).await {
                Ok(gas) => gas,
                Err(e) => {
                    // An execute that would revert: most likely our submitter lost ADMIN_ROLE.
                    // Re-read it now rather than at the next periodic refresh.
                    self.ctx.wake.signers.notify_one();
                    return Err(e);
                }
            };
            waited |= estimated;
            if gas <= self.ctx.config.submitter.max_batch_gas || batch.len() == 1 {
                break (to, input, gas);
            }
            batch.truncate(batch.len().div_ceil(2));
        };
        let packets: Vec<Expect> = batch.iter().map(|r| r.row.expect()).collect();
        // A batch that waited for `eth_estimateGas` (none could be had while it gathered: the
        // first close after a start or of a turn) is neither timed for the lead nor does its
        // landing move the lead's margin: that wait is rare, and sized into the lead it held
        // every batch of the next 32 back by it.
        let aim = partial.then_some(Aim {
            block: latest.number + 1,
            teaches_lead: !waited,
        });
        let sent = self.txs.send(to, input, gas, &packets, aim).await?;
        if sent {
            // Checks, estimate, signing and broadcast of one batch: what the lead must cover
            // for the batch to make the block it closed for.
            let took = started.elapsed();
            if !waited {
                self.lead.took(took);
            }
            // What sizes the next leads: one slow close keeps the lead long for the next
            // batches (see `BlockLead`), and this line shows which one it was.
            tracing::info!(
                chain = chain.name(),
                packets = batch.len(),
                closing_to_broadcast_ms = took.as_millis() as u64,
                waited_for_estimate = waited,
                lead_ms = self.lead.lead().as_millis() as u64,
                "batch broadcast"
            );
            metrics::histogram!("dvn_submit_batch_seconds", "chain" => chain.name().to_string())
                .record(took.as_secs_f64());
            for ready in &batch {
                PacketStage::Send.reached(ready.row.ready_at_ms.unwrap_or_else(now_ms));
            }
        }
        Ok((sent, rest))
    }

    /// While a batch gathers, checks its packets against the destination as this step read it
    /// (see `prechecked`); a failed read only leaves them to be checked when the batch closes.
    async fn check_ahead(&mut self, ready: Vec<Ready>) {
        let Some(latest) = self.latest else { return };
        let upcoming = ready
            .into_iter()
            .take(self.ctx.config.submitter.max_batch)
            .collect();
        let fresh = match self.keep_still_to_submit(upcoming, latest, None).await {
            Ok(fresh) => fresh,
            Err(e) => {
                tracing::debug!(
                    chain = self.eid,
                    "checking a gathering batch failed (checked again when it closes): {e:#}"
                );
                return;
            }
        };
        // One packet just found still to submit anchors the gas estimates' low end, and the
        // batch gathered so far a point the line extends from (up to four times its size,
        // where lines extend) or reaches exactly:
        // the batch that closes is then estimated without `eth_estimateGas`.
        let params: Vec<ExecuteParam> = fresh.iter().map(|r| r.param.clone()).collect();
        for params in [&params[..params.len().min(1)], &params[..]] {
            if let Err(e) = self.estimate_ahead(params).await {
                tracing::debug!(
                    chain = self.eid,
                    params = params.len(),
                    "estimating an execute ahead failed (the batch is estimated when it closes): {e:#}"
                );
            }
        }
    }

    /// See [`TxManager::estimate_ahead`]: for an `execute` of `params` (none when empty, or
    /// larger than is ever sent).
    async fn estimate_ahead(&mut self, params: &[ExecuteParam]) -> anyhow::Result<()> {
        if params.is_empty() {
            return Ok(());
        }
        let ctx = Arc::clone(&self.ctx);
        let (chain, dvn) = (ctx.chain(self.eid)?, ctx.dvn(self.eid)?);
        let (to, input) = execute::call(&chain.config, dvn.address, params.to_vec())?;
        if input.len() > execute::MAX_INPUT_BYTES {
            return Ok(());
        }
        let request = TransactionRequest::default()
            .with_from(ctx.submitter.address())
            .with_to(to)
            .with_input(input);
        self.txs.estimate_ahead(&request, params.len()).await
    }

    /// The packets of `chunk` still to submit as of destination block `latest` (and, given
    /// `source`, whose source block is still canonical); the others are settled here. A packet
    /// already found still to submit at this very block is not read on the destination again:
    /// the state a batch sent now would meet is that block's until the next one.
    async fn keep_still_to_submit(
        &mut self,
        chunk: Vec<Ready>,
        latest: LatestBlock,
        source: Option<&SourceView>,
    ) -> anyhow::Result<Vec<Ready>> {
        let chunk: Vec<Ready> = match source {
            Some(_) => chunk,
            // Checking ahead: only what this block has not seen yet.
            None => chunk
                .into_iter()
                .filter(|r| self.prechecked.get(&r.row.packet.guid) != Some(&latest.hash))
                .collect(),
        };
        if chunk.is_empty() {
            return Ok(chunk);
        }
        // Each packet's checks are independent reads: run them side by side (in order), then
        // apply what they found one by one.
        // (Owned inputs: a stream of borrowing futures trips the compiler's `Send` check.)
        let (ctx, eid) = (Arc::clone(&self.ctx), self.eid);
        let checks: Vec<(PacketRow, bool)> = chunk
            .iter()
            .map(|item| {
                let checked = self.prechecked.get(&item.row.packet.guid) == Some(&latest.hash);
                (item.row.clone(), checked)
            })
            .collect();
        let verdicts: Vec<anyhow::Result<Option<Verdict>>> = futures::stream::iter(checks)
            .map(|(row, checked)| {
                let ctx = Arc::clone(&ctx);
                let source = source.map(|s| (Arc::clone(&s.heads), Arc::clone(&s.blocks)));
                async move {
                    if let Some((heads, blocks)) = source {
                        if let Some(why) = source_problem(&ctx, &row, &heads, &blocks).await? {
                            return Ok(Some(Verdict::Orphaned(why)));
                        }
                    }
                    if checked {
                        return Ok(None);
                    }
                    destination_verdict(&ctx, eid, &row, latest.number).await
                }
            })
            .buffered(CHECK_CONCURRENCY)
            .collect()
            .await;
        let mut kept = Vec::new();
        for (item, verdict) in chunk.into_iter().zip(verdicts) {
            let guid = item.row.packet.guid;
            let Some(verdict) = verdict? else {
                self.prechecked.insert(guid, latest.hash);
                kept.push(item);
                continue;
            };
            self.prechecked.remove(&guid);
            match &verdict {
                Verdict::Orphaned(why) => {
                    tracing::warn!(%guid, "signed packet orphaned before submission: {why}")
                }
                Verdict::Done(_, why) => tracing::info!(%guid, "{why}"),
            }
            let (state, why) = match verdict {
                Verdict::Orphaned(why) => (PacketState::Orphaned, why),
                Verdict::Done(state, why) => (state, why),
            };
            self.ctx
                .store
                .transition(item.row.expect(), state, Some(&why))
                .await?;
        }
        Ok(kept)
    }

    /// Takes out of `ready` every packet a standing peer claim holds back (another region's
    /// transaction carrying it may still land). When any packet is a takeover — not ours by
    /// designation — the peers are asked too, not only their announcements believed.
    async fn hold_back_claimed(&mut self, ready: &mut Vec<Ready>) -> anyhow::Result<()> {
        let regions = self.ctx.config.regions();
        if regions.len() < 2 || ready.is_empty() {
            return Ok(());
        }
        let me = self.ctx.config.region_index();
        let taking_over = ready
            .iter()
            .any(|r| designated(r.row.packet.block_timestamp, regions.len()) != me);
        let guids: Vec<B256> = ready.iter().map(|r| r.row.packet.guid).collect();
        let held = claims::standing(&self.ctx, self.eid, &guids, taking_over).await?;
        let chain = self.ctx.chain(self.eid)?.name().to_string();
        self.reported_claims
            .retain(|tx| held.values().any(|c| c.tx_hash == *tx));
        for claim in held.values() {
            if self.reported_claims.insert(claim.tx_hash) {
                metrics::counter!("dvn_claim_deferrals_total", "chain" => chain.clone())
                    .increment(1);
                tracing::warn!(
                    region = %claim.region,
                    tx = %claim.tx_hash,
                    sender = %claim.sender,
                    nonce = claim.nonce,
                    packets = claim.guids.len(),
                    "another region's pending transaction carries packets it is our turn to submit: waiting until its nonce is used"
                );
            }
        }
        ready.retain(|r| !held.contains_key(&r.row.packet.guid));
        Ok(())
    }
}

/// Why a packet ready to batch is not sent after all.
enum Verdict {
    /// Its source block was reorganised away (the watcher brings it back if re-included).
    Orphaned(String),
    /// The destination already shows it verified or delivered.
    Done(PacketState, String),
}

/// The source side of the checks right before a packet goes into a batch, read afresh:
/// signed before a reorg, not yet submitted, while the source block could still be
/// reorganised away its hash is re-checked; an orphan is never submitted.
async fn source_problem(
    ctx: &Context,
    row: &PacketRow,
    source_heads: &HashMap<u32, u64>,
    source_blocks: &Shared<(u32, u64), Option<B256>>,
) -> anyhow::Result<Option<String>> {
    let p = &row.packet;
    let src = ctx.chain(p.src_eid)?;
    let src_head = source_heads.get(&p.src_eid).copied().unwrap_or(u64::MAX);
    if src_head.saturating_sub(p.block_number) < src.config.max_reorg_depth {
        return canonical_problem(src, p, source_blocks).await;
    }
    Ok(None)
}

/// The destination side: whether the destination, as of block `block`, already has the
/// packet verified by us, committed or delivered. Read after the claims (a claim lapses once
/// its transaction's nonce is used, and if that transaction verified the packet, this read
/// sees it), at the block read after them. All three reads of a packet are at that one block,
/// never a path's lazy nonce cached across blocks: once committed, a packet's own verification
/// is gone from the ULN and only the path's lazy nonce shows it delivered — a nonce read at an
/// earlier block can miss that and verify it a second time.
async fn destination_verdict(
    ctx: &Context,
    eid: u32,
    row: &PacketRow,
    block: u64,
) -> anyhow::Result<Option<Verdict>> {
    let p = &row.packet;
    let (chain, dvn) = (ctx.chain(eid)?, ctx.dvn(eid)?);
    let header = PacketHeader::decode(&p.header)?;
    let required = row.confirmations.unwrap_or(1);
    Ok(destination_done_at(
        chain,
        dvn.address,
        &header,
        p.payload_hash,
        required,
        Some(block),
    )
    .await?
    .map(|(state, why)| Verdict::Done(state, why)))
}

/// What a batch's source-side checks share: each source chain's head, read once per batch,
/// and the source blocks' hashes as read (one read per block).
struct SourceView {
    heads: Arc<HashMap<u32, u64>>,
    blocks: Arc<Shared<(u32, u64), Option<B256>>>,
}

/// The stored signatures over `call_hash` that count: each must recover to a member of the
/// DVN's on-chain signer set over this very hash (one per signer). Packets and signer
/// rotations are aggregated by this one rule.
pub fn counted_signatures(
    call_hash: B256,
    stored: &[(alloy::primitives::Address, Vec<u8>)],
    signers: &[alloy::primitives::Address],
) -> SignatureSet {
    let mut set = SignatureSet::new(call_hash);
    for (_, bytes) in stored {
        count_signature(&mut set, bytes, signers);
    }
    set
}

/// Adds one stored signature to `set` if it recovers to one of `signers` over the set's hash.
fn count_signature(set: &mut SignatureSet, bytes: &[u8], signers: &[alloy::primitives::Address]) {
    if let Ok(sig) = dvn_lz::multisig::parse_signature(bytes) {
        let _ = set.insert(sig, signers);
    }
}

impl Stage for SubmitStage {
    async fn step(&mut self) -> anyhow::Result<Progress> {
        self.run_step().await
    }

    /// A partial batch waiting for the destination's next block wakes the stage when it is
    /// to close (a tick could come after the block); otherwise the tick.
    fn idle_wait(&self) -> Option<Duration> {
        self.closes_in.map(|d| d.min(self.ctx.tick()))
    }
}
