//! The harness leaves no process behind, also when the test using it panics.

use std::sync::{Arc, Mutex};

use dvn_devnet::{Devnet, DevnetConfig};

fn running(pid: u32) -> bool {
    // Gone from /proc, or a zombie awaiting its parent, both mean "not running".
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

#[test]
fn anvil_processes_are_stopped_when_a_test_panics() {
    let pids = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&pids);
    let outcome = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let devnet = Devnet::start(DevnetConfig::default()).await.unwrap();
            seen.lock().unwrap().extend(devnet.pids());
            assert!(devnet.pids().iter().all(|&pid| running(pid)));
            panic!("deliberate panic with the devnet alive");
        })
    })
    .join();
    assert!(outcome.is_err(), "the thread panicked");
    let pids = pids.lock().unwrap();
    assert_eq!(pids.len(), 2);
    for &pid in pids.iter() {
        assert!(!running(pid), "anvil {pid} survived the panic");
        assert!(
            !std::path::Path::new(&format!("/proc/{pid}")).exists(),
            "anvil {pid} was not reaped"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anvil_processes_are_stopped_on_drop() {
    let devnet = Devnet::start(DevnetConfig::default()).await.unwrap();
    let pids = devnet.pids();
    let logs = devnet.log_dir().to_path_buf();
    assert!(logs.join("anvil-ethereum.log").exists());
    drop(devnet);
    for pid in pids {
        assert!(!running(pid), "anvil {pid} still running after drop");
    }
    assert!(
        !logs.exists(),
        "the temporary log folder is removed with the devnet"
    );
}

/// The processes whose parent is `pid`.
fn children_of(pid: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|child| {
            std::fs::read_to_string(format!("/proc/{child}/stat")).is_ok_and(|stat| {
                // After the command's ")": state, then the parent's pid.
                stat.rsplit_once(')')
                    .and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse::<u32>().ok())
                    == Some(pid)
            })
        })
        .collect()
}

/// Kills whatever of `0` still runs when dropped: a failing test leaves nothing behind.
struct KillOnDrop(Vec<u32>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        for &pid in self.0.iter().filter(|&&pid| running(pid)) {
            let _ = std::process::Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
    }
}

/// `dvn-devnet demo --keep-running` runs its chains and nodes outside its process group (so a
/// terminal's Ctrl-C reaches only the demo). Stopped by SIGTERM — a service manager, `timeout`,
/// `kill` — it must stop them too, not leave three nodes polling dead chains (seen before it
/// handled the signal).
#[test]
fn the_demo_stopped_by_sigterm_stops_its_chains_and_nodes() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    use std::sync::mpsc;
    use std::time::Duration;

    let exe = std::path::Path::new(env!("CARGO_BIN_EXE_dvn-devnet"));
    let dvn = exe.with_file_name("dvn");
    assert!(
        dvn.exists(),
        "{} is built with the workspace (cargo build --workspace)",
        dvn.display()
    );
    let dir = tempfile::tempdir().unwrap();
    let mut demo = Command::new(exe)
        .args(["demo", "--messages", "1", "--keep-running", "--log-dir"])
        .arg(dir.path().join("demo"))
        .arg("--dvn-bin")
        .arg(&dvn)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (lines, output) = mpsc::channel();
    let stdout = BufReader::new(demo.stdout.take().unwrap());
    std::thread::spawn(move || {
        for line in stdout.lines().map_while(Result::ok) {
            if lines.send(line).is_err() {
                break;
            }
        }
    });
    let ready = std::iter::from_fn(|| output.recv_timeout(Duration::from_secs(240)).ok())
        .any(|line| line.starts_with("ready in"));
    if !ready {
        let _leftovers = KillOnDrop(children_of(demo.id()));
        let _ = demo.kill();
        panic!("the demo never got ready");
    }
    let children = children_of(demo.id());
    let _leftovers = KillOnDrop(children.clone());
    assert!(
        children.len() >= 5,
        "two anvils and three nodes under the demo: {children:?}"
    );
    assert!(children.iter().all(|&pid| running(pid)));

    let killed = Command::new("kill")
        .args(["-TERM", &demo.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let rest: Vec<String> =
        std::iter::from_fn(|| output.recv_timeout(Duration::from_secs(60)).ok()).collect();
    let status = demo.wait().unwrap();
    assert!(status.success(), "demo exited with {status}: {rest:?}");
    assert!(
        rest.iter()
            .any(|l| l.contains("terminated: stopping the chains and nodes")),
        "{rest:?}"
    );
    for pid in children {
        assert!(!running(pid), "process {pid} outlived the demo");
    }
}
