//! The mutual-TLS listeners — the peer API and (when `admin.listen` is set) the admin API:
//! mutual TLS, then HTTP/1 with limits on everything a remote can send.
//!
//! A connection counts against a cap from accept on; the TLS handshake has a deadline; the
//! client certificate must chain to the operators' CA, be valid now and name a configured
//! peer or admin client (anything else is refused before a byte of HTTP is read, and counted
//! by reason in `dvn_peer_tls_refused_total` / `dvn_admin_tls_refused_total`); request headers
//! have a read deadline, bodies the 16 KiB cap, each request a deadline; requests in flight are
//! capped, and each client is held to a rate.
//! Hand-written accept loop because `axum::serve` offers neither TLS nor these limits; the
//! HTTP itself is hyper's.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::Request;
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::tls::{peer_named_by, refusal_reason, Reloading};

/// Which listener: its refusal counter and its name in logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The other regions (certificate name = a configured peer).
    Peers,
    /// Operators calling the admin API (certificate name = one of `admin.clients`).
    Admin,
}

impl Side {
    /// The counter of refused connections and requests, by `reason`.
    pub fn refused_metric(self) -> &'static str {
        match self {
            Self::Peers => "dvn_peer_tls_refused_total",
            Self::Admin => "dvn_admin_tls_refused_total",
        }
    }

    fn label(self) -> &'static str {
        match self {
            Self::Peers => "peer",
            Self::Admin => "admin",
        }
    }
}

/// Limits of a mutual-TLS listener.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Open connections at once (each held from accept to close).
    pub max_connections: usize,
    /// Requests being handled at once, over all peers.
    pub max_in_flight: usize,
    /// Requests per second each peer may send (burst: twice that).
    pub per_peer_per_sec: u32,
    /// TLS handshake and request headers: each must finish within this.
    pub deadline: Duration,
    /// Each request must be answered within this.
    pub request_deadline: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: 64,
            max_in_flight: 32,
            per_peer_per_sec: 200,
            deadline: Duration::from_secs(10),
            request_deadline: Duration::from_secs(10),
        }
    }
}

impl Limits {
    /// The admin listener: few callers, and a request may be a backup of the whole store.
    pub fn admin() -> Self {
        Self {
            max_connections: 16,
            max_in_flight: 8,
            per_peer_per_sec: 20,
            deadline: Duration::from_secs(10),
            request_deadline: Duration::from_secs(600),
        }
    }
}

/// Who sent a request: the name its verified certificate carries (a peer region, or an
/// admin client).
#[derive(Debug, Clone)]
pub struct PeerName(pub String);

/// Counts a refused connection or request.
fn refused(side: Side, reason: &'static str) {
    metrics::counter!(side.refused_metric(), "reason" => reason).increment(1);
}

/// Every refusal reason, for zero-initialised series.
pub const REFUSALS: &[&str] = &[
    "no_certificate",
    "unknown_ca",
    "expired",
    "bad_certificate",
    "not_a_peer",
    "not_tls",
    "handshake",
    "handshake_timeout",
    "connections",
    "rate",
    "busy",
];

/// Serves `router` over mutual TLS until `cancel` to clients whose certificate names one of
/// `peers`. Each request carries the client's [`PeerName`] and its address
/// (`ConnectInfo<SocketAddr>`) as extensions.
pub async fn serve(
    listener: TcpListener,
    tls: Arc<Reloading<Arc<rustls::ServerConfig>>>,
    peers: Vec<String>,
    router: Router,
    (side, limits): (Side, Limits),
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    let connections = Arc::new(Semaphore::new(limits.max_connections));
    let in_flight = Arc::new(Semaphore::new(limits.max_in_flight));
    let rates = Arc::new(Mutex::new(HashMap::<String, Bucket>::new()));
    let router = router.layer(axum::middleware::from_fn(
        move |request: Request, next: Next| {
            let in_flight = Arc::clone(&in_flight);
            let rates = Arc::clone(&rates);
            async move { limit(request, next, in_flight, rates, side, limits).await }
        },
    ));
    loop {
        let (stream, remote) = tokio::select! {
            _ = cancel.cancelled() => return Ok(()),
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(listener = side.label(), "accept failed: {e}");
                    continue;
                }
            },
        };
        let Ok(permit) = Arc::clone(&connections).try_acquire_owned() else {
            refused(side, "connections");
            continue;
        };
        let acceptor = TlsAcceptor::from(tls.get());
        let (peers, router, cancel) = (peers.clone(), router.clone(), cancel.clone());
        tokio::spawn(async move {
            let _permit = permit;
            let stream = match tokio::time::timeout(limits.deadline, acceptor.accept(stream)).await
            {
                Ok(Ok(stream)) => stream,
                Ok(Err(e)) => {
                    let reason = refusal_reason(&e);
                    refused(side, reason);
                    tracing::warn!(%remote, reason, listener = side.label(), "connection refused: {e}");
                    return;
                }
                Err(_) => {
                    refused(side, "handshake_timeout");
                    return;
                }
            };
            let peer = stream
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|certs| certs.first())
                .and_then(|cert| peer_named_by(cert, &peers));
            let Some(peer) = peer else {
                refused(side, "not_a_peer");
                tracing::warn!(%remote, listener = side.label(), "connection refused: the certificate names none of the configured clients");
                return;
            };
            let router = router
                .layer(axum::Extension(PeerName(peer)))
                .layer(axum::Extension(axum::extract::ConnectInfo(remote)));
            let service = hyper_util::service::TowerToHyperService::new(router);
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(limits.deadline)
                .serve_connection(TokioIo::new(stream), service);
            tokio::select! {
                _ = cancel.cancelled() => {}
                _ = connection => {}
            }
        });
    }
}

/// A token bucket per peer.
#[derive(Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// The per-request limits: the peer's rate, the overall in-flight cap, the deadline.
async fn limit(
    request: Request,
    next: Next,
    in_flight: Arc<Semaphore>,
    rates: Arc<Mutex<HashMap<String, Bucket>>>,
    side: Side,
    limits: Limits,
) -> Response {
    let peer = request
        .extensions()
        .get::<PeerName>()
        .map(|p| p.0.clone())
        .unwrap_or_default();
    let allowed = {
        let mut rates = rates.lock().unwrap_or_else(|e| e.into_inner());
        let rate = f64::from(limits.per_peer_per_sec.max(1));
        let bucket = rates.entry(peer.clone()).or_insert(Bucket {
            tokens: rate * 2.0,
            at: Instant::now(),
        });
        let now = Instant::now();
        bucket.tokens =
            (bucket.tokens + now.duration_since(bucket.at).as_secs_f64() * rate).min(rate * 2.0);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            true
        } else {
            false
        }
    };
    if !allowed {
        refused(side, "rate");
        return (StatusCode::TOO_MANY_REQUESTS, "rate limit").into_response();
    }
    let Ok(_permit) = in_flight.try_acquire() else {
        refused(side, "busy");
        return (StatusCode::SERVICE_UNAVAILABLE, "busy").into_response();
    };
    match tokio::time::timeout(limits.request_deadline, next.run(request)).await {
        Ok(response) => response,
        Err(_) => (StatusCode::REQUEST_TIMEOUT, "request took too long").into_response(),
    }
}
