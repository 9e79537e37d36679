//! Issue 11 §3: the audit log's hash chain against direct edits of the database (both
//! backends), and the PostgreSQL grants that leave the node's role unable to rewrite it.

use dvn::store::{verify_audit_chain, AuditEntry, ChainBreak, Store};
use serde_json::json;
use sqlx::AnyPool;

fn entry(i: u64) -> AuditEntry {
    AuditEntry {
        operator: "alice".into(),
        role: "operator".into(),
        operation: "pause".into(),
        target: format!("chain:{i}"),
        params: json!({ "reason": format!("drill {i}") }),
        result: "ok".into(),
        source_ip: "10.0.0.7".into(),
    }
}

/// A fresh log of six records, and a raw connection to the same database.
async fn six_records(url: &str) -> (Store, AnyPool) {
    let store = Store::connect(url).await.unwrap();
    for i in 1..=6 {
        assert_eq!(store.audit_append(&entry(i)).await.unwrap(), i);
    }
    let raw = sqlx::any::AnyPoolOptions::new()
        .max_connections(1)
        .connect(url)
        .await
        .unwrap();
    (store, raw)
}

async fn broken(store: &Store) -> Result<(), ChainBreak> {
    verify_audit_chain(&store.audit_all().await.unwrap())
}

/// Each tampering runs on its own fresh database (`fresh` makes one per call).
async fn every_edit_of_the_table_is_found<F, Fut>(fresh: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = String>,
{
    let url = fresh().await;
    let (store, raw) = six_records(&url).await;
    assert_eq!(broken(&store).await, Ok(()), "an untouched log verifies");

    sqlx::query("UPDATE audit_log SET result = 'denied' WHERE seq = 3")
        .execute(&raw)
        .await
        .unwrap();
    assert_eq!(broken(&store).await, Err(ChainBreak::Edited { seq: 3 }));

    let url = fresh().await;
    let (store, raw) = six_records(&url).await;
    sqlx::query("DELETE FROM audit_log WHERE seq = 4")
        .execute(&raw)
        .await
        .unwrap();
    assert_eq!(
        broken(&store).await,
        Err(ChainBreak::Gap { prev: 3, seq: 5 })
    );

    // Reordered: records 2 and 3 swap places (sequence numbers exchanged).
    let url = fresh().await;
    let (store, raw) = six_records(&url).await;
    for sql in [
        "UPDATE audit_log SET seq = 100 WHERE seq = 2",
        "UPDATE audit_log SET seq = 2 WHERE seq = 3",
        "UPDATE audit_log SET seq = 3 WHERE seq = 100",
    ] {
        sqlx::query(sql).execute(&raw).await.unwrap();
    }
    assert_eq!(
        broken(&store).await,
        Err(ChainBreak::Unlinked { seq: 2, prev: 1 })
    );

    // Deleted, then the rest renumbered to hide the gap.
    let url = fresh().await;
    let (store, raw) = six_records(&url).await;
    sqlx::query("DELETE FROM audit_log WHERE seq = 2")
        .execute(&raw)
        .await
        .unwrap();
    for seq in 3..=6 {
        sqlx::query("UPDATE audit_log SET seq = $1 WHERE seq = $2")
            .bind(seq - 1)
            .bind(seq)
            .execute(&raw)
            .await
            .unwrap();
    }
    assert_eq!(
        broken(&store).await,
        Err(ChainBreak::Unlinked { seq: 2, prev: 1 })
    );

    // A cut tail is a valid shorter chain: only a checkpoint taken before shows it.
    let url = fresh().await;
    let (store, raw) = six_records(&url).await;
    let (seq, hash) = store.audit_head().await.unwrap().unwrap();
    sqlx::query("DELETE FROM audit_log WHERE seq > 4")
        .execute(&raw)
        .await
        .unwrap();
    let records = store.audit_all().await.unwrap();
    assert_eq!(verify_audit_chain(&records), Ok(()));
    let cut = dvn::store::verify_checkpoint(&records, seq, hash).unwrap_err();
    assert!(
        cut.to_string().contains("ends at record 4"),
        "names the cut: {cut}"
    );

    // Appending after tampering does not repair it.
    store.audit_append(&entry(7)).await.unwrap();
}

#[tokio::test]
async fn tampering_with_the_audit_log_is_named_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let next = std::sync::atomic::AtomicU32::new(0);
    every_edit_of_the_table_is_found(|| {
        let n = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let url = format!("sqlite://{}", dir.path().join(format!("{n}.db")).display());
        async move { url }
    })
    .await;
}

#[tokio::test]
async fn tampering_with_the_audit_log_is_named_on_postgres() {
    let dbs = crate::pg::PgDatabases::create(&["a", "b", "c", "d", "e"]);
    let next = std::sync::atomic::AtomicUsize::new(0);
    let names = ["a", "b", "c", "d", "e"];
    every_edit_of_the_table_is_found(|| {
        let n = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let url = dbs.url(names[n]);
        async move { url }
    })
    .await;
}

#[tokio::test]
async fn concurrent_appenders_keep_one_unbroken_chain_on_postgres() {
    let db = crate::pg::PgDatabases::create(&["store"]);
    let url = db.url("store");
    let a = Store::connect(&url).await.unwrap();
    let b = Store::connect(&url).await.unwrap();
    let writes = (0..20).map(|i| {
        let store = if i % 2 == 0 { a.clone() } else { b.clone() };
        async move { store.audit_append(&entry(i)).await.unwrap() }
    });
    let mut seqs = futures::future::join_all(writes).await;
    seqs.sort();
    assert_eq!(seqs, (1..=20).collect::<Vec<_>>());
    assert_eq!(broken(&a).await, Ok(()));
}

/// The README's grants: the schema owner migrates; the node's role reads and writes its
/// tables but may only INSERT and SELECT audit rows.
pub const NODE_ROLE_GRANTS: &str = "\
GRANT USAGE ON SCHEMA public TO {role};
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {role};
REVOKE UPDATE, DELETE, TRUNCATE ON audit_log FROM {role};
REVOKE INSERT, UPDATE, DELETE, TRUNCATE ON _sqlx_migrations FROM {role};";

#[tokio::test]
async fn the_nodes_postgres_role_cannot_rewrite_the_audit_log() {
    let role = format!("dvn_node_{}", std::process::id());
    let _role = crate::pg::PgRole::create(&role);
    let db = crate::pg::PgDatabases::create(&["store"]);
    let owner_url = db.url("store");
    // The owner migrates (what `dvn migrate` does with the owner's URL).
    let owner = Store::connect(&owner_url).await.unwrap();
    owner.audit_append(&entry(1)).await.unwrap();
    crate::pg::psql_in(&owner_url, &NODE_ROLE_GRANTS.replace("{role}", &role));

    let node_url = owner_url.replacen("postgres@", &format!("{role}@"), 1);
    assert_ne!(node_url, owner_url);
    let node = Store::connect(&node_url)
        .await
        .expect("the node's role opens an already migrated store without DDL rights");
    assert_eq!(node.audit_append(&entry(2)).await.unwrap(), 2);
    // Its ordinary work still goes through (a pause row written and lifted).
    let scope = dvn::store::PauseScope::Chain { eid: 30101 };
    assert!(node.pause(&scope, "drill", "alice").await.unwrap());
    assert!(node.unpause(&scope).await.unwrap());

    let raw = sqlx::any::AnyPoolOptions::new()
        .max_connections(1)
        .connect(&node_url)
        .await
        .unwrap();
    for sql in [
        "UPDATE audit_log SET result = 'ok' WHERE seq = 1",
        "DELETE FROM audit_log WHERE seq = 2",
        "TRUNCATE audit_log",
    ] {
        let refused = sqlx::query(sql).execute(&raw).await.unwrap_err();
        assert!(
            refused.to_string().contains("permission denied"),
            "{sql}: {refused}"
        );
    }
    assert_eq!(broken(&node).await, Ok(()));
    assert_eq!(node.audit_head().await.unwrap().unwrap().0, 2);
}
