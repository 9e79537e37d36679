//! Peers' signatures that arrive before this node has signed the packet itself.
//!
//! The three regions sign a backlog in the same order at about the same pace, so in a
//! catch-up about half of the pushes reach a peer a moment before it has built the param
//! (until then the push's hash is unknown there). Declining them meant pulling each one again
//! later — a request per packet per peer, and a quorum that forms a pull interval late. A
//! signature that recovers to a member of one of our DVNs' on-chain signer sets is held here
//! instead, in memory and bounded, and handed to the store when this node signs the same
//! param (its own hash, built from its own observation: a held signature over any other hash
//! is never used, and is dropped when it ages out of the bound).

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use alloy::primitives::{Address, B256};

/// Param hashes held at most; the oldest goes first beyond it (what it held is pulled later
/// if it is ever needed).
pub const MAX_HELD_HASHES: usize = 4_096;

/// Signatures held per hash at most (one per signer: more than any quorum needs).
const MAX_PER_HASH: usize = 8;

#[derive(Debug, Default)]
struct Held {
    by_hash: HashMap<B256, Vec<(Address, Vec<u8>)>>,
    /// Arrival order of the hashes in `by_hash` (a hash taken early stays here until it
    /// reaches the front: popping it then finds nothing).
    order: VecDeque<B256>,
}

/// The held signatures, shared by the peer listener (which holds) and the sign stage (which
/// takes). Signature bytes are kept as received: whoever takes them checks them again.
#[derive(Debug, Default)]
pub struct EarlySignatures {
    held: Mutex<Held>,
}

impl EarlySignatures {
    /// Holds `signer`'s signature over `call_hash` (a second one from the same signer
    /// replaces nothing: the first is kept).
    pub fn hold(&self, call_hash: B256, signer: Address, signature: Vec<u8>) {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        let Held { by_hash, order } = &mut *held;
        match by_hash.get_mut(&call_hash) {
            Some(entries) => {
                if entries.len() < MAX_PER_HASH && entries.iter().all(|(s, _)| *s != signer) {
                    entries.push((signer, signature));
                }
            }
            None => {
                while by_hash.len() >= MAX_HELD_HASHES {
                    let Some(oldest) = order.pop_front() else {
                        break;
                    };
                    by_hash.remove(&oldest);
                }
                by_hash.insert(call_hash, vec![(signer, signature)]);
                order.push_back(call_hash);
            }
        }
        // Hashes taken early leave their place in `order` behind; keep it bounded too.
        if order.len() > 2 * MAX_HELD_HASHES {
            order.retain(|h| by_hash.contains_key(h));
        }
    }

    /// Everything held over `call_hash`, removed from here.
    pub fn take(&self, call_hash: B256) -> Vec<(Address, Vec<u8>)> {
        self.held
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .by_hash
            .remove(&call_hash)
            .unwrap_or_default()
    }

    /// Param hashes held now.
    pub fn len(&self) -> usize {
        self.held
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .by_hash
            .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hash(n: u64) -> B256 {
        B256::left_padding_from(&n.to_be_bytes())
    }

    #[test]
    fn held_signatures_are_taken_once_one_per_signer() {
        let early = EarlySignatures::default();
        let (a, b) = (Address::repeat_byte(1), Address::repeat_byte(2));
        early.hold(hash(1), a, vec![1]);
        early.hold(hash(1), a, vec![9]);
        early.hold(hash(1), b, vec![2]);
        assert_eq!(early.take(hash(1)), vec![(a, vec![1]), (b, vec![2])]);
        assert!(early.take(hash(1)).is_empty(), "taken once");
        assert!(early.take(hash(2)).is_empty());
    }

    #[test]
    fn the_oldest_hash_goes_first_beyond_the_bound() {
        let early = EarlySignatures::default();
        let signer = Address::repeat_byte(1);
        for n in 0..MAX_HELD_HASHES as u64 + 10 {
            early.hold(hash(n), signer, vec![1]);
        }
        assert_eq!(early.len(), MAX_HELD_HASHES);
        let last = MAX_HELD_HASHES as u64 + 9;
        assert_eq!(early.take(hash(last)).len(), 1, "the newest is held");
        assert!(early.take(hash(9)).is_empty(), "the oldest went first");
        assert_eq!(early.take(hash(10)).len(), 1);
        // Hashes held and taken again and again (the sign stage keeping up) leave no trail.
        for n in 0..3 * MAX_HELD_HASHES as u64 {
            early.hold(hash(1_000_000 + n), signer, vec![1]);
            early.take(hash(1_000_000 + n));
        }
        let held = early.held.lock().unwrap();
        assert!(held.order.len() <= 2 * MAX_HELD_HASHES + 1);
    }
}
