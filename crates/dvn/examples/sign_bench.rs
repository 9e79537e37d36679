//! Signing latency per key backend, through the node's own key interface
//! ([`KeyHandle::sign_digest`]: the per-call timeout, the retry policy, the DER / `r‖s` →
//! low-s → recovery-id conversion and the check that each signature recovers to the key).
//!
//! Backends, each on this machine (127.0.0.1 only): an Ethereum keystore (in process), a
//! SoftHSM2 token (PKCS#11, a key generated inside the token), AWS KMS on moto's server, GCP
//! Cloud KMS and Aliyun KMS on this project's stand-ins (`dvn_devnet::kms`). The figures are
//! the node's share of a signature plus the local service's; a cloud HSM/KMS adds its network
//! round trip and its own queueing on top, which no local run can show.
//!
//! `cargo run --release -p dvn --example sign_bench -- --count 200 [--concurrency 16]
//! [--backends keystore,pkcs11,aws-kms,gcp-kms,aliyun-kms] [--json]` (after
//! `scripts/setup.sh`: SoftHSM2 and moto come from it). Prints figures; asserts nothing.

use std::time::{Duration, Instant};

use alloy::primitives::{keccak256, B256};
use clap::Parser;
use dvn::config::{KeyConfig, SigningConfig};
use dvn::pipeline::sign::SIGN_CONCURRENCY;
use dvn::signer::pkcs11::Pkcs11Signer;
use dvn::signer::KeyHandle;
use dvn_devnet::kms::aliyun::AliyunKmsStandIn;
use dvn_devnet::kms::gcp::GcpKmsStandIn;
use dvn_devnet::kms::moto::MotoServer;
use dvn_devnet::kms::KmsKey;
use dvn_devnet::softhsm::SoftHsm;
use futures::StreamExt;

#[derive(Parser)]
struct Args {
    /// Signatures per backend and mode.
    #[arg(long, default_value_t = 200)]
    count: usize,
    /// Signatures in flight at once in the concurrent mode (the sign stage's own limit by
    /// default).
    #[arg(long, default_value_t = SIGN_CONCURRENCY)]
    concurrency: usize,
    /// Backends to measure, comma-separated.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "keystore,pkcs11,aws-kms,gcp-kms,aliyun-kms"
    )]
    backends: Vec<String>,
    /// One JSON object per backend instead of the table.
    #[arg(long)]
    json: bool,
}

/// Latencies of one mode, in milliseconds.
#[derive(serde::Serialize)]
struct Latencies {
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    signatures_per_sec: f64,
}

impl Latencies {
    fn of(mut samples: Vec<Duration>, wall: Duration) -> Self {
        samples.sort();
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        let at = |q: f64| {
            let index = ((samples.len() as f64 * q).ceil() as usize).clamp(1, samples.len()) - 1;
            ms(samples[index])
        };
        Self {
            p50_ms: at(0.50),
            p99_ms: at(0.99),
            max_ms: samples.last().copied().map(ms).unwrap_or_default(),
            signatures_per_sec: samples.len() as f64 / wall.as_secs_f64(),
        }
    }
}

#[derive(serde::Serialize)]
struct Figures {
    backend: String,
    service: &'static str,
    one_at_a_time: Latencies,
    concurrent: Latencies,
    concurrency: usize,
}

/// The service a backend's key lives in, kept alive (dropped: stopped) while it is measured.
type Service = Box<dyn std::any::Any>;

/// Sets up `backend`'s key on its local service; returns the config the node would load.
async fn provision(
    backend: &str,
    dir: &std::path::Path,
) -> anyhow::Result<(KeyConfig, Service, &'static str)> {
    Ok(match backend {
        "keystore" => {
            std::env::set_var("SIGN_BENCH_KEYSTORE_PASSWORD", "sign-bench-password");
            alloy::signers::local::PrivateKeySigner::new_keystore(
                dir,
                &mut rand::thread_rng(),
                "sign-bench-password",
                Some("signer.json"),
            )?;
            (
                KeyConfig::Keystore {
                    path: dir.join("signer.json"),
                    password_env: Some("SIGN_BENCH_KEYSTORE_PASSWORD".into()),
                    password_file: None,
                },
                Box::new(()),
                "in process",
            )
        }
        "pkcs11" => {
            let hsm = SoftHsm::create()?;
            Pkcs11Signer::generate(
                SoftHsm::module(),
                dvn_devnet::softhsm::TOKEN,
                "bench-signer",
                dvn_devnet::softhsm::PIN,
            )?;
            std::env::set_var("SIGN_BENCH_HSM_PIN", dvn_devnet::softhsm::PIN);
            (
                KeyConfig::Pkcs11 {
                    module: SoftHsm::module().into(),
                    token_label: dvn_devnet::softhsm::TOKEN.into(),
                    key_label: "bench-signer".into(),
                    pin_env: Some("SIGN_BENCH_HSM_PIN".into()),
                    pin_file: None,
                },
                Box::new(hsm),
                "SoftHSM2 (Debian)",
            )
        }
        "aws-kms" => {
            let moto = MotoServer::start().await?;
            std::env::set_var("AWS_ACCESS_KEY_ID", "testing");
            std::env::set_var("AWS_SECRET_ACCESS_KEY", "testing");
            std::env::set_var("AWS_REGION", "us-east-1");
            let key_id = moto
                .create_signing_key(aws_sdk_kms::types::KeySpec::EccSecgP256K1)
                .await?;
            (
                KeyConfig::AwsKms {
                    key_id,
                    region: Some("us-east-1".into()),
                    endpoint: Some(moto.url.clone()),
                },
                Box::new(moto),
                "moto server (PyPI)",
            )
        }
        "gcp-kms" => {
            let standin = GcpKmsStandIn::start(KmsKey::random()).await?;
            let creds = tempfile::tempdir()?;
            let config = KeyConfig::GcpKms {
                key_version: standin.key_version().into(),
                credentials_file: Some(standin.write_credentials(creds.path())?),
                endpoint: Some(standin.url.clone()),
            };
            (
                config,
                Box::new((standin, creds)),
                "stand-in (this project)",
            )
        }
        "aliyun-kms" => {
            let standin = AliyunKmsStandIn::start(KmsKey::random()).await?;
            std::env::set_var("SIGN_BENCH_ALIYUN_AK", &standin.access_key_id);
            std::env::set_var("SIGN_BENCH_ALIYUN_SECRET", &standin.access_key_secret);
            let config = KeyConfig::AliyunKms {
                key_id: standin.key_id.clone(),
                key_version_id: standin.key_version_id.clone(),
                region: None,
                endpoint: Some(standin.url.clone()),
                access_key_id_env: "SIGN_BENCH_ALIYUN_AK".into(),
                access_key_secret_env: "SIGN_BENCH_ALIYUN_SECRET".into(),
                security_token_env: None,
            };
            (config, Box::new(standin), "stand-in (this project)")
        }
        other => anyhow::bail!(
            "unknown backend {other} (keystore, pkcs11, aws-kms, gcp-kms, aliyun-kms)"
        ),
    })
}

/// Signs `count` distinct digests with at most `in_flight` at once; each signature's latency.
async fn sign_many(
    key: &KeyHandle,
    count: usize,
    in_flight: usize,
    salt: u8,
) -> anyhow::Result<(Vec<Duration>, Duration)> {
    let started = Instant::now();
    let samples: Vec<anyhow::Result<Duration>> = futures::stream::iter(0..count)
        .map(|i| async move {
            let digest: B256 = keccak256([&(i as u64).to_be_bytes()[..], &[salt]].concat());
            let t = Instant::now();
            key.sign_digest(digest).await?;
            Ok(t.elapsed())
        })
        .buffer_unordered(in_flight.max(1))
        .collect()
        .await;
    let wall = started.elapsed();
    Ok((samples.into_iter().collect::<anyhow::Result<_>>()?, wall))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(args.count > 0, "--count must be at least 1");
    let dir = tempfile::tempdir()?;
    let mut all = Vec::new();
    for backend in &args.backends {
        let (config, _service, label) = provision(backend, dir.path()).await?;
        let key = KeyHandle::load(&config, "signer", &SigningConfig::default()).await?;
        // The first call opens sessions and fetches tokens: not part of the steady figure.
        key.sign_digest(keccak256(b"warm-up")).await?;
        let (one, one_wall) = sign_many(&key, args.count, 1, 1).await?;
        let (many, many_wall) = sign_many(&key, args.count, args.concurrency, 2).await?;
        all.push(Figures {
            backend: backend.clone(),
            service: label,
            one_at_a_time: Latencies::of(one, one_wall),
            concurrent: Latencies::of(many, many_wall),
            concurrency: args.concurrency,
        });
    }
    if args.json {
        for figures in &all {
            println!("{}", serde_json::to_string(figures)?);
        }
        return Ok(());
    }
    println!(
        "{} signatures per backend and mode · release: {} · cores: {} · through KeyHandle::sign_digest",
        args.count,
        !cfg!(debug_assertions),
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!(
        "| backend | service | one at a time p50 | p99 | max | {} at a time p50 | p99 | max | signatures/s |",
        args.concurrency
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for f in &all {
        println!(
            "| {} | {} | {:.2} ms | {:.2} ms | {:.2} ms | {:.2} ms | {:.2} ms | {:.2} ms | {:.0} |",
            f.backend,
            f.service,
            f.one_at_a_time.p50_ms,
            f.one_at_a_time.p99_ms,
            f.one_at_a_time.max_ms,
            f.concurrent.p50_ms,
            f.concurrent.p99_ms,
            f.concurrent.max_ms,
            f.concurrent.signatures_per_sec
        );
    }
    Ok(())
}
