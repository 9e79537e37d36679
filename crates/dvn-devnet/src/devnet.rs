//! Two anvil chains with the real LayerZero V2 contracts, wired to each other, and the helpers a
//! test needs to act as user, DVN and executor.
//!
//! Chain A is "ethereum" (chain id 1, eid 30101), chain B "conflux-espace" (chain id 1030, eid
//! 30212). Each runs an EndpointV2, SendUln302, ReceiveUln302 (+ view), Treasury, PriceFeed,
//! Executor, a 2-of-3 DVN and an OmniCounter whose peer is the other chain's counter. The
//! default ULN config on every path requires that chain's DVN.

use std::path::{Path, PathBuf};

use alloy::primitives::{keccak256, Address, Bytes, Signature, TxHash, U256};
use alloy::rpc::types::TransactionReceipt;
use alloy::signers::local::PrivateKeySigner;
use alloy::signers::SignerSync;
use alloy::sol_types::SolEvent;
use dvn_lz::contracts::{ExecuteParam, IReceiveUln302, IReceiveUln302View, IDVN};
use dvn_lz::{packets_in_transaction, SentPacket, UnsignedParam, VerificationState};

use crate::artifacts::Artifacts;
use crate::chain::{Chain, ChainError, Mining};
use crate::contracts::{EndpointV2, OmniCounter, Origin, COUNTER_VANILLA};
use crate::deploy::{self, Contracts, Roles, SideSpec};

/// Ethereum mainnet's chain id and LayerZero eid, used for chain A.
pub const CHAIN_ID_A: u64 = 1;
pub const EID_A: u32 = 30101;
/// Conflux eSpace mainnet's chain id and LayerZero eid, used for chain B.
pub const CHAIN_ID_B: u64 = 1030;
pub const EID_B: u32 = 30212;

/// Gas for the executor's `lzReceive` option on every message.
pub const LZ_RECEIVE_GAS: u128 = 200_000;
/// How long a harness-signed param stays valid on the destination.
pub const EXPIRATION_SECS: u64 = 3_600;

/// How to build the devnet.
#[derive(Debug, Clone)]
pub struct DevnetConfig {
    pub mining: Mining,
    /// Confirmations in the default send and receive ULN configs for A → B.
    pub confirmations_a_to_b: u64,
    /// Confirmations in the default send and receive ULN configs for B → A.
    pub confirmations_b_to_a: u64,
    /// DVN multisig: number of signers and quorum.
    pub signer_count: usize,
    pub quorum: u64,
    /// Where anvil logs go; a fresh temporary folder (removed on drop) when `None`.
    pub log_dir: Option<PathBuf>,
    /// More DVN signers whose keys live elsewhere (an HSM, a KMS); added to the on-chain set.
    pub extra_signers: Vec<Address>,
    /// Keep only this many recent states (anvil `--prune-history`), like an ordinary
    /// non-archive RPC node: reads at older blocks fail.
    pub prune_history: Option<u64>,
    /// Run the chains in a session of their own (the demo: a terminal Ctrl-C must not stop
    /// them). Tests leave them in their process group, so a killed test takes them along.
    pub own_session: bool,
    /// Deploy a `DVNDecompressor` per DVN admin on both chains (see
    /// [`deploy::deploy_decompressors`]).
    pub decompressors: bool,
}

impl Default for DevnetConfig {
    fn default() -> Self {
        Self {
            mining: Mining::Auto,
            confirmations_a_to_b: 1,
            confirmations_b_to_a: 1,
            signer_count: 3,
            quorum: 2,
            log_dir: None,
            extra_signers: vec![],
            prune_history: None,
            own_session: false,
            decompressors: false,
        }
    }
}

/// Which way a message travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    AToB,
    BToA,
}

/// Everything on one chain.
#[derive(Debug)]
pub struct Side {
    pub chain: Chain,
    pub eid: u32,
    /// The DVN's `vid` (`eid % 30000`).
    pub vid: u32,
    pub contracts: Contracts,
    pub roles: Roles,
}

/// The running devnet. Dropping it stops both chains.
#[derive(Debug)]
pub struct Devnet {
    pub a: Side,
    pub b: Side,
    /// The DVN's signer keys (the same set on both chains), one per region.
    pub signers: Vec<PrivateKeySigner>,
    pub quorum: u64,
    /// Sends the counter messages.
    pub user: Address,
    log_dir: PathBuf,
    _temp_logs: Option<tempfile::TempDir>,
}

/// Anvil dev-account indices: one deployer per chain (so addresses differ across chains and
/// mix-ups show), one submitter per region, the executor's admin, the user.
const DEPLOYER_A: usize = 0;
const DEPLOYER_B: usize = 1;
const DVN_ADMINS: [usize; 3] = [2, 3, 4];
const EXECUTOR_ADMIN: usize = 5;
const USER: usize = 6;
/// User accounts that may send at once (anvil's dev accounts 6–9, the first being the user's):
/// the devnet's provider asks the node for every nonce, so one account sends one at a time.
pub const USER_LANES: usize = 4;

/// Deterministic signer keys, so demo and test configs can name them.
pub fn signer_key(index: usize) -> anyhow::Result<PrivateKeySigner> {
    let seed = keccak256(format!("dvn-devnet signer {index}"));
    Ok(PrivateKeySigner::from_bytes(&seed)?)
}

fn account(chain: &Chain, index: usize) -> anyhow::Result<Address> {
    chain
        .accounts
        .get(index)
        .copied()
        .ok_or_else(|| anyhow::anyhow!("anvil has no account {index}"))
}

fn roles(chain: &Chain, deployer: usize) -> anyhow::Result<Roles> {
    Ok(Roles {
        deployer: account(chain, deployer)?,
        dvn_admins: DVN_ADMINS
            .iter()
            .map(|&i| account(chain, i))
            .collect::<anyhow::Result<_>>()?,
        executor_admin: account(chain, EXECUTOR_ADMIN)?,
    })
}

impl Devnet {
    /// Starts both chains, deploys and wires everything. Takes a few seconds.
    pub async fn start(config: DevnetConfig) -> anyhow::Result<Self> {
        anyhow::ensure!(config.quorum >= 1, "quorum must be at least 1");
        anyhow::ensure!(
            config.signer_count >= usize::try_from(config.quorum)?,
            "quorum {} exceeds {} signers",
            config.quorum,
            config.signer_count
        );
        let artifacts = Artifacts::locate()?;
        let (log_dir, temp_logs) = match &config.log_dir {
            Some(dir) => {
                std::fs::create_dir_all(dir)?;
                (dir.clone(), None)
            }
            None => {
                let temp = tempfile::Builder::new().prefix("dvn-devnet-").tempdir()?;
                (temp.path().to_path_buf(), Some(temp))
            }
        };
        let (log_a, log_b) = (
            log_dir.join("anvil-ethereum.log"),
            log_dir.join("anvil-conflux-espace.log"),
        );
        let (chain_a, chain_b) = tokio::try_join!(
            Chain::start(
                &artifacts,
                "ethereum",
                CHAIN_ID_A,
                config.mining,
                config.prune_history,
                config.own_session,
                &log_a
            ),
            Chain::start(
                &artifacts,
                "conflux-espace",
                CHAIN_ID_B,
                config.mining,
                config.prune_history,
                config.own_session,
                &log_b
            ),
        )?;
        let signers = (0..config.signer_count)
            .map(signer_key)
            .collect::<anyhow::Result<Vec<_>>>()?;
        let mut signer_addresses: Vec<Address> = signers.iter().map(|s| s.address()).collect();
        signer_addresses.extend(&config.extra_signers);
        let spec = |eid, remote_eid| SideSpec {
            eid,
            remote_eid,
            signers: signer_addresses.clone(),
            quorum: config.quorum,
        };
        let (roles_a, roles_b) = (roles(&chain_a, DEPLOYER_A)?, roles(&chain_b, DEPLOYER_B)?);
        let (spec_a, spec_b) = (spec(EID_A, EID_B), spec(EID_B, EID_A));
        let (mut contracts_a, mut contracts_b) = tokio::try_join!(
            deploy::deploy_side(&chain_a, &artifacts, &roles_a, &spec_a),
            deploy::deploy_side(&chain_b, &artifacts, &roles_b, &spec_b),
        )?;
        if config.decompressors {
            let (a, b) = tokio::try_join!(
                deploy::deploy_decompressors(
                    &chain_a,
                    &artifacts,
                    &roles_a,
                    EID_A % 30_000,
                    &contracts_a
                ),
                deploy::deploy_decompressors(
                    &chain_b,
                    &artifacts,
                    &roles_b,
                    EID_B % 30_000,
                    &contracts_b
                ),
            )?;
            (contracts_a.decompressors, contracts_b.decompressors) = (a, b);
        }
        // Send-side confirmations of A→B live on A, receive-side ones on B (and vice versa).
        tokio::try_join!(
            deploy::wire_side(
                &chain_a,
                roles_a.deployer,
                &contracts_a,
                EID_B,
                contracts_b.counter,
                config.confirmations_a_to_b,
                config.confirmations_b_to_a,
            ),
            deploy::wire_side(
                &chain_b,
                roles_b.deployer,
                &contracts_b,
                EID_A,
                contracts_a.counter,
                config.confirmations_b_to_a,
                config.confirmations_a_to_b,
            ),
        )?;
        let user = account(&chain_a, USER)?;
        let side = |chain, eid: u32, contracts, roles| Side {
            chain,
            eid,
            vid: eid % 30_000,
            contracts,
            roles,
        };
        Ok(Self {
            a: side(chain_a, EID_A, contracts_a, roles_a),
            b: side(chain_b, EID_B, contracts_b, roles_b),
            signers,
            quorum: config.quorum,
            user,
            log_dir,
            _temp_logs: temp_logs,
        })
    }

    /// Where the anvil logs are.
    pub fn log_dir(&self) -> &Path {
        &self.log_dir
    }

    /// `(source, destination)` of a direction.
    pub fn sides(&self, direction: Direction) -> (&Side, &Side) {
        match direction {
            Direction::AToB => (&self.a, &self.b),
            Direction::BToA => (&self.b, &self.a),
        }
    }

    /// Process ids of both anvils.
    pub fn pids(&self) -> [u32; 2] {
        [self.a.chain.pid(), self.b.chain.pid()]
    }

    /// Sends `count` OmniCounter increments and returns the packets they emitted, each paired
    /// with its `DVNFeePaid` by `dvn_lz`'s assignment rule.
    pub async fn send_messages(
        &self,
        direction: Direction,
        count: usize,
    ) -> anyhow::Result<Vec<SentPacket>> {
        self.send_typed_messages(direction, count, COUNTER_VANILLA)
            .await
    }

    /// [`Devnet::send_messages`] with OmniCounter message type `msg_type` (another type, another
    /// payload: what a reorg that replaces a send looks like).
    pub async fn send_typed_messages(
        &self,
        direction: Direction,
        count: usize,
        msg_type: u8,
    ) -> anyhow::Result<Vec<SentPacket>> {
        let (src, _) = self.sides(direction);
        let mut packets = Vec::with_capacity(count);
        for _ in 0..count {
            let receipt = self.increment(direction, msg_type).await?;
            packets.extend(self.packets_in_receipt(src, &receipt)?);
        }
        Ok(packets)
    }

    /// One message on `direction` sent from user account `lane` (below [`USER_LANES`]): a
    /// load harness sends from several lanes at once, one message at a time on each.
    pub async fn send_message_on_lane(
        &self,
        direction: Direction,
        lane: usize,
    ) -> anyhow::Result<Vec<SentPacket>> {
        let (src, _) = self.sides(direction);
        let from = self.lane_account(direction, lane)?;
        let receipt = self
            .increment_from(direction, from, COUNTER_VANILLA)
            .await?;
        self.packets_in_receipt(src, &receipt)
    }

    /// One message on `direction` from user account `lane`, handed to the source's pool
    /// without waiting for its block: on an interval-mined source a lane sends many per block.
    /// Its packets are in the receipt of the transaction returned.
    pub async fn submit_message_on_lane(
        &self,
        direction: Direction,
        lane: usize,
    ) -> anyhow::Result<TxHash> {
        let (src, _) = self.sides(direction);
        let from = self.lane_account(direction, lane)?;
        let (increment, fee) = self.increment_call(direction, COUNTER_VANILLA).await?;
        Ok(src
            .chain
            .submit(from, src.contracts.counter, &increment, fee)
            .await?)
    }

    /// The source account user lane `lane` (below [`USER_LANES`]) sends from.
    fn lane_account(&self, direction: Direction, lane: usize) -> anyhow::Result<Address> {
        anyhow::ensure!(lane < USER_LANES, "lane {lane} of {USER_LANES}");
        let (src, _) = self.sides(direction);
        account(&src.chain, USER + lane)
    }

    /// One `OmniCounter.increment` from the user, paying the quoted fee.
    async fn increment(
        &self,
        direction: Direction,
        msg_type: u8,
    ) -> anyhow::Result<TransactionReceipt> {
        let (src, _) = self.sides(direction);
        self.increment_from(direction, self.user_on(src)?, msg_type)
            .await
    }

    /// One `OmniCounter.increment` from `from`, paying the quoted fee.
    async fn increment_from(
        &self,
        direction: Direction,
        from: Address,
        msg_type: u8,
    ) -> anyhow::Result<TransactionReceipt> {
        let (src, _) = self.sides(direction);
        let (increment, fee) = self.increment_call(direction, msg_type).await?;
        Ok(src
            .chain
            .send(from, src.contracts.counter, &increment, fee)
            .await?)
    }

    /// An `OmniCounter.increment` of `msg_type` on `direction` and the fee it must pay, quoted
    /// by the source's counter now.
    async fn increment_call(
        &self,
        direction: Direction,
        msg_type: u8,
    ) -> anyhow::Result<(OmniCounter::incrementCall, U256)> {
        let (src, dst) = self.sides(direction);
        let options = dvn_lz::options::executor_lz_receive_option(LZ_RECEIVE_GAS, 0);
        let quote = OmniCounter::quoteCall {
            _eid: dst.eid,
            _type: msg_type,
            _options: options.clone(),
        };
        let fee = src.chain.call(src.contracts.counter, &quote).await?;
        let increment = OmniCounter::incrementCall {
            _eid: dst.eid,
            _type: msg_type,
            _options: options,
        };
        Ok((increment, fee.nativeFee))
    }

    /// Sends one counter message on `direction` through a *second* send library registered on
    /// the source endpoint (LayerZero's SimpleMessageLib: no DVNs, no `DVNFeePaid`), then
    /// switches the OApp back to the default library. The packet takes the path's next nonce
    /// but is assigned to no DVN. Returns its nonce (see [`Devnet::skip_on_destination`]).
    pub async fn send_through_other_library(&self, direction: Direction) -> anyhow::Result<u64> {
        let (src, dst) = self.sides(direction);
        let artifacts = Artifacts::locate()?;
        let deployer = src.roles.deployer;
        let lib = src
            .chain
            .deploy(
                "SimpleMessageLib",
                deployer,
                deploy::creation_code(
                    &artifacts,
                    crate::artifacts::Contract::SimpleMessageLib,
                    &crate::contracts::SimpleMessageLib::constructorCall {
                        _endpoint: src.contracts.endpoint,
                        _treasury: deployer,
                    },
                )?,
            )
            .await?;
        let endpoint = src.contracts.endpoint;
        src.chain
            .send(
                deployer,
                endpoint,
                &EndpointV2::registerLibraryCall { _lib: lib },
                U256::ZERO,
            )
            .await?;
        let use_lib = |lib| EndpointV2::setSendLibraryCall {
            _oapp: src.contracts.counter,
            _eid: dst.eid,
            _newLib: lib,
        };
        src.chain
            .send(deployer, endpoint, &use_lib(lib), U256::ZERO)
            .await?;
        let receipt = self.increment(direction, COUNTER_VANILLA).await?;
        // Back to the endpoint's default library (address zero) for the OApp.
        src.chain
            .send(deployer, endpoint, &use_lib(Address::ZERO), U256::ZERO)
            .await?;
        let logs: Vec<_> = receipt
            .inner
            .logs()
            .iter()
            .map(|l| l.inner.clone())
            .collect();
        let packet = dvn_lz::sent_packets(src.contracts.endpoint, &logs)
            .pop()
            .ok_or_else(|| anyhow::anyhow!("the send emitted no PacketSent"))??;
        let _ = dst;
        Ok(packet.header.nonce)
    }

    /// The destination OApp's owner skips `nonce` on `direction` (`EndpointV2.skip`: it must be
    /// the next nonce to deliver), so the packets after a never-verified one can be delivered.
    pub async fn skip_on_destination(
        &self,
        direction: Direction,
        nonce: u64,
    ) -> anyhow::Result<()> {
        let (src, dst) = self.sides(direction);
        let skip = EndpointV2::skipCall {
            _oapp: dst.contracts.counter,
            _srcEid: src.eid,
            _sender: src.contracts.counter.into_word(),
            _nonce: nonce,
        };
        dst.chain
            .send(
                dst.roles.deployer,
                dst.contracts.endpoint,
                &skip,
                U256::ZERO,
            )
            .await?;
        Ok(())
    }

    /// The user account on `side`'s chain (same index on every chain).
    fn user_on(&self, side: &Side) -> anyhow::Result<Address> {
        account(&side.chain, USER)
    }

    /// Packets emitted by `side`'s endpoint in one receipt.
    pub fn packets_in_receipt(
        &self,
        side: &Side,
        receipt: &TransactionReceipt,
    ) -> anyhow::Result<Vec<SentPacket>> {
        let logs: Vec<_> = receipt
            .inner
            .logs()
            .iter()
            .map(|l| l.inner.clone())
            .collect();
        packets_in_transaction(side.contracts.endpoint, &logs)
            .into_iter()
            .map(|r| r.map_err(anyhow::Error::from))
            .collect()
    }

    /// The confirmations the destination's receive ULN requires for packets to `receiver`.
    pub async fn required_confirmations(
        &self,
        direction: Direction,
        receiver: Address,
    ) -> Result<u64, ChainError> {
        let (src, dst) = self.sides(direction);
        let call = IReceiveUln302::getUlnConfigCall {
            oapp: receiver,
            remoteEid: src.eid,
        };
        Ok(dst
            .chain
            .call(dst.contracts.receive_lib, &call)
            .await?
            .confirmations)
    }

    /// The unsigned `verify` param for `packet` on the destination DVN.
    pub fn verify_param(
        &self,
        direction: Direction,
        packet: &SentPacket,
        confirmations: u64,
        expiration: u64,
    ) -> UnsignedParam {
        let (_, dst) = self.sides(direction);
        UnsignedParam::verify(
            dst.vid,
            dst.contracts.receive_lib,
            &packet.packet.header,
            packet.packet.payload_hash(),
            confirmations,
            expiration,
        )
    }

    /// Signatures over `param` by the chosen signers (indices into [`Devnet::signers`]).
    pub fn sign(&self, param: &UnsignedParam, signers: &[usize]) -> anyhow::Result<Vec<Signature>> {
        let digest = param.digest();
        signers
            .iter()
            .map(|&i| {
                let key = self
                    .signers
                    .get(i)
                    .ok_or_else(|| anyhow::anyhow!("no signer {i}"))?;
                Ok(key.sign_hash_sync(&digest)?)
            })
            .collect()
    }

    /// Sends `DVN.execute(params)` on the destination from region `submitter`'s admin account.
    pub async fn execute(
        &self,
        direction: Direction,
        submitter: usize,
        params: Vec<ExecuteParam>,
    ) -> anyhow::Result<TransactionReceipt> {
        let (_, dst) = self.sides(direction);
        let from = *dst
            .roles
            .dvn_admins
            .get(submitter)
            .ok_or_else(|| anyhow::anyhow!("no submitter {submitter}"))?;
        let call = IDVN::executeCall { params };
        Ok(dst
            .chain
            .send(from, dst.contracts.dvn, &call, U256::ZERO)
            .await?)
    }

    /// Plays the 2-of-3 DVN correctly: one batched `execute` verifying every packet with the
    /// receive-side confirmations, signed by `signers` and packed by `dvn_lz`, sent from the
    /// first region's submitter account.
    pub async fn verify_as_dvn(
        &self,
        direction: Direction,
        packets: &[SentPacket],
        signers: &[usize],
    ) -> anyhow::Result<TransactionReceipt> {
        self.verify_as_dvn_from(direction, packets, signers, 0)
            .await
    }

    /// [`Devnet::verify_as_dvn`] sent from region `submitter`'s admin account.
    pub async fn verify_as_dvn_from(
        &self,
        direction: Direction,
        packets: &[SentPacket],
        signers: &[usize],
        submitter: usize,
    ) -> anyhow::Result<TransactionReceipt> {
        let (_, dst) = self.sides(direction);
        let expiration = dst.chain.timestamp().await? + EXPIRATION_SECS;
        let signer_set: Vec<Address> = self.signers.iter().map(|s| s.address()).collect();
        let quorum = usize::try_from(self.quorum)?;
        let mut params = Vec::with_capacity(packets.len());
        for packet in packets {
            let receiver = packet.packet.header.receiver_address()?;
            let confirmations = self.required_confirmations(direction, receiver).await?;
            let unsigned = self.verify_param(direction, packet, confirmations, expiration);
            let mut set = dvn_lz::SignatureSet::new(unsigned.call_hash());
            for signature in self.sign(&unsigned, signers)? {
                set.insert(signature, &signer_set)?;
            }
            let packed = set.pack(quorum)?;
            params.push(unsigned.into_param(packed));
        }
        self.execute(direction, submitter, params).await
    }

    /// `ReceiveUln302View.verifiable` for `packet` on the destination.
    pub async fn verification_state(
        &self,
        direction: Direction,
        packet: &SentPacket,
    ) -> anyhow::Result<VerificationState> {
        let (_, dst) = self.sides(direction);
        let call = IReceiveUln302View::verifiableCall {
            packetHeader: Bytes::copy_from_slice(&packet.packet.header.encode()),
            payloadHash: packet.packet.payload_hash(),
        };
        let raw = dst.chain.call(dst.contracts.receive_view, &call).await?;
        VerificationState::from_u8(raw)
            .ok_or_else(|| anyhow::anyhow!("unknown verifiable state {raw}"))
    }

    /// Acts as the executor: `commitVerification` then `EndpointV2.lzReceive`.
    pub async fn commit_and_deliver(
        &self,
        direction: Direction,
        packet: &SentPacket,
    ) -> Result<(), ChainError> {
        self.commit(direction, packet).await?;
        let (_, dst) = self.sides(direction);
        let header = &packet.packet.header;
        let receive = EndpointV2::lzReceiveCall {
            _origin: Origin {
                srcEid: header.src_eid,
                sender: header.sender,
                nonce: header.nonce,
            },
            _receiver: Address::from_word(header.receiver),
            _guid: packet.packet.guid,
            _message: packet.packet.message.clone(),
            _extraData: Bytes::new(),
        };
        dst.chain
            .send(
                dst.roles.executor_admin,
                dst.contracts.endpoint,
                &receive,
                U256::ZERO,
            )
            .await?;
        Ok(())
    }

    /// `ReceiveUln302.commitVerification` (reverts with `LZ_ULN_Verifying` if not verifiable).
    pub async fn commit(
        &self,
        direction: Direction,
        packet: &SentPacket,
    ) -> Result<(), ChainError> {
        let (_, dst) = self.sides(direction);
        let commit = IReceiveUln302::commitVerificationCall {
            packetHeader: Bytes::copy_from_slice(&packet.packet.header.encode()),
            payloadHash: packet.packet.payload_hash(),
        };
        dst.chain
            .send(
                dst.roles.executor_admin,
                dst.contracts.receive_lib,
                &commit,
                U256::ZERO,
            )
            .await?;
        Ok(())
    }

    /// OmniCounter's `count()` on a side.
    pub async fn counter(&self, side: &Side) -> Result<U256, ChainError> {
        side.chain
            .call(side.contracts.counter, &OmniCounter::countCall {})
            .await
    }

    /// Every `PayloadVerified` on the destination credited to the destination DVN.
    pub async fn payload_verified(
        &self,
        direction: Direction,
    ) -> anyhow::Result<Vec<IReceiveUln302::PayloadVerified>> {
        let (_, dst) = self.sides(direction);
        let logs = dst
            .chain
            .logs(
                dst.contracts.receive_lib,
                IReceiveUln302::PayloadVerified::SIGNATURE_HASH,
            )
            .await?;
        let mut events = Vec::with_capacity(logs.len());
        for log in logs {
            let event = IReceiveUln302::PayloadVerified::decode_log_data(&log.inner.data)?;
            if event.dvn == dst.contracts.dvn {
                events.push(event);
            }
        }
        Ok(events)
    }
}
