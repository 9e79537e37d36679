//! The command line: `dvn run`, `status`, `doctor`, `why`, `admin`, `audit`, `config check`,
//! `keys`, …

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// What `dvn --version` prints: a debug build says so (it is several times slower; benchmarks
/// read this to state what they measured).
const VERSION: &str = if cfg!(debug_assertions) {
    concat!(env!("CARGO_PKG_VERSION"), " (debug build)")
} else {
    env!("CARGO_PKG_VERSION")
};

/// `dvn --config /app/config.yaml --debug` (the operator manual's form, no subcommand) runs
/// the node, exactly as `dvn run --config … --debug` does.
#[derive(Debug, Parser)]
#[command(
    name = "dvn",
    version = VERSION,
    about = "LayerZero V2 DVN node",
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub run: RunArgs,
}

impl Cli {
    /// The command to carry out: running the node when none is named.
    pub fn command(self) -> Command {
        self.command.unwrap_or(Command::Run(self.run))
    }
}

/// How to run the node.
#[derive(Debug, Clone, clap::Args)]
pub struct RunArgs {
    #[arg(long, short, default_value = "config.yaml")]
    pub config: PathBuf,
    /// Debug-level logs.
    #[arg(long)]
    pub debug: bool,
    /// Logs as JSON lines.
    #[arg(long)]
    pub json_logs: bool,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the node (also what `dvn` does with no subcommand).
    Run(RunArgs),
    /// One screen: chains, backlog, latency, keys, peers, balance, last verified packet.
    Status {
        #[command(flatten)]
        node: NodeArgs,
        #[arg(long)]
        json: bool,
    },
    /// The daily checklist and troubleshooting tree; exit code = worst severity (0 ok, 1 P3,
    /// 2 P2, 3 P1, 4 P0).
    Doctor {
        #[command(flatten)]
        node: NodeArgs,
        #[arg(long)]
        json: bool,
        /// Backlog per path at or above which the check fails (manual: < 10).
        #[arg(long, default_value_t = 10)]
        backlog_threshold: i64,
        /// Signing p99 at or above which the check fails, seconds (manual: < 5).
        #[arg(long, default_value_t = 5.0)]
        latency_threshold: f64,
        /// Disk use above which the check fails, percent (manual: < 80).
        #[arg(long, default_value_t = 80.0)]
        disk_threshold: f64,
        /// Submitter balance below which the check fails, in ether.
        #[arg(long, default_value_t = 0.5)]
        min_balance: f64,
        /// Alertmanager base URL, to count active alerts.
        #[arg(long)]
        alertmanager: Option<String>,
        /// PEM certificates whose expiry to check (repeatable).
        #[arg(long = "cert")]
        certs: Vec<PathBuf>,
        /// Serving OApps whose receive config requires only our DVN (1-of-1) is known and
        /// accepted (their owners were told): no P3 for it.
        #[arg(long)]
        accept_sole_verifier: bool,
    },
    /// Where a packet is and what it is waiting for (reads the store).
    Why {
        /// The packet's GUID (0x…, 32 bytes).
        guid: String,
        #[arg(long, short, default_value = "config.yaml")]
        config: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Paths halted by the equivocation guard: list them, or resume one after investigating.
    Path {
        #[command(subcommand)]
        command: PathCommand,
    },
    /// Re-queue an `invalid` packet once its cause is fixed: every check runs again.
    Retry {
        /// The packet's GUID (0x…, 32 bytes).
        guid: String,
        #[arg(long, short, default_value = "config.yaml")]
        config: PathBuf,
    },
    /// Scan a source chain again from a block (to the head): after a persisting gap, a reorg
    /// deeper than max_reorg_depth, or a provider found to have dropped logs. Safe while the
    /// node runs; observations are idempotent.
    Rescan {
        #[arg(long, short, default_value = "config.yaml")]
        config: PathBuf,
        /// The chain (name or eid).
        #[arg(long)]
        chain: String,
        /// First block to read again.
        #[arg(long)]
        from: u64,
    },
    /// The admin API of a running node (token from $DVN_ADMIN_TOKEN), its tokens and roles.
    Admin {
        #[command(subcommand)]
        command: AdminCommand,
    },
    /// The audit log, read from the store: check its hash chain, export it.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// A consistent snapshot of the store, the configuration file and recent logs, in one
    /// .tar.gz with a checksummed manifest (safe while the node runs; never overwrites).
    Backup {
        #[arg(long, short, default_value = "config.yaml")]
        config: PathBuf,
        /// Directory the archive is written to (default: the configuration's `backup.dir`).
        #[arg(long)]
        out: Option<PathBuf>,
        /// A log directory whose files of the last --log-days days go in.
        #[arg(long)]
        logs: Option<PathBuf>,
        #[arg(long, default_value_t = 7)]
        log_days: u64,
        /// Then delete this node's archives older than this many days, in --out and in every
        /// `backup.remote` (default: `backup.keep_days`; unset keeps them).
        #[arg(long)]
        keep_days: Option<u64>,
        /// Do not upload to the configuration's `backup.remote` targets.
        #[arg(long)]
        local_only: bool,
        #[arg(long)]
        json: bool,
    },
    /// Restore the store (and with --with-config the configuration file) from a backup: the
    /// archive is verified completely first, and the node must be stopped.
    Restore {
        /// The archive: a file, or `s3://`, `oss://`, `gs://` — an object ending in `.tar.gz`,
        /// or a prefix, whose newest archive of this node is taken (endpoints from
        /// `backup.remote`, credentials from the environment).
        archive: String,
        #[arg(long, short, default_value = "config.yaml")]
        config: PathBuf,
        /// Only verify the archive (checksums, manifest, node).
        #[arg(long)]
        dry_run: bool,
        /// Also put the backed-up configuration file in place (the current one is kept
        /// beside it).
        #[arg(long)]
        with_config: bool,
        /// After restoring, run this start command (e.g. `systemctl start dvn`) and wait for
        /// `/health` and `/ready`: exit 6 naming the gate when the node does not come back.
        #[arg(long)]
        start: Option<String>,
        /// How long the restored node gets to be ready after --start.
        #[arg(long, default_value_t = 180)]
        ready_timeout_secs: u64,
        #[arg(long)]
        json: bool,
    },
    /// Bring the store's schema up to date and exit (under PostgreSQL, run it with the schema
    /// owner's URL in DVN_STORE_URL; the node's own role has no DDL rights).
    Migrate {
        #[arg(long, short, default_value = "config.yaml")]
        config: PathBuf,
    },
    /// The rolling upgrade of the three regions, one at a time, gated on /health and /ready,
    /// rolled back on failure (see deploy/upgrade/ for systemd and compose plans).
    Upgrade {
        #[command(subcommand)]
        command: UpgradeCommand,
    },
    /// Certificates for mutual TLS between regions.
    Certs {
        #[command(subcommand)]
        command: CertsCommand,
    },
    /// Configuration tools.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Key tools: inspect the configured keys, or manage keys in a PKCS#11 token.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// The roles and what each may do.
    Roles,
    /// API tokens (written to the store directly: run on the host, by whoever holds the
    /// database; recorded in the audit log as local:<user>).
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Packets by state, halted paths, pauses, the audit log's head.
    Status {
        #[command(flatten)]
        api: ApiArgs,
    },
    /// The most recently changed packets.
    Packets {
        #[command(flatten)]
        api: ApiArgs,
        /// Only this state (observed, signed, submitted, verified, invalid, conflict, …).
        #[arg(long)]
        state: Option<String>,
        #[arg(long, default_value_t = 100)]
        limit: u64,
    },
    /// Where a packet is and what it waits for.
    Why {
        #[command(flatten)]
        api: ApiArgs,
        guid: String,
    },
    /// Stop signing and submitting for the whole node, a chain or a path (packets are still
    /// observed; nothing is lost).
    Pause {
        #[command(flatten)]
        api: ApiArgs,
        #[command(flatten)]
        scope: ScopeArgs,
        /// Why (recorded with the pause and in the audit log).
        #[arg(long)]
        reason: String,
    },
    /// Lift a pause.
    Resume {
        #[command(flatten)]
        api: ApiArgs,
        #[command(flatten)]
        scope: ScopeArgs,
    },
    /// Let a path halted by the equivocation guard go on (admin role).
    ResumeHalted {
        #[command(flatten)]
        api: ApiArgs,
        #[command(flatten)]
        path: PathArgs,
    },
    /// Re-queue an invalid packet.
    Retry {
        #[command(flatten)]
        api: ApiArgs,
        guid: String,
    },
    /// Scan a chain again from a block.
    Rescan {
        #[command(flatten)]
        api: ApiArgs,
        #[arg(long)]
        chain: String,
        #[arg(long)]
        from: u64,
    },
    /// Read the configuration file again (validated as a whole; only `governor` can change
    /// without a restart).
    Reload {
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Take a backup now, into the node's `backup.dir`.
    Backup {
        #[command(flatten)]
        api: ApiArgs,
    },
    /// The node's recent log lines.
    Logs {
        #[command(flatten)]
        api: ApiArgs,
        #[arg(long, default_value_t = 200)]
        lines: usize,
    },
    /// Audit records after a sequence number (auditor, admin).
    Audit {
        #[command(flatten)]
        api: ApiArgs,
        #[arg(long, default_value_t = 0)]
        after: u64,
    },
}

/// How to reach a node's admin API.
#[derive(Debug, clap::Args)]
pub struct ApiArgs {
    #[arg(long, short, default_value = "config.yaml")]
    pub config: PathBuf,
    /// The node's base URL (default: its `admin.listen` over https when set, else its
    /// `node.listen`; on 127.0.0.1 when the address is unspecified).
    #[arg(long)]
    pub url: Option<String>,
    /// Environment variable holding the API token (never an argument: arguments show in ps).
    #[arg(long, default_value = "DVN_ADMIN_TOKEN")]
    pub token_env: String,
    /// On a mutual-TLS admin listener: the CA the listener's certificate chains to.
    #[arg(long, requires_all = ["tls_cert", "tls_key"])]
    pub tls_ca: Option<PathBuf>,
    /// This operator's client certificate (its DNS name must be in the node's `admin.clients`).
    #[arg(long, requires = "tls_ca")]
    pub tls_cert: Option<PathBuf>,
    /// Its private key.
    #[arg(long, requires = "tls_ca")]
    pub tls_key: Option<PathBuf>,
    /// The name the listener's certificate must carry (default: the config's `node.name`).
    #[arg(long)]
    pub tls_server_name: Option<String>,
}

/// What a pause covers: `--all`, `--chain`, or a path.
#[derive(Debug, clap::Args)]
pub struct ScopeArgs {
    /// The whole node.
    #[arg(long, conflicts_with_all = ["chain", "src"])]
    pub all: bool,
    /// Every path from or to this chain (name or eid).
    #[arg(long, conflicts_with = "src")]
    pub chain: Option<String>,
    #[command(flatten)]
    pub path: OptionalPathArgs,
}

#[derive(Debug, clap::Args)]
pub struct OptionalPathArgs {
    #[arg(long, requires_all = ["dst", "sender", "receiver"])]
    pub src: Option<String>,
    #[arg(long)]
    pub dst: Option<String>,
    #[arg(long)]
    pub sender: Option<String>,
    #[arg(long)]
    pub receiver: Option<String>,
}

/// A path: source and destination chain (name or eid), sending and receiving OApp.
#[derive(Debug, clap::Args)]
pub struct PathArgs {
    #[arg(long)]
    pub src: String,
    #[arg(long)]
    pub dst: String,
    #[arg(long)]
    pub sender: String,
    #[arg(long)]
    pub receiver: String,
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Make a token; it is printed once and only its hash is kept.
    Create {
        #[arg(long, short, default_value = "config.yaml")]
        config: PathBuf,
        /// Who will use it (recorded with every call).
        #[arg(long)]
        operator: String,
        #[arg(long, value_enum)]
        role: crate::admin::roles::Role,
        /// Days until it expires.
        #[arg(long, default_value_t = 90)]
        days: u32,
    },
    /// The tokens (ids, operators, roles, expiry; never the tokens).
    List {
        #[arg(long, short, default_value = "config.yaml")]
        config: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Revoke a token by id.
    Revoke {
        #[arg(long, short, default_value = "config.yaml")]
        config: PathBuf,
        id: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Check the hash chain (and checkpoints written earlier); names the first broken record.
    /// Exit 0 intact, 1 broken.
    Verify {
        #[arg(long, short, default_value = "config.yaml")]
        config: PathBuf,
        /// Checkpoint files (JSON lines `{"seq":…,"hash":…}`, e.g. the node's
        /// `audit.checkpoint_file`, copied to write-once storage); each line must still be in
        /// the log.
        #[arg(long = "checkpoint")]
        checkpoints: Vec<PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// Records as JSON lines (to stdout or --out), from a sequence number or a time.
    Export {
        #[arg(long, short, default_value = "config.yaml")]
        config: PathBuf,
        /// A sequence number (records after it) or an RFC 3339 time (records at or after it).
        #[arg(long, default_value = "0")]
        since: String,
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
pub enum UpgradeCommand {
    /// Check every region and print the steps a run would take (changes nothing). Exit 0
    /// when a run would start, 1 when it would be refused.
    Plan {
        #[command(flatten)]
        args: UpgradeArgs,
    },
    /// Upgrade the regions in the plan's order. Exit 0 all upgraded, 1 refused (nothing
    /// changed), 2 a region failed and was rolled back (the rollout stopped), 3 its rollback
    /// failed too.
    Run {
        #[command(flatten)]
        args: UpgradeArgs,
    },
}

#[derive(Debug, clap::Args)]
pub struct UpgradeArgs {
    /// The plan file (regions in order, their URLs and stop/switch/start/rollback commands).
    #[arg(long)]
    pub plan: PathBuf,
    /// The release to install, substituted as {version}.
    #[arg(long)]
    pub to: String,
    /// The release being replaced, substituted as {previous} (default: the version each
    /// region's /health reports).
    #[arg(long)]
    pub from: Option<String>,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum CertsCommand {
    /// Make a CA and one certificate per region (DNS name = the region's name), in a new
    /// directory: ca.pem, ca.key (keep offline), NAME.pem, NAME.key. Never overwrites.
    New {
        /// Directory to write into.
        #[arg(long)]
        dir: PathBuf,
        /// Region names, comma-separated (the `node.name` of each region).
        #[arg(long, value_delimiter = ',', default_value = "aws,aliyun,gcp")]
        names: Vec<String>,
        /// Extra names in every certificate (IP addresses or host names), comma-separated.
        #[arg(long, value_delimiter = ',')]
        hosts: Vec<String>,
        /// Validity in days.
        #[arg(long, default_value_t = 397)]
        days: u32,
    },
    /// Renew (or add) one region's certificate with the CA in `--dir`; the node picks the new
    /// files up without a restart. The old NAME.pem / NAME.key are moved aside first.
    Renew {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        name: String,
        #[arg(long, value_delimiter = ',')]
        hosts: Vec<String>,
        #[arg(long, default_value_t = 397)]
        days: u32,
    },
}

#[derive(Debug, Subcommand)]
pub enum PathCommand {
    /// The halted paths, with the nonce that conflicted and why.
    List {
        #[arg(long, short, default_value = "config.yaml")]
        config: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Let a halted path go on. Its conflicting packet is never signed again.
    Resume {
        #[arg(long, short, default_value = "config.yaml")]
        config: PathBuf,
        /// Source chain (name or eid).
        #[arg(long)]
        src: String,
        /// Destination chain (name or eid).
        #[arg(long)]
        dst: String,
        /// Sending OApp (address or 32-byte word).
        #[arg(long)]
        sender: String,
        /// Receiving OApp (address or 32-byte word).
        #[arg(long)]
        receiver: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Print the Ethereum addresses of the configured signer and submitter keys.
    Address {
        #[arg(long, short, default_value = "config.yaml")]
        config: PathBuf,
    },
    /// Sign a test digest with the configured signer and check it recovers to its address.
    TestSign {
        #[arg(long, short, default_value = "config.yaml")]
        config: PathBuf,
    },
    /// Generate a non-extractable secp256k1 key inside a PKCS#11 token; prints its address.
    Generate {
        #[command(flatten)]
        token: TokenArgs,
        /// Label of the new key.
        #[arg(long)]
        key_label: String,
        #[command(flatten)]
        audit: KeyAuditArgs,
    },
    /// Generate a new key into an Ethereum keystore v3 file (development and devnets; production
    /// keys belong in an HSM/KMS). Prints the file and the address.
    GenerateKeystore {
        /// Directory to write the keystore file into.
        #[arg(long)]
        dir: PathBuf,
        /// File name of the keystore.
        #[arg(long)]
        name: String,
        /// Environment variable holding the keystore password.
        #[arg(long, default_value = "DVN_KEYSTORE_PASSWORD")]
        password_env: String,
        #[command(flatten)]
        audit: KeyAuditArgs,
    },
    /// List the secp256k1 keys in a PKCS#11 token with their addresses.
    List {
        #[command(flatten)]
        token: TokenArgs,
        #[command(flatten)]
        audit: KeyAuditArgs,
    },
    /// Replace this region's signer in a DVN's on-chain signer set with `signer_next`, through
    /// the DVN's own multisig: propose here, approve on the other regions (admin role).
    Rotate {
        #[command(subcommand)]
        command: RotateCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum RotateCommand {
    /// Propose `setSigner(signer_next, true)` + `setSigner(signer, false)` on one chain's DVN;
    /// signed here and sent to the peers. Executed by this node once a quorum approved.
    Propose {
        #[command(flatten)]
        api: ApiArgs,
        /// The chain (name or eid).
        #[arg(long)]
        chain: String,
        /// How long the peers have to approve, in seconds of destination time (max 7 days).
        #[arg(long, default_value_t = 86_400)]
        expires_in_secs: u64,
    },
    /// The rotations this node knows (proposed by it or by a peer) and the key it signs with
    /// on each chain.
    List {
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Check a peer's proposal again and sign it.
    Approve {
        #[command(flatten)]
        api: ApiArgs,
        /// The rotation id (from `list`, or the node's log).
        id: String,
    },
    /// Refuse a peer's proposal: this region never signs it.
    Reject {
        #[command(flatten)]
        api: ApiArgs,
        id: String,
        #[arg(long)]
        reason: String,
    },
}

/// Which node's audit log records a key command run on the host (`address` and `test-sign`
/// always record in the log of the configuration they read).
#[derive(Debug, clap::Args)]
pub struct KeyAuditArgs {
    /// Record the operation in this node's audit log (a generation is refused when the record
    /// cannot be written). Without it nothing is recorded, and a warning says so.
    #[arg(long, short)]
    pub config: Option<PathBuf>,
}

/// Which node to ask: its config (for the listen address and chains) and, optionally, its URL.
#[derive(Debug, clap::Args)]
pub struct NodeArgs {
    #[arg(long, short, default_value = "config.yaml")]
    pub config: PathBuf,
    /// The node's base URL (default: its `node.listen` on 127.0.0.1).
    #[arg(long)]
    pub url: Option<String>,
}

/// Where a PKCS#11 token is; the PIN is read from an environment variable, never an argument.
#[derive(Debug, clap::Args)]
pub struct TokenArgs {
    /// The PKCS#11 library (e.g. /usr/lib/softhsm/libsofthsm2.so, CloudHSM's libcloudhsm_pkcs11.so).
    #[arg(long)]
    pub module: PathBuf,
    #[arg(long)]
    pub token_label: String,
    /// Environment variable holding the user PIN.
    #[arg(long, default_value = "HSM_PIN")]
    pub pin_env: String,
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Parse and validate a configuration (env overrides applied); report every problem.
    Check {
        #[arg(long, short, default_value = "config.yaml")]
        config: PathBuf,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_manuals_start_command_runs_the_node() {
        let manual = Cli::try_parse_from(["dvn", "--config", "/app/config.yaml", "--debug"])
            .unwrap()
            .command();
        let Command::Run(args) = manual else {
            unreachable!("not run: {manual:?}")
        };
        assert_eq!(args.config, PathBuf::from("/app/config.yaml"));
        assert!(args.debug);
        let explicit = Cli::try_parse_from(["dvn", "run", "-c", "x.yaml"])
            .unwrap()
            .command();
        assert!(matches!(
            explicit,
            Command::Run(RunArgs { debug: false, .. })
        ));
        assert!(Cli::try_parse_from(["dvn", "--debug", "status"]).is_err());
    }
}
