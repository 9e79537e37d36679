//! Admin API tokens: `dvn_<id>_<secret>`, random, shown once at creation. The store keeps the
//! id (to find the row), the SHA-256 of the whole token, the operator, the role and the
//! expiry; a presented token is hashed and compared in constant time.

use alloy::primitives::B256;
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::roles::Role;
use crate::store::{now_ms, Store, StoreError, TokenRow};

/// Why a token was refused (the text is safe to show and to audit: it never holds the token).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("no bearer token")]
    Missing,
    #[error("malformed token")]
    Malformed,
    #[error("unknown token")]
    Unknown,
    #[error("token {0} is revoked")]
    Revoked(String),
    #[error("token {0} has expired")]
    Expired(String),
    #[error("token {0} names an unknown role")]
    BadRole(String),
    #[error("store: {0}")]
    Store(String),
}

/// Who a valid token speaks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub token_id: String,
    pub operator: String,
    pub role: Role,
}

fn hash(token: &str) -> B256 {
    B256::from_slice(&Sha256::digest(token.as_bytes()))
}

/// The id part of a well-formed token.
pub fn token_id(token: &str) -> Option<&str> {
    let rest = token.strip_prefix("dvn_")?;
    let (id, secret) = rest.split_once('_')?;
    let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
    (hex(id, 16) && hex(secret, 64)).then_some(id)
}

/// Makes a token for `operator` with `role`, valid for `days`; returns the token (to show
/// once) and the stored row.
pub async fn create(
    store: &Store,
    operator: &str,
    role: Role,
    days: u32,
) -> Result<(String, TokenRow), StoreError> {
    let mut id = [0u8; 8];
    let mut secret = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut id);
    rand::thread_rng().fill_bytes(&mut secret);
    let token = format!(
        "dvn_{}_{}",
        alloy::primitives::hex::encode(id),
        alloy::primitives::hex::encode(secret)
    );
    let now = now_ms();
    let row = TokenRow {
        id: alloy::primitives::hex::encode(id),
        operator: operator.to_string(),
        role: role.as_str().to_string(),
        token_hash: hash(&token),
        created_at_ms: now,
        expires_at_ms: now + i64::from(days) * 86_400_000,
        revoked_at_ms: None,
    };
    store.insert_token(&row).await?;
    Ok((token, row))
}

/// Checks a presented token.
pub async fn authenticate(store: &Store, token: &str) -> Result<Caller, TokenError> {
    let id = token_id(token).ok_or(TokenError::Malformed)?;
    let row = store
        .token(id)
        .await
        .map_err(|e| TokenError::Store(e.to_string()))?
        .ok_or(TokenError::Unknown)?;
    if !bool::from(hash(token).as_slice().ct_eq(row.token_hash.as_slice())) {
        return Err(TokenError::Unknown);
    }
    if row.revoked_at_ms.is_some() {
        return Err(TokenError::Revoked(row.id));
    }
    if row.expires_at_ms <= now_ms() {
        return Err(TokenError::Expired(row.id));
    }
    let role = Role::parse(&row.role).ok_or_else(|| TokenError::BadRole(row.id.clone()))?;
    Ok(Caller {
        token_id: row.id,
        operator: row.operator,
        role,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_exact_shape_is_a_token() {
        let good = format!("dvn_{}_{}", "ab".repeat(8), "cd".repeat(32));
        assert_eq!(token_id(&good), Some("abababababababab"));
        for bad in [
            "",
            "dvn_",
            "Bearer x",
            &good[..good.len() - 1],
            &good.replace("dvn_", "dvm_"),
            &format!("{good}0"),
        ] {
            assert_eq!(token_id(bad), None, "{bad}");
        }
    }
}
