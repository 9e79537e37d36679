//! One validator for the whole configuration, used at startup and by `dvn config check`.
//! It collects every problem with the path of the field, instead of stopping at the first.

use std::collections::HashSet;
use std::fmt;

use alloy::primitives::Address;

use super::{Config, KeyConfig};

/// Longest accepted `verification.expiration_secs`: a leaked signature stays usable until its
/// expiration, so it must not live for days.
pub const MAX_EXPIRATION_SECS: u64 = 86_400;
/// Shortest accepted expiration: a param must survive aggregation and inclusion.
pub const MIN_EXPIRATION_SECS: u64 = 60;

/// Most accepted `submitter.max_in_flight`: each transaction in flight is nursed every step.
pub const MAX_IN_FLIGHT: usize = 16;

/// Most params `DVNDecompressor.execute` takes (its count field is one byte).
pub const MAX_COMPRESSED_PARAMS: usize = 255;

/// One thing wrong with the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Where: `chains[1].rpc_quorum`, `peers[0].signer`, or an env var name.
    pub path: String,
    pub message: String,
}

impl Problem {
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Every problem in `config`; empty when it is usable.
pub fn validate(config: &Config) -> Vec<Problem> {
    let mut out = Vec::new();
    let mut problem = |path: String, message: String| out.push(Problem { path, message });

    if config.node.name.trim().is_empty() {
        problem("node.name".into(), "must not be empty".into());
    }
    let url = &config.store.url;
    if !(url.starts_with("sqlite:")
        || url.starts_with("postgres://")
        || url.starts_with("postgresql://"))
    {
        problem(
            "store.url".into(),
            "must start with sqlite: or postgres://".into(),
        );
    }

    if config.chains.len() < 2 {
        problem(
            "chains".into(),
            format!("need at least 2 chains, got {}", config.chains.len()),
        );
    }
    let mut eids = HashSet::new();
    let mut names = HashSet::new();
    for (i, chain) in config.chains.iter().enumerate() {
        let at = |field: &str| format!("chains[{i}].{field}");
        if !eids.insert(chain.eid) {
            problem(at("eid"), format!("eid {} appears twice", chain.eid));
        }
        if chain.eid == 0 {
            problem(at("eid"), "must not be 0".into());
        }
        if let Some(d) = &chain.decompressor {
            if d.address == Address::ZERO {
                problem(
                    at("decompressor.address"),
                    "must not be the zero address".into(),
                );
            }
            if config.submitter.max_batch > MAX_COMPRESSED_PARAMS {
                problem(
                    at("decompressor"),
                    format!(
                        "a compressed execute carries at most {MAX_COMPRESSED_PARAMS} params: set submitter.max_batch to {MAX_COMPRESSED_PARAMS} or less"
                    ),
                );
            }
        }
        if !names.insert(chain.name.clone()) {
            problem(
                at("name"),
                format!("chain name {:?} appears twice", chain.name),
            );
        }
        if chain.rpc.is_empty() {
            problem(at("rpc"), "needs at least one URL".into());
        }
        let mut urls = HashSet::new();
        for (j, rpc) in chain.rpc.iter().enumerate() {
            if !(rpc.starts_with("http://") || rpc.starts_with("https://")) {
                problem(
                    format!("chains[{i}].rpc[{j}]"),
                    "must be an http(s) URL".into(),
                );
            }
            if !urls.insert(rpc.trim_end_matches('/').to_ascii_lowercase()) {
                problem(
                    format!("chains[{i}].rpc[{j}]"),
                    "duplicate URL: the same endpoint cannot count twice towards rpc_quorum".into(),
                );
            }
        }
        if let Some(ws) = &chain.ws {
            if !(ws.starts_with("ws://") || ws.starts_with("wss://"))
                || reqwest::Url::parse(ws).is_err()
            {
                problem(at("ws"), "must be a ws(s) URL".into());
            }
        }
        match chain.rpc_quorum {
            Some(0) => problem(at("rpc_quorum"), "must be at least 1".into()),
            Some(q) if q > chain.rpc.len() => problem(
                at("rpc_quorum"),
                format!("{q} exceeds the {} configured RPC URLs", chain.rpc.len()),
            ),
            Some(q) if q * 2 <= chain.rpc.len() => problem(
                at("rpc_quorum"),
                format!(
                    "{q} of {} is not a strict majority: two disjoint sets of endpoints could each \
                     agree on a different answer (use at least {})",
                    chain.rpc.len(),
                    chain.rpc.len() / 2 + 1
                ),
            ),
            _ => {}
        }
        if (chain.rpc.len() == 1 || chain.quorum() == 1) && !chain.unsafe_single_rpc {
            problem(
                at("rpc"),
                "a single RPC endpoint (or rpc_quorum 1) lets one provider decide what the node \
                 signs: configure three independent endpoints with rpc_quorum 2, or set \
                 unsafe_single_rpc: true (devnets only)"
                    .into(),
            );
        }
        for (field, address) in [
            ("endpoint", chain.endpoint),
            ("send_uln", chain.send_uln),
            ("receive_uln", chain.receive_uln),
            ("dvn", chain.dvn),
        ] {
            if address == Address::ZERO {
                problem(at(field), "must not be the zero address".into());
            }
        }
        if let Some(limit) = chain.profile.max_log_range() {
            if chain.max_log_range > limit {
                problem(
                    at("max_log_range"),
                    format!(
                        "{} exceeds the {limit} blocks this chain's RPCs accept per eth_getLogs",
                        chain.max_log_range
                    ),
                );
            }
        }
        if chain.max_logs_per_request < 2 {
            problem(at("max_logs_per_request"), "must be at least 2".into());
        }
        if chain.max_reorg_depth == 0 {
            problem(at("max_reorg_depth"), "must be at least 1".into());
        }
        if chain.max_log_range == 0 {
            problem(at("max_log_range"), "must be at least 1".into());
        }
        if chain.poll_interval_ms == 0 {
            problem(at("poll_interval_ms"), "must be at least 1".into());
        }
        if chain.rpc_timeout_ms == 0 {
            problem(at("rpc_timeout_ms"), "must be at least 1".into());
        }
    }

    let mut peer_names = HashSet::from([config.node.name.clone()]);
    let mut signers = HashSet::new();
    for (i, peer) in config.peers.iter().enumerate() {
        if !peer_names.insert(peer.name.clone()) {
            problem(
                format!("peers[{i}].name"),
                format!("{:?} is not unique (node.name included)", peer.name),
            );
        }
        if !(peer.url.starts_with("http://") || peer.url.starts_with("https://")) {
            problem(format!("peers[{i}].url"), "must be an http(s) URL".into());
        } else if config.tls.is_some() && !peer.url.starts_with("https://") {
            problem(
                format!("peers[{i}].url"),
                "must be https:// (the peer API uses mutual TLS)".into(),
            );
        }
        if peer.signer == Address::ZERO || !signers.insert(peer.signer) {
            problem(
                format!("peers[{i}].signer"),
                "must be a distinct non-zero address".into(),
            );
        }
        if peer.submitter == Some(Address::ZERO) {
            problem(
                format!("peers[{i}].submitter"),
                "must be a non-zero address (or left out)".into(),
            );
        }
    }

    match (&config.tls, config.unsafe_plaintext_peers) {
        (Some(_), true) => problem(
            "unsafe_plaintext_peers".into(),
            "cannot be set together with tls".into(),
        ),
        (Some(tls), false) => {
            if config.node.peer_listen.is_none() {
                problem(
                    "node.peer_listen".into(),
                    "required with tls: the peer API gets its own listener".into(),
                );
            }
            for field in tls.unnamed_files() {
                problem(format!("tls.{field}"), "must name a PEM file".into());
            }
        }
        (None, false) if !config.peers.is_empty() => problem(
            "tls".into(),
            "the peer API between regions needs mutual TLS (ca, cert, key): set tls, or \
             unsafe_plaintext_peers: true on a devnet"
                .into(),
        ),
        (None, _) => {}
    }
    if config.node.peer_listen.is_some() && config.node.peer_listen == Some(config.node.listen) {
        problem(
            "node.peer_listen".into(),
            "must differ from node.listen (operations and peers are separate listeners)".into(),
        );
    }

    let admin = &config.admin;
    match (&admin.listen, &admin.tls) {
        (Some(listen), Some(tls)) => {
            if Some(*listen) == config.node.peer_listen || *listen == config.node.listen {
                problem(
                    "admin.listen".into(),
                    "must differ from node.listen and node.peer_listen".into(),
                );
            }
            for field in tls.unnamed_files() {
                problem(format!("admin.tls.{field}"), "must name a PEM file".into());
            }
            if admin.clients.is_empty() {
                problem(
                    "admin.clients".into(),
                    "name at least one client certificate (its DNS name)".into(),
                );
            }
        }
        (Some(_), None) => problem(
            "admin.tls".into(),
            "required with admin.listen: the admin listener is mutual TLS only".into(),
        ),
        (None, Some(_)) => problem(
            "admin.listen".into(),
            "required with admin.tls (the listener the admin API moves to)".into(),
        ),
        (None, None) if !admin.clients.is_empty() => problem(
            "admin.clients".into(),
            "only with admin.listen and admin.tls".into(),
        ),
        (None, None) => {}
    }
    for (i, name) in admin.clients.iter().enumerate() {
        if rustls::pki_types::ServerName::try_from(name.as_str()).is_err() {
            problem(
                format!("admin.clients[{i}]"),
                "must be a DNS name (the client certificate's subject alternative name)".into(),
            );
        }
    }

    if config.audit.checkpoint_interval_secs == 0 {
        problem(
            "audit.checkpoint_interval_secs".into(),
            "must be at least 1".into(),
        );
    }

    for (list, rules) in [
        ("allow", &config.governor.allow),
        ("deny", &config.governor.deny),
    ] {
        for (i, rule) in rules.iter().enumerate() {
            let at = format!("governor.{list}[{i}]");
            if *rule == crate::config::PathRule::default() {
                problem(
                    at.clone(),
                    "names nothing: give src, dst, sender or receiver".into(),
                );
            }
            for (field, chain) in [("src", &rule.src), ("dst", &rule.dst)] {
                if let Some(chain) = chain {
                    let known = config
                        .chains
                        .iter()
                        .any(|c| c.name == *chain || c.eid.to_string() == *chain);
                    if !known {
                        problem(
                            format!("{at}.{field}"),
                            format!("{chain} is not a configured chain name or eid"),
                        );
                    }
                }
            }
        }
    }

    for (i, target) in config.backup.remote.iter().enumerate() {
        if let Err(e) = crate::backup::remote::check_target(target) {
            problem(format!("backup.remote[{i}]"), e.to_string());
        }
    }
    if config.backup.keep_days == Some(0) {
        problem(
            "backup.keep_days".into(),
            "must be at least 1 (0 would delete the backup just made)".into(),
        );
    }

    check_key(&mut problem, "signer", &config.signer);
    if let Some(next) = &config.signer_next {
        check_key(&mut problem, "signer_next", next);
        if next == &config.signer {
            problem(
                "signer_next".into(),
                "is the same key as signer: a rotation needs a new key".into(),
            );
        }
    }
    check_key(&mut problem, "submitter.key", &config.submitter.key);
    let submitter = &config.submitter;
    if submitter.max_batch == 0 {
        problem("submitter.max_batch".into(), "must be at least 1".into());
    }
    if !(1..=MAX_IN_FLIGHT).contains(&submitter.max_in_flight) {
        problem(
            "submitter.max_in_flight".into(),
            format!("must be between 1 and {MAX_IN_FLIGHT}"),
        );
    }
    if submitter.max_batch_gas < 100_000 {
        problem(
            "submitter.max_batch_gas".into(),
            "must be at least 100000".into(),
        );
    }
    if submitter.block_lead_ms > 60_000 {
        problem(
            "submitter.block_lead_ms".into(),
            "at most 60000 (a minute before a block is due)".into(),
        );
    }
    if submitter.takeover_after_secs == 0 {
        problem(
            "submitter.takeover_after_secs".into(),
            "must be at least 1".into(),
        );
    }
    if submitter.replace_after_secs == 0 {
        problem(
            "submitter.replace_after_secs".into(),
            "must be at least 1".into(),
        );
    }
    if submitter.max_fee_gwei == 0 {
        problem("submitter.max_fee_gwei".into(), "must be at least 1".into());
    }
    let ttl = config.verification.expiration_secs;
    if !(MIN_EXPIRATION_SECS..=MAX_EXPIRATION_SECS).contains(&ttl) {
        problem(
            "verification.expiration_secs".into(),
            format!("{ttl} is outside {MIN_EXPIRATION_SECS}..={MAX_EXPIRATION_SECS}"),
        );
    }
    if let Some(redis) = &config.redis {
        if !(redis.url.starts_with("redis://") || redis.url.starts_with("rediss://")) {
            problem(
                "redis.url".into(),
                "must start with redis:// or rediss://".into(),
            );
        }
        if redis.lease_ttl_ms < 1_000 {
            problem("redis.lease_ttl_ms".into(), "must be at least 1000".into());
        }
    }
    let signing = &config.signing;
    if !(100..=60_000).contains(&signing.timeout_ms) {
        problem(
            "signing.timeout_ms".into(),
            "must be within 100..=60000".into(),
        );
    }
    if !(1..=10).contains(&signing.attempts) {
        problem("signing.attempts".into(), "must be within 1..=10".into());
    }
    if signing.probe_interval_secs == 0 {
        problem(
            "signing.probe_interval_secs".into(),
            "must be at least 1".into(),
        );
    }
    if config.verification.tick_ms == 0 {
        problem("verification.tick_ms".into(), "must be at least 1".into());
    }
    out
}

fn check_key(problem: &mut impl FnMut(String, String), at: &str, key: &KeyConfig) {
    match key {
        KeyConfig::Keystore {
            password_env,
            password_file,
            ..
        } => {
            if password_env.is_some() == password_file.is_some() {
                problem(
                    format!("{at}.password_env"),
                    "set exactly one of password_env and password_file".into(),
                );
            }
        }
        KeyConfig::Pkcs11 {
            module,
            token_label,
            key_label,
            pin_env,
            pin_file,
        } => {
            if module.as_os_str().is_empty() {
                problem(
                    format!("{at}.module"),
                    "must name the PKCS#11 library".into(),
                );
            }
            if token_label.is_empty() {
                problem(format!("{at}.token_label"), "must not be empty".into());
            }
            if key_label.is_empty() {
                problem(format!("{at}.key_label"), "must not be empty".into());
            }
            if pin_env.is_some() == pin_file.is_some() {
                problem(
                    format!("{at}.pin_env"),
                    "set exactly one of pin_env and pin_file".into(),
                );
            }
        }
        KeyConfig::AwsKms { key_id, .. } => {
            if key_id.trim().is_empty() {
                problem(format!("{at}.key_id"), "must name the KMS key".into());
            }
            if !cfg!(feature = "aws-kms") {
                problem(
                    format!("{at}.kind"),
                    "this dvn was built without the aws-kms feature".into(),
                );
            }
        }
        KeyConfig::GcpKms { key_version, .. } => {
            if !cfg!(feature = "gcp-kms") {
                problem(
                    format!("{at}.kind"),
                    "this dvn was built without the gcp-kms feature".into(),
                );
            }
            let parts: Vec<&str> = key_version.split('/').collect();
            if parts.len() != 10
                || parts[0] != "projects"
                || parts[8] != "cryptoKeyVersions"
                || parts.iter().any(|p| p.is_empty())
            {
                problem(
                    format!("{at}.key_version"),
                    "must be projects/P/locations/L/keyRings/R/cryptoKeys/K/cryptoKeyVersions/N"
                        .into(),
                );
            }
        }
        KeyConfig::AliyunKms {
            key_id,
            key_version_id,
            region,
            endpoint,
            ..
        } => {
            if key_id.trim().is_empty() {
                problem(format!("{at}.key_id"), "must name the KMS key".into());
            }
            if key_version_id.trim().is_empty() {
                problem(
                    format!("{at}.key_version_id"),
                    "must name the key version".into(),
                );
            }
            if region.is_none() && endpoint.is_none() {
                problem(
                    format!("{at}.region"),
                    "set region (or an endpoint) for Aliyun KMS".into(),
                );
            }
        }
        KeyConfig::Env {
            var,
            allow_plaintext,
        } => {
            if var.trim().is_empty() {
                problem(
                    format!("{at}.var"),
                    "must name an environment variable".into(),
                );
            }
            if !allow_plaintext {
                problem(
                    format!("{at}.allow_plaintext"),
                    "a plaintext key from the environment is for devnets only: set allow_plaintext: true to accept it".into(),
                );
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::config::Config;

    pub(crate) const SAMPLE: &str = r#"
node:
  name: aws
  listen: 127.0.0.1:8080
  peer_listen: 127.0.0.1:8443
tls:
  ca: /etc/dvn/tls/ca.pem
  cert: /etc/dvn/tls/aws.pem
  key: /etc/dvn/tls/aws.key
store:
  url: sqlite://dvn.db
chains:
  - name: ethereum
    eid: 30101
    chain_id: 1
    rpc: [http://127.0.0.1:8545, http://127.0.0.1:8548, http://127.0.0.1:8549]
    rpc_quorum: 2
    endpoint: "0x1a44076050125825900e736c501f859c50fE728c"
    send_uln: "0xbB2Ea70C9E858123480642Cf96acbcCE1372dCe1"
    receive_uln: "0xc02Ab410f0734EFa3F14628780e6e695156024C2"
    dvn: "0x589dEDbD617e0CBcB916A9223F4d1300c294236b"
  - name: conflux-espace
    eid: 30212
    chain_id: 1030
    rpc: [http://127.0.0.1:8546, http://127.0.0.1:8547, http://127.0.0.1:8550]
    endpoint: "0x1a44076050125825900e736c501f859c50fE728c"
    send_uln: "0xbB2Ea70C9E858123480642Cf96acbcCE1372dCe1"
    receive_uln: "0xc02Ab410f0734EFa3F14628780e6e695156024C2"
    dvn: "0x589dEDbD617e0CBcB916A9223F4d1300c294236b"
    max_log_range: 1000
peers:
  - name: aliyun
    url: https://127.0.0.1:8081
    signer: "0x0000000000000000000000000000000000000002"
  - name: gcp
    url: https://127.0.0.1:8082
    signer: "0x0000000000000000000000000000000000000003"
signer:
  kind: env
  var: DVN_SIGNER_KEY
  allow_plaintext: true
submitter:
  key:
    kind: env
    var: DVN_SUBMITTER_KEY
    allow_plaintext: true
"#;

    pub(crate) fn sample_config() -> Config {
        serde_norway::from_str(SAMPLE).unwrap()
    }

    #[test]
    fn the_sample_is_valid_and_defaults_apply() {
        let config = sample_config();
        assert_eq!(validate(&config), vec![]);
        assert_eq!(config.chains[0].quorum(), 2);
        assert_eq!(config.chains[1].quorum(), 3, "all endpoints by default");
        assert_eq!(config.submitter.max_batch, 100);
        assert_eq!(config.regions(), vec!["aliyun", "aws", "gcp"]);
    }

    #[test]
    fn a_peer_with_a_configured_submitter_claims_only_for_that_account() {
        let mut config = sample_config();
        let own = Address::repeat_byte(0x22);
        config.peers[0].submitter = Some(own);
        assert!(config.peer_may_claim("aliyun", own));
        assert!(!config.peer_may_claim("aliyun", Address::repeat_byte(0x99)));
        assert!(
            config.peer_may_claim("gcp", Address::repeat_byte(0x99)),
            "no submitter configured: any account"
        );
        assert!(
            !config.peer_may_claim("azure", own),
            "a name that is no peer claims nothing"
        );
        assert!(
            !config.peer_may_claim("peer", own),
            "the plain-HTTP placeholder only without TLS"
        );
        assert_eq!(config.region_index(), 1, "aws in aliyun, aws, gcp");
        config.peers[1].submitter = Some(Address::ZERO);
        let paths: Vec<String> = validate(&config).into_iter().map(|p| p.path).collect();
        assert_eq!(paths, vec!["peers[1].submitter"]);
    }

    #[test]
    fn every_problem_is_reported_with_its_path() {
        let mut config = sample_config();
        config.chains[1].rpc_quorum = Some(4);
        config.chains[1].rpc[1] = config.chains[1].rpc[0].clone();
        config.chains[0].dvn = Address::ZERO;
        config.peers[1].name = "aws".into();
        config.verification.expiration_secs = 30 * 86_400;
        let paths: Vec<String> = validate(&config).into_iter().map(|p| p.path).collect();
        assert_eq!(
            paths,
            vec![
                "chains[0].dvn",
                "chains[1].rpc[1]",
                "chains[1].rpc_quorum",
                "peers[1].name",
                "verification.expiration_secs"
            ]
        );
    }

    #[test]
    fn a_new_heads_stream_must_be_a_websocket_url() {
        let paths = |ws: &str| {
            let mut config = sample_config();
            config.chains[0].ws = Some(ws.into());
            validate(&config)
                .into_iter()
                .map(|p| p.path)
                .collect::<Vec<_>>()
        };
        assert!(paths("wss://eth.example/KEY").is_empty());
        assert!(paths("ws://127.0.0.1:8546").is_empty());
        assert_eq!(paths("https://eth.example"), vec!["chains[0].ws"]);
        assert_eq!(paths("ws://"), vec!["chains[0].ws"]);
    }

    #[test]
    fn an_admin_listener_is_mutual_tls_with_named_clients_on_its_own_port() {
        let paths = |edit: &dyn Fn(&mut Config)| {
            let mut config = sample_config();
            edit(&mut config);
            validate(&config)
                .into_iter()
                .map(|p| p.path)
                .collect::<Vec<_>>()
        };
        let tls = || crate::config::TlsConfig {
            ca: "/etc/dvn/admin/ca.pem".into(),
            cert: "/etc/dvn/admin/aws.pem".into(),
            key: "/etc/dvn/admin/aws.key".into(),
        };
        let listen = "127.0.0.1:9443".parse().unwrap();
        assert_eq!(
            paths(&|c| {
                c.admin.listen = Some(listen);
                c.admin.tls = Some(tls());
                c.admin.clients = vec!["alice".into()];
            }),
            Vec::<String>::new()
        );
        assert_eq!(paths(&|c| c.admin.listen = Some(listen)), vec!["admin.tls"]);
        assert_eq!(paths(&|c| c.admin.tls = Some(tls())), vec!["admin.listen"]);
        assert_eq!(
            paths(&|c| {
                c.admin.listen = Some(c.node.listen);
                c.admin.tls = Some(tls());
                c.admin.clients = vec!["not a name".into()];
            }),
            vec!["admin.listen", "admin.clients[0]"]
        );
        assert_eq!(
            paths(&|c| {
                c.admin.listen = Some(listen);
                c.admin.tls = Some(tls());
            }),
            vec!["admin.clients"]
        );
    }

    #[test]
    fn rpc_agreement_must_be_a_strict_majority_and_single_endpoints_are_opt_in() {
        let problems = |edit: &dyn Fn(&mut Config)| {
            let mut config = sample_config();
            edit(&mut config);
            validate(&config)
                .into_iter()
                .map(|p| format!("{}: {}", p.path, p.message))
                .collect::<Vec<_>>()
        };
        let minority = problems(&|c| c.chains[0].rpc_quorum = Some(1));
        assert!(
            minority
                .iter()
                .any(|p| p.starts_with("chains[0].rpc_quorum") && p.contains("strict majority")),
            "{minority:?}"
        );
        assert!(
            minority
                .iter()
                .any(|p| p.starts_with("chains[0].rpc:") && p.contains("unsafe_single_rpc")),
            "{minority:?}"
        );
        let single = problems(&|c| {
            c.chains[1].rpc.truncate(1);
            c.chains[1].rpc_quorum = None;
        });
        assert_eq!(single.len(), 1, "{single:?}");
        assert!(single[0].starts_with("chains[1].rpc:"), "{single:?}");
        let opted_in = problems(&|c| {
            c.chains[1].rpc.truncate(1);
            c.chains[1].rpc_quorum = None;
            c.chains[1].unsafe_single_rpc = true;
        });
        assert_eq!(opted_in, Vec::<String>::new());
        let conflux = problems(&|c| {
            c.chains[1].profile = crate::config::ChainProfile::ConfluxEspace;
            c.chains[1].max_log_range = 5_000;
        });
        assert!(
            conflux
                .iter()
                .any(|p| p.starts_with("chains[1].max_log_range") && p.contains("1000 blocks")),
            "{conflux:?}"
        );
        let half = problems(&|c| {
            c.chains[1].rpc.push("http://127.0.0.1:8551".into());
            c.chains[1].rpc_quorum = Some(2);
        });
        assert!(
            half.iter()
                .any(|p| p.contains("2 of 4 is not a strict majority")),
            "{half:?}"
        );
    }

    #[test]
    fn unknown_fields_are_rejected_by_the_parser() {
        let text = SAMPLE.replace(
            "  listen: 127.0.0.1:8080",
            "  listen: 127.0.0.1:8080\n  colour: blue",
        );
        let err = serde_norway::from_str::<Config>(&text)
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown field `colour`"), "{err}");
    }

    #[test]
    fn a_plaintext_env_key_needs_the_explicit_flag() {
        let text = SAMPLE.replacen("  allow_plaintext: true\n", "", 1);
        let config: Config = serde_norway::from_str(&text).unwrap();
        let problems = validate(&config);
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].path, "signer.allow_plaintext");
    }
}
