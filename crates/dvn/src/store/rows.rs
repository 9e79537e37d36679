//! Row types and the statements shared by several store operations.

use alloy::primitives::{Address, B256};
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};

use super::state::{self, Change, Expect};
use super::{int, now_ms, Observed, StoreError};

/// Where a packet is in the pipeline. The legal moves between states are one table,
/// [`super::state::is_legal`]; every move is a compare-and-set ([`super::state`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PacketState {
    /// Seen on the source chain; waiting for confirmations and checks.
    Observed,
    /// Our signature is stored; waiting for a quorum and submission.
    Signed,
    /// In an `execute` transaction awaiting its receipt.
    Submitted,
    /// `PayloadVerified` from our DVN is on the destination (or the packet is past needing it).
    Verified,
    /// Nothing to do: already verified / committed / delivered by the time we looked.
    Skipped,
    /// Its source transaction is no longer on the canonical chain.
    Orphaned,
    /// The packet can never be verified (e.g. receiver not an EVM address).
    Invalid,
    /// A different payload appeared for a (path, nonce) we already signed: halted for a human.
    Conflict,
}

impl PacketState {
    pub const ALL: [Self; 8] = [
        Self::Observed,
        Self::Signed,
        Self::Submitted,
        Self::Verified,
        Self::Skipped,
        Self::Orphaned,
        Self::Invalid,
        Self::Conflict,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Observed => "observed",
            Self::Signed => "signed",
            Self::Submitted => "submitted",
            Self::Verified => "verified",
            Self::Skipped => "skipped",
            Self::Orphaned => "orphaned",
            Self::Invalid => "invalid",
            Self::Conflict => "conflict",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == text)
    }

    /// Still needs work from the pipeline.
    pub fn is_pending(self) -> bool {
        matches!(self, Self::Observed | Self::Signed | Self::Submitted)
    }
}

/// A message path: (source eid, sender, destination eid, receiver). Nonces count per path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub struct PathKey {
    pub src_eid: u32,
    pub sender: B256,
    pub dst_eid: u32,
    pub receiver: B256,
}

/// A packet as the watch stage found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewPacket {
    pub guid: B256,
    pub src_eid: u32,
    pub dst_eid: u32,
    pub sender: B256,
    pub receiver: B256,
    pub nonce: u64,
    pub header: Vec<u8>,
    pub payload_hash: B256,
    pub tx_hash: B256,
    pub block_number: u64,
    pub block_hash: B256,
    pub log_index: u64,
    pub block_timestamp: u64,
}

impl NewPacket {
    /// The path this packet travels.
    pub fn path(&self) -> PathKey {
        PathKey {
            src_eid: self.src_eid,
            sender: self.sender,
            dst_eid: self.dst_eid,
            receiver: self.receiver,
        }
    }
}

/// A stored packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PacketRow {
    pub packet: NewPacket,
    pub state: PacketState,
    pub confirmations: Option<u64>,
    pub expiration: Option<u64>,
    pub call_hash: Option<B256>,
    pub submission: Option<B256>,
    pub ready_at_ms: Option<i64>,
    /// When the row last changed (its state or its observation): how long it has been in
    /// its state, for the per-stage timings.
    pub updated_at_ms: i64,
    pub attempts: u64,
    pub last_error: Option<String>,
    /// Bumped by every state change and re-observation: the compare-and-set's witness.
    pub version: u64,
    /// Checks failed this many times in a row (reset by any move); drives the backoff.
    pub deferrals: u64,
}

/// A stored `execute` transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubmissionRow {
    pub tx_hash: B256,
    pub dst_eid: u32,
    pub account_nonce: u64,
    pub raw_tx: Vec<u8>,
    pub created_at_ms: i64,
}

pub(super) fn u64_col(row: &AnyRow, name: &str) -> Result<u64, StoreError> {
    let v: i64 = row.try_get(name)?;
    u64::try_from(v).map_err(|_| StoreError::Corrupt(format!("{name} = {v}")))
}

pub(super) fn u32_col(row: &AnyRow, name: &str) -> Result<u32, StoreError> {
    let v: i64 = row.try_get(name)?;
    u32::try_from(v).map_err(|_| StoreError::Corrupt(format!("{name} = {v}")))
}

fn opt_u64_col(row: &AnyRow, name: &str) -> Result<Option<u64>, StoreError> {
    let v: Option<i64> = row.try_get(name)?;
    v.map(|v| u64::try_from(v).map_err(|_| StoreError::Corrupt(format!("{name} = {v}"))))
        .transpose()
}

pub(super) fn b256_col(row: &AnyRow, name: &str) -> Result<B256, StoreError> {
    let v: Vec<u8> = row.try_get(name)?;
    B256::try_from(v.as_slice())
        .map_err(|_| StoreError::Corrupt(format!("{name}: {} bytes", v.len())))
}

fn opt_b256_col(row: &AnyRow, name: &str) -> Result<Option<B256>, StoreError> {
    let v: Option<Vec<u8>> = row.try_get(name)?;
    v.map(|v| B256::try_from(v.as_slice()).map_err(|_| StoreError::Corrupt(name.to_string())))
        .transpose()
}

pub(super) fn address_col(row: &AnyRow, name: &str) -> Result<Address, StoreError> {
    let v: Vec<u8> = row.try_get(name)?;
    Address::try_from(v.as_slice())
        .map_err(|_| StoreError::Corrupt(format!("{name}: {} bytes", v.len())))
}

impl PacketRow {
    pub(super) fn from_row(row: &AnyRow) -> Result<Self, StoreError> {
        let state: String = row.try_get("state")?;
        Ok(Self {
            packet: NewPacket {
                guid: b256_col(row, "guid")?,
                src_eid: u32_col(row, "src_eid")?,
                dst_eid: u32_col(row, "dst_eid")?,
                sender: b256_col(row, "sender")?,
                receiver: b256_col(row, "receiver")?,
                nonce: u64_col(row, "nonce")?,
                header: row.try_get("header")?,
                payload_hash: b256_col(row, "payload_hash")?,
                tx_hash: b256_col(row, "tx_hash")?,
                block_number: u64_col(row, "block_number")?,
                block_hash: b256_col(row, "block_hash")?,
                log_index: u64_col(row, "log_index")?,
                block_timestamp: u64_col(row, "block_timestamp")?,
            },
            state: PacketState::parse(&state)
                .ok_or_else(|| StoreError::Corrupt(format!("state {state}")))?,
            confirmations: opt_u64_col(row, "confirmations")?,
            expiration: opt_u64_col(row, "expiration")?,
            call_hash: opt_b256_col(row, "call_hash")?,
            submission: opt_b256_col(row, "submission")?,
            ready_at_ms: row.try_get("ready_at_ms")?,
            updated_at_ms: row.try_get("updated_at_ms")?,
            attempts: u64_col(row, "attempts")?,
            last_error: row.try_get("last_error")?,
            version: u64_col(row, "version")?,
            deferrals: u64_col(row, "deferrals")?,
        })
    }
}

impl SubmissionRow {
    pub(super) fn from_row(row: &AnyRow) -> Result<Self, StoreError> {
        Ok(Self {
            tx_hash: b256_col(row, "tx_hash")?,
            dst_eid: u32_col(row, "dst_eid")?,
            account_nonce: u64_col(row, "account_nonce")?,
            raw_tx: row.try_get("raw_tx")?,
            created_at_ms: row.try_get("created_at_ms")?,
        })
    }
}

/// Inserts or reconciles one observation (see [`Observed`]).
pub(super) async fn observe(
    conn: &mut AnyConnection,
    p: &NewPacket,
) -> Result<Observed, StoreError> {
    let existing = sqlx::query(
        "SELECT state, payload_hash, version, block_hash, tx_hash FROM packets WHERE guid = $1",
    )
    .bind(p.guid.to_vec())
    .fetch_optional(&mut *conn)
    .await?;
    let Some(existing) = existing else {
        sqlx::query(
            "INSERT INTO packets (guid, src_eid, dst_eid, sender, receiver, nonce, header, payload_hash, \
             tx_hash, block_number, block_hash, log_index, block_timestamp, state, updated_at_ms) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)",
        )
        .bind(p.guid.to_vec())
        .bind(i64::from(p.src_eid))
        .bind(i64::from(p.dst_eid))
        .bind(p.sender.to_vec())
        .bind(p.receiver.to_vec())
        .bind(int(p.nonce))
        .bind(p.header.clone())
        .bind(p.payload_hash.to_vec())
        .bind(p.tx_hash.to_vec())
        .bind(int(p.block_number))
        .bind(p.block_hash.to_vec())
        .bind(int(p.log_index))
        .bind(int(p.block_timestamp))
        .bind(PacketState::Observed.as_str())
        .bind(now_ms())
        .execute(&mut *conn)
        .await?;
        return Ok(Observed::New);
    };
    let state: String = existing.try_get("state")?;
    let state =
        PacketState::parse(&state).ok_or_else(|| StoreError::Corrupt(format!("state {state}")))?;
    let expect = Expect {
        guid: p.guid,
        state,
        version: u64_col(&existing, "version")?,
    };
    let same_payload = b256_col(&existing, "payload_hash")? == p.payload_hash;
    let same_place = b256_col(&existing, "block_hash")? == p.block_hash
        && b256_col(&existing, "tx_hash")? == p.tx_hash;
    let (outcome, moved) = match (same_payload, state) {
        // Re-seen where it was (overlapping scans): nothing to write.
        (true, PacketState::Observed) if same_place => return Ok(Observed::Known),
        // Re-included elsewhere after a reorg: refresh the location while we have not signed,
        // so confirmations count from the canonical block; bumping the version makes any
        // decision taken on the old location (an orphan mark) lose its race.
        (true, PacketState::Observed | PacketState::Orphaned) => (
            Observed::Known,
            state::apply(conn, expect, PacketState::Observed, Change::Reobserved(p)).await?,
        ),
        // Signed but not yet submitted, and now in another block: the signature counted
        // confirmations from a block that is gone; back to observed at the new place, to be
        // confirmed and signed again from there.
        (true, PacketState::Signed) if !same_place => (
            Observed::Known,
            state::apply(conn, expect, PacketState::Observed, Change::Reobserved(p)).await?,
        ),
        (true, _) => return Ok(Observed::Known),
        (false, PacketState::Observed | PacketState::Orphaned) => (
            Observed::Replaced,
            state::apply(conn, expect, PacketState::Observed, Change::Reobserved(p)).await?,
        ),
        (false, PacketState::Conflict) => return Ok(Observed::Conflict),
        (false, _) => {
            let why = format!(
                "equivocation: source now shows payload {} for a signed nonce",
                p.payload_hash
            );
            (
                Observed::Conflict,
                state::apply(
                    conn,
                    expect,
                    PacketState::Conflict,
                    Change::Note(Some(&why)),
                )
                .await?,
            )
        }
    };
    if moved {
        Ok(outcome)
    } else {
        Err(StoreError::Raced(p.guid))
    }
}

/// Inserts a signature unless one from the same signer over the same hash exists.
pub(super) async fn insert_signature(
    conn: &mut AnyConnection,
    call_hash: B256,
    signer: Address,
    signature: &[u8],
    source: &str,
) -> Result<bool, StoreError> {
    let done = sqlx::query(
        "INSERT INTO signatures (call_hash, signer, signature, source) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (call_hash, signer) DO NOTHING",
    )
    .bind(call_hash.to_vec())
    .bind(signer.to_vec())
    .bind(signature.to_vec())
    .bind(source.to_string())
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected() > 0)
}
