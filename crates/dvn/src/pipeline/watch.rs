//! watch: scans one source chain for packets assigned to our DVN.
//!
//! Owns the chain's cursor (block number + hash). Each step: notice a reorg (the stored hash is
//! no longer canonical → rewind), read `PacketSent` and `DVNFeePaid` logs over a bounded range
//! that shrinks when the endpoint refuses it and grows back on success, pair them per
//! transaction with `dvn_lz`'s rule, keep the packets whose DVN lists hold our source DVN and
//! whose destination we serve, then store them and move the cursor in one transaction. The
//! cursor never passes a log that is not stored.
//!
//! Nonce continuity: every `PacketSent` of a path (ours or another DVN's, through any send
//! library, counted before and independent of pairing with a fee event) must carry the next
//! nonce after the highest seen, counted from the endpoint's `outboundNonce` just before the
//! scan origin. A jump means a log went missing (a faulty or lying endpoint): the step fails
//! without storing anything or moving the cursor, so nothing past the gap is ever signed, and
//! the range is read again.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use alloy::primitives::{Address, B256};
use alloy::rpc::types::Log;
use alloy::sol_types::SolEvent;
use dvn_lz::contracts::{IEndpointV2, ISendUln302};
use dvn_lz::{packets_in_transaction, sent_packets, AssignmentError};

use super::{Context, Progress, Stage};
use crate::chain::EvmChain;
use crate::store::{NewPacket, Observed, PathKey};
use crate::telemetry::PacketStage;

/// The watch stage of one source chain.
#[derive(Debug)]
pub struct Watcher {
    ctx: Arc<Context>,
    eid: u32,
    /// Current `eth_getLogs` range; halves on failure, doubles back up to the configured max.
    range: u64,
    /// The gap being recovered: path, the missing nonce, since when.
    gap: Option<(PathKey, u64, Instant)>,
    /// The scan is halted by a reorg deeper than the limit and that is in the audit log (one
    /// record per halt, not one per retried step).
    deep_reorg_audited: bool,
    /// The last step found nothing more to read (or failed): the next one reads a fresh head.
    caught_up: bool,
}

/// How far back a gap's recovery scans again by itself; beyond, `dvn rescan` is the tool.
const GAP_RESCAN_BLOCKS: u64 = 50_000;

impl Watcher {
    pub fn new(ctx: Arc<Context>, eid: u32) -> Self {
        let range = ctx.chains.get(&eid).map_or(1, |c| c.config.max_log_range);
        Self {
            ctx,
            eid,
            range,
            gap: None,
            deep_reorg_audited: false,
            caught_up: true,
        }
    }

    async fn run_step(&mut self) -> anyhow::Result<Progress> {
        let ctx = Arc::clone(&self.ctx);
        let chain = ctx.chain(self.eid)?;
        // After an idle wait, a fresh head: one another stage read up to `RECENT_READ` ago would
        // add its age to every new packet's time to be seen, on top of the poll interval. While
        // catching up (steps back to back), a moment-old head is as good and saves the reads.
        let head = if self.caught_up {
            chain.head().await?
        } else {
            chain.recent_head().await?
        };
        metrics::gauge!("dvn_chain_head", "chain" => chain.name().to_string()).set(head as f64);
        let cursor = self.ctx.store.cursor(self.eid).await?;
        let from = match cursor {
            Some((number, hash)) => {
                // Gone (the chain was rolled back below it) or replaced: a reorg.
                match chain.block_opt(number).await? {
                    Some((canonical, _)) if canonical == hash => {
                        metrics::gauge!("dvn_reorg_too_deep", "chain" => chain.name().to_string())
                            .set(0.0);
                    }
                    _ => return self.rewind(number).await,
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
            // As many logs as the provider's cap: a provider that truncates silently (Conflux
            // before v2.0.1 did) looks exactly like this. Never trust it: split the range.
            Ok(logs) if logs.len() as u64 >= chain.config.max_logs_per_request => {
                anyhow::ensure!(
                    self.range > 1,
                    "{}: block {from} alone returned {} logs, the provider's cap: cannot tell whether it truncated",
                    chain.name(),
                    logs.len()
                );
                self.range = (self.range / 2).max(1);
                tracing::info!(
                    chain = chain.name(),
                    from,
                    to,
                    logs = logs.len(),
                    "getLogs answer at the result cap: splitting the range"
                );
                return Ok(Progress::Busy);
            }
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
            } => return self.on_gap(from, path, expected, found, block).await,
        };
        if self.gap.take().is_some() {
            metrics::gauge!("dvn_nonce_gap_seconds", "chain" => chain.name().to_string()).set(0.0);
            tracing::info!(
                chain = chain.name(),
                "nonce gap closed: the missing log was found"
            );
        }
        let (to_hash, _) = chain.block(to).await?;
        let (outcomes, _) = self
            .ctx
            .store
            .record_scan_from(
                self.eid,
                Some(cursor),
                &packets,
                &path_nonces,
                (to, to_hash),
            )
            .await?;
        for (packet, outcome) in packets.iter().zip(&outcomes) {
            match outcome {
                Observed::New => {
                    let block_ms = i64::try_from(packet.block_timestamp.saturating_mul(1000))
                        .unwrap_or(i64::MAX);
                    PacketStage::Observe.reached(block_ms);
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
                    let path = crate::store::PauseScope::Path(packet.path()).key();
                    self.ctx
                        .store
                        .audit_node_event(
                            "guard.path_halted",
                            &path,
                            serde_json::json!({ "guid": packet.guid, "nonce": packet.nonce }),
                        )
                        .await;
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

    /// The stored cursor is no longer canonical: walk back through the scan checkpoints to the
    /// newest block whose stored hash is still canonical (the common ancestor) and resume
    /// there. Packets seen on the abandoned branch are re-checked by the sign stage (orphaned,
    /// re-observed or, for a different payload at a signed nonce, a halted path). A reorg
    /// deeper than `max_reorg_depth` is an incident: the scan stops and pages until an operator
    /// has looked (`dvn rescan`).
    async fn rewind(&mut self, number: u64) -> anyhow::Result<Progress> {
        let chain = self.ctx.chain(self.eid)?;
        let name = chain.name().to_string();
        let floor = number
            .saturating_sub(chain.config.max_reorg_depth)
            .max(chain.config.start_block);
        let checkpoints = self.ctx.store.checkpoints(self.eid, number, 4_096).await?;
        let legacy = checkpoints.is_empty();
        // Checkpoints are where scan steps ended: dense while caught up, sparse after a long
        // catch-up. The reorg is *proven* deeper than allowed only when a checkpoint below the
        // floor has changed too; a canonical checkpoint below the floor with none changed
        // there is a safe (if early) place to resume.
        let mut ancestor = None;
        let mut deepest_changed = None;
        for (at, hash) in checkpoints {
            if chain.block_opt(at).await?.map(|(h, _)| h) == Some(hash) {
                ancestor = Some((at, hash));
                break;
            }
            deepest_changed = Some(at);
            if at < floor {
                break;
            }
        }
        let too_deep = deepest_changed.is_some_and(|at| at < floor);
        let ancestor = match ancestor {
            Some(found) if !too_deep => found,
            // Back to where scanning began: nothing before it was ever read.
            None if !too_deep && floor == chain.config.start_block => {
                let at = chain.config.start_block.saturating_sub(1);
                (at, chain.block(at).await?.0)
            }
            // A store from before checkpoints were kept: rewind the full allowed depth.
            None if legacy => (floor, chain.block(floor).await?.0),
            _ => {
                metrics::gauge!("dvn_reorg_too_deep", "chain" => name.clone()).set(1.0);
                if !self.deep_reorg_audited {
                    self.ctx
                        .store
                        .audit_node_event(
                            "guard.reorg_too_deep",
                            &format!("chain:{name}"),
                            serde_json::json!({ "below_block": number, "max_reorg_depth": chain.config.max_reorg_depth }),
                        )
                        .await;
                    self.deep_reorg_audited = true;
                }
                anyhow::bail!(
                    "{name}: reorg deeper than max_reorg_depth ({}) below block {number}: scanning halted; \
                     investigate, then `dvn rescan --chain {name} --from BLOCK` to resume",
                    chain.config.max_reorg_depth
                );
            }
        };
        metrics::counter!("dvn_reorgs_detected_total", "chain" => name.clone()).increment(1);
        metrics::gauge!("dvn_reorg_too_deep", "chain" => name.clone()).set(0.0);
        self.deep_reorg_audited = false;
        tracing::warn!(
            chain = %name,
            cursor = number,
            ancestor = ancestor.0,
            depth = number - ancestor.0,
            "cursor block is no longer canonical: rewinding to the common ancestor"
        );
        self.ctx.store.rewind_cursor(self.eid, ancestor).await?;
        Ok(Progress::Busy)
    }

    /// A `PacketSent` log is missing from what the endpoints returned. Never store or sign past
    /// it. The missing log may lie in this range (re-read it, in smaller ranges) or before it: a
    /// provider dropped the *last* log of an earlier scan and the cursor moved on, so the gap
    /// only shows now. Then scan again from the block of the path's last known nonce (bounded).
    /// A gap that persists shows in `dvn_nonce_gap_seconds` (paged after 5 minutes).
    async fn on_gap(
        &mut self,
        from: u64,
        path: PathKey,
        expected: u64,
        found: u64,
        block: u64,
    ) -> anyhow::Result<Progress> {
        let chain = self.ctx.chain(self.eid)?;
        let name = chain.name().to_string();
        let since = match self.gap {
            Some((p, n, since)) if p == path && n == expected => since,
            _ => {
                metrics::counter!("dvn_nonce_gaps_total", "chain" => name.clone()).increment(1);
                let now = Instant::now();
                self.gap = Some((path, expected, now));
                now
            }
        };
        metrics::gauge!("dvn_nonce_gap_seconds", "chain" => name.clone())
            .set(since.elapsed().as_secs_f64());
        self.range = (self.range / 2).max(1);
        let last_seen = self
            .ctx
            .store
            .path_max_nonce(&path)
            .await?
            .and_then(|(_, block)| block);
        let back = match last_seen {
            Some(b) if b < from && from - b <= GAP_RESCAN_BLOCKS => {
                let to = b
                    .saturating_sub(1)
                    .max(chain.config.start_block.saturating_sub(1));
                let (hash, _) = chain.block(to).await?;
                self.ctx.store.rewind_cursor(self.eid, (to, hash)).await?;
                format!(
                    "scanning again from block {b}, where nonce {} was seen",
                    expected - 1
                )
            }
            _ => "re-reading without moving the cursor".to_string(),
        };
        anyhow::bail!(
            "nonce gap on path {}→{} sender {} receiver {}: expected nonce {expected}, found {found} at block {block}; \
             a PacketSent log is missing: {back}",
            path.src_eid,
            path.dst_eid,
            path.sender,
            path.receiver
        );
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
        chain
            .call(chain.config.endpoint, &call, Some(origin - 1))
            .await
            .map_err(|e| {
                anyhow::anyhow!(
                    "reading the nonce-continuity base of path {}→{} at start_block − 1 = {} failed \
                     (move chains.{}.start_block into the RPC endpoints' state window, or use archive endpoints): {e}",
                    path.src_eid,
                    path.dst_eid,
                    origin - 1,
                    chain.name()
                )
            })
    }

    /// Checks per-path nonce continuity over every `PacketSent` (ours or not), pairs the logs
    /// per transaction and keeps what is ours.
    async fn assigned_packets(&self, chain: &EvmChain, logs: Vec<Log>) -> anyhow::Result<Scan> {
        let our_dvn: Address = chain.config.dvn;
        // Group per transaction, in chain order: (block, first log index). The log index is
        // block-wide, so this needs no `transactionIndex`, which not every provider fills in.
        let mut by_tx: BTreeMap<(u64, B256), Vec<Log>> = BTreeMap::new();
        for log in logs {
            let (Some(block), Some(tx), Some(_)) =
                (log.block_number, log.transaction_hash, log.log_index)
            else {
                // Never skipped silently: the agreed answer lacks what the node needs to place
                // the log, so the range is read again rather than passed.
                anyhow::bail!(
                    "{}: a log without block number, transaction hash or log index",
                    chain.name()
                );
            };
            by_tx.entry((block, tx)).or_default().push(log);
        }
        let mut ordered: Vec<((u64, B256), Vec<Log>)> = by_tx.into_iter().collect();
        for (_, tx_logs) in &mut ordered {
            tx_logs.sort_by_key(|l| l.log_index);
        }
        ordered.sort_by_key(|((block, _), tx_logs)| {
            (*block, tx_logs.first().and_then(|l| l.log_index))
        });
        let mut timestamps = BTreeMap::new();
        let mut out = Vec::new();
        // Per path: the highest nonce so far and the block it was seen in.
        let mut seen: BTreeMap<PathKey, (u64, u64)> = BTreeMap::new();
        for ((block, tx_hash), tx_logs) in ordered {
            let inner: Vec<_> = tx_logs.iter().map(|l| l.inner.clone()).collect();
            // First count every PacketSent the endpoint emitted — through any send library,
            // paired with a fee event or not, ours or another DVN's — so that a send we do not
            // verify can never look like a gap in the path's nonces.
            for found in sent_packets(chain.config.endpoint, &inner) {
                let header = match found {
                    Ok(packet) => packet.header,
                    Err(e) => {
                        metrics::counter!("dvn_bad_events_total", "chain" => chain.name().to_string()).increment(1);
                        tracing::warn!(chain = chain.name(), %tx_hash, "undecodable PacketSent (its nonce cannot be counted): {e}");
                        continue;
                    }
                };
                let path = PathKey {
                    src_eid: header.src_eid,
                    sender: header.sender,
                    dst_eid: header.dst_eid,
                    receiver: header.receiver,
                };
                let max = match seen.get(&path) {
                    Some((max, _)) => *max,
                    None => match self.ctx.store.path_max_nonce(&path).await? {
                        Some((max, _)) => max,
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
                if header.nonce > max || !seen.contains_key(&path) {
                    seen.insert(path, (max.max(header.nonce), block));
                }
            }
            // Then keep what is ours: paired with a DVNFeePaid naming our DVN.
            for found in packets_in_transaction(chain.config.endpoint, &inner) {
                let sent = match found {
                    Ok(sent) => sent,
                    // Another library's send (no DVNFeePaid of its own): not ours to verify.
                    Err(e @ AssignmentError::NoFeeEvent { .. }) => {
                        tracing::debug!(chain = chain.name(), %tx_hash, "PacketSent not paired with a fee event, not ours: {e}");
                        continue;
                    }
                    // Already counted and reported above.
                    Err(_) => continue,
                };
                let header = sent.packet.header;
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
                // The log's own block time when the endpoints agree on it; else one read
                // per block.
                let timestamp = match log.block_timestamp.or(timestamps.get(&block).copied()) {
                    Some(t) => t,
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
            path_nonces: seen
                .into_iter()
                .map(|(path, (nonce, block))| (path, nonce, block))
                .collect(),
        })
    }
}

/// What one scanned range yielded.
enum Scan {
    Complete {
        packets: Vec<NewPacket>,
        path_nonces: Vec<(PathKey, u64, u64)>,
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
        let progress = self.run_step().await;
        self.caught_up = !matches!(progress, Ok(Progress::Busy));
        progress
    }

    /// Caught up: look for new blocks again after the chain's `poll_interval_ms`.
    fn idle_wait(&self) -> Option<Duration> {
        self.ctx
            .chains
            .get(&self.eid)
            .map(|c| Duration::from_millis(c.config.poll_interval_ms))
    }
}
