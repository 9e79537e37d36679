//! A JSON-RPC forwarding proxy on 127.0.0.1 that a test can switch between forwarding,
//! failing (HTTP 503) and stopped (port closed), or make drop logs, to play an RPC provider
//! going bad.

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

#[derive(Clone)]
struct Shared {
    upstream: String,
    mode: Arc<AtomicU8>,
    drop_packet_sent_in_block: Arc<Mutex<Option<u64>>>,
    client: alloy::transports::http::reqwest::Client,
}

/// A running proxy; dropping it closes the port.
#[derive(Debug)]
pub struct RpcProxy {
    pub url: String,
    mode: Arc<AtomicU8>,
    drop_packet_sent_in_block: Arc<Mutex<Option<u64>>>,
    task: JoinHandle<()>,
}

impl RpcProxy {
    /// Starts forwarding to `upstream` on a free 127.0.0.1 port.
    pub async fn start(upstream: &str) -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        let mode = Arc::new(AtomicU8::new(ProxyMode::Forward as u8));
        let drop_packet_sent_in_block = Arc::new(Mutex::new(None));
        let shared = Shared {
            upstream: upstream.to_string(),
            mode: Arc::clone(&mode),
            drop_packet_sent_in_block: Arc::clone(&drop_packet_sent_in_block),
            client: Default::default(),
        };
        let app = Router::new().route("/", post(forward)).with_state(shared);
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self {
            url,
            mode,
            drop_packet_sent_in_block,
            task,
        })
    }

    pub fn set_mode(&self, mode: ProxyMode) {
        self.mode.store(mode as u8, Ordering::SeqCst);
    }

    /// From now on, `eth_getLogs` answers silently leave out every `PacketSent` log of
    /// `block` (a provider dropping a log); `None` heals it.
    pub fn drop_packet_sent_in_block(&self, block: Option<u64>) {
        *self
            .drop_packet_sent_in_block
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = block;
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
    let drop_block = *shared
        .drop_packet_sent_in_block
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    match sent {
        Ok(response) => {
            let status =
                StatusCode::from_u16(response.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
            let bytes = response.bytes().await.unwrap_or_default();
            match drop_block {
                Some(block) if is_get_logs(&body) => {
                    (status, without_packet_sent(&bytes, block).unwrap_or(bytes))
                }
                _ => (status, bytes),
            }
        }
        Err(_) => (StatusCode::BAD_GATEWAY, Bytes::new()),
    }
}

fn is_get_logs(request: &[u8]) -> bool {
    serde_json::from_slice::<serde_json::Value>(request).is_ok_and(|v| v["method"] == "eth_getLogs")
}

/// The `eth_getLogs` answer without the `PacketSent` logs of `block`.
fn without_packet_sent(response: &[u8], block: u64) -> Option<Bytes> {
    use alloy::sol_types::SolEvent;
    let topic = dvn_lz::contracts::IEndpointV2::PacketSent::SIGNATURE_HASH.to_string();
    let block = format!("{block:#x}");
    let mut value: serde_json::Value = serde_json::from_slice(response).ok()?;
    value["result"].as_array_mut()?.retain(|log| {
        !(log["topics"][0] == topic.as_str() && log["blockNumber"] == block.as_str())
    });
    serde_json::to_vec(&value).ok().map(Bytes::from)
}
