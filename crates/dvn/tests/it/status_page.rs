//! Issue 14 §4: `/status` read in a real browser (headless Chromium from Debian) the way an
//! operator opens it during an incident: one region down, a path halted by the equivocation
//! guard, packets verified the other way. Screenshot, and the DOM Chromium built.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use dvn_devnet::nodes::NodeOptions;
use dvn_devnet::wait::eventually;
use dvn_devnet::{DevnetConfig, Direction};

use crate::common::{equivocate_on_a, metric_reaches, ready_status, Stand};
use crate::e2e::TIMEOUT;

/// Runs headless Chromium on `url` with `extra` flags; its stdout. Flags as this machine needs
/// them: no sandbox as root, nothing that reaches for the (closed) network.
fn chromium(profile: &Path, url: &str, extra: &[&str]) -> String {
    let out = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            &format!("--user-data-dir={}", profile.display()),
        ])
        .args(extra)
        .arg(url)
        .output()
        .expect("chromium is installed by scripts/setup.sh (Debian chromium)");
    assert!(
        out.status.success(),
        "chromium: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_page_shows_a_down_peer_a_halted_path_and_verified_packets_in_chromium() {
    let mut stand = Stand::new(DevnetConfig::default(), NodeOptions::default()).await;
    stand.nodes.start(&[0, 1, 2]).await.unwrap();
    equivocate_on_a(&stand).await;
    for node in &stand.nodes.nodes {
        assert!(metric_reaches(node, "dvn_halted_paths", 1.0).await);
    }
    let verified = stand
        .devnet
        .send_messages(Direction::BToA, 2)
        .await
        .unwrap();
    stand.deliver(Direction::BToA, &verified, TIMEOUT).await;
    stand.nodes.nodes[2].kill();
    let aws = &stand.nodes.nodes[0];
    // The page reads the health snapshot: wait until it has seen gcp go.
    let seen = eventually(TIMEOUT, Duration::from_millis(250), || async {
        let (_, body) = ready_status(aws).await?;
        (body["components"]["peers"]["up"]["gcp"] == false).then_some(())
    })
    .await;
    assert!(seen.is_some(), "aws noticed gcp down");

    let dir = tempfile::tempdir().unwrap();
    let url = format!("{}/status", aws.url());
    let dom = chromium(&dir.path().join("profile"), &url, &["--dump-dom"]);
    for expected in [
        "data-region=\"gcp\" data-up=\"false\"",
        "data-region=\"aliyun\" data-up=\"true\"",
        "id=\"halted\" data-halted=\"1\"",
        "data-chain=\"ethereum\"",
        "data-chain=\"conflux-espace\"",
        "id=\"latency\"",
    ] {
        assert!(dom.contains(expected), "no {expected} in the page:\n{dom}");
    }
    // Each of the B→A packets is listed as verified — by this region (`verified`) or by
    // another (`skipped`: our DVN's verification was already there) — linking to its `why`.
    for p in &verified {
        let guid = p.packet.guid.to_string();
        let row = dom
            .split(&format!("<tr data-guid=\"{guid}\""))
            .nth(1)
            .and_then(|rest| rest.split("</tr>").next())
            .unwrap_or_else(|| panic!("{guid} not listed:\n{dom}"));
        assert!(
            row.starts_with(" data-state=\"verified\"")
                || row.starts_with(" data-state=\"skipped\""),
            "{guid}: {row}"
        );
        assert!(
            row.contains(">verified"),
            "{guid} not shown verified: {row}"
        );
        assert!(row.contains(&format!("href=\"/admin/v1/packets/{guid}\"")));
    }
    assert!(!dom.contains("<script"), "no script on the page");
    let shot = dir.path().join("status.png");
    chromium(
        &dir.path().join("profile"),
        &url,
        &[
            &format!("--screenshot={}", shot.display()),
            "--window-size=1280,1400",
        ],
    );
    let png = std::fs::read(&shot).expect("a screenshot");
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "{} bytes",
        png.len()
    );
    if let Ok(keep) = std::env::var("DVN_STATUS_SCREENSHOT") {
        std::fs::copy(&shot, keep).unwrap();
    }
}
