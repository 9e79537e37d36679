//! The command line: `dvn run`, `dvn config check`.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "dvn", version, about = "LayerZero V2 DVN node")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the node.
    Run {
        #[arg(long, short, default_value = "config.yaml")]
        config: PathBuf,
        /// Debug-level logs.
        #[arg(long)]
        debug: bool,
        /// Logs as JSON lines.
        #[arg(long)]
        json_logs: bool,
    },
    /// Configuration tools.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Parse and validate a configuration (env overrides applied); report every problem.
    Check {
        #[arg(long, short, default_value = "config.yaml")]
        config: PathBuf,
    },
}
