//! Issue 11 §1–§3 on running nodes: the admin API's role × endpoint matrix, every call in the
//! audit log, refused tokens and requests, no secret anywhere, checkpoints that show a cut
//! tail, and pauses that hold the real pipeline.

use std::collections::HashMap;
use std::time::Duration;

use dvn::admin::roles::{Permission, Role};
use dvn::config::Config;
use dvn::store::{AuditRecord, PacketState, Store};
use dvn_devnet::nodes::NodeOptions;
use dvn_devnet::wait::eventually;
use dvn_devnet::{DevnetConfig, Direction};
use serde_json::{json, Value};

use crate::common::{dvn_cli, dvn_run, new_token, Stand};
use crate::e2e::TIMEOUT;

/// The operator manual's roles (8.7), written out independently of the code's table:
/// admin everything; operator service management and logs (and the status it manages by);
/// developer logs and read-only status; auditor the audit log and logs. Resuming a path the
/// equivocation guard halted is a safety decision: admin only.
fn manual_allows(role: Role, operation: &str) -> bool {
    let reads = ["status", "ready", "packets.list", "packets.why"];
    let manage = ["pause", "resume", "packets.retry", "rescan", "backup"];
    let audit = ["audit.read", "audit.verify"];
    match role {
        Role::Admin => true,
        Role::Operator => {
            reads.contains(&operation) || manage.contains(&operation) || operation == "logs"
        }
        Role::Developer => reads.contains(&operation) || operation == "logs",
        Role::Auditor => audit.contains(&operation) || operation == "logs",
    }
}

/// One admin endpoint as the matrix calls it.
struct Endpoint {
    method: &'static str,
    path: String,
    body: Option<Value>,
    permission: Permission,
    operation: &'static str,
    target: String,
}

async fn send(
    http: &reqwest::Client,
    base: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<String>,
) -> (u16, String) {
    let url = format!("{base}/admin/v1{path}");
    let mut request = match method {
        "POST" => http
            .post(&url)
            .header("content-type", "application/json")
            .body(body.unwrap_or_else(|| "{}".into())),
        _ => http.get(&url),
    };
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.text().await.unwrap())
}

async fn last_records(store: &Store, n: usize) -> Vec<AuditRecord> {
    let all = store.audit_all().await.unwrap();
    all[all.len().saturating_sub(n)..].to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_role_gets_exactly_its_permissions_and_every_call_is_audited() {
    let mut stand = Stand::new(DevnetConfig::default(), NodeOptions::default()).await;
    let checkpoints = stand.nodes.nodes[0]
        .config_path
        .with_file_name("aws-checkpoints.jsonl");
    let backups = tempfile::tempdir().unwrap();
    stand.nodes.nodes[0]
        .edit_config(|c| {
            c["backup"] = json!({ "dir": backups.path().to_str().unwrap() });
            c["audit"] = json!({
                "checkpoint_file": checkpoints.to_str().unwrap(),
                "checkpoint_interval_secs": 1,
            });
        })
        .unwrap();
    stand.nodes.start(&[0, 1, 2]).await.unwrap();
    let aws = &stand.nodes.nodes[0];
    let cfg = aws.config_path.to_str().unwrap().to_string();
    let config = Config::load(&aws.config_path).unwrap();
    let store = Store::connect(&config.store.url).await.unwrap();
    let base = aws.url();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();

    let mut tokens: HashMap<Role, String> = HashMap::new();
    for role in Role::ALL {
        let token = new_token(&cfg, &format!("{}-op", role.as_str()), role.as_str());
        assert!(token.starts_with("dvn_"), "{token}");
        tokens.insert(role, token);
    }
    let chain = config.chains[0].name.clone();
    let other = config.chains[1].name.clone();
    let path = json!({
        "src": chain, "dst": other,
        "sender": format!("0x{}", "11".repeat(20)), "receiver": format!("0x{}", "22".repeat(20)),
    });
    let path_key = format!(
        "path:{}:0x{}{}:{}:0x{}{}",
        config.chains[0].eid,
        "00".repeat(12),
        "11".repeat(20),
        config.chains[1].eid,
        "00".repeat(12),
        "22".repeat(20)
    );
    let mut pause_body = path.clone();
    pause_body["scope"] = json!("path");
    pause_body["reason"] = json!("drill");
    let mut resume_body = path.clone();
    resume_body["scope"] = json!("path");
    let guid = format!("0x{}", "ab".repeat(32));
    let endpoints = [
        Endpoint {
            method: "GET",
            path: "/status".into(),
            body: None,
            permission: Permission::ReadStatus,
            operation: "status",
            target: "node".into(),
        },
        Endpoint {
            method: "GET",
            path: "/ready".into(),
            body: None,
            permission: Permission::ReadStatus,
            operation: "ready",
            target: "node".into(),
        },
        Endpoint {
            method: "GET",
            path: "/packets?state=verified".into(),
            body: None,
            permission: Permission::ReadStatus,
            operation: "packets.list",
            target: "packets".into(),
        },
        Endpoint {
            method: "GET",
            path: format!("/packets/{guid}"),
            body: None,
            permission: Permission::ReadStatus,
            operation: "packets.why",
            target: format!("packet:{guid}"),
        },
        Endpoint {
            method: "POST",
            path: "/pause".into(),
            body: Some(pause_body),
            permission: Permission::ManageService,
            operation: "pause",
            target: path_key.clone(),
        },
        Endpoint {
            method: "POST",
            path: "/resume".into(),
            body: Some(resume_body),
            permission: Permission::ManageService,
            operation: "resume",
            target: path_key.clone(),
        },
        Endpoint {
            method: "POST",
            path: "/paths/resume".into(),
            body: Some(path.clone()),
            permission: Permission::ResumeHalted,
            operation: "paths.resume_halted",
            target: path_key.clone(),
        },
        Endpoint {
            method: "POST",
            path: format!("/packets/{guid}/retry"),
            body: None,
            permission: Permission::ManageService,
            operation: "packets.retry",
            target: format!("packet:{guid}"),
        },
        Endpoint {
            method: "POST",
            path: "/rescan".into(),
            body: Some(json!({ "chain": chain, "from": 1 })),
            permission: Permission::ManageService,
            operation: "rescan",
            target: format!("chain:{chain}"),
        },
        Endpoint {
            method: "POST",
            path: "/backup".into(),
            body: None,
            permission: Permission::ManageService,
            operation: "backup",
            target: "store".into(),
        },
        Endpoint {
            method: "GET",
            path: "/logs?lines=5".into(),
            body: None,
            permission: Permission::ReadLogs,
            operation: "logs",
            target: "node".into(),
        },
        Endpoint {
            method: "GET",
            path: "/audit?after=0&limit=5".into(),
            body: None,
            permission: Permission::ReadAudit,
            operation: "audit.read",
            target: "audit_log".into(),
        },
        Endpoint {
            method: "GET",
            path: "/audit/verify".into(),
            body: None,
            permission: Permission::ReadAudit,
            operation: "audit.verify",
            target: "audit_log".into(),
        },
    ];

    let mut answers: Vec<String> = Vec::new();
    for role in Role::ALL {
        let token = &tokens[&role];
        for ep in &endpoints {
            let (status, text) = send(
                &http,
                &base,
                ep.method,
                &ep.path,
                Some(token),
                ep.body.as_ref().map(Value::to_string),
            )
            .await;
            let allowed = manual_allows(role, ep.operation);
            assert_eq!(
                allowed,
                role.allows(ep.permission),
                "the code's table is the manual's"
            );
            let what = format!("{} {} as {}", ep.method, ep.path, role.as_str());
            if allowed {
                assert!(
                    status != 401 && status != 403,
                    "{what}: allowed, got {status} {text}"
                );
            } else {
                assert_eq!(status, 403, "{what}: denied, got {status} {text}");
            }
            let changes = ep.method == "POST";
            let records = last_records(&store, 2).await;
            let last = &records[1].entry;
            assert_eq!(last.operator, format!("{}-op", role.as_str()), "{what}");
            assert_eq!(last.role, role.as_str(), "{what}");
            assert_eq!(last.operation, ep.operation, "{what}");
            assert_eq!(last.target, ep.target, "{what}");
            assert_eq!(last.source_ip, "127.0.0.1", "{what}");
            match (allowed, status) {
                (false, _) => assert_eq!(last.result, "denied", "{what}"),
                (true, 200) => assert_eq!(last.result, "ok", "{what}"),
                (true, _) => assert!(
                    last.result.starts_with("error: "),
                    "{what}: {}",
                    last.result
                ),
            }
            if allowed && changes {
                assert_eq!(
                    records[0].entry.result, "begun",
                    "{what}: begun before the change"
                );
                assert_eq!(records[0].entry.operation, ep.operation);
            }
            answers.push(text);
        }
    }
    // The operator's and the admin's backups are there, one archive each.
    let archives = std::fs::read_dir(backups.path()).unwrap().count();
    assert_eq!(archives, 2, "one backup per allowed role");
    // An operator's pause and resume went through; the admin's too.
    let pauses: Vec<_> = store.pauses().await.unwrap();
    assert!(pauses.is_empty(), "every pause was lifted: {pauses:?}");

    // Refused tokens, each audited with why.
    let admin = tokens[&Role::Admin].clone();
    let revoked = new_token(&cfg, "mallory", "admin");
    let revoked_id = revoked.split('_').nth(1).unwrap().to_string();
    dvn_cli(&["admin", "token", "revoke", "-c", &cfg, &revoked_id]);
    let (expiring, row) = dvn::admin::token::create(&store, "eve", Role::Developer, 1)
        .await
        .unwrap();
    let raw = sqlx::any::AnyPoolOptions::new()
        .max_connections(1)
        .connect(&config.store.url)
        .await
        .unwrap();
    sqlx::query("UPDATE admin_tokens SET expires_at_ms = 1 WHERE id = $1")
        .bind(&row.id)
        .execute(&raw)
        .await
        .unwrap();
    let unknown = format!("dvn_{}_{}", "0f".repeat(8), "ee".repeat(32));
    let cases: [(Option<&str>, u16, &str, &str); 5] = [
        (None, 401, "unknown", "unauthenticated: no bearer token"),
        (
            Some("not-a-token"),
            401,
            "unknown",
            "unauthenticated: malformed token",
        ),
        (
            Some(unknown.as_str()),
            401,
            "token:0f0f0f0f0f0f0f0f",
            "unauthenticated: unknown token",
        ),
        (
            Some(revoked.as_str()),
            401,
            &format!("token:{revoked_id}"),
            &format!("unauthenticated: token {revoked_id} is revoked"),
        ),
        (
            Some(expiring.as_str()),
            401,
            &format!("token:{}", row.id),
            &format!("unauthenticated: token {} has expired", row.id),
        ),
    ];
    for (token, want, operator, result) in cases {
        let (status, text) = send(&http, &base, "GET", "/status", token, None).await;
        assert_eq!(status, want, "{result}: {text}");
        let last = &last_records(&store, 1).await[0].entry;
        assert_eq!(
            (
                last.operator.as_str(),
                last.role.as_str(),
                last.result.as_str()
            ),
            (operator, "none", result)
        );
        answers.push(text);
    }
    // Malformed and oversized bodies: refused with a reason, audited, nothing changed.
    let (status, text) = send(
        &http,
        &base,
        "POST",
        "/pause",
        Some(&admin),
        Some("{not json".into()),
    )
    .await;
    assert_eq!(status, 400, "{text}");
    let last = &last_records(&store, 1).await[0].entry;
    assert_eq!(last.target, "malformed request");
    assert!(
        last.result.starts_with("error: request body"),
        "{}",
        last.result
    );
    let big = json!({ "scope": "node", "reason": "x".repeat(20_000) }).to_string();
    let (status, text) = send(&http, &base, "POST", "/pause", Some(&admin), Some(big)).await;
    assert_eq!(status, 413, "{text}");
    assert!(last_records(&store, 1).await[0]
        .entry
        .result
        .contains("over 16384 bytes"));
    let (status, text) = send(
        &http,
        &base,
        "POST",
        "/pause",
        Some(&admin),
        Some(json!({ "scope": "galaxy", "reason": "x" }).to_string()),
    )
    .await;
    assert_eq!(status, 400, "{text}");
    assert!(
        store.pauses().await.unwrap().is_empty(),
        "no refused request paused anything"
    );

    // The node was not disturbed: messages still verify both ways.
    stand.round_trip_both_ways(2).await;

    // No secret anywhere: not in responses, the node's log, the audit export or the store file.
    let export = dvn_cli(&["audit", "export", "-c", &cfg, "--since", "0"]);
    assert!(export.lines().count() > 50, "every call exported");
    let log = std::fs::read_to_string(&aws.log_path).unwrap();
    let db_path = config
        .store
        .url
        .trim_start_matches("sqlite://")
        .split('?')
        .next()
        .unwrap()
        .to_string();
    let mut db_bytes = std::fs::read(&db_path).unwrap();
    db_bytes.extend(std::fs::read(format!("{db_path}-wal")).unwrap_or_default());
    let db_text = String::from_utf8_lossy(&db_bytes);
    let secrets: Vec<String> = tokens
        .values()
        .cloned()
        .chain([revoked.clone(), expiring.clone(), admin.clone()])
        .collect();
    for secret in &secrets {
        let secret_part = secret.rsplit('_').next().unwrap();
        for (place, text) in [
            ("log", log.as_str()),
            ("audit export", export.as_str()),
            ("store", &db_text),
        ] {
            assert!(
                !text.contains(secret_part),
                "a token's secret is in the {place}"
            );
        }
        for answer in &answers {
            assert!(
                !answer.contains(secret_part),
                "a token's secret is in an answer"
            );
        }
    }

    // The chain verifies; a signed checkpoint is written; a cut tail is then named.
    let (code, out) = dvn_run(&["audit", "verify", "-c", &cfg], &[]);
    assert_eq!(code, 0, "{out}");
    let head = store.audit_head().await.unwrap().unwrap().0;
    let written = eventually(TIMEOUT, Duration::from_millis(100), || async {
        let text = std::fs::read_to_string(&checkpoints).unwrap_or_default();
        let top = text
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter_map(|v| v["seq"].as_u64())
            .max();
        top.filter(|seq| *seq >= head)
    })
    .await;
    assert!(written.is_some(), "a checkpoint at or past record {head}");
    let cp = checkpoints.to_str().unwrap();
    let (code, out) = dvn_run(&["audit", "verify", "-c", &cfg, "--checkpoint", cp], &[]);
    assert_eq!(code, 0, "{out}");
    stand.nodes.nodes[0].kill();
    sqlx::query("DELETE FROM audit_log WHERE seq > $1")
        .bind(head as i64 - 3)
        .execute(&raw)
        .await
        .unwrap();
    let (code, out) = dvn_run(&["audit", "verify", "-c", &cfg, "--checkpoint", cp], &[]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("its tail was cut"), "{out}");
    sqlx::query("UPDATE audit_log SET operator = 'nobody' WHERE seq = 5")
        .execute(&raw)
        .await
        .unwrap();
    let (code, out) = dvn_run(&["audit", "verify", "-c", &cfg], &[]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("record 5"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_chain_is_neither_signed_nor_lost_and_resumes_through_the_cli() {
    let mut stand = Stand::new(DevnetConfig::default(), NodeOptions::default()).await;
    stand.nodes.start(&[0, 1, 2]).await.unwrap();
    let mut admin_tokens = Vec::new();
    for node in &stand.nodes.nodes[..2] {
        let cfg = node.config_path.to_str().unwrap();
        admin_tokens.push(new_token(cfg, "ops-oncall", "operator"));
    }
    let config = Config::load(&stand.nodes.nodes[0].config_path).unwrap();
    let source = config.chains[0].name.clone();
    // Pause the source chain on two of the three regions: a 2-of-3 DVN then verifies nothing.
    for (node, token) in stand.nodes.nodes[..2].iter().zip(&admin_tokens) {
        let cfg = node.config_path.to_str().unwrap();
        let (code, out) = dvn_run(
            &[
                "admin",
                "pause",
                "-c",
                cfg,
                "--url",
                &node.url(),
                "--chain",
                &source,
                "--reason",
                "incident drill",
            ],
            &[("DVN_ADMIN_TOKEN", token)],
        );
        assert_eq!(code, 0, "{out}");
    }
    let sent = stand
        .devnet
        .send_messages(Direction::AToB, 3)
        .await
        .unwrap();
    // gcp signs them; aws and aliyun observe them and hold.
    let gcp = &stand.nodes.nodes[2];
    let signed = crate::common::metric_reaches(gcp, "dvn_packets_signed_total", 3.0).await;
    assert!(signed, "the unpaused region signs");
    let aws_store = Store::connect(&config.store.url).await.unwrap();
    let held = eventually(TIMEOUT, Duration::from_millis(100), || async {
        let rows = aws_store
            .recent_packets(Some(PacketState::Observed), 10)
            .await
            .ok()?;
        (rows.len() == 3).then_some(())
    })
    .await;
    assert!(held.is_some(), "aws observed all three and holds them");
    assert!(crate::common::metric_reaches(&stand.nodes.nodes[0], "dvn_held_packets", 3.0).await);
    let verified = stand
        .devnet
        .payload_verified(Direction::AToB)
        .await
        .unwrap();
    assert!(
        verified.is_empty(),
        "nothing verified while two regions hold"
    );
    // `dvn admin status` shows the pause; resuming one region lets the quorum form.
    let aws = &stand.nodes.nodes[0];
    let cfg = aws.config_path.to_str().unwrap();
    let (code, out) = dvn_run(
        &["admin", "status", "-c", cfg, "--url", &aws.url()],
        &[("DVN_ADMIN_TOKEN", &admin_tokens[0])],
    );
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("incident drill") && out.contains("ops-oncall"),
        "{out}"
    );
    let (code, out) = dvn_run(
        &[
            "admin",
            "resume",
            "-c",
            cfg,
            "--url",
            &aws.url(),
            "--chain",
            &source,
        ],
        &[("DVN_ADMIN_TOKEN", &admin_tokens[0])],
    );
    assert_eq!(code, 0, "{out}");
    stand.deliver(Direction::AToB, &sent, TIMEOUT).await;
    stand.assert_invariants(Direction::AToB, &sent).await;
    // A developer token cannot lift aliyun's pause.
    let aliyun = &stand.nodes.nodes[1];
    let acfg = aliyun.config_path.to_str().unwrap();
    let dev = new_token(acfg, "dev", "developer");
    let (code, out) = dvn_run(
        &[
            "admin",
            "resume",
            "-c",
            acfg,
            "--url",
            &aliyun.url(),
            "--chain",
            &source,
        ],
        &[("DVN_ADMIN_TOKEN", &dev)],
    );
    assert_ne!(code, 0);
    assert!(
        out.contains("403") && out.contains("may not resume"),
        "{out}"
    );

    // Fail closed: with aliyun's audit log refusing writes, its operator's resume is refused
    // and the pause stays; once the log takes writes again, the resume goes through.
    let aliyun_config = Config::load(&aliyun.config_path).unwrap();
    let raw = sqlx::any::AnyPoolOptions::new()
        .max_connections(1)
        .connect(&aliyun_config.store.url)
        .await
        .unwrap();
    sqlx::query(
        "CREATE TRIGGER audit_full BEFORE INSERT ON audit_log BEGIN SELECT RAISE(ABORT, 'disk full'); END",
    )
    .execute(&raw)
    .await
    .unwrap();
    let resume = [
        "admin",
        "resume",
        "-c",
        acfg,
        "--url",
        &aliyun.url(),
        "--chain",
        &source,
    ];
    let (code, out) = dvn_run(&resume, &[("DVN_ADMIN_TOKEN", &admin_tokens[1])]);
    assert_ne!(code, 0);
    assert!(
        out.contains("503") && out.contains("audit log cannot be written"),
        "{out}"
    );
    let aliyun_store = Store::connect(&aliyun_config.store.url).await.unwrap();
    assert_eq!(
        aliyun_store.pauses().await.unwrap().len(),
        1,
        "the pause stands"
    );
    sqlx::query("DROP TRIGGER audit_full")
        .execute(&raw)
        .await
        .unwrap();
    let (code, out) = dvn_run(&resume, &[("DVN_ADMIN_TOKEN", &admin_tokens[1])]);
    assert_eq!(code, 0, "{out}");
    assert!(aliyun_store.pauses().await.unwrap().is_empty());
}
