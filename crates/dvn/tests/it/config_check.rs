//! Scenario 8: `dvn config check` on a table of bad configurations — each fails naming the
//! field — and on a good one, which passes. Secrets are never printed.

use std::process::Command;

use crate::common::dvn_binary;

const GOOD: &str = r#"
node:
  name: aws
  listen: 127.0.0.1:8080
  peer_listen: 127.0.0.1:8443
tls:
  ca: /etc/dvn/tls/ca.pem
  cert: /etc/dvn/tls/aws.pem
  key: /etc/dvn/tls/aws.key
store:
  url: sqlite://dvn.db
chains:
  - name: ethereum
    eid: 30101
    chain_id: 1
    rpc: [http://127.0.0.1:8545, http://127.0.0.1:8546, http://127.0.0.1:8547]
    rpc_quorum: 2
    endpoint: "0x1a44076050125825900e736c501f859c50fE728c"
    send_uln: "0xbB2Ea70C9E858123480642Cf96acbcCE1372dCe1"
    receive_uln: "0xc02Ab410f0734EFa3F14628780e6e695156024C2"
    dvn: "0x589dEDbD617e0CBcB916A9223F4d1300c294236b"
  - name: conflux-espace
    eid: 30212
    chain_id: 1030
    rpc: [http://127.0.0.1:9545, http://127.0.0.1:9546, http://127.0.0.1:9547]
    rpc_quorum: 2
    endpoint: "0x1a44076050125825900e736c501f859c50fE728c"
    send_uln: "0xbB2Ea70C9E858123480642Cf96acbcCE1372dCe1"
    receive_uln: "0xc02Ab410f0734EFa3F14628780e6e695156024C2"
    dvn: "0x589dEDbD617e0CBcB916A9223F4d1300c294236b"
    max_log_range: 1000
peers:
  - name: aliyun
    url: https://127.0.0.1:8081
    signer: "0x0000000000000000000000000000000000000002"
  - name: gcp
    url: https://127.0.0.1:8082
    signer: "0x0000000000000000000000000000000000000003"
signer:
  kind: keystore
  path: /run/secrets/signer.json
  password_env: DVN_SIGNER_PASSWORD
submitter:
  key:
    kind: env
    var: DVN_SUBMITTER_KEY
    allow_plaintext: true
"#;

fn check(text: &str, env: &[(&str, &str)]) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.yaml");
    std::fs::write(&path, text).unwrap();
    let out = Command::new(dvn_binary())
        .args(["config", "check", "--config"])
        .arg(&path)
        .env_remove("DVN_STORE_URL")
        .env_remove("POSTGRES_HOST")
        .envs(env.iter().copied())
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn a_good_config_passes() {
    let (ok, out) = check(GOOD, &[]);
    assert!(ok, "{out}");
    assert!(out.contains("OK"), "{out}");
}

#[test]
fn each_bad_config_fails_naming_the_field() {
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "unknown field",
            GOOD.replace(
                "  listen: 127.0.0.1:8080",
                "  listen: 127.0.0.1:8080\n  colour: blue",
            ),
            "colour",
        ),
        (
            "malformed address",
            GOOD.replacen("0x589dEDbD617e0CBcB916A9223F4d1300c294236b", "0x589d", 1),
            "dvn",
        ),
        (
            "zero eid",
            GOOD.replace("eid: 30212", "eid: 0"),
            "chains[1].eid",
        ),
        (
            "duplicate eid",
            GOOD.replace("eid: 30212", "eid: 30101"),
            "chains[1].eid",
        ),
        (
            "quorum above endpoints",
            GOOD.replace("rpc_quorum: 2", "rpc_quorum: 4"),
            "chains[0].rpc_quorum",
        ),
        (
            "duplicate RPC URL",
            GOOD.replace("http://127.0.0.1:8546,", "http://127.0.0.1:8545,"),
            "chains[0].rpc[1]",
        ),
        (
            "zero address",
            GOOD.replacen(
                "0xc02Ab410f0734EFa3F14628780e6e695156024C2",
                "0x0000000000000000000000000000000000000000",
                1,
            ),
            "chains[0].receive_uln",
        ),
        (
            "peer named like the node",
            GOOD.replace("name: gcp", "name: aws"),
            "peers[1].name",
        ),
        (
            "duplicate peer signer",
            GOOD.replace(
                "0x0000000000000000000000000000000000000003",
                "0x0000000000000000000000000000000000000002",
            ),
            "peers[1].signer",
        ),
        (
            "expiration too long",
            format!("{GOOD}verification:\n  expiration_secs: 2592000\n"),
            "verification.expiration_secs",
        ),
        (
            "plaintext key without the flag",
            GOOD.replace("    allow_plaintext: true\n", ""),
            "submitter.key.allow_plaintext",
        ),
        (
            "keystore without password source",
            GOOD.replace("  password_env: DVN_SIGNER_PASSWORD\n", ""),
            "signer.password_env",
        ),
        (
            "store scheme",
            GOOD.replace("url: sqlite://dvn.db", "url: mysql://db"),
            "store.url",
        ),
        (
            "one chain only",
            GOOD[..GOOD.find("  - name: conflux-espace").unwrap()].to_string()
                + &GOOD[GOOD.find("peers:").unwrap()..],
            "chains",
        ),
    ];
    for (what, text, field) in cases {
        let (ok, out) = check(&text, &[]);
        assert!(!ok, "{what}: accepted\n{out}");
        assert!(
            out.contains(field),
            "{what}: output does not name {field}:\n{out}"
        );
    }
}

#[test]
fn env_overrides_apply_and_bad_ones_are_named_without_leaking_secrets() {
    let (ok, out) = check(GOOD, &[("DVN_LISTEN", "not-an-address")]);
    assert!(!ok);
    assert!(out.contains("DVN_LISTEN"), "{out}");

    let (ok, out) = check(
        GOOD,
        &[
            ("POSTGRES_HOST", "db"),
            ("POSTGRES_PASSWORD", "hunter2-secret"),
        ],
    );
    assert!(ok, "{out}");
    assert!(
        !out.contains("hunter2-secret"),
        "a secret was printed: {out}"
    );
}

#[test]
fn the_documented_example_config_is_valid() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../examples/config.yaml"
    ))
    .unwrap();
    let (ok, out) = check(&text, &[]);
    assert!(ok, "{out}");
}
