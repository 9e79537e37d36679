//! Steady offered load for the benchmark: messages sent at a fixed rate to running nodes, and
//! each one's latency from its required confirmation to our DVN's `PayloadVerified`, as the
//! harness sees them.
//!
//! The devnet's paths need one confirmation, so a packet's clock starts when its block is
//! there. The source chain makes blocks in one of two ways ([`SourceBlocks`]): a block per
//! transaction, where a send's receipt is its required confirmation and any rate can be
//! offered; or a block every interval, as a live chain does, where sends wait in the pool and
//! a packet is confirmed when the harness sees its block (read every [`POLL`]). The
//! destination must produce blocks by itself (interval mining: see
//! [`crate::Chain::set_interval_mining`]). Its clock stops when the harness first sees our
//! DVN's `PayloadVerified` for it in the destination's logs: the harness reads the head every [`POLL`] and the logs only
//! when a block was added (one `eth_getLogs` per destination block), so it does not load the
//! chain it measures, and a verification is seen at most [`POLL`] after its block.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use alloy::primitives::{keccak256, TxHash, B256};
use alloy::rpc::types::TransactionReceipt;
use alloy::sol_types::SolEvent;
use dvn_lz::contracts::IReceiveUln302;
use dvn_lz::SentPacket;

use futures::stream::{FuturesUnordered, StreamExt};

use crate::devnet::USER_LANES;
use crate::{Devnet, Direction};

/// How often the harness looks for new verifications (the latency figures' resolution).
pub const POLL: Duration = Duration::from_millis(10);

/// How the source chain makes blocks while load is offered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceBlocks {
    /// A block per transaction (automine): 50 packets a second are 50 one-packet blocks,
    /// each of which wakes the nodes' watchers.
    PerSend,
    /// A block every interval, set on the chain beforehand (see
    /// [`crate::Chain::set_interval_mining`]): the packets of an interval arrive together.
    Interval,
}

/// What a run of steady load saw.
#[derive(Debug)]
pub struct LoadRun {
    pub packets: Vec<SentPacket>,
    /// How long sending took, and so the rate actually offered.
    pub sending: Duration,
    /// Each packet's time from its required confirmation to its verification seen, in send
    /// order (every packet is verified when [`offer`] returns).
    pub latencies: Vec<Duration>,
    /// When each packet was confirmed, from the start of sending, in send order.
    pub confirmed_after: Vec<Duration>,
}

impl LoadRun {
    pub fn offered_per_sec(&self) -> f64 {
        self.packets.len() as f64 / self.sending.as_secs_f64().max(1e-9)
    }

    /// Packets verified per second: all of them over the time from the first confirmation to
    /// the last verification (below the offered rate when the nodes fall behind).
    pub fn verified_per_sec(&self) -> f64 {
        let first = self
            .confirmed_after
            .iter()
            .min()
            .copied()
            .unwrap_or_default();
        let last = self
            .confirmed_after
            .iter()
            .zip(&self.latencies)
            .map(|(at, latency)| *at + *latency)
            .max()
            .unwrap_or_default();
        self.packets.len() as f64 / last.saturating_sub(first).as_secs_f64().max(1e-9)
    }

    /// The `q`-quantile (0–1) latency, nearest rank.
    pub fn latency_quantile(&self, q: f64) -> Duration {
        quantile(&self.latencies, q)
    }

    /// The latencies of the packets confirmed `warmup` or later after sending began: the
    /// nodes have learned what they learn at first (gas per batch shape, the destination's
    /// block cadence, the lead a batch needs) and run as they would for hours.
    pub fn latencies_after(&self, warmup: Duration) -> Vec<Duration> {
        self.latencies
            .iter()
            .zip(&self.confirmed_after)
            .filter(|(_, at)| **at >= warmup)
            .map(|(latency, _)| *latency)
            .collect()
    }
}

/// Nearest-rank quantile of `values` (zero when empty).
pub fn quantile(values: &[Duration], q: f64) -> Duration {
    let mut sorted = values.to_vec();
    sorted.sort();
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = (q.clamp(0.0, 1.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

#[derive(Default)]
struct Seen {
    /// (header hash, payload hash) → when its required confirmation was reached.
    confirmed: HashMap<(B256, B256), Instant>,
    /// (header hash, payload hash) → when our verification was first seen.
    verified: HashMap<(B256, B256), Instant>,
}

/// Sends one message every `1 / rate` seconds for `duration`, from up to [`USER_LANES`]
/// accounts at once (when all are busy the next send waits: the rate offered is reported, not
/// assumed), while watching the destination for our DVN's verifications; returns when every
/// packet is verified, or fails after `timeout` from the last send.
pub async fn offer(
    devnet: &Devnet,
    direction: Direction,
    source: SourceBlocks,
    rate: f64,
    duration: Duration,
    timeout: Duration,
) -> anyhow::Result<LoadRun> {
    anyhow::ensure!(rate > 0.0, "the offered rate must be positive");
    let seen = Mutex::new(Seen::default());
    let sending_done = AtomicBool::new(false);
    let send = async {
        let sent = match source {
            SourceBlocks::PerSend => send_at_rate(devnet, direction, rate, duration, &seen).await,
            SourceBlocks::Interval => {
                submit_at_rate(devnet, direction, rate, duration, &seen).await
            }
        };
        sending_done.store(true, Ordering::SeqCst);
        sent
    };
    let watch = async {
        let (_, dst) = devnet.sides(direction);
        let mut from = dst.chain.head().await? + 1;
        let mut last_send_seen: Option<Instant> = None;
        loop {
            let head = dst.chain.head().await?;
            if head >= from {
                let logs = dst
                    .chain
                    .logs_in(
                        dst.contracts.receive_lib,
                        IReceiveUln302::PayloadVerified::SIGNATURE_HASH,
                        from,
                        Some(head),
                    )
                    .await?;
                from = head + 1;
                let now = Instant::now();
                let mut seen = seen.lock().unwrap_or_else(|e| e.into_inner());
                for log in logs {
                    let event = IReceiveUln302::PayloadVerified::decode_log_data(&log.inner.data)?;
                    if event.dvn == dst.contracts.dvn {
                        seen.verified
                            .entry((keccak256(&event.header), event.proofHash))
                            .or_insert(now);
                    }
                }
            }
            if sending_done.load(Ordering::SeqCst) {
                let at = *last_send_seen.get_or_insert_with(Instant::now);
                let seen = seen.lock().unwrap_or_else(|e| e.into_inner());
                if seen.confirmed.keys().all(|k| seen.verified.contains_key(k)) {
                    return Ok::<(), anyhow::Error>(());
                }
                anyhow::ensure!(
                    at.elapsed() < timeout,
                    "{} packets not verified {timeout:?} after the last send",
                    seen.confirmed
                        .keys()
                        .filter(|k| !seen.verified.contains_key(*k))
                        .count()
                );
            }
            tokio::time::sleep(POLL).await;
        }
    };
    let (sent, watched) = tokio::join!(send, watch);
    let (packets, confirmed_after, sending) = sent?;
    watched?;
    let seen = seen.into_inner().unwrap_or_else(|e| e.into_inner());
    let latencies = packets
        .iter()
        .map(|p| {
            let k = key(p);
            match (seen.confirmed.get(&k), seen.verified.get(&k)) {
                (Some(c), Some(v)) => v.saturating_duration_since(*c),
                _ => Duration::ZERO,
            }
        })
        .collect();
    Ok(LoadRun {
        packets,
        sending,
        latencies,
        confirmed_after,
    })
}

/// The sending half of [`offer`]: returns the packets in the order their sends began, when
/// each was confirmed (from the start), and how long sending took.
async fn send_at_rate(
    devnet: &Devnet,
    direction: Direction,
    rate: f64,
    duration: Duration,
    seen: &Mutex<Seen>,
) -> anyhow::Result<(Vec<SentPacket>, Vec<Duration>, Duration)> {
    let started = Instant::now();
    // (order the send began, its packets, confirmed after)
    let mut done: Vec<(usize, Vec<SentPacket>, Duration)> = Vec::new();
    let sending = on_lanes_at_rate(
        started,
        rate,
        duration,
        |lane| async move {
            let sent = devnet.send_message_on_lane(direction, lane).await;
            (sent, Instant::now())
        },
        |order, (sent, at)| {
            let sent = sent?;
            let mut seen = seen.lock().unwrap_or_else(|e| e.into_inner());
            for p in &sent {
                seen.confirmed.insert(key(p), at);
            }
            done.push((order, sent, at.saturating_duration_since(started)));
            Ok(())
        },
    )
    .await?;
    let (packets, confirmed_after) = in_send_order(done);
    Ok((packets, confirmed_after, sending))
}

/// Starts `send(lane)` once every `1 / rate` seconds from `started` until `duration` has
/// passed, on whichever of the [`USER_LANES`] lanes is idle (a lane is busy until its send
/// returns; when all are, the next send waits), and hands each outcome to `done` with the
/// order its send began. Returns how long sending took.
async fn on_lanes_at_rate<T, Fut>(
    started: Instant,
    rate: f64,
    duration: Duration,
    send: impl Fn(usize) -> Fut,
    mut done: impl FnMut(usize, T) -> anyhow::Result<()>,
) -> anyhow::Result<Duration>
where
    Fut: std::future::Future<Output = T>,
{
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut idle_lanes: Vec<usize> = (0..USER_LANES).rev().collect();
    let mut running = FuturesUnordered::new();
    let mut began = 0;
    loop {
        let more = started.elapsed() < duration;
        if !more && running.is_empty() {
            break;
        }
        tokio::select! {
            _ = tick.tick(), if more && !idle_lanes.is_empty() => {
                if started.elapsed() >= duration {
                    continue;
                }
                let Some(lane) = idle_lanes.pop() else {
                    continue;
                };
                let order = began;
                began += 1;
                let sent = send(lane);
                running.push(async move { (lane, order, sent.await) });
            }
            Some((lane, order, outcome)) = running.next() => {
                idle_lanes.push(lane);
                done(order, outcome)?;
            }
        }
    }
    Ok(started.elapsed())
}

/// Each send's packets in the order the sends began, and beside each packet when it was
/// confirmed (from the start of sending).
fn in_send_order(
    mut done: Vec<(usize, Vec<SentPacket>, Duration)>,
) -> (Vec<SentPacket>, Vec<Duration>) {
    done.sort_by_key(|(order, _, _)| *order);
    let mut packets = Vec::new();
    let mut confirmed_after = Vec::new();
    for (_, sent, after) in done {
        confirmed_after.extend(std::iter::repeat_n(after, sent.len()));
        packets.extend(sent);
    }
    (packets, confirmed_after)
}

/// The sending half of [`offer`] on an interval-mined source: each lane hands its messages to
/// the pool one after another without waiting for their block, and a packet counts as
/// confirmed when the harness first sees the block holding it. Returns what
/// [`send_at_rate`] does.
async fn submit_at_rate(
    devnet: &Devnet,
    direction: Direction,
    rate: f64,
    duration: Duration,
    seen: &Mutex<Seen>,
) -> anyhow::Result<(Vec<SentPacket>, Vec<Duration>, Duration)> {
    let (src, _) = devnet.sides(direction);
    let started = Instant::now();
    let mut next_block = src.chain.head().await? + 1;
    let matcher = Mutex::new(Matcher::<TransactionReceipt>::default());
    let submitting_done = AtomicBool::new(false);
    // (order the send began, its packets, confirmed after)
    let confirmed = Mutex::new(Vec::<(usize, Vec<SentPacket>, Duration)>::new());
    let take = |found: Vec<(usize, TransactionReceipt, Instant)>| -> anyhow::Result<()> {
        for (order, receipt, at) in found {
            anyhow::ensure!(
                receipt.status(),
                "send {} reverted",
                receipt.transaction_hash
            );
            let packets = devnet.packets_in_receipt(src, &receipt)?;
            let mut seen = seen.lock().unwrap_or_else(|e| e.into_inner());
            for p in &packets {
                seen.confirmed.insert(key(p), at);
            }
            confirmed.lock().unwrap_or_else(|e| e.into_inner()).push((
                order,
                packets,
                at.saturating_duration_since(started),
            ));
        }
        Ok(())
    };
    let submit = async {
        let sending = on_lanes_at_rate(
            started,
            rate,
            duration,
            |lane| devnet.submit_message_on_lane(direction, lane),
            |order, hash| {
                let found = matcher
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .submitted(hash?, order);
                take(found.into_iter().collect())
            },
        )
        .await;
        submitting_done.store(true, Ordering::SeqCst);
        sending
    };
    let confirm = async {
        let mut done_at: Option<Instant> = None;
        loop {
            let head = src.chain.head().await?;
            while next_block <= head {
                let receipts = src
                    .chain
                    .block_receipts(next_block)
                    .await?
                    .ok_or_else(|| anyhow::anyhow!("block {next_block} has no receipts"))?;
                let at = Instant::now();
                let found = {
                    let mut matcher = matcher.lock().unwrap_or_else(|e| e.into_inner());
                    receipts
                        .into_iter()
                        .flat_map(|r| matcher.mined(r.transaction_hash, r, at))
                        .collect()
                };
                take(found)?;
                next_block += 1;
            }
            if submitting_done.load(Ordering::SeqCst) {
                if matcher
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .unmatched_sends
                    .is_empty()
                {
                    return Ok::<_, anyhow::Error>(());
                }
                let since = *done_at.get_or_insert_with(Instant::now);
                anyhow::ensure!(
                    since.elapsed() < RECEIPT_WAIT,
                    "sends not mined {RECEIPT_WAIT:?} after the last one"
                );
            }
            tokio::time::sleep(POLL).await;
        }
    };
    let (sending, confirmed_all) = tokio::join!(submit, confirm);
    let sending = sending?;
    confirmed_all?;
    let done = confirmed.into_inner().unwrap_or_else(|e| e.into_inner());
    let (packets, confirmed_after) = in_send_order(done);
    Ok((packets, confirmed_after, sending))
}

/// Longest an interval-mined source may take to mine the last send.
const RECEIPT_WAIT: Duration = Duration::from_secs(60);

/// Pairs sends with their mined receipts (`R`), whichever the harness learns of first: a block
/// can be seen before the lane that sent into it has its hash back.
struct Matcher<R> {
    /// Hash → order of the send, for sends whose block was not seen yet.
    unmatched_sends: HashMap<TxHash, usize>,
    /// Hash → receipt and when its block was seen, for mined transactions no send claimed
    /// yet.
    unclaimed_receipts: HashMap<TxHash, (R, Instant)>,
}

impl<R> Default for Matcher<R> {
    fn default() -> Self {
        Self {
            unmatched_sends: HashMap::new(),
            unclaimed_receipts: HashMap::new(),
        }
    }
}

impl<R> Matcher<R> {
    /// Send number `order` got `hash` back: its receipt, when its block was seen already.
    fn submitted(&mut self, hash: TxHash, order: usize) -> Option<(usize, R, Instant)> {
        match self.unclaimed_receipts.remove(&hash) {
            Some((receipt, at)) => Some((order, receipt, at)),
            None => {
                self.unmatched_sends.insert(hash, order);
                None
            }
        }
    }

    /// Transaction `hash` was mined in a block seen `at`: its send, when that was back already.
    fn mined(&mut self, hash: TxHash, receipt: R, at: Instant) -> Option<(usize, R, Instant)> {
        match self.unmatched_sends.remove(&hash) {
            Some(order) => Some((order, receipt, at)),
            None => {
                self.unclaimed_receipts.insert(hash, (receipt, at));
                None
            }
        }
    }
}

fn key(p: &SentPacket) -> (B256, B256) {
    (p.packet.header.hash(), p.packet.payload_hash())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_send_meets_its_receipt_whichever_is_learned_first() {
        let mut matcher = Matcher::<&str>::default();
        let t0 = Instant::now();
        let (early, late) = (TxHash::repeat_byte(1), TxHash::repeat_byte(2));
        // The block is seen before the lane has its hash back.
        assert!(matcher.mined(early, "r1", t0).is_none());
        let (order, receipt, at) = matcher.submitted(early, 7).expect("paired");
        assert_eq!((order, receipt, at), (7, "r1", t0));
        // The usual order: the hash first, then its block.
        assert!(matcher.submitted(late, 8).is_none());
        assert_eq!(matcher.unmatched_sends.len(), 1);
        let later = t0 + Duration::from_millis(10);
        assert_eq!(matcher.mined(late, "r2", later), Some((8, "r2", later)));
        // Someone else's transaction in a block is kept, never claimed by another send.
        assert!(matcher
            .mined(TxHash::repeat_byte(3), "other", later)
            .is_none());
        assert!(matcher.unmatched_sends.is_empty());
        assert!(matcher.submitted(TxHash::repeat_byte(4), 9).is_none());
    }

    #[test]
    fn nearest_rank_quantiles() {
        let ms = |v: &[u64]| {
            v.iter()
                .map(|m| Duration::from_millis(*m))
                .collect::<Vec<_>>()
        };
        let values = ms(&[5, 1, 4, 2, 3, 10, 9, 8, 7, 6]);
        assert_eq!(quantile(&values, 0.5), Duration::from_millis(5));
        assert_eq!(quantile(&values, 0.99), Duration::from_millis(10));
        assert_eq!(quantile(&values, 0.0), Duration::from_millis(1));
        assert_eq!(quantile(&[], 0.5), Duration::ZERO);
        let hundred: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(quantile(&hundred, 0.99), Duration::from_millis(99));
    }
}
