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

/// The one region that may *start* submitting a packet at time `now` (unix seconds), if any:
/// the designated region during its first window of `takeover_secs` after the source block,
/// then the next region round the ring, one window each. Only the first half of a window is
/// for starting a submission; the second half is a quiet gap in which the owner's transaction
/// is mined before the next owner looks, and which absorbs clock skew between regions. So two
/// live regions never both send the same packet, and a region coming back never races the one
/// that took over.
pub fn owner(source_timestamp: u64, now: u64, regions: usize, takeover_secs: u64) -> Option<usize> {
    let regions = regions.max(1) as u64;
    let window = takeover_secs.max(2);
    let elapsed = now.saturating_sub(source_timestamp);
    if elapsed % window >= window / 2 {
        return None;
    }
    let first = designated(source_timestamp, regions as usize) as u64;
    usize::try_from((first + (elapsed / window) % regions) % regions).ok()
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
        assert_eq!(owner(120, 150, 3, 10), Some(2), "round the ring");
        assert_eq!(
            owner(120, 100, 3, 10),
            Some(2),
            "a clock behind the source's never underflows"
        );
        // At no second are two regions entitled, and between two owners there is a gap.
        let mut last: Option<(usize, u64)> = None;
        for now in 0..1_000 {
            if let Some(o) = owner(7_000, now, 3, 10) {
                if let Some((prev, at)) = last {
                    if prev != o {
                        assert!(now - at > 5, "gap between owners");
                    }
                }
                last = Some((o, now));
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
