//! The submitter lease: of several replicas of one region, only the one holding the lease in
//! Redis sends transactions (no two processes race for the submitter's nonces). Replicas
//! without it keep watching and signing.
//!
//! The lease is a key set with `NX PX ttl` to this replica's random id and renewed at a third
//! of the TTL. Each acquisition increments a fencing counter; right before every broadcast the
//! submitter checks, atomically in Redis, that the key still holds its id *and* the counter
//! still holds its token — a replica that paused past its TTL (GC, SIGSTOP, partition) and
//! lost the lease can therefore never broadcast with a stale belief. When Redis is
//! unreachable no replica holds the lease: fail safe, nothing is sent.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use redis::aio::ConnectionManager;
use redis::Script;
use tokio_util::sync::CancellationToken;

/// Acquire-or-renew. KEYS: lease, fence. ARGV: id, ttl ms. Returns the fencing token, or -1.
const ACQUIRE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return tonumber(redis.call('GET', KEYS[2]) or '0')
end
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return redis.call('INCR', KEYS[2])
end
return -1
";

/// Still ours? KEYS: lease, fence. ARGV: id, token. Returns 1 or 0.
const CONFIRM: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] and tonumber(redis.call('GET', KEYS[2]) or '0') == tonumber(ARGV[2]) then
  return 1
end
return 0
";

#[derive(Debug, Clone, Copy)]
struct Held {
    token: i64,
    until: Instant,
}

/// This replica's view of the lease.
#[derive(Clone)]
pub struct Lease {
    conn: ConnectionManager,
    key: String,
    fence_key: String,
    id: String,
    ttl: Duration,
    held: Arc<Mutex<Option<Held>>>,
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lease")
            .field("key", &self.key)
            .field("id", &self.id)
            .finish()
    }
}

impl Lease {
    /// Connects to Redis (`redis://…`); the lease key is per region.
    pub async fn connect(url: &str, region: &str, ttl: Duration) -> anyhow::Result<Self> {
        let client = redis::Client::open(url)?;
        // Bounded: with Redis gone, a lease call must fail (and the role be dropped) within a
        // fraction of the TTL, not hang while the manager reconnects.
        let bound = (ttl / 4).max(Duration::from_millis(200));
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(bound))
            .set_response_timeout(Some(bound))
            .set_number_of_retries(1);
        let conn = ConnectionManager::new_with_config(client, config).await?;
        let id = format!("{region}-{}-{:016x}", std::process::id(), rand_u64());
        Ok(Self {
            conn,
            key: format!("dvn:{region}:submitter"),
            fence_key: format!("dvn:{region}:submitter:fence"),
            id,
            ttl,
            held: Arc::new(Mutex::new(None)),
        })
    }

    /// The fencing token while this replica holds the lease (with a safety margin before the
    /// TTL runs out).
    pub fn token(&self) -> Option<i64> {
        let held = *self.held.lock().unwrap_or_else(|e| e.into_inner());
        held.filter(|h| Instant::now() < h.until).map(|h| h.token)
    }

    /// Checks in Redis, right before a broadcast, that `token` is still current and ours.
    pub async fn confirm(&self, token: i64) -> bool {
        let mut conn = self.conn.clone();
        let ok: Result<i64, _> = Script::new(CONFIRM)
            .key(&self.key)
            .key(&self.fence_key)
            .arg(&self.id)
            .arg(token)
            .invoke_async(&mut conn)
            .await;
        matches!(ok, Ok(1))
    }

    async fn acquire_or_renew(&self) -> Option<i64> {
        let mut conn = self.conn.clone();
        let ttl_ms = u64::try_from(self.ttl.as_millis()).unwrap_or(u64::MAX);
        let started = Instant::now();
        let result: Result<i64, _> = Script::new(ACQUIRE)
            .key(&self.key)
            .key(&self.fence_key)
            .arg(&self.id)
            .arg(ttl_ms)
            .invoke_async(&mut conn)
            .await;
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        match result {
            Ok(token) if token > 0 => {
                // Count the TTL from before the request, minus a margin for clock drift.
                *held = Some(Held {
                    token,
                    until: started + self.ttl.mul_f64(0.8),
                });
                Some(token)
            }
            Ok(_) => {
                *held = None;
                None
            }
            Err(e) => {
                tracing::warn!("redis lease: {e}");
                *held = None;
                None
            }
        }
    }

    /// Keeps acquiring / renewing until cancelled.
    pub async fn run(self, cancel: CancellationToken) {
        let mut had = None;
        loop {
            let now = self.acquire_or_renew().await;
            if now != had {
                match now {
                    Some(token) => tracing::info!(token, "submitter lease acquired"),
                    None => {
                        tracing::info!("not holding the submitter lease: watching and signing only")
                    }
                }
                metrics::gauge!("dvn_submitter_lease_held").set(if now.is_some() {
                    1.0
                } else {
                    0.0
                });
                had = now;
            }
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(self.ttl / 3) => {}
            }
        }
    }
}

/// A random id component without pulling in a RNG crate for one call: the process's own
/// hasher keys are randomly seeded by the standard library.
fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(Instant::now().elapsed().as_nanos());
    h.finish()
}
