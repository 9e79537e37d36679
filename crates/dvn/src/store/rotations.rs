//! Signer rotations as this node knows them: proposed by a region (ours or a peer), approved
//! (signed) by this region's operator, then executed on chain, expired or failed. The two
//! params are never stored: every region rebuilds them from these fields.

use alloy::primitives::{Address, B256};
use sqlx::any::AnyRow;
use sqlx::Row;

use super::rows::{address_col, b256_col, u32_col, u64_col};
use super::{int, now_ms, Store, StoreError};

/// Where a rotation stands here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RotationState {
    /// A peer proposed it; this region has not signed it.
    Proposed,
    /// This region signed both params (the proposer's own rotation starts here).
    Approved,
    /// Both params are used on chain: the signer set changed.
    Executed,
    /// Its expiration passed before it was executed.
    Expired,
    /// Executed too often without taking effect, or refused by an operator.
    Failed,
}

impl RotationState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Proposed => "proposed",
            Self::Approved => "approved",
            Self::Executed => "executed",
            Self::Expired => "expired",
            Self::Failed => "failed",
        }
    }

    fn parse(text: &str) -> Result<Self, StoreError> {
        Ok(match text {
            "proposed" => Self::Proposed,
            "approved" => Self::Approved,
            "executed" => Self::Executed,
            "expired" => Self::Expired,
            "failed" => Self::Failed,
            other => return Err(StoreError::Corrupt(format!("rotation state {other}"))),
        })
    }

    /// Still waiting for something (approval, signatures, inclusion).
    pub fn is_open(self) -> bool {
        matches!(self, Self::Proposed | Self::Approved)
    }
}

/// One rotation: on `dst_eid`'s DVN, `add` joins the signer set and `remove` leaves it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Rotation {
    pub id: B256,
    pub dst_eid: u32,
    pub add: Address,
    pub remove: Address,
    pub expiration: u64,
    pub add_hash: B256,
    pub remove_hash: B256,
    /// The region that proposed it (its `node.name`); only the proposer executes it.
    pub proposer: String,
    pub state: RotationState,
    pub attempts: u64,
    pub last_error: Option<String>,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
}

impl Rotation {
    fn from_row(row: &AnyRow) -> Result<Self, StoreError> {
        Ok(Self {
            id: b256_col(row, "id")?,
            dst_eid: u32_col(row, "dst_eid")?,
            add: address_col(row, "add_signer")?,
            remove: address_col(row, "remove_signer")?,
            expiration: u64_col(row, "expiration")?,
            add_hash: b256_col(row, "add_hash")?,
            remove_hash: b256_col(row, "remove_hash")?,
            proposer: row.try_get("proposer")?,
            state: RotationState::parse(&row.try_get::<String, _>("state")?)?,
            attempts: u64_col(row, "attempts")?,
            last_error: row.try_get("last_error")?,
            created_at_ms: row.try_get("created_at_ms")?,
            updated_at_ms: row.try_get("updated_at_ms")?,
        })
    }
}

impl Store {
    /// Records a rotation; false when one with this id is already known (kept as it is).
    pub async fn insert_rotation(&self, r: &Rotation) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "INSERT INTO signer_rotations (id, dst_eid, add_signer, remove_signer, expiration, \
             add_hash, remove_hash, proposer, state, attempts, last_error, created_at_ms, updated_at_ms) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 0, NULL, $10, $10) ON CONFLICT (id) DO NOTHING",
        )
        .bind(r.id.to_vec())
        .bind(i64::from(r.dst_eid))
        .bind(r.add.to_vec())
        .bind(r.remove.to_vec())
        .bind(int(r.expiration))
        .bind(r.add_hash.to_vec())
        .bind(r.remove_hash.to_vec())
        .bind(r.proposer.clone())
        .bind(r.state.as_str())
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    pub async fn rotation(&self, id: B256) -> Result<Option<Rotation>, StoreError> {
        let row = sqlx::query("SELECT * FROM signer_rotations WHERE id = $1")
            .bind(id.to_vec())
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(Rotation::from_row).transpose()
    }

    /// The rotation one of whose params hashes to `call_hash`, if any.
    pub async fn rotation_by_call_hash(
        &self,
        call_hash: B256,
    ) -> Result<Option<Rotation>, StoreError> {
        let row =
            sqlx::query("SELECT * FROM signer_rotations WHERE add_hash = $1 OR remove_hash = $1")
                .bind(call_hash.to_vec())
                .fetch_optional(&self.pool)
                .await?;
        row.as_ref().map(Rotation::from_row).transpose()
    }

    /// Every rotation, newest first (there are few: one per key change per chain).
    pub async fn rotations(&self) -> Result<Vec<Rotation>, StoreError> {
        let rows = sqlx::query("SELECT * FROM signer_rotations ORDER BY created_at_ms DESC")
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(Rotation::from_row).collect()
    }

    /// Moves a rotation from `from` to `to`; false when it was no longer in `from`.
    pub async fn move_rotation(
        &self,
        id: B256,
        from: RotationState,
        to: RotationState,
        error: Option<&str>,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE signer_rotations SET state = $3, last_error = COALESCE($4, last_error), \
             updated_at_ms = $5 WHERE id = $1 AND state = $2",
        )
        .bind(id.to_vec())
        .bind(from.as_str())
        .bind(to.as_str())
        .bind(error.map(str::to_string))
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Counts one `execute` sent for a rotation.
    pub async fn count_rotation_attempt(&self, id: B256) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE signer_rotations SET attempts = attempts + 1, updated_at_ms = $2 WHERE id = $1",
        )
        .bind(id.to_vec())
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}
