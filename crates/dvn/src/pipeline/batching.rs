//! When a batch short of `max_batch` closes: when the destination's next block is due.
//!
//! A transaction sent any time before the next block lands in that block, so waiting until
//! just before it is due costs a packet no latency and lets the packets that become ready
//! meanwhile share the `execute` (one transaction's base cost instead of several). The
//! destination's cadence is learned from the heads the submit stage reads anyway: the block
//! interval from block numbers and timestamps, and when the latest block was first seen here.
//! A batch closes once the next block is less than `lead` away (time to estimate, sign and
//! broadcast), or when its oldest packet has waited `max_wait` (a chain that skips blocks, a
//! cadence not learned yet) — whichever comes first.

use std::time::{Duration, Instant};

/// How much of each new interval sample moves the estimate.
const SMOOTHING: f64 = 0.2;

/// Shortest interval believed. Block timestamps have whole seconds, so several blocks in one
/// second (a sub-second chain, a devnet mining one block per transaction) read as zero
/// apart: believed, every step would find the next block due and no batch would gather.
const MIN_INTERVAL: Duration = Duration::from_secs(1);

/// The destination's block cadence as seen by this node.
#[derive(Debug, Default)]
pub struct BlockCadence {
    /// Latest head seen, its timestamp, and when it was first seen here.
    latest: Option<(u64, u64, Instant)>,
    /// Smoothed seconds per block.
    interval_secs: Option<f64>,
}

impl BlockCadence {
    /// Takes in a head read at `at`.
    pub fn observe(&mut self, head: u64, timestamp: u64, at: Instant) {
        match self.latest {
            Some((number, _, _)) if head <= number => {}
            Some((number, ts, _)) => {
                let sample = timestamp.saturating_sub(ts) as f64 / (head - number) as f64;
                self.interval_secs = Some(match self.interval_secs {
                    Some(avg) => avg + SMOOTHING * (sample - avg),
                    None => sample,
                });
                self.latest = Some((head, timestamp, at));
            }
            None => self.latest = Some((head, timestamp, at)),
        }
    }

    /// The estimated block interval, once two heads were seen.
    pub fn interval(&self) -> Option<Duration> {
        self.interval_secs
            .map(|s| Duration::from_secs_f64(s.max(0.0)).max(MIN_INTERVAL))
    }

    /// How long until the next block is due (zero when overdue); `None` while unknown.
    pub fn next_block_in(&self, at: Instant) -> Option<Duration> {
        let (_, _, seen) = self.latest?;
        let interval = self.interval()?;
        Some(interval.saturating_sub(at.saturating_duration_since(seen)))
    }
}

/// Whether a batch short of full goes out now: its oldest packet has waited `waited`.
pub fn closes(
    cadence: &BlockCadence,
    waited: Duration,
    max_wait: Duration,
    lead: Duration,
    at: Instant,
) -> bool {
    waited >= max_wait || cadence.next_block_in(at).is_some_and(|d| d <= lead)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: f64) -> Duration {
        Duration::from_secs_f64(s)
    }

    #[test]
    fn the_interval_is_learned_from_heads_and_smoothed() {
        let t0 = Instant::now();
        let mut c = BlockCadence::default();
        assert_eq!(c.interval(), None);
        assert_eq!(c.next_block_in(t0), None, "one head: unknown");
        c.observe(100, 1_000, t0);
        c.observe(100, 1_000, t0 + secs(5.0));
        assert_eq!(c.interval(), None, "the same head again teaches nothing");
        c.observe(101, 1_012, t0 + secs(12.0));
        assert_eq!(c.interval(), Some(secs(12.0)));
        // Two blocks at once (a head read late): 12 s each, not 24.
        c.observe(103, 1_036, t0 + secs(36.5));
        assert_eq!(c.interval(), Some(secs(12.0)));
        // A slower block moves the estimate a fifth of the way.
        c.observe(104, 1_053, t0 + secs(53.0));
        assert_eq!(c.interval(), Some(secs(13.0)));
        // Several blocks in one second: never below a second, so a burst of blocks does not
        // close every batch at once.
        let mut fast = BlockCadence::default();
        fast.observe(1, 10, t0);
        fast.observe(5, 10, t0);
        assert_eq!(fast.interval(), Some(secs(1.0)));
        assert!(!closes(
            &fast,
            secs(0.1),
            secs(15.0),
            secs(0.5),
            t0 + secs(0.2)
        ));
    }

    #[test]
    fn a_batch_closes_when_the_next_block_is_due_or_the_wait_is_over() {
        let t0 = Instant::now();
        let mut c = BlockCadence::default();
        let (max_wait, lead) = (secs(15.0), secs(0.5));
        // Cadence unknown: only the longest wait closes it.
        assert!(!closes(&c, secs(1.0), max_wait, lead, t0));
        assert!(closes(&c, secs(15.0), max_wait, lead, t0));
        c.observe(1, 100, t0);
        c.observe(2, 112, t0 + secs(1.0));
        // The block was seen at t0 + 1 s; the next is due at t0 + 13 s.
        assert_eq!(c.next_block_in(t0 + secs(3.0)), Some(secs(10.0)));
        assert!(!closes(&c, secs(2.0), max_wait, lead, t0 + secs(3.0)));
        assert!(!closes(&c, secs(9.0), max_wait, lead, t0 + secs(12.0)));
        assert!(closes(&c, secs(9.5), max_wait, lead, t0 + secs(12.5)));
        // Overdue: close at once.
        assert_eq!(c.next_block_in(t0 + secs(20.0)), Some(Duration::ZERO));
        assert!(closes(&c, secs(0.1), max_wait, lead, t0 + secs(20.0)));
    }
}
