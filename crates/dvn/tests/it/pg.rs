//! A throw-away PostgreSQL database per test on the machine's server (127.0.0.1:5432, trust
//! auth; `DVN_TEST_POSTGRES` overrides the base URL), dropped when the guard drops.

use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

pub fn base_url() -> String {
    std::env::var("DVN_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into())
}

fn psql(sql: &str) {
    let out = Command::new("psql")
        .args(["-v", "ON_ERROR_STOP=1", "-qAtc", sql])
        .arg(format!("{}/postgres", base_url()))
        .output()
        .expect("psql runs");
    assert!(
        out.status.success(),
        "psql {sql}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Databases named `{prefix}_{suffix}` for each suffix.
pub struct PgDatabases {
    pub prefix: String,
    names: Vec<String>,
}

impl PgDatabases {
    pub fn create(suffixes: &[&str]) -> Self {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let prefix = format!(
            "dvn_it_{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let names: Vec<String> = suffixes.iter().map(|s| format!("{prefix}_{s}")).collect();
        for name in &names {
            psql(&format!("CREATE DATABASE {name}"));
        }
        Self { prefix, names }
    }

    pub fn url(&self, suffix: &str) -> String {
        format!("{}/{}_{suffix}", base_url(), self.prefix)
    }
}

impl Drop for PgDatabases {
    fn drop(&mut self) {
        for name in &self.names {
            let _ = Command::new("psql")
                .args([
                    "-qAtc",
                    &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
                ])
                .arg(format!("{}/postgres", base_url()))
                .output();
        }
    }
}
