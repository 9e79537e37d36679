//! The cloud KMS backends against local services: AWS KMS against moto's server (pinned, with
//! the DIGEST patch), GCP Cloud KMS and Aliyun KMS against stand-ins that check the request
//! authentication (service-account JWT + bearer token; ACS3-HMAC-SHA256) and return real DER
//! secp256k1 signatures, high-s about half the time. Also the per-call timeout, the bounded
//! retry of transient failures only, and the key's health.

use std::time::{Duration, Instant};

use alloy::primitives::keccak256;
use dvn::config::{KeyConfig, SigningConfig};
use dvn::signer::KeyHandle;
use dvn_devnet::kms::aliyun::AliyunKmsStandIn;
use dvn_devnet::kms::gcp::GcpKmsStandIn;
use dvn_devnet::kms::moto::MotoServer;
use dvn_devnet::kms::{Health, KmsKey};

/// Signs `n` digests and checks each is low-s and recovers to the key.
async fn signs_and_recovers(handle: &KeyHandle, n: u8) {
    for i in 0..n {
        let digest = keccak256([i, 0xd5]);
        let signature = handle.sign_digest(digest).await.unwrap();
        assert_eq!(signature.normalize_s(), None, "low-s");
        assert_eq!(
            signature.recover_address_from_prehash(&digest).unwrap(),
            handle.address()
        );
    }
}

fn aliyun_config(standin: &AliyunKmsStandIn, prefix: &str) -> KeyConfig {
    std::env::set_var(format!("{prefix}_AK"), &standin.access_key_id);
    std::env::set_var(format!("{prefix}_SECRET"), &standin.access_key_secret);
    KeyConfig::AliyunKms {
        key_id: standin.key_id.clone(),
        key_version_id: standin.key_version_id.clone(),
        region: None,
        endpoint: Some(standin.url.clone()),
        access_key_id_env: format!("{prefix}_AK"),
        access_key_secret_env: format!("{prefix}_SECRET"),
        security_token_env: None,
    }
}

#[tokio::test]
async fn aliyun_kms_signs_through_authenticated_requests() {
    let key = KmsKey::random();
    let standin = AliyunKmsStandIn::start(key.clone()).await.unwrap();
    let handle = load_aliyun(&standin, "ALI", SigningConfig::default()).await;
    assert_eq!(handle.address(), key.address());
    assert_eq!(handle.backend(), "aliyun-kms");
    signs_and_recovers(&handle, 40).await;
    assert_eq!(standin.sign_requests(), 40);
    assert!(handle.health().up());
}

#[tokio::test]
async fn aliyun_kms_refuses_a_wrong_secret_and_the_node_names_it() {
    let standin = AliyunKmsStandIn::start(KmsKey::random()).await.unwrap();
    let mut config = aliyun_config(&standin, "ALI_BAD");
    std::env::set_var("ALI_BAD_SECRET", "not-the-secret");
    let err = KeyHandle::load(&config, "signer", &SigningConfig::default())
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("refused the credentials"), "{err}");
    assert!(err.contains("IncompleteSignature"), "{err}");
    assert!(!err.contains("not-the-secret"), "secret leaked: {err}");

    if let KeyConfig::AliyunKms { key_id, .. } = &mut config {
        *key_id = "key-that-does-not-exist".into();
    }
    std::env::set_var("ALI_BAD_SECRET", &standin.access_key_secret);
    let err = KeyHandle::load(&config, "signer", &SigningConfig::default())
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("key-that-does-not-exist"), "{err}");
}

#[tokio::test]
async fn gcp_kms_signs_with_a_service_account_token() {
    let key = KmsKey::random();
    let standin = GcpKmsStandIn::start(key.clone()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = KeyConfig::GcpKms {
        key_version: standin.key_version().into(),
        credentials_file: Some(standin.write_credentials(dir.path()).unwrap()),
        endpoint: Some(standin.url.clone()),
    };
    let handle = KeyHandle::load(&config, "signer", &SigningConfig::default())
        .await
        .unwrap();
    assert_eq!(handle.address(), key.address());
    assert_eq!(handle.backend(), "gcp-kms");
    signs_and_recovers(&handle, 40).await;
    assert_eq!(standin.sign_requests(), 40);
}

#[tokio::test]
async fn gcp_kms_refuses_a_service_account_key_it_did_not_issue() {
    let standin = GcpKmsStandIn::start(KmsKey::random()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = KeyConfig::GcpKms {
        key_version: standin.key_version().into(),
        credentials_file: Some(standin.write_foreign_credentials(dir.path()).unwrap()),
        endpoint: Some(standin.url.clone()),
    };
    let err = KeyHandle::load(&config, "signer", &SigningConfig::default())
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("GCP Cloud KMS"), "{err}");
    assert_eq!(standin.sign_requests(), 0);

    let wrong_version = KeyConfig::GcpKms {
        key_version: standin.key_version().replace("Versions/1", "Versions/9"),
        credentials_file: Some(standin.write_credentials(dir.path()).unwrap()),
        endpoint: Some(standin.url.clone()),
    };
    let err = KeyHandle::load(&wrong_version, "signer", &SigningConfig::default())
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("cryptoKeyVersions/9"), "{err}");
}

fn aws_key(key_id: impl Into<String>, moto: &MotoServer) -> KeyConfig {
    KeyConfig::AwsKms {
        key_id: key_id.into(),
        region: Some("us-east-1".into()),
        endpoint: Some(moto.url.clone()),
    }
}

/// The node-side loader reads the standard AWS environment.
fn aws_env() {
    std::env::set_var("AWS_ACCESS_KEY_ID", "testing");
    std::env::set_var("AWS_SECRET_ACCESS_KEY", "testing");
    std::env::set_var("AWS_REGION", "us-east-1");
}

#[tokio::test]
async fn aws_kms_signs_digests_against_moto() {
    let moto = MotoServer::start().await.unwrap();
    aws_env();
    let kms = moto.kms_client().await;
    let key_id = moto
        .create_signing_key(aws_sdk_kms::types::KeySpec::EccSecgP256K1)
        .await
        .unwrap();
    kms.create_alias()
        .alias_name("alias/dvn-aws-signer")
        .target_key_id(&key_id)
        .send()
        .await
        .unwrap();
    let config = aws_key("alias/dvn-aws-signer", &moto);
    let handle = KeyHandle::load(&config, "signer", &SigningConfig::default())
        .await
        .unwrap();
    assert_eq!(handle.backend(), "aws-kms");
    signs_and_recovers(&handle, 40).await;

    // A key of the wrong spec is refused by name.
    let p256_id = moto
        .create_signing_key(aws_sdk_kms::types::KeySpec::EccNistP256)
        .await
        .unwrap();
    let err = KeyHandle::load(
        &aws_key(p256_id.clone(), &moto),
        "signer",
        &SigningConfig::default(),
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("ECC_SECG_P256K1") && err.contains(&p256_id),
        "{err}"
    );
    // So is a key that does not exist.
    let err = KeyHandle::load(
        &aws_key("alias/nope", &moto),
        "signer",
        &SigningConfig::default(),
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(err.contains("alias/nope"), "{err}");
}

async fn load_aliyun(standin: &AliyunKmsStandIn, prefix: &str, policy: SigningConfig) -> KeyHandle {
    KeyHandle::load(&aliyun_config(standin, prefix), "signer", &policy)
        .await
        .unwrap()
}

fn policy(timeout_ms: u64, attempts: u32) -> SigningConfig {
    SigningConfig {
        timeout_ms,
        attempts,
        probe_interval_secs: 15,
    }
}

#[tokio::test]
async fn an_outage_is_retried_a_bounded_number_of_times_then_reported_and_recovered_from() {
    let standin = AliyunKmsStandIn::start(KmsKey::random()).await.unwrap();
    let handle = load_aliyun(&standin, "ALI_OUT", policy(1_000, 3)).await;
    let digest = keccak256(b"outage");

    standin.health.set(Health::Failing);
    let before = standin.requests();
    let err = handle.sign_digest(digest).await.unwrap_err().to_string();
    assert!(err.contains("503"), "{err}");
    assert_eq!(standin.requests() - before, 3, "three tries, then give up");
    assert!(!handle.health().up());
    assert!(handle.health().last_error().unwrap().contains("503"));

    // A black-holed endpoint: every try ends at the timeout.
    standin.health.set(Health::Stalled);
    let started = Instant::now();
    let err = handle.sign_digest(digest).await.unwrap_err().to_string();
    assert!(err.contains("timed out"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(!handle.health().up());

    standin.health.set(Health::Up);
    assert!(handle.probe(Duration::from_secs(15)).await);
    assert!(handle.health().up());
    handle.sign_digest(digest).await.unwrap();
}

#[tokio::test]
async fn a_refusal_is_not_retried() {
    let standin = AliyunKmsStandIn::start(KmsKey::random()).await.unwrap();
    let handle = load_aliyun(&standin, "ALI_REF", policy(1_000, 3)).await;
    // The RAM permission is revoked while the node runs.
    standin.health.set(Health::Denying);
    let before = standin.requests();
    let err = handle
        .sign_digest(keccak256(b"revoked"))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("Forbidden.RAM"), "{err}");
    assert_eq!(standin.requests() - before, 1, "a refusal is tried once");
    assert!(!handle.health().up());
}
