//! One local chain: an anvil process on 127.0.0.1 and a provider that talks to it.
//!
//! The anvil child is owned by [`Chain`]: dropping the chain (also while unwinding from a
//! panic) stops it with SIGTERM, then SIGKILL, and reaps it. Its stdout goes to a log file.

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::time::Duration;

use alloy::network::{EthereumWallet, TransactionBuilder};
use alloy::node_bindings::{Anvil, AnvilInstance};
use alloy::primitives::{Address, Bytes, TxHash, B256, U256};
use alloy::providers::{DynProvider, Provider, ProviderBuilder};
use alloy::rpc::types::{Filter, Log, TransactionReceipt, TransactionRequest};
use alloy::sol_types::SolCall;
use alloy::transports::{RpcError, TransportErrorKind};

use crate::artifacts::Artifacts;
use crate::wait::eventually;

/// How the chain produces blocks.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Mining {
    /// One block per transaction, and otherwise only when [`Chain::mine`] is called: the
    /// test controls confirmations exactly.
    Auto,
    /// A block every so many seconds, like a real chain.
    Interval(f64),
}

/// Errors from the harness's chain calls, with the revert data kept for assertions.
#[derive(Debug, thiserror::Error)]
pub enum ChainError {
    #[error("{what}: RPC error: {source}")]
    Rpc {
        what: String,
        source: RpcError<TransportErrorKind>,
    },
    #[error("{what} reverted (data {})", revert_hex(.data))]
    Reverted { what: String, data: Option<Bytes> },
    #[error("{what}: cannot decode the return data: {reason}")]
    Decode { what: String, reason: String },
    #[error("{what}: {reason}")]
    Other { what: String, reason: String },
}

fn revert_hex(data: &Option<Bytes>) -> String {
    data.as_ref()
        .map_or_else(|| "none".into(), |d| d.to_string())
}

impl ChainError {
    /// The 4-byte custom error selector of a revert, if the node returned revert data.
    pub fn revert_selector(&self) -> Option<[u8; 4]> {
        match self {
            Self::Reverted { data: Some(d), .. } if d.len() >= 4 => Some([d[0], d[1], d[2], d[3]]),
            _ => None,
        }
    }

    fn from_rpc(what: &str, source: RpcError<TransportErrorKind>) -> Self {
        match source.as_error_resp() {
            Some(payload) if payload.message.contains("revert") => Self::Reverted {
                what: what.into(),
                data: payload.as_revert_data(),
            },
            _ => Self::Rpc {
                what: what.into(),
                source,
            },
        }
    }
}

/// One running anvil chain.
#[derive(Debug)]
pub struct Chain {
    pub name: String,
    pub chain_id: u64,
    /// Anvil's funded dev accounts (unlocked in [`Chain::provider`]'s wallet).
    pub accounts: Vec<Address>,
    /// Their private keys (anvil's well-known dev mnemonic; the same on every chain).
    pub keys: Vec<B256>,
    pub provider: DynProvider,
    rpc_url: String,
    // Declared last: dropped after the provider, stopping the process.
    anvil: AnvilInstance,
}

const RECEIPT_TIMEOUT: Duration = Duration::from_secs(60);

impl Chain {
    /// Starts anvil with `chain_id` on a free 127.0.0.1 port; its output goes to `log_file`.
    pub async fn start(
        artifacts: &Artifacts,
        name: &str,
        chain_id: u64,
        mining: Mining,
        prune_history: Option<u64>,
        own_session: bool,
        log_file: &Path,
    ) -> anyhow::Result<Self> {
        let anvil = if own_session {
            let wrapper = artifacts.devnet_dir().join("anvil-own-session.sh");
            Anvil::at(wrapper).env("DVN_ANVIL_BIN", artifacts.anvil_binary())
        } else {
            Anvil::at(artifacts.anvil_binary())
        };
        let mut anvil = anvil
            .host("127.0.0.1")
            .port(0u16)
            .chain_id(chain_id)
            .keep_stdout();
        if let Some(states) = prune_history {
            // Keep only the latest `states` states, as an ordinary (non-archive) node does:
            // reads at older blocks fail.
            anvil = anvil.args(["--prune-history".to_string(), states.to_string()]);
        }
        if let Mining::Interval(secs) = mining {
            anvil = anvil.block_time_f64(secs);
        }
        let mut instance = anvil.try_spawn()?;
        // anvil logs every request; keep draining its stdout so it never blocks on a full pipe.
        if let Some(stdout) = instance.child_mut().stdout.take() {
            let mut log = File::create(log_file)?;
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                    let _ = writeln!(log, "{line}");
                }
            });
        }
        let wallet: EthereumWallet = instance
            .wallet()
            .ok_or_else(|| anyhow::anyhow!("anvil printed no dev keys"))?;
        let rpc_url = format!("http://127.0.0.1:{}", instance.port());
        // Nonces come from the node for every transaction: alloy's cached nonce manager keeps a
        // nonce reserved by a transaction whose gas estimate reverted, leaving a gap that
        // blocks the account's next transaction forever (seen with a reverting commit).
        let provider = ProviderBuilder::default()
            .with_gas_estimation()
            .with_simple_nonce_management()
            .with_chain_id(chain_id)
            .wallet(wallet)
            .connect_http(rpc_url.parse()?)
            .erased();
        let actual = provider.get_chain_id().await?;
        anyhow::ensure!(
            actual == chain_id,
            "anvil {name} reports chain id {actual}, not {chain_id}"
        );
        let accounts = instance.addresses().to_vec();
        let keys = instance
            .keys()
            .iter()
            .map(|k| B256::from_slice(&k.to_bytes()))
            .collect();
        Ok(Self {
            name: name.into(),
            chain_id,
            accounts,
            keys,
            provider,
            rpc_url,
            anvil: instance,
        })
    }

    /// The JSON-RPC URL (always 127.0.0.1).
    pub fn rpc_url(&self) -> &str {
        &self.rpc_url
    }

    /// The same anvil's WebSocket endpoint (anvil serves both on one port).
    pub fn ws_url(&self) -> String {
        self.rpc_url.replacen("http://", "ws://", 1)
    }

    /// The anvil process id (for leak checks).
    pub fn pid(&self) -> u32 {
        self.anvil.child().id()
    }

    /// Deploys `code` (creation bytecode with constructor args appended) from `from`.
    pub async fn deploy(
        &self,
        what: &str,
        from: Address,
        code: Bytes,
    ) -> Result<Address, ChainError> {
        let tx = TransactionRequest::default()
            .from(from)
            .with_deploy_code(code);
        let receipt = self.send_tx(what, tx).await?;
        receipt.contract_address.ok_or_else(|| ChainError::Other {
            what: what.into(),
            reason: "receipt has no contract address".into(),
        })
    }

    /// Sends `call` to `to` from `from` with `value` wei and waits for a successful receipt.
    pub async fn send<C: SolCall>(
        &self,
        from: Address,
        to: Address,
        call: &C,
        value: U256,
    ) -> Result<TransactionReceipt, ChainError> {
        self.send_tx(C::SIGNATURE, call_request(from, to, call, value))
            .await
    }

    /// Broadcasts `call` to `to` from `from` with `value` wei and returns its hash once the
    /// node took it (see [`Chain::submit_tx`]).
    pub async fn submit<C: SolCall>(
        &self,
        from: Address,
        to: Address,
        call: &C,
        value: U256,
    ) -> Result<TxHash, ChainError> {
        self.submit_tx(C::SIGNATURE, call_request(from, to, call, value))
            .await
    }

    /// Every receipt of block `number`, or `None` before it exists (`eth_getBlockReceipts`).
    pub async fn block_receipts(
        &self,
        number: u64,
    ) -> Result<Option<Vec<TransactionReceipt>>, ChainError> {
        self.provider
            .get_block_receipts(number.into())
            .await
            .map_err(|e| ChainError::from_rpc("eth_getBlockReceipts", e))
    }

    /// Broadcasts `tx` and returns its hash once the node took it, without waiting for a
    /// block (the next one from the same account may follow at once: nonces are read from
    /// the pending pool).
    pub async fn submit_tx(
        &self,
        what: &str,
        tx: TransactionRequest,
    ) -> Result<TxHash, ChainError> {
        let pending = self
            .provider
            .send_transaction(tx)
            .await
            .map_err(|e| ChainError::from_rpc(what, e))?;
        Ok(*pending.tx_hash())
    }

    /// Broadcasts `tx` and waits for its receipt; a mined revert is an error.
    pub async fn send_tx(
        &self,
        what: &str,
        tx: TransactionRequest,
    ) -> Result<TransactionReceipt, ChainError> {
        let hash = self.submit_tx(what, tx).await?;
        let receipt = self.wait_receipt(what, hash).await?;
        if !receipt.status() {
            return Err(ChainError::Reverted {
                what: what.into(),
                data: None,
            });
        }
        Ok(receipt)
    }

    /// Polls for a receipt (anvil answers at once under automine; interval mining takes a block).
    pub async fn wait_receipt(
        &self,
        what: &str,
        hash: TxHash,
    ) -> Result<TransactionReceipt, ChainError> {
        let found = eventually(RECEIPT_TIMEOUT, Duration::from_millis(5), || async {
            self.provider
                .get_transaction_receipt(hash)
                .await
                .ok()
                .flatten()
        })
        .await;
        found.ok_or_else(|| ChainError::Other {
            what: what.into(),
            reason: format!("no receipt for {hash} within {RECEIPT_TIMEOUT:?}"),
        })
    }

    /// `eth_call` of `call` on `to` at the latest block.
    pub async fn call<C: SolCall>(&self, to: Address, call: &C) -> Result<C::Return, ChainError> {
        let tx = TransactionRequest::default()
            .to(to)
            .input(Bytes::from(call.abi_encode()).into());
        let out = self
            .provider
            .call(tx)
            .await
            .map_err(|e| ChainError::from_rpc(C::SIGNATURE, e))?;
        C::abi_decode_returns(&out).map_err(|e| ChainError::Decode {
            what: C::SIGNATURE.into(),
            reason: e.to_string(),
        })
    }

    /// Takes a snapshot of the whole chain state (`evm_snapshot`); [`Chain::revert`] returns
    /// to it, dropping every block after it — a reorg the test controls.
    pub async fn snapshot(&self) -> Result<U256, ChainError> {
        self.provider
            .raw_request::<_, U256>("evm_snapshot".into(), ())
            .await
            .map_err(|e| ChainError::from_rpc("evm_snapshot", e))
    }

    /// Returns to a snapshot (`evm_revert`).
    pub async fn revert(&self, id: U256) -> Result<(), ChainError> {
        let ok = self
            .provider
            .raw_request::<_, bool>("evm_revert".into(), (id,))
            .await
            .map_err(|e| ChainError::from_rpc("evm_revert", e))?;
        if ok {
            Ok(())
        } else {
            Err(ChainError::Other {
                what: "evm_revert".into(),
                reason: "snapshot not found".into(),
            })
        }
    }

    /// Mines `blocks` empty blocks.
    pub async fn mine(&self, blocks: u64) -> Result<(), ChainError> {
        self.provider
            .raw_request::<_, ()>("anvil_mine".into(), (U256::from(blocks),))
            .await
            .map_err(|e| ChainError::from_rpc("anvil_mine", e))
    }

    /// Mines one block stamped exactly `timestamp` (later than the latest block's); the chain's
    /// clock runs on from there.
    pub async fn mine_at(&self, timestamp: u64) -> Result<(), ChainError> {
        self.next_block_at(timestamp).await?;
        self.mine(1).await
    }

    /// Stamps the next block (mined by a transaction or on demand) exactly `timestamp`.
    pub async fn next_block_at(&self, timestamp: u64) -> Result<(), ChainError> {
        self.provider
            .raw_request::<_, ()>("evm_setNextBlockTimestamp".into(), (timestamp,))
            .await
            .map_err(|e| ChainError::from_rpc("evm_setNextBlockTimestamp", e))
    }

    /// Mines a block if the chain's clock is behind the wall clock: keeps an idle automine chain
    /// ticking like a live one without running its clock ahead (anvil stamps each block at
    /// least a second after the last).
    pub async fn keep_up_with_wall_clock(&self) -> Result<(), ChainError> {
        let wall = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        if self.timestamp().await? < wall {
            self.mine(1).await?;
        }
        Ok(())
    }

    /// Turns mining on every transaction on or off (off: transactions wait in the pool).
    pub async fn set_automine(&self, on: bool) -> Result<(), ChainError> {
        self.provider
            .raw_request::<_, ()>("evm_setAutomine".into(), (on,))
            .await
            .map_err(|e| ChainError::from_rpc("evm_setAutomine", e))
    }

    /// From now on a block every `secs` seconds, whether or not transactions wait (and no
    /// longer one per transaction): a live chain's cadence, switched on after deployment.
    pub async fn set_interval_mining(&self, secs: u64) -> Result<(), ChainError> {
        self.set_automine(false).await?;
        self.provider
            .raw_request::<_, ()>("evm_setIntervalMining".into(), (secs,))
            .await
            .map_err(|e| ChainError::from_rpc("evm_setIntervalMining", e))
    }

    /// Sets the chain's clock: the next blocks carry timestamps from `timestamp` on.
    pub async fn set_time(&self, timestamp: u64) -> Result<(), ChainError> {
        use alloy::providers::ext::AnvilApi;
        self.provider
            .anvil_set_time(timestamp)
            .await
            .map(|_| ())
            .map_err(|e| ChainError::from_rpc("evm_setTime", e))
    }

    /// The latest block number.
    pub async fn head(&self) -> Result<u64, ChainError> {
        self.provider
            .get_block_number()
            .await
            .map_err(|e| ChainError::from_rpc("head", e))
    }

    /// The latest block's timestamp (what `DVN.execute` compares expirations with).
    pub async fn timestamp(&self) -> Result<u64, ChainError> {
        let block = self
            .provider
            .get_block_by_number(alloy::eips::BlockNumberOrTag::Latest)
            .await
            .map_err(|e| ChainError::from_rpc("latest block", e))?
            .ok_or_else(|| ChainError::Other {
                what: "latest block".into(),
                reason: "none".into(),
            })?;
        Ok(block.header.timestamp)
    }

    /// All logs with `topic0` emitted by `address`, from genesis to the head.
    pub async fn logs(&self, address: Address, topic0: B256) -> Result<Vec<Log>, ChainError> {
        self.logs_in(address, topic0, 0, None).await
    }

    /// Logs with `topic0` emitted by `address` in blocks `from..=to` (`None`: the head).
    pub async fn logs_in(
        &self,
        address: Address,
        topic0: B256,
        from: u64,
        to: Option<u64>,
    ) -> Result<Vec<Log>, ChainError> {
        let mut filter = Filter::new()
            .address(address)
            .event_signature(topic0)
            .from_block(from);
        if let Some(to) = to {
            filter = filter.to_block(to);
        }
        self.provider
            .get_logs(&filter)
            .await
            .map_err(|e| ChainError::from_rpc("eth_getLogs", e))
    }
}

/// A transaction calling `call` on `to` from `from` with `value` wei (the rest filled in by
/// the provider).
fn call_request<C: SolCall>(
    from: Address,
    to: Address,
    call: &C,
    value: U256,
) -> TransactionRequest {
    TransactionRequest::default()
        .from(from)
        .to(to)
        .input(Bytes::from(call.abi_encode()).into())
        .value(value)
}
