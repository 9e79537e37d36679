//! `dvn backup` and `dvn restore`: one `.tar.gz` holding a consistent snapshot of the store,
//! the configuration file and (optionally) recent logs, with a manifest that names the node,
//! the store kind and the SHA-256 of every part.
//!
//! - The store snapshot is taken while the node runs: SQLite through `VACUUM INTO` (a
//!   transactionally consistent copy, never a file copy of a live database), PostgreSQL through
//!   `pg_dump --format=custom` (one snapshot transaction).
//! - A configuration file holding a secret (a password, PIN or key, a store URL with a
//!   password) is refused: secrets belong in the environment or secret files, never in backups.
//! - Restore verifies the archive completely before changing anything: a corrupt, truncated or
//!   foreign (another node's) backup is refused with the reason. It requires the node stopped
//!   (its `/health` must not answer), keeps what it replaces beside it, and leaves starting the
//!   node to the service manager; a restored node is behind the chains and its peers, and the
//!   pipeline re-checks every unfinished packet against the chains before acting on it.
//!   With `--start`, restore runs the service manager's start command itself and gates on
//!   `/health` and `/ready`, failing loudly when the node does not come back.
//! - Archives go to object storage too (`remote`): S3, Aliyun OSS and GCS, create-only, with
//!   the same retention as the local directory.

pub mod remote;

use std::io::Read;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::config::Config;
use crate::store::Store;

/// The manifest's format version.
pub const FORMAT: u32 = 1;

/// What a backup holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    pub dvn_version: String,
    pub node: String,
    pub created_at: String,
    /// `sqlite` or `postgres`.
    pub store_kind: String,
    /// The newest store migration applied when the backup was taken: a build that does not
    /// know it refuses the restore instead of running on a schema it cannot read.
    #[serde(default)]
    pub schema_version: i64,
    pub parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Part {
    /// Path inside the archive.
    pub path: String,
    pub sha256: String,
    pub bytes: u64,
}

/// Why a backup was refused.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("the configuration holds a secret ({0}): keep secrets in the environment or secret files, never in a backup")]
    SecretInConfig(String),
    #[error("{0} exists: backups are never overwritten")]
    Exists(PathBuf),
    #[error("not a dvn backup, or damaged: {0}")]
    Unreadable(String),
    #[error("part {0} does not match its checksum (corrupt backup)")]
    Checksum(String),
    #[error("part {0} listed in the manifest is missing (truncated backup)")]
    Missing(String),
    #[error(
        "backup of node {backup}, this configuration is node {ours}: refusing a foreign backup"
    )]
    Foreign { backup: String, ours: String },
    #[error("backup format {0} is not supported (this dvn reads format {FORMAT})")]
    Format(u32),
    #[error("backup of a {backup} store, this node uses {ours}")]
    StoreKind { backup: String, ours: String },
    #[error("the node answers at {0}: stop it before restoring")]
    Running(String),
    #[error("backup of store schema {backup}, this dvn knows schema {ours} at most: restore it with the dvn version that made it (dvn {version})")]
    NewerSchema {
        backup: i64,
        ours: i64,
        version: String,
    },
}

fn sha256_hex(bytes: &[u8]) -> String {
    alloy::primitives::hex::encode(Sha256::digest(bytes))
}

fn store_kind(url: &str) -> &'static str {
    match crate::store::sqlite_file(url) {
        Some(_) => "sqlite",
        None => "postgres",
    }
}

/// Refuses a configuration text that carries a secret.
pub fn check_no_secrets(text: &str) -> Result<(), BackupError> {
    let value: serde_json::Value = serde_norway::from_str(text)
        .map_err(|e| BackupError::Unreadable(format!("configuration: {e}")))?;
    fn walk(path: &str, v: &serde_json::Value) -> Option<String> {
        match v {
            serde_json::Value::Object(map) => map.iter().find_map(|(k, v)| {
                let lower = k.to_ascii_lowercase();
                let named = ["password", "pin", "secret", "private_key", "token"]
                    .iter()
                    .any(|s| lower == *s || lower.ends_with(&format!("_{s}")));
                if named && !v.is_null() {
                    return Some(format!("{path}.{k}"));
                }
                walk(&format!("{path}.{k}"), v)
            }),
            serde_json::Value::Array(items) => items
                .iter()
                .enumerate()
                .find_map(|(i, v)| walk(&format!("{path}[{i}]"), v)),
            serde_json::Value::String(s) => {
                let redacted = crate::admin::redact::params(v);
                (redacted != serde_json::Value::String(s.clone())).then(|| path.to_string())
            }
            _ => None,
        }
    }
    match walk("", &value) {
        Some(at) => Err(BackupError::SecretInConfig(
            at.trim_start_matches('.').to_string(),
        )),
        None => Ok(()),
    }
}

/// Makes a backup of the node configured by `config_path` into `out_dir`; the archive's path
/// and its manifest. `logs`: a directory whose files changed in the last `log_days` days go in.
pub async fn create(
    config_path: &Path,
    out_dir: &Path,
    logs: Option<&Path>,
    log_days: u64,
) -> anyhow::Result<(PathBuf, Manifest)> {
    let config_text = std::fs::read_to_string(config_path)?;
    check_no_secrets(&config_text)?;
    let config = Config::load(config_path)?;
    let kind = store_kind(&config.store.url);
    let work = tempfile::tempdir()?;
    let mut files: Vec<(String, PathBuf)> = Vec::new();

    let snapshot = work.path().join(format!("store.{kind}"));
    let store = Store::connect(&config.store.url).await?;
    let schema_version = store.schema_version().await?;
    match kind {
        "sqlite" => {
            store.snapshot_sqlite(&snapshot).await?;
        }
        _ => {
            let out = tokio::process::Command::new("pg_dump")
                .args(["--format=custom", "--no-owner", "--file"])
                .arg(&snapshot)
                .arg(&config.store.url)
                .output()
                .await
                .map_err(|e| anyhow::anyhow!("pg_dump: {e}"))?;
            anyhow::ensure!(
                out.status.success(),
                "pg_dump failed: {}",
                crate::chain::redact(&String::from_utf8_lossy(&out.stderr))
            );
        }
    }
    files.push((format!("store/store.{kind}"), snapshot));
    files.push(("config/config.yaml".into(), config_path.to_path_buf()));
    if let Some(dir) = logs {
        let cutoff = std::time::SystemTime::now()
            - std::time::Duration::from_secs(log_days.saturating_mul(86_400));
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            let meta = entry.metadata()?;
            if meta.is_file() && meta.modified()? >= cutoff {
                let name = entry.file_name().to_string_lossy().into_owned();
                files.push((format!("logs/{name}"), entry.path()));
            }
        }
    }

    let mut parts = Vec::new();
    for (path, file) in &files {
        let bytes = std::fs::read(file)?;
        parts.push(Part {
            path: path.clone(),
            sha256: sha256_hex(&bytes),
            bytes: bytes.len() as u64,
        });
    }
    let now = chrono::Utc::now();
    let manifest = Manifest {
        format: FORMAT,
        dvn_version: env!("CARGO_PKG_VERSION").into(),
        node: config.node.name.clone(),
        created_at: now.to_rfc3339(),
        store_kind: kind.into(),
        schema_version,
        parts,
    };
    std::fs::create_dir_all(out_dir)?;
    let name = format!(
        "dvn-{}-{}.tar.gz",
        config.node.name,
        now.format("%Y%m%dT%H%M%S%.3fZ")
    );
    let archive = out_dir.join(name);
    // Create-only: an existing backup is never replaced.
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&archive)
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::AlreadyExists => {
                anyhow::Error::new(BackupError::Exists(archive.clone()))
            }
            _ => e.into(),
        })?;
    let gz = flate2::write::GzEncoder::new(file, flate2::Compression::default());
    let mut tar = tar::Builder::new(gz);
    let manifest_json = serde_json::to_vec_pretty(&manifest)?;
    let mut header = tar::Header::new_gnu();
    header.set_size(manifest_json.len() as u64);
    header.set_mode(0o600);
    header.set_cksum();
    tar.append_data(&mut header, "manifest.json", manifest_json.as_slice())?;
    for (path, file) in &files {
        tar.append_path_with_name(file, path)?;
    }
    let gz = tar.into_inner()?;
    let file = gz.finish()?;
    file.sync_all()?;
    Ok((archive, manifest))
}

/// Deletes this node's backups in `dir` older than `days`; how many.
pub fn prune(dir: &Path, node: &str, days: u64) -> anyhow::Result<usize> {
    let cutoff =
        std::time::SystemTime::now() - std::time::Duration::from_secs(days.saturating_mul(86_400));
    let prefix = format!("dvn-{node}-");
    let mut removed = 0;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with(&prefix)
            && name.ends_with(".tar.gz")
            && entry.metadata()?.modified()? < cutoff
        {
            std::fs::remove_file(entry.path())?;
            removed += 1;
        }
    }
    Ok(removed)
}

/// A backup read and checked: its manifest and every part's bytes.
#[derive(Debug)]
pub struct Verified {
    pub manifest: Manifest,
    pub parts: Vec<(String, Vec<u8>)>,
}

/// Reads `archive` and checks it completely: the manifest, every part present with its
/// checksum, nothing unlisted, and that it belongs to `node`.
pub fn verify(archive: &Path, node: &str) -> Result<Verified, BackupError> {
    let file = std::fs::File::open(archive)
        .map_err(|e| BackupError::Unreadable(format!("{}: {e}", archive.display())))?;
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(file));
    let mut manifest: Option<Manifest> = None;
    let mut parts: Vec<(String, Vec<u8>)> = Vec::new();
    let entries = tar
        .entries()
        .map_err(|e| BackupError::Unreadable(e.to_string()))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| BackupError::Unreadable(e.to_string()))?;
        let path = entry
            .path()
            .map_err(|e| BackupError::Unreadable(e.to_string()))?
            .to_string_lossy()
            .into_owned();
        let mut bytes = Vec::new();
        entry
            .read_to_end(&mut bytes)
            .map_err(|e| BackupError::Unreadable(format!("{path}: {e}")))?;
        if path == "manifest.json" {
            manifest = Some(
                serde_json::from_slice(&bytes)
                    .map_err(|e| BackupError::Unreadable(format!("manifest: {e}")))?,
            );
        } else {
            parts.push((path, bytes));
        }
    }
    let manifest = manifest.ok_or_else(|| BackupError::Unreadable("no manifest".into()))?;
    if manifest.format != FORMAT {
        return Err(BackupError::Format(manifest.format));
    }
    for part in &manifest.parts {
        let Some((_, bytes)) = parts.iter().find(|(p, _)| *p == part.path) else {
            return Err(BackupError::Missing(part.path.clone()));
        };
        if sha256_hex(bytes) != part.sha256 || bytes.len() as u64 != part.bytes {
            return Err(BackupError::Checksum(part.path.clone()));
        }
    }
    if let Some((extra, _)) = parts
        .iter()
        .find(|(p, _)| !manifest.parts.iter().any(|m| m.path == *p))
    {
        return Err(BackupError::Unreadable(format!(
            "{extra} is not in the manifest"
        )));
    }
    if manifest.node != node {
        return Err(BackupError::Foreign {
            backup: manifest.node,
            ours: node.to_string(),
        });
    }
    Ok(Verified { manifest, parts })
}

/// Restores the store (and with `with_config` the configuration file) of the node configured
/// by `config_path` from `archive`. Everything is verified first; the node must be stopped.
/// Returns what was done, for the report.
pub async fn restore(
    config_path: &Path,
    archive: &Path,
    dry_run: bool,
    with_config: bool,
) -> anyhow::Result<serde_json::Value> {
    let config = Config::load(config_path)?;
    let verified = verify(archive, &config.node.name)?;
    let ours = store_kind(&config.store.url);
    if verified.manifest.store_kind != ours {
        return Err(BackupError::StoreKind {
            backup: verified.manifest.store_kind.clone(),
            ours: ours.into(),
        }
        .into());
    }
    let known = Store::known_schema_version(&config.store.url);
    if verified.manifest.schema_version > known {
        return Err(BackupError::NewerSchema {
            backup: verified.manifest.schema_version,
            ours: known,
            version: verified.manifest.dvn_version.clone(),
        }
        .into());
    }
    let report = serde_json::json!({
        "archive": archive.display().to_string(),
        "node": verified.manifest.node,
        "created_at": verified.manifest.created_at,
        "store_kind": verified.manifest.store_kind,
        "parts": verified.manifest.parts.len(),
        "dry_run": dry_run,
    });
    if dry_run {
        return Ok(report);
    }
    let url = crate::ops::node_url(&config);
    if let Ok(http) = crate::ops::http() {
        if crate::ops::get_text(&http, &format!("{url}/health"))
            .await
            .is_some()
        {
            return Err(BackupError::Running(url).into());
        }
    }
    let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%SZ");
    let part = |name: &str| {
        verified
            .parts
            .iter()
            .find(|(p, _)| p == name)
            .map(|(_, b)| b.as_slice())
    };
    let snapshot = part(&format!("store/store.{ours}"))
        .ok_or_else(|| BackupError::Missing(format!("store/store.{ours}")))?;
    match ours {
        "sqlite" => {
            let db = crate::store::sqlite_file(&config.store.url)
                .ok_or_else(|| anyhow::anyhow!("not a SQLite store URL"))?;
            for suffix in ["", "-wal", "-shm"] {
                let file = PathBuf::from(format!("{}{suffix}", db.display()));
                if file.exists() {
                    std::fs::rename(&file, format!("{}.before-restore-{stamp}", file.display()))?;
                }
            }
            let tmp = db.with_extension("restoring");
            std::fs::write(&tmp, snapshot)?;
            std::fs::File::open(&tmp)?.sync_all()?;
            std::fs::rename(&tmp, &db)?;
        }
        _ => {
            let dump = tempfile::NamedTempFile::new()?;
            std::fs::write(dump.path(), snapshot)?;
            let out = tokio::process::Command::new("pg_restore")
                .args([
                    "--clean",
                    "--if-exists",
                    "--no-owner",
                    "--single-transaction",
                    "--dbname",
                ])
                .arg(&config.store.url)
                .arg(dump.path())
                .output()
                .await
                .map_err(|e| anyhow::anyhow!("pg_restore: {e}"))?;
            anyhow::ensure!(
                out.status.success(),
                "pg_restore failed (nothing changed: one transaction): {}",
                crate::chain::redact(&String::from_utf8_lossy(&out.stderr))
            );
        }
    }
    if with_config {
        let text = part("config/config.yaml")
            .ok_or_else(|| BackupError::Missing("config/config.yaml".into()))?;
        std::fs::rename(
            config_path,
            format!("{}.before-restore-{stamp}", config_path.display()),
        )?;
        std::fs::write(config_path, text)?;
    }
    // The restored store opens and is at this version's schema.
    Store::connect(&config.store.url).await?;
    let mut report = report;
    report["restored"] = serde_json::json!(true);
    report["config_restored"] = serde_json::json!(with_config);
    Ok(report)
}

/// What one `dvn backup` run did.
#[derive(Debug, Serialize)]
pub struct Shipped {
    pub archive: PathBuf,
    pub manifest: Manifest,
    /// The objects written, one per `backup.remote` target.
    pub uploaded: Vec<String>,
    /// Old archives deleted from the local directory.
    pub pruned: usize,
    /// Old archives deleted from the remotes.
    pub pruned_remote: usize,
}

/// A backup into `out_dir`, uploaded to every `backup.remote` target of the configuration
/// (unless `local_only`), then retention (`keep_days`, else `backup.keep_days`) applied in
/// the directory and in every remote. Every target is tried; any failure fails the run, the
/// local archive staying in place.
pub async fn create_and_ship(
    config_path: &Path,
    out_dir: &Path,
    logs: Option<&Path>,
    log_days: u64,
    keep_days: Option<u64>,
    local_only: bool,
) -> anyhow::Result<Shipped> {
    let config = Config::load(config_path)?;
    let (archive, manifest) = create(config_path, out_dir, logs, log_days).await?;
    let targets: &[crate::config::RemoteTarget] = match local_only {
        true => &[],
        false => &config.backup.remote,
    };
    let keep_days = keep_days.or(config.backup.keep_days);
    let mut uploaded = Vec::new();
    let mut failures = Vec::new();
    let mut pruned_remote = 0;
    for target in targets {
        match remote::upload(target, &archive).await {
            Ok(object) => uploaded.push(object),
            Err(e) => {
                failures.push(format!("{e:#}"));
                continue;
            }
        }
        if let Some(days) = keep_days {
            match remote::prune(target, &manifest.node, days).await {
                Ok(n) => pruned_remote += n,
                Err(e) => failures.push(format!("retention in {}: {e:#}", target.url)),
            }
        }
    }
    let pruned = match keep_days {
        Some(days) => prune(out_dir, &manifest.node, days)?,
        None => 0,
    };
    anyhow::ensure!(
        failures.is_empty(),
        "backup {} made{}, but: {}",
        archive.display(),
        match uploaded.is_empty() {
            true => String::new(),
            false => format!(" and uploaded to {}", uploaded.join(", ")),
        },
        failures.join("; ")
    );
    Ok(Shipped {
        archive,
        manifest,
        uploaded,
        pruned,
        pruned_remote,
    })
}

/// Why a restored node did not come back.
#[derive(Debug, thiserror::Error)]
pub enum GateError {
    #[error("the start command `{command}` failed: {why}")]
    Start { command: String, why: String },
    #[error("restored, but {url}/health did not answer within {secs} s after the start")]
    Health { url: String, secs: u64 },
    #[error("restored and started, but {url}/ready stayed 503 for {secs} s: {why}")]
    Ready { url: String, secs: u64, why: String },
}

/// Runs `command` (through `sh -c`: the service manager's start, e.g. `systemctl start dvn`)
/// and waits up to `timeout` for the node of `config_path` to answer `/health` and then
/// `/ready` with 200; the seconds it took.
pub async fn start_and_gate(
    config_path: &Path,
    command: &str,
    timeout: std::time::Duration,
) -> anyhow::Result<f64> {
    let config = Config::load(config_path)?;
    let began = std::time::Instant::now();
    let out = tokio::process::Command::new("sh")
        .args(["-c", command])
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .map_err(|e| GateError::Start {
            command: command.into(),
            why: e.to_string(),
        })?;
    if !out.status.success() {
        return Err(GateError::Start {
            command: command.into(),
            why: format!(
                "{}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        }
        .into());
    }
    let url = crate::ops::node_url(&config);
    let http = crate::ops::http()?;
    let deadline = tokio::time::Instant::now() + timeout;
    let secs = timeout.as_secs();
    let mut last_ready = String::from("no answer");
    let mut healthy = false;
    loop {
        if !healthy {
            healthy = matches!(
                crate::ops::get_text(&http, &format!("{url}/health")).await,
                Some((200, ref body)) if !body.contains("\"starting\"")
            );
        }
        if healthy {
            match crate::ops::get_text(&http, &format!("{url}/ready")).await {
                Some((200, _)) => return Ok(began.elapsed().as_secs_f64()),
                Some((_, body)) => last_ready = body.chars().take(400).collect(),
                None => last_ready = "no answer".into(),
            }
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(match healthy {
                false => GateError::Health { url, secs },
                true => GateError::Ready {
                    url,
                    secs,
                    why: last_ready,
                },
            }
            .into());
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_in_a_configuration_are_named() {
        let clean = "signer:\n  kind: keystore\n  path: /run/k.json\n  password_env: PW\nstore:\n  url: sqlite://dvn.db\n";
        assert!(check_no_secrets(clean).is_ok());
        for (text, at) in [
            (
                "signer:\n  kind: keystore\n  password: hunter2\n",
                "signer.password",
            ),
            ("signer:\n  kind: pkcs11\n  pin: '1234'\n", "signer.pin"),
            ("store:\n  url: postgres://dvn:pw@db/dvn\n", "store.url"),
            (
                "chains:\n  - rpc: ['https://x.io/v3/abc']\n",
                "chains[0].rpc[0]",
            ),
        ] {
            match check_no_secrets(text) {
                Err(BackupError::SecretInConfig(found)) => assert_eq!(found, at, "{text}"),
                other => panic!("{text}: {other:?}"),
            }
        }
    }
}
