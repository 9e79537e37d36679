//! New-heads stream: a chain's WebSocket `newHeads` subscription (`chains[].ws`), used only
//! as a hint of *when* a block arrived.
//!
//! It wakes the chain's watcher as soon as a block is announced, instead of at its next poll
//! (on average half of `poll_interval_ms` later, for this node and for each peer it needs a
//! signature from), and gives the submit stage the moment each destination block was seen,
//! which times batch closing more closely than the heads the stage reads itself.
//!
//! Nothing read from the stream is trusted: the watcher still reads the head and the logs from
//! the agreed `rpc` endpoints, and the poll keeps running. A dead stream costs the latency it
//! saved, and a lying one at worst makes the watcher look early or late, never sign anything
//! else. A stream flooding headers cannot make the watcher read faster than once per
//! [`MIN_WAKE`].

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use alloy::providers::{Provider, ProviderBuilder, WsConnect};
use tokio::sync::{broadcast::error::RecvError, Notify};
use tokio_util::sync::CancellationToken;

/// Shortest time between two wake-ups of the watcher. On a chain whose blocks come faster
/// (a devnet mining one per transaction) each wake-up scans several blocks together, as a poll
/// would: at 50 one-packet blocks a second, waking up to every 50 ms cost a third more reads
/// per packet than 100 ms for a p99 within the same spread. Live chains' blocks are further
/// apart and are each announced at once.
pub const MIN_WAKE: Duration = Duration::from_millis(100);

/// Longest wait before connecting again after the stream failed or ended.
const MAX_RECONNECT_WAIT: Duration = Duration::from_secs(30);

/// A block as the stream announced it, and when it arrived here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeadSeen {
    pub number: u64,
    pub timestamp: u64,
    pub at: Instant,
}

/// What one chain's stream has told this node; empty (and never waking anyone) without `ws`.
#[derive(Debug, Default)]
pub struct NewHeads {
    wake: Notify,
    latest: Mutex<Option<HeadSeen>>,
}

impl NewHeads {
    /// Notified (at most once per [`MIN_WAKE`]) when a new block was announced.
    pub fn wake(&self) -> &Notify {
        &self.wake
    }

    /// The block announced last. Untrusted: a reader matches it against a head the agreed
    /// endpoints returned before using when it arrived.
    pub fn latest(&self) -> Option<HeadSeen> {
        *self.latest.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes in an announced block; true when it differs from the one before (a repeat — a
    /// reconnect replaying — neither wakes nor times anything). A lower number (a reorg back,
    /// or a stream that lied high) is taken as it is, so that one wrong announcement cannot
    /// silence the stream for good.
    fn announced(&self, number: u64, timestamp: u64, at: Instant) -> bool {
        let mut latest = self.latest.lock().unwrap_or_else(|e| e.into_inner());
        if latest.is_some_and(|seen| seen.number == number) {
            return false;
        }
        *latest = Some(HeadSeen {
            number,
            timestamp,
            at,
        });
        true
    }
}

/// Follows `url`'s new heads into `heads` until `cancel`, connecting again (with a growing
/// wait) whenever the stream fails or ends. `dvn_chain_head_stream_up{chain}` says whether it
/// is subscribed now.
///
/// The gauge appears with the first attempt's outcome, not before: a series at 0 in the
/// milliseconds before a healthy start's first subscription would be a scrape's worth of
/// "down" that an alert on it could catch.
pub async fn follow(chain: String, url: String, heads: Arc<NewHeads>, cancel: CancellationToken) {
    let up = |value: f64| {
        metrics::gauge!("dvn_chain_head_stream_up", "chain" => chain.clone()).set(value)
    };
    let announced = metrics::counter!("dvn_chain_heads_announced_total", "chain" => chain.clone());
    let mut wait = Duration::from_secs(1);
    loop {
        let outcome = tokio::select! {
            _ = cancel.cancelled() => return,
            outcome = stream(&url, &heads, &up, &announced) => outcome,
        };
        match outcome {
            // It ran until the server closed it: connect again soon.
            Ok(()) => wait = Duration::from_secs(1),
            Err(e) => {
                tracing::warn!(
                    chain,
                    "new-heads stream: {}; polling only until it is back",
                    crate::chain::redact(&format!("{e:#}"))
                );
            }
        }
        up(0.0);
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
        wait = (wait * 2).min(MAX_RECONNECT_WAIT);
    }
}

/// One subscription, until it closes (`Ok`) or fails to start (`Err`); `up` is 1 while it is
/// subscribed, `announced` counts the blocks announced that differ from the one before.
async fn stream(
    url: &str,
    heads: &NewHeads,
    up: &impl Fn(f64),
    announced: &metrics::Counter,
) -> anyhow::Result<()> {
    let connect = ProviderBuilder::new().connect_ws(WsConnect::new(url));
    let provider = tokio::time::timeout(Duration::from_secs(10), connect).await??;
    let mut subscription =
        tokio::time::timeout(Duration::from_secs(10), provider.subscribe_blocks()).await??;
    up(1.0);
    let mut last_wake: Option<Instant> = None;
    loop {
        let header = match subscription.recv().await {
            Ok(header) => header,
            // Fell behind a burst: the next header is newer anyway.
            Err(RecvError::Lagged(_)) => continue,
            Err(RecvError::Closed) => return Ok(()),
        };
        let at = Instant::now();
        if !heads.announced(header.inner.number, header.inner.timestamp, at) {
            continue;
        }
        announced.increment(1);
        if let Some(since) = last_wake.map(|w| at.saturating_duration_since(w)) {
            if since < MIN_WAKE {
                // Headers meanwhile queue in the subscription and are taken in after.
                tokio::time::sleep(MIN_WAKE - since).await;
            }
        }
        heads.wake.notify_one();
        last_wake = Some(Instant::now());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repeat_is_not_announced_again_but_a_lower_block_is() {
        let heads = NewHeads::default();
        let t0 = Instant::now();
        assert!(heads.latest().is_none());
        assert!(heads.announced(10, 100, t0));
        // A reconnect replaying the same head: its first sighting stands.
        assert!(!heads.announced(10, 100, t0 + Duration::from_millis(5)));
        assert_eq!(heads.latest().map(|s| s.at), Some(t0));
        // A stream that announced a number far too high is not stuck on it.
        assert!(heads.announced(u64::MAX, 0, t0 + Duration::from_millis(6)));
        assert!(heads.announced(10, 100, t0 + Duration::from_millis(7)));
        let later = t0 + Duration::from_secs(1);
        assert!(heads.announced(11, 101, later));
        assert_eq!(
            heads.latest(),
            Some(HeadSeen {
                number: 11,
                timestamp: 101,
                at: later
            })
        );
    }
}
