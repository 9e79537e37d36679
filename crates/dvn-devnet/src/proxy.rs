//! A JSON-RPC forwarding proxy on 127.0.0.1 that a test can switch between forwarding,
//! failing (HTTP 503) and stopped (port closed), to play an RPC provider going bad.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;

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
    client: alloy::transports::http::reqwest::Client,
}

/// A running proxy; dropping it closes the port.
#[derive(Debug)]
pub struct RpcProxy {
    pub url: String,
    mode: Arc<AtomicU8>,
    task: JoinHandle<()>,
}

impl RpcProxy {
    /// Starts forwarding to `upstream` on a free 127.0.0.1 port.
    pub async fn start(upstream: &str) -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        let mode = Arc::new(AtomicU8::new(ProxyMode::Forward as u8));
        let shared = Shared {
            upstream: upstream.to_string(),
            mode: Arc::clone(&mode),
            client: Default::default(),
        };
        let app = Router::new().route("/", post(forward)).with_state(shared);
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self { url, mode, task })
    }

    pub fn set_mode(&self, mode: ProxyMode) {
        self.mode.store(mode as u8, Ordering::SeqCst);
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
        .body(body)
        .send()
        .await;
    match sent {
        Ok(response) => {
            let status =
                StatusCode::from_u16(response.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
            (status, response.bytes().await.unwrap_or_default())
        }
        Err(_) => (StatusCode::BAD_GATEWAY, Bytes::new()),
    }
}
