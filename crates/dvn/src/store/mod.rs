//! The store: the node's only source of truth. Every stage persists its transition here
//! before anything else sees it; after a restart, every stage reloads its work from here.
//!
//! One schema, two backends through sqlx's `Any` driver: embedded SQLite (default) and
//! PostgreSQL. The statements are shared; only the DDL differs (`BLOB` vs `BYTEA`), so each
//! backend has its own versioned migrations under `migrations/`.

mod rows;

use std::time::{SystemTime, UNIX_EPOCH};

use alloy::primitives::{Address, B256};
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Row};

pub use rows::{NewPacket, PacketRow, PacketState, PathKey, SubmissionRow};

/// Errors from the store; callers retry on `Database` and stop on `Corrupt`.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migrations: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("stored row is corrupt: {0}")]
    Corrupt(String),
    #[error("unsupported store URL (use sqlite: or postgres://)")]
    UnsupportedUrl,
}

/// What happened when a packet observation was recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Observed {
    /// First time we saw this packet.
    New,
    /// Seen before with the same payload (overlapping scans, reorg re-inclusion).
    Known,
    /// A different payload for a (path, nonce) not yet signed: the new one replaces it.
    Replaced,
    /// A different payload for a (path, nonce) we already signed: refused, packet halted.
    Conflict,
}

/// Handle to the database; cheap to clone.
#[derive(Debug, Clone)]
pub struct Store {
    pool: AnyPool,
}

/// Milliseconds since the Unix epoch (for bookkeeping timestamps only, never for signing).
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn int(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

impl Store {
    /// Connects and brings the schema up to date.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        sqlx::any::install_default_drivers();
        let (url, sqlite) = if let Some(rest) = url.strip_prefix("sqlite:") {
            // Create the file on first use; one writer at a time is what SQLite wants.
            let sep = if rest.contains('?') { '&' } else { '?' };
            let url = if rest.contains("mode=") {
                url.to_string()
            } else {
                format!("{url}{sep}mode=rwc")
            };
            (url, true)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            (url.to_string(), false)
        } else {
            return Err(StoreError::UnsupportedUrl);
        };
        let pool = AnyPoolOptions::new()
            .max_connections(if sqlite { 1 } else { 8 })
            .acquire_timeout(std::time::Duration::from_secs(10))
            .connect(&url)
            .await?;
        if sqlite {
            sqlx::query("PRAGMA journal_mode=WAL")
                .execute(&pool)
                .await?;
            sqlx::query("PRAGMA synchronous=FULL")
                .execute(&pool)
                .await?;
            sqlx::migrate!("migrations/sqlite").run(&pool).await?;
        } else {
            sqlx::migrate!("migrations/postgres").run(&pool).await?;
        }
        Ok(Self { pool })
    }

    /// True when the database answers.
    pub async fn ping(&self) -> bool {
        sqlx::query("SELECT 1").execute(&self.pool).await.is_ok()
    }

    /// The scan cursor of source chain `eid`.
    pub async fn cursor(&self, eid: u32) -> Result<Option<(u64, B256)>, StoreError> {
        let row = sqlx::query("SELECT block_number, block_hash FROM cursors WHERE eid = $1")
            .bind(i64::from(eid))
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| {
            Ok((
                rows::u64_col(&r, "block_number")?,
                rows::b256_col(&r, "block_hash")?,
            ))
        })
        .transpose()
    }

    /// Records what one scan step found and moves the cursor, atomically: a crash leaves either
    /// both or neither, so no log is skipped and none is lost.
    pub async fn record_scan(
        &self,
        eid: u32,
        packets: &[NewPacket],
        path_nonces: &[(PathKey, u64)],
        cursor: (u64, B256),
    ) -> Result<Vec<Observed>, StoreError> {
        let mut tx = self.pool.begin().await?;
        let mut outcomes = Vec::with_capacity(packets.len());
        for packet in packets {
            outcomes.push(rows::observe(&mut tx, packet).await?);
        }
        for (path, nonce) in path_nonces {
            sqlx::query(
                "INSERT INTO path_nonces (src_eid, sender, dst_eid, receiver, max_nonce) VALUES ($1, $2, $3, $4, $5) \
                 ON CONFLICT (src_eid, sender, dst_eid, receiver) DO UPDATE SET max_nonce = $5 \
                 WHERE path_nonces.max_nonce < $5",
            )
            .bind(i64::from(path.src_eid))
            .bind(path.sender.to_vec())
            .bind(i64::from(path.dst_eid))
            .bind(path.receiver.to_vec())
            .bind(int(*nonce))
            .execute(&mut *tx)
            .await?;
        }
        sqlx::query(
            "INSERT INTO cursors (eid, block_number, block_hash) VALUES ($1, $2, $3) \
             ON CONFLICT (eid) DO UPDATE SET block_number = $2, block_hash = $3",
        )
        .bind(i64::from(eid))
        .bind(int(cursor.0))
        .bind(cursor.1.to_vec())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(outcomes)
    }

    /// The highest nonce seen on a path (all packets, assigned to us or not).
    pub async fn path_max_nonce(&self, path: &PathKey) -> Result<Option<u64>, StoreError> {
        let row = sqlx::query(
            "SELECT max_nonce FROM path_nonces WHERE src_eid = $1 AND sender = $2 AND dst_eid = $3 AND receiver = $4",
        )
        .bind(i64::from(path.src_eid))
        .bind(path.sender.to_vec())
        .bind(i64::from(path.dst_eid))
        .bind(path.receiver.to_vec())
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| rows::u64_col(&r, "max_nonce")).transpose()
    }

    /// Moves the cursor back (reorg), without touching packets: the confirm stage re-checks
    /// each packet against the canonical chain before it is signed.
    pub async fn rewind_cursor(&self, eid: u32, to: (u64, B256)) -> Result<(), StoreError> {
        sqlx::query("UPDATE cursors SET block_number = $2, block_hash = $3 WHERE eid = $1")
            .bind(i64::from(eid))
            .bind(int(to.0))
            .bind(to.1.to_vec())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Packets in `state` bound for `dst_eid` (any destination when `None`), oldest nonce first.
    pub async fn packets(
        &self,
        state: PacketState,
        dst_eid: Option<u32>,
        limit: usize,
    ) -> Result<Vec<PacketRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT * FROM packets WHERE state = $1 AND ($2 < 0 OR dst_eid = $2) \
             ORDER BY src_eid, sender, receiver, nonce LIMIT $3",
        )
        .bind(state.as_str())
        .bind(dst_eid.map_or(-1, i64::from))
        .bind(int(limit as u64))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(PacketRow::from_row).collect()
    }

    /// One packet by GUID.
    pub async fn packet(&self, guid: B256) -> Result<Option<PacketRow>, StoreError> {
        let row = sqlx::query("SELECT * FROM packets WHERE guid = $1")
            .bind(guid.to_vec())
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(PacketRow::from_row).transpose()
    }

    /// The packet whose current signed param has `call_hash`.
    pub async fn packet_by_call_hash(
        &self,
        call_hash: B256,
    ) -> Result<Option<PacketRow>, StoreError> {
        let row = sqlx::query("SELECT * FROM packets WHERE call_hash = $1")
            .bind(call_hash.to_vec())
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(PacketRow::from_row).transpose()
    }

    /// Unfinished packets per path: (src eid, dst eid, count, oldest source block timestamp).
    pub async fn backlog(&self) -> Result<Vec<(u32, u32, i64, u64)>, StoreError> {
        let rows = sqlx::query(
            "SELECT src_eid, dst_eid, COUNT(*) AS n, MIN(block_timestamp) AS oldest FROM packets \
             WHERE state IN ('observed', 'signed', 'submitted') GROUP BY src_eid, dst_eid",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r: &AnyRow| {
                Ok((
                    u32::try_from(r.try_get::<i64, _>("src_eid")?).unwrap_or(0),
                    u32::try_from(r.try_get::<i64, _>("dst_eid")?).unwrap_or(0),
                    r.try_get::<i64, _>("n")?,
                    u64::try_from(r.try_get::<i64, _>("oldest")?).unwrap_or(0),
                ))
            })
            .collect()
    }

    /// The most recently verified packet: (guid, src eid, dst eid, nonce, when in unix ms).
    pub async fn last_verified(&self) -> Result<Option<(B256, u32, u32, u64, i64)>, StoreError> {
        let row = sqlx::query(
            "SELECT guid, src_eid, dst_eid, nonce, updated_at_ms FROM packets \
             WHERE state = 'verified' ORDER BY updated_at_ms DESC LIMIT 1",
        )
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r: AnyRow| {
            let guid: Vec<u8> = r.try_get("guid")?;
            Ok((
                B256::try_from(guid.as_slice()).map_err(|_| StoreError::Corrupt("guid".into()))?,
                u32::try_from(r.try_get::<i64, _>("src_eid")?).unwrap_or(0),
                u32::try_from(r.try_get::<i64, _>("dst_eid")?).unwrap_or(0),
                u64::try_from(r.try_get::<i64, _>("nonce")?).unwrap_or(0),
                r.try_get::<i64, _>("updated_at_ms")?,
            ))
        })
        .transpose()
    }

    /// Number of packets per state (for status and metrics).
    pub async fn count_by_state(&self) -> Result<Vec<(String, i64)>, StoreError> {
        let rows = sqlx::query("SELECT state, COUNT(*) AS n FROM packets GROUP BY state")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r: &AnyRow| Ok((r.try_get::<String, _>("state")?, r.try_get::<i64, _>("n")?)))
            .collect()
    }

    /// Moves a packet to `state`, recording `error` (or clearing it).
    pub async fn set_state(
        &self,
        guid: B256,
        state: PacketState,
        error: Option<&str>,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE packets SET state = $2, last_error = $3, updated_at_ms = $4 WHERE guid = $1",
        )
        .bind(guid.to_vec())
        .bind(state.as_str())
        .bind(error.map(str::to_string))
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Persists our signature and the exact param it signs, then marks the packet signed — in
    /// one transaction, before the signature is shared with anyone.
    pub async fn record_own_signature(
        &self,
        guid: B256,
        confirmations: u64,
        expiration: u64,
        call_hash: B256,
        signer: Address,
        signature: &[u8],
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        rows::insert_signature(&mut tx, call_hash, signer, signature, "self").await?;
        sqlx::query(
            "UPDATE packets SET state = $2, confirmations = $3, expiration = $4, call_hash = $5, \
             ready_at_ms = NULL, last_error = NULL, updated_at_ms = $6 WHERE guid = $1",
        )
        .bind(guid.to_vec())
        .bind(PacketState::Signed.as_str())
        .bind(int(confirmations))
        .bind(int(expiration))
        .bind(call_hash.to_vec())
        .bind(now_ms())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Stores a (verified) signature; a repeat from the same signer is a no-op.
    pub async fn insert_signature(
        &self,
        call_hash: B256,
        signer: Address,
        signature: &[u8],
        source: &str,
    ) -> Result<bool, StoreError> {
        let mut conn = self.pool.acquire().await?;
        rows::insert_signature(&mut conn, call_hash, signer, signature, source).await
    }

    /// Every stored signature over `call_hash`.
    pub async fn signatures(&self, call_hash: B256) -> Result<Vec<(Address, Vec<u8>)>, StoreError> {
        let rows = sqlx::query("SELECT signer, signature FROM signatures WHERE call_hash = $1")
            .bind(call_hash.to_vec())
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    rows::address_col(r, "signer")?,
                    r.try_get::<Vec<u8>, _>("signature")?,
                ))
            })
            .collect()
    }

    /// Notes when a signed packet first had a quorum (the takeover clock starts there).
    pub async fn mark_ready(&self, guid: B256, at_ms: i64) -> Result<(), StoreError> {
        sqlx::query("UPDATE packets SET ready_at_ms = $2 WHERE guid = $1 AND ready_at_ms IS NULL")
            .bind(guid.to_vec())
            .bind(at_ms)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Persists a signed `execute` transaction *before* it is broadcast, and attaches its
    /// packets to it, so a crash after broadcast can never lead to a second, different tx.
    /// A fee-bumped replacement is recorded the same way; until one of the same-nonce
    /// transactions is mined, all of them stay pending.
    pub async fn record_submission(
        &self,
        submission: &SubmissionRow,
        guids: &[B256],
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO submissions (tx_hash, dst_eid, account_nonce, raw_tx, state, created_at_ms) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(submission.tx_hash.to_vec())
        .bind(i64::from(submission.dst_eid))
        .bind(int(submission.account_nonce))
        .bind(submission.raw_tx.clone())
        .bind("pending")
        .bind(now_ms())
        .execute(&mut *tx)
        .await?;
        for guid in guids {
            sqlx::query("UPDATE packets SET state = $2, submission = $3, updated_at_ms = $4 WHERE guid = $1")
                .bind(guid.to_vec())
                .bind(PacketState::Submitted.as_str())
                .bind(submission.tx_hash.to_vec())
                .bind(now_ms())
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Submissions still awaiting a receipt on `dst_eid`.
    pub async fn pending_submissions(
        &self,
        dst_eid: u32,
    ) -> Result<Vec<SubmissionRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT * FROM submissions WHERE state = 'pending' AND dst_eid = $1 ORDER BY account_nonce",
        )
        .bind(i64::from(dst_eid))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(SubmissionRow::from_row).collect()
    }

    /// Marks a submission finished (`mined`, `replaced` or `dropped`).
    pub async fn finish_submission(&self, tx_hash: B256, state: &str) -> Result<(), StoreError> {
        sqlx::query("UPDATE submissions SET state = $2 WHERE tx_hash = $1")
            .bind(tx_hash.to_vec())
            .bind(state.to_string())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Packets attached to a submission.
    pub async fn packets_of_submission(&self, tx_hash: B256) -> Result<Vec<PacketRow>, StoreError> {
        let rows = sqlx::query("SELECT * FROM packets WHERE submission = $1 AND state = $2")
            .bind(tx_hash.to_vec())
            .bind(PacketState::Submitted.as_str())
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(PacketRow::from_row).collect()
    }

    /// A settled attempt that did not verify: back to `state` (re-sign or re-aggregate) with
    /// the reason, counting the attempt.
    pub async fn retry(
        &self,
        guid: B256,
        state: PacketState,
        error: &str,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE packets SET state = $2, last_error = $3, attempts = attempts + 1, \
             submission = NULL, ready_at_ms = NULL, updated_at_ms = $4 WHERE guid = $1",
        )
        .bind(guid.to_vec())
        .bind(state.as_str())
        .bind(error.to_string())
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}
