//! `dvn doctor`: the operator manual's daily checklist (8.8) and troubleshooting tree (8.3.1)
//! as one command. It walks the tree in order — is the node running? → errors by kind (HSM /
//! RPC / signing / other) → network (peers) → resources (disk) — and prints, for each failed
//! check, what is wrong, the likely cause and the fix, with the manual's severity. The exit
//! code is the worst severity: 0 all passed, 1 P3, 2 P2, 3 P1, 4 P0.

use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_json::Value;

use super::prom;
use crate::config::Config;

/// The manual's response levels (8.4.1), worst last.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub enum Severity {
    P3,
    P2,
    P1,
    P0,
}

impl Severity {
    pub fn exit_code(worst: Option<Self>) -> u8 {
        match worst {
            None => 0,
            Some(Self::P3) => 1,
            Some(Self::P2) => 2,
            Some(Self::P1) => 3,
            Some(Self::P0) => 4,
        }
    }
}

/// One check's outcome.
#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    pub check: String,
    pub ok: bool,
    pub severity: Option<Severity>,
    pub finding: String,
    pub cause: Option<String>,
    pub fix: Option<String>,
}

impl Finding {
    fn pass(check: impl Into<String>, finding: impl Into<String>) -> Self {
        Self {
            check: check.into(),
            ok: true,
            severity: None,
            finding: finding.into(),
            cause: None,
            fix: None,
        }
    }

    fn fail(
        check: impl Into<String>,
        severity: Severity,
        finding: impl Into<String>,
        cause: impl Into<String>,
        fix: impl Into<String>,
    ) -> Self {
        Self {
            check: check.into(),
            ok: false,
            severity: Some(severity),
            finding: finding.into(),
            cause: Some(cause.into()),
            fix: Some(fix.into()),
        }
    }
}

/// Thresholds and optional inputs (defaults are the manual's expectations).
#[derive(Debug, Clone)]
pub struct DoctorOptions {
    pub node_url: String,
    pub backlog_threshold: i64,
    pub latency_threshold_secs: f64,
    pub disk_threshold_pct: f64,
    pub min_balance_eth: f64,
    pub alertmanager: Option<String>,
    pub certs: Vec<PathBuf>,
    /// The operator has told the 1-of-1 OApps' owners and accepts serving them: the check
    /// passes, still naming the count.
    pub accept_sole_verifier: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub node: String,
    pub findings: Vec<Finding>,
    pub worst: Option<Severity>,
}

impl Report {
    pub fn exit_code(&self) -> u8 {
        Severity::exit_code(self.worst)
    }

    /// The human-readable form.
    pub fn render(&self) -> String {
        let mut out = format!("dvn doctor — node {}\n", self.node);
        for f in &self.findings {
            let mark = if f.ok { "ok  " } else { "FAIL" };
            let severity = f.severity.map(|s| format!(" [{s:?}]")).unwrap_or_default();
            out.push_str(&format!("{mark} {:<22}{severity} {}\n", f.check, f.finding));
            if let Some(cause) = &f.cause {
                out.push_str(&format!("       cause: {cause}\n"));
            }
            if let Some(fix) = &f.fix {
                out.push_str(&format!("       fix:   {fix}\n"));
            }
        }
        let failed = self.findings.iter().filter(|f| !f.ok).count();
        out.push_str(&match self.worst {
            None => format!("all {} checks passed\n", self.findings.len()),
            Some(worst) => format!("{failed} check(s) failed; worst {worst:?}\n"),
        });
        out
    }
}

/// One JSON-RPC call to one endpoint, through alloy's client (no retry, no quorum: the doctor
/// reports each endpoint on its own). Errors never carry the URL: it may hold an API key.
async fn rpc(http: &reqwest::Client, url: &str, method: &'static str) -> Result<Value, String> {
    let url: reqwest::Url = url.parse().map_err(|_| "not a URL".to_string())?;
    let client = alloy::rpc::client::RpcClient::new_http_with_client(http.clone(), url);
    client
        .request_noparams::<Value>(method)
        .await
        .map_err(|e| crate::chain::redact(&e.to_string()))
}

fn hex_u64(value: &Value) -> Option<u64> {
    u64::from_str_radix(value.as_str()?.trim_start_matches("0x"), 16).ok()
}

/// Block sync of each chain, read from every configured endpoint (by index, never the URL).
async fn check_chains(http: &reqwest::Client, config: &Config, out: &mut Vec<Finding>) {
    for chain in &config.chains {
        let check = format!("block sync: {}", chain.name);
        let needed = chain.rpc_quorum.unwrap_or(chain.rpc.len());
        let mut healthy = 0;
        let mut problems = Vec::new();
        let mut heads = Vec::new();
        for (i, url) in chain.rpc.iter().enumerate() {
            let id = rpc(http, url, "eth_chainId").await;
            let head = rpc(http, url, "eth_blockNumber").await;
            let syncing = rpc(http, url, "eth_syncing").await;
            match (id, head, syncing) {
                (Ok(id), Ok(head), Ok(syncing)) => {
                    if hex_u64(&id) != Some(chain.chain_id) {
                        problems.push(format!("rpc[{i}] reports chain id {id}"));
                    } else if syncing != Value::Bool(false) {
                        problems.push(format!("rpc[{i}] is syncing ({syncing})"));
                    } else {
                        healthy += 1;
                        heads.push(hex_u64(&head).unwrap_or(0));
                    }
                    // Peer count where the node exposes it (providers often do not).
                    if let Ok(peers) = rpc(http, url, "net_peerCount").await {
                        if hex_u64(&peers) == Some(0) {
                            problems.push(format!("rpc[{i}] has 0 peers"));
                        }
                    }
                }
                (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => {
                    problems.push(format!("rpc[{i}] unreachable: {e}"));
                }
            }
        }
        let head = heads.iter().max().copied().unwrap_or(0);
        out.push(if healthy < needed {
            Finding::fail(
                check,
                Severity::P2,
                format!(
                    "{healthy} of {} endpoints usable, {needed} needed: {}",
                    chain.rpc.len(),
                    problems.join("; ")
                ),
                "RPC provider or own chain node down, syncing, or on the wrong network",
                "check the chain node (systemctl status geth/conflux; eth_syncing; disk and peers — manual 8.3.2 'block sync'), or the provider's status; fix or replace the endpoint in chains[].rpc",
            )
        } else if !problems.is_empty() {
            Finding::fail(
                check,
                Severity::P3,
                format!("head {head}; degraded: {}", problems.join("; ")),
                "one endpoint is down or lagging; the quorum still holds",
                "repair that endpoint before another one fails",
            )
        } else {
            Finding::pass(
                check,
                format!("head {head}; {healthy} endpoints in sync"),
            )
        });
        if let Some(core) = &chain.conflux_core_rpc {
            let check = format!("conflux node: {}", chain.name);
            out.push(match rpc(http, core, "cfx_epochNumber").await {
                Ok(epoch) => {
                    Finding::pass(check, format!("epoch {}", hex_u64(&epoch).unwrap_or(0)))
                }
                Err(e) => Finding::fail(
                    check,
                    Severity::P2,
                    format!("cfx_epochNumber failed: {e}"),
                    "the Conflux node's Core-space RPC is down",
                    "systemctl status conflux; journalctl -u conflux -f",
                ),
            });
        }
    }
}

/// Whether the node is subscribed to `chain`'s new-heads stream (`chains[].ws`).
fn check_head_stream(samples: &[prom::Sample], chain: &str, poll_interval_ms: u64) -> Finding {
    let check = format!("new-heads stream: {chain}");
    let labels = [("chain", chain)];
    let up = prom::select(samples, "dvn_chain_head_stream_up", &labels)
        .map(|s| s.value)
        .next();
    let announced: f64 = prom::select(samples, "dvn_chain_heads_announced_total", &labels)
        .map(|s| s.value)
        .sum();
    match up {
        Some(up) if up >= 1.0 => Finding::pass(
            check,
            format!("subscribed; {announced} blocks announced since start"),
        ),
        _ => Finding::fail(
            check,
            Severity::P3,
            format!(
                "not subscribed: the watcher finds new blocks only by its poll (every {poll_interval_ms} ms), so packets are seen later; nothing is lost"
            ),
            "the chain node's WebSocket is down, refuses the subscription, or is unreachable (port, proxy, provider plan)",
            "check chains[].ws against the node (websocat / wscat: eth_subscribe newHeads) and the node's log lines 'new-heads stream'; the node reconnects by itself",
        ),
    }
}

/// Disk use of the filesystem holding the store (`df -P`, as the manual does).
fn check_disk(config: &Config, threshold: f64) -> Finding {
    let path = crate::store::sqlite_file(&config.store.url)
        .and_then(|p| {
            p.parent()
                .filter(|d| !d.as_os_str().is_empty())
                .map(Path::to_path_buf)
        })
        .unwrap_or_else(|| PathBuf::from("."));
    let output = std::process::Command::new("df")
        .arg("-P")
        .arg(&path)
        .output();
    let used = output.ok().and_then(|o| {
        let text = String::from_utf8_lossy(&o.stdout).to_string();
        let line = text.lines().nth(1)?.to_string();
        line.split_whitespace()
            .nth(4)?
            .trim_end_matches('%')
            .parse::<f64>()
            .ok()
    });
    match used {
        Some(used) if used > threshold => Finding::fail(
            "disk",
            Severity::P3,
            format!(
                "{} is {used:.0} % full (threshold {threshold:.0} %)",
                path.display()
            ),
            "store, logs or chain data growing",
            "df -h; clean old logs and backups, or grow the volume",
        ),
        Some(used) => Finding::pass("disk", format!("{} is {used:.0} % full", path.display())),
        None => Finding::fail(
            "disk",
            Severity::P3,
            format!("cannot read disk usage of {}", path.display()),
            "df failed",
            "df -h by hand",
        ),
    }
}

fn cert_days_left(path: &Path) -> Option<i64> {
    let out = std::process::Command::new("openssl")
        .args(["x509", "-enddate", "-noout", "-in"])
        .arg(path)
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let date = text.trim().strip_prefix("notAfter=")?;
    let end =
        chrono::NaiveDateTime::parse_from_str(date.trim_end_matches(" GMT"), "%b %e %H:%M:%S %Y")
            .ok()?;
    Some((end.and_utc() - chrono::Utc::now()).num_days())
}

/// Walks the checklist against the node at `options.node_url` and the config's chains.
pub async fn run(config: &Config, options: &DoctorOptions) -> anyhow::Result<Report> {
    let http = super::http()?;
    let mut out = Vec::new();
    let base = options.node_url.trim_end_matches('/');

    // 1. Is the service running?
    let health = super::get_text(&http, &format!("{base}/health")).await;
    let running = matches!(health, Some((200, _)));
    out.push(if running {
        Finding::pass("service", "running; /health answers")
    } else {
        Finding::fail(
            "service",
            Severity::P2,
            format!("{base}/health does not answer"),
            "the node is stopped, crashed at start (bad config, key not in the signer set) or not listening there",
            "docker-compose ps / systemctl status dvn; docker logs dvn-node --tail 100; dvn config check; then start it (docker-compose up -d dvn)",
        )
    });

    let ready: Option<Value> = match super::get_ready(&http, base).await {
        Some((_, body)) => serde_json::from_str(&body).ok(),
        None => None,
    };
    let samples = match super::get_text(&http, &format!("{base}/metrics")).await {
        Some((200, text)) => prom::parse(&text),
        _ => Vec::new(),
    };

    // 2. Errors by kind: HSM, RPC, signing, other.
    if let Some(ready) = &ready {
        let components = &ready["components"];
        for role in ["signer", "submitter"] {
            let key = &components[role];
            let check = format!("hsm/kms: {role}");
            out.push(if key["up"] == true {
                Finding::pass(check, format!("{} key answers ({})", key["backend"].as_str().unwrap_or("?"), key["address"].as_str().unwrap_or("?")))
            } else {
                Finding::fail(
                    check,
                    Severity::P2,
                    format!("{} key unusable: {}", key["backend"].as_str().unwrap_or("?"), key["error"].as_str().unwrap_or("unknown error")),
                    "HSM/KMS unreachable (network, security group, client daemon) or credentials/permission revoked",
                    "HSM: nc -zv <hsm-ip> 2223; cloudhsm-cli cluster describe; systemctl restart cloudhsm-client (manual 8.3.2). KMS: check the credentials and key policy; dvn keys test-sign --config …. The node resumes by itself once the key answers",
                )
            });
        }
        let refused: f64 =
            prom::select(&samples, "dvn_signing_errors_total", &[("kind", "refused")])
                .map(|s| s.value)
                .sum();
        let keys_up = components["signer"]["up"] == true && components["submitter"]["up"] == true;
        if refused > 0.0 && keys_up {
            // Counters are cumulative: past refusals with both keys answering now are history.
            out.push(Finding::pass(
                "signing errors",
                format!("{refused} calls refused since start; both keys answer now"),
            ));
        } else if refused > 0.0 {
            out.push(Finding::fail(
                "signing errors",
                Severity::P2,
                format!("{refused} signing calls refused since start"),
                "key configuration: wrong key, disabled key, missing permission",
                "dvn keys address / test-sign --config …; compare with the DVN's on-chain signer set",
            ));
        }
        if components["store"] == false {
            out.push(Finding::fail(
                "store",
                Severity::P2,
                "the store does not answer",
                "PostgreSQL down or unreachable, or the SQLite file's disk is full/read-only",
                "docker-compose ps postgres; pg_isready; df -h",
            ));
        } else {
            out.push(Finding::pass("store", "answers"));
        }
        if let Some(chains) = components["chains"].as_object() {
            for (name, chain) in chains {
                if chain["up"] == false {
                    out.push(Finding::fail(
                        format!("node rpc: {name}"),
                        Severity::P2,
                        "the node cannot read the chain with the configured agreement",
                        "RPC endpoints down or disagreeing",
                        "see 'block sync' below; dvn_rpc_requests_total{outcome} shows which endpoint index fails",
                    ));
                }
            }
        }
    }

    // The new-heads streams, as the node sees them (a hint: down, the node only polls).
    if !samples.is_empty() {
        for chain in config.chains.iter().filter(|c| c.ws.is_some()) {
            out.push(check_head_stream(
                &samples,
                &chain.name,
                chain.poll_interval_ms,
            ));
        }
    }

    // 3. Block sync, from here.
    check_chains(&http, config, &mut out).await;

    if let Some(ready) = &ready {
        // Backlog and signing latency (the Grafana lines of the daily checklist).
        let backlog = ready["backlog"].as_array().cloned().unwrap_or_default();
        let worst_backlog = backlog
            .iter()
            .filter_map(|b| b["packets"].as_i64())
            .max()
            .unwrap_or(0);
        let oldest = backlog
            .iter()
            .filter_map(|b| b["oldest_age_secs"].as_u64())
            .max()
            .unwrap_or(0);
        out.push(if oldest > 1800 {
            Finding::fail("backlog", Severity::P1, format!("{worst_backlog} packets waiting; oldest {oldest} s"), "verifications are not being submitted (quorum lost, submitter out of gas, destination RPC down)", "dvn why <guid> for the oldest packet; check peers and the submitter balance")
        } else if worst_backlog >= options.backlog_threshold {
            Finding::fail("backlog", Severity::P2, format!("{worst_backlog} packets waiting (expected < {})", options.backlog_threshold), "a burst, slow signing, or peers/submission lagging", "watch it drain; if it grows see peers, signing latency and the submitter")
        } else {
            Finding::pass("backlog", format!("{worst_backlog} packets waiting"))
        });
        // Since the node started (a rate over a window is the alert's job).
        let p99 = prom::p99(&samples, "dvn_signing_seconds").unwrap_or(0.0);
        out.push(if p99 >= options.latency_threshold_secs {
            Finding::fail(
                "signing latency",
                Severity::P3,
                format!(
                    "p99 {p99:.2} s (SLO < {} s)",
                    options.latency_threshold_secs
                ),
                "HSM/KMS slow or throttled, or network latency to it",
                "check the HSM/KMS service health and quotas; signing.timeout_ms bounds each call",
            )
        } else {
            Finding::pass("signing latency", format!("p99 {p99:.3} s"))
        });

        let sole: f64 = prom::select(&samples, "dvn_sole_verifier_packets_total", &[])
            .map(|s| s.value)
            .filter(|v| v.is_finite())
            .sum();
        out.push(if sole > 0.0 && !options.accept_sole_verifier {
            Finding::fail(
                "sole verifier",
                Severity::P3,
                format!("{sole} packets signed for OApps whose receive config requires only our DVN (1-of-1)"),
                "an OApp trusts our DVN alone: one compromised verifier could forge its messages (the April 2026 KelpDAO configuration)",
                "the node log names the receiver (\"requires only our DVN\"); ask its owner to require at least two DVNs",
            )
        } else {
            Finding::pass(
                "sole verifier",
                match sole > 0.0 {
                    true => format!("{sole} packets for 1-of-1 OApps (accepted)"),
                    false => "no 1-of-1 OApp served".into(),
                },
            )
        });

        // 4. Network: peers.
        let needed = ready["components"]["peers"]["needed"].as_u64().unwrap_or(1) as usize;
        let peers = ready["components"]["peers"]["up"]
            .as_object()
            .cloned()
            .unwrap_or_default();
        let down: Vec<&String> = peers
            .iter()
            .filter(|(_, up)| **up != true)
            .map(|(n, _)| n)
            .collect();
        let up = peers.len() - down.len();
        out.push(if up < needed {
            Finding::fail("peers", Severity::P1, format!("{up} peers reachable, {needed} needed for the quorum; down: {down:?}"), "other regions down, or the cross-cloud network (VPN tunnels, firewall) broken", "check the other regions' /health; the VPN tunnels (3 up); security groups for the peer port")
        } else if !down.is_empty() {
            Finding::fail("peers", Severity::P3, format!("down: {down:?}"), "one region down or unreachable; the quorum still holds", "check that region's node and the tunnel to it")
        } else {
            Finding::pass("peers", format!("{up} reachable"))
        });

        if let Some(chains) = ready["components"]["chains"].as_object() {
            for (name, chain) in chains {
                if let Some(balance) = chain["submitter_balance_eth"].as_f64() {
                    let check = format!("submitter balance: {name}");
                    out.push(if balance < options.min_balance_eth {
                        Finding::fail(
                            check,
                            Severity::P2,
                            format!("{balance:.4} (minimum {})", options.min_balance_eth),
                            "gas spent on DVN.execute",
                            "top up the submitter account",
                        )
                    } else {
                        Finding::pass(check, format!("{balance:.4}"))
                    });
                }
            }
        }
    }

    // 5. Resources.
    out.push(check_disk(config, options.disk_threshold_pct));

    if let Some(am) = &options.alertmanager {
        let url = format!(
            "{}/api/v2/alerts?active=true&silenced=false&inhibited=false",
            am.trim_end_matches('/')
        );
        out.push(match super::get_text(&http, &url).await {
            Some((200, body)) => {
                let alerts: Vec<Value> = serde_json::from_str(&body).unwrap_or_default();
                let names: Vec<&str> = alerts
                    .iter()
                    .filter_map(|a| a["labels"]["alertname"].as_str())
                    .collect();
                if names.is_empty() {
                    Finding::pass("alerts", "0 active")
                } else {
                    Finding::fail(
                        "alerts",
                        Severity::P3,
                        format!("{} active: {names:?}", names.len()),
                        "see each alert's summary",
                        "work through them in Alertmanager",
                    )
                }
            }
            _ => Finding::fail(
                "alerts",
                Severity::P3,
                "Alertmanager did not answer",
                "Alertmanager down or wrong URL",
                "check --alertmanager",
            ),
        });
    }
    // The peer and admin TLS files of the config, then any given with --cert.
    let mut certs: Vec<PathBuf> = config
        .tls
        .iter()
        .chain(config.admin.tls.iter())
        .flat_map(|t| [t.cert.clone(), t.ca.clone()])
        .collect();
    certs.extend(options.certs.iter().cloned());
    for cert in &certs {
        let check = format!("certificate: {}", cert.display());
        out.push(match cert_days_left(cert) {
            Some(days) if days < 30 => Finding::fail(
                check,
                Severity::P3,
                format!("expires in {days} days"),
                "certificate not renewed",
                "renew it: dvn certs renew --dir DIR --name REGION (the node reloads it; no restart)",
            ),
            Some(days) => Finding::pass(check, format!("{days} days left")),
            None => Finding::fail(
                check,
                Severity::P3,
                "unreadable",
                "not a PEM certificate or missing",
                "check the path",
            ),
        });
    }

    let worst = out.iter().filter_map(|f| f.severity).max();
    Ok(Report {
        node: config.node.name.clone(),
        findings: out,
        worst,
    })
}
