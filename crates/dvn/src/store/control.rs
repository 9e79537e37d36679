//! The operator's switches kept in the store: pauses (node, chain, path) and admin API tokens
//! (as hashes). Kept here, not in memory, so every process on the database — the running node
//! and a CLI — sees the same switches, and a restart keeps them.

use std::collections::HashSet;

use alloy::primitives::B256;
use serde::Serialize;
use sqlx::Row;

use super::{now_ms, PathKey, Store, StoreError};

/// What a pause covers.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum PauseScope {
    /// Everything this node signs and submits.
    Node,
    /// Every path from or to the chain.
    Chain {
        eid: u32,
    },
    Path(PathKey),
}

impl PauseScope {
    /// The stored key: `node`, `chain:<eid>`, `path:<src>:<sender>:<dst>:<receiver>`.
    pub fn key(&self) -> String {
        match self {
            Self::Node => "node".into(),
            Self::Chain { eid } => format!("chain:{eid}"),
            Self::Path(p) => format!(
                "path:{}:{}:{}:{}",
                p.src_eid, p.sender, p.dst_eid, p.receiver
            ),
        }
    }

    fn parse(key: &str) -> Option<Self> {
        let parts: Vec<&str> = key.split(':').collect();
        match parts.as_slice() {
            ["node"] => Some(Self::Node),
            ["chain", eid] => Some(Self::Chain {
                eid: eid.parse().ok()?,
            }),
            ["path", src, sender, dst, receiver] => Some(Self::Path(PathKey {
                src_eid: src.parse().ok()?,
                sender: sender.parse().ok()?,
                dst_eid: dst.parse().ok()?,
                receiver: receiver.parse().ok()?,
            })),
            _ => None,
        }
    }
}

/// One pause, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Pause {
    pub scope: PauseScope,
    pub reason: String,
    pub paused_by: String,
    pub paused_at_ms: i64,
}

/// What holds a path back from signing and submitting: the equivocation guard's halts and
/// the operators' pauses, read once per pipeline step.
#[derive(Debug, Clone, Default)]
pub struct Holds {
    halted: HashSet<PathKey>,
    node_paused: bool,
    chains_paused: HashSet<u32>,
    paths_paused: HashSet<PathKey>,
}

impl Holds {
    /// True when nothing may be signed or submitted for `path`.
    pub fn holds(&self, path: &PathKey) -> bool {
        self.node_paused
            || self.halted.contains(path)
            || self.paths_paused.contains(path)
            || self.chains_paused.contains(&path.src_eid)
            || self.chains_paused.contains(&path.dst_eid)
    }

    /// How many operator pauses are in force.
    pub fn pause_count(&self) -> usize {
        usize::from(self.node_paused) + self.chains_paused.len() + self.paths_paused.len()
    }

    /// True when `path` is halted by the equivocation guard (not merely paused).
    pub fn halted(&self, path: &PathKey) -> bool {
        self.halted.contains(path)
    }
}

/// An admin API token as stored (never the token itself).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TokenRow {
    pub id: String,
    pub operator: String,
    pub role: String,
    #[serde(skip)]
    pub token_hash: B256,
    pub created_at_ms: i64,
    pub expires_at_ms: i64,
    pub revoked_at_ms: Option<i64>,
}

impl Store {
    /// Pauses `scope` (again: the reason and author are replaced). True when it was not paused.
    pub async fn pause(
        &self,
        scope: &PauseScope,
        reason: &str,
        by: &str,
    ) -> Result<bool, StoreError> {
        let key = scope.key();
        let mut tx = self.pool.begin().await?;
        let existed = sqlx::query("DELETE FROM pauses WHERE scope = $1")
            .bind(&key)
            .execute(&mut *tx)
            .await?
            .rows_affected()
            > 0;
        sqlx::query(
            "INSERT INTO pauses (scope, reason, paused_by, paused_at_ms) VALUES ($1, $2, $3, $4)",
        )
        .bind(&key)
        .bind(reason)
        .bind(by)
        .bind(now_ms())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(!existed)
    }

    /// Lifts a pause; false when `scope` was not paused.
    pub async fn unpause(&self, scope: &PauseScope) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM pauses WHERE scope = $1")
            .bind(scope.key())
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Every pause in force, oldest first.
    pub async fn pauses(&self) -> Result<Vec<Pause>, StoreError> {
        let rows = sqlx::query("SELECT * FROM pauses ORDER BY paused_at_ms")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                let key: String = r.try_get("scope")?;
                Ok(Pause {
                    scope: PauseScope::parse(&key)
                        .ok_or_else(|| StoreError::Corrupt(format!("pause scope {key}")))?,
                    reason: r.try_get("reason")?,
                    paused_by: r.try_get("paused_by")?,
                    paused_at_ms: r.try_get("paused_at_ms")?,
                })
            })
            .collect()
    }

    /// Halts and pauses in force, for one pipeline step.
    pub async fn holds(&self) -> Result<Holds, StoreError> {
        let mut holds = Holds {
            halted: self.halted_path_set().await?,
            ..Holds::default()
        };
        for pause in self.pauses().await? {
            match pause.scope {
                PauseScope::Node => holds.node_paused = true,
                PauseScope::Chain { eid } => {
                    holds.chains_paused.insert(eid);
                }
                PauseScope::Path(path) => {
                    holds.paths_paused.insert(path);
                }
            }
        }
        Ok(holds)
    }

    /// Stores a new token's hash.
    pub async fn insert_token(&self, token: &TokenRow) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO admin_tokens (id, operator, role, token_hash, created_at_ms, expires_at_ms, revoked_at_ms) \
             VALUES ($1, $2, $3, $4, $5, $6, NULL)",
        )
        .bind(&token.id)
        .bind(&token.operator)
        .bind(&token.role)
        .bind(token.token_hash.to_vec())
        .bind(token.created_at_ms)
        .bind(token.expires_at_ms)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The token with this id, revoked or not.
    pub async fn token(&self, id: &str) -> Result<Option<TokenRow>, StoreError> {
        let row = sqlx::query("SELECT * FROM admin_tokens WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(token_from_row).transpose()
    }

    /// Every token, newest first.
    pub async fn tokens(&self) -> Result<Vec<TokenRow>, StoreError> {
        let rows = sqlx::query("SELECT * FROM admin_tokens ORDER BY created_at_ms DESC")
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(token_from_row).collect()
    }

    /// Revokes a token; false when there is no such live token.
    pub async fn revoke_token(&self, id: &str) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE admin_tokens SET revoked_at_ms = $1 WHERE id = $2 AND revoked_at_ms IS NULL",
        )
        .bind(now_ms())
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }
}

fn token_from_row(r: &sqlx::any::AnyRow) -> Result<TokenRow, StoreError> {
    Ok(TokenRow {
        id: r.try_get("id")?,
        operator: r.try_get("operator")?,
        role: r.try_get("role")?,
        token_hash: super::rows::b256_col(r, "token_hash")?,
        created_at_ms: r.try_get("created_at_ms")?,
        expires_at_ms: r.try_get("expires_at_ms")?,
        revoked_at_ms: r.try_get("revoked_at_ms")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_round_trip_through_their_keys() {
        let path = PathKey {
            src_eid: 30101,
            sender: B256::repeat_byte(1),
            dst_eid: 30212,
            receiver: B256::repeat_byte(2),
        };
        for scope in [
            PauseScope::Node,
            PauseScope::Chain { eid: 30101 },
            PauseScope::Path(path),
        ] {
            assert_eq!(PauseScope::parse(&scope.key()), Some(scope));
        }
        assert_eq!(PauseScope::parse("chain:x"), None);
        let holds = Holds {
            chains_paused: [30212].into(),
            ..Holds::default()
        };
        assert!(
            holds.holds(&path),
            "a paused destination chain holds the path"
        );
        assert!(!holds.halted(&path));
    }
}
