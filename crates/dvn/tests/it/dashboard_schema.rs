//! Issue 14 §2: the shipped Grafana dashboard checked offline against the dashboard model
//! Grafana publishes (`@grafana/schema`, generated from its CUE kinds), through
//! `deploy/grafana/schema-check` (the TypeScript type made a JSON Schema, applied with ajv;
//! pinned npm packages installed by `scripts/setup.sh`). No Grafana server is reachable here.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn check(dashboard: &Path) -> Output {
    let script = repo().join("deploy/grafana/schema-check/check.mjs");
    assert!(
        repo()
            .join("deploy/grafana/schema-check/node_modules/@grafana/schema")
            .is_dir(),
        "run scripts/setup.sh first (it installs the schema check's npm packages)"
    );
    Command::new("node")
        .arg(script)
        .arg(dashboard)
        .output()
        .expect("node runs")
}

#[test]
fn the_shipped_dashboard_matches_grafanas_published_dashboard_model() {
    let shipped = repo().join("deploy/grafana/dashboards/dvn.json");
    let out = check(&shipped);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("dvn.json: valid"), "{text}");

    // The check can fail: a panel without its type and a grid position of the wrong shape
    // are refused, each named by its place in the document.
    let mut broken: Value =
        serde_json::from_str(&std::fs::read_to_string(&shipped).unwrap()).unwrap();
    broken["panels"][0].as_object_mut().unwrap().remove("type");
    broken["panels"][1]["gridPos"] = serde_json::json!({ "x": "left" });
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("broken.json");
    std::fs::write(&path, broken.to_string()).unwrap();
    let out = check(&path);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("broken.json: invalid"), "{text}");
    assert!(
        text.contains("/panels/0 must have required property 'type'"),
        "{text}"
    );
    assert!(
        text.contains("/panels/1/gridPos/x must be number"),
        "{text}"
    );
}
