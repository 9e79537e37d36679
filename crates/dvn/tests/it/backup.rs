//! Issue 12 §1–§2: `dvn backup` of a running node, and `dvn restore` the way an operator
//! meets it — refusing a running node, a corrupt, a truncated and a foreign archive without
//! changing anything, then restoring a node that is behind the chains and its peers, which
//! catches up without verifying anything twice. On SQLite and on PostgreSQL.

use std::path::{Path, PathBuf};

use dvn::config::Config;
use dvn::store::Store;
use dvn_devnet::nodes::{NodeOptions, StoreKind, REGIONS};
use dvn_devnet::{DevnetConfig, Direction};
use serde_json::Value;

use crate::common::{dvn_cli, dvn_run, Stand};
use crate::e2e::TIMEOUT;
use crate::pg::{base_url, PgDatabases};

fn restore(archive: &Path, config: &str, extra: &[&str]) -> (i32, String) {
    let archive = archive.to_str().unwrap();
    let mut args = vec!["restore", archive, "-c", config];
    args.extend_from_slice(extra);
    dvn_run(&args, &[])
}

/// A copy of `archive` changed by `damage`, in `dir`.
fn damaged(archive: &Path, dir: &Path, name: &str, damage: impl Fn(&mut Vec<u8>)) -> PathBuf {
    let mut bytes = std::fs::read(archive).unwrap();
    damage(&mut bytes);
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

/// Runs the shipped `deploy/systemd/dvn-backup.service` command against `config`, with the
/// unit's directories pointed at `backups` and `logs`; checks the timer's schedule parses.
fn run_the_shipped_backup_unit(config: &str, backups: &Path, logs: &Path) -> Value {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/systemd");
    let unit = std::fs::read_to_string(root.join("dvn-backup.service")).unwrap();
    let exec = unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .expect("an ExecStart line");
    let exec = exec
        .replace("/etc/dvn/config.yaml", config)
        .replace("/var/backups/dvn", backups.to_str().unwrap())
        .replace("/var/log/dvn", logs.to_str().unwrap());
    let mut words: Vec<&str> = exec.split_whitespace().collect();
    assert_eq!(words.remove(0), "/usr/local/bin/dvn");
    words.push("--json");
    let (code, out) = dvn_run(&words, &[]);
    assert_eq!(code, 0, "{exec}: {out}");
    let timer = std::fs::read_to_string(root.join("dvn-backup.timer")).unwrap();
    let calendar = timer
        .lines()
        .find_map(|l| l.strip_prefix("OnCalendar="))
        .expect("an OnCalendar line");
    let analyze = std::process::Command::new("systemd-analyze")
        .args(["calendar", calendar])
        .output()
        .expect("systemd-analyze (scripts/setup.sh installs systemd)");
    assert!(analyze.status.success(), "{calendar}");
    serde_json::from_str(&out).unwrap()
}

async fn backup_restore_and_catch_up(options: NodeOptions) {
    let sqlite = matches!(options.store, StoreKind::Sqlite);
    let mut stand = Stand::new(DevnetConfig::default(), options).await;
    stand.nodes.start(&[0, 1, 2]).await.unwrap();
    let first = stand
        .devnet
        .send_messages(Direction::AToB, 3)
        .await
        .unwrap();
    stand.deliver(Direction::AToB, &first, TIMEOUT).await;

    // Backup of the running aws node.
    let aws_cfg = stand.nodes.nodes[0]
        .config_path
        .to_str()
        .unwrap()
        .to_string();
    let out = tempfile::tempdir().unwrap();
    let answer = dvn_cli(&[
        "backup",
        "-c",
        &aws_cfg,
        "--out",
        out.path().to_str().unwrap(),
        "--json",
    ]);
    let answer: Value = serde_json::from_str(&answer).unwrap();
    let archive = PathBuf::from(answer["archive"].as_str().unwrap());
    assert_eq!(answer["manifest"]["node"], "aws");
    let parts: Vec<&str> = answer["manifest"]["parts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["path"].as_str().unwrap())
        .collect();
    assert!(parts.contains(&"config/config.yaml"), "{parts:?}");
    assert!(parts.iter().any(|p| p.starts_with("store/")), "{parts:?}");

    if sqlite {
        // The shipped daily unit does the same, with a week of logs.
        let logs = tempfile::tempdir().unwrap();
        std::fs::write(logs.path().join("dvn.log"), "a log line\n").unwrap();
        let daily = tempfile::tempdir().unwrap();
        let made = run_the_shipped_backup_unit(&aws_cfg, daily.path(), logs.path());
        let parts = made["manifest"]["parts"].to_string();
        assert!(parts.contains("logs/dvn.log"), "{parts}");
        assert_eq!(made["pruned"], 0);
    }

    // The chains and the peers move on after the backup.
    let second = stand
        .devnet
        .send_messages(Direction::AToB, 3)
        .await
        .unwrap();
    stand.deliver(Direction::AToB, &second, TIMEOUT).await;

    // A running node is not restored under itself.
    let (code, text) = restore(&archive, &aws_cfg, &[]);
    assert_ne!(code, 0);
    assert!(text.contains("stop it before restoring"), "{text}");
    stand.nodes.nodes[0].kill();

    // Damaged and foreign archives are refused, naming why; nothing changes.
    let scratch = tempfile::tempdir().unwrap();
    let corrupt = damaged(&archive, scratch.path(), "corrupt.tar.gz", |b| {
        let at = b.len() / 2;
        b[at] ^= 0xff;
    });
    let truncated = damaged(&archive, scratch.path(), "cut.tar.gz", |b| {
        b.truncate(b.len() * 2 / 3)
    });
    let aliyun_cfg = stand.nodes.nodes[1]
        .config_path
        .to_str()
        .unwrap()
        .to_string();
    for (file, config, why) in [
        (&corrupt, &aws_cfg, "damaged"),
        (&truncated, &aws_cfg, "damaged"),
        (&archive, &aliyun_cfg, "refusing a foreign backup"),
    ] {
        for extra in [&[][..], &["--dry-run"][..]] {
            let (code, text) = restore(file, config, extra);
            assert_ne!(code, 0, "{} {extra:?} was accepted", file.display());
            assert!(
                text.contains(why) || text.contains("checksum"),
                "{}: {text}",
                file.display()
            );
        }
    }
    let config = Config::load(&stand.nodes.nodes[0].config_path).unwrap();
    {
        let store = Store::connect(&config.store.url).await.unwrap();
        for p in &second {
            assert!(
                store.packet(p.packet.guid).await.unwrap().is_some(),
                "refused restores changed nothing"
            );
        }
    }

    let (code, text) = restore(&archive, &aws_cfg, &["--dry-run"]);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("verified"), "{text}");
    let (code, text) = restore(&archive, &aws_cfg, &[]);
    assert_eq!(code, 0, "{text}");
    {
        // The restored store is the backup's: behind the chains by `second`.
        let store = Store::connect(&config.store.url).await.unwrap();
        for p in &first {
            assert!(store.packet(p.packet.guid).await.unwrap().is_some());
        }
        for p in &second {
            assert!(store.packet(p.packet.guid).await.unwrap().is_none());
        }
        let audit = store.audit_all().await.unwrap();
        assert!(
            audit.iter().any(|r| r.entry.operation == "restore"),
            "the restore is audited"
        );
    }

    // Back up: aws catches up (re-checking against the chains) and nothing is verified twice.
    stand.nodes.start(&[0]).await.unwrap();
    let third = stand
        .devnet
        .send_messages(Direction::AToB, 2)
        .await
        .unwrap();
    stand.deliver(Direction::AToB, &third, TIMEOUT).await;
    let all: Vec<_> = first.into_iter().chain(second).chain(third).collect();
    stand.assert_invariants(Direction::AToB, &all).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sqlite_node_is_backed_up_running_and_restored_behind_without_duplicates() {
    backup_restore_and_catch_up(NodeOptions::default()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_node_is_backed_up_running_and_restored_behind_without_duplicates() {
    let dbs = PgDatabases::create(&REGIONS);
    backup_restore_and_catch_up(NodeOptions {
        store: StoreKind::Postgres {
            base_url: base_url(),
            prefix: dbs.prefix.clone(),
        },
        ..NodeOptions::default()
    })
    .await;
}
