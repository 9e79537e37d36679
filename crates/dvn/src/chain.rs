//! One EVM chain as the node sees it: several JSON-RPC endpoints, and reads that count only
//! when enough of them agree.
//!
//! Fail closed (KelpDAO, April 2026: a DVN failed over to poisoned RPCs and signed a packet
//! that never existed): every read a signature depends on is sent to *every* endpoint and is
//! accepted only when `rpc_quorum` of them return the identical answer. An endpoint that errors
//! or times out counts as a "no"; there is no fallback to fewer. Heads are the `rpc_quorum`-th
//! highest reported value, so one stale or racing endpoint cannot move confirmations forward.
//! Endpoints appear in logs and metrics by index only: URLs often carry API keys.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use alloy::eips::{BlockId, BlockNumberOrTag};
use alloy::network::TransactionBuilder;
use alloy::primitives::{Address, Bytes, B256};
use alloy::providers::{DynProvider, Provider, ProviderBuilder};
use alloy::rpc::types::{Filter, Log, TransactionReceipt, TransactionRequest};
use alloy::sol_types::SolCall;
use alloy::transports::{RpcError, TransportErrorKind};

use crate::config::ChainConfig;
use crate::heads::NewHeads;

/// Why a chain read did not produce an answer the node may act on.
#[derive(Debug, thiserror::Error)]
pub enum ChainError {
    #[error("{chain}: {what}: only {agreeing} of {total} RPC endpoints agree, {needed} required ({detail})")]
    NoQuorum {
        chain: String,
        what: &'static str,
        agreeing: usize,
        total: usize,
        needed: usize,
        detail: String,
    },
    #[error("{chain}: {what}: {reason}")]
    BadResponse {
        chain: String,
        what: &'static str,
        reason: String,
    },
    #[error("{chain}: broadcast failed on every endpoint: {detail}")]
    Broadcast { chain: String, detail: String },
}

/// A chain with its endpoints.
#[derive(Debug, Clone)]
pub struct EvmChain {
    pub config: ChainConfig,
    providers: Vec<DynProvider>,
    timeout: Duration,
    outvoted: Arc<Mutex<BTreeMap<usize, Outvoted>>>,
    /// The last head and latest block time read, and when (see [`Self::recent_head`]).
    recent: Arc<Mutex<Recent>>,
    /// What the chain's new-heads stream (`ws`) announced: hints, never read from.
    pub new_heads: Arc<NewHeads>,
}

/// How old a head or latest block time may be for the reads that accept a recent one.
pub const RECENT_READ: Duration = Duration::from_millis(200);

/// The last agreed head and latest block time, each with when it was read.
#[derive(Debug, Default)]
struct Recent {
    head: Option<(u64, Instant)>,
    latest_time: Option<(u64, Instant)>,
}

/// An endpoint's disagreements since they were last reported to the audit log.
#[derive(Debug, Default)]
struct Outvoted {
    methods: BTreeSet<&'static str>,
    count: u64,
    first_ms: i64,
    last_ms: i64,
    reported: Option<Instant>,
}

/// What goes into one `safety.endpoint_outvoted` audit record.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct OutvotedReport {
    pub endpoint: usize,
    pub methods: Vec<&'static str>,
    pub disagreements: u64,
    pub first_at_ms: i64,
    pub last_at_ms: i64,
}

/// Every method whose answers must agree (the `method` label of the disagreement counter).
pub const AGREED_METHODS: &[&str] = &[
    "eth_chainId",
    "eth_getBlockByNumber",
    "eth_getLogs",
    "eth_getTransactionReceipt",
    "eth_call",
    "eth_getCode",
];

/// Reads taken as the `rpc_quorum`-th highest answer (the other `method` labels of the
/// quorum-failure counter).
const THRESHOLD_READS: &[&str] = &[
    "eth_blockNumber",
    "finalized",
    "safe",
    "latest timestamp",
    "mined nonce",
    "pending nonce",
];

/// Outcome of one endpoint's answer, for the agreement count.
type Answer<T> = Result<T, String>;

/// The head block as one read saw it. Ordered by number first: of several endpoints' answers
/// the conservative one is the `rpc_quorum`-th highest block.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct LatestBlock {
    pub number: u64,
    pub timestamp: u64,
    pub hash: B256,
}

impl EvmChain {
    /// Builds the providers (no network traffic yet).
    pub fn new(config: &ChainConfig) -> anyhow::Result<Self> {
        let providers = config
            .rpc
            .iter()
            .enumerate()
            .map(|(i, url)| {
                let url = url.parse().map_err(|e| {
                    anyhow::anyhow!("chains {}: rpc[{i}] is not a URL: {e}", config.name)
                })?;
                Ok(ProviderBuilder::default().connect_http(url).erased())
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(Self {
            config: config.clone(),
            providers,
            timeout: Duration::from_millis(config.rpc_timeout_ms),
            outvoted: Arc::default(),
            recent: Arc::default(),
            new_heads: Arc::default(),
        })
    }

    /// The endpoints outvoted since their last report, for the audit log: an endpoint is
    /// reported when it first disagrees and then at most once per `every` (a lying endpoint
    /// disagrees on every read; a record per read would flood the log), each report summing
    /// what happened since the previous one.
    pub fn take_outvoted(&self, every: Duration) -> Vec<OutvotedReport> {
        let mut tally = self.outvoted.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let mut reports = Vec::new();
        for (&endpoint, seen) in tally.iter_mut() {
            let due = seen
                .reported
                .is_none_or(|at| now.duration_since(at) >= every);
            if seen.count == 0 || !due {
                continue;
            }
            reports.push(OutvotedReport {
                endpoint,
                methods: std::mem::take(&mut seen.methods).into_iter().collect(),
                disagreements: std::mem::take(&mut seen.count),
                first_at_ms: seen.first_ms,
                last_at_ms: seen.last_ms,
            });
            seen.reported = Some(now);
        }
        reports
    }

    fn tally_outvoted(&self, endpoint: usize, method: &'static str) {
        let now_ms = chrono::Utc::now().timestamp_millis();
        let mut tally = self.outvoted.lock().unwrap_or_else(|e| e.into_inner());
        let seen = tally.entry(endpoint).or_default();
        if seen.count == 0 {
            seen.first_ms = now_ms;
        }
        seen.count += 1;
        seen.last_ms = now_ms;
        seen.methods.insert(method);
    }

    pub fn name(&self) -> &str {
        &self.config.name
    }

    pub fn eid(&self) -> u32 {
        self.config.eid
    }

    fn quorum(&self) -> usize {
        self.config.quorum()
    }

    /// Asks every endpoint, in parallel, with a per-call timeout.
    async fn ask_all<T, F, Fut>(&self, what: &'static str, f: F) -> Vec<Answer<T>>
    where
        F: Fn(DynProvider) -> Fut,
        Fut: Future<Output = Result<T, RpcError<TransportErrorKind>>>,
    {
        let calls = self.providers.iter().enumerate().map(|(index, p)| {
            let call = f(p.clone());
            async move {
                let answer = match tokio::time::timeout(self.timeout, call).await {
                    Ok(Ok(v)) => Ok(v),
                    Ok(Err(e)) => Err(format!("rpc[{index}]: {}", brief(&redact(&e.to_string())))),
                    Err(_) => Err(format!("rpc[{index}]: timed out after {:?}", self.timeout)),
                };
                let outcome = if answer.is_ok() { "ok" } else { "error" };
                metrics::counter!("dvn_rpc_requests_total", "chain" => self.config.name.clone(), "endpoint" => index.to_string(), "method" => what, "outcome" => outcome).increment(1);
                if let Err(e) = &answer {
                    tracing::debug!(chain = %self.config.name, what, "{e}");
                }
                answer
            }
        });
        futures::future::join_all(calls).await
    }

    /// The answer at least `rpc_quorum` endpoints returned identically.
    async fn agree<T, F, Fut>(&self, what: &'static str, f: F) -> Result<T, ChainError>
    where
        T: PartialEq + Clone,
        F: Fn(DynProvider) -> Fut,
        Fut: Future<Output = Result<T, RpcError<TransportErrorKind>>>,
    {
        let mut agreeing = self.agree_all(what, f).await?;
        Ok(agreeing.swap_remove(0))
    }

    /// Every answer equal to the one at least `rpc_quorum` endpoints returned (never empty):
    /// for fields the comparison leaves out, which the caller keeps only where they all agree.
    async fn agree_all<T, F, Fut>(&self, what: &'static str, f: F) -> Result<Vec<T>, ChainError>
    where
        T: PartialEq + Clone,
        F: Fn(DynProvider) -> Fut,
        Fut: Future<Output = Result<T, RpcError<TransportErrorKind>>>,
    {
        self.agree_all_counting(what, f, |_, _| true).await
    }

    /// [`Self::agree`] for something that appears at some block (a receipt, a block by
    /// number): an endpoint that has not reached that block yet answers "none", one a block
    /// ahead of the others already has it. Neither is a lie, so "none" against "some" is not
    /// counted as a disagreement; two different answers that both have it are.
    async fn agree_seen<T, F, Fut>(&self, what: &'static str, f: F) -> Result<Option<T>, ChainError>
    where
        T: PartialEq + Clone,
        F: Fn(DynProvider) -> Fut,
        Fut: Future<Output = Result<Option<T>, RpcError<TransportErrorKind>>>,
    {
        let mut agreeing = self
            .agree_all_counting(what, f, |answer: &Option<T>, agreed: &Option<T>| {
                answer.is_some() && agreed.is_some()
            })
            .await?;
        Ok(agreeing.swap_remove(0))
    }

    /// [`Self::agree_all`], counting an outvoted answer as a disagreement only where
    /// `comparable(answer, agreed)`.
    async fn agree_all_counting<T, F, Fut>(
        &self,
        what: &'static str,
        f: F,
        comparable: impl Fn(&T, &T) -> bool,
    ) -> Result<Vec<T>, ChainError>
    where
        T: PartialEq + Clone,
        F: Fn(DynProvider) -> Fut,
        Fut: Future<Output = Result<T, RpcError<TransportErrorKind>>>,
    {
        let answers = self.ask_all(what, f).await;
        let ok: Vec<&T> = answers.iter().filter_map(|a| a.as_ref().ok()).collect();
        for candidate in &ok {
            let votes = ok.iter().filter(|v| *v == candidate).count();
            if votes >= self.quorum() {
                self.note_disagreements(what, &answers, candidate, &comparable);
                return Ok(ok
                    .iter()
                    .filter(|v| *v == candidate)
                    .map(|v| (*v).clone())
                    .collect());
            }
        }
        let best = ok
            .iter()
            .map(|c| ok.iter().filter(|v| *v == c).count())
            .max()
            .unwrap_or(0);
        let errors: Vec<String> = answers.into_iter().filter_map(Result::err).collect();
        let detail = if errors.is_empty() {
            "answers differ".to_string()
        } else {
            errors.join("; ")
        };
        self.count_quorum_failure(what);
        Err(ChainError::NoQuorum {
            chain: self.config.name.clone(),
            what,
            agreeing: best,
            total: self.providers.len(),
            needed: self.quorum(),
            detail,
        })
    }

    /// The `rpc_quorum`-th highest of the numbers the endpoints report: at least that many
    /// endpoints have reached it.
    async fn conservative<T: Ord + Copy>(
        &self,
        what: &'static str,
        answers: Vec<Answer<T>>,
    ) -> Result<T, ChainError> {
        let mut ok: Vec<T> = answers
            .iter()
            .filter_map(|a| a.as_ref().ok().copied())
            .collect();
        ok.sort_unstable_by(|a, b| b.cmp(a));
        ok.get(self.quorum().saturating_sub(1))
            .copied()
            .ok_or_else(|| {
                self.count_quorum_failure(what);
                let detail = answers
                    .into_iter()
                    .filter_map(Result::err)
                    .collect::<Vec<_>>()
                    .join("; ");
                ChainError::NoQuorum {
                    chain: self.config.name.clone(),
                    what,
                    agreeing: ok.len(),
                    total: self.providers.len(),
                    needed: self.quorum(),
                    detail,
                }
            })
    }

    /// An endpoint that answered, but differently from the agreed answer, is lying or broken:
    /// outvoted this time, it must still be seen before the day it is not a minority. Counted
    /// per endpoint index and method, and logged (index, never URL).
    fn note_disagreements<T: PartialEq>(
        &self,
        what: &'static str,
        answers: &[Answer<T>],
        agreed: &T,
        comparable: impl Fn(&T, &T) -> bool,
    ) {
        for (index, answer) in answers.iter().enumerate() {
            if matches!(answer, Ok(v) if v != agreed && comparable(v, agreed)) {
                metrics::counter!("dvn_rpc_disagreements_total", "chain" => self.config.name.clone(), "endpoint" => index.to_string(), "method" => what).increment(1);
                tracing::warn!(chain = %self.config.name, endpoint = index, method = what, "RPC endpoint answered differently from the agreed answer (outvoted)");
                self.tally_outvoted(index, what);
            }
        }
    }

    /// Registers the disagreement counter at zero for every endpoint and method the node
    /// compares, so a `rate()` alert and a panel see a series before the first disagreement.
    pub fn zero_init_metrics(&self) {
        for index in 0..self.providers.len() {
            for method in AGREED_METHODS {
                metrics::counter!("dvn_rpc_disagreements_total", "chain" => self.config.name.clone(), "endpoint" => index.to_string(), "method" => *method).increment(0);
            }
        }
        for method in AGREED_METHODS.iter().chain(THRESHOLD_READS) {
            metrics::counter!("dvn_rpc_quorum_failures_total", "chain" => self.config.name.clone(), "method" => *method).increment(0);
        }
    }

    fn count_quorum_failure(&self, what: &'static str) {
        metrics::counter!("dvn_rpc_quorum_failures_total", "chain" => self.config.name.clone(), "method" => what).increment(1);
    }

    /// `eth_chainId`, agreed.
    pub async fn chain_id(&self) -> Result<u64, ChainError> {
        self.agree("eth_chainId", |p| async move { p.get_chain_id().await })
            .await
    }

    /// The head that at least `rpc_quorum` endpoints have reached.
    pub async fn head(&self) -> Result<u64, ChainError> {
        let answers = self
            .ask_all(
                "eth_blockNumber",
                |p| async move { p.get_block_number().await },
            )
            .await;
        let head = self.conservative("eth_blockNumber", answers).await?;
        self.recent.lock().unwrap_or_else(|e| e.into_inner()).head = Some((head, Instant::now()));
        Ok(head)
    }

    /// The head read within [`RECENT_READ`] (by any stage), or a fresh one. For reads where a
    /// moment-old head is as good — it can only count fewer confirmations, never more: the
    /// sign stage, the watcher and the pre-send reorg window each step many times a second
    /// under load and would otherwise each send their own.
    pub async fn recent_head(&self) -> Result<u64, ChainError> {
        let known = self.recent.lock().unwrap_or_else(|e| e.into_inner()).head;
        match known {
            Some((head, at)) if at.elapsed() < RECENT_READ => Ok(head),
            _ => self.head().await,
        }
    }

    /// The latest block time read within [`RECENT_READ`], or a fresh one: for the sign
    /// stage's expirations (whole lifetimes, see `pipeline::expiration`). Decisions on whose
    /// turn it is read afresh ([`Self::latest_timestamp`]).
    pub async fn recent_latest_timestamp(&self) -> Result<u64, ChainError> {
        let known = self
            .recent
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .latest_time;
        match known {
            Some((time, at)) if at.elapsed() < RECENT_READ => Ok(time),
            _ => self.latest_timestamp().await,
        }
    }

    /// The `finalized` block number that at least `rpc_quorum` endpoints report.
    pub async fn finalized(&self) -> Result<u64, ChainError> {
        let answers = self
            .ask_all("eth_getBlockByNumber(finalized)", |p| async move {
                let block = p.get_block_by_number(BlockNumberOrTag::Finalized).await?;
                Ok(block.map_or(0, |b| b.header.number))
            })
            .await;
        self.conservative("finalized", answers).await
    }

    /// The `safe` block number that at least `rpc_quorum` endpoints report (Ethereum: justified;
    /// Conflux eSpace: confirmed by PoW).
    pub async fn safe(&self) -> Result<u64, ChainError> {
        let answers = self
            .ask_all("eth_getBlockByNumber(safe)", |p| async move {
                let block = p.get_block_by_number(BlockNumberOrTag::Safe).await?;
                Ok(block.map_or(0, |b| b.header.number))
            })
            .await;
        self.conservative("safe", answers).await
    }

    /// `(hash, timestamp)` of block `number`, agreed.
    pub async fn block(&self, number: u64) -> Result<(B256, u64), ChainError> {
        self.block_opt(number)
            .await?
            .ok_or_else(|| self.bad("eth_getBlockByNumber", format!("block {number} not found")))
    }

    /// `(hash, timestamp)` of block `number`; `None` when the endpoints agree it does not exist
    /// (yet, or any more: the chain was rolled back below it).
    pub async fn block_opt(&self, number: u64) -> Result<Option<(B256, u64)>, ChainError> {
        self.agree_seen("eth_getBlockByNumber", |p| async move {
            let block = p
                .get_block_by_number(BlockNumberOrTag::Number(number))
                .await?;
            Ok(block.map(|b| (b.header.hash, b.header.timestamp)))
        })
        .await
    }

    /// The latest block's timestamp (what `DVN.execute` compares expirations with).
    pub async fn latest_timestamp(&self) -> Result<u64, ChainError> {
        Ok(self.latest_block().await?.timestamp)
    }

    /// The latest block's number, timestamp and hash, read from one block (two separate reads
    /// can straddle a new block and pair one block's number with the other's time). Of the
    /// endpoints' answers, the one at least `rpc_quorum` endpoints have reached.
    pub async fn latest_block(&self) -> Result<LatestBlock, ChainError> {
        let answers = self
            .ask_all("eth_getBlockByNumber(latest)", |p| async move {
                let block = p.get_block_by_number(BlockNumberOrTag::Latest).await?;
                Ok(block.map_or_else(LatestBlock::default, |b| LatestBlock {
                    number: b.header.number,
                    timestamp: b.header.timestamp,
                    hash: b.header.hash,
                }))
            })
            .await;
        let latest = self.conservative("latest timestamp", answers).await?;
        let now = Instant::now();
        let mut recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        recent.latest_time = Some((latest.timestamp, now));
        recent.head = Some((latest.number, now));
        Ok(latest)
    }

    /// Logs in `[from, to]` from `addresses` with any of `topics`, agreed in full.
    pub async fn logs(
        &self,
        from: u64,
        to: u64,
        addresses: &[Address],
        topics: &[B256],
    ) -> Result<Vec<Log>, ChainError> {
        let filter = Filter::new()
            .address(addresses.to_vec())
            .event_signature(topics.to_vec())
            .from_block(from)
            .to_block(to);
        let agreeing = self
            .agree_all("eth_getLogs", |p| {
                let filter = filter.clone();
                async move {
                    Ok(p.get_logs(&filter)
                        .await?
                        .into_iter()
                        .map(LogKey)
                        .collect::<Vec<_>>())
                }
            })
            .await?;
        let logs = agreed_block_timestamps(agreeing);
        // `removed: true` marks a log of a block that was reorganised away: never act on it,
        // and do not move past it either; the range is read again once the chain settles.
        if logs.iter().any(|l| l.removed) {
            metrics::counter!("dvn_reorgs_detected_total", "chain" => self.config.name.clone())
                .increment(1);
            return Err(self.bad(
                "eth_getLogs",
                format!("a log in blocks {from}..={to} is marked removed (reorg in progress)"),
            ));
        }
        Ok(logs)
    }

    /// The code at `address` (latest), agreed: empty for an account without a contract.
    pub async fn code(&self, address: Address) -> Result<Bytes, ChainError> {
        self.agree(
            "eth_getCode",
            |p| async move { p.get_code_at(address).await },
        )
        .await
    }

    /// A transaction receipt, agreed (`None` when the agreed answer is "no such receipt").
    pub async fn receipt(&self, tx: B256) -> Result<Option<TransactionReceipt>, ChainError> {
        let answers = self.agree_seen("eth_getTransactionReceipt", |p| async move {
            Ok(p.get_transaction_receipt(tx).await?.map(ReceiptKey::from))
        });
        Ok(answers.await?.map(|k| k.0))
    }

    /// `eth_call` at `block`, agreed on the exact return bytes. `None` reads at the head
    /// `rpc_quorum` endpoints have reached ([`Self::recent_head`]), not at each endpoint's
    /// own latest: endpoints a block apart answer "latest" for different states, and the
    /// one outvoted would be counted as lying when it is only early or late.
    pub async fn call<C: SolCall>(
        &self,
        to: Address,
        call: &C,
        block: Option<u64>,
    ) -> Result<C::Return, ChainError> {
        let block = match block {
            Some(number) => number,
            None => self.recent_head().await?,
        };
        let data = Bytes::from(call.abi_encode());
        // Which contract reads the `eth_call`s are (one per endpoint asked, as
        // `dvn_rpc_requests_total` counts them): what a read budget is spent on.
        let function = C::SIGNATURE.split('(').next().unwrap_or(C::SIGNATURE);
        metrics::counter!("dvn_rpc_calls_total", "chain" => self.config.name.clone(), "function" => function)
            .increment(self.providers.len() as u64);
        let out = self
            .agree("eth_call", |p| {
                let tx = TransactionRequest::default()
                    .with_to(to)
                    .with_input(data.clone());
                async move { p.call(tx).block(BlockId::number(block)).await }
            })
            .await?;
        C::abi_decode_returns(&out)
            .map_err(|e| self.bad("eth_call", format!("{}: {e}", C::SIGNATURE)))
    }

    /// The pending nonce of `account` that at least `rpc_quorum` endpoints have reached: a
    /// stale endpoint is outvoted (it would make us reuse a nonce), and so is one lying high
    /// (it would leave every later transaction waiting behind a gap).
    pub async fn pending_nonce(&self, account: Address) -> Result<u64, ChainError> {
        let answers = self
            .ask_all("eth_getTransactionCount", |p| async move {
                p.get_transaction_count(account).pending().await
            })
            .await;
        self.conservative("pending nonce", answers).await
    }

    /// The number of transactions of `account` mined at the head that `rpc_quorum` endpoints
    /// have reached.
    pub async fn mined_nonce(&self, account: Address) -> Result<u64, ChainError> {
        let answers = self
            .ask_all("eth_getTransactionCount", |p| async move {
                p.get_transaction_count(account).latest().await
            })
            .await;
        self.conservative("mined nonce", answers).await
    }

    /// The first endpoint that answers, for non-critical reads (fee and gas estimates).
    pub fn any_provider(&self) -> &DynProvider {
        // Config validation guarantees at least one endpoint.
        &self.providers[0]
    }

    /// `(maxFeePerGas, maxPriorityFeePerGas)` suggested by the first endpoint that answers.
    pub async fn fees(&self) -> Result<(u128, u128), ChainError> {
        let answers = self
            .ask_all("eth_feeHistory", |p| async move {
                let f = p
                    .estimate_eip1559_fees()
                    .await
                    .map_err(|e| TransportErrorKind::custom_str(&e.to_string()))?;
                Ok((f.max_fee_per_gas, f.max_priority_fee_per_gas))
            })
            .await;
        answers
            .into_iter()
            .find_map(Result::ok)
            .ok_or_else(|| self.bad("eth_feeHistory", "no endpoint answered".into()))
    }

    /// The highest gas estimate of the endpoints that answer (the caller adds headroom): an
    /// endpoint estimating low cannot make the transaction run out of gas.
    pub async fn estimate_gas(&self, tx: &TransactionRequest) -> Result<u64, ChainError> {
        let answers = self
            .ask_all("eth_estimateGas", |p| {
                let tx = tx.clone();
                async move { p.estimate_gas(tx).await }
            })
            .await;
        let highest = answers
            .iter()
            .filter_map(|a| a.as_ref().ok().copied())
            .max();
        highest.ok_or_else(|| self.none_answered("eth_estimateGas", answers))
    }

    /// The error when no endpoint gave an answer: each one's reason.
    fn none_answered<T>(&self, what: &'static str, answers: Vec<Answer<T>>) -> ChainError {
        let detail = answers
            .into_iter()
            .filter_map(Result::err)
            .collect::<Vec<_>>()
            .join("; ");
        self.bad(what, detail)
    }

    /// Runs `tx` once with `eth_call` on every endpoint: fine when any endpoint ran it
    /// without reverting (as with [`Self::estimate_gas`], which this replaces where the gas
    /// limit is already known: an endpoint that fails cannot make the transaction revert).
    pub async fn runs_without_revert(&self, tx: &TransactionRequest) -> Result<(), ChainError> {
        let answers = self
            .ask_all("eth_call", |p| {
                let tx = tx.clone();
                async move { p.call(tx).await.map(|_| ()) }
            })
            .await;
        if answers.iter().any(Result::is_ok) {
            return Ok(());
        }
        Err(self.none_answered("eth_call", answers))
    }

    /// Sends a signed transaction to every endpoint; succeeds if any accepted it (or already
    /// knows it).
    pub async fn broadcast(&self, raw: &[u8]) -> Result<(), ChainError> {
        let answers = self
            .ask_all("eth_sendRawTransaction", |p| {
                let raw = raw.to_vec();
                async move { p.send_raw_transaction(&raw).await.map(|_| ()) }
            })
            .await;
        let mut errors = Vec::new();
        for answer in answers {
            match answer {
                Ok(()) => return Ok(()),
                Err(e)
                    if e.contains("already known")
                        || e.contains("nonce too low") && e.contains("known") =>
                {
                    return Ok(())
                }
                Err(e) => errors.push(e),
            }
        }
        Err(ChainError::Broadcast {
            chain: self.config.name.clone(),
            detail: errors.join("; "),
        })
    }

    fn bad(&self, what: &'static str, reason: String) -> ChainError {
        ChainError::BadResponse {
            chain: self.config.name.clone(),
            what,
            reason,
        }
    }
}

/// Compares logs by the fields that define them (emitter, topics, data, block hash and number,
/// transaction hash, log index), not by optional extras some providers add or leave out
/// (`blockTimestamp`, `transactionIndex`, `removed`).
#[derive(Debug, Clone)]
struct LogKey(Log);

/// The agreed logs (every agreeing endpoint's answer, equal but for what [`LogKey`] leaves
/// out), each with its `blockTimestamp` kept only where every agreeing endpoint gave the same
/// one: not all clients fill the field (it is recent), so it is not part of the agreement,
/// and a timestamp one endpoint alone vouches for is dropped (the caller reads the block).
fn agreed_block_timestamps(agreeing: Vec<Vec<LogKey>>) -> Vec<Log> {
    let mut answers = agreeing.into_iter();
    let Some(first) = answers.next() else {
        return Vec::new();
    };
    let mut logs: Vec<Log> = first.into_iter().map(|k| k.0).collect();
    for other in answers {
        for (log, theirs) in logs.iter_mut().zip(other) {
            if log.block_timestamp != theirs.0.block_timestamp {
                log.block_timestamp = None;
            }
        }
    }
    logs
}

impl PartialEq for LogKey {
    fn eq(&self, other: &Self) -> bool {
        let (a, b) = (&self.0, &other.0);
        a.inner == b.inner
            && a.block_hash == b.block_hash
            && a.block_number == b.block_number
            && a.transaction_hash == b.transaction_hash
            && a.log_index == b.log_index
    }
}

/// Compares receipts by what the node relies on (status, block, logs), not by every field an
/// endpoint may fill differently.
#[derive(Debug, Clone)]
struct ReceiptKey(TransactionReceipt);

impl From<TransactionReceipt> for ReceiptKey {
    fn from(r: TransactionReceipt) -> Self {
        Self(r)
    }
}

impl PartialEq for ReceiptKey {
    fn eq(&self, other: &Self) -> bool {
        let (a, b) = (&self.0, &other.0);
        a.status() == b.status()
            && a.block_hash == b.block_hash
            && a.block_number == b.block_number
            && a.transaction_index == b.transaction_index
            && a.inner.logs().len() == b.inner.logs().len()
            && a.inner
                .logs()
                .iter()
                .zip(b.inner.logs())
                .all(|(x, y)| x.inner == y.inner && x.log_index == y.log_index)
    }
}

/// At most a few hundred characters of an endpoint's error: a deserialization error quotes the
/// whole response, which would flood the log.
fn brief(message: &str) -> String {
    const MAX: usize = 300;
    match message.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{}… ({} bytes)", &message[..cut], message.len()),
        None => message.to_string(),
    }
}

/// Removes anything URL-like from an error message (endpoints may embed API keys).
pub fn redact(message: &str) -> String {
    message
        .split_whitespace()
        .map(|w| if w.contains("://") { "<url>" } else { w })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_log_keeps_its_block_time_only_where_every_agreeing_endpoint_gave_it() {
        let log = |at: Option<u64>| {
            LogKey(Log {
                block_number: Some(7),
                block_timestamp: at,
                ..Default::default()
            })
        };
        let times = |logs: Vec<Log>| logs.iter().map(|l| l.block_timestamp).collect::<Vec<_>>();
        // Two endpoints, two logs each: the first log's time agreed, the second's not.
        let agreed = agreed_block_timestamps(vec![
            vec![log(Some(100)), log(Some(100))],
            vec![log(Some(100)), log(Some(999))],
        ]);
        assert_eq!(times(agreed), [Some(100), None]);
        // An endpoint that does not fill the field: nobody's time is taken alone.
        let agreed = agreed_block_timestamps(vec![vec![log(Some(100))], vec![log(None)]]);
        assert_eq!(times(agreed), [None]);
        // One endpoint (rpc_quorum 1): its answer is the agreement.
        assert_eq!(
            times(agreed_block_timestamps(vec![vec![log(Some(5))]])),
            [Some(5)]
        );
        assert!(agreed_block_timestamps(Vec::new()).is_empty());
    }

    #[test]
    fn long_errors_are_cut() {
        let long = "x".repeat(5_000);
        let out = brief(&long);
        assert!(out.len() < 400 && out.ends_with("(5000 bytes)"), "{out}");
        assert_eq!(brief("short"), "short");
    }

    #[test]
    fn an_outvoted_endpoint_is_reported_at_once_then_summed_at_most_once_per_interval() {
        let config = crate::config::validate::tests::sample_config();
        let chain = EvmChain::new(&config.chains[0]).unwrap();
        assert!(chain.take_outvoted(Duration::from_secs(3600)).is_empty());
        chain.tally_outvoted(2, "eth_getLogs");
        chain.tally_outvoted(2, "eth_getLogs");
        chain.tally_outvoted(2, "eth_call");
        let first = chain.take_outvoted(Duration::from_secs(3600));
        assert_eq!(first.len(), 1);
        assert_eq!(first[0].endpoint, 2);
        assert_eq!(first[0].methods, ["eth_call", "eth_getLogs"]);
        assert_eq!(first[0].disagreements, 3);
        // Within the interval: held back and summed, not dropped.
        chain.tally_outvoted(2, "eth_getLogs");
        chain.tally_outvoted(0, "eth_chainId");
        let second = chain.take_outvoted(Duration::from_secs(3600));
        assert_eq!(
            second.iter().map(|r| r.endpoint).collect::<Vec<_>>(),
            [0],
            "endpoint 2 waits for its interval; endpoint 0 is new"
        );
        let later = chain.take_outvoted(Duration::ZERO);
        assert_eq!(later.len(), 1);
        assert_eq!((later[0].endpoint, later[0].disagreements), (2, 1));
        assert!(chain.take_outvoted(Duration::ZERO).is_empty());
    }

    #[test]
    fn urls_never_reach_error_text() {
        let msg =
            "error sending request for url (https://eth.example/v2/SECRETKEY): connection refused";
        let out = redact(msg);
        assert!(!out.contains("SECRETKEY"), "{out}");
        assert!(out.contains("connection refused"));
    }
}
