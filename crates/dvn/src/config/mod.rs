//! The node's configuration: a YAML file, then environment overrides ([`env`]), then one
//! validator ([`validate`]) that reports *every* problem with its path.
//!
//! Unknown fields are rejected. Secrets (keys, passwords) are never in this struct: it holds
//! only where to find them (an env var name or a file path), so printing a config is safe.

pub mod env;
pub mod validate;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use alloy::primitives::Address;
use serde::{Deserialize, Serialize};

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub node: NodeConfig,
    pub store: StoreConfig,
    pub chains: Vec<ChainConfig>,
    #[serde(default)]
    pub peers: Vec<PeerConfig>,
    pub signer: KeyConfig,
    /// The key replacing `signer` during a rotation (`dvn keys rotate`). Loaded and probed
    /// alongside it; on each chain it signs instead of `signer` once that chain's DVN has it
    /// in its signer set and no longer has `signer`. Moved to `signer` once every chain has
    /// rotated.
    #[serde(default)]
    pub signer_next: Option<KeyConfig>,
    pub submitter: SubmitterConfig,
    #[serde(default)]
    pub signing: SigningConfig,
    #[serde(default)]
    pub verification: VerificationConfig,
    /// Redis for the submitter lease between replicas of this region (optional).
    #[serde(default)]
    pub redis: Option<RedisConfig>,
    /// Mutual TLS on the peer listener and towards the peers (required unless
    /// `unsafe_plaintext_peers`).
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    /// Serve and call the peer API in plain HTTP (devnets only: between regions the peer
    /// channel crosses the internet).
    #[serde(default)]
    pub unsafe_plaintext_peers: bool,
    /// Audit log checkpoints.
    #[serde(default)]
    pub audit: AuditConfig,
    /// Which paths are signed, and how fast.
    #[serde(default)]
    pub governor: GovernorConfig,
    /// Where `POST /admin/v1/backup` writes archives.
    #[serde(default)]
    pub backup: BackupConfig,
    /// The admin API on a listener of its own with mutual TLS (optional: by default it is
    /// served under `/admin/v1` on the operations listener, token only).
    #[serde(default)]
    pub admin: AdminConfig,
}

/// Where the admin API is served. With `listen` set, `/admin/v1` leaves the operations
/// listener and is served there over mutual TLS: a caller needs a client certificate from
/// `tls.ca` naming one of `clients` (DNS SAN) *and* a token.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    #[serde(default)]
    pub listen: Option<SocketAddr>,
    /// `ca`: the CA operators' client certificates chain to; `cert`/`key`: the listener's own
    /// certificate (its DNS name is what `dvn admin` checks, `node.name` by default).
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    /// The names a client certificate may carry (one per operator or workstation).
    #[serde(default)]
    pub clients: Vec<String>,
}

/// Backups triggered through the admin API (`dvn backup` on the host takes its own flags).
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct BackupConfig {
    /// Directory for the archives; the admin API's backup is refused while absent.
    #[serde(default)]
    pub dir: Option<std::path::PathBuf>,
    /// A log directory whose recent files go in.
    #[serde(default)]
    pub logs: Option<std::path::PathBuf>,
    /// Days of logs.
    #[serde(default = "default_log_days")]
    pub log_days: u64,
    /// Object storage every backup is uploaded to (create-only), and where `dvn restore`
    /// finds `s3://`, `oss://` and `gs://` archives' endpoints. Credentials come from the
    /// environment only (see `backup::remote`).
    #[serde(default)]
    pub remote: Vec<RemoteTarget>,
    /// Archives older than this many days are deleted, locally and in every remote, after
    /// each backup (unset: kept).
    #[serde(default)]
    pub keep_days: Option<u64>,
}

/// One object-storage destination for backups.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RemoteTarget {
    /// `s3://bucket/prefix` (AWS S3), `oss://bucket/prefix` (Aliyun OSS, through its
    /// S3-compatible API) or `gs://bucket/prefix` (Google Cloud Storage).
    pub url: String,
    /// The service endpoint: optional for S3 and GCS (their public endpoints by default), the
    /// region endpoint for OSS (e.g. `https://oss-cn-hangzhou.aliyuncs.com`; the bucket is put
    /// in front of the host).
    #[serde(default)]
    pub endpoint: Option<String>,
    /// The signing region (S3: else `AWS_REGION`; OSS: required, e.g. `cn-hangzhou`).
    #[serde(default)]
    pub region: Option<String>,
}

fn default_log_days() -> u64 {
    7
}

/// Path allow/deny rules and a per-path rate cap (see `pipeline::governor`).
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct GovernorConfig {
    /// When not empty, only paths matching one of these rules are signed.
    #[serde(default)]
    pub allow: Vec<PathRule>,
    /// Paths matching any of these are never signed (wins over `allow`).
    #[serde(default)]
    pub deny: Vec<PathRule>,
    /// Per path, at most this many signatures in any 60 s (0: no cap); the excess waits.
    #[serde(default)]
    pub max_packets_per_minute: u32,
}

/// A path pattern: each field that is present must match (chains by name or eid).
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct PathRule {
    #[serde(default)]
    pub src: Option<String>,
    #[serde(default)]
    pub dst: Option<String>,
    #[serde(default)]
    pub sender: Option<Address>,
    #[serde(default)]
    pub receiver: Option<Address>,
}

/// Where the node writes its signed audit checkpoints (sequence and head hash of the audit
/// log): ship the file to write-once storage, and `dvn audit verify --checkpoint` shows a log
/// whose tail was cut or rewritten since.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct AuditConfig {
    /// Appended to (JSON lines); none written when absent.
    #[serde(default)]
    pub checkpoint_file: Option<std::path::PathBuf>,
    /// How often a checkpoint is written (only when the log grew).
    #[serde(default = "default_checkpoint_interval_secs")]
    pub checkpoint_interval_secs: u64,
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self {
            checkpoint_file: None,
            checkpoint_interval_secs: default_checkpoint_interval_secs(),
        }
    }
}

fn default_checkpoint_interval_secs() -> u64 {
    300
}

/// This region's certificate and the CA that issued every region's certificate (PEM files).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// The operators' CA certificate: peers' certificates must chain to it.
    pub ca: PathBuf,
    /// This region's certificate (DNS name = `node.name`), presented to peers both ways.
    pub cert: PathBuf,
    /// Its private key.
    pub key: PathBuf,
}

impl TlsConfig {
    /// The fields (`ca`, `cert`, `key`) left empty.
    pub fn unnamed_files(&self) -> Vec<&'static str> {
        [("ca", &self.ca), ("cert", &self.cert), ("key", &self.key)]
            .into_iter()
            .filter(|(_, path)| path.as_os_str().is_empty())
            .map(|(field, _)| field)
            .collect()
    }
}

/// Redis, when replicas of one region share the submitter role.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RedisConfig {
    /// `redis://[:password@]host:port[/db]`.
    pub url: String,
    /// How long a lease lasts without renewal.
    #[serde(default = "default_lease_ttl_ms")]
    pub lease_ttl_ms: u64,
}

fn default_lease_ttl_ms() -> u64 {
    10_000
}

/// This node.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// Region / node name (`aws`, `aliyun`, `gcp`); unique among the peers.
    pub name: String,
    /// The operations listener: `/health`, `/ready`, `/metrics` (bind it to a private address).
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// The peer listener (mutual TLS): the other regions push and pull signatures here. When
    /// absent, the peer API is served on `listen` (plain HTTP, `unsafe_plaintext_peers` only).
    #[serde(default)]
    pub peer_listen: Option<SocketAddr>,
    /// The address this region's signer key must have (optional): the node derives the
    /// address from the HSM/KMS public key at start and refuses to run on a mismatch (a key
    /// label or key id pointing at the wrong key).
    #[serde(default)]
    pub signer_address: Option<Address>,
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 8080))
}

/// Where state lives.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// `sqlite://path/to/dvn.db` (embedded, the default) or `postgres://user@host/db`.
    #[serde(default = "default_store_url")]
    pub url: String,
    /// PostgreSQL: the longest one statement may run (a lock held elsewhere, a server in
    /// trouble) before it is cancelled and the step retried.
    #[serde(default = "default_statement_timeout_ms")]
    pub statement_timeout_ms: u64,
    /// Finished packets (verified, skipped, orphaned) and their signatures are deleted this
    /// many days after they finished; 0 keeps everything.
    #[serde(default = "default_retention_days")]
    pub retention_days: u64,
    /// SQLite: below this much free space on the store's filesystem the store counts as down
    /// on `/ready` (writes are about to fail); 0 turns the check off.
    #[serde(default = "default_min_free_mb")]
    pub min_free_mb: u64,
}

fn default_retention_days() -> u64 {
    30
}

fn default_min_free_mb() -> u64 {
    256
}

fn default_store_url() -> String {
    "sqlite://dvn.db".into()
}

fn default_statement_timeout_ms() -> u64 {
    10_000
}

/// How a chain's blocks count as final enough to sign.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Finality {
    /// Wait for the confirmations the destination's receive ULN config asks for.
    Confirmations,
    /// Additionally wait until the block is at or below the chain's `safe` tag (Ethereum:
    /// justified; Conflux eSpace: confirmed by PoW, seconds to a minute).
    Safe,
    /// Additionally wait until the block is at or below the chain's `finalized` tag (Ethereum:
    /// two epochs; Conflux eSpace: PoS finality, about 4-6 minutes).
    Finalized,
}

/// Known chain families whose RPC quirks the node adapts to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum ChainProfile {
    /// Any EVM chain with standard JSON-RPC.
    #[default]
    Generic,
    /// Conflux eSpace: `eth_getLogs` spans at most 1,000 blocks (wider ranges are refused),
    /// `safe` = confirmed by PoW and `finalized` = PoS finality (hundreds of epochs),
    /// `net_peerCount` may be missing, no blob (type-3) transactions. The node sends EIP-1559
    /// transactions, keeps gas limits tight (Conflux charges at least ¾ of the limit: see
    /// [`ChainProfile::gas_headroom_percent`]) and no lower than the calldata floor (see
    /// [`ChainProfile::calldata_gas_floor`]), and checks the log range fits.
    ConfluxEspace,
}

impl ChainProfile {
    /// The widest `eth_getLogs` range the chain's RPCs accept, if limited.
    pub fn max_log_range(self) -> Option<u64> {
        match self {
            Self::Generic => None,
            Self::ConfluxEspace => Some(1_000),
        }
    }

    /// The margin, in percent, a gas limit is sent with over the call's estimate. Generic:
    /// 20 (an estimate is the least gas the call succeeds with). Conflux: 10 — its
    /// `eth_estimateGas` already adds a sixth to what the call needs, and it charges ¾ of the
    /// limit whenever more than a quarter is left unused: 20 % on top of its estimate (1.4 ×
    /// the gas used) was charged at 1.05 × the use, 10 % (1.28 ×) is charged the use.
    pub fn gas_headroom_percent(self) -> u64 {
        match self {
            Self::Generic => 20,
            Self::ConfluxEspace => 10,
        }
    }

    /// Whether an `execute` larger than any learned may be sent with an estimate on a line
    /// extended past the learned ones (see `pipeline::gas`). Not on Conflux: it charges ¾ of
    /// the limit whenever more than a quarter is left unused, and its estimates sit at the
    /// calldata floor or a sixth over the need — a line through them, steepened for safety,
    /// lands above both and is charged (seen: 456,222 gas charged for an 8-param `execute`
    /// against 408,300 at its floor). There a larger batch waits for Conflux's own estimate.
    pub fn extends_gas_estimates(self) -> bool {
        match self {
            Self::Generic => true,
            Self::ConfluxEspace => false,
        }
    }

    /// The least gas limit the chain accepts for a transaction carrying `calldata_len` bytes
    /// of input, where it has such a floor. Conflux (CIP-130, in force since hardfork v2.4):
    /// 100 gas per calldata byte — a transaction below it is refused ("intrinsic gas too
    /// low") and `eth_estimateGas` answers at least it. With the ¾-of-the-limit charge, a
    /// call whose calldata floor binds pays 75 gas per calldata byte, whatever it executes.
    pub fn calldata_gas_floor(self, calldata_len: usize) -> Option<u64> {
        match self {
            Self::Generic => None,
            Self::ConfluxEspace => Some(
                u64::try_from(calldata_len)
                    .unwrap_or(u64::MAX)
                    .saturating_mul(100),
            ),
        }
    }
}

/// One chain the node watches (as a source) and verifies on (as a destination).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ChainConfig {
    pub name: String,
    pub eid: u32,
    pub chain_id: u64,
    /// One or more JSON-RPC URLs; reads a signature depends on must be agreed by `rpc_quorum`.
    pub rpc: Vec<String>,
    /// How many RPC endpoints must return the same answer: a strict majority of `rpc`.
    /// Defaults to all of them.
    #[serde(default)]
    pub rpc_quorum: Option<usize>,
    /// Allow one endpoint (or `rpc_quorum: 1`) to decide alone what the node signs. Devnets
    /// only: in production a single poisoned provider could make the node sign a forgery.
    #[serde(default)]
    pub unsafe_single_rpc: bool,
    pub endpoint: Address,
    pub send_uln: Address,
    pub receive_uln: Address,
    /// Our DVN contract on this chain.
    pub dvn: Address,
    #[serde(default = "default_finality")]
    pub finality: Finality,
    /// The chain family (`generic`, `conflux-espace`): limits checked against its RPC quirks.
    #[serde(default)]
    pub profile: ChainProfile,
    /// Largest `eth_getLogs` block range (Conflux eSpace: 1000).
    #[serde(default = "default_max_log_range")]
    pub max_log_range: u64,
    /// How long the watcher waits before looking for new blocks once it has caught up.
    #[serde(default = "default_poll_interval_ms")]
    pub poll_interval_ms: u64,
    /// Most logs the providers return for one `eth_getLogs`: an answer of this size may have
    /// been truncated silently, so the range is split instead of trusted.
    #[serde(default = "default_max_logs_per_request")]
    pub max_logs_per_request: u64,
    /// Deepest reorg the watcher follows by itself (walking back to the common ancestor).
    /// A deeper one halts this chain's scan and pages: an incident, not a retry.
    #[serde(default = "default_max_reorg_depth")]
    pub max_reorg_depth: u64,
    /// First block to scan when the store has no cursor for this chain.
    #[serde(default)]
    pub start_block: u64,
    /// Per-request timeout.
    #[serde(default = "default_rpc_timeout_ms")]
    pub rpc_timeout_ms: u64,
    /// Conflux only: the Core-space RPC of the operator's Conflux node, which `dvn doctor`
    /// checks with `cfx_epochNumber` (eSpace RPCs do not show the node's own sync).
    #[serde(default)]
    pub conflux_core_rpc: Option<String>,
    /// A WebSocket endpoint whose new-heads stream wakes the watcher as soon as a block
    /// arrives (instead of at its next poll) and times the destination's blocks for batch
    /// closing. A hint only: nothing read from it is signed or trusted, and the poll still
    /// runs. Off when absent.
    #[serde(default)]
    pub ws: Option<String>,
    /// Submit packets on this chain through a `DVNDecompressor` (compact calldata) instead of
    /// calling the DVN directly. Off when absent.
    #[serde(default)]
    pub decompressor: Option<DecompressorConfig>,
}

/// A `DVNDecompressor` this region's submitter owns, holding `ADMIN_ROLE` on our DVN.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct DecompressorConfig {
    pub address: Address,
    /// Its index for our DVN (`dvns(index)`).
    #[serde(default)]
    pub dvn_index: u16,
    /// Its index for this chain's `receive_uln` (`targets(index)`).
    #[serde(default)]
    pub target_index: u8,
}

fn default_finality() -> Finality {
    Finality::Confirmations
}
fn default_max_log_range() -> u64 {
    1_000
}
fn default_max_logs_per_request() -> u64 {
    10_000
}
fn default_max_reorg_depth() -> u64 {
    64
}
fn default_poll_interval_ms() -> u64 {
    1_000
}
fn default_rpc_timeout_ms() -> u64 {
    10_000
}

impl ChainConfig {
    /// The effective RPC agreement threshold.
    pub fn quorum(&self) -> usize {
        self.rpc_quorum.unwrap_or(self.rpc.len())
    }
}

/// Another region's node.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PeerConfig {
    pub name: String,
    /// Base URL of its HTTP listener, e.g. `http://10.0.2.1:8080`.
    pub url: String,
    /// Its DVN signer address (must be in the on-chain signer set).
    pub signer: Address,
    /// The account its submitter sends `DVN.execute` from. When set, its claims on pending
    /// transactions count only for that account: a region can then hold packets back only
    /// with its own nonce, not with an account whose nonce never moves.
    #[serde(default)]
    pub submitter: Option<Address>,
}

impl PeerConfig {
    /// Whether a claim this peer made for `sender`'s transaction may count.
    pub fn may_claim_for(&self, sender: Address) -> bool {
        self.submitter.is_none_or(|own| own == sender)
    }
}

/// Where a secp256k1 key lives.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, tag = "kind", rename_all = "kebab-case")]
pub enum KeyConfig {
    /// An Ethereum keystore v3 JSON file, with its password from an env var or a file.
    Keystore {
        path: PathBuf,
        #[serde(default)]
        password_env: Option<String>,
        #[serde(default)]
        password_file: Option<PathBuf>,
    },
    /// A key in a PKCS#11 token (AWS CloudHSM, GCP Cloud HSM via kmsp11, SoftHSM, hardware
    /// HSMs), found by token and key label; the PIN comes from an env var or a file.
    Pkcs11 {
        module: PathBuf,
        token_label: String,
        key_label: String,
        #[serde(default)]
        pin_env: Option<String>,
        #[serde(default)]
        pin_file: Option<PathBuf>,
    },
    /// A key in AWS KMS (key spec `ECC_SECG_P256K1`, usage `SIGN_VERIFY`), by key id, ARN or
    /// alias. Credentials come from the standard AWS chain (env, profile, IRSA, instance role).
    AwsKms {
        key_id: String,
        /// Region; default from the AWS environment (`AWS_REGION`, profile).
        #[serde(default)]
        region: Option<String>,
        /// Endpoint override (VPC endpoint, FIPS endpoint, or a test stand-in).
        #[serde(default)]
        endpoint: Option<String>,
    },
    /// A GCP Cloud KMS / Cloud HSM key version (algorithm `EC_SIGN_SECP256K1_SHA256`).
    GcpKms {
        /// `projects/P/locations/L/keyRings/R/cryptoKeys/K/cryptoKeyVersions/N`.
        key_version: String,
        /// Service-account key file; default: the GCP default credential chain.
        #[serde(default)]
        credentials_file: Option<PathBuf>,
        /// Endpoint override; default `https://cloudkms.googleapis.com`.
        #[serde(default)]
        endpoint: Option<String>,
    },
    /// An Aliyun KMS key (key spec `EC_SECP256K1`, usage `SIGN/VERIFY`), signed requests with
    /// an access key (RAM user, or an STS role with a security token) from env vars.
    AliyunKms {
        key_id: String,
        key_version_id: String,
        /// Region id (e.g. `cn-hangzhou`): the endpoint is then `https://kms.<region>.aliyuncs.com`.
        #[serde(default)]
        region: Option<String>,
        /// Endpoint override (VPC gateway `https://kms-vpc.<region>.aliyuncs.com`, a test stand-in).
        #[serde(default)]
        endpoint: Option<String>,
        #[serde(default = "default_aliyun_key_id_env")]
        access_key_id_env: String,
        #[serde(default = "default_aliyun_secret_env")]
        access_key_secret_env: String,
        /// Env var with an STS security token, when the access key is temporary.
        #[serde(default)]
        security_token_env: Option<String>,
    },
    /// A hex private key in an environment variable: development and devnets only, refused
    /// unless `allow_plaintext` is set.
    Env {
        var: String,
        #[serde(default)]
        allow_plaintext: bool,
    },
}

fn default_aliyun_key_id_env() -> String {
    "ALIBABA_CLOUD_ACCESS_KEY_ID".into()
}
fn default_aliyun_secret_env() -> String {
    "ALIBABA_CLOUD_ACCESS_KEY_SECRET".into()
}

/// How every key call is bounded (both keys, every backend).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SigningConfig {
    /// Longest one HSM/KMS call may take before it counts as failed.
    #[serde(default = "default_sign_timeout_ms")]
    pub timeout_ms: u64,
    /// Tries per signature (the first included); only transient failures are retried.
    #[serde(default = "default_sign_attempts")]
    pub attempts: u32,
    /// How often an idle key is probed (one signature over a fixed health digest), so that
    /// `/ready` and the metrics know the HSM/KMS state without waiting for traffic.
    #[serde(default = "default_probe_secs")]
    pub probe_interval_secs: u64,
}

fn default_sign_timeout_ms() -> u64 {
    5_000
}
fn default_sign_attempts() -> u32 {
    3
}
fn default_probe_secs() -> u64 {
    15
}

impl Default for SigningConfig {
    fn default() -> Self {
        Self {
            timeout_ms: default_sign_timeout_ms(),
            attempts: default_sign_attempts(),
            probe_interval_secs: default_probe_secs(),
        }
    }
}

/// The account that sends `DVN.execute` on destinations (holds `ADMIN_ROLE`).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SubmitterConfig {
    pub key: KeyConfig,
    /// Most params in one `DVN.execute`. 100 by default: at 50 packets a block, 50 split a
    /// block's packets into two transactions whenever more became ready, each paying the
    /// transaction's fixed cost (about 33,000 gas on an L1 schedule).
    #[serde(default = "default_max_batch")]
    pub max_batch: usize,
    /// Longest a ready packet waits for others to join its batch. Within it, a batch closes
    /// once the destination's next block is due (`block_lead_ms` before it), so the wait
    /// never costs a block; this bound applies while the cadence is unknown or blocks stall.
    #[serde(default = "default_batch_wait_ms")]
    pub batch_wait_ms: u64,
    /// The most a batch closes before the destination's next block is due: time to check,
    /// estimate, sign and broadcast it, and for the transaction to reach the block producer.
    /// The lead in force is this node's longest recent closing → broadcast time plus
    /// `block_lead_margin_ms`, up to this (see `pipeline::batching::BlockLead`).
    #[serde(default = "default_block_lead_ms")]
    pub block_lead_ms: u64,
    /// Added to the measured closing → broadcast time for the lead: the way from broadcast
    /// to the block producer. Doubled for a while after a batch misses its block. At or
    /// above `block_lead_ms` the lead is fixed at `block_lead_ms`.
    #[serde(default = "default_block_lead_margin_ms")]
    pub block_lead_margin_ms: u64,
    /// Gas ceiling for one `execute` transaction; batches are split below it.
    #[serde(default = "default_max_batch_gas")]
    pub max_batch_gas: u64,
    /// Most `execute` transactions in flight at once per destination (consecutive nonces).
    /// Only a full batch goes out behind another: this is what drains a backlog.
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: usize,
    /// How long the designated submitter has before the next region takes over.
    #[serde(default = "default_takeover_secs")]
    pub takeover_after_secs: u64,
    /// A transaction not mined after this long is re-sent with higher fees.
    #[serde(default = "default_stuck_secs")]
    pub replace_after_secs: u64,
    /// Most fee bumps for one transaction.
    #[serde(default = "default_max_replacements")]
    pub max_replacements: u32,
    /// Highest `maxFeePerGas` the node will pay, in gwei.
    #[serde(default = "default_max_fee_gwei")]
    pub max_fee_gwei: u64,
}

fn default_max_batch() -> usize {
    100
}
fn default_batch_wait_ms() -> u64 {
    1_000
}
fn default_block_lead_ms() -> u64 {
    500
}
fn default_block_lead_margin_ms() -> u64 {
    150
}
fn default_max_in_flight() -> usize {
    4
}
fn default_max_batch_gas() -> u64 {
    10_000_000
}
fn default_takeover_secs() -> u64 {
    // Longer than a couple of fee bumps: the designated region should land its transaction
    // before anyone else sends a second one (verify has no on-chain replay protection).
    60
}
fn default_stuck_secs() -> u64 {
    20
}
fn default_max_replacements() -> u32 {
    5
}
fn default_max_fee_gwei() -> u64 {
    500
}

/// How the node signs.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct VerificationConfig {
    /// Lifetime of a signed param, anchored at the source block's timestamp (see
    /// `pipeline::expiration`). Capped by the validator: stolen signatures must not live long.
    #[serde(default = "default_expiration_secs")]
    pub expiration_secs: u64,
    /// How often pending work is re-examined even without a wake-up.
    #[serde(default = "default_tick_ms")]
    pub tick_ms: u64,
}

fn default_expiration_secs() -> u64 {
    3_600
}
fn default_tick_ms() -> u64 {
    500
}

impl Default for VerificationConfig {
    fn default() -> Self {
        Self {
            expiration_secs: default_expiration_secs(),
            tick_ms: default_tick_ms(),
        }
    }
}

/// Why a configuration could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("invalid configuration:\n{}", .0.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n"))]
    Invalid(Vec<validate::Problem>),
}

impl Config {
    /// Reads `path`, applies the environment overrides, validates.
    /// SHA-256 of the configuration as loaded (env overrides applied), hex: which
    /// configuration a node ran with, for the audit log, without recording its contents.
    pub fn digest(&self) -> String {
        use sha2::Digest;
        let text = serde_json::to_string(self).unwrap_or_default();
        alloy::primitives::hex::encode(sha2::Sha256::digest(text.as_bytes()))
    }

    /// The top-level sections of `new` that differ from this configuration, except those a
    /// running node can take without a restart (`governor`).
    pub fn needs_restart_for(&self, new: &Config) -> Vec<String> {
        let (Ok(serde_json::Value::Object(old)), Ok(serde_json::Value::Object(new))) =
            (serde_json::to_value(self), serde_json::to_value(new))
        else {
            return vec!["(unreadable)".into()];
        };
        let mut keys: Vec<&String> = old.keys().chain(new.keys()).collect();
        keys.sort();
        keys.dedup();
        keys.into_iter()
            .filter(|k| k.as_str() != "governor" && old.get(*k) != new.get(*k))
            .cloned()
            .collect()
    }

    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let mut config: Config = serde_norway::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        let mut problems = env::apply(&mut config, &env::process_env());
        problems.extend(validate::validate(&config));
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(ConfigError::Invalid(problems))
        }
    }

    /// The chain with `eid`.
    pub fn chain(&self, eid: u32) -> Option<&ChainConfig> {
        self.chains.iter().find(|c| c.eid == eid)
    }

    /// All regions' names, this node included, sorted: the submitter rotation order.
    pub fn regions(&self) -> Vec<String> {
        let mut names: Vec<String> = self.peers.iter().map(|p| p.name.clone()).collect();
        names.push(self.node.name.clone());
        names.sort();
        names
    }

    /// Whether a claim made by the region `peer` for `sender`'s transaction may count (see
    /// [`PeerConfig::submitter`]); a name that is no configured peer may claim nothing.
    pub fn peer_may_claim(&self, peer: &str, sender: Address) -> bool {
        match self.peers.iter().find(|p| p.name == peer) {
            Some(config) => config.may_claim_for(sender),
            // Plain-HTTP devnets carry no certificate name.
            None => peer == "peer" && self.tls.is_none(),
        }
    }

    /// This node's index in [`Config::regions`] (its place in the submitter rotation).
    pub fn region_index(&self) -> usize {
        self.regions()
            .iter()
            .position(|r| *r == self.node.name)
            .unwrap_or(0)
    }
}
