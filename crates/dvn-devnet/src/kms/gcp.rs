//! A GCP Cloud KMS stand-in: the REST calls a DVN key needs
//! (`GET /v1/{keyVersion}/publicKey`, `POST /v1/{keyVersion}:asymmetricSign`) behind bearer
//! tokens, and an OAuth2 token endpoint doing the service-account flow: it verifies the
//! client's RS256 JWT assertion (issuer, audience, scope, expiry, signature by the service
//! account's key) before issuing a token. The service-account key file it writes is the same
//! shape Google issues, with `token_uri` pointing here.

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
use axum::{Form, Json};
use base64::Engine;
use serde_json::json;

use super::{HealthSwitch, KmsKey};

pub const KEY_VERSION: &str =
    "projects/dvn-test/locations/global/keyRings/dvn/cryptoKeys/gcp-signer/cryptoKeyVersions/1";
const CLIENT_EMAIL: &str = "dvn-node@dvn-test.iam.gserviceaccount.com";
const SCOPE: &str = "https://www.googleapis.com/auth/cloudkms";

#[derive(Debug)]
struct Inner {
    key: KmsKey,
    /// PKCS#1 RSAPublicKey of the service account.
    account_public: Vec<u8>,
    token_uri: Mutex<String>,
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
        "private_key_id": "stand-in-key-1",
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
            token_uri: Mutex::default(),
            tokens: Mutex::default(),
            sign_requests: AtomicUsize::new(0),
            health: HealthSwitch::default(),
        });
        let app = axum::Router::new()
            .route("/token", axum::routing::post(token))
            .route("/v1/{*rest}", axum::routing::get(kms_get).post(kms_post))
            .with_state(Arc::clone(&inner));
        let (url, task) = super::serve(app).await?;
        *inner.token_uri.lock().unwrap_or_else(|e| e.into_inner()) = format!("{url}/token");
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

fn oauth_error(description: &str) -> Response {
    (
        StatusCode::BAD_REQUEST,
        Json(json!({ "error": "invalid_grant", "error_description": description })),
    )
        .into_response()
}

fn b64url(segment: &str) -> Option<Vec<u8>> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(segment.trim_end_matches('='))
        .ok()
}

/// The JWT-bearer grant (RFC 7523) as Google's token endpoint does it.
async fn token(
    State(inner): State<Arc<Inner>>,
    Form(form): Form<std::collections::HashMap<String, String>>,
) -> Response {
    if let Some(response) = inner.health.intercept().await {
        return response;
    }
    if form.get("grant_type").map(String::as_str)
        != Some("urn:ietf:params:oauth:grant-type:jwt-bearer")
    {
        return oauth_error("unsupported grant_type");
    }
    let Some(assertion) = form.get("assertion") else {
        return oauth_error("no assertion");
    };
    let parts: Vec<&str> = assertion.split('.').collect();
    let [header, claims, signature] = parts[..] else {
        return oauth_error("malformed JWT");
    };
    let (Some(header_json), Some(claims_json), Some(signature)) =
        (b64url(header), b64url(claims), b64url(signature))
    else {
        return oauth_error("malformed JWT encoding");
    };
    let signed = format!("{header}.{claims}");
    let key = UnparsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, &inner.account_public);
    if key.verify(signed.as_bytes(), &signature).is_err() {
        return oauth_error("Invalid JWT Signature.");
    }
    let (Ok(header), Ok(claims)) = (
        serde_json::from_slice::<serde_json::Value>(&header_json),
        serde_json::from_slice::<serde_json::Value>(&claims_json),
    ) else {
        return oauth_error("JWT is not JSON");
    };
    let token_uri = inner
        .token_uri
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let now = chrono::Utc::now().timestamp();
    if header["alg"] != "RS256"
        || claims["iss"] != CLIENT_EMAIL
        || claims["aud"] != token_uri.as_str()
        || !claims["scope"]
            .as_str()
            .is_some_and(|s| s.split(' ').any(|s| s == SCOPE))
        || claims["exp"].as_i64().is_none_or(|exp| exp < now)
        || claims["iat"].as_i64().is_none_or(|iat| iat > now + 300)
    {
        return oauth_error("JWT claims rejected");
    }
    let access = alloy::hex::encode(rand::random::<[u8; 32]>());
    inner
        .tokens
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(access.clone());
    Json(json!({ "access_token": access, "expires_in": 3599, "token_type": "Bearer" }))
        .into_response()
}

fn api_error(status: StatusCode, message: &str) -> Response {
    (
        status,
        Json(json!({ "error": { "code": status.as_u16(), "message": message } })),
    )
        .into_response()
}

fn authorised(inner: &Inner, headers: &HeaderMap) -> bool {
    let bearer = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    bearer.is_some_and(|t| {
        inner
            .tokens
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(t)
    })
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
