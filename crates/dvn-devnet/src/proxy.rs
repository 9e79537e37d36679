//! A JSON-RPC forwarding proxy on 127.0.0.1 that a test can switch between forwarding,
//! failing (HTTP 503) and stopped (port closed), make its `eth_getLogs` answers go bad in
//! the ways real providers do (see [`LogFaults`]), answer as an honest node one block behind
//! the others, or hold transactions back: accepted as a
//! node accepts them, but kept until the test releases them (a transaction stuck somewhere
//! between its sender and the chain, that may still land later), or hold back the answers to
//! one contract function's `eth_call`s (a read made now whose answer arrives late: see
//! [`RpcProxy::hold_call_answers`]).

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use tokio::task::JoinHandle;

/// What the proxy does with a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyMode {
    Forward = 0,
    Fail = 1,
}

/// What the proxy does to `eth_getLogs` answers (all off by default).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LogFaults {
    /// Silently leave out every `PacketSent` log of this block (a provider dropping a log).
    pub drop_packet_sent_in_block: Option<u64>,
    /// Return at most this many logs, with no error (silent truncation at a provider's cap).
    pub truncate_to: Option<usize>,
    /// Change every log's data (a lying or broken provider).
    pub corrupt: bool,
    /// Mark every log `removed: true` (a provider reporting a reorg).
    pub mark_removed: bool,
    /// Add a field some providers add (`blockTimestamp`): a harmless extra that must not
    /// count as disagreement.
    pub extras: bool,
    /// Answer as a Conflux eSpace RPC does: `eth_getLogs` over more than 1,000 blocks is refused
    /// with an error, `net_peerCount` does not exist, and the calldata gas floor (CIP-130) holds:
    /// a transaction whose gas limit is under 100 gas per calldata byte is refused, and
    /// `eth_estimateGas` answers at least that floor.
    pub conflux_quirks: bool,
    /// Refuse a transaction larger than 128 KiB as geth's pool does ("oversized data").
    pub geth_size_limit: bool,
    /// Answer every request as an honest node that has not imported the newest block yet (one
    /// block behind the others): see [`one_block_behind`].
    pub behind: bool,
}

/// The JSON-RPC error a Conflux eSpace node would give `request`, if any.
fn conflux_refusal(request: &[u8]) -> Option<Bytes> {
    let request: serde_json::Value = serde_json::from_slice(request).ok()?;
    let id = request["id"].clone();
    let hex =
        |v: &serde_json::Value| u64::from_str_radix(v.as_str()?.trim_start_matches("0x"), 16).ok();
    let error = match request["method"].as_str()? {
        "net_peerCount" => serde_json::json!({ "code": -32601, "message": "Method not found" }),
        "eth_sendRawTransaction" => {
            use alloy::consensus::Transaction;
            let (_, tx) = raw_transaction(&request)?;
            if tx.gas_limit() >= conflux_calldata_floor(tx.input().len()) {
                return None;
            }
            // What conflux-rust answers for `NotEnoughBaseGas`.
            serde_json::json!({ "code": -32000, "message": "intrinsic gas too low" })
        }
        "eth_getLogs" => {
            let filter = &request["params"][0];
            let (from, to) = (hex(&filter["fromBlock"])?, hex(&filter["toBlock"])?);
            if to.saturating_sub(from) < 1_000 {
                return None;
            }
            serde_json::json!({
                "code": -32602,
                "message": format!("Invalid params: block range {from}..{to} exceeds the maximum of 1000 epochs"),
            })
        }
        _ => return None,
    };
    let body = serde_json::json!({ "jsonrpc": "2.0", "id": id, "error": error });
    serde_json::to_vec(&body).ok().map(Bytes::from)
}

/// Geth's pool's largest transaction (`txMaxSize`, four 32-KiB slots).
const GETH_TX_MAX_SIZE: usize = 128 * 1024;

/// Geth's answer to `request` when it sends a transaction larger than its pool takes.
fn oversized_refusal(request: &[u8]) -> Option<Bytes> {
    let request: serde_json::Value = serde_json::from_slice(request).ok()?;
    if request["method"] != "eth_sendRawTransaction" {
        return None;
    }
    let raw = alloy::primitives::hex::decode(request["params"][0].as_str()?).ok()?;
    if raw.len() <= GETH_TX_MAX_SIZE {
        return None;
    }
    let body = serde_json::json!({
        "jsonrpc": "2.0",
        "id": request["id"].clone(),
        "error": { "code": -32000, "message": "oversized data" },
    });
    serde_json::to_vec(&body).ok().map(Bytes::from)
}

/// The least gas limit Conflux accepts for `calldata_len` bytes of input (CIP-130).
fn conflux_calldata_floor(calldata_len: usize) -> u64 {
    calldata_len as u64 * 100
}

/// Upstream's `eth_estimateGas` answer as Conflux's would be: the gas the call needs plus a
/// sixth, and at least the calldata floor (conflux-rust `estimated_gas_limit`); `None` when
/// `request` is not an estimate or the answer not a number.
fn conflux_estimate(request: &[u8], answer: &[u8]) -> Option<Bytes> {
    let request: serde_json::Value = serde_json::from_slice(request).ok()?;
    if request["method"] != "eth_estimateGas" {
        return None;
    }
    let call = &request["params"][0];
    let input = call["input"].as_str().or_else(|| call["data"].as_str())?;
    let floor = conflux_calldata_floor(alloy::primitives::hex::decode(input).ok()?.len());
    let mut answer: serde_json::Value = serde_json::from_slice(answer).ok()?;
    let estimate = u64::from_str_radix(answer["result"].as_str()?.strip_prefix("0x")?, 16).ok()?;
    let estimate = estimate.saturating_mul(7) / 6;
    answer["result"] = serde_json::json!(format!("{:#x}", estimate.max(floor)));
    serde_json::to_vec(&answer).ok().map(Bytes::from)
}

/// Transactions the proxy holds back instead of forwarding.
#[derive(Debug, Default)]
struct TxHold {
    /// Hold every transaction to this address (`None`: forward all)...
    to: Option<alloy::primitives::Address>,
    /// ...or every transaction whatever its recipient.
    all: bool,
    /// What was held, in the order it came (raw transaction hex).
    held: Vec<String>,
}

/// `eth_call`s of one function selector: counted, and while holding, their answers kept back.
#[derive(Debug)]
struct CallGate {
    selector: [u8; 4],
    /// Answers passed back to the caller.
    answered: usize,
    /// Answers waiting for a release.
    held: usize,
    /// `true` while answers are held; a release sets `false`, waking every waiting answer.
    holding: tokio::sync::watch::Sender<bool>,
}

#[derive(Clone)]
struct Shared {
    upstream: String,
    mode: Arc<AtomicU8>,
    faults: Arc<Mutex<LogFaults>>,
    hold: Arc<Mutex<TxHold>>,
    gate: Arc<Mutex<Option<CallGate>>>,
    client: alloy::transports::http::reqwest::Client,
}

/// A running proxy; dropping it closes the port.
#[derive(Debug)]
pub struct RpcProxy {
    pub url: String,
    upstream: String,
    mode: Arc<AtomicU8>,
    faults: Arc<Mutex<LogFaults>>,
    hold: Arc<Mutex<TxHold>>,
    gate: Arc<Mutex<Option<CallGate>>>,
    task: JoinHandle<()>,
}

impl RpcProxy {
    /// Starts forwarding to `upstream` on a free 127.0.0.1 port.
    pub async fn start(upstream: &str) -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        let mode = Arc::new(AtomicU8::new(ProxyMode::Forward as u8));
        let faults = Arc::new(Mutex::new(LogFaults::default()));
        let hold = Arc::new(Mutex::new(TxHold::default()));
        let gate = Arc::new(Mutex::new(None));
        let shared = Shared {
            upstream: upstream.to_string(),
            mode: Arc::clone(&mode),
            faults: Arc::clone(&faults),
            hold: Arc::clone(&hold),
            gate: Arc::clone(&gate),
            client: Default::default(),
        };
        let app = Router::new().route("/", post(forward)).with_state(shared);
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self {
            url,
            upstream: upstream.to_string(),
            mode,
            faults,
            hold,
            gate,
            task,
        })
    }

    /// From now on, counts the `eth_call`s whose calldata starts with `selector` (one contract
    /// function), forwarding them as usual; replaces an earlier watch (releasing what it held).
    pub fn watch_calls(&self, selector: [u8; 4]) {
        let mut gate = self.gate.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(old) = gate.take() {
            old.holding.send_replace(false);
        }
        *gate = Some(CallGate {
            selector,
            answered: 0,
            held: 0,
            holding: tokio::sync::watch::channel(false).0,
        });
    }

    /// While `on`, every watched call is still forwarded at once (the chain is read now), but
    /// its answer is kept here until [`RpcProxy::release_call_answers`]: a read whose answer
    /// arrives late, as over a slow link, and describes the chain as it was when read.
    pub fn hold_call_answers(&self, on: bool) {
        if let Some(gate) = self.gate.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
            gate.holding.send_replace(on);
        }
    }

    /// Lets every held answer go back to its caller and stops holding.
    pub fn release_call_answers(&self) {
        self.hold_call_answers(false);
    }

    /// Watched calls answered so far, and answers held now.
    pub fn watched_calls(&self) -> (usize, usize) {
        self.gate
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map_or((0, 0), |g| (g.answered, g.held))
    }

    /// From now on, every transaction sent to `to` (`eth_sendRawTransaction`) is answered with
    /// its hash, as a node accepting it would, and kept here instead of reaching the chain;
    /// `None` stops holding (what is held stays held until [`RpcProxy::release_held`]).
    pub fn hold_transactions_to(&self, to: Option<alloy::primitives::Address>) {
        let mut hold = self.hold.lock().unwrap_or_else(|e| e.into_inner());
        hold.to = to;
        hold.all = false;
    }

    /// From now on, every transaction is held (a cancel too), whatever its recipient.
    pub fn hold_all_transactions(&self) {
        self.hold.lock().unwrap_or_else(|e| e.into_inner()).all = true;
    }

    /// How many transactions are held.
    pub fn held(&self) -> usize {
        self.hold
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .held
            .len()
    }

    /// Sends every held transaction on to the chain, in the order they came, and returns how
    /// many the chain accepted (a replaced or already-used nonce is refused there).
    pub async fn release_held(&self) -> anyhow::Result<usize> {
        let held = std::mem::take(&mut self.hold.lock().unwrap_or_else(|e| e.into_inner()).held);
        let client = alloy::transports::http::reqwest::Client::new();
        let mut accepted = 0;
        for raw in held {
            let body = serde_json::json!({
                "jsonrpc": "2.0", "id": 1, "method": "eth_sendRawTransaction", "params": [raw],
            });
            let answer: serde_json::Value = client
                .post(&self.upstream)
                .json(&body)
                .send()
                .await?
                .json()
                .await?;
            if answer.get("result").is_some() {
                accepted += 1;
            }
        }
        Ok(accepted)
    }

    pub fn set_mode(&self, mode: ProxyMode) {
        self.mode.store(mode as u8, Ordering::SeqCst);
    }

    /// From now on, `eth_getLogs` answers silently leave out every `PacketSent` log of
    /// `block` (a provider dropping a log); `None` heals it.
    pub fn drop_packet_sent_in_block(&self, block: Option<u64>) {
        self.edit_faults(|f| f.drop_packet_sent_in_block = block);
    }

    /// Changes what the proxy does to `eth_getLogs` answers from now on.
    pub fn edit_faults(&self, edit: impl FnOnce(&mut LogFaults)) {
        edit(&mut self.faults.lock().unwrap_or_else(|e| e.into_inner()));
    }

    /// Closes the port: new connections are refused. Keep-alive connections already open are
    /// served by their own tasks, which outlive the listener, so they are switched to failing.
    pub fn stop(&self) {
        self.set_mode(ProxyMode::Fail);
        self.task.abort();
    }
}

impl Drop for RpcProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn forward(
    State(shared): State<Shared>,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, Bytes) {
    if shared.mode.load(Ordering::SeqCst) == ProxyMode::Fail as u8 {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Bytes::from_static(b"provider unavailable"),
        );
    }
    if let Some(answer) = hold_transaction(&shared.hold, &body) {
        return (StatusCode::OK, answer);
    }
    let faults = *shared.faults.lock().unwrap_or_else(|e| e.into_inner());
    if faults.conflux_quirks {
        if let Some(refusal) = conflux_refusal(&body) {
            return (StatusCode::OK, refusal);
        }
    }
    if faults.geth_size_limit {
        if let Some(refusal) = oversized_refusal(&body) {
            return (StatusCode::OK, refusal);
        }
    }
    if faults.behind {
        return match one_block_behind(&shared, &body).await {
            Some(answer) => (StatusCode::OK, answer),
            None => (StatusCode::BAD_GATEWAY, Bytes::new()),
        };
    }
    let content_type = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json")
        .to_string();
    let sent = shared
        .client
        .post(&shared.upstream)
        .header("content-type", content_type)
        .body(body.clone())
        .send()
        .await;
    match sent {
        Ok(response) => {
            let status =
                StatusCode::from_u16(response.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
            let mut bytes = response.bytes().await.unwrap_or_default();
            hold_watched_answer(&shared.gate, &body).await;
            if faults.conflux_quirks {
                bytes = conflux_estimate(&body, &bytes).unwrap_or(bytes);
            }
            let log_faults = LogFaults {
                conflux_quirks: false,
                geth_size_limit: false,
                behind: false,
                ..faults
            };
            if log_faults != LogFaults::default() && is_get_logs(&body) {
                (status, with_faults(&bytes, faults).unwrap_or(bytes))
            } else {
                (status, bytes)
            }
        }
        Err(_) => (StatusCode::BAD_GATEWAY, Bytes::new()),
    }
}

/// `request` answered as an honest node one block behind the chain it forwards to would answer
/// it: its head is the upstream head minus one; "latest" and "pending" mean that block; a
/// block, receipt or transaction of the newest block does not exist yet (`null`); state or
/// logs asked at the newest block are refused as a node refuses a block it does not have.
/// `None` when the request or upstream's answer is not JSON-RPC.
async fn one_block_behind(shared: &Shared, request: &[u8]) -> Option<Bytes> {
    use serde_json::{json, Value};
    let mut request: Value = serde_json::from_slice(request).ok()?;
    let upstream = |body: Value| async move {
        let answer = shared
            .client
            .post(&shared.upstream)
            .json(&body)
            .send()
            .await;
        answer.ok()?.json::<Value>().await.ok()
    };
    let hex = |v: &Value| u64::from_str_radix(v.as_str()?.strip_prefix("0x")?, 16).ok();
    let head = upstream(json!({ "jsonrpc": "2.0", "id": 0, "method": "eth_blockNumber" }))
        .await
        .and_then(|a| hex(&a["result"]))?;
    let seen = head.saturating_sub(1);
    let id = request["id"].clone();
    let reply = |result: Value| json!({ "jsonrpc": "2.0", "id": id.clone(), "result": result });
    let refuse = |message: &str| json!({ "jsonrpc": "2.0", "id": id.clone(), "error": { "code": -32000, "message": message } });
    let encode = |v: Value| serde_json::to_vec(&v).ok().map(Bytes::from);
    let method = request["method"].as_str()?.to_string();
    let block_param = match method.as_str() {
        "eth_blockNumber" => return encode(reply(json!(format!("{seen:#x}")))),
        "eth_getBlockByNumber" => Some(0),
        "eth_call"
        | "eth_estimateGas"
        | "eth_getTransactionCount"
        | "eth_getCode"
        | "eth_getBalance" => Some(1),
        "eth_getStorageAt" => Some(2),
        _ => None,
    };
    if let Some(at) = block_param {
        let params = request["params"].as_array_mut()?;
        if params.len() <= at {
            params.push(json!("latest"));
        }
        let block = &mut params[at];
        if matches!(block.as_str(), Some("latest" | "pending")) {
            *block = json!(format!("{seen:#x}"));
        } else if hex(block).is_some_and(|n| n > seen) {
            return encode(if method == "eth_getBlockByNumber" {
                reply(Value::Null)
            } else {
                refuse("header not found")
            });
        }
    }
    if method == "eth_getLogs" {
        let filter = request["params"].get_mut(0)?;
        for end in ["fromBlock", "toBlock"] {
            if matches!(filter[end].as_str(), Some("latest" | "pending")) {
                filter[end] = json!(format!("{seen:#x}"));
            } else if hex(&filter[end]).is_some_and(|n| n > seen) {
                return encode(refuse("block range extends beyond current head block"));
            }
        }
    }
    let mut answer = upstream(request).await?;
    if matches!(
        method.as_str(),
        "eth_getTransactionReceipt" | "eth_getTransactionByHash"
    ) && hex(&answer["result"]["blockNumber"]).is_some_and(|n| n > seen)
    {
        answer["result"] = Value::Null;
    }
    encode(answer)
}

/// The raw transaction an `eth_sendRawTransaction` request carries: its hex and its decoding.
fn raw_transaction(request: &serde_json::Value) -> Option<(String, alloy::consensus::TxEnvelope)> {
    use alloy::eips::eip2718::Decodable2718;
    let raw_hex = request["params"][0].as_str()?.to_string();
    let raw = alloy::primitives::hex::decode(&raw_hex).ok()?;
    let tx = alloy::consensus::TxEnvelope::decode_2718(&mut raw.as_slice()).ok()?;
    Some((raw_hex, tx))
}

/// When `request` sends a transaction the hold applies to: keeps it and answers with its hash.
fn hold_transaction(hold: &Mutex<TxHold>, request: &[u8]) -> Option<Bytes> {
    use alloy::consensus::Transaction;
    let mut hold = hold.lock().unwrap_or_else(|e| e.into_inner());
    if hold.to.is_none() && !hold.all {
        return None;
    }
    let request: serde_json::Value = serde_json::from_slice(request).ok()?;
    if request["method"] != "eth_sendRawTransaction" {
        return None;
    }
    let (raw_hex, tx) = raw_transaction(&request)?;
    if !hold.all && tx.to() != hold.to {
        return None;
    }
    let hash = *tx.tx_hash();
    hold.held.push(raw_hex);
    let body = serde_json::json!({ "jsonrpc": "2.0", "id": request["id"], "result": hash });
    serde_json::to_vec(&body).ok().map(Bytes::from)
}

/// When `request` is a watched call: waits while answers are held, then counts the answer.
async fn hold_watched_answer(gate: &Mutex<Option<CallGate>>, request: &[u8]) {
    let mut holding = {
        let mut gate = gate.lock().unwrap_or_else(|e| e.into_inner());
        let Some(gate) = gate.as_mut() else {
            return;
        };
        if !is_call_to(request, gate.selector) {
            return;
        }
        if !*gate.holding.borrow() {
            gate.answered += 1;
            return;
        }
        gate.held += 1;
        gate.holding.subscribe()
    };
    // Released, or the watch replaced (its sender dropped): either way the answer goes back.
    let _ = holding.wait_for(|on| !*on).await;
    if let Some(gate) = gate.lock().unwrap_or_else(|e| e.into_inner()).as_mut() {
        gate.held = gate.held.saturating_sub(1);
        gate.answered += 1;
    }
}

/// Whether `request` is an `eth_call` whose calldata starts with `selector`.
fn is_call_to(request: &[u8], selector: [u8; 4]) -> bool {
    let Ok(request) = serde_json::from_slice::<serde_json::Value>(request) else {
        return false;
    };
    if request["method"] != "eth_call" {
        return false;
    }
    let call = &request["params"][0];
    let data = call["input"].as_str().or_else(|| call["data"].as_str());
    data.and_then(|d| alloy::primitives::hex::decode(d).ok())
        .is_some_and(|d| d.starts_with(&selector))
}

fn is_get_logs(request: &[u8]) -> bool {
    serde_json::from_slice::<serde_json::Value>(request).is_ok_and(|v| v["method"] == "eth_getLogs")
}

/// The `eth_getLogs` answer as a faulty provider would give it.
fn with_faults(response: &[u8], faults: LogFaults) -> Option<Bytes> {
    use alloy::sol_types::SolEvent;
    let topic = dvn_lz::contracts::IEndpointV2::PacketSent::SIGNATURE_HASH.to_string();
    let mut value: serde_json::Value = serde_json::from_slice(response).ok()?;
    let logs = value["result"].as_array_mut()?;
    if let Some(block) = faults.drop_packet_sent_in_block {
        let block = format!("{block:#x}");
        logs.retain(|log| {
            !(log["topics"][0] == topic.as_str() && log["blockNumber"] == block.as_str())
        });
    }
    if let Some(cap) = faults.truncate_to {
        logs.truncate(cap);
    }
    for log in logs.iter_mut() {
        if faults.corrupt {
            // The last hex digit of the data flipped: same shape, different content.
            if let Some(data) = log["data"].as_str() {
                let mut data = data.to_string();
                let last = if data.ends_with('0') { "1" } else { "0" };
                data.pop();
                data.push_str(last);
                log["data"] = serde_json::Value::String(data);
            }
        }
        if faults.mark_removed {
            log["removed"] = serde_json::Value::Bool(true);
        }
        if faults.extras {
            log["blockTimestamp"] = serde_json::Value::String("0x1".into());
        }
    }
    serde_json::to_vec(&value).ok().map(Bytes::from)
}

/// A peer that accepts TCP connections on 127.0.0.1 and never answers (a hung process, a
/// black-holing firewall): every request to it waits for the client's timeout. Dropping it
/// closes the port and every held connection.
#[derive(Debug)]
pub struct BlackHole {
    pub url: String,
    task: JoinHandle<()>,
}

impl BlackHole {
    pub async fn start() -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        let task = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((socket, _)) = listener.accept().await {
                held.push(socket);
            }
        });
        Ok(Self { url, task })
    }
}

impl Drop for BlackHole {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A TCP forwarder on 127.0.0.1 in front of one address, that a test can cut and heal: a
/// network link between two regions. Bytes pass through untouched (TLS included). Cutting
/// closes the connections in flight and refuses new ones; healing lets new ones through.
#[derive(Debug)]
pub struct TcpLink {
    pub addr: std::net::SocketAddr,
    state: Arc<Mutex<tokio_util::sync::CancellationToken>>,
    open: Arc<std::sync::atomic::AtomicBool>,
    task: JoinHandle<()>,
}

impl TcpLink {
    pub async fn start(upstream: std::net::SocketAddr) -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(Mutex::new(tokio_util::sync::CancellationToken::new()));
        let open = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let (task_state, task_open) = (Arc::clone(&state), Arc::clone(&open));
        let task = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if !task_open.load(Ordering::SeqCst) {
                    drop(inbound);
                    continue;
                }
                let cut = task_state.lock().unwrap_or_else(|e| e.into_inner()).clone();
                tokio::spawn(async move {
                    let Ok(mut outbound) = tokio::net::TcpStream::connect(upstream).await else {
                        return;
                    };
                    tokio::select! {
                        _ = cut.cancelled() => {}
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                    }
                });
            }
        });
        Ok(Self {
            addr,
            state,
            open,
            task,
        })
    }

    /// Cuts the link: connections in flight are closed, new ones refused.
    pub fn cut(&self) {
        self.open.store(false, Ordering::SeqCst);
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.cancel();
        *state = tokio_util::sync::CancellationToken::new();
    }

    /// Heals the link.
    pub fn heal(&self) {
        self.open.store(true, Ordering::SeqCst);
    }
}

impl Drop for TcpLink {
    fn drop(&mut self) {
        self.cut();
        self.task.abort();
    }
}
