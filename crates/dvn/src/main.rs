//! The `dvn` binary: parses the command line, sets up logs and metrics, dispatches.

use std::process::ExitCode;

use clap::Parser;
use dvn::cli::{Cli, Command, ConfigCommand};
use dvn::config::Config;
use tokio_util::sync::CancellationToken;

fn init_logs(debug: bool, json: bool) {
    let default = if debug { "dvn=debug,info" } else { "info" };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    // Colour only on a terminal: files and log collectors get plain text.
    let terminal = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_ansi(terminal);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Config {
            command: ConfigCommand::Check { config },
        } => match Config::load(&config) {
            Ok(c) => {
                println!(
                    "{}: OK ({} chains, {} peers, node {})",
                    config.display(),
                    c.chains.len(),
                    c.peers.len(),
                    c.node.name
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::FAILURE
            }
        },
        Command::Run {
            config,
            debug,
            json_logs,
        } => {
            init_logs(debug, json_logs);
            let config = match Config::load(&config) {
                Ok(c) => c,
                Err(e) => {
                    tracing::error!("{e}");
                    return ExitCode::FAILURE;
                }
            };
            let metrics =
                match metrics_exporter_prometheus::PrometheusBuilder::new().install_recorder() {
                    Ok(h) => h,
                    Err(e) => {
                        tracing::error!("metrics: {e}");
                        return ExitCode::FAILURE;
                    }
                };
            let cancel = CancellationToken::new();
            let on_signal = cancel.clone();
            tokio::spawn(async move {
                shutdown_signal().await;
                tracing::info!("shutdown requested");
                on_signal.cancel();
            });
            match dvn::node::run(config, metrics, cancel).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!("{e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate => {}
    }
}
