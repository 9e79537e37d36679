//! Other regions' claims: "a transaction of mine, pending on this destination with this
//! sender and nonce, carries these packets". Kept in the store so a claim learned before its
//! region went down still holds after that region (or this node) restarted; dropped once the
//! chain shows the nonce used.

use std::collections::BTreeMap;

use alloy::primitives::{Address, B256};

use super::rows::{address_col, b256_col, u32_col, u64_col};
use super::{int, now_ms, Store, StoreError};

/// One region's pending transaction on a destination and the packets of ours it carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerClaim {
    pub region: String,
    pub dst_eid: u32,
    pub sender: Address,
    pub nonce: u64,
    pub tx_hash: B256,
    pub guids: Vec<B256>,
}

impl Store {
    /// Records a claim (again: known packets are kept, new ones added).
    pub async fn record_peer_claim(
        &self,
        region: &str,
        dst_eid: u32,
        sender: Address,
        nonce: u64,
        tx_hash: B256,
        guids: &[B256],
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        let at = now_ms();
        for guid in guids {
            sqlx::query(
                "INSERT INTO peer_claims (tx_hash, guid, region, dst_eid, sender, account_nonce, received_at_ms) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (tx_hash, guid) DO NOTHING",
            )
            .bind(tx_hash.to_vec())
            .bind(guid.to_vec())
            .bind(region.to_string())
            .bind(i64::from(dst_eid))
            .bind(sender.to_vec())
            .bind(int(nonce))
            .bind(at)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Every claim on `dst_eid` naming one of `guids` (every claim when `None`), one entry per
    /// transaction.
    pub async fn peer_claims(
        &self,
        dst_eid: u32,
        guids: Option<&[B256]>,
    ) -> Result<Vec<PeerClaim>, StoreError> {
        let wanted: Option<std::collections::HashSet<&B256>> =
            guids.map(|guids| guids.iter().collect());
        let rows = sqlx::query("SELECT * FROM peer_claims WHERE dst_eid = $1")
            .bind(i64::from(dst_eid))
            .fetch_all(&self.pool)
            .await?;
        let mut claims: BTreeMap<B256, PeerClaim> = BTreeMap::new();
        for row in &rows {
            let guid = b256_col(row, "guid")?;
            if wanted.as_ref().is_some_and(|w| !w.contains(&guid)) {
                continue;
            }
            let tx_hash = b256_col(row, "tx_hash")?;
            let claim = match claims.entry(tx_hash) {
                std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::btree_map::Entry::Vacant(e) => e.insert(PeerClaim {
                    region: sqlx::Row::try_get(row, "region")?,
                    dst_eid: u32_col(row, "dst_eid")?,
                    sender: address_col(row, "sender")?,
                    nonce: u64_col(row, "account_nonce")?,
                    tx_hash,
                    guids: Vec::new(),
                }),
            };
            claim.guids.push(guid);
        }
        Ok(claims.into_values().collect())
    }

    /// Drops the claims of `sender` on `dst_eid` whose nonce the chain shows used (below
    /// `mined`, the sender's next nonce). Returns how many packet entries went.
    pub async fn drop_used_peer_claims(
        &self,
        dst_eid: u32,
        sender: Address,
        mined: u64,
    ) -> Result<u64, StoreError> {
        let done = sqlx::query(
            "DELETE FROM peer_claims WHERE dst_eid = $1 AND sender = $2 AND account_nonce < $3",
        )
        .bind(i64::from(dst_eid))
        .bind(sender.to_vec())
        .bind(int(mined))
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    /// Drops one claimed transaction's entries (its receipt has been applied).
    pub async fn drop_peer_claim(&self, dst_eid: u32, tx_hash: B256) -> Result<u64, StoreError> {
        let done = sqlx::query("DELETE FROM peer_claims WHERE dst_eid = $1 AND tx_hash = $2")
            .bind(i64::from(dst_eid))
            .bind(tx_hash.to_vec())
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }

    /// How many claims (transactions) are on record, for the gauge.
    pub async fn peer_claim_count(&self) -> Result<u64, StoreError> {
        let row = sqlx::query("SELECT COUNT(DISTINCT tx_hash) AS n FROM peer_claims")
            .fetch_one(&self.pool)
            .await?;
        u64_col(&row, "n")
    }
}
