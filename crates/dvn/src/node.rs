//! Builds the node from its configuration, checks it against the chains, and supervises every
//! task: the HTTP listener, one watcher per source chain, the signing stage, and one
//! submitter per destination. Any task ending early cancels the rest and the node exits
//! non-zero; Ctrl-C / SIGTERM cancel them all and the node exits cleanly.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use alloy::primitives::Address;
use alloy::sol_types::SolEvent;
use anyhow::Context as _;
use dvn_lz::contracts::{IEndpointV2, ADMIN_ROLE, IDVN};
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::chain::EvmChain;
use crate::config::Config;
use crate::lease::Lease;
use crate::peer::client::PeerClient;
use crate::pipeline::sign::SignStage;
use crate::pipeline::submit::SubmitStage;
use crate::pipeline::watch::Watcher;
use crate::pipeline::{execute, run_stage, Context, DvnInfo, Wakeups};
use crate::signer::KeyHandle;
use crate::store::Store;

/// A startup check that failed: the node refuses to run and says expected vs actual.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("the signer key's address is {actual}, but node.signer_address says {expected}")]
    WrongSignerKey { expected: Address, actual: Address },
    #[error("chain {chain}: expected chain id {expected}, the RPC endpoints report {actual}")]
    ChainId {
        chain: String,
        expected: u64,
        actual: u64,
    },
    #[error("chain {chain}: our signer {signer} is not in the DVN {dvn}'s signer set {actual:?}")]
    NotASigner {
        chain: String,
        signer: Address,
        dvn: Address,
        actual: Vec<Address>,
    },
    #[error("chain {chain}: {caller} (the submitter, or the decompressor it sends through) lacks ADMIN_ROLE on DVN {dvn}")]
    NotAdmin {
        chain: String,
        caller: Address,
        dvn: Address,
    },
    #[error("chain {chain}: the decompressor {decompressor} {problem}")]
    Decompressor {
        chain: String,
        decompressor: Address,
        problem: String,
    },
    #[error("chain {chain}: DVN {dvn} reports quorum {quorum} with {signers} signers")]
    BadQuorum {
        chain: String,
        dvn: Address,
        quorum: u64,
        signers: usize,
    },
    #[error("chain {chain}: the endpoint {endpoint} reports eid {actual}, but the config says {expected}")]
    WrongEid {
        chain: String,
        endpoint: Address,
        expected: u32,
        actual: u32,
    },
    #[error(
        "chain {chain}: {what} {library} is not a library registered on the endpoint {endpoint}"
    )]
    LibraryNotRegistered {
        chain: String,
        what: &'static str,
        library: Address,
        endpoint: Address,
    },
    #[error("chain {chain}: {what} {address} has no contract code")]
    NoCode {
        chain: String,
        what: &'static str,
        address: Address,
    },
    #[error(
        "chain {chain}: the RPC endpoints cannot answer for block {block} (start_block - 1), where the \
         nonce-continuity base is read: move start_block into their state window (a few hundred \
         blocks behind the head on ordinary nodes) or use archive endpoints ({detail})"
    )]
    StateWindow {
        chain: String,
        block: u64,
        detail: String,
    },
    #[error("chain {chain}: peer {peer}'s signer {signer} is not in the DVN's signer set")]
    PeerNotASigner {
        chain: String,
        peer: String,
        signer: Address,
    },
}

/// What the config points at on one chain: every contract has code, the endpoint is the
/// configured eid's, both ULNs are libraries registered on it, and the state the watcher reads
/// at `start_block − 1` is still served.
async fn check_contracts(chain: &EvmChain) -> anyhow::Result<()> {
    let name = chain.name().to_string();
    let c = &chain.config;
    for (what, address) in [
        ("endpoint", c.endpoint),
        ("send_uln", c.send_uln),
        ("receive_uln", c.receive_uln),
        ("dvn", c.dvn),
    ] {
        if chain.code(address).await?.is_empty() {
            return Err(StartupError::NoCode {
                chain: name,
                what,
                address,
            }
            .into());
        }
    }
    let eid = chain
        .call(c.endpoint, &IEndpointV2::eidCall {}, None)
        .await?;
    if eid != c.eid {
        return Err(StartupError::WrongEid {
            chain: name,
            endpoint: c.endpoint,
            expected: c.eid,
            actual: eid,
        }
        .into());
    }
    for (what, library) in [("send_uln", c.send_uln), ("receive_uln", c.receive_uln)] {
        let registered = chain
            .call(
                c.endpoint,
                &IEndpointV2::isRegisteredLibraryCall { lib: library },
                None,
            )
            .await?;
        if !registered {
            return Err(StartupError::LibraryNotRegistered {
                chain: name,
                what,
                library,
                endpoint: c.endpoint,
            }
            .into());
        }
    }
    if c.start_block > 0 {
        let block = c.start_block - 1;
        let probe = IEndpointV2::outboundNonceCall {
            sender: Address::ZERO,
            dstEid: c.eid,
            receiver: alloy::primitives::B256::ZERO,
        };
        if let Err(e) = chain.call(c.endpoint, &probe, Some(block)).await {
            return Err(StartupError::StateWindow {
                chain: name,
                block,
                detail: e.to_string(),
            }
            .into());
        }
    }
    Ok(())
}

/// Reads our DVN on every chain and checks the configuration against it.
pub async fn self_check(
    config: &Config,
    chains: &BTreeMap<u32, EvmChain>,
    signer: Address,
    signer_next: Option<Address>,
    submitter: Address,
) -> anyhow::Result<BTreeMap<u32, DvnInfo>> {
    let mut dvns = BTreeMap::new();
    for chain in chains.values() {
        let name = chain.name().to_string();
        let actual = chain.chain_id().await?;
        if actual != chain.config.chain_id {
            return Err(StartupError::ChainId {
                chain: name,
                expected: chain.config.chain_id,
                actual,
            }
            .into());
        }
        check_contracts(chain).await?;
        let dvn = chain.config.dvn;
        let signers = chain.call(dvn, &IDVN::getSignersCall {}, None).await?;
        let quorum = chain.call(dvn, &IDVN::quorumCall {}, None).await?;
        let vid = chain.call(dvn, &IDVN::vidCall {}, None).await?;
        // Mid-rotation a chain may already have the next key in place of the current one.
        let ours = signers.contains(&signer) || signer_next.is_some_and(|n| signers.contains(&n));
        if !ours {
            return Err(StartupError::NotASigner {
                chain: name,
                signer,
                dvn,
                actual: signers,
            }
            .into());
        }
        if quorum == 0 || quorum as usize > signers.len() {
            return Err(StartupError::BadQuorum {
                chain: name,
                dvn,
                quorum,
                signers: signers.len(),
            }
            .into());
        }
        if let Some(problem) = execute::check_decompressor(chain, dvn, vid, submitter).await? {
            let decompressor = execute::caller(&chain.config, submitter);
            return Err(StartupError::Decompressor {
                chain: name,
                decompressor,
                problem,
            }
            .into());
        }
        // The account DVN.execute sees: the submitter, or the decompressor it sends through.
        let caller = execute::caller(&chain.config, submitter);
        if !chain
            .call(
                dvn,
                &IDVN::hasRoleCall {
                    role: ADMIN_ROLE,
                    account: caller,
                },
                None,
            )
            .await?
        {
            return Err(StartupError::NotAdmin {
                chain: name,
                caller,
                dvn,
            }
            .into());
        }
        for peer in &config.peers {
            if !signers.contains(&peer.signer) {
                return Err(StartupError::PeerNotASigner {
                    chain: name,
                    peer: peer.name.clone(),
                    signer: peer.signer,
                }
                .into());
            }
        }
        tracing::info!(chain = %name, %dvn, vid, quorum, signers = signers.len(), "DVN checked");
        dvns.insert(
            chain.eid(),
            DvnInfo {
                address: dvn,
                signers,
                quorum: usize::try_from(quorum)?,
                vid,
                submitter_is_admin: true,
            },
        );
    }
    Ok(dvns)
}

/// Keeps both keys' health current while idle: a key not used successfully within the probe
/// interval signs the health digest. A failing HSM/KMS shows on `/ready` and `dvn_signer_up`
/// within one interval; the pipeline keeps watching and retries signing with backoff, and
/// resumes by itself when the key answers again.
async fn probe_keys(ctx: &Context) {
    let interval = Duration::from_secs(ctx.config.signing.probe_interval_secs);
    loop {
        for key in [
            Some(&ctx.signer),
            ctx.signer_next.as_ref(),
            Some(&ctx.submitter),
        ]
        .into_iter()
        .flatten()
        {
            key.probe(interval).await;
        }
        tokio::select! {
            _ = ctx.cancel.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
    }
}

/// Deletes finished packets past `store.retention_days`, hourly: per-packet cost must not
/// grow with history.
async fn prune_history(ctx: &Context) {
    let days = ctx.config.store.retention_days;
    if days == 0 {
        return ctx.cancel.cancelled().await;
    }
    loop {
        let keep_ms = i64::try_from(days.saturating_mul(86_400_000)).unwrap_or(i64::MAX);
        let before = crate::store::now_ms().saturating_sub(keep_ms);
        match ctx.store.prune(before).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(packets = n, days, "pruned finished packets past retention"),
            Err(e) => tracing::warn!("pruning past retention failed: {e}"),
        }
        tokio::select! {
            _ = ctx.cancel.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(3_600)) => {}
        }
    }
}

/// How often an endpoint that keeps disagreeing with the agreed answers gets an audit record
/// (the first disagreement is recorded within [`OUTVOTED_POLL`]).
const OUTVOTED_REPORT_EVERY: Duration = Duration::from_secs(3_600);
const OUTVOTED_POLL: Duration = Duration::from_secs(5);

/// Writes `safety.endpoint_outvoted` audit records: an RPC endpoint that answered differently
/// from the agreed answer is lying or broken, and the operator's security review must see it
/// (the metric and alert show it live; the audit log keeps it). One record when it starts,
/// then at most one per endpoint per [`OUTVOTED_REPORT_EVERY`] summing what happened since.
async fn audit_outvoted_endpoints(ctx: &Context) {
    loop {
        tokio::select! {
            _ = ctx.cancel.cancelled() => return,
            _ = tokio::time::sleep(OUTVOTED_POLL) => {}
        }
        for chain in ctx.chains.values() {
            for report in chain.take_outvoted(OUTVOTED_REPORT_EVERY) {
                let target = format!("chain:{}/endpoint:{}", chain.name(), report.endpoint);
                let params = serde_json::to_value(&report).unwrap_or_default();
                ctx.store
                    .audit_node_event("safety.endpoint_outvoted", &target, params)
                    .await;
            }
        }
    }
}

/// How often the DVNs' signer sets, quorums and our submitter's `ADMIN_ROLE` are re-read
/// in full (and at once after an `execute` failed its signature check or reverted).
const SIGNER_SET_REFRESH: Duration = Duration::from_secs(30);

/// How often each DVN's `UpdateSigner` / `UpdateQuorum` / `RoleGranted` / `RoleRevoked` events
/// are looked for; one seen means a re-read now rather than at the next full refresh.
const SIGNER_EVENTS_POLL: Duration = Duration::from_secs(3);

/// Most blocks one look for those events covers (a longer gap is left to the full re-read).
const SIGNER_EVENTS_SPAN: u64 = 5_000;

/// Follows each destination DVN's on-chain signer set and quorum: they change by the DVN's own
/// multisig (`setSigner`, `setQuorum`), and a node that kept the old ones would pack params the
/// contract silently skips. Driven by the DVN's events, with a full re-read every
/// [`SIGNER_SET_REFRESH`] in case a provider missed one. Our own signer and every peer's are
/// re-validated against the new set (`dvn_signer_in_set`, a warning naming whoever left it).
async fn follow_signer_sets(ctx: &Context) {
    let mut next_block: HashMap<u32, u64> = HashMap::new();
    let mut last_full = tokio::time::Instant::now();
    loop {
        let woken = tokio::select! {
            _ = ctx.cancel.cancelled() => return,
            _ = tokio::time::sleep(SIGNER_EVENTS_POLL) => false,
            _ = ctx.wake.signers.notified() => true,
        };
        let full = woken || last_full.elapsed() >= SIGNER_SET_REFRESH;
        if full {
            last_full = tokio::time::Instant::now();
        }
        for chain in ctx.chains.values() {
            let changed = signer_events_seen(ctx, chain, &mut next_block).await;
            if !(full || changed) {
                continue;
            }
            if let Err(e) = refresh_signer_set(ctx, chain).await {
                tracing::warn!(
                    chain = chain.name(),
                    "could not re-read the DVN signer set: {e:#}"
                );
            }
        }
    }
}

/// Whether our DVN on `chain` emitted a signer-set, quorum or role event since the last look
/// (none is looked for before the node started: the start-up check read the state).
async fn signer_events_seen(
    ctx: &Context,
    chain: &EvmChain,
    next_block: &mut HashMap<u32, u64>,
) -> bool {
    let Ok(dvn) = ctx.dvn(chain.eid()) else {
        return false;
    };
    let Ok(head) = chain.head().await else {
        return false;
    };
    let from = *next_block.entry(chain.eid()).or_insert(head + 1);
    if from > head {
        return false;
    }
    let from = from.max(head.saturating_sub(SIGNER_EVENTS_SPAN));
    let topics = [
        IDVN::UpdateSigner::SIGNATURE_HASH,
        IDVN::UpdateQuorum::SIGNATURE_HASH,
        IDVN::RoleGranted::SIGNATURE_HASH,
        IDVN::RoleRevoked::SIGNATURE_HASH,
    ];
    match chain.logs(from, head, &[dvn.address], &topics).await {
        Ok(logs) => {
            next_block.insert(chain.eid(), head + 1);
            if !logs.is_empty() {
                tracing::info!(
                    chain = chain.name(),
                    events = logs.len(),
                    "the DVN's signer set, quorum or roles changed: re-reading them"
                );
            }
            !logs.is_empty()
        }
        Err(e) => {
            tracing::debug!(
                chain = chain.name(),
                "signer events not read this time: {e}"
            );
            false
        }
    }
}

async fn refresh_signer_set(ctx: &Context, chain: &EvmChain) -> anyhow::Result<()> {
    let known = ctx.dvn(chain.eid())?;
    let signers = chain
        .call(known.address, &IDVN::getSignersCall {}, None)
        .await?;
    let quorum = chain
        .call(known.address, &IDVN::quorumCall {}, None)
        .await?;
    let quorum = usize::try_from(quorum)?;
    anyhow::ensure!(
        quorum >= 1 && quorum <= signers.len(),
        "the DVN reports quorum {quorum} with {} signers: keeping the previous set",
        signers.len()
    );
    let submitter_is_admin =
        execute::may_execute(chain, known.address, ctx.submitter.address()).await?;
    metrics::gauge!("dvn_submitter_is_admin", "chain" => chain.name().to_string())
        .set(if submitter_is_admin { 1.0 } else { 0.0 });
    if submitter_is_admin != known.submitter_is_admin {
        if submitter_is_admin {
            tracing::warn!(chain = chain.name(), submitter = %ctx.submitter.address(), "our submitter holds ADMIN_ROLE on the DVN again: submitting there again");
        } else {
            tracing::error!(chain = chain.name(), submitter = %ctx.submitter.address(), "our submitter lost ADMIN_ROLE on the DVN (revoked by another admin?): not submitting there, the other regions take our turns; nothing is retried away");
        }
    }
    let fresh = DvnInfo {
        signers,
        quorum,
        submitter_is_admin,
        ..known.clone()
    };
    let before = ctx.signing_key(chain.eid()).address();
    let ours = fresh
        .signers
        .contains(&ctx.signing_key_for(&fresh).address());
    metrics::gauge!("dvn_signer_in_set", "chain" => chain.name().to_string()).set(if ours {
        1.0
    } else {
        0.0
    });
    if (&fresh.signers, fresh.quorum) == (&known.signers, known.quorum) {
        ctx.set_dvn(chain.eid(), fresh);
        return Ok(());
    }
    tracing::warn!(
        chain = chain.name(),
        old_quorum = known.quorum,
        new_quorum = fresh.quorum,
        old_signers = ?known.signers,
        new_signers = ?fresh.signers,
        "the DVN's signer set or quorum changed on chain: following it"
    );
    if !ours {
        tracing::error!(chain = chain.name(), signer = %ctx.signing_key_for(&fresh).address(), "our signer is no longer in the DVN's signer set: our signatures no longer count there");
    }
    for peer in &ctx.config.peers {
        if !fresh.signers.contains(&peer.signer) {
            tracing::warn!(chain = chain.name(), peer = %peer.name, signer = %peer.signer, "a peer's signer is no longer in the DVN's signer set");
        }
    }
    ctx.set_dvn(chain.eid(), fresh);
    let now = ctx.signing_key(chain.eid()).address();
    if now != before {
        tracing::warn!(chain = chain.name(), old = %before, new = %now, "signer rotated on chain: signing there with the new key from now on");
        ctx.store
            .audit_node_event(
                "keys.rotation_switched",
                &format!("chain:{}", chain.name()),
                serde_json::json!({ "old": before, "new": now }),
            )
            .await;
        // Packets signed with the old key and not yet verified are signed again.
        ctx.wake.sign.notify_waiters();
    }
    ctx.wake.submit.notify_waiters();
    Ok(())
}

/// Runs `attempt` until it succeeds, a failure that `transient` does not excuse, or
/// cancellation (`None`); transient failures are logged and shown as the not-ready reason
/// ("`what` yet: error") and retried with backoff (1 s doubling to 30 s).
async fn until_reachable<T, E, F, Fut>(
    what: &str,
    reason: &std::sync::Mutex<String>,
    cancel: &CancellationToken,
    transient: impl Fn(&E) -> bool,
    mut attempt: F,
) -> anyhow::Result<Option<T>>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
    E: Into<anyhow::Error>,
{
    *reason.lock().unwrap_or_else(|e| e.into_inner()) = format!("{what}: trying");
    let mut backoff = Duration::from_secs(1);
    loop {
        match attempt().await {
            Ok(value) => return Ok(Some(value)),
            Err(e) if transient(&e) => {
                let e: anyhow::Error = e.into();
                let text = format!("{what} yet: {e:#}");
                tracing::warn!(retry_in = ?backoff, "{text}");
                *reason.lock().unwrap_or_else(|e| e.into_inner()) = text;
                tokio::select! {
                    _ = cancel.cancelled() => return Ok(None),
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// A store that does not answer yet (refused, timed out, a server still starting) rather than
/// one that is wrong (bad URL, failed migration, refused credentials).
fn store_unreachable(e: &crate::store::StoreError) -> bool {
    match e {
        crate::store::StoreError::Database(e) => match e {
            sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::Tls(_) => true,
            // PostgreSQL `cannot_connect_now`: starting up or shutting down.
            sqlx::Error::Database(db) => db.code().as_deref() == Some("57P03"),
            _ => false,
        },
        _ => false,
    }
}

/// A chain read that failed for the endpoints' sake, not a mismatch found.
fn chain_unreachable(e: &anyhow::Error) -> bool {
    e.downcast_ref::<crate::chain::ChainError>().is_some()
}

/// A listening socket bound once for the life of the process. The start-up server and the
/// running node each accept on their own handle of it, so the port is never released between
/// them (a rebind could lose it to another process).
struct HeldSocket(std::net::TcpListener);

impl HeldSocket {
    fn bind(addr: std::net::SocketAddr) -> anyhow::Result<Self> {
        let socket = std::net::TcpListener::bind(addr).with_context(|| format!("bind {addr}"))?;
        socket.set_nonblocking(true)?;
        Ok(Self(socket))
    }

    /// A tokio listener on the held socket (a duplicated descriptor: dropping it keeps the port).
    fn listener(&self) -> anyhow::Result<tokio::net::TcpListener> {
        Ok(tokio::net::TcpListener::from_std(self.0.try_clone()?)?)
    }
}

/// Runs the node until cancelled (clean exit) or until a task fails (error).
pub async fn run(
    config: Config,
    config_path: Option<std::path::PathBuf>,
    metrics: PrometheusHandle,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    let signer = KeyHandle::load(&config.signer, "signer", &config.signing)
        .await
        .context("signer key")?;
    let submitter = KeyHandle::load(&config.submitter.key, "submitter", &config.signing)
        .await
        .context("submitter key")?;
    let signer_next = match &config.signer_next {
        Some(key) => {
            let next = KeyHandle::load(key, "signer_next", &config.signing)
                .await
                .context("signer_next key")?;
            anyhow::ensure!(
                next.address() != signer.address(),
                "signer_next is the same key as signer ({})",
                signer.address()
            );
            tracing::info!(signer = %signer.address(), signer_next = %next.address(), "rotation key loaded: it signs on each chain whose DVN has replaced the signer with it");
            Some(next)
        }
        None => None,
    };
    if let Some(expected) = config.node.signer_address {
        if expected != signer.address() {
            return Err(StartupError::WrongSignerKey {
                expected,
                actual: signer.address(),
            }
            .into());
        }
    }
    let chains = config
        .chains
        .iter()
        .map(|c| Ok((c.eid, EvmChain::new(c)?)))
        .collect::<anyhow::Result<BTreeMap<_, _>>>()?;
    // Every port is taken before anything answers: a port in use refuses the start at once,
    // and nothing can take a port between the start-up checks and the run.
    let ops_socket = HeldSocket::bind(config.node.listen).context("operations listener")?;
    let peer_socket = match config.node.peer_listen {
        Some(addr) => Some(HeldSocket::bind(addr).context("peer listener")?),
        None => None,
    };
    let admin_socket = match config.admin.listen {
        Some(addr) => Some(HeldSocket::bind(addr).context("admin listener")?),
        None => None,
    };
    // Serve /health, /ready and /metrics while the store, Redis and the chains are reached
    // and checked: with any of them not answering yet (a container stack starting in any
    // order, an RPC outage) the node stays up, not ready, and retries — an exit would loop
    // under a container or systemd restart policy. A definite mismatch (wrong chain, not a
    // signer, a bad store URL, …) still refuses to start.
    let reason = Arc::new(std::sync::Mutex::new("starting".to_string()));
    let boot_cancel = CancellationToken::new();
    let boot = {
        let listener = ops_socket.listener()?;
        let app = crate::api::boot_router(
            config.node.name.clone(),
            Arc::clone(&reason),
            metrics.clone(),
        );
        let stop = boot_cancel.clone();
        tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(stop.cancelled_owned())
                .await
        })
    };
    let booted = async {
        let statement_timeout = Duration::from_millis(config.store.statement_timeout_ms);
        let Some(store) = until_reachable(
            "start-up cannot reach the store",
            &reason,
            &cancel,
            store_unreachable,
            || Store::connect_with(&config.store.url, statement_timeout),
        )
        .await?
        else {
            return Ok(None);
        };
        let lease = match &config.redis {
            Some(redis) => {
                let ttl = Duration::from_millis(redis.lease_ttl_ms);
                // Every error of an established URL is a connection error: retried.
                match until_reachable(
                    "start-up cannot reach Redis",
                    &reason,
                    &cancel,
                    |_| true,
                    || Lease::connect(&redis.url, &config.node.name, ttl),
                )
                .await?
                {
                    Some(lease) => Some(lease),
                    None => return Ok(None),
                }
            }
            None => None,
        };
        let next = signer_next.as_ref().map(KeyHandle::address);
        let dvns = until_reachable(
            "start-up check cannot read the chains",
            &reason,
            &cancel,
            chain_unreachable,
            || {
                self_check(
                    &config,
                    &chains,
                    signer.address(),
                    next,
                    submitter.address(),
                )
            },
        )
        .await?;
        anyhow::Ok(dvns.map(|dvns| (store, lease, dvns)))
    }
    .await;
    boot_cancel.cancel();
    let _ = boot.await;
    let Some((store, lease, dvns)) = booted? else {
        return Ok(());
    };
    let peers = PeerClient::new(&config.peers, config.tls.as_ref()).context("peer TLS")?;
    // Loaded before anything listens: a bad certificate file refuses the start.
    let peer_tls = match &config.tls {
        Some(files) => Some(Arc::new(
            crate::tls::Reloading::new(files, crate::tls::server_config).context("peer TLS")?,
        )),
        None => None,
    };
    let admin_tls = match &config.admin.tls {
        Some(files) => Some(Arc::new(
            crate::tls::Reloading::new(files, crate::tls::server_config).context("admin TLS")?,
        )),
        None => None,
    };
    crate::telemetry::zero_init(config.chains.iter().map(|c| c.name.as_str()));
    for chain in chains.values() {
        chain.zero_init_metrics();
    }
    let listen = config.node.listen;
    let governor = config.governor.clone();
    let reader = store.reader().await.context("store reader")?;
    let signature_writer = crate::store::SignatureWriter::start(store.clone());
    let ctx = Arc::new(Context {
        reader,
        signature_writer,
        early_signatures: Default::default(),
        config,
        store,
        chains,
        dvns: std::sync::RwLock::new(dvns),
        signer,
        signer_next,
        submitter,
        peers,
        lease: lease.clone(),
        wake: Wakeups::default(),
        cancel: cancel.clone(),
        health: Default::default(),
        governor: std::sync::RwLock::new(governor),
        config_path,
    });
    tracing::info!(node = %ctx.config.node.name, signer = %ctx.signer.address(), submitter = %ctx.submitter.address(), "starting");
    ctx.store
        .audit_node_event(
            "node.start",
            &ctx.config.node.name,
            serde_json::json!({
                "version": env!("CARGO_PKG_VERSION"),
                "config_sha256": ctx.config.digest(),
                "signer": ctx.signer.address(),
                "submitter": ctx.submitter.address(),
            }),
        )
        .await;

    let mut tasks = JoinSet::new();
    if let Some(lease) = lease {
        let lease_cancel = cancel.clone();
        tasks.spawn(async move {
            lease.run(lease_cancel).await;
            Ok("lease")
        });
    }
    let listener = ops_socket.listener()?;
    tracing::info!(%listen, "operations listener");
    let mut app = crate::api::ops_router(Arc::clone(&ctx), metrics, admin_tls.is_none());
    if let (Some(socket), Some(tls)) = (admin_socket, admin_tls) {
        let admin_listener = socket.listener()?;
        let admin_listen = ctx.config.admin.listen;
        tracing::info!(?admin_listen, "admin listener (mutual TLS)");
        for reason in crate::peer::listener::REFUSALS {
            metrics::counter!("dvn_admin_tls_refused_total", "reason" => *reason).increment(0);
        }
        let clients = ctx.config.admin.clients.clone();
        let admin_api = crate::api::admin_router(Arc::clone(&ctx));
        let admin_cancel = cancel.clone();
        tasks.spawn(async move {
            crate::peer::listener::serve(
                admin_listener,
                tls,
                clients,
                admin_api,
                (
                    crate::peer::listener::Side::Admin,
                    crate::peer::listener::Limits::admin(),
                ),
                admin_cancel,
            )
            .await?;
            Ok::<_, anyhow::Error>("admin listener")
        });
    }
    let peer_api = crate::api::peer_router(Arc::clone(&ctx));
    let peer_listen = ctx.config.node.peer_listen;
    match (peer_socket.zip(peer_listen), peer_tls) {
        (Some((peer_socket, peer_listen)), Some(tls)) => {
            let peer_listener = peer_socket.listener()?;
            tracing::info!(%peer_listen, "peer listener (mutual TLS)");
            let names = ctx.config.peers.iter().map(|p| p.name.clone()).collect();
            let limits = crate::peer::listener::Limits::default();
            let peer_cancel = cancel.clone();
            tasks.spawn(async move {
                crate::peer::listener::serve(
                    peer_listener,
                    tls,
                    names,
                    peer_api,
                    (crate::peer::listener::Side::Peers, limits),
                    peer_cancel,
                )
                .await?;
                Ok::<_, anyhow::Error>("peer listener")
            });
        }
        // Plain HTTP (devnets with unsafe_plaintext_peers): on its own port, or beside the
        // operations routes.
        (Some((peer_socket, peer_listen)), None) => {
            let peer_listener = peer_socket.listener()?;
            tracing::warn!(%peer_listen, "peer listener in PLAIN HTTP (unsafe_plaintext_peers)");
            let peer_cancel = cancel.clone();
            tasks.spawn(async move {
                axum::serve(peer_listener, peer_api)
                    .with_graceful_shutdown(peer_cancel.cancelled_owned())
                    .await?;
                Ok::<_, anyhow::Error>("peer listener")
            });
        }
        (None, _) => {
            tracing::warn!(
                "peer API on the operations listener in PLAIN HTTP (unsafe_plaintext_peers)"
            );
            app = app.merge(peer_api);
        }
    }
    let http_cancel = cancel.clone();
    tasks.spawn(async move {
        // The admin API records each caller's address.
        let app = app.into_make_service_with_connect_info::<std::net::SocketAddr>();
        axum::serve(listener, app)
            .with_graceful_shutdown(http_cancel.cancelled_owned())
            .await?;
        Ok::<_, anyhow::Error>("http")
    });
    for (&eid, chain) in &ctx.chains {
        if let Some(url) = chain.config.ws.clone() {
            let (name, heads) = (chain.name().to_string(), Arc::clone(&chain.new_heads));
            let cancel = ctx.cancel.clone();
            tasks.spawn(async move {
                crate::heads::follow(name, url, heads, cancel).await;
                Ok("new heads")
            });
        }
        let watcher = Watcher::new(Arc::clone(&ctx), eid);
        let c = Arc::clone(&ctx);
        let new_heads = Arc::clone(&chain.new_heads);
        tasks.spawn(async move {
            run_stage(Arc::clone(&c), "watch", Some(new_heads.wake()), watcher).await;
            Ok("watch")
        });
        let submitter = SubmitStage::new(Arc::clone(&ctx), eid);
        let c = Arc::clone(&ctx);
        tasks.spawn(async move {
            run_stage(Arc::clone(&c), "submit", Some(&c.wake.submit), submitter).await;
            Ok("submit")
        });
    }
    let c = Arc::clone(&ctx);
    tasks.spawn(async move {
        probe_keys(&c).await;
        Ok("key probe")
    });
    let c = Arc::clone(&ctx);
    tasks.spawn(async move {
        follow_signer_sets(&c).await;
        Ok("signer sets")
    });
    let c = Arc::clone(&ctx);
    tasks.spawn(async move {
        prune_history(&c).await;
        Ok("retention")
    });
    let c = Arc::clone(&ctx);
    tasks.spawn(async move {
        audit_outvoted_endpoints(&c).await;
        Ok("outvoted endpoints")
    });
    let c = Arc::clone(&ctx);
    tasks.spawn(async move {
        let sources = crate::health::Sources {
            store: &c.reader,
            chains: &c.chains,
            signer: &c.signer,
            submitter: &c.submitter,
            peers: &c.peers,
            quorum: c
                .dvns
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .values()
                .map(|d| d.quorum)
                .max()
                .unwrap_or(1),
            store_min_free_bytes: c.config.store.min_free_mb.saturating_mul(1024 * 1024),
        };
        crate::health::run(sources, &c.health, &c.cancel).await;
        Ok("health")
    });
    if let Some(file) = ctx.config.audit.checkpoint_file.clone() {
        let (store, signer, node) = (
            ctx.store.clone(),
            ctx.signer.clone(),
            ctx.config.node.name.clone(),
        );
        let every = Duration::from_secs(ctx.config.audit.checkpoint_interval_secs);
        let checkpoint_cancel = cancel.clone();
        tasks.spawn(async move {
            crate::admin::checkpoint::run(store, signer, node, file, every, checkpoint_cancel)
                .await;
            Ok("audit checkpoints")
        });
    }
    let sign = SignStage::new(Arc::clone(&ctx));
    let c = Arc::clone(&ctx);
    tasks.spawn(async move {
        run_stage(Arc::clone(&c), "sign", Some(&c.wake.sign), sign).await;
        Ok("sign")
    });

    let mut failure = None;
    while let Some(done) = tasks.join_next().await {
        let outcome = match done {
            Ok(Ok(name)) if cancel.is_cancelled() => {
                tracing::debug!(task = name, "stopped");
                continue;
            }
            Ok(Ok(name)) => anyhow::anyhow!("task {name} ended unexpectedly"),
            Ok(Err(e)) => e,
            Err(e) => anyhow::anyhow!("task panicked: {e}"),
        };
        tracing::error!("{outcome:#}; shutting down");
        failure.get_or_insert(outcome);
        cancel.cancel();
    }
    let reason = failure.as_ref().map(|e| format!("{e:#}"));
    ctx.store
        .audit_node_event(
            "node.stop",
            &ctx.config.node.name,
            serde_json::json!({ "failure": reason }),
        )
        .await;
    match failure {
        Some(e) => Err(e),
        None => Ok(()),
    }
}
