//! Issue 12 §4: `dvn upgrade run` on three devnet regions laid out as a systemd host would be
//! (a release directory per version, a `current` symlink per region, start/stop commands):
//! one region at a time while messages are verified; a release that never becomes healthy
//! is rolled back and stops the rollout; a rollout is refused while one region is down.

use std::path::{Path, PathBuf};
use std::time::Duration;

use dvn_devnet::nodes::{DvnNode, NodeOptions, PidFileGuard};
use dvn_devnet::{DevnetConfig, Direction};

use crate::common::{dvn_binary, Stand};
use crate::e2e::TIMEOUT;

/// The layout: `releases/{v1,v2,broken}/dvn`, `REGION/current -> releases/…`.
struct Layout {
    dir: tempfile::TempDir,
}

impl Layout {
    fn new() -> Self {
        // Next to the binary, so releases can be hard links (same file system): a process's
        // /proc/PID/exe then names the release it was started from.
        let dir = tempfile::tempdir_in(dvn_binary().parent().unwrap()).unwrap();
        for release in ["v1", "v2"] {
            let at = dir.path().join("releases").join(release);
            std::fs::create_dir_all(&at).unwrap();
            std::fs::hard_link(dvn_binary(), at.join("dvn")).unwrap();
        }
        // A release that cannot start.
        let broken = dir.path().join("releases/broken");
        std::fs::create_dir_all(&broken).unwrap();
        std::fs::write(
            broken.join("dvn"),
            "#!/bin/sh\necho 'broken release' >&2\nexit 1\n",
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(broken.join("dvn"), std::fs::Permissions::from_mode(0o755))
            .unwrap();
        Self { dir }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn switch_to(&self, region: &str, release: &str) {
        std::fs::create_dir_all(self.path(region)).unwrap();
        let link = self.path(&format!("{region}/current"));
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(self.path(&format!("releases/{release}")), link).unwrap();
    }

    fn pidfile(&self, region: &str) -> PathBuf {
        self.path(&format!("{region}/dvn.pid"))
    }

    /// The release the region's process runs, from /proc/PID/exe.
    fn running_release(&self, region: &str) -> Option<String> {
        let pid = std::fs::read_to_string(self.pidfile(region)).ok()?;
        let exe = std::fs::read_link(format!("/proc/{}/exe", pid.trim())).ok()?;
        exe.parent()?.file_name()?.to_str().map(str::to_string)
    }

    fn start_command(&self, node: &DvnNode) -> String {
        node.detached_start_command(
            &self.path(&format!("{}/current/dvn", node.region)),
            &self.pidfile(&node.region),
        )
    }

    /// The plan file for `nodes`, in aws → aliyun → gcp order.
    fn plan(&self, nodes: &[DvnNode], ready_timeout_secs: u64) -> PathBuf {
        let regions: Vec<serde_json::Value> = nodes
            .iter()
            .map(|node| {
                let region = &node.region;
                serde_json::json!({
                    "name": region,
                    "url": node.url(),
                    "stop": DvnNode::detached_stop_command(&self.pidfile(region)),
                    "switch": format!("ln -sfn {}/releases/{{version}} {}/{{region}}/current",
                        self.dir.path().display(), self.dir.path().display()),
                    "start": self.start_command(node),
                    "rollback": format!("ln -sfn {}/releases/{{previous}} {}/{{region}}/current",
                        self.dir.path().display(), self.dir.path().display()),
                })
            })
            .collect();
        let plan = serde_json::json!({
            "regions": regions,
            "ready_timeout_secs": ready_timeout_secs,
            "settle_secs": 2,
            "command_timeout_secs": 60,
        });
        let path = self.path(&format!("plan-{ready_timeout_secs}.yaml"));
        std::fs::write(&path, serde_norway::to_string(&plan).unwrap()).unwrap();
        path
    }
}

/// `dvn upgrade run|plan --plan P --to TO --from FROM --json`: exit code and report.
fn upgrade(verb: &str, plan: &Path, to: &str, from: &str) -> (i32, serde_json::Value, String) {
    let out = std::process::Command::new(dvn_binary())
        .args(["upgrade", verb, "--plan"])
        .arg(plan)
        .args(["--to", to, "--from", from, "--json"])
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        serde_json::from_slice(&out.stdout).unwrap_or_default(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn results(report: &serde_json::Value) -> Vec<String> {
    report["regions"]
        .as_array()
        .map(|r| {
            r.iter()
                .map(|r| r["result"].as_str().unwrap_or("").to_string())
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regions_are_upgraded_one_at_a_time_rolled_back_on_failure_and_refused_when_one_is_down() {
    let stand = Stand::new(DevnetConfig::default(), NodeOptions::default()).await;
    let layout = Layout::new();
    let nodes = &stand.nodes.nodes;
    let _guards: Vec<PidFileGuard> = nodes
        .iter()
        .map(|n| PidFileGuard(layout.pidfile(&n.region)))
        .collect();
    for node in nodes {
        layout.switch_to(&node.region, "v1");
        let status = std::process::Command::new("sh")
            .args(["-c", &layout.start_command(node)])
            .status()
            .unwrap();
        assert!(status.success());
    }
    let plan = layout.plan(nodes, 60);
    let all_ready = dvn_devnet::wait::eventually(TIMEOUT, Duration::from_millis(250), || async {
        (upgrade("plan", &plan, "v2", "v1").0 == 0).then_some(())
    })
    .await;
    assert!(all_ready.is_some(), "the three regions never became ready");

    // The rollout, while traffic is verified.
    let rollout = {
        let plan = plan.clone();
        tokio::task::spawn_blocking(move || upgrade("run", &plan, "v2", "v1"))
    };
    let during = stand
        .devnet
        .send_messages(Direction::AToB, 3)
        .await
        .unwrap();
    stand.deliver(Direction::AToB, &during, TIMEOUT).await;
    let (code, report, stderr) = rollout.await.unwrap();
    assert_eq!(code, 0, "{report} {stderr}");
    assert_eq!(results(&report), ["upgraded", "upgraded", "upgraded"]);
    for region in ["aws", "aliyun", "gcp"] {
        assert_eq!(
            layout.running_release(region).as_deref(),
            Some("v2"),
            "{region}"
        );
    }
    // In order, one at a time: each stop comes after the previous region settled.
    let order: Vec<&str> = stderr
        .lines()
        .filter_map(|l| {
            l.strip_prefix("upgrade: ")?
                .split_once(": stop:")
                .map(|(r, _)| r)
        })
        .collect();
    assert_eq!(order, ["aws", "aliyun", "gcp"], "{stderr}");

    // A release that never becomes healthy: aws is rolled back, the others are not touched.
    let quick = layout.plan(nodes, 10);
    let (code, report, stderr) = upgrade("run", &quick, "broken", "v2");
    assert_eq!(code, 2, "{report} {stderr}");
    assert_eq!(results(&report), ["rolled_back", "untouched", "untouched"]);
    assert!(stderr.contains("aws: FAILED"), "{stderr}");
    for region in ["aws", "aliyun", "gcp"] {
        assert_eq!(
            layout.running_release(region).as_deref(),
            Some("v2"),
            "{region}"
        );
    }
    let after = stand
        .devnet
        .send_messages(Direction::AToB, 2)
        .await
        .unwrap();
    stand.deliver(Direction::AToB, &after, TIMEOUT).await;

    // One region down: refused before anything changes.
    let stop = std::process::Command::new("sh")
        .args([
            "-c",
            &DvnNode::detached_stop_command(&layout.pidfile("gcp")),
        ])
        .status()
        .unwrap();
    assert!(stop.success());
    let (code, report, stderr) = upgrade("run", &plan, "v1", "v2");
    assert_eq!(code, 1, "{report} {stderr}");
    assert!(stderr.contains("gcp"), "{stderr}");
    assert_eq!(results(&report), ["untouched", "untouched", "untouched"]);
    assert_eq!(layout.running_release("aws").as_deref(), Some("v2"));
    assert_eq!(
        std::fs::read_link(layout.path("aws/current")).unwrap(),
        layout.path("releases/v2")
    );

    let all: Vec<_> = during.into_iter().chain(after).collect();
    stand.assert_invariants(Direction::AToB, &all).await;
}
