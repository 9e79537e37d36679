//! Pushing our signatures to the other regions and pulling theirs.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use alloy::primitives::{Address, Bytes, Signature, B256};
use tokio::sync::Semaphore;

use super::protocol::{
    check_signature, ClaimEntry, ClaimList, ClaimPush, ClaimQuery, PushReply, RotationProposal,
    SignatureList, SignaturePush, MAX_BODY_BYTES, MAX_CLAIM_GUIDS, MAX_SIGNATURES_PER_HASH,
    PROTOCOL_VERSION,
};
use crate::config::{PeerConfig, TlsConfig};
use crate::tls::{Reloading, TlsError};

/// Signature pushes in flight at once; beyond, a push is skipped (the peer pulls instead).
const MAX_PUSHES_IN_FLIGHT: usize = 64;

/// How long a peer that did not answer is left out of pushes and pulls (its health probe
/// still runs, and a good answer brings it back at once).
const PEER_BACKOFF: Duration = Duration::from_secs(15);

/// HTTP client for every configured peer.
#[derive(Debug, Clone)]
pub struct PeerClient {
    /// One client per peer (same order as `peers`): with mutual TLS each checks that the
    /// server's certificate names *that* peer, and is rebuilt when the certificate files change.
    http: Vec<Arc<Reloading<reqwest::Client>>>,
    peers: Vec<PeerConfig>,
    pushes: Arc<Semaphore>,
    /// Peers that failed to answer, until when they are skipped: a hung peer costs one
    /// timeout per backoff period, not one per packet.
    resting: Arc<Mutex<HashMap<String, Instant>>>,
}

impl PeerClient {
    /// Clients for `peers`, with mutual TLS when `tls` is given (plain HTTP otherwise: devnets).
    pub fn new(peers: &[PeerConfig], tls: Option<&TlsConfig>) -> anyhow::Result<Self> {
        let mut http = Vec::with_capacity(peers.len());
        for peer in peers {
            let name = peer.name.clone();
            let build = move |files: &TlsConfig| -> Result<reqwest::Client, TlsError> {
                let config = crate::tls::client_config(files, &name)?;
                base_client()
                    .use_preconfigured_tls(config)
                    .build()
                    .map_err(|e| TlsError::Verifier(e.to_string()))
            };
            let client = match tls {
                Some(files) => Reloading::new(files, build)?,
                None => {
                    let plain = base_client().build()?;
                    Reloading::fixed(plain)
                }
            };
            http.push(Arc::new(client));
        }
        Ok(Self {
            http,
            peers: peers.to_vec(),
            pushes: Arc::new(Semaphore::new(MAX_PUSHES_IN_FLIGHT)),
            resting: Arc::default(),
        })
    }

    /// The client for the peer at `index` in `peers`.
    fn client(&self, index: usize) -> reqwest::Client {
        self.http
            .get(index)
            .map(|c| c.get())
            .unwrap_or_else(|| base_client().build().unwrap_or_default())
    }

    /// Whether `peer` is being skipped after failing to answer.
    fn resting(&self, peer: &str) -> bool {
        let resting = self.resting.lock().unwrap_or_else(|e| e.into_inner());
        resting
            .get(peer)
            .is_some_and(|until| Instant::now() < *until)
    }

    /// Records whether `peer` answered.
    fn answered(&self, peer: &str, ok: bool) {
        let mut resting = self.resting.lock().unwrap_or_else(|e| e.into_inner());
        if ok {
            resting.remove(peer);
        } else {
            resting.insert(peer.to_string(), Instant::now() + PEER_BACKOFF);
        }
    }

    pub fn peers(&self) -> &[PeerConfig] {
        &self.peers
    }

    /// Whether each peer's `/health` answers now (for readiness and `dvn_peer_up`).
    pub async fn probe_health(&self) -> std::collections::BTreeMap<String, bool> {
        let probes = self.peers.iter().enumerate().map(|(i, peer)| async move {
            let url = format!("{}/v1/health", peer.url.trim_end_matches('/'));
            let up =
                matches!(self.client(i).get(url).send().await, Ok(r) if r.status().is_success());
            if up {
                self.answered(&peer.name, true);
            }
            (peer.name.clone(), up)
        });
        futures::future::join_all(probes)
            .await
            .into_iter()
            .collect()
    }

    /// Sends our signature to every peer in the background and returns at once: signing never
    /// waits on a peer. Pushes only speed things up (peers pull what they miss), so when
    /// [`MAX_PUSHES_IN_FLIGHT`] are already out — a peer that accepts connections and never
    /// answers holds each for the full timeout — this one is skipped and counted.
    pub fn push_in_background(&self, call_hash: B256, signer: Address, signature: Signature) {
        let Ok(permit) = Arc::clone(&self.pushes).try_acquire_owned() else {
            for peer in &self.peers {
                metrics::counter!("dvn_peer_push_total", "peer" => peer.name.clone(), "outcome" => "skipped_busy").increment(1);
            }
            return;
        };
        let client = self.clone();
        tokio::spawn(async move {
            client.push(call_hash, signer, &signature).await;
            drop(permit);
        });
    }

    /// Sends our signature to every peer concurrently; failures are logged, never fatal
    /// (peers pull too).
    pub async fn push(&self, call_hash: B256, signer: Address, signature: &Signature) {
        let body = SignaturePush {
            version: PROTOCOL_VERSION,
            call_hash,
            signer,
            signature: Bytes::copy_from_slice(&signature.as_bytes()),
        };
        for (peer, outcome) in self.post_to_every_peer("/v1/signatures", &body).await {
            metrics::counter!("dvn_peer_push_total", "peer" => peer.clone(), "outcome" => outcome)
                .increment(1);
            tracing::debug!(peer = %peer, %call_hash, outcome, "pushed signature");
        }
    }

    /// POSTs `body` to `path` on every peer concurrently and returns each peer's outcome
    /// (`accepted`, `declined`, `bad_reply`, `http_error`, `unreachable`, or `skipped_down` for
    /// a peer resting after it failed to answer).
    async fn post_to_every_peer<B: serde::Serialize + Sync>(
        &self,
        path: &str,
        body: &B,
    ) -> Vec<(String, &'static str)> {
        let sends = self.peers.iter().enumerate().map(|(i, peer)| async move {
            if self.resting(&peer.name) {
                return (peer.name.clone(), "skipped_down");
            }
            let url = format!("{}{path}", peer.url.trim_end_matches('/'));
            let result = self.client(i).post(url).json(body).send().await;
            self.answered(&peer.name, result.is_ok());
            let outcome = match result {
                Ok(r) if r.status().is_success() => match read_json::<PushReply>(r).await {
                    Ok(reply) if reply.accepted => "accepted",
                    Ok(_) => "declined",
                    Err(_) => "bad_reply",
                },
                Ok(_) => "http_error",
                Err(_) => "unreachable",
            };
            (peer.name.clone(), outcome)
        });
        futures::future::join_all(sends).await
    }

    /// Tells every peer, in the background, that one of our transactions is pending on
    /// `dst_eid` with these packets (in messages of at most [`MAX_CLAIM_GUIDS`]). Waits for a
    /// push slot rather than skipping: a claim is what keeps the next region from sending the
    /// same packets while ours may still land.
    pub fn announce_claim_in_background(&self, dst_eid: u32, claim: ClaimEntry) {
        let client = self.clone();
        tokio::spawn(async move {
            let Ok(_permit) = Arc::clone(&client.pushes).acquire_owned().await else {
                return;
            };
            for guids in claim.guids.chunks(MAX_CLAIM_GUIDS) {
                let body = ClaimPush {
                    version: PROTOCOL_VERSION,
                    dst_eid,
                    claim: ClaimEntry {
                        guids: guids.to_vec(),
                        ..claim.clone()
                    },
                };
                client.announce(&body).await;
            }
        });
    }

    async fn announce(&self, body: &ClaimPush) {
        for (peer, outcome) in self.post_to_every_peer("/v1/claims", body).await {
            metrics::counter!("dvn_peer_claims_sent_total", "peer" => peer.clone(), "outcome" => outcome).increment(1);
            tracing::debug!(peer = %peer, tx = %body.claim.tx_hash, outcome, "announced pending transaction");
        }
    }

    /// Sends a signer-rotation proposal to every peer and returns each one's outcome (see
    /// [`Self::post_to_every_peer`]); a peer that declined logs why.
    pub async fn propose_rotation(&self, body: &RotationProposal) -> Vec<(String, &'static str)> {
        self.post_to_every_peer("/v1/rotations", body).await
    }

    /// Asks every reachable peer which of `guids` a pending transaction of its own carries
    /// on `dst_eid`. Answers naming packets we did not ask about are cut to ours; malformed
    /// ones are dropped. A peer that does not answer contributes nothing (what it announced
    /// earlier is in the store already).
    pub async fn query_claims(&self, dst_eid: u32, guids: &[B256]) -> Vec<(String, ClaimEntry)> {
        let asked: std::collections::HashSet<B256> = guids.iter().copied().collect();
        let queries = self.peers.iter().enumerate().map(|(i, peer)| {
            let asked = &asked;
            async move {
                let mut found = Vec::new();
                for chunk in guids.chunks(MAX_CLAIM_GUIDS) {
                    if self.resting(&peer.name) {
                        break;
                    }
                    let url = format!("{}/v1/claims/query", peer.url.trim_end_matches('/'));
                    let body = ClaimQuery {
                        version: PROTOCOL_VERSION,
                        dst_eid,
                        guids: chunk.to_vec(),
                    };
                    let sent = self.client(i).post(url).json(&body).send().await;
                    self.answered(&peer.name, sent.is_ok());
                    let list = match sent {
                        Ok(r) if r.status().is_success() => read_json::<ClaimList>(r).await.ok(),
                        _ => None,
                    };
                    let Some(list) = list.filter(|l| l.version == PROTOCOL_VERSION) else {
                        continue;
                    };
                    for mut claim in list.claims {
                        claim.guids.retain(|g| asked.contains(g));
                        if claim.check().is_ok() {
                            found.push((peer.name.clone(), claim));
                        }
                    }
                }
                found
            }
        });
        futures::future::join_all(queries)
            .await
            .into_iter()
            .flatten()
            .collect()
    }

    /// Asks every peer for signatures over `call_hash`; returns only those that check out
    /// against `signer_set`, with the peer they came from.
    pub async fn pull(
        &self,
        call_hash: B256,
        signer_set: &[Address],
        have: &[Address],
    ) -> Vec<(String, Address, Signature)> {
        let pulls = self.peers.iter().enumerate().map(|(i, peer)| async move {
            if self.resting(&peer.name) {
                return Vec::new();
            }
            let url = format!("{}/v1/signatures/{call_hash}", peer.url.trim_end_matches('/'));
            let sent = self.client(i).get(url).send().await;
            self.answered(&peer.name, sent.is_ok());
            let list = match sent {
                Ok(r) if r.status().is_success() => read_json::<SignatureList>(r).await.ok(),
                _ => None,
            };
            metrics::gauge!("dvn_peer_up", "peer" => peer.name.clone()).set(if list.is_some() { 1.0 } else { 0.0 });
            let Some(list) = list else { return Vec::new() };
            if list.version != PROTOCOL_VERSION {
                reject(&peer.name, "version");
                return Vec::new();
            }
            let mut good = Vec::new();
            for entry in list.signatures.into_iter().take(MAX_SIGNATURES_PER_HASH) {
                // A signer whose signature is held already (our own, one pushed before) is
                // not recovered again: it would add nothing.
                if have.contains(&entry.signer) {
                    continue;
                }
                match check_signature(call_hash, entry.signer, &entry.signature, signer_set) {
                    Ok(sig) => good.push((peer.name.clone(), entry.signer, sig)),
                    Err(why) => {
                        reject(&peer.name, why.label());
                        tracing::warn!(peer = %peer.name, %call_hash, signer = %entry.signer, "rejected pulled signature: {why}");
                    }
                }
            }
            good
        });
        futures::future::join_all(pulls)
            .await
            .into_iter()
            .flatten()
            .collect()
    }
}

/// A peer's JSON answer, read up to [`MAX_BODY_BYTES`]: a peer (or whatever answers at its
/// address) cannot make this node buffer an endless body.
async fn read_json<T: serde::de::DeserializeOwned>(
    mut response: reqwest::Response,
) -> anyhow::Result<T> {
    if response
        .content_length()
        .is_some_and(|n| n > MAX_BODY_BYTES as u64)
    {
        anyhow::bail!("answer over {MAX_BODY_BYTES} bytes");
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        anyhow::ensure!(
            body.len() + chunk.len() <= MAX_BODY_BYTES,
            "answer over {MAX_BODY_BYTES} bytes"
        );
        body.extend_from_slice(&chunk);
    }
    Ok(serde_json::from_slice(&body)?)
}

/// Timeouts for every peer request.
fn base_client() -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .connect_timeout(Duration::from_secs(2))
}

fn reject(peer: &str, reason: &'static str) {
    metrics::counter!("dvn_peer_signatures_rejected_total", "peer" => peer.to_string(), "reason" => reason).increment(1);
}
