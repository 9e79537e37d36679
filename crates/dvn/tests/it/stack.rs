//! The operations stack as an operator runs it, on 127.0.0.1: a real Prometheus (Debian
//! `prometheus`) scraping the devnet's nodes with the project's own scrape config and alert
//! rules, a real Alertmanager (`prometheus-alertmanager`) routing with the project's own
//! config to a webhook this harness owns, node_exporter for the disk rule and panel, and
//! blackbox_exporter with the project's module reading the peer listeners' certificates.
//!
//! Only the timings are the test's: 1 s scrape and evaluation, every rule's `for:` cut to 2 s,
//! no group wait in Alertmanager. Everything else — expressions, labels, severities, routes,
//! inhibitions — is the shipped file. The processes stop with the harness.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dvn_devnet::nodes::{free_port, DvnNode};
use dvn_devnet::wait::eventually;
use serde_json::{json, Value};

/// How long an alert may take to reach the webhook once its condition holds (scrape, `for:`,
/// evaluation, Alertmanager's grouping): seconds here; generous for a loaded machine.
pub const ALERT_TIMEOUT: Duration = Duration::from_secs(90);

fn deploy(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../deploy")
        .join(path)
}

/// One alert as Alertmanager delivered it to a receiver.
#[derive(Debug, Clone)]
pub struct Delivered {
    pub receiver: String,
    pub status: String,
    pub labels: Value,
}

impl Delivered {
    pub fn name(&self) -> &str {
        self.labels["alertname"].as_str().unwrap_or_default()
    }
    pub fn severity(&self) -> &str {
        self.labels["severity"].as_str().unwrap_or_default()
    }
}

/// Everything the webhook received, in order.
#[derive(Debug, Clone, Default)]
pub struct Webhook(Arc<Mutex<Vec<Delivered>>>);

impl Webhook {
    fn record(&self, body: &Value) {
        let receiver = body["receiver"].as_str().unwrap_or_default().to_string();
        let mut all = self.0.lock().unwrap();
        for alert in body["alerts"].as_array().into_iter().flatten() {
            all.push(Delivered {
                receiver: receiver.clone(),
                status: alert["status"].as_str().unwrap_or_default().to_string(),
                labels: alert["labels"].clone(),
            });
        }
    }

    /// A position in what was received: later waits look only past it.
    pub fn mark(&self) -> usize {
        self.0.lock().unwrap().len()
    }

    pub fn since(&self, mark: usize) -> Vec<Delivered> {
        self.0.lock().unwrap()[mark..].to_vec()
    }

    /// Waits until, past `mark`, `alertname` (for `instance`, when given) arrived with
    /// `status` (`firing` or `resolved`).
    pub async fn wait(
        &self,
        mark: usize,
        alertname: &str,
        instance: Option<&str>,
        status: &str,
    ) -> Option<Delivered> {
        eventually(ALERT_TIMEOUT, Duration::from_millis(250), || async {
            self.since(mark).into_iter().find(|d| {
                d.name() == alertname
                    && d.status == status
                    && instance.is_none_or(|i| d.labels["instance"] == i)
            })
        })
        .await
    }
}

struct Process {
    name: &'static str,
    child: Child,
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Prometheus, Alertmanager and node_exporter, running.
pub struct OpsStack {
    pub prometheus: String,
    pub webhook: Webhook,
    http: reqwest::Client,
    processes: Vec<Process>,
    webhook_task: tokio::task::JoinHandle<()>,
    dir: tempfile::TempDir,
}

impl Drop for OpsStack {
    fn drop(&mut self) {
        self.webhook_task.abort();
    }
}

impl OpsStack {
    /// Starts the stack scraping `nodes` (job `dvn`, `instance` = region) and waits until
    /// every target has been scraped once.
    pub async fn start(nodes: &[DvnNode]) -> OpsStack {
        let dir = tempfile::tempdir().unwrap();
        let webhook = Webhook::default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let webhook_url = format!("http://{}/alerts", listener.local_addr().unwrap());
        let sink = webhook.clone();
        let app = axum::Router::new().route(
            "/alerts",
            axum::routing::post(move |axum::Json(body): axum::Json<Value>| {
                let sink = sink.clone();
                async move {
                    sink.record(&body);
                    "ok"
                }
            }),
        );
        let webhook_task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });

        let (prom_port, am_port, node_port, blackbox_port) = (
            free_port().unwrap(),
            free_port().unwrap(),
            free_port().unwrap(),
            free_port().unwrap(),
        );
        // The shipped rules with the test's timings.
        let rules = std::fs::read_to_string(deploy("prometheus/alerts.yml")).unwrap();
        let rules: String = rules
            .lines()
            .map(|line| match line.split_once("for: ") {
                Some((indent, _)) if indent.trim().is_empty() => format!("{indent}for: 2s"),
                _ => line.to_string(),
            })
            .collect::<Vec<_>>()
            .join("\n");
        std::fs::write(dir.path().join("alerts.yml"), rules).unwrap();

        // The shipped scrape config pointed at this machine.
        let mut prom: Value = serde_norway::from_str(
            &std::fs::read_to_string(deploy("prometheus/prometheus.yml")).unwrap(),
        )
        .unwrap();
        prom["global"] = json!({ "scrape_interval": "1s", "evaluation_interval": "1s" });
        prom["alerting"]["alertmanagers"][0]["static_configs"] =
            json!([{ "targets": [format!("127.0.0.1:{am_port}")] }]);
        let jobs = prom["scrape_configs"].as_array_mut().unwrap();
        for job in jobs.iter_mut() {
            match job["job_name"].as_str().unwrap() {
                "dvn" => {
                    job["static_configs"] = nodes
                        .iter()
                        .map(|n| json!({ "targets": [format!("127.0.0.1:{}", n.port)], "labels": { "instance": n.region } }))
                        .collect();
                }
                "node" => {
                    job["static_configs"] = json!([{ "targets": [format!("127.0.0.1:{node_port}")], "labels": { "instance": nodes[0].region } }]);
                }
                "peer-certificates" => {
                    job["scrape_interval"] = json!("1s");
                    job["scrape_timeout"] = json!("1s");
                    job["static_configs"] = json!([{ "targets": nodes
                        .iter()
                        .map(|n| format!("127.0.0.1:{}", n.peer_port))
                        .collect::<Vec<_>>() }]);
                    for relabel in job["relabel_configs"].as_array_mut().unwrap() {
                        if relabel["target_label"] == "__address__" {
                            relabel["replacement"] = json!(format!("127.0.0.1:{blackbox_port}"));
                        }
                    }
                }
                other => panic!(
                    "the shipped scrape config has a job this harness does not know: {other}"
                ),
            }
        }
        std::fs::write(
            dir.path().join("prometheus.yml"),
            serde_norway::to_string(&prom).unwrap(),
        )
        .unwrap();

        // The shipped routes, every receiver delivering to our webhook, without waiting.
        let mut am: Value = serde_norway::from_str(
            &std::fs::read_to_string(deploy("alertmanager/alertmanager.yml")).unwrap(),
        )
        .unwrap();
        for receiver in am["receivers"].as_array_mut().unwrap() {
            receiver["webhook_configs"] = json!([{ "url": webhook_url, "send_resolved": true }]);
        }
        fn fast(route: &mut Value) {
            route["group_wait"] = json!("0s");
            route["group_interval"] = json!("1s");
            for sub in route["routes"].as_array_mut().into_iter().flatten() {
                fast(sub);
            }
        }
        fast(&mut am["route"]);
        std::fs::write(
            dir.path().join("alertmanager.yml"),
            serde_norway::to_string(&am).unwrap(),
        )
        .unwrap();

        let spawn = |name: &'static str, program: &str, args: Vec<String>| {
            let log = std::fs::File::create(dir.path().join(format!("{name}.log"))).unwrap();
            let child = Command::new(program)
                .args(args)
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .unwrap_or_else(|e| panic!("{program} (installed by scripts/setup.sh): {e}"));
            Process { name, child }
        };
        let d = |p: &str| dir.path().join(p).display().to_string();
        let processes = vec![
            spawn(
                "blackbox_exporter",
                "prometheus-blackbox-exporter",
                vec![
                    format!(
                        "--config.file={}",
                        deploy("prometheus/blackbox.yml").display()
                    ),
                    format!("--web.listen-address=127.0.0.1:{blackbox_port}"),
                ],
            ),
            spawn(
                "node_exporter",
                "prometheus-node-exporter",
                vec![format!("--web.listen-address=127.0.0.1:{node_port}")],
            ),
            spawn(
                "alertmanager",
                "prometheus-alertmanager",
                vec![
                    format!("--config.file={}", d("alertmanager.yml")),
                    format!("--storage.path={}", d("am-data")),
                    format!("--web.listen-address=127.0.0.1:{am_port}"),
                    "--cluster.listen-address=".into(),
                ],
            ),
            spawn(
                "prometheus",
                "prometheus",
                vec![
                    format!("--config.file={}", d("prometheus.yml")),
                    format!("--storage.tsdb.path={}", d("prom-data")),
                    format!("--web.listen-address=127.0.0.1:{prom_port}"),
                ],
            ),
        ];
        let stack = OpsStack {
            prometheus: format!("http://127.0.0.1:{prom_port}"),
            webhook,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap(),
            processes,
            webhook_task,
            dir,
        };
        let scraped = eventually(ALERT_TIMEOUT, Duration::from_millis(250), || async {
            let targets = stack.get("/api/v1/targets").await?;
            let active = targets["data"]["activeTargets"].as_array()?.clone();
            // Each node's /metrics and peer certificate, and node_exporter.
            (active.len() == 2 * nodes.len() + 1 && active.iter().all(|t| t["health"] == "up"))
                .then_some(())
        })
        .await;
        if scraped.is_none() {
            stack.dump();
            panic!("Prometheus never scraped every target");
        }
        stack
    }

    async fn get(&self, path: &str) -> Option<Value> {
        let response = self
            .http
            .get(format!("{}{path}", self.prometheus))
            .send()
            .await
            .ok()?;
        response.json().await.ok()
    }

    /// An instant query's result vector; None when Prometheus refused it.
    pub async fn query(&self, expr: &str) -> Option<Vec<Value>> {
        let url = reqwest::Url::parse_with_params(
            &format!("{}/api/v1/query", self.prometheus),
            &[("query", expr)],
        )
        .ok()?;
        let response = self.http.get(url).send().await.ok()?;
        let body: Value = response.json().await.ok()?;
        if body["status"] != "success" {
            eprintln!("query {expr}: {body}");
            return None;
        }
        body["data"]["result"].as_array().cloned()
    }

    /// How many times Prometheus has evaluated the `dvn` rule group.
    pub async fn rule_evaluations(&self) -> f64 {
        let text = match self
            .http
            .get(format!("{}/metrics", self.prometheus))
            .send()
            .await
        {
            Ok(r) => r.text().await.unwrap_or_default(),
            Err(_) => return 0.0,
        };
        dvn_devnet::nodes::sum_metric(&text, "prometheus_rule_group_iterations_total")
    }

    /// Waits until Prometheus has evaluated the rules `n` more times.
    pub async fn wait_evaluations(&self, n: f64) {
        let start = self.rule_evaluations().await;
        let evaluated = eventually(ALERT_TIMEOUT, Duration::from_millis(500), || async {
            (self.rule_evaluations().await >= start + n).then_some(())
        })
        .await;
        assert!(evaluated.is_some(), "Prometheus evaluates the rules");
    }

    /// The alerts Prometheus has pending or firing now: (name, instance, state).
    pub async fn alerts(&self) -> Vec<(String, String, String)> {
        let Some(body) = self.get("/api/v1/alerts").await else {
            return vec![];
        };
        body["data"]["alerts"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|a| {
                (
                    a["labels"]["alertname"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                    a["labels"]["instance"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                    a["state"].as_str().unwrap_or_default().to_string(),
                )
            })
            .collect()
    }

    /// The processes' logs, for a failing test.
    pub fn dump(&self) {
        for p in &self.processes {
            let log = std::fs::read_to_string(self.dir.path().join(format!("{}.log", p.name)))
                .unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(20).collect();
            eprintln!("===== {} =====", p.name);
            for line in tail.into_iter().rev() {
                eprintln!("{line}");
            }
        }
    }
}
