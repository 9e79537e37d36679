//! `dvn-devnet demo`: the README's "run it" command.
//!
//! Starts the two-chain devnet with the real LayerZero V2 contracts, starts three real `dvn`
//! nodes (aws, aliyun, gcp; SQLite each), sends OmniCounter messages both ways, plays the
//! executor (commit + deliver, in nonce order, as packets become verifiable) and shows live
//! progress. Exits 0 once both counters show every message; non-zero on timeout.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use dvn_devnet::nodes::{NodeOptions, NodeSet};
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
        /// Give up after this many seconds without completion.
        #[arg(long, default_value_t = 180)]
        timeout_secs: u64,
    },
}

/// One direction's traffic and how far it got.
struct Lane {
    direction: Direction,
    label: &'static str,
    packets: Vec<SentPacket>,
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
            let dvn_bin = match dvn_bin {
                Some(p) => p,
                None => std::env::current_exe()?.with_file_name("dvn"),
            };
            anyhow::ensure!(
                dvn_bin.is_file(),
                "dvn binary not found at {} (build it, or pass --dvn-bin)",
                dvn_bin.display()
            );
            demo(
                messages,
                keep_running,
                log_dir,
                dvn_bin,
                Duration::from_secs(timeout_secs),
            )
            .await
        }
    }
}

async fn demo(
    messages: usize,
    keep_running: bool,
    log_dir: PathBuf,
    dvn_bin: PathBuf,
    timeout: Duration,
) -> anyhow::Result<()> {
    let started = Instant::now();
    if log_dir.exists() {
        std::fs::remove_dir_all(&log_dir)?;
    }
    println!("starting two anvil chains and deploying LayerZero V2");
    let devnet = Devnet::start(DevnetConfig {
        log_dir: Some(log_dir.clone()),
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
        &NodeOptions::default(),
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
            verified: 0,
            delivered: 0,
        },
        Lane {
            direction: Direction::BToA,
            label: "conflux-espace → ethereum",
            packets: vec![],
            verified: 0,
            delivered: 0,
        },
    ];
    for lane in &mut lanes {
        lane.packets
            .extend(devnet.send_messages(lane.direction, messages).await?);
    }
    let deadline = Instant::now() + timeout;
    let mut last_line = String::new();
    let mut next_send = Instant::now() + Duration::from_secs(3);
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
        if done && !keep_running {
            break;
        }
        if !done && Instant::now() > deadline {
            anyhow::bail!(
                "not all messages verified within {timeout:?}; node logs in {}",
                log_dir.join("nodes").display()
            );
        }
        if keep_running && Instant::now() >= next_send {
            for lane in &mut lanes {
                lane.packets
                    .extend(devnet.send_messages(lane.direction, 1).await?);
            }
            next_send = Instant::now() + Duration::from_secs(3);
        }
        tokio::select! {
            _ = tokio::signal::ctrl_c(), if keep_running => break,
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
            "  {}: {} packets verified in {} DVN.execute transactions; duplicates {}, forged {}",
            lane.label,
            lane.packets.len() - report.unverified.len(),
            report.execute_transactions,
            report.duplicates.len(),
            report.forged
        );
        anyhow::ensure!(report.holds(), "invariants violated: {report:?}");
    }
    println!(
        "all {} messages verified by the 2-of-3 DVN and delivered in {:.1}s; logs in {}",
        lanes.iter().map(|l| l.delivered).sum::<usize>(),
        started.elapsed().as_secs_f64(),
        log_dir.display()
    );
    Ok(())
}

/// Counts verified packets and, as the executor, delivers the verifiable ones in nonce order.
async fn advance(devnet: &Devnet, lane: &mut Lane) -> anyhow::Result<()> {
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
