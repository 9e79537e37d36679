//! An Aliyun KMS stand-in: the OpenAPI RPC style (`POST /?<params>` with `x-acs-action`), the
//! two calls a DVN key needs (`GetPublicKey`, `AsymmetricSign`), and the request checks the real
//! gateway makes: `ACS3-HMAC-SHA256` signature over the canonical request, required signed
//! headers, body hash, clock skew and nonce reuse. The signature check is written here from
//! Aliyun's documentation, independently of the node's signer (which is itself checked against
//! requests captured from the official Python SDK).

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine;
use hmac::{Hmac, Mac};
use serde_json::json;
use sha2::{Digest, Sha256};

use super::{HealthSwitch, KmsKey};

/// Headers a request must sign.
const REQUIRED_SIGNED: [&str; 6] = [
    "host",
    "x-acs-action",
    "x-acs-content-sha256",
    "x-acs-date",
    "x-acs-signature-nonce",
    "x-acs-version",
];

#[derive(Debug)]
struct Inner {
    key: KmsKey,
    key_id: String,
    key_version_id: String,
    access_key_id: String,
    access_key_secret: String,
    nonces: Mutex<HashSet<String>>,
    sign_requests: AtomicUsize,
    requests: AtomicUsize,
    health: HealthSwitch,
}

/// A running stand-in; dropping it stops it.
#[derive(Debug)]
pub struct AliyunKmsStandIn {
    pub url: String,
    pub key_id: String,
    pub key_version_id: String,
    pub access_key_id: String,
    pub access_key_secret: String,
    pub health: HealthSwitch,
    inner: Arc<Inner>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for AliyunKmsStandIn {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl AliyunKmsStandIn {
    pub async fn start(key: KmsKey) -> std::io::Result<Self> {
        let inner = Arc::new(Inner {
            key,
            key_id: "key-dvn-aliyun-0001".into(),
            key_version_id: "ver-0001".into(),
            access_key_id: "LTAI5tStandInAccessKey".into(),
            access_key_secret: "StandInSecret-0123456789abcdef".into(),
            nonces: Mutex::default(),
            sign_requests: AtomicUsize::new(0),
            requests: AtomicUsize::new(0),
            health: HealthSwitch::default(),
        });
        let app = axum::Router::new()
            .route("/", axum::routing::post(handle))
            .with_state(Arc::clone(&inner));
        let (url, task) = super::serve(app).await?;
        Ok(Self {
            url,
            key_id: inner.key_id.clone(),
            key_version_id: inner.key_version_id.clone(),
            access_key_id: inner.access_key_id.clone(),
            access_key_secret: inner.access_key_secret.clone(),
            health: inner.health.clone(),
            inner,
            task,
        })
    }

    pub fn address(&self) -> alloy::primitives::Address {
        self.inner.key.address()
    }

    /// Every request received, refused ones included.
    pub fn requests(&self) -> usize {
        self.inner.requests.load(Ordering::SeqCst)
    }

    /// `AsymmetricSign` requests that passed authentication.
    pub fn sign_requests(&self) -> usize {
        self.inner.sign_requests.load(Ordering::SeqCst)
    }
}

fn error(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        Json(json!({ "RequestId": "stand-in", "Code": code, "Message": message })),
    )
        .into_response()
}

fn refuse(status: StatusCode, code: &str, message: &str) -> Box<Response> {
    Box::new(error(status, code, message))
}

fn percent_decode(value: &str) -> Option<String> {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

fn aliyun_encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Checks the request's authentication; returns its decoded parameters.
fn authenticate(
    inner: &Inner,
    headers: &HeaderMap,
    query: &str,
    body: &[u8],
) -> Result<Vec<(String, String)>, Box<Response>> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let authorization = header("authorization").ok_or_else(|| {
        refuse(
            StatusCode::BAD_REQUEST,
            "MissingAuthorization",
            "no Authorization",
        )
    })?;
    let rest = authorization
        .strip_prefix("ACS3-HMAC-SHA256 ")
        .ok_or_else(|| refuse(StatusCode::BAD_REQUEST, "IncompleteSignature", "algorithm"))?;
    let mut credential = None;
    let mut signed = None;
    let mut signature = None;
    for part in rest.split(',') {
        match part.trim().split_once('=') {
            Some(("Credential", v)) => credential = Some(v),
            Some(("SignedHeaders", v)) => signed = Some(v),
            Some(("Signature", v)) => signature = Some(v),
            _ => {}
        }
    }
    let (Some(credential), Some(signed), Some(signature)) = (credential, signed, signature) else {
        return Err(refuse(
            StatusCode::BAD_REQUEST,
            "IncompleteSignature",
            "fields",
        ));
    };
    if credential != inner.access_key_id {
        return Err(refuse(
            StatusCode::NOT_FOUND,
            "InvalidAccessKeyId.NotFound",
            "Specified access key is not found.",
        ));
    }
    let signed_names: Vec<&str> = signed.split(';').collect();
    if REQUIRED_SIGNED.iter().any(|r| !signed_names.contains(r)) {
        return Err(refuse(
            StatusCode::BAD_REQUEST,
            "IncompleteSignature",
            "headers",
        ));
    }
    let body_hash = alloy::hex::encode(Sha256::digest(body));
    if header("x-acs-content-sha256") != Some(body_hash.as_str()) {
        return Err(refuse(
            StatusCode::BAD_REQUEST,
            "IncompleteSignature",
            "body hash",
        ));
    }
    let date = header("x-acs-date")
        .and_then(|d| chrono::DateTime::parse_from_rfc3339(d).ok())
        .ok_or_else(|| refuse(StatusCode::BAD_REQUEST, "InvalidTimeStamp.Format", "date"))?;
    if (chrono::Utc::now() - date.with_timezone(&chrono::Utc))
        .num_seconds()
        .abs()
        > 900
    {
        return Err(refuse(
            StatusCode::BAD_REQUEST,
            "InvalidTimeStamp.Expired",
            "date",
        ));
    }

    let mut params = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let (Some(k), Some(v)) = (percent_decode(k), percent_decode(v)) else {
            return Err(refuse(StatusCode::BAD_REQUEST, "InvalidParameter", "query"));
        };
        params.push((k, v));
    }
    let mut encoded: Vec<String> = params
        .iter()
        .map(|(k, v)| format!("{}={}", aliyun_encode(k), aliyun_encode(v)))
        .collect();
    encoded.sort();
    let mut canonical_headers = String::new();
    for name in &signed_names {
        let value = header(name).unwrap_or_default().trim();
        canonical_headers.push_str(&format!("{name}:{value}\n"));
    }
    let canonical = [
        "POST",
        "/",
        &encoded.join("&"),
        &canonical_headers,
        signed,
        &body_hash,
    ]
    .join("\n");
    let to_sign = format!(
        "ACS3-HMAC-SHA256\n{}",
        alloy::hex::encode(Sha256::digest(canonical.as_bytes()))
    );
    let mut mac = Hmac::<Sha256>::new_from_slice(inner.access_key_secret.as_bytes())
        .map_err(|_| refuse(StatusCode::INTERNAL_SERVER_ERROR, "InternalError", "hmac"))?;
    mac.update(to_sign.as_bytes());
    let expected = alloy::hex::encode(mac.finalize().into_bytes());
    if expected != signature {
        return Err(refuse(
            StatusCode::BAD_REQUEST,
            "IncompleteSignature",
            "The request signature does not conform to Aliyun standards.",
        ));
    }
    let nonce = header("x-acs-signature-nonce")
        .unwrap_or_default()
        .to_string();
    let fresh = inner
        .nonces
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(nonce);
    if !fresh {
        return Err(refuse(
            StatusCode::BAD_REQUEST,
            "SignatureNonceUsed",
            "nonce reused",
        ));
    }
    Ok(params)
}

async fn handle(
    State(inner): State<Arc<Inner>>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    inner.requests.fetch_add(1, Ordering::SeqCst);
    if let Some(response) = inner.health.intercept().await {
        return response;
    }
    let params = match authenticate(&inner, &headers, query.as_deref().unwrap_or(""), &body) {
        Ok(params) => params,
        Err(response) => return *response,
    };
    let param = |name: &str| {
        params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    if param("KeyId") != Some(inner.key_id.as_str())
        || param("KeyVersionId") != Some(inner.key_version_id.as_str())
    {
        return error(
            StatusCode::NOT_FOUND,
            "Forbidden.KeyNotFound",
            "no such key",
        );
    }
    let action = headers.get("x-acs-action").and_then(|v| v.to_str().ok());
    match action {
        Some("GetPublicKey") => Json(json!({
            "RequestId": "stand-in",
            "KeyId": inner.key_id,
            "KeyVersionId": inner.key_version_id,
            "PublicKey": inner.key.public_pem(),
        }))
        .into_response(),
        Some("AsymmetricSign") => {
            if param("Algorithm") != Some("ECDSA_SHA_256") {
                return error(StatusCode::BAD_REQUEST, "InvalidParameter.Algorithm", "alg");
            }
            let Some(digest) = param("Digest").and_then(super::digest_from_base64) else {
                return error(StatusCode::BAD_REQUEST, "InvalidParameter.Digest", "digest");
            };
            let Some(der) = inner.key.sign_der(digest.as_slice()) else {
                return error(StatusCode::INTERNAL_SERVER_ERROR, "InternalError", "sign");
            };
            inner.sign_requests.fetch_add(1, Ordering::SeqCst);
            Json(json!({
                "RequestId": "stand-in",
                "KeyId": inner.key_id,
                "KeyVersionId": inner.key_version_id,
                "Value": base64::engine::general_purpose::STANDARD.encode(der),
            }))
            .into_response()
        }
        _ => error(StatusCode::BAD_REQUEST, "InvalidAction.NotFound", "action"),
    }
}
