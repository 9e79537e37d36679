//! `dvn-devnet demo`: the README's "run it" command.
//!
//! Starts the two-chain devnet with the real LayerZero V2 contracts, sends OmniCounter messages
//! both ways, verifies them through the 2-of-3 DVN contract (the harness signs as two of the
//! three regions with `dvn_lz`'s hashing and signature packing, batching every packet of a
//! round into one `DVN.execute`), delivers them as the executor, and exits 0 once both
//! counters show every message. The `dvn` node replaces the harness's DVN role (issue 3).

use std::path::PathBuf;
use std::time::Instant;

use clap::{Parser, Subcommand};
use dvn_devnet::{Devnet, DevnetConfig, Direction};

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
    /// Run the devnet and push messages across both ways through the 2-of-3 DVN.
    Demo {
        /// Messages to send in each direction.
        #[arg(long, default_value_t = 10)]
        messages: usize,
        /// Keep sending rounds of messages until Ctrl-C.
        #[arg(long)]
        keep_running: bool,
        /// Where to write the chains' logs.
        #[arg(long, default_value = ".devnet-logs")]
        log_dir: PathBuf,
    },
}

#[derive(Debug, Default, Clone, Copy)]
struct Progress {
    sent: usize,
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
        } => demo(messages, keep_running, log_dir).await,
    }
}

async fn demo(messages: usize, keep_running: bool, log_dir: PathBuf) -> anyhow::Result<()> {
    let started = Instant::now();
    println!(
        "starting two anvil chains and deploying LayerZero V2 (logs in {})",
        log_dir.display()
    );
    let devnet = Devnet::start(DevnetConfig {
        log_dir: Some(log_dir.clone()),
        ..Default::default()
    })
    .await?;
    println!(
        "  ethereum       chain 1    eid 30101  {}  endpoint {}  DVN {}",
        devnet.a.chain.rpc_url(),
        devnet.a.contracts.endpoint,
        devnet.a.contracts.dvn
    );
    println!(
        "  conflux-espace chain 1030 eid 30212  {}  endpoint {}  DVN {}",
        devnet.b.chain.rpc_url(),
        devnet.b.contracts.endpoint,
        devnet.b.contracts.dvn
    );
    println!("  deployed in {:.1}s", started.elapsed().as_secs_f64());

    let mut totals = [Progress::default(); 2];
    loop {
        for (i, direction) in [Direction::AToB, Direction::BToA].into_iter().enumerate() {
            round(&devnet, direction, messages, &mut totals[i]).await?;
        }
        let (a, b) = (
            devnet.counter(&devnet.a).await?,
            devnet.counter(&devnet.b).await?,
        );
        println!("counters: ethereum {a}, conflux-espace {b}");
        let want = totals.map(|t| t.sent);
        anyhow::ensure!(
            b == alloy::primitives::U256::from(want[0])
                && a == alloy::primitives::U256::from(want[1]),
            "counters {b}/{a} do not match messages sent {}/{}",
            want[0],
            want[1]
        );
        if !keep_running {
            break;
        }
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = tokio::time::sleep(std::time::Duration::from_secs(2)) => {}
        }
    }
    println!(
        "all {} messages verified and delivered in {:.1}s; logs in {}",
        totals.iter().map(|t| t.delivered).sum::<usize>(),
        started.elapsed().as_secs_f64(),
        log_dir.display()
    );
    Ok(())
}

async fn round(
    devnet: &Devnet,
    direction: Direction,
    messages: usize,
    total: &mut Progress,
) -> anyhow::Result<()> {
    let label = match direction {
        Direction::AToB => "ethereum → conflux-espace",
        Direction::BToA => "conflux-espace → ethereum",
    };
    let packets = devnet.send_messages(direction, messages).await?;
    total.sent += packets.len();
    print_progress(label, total);
    // Regions 0 and 2 sign in one direction, 1 and 2 in the other: any two of three suffice.
    let signers: &[usize] = if direction == Direction::AToB {
        &[0, 2]
    } else {
        &[1, 2]
    };
    let receipt = devnet.verify_as_dvn(direction, &packets, signers).await?;
    total.verified += packets.len();
    print_progress(label, total);
    println!(
        "    one DVN.execute for {} packets: {} gas ({} per packet)",
        packets.len(),
        receipt.gas_used,
        receipt.gas_used / packets.len().max(1) as u64
    );
    for packet in &packets {
        devnet.commit_and_deliver(direction, packet).await?;
        total.delivered += 1;
    }
    print_progress(label, total);
    Ok(())
}

fn print_progress(label: &str, p: &Progress) {
    println!(
        "  {label}: sent {} / verified {} / delivered {}",
        p.sent, p.verified, p.delivered
    );
}
