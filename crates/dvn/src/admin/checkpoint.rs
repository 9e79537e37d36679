//! Signed audit checkpoints: every `audit.checkpoint_interval_secs`, when the audit log has
//! grown, the node appends `{seq, hash, at_ms, node, signer, signature}` to
//! `audit.checkpoint_file`. The signature is the node's signer key over a domain-separated
//! digest of (seq, hash), so a checkpoint cannot be forged by whoever can write the file, and
//! a database whose audit tail was cut or rewritten no longer matches it
//! (`dvn audit verify --checkpoint FILE`).

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use alloy::primitives::{keccak256, Address, Signature, B256};
use serde::{Deserialize, Serialize};

use crate::signer::KeyHandle;
use crate::store::Store;

/// One line of a checkpoint file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub seq: u64,
    pub hash: B256,
    pub at_ms: i64,
    pub node: String,
    pub signer: Address,
    /// 65-byte signature, hex.
    pub signature: String,
}

/// What is signed: never a LayerZero hash (the tag makes the preimage distinct).
pub fn digest(seq: u64, hash: B256) -> B256 {
    let mut data = b"dvn audit checkpoint v1".to_vec();
    data.extend_from_slice(&seq.to_be_bytes());
    data.extend_from_slice(hash.as_slice());
    keccak256(data)
}

impl Checkpoint {
    /// The address the signature recovers to, if it is a valid signature of this checkpoint.
    pub fn recovered_signer(&self) -> Option<Address> {
        let bytes = alloy::primitives::hex::decode(&self.signature).ok()?;
        let signature = Signature::try_from(bytes.as_slice()).ok()?;
        signature
            .recover_address_from_prehash(&digest(self.seq, self.hash))
            .ok()
    }
}

/// Reads every checkpoint line of `file`.
pub fn read(file: &Path) -> anyhow::Result<Vec<Checkpoint>> {
    let text =
        std::fs::read_to_string(file).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .enumerate()
        .map(|(i, l)| {
            serde_json::from_str(l)
                .map_err(|e| anyhow::anyhow!("{} line {}: {e}", file.display(), i + 1))
        })
        .collect()
}

/// Writes one checkpoint of the current head, if it moved since `last`; the head written.
pub async fn write_once(
    store: &Store,
    signer: &KeyHandle,
    node: &str,
    file: &Path,
    last: Option<u64>,
) -> anyhow::Result<Option<u64>> {
    let Some((seq, hash)) = store.audit_head().await? else {
        return Ok(last);
    };
    if last == Some(seq) {
        return Ok(last);
    }
    let signature = signer.sign_digest(digest(seq, hash)).await?;
    let checkpoint = Checkpoint {
        seq,
        hash,
        at_ms: crate::store::now_ms(),
        node: node.to_string(),
        signer: signer.address(),
        signature: alloy::primitives::hex::encode_prefixed(signature.as_bytes()),
    };
    let mut line = serde_json::to_string(&checkpoint)?;
    line.push('\n');
    let mut out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(file)?;
    out.write_all(line.as_bytes())?;
    out.sync_data()?;
    Ok(Some(seq))
}

/// The node's checkpoint task, until cancelled.
pub async fn run(
    store: Store,
    signer: KeyHandle,
    node: String,
    file: std::path::PathBuf,
    every: Duration,
    cancel: tokio_util::sync::CancellationToken,
) {
    let mut last = None;
    loop {
        match write_once(&store, &signer, &node, &file, last).await {
            Ok(head) => last = head,
            Err(e) => {
                tracing::error!(file = %file.display(), "audit checkpoint not written: {e:#}")
            }
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
    }
}
