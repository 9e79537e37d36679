//! PKCS#11 signing (`cryptoki`): the path to AWS CloudHSM (its PKCS#11 library), GCP Cloud HSM
//! (Google's kmsp11) and hardware HSMs; tested against SoftHSM2.
//!
//! The key is found by token label and key label; it is a secp256k1 EC key (EC params = the
//! secp256k1 OID). `CKM_ECDSA` signs the 32-byte digest as given and returns raw `r ‖ s`;
//! [`super::recover`] turns that into an Ethereum signature. PKCS#11 calls block, so they run
//! on the blocking pool, over one logged-in session behind a mutex (sessions are `Send`, not
//! `Sync`). `C_Initialize` may run once per process, so contexts are shared per module path.
//! Errors name the cause — module, token, key, login — and never the PIN.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use alloy::primitives::{Address, ChainId, Signature, B256};
use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::RvError;
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::types::AuthPin;

use super::recover::{address_of_ec_point, ethereum_signature};

/// DER of OID 1.3.132.0.10 (secp256k1), the `CKA_EC_PARAMS` of every key we use.
pub const SECP256K1_EC_PARAMS: [u8; 7] = [0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x0a];

/// Why the HSM could not be used. Never carries the PIN.
#[derive(Debug, thiserror::Error)]
pub enum HsmError {
    #[error("cannot load PKCS#11 module {module}: {reason}")]
    Module { module: String, reason: String },
    #[error("no token labelled {0:?} (is the HSM connected and the token initialised?)")]
    NoToken(String),
    #[error("login to token {token:?} failed: {reason}")]
    Login { token: String, reason: String },
    #[error("no secp256k1 private key labelled {key:?} on token {token:?}")]
    NoKey { token: String, key: String },
    #[error("key {key:?} on token {token:?} has no readable uncompressed secp256k1 public point")]
    BadPublicKey { token: String, key: String },
    #[error("key {0:?} already exists on the token")]
    KeyExists(String),
    #[error("PKCS#11 {operation} failed: {reason}")]
    Operation {
        operation: &'static str,
        reason: String,
    },
}

impl HsmError {
    /// Whether trying again may succeed (a lost session or token, a failed operation); a
    /// refused login is not retried, so a wrong PIN cannot lock the token.
    pub fn retryable(&self) -> bool {
        matches!(self, Self::Operation { .. } | Self::NoToken(_))
    }
}

fn op(operation: &'static str) -> impl Fn(cryptoki::error::Error) -> HsmError {
    move |e| HsmError::Operation {
        operation,
        reason: e.to_string(),
    }
}

/// The process-wide context for a module (C_Initialize runs once per process).
fn context(module: &Path) -> Result<Pkcs11, HsmError> {
    static CONTEXTS: OnceLock<Mutex<HashMap<PathBuf, Pkcs11>>> = OnceLock::new();
    let mut contexts = CONTEXTS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    if let Some(ctx) = contexts.get(module) {
        return Ok(ctx.clone());
    }
    let fail = |reason: String| HsmError::Module {
        module: module.display().to_string(),
        reason,
    };
    let ctx = Pkcs11::new(module).map_err(|e| fail(e.to_string()))?;
    ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
        .map_err(|e| fail(e.to_string()))?;
    contexts.insert(module.to_path_buf(), ctx.clone());
    Ok(ctx)
}

/// Re-initialises the module (`C_Finalize`, then `C_Initialize`): after an HSM or its
/// connection was lost, libraries (SoftHSM, network HSM clients) only rediscover tokens at
/// initialisation. Every session on the module ends; each key re-opens its own on next use.
fn reinitialize(module: &Path) -> Result<(), HsmError> {
    let ctx = context(module)?;
    // C_Finalize fails only when the library was not initialised, which is what we want anyway.
    let _ = ctx.clone().finalize();
    ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
        .map_err(|e| HsmError::Module {
            module: module.display().to_string(),
            reason: e.to_string(),
        })
}

/// Opens a logged-in read-write session on the token labelled `token`.
fn open_session(module: &Path, token: &str, pin: &str) -> Result<Session, HsmError> {
    let ctx = context(module)?;
    let slot = ctx
        .get_slots_with_token()
        .map_err(op("C_GetSlotList"))?
        .into_iter()
        .find(|slot| {
            ctx.get_token_info(*slot)
                .is_ok_and(|info| info.label().trim_end() == token)
        })
        .ok_or_else(|| HsmError::NoToken(token.to_string()))?;
    let session = ctx.open_rw_session(slot).map_err(op("C_OpenSession"))?;
    match session.login(UserType::User, Some(&AuthPin::new(pin.into()))) {
        // Login state belongs to the application, not the session: a second key on the same
        // token (signer and submitter both in one HSM) finds the user already logged in.
        Ok(()) | Err(cryptoki::error::Error::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => {
            Ok(session)
        }
        Err(e) => Err(HsmError::Login {
            token: token.to_string(),
            reason: e.to_string(),
        }),
    }
}

fn find(
    session: &Session,
    class: ObjectClass,
    label: &str,
) -> Result<Option<ObjectHandle>, HsmError> {
    let template = [
        Attribute::Class(class),
        Attribute::KeyType(KeyType::EC),
        Attribute::Label(label.as_bytes().to_vec()),
    ];
    Ok(session
        .find_objects(&template)
        .map_err(op("C_FindObjects"))?
        .into_iter()
        .next())
}

fn public_address(session: &Session, token: &str, label: &str) -> Result<Address, HsmError> {
    let bad = || HsmError::BadPublicKey {
        token: token.to_string(),
        key: label.to_string(),
    };
    let public = find(session, ObjectClass::PUBLIC_KEY, label)?.ok_or_else(bad)?;
    let attributes = session
        .get_attributes(public, &[AttributeType::EcPoint])
        .map_err(op("C_GetAttributeValue"))?;
    let point = attributes
        .into_iter()
        .find_map(|a| match a {
            Attribute::EcPoint(p) => Some(p),
            _ => None,
        })
        .ok_or_else(bad)?;
    address_of_ec_point(&point).ok_or_else(bad)
}

/// Where a key is; kept so a session lost mid-run (HSM restarted, network HSM unreachable)
/// can be re-opened. The PIN stays in process memory for the same reason.
struct KeyLocation {
    module: PathBuf,
    token: String,
    key: String,
    pin: String,
}

/// A logged-in session and the private key's handle in it.
struct OpenKey {
    session: Session,
    key: ObjectHandle,
}

impl KeyLocation {
    fn open(&self) -> Result<OpenKey, HsmError> {
        let session = open_session(&self.module, &self.token, &self.pin)?;
        let key = find(&session, ObjectClass::PRIVATE_KEY, &self.key)?.ok_or_else(|| {
            HsmError::NoKey {
                token: self.token.clone(),
                key: self.key.clone(),
            }
        })?;
        Ok(OpenKey { session, key })
    }
}

impl KeyLocation {
    /// Re-opens after a failure; when the token is gone from the module's view, re-initialises
    /// the module once and looks again.
    fn reopen(&self) -> Result<OpenKey, HsmError> {
        match self.open() {
            Err(HsmError::NoToken(_) | HsmError::Operation { .. }) => {
                tracing::warn!(token = %self.token, "token not reachable; re-initialising the PKCS#11 module");
                reinitialize(&self.module)?;
                self.open()
            }
            other => other,
        }
    }
}

/// A signing key in a PKCS#11 token.
#[derive(Clone)]
pub struct Pkcs11Signer {
    location: Arc<KeyLocation>,
    /// `None` after a failed call: the next call opens a fresh session.
    open: Arc<Mutex<Option<OpenKey>>>,
    address: Address,
    chain_id: Option<ChainId>,
}

impl std::fmt::Debug for Pkcs11Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pkcs11Signer")
            .field("address", &self.address)
            .field("token", &self.location.token)
            .field("key", &self.location.key)
            .finish()
    }
}

impl Pkcs11Signer {
    /// Logs in and finds the private key labelled `key` and its public key.
    pub fn open(module: &Path, token: &str, key: &str, pin: &str) -> Result<Self, HsmError> {
        let location = KeyLocation {
            module: module.to_path_buf(),
            token: token.to_string(),
            key: key.to_string(),
            pin: pin.to_string(),
        };
        let open = location.open()?;
        let address = public_address(&open.session, token, key)?;
        Ok(Self {
            location: Arc::new(location),
            open: Arc::new(Mutex::new(Some(open))),
            address,
            chain_id: None,
        })
    }

    /// Generates a non-extractable secp256k1 key pair labelled `key` inside the token; returns
    /// its Ethereum address. The private key may sign and nothing else.
    pub fn generate(module: &Path, token: &str, key: &str, pin: &str) -> Result<Address, HsmError> {
        let session = open_session(module, token, pin)?;
        if find(&session, ObjectClass::PRIVATE_KEY, key)?.is_some() {
            return Err(HsmError::KeyExists(key.to_string()));
        }
        let label = key.as_bytes().to_vec();
        let public = [
            Attribute::Token(true),
            Attribute::Verify(true),
            Attribute::EcParams(SECP256K1_EC_PARAMS.to_vec()),
            Attribute::Label(label.clone()),
        ];
        let private = [
            Attribute::Token(true),
            Attribute::Private(true),
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::Sign(true),
            Attribute::Decrypt(false),
            Attribute::Derive(false),
            Attribute::Unwrap(false),
            Attribute::Label(label),
        ];
        session
            .generate_key_pair(&Mechanism::EccKeyPairGen, &public, &private)
            .map_err(op("C_GenerateKeyPair"))?;
        public_address(&session, token, key)
    }

    /// Labels of the secp256k1 private keys on the token, with their addresses.
    pub fn list(module: &Path, token: &str, pin: &str) -> Result<Vec<(String, Address)>, HsmError> {
        let session = open_session(module, token, pin)?;
        let keys = session
            .find_objects(&[
                Attribute::Class(ObjectClass::PRIVATE_KEY),
                Attribute::KeyType(KeyType::EC),
            ])
            .map_err(op("C_FindObjects"))?;
        let mut out = Vec::new();
        for handle in keys {
            let attributes = session
                .get_attributes(handle, &[AttributeType::Label])
                .map_err(op("C_GetAttributeValue"))?;
            for attribute in attributes {
                if let Attribute::Label(bytes) = attribute {
                    let label = String::from_utf8_lossy(&bytes).to_string();
                    if let Ok(address) = public_address(&session, token, &label) {
                        out.push((label, address));
                    }
                }
            }
        }
        Ok(out)
    }

    pub fn address(&self) -> Address {
        self.address
    }

    /// Signs a digest on the blocking pool; the result is normalised and recovers to the key.
    /// A failed call drops the session, so the next one logs in again (the HSM may be back).
    pub async fn sign_digest(&self, digest: B256) -> Result<Signature, HsmError> {
        let location = Arc::clone(&self.location);
        let open = Arc::clone(&self.open);
        let raw = tokio::task::spawn_blocking(move || {
            let mut open = open.lock().unwrap_or_else(|e| e.into_inner());
            if open.is_none() {
                *open = Some(location.reopen()?);
            }
            let result = match open.as_ref() {
                Some(o) => o.session.sign(&Mechanism::Ecdsa, o.key, digest.as_slice()),
                None => return Err(HsmError::NoToken(location.token.clone())),
            };
            result.map_err(|e| {
                *open = None;
                op("C_Sign")(e)
            })
        })
        .await
        .map_err(|e| HsmError::Operation {
            operation: "C_Sign",
            reason: e.to_string(),
        })??;
        ethereum_signature(&raw, digest, self.address).map_err(|e| HsmError::Operation {
            operation: "C_Sign",
            reason: e.to_string(),
        })
    }
}

#[async_trait::async_trait]
impl alloy::signers::Signer for Pkcs11Signer {
    async fn sign_hash(&self, hash: &B256) -> alloy::signers::Result<Signature> {
        self.sign_digest(*hash)
            .await
            .map_err(alloy::signers::Error::other)
    }

    fn address(&self) -> Address {
        self.address
    }

    fn chain_id(&self) -> Option<ChainId> {
        self.chain_id
    }

    fn set_chain_id(&mut self, chain_id: Option<ChainId>) {
        self.chain_id = chain_id;
    }
}
