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
