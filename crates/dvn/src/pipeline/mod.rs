//! The pipeline: watch → confirm/check → sign → aggregate → submit → settle.
//!
//! The store is the truth; channels only wake the next stage. Each stage is a step function
//! run in a loop by [`run_stage`] until the node's cancellation token fires, and on every
//! start (including after a crash) it simply reloads its pending work from the store.
//!
//! | stage | owns | module |
//! |---|---|---|
//! | watch | the source cursor; `observed` packets | [`watch`] |
//! | confirm + check + sign | `observed → signed / skipped / orphaned`; our signature | [`sign`] |
//! | aggregate + submit | `signed → submitted`; which packets go out, and when | [`submit`] |
//! | transactions (in submit) | the submission rows: send, bump, cancel, settle `submitted → verified` or back for a retry | [`transactions`] |
//!
//! Shared rules: whose turn it is to submit a packet ([`turns`]) and other regions' claims on
//! packets their pending transactions carry ([`claims`]).

pub mod batching;
pub mod claims;
pub mod execute;
pub mod expiration;
pub mod gas;
pub mod governor;
pub mod rotation;
pub mod sign;
pub mod submit;
pub mod transactions;
pub mod turns;
pub mod watch;

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use alloy::primitives::Address;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::chain::EvmChain;
use crate::config::Config;
use crate::lease::Lease;
use crate::peer::client::PeerClient;
use crate::signer::KeyHandle;
use crate::store::Store;

/// Our DVN contract on one chain, as read from the chain at startup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DvnInfo {
    pub address: Address,
    pub signers: Vec<Address>,
    pub quorum: usize,
    pub vid: u32,
    /// Our submitter — or the decompressor it sends through, owned by it — holds
    /// `ADMIN_ROLE` on it (`execute` reverts otherwise). Checked at start, then followed:
    /// another admin may revoke it.
    pub submitter_is_admin: bool,
}

/// Wake-ups between stages (hints only: every stage also runs on a timer).
#[derive(Debug, Default)]
pub struct Wakeups {
    pub sign: Notify,
    pub submit: Notify,
    /// Re-read the DVNs' signer sets now (an `execute` failed its signature check).
    pub signers: Notify,
}

/// Everything the stages share.
#[derive(Debug)]
pub struct Context {
    pub config: Config,
    pub store: Store,
    /// The same store through connections of its own, for readers that must never wait
    /// behind the pipeline or hold it up: the health snapshot, the `/status` page.
    pub reader: Store,
    /// Signatures, ours and the peers' pushes, stored many per transaction (see [`SignatureWriter`]).
    ///
    /// [`SignatureWriter`]: crate::store::SignatureWriter
    pub signature_writer: crate::store::SignatureWriter,
    /// Peers' signatures over params this node has not signed yet (see [`crate::peer::early`]).
    pub early_signatures: crate::peer::early::EarlySignatures,
    pub chains: BTreeMap<u32, EvmChain>,
    /// Our DVN per chain eid, as last read from the chain (followed live: the signer set and
    /// quorum change on chain by the DVN's own multisig).
    pub dvns: RwLock<BTreeMap<u32, DvnInfo>>,
    pub signer: KeyHandle,
    /// The key replacing `signer` during a rotation (see [`Context::signing_key`]).
    pub signer_next: Option<KeyHandle>,
    pub submitter: KeyHandle,
    pub peers: PeerClient,
    /// Present when replicas of this region share the submitter role through Redis.
    pub lease: Option<Lease>,
    pub wake: Wakeups,
    pub cancel: CancellationToken,
    /// The latest health snapshot (refreshed by [`crate::health::run`]).
    pub health: crate::health::HealthState,
    /// The governor's rules in force: `config.governor` at start, replaced by a reload.
    pub governor: RwLock<crate::config::GovernorConfig>,
    /// Where the configuration was read from (for a reload).
    pub config_path: Option<std::path::PathBuf>,
}

impl Context {
    /// A configured chain by eid.
    pub fn chain(&self, eid: u32) -> anyhow::Result<&EvmChain> {
        self.chains
            .get(&eid)
            .ok_or_else(|| anyhow::anyhow!("chain {eid} is not configured"))
    }

    /// Our DVN on chain `eid` as last read (signers, quorum).
    pub fn dvn(&self, eid: u32) -> anyhow::Result<DvnInfo> {
        self.dvns
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&eid)
            .cloned()
            .ok_or_else(|| anyhow::anyhow!("no DVN checked on chain {eid}"))
    }

    /// Replaces what is known of our DVN on chain `eid`.
    pub fn set_dvn(&self, eid: u32, info: DvnInfo) {
        self.dvns
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(eid, info);
    }

    /// The key this region signs with on chain `eid`: `signer`, or `signer_next` once that
    /// chain's DVN has it in its signer set and no longer has `signer` (a rotation executed
    /// there). Per chain, because each chain's DVN rotates by its own transaction.
    pub fn signing_key(&self, eid: u32) -> &KeyHandle {
        match self.dvn(eid) {
            Ok(dvn) => self.signing_key_for(&dvn),
            Err(_) => &self.signer,
        }
    }

    /// [`Self::signing_key`] against a given view of the DVN.
    pub fn signing_key_for(&self, dvn: &DvnInfo) -> &KeyHandle {
        match &self.signer_next {
            Some(next)
                if dvn.signers.contains(&next.address())
                    && !dvn.signers.contains(&self.signer.address()) =>
            {
                next
            }
            _ => &self.signer,
        }
    }

    pub fn tick(&self) -> Duration {
        Duration::from_millis(self.config.verification.tick_ms)
    }

    /// May this replica submit at all right now (holds the lease, or needs none)?
    pub fn holds_submitter_role(&self) -> bool {
        self.lease.as_ref().is_none_or(|l| l.token().is_some())
    }

    /// The fencing check, right before any broadcast: the lease is still ours in Redis.
    pub async fn may_broadcast(&self) -> bool {
        match &self.lease {
            None => true,
            Some(lease) => match lease.token() {
                Some(token) => lease.confirm(token).await,
                None => false,
            },
        }
    }
}

/// What a step achieved; `Busy` runs the next step at once, `Idle` waits for a wake-up or tick.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    Busy,
    Idle,
}

/// A pipeline stage: one step of work at a time.
pub trait Stage: Send {
    fn step(&mut self) -> impl Future<Output = anyhow::Result<Progress>> + Send;

    /// How long to wait after an idle step; the node's tick when `None`.
    fn idle_wait(&self) -> Option<Duration> {
        None
    }
}

/// Runs `stage` until cancellation. Errors are logged and counted, then retried after a
/// backoff: a stage never dies because of bad input or a flaky dependency.
pub async fn run_stage<S: Stage>(
    ctx: Arc<Context>,
    name: &'static str,
    wake: Option<&Notify>,
    mut stage: S,
) {
    let mut backoff = ctx.tick();
    loop {
        if ctx.cancel.is_cancelled() {
            return;
        }
        let started = std::time::Instant::now();
        let outcome = stage.step().await;
        metrics::histogram!("dvn_stage_step_seconds", "stage" => name)
            .record(started.elapsed().as_secs_f64());
        let wait = match outcome {
            Ok(Progress::Busy) => {
                backoff = ctx.tick();
                continue;
            }
            Ok(Progress::Idle) => {
                backoff = ctx.tick();
                stage.idle_wait().unwrap_or_else(|| ctx.tick())
            }
            Err(e) => {
                metrics::counter!("dvn_stage_errors_total", "stage" => name).increment(1);
                tracing::warn!(stage = name, "{e:#}");
                backoff = (backoff * 2).min(Duration::from_secs(10));
                backoff
            }
        };
        tokio::select! {
            _ = ctx.cancel.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
            _ = async { match wake { Some(n) => n.notified().await, None => std::future::pending().await } } => {}
        }
    }
}
