//! When a batch short of `max_batch` closes: when the destination's next block is due.
//!
//! A transaction sent any time before the next block lands in that block, so waiting until
//! just before it is due costs a packet no latency and lets the packets that become ready
//! meanwhile share the `execute` (one transaction's base cost instead of several). The
//! destination's cadence is learned from the heads the submit stage reads anyway: the block
//! interval from block numbers and timestamps, and when each block was first seen here.
//! A batch closes once the next block is less than `lead` away (time to check, estimate, sign
//! and broadcast), or when its oldest packet has waited `max_wait` (a chain that skips blocks,
//! a cadence not learned yet) — whichever comes first.
//!
//! A head is only ever seen *late* — by the read's round trip, and by however long the stage
//! was busy or asleep before it read — never early. So when a block was produced is estimated
//! as the earliest of when it was seen and when the last few blocks' sightings project it
//! (one interval per block): a late sighting no longer moves the estimate late, which would
//! close the batch after its block had already been mined.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Shortest interval believed. Block timestamps have whole seconds, so several blocks in one
/// second (a sub-second chain, a devnet mining one block per transaction) read as zero
/// apart: believed, every step would find the next block due and no batch would gather.
const MIN_INTERVAL: Duration = Duration::from_secs(1);

/// Heads the interval is measured over (first to last). Block timestamps have whole seconds,
/// so one interval read alone is off by up to a second; over this many blocks by up to
/// 1/64 s per block.
const INTERVAL_SPAN: usize = 64;

/// Latest sightings a block's production time is projected from. Few, so that an interval
/// off by a little (a chain whose blocks are not evenly spaced) is not multiplied far.
const PROJECT_FROM: usize = 4;

/// The destination's block cadence as seen by this node.
#[derive(Debug, Default)]
pub struct BlockCadence {
    /// Heads seen, oldest first: number, timestamp, and when it was first seen here. At most
    /// [`INTERVAL_SPAN`].
    heads: VecDeque<(u64, u64, Instant)>,
}

impl BlockCadence {
    /// Takes in a head read at `at`.
    pub fn observe(&mut self, head: u64, timestamp: u64, at: Instant) {
        if self
            .heads
            .back()
            .is_some_and(|&(number, _, _)| head <= number)
        {
            return;
        }
        if self.heads.len() == INTERVAL_SPAN {
            self.heads.pop_front();
        }
        self.heads.push_back((head, timestamp, at));
    }

    /// The estimated block interval, once two heads were seen.
    pub fn interval(&self) -> Option<Duration> {
        let (&(first, first_ts, _), &(last, last_ts, _)) =
            (self.heads.front()?, self.heads.back()?);
        if last == first {
            return None;
        }
        let secs = last_ts.saturating_sub(first_ts) as f64 / (last - first) as f64;
        Some(Duration::from_secs_f64(secs).max(MIN_INTERVAL))
    }

    /// When the latest head was most likely produced: the earliest of its own sighting and
    /// the projections of the few sightings before it.
    fn latest_produced(&self, interval: Duration) -> Option<Instant> {
        let &(latest, _, _) = self.heads.back()?;
        self.heads
            .iter()
            .rev()
            .take(PROJECT_FROM)
            .map(|&(number, _, seen)| {
                let blocks = u32::try_from(latest - number).unwrap_or(u32::MAX);
                seen.checked_add(interval.saturating_mul(blocks))
                    .unwrap_or(seen)
            })
            .min()
    }

    /// How long until the next block is due (zero when overdue); `None` while unknown.
    pub fn next_block_in(&self, at: Instant) -> Option<Duration> {
        let interval = self.interval()?;
        let produced = self.latest_produced(interval)?;
        Some(interval.saturating_sub(at.saturating_duration_since(produced)))
    }
}

/// How long until a batch that does not close now would: when the next block is less than
/// `lead` away or its oldest packet has waited `max_wait`. The stage sleeps until then rather
/// than until its next tick, which could be later than the block.
pub fn closes_in(
    cadence: &BlockCadence,
    waited: Duration,
    max_wait: Duration,
    lead: Duration,
    at: Instant,
) -> Duration {
    let by_wait = max_wait.saturating_sub(waited);
    match cadence.next_block_in(at) {
        Some(due) => by_wait.min(due.saturating_sub(lead)),
        None => by_wait,
    }
}

/// Batches whose closing → broadcast time the lead is sized from.
const TIMED_BATCHES: usize = 32;

/// Timed batches needed before the lead is sized from them (until then: the configured most).
const TIMED_BEFORE_ADAPTING: usize = 8;

/// Batches in a row that made their block before a margin widened by a miss narrows again.
const MADE_IN_A_ROW: u32 = 32;

/// How long before the next block is due a batch closes. What the lead must cover is this
/// node's own time from closing a batch to its broadcast (checks, estimate, signing, the RPC
/// round trips, a cloud KMS call) plus the way to the block producer, and only the first is
/// measured here: the lead is the longest of the last [`TIMED_BATCHES`] closing → broadcast
/// times plus a margin, never more than the configured most (`block_lead_ms`). A batch that
/// still misses the block it closed for doubles the margin (up to that most); it narrows back
/// by half after [`MADE_IN_A_ROW`] batches in a row made theirs. With local endpoints and a
/// local key, closing to broadcast takes tens of milliseconds, and a lead sized for a remote
/// endpoint or a KMS would cost every packet that difference in latency.
#[derive(Debug)]
pub struct BlockLead {
    most: Duration,
    base_margin: Duration,
    margin: Duration,
    timed: VecDeque<Duration>,
    made_in_a_row: u32,
}

impl BlockLead {
    pub fn new(most: Duration, margin: Duration) -> Self {
        Self {
            most,
            base_margin: margin,
            margin,
            timed: VecDeque::new(),
            made_in_a_row: 0,
        }
    }

    /// The lead now.
    pub fn lead(&self) -> Duration {
        if self.timed.len() < TIMED_BEFORE_ADAPTING {
            return self.most;
        }
        let longest = self.timed.iter().max().copied().unwrap_or_default();
        longest.saturating_add(self.margin).min(self.most)
    }

    /// One batch went from closing to broadcast in `took`.
    pub fn took(&mut self, took: Duration) {
        if self.timed.len() == TIMED_BATCHES {
            self.timed.pop_front();
        }
        self.timed.push_back(took);
    }

    /// One batch landed: in the block it closed for, or later.
    pub fn landed(&mut self, made_its_block: bool) {
        if made_its_block {
            self.made_in_a_row += 1;
            if self.made_in_a_row >= MADE_IN_A_ROW {
                self.made_in_a_row = 0;
                self.margin = (self.margin / 2).max(self.base_margin);
            }
        } else {
            self.made_in_a_row = 0;
            self.margin = self
                .margin
                .saturating_mul(2)
                .max(self.base_margin)
                .min(self.most);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether a batch short of full goes out now (the stage asks [`closes_in`] once and
    /// closes at zero): its oldest packet has waited `waited`.
    fn closes(
        cadence: &BlockCadence,
        waited: Duration,
        max_wait: Duration,
        lead: Duration,
        at: Instant,
    ) -> bool {
        closes_in(cadence, waited, max_wait, lead, at).is_zero()
    }

    #[test]
    fn the_lead_is_the_longest_recent_closing_to_broadcast_plus_a_margin_that_misses_widen() {
        let ms = Duration::from_millis;
        let mut lead = BlockLead::new(ms(500), ms(100));
        assert_eq!(
            lead.lead(),
            ms(500),
            "nothing timed yet: the configured most"
        );
        for _ in 0..TIMED_BEFORE_ADAPTING - 1 {
            lead.took(ms(30));
        }
        assert_eq!(lead.lead(), ms(500), "too few timed to go by");
        lead.took(ms(40));
        assert_eq!(lead.lead(), ms(140), "the longest (40) plus the margin");
        // A slow one (an estimate for a new size) sets the lead while it is among the last
        // 32, then ages out.
        lead.took(ms(280));
        assert_eq!(lead.lead(), ms(380));
        for _ in 0..TIMED_BATCHES {
            lead.took(ms(30));
        }
        assert_eq!(lead.lead(), ms(130));
        // Never beyond the configured most.
        lead.took(ms(900));
        assert_eq!(lead.lead(), ms(500));
        for _ in 0..TIMED_BATCHES {
            lead.took(ms(30));
        }
        // A miss doubles the margin, a second again; 32 made in a row halve it, never below
        // the configured margin.
        lead.landed(false);
        assert_eq!(lead.lead(), ms(230));
        lead.landed(false);
        assert_eq!(lead.lead(), ms(430));
        for _ in 0..MADE_IN_A_ROW - 1 {
            lead.landed(true);
        }
        assert_eq!(lead.lead(), ms(430), "not yet");
        lead.landed(true);
        assert_eq!(lead.lead(), ms(230));
        for _ in 0..3 * MADE_IN_A_ROW {
            lead.landed(true);
        }
        assert_eq!(lead.lead(), ms(130));
        // A miss in the middle of a run starts the count again.
        lead.landed(false);
        for _ in 0..MADE_IN_A_ROW - 1 {
            lead.landed(true);
        }
        lead.landed(false);
        for _ in 0..MADE_IN_A_ROW - 1 {
            lead.landed(true);
        }
        assert_eq!(lead.lead(), ms(430));
    }

    /// Whole milliseconds, so that sums and differences compare exactly.
    fn secs(s: f64) -> Duration {
        Duration::from_millis((s * 1000.0).round() as u64)
    }

    #[test]
    fn the_interval_is_measured_over_many_heads_not_one_rounded_pair() {
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
        // Blocks 1.5 s apart carry whole-second timestamps 1 or 2 s apart: one pair says 1 or
        // 2, the span says 1.5.
        let mut half = BlockCadence::default();
        for n in 0..=40u64 {
            let produced = secs(n as f64 * 1.5);
            half.observe(n, 1_000 + produced.as_secs(), t0 + produced);
        }
        assert_eq!(half.interval(), Some(secs(1.5)));
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
    fn a_head_seen_late_does_not_make_the_next_block_look_later() {
        let t0 = Instant::now();
        let mut c = BlockCadence::default();
        // One-second blocks, each seen 10 ms after it was produced...
        for n in 0..5u64 {
            c.observe(n, 100 + n, t0 + secs(n as f64 + 0.01));
        }
        assert_eq!(c.next_block_in(t0 + secs(4.51)), Some(secs(0.5)));
        // ...then one seen 300 ms late (the stage was busy): the next block is still due at
        // t0 + 5 s, not t0 + 5.3 s, so a batch closing 500 ms ahead closes at t0 + 4.5 s.
        c.observe(5, 105, t0 + secs(5.3));
        assert_eq!(c.next_block_in(t0 + secs(5.51)), Some(secs(0.5)));
        assert!(closes(
            &c,
            secs(0.2),
            secs(15.0),
            secs(0.5),
            t0 + secs(5.51)
        ));
        // A block produced earlier than projected (the chain's phase moved): believed.
        c.observe(6, 106, t0 + secs(5.81));
        assert_eq!(c.next_block_in(t0 + secs(6.31)), Some(secs(0.5)));
    }

    #[test]
    fn a_batch_closes_when_the_next_block_is_due_or_the_wait_is_over() {
        let t0 = Instant::now();
        let mut c = BlockCadence::default();
        let (max_wait, lead) = (secs(15.0), secs(0.5));
        // Cadence unknown: only the longest wait closes it, and the stage sleeps until then.
        assert!(!closes(&c, secs(1.0), max_wait, lead, t0));
        assert_eq!(closes_in(&c, secs(1.0), max_wait, lead, t0), secs(14.0));
        assert!(closes(&c, secs(15.0), max_wait, lead, t0));
        c.observe(1, 100, t0);
        c.observe(2, 112, t0 + secs(1.0));
        // The block was seen at t0 + 1 s (projected from t0: t0 + 12 s, later, so the
        // sighting stands); the next is due at t0 + 13 s.
        assert_eq!(c.next_block_in(t0 + secs(3.0)), Some(secs(10.0)));
        assert!(!closes(&c, secs(2.0), max_wait, lead, t0 + secs(3.0)));
        assert_eq!(
            closes_in(&c, secs(2.0), max_wait, lead, t0 + secs(3.0)),
            secs(9.5),
            "it wakes when the block is `lead` away"
        );
        assert!(!closes(&c, secs(9.0), max_wait, lead, t0 + secs(12.0)));
        assert!(closes(&c, secs(9.5), max_wait, lead, t0 + secs(12.5)));
        assert_eq!(
            closes_in(&c, secs(9.5), max_wait, lead, t0 + secs(12.5)),
            Duration::ZERO
        );
        // The longest wait comes first: it wakes then.
        assert_eq!(
            closes_in(&c, secs(14.0), max_wait, lead, t0 + secs(3.0)),
            secs(1.0)
        );
        // Overdue: close at once.
        assert_eq!(c.next_block_in(t0 + secs(20.0)), Some(Duration::ZERO));
        assert!(closes(&c, secs(0.1), max_wait, lead, t0 + secs(20.0)));
    }
}
