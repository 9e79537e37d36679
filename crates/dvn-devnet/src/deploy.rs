//! Deploys and wires the real LayerZero V2 contracts on one chain (layerzero-v2.md §5).
//!
//! Order matters and is enforced by the contracts: libraries are registered, then ULN default
//! configs are set, and only then the default send/receive libraries (`LZ_UnsupportedEid`
//! otherwise). PriceFeed prices are keyed by `eid % 30000` (a wrong key prices at 0 silently).

use alloy::primitives::{Address, Bytes, U256};
use alloy::sol_types::{SolConstructor, SolValue};

use crate::artifacts::{Artifacts, Contract};
use crate::chain::{Chain, ChainError};
use crate::contracts::*;

/// Fixed accounts (indices into anvil's dev accounts) and their roles on a chain.
#[derive(Debug, Clone)]
pub struct Roles {
    /// Owns the endpoint, libraries, treasury and price feed; deploys everything.
    pub deployer: Address,
    /// One submitter per region; each holds `ADMIN_ROLE` on the DVN.
    pub dvn_admins: Vec<Address>,
    /// Holds `ADMIN_ROLE` on the executor.
    pub executor_admin: Address,
}

/// The knobs of one side's deployment.
#[derive(Debug, Clone)]
pub struct SideSpec {
    pub eid: u32,
    pub remote_eid: u32,
    pub signers: Vec<Address>,
    pub quorum: u64,
}

/// Addresses of everything deployed on one chain.
#[derive(Debug, Clone)]
pub struct Contracts {
    pub endpoint: Address,
    pub send_lib: Address,
    pub receive_lib: Address,
    pub receive_view: Address,
    pub treasury: Address,
    pub price_feed: Address,
    pub executor: Address,
    pub dvn: Address,
    pub counter: Address,
    /// One `DVNDecompressor` per DVN admin (same order), each owned by that admin and holding
    /// `ADMIN_ROLE` on the DVN; empty unless the devnet was asked for them.
    pub decompressors: Vec<Address>,
}

/// Gas the DVN quotes per verification on the remote chain (drives its fee only).
const DVN_DST_GAS: u64 = 200_000;
/// Largest message the executor accepts on a path.
pub const MAX_MESSAGE_SIZE: u32 = 10_000;
/// 1 % treasury fee, as in the probe.
const TREASURY_FEE_BP: u64 = 100;

pub(crate) fn creation_code<C: SolConstructor>(
    artifacts: &Artifacts,
    contract: Contract,
    args: &C,
) -> anyhow::Result<Bytes> {
    let mut code = artifacts.load(contract)?.bytecode.to_vec();
    code.extend_from_slice(&args.abi_encode());
    Ok(code.into())
}

fn plain_code(artifacts: &Artifacts, contract: Contract) -> anyhow::Result<Bytes> {
    Ok(artifacts.load(contract)?.bytecode)
}

/// Deploys every contract of one side and configures workers; wiring comes after both sides
/// exist (it needs the remote counter's address).
pub async fn deploy_side(
    chain: &Chain,
    artifacts: &Artifacts,
    roles: &Roles,
    spec: &SideSpec,
) -> anyhow::Result<Contracts> {
    let d = roles.deployer;
    let zero = U256::ZERO;

    let endpoint = chain
        .deploy(
            "EndpointV2",
            d,
            creation_code(
                artifacts,
                Contract::EndpointV2,
                &EndpointV2::constructorCall {
                    _eid: spec.eid,
                    _owner: d,
                },
            )?,
        )
        .await?;
    let send_lib = chain
        .deploy(
            "SendUln302",
            d,
            creation_code(
                artifacts,
                Contract::SendUln302,
                &SendUln302::constructorCall {
                    _endpoint: endpoint,
                    _treasuryGasLimit: U256::from(1_000_000_000_000u64),
                    _treasuryGasForFeeCap: U256::from(100_000u64),
                },
            )?,
        )
        .await?;
    let receive_lib = chain
        .deploy(
            "ReceiveUln302",
            d,
            creation_code(
                artifacts,
                Contract::ReceiveUln302,
                &ReceiveUln302::constructorCall {
                    _endpoint: endpoint,
                },
            )?,
        )
        .await?;

    let treasury = chain
        .deploy("Treasury", d, plain_code(artifacts, Contract::Treasury)?)
        .await?;
    chain
        .send(
            d,
            treasury,
            &Treasury::setNativeFeeBPCall {
                _nativeBP: U256::from(TREASURY_FEE_BP),
            },
            zero,
        )
        .await?;
    chain
        .send(
            d,
            send_lib,
            &SendUln302::setTreasuryCall {
                _treasury: treasury,
            },
            zero,
        )
        .await?;

    let price_feed = chain
        .deploy("PriceFeed", d, plain_code(artifacts, Contract::PriceFeed)?)
        .await?;
    chain
        .send(
            d,
            price_feed,
            &PriceFeed::initializeCall { _priceUpdater: d },
            zero,
        )
        .await?;
    let ratio = chain
        .call(price_feed, &PriceFeed::getPriceRatioDenominatorCall {})
        .await?;
    let price = UpdatePrice {
        eid: spec.remote_eid % 30_000,
        price: Price {
            priceRatio: ratio,
            gasPriceInUnit: 1_000_000_000,
            gasPerByte: 16,
        },
    };
    chain
        .send(
            d,
            price_feed,
            &PriceFeed::setPriceCall {
                _price: vec![price],
            },
            zero,
        )
        .await?;
    chain
        .send(
            d,
            price_feed,
            &PriceFeed::setNativeTokenPriceUSDCall {
                _nativeTokenPriceUSD: ratio.saturating_mul(2000),
            },
            zero,
        )
        .await?;

    let executor = deploy_executor(
        chain,
        artifacts,
        roles,
        spec,
        endpoint,
        send_lib,
        receive_lib,
        price_feed,
    )
    .await?;
    let dvn = deploy_dvn(
        chain,
        artifacts,
        roles,
        spec,
        send_lib,
        receive_lib,
        price_feed,
    )
    .await?;

    let receive_view = chain
        .deploy(
            "ReceiveUln302View",
            d,
            plain_code(artifacts, Contract::ReceiveUln302View)?,
        )
        .await?;
    chain
        .send(
            d,
            receive_view,
            &ReceiveUln302View::initializeCall {
                _endpoint: endpoint,
                _receiveUln302: receive_lib,
            },
            zero,
        )
        .await?;

    let counter = chain
        .deploy(
            "OmniCounter",
            d,
            creation_code(
                artifacts,
                Contract::OmniCounter,
                &OmniCounter::constructorCall {
                    _endpoint: endpoint,
                    _delegate: d,
                },
            )?,
        )
        .await?;

    Ok(Contracts {
        endpoint,
        send_lib,
        receive_lib,
        receive_view,
        treasury,
        price_feed,
        executor,
        dvn,
        counter,
        decompressors: Vec::new(),
    })
}

/// Deploys one `DVNDecompressor` per DVN admin, from that admin's account (it becomes the
/// owner, the only account that may call it), with the DVN at index 0 and the receive
/// library as target 0, and grants each `ADMIN_ROLE` on the DVN (it calls `DVN.execute`).
pub async fn deploy_decompressors(
    chain: &Chain,
    artifacts: &Artifacts,
    roles: &Roles,
    vid: u32,
    contracts: &Contracts,
) -> anyhow::Result<Vec<Address>> {
    let mut out = Vec::new();
    for admin in &roles.dvn_admins {
        let decompressor = chain
            .deploy(
                "DVNDecompressor",
                *admin,
                creation_code(
                    artifacts,
                    Contract::DvnDecompressor,
                    &DVNDecompressor::constructorCall {
                        _vid: vid,
                        _dvns: vec![DecompressorDvn {
                            idx: 0,
                            addr: contracts.dvn,
                        }],
                        _targets: vec![DecompressorTarget {
                            idx: 0,
                            addr: contracts.receive_lib,
                        }],
                    },
                )?,
            )
            .await?;
        chain
            .send(
                *admin,
                contracts.dvn,
                &dvn_lz::contracts::IDVN::grantRoleCall {
                    role: dvn_lz::contracts::ADMIN_ROLE,
                    account: decompressor,
                },
                U256::ZERO,
            )
            .await?;
        out.push(decompressor);
    }
    Ok(out)
}

#[allow(clippy::too_many_arguments)]
async fn deploy_executor(
    chain: &Chain,
    artifacts: &Artifacts,
    roles: &Roles,
    spec: &SideSpec,
    endpoint: Address,
    send_lib: Address,
    receive_lib: Address,
    price_feed: Address,
) -> anyhow::Result<Address> {
    let d = roles.deployer;
    let admin = roles.executor_admin;
    let executor = chain
        .deploy("Executor", d, plain_code(artifacts, Contract::Executor)?)
        .await?;
    let init = Executor::initializeCall {
        _endpoint: endpoint,
        _receiveUln301: Address::ZERO,
        _messageLibs: vec![send_lib, receive_lib],
        _priceFeed: price_feed,
        _roleAdmin: d,
        _admins: vec![admin],
    };
    chain.send(d, executor, &init, U256::ZERO).await?;
    let fee_lib = chain
        .deploy(
            "ExecutorFeeLib",
            d,
            creation_code(
                artifacts,
                Contract::ExecutorFeeLib,
                &ExecutorFeeLib::constructorCall {
                    _localEidV2: spec.eid,
                    _nativeDecimalsRate: U256::from(10u64).pow(U256::from(18u64)),
                },
            )?,
        )
        .await?;
    chain
        .send(
            admin,
            executor,
            &Executor::setWorkerFeeLibCall {
                _workerFeeLib: fee_lib,
            },
            U256::ZERO,
        )
        .await?;
    let dst = ExecutorDstConfigParam {
        dstEid: spec.remote_eid,
        lzReceiveBaseGas: 50_000,
        lzComposeBaseGas: 0,
        multiplierBps: 0,
        floorMarginUSD: 0,
        nativeCap: 100_000_000_000_000_000,
    };
    chain
        .send(
            admin,
            executor,
            &Executor::setDstConfigCall { _params: vec![dst] },
            U256::ZERO,
        )
        .await?;
    Ok(executor)
}

/// Deploys a DVN (with its fee lib and destination config) on one side.
pub async fn deploy_dvn(
    chain: &Chain,
    artifacts: &Artifacts,
    roles: &Roles,
    spec: &SideSpec,
    send_lib: Address,
    receive_lib: Address,
    price_feed: Address,
) -> anyhow::Result<Address> {
    let d = roles.deployer;
    let admin = *roles
        .dvn_admins
        .first()
        .ok_or_else(|| anyhow::anyhow!("no DVN admin"))?;
    let dvn = chain
        .deploy(
            "DVN",
            d,
            creation_code(
                artifacts,
                Contract::Dvn,
                &DVN::constructorCall {
                    _localEidV2: spec.eid,
                    _vid: spec.eid % 30_000,
                    _messageLibs: vec![send_lib, receive_lib],
                    _priceFeed: price_feed,
                    _signers: spec.signers.clone(),
                    _quorum: spec.quorum,
                    _admins: roles.dvn_admins.clone(),
                },
            )?,
        )
        .await?;
    let fee_lib = chain
        .deploy(
            "DVNFeeLib",
            d,
            creation_code(
                artifacts,
                Contract::DvnFeeLib,
                &DVNFeeLib::constructorCall {
                    _localEidV2: spec.eid,
                    _nativeDecimalsRate: U256::from(10u64).pow(U256::from(18u64)),
                },
            )?,
        )
        .await?;
    chain
        .send(
            admin,
            dvn,
            &DVN::setWorkerFeeLibCall {
                _workerFeeLib: fee_lib,
            },
            U256::ZERO,
        )
        .await?;
    let dst = DvnDstConfigParam {
        dstEid: spec.remote_eid,
        gas: DVN_DST_GAS,
        multiplierBps: 0,
        floorMarginUSD: 0,
    };
    chain
        .send(
            admin,
            dvn,
            &DVN::setDstConfigCall { _params: vec![dst] },
            U256::ZERO,
        )
        .await?;
    Ok(dvn)
}

/// A ULN config requiring exactly `dvns` (sorted, as the ULN demands) with `confirmations`.
pub fn uln_config(confirmations: u64, mut dvns: Vec<Address>) -> UlnConfig {
    dvns.sort();
    UlnConfig {
        confirmations,
        requiredDVNCount: u8::try_from(dvns.len()).unwrap_or(u8::MAX),
        optionalDVNCount: 0,
        optionalDVNThreshold: 0,
        requiredDVNs: dvns,
        optionalDVNs: vec![],
    }
}

/// Wires one side towards `remote_eid`: libraries, default configs naming this chain's DVN,
/// default libraries, and the counter's peer.
pub async fn wire_side(
    chain: &Chain,
    deployer: Address,
    local: &Contracts,
    remote_eid: u32,
    remote_counter: Address,
    send_confirmations: u64,
    receive_confirmations: u64,
) -> Result<(), ChainError> {
    let zero = U256::ZERO;
    let ep = local.endpoint;
    chain
        .send(
            deployer,
            ep,
            &EndpointV2::registerLibraryCall {
                _lib: local.send_lib,
            },
            zero,
        )
        .await?;
    chain
        .send(
            deployer,
            ep,
            &EndpointV2::registerLibraryCall {
                _lib: local.receive_lib,
            },
            zero,
        )
        .await?;
    let send_cfg = SetDefaultUlnConfigParam {
        eid: remote_eid,
        config: uln_config(send_confirmations, vec![local.dvn]),
    };
    chain
        .send(
            deployer,
            local.send_lib,
            &SendUln302::setDefaultUlnConfigsCall {
                _params: vec![send_cfg],
            },
            zero,
        )
        .await?;
    let exec_cfg = SetDefaultExecutorConfigParam {
        eid: remote_eid,
        config: ExecutorConfig {
            maxMessageSize: MAX_MESSAGE_SIZE,
            executor: local.executor,
        },
    };
    chain
        .send(
            deployer,
            local.send_lib,
            &SendUln302::setDefaultExecutorConfigsCall {
                _params: vec![exec_cfg],
            },
            zero,
        )
        .await?;
    let recv_cfg = SetDefaultUlnConfigParam {
        eid: remote_eid,
        config: uln_config(receive_confirmations, vec![local.dvn]),
    };
    chain
        .send(
            deployer,
            local.receive_lib,
            &ReceiveUln302::setDefaultUlnConfigsCall {
                _params: vec![recv_cfg],
            },
            zero,
        )
        .await?;
    chain
        .send(
            deployer,
            ep,
            &EndpointV2::setDefaultSendLibraryCall {
                _eid: remote_eid,
                _newLib: local.send_lib,
            },
            zero,
        )
        .await?;
    chain
        .send(
            deployer,
            ep,
            &EndpointV2::setDefaultReceiveLibraryCall {
                _eid: remote_eid,
                _newLib: local.receive_lib,
                _gracePeriod: zero,
            },
            zero,
        )
        .await?;
    chain
        .send(
            deployer,
            local.counter,
            &OmniCounter::setPeerCall {
                _eid: remote_eid,
                _peer: remote_counter.into_word(),
            },
            zero,
        )
        .await?;
    Ok(())
}

/// Sets a per-OApp ULN config on `oapp` for `remote_eid` in message library `lib` (the
/// chain's SendUln302 or ReceiveUln302). The OApp's delegate (here the deployer) calls
/// `EndpointV2.setConfig`.
pub async fn set_uln_config(
    chain: &Chain,
    delegate: Address,
    endpoint: Address,
    lib: Address,
    oapp: Address,
    remote_eid: u32,
    config: UlnConfig,
) -> Result<(), ChainError> {
    let param = SetConfigParam {
        eid: remote_eid,
        configType: CONFIG_TYPE_ULN,
        // The config bytes are the ABI encoding of the single tuple (with its offset word).
        config: config.abi_encode().into(),
    };
    let call = EndpointV2::setConfigCall {
        _oapp: oapp,
        _lib: lib,
        _params: vec![param],
    };
    chain.send(delegate, endpoint, &call, U256::ZERO).await?;
    Ok(())
}

/// Sets a per-OApp send ULN config (see [`set_uln_config`]).
pub async fn set_send_uln_config(
    chain: &Chain,
    delegate: Address,
    local: &Contracts,
    oapp: Address,
    remote_eid: u32,
    config: UlnConfig,
) -> Result<(), ChainError> {
    set_uln_config(
        chain,
        delegate,
        local.endpoint,
        local.send_lib,
        oapp,
        remote_eid,
        config,
    )
    .await
}

/// Sets a per-OApp receive ULN config (see [`set_uln_config`]).
pub async fn set_receive_uln_config(
    chain: &Chain,
    delegate: Address,
    local: &Contracts,
    oapp: Address,
    remote_eid: u32,
    config: UlnConfig,
) -> Result<(), ChainError> {
    set_uln_config(
        chain,
        delegate,
        local.endpoint,
        local.receive_lib,
        oapp,
        remote_eid,
        config,
    )
    .await
}
