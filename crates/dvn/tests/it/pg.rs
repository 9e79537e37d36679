//! A throw-away PostgreSQL database per test on the machine's server (127.0.0.1:5432, trust
//! auth; `DVN_TEST_POSTGRES` overrides the base URL), dropped when the guard drops.

use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

pub fn base_url() -> String {
    std::env::var("DVN_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into())
}

fn psql(sql: &str) {
    psql_in(&format!("{}/postgres", base_url()), sql);
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

/// A private PostgreSQL server a test can stop and start: its own data directory under a
/// temp dir, on a free 127.0.0.1 port, run as the `postgres` user (the server refuses root).
/// Killed on drop.
pub struct PrivatePostgres {
    dir: tempfile::TempDir,
    pub port: u16,
    child: Option<std::process::Child>,
}

fn bin(name: &str) -> std::path::PathBuf {
    let root = std::path::Path::new("/usr/lib/postgresql");
    let version = std::fs::read_dir(root)
        .expect("Debian postgresql is installed by scripts/setup.sh")
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .max()
        .unwrap();
    version.join("bin").join(name)
}

fn as_postgres(program: std::path::PathBuf) -> Command {
    let mut cmd = Command::new("setpriv");
    cmd.args(["--reuid=postgres", "--regid=postgres", "--init-groups"])
        .arg(program);
    cmd
}

impl PrivatePostgres {
    pub async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let status = Command::new("chown")
            .args(["postgres:postgres"])
            .arg(dir.path())
            .status()
            .unwrap();
        assert!(status.success());
        let out = as_postgres(bin("initdb"))
            .args(["-A", "trust", "-U", "postgres", "-D"])
            .arg(dir.path().join("data"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let mut pg = Self {
            dir,
            port,
            child: None,
        };
        pg.resume().await;
        pg
    }

    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Stops the server at once (as a crash or a network cut would).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server on the same data and port; returns once it accepts connections.
    pub async fn resume(&mut self) {
        let child = as_postgres(bin("postgres"))
            .arg("-D")
            .arg(self.dir.path().join("data"))
            .args([
                "-p",
                &self.port.to_string(),
                "-c",
                "listen_addresses=127.0.0.1",
                "-k",
            ])
            .arg(self.dir.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        self.child = Some(child);
        let port = self.port;
        let up = dvn_devnet::wait::eventually(
            std::time::Duration::from_secs(60),
            std::time::Duration::from_millis(100),
            || async move {
                let ok = Command::new("pg_isready")
                    .args(["-q", "-h", "127.0.0.1", "-p", &port.to_string()])
                    .status()
                    .ok()?
                    .success();
                ok.then_some(())
            },
        )
        .await;
        assert!(up.is_some(), "private postgres did not start");
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Runs `sql` (several statements allowed) in the database at `url` as the superuser.
pub fn psql_in(url: &str, sql: &str) {
    let out = Command::new("psql")
        .args(["-v", "ON_ERROR_STOP=1", "-qAt", url, "-c", sql])
        .output()
        .expect("psql runs");
    assert!(
        out.status.success(),
        "psql {sql}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A login role (trust auth on the test server), dropped when the guard drops — after the
/// databases it has grants in (declare it before them).
pub struct PgRole(String);

impl PgRole {
    pub fn create(name: &str) -> Self {
        psql(&format!("DROP ROLE IF EXISTS {name}"));
        psql(&format!("CREATE ROLE {name} LOGIN"));
        Self(name.to_string())
    }
}

impl Drop for PgRole {
    fn drop(&mut self) {
        let _ = Command::new("psql")
            .args(["-qAtc", &format!("DROP ROLE IF EXISTS {}", self.0)])
            .arg(format!("{}/postgres", base_url()))
            .output();
    }
}
