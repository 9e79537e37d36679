//! Pushing our signatures to the other regions and pulling theirs.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use alloy::primitives::{Address, Bytes, Signature, B256};
use tokio::sync::Semaphore;

use super::protocol::{
    check_signature, BatchReply, BatchedSignature, ClaimEntry, ClaimList, ClaimPush, ClaimQuery,
    PushReply, RotationProposal, SignatureBatch, SignatureList, SignaturePush,
    MAX_BATCH_SIGNATURES, MAX_BODY_BYTES, MAX_CLAIM_GUIDS, MAX_SIGNATURES_PER_HASH,
    PROTOCOL_VERSION,
};
use crate::config::{PeerConfig, TlsConfig};
use crate::tls::{Reloading, TlsError};

/// Claim announcements in flight at once.
const MAX_PUSHES_IN_FLIGHT: usize = 64;

/// Our signatures waiting to be pushed; beyond, a signature is not pushed (the peers pull it).
const OUTBOX: usize = 4_096;

/// Signature batches in flight at once (each to every peer). Whatever is signed while they
/// are out waits in the outbox and goes in the next batch: one signature per request when
/// signing is quiet, up to [`MAX_BATCH_SIGNATURES`] per request in a backlog.
const BATCHES_IN_FLIGHT: usize = 4;

/// How long a peer that answered the batch path with 404 (a release before it) gets single
/// pushes before the batch path is tried again.
const LEGACY_PEER_RECHECK: Duration = Duration::from_secs(600);

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
    /// Our signatures waiting for the next batch, and (until the first push starts the task
    /// that sends them) the receiving end.
    outbox: tokio::sync::mpsc::Sender<BatchedSignature>,
    outbox_rx: Arc<Mutex<Option<tokio::sync::mpsc::Receiver<BatchedSignature>>>>,
    /// Peers that do not know the batch path, until when they get single pushes.
    legacy: Arc<Mutex<HashMap<String, Instant>>>,
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
        let (outbox, outbox_rx) = tokio::sync::mpsc::channel(OUTBOX);
        Ok(Self {
            http,
            peers: peers.to_vec(),
            pushes: Arc::new(Semaphore::new(MAX_PUSHES_IN_FLIGHT)),
            outbox,
            outbox_rx: Arc::new(Mutex::new(Some(outbox_rx))),
            legacy: Arc::default(),
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

    /// Queues our signature for every peer and returns at once: signing never waits on a
    /// peer. Pushes only speed things up (peers pull what they miss), so when the outbox is
    /// full — peers that accept connections and never answer hold every batch for the full
    /// timeout — this one is not pushed, and counted.
    pub fn push_in_background(&self, call_hash: B256, signer: Address, signature: Signature) {
        let entry = BatchedSignature {
            call_hash,
            signer,
            signature: Bytes::copy_from_slice(&signature.as_bytes()),
        };
        if self.outbox.try_send(entry).is_err() {
            for peer in &self.peers {
                metrics::counter!("dvn_peer_push_total", "peer" => peer.name.clone(), "outcome" => "skipped_busy").increment(1);
            }
            return;
        }
        let receiver = self
            .outbox_rx
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(receiver) = receiver {
            tokio::spawn(self.clone().send_outbox(receiver));
        }
    }

    /// Sends what the outbox holds, batch after batch, at most [`BATCHES_IN_FLIGHT`] at once.
    async fn send_outbox(self, mut outbox: tokio::sync::mpsc::Receiver<BatchedSignature>) {
        let in_flight = Arc::new(Semaphore::new(BATCHES_IN_FLIGHT));
        while let Some(first) = outbox.recv().await {
            let Ok(permit) = Arc::clone(&in_flight).acquire_owned().await else {
                return;
            };
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH_SIGNATURES {
                match outbox.try_recv() {
                    Ok(entry) => batch.push(entry),
                    Err(_) => break,
                }
            }
            let client = self.clone();
            tokio::spawn(async move {
                client.push_batch(&batch).await;
                drop(permit);
            });
        }
    }

    /// Sends one signature to every peer now and waits for their answers (a rotation's
    /// params: rare, and the caller wants them out before it goes on).
    pub async fn push(&self, call_hash: B256, signer: Address, signature: &Signature) {
        let entry = BatchedSignature {
            call_hash,
            signer,
            signature: Bytes::copy_from_slice(&signature.as_bytes()),
        };
        self.push_batch(std::slice::from_ref(&entry)).await;
    }

    /// Sends `batch` to every peer concurrently; each signature's outcome is counted per peer
    /// (failures are never fatal: peers pull too).
    pub async fn push_batch(&self, batch: &[BatchedSignature]) {
        let sends = (0..self.peers.len()).map(|i| self.push_batch_to(i, batch));
        for (peer, outcomes) in self
            .peers
            .iter()
            .zip(futures::future::join_all(sends).await)
        {
            for (entry, outcome) in batch.iter().zip(outcomes) {
                metrics::counter!("dvn_peer_push_total", "peer" => peer.name.clone(), "outcome" => outcome)
                    .increment(1);
                tracing::debug!(peer = %peer.name, call_hash = %entry.call_hash, outcome, "pushed signature");
            }
        }
    }

    /// One batch to the peer at `index`: each signature's outcome, in order. A peer without
    /// the batch path (404) gets the signatures one by one.
    async fn push_batch_to(&self, index: usize, batch: &[BatchedSignature]) -> Vec<&'static str> {
        let peer = &self.peers[index];
        let legacy = {
            let mut legacy = self.legacy.lock().unwrap_or_else(|e| e.into_inner());
            legacy.retain(|_, until| Instant::now() < *until);
            legacy.contains_key(&peer.name)
        };
        if !legacy {
            if self.resting(&peer.name) {
                return vec!["skipped_down"; batch.len()];
            }
            let body = SignatureBatch {
                version: PROTOCOL_VERSION,
                signatures: batch.to_vec(),
            };
            let url = format!("{}/v1/signature-batches", peer.url.trim_end_matches('/'));
            let result = self.client(index).post(url).json(&body).send().await;
            self.answered(&peer.name, result.is_ok());
            match result {
                Ok(r) if r.status() == reqwest::StatusCode::NOT_FOUND => {
                    tracing::info!(peer = %peer.name, "peer does not take signature batches (an older release): pushing one by one");
                    self.legacy
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(peer.name.clone(), Instant::now() + LEGACY_PEER_RECHECK);
                }
                Ok(r) if r.status().is_success() => {
                    return match read_json::<BatchReply>(r).await {
                        Ok(reply)
                            if reply.version == PROTOCOL_VERSION
                                && reply.replies.len() == batch.len() =>
                        {
                            reply
                                .replies
                                .iter()
                                .map(|r| if r.accepted { "accepted" } else { "declined" })
                                .collect()
                        }
                        _ => vec!["bad_reply"; batch.len()],
                    };
                }
                Ok(_) => return vec!["http_error"; batch.len()],
                Err(_) => return vec!["unreachable"; batch.len()],
            }
        }
        let mut outcomes = Vec::with_capacity(batch.len());
        for entry in batch {
            let body = SignaturePush {
                version: PROTOCOL_VERSION,
                call_hash: entry.call_hash,
                signer: entry.signer,
                signature: entry.signature.clone(),
            };
            outcomes.push(self.post_to(index, "/v1/signatures", &body).await);
        }
        outcomes
    }

    /// POSTs `body` to `path` on every peer concurrently and returns each peer's outcome
    /// (see [`Self::post_to`]).
    async fn post_to_every_peer<B: serde::Serialize + Sync>(
        &self,
        path: &str,
        body: &B,
    ) -> Vec<(String, &'static str)> {
        let sends =
            self.peers.iter().enumerate().map(|(i, peer)| async move {
                (peer.name.clone(), self.post_to(i, path, body).await)
            });
        futures::future::join_all(sends).await
    }

    /// POSTs `body` to `path` on the peer at `index`: `accepted`, `declined`, `bad_reply`,
    /// `http_error`, `unreachable`, or `skipped_down` for a peer resting after it failed to
    /// answer.
    async fn post_to<B: serde::Serialize + Sync>(
        &self,
        index: usize,
        path: &str,
        body: &B,
    ) -> &'static str {
        let peer = &self.peers[index];
        if self.resting(&peer.name) {
            return "skipped_down";
        }
        let url = format!("{}{path}", peer.url.trim_end_matches('/'));
        let result = self.client(index).post(url).json(body).send().await;
        self.answered(&peer.name, result.is_ok());
        match result {
            Ok(r) if r.status().is_success() => match read_json::<PushReply>(r).await {
                Ok(reply) if reply.accepted => "accepted",
                Ok(_) => "declined",
                Err(_) => "bad_reply",
            },
            Ok(_) => "http_error",
            Err(_) => "unreachable",
        }
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
            metrics::counter!("dvn_peer_pulls_total", "peer" => peer.name.clone()).increment(1);
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

#[cfg(test)]
mod tests {
    use super::*;
    use axum::routing::post;
    use axum::{Json, Router};

    /// A peer on 127.0.0.1 that records what it was sent: with the batch path (`batches`) or
    /// as a release before it (404 there).
    async fn fake_peer(batches: bool) -> (PeerConfig, Arc<Mutex<Vec<(String, usize)>>>) {
        let seen: Arc<Mutex<Vec<(String, usize)>>> = Arc::default();
        let (single, batch) = (Arc::clone(&seen), Arc::clone(&seen));
        let mut router = Router::new().route(
            "/v1/signatures",
            post(move |Json(push): Json<SignaturePush>| async move {
                single.lock().unwrap().push(("single".into(), 1));
                Json(PushReply {
                    accepted: push.signer != Address::ZERO,
                    reason: None,
                })
            }),
        );
        if batches {
            router = router.route(
                "/v1/signature-batches",
                post(move |Json(b): Json<SignatureBatch>| async move {
                    batch
                        .lock()
                        .unwrap()
                        .push(("batch".into(), b.signatures.len()));
                    Json(BatchReply {
                        version: PROTOCOL_VERSION,
                        replies: b
                            .signatures
                            .iter()
                            .map(|s| PushReply {
                                accepted: s.signer != Address::ZERO,
                                reason: None,
                            })
                            .collect(),
                    })
                }),
            );
        }
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, router).await });
        let peer = PeerConfig {
            name: if batches { "new" } else { "old" }.into(),
            url,
            signer: Address::repeat_byte(1),
            submitter: None,
        };
        (peer, seen)
    }

    fn entry(signer: Address) -> BatchedSignature {
        BatchedSignature {
            call_hash: B256::repeat_byte(7),
            signer,
            signature: Bytes::from(vec![1; 65]),
        }
    }

    #[tokio::test]
    async fn batches_go_in_one_request_and_an_older_peer_gets_them_one_by_one() {
        let (new, new_seen) = fake_peer(true).await;
        let (old, old_seen) = fake_peer(false).await;
        let client = PeerClient::new(&[new, old], None).unwrap();
        let batch = [entry(Address::repeat_byte(2)), entry(Address::ZERO)];
        let outcomes =
            futures::future::join_all((0..2).map(|i| client.push_batch_to(i, &batch))).await;
        assert_eq!(outcomes[0], vec!["accepted", "declined"], "each answered");
        assert_eq!(outcomes[1], vec!["accepted", "declined"], "also one by one");
        assert_eq!(*new_seen.lock().unwrap(), vec![("batch".to_string(), 2)]);
        assert_eq!(
            *old_seen.lock().unwrap(),
            vec![("single".to_string(), 1), ("single".to_string(), 1)]
        );
        // The older peer is remembered: the next batch goes to it one by one straight away.
        client.push_batch_to(1, &batch[..1]).await;
        assert_eq!(old_seen.lock().unwrap().len(), 3);
    }

    #[tokio::test]
    async fn signatures_queued_while_batches_are_out_share_the_next_request() {
        let (new, seen) = fake_peer(true).await;
        let client = PeerClient::new(&[new], None).unwrap();
        let key = alloy::signers::local::PrivateKeySigner::random();
        let signature = alloy::signers::SignerSync::sign_hash_sync(&key, &B256::ZERO).unwrap();
        for i in 0..200u8 {
            client.push_in_background(B256::repeat_byte(i), key.address(), signature);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        let total = || seen.lock().unwrap().iter().map(|(_, n)| n).sum::<usize>();
        while total() < 200 {
            assert!(Instant::now() < deadline, "only {} arrived", total());
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let requests = seen.lock().unwrap().len();
        assert!(
            requests <= 200 / MAX_BATCH_SIGNATURES + BATCHES_IN_FLIGHT + 1,
            "{requests} requests for 200 signatures"
        );
    }
}
