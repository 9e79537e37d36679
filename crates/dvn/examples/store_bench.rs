//! Does the store's cost per packet grow with history? Fills a fresh store with N finished
//! (verified) packets and their signatures, then drives packets through the pipeline's own
//! store calls (observe → sign → peer signature → ready → submit → verified) and times the
//! health snapshot's and operator views' queries — at each history size given.
//!
//! `cargo run --release -p dvn --example store_bench -- --history 0,100000,1000000`
//! (`--store postgres://…/db` for PostgreSQL: the database must be empty and is left filled).
//! Prints figures; asserts nothing.

use std::time::{Duration, Instant};

use alloy::primitives::{keccak256, Address, B256};
use clap::Parser;
use dvn::store::{NewPacket, PacketState, Store, SubmissionRow};

#[derive(Parser)]
struct Args {
    /// History sizes (finished packets already stored), comma-separated, in increasing order.
    #[arg(long, value_delimiter = ',', default_value = "0,100000,1000000")]
    history: Vec<u64>,
    /// Packets driven through the pipeline's store calls at each size.
    #[arg(long, default_value_t = 2000)]
    packets: u64,
    /// A store URL instead of a fresh SQLite file.
    #[arg(long)]
    store: Option<String>,
}

const SRC: u32 = 40101;
const DST: u32 = 40102;
const BATCH: usize = 50;

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let dir = tempfile::tempdir()?;
    let url = args
        .store
        .clone()
        .unwrap_or_else(|| format!("sqlite://{}", dir.path().join("bench.sqlite").display()));
    let store = Store::connect(&url).await?;
    let reader = store.reader().await?;
    let raw = sqlx::AnyPool::connect(&url).await?;
    println!(
        "store: {} · {} packets driven per history size · batches of {BATCH}",
        if store.is_sqlite() {
            "SQLite (WAL, synchronous=FULL)"
        } else {
            "PostgreSQL"
        },
        args.packets
    );
    println!(
        "| history (finished packets) | fill | pipeline store calls / packet | count_by_state | backlog | last_verified | recent 25 | signed page |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    let mut stored = 0u64;
    let mut next_nonce = 1u64;
    for &history in &args.history {
        let fill_started = Instant::now();
        if history > stored {
            fill_history(&raw, store.is_sqlite(), stored, history - stored).await?;
            stored = history;
        }
        let fill = fill_started.elapsed();
        let started = Instant::now();
        drive(&store, next_nonce, args.packets).await?;
        let per_packet = started.elapsed() / u32::try_from(args.packets.max(1))?;
        next_nonce += args.packets;
        stored += args.packets;
        let count = median(|| async { reader.count_by_state().await.map(drop) }).await?;
        let backlog = median(|| async { reader.backlog().await.map(drop) }).await?;
        let last = median(|| async { reader.last_verified().await.map(drop) }).await?;
        let recent = median(|| async { reader.recent_packets(None, 25).await.map(drop) }).await?;
        let signed = median(|| async {
            store
                .packets(PacketState::Signed, Some(DST), 2_000)
                .await
                .map(drop)
        })
        .await?;
        println!(
            "| {history} | {:.1} s | {} | {} | {} | {} | {} | {} |",
            fill.as_secs_f64(),
            show(per_packet),
            show(count),
            show(backlog),
            show(last),
            show(recent),
            show(signed)
        );
    }
    Ok(())
}

fn show(d: Duration) -> String {
    if d < Duration::from_millis(1) {
        format!("{:.0} µs", d.as_secs_f64() * 1e6)
    } else {
        format!("{:.2} ms", d.as_secs_f64() * 1e3)
    }
}

/// Median of 15 runs.
async fn median<F, Fut>(mut f: F) -> anyhow::Result<Duration>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), dvn::store::StoreError>>,
{
    let mut times = Vec::new();
    for _ in 0..15 {
        let t = Instant::now();
        f().await?;
        times.push(t.elapsed());
    }
    times.sort();
    Ok(times[times.len() / 2])
}

/// Appends `count` verified packets (two signatures each) on a path of their own, in one
/// statement per table, as a node that has run for a long time would hold them.
async fn fill_history(
    raw: &sqlx::AnyPool,
    sqlite: bool,
    from: u64,
    count: u64,
) -> anyhow::Result<()> {
    let now = dvn::store::now_ms();
    let (first, last) = (i64::try_from(from + 1)?, i64::try_from(from + count)?);
    let packets = if sqlite {
        "WITH RECURSIVE seq(n) AS (SELECT $1 UNION ALL SELECT n + 1 FROM seq WHERE n < $2) \
         INSERT INTO packets (guid, src_eid, dst_eid, sender, receiver, nonce, header, payload_hash, \
         tx_hash, block_number, block_hash, log_index, block_timestamp, state, confirmations, \
         expiration, call_hash, updated_at_ms) \
         SELECT randomblob(32), 40201, 40102, zeroblob(32), zeroblob(32), n, zeroblob(81), \
         randomblob(32), randomblob(32), n, randomblob(32), 0, 1700000000 + n, 'verified', 1, \
         1700003600 + n, randomblob(32), $3 - n FROM seq"
    } else {
        "INSERT INTO packets (guid, src_eid, dst_eid, sender, receiver, nonce, header, payload_hash, \
         tx_hash, block_number, block_hash, log_index, block_timestamp, state, confirmations, \
         expiration, call_hash, updated_at_ms) \
         SELECT sha256(('g' || n)::bytea), 40201, 40102, sha256('s'::bytea), sha256('r'::bytea), n, \
         decode(repeat('00', 81), 'hex'), sha256(('p' || n)::bytea), sha256(('t' || n)::bytea), n, \
         sha256(('b' || n)::bytea), 0, 1700000000 + n, 'verified', 1, 1700003600 + n, \
         sha256(('c' || n)::bytea), $3 - n FROM generate_series($1::bigint, $2::bigint) AS n"
    };
    sqlx::query(packets)
        .bind(first)
        .bind(last)
        .bind(now)
        .execute(raw)
        .await?;
    for signer in [1u8, 2] {
        let signatures = if sqlite {
            "INSERT INTO signatures (call_hash, signer, signature, source) \
             SELECT call_hash, zeroblob(19) || char($3), randomblob(65), 'peer' FROM packets \
             WHERE src_eid = 40201 AND nonce BETWEEN $1 AND $2"
        } else {
            "INSERT INTO signatures (call_hash, signer, signature, source) \
             SELECT call_hash, decode(repeat('00', 19) || lpad(to_hex($3::int), 2, '0'), 'hex'), \
             sha256(call_hash) || sha256(call_hash) || '\\x00'::bytea, 'peer' FROM packets \
             WHERE src_eid = 40201 AND nonce BETWEEN $1 AND $2"
        };
        sqlx::query(signatures)
            .bind(first)
            .bind(last)
            .bind(i32::from(signer))
            .execute(raw)
            .await?;
    }
    Ok(())
}

/// `count` packets through the calls the pipeline makes, in batches as the stages do.
async fn drive(store: &Store, first_nonce: u64, count: u64) -> anyhow::Result<()> {
    let nonces: Vec<u64> = (first_nonce..first_nonce + count).collect();
    for chunk in nonces.chunks(BATCH) {
        let packets: Vec<NewPacket> = chunk.iter().map(|n| packet(*n)).collect();
        let last = packets.last().map_or(0, |p| p.block_number);
        store
            .record_scan(SRC, &packets, &[], (last, B256::repeat_byte(7)))
            .await?;
        for row in store
            .packets(PacketState::Observed, Some(DST), BATCH)
            .await?
        {
            let call_hash = keccak256(row.packet.guid);
            store
                .record_own_signature(
                    row.expect(),
                    1,
                    1_700_003_600,
                    call_hash,
                    Address::repeat_byte(1),
                    &[1; 65],
                )
                .await?;
            store
                .insert_signature(call_hash, Address::repeat_byte(2), &[2; 65], "peer")
                .await?;
            store.signatures(call_hash).await?;
            store
                .mark_ready(row.packet.guid, dvn::store::now_ms())
                .await?;
        }
        let signed = store.packets(PacketState::Signed, Some(DST), 2_000).await?;
        let expects: Vec<_> = signed.iter().map(|r| r.expect()).collect();
        let tx_hash = keccak256(chunk[0].to_be_bytes());
        let submission = SubmissionRow {
            tx_hash,
            dst_eid: DST,
            account_nonce: chunk[0],
            raw_tx: vec![0; 2_000],
            created_at_ms: dvn::store::now_ms(),
        };
        anyhow::ensure!(
            store.record_submission(&submission, &expects).await?,
            "submission not recorded"
        );
        store.pending_submissions(DST).await?;
        for row in store.packets_of_submission(tx_hash).await? {
            store
                .transition(row.expect(), PacketState::Verified, None)
                .await?;
        }
        store.finish_submission(tx_hash, "mined").await?;
    }
    Ok(())
}

fn packet(nonce: u64) -> NewPacket {
    NewPacket {
        guid: keccak256(nonce.to_be_bytes()),
        src_eid: SRC,
        dst_eid: DST,
        sender: B256::repeat_byte(3),
        receiver: B256::repeat_byte(4),
        nonce,
        header: vec![0; 81],
        payload_hash: keccak256([nonce as u8]),
        tx_hash: keccak256((nonce + 1).to_be_bytes()),
        block_number: nonce,
        block_hash: B256::repeat_byte(5),
        log_index: 0,
        block_timestamp: 1_700_000_000 + nonce,
    }
}
