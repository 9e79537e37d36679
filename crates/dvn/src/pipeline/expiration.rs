//! Deterministic expirations: every region must sign byte-identical params without relying on
//! wall clocks agreeing.
//!
//! A param's expiration is anchored at the *source block's timestamp* (the same for every
//! region) and moves in whole lifetimes: `anchor + ttl × (k + 1)` for the smallest `k` that
//! leaves at least half a lifetime on the destination's clock. A fresh packet gets `k = 0` on
//! every node; a packet that waited past that (downtime, an expired attempt) moves to the same
//! next window everywhere, except within a moment of a window edge, which resolves on the next
//! evaluation.

/// The expiration to sign for a packet whose source block has timestamp `anchor`, when the
/// destination's latest block has timestamp `dst_now`.
pub fn expiration(anchor: u64, ttl: u64, dst_now: u64) -> u64 {
    let ttl = ttl.max(1);
    let need = dst_now.saturating_add(ttl / 2);
    let first = anchor.saturating_add(ttl);
    if need <= first {
        return first;
    }
    let windows = (need - first).div_ceil(ttl);
    first.saturating_add(windows.saturating_mul(ttl))
}

/// True when a signed expiration no longer leaves enough time (a quarter lifetime) to be
/// aggregated, submitted and mined; the packet must be re-signed for the next window.
pub fn too_close(expiration: u64, ttl: u64, dst_now: u64) -> bool {
    expiration <= dst_now.saturating_add(ttl / 4)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fresh_packets_get_the_first_window_on_every_node() {
        // Nodes whose destination clocks differ by minutes still agree.
        for now in [1_000, 1_030, 1_500, 2_800] {
            assert_eq!(expiration(1_000, 3_600, now), 4_600);
        }
    }

    #[test]
    fn late_packets_move_in_whole_windows() {
        assert_eq!(expiration(1_000, 3_600, 2_801), 8_200);
        assert_eq!(expiration(1_000, 3_600, 6_400), 8_200);
        assert_eq!(expiration(1_000, 3_600, 6_401), 11_800);
        for now in 0..20_000u64 {
            let e = expiration(1_000, 3_600, now);
            assert!(e >= now + 1_800, "at least half a lifetime left");
            assert_eq!((e - 1_000) % 3_600, 0, "always a whole number of lifetimes");
        }
    }

    #[test]
    fn too_close_means_under_a_quarter_lifetime() {
        assert!(!too_close(4_600, 3_600, 3_699));
        assert!(too_close(4_600, 3_600, 3_700));
    }
}
