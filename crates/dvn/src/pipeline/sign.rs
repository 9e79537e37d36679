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
//! moves on: it never holds up the packets behind it. Paths with a halted equivocation guard
//! are not signed at all.
//! 3. **check** — skip what the destination no longer needs (our verification already there,
//!    or committed, or delivered);
//! 4. **sign** — the `verify` param with a deterministic expiration; the signature is stored
//!    before it is shared with the peers.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use alloy::primitives::{keccak256, Address, B256};
use dvn_lz::contracts::{IEndpointV2, IReceiveUln302, ISendUln302};
use dvn_lz::{packets_in_transaction, PacketHeader, UnsignedParam};

use super::expiration::expiration;
use super::{Context, Progress, Stage};
use crate::chain::EvmChain;
use crate::config::Finality;
use crate::store::{now_ms, NewPacket, PacketRow, PacketState, PathKey};

/// Most packets examined per step.
const BATCH: usize = 500;

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

/// Per-step caches: one head / finalized / latest-time read per chain, one `outboundNonce`
/// per path, one ULN config per (OApp, remote eid) on each side. A step lasts a moment, so a
/// config changed on chain is seen by the next step; only what changes per packet (its
/// receipt, its state on the destination) is read per packet.
#[derive(Default)]
struct Views {
    heads: HashMap<u32, u64>,
    finalized: HashMap<u32, u64>,
    outbound: HashMap<PathKey, u64>,
    latest_time: HashMap<u32, u64>,
    /// Receive-side configs on the destination, by (receiver, source eid).
    receive_cfgs: HashMap<(Address, u32), dvn_lz::contracts::UlnConfig>,
    /// Send-side confirmations on the source today, by (sender, destination eid).
    send_confirmations: HashMap<(Address, u32), u64>,
    lazy: LazyNonces,
}

#[derive(Debug)]
pub struct SignStage {
    ctx: Arc<Context>,
    governor: super::governor::Governor,
    /// The rules `governor` was built from (a reload replaces the context's).
    rules: crate::config::GovernorConfig,
}

impl SignStage {
    pub fn new(ctx: Arc<Context>) -> Self {
        let rules = ctx
            .governor
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let governor = super::governor::Governor::new(&ctx.config, &rules);
        Self {
            ctx,
            governor,
            rules,
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
        for row in &packets {
            if self.ctx.cancel.is_cancelled() {
                break;
            }
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
            if self.governor.over_rate(&path, std::time::Instant::now()) {
                rate_limited += 1;
                continue;
            }
            let outcome = self.process(row, &mut views).await;
            match outcome {
                Ok(Outcome::Waiting(_)) => {}
                Ok(Outcome::Signed) => {
                    self.governor.record(path, std::time::Instant::now());
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

    async fn process(&self, row: &PacketRow, views: &mut Views) -> anyhow::Result<Outcome> {
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
        let receive_cfg = match views.receive_cfgs.get(&(receiver, p.src_eid)) {
            Some(cfg) => cfg.clone(),
            None => {
                let cfg = dst
                    .call(
                        dst.config.receive_uln,
                        &IReceiveUln302::getUlnConfigCall {
                            oapp: receiver,
                            remoteEid: p.src_eid,
                        },
                        None,
                    )
                    .await?;
                views
                    .receive_cfgs
                    .insert((receiver, p.src_eid), cfg.clone());
                cfg
            }
        };
        let sole_verifier = is_sole_verifier(dvn.address, &receive_cfg);
        let send_cfg_call = ISendUln302::getUlnConfigCall {
            oapp: sender,
            remoteEid: p.dst_eid,
        };
        let send_confirmations = match views.send_confirmations.get(&(sender, p.dst_eid)) {
            Some(c) => *c,
            None => {
                let c = src
                    .call(src.config.send_uln, &send_cfg_call, None)
                    .await?
                    .confirmations;
                views.send_confirmations.insert((sender, p.dst_eid), c);
                c
            }
        };
        // The config in force at the send block counts too while the endpoints still hold that
        // state; once they have pruned it, today's is all there is (config changes are rare and
        // the destination's requirement, read above, is what the verification must meet).
        let send_cfg_then = src
            .call(src.config.send_uln, &send_cfg_call, Some(p.block_number))
            .await
            .map(|c| c.confirmations)
            .unwrap_or(0);
        let required = receive_cfg
            .confirmations
            .max(send_confirmations)
            .max(send_cfg_then)
            .max(1);
        let head = match views.heads.get(&p.src_eid) {
            Some(h) => *h,
            None => {
                let h = src.head().await?;
                views.heads.insert(p.src_eid, h);
                metrics::gauge!("dvn_confirm_head", "chain" => src.name().to_string())
                    .set(h as f64);
                h
            }
        };
        let depth = (head + 1).saturating_sub(p.block_number);
        if depth < required {
            return Ok(Outcome::Waiting("confirmations"));
        }
        if src.config.finality != Finality::Confirmations {
            let finalized = match views.finalized.get(&p.src_eid) {
                Some(f) => *f,
                None => {
                    let f = match src.config.finality {
                        Finality::Safe => src.safe().await?,
                        _ => src.finalized().await?,
                    };
                    views.finalized.insert(p.src_eid, f);
                    f
                }
            };
            if p.block_number > finalized {
                return Ok(Outcome::Waiting("finality"));
            }
        }

        // 2. canonical re-read
        if let Some(reason) = canonical_problem(src, p).await? {
            return Ok(Outcome::Done(PacketState::Orphaned, reason));
        }
        let path = p.path();
        let sent = match views.outbound.get(&path) {
            Some(n) if *n >= p.nonce => *n,
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
                views.outbound.insert(path, n);
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

        // 3. check the destination
        if let Some((state, why)) = destination_done_in(
            dst,
            dvn.address,
            &header,
            p.payload_hash,
            required,
            &mut views.lazy,
        )
        .await?
        {
            return Ok(Outcome::Done(state, why));
        }

        // 4. sign
        let now = match views.latest_time.get(&p.dst_eid) {
            Some(t) => *t,
            None => {
                let t = dst.latest_timestamp().await?;
                views.latest_time.insert(p.dst_eid, t);
                t
            }
        };
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
        let recorded = self
            .ctx
            .store
            .record_own_signature(
                row.expect(),
                required,
                expires,
                call_hash,
                key.address(),
                &signature.as_bytes(),
            )
            .await?;
        if !recorded {
            // The watcher re-observed or replaced the packet while we checked it: this
            // signature is over a stale snapshot and is dropped; the next step starts afresh.
            return Ok(Outcome::Waiting("moved while being signed"));
        }
        metrics::counter!("dvn_packets_signed_total", "chain" => dst.name().to_string())
            .increment(1);
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
}

/// `Some(reason)` when the packet's source transaction is no longer canonical as stored.
pub async fn canonical_problem(src: &EvmChain, p: &NewPacket) -> anyhow::Result<Option<String>> {
    let Some(receipt) = src.receipt(p.tx_hash).await? else {
        return Ok(Some(
            "source transaction no longer on the canonical chain".into(),
        ));
    };
    if receipt.block_hash != Some(p.block_hash) {
        return Ok(Some(
            "source transaction moved to another block (reorg)".into(),
        ));
    }
    let (canonical, _) = src.block(p.block_number).await?;
    if canonical != p.block_hash {
        return Ok(Some("source block is no longer canonical".into()));
    }
    let logs: Vec<_> = receipt
        .inner
        .logs()
        .iter()
        .map(|l| l.inner.clone())
        .collect();
    let still_there = packets_in_transaction(src.config.endpoint, &logs)
        .into_iter()
        .flatten()
        .any(|sent| {
            sent.packet.guid == p.guid
                && sent.packet.payload_hash() == p.payload_hash
                && sent.is_assigned_to(src.config.dvn)
                && sent.send_library == src.config.send_uln
        });
    Ok((!still_there).then(|| "the receipt no longer holds this packet for our DVN".into()))
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
pub async fn destination_done(
    dst: &EvmChain,
    dvn: Address,
    header: &PacketHeader,
    payload_hash: alloy::primitives::B256,
    required: u64,
) -> anyhow::Result<Option<(PacketState, String)>> {
    destination_done_in(
        dst,
        dvn,
        header,
        payload_hash,
        required,
        &mut LazyNonces::new(),
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
    lazy: &mut LazyNonces,
) -> anyhow::Result<Option<(PacketState, String)>> {
    let header_hash = keccak256(header.encode());
    let ours = dst
        .call(
            dst.config.receive_uln,
            &IReceiveUln302::hashLookupCall {
                headerHash: header_hash,
                payloadHash: payload_hash,
                dvn,
            },
            None,
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
            None,
        )
        .await?;
    if stored == payload_hash {
        return Ok(Some((
            PacketState::Skipped,
            "already committed on the destination".into(),
        )));
    }
    let key = (receiver, header.src_eid, header.sender);
    let lazy = match lazy.get(&key) {
        Some(n) => *n,
        None => {
            let n = dst
                .call(
                    dst.config.endpoint,
                    &IEndpointV2::lazyInboundNonceCall {
                        receiver,
                        srcEid: header.src_eid,
                        sender: header.sender,
                    },
                    None,
                )
                .await?;
            lazy.insert(key, n);
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

    #[test]
    fn only_a_lone_required_us_is_a_sole_verifier() {
        assert!(is_sole_verifier(US, &cfg(vec![US], vec![], 0)));
        assert!(!is_sole_verifier(US, &cfg(vec![US, THEM], vec![], 0)));
        assert!(!is_sole_verifier(US, &cfg(vec![US], vec![THEM], 1)));
        assert!(!is_sole_verifier(US, &cfg(vec![THEM], vec![], 0)));
    }
}
