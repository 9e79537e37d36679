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
    match kind {
        "sqlite" => {
            let store = Store::connect(&config.store.url).await?;
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
