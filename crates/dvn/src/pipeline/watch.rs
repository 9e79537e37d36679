//! watch: scans one source chain for packets assigned to our DVN.
//!
//! Owns the chain's cursor (block number + hash). Each step: notice a reorg (the stored hash is
//! no longer canonical → rewind), read `PacketSent` and `DVNFeePaid` logs over a bounded range
//! that shrinks when the endpoint refuses it and grows back on success, pair them per
//! transaction with `dvn_lz`'s rule, keep the packets whose DVN lists hold our source DVN and
//! whose destination we serve, then store them and move the cursor in one transaction. The
//! cursor never passes a log that is not stored.
//!
//! Nonce continuity: every `PacketSent` of a path (ours or another DVN's) must carry the next
//! nonce after the highest seen, counted from the endpoint's `outboundNonce` just before the
//! scan origin. A jump means a log went missing (a faulty or lying endpoint): the step fails
//! without storing anything or moving the cursor, so nothing past the gap is ever signed, and
//! the range is read again.

use std::collections::BTreeMap;
use std::sync::Arc;

use alloy::primitives::{Address, B256};
use alloy::rpc::types::Log;
use alloy::sol_types::SolEvent;
use dvn_lz::contracts::{IEndpointV2, ISendUln302};
use dvn_lz::packets_in_transaction;

use super::{Context, Progress, Stage};
use crate::chain::EvmChain;
use crate::store::{NewPacket, Observed, PathKey};

/// How far back a reorg rewinds the cursor when the stored block hash is no longer canonical.
pub const REORG_REWIND_BLOCKS: u64 = 64;

/// The watch stage of one source chain.
#[derive(Debug)]
pub struct Watcher {
    ctx: Arc<Context>,
    eid: u32,
    /// Current `eth_getLogs` range; halves on failure, doubles back up to the configured max.
    range: u64,
}

impl Watcher {
    pub fn new(ctx: Arc<Context>, eid: u32) -> Self {
        let range = ctx.chains.get(&eid).map_or(1, |c| c.config.max_log_range);
        Self { ctx, eid, range }
    }

    async fn run_step(&mut self) -> anyhow::Result<Progress> {
        let ctx = Arc::clone(&self.ctx);
        let chain = ctx.chain(self.eid)?;
        let head = chain.head().await?;
        metrics::gauge!("dvn_chain_head", "chain" => chain.name().to_string()).set(head as f64);
        let cursor = self.ctx.store.cursor(self.eid).await?;
        let from = match cursor {
            Some((number, hash)) => {
                let (canonical, _) = chain.block(number).await?;
                if canonical != hash {
                    return self.rewind(number).await;
                }
                number + 1
            }
            None => chain.config.start_block,
        };
        if from > head {
            return Ok(Progress::Idle);
        }
        let to = head.min(from.saturating_add(self.range - 1));
        let max_range = chain.config.max_log_range;
        let logs = match chain
            .logs(
                from,
                to,
                &[chain.config.endpoint, chain.config.send_uln],
                &[
                    IEndpointV2::PacketSent::SIGNATURE_HASH,
                    ISendUln302::DVNFeePaid::SIGNATURE_HASH,
                ],
            )
            .await
        {
            Ok(logs) => {
                self.range = (self.range * 2).min(max_range);
                logs
            }
            Err(e) if self.range > 1 => {
                self.range = (self.range / 2).max(1);
                tracing::info!(
                    chain = chain.name(),
                    from,
                    to,
                    range = self.range,
                    "getLogs failed, shrinking range: {e}"
                );
                return Ok(Progress::Busy);
            }
            Err(e) => return Err(e.into()),
        };
        let (packets, path_nonces) = match self.assigned_packets(chain, logs).await? {
            Scan::Complete {
                packets,
                path_nonces,
            } => (packets, path_nonces),
            Scan::Gap {
                path,
                expected,
                found,
                block,
            } => {
                // A PacketSent log is missing from what the endpoints returned. Never store or
                // sign past it: keep the cursor, re-read (in smaller ranges), and page.
                metrics::counter!("dvn_nonce_gaps_total", "chain" => chain.name().to_string())
                    .increment(1);
                self.range = (self.range / 2).max(1);
                anyhow::bail!(
                    "nonce gap on path {}→{} sender {} receiver {}: expected nonce {expected}, found {found} at block {block}; \
                     a PacketSent log is missing: re-reading without moving the cursor",
                    path.src_eid, path.dst_eid, path.sender, path.receiver
                );
            }
        };
        let (to_hash, _) = chain.block(to).await?;
        let outcomes = self
            .ctx
            .store
            .record_scan(self.eid, &packets, &path_nonces, (to, to_hash))
            .await?;
        for (packet, outcome) in packets.iter().zip(&outcomes) {
            match outcome {
                Observed::New => {
                    metrics::counter!("dvn_packets_observed_total", "chain" => chain.name().to_string()).increment(1);
                    tracing::info!(guid = %packet.guid, nonce = packet.nonce, src = packet.src_eid, dst = packet.dst_eid, "packet observed");
                }
                Observed::Known => {}
                Observed::Replaced => {
                    tracing::warn!(guid = %packet.guid, "payload changed before signing (reorg): following the canonical one")
                }
                Observed::Conflict => {
                    metrics::counter!("dvn_equivocation_refused_total", "chain" => chain.name().to_string()).increment(1);
                    tracing::error!(guid = %packet.guid, "source shows a different payload for a nonce we already signed: path halted, page an operator");
                }
            }
        }
        metrics::gauge!("dvn_chain_cursor", "chain" => chain.name().to_string()).set(to as f64);
        if !packets.is_empty() {
            self.ctx.wake.sign.notify_one();
        }
        Ok(if to < head {
            Progress::Busy
        } else {
            Progress::Idle
        })
    }

    async fn rewind(&self, number: u64) -> anyhow::Result<Progress> {
        let chain = self.ctx.chain(self.eid)?;
        let back = number
            .saturating_sub(REORG_REWIND_BLOCKS)
            .max(chain.config.start_block);
        let (hash, _) = chain.block(back).await?;
        metrics::counter!("dvn_reorgs_detected_total", "chain" => chain.name().to_string())
            .increment(1);
        tracing::warn!(
            chain = chain.name(),
            from = number,
            to = back,
            "cursor block is no longer canonical: rewinding"
        );
        self.ctx.store.rewind_cursor(self.eid, (back, hash)).await?;
        Ok(Progress::Busy)
    }

    /// The nonce a path had before this node's scan origin: the continuity check's base.
    async fn path_base(&self, chain: &EvmChain, path: &PathKey) -> anyhow::Result<u64> {
        let origin = chain.config.start_block;
        if origin == 0 {
            return Ok(0);
        }
        let sender = Address::from_word(path.sender);
        let call = IEndpointV2::outboundNonceCall {
            sender,
            dstEid: path.dst_eid,
            receiver: path.receiver,
        };
        Ok(chain
            .call(chain.config.endpoint, &call, Some(origin - 1))
            .await?)
    }

    /// Checks per-path nonce continuity over every `PacketSent` (ours or not), pairs the logs
    /// per transaction and keeps what is ours.
    async fn assigned_packets(&self, chain: &EvmChain, logs: Vec<Log>) -> anyhow::Result<Scan> {
        let our_dvn: Address = chain.config.dvn;
        let mut by_tx: BTreeMap<(u64, u64, B256), Vec<Log>> = BTreeMap::new();
        for log in logs {
            let (Some(block), Some(tx_index), Some(tx)) = (
                log.block_number,
                log.transaction_index,
                log.transaction_hash,
            ) else {
                tracing::warn!(
                    chain = chain.name(),
                    "log without block/transaction position ignored"
                );
                continue;
            };
            by_tx.entry((block, tx_index, tx)).or_default().push(log);
        }
        let mut timestamps = BTreeMap::new();
        let mut out = Vec::new();
        let mut seen: BTreeMap<PathKey, u64> = BTreeMap::new();
        for ((block, _, tx_hash), mut tx_logs) in by_tx {
            tx_logs.sort_by_key(|l| l.log_index);
            let inner: Vec<_> = tx_logs.iter().map(|l| l.inner.clone()).collect();
            for found in packets_in_transaction(chain.config.endpoint, &inner) {
                let sent = match found {
                    Ok(sent) => sent,
                    Err(e) => {
                        metrics::counter!("dvn_bad_events_total", "chain" => chain.name().to_string()).increment(1);
                        tracing::warn!(chain = chain.name(), %tx_hash, "skipping unusable PacketSent: {e}");
                        continue;
                    }
                };
                let header = sent.packet.header;
                let path = PathKey {
                    src_eid: header.src_eid,
                    sender: header.sender,
                    dst_eid: header.dst_eid,
                    receiver: header.receiver,
                };
                let max = match seen.get(&path) {
                    Some(max) => *max,
                    None => match self.ctx.store.path_max_nonce(&path).await? {
                        Some(max) => max,
                        None => self.path_base(chain, &path).await?,
                    },
                };
                if header.nonce > max + 1 {
                    return Ok(Scan::Gap {
                        path,
                        expected: max + 1,
                        found: header.nonce,
                        block,
                    });
                }
                seen.insert(path, max.max(header.nonce));
                if !sent.is_assigned_to(our_dvn) {
                    continue;
                }
                if header.src_eid != chain.eid() {
                    tracing::warn!(chain = chain.name(), %tx_hash, src = header.src_eid, "packet claims another source eid: ignored");
                    continue;
                }
                if !self.ctx.chains.contains_key(&header.dst_eid) {
                    tracing::warn!(
                        chain = chain.name(),
                        dst = header.dst_eid,
                        "packet for a destination this node does not serve: ignored"
                    );
                    continue;
                }
                if sent.send_library != chain.config.send_uln {
                    tracing::warn!(chain = chain.name(), %tx_hash, lib = %sent.send_library, "packet from an unconfigured send library: ignored");
                    continue;
                }
                let log = &tx_logs[sent.log_position];
                let block_hash = log
                    .block_hash
                    .ok_or_else(|| anyhow::anyhow!("log without block hash"))?;
                let timestamp = match timestamps.get(&block) {
                    Some(t) => *t,
                    None => {
                        let (_, t) = chain.block(block).await?;
                        timestamps.insert(block, t);
                        t
                    }
                };
                out.push(NewPacket {
                    guid: sent.packet.guid,
                    src_eid: header.src_eid,
                    dst_eid: header.dst_eid,
                    sender: header.sender,
                    receiver: header.receiver,
                    nonce: header.nonce,
                    header: header.encode().to_vec(),
                    payload_hash: sent.packet.payload_hash(),
                    tx_hash,
                    block_number: block,
                    block_hash,
                    log_index: log.log_index.unwrap_or_default(),
                    block_timestamp: timestamp,
                });
            }
        }
        Ok(Scan::Complete {
            packets: out,
            path_nonces: seen.into_iter().collect(),
        })
    }
}

/// What one scanned range yielded.
enum Scan {
    Complete {
        packets: Vec<NewPacket>,
        path_nonces: Vec<(PathKey, u64)>,
    },
    Gap {
        path: PathKey,
        expected: u64,
        found: u64,
        block: u64,
    },
}

impl Stage for Watcher {
    async fn step(&mut self) -> anyhow::Result<Progress> {
        self.run_step().await
    }
}
