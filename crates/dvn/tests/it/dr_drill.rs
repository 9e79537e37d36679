//! Issue 12 §1–§2 with object storage, and the manual's monthly disaster-recovery drill
//! (R18) as a test: a running region backs up to S3 (moto), Aliyun OSS (moto, virtual-host
//! style on its own endpoint) and GCS (fake-gcs-server behind the XML adapter); then the
//! region is lost — process killed, database deleted — while the other two keep verifying;
//! damaged, truncated and newer-schema archives in the bucket are refused with nothing
//! changed; the region is restored from `s3://` with the start + `/health` + `/ready` gate and
//! catches up without verifying anything twice. The drill prints its RPO and RTO.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Instant;

use dvn::config::RemoteTarget;
use dvn_devnet::nodes::{DvnNode, NodeOptions, PidFileGuard};
use dvn_devnet::objstore::{GcsServer, S3Server};
use dvn_devnet::{DevnetConfig, Direction};
use serde_json::Value;

use crate::common::{dvn_run, Stand};
use crate::e2e::TIMEOUT;

const S3_BUCKET: &str = "dvn-backups";
const OSS_BUCKET: &str = "dvn-oss";
const GCS_BUCKET: &str = "dvn-gcs";

/// Credentials come from the environment only; moto and the GCS emulator accept these.
const CREDENTIALS: [(&str, &str); 6] = [
    ("AWS_ACCESS_KEY_ID", "testing"),
    ("AWS_SECRET_ACCESS_KEY", "testing"),
    ("OSS_ACCESS_KEY_ID", "testing"),
    ("OSS_ACCESS_KEY_SECRET", "testing"),
    // A static bearer token (the emulator takes any): object_store 0.14.2 ignores
    // `skip_signature` on uploads and would ask the metadata server for a token.
    ("GOOGLE_BEARER_TOKEN", "testing"),
    ("AWS_EC2_METADATA_DISABLED", "true"),
];

fn targets(s3: &S3Server, gcs: &GcsServer) -> Vec<RemoteTarget> {
    vec![
        RemoteTarget {
            url: format!("s3://{S3_BUCKET}/aws"),
            endpoint: Some(s3.moto.url.clone()),
            region: Some("us-east-1".into()),
        },
        RemoteTarget {
            url: format!("oss://{OSS_BUCKET}/daily"),
            // `dvn-oss.localhost` resolves to loopback (libnss-myhostname, scripts/setup.sh).
            endpoint: Some(format!("http://localhost:{}", s3.port())),
            region: Some("cn-hangzhou".into()),
        },
        RemoteTarget {
            url: format!("gs://{GCS_BUCKET}/aws"),
            endpoint: Some(gcs.url.clone()),
            region: None,
        },
    ]
}

fn cli(args: &[&str]) -> (i32, String) {
    dvn_run(args, &CREDENTIALS)
}

/// `dvn args… --json` with the credentials: (exit code, the JSON on stdout, stderr).
fn cli_json(args: &[&str]) -> (i32, Value, String) {
    let out = std::process::Command::new(crate::common::dvn_binary())
        .args(args)
        .arg("--json")
        .envs(CREDENTIALS)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let json = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    (out.status.code().unwrap_or(-1), json, stderr)
}

/// `archive` repacked with its manifest's `schema_version` raised past any this build knows.
fn from_a_newer_schema(archive: &Path, out: &Path) -> PathBuf {
    let file = std::fs::File::open(archive).unwrap();
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(file));
    let path = out.join("dvn-aws-29991231T000000.000Z.tar.gz");
    let gz = flate2::write::GzEncoder::new(
        std::fs::File::create(&path).unwrap(),
        flate2::Compression::default(),
    );
    let mut builder = tar::Builder::new(gz);
    for entry in tar.entries().unwrap() {
        let mut entry = entry.unwrap();
        let name = entry.path().unwrap().to_string_lossy().into_owned();
        let mut bytes = Vec::new();
        entry.read_to_end(&mut bytes).unwrap();
        if name == "manifest.json" {
            let mut manifest: Value = serde_json::from_slice(&bytes).unwrap();
            manifest["schema_version"] = 99_999_999.into();
            bytes = serde_json::to_vec(&manifest).unwrap();
        }
        let mut header = tar::Header::new_gnu();
        header.set_size(bytes.len() as u64);
        header.set_mode(0o600);
        header.set_cksum();
        builder
            .append_data(&mut header, &name, bytes.as_slice())
            .unwrap();
    }
    builder.into_inner().unwrap().finish().unwrap();
    path
}

fn store_files(node: &DvnNode) -> Vec<PathBuf> {
    let config = dvn::config::Config::load(&node.config_path).unwrap();
    let db = dvn::store::sqlite_file(&config.store.url).unwrap();
    ["", "-wal", "-shm"]
        .iter()
        .map(|s| PathBuf::from(format!("{}{s}", db.display())))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_region_is_restored_from_object_storage_and_verifies_nothing_twice() {
    for (key, value) in CREDENTIALS {
        // Edition 2021: set_var is safe; each nextest test is its own process.
        std::env::set_var(key, value);
    }
    let s3 = S3Server::start(&[S3_BUCKET, OSS_BUCKET]).await.unwrap();
    let gcs = GcsServer::start(&[GCS_BUCKET]).await.unwrap();
    let mut stand = Stand::new(DevnetConfig::default(), NodeOptions::default()).await;
    let remotes = targets(&s3, &gcs);
    let local = tempfile::tempdir().unwrap();
    stand.nodes.nodes[0]
        .edit_config(|c| {
            c["backup"] = serde_json::json!({
                "dir": local.path(),
                "remote": serde_json::to_value(&remotes).unwrap(),
                "keep_days": 30,
            });
        })
        .unwrap();
    stand.nodes.start(&[0, 1, 2]).await.unwrap();
    let aws_cfg = stand.nodes.nodes[0]
        .config_path
        .to_str()
        .unwrap()
        .to_string();

    let first = stand
        .devnet
        .send_messages(Direction::AToB, 3)
        .await
        .unwrap();
    stand.deliver(Direction::AToB, &first, TIMEOUT).await;

    // The daily backup of the running node, shipped to the three clouds.
    let (code, shipped, err) = cli_json(&["backup", "-c", &aws_cfg]);
    assert_eq!(code, 0, "{err}");
    let backed_up_at = Instant::now();
    let archive = PathBuf::from(shipped["archive"].as_str().unwrap());
    let name = archive.file_name().unwrap().to_str().unwrap().to_string();
    let uploaded: Vec<&str> = shipped["uploaded"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u.as_str().unwrap())
        .collect();
    assert_eq!(
        uploaded,
        [
            format!("s3://{S3_BUCKET}/aws/{name}"),
            format!("oss://{OSS_BUCKET}/daily/{name}"),
            format!("gs://{GCS_BUCKET}/aws/{name}"),
        ]
    );
    assert_eq!(s3.keys(S3_BUCKET).await.unwrap(), [format!("aws/{name}")]);
    assert_eq!(
        s3.keys(OSS_BUCKET).await.unwrap(),
        [format!("daily/{name}")]
    );
    assert_eq!(gcs.keys(GCS_BUCKET).await.unwrap(), [format!("aws/{name}")]);
    assert!(shipped["manifest"]["schema_version"].as_i64().unwrap() >= 1);

    // Create-only in every service: the same archive is never written over.
    for target in &remotes {
        let again = dvn::backup::remote::upload(target, &archive).await;
        let why = format!(
            "{:#}",
            again.expect_err("an existing backup was overwritten")
        );
        assert!(why.contains("never overwritten"), "{}: {why}", target.url);
    }

    // The chains and the peers move on after the backup.
    let second = stand
        .devnet
        .send_messages(Direction::AToB, 3)
        .await
        .unwrap();
    stand.deliver(Direction::AToB, &second, TIMEOUT).await;

    // Disaster: the region's process and its database are gone.
    let disaster = Instant::now();
    let rpo = disaster.duration_since(backed_up_at);
    stand.nodes.nodes[0].kill();
    for file in store_files(&stand.nodes.nodes[0]) {
        let _ = std::fs::remove_file(file);
    }
    // The other two keep verifying meanwhile.
    let during = stand
        .devnet
        .send_messages(Direction::AToB, 2)
        .await
        .unwrap();
    stand.deliver(Direction::AToB, &during, TIMEOUT).await;

    // Bad archives in the bucket are refused, naming why, and nothing is written.
    let scratch = tempfile::tempdir().unwrap();
    let bytes = std::fs::read(&archive).unwrap();
    let s3_target = &remotes[0];
    let put = |file: &str, bytes: Vec<u8>| {
        let path = scratch.path().join(file);
        std::fs::write(&path, bytes).unwrap();
        path
    };
    let mut corrupt = bytes.clone();
    let middle = corrupt.len() / 2;
    corrupt[middle] ^= 0xff;
    let cut = bytes[..bytes.len() * 2 / 3].to_vec();
    let newer = from_a_newer_schema(&archive, scratch.path());
    for (file, why) in [
        (put("dvn-aws-corrupt.tar.gz", corrupt), "damaged"),
        (put("dvn-aws-cut.tar.gz", cut), "damaged"),
        (newer, "schema"),
    ] {
        let object = dvn::backup::remote::upload(s3_target, &file).await.unwrap();
        let (code, text) = cli(&["restore", &object, "-c", &aws_cfg]);
        assert_ne!(code, 0, "{object} was restored");
        assert!(
            text.contains(why) || text.contains("checksum"),
            "{object}: {text}"
        );
        assert!(
            store_files(&stand.nodes.nodes[0])
                .iter()
                .all(|f| !f.exists()),
            "a refused restore wrote the store"
        );
    }

    // The other clouds hold a good copy too (the newest of this node below each prefix).
    for prefix in [
        format!("oss://{OSS_BUCKET}/daily"),
        format!("gs://{GCS_BUCKET}/aws"),
    ] {
        let (code, done, err) = cli_json(&["restore", &prefix, "-c", &aws_cfg, "--dry-run"]);
        assert_eq!(code, 0, "{prefix}: {err}");
        assert_eq!(done["archive"], format!("{prefix}/{name}"));
    }

    // Restore from S3 (the object, not the prefix: the newer-schema archive is newest there),
    // started the way the service manager would, gated on /health and /ready.
    let pidfile = scratch.path().join("aws.pid");
    let guard = PidFileGuard(pidfile.clone());
    let start = stand.nodes.nodes[0].detached_start_command(crate::common::dvn_binary(), &pidfile);
    let object = format!("s3://{S3_BUCKET}/aws/{name}");
    let restore_began = Instant::now();
    let (code, done, err) = cli_json(&[
        "restore",
        &object,
        "-c",
        &aws_cfg,
        "--start",
        &start,
        "--ready-timeout-secs",
        "120",
    ]);
    assert_eq!(code, 0, "{done} {err}");
    let restored_at = Instant::now();
    assert_eq!(done["started"], true, "{done}");
    assert!(guard.pid().is_some(), "the restored node runs");

    // Back in service: it catches up (re-checking against the chains) and signs new traffic.
    // With gcp stopped the quorum needs the restored region's signature: new traffic cannot
    // be verified by the other two before it signs.
    stand.nodes.nodes[2].kill();
    let after = stand
        .devnet
        .send_messages(Direction::AToB, 2)
        .await
        .unwrap();
    stand.deliver(Direction::AToB, &after, TIMEOUT).await;
    // The restored region signed the new traffic: its own count (from zero at this start).
    assert!(
        crate::common::metric_reaches(&stand.nodes.nodes[0], "dvn_packets_signed_total", 1.0).await,
        "the restored node signs"
    );
    let rederived = second.len() + during.len();
    let all: Vec<_> = first
        .into_iter()
        .chain(second)
        .chain(during)
        .chain(after)
        .collect();
    stand.assert_invariants(Direction::AToB, &all).await;
    let rto = restored_at.duration_since(restore_began);
    println!(
        "DR drill: RPO {:.1} s (age of the newest backup at the loss; no verification was lost: \
         the chains are the record, and the restored node re-derived the {} packets after it), \
         RTO {:.1} s (dvn restore from s3:// to ready, of which {:.1} s start to ready); \
         {:.1} s from the loss to the restore command in this drill",
        rpo.as_secs_f64(),
        rederived,
        rto.as_secs_f64(),
        done["ready_after_secs"].as_f64().unwrap_or(0.0),
        restore_began.duration_since(disaster).as_secs_f64()
    );
    drop(guard);
}
