//! The `dvn admin …` and `dvn audit …` commands: calls to a running node's admin API (with
//! the token from an environment variable), and the host-side tools that work on the store
//! directly — tokens (there is no token yet to make the first one with) and the audit log's
//! verification and export (an auditor's check must not depend on the node it audits).

use std::path::PathBuf;

use serde_json::{json, Value};

use crate::admin::roles::Role;
use crate::admin::{checkpoint, token};
use crate::cli::{ApiArgs, ScopeArgs};
use crate::config::Config;
use crate::store::{AuditEntry, Store};

/// Calls `method path` on the node's admin API; the JSON answer, or the node's error text.
pub async fn call(
    api: &ApiArgs,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> anyhow::Result<Value> {
    // With --url (and --tls-server-name on an mTLS listener) the configuration is not needed:
    // it may be mid-edit before a reload.
    let config = || Config::load(&api.config);
    let base = match &api.url {
        Some(url) => url.clone(),
        None => admin_url(&config()?),
    };
    let token = std::env::var(&api.token_env).map_err(|_| {
        anyhow::anyhow!(
            "environment variable {} (the admin token) is not set",
            api.token_env
        )
    })?;
    // A backup through the API can take minutes on a large store.
    let builder = reqwest::Client::builder().timeout(std::time::Duration::from_secs(600));
    let http = match (&api.tls_ca, &api.tls_cert, &api.tls_key) {
        (Some(ca), Some(cert), Some(key)) => {
            let server = match &api.tls_server_name {
                Some(name) => name.clone(),
                None => config()?.node.name,
            };
            let files = crate::config::TlsConfig {
                ca: ca.clone(),
                cert: cert.clone(),
                key: key.clone(),
            };
            builder
                .use_preconfigured_tls(crate::tls::client_config(&files, &server)?)
                .build()?
        }
        _ => builder.build()?,
    };
    let url = format!("{base}/admin/v1{path}");
    let request = match method {
        "POST" => http.post(&url).json(&body.unwrap_or_else(|| json!({}))),
        _ => http.get(&url),
    };
    let response = request.bearer_auth(token.trim()).send().await?;
    let status = response.status();
    let answer: Value = response
        .json()
        .await
        .unwrap_or_else(|_| json!({ "error": "not a JSON answer" }));
    if !status.is_success() {
        anyhow::bail!(
            "{status}: {}",
            answer["error"].as_str().unwrap_or("no reason given")
        );
    }
    Ok(answer)
}

/// Where the admin API of the node configured by `config` answers: its mutual-TLS listener
/// when it has one, else the operations listener.
pub fn admin_url(config: &Config) -> String {
    match config.admin.listen {
        Some(listen) => super::base_url("https", listen),
        None => super::node_url(config),
    }
}

/// The request body naming a pause scope.
pub fn scope_body(scope: &ScopeArgs) -> anyhow::Result<Value> {
    if scope.all {
        return Ok(json!({ "scope": "node" }));
    }
    if let Some(chain) = &scope.chain {
        return Ok(json!({ "scope": "chain", "chain": chain }));
    }
    let p = &scope.path;
    match (&p.src, &p.dst, &p.sender, &p.receiver) {
        (Some(src), Some(dst), Some(sender), Some(receiver)) => Ok(json!({
            "scope": "path", "src": src, "dst": dst, "sender": sender, "receiver": receiver,
        })),
        _ => anyhow::bail!("name a scope: --all, --chain NAME, or --src --dst --sender --receiver"),
    }
}

/// Who runs a host-side command, for the audit log.
fn local_operator() -> String {
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "unknown".into());
    format!("local:{user}")
}

fn local_entry(operation: &str, target: &str, params: Value, result: &str) -> AuditEntry {
    AuditEntry {
        operator: local_operator(),
        role: "host".into(),
        operation: operation.into(),
        target: target.into(),
        params,
        result: result.into(),
        source_ip: "local".into(),
    }
}

/// Records a host-side operation (backup, restore) in the node's audit log; a failure is
/// printed, not fatal (the operation itself is done).
pub async fn audit_local(
    config_path: &std::path::Path,
    operation: &str,
    target: &str,
    params: Value,
) {
    audit_local_result(config_path, operation, target, params, "ok").await
}

/// [`audit_local`] with the result given (`ok`, `failed`, …).
pub async fn audit_local_result(
    config_path: &std::path::Path,
    operation: &str,
    target: &str,
    params: Value,
    result: &str,
) {
    let recorded = async {
        let config = Config::load(config_path)?;
        let store = Store::connect(&config.store.url).await?;
        store
            .audit_append(&local_entry(operation, target, params, result))
            .await?;
        anyhow::Ok(())
    }
    .await;
    if let Err(e) = recorded {
        eprintln!("warning: not recorded in the audit log: {e:#}");
    }
}

/// A host-side change to a key (`dvn keys generate …`) recorded in `config_path`'s audit log
/// around it: `begun` first — the change is refused when that record cannot be written (fail
/// closed, as for admin API changes) — then the outcome with what `work` reports (an address,
/// never key material). Without a configuration there is no log to write: the change is made
/// and a warning says it was not recorded.
pub async fn audited_key_change<T, F, Fut>(
    config_path: Option<&std::path::Path>,
    operation: &str,
    target: &str,
    params: Value,
    work: F,
) -> anyhow::Result<T>
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<(T, Value)>>,
{
    let Some(config_path) = config_path else {
        eprintln!(
            "warning: {operation} is not recorded in any audit log (give -c CONFIG to record it in that node's)"
        );
        return work().await.map(|(done, _)| done);
    };
    let store = async {
        let config = Config::load(config_path)?;
        let store = Store::connect(&config.store.url).await?;
        store
            .audit_append(&local_entry(operation, target, params.clone(), "begun"))
            .await?;
        anyhow::Ok(store)
    }
    .await
    .map_err(|e| anyhow::anyhow!("the audit log cannot be written, {operation} refused: {e:#}"))?;
    let outcome = work().await;
    let (result, recorded) = match &outcome {
        Ok((_, reported)) => {
            let mut recorded = params;
            if let (Value::Object(all), Value::Object(more)) = (&mut recorded, reported) {
                all.extend(more.clone());
            }
            ("ok".to_string(), recorded)
        }
        Err(e) => (format!("error: {e:#}"), params),
    };
    if let Err(e) = store
        .audit_append(&local_entry(operation, target, recorded, &result))
        .await
    {
        eprintln!("warning: the outcome of {operation} is not recorded in the audit log: {e}");
    }
    outcome.map(|(done, _)| done)
}

/// A host-side use of a key that changes nothing (`dvn keys address`, `test-sign`, `list`),
/// recorded with its outcome; an unwritable log is a warning (these are the diagnostics an
/// operator runs when something is down).
pub async fn audited_key_use<T, F, Fut>(
    config_path: Option<&std::path::Path>,
    operation: &str,
    target: &str,
    work: F,
) -> anyhow::Result<T>
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<(T, Value)>>,
{
    let outcome = work().await;
    if let Some(config_path) = config_path {
        let (result, params) = match &outcome {
            Ok((_, reported)) => ("ok".to_string(), reported.clone()),
            Err(e) => (format!("error: {e:#}"), json!({})),
        };
        audit_local_result(config_path, operation, target, params, &result).await;
    }
    outcome.map(|(done, _)| done)
}

/// `dvn admin token create`: the token, printed once. Refused when the audit record cannot
/// be written.
pub async fn create_token(
    store: &Store,
    operator: &str,
    role: Role,
    days: u32,
) -> anyhow::Result<(String, crate::store::TokenRow)> {
    anyhow::ensure!(
        !operator.trim().is_empty() && operator.len() <= 100,
        "--operator must be a name of at most 100 characters"
    );
    anyhow::ensure!((1..=3650).contains(&days), "--days must be 1 to 3650");
    store
        .audit_append(&local_entry(
            "token.create",
            operator,
            json!({ "role": role.as_str(), "days": days }),
            "begun",
        ))
        .await
        .map_err(|e| anyhow::anyhow!("the audit log cannot be written, no token made: {e}"))?;
    let (secret, row) = token::create(store, operator, role, days).await?;
    store
        .audit_append(&local_entry(
            "token.create",
            operator,
            json!({ "role": role.as_str(), "days": days, "id": row.id }),
            "ok",
        ))
        .await?;
    Ok((secret, row))
}

/// `dvn admin token revoke`.
pub async fn revoke_token(store: &Store, id: &str) -> anyhow::Result<()> {
    let revoked = store.revoke_token(id).await?;
    store
        .audit_append(&local_entry(
            "token.revoke",
            &format!("token:{id}"),
            json!({}),
            if revoked {
                "ok"
            } else {
                "error: no such live token"
            },
        ))
        .await?;
    anyhow::ensure!(revoked, "no live token {id}");
    Ok(())
}

/// `dvn audit verify`: the chain and every checkpoint; (intact, report).
pub async fn verify(
    config: &Config,
    store: &Store,
    checkpoints: &[PathBuf],
) -> anyhow::Result<(bool, Value)> {
    let records = store.audit_all().await?;
    let mut problems: Vec<String> = Vec::new();
    if let Err(e) = crate::store::verify_audit_chain(&records) {
        problems.push(e.to_string());
    }
    let mut checked = 0;
    for file in checkpoints {
        for cp in checkpoint::read(file)? {
            checked += 1;
            match cp.recovered_signer() {
                Some(a) if a == cp.signer => {}
                _ => problems.push(format!(
                    "{} checkpoint {}: the signature is not {}'s",
                    file.display(),
                    cp.seq,
                    cp.signer
                )),
            }
            if let Some(expected) = config.node.signer_address {
                if cp.signer != expected {
                    problems.push(format!(
                        "{} checkpoint {}: signed by {}, not this node's signer {expected}",
                        file.display(),
                        cp.seq,
                        cp.signer
                    ));
                }
            }
            if let Err(e) = crate::store::verify_checkpoint(&records, cp.seq, cp.hash) {
                problems.push(e.to_string());
            }
        }
    }
    let head = records
        .last()
        .map(|r| json!({ "seq": r.seq, "hash": r.hash }));
    let intact = problems.is_empty();
    Ok((
        intact,
        json!({
            "intact": intact,
            "records": records.len(),
            "head": head,
            "checkpoints_checked": checked,
            "problems": problems,
        }),
    ))
}

/// `dvn audit export`: JSON lines from a sequence number or an RFC 3339 time.
pub async fn export(store: &Store, since: &str) -> anyhow::Result<Vec<String>> {
    let (after, from_ms) = match since.parse::<u64>() {
        Ok(seq) => (seq, i64::MIN),
        Err(_) => {
            let at = chrono::DateTime::parse_from_rfc3339(since).map_err(|_| {
                anyhow::anyhow!("--since {since}: neither a sequence number nor an RFC 3339 time")
            })?;
            (0, at.timestamp_millis())
        }
    };
    let mut lines = Vec::new();
    let mut cursor = after;
    loop {
        let page = store.audit_records(cursor, 5_000).await?;
        let Some(last) = page.last() else {
            return Ok(lines);
        };
        cursor = last.seq;
        for record in page.iter().filter(|r| r.at_ms >= from_ms) {
            lines.push(serde_json::to_string(record)?);
        }
    }
}
