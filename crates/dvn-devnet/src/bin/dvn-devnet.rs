//! `dvn-devnet demo`: the README's "run it" command.
//!
//! Starts the two-chain devnet with the real LayerZero V2 contracts, starts three real `dvn`
//! nodes (aws, aliyun, gcp; SQLite each), sends OmniCounter messages both ways, plays the
//! executor (commit + deliver, in nonce order, as packets become verifiable) and shows live
//! progress. Exits 0 once both counters show every message; non-zero on timeout.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use dvn_devnet::nodes::{stage_timings, step_timings, NodeOptions, NodeSet, StageTiming};
use dvn_devnet::{Devnet, DevnetConfig, Direction};
use dvn_lz::{SentPacket, VerificationState};

#[derive(Parser, Debug)]
#[command(
    name = "dvn-devnet",
    about = "Local LayerZero V2 devnet for the dvn project"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the devnet with three dvn nodes and push messages across both ways.
    Demo {
        /// Messages to send in each direction.
        #[arg(long, default_value_t = 10)]
        messages: usize,
        /// Keep sending a message each way every few seconds until Ctrl-C.
        #[arg(long)]
        keep_running: bool,
        /// Where chain and node logs, configs and stores go.
        #[arg(long, default_value = ".devnet-logs")]
        log_dir: PathBuf,
        /// The dvn binary (default: next to this one).
        #[arg(long)]
        dvn_bin: Option<PathBuf>,
        /// Give up when one message has waited this many seconds to be verified and delivered.
        #[arg(long, default_value_t = 180)]
        timeout_secs: u64,
    },
    /// Measure: a burst of messages one way through three nodes; prints throughput, latency
    /// and gas per packet.
    Bench {
        /// Messages in the burst.
        #[arg(long, default_value_t = 200)]
        messages: usize,
        /// Most params per DVN.execute.
        #[arg(long, default_value_t = 100)]
        max_batch: usize,
        /// Most DVN.execute transactions in flight per destination (ours; the baseline sends
        /// one at a time).
        #[arg(long, default_value_t = 4)]
        max_in_flight: usize,
        /// Submit through LayerZero's DVNDecompressor (compact calldata); with --compare, adds
        /// it as a mode.
        #[arg(long)]
        compressed: bool,
        #[arg(long, default_value = ".devnet-logs/bench")]
        log_dir: PathBuf,
        #[arg(long)]
        dvn_bin: Option<PathBuf>,
        /// Catch-up after an outage: the burst is sent while all three nodes are down, then
        /// they start; times the drain from their start.
        #[arg(long)]
        outage: bool,
        /// Keep only this many recent states on the anvils (`--prune-history`), like ordinary
        /// non-archive RPC nodes.
        #[arg(long)]
        prune_history: Option<u64>,
        /// Side by side: the one-param-per-`execute` flow simple DVNs use (max_batch 1, one
        /// transaction in flight), batching with one in flight, and ours (--max-batch,
        /// --max-in-flight), alternately on fresh devnets, --rounds times each, so a ratio
        /// survives a noisy machine.
        #[arg(long)]
        compare: bool,
        /// Runs of each mode with --compare.
        #[arg(long, default_value_t = 2)]
        rounds: usize,
        /// Print the figures as JSON (one object) instead of text.
        #[arg(long)]
        json: bool,
        /// Each region's turn (`submitter.takeover_after_secs`; the devnet's default is short
        /// so tests run fast, a deployment's is 60).
        #[arg(long, default_value_t = 6)]
        takeover_secs: u64,
    },
    /// Measure latency under steady load: for each rate, a fresh devnet and three running
    /// nodes, messages sent one way at that rate; prints each packet's time from its required
    /// confirmation to verified (p50, p99, max), gas and RPC requests per packet, peak RSS.
    Steady {
        /// Offered rates, packets per second (comma-separated).
        #[arg(long, value_delimiter = ',', default_value = "20,50,100")]
        rates: Vec<f64>,
        /// Seconds of sending at each rate.
        #[arg(long, default_value_t = 30)]
        secs: u64,
        /// Most params per DVN.execute.
        #[arg(long, default_value_t = 100)]
        max_batch: usize,
        /// Most DVN.execute transactions in flight per destination.
        #[arg(long, default_value_t = 4)]
        max_in_flight: usize,
        /// `submitter.block_lead_ms`: how long before the destination's next block is due a
        /// partial batch closes (the node's default when absent).
        #[arg(long)]
        block_lead_ms: Option<u64>,
        /// `submitter.block_lead_margin_ms`: added to the measured closing → broadcast time
        /// for the lead (the node's default when absent).
        #[arg(long)]
        block_lead_margin_ms: Option<u64>,
        /// Each chain's `poll_interval_ms`: how often the watcher looks for new blocks.
        #[arg(long, default_value_t = NodeOptions::default().poll_interval_ms)]
        poll_interval_ms: u64,
        /// Each region's turn (`submitter.takeover_after_secs`; the devnet's default is short
        /// so tests run fast, a deployment's is 60). Each region learns its lead in its own
        /// first batches, so short turns spread that over more of a run.
        #[arg(long, default_value_t = NodeOptions::default().takeover_after_secs)]
        takeover_secs: u64,
        /// Seconds at the start of each rate whose packets count towards gas and RPC but not
        /// towards the "after warm-up" latencies (the whole run's are printed too).
        #[arg(long, default_value_t = 10)]
        warmup_secs: u64,
        /// Leave the chains' `ws` out: the watchers only poll (no new-heads stream).
        #[arg(long)]
        no_new_heads: bool,
        /// The source's block interval in seconds, as a live chain's; 0 mines a block per send
        /// (every packet its own block, which wakes the watchers once per packet).
        #[arg(long, default_value_t = 0)]
        source_block_secs: u64,
        /// With `--source-block-secs`: how long after the destination's block timer the
        /// source's starts, which sets where in a destination block a source block lands.
        #[arg(long, default_value_t = 0)]
        source_phase_ms: u64,
        #[arg(long, default_value = ".devnet-logs/steady")]
        log_dir: PathBuf,
        #[arg(long)]
        dvn_bin: Option<PathBuf>,
        /// Print the figures as JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

/// One direction's traffic and how far it got.
struct Lane {
    direction: Direction,
    label: &'static str,
    packets: Vec<SentPacket>,
    /// When each packet was sent (same order as `packets`).
    sent_at: Vec<Instant>,
    verified: usize,
    delivered: usize,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();
    match Cli::parse().command {
        Command::Demo {
            messages,
            keep_running,
            log_dir,
            dvn_bin,
            timeout_secs,
        } => {
            let dvn_bin = locate_dvn(dvn_bin)?;
            demo(
                messages,
                keep_running,
                log_dir,
                dvn_bin,
                Duration::from_secs(timeout_secs),
            )
            .await
        }
        Command::Bench {
            messages,
            max_batch,
            max_in_flight,
            compressed,
            log_dir,
            dvn_bin,
            outage,
            prune_history,
            compare,
            rounds,
            json,
            takeover_secs,
        } => {
            let run = BenchRun {
                messages,
                max_batch,
                max_in_flight,
                compressed,
                outage,
                prune_history,
                takeover_secs,
            };
            let dvn_bin = locate_dvn(dvn_bin)?;
            if compare {
                compare_modes(run, rounds.max(1), &log_dir, &dvn_bin, json).await
            } else {
                let figures = bench(run, log_dir, dvn_bin).await?;
                if json {
                    println!("{}", serde_json::to_string_pretty(&figures)?);
                } else {
                    figures.print();
                }
                Ok(())
            }
        }
        Command::Steady {
            rates,
            secs,
            max_batch,
            max_in_flight,
            block_lead_ms,
            block_lead_margin_ms,
            poll_interval_ms,
            takeover_secs,
            no_new_heads,
            source_block_secs,
            source_phase_ms,
            warmup_secs,
            log_dir,
            dvn_bin,
            json,
        } => {
            let dvn_bin = locate_dvn(dvn_bin)?;
            let options = NodeOptions {
                max_batch,
                max_in_flight,
                block_lead_ms,
                block_lead_margin_ms,
                poll_interval_ms,
                takeover_after_secs: takeover_secs,
                new_heads: !no_new_heads,
                ..NodeOptions::default()
            };
            let mut all = Vec::new();
            for rate in rates {
                let figures = steady(
                    rate,
                    Duration::from_secs(secs),
                    Duration::from_secs(warmup_secs),
                    SourceCadence {
                        block_secs: source_block_secs,
                        phase_ms: source_phase_ms,
                    },
                    &options,
                    &log_dir.join(format!("{rate}")),
                    &dvn_bin,
                )
                .await?;
                if !json {
                    figures.print();
                }
                all.push(figures);
            }
            if json {
                println!("{}", serde_json::to_string_pretty(&all)?);
            } else {
                SteadyFigures::table(&all);
            }
            Ok(())
        }
    }
}

/// One rate's figures under steady load.
#[derive(Debug, Clone, serde::Serialize)]
struct SteadyFigures {
    offered_per_sec: f64,
    achieved_per_sec: f64,
    /// Packets verified per second, from the first confirmation to the last verification.
    verified_per_sec: f64,
    packets: usize,
    /// Each region's submitter turn.
    takeover_secs: u64,
    /// The source's block interval (0: a block per send) and its timer's start after the
    /// destination's.
    source_block_secs: u64,
    source_phase_ms: u64,
    latency_p50_secs: f64,
    latency_p99_secs: f64,
    latency_max_secs: f64,
    /// The first seconds left out of the `warm_` figures.
    warmup_secs: f64,
    warm_packets: usize,
    warm_latency_p50_secs: f64,
    warm_latency_p99_secs: f64,
    #[serde(flatten)]
    costs: Costs,
}

impl SteadyFigures {
    fn print(&self) {
        println!(
            "steady load ethereum → conflux-espace (1 s destination blocks; source: {}): {:.0} packets/s offered, {:.1} achieved ({} packets), {:.1} verified, 3 running nodes, quorum 2, {} s turns",
            self.source_line(),
            self.offered_per_sec,
            self.achieved_per_sec,
            self.packets,
            self.verified_per_sec,
            self.takeover_secs
        );
        println!(
            "  required confirmation → verified: p50 {:.2} s, p99 {:.2} s, max {:.2} s",
            self.latency_p50_secs, self.latency_p99_secs, self.latency_max_secs
        );
        println!(
            "  the same, confirmed after the first {:.0} s ({} packets): p50 {:.2} s, p99 {:.2} s",
            self.warmup_secs,
            self.warm_packets,
            self.warm_latency_p50_secs,
            self.warm_latency_p99_secs
        );
        println!(
            "  {} DVN.execute, {} gas per packet, {:.1} RPC requests per packet (three nodes)",
            self.costs.execute_transactions,
            self.costs.gas_per_packet,
            self.costs.rpc_requests_per_packet
        );
        println!("  per stage, mean / p99: {}", self.costs.stages_line());
        println!("  peak RSS {}", self.costs.rss_line());
        println!("  conditions: {}", self.costs.conditions_line());
    }

    /// How the source made blocks.
    fn source_line(&self) -> String {
        match self.source_block_secs {
            0 => "a block per send".to_string(),
            secs => format!(
                "a block every {secs} s, its timer {} ms after the destination's",
                self.source_phase_ms
            ),
        }
    }

    fn table(all: &[SteadyFigures]) {
        println!("\n| offered | achieved | verified | p50 | p99 | max | p50 / p99 after warm-up | execute txs | gas / packet | RPC requests / packet | peak RSS |");
        println!("|---|---|---|---|---|---|---|---|---|---|---|");
        for f in all {
            let rss = f
                .costs
                .peak_rss_mib
                .iter()
                .filter_map(|(_, m)| *m)
                .fold(0.0_f64, f64::max);
            println!(
                "| {:.0}/s | {:.1}/s | {:.1}/s | {:.2} s | {:.2} s | {:.2} s | {:.2} / {:.2} s | {} | {} | {:.1} | {:.1} MiB |",
                f.offered_per_sec,
                f.achieved_per_sec,
                f.verified_per_sec,
                f.latency_p50_secs,
                f.latency_p99_secs,
                f.latency_max_secs,
                f.warm_latency_p50_secs,
                f.warm_latency_p99_secs,
                f.costs.execute_transactions,
                f.costs.gas_per_packet,
                f.costs.rpc_requests_per_packet,
                rss
            );
        }
        if let Some(line) = latency_growth_line(all) {
            println!("\n{line}");
        }
    }
}

/// How far above the lowest rate's p50 (after warm-up) a rate's p50 must be for latency to
/// count as growing: half a destination block, more than a loaded machine's spread between
/// runs (0.05–0.1 s here) and less than the block a packet waits once batches fall behind.
const LATENCY_GROWTH: f64 = 0.5;

/// Where latency starts to grow with the rate offered: the first rate whose p50 after warm-up
/// is [`LATENCY_GROWTH`] s above the lowest rate's. `None` with fewer than two rates.
fn latency_growth_line(all: &[SteadyFigures]) -> Option<String> {
    let mut by_rate: Vec<&SteadyFigures> = all.iter().collect();
    by_rate.sort_by(|a, b| a.offered_per_sec.total_cmp(&b.offered_per_sec));
    let (lowest, highest) = (by_rate.first()?, by_rate.last()?);
    if by_rate.len() < 2 {
        return None;
    }
    let p50s: Vec<f64> = by_rate.iter().map(|f| f.warm_latency_p50_secs).collect();
    Some(match first_growing(&p50s) {
        Some(i) => format!(
            "latency grows from {:.0} packets/s offered ({:.1} achieved, {:.1} verified): p50 after warm-up {:.2} s against {:.2} s at {:.0}/s",
            by_rate[i].offered_per_sec,
            by_rate[i].achieved_per_sec,
            by_rate[i].verified_per_sec,
            p50s[i],
            p50s[0],
            lowest.offered_per_sec
        ),
        None => format!(
            "latency did not grow up to {:.0} packets/s offered ({:.1} achieved): p50 after warm-up within {LATENCY_GROWTH} s of {:.2} s at {:.0}/s",
            highest.offered_per_sec,
            highest.achieved_per_sec,
            p50s[0],
            lowest.offered_per_sec
        ),
    })
}

/// Of p50s in order of rising rate, the first more than [`LATENCY_GROWTH`] above the first.
fn first_growing(p50s: &[f64]) -> Option<usize> {
    let reference = *p50s.first()?;
    p50s.iter()
        .position(|p50| *p50 > reference + LATENCY_GROWTH)
}

/// How the steady bench's source chain makes blocks.
#[derive(Debug, Clone, Copy)]
struct SourceCadence {
    /// 0: a block per send.
    block_secs: u64,
    /// The source's block timer starts this long after the destination's.
    phase_ms: u64,
}

/// `secs` of messages A → B at `rate` per second to three running nodes on a fresh devnet.
async fn steady(
    rate: f64,
    duration: Duration,
    warmup: Duration,
    source: SourceCadence,
    options: &NodeOptions,
    log_dir: &std::path::Path,
    dvn_bin: &std::path::Path,
) -> anyhow::Result<SteadyFigures> {
    if log_dir.exists() {
        std::fs::remove_dir_all(log_dir)?;
    }
    let devnet = Devnet::start(DevnetConfig {
        log_dir: Some(log_dir.to_path_buf()),
        ..Default::default()
    })
    .await?;
    // Deployed block by block; from now on the destination has a block every second, as a
    // live chain. The source keeps a block per send unless asked for an interval: then its
    // timer starts `phase_ms` after the destination's, which fixes where in a destination
    // block each source block lands for the whole run.
    devnet.b.chain.set_interval_mining(1).await?;
    let source_blocks = if source.block_secs == 0 {
        dvn_devnet::load::SourceBlocks::PerSend
    } else {
        tokio::time::sleep(Duration::from_millis(source.phase_ms)).await;
        devnet
            .a
            .chain
            .set_interval_mining(source.block_secs)
            .await?;
        dvn_devnet::load::SourceBlocks::Interval
    };
    let mut nodes = NodeSet::configure(&devnet, dvn_bin, &log_dir.join("nodes"), options)?;
    nodes.start(&[0, 1, 2]).await?;
    let direction = Direction::AToB;
    let run = dvn_devnet::load::offer(
        &devnet,
        direction,
        source_blocks,
        rate,
        duration,
        Duration::from_secs(120),
    )
    .await?;
    let report = devnet.check_invariants(direction, &run.packets).await?;
    anyhow::ensure!(report.holds(), "invariants violated: {report:?}");
    let messages = run.packets.len();
    let costs = costs(&devnet, &nodes, &report, messages, dvn_bin).await?;
    let warm = run.latencies_after(warmup);
    Ok(SteadyFigures {
        warmup_secs: warmup.as_secs_f64(),
        warm_packets: warm.len(),
        warm_latency_p50_secs: dvn_devnet::load::quantile(&warm, 0.5).as_secs_f64(),
        warm_latency_p99_secs: dvn_devnet::load::quantile(&warm, 0.99).as_secs_f64(),
        offered_per_sec: rate,
        achieved_per_sec: run.offered_per_sec(),
        verified_per_sec: run.verified_per_sec(),
        packets: messages,
        takeover_secs: options.takeover_after_secs,
        source_block_secs: source.block_secs,
        source_phase_ms: source.phase_ms,
        latency_p50_secs: run.latency_quantile(0.5).as_secs_f64(),
        latency_p99_secs: run.latency_quantile(0.99).as_secs_f64(),
        latency_max_secs: run.latency_quantile(1.0).as_secs_f64(),
        costs,
    })
}

fn locate_dvn(given: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    let path = match given {
        Some(p) => p,
        None => std::env::current_exe()?.with_file_name("dvn"),
    };
    anyhow::ensure!(
        path.is_file(),
        "dvn binary not found at {} (build it, or pass --dvn-bin)",
        path.display()
    );
    Ok(path)
}

/// What one `bench` invocation measures.
#[derive(Debug, Clone, Copy)]
struct BenchRun {
    messages: usize,
    max_batch: usize,
    max_in_flight: usize,
    compressed: bool,
    outage: bool,
    prune_history: Option<u64>,
    takeover_secs: u64,
}

/// Peak resident memory of a process (`VmHWM`), in MiB.
fn peak_rss_mib(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib: f64 = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some(kib / 1024.0)
}

/// CPU time a process has used so far (user + system, `/proc/PID/stat`), in seconds.
fn cpu_secs(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The fields after the command name (which may hold spaces) are space-separated; utime
    // and stime are the 14th and 15th of the line, the 12th and 13th after the name.
    let after_name = stat.rsplit_once(')')?.1;
    let mut fields = after_name.split_whitespace().skip(11);
    let utime: f64 = fields.next()?.parse().ok()?;
    let stime: f64 = fields.next()?.parse().ok()?;
    // `/proc` counts in USER_HZ, which is 100 on every Linux this runs on.
    Some((utime + stime) / 100.0)
}

/// The processes whose CPU time a run reports, by name: the three nodes and the two anvils.
fn cpu_by_process(devnet: &Devnet, nodes: &NodeSet) -> Vec<(String, f64)> {
    let mut all: Vec<(String, Option<u32>)> = nodes
        .nodes
        .iter()
        .map(|n| (n.region.clone(), n.pid()))
        .collect();
    all.push(("anvil A".into(), Some(devnet.a.chain.pid())));
    all.push(("anvil B".into(), Some(devnet.b.chain.pid())));
    all.into_iter()
        .map(|(name, pid)| (name, pid.and_then(cpu_secs).unwrap_or(0.0)))
        .collect()
}

fn is_verified(state: VerificationState) -> bool {
    matches!(
        state,
        VerificationState::Verifiable | VerificationState::Verified
    )
}

/// A burst of `messages` A → B through three real nodes; prints figures, asserts nothing
/// about speed (the invariants must still hold).
async fn bench(run: BenchRun, log_dir: PathBuf, dvn_bin: PathBuf) -> anyhow::Result<Figures> {
    let BenchRun {
        messages,
        max_batch,
        max_in_flight,
        compressed,
        outage,
        prune_history,
        takeover_secs,
    } = run;
    if log_dir.exists() {
        std::fs::remove_dir_all(&log_dir)?;
    }
    let devnet = Devnet::start(DevnetConfig {
        log_dir: Some(log_dir.clone()),
        prune_history,
        decompressors: compressed,
        ..Default::default()
    })
    .await?;
    let options = NodeOptions {
        max_batch,
        max_in_flight,
        decompressor: compressed,
        takeover_after_secs: takeover_secs,
        ..NodeOptions::default()
    };
    let mut nodes = NodeSet::configure(&devnet, &dvn_bin, &log_dir.join("nodes"), &options)?;
    if !outage {
        nodes.start(&[0, 1, 2]).await?;
    }
    let direction = Direction::AToB;
    let sending = Instant::now();
    let packets = devnet.send_messages(direction, messages).await?;
    let sent_in = sending.elapsed();
    if outage {
        nodes.start(&[0, 1, 2]).await?;
    }
    // With an outage the clock starts when the nodes do: the drain time.
    let started = if outage { Instant::now() } else { sending };
    let cpu_at_start = cpu_by_process(&devnet, &nodes);
    let mut first_verified = None;
    let mut verified_at = None;
    let deadline = Instant::now() + Duration::from_secs(600);
    // Only packets not yet seen verified are looked at, in nonce order, and a look stops at
    // the first one still waiting (verifications land in nonce-ordered batches): polling all
    // 10,000 every 100 ms would make the harness the destination chain's heaviest client,
    // on the cores the nodes share. The packet behind the first waiting one is looked at too,
    // so a first verification out of order is still timed.
    let mut waiting: std::collections::VecDeque<&_> = packets.iter().collect();
    // A line every 10 s on stderr: where a long drain stands (the shape of its curve says
    // which stage holds it up).
    let mut last_progress = Instant::now();
    while verified_at.is_none() {
        anyhow::ensure!(
            Instant::now() < deadline,
            "not all packets verified within 600 s"
        );
        devnet.b.chain.keep_up_with_wall_clock().await?;
        while let Some(p) = waiting.front() {
            if !is_verified(devnet.verification_state(direction, p).await?) {
                break;
            }
            waiting.pop_front();
        }
        if first_verified.is_none() {
            let beyond = match waiting.get(1) {
                Some(p) => is_verified(devnet.verification_state(direction, p).await?),
                None => false,
            };
            if waiting.len() < packets.len() || beyond {
                first_verified = Some(started.elapsed());
            }
        }
        if last_progress.elapsed() >= Duration::from_secs(10) {
            last_progress = Instant::now();
            eprintln!(
                "bench: {:>6.1} s · the lowest {} of {messages} nonces verified",
                started.elapsed().as_secs_f64(),
                packets.len() - waiting.len()
            );
        }
        if waiting.is_empty() {
            verified_at = Some(started.elapsed());
        } else {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let verified = verified_at.unwrap_or_default();
    // Where the cores went while the clock ran (for a burst to running nodes, sending included).
    let cpu_secs: Vec<(String, f64)> = cpu_by_process(&devnet, &nodes)
        .into_iter()
        .zip(cpu_at_start)
        .map(|((name, end), (_, start))| (name, end - start))
        .collect();
    let report = devnet.check_invariants(direction, &packets).await?;
    anyhow::ensure!(report.holds(), "invariants violated: {report:?}");
    let mut costs = costs(&devnet, &nodes, &report, messages, &dvn_bin).await?;
    costs.cpu_secs = cpu_secs;
    Ok(Figures {
        messages,
        max_batch,
        max_in_flight,
        compressed,
        outage,
        takeover_secs,
        anvil_states: prune_history,
        sending_secs: sent_in.as_secs_f64(),
        offered_per_sec: messages as f64 / sent_in.as_secs_f64().max(1e-9),
        first_verified_secs: first_verified.unwrap_or_default().as_secs_f64(),
        all_verified_secs: verified.as_secs_f64(),
        throughput_per_sec: messages as f64 / verified.as_secs_f64().max(1e-9),
        costs,
    })
}

/// What a run cost, the same for every kind of run: `execute` transactions and gas per
/// verified packet (from the chain), RPC requests per packet (in all and per method) and peak
/// RSS (from the nodes), and the conditions it ran under.
#[derive(Debug, Clone, serde::Serialize)]
struct Costs {
    execute_transactions: usize,
    gas_per_packet: u64,
    /// JSON-RPC requests the three nodes sent (`dvn_rpc_requests_total`, every endpoint and
    /// method, idle polling included) per packet.
    rpc_requests_per_packet: f64,
    rpc_requests_per_packet_by_method: std::collections::BTreeMap<String, f64>,
    /// The `eth_call`s among them per packet, by contract function (`dvn_rpc_calls_total`).
    eth_calls_per_packet_by_function: std::collections::BTreeMap<String, f64>,
    peak_rss_mib: Vec<(String, Option<f64>)>,
    /// CPU seconds each node and anvil used while the clock ran (bench runs only).
    cpu_secs: Vec<(String, f64)>,
    /// Signature pushes to peers per packet by outcome (`dvn_peer_push_total`), and pull
    /// requests per packet (`dvn_peer_pulls_total`), the three nodes together.
    peer_pushes_per_packet: std::collections::BTreeMap<String, f64>,
    peer_pulls_per_packet: f64,
    /// Where a packet's time went, stage by stage (`dvn_stage_seconds` of the three nodes).
    stages: Vec<StageTiming>,
    /// How long the stage loops' steps took (`dvn_stage_step_seconds` of the three nodes).
    steps: Vec<StageTiming>,
    conditions: Conditions,
}

impl Costs {
    /// Pushes by outcome and pulls per packet, the three nodes together.
    fn peer_line(&self) -> String {
        let pushes: Vec<String> = self
            .peer_pushes_per_packet
            .iter()
            .map(|(outcome, n)| format!("{outcome} {n:.2}"))
            .collect();
        format!(
            "pushes {} · pull requests {:.2}",
            pushes.join(", "),
            self.peer_pulls_per_packet
        )
    }

    /// Peak RSS per node, as `region N MiB, …`.
    fn rss_line(&self) -> String {
        let rss: Vec<String> = self
            .peak_rss_mib
            .iter()
            .map(|(region, mib)| {
                format!(
                    "{region} {}",
                    mib.map_or("?".into(), |m| format!("{m:.1} MiB"))
                )
            })
            .collect();
        rss.join(", ")
    }

    /// CPU seconds per process, as `region N s, …, anvil A N s, …`.
    fn cpu_line(&self) -> String {
        let parts: Vec<String> = self
            .cpu_secs
            .iter()
            .map(|(name, secs)| format!("{name} {secs:.1} s"))
            .collect();
        parts.join(", ")
    }

    /// `stage mean / p99, …` in pipeline order.
    fn stages_line(&self) -> String {
        timings_line(&self.stages)
    }

    /// `stage mean / p99, …` of the stage loops' steps.
    fn steps_line(&self) -> String {
        timings_line(&self.steps)
    }

    /// `dvn BUILD build, N cores, load L`.
    fn conditions_line(&self) -> String {
        format!(
            "dvn {} build, {} cores, load {}",
            self.conditions.dvn_build,
            self.conditions.cores,
            self.conditions
                .load_1m
                .map_or("?".into(), |l| format!("{l:.2}"))
        )
    }
}

async fn costs(
    devnet: &Devnet,
    nodes: &NodeSet,
    report: &dvn_devnet::invariants::Report,
    messages: usize,
    dvn_bin: &std::path::Path,
) -> anyhow::Result<Costs> {
    let gas = execute_gas(devnet, Direction::AToB).await?;
    let rpc_requests = nodes.metric_sum("dvn_rpc_requests_total").await;
    // Per method, for the three nodes together.
    let mut rpc_by_method: std::collections::BTreeMap<String, f64> = Default::default();
    let mut rpc_calls: std::collections::BTreeMap<String, f64> = Default::default();
    let mut peer_pushes: std::collections::BTreeMap<String, f64> = Default::default();
    let mut texts = Vec::new();
    for node in &nodes.nodes {
        let text = node.metrics().await.unwrap_or_default();
        for line in text
            .lines()
            .filter(|l| l.starts_with("dvn_peer_push_total{"))
        {
            let outcome = label_of(line, "outcome").unwrap_or("?");
            *peer_pushes.entry(outcome.to_string()).or_default() +=
                sample_value(line) / messages.max(1) as f64;
        }
        for line in text
            .lines()
            .filter(|l| l.starts_with("dvn_rpc_requests_total{"))
        {
            let method = label_of(line, "method").unwrap_or("?");
            *rpc_by_method.entry(method.to_string()).or_default() +=
                sample_value(line) / messages.max(1) as f64;
        }
        for line in text
            .lines()
            .filter(|l| l.starts_with("dvn_rpc_calls_total{"))
        {
            let function = label_of(line, "function").unwrap_or("?");
            *rpc_calls.entry(function.to_string()).or_default() +=
                sample_value(line) / messages.max(1) as f64;
        }
        texts.push(text);
    }
    let rss: Vec<(String, Option<f64>)> = nodes
        .nodes
        .iter()
        .map(|n| (n.region.clone(), n.pid().and_then(peak_rss_mib)))
        .collect();
    Ok(Costs {
        execute_transactions: report.execute_transactions,
        gas_per_packet: gas / messages.max(1) as u64,
        rpc_requests_per_packet: rpc_requests / messages.max(1) as f64,
        rpc_requests_per_packet_by_method: rpc_by_method,
        eth_calls_per_packet_by_function: rpc_calls,
        peer_pushes_per_packet: peer_pushes,
        peer_pulls_per_packet: nodes.metric_sum("dvn_peer_pulls_total").await
            / messages.max(1) as f64,
        peak_rss_mib: rss,
        cpu_secs: Vec::new(),
        stages: stage_timings(&texts),
        steps: step_timings(&texts),
        conditions: Conditions::now(dvn_bin),
    })
}

/// `name N.N, …` of per-packet figures, leaving out what rounds to nothing.
fn per_packet_line(figures: &std::collections::BTreeMap<String, f64>) -> String {
    let parts: Vec<String> = figures
        .iter()
        .filter(|(_, n)| **n >= 0.05)
        .map(|(name, n)| format!("{name} {n:.1}"))
        .collect();
    parts.join(", ")
}

/// `stage mean / p99 s, …`.
fn timings_line(timings: &[StageTiming]) -> String {
    let parts: Vec<String> = timings
        .iter()
        .map(|s| format!("{} {:.2} / {:.2} s", s.stage, s.mean_secs, s.p99_secs))
        .collect();
    parts.join(", ")
}

/// A label's value in one line of Prometheus' text format.
fn label_of<'a>(line: &'a str, label: &str) -> Option<&'a str> {
    line.split(&format!("{label}=\"")).nth(1)?.split('"').next()
}

/// The sample value at the end of one line of Prometheus' text format (0 when unreadable).
fn sample_value(line: &str) -> f64 {
    line.rsplit(' ')
        .next()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

/// Under what conditions figures were taken: they move with the machine's load.
#[derive(Debug, Clone, serde::Serialize)]
struct Conditions {
    /// `/proc/loadavg`'s 1-minute figure when the run ended.
    load_1m: Option<f64>,
    cores: usize,
    /// `release` or `debug`, from where the dvn binary was built.
    dvn_build: &'static str,
}

impl Conditions {
    fn now(dvn_bin: &std::path::Path) -> Self {
        let load_1m = std::fs::read_to_string("/proc/loadavg")
            .ok()
            .and_then(|l| l.split_whitespace().next()?.parse().ok());
        Self {
            load_1m,
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            // As the binary says of itself (`dvn --version` names a debug build).
            dvn_build: match std::process::Command::new(dvn_bin)
                .arg("--version")
                .output()
            {
                Ok(out) if String::from_utf8_lossy(&out.stdout).contains("debug build") => "debug",
                Ok(out) if out.status.success() => "release",
                _ => "unknown",
            },
        }
    }
}

/// One run's figures.
#[derive(Debug, Clone, serde::Serialize)]
struct Figures {
    messages: usize,
    max_batch: usize,
    max_in_flight: usize,
    /// Sent through the DVNDecompressor.
    compressed: bool,
    outage: bool,
    /// Each region's turn, seconds.
    takeover_secs: u64,
    anvil_states: Option<u64>,
    sending_secs: f64,
    /// Packets per second the harness actually offered (it sends one transaction at a time).
    offered_per_sec: f64,
    first_verified_secs: f64,
    all_verified_secs: f64,
    throughput_per_sec: f64,
    #[serde(flatten)]
    costs: Costs,
}

impl Figures {
    fn print(&self) {
        let window = self.anvil_states.map_or("full history".to_string(), |n| {
            format!("last {n} states kept")
        });
        let mode = if self.outage {
            "sent while all nodes were down, then drained"
        } else {
            "sent to running nodes"
        };
        println!(
            "burst of {} packets ethereum → conflux-espace ({mode}; anvil {window}), 3 nodes, quorum 2, max_batch {}, max_in_flight {}, turns of {} s{}",
            self.messages,
            self.max_batch,
            self.max_in_flight,
            self.takeover_secs,
            if self.compressed { ", through DVNDecompressor" } else { "" }
        );
        println!(
            "  sending took                {:>8.2} s ({:.1} packets/s offered)",
            self.sending_secs, self.offered_per_sec
        );
        println!(
            "  first packet verified after {:>8.2} s",
            self.first_verified_secs
        );
        println!(
            "  all verified after          {:>8.2} s",
            self.all_verified_secs
        );
        println!(
            "  throughput                  {:>8.1} packets/s (burst start to last verified)",
            self.throughput_per_sec
        );
        println!(
            "  DVN.execute transactions    {:>8}",
            self.costs.execute_transactions
        );
        println!(
            "  gas per verified packet     {:>8}",
            self.costs.gas_per_packet
        );
        println!(
            "  RPC requests per packet     {:>8.1} (three nodes together)",
            self.costs.rpc_requests_per_packet
        );
        println!(
            "    by method                 {}",
            per_packet_line(&self.costs.rpc_requests_per_packet_by_method)
        );
        println!(
            "    eth_call by function      {}",
            per_packet_line(&self.costs.eth_calls_per_packet_by_function)
        );
        println!("  peer messages per packet    {}", self.costs.peer_line());
        println!("  per stage, mean / p99       {}", self.costs.stages_line());
        println!("  one step, mean / p99        {}", self.costs.steps_line());
        println!("  peak RSS per node           {}", self.costs.rss_line());
        println!("  CPU time while timed        {}", self.costs.cpu_line());
        println!(
            "  conditions                  {}",
            self.costs.conditions_line()
        );
        if self.outage {
            println!("  (verification times count from the nodes' start: the backlog drain)");
        }
    }
}

/// The baseline (one param per `execute`) and ours, alternately, `rounds` times each.
async fn compare_modes(
    run: BenchRun,
    rounds: usize,
    log_dir: &std::path::Path,
    dvn_bin: &std::path::Path,
    json: bool,
) -> anyhow::Result<()> {
    let mut modes = vec![("one param per execute", 1, 1, false)];
    if run.max_in_flight > 1 {
        modes.push(("batched, one in flight", run.max_batch, 1, false));
    }
    modes.push((
        "batched, pipelined (ours)",
        run.max_batch,
        run.max_in_flight,
        false,
    ));
    if run.compressed {
        modes.push((
            "batched, pipelined, DVNDecompressor (ours)",
            run.max_batch,
            run.max_in_flight,
            true,
        ));
    }
    let mut results: Vec<(String, Figures)> = Vec::new();
    for round in 0..rounds {
        for &(label, max_batch, max_in_flight, compressed) in &modes {
            let figures = bench(
                BenchRun {
                    max_batch,
                    max_in_flight,
                    compressed,
                    ..run
                },
                log_dir.join(format!("{max_batch}-{max_in_flight}-{compressed}-{round}")),
                dvn_bin.to_path_buf(),
            )
            .await?;
            if !json {
                println!("round {} · {label}:", round + 1);
                figures.print();
            }
            results.push((label.to_string(), figures));
        }
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&results)?);
        return Ok(());
    }
    println!("\nside by side ({rounds} run(s) each, alternating; min–max):");
    println!("| mode | all verified | throughput | execute txs | gas / packet | RPC requests / packet | peak RSS |");
    println!("|---|---|---|---|---|---|---|");
    for &(label, ..) in &modes {
        let of: Vec<&Figures> = results
            .iter()
            .filter(|(l, _)| l == label)
            .map(|(_, f)| f)
            .collect();
        let range = |v: Vec<f64>, digits: usize| {
            let (lo, hi) = v
                .iter()
                .fold((f64::MAX, f64::MIN), |(lo, hi), x| (lo.min(*x), hi.max(*x)));
            if (hi - lo).abs() < 1e-9 {
                format!("{lo:.digits$}")
            } else {
                format!("{lo:.digits$}–{hi:.digits$}")
            }
        };
        println!(
            "| {label} | {} s | {} packets/s | {} | {} | {} | {} MiB |",
            range(of.iter().map(|f| f.all_verified_secs).collect(), 2),
            range(of.iter().map(|f| f.throughput_per_sec).collect(), 1),
            range(
                of.iter()
                    .map(|f| f.costs.execute_transactions as f64)
                    .collect(),
                0
            ),
            range(
                of.iter().map(|f| f.costs.gas_per_packet as f64).collect(),
                0
            ),
            range(
                of.iter().map(|f| f.costs.rpc_requests_per_packet).collect(),
                1
            ),
            range(
                of.iter()
                    .flat_map(|f| f.costs.peak_rss_mib.iter().filter_map(|(_, m)| *m))
                    .collect(),
                1
            ),
        );
    }
    Ok(())
}

/// Total gas of the transactions that carried our DVN's verifications.
async fn execute_gas(devnet: &Devnet, direction: Direction) -> anyhow::Result<u64> {
    use alloy::providers::Provider;
    use alloy::sol_types::SolEvent;
    let (_, dst) = devnet.sides(direction);
    let topic = dvn_lz::contracts::IReceiveUln302::PayloadVerified::SIGNATURE_HASH;
    let logs = dst.chain.logs(dst.contracts.receive_lib, topic).await?;
    let txs: std::collections::BTreeSet<_> =
        logs.iter().filter_map(|l| l.transaction_hash).collect();
    let mut gas = 0;
    for tx in txs {
        if let Some(receipt) = dst.chain.provider.get_transaction_receipt(tx).await? {
            gas += receipt.gas_used;
        }
    }
    Ok(gas)
}

async fn demo(
    messages: usize,
    keep_running: bool,
    log_dir: PathBuf,
    dvn_bin: PathBuf,
    timeout: Duration,
) -> anyhow::Result<()> {
    let started = Instant::now();
    // SIGTERM (a service manager, `timeout`, `kill`) stops at once like a second Ctrl-C, so
    // the chains and nodes are stopped with the demo: with --keep-running they run outside
    // its process group, and the default action would leave them running.
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    if log_dir.exists() {
        std::fs::remove_dir_all(&log_dir)?;
    }
    println!("starting two anvil chains and deploying LayerZero V2");
    // Chains and nodes out of the terminal's process group: a Ctrl-C reaches only the demo,
    // which then lets the messages in flight land before it stops them all.
    let devnet = Devnet::start(DevnetConfig {
        log_dir: Some(log_dir.clone()),
        own_session: keep_running,
        ..Default::default()
    })
    .await?;
    for side in [&devnet.a, &devnet.b] {
        println!(
            "  {:<15} chain {:<5} eid {}  {}  endpoint {}  DVN {}",
            side.chain.name,
            side.chain.chain_id,
            side.eid,
            side.chain.rpc_url(),
            side.contracts.endpoint,
            side.contracts.dvn
        );
    }
    let mut nodes = NodeSet::configure(
        &devnet,
        &dvn_bin,
        &log_dir.join("nodes"),
        &NodeOptions {
            own_process_group: keep_running,
            ..NodeOptions::default()
        },
    )?;
    nodes.start(&[0, 1, 2]).await?;
    for node in &nodes.nodes {
        println!(
            "  dvn node {:<7} {}  config {}",
            node.region,
            node.url(),
            node.config_path.display()
        );
    }
    println!(
        "ready in {:.1}s; sending {messages} messages each way",
        started.elapsed().as_secs_f64()
    );

    let mut lanes = [
        Lane {
            direction: Direction::AToB,
            label: "ethereum → conflux-espace",
            packets: vec![],
            sent_at: vec![],
            verified: 0,
            delivered: 0,
        },
        Lane {
            direction: Direction::BToA,
            label: "conflux-espace → ethereum",
            packets: vec![],
            sent_at: vec![],
            verified: 0,
            delivered: 0,
        },
    ];
    for lane in &mut lanes {
        lane.send(&devnet, messages).await?;
    }
    let mut last_line = String::new();
    let mut next_send = Instant::now() + Duration::from_secs(3);
    // Ctrl-C with --keep-running: stop sending, let what is in flight land, then report.
    let mut stopping = false;
    loop {
        for lane in &mut lanes {
            advance(&devnet, lane).await?;
        }
        let line = lanes
            .iter()
            .map(|l| {
                format!(
                    "{}: sent {} / verified {} / delivered {}",
                    l.label,
                    l.packets.len(),
                    l.verified,
                    l.delivered
                )
            })
            .collect::<Vec<_>>()
            .join("   ");
        if line != last_line {
            println!("  {line}");
            last_line = line;
        }
        let done = lanes.iter().all(|l| l.delivered == l.packets.len());
        if done && (!keep_running || stopping) {
            break;
        }
        // The oldest message still waiting decides, not the run's length.
        let oldest_wait = lanes
            .iter()
            .filter_map(|l| l.sent_at.get(l.delivered))
            .map(Instant::elapsed)
            .max();
        if oldest_wait.is_some_and(|w| w > timeout) {
            if stopping {
                break;
            }
            anyhow::bail!(
                "a message has waited over {timeout:?} to be verified; node logs in {}",
                log_dir.join("nodes").display()
            );
        }
        if keep_running && !stopping && Instant::now() >= next_send {
            for lane in &mut lanes {
                lane.send(&devnet, 1).await?;
            }
            next_send = Instant::now() + Duration::from_secs(3);
        }
        tokio::select! {
            _ = tokio::signal::ctrl_c(), if keep_running => {
                if stopping {
                    break;
                }
                stopping = true;
                println!("stopping: no more sends; waiting for the messages in flight (Ctrl-C again to stop now)");
            }
            _ = terminate.recv() => {
                stopping = true;
                println!("terminated: stopping the chains and nodes");
                break;
            }
            _ = tokio::time::sleep(Duration::from_millis(250)) => {}
        }
    }
    let (a, b) = (
        devnet.counter(&devnet.a).await?,
        devnet.counter(&devnet.b).await?,
    );
    println!("counters: ethereum {a}, conflux-espace {b}");
    for lane in &lanes {
        let report = devnet
            .check_invariants(lane.direction, &lane.packets)
            .await?;
        println!(
            "  {}: {} packets verified in {} DVN.execute transactions; duplicates {}, forged {}{}",
            lane.label,
            lane.packets.len() - report.unverified.len(),
            report.execute_transactions,
            report.duplicates.len(),
            report.forged,
            if report.unverified.is_empty() {
                String::new()
            } else {
                format!("; {} still in flight when stopped", report.unverified.len())
            }
        );
        // Stopped by hand, a message still in flight is not a violation; a duplicate or a
        // forgery always is.
        let holds = if stopping {
            report.duplicates.is_empty() && report.forged == 0
        } else {
            report.holds()
        };
        anyhow::ensure!(holds, "invariants violated: {report:?}");
    }
    println!(
        "{}{} messages verified by the 2-of-3 DVN and delivered in {:.1}s; logs in {}",
        if stopping { "" } else { "all " },
        lanes.iter().map(|l| l.delivered).sum::<usize>(),
        started.elapsed().as_secs_f64(),
        log_dir.display()
    );
    Ok(())
}

impl Lane {
    /// Sends `count` messages on this lane, noting when.
    async fn send(&mut self, devnet: &Devnet, count: usize) -> anyhow::Result<()> {
        let sent = devnet.send_messages(self.direction, count).await?;
        self.sent_at
            .extend(std::iter::repeat_n(Instant::now(), sent.len()));
        self.packets.extend(sent);
        Ok(())
    }
}

/// Counts verified packets and, as the executor, delivers the verifiable ones in nonce order.
async fn advance(devnet: &Devnet, lane: &mut Lane) -> anyhow::Result<()> {
    // Keep the idle automine chains producing blocks like live ones: the nodes hand a packet
    // to the next region only after the destination has moved on.
    let (_, dst) = devnet.sides(lane.direction);
    dst.chain.keep_up_with_wall_clock().await?;
    let mut verified = lane.delivered;
    let mut deliverable = true;
    for packet in &lane.packets[lane.delivered..] {
        let state = devnet.verification_state(lane.direction, packet).await?;
        if matches!(
            state,
            VerificationState::Verifiable | VerificationState::Verified
        ) {
            verified += 1;
        }
        if deliverable && state == VerificationState::Verifiable {
            devnet.commit_and_deliver(lane.direction, packet).await?;
            lane.delivered += 1;
        } else {
            deliverable = false;
        }
    }
    lane.verified = verified;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_grows_where_p50_first_rises_half_a_block_above_the_lowest_rates() {
        assert_eq!(first_growing(&[0.9, 0.95, 1.3]), None);
        assert_eq!(first_growing(&[0.9, 0.95, 1.3, 2.5]), Some(3));
        assert_eq!(first_growing(&[0.9, 1.2, 1.45, 2.5]), Some(2));
        assert_eq!(first_growing(&[0.9, 1.41, 1.0]), Some(1));
        assert_eq!(first_growing(&[]), None);
    }
}
