//! Three real `dvn` node processes — one per region — configured against a [`Devnet`].
//!
//! Each node gets its own config file, store, HTTP port on 127.0.0.1, signer key (one of the
//! DVN's three signers) and submitter account (one of the DVN admins). Processes are owned by
//! [`DvnNode`]: dropped, they are killed and reaped. Logs go to a file per node.

use std::fs::File;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use alloy::primitives::hex;
use serde_json::{json, Value};

use crate::devnet::{Devnet, Side};
use crate::wait::eventually;

/// The regions, in the order of the DVN's signers and admins.
pub const REGIONS: [&str; 3] = ["aws", "aliyun", "gcp"];

/// Which store each node uses.
#[derive(Debug, Clone)]
pub enum StoreKind {
    /// A SQLite file in the node's folder.
    Sqlite,
    /// `postgres://…/{prefix}_{region}` — the databases must exist.
    Postgres { base_url: String, prefix: String },
}

/// Node settings the tests vary.
#[derive(Debug, Clone)]
pub struct NodeOptions {
    pub store: StoreKind,
    pub takeover_after_secs: u64,
    pub poll_interval_ms: u64,
    pub tick_ms: u64,
    pub max_batch: usize,
    /// `submitter.max_in_flight`.
    pub max_in_flight: usize,
    /// `submitter.block_lead_ms` (the node's default when `None`).
    pub block_lead_ms: Option<u64>,
    /// `submitter.block_lead_margin_ms` (the node's default when `None`).
    pub block_lead_margin_ms: Option<u64>,
    /// Submit through the devnet's `DVNDecompressor`s (each node its own admin's; the devnet
    /// must have been started with `decompressors`).
    pub decompressor: bool,
    /// Give each chain its anvil's WebSocket as `ws` (the new-heads stream that wakes the
    /// watcher); without it the nodes only poll.
    pub new_heads: bool,
    /// With `new_heads`: a `ws` URL for chain A or B instead of its anvil's own (a test's
    /// dead or lying stream).
    pub ws_a: Option<String>,
    pub ws_b: Option<String>,
    /// RPC URLs for chain A and chain B (default: each anvil's own URL), and the agreement
    /// threshold (default: all of them).
    pub rpc_a: Vec<String>,
    pub rpc_b: Vec<String>,
    pub rpc_quorum: Option<usize>,
    pub replace_after_secs: u64,
    /// How often an idle node probes its keys' HSM/KMS.
    pub probe_interval_secs: u64,
    /// Start the nodes in a process group of their own (the demo: a terminal Ctrl-C must not
    /// stop them; they are killed when the set is dropped).
    pub own_process_group: bool,
}

impl Default for NodeOptions {
    fn default() -> Self {
        Self {
            store: StoreKind::Sqlite,
            takeover_after_secs: 6,
            poll_interval_ms: 200,
            tick_ms: 200,
            max_batch: 100,
            max_in_flight: 4,
            block_lead_ms: None,
            block_lead_margin_ms: None,
            decompressor: false,
            new_heads: true,
            ws_a: None,
            ws_b: None,
            rpc_a: vec![],
            rpc_b: vec![],
            rpc_quorum: None,
            replace_after_secs: 30,
            probe_interval_secs: 2,
            own_process_group: false,
        }
    }
}

/// One `dvn` process (or its configuration while stopped).
#[derive(Debug)]
pub struct DvnNode {
    pub region: String,
    /// The operations listener (`/health`, `/ready`, `/metrics`).
    pub port: u16,
    /// The peer listener (mutual TLS).
    pub peer_port: u16,
    /// The regions' CA and certificates (`ca.pem`, `REGION.pem`, `REGION.key`).
    pub tls_dir: PathBuf,
    pub config_path: PathBuf,
    pub log_path: PathBuf,
    binary: PathBuf,
    env: Vec<(String, String)>,
    own_process_group: bool,
    child: Option<Child>,
}

impl DvnNode {
    /// The environment the process gets (its keys, for a devnet node): for running the same
    /// configuration elsewhere, e.g. in a container.
    pub fn env(&self) -> &[(String, String)] {
        &self.env
    }

    /// Starts the process (no-op when running).
    pub fn start(&mut self) -> anyhow::Result<()> {
        if self.child.is_some() {
            return Ok(());
        }
        let log = File::options()
            .create(true)
            .append(true)
            .open(&self.log_path)?;
        let mut command = Command::new(&self.binary);
        if self.own_process_group {
            use std::os::unix::process::CommandExt;
            command.process_group(0);
        }
        let child = command
            .args(["run", "--config"])
            .arg(&self.config_path)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        self.child = Some(child);
        Ok(())
    }

    /// Adds an environment variable for the process (takes effect at its next start).
    pub fn set_env(&mut self, key: &str, value: &str) {
        self.env.push((key.to_string(), value.to_string()));
    }

    /// Waits up to `timeout` for the process to exit by itself; its exit status.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let child = self.child.as_mut()?;
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                self.child = None;
                return Some(status);
            }
            if tokio::time::Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The process id while running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGKILL: the crash case. Waits until the process is gone.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn is_running(&mut self) -> bool {
        match &mut self.child {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    pub fn peer_url(&self) -> String {
        format!("https://127.0.0.1:{}", self.peer_port)
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Fetches `/metrics` (None while the node is down).
    pub async fn metrics(&self) -> Option<String> {
        let response = reqwest_get(&format!("{}/metrics", self.url())).await?;
        Some(response)
    }

    /// Sum of every sample of `name` (all label sets) in `/metrics`; 0 when absent.
    pub async fn metric_sum(&self, name: &str) -> Option<f64> {
        let text = self.metrics().await?;
        Some(sum_metric(&text, name))
    }

    /// Waits until `/health` answers: with `Started::Running`, until the start-up checks are
    /// done and every listener serves (the peer port included); with `Started::Answering`, as
    /// soon as the start-up server answers.
    pub async fn wait_healthy(&mut self, timeout: Duration, until: Started) -> anyhow::Result<()> {
        let url = format!("{}/health", self.url());
        let mut exited = false;
        let ok = eventually(timeout, Duration::from_millis(50), || {
            // A node that died (bad config, port taken) is not waited for: and whatever
            // answers on its port then is not it.
            exited = exited || !self.is_running();
            let url = url.clone();
            let dead = exited;
            async move {
                match dead {
                    true => Some(false),
                    false => {
                        let body = reqwest_get(&url).await?;
                        let starting = body.contains("\"starting\"");
                        (until == Started::Answering || !starting).then_some(true)
                    }
                }
            }
        })
        .await;
        let ok = ok.filter(|healthy| *healthy);
        if ok.is_none() {
            let tail = std::fs::read_to_string(&self.log_path).unwrap_or_default();
            let tail: String = tail
                .lines()
                .rev()
                .take(20)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect::<Vec<_>>()
                .join("\n");
            anyhow::bail!(
                "node {} not healthy within {timeout:?}; log tail:\n{tail}",
                self.region
            );
        }
        Ok(())
    }
}

impl DvnNode {
    /// A shell command that starts this node the way a service manager would, outside the
    /// harness: `binary` (e.g. a release symlink) in the background with this node's
    /// environment, appending to its log, its process id written to `pidfile`. Pair it with
    /// a [`PidFileGuard`] so the process is killed when the test ends.
    pub fn detached_start_command(&self, binary: &Path, pidfile: &Path) -> String {
        let quote = |s: &str| format!("'{}'", s.replace('\'', r"'\''"));
        let env: Vec<String> = self
            .env
            .iter()
            .map(|(k, v)| format!("{k}={}", quote(v)))
            .collect();
        format!(
            "{} RUST_LOG=info {} run --config {} </dev/null >>{} 2>&1 & echo $! > {}",
            env.join(" "),
            quote(&binary.to_string_lossy()),
            quote(&self.config_path.to_string_lossy()),
            quote(&self.log_path.to_string_lossy()),
            quote(&pidfile.to_string_lossy()),
        )
    }

    /// A shell command that stops the process `detached_start_command` started (SIGTERM,
    /// then waits for it to exit).
    pub fn detached_stop_command(pidfile: &Path) -> String {
        let pidfile = pidfile.to_string_lossy();
        format!(
            "if [ -f '{pidfile}' ]; then pid=$(cat '{pidfile}'); kill $pid 2>/dev/null; \
             while kill -0 $pid 2>/dev/null; do sleep 0.1; done; rm -f '{pidfile}'; fi"
        )
    }

    /// Rewrites this node's configuration (takes effect at its next start).
    pub fn edit_config(&self, edit: impl FnOnce(&mut Value)) -> anyhow::Result<()> {
        let mut config: Value =
            serde_norway::from_str(&std::fs::read_to_string(&self.config_path)?)?;
        edit(&mut config);
        std::fs::write(&self.config_path, serde_norway::to_string(&config)?)?;
        Ok(())
    }
}

/// Kills the process whose id is in a pid file when dropped (the test's cleanup for nodes
/// started by shell commands, as `dvn restore --start` and `dvn upgrade` do).
#[derive(Debug)]
pub struct PidFileGuard(pub PathBuf);

impl PidFileGuard {
    /// The process id in the file, while it names a live process.
    pub fn pid(&self) -> Option<u32> {
        let pid: u32 = std::fs::read_to_string(&self.0).ok()?.trim().parse().ok()?;
        Path::new(&format!("/proc/{pid}")).exists().then_some(pid)
    }
}

impl Drop for PidFileGuard {
    fn drop(&mut self) {
        if let Some(pid) = self.pid() {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
        }
    }
}

impl Drop for DvnNode {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Sums all samples of a metric in Prometheus text format.
pub fn sum_metric(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.starts_with(name) && matches!(l.as_bytes().get(name.len()), Some(b'{') | Some(b' '))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// How far a started node is waited for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Started {
    /// `/health` answers (the start-up server, possibly still checking the chains).
    Answering,
    /// Start-up checks done, every listener serving.
    Running,
}

/// GET `url`, the body of a 200 answer or `None` (down, error status, timeout).
async fn reqwest_get(url: &str) -> Option<String> {
    let client = alloy::transports::http::reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .ok()?;
    let response = client.get(url).send().await.ok()?;
    if !response.status().is_success() {
        return None;
    }
    response.text().await.ok()
}

/// The three nodes.
#[derive(Debug)]
pub struct NodeSet {
    pub nodes: Vec<DvnNode>,
    pub dir: PathBuf,
}

/// A free port for a node's listener, chosen at random *below* the kernel's ephemeral range
/// (32768+ here): every anvil and client socket of the parallel tests takes ephemeral ports,
/// and one could grab a port released by `bind(0)` before the node binds it.
pub fn free_port() -> anyhow::Result<u16> {
    use std::hash::{BuildHasher, Hasher};
    for _ in 0..200 {
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_u32(std::process::id());
        let port = 20_000 + (hasher.finish() % 12_000) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    anyhow::bail!("no free port found in 20000..32000")
}

fn chain_entry(
    side: &Side,
    rpc: &[String],
    ws: Option<&String>,
    options: &NodeOptions,
    node: usize,
) -> Value {
    let rpc: Vec<String> = if rpc.is_empty() {
        vec![side.chain.rpc_url().to_string()]
    } else {
        rpc.to_vec()
    };
    let mut entry = json!({
        "name": side.chain.name,
        "eid": side.eid,
        "chain_id": side.chain.chain_id,
        "unsafe_single_rpc": rpc.len() == 1 || options.rpc_quorum == Some(1),
        "rpc": rpc,
        "rpc_quorum": options.rpc_quorum,
        "endpoint": side.contracts.endpoint.to_string(),
        "send_uln": side.contracts.send_lib.to_string(),
        "receive_uln": side.contracts.receive_lib.to_string(),
        "dvn": side.contracts.dvn.to_string(),
        "poll_interval_ms": options.poll_interval_ms,
        "rpc_timeout_ms": 5000,
        "decompressor": options
            .decompressor
            .then(|| side.contracts.decompressors.get(node))
            .flatten()
            .map(|address| json!({ "address": address.to_string() })),
    });
    // Left out without a stream (not `null`): a release before `ws` refuses the field.
    if options.new_heads {
        entry["ws"] = json!(ws.cloned().unwrap_or_else(|| side.chain.ws_url()));
    }
    entry
}

impl NodeSet {
    /// Writes the three configs into `dir` (created) without starting anything.
    pub fn configure(
        devnet: &Devnet,
        binary: &Path,
        dir: &Path,
        options: &NodeOptions,
    ) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let ports = [free_port()?, free_port()?, free_port()?];
        let peer_ports = [free_port()?, free_port()?, free_port()?];
        // Mutual TLS between the regions, with certificates from the node's own helper.
        let tls_dir = dir.join("tls");
        if !tls_dir.join("ca.pem").exists() {
            let names = REGIONS.join(",");
            let out = Command::new(binary)
                .args([
                    "certs",
                    "new",
                    "--names",
                    &names,
                    "--hosts",
                    "127.0.0.1,localhost",
                    "--dir",
                ])
                .arg(&tls_dir)
                .output()?;
            anyhow::ensure!(
                out.status.success(),
                "dvn certs new: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let mut nodes = Vec::new();
        for (i, region) in REGIONS.iter().enumerate() {
            let peers: Vec<Value> = REGIONS
                .iter()
                .enumerate()
                .filter(|(j, _)| *j != i)
                .map(|(j, name)| {
                    json!({
                        "name": name,
                        "url": format!("https://127.0.0.1:{}", peer_ports[j]),
                        "signer": devnet.signers[j].address().to_string(),
                        // Its claims count only for its own submitter account.
                        "submitter": devnet.a.roles.dvn_admins[j].to_string(),
                    })
                })
                .collect();
            let store_url = match &options.store {
                StoreKind::Sqlite => {
                    format!("sqlite://{}", dir.join(format!("{region}.db")).display())
                }
                StoreKind::Postgres { base_url, prefix } => {
                    format!("{}/{prefix}_{region}", base_url.trim_end_matches('/'))
                }
            };
            let mut config = json!({
                "node": {
                    "name": region,
                    "listen": format!("127.0.0.1:{}", ports[i]),
                    "peer_listen": format!("127.0.0.1:{}", peer_ports[i]),
                },
                "tls": {
                    "ca": tls_dir.join("ca.pem"),
                    "cert": tls_dir.join(format!("{region}.pem")),
                    "key": tls_dir.join(format!("{region}.key")),
                },
                "store": { "url": store_url },
                "chains": [
                    chain_entry(&devnet.a, &options.rpc_a, options.ws_a.as_ref(), options, i),
                    chain_entry(&devnet.b, &options.rpc_b, options.ws_b.as_ref(), options, i),
                ],
                "peers": peers,
                "signer": { "kind": "env", "var": "DVN_SIGNER_KEY", "allow_plaintext": true },
                "submitter": {
                    "key": { "kind": "env", "var": "DVN_SUBMITTER_KEY", "allow_plaintext": true },
                    "max_batch": options.max_batch,
                    "max_in_flight": options.max_in_flight,
                    "takeover_after_secs": options.takeover_after_secs,
                    "replace_after_secs": options.replace_after_secs,
                },
                "verification": { "expiration_secs": 3600, "tick_ms": options.tick_ms },
                "signing": { "probe_interval_secs": options.probe_interval_secs },
            });
            if let Some(lead) = options.block_lead_ms {
                config["submitter"]["block_lead_ms"] = serde_json::json!(lead);
            }
            if let Some(margin) = options.block_lead_margin_ms {
                config["submitter"]["block_lead_margin_ms"] = serde_json::json!(margin);
            }
            let config_path = dir.join(format!("{region}.yaml"));
            std::fs::write(&config_path, serde_norway::to_string(&config)?)?;
            let submitter = devnet.a.roles.dvn_admins[i];
            let submitter_index = devnet
                .a
                .chain
                .accounts
                .iter()
                .position(|a| *a == submitter)
                .ok_or_else(|| anyhow::anyhow!("admin account not found"))?;
            let env = vec![
                (
                    "DVN_SIGNER_KEY".to_string(),
                    hex::encode_prefixed(devnet.signers[i].to_bytes()),
                ),
                (
                    "DVN_SUBMITTER_KEY".to_string(),
                    hex::encode_prefixed(devnet.a.chain.keys[submitter_index]),
                ),
            ];
            nodes.push(DvnNode {
                region: region.to_string(),
                port: ports[i],
                peer_port: peer_ports[i],
                tls_dir: tls_dir.clone(),
                config_path,
                log_path: dir.join(format!("{region}.log")),
                binary: binary.to_path_buf(),
                env,
                own_process_group: options.own_process_group,
                child: None,
            });
        }
        Ok(Self {
            nodes,
            dir: dir.to_path_buf(),
        })
    }

    /// Adds a second replica of node `index`'s region: same region name and keys, its own
    /// port, SQLite store, config and log. Returns its index.
    pub fn add_replica(&mut self, index: usize) -> anyhow::Result<usize> {
        let original = &self.nodes[index];
        let n = self.nodes.len();
        let port = free_port()?;
        let peer_port = free_port()?;
        let config_path = self
            .dir
            .join(format!("{}-replica{n}.yaml", original.region));
        std::fs::copy(&original.config_path, &config_path)?;
        let replica = DvnNode {
            region: original.region.clone(),
            port,
            peer_port,
            tls_dir: original.tls_dir.clone(),
            config_path,
            log_path: self.dir.join(format!("{}-replica{n}.log", original.region)),
            binary: original.binary.clone(),
            env: original.env.clone(),
            own_process_group: original.own_process_group,
            child: None,
        };
        let store = self.dir.join(format!("{}-replica{n}.db", original.region));
        replica.edit_config(|c| {
            c["node"]["listen"] = json!(format!("127.0.0.1:{port}"));
            c["node"]["peer_listen"] = json!(format!("127.0.0.1:{peer_port}"));
            c["store"]["url"] = json!(format!("sqlite://{}", store.display()));
        })?;
        self.nodes.push(replica);
        Ok(n)
    }

    /// Routes every region's connections to every other region's peer listener through its
    /// own [`crate::proxy::TcpLink`], so a test can cut any direction: `links[i][j]` carries
    /// node `i`'s requests to node `j` (`None` on the diagonal). Call before starting.
    pub async fn route_peers_through_links(
        &self,
    ) -> anyhow::Result<Vec<Vec<Option<crate::proxy::TcpLink>>>> {
        let mut links = Vec::new();
        for (i, from) in self.nodes.iter().enumerate() {
            let mut row = Vec::new();
            for (j, to) in self.nodes.iter().enumerate() {
                if i == j {
                    row.push(None);
                    continue;
                }
                let link =
                    crate::proxy::TcpLink::start(([127, 0, 0, 1], to.peer_port).into()).await?;
                let url = format!("https://{}", link.addr);
                from.edit_config(|c| {
                    if let Some(peers) = c["peers"].as_array_mut() {
                        for peer in peers {
                            if peer["name"] == to.region.as_str() {
                                peer["url"] = json!(url);
                            }
                        }
                    }
                })?;
                row.push(Some(link));
            }
            links.push(row);
        }
        Ok(links)
    }

    /// Starts the nodes at `indices` and waits until they run (start-up checks done).
    pub async fn start(&mut self, indices: &[usize]) -> anyhow::Result<()> {
        self.start_until(indices, Started::Running).await
    }

    /// Starts the nodes at `indices` and waits only until their `/health` answers — for nodes
    /// whose start-up checks cannot finish yet.
    pub async fn start_answering(&mut self, indices: &[usize]) -> anyhow::Result<()> {
        self.start_until(indices, Started::Answering).await
    }

    ///
    /// Ports are picked at random when the configs are written; another test running in
    /// parallel can take one before the node binds it. Such a node exits with "Address already
    /// in use": it is moved to new ports (and its peers' configs follow) and the nodes of this
    /// call are started again, at most twice.
    async fn start_until(&mut self, indices: &[usize], until: Started) -> anyhow::Result<()> {
        for attempt in 0..3 {
            for &i in indices {
                self.nodes[i].start()?;
            }
            let mut clashed = None;
            for &i in indices {
                if let Err(e) = self.nodes[i]
                    .wait_healthy(Duration::from_secs(60), until)
                    .await
                {
                    let log = std::fs::read_to_string(&self.nodes[i].log_path).unwrap_or_default();
                    if attempt < 2 && log.contains("Address already in use") {
                        clashed = Some(i);
                        break;
                    }
                    return Err(e);
                }
            }
            let Some(i) = clashed else {
                return Ok(());
            };
            for &j in indices {
                self.nodes[j].kill();
            }
            self.move_ports(i)?;
        }
        anyhow::bail!("nodes could not get free ports")
    }

    /// Gives node `i` new ports, and points every other node's peer entry for it there.
    fn move_ports(&mut self, i: usize) -> anyhow::Result<()> {
        let (port, peer_port) = (free_port()?, free_port()?);
        let node = &mut self.nodes[i];
        let old_peer = format!("https://127.0.0.1:{}", node.peer_port);
        let new_peer = format!("https://127.0.0.1:{peer_port}");
        node.port = port;
        node.peer_port = peer_port;
        node.edit_config(|c| {
            c["node"]["listen"] = json!(format!("127.0.0.1:{port}"));
            c["node"]["peer_listen"] = json!(format!("127.0.0.1:{peer_port}"));
        })?;
        // The old log keeps the clash; the next start writes a fresh one.
        let _ = std::fs::rename(
            &node.log_path,
            node.log_path.with_extension("log.port-clash"),
        );
        for (j, other) in self.nodes.iter().enumerate() {
            if j == i {
                continue;
            }
            other.edit_config(|c| {
                if let Some(peers) = c["peers"].as_array_mut() {
                    for peer in peers {
                        if peer["url"] == old_peer.as_str() {
                            peer["url"] = json!(new_peer);
                        }
                    }
                }
            })?;
        }
        Ok(())
    }

    /// Sum of a metric over the running nodes.
    pub async fn metric_sum(&self, name: &str) -> f64 {
        let mut total = 0.0;
        for node in &self.nodes {
            total += node.metric_sum(name).await.unwrap_or(0.0);
        }
        total
    }
}

/// One pipeline stage's time per packet (`dvn_stage_seconds`), over several nodes.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct StageTiming {
    pub stage: String,
    /// Packets that reached the stage (summed over the nodes).
    pub count: u64,
    pub mean_secs: f64,
    /// Estimated from the merged cumulative buckets as Prometheus' `histogram_quantile` does
    /// (linear within a bucket; the highest finite bound when the rank falls past it).
    pub p99_secs: f64,
}

/// The pipeline's stages in order, as the node labels them.
pub const STAGES: [&str; 5] = ["observe", "sign", "quorum", "send", "mine"];

/// Per-stage timings from several nodes' `/metrics` texts (stages no node reached are left
/// out).
pub fn stage_timings(texts: &[String]) -> Vec<StageTiming> {
    histogram_by_stage(texts, "dvn_stage_seconds", &STAGES)
}

/// The stage loops' step durations (`dvn_stage_step_seconds`), merged over the nodes.
pub fn step_timings(texts: &[String]) -> Vec<StageTiming> {
    histogram_by_stage(
        texts,
        "dvn_stage_step_seconds",
        &["watch", "sign", "submit"],
    )
}

/// Mean and p99 of histogram `metric` per `stage` label value, the nodes' buckets merged.
fn histogram_by_stage(texts: &[String], metric: &str, stages: &[&str]) -> Vec<StageTiming> {
    stages
        .iter()
        .filter_map(|stage| {
            let label = format!("stage=\"{stage}\"");
            let of = |suffix: &str| {
                let name = format!("{metric}_{suffix}");
                texts
                    .iter()
                    .flat_map(|t| t.lines())
                    .filter(|l| l.starts_with(&format!("{name}{{")) && l.contains(&label))
                    .collect::<Vec<_>>()
            };
            let value = |line: &str| line.rsplit(' ').next()?.parse::<f64>().ok();
            let count: f64 = of("count").into_iter().filter_map(value).sum();
            if count < 1.0 {
                return None;
            }
            let sum: f64 = of("sum").into_iter().filter_map(value).sum();
            // Merged cumulative buckets: upper bound → count over every node.
            let mut buckets: Vec<(f64, f64)> = Vec::new();
            for line in of("bucket") {
                let Some(le) = line
                    .split("le=\"")
                    .nth(1)
                    .and_then(|rest| rest.split('"').next())
                    .and_then(|le| le.parse::<f64>().ok())
                else {
                    continue;
                };
                let Some(n) = value(line) else { continue };
                match buckets.iter_mut().find(|(bound, _)| *bound == le) {
                    Some((_, total)) => *total += n,
                    None => buckets.push((le, n)),
                }
            }
            buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
            Some(StageTiming {
                stage: stage.to_string(),
                count: count as u64,
                mean_secs: sum / count,
                p99_secs: quantile_of_buckets(&buckets, count, 0.99),
            })
        })
        .collect()
}

/// The `q`-quantile of `total` observations in cumulative `(upper bound, count)` buckets
/// (sorted, `+Inf` included as an infinite bound).
fn quantile_of_buckets(buckets: &[(f64, f64)], total: f64, q: f64) -> f64 {
    let rank = q * total;
    let mut below = (0.0, 0.0);
    for &(bound, count) in buckets {
        if count >= rank {
            if bound.is_infinite() {
                return below.0;
            }
            let within = (count - below.1).max(f64::MIN_POSITIVE);
            return below.0 + (bound - below.0) * (rank - below.1) / within;
        }
        below = (bound, count);
    }
    below.0
}

#[cfg(test)]
mod stage_tests {
    use super::*;

    #[test]
    fn stage_timings_merge_nodes_buckets() {
        let node = |sum: f64, count: u64, b05: u64, b1: u64| {
            format!(
                "dvn_stage_seconds_bucket{{stage=\"send\",le=\"0.5\"}} {b05}\n\
                 dvn_stage_seconds_bucket{{stage=\"send\",le=\"1\"}} {b1}\n\
                 dvn_stage_seconds_bucket{{stage=\"send\",le=\"+Inf\"}} {count}\n\
                 dvn_stage_seconds_sum{{stage=\"send\"}} {sum}\n\
                 dvn_stage_seconds_count{{stage=\"send\"}} {count}\n\
                 dvn_stage_seconds_count{{stage=\"mine\"}} 0\n"
            )
        };
        // 100 packets: 50 under 0.5 s, 50 between 0.5 and 1 s, over two nodes.
        let timings = stage_timings(&[node(20.0, 60, 40, 60), node(18.0, 40, 10, 40)]);
        assert_eq!(timings.len(), 1, "{timings:?}");
        let send = &timings[0];
        assert_eq!((send.stage.as_str(), send.count), ("send", 100));
        assert!((send.mean_secs - 0.38).abs() < 1e-9);
        // Rank 99 of 100: 49/50 of the way through the (0.5, 1] bucket.
        assert!((send.p99_secs - 0.99).abs() < 1e-9, "{}", send.p99_secs);
        // Past the last finite bound: that bound.
        assert_eq!(
            quantile_of_buckets(&[(1.0, 1.0), (f64::INFINITY, 10.0)], 10.0, 0.99),
            1.0
        );
    }
}
