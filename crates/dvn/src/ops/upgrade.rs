//! `dvn upgrade plan|run`: the manual's rolling upgrade (8.6) — one region at a time, in the
//! plan's order (aws → aliyun → gcp), never below the 2-of-3 quorum.
//!
//! A plan file names each region's operations URL and four shell commands: `stop`, `switch`
//! (put the new release in place), `start`, and `rollback` (put the previous release back).
//! The commands are the operator's, so the same tool drives a systemd host (`systemctl`,
//! a release symlink), a compose host (`docker-compose` with an image tag) or anything else,
//! locally or through `ssh`; `{region}`, `{version}` and `{previous}` are substituted, and the
//! same values are in the environment as `DVN_UPGRADE_REGION`, `DVN_UPGRADE_VERSION` and
//! `DVN_UPGRADE_PREVIOUS`.
//!
//! A run is refused before anything changes unless every region answers `/health` as itself
//! and `/ready` with 200. Then for each region: stop, wait until it no longer answers, switch,
//! start, gate on `/health` and `/ready` within `ready_timeout_secs`, and stay ready for
//! `settle_secs` before the next region. A region that fails any step is rolled back (stop,
//! rollback, start, gate) and the rollout stops there.
//!
//! This is a subcommand rather than a script under `deploy/` so that the gates use the same
//! readiness answers as `dvn status` and `dvn doctor`, and the rollout is tested like the rest
//! of the node.

use std::path::Path;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// Exit codes of `dvn upgrade run` (and `plan`, which uses the first two).
pub mod exit {
    /// Every region upgraded (or, for `plan`, a run would start).
    pub const DONE: u8 = 0;
    /// Refused before anything changed (a region is not ready, the plan is wrong).
    pub const REFUSED: u8 = 1;
    /// A region failed and was rolled back; the rollout stopped there.
    pub const ROLLED_BACK: u8 = 2;
    /// A region failed and its rollback failed too: it is down.
    pub const ROLLBACK_FAILED: u8 = 3;
}

/// The plan file.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Plan {
    /// The regions, in rollout order.
    pub regions: Vec<RegionPlan>,
    /// How long a started region gets to answer `/health` and `/ready`.
    #[serde(default = "default_ready_timeout")]
    pub ready_timeout_secs: u64,
    /// How long a region must stay ready before the next one is touched.
    #[serde(default = "default_settle")]
    pub settle_secs: u64,
    /// How long one command may run.
    #[serde(default = "default_command_timeout")]
    pub command_timeout_secs: u64,
}

fn default_ready_timeout() -> u64 {
    180
}
fn default_settle() -> u64 {
    120
}
fn default_command_timeout() -> u64 {
    300
}

/// One region of the plan.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RegionPlan {
    /// The region's `node.name` (its `/health` must say it).
    pub name: String,
    /// Its operations listener, e.g. `http://10.0.1.5:8080`.
    pub url: String,
    pub stop: String,
    pub switch: String,
    pub start: String,
    pub rollback: String,
}

impl Plan {
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        let plan: Plan = serde_norway::from_str(&text)
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        plan.check()?;
        Ok(plan)
    }

    fn check(&self) -> anyhow::Result<()> {
        anyhow::ensure!(!self.regions.is_empty(), "the plan names no region");
        let mut names = std::collections::HashSet::new();
        for (i, region) in self.regions.iter().enumerate() {
            anyhow::ensure!(
                names.insert(region.name.as_str()),
                "regions[{i}]: {} appears twice",
                region.name
            );
            anyhow::ensure!(
                region.url.starts_with("http://") || region.url.starts_with("https://"),
                "regions[{i}].url must be an http(s) URL"
            );
            for (field, command) in [
                ("stop", &region.stop),
                ("switch", &region.switch),
                ("start", &region.start),
                ("rollback", &region.rollback),
            ] {
                anyhow::ensure!(!command.trim().is_empty(), "regions[{i}].{field} is empty");
            }
        }
        anyhow::ensure!(
            self.ready_timeout_secs > 0,
            "ready_timeout_secs must be > 0"
        );
        Ok(())
    }
}

/// What a region answered before the rollout.
#[derive(Debug, Clone, Serialize)]
pub struct Preflight {
    pub region: String,
    pub healthy: bool,
    pub ready: bool,
    /// The version its `/health` reports.
    pub version: Option<String>,
    /// Why it would block the rollout.
    pub problem: Option<String>,
}

/// One region's outcome.
#[derive(Debug, Clone, Serialize)]
pub struct RegionOutcome {
    pub region: String,
    pub from: String,
    pub to: String,
    /// `upgraded`, `rolled_back`, `rollback_failed`, or `untouched`.
    pub result: String,
    pub error: Option<String>,
    pub seconds: f64,
}

/// The whole run's report.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub to: String,
    pub preflight: Vec<Preflight>,
    pub regions: Vec<RegionOutcome>,
    pub code: u8,
}

use super::{get_text as get, http};

/// `/health` of a region that runs (not starting): its JSON.
async fn health(http: &reqwest::Client, base: &str) -> Option<serde_json::Value> {
    let (status, body) = get(http, &format!("{base}/health")).await?;
    let value: serde_json::Value = serde_json::from_str(&body).ok()?;
    (status == 200 && value["status"] == "ok").then_some(value)
}

async fn ready(http: &reqwest::Client, base: &str) -> Result<(), String> {
    match get(http, &format!("{base}/ready")).await {
        Some((200, _)) => Ok(()),
        Some((status, body)) => Err(format!(
            "/ready {status}: {}",
            body.chars().take(300).collect::<String>()
        )),
        None => Err("/ready does not answer".into()),
    }
}

/// Every region's state now; a run starts only when none has a problem.
pub async fn preflight(plan: &Plan) -> anyhow::Result<Vec<Preflight>> {
    let http = http()?;
    let mut out = Vec::new();
    for region in &plan.regions {
        let base = region.url.trim_end_matches('/');
        let answer = health(&http, base).await;
        let version = answer
            .as_ref()
            .and_then(|h| h["version"].as_str().map(str::to_string));
        let problem = match &answer {
            None => Some(format!(
                "{}: /health does not answer (down or starting)",
                region.name
            )),
            Some(h) if h["node"] != region.name.as_str() => Some(format!(
                "{}: {base} answers as node {} — the plan points at the wrong node",
                region.name, h["node"]
            )),
            Some(_) => ready(&http, base)
                .await
                .err()
                .map(|why| format!("{}: not ready ({why})", region.name)),
        };
        out.push(Preflight {
            region: region.name.clone(),
            healthy: answer.is_some(),
            ready: answer.is_some() && problem.is_none(),
            version,
            problem,
        });
    }
    Ok(out)
}

/// `command` with the placeholders filled in.
pub fn expand(command: &str, region: &str, version: &str, previous: &str) -> String {
    command
        .replace("{region}", region)
        .replace("{version}", version)
        .replace("{previous}", previous)
}

struct Step<'a> {
    region: &'a str,
    version: &'a str,
    previous: &'a str,
    timeout: Duration,
}

impl Step<'_> {
    /// Runs one of the region's commands through `sh -c`.
    async fn run(&self, what: &str, command: &str) -> Result<(), String> {
        let command = expand(command, self.region, self.version, self.previous);
        eprintln!("upgrade: {}: {what}: {command}", self.region);
        let child = tokio::process::Command::new("sh")
            .args(["-c", &command])
            .env("DVN_UPGRADE_REGION", self.region)
            .env("DVN_UPGRADE_VERSION", self.version)
            .env("DVN_UPGRADE_PREVIOUS", self.previous)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .output();
        match tokio::time::timeout(self.timeout, child).await {
            Err(_) => Err(format!("{what} did not finish within {:?}", self.timeout)),
            Ok(Err(e)) => Err(format!("{what}: {e}")),
            Ok(Ok(out)) if out.status.success() => Ok(()),
            Ok(Ok(out)) => Err(format!(
                "{what} failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
                    .trim()
                    .chars()
                    .take(300)
                    .collect::<String>()
            )),
        }
    }
}

/// Waits until `base` stops answering `/health` (the old process is gone).
async fn wait_down(http: &reqwest::Client, base: &str, timeout: Duration) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    while get(http, &format!("{base}/health")).await.is_some() {
        if Instant::now() >= deadline {
            return Err(format!("still answers /health {timeout:?} after the stop"));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    Ok(())
}

/// Waits until `base` is healthy (running, as `name`) and ready.
async fn wait_ready(
    http: &reqwest::Client,
    base: &str,
    name: &str,
    timeout: Duration,
) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    let mut last = "/health does not answer".to_string();
    loop {
        match health(http, base).await {
            Some(h) if h["node"] == name => match ready(http, base).await {
                Ok(()) => return Ok(()),
                Err(why) => last = why,
            },
            Some(h) => last = format!("answers as node {}", h["node"]),
            None => {}
        }
        if Instant::now() >= deadline {
            return Err(format!("not ready within {timeout:?}: {last}"));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Stays ready for `period`, checked every second.
async fn settle(http: &reqwest::Client, base: &str, period: Duration) -> Result<(), String> {
    let until = Instant::now() + period;
    while Instant::now() < until {
        ready(http, base)
            .await
            .map_err(|why| format!("dropped out while settling: {why}"))?;
        tokio::time::sleep(Duration::from_secs(1).min(period)).await;
    }
    Ok(())
}

/// The rollout. `from`: the version being replaced (default: what each region's `/health`
/// reports), substituted as `{previous}`.
pub async fn run(plan: &Plan, to: &str, from: Option<&str>) -> anyhow::Result<Report> {
    let preflight = preflight(plan).await?;
    let mut report = Report {
        to: to.into(),
        preflight: preflight.clone(),
        regions: Vec::new(),
        code: exit::DONE,
    };
    if let Some(blocked) = preflight.iter().find_map(|p| p.problem.clone()) {
        eprintln!("upgrade: refused, nothing changed: {blocked} (upgrading one region must leave two ready)");
        report.code = exit::REFUSED;
        for p in &preflight {
            report.regions.push(untouched(p, to));
        }
        return Ok(report);
    }
    let http = http()?;
    let ready_timeout = Duration::from_secs(plan.ready_timeout_secs);
    for (region, pre) in plan.regions.iter().zip(&preflight) {
        if report.code != exit::DONE {
            report.regions.push(untouched(pre, to));
            continue;
        }
        let began = Instant::now();
        let previous = from
            .map(str::to_string)
            .or_else(|| pre.version.clone())
            .unwrap_or_default();
        let step = Step {
            region: &region.name,
            version: to,
            previous: &previous,
            timeout: Duration::from_secs(plan.command_timeout_secs),
        };
        let base = region.url.trim_end_matches('/');
        let forward = async {
            step.run("stop", &region.stop).await?;
            wait_down(&http, base, ready_timeout).await?;
            step.run("switch", &region.switch).await?;
            step.run("start", &region.start).await?;
            wait_ready(&http, base, &region.name, ready_timeout).await?;
            eprintln!(
                "upgrade: {}: ready on {to}; settling {} s",
                region.name, plan.settle_secs
            );
            settle(&http, base, Duration::from_secs(plan.settle_secs)).await
        }
        .await;
        let mut outcome = RegionOutcome {
            region: region.name.clone(),
            from: previous.clone(),
            to: to.into(),
            result: "upgraded".into(),
            error: None,
            seconds: 0.0,
        };
        if let Err(why) = forward {
            eprintln!(
                "upgrade: {}: FAILED: {why}; rolling back to {previous}",
                region.name
            );
            // Best effort stop: the new release may not even have started.
            let _ = step.run("stop", &region.stop).await;
            let back = async {
                wait_down(&http, base, ready_timeout).await?;
                step.run("rollback", &region.rollback).await?;
                step.run("start", &region.start).await?;
                wait_ready(&http, base, &region.name, ready_timeout).await
            }
            .await;
            match back {
                Ok(()) => {
                    eprintln!(
                        "upgrade: {}: rolled back and ready; rollout stopped",
                        region.name
                    );
                    outcome.result = "rolled_back".into();
                    outcome.error = Some(why);
                    report.code = exit::ROLLED_BACK;
                }
                Err(back_why) => {
                    eprintln!(
                        "upgrade: {}: ROLLBACK FAILED: {back_why} — the region is down, act now",
                        region.name
                    );
                    outcome.result = "rollback_failed".into();
                    outcome.error = Some(format!("{why}; rollback: {back_why}"));
                    report.code = exit::ROLLBACK_FAILED;
                }
            }
        }
        outcome.seconds = began.elapsed().as_secs_f64();
        report.regions.push(outcome);
    }
    Ok(report)
}

fn untouched(pre: &Preflight, to: &str) -> RegionOutcome {
    RegionOutcome {
        region: pre.region.clone(),
        from: pre.version.clone().unwrap_or_default(),
        to: to.into(),
        result: "untouched".into(),
        error: None,
        seconds: 0.0,
    }
}

/// The steps a run would take, as text, after the pre-flight answers.
pub fn render_plan(plan: &Plan, preflight: &[Preflight], to: &str, from: Option<&str>) -> String {
    let mut out = String::new();
    for p in preflight {
        out.push_str(&format!(
            "{:<8} {:<10} version {:<10} {}\n",
            p.region,
            if p.ready { "ready" } else { "NOT READY" },
            p.version.as_deref().unwrap_or("?"),
            p.problem.as_deref().unwrap_or("")
        ));
    }
    out.push('\n');
    for (i, (region, p)) in plan.regions.iter().zip(preflight).enumerate() {
        let previous = from
            .map(str::to_string)
            .or_else(|| p.version.clone())
            .unwrap_or_default();
        let e = |c: &str| expand(c, &region.name, to, &previous);
        out.push_str(&format!(
            "{}. {} ({previous} → {to})\n   stop:     {}\n   switch:   {}\n   start:    {}\n   gate:     {}/health and /ready within {} s, then ready for {} s\n   on failure: stop, {}, start, gate; the rollout stops\n",
            i + 1,
            region.name,
            e(&region.stop),
            e(&region.switch),
            e(&region.start),
            region.url.trim_end_matches('/'),
            plan.ready_timeout_secs,
            plan.settle_secs,
            e(&region.rollback),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_plans_load() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/upgrade");
        for file in ["systemd.yaml", "compose.yaml"] {
            let plan = Plan::load(&dir.join(file)).unwrap();
            let names: Vec<&str> = plan.regions.iter().map(|r| r.name.as_str()).collect();
            assert_eq!(names, ["aws", "aliyun", "gcp"], "{file}");
            assert!(
                plan.regions
                    .iter()
                    .all(|r| r.switch.contains("{version}") && r.rollback.contains("{previous}")),
                "{file}"
            );
        }
    }

    #[test]
    fn placeholders_are_filled() {
        assert_eq!(
            expand(
                "ln -sfn /opt/dvn/{version} /opt/dvn/current # {region} was {previous}",
                "aws",
                "0.2.0",
                "0.1.0"
            ),
            "ln -sfn /opt/dvn/0.2.0 /opt/dvn/current # aws was 0.1.0"
        );
    }

    #[test]
    fn plans_with_duplicates_empty_commands_or_bad_urls_are_refused() {
        let region = |name: &str, url: &str, stop: &str| RegionPlan {
            name: name.into(),
            url: url.into(),
            stop: stop.into(),
            switch: "s".into(),
            start: "s".into(),
            rollback: "r".into(),
        };
        let plan = |regions| Plan {
            regions,
            ready_timeout_secs: 1,
            settle_secs: 0,
            command_timeout_secs: 1,
        };
        assert!(plan(vec![region("aws", "http://a", "x")]).check().is_ok());
        assert!(plan(vec![]).check().is_err());
        assert!(plan(vec![
            region("aws", "http://a", "x"),
            region("aws", "http://b", "x")
        ])
        .check()
        .is_err());
        assert!(plan(vec![region("aws", "a:80", "x")]).check().is_err());
        assert!(plan(vec![region("aws", "http://a", " ")]).check().is_err());
    }
}
