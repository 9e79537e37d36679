//! The end-of-scenario checks, read from the chains themselves (never from a node's store):
//! - **I1 no loss**: every packet assigned to our DVN is verified on the destination;
//! - **I2 no duplicate**: exactly one `PayloadVerified` from our DVN per packet;
//! - **I3 no forgery**: every `PayloadVerified` from our DVN matches a packet really sent.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use alloy::primitives::{keccak256, B256};
use dvn_lz::{SentPacket, VerificationState};

use crate::devnet::{Devnet, Direction};
use crate::wait::eventually;

/// What the chain says about a set of packets on one direction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// Packets not yet verified (Verifying on the destination).
    pub unverified: Vec<u64>,
    /// Packets with more than one `PayloadVerified` from our DVN (nonce, count).
    pub duplicates: Vec<(u64, usize)>,
    /// `PayloadVerified` events from our DVN that match no sent packet.
    pub forged: usize,
    /// Distinct transactions that carried our DVN's verifications.
    pub execute_transactions: usize,
}

impl Report {
    pub fn holds(&self) -> bool {
        self.unverified.is_empty() && self.duplicates.is_empty() && self.forged == 0
    }
}

impl Devnet {
    /// Reads I1–I3 for `packets` (all packets sent on `direction`).
    pub async fn check_invariants(
        &self,
        direction: Direction,
        packets: &[SentPacket],
    ) -> anyhow::Result<Report> {
        let (_, dst) = self.sides(direction);
        let logs = dst
            .chain
            .logs(dst.contracts.receive_lib, <dvn_lz::contracts::IReceiveUln302::PayloadVerified as alloy::sol_types::SolEvent>::SIGNATURE_HASH)
            .await?;
        let mut counts: HashMap<(B256, B256), usize> = HashMap::new();
        let mut transactions = HashSet::new();
        for log in logs {
            let event = <dvn_lz::contracts::IReceiveUln302::PayloadVerified as alloy::sol_types::SolEvent>::decode_log_data(&log.inner.data)?;
            if event.dvn != dst.contracts.dvn {
                continue;
            }
            *counts
                .entry((keccak256(&event.header), event.proofHash))
                .or_default() += 1;
            if let Some(tx) = log.transaction_hash {
                transactions.insert(tx);
            }
        }
        let sent: HashSet<(B256, B256)> = packets
            .iter()
            .map(|p| (p.packet.header.hash(), p.packet.payload_hash()))
            .collect();
        let mut report = Report {
            unverified: vec![],
            duplicates: vec![],
            forged: 0,
            execute_transactions: transactions.len(),
        };
        for p in packets {
            let key = (p.packet.header.hash(), p.packet.payload_hash());
            match counts.get(&key).copied().unwrap_or(0) {
                0 => {
                    // Verified and already committed leaves no hashLookup, but the event stays.
                    if self.verification_state(direction, p).await? == VerificationState::Verifying
                    {
                        report.unverified.push(p.packet.header.nonce);
                    }
                }
                1 => {}
                n => report.duplicates.push((p.packet.header.nonce, n)),
            }
        }
        report.forged = counts.keys().filter(|k| !sent.contains(k)).count();
        Ok(report)
    }

    /// Plays the executor: waits until every packet is verifiable (mining a destination block
    /// per poll, like a live chain), then commits and delivers them in nonce order. Returns false if they did not all become verifiable in time.
    pub async fn deliver_when_verified(
        &self,
        direction: Direction,
        packets: &[SentPacket],
        timeout: Duration,
    ) -> anyhow::Result<bool> {
        let (_, dst) = self.sides(direction);
        let all_verifiable = eventually(timeout, Duration::from_millis(200), || async {
            // The destination keeps producing blocks while we wait, as a real chain does: the
            // submitter rotation runs on its clock, which stands still on an idle automine chain.
            let _ = dst.chain.keep_up_with_wall_clock().await;
            for p in packets {
                match self.verification_state(direction, p).await {
                    Ok(VerificationState::Verifiable | VerificationState::Verified) => {}
                    _ => return None,
                }
            }
            Some(())
        })
        .await;
        if all_verifiable.is_none() {
            return Ok(false);
        }
        let mut ordered: Vec<&SentPacket> = packets.iter().collect();
        ordered.sort_by_key(|p| p.packet.header.nonce);
        for p in ordered {
            if self.verification_state(direction, p).await? == VerificationState::Verifiable {
                self.commit_and_deliver(direction, p).await?;
            }
        }
        Ok(true)
    }
}
