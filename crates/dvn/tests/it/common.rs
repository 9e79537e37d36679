//! Shared set-up for the node tests.

use std::path::Path;
use std::time::Duration;

use dvn_devnet::nodes::{NodeOptions, NodeSet};
use dvn_devnet::{Devnet, DevnetConfig, Direction};
use dvn_lz::SentPacket;

/// The `dvn` binary cargo built for these tests.
pub fn dvn_binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_dvn"))
}

/// One transaction that carried verifications of our DVN (see
/// [`Stand::verifying_transactions`]).
pub struct Verifying {
    /// Our `PayloadVerified`s it emitted.
    pub params: u64,
    pub tx: alloy::rpc::types::Transaction,
    pub receipt: alloy::rpc::types::TransactionReceipt,
}

/// A devnet plus three configured (not started) nodes; the temp dir holds configs, stores, logs.
pub struct Stand {
    pub devnet: Devnet,
    pub nodes: NodeSet,
    /// Holds configs, stores and logs; removed when the stand drops.
    _dir: tempfile::TempDir,
}

impl Stand {
    pub async fn new(devnet: DevnetConfig, options: NodeOptions) -> Stand {
        Self::with_devnet(Devnet::start(devnet).await.unwrap(), options)
    }

    /// A default stand whose A → B path needs `confirmations` (send and receive ULN configs).
    pub async fn with_a_to_b_confirmations(confirmations: u64) -> Stand {
        let devnet = DevnetConfig {
            confirmations_a_to_b: confirmations,
            ..DevnetConfig::default()
        };
        Self::new(devnet, NodeOptions::default()).await
    }

    pub fn with_devnet(devnet: Devnet, options: NodeOptions) -> Stand {
        let dir = tempfile::Builder::new()
            .prefix("dvn-it-")
            .tempdir()
            .unwrap();
        let nodes = NodeSet::configure(&devnet, dvn_binary(), dir.path(), &options).unwrap();
        Stand {
            devnet,
            nodes,
            _dir: dir,
        }
    }

    /// Asserts I1–I3 for `packets` on `direction`, printing node logs on failure.
    pub async fn assert_invariants(
        &self,
        direction: Direction,
        packets: &[SentPacket],
    ) -> dvn_devnet::invariants::Report {
        let report = self
            .devnet
            .check_invariants(direction, packets)
            .await
            .unwrap();
        if !report.holds() {
            self.dump_logs();
            panic!("invariants violated on {direction:?}: {report:?}");
        }
        report
    }

    /// Sends `count` messages on `direction` and delivers them once verified (see
    /// [`Self::deliver`], with the e2e timeout).
    pub async fn send_delivered(&self, direction: Direction, count: usize) -> Vec<SentPacket> {
        let packets = self.devnet.send_messages(direction, count).await.unwrap();
        self.deliver(direction, &packets, crate::e2e::TIMEOUT).await;
        packets
    }

    /// Waits for all packets to become verifiable and delivers them; fails with node logs.
    pub async fn deliver(&self, direction: Direction, packets: &[SentPacket], timeout: Duration) {
        let ok = self
            .devnet
            .deliver_when_verified(direction, packets, timeout)
            .await
            .unwrap();
        if !ok {
            self.dump_logs();
            let report = self
                .devnet
                .check_invariants(direction, packets)
                .await
                .unwrap();
            panic!("packets on {direction:?} not verified within {timeout:?}: {report:?}");
        }
    }

    /// Sends `n` messages each way, waits until they are verified and delivers them, and
    /// asserts no loss / duplicate / forgery on both paths. Returns what was sent.
    pub async fn round_trip_both_ways(&self, n: usize) -> (Vec<SentPacket>, Vec<SentPacket>) {
        let timeout = crate::e2e::TIMEOUT;
        let a_to_b = self.devnet.send_messages(Direction::AToB, n).await.unwrap();
        let b_to_a = self.devnet.send_messages(Direction::BToA, n).await.unwrap();
        self.deliver(Direction::AToB, &a_to_b, timeout).await;
        self.deliver(Direction::BToA, &b_to_a, timeout).await;
        self.assert_invariants(Direction::AToB, &a_to_b).await;
        self.assert_invariants(Direction::BToA, &b_to_a).await;
        (a_to_b, b_to_a)
    }

    /// Stops the node at `down` and verifies `n` fresh A → B messages with the other two: each
    /// quorum then needs both of them. Asserts I1–I3; returns what was sent.
    pub async fn verify_with_one_down(&mut self, down: usize, n: usize) -> Vec<SentPacket> {
        self.nodes.nodes[down].kill();
        let packets = self.devnet.send_messages(Direction::AToB, n).await.unwrap();
        self.deliver(Direction::AToB, &packets, crate::e2e::TIMEOUT)
            .await;
        self.assert_invariants(Direction::AToB, &packets).await;
        packets
    }

    /// The transactions that carried our DVN's verifications on `direction`'s destination,
    /// each with its receipt and how many of our `PayloadVerified`s it emitted.
    pub async fn verifying_transactions(&self, direction: Direction) -> Vec<Verifying> {
        use alloy::providers::Provider;
        use alloy::sol_types::SolEvent;
        use dvn_lz::contracts::IReceiveUln302::PayloadVerified;

        let (_, dst) = self.devnet.sides(direction);
        let logs = dst
            .chain
            .logs(dst.contracts.receive_lib, PayloadVerified::SIGNATURE_HASH)
            .await
            .unwrap();
        let mut params = std::collections::BTreeMap::new();
        for log in logs {
            let event = PayloadVerified::decode_log_data(&log.inner.data).unwrap();
            if event.dvn == dst.contracts.dvn {
                *params.entry(log.transaction_hash.unwrap()).or_insert(0) += 1;
            }
        }
        let mut verifying = Vec::new();
        for (hash, params) in params {
            let provider = &dst.chain.provider;
            verifying.push(Verifying {
                params,
                tx: provider
                    .get_transaction_by_hash(hash)
                    .await
                    .unwrap()
                    .unwrap(),
                receipt: provider
                    .get_transaction_receipt(hash)
                    .await
                    .unwrap()
                    .unwrap(),
            });
        }
        verifying
    }

    pub fn dump_logs(&self) {
        for node in &self.nodes.nodes {
            let log = std::fs::read_to_string(&node.log_path).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            eprintln!("===== {} (last 40 lines) =====", node.region);
            for line in tail.into_iter().rev() {
                eprintln!("{line}");
            }
        }
    }

    /// Every node's peer entry for `region` names `signer` (a key that lives in an HSM/KMS).
    pub fn set_peer_signer(&self, region: &str, signer: alloy::primitives::Address) {
        for node in &self.nodes.nodes {
            node.edit_config(|c| {
                for peer in c["peers"].as_array_mut().unwrap() {
                    if peer["name"] == region {
                        peer["signer"] = serde_json::json!(signer.to_string());
                    }
                }
            })
            .unwrap();
        }
    }

    /// Node `index` signs with the SoftHSM key `key_label`; the others know its address.
    pub fn use_hsm(
        &mut self,
        index: usize,
        hsm: &crate::pkcs11::SoftHsm,
        key_label: &str,
        signer: alloy::primitives::Address,
    ) {
        use crate::pkcs11::{MODULE, PIN, TOKEN};
        let region = self.nodes.nodes[index].region.clone();
        self.set_peer_signer(&region, signer);
        let node = &mut self.nodes.nodes[index];
        node.edit_config(|c| {
            c["signer"] = serde_json::json!({ "kind": "pkcs11", "module": MODULE, "token_label": TOKEN, "key_label": key_label, "pin_env": "HSM_PIN" });
        })
        .unwrap();
        node.set_env("SOFTHSM2_CONF", hsm.conf.to_str().unwrap());
        node.set_env("HSM_PIN", PIN);
    }
}

/// Sum of `name`'s series whose labels include every `key="value"` in `labels`.
pub async fn labelled_metric(
    node: &dvn_devnet::nodes::DvnNode,
    name: &str,
    labels: &[&str],
) -> f64 {
    let text = node.metrics().await.unwrap_or_default();
    text.lines()
        .filter(|l| l.starts_with(name) && l.as_bytes().get(name.len()) == Some(&b'{'))
        .filter(|l| labels.iter().all(|label| l.contains(label)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Runs the `dvn` binary with `args`; panics with its stderr when it fails.
pub fn dvn_cli(args: &[&str]) -> String {
    let out = std::process::Command::new(dvn_binary())
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "dvn {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A new admin API token for `operator` with `role`, made on the host (`dvn admin token create`).
pub fn new_token(config: &str, operator: &str, role: &str) -> String {
    let out = dvn_cli(&[
        "admin",
        "token",
        "create",
        "-c",
        config,
        "--operator",
        operator,
        "--role",
        role,
    ]);
    out.trim().to_string()
}

/// `dvn args…` with environment `env` added: (exit code, stdout + stderr).
pub fn dvn_run(args: &[&str], env: &[(&str, &str)]) -> (i32, String) {
    let out = std::process::Command::new(dvn_binary())
        .args(args)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

/// Starts `node`, expects it to exit non-zero by itself, and returns its log.
pub async fn refusal_log(node: &mut dvn_devnet::nodes::DvnNode) -> String {
    node.start().unwrap();
    let status = node
        .wait_exit(Duration::from_secs(60))
        .await
        .expect("the node exits by itself");
    assert!(!status.success());
    std::fs::read_to_string(&node.log_path).unwrap()
}

/// An HTTPS client to `target`'s peer listener presenting `as_region`'s certificate (from
/// the stand's certificate set): a region talking to another.
pub fn peer_http(
    node: &dvn_devnet::nodes::DvnNode,
    as_region: &str,
    target: &str,
) -> reqwest::Client {
    let files = dvn::config::TlsConfig {
        ca: node.tls_dir.join("ca.pem"),
        cert: node.tls_dir.join(format!("{as_region}.pem")),
        key: node.tls_dir.join(format!("{as_region}.key")),
    };
    reqwest::Client::builder()
        .use_preconfigured_tls(dvn::tls::client_config(&files, target).unwrap())
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap()
}

/// Waits (up to the scenario timeout) until `name` on `node` — summed over the series whose
/// labels include every `key="value"` of `labels`, or over all of them when `labels` is empty —
/// satisfies `ok`.
pub async fn metric_until(
    node: &dvn_devnet::nodes::DvnNode,
    name: &str,
    labels: &[&str],
    ok: impl Fn(f64) -> bool,
) -> bool {
    dvn_devnet::wait::eventually(crate::e2e::TIMEOUT, Duration::from_millis(100), || async {
        let value = if labels.is_empty() {
            node.metric_sum(name).await?
        } else {
            labelled_metric(node, name, labels).await
        };
        ok(value).then_some(())
    })
    .await
    .is_some()
}

/// Waits until `metric` (summed over its series) reaches `at_least` on `node`.
pub async fn metric_reaches(
    node: &dvn_devnet::nodes::DvnNode,
    metric: &str,
    at_least: f64,
) -> bool {
    metric_until(node, metric, &[], |v| v >= at_least).await
}

/// Waits until `node`'s log satisfies `ok`.
pub async fn log_until(node: &dvn_devnet::nodes::DvnNode, ok: impl Fn(&str) -> bool) -> bool {
    dvn_devnet::wait::eventually(crate::e2e::TIMEOUT, Duration::from_millis(100), || async {
        let log = std::fs::read_to_string(&node.log_path).ok()?;
        ok(&log).then_some(())
    })
    .await
    .is_some()
}

/// A tmpfs of `size_mb` mounted on a fresh directory for this test (needs root, as the test
/// script runs); unmounted when dropped.
pub struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    pub fn mount(size_mb: u64) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("dvn-small-disk-")
            .tempdir()
            .unwrap();
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size_mb}m"), "tmpfs"])
            .arg(dir.path())
            .status()
            .unwrap();
        assert!(
            status.success(),
            "mounting a tmpfs needs root (the test script runs as root)"
        );
        Self { dir }
    }

    pub fn path(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// Writes a file until the disk is full; returns its path.
    pub fn fill(&self) -> std::path::PathBuf {
        use std::io::Write;
        let path = self.path().join("filler");
        let mut file = std::fs::File::create(&path).unwrap();
        let chunk = vec![0u8; 64 * 1024];
        while file.write_all(&chunk).is_ok() {}
        let _ = file.sync_all();
        path
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

/// Moves chain A's clock to the start of the next 60 s rotation slot designated to `region`
/// (index in the sorted region list aliyun, aws, gcp).
pub async fn warp_to_slot(stand: &Stand, region: u64) {
    let now = stand.devnet.a.chain.timestamp().await.unwrap();
    let mut slot = now / 60 + 1;
    while slot % 3 != region {
        slot += 1;
    }
    stand.devnet.a.chain.set_time(slot * 60 + 1).await.unwrap();
}

/// Another DVN admin (`by`) grants or revokes `account`'s `ADMIN_ROLE` on `side`'s DVN — as an
/// admin of a live DVN can, behind the nodes' back.
pub async fn set_admin_role(
    side: &dvn_devnet::Side,
    by: alloy::primitives::Address,
    account: alloy::primitives::Address,
    grant: bool,
) {
    use dvn_lz::contracts::{ADMIN_ROLE, IDVN};
    let (dvn, zero) = (side.contracts.dvn, alloy::primitives::U256::ZERO);
    let role = ADMIN_ROLE;
    let sent = if grant {
        side.chain
            .send(by, dvn, &IDVN::grantRoleCall { role, account }, zero)
            .await
    } else {
        side.chain
            .send(by, dvn, &IDVN::revokeRoleCall { role, account }, zero)
            .await
    };
    sent.unwrap();
}

/// A node's `/ready`: its HTTP status and JSON body (None while it does not answer).
pub async fn ready_status(node: &dvn_devnet::nodes::DvnNode) -> Option<(u16, serde_json::Value)> {
    let response = reqwest::get(format!("{}/ready", node.url())).await.ok()?;
    let status = response.status().as_u16();
    Some((status, response.json().await.ok()?))
}

/// The source chain A equivocates under a verified packet: nonce 1 of a path verified on B,
/// then a reorg puts another payload at that nonce. Every running node halts the path
/// (`dvn_halted_paths` 1). Returns the packets sent (the verified one, then its replacement).
pub async fn equivocate_on_a(stand: &Stand) -> Vec<SentPacket> {
    let (src, _) = stand.devnet.sides(Direction::AToB);
    let fork = src.chain.snapshot().await.unwrap();
    let mut sent = stand
        .devnet
        .send_messages(Direction::AToB, 1)
        .await
        .unwrap();
    assert!(crate::source_truth::all_verifiable(stand, Direction::AToB, &sent).await);
    src.chain.revert(fork).await.unwrap();
    sent.extend(
        stand
            .devnet
            .send_typed_messages(Direction::AToB, 1, dvn_devnet::contracts::COUNTER_COMPOSED)
            .await
            .unwrap(),
    );
    src.chain.mine(20).await.unwrap();
    sent
}

/// `--src … --dst … --sender … --receiver …` naming the devnet's A → B counter path, as
/// `dvn path resume` and `dvn admin resume-halted` take it.
pub fn a_to_b_path_args(stand: &Stand) -> [String; 8] {
    let (src, dst) = stand.devnet.sides(Direction::AToB);
    [
        "--src".into(),
        src.eid.to_string(),
        "--dst".into(),
        dst.eid.to_string(),
        "--sender".into(),
        src.contracts.counter.to_string(),
        "--receiver".into(),
        dst.contracts.counter.to_string(),
    ]
}
