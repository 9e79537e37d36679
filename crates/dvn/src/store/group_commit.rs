//! Group commit for the signatures peers push.
//!
//! Under a backlog each peer pushes a signature for every packet it signs — hundreds a second
//! per node — and each one stored on its own is a transaction of its own: on SQLite's single
//! writer connection (`synchronous=FULL`) one WAL sync each, queued in front of the pipeline's
//! own writes. Here the pushes that arrive while one commit is under way wait for it and go
//! into the next transaction together: no timer, so a lone push is stored at once, and a
//! burst costs one sync per commit instead of one per signature. A push is answered only
//! after the transaction holding its signature committed, as before.

use alloy::primitives::{Address, B256};
use tokio::sync::{mpsc, oneshot};

use super::{Store, StoreError};

/// Most signatures in one transaction.
const MAX_GROUP: usize = 512;

/// Pushes waiting for a commit before new ones are refused as "store busy" (the pusher
/// retries, and pulls fill in what it gives up on).
const QUEUE: usize = 4 * MAX_GROUP;

type Reply = oneshot::Sender<Result<(), String>>;

struct Pending {
    call_hash: B256,
    signer: Address,
    signature: Vec<u8>,
    source: String,
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

/// Stores peers' signatures, many per transaction (see the module docs). Cheap to clone.
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
            while waiting.recv_many(&mut group, MAX_GROUP).await > 0 {
                let rows: Vec<(B256, Address, Vec<u8>, String)> = group
                    .iter_mut()
                    .map(|p| {
                        (
                            p.call_hash,
                            p.signer,
                            std::mem::take(&mut p.signature),
                            std::mem::take(&mut p.source),
                        )
                    })
                    .collect();
                let outcome = store
                    .insert_signatures(&rows)
                    .await
                    .map(|_| ())
                    .map_err(|e: StoreError| e.to_string());
                for pending in group.drain(..) {
                    // The pusher may have gone (its request cancelled): nothing to tell.
                    let _ = pending.reply.send(outcome.clone());
                }
            }
        });
        Self { queue }
    }

    /// Stores one signature (ignored when already stored) in the next group; returns once
    /// that group committed.
    pub async fn insert(
        &self,
        call_hash: B256,
        signer: Address,
        signature: Vec<u8>,
        source: &str,
    ) -> Result<(), GroupCommitError> {
        let (reply, answer) = oneshot::channel();
        self.queue
            .try_send(Pending {
                call_hash,
                signer,
                signature,
                source: source.to_string(),
                reply,
            })
            .map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => GroupCommitError::Busy,
                mpsc::error::TrySendError::Closed(_) => GroupCommitError::Stopped,
            })?;
        answer
            .await
            .map_err(|_| GroupCommitError::Stopped)?
            .map_err(GroupCommitError::Store)
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
