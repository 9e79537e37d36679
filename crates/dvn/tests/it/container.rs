//! Issue 14 §3: the repository's image and `docker-compose.yml`, run with podman as one region
//! (aws) of the devnet, checked the way the operator manual checks a region: "`docker-compose
//! ps` shows 3 running", `/health` then `/ready`, the node runs as non-root and its image
//! health check passes, and messages are verified through it (with another region down, so
//! its signature is needed) on the stack's own PostgreSQL. (A node started before its store
//! and Redis waits for them: `dependencies.rs` shows it on the host; here podman's
//! `--requires`, which podman-compose adds for `depends_on`, refused to restart the node
//! container while its dependencies were stopped or paused.)
//!
//! Ignored in the main suite: `scripts/container-test.sh` makes the local base images, builds
//! the image (a cold release build, ~13 minutes on two cores) and runs this test. The compose
//! file is used unchanged, copied beside the region's `config.yaml`, `tls/` and `.env` as an
//! operator lays them out; an override file puts the three services on the host network
//! (everything on 127.0.0.1, next to the devnet's chains), swaps the Alpine Redis and
//! PostgreSQL images, which no reachable registry serves, for Debian-packaged ones, and relaxes
//! `service_healthy` to `service_started` (podman runs no health checks without systemd).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use dvn_devnet::nodes::NodeOptions;
use dvn_devnet::wait::eventually;
use dvn_devnet::DevnetConfig;
use serde_json::json;

use crate::common::Stand;
use crate::e2e::TIMEOUT;

/// The compose file's own port for the node (its health check and the image's use it).
const NODE_URL: &str = "http://127.0.0.1:8080";
const PROJECT: &str = "dvnit";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// podman-compose: the pinned one `scripts/container-test.sh` installs (Debian's 1.0.3 appends
/// an override's `command` to the base one and cannot put a service on the host network).
fn podman_compose() -> PathBuf {
    std::env::var_os("DVN_PODMAN_COMPOSE")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join(".cache/venv/bin/podman-compose"))
}

/// A compose project in a directory of its own; taken down (with its volumes) on drop.
struct Stack {
    dir: tempfile::TempDir,
}

impl Stack {
    /// Runs podman-compose (no pod: each service keeps its own network setting) and returns
    /// whether it succeeded and what it printed. Its output goes through a file: the
    /// containers' monitors inherit the descriptors, so a pipe would stay open while they run.
    fn compose(&self, args: &[&str]) -> (bool, String) {
        let log = self.dir.path().join("compose.log");
        let file = std::fs::File::create(&log).unwrap();
        let status = Command::new(podman_compose())
            .current_dir(self.dir.path())
            .args(["--in-pod", "false", "-p", PROJECT])
            .args(["-f", "docker-compose.yml", "-f", "override.yml"])
            .args(args)
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .status()
            .expect("podman-compose is installed by scripts/container-test.sh");
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        eprintln!("podman-compose {args:?}: {status}\n{text}");
        (status.success(), text)
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        let _ = self.compose(&["down", "-v"]);
    }
}

/// A podman query (its output is read).
fn podman(args: &[&str]) -> Output {
    Command::new("podman")
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap()
}

/// A podman action that may start containers: no pipes (their monitors would inherit them).
fn podman_do(args: &[&str]) -> bool {
    use std::process::Stdio;
    Command::new("podman")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

async fn get(path: &str) -> Option<(u16, serde_json::Value)> {
    let response = reqwest::get(format!("{NODE_URL}{path}")).await.ok()?;
    let status = response.status().as_u16();
    Some((status, response.json().await.unwrap_or_default()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the image: run scripts/container-test.sh"]
async fn the_compose_stack_runs_a_region_that_verifies_messages() {
    assert!(
        podman(&["image", "exists", "dvn-node:latest"])
            .status
            .success(),
        "no dvn-node:latest image: run scripts/container-test.sh"
    );
    assert!(
        std::net::TcpListener::bind("127.0.0.1:8080").is_ok(),
        "127.0.0.1:8080 is taken: the compose file's node port must be free"
    );
    podman_do(&["rm", "-f", "dvn-node"]);
    let mut stand = Stand::new(DevnetConfig::default(), NodeOptions::default()).await;
    stand.nodes.start(&[1, 2]).await.unwrap();

    // The region's directory as an operator lays it out beside the compose file.
    let dir = tempfile::Builder::new()
        .prefix("dvn-compose-")
        .tempdir()
        .unwrap();
    let aws = &stand.nodes.nodes[0];
    std::fs::copy(
        repo().join("docker-compose.yml"),
        dir.path().join("docker-compose.yml"),
    )
    .unwrap();
    let tls = dir.path().join("tls");
    std::fs::create_dir(&tls).unwrap();
    for file in ["ca.pem", "aws.pem", "aws.key"] {
        std::fs::copy(aws.tls_dir.join(file), tls.join(file)).unwrap();
    }
    // The image runs as uid 10001: it must be able to read its key, as on a real host.
    let chown = Command::new("chown")
        .args(["-R", "10001"])
        .arg(&tls)
        .status()
        .unwrap();
    assert!(chown.success());
    let mut config: serde_json::Value =
        serde_norway::from_str(&std::fs::read_to_string(&aws.config_path).unwrap()).unwrap();
    config["node"]["listen"] = json!("127.0.0.1:8080");
    config["tls"] = json!({
        "ca": "/etc/dvn/tls/ca.pem",
        "cert": "/etc/dvn/tls/aws.pem",
        "key": "/etc/dvn/tls/aws.key",
    });
    std::fs::write(
        dir.path().join("config.yaml"),
        serde_norway::to_string(&config).unwrap(),
    )
    .unwrap();
    std::fs::write(
        dir.path().join(".env"),
        "POSTGRES_PASSWORD=compose-test-pg\nREDIS_PASSWORD=compose-test-redis\nHSM_PIN=unused\n",
    )
    .unwrap();
    let (pg_port, redis_port) = (free_port(), free_port());
    let mut node_env = serde_json::Map::new();
    for (k, v) in aws.env() {
        node_env.insert(k.clone(), json!(v));
    }
    node_env.insert("DVN_LISTEN".into(), json!("127.0.0.1:8080"));
    node_env.insert("POSTGRES_HOST".into(), json!("127.0.0.1"));
    node_env.insert("POSTGRES_PORT".into(), json!(pg_port.to_string()));
    node_env.insert("REDIS_HOST".into(), json!("127.0.0.1"));
    node_env.insert("REDIS_PORT".into(), json!(redis_port.to_string()));
    let entrypoint = repo().join("scripts/container/postgres-entrypoint.sh");
    let overrides = json!({
        "services": {
            // Health checks never run under podman without systemd, so a `service_healthy`
            // condition (which podman-compose 1.3 waits for) would never be met: started is
            // what podman can give, and the node waits for its store itself.
            "dvn": {
                "network_mode": "host",
                "environment": node_env,
                "depends_on": {
                    "postgres": { "condition": "service_started" },
                    "redis": { "condition": "service_started" },
                },
            },
            "redis": {
                "image": "localhost/dvn-test-redis:bookworm",
                "network_mode": "host",
                "command": ["redis-server", "--requirepass", "${REDIS_PASSWORD}", "--appendonly", "yes",
                    "--port", redis_port.to_string(), "--bind", "127.0.0.1", "--dir", "/data"],
            },
            "postgres": {
                "image": "localhost/dvn-test-postgres:bookworm",
                "network_mode": "host",
                "entrypoint": ["/bin/bash", "/entrypoint.sh"],
                "environment": { "PGPORT": pg_port.to_string() },
                "volumes": [format!("{}:/entrypoint.sh:ro", entrypoint.display())],
            },
        }
    });
    // JSON is YAML, with every string quoted: podman-compose's YAML 1.1 parser would read an
    // unquoted `0x…` key as a number and `yes` as a boolean.
    std::fs::write(
        dir.path().join("override.yml"),
        serde_json::to_string_pretty(&overrides).unwrap(),
    )
    .unwrap();
    // The compose file mounts the CloudHSM client directory; podman wants the source to exist.
    std::fs::create_dir_all("/opt/cloudhsm").unwrap();
    let stack = Stack { dir };

    // The stack up: the manual's daily line, then the gates.
    assert!(stack.compose(&["up", "-d"]).0, "podman-compose up failed");
    let running = eventually(TIMEOUT, Duration::from_millis(500), || async {
        let (_, text) = stack.compose(&["ps"]);
        (text.lines().filter(|l| l.contains(" Up ")).count() == 3).then_some(text)
    })
    .await;
    assert!(
        running.is_some(),
        "`podman-compose ps` does not show 3 running"
    );
    let ready = eventually(TIMEOUT, Duration::from_millis(500), || async {
        (get("/ready").await?.0 == 200).then_some(())
    })
    .await;
    assert!(ready.is_some(), "the containerised node never became ready");

    let uid = podman(&["exec", "dvn-node", "id", "-u"]);
    assert_eq!(
        String::from_utf8_lossy(&uid.stdout).trim(),
        "10001",
        "runs as non-root"
    );
    assert!(
        podman(&["healthcheck", "run", "dvn-node"]).status.success(),
        "the image's health check fails"
    );

    // With aliyun down, every quorum needs the containerised aws.
    stand.verify_with_one_down(1, 4).await;
    // …and it kept them in the stack's PostgreSQL.
    let count = podman(&[
        "exec",
        &format!("{PROJECT}_postgres_1"),
        "psql",
        "-qAt",
        "-U",
        "dvn",
        "-d",
        "dvn",
        "-c",
        "SELECT COUNT(*) FROM packets",
    ]);
    let stored: u64 = String::from_utf8_lossy(&count.stdout)
        .trim()
        .parse()
        .unwrap_or(0);
    assert!(stored >= 4, "packets in the stack's PostgreSQL: {stored}");
}
