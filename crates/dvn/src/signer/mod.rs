//! The keys this node uses: the DVN signer (its region's multisig key) and the submitter (the
//! hot account with `ADMIN_ROLE` that sends `DVN.execute`).
//!
//! Backends: an Ethereum keystore v3 file; a PKCS#11 token ([`pkcs11`]); AWS KMS
//! ([`aws_kms`]), GCP Cloud KMS ([`gcp_kms`]) and Aliyun KMS ([`aliyun_kms`]) through one
//! [`kms::KmsSigner`]; (devnet only) a plaintext key in an environment variable. All implement
//! `alloy::signers::Signer`; HSM/KMS output goes through [`recover`]. [`KeyHandle`] bounds
//! every call (timeout, retry of transient failures), keeps the key's health for `/ready`, and
//! checks that each signature is low-s and recovers to this key before it leaves the node.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use alloy::primitives::{keccak256, Address, Signature, B256};
use alloy::signers::local::PrivateKeySigner;
use alloy::signers::Signer;

use crate::config::{KeyConfig, SigningConfig};

pub mod acs3;
pub mod aliyun_kms;
#[cfg(feature = "aws-kms")]
pub mod aws_kms;
#[cfg(feature = "gcp-kms")]
pub mod gcp_kms;
pub mod kms;
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

fn env_var(var: &str) -> Result<String, KeyError> {
    std::env::var(var).map_err(|_| KeyError::MissingEnv(var.to_string()))
}

/// Why a key could not be loaded or used. Never contains key material, PINs or passwords.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("HSM: {0}")]
    Hsm(#[from] pkcs11::HsmError),
    #[error("{0}")]
    Kms(#[from] kms::KmsError),
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
    #[error("signing timed out after {0:?}")]
    Timeout(Duration),
    #[error("this dvn was built without the {0} feature: rebuild with `--features {0}`")]
    NotBuilt(&'static str),
    #[error(
        "signature from the backend recovers to {actual}, not to the key's address {expected}"
    )]
    WrongKey { expected: Address, actual: Address },
}

/// The state of a key's HSM/KMS as last seen: shared by the signing path, the health probe,
/// `/ready` and the metrics.
#[derive(Debug, Default)]
pub struct KeyHealth {
    down: AtomicBool,
    last_ok_ms: AtomicU64,
    last_attempt_ms: AtomicU64,
    last_error: Mutex<Option<String>>,
}

impl KeyHealth {
    /// True until a call has failed, and again once one succeeds.
    pub fn up(&self) -> bool {
        !self.down.load(Ordering::Relaxed)
    }

    pub fn last_error(&self) -> Option<String> {
        self.last_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Unix ms of the last successful signature (0: none yet).
    pub fn last_ok_ms(&self) -> u64 {
        self.last_ok_ms.load(Ordering::Relaxed)
    }

    fn record(&self, outcome: Result<(), String>) {
        let now = unix_ms();
        self.last_attempt_ms.store(now, Ordering::Relaxed);
        let mut last_error = self.last_error.lock().unwrap_or_else(|e| e.into_inner());
        match outcome {
            Ok(()) => {
                self.last_ok_ms.store(now, Ordering::Relaxed);
                self.down.store(false, Ordering::Relaxed);
                *last_error = None;
            }
            Err(e) => {
                self.down.store(true, Ordering::Relaxed);
                *last_error = Some(e);
            }
        }
    }
}

fn unix_ms() -> u64 {
    u64::try_from(crate::store::now_ms()).unwrap_or(0)
}

/// The digest an idle key signs to prove its HSM/KMS answers. It is no EIP-191 digest of any
/// DVN call, so the signature authorises nothing.
pub fn health_probe_digest() -> B256 {
    keccak256(b"dvn: signer health probe (authorises nothing)")
}

/// A signing key behind the one interface every backend implements.
#[derive(Clone)]
pub struct KeyHandle {
    inner: Arc<dyn Signer + Send + Sync>,
    backend: &'static str,
    role: &'static str,
    policy: SigningConfig,
    health: Arc<KeyHealth>,
}

impl std::fmt::Debug for KeyHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyHandle")
            .field("address", &self.address())
            .field("backend", &self.backend)
            .field("role", &self.role)
            .finish()
    }
}

/// One HTTP client for the REST KMS backends: TLS, and a connect timeout of its own so a
/// black-holed endpoint fails fast (the per-call timeout bounds the rest).
fn kms_http_client() -> Result<reqwest::Client, KeyError> {
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .build()
        .map_err(|e| KeyError::Sign(format!("cannot build the HTTP client: {e}")))
}

/// Opens the backend `config` names.
async fn open_backend(
    config: &KeyConfig,
) -> Result<(Arc<dyn Signer + Send + Sync>, &'static str), KeyError> {
    Ok(match config {
        KeyConfig::Env { var, .. } => {
            let key = env_var(var)?
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
            let (module, token, key) = (module.clone(), token_label.clone(), key_label.clone());
            // Opening logs in and searches the token: blocking FFI.
            let signer = tokio::task::spawn_blocking(move || {
                pkcs11::Pkcs11Signer::open(&module, &token, &key, &pin)
            })
            .await
            .map_err(|e| KeyError::Sign(e.to_string()))??;
            (Arc::new(signer), "pkcs11")
        }
        #[cfg(feature = "aws-kms")]
        KeyConfig::AwsKms {
            key_id,
            region,
            endpoint,
        } => {
            let (backend, address) =
                aws_kms::AwsKms::open(key_id, region.as_deref(), endpoint.as_deref()).await?;
            (
                Arc::new(kms::KmsSigner::new(Arc::new(backend), address)),
                "aws-kms",
            )
        }
        #[cfg(not(feature = "aws-kms"))]
        KeyConfig::AwsKms { .. } => return Err(KeyError::NotBuilt("aws-kms")),
        #[cfg(feature = "gcp-kms")]
        KeyConfig::GcpKms {
            key_version,
            credentials_file,
            endpoint,
        } => {
            let (backend, address) = gcp_kms::GcpKms::open(
                key_version,
                credentials_file.as_deref(),
                endpoint.as_deref(),
            )
            .await?;
            (
                Arc::new(kms::KmsSigner::new(Arc::new(backend), address)),
                "gcp-kms",
            )
        }
        #[cfg(not(feature = "gcp-kms"))]
        KeyConfig::GcpKms { .. } => return Err(KeyError::NotBuilt("gcp-kms")),
        KeyConfig::AliyunKms {
            key_id,
            key_version_id,
            region,
            endpoint,
            access_key_id_env,
            access_key_secret_env,
            security_token_env,
        } => {
            let settings = aliyun_kms::AliyunKmsSettings {
                endpoint: match (endpoint, region) {
                    (Some(endpoint), _) => endpoint.clone(),
                    (None, Some(region)) => format!("https://kms.{region}.aliyuncs.com"),
                    (None, None) => {
                        return Err(KeyError::Sign(
                            "Aliyun KMS needs a region or endpoint".into(),
                        ))
                    }
                },
                key_id: key_id.clone(),
                key_version_id: key_version_id.clone(),
                access_key_id: env_var(access_key_id_env)?,
                access_key_secret: env_var(access_key_secret_env)?,
                security_token: security_token_env.as_deref().map(env_var).transpose()?,
            };
            let (backend, address) =
                aliyun_kms::AliyunKms::open(settings, kms_http_client()?).await?;
            (
                Arc::new(kms::KmsSigner::new(Arc::new(backend), address)),
                "aliyun-kms",
            )
        }
    })
}

/// Whether a failed signing call may succeed if tried again.
fn transient(error: &alloy::signers::Error) -> bool {
    let alloy::signers::Error::Other(inner) = error else {
        return false;
    };
    if let Some(kms) = inner.downcast_ref::<kms::KmsError>() {
        return kms.retryable();
    }
    if let Some(hsm) = inner.downcast_ref::<pkcs11::HsmError>() {
        return hsm.retryable();
    }
    false
}

impl KeyHandle {
    /// Loads the key `config` describes, for `role` (`signer` or `submitter`: a metrics label).
    /// Opening talks to the HSM/KMS (log in, read the public key) within the policy's timeout.
    pub async fn load(
        config: &KeyConfig,
        role: &'static str,
        policy: &SigningConfig,
    ) -> Result<Self, KeyError> {
        let timeout = Duration::from_millis(policy.timeout_ms).max(Duration::from_secs(10));
        let (signer, backend) = tokio::time::timeout(timeout, open_backend(config))
            .await
            .map_err(|_| KeyError::Timeout(timeout))??;
        let key = Self::from_signer(signer, backend)
            .with_role(role)
            .with_policy(policy.clone());
        // Every error kind has a series from the start: a panel or a rate() alert over it
        // shows 0, not "No data", before the first failure.
        for kind in ["timeout", "unavailable", "refused"] {
            metrics::counter!("dvn_signing_errors_total", "backend" => backend, "role" => role, "kind" => kind)
                .increment(0);
        }
        Ok(key)
    }

    /// Wraps any alloy signer (tests, embedding).
    pub fn from_signer(signer: Arc<dyn Signer + Send + Sync>, backend: &'static str) -> Self {
        Self {
            inner: signer,
            backend,
            role: "signer",
            policy: SigningConfig::default(),
            health: Arc::default(),
        }
    }

    pub fn with_role(mut self, role: &'static str) -> Self {
        self.role = role;
        self
    }

    pub fn with_policy(mut self, policy: SigningConfig) -> Self {
        self.policy = policy;
        self
    }

    pub fn address(&self) -> Address {
        self.inner.address()
    }

    pub fn backend(&self) -> &'static str {
        self.backend
    }

    pub fn role(&self) -> &'static str {
        self.role
    }

    pub fn health(&self) -> &KeyHealth {
        &self.health
    }

    /// Signs a 32-byte digest: each try bounded by the timeout, transient failures retried
    /// (up to `attempts` tries with a short backoff), the result low-s and verified to recover
    /// to this key. Latency, errors and health are recorded per backend and role.
    pub async fn sign_digest(&self, digest: B256) -> Result<Signature, KeyError> {
        let labels = [("backend", self.backend), ("role", self.role)];
        let timeout = Duration::from_millis(self.policy.timeout_ms);
        let attempts = self.policy.attempts.max(1);
        let mut attempt = 0;
        let outcome = loop {
            attempt += 1;
            let started = std::time::Instant::now();
            let result = match tokio::time::timeout(timeout, self.inner.sign_hash(&digest)).await {
                Ok(Ok(signature)) => Ok(signature),
                Ok(Err(e)) => Err((transient(&e), KeyError::Sign(e.to_string()))),
                Err(_) => Err((true, KeyError::Timeout(timeout))),
            };
            metrics::histogram!("dvn_signing_seconds", &labels)
                .record(started.elapsed().as_secs_f64());
            match result {
                Ok(signature) => break self.check(digest, signature),
                Err((retry, error)) => {
                    let kind = if matches!(error, KeyError::Timeout(_)) {
                        "timeout"
                    } else if retry {
                        "unavailable"
                    } else {
                        "refused"
                    };
                    metrics::counter!("dvn_signing_errors_total", "backend" => self.backend, "role" => self.role, "kind" => kind)
                        .increment(1);
                    if !retry || attempt >= attempts {
                        break Err(error);
                    }
                    tracing::warn!(
                        backend = self.backend,
                        role = self.role,
                        attempt,
                        "signing failed, retrying: {error}"
                    );
                    tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt))).await;
                }
            }
        };
        self.health
            .record(outcome.as_ref().map(|_| ()).map_err(|e| e.to_string()));
        metrics::gauge!("dvn_signer_up", &labels).set(if self.health.up() { 1.0 } else { 0.0 });
        outcome
    }

    fn check(&self, digest: B256, signature: Signature) -> Result<Signature, KeyError> {
        let signature = dvn_lz::multisig::normalize(signature);
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

    /// Signs the health-probe digest unless a signature succeeded within `fresh`; updates the
    /// health either way. Returns whether the key is usable.
    pub async fn probe(&self, fresh: Duration) -> bool {
        let since_ok = unix_ms().saturating_sub(self.health.last_ok_ms());
        if self.health.up() && self.health.last_ok_ms() > 0 && since_ok < fresh.as_millis() as u64 {
            return true;
        }
        match self.sign_digest(health_probe_digest()).await {
            Ok(_) => true,
            Err(e) => {
                tracing::error!(
                    backend = self.backend,
                    role = self.role,
                    "key unusable: {e}"
                );
                false
            }
        }
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

    #[tokio::test]
    async fn a_missing_or_bad_env_key_is_reported_by_name_only() {
        let missing = KeyConfig::Env {
            var: "DVN_TEST_SURELY_UNSET_VAR".into(),
            allow_plaintext: true,
        };
        let err = KeyHandle::load(&missing, "signer", &SigningConfig::default())
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("DVN_TEST_SURELY_UNSET_VAR"), "{err}");
    }
}
