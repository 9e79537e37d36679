//! Whose turn it is to submit a packet: the rotation every region computes alike from the
//! packet's source block time and the destination's latest block time, so regions agree
//! without talking. Used by the submit stage (may I start?) and by the transaction manager
//! (has my turn passed to another region, so my pending transaction must be cancelled?).

/// Rotation slot: packets whose source blocks fall in the same slot share a designated
/// submitter, so a burst goes out as one batch.
pub const ROTATION_SLOT_SECS: u64 = 60;

/// The designated submitter index for a packet (into the sorted region list).
pub fn designated(block_timestamp: u64, regions: usize) -> usize {
    usize::try_from((block_timestamp / ROTATION_SLOT_SECS) % regions.max(1) as u64).unwrap_or(0)
}

/// The one region that may *start* submitting a packet at time `now` (unix seconds), if any.
///
/// **While the packet is fresh** — less than one round of turns (`regions` windows of
/// `takeover_secs`) after its source block — the designated region has the first window, then
/// the next region round the ring, one window each. Only the first half of a window is for
/// starting a submission; the second half is a quiet gap in which the owner's transaction is
/// mined before the next owner looks, and which absorbs clock skew between regions. So two live
/// regions never both send the same packet, and a region coming back never races the one that
/// took over.
///
/// **Once a packet has outlived a round** (a catch-up after an outage, a region down), its
/// turns follow [`catch_up_owner`]: windows one round long, aligned on the clock and shared by
/// every old packet, each ending in the same quiet gap. Counted from each packet's own source
/// block, half of an old backlog would be in a quiet half at any moment and each region's
/// share would change every second; aligned long windows keep each region on a steady third
/// of the backlog for most of a round. The switch happens on a catch-up window boundary after
/// a quiet gap, so it never lets two regions start one packet either.
pub fn owner(source_timestamp: u64, now: u64, regions: usize, takeover_secs: u64) -> Option<usize> {
    let count = regions.max(1) as u64;
    let window = takeover_secs.max(2);
    let gap = window / 2;
    let round = window * count;
    // The first catch-up window boundary a full round or more after the source block.
    let switch = (source_timestamp.saturating_add(round)).div_ceil(round) * round;
    if now >= switch {
        return catch_up_owner(source_timestamp, now, regions, takeover_secs);
    }
    if now.saturating_add(gap) >= switch {
        return None;
    }
    let elapsed = now.saturating_sub(source_timestamp);
    if elapsed % window >= gap {
        return None;
    }
    let first = designated(source_timestamp, regions) as u64;
    usize::try_from((first + (elapsed / window) % count) % count).ok()
}

/// Turns of a packet that has outlived a round: windows of one round (`regions` ×
/// `takeover_secs`) aligned on the clock; in window `k` the packet belongs to its designated
/// region plus `k` round the ring, except in the window's last half-turn (quiet, as between
/// any two owners). Every region has one window in each `regions` rounds for a given packet,
/// so a region that is down only delays its share.
pub fn catch_up_owner(
    source_timestamp: u64,
    now: u64,
    regions: usize,
    takeover_secs: u64,
) -> Option<usize> {
    let (k, count) = catch_up_window(now, regions, takeover_secs)?;
    let first = designated(source_timestamp, regions) as u64;
    usize::try_from((first + k) % count).ok()
}

/// The catch-up window `now` falls in, modulo the region count, and that count; `None` in
/// the window's quiet last half-turn.
fn catch_up_window(now: u64, regions: usize, takeover_secs: u64) -> Option<(u64, u64)> {
    let count = regions.max(1) as u64;
    let window = takeover_secs.max(2);
    let round = window * count;
    if now % round >= round - window / 2 {
        return None;
    }
    Some(((now / round) % count, count))
}

/// The designation whose old packets (past their first round) are `me`'s to start at `now`
/// under [`catch_up_owner`]; `None` in a window's quiet end, when nobody starts any.
pub fn catch_up_designation(
    now: u64,
    regions: usize,
    takeover_secs: u64,
    me: usize,
) -> Option<usize> {
    let (k, count) = catch_up_window(now, regions, takeover_secs)?;
    usize::try_from((me as u64 % count + count - k) % count).ok()
}

/// Destination blocks that must follow a packet's quorum before a region other than the
/// designated one submits it: a stalled destination (the owner's transaction waiting in its
/// pool) hands the packet to nobody.
pub const TAKEOVER_MIN_BLOCKS: u64 = 3;

/// Whether another region than `me` may start submitting the packet now: `me`'s turn for it
/// has passed on, and a transaction of `me`'s still pending for it must be withdrawn.
pub fn handed_on(
    source_timestamp: u64,
    now: u64,
    regions: usize,
    takeover_secs: u64,
    me: usize,
) -> bool {
    regions > 1 && owner(source_timestamp, now, regions, takeover_secs).is_some_and(|o| o != me)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exactly_one_owner_at_a_time_round_the_ring_with_quiet_gaps() {
        // Source block at t=120 (slot 2 of 60 s → designated region 2 of 3), windows of 10 s.
        assert_eq!(owner(120, 120, 3, 10), Some(2));
        assert_eq!(owner(120, 124, 3, 10), Some(2));
        assert_eq!(owner(120, 125, 3, 10), None, "second half: quiet");
        assert_eq!(owner(120, 129, 3, 10), None);
        assert_eq!(owner(120, 130, 3, 10), Some(0));
        assert_eq!(owner(120, 140, 3, 10), Some(1));
        assert_eq!(
            owner(120, 100, 3, 10),
            Some(2),
            "a clock behind the source's never underflows"
        );
        // At no second are two regions entitled, and between two owners there is a gap —
        // also across the switch to catch-up turns, for source blocks at every phase.
        for source in [7_000u64, 7_001, 7_013, 7_029, 7_030, 7_044] {
            let mut last: Option<(usize, u64)> = None;
            for now in source.saturating_sub(50)..source + 1_000 {
                if let Some(o) = owner(source, now, 3, 10) {
                    if let Some((prev, at)) = last {
                        if prev != o {
                            assert!(now - at > 5, "gap between owners ({source}, {now})");
                        }
                    }
                    last = Some((o, now));
                }
            }
        }
    }

    #[test]
    fn an_old_packet_follows_long_aligned_windows_and_every_region_gets_one() {
        // Windows of 10 s, 3 regions: a round is 30 s. Source at 120: fresh until 150.
        assert_eq!(owner(120, 140, 3, 10), Some(1), "third fresh turn");
        assert_eq!(owner(120, 145, 3, 10), None);
        // From 150 on: window k = now / 30, owner (2 + k) % 3, quiet in its last 5 s.
        assert_eq!(owner(120, 150, 3, 10), Some((2 + 5) % 3));
        assert_eq!(owner(120, 174, 3, 10), Some((2 + 5) % 3), "most of a round");
        assert_eq!(owner(120, 175, 3, 10), None, "quiet before the next window");
        assert_eq!(owner(120, 180, 3, 10), Some((2 + 6) % 3));
        // Old packets with the same designation share their owner: a steady share each.
        assert_eq!(owner(0, 10_000, 3, 10), owner(59, 10_000, 3, 10));
        // Each region owns an old packet for 25 s of every 90.
        let mut seconds = [0u64; 3];
        for now in 10_000..10_090 {
            if let Some(o) = owner(120, now, 3, 10) {
                seconds[o] += 1;
            }
        }
        assert_eq!(seconds, [25, 25, 25]);
        // While fresh, half of each window is quiet; old, a sixth of each round.
        let active = |from: u64| {
            (from..from + 30)
                .filter(|t| owner(120, *t, 3, 10).is_some())
                .count()
        };
        assert_eq!(active(120), 15);
        assert_eq!(active(10_020), 25);
    }

    #[test]
    fn the_catch_up_designation_is_exactly_the_one_whose_old_packets_a_region_owns() {
        for regions in 1..=4usize {
            for now in 10_000..10_400u64 {
                for me in 0..regions {
                    let mine = catch_up_designation(now, regions, 10, me);
                    for d in 0..regions as u64 {
                        // A source block in a slot of designation d, long past its first round.
                        let source = d * ROTATION_SLOT_SECS;
                        let owned = catch_up_owner(source, now, regions, 10) == Some(me);
                        assert_eq!(owned, mine == Some(d as usize), "{regions} {now} {me} {d}");
                    }
                }
            }
        }
    }

    #[test]
    fn designation_is_the_same_for_a_burst_and_rotates_by_slot() {
        assert_eq!(designated(120, 3), designated(179, 3));
        assert_ne!(designated(120, 3), designated(180, 3));
        assert_eq!(designated(0, 1), 0);
    }

    #[test]
    fn a_turn_is_handed_on_only_when_another_region_may_start() {
        // Designated region 2 (slot 2), windows of 10 s: its start half, its quiet half, then 0.
        assert!(!handed_on(120, 122, 3, 10, 2), "own start half");
        assert!(
            !handed_on(120, 127, 3, 10, 2),
            "quiet half: still ours to land"
        );
        assert!(handed_on(120, 130, 3, 10, 2), "region 0 may start");
        assert!(
            !handed_on(120, 130, 3, 10, 0),
            "not handed on from the new owner"
        );
        assert!(
            !handed_on(120, 500, 1, 10, 0),
            "a lone region never hands on"
        );
    }
}
