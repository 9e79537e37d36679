//! The audit log: who did what to the node, when, from where, and with what result —
//! append-only and hash-chained.
//!
//! Each record's hash is SHA-256 over a fixed domain tag and the JSON array of its fields,
//! the previous record's hash included, so editing, deleting or reordering any row breaks the
//! chain at that row, and [`verify`] names it. A cut tail leaves a valid shorter chain; that is
//! caught against a checkpoint (sequence and head hash) kept outside the database.

use alloy::primitives::B256;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sqlx::Row;

use super::{now_ms, rows, Store, StoreError};

/// Domain tag of the record hash (changing the encoding means a new tag).
const HASH_TAG: &[u8] = b"dvn-audit-v1\n";

/// PostgreSQL advisory lock key serialising audit appends ("dvnaudit" in ASCII).
const AUDIT_LOCK: i64 = 0x64_76_6e_61_75_64_69_74;

/// How often an append is retried when a concurrent writer took the same sequence number
/// (SQLite between processes; PostgreSQL appenders take turns under [`AUDIT_LOCK`]).
const APPEND_ATTEMPTS: usize = 8;

/// What is recorded (the chain fields are filled in by [`Store::audit_append`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// Who: the token's operator, `node` for the node's own events, `local:<user>` for
    /// commands run on the host against the store.
    pub operator: String,
    /// Their role (`none` when unauthenticated).
    pub role: String,
    pub operation: String,
    pub target: String,
    /// Parameters as JSON, secrets already redacted.
    pub params: serde_json::Value,
    /// `ok`, `begun`, `denied`, `unauthenticated: …`, `error: …`.
    pub result: String,
    pub source_ip: String,
}

/// One stored record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    pub seq: u64,
    pub at_ms: i64,
    #[serde(flatten)]
    pub entry: AuditEntry,
    pub prev_hash: B256,
    pub hash: B256,
}

/// The hash a record must carry, from its fields and the previous record's hash.
pub fn record_hash(seq: u64, at_ms: i64, entry: &AuditEntry, prev_hash: B256) -> B256 {
    let fields = serde_json::json!([
        seq,
        at_ms,
        entry.operator,
        entry.role,
        entry.operation,
        entry.target,
        entry.params.to_string(),
        entry.result,
        entry.source_ip,
        prev_hash.to_string(),
    ]);
    let mut hasher = Sha256::new();
    hasher.update(HASH_TAG);
    hasher.update(fields.to_string().as_bytes());
    B256::from_slice(&hasher.finalize())
}

/// Where and why the chain is broken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize)]
pub enum ChainBreak {
    #[error("record {seq}: its fields do not match its hash (edited)")]
    Edited { seq: u64 },
    #[error("record {seq}: does not follow record {prev} (a record was deleted, inserted or reordered here)")]
    Unlinked { seq: u64, prev: u64 },
    #[error("records start at {first}, not 1 (the head of the log was deleted)")]
    HeadMissing { first: u64 },
    #[error("sequence jumps from {prev} to {seq} (records deleted)")]
    Gap { prev: u64, seq: u64 },
    #[error("checkpoint at record {seq} does not match the log: {why}")]
    Checkpoint { seq: u64, why: String },
}

/// Checks a whole log, in stored order (by sequence); the first break found.
pub fn verify(records: &[AuditRecord]) -> Result<(), ChainBreak> {
    let mut prev: Option<&AuditRecord> = None;
    for record in records {
        match prev {
            None if record.seq != 1 => return Err(ChainBreak::HeadMissing { first: record.seq }),
            None if record.prev_hash != B256::ZERO => {
                return Err(ChainBreak::Unlinked {
                    seq: record.seq,
                    prev: 0,
                })
            }
            Some(p) if record.seq != p.seq + 1 => {
                return Err(ChainBreak::Gap {
                    prev: p.seq,
                    seq: record.seq,
                })
            }
            Some(p) if record.prev_hash != p.hash => {
                return Err(ChainBreak::Unlinked {
                    seq: record.seq,
                    prev: p.seq,
                })
            }
            _ => {}
        }
        if record_hash(record.seq, record.at_ms, &record.entry, record.prev_hash) != record.hash {
            return Err(ChainBreak::Edited { seq: record.seq });
        }
        prev = Some(record);
    }
    Ok(())
}

/// Checks that a checkpoint (sequence, head hash) written earlier is still in the log: a log
/// cut below it, or rewritten up to it, fails.
pub fn verify_checkpoint(records: &[AuditRecord], seq: u64, hash: B256) -> Result<(), ChainBreak> {
    let last = records.last().map_or(0, |r| r.seq);
    match records.iter().find(|r| r.seq == seq) {
        Some(r) if r.hash == hash => Ok(()),
        Some(_) => Err(ChainBreak::Checkpoint {
            seq,
            why: "the record there has another hash (rewritten)".into(),
        }),
        None => Err(ChainBreak::Checkpoint {
            seq,
            why: format!("the log ends at record {last} (its tail was cut)"),
        }),
    }
}

fn record_from_row(r: &sqlx::any::AnyRow) -> Result<AuditRecord, StoreError> {
    let params: String = r.try_get("params")?;
    Ok(AuditRecord {
        seq: rows::u64_col(r, "seq")?,
        at_ms: r.try_get("at_ms")?,
        entry: AuditEntry {
            operator: r.try_get("operator")?,
            role: r.try_get("role")?,
            operation: r.try_get("operation")?,
            target: r.try_get("target")?,
            // A row edited into invalid JSON still verifies as "edited", not as a read error.
            params: serde_json::from_str(&params).unwrap_or(serde_json::Value::String(params)),
            result: r.try_get("result")?,
            source_ip: r.try_get("source_ip")?,
        },
        prev_hash: rows::b256_col(r, "prev_hash")?,
        hash: rows::b256_col(r, "hash")?,
    })
}

/// SQLite's "database is locked" family (primary code 5: SQLITE_BUSY, BUSY_SNAPSHOT, …).
fn is_sqlite_busy(e: &dyn sqlx::error::DatabaseError) -> bool {
    e.code()
        .and_then(|c| c.parse::<i64>().ok())
        .is_some_and(|c| c & 0xff == 5)
}

impl Store {
    /// Appends one record to the chain; its sequence number. Concurrent appenders (the node
    /// and a CLI on the same database) race for the next sequence number; the loser retries.
    pub async fn audit_append(&self, entry: &AuditEntry) -> Result<u64, StoreError> {
        let mut last_error = None;
        for _ in 0..APPEND_ATTEMPTS {
            let mut tx = self.pool.begin().await?;
            if !self.is_sqlite() {
                // Appenders take turns (the lock ends with the transaction): without it, many
                // concurrent appenders keep colliding on the next sequence number.
                sqlx::query("SELECT pg_advisory_xact_lock($1)")
                    .bind(AUDIT_LOCK)
                    .execute(&mut *tx)
                    .await?;
            }
            let head = sqlx::query("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1")
                .fetch_optional(&mut *tx)
                .await?;
            let (prev_seq, prev_hash) = match head {
                Some(r) => (rows::u64_col(&r, "seq")?, rows::b256_col(&r, "hash")?),
                None => (0, B256::ZERO),
            };
            let seq = prev_seq + 1;
            let at_ms = now_ms();
            let hash = record_hash(seq, at_ms, entry, prev_hash);
            let inserted = sqlx::query(
                "INSERT INTO audit_log (seq, at_ms, operator, role, operation, target, params, \
                 result, source_ip, prev_hash, hash) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
            )
            .bind(super::int(seq))
            .bind(at_ms)
            .bind(&entry.operator)
            .bind(&entry.role)
            .bind(&entry.operation)
            .bind(&entry.target)
            .bind(entry.params.to_string())
            .bind(&entry.result)
            .bind(&entry.source_ip)
            .bind(prev_hash.to_vec())
            .bind(hash.to_vec())
            .execute(&mut *tx)
            .await;
            match inserted {
                Ok(_) => {
                    tx.commit().await?;
                    return Ok(seq);
                }
                Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                    last_error = Some(sqlx::Error::Database(e));
                }
                // SQLite: another process (the node, a CLI) wrote since this transaction read
                // the head, so it cannot become the writer (SQLITE_BUSY / BUSY_SNAPSHOT,
                // returned at once whatever the busy timeout): read the head again.
                Err(sqlx::Error::Database(e)) if is_sqlite_busy(e.as_ref()) => {
                    last_error = Some(sqlx::Error::Database(e));
                    drop(tx);
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(last_error.map_or(StoreError::Corrupt("audit append".into()), Into::into))
    }

    /// Records an event of the node itself (start, stop, a safety guard firing): operator
    /// `node`. A failure is logged, not returned: the event has happened either way.
    pub async fn audit_node_event(&self, operation: &str, target: &str, params: serde_json::Value) {
        let entry = AuditEntry {
            operator: "node".into(),
            role: "node".into(),
            operation: operation.into(),
            target: target.into(),
            params,
            result: "ok".into(),
            source_ip: "local".into(),
        };
        if let Err(e) = self.audit_append(&entry).await {
            tracing::error!(operation, "audit log not writable: {e}");
        }
    }

    /// Records with `seq` above `after`, oldest first, at most `limit`.
    pub async fn audit_records(
        &self,
        after: u64,
        limit: u64,
    ) -> Result<Vec<AuditRecord>, StoreError> {
        let rows = sqlx::query("SELECT * FROM audit_log WHERE seq > $1 ORDER BY seq LIMIT $2")
            .bind(super::int(after))
            .bind(super::int(limit))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(record_from_row).collect()
    }

    /// The whole log, oldest first (verification reads it in pages).
    pub async fn audit_all(&self) -> Result<Vec<AuditRecord>, StoreError> {
        let mut all = Vec::new();
        loop {
            let page = self
                .audit_records(all.last().map_or(0, |r: &AuditRecord| r.seq), 5_000)
                .await?;
            if page.is_empty() {
                return Ok(all);
            }
            all.extend(page);
        }
    }

    /// The newest record's (sequence, hash); None for an empty log.
    pub async fn audit_head(&self) -> Result<Option<(u64, B256)>, StoreError> {
        let row = sqlx::query("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1")
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| Ok((rows::u64_col(&r, "seq")?, rows::b256_col(&r, "hash")?)))
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(n: u64) -> Vec<AuditRecord> {
        let mut out: Vec<AuditRecord> = Vec::new();
        for seq in 1..=n {
            let entry = AuditEntry {
                operator: "alice".into(),
                role: "admin".into(),
                operation: "pause".into(),
                target: format!("path:{seq}"),
                params: serde_json::json!({ "reason": "test" }),
                result: "ok".into(),
                source_ip: "127.0.0.1".into(),
            };
            let prev_hash = out.last().map_or(B256::ZERO, |r| r.hash);
            let hash = record_hash(seq, 1_000 + seq as i64, &entry, prev_hash);
            out.push(AuditRecord {
                seq,
                at_ms: 1_000 + seq as i64,
                entry,
                prev_hash,
                hash,
            });
        }
        out
    }

    #[test]
    fn every_kind_of_tampering_names_the_record() {
        let good = chain(5);
        assert_eq!(verify(&good), Ok(()));
        assert_eq!(verify(&[]), Ok(()));

        let mut edited = good.clone();
        edited[2].entry.result = "denied".into();
        assert_eq!(verify(&edited), Err(ChainBreak::Edited { seq: 3 }));

        let mut deleted = good.clone();
        deleted.remove(3);
        assert_eq!(verify(&deleted), Err(ChainBreak::Gap { prev: 3, seq: 5 }));

        // Deleted and renumbered to hide the gap: the link breaks instead.
        let mut renumbered = good.clone();
        renumbered.remove(1);
        for (i, r) in renumbered.iter_mut().enumerate() {
            r.seq = i as u64 + 1;
        }
        assert_eq!(
            verify(&renumbered),
            Err(ChainBreak::Unlinked { seq: 2, prev: 1 })
        );

        let mut head_cut = good.clone();
        head_cut.remove(0);
        assert_eq!(verify(&head_cut), Err(ChainBreak::HeadMissing { first: 2 }));

        // The tail cut is a valid chain; only a checkpoint shows it.
        let cut = &good[..3];
        assert_eq!(verify(cut), Ok(()));
        assert!(verify_checkpoint(&good, 5, good[4].hash).is_ok());
        assert!(matches!(
            verify_checkpoint(cut, 5, good[4].hash),
            Err(ChainBreak::Checkpoint { seq: 5, .. })
        ));
    }
}
