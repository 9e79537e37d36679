//! The keys this node uses: the DVN signer (its region's multisig key) and the submitter (the
//! hot account with `ADMIN_ROLE` that sends `DVN.execute`).
//!
//! Backends: an Ethereum keystore v3 file; a PKCS#11 token ([`pkcs11`]); (devnet only) a
//! plaintext key in an environment variable. All implement `alloy::signers::Signer`; HSM output
//! goes through [`recover`]. Every signature is normalised (low-s, v = 27/28) and checked to
//! recover to this key before it leaves the node.

use std::sync::Arc;

use alloy::primitives::{Address, Signature, B256};
use alloy::signers::local::PrivateKeySigner;
use alloy::signers::Signer;

use crate::config::KeyConfig;

pub mod pkcs11;
pub mod recover;

/// Reads a password or PIN from the named env var or file (exactly one is configured).
fn read_secret(env: Option<&str>, file: Option<&std::path::Path>) -> Result<String, KeyError> {
    match (env, file) {
        (Some(var), _) => std::env::var(var).map_err(|_| KeyError::MissingEnv(var.to_string())),
        (None, Some(file)) => Ok(std::fs::read_to_string(file)
            .map_err(|_| KeyError::PasswordFile(file.display().to_string()))?
            .trim_end_matches(['\n', '\r'])
            .to_string()),
        (None, None) => Err(KeyError::PasswordFile("(none configured)".into())),
    }
}

/// Why a key could not be loaded or used. Never contains key material or passwords.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("HSM: {0}")]
    Hsm(#[from] pkcs11::HsmError),
    #[error("environment variable {0} is not set")]
    MissingEnv(String),
    #[error("environment variable {0} does not hold a valid secp256k1 private key")]
    BadEnvKey(String),
    #[error("cannot read password file {0}")]
    PasswordFile(String),
    #[error("cannot decrypt keystore {path}: {reason}")]
    Keystore { path: String, reason: String },
    #[error("signing failed: {0}")]
    Sign(String),
    #[error(
        "signature from the backend recovers to {actual}, not to the key's address {expected}"
    )]
    WrongKey { expected: Address, actual: Address },
}

/// A signing key behind the one interface every backend implements.
#[derive(Clone)]
pub struct KeyHandle {
    inner: Arc<dyn Signer + Send + Sync>,
    backend: &'static str,
}

impl std::fmt::Debug for KeyHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyHandle")
            .field("address", &self.address())
            .field("backend", &self.backend)
            .finish()
    }
}

impl KeyHandle {
    /// Loads the key `config` describes.
    pub fn load(config: &KeyConfig) -> Result<Self, KeyError> {
        let (signer, backend): (Arc<dyn Signer + Send + Sync>, &'static str) = match config {
            KeyConfig::Env { var, .. } => {
                let hex = std::env::var(var).map_err(|_| KeyError::MissingEnv(var.clone()))?;
                let key = hex
                    .trim()
                    .parse::<PrivateKeySigner>()
                    .map_err(|_| KeyError::BadEnvKey(var.clone()))?;
                (Arc::new(key), "env")
            }
            KeyConfig::Keystore {
                path,
                password_env,
                password_file,
            } => {
                let password = read_secret(password_env.as_deref(), password_file.as_deref())?;
                let key = PrivateKeySigner::decrypt_keystore(path, password).map_err(|e| {
                    KeyError::Keystore {
                        path: path.display().to_string(),
                        reason: e.to_string(),
                    }
                })?;
                (Arc::new(key), "keystore")
            }
            KeyConfig::Pkcs11 {
                module,
                token_label,
                key_label,
                pin_env,
                pin_file,
            } => {
                let pin = read_secret(pin_env.as_deref(), pin_file.as_deref())?;
                (
                    Arc::new(pkcs11::Pkcs11Signer::open(
                        module,
                        token_label,
                        key_label,
                        &pin,
                    )?),
                    "pkcs11",
                )
            }
        };
        Ok(Self {
            inner: signer,
            backend,
        })
    }

    /// Wraps any alloy signer (HSM/KMS backends, tests).
    pub fn from_signer(signer: Arc<dyn Signer + Send + Sync>, backend: &'static str) -> Self {
        Self {
            inner: signer,
            backend,
        }
    }

    pub fn address(&self) -> Address {
        self.inner.address()
    }

    pub fn backend(&self) -> &'static str {
        self.backend
    }

    /// The alloy signer, for building transactions.
    pub fn signer(&self) -> Arc<dyn Signer + Send + Sync> {
        Arc::clone(&self.inner)
    }

    /// Signs a 32-byte digest; the result is low-s and verified to recover to this key.
    pub async fn sign_digest(&self, digest: B256) -> Result<Signature, KeyError> {
        let started = std::time::Instant::now();
        let signature = self
            .inner
            .sign_hash(&digest)
            .await
            .map_err(|e| KeyError::Sign(e.to_string()));
        metrics::histogram!("dvn_signing_seconds", "backend" => self.backend)
            .record(started.elapsed().as_secs_f64());
        let signature = dvn_lz::multisig::normalize(signature?);
        let actual = dvn_lz::multisig::recover_signer(digest, signature)
            .map_err(|e| KeyError::Sign(e.to_string()))?;
        if actual != self.address() {
            return Err(KeyError::WrongKey {
                expected: self.address(),
                actual,
            });
        }
        Ok(signature)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn env_key_signs_low_s_and_recovers() {
        let key = PrivateKeySigner::random();
        let handle = KeyHandle::from_signer(Arc::new(key.clone()), "test");
        for i in 0..20u8 {
            let digest = B256::repeat_byte(i);
            let sig = handle.sign_digest(digest).await.unwrap();
            assert_eq!(
                sig.recover_address_from_prehash(&digest).unwrap(),
                key.address()
            );
            assert_eq!(sig.normalize_s(), None, "already low-s");
        }
    }

    #[test]
    fn a_missing_or_bad_env_key_is_reported_by_name_only() {
        let missing = KeyConfig::Env {
            var: "DVN_TEST_SURELY_UNSET_VAR".into(),
            allow_plaintext: true,
        };
        let err = KeyHandle::load(&missing).unwrap_err().to_string();
        assert!(err.contains("DVN_TEST_SURELY_UNSET_VAR"), "{err}");
    }
}
