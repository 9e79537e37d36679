//! A GCP Cloud KMS stand-in: the REST calls a DVN key needs
//! (`GET /v1/{keyVersion}/publicKey`, `POST /v1/{keyVersion}:asymmetricSign`, with or without
//! the `$alt=json;enum-encoding=int` query Google's client library adds) behind bearer tokens
//! that are self-signed service-account JWTs, as Google accepts them from its libraries: each
//! request's token is checked (RS256 signature by the service account's key, key id, issuer,
//! subject, Cloud KMS scope, issue and expiry times). The service-account key file it writes is
//! the same shape Google issues.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rsa::KeySize;
use aws_lc_rs::signature::{KeyPair, RsaKeyPair, UnparsedPublicKey, RSA_PKCS1_2048_8192_SHA256};
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine;
use serde_json::json;

use super::{HealthSwitch, KmsKey};

pub const KEY_VERSION: &str =
    "projects/dvn-test/locations/global/keyRings/dvn/cryptoKeys/gcp-signer/cryptoKeyVersions/1";
const CLIENT_EMAIL: &str = "dvn-node@dvn-test.iam.gserviceaccount.com";
const SCOPE: &str = "https://www.googleapis.com/auth/cloudkms";
const PRIVATE_KEY_ID: &str = "stand-in-key-1";

#[derive(Debug)]
struct Inner {
    key: KmsKey,
    /// PKCS#1 RSAPublicKey of the service account.
    account_public: Vec<u8>,
    /// Tokens that passed, so a token is verified once, as a cache would.
    tokens: Mutex<HashSet<String>>,
    sign_requests: AtomicUsize,
    health: HealthSwitch,
}

/// A running stand-in; dropping it stops it.
#[derive(Debug)]
pub struct GcpKmsStandIn {
    pub url: String,
    pub health: HealthSwitch,
    account: Arc<RsaKeyPair>,
    inner: Arc<Inner>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for GcpKmsStandIn {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn pem(label: &str, der: &[u8]) -> String {
    let body = base64::engine::general_purpose::STANDARD.encode(der);
    let lines: Vec<&str> = body
        .as_bytes()
        .chunks(64)
        .filter_map(|c| std::str::from_utf8(c).ok())
        .collect();
    format!(
        "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
        lines.join("\n")
    )
}

fn service_account_json(account: &RsaKeyPair, token_uri: &str) -> anyhow::Result<String> {
    let der = AsDer::<aws_lc_rs::encoding::Pkcs8V1Der>::as_der(account)
        .map_err(|_| anyhow::anyhow!("cannot encode the service-account key"))?;
    Ok(serde_json::to_string_pretty(&json!({
        "type": "service_account",
        "project_id": "dvn-test",
        "private_key_id": PRIVATE_KEY_ID,
        "private_key": pem("PRIVATE KEY", der.as_ref()),
        "client_email": CLIENT_EMAIL,
        "client_id": "100000000000000000001",
        "auth_uri": "http://127.0.0.1/unused",
        "token_uri": token_uri,
    }))?)
}

impl GcpKmsStandIn {
    pub async fn start(key: KmsKey) -> anyhow::Result<Self> {
        let account = Arc::new(
            RsaKeyPair::generate(KeySize::Rsa2048)
                .map_err(|_| anyhow::anyhow!("cannot generate an RSA key"))?,
        );
        let inner = Arc::new(Inner {
            key,
            account_public: account.public_key().as_ref().to_vec(),
            tokens: Mutex::default(),
            sign_requests: AtomicUsize::new(0),
            health: HealthSwitch::default(),
        });
        let app = axum::Router::new()
            .route("/v1/{*rest}", axum::routing::get(kms_get).post(kms_post))
            .with_state(Arc::clone(&inner));
        let (url, task) = super::serve(app).await?;
        Ok(Self {
            url,
            health: inner.health.clone(),
            account,
            inner,
            task,
        })
    }

    pub fn address(&self) -> alloy::primitives::Address {
        self.inner.key.address()
    }

    pub fn key_version(&self) -> &'static str {
        KEY_VERSION
    }

    /// `asymmetricSign` requests that passed authentication.
    pub fn sign_requests(&self) -> usize {
        self.inner.sign_requests.load(Ordering::SeqCst)
    }

    /// Writes the service account's key file (as Google issues it) into `dir`.
    pub fn write_credentials(&self, dir: &Path) -> anyhow::Result<PathBuf> {
        let path = dir.join("gcp-service-account.json");
        std::fs::write(
            &path,
            service_account_json(&self.account, &format!("{}/token", self.url))?,
        )?;
        Ok(path)
    }

    /// Writes a key file of the same account but with a key the account does not have: its
    /// token requests must be refused.
    pub fn write_foreign_credentials(&self, dir: &Path) -> anyhow::Result<PathBuf> {
        let other = RsaKeyPair::generate(KeySize::Rsa2048)
            .map_err(|_| anyhow::anyhow!("cannot generate an RSA key"))?;
        let path = dir.join("gcp-foreign-account.json");
        std::fs::write(
            &path,
            service_account_json(&other, &format!("{}/token", self.url))?,
        )?;
        Ok(path)
    }
}

fn b64url(segment: &str) -> Option<Vec<u8>> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(segment.trim_end_matches('='))
        .ok()
}

/// Whether `token` is a self-signed JWT of the service account, for Cloud KMS, valid now.
fn self_signed_jwt_valid(inner: &Inner, token: &str) -> bool {
    let parts: Vec<&str> = token.split('.').collect();
    let [header, claims, signature] = parts[..] else {
        return false;
    };
    let (Some(header_json), Some(claims_json), Some(signature)) =
        (b64url(header), b64url(claims), b64url(signature))
    else {
        return false;
    };
    let signed = format!("{header}.{claims}");
    let key = UnparsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, &inner.account_public);
    if key.verify(signed.as_bytes(), &signature).is_err() {
        return false;
    }
    let (Ok(header), Ok(claims)) = (
        serde_json::from_slice::<serde_json::Value>(&header_json),
        serde_json::from_slice::<serde_json::Value>(&claims_json),
    ) else {
        return false;
    };
    let now = chrono::Utc::now().timestamp();
    let scoped = claims["scope"]
        .as_str()
        .is_some_and(|s| s.split(' ').any(|s| s == SCOPE));
    header["alg"] == "RS256"
        && header["kid"] == PRIVATE_KEY_ID
        && claims["iss"] == CLIENT_EMAIL
        && claims["sub"] == CLIENT_EMAIL
        && scoped
        && claims["exp"].as_i64().is_some_and(|exp| exp >= now)
        && claims["iat"].as_i64().is_some_and(|iat| iat <= now + 300)
}

/// Google's error body: HTTP code, message and the canonical status name.
fn api_error(status: StatusCode, message: &str) -> Response {
    let name = match status.as_u16() {
        400 => "INVALID_ARGUMENT",
        401 => "UNAUTHENTICATED",
        403 => "PERMISSION_DENIED",
        404 => "NOT_FOUND",
        503 => "UNAVAILABLE",
        _ => "INTERNAL",
    };
    (
        status,
        Json(json!({ "error": { "code": status.as_u16(), "message": message, "status": name } })),
    )
        .into_response()
}

fn authorised(inner: &Inner, headers: &HeaderMap) -> bool {
    let Some(bearer) = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    else {
        return false;
    };
    let mut tokens = inner.tokens.lock().unwrap_or_else(|e| e.into_inner());
    if tokens.contains(bearer) {
        return true;
    }
    let valid = self_signed_jwt_valid(inner, bearer);
    if valid {
        tokens.insert(bearer.to_string());
    }
    valid
}

/// The outage switch, then the bearer token: what every KMS call passes first.
async fn gate(inner: &Inner, headers: &HeaderMap) -> Option<Response> {
    if let Some(response) = inner.health.intercept().await {
        return Some(response);
    }
    (!authorised(inner, headers)).then(|| {
        api_error(
            StatusCode::UNAUTHORIZED,
            "Request had invalid authentication credentials.",
        )
    })
}

async fn kms_get(
    State(inner): State<Arc<Inner>>,
    UrlPath(rest): UrlPath<String>,
    headers: HeaderMap,
) -> Response {
    if let Some(refusal) = gate(&inner, &headers).await {
        return refusal;
    }
    if rest.strip_suffix("/publicKey") != Some(KEY_VERSION) {
        return api_error(StatusCode::NOT_FOUND, "CryptoKeyVersion not found.");
    }
    Json(json!({
        "pem": inner.key.public_pem(),
        "algorithm": "EC_SIGN_SECP256K1_SHA256",
        "name": KEY_VERSION,
        "protectionLevel": "HSM",
    }))
    .into_response()
}

async fn kms_post(
    State(inner): State<Arc<Inner>>,
    UrlPath(rest): UrlPath<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    if let Some(refusal) = gate(&inner, &headers).await {
        return refusal;
    }
    if rest.strip_suffix(":asymmetricSign") != Some(KEY_VERSION) {
        return api_error(StatusCode::NOT_FOUND, "CryptoKeyVersion not found.");
    }
    let request: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    let Some(digest) = request["digest"]["sha256"]
        .as_str()
        .and_then(super::digest_from_base64)
    else {
        return api_error(StatusCode::BAD_REQUEST, "digest.sha256 must be 32 bytes");
    };
    let Some(der) = inner.key.sign_der(digest.as_slice()) else {
        return api_error(StatusCode::INTERNAL_SERVER_ERROR, "sign failed");
    };
    inner.sign_requests.fetch_add(1, Ordering::SeqCst);
    Json(json!({
        "signature": base64::engine::general_purpose::STANDARD.encode(der),
        "name": KEY_VERSION,
        "verifiedDigestCrc32c": false,
        "protectionLevel": "HSM",
    }))
    .into_response()
}
