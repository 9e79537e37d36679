//! confirm → check → sign: the only way a packet becomes `signed`.
//!
//! For each `observed` packet, in order:
//! 1. **confirm** — the cheap check first: wait for max(receive-side ULN confirmations on the
//!    destination, per-OApp overrides included; send-side ULN confirmations), counted from the
//!    conservative head, and for the `finalized` tag when the chain is configured so;
//! 2. **canonical re-read** — the source receipt, agreed by `rpc_quorum` endpoints, must still
//!    hold this exact `PacketSent` at the same block hash, paired with a `DVNFeePaid` naming our
//!    DVN; the source endpoint's `outboundNonce` for the path must have reached the nonce (a
//!    packet beyond it was never sent);
//!
//! No decision needs historical chain state, so a node back from a long outage can sign its
//! backlog through ordinary (non-archive) RPC endpoints, which keep only recent state: nonces
//! only grow, so `outboundNonce` is read at the latest block (a nonce at or below it, held by
//! the agreed receipt, was sent); the send-side confirmations are today's config, and the
//! stricter of today's and the one in force at the send block while that is still readable.
//!
//! A packet whose checks fail backs off on its own (doubling, up to a minute) and the page
//! moves on: it never holds up the packets behind it. Up to [`SIGN_CONCURRENCY`] packets of a
//! page are checked and signed side by side (each packet's own reads stay in order); what many
//! packets share — configs, heads, nonces, blocks, receipts — is read once per step, by the
//! first packet that needs it, while the others wait for that one read. Paths with a halted equivocation guard
//! are not signed at all.
//! 3. **check** — skip what the destination no longer needs (our verification already there,
//!    or committed, or delivered), for packets that reached their confirmations a while ago
//!    (a fresh one cannot have been verified by the other regions yet; the submit stage reads
//!    the destination before sending either way); within a page, a path's packets between two
//!    ends the destination still needs are not read one by one ([`PageEnds`]);
//! 4. **sign** — the `verify` param with a deterministic expiration; the signature is stored
//!    before it is shared with the peers.

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use alloy::primitives::{keccak256, Address, B256};
use alloy::rpc::types::TransactionReceipt;
use dvn_lz::contracts::{IEndpointV2, IReceiveUln302, ISendUln302};
use dvn_lz::{packets_in_transaction, PacketHeader, UnsignedParam};
use futures::StreamExt;
use tokio::sync::OnceCell;

use super::expiration::expiration;
use super::{Context, Progress, Stage};
use crate::chain::EvmChain;
use crate::config::Finality;
use crate::store::{now_ms, NewPacket, PacketRow, PacketState, PathKey, SignatureWrite};
use crate::telemetry::PacketStage;

/// Most packets examined per step.
const BATCH: usize = 500;

/// Packets checked and signed at once within a step: enough to hide RPC round trips during a
/// catch-up, few enough that a step's reads stay a modest burst for a rate-limited endpoint.
pub const SIGN_CONCURRENCY: usize = 16;

/// Blocks beyond its required confirmations within which a packet counts as fresh: the other
/// regions sign it at about the same time as this one, so the destination is not read for it
/// before signing (the submit stage reads it before sending, always).
const FRESH_DEPTH: u64 = 4;

/// Seconds from its source block (by the destination's clock) within which a packet counts as
/// fresh too: on a fast source chain a few seconds are many blocks.
const FRESH_SECS: u64 = 15;

/// Longest a packet whose checks keep failing waits between two tries.
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// When a packet whose checks failed `deferrals` times in a row (this one included) is next
/// looked at: one tick, doubling, at most [`MAX_BACKOFF`].
pub fn backoff(tick: Duration, deferrals: u64) -> Duration {
    let factor = 1u32 << deferrals.min(16);
    tick.saturating_mul(factor).min(MAX_BACKOFF)
}

/// What became of one packet in this step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Waiting(&'static str),
    Signed,
    Done(PacketState, String),
}

/// A per-step, single-flight cache: the first caller of a key reads it, callers of the same
/// key meanwhile wait for that read instead of sending their own; a failed read is not kept
/// (the next caller tries again).
pub struct Shared<K, V>(Mutex<HashMap<K, Arc<OnceCell<V>>>>);

impl<K, V> std::fmt::Debug for Shared<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let entries = self.0.lock().map_or(0, |m| m.len());
        f.debug_struct("Shared").field("entries", &entries).finish()
    }
}

impl<K, V> Default for Shared<K, V> {
    fn default() -> Self {
        Self(Mutex::new(HashMap::new()))
    }
}

impl<K: Hash + Eq, V: Clone> Shared<K, V> {
    pub async fn get_or<E, F, Fut>(&self, key: K, read: F) -> Result<V, E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<V, E>>,
    {
        let cell = Arc::clone(
            self.0
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .entry(key)
                .or_default(),
        );
        cell.get_or_try_init(read).await.cloned()
    }
}

/// Per-step caches: one head / finalized / latest-time read per chain, one `outboundNonce`
/// per path, one ULN config per (OApp, remote eid) on each side, one send-side config per
/// (OApp, remote eid, block), one block hash per block and one receipt per transaction. A
/// step lasts a moment, so a config changed on chain is seen by the next step; only what
/// changes per packet (its state on the destination) is read per packet.
#[derive(Default)]
struct Views {
    heads: Shared<u32, u64>,
    finalized: Shared<u32, u64>,
    /// The path's `outboundNonce`, re-read when a packet is beyond the one read.
    outbound: Mutex<HashMap<PathKey, u64>>,
    latest_time: Shared<u32, u64>,
    /// Receive-side configs on the destination, by (receiver, source eid).
    receive_cfgs: Shared<(Address, u32), dvn_lz::contracts::UlnConfig>,
    /// Send-side confirmations on the source today, by (sender, destination eid).
    send_confirmations: Shared<(Address, u32), u64>,
    /// Send-side confirmations in force at a block, by (sender, destination eid, block);
    /// 0 when the endpoints no longer hold that state.
    send_confirmations_at: Shared<(Address, u32, u64), u64>,
    /// Canonical block hashes, by (chain eid, number).
    blocks: Shared<(u32, u64), B256>,
    /// What agreed receipts hold for us, by (chain eid, transaction): one read per
    /// transaction, however many packets it sent.
    receipts: Shared<(u32, B256), Option<Arc<ReceiptPackets>>>,
    lazy: Mutex<LazyNonces>,
    /// Each path's lowest and highest nonce among the step's packets: see [`PageEnds`].
    ends: HashMap<PathKey, PageEnds>,
    /// Whether the destination needs both ends of a path's run still (read once per step).
    ends_open: Shared<PathKey, bool>,
}

/// A path's lowest- and highest-nonce packets in one step's page. After an outage a page holds
/// hundreds of packets of a path that are not fresh, and checking each on the destination is
/// three reads per packet on every node — the largest share of a catch-up's requests (a third
/// in the 10,000-packet drain). The ends are checked instead: the destination
/// verifies a path's packets roughly in nonce order, so when neither end is done there, the
/// packets between them are signed without reads of their own; when either is (this node
/// comes back alone after the others verified its backlog), each is checked as before. A
/// packet between two open ends that was done anyway (verified out of order) costs a signature
/// and no more: the check only ever spares work — the submit stage reads the destination
/// afresh for every packet before sending it.
#[derive(Debug, Clone)]
struct PageEnds {
    low: PageEnd,
    high: PageEnd,
}

#[derive(Debug, Clone)]
struct PageEnd {
    nonce: u64,
    header: Vec<u8>,
    payload_hash: B256,
}

impl PageEnd {
    fn of(row: &PacketRow) -> Self {
        Self {
            nonce: row.packet.nonce,
            header: row.packet.header.clone(),
            payload_hash: row.packet.payload_hash,
        }
    }
}

impl PageEnds {
    /// The ends of each path's run among `rows`.
    fn of<'a>(rows: impl IntoIterator<Item = &'a PacketRow>) -> HashMap<PathKey, Self> {
        let mut ends: HashMap<PathKey, Self> = HashMap::new();
        for row in rows {
            let nonce = row.packet.nonce;
            ends.entry(row.packet.path())
                .and_modify(|e| {
                    if nonce < e.low.nonce {
                        e.low = PageEnd::of(row);
                    }
                    if nonce > e.high.nonce {
                        e.high = PageEnd::of(row);
                    }
                })
                .or_insert_with(|| Self {
                    low: PageEnd::of(row),
                    high: PageEnd::of(row),
                });
        }
        ends
    }

    /// Whether a packet with `nonce` lies strictly between the ends (the ends check
    /// themselves).
    fn between(&self, nonce: u64) -> bool {
        self.low.nonce < nonce && nonce < self.high.nonce
    }
}

/// What processing one packet came to, with the packet it was.
type Processed<'a> = (&'a PacketRow, anyhow::Result<Outcome>);

#[derive(Debug)]
pub struct SignStage {
    ctx: Arc<Context>,
    governor: super::governor::Governor,
    /// The rules `governor` was built from (a reload replaces the context's).
    rules: crate::config::GovernorConfig,
    /// How deep each source chain's endpoints' state reaches, as the reads at send blocks
    /// found it.
    history: HashMap<u32, StateDepth>,
}

/// How long a depth found beyond the source endpoints' state is believed: a failure that was
/// not pruning (a timeout) costs the reads at send blocks below that depth for this long.
const STATE_DEPTH_MEMORY: Duration = Duration::from_secs(60);

/// How deep (blocks below the head) the source endpoints' state reaches. An ordinary
/// (non-archive) RPC node keeps the last few hundred blocks' state, so a catch-up's reads at
/// older send blocks all fail. When one fails, the depth where state ends is found by
/// bisection (a few reads) and deeper reads are not sent for [`STATE_DEPTH_MEMORY`] — their
/// answer would be the fallback anyway: today's config, see [`SignStage::process`].
#[derive(Debug, Default)]
struct StateDepth {
    /// The shallowest depth found gone, and when.
    gone: Mutex<Option<(u64, std::time::Instant)>>,
    /// One bisection at a time.
    probing: tokio::sync::Mutex<()>,
}

impl StateDepth {
    fn gone_at(&self, depth: u64) {
        let now = std::time::Instant::now();
        let mut gone = self.gone.lock().unwrap_or_else(|e| e.into_inner());
        match *gone {
            Some((known, at)) if now.duration_since(at) < STATE_DEPTH_MEMORY && known <= depth => {}
            _ => *gone = Some((depth, now)),
        }
    }

    fn is_gone(&self, depth: u64) -> bool {
        self.gone
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some_and(|(shallowest, at)| {
                at.elapsed() < STATE_DEPTH_MEMORY && depth >= shallowest
            })
    }

    /// After a read at `failed` depth failed: the shallowest depth whose state is gone, by
    /// bisection between the head (taken as held) and `failed`, with `held(depth)` reading
    /// state at that depth; recorded for the reads after it.
    async fn find_reach<F, Fut>(&self, failed: u64, held: F)
    where
        F: Fn(u64) -> Fut,
        Fut: Future<Output = bool>,
    {
        let _one = self.probing.lock().await;
        if self.is_gone(failed) {
            return;
        }
        let (mut lo, mut hi) = (1u64, failed.max(2));
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2;
            if held(mid).await {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        self.gone_at(hi);
    }
}

impl SignStage {
    pub fn new(ctx: Arc<Context>) -> Self {
        let rules = ctx
            .governor
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let governor = super::governor::Governor::new(&ctx.config, &rules);
        let history = ctx
            .chains
            .keys()
            .map(|eid| (*eid, StateDepth::default()))
            .collect();
        Self {
            ctx,
            governor,
            rules,
            history,
        }
    }

    async fn run_step(&mut self) -> anyhow::Result<Progress> {
        let packets = self
            .ctx
            .store
            .packets(PacketState::Observed, None, BATCH)
            .await?;
        let rules = self
            .ctx
            .governor
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        if rules != self.rules {
            self.governor.update(&self.ctx.config, &rules);
            self.rules = rules;
        }
        let holds = self.ctx.store.holds().await?;
        let mut held = 0usize;
        let mut rate_limited = 0usize;
        let mut views = Views::default();
        let mut moved = false;
        let mut failed: Vec<(B256, String)> = Vec::new();
        // First, in order and alone: holds, the governor's refusals and its rate cap. A path
        // admits at most the room its window has left, so signing side by side never exceeds it.
        let now = std::time::Instant::now();
        let mut admitted: Vec<&PacketRow> = Vec::new();
        let mut room: HashMap<PathKey, usize> = HashMap::new();
        for row in &packets {
            let path = row.packet.path();
            if holds.holds(&path) {
                held += 1;
                continue;
            }
            if let Some(why) = self.governor.refuses(&path) {
                let refused = self
                    .ctx
                    .store
                    .transition(row.expect(), PacketState::Invalid, Some(&why))
                    .await?;
                if refused {
                    tracing::warn!(guid = %row.packet.guid, "not signed: {why}");
                    let target = crate::store::PauseScope::Path(path).key();
                    let params = serde_json::json!({ "guid": row.packet.guid, "nonce": row.packet.nonce, "rule": why });
                    self.ctx
                        .store
                        .audit_node_event("governor.refused", &target, params)
                        .await;
                    moved = true;
                }
                continue;
            }
            let left = room
                .entry(path)
                .or_insert_with(|| self.governor.room(&path, now));
            if *left == 0 {
                rate_limited += 1;
                continue;
            }
            *left -= 1;
            admitted.push(row);
        }
        views.ends = PageEnds::of(admitted.iter().copied());
        // Side by side, at most SIGN_CONCURRENCY at once (a hand-fed `FuturesUnordered`: the
        // stream combinators over borrowing closures trip the compiler's `Send` check).
        let mut finished: Vec<Processed<'_>> = Vec::with_capacity(admitted.len());
        let mut queue = admitted.into_iter();
        let mut running = futures::stream::FuturesUnordered::new();
        loop {
            while running.len() < SIGN_CONCURRENCY && !self.ctx.cancel.is_cancelled() {
                let Some(row) = queue.next() else { break };
                running.push(self.process_waking(row, &views));
            }
            match running.next().await {
                Some(done) => finished.push(done),
                None => break,
            }
        }
        drop(running);
        for (row, outcome) in finished {
            match outcome {
                Ok(Outcome::Waiting(_)) => {}
                Ok(Outcome::Signed) => {
                    self.governor
                        .record(row.packet.path(), std::time::Instant::now());
                    moved = true;
                }
                Ok(Outcome::Done(state, why)) => {
                    if self
                        .ctx
                        .store
                        .transition(row.expect(), state, Some(&why))
                        .await?
                    {
                        tracing::info!(guid = %row.packet.guid, state = state.as_str(), "{why}");
                        moved = true;
                    }
                }
                // One packet's failing read must not hold up the others: it backs off alone.
                Err(e) => {
                    let why = format!("{e:#}");
                    let wait = backoff(self.ctx.tick(), row.deferrals + 1);
                    let at = now_ms()
                        .saturating_add(i64::try_from(wait.as_millis()).unwrap_or(i64::MAX));
                    self.ctx.store.defer(row.expect(), at, &why).await?;
                    tracing::debug!(guid = %row.packet.guid, retry_in = ?wait, "not signed yet: {why}");
                    failed.push((row.packet.guid, why));
                }
            }
        }
        // One line per step, not one per packet: a thousand packets failing the same read
        // would otherwise bury everything else in the log.
        metrics::gauge!("dvn_held_packets").set(held as f64);
        metrics::gauge!("dvn_rate_limited_packets").set(rate_limited as f64);
        metrics::gauge!("dvn_pauses").set(holds.pause_count() as f64);
        if let Some((guid, why)) = failed.first() {
            tracing::warn!(packets = failed.len(), first = %guid, "packets not signed yet, each backing off: {why}");
        }
        if moved {
            self.ctx.wake.submit.notify_one();
        }
        Ok(Progress::Idle)
    }

    /// [`Self::process`], waking the submitter as soon as the packet is signed: it can start
    /// on it while the rest of the page is signed.
    async fn process_waking<'a>(&self, row: &'a PacketRow, views: &Views) -> Processed<'a> {
        let outcome = self.process(row, views).await;
        if matches!(outcome, Ok(Outcome::Signed)) {
            self.ctx.wake.submit.notify_one();
        }
        (row, outcome)
    }

    async fn process(&self, row: &PacketRow, views: &Views) -> anyhow::Result<Outcome> {
        let p = &row.packet;
        let header = match PacketHeader::decode(&p.header) {
            Ok(h) => h,
            Err(e) => {
                return Ok(Outcome::Done(
                    PacketState::Invalid,
                    format!("stored header invalid: {e}"),
                ))
            }
        };
        let (Ok(sender), Ok(receiver)) = (header.sender_address(), header.receiver_address())
        else {
            return Ok(Outcome::Done(
                PacketState::Invalid,
                "sender or receiver is not an EVM address".into(),
            ));
        };
        let src = self.ctx.chain(p.src_eid)?;
        let dst = self.ctx.chain(p.dst_eid)?;
        let dvn = self.ctx.dvn(p.dst_eid)?;

        // 1. confirm
        let receive_cfg = views
            .receive_cfgs
            .get_or((receiver, p.src_eid), || async {
                dst.call(
                    dst.config.receive_uln,
                    &IReceiveUln302::getUlnConfigCall {
                        oapp: receiver,
                        remoteEid: p.src_eid,
                    },
                    None,
                )
                .await
            })
            .await?;
        let sole_verifier = is_sole_verifier(dvn.address, &receive_cfg);
        let send_cfg_call = ISendUln302::getUlnConfigCall {
            oapp: sender,
            remoteEid: p.dst_eid,
        };
        let send_confirmations = views
            .send_confirmations
            .get_or((sender, p.dst_eid), || async {
                src.call(src.config.send_uln, &send_cfg_call, None)
                    .await
                    .map(|c| c.confirmations)
            })
            .await?;
        // The config in force at the send block counts too while the endpoints still hold that
        // state; once they have pruned it, today's is all there is (config changes are rare and
        // the destination's requirement, read above, is what the verification must meet).
        let head = views
            .heads
            .get_or(p.src_eid, || async {
                let h = src.recent_head().await?;
                metrics::gauge!("dvn_confirm_head", "chain" => src.name().to_string())
                    .set(h as f64);
                Ok::<_, crate::chain::ChainError>(h)
            })
            .await?;
        let depth = (head + 1).saturating_sub(p.block_number);
        if depth < receive_cfg.confirmations.max(send_confirmations) {
            return Ok(Outcome::Waiting("confirmations"));
        }
        let history = self
            .history
            .get(&p.src_eid)
            .ok_or_else(|| anyhow::anyhow!("no source chain {}", p.src_eid))?;
        let send_cfg_then = views
            .send_confirmations_at
            .get_or((sender, p.dst_eid, p.block_number), || async {
                if history.is_gone(depth) {
                    return Ok::<_, std::convert::Infallible>(0);
                }
                let read = src
                    .call(src.config.send_uln, &send_cfg_call, Some(p.block_number))
                    .await;
                Ok(match read {
                    Ok(cfg) => cfg.confirmations,
                    Err(_) => {
                        history
                            .find_reach(depth, |probe| {
                                let call = &send_cfg_call;
                                async move {
                                    let block = (head + 1).saturating_sub(probe);
                                    src.call(src.config.send_uln, call, Some(block))
                                        .await
                                        .is_ok()
                                }
                            })
                            .await;
                        0
                    }
                })
            })
            .await
            .unwrap_or(0);
        let required = receive_cfg
            .confirmations
            .max(send_confirmations)
            .max(send_cfg_then)
            .max(1);
        if depth < required {
            return Ok(Outcome::Waiting("confirmations"));
        }
        if src.config.finality != Finality::Confirmations {
            let finalized = views
                .finalized
                .get_or(p.src_eid, || async {
                    match src.config.finality {
                        Finality::Safe => src.safe().await,
                        _ => src.finalized().await,
                    }
                })
                .await?;
            if p.block_number > finalized {
                return Ok(Outcome::Waiting("finality"));
            }
        }

        // 2. canonical re-read
        let receipt = views
            .receipts
            .get_or((p.src_eid, p.tx_hash), || async {
                let receipt = src.receipt(p.tx_hash).await?;
                Ok::<_, crate::chain::ChainError>(
                    receipt.map(|r| Arc::new(ReceiptPackets::of(src, &r))),
                )
            })
            .await?;
        if let Some(reason) = receipt_problem(p, receipt.as_deref()) {
            return Ok(Outcome::Done(PacketState::Orphaned, reason));
        }
        let canonical = views
            .blocks
            .get_or((p.src_eid, p.block_number), || async {
                src.block(p.block_number).await.map(|(hash, _)| hash)
            })
            .await?;
        if canonical != p.block_hash {
            return Ok(Outcome::Done(
                PacketState::Orphaned,
                "source block is no longer canonical".into(),
            ));
        }
        let path = p.path();
        let known = views
            .outbound
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&path)
            .copied();
        let sent = match known {
            Some(n) if n >= p.nonce => n,
            _ => {
                let n = src
                    .call(
                        src.config.endpoint,
                        &IEndpointV2::outboundNonceCall {
                            sender,
                            dstEid: p.dst_eid,
                            receiver: p.receiver,
                        },
                        None,
                    )
                    .await?;
                let mut outbound = views.outbound.lock().unwrap_or_else(|e| e.into_inner());
                let kept = outbound.entry(path).or_insert(n);
                *kept = (*kept).max(n);
                n
            }
        };
        if sent < p.nonce {
            metrics::counter!("dvn_forgery_refused_total", "chain" => src.name().to_string())
                .increment(1);
            return Ok(Outcome::Done(
                PacketState::Invalid,
                format!(
                    "FORGERY: nonce {} but the source endpoint's outboundNonce is {sent}",
                    p.nonce
                ),
            ));
        }
        // 3. check the destination — only for a packet that reached its confirmations a
        // while ago (a catch-up, a re-sign): one that just did cannot have been verified by
        // the other regions much before us, and signing it costs less than reading for it.
        // Whether it is signed or not, the submit stage reads the destination afresh right
        // before sending it; this check only spares work, it guards nothing.
        let now = views
            .latest_time
            .get_or(p.dst_eid, || dst.recent_latest_timestamp())
            .await?;
        let fresh = depth < required.saturating_add(FRESH_DEPTH)
            || now.saturating_sub(p.block_timestamp) < FRESH_SECS;
        if !fresh && !self.ends_open(views, p, dst, dvn.address, required).await {
            if let Some((state, why)) = destination_done_in(
                dst,
                dvn.address,
                &header,
                p.payload_hash,
                required,
                &views.lazy,
                None,
            )
            .await?
            {
                return Ok(Outcome::Done(state, why));
            }
        }

        // 4. sign
        let expires = expiration(
            p.block_timestamp,
            self.ctx.config.verification.expiration_secs,
            now,
        );
        let unsigned = UnsignedParam::verify(
            dvn.vid,
            dst.config.receive_uln,
            &header,
            p.payload_hash,
            required,
            expires,
        );
        let call_hash = unsigned.call_hash();
        let key = self.ctx.signing_key(dst.eid());
        let signature = key.sign_digest(unsigned.digest()).await?;
        // Peers' signatures over this param that arrived before ours (held in memory): stored
        // now that the param is built here, when their signer is in this DVN's set (each
        // already recovered to its signer over this hash; the aggregation checks it again) —
        // queued before our own, so committed no later than ours: the submit stage never sees
        // the packet signed without them and pulls what it already has.
        let early: Vec<_> = self
            .ctx
            .early_signatures
            .take(call_hash)
            .into_iter()
            .filter(|(signer, _)| dvn.signers.contains(signer))
            .map(|(signer, bytes)| {
                let queued = self
                    .ctx
                    .signature_writer
                    .enqueue(call_hash, signer, bytes, "peer");
                (signer, queued)
            })
            .collect();
        // Committed together with the other packets signed meanwhile (group commit: one WAL
        // sync for them all), and only then shared.
        let recorded = self
            .ctx
            .signature_writer
            .record_own(SignatureWrite::Own {
                expect: row.expect(),
                confirmations: required,
                expiration: expires,
                call_hash,
                signer: key.address(),
                signature: signature.as_bytes().to_vec(),
            })
            .await;
        for (signer, queued) in early {
            let stored = match queued {
                Ok(queued) => queued.stored().await,
                Err(e) => Err(e),
            };
            if let Err(e) = stored {
                tracing::debug!(%call_hash, %signer, "a peer's early signature was not stored (it is pulled instead): {e}");
            }
        }
        if !recorded? {
            // The watcher re-observed or replaced the packet while we checked it: this
            // signature is over a stale snapshot and is dropped; the next step starts afresh.
            return Ok(Outcome::Waiting("moved while being signed"));
        }
        metrics::counter!("dvn_packets_signed_total", "chain" => dst.name().to_string())
            .increment(1);
        PacketStage::Sign.reached(row.updated_at_ms);
        if sole_verifier {
            metrics::counter!("dvn_sole_verifier_packets_total", "src" => src.name().to_string(), "dst" => dst.name().to_string()).increment(1);
            tracing::info!(guid = %p.guid, receiver = %receiver, "signed for an OApp whose receive config requires only our DVN (1-of-1): a single point of failure for it");
        }
        tracing::info!(guid = %p.guid, nonce = p.nonce, confirmations = required, expiration = expires, "signed");
        self.ctx
            .peers
            .push_in_background(call_hash, key.address(), signature);
        Ok(Outcome::Signed)
    }

    /// Whether `p` lies between its path's page ends and the destination still needs both
    /// ends (see [`PageEnds`]): then `p` is signed without a destination check of its own. A
    /// failed read of an end answers no (each packet is checked).
    async fn ends_open(
        &self,
        views: &Views,
        p: &NewPacket,
        dst: &EvmChain,
        dvn: Address,
        required: u64,
    ) -> bool {
        let path = p.path();
        let Some(ends) = views.ends.get(&path).filter(|e| e.between(p.nonce)) else {
            return false;
        };
        views
            .ends_open
            .get_or(path, || async {
                for end in [&ends.low, &ends.high] {
                    let Ok(header) = PacketHeader::decode(&end.header) else {
                        return Ok(false);
                    };
                    let done = destination_done_in(
                        dst,
                        dvn,
                        &header,
                        end.payload_hash,
                        required,
                        &views.lazy,
                        None,
                    )
                    .await;
                    if !matches!(done, Ok(None)) {
                        return Ok(false);
                    }
                }
                Ok::<_, std::convert::Infallible>(true)
            })
            .await
            .unwrap_or(false)
    }
}

/// `Some(reason)` when the packet's source block is no longer canonical as stored: the block at
/// its number now has another hash, or the chain no longer reaches it. One read: the sign
/// stage checked this block's receipt for the packet before signing, and a block hash commits
/// to its transactions and their receipts, so the same hash means the same receipt. `blocks`
/// shares each block's read among the packets checked together.
pub async fn canonical_problem(
    src: &EvmChain,
    p: &NewPacket,
    blocks: &Shared<(u32, u64), Option<B256>>,
) -> anyhow::Result<Option<String>> {
    let canonical = blocks
        .get_or((p.src_eid, p.block_number), || async {
            src.block_opt(p.block_number)
                .await
                .map(|b| b.map(|(hash, _)| hash))
        })
        .await?;
    Ok(match canonical {
        None => Some("source block is gone: the chain no longer reaches it (reorg)".into()),
        Some(hash) if hash != p.block_hash => Some("source block is no longer canonical".into()),
        Some(_) => None,
    })
}

/// What a source transaction's agreed receipt says for our DVN: its block, and the packets it
/// sent through our send library with our DVN assigned (guid, payload hash) — all the checks
/// need, kept instead of the receipt itself while a page is processed.
#[derive(Debug, Clone)]
pub struct ReceiptPackets {
    block_hash: Option<B256>,
    ours: Vec<(B256, B256)>,
}

impl ReceiptPackets {
    fn of(src: &EvmChain, receipt: &TransactionReceipt) -> Self {
        let logs: Vec<_> = receipt
            .inner
            .logs()
            .iter()
            .map(|l| l.inner.clone())
            .collect();
        let ours = packets_in_transaction(src.config.endpoint, &logs)
            .into_iter()
            .flatten()
            .filter(|sent| {
                sent.is_assigned_to(src.config.dvn) && sent.send_library == src.config.send_uln
            })
            .map(|sent| (sent.packet.guid, sent.packet.payload_hash()))
            .collect();
        Self {
            block_hash: receipt.block_hash,
            ours,
        }
    }
}

/// `Some(reason)` when the agreed receipt of the packet's transaction (`None`: there is none)
/// no longer holds the packet as stored: at the same block, for our DVN, by the same library.
fn receipt_problem(p: &NewPacket, receipt: Option<&ReceiptPackets>) -> Option<String> {
    let Some(receipt) = receipt else {
        return Some("source transaction no longer on the canonical chain".into());
    };
    if receipt.block_hash != Some(p.block_hash) {
        return Some("source transaction moved to another block (reorg)".into());
    }
    let still_there = receipt
        .ours
        .iter()
        .any(|(guid, payload_hash)| *guid == p.guid && *payload_hash == p.payload_hash);
    (!still_there).then(|| "the receipt no longer holds this packet for our DVN".into())
}

/// Whether the OApp's receive config makes our DVN the *only* verifier of its path (1-of-1:
/// required = [us], no optional threshold) — the configuration the April 2026 KelpDAO loss
/// ran on: one verifier fooled and a message is forged. Not refused (the OApp chose it), but
/// counted when we sign for it (`dvn_sole_verifier_packets_total`, alert `DvnSoleVerifierOApp`).
fn is_sole_verifier(our_dvn: Address, cfg: &dvn_lz::contracts::UlnConfig) -> bool {
    cfg.optionalDVNThreshold == 0
        && cfg.requiredDVNs.len() == 1
        && cfg.requiredDVNs.first() == Some(&our_dvn)
}

/// Each path's lazy inbound nonce on the destination, by (receiver, source eid, sender): read
/// once per sign step (it only grows; a packet at or below it was delivered or skipped). Only
/// for the sign stage's check, which saves work: a nonce read a moment ago may miss a delivery
/// and let a done packet be signed, never submitted — the submit stage reads the destination
/// afresh for every packet right before sending.
pub type LazyNonces = HashMap<(Address, u32, B256), u64>;

/// Whether the destination already has what this packet needs, and so no signature is due.
/// The three reads — our verification (`hashLookup`), committed (`inboundPayloadHash`),
/// delivered (`lazyInboundNonce`) — are made at one block, so the packet cannot move on
/// between them (committed between two reads at "latest", its `hashLookup` entry would be
/// gone from the later one's view). They go in the order a packet moves on all the same.
pub async fn destination_done(
    dst: &EvmChain,
    dvn: Address,
    header: &PacketHeader,
    payload_hash: alloy::primitives::B256,
    required: u64,
) -> anyhow::Result<Option<(PacketState, String)>> {
    destination_done_at(dst, dvn, header, payload_hash, required, None).await
}

/// [`destination_done`] as of destination block `block` (when `None`, the head `rpc_quorum`
/// endpoints have reached): all three reads of one packet see the same state.
pub async fn destination_done_at(
    dst: &EvmChain,
    dvn: Address,
    header: &PacketHeader,
    payload_hash: alloy::primitives::B256,
    required: u64,
    block: Option<u64>,
) -> anyhow::Result<Option<(PacketState, String)>> {
    destination_done_in(
        dst,
        dvn,
        header,
        payload_hash,
        required,
        &Mutex::new(LazyNonces::new()),
        block,
    )
    .await
}

/// [`destination_done`], with the paths' lazy nonces read once into `lazy`. Our verification
/// and the committed payload hash are read per packet (they change per packet).
pub async fn destination_done_in(
    dst: &EvmChain,
    dvn: Address,
    header: &PacketHeader,
    payload_hash: alloy::primitives::B256,
    required: u64,
    lazy: &Mutex<LazyNonces>,
    block: Option<u64>,
) -> anyhow::Result<Option<(PacketState, String)>> {
    let block = Some(match block {
        Some(number) => number,
        None => dst.recent_head().await?,
    });
    let header_hash = keccak256(header.encode());
    let ours = dst
        .call(
            dst.config.receive_uln,
            &IReceiveUln302::hashLookupCall {
                headerHash: header_hash,
                payloadHash: payload_hash,
                dvn,
            },
            block,
        )
        .await?;
    if ours.submitted && ours.confirmations >= required {
        return Ok(Some((
            PacketState::Verified,
            "our verification is already on the destination".into(),
        )));
    }
    let receiver = header.receiver_address()?;
    let stored = dst
        .call(
            dst.config.endpoint,
            &IEndpointV2::inboundPayloadHashCall {
                receiver,
                srcEid: header.src_eid,
                sender: header.sender,
                nonce: header.nonce,
            },
            block,
        )
        .await?;
    if stored == payload_hash {
        return Ok(Some((
            PacketState::Skipped,
            "already committed on the destination".into(),
        )));
    }
    let key = (receiver, header.src_eid, header.sender);
    let known = lazy
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(&key)
        .copied();
    let lazy = match known {
        Some(n) => n,
        None => {
            let n = dst
                .call(
                    dst.config.endpoint,
                    &IEndpointV2::lazyInboundNonceCall {
                        receiver,
                        srcEid: header.src_eid,
                        sender: header.sender,
                    },
                    block,
                )
                .await?;
            lazy.lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(key, n);
            n
        }
    };
    if header.nonce <= lazy {
        return Ok(Some((
            PacketState::Skipped,
            "already delivered (or skipped) on the destination".into(),
        )));
    }
    Ok(None)
}

impl Stage for SignStage {
    async fn step(&mut self) -> anyhow::Result<Progress> {
        self.run_step().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloy::primitives::address;
    use dvn_lz::contracts::UlnConfig;

    const US: Address = address!("00000000000000000000000000000000000000d1");
    const THEM: Address = address!("00000000000000000000000000000000000000d2");

    fn cfg(required: Vec<Address>, optional: Vec<Address>, threshold: u8) -> UlnConfig {
        UlnConfig {
            confirmations: 1,
            requiredDVNCount: required.len() as u8,
            optionalDVNCount: optional.len() as u8,
            optionalDVNThreshold: threshold,
            requiredDVNs: required,
            optionalDVNs: optional,
        }
    }

    #[tokio::test]
    async fn where_state_ends_is_found_by_bisection_and_believed_for_a_while() {
        let depth = StateDepth::default();
        assert!(!depth.is_gone(10_000), "nothing known: read");
        // Endpoints keeping the last 256 blocks' state; a read at depth 9,000 failed.
        let reads = std::sync::atomic::AtomicUsize::new(0);
        depth
            .find_reach(9_000, |d| {
                reads.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                async move { d <= 256 }
            })
            .await;
        assert!(depth.is_gone(257) && depth.is_gone(9_000));
        assert!(!depth.is_gone(256), "held state is still read");
        let reads = reads.into_inner();
        assert!(reads <= 14, "a bisection, not a scan: {reads} reads");
        // Known: another failure deeper than that costs no reads.
        depth
            .find_reach(5_000, |_| async {
                panic!("no probe while the depth is known")
            })
            .await;
        // Forgotten after a while: a failure that was not pruning stops costing reads.
        depth.gone.lock().unwrap().as_mut().unwrap().1 =
            std::time::Instant::now() - STATE_DEPTH_MEMORY;
        assert!(!depth.is_gone(9_000));
        depth.find_reach(700, |d| async move { d < 600 }).await;
        assert!(depth.is_gone(600) && !depth.is_gone(599), "found afresh");
    }

    fn row(receiver: u8, nonce: u64) -> PacketRow {
        PacketRow {
            packet: NewPacket {
                guid: B256::with_last_byte(nonce as u8),
                src_eid: 30101,
                dst_eid: 30212,
                sender: B256::with_last_byte(1),
                receiver: B256::with_last_byte(receiver),
                nonce,
                header: vec![nonce as u8],
                payload_hash: B256::with_last_byte(nonce as u8),
                tx_hash: B256::ZERO,
                block_number: 1,
                block_hash: B256::ZERO,
                log_index: 0,
                block_timestamp: 0,
            },
            state: PacketState::Observed,
            confirmations: None,
            expiration: None,
            call_hash: None,
            submission: None,
            ready_at_ms: None,
            updated_at_ms: 0,
            attempts: 0,
            last_error: None,
            version: 0,
            deferrals: 0,
        }
    }

    #[test]
    fn a_pages_path_ends_are_its_lowest_and_highest_nonce_and_only_packets_between_skip() {
        // Two paths interleaved, out of nonce order (a page sorts by path, then nonce; a retried
        // packet may come back later).
        let rows = [
            row(7, 12),
            row(8, 3),
            row(7, 10),
            row(7, 15),
            row(8, 4),
            row(7, 11),
        ];
        let ends = PageEnds::of(rows.iter());
        let seven = &ends[&rows[0].packet.path()];
        assert_eq!((seven.low.nonce, seven.high.nonce), (10, 15));
        assert_eq!(seven.low.header, vec![10], "the end's own packet is kept");
        assert_eq!(seven.high.payload_hash, B256::with_last_byte(15));
        assert!(seven.between(11) && seven.between(12));
        assert!(
            !seven.between(10) && !seven.between(15),
            "an end checks itself"
        );
        // Two packets: both are ends, nothing between.
        let eight = &ends[&rows[1].packet.path()];
        assert_eq!((eight.low.nonce, eight.high.nonce), (3, 4));
        assert!(!eight.between(3) && !eight.between(4));
        // A path alone in its page: its one packet is both ends.
        let one = PageEnds::of([&row(9, 5)]);
        assert!(!one[&row(9, 5).packet.path()].between(5));
    }

    #[test]
    fn only_a_lone_required_us_is_a_sole_verifier() {
        assert!(is_sole_verifier(US, &cfg(vec![US], vec![], 0)));
        assert!(!is_sole_verifier(US, &cfg(vec![US, THEM], vec![], 0)));
        assert!(!is_sole_verifier(US, &cfg(vec![US], vec![THEM], 1)));
        assert!(!is_sole_verifier(US, &cfg(vec![THEM], vec![], 0)));
    }

    #[tokio::test]
    async fn a_shared_read_is_sent_once_for_all_waiting_and_a_failed_one_is_not_kept() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let cache: Shared<u32, u64> = Shared::default();
        let reads = AtomicUsize::new(0);
        let (gate, opened) = tokio::sync::oneshot::channel::<()>();
        let opened = tokio::sync::Mutex::new(Some(opened));
        let read = || async {
            reads.fetch_add(1, Ordering::SeqCst);
            if let Some(opened) = opened.lock().await.take() {
                opened.await.ok();
            }
            Ok::<_, String>(7)
        };
        // Sixteen callers of one key while the first read is held open: one read for all.
        let callers = futures::future::join_all((0..16).map(|_| cache.get_or(1, read)));
        let (answers, ()) = tokio::join!(callers, async {
            tokio::task::yield_now().await;
            gate.send(()).ok();
        });
        assert!(answers.iter().all(|a| a == &Ok(7)));
        assert_eq!(reads.load(Ordering::SeqCst), 1);

        assert_eq!(
            cache.get_or(2, || async { Err("down".to_string()) }).await,
            Err("down".into())
        );
        assert_eq!(
            cache.get_or(2, || async { Ok::<_, String>(9) }).await,
            Ok(9)
        );
    }
}
