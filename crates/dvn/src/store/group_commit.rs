//! Group commit for signatures: the peers' pushes and the sign stage's own.
//!
//! Under a backlog each peer pushes a signature for every packet it signs — hundreds a second
//! per node — and the sign stage records one of its own for each packet, 16 side by side.
//! Each stored on its own is a transaction of its own: on SQLite's single writer connection
//! (`synchronous=FULL`) one WAL sync each, queued in front of the pipeline's other writes.
//! Here the writes that arrive while one commit is under way wait for it and go into the next
//! transaction together: no timer, so a lone write is stored at once, and a burst costs one
//! sync per commit instead of one per signature. A write is answered only after the
//! transaction holding it committed, so our own signature is still shared only once it is
//! stored.

use alloy::primitives::{Address, B256};
use tokio::sync::{mpsc, oneshot};

use super::{SignatureWrite, Store, StoreError};

/// Most signatures in one transaction.
const MAX_GROUP: usize = 512;

/// Pushes waiting for a commit before new ones are refused as "store busy" (the pusher
/// retries, and pulls fill in what it gives up on). Our own signatures wait for room instead:
/// the sign stage has at most a few dozen in flight.
const QUEUE: usize = 4 * MAX_GROUP;

type Reply = oneshot::Sender<Result<bool, String>>;

struct Pending {
    write: SignatureWrite,
    reply: Reply,
}

/// Why a signature handed to the [`SignatureWriter`] was not stored.
#[derive(Debug, thiserror::Error)]
pub enum GroupCommitError {
    #[error("too many signatures waiting to be stored")]
    Busy,
    #[error("the signature writer has stopped")]
    Stopped,
    #[error("storing the signatures failed: {0}")]
    Store(String),
}

/// Stores signatures, many per transaction (see the module docs). Cheap to clone.
#[derive(Debug, Clone)]
pub struct SignatureWriter {
    queue: mpsc::Sender<Pending>,
}

impl SignatureWriter {
    /// Starts the writer on `store`; it stops when every handle is dropped.
    pub fn start(store: Store) -> Self {
        let (queue, mut waiting) = mpsc::channel::<Pending>(QUEUE);
        tokio::spawn(async move {
            let mut group = Vec::with_capacity(MAX_GROUP);
            let mut writes = Vec::with_capacity(MAX_GROUP);
            while waiting.recv_many(&mut group, MAX_GROUP).await > 0 {
                let replies: Vec<Reply> = group
                    .drain(..)
                    .map(|p: Pending| {
                        writes.push(p.write);
                        p.reply
                    })
                    .collect();
                let outcome = store
                    .write_signatures(&writes)
                    .await
                    .map_err(|e: StoreError| e.to_string());
                writes.clear();
                for (i, reply) in replies.into_iter().enumerate() {
                    // The caller may have gone (a push request cancelled): nothing to tell.
                    let _ = reply.send(outcome.as_ref().map(|s| s[i]).map_err(Clone::clone));
                }
            }
        });
        Self { queue }
    }

    /// Stores a peer's signature (ignored when already stored) in the next group; returns once
    /// that group committed. Refused at once when too many wait ([`GroupCommitError::Busy`]).
    pub async fn insert(
        &self,
        call_hash: B256,
        signer: Address,
        signature: Vec<u8>,
        source: &str,
    ) -> Result<(), GroupCommitError> {
        self.enqueue(call_hash, signer, signature, source)?
            .stored()
            .await
    }

    /// Queues a peer's signature for the next group without waiting for its commit; the
    /// returned [`Queued`] tells how it went. Writes are committed in the order they were
    /// queued: one queued before [`Self::record_own`] is committed no later than ours.
    pub fn enqueue(
        &self,
        call_hash: B256,
        signer: Address,
        signature: Vec<u8>,
        source: &str,
    ) -> Result<Queued, GroupCommitError> {
        let write = SignatureWrite::Peer {
            call_hash,
            signer,
            signature,
            source: source.to_string(),
        };
        let (reply, answer) = oneshot::channel();
        self.queue
            .try_send(Pending { write, reply })
            .map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => GroupCommitError::Busy,
                mpsc::error::TrySendError::Closed(_) => GroupCommitError::Stopped,
            })?;
        Ok(Queued(answer))
    }

    /// Our signature ([`SignatureWrite::Own`]) in the next group, as by
    /// [`Store::record_own_signature`]: true once it and the packet's move to signed
    /// committed; false (nothing stored) when the packet moved since it was read. Waits for
    /// room in the queue rather than being refused.
    pub async fn record_own(&self, own: SignatureWrite) -> Result<bool, GroupCommitError> {
        let (reply, answer) = oneshot::channel();
        self.queue
            .send(Pending { write: own, reply })
            .await
            .map_err(|_| GroupCommitError::Stopped)?;
        Self::answer(answer).await
    }

    async fn answer(
        answer: oneshot::Receiver<Result<bool, String>>,
    ) -> Result<bool, GroupCommitError> {
        answer
            .await
            .map_err(|_| GroupCommitError::Stopped)?
            .map_err(GroupCommitError::Store)
    }
}

/// A peer's signature queued by [`SignatureWriter::enqueue`].
#[derive(Debug)]
pub struct Queued(oneshot::Receiver<Result<bool, String>>);

impl Queued {
    /// Waits until the group holding the signature committed (or failed).
    pub async fn stored(self) -> Result<(), GroupCommitError> {
        SignatureWriter::answer(self.0).await.map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("dvn.db").display());
        let store = Store::connect(&url).await.unwrap();
        (dir, store)
    }

    #[tokio::test]
    async fn concurrent_pushes_are_all_stored_and_answered_after_their_commit() {
        let (_dir, store) = store().await;
        let writer = SignatureWriter::start(store.clone());
        // 300 pushes at once over 100 params (three signers each), half of them twice.
        let pushes: Vec<(B256, Address, Vec<u8>)> = (0..300u32)
            .map(|i| {
                let call_hash = B256::from(alloy::primitives::U256::from(i / 3));
                let signer = Address::with_last_byte((i % 3) as u8 + 1);
                (call_hash, signer, vec![i as u8; 65])
            })
            .collect();
        let all = pushes.iter().chain(pushes.iter().take(150));
        let answers = futures::future::join_all(all.map(|(h, s, sig)| {
            let writer = writer.clone();
            async move { writer.insert(*h, *s, sig.clone(), "peer").await }
        }))
        .await;
        assert!(answers.iter().all(Result::is_ok), "{answers:?}");
        // Every answer came after its commit: all of them are readable now, once each.
        for call_hash in (0..100u32).map(|i| B256::from(alloy::primitives::U256::from(i))) {
            let mut stored = store.signatures(call_hash).await.unwrap();
            stored.sort();
            let signers: Vec<Address> = stored.iter().map(|(s, _)| *s).collect();
            assert_eq!(
                signers,
                (1..=3).map(Address::with_last_byte).collect::<Vec<_>>(),
                "{call_hash}"
            );
        }
    }

    #[tokio::test]
    async fn our_signatures_commit_with_their_move_and_after_the_peers_queued_before_them() {
        let (_dir, store) = store().await;
        let writer = SignatureWriter::start(store.clone());
        let packets: Vec<crate::store::NewPacket> = (1..=20u64)
            .map(|n| crate::store::NewPacket {
                guid: B256::with_last_byte(n as u8),
                src_eid: 1,
                dst_eid: 2,
                sender: B256::with_last_byte(1),
                receiver: B256::with_last_byte(2),
                nonce: n,
                header: vec![1; 81],
                payload_hash: B256::with_last_byte(0xa0),
                tx_hash: B256::with_last_byte(0xee),
                block_number: n,
                block_hash: B256::with_last_byte(0xbb),
                log_index: 0,
                block_timestamp: 1_700_000_000,
            })
            .collect();
        store
            .record_scan(1, &packets, &[], (20, B256::ZERO))
            .await
            .unwrap();
        let rows = store
            .packets(crate::store::PacketState::Observed, None, 100)
            .await
            .unwrap();
        let (me, peer) = (Address::with_last_byte(1), Address::with_last_byte(2));
        // Twenty packets signed side by side, each after queueing a peer's signature over the
        // same param; the first packet's snapshot is stale (the row moved since it was read).
        let stale = rows[0].expect();
        store
            .transition(stale, crate::store::PacketState::Observed, None)
            .await
            .unwrap();
        let outcomes = futures::future::join_all(rows.iter().map(|row| {
            let (writer, store) = (writer.clone(), store.clone());
            let hash = B256::from(alloy::primitives::U256::from(row.packet.nonce));
            async move {
                let queued = writer.enqueue(hash, peer, vec![2; 65], "peer").unwrap();
                let own = writer
                    .record_own(SignatureWrite::Own {
                        expect: row.expect(),
                        confirmations: 5,
                        expiration: 9_000,
                        call_hash: hash,
                        signer: me,
                        signature: vec![1; 65],
                    })
                    .await
                    .unwrap();
                // Answered: the peer's signature was in the same commit or an earlier one.
                let peers_now = store.signatures(hash).await.unwrap();
                queued.stored().await.unwrap();
                (own, peers_now.iter().any(|(s, _)| *s == peer))
            }
        }))
        .await;
        assert_eq!(
            outcomes[0],
            (false, true),
            "stale snapshot: ours not stored"
        );
        assert!(
            outcomes[1..].iter().all(|o| *o == (true, true)),
            "{outcomes:?}"
        );
        let signed = store
            .packets(crate::store::PacketState::Signed, None, 100)
            .await
            .unwrap();
        assert_eq!(signed.len(), 19);
        for row in &signed {
            let hash = B256::from(alloy::primitives::U256::from(row.packet.nonce));
            assert_eq!(row.call_hash, Some(hash));
            let mut signers: Vec<Address> = store
                .signatures(hash)
                .await
                .unwrap()
                .into_iter()
                .map(|(s, _)| s)
                .collect();
            signers.sort();
            assert_eq!(signers, [me, peer]);
        }
    }

    #[tokio::test]
    async fn a_failed_commit_is_reported_to_every_push_in_it() {
        let (_dir, store) = store().await;
        let writer = SignatureWriter::start(store.clone());
        store.pool.close().await;
        let answers = futures::future::join_all((0..5u8).map(|i| {
            let writer = writer.clone();
            async move {
                writer
                    .insert(B256::with_last_byte(i), Address::ZERO, vec![i; 65], "peer")
                    .await
            }
        }))
        .await;
        assert!(
            answers
                .iter()
                .all(|a| matches!(a, Err(GroupCommitError::Store(_)))),
            "{answers:?}"
        );
    }
}
