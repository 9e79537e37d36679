//! The node's view of its own health, refreshed every few seconds by one task: the store, each
//! chain's RPC quorum, both keys' HSM/KMS, the peers, the backlog per path and the submitter's
//! balance. `/ready` answers from the latest snapshot (never blocking on a slow RPC), and the
//! same numbers are exported as gauges, zero-initialised for every chain and path.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use alloy::providers::Provider;
use serde::Serialize;

use crate::chain::EvmChain;
use crate::peer::client::PeerClient;
use crate::signer::KeyHandle;
use crate::store::Store;

/// What the health snapshot reads. Borrowed from the node's parts, so health depends only on
/// the layers below it (store, chains, keys, peers), never on the pipeline.
#[derive(Debug, Clone, Copy)]
pub struct Sources<'a> {
    pub store: &'a Store,
    pub chains: &'a BTreeMap<u32, EvmChain>,
    pub signer: &'a KeyHandle,
    pub submitter: &'a KeyHandle,
    pub peers: &'a PeerClient,
    /// The largest DVN multisig quorum among the chains served.
    pub quorum: usize,
    /// SQLite: the least free space on the store's filesystem for the store to count as up
    /// (`store.min_free_mb`; 0: not checked).
    pub store_min_free_bytes: u64,
}

/// How often the snapshot is refreshed.
pub const REFRESH: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Serialize)]
pub struct ChainHealth {
    /// The RPC endpoints answered the head read with the configured agreement.
    pub up: bool,
    pub head: Option<u64>,
    /// Submitter balance in ether (None when unreadable).
    pub submitter_balance_eth: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PathBacklog {
    pub src: String,
    pub dst: String,
    /// Packets observed and not yet verified (or otherwise finished).
    pub packets: i64,
    /// Age of the oldest of them, from its source block's timestamp.
    pub oldest_age_secs: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct KeyState {
    pub up: bool,
    pub backend: &'static str,
    pub address: String,
    pub error: Option<String>,
}

/// Space on the SQLite store's filesystem.
#[derive(Debug, Clone, Serialize)]
pub struct StoreDisk {
    pub dir: String,
    pub free_bytes: u64,
    pub min_free_bytes: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Snapshot {
    pub ready: bool,
    /// The store answers and (SQLite) has room to write.
    pub store: bool,
    /// SQLite only: its filesystem's free space (a full disk fails writes while reads and
    /// pings still answer).
    pub store_disk: Option<StoreDisk>,
    pub chains: BTreeMap<String, ChainHealth>,
    pub signer: KeyState,
    pub submitter: KeyState,
    pub peers: BTreeMap<String, bool>,
    /// Peers that must answer for our signature plus theirs to reach the quorum.
    pub peers_needed: usize,
    pub backlog: Vec<PathBacklog>,
    /// Packets in the store per state.
    pub packets_by_state: BTreeMap<String, i64>,
    /// The most recently verified packet.
    pub last_verified: Option<serde_json::Value>,
    /// Paths halted by the equivocation guard (each waits for `dvn path resume`).
    pub halted_paths: Vec<serde_json::Value>,
    pub taken_at_ms: i64,
}

/// The latest snapshot, shared with the HTTP handlers.
#[derive(Debug, Default)]
pub struct HealthState(Mutex<Option<Snapshot>>);

impl HealthState {
    pub fn latest(&self) -> Option<Snapshot> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn set(&self, snapshot: Snapshot) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(snapshot);
    }
}

fn key_state(key: &crate::signer::KeyHandle) -> KeyState {
    KeyState {
        up: key.health().up(),
        backend: key.backend(),
        address: key.address().to_string(),
        error: key.health().last_error(),
    }
}

fn flag(up: bool) -> f64 {
    if up {
        1.0
    } else {
        0.0
    }
}

/// Takes one snapshot (every read bounded by the chains' RPC timeouts).
pub async fn snapshot(ctx: Sources<'_>) -> Snapshot {
    // A store that does not answer within a few seconds is down for readiness purposes, and
    // the store queries below are skipped rather than each waiting out the pool's timeout.
    let store_answers = tokio::time::timeout(Duration::from_secs(3), ctx.store.ping())
        .await
        .unwrap_or(false);
    let store_disk = ctx.store.disk_free().map(|(dir, free_bytes)| StoreDisk {
        dir: dir.display().to_string(),
        free_bytes,
        min_free_bytes: ctx.store_min_free_bytes,
    });
    let room = store_disk
        .as_ref()
        .is_none_or(|d| d.free_bytes >= d.min_free_bytes);
    if let (Some(disk), false) = (&store_disk, room) {
        tracing::warn!(
            dir = %disk.dir,
            free_bytes = disk.free_bytes,
            min_free_bytes = disk.min_free_bytes,
            "the store's disk is (nearly) full: writes will fail; not ready until space is freed (store.min_free_mb)"
        );
    }
    let store = store_answers && room;
    let mut chains = BTreeMap::new();
    for chain in ctx.chains.values() {
        let head = chain.head().await.ok();
        let balance = chain
            .any_provider()
            .get_balance(ctx.submitter.address())
            .await
            .ok()
            .map(|wei| f64::from(wei) / 1e18);
        chains.insert(
            chain.name().to_string(),
            ChainHealth {
                up: head.is_some(),
                head,
                submitter_balance_eth: balance,
            },
        );
    }
    let peers = ctx.peers.probe_health().await;
    // Our own signature counts toward the quorum; the rest must come from reachable peers.
    let quorum = ctx.quorum.max(1);
    let peers_needed = quorum.saturating_sub(1);
    let backlog = match if store_answers {
        ctx.store.backlog().await
    } else {
        Ok(Vec::new())
    } {
        Ok(rows) => rows
            .into_iter()
            .map(|(src, dst, packets, oldest)| {
                let now = u64::try_from(crate::store::now_ms() / 1000).unwrap_or(0);
                PathBacklog {
                    src: chain_name(ctx, src),
                    dst: chain_name(ctx, dst),
                    packets,
                    oldest_age_secs: now.saturating_sub(oldest),
                }
            })
            .collect(),
        Err(_) => Vec::new(),
    };
    let last_verified = if store_answers {
        ctx.store.last_verified().await.ok().flatten()
    } else {
        None
    };
    let last_verified = last_verified.map(|(guid, src, dst, nonce, at_ms)| {
        serde_json::json!({
            "guid": guid.to_string(),
            "path": format!("{} -> {}", chain_name(ctx, src), chain_name(ctx, dst)),
            "nonce": nonce,
            "at_ms": at_ms,
        })
    });
    let by_state = if store_answers {
        ctx.store.count_by_state().await.unwrap_or_default()
    } else {
        Vec::new()
    };
    let halted_paths = if store_answers {
        ctx.store.halted_paths().await.unwrap_or_default()
    } else {
        Vec::new()
    };
    let halted_paths = halted_paths
        .into_iter()
        .map(|h| {
            serde_json::json!({
                "path": format!("{} -> {}", chain_name(ctx, h.path.src_eid), chain_name(ctx, h.path.dst_eid)),
                "sender": h.path.sender.to_string(),
                "receiver": h.path.receiver.to_string(),
                "nonce": h.nonce,
                "reason": h.reason,
                "halted_at_ms": h.halted_at_ms,
            })
        })
        .collect();
    let signer = key_state(ctx.signer);
    let submitter = key_state(ctx.submitter);
    let peers_up = peers.values().filter(|up| **up).count();
    let ready = store
        && chains.values().all(|c| c.up)
        && signer.up
        && submitter.up
        && peers_up >= peers_needed;
    Snapshot {
        ready,
        store,
        store_disk,
        chains,
        signer,
        submitter,
        peers,
        peers_needed,
        backlog,
        packets_by_state: by_state.into_iter().collect(),
        last_verified,
        halted_paths,
        taken_at_ms: crate::store::now_ms(),
    }
}

fn chain_name(ctx: Sources<'_>, eid: u32) -> String {
    ctx.chains
        .get(&eid)
        .map(|c| c.name().to_string())
        .unwrap_or_else(|| eid.to_string())
}

/// Exports a snapshot as gauges. Every configured path gets a backlog series, zero when empty.
fn export(ctx: Sources<'_>, s: &Snapshot) {
    metrics::gauge!("dvn_ready").set(flag(s.ready));
    metrics::gauge!("dvn_component_up", "component" => "store").set(flag(s.store));
    if let Some(disk) = &s.store_disk {
        metrics::gauge!("dvn_store_disk_free_bytes").set(disk.free_bytes as f64);
    }
    metrics::gauge!("dvn_component_up", "component" => "signer").set(flag(s.signer.up));
    metrics::gauge!("dvn_component_up", "component" => "submitter").set(flag(s.submitter.up));
    let peers_up = s.peers.values().filter(|up| **up).count();
    metrics::gauge!("dvn_component_up", "component" => "peers")
        .set(flag(peers_up >= s.peers_needed));
    for (name, chain) in &s.chains {
        metrics::gauge!("dvn_chain_rpc_up", "chain" => name.clone()).set(flag(chain.up));
        if let Some(balance) = chain.submitter_balance_eth {
            metrics::gauge!("dvn_submitter_balance_eth", "chain" => name.clone()).set(balance);
        }
    }
    for state in crate::store::PacketState::ALL {
        let n = s.packets_by_state.get(state.as_str()).copied().unwrap_or(0);
        metrics::gauge!("dvn_packets", "state" => state.as_str()).set(n as f64);
    }
    metrics::gauge!("dvn_halted_paths").set(s.halted_paths.len() as f64);
    for (peer, up) in &s.peers {
        metrics::gauge!("dvn_peer_up", "peer" => peer.clone()).set(flag(*up));
    }
    for src in ctx.chains.values() {
        for dst in ctx.chains.values().filter(|d| d.eid() != src.eid()) {
            let (src, dst) = (src.name().to_string(), dst.name().to_string());
            let row = s.backlog.iter().find(|b| b.src == src && b.dst == dst);
            metrics::gauge!("dvn_backlog_packets", "src" => src.clone(), "dst" => dst.clone())
                .set(row.map_or(0.0, |r| r.packets as f64));
            metrics::gauge!("dvn_backlog_oldest_age_seconds", "src" => src, "dst" => dst)
                .set(row.map_or(0.0, |r| r.oldest_age_secs as f64));
        }
    }
}

/// Refreshes the snapshot into `state` until cancelled.
pub async fn run(
    ctx: Sources<'_>,
    state: &HealthState,
    cancel: &tokio_util::sync::CancellationToken,
) {
    loop {
        let snapshot = snapshot(ctx).await;
        export(ctx, &snapshot);
        state.set(snapshot);
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(REFRESH) => {}
        }
    }
}
