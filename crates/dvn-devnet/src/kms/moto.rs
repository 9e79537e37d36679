//! moto's AWS server (PyPI `moto[server]==5.2.5`, installed by `scripts/setup.sh` into the
//! project's test virtualenv) on 127.0.0.1, launched through `scripts/moto_kms_server.py`,
//! which patches moto's one KMS defect that matters here: it ignored `MessageType=DIGEST` and
//! hashed the digest again. Everything else is stock moto. The process is killed on drop.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// Env var naming the Python virtualenv that holds moto (default `<repo>/.cache/venv`).
pub const VENV_ENV: &str = "DVN_TEST_VENV";

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The virtualenv's Python.
pub fn python() -> PathBuf {
    std::env::var_os(VENV_ENV)
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join(".cache/venv"))
        .join("bin/python")
}

/// A running moto server; killed and reaped on drop.
#[derive(Debug)]
pub struct MotoServer {
    pub url: String,
    child: Child,
}

impl Drop for MotoServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl MotoServer {
    /// Starts the server and waits until it accepts connections.
    pub async fn start() -> anyhow::Result<Self> {
        let python = python();
        anyhow::ensure!(
            python.is_file(),
            "{} not found: run scripts/setup.sh (it installs moto[server]==5.2.5)",
            python.display()
        );
        let port = crate::nodes::free_port()?;
        let child = Command::new(&python)
            .arg(repo_root().join("scripts/moto_kms_server.py"))
            .arg(port.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        let mut server = Self {
            url: format!("http://127.0.0.1:{port}"),
            child,
        };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                return Ok(server);
            }
            if let Some(status) = server.child.try_wait()? {
                anyhow::bail!("moto exited at start: {status}");
            }
            anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "moto did not listen on {port} within 60 s"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl MotoServer {
    /// An AWS KMS client for this server (static test credentials, us-east-1).
    pub async fn kms_client(&self) -> aws_sdk_kms::Client {
        let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .endpoint_url(&self.url)
            .region(aws_config::Region::new("us-east-1"))
            .credentials_provider(aws_sdk_kms::config::Credentials::new(
                "testing", "testing", None, None, "moto",
            ))
            .load()
            .await;
        aws_sdk_kms::Client::new(&config)
    }

    /// Creates a key of `spec` for signing; returns its id.
    pub async fn create_signing_key(
        &self,
        spec: aws_sdk_kms::types::KeySpec,
    ) -> anyhow::Result<String> {
        let key = self
            .kms_client()
            .await
            .create_key()
            .key_spec(spec)
            .key_usage(aws_sdk_kms::types::KeyUsageType::SignVerify)
            .send()
            .await?;
        Ok(key
            .key_metadata()
            .map(|m| m.key_id().to_string())
            .unwrap_or_default())
    }
}
