//! The store: the node's only source of truth. Every stage persists its transition here
//! before anything else sees it; after a restart, every stage reloads its work from here.
//!
//! One schema, two backends through sqlx's `Any` driver: embedded SQLite (default) and
//! PostgreSQL. The statements are shared; only the DDL differs (`BLOB` vs `BYTEA`), so each
//! backend has its own versioned migrations under `migrations/`.

mod audit;
mod claims;
mod control;
mod group_commit;
mod rotations;
mod rows;
mod state;

use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

use alloy::primitives::{Address, B256};
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Row};

pub use audit::{
    verify as verify_audit_chain, verify_checkpoint, AuditEntry, AuditRecord, ChainBreak,
};
pub use claims::PeerClaim;
pub use control::{Holds, Pause, PauseScope, TokenRow};
pub use group_commit::{GroupCommitError, Queued, SignatureWriter};
pub use rotations::{Rotation, RotationState};
pub use rows::{NewPacket, PacketRow, PacketState, PathKey, SubmissionRow};
pub use state::{is_legal, Expect};

use state::Change;

/// One signature for [`Store::write_signatures`].
#[derive(Debug, Clone)]
pub enum SignatureWrite {
    /// A peer's (already recovered to its signer); a repeat from the same signer is a no-op.
    Peer {
        call_hash: B256,
        signer: Address,
        signature: Vec<u8>,
        source: String,
    },
    /// Ours, stored together with its packet's move from `expect` to signed.
    Own {
        expect: Expect,
        confirmations: u64,
        expiration: u64,
        call_hash: B256,
        signer: Address,
        signature: Vec<u8>,
    },
}

/// The most recently changed packets (index `packets_updated`).
const RECENT: &str = "SELECT * FROM packets ORDER BY updated_at_ms DESC LIMIT $1";
/// The same in one state (index `packets_state_updated`).
const RECENT_IN_STATE: &str =
    "SELECT * FROM packets WHERE state = $1 ORDER BY updated_at_ms DESC LIMIT $2";

/// How often one observation is re-read and re-applied when a concurrent writer moved the row
/// between the read and the write.
const OBSERVE_ATTEMPTS: usize = 3;

/// Most values bound in one `IN (…)` list (SQLite allows 32,766 variables a statement).
const IN_LIST_CHUNK: usize = 500;

/// `$1, $2, …, $n`.
fn placeholders(n: usize) -> String {
    placeholders_from(1, n)
}

/// `$first, …, $(first + n - 1)`.
fn placeholders_from(first: usize, n: usize) -> String {
    (first..first + n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// How many blocks of scan checkpoints are kept behind the cursor (the reorg walk-back never
/// needs more than a chain's `max_reorg_depth`).
const CHECKPOINT_SPAN: u64 = 10_000;

/// Errors from the store; callers retry on `Database` and stop on `Corrupt`.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migrations: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("stored row is corrupt: {0}")]
    Corrupt(String),
    #[error("unsupported store URL (use sqlite: or postgres://)")]
    UnsupportedUrl,
    #[error("illegal packet state move {from} -> {to}")]
    IllegalTransition {
        from: &'static str,
        to: &'static str,
    },
    #[error("packet {0} kept changing under the watcher; the scan is retried")]
    Raced(B256),
}

/// What happened when a packet observation was recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Observed {
    /// First time we saw this packet.
    New,
    /// Seen before with the same payload (overlapping scans, reorg re-inclusion).
    Known,
    /// A different payload for a (path, nonce) not yet signed: the new one replaces it.
    Replaced,
    /// A different payload for a (path, nonce) we already signed: refused, packet halted.
    Conflict,
}

/// A path the equivocation guard stopped, with the nonce that conflicted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HaltedPath {
    pub path: PathKey,
    pub nonce: u64,
    pub reason: String,
    pub halted_at_ms: i64,
}

/// The packets one region is designated for: those whose source block time falls in a
/// rotation slot (`slot_secs` long) whose index, modulo `regions`, is `index`
/// (`pipeline::turns::designated`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Designation {
    pub slot_secs: u64,
    pub regions: u64,
    pub index: u64,
}

/// Binds a path's four key columns (src eid, sender, dst eid, receiver) to the next four
/// parameters of a query.
trait BindPath {
    fn bind_path(self, path: &PathKey) -> Self;
}

impl<'q> BindPath for sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments> {
    fn bind_path(self, path: &PathKey) -> Self {
        self.bind(i64::from(path.src_eid))
            .bind(path.sender.to_vec())
            .bind(i64::from(path.dst_eid))
            .bind(path.receiver.to_vec())
    }
}

/// Handle to the database; cheap to clone.
#[derive(Debug, Clone)]
pub struct Store {
    pool: AnyPool,
    /// The connection URL as used (to open a [`Store::reader`]).
    url: String,
}

/// Milliseconds since the Unix epoch (for bookkeeping timestamps only, never for signing).
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn int(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// The database file of a `sqlite:` store URL (`sqlite://path?…` or `sqlite:path`); None for
/// PostgreSQL.
pub fn sqlite_file(url: &str) -> Option<std::path::PathBuf> {
    let rest = url.strip_prefix("sqlite:")?;
    let rest = rest.strip_prefix("//").unwrap_or(rest);
    Some(std::path::PathBuf::from(
        rest.split('?').next().unwrap_or(rest),
    ))
}

/// True when every migration of `migrator` is recorded as applied, with the same checksum.
async fn all_applied(pool: &AnyPool, migrator: &sqlx::migrate::Migrator) -> bool {
    let Ok(rows) =
        sqlx::query("SELECT version, checksum FROM _sqlx_migrations WHERE success = TRUE")
            .fetch_all(pool)
            .await
    else {
        return false;
    };
    let applied: std::collections::HashMap<i64, Vec<u8>> = rows
        .iter()
        .filter_map(|r| Some((r.try_get("version").ok()?, r.try_get("checksum").ok()?)))
        .collect();
    migrator
        .iter()
        .all(|m| applied.get(&m.version).map(Vec::as_slice) == Some(&*m.checksum))
}

/// Whether the pool pings a connection each time it is handed out (sqlx's default). Not for
/// SQLite: the database is a file in this process, there is no far end to have gone away, and
/// the ping is a round trip to the connection's worker thread in front of every statement —
/// in a 10,000-packet catch-up, `perf` put 4–5 % of a node's samples in it. A PostgreSQL
/// connection keeps it: a server restart or a dropped TCP connection is found before a
/// statement is lost to it.
fn test_before_acquire(sqlite: bool) -> bool {
    !sqlite
}

/// Runs `pragmas` on a new connection of an SQLite pool (nothing on PostgreSQL).
async fn sqlite_pragmas(
    conn: &mut sqlx::AnyConnection,
    sqlite: bool,
    pragmas: &'static [&'static str],
) -> Result<(), sqlx::Error> {
    if sqlite {
        for pragma in pragmas {
            sqlx::query(*pragma).execute(&mut *conn).await?;
        }
    }
    Ok(())
}

/// Whether a connection coming back to the pool still counts itself inside a transaction.
/// Such a connection is closed (which rolls back whatever it holds) rather than reused.
///
/// Why: SQLite rolls a transaction back by itself on some errors (SQLITE_FULL: a full disk).
/// sqlx's ROLLBACK of the dropped transaction then fails, its transaction depth stays at 1,
/// and the next `begin` on that connection becomes a SAVEPOINT; the first of those rolled back
/// leaves SQLite inside a transaction that nothing ever commits, and every later write is
/// silently held in it — seen by this connection, by no other, and lost on a restart (the
/// store test on a full disk shows it). A dropped transaction's ROLLBACK is queued on the
/// connection, so it is given a round trip to run before the depth is read again.
async fn left_in_transaction(conn: &mut sqlx::AnyConnection) -> bool {
    use sqlx::Connection;
    if !conn.is_in_transaction() {
        return false;
    }
    let _ = sqlx::query("SELECT 1").execute(&mut *conn).await;
    if !conn.is_in_transaction() {
        return false;
    }
    tracing::warn!(
        "a store connection came back inside a transaction (after a failed write, e.g. a full disk): closed, so nothing is left uncommitted"
    );
    true
}

impl Store {
    /// Connects and brings the schema up to date (PostgreSQL statements time out after 10 s).
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        Self::connect_with(url, std::time::Duration::from_secs(10)).await
    }

    /// [`Store::connect`] with PostgreSQL's `statement_timeout` set to `statement_timeout`
    /// (unless the URL sets its own `options`).
    pub async fn connect_with(
        url: &str,
        statement_timeout: std::time::Duration,
    ) -> Result<Self, StoreError> {
        sqlx::any::install_default_drivers();
        let (url, sqlite) = if let Some(rest) = url.strip_prefix("sqlite:") {
            // Create the file on first use; one writer at a time is what SQLite wants.
            let sep = if rest.contains('?') { '&' } else { '?' };
            let url = if rest.contains("mode=") {
                url.to_string()
            } else {
                format!("{url}{sep}mode=rwc")
            };
            (url, true)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let url = if url.contains("options=") {
                url.to_string()
            } else {
                let sep = if url.contains('?') { '&' } else { '?' };
                format!(
                    "{url}{sep}options=-c%20statement_timeout%3D{}",
                    statement_timeout.as_millis()
                )
            };
            (url, false)
        } else {
            return Err(StoreError::UnsupportedUrl);
        };
        let pool = AnyPoolOptions::new()
            .max_connections(if sqlite { 1 } else { 8 })
            .acquire_timeout(std::time::Duration::from_secs(10))
            .test_before_acquire(test_before_acquire(sqlite))
            // Per connection: a connection closed by `left_in_transaction` is opened again
            // with the same durability.
            .after_connect(move |conn, _| {
                Box::pin(sqlite_pragmas(conn, sqlite, &["PRAGMA synchronous=FULL"]))
            })
            .after_release(|conn, _| Box::pin(async move { Ok(!left_in_transaction(conn).await) }))
            .connect(&url)
            .await?;
        if sqlite {
            sqlx::query("PRAGMA journal_mode=WAL")
                .execute(&pool)
                .await?;
        }
        let migrator = if sqlite {
            sqlx::migrate!("migrations/sqlite")
        } else {
            sqlx::migrate!("migrations/postgres")
        };
        // A node running under a role without DDL rights (see the README's grants) finds the
        // schema already migrated by the owner and must not touch it.
        if !all_applied(&pool, &migrator).await {
            migrator.run(&pool).await?;
        }
        Ok(Self { pool, url })
    }

    /// The newest schema version this build knows for the backend of `url`.
    pub fn known_schema_version(url: &str) -> i64 {
        let migrator = if url.starts_with("sqlite:") {
            sqlx::migrate!("migrations/sqlite")
        } else {
            sqlx::migrate!("migrations/postgres")
        };
        migrator.iter().map(|m| m.version).max().unwrap_or(0)
    }

    /// The newest schema version applied to this store.
    pub async fn schema_version(&self) -> Result<i64, StoreError> {
        let row =
            sqlx::query("SELECT MAX(version) AS v FROM _sqlx_migrations WHERE success = TRUE")
                .fetch_one(&self.pool)
                .await?;
        Ok(row.try_get::<Option<i64>, _>("v")?.unwrap_or(0))
    }

    /// True for the embedded SQLite backend.
    pub fn is_sqlite(&self) -> bool {
        self.url.starts_with("sqlite:")
    }

    /// A second handle on the same database with its own connections, for readers that must
    /// never wait behind the pipeline (the health snapshot, operator queries): with SQLite's
    /// one writer connection, a snapshot scanning history would otherwise hold up every stage.
    pub async fn reader(&self) -> Result<Self, StoreError> {
        let sqlite = self.is_sqlite();
        let pool = AnyPoolOptions::new()
            .max_connections(2)
            .acquire_timeout(std::time::Duration::from_secs(10))
            .test_before_acquire(test_before_acquire(sqlite))
            // A page cache of 1 MiB instead of SQLite's 2 MiB per connection: what these
            // readers scan is in the OS's cache anyway, and each connection's pages count in
            // the node's memory.
            .after_connect(move |conn, _| {
                Box::pin(sqlite_pragmas(conn, sqlite, &["PRAGMA cache_size=-1024"]))
            })
            .connect(&self.url)
            .await?;
        Ok(Self {
            pool,
            url: self.url.clone(),
        })
    }

    /// Writes a transactionally consistent copy of an SQLite store to `dest` (`VACUUM INTO`;
    /// safe while the node runs). Refused for PostgreSQL (use `pg_dump`).
    pub async fn snapshot_sqlite(&self, dest: &std::path::Path) -> Result<(), StoreError> {
        if !self.is_sqlite() {
            return Err(StoreError::UnsupportedUrl);
        }
        sqlx::query("VACUUM INTO $1")
            .bind(dest.to_string_lossy().into_owned())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Deletes finished packets (verified, skipped, orphaned) last changed before
    /// `before_ms`, with their signatures, finished submissions and old peer claims; returns
    /// how many packets. Path nonces, cursors, open
    /// packets and packets waiting for an operator (invalid, conflict) are kept.
    pub async fn prune(&self, before_ms: i64) -> Result<u64, StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "DELETE FROM signatures WHERE call_hash IN (SELECT call_hash FROM packets \
             WHERE state IN ('verified', 'skipped', 'orphaned') AND updated_at_ms < $1 AND call_hash IS NOT NULL)",
        )
        .bind(before_ms)
        .execute(&mut *tx)
        .await?;
        let done = sqlx::query(
            "DELETE FROM packets WHERE state IN ('verified', 'skipped', 'orphaned') AND updated_at_ms < $1",
        )
        .bind(before_ms)
        .execute(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM submissions WHERE state <> 'pending' AND created_at_ms < $1")
            .bind(before_ms)
            .execute(&mut *tx)
            .await?;
        // A peer's claim is dropped as soon as its nonce is seen used; one never looked at
        // again (its packets were verified another way) goes with the retention period.
        sqlx::query("DELETE FROM peer_claims WHERE received_at_ms < $1")
            .bind(before_ms)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(done.rows_affected())
    }

    /// For SQLite, the directory holding the database file and the space left on its
    /// filesystem for this process; None for PostgreSQL (its disk is the server's) or when it
    /// cannot be read.
    pub fn disk_free(&self) -> Option<(std::path::PathBuf, u64)> {
        let file = sqlite_file(&self.url)?;
        let dir = file
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .map_or_else(
                || std::path::PathBuf::from("."),
                std::path::Path::to_path_buf,
            );
        let free = fs4::available_space(&dir).ok()?;
        Some((dir, free))
    }

    /// True when the database answers.
    pub async fn ping(&self) -> bool {
        sqlx::query("SELECT 1").execute(&self.pool).await.is_ok()
    }

    /// The scan cursor of source chain `eid`.
    pub async fn cursor(&self, eid: u32) -> Result<Option<(u64, B256)>, StoreError> {
        let row = sqlx::query("SELECT block_number, block_hash FROM cursors WHERE eid = $1")
            .bind(i64::from(eid))
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| {
            Ok((
                rows::u64_col(&r, "block_number")?,
                rows::b256_col(&r, "block_hash")?,
            ))
        })
        .transpose()
    }

    /// Records what one scan step found and moves the cursor, atomically: a crash leaves either
    /// both or neither, so no log is skipped and none is lost.
    pub async fn record_scan(
        &self,
        eid: u32,
        packets: &[NewPacket],
        path_nonces: &[(PathKey, u64, u64)],
        cursor: (u64, B256),
    ) -> Result<Vec<Observed>, StoreError> {
        self.record_scan_from(eid, None, packets, path_nonces, cursor)
            .await
            .map(|(outcomes, _)| outcomes)
    }

    /// [`Store::record_scan`] for a step that started at cursor `from` (`None`: no cursor yet).
    /// The packets are recorded either way (they are real observations); the cursor moves only
    /// if it is still at `from` — an operator's rescan or a reorg rewind that moved it meanwhile
    /// wins. The flag says whether the cursor moved.
    pub async fn record_scan_from(
        &self,
        eid: u32,
        from: Option<Option<(u64, B256)>>,
        packets: &[NewPacket],
        path_nonces: &[(PathKey, u64, u64)],
        cursor: (u64, B256),
    ) -> Result<(Vec<Observed>, bool), StoreError> {
        let mut tx = self.pool.begin().await?;
        let mut outcomes = Vec::with_capacity(packets.len());
        for packet in packets {
            let mut attempt = 0;
            let outcome = loop {
                attempt += 1;
                match rows::observe(&mut tx, packet).await {
                    Err(StoreError::Raced(_)) if attempt < OBSERVE_ATTEMPTS => continue,
                    other => break other?,
                }
            };
            if outcome == Observed::Conflict {
                // The equivocation guard halts the whole path, in the same transaction: no
                // later nonce on it is signed until an operator has looked.
                sqlx::query(
                    "INSERT INTO halted_paths (src_eid, sender, dst_eid, receiver, nonce, reason, halted_at_ms) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (src_eid, sender, dst_eid, receiver) DO NOTHING",
                )
                .bind_path(&packet.path())
                .bind(int(packet.nonce))
                .bind(format!(
                    "equivocation at nonce {}: the source now shows payload {} for a packet we signed",
                    packet.nonce, packet.payload_hash
                ))
                .bind(now_ms())
                .execute(&mut *tx)
                .await?;
            }
            outcomes.push(outcome);
        }
        for (path, nonce, block) in path_nonces {
            sqlx::query(
                "INSERT INTO path_nonces (src_eid, sender, dst_eid, receiver, max_nonce, max_nonce_block) \
                 VALUES ($1, $2, $3, $4, $5, $6) \
                 ON CONFLICT (src_eid, sender, dst_eid, receiver) DO UPDATE SET max_nonce = $5, max_nonce_block = $6 \
                 WHERE path_nonces.max_nonce < $5",
            )
            .bind_path(path)
            .bind(int(*nonce))
            .bind(int(*block))
            .execute(&mut *tx)
            .await?;
        }
        let moved = match from {
            None => {
                sqlx::query(
                    "INSERT INTO cursors (eid, block_number, block_hash) VALUES ($1, $2, $3) \
                     ON CONFLICT (eid) DO UPDATE SET block_number = $2, block_hash = $3",
                )
                .bind(i64::from(eid))
                .bind(int(cursor.0))
                .bind(cursor.1.to_vec())
                .execute(&mut *tx)
                .await?
            }
            Some(None) => {
                sqlx::query(
                    "INSERT INTO cursors (eid, block_number, block_hash) VALUES ($1, $2, $3) \
                     ON CONFLICT (eid) DO NOTHING",
                )
                .bind(i64::from(eid))
                .bind(int(cursor.0))
                .bind(cursor.1.to_vec())
                .execute(&mut *tx)
                .await?
            }
            Some(Some((number, hash))) => {
                sqlx::query(
                    "UPDATE cursors SET block_number = $2, block_hash = $3 \
                     WHERE eid = $1 AND block_number = $4 AND block_hash = $5",
                )
                .bind(i64::from(eid))
                .bind(int(cursor.0))
                .bind(cursor.1.to_vec())
                .bind(int(number))
                .bind(hash.to_vec())
                .execute(&mut *tx)
                .await?
            }
        }
        .rows_affected()
            == 1;
        if !moved {
            tx.commit().await?;
            return Ok((outcomes, false));
        }
        sqlx::query(
            "INSERT INTO scan_checkpoints (eid, block_number, block_hash) VALUES ($1, $2, $3) \
             ON CONFLICT (eid, block_number) DO UPDATE SET block_hash = $3",
        )
        .bind(i64::from(eid))
        .bind(int(cursor.0))
        .bind(cursor.1.to_vec())
        .execute(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM scan_checkpoints WHERE eid = $1 AND block_number < $2")
            .bind(i64::from(eid))
            .bind(int(cursor.0.saturating_sub(CHECKPOINT_SPAN)))
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok((outcomes, true))
    }

    /// Paths halted by the equivocation guard.
    pub async fn halted_paths(&self) -> Result<Vec<HaltedPath>, StoreError> {
        let rows = sqlx::query("SELECT * FROM halted_paths ORDER BY halted_at_ms")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                Ok(HaltedPath {
                    path: PathKey {
                        src_eid: rows::u32_col(r, "src_eid")?,
                        sender: rows::b256_col(r, "sender")?,
                        dst_eid: rows::u32_col(r, "dst_eid")?,
                        receiver: rows::b256_col(r, "receiver")?,
                    },
                    nonce: rows::u64_col(r, "nonce")?,
                    reason: r.try_get("reason")?,
                    halted_at_ms: r.try_get("halted_at_ms")?,
                })
            })
            .collect()
    }

    /// Lets a halted path go on (an operator's decision). False when it was not halted.
    pub async fn resume_path(&self, path: &PathKey) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "DELETE FROM halted_paths WHERE src_eid = $1 AND sender = $2 AND dst_eid = $3 AND receiver = $4",
        )
        .bind_path(path)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    /// The highest nonce seen on a path (all packets, assigned to us or not), with the block
    /// it was seen in (None for rows from before that was kept).
    pub async fn path_max_nonce(
        &self,
        path: &PathKey,
    ) -> Result<Option<(u64, Option<u64>)>, StoreError> {
        let row = sqlx::query(
            "SELECT max_nonce, max_nonce_block FROM path_nonces \
             WHERE src_eid = $1 AND sender = $2 AND dst_eid = $3 AND receiver = $4",
        )
        .bind_path(path)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| {
            let block = r
                .try_get::<Option<i64>, _>("max_nonce_block")?
                .and_then(|b| u64::try_from(b).ok());
            Ok((rows::u64_col(&r, "max_nonce")?, block))
        })
        .transpose()
    }

    /// The paths halted by the equivocation guard, as a set for lookups.
    pub async fn halted_path_set(&self) -> Result<std::collections::HashSet<PathKey>, StoreError> {
        Ok(self
            .halted_paths()
            .await?
            .into_iter()
            .map(|h| h.path)
            .collect())
    }

    /// Scan checkpoints of chain `eid` at or below `at_or_below`, newest first.
    pub async fn checkpoints(
        &self,
        eid: u32,
        at_or_below: u64,
        limit: usize,
    ) -> Result<Vec<(u64, B256)>, StoreError> {
        let rows = sqlx::query(
            "SELECT block_number, block_hash FROM scan_checkpoints WHERE eid = $1 AND block_number <= $2 \
             ORDER BY block_number DESC LIMIT $3",
        )
        .bind(i64::from(eid))
        .bind(int(at_or_below))
        .bind(int(limit as u64))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    rows::u64_col(r, "block_number")?,
                    rows::b256_col(r, "block_hash")?,
                ))
            })
            .collect()
    }

    /// Moves the cursor back (reorg), without touching packets: the confirm stage re-checks
    /// each packet against the canonical chain before it is signed.
    pub async fn rewind_cursor(&self, eid: u32, to: (u64, B256)) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO cursors (eid, block_number, block_hash) VALUES ($1, $2, $3) \
             ON CONFLICT (eid) DO UPDATE SET block_number = $2, block_hash = $3",
        )
        .bind(i64::from(eid))
        .bind(int(to.0))
        .bind(to.1.to_vec())
        .execute(&mut *tx)
        .await?;
        // Checkpoints above the new cursor belong to the abandoned branch.
        sqlx::query("DELETE FROM scan_checkpoints WHERE eid = $1 AND block_number > $2")
            .bind(i64::from(eid))
            .bind(int(to.0))
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Packets in `state` bound for `dst_eid` (any destination when `None`) that are due (not
    /// backing off), fairly across paths: the lowest nonces of every path first, round by
    /// round, so one busy path cannot fill the page and starve the others.
    pub async fn packets(
        &self,
        state: PacketState,
        dst_eid: Option<u32>,
        limit: usize,
    ) -> Result<Vec<PacketRow>, StoreError> {
        self.page(state, dst_eid, None, limit).await
    }

    /// Like [`Store::packets`], only packets whose source block time falls in a rotation slot
    /// of the given designation: the submit stage's own share of a backlog larger than its
    /// page, whose lowest nonces may all be designated to another region.
    pub async fn packets_designated(
        &self,
        state: PacketState,
        dst_eid: u32,
        designation: Designation,
        limit: usize,
    ) -> Result<Vec<PacketRow>, StoreError> {
        self.page(state, Some(dst_eid), Some(designation), limit)
            .await
    }

    async fn page(
        &self,
        state: PacketState,
        dst_eid: Option<u32>,
        designation: Option<Designation>,
        limit: usize,
    ) -> Result<Vec<PacketRow>, StoreError> {
        // Without a designation the slot length binds as 0: NULLIF makes the division NULL
        // (never a division by zero: neither backend promises to short-circuit the OR).
        let (slot_secs, regions, index) =
            designation.map_or((0, 1, 0), |d| (d.slot_secs, d.regions.max(1), d.index));
        let rows = sqlx::query(
            "SELECT * FROM (SELECT p.*, ROW_NUMBER() OVER (PARTITION BY src_eid, sender, dst_eid, receiver \
             ORDER BY nonce) AS path_rank FROM packets p WHERE state = $1 AND ($2 < 0 OR dst_eid = $2) \
             AND (retry_at_ms IS NULL OR retry_at_ms <= $4) \
             AND ($5 = 0 OR (block_timestamp / NULLIF($5, 0)) % $6 = $7)) ranked \
             ORDER BY path_rank, src_eid, sender, dst_eid, receiver LIMIT $3",
        )
        .bind(state.as_str())
        .bind(dst_eid.map_or(-1, i64::from))
        .bind(int(limit as u64))
        .bind(now_ms())
        .bind(int(slot_secs))
        .bind(int(regions))
        .bind(int(index))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(PacketRow::from_row).collect()
    }

    /// The most recently changed packets, in one state or all, newest first (operator views).
    pub async fn recent_packets(
        &self,
        state: Option<PacketState>,
        limit: u64,
    ) -> Result<Vec<PacketRow>, StoreError> {
        // Two statements, so each can walk an index (an `OR` on the state would make the
        // planner scan and sort the whole table).
        let rows = match state {
            Some(state) => {
                sqlx::query(RECENT_IN_STATE)
                    .bind(state.as_str())
                    .bind(int(limit))
                    .fetch_all(&self.pool)
                    .await?
            }
            None => {
                sqlx::query(RECENT)
                    .bind(int(limit))
                    .fetch_all(&self.pool)
                    .await?
            }
        };
        rows.iter().map(PacketRow::from_row).collect()
    }

    /// Puts off a packet whose checks failed until `retry_at_ms`, with the reason, unless it
    /// moved meanwhile. Not a state change: the version stays.
    pub async fn defer(
        &self,
        expect: Expect,
        retry_at_ms: i64,
        error: &str,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE packets SET retry_at_ms = $4, deferrals = deferrals + 1, last_error = $5 \
             WHERE guid = $1 AND state = $2 AND version = $3",
        )
        .bind(expect.guid.to_vec())
        .bind(expect.state.as_str())
        .bind(int(expect.version))
        .bind(retry_at_ms)
        .bind(error.to_string())
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// The packets with these GUIDs (those not stored are absent), in a few queries: one per
    /// 500 GUIDs instead of one each.
    pub async fn packets_by_guid(&self, guids: &[B256]) -> Result<Vec<PacketRow>, StoreError> {
        let mut found = Vec::with_capacity(guids.len());
        for chunk in guids.chunks(IN_LIST_CHUNK) {
            let sql = format!(
                "SELECT * FROM packets WHERE guid IN ({})",
                placeholders(chunk.len())
            );
            let query = chunk
                .iter()
                // Only numbered placeholders are formatted in; every value is bound.
                .fold(sqlx::query(sqlx::AssertSqlSafe(sql.as_str())), |q, guid| {
                    q.bind(guid.to_vec())
                });
            for r in query.fetch_all(&self.pool).await? {
                found.push(PacketRow::from_row(&r)?);
            }
        }
        Ok(found)
    }

    /// One packet by GUID.
    pub async fn packet(&self, guid: B256) -> Result<Option<PacketRow>, StoreError> {
        let row = sqlx::query("SELECT * FROM packets WHERE guid = $1")
            .bind(guid.to_vec())
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(PacketRow::from_row).transpose()
    }

    /// The packet whose current signed param has `call_hash`.
    pub async fn packet_by_call_hash(
        &self,
        call_hash: B256,
    ) -> Result<Option<PacketRow>, StoreError> {
        let row = sqlx::query("SELECT * FROM packets WHERE call_hash = $1")
            .bind(call_hash.to_vec())
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(PacketRow::from_row).transpose()
    }

    /// Unfinished packets per path: (src eid, dst eid, count, oldest source block timestamp).
    pub async fn backlog(&self) -> Result<Vec<(u32, u32, i64, u64)>, StoreError> {
        let rows = sqlx::query(
            "SELECT src_eid, dst_eid, COUNT(*) AS n, MIN(block_timestamp) AS oldest FROM packets \
             WHERE state IN ('observed', 'signed', 'submitted') GROUP BY src_eid, dst_eid",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r: &AnyRow| {
                Ok((
                    u32::try_from(r.try_get::<i64, _>("src_eid")?).unwrap_or(0),
                    u32::try_from(r.try_get::<i64, _>("dst_eid")?).unwrap_or(0),
                    r.try_get::<i64, _>("n")?,
                    u64::try_from(r.try_get::<i64, _>("oldest")?).unwrap_or(0),
                ))
            })
            .collect()
    }

    /// The most recently verified packet: (guid, src eid, dst eid, nonce, when in unix ms).
    pub async fn last_verified(&self) -> Result<Option<(B256, u32, u32, u64, i64)>, StoreError> {
        let row = sqlx::query(
            "SELECT guid, src_eid, dst_eid, nonce, updated_at_ms FROM packets \
             WHERE state = 'verified' ORDER BY updated_at_ms DESC LIMIT 1",
        )
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r: AnyRow| {
            let guid: Vec<u8> = r.try_get("guid")?;
            Ok((
                B256::try_from(guid.as_slice()).map_err(|_| StoreError::Corrupt("guid".into()))?,
                u32::try_from(r.try_get::<i64, _>("src_eid")?).unwrap_or(0),
                u32::try_from(r.try_get::<i64, _>("dst_eid")?).unwrap_or(0),
                u64::try_from(r.try_get::<i64, _>("nonce")?).unwrap_or(0),
                r.try_get::<i64, _>("updated_at_ms")?,
            ))
        })
        .transpose()
    }

    /// Number of packets per state (for status and metrics), as the triggers of migration
    /// 0008 keep them: no scan of the history. On PostgreSQL the triggers append changes
    /// (migration 0009): they are folded into one row per state here, in one statement (rows
    /// a concurrent fold already took are skipped by the other, so nothing counts twice).
    pub async fn count_by_state(&self) -> Result<Vec<(String, i64)>, StoreError> {
        if !self.is_sqlite() {
            sqlx::query(
                "WITH gone AS (DELETE FROM packet_counts RETURNING state, n) \
                 INSERT INTO packet_counts (state, n) \
                 SELECT state, SUM(n) FROM gone GROUP BY state",
            )
            .execute(&self.pool)
            .await?;
        }
        let rows = sqlx::query(
            "SELECT state, CAST(SUM(n) AS BIGINT) AS n FROM packet_counts \
             GROUP BY state HAVING SUM(n) <> 0 ORDER BY state",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r: &AnyRow| Ok((r.try_get::<String, _>("state")?, r.try_get::<i64, _>("n")?)))
            .collect()
    }

    /// Moves a packet from the state and version in `expect` to `to`, recording `error` (or
    /// clearing it). False when the row moved meanwhile (the caller's snapshot was stale).
    pub async fn transition(
        &self,
        expect: Expect,
        to: PacketState,
        error: Option<&str>,
    ) -> Result<bool, StoreError> {
        let mut conn = self.pool.acquire().await?;
        state::apply(&mut conn, expect, to, Change::Note(error)).await
    }

    /// [`Self::transition`] for many packets in one transaction (one commit instead of one
    /// each): settling a mined `execute`, or a peer's, moves every packet it verified. Per
    /// move, whether it was applied (false: the row moved meanwhile, as for one move).
    pub async fn transition_all(
        &self,
        moves: &[(Expect, PacketState, Option<&str>)],
    ) -> Result<Vec<bool>, StoreError> {
        if moves.is_empty() {
            return Ok(Vec::new());
        }
        let mut tx = self.pool.begin().await?;
        let mut applied = Vec::with_capacity(moves.len());
        for (expect, to, error) in moves {
            applied.push(state::apply(&mut tx, *expect, *to, Change::Note(*error)).await?);
        }
        tx.commit().await?;
        Ok(applied)
    }

    /// Persists our signature and the exact param it signs, then marks the packet signed — in
    /// one transaction, before the signature is shared with anyone.
    ///
    /// False (and nothing stored) when the packet moved since `expect` was read: the signature
    /// was made over a snapshot that no longer holds and must not be shared.
    pub async fn record_own_signature(
        &self,
        expect: Expect,
        confirmations: u64,
        expiration: u64,
        call_hash: B256,
        signer: Address,
        signature: &[u8],
    ) -> Result<bool, StoreError> {
        let own = SignatureWrite::Own {
            expect,
            confirmations,
            expiration,
            call_hash,
            signer,
            signature: signature.to_vec(),
        };
        Ok(self.write_signatures(std::slice::from_ref(&own)).await?[0])
    }

    /// Stores many signatures, ours and peers', in one transaction (one commit): what the
    /// [`SignatureWriter`] gathers while the previous commit runs. Per write, whether it was
    /// stored: ours as by [`Self::record_own_signature`] (with its packet's move to signed, or
    /// not at all), a peer's as by [`Self::insert_signature`].
    pub async fn write_signatures(
        &self,
        writes: &[SignatureWrite],
    ) -> Result<Vec<bool>, StoreError> {
        if writes.is_empty() {
            return Ok(Vec::new());
        }
        let mut tx = self.pool.begin().await?;
        let mut stored = Vec::with_capacity(writes.len());
        for write in writes {
            stored.push(match write {
                SignatureWrite::Peer {
                    call_hash,
                    signer,
                    signature,
                    source,
                } => {
                    rows::insert_signature(&mut tx, *call_hash, *signer, signature, source).await?
                }
                SignatureWrite::Own {
                    expect,
                    confirmations,
                    expiration,
                    call_hash,
                    signer,
                    signature,
                } => {
                    let change = Change::Signed {
                        confirmations: *confirmations,
                        expiration: *expiration,
                        call_hash: *call_hash,
                    };
                    // A row that moved is left as it is (the UPDATE matched nothing) and its
                    // signature is not stored; the others in the transaction still are.
                    let moved = state::apply(&mut tx, *expect, PacketState::Signed, change).await?;
                    if moved {
                        rows::insert_signature(&mut tx, *call_hash, *signer, signature, "self")
                            .await?;
                    }
                    moved
                }
            });
        }
        tx.commit().await?;
        Ok(stored)
    }

    /// Stores a (verified) signature; a repeat from the same signer is a no-op.
    pub async fn insert_signature(
        &self,
        call_hash: B256,
        signer: Address,
        signature: &[u8],
        source: &str,
    ) -> Result<bool, StoreError> {
        let mut conn = self.pool.acquire().await?;
        rows::insert_signature(&mut conn, call_hash, signer, signature, source).await
    }

    /// [`Self::insert_signature`] for many signatures in one transaction (one commit): what a
    /// round of pulls brings. The number newly stored.
    pub async fn insert_signatures(
        &self,
        signatures: &[(B256, Address, Vec<u8>, String)],
    ) -> Result<usize, StoreError> {
        let writes: Vec<SignatureWrite> = signatures
            .iter()
            .map(
                |(call_hash, signer, signature, source)| SignatureWrite::Peer {
                    call_hash: *call_hash,
                    signer: *signer,
                    signature: signature.clone(),
                    source: source.clone(),
                },
            )
            .collect();
        let stored = self.write_signatures(&writes).await?;
        Ok(stored.into_iter().filter(|s| *s).count())
    }

    /// Every stored signature over `call_hash`.
    pub async fn signatures(&self, call_hash: B256) -> Result<Vec<(Address, Vec<u8>)>, StoreError> {
        let rows = sqlx::query("SELECT signer, signature FROM signatures WHERE call_hash = $1")
            .bind(call_hash.to_vec())
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    rows::address_col(r, "signer")?,
                    r.try_get::<Vec<u8>, _>("signature")?,
                ))
            })
            .collect()
    }

    /// Every stored signature over each of `call_hashes`, by hash (hashes with none are
    /// absent): a few queries for a page of thousands instead of one each, which on SQLite's
    /// single connection would each queue behind the other stages' writes.
    pub async fn signatures_of(
        &self,
        call_hashes: &[B256],
    ) -> Result<HashMap<B256, Vec<(Address, Vec<u8>)>>, StoreError> {
        let mut found: HashMap<B256, Vec<(Address, Vec<u8>)>> = HashMap::new();
        for chunk in call_hashes.chunks(IN_LIST_CHUNK) {
            let sql = format!(
                "SELECT call_hash, signer, signature FROM signatures WHERE call_hash IN ({})",
                placeholders(chunk.len())
            );
            let query = chunk
                .iter()
                // Only numbered placeholders are formatted in; every value is bound.
                .fold(sqlx::query(sqlx::AssertSqlSafe(sql.as_str())), |q, hash| {
                    q.bind(hash.to_vec())
                });
            for r in query.fetch_all(&self.pool).await? {
                found
                    .entry(rows::b256_col(&r, "call_hash")?)
                    .or_default()
                    .push((
                        rows::address_col(&r, "signer")?,
                        r.try_get::<Vec<u8>, _>("signature")?,
                    ));
            }
        }
        Ok(found)
    }

    /// [`Self::mark_ready`] for many packets at once (one statement, one commit per chunk).
    pub async fn mark_ready_all(&self, guids: &[B256], at_ms: i64) -> Result<(), StoreError> {
        for chunk in guids.chunks(IN_LIST_CHUNK) {
            let sql = format!(
                "UPDATE packets SET ready_at_ms = $1 WHERE ready_at_ms IS NULL AND guid IN ({})",
                placeholders_from(2, chunk.len())
            );
            let query = chunk
                .iter()
                // Only numbered placeholders are formatted in; every value is bound.
                .fold(
                    sqlx::query(sqlx::AssertSqlSafe(sql.as_str())).bind(at_ms),
                    |q, guid| q.bind(guid.to_vec()),
                );
            query.execute(&self.pool).await?;
        }
        Ok(())
    }

    /// Notes when a signed packet first had a quorum (the takeover clock starts there).
    pub async fn mark_ready(&self, guid: B256, at_ms: i64) -> Result<(), StoreError> {
        sqlx::query("UPDATE packets SET ready_at_ms = $2 WHERE guid = $1 AND ready_at_ms IS NULL")
            .bind(guid.to_vec())
            .bind(at_ms)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Persists a signed `execute` transaction *before* it is broadcast, and attaches its
    /// packets to it, so a crash after broadcast can never lead to a second, different tx.
    /// A fee-bumped replacement is recorded the same way; until one of the same-nonce
    /// transactions is mined, all of them stay pending.
    ///
    /// All or nothing: when any packet moved since it was read, nothing is recorded and false
    /// is returned, so the transaction is never broadcast.
    pub async fn record_submission(
        &self,
        submission: &SubmissionRow,
        packets: &[Expect],
    ) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO submissions (tx_hash, dst_eid, account_nonce, raw_tx, state, created_at_ms) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(submission.tx_hash.to_vec())
        .bind(i64::from(submission.dst_eid))
        .bind(int(submission.account_nonce))
        .bind(submission.raw_tx.clone())
        .bind("pending")
        .bind(now_ms())
        .execute(&mut *tx)
        .await?;
        for expect in packets {
            let change = Change::Submitted(submission.tx_hash);
            if !state::apply(&mut tx, *expect, PacketState::Submitted, change).await? {
                tx.rollback().await?;
                return Ok(false);
            }
        }
        tx.commit().await?;
        Ok(true)
    }

    /// Submissions still awaiting a receipt on `dst_eid`.
    pub async fn pending_submissions(
        &self,
        dst_eid: u32,
    ) -> Result<Vec<SubmissionRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT * FROM submissions WHERE state = 'pending' AND dst_eid = $1 ORDER BY account_nonce",
        )
        .bind(i64::from(dst_eid))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(SubmissionRow::from_row).collect()
    }

    /// Marks a submission finished (`mined`, `replaced` or `dropped`).
    pub async fn finish_submission(&self, tx_hash: B256, state: &str) -> Result<(), StoreError> {
        sqlx::query("UPDATE submissions SET state = $2 WHERE tx_hash = $1")
            .bind(tx_hash.to_vec())
            .bind(state.to_string())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Every packet attached to a submission, whatever its state now (a packet may have moved
    /// to `conflict` while its transaction waits).
    pub async fn packets_attached(&self, tx_hash: B256) -> Result<Vec<PacketRow>, StoreError> {
        let rows = sqlx::query("SELECT * FROM packets WHERE submission = $1")
            .bind(tx_hash.to_vec())
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(PacketRow::from_row).collect()
    }

    /// Packets attached to a submission.
    pub async fn packets_of_submission(&self, tx_hash: B256) -> Result<Vec<PacketRow>, StoreError> {
        let rows = sqlx::query("SELECT * FROM packets WHERE submission = $1 AND state = $2")
            .bind(tx_hash.to_vec())
            .bind(PacketState::Submitted.as_str())
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(PacketRow::from_row).collect()
    }

    /// A settled attempt that did not verify: back to `to` (re-sign or re-aggregate) with
    /// the reason, counting the attempt. False when the row moved meanwhile.
    pub async fn retry(
        &self,
        expect: Expect,
        to: PacketState,
        error: &str,
    ) -> Result<bool, StoreError> {
        let mut conn = self.pool.acquire().await?;
        state::apply(&mut conn, expect, to, Change::Retry(error)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SQLite's plan for `sql` (with `binds` as text), one line per step.
    async fn plan(store: &Store, sql: &str, binds: &[&str]) -> String {
        // Our own constant statements, prefixed: nothing from outside goes into the text.
        let mut query = sqlx::query(sqlx::AssertSqlSafe(format!("EXPLAIN QUERY PLAN {sql}")));
        for b in binds {
            query = query.bind(b.to_string());
        }
        query
            .fetch_all(&store.pool)
            .await
            .unwrap()
            .iter()
            .map(|r| r.try_get::<String, _>("detail").unwrap_or_default())
            .collect::<Vec<_>>()
            .join("; ")
    }

    #[tokio::test]
    async fn the_operator_views_walk_an_index_instead_of_sorting_every_packet() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("dvn.db").display());
        let store = Store::connect(&url).await.unwrap();
        let recent = plan(&store, RECENT, &["25"]).await;
        assert!(recent.contains("packets_updated"), "{recent}");
        assert!(!recent.contains("TEMP B-TREE"), "sorts the table: {recent}");
        let in_state = plan(&store, RECENT_IN_STATE, &["invalid", "25"]).await;
        assert!(in_state.contains("packets_state_updated"), "{in_state}");
        assert!(!in_state.contains("TEMP B-TREE"), "sorts: {in_state}");
    }
}
