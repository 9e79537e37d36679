//! Gas limits for our `DVN.execute` calls: estimated once per call shape, and reused for
//! calls of the same shape while a mined call keeps showing the estimate was enough.
//!
//! `eth_estimateGas` runs the call many times over (nodes bisect the limit). Measured on the
//! devnet's destination anvil, estimating a 15-param `execute` took 17 times as long as
//! running it once with `eth_call` (99 against 5.8 ms); in a 10,000-packet drain the
//! estimates were more than half of that node's CPU time. What an `execute` costs depends on
//! its shape — where it goes, how many params, how many calldata bytes — not on which packets
//! it carries: each param recovers the same number of signatures and writes one new slot in
//! the DVN and one in the ULN. So:
//! - an estimate is **learned** only from a mined call of ours that verified every one of its
//!   params (no `ExecuteFailed`, no skipped param) using no more gas than the estimate: an
//!   estimate taken while some params were skipped (already used, expired) would be too low
//!   for a batch of fresh ones, and is never kept;
//! - a later call of that shape is run once with `eth_call` before it is sent (a call that
//!   would revert — a lost `ADMIN_ROLE` — is still caught before any gas is spent) and is
//!   sent with the learned estimate plus the usual headroom;
//! - every estimate is **forgotten** when a mined call of ours reverted, had a param fail
//!   inside the DVN (an inner call short of gas looks exactly like that), or used more gas
//!   than its estimate by over half the headroom; and each is re-estimated after
//!   [`REUSE_FOR`] whatever happens, so a chain's changed gas schedule is picked up;
//! - a call that used a little more than its estimate (within half the headroom) **raises**
//!   its shape's estimate to what it used. Calls of one shape do not cost exactly the same:
//!   calldata costs 16 gas per non-zero byte and 4 per zero byte, and signatures and hashes
//!   differ in how many zero bytes they hold. On the devnet 50-param calls of one shape used
//!   up to 700 gas apart (around 2.27 M), and `eth_estimateGas` answers for the call it ran:
//!   about one mined call in five used a few hundred gas more than the estimate it was sent
//!   with. Forgetting every estimate for that sent the next calls back to `eth_estimateGas`
//!   (150–285 ms each, between a batch closing and its broadcast);
//! - a shape not learned yet that lies **between** two learned shapes of the same target (more
//!   params and calldata bytes than one, fewer than the other) is given the straight line
//!   between their estimates. What an `execute` costs grows by the same amount per param (the
//!   same signature checks and storage writes, the same bytes) plus memory expansion, which
//!   grows with the square of the calldata: the cost is convex in the params, so the line
//!   between two points of it never lies below it in between. Under steady load the batch
//!   sizes vary from block to block, and an estimate for a size not seen yet took 150–285 ms
//!   on the devnet's anvil — between the batch closing and its broadcast;
//! - a shape **beyond** the largest learned one (up to [`EXTEND_UP_TO`] times its params) is
//!   given the line through the two largest learned shapes, extended with its rise an eighth
//!   steeper. A line extended past its points falls short of a convex cost, but only by the
//!   curvature, which is small here: memory grows by a few dozen words per param, and its
//!   quadratic cost over a batch of 100 is tens of thousands of gas against an `execute` of
//!   4.5 M — and an eighth of the extension's rise (over 250,000 gas from 50 to 100 params)
//!   covers it, before the headroom. (Extended from shapes `a` < `b` to `x`, a cost with
//!   `c` gas per param squared is missed by `c·(x − a)·(x − b)`, and the eighth adds
//!   `(x − b)·slope/8`: the line holds while `c·(x − a)` stays under an eighth of the slope,
//!   about 5,600 gas — for any batch up to 255 params, `c` up to about 22; an `execute`'s is
//!   about 2.) Without it each batch larger than any before waited for `eth_estimateGas`, and
//!   the lead — sized from the slowest of the last 32 closing → broadcast times — carried
//!   that wait for the next 32 batches (0.35–0.4 s instead of 0.2 s, measured in steady runs).
//!   Not where the chain charges for the limit left unused (Conflux: see
//!   [`crate::config::ChainProfile::extends_gas_estimates`]);
//! - so that every size up to a learned one has a line, the low end is **anchored**: while a
//!   batch gathers, a one-param call carrying a packet just found still to submit is estimated
//!   (a one-param estimate took 10–30 ms) and kept like a learned one — it is the estimate that
//!   call would be sent with anyway, and it is forgotten and aged by the same rules. (A param
//!   skipped meanwhile would make it low; the 20 % headroom absorbs that, and the first mined
//!   call that used more than its estimate forgets it.) The batch gathered so far is estimated
//!   and kept the same way when no line reaches its size: the first batches after a start
//!   (nothing learned yet), after the estimates aged out, or beyond [`EXTEND_UP_TO`] times the
//!   largest learned. Up to twice, a region's third batch in its first turn — 61 packets after
//!   batches of 17 and 26 — still waited for `eth_estimateGas` at its close and missed its
//!   block, a block more for all 61 (p99 2.47 s in that steady run against 1.57–1.64 s).
//!   A batch that closes then finds a line to its size, and `eth_estimateGas` is not waited
//!   for between its closing and its broadcast — a wait the lead then carried for 32 batches.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use alloy::primitives::Address;

/// How long a learned estimate is reused before the call is estimated afresh.
pub const REUSE_FOR: Duration = Duration::from_secs(600);

/// The margin a gas limit is sent with over the call's estimate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Headroom {
    percent: u64,
}

impl Headroom {
    /// 20 %, over an estimate of what the call needs (anvil, geth and the like answer the
    /// least gas the call succeeds with).
    pub const DEFAULT: Self = Self { percent: 20 };

    /// The headroom for a chain: its estimates may carry a margin of their own
    /// ([`crate::config::ChainProfile::gas_headroom_percent`]).
    pub fn for_profile(profile: crate::config::ChainProfile) -> Self {
        Self {
            percent: profile.gas_headroom_percent(),
        }
    }

    /// The gas limit sent for an estimate.
    pub fn over(self, estimate: u64) -> u64 {
        estimate.saturating_mul(100 + self.percent) / 100
    }

    /// The estimate a transaction's gas limit was sent for (the inverse of [`Self::over`],
    /// rounded down).
    pub fn estimate_in(self, gas_limit: u64) -> u64 {
        gas_limit.saturating_mul(100) / (100 + self.percent)
    }

    /// The gas limit to send a call with, from its estimate and the chain's calldata floor,
    /// if it has one ([`crate::config::ChainProfile::calldata_gas_floor`]): never below the
    /// floor, else the estimate plus headroom. An estimate that *is* the floor is sent at the
    /// floor: the chain's `eth_estimateGas` answers exactly the floor when the call's
    /// execution, with the chain's own margin, fits under it (Conflux: 7/6 of the gas the
    /// call needs), so headroom on top would not be used — only charged, at ¾ of the limit.
    /// On Conflux a 50-param `execute` (about 34 kB) executes in about 2.4 M gas under a
    /// floor of 3.4 M: sent 20 % above the floor it is charged 90 gas per calldata byte, at
    /// the floor 75.
    pub fn limit_for(self, estimate: u64, floor: Option<u64>) -> u64 {
        match floor {
            Some(floor) if estimate == floor => floor,
            Some(floor) => self.over(estimate).max(floor),
            None => self.over(estimate),
        }
    }
}

/// What an `execute`'s gas depends on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CallShape {
    /// The contract called: the DVN, or a decompressor in front of it.
    pub to: Address,
    /// Params carried.
    pub params: usize,
    /// Calldata bytes.
    pub calldata: usize,
}

/// How one of our mined `execute`s went, as far as its gas tells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MinedCall {
    pub shape: CallShape,
    /// The gas limit it was sent with.
    pub gas_limit: u64,
    pub gas_used: u64,
    /// It did not revert.
    pub succeeded: bool,
    /// Params that failed inside the DVN (`ExecuteFailed`, `VerifySignaturesFailed`).
    pub failed_params: usize,
    /// Params whose `PayloadVerified` it logged.
    pub verified_params: usize,
}

/// A line through the shapes `lo` and `hi` read at `shape` (`line(at, lo, hi)` on one
/// measure): whichever of params and calldata bytes puts it higher — bytes only where the two
/// shapes differ in them.
fn higher_reading(
    shape: &CallShape,
    lo: &CallShape,
    hi: &CallShape,
    line: impl Fn(usize, usize, usize) -> u64,
) -> u64 {
    let by_params = line(shape.params, lo.params, hi.params);
    if hi.calldata > lo.calldata {
        by_params.max(line(shape.calldata, lo.calldata, hi.calldata))
    } else {
        by_params
    }
}

/// How far past the largest learned shape (in params) a line extends: see the module docs.
const EXTEND_UP_TO: usize = 4;

/// Learned estimates, per call shape, of one destination (owned by its transaction manager).
#[derive(Debug)]
pub struct GasEstimates {
    headroom: Headroom,
    /// Whether a shape beyond the largest learned gets an extended line (see
    /// [`crate::config::ChainProfile::extends_gas_estimates`]).
    extend: bool,
    learned: HashMap<CallShape, (u64, Instant)>,
}

impl GasEstimates {
    pub fn new(headroom: Headroom) -> Self {
        Self {
            headroom,
            extend: true,
            learned: HashMap::new(),
        }
    }

    /// A destination's estimates: its profile's headroom, and whether lines extend.
    pub fn for_profile(profile: crate::config::ChainProfile) -> Self {
        Self {
            extend: profile.extends_gas_estimates(),
            ..Self::new(Headroom::for_profile(profile))
        }
    }

    /// The headroom this destination's calls are sent with.
    pub fn headroom(&self) -> Headroom {
        self.headroom
    }

    /// The learned estimate for `shape` if one is young enough to reuse; else the line
    /// between two young learned estimates that bracket it, or beyond the two largest (see the
    /// module docs).
    pub fn reusable(&self, shape: &CallShape, now: Instant) -> Option<u64> {
        let young = |at: &Instant| now.saturating_duration_since(*at) < REUSE_FOR;
        if let Some((gas, at)) = self.learned.get(shape) {
            return young(at).then_some(*gas);
        }
        let mut below: Option<(&CallShape, u64)> = None;
        let mut above: Option<(&CallShape, u64)> = None;
        for (known, (gas, at)) in &self.learned {
            if known.to != shape.to || !young(at) {
                continue;
            }
            if known.params < shape.params
                && known.calldata <= shape.calldata
                && below.is_none_or(|(b, _)| known.params > b.params)
            {
                below = Some((known, *gas));
            }
            if known.params > shape.params
                && known.calldata >= shape.calldata
                && above.is_none_or(|(a, _)| known.params < a.params)
            {
                above = Some((known, *gas));
            }
        }
        let Some(above) = above else {
            return self.beyond(shape, now);
        };
        let ((lo, lo_gas), (hi, hi_gas)) = (below?, above);
        if hi_gas < lo_gas {
            return None;
        }
        // Rounded up.
        let along = |at: usize, from: usize, to: usize| -> u64 {
            let (span, part) = ((to - from) as u128, (at - from) as u128);
            let rise = u128::from(hi_gas - lo_gas) * part;
            lo_gas + u64::try_from(rise.div_ceil(span.max(1))).unwrap_or(u64::MAX)
        };
        Some(higher_reading(shape, lo, hi, along))
    }

    /// For a shape beyond every learned one of its target: the line through the two largest
    /// young learned shapes under it (fewer params, no more calldata), its rise beyond the
    /// larger an eighth steeper; nothing past [`EXTEND_UP_TO`] times the larger's params.
    fn beyond(&self, shape: &CallShape, now: Instant) -> Option<u64> {
        if !self.extend {
            return None;
        }
        let mut under: Vec<(&CallShape, u64)> = self
            .learned
            .iter()
            .filter(|(known, (_, at))| {
                known.to == shape.to
                    && now.saturating_duration_since(*at) < REUSE_FOR
                    && known.params < shape.params
                    && known.calldata <= shape.calldata
            })
            .map(|(known, (gas, _))| (known, *gas))
            .collect();
        under.sort_by_key(|(known, _)| known.params);
        let [.., (lo, lo_gas), (hi, hi_gas)] = under[..] else {
            return None;
        };
        if hi_gas <= lo_gas || shape.params > hi.params.saturating_mul(EXTEND_UP_TO) {
            return None;
        }
        // The rise per unit between the two, applied past the larger, plus an eighth.
        let past = |at: usize, from: usize, to: usize| -> u64 {
            let (span, part) = ((to - from) as u128, (at - to) as u128);
            let rise = (u128::from(hi_gas - lo_gas) * part * 9).div_ceil(span.max(1) * 8);
            hi_gas.saturating_add(u64::try_from(rise).unwrap_or(u64::MAX))
        };
        Some(higher_reading(shape, lo, hi, past))
    }

    /// Takes in an `eth_estimateGas` taken while a batch gathers: of a one-param call (the
    /// low end of the lines), or of the batch gathered so far (a point a line extends from;
    /// see the module docs).
    pub fn anchor(&mut self, shape: CallShape, estimate: u64, now: Instant) {
        self.learned.insert(shape, (estimate, now));
    }

    /// Takes in what a mined call of ours shows (see the module docs).
    pub fn mined(&mut self, call: &MinedCall, now: Instant) {
        let estimate = self.headroom.estimate_in(call.gas_limit);
        // Half the headroom: 10 % of the estimate by default.
        let tolerated =
            estimate.saturating_add(estimate.saturating_mul(self.headroom.percent) / 200);
        if !call.succeeded || call.failed_params > 0 || call.gas_used > tolerated {
            self.learned.clear();
            return;
        }
        self.learned
            .retain(|_, (_, at)| now.saturating_duration_since(*at) < REUSE_FOR);
        if call.verified_params == call.shape.params {
            let needed = estimate.max(call.gas_used);
            self.learned
                .entry(call.shape)
                .and_modify(|(gas, _)| *gas = (*gas).max(needed))
                .or_insert((needed, now));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_headroom(estimate: u64) -> u64 {
        Headroom::DEFAULT.over(estimate)
    }

    fn estimate_in(gas_limit: u64) -> u64 {
        Headroom::DEFAULT.estimate_in(gas_limit)
    }

    fn limit_for(estimate: u64, floor: Option<u64>) -> u64 {
        Headroom::DEFAULT.limit_for(estimate, floor)
    }

    impl Default for GasEstimates {
        fn default() -> Self {
            Self::new(Headroom::DEFAULT)
        }
    }

    fn shape(params: usize) -> CallShape {
        CallShape {
            to: Address::repeat_byte(0xd0),
            params,
            calldata: 100 + 400 * params,
        }
    }

    fn clean(params: usize, gas_limit: u64) -> MinedCall {
        MinedCall {
            shape: shape(params),
            gas_limit,
            gas_used: estimate_in(gas_limit) - 1_000,
            succeeded: true,
            failed_params: 0,
            verified_params: params,
        }
    }

    #[test]
    fn a_calldata_floor_is_never_undercut_and_an_estimate_at_it_gets_no_headroom() {
        let floor = Some(3_360_000);
        assert_eq!(limit_for(2_271_455, None), with_headroom(2_271_455));
        // The chain's estimate is the floor: the call fits under it, sent at it.
        assert_eq!(limit_for(3_360_000, floor), 3_360_000);
        // A learned estimate under the floor (no chain margin in it): never below the floor,
        // and the headroom kept where it reaches above.
        assert_eq!(limit_for(2_271_455, floor), 3_360_000);
        assert_eq!(limit_for(3_000_000, floor), with_headroom(3_000_000));
        // Execution above the floor: the usual headroom.
        assert_eq!(limit_for(4_000_000, floor), with_headroom(4_000_000));
    }

    #[test]
    fn a_call_sent_at_its_floor_is_learned_and_sent_at_the_floor_again() {
        let mut estimates = GasEstimates::default();
        let now = Instant::now();
        // A param's execution is about 67 gas per calldata byte of it.
        let floor = 100 * shape(50).calldata as u64;
        let limit = limit_for(floor, Some(floor));
        estimates.mined(
            &MinedCall {
                gas_used: floor * 2 / 3,
                ..clean(50, limit)
            },
            now,
        );
        let learned = estimates.reusable(&shape(50), now).expect("learned");
        assert_eq!(limit_for(learned, Some(floor)), floor);
    }

    #[test]
    fn on_conflux_a_limit_over_its_estimate_leaves_under_a_quarter_unused_and_stays_so() {
        let conflux = Headroom::for_profile(crate::config::ChainProfile::ConfluxEspace);
        let now = Instant::now();
        let floor = 100 * shape(8).calldata as u64;
        // Conflux's estimate carries a sixth over what the call needs.
        let used = 430_885;
        let limit = conflux.limit_for(used * 7 / 6, Some(floor));
        assert!(
            3 * (limit - used) < used,
            "{limit} for {used}: charged ¾ of it"
        );
        assert!(3 * (with_headroom(used * 7 / 6) - used) >= used);
        let mut estimates = GasEstimates::new(conflux);
        estimates.mined(
            &MinedCall {
                gas_used: used,
                ..clean(8, limit)
            },
            now,
        );
        let learned = estimates.reusable(&shape(8), now).expect("learned");
        let again = conflux.limit_for(learned, Some(floor));
        assert!(
            again <= limit && limit - again <= 1,
            "{again} after {limit}"
        );
    }

    #[test]
    fn headroom_and_its_inverse_round_trip_to_within_a_unit() {
        for estimate in [21_000, 1_376_938, 2_271_455, 29_999_999] {
            let back = estimate_in(with_headroom(estimate));
            assert!(
                back <= estimate && estimate - back <= 1,
                "{estimate} → {back}"
            );
        }
    }

    #[test]
    fn an_estimate_is_learned_from_a_call_that_verified_every_param_and_reused_for_that_shape_only()
    {
        let t0 = Instant::now();
        let mut estimates = GasEstimates::default();
        assert_eq!(estimates.reusable(&shape(50), t0), None);
        estimates.mined(&clean(50, 2_725_746), t0);
        assert_eq!(
            estimates.reusable(&shape(50), t0),
            Some(estimate_in(2_725_746))
        );
        assert_eq!(estimates.reusable(&shape(49), t0), None);
        let mut other_calldata = shape(50);
        other_calldata.calldata += 1;
        assert_eq!(estimates.reusable(&other_calldata, t0), None);
        let mut other_target = shape(50);
        other_target.to = Address::repeat_byte(0xdc);
        assert_eq!(estimates.reusable(&other_target, t0), None);
    }

    #[test]
    fn a_shape_between_two_learned_ones_gets_the_line_between_them_and_none_below() {
        let t0 = Instant::now();
        let mut estimates = GasEstimates::default();
        estimates.mined(&clean(10, 600_000), t0);
        estimates.mined(&clean(50, 2_400_000), t0);
        let (lo, hi) = (estimate_in(600_000), estimate_in(2_400_000));
        // A quarter of the way in params and in bytes: a quarter of the way in gas, rounded up.
        let quarter = lo + (hi - lo).div_ceil(4);
        assert_eq!(estimates.reusable(&shape(20), t0), Some(quarter));
        // The nearest bracket counts: with 30 learned too, 20 lies halfway between 10 and 30.
        estimates.mined(&clean(30, 1_400_000), t0);
        let mid = estimate_in(1_400_000);
        assert_eq!(
            estimates.reusable(&shape(20), t0),
            Some(lo + (mid - lo).div_ceil(2))
        );
        // Larger calldata than the params say (longer params): the higher of the two lines.
        let mut heavier = shape(20);
        heavier.calldata = shape(25).calldata;
        assert_eq!(
            estimates.reusable(&heavier, t0),
            Some(lo + ((mid - lo) * 3).div_ceil(4))
        );
        // Calldata beyond the nearer shape's: bracketed by the next one that has as much.
        let mut longer = shape(20);
        longer.calldata = shape(31).calldata;
        assert_eq!(
            estimates.reusable(&longer, t0),
            Some(lo + ((hi - lo) * 21).div_ceil(40))
        );
        // Below the learned range, or calldata beyond every learned shape of fewer params:
        // nothing guessed.
        assert_eq!(estimates.reusable(&shape(9), t0), None);
        let mut too_long = shape(20);
        too_long.calldata = shape(51).calldata;
        assert_eq!(estimates.reusable(&too_long, t0), None);
        // Another target's shapes are not mixed in, and stale ones do not count.
        let mut other_target = shape(20);
        other_target.to = Address::repeat_byte(0xdc);
        assert_eq!(estimates.reusable(&other_target, t0), None);
        assert_eq!(estimates.reusable(&shape(20), t0 + REUSE_FOR), None);
    }

    #[test]
    fn an_anchored_one_param_estimate_gives_every_size_up_to_a_learned_one_and_is_forgotten_alike()
    {
        let t0 = Instant::now();
        let mut estimates = GasEstimates::default();
        estimates.mined(&clean(50, 2_400_000), t0);
        assert_eq!(estimates.reusable(&shape(45), t0), None);
        assert_eq!(estimates.reusable(&shape(1), t0), None);
        estimates.anchor(shape(1), 60_000, t0);
        assert!(estimates.reusable(&shape(1), t0).is_some());
        let hi = estimate_in(2_400_000);
        assert_eq!(
            estimates.reusable(&shape(45), t0),
            Some(60_000 + ((hi - 60_000) * 44).div_ceil(49))
        );
        assert_eq!(estimates.reusable(&shape(1), t0), Some(60_000));
        // Aged like a learned one, and forgotten with them when a call shows it short.
        assert_eq!(estimates.reusable(&shape(1), t0 + REUSE_FOR), None);
        let mut short = clean(45, 2_200_000);
        short.gas_used = estimate_in(short.gas_limit) * 11 / 10 + 1;
        estimates.mined(&short, t0);
        assert_eq!(estimates.reusable(&shape(1), t0), None);
        assert_eq!(estimates.reusable(&shape(45), t0), None);
    }

    #[test]
    fn a_shape_beyond_the_largest_learned_gets_a_steeper_line_never_short_of_a_convex_cost() {
        // A cost convex in the params, as an execute's is (memory grows with them): ten times
        // the curvature of a real one, which adds about 2 gas per param squared.
        let cost = |params: u64| 60_000 + 45_000 * params + 20 * params * params;
        let t0 = Instant::now();
        let mut estimates = GasEstimates::default();
        estimates.anchor(shape(1), cost(1), t0);
        // One learned shape with the anchor under it: a line to extend.
        let learned = |params: usize| MinedCall {
            gas_used: cost(params as u64),
            ..clean(params, with_headroom(cost(params as u64)))
        };
        estimates.mined(&learned(40), t0);
        for params in [41, 50, 60, 80, 120, 160] {
            let estimate = estimates.reusable(&shape(params), t0).expect("extended");
            let needed = cost(params as u64);
            assert!(estimate >= needed, "{params}: {estimate} < {needed}");
            // Not wasteful either: over what it needs by less than the eighth the extension's
            // rise is made steeper (a limit left unused is not charged where lines extend).
            assert!(
                estimate * 8 < needed * 9,
                "{params}: {estimate} for {needed}"
            );
        }
        // The two largest make the line: with 50 learned too, 60 follows 40 → 50, steeper.
        estimates.mined(&learned(50), t0);
        let (lo, hi) = (cost(40), cost(50));
        let expected = hi + ((hi - lo) * 10 * 9).div_ceil(10 * 8);
        assert_eq!(estimates.reusable(&shape(60), t0), Some(expected));
        // Nothing past four times the largest, nor from one learned shape alone, nor for
        // another target, nor from stale ones.
        assert!(estimates.reusable(&shape(200), t0).is_some());
        assert_eq!(estimates.reusable(&shape(201), t0), None);
        let mut alone = GasEstimates::default();
        alone.mined(&learned(40), t0);
        assert_eq!(alone.reusable(&shape(41), t0), None);
        let mut other_target = shape(60);
        other_target.to = Address::repeat_byte(0xdc);
        assert_eq!(estimates.reusable(&other_target, t0), None);
        assert_eq!(estimates.reusable(&shape(60), t0 + REUSE_FOR), None);
        // Not on a chain that charges for the limit left unused.
        let mut conflux = GasEstimates::for_profile(crate::config::ChainProfile::ConfluxEspace);
        conflux.anchor(shape(1), cost(1), t0);
        conflux.mined(&learned(40), t0);
        assert_eq!(conflux.reusable(&shape(41), t0), None);
        assert!(
            conflux.reusable(&shape(20), t0).is_some(),
            "between: a line"
        );
    }

    #[test]
    fn a_call_with_a_skipped_param_teaches_nothing() {
        // One param already used or expired: the call was cheaper than a fresh batch of its
        // shape, so its estimate would be too low.
        let t0 = Instant::now();
        let mut estimates = GasEstimates::default();
        let mut partial = clean(10, 600_000);
        partial.verified_params = 9;
        estimates.mined(&partial, t0);
        assert_eq!(estimates.reusable(&shape(10), t0), None);
    }

    #[test]
    fn a_revert_a_failed_param_or_gas_beyond_the_estimate_forgets_every_shape() {
        let t0 = Instant::now();
        let failures: [fn(&mut MinedCall); 3] = [
            |c| c.succeeded = false,
            |c| c.failed_params = 1,
            |c| c.gas_used = estimate_in(c.gas_limit) * 11 / 10 + 1,
        ];
        for fail in failures {
            let mut estimates = GasEstimates::default();
            estimates.mined(&clean(1, 100_000), t0);
            estimates.mined(&clean(2, 150_000), t0);
            let mut bad = clean(3, 200_000);
            fail(&mut bad);
            estimates.mined(&bad, t0);
            for params in 1..=3 {
                assert_eq!(estimates.reusable(&shape(params), t0), None);
            }
        }
    }

    #[test]
    fn a_call_a_little_over_its_estimate_raises_its_shape_and_forgets_nothing() {
        // Calls of one shape differ by their calldata's zero bytes: a few hundred gas on
        // 2.27 M. That is not an estimate gone wrong.
        let t0 = Instant::now();
        let mut estimates = GasEstimates::default();
        estimates.mined(&clean(10, 600_000), t0);
        estimates.mined(&clean(50, 2_400_000), t0);
        let learned = estimate_in(2_400_000);
        let mut over = clean(50, 2_400_000);
        over.gas_used = learned + 401;
        estimates.mined(&over, t0);
        assert_eq!(estimates.reusable(&shape(50), t0), Some(learned + 401));
        assert_eq!(
            estimates.reusable(&shape(10), t0),
            Some(estimate_in(600_000))
        );
        // A later call under it does not lower it again.
        estimates.mined(&clean(50, 2_400_000), t0);
        assert_eq!(estimates.reusable(&shape(50), t0), Some(learned + 401));
        // Up to half the headroom is tolerated; beyond, every shape is forgotten.
        let mut edge = clean(10, 600_000);
        edge.gas_used = estimate_in(600_000) * 11 / 10;
        estimates.mined(&edge, t0);
        assert_eq!(estimates.reusable(&shape(10), t0), Some(edge.gas_used));
        let mut beyond = clean(50, 2_400_000);
        beyond.gas_used = estimate_in(2_400_000) * 11 / 10 + 1;
        estimates.mined(&beyond, t0);
        assert_eq!(estimates.reusable(&shape(50), t0), None);
        assert_eq!(estimates.reusable(&shape(10), t0), None);
    }

    #[test]
    fn an_estimate_is_reused_for_a_while_and_then_estimated_afresh() {
        let t0 = Instant::now();
        let mut estimates = GasEstimates::default();
        estimates.mined(&clean(5, 300_000), t0);
        // Later clean calls of the same shape do not extend its life.
        estimates.mined(&clean(5, 300_000), t0 + REUSE_FOR / 2);
        assert!(estimates
            .reusable(&shape(5), t0 + REUSE_FOR - Duration::from_secs(1))
            .is_some());
        assert_eq!(estimates.reusable(&shape(5), t0 + REUSE_FOR), None);
        // Once stale, the next clean call teaches it again.
        estimates.mined(&clean(5, 310_000), t0 + REUSE_FOR);
        assert_eq!(
            estimates.reusable(&shape(5), t0 + REUSE_FOR),
            Some(estimate_in(310_000))
        );
    }
}
