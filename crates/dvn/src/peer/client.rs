//! Pushing our signatures to the other regions and pulling theirs.

use std::time::Duration;

use alloy::primitives::{Address, Bytes, Signature, B256};

use super::protocol::{
    check_signature, PushReply, SignatureList, SignaturePush, MAX_SIGNATURES_PER_HASH,
    PROTOCOL_VERSION,
};
use crate::config::PeerConfig;

/// HTTP client for every configured peer.
#[derive(Debug, Clone)]
pub struct PeerClient {
    http: reqwest::Client,
    peers: Vec<PeerConfig>,
}

impl PeerClient {
    pub fn new(peers: &[PeerConfig]) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .connect_timeout(Duration::from_secs(2))
            .build()?;
        Ok(Self {
            http,
            peers: peers.to_vec(),
        })
    }

    pub fn peers(&self) -> &[PeerConfig] {
        &self.peers
    }

    /// Whether each peer's `/health` answers now (for readiness and `dvn_peer_up`).
    pub async fn probe_health(&self) -> std::collections::BTreeMap<String, bool> {
        let probes = self.peers.iter().map(|peer| async move {
            let url = format!("{}/health", peer.url.trim_end_matches('/'));
            let up = matches!(self.http.get(url).send().await, Ok(r) if r.status().is_success());
            (peer.name.clone(), up)
        });
        futures::future::join_all(probes)
            .await
            .into_iter()
            .collect()
    }

    /// Sends our signature to every peer; failures are logged, never fatal (peers pull too).
    pub async fn push(&self, call_hash: B256, signer: Address, signature: &Signature) {
        let body = SignaturePush {
            version: PROTOCOL_VERSION,
            call_hash,
            signer,
            signature: Bytes::copy_from_slice(&signature.as_bytes()),
        };
        let sends = self.peers.iter().map(|peer| {
            let body = body.clone();
            async move {
                let url = format!("{}/v1/signatures", peer.url.trim_end_matches('/'));
                let result = self.http.post(url).json(&body).send().await;
                let outcome = match result {
                    Ok(r) if r.status().is_success() => match r.json::<PushReply>().await {
                        Ok(reply) if reply.accepted => "accepted",
                        Ok(_) => "declined",
                        Err(_) => "bad_reply",
                    },
                    Ok(_) => "http_error",
                    Err(_) => "unreachable",
                };
                metrics::counter!("dvn_peer_push_total", "peer" => peer.name.clone(), "outcome" => outcome).increment(1);
                tracing::debug!(peer = %peer.name, %call_hash, outcome, "pushed signature");
            }
        });
        futures::future::join_all(sends).await;
    }

    /// Asks every peer for signatures over `call_hash`; returns only those that check out
    /// against `signer_set`, with the peer they came from.
    pub async fn pull(
        &self,
        call_hash: B256,
        signer_set: &[Address],
    ) -> Vec<(String, Address, Signature)> {
        let pulls = self.peers.iter().map(|peer| async move {
            let url = format!("{}/v1/signatures/{call_hash}", peer.url.trim_end_matches('/'));
            let list = match self.http.get(url).send().await {
                Ok(r) if r.status().is_success() => r.json::<SignatureList>().await.ok(),
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

fn reject(peer: &str, reason: &'static str) {
    metrics::counter!("dvn_peer_signatures_rejected_total", "peer" => peer.to_string(), "reason" => reason).increment(1);
}
