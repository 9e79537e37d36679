//! The `dvn` binary: parses the command line, sets up logs and metrics, dispatches.

use std::process::ExitCode;

use clap::Parser;
use dvn::cli::{
    AdminCommand, AuditCommand, CertsCommand, Cli, Command, ConfigCommand, KeysCommand,
    PathCommand, TokenCommand, UpgradeCommand,
};
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
        .with_ansi(terminal)
        .with_writer(dvn::logs::Tee);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// Caps glibc's malloc arenas at two. By default glibc gives each thread that contends for
/// the allocator an arena of its own (up to 8 per core) and returns little of them to the
/// system: under a 10,000-packet catch-up that alone took the node's peak RSS from 59 to
/// 66–69 MiB (measured with `MALLOC_ARENA_MAX=2`, which this does from inside; the drain was
/// no slower). An operator's `MALLOC_ARENA_MAX` still wins. Must run before any thread starts.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn cap_malloc_arenas() {
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt only sets an allocator parameter; it is called once, before the
        // runtime or any other thread exists, with a valid parameter and value.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 2);
        }
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn cap_malloc_arenas() {}

fn main() -> ExitCode {
    cap_malloc_arenas();
    match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime.block_on(run()),
        Err(e) => {
            eprintln!("dvn: cannot start the async runtime: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> ExitCode {
    match Cli::parse().command() {
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
        Command::Status { node, json } => {
            report(async {
                let config = Config::load(&node.config)?;
                let url = node.url.unwrap_or_else(|| dvn::ops::node_url(&config));
                let status = dvn::ops::status::collect(&url).await?;
                if json {
                    println!("{}", serde_json::to_string_pretty(&status)?);
                } else {
                    print!("{}", dvn::ops::status::render(&status));
                }
                Ok(0)
            })
            .await
        }
        Command::Doctor {
            node,
            json,
            backlog_threshold,
            latency_threshold,
            disk_threshold,
            min_balance,
            alertmanager,
            certs,
            accept_sole_verifier,
        } => {
            report(async {
                let config = Config::load(&node.config)?;
                let options = dvn::ops::doctor::DoctorOptions {
                    node_url: node.url.unwrap_or_else(|| dvn::ops::node_url(&config)),
                    backlog_threshold,
                    latency_threshold_secs: latency_threshold,
                    disk_threshold_pct: disk_threshold,
                    min_balance_eth: min_balance,
                    alertmanager,
                    certs,
                    accept_sole_verifier,
                };
                let report = dvn::ops::doctor::run(&config, &options).await?;
                if json {
                    println!("{}", serde_json::to_string_pretty(&report)?);
                } else {
                    print!("{}", report.render());
                }
                Ok(report.exit_code())
            })
            .await
        }
        Command::Why { guid, config, json } => {
            report(async {
                let config = Config::load(&config)?;
                let guid: alloy::primitives::B256 = guid
                    .parse()
                    .map_err(|_| anyhow::anyhow!("{guid} is not a 32-byte hex GUID"))?;
                let store = dvn::store::Store::connect(&config.store.url).await?;
                let explanation = dvn::ops::why::explain(&config, &store, guid).await?;
                if json {
                    println!("{}", serde_json::to_string_pretty(&explanation)?);
                } else {
                    print!("{}", dvn::ops::why::render(&explanation));
                }
                Ok(0)
            })
            .await
        }
        Command::Path { command } => {
            report(async {
                match command {
                    PathCommand::List { config, json } => {
                        let config = Config::load(&config)?;
                        let store = dvn::store::Store::connect(&config.store.url).await?;
                        let listed = dvn::ops::recover::list_halted(&config, &store).await?;
                        if json {
                            println!("{}", serde_json::to_string_pretty(&listed)?);
                        } else {
                            let halted = listed["halted_paths"]
                                .as_array()
                                .cloned()
                                .unwrap_or_default();
                            if halted.is_empty() {
                                println!("no halted paths");
                            }
                            for h in halted {
                                println!(
                                    "{} -> {}  sender {}  receiver {}  nonce {}\n  {}",
                                    h["src"].as_str().unwrap_or_default(),
                                    h["dst"].as_str().unwrap_or_default(),
                                    h["sender"].as_str().unwrap_or_default(),
                                    h["receiver"].as_str().unwrap_or_default(),
                                    h["nonce"],
                                    h["reason"].as_str().unwrap_or_default()
                                );
                            }
                        }
                        Ok(0)
                    }
                    PathCommand::Resume {
                        config,
                        src,
                        dst,
                        sender,
                        receiver,
                    } => {
                        let config = Config::load(&config)?;
                        use dvn::ops::recover::{parse_word, resolve_eid};
                        let path = dvn::store::PathKey {
                            src_eid: resolve_eid(&config, &src)?,
                            sender: parse_word(&sender)?,
                            dst_eid: resolve_eid(&config, &dst)?,
                            receiver: parse_word(&receiver)?,
                        };
                        let store = dvn::store::Store::connect(&config.store.url).await?;
                        dvn::ops::recover::resume_path(&store, &path).await?;
                        println!("path resumed");
                        Ok(0)
                    }
                }
            })
            .await
        }
        Command::Upgrade { command } => report(upgrade(command)).await,
        Command::Certs { command } => {
            report(async {
                match command {
                    CertsCommand::New {
                        dir,
                        names,
                        hosts,
                        days,
                    } => {
                        dvn::tls::issue::new_set(&dir, &names, &hosts, days)?;
                        println!(
                            "CA and certificates for {} written to {} (keep ca.key offline)",
                            names.join(", "),
                            dir.display()
                        );
                    }
                    CertsCommand::Renew {
                        dir,
                        name,
                        hosts,
                        days,
                    } => {
                        let issuer = dvn::tls::issue::load_issuer(&dir)?;
                        let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%S");
                        for ext in ["pem", "key"] {
                            let path = dir.join(format!("{name}.{ext}"));
                            if path.exists() {
                                std::fs::rename(&path, dir.join(format!("{name}.{ext}.{stamp}")))?;
                            }
                        }
                        dvn::tls::issue::issue_one(&dir, &issuer, &name, &hosts, days, 0)?;
                        println!("{name}.pem renewed in {}", dir.display());
                    }
                }
                Ok(0)
            })
            .await
        }
        Command::Rescan {
            config,
            chain,
            from,
        } => {
            report(async {
                let config = Config::load(&config)?;
                let evm =
                    dvn::chain::EvmChain::new(dvn::ops::recover::chain_config(&config, &chain)?)?;
                let store = dvn::store::Store::connect(&config.store.url).await?;
                let done = dvn::ops::recover::rescan(&store, &evm, from).await?;
                println!("{}", serde_json::to_string(&done)?);
                Ok(0)
            })
            .await
        }
        Command::Retry { guid, config } => {
            report(async {
                let config = Config::load(&config)?;
                let guid: alloy::primitives::B256 = guid
                    .parse()
                    .map_err(|_| anyhow::anyhow!("{guid} is not a 32-byte hex GUID"))?;
                let store = dvn::store::Store::connect(&config.store.url).await?;
                dvn::ops::recover::retry_packet(&store, guid).await?;
                println!("packet {guid} re-queued");
                Ok(0)
            })
            .await
        }
        Command::Backup {
            config,
            out,
            logs,
            log_days,
            keep_days,
            local_only,
            json,
        } => {
            report(async {
                let out = match out {
                    Some(out) => out,
                    None => dvn::config::Config::load(&config)?
                        .backup
                        .dir
                        .ok_or_else(|| anyhow::anyhow!("give --out DIR, or set backup.dir"))?,
                };
                let shipped = dvn::backup::create_and_ship(
                    &config,
                    &out,
                    logs.as_deref(),
                    log_days,
                    keep_days,
                    local_only,
                )
                .await;
                let shipped = match shipped {
                    Ok(shipped) => shipped,
                    Err(e) => {
                        dvn::ops::admin::audit_local_result(
                            &config,
                            "backup",
                            &out.display().to_string(),
                            serde_json::json!({ "error": format!("{e:#}") }),
                            "failed",
                        )
                        .await;
                        return Err(e);
                    }
                };
                dvn::ops::admin::audit_local(
                    &config,
                    "backup",
                    &shipped.archive.display().to_string(),
                    serde_json::json!({
                        "parts": shipped.manifest.parts.len(),
                        "uploaded": shipped.uploaded,
                        "pruned": shipped.pruned,
                        "pruned_remote": shipped.pruned_remote,
                    }),
                )
                .await;
                if json {
                    println!("{}", serde_json::to_string_pretty(&shipped)?);
                } else {
                    println!(
                        "{} ({} parts; uploaded to {}; {} old backups removed here, {} remotely)",
                        shipped.archive.display(),
                        shipped.manifest.parts.len(),
                        match shipped.uploaded.is_empty() {
                            true => "nowhere".to_string(),
                            false => shipped.uploaded.join(", "),
                        },
                        shipped.pruned,
                        shipped.pruned_remote
                    );
                }
                Ok(0)
            })
            .await
        }
        Command::Restore {
            archive,
            config,
            dry_run,
            with_config,
            start,
            ready_timeout_secs,
            json,
        } => {
            report(async {
                let download = tempfile::tempdir()?;
                let (file, source) = if dvn::backup::remote::RemoteUrl::is_remote(&archive) {
                    let loaded = dvn::config::Config::load(&config)?;
                    let (file, object) = dvn::backup::remote::download(
                        &archive,
                        &loaded.backup.remote,
                        &loaded.node.name,
                        download.path(),
                    )
                    .await?;
                    (file, object)
                } else {
                    (std::path::PathBuf::from(&archive), archive.clone())
                };
                let mut done = dvn::backup::restore(&config, &file, dry_run, with_config).await?;
                done["archive"] = serde_json::json!(source);
                if !dry_run {
                    dvn::ops::admin::audit_local(&config, "restore", &source, done.clone()).await;
                }
                let mut code = 0;
                if let (Some(command), false) = (&start, dry_run) {
                    let timeout = std::time::Duration::from_secs(ready_timeout_secs);
                    match dvn::backup::start_and_gate(&config, command, timeout).await {
                        Ok(secs) => {
                            done["started"] = serde_json::json!(true);
                            done["ready_after_secs"] = serde_json::json!(secs);
                        }
                        Err(e) => {
                            done["started"] = serde_json::json!(false);
                            done["error"] = serde_json::json!(format!("{e:#}"));
                            eprintln!("dvn restore: {e:#}");
                            code = 6;
                        }
                    }
                }
                if json {
                    println!("{}", serde_json::to_string_pretty(&done)?);
                } else if dry_run {
                    println!("{source}: verified (node {}, {} parts, made {})", done["node"], done["parts"], done["created_at"]);
                } else if start.is_none() {
                    println!("{source}: restored; start the node (systemctl start dvn / docker-compose up -d dvn) and wait for /ready");
                } else if code == 0 {
                    println!("{source}: restored; the node is ready after {:.1} s", done["ready_after_secs"].as_f64().unwrap_or(0.0));
                }
                Ok(code)
            })
            .await
        }
        Command::Migrate { config } => {
            report(async {
                let config = Config::load(&config)?;
                dvn::store::Store::connect(&config.store.url).await?;
                println!("store schema up to date");
                Ok(0)
            })
            .await
        }
        Command::Admin { command } => report(admin(command)).await,
        Command::Audit { command } => report(audit(command)).await,
        Command::Keys { command } => match keys(command).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("{e:#}");
                ExitCode::FAILURE
            }
        },
        Command::Run(dvn::cli::RunArgs {
            config,
            debug,
            json_logs,
        }) => {
            init_logs(debug, json_logs);
            let config_path = config.clone();
            let config = match Config::load(&config) {
                Ok(c) => c,
                Err(e) => {
                    tracing::error!("{e}");
                    return ExitCode::FAILURE;
                }
            };
            let metrics = match dvn::telemetry::with_buckets(
                metrics_exporter_prometheus::PrometheusBuilder::new(),
            )
            .and_then(|b| b.install_recorder().map_err(Into::into))
            {
                    Ok(h) => h,
                    Err(e) => {
                        tracing::error!("metrics: {e}");
                        return ExitCode::FAILURE;
                    }
                };
            dvn::telemetry::describe();
            let cancel = CancellationToken::new();
            let on_signal = cancel.clone();
            tokio::spawn(async move {
                shutdown_signal().await;
                tracing::info!("shutdown requested");
                on_signal.cancel();
            });
            match dvn::node::run(config, Some(config_path), metrics, cancel).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!("{e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

/// Runs a tool whose value is the exit code; an error is printed and exits 5 (doctor uses
/// 1–4 for severities).
/// `dvn upgrade plan|run`.
async fn upgrade(command: UpgradeCommand) -> anyhow::Result<u8> {
    use dvn::ops::upgrade::{exit, preflight, render_plan, run, Plan};
    match command {
        UpgradeCommand::Plan { args } => {
            let plan = Plan::load(&args.plan)?;
            let checked = preflight(&plan).await?;
            let code = match checked.iter().all(|p| p.problem.is_none()) {
                true => exit::DONE,
                false => exit::REFUSED,
            };
            if args.json {
                let out = serde_json::json!({ "preflight": checked, "plan": plan, "code": code });
                println!("{}", serde_json::to_string_pretty(&out)?);
            } else {
                print!(
                    "{}",
                    render_plan(&plan, &checked, &args.to, args.from.as_deref())
                );
                if code != exit::DONE {
                    println!("\na run would be refused: every region must be ready first");
                }
            }
            Ok(code)
        }
        UpgradeCommand::Run { args } => {
            let plan = Plan::load(&args.plan)?;
            let done = run(&plan, &args.to, args.from.as_deref()).await?;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&done)?);
            } else {
                for r in &done.regions {
                    println!(
                        "{:<8} {:<16} {} → {} ({:.0} s){}",
                        r.region,
                        r.result,
                        r.from,
                        r.to,
                        r.seconds,
                        r.error
                            .as_deref()
                            .map(|e| format!(": {e}"))
                            .unwrap_or_default()
                    );
                }
            }
            Ok(done.code)
        }
    }
}

async fn report(tool: impl std::future::Future<Output = anyhow::Result<u8>>) -> ExitCode {
    match tool.await {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("{e:#}");
            ExitCode::from(5)
        }
    }
}

/// `dvn admin …`: host-side token and role commands, the rest through the node's API.
async fn admin(command: AdminCommand) -> anyhow::Result<u8> {
    use dvn::ops::admin::{call, scope_body};
    let answer = match command {
        AdminCommand::Roles => {
            print!("{}", dvn::admin::roles::render_table());
            return Ok(0);
        }
        AdminCommand::Token { command } => return token(command).await,
        AdminCommand::Status { api } => call(&api, "GET", "/status", None).await?,
        AdminCommand::Packets { api, state, limit } => {
            let state = state.map(|s| format!("&state={s}")).unwrap_or_default();
            call(&api, "GET", &format!("/packets?limit={limit}{state}"), None).await?
        }
        AdminCommand::Why { api, guid } => {
            call(&api, "GET", &format!("/packets/{guid}"), None).await?
        }
        AdminCommand::Pause { api, scope, reason } => {
            let mut body = scope_body(&scope)?;
            body["reason"] = serde_json::json!(reason);
            call(&api, "POST", "/pause", Some(body)).await?
        }
        AdminCommand::Resume { api, scope } => {
            call(&api, "POST", "/resume", Some(scope_body(&scope)?)).await?
        }
        AdminCommand::ResumeHalted { api, path } => {
            let body = serde_json::json!({
                "src": path.src, "dst": path.dst, "sender": path.sender, "receiver": path.receiver,
            });
            call(&api, "POST", "/paths/resume", Some(body)).await?
        }
        AdminCommand::Retry { api, guid } => {
            call(&api, "POST", &format!("/packets/{guid}/retry"), None).await?
        }
        AdminCommand::Rescan { api, chain, from } => {
            let body = serde_json::json!({ "chain": chain, "from": from });
            call(&api, "POST", "/rescan", Some(body)).await?
        }
        AdminCommand::Reload { api } => call(&api, "POST", "/reload", None).await?,
        AdminCommand::Backup { api } => call(&api, "POST", "/backup", None).await?,
        AdminCommand::Logs { api, lines } => {
            let answer = call(&api, "GET", &format!("/logs?lines={lines}"), None).await?;
            for line in answer["lines"].as_array().into_iter().flatten() {
                println!("{}", line.as_str().unwrap_or_default());
            }
            return Ok(0);
        }
        AdminCommand::Audit { api, after } => {
            call(&api, "GET", &format!("/audit?after={after}"), None).await?
        }
    };
    println!("{}", serde_json::to_string_pretty(&answer)?);
    Ok(0)
}

async fn token(command: TokenCommand) -> anyhow::Result<u8> {
    let open = |config: &std::path::Path| {
        let config = Config::load(config);
        async move {
            let config = config?;
            anyhow::Ok(dvn::store::Store::connect(&config.store.url).await?)
        }
    };
    match command {
        TokenCommand::Create {
            config,
            operator,
            role,
            days,
        } => {
            let store = open(&config).await?;
            let (secret, row) =
                dvn::ops::admin::create_token(&store, &operator, role, days).await?;
            eprintln!(
                "token {} for {} ({}), expires in {days} days; shown once, keep it secret:",
                row.id, row.operator, row.role
            );
            println!("{secret}");
        }
        TokenCommand::List { config, json } => {
            let store = open(&config).await?;
            let tokens = store.tokens().await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&tokens)?);
            }
            for t in tokens.iter().filter(|_| !json) {
                let state = match t.revoked_at_ms {
                    Some(_) => "revoked",
                    None if t.expires_at_ms <= dvn::store::now_ms() => "expired",
                    None => "live",
                };
                let expires = chrono::DateTime::from_timestamp_millis(t.expires_at_ms)
                    .map(|d| d.to_rfc3339())
                    .unwrap_or_default();
                println!(
                    "{}  {:<10} {:<20} {state:<8} expires {expires}",
                    t.id, t.role, t.operator
                );
            }
        }
        TokenCommand::Revoke { config, id } => {
            let store = open(&config).await?;
            dvn::ops::admin::revoke_token(&store, &id).await?;
            println!("token {id} revoked");
        }
    }
    Ok(0)
}

/// `dvn audit …`: on the store directly.
async fn audit(command: AuditCommand) -> anyhow::Result<u8> {
    match command {
        AuditCommand::Verify {
            config,
            checkpoints,
            json,
        } => {
            let config = Config::load(&config)?;
            let store = dvn::store::Store::connect(&config.store.url).await?;
            let (intact, report) = dvn::ops::admin::verify(&config, &store, &checkpoints).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else if intact {
                println!(
                    "audit log intact: {} records, head {}; {} checkpoints match",
                    report["records"], report["head"], report["checkpoints_checked"]
                );
            } else {
                println!("audit log BROKEN:");
                for problem in report["problems"].as_array().into_iter().flatten() {
                    println!("  {}", problem.as_str().unwrap_or_default());
                }
            }
            Ok(if intact { 0 } else { 1 })
        }
        AuditCommand::Export { config, since, out } => {
            let config = Config::load(&config)?;
            let store = dvn::store::Store::connect(&config.store.url).await?;
            let lines = dvn::ops::admin::export(&store, &since).await?;
            let mut text = lines.join("\n");
            if !text.is_empty() {
                text.push('\n');
            }
            match out {
                Some(path) => {
                    std::fs::write(&path, text)?;
                    eprintln!("{} records written to {}", lines.len(), path.display());
                }
                None => print!("{text}"),
            }
            Ok(0)
        }
    }
}

async fn keys(command: KeysCommand) -> anyhow::Result<()> {
    use dvn::ops::admin::{audited_key_change, audited_key_use};
    use dvn::signer::pkcs11::Pkcs11Signer;
    use dvn::signer::KeyHandle;
    use serde_json::json;
    let pin = |env: &str| {
        std::env::var(env)
            .map_err(|_| anyhow::anyhow!("environment variable {env} (the PIN) is not set"))
    };
    match command {
        KeysCommand::Rotate { command } => {
            use dvn::cli::RotateCommand;
            use dvn::ops::admin::call;
            let answer = match command {
                RotateCommand::Propose {
                    api,
                    chain,
                    expires_in_secs,
                } => {
                    let body = json!({ "chain": chain, "expires_in_secs": expires_in_secs });
                    call(&api, "POST", "/rotations", Some(body)).await?
                }
                RotateCommand::List { api } => call(&api, "GET", "/rotations", None).await?,
                RotateCommand::Approve { api, id } => {
                    call(&api, "POST", &format!("/rotations/{id}/approve"), None).await?
                }
                RotateCommand::Reject { api, id, reason } => {
                    let body = json!({ "reason": reason });
                    call(&api, "POST", &format!("/rotations/{id}/reject"), Some(body)).await?
                }
            };
            println!("{}", serde_json::to_string_pretty(&answer)?);
        }
        KeysCommand::Address { config: path } => {
            let lines =
                audited_key_use(Some(&path), "keys.address", "signer,submitter", || async {
                    let config = Config::load(&path)?;
                    let signer = KeyHandle::load(&config.signer, "signer", &config.signing).await?;
                    let submitter =
                        KeyHandle::load(&config.submitter.key, "submitter", &config.signing)
                            .await?;
                    let lines = format!(
                        "signer    {} ({})\nsubmitter {} ({})",
                        signer.address(),
                        signer.backend(),
                        submitter.address(),
                        submitter.backend()
                    );
                    let reported = json!({
                        "signer": signer.address().to_string(),
                        "submitter": submitter.address().to_string(),
                    });
                    Ok((lines, reported))
                })
                .await?;
            println!("{lines}");
        }
        KeysCommand::TestSign { config: path } => {
            let line = audited_key_use(Some(&path), "keys.test_sign", "signer", || async {
                let config = Config::load(&path)?;
                let key = KeyHandle::load(&config.signer, "signer", &config.signing).await?;
                let digest = alloy::primitives::keccak256(b"dvn keys test-sign");
                let started = std::time::Instant::now();
                let signature = key.sign_digest(digest).await?;
                let ms = started.elapsed().as_secs_f64() * 1000.0;
                let line = format!(
                    "signed with {} ({}) in {ms:.1} ms; recovers to the key; signature {}",
                    key.address(),
                    key.backend(),
                    alloy::primitives::hex::encode_prefixed(signature.as_bytes())
                );
                let reported = json!({ "address": key.address().to_string(), "ms": ms.round() });
                Ok((line, reported))
            })
            .await?;
            println!("{line}");
        }
        KeysCommand::Generate {
            token,
            key_label,
            audit,
        } => {
            let pin = pin(&token.pin_env)?;
            let target = format!("pkcs11:{}/{key_label}", token.token_label);
            let params = json!({ "module": token.module.display().to_string() });
            let address = audited_key_change(
                audit.config.as_deref(),
                "keys.generate",
                &target,
                params,
                || async move {
                    let address = tokio::task::spawn_blocking(move || {
                        Pkcs11Signer::generate(&token.module, &token.token_label, &key_label, &pin)
                    })
                    .await??;
                    Ok((address, json!({ "address": address.to_string() })))
                },
            )
            .await?;
            println!("{address}");
        }
        KeysCommand::GenerateKeystore {
            dir,
            name,
            password_env,
            audit,
        } => {
            let password = std::env::var(&password_env).map_err(|_| {
                anyhow::anyhow!("environment variable {password_env} (the password) is not set")
            })?;
            if password.len() < 8 {
                anyhow::bail!("the keystore password must have at least 8 characters");
            }
            let file = dir.join(&name);
            if file.exists() {
                anyhow::bail!("{} exists; not overwriting a key", file.display());
            }
            let target = format!("keystore:{}", file.display());
            let address = audited_key_change(
                audit.config.as_deref(),
                "keys.generate_keystore",
                &target,
                json!({}),
                || async {
                    std::fs::create_dir_all(&dir)?;
                    let (key, _) = alloy::signers::local::PrivateKeySigner::new_keystore(
                        &dir,
                        &mut rand::thread_rng(),
                        password,
                        Some(name.as_str()),
                    )?;
                    Ok((
                        key.address(),
                        json!({ "address": key.address().to_string() }),
                    ))
                },
            )
            .await?;
            println!("{}\t{address}", file.display());
        }
        KeysCommand::List { token, audit } => {
            let pin = pin(&token.pin_env)?;
            let target = format!("pkcs11:{}", token.token_label);
            let keys = audited_key_use(
                audit.config.as_deref(),
                "keys.list",
                &target,
                || async move {
                    let keys = tokio::task::spawn_blocking(move || {
                        Pkcs11Signer::list(&token.module, &token.token_label, &pin)
                    })
                    .await??;
                    let reported = json!({ "keys": keys.len() });
                    Ok((keys, reported))
                },
            )
            .await?;
            for (label, address) in keys {
                println!("{label}\t{address}");
            }
        }
    }
    Ok(())
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
