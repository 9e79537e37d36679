//! Key rotation: a region replaces its own signer in a destination DVN's signer set, through
//! the DVN's own multisig (the manual's monthly "key rotation assessment" made a procedure).
//!
//! 1. **Propose** (`dvn keys rotate propose`, on the rotating region): the node must already
//!    hold the new key (`signer_next`). It builds two params for its DVN on that chain —
//!    `setSigner(next, true)` and `setSigner(current, false)`, both calling the DVN itself
//!    (`onlySelf`), both expiring at the same destination time — signs them with its current
//!    key and sends the *fields* (not the params) to the peers.
//! 2. **Check** (each peer, on receipt and again on approval): the proposer removes only its
//!    own configured signer, which is in the on-chain set; the new key is not; the expiration
//!    is ahead and not too far. Each peer rebuilds both params itself, so it can only ever
//!    sign what these fields mean.
//! 3. **Approve** (`dvn keys rotate approve`, each peer's operator): signs both params with
//!    its key and pushes the signatures the normal way.
//! 4. **Execute** (the proposer's submit stage): with a quorum on both params, one `execute`
//!    carries them, add before remove, so the set never shrinks below quorum. `usedHashes`
//!    on the DVN tells when both took effect; the DVN's replay protection means a param runs
//!    once however often it is sent.
//! 5. **Switch**: every node follows the signer set (events and periodic re-reads); on a
//!    chain whose set has `signer_next` and no longer `signer`, the rotating node signs with
//!    `signer_next` (see [`Context::signing_key`]), and packets it signed with the old key
//!    and not yet verified are signed again.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use alloy::network::TransactionBuilder;
use alloy::primitives::{keccak256, Address, Bytes, B256};
use alloy::rpc::types::TransactionRequest;
use alloy::sol_types::SolCall;
use dvn_lz::contracts::IDVN;
use dvn_lz::UnsignedParam;

use super::submit::counted_signatures;
use super::transactions::TxManager;
use super::{Context, DvnInfo};
use crate::peer::protocol::{RotationProposal, PROTOCOL_VERSION};
use crate::store::{Rotation, RotationState};

/// Longest a rotation may stay open (its params' expiration, from the destination's time).
pub const MAX_ROTATION_TTL_SECS: u64 = 7 * 86_400;
/// Default time the peers' operators get to approve.
pub const DEFAULT_ROTATION_TTL_SECS: u64 = 86_400;
/// `execute`s sent for one rotation before it is marked failed.
const MAX_ATTEMPTS: u64 = 3;
/// How often the peers are asked for a rotation's signatures while it lacks a quorum, and how
/// often open rotations are looked at on chain at all (a proposal may wait a day for its
/// approvals: three reads per submit tick would add up).
const PULL_EVERY: Duration = Duration::from_secs(2);

/// Why a proposed rotation is refused (by the proposer before sending, by a peer on receipt
/// and again on approval).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProposalProblem {
    #[error("a region may only rotate its own signer: this proposal removes {remove}, the proposing region's signer is {expected}")]
    NotOwnSigner { remove: Address, expected: Address },
    #[error("{0} is not in the DVN's on-chain signer set")]
    RemoveNotInSet(Address),
    #[error("{0} is already in the DVN's on-chain signer set")]
    AddAlreadyInSet(Address),
    #[error("the new signer must be a non-zero address other than the one it replaces")]
    BadNewSigner,
    #[error("expiration {expiration} is not between the destination's time {now} and {MAX_ROTATION_TTL_SECS} s after it")]
    Expiration { expiration: u64, now: u64 },
    #[error("no proposer could be identified (the peer's certificate names no configured peer, and no peer's signer is {0})")]
    UnknownProposer(Address),
}

/// The checks every region runs before signing a rotation: `expected_remove` is the
/// proposing region's configured signer, `now` the destination's latest block time.
pub fn check(
    dvn: &DvnInfo,
    expected_remove: Address,
    add: Address,
    remove: Address,
    expiration: u64,
    now: u64,
) -> Result<(), ProposalProblem> {
    if remove != expected_remove {
        return Err(ProposalProblem::NotOwnSigner {
            remove,
            expected: expected_remove,
        });
    }
    if add == Address::ZERO || add == remove {
        return Err(ProposalProblem::BadNewSigner);
    }
    if !dvn.signers.contains(&remove) {
        return Err(ProposalProblem::RemoveNotInSet(remove));
    }
    if dvn.signers.contains(&add) {
        return Err(ProposalProblem::AddAlreadyInSet(add));
    }
    if expiration <= now || expiration > now.saturating_add(MAX_ROTATION_TTL_SECS) {
        return Err(ProposalProblem::Expiration { expiration, now });
    }
    Ok(())
}

/// The two params, add first: executed in this order the set grows to n+1, then returns to n,
/// never below the quorum.
pub fn params(dvn: &DvnInfo, add: Address, remove: Address, expiration: u64) -> [UnsignedParam; 2] {
    [
        UnsignedParam::set_signer(dvn.vid, dvn.address, add, true, expiration),
        UnsignedParam::set_signer(dvn.vid, dvn.address, remove, false, expiration),
    ]
}

/// A rotation's id: both param hashes (which bind the DVN, vid, keys and expiration).
pub fn rotation_id(add_hash: B256, remove_hash: B256) -> B256 {
    keccak256([add_hash.as_slice(), remove_hash.as_slice()].concat())
}

fn new_rotation(
    dst_eid: u32,
    dvn: &DvnInfo,
    add: Address,
    remove: Address,
    expiration: u64,
    proposer: &str,
    state: RotationState,
) -> (Rotation, [UnsignedParam; 2]) {
    let built = params(dvn, add, remove, expiration);
    let (add_hash, remove_hash) = (built[0].call_hash(), built[1].call_hash());
    let rotation = Rotation {
        id: rotation_id(add_hash, remove_hash),
        dst_eid,
        add,
        remove,
        expiration,
        add_hash,
        remove_hash,
        proposer: proposer.to_string(),
        state,
        attempts: 0,
        last_error: None,
        created_at_ms: crate::store::now_ms(),
        updated_at_ms: crate::store::now_ms(),
    };
    (rotation, built)
}

/// Signs both params with the key this region signs with on the chain, stores the signatures
/// and pushes them to the peers.
async fn sign_and_share(ctx: &Context, eid: u32, built: &[UnsignedParam; 2]) -> anyhow::Result<()> {
    let key = ctx.signing_key(eid);
    for param in built {
        let signature = key.sign_digest(param.digest()).await?;
        ctx.store
            .insert_signature(
                param.call_hash(),
                key.address(),
                &signature.as_bytes(),
                "own",
            )
            .await?;
        ctx.peers
            .push(param.call_hash(), key.address(), &signature)
            .await;
    }
    Ok(())
}

/// What a proposal did: the rotation and each peer's answer.
#[derive(Debug, serde::Serialize)]
pub struct Proposed {
    pub rotation: Rotation,
    pub peers: Vec<(String, &'static str)>,
}

/// Proposes replacing this region's signer with `signer_next` on chain `eid`.
pub async fn propose(ctx: &Context, eid: u32, ttl_secs: u64) -> anyhow::Result<Proposed> {
    let next = ctx.signer_next.as_ref().ok_or_else(|| {
        anyhow::anyhow!("no signer_next is configured: put the new key there (and restart) first, so this node signs with it the moment the rotation lands")
    })?;
    anyhow::ensure!(
        (1..=MAX_ROTATION_TTL_SECS).contains(&ttl_secs),
        "expires_in_secs must be between 1 and {MAX_ROTATION_TTL_SECS}"
    );
    let chain = ctx.chain(eid)?;
    let dvn = ctx.dvn(eid)?;
    let current = ctx.signing_key_for(&dvn).address();
    anyhow::ensure!(
        current != next.address(),
        "chain {} already signs with signer_next: nothing to rotate there",
        chain.name()
    );
    if let Some(open) = ctx
        .store
        .rotations()
        .await?
        .into_iter()
        .find(|r| r.dst_eid == eid && r.state.is_open() && r.proposer == ctx.config.node.name)
    {
        anyhow::bail!(
            "rotation {} on chain {} is still {} (expires at {}): let it finish or expire first",
            open.id,
            chain.name(),
            open.state.as_str(),
            open.expiration
        );
    }
    let now = chain.latest_timestamp().await?;
    let expiration = now + ttl_secs;
    check(&dvn, current, next.address(), current, expiration, now)?;
    let (rotation, built) = new_rotation(
        eid,
        &dvn,
        next.address(),
        current,
        expiration,
        &ctx.config.node.name,
        RotationState::Approved,
    );
    ctx.store.insert_rotation(&rotation).await?;
    // The proposal first: a peer accepts signatures only over hashes it knows.
    let peers = ctx
        .peers
        .propose_rotation(&RotationProposal {
            version: PROTOCOL_VERSION,
            dst_eid: eid,
            add: rotation.add,
            remove: rotation.remove,
            expiration,
        })
        .await;
    sign_and_share(ctx, eid, &built).await?;
    tracing::warn!(chain = chain.name(), id = %rotation.id, old = %current, new = %next.address(), expiration, peers = ?peers, "signer rotation proposed: each peer's operator approves it with `dvn keys rotate approve`");
    Ok(Proposed { rotation, peers })
}

/// A peer's proposal, checked and recorded as `proposed` (nothing is signed until this
/// region's operator approves). `peer` is the region its certificate names, when it has one.
pub async fn receive(
    ctx: &Context,
    peer: Option<&str>,
    proposal: &RotationProposal,
) -> anyhow::Result<Result<Rotation, ProposalProblem>> {
    let chain = ctx.chain(proposal.dst_eid)?;
    let dvn = ctx.dvn(proposal.dst_eid)?;
    let configured = match peer {
        Some(name) => ctx.config.peers.iter().find(|p| p.name == name),
        // Plaintext peers (devnets): the proposer is whoever's configured signer it removes.
        None => ctx
            .config
            .peers
            .iter()
            .find(|p| p.signer == proposal.remove),
    };
    let Some(proposer) = configured else {
        return Ok(Err(ProposalProblem::UnknownProposer(proposal.remove)));
    };
    let now = chain.latest_timestamp().await?;
    if let Err(problem) = check(
        &dvn,
        proposer.signer,
        proposal.add,
        proposal.remove,
        proposal.expiration,
        now,
    ) {
        return Ok(Err(problem));
    }
    let (rotation, _) = new_rotation(
        proposal.dst_eid,
        &dvn,
        proposal.add,
        proposal.remove,
        proposal.expiration,
        &proposer.name,
        RotationState::Proposed,
    );
    if ctx.store.insert_rotation(&rotation).await? {
        metrics::counter!("dvn_rotations_received_total", "peer" => proposer.name.clone())
            .increment(1);
        ctx.store
            .audit_node_event(
                "keys.rotation_proposed",
                &format!("chain:{}/region:{}", chain.name(), proposer.name),
                serde_json::json!({
                    "id": rotation.id, "add": rotation.add, "remove": rotation.remove,
                    "expiration": rotation.expiration,
                }),
            )
            .await;
        tracing::warn!(chain = chain.name(), peer = %proposer.name, id = %rotation.id, old = %rotation.remove, new = %rotation.add, "a peer proposes rotating its signer: check it, then `dvn keys rotate approve {}`", rotation.id);
    }
    Ok(Ok(rotation))
}

/// Approves a peer's rotation: checks it again against today's chain and configuration, then
/// signs both params and shares the signatures. Approving an approved rotation shares them
/// again.
pub async fn approve(ctx: &Context, id: B256) -> anyhow::Result<Rotation> {
    let rotation = ctx
        .store
        .rotation(id)
        .await?
        .ok_or_else(|| anyhow::anyhow!("no rotation {id} is known here"))?;
    anyhow::ensure!(
        rotation.state.is_open(),
        "rotation {id} is {}: nothing to approve",
        rotation.state.as_str()
    );
    let chain = ctx.chain(rotation.dst_eid)?;
    let dvn = ctx.dvn(rotation.dst_eid)?;
    let expected = if rotation.proposer == ctx.config.node.name {
        rotation.remove
    } else {
        ctx.config
            .peers
            .iter()
            .find(|p| p.name == rotation.proposer)
            .map(|p| p.signer)
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "the proposer {} is not a configured peer",
                    rotation.proposer
                )
            })?
    };
    let now = chain.latest_timestamp().await?;
    check(
        &dvn,
        expected,
        rotation.add,
        rotation.remove,
        rotation.expiration,
        now,
    )?;
    let built = params(&dvn, rotation.add, rotation.remove, rotation.expiration);
    anyhow::ensure!(
        built[0].call_hash() == rotation.add_hash && built[1].call_hash() == rotation.remove_hash,
        "the DVN on chain {} changed (vid or address) since the proposal: propose again",
        chain.name()
    );
    sign_and_share(ctx, rotation.dst_eid, &built).await?;
    ctx.store
        .move_rotation(id, RotationState::Proposed, RotationState::Approved, None)
        .await?;
    tracing::warn!(chain = chain.name(), %id, proposer = %rotation.proposer, "signer rotation approved and signed");
    Ok(ctx.store.rotation(id).await?.unwrap_or(rotation))
}

/// Refuses a peer's rotation here: it is never signed by this region.
pub async fn reject(ctx: &Context, id: B256, reason: &str) -> anyhow::Result<Rotation> {
    let moved = ctx
        .store
        .move_rotation(
            id,
            RotationState::Proposed,
            RotationState::Failed,
            Some(reason),
        )
        .await?;
    anyhow::ensure!(moved, "rotation {id} is not awaiting approval here");
    ctx.store
        .rotation(id)
        .await?
        .ok_or_else(|| anyhow::anyhow!("no rotation {id}"))
}

/// The submit stage's part: settles open rotations on one destination (executed, expired)
/// and executes ours once both params have a quorum.
#[derive(Debug)]
pub struct Rotations {
    ctx: Arc<Context>,
    eid: u32,
    last_pull: HashMap<B256, Instant>,
    last_step: Option<Instant>,
}

impl Rotations {
    pub fn new(ctx: Arc<Context>, eid: u32) -> Self {
        Self {
            ctx,
            eid,
            last_pull: HashMap::new(),
            last_step: None,
        }
    }

    /// True when an `execute` was sent.
    pub async fn step(&mut self, txs: &mut TxManager) -> anyhow::Result<bool> {
        if self.last_step.is_some_and(|at| at.elapsed() < PULL_EVERY) {
            return Ok(false);
        }
        self.last_step = Some(Instant::now());
        let open: Vec<Rotation> = self
            .ctx
            .store
            .rotations()
            .await?
            .into_iter()
            .filter(|r| r.dst_eid == self.eid && r.state.is_open())
            .collect();
        if open.is_empty() {
            return Ok(false);
        }
        let ctx = Arc::clone(&self.ctx);
        let chain = ctx.chain(self.eid)?;
        let dvn = ctx.dvn(self.eid)?;
        let now = chain.latest_timestamp().await?;
        for rotation in open {
            let used = |hash: B256| async move {
                chain
                    .call(
                        dvn.address,
                        &IDVN::usedHashesCall {
                            executableHash: hash,
                        },
                        None,
                    )
                    .await
            };
            if used(rotation.add_hash).await? && used(rotation.remove_hash).await? {
                ctx.store
                    .move_rotation(rotation.id, rotation.state, RotationState::Executed, None)
                    .await?;
                metrics::counter!("dvn_rotations_executed_total", "chain" => chain.name().to_string()).increment(1);
                tracing::warn!(chain = chain.name(), id = %rotation.id, old = %rotation.remove, new = %rotation.add, "signer rotation executed on chain");
                ctx.wake.signers.notify_one();
                continue;
            }
            if rotation.expiration <= now {
                ctx.store
                    .move_rotation(
                        rotation.id,
                        rotation.state,
                        RotationState::Expired,
                        Some("expired before it was executed"),
                    )
                    .await?;
                tracing::warn!(chain = chain.name(), id = %rotation.id, "signer rotation expired before it was executed");
                continue;
            }
            if rotation.state != RotationState::Approved
                || rotation.proposer != ctx.config.node.name
            {
                continue;
            }
            if rotation.attempts >= MAX_ATTEMPTS {
                ctx.store
                    .move_rotation(
                        rotation.id,
                        rotation.state,
                        RotationState::Failed,
                        Some("executed without taking effect (see the execute transactions' ExecuteFailed events)"),
                    )
                    .await?;
                tracing::error!(chain = chain.name(), id = %rotation.id, attempts = rotation.attempts, "signer rotation did not take effect: marked failed");
                continue;
            }
            let built = params(&dvn, rotation.add, rotation.remove, rotation.expiration);
            let mut ready = Vec::new();
            for param in built {
                match self.packed(&param, &dvn).await? {
                    Some(signatures) => ready.push(param.into_param(signatures)),
                    None => break,
                }
            }
            if ready.len() < 2 {
                continue;
            }
            let input = Bytes::from(IDVN::executeCall { params: ready }.abi_encode());
            let request = TransactionRequest::default()
                .with_from(ctx.submitter.address())
                .with_to(dvn.address)
                .with_input(input.clone());
            let gas = chain.estimate_gas(&request).await?;
            // Straight to the DVN (its target is the DVN itself, which a decompressor's
            // targets need not hold): rotations need the submitter's own ADMIN_ROLE.
            if txs.send(dvn.address, input, gas, &[], None).await? {
                ctx.store.count_rotation_attempt(rotation.id).await?;
                tracing::warn!(chain = chain.name(), id = %rotation.id, "signer rotation has a quorum: executing it");
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// The param's signatures packed for `execute`, when a quorum of the current signer set
    /// signed it (asking the peers when short).
    async fn packed(
        &mut self,
        param: &UnsignedParam,
        dvn: &DvnInfo,
    ) -> anyhow::Result<Option<Bytes>> {
        let hash = param.call_hash();
        let count =
            |stored: Vec<(Address, Vec<u8>)>| counted_signatures(hash, &stored, &dvn.signers);
        let set = count(self.ctx.store.signatures(hash).await?);
        if set.len() >= dvn.quorum {
            return Ok(Some(set.pack(dvn.quorum)?));
        }
        let due = self
            .last_pull
            .get(&hash)
            .is_none_or(|at| at.elapsed() >= PULL_EVERY);
        if due {
            self.last_pull.insert(hash, Instant::now());
            for (peer, signer, sig) in self.ctx.peers.pull(hash, &dvn.signers, &[]).await {
                self.ctx
                    .store
                    .insert_signature(hash, signer, &sig.as_bytes(), &peer)
                    .await?;
            }
            let set = count(self.ctx.store.signatures(hash).await?);
            if set.len() >= dvn.quorum {
                return Ok(Some(set.pack(dvn.quorum)?));
            }
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dvn(signers: &[Address]) -> DvnInfo {
        DvnInfo {
            address: Address::repeat_byte(0xdd),
            signers: signers.to_vec(),
            quorum: 2,
            vid: 7,
            submitter_is_admin: true,
        }
    }

    #[test]
    fn a_region_rotates_only_its_own_signer_into_a_fresh_key() {
        let (a, b, c, new) = (
            Address::repeat_byte(1),
            Address::repeat_byte(2),
            Address::repeat_byte(3),
            Address::repeat_byte(9),
        );
        let set = dvn(&[a, b, c]);
        let now = 1_000;
        assert_eq!(check(&set, a, new, a, now + 60, now), Ok(()));
        // Region A proposing to remove C's signer.
        assert_eq!(
            check(&set, a, new, c, now + 60, now),
            Err(ProposalProblem::NotOwnSigner {
                remove: c,
                expected: a
            })
        );
        // Adding a key already in the set (another region's): it would count twice.
        assert_eq!(
            check(&set, a, b, a, now + 60, now),
            Err(ProposalProblem::AddAlreadyInSet(b))
        );
        assert_eq!(
            check(&set, a, Address::ZERO, a, now + 60, now),
            Err(ProposalProblem::BadNewSigner)
        );
        // Already rotated (the old key left the set).
        assert_eq!(
            check(
                &dvn(&[new, b, c]),
                a,
                Address::repeat_byte(8),
                a,
                now + 60,
                now
            ),
            Err(ProposalProblem::RemoveNotInSet(a))
        );
        for expiration in [now, now - 1, now + MAX_ROTATION_TTL_SECS + 1] {
            assert!(matches!(
                check(&set, a, new, a, expiration, now),
                Err(ProposalProblem::Expiration { .. })
            ));
        }
    }

    #[test]
    fn both_params_call_the_dvn_itself_add_first() {
        let set = dvn(&[Address::repeat_byte(1)]);
        let [add, remove] = params(
            &set,
            Address::repeat_byte(9),
            Address::repeat_byte(1),
            5_000,
        );
        for p in [&add, &remove] {
            assert_eq!(p.target, set.address);
            assert_eq!(p.vid, set.vid);
            assert_eq!(&p.call_data[..4], &IDVN::setSignerCall::SELECTOR);
        }
        let added = IDVN::setSignerCall::abi_decode(&add.call_data).unwrap();
        assert_eq!(
            (added.signer, added.active),
            (Address::repeat_byte(9), true)
        );
        let removed = IDVN::setSignerCall::abi_decode(&remove.call_data).unwrap();
        assert_eq!(
            (removed.signer, removed.active),
            (Address::repeat_byte(1), false)
        );
        assert_ne!(
            rotation_id(add.call_hash(), remove.call_hash()),
            rotation_id(remove.call_hash(), add.call_hash())
        );
    }
}
